//! The Redis journal against a real, private `redis-server`: durable acks,
//! recovery across restarts, Redis down / back / back empty, async backlog.

mod common;
use common::*;
use holdfast_gateway::config::{Persistence, ServeArgs};
use holdfast_gateway::journal::keys::HoldRecord;
use holdfast_gateway::privacy::{BuyerIdKey, BuyerNames};
use redis::AsyncCommands;
use serde_json::{Value, json};
use std::collections::HashMap;

fn redis_args(redis: &Redis, mode: Persistence) -> ServeArgs {
    let mut args = demo_args();
    args.redis = Some(redis.url());
    args.persistence = mode;
    args.journal.redis_timeout_ms = 400;
    // A fixed pseudonym key, so buyers are named the same after a restart.
    args.privacy.buyer_id_key = Some(BuyerIdKey::parse(BUYER_ID_KEY).unwrap());
    args
}

const BUYER_ID_KEY: &str = "000102030405060708090a0b0c0d0e0f";

/// What the order stream and `hf:buyers` say for buyer id `id`.
fn pseudonym(id: &str) -> String {
    BuyerNames::pseudonyms(&BuyerIdKey::parse(BUYER_ID_KEY).unwrap())
        .name(id)
        .to_string()
}

/// Starts a gateway that must refuse to start; its error chain as text.
async fn start_error(args: ServeArgs) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = holdfast_gateway::server::run(listener, args, Default::default())
        .await
        .expect_err("must refuse to start");
    format!("{err:#}")
}

async fn reserve(gw: &Gateway, sku: &str, buyer: &str) -> (u16, Value) {
    gw.call(
        "POST",
        "/api/reservations",
        Some(CHECKOUT),
        Some(json!({"sku": sku, "qty": 1, "buyer": buyer})),
    )
    .await
}

/// `POST /api/holds/{hold}/{action}` with an empty body (commit
/// everything, release): the status.
async fn hold_action(gw: &Gateway, hold: &str, action: &str) -> u16 {
    gw.call(
        "POST",
        &format!("/api/holds/{hold}/{action}"),
        Some(CHECKOUT),
        None,
    )
    .await
    .0
}

/// Redis's view of one SKU's counts.
async fn redis_counts(c: &mut redis::aio::MultiplexedConnection, sku: &str) -> (u32, u32, u32) {
    let h: HashMap<String, String> = c.hgetall(format!("hf:{{{sku}}}:sku")).await.unwrap();
    let n = |k: &str| h.get(k).map_or(u32::MAX, |v| v.parse().unwrap());
    (n("available"), n("held"), n("sold"))
}

async fn redis_holds(
    c: &mut redis::aio::MultiplexedConnection,
    sku: &str,
) -> HashMap<String, HoldRecord> {
    let h: HashMap<String, Vec<u8>> = c.hgetall(format!("hf:{{{sku}}}:holds")).await.unwrap();
    h.into_iter()
        .map(|(k, v)| (k, HoldRecord::decode(&v).unwrap()))
        .collect()
}

/// Redis matches the gateway's own view, SKU by SKU.
async fn assert_redis_matches(gw: &Gateway, c: &mut redis::aio::MultiplexedConnection) {
    let (_, list) = gw.get("/api/skus").await;
    for s in list["skus"].as_array().unwrap() {
        let id = s["id"].as_str().unwrap();
        let want = (
            s["available"].as_u64().unwrap() as u32,
            s["held"].as_u64().unwrap() as u32,
            s["sold"].as_u64().unwrap() as u32,
        );
        assert_eq!(redis_counts(c, id).await, want, "redis counts of {id}");
        let held: u32 = redis_holds(c, id).await.values().map(|r| r.qty).sum();
        assert_eq!(held, want.1, "redis hold records of {id} add up to held");
    }
}

/// Waits (bounded) until the journal has written everything.
async fn wait_persisted(gw: &Gateway, c: &mut redis::aio::MultiplexedConnection) {
    eventually("the journal catching up with every SKU's counts", || {
        let mut c = c.clone();
        async move {
            let (_, list) = gw.get("/api/skus").await;
            let mut same = true;
            for s in list["skus"].as_array().unwrap() {
                let id = s["id"].as_str().unwrap();
                let want = (
                    s["available"].as_u64().unwrap() as u32,
                    s["held"].as_u64().unwrap() as u32,
                    s["sold"].as_u64().unwrap() as u32,
                );
                same &= redis_counts(&mut c, id).await == want;
            }
            same.then_some(())
        }
    })
    .await
}

