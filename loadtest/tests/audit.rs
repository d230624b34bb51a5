//! The audit against a test double of the gateway: it must flag a server
//! that oversells (non-zero exit), and pass an honest one.

mod common;

use common::{LENIENT, Mode, run_loadtest, scenario, start_double};
use holdfast_loadtest::report::Report;

/// 50 buyers fire at a drop of 10 units and all of them pay.
const DROP: &str = r#"
name = "oversell-probe"
duration_s = 3
protocol = "ws-binary"

[[sku]]
id = "drop"
total = 10
show = "live"
hold_ttl_ms = 400
window = "closed"

[viewers]
count = 4
topics = ["show:live"]
connect_over_s = 0.5

[buyer]
commit_probability = 1.0
pay_delay_ms = [10, 50]

[[host]]
at_s = 1
action = "open"
sku = "drop"

[[burst]]
at_s = 1
buyers = 50
sku = "drop"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overselling_server_is_flagged_with_a_non_zero_exit() {
    let addr = start_double(Mode::Oversell).await;
    let dir = tempfile::tempdir().unwrap();
    let file = scenario(&dir, "drop.toml", DROP);
    let out = dir.path().join("report.json");
    let target = format!("http://{addr}");
    let mut args = vec![
        "--target",
        &target,
        "--scenario",
        file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend(LENIENT);
    let run = run_loadtest(&args).await;
    assert_eq!(
        run.code,
        i32::from(holdfast_loadtest::EXIT_AUDIT),
        "an oversell must fail the run"
    );
    assert!(
        run.stdout.contains("OVERSOLD by 40"),
        "says exactly what is wrong"
    );
    let report: Report = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(report.audit.oversold, 40);
    assert!(!report.audit.ok);
    let sku = &report.audit.skus[0];
    assert_eq!(
        (sku.stock_ever, sku.committed_units, sku.concurrent_max),
        (10, 50, 50)
    );
    // The double keeps available at 10 while selling 50: the invariant breaks too.
    assert!(
        report
            .audit
            .checks
            .iter()
            .any(|c| c.name == "invariant" && !c.ok)
    );
}

/// An honest drop with every buyer behaviour: pay, release, walk away (the
/// hold expires), retry the same request id; a cart; arrivals after the drop.
const HONEST: &str = r#"
name = "honest"
duration_s = 3
protocol = "ws-json"

[[sku]]
id = "tee"
total = 20
show = "live"
hold_ttl_ms = 300
window = "closed"

[[sku]]
id = "cap"
total = 30
show = "live"
hold_ttl_ms = 300

[viewers]
count = 6
topics = ["show:live"]
encoding = "binary"
connect_over_s = 0.5

[buyer]
commit_probability = 0.5
release_probability = 0.2
duplicate_probability = 0.5
pay_delay_ms = [10, 100]

[[host]]
at_s = 1
action = "open"
sku = "tee"

[[host]]
at_s = 1.5
action = "restock"
sku = "tee"
qty = 5

[[burst]]
at_s = 1
buyers = 40
sku = "tee"

[[burst]]
at_s = 1.2
buyers = 10
cart = ["tee", "cap"]

[[arrival]]
executor = "constant"
start_s = 1.5
rate = 20
duration_s = 1
skus = ["cap", "tee"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_server_passes_across_two_worker_processes() {
    let addr = start_double(Mode::Honest).await;
    let dir = tempfile::tempdir().unwrap();
    let file = scenario(&dir, "honest.toml", HONEST);
    let out = dir.path().join("report.json");
    let html = dir.path().join("report.html");
    let target = format!("http://{addr}");
    let mut args = vec![
        "--target",
        &target,
        "--scenario",
        file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--html",
        html.to_str().unwrap(),
        "--workers",
        "2",
    ];
    args.extend(LENIENT);
    let run = run_loadtest(&args).await;
    assert_eq!(run.code, 0, "an honest server passes");
    assert!(run.stdout.contains("oversold: 0"));
    let report: Report = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert!(report.audit.ok, "{:?}", report.audit.problems);
    assert_eq!(report.workers, 2, "both workers' stats were merged");
    // 50 burst buyers in all, each reserved, refused or failed exactly once.
    let b: u64 = report
        .bursts
        .iter()
        .map(|b| b.reserved + b.refused + b.errors)
        .sum();
    assert_eq!(b, 50);
    assert_eq!(report.bursts.iter().map(|b| b.buyers).sum::<u64>(), 50);
    // 20 arrivals at 20/s over 1 s.
    let reserves = report.latency["reserve"].count;
    assert_eq!(reserves, 70, "every buyer's reserve was measured once");
    assert!(
        report
            .counts
            .get("idempotency.checked")
            .copied()
            .unwrap_or(0)
            > 0
    );
    assert_eq!(
        report
            .counts
            .get("idempotency.violation")
            .copied()
            .unwrap_or(0),
        0
    );
    assert_eq!(report.figures["viewer.violations"], 0.0);
    assert!(report.counts["viewer.updates"] > 0, "viewers got updates");
    assert!(report.latency.contains_key("fanout"));
    assert!(
        report.stock.iter().any(|s| !s.points.is_empty()),
        "stock was sampled"
    );
    assert!(report.host.iter().all(|h| h.ok));
    let page = std::fs::read_to_string(&html).unwrap();
    assert_eq!(page.matches("<svg").count(), 3);
}
