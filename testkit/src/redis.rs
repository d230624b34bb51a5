//! A private, throw-away `redis-server` for tests and benches.
//!
//! It listens on a free loopback port (never 6379, so it can never be the
//! Redis a developer already runs there), keeps no data on disk
//! (`--save ""`, `--appendonly no`), works in its own temporary directory,
//! is SIGKILLed when the handle is dropped (also when a test panics), and
//! dies with the test process when that is killed ([`spawn_owned`]).
//!
//! What it must never do: connect to, flush or stop a Redis it did not
//! start, or report a server as ready before *our* process answers on the
//! port (another process may take a free port first: then ours fails to
//! bind, and it retries on another port).

use std::ffi::OsString;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::process::{spawn_owned, stop_child};
use crate::{POLL, try_free_port};

/// How long a fresh server gets to say it accepts connections. Redis starts
/// in milliseconds; a loaded 2-core machine can still take a second or two.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Start attempts on fresh ports when the port was taken between
/// [`try_free_port`] and the server's own bind.
pub const START_ATTEMPTS_MAX: usize = 5;

/// What Redis logs once it listens: on our own log file, it proves the
/// server on the port is ours.
const READY_LINE: &str = "Ready to accept connections";

/// What Redis logs when its port (or cluster bus port) is taken.
const PORT_TAKEN: [&str; 2] = ["Address already in use", "Failed listening on port"];

/// The log file's name in the server's directory.
const LOG_FILE: &str = "redis.log";

/// Extra arguments of a server, made once its port is chosen (a TLS server
/// moves the port to `--tls-port`, a cluster node adds its bus port).
pub type ExtraArgs<'a> = &'a dyn Fn(u16) -> Vec<OsString>;

/// A running private redis-server; killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    port: u16,
    binary: OsString,
    /// Every argument of the running server, for [`restart_empty`](Self::restart_empty).
    args: Vec<OsString>,
    /// Working directory and log file; removed after the process is gone.
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// For a test: a plain server, or `None` when `redis-server` is missing
    /// and skipping was asked for ([`crate::require_tool`]: without the
    /// opt-out a missing server fails the test). Panics if it cannot start.
    pub fn for_test(for_what: &str) -> Option<Self> {
        Self::for_test_with(for_what, &|_| Vec::new())
    }

    /// [`for_test`](Self::for_test) with extra arguments.
    pub fn for_test_with(for_what: &str, extra: ExtraArgs<'_>) -> Option<Self> {
        if !crate::require_tool("redis-server", for_what) {
            return None;
        }
        Some(Self::start_with("redis-server", extra).expect("start a private redis-server"))
    }

    /// Starts `binary` (usually `redis-server`) on a free loopback port and
    /// waits until it accepts connections.
    pub fn start(binary: &str) -> Result<Self> {
        Self::start_with(binary, &|_| Vec::new())
    }

    /// [`start`](Self::start) with arguments after the defaults (`--port
    /// <port> --bind 127.0.0.1 --save "" --appendonly no --dir --logfile`);
    /// a later argument overrides an earlier one.
    pub fn start_with(binary: &str, extra: ExtraArgs<'_>) -> Result<Self> {
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS_MAX {
            let port = try_free_port()?;
            let dir = tempfile::Builder::new()
                .prefix("holdfast-redis")
                .tempdir()
                .context("a temp dir for redis-server")?;
            let mut args: Vec<OsString> = ["--port", &port.to_string()]
                .iter()
                .chain(&["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .map(OsString::from)
                .collect();
            args.extend(["--dir".into(), dir.path().into()]);
            args.extend(["--logfile".into(), dir.path().join(LOG_FILE).into()]);
            args.extend(extra(port));
            let mut server = Self {
                child: spawn(binary.as_ref(), &args, dir.path())?,
                port,
                binary: binary.into(),
                args,
                dir,
            };
            match server.wait_up() {
                Ok(()) => return Ok(server),
                Err(Start::PortTaken) => last_error = Some(anyhow::anyhow!("port {port} taken")),
                Err(Start::Failed(e)) => return Err(e),
            }
        }
        Err(last_error.expect("at least one attempt")).context(format!(
            "redis-server found no free port in {START_ATTEMPTS_MAX} attempts"
        ))
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its process id (for its CPU time, or a signal).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its working directory (its log is `redis.log` there).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(LOG_FILE)).unwrap_or_default()
    }

    /// A `redis://` URL for it (no password, no TLS: the caller knows).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL, and reaped (it keeps nothing on disk).
    pub fn kill(&mut self) {
        stop_child(&mut self.child, Duration::ZERO);
    }

    /// Starts a fresh, empty server with the same arguments on the same
    /// port (after [`kill`](Self::kill), or kills it first).
    pub fn restart_empty(&mut self) -> Result<()> {
        self.kill();
        let _ = std::fs::remove_file(self.dir.path().join(LOG_FILE));
        self.child = spawn(&self.binary, &self.args, self.dir.path())?;
        match self.wait_up() {
            Ok(()) => Ok(()),
            Err(Start::PortTaken) => bail!("port {} taken while redis-server was down", self.port),
            Err(Start::Failed(e)) => Err(e),
        }
    }

    /// Until our own log says it accepts connections, bounded by
    /// [`START_TIMEOUT`].
    fn wait_up(&mut self) -> Result<(), Start> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let log = self.log();
            if let Some(status) = self.child.try_wait().map_err(|e| Start::Failed(e.into()))? {
                if PORT_TAKEN.iter().any(|m| log.contains(m)) {
                    return Err(Start::PortTaken);
                }
                return Err(Start::Failed(anyhow::anyhow!(
                    "redis-server on port {} exited at start ({status}): {}",
                    self.port,
                    log.trim()
                )));
            }
            if log.contains(READY_LINE) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(Start::Failed(anyhow::anyhow!(
                    "redis-server on port {} not up within {START_TIMEOUT:?}: {}",
                    self.port,
                    log.trim()
                )));
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // Our own child, by its handle: nothing else is signalled.
        self.kill();
    }
}

