//! Shared helpers for the load tester's integration tests: the real
//! gateway started in this process on a free port ([`Gateway`]), a private
//! `redis-server` (`holdfast_testkit::RedisServer`), a runner for the real `holdfast-loadtest`
//! binary ([`run_loadtest`]), and the overselling double ([`double`]), kept
//! only for the test that proves the audit catches an oversell. The tool
//! check, free ports, the launcher and [`eventually`] are
//! `holdfast-testkit`'s, shared with the gateway's tests and the benches.

#![allow(dead_code)]

pub mod double;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use holdfast_gateway::config::ServeArgs;
use holdfast_loadtest::client::http::Api;
use holdfast_loadtest::client::net::Dialer;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The gateway's demo tokens, which `ServeArgs::for_tests` sets and the
/// load tester uses by default.
pub const ADMIN: &str = "demo-admin";
pub const CHECKOUT: &str = "demo-checkout";

/// Upper bound for waiting on something that must happen; generous so a
/// slow, shared machine never fails a test, never used as a sleep.
pub const PATIENCE: Duration = Duration::from_secs(30);

// Each test file uses some of these.
#[allow(unused_imports)]
pub use holdfast_testkit::{free_port, skip_or_fail};

/// Polls `probe` until it returns `Some`, at most [`PATIENCE`]; fails the
/// test naming `what` otherwise.
pub async fn eventually<T, F, Fut>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    holdfast_testkit::eventually(what, PATIENCE, probe).await
}

/// The real gateway, in this process, on 127.0.0.1.
pub struct Gateway {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
    pub api: Api,
}

impl Gateway {
    /// In memory, the demo tokens, fast broadcasts, no catalog.
    pub fn args() -> ServeArgs {
        let mut args = ServeArgs::for_tests();
        args.broadcast_interval_ms = 20;
        args
    }

    pub async fn memory() -> Self {
        Self::start(Self::args()).await
    }

    /// Starts on `args.listen` (port 0 picks a free one) and waits for
    /// `/readyz`.
    pub async fn start(args: ServeArgs) -> Self {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .expect("bind the gateway's port");
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(holdfast_gateway::server::run(
            listener,
            args,
            shutdown.clone(),
        ));
        let api = api(addr, ADMIN);
        let gw = Self {
            addr,
            shutdown,
            handle,
            api,
        };
        eventually("the gateway's /readyz", || async {
            assert!(
                !gw.handle.is_finished(),
                "the gateway exited during start-up"
            );
            match gw
                .api
                .call(hyper::Method::GET, "/readyz", false, None)
                .await
            {
                Ok((200, _)) => Some(()),
                _ => None,
            }
        })
        .await;
        gw
    }

    /// SKU `id` as `/api/skus` lists it (`None` when absent, or when the
    /// gateway does not answer: a probe for [`eventually`]).
    pub async fn sku(&self, id: &str) -> Option<holdfast_protocol::SkuState> {
        let list: holdfast_protocol::SkuList = self.api.get("/api/skus").await.ok()?;
        list.skus.into_iter().find(|k| k.id == id)
    }

    /// `--target` for the load tester.
    pub fn target(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the gateway and waits for it (its port is free afterwards).
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.handle
            .await
            .expect("gateway task")
            .expect("gateway result");
    }
}

/// An API client of `addr` with `admin_token`.
pub fn api(addr: SocketAddr, admin_token: &str) -> Api {
    Api::new(
        Dialer::new(addr, vec![]),
        addr.to_string(),
        admin_token.into(),
        Duration::from_secs(10),
    )
}

/// The `holdfast-loadtest` binary under test.
pub fn loadtest_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_holdfast-loadtest"))
}

/// Flags that keep a test independent of this machine's speed: the
/// generator-health verdict is tested in unit tests, not here.
pub const LENIENT: [&str; 7] = [
    "--quiet",
    "--health-lag-max-ms",
    "60000",
    "--health-cpu-max",
    "1000",
    "--burst-spread-max-ms",
    "60000",
];

/// Output of one run of the binary.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the binary with `args` (bounded by a generous timeout).
pub async fn run_loadtest<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S]) -> Run {
    let mut cmd = tokio::process::Command::new(loadtest_bin());
    cmd.args(args).kill_on_drop(true);
    for (k, _) in std::env::vars() {
        if k.starts_with("HOLDFAST_") {
            cmd.env_remove(k);
        }
    }
    let out = tokio::time::timeout(Duration::from_secs(180), cmd.output())
        .await
        .expect("loadtest run finished within 180 s")
        .expect("loadtest started");
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    };
    eprintln!(
        "--- loadtest {args:?} exit {}\n--- stdout\n{}\n--- stderr\n{}",
        run.code, run.stdout, run.stderr
    );
    run
}

/// [`run_loadtest`] in the background, for a test that acts on the
/// gateway during the run.
pub fn run_loadtest_in_background(args: Vec<String>) -> tokio::task::JoinHandle<Run> {
    tokio::spawn(async move { run_loadtest(&args).await })
}

/// A scenario file in a temporary folder, with the report path of a run.
pub struct Plan {
    _dir: tempfile::TempDir,
    pub file: PathBuf,
    pub out: PathBuf,
}

impl Plan {
    /// Writes `text` as the scenario.
    pub fn new(text: &str) -> Plan {
        let dir = tempfile::tempdir().unwrap();
        let file = scenario(&dir, "scenario.toml", text);
        let out = dir.path().join("report.json");
        Plan {
            _dir: dir,
            file,
            out,
        }
    }

    /// A path in the plan's folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.file.with_file_name(name)
    }

    /// `--target <target> --scenario <file> --out <report>`, then `extra`,
    /// then [`LENIENT`].
    pub fn args(&self, target: &str, extra: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "--target".into(),
            target.into(),
            "--scenario".into(),
            self.file.display().to_string(),
            "--out".into(),
            self.out.display().to_string(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a.extend(LENIENT.iter().map(|s| s.to_string()));
        a
    }

    /// The run's JSON report.
    pub fn report(&self) -> holdfast_loadtest::report::Report {
        serde_json::from_str(&std::fs::read_to_string(&self.out).unwrap()).unwrap()
    }
}

/// Writes a scenario file into `dir`.
pub fn scenario(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p
}
