//! Bad input over real sockets: every case gets a clear error (status +
//! JSON body, or an error frame / close code), nothing panics, and other
//! clients are unaffected.

mod common;
use common::*;
use futures_util::SinkExt;
use holdfast_gateway::protocol::{ClientMsg, Reserve, ServerMsg};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

fn reserve(id: u64, sku: &str, qty: u32) -> ClientMsg {
    ClientMsg::Reserve(Reserve {
        id,
        sku: Some(sku.into()),
        qty: Some(qty),
        lines: None,
        buyer: "b".into(),
        request_id: None,
        allow_partial: false,
        channel: None,
    })
}

async fn expect_error(ws: &mut Ws, code: &str) -> Option<u64> {
    match ws.recv().await {
        ServerMsg::Error(e) => {
            assert_eq!(e.error.as_str(), code, "{e:?}");
            assert!(!e.message.is_empty());
            e.id
        }
        other => panic!("expected error {code}, got {other:?}"),
    }
}

/// (method, path, token, body, expected status, expected error code)
type Case = (
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<serde_json::Value>,
    u16,
    &'static str,
);

#[tokio::test]
async fn http_bad_input_gets_status_and_json() {
    let gw = Gateway::demo().await;
    let cases: Vec<Case> = vec![
        (
            "POST",
            "/api/reservations",
            None,
            Some(json!({"sku":"tee-black-m","qty":1,"buyer":"b"})),
            401,
            "unauthorized",
        ),
        (
            "POST",
            "/api/reservations",
            Some("wrong"),
            Some(json!({"sku":"tee-black-m","qty":1,"buyer":"b"})),
            401,
            "unauthorized",
        ),
        (
            "POST",
            "/api/admin/skus",
            Some(CHECKOUT),
            Some(json!({"id":"x","total":1})),
            403,
            "forbidden",
        ),
        (
            "POST",
            "/api/reservations",
            Some(CHECKOUT),
            Some(json!({"sku":"tee-black-m","qty":0,"buyer":"b"})),
            400,
            "invalid_qty",
        ),
        (
            "POST",
            "/api/reservations",
            Some(CHECKOUT),
            Some(json!({"sku":"tee-black-m","qty":-1,"buyer":"b"})),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/reservations",
            Some(CHECKOUT),
            Some(json!({"sku":"tee-black-m","qty":5000000000u64,"buyer":"b"})),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/reservations",
            Some(CHECKOUT),
            Some(json!({"sku":"tee-black-m","qty":11,"buyer":"b"})),
            400,
            "qty_above_max",
        ),
        (
            "POST",
            "/api/reservations",
            Some(CHECKOUT),
            Some(json!({"sku":"tee-black-m","qty":"1","buyer":"b"})),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/reservations",
            Some(CHECKOUT),
            Some(json!({"sku":"nope","qty":1,"buyer":"b"})),
            404,
            "unknown_sku",
        ),
        (
            "POST",
            "/api/reservations",
            Some(CHECKOUT),
            Some(json!({"qty":1,"buyer":"b"})),
            400,
            "invalid",
        ),
        (
            "POST",
            "/api/reservations",
            Some(CHECKOUT),
            Some(json!({"sku":"tee-black-m","qty":1,"buyer":""})),
            400,
            "invalid_buyer",
        ),
        (
            "POST",
            "/api/reservations",
            Some(CHECKOUT),
            Some(json!({"lines":[],"buyer":"b"})),
            400,
            "cart_size",
        ),
        (
            "POST",
            "/api/holds/zzz/commit",
            Some(CHECKOUT),
            Some(json!({})),
            400,
            "invalid_hold_id",
        ),
        (
            "POST",
            "/api/holds/0000000000000001/commit",
            Some(CHECKOUT),
            Some(json!({})),
            404,
            "hold_not_found",
        ),
        (
            "POST",
            "/api/holds/0000000000000001/extend",
            Some(CHECKOUT),
            Some(json!({"by_ms":"soon"})),
            400,
            "bad_request",
        ),
        ("GET", "/api/skus/nope", None, None, 404, "unknown_sku"),
        ("GET", "/api/shows/nope", None, None, 404, "not_found"),
        ("GET", "/no/such/route", None, None, 404, "not_found"),
        ("DELETE", "/api/skus", None, None, 405, "method_not_allowed"),
        (
            "POST",
            "/api/admin/skus",
            Some(ADMIN),
            Some(json!({"id":"bad id","total":1})),
            400,
            "invalid_sku_id",
        ),
        (
            "POST",
            "/api/admin/skus",
            Some(ADMIN),
            Some(json!({"id":"x".repeat(300),"total":1})),
            400,
            "invalid_sku_id",
        ),
        (
            "POST",
            "/api/admin/skus",
            Some(ADMIN),
            Some(json!({"id":"fine","title":"t".repeat(201),"total":1})),
            400,
            "invalid_title",
        ),
        (
            "POST",
            "/api/admin/skus",
            Some(ADMIN),
            Some(json!({"id":"fine","total":1,"currency":"kroner"})),
            400,
            "invalid_currency",
        ),
        (
            "POST",
            "/api/admin/skus",
            Some(ADMIN),
            Some(json!({"id":"fine","total":1,"hold_ttl_ms":0})),
            400,
            "invalid_hold_ttl_ms",
        ),
        (
            "POST",
            "/api/admin/skus",
            Some(ADMIN),
            Some(json!({"id":"fine","total":1,"order_units_max":0})),
            400,
            "invalid_order_units_max",
        ),
        (
            "POST",
            "/api/admin/skus",
            Some(ADMIN),
            Some(json!({"id":"fine","total":2_097_152})),
            422,
            "total_above_max",
        ),
        (
            "PATCH",
            "/api/admin/skus/tee-black-m",
            Some(ADMIN),
            Some(json!({"total":2_097_152})),
            422,
            "total_above_max",
        ),
        (
            "POST",
            "/api/admin/skus/tee-black-m/restock",
            Some(ADMIN),
            Some(json!({"qty":2_097_100})),
            422,
            "total_above_max",
        ),
        (
            "POST",
            "/api/reservations",
            Some(CHECKOUT),
            Some(json!({"lines":[{"sku":"tee-black-m","qty":1}],"buyer":"b","allow_partial":true})),
            400,
            "partial_on_cart",
        ),
        (
            "POST",
            "/api/reservations",
            Some(CHECKOUT),
            Some(json!({"sku":"tee-black-m","qty":1,"buyer":"b","request_id":""})),
            400,
            "invalid_request_id",
        ),
        (
            "POST",
            "/api/admin/skus",
            Some(ADMIN),
            Some(json!({"id":"tee-black-m","total":1})),
            409,
            "already_exists",
        ),
        (
            "POST",
            "/api/admin/skus",
            Some(ADMIN),
            Some(json!({"id":"x","total":1,"colour":"red"})),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/admin/skus/tee-black-m/adjust",
            Some(ADMIN),
            Some(json!({"qty":1000})),
            409,
            "not_enough_available",
        ),
        (
            "POST",
            "/api/admin/skus/tee-black-m/window",
            Some(ADMIN),
            Some(json!({"state":"later"})),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/admin/skus/tee-black-m/window",
            Some(ADMIN),
            Some(json!({"state":"scheduled"})),
            400,
            "invalid_window",
        ),
    ];
    for (method, path, token, body, status, code) in cases {
        let (got, body_seen) = gw.call(method, path, token, body.clone()).await;
        assert_eq!(
            (got, body_seen["error"].as_str()),
            (status, Some(code)),
            "{method} {path} {body:?}: {body_seen}"
        );
        assert!(body_seen["message"].is_string());
    }
    // Malformed JSON and a body above the limit.
    let r = gw
        .http
        .post(gw.url("/api/reservations"))
        .bearer_auth(CHECKOUT)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "bad_request"
    );
    let big = format!(
        r#"{{"sku":"tee-black-m","qty":1,"buyer":"{}"}}"#,
        "x".repeat(20_000)
    );
    let r = gw
        .http
        .post(gw.url("/api/reservations"))
        .bearer_auth(CHECKOUT)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "too_large"
    );
    // Nothing was reserved by any of it, and the server is healthy.
    assert_eq!(gw.sku("tee-black-m").await["held"], 0);
    assert_eq!(gw.get("/healthz").await.0, 200);
    gw.stop().await;
}

