//! The real `holdfast` gateway as a child process, for end-to-end
//! measurements: started on a free loopback port with tokens of its own,
//! waited for until `/readyz` answers, measured from outside (`/proc` for
//! RSS and CPU, `/metrics` for counters), and stopped with SIGTERM (then
//! SIGKILL) when the handle is dropped.
//!
//! It runs the release binary exactly as an operator would, so a figure
//! measured through it includes everything the product does (HTTP upgrade,
//! tungstenite, the hub, the journal). This module only ever signals the
//! child it started, by its pid, and only talks to loopback.

use anyhow::{Context, Result, bail};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a fresh gateway gets to answer `/readyz` (a loaded 2-core
/// machine can take a few seconds; recovery from an empty Redis is quick).
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Attempts at finding a port and starting on it (another process may take
/// the port between our probe and the gateway's bind).
const START_ATTEMPTS_MAX: u32 = 5;

/// Timeout of one admin or metrics HTTP request.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest HTTP response read (a `/metrics` page is a few tens of KiB).
const HTTP_RESPONSE_BYTES_MAX: usize = 4 << 20;

/// How long SIGTERM gets before SIGKILL at the end of a run.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// How to start a gateway.
#[derive(Debug, Clone)]
pub struct GatewaySpec {
    /// The `holdfast` binary.
    pub bin: PathBuf,
    /// `--redis URL --persistence MODE`, or in memory.
    pub redis: Option<(String, &'static str)>,
    /// Further `holdfast serve` flags (limits, broadcast interval).
    pub args: Vec<String>,
    /// A command the gateway runs under (e.g. `valgrind --tool=massif`);
    /// empty: run it directly. Tools like valgrind keep the gateway's pid.
    pub wrapper: Vec<String>,
}

/// The `holdfast` binary next to the running executable (where cargo puts
/// both when they are built with the same profile and target dir); for a
/// test executable in `deps/`, the one in the directory above.
pub fn default_gateway_bin() -> PathBuf {
    let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(PathBuf::from))
    else {
        return PathBuf::from("holdfast");
    };
    let beside = dir.join("holdfast");
    match dir.parent() {
        Some(up) if !beside.exists() && dir.ends_with("deps") => up.join("holdfast"),
        _ => beside,
    }
}

/// A running gateway; stopped on drop.
#[derive(Debug)]
pub struct GatewayProcess {
    child: Child,
    addr: SocketAddr,
    admin_token: String,
    checkout_token: String,
    /// Holds the gateway's log; removed after the process is gone.
    dir: tempfile::TempDir,
}

impl GatewayProcess {
    /// Starts the gateway on a free loopback port and waits until ready.
    pub fn start(spec: &GatewaySpec) -> Result<Self> {
        if !spec.bin.exists() {
            bail!(
                "gateway binary {} not found: build it first with \
                 `cargo build --release -p holdfast-gateway` (same CARGO_TARGET_DIR), \
                 or pass --gateway-bin",
                spec.bin.display()
            );
        }
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS_MAX {
            match Self::start_on(spec, holdfast_testkit::try_free_port()?) {
                Ok(gateway) => return Ok(gateway),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.expect("at least one attempt")).context("starting the holdfast gateway")
    }

    fn start_on(spec: &GatewaySpec, port: u16) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("holdfast-bench-gateway")
            .tempdir()?;
        let log = std::fs::File::create(dir.path().join("gateway.log"))?;
        // Tokens of our own: the run never depends on, or leaks, anyone's.
        let nonce = std::process::id() as u64 * 1_000_003 + u64::from(port);
        let admin_token = format!("bench-admin-{nonce:x}");
        let checkout_token = format!("bench-checkout-{nonce:x}");
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut cmd = match spec.wrapper.split_first() {
            Some((tool, tool_args)) => {
                let mut cmd = Command::new(tool);
                cmd.args(tool_args).arg(&spec.bin);
                cmd
            }
            None => Command::new(&spec.bin),
        };
        cmd.arg("serve")
            .args(["--listen", &addr.to_string()])
            .args(["--admin-token", &admin_token])
            .args(["--checkout-token", &checkout_token]);
        if let Some((url, mode)) = &spec.redis {
            cmd.args(["--redis", url, "--persistence", mode]);
        }
        cmd.args(&spec.args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", spec.bin.display()))?;
        let mut gateway = Self {
            child,
            addr,
            admin_token,
            checkout_token,
            dir,
        };
        // Under a tool such as valgrind start-up is tens of times slower.
        let ready_timeout = if spec.wrapper.is_empty() {
            READY_TIMEOUT
        } else {
            READY_TIMEOUT * 10
        };
        let deadline = Instant::now() + ready_timeout;
        while Instant::now() < deadline {
            if let Some(status) = gateway.child.try_wait()? {
                bail!(
                    "holdfast exited at start ({status}): {}",
                    gateway.log_tail()
                );
            }
            if matches!(gateway.get("/readyz"), Ok((200, _))) {
                return Ok(gateway);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "holdfast on {addr} not ready within {ready_timeout:?}: {}",
            gateway.log_tail()
        )
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn checkout_token(&self) -> &str {
        &self.checkout_token
    }

    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The last lines of its log (for error messages).
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }

    /// Resident set size now, in KiB (`VmRSS` of `/proc/PID/status`).
    pub fn rss_kib(&self) -> Result<u64> {
        rss_kib(self.pid())
    }

    /// An unauthenticated GET; returns status and body.
    pub fn get(&self, path: &str) -> Result<(u16, String)> {
        http(self.addr, "GET", path, None, None)
    }

    /// An admin request with a JSON body; returns status and body.
    pub fn admin(&self, method: &str, path: &str, body: &str) -> Result<(u16, String)> {
        http(self.addr, method, path, Some(&self.admin_token), Some(body))
    }

    /// The sum of every series of a counter or gauge in `/metrics`
    /// (0 when it has not been emitted yet).
    pub fn metric(&self, name: &str) -> Result<f64> {
        let (status, body) = self.get("/metrics")?;
        if status != 200 {
            bail!("/metrics answered {status}");
        }
        Ok(metric_sum(&body, name))
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        // Our own child, by its handle: SIGTERM for a graceful stop (the
        // gateway closes its websockets and flushes the journal), then
        // SIGKILL if it has not stopped in time.
        holdfast_testkit::process::terminate(&mut self.child);
        holdfast_testkit::stop_child(&mut self.child, STOP_GRACE);
    }
}

/// `perf record` attached to a running process (a profiling run; its
/// figures are not the measurement's). Timer sampling (`cpu-clock`; the VM
/// has no hardware counters) with DWARF call graphs, since release builds
/// keep no frame pointers.
#[derive(Debug)]
pub struct PerfRecord {
    child: Child,
}

impl PerfRecord {
    /// Starts recording `pid` for `seconds` into `out`.
    pub fn attach(pid: u32, out: &std::path::Path, seconds: f64, freq: u32) -> Result<Self> {
        let child = Command::new("perf")
            .args(["record", "-e", "cpu-clock", "-F", &freq.to_string()])
            .args(["--call-graph", "dwarf,16384", "-p", &pid.to_string()])
            .arg("-o")
            .arg(out)
            .args(["--", "sleep", &format!("{seconds:.1}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawning perf (is linux-perf installed?)")?;
        Ok(Self { child })
    }

    /// Waits for the recording to end.
    pub fn finish(mut self) -> Result<()> {
        let status = self.child.wait()?;
        if !status.success() {
            bail!("perf record exited with {status}");
        }
        Ok(())
    }
}

/// `VmRSS` of a process in KiB.
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS line")
}

/// Sums the samples of metric `name` (any labels) in Prometheus text.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            // The name must end here: `foo` must not match `foo_bar`.
            if !(rest.starts_with(' ') || rest.starts_with('{')) {
                return None;
            }
            l.rsplit(' ').next()?.parse::<f64>().ok()
        })
        .sum()
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`), so
/// the response ends with the stream. Enough for set-up and counters; the
/// measured traffic goes over websockets.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT)?;
    stream.set_read_timeout(Some(HTTP_TIMEOUT))?;
    stream.set_write_timeout(Some(HTTP_TIMEOUT))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(token) = token {
        req.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    stream
        .take(HTTP_RESPONSE_BYTES_MAX as u64)
        .read_to_end(&mut raw)?;
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Result<(u16, String)> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("no end of HTTP headers")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").context("bad chunk header")?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .context("bad chunk size")?;
        if size == 0 {
            return Ok(out);
        }
        out.push_str(rest.get(..size).context("short chunk")?);
        body = rest.get(size + 2..).context("short chunk")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sums_every_series_and_only_that_name() {
        let text = "# TYPE a counter\n\
                    a{kind=\"x\"} 2\n\
                    a{kind=\"y\"} 3\n\
                    a_total 100\n\
                    a 1\n";
        assert_eq!(metric_sum(text, "a"), 6.0);
        assert_eq!(metric_sum(text, "a_total"), 100.0);
        assert_eq!(metric_sum(text, "b"), 0.0);
    }

    #[test]
    fn responses_parse_plain_and_chunked() {
        let plain = b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(parse_response(plain).unwrap(), (201, "{}".to_string()));
        let chunked =
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), (200, "abcde".to_string()));
        assert!(parse_response(b"garbage").is_err());
    }

    #[test]
    fn rss_of_this_process_is_readable() {
        if cfg!(target_os = "linux") {
            assert!(rss_kib(std::process::id()).unwrap() > 0);
        }
    }

    #[test]
    fn a_missing_binary_is_a_clear_error() {
        let spec = GatewaySpec {
            bin: PathBuf::from("/nonexistent/holdfast"),
            redis: None,
            args: Vec::new(),
            wrapper: Vec::new(),
        };
        let err = GatewayProcess::start(&spec).unwrap_err();
        assert!(format!("{err:#}").contains("cargo build"), "{err:#}");
    }
}