#[tokio::test]
async fn durable_acks_are_already_in_redis() {
    let Some(redis) = Redis::start() else { return };
    let gw = Gateway::start(redis_args(&redis, Persistence::Durable)).await;
    let mut c = redis.con().await;
    for i in 0..20 {
        let (status, body) = reserve(&gw, "tote-canvas", &format!("b{i}")).await;
        assert_eq!(status, 201, "{body}");
        let field = format!("{}:0", body["hold"].as_str().unwrap());
        assert!(
            redis_holds(&mut c, "tote-canvas")
                .await
                .contains_key(&field),
            "acknowledged means in Redis"
        );
    }
    let (_, r) = reserve(&gw, "runner-42", "payer").await;
    let hold = r["hold"].as_str().unwrap().to_string();
    assert_eq!(hold_action(&gw, &hold, "commit").await, 200);
    let orders = order_stream(&mut c).await;
    let order = orders
        .iter()
        .find(|o| o["event"] == "committed")
        .expect("the commit is in the order stream");
    assert_eq!(
        (
            order["hold"].as_str(),
            order["sku"].as_str(),
            order["buyer"].as_str()
        ),
        (hold.as_str(), "runner-42", pseudonym("payer").as_str())
    );
    assert_redis_matches(&gw, &mut c).await;
    gw.stop().await;
}

#[tokio::test]
async fn a_restart_recovers_counts_holds_limits_and_ids() {
    let Some(redis) = Redis::start() else { return };
    let gw = Gateway::start(redis_args(&redis, Persistence::Durable)).await;
    let cart = json!({"lines":[{"sku":"hoodie-sand","qty":2},{"sku":"cap-olive","qty":1}],"buyer":"ann","request_id":"cart-1"});
    let (status, held) = gw
        .call(
            "POST",
            "/api/reservations",
            Some(CHECKOUT),
            Some(cart.clone()),
        )
        .await;
    assert_eq!(status, 201, "{held}");
    let (_, sold) = reserve(&gw, "runner-42", "bob").await;
    let sold_hold = sold["hold"].as_str().unwrap().to_string();
    gw.call(
        "POST",
        &format!("/api/holds/{sold_hold}/commit"),
        Some(CHECKOUT),
        None,
    )
    .await;
    let before = gw.get("/api/skus").await.1;
    gw.stop().await;

    let gw = Gateway::start(redis_args(&redis, Persistence::Durable)).await;
    assert_eq!(
        gw.get("/api/skus").await.1["skus"],
        before["skus"],
        "counts and display data survive"
    );
    let hold = held["hold"].as_str().unwrap();
    let (_, view) = gw
        .call("GET", &format!("/api/holds/{hold}"), Some(CHECKOUT), None)
        .await;
    assert_eq!(view["state"], "held");
    assert_eq!(view["lines"].as_array().unwrap().len(), 2);
    // hoodie-sand allows 2 per buyer: ann's live hold still counts.
    let (status, body) = gw
        .call(
            "POST",
            "/api/reservations",
            Some(CHECKOUT),
            Some(json!({"sku":"hoodie-sand","qty":1,"buyer":"ann"})),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (429, Some("limit_exceeded"))
    );
    // runner-42 allows 1: bob's purchase still counts.
    let (status, _) = reserve(&gw, "runner-42", "bob").await;
    assert_eq!(status, 429);
    // The idempotent retry of the cart still answers with the first hold.
    let (status, again) = gw
        .call("POST", "/api/reservations", Some(CHECKOUT), Some(cart))
        .await;
    assert!(status == 200 || status == 201, "{again}");
    assert_eq!(
        again["hold"], held["hold"],
        "the retry answers with the first hold, remembered across the restart"
    );
    // The restored hold commits, and lands in the order stream.
    assert_eq!(hold_action(&gw, hold, "commit").await, 200);
    let mut c = redis.con().await;
    let orders = order_stream(&mut c).await;
    assert_eq!(
        orders
            .iter()
            .filter(|o| o.get("hold").map(String::as_str) == Some(hold))
            .count(),
        2
    );
    assert_redis_matches(&gw, &mut c).await;
    gw.stop().await;
}

