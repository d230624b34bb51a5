//! Several real `holdfast` processes over a real Redis Cluster (3 masters,
//! 3 replicas): the race for the last units, a node killed or paused past
//! its lease, an epoch bumped between two journal batches, the master of
//! the hot SKU's slot killed under load, and the start-up refusals. Every test asserts what clients saw against what the
//! cluster holds.

mod common;
use common::cluster::{HoldfastNode, RedisCluster};
use common::*;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::Mutex;

/// A short node lease, so failures show within a test's patience.
const NODE_TTL_MS: &str = "1500";
/// Longer than a Redis failover (~2 s here): a node whose ownership key's
/// master fails over is not taken for dead.
const NODE_TTL_FAILOVER_MS: &str = "8000";

fn args() -> Vec<&'static str> {
    vec![
        "--node-ttl-ms",
        NODE_TTL_MS,
        "--broadcast-interval-ms",
        "20",
    ]
}

async fn post(http: &reqwest::Client, url: String, body: Value, token: &str) -> (u16, Value) {
    match http.post(url).bearer_auth(token).json(&body).send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.json().await.unwrap_or(Value::Null))
        }
        Err(e) => (0, json!({"error": "transport", "message": e.to_string()})),
    }
}

async fn get(http: &reqwest::Client, url: String) -> (u16, Value) {
    match http.get(url).bearer_auth(CHECKOUT).send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.json().await.unwrap_or(Value::Null))
        }
        Err(e) => (0, json!({"error": e.to_string()})),
    }
}

fn counts(v: &Value) -> (u64, u64, u64, u64) {
    let n = |k: &str| v[k].as_u64().unwrap_or(u64::MAX);
    (n("available"), n("held"), n("sold"), n("total"))
}

/// The pool and every node's lease of a SKU, from Redis: `(pool, Σ granted
/// - returned, total)`.
fn ledger(cluster: &RedisCluster, sku: &str) -> (u64, u64, u64) {
    // One script, so the pool and the leases are read at one instant.
    const READ: &str = "local d = redis.call('HMGET', KEYS[1], 'pool', 'total') \
        local l = redis.call('HGETALL', KEYS[2]) local leased = 0 \
        for i = 1, #l, 2 do local f = l[i] \
          if string.sub(f, -2) == ':g' then leased = leased + tonumber(l[i + 1]) end \
          if string.sub(f, -2) == ':r' then leased = leased - tonumber(l[i + 1]) end end \
        return {tonumber(d[1]) or 0, leased, tonumber(d[2]) or 0}";
    let def = format!("hf:{{sku:{sku}}}:def");
    let port = cluster.master_of_key(&def);
    let out = cluster.cli(
        port,
        &["EVAL", READ, "2", &def, &format!("hf:{{sku:{sku}}}:lease")],
    );
    let mut v = out.lines().map(|l| l.trim().parse::<i64>().unwrap_or(-1));
    let (pool, leased, total) = (
        v.next().unwrap_or(-1),
        v.next().unwrap_or(-1),
        v.next().unwrap_or(-1),
    );
    assert!(
        pool >= 0 && leased >= 0 && total >= 0,
        "ledger of {sku}: {out}"
    );
    (pool as u64, leased as u64, total as u64)
}

