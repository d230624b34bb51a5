//! `/metrics` as an operator reads it. Alone in its test binary: the
//! Prometheus recorder is one per process, so every delta asserted here is
//! this test's own, exact, per label.

mod common;
use common::*;
use holdfast_gateway::protocol::ServerMsg;
use serde_json::json;
use std::collections::HashMap;

/// Every sample line, `name{labels}` -> value.
async fn scrape(gw: &Gateway) -> HashMap<String, f64> {
    let text = gw.metrics_text().await;
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn delta(before: &HashMap<String, f64>, after: &HashMap<String, f64>, series: &str) -> f64 {
    after.get(series).copied().unwrap_or(f64::NAN) - before.get(series).copied().unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_count_each_outcome_under_its_own_label() {
    let gw = Gateway::demo().await;
    let mut buyer = Ws::connect(&gw, Some(CHECKOUT)).await;
    buyer.subscribe(&["sku:cap-olive"]).await;
    let before = scrape(&gw).await;
    let reserve = |sku: &str| json!({"sku": sku, "qty": 1, "buyer": "m"});
    for _ in 0..3 {
        let (status, r) = gw
            .call(
                "POST",
                "/api/reservations",
                Some(CHECKOUT),
                Some(reserve("cap-olive")),
            )
            .await;
        assert_eq!(status, 201, "{r}");
        let hold = r["hold"].as_str().unwrap();
        let path = format!("/api/holds/{hold}/commit");
        assert_eq!(gw.call("POST", &path, Some(CHECKOUT), None).await.0, 200);
        assert_eq!(gw.call("POST", &path, Some(CHECKOUT), None).await.0, 409);
    }
    for _ in 0..2 {
        let (status, _) = gw
            .call(
                "POST",
                "/api/reservations",
                Some(CHECKOUT),
                Some(reserve("nope")),
            )
            .await;
        assert_eq!(status, 404);
    }
    buyer
        .until(|m| matches!(m, ServerMsg::Update(_)).then_some(()))
        .await;
    let after = scrape(&gw).await;
    for (series, want) in [
        ("holdfast_reservations_total{outcome=\"ok\"}", 3.0),
        ("holdfast_reservations_total{outcome=\"unknown_sku\"}", 2.0),
        ("holdfast_reservations_total{outcome=\"sold_out\"}", 0.0),
        ("holdfast_hold_ops_total{op=\"commit\",outcome=\"ok\"}", 3.0),
        (
            "holdfast_hold_ops_total{op=\"commit\",outcome=\"already_committed\"}",
            3.0,
        ),
        (
            "holdfast_hold_ops_total{op=\"release\",outcome=\"ok\"}",
            0.0,
        ),
    ] {
        assert_eq!(delta(&before, &after, series), want, "{series}");
    }
    assert_eq!(after["holdfast_ws_connections"], 1.0);
    assert!(
        delta(&before, &after, "holdfast_ws_updates_delivered_total") >= 1.0,
        "the subscribed buyer was sent an update"
    );
    assert!(
        after
            .keys()
            .any(|k| k.starts_with("holdfast_request_seconds_bucket{api=\"http\""))
    );
    let (status, ready) = gw.get("/readyz").await;
    assert_eq!(
        (
            status,
            ready["persistence"].as_str(),
            ready["backlog"].as_u64()
        ),
        (200, Some("memory"), Some(0))
    );
    gw.stop().await;
}
