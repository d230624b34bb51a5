//! Crash safety with real processes: the `holdfast` binary is killed with
//! SIGKILL in the middle of a reservation burst (durable mode) and started
//! again on the same Redis. Every reservation and commit a client saw
//! acknowledged must be there, nothing oversold, counts consistent.

mod common;
use common::*;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use tokio::sync::Mutex;

struct Proc {
    child: std::sync::Mutex<Child>,
    base: String,
    http: reqwest::Client,
}

/// A failed assertion must not leave a gateway running.
impl Drop for Proc {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        holdfast_testkit::stop_child(child, std::time::Duration::ZERO);
    }
}

impl Proc {
    async fn start(redis: &Redis) -> Self {
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_holdfast"));
        cmd.args([
            "serve",
            "--demo",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--redis",
            &redis.url(),
        ])
        .args(["--persistence", "durable"])
        // One async worker: the flag builds the runtime it names, and
        // the crash-recovery guarantees hold on any worker count.
        .args(["--workers", "1"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        // Dies with this test process however it ends.
        let child = holdfast_testkit::spawn_owned(cmd).expect("start holdfast");
        let p = Self {
            child: std::sync::Mutex::new(child),
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        eventually("holdfast's /readyz", || async {
            match p.http.get(format!("{}/readyz", p.base)).send().await {
                Ok(r) if r.status() == 200 => Some(()),
                _ => None,
            }
        })
        .await;
        p
    }

    async fn post(&self, path: &str, body: Value) -> Result<(u16, Value), reqwest::Error> {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(CHECKOUT)
            .json(&body)
            .send()
            .await?;
        let status = r.status().as_u16();
        Ok((status, r.json().await.unwrap_or(Value::Null)))
    }

    /// SIGKILL (std's `Child::kill` sends SIGKILL on Unix).
    fn kill(&self) {
        let mut child = self.child.lock().unwrap();
        child.kill().expect("SIGKILL holdfast");
        let _ = child.wait();
    }

    async fn get(&self, path: &str) -> Value {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(CHECKOUT)
            .send()
            .await
            .unwrap();
        r.json().await.unwrap()
    }
}

#[derive(Default)]
struct Seen {
    /// hold -> (sku, request body), for every reservation acknowledged with 201.
    reserved: HashMap<String, (String, Value)>,
    /// holds whose commit was acknowledged.
    committed: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_burst_loses_no_acknowledged_reservation() {
    let Some(redis) = Redis::start() else { return };
    let first = Arc::new(Proc::start(&redis).await);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let acks = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..24)
        .map(|c| {
            let (first, seen, acks, stop) = (first.clone(), seen.clone(), acks.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    // Mostly a deep SKU; every 4th try the scarce drop.
                    let sku = if n % 4 == 0 { "runner-42" } else { "tote-canvas" };
                    let body = json!({"sku": sku, "qty": 1, "buyer": format!("c{c}-{n}"), "request_id": format!("r{c}-{n}")});
                    let Ok((status, r)) = first.post("/api/reservations", body.clone()).await else { break };
                    if status != 201 {
                        continue;
                    }
                    let hold = r["hold"].as_str().unwrap().to_string();
                    seen.lock().await.reserved.insert(hold.clone(), (sku.to_string(), body));
                    acks.fetch_add(1, Ordering::Relaxed);
                    if n % 2 == 0 {
                        let Ok((status, _)) = first.post(&format!("/api/holds/{hold}/commit"), json!({})).await else {
                            break;
                        };
                        if status == 200 {
                            seen.lock().await.committed.push(hold);
                        }
                    }
                }
            })
        })
        .collect();
    // Kill it mid-burst: once a few hundred acknowledgements are out and
    // the clients are still firing.
    wait_for_count("300 acknowledged reservations", &acks, 300).await;
    first.kill();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let seen = std::mem::take(&mut *seen.lock().await);
    assert!(seen.reserved.len() >= 300);

    let second = Proc::start(&redis).await;
    // Committed holds are in the order stream (the engine keeps only live
    // holds across a restart).
    let ordered = committed_holds(&mut redis.con().await).await;
    for hold in &seen.committed {
        assert!(
            ordered.contains(hold),
            "acknowledged commit of {hold} is in the order stream"
        );
        // And still findable by id: a checkout that retries the commit of a
        // paid order learns it is committed, not that the hold is unknown.
        let view = second.get(&format!("/api/holds/{hold}")).await;
        assert_eq!(view["state"], "committed", "{hold} after the crash: {view}");
        assert_eq!(view["lines"][0]["sold"], 1, "{view}");
        let (status, again) = second
            .post(&format!("/api/holds/{hold}/commit"), json!({}))
            .await
            .unwrap();
        assert_eq!(
            (status, again["error"].as_str()),
            (409, Some("already_committed")),
            "{again}"
        );
    }
    for (hold, (sku, _)) in &seen.reserved {
        if ordered.contains(hold) {
            continue;
        }
        let view = second.get(&format!("/api/holds/{hold}")).await;
        assert_eq!(
            view["state"], "held",
            "acknowledged hold {hold} on {sku} after the crash: {view}"
        );
    }
    let list = second.get("/api/skus").await;
    for s in list["skus"].as_array().unwrap() {
        let (a, h, so, t) = (
            s["available"].as_u64().unwrap(),
            s["held"].as_u64().unwrap(),
            s["sold"].as_u64().unwrap(),
            s["total"].as_u64().unwrap(),
        );
        assert_eq!(a + h + so, t, "invariant after the crash: {s}");
        let acked = seen
            .reserved
            .values()
            .filter(|(k, _)| k == s["id"].as_str().unwrap())
            .count() as u64;
        assert!(
            h + so >= acked,
            "{}: {acked} acknowledged but only {} held or sold",
            s["id"],
            h + so
        );
    }
    let runner = list["skus"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "runner-42")
        .unwrap();
    assert!(
        runner["held"].as_u64().unwrap() + runner["sold"].as_u64().unwrap() <= 12,
        "never oversold: {runner}"
    );
    // A client retrying an acknowledged reservation after the crash (same
    // request id) gets the first answer, not a second hold.
    for (hold, (_, body)) in seen.reserved.iter().take(20) {
        let (status, again) = second
            .post("/api/reservations", body.clone())
            .await
            .unwrap();
        assert_eq!(
            (status, again["hold"].as_str()),
            (200, Some(hold.as_str())),
            "{again}"
        );
        assert_eq!(again["replayed"], true);
    }
    second.kill();
}
