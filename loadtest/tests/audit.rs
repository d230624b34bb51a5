//! The audit: it flags a server that oversells (the one test against the
//! overselling double), passes the real gateway on an honest run, does not
//! cry wolf when the host restocks outside the tester, and says "state
//! lost" when the gateway restarts mid-run and forgets its holds.

mod common;

use common::{Gateway, Plan, eventually, run_loadtest, run_loadtest_in_background};
use holdfast_loadtest::audit::CheckStatus;
use holdfast_protocol::{QtyReq, SkuState};

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
    let addr = common::double::start_overselling().await;
    let plan = Plan::new(DROP);
    let run = run_loadtest(&plan.args(&format!("http://{addr}"), &[])).await;
    assert_eq!(
        run.code,
        i32::from(holdfast_loadtest::EXIT_AUDIT),
        "an oversell must fail the run"
    );
    assert!(
        run.stdout.contains("OVERSOLD by 40"),
        "says exactly what is wrong"
    );
    let report = plan.report();
    assert_eq!(report.audit.oversold, 40);
    assert!(!report.audit.ok);
    assert_eq!(report.audit.verdict, "AUDIT FAILED: oversold 40");
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
            .any(|c| c.name == "invariant" && c.status == CheckStatus::Failed)
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
async fn the_real_gateway_passes_across_two_worker_processes() {
    let gw = Gateway::memory().await;
    let plan = Plan::new(HONEST);
    let html = plan.path("report.html");
    let html_arg = html.display().to_string();
    let run =
        run_loadtest(&plan.args(&gw.target(), &["--html", &html_arg, "--workers", "2"])).await;
    assert_eq!(run.code, 0, "an honest server passes");
    assert!(run.stdout.contains("oversold: 0; audit passed"));
    let report = plan.report();
    assert!(report.audit.ok, "{:?}", report.audit.problems);
    assert!(
        report
            .audit
            .checks
            .iter()
            .all(|c| c.status == CheckStatus::Ok),
        "{:?}",
        report.audit.checks
    );
    assert_eq!(report.workers, 2, "both workers' stats were merged");
    // 50 burst buyers in all, each reserved, refused or failed exactly once.
    let b: u64 = report
        .bursts
        .iter()
        .map(|b| b.reserved + b.refused + b.errors)
        .sum();
    assert_eq!(b, 50);
    assert_eq!(report.bursts.iter().map(|b| b.buyers).sum::<u64>(), 50);
    // 20 arrivals at 20/s over 1 s: every buyer's reserve measured once,
    // as a hold, a sale refusal or a failure, each in its own histogram.
    assert_eq!(report.latency["reserve"].count, 70);
    assert_eq!(report.figures["reserve.attempts"], 70.0);
    let ok = report.latency["reserve_ok"].count;
    let refused = report.latency.get("reserve_refused").map_or(0, |l| l.count);
    assert_eq!(ok as f64, report.figures["reserve.count"]);
    assert_eq!(
        ok + refused
            + report
                .errors
                .iter()
                .filter(|(k, _)| k.starts_with("reserve.")
                    && !k.ends_with("sold_out")
                    && !k.ends_with("not_open")
                    && !k.ends_with("limit_exceeded"))
                .map(|(_, v)| v)
                .sum::<u64>(),
        70
    );
    assert!(report.latency["reserve"].p95 > 0.0);
    let burst_ok: u64 = report
        .bursts
        .iter()
        .filter_map(|b| b.ok.as_ref())
        .map(|l| l.count)
        .sum();
    assert_eq!(
        burst_ok,
        report.bursts.iter().map(|b| b.reserved).sum::<u64>()
    );
    assert_eq!(
        report
            .skus
            .iter()
            .map(|k| k.sku.as_str())
            .collect::<Vec<_>>()
            .len(),
        2
    );
    assert_eq!(
        report.skus[0].opened_at_s,
        Some(1.0),
        "tee opens by the host at 1 s"
    );
    assert_eq!(report.skus[1].opened_at_s, Some(0.0), "cap is created open");
    // What produced it, and the raw histograms, travel with the report.
    assert_eq!(report.provenance.seed, 0x5eed);
    assert!(
        report
            .provenance
            .scenario_toml
            .contains("name = \"honest\"")
    );
    assert!(
        report
            .provenance
            .command_line
            .iter()
            .any(|a| a == "--workers")
    );
    assert_eq!(report.provenance.gateway_persistence, "memory");
    assert_eq!(report.histograms["reserve"].count(), 70);
    let text = std::fs::read_to_string(&plan.out).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let b64 = v["histograms"]["reserve"].as_str().unwrap();
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    assert_eq!(
        &raw[..4],
        &[0x1c, 0x84, 0x93, 0x14],
        "HdrHistogram's compressed V2 cookie"
    );
    assert!(report.counts["idempotency.checked"] > 0);
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
    assert!(page.contains("<svg"));
    gw.stop().await;
}

/// A drop of 30 sells out in the burst; arrivals keep coming for seconds.
const RESTOCKED: &str = r#"
name = "restocked-outside"
duration_s = 6
protocol = "ws-binary"

