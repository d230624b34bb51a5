//! The durable journal with two batches on the wire (single Redis), against
//! a real `redis-server` that stops answering. Alone in its test binary:
//! the Prometheus recorder is one per process, so the in-flight gauge it
//! waits for is its own gateway's.

mod common;
use common::*;
use holdfast_gateway::config::Persistence;
use redis::AsyncCommands;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;

/// One sample of `/metrics` (`None` until it is first set).
async fn metric(gw: &Gateway, series: &str) -> Option<f64> {
    let text = gw
        .http
        .get(gw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(name, _)| *name == series)
        .and_then(|(_, v)| v.parse().ok())
}

/// Waits (bounded) until `series` reads a value that passes `ok`.
async fn wait_metric(gw: &Gateway, series: &str, ok: impl Fn(f64) -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let got = metric(gw, series).await;
        if got.is_some_and(&ok) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} never read what was waited for (reads {got:?})"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Sends `signal` to `pid` (a redis-server child of this process).
fn signal(pid: u32, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(pid).unwrap();
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is a
    // child this test has not reaped, so it cannot name another process.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
}

/// SIGSTOP, returning once every thread of `pid` is stopped (kill(2)
/// returns before a thread on the other core stops).
fn stop(pid: u32) {
    signal(pid, libc::SIGSTOP);
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let stopped = std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .filter_map(Result::ok)
            .all(|t| {
                std::fs::read_to_string(t.path().join("stat")).is_ok_and(|s| {
                    s.rsplit_once(") ")
                        .is_some_and(|(_, rest)| rest.starts_with(['T', 't']))
                })
            });
        if stopped {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{pid} never stopped");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Redis stops while one batch is on the wire and a second goes out behind
/// it: neither change is acknowledged (both requests are refused once the
/// journal's timeout passes), the batch timeout drops the connection, and
/// when Redis resumes it executes both late. The journal then finds both
/// landed rather than writing them again (each commit is in the order
/// stream exactly once), and the hold acknowledged before the stall is
/// still held, in memory and in Redis.
#[tokio::test]
async fn two_batches_on_the_wire_when_redis_stalls_are_neither_acknowledged_nor_written_twice() {
    let Some(redis) = Redis::start() else { return };
    let mut args = demo_args();
    args.redis = Some(redis.url());
    args.persistence = Persistence::Durable;
    // Long enough for the second commit to join the first batch on the
    // wire (the first batch's reply times out after this), short enough
    // for a test.
    args.journal.redis_timeout_ms = 3_000;
    let gw = Gateway::start(args).await;
    let mut c = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut holds = Vec::new();
    const IN_FLIGHT: &str = "holdfast_journal_batches_in_flight";
    for buyer in ["kept", "first", "second"] {
        if buyer == "second" {
            // Pipelined batches so far (none on the wire now).
            wait_metric(&gw, IN_FLIGHT, |n| n == 0.0).await;
        }
        let body = json!({"sku": "tote-canvas", "qty": 1, "buyer": buyer});
        let (status, r) = gw
            .call("POST", "/api/reservations", Some(CHECKOUT), Some(body))
            .await;
        assert_eq!(status, 201, "{r}");
        holds.push(r["hold"].as_str().unwrap().to_string());
    }
    let g = &gw;
    let commit = |hold: &str| {
        let path = format!("/api/holds/{hold}/commit");
        async move { g.call("POST", &path, Some(CHECKOUT), None).await }
    };

    // Right after a batch landed, so the idle journal's health check (it
    // would find Redis stopped and drop the connection) is not due yet.
    stop(redis.pid());
    // The first commit's batch goes out at once (the journal is idle), or
    // behind a statistics-only batch that left just before; the second
    // commit follows once something is on the wire. Two batches end up on
    // the wire together either way.
    let first = commit(&holds[1]);
    let second = async {
        wait_metric(&gw, IN_FLIGHT, |n| n >= 1.0).await;
        commit(&holds[2]).await
    };
    let both = wait_metric(&gw, IN_FLIGHT, |n| n == 2.0);
    let ((s1, r1), (s2, r2), ()) = tokio::join!(first, second, both);
    assert_eq!(
        (s1, s2),
        (503, 503),
        "{r1} {r2}: not in Redis, not acknowledged"
    );
    // The batch timeout drops the connection with both batches on it.
    wait_metric(&gw, "holdfast_redis_up", |up| up == 0.0).await;
    signal(redis.pid(), libc::SIGCONT);

    // Everything lands, once.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let sku = gw.sku("tote-canvas").await;
        let h: HashMap<String, String> = c.hgetall("hf:{tote-canvas}:sku").await.unwrap();
        let redis_sold = h.get("sold").map(String::as_str);
        if sku["sold"] == json!(2) && redis_sold == Some("2") {
            assert_eq!(
                sku["held"],
                json!(1),
                "the acknowledged hold was not undone"
            );
            assert_eq!(h.get("held").map(String::as_str), Some("1"));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never landed: {sku} {h:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let kept: HashMap<String, Vec<u8>> = c.hgetall("hf:{tote-canvas}:holds").await.unwrap();
    assert!(kept.contains_key(&format!("{}:0", holds[0])), "{kept:?}");
    let orders: redis::streams::StreamRangeReply = c.xrange_all("hf:orders").await.unwrap();
    for hold in &holds[1..] {
        let entries = orders
            .ids
            .iter()
            .filter(|e| {
                e.get::<String>("event").as_deref() == Some("committed")
                    && e.get::<String>("hold").as_deref() == Some(hold.as_str())
            })
            .count();
        assert_eq!(entries, 1, "commit of {hold} in the order stream once");
    }
    let (status, _): (u16, Value) = gw
        .call(
            "POST",
            &format!("/api/holds/{}/commit", holds[0]),
            Some(CHECKOUT),
            None,
        )
        .await;
    assert_eq!(status, 200, "the journal carries on afterwards");
    gw.stop().await;
}
