//! Every limit, tested at its bound over real sockets: connections,
//! subscriptions, message rate and flood, handshake and idle timeouts, and
//! the slow viewer who stops reading.

mod common;
use common::*;
use futures_util::SinkExt;
use holdfast_gateway::protocol::{ClientMsg, Ping, ServerMsg};
use serde_json::json;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

async fn metric(gw: &Gateway, name: &str) -> f64 {
    let text = gw.metrics_text().await;
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn connection_limit_refuses_with_503_and_frees_on_close() {
    let mut args = demo_args();
    args.limits.ws_connections_max = 3;
    let gw = Gateway::start(args).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(Ws::connect(&gw, None).await);
    }
    let err = tokio_tungstenite::connect_async(gw.ws_url())
        .await
        .expect_err("over the limit");
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => {
            assert_eq!(resp.status(), 503);
            let body: serde_json::Value =
                serde_json::from_slice(resp.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["error"], "too_many_connections");
        }
        other => panic!("{other}"),
    }
    // The others are unaffected.
    assert!(matches!(
        open[0].subscribe(&["sku:cap-olive"]).await,
        ServerMsg::Snapshot(_)
    ));
    // Closing one frees its slot.
    let mut closing = open.pop().unwrap();
    closing.stream.close(None).await.unwrap();
    eventually("a connection in the closed one's slot", || async {
        tokio_tungstenite::connect_async(gw.ws_url()).await.ok()
    })
    .await;
    gw.stop().await;
}

#[tokio::test]
async fn subscriptions_are_capped_per_connection() {
    let mut args = demo_args();
    args.limits.subscriptions_max = 2;
    let gw = Gateway::start(args).await;
    let mut ws = Ws::connect(&gw, None).await;
    assert!(matches!(
        ws.subscribe(&["sku:cap-olive", "sku:tee-black-m"]).await,
        ServerMsg::Snapshot(_)
    ));
    let _second_snapshot = ws.recv().await;
    let id = ws.id();
    ws.send(&ClientMsg::Subscribe(
        holdfast_gateway::protocol::Subscribe {
            id,
            topics: vec!["show:demo".into()],
        },
    ))
    .await;
    match ws.recv().await {
        ServerMsg::Error(e) => assert_eq!(
            (e.error.as_str(), e.id),
            ("too_many_subscriptions", Some(id))
        ),
        other => panic!("{other:?}"),
    }
    // Re-subscribing to a topic already held is not a new subscription.
    let id = ws.id();
    ws.send(&ClientMsg::Subscribe(
        holdfast_gateway::protocol::Subscribe {
            id,
            topics: vec!["sku:cap-olive".into()],
        },
    ))
    .await;
    assert!(matches!(ws.recv().await, ServerMsg::Subscribed(s) if s.topics.len() == 2));
    gw.stop().await;
}

