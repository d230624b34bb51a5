//! `--find-capacity` and `--baseline` end to end against the real gateway.

mod common;

use common::{Gateway, LENIENT, run_loadtest, scenario};
use holdfast_loadtest::report::Report;

const SMALL: &str = r#"
name = "small"
duration_s = 1.5
protocol = "http"

[[sku]]
id = "a"
total = 10
hold_ttl_ms = 200

[buyer]
commit_probability = 0.5
pay_delay_ms = [5, 20]

[[burst]]
at_s = 0.2
buyers = 8
sku = "a"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_search_reports_headroom_and_baseline_shows_changes() {
    let gw = Gateway::memory().await;
    let dir = tempfile::tempdir().unwrap();
    let file = scenario(&dir, "small.toml", SMALL);
    let target = gw.target();
    let first = dir.path().join("first.json");
    let second = dir.path().join("second.json");

    // A threshold that always holds: the search climbs to --capacity-max.
    let mut args = vec![
        "--target",
        &target,
        "-s",
        file.to_str().unwrap(),
        "--find-capacity",
        "--capacity-step",
        "2",
        "--capacity-max",
        "2",
        "--capacity-repeats",
        "2",
        "--threshold",
        "oversold==0",
        "--out",
        first.to_str().unwrap(),
    ];
    args.extend(LENIENT);
    let run = run_loadtest(&args).await;
    assert_eq!(run.code, 0);
    let r: Report = serde_json::from_str(&std::fs::read_to_string(&first).unwrap()).unwrap();
    let cap = r.capacity.expect("capacity section");
    assert_eq!(
        cap.levels.iter().map(|l| l.factor).collect::<Vec<_>>(),
        vec![1.0, 2.0]
    );
    assert_eq!(cap.held_max, Some(2.0));
    // Each level ran twice, and says how far apart the runs were.
    assert!(cap.levels.iter().all(|l| l.samples.len() == 2));
    assert!(
        cap.levels[0].detail.contains("over 2 runs")
            && cap.levels[0].detail.contains("held 2 of 2"),
        "{}",
        cap.levels[0].detail
    );
    assert!(
        cap.summary
            .starts_with("holds 2.00x the planned load (burst 8 buyers)"),
        "{}",
        cap.summary
    );
    assert_eq!(r.level, 2.0, "the report is the highest level that held");
    assert_eq!(r.bursts[0].buyers, 16);

    // A threshold that can never hold: the plan itself breaks, exit 3.
    let mut args = vec![
        "--target",
        &target,
        "-s",
        file.to_str().unwrap(),
        "--find-capacity",
        "--capacity-step",
        "2",
        "--capacity-refine",
        "0",
        "--threshold",
        "reserve.count>100000",
    ];
    args.extend(LENIENT);
    let run = run_loadtest(&args).await;
    assert_eq!(run.code, i32::from(holdfast_loadtest::EXIT_THRESHOLD));
    assert!(run.stdout.contains("does NOT hold the planned load"));

    // A plain run compared with the first report.
    let mut args = vec![
        "--target",
        &target,
        "-s",
        file.to_str().unwrap(),
        "--baseline",
        first.to_str().unwrap(),
        "--out",
        second.to_str().unwrap(),
    ];
    args.extend(LENIENT);
    let run = run_loadtest(&args).await;
    assert_eq!(run.code, 0);
    assert!(run.stdout.contains("against baseline"));
    // The baseline ran the doubled burst: the comparison says so.
    assert!(
        run.stdout
            .contains("WARNING: different load: 16 burst buyers at x2.00"),
        "{}",
        run.stdout
    );
    let r: Report = serde_json::from_str(&std::fs::read_to_string(&second).unwrap()).unwrap();
    let burst = r
        .baseline
        .iter()
        .find(|c| c.figure == "reserve.count")
        .expect("reserve.count compared");
    assert!(
        burst.before >= burst.after,
        "the baseline ran twice the burst"
    );
    gw.stop().await;
}
