//! `--spawn`: start a holdfast gateway as a child process on a free
//! loopback port for a self-contained run, and stop it afterwards.
//!
//! Owns the gateway's command line, its fresh tokens, the readiness wait
//! (`GET /readyz` until 200) and its shutdown (SIGTERM, then SIGKILL after a
//! grace). The gateway's log goes to a file whose tail is shown if it fails
//! to start. The child is killed if this process drops it (Ctrl-C included).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hyper::Method;

use crate::client::http::Api;
use crate::client::net::{Dialer, Target};
use crate::config::{Cli, Persistence, PortRange};
use crate::plan::{Rng, unix_us};

/// Time allowed for a graceful shutdown (the journal flushes) before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// A running gateway child.
pub struct Gateway {
    child: tokio::process::Child,
    pub target: String,
    pub admin_token: String,
    pub checkout_token: String,
    pub log: PathBuf,
}

/// The gateway binary: `--gateway-bin`, or `holdfast` next to this executable.
pub fn gateway_bin(cli: &Cli) -> anyhow::Result<PathBuf> {
    match &cli.gateway_bin {
        Some(p) => Ok(p.clone()),
        None => Ok(std::env::current_exe()
            .context("locating this executable")?
            .with_file_name("holdfast")),
    }
}

/// A port that was free a moment ago on 127.0.0.1: the first free one of
/// `range`, or any.
pub fn free_port(range: Option<PortRange>) -> anyhow::Result<u16> {
    let Some(r) = range else {
        let l = std::net::TcpListener::bind("127.0.0.1:0")
            .context("binding 127.0.0.1:0 to find a free port")?;
        return Ok(l.local_addr()?.port());
    };
    (r.first..=r.last)
        .find(|&p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
        .ok_or_else(|| {
            anyhow::anyhow!("--spawn-ports {}-{}: every port is in use", r.first, r.last)
        })
}

fn token(rng: &mut Rng) -> String {
    format!("{:016x}{:016x}", rng.next_u64(), rng.next_u64())
}

/// Starts the gateway and waits until it is ready.
pub async fn start(cli: &Cli) -> anyhow::Result<Gateway> {
    let bin = gateway_bin(cli)?;
    if !bin.exists() {
        anyhow::bail!(
            "gateway binary not found at {}: build it (cargo build -p holdfast-gateway --bin holdfast) or pass --gateway-bin",
            bin.display()
        );
    }
    let port = free_port(cli.spawn_ports)?;
    let mut rng = Rng::new(unix_us() ^ ((std::process::id() as u64) << 32));
    let (admin_token, checkout_token) = (token(&mut rng), token(&mut rng));
    let log = std::env::temp_dir().join(format!(
        "holdfast-loadtest-gateway-{}-{port}.log",
        std::process::id()
    ));
    let log_file =
        std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let listen = format!("127.0.0.1:{port}");
    let mut cmd = tokio::process::Command::new(&bin);
    cmd.arg("serve")
        .arg("--listen")
        .arg(&listen)
        .arg("--admin-token")
        .arg(&admin_token)
        .arg("--checkout-token")
        .arg(&checkout_token);
    if let Some(r) = &cli.redis {
        cmd.arg("--redis")
            .arg(r)
            .arg("--redis-prefix")
            .arg(&cli.redis_prefix);
    }
    if let Some(p) = cli.persistence {
        cmd.arg("--persistence").arg(match p {
            Persistence::Durable => "durable",
            Persistence::Async => "async",
        });
    }
    // Our own environment must not configure the child behind our back.
    for (k, _) in std::env::vars() {
        if k.starts_with("HOLDFAST_") && !k.starts_with("HOLDFAST_LOADTEST_") {
            cmd.env_remove(k);
        }
    }
    cmd.stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut gw = Gateway {
        child,
        target: format!("http://{listen}"),
        admin_token,
        checkout_token,
        log,
    };
    tracing::info!(
        "spawned gateway {} on {listen} (log {})",
        bin.display(),
        gw.log.display()
    );

    let t = Target::resolve(&gw.target).await?;
    let api = Api::new(
        Dialer::new(t.addr, vec![]),
        t.authority.clone(),
        gw.admin_token.clone(),
        Duration::from_secs(2),
    );
    let deadline = Instant::now() + Duration::from_secs(cli.spawn_ready_timeout_s);
    loop {
        if let Some(status) = gw.child.try_wait()? {
            anyhow::bail!(
                "the gateway exited during start-up ({status}); its log ends:\n{}",
                tail(&gw.log)
            );
        }
        if let Ok((200, _)) = api.call(Method::GET, "/readyz", false, None).await {
            return Ok(gw);
        }
        if Instant::now() >= deadline {
            gw.stop().await;
            anyhow::bail!(
                "the gateway was not ready within {} s; its log ends:\n{}",
                cli.spawn_ready_timeout_s,
                tail(&gw.log)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Gateway {
    /// SIGTERM, wait for a graceful exit, then SIGKILL.
    pub async fn stop(&mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: kill(2) with a pid we spawned and still own (not yet
            // reaped, so it cannot have been reused).
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
        if tokio::time::timeout(STOP_GRACE, self.child.wait())
            .await
            .is_err()
        {
            tracing::warn!("the gateway did not stop within {STOP_GRACE:?}; killing it");
            let _ = self.child.kill().await;
        }
    }
}

/// The last lines of a log file.
fn tail(path: &PathBuf) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_port_range;

    #[test]
    fn port_ranges_parse_and_pick_a_free_port() {
        assert_eq!(
            parse_port_range("18080-18089"),
            Ok(PortRange {
                first: 18080,
                last: 18089
            })
        );
        assert_eq!(
            parse_port_range("9000"),
            Ok(PortRange {
                first: 9000,
                last: 9000
            })
        );
        assert!(parse_port_range("9-8").unwrap_err().contains("above"));
        assert!(parse_port_range("0-8").is_err());
        assert!(parse_port_range("a-b").is_err());
        // A range whose only port is taken is refused, with the range named.
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = held.local_addr().unwrap().port();
        let err = free_port(Some(PortRange { first: p, last: p }))
            .unwrap_err()
            .to_string();
        assert!(err.contains("every port is in use"), "{err}");
        drop(held);
        assert_eq!(free_port(Some(PortRange { first: p, last: p })).unwrap(), p);
    }
}