#[tokio::test]
async fn message_rate_is_limited_and_a_flood_is_closed() {
    let mut args = demo_args();
    args.limits.messages_per_sec_max = 5;
    let gw = Gateway::start(args).await;
    let mut bystander = Ws::connect(&gw, None).await;
    let mut ws = Ws::connect(&gw, None).await;
    // 20 pings at once: the burst (10) passes, the rest are refused one by
    // one with an error frame; the connection stays.
    for id in 0..20 {
        ws.send(&ClientMsg::Ping(Ping { id })).await;
    }
    let (mut pongs, mut limited) = (0, 0);
    for _ in 0..20 {
        match ws.recv().await {
            ServerMsg::Pong(_) => pongs += 1,
            ServerMsg::Error(e) => {
                assert_eq!(e.error.as_str(), "rate_limited");
                limited += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(
        pongs >= 10 && limited >= 1,
        "{pongs} pongs, {limited} refused"
    );
    // A flood (far past ten times the rate) is closed with 1008.
    let mut flood = Ws::connect(&gw, None).await;
    for id in 0..400 {
        if flood
            .stream
            .send(Message::Text(ClientMsg::Ping(Ping { id }).to_json().into()))
            .await
            .is_err()
        {
            break;
        }
    }
    assert_eq!(
        flood.closed_with().await,
        Some(u16::from(CloseCode::Policy))
    );
    // Others are fine.
    assert!(matches!(
        bystander.subscribe(&["sku:cap-olive"]).await,
        ServerMsg::Snapshot(_)
    ));
    gw.stop().await;
}

#[tokio::test]
async fn idle_connections_are_closed_and_handshakes_time_out() {
    let mut args = demo_args();
    args.limits.idle_timeout_ms = 300;
    args.limits.ping_interval_ms = 60_000; // no pings: the client stays silent
    args.limits.handshake_timeout_ms = 300;
    let gw = Gateway::start(args).await;
    let mut ws = Ws::connect(&gw, None).await;
    assert_eq!(ws.closed_with().await, Some(u16::from(CloseCode::Away)));
    // A TCP connection that never sends its request head is dropped.
    let mut tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(PATIENCE, tcp.read(&mut buf))
        .await
        .expect("dropped in time")
        .unwrap_or(0);
    assert_eq!(n, 0, "the server closed the silent connection");
    gw.stop().await;
}

#[tokio::test]
async fn a_viewer_that_stops_reading_is_dropped_and_others_keep_receiving() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("big.toml");
    let mut text = String::new();
    for i in 0..300 {
        text.push_str(&format!(
            "[[skus]]\nid = \"item-{i:03}\"\ntitle = \"A product with a reasonably long title, number {i}\"\nshow = \"big\"\ntotal = 100\n\n"
        ));
    }
    std::fs::write(&catalog, text).unwrap();
    let mut args = demo_args();
    args.catalog = Some(catalog);
    args.limits.write_timeout_ms = 500;
    args.limits.socket_send_buffer_bytes = 4096;
    let gw = Gateway::start(args).await;
    // The exact label: a sibling test in this binary drops clients for a
    // full buffer, and the recorder is shared by the whole process.
    let write_timeouts = "holdfast_ws_slow_client_drops_total{reason=\"write_timeout\"}";
    let drops_before = metric(&gw, write_timeouts).await;

    let mut fast = Ws::connect(&gw, None).await;
    let ServerMsg::Snapshot(s) = fast.subscribe(&["show:big"]).await else {
        panic!()
    };
    assert_eq!(s.skus.len(), 300);
    // The fast viewer reads all the time, and waits for the final value.
    let fast = tokio::spawn(async move {
        fast.until(|m| match m {
            ServerMsg::Update(u) => u
                .skus
                .iter()
                .find(|s| s.id == "item-299")
                .filter(|s| s.total >= 150)
                .map(|_| ()),
            _ => None,
        })
        .await
    });

    // The slow viewer: a tiny receive buffer, subscribes, never reads.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(gw.addr).await.unwrap();
    let (mut slow, _) = tokio_tungstenite::client_async(gw.ws_url(), stream)
        .await
        .unwrap();
    let sub = ClientMsg::Subscribe(holdfast_gateway::protocol::Subscribe {
        id: 1,
        topics: vec!["show:big".into()],
    });
    slow.send(Message::Text(sub.to_json().into()))
        .await
        .unwrap();

    // Keep counts changing while the slow viewer's writes stall.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut n = 0;
    while metric(&gw, write_timeouts).await <= drops_before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slow viewer was never dropped"
        );
        n += 1;
        let (status, _) = gw
            .call(
                "POST",
                &format!("/api/admin/skus/item-{:03}/restock", n % 299),
                Some(ADMIN),
                Some(json!({"qty":1})),
            )
            .await;
        assert_eq!(status, 200);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The fast viewer keeps receiving current values after the drop.
    let (status, _) = gw
        .call(
            "POST",
            "/api/admin/skus/item-299/restock",
            Some(ADMIN),
            Some(json!({"qty":50})),
        )
        .await;
    assert_eq!(status, 200);
    tokio::time::timeout(PATIENCE, fast)
        .await
        .expect("the fast viewer got the update")
        .unwrap();
    // What the slow viewer sees once it reads again: what the kernel had
    // buffered, then the end of the connection.
    let ended = tokio::time::timeout(PATIENCE, async {
        while let Some(Ok(_)) = futures_util::StreamExt::next(&mut slow).await {}
    })
    .await;
    assert!(ended.is_ok(), "the slow viewer's connection was closed");
    gw.stop().await;
}

#[tokio::test]
async fn a_round_larger_than_the_write_buffer_drops_the_client_not_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("big.toml");
    let text: String = (0..200)
        .map(|i| format!("[[skus]]\nid = \"p{i:03}\"\ntitle = \"Product {i} with a long enough title\"\nshow = \"big\"\ntotal = 5\n\n"))
        .collect();
    std::fs::write(&catalog, text).unwrap();
    let mut args = demo_args();
    args.catalog = Some(catalog);
    args.limits.write_buffer_bytes_max = 16 * 1024; // below one snapshot of "big"
    let gw = Gateway::start(args).await;
    let before = metric(
        &gw,
        "holdfast_ws_slow_client_drops_total{reason=\"buffer_full\"}",
    )
    .await;
    let mut ws = Ws::connect(&gw, None).await;
    let id = ws.id();
    ws.send(&ClientMsg::Subscribe(
        holdfast_gateway::protocol::Subscribe {
            id,
            topics: vec!["show:big".into()],
        },
    ))
    .await;
    // The connection ends: the round could not fit its bounded buffer.
    while ws.try_recv().await.is_some() {}
    assert!(
        metric(
            &gw,
            "holdfast_ws_slow_client_drops_total{reason=\"buffer_full\"}"
        )
        .await
            > before
    );
    // Small topics still work for everyone else.
    let mut other = Ws::connect(&gw, None).await;
    assert!(matches!(
        other.subscribe(&["sku:p001"]).await,
        ServerMsg::Snapshot(_)
    ));
    gw.stop().await;
}