#[tokio::test]
async fn holds_that_expired_during_downtime_expire_on_restart() {
    let Some(redis) = Redis::start() else { return };
    let gw = Gateway::start(redis_args(&redis, Persistence::Durable)).await;
    let (_, r) = reserve(&gw, "tee-black-m", "cat").await;
    let hold = r["hold"].as_str().unwrap().to_string();
    gw.stop().await;
    // Time passes while holdfast is down: the deadline is now in the past.
    let mut c = redis.con().await;
    let field = format!("{hold}:0");
    let bytes: Vec<u8> = c.hget("hf:{tee-black-m}:holds", &field).await.unwrap();
    let mut record = HoldRecord::decode(&bytes).unwrap();
    record.deadline_ms -= 10 * 60 * 1000;
    let _: () = c
        .hset("hf:{tee-black-m}:holds", &field, record.encode())
        .await
        .unwrap();

    let gw = Gateway::start(redis_args(&redis, Persistence::Durable)).await;
    eventually("the overdue hold expiring", || async {
        (gw.sku("tee-black-m").await["held"] == 0).then_some(())
    })
    .await;
    let (_, view) = gw
        .call("GET", &format!("/api/holds/{hold}"), Some(CHECKOUT), None)
        .await;
    assert_eq!(view["state"], "expired");
    wait_persisted(&gw, &mut c).await;
    assert!(redis_holds(&mut c, "tee-black-m").await.is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn durable_refuses_while_redis_is_down_and_recovers_by_itself() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let gw = Gateway::start(redis_args(&redis, Persistence::Durable)).await;
    let mut acked = Vec::new();
    for i in 0..10 {
        let (status, body) = reserve(&gw, "cap-olive", &format!("a{i}")).await;
        assert_eq!(status, 201);
        acked.push(body["hold"].as_str().unwrap().to_string());
    }
    redis.kill();
    // Until the journal notices, a request may wait for its write; either
    // way nobody gets a success that is not in Redis.
    let mut refused = 0;
    for i in 0..30 {
        let (status, body) = reserve(&gw, "cap-olive", &format!("down{i}")).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"], "unavailable");
        refused += 1;
    }
    assert_eq!(refused, 30);
    let ready = gw.http.get(gw.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(
        ready.headers()["retry-after"],
        "1",
        "a not-ready answer says when to ask again"
    );
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["error"], "not_ready", "{ready}");
    assert_eq!(
        gw.sku("cap-olive").await["held"],
        10,
        "refused reservations were undone in memory"
    );

    redis.start_again(); // empty: no persistence
    let recovered = eventually("a reservation after Redis came back", || async {
        let (status, body) = reserve(&gw, "cap-olive", "back").await;
        (status == 201).then_some(body)
    })
    .await;
    assert_eq!(recovered["units"], 1);
    assert_eq!(gw.get("/readyz").await.0, 200);
    // Redis came back empty: the journal re-wrote everything it had.
    let mut c = redis.con().await;
    wait_persisted(&gw, &mut c).await;
    let holds = redis_holds(&mut c, "cap-olive").await;
    for hold in &acked {
        assert!(
            holds.contains_key(&format!("{hold}:0")),
            "acknowledged hold {hold} survived"
        );
    }
    assert_redis_matches(&gw, &mut c).await;
    gw.stop().await;
}

/// A websocket buyer pipelining requests in durable mode: every answer it
/// gets is already in Redis; while Redis is paused its requests get error
/// frames once the journal's timeout passes (reservations undone in
/// memory), and the same socket works again once Redis answers.
#[tokio::test]
async fn durable_websocket_answers_wait_for_redis_and_refuse_when_it_stalls() {
    use holdfast_gateway::protocol::{ClientMsg, Commit, Reserve, ServerMsg};
    let Some(redis) = Redis::start() else { return };
    let mut args = redis_args(&redis, Persistence::Durable);
    // Pings far beyond the test's patience: the refusals below must come
    // from the Redis timeout (400 ms), not from the next ping's wake-up.
    args.limits.ping_interval_ms = 600_000;
    args.limits.idle_timeout_ms = 1_800_000;
    let gw = Gateway::start(args).await;
    let mut c = redis.con().await;
    let mut ws = Ws::connect(&gw, Some(CHECKOUT)).await;
    let reserve = |id: u64, buyer: String| {
        ClientMsg::Reserve(Reserve {
            id,
            sku: Some("tote-canvas".into()),
            qty: Some(1),
            lines: None,
            buyer,
            request_id: None,
            allow_partial: false,
            channel: None,
        })
    };
    // 24 requests in flight on one socket, answered as their batches land.
    for i in 0..24 {
        ws.send(&reserve(100 + i, format!("ws{i}"))).await;
    }
    let mut holds = Vec::new();
    while holds.len() < 24 {
        match ws.recv().await {
            ServerMsg::Reserved(r) => {
                let field = format!("{}:0", r.hold);
                assert!(
                    redis_holds(&mut c, "tote-canvas")
                        .await
                        .contains_key(&field),
                    "answer {} came before its hold was in Redis",
                    r.id
                );
                holds.push(r.hold);
            }
            other => panic!("expected reserved, got {other:?}"),
        }
    }
    let id = ws.id();
    ws.send(&ClientMsg::Commit(Commit {
        id,
        hold: holds[0].clone(),
        qty: None,
        lines: None,
        request_id: None,
    }))
    .await;
    match ws.recv().await {
        ServerMsg::Committed(done) => assert_eq!(done.id, id),
        other => panic!("expected committed, got {other:?}"),
    }
    assert!(
        order_stream(&mut c)
            .await
            .iter()
            .any(|o| o["event"] == "committed" && o["hold"] == holds[0]),
        "the commit was answered after its order reached the stream"
    );
    let held_before = gw.sku("tote-canvas").await["held"].as_u64().unwrap();

    // Redis stops answering: each request gets an error frame once the
    // journal's timeout (400 ms here) passes, and its units go back.
    signal(redis.pid(), "STOP");
    for i in 0..3 {
        ws.send(&reserve(200 + i, format!("stalled{i}"))).await;
    }
    let mut refused = Vec::new();
    while refused.len() < 3 {
        match ws.recv().await {
            ServerMsg::Error(e) => {
                assert_eq!(e.error.as_str(), "unavailable", "{e:?}");
                refused.push(e.id.expect("the request's id"));
            }
            other => panic!("expected an error frame, got {other:?}"),
        }
    }
    refused.sort_unstable();
    assert_eq!(refused, vec![200, 201, 202]);
    assert_eq!(
        gw.sku("tote-canvas").await["held"].as_u64().unwrap(),
        held_before,
        "refused reservations were undone in memory"
    );

    signal(redis.pid(), "CONT");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut n = 300;
    loop {
        ws.send(&reserve(n, "after".into())).await;
        match ws.recv().await {
            ServerMsg::Reserved(r) => {
                assert_eq!(r.id, n);
                break;
            }
            ServerMsg::Error(e) => assert_eq!(e.error.as_str(), "unavailable", "{e:?}"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(tokio::time::Instant::now() < deadline, "never recovered");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        n += 1;
    }
    wait_persisted(&gw, &mut c).await;
    assert_redis_matches(&gw, &mut c).await;
    gw.stop().await;
}

/// `rediss://` with a private CA (`--redis-ca-file`): the journal talks TLS,
/// acknowledged reservations are in Redis; without the CA the gateway
/// refuses to start with a clear error rather than talk in the clear.
#[tokio::test]
async fn a_tls_redis_with_a_private_ca_is_trusted_via_the_ca_file() {
    let Some(redis) = Redis::start_tls() else {
        return;
    };
    let ca = redis.tls_ca.clone().expect("a TLS server has a CA");
    let mut args = redis_args(&redis, Persistence::Durable);
    args.redis_ca_file = Some(ca.clone());
    let gw = Gateway::start(args).await;
    let (status, body) = reserve(&gw, "tote-canvas", "tls-buyer").await;
    assert_eq!(status, 201, "{body}");
    let pem = std::fs::read(&ca).unwrap();
    let client = redis::Client::build_with_tls(
        redis.url(),
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem),
        },
    )
    .unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let field = format!("{}:0", body["hold"].as_str().unwrap());
    assert!(
        redis_holds(&mut c, "tote-canvas")
            .await
            .contains_key(&field)
    );
    assert_redis_matches(&gw, &mut c).await;
    gw.stop().await;

    // The system trust store does not know this CA: no silent fallback.
    let text = start_error(redis_args(&redis, Persistence::Durable)).await;
    assert!(text.contains("cannot connect to Redis"), "{text}");
}

#[tokio::test]
async fn a_paused_redis_is_waited_for_not_skipped() {
    let Some(redis) = Redis::start() else { return };
    let gw = Gateway::start(redis_args(&redis, Persistence::Durable)).await;
    // SIGSTOP: Redis keeps its data but stops answering.
    let pid = redis.pid();
    signal(pid, "STOP");
    let (status, body) = reserve(&gw, "tote-canvas", "p1").await;
    assert_eq!(status, 503, "{body}");
    signal(pid, "CONT");
    eventually("a reservation after Redis resumed", || async {
        (reserve(&gw, "tote-canvas", "p2").await.0 == 201).then_some(())
    })
    .await;
    let mut c = redis.con().await;
    wait_persisted(&gw, &mut c).await;
    assert_redis_matches(&gw, &mut c).await;
    gw.stop().await;
}

#[tokio::test]
async fn async_mode_bounds_its_backlog_and_drains_it() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let mut args = redis_args(&redis, Persistence::Async);
    args.journal.backlog_max = 50;
    let gw = Gateway::start(args).await;
    redis.kill();
    let (mut ok, mut refused) = (0, 0);
    for i in 0..200 {
        match reserve(&gw, "tote-canvas", &format!("q{i}")).await {
            (201, _) => ok += 1,
            (503, body) => {
                assert_eq!(body["error"], "unavailable");
                refused += 1;
            }
            (s, body) => panic!("{s} {body}"),
        }
    }
    // One event per reserve, refused once more than 50 are unwritten: the
    // 51st is the last one admitted, however the journal batches them.
    assert!(
        ok > 0 && ok <= 51,
        "acked from memory up to the bound, got {ok}"
    );
    assert!(refused > 0, "refused past the bound");
    redis.start_again();
    let mut c = redis.con().await;
    wait_persisted(&gw, &mut c).await;
    assert_redis_matches(&gw, &mut c).await;
    assert_eq!(gw.sku("tote-canvas").await["held"], ok);
    gw.stop().await;
}

