//! A SKU frozen after a failover lost some of its lease records is rebuilt
//! from what the nodes hold, and then sells exactly its total: real
//! `holdfast` processes over a real Redis Cluster. The lost writes are made
//! the way a failover to a replica that lacked them leaves them: a node's
//! last grant gone from the ledger, its units back in the pool, the
//! version behind.

mod common;
use common::cluster::{HoldfastNode, RedisCluster};
use common::*;
use serde_json::{Value, json};
use std::time::Duration;

const TOTAL: u64 = 40;

async fn post(http: &reqwest::Client, url: String, body: Value, token: &str) -> (u16, Value) {
    match http.post(url).bearer_auth(token).json(&body).send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.json().await.unwrap_or(Value::Null))
        }
        Err(e) => (0, json!({"error": "transport", "message": e.to_string()})),
    }
}

async fn sku(http: &reqwest::Client, node: &HoldfastNode) -> Value {
    let r = http
        .get(node.url("/api/skus/r"))
        .send()
        .await
        .expect("GET sku");
    r.json().await.expect("sku json")
}

/// A field of the SKU's lease ledger, as a number (absent = 0).
fn ledger_field(cluster: &RedisCluster, field: &str) -> i64 {
    let key = "hf:{sku:r}:lease";
    let out = cluster.cli(cluster.master_of_key(key), &["HGET", key, field]);
    out.trim().parse().unwrap_or(0)
}

/// The pool and Σ granted − returned of every node, read at one instant.
fn ledger_sum(cluster: &RedisCluster) -> (i64, i64) {
    const READ: &str = "local p = tonumber(redis.call('HGET', KEYS[1], 'pool')) \
        local l = redis.call('HGETALL', KEYS[2]) local leased = 0 \
        for i = 1, #l, 2 do local f = l[i] \
          if string.sub(f, -2) == ':g' then leased = leased + tonumber(l[i + 1]) end \
          if string.sub(f, -2) == ':r' then leased = leased - tonumber(l[i + 1]) end end \
        return {p, leased}";
    let (def, lease) = ("hf:{sku:r}:def", "hf:{sku:r}:lease");
    let out = cluster.cli(cluster.master_of_key(def), &["EVAL", READ, "2", def, lease]);
    let v: Vec<i64> = out.lines().filter_map(|l| l.trim().parse().ok()).collect();
    assert_eq!(v.len(), 2, "{out}");
    (v[0], v[1])
}