/// Reads until EOF (or `PATIENCE`): everything the server sent before it
/// closed the connection.
async fn read_to_close(tcp: &mut tokio::net::TcpStream) -> String {
    let mut all = Vec::new();
    let read = tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut all)).await;
    assert!(read.is_ok(), "the server never closed the connection");
    String::from_utf8_lossy(&all).into_owned()
}

/// A TCP connection to the gateway from `source` (any 127.0.0.0/8 address).
async fn connect_from(gw: &Gateway, source: &str) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(gw.addr).await.unwrap()
}

async fn get_on(tcp: &mut tokio::net::TcpStream, path: &str) -> String {
    use tokio::io::AsyncWriteExt;
    tcp.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(PATIENCE, tcp.read(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn silent_connections_from_one_address_cannot_starve_others() {
    let mut args = demo_args();
    args.limits.http_connections_max = 64;
    args.limits.http_connections_per_source_max = 16;
    args.limits.http_first_request_timeout_ms = 400;
    args.limits.http_keepalive_idle_timeout_ms = 600_000;
    let gw = Gateway::start(args).await;
    // A viewer already upgraded, and a keep-alive client that made a request.
    let mut viewer = Ws::connect(&gw, None).await;
    viewer.subscribe(&["sku:cap-olive"]).await;
    let mut kept = connect_from(&gw, "127.0.0.3").await;
    assert!(
        get_on(&mut kept, "/healthz")
            .await
            .starts_with("HTTP/1.1 200")
    );

    // 40 silent connections from one address: 16 are taken, the other 24
    // get a clear, retryable refusal at once.
    let mut silent = Vec::new();
    for _ in 0..40 {
        silent.push(connect_from(&gw, "127.0.0.1").await);
    }
    let mut refused = 0;
    let mut held = Vec::new();
    for mut tcp in silent {
        let mut buf = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(100), tcp.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {
                let text = String::from_utf8_lossy(&buf[..n]);
                assert!(text.starts_with("HTTP/1.1 503"), "{text}");
                assert!(text.contains("too_many_connections"), "{text}");
                assert!(text.to_lowercase().contains("retry-after: 1"), "{text}");
                refused += 1;
            }
            _ => held.push(tcp),
        }
    }
    // The test's own HTTP client may hold a pooled connection from the
    // same address: at most 16 in all are taken.
    assert!(
        held.len() <= 16 && held.len() >= 15 && refused + held.len() == 40,
        "{} held, {refused} refused",
        held.len()
    );
    // Another address is served while the 16 sit there, and the upgraded
    // viewer keeps receiving.
    let mut other = connect_from(&gw, "127.0.0.2").await;
    assert!(
        get_on(&mut other, "/healthz")
            .await
            .starts_with("HTTP/1.1 200")
    );
    gw.call(
        "POST",
        "/api/admin/skus/cap-olive/restock",
        Some(ADMIN),
        Some(json!({"qty": 1})),
    )
    .await;
    viewer
        .until(|m| matches!(m, ServerMsg::Update(_)).then_some(()))
        .await;
    // The silent ones are closed by the time-to-first-request limit ...
    for mut tcp in held {
        assert_eq!(
            read_to_close(&mut tcp).await,
            "",
            "closed without an answer"
        );
    }
    // ... but not a keep-alive connection that is merely idle.
    assert!(
        get_on(&mut kept, "/healthz")
            .await
            .starts_with("HTTP/1.1 200")
    );
    gw.stop().await;
}

#[tokio::test]
async fn heads_must_complete_and_keep_alive_connections_idle_out() {
    use tokio::io::AsyncWriteExt;
    let mut args = demo_args();
    args.limits.handshake_timeout_ms = 300;
    args.limits.http_first_request_timeout_ms = 600_000;
    args.limits.http_keepalive_idle_timeout_ms = 300;
    let gw = Gateway::start(args).await;
    // A head that starts and never ends (slowloris) is cut at the head timeout
    // even though the first-request timeout is long.
    let mut slow = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    read_to_close(&mut slow).await;
    // A keep-alive connection silent after its answer goes at its own limit.
    let mut idle = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    assert!(
        get_on(&mut idle, "/healthz")
            .await
            .starts_with("HTTP/1.1 200")
    );
    assert_eq!(read_to_close(&mut idle).await, "");
    gw.stop().await;
}

#[tokio::test]
async fn control_frames_count_against_the_rate_and_checkout_has_its_own() {
    let mut args = demo_args();
    args.limits.messages_per_sec_max = 5;
    args.limits.checkout_messages_per_sec_max = 1_000;
    let gw = Gateway::start(args).await;
    // A flood of websocket pings (control frames) is closed like any flood.
    let mut pinger = Ws::connect(&gw, None).await;
    for _ in 0..400 {
        if pinger
            .stream
            .send(Message::Ping(Vec::new().into()))
            .await
            .is_err()
        {
            break;
        }
    }
    assert_eq!(
        pinger.closed_with().await,
        Some(u16::from(CloseCode::Policy))
    );
    // A checkout connection pipelines 100 requests at once: none is limited.
    let mut checkout = Ws::connect(&gw, Some(CHECKOUT)).await;
    for id in 0..100 {
        checkout.send(&ClientMsg::Ping(Ping { id })).await;
    }
    for _ in 0..100 {
        assert!(matches!(checkout.recv().await, ServerMsg::Pong(_)));
    }
    gw.stop().await;
}

#[tokio::test]
async fn oversized_heads_get_a_json_431() {
    let gw = Gateway::demo().await;
    let big = "x".repeat(20_000);
    let resp = gw
        .http
        .get(gw.url("/api/skus"))
        .header("x-padding", big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 431);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "headers_too_large");
    gw.stop().await;
}

/// A client over its address's connection limit that sends its request at
/// once, as every HTTP client does, still reads the whole JSON refusal: the
/// server reads what the client sent before closing, so no reset destroys
/// the answer.
#[tokio::test]
async fn a_refused_client_reads_the_whole_refusal_even_after_sending() {
    use tokio::io::AsyncWriteExt;
    let mut args = demo_args();
    args.limits.http_connections_per_source_max = 2;
    args.limits.http_first_request_timeout_ms = 60_000;
    let gw = Gateway::start(args).await;
    let _taken = [
        connect_from(&gw, "127.0.0.4").await,
        connect_from(&gw, "127.0.0.4").await,
    ];
    for _ in 0..4 {
        let mut tcp = connect_from(&gw, "127.0.0.4").await;
        let request = format!(
            "POST /api/reservations HTTP/1.1\r\nHost: x\r\ncontent-length: 8192\r\n\r\n{}",
            "x".repeat(8192)
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let text = read_to_close(&mut tcp).await;
        assert!(text.starts_with("HTTP/1.1 503"), "{text:?}");
        assert!(text.contains("too_many_connections"), "{text}");
    }
    gw.stop().await;
}