#[tokio::test]
async fn redis_restarted_empty_while_idle_is_rewritten() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let gw = Gateway::start(redis_args(&redis, Persistence::Durable)).await;
    for i in 0..5 {
        assert_eq!(reserve(&gw, "hoodie-sand", &format!("e{i}")).await.0, 201);
    }
    redis.start_again();
    let mut c = redis.con().await;
    wait_persisted(&gw, &mut c).await;
    assert_redis_matches(&gw, &mut c).await;
    let journal: HashMap<String, String> = c.hgetall("hf:journal").await.unwrap();
    assert!(journal.contains_key("hash_key") && journal.contains_key("incarnation"));
    gw.stop().await;
    // And a restart on the re-written Redis recovers the same state.
    let gw = Gateway::start(redis_args(&redis, Persistence::Durable)).await;
    assert_eq!(gw.sku("hoodie-sand").await["held"], 5);
    gw.stop().await;
}

#[tokio::test]
async fn an_inconsistent_redis_is_refused_with_a_report() {
    let Some(redis) = Redis::start() else { return };
    let gw = Gateway::start(redis_args(&redis, Persistence::Durable)).await;
    assert_eq!(reserve(&gw, "hoodie-sand", "x").await.0, 201);
    gw.stop().await;
    let mut c = redis.con().await;
    let _: () = c.hset("hf:{hoodie-sand}:sku", "held", 7).await.unwrap();
    let _: () = c
        .hset("hf:{hoodie-sand}:sku", "available", 33)
        .await
        .unwrap();
    let text = start_error(redis_args(&redis, Persistence::Durable)).await;
    assert!(
        text.contains("held is 7 but its live holds add up to 1"),
        "{text}"
    );
}

