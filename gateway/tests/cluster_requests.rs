//! A reservation's request id holds across nodes: a retry that a load
//! balancer sends to another node gets the first attempt's hold, never a
//! second one, and a retry that reaches a node with no stock left is not
//! told "sold out" for a request that has its units. Real `holdfast`
//! processes over a real Redis Cluster (3 masters, 3 replicas).

mod common;
use common::cluster::{HoldfastNode, RedisCluster};
use common::*;
use serde_json::{Value, json};

async fn held(http: &reqwest::Client, node: &HoldfastNode, sku: &str) -> u64 {
    let r = http
        .get(node.url(&format!("/api/skus/{sku}")))
        .send()
        .await
        .expect("GET sku");
    let v: Value = r.json().await.expect("sku json");
    v["held"].as_u64().expect("held")
}

/// A Redis Cluster (3 masters, 3 replicas), `count` nodes started with
/// `args`, and SKU `def` created through the first.
async fn deployment(
    count: u8,
    args: &[&str],
    def: Value,
) -> Option<(RedisCluster, Vec<HoldfastNode>)> {
    let cluster = RedisCluster::start(3, 1)?;
    let urls = cluster.urls();
    let mut nodes = Vec::new();
    for id in 1..=count {
        nodes.push(HoldfastNode::spawn(&urls, id, args).await);
    }
    let (status, body) = nodes[0]
        .post(&reqwest::Client::new(), "/api/admin/skus", def, ADMIN)
        .await;
    assert_eq!(status, 201, "{body}");
    Some((cluster, nodes))
}

