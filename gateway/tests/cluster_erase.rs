//! Buyer erasure in a multi-node deployment: real `holdfast` processes over
//! a real Redis Cluster. A buyer who bought through three nodes (one of
//! them killed and adopted since; what she bought of a SKU with a per-buyer
//! limit is made by her home node, the rest where she asked) is erased
//! through one of them; then
//! every key of every master is read back (SCAN, and every hash, stream,
//! string, set) and none names the buyer: not its id, not any node's
//! pseudonym of it, not any node's hash of it. Each node generates its own
//! pseudonym key here (no `--buyer-id-key`), so each names the buyer
//! differently, as an operator who left the flag out would have it.

mod common;
use common::cluster::{HoldfastNode, RedisCluster, Role};
use common::*;
use holdfast_gateway::journal::keys::buyer_field;
use holdfast_gateway::privacy::{BuyerIdKey, BuyerNames};
use serde_json::{Value, json};

const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";
/// A SKU of the demo catalog with a per-buyer limit of 4.
const LIMITED: &str = "tee-black-m";
const LIMIT: usize = 4;
/// A SKU of the demo catalog without one (for live holds).
const OPEN: &str = "cap-olive";

async fn post(http: &reqwest::Client, url: String, body: Value, token: &str) -> (u16, Value) {
    let r = http
        .post(url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("a node answers");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn reserve(
    http: &reqwest::Client,
    node: &HoldfastNode,
    sku: &str,
    buyer: &str,
) -> (u16, Value) {
    post(
        http,
        node.url("/api/reservations"),
        json!({"sku": sku, "qty": 1, "buyer": buyer}),
        CHECKOUT,
    )
    .await
}

/// A hold of `buyer` on `node`, its id.
async fn hold(http: &reqwest::Client, node: &HoldfastNode, sku: &str, buyer: &str) -> String {
    let (status, r) = reserve(http, node, sku, buyer).await;
    assert_eq!(status, 201, "{r}");
    r["hold"].as_str().unwrap().to_string()
}

async fn hold_op(http: &reqwest::Client, node: &HoldfastNode, hold: &str, op: &str) {
    let (status, r) = post(
        http,
        node.url(&format!("/api/holds/{hold}/{op}")),
        json!({}),
        CHECKOUT,
    )
    .await;
    assert_eq!(status, 200, "{op} {hold}: {r}");
}

async fn buy(http: &reqwest::Client, node: &HoldfastNode, sku: &str, buyer: &str) {
    let h = hold(http, node, sku, buyer).await;
    hold_op(http, node, &h, "commit").await;
}

/// `buyer` buys [`LIMITED`] up to its limit on `node`, and is refused one
/// more.
async fn buy_up_to_the_limit(http: &reqwest::Client, node: &HoldfastNode, buyer: &str) {
    for _ in 0..LIMIT {
        buy(http, node, LIMITED, buyer).await;
    }
    let (status, r) = reserve(http, node, LIMITED, buyer).await;
    let refused = (status, r["error"].as_str());
    assert_eq!(refused, (429, Some("limit_exceeded")), "{r}");
}

async fn erase(http: &reqwest::Client, node: &HoldfastNode, buyer: &str) -> (u16, Value) {
    let path = format!("/api/admin/buyers/{}/erase", buyer.replace('@', "%40"));
    post(http, node.url(&path), json!({}), ADMIN).await
}

/// Every key of every master and everything in it, as one lossy text per
/// key (`key\ncontents`), to search.
async fn everything(cluster: &RedisCluster) -> Vec<String> {
    let mut all = Vec::new();
    for master in cluster.nodes().iter().filter(|n| n.role == Role::Master) {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}", master.port)).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut c)
                .await
                .unwrap();
            for key in keys {
                let parts = key_contents(&mut c, &key).await;
                let text: Vec<_> = parts.iter().map(|p| String::from_utf8_lossy(p)).collect();
                all.push(format!("{key}\n{}", text.join("\n")));
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
    }
    all
}

/// What node `node` writes for buyer `id`: its pseudonym (with the key the
/// node generated) and its hex hash (with the node's hash key), both read
/// from the node's journal record.
fn names_on(cluster: &RedisCluster, node: u8, id: &str) -> [String; 2] {
    let journal = format!("hf:{{node:{node}}}:journal");
    let port = cluster.master_of_key(&journal);
    let field = |f: &str| cluster.cli(port, &["HGET", &journal, f]).trim().to_string();
    let key = BuyerIdKey::parse(&field("buyer_id_key")).expect("the node generated a key");
    let hash = holdfast_gateway::journal::recover::parse_key(&field("hash_key")).unwrap();
    [
        BuyerNames::pseudonyms(&key).name(id).to_string(),
        buyer_field(holdfast_gateway::ids::buyer_id_under(hash, id)),
    ]
}

/// The keys (and their contents) that contain `needle`.
fn naming<'a>(all: &'a [String], needle: &str) -> Vec<&'a str> {
    all.iter()
        .filter(|k| k.contains(needle))
        .map(|k| k.lines().next().unwrap_or(""))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_buyer_is_erased_on_every_node_and_in_every_nodes_slot() {
    let Some(cluster) = RedisCluster::start(3, 0) else {
        return;
    };
    let urls = cluster.urls();
    // Nothing listens on a port just freed: every webhook delivery fails
    // at once and becomes a dead letter in the node's slot.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let hooks = dir.path().join("hooks.toml");
    std::fs::write(
        &hooks,
        format!(
            "[[endpoints]]\nid = \"shop\"\nurl = \"http://{closed}/hook\"\n\
             secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\nevents = [\"order.committed\"]\n"
        ),
    )
    .unwrap();
    let hooks = hooks.to_str().unwrap();
    let args = [
        "--replica-acks",
        "0",
        "--node-ttl-ms",
        "1500",
        "--webhooks-file",
        hooks,
        "--webhook-tries-max",
        "1",
    ];
    let n1 = HoldfastNode::spawn(&urls, 1, &args).await;
    let n2 = HoldfastNode::spawn(&urls, 2, &args).await;
    let n3 = HoldfastNode::spawn(&urls, 3, &args).await;
    let http = reqwest::Client::new();

    // Alice buys up to her limit through nodes 1 and 2 (her home is node
    // 1, where she reserved it first: node 2 forwards there), buys an
    // unlimited SKU on nodes 2 and 3 (made where she asks), and holds a
    // unit on node 3; Bob buys the limited SKU through each node (all made
    // by his home, node 1).
    buy(&http, &n1, LIMITED, ALICE).await;
    for _ in 1..LIMIT {
        buy(&http, &n2, LIMITED, ALICE).await;
    }
    let (status, r) = reserve(&http, &n2, LIMITED, ALICE).await;
    assert_eq!(
        (status, r["error"].as_str()),
        (429, Some("limit_exceeded")),
        "{r}"
    );
    buy(&http, &n2, OPEN, ALICE).await;
    buy(&http, &n3, OPEN, ALICE).await;
    let on_dead_node = hold(&http, &n3, OPEN, ALICE).await;
    for node in [&n1, &n2, &n3] {
        buy(&http, node, LIMITED, BOB).await;
    }
    // Every order's webhook event is a dead letter in its node's slot
    // before node 3 goes: nothing is in flight when the erasure runs.
    for (node, orders) in [(1, LIMIT + 3), (2, 1), (3, 1)] {
        let dead = format!("hf:{{node:{node}}}:webhooks:shop:dead");
        eventually(&format!("node {node}'s {orders} dead letters"), || async {
            let port = cluster.master_of_key(&dead);
            let len: usize = cluster
                .cli(port, &["XLEN", &dead])
                .trim()
                .parse()
                .unwrap_or(0);
            (len == orders).then_some(())
        })
        .await;
    }

    // Node 3 dies and is adopted: its records and its live hold stay in
    // its slot, with no process to ask.
    n3.kill9();
    eventually("node 3 adopted", || async {
        let r = http
            .get(n2.url("/api/admin/cluster"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .ok()?;
        let v: Value = r.json().await.ok()?;
        let n = v["nodes"]
            .as_array()?
            .iter()
            .find(|n| n["id"] == 3)?
            .clone();
        (n["alive"] == false && !n["adopted_by"].is_null()).then_some(())
    })
    .await;

    let names: Vec<(u8, [String; 2])> =
        (1..=3).map(|n| (n, names_on(&cluster, n, ALICE))).collect();
    assert_ne!(
        names[0].1[0], names[1].1[0],
        "each node has its own pseudonym key"
    );
    let all = everything(&cluster).await;
    for (node, [pseudonym, hash]) in &names {
        let slot = format!("{{node:{node}}}");
        for needle in [pseudonym, hash] {
            assert!(
                naming(&all, needle).iter().any(|k| k.contains(&slot)),
                "node {node}'s slot names alice ({needle}) before the erasure"
            );
        }
    }

    // A live hold on node 1 (live node) and one on node 3 (dead node, in
    // Redis only): an erasure sent to node 2 is refused and names both.
    let on_live_node = hold(&http, &n1, OPEN, ALICE).await;
    let (status, r) = erase(&http, &n2, ALICE).await;
    assert_eq!(
        (status, r["error"].as_str()),
        (409, Some("buyer_has_live_holds")),
        "{r}"
    );
    assert!(r["message"].as_str().unwrap().contains("node 1, 3"), "{r}");
    hold_op(&http, &n1, &on_live_node, "release").await;
    let (status, r) = erase(&http, &n2, ALICE).await;
    assert_eq!(
        (status, r["error"].as_str()),
        (409, Some("buyer_has_live_holds")),
        "{r}"
    );
    assert!(r["message"].as_str().unwrap().contains("node 3)"), "{r}");
    // The dead node's hold ends through any node (its adopter runs it).
    hold_op(&http, &n2, &on_dead_node, "release").await;

    let (status, r) = erase(&http, &n2, ALICE).await;
    assert_eq!(status, 200, "{r}\n{}\n---\n{}", n1.stderr(), n2.stderr());
    let all = everything(&cluster).await;
    let mut left = Vec::new();
    for (node, [pseudonym, hash]) in &names {
        for needle in [pseudonym, hash] {
            for key in naming(&all, needle) {
                left.push(format!("node {node}'s {needle} in {key}"));
            }
        }
    }
    for key in naming(&all, ALICE) {
        left.push(format!("the id in {key}"));
    }
    assert!(
        left.is_empty(),
        "alice is still named:\n{}",
        left.join("\n")
    );
    let bob = names_on(&cluster, 1, BOB);
    assert!(!naming(&all, &bob[0]).is_empty(), "bob's orders stay");

    assert_eq!(r["nodes"], 3, "{r}");
    assert_eq!(
        r["buyer"], names[1].1[0],
        "the answer names the buyer as node 2 does: {r}"
    );
    assert_eq!(
        [
            &r["memory_names"],
            &r["memory_limit_records"],
            &r["redis_names"]
        ],
        [&json!(2), &json!(1), &json!(3)],
        "names of the two live nodes' memory, the limit record of her home's, names of all three slots: {r}"
    );
    assert_eq!(r["redis_limit_records"], 1, "her home's (tee-black-m): {r}");
    // 4 + 1 + 1 orders; the dead letters of their webhook events in the
    // three slots, and their copies in the two live nodes' memory.
    assert_eq!(r["order_entries"], LIMIT + 2, "{r}");
    assert_eq!(r["webhook_events"], LIMIT + 1, "{r}");
    assert_eq!(
        r["webhook_stream_entries"],
        LIMIT + 2,
        "every dead letter of alice's orders: {r}"
    );

    // Alice counts afresh at once (her home went with her records): her
    // limit is whole again, once, wherever she asks.
    buy_up_to_the_limit(&http, &n2, ALICE).await;
    let (status, r) = reserve(&http, &n1, LIMITED, ALICE).await;
    assert_eq!(
        (status, r["error"].as_str()),
        (429, Some("limit_exceeded")),
        "{r}"
    );
}

/// A live node that does not answer (paused, its ownership still lasting)
/// fails the erasure with a retryable 503 naming it, before Redis is
/// touched; once it answers again, the erasure goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_erasure_waits_for_every_live_node_or_says_which_did_not_answer() {
    let Some(cluster) = RedisCluster::start(3, 0) else {
        return;
    };
    let urls = cluster.urls();
    // The node's ownership (6 s by default) outlasts the pause below.
    let args = ["--replica-acks", "0", "--forward-timeout-ms", "300"];
    let n1 = HoldfastNode::spawn(&urls, 1, &args).await;
    let n2 = HoldfastNode::spawn(&urls, 2, &args).await;
    let http = reqwest::Client::new();
    buy(&http, &n1, LIMITED, ALICE).await;
    buy(&http, &n2, OPEN, ALICE).await;

    n1.stop_signal();
    let (status, r) = erase(&http, &n2, ALICE).await;
    n1.cont();
    assert_eq!(
        (status, r["error"].as_str()),
        (503, Some("unavailable")),
        "{r}"
    );
    assert!(r["message"].as_str().unwrap().contains("node 1 "), "{r}");
    // Node 1's stored names: alice's is still there.
    let names = "hf:{node:1}:buyers";
    let port = cluster.master_of_key(names);
    assert_eq!(
        cluster.cli(port, &["HLEN", names]).trim(),
        "1",
        "node 1's slot untouched"
    );

    let (status, r) = erase(&http, &n2, ALICE).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        [&r["nodes"], &r["memory_names"], &r["order_entries"]],
        [&json!(2), &json!(2), &json!(2)],
        "{r}"
    );
    assert_eq!(cluster.cli(port, &["HLEN", names]).trim(), "0");
}