/// Sends a signal by name (`STOP`, `CONT`) with kill(1).
fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}

#[tokio::test]
async fn a_password_in_the_url_authenticates_and_a_wrong_one_is_a_clear_error() {
    let Some(redis) = Redis::start_with_password("s3cret-pw") else {
        return;
    };
    let gw = Gateway::start(redis_args(&redis, Persistence::Durable)).await;
    assert_eq!(reserve(&gw, "tote-canvas", "pw").await.0, 201);
    gw.stop().await;
    let mut args = redis_args(&redis, Persistence::Durable);
    args.redis = Some(format!("redis://:wrong-pw@127.0.0.1:{}", redis.port));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = holdfast_gateway::server::run(listener, args, Default::default())
        .await
        .expect_err("bad password");
    let text = format!("{err:#}");
    assert!(text.contains("redis://***@127.0.0.1"), "{text}");
    assert!(
        !text.contains("wrong-pw"),
        "the password never appears in errors: {text}"
    );
}

#[tokio::test]
async fn data_lost_under_a_live_connection_is_rewritten_on_the_next_batch() {
    let Some(redis) = Redis::start() else { return };
    let gw = Gateway::start(redis_args(&redis, Persistence::Durable)).await;
    let mut holds = Vec::new();
    for i in 0..5 {
        let (status, body) = reserve(&gw, "hoodie-sand", &format!("f{i}")).await;
        assert_eq!(status, 201);
        holds.push(body["hold"].as_str().unwrap().to_string());
    }
    // Someone wipes Redis while the journal's connection stays up: the next
    // batch (a commit) lands on nothing, sees it, and re-writes the whole
    // state. Its order was in that batch: it must be in the stream once.
    let mut c = redis.con().await;
    let _: () = redis::cmd("FLUSHALL").query_async(&mut c).await.unwrap();
    assert_eq!(hold_action(&gw, &holds[0], "commit").await, 200);
    assert_eq!(reserve(&gw, "hoodie-sand", "after").await.0, 201);
    wait_persisted(&gw, &mut c).await;
    assert_redis_matches(&gw, &mut c).await;
    assert_eq!(redis_holds(&mut c, "hoodie-sand").await.len(), 5);
    let committed: Vec<_> = order_stream(&mut c)
        .await
        .into_iter()
        .filter(|o| o["event"] == "committed" && o["hold"] == holds[0])
        .collect();
    assert_eq!(
        committed.len(),
        1,
        "the order once, not re-added: {committed:?}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn redis_rolled_back_to_an_older_copy_is_rewritten_without_stale_holds() {
    let Some(redis) = Redis::start() else { return };
    let gw = Gateway::start(redis_args(&redis, Persistence::Durable)).await;
    let (_, first) = reserve(&gw, "tee-black-m", "old-1").await;
    assert_eq!(reserve(&gw, "tee-black-m", "old-2").await.0, 201);
    let mut c = redis.con().await;
    wait_persisted(&gw, &mut c).await;
    // A copy of Redis as it is now: two live holds, journal at this seq.
    let keys = [
        "hf:journal",
        "hf:{tee-black-m}:holds",
        "hf:{tee-black-m}:sku",
    ];
    let mut copy = Vec::new();
    for key in keys {
        let dump: Vec<u8> = redis::cmd("DUMP")
            .arg(key)
            .query_async(&mut c)
            .await
            .unwrap();
        copy.push((key, dump));
    }
    // The first hold ends and another starts...
    let hold = first["hold"].as_str().unwrap();
    assert_eq!(hold_action(&gw, hold, "release").await, 200);
    assert_eq!(reserve(&gw, "tee-black-m", "new-1").await.0, 201);
    wait_persisted(&gw, &mut c).await;
    // ...then Redis is put back to the older copy under the live journal.
    for (key, dump) in &copy {
        let _: () = redis::cmd("RESTORE")
            .arg(*key)
            .arg(0)
            .arg(dump.as_slice())
            .arg("REPLACE")
            .query_async(&mut c)
            .await
            .unwrap();
    }
    assert_eq!(reserve(&gw, "tee-black-m", "new-2").await.0, 201);
    wait_persisted(&gw, &mut c).await;
    assert_redis_matches(&gw, &mut c).await;
    let holds = redis_holds(&mut c, "tee-black-m").await;
    assert_eq!(holds.len(), 3, "the released hold is gone: {holds:?}");
    assert!(
        holds.keys().all(|field| !field.starts_with(hold)),
        "no record of the released hold {hold}: {holds:?}"
    );
    gw.stop().await;
    // And the re-written state is one a restart accepts.
    let gw = Gateway::start(redis_args(&redis, Persistence::Durable)).await;
    assert_redis_matches(&gw, &mut c).await;
    gw.stop().await;
}

#[tokio::test]
async fn the_order_stream_is_capped_near_orders_maxlen() {
    let Some(redis) = Redis::start() else { return };
    let mut c = redis.con().await;
    // Small stream nodes, so approximate trimming (whole nodes) shows on a
    // few dozen entries.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("stream-node-max-entries")
        .arg(4)
        .query_async(&mut c)
        .await
        .unwrap();
    let mut args = redis_args(&redis, Persistence::Durable);
    args.journal.orders_maxlen = 8;
    let gw = Gateway::start(args).await;
    for i in 0..60 {
        let (status, body) = reserve(&gw, "tote-canvas", &format!("m{i}")).await;
        assert_eq!(status, 201, "{body}");
        let hold = body["hold"].as_str().unwrap();
        assert_eq!(hold_action(&gw, hold, "commit").await, 200);
    }
    let len: usize = c.xlen("hf:orders").await.unwrap();
    assert!(
        (8..=8 + 4).contains(&len),
        "60 orders, cap ~8 in nodes of 4: {len} entries kept"
    );
    // The newest order is among those kept.
    let newest = order_stream(&mut c).await;
    assert_eq!(newest.last().unwrap()["buyer"], pseudonym("m59"));
    gw.stop().await;
}

/// Ended holds stay findable across a restart (for the retention window):
/// `GET /api/holds/{id}` shows how each ended, and a repeated commit,
/// release or extend answers with that ending over HTTP and the websocket,
/// never `hold_not_found`.
#[tokio::test]
async fn ended_holds_are_findable_after_a_restart() {
    use holdfast_gateway::protocol::{ClientMsg, Commit, ServerMsg};
    let Some(redis) = Redis::start() else { return };
    let gw = Gateway::start(redis_args(&redis, Persistence::Durable)).await;
    gw.create_sku(
        json!({"id": "flash", "total": 10, "hold_ttl_ms": 1_000, "window": {"state": "open"}}),
    )
    .await;
    let mut holds = Vec::new();
    for buyer in ["paid", "gave-up", "walked-away"] {
        let (status, body) = reserve(&gw, "flash", buyer).await;
        assert_eq!(status, 201, "{body}");
        holds.push(body["hold"].as_str().unwrap().to_string());
    }
    let (paid, released, expired) = (&holds[0], &holds[1], &holds[2]);
    assert_eq!(hold_action(&gw, paid, "commit").await, 200);
    assert_eq!(hold_action(&gw, released, "release").await, 200);
    // The third expires (its own short TTL): wait for the observable end.
    eventually("the short-TTL hold expiring", || async {
        let path = format!("/api/holds/{expired}");
        let (_, view) = gw.call("GET", &path, Some(CHECKOUT), None).await;
        (view["state"] == "expired").then_some(())
    })
    .await;
    let mut c = redis.con().await;
    wait_persisted(&gw, &mut c).await;
    gw.stop().await;

    let gw = Gateway::start(redis_args(&redis, Persistence::Durable)).await;
    for (hold, state, sold, refusal) in [
        (paid, "committed", 1, "already_committed"),
        (released, "released", 0, "already_released"),
        (expired, "expired", 0, "hold_expired"),
    ] {
        let (status, view) = gw
            .call("GET", &format!("/api/holds/{hold}"), Some(CHECKOUT), None)
            .await;
        assert_eq!(status, 200, "{hold}: {view}");
        assert_eq!(view["state"], state, "{view}");
        assert_eq!(view["lines"][0]["sku"], "flash", "{view}");
        assert_eq!(view["lines"][0]["qty"], 1, "{view}");
        assert_eq!(view["lines"][0]["sold"], sold, "{view}");
        for action in ["commit", "release"] {
            let (status, body) = gw
                .call(
                    "POST",
                    &format!("/api/holds/{hold}/{action}"),
                    Some(CHECKOUT),
                    None,
                )
                .await;
            assert_eq!(
                (status, body["error"].as_str()),
                (409, Some(refusal)),
                "{action} {hold}: {body}"
            );
        }
    }
    // The websocket answers the same.
    let mut ws = Ws::connect(&gw, Some(CHECKOUT)).await;
    let id = ws.id();
    ws.send(&ClientMsg::Commit(Commit {
        id,
        hold: paid.clone(),
        qty: None,
        lines: None,
        request_id: None,
    }))
    .await;
    match ws.recv().await {
        ServerMsg::Error(e) => {
            assert_eq!((e.id, e.error.as_str()), (Some(id), "already_committed"))
        }
        other => panic!("expected an error frame, got {other:?}"),
    }
    // A hold that never existed is still unknown.
    let (status, body) = gw
        .call("GET", "/api/holds/00000000000000ff", Some(CHECKOUT), None)
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("hold_not_found")),
        "{body}"
    );
    gw.stop().await;
}

