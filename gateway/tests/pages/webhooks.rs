//! The dashboard's webhooks panel against a real receiver: an axum server
//! started here that verifies each delivery's Standard Webhooks signature
//! and counts it. Endpoints with their queues, deliveries and dead letters;
//! replaying the dead letters, one event and a time range, each after a
//! confirmation.

use super::*;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The shop's receiver: fails every try while `failing`, else verifies
/// and records the `webhook-id` of each signed delivery.
#[derive(Clone, Default)]
struct Receiver {
    failing: Arc<AtomicBool>,
    signed: Arc<Mutex<Vec<String>>>,
    unsigned: Arc<AtomicU64>,
}

impl Receiver {
    fn ids(&self) -> Vec<String> {
        self.signed.lock().unwrap().clone()
    }

    async fn wait_deliveries(&self, n: usize) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while self.ids().len() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{n} signed deliveries never arrived: {:?}",
                self.ids()
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        self.ids()
    }
}

async fn receive(
    State(r): State<Receiver>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    if r.failing.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let h = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let (id, ts, sigs) = (
        h("webhook-id"),
        h("webhook-timestamp"),
        h("webhook-signature"),
    );
    let key = STANDARD
        .decode(SECRET.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(&body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    if sigs.split(' ').any(|s| s == expected) {
        r.signed.lock().unwrap().push(id);
        StatusCode::NO_CONTENT
    } else {
        r.unsigned.fetch_add(1, Ordering::SeqCst);
        StatusCode::BAD_REQUEST
    }
}

/// Clicks `selector`, then Confirm in the dialog, and waits for the result
/// that starts with `expected`.
async fn confirm_replay(page: &Page, selector: &str, expected: &str) -> String {
    page.click(selector).await;
    page.wait_for(
        "the confirmation",
        "document.getElementById('confirm').open",
    )
    .await;
    assert_eq!(page.text("#confirm-ok").await, "Replay");
    page.click("#confirm-ok").await;
    page.wait_text("#webhook-result", &format!("t.startsWith({expected:?})"))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_lists_webhooks_and_replays_dead_letters_one_event_and_a_range() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let receiver = Receiver::default();
    receiver.failing.store(true, Ordering::SeqCst);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(receiver.clone());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let mut args = demo_args();
    args.webhooks.enabled = true;
    args.webhooks.tries_max = 2;
    args.webhooks.backoff_ms = 20;
    args.webhooks.backoff_max_ms = 40;
    let gw = Gateway::start(args).await;
    admin(
        &gw,
        "POST",
        "/api/admin/webhooks",
        json!({"id": "shop", "url": format!("http://{addr}/hook"), "secret": SECRET,
               "events": ["order.committed"]}),
    )
    .await;
    // An order while the shop is down: two failed tries, a dead letter.
    sell(&gw, "runner-42", 1).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let body = admin(&gw, "GET", "/api/admin/webhooks/shop", Value::Null).await;
        if body["queue"]["dead_letters"] == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no dead letter: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    receiver.failing.store(false, Ordering::SeqCst);

    let page = admin_dashboard(&browser, &gw, "show=demo").await;
    let row = "#webhooks-body tr[data-endpoint=\"shop\"]";
    let col = |c: &str| format!("{row} [data-col=\"{c}\"]");
    page.wait_text(&col("dead_letters"), "t === '1'").await;
    page.wait_text(&col("failed"), "t === '2'").await;
    assert_eq!(page.text(&col("delivered")).await, "0");
    assert!(page.text(&format!("{row} .url")).await.ends_with("/hook"));

    // The dead letter, listed; Cancel sends nothing.
    page.click(&format!("{row} button.show-dead")).await;
    page.wait_for(
        "the dead letter",
        "document.querySelectorAll('#dead-list li').length === 1",
    )
    .await;
    let listed = page.text("#dead-list li span").await;
    assert!(listed.starts_with("order.committed · "), "{listed}");
    assert!(listed.contains("2 tries"), "{listed}");
    page.click(&format!("{row} button.replay-dead")).await;
    page.wait_for(
        "the confirmation",
        "document.getElementById('confirm').open",
    )
    .await;
    page.click("#confirm-cancel").await;
    assert!(
        receiver.ids().is_empty(),
        "a cancelled replay sends nothing"
    );

    // Replay the dead letters: delivered, signed, the list empties.
    let said = confirm_replay(&page, &format!("{row} button.replay-dead"), "✓").await;
    assert_eq!(said, "✓ shop: 1 replayed (its dead letters)");
    let ids = receiver.wait_deliveries(1).await;
    page.wait_text(&col("dead_letters"), "t === '0'").await;
    page.wait_text(&col("delivered"), "t === '1'").await;
    page.wait_for(
        "the empty list",
        "!document.getElementById('dead-empty').hidden",
    )
    .await;

    // A time range covering the last hour (the form's default): the same
    // event again, with the same webhook-id.
    page.click("#replay-range-btn").await;
    page.wait_for(
        "the confirmation",
        "document.getElementById('confirm').open",
    )
    .await;
    page.click("#confirm-ok").await;
    page.wait_text(
        "#webhook-result",
        "t.startsWith('✓ shop: 1 replayed (the events from')",
    )
    .await;
    let again = receiver.wait_deliveries(2).await;
    assert_eq!(again[1], ids[0], "a replay keeps the webhook-id");

    // One event, by id: a second order that died, replayed alone.
    receiver.failing.store(true, Ordering::SeqCst);
    sell(&gw, "runner-42", 1).await;
    page.wait_text(&col("dead_letters"), "t === '1'").await;
    receiver.failing.store(false, Ordering::SeqCst);
    page.wait_for(
        "the new dead letter",
        "document.querySelectorAll('#dead-list li').length === 1",
    )
    .await;
    confirm_replay(
        &page,
        "#dead-list li button.replay-one",
        "✓ shop: 1 replayed (event order.committed of ",
    )
    .await;
    let all = receiver.wait_deliveries(3).await;
    assert_ne!(all[2], ids[0], "the second order's own event");
    assert_eq!(receiver.unsigned.load(Ordering::SeqCst), 0);
    page.assert_clean_log(&[]);
    server.abort();
    browser.close().await;
    gw.stop().await;
}
