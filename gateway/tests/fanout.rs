//! Live counts over real websockets: snapshot first, then coalesced updates
//! with absolute values; encode once, latest value for slow viewers.

mod common;
use common::*;
use holdfast_gateway::protocol::{ClientMsg, Reserve, ServerMsg};
use serde_json::json;

#[tokio::test]
async fn snapshot_then_updates_with_absolute_counts() {
    let gw = Gateway::demo().await;
    let mut viewer = Ws::connect(&gw, None).await;
    let snap = viewer.subscribe(&["sku:runner-42"]).await;
    let ServerMsg::Snapshot(snap) = snap else {
        panic!("{snap:?}")
    };
    assert_eq!(snap.topic, "sku:runner-42");
    assert_eq!(snap.skus.len(), 1);
    assert_eq!(snap.skus[0].available, 12);
    assert!(
        snap.skus[0].meta.is_some(),
        "a snapshot carries display data"
    );

    let (status, body) = gw
        .call(
            "POST",
            "/api/reservations",
            Some(CHECKOUT),
            Some(json!({"sku":"runner-42","qty":1,"buyer":"b1"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let update = viewer
        .until(|m| matches!(m, ServerMsg::Update(_)).then(|| m.clone()))
        .await;
    let ServerMsg::Update(update) = update else {
        unreachable!()
    };
    assert!(update.seq > snap.seq);
    assert_eq!(update.skus[0].available, 11);
    assert_eq!(update.skus[0].held, 1);
    assert_eq!(update.skus[0].total, 12);
    assert!(update.skus[0].meta.is_none(), "updates carry counts only");
    gw.stop().await;
}

#[tokio::test]
async fn binary_subprotocol_carries_the_same_messages() {
    let gw = Gateway::demo().await;
    let mut buyer = Ws::connect_with(&gw, Some(CHECKOUT), true).await;
    let ServerMsg::Snapshot(snap) = buyer.subscribe(&["show:demo"]).await else {
        panic!()
    };
    assert_eq!(snap.skus.len(), 5);
    let id = buyer.id();
    buyer
        .send(&ClientMsg::Reserve(Reserve {
            id,
            sku: Some("cap-olive".into()),
            qty: Some(2),
            lines: None,
            buyer: "b".into(),
            request_id: None,
            allow_partial: false,
            channel: None,
        }))
        .await;
    let reserved = buyer
        .until(|m| match m {
            ServerMsg::Reserved(r) if r.id == id => Some(r.clone()),
            _ => None,
        })
        .await;
    assert_eq!(reserved.units, 2);
    gw.stop().await;
}

#[tokio::test]
async fn shutdown_closes_websockets_with_going_away() {
    let gw = Gateway::demo().await;
    let mut viewer = Ws::connect(&gw, None).await;
    viewer.subscribe(&["show:demo"]).await;
    gw.shutdown.cancel();
    assert_eq!(viewer.closed_with().await, Some(1001));
    gw.handle.await.unwrap().unwrap();
}