[[sku]]
id = "restock-me"
total = 30
hold_ttl_ms = 5000

[viewers]
count = 2
topics = ["sku:restock-me"]

[buyer]
commit_probability = 1.0
pay_delay_ms = [5, 20]

[[burst]]
at_s = 0.5
buyers = 40
sku = "restock-me"

[[arrival]]
executor = "constant"
start_s = 1
rate = 30
duration_s = 5
skus = ["restock-me"]
"#;

/// Issue 17.1: a restock through the admin API during the run is a
/// catalog change made outside the tester, not an oversell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restock_outside_the_tester_is_not_an_oversell() {
    let gw = Gateway::memory().await;
    let plan = Plan::new(RESTOCKED);
    let tester = run_loadtest_in_background(plan.args(&gw.target(), &["--fixed-ids"]));
    // The host restocks +20 once the drop sold out.
    eventually("the drop selling out", || async {
        gw.sku("restock-me")
            .await
            .filter(|k| k.sold == 30)
            .map(drop)
    })
    .await;
    let _: SkuState = gw
        .api
        .admin("/api/admin/skus/restock-me/restock", &QtyReq { qty: 20 })
        .await
        .expect("restock");
    let run = tester.await.unwrap();
    let report = plan.report();
    let sku = &report.audit.skus[0];
    assert_eq!(sku.total, 50, "the restock landed");
    assert_eq!(sku.sold, 50, "and the arrivals bought the restocked units");
    assert_eq!(report.audit.oversold, 0, "{:?}", report.audit.problems);
    assert!(!run.stdout.contains("OVERSOLD"), "{}", run.stdout);
    let totals = report
        .audit
        .checks
        .iter()
        .find(|c| c.name == "totals")
        .unwrap();
    assert_eq!(totals.status, CheckStatus::Note);
    assert!(
        totals.detail.contains("+20 changed outside the tester"),
        "{}",
        totals.detail
    );
    assert!(report.audit.ok, "{:?}", report.audit.problems);
    assert_eq!(run.code, 0);
    gw.stop().await;
}

/// Buyers buy the demo's tee at once; viewers watch.
const HOLDERS: &str = r#"
name = "restart-probe"
duration_s = 4
protocol = "ws-binary"

[[sku]]
id = "tee-black-m"
total = 120

[viewers]
count = 2
topics = ["sku:tee-black-m"]
connect_over_s = 0.1

[buyer]
commit_probability = 1.0
pay_delay_ms = [5, 20]

[[burst]]
at_s = 1
buyers = 20
sku = "tee-black-m"
"#;

/// Issue 17.2: an in-memory gateway restarted mid-run forgets every hold
/// and sale; the audit must say "state lost", count `hold_not_found` for
/// acknowledged holds as losses, and fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_restarted_mid_run_is_state_lost() {
    let mut args = Gateway::args();
    args.demo = true;
    let gw = Gateway::start(args.clone()).await;
    let plan = Plan::new(HOLDERS);
    let tester = run_loadtest_in_background(plan.args(&gw.target(), &["--fixed-ids"]));
    // Restart once the burst has been answered and some holds committed.
    eventually("the burst's sales", || async {
        gw.sku("tee-black-m")
            .await
            .filter(|k| k.sold > 0 && k.held == 0)
            .map(drop)
    })
    .await;
    args.listen = gw.addr;
    gw.stop().await;
    let gw = Gateway::start(args).await;
    let run = tester.await.unwrap();
    let report = plan.report();
    assert!(report.audit.state_lost, "{:?}", report.audit);
    assert!(
        report
            .audit
            .verdict
            .contains("state lost — was the gateway restarted?"),
        "{}",
        report.audit.verdict
    );
    let holds = report
        .audit
        .checks
        .iter()
        .find(|c| c.name == "holds ended as told")
        .unwrap();
    assert_eq!(holds.status, CheckStatus::Failed, "{}", holds.detail);
    assert!(
        holds
            .detail
            .contains("unknown to the server (hold_not_found)"),
        "the row states the finding: {}",
        holds.detail
    );
    assert!(
        report
            .audit
            .problems
            .iter()
            .any(|p| p.contains("hold_not_found: lost")),
        "{:?}",
        report.audit.problems
    );
    assert_eq!(run.code, i32::from(holdfast_loadtest::EXIT_AUDIT));
    assert!(run.stdout.contains("state lost"), "{}", run.stdout);
    // Issue 17.11: viewers reconnect as the overlay does, so the restart's
    // recovery time is measured.
    let lost = report.counts["viewers.disconnected"];
    assert!(lost >= 1, "the restart cut viewers off");
    assert_eq!(
        report.latency["viewer_recovery"].count, lost,
        "every viewer cut off came back"
    );
    assert!(!report.counts.contains_key("viewers.unrecovered"));
    assert!(
        run.stdout
            .contains(&format!("{lost} recovered (loss to next snapshot")),
        "{}",
        run.stdout
    );
    gw.stop().await;
}