async fn create(http: &reqwest::Client, node: &HoldfastNode, def: Value) {
    let (status, body) = post(http, node.url("/api/admin/skus"), def, ADMIN).await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_race_for_500_units_and_every_viewer_agrees() {
    let Some(cluster) = RedisCluster::start(3, 1) else {
        return;
    };
    let urls = cluster.urls();
    let mut nodes = Vec::new();
    for id in 1..=3u8 {
        nodes.push(HoldfastNode::spawn(&urls, id, &args()).await);
    }
    let http = reqwest::Client::new();
    create(
        &http,
        &nodes[0],
        json!({"id": "drop", "total": 500, "order_units_max": 3, "hold_ttl_ms": 600_000}),
    )
    .await;
    let bases: Vec<String> = nodes.iter().map(HoldfastNode::base_url).collect();
    let acked = Arc::new(Mutex::new(Vec::<(String, u64)>::new()));
    let buyers: Vec<_> = (0..150)
        .map(|b| {
            let (http, bases, acked) = (http.clone(), bases.clone(), acked.clone());
            tokio::spawn(async move {
                for k in 0..40 {
                    let base = &bases[(b + k) % bases.len()];
                    let body = json!({"sku": "drop", "qty": 1 + (b + k) % 2, "buyer": format!("b{b}-{k}")});
                    let (status, r) = post(&http, format!("{base}/api/reservations"), body, CHECKOUT).await;
                    match status {
                        201 => acked.lock().await.push((
                            r["hold"].as_str().unwrap().to_string(),
                            r["units"].as_u64().unwrap(),
                        )),
                        409 if r["error"] == "sold_out" => return,
                        409 if r["error"] == "not_enough_available" => {}
                        503 => {}
                        _ => panic!("unexpected answer {status}: {r}"),
                    }
                }
            })
        })
        .collect();
    for b in buyers {
        b.await.unwrap();
    }
    let acked = std::mem::take(&mut *acked.lock().await);
    let units: u64 = acked.iter().map(|(_, u)| u).sum();
    assert_eq!(
        units, 500,
        "every unit ends held (demand exceeds supply), none twice"
    );
    let distinct: HashSet<&String> = acked.iter().map(|(h, _)| h).collect();
    assert_eq!(distinct.len(), acked.len(), "no hold id twice");
    // Every node shows the same final counts: nothing left, nothing stranded.
    for base in &bases {
        eventually(&format!("{base} converges"), || async {
            let (_, s) = get(&http, format!("{base}/api/skus/drop")).await;
            (counts(&s) == (0, 500, 0, 500)).then_some(())
        })
        .await;
    }
    let (pool, leased, total) = ledger(&cluster, "drop");
    assert_eq!(
        (pool, leased, total),
        (0, 500, 500),
        "the pool is empty, all units leased"
    );
    // A hold made on one node is seen (and committed) through another.
    let (hold, _) = &acked[0];
    let made_by = (u64::from_str_radix(hold, 16).unwrap() >> 42 & 0xff) as usize;
    let other = &bases[made_by % bases.len()]; // node n is bases[n - 1]
    let (status, view) = get(&http, format!("{other}/api/holds/{hold}")).await;
    assert_eq!(
        (status, view["state"].as_str()),
        (200, Some("held")),
        "{view}"
    );
    let (status, done) = post(
        &http,
        format!("{other}/api/holds/{hold}/commit"),
        json!({}),
        CHECKOUT,
    )
    .await;
    assert_eq!(status, 200, "{done}");
    for base in &bases {
        eventually("the commit shows everywhere", || async {
            let (_, s) = get(&http, format!("{base}/api/skus/drop")).await;
            (s["sold"].as_u64() == acked[0].1.into()).then_some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_nodes_holds_end_elsewhere_and_its_unsold_units_return() {
    let Some(cluster) = RedisCluster::start(3, 1) else {
        return;
    };
    let urls = cluster.urls();
    let n1 = HoldfastNode::spawn(&urls, 1, &args()).await;
    let n2 = HoldfastNode::spawn(&urls, 2, &args()).await;
    let n3 = HoldfastNode::spawn(&urls, 3, &args()).await;
    let http = reqwest::Client::new();
    create(
        &http,
        &n1,
        json!({"id": "k9", "total": 100, "hold_ttl_ms": 3000}),
    )
    .await;
    let mut holds = Vec::new();
    for i in 0..4 {
        let body = json!({"sku": "k9", "qty": 1, "buyer": format!("x{i}")});
        let (status, r) = post(&http, n2.url("/api/reservations"), body, CHECKOUT).await;
        assert_eq!(status, 201, "{r}");
        holds.push(r["hold"].as_str().unwrap().to_string());
    }
    n2.kill9();
    // The others keep selling meanwhile.
    let (status, r) = post(
        &http,
        n3.url("/api/reservations"),
        json!({"sku": "k9", "qty": 1, "buyer": "during"}),
        CHECKOUT,
    )
    .await;
    assert_eq!(status, 201, "{r}");
    let during = r["hold"].as_str().unwrap().to_string();
    // The dead node's first hold is committed through another node once
    // its lease lapsed (until then: a retryable refusal).
    let paid = &holds[0];
    let done = eventually(
        "the dead node's hold can be committed elsewhere",
        || async {
            let (status, r) = post(
                &http,
                n1.url(&format!("/api/holds/{paid}/commit")),
                json!({}),
                CHECKOUT,
            )
            .await;
            match status {
                200 => Some(r),
                503 => None,
                _ => panic!("commit of a dead node's hold: {status} {r}"),
            }
        },
    )
    .await;
    assert_eq!(done["sold"], 1, "{done}");
    // Its other holds expire back to the pool; its unsold units went back.
    let (status, r) = post(
        &http,
        n3.url(&format!("/api/holds/{during}/release")),
        json!({}),
        CHECKOUT,
    )
    .await;
    assert_eq!(status, 200, "{r}");
    eventually("everything but the sale is available again", || async {
        let (_, s) = get(&http, n3.url("/api/skus/k9")).await;
        (counts(&s) == (99, 0, 1, 100)).then_some(())
    })
    .await;
    for (i, hold) in holds.iter().enumerate() {
        let (status, view) = get(&http, n1.url(&format!("/api/holds/{hold}"))).await;
        let want = if i == 0 { "committed" } else { "expired" };
        assert_eq!(
            (status, view["state"].as_str()),
            (200, Some(want)),
            "{hold}: {view}"
        );
    }
    let (pool, leased, total) = ledger(&cluster, "k9");
    assert_eq!(total, 100);
    assert_eq!(pool + leased, total, "the ledger adds up");
    // Restarted, the node takes its state back and sells again.
    let n2 = HoldfastNode::spawn(&urls, 2, &args()).await;
    let (status, r) = post(
        &http,
        n2.url("/api/reservations"),
        json!({"sku": "k9", "qty": 1, "buyer": "back"}),
        CHECKOUT,
    )
    .await;
    assert_eq!(status, 201, "{r}");
    let (status, view) = get(&http, n2.url(&format!("/api/holds/{paid}"))).await;
    assert_eq!(
        (status, view["state"].as_str()),
        (200, Some("committed")),
        "{view}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_node_never_sells_from_its_stale_lease() {
    let Some(cluster) = RedisCluster::start(3, 1) else {
        return;
    };
    let urls = cluster.urls();
    let n1 = HoldfastNode::spawn(&urls, 1, &args()).await;
    let n2 = HoldfastNode::spawn(&urls, 2, &args()).await;
    let http = reqwest::Client::new();
    create(&http, &n1, json!({"id": "p", "total": 50})).await;
    // Node 2 leases some units.
    let (status, r) = post(
        &http,
        n2.url("/api/reservations"),
        json!({"sku": "p", "qty": 1, "buyer": "a"}),
        CHECKOUT,
    )
    .await;
    assert_eq!(status, 201, "{r}");
    n2.stop_signal();
    // Node 1 notices the lapse and adopts node 2: its unsold units are back.
    let owner_port = cluster.master_of_key("hf:{node:2}:owner");
    eventually("node 2 adopted", || async {
        let by = cluster.cli(owner_port, &["HGET", "hf:{node:2}:owner", "adopted_by"]);
        (by.trim() == "1").then_some(())
    })
    .await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (pool, leased, total) = ledger(&cluster, "p");
        if leased == 1 && pool + leased == total {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node 2's unsold units never came back: pool {pool}, leased {leased}, total {total}\n{}\n---\n{}",
            n1.stderr(),
            n2.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    n2.cont();
    // Its late reservations are refused (it stops, fenced), never served
    // from the lease it no longer has.
    for i in 0..5 {
        let (status, r) = post(
            &http,
            n2.url("/api/reservations"),
            json!({"sku": "p", "qty": 1, "buyer": format!("late{i}")}),
            CHECKOUT,
        )
        .await;
        assert_ne!(status, 201, "a paused node sold from a stale lease: {r}");
    }
    let (pool, leased, total) = ledger(&cluster, "p");
    assert_eq!((pool + leased, total), (50, 50));
    let (_, s) = get(&http, n1.url("/api/skus/p")).await;
    assert_eq!(counts(&s), (49, 1, 0, 50), "{s}");
    eventually("the fenced node exits", || async {
        n2.try_status().map(|_| ())
    })
    .await;
    assert!(n2.stderr().contains("adopted"), "{}", n2.stderr());
}

/// An adopter bumping a node's epoch between two of its journal batches
/// keeps the next batch out of Redis: nothing of it lands and the
/// journal's fence trips (not the ownership heartbeat's: its ttl is long
/// here, so the journal is the first to look). Any faster path for a
/// node's batches (one that reads the epoch less often, e.g. carried from
/// the previous batch) must keep this.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_epoch_bumped_between_two_batches_fences_the_next_one() {
    let Some(cluster) = RedisCluster::start(3, 1) else {
        return;
    };
    let urls = cluster.urls();
    let n1 = HoldfastNode::spawn(&urls, 1, &["--node-ttl-ms", "600000"]).await;
    let http = reqwest::Client::new();
    create(&http, &n1, json!({"id": "fz", "total": 20})).await;
    let reserve = |buyer: &'static str| {
        post(
            &http,
            n1.url("/api/reservations"),
            json!({"sku": "fz", "qty": 1, "buyer": buyer}),
            CHECKOUT,
        )
    };
    // Sequential requests: each is its own batch.
    for buyer in ["a", "b", "c"] {
        let (status, r) = reserve(buyer).await;
        assert_eq!(status, 201, "{r}");
    }
    let journal = "hf:{node:1}:journal";
    let port = cluster.master_of_key(journal);
    // What an adoption does to the journal record, and the seq at that
    // instant (a batch of the node's own, e.g. a lease top-up, may land
    // just before).
    let seq_at_bump = cluster.cli(
        port,
        &[
            "EVAL",
            "redis.call('HINCRBY', KEYS[1], 'epoch', 1) return redis.call('HGET', KEYS[1], 'seq')",
            "1",
            journal,
        ],
    );
    let (status, r) = reserve("late").await;
    assert_ne!(status, 201, "a batch landed over a bumped epoch: {r}");
    assert_eq!(
        cluster.cli(port, &["HGET", journal, "seq"]).trim(),
        seq_at_bump.trim(),
        "a batch landed after the epoch was bumped:\n{}",
        n1.stderr()
    );
    let hold_keys = cluster.cli(port, &["KEYS", "hf:{node:1}:*holds*"]);
    let lines: u64 = hold_keys
        .lines()
        .filter(|k| !k.trim().is_empty())
        .map(|k| {
            cluster
                .cli(port, &["HLEN", k.trim()])
                .trim()
                .parse::<u64>()
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(
        lines, 3,
        "only the three holds before the bump are in Redis: {hold_keys}"
    );
    eventually("the fenced node exits", || async {
        n1.try_status().map(|_| ())
    })
    .await;
    assert!(
        n1.stderr()
            .contains("the journal record of this node is at epoch"),
        "the journal's fence did not trip: {}",
        n1.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_hot_skus_master_dies_under_load_and_nothing_is_oversold_or_lost() {
    let Some(cluster) = RedisCluster::start(3, 1) else {
        return;
    };
    let urls = cluster.urls();
    let mut nodes = Vec::new();
    let failover_args = [
        "--node-ttl-ms",
        NODE_TTL_FAILOVER_MS,
        "--broadcast-interval-ms",
        "20",
    ];
    for id in 1..=3u8 {
        nodes.push(HoldfastNode::spawn(&urls, id, &failover_args).await);
    }
    let http = reqwest::Client::new();
    create(
        &http,
        &nodes[0],
        json!({"id": "hot", "total": 300, "order_units_max": 2, "hold_ttl_ms": 600_000}),
    )
    .await;
    let bases: Vec<String> = nodes.iter().map(HoldfastNode::base_url).collect();
    let acked = Arc::new(Mutex::new(Vec::<(String, u64)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let buyers: Vec<_> = (0..30)
        .map(|b| {
            let (http, bases, acked, stop) =
                (http.clone(), bases.clone(), acked.clone(), stop.clone());
            tokio::spawn(async move {
                let mut k = 0;
                while !stop.load(Ordering::Relaxed) {
                    k += 1;
                    let base = &bases[(b + k) % bases.len()];
                    let body = json!({"sku": "hot", "qty": 1, "buyer": format!("h{b}-{k}")});
                    let (status, r) =
                        post(&http, format!("{base}/api/reservations"), body, CHECKOUT).await;
                    if status == 201 {
                        acked
                            .lock()
                            .await
                            .push((r["hold"].as_str().unwrap().to_string(), 1));
                    } else if r["error"] == "sold_out" {
                        return;
                    } else {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            })
        })
        .collect();
    eventually("the burst is under way", || async {
        (acked.lock().await.len() >= 40).then_some(())
    })
    .await;
    let key = "hf:{sku:hot}:def";
    cluster.kill_master_of_key(key);
    cluster.wait_failover(key).await;
    // Keep selling a while after the failover, then stop.
    let before = acked.lock().await.len();
    let _ = tokio::time::timeout(PATIENCE, async {
        while acked.lock().await.len() < before + 40 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for b in buyers {
        b.await.unwrap();
    }
    let acked = std::mem::take(&mut *acked.lock().await);
    for (i, node) in nodes.iter().enumerate() {
        if let Some(status) = node.try_status() {
            panic!(
                "node {} exited during the failover ({status}):\n{}",
                i + 1,
                node.stderr()
                    .lines()
                    .filter(|l| !l.contains("redis::cluster_handling"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
    let units: u64 = acked.iter().map(|(_, u)| u).sum();
    assert!(
        units <= 300,
        "never oversold: {units} units acknowledged of 300"
    );
    // Every acknowledged hold survived the failover (a 503 while a node's
    // channels move to the new master is retried, as a client would).
    for (i, (hold, _)) in acked.iter().enumerate() {
        let base = &bases[i % bases.len()];
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let view = loop {
            let (status, view) = get(&http, format!("{base}/api/holds/{hold}")).await;
            match status {
                200 => break view,
                503 | 0 if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                _ => panic!(
                    "hold {hold} via {base}: {status} {view}\n{}",
                    nodes
                        .iter()
                        .map(|n| n
                            .stderr()
                            .lines()
                            .filter(
                                |l| !l.contains("redis::cluster_handling") && !l.contains("INFO")
                            )
                            .collect::<Vec<_>>()
                            .join("\n"))
                        .collect::<Vec<_>>()
                        .join("\n---\n")
                ),
            }
        };
        assert_eq!(view["state"], "held", "{hold}: {view}");
    }
    let (pool, leased, ledger_total) = ledger(&cluster, "hot");
    let logs = || {
        nodes
            .iter()
            .map(|n| {
                n.stderr()
                    .lines()
                    .filter(|l| {
                        (l.contains("ERROR") || l.contains(" WARN "))
                            && !l.contains("redis::cluster")
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .collect::<Vec<_>>()
            .join("\n---\n")
    };
    assert_eq!(
        (pool + leased, ledger_total),
        (300, 300),
        "the ledger adds up: pool {pool} + leased {leased}\n{}",
        logs()
    );
    assert!(
        leased >= units,
        "the nodes hold at least the {units} units acknowledged, the ledger says {leased}\n{}",
        logs()
    );
    // Every node's view converges on the ledger.
    for base in &bases {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let s = loop {
            let (_, s) = get(&http, format!("{base}/api/skus/hot")).await;
            let (available, held, sold, total) = counts(&s);
            if total == 300 && available + held + sold == total {
                break s;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{base} never showed consistent counts: {s}\nledger: {:?}\n{}",
                ledger(&cluster, "hot"),
                logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let (_, held, sold, total) = counts(&s);
        assert!(
            held + sold <= total && held >= units,
            "{s} vs {units} acknowledged"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_cluster_input_is_a_clear_error_and_lost_scripts_are_reloaded() {
    let Some(cluster) = RedisCluster::start(3, 1) else {
        return;
    };
    let urls = cluster.urls();
    // A single Redis is not a cluster.
    let Some(single) = Redis::start() else { return };
    let (status, err) = HoldfastNode::spawn_expect_failure(&single.url(), 1, &args()).await;
    assert!(!status.success());
    assert!(err.contains("not a Redis Cluster"), "{err}");
    // A node id in use by a live node.
    let n1 = HoldfastNode::spawn(&urls, 1, &args()).await;
    let (status, err) = HoldfastNode::spawn_expect_failure(&urls, 1, &args()).await;
    assert!(!status.success());
    assert!(err.contains("node id 1 is in use"), "{err}");
    // Scripts lost (a master that failed over, SCRIPT FLUSH): reloaded.
    let http = reqwest::Client::new();
    create(&http, &n1, json!({"id": "s", "total": 5})).await;
    assert!(cluster.flush_scripts_everywhere() >= 3);
    let (status, r) = post(
        &http,
        n1.url("/api/reservations"),
        json!({"sku": "s", "qty": 1, "buyer": "after-flush"}),
        CHECKOUT,
    )
    .await;
    assert_eq!(status, 201, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_stopped_cleanly_restarts_at_once_and_a_killed_one_waits_its_ttl() {
    let Some(cluster) = RedisCluster::start(3, 1) else {
        return;
    };
    let urls = cluster.urls();
    // Far longer than the test: only a resigned ownership lets the restart in.
    let long = ["--node-ttl-ms", "60000", "--broadcast-interval-ms", "20"];
    let n1 = HoldfastNode::spawn(&urls, 1, &long).await;
    let http = reqwest::Client::new();
    create(
        &http,
        &n1,
        json!({"id": "roll", "total": 5, "hold_ttl_ms": 600_000}),
    )
    .await;
    let (status, r) = post(
        &http,
        n1.url("/api/reservations"),
        json!({"sku": "roll", "qty": 1, "buyer": "before-restart"}),
        CHECKOUT,
    )
    .await;
    assert_eq!(status, 201, "{r}");
    let hold = r["hold"].as_str().unwrap().to_string();
    // A rolling restart: SIGTERM, then the same --node-id at once.
    assert!(n1.terminate().await.success(), "{}", n1.stderr());
    assert!(n1.stderr().contains("resigned"), "{}", n1.stderr());
    let n1 = HoldfastNode::spawn(&urls, 1, &long).await;
    let (status, view) = get(&http, n1.url(&format!("/api/holds/{hold}"))).await;
    assert_eq!(
        (status, view["state"].as_str()),
        (200, Some("held")),
        "{view}"
    );
    // A killed node resigned nothing: its id stays taken until its ttl.
    n1.kill9();
    let (status, err) = HoldfastNode::spawn_expect_failure(&urls, 1, &long).await;
    assert!(!status.success());
    assert!(err.contains("node id 1 is in use"), "{err}");
}
