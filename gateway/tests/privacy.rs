//! Privacy by design against a real, private `redis-server`: buyer ids
//! reach Redis only as their HMAC-SHA256 pseudonyms (or in the clear when
//! the operator opts in), the order stream is trimmed by age, and erasing a
//! buyer leaves nothing of them in any key or stream entry (checked by
//! reading every key Redis has).

mod common;
use common::*;
use holdfast_gateway::config::{Persistence, ServeArgs};
use holdfast_gateway::privacy::{BuyerIdKey, BuyerNames};
use serde_json::{Value, json};

const KEY: &str = "a1a2a3a4a5a6a7a8a9aaabacadaeafb0";
const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";

fn args(redis: &Redis) -> ServeArgs {
    let mut args = demo_args();
    args.redis = Some(redis.url());
    args.persistence = Persistence::Durable;
    args.privacy.buyer_id_key = Some(BuyerIdKey::parse(KEY).unwrap());
    args
}

fn pseudonym(id: &str) -> String {
    BuyerNames::pseudonyms(&BuyerIdKey::parse(KEY).unwrap())
        .name(id)
        .to_string()
}

/// Every key Redis holds and everything in it (names, fields, values,
/// stream entries), as one lossy text to search.
async fn everything(c: &mut redis::aio::MultiplexedConnection) -> String {
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query_async(c).await.unwrap();
    let mut all = String::new();
    for key in keys {
        all.push_str(&key);
        all.push('\n');
        let parts = key_contents(c, &key).await;
        for p in parts {
            all.push_str(&String::from_utf8_lossy(&p));
            all.push('\n');
        }
    }
    all
}

/// One more unit of tee-black-m for `buyer` is refused: over its limit.
async fn refused_over_limit(gw: &Gateway, buyer: &str) {
    let (status, r) = gw
        .call(
            "POST",
            "/api/reservations",
            Some(CHECKOUT),
            Some(json!({"sku": "tee-black-m", "qty": 1, "buyer": buyer})),
        )
        .await;
    assert_eq!((status, r["error"].as_str()), (429, Some("limit_exceeded")));
}

async fn buy(gw: &Gateway, buyer: &str, request: &str) -> String {
    let (status, r) = gw
        .call(
            "POST",
            "/api/reservations",
            Some(CHECKOUT),
            Some(json!({"sku": "tee-black-m", "qty": 1, "buyer": buyer, "request_id": request})),
        )
        .await;
    assert_eq!(status, 201, "{r}");
    r["hold"].as_str().unwrap().to_string()
}

async fn hold_op(gw: &Gateway, hold: &str, op: &str) -> (u16, Value) {
    gw.call(
        "POST",
        &format!("/api/holds/{hold}/{op}"),
        Some(CHECKOUT),
        Some(json!({})),
    )
    .await
}

#[tokio::test]
async fn buyer_ids_reach_redis_only_as_pseudonyms_unless_kept_in_the_clear() {
    let Some(redis) = Redis::start() else { return };
    let gw = Gateway::start(args(&redis)).await;
    let hold = buy(&gw, ALICE, "r1").await;
    assert_eq!(hold_op(&gw, &hold, "commit").await.0, 200);
    buy(&gw, BOB, "r2").await;
    let mut c = redis.con().await;
    let all = everything(&mut c).await;
    assert!(
        !all.contains(ALICE) && !all.contains(BOB),
        "a raw buyer id in Redis:\n{all}"
    );
    assert!(!all.contains("alice"), "not even part of it");
    assert!(
        all.contains(&format!("buyer={}", pseudonym(ALICE))),
        "the order names the pseudonym"
    );
    assert!(
        all.contains(&pseudonym(BOB)),
        "hf:buyers maps the hash to the pseudonym"
    );

    // Retention: buyer records and remembered answers expire by themselves.
    let month: i64 = 2_592_000_000;
    let reqs: Vec<String> = redis::cmd("KEYS")
        .arg("hf:reqs:*")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(!reqs.is_empty(), "request ids were given");
    for key in ["hf:buyers", "hf:{tee-black-m}:buyers"]
        .iter()
        .map(|k| k.to_string())
        .chain(reqs)
    {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut c)
            .await
            .unwrap();
        assert!(ttl > 0 && ttl <= month, "{key} expires (pttl {ttl})");
    }
    gw.stop().await;

    // The opt-out: the same store, now written in the clear.
    let Some(redis) = Redis::start() else { return };
    let mut clear = args(&redis);
    clear.privacy.buyer_ids_in_clear = true;
    let gw = Gateway::start(clear).await;
    let hold = buy(&gw, ALICE, "r1").await;
    assert_eq!(hold_op(&gw, &hold, "commit").await.0, 200);
    let all = everything(&mut redis.con().await).await;
    assert!(all.contains(&format!("buyer={ALICE}")), "{all}");
    gw.stop().await;
}

