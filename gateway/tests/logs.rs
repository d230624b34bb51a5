//! Logs never carry a buyer id, its pseudonym or a token: a real `holdfast`
//! at `RUST_LOG=debug` on a real Redis is fed reservations, commits,
//! malformed bodies that quote a buyer id, a wrong token and an erasure,
//! and its whole stderr is searched afterwards.
//!
//! One test in its own binary: it sets `RUST_LOG` for the child process
//! before any other thread runs.

mod common;
use common::cluster::HoldfastNode;
use common::*;
use serde_json::json;

const BUYER: &str = "secret-buyer-4711@example.com";
const KEY: &str = "b1b2b3b4b5b6b7b8b9babbbcbdbebfc0";

#[test]
fn logs_carry_no_buyer_id_pseudonym_or_token() {
    // SAFETY: the only test of this binary, before its runtime or any
    // other thread starts: nothing reads the environment concurrently.
    unsafe { std::env::set_var("RUST_LOG", "debug") };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(run());
}

async fn run() {
    let Some(redis) = Redis::start() else { return };
    let args: Vec<String> = ["--demo", "--redis", &redis.url(), "--buyer-id-key", KEY]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let node = HoldfastNode::serve(&args).await;
    let http = reqwest::Client::new();
    let post = |path: &str, token: &str, body: String| {
        http.post(node.url(path))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let r = post(
        "/api/reservations",
        CHECKOUT,
        json!({"sku": "tee-black-m", "qty": 1, "buyer": BUYER, "request_id": "r1"}).to_string(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let hold = r.json::<serde_json::Value>().await.unwrap()["hold"]
        .as_str()
        .unwrap()
        .to_string();
    let r = post(&format!("/api/holds/{hold}/commit"), CHECKOUT, "{}".into())
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Malformed bodies whose parse errors would quote the buyer id.
    for bad in [
        format!(r#"{{"sku":"tee-black-m","qty":"{BUYER}","buyer":"x"}}"#),
        format!(r#"{{"sku":"tee-black-m","qty":1,"buyer":{{"{BUYER}":1}}}}"#),
        format!(r#"{{"sku":"tee-black-m","qty":1,"buyer":"{BUYER}"#),
    ] {
        let r = post("/api/reservations", CHECKOUT, bad).await.unwrap();
        assert_eq!(r.status(), 400);
    }
    let r = post("/api/reservations", "wrong-token-wrong-token", "{}".into())
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let path = format!("/api/admin/buyers/{}/erase", BUYER.replace('@', "%40"));
    let r = post(&path, ADMIN, String::new()).await.unwrap();
    assert_eq!(r.status(), 200);

    let logs = node.stderr();
    assert!(
        logs.contains("DEBUG") || logs.contains("INFO"),
        "logs were captured: {logs}"
    );
    let pseudonym = holdfast_gateway::privacy::BuyerNames::pseudonyms(
        &holdfast_gateway::privacy::BuyerIdKey::parse(KEY).unwrap(),
    )
    .name(BUYER);
    for secret in [
        "secret-buyer-4711",
        &pseudonym,
        KEY,
        CHECKOUT,
        ADMIN,
        "wrong-token",
    ] {
        assert!(!logs.contains(secret), "{secret:?} is in the logs:\n{logs}");
    }
}