#[tokio::test]
async fn websocket_bad_messages_get_error_frames_and_the_connection_lives() {
    let gw = Gateway::demo().await;
    let mut bystander = Ws::connect(&gw, None).await;
    bystander.subscribe(&["sku:cap-olive"]).await;
    let mut ws = Ws::connect(&gw, Some(CHECKOUT)).await;
    for (frame, code) in [
        (r#"{not json"#, "bad_request"),
        (r#"{"op":"teleport","id":1}"#, "bad_request"),
        (
            r#"{"op":"reserve","id":1,"sku":"cap-olive","qty":"two","buyer":"b"}"#,
            "bad_request",
        ),
        (
            r#"{"op":"reserve","id":1,"sku":"cap-olive","qty":-2,"buyer":"b"}"#,
            "bad_request",
        ),
        (
            r#"{"op":"reserve","id":1,"sku":"cap-olive","qty":99999999999,"buyer":"b"}"#,
            "bad_request",
        ),
        (r#"[1,2,3]"#, "bad_request"),
    ] {
        ws.send_raw(Message::Text(frame.into())).await;
        let id = expect_error(&mut ws, code).await;
        // A readable id is echoed, so a pipelining client can match it.
        let readable = frame.contains(r#""id":1"#);
        assert_eq!(id, readable.then_some(1), "{frame}");
    }
    for (msg, code) in [
        (reserve(5, "cap-olive", 0), "invalid_qty"),
        (reserve(6, "nope", 1), "unknown_sku"),
        (reserve(7, "cap-olive", 1000), "qty_above_max"),
    ] {
        ws.send(&msg).await;
        assert_eq!(
            expect_error(&mut ws, code).await,
            Some(match code {
                "unknown_sku" => 6,
                _ if matches!(msg, ClientMsg::Reserve(ref r) if r.qty == Some(0)) => 5,
                _ => 7,
            })
        );
    }
    // Binary frames without the binary subprotocol.
    ws.send_raw(Message::Binary(vec![1, 2, 3].into())).await;
    expect_error(&mut ws, "bad_request").await;
    // Unknown topics.
    let id = ws.id();
    ws.send(&ClientMsg::Subscribe(
        holdfast_gateway::protocol::Subscribe {
            id,
            topics: vec!["weather".into()],
        },
    ))
    .await;
    assert_eq!(expect_error(&mut ws, "unknown_topic").await, Some(id));
    // The connection still works.
    ws.send(&reserve(9, "cap-olive", 1)).await;
    ws.until(|m| matches!(m, ServerMsg::Reserved(r) if r.id == 9).then_some(()))
        .await;
    // And the bystander saw the one real change.
    bystander
        .until(|m| matches!(m, ServerMsg::Update(u) if u.skus[0].held == 1).then_some(()))
        .await;
    gw.stop().await;
}

#[tokio::test]
async fn viewers_cannot_reserve_and_wrong_tokens_are_refused() {
    let gw = Gateway::demo().await;
    let mut viewer = Ws::connect(&gw, None).await;
    viewer.send(&reserve(3, "cap-olive", 1)).await;
    assert_eq!(expect_error(&mut viewer, "unauthorized").await, Some(3));
    // A wrong token on an open connection: refused, still a viewer.
    viewer
        .send(&ClientMsg::Auth(holdfast_gateway::protocol::Auth {
            id: 4,
            token: "guess".into(),
        }))
        .await;
    assert_eq!(expect_error(&mut viewer, "unauthorized").await, Some(4));
    viewer
        .send(&ClientMsg::Auth(holdfast_gateway::protocol::Auth {
            id: 5,
            token: CHECKOUT.into(),
        }))
        .await;
    assert!(matches!(viewer.recv().await, ServerMsg::Authed(a) if a.role.as_str() == "checkout"));
    viewer.send(&reserve(6, "cap-olive", 1)).await;
    viewer
        .until(|m| matches!(m, ServerMsg::Reserved(r) if r.id == 6).then_some(()))
        .await;
    // A wrong token on the upgrade is refused with 401 and a JSON body.
    let r = gw.http.get(gw.url("/ws")).send().await.unwrap();
    assert_eq!(r.status(), 400, "not a websocket upgrade");
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "bad_request"
    );
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("{}?token=guess", gw.ws_url()),
    )
    .unwrap();
    req.headers_mut().insert("x-probe", "1".parse().unwrap());
    let err = tokio_tungstenite::connect_async(req)
        .await
        .expect_err("refused");
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => assert_eq!(resp.status(), 401),
        other => panic!("{other}"),
    }
    gw.stop().await;
}

#[tokio::test]
async fn oversize_frames_close_with_1009_and_invalid_utf8_with_1007() {
    let gw = Gateway::demo().await;
    let mut ws = Ws::connect(&gw, Some(CHECKOUT)).await;
    let big = format!(r#"{{"op":"ping","id":1,"pad":"{}"}}"#, "x".repeat(8 * 1024));
    let _ = ws.stream.send(Message::Text(big.into())).await;
    assert_eq!(ws.closed_with().await, Some(u16::from(CloseCode::Size)));

    // Invalid UTF-8 in a text frame needs a raw frame: build it by hand.
    let mut ws = Ws::connect(&gw, Some(CHECKOUT)).await;
    let frame = tokio_tungstenite::tungstenite::protocol::frame::Frame::message(
        vec![0xff, 0xfe, 0xfd],
        tokio_tungstenite::tungstenite::protocol::frame::coding::OpCode::Data(
            tokio_tungstenite::tungstenite::protocol::frame::coding::Data::Text,
        ),
        true,
    );
    let _ = ws.stream.send(Message::Frame(frame)).await;
    assert_eq!(ws.closed_with().await, Some(u16::from(CloseCode::Invalid)));
    // The server is fine.
    let mut ok = Ws::connect(&gw, None).await;
    assert!(matches!(
        ok.subscribe(&["sku:cap-olive"]).await,
        ServerMsg::Snapshot(_)
    ));
    gw.stop().await;
}

/// A PATCH that is refused changes nothing: it is validated as a whole and
/// applied only then.
#[tokio::test]
async fn a_refused_patch_changes_nothing() {
    let gw = Gateway::demo().await;
    let (status, body) = gw
        .call(
            "POST",
            "/api/reservations",
            Some(CHECKOUT),
            Some(json!({"sku":"cap-olive","qty":1,"buyer":"b-patch"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let before = gw.sku("cap-olive").await;
    for patch in [
        json!({"buyer_limit": 5, "total": 0}),
        json!({"title": "New title", "hold_ttl_ms": 0}),
        json!({"buyer_limit": 5, "currency": "kroner"}),
    ] {
        let (status, body) = gw
            .call(
                "PATCH",
                "/api/admin/skus/cap-olive",
                Some(ADMIN),
                Some(patch.clone()),
            )
            .await;
        assert!((400..500).contains(&status), "{patch}: {status} {body}");
        assert_eq!(
            gw.sku("cap-olive").await,
            before,
            "{patch} changed something"
        );
    }
    gw.stop().await;
}

/// Refusals that say exactly what was wrong, with the number that matters.
#[tokio::test]
async fn refusals_name_the_field_and_the_limit() {
    let gw = Gateway::demo().await;
    gw.create_sku(json!({"id": "last-three", "total": 3, "order_units_max": 5}))
        .await;
    let reserve =
        |body: serde_json::Value| gw.call("POST", "/api/reservations", Some(CHECKOUT), Some(body));
    let (status, body) = reserve(json!({"sku": "last-three", "qty": 5, "buyer": "b"})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("not_enough_available")),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap().contains('3'),
        "says how many: {body}"
    );
    let (status, body) = reserve(json!({"sku": "last-three", "qty": 6, "buyer": "b"})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("qty_above_max")),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap().contains('5'),
        "says the maximum: {body}"
    );
    let (status, body) = reserve(json!({"lines": [{"sku": "last-three", "qty": 1}, {"sku": "last-three", "qty": 1}], "buyer": "b"})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("duplicate_sku")),
        "{body}"
    );
    let (status, body) = reserve(json!({"sku": "last-three", "qty": 2, "buyer": "b"})).await;
    assert_eq!(status, 201, "{body}");
    let hold = body["hold"].as_str().unwrap();
    let (status, body) = gw
        .call(
            "POST",
            &format!("/api/holds/{hold}/commit"),
            Some(CHECKOUT),
            Some(json!({"qty": 3})),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("qty_above_held")),
        "{body}"
    );
    // Sold out is for when nothing is left.
    let (status, _) = reserve(json!({"sku": "last-three", "qty": 1, "buyer": "c"})).await;
    assert_eq!(status, 201);
    let (status, body) = reserve(json!({"sku": "last-three", "qty": 1, "buyer": "d"})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("sold_out")),
        "{body}"
    );
    gw.stop().await;
}