#[tokio::test]
async fn the_order_stream_is_trimmed_by_age() {
    let Some(redis) = Redis::start() else { return };
    let mut c = redis.con().await;
    // One entry per stream node, so the approximate trim shows per entry.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("stream-node-max-entries")
        .arg(1)
        .query_async(&mut c)
        .await
        .unwrap();
    let mut a = args(&redis);
    a.privacy.orders_max_age_ms = 200;
    let gw = Gateway::start(a).await;
    let first = buy(&gw, "first", "f").await;
    assert_eq!(hold_op(&gw, &first, "commit").await.0, 200);
    assert!(
        order_stream(&mut c)
            .await
            .iter()
            .any(|o| o.get("hold") == Some(&first)),
        "the first order is in the stream"
    );
    // Later orders' batches trim what is older than 200 ms: poll for it.
    let n = std::sync::atomic::AtomicUsize::new(0);
    eventually("the old entry trimmed", || {
        let (gw, n, first, mut c) = (&gw, &n, &first, c.clone());
        async move {
            let n = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            let h = buy(gw, &format!("b{n}"), &format!("r{n}")).await;
            assert_eq!(hold_op(gw, &h, "commit").await.0, 200);
            let orders = order_stream(&mut c).await;
            assert!(!orders.is_empty(), "the newest entry stays");
            orders
                .iter()
                .all(|o| o.get("hold") != Some(first))
                .then_some(())
        }
    })
    .await;
    gw.stop().await;
}

#[tokio::test]
async fn erasure_removes_the_buyer_from_every_key_and_entry() {
    let Some(redis) = Redis::start() else { return };
    let a = args(&redis);
    let gw = Gateway::start(a.clone()).await;
    // tee-black-m has a per-buyer limit: Alice's units are counted.
    for i in 0..2 {
        let hold = buy(&gw, ALICE, &format!("a{i}")).await;
        assert_eq!(hold_op(&gw, &hold, "commit").await.0, 200);
    }
    let bob = buy(&gw, BOB, "b").await;
    assert_eq!(hold_op(&gw, &bob, "commit").await.0, 200);
    let live = buy(&gw, ALICE, "a-live").await;

    let erase = |id: &'static str| {
        let gw = &gw;
        async move {
            gw.call(
                "POST",
                &format!("/api/admin/buyers/{}/erase", id.replace('@', "%40")),
                Some(ADMIN),
                None,
            )
            .await
        }
    };
    let (status, r) = erase(ALICE).await;
    assert_eq!(
        (status, r["error"].as_str()),
        (409, Some("buyer_has_live_holds")),
        "{r}"
    );
    assert_eq!(hold_op(&gw, &live, "release").await.0, 200);
    let (status, r) = erase(ALICE).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        r,
        json!({"buyer": pseudonym(ALICE), "memory_names": 1, "memory_limit_records": 1,
               "redis_names": 1, "redis_limit_records": 1, "order_entries": 2,
               "webhook_events": 0, "webhook_stream_entries": 0})
    );

    let mut c = redis.con().await;
    let all = everything(&mut c).await;
    assert!(
        !all.contains(&pseudonym(ALICE)),
        "alice's pseudonym left:\n{all}"
    );
    assert!(all.contains(&pseudonym(BOB)), "bob's order stays");
    let limits: usize = redis::AsyncCommands::hlen(&mut c, "hf:{tee-black-m}:buyers")
        .await
        .unwrap();
    assert_eq!(limits, 1, "only bob's limit record is left");
    // The stream is read in pages of ERASE_SCAN_COUNT: entries on every
    // page (and across page edges) are found.
    let page = holdfast_gateway::journal::erase::ERASE_SCAN_COUNT;
    let mut pipe = redis::pipe();
    for i in 0..2 * page + 1 {
        let who = if i % 3 == 0 {
            pseudonym(ALICE)
        } else {
            pseudonym(BOB)
        };
        pipe.cmd("XADD")
            .arg("hf:orders")
            .arg("*")
            .arg("event")
            .arg("committed")
            .arg("buyer")
            .arg(who)
            .ignore();
    }
    let _: () = pipe.query_async(&mut c).await.unwrap();
    let before: usize = redis::AsyncCommands::xlen(&mut c, "hf:orders")
        .await
        .unwrap();
    let (status, r) = erase(ALICE).await;
    let alice = (2 * page + 1).div_ceil(3) as u64;
    assert_eq!(
        (status, r["order_entries"].as_u64()),
        (200, Some(alice)),
        "{r}"
    );
    let after: usize = redis::AsyncCommands::xlen(&mut c, "hf:orders")
        .await
        .unwrap();
    assert_eq!(before - after, alice as usize, "only alice's entries went");

    // Erasing again finds nothing; an unknown buyer likewise.
    let (status, r) = erase(ALICE).await;
    assert_eq!(
        (
            status,
            r["order_entries"].as_u64(),
            r["redis_names"].as_u64()
        ),
        (200, Some(0), Some(0)),
        "{r}"
    );
    gw.stop().await;

    // After a restart nothing comes back.
    let gw = Gateway::start(a).await;
    let all = everything(&mut redis.con().await).await;
    assert!(!all.contains(&pseudonym(ALICE)), "{all}");
    gw.stop().await;
}

