//! A private, throw-away `redis-server` for the Redis-Lua baseline.
//!
//! It listens on a free loopback port (never 6379, so it can never be the
//! Redis a developer already runs there), keeps no data on disk (`--save ""`,
//! `--appendonly no`), works in its own temporary directory, and is killed
//! when the handle is dropped. This module must never connect to, or stop,
//! any Redis it did not start.

use anyhow::{Context, Result, bail};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The port a shared Redis usually holds; we never take it.
const REDIS_DEFAULT_PORT: u16 = 6379;

/// How long a fresh server gets to answer PING. Redis starts in
/// milliseconds; a loaded 2-core machine can still take a second or two.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Attempts at finding a port and starting on it (another process may take
/// the port between our probe and the server's bind).
const START_ATTEMPTS_MAX: u32 = 5;

/// Pause between PING attempts while the server starts.
const PING_INTERVAL: Duration = Duration::from_millis(20);

/// A running private redis-server; killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    port: u16,
    /// Working directory and log file; removed after the process is gone.
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts `binary` (usually `redis-server`) on a free loopback port and
    /// waits until it answers PING.
    pub fn start(binary: &str) -> Result<Self> {
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS_MAX {
            let port = free_port()?;
            match Self::start_on(binary, port) {
                Ok(server) => return Ok(server),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.expect("at least one attempt")).context("starting a private redis-server")
    }

    fn start_on(binary: &str, port: u16) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("holdfast-bench-redis")
            .tempdir()?;
        let log = std::fs::File::create(dir.path().join("redis.log"))?;
        let child = Command::new(binary)
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {binary} (is redis-server installed?)"))?;
        let mut server = Self {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = server.child.try_wait()? {
                let log = std::fs::read_to_string(server._dir.path().join("redis.log"))
                    .unwrap_or_default();
                bail!("redis-server exited at start ({status}): {}", log.trim());
            }
            if ping(port).is_ok() {
                return Ok(server);
            }
            std::thread::sleep(PING_INTERVAL);
        }
        bail!("redis-server on port {port} did not answer PING within {START_TIMEOUT:?}")
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its process id (for reading its CPU time).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A `redis://` URL for it.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // Our own child, by its handle: nothing else is signalled. Errors
        // mean it is already gone.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nobody is listening on right now (and not 6379).
fn free_port() -> Result<u16> {
    for _ in 0..START_ATTEMPTS_MAX {
        let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
        let port = listener.local_addr()?.port();
        if port != REDIS_DEFAULT_PORT {
            return Ok(port);
        }
    }
    bail!("no free loopback port found")
}

/// Sends an inline PING and expects `+PONG`.
fn ping(port: u16) -> Result<()> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
    stream.set_read_timeout(Some(Duration::from_millis(200)))?;
    stream.write_all(b"PING\r\n")?;
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply)?;
    if &reply != b"+PONG\r\n" {
        bail!(
            "unexpected PING reply {:?}",
            String::from_utf8_lossy(&reply)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_port_is_never_the_shared_redis_port() {
        for _ in 0..20 {
            assert_ne!(free_port().unwrap(), REDIS_DEFAULT_PORT);
        }
    }

    #[test]
    fn a_missing_binary_is_a_clear_error() {
        let err = RedisServer::start("/nonexistent/redis-server").unwrap_err();
        assert!(format!("{err:#}").contains("spawning"), "{err:#}");
    }

    #[test]
    fn starts_answers_and_stops() {
        if !crate::require_tool("redis-server") {
            return;
        }
        let server = RedisServer::start("redis-server").unwrap();
        let port = server.port();
        assert_ne!(port, REDIS_DEFAULT_PORT);
        ping(port).unwrap();
        drop(server);
        assert!(ping(port).is_err(), "server still answering after drop");
    }
}
