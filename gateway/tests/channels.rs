//! Sales channels through the gateway: SKU definitions with channels and
//! their refusals, reservations on a channel over HTTP and websocket,
//! quota moves, per-channel counts in the SKU answer and in update frames,
//! the channel on order-stream entries, and (with a real `holdfast`
//! process killed with SIGKILL mid-burst) per-channel counts that still add
//! up after recovery.

mod common;
use common::cluster::HoldfastNode;
use common::*;
use holdfast_gateway::protocol::{ClientMsg, Reserve, ServerMsg};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

async fn admin(gw: &Gateway, method: &str, path: &str, body: Value) -> (u16, Value) {
    gw.call(method, path, Some(ADMIN), Some(body)).await
}

async fn reserve(gw: &Gateway, body: Value) -> (u16, Value) {
    gw.call("POST", "/api/reservations", Some(CHECKOUT), Some(body))
        .await
}

/// A websocket reservation of `qty` tees on `channel`.
fn reserve_on(id: u64, qty: u32, channel: &str) -> ClientMsg {
    ClientMsg::Reserve(Reserve {
        id,
        sku: Some("tee".into()),
        qty: Some(qty),
        lines: None,
        buyer: "b1".into(),
        request_id: None,
        allow_partial: false,
        channel: Some(channel.into()),
    })
}

fn channel<'a>(sku: &'a Value, id: &str) -> &'a Value {
    sku["channels"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["id"] == id))
        .unwrap_or_else(|| panic!("no channel {id} in {sku}"))
}

#[tokio::test]
async fn channel_definitions_are_checked_field_by_field() {
    let gw = Gateway::demo().await;
    let cases = [
        (
            json!([{"id": "bad id"}]),
            400,
            "invalid_channel_id",
            "channels[0].id",
        ),
        (
            json!([{"id": "a"}, {"id": "a"}]),
            400,
            "invalid_channels",
            "channels[1].id",
        ),
        (
            json!([{"id": "a", "quota": 11}]),
            400,
            "not_enough_available",
            "channels",
        ),
        (
            json!([{"id": "a", "cap": 2097151}]),
            400,
            "total_above_max",
            "channels[0].cap",
        ),
        (json!([{"id": "a", "share": 1}]), 400, "bad_request", ""),
        (
            Value::Array((0..9).map(|i| json!({"id": format!("c{i}")})).collect()),
            400,
            "channels_full",
            "at most 8",
        ),
    ];
    for (channels, status, code, names) in cases {
        let (got, body) = admin(
            &gw,
            "POST",
            "/api/admin/skus",
            json!({"id": "tee", "total": 10, "channels": channels}),
        )
        .await;
        assert_eq!(
            (got, body["error"].as_str()),
            (status, Some(code)),
            "{body}"
        );
        assert!(body["message"].as_str().unwrap().contains(names), "{body}");
    }
    let (status, _) = gw.get("/api/skus/tee").await;
    assert_eq!(status, 404, "a refused definition creates nothing");
    gw.stop().await;
}