/// The `buyer` field of every order-stream entry, oldest first.
async fn order_buyers(c: &mut redis::aio::MultiplexedConnection) -> Vec<String> {
    let r: redis::streams::StreamRangeReply = redis::AsyncCommands::xrange_all(c, "hf:orders")
        .await
        .unwrap();
    r.ids
        .iter()
        .map(|e| e.get::<String>("buyer").expect("a buyer field"))
        .collect()
}

/// Without `--buyer-id-key` the generated key is kept with the journal:
/// a restart on the same Redis makes the same pseudonym (stored buyer
/// names and order entries still match), and a full re-write of the
/// journal record keeps the key.
#[tokio::test]
async fn a_generated_key_survives_a_restart_so_pseudonyms_stay_the_same() {
    let Some(redis) = Redis::start() else { return };
    let mut a = args(&redis);
    a.privacy.buyer_id_key = None;
    let mut c = redis.con().await;

    let gw = Gateway::start(a.clone()).await;
    let hold = buy(&gw, ALICE, "r1").await;
    assert_eq!(hold_op(&gw, &hold, "commit").await.0, 200);
    let key: Option<String> = redis::AsyncCommands::hget(&mut c, "hf:journal", "buyer_id_key")
        .await
        .unwrap();
    let key = key.expect("the generated key is in the journal record");
    let first = order_buyers(&mut c).await;
    assert_eq!(first.len(), 1);
    assert_ne!(first[0], pseudonym(ALICE), "not the test's configured key");
    assert_eq!(
        first[0],
        BuyerNames::pseudonyms(&BuyerIdKey::parse(&key).unwrap())
            .name(ALICE)
            .to_string(),
        "the stored key is the one pseudonyms are made with"
    );

    // Redis loses the journal record (restarted empty): the writer's full
    // re-write puts it back, key included.
    let _: () = redis::AsyncCommands::del(&mut c, "hf:journal")
        .await
        .unwrap();
    let back = eventually("the journal record re-written", || {
        let mut c = c.clone();
        async move {
            let back: Option<String> =
                redis::AsyncCommands::hget(&mut c, "hf:journal", "buyer_id_key")
                    .await
                    .unwrap();
            let seq: Option<String> = redis::AsyncCommands::hget(&mut c, "hf:journal", "seq")
                .await
                .unwrap();
            seq.map(|_| back)
        }
    })
    .await;
    assert_eq!(
        back.as_deref(),
        Some(key.as_str()),
        "re-written with the key"
    );
    gw.stop().await;

    let gw = Gateway::start(a).await;
    let hold = buy(&gw, ALICE, "r2").await;
    assert_eq!(hold_op(&gw, &hold, "commit").await.0, 200);
    let both = order_buyers(&mut c).await;
    assert_eq!(both.len(), 2);
    assert_eq!(both[0], both[1], "the same pseudonym after a restart");
    gw.stop().await;
}

