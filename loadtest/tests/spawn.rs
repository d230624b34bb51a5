//! A short self-contained run against the real gateway binary (`--spawn`):
//! the audit passes, the JSON report parses, and the gateway listens on a
//! port of `--spawn-ports`.
//!
//! The `holdfast` binary is built here (`cargo build -p holdfast-gateway
//! --bin holdfast`, a no-op when it is fresh): cargo does not build another
//! package's binaries for this package's tests. A failed build fails the
//! test, unless HOLDFAST_TEST_ALLOW_SKIP=1.

mod common;

use std::path::PathBuf;

use common::{LENIENT, run_loadtest, skip_or_fail};
use holdfast_loadtest::report::Report;

/// Builds the gateway binary next to `holdfast-loadtest`, in the same
/// profile; `None` if the build failed and skipping was asked for.
fn holdfast_bin() -> Option<PathBuf> {
    let loadtest = common::loadtest_bin();
    let bin = loadtest.with_file_name("holdfast");
    let mut cmd = std::process::Command::new(option_env!("CARGO").unwrap_or("cargo"));
    cmd.args(["build", "-p", "holdfast-gateway", "--bin", "holdfast"])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if loadtest
        .parent()
        .and_then(|d| d.file_name())
        .is_some_and(|d| d == "release")
    {
        cmd.arg("--release");
    }
    let built = cmd.status().is_ok_and(|s| s.success());
    if !built || !bin.exists() {
        skip_or_fail(&format!(
            "`cargo build -p holdfast-gateway --bin holdfast` did not produce {}",
            bin.display()
        ));
        return None;
    }
    Some(bin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawned_gateway_passes_the_audit() {
    let Some(gateway) = holdfast_bin() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report.json");
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/ci-smoke.toml");
    // A range of ports, the first of them taken: the gateway gets another.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let first = taken.local_addr().unwrap().port();
    let free = (first + 1..first + 200)
        .find(|&p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
        .expect("a free port above the taken one");
    let range = format!("{first}-{free}");
    let mut args = vec![
        "--spawn",
        "--gateway-bin",
        gateway.to_str().unwrap(),
        "--spawn-ports",
        &range,
        "--scenario",
        scenario,
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend(LENIENT);
    let run = run_loadtest(&args).await;
    assert_eq!(run.code, 0, "the real gateway passes the smoke run");
    let report: Report = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert!(
        report.audit.ok && report.audit.oversold == 0,
        "{:?}",
        report.audit.problems
    );
    assert!(report.figures["reserve.count"] > 0.0);
    assert_eq!(report.target, format!("http://127.0.0.1:{free}"));
    drop(taken);
}