#[tokio::test]
async fn quotas_caps_and_moves_over_http() {
    let gw = Gateway::demo().await;
    let sku = gw
        .create_sku(json!({"id": "tee", "total": 10, "channels": [
            {"id": "live", "quota": 4}, {"id": "web", "cap": 3}]}))
        .await;
    assert_eq!(channel(&sku, "live")["quota_available"], 4);
    assert_eq!(channel(&sku, "web")["available"], 3);

    let (status, r) = reserve(
        &gw,
        json!({"sku": "tee", "qty": 5, "buyer": "a", "channel": "live"}),
    )
    .await;
    assert_eq!(status, 201, "{r}");
    let (status, r) = reserve(
        &gw,
        json!({"sku": "tee", "qty": 4, "buyer": "b", "channel": "web"}),
    )
    .await;
    assert_eq!(
        (status, r["error"].as_str()),
        (409, Some("channel_cap_reached")),
        "{r}"
    );
    let (status, r) = reserve(
        &gw,
        json!({"sku": "tee", "qty": 1, "buyer": "b", "channel": "tiktok"}),
    )
    .await;
    assert_eq!(
        (status, r["error"].as_str()),
        (400, Some("unknown_channel")),
        "{r}"
    );
    assert!(
        r["message"].as_str().unwrap().starts_with("channel: "),
        "names the field: {r}"
    );
    let (status, r) = reserve(&gw, json!({"sku": "tee", "qty": 6, "buyer": "c"})).await;
    assert_eq!(
        (status, r["error"].as_str()),
        (409, Some("not_enough_available")),
        "the pool has 5 left: {r}"
    );

    let mv = |units: i64, channel: &'static str| {
        let gw = &gw;
        async move {
            admin(
                gw,
                "POST",
                &format!("/api/admin/skus/tee/channels/{channel}/move"),
                json!({"units": units}),
            )
            .await
        }
    };
    let (status, r) = mv(-1, "live").await;
    assert_eq!(
        (status, r["error"].as_str()),
        (409, Some("not_enough_quota")),
        "{r}"
    );
    let (status, r) = mv(6, "live").await;
    assert_eq!(
        (status, r["error"].as_str()),
        (409, Some("not_enough_available")),
        "{r}"
    );
    let (status, r) = mv(1, "tiktok").await;
    assert_eq!(
        (status, r["error"].as_str()),
        (400, Some("unknown_channel")),
        "{r}"
    );
    assert!(
        r["message"].as_str().unwrap().starts_with("{channel}: "),
        "names the path field: {r}"
    );
    let (status, r) = mv(3, "live").await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        (r["available"].as_u64(), r["total"].as_u64()),
        (Some(5), Some(10))
    );
    assert_eq!(channel(&r, "live")["quota"], 7);
    assert_eq!(
        channel(&r, "web")["available"],
        2,
        "the web shop sees the smaller pool"
    );

    // A PATCH changes a cap and a quota; the same refusals apply.
    let (status, r) = admin(
        &gw,
        "PATCH",
        "/api/admin/skus/tee",
        json!({"channels": [{"id": "web", "cap": 5}, {"id": "live", "quota": 5}]}),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        (
            channel(&r, "web")["cap"].as_u64(),
            channel(&r, "live")["quota"].as_u64()
        ),
        (Some(5), Some(5))
    );
    let sku = gw.sku("tee").await;
    let held: u64 = sku["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["held"].as_u64().unwrap())
        .sum();
    assert_eq!(
        held,
        sku["held"].as_u64().unwrap(),
        "channels add up to the sku: {sku}"
    );

    // /metrics: one series per configured channel and state, nothing else.
    let text = gw.metrics_text().await;
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("holdfast_channel_units{"))
        .collect();
    assert!(
        series.contains(&r#"holdfast_channel_units{sku="tee",channel="live",state="held"} 5"#),
        "{series:?}"
    );
    assert!(
        series
            .iter()
            .all(|l| l.contains(r#"channel="live""#) || l.contains(r#"channel="web""#))
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_websocket_reservation_names_its_channel_and_updates_carry_channel_counts() {
    let gw = Gateway::demo().await;
    gw.create_sku(json!({"id": "tee", "total": 5, "channels": [{"id": "live", "quota": 2}]}))
        .await;
    let mut viewer = Ws::connect(&gw, None).await;
    viewer.subscribe(&["sku:tee"]).await;
    let mut buyer = Ws::connect_with(&gw, Some(CHECKOUT), true).await;
    let id = buyer.id();
    buyer.send(&reserve_on(id, 3, "live")).await;
    let units = buyer
        .until(|m| match m {
            ServerMsg::Reserved(r) if r.id == id => Some(r.units),
            ServerMsg::Error(e) => panic!("{e:?}"),
            _ => None,
        })
        .await;
    assert_eq!(units, 3);
    let live = viewer
        .until(|m| match m {
            ServerMsg::Update(u) => u.skus.iter().find_map(|s| {
                let c = s.channels.first()?;
                (c.held == 3).then(|| c.clone())
            }),
            _ => None,
        })
        .await;
    assert_eq!(
        (live.id.as_str(), live.quota_available, live.available),
        ("live", 0, 2)
    );
    let id = buyer.id();
    buyer.send(&reserve_on(id, 1, "tiktok")).await;
    let code = buyer
        .until(|m| match m {
            ServerMsg::Error(e) if e.id == Some(id) => Some(e.error),
            _ => None,
        })
        .await;
    assert_eq!(code.as_str(), "unknown_channel");
    gw.stop().await;
}

/// A real process, SIGKILLed while buyers on two channels and on the pool
/// reserve and commit (durable mode); after a restart on the same Redis
/// the SKU and every channel add up, every acknowledged hold is there, and
/// each channel's sales match the order stream's entries for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_channel_counts_add_up_after_sigkill_mid_burst() {
    let Some(redis) = Redis::start() else { return };
    let args: Vec<String> = [
        "--demo",
        "--redis",
        &redis.url(),
        "--persistence",
        "durable",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let first = HoldfastNode::serve(&args).await;
    let http = reqwest::Client::new();
    let client = http.clone();
    let post = move |base: String, token: &'static str, path: String, body: Value| {
        let http = client.clone();
        async move {
            let r = http
                .post(format!("{base}{path}"))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .ok()?;
            let status = r.status().as_u16();
            Some((status, r.json::<Value>().await.unwrap_or(Value::Null)))
        }
    };
    let (status, body) = post(
        first.base_url(),
        ADMIN,
        "/api/admin/skus".into(),
        json!({"id": "drop", "total": 60, "channels": [{"id": "live", "quota": 20}, {"id": "web", "cap": 15}]}),
    )
    .await
    .unwrap();
    assert_eq!(status, 201, "{body}");

    let acks = Arc::new(AtomicUsize::new(0));
    let channels = [Some("live"), Some("web"), None];
    let clients: Vec<_> = (0..6usize)
        .map(|c| {
            let (acks, base, post) = (acks.clone(), first.base_url(), post.clone());
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for n in 0..200usize {
                    let channel = channels[(c + n) % 3];
                    let body = json!({"sku": "drop", "qty": 1, "buyer": format!("b{c}-{n}"),
                        "request_id": format!("r{c}-{n}"), "channel": channel});
                    let Some((status, r)) =
                        post(base.clone(), CHECKOUT, "/api/reservations".into(), body).await
                    else {
                        break;
                    };
                    if status != 201 {
                        continue;
                    }
                    let hold = r["hold"].as_str().unwrap().to_string();
                    acks.fetch_add(1, Ordering::Relaxed);
                    let committed = n % 2 == 0
                        && post(
                            base.clone(),
                            CHECKOUT,
                            format!("/api/holds/{hold}/commit"),
                            json!({}),
                        )
                        .await
                        .is_some_and(|(s, _)| s == 200);
                    acked.push((hold, committed));
                }
                acked
            })
        })
        .collect();
    wait_for_count("20 acknowledged reservations", &acks, 20).await;
    first.kill9();
    let mut acked = Vec::new();
    for c in clients {
        acked.extend(c.await.unwrap());
    }

    let second = HoldfastNode::serve(&args).await;
    let sku: Value = http
        .get(second.url("/api/skus/drop"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let n = |v: &Value, f: &str| v[f].as_u64().unwrap();
    assert_eq!(
        n(&sku, "available") + n(&sku, "held") + n(&sku, "sold"),
        60,
        "{sku}"
    );
    let (live, web) = (channel(&sku, "live"), channel(&sku, "web"));
    assert_eq!(n(live, "quota"), 20, "{sku}");
    assert!(n(web, "held") + n(web, "sold") <= 15, "cap kept: {sku}");
    assert!(n(live, "held") + n(web, "held") <= n(&sku, "held"), "{sku}");
    assert!(n(live, "sold") + n(web, "sold") <= n(&sku, "sold"), "{sku}");
    // The quota's units are where the channel's holds and sales say: its
    // used part is no more than what the channel holds and sold, and its
    // unsold part is still on sale.
    let quota_used = n(live, "quota") - n(live, "quota_available");
    assert!(quota_used <= n(live, "held") + n(live, "sold"), "{sku}");
    assert!(n(live, "quota_available") <= n(&sku, "available"), "{sku}");
    for c in [live, web] {
        assert!(n(c, "available") <= n(&sku, "available"), "{sku}");
    }
    assert!(
        n(web, "available") + n(web, "held") + n(web, "sold") <= 15,
        "the cap bounds what web offers: {sku}"
    );
    for (hold, committed) in &acked {
        let view: Value = http
            .get(second.url(&format!("/api/holds/{hold}")))
            .bearer_auth(CHECKOUT)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let want = if *committed { "committed" } else { "held" };
        assert!(
            view["state"] == want || (!committed && view["state"] == "committed"),
            "{hold}: {view}"
        );
    }
    // Attribution: each channel's sales are its order-stream entries.
    let orders = order_stream(&mut redis.con().await).await;
    for (id, c) in [("live", live), ("web", web)] {
        let entries = orders
            .iter()
            .filter(|o| o.get("event").map(String::as_str) == Some("committed"))
            .filter(|o| o.get("channel").map(String::as_str) == Some(id))
            .count() as u64;
        assert_eq!(entries, n(c, "sold"), "{id}: {sku}");
    }
}

/// The host's channel breakdown: per channel, holds and units reserved
/// and committed (conversion) and sales per bucket, in the stats frame and
/// `GET /api/admin/stats`; with Redis the counters and the per-channel
/// sales buckets (the dashboard's channel chart) survive a restart.
#[tokio::test]
async fn stats_break_sales_down_by_channel_and_survive_a_restart() {
    let Some(redis) = Redis::start() else { return };
    let mut a = demo_args();
    a.redis = Some(redis.url());
    a.persistence = holdfast_gateway::config::Persistence::Durable;
    let gw = Gateway::start(a.clone()).await;
    gw.create_sku(
        json!({"id": "tee", "total": 20, "buyer_limit": 0, "channels": [
        {"id": "live", "quota": 5}, {"id": "web"}]}),
    )
    .await;
    let mut holds = Vec::new();
    for (channel, qty) in [("live", 2), ("live", 1), ("web", 3), ("", 1)] {
        let mut body = json!({"sku": "tee", "qty": qty, "buyer": format!("b-{channel}-{qty}")});
        if !channel.is_empty() {
            body["channel"] = json!(channel);
        }
        let (status, r) = reserve(&gw, body).await;
        assert_eq!(status, 201, "{r}");
        holds.push(r["hold"].as_str().unwrap().to_string());
    }
    // One live hold and the web hold are bought; the pool's too.
    for hold in [&holds[0], &holds[2], &holds[3]] {
        let (status, r) = gw
            .call(
                "POST",
                &format!("/api/holds/{hold}/commit"),
                Some(CHECKOUT),
                Some(json!({})),
            )
            .await;
        assert_eq!(status, 200, "{r}");
    }
    let expect = |stats: &Value| {
        let channels = stats["channels"]
            .as_array()
            .unwrap_or_else(|| panic!("{stats}"));
        let of = |id: &str| {
            channels
                .iter()
                .find(|c| c["id"] == id)
                .unwrap_or_else(|| panic!("no {id} in {stats}"))
                .clone()
        };
        let (live, web) = (of("live"), of("web"));
        assert_eq!(channels.len(), 2, "only the named channels: {stats}");
        assert_eq!(
            (
                &live["reserved_holds"],
                &live["committed_holds"],
                &live["reserved_units"],
                &live["sold_units"]
            ),
            (&json!(2), &json!(1), &json!(3), &json!(2)),
            "{live}"
        );
        assert_eq!(
            (
                &web["reserved_holds"],
                &web["committed_holds"],
                &web["sold_units"]
            ),
            (&json!(1), &json!(1), &json!(3)),
            "{web}"
        );
        (live, web)
    };
    let (_, stats) = gw.call("GET", "/api/admin/stats", Some(ADMIN), None).await;
    let (live, web) = expect(&stats);
    let sum = |v: &Value| {
        v["sales"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u.as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(
        (sum(&live), sum(&web)),
        (2, 3),
        "sales over time per channel: {stats}"
    );
    assert_eq!(
        live["sales"].as_array().unwrap().len(),
        stats["sales"].as_array().unwrap().len(),
        "aligned with the show's buckets"
    );
    let before = [channel_sales(&stats, "live"), channel_sales(&stats, "web")];
    assert_eq!(
        before
            .iter()
            .map(|s| s.values().sum::<u64>())
            .collect::<Vec<_>>(),
        [2, 3]
    );
    gw.stop().await;
    let gw = Gateway::start(a).await;
    let (_, stats) = gw.call("GET", "/api/admin/stats", Some(ADMIN), None).await;
    expect(&stats);
    let after = [channel_sales(&stats, "live"), channel_sales(&stats, "web")];
    assert_eq!(
        after, before,
        "the per-channel sales over time survive the restart: {stats}"
    );
    gw.stop().await;
}

/// Channel `id`'s sales over time in a stats body, as bucket start (unix
/// ms) -> units, the empty buckets left out: the series of two reads
/// compare whatever buckets each starts and ends at.
fn channel_sales(stats: &Value, id: &str) -> std::collections::BTreeMap<u64, u64> {
    let start = stats["sales_start_ms"].as_u64().expect("sales_start_ms");
    let width = stats["bucket_ms"].as_u64().expect("bucket_ms");
    let channel = stats["channels"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["id"] == id))
        .unwrap_or_else(|| panic!("no channel {id} in {stats}"));
    channel["sales"]
        .as_array()
        .expect("sales")
        .iter()
        .enumerate()
        .filter_map(|(i, u)| {
            let units = u.as_u64().expect("units");
            (units > 0).then_some((start + i as u64 * width, units))
        })
        .collect()
}