enum Start {
    PortTaken,
    Failed(anyhow::Error),
}

fn spawn(binary: &std::ffi::OsStr, args: &[OsString], dir: &Path) -> Result<Child> {
    let mut cmd = Command::new(binary);
    cmd.args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    spawn_owned(cmd).with_context(|| {
        format!(
            "spawning {} (is redis-server installed?)",
            binary.to_string_lossy()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// Sends an inline PING and reads the reply.
    fn ping(port: u16) -> std::io::Result<String> {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(b"PING\r\n")?;
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply)?;
        Ok(String::from_utf8_lossy(&reply).into_owned())
    }

    #[test]
    fn a_missing_binary_is_a_clear_error() {
        let err = RedisServer::start("/nonexistent/redis-server").unwrap_err();
        assert!(format!("{err:#}").contains("spawning"), "{err:#}");
    }

    #[test]
    fn starts_answers_restarts_and_stops() {
        let Some(mut server) = RedisServer::for_test("the launcher's own test") else {
            return;
        };
        let port = server.port();
        assert_ne!(port, crate::REDIS_DEFAULT_PORT);
        assert_eq!(ping(port).unwrap(), "+PONG\r\n");
        server.kill();
        assert!(ping(port).is_err(), "answering after kill");
        server.restart_empty().unwrap();
        assert_eq!(server.port(), port);
        assert_eq!(ping(port).unwrap(), "+PONG\r\n");
        drop(server);
        assert!(ping(port).is_err(), "server still answering after drop");
    }

    #[test]
    fn a_taken_port_moves_to_another() {
        let Some(first) = RedisServer::for_test("the launcher's own test") else {
            return;
        };
        // Every attempt asks for the first server's port: each one fails
        // to bind and says so, not "ready".
        let taken = first.port();
        let err = RedisServer::start_with("redis-server", &|_| {
            vec!["--port".into(), taken.to_string().into()]
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("no free port"), "{err:#}");
        assert_eq!(
            ping(taken).unwrap(),
            "+PONG\r\n",
            "the first one is untouched"
        );
    }
}
