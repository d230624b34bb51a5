//! The drop: 200 buyers (HTTP and websocket mixed) race for 50 units while
//! viewers watch. Exactly 50 are reserved, counts stay consistent, and every
//! viewer ends on 0 available and sold out.

mod common;
use common::*;
use holdfast_gateway::protocol::{ClientMsg, Reserve, ServerMsg};
use serde_json::json;
use std::sync::Arc;
use tokio::sync::Barrier;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_buyers_race_for_fifty_units() {
    let gw = Arc::new(Gateway::demo().await);
    gw.create_sku(json!({"id":"drop","title":"The drop","total":50,"show":"demo","window":{"state":"paused"}})).await;
    let mut viewers = Vec::new();
    for _ in 0..20 {
        let mut v = Ws::connect(&gw, None).await;
        let ServerMsg::Snapshot(s) = v.subscribe(&["sku:drop"]).await else {
            panic!()
        };
        assert_eq!(s.skus[0].available, 50);
        viewers.push(v);
    }
    let mut show_viewer = Ws::connect(&gw, None).await;
    show_viewer.subscribe(&["show:demo"]).await;

    // Buyers connect first, then fire together when the drop opens.
    let start = Arc::new(Barrier::new(200 + 1));
    let mut tasks = Vec::new();
    for b in 0..200u32 {
        let (gw, start) = (gw.clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            if b % 2 == 0 {
                start.wait().await;
                let (status, body) = gw
                    .call(
                        "POST",
                        "/api/reservations",
                        Some(CHECKOUT),
                        Some(json!({"sku":"drop","qty":1,"buyer":format!("h{b}")})),
                    )
                    .await;
                match status {
                    201 => true,
                    409 => {
                        assert_eq!(body["error"], "sold_out");
                        false
                    }
                    other => panic!("{other} {body}"),
                }
            } else {
                let mut ws = Ws::connect(&gw, Some(CHECKOUT)).await;
                start.wait().await;
                ws.send(&ClientMsg::Reserve(Reserve {
                    id: 1,
                    sku: Some("drop".into()),
                    qty: Some(1),
                    lines: None,
                    buyer: format!("w{b}"),
                    request_id: None,
                    allow_partial: false,
                    channel: None,
                }))
                .await;
                ws.until(|m| match m {
                    ServerMsg::Reserved(r) if r.id == 1 => Some(true),
                    ServerMsg::Error(e) if e.id == Some(1) => {
                        assert_eq!(e.error.as_str(), "sold_out");
                        Some(false)
                    }
                    _ => None,
                })
                .await
            }
        }));
    }
    let (status, _) = gw
        .call(
            "POST",
            "/api/admin/skus/drop/window",
            Some(ADMIN),
            Some(json!({"state":"open"})),
        )
        .await;
    assert_eq!(status, 200);
    start.wait().await;
    let mut won = 0;
    for t in tasks {
        won += u32::from(t.await.unwrap());
    }
    assert_eq!(won, 50, "exactly the stock was reserved");
    let s = gw.sku("drop").await;
    assert_eq!(
        (
            s["available"].as_u64(),
            s["held"].as_u64(),
            s["sold"].as_u64(),
            s["total"].as_u64()
        ),
        (Some(0), Some(50), Some(0), Some(50))
    );
    // Every unit in a cart: not sold out (they may come back), all in carts.
    assert_eq!(
        (&s["sold_out"], &s["all_in_carts"]),
        (&json!(false), &json!(true))
    );

    let mut saw_events = 0;
    for v in viewers.iter_mut().chain(std::iter::once(&mut show_viewer)) {
        let mut last_seq = 0;
        let mut saw_event = false;
        // Counts only go down in this test, so the first frame showing 0 is
        // the last state; seq must increase throughout.
        loop {
            match v.recv().await {
                ServerMsg::Update(u) => {
                    assert!(u.seq > last_seq);
                    last_seq = u.seq;
                    if let Some(d) = u.skus.iter().find(|s| s.id == "drop") {
                        assert_eq!(d.available + d.held + d.sold, d.total);
                        if d.available == 0 {
                            assert!(!d.sold_out && d.all_in_carts);
                            assert_eq!(d.held, 50);
                            break;
                        }
                    }
                }
                ServerMsg::StockEvent(e) => {
                    assert!(e.seq > last_seq);
                    last_seq = e.seq;
                    if e.sku == "drop" && e.event.as_str() == "sold_out" {
                        saw_event = true;
                    }
                }
                other => panic!("{other:?}"),
            }
        }
        saw_events += usize::from(saw_event);
    }
    // Units in carts are not sold out: no viewer is told so.
    assert_eq!(
        saw_events, 0,
        "no sold_out stock event while units are held"
    );
    Arc::try_unwrap(gw)
        .ok()
        .expect("no other owners")
        .stop()
        .await;
}