fn reserve(sku: &str, request: &str) -> Value {
    json!({"sku": sku, "qty": 1, "buyer": format!("buyer-{request}"), "request_id": request})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_on_another_node_gets_the_first_hold() {
    let args = ["--broadcast-interval-ms", "20"];
    let Some((cluster, nodes)) = deployment(
        2,
        &args,
        json!({"id": "q", "total": 100, "order_units_max": 1, "hold_ttl_ms": 600_000}),
    )
    .await
    else {
        return;
    };
    let http = reqwest::Client::new();

    // One after the other: the first attempt on one node, its retry on the
    // other.
    for k in 0..20usize {
        let request = format!("seq-{k}");
        let (first, second) = (&nodes[k % 2], &nodes[(k + 1) % 2]);
        let (s1, a) = first
            .post(&http, "/api/reservations", reserve("q", &request), CHECKOUT)
            .await;
        let (s2, b) = second
            .post(&http, "/api/reservations", reserve("q", &request), CHECKOUT)
            .await;
        // A replay answers 200, as on one node.
        let key = format!(
            "hf:{{rq:{}}}",
            holdfast_gateway::cluster::requests::digest(&request)
        );
        assert_eq!(
            (s1, s2),
            (201, 200),
            "{a} / {b}\nthe claim: {:?}\nnode 1:\n{}\nnode 2:\n{}",
            cluster.cli(cluster.master_of_key(&key), &["GET", &key]),
            nodes[0].stderr(),
            nodes[1].stderr()
        );
        assert_eq!(
            a["hold"], b["hold"],
            "the retry on another node gets the first hold"
        );
        assert_eq!(
            (a["replayed"].as_bool(), b["replayed"].as_bool()),
            (Some(false), Some(true))
        );
        assert_eq!(a["deadline_ms"], b["deadline_ms"]);
    }
    // At once on both nodes: one of the two takes the request.
    for k in 0..20usize {
        let request = format!("race-{k}");
        let ((s1, a), (s2, b)) = tokio::join!(
            nodes[0].post(&http, "/api/reservations", reserve("q", &request), CHECKOUT),
            nodes[1].post(&http, "/api/reservations", reserve("q", &request), CHECKOUT),
        );
        if s1 == 503 || s2 == 503 {
            // The first attempt was still being written when the other
            // looked: a retry (as a client does) settles it.
            let node = if s1 == 503 { &nodes[0] } else { &nodes[1] };
            let (s, again) = node
                .post(&http, "/api/reservations", reserve("q", &request), CHECKOUT)
                .await;
            let other = if s1 == 503 { &b } else { &a };
            assert_eq!((s, &again["hold"]), (200, &other["hold"]), "{again}");
            continue;
        }
        let mut statuses = [s1, s2];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 201], "one made, one replayed: {a} / {b}");
        assert_eq!(a["hold"], b["hold"], "two attempts at once make one hold");
    }
    // 40 requests, 40 units held, whichever node is asked.
    for node in &nodes {
        eventually("both nodes count 40 held", || async {
            (held(&http, node, "q").await == 40).then_some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_where_nothing_is_left_is_not_told_sold_out() {
    let args = ["--broadcast-interval-ms", "20"];
    let Some((_cluster, nodes)) = deployment(
        2,
        &args,
        json!({"id": "last", "total": 1, "hold_ttl_ms": 600_000}),
    )
    .await
    else {
        return;
    };
    let http = reqwest::Client::new();
    let (s1, a) = nodes[0]
        .post(
            &http,
            "/api/reservations",
            reserve("last", "only"),
            CHECKOUT,
        )
        .await;
    assert_eq!(s1, 201, "{a}");
    // The other node has no unit to give: a new request is sold out there,
    let (s, refused) = nodes[1]
        .post(
            &http,
            "/api/reservations",
            reserve("last", "another"),
            CHECKOUT,
        )
        .await;
    assert_eq!(
        (s, refused["error"].as_str()),
        (409, Some("sold_out")),
        "{refused}"
    );
    // but a retry of the first gets its hold.
    let (s2, b) = nodes[1]
        .post(
            &http,
            "/api/reservations",
            reserve("last", "only"),
            CHECKOUT,
        )
        .await;
    assert_eq!(
        (s2, &b["hold"], b["replayed"].as_bool()),
        (200, &a["hold"], Some(true)),
        "{b}"
    );
    // The same request id asking for something else is refused, as on one
    // node, and takes nothing.
    let other = json!({"sku": "last", "qty": 2, "buyer": "buyer-only", "request_id": "only"});
    let (s, mismatch) = nodes[1]
        .post(&http, "/api/reservations", other, CHECKOUT)
        .await;
    assert_eq!(
        (s, mismatch["error"].as_str()),
        (400, Some("request_mismatch")),
        "{mismatch}"
    );
    // Committed through the node that did not make it, the hold stays the
    // request's answer there too.
    let hold = a["hold"].as_str().unwrap();
    let (s, done) = nodes[1]
        .post(
            &http,
            &format!("/api/holds/{hold}/commit"),
            json!({}),
            CHECKOUT,
        )
        .await;
    assert_eq!(s, 200, "{done}");
    let (s3, c) = nodes[1]
        .post(
            &http,
            "/api/reservations",
            reserve("last", "only"),
            CHECKOUT,
        )
        .await;
    assert_eq!((s3, &c["hold"]), (200, &a["hold"]), "{c}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_buyer_limit_holds_across_nodes() {
    let args = ["--broadcast-interval-ms", "20", "--node-ttl-ms", "1500"];
    let Some((_cluster, nodes)) = deployment(
        3,
        &args,
        json!({"id": "lim", "total": 100, "buyer_limit": 2, "hold_ttl_ms": 600_000}),
    )
    .await
    else {
        return;
    };
    let http = reqwest::Client::new();
    let buy = |buyer: &str| json!({"sku": "lim", "qty": 1, "buyer": buyer});
    // One buyer, one reservation per node: the third is over the limit.
    let mut bobs = Vec::new();
    for node in &nodes {
        let (s, r) = node
            .post(&http, "/api/reservations", buy("bob"), CHECKOUT)
            .await;
        bobs.push((s, r));
    }
    let statuses: Vec<u16> = bobs.iter().map(|(s, _)| *s).collect();
    assert_eq!(statuses, [201, 201, 429], "{bobs:?}");
    assert_eq!(bobs[2].1["error"], "limit_exceeded", "{bobs:?}");
    // Six at once over three nodes: two get a unit.
    let attempts =
        (0..6).map(|k| nodes[k % 3].post(&http, "/api/reservations", buy("cat"), CHECKOUT));
    let cats = futures_util::future::join_all(attempts).await;
    let won = cats.iter().filter(|(s, _)| *s == 201).count();
    assert_eq!(won, 2, "{cats:?}");
    assert!(
        cats.iter()
            .all(|(s, r)| *s == 201 || r["error"] == "limit_exceeded"),
        "{cats:?}"
    );
    // Bob reserves one unit through `node`: 201, or 429 over his limit.
    let bob_gets = async |node: &HoldfastNode, want: u16| {
        let (s, r) = node
            .post(&http, "/api/reservations", buy("bob"), CHECKOUT)
            .await;
        assert_eq!(s, want, "{r}");
        if want == 429 {
            assert_eq!(r["error"], "limit_exceeded", "{r}");
        }
    };
    // A release (through a third node) gives the buyer room again anywhere.
    let hold = bobs[0].1["hold"].as_str().unwrap();
    let (s, r) = nodes[2]
        .post(
            &http,
            &format!("/api/holds/{hold}/release"),
            json!({}),
            CHECKOUT,
        )
        .await;
    assert_eq!(s, 200, "{r}");
    bob_gets(&nodes[1], 201).await;
    bob_gets(&nodes[2], 429).await;
    // Bob's home (node 1, where he reserved first) dies: once it is gone,
    // another node takes his reservations (what node 1 counted is lost with
    // it: documented).
    nodes[0].kill9();
    eventually("bob reserves again once his home is gone", || async {
        let (s, _) = nodes[1]
            .post(&http, "/api/reservations", buy("bob"), CHECKOUT)
            .await;
        (s == 201).then_some(())
    })
    .await;
    // The new home counts afresh.
    bob_gets(&nodes[2], 201).await;
    bob_gets(&nodes[2], 429).await;
}