/// Erasure blanks the buyer in memory too: the engine's per-buyer limit
/// table no longer counts (or names) them, so the limit counts afresh at
/// once, as it does after a restart once Redis forgot the records.
#[tokio::test]
async fn erasure_forgets_the_buyer_in_memory_too() {
    let gw = Gateway::demo().await;
    // tee-black-m: at most 4 per buyer.
    for i in 0..4 {
        let hold = buy(&gw, ALICE, &format!("a{i}")).await;
        assert_eq!(hold_op(&gw, &hold, "commit").await.0, 200);
    }
    refused_over_limit(&gw, ALICE).await;
    let bob = buy(&gw, BOB, "b").await;
    assert_eq!(hold_op(&gw, &bob, "commit").await.0, 200);

    let (status, r) = gw
        .call(
            "POST",
            &format!("/api/admin/buyers/{}/erase", ALICE.replace('@', "%40")),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        (
            r["memory_names"].as_u64(),
            r["memory_limit_records"].as_u64()
        ),
        (Some(1), Some(1)),
        "{r}"
    );
    // Nothing in memory remembers Alice's four: she counts afresh.
    for i in 0..4 {
        buy(&gw, ALICE, &format!("again{i}")).await;
    }
    // Bob is untouched: his one unit still counts.
    for i in 0..3 {
        buy(&gw, BOB, &format!("b{i}")).await;
    }
    refused_over_limit(&gw, BOB).await;
    gw.stop().await;
}

/// Webhook events kept in memory name the buyer (their pseudonym) until
/// delivered, or as dead letters and history: erasure blanks them there.
/// Webhook events name the buyer (their pseudonym) until delivered, and
/// as dead letters and history: erasure blanks them in memory and, with
/// Redis, in the webhook streams (read afterwards key by key).
#[tokio::test]
async fn erasure_blanks_the_buyer_in_webhook_events() {
    let Some(redis) = Redis::start() else { return };
    for with_redis in [false, true] {
        let mut a = demo_args();
        if with_redis {
            a.redis = Some(redis.url());
            a.persistence = Persistence::Durable;
        }
        a.privacy.buyer_id_key = Some(BuyerIdKey::parse(KEY).unwrap());
        a.webhooks.enabled = true;
        a.webhooks.tries_max = 1;
        erase_from_webhooks(a, with_redis.then_some(&redis)).await;
    }
}

async fn erase_from_webhooks(a: ServeArgs, redis: Option<&Redis>) {
    let gw = Gateway::start(a).await;
    // Nothing listens on a port just freed: every delivery fails at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (status, r) = gw
        .call(
            "POST",
            "/api/admin/webhooks",
            Some(ADMIN),
            Some(json!({"id": "shop", "url": format!("http://{closed}/hook"),
                        "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                        "events": ["order.committed"]})),
        )
        .await;
    assert_eq!(status, 201, "{r}");
    let hold = buy(&gw, ALICE, "a").await;
    assert_eq!(hold_op(&gw, &hold, "commit").await.0, 200);
    let dead_letters = || async {
        let (_, body) = gw
            .call(
                "GET",
                "/api/admin/webhooks/shop/dead-letters",
                Some(ADMIN),
                None,
            )
            .await;
        body["dead_letters"].as_array().cloned().unwrap_or_default()
    };
    let dead = eventually("a dead letter for endpoint shop", || async {
        let dead = dead_letters().await;
        (!dead.is_empty()).then_some(dead)
    })
    .await;
    assert_eq!(dead[0]["event"]["data"]["buyer"], pseudonym(ALICE));
    if let Some(redis) = redis {
        // The dead letter is written to its stream after the memory list.
        let c = redis.con().await;
        eventually("the dead letter's entry in its Redis stream", || {
            let mut c = c.clone();
            async move {
                let len: usize = redis::AsyncCommands::xlen(&mut c, "hf:webhooks:shop:dead")
                    .await
                    .unwrap();
                (len > 0).then_some(())
            }
        })
        .await;
    }

    let (status, r) = gw
        .call(
            "POST",
            &format!("/api/admin/buyers/{}/erase", ALICE.replace('@', "%40")),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["webhook_events"].as_u64(), Some(1), "{r}");
    if let Some(redis) = redis {
        assert_eq!(
            r["webhook_stream_entries"].as_u64(),
            Some(1),
            "the dead letter: {r}"
        );
        let all = everything(&mut redis.con().await).await;
        assert!(!all.contains(&pseudonym(ALICE)), "{all}");
    }
    let dead = dead_letters().await;
    assert_eq!(dead.len(), 1, "the event stays, without its buyer");
    assert_eq!(dead[0]["event"]["data"]["buyer"], Value::Null, "{dead:?}");
    assert!(
        !serde_json::to_string(&dead)
            .unwrap()
            .contains(&pseudonym(ALICE))
    );
    gw.stop().await;
}
