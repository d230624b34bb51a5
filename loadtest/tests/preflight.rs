//! Pre-flight against the real gateway (issue 17.4): wrong tokens, a Redis
//! the gateway does not write to, a wrong Redis prefix and a sold-out SKU
//! under `--fixed-ids` stop the run in seconds, before any load, with
//! exit 1 and a message naming the fix.

mod common;

use common::{CHECKOUT, Gateway, LENIENT, Plan, run_loadtest};
use holdfast_protocol::SkuState;
use holdfast_testkit::RedisServer;

/// A flag-built drop: enough to start a run if the pre-flight let it.
fn args<'a>(target: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "--target",
        target,
        "--viewers",
        "1",
        "--burst",
        "2",
        "--duration-s",
        "1",
    ];
    a.extend(extra);
    a.extend(LENIENT);
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_tokens_fail_before_the_run_and_say_which_flag() {
    let gw = Gateway::memory().await;
    let target = gw.target();
    let run = run_loadtest(&args(&target, &["--checkout-token", "not-the-token"])).await;
    assert_eq!(run.code, i32::from(holdfast_loadtest::EXIT_ERROR));
    assert!(
        run.stderr
            .contains("refused the checkout token: pass --checkout-token")
            && run.stderr.contains("demo-checkout"),
        "{}",
        run.stderr
    );
    assert!(!run.stdout.contains("latency"), "no run happened");
    let run = run_loadtest(&args(&target, &["--admin-token", "not-the-token"])).await;
    assert_eq!(run.code, i32::from(holdfast_loadtest::EXIT_ERROR));
    assert!(
        run.stderr
            .contains("refused the admin token: pass --admin-token"),
        "{}",
        run.stderr
    );
    // The defaults are the gateway's demo tokens: a plain run passes.
    assert_eq!(run_loadtest(&args(&target, &[])).await.code, 0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_given_for_an_in_memory_gateway_is_refused() {
    let gw = Gateway::memory().await;
    let target = gw.target();
    let url = format!("redis://127.0.0.1:{}", common::free_port());
    let run = run_loadtest(&args(&target, &["--redis", &url])).await;
    assert_eq!(run.code, i32::from(holdfast_loadtest::EXIT_ERROR));
    assert!(
        run.stderr.contains("but the gateway runs in memory"),
        "{}",
        run.stderr
    );
    let run = run_loadtest(&args(&target, &["--persistence", "durable"])).await;
    assert_eq!(run.code, i32::from(holdfast_loadtest::EXIT_ERROR));
    assert!(
        run.stderr
            .contains("--persistence durable asked, but the gateway runs memory"),
        "{}",
        run.stderr
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_redis_prefix_is_found_before_the_load() {
    let Some(redis) = RedisServer::for_test("the Redis pre-flight tests") else {
        return;
    };
    let mut gw_args = Gateway::args();
    gw_args.redis = Some(redis.url());
    let gw = Gateway::start(gw_args).await;
    let target = gw.target();
    let url = redis.url();
    let run = run_loadtest(&args(&target, &["--redis", &url, "--redis-prefix", "nope"])).await;
    assert_eq!(run.code, i32::from(holdfast_loadtest::EXIT_ERROR));
    assert!(
        run.stderr.contains("a wrong --redis-prefix"),
        "{}",
        run.stderr
    );
    assert!(!run.stdout.contains("latency"), "no run happened");
    // The right prefix runs, and the audit reads the journal.
    let run = run_loadtest(&args(&target, &["--redis", &url])).await;
    assert_eq!(run.code, 0);
    assert!(
        run.stdout.contains("[ok] redis sku hashes"),
        "{}",
        run.stdout
    );
    gw.stop().await;
}

const SOLD_OUT: &str = r#"
name = "again"
duration_s = 1

[[sku]]
id = "gone"
total = 1

[[burst]]
at_s = 0.2
buyers = 2
sku = "gone"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sold_out_sku_under_fixed_ids_is_refused() {
    let gw = Gateway::memory().await;
    sell_out_gone(&gw).await;
    let plan = Plan::new(SOLD_OUT);
    let run = run_loadtest(&plan.args(&gw.target(), &["--fixed-ids"])).await;
    assert_eq!(run.code, i32::from(holdfast_loadtest::EXIT_ERROR));
    assert!(
        run.stderr
            .contains("SKU gone already exists and is sold out (available 0, held 0, sold 1 of 1)"),
        "{}",
        run.stderr
    );
    gw.stop().await;
}

/// The same sold-out SKU, restocked by the scenario: allowed, and the
/// sell-out measured is this run's, not the one before it (issue 17.4:
/// `soldout.all_seen` was taken from the earlier run's snapshot).
const RESTOCKED_AGAIN: &str = r#"
name = "again-restocked"
duration_s = 3

[[sku]]
id = "gone"
total = 1

[viewers]
count = 2
topics = ["sku:gone"]
connect_over_s = 0.1

[buyer]
commit_probability = 1.0
pay_delay_ms = [5, 10]

[[host]]
at_s = 1
action = "restock"
sku = "gone"
qty = 2

[[burst]]
at_s = 1
buyers = 5
sku = "gone"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sold_out_sku_the_scenario_restocks_measures_this_runs_sell_out() {
    let gw = Gateway::memory().await;
    sell_out_gone(&gw).await;
    let plan = Plan::new(RESTOCKED_AGAIN);
    let run = run_loadtest(&plan.args(&gw.target(), &["--fixed-ids"])).await;
    assert_eq!(run.code, 0, "restocked by the scenario: allowed");
    assert!(
        run.stderr.contains("SKU gone already exists"),
        "noted: {}",
        run.stderr
    );
    let report = plan.report();
    let sku = &report.skus[0];
    let after_open = sku.open_to_sold_out_ms.expect("sold out during the run");
    assert!(
        after_open >= 900.0,
        "the sell-out after the restock at 1 s, not the earlier one: {after_open} ms"
    );
    assert_eq!(report.soldout[0].viewers_seen, 2);
    gw.stop().await;
}

/// Creates SKU `gone` with one unit and sells it.
async fn sell_out_gone(gw: &Gateway) {
    let _: SkuState = gw
        .api
        .admin(
            "/api/admin/skus",
            &serde_json::json!({"id": "gone", "total": 1}),
        )
        .await
        .unwrap();
    // Sell the one unit.
    let reserve = holdfast_loadtest::client::http::typed::<serde_json::Value>(
        gw.api
            .call_as(
                hyper::Method::POST,
                "/api/reservations",
                Some(CHECKOUT),
                Some(br#"{"sku":"gone","qty":1,"buyer":"b1"}"#.to_vec()),
            )
            .await,
    )
    .unwrap();
    let hold = reserve["hold"].as_str().unwrap().to_owned();
    let (status, _) = gw
        .api
        .call_as(
            hyper::Method::POST,
            &format!("/api/holds/{hold}/commit"),
            Some(CHECKOUT),
            Some(b"{}".to_vec()),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
}
