//! Webhooks against a real HTTP receiver (axum, in this test) that
//! verifies every signature with its own HMAC-SHA256, written here from
//! the Standard Webhooks spec (not the gateway's code): every event kind
//! arrives signed; a receiver that is down gets the event once it is up;
//! a dead letter after exactly N tries, then a replay with the same
//! `webhook-id`; a hanging receiver does not delay reservations or another
//! endpoint.

mod common;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::{ADMIN, CHECKOUT, Gateway, PATIENCE, eventually};
use holdfast_gateway::config::ServeArgs;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// HMAC-SHA256 (RFC 2104), the receiver's own.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// Verifies a delivery as a receiver must: the signature over
/// `id.timestamp.body` with the endpoint's key, a timestamp near now.
fn verify(secret: &str, headers: &HeaderMap, body: &[u8]) -> Result<String, String> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or(format!("no {name}"))
    };
    let (id, ts, sigs) = (
        get("webhook-id")?,
        get("webhook-timestamp")?,
        get("webhook-signature")?,
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let t: u64 = ts.parse().map_err(|_| "bad timestamp")?;
    if t.abs_diff(now) > 300 {
        return Err("timestamp too far from now".into());
    }
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut signed = format!("{id}.{ts}.").into_bytes();
    signed.extend_from_slice(body);
    let expected = format!("v1,{}", STANDARD.encode(hmac_sha256(&key, &signed)));
    if sigs.split(' ').any(|s| s == expected) {
        Ok(id)
    } else {
        Err(format!("bad signature {sigs}"))
    }
}

