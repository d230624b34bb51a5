//! The few system calls holdfast's binaries (the gateway, the load tester,
//! the benches) make themselves, each behind a safe function, written once.
//!
//! # Layout
//!
//! - [`nofile_limit`], [`raise_nofile`]: the open-file limit (every socket
//!   is a file descriptor).
//! - [`process_usage`]: this process's CPU time and peak memory
//!   (`getrusage`).
//! - [`set_send_buffer`], [`bind_address_no_port`], [`connect_from`]:
//!   socket options, and a TCP connect from a chosen source address.
//!
//! What it must never do: panic, log, or decide policy. Failures come back
//! as `io::Error` (or a documented best effort); the caller decides whether
//! a failure matters.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};

/// The open-file limits of this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    pub soft: u64,
    pub hard: u64,
}

/// The current open-file limits (`getrlimit(RLIMIT_NOFILE)`).
pub fn nofile_limit() -> io::Result<NofileLimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into `lim`, which lives on our
    // stack for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // rlim_t is u64 on Linux but not everywhere.
    #[allow(clippy::unnecessary_cast)]
    Ok(NofileLimit {
        soft: lim.rlim_cur as u64,
        hard: lim.rlim_max as u64,
    })
}

/// What [`raise_nofile`] did: the soft limit before and the one in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileRaise {
    pub before: u64,
    pub now: u64,
}

/// Raises the open-file soft limit to the hard limit (needs no privilege).
/// Child processes inherit the raised limit. `Err` when the limit cannot be
/// read or raised; the limit in force is then unchanged.
pub fn raise_nofile() -> io::Result<NofileRaise> {
    let limit = nofile_limit()?;
    if limit.soft >= limit.hard {
        return Ok(NofileRaise {
            before: limit.soft,
            now: limit.soft,
        });
    }
    let raised = libc::rlimit {
        rlim_cur: limit.hard as libc::rlim_t,
        rlim_max: limit.hard as libc::rlim_t,
    };
    // SAFETY: setrlimit reads one rlimit from `raised`, which lives on our
    // stack for the duration of the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(NofileRaise {
        before: limit.soft,
        now: limit.hard,
    })
}

/// This process's resource usage, all threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// User + system CPU time.
    pub cpu: Duration,
    /// Peak resident memory.
    pub rss_max_bytes: u64,
}

/// This process's CPU time and peak memory (`getrusage(RUSAGE_SELF)`);
/// zeros if the call fails (it cannot with `RUSAGE_SELF` and a valid
/// pointer).
pub fn process_usage() -> Usage {
    // SAFETY: getrusage writes one rusage struct into the zeroed value we
    // own; RUSAGE_SELF reads only our own process's counters.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut ru) != 0 {
            return Usage {
                cpu: Duration::ZERO,
                rss_max_bytes: 0,
            };
        }
        ru
    };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    Usage {
        cpu: time(ru.ru_utime) + time(ru.ru_stime),
        // ru_maxrss is in KiB on Linux.
        rss_max_bytes: ru.ru_maxrss.max(0) as u64 * 1024,
    }
}

/// CPU seconds (user + system) this process has used, all threads.
pub fn process_cpu_seconds() -> f64 {
    process_usage().cpu.as_secs_f64()
}

/// Sets `SO_SNDBUF` on a socket (best effort: the kernel clamps the value
/// to `net.core.wmem_max` and a failure leaves its default).
pub fn set_send_buffer(stream: &TcpStream, bytes: usize) {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    let _ = set_int_option(stream.as_raw_fd(), libc::SOL_SOCKET, libc::SO_SNDBUF, value);
}

/// Asks the kernel to pick the source port at `connect` (knowing the
/// destination) instead of at `bind` (`IP_BIND_ADDRESS_NO_PORT`), so a
/// source address's port range is shared per destination rather than used
/// up globally. Linux only; elsewhere a no-op.
pub fn bind_address_no_port(socket: &TcpSocket) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        set_int_option(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            1,
        )
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = socket;
        Ok(())
    }
}

/// A TCP connection to `target` from `source` (port chosen by the kernel
/// at connect, see [`bind_address_no_port`]), with Nagle off: our clients
/// send small requests and measure latency.
pub async fn connect_from(source: IpAddr, target: SocketAddr) -> io::Result<TcpStream> {
    let socket = if source.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    bind_address_no_port(&socket)?;
    socket.bind(SocketAddr::new(source, 0))?;
    let stream = socket.connect(target).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// `setsockopt(fd, level, name, &value, sizeof(int))`.
fn set_int_option(
    fd: std::os::fd::RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the caller's fd is an open socket borrowed for this call;
    // setsockopt reads size_of::<c_int>() bytes from `&value`, which lives
    // on our stack for the call.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&raw const value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_the_open_file_limit_reaches_the_hard_limit() {
        let raise = raise_nofile().unwrap();
        let limit = nofile_limit().unwrap();
        assert_eq!(limit.soft, limit.hard);
        assert_eq!(raise.now, limit.soft);
        assert!(raise.before <= raise.now);
    }

    #[test]
    fn cpu_time_grows_with_work() {
        let before = process_usage();
        let mut x = 0u64;
        // Spin until the clock moves: no assumption about machine speed.
        while process_usage().cpu <= before.cpu {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        assert!(process_cpu_seconds() > before.cpu.as_secs_f64());
        assert!(before.rss_max_bytes > 0);
    }

    #[tokio::test]
    async fn connects_from_the_chosen_source_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        for last in [2u8, 3] {
            let source = IpAddr::from([127, 0, 0, last]);
            let stream = connect_from(source, target).await.unwrap();
            assert!(stream.nodelay().unwrap());
            let (_peer, from) = listener.accept().await.unwrap();
            assert_eq!(from.ip(), source);
        }
    }

    #[tokio::test]
    async fn sets_the_send_buffer() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let before = socket_send_buffer(&stream);
        set_send_buffer(&stream, 4096);
        let after = socket_send_buffer(&stream);
        assert_ne!(before, after, "SO_SNDBUF unchanged");
    }

    fn socket_send_buffer(stream: &TcpStream) -> libc::c_int {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: the fd is open for the borrow of `stream`; getsockopt
        // writes at most `len` bytes into `value`, which we own.
        let rc = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&raw mut value).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0);
        value
    }
}
