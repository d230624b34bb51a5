//! Exit codes an operator gates a deployment on: a breached threshold, a
//! run whose every request failed, a malformed scenario, a refused target.

mod common;

use common::{Gateway, LENIENT, Plan, run_loadtest, scenario};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breached_threshold_exits_non_zero() {
    let gw = Gateway::memory().await;
    let target = gw.target();
    // Flag-built drop: 5 viewers, 20 buyers on 10 units, over 2 s.
    let mut args = vec![
        "--target",
        &target,
        "--viewers",
        "5",
        "--burst",
        "20",
        "--stock",
        "10",
        "--duration-s",
        "2",
        "--threshold",
        "reserve.count>=1000000",
        "--threshold",
        "oversold==0",
    ];
    args.extend(LENIENT);
    let run = run_loadtest(&args).await;
    assert_eq!(run.code, i32::from(holdfast_loadtest::EXIT_THRESHOLD));
    assert!(run.stdout.contains("reserve.count>=1000000") && run.stdout.contains("BREACHED"));
    assert!(run.stdout.contains("oversold: 0"));

    // The same run with thresholds that hold passes.
    let mut args = vec![
        "--target",
        &target,
        "--viewers",
        "5",
        "--burst",
        "20",
        "--stock",
        "10",
        "--duration-s",
        "2",
        "--threshold",
        "reserve.count>=10",
        "--threshold",
        "errors.rate<=100%",
    ];
    args.extend(LENIENT);
    assert_eq!(run_loadtest(&args).await.code, 0);
    gw.stop().await;
}

/// Every buyer asks for more units than one order may take: every request
/// is refused with `qty_above_max`, which is a failure, not a sale
/// refusal. Issue 17.3: such a run exited 0.
const EVERY_REQUEST_FAILS: &str = r#"
name = "all-fail"
duration_s = 2

[[sku]]
id = "big"
total = 5000

[buyer]
qty = 1001

[[burst]]
at_s = 0.5
buyers = 10
sku = "big"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_every_request_failed_exits_non_zero() {
    let gw = Gateway::memory().await;
    let plan = Plan::new(EVERY_REQUEST_FAILS);
    let run = run_loadtest(&plan.args(&gw.target(), &[])).await;
    assert_eq!(run.code, i32::from(holdfast_loadtest::EXIT_ERROR));
    assert!(
        run.stdout
            .contains("RUN FAILED    every request failed (reserve.qty_above_max 10)"),
        "{}",
        run.stdout
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_malformed_scenario_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = scenario(
        &dir,
        "bad.toml",
        "name = \"bad\"\nduration_s = 5\n\n[[sku]]\nid = \"x\"\ntotal = ten\n",
    );
    let run = run_loadtest(&["--scenario", file.to_str().unwrap(), "--quiet"]).await;
    assert_eq!(run.code, i32::from(holdfast_loadtest::EXIT_USAGE));
    assert!(
        run.stderr.contains(&format!("{}:6:", file.display())),
        "names line 6: {}",
        run.stderr
    );
    assert!(run.stderr.contains("total = ten"), "quotes the line");

    let file = scenario(
        &dir,
        "unknown.toml",
        "name = \"bad\"\nduration_s = 5\n[[sku]]\nid = \"x\"\ntotal = 1\n[[burst]]\nat_s = 1\nbuyers = 3\nsku = \"y\"\n",
    );
    let run = run_loadtest(&["--scenario", file.to_str().unwrap(), "--quiet"]).await;
    assert_eq!(run.code, i32::from(holdfast_loadtest::EXIT_USAGE));
    assert!(
        run.stderr.contains(&format!("{}:6:", file.display())) && run.stderr.contains("\"y\""),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn bad_thresholds_and_remote_targets_are_refused_before_any_load() {
    let run = run_loadtest(&["--threshold", "reserve.p98<5ms", "--quiet"]).await;
    assert_eq!(run.code, i32::from(holdfast_loadtest::EXIT_USAGE));
    assert!(run.stderr.contains("unknown figure"));
    // A documentation address (TEST-NET-1): refused without a packet sent.
    let run = run_loadtest(&["--target", "http://192.0.2.1:8080", "--quiet"]).await;
    assert_eq!(run.code, i32::from(holdfast_loadtest::EXIT_USAGE));
    assert!(run.stderr.contains("--allow-remote"));
}