/// Polls the gateway's own counts until `sku` holds `held` units.
async fn wait_held(gw: &Gateway, sku: &str, held: u64) {
    eventually(&format!("{sku} holding {held}"), || async {
        (gw.sku(sku).await["held"].as_u64() == Some(held)).then_some(())
    })
    .await;
}

/// A retried reservation (same request id) is never acknowledged before
/// the write of the original it repeats is durable, and fails with it:
/// Redis paused, the original waits, the replay waits too, both are
/// refused, the units go back, and after a restart the request id runs
/// afresh instead of replaying the undone hold.
#[tokio::test]
async fn a_replay_waits_for_its_original_and_fails_with_it() {
    let Some(redis) = Redis::start() else { return };
    let gw = Gateway::start(redis_args(&redis, Persistence::Durable)).await;
    let held_before = gw.sku("cap-olive").await["held"].as_u64().unwrap();
    let body = json!({"sku": "cap-olive", "qty": 1, "buyer": "retrier", "request_id": "R-1"});
    signal(redis.pid(), "STOP");
    let first = {
        let (http, url, body) = (gw.http.clone(), gw.url("/api/reservations"), body.clone());
        tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(CHECKOUT)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        })
    };
    // The original is applied in memory and waits for Redis; now the
    // client's retry arrives.
    wait_held(&gw, "cap-olive", held_before + 1).await;
    let (status, replay) = gw
        .call(
            "POST",
            "/api/reservations",
            Some(CHECKOUT),
            Some(body.clone()),
        )
        .await;
    assert_eq!(
        (status, replay["error"].as_str()),
        (503, Some("unavailable")),
        "a replay was answered while its original is not in Redis: {replay}"
    );
    let (status, original) = first.await.unwrap();
    assert_eq!(status, 503, "{original}");
    assert_eq!(
        gw.sku("cap-olive").await["held"].as_u64(),
        Some(held_before),
        "the refused reservation was undone"
    );
    signal(redis.pid(), "CONT");
    let mut c = redis.con().await;
    wait_persisted(&gw, &mut c).await;
    gw.stop().await;

    // After a restart the request id is not a replay of the undone hold.
    let gw = Gateway::start(redis_args(&redis, Persistence::Durable)).await;
    let (status, fresh) = gw
        .call("POST", "/api/reservations", Some(CHECKOUT), Some(body))
        .await;
    assert_eq!(status, 201, "{fresh}");
    assert_eq!(fresh["replayed"], false, "{fresh}");
    let hold = fresh["hold"].as_str().unwrap();
    assert_eq!(
        gw.call("GET", &format!("/api/holds/{hold}"), Some(CHECKOUT), None)
            .await
            .1["state"],
        "held"
    );
    gw.stop().await;
}