#[test]
fn the_receivers_hmac_matches_the_spec_example() {
    let mut h = HeaderMap::new();
    h.insert(
        "webhook-id",
        "msg_p5jXN8AQM9LWM0D4loKWxJek".parse().unwrap(),
    );
    h.insert("webhook-timestamp", "1614265330".parse().unwrap());
    h.insert(
        "webhook-signature",
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
            .parse()
            .unwrap(),
    );
    // The example is from 2021: only the timestamp check refuses it.
    assert_eq!(
        verify(SECRET, &h, br#"{"test": 2432232314}"#),
        Err("timestamp too far from now".into())
    );
    let key = STANDARD.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    assert_eq!(
        STANDARD.encode(hmac_sha256(
            &key,
            br#"msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330.{"test": 2432232314}"#
        )),
        "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    );
}

/// What the receiver does with a request.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Ok,
    Fail,
    Hang,
}

#[derive(Clone)]
struct Receiver {
    secret: String,
    /// Verified deliveries: (webhook-id, body).
    got: Arc<Mutex<Vec<(String, Value)>>>,
    tries: Arc<AtomicUsize>,
    bad: Arc<AtomicUsize>,
    mode: Arc<Mutex<Mode>>,
    unhang: Arc<Notify>,
    hung: Arc<AtomicBool>,
}

impl Receiver {
    fn new(secret: &str) -> Self {
        Self {
            secret: secret.into(),
            got: Arc::default(),
            tries: Arc::default(),
            bad: Arc::default(),
            mode: Arc::new(Mutex::new(Mode::Ok)),
            unhang: Arc::new(Notify::new()),
            hung: Arc::default(),
        }
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// Serves on `addr` (port 0: a fresh one); returns the address.
    async fn serve(&self, addr: SocketAddr) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .route("/hook", post(receive))
            .with_state(self.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    fn events(&self) -> Vec<(String, Value)> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until a delivered event satisfies `pick`.
    async fn wait_for(&self, what: &str, pick: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some((_, v)) = self.events().into_iter().find(|(_, v)| pick(v)) {
                return v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {what} arrived; got {:?}",
                self.events()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn receive(
    State(r): State<Receiver>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    r.tries.fetch_add(1, Ordering::SeqCst);
    let mode = *r.mode.lock().unwrap();
    match mode {
        Mode::Fail => return StatusCode::INTERNAL_SERVER_ERROR,
        Mode::Hang => {
            r.hung.store(true, Ordering::SeqCst);
            r.unhang.notified().await;
            return StatusCode::SERVICE_UNAVAILABLE;
        }
        Mode::Ok => {}
    }
    match verify(&r.secret, &headers, &body) {
        Ok(id) => {
            let v: Value = serde_json::from_slice(&body).unwrap();
            r.got.lock().unwrap().push((id, v));
            StatusCode::NO_CONTENT
        }
        Err(_) => {
            r.bad.fetch_add(1, Ordering::SeqCst);
            StatusCode::BAD_REQUEST
        }
    }
}

/// A receiver in `mode`, serving on a fresh port.
async fn receiver_in(mode: Mode) -> (Receiver, SocketAddr) {
    let receiver = Receiver::new(SECRET);
    receiver.set(mode);
    let addr = receiver.serve("127.0.0.1:0".parse().unwrap()).await;
    (receiver, addr)
}

/// The buyer-id pseudonym key the shop shares with the gateway (hex).
const BUYER_ID_KEY: &str = "00112233445566778899aabbccddeeff";

/// The pseudonym the shop computes for buyer `id`: hex(HMAC-SHA256(key, id)).
fn pseudonym(id: &str) -> String {
    let key: Vec<u8> = (0..BUYER_ID_KEY.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&BUYER_ID_KEY[i..i + 2], 16).unwrap())
        .collect();
    hmac_sha256(&key, id.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn args() -> ServeArgs {
    let mut a = common::demo_args();
    a.demo = false;
    a.privacy.buyer_id_key =
        Some(holdfast_gateway::privacy::BuyerIdKey::parse(BUYER_ID_KEY).unwrap());
    a.webhooks.enabled = true;
    a.webhooks.backoff_ms = 20;
    a.webhooks.backoff_max_ms = 100;
    a
}

async fn add_endpoint(gw: &Gateway, id: &str, addr: SocketAddr, extra: Value) -> Value {
    let mut body = json!({"id": id, "url": format!("http://{addr}/hook"), "secret": SECRET});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (status, answer) = gw
        .call("POST", "/api/admin/webhooks", Some(ADMIN), Some(body))
        .await;
    assert_eq!(status, 201, "{answer}");
    answer
}

async fn reserve(gw: &Gateway, sku: &str, qty: u32) -> String {
    let (status, body) = gw
        .call(
            "POST",
            "/api/reservations",
            Some(CHECKOUT),
            Some(json!({"sku": sku, "qty": qty, "buyer": "b1"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["hold"].as_str().unwrap().to_string()
}

/// Reserves one unit of `sku` and commits it; the hold.
async fn buy(gw: &Gateway, sku: &str) -> String {
    let hold = reserve(gw, sku, 1).await;
    hold_op(gw, &hold, "commit").await;
    hold
}

async fn hold_op(gw: &Gateway, hold: &str, op: &str) {
    let (status, body) = gw
        .call(
            "POST",
            &format!("/api/holds/{hold}/{op}"),
            Some(CHECKOUT),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

fn of_type(t: &'static str) -> impl Fn(&Value) -> bool {
    move |v| v["type"] == t
}

#[tokio::test]
async fn every_event_kind_arrives_signed() {
    let (receiver, addr) = receiver_in(Mode::Ok).await;
    let mut a = args();
    a.buyer_tokens.keys = vec!["k:HS256:0123456789abcdef0123456789abcdef".into()];
    let gw = Gateway::start(a).await;
    let all: Vec<&str> = vec![
        "order.committed",
        "hold.released",
        "hold.expired",
        "sku.sold_out",
        "sku.back_in_stock",
        "sku.low_stock",
        "stock.changed",
    ];
    let created = add_endpoint(
        &gw,
        "shop",
        addr,
        json!({"events": all, "stock_changed_interval_ms": 50}),
    )
    .await;
    assert_eq!(created["secret"], SECRET, "shown in the create answer");
    let (_, listed) = gw
        .call("GET", "/api/admin/webhooks/shop", Some(ADMIN), None)
        .await;
    assert!(
        listed.get("secret").is_none(),
        "never shown again: {listed}"
    );
    gw.create_sku(json!({"id": "tee", "total": 4, "buyer_limit": 10}))
        .await;
    gw.create_sku(json!({"id": "cap", "total": 5, "hold_ttl_ms": 50, "hold_lifetime_max_ms": 50}))
        .await;

    // A buyer's order carries its channel.
    let claims = json!({"sub": "viewer-7", "jti": "j", "exp": std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 60, "channel": "tiktok"});
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef").unwrap(),
    )
    .unwrap();
    let (status, body) = gw
        .call(
            "POST",
            "/api/reservations",
            Some(&token),
            Some(json!({"sku": "tee", "qty": 1})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let bought = body["hold"].as_str().unwrap().to_string();
    hold_op(&gw, &bought, "commit").await;
    let order = receiver
        .wait_for("order.committed", |v| {
            v["type"] == "order.committed" && v["data"]["hold"] == bought.as_str()
        })
        .await;
    assert_eq!(order["data"]["channel"], "tiktok");
    // Buyer ids leave holdfast only as pseudonyms the shop can map back.
    assert_eq!(order["data"]["buyer"], pseudonym("viewer-7"));
    assert_eq!(
        order["data"]["lines"],
        json!([{"sku": "tee", "qty": 1, "returned": 0}])
    );

    let released = reserve(&gw, "tee", 1).await;
    hold_op(&gw, &released, "release").await;
    receiver
        .wait_for("hold.released", |v| {
            v["type"] == "hold.released" && v["data"]["hold"] == released.as_str()
        })
        .await;
    let expiring = reserve(&gw, "cap", 1).await;
    receiver
        .wait_for("hold.expired", |v| {
            v["type"] == "hold.expired" && v["data"]["hold"] == expiring.as_str()
        })
        .await;
    // 3 left of 4, then 1: low stock at the threshold of 2 (set now:
    // the release above had 2 available for a moment).
    let (status, body) = gw
        .call(
            "PUT",
            "/api/admin/low-stock",
            Some(ADMIN),
            Some(json!({"sku": "tee", "threshold": 2})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let h = reserve(&gw, "tee", 2).await;
    hold_op(&gw, &h, "commit").await;
    let low = receiver
        .wait_for("sku.low_stock", of_type("sku.low_stock"))
        .await;
    assert_eq!(
        low["data"],
        json!({"sku": "tee", "available": 1, "threshold": 2})
    );
    buy(&gw, "tee").await;
    receiver
        .wait_for("sku.sold_out", of_type("sku.sold_out"))
        .await;
    let (status, _) = gw
        .call(
            "POST",
            "/api/admin/skus/tee/restock",
            Some(ADMIN),
            Some(json!({"qty": 3})),
        )
        .await;
    assert_eq!(status, 200);
    receiver
        .wait_for("sku.back_in_stock", of_type("sku.back_in_stock"))
        .await;
    receiver
        .wait_for("stock.changed with the latest counts", |v| {
            v["type"] == "stock.changed" && v["data"]["sku"] == "tee" && v["data"]["available"] == 3
        })
        .await;
    assert_eq!(
        receiver.bad.load(Ordering::SeqCst),
        0,
        "every signature verified"
    );
    let ids: std::collections::HashSet<_> =
        receiver.events().into_iter().map(|(id, _)| id).collect();
    assert_eq!(
        ids.len(),
        receiver.events().len(),
        "each event its own webhook-id"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_receiver_that_is_down_gets_the_event_once_it_is_up() {
    // A port with nobody listening (yet).
    let addr = free_addr().await;
    let gw = Gateway::start(args()).await;
    add_endpoint(&gw, "down", addr, json!({})).await;
    gw.create_sku(json!({"id": "tee", "total": 10})).await;
    let hold = buy(&gw, "tee").await;
    // Tried and failed at least once while down.
    wait_failed_try(&gw, "down").await;
    let receiver = Receiver::new(SECRET);
    receiver.serve(addr).await;
    receiver
        .wait_for("order.committed", |v| {
            v["type"] == "order.committed" && v["data"]["hold"] == hold.as_str()
        })
        .await;
    gw.stop().await;
}

#[tokio::test]
async fn a_dead_letter_after_exactly_n_tries_then_a_replay_with_the_same_id() {
    let (receiver, addr) = receiver_in(Mode::Fail).await;
    let mut a = args();
    a.webhooks.tries_max = 3;
    let gw = Gateway::start(a).await;
    add_endpoint(&gw, "dl", addr, json!({"events": ["order.committed"]})).await;
    gw.create_sku(json!({"id": "tee", "total": 10})).await;
    buy(&gw, "tee").await;
    let dead = eventually("a dead letter for endpoint dl", || async {
        let (_, body) = gw
            .call(
                "GET",
                "/api/admin/webhooks/dl/dead-letters",
                Some(ADMIN),
                None,
            )
            .await;
        let list = body["dead_letters"].as_array().cloned().unwrap_or_default();
        (!list.is_empty()).then_some(list)
    })
    .await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["tries"], 3);
    assert_eq!(receiver.tries.load(Ordering::SeqCst), 3, "exactly N tries");
    let event_id = dead[0]["event"]["id"].as_str().unwrap().to_string();
    receiver.set(Mode::Ok);
    let (status, body) = gw
        .call(
            "POST",
            "/api/admin/webhooks/dl/replay",
            Some(ADMIN),
            Some(json!({"dead_letters": true})),
        )
        .await;
    assert_eq!((status, body["replayed"].as_u64()), (200, Some(1)));
    receiver
        .wait_for("the replayed order", of_type("order.committed"))
        .await;
    assert_eq!(
        receiver.events()[0].0,
        event_id,
        "a replay keeps the webhook-id"
    );
    // The receiver answered; the gateway counts once it reads the answer.
    let delivered = [("endpoint", "dl"), ("outcome", "delivered")];
    eventually("the replayed delivery counted as delivered", || async {
        (metric(&gw, "holdfast_webhook_deliveries_total", &delivered).await >= 1.0).then_some(())
    })
    .await;
    let mut counts = Vec::new();
    for outcome in ["failed", "dead_letter", "delivered"] {
        let labels = [("endpoint", "dl"), ("outcome", outcome)];
        counts.push(metric(&gw, "holdfast_webhook_deliveries_total", &labels).await);
    }
    assert_eq!(counts, [2.0, 1.0, 1.0], "failed, dead letter, delivered");
    // Replay by event id, from the delivery history.
    let (status, body) = gw
        .call(
            "POST",
            "/api/admin/webhooks/dl/replay",
            Some(ADMIN),
            Some(json!({"event_ids": [event_id]})),
        )
        .await;
    assert_eq!((status, body["replayed"].as_u64()), (200, Some(1)));
    eventually("a second delivery (the replay by event id)", || async {
        (receiver.events().len() >= 2).then_some(())
    })
    .await;
    assert_eq!(receiver.events()[1].0, event_id);
    let (status, body) = gw
        .call(
            "POST",
            "/api/admin/webhooks/dl/replay",
            Some(ADMIN),
            Some(json!({"from_ms": 2, "to_ms": 1})),
        )
        .await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid")));
    gw.stop().await;
}

#[tokio::test]
async fn a_hanging_receiver_does_not_delay_reservations_or_another_endpoint() {
    let hanging = Receiver::new(SECRET);
    hanging.set(Mode::Hang);
    let healthy = Receiver::new(SECRET);
    let (ha, ok) = (
        hanging.serve("127.0.0.1:0".parse().unwrap()).await,
        healthy.serve("127.0.0.1:0".parse().unwrap()).await,
    );
    let gw = Gateway::start(args()).await;
    add_endpoint(
        &gw,
        "hangs",
        ha,
        json!({"events": ["order.committed"], "timeout_ms": 60000, "concurrency": 2}),
    )
    .await;
    add_endpoint(&gw, "healthy", ok, json!({"events": ["order.committed"]})).await;
    gw.create_sku(json!({"id": "tee", "total": 1000, "buyer_limit": 1000}))
        .await;
    buy(&gw, "tee").await;
    eventually("the hanging receiver starting its hang", || async {
        hanging.hung.load(Ordering::SeqCst).then_some(())
    })
    .await;
    // While the hang is held: 199 more reserve + commit, all answered.
    for _ in 1..200 {
        buy(&gw, "tee").await;
    }
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while healthy.events().len() < 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the healthy endpoint got {} of 200",
            healthy.events().len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(healthy.events().len(), 200);
    assert!(hanging.events().is_empty());
    assert!(
        hanging.tries.load(Ordering::SeqCst) <= 2,
        "at most its concurrency in flight"
    );
    hanging.unhang.notify_waiters();
    gw.stop().await;
}

#[tokio::test]
async fn endpoints_are_checked_and_file_endpoints_are_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hooks.toml");
    std::fs::write(
        &file,
        format!("[[endpoints]]\nid = \"erp\"\nurl = \"http://127.0.0.1:9/hook\"\nsecret = \"{SECRET}\"\n"),
    )
    .unwrap();
    let mut a = args();
    a.webhooks.file = Some(file);
    let gw = Gateway::start(a).await;
    let (status, body) = gw
        .call("DELETE", "/api/admin/webhooks/erp", Some(ADMIN), None)
        .await;
    assert_eq!((status, body["error"].as_str()), (403, Some("read_only")));
    for (body, code) in [
        (
            json!({"id": "x", "url": "http://shop.example/h"}),
            "invalid_url",
        ),
        (
            json!({"id": "x", "url": "ftp://127.0.0.1/h"}),
            "invalid_url",
        ),
        (
            json!({"id": "x", "url": "https://shop.example/h", "secret": "nope"}),
            "invalid_secret",
        ),
        (
            json!({"id": "x", "url": "https://shop.example/h", "events": ["order.paid"]}),
            "invalid_events",
        ),
        (
            json!({"id": "", "url": "https://shop.example/h"}),
            "invalid",
        ),
        (
            json!({"id": "x", "url": "https://shop.example/h", "concurrency": 0}),
            "invalid",
        ),
    ] {
        let (status, answer) = gw
            .call(
                "POST",
                "/api/admin/webhooks",
                Some(ADMIN),
                Some(body.clone()),
            )
            .await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (400, Some(code)),
            "{body}"
        );
    }
    let create = || {
        gw.call(
            "POST",
            "/api/admin/webhooks",
            Some(ADMIN),
            Some(json!({"id": "x", "url": "https://shop.example/h"})),
        )
    };
    let (status, body) = create().await;
    assert_eq!(status, 201);
    assert!(
        body["secret"].as_str().unwrap().starts_with("whsec_"),
        "generated"
    );
    assert_eq!(create().await.0, 409, "the id exists");
    let (status, _) = gw
        .call("DELETE", "/api/admin/webhooks/x", Some(ADMIN), None)
        .await;
    assert_eq!(status, 204);
    let (status, body) = gw
        .call("GET", "/api/admin/webhooks/x", Some(ADMIN), None)
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("unknown_webhook"))
    );
    let (status, _) = gw
        .call("GET", "/api/admin/webhooks", Some(CHECKOUT), None)
        .await;
    assert_eq!(status, 403);
    gw.stop().await;
}

/// A metric's value from `/metrics`: the line of `name` whose labels
/// include every one of `labels` (0 when absent).
async fn metric(gw: &Gateway, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric_in(&gw.metrics_text().await, name, labels)
}

/// [`metric`] from a `/metrics` text.
fn metric_in(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// An address nobody listens on yet: a receiver that is down.
async fn free_addr() -> SocketAddr {
    let probe = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    probe.local_addr().unwrap()
}

/// A `--webhooks-file` in `dir` with one endpoint `id` to `addr`.
fn hooks_file(
    dir: &std::path::Path,
    id: &str,
    addr: SocketAddr,
    events: &[&str],
) -> std::path::PathBuf {
    let file = dir.join("hooks.toml");
    let events: Vec<String> = events.iter().map(|e| format!("\"{e}\"")).collect();
    std::fs::write(
        &file,
        format!(
            "[[endpoints]]\nid = \"{id}\"\nurl = \"http://{addr}/hook\"\nsecret = \"{SECRET}\"\nevents = [{}]\n",
            events.join(", ")
        ),
    )
    .unwrap();
    file
}

/// Waits until the gateway has counted a failed try to `endpoint`.
async fn wait_failed_try(gw: &Gateway, endpoint: &str) {
    let labels = [("endpoint", endpoint), ("outcome", "failed")];
    eventually(&format!("a failed try to {endpoint} counted"), || async {
        (metric(gw, "holdfast_webhook_deliveries_total", &labels).await >= 1.0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn with_redis_undelivered_events_are_delivered_after_a_restart() {
    let Some(redis) = common::Redis::start() else {
        return;
    };
    let addr = free_addr().await;
    let dir = tempfile::tempdir().unwrap();
    let file = hooks_file(
        dir.path(),
        "durable",
        addr,
        &["order.committed", "sku.sold_out"],
    );
    let mut a = args();
    a.redis = Some(redis.url());
    a.webhooks.file = Some(file);
    let gw = Gateway::start(a.clone()).await;
    gw.create_sku(json!({"id": "tee", "total": 5, "buyer_limit": 10}))
        .await;
    let mut holds = Vec::new();
    for _ in 0..5 {
        let hold = buy(&gw, "tee").await;
        holds.push(hold);
    }
    // The receiver is down: tried, failed, nothing acknowledged.
    wait_failed_try(&gw, "durable").await;
    gw.stop().await;

    let receiver = Receiver::new(SECRET);
    receiver.serve(addr).await;
    let gw = Gateway::start(a).await;
    for hold in &holds {
        let order = receiver
            .wait_for("an order from before the restart", |v| {
                v["type"] == "order.committed" && v["data"]["hold"] == hold.as_str()
            })
            .await;
        assert_eq!(order["data"]["lines"][0]["sku"], "tee");
    }
    receiver
        .wait_for("the sell-out", of_type("sku.sold_out"))
        .await;
    let ids: Vec<String> = receiver.events().into_iter().map(|(id, _)| id).collect();
    for hold in &holds {
        assert!(ids.contains(&format!("msg_order_{hold}")), "{ids:?}");
    }
    gw.stop().await;
}

/// With Redis, released and expired holds reach an endpoint that asks for
/// them through the order stream, written in the batch that records the
/// release: delivered after a restart like orders, with the same
/// `webhook-id` derived from the hold.
#[tokio::test]
async fn with_redis_released_and_expired_holds_are_durable_webhooks() {
    let Some(redis) = common::Redis::start() else {
        return;
    };
    let addr = free_addr().await;
    let dir = tempfile::tempdir().unwrap();
    let file = hooks_file(dir.path(), "ends", addr, &["hold.released", "hold.expired"]);
    let mut a = args();
    a.redis = Some(redis.url());
    a.webhooks.file = Some(file);
    let gw = Gateway::start(a.clone()).await;
    gw.create_sku(json!({"id": "tee", "total": 5, "buyer_limit": 10}))
        .await;
    gw.create_sku(json!({"id": "cap", "total": 5, "hold_ttl_ms": 50, "hold_lifetime_max_ms": 50}))
        .await;
    let released = reserve(&gw, "tee", 2).await;
    hold_op(&gw, &released, "release").await;
    let expiring = reserve(&gw, "cap", 1).await;
    // Both are in the order stream, written with the journal's batch.
    let con = redis.con().await;
    let entries = common::eventually("the released and expired entries", || {
        let mut con = con.clone();
        async move {
            let out: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
                .arg("hf:orders")
                .arg("-")
                .arg("+")
                .query_async(&mut con)
                .await
                .ok()?;
            let kinds: Vec<String> = out
                .ids
                .iter()
                .filter_map(|e| e.get::<String>("event"))
                .collect();
            (kinds.contains(&"released".to_string()) && kinds.contains(&"expired".to_string()))
                .then_some(out)
        }
    })
    .await;
    let released_entry = entries
        .ids
        .iter()
        .find(|e| e.get::<String>("event").as_deref() == Some("released"))
        .unwrap();
    assert_eq!(
        released_entry.get::<String>("hold").as_deref(),
        Some(released.as_str())
    );
    assert_eq!(released_entry.get::<String>("qty").as_deref(), Some("2"));
    // The receiver is down: tried, failed, nothing acknowledged; then the
    // gateway stops with both undelivered.
    wait_failed_try(&gw, "ends").await;
    gw.stop().await;

    let receiver = Receiver::new(SECRET);
    receiver.serve(addr).await;
    let gw = Gateway::start(a).await;
    let got = receiver
        .wait_for("hold.released after the restart", |v| {
            v["type"] == "hold.released" && v["data"]["hold"] == released.as_str()
        })
        .await;
    assert_eq!(
        got["data"]["lines"],
        json!([{"sku": "tee", "qty": 2}]),
        "{got}"
    );
    receiver
        .wait_for("hold.expired after the restart", |v| {
            v["type"] == "hold.expired" && v["data"]["hold"] == expiring.as_str()
        })
        .await;
    let ids: Vec<String> = receiver.events().into_iter().map(|(id, _)| id).collect();
    assert!(
        ids.contains(&format!("msg_hold_released_{released}")),
        "{ids:?}"
    );
    assert!(
        ids.contains(&format!("msg_hold_expired_{expiring}")),
        "{ids:?}"
    );
    gw.stop().await;
}

/// The real binary, killed with SIGKILL on drop (and by the test).
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        holdfast_testkit::stop_child(&mut self.0, std::time::Duration::ZERO);
    }
}

async fn spawn_holdfast(base: &str, redis: &str, hooks: &std::path::Path) -> Child {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .args(["serve", "--demo", "--listen", base, "--redis", redis])
        .arg("--webhooks-file")
        .arg(hooks)
        .args([
            "--webhook-backoff-ms",
            "20",
            "--webhook-backoff-max-ms",
            "100",
        ])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start holdfast");
    let child = Child(child);
    let http = reqwest::Client::new();
    eventually(&format!("holdfast's /readyz on {base}"), || async {
        let ready = http.get(format!("http://{base}/readyz")).send().await;
        ready.is_ok_and(|r| r.status() == 200).then_some(())
    })
    .await;
    child
}

#[tokio::test]
async fn with_redis_a_sigkilled_gateway_delivers_its_undelivered_events_after_restart() {
    let Some(redis) = common::Redis::start() else {
        return;
    };
    let receiver_addr = free_addr().await;
    let dir = tempfile::tempdir().unwrap();
    let hooks = hooks_file(dir.path(), "killed", receiver_addr, &["order.committed"]);
    let base = format!("127.0.0.1:{}", common::free_port());
    let first = spawn_holdfast(&base, &redis.url(), &hooks).await;
    let http = reqwest::Client::new();
    let post = |path: String, body: Value| {
        http.post(format!("http://{base}{path}"))
            .bearer_auth(CHECKOUT)
            .json(&body)
            .send()
    };
    let mut holds = Vec::new();
    for i in 0..5 {
        let r = post(
            "/api/reservations".into(),
            json!({"sku": "tote-canvas", "qty": 1, "buyer": format!("b{i}")}),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 201);
        let hold = r.json::<Value>().await.unwrap()["hold"]
            .as_str()
            .unwrap()
            .to_string();
        let r = post(format!("/api/holds/{hold}/commit"), json!({}))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        holds.push(hold);
    }
    // Tried while the receiver is down, then SIGKILL: nothing acknowledged.
    let failed = [("endpoint", "killed"), ("outcome", "failed")];
    eventually("a failed try to the down receiver counted", || async {
        let response = http.get(format!("http://{base}/metrics")).send().await;
        let text = response.unwrap().text().await.unwrap();
        (metric_in(&text, "holdfast_webhook_deliveries_total", &failed) >= 1.0).then_some(())
    })
    .await;
    drop(first);

    let receiver = Receiver::new(SECRET);
    receiver.serve(receiver_addr).await;
    let _second = spawn_holdfast(&base, &redis.url(), &hooks).await;
    for hold in &holds {
        receiver
            .wait_for("an order from before the SIGKILL", |v| {
                v["type"] == "order.committed" && v["data"]["hold"] == hold.as_str()
            })
            .await;
    }
    assert_eq!(receiver.bad.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn with_a_redis_cluster_orders_are_queued_in_the_nodes_slot_and_delivered() {
    let Some(cluster) = common::cluster::RedisCluster::start(3, 0) else {
        return;
    };
    let (receiver, addr) = receiver_in(Mode::Ok).await;
    let dir = tempfile::tempdir().unwrap();
    let hooks = hooks_file(dir.path(), "shop", addr, &["order.committed"]);
    let hooks = hooks.to_str().unwrap().to_string();
    // No replicas here: the master's word is enough.
    let node = common::cluster::HoldfastNode::spawn(
        &cluster.urls(),
        1,
        &["--webhooks-file", &hooks, "--replica-acks", "0"],
    )
    .await;
    let http = reqwest::Client::new();
    let r = http
        .post(node.url("/api/reservations"))
        .bearer_auth(CHECKOUT)
        .json(&json!({"sku": "tote-canvas", "qty": 1, "buyer": "b1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let hold = r.json::<Value>().await.unwrap()["hold"]
        .as_str()
        .unwrap()
        .to_string();
    let r = http
        .post(node.url(&format!("/api/holds/{hold}/commit")))
        .bearer_auth(CHECKOUT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    receiver
        .wait_for("the order", |v| {
            v["type"] == "order.committed" && v["data"]["hold"] == hold.as_str()
        })
        .await;
    // The endpoint's stream lives in the node's slot, beside its journal.
    let stream = "hf:{node:1}:webhooks:shop";
    let port = cluster.master_of_key(stream);
    let groups = cluster.cli(port, &["XINFO", "GROUPS", stream]);
    assert!(groups.contains("deliver"), "{groups}");
    assert_eq!(
        cluster.master_of_key(stream),
        cluster.master_of_key("hf:{node:1}:orders")
    );
}

#[tokio::test]
async fn a_full_memory_queue_drops_new_events_and_counts_them() {
    let (hanging, addr) = receiver_in(Mode::Hang).await;
    let mut a = args();
    a.webhooks.queue_max = 2;
    let gw = Gateway::start(a).await;
    let spec = json!({"events": ["order.committed"], "concurrency": 1, "timeout_ms": 60000});
    add_endpoint(&gw, "tiny", addr, spec).await;
    gw.create_sku(json!({"id": "tee", "total": 10, "buyer_limit": 10}))
        .await;
    buy(&gw, "tee").await;
    eventually("the first order reaching the hanging receiver", || async {
        hanging.hung.load(Ordering::SeqCst).then_some(())
    })
    .await;
    // One in flight, room for one more: of three more orders, two drop.
    for _ in 0..3 {
        buy(&gw, "tee").await;
    }
    let dropped = || {
        metric(
            &gw,
            "holdfast_webhook_dropped_total",
            &[("endpoint", "tiny")],
        )
    };
    eventually("two events dropped by the full queue", || async {
        (dropped().await >= 2.0).then_some(())
    })
    .await;
    assert_eq!(dropped().await, 2.0);
    let (_, ep) = gw
        .call("GET", "/api/admin/webhooks/tiny", Some(ADMIN), None)
        .await;
    assert_eq!(
        (
            ep["queue"]["in_flight"].as_u64(),
            ep["queue"]["queued"].as_u64()
        ),
        (Some(1), Some(1))
    );
    hanging.unhang.notify_waiters();
    gw.stop().await;
}
