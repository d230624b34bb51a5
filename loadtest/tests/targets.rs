//! Several `--target`s (issue 17.11): viewers and buyers spread over the
//! nodes of a deployment, round robin.

mod common;

use common::{Gateway, Plan, run_loadtest};
use holdfast_protocol::SkuState;

const SPREAD: &str = r#"
name = "two-nodes"
duration_s = 2

[[sku]]
id = "shared"
total = 100

[buyer]
commit_probability = 1.0
pay_delay_ms = [5, 10]

[[burst]]
at_s = 0.5
buyers = 10
sku = "shared"
"#;

async fn sold(gw: &Gateway) -> u32 {
    gw.sku("shared").await.expect("SKU shared listed").sold
}

/// Two independent in-memory gateways stand in for two nodes: each gets
/// the SKU, and each must see half the burst's sales.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buyers_spread_over_every_target() {
    let (a, b) = (Gateway::memory().await, Gateway::memory().await);
    for gw in [&a, &b] {
        let _: SkuState = gw
            .api
            .admin(
                "/api/admin/skus",
                &serde_json::json!({"id": "shared", "total": 100}),
            )
            .await
            .unwrap();
    }
    let plan = Plan::new(SPREAD);
    let targets = format!("{},{}", a.target(), b.target());
    let run = run_loadtest(&plan.args(&targets, &["--fixed-ids"])).await;
    assert!(
        run.stdout.contains("10 reserved"),
        "every buyer got a hold: {}",
        run.stdout
    );
    assert_eq!((sold(&a).await, sold(&b).await), (5, 5), "round robin");
    assert!(
        run.stdout.contains("every node's view")
            && run.stdout.contains("2 nodes show the same counts"),
        "each node's view is audited: {}",
        run.stdout
    );
    a.stop().await;
    b.stop().await;
}

/// Nodes of one deployment all show its global counts. Two gateways that
/// disagree (here: two independent ones with different totals, as a node
/// whose counts never converged would show) fail the audit, and the
/// failing row says what each node showed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_that_disagree_fail_the_audit() {
    let (a, b) = (Gateway::memory().await, Gateway::memory().await);
    for (gw, total) in [(&a, 100), (&b, 90)] {
        let _: SkuState = gw
            .api
            .admin(
                "/api/admin/skus",
                &serde_json::json!({"id": "shared", "total": total}),
            )
            .await
            .unwrap();
    }
    let plan = Plan::new(SPREAD);
    let targets = format!("{},{}", a.target(), b.target());
    let run = run_loadtest(&plan.args(&targets, &["--fixed-ids", "--audit-wait-max-s", "1"])).await;
    assert_eq!(run.code, 4, "the audit fails: {}", run.stdout);
    let row = run
        .stdout
        .lines()
        .find(|l| l.contains("every node's view"))
        .unwrap_or_else(|| panic!("a row for the nodes' views: {}", run.stdout));
    assert!(
        row.contains("FAIL")
            && row.contains("of 90")
            && row.contains("of 100")
            && row.contains(&b.target()),
        "the row names the node and what each showed: {row}"
    );
    a.stop().await;
    b.stop().await;
}