/// The same over the websocket: a replay pipelined behind its original
/// gets an error frame, not a `reserved`, while Redis does not answer.
#[tokio::test]
async fn a_websocket_replay_is_not_acknowledged_before_its_original() {
    use holdfast_gateway::protocol::{ClientMsg, Reserve, ServerMsg};
    let Some(redis) = Redis::start() else { return };
    let gw = Gateway::start(redis_args(&redis, Persistence::Durable)).await;
    let mut ws = Ws::connect(&gw, Some(CHECKOUT)).await;
    let reserve = |id: u64| {
        ClientMsg::Reserve(Reserve {
            id,
            sku: Some("tote-canvas".into()),
            qty: Some(1),
            lines: None,
            buyer: "ws-retrier".into(),
            request_id: Some("R-ws".into()),
            allow_partial: false,
            channel: None,
        })
    };
    signal(redis.pid(), "STOP");
    ws.send(&reserve(1)).await;
    ws.send(&reserve(2)).await;
    for want in [1, 2] {
        match ws.recv().await {
            ServerMsg::Error(e) => {
                assert_eq!(
                    (e.id, e.error.as_str()),
                    (Some(want), "unavailable"),
                    "{e:?}"
                )
            }
            other => panic!("request {want} answered while Redis is paused: {other:?}"),
        }
    }
    signal(redis.pid(), "CONT");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut id = 3;
    loop {
        ws.send(&reserve(id)).await;
        match ws.recv().await {
            ServerMsg::Reserved(r) => {
                assert!(!r.replayed, "the undone reservation is not replayed: {r:?}");
                break;
            }
            ServerMsg::Error(e) => assert_eq!(e.error.as_str(), "unavailable", "{e:?}"),
            other => panic!("{other:?}"),
        }
        assert!(tokio::time::Instant::now() < deadline, "never recovered");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        id += 1;
    }
    gw.stop().await;
}