fn def_field(cluster: &RedisCluster, field: &str) -> i64 {
    let key = "hf:{sku:r}:def";
    let out = cluster.cli(cluster.master_of_key(key), &["HGET", key, field]);
    out.trim().parse().unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_sku_is_rebuilt_from_what_the_nodes_hold_and_never_oversells() {
    let Some(cluster) = RedisCluster::start(3, 1) else {
        return;
    };
    let urls = cluster.urls();
    let args = ["--node-ttl-ms", "1500", "--broadcast-interval-ms", "20"];
    let n1 = HoldfastNode::spawn(&urls, 1, &args).await;
    let n2 = HoldfastNode::spawn(&urls, 2, &args).await;
    let http = reqwest::Client::new();
    let (status, body) = post(
        &http,
        n1.url("/api/admin/skus"),
        json!({"id": "r", "total": TOTAL, "hold_ttl_ms": 600_000}),
        ADMIN,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let mut acked = 0u64;
    let mut buyer = 0u32;
    let mut reserve = async |node: &HoldfastNode| {
        buyer += 1;
        post(
            &http,
            node.url("/api/reservations"),
            json!({"sku": "r", "qty": 1, "buyer": format!("b{buyer}")}),
            CHECKOUT,
        )
        .await
    };
    for node in [&n1, &n2, &n1, &n2] {
        let (status, r) = reserve(node).await;
        assert_eq!(status, 201, "{r}");
        acked += 1;
    }

    // A failover loses node 1's grants: the ledger says node 1 leased
    // nothing, its units are back in the pool, the version went back.
    let lost = ledger_field(&cluster, "1:g") - ledger_field(&cluster, "1:r");
    assert!(lost >= 2, "node 1 leased its sales");
    let (def, lease) = ("hf:{sku:r}:def", "hf:{sku:r}:lease");
    let r1 = ledger_field(&cluster, "1:r").to_string();
    cluster.cli(cluster.master_of_key(lease), &["HSET", lease, "1:g", &r1]);
    let pool = (def_field(&cluster, "pool") + lost).to_string();
    cluster.cli(
        cluster.master_of_key(def),
        &["HSET", def, "pool", &pool, "version", "0"],
    );

    // Node 1's next lease operation sees the version go back: it stops
    // selling the SKU (fail closed) instead of trusting the pool.
    let mut frozen = None;
    for _ in 0..2 * TOTAL {
        let (status, r) = reserve(&n1).await;
        match status {
            201 => acked += 1,
            503 if r["message"].as_str().unwrap_or("").contains("frozen") => {
                frozen = Some(r);
                break;
            }
            _ => panic!("unexpected answer {status}: {r}"),
        }
    }
    let frozen = frozen.expect("node 1 froze the SKU once its version went back");
    assert_eq!(frozen["error"], "unavailable", "{frozen}");

    // The host rebuilds it (from any node).
    let (status, rebuilt) =
        post(&http, n2.url("/api/admin/skus/r/rebuild"), json!({}), ADMIN).await;
    assert_eq!(
        status,
        200,
        "{rebuilt}\n{}\n---\n{}",
        n1.stderr(),
        n2.stderr()
    );
    let held_by = |n: &str| rebuilt["nodes"][n].as_u64().expect("a claim per live node");
    let (u1, u2) = (held_by("1"), held_by("2"));
    assert_eq!(rebuilt["oversold"], 0, "{rebuilt}");
    assert_eq!(
        rebuilt["pool"].as_u64(),
        Some(TOTAL - u1 - u2),
        "the pool is the total less what the nodes hold: {rebuilt}"
    );
    // The nodes sell again at once (and may return idle units): the ledger
    // read at one instant adds up, the lost grant counted once.
    let (pool, leased) = ledger_sum(&cluster);
    assert_eq!(pool + leased, TOTAL as i64, "pool {pool} + leased {leased}");
    assert!(def_field(&cluster, "version") > 0, "the version moved on");

    // Both nodes sell again, and the rest of the stock sells exactly once.
    let mut sold_out = [false, false];
    let mut turn = 0usize;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while sold_out != [true, true] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never sold out: {acked} held\n{}\n---\n{}",
            n1.stderr(),
            n2.stderr()
        );
        turn += 1;
        let node = [&n2, &n1][turn % 2];
        let (status, r) = reserve(node).await;
        match status {
            201 => acked += 1,
            409 if r["error"] == "sold_out" => sold_out[turn % 2] = true,
            // Rebuilt meanwhile / another node's idle units on their way.
            503 | 409 => tokio::time::sleep(Duration::from_millis(10)).await,
            _ => panic!("unexpected answer {status}: {r}"),
        }
    }
    assert_eq!(
        acked, TOTAL,
        "every unit held exactly once: no oversell from the lost grant"
    );
    for node in [&n1, &n2] {
        eventually("both nodes show every unit held", || async {
            let s = sku(&http, node).await;
            ([&s["available"], &s["held"], &s["total"]]
                == [&json!(0), &json!(TOTAL), &json!(TOTAL)])
            .then_some(())
        })
        .await;
    }
}

#[tokio::test]
async fn a_single_node_refuses_a_rebuild_clearly() {
    let node = HoldfastNode::serve(&["--demo".to_string()]).await;
    let http = reqwest::Client::new();
    let (status, body) = post(
        &http,
        node.url("/api/admin/skus/tee-black-m/rebuild"),
        json!({}),
        ADMIN,
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("invalid")),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("--redis-cluster"),
        "{body}"
    );
}