/// A retried commit is answered only once the commit it repeats is in
/// Redis (a commit is never undone: it lands when Redis is back).
#[tokio::test]
async fn a_commit_replay_waits_for_the_commit_to_land() {
    let Some(redis) = Redis::start() else { return };
    let gw = Gateway::start(redis_args(&redis, Persistence::Durable)).await;
    let (status, r) = reserve(&gw, "tote-canvas", "payer").await;
    assert_eq!(status, 201, "{r}");
    let hold = r["hold"].as_str().unwrap().to_string();
    let path = format!("/api/holds/{hold}/commit");
    let body = json!({"request_id": "C-1"});
    let sold_before = gw.sku("tote-canvas").await["sold"].as_u64().unwrap();
    signal(redis.pid(), "STOP");
    let first = {
        let (http, url, body) = (gw.http.clone(), gw.url(&path), body.clone());
        tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(CHECKOUT)
                .json(&body)
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        })
    };
    // The commit is applied in memory and waits for Redis; the client's
    // retry arrives meanwhile and must wait too.
    eventually("the commit applied in memory", || async {
        (gw.sku("tote-canvas").await["sold"].as_u64() == Some(sold_before + 1)).then_some(())
    })
    .await;
    let (status, again) = gw
        .call("POST", &path, Some(CHECKOUT), Some(body.clone()))
        .await;
    assert_eq!(
        status, 503,
        "acknowledged before the commit was in Redis: {again}"
    );
    assert_eq!(first.await.unwrap(), 503);
    signal(redis.pid(), "CONT");
    let mut c = redis.con().await;
    let done = eventually(
        "the commit replay answered after Redis came back",
        || async {
            let (status, done) = gw
                .call("POST", &path, Some(CHECKOUT), Some(body.clone()))
                .await;
            if status == 200 {
                return Some(done);
            }
            assert_eq!(status, 503, "{done}");
            None
        },
    )
    .await;
    assert_eq!(done["replayed"], true, "{done}");
    assert!(
        order_stream(&mut c).await.iter().any(|o| o["hold"] == hold),
        "answered before its order reached the stream"
    );
    gw.stop().await;
}
