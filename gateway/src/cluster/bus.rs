//! The node's sharded pub/sub: one loop reads every push message (counts,
//! pool changes, demand, new definitions, the catalog, this node's inbox
//! and replies) and one loop publishes this node's counts.
//!
//! Messages are `|`-separated fields, first the kind:
//!
//! | channel | message | meaning |
//! |---|---|---|
//! | SKU | `c\|node\|available\|held\|sold\|seq\|pool\|version` | a node's counts |
//! | SKU | `p\|pool\|version` | the pool changed (a grant or return) |
//! | SKU | `w\|node\|units` | a node could not lease that many: give idle units back |
//! | SKU | `d\|version\|pool` | the definition changed (host): reload it |
//! | SKU | `f\|rebuild` | a rebuild asks every node for its claim ([`super::rebuild`]) |
//! | catalog | `n\|sku` | a SKU was created |
//! | inbox, reply | JSON | see [`super::forward`] |
//!
//! Pub/sub is at-most-once (a failover or reconnect can drop messages):
//! after a disconnection every SKU is read again from its `counts` hash,
//! and a node's counts are re-published every few seconds even unchanged.

use super::Cluster;
use super::counts::{Applied, NodeChannels, NodeCounts};
use super::scripts;
use holdfast_engine::{Counts, SkuIdx};
use metrics::counter;
use redis::{PushInfo, PushKind, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

/// Counts unchanged this long are published again (late joiners, lost
/// messages).
const REPUBLISH_EVERY: Duration = Duration::from_secs(3);

/// Subscribes to the catalog, this node's inbox and replies, and every
/// SKU of the catalog.
pub async fn subscribe_all(cluster: &Cluster, skus: &[(String, SkuIdx)]) -> anyhow::Result<()> {
    let mut conn = cluster.conn();
    conn.ssubscribe(cluster.keys.catalog_channel()).await?;
    conn.ssubscribe(cluster.keys.inbox(cluster.node)).await?;
    conn.ssubscribe(cluster.keys.replies(cluster.node)).await?;
    for (id, sku) in skus {
        conn.ssubscribe(cluster.keys.channel(id)).await?;
        snapshot(cluster, id, *sku).await;
    }
    Ok(())
}

/// Subscribes to one SKU's channel (a SKU created after start).
pub async fn subscribe_sku(cluster: &Cluster, id: &str) {
    if let Err(e) = cluster.conn().ssubscribe(cluster.keys.channel(id)).await {
        tracing::warn!(sku = id, error = %e, "cannot subscribe to a SKU's channel");
    }
    if let Some(sku) = cluster.engine.sku(id) {
        snapshot(cluster, id, sku).await;
    }
}

/// Reads a SKU's pool and every node's stored counts (start, gap, lost
/// messages).
pub async fn snapshot(cluster: &Cluster, id: &str, sku: SkuIdx) {
    let read = async {
        let (counts, def): (HashMap<String, String>, HashMap<String, String>) = redis::pipe()
            .cmd("HGETALL")
            .arg(cluster.keys.counts(id))
            .cmd("HGETALL")
            .arg(cluster.keys.def(id))
            .query_async(&mut cluster.conn())
            .await?;
        redis::RedisResult::Ok((counts, def))
    };
    match read.await {
        Ok((counts, def)) => {
            let nodes = counts
                .iter()
                .filter_map(|(node, v)| Some((node.parse().ok()?, parse_counts(v)?)))
                .collect();
            let num = |k: &str| def.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            let (pool, version) = (num("pool") as u32, num("version"));
            cluster
                .counts
                .replace(sku, pool, version, nodes, &free_of_def(&def));
        }
        Err(e) => tracing::warn!(sku = id, error = %e, "cannot read a SKU's counts"),
    }
}

/// A stored node's counts: `available:held:sold:seq|channel part`.
fn parse_counts(v: &str) -> Option<(NodeCounts, NodeChannels)> {
    let (counts, part) = v.split_once('|').unwrap_or((v, ""));
    let mut p = counts.split(':').map(str::parse::<u64>);
    let counts = NodeCounts {
        counts: Counts {
            available: p.next()?.ok()? as u32,
            held: p.next()?.ok()? as u32,
            sold: p.next()?.ok()? as u32,
        },
        seq: p.next()?.ok()?,
    };
    Some((counts, NodeChannels::parse(part)?))
}

/// The unleased channel buckets of a definition read whole, in the
/// scripts' `free` form.
fn free_of_def(def: &HashMap<String, String>) -> String {
    let Some(list) = def.get("channels") else {
        return String::new();
    };
    list.split(',')
        .filter(|c| !c.is_empty())
        .map(|c| {
            let q = def.get(&format!("q:{c}")).map_or("0", String::as_str);
            let a = def.get(&format!("a:{c}")).map_or("-", String::as_str);
            format!("{c}:{q}:{a}")
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Reads push messages until shutdown.
pub async fn run(
    cluster: Arc<Cluster>,
    mut push: UnboundedReceiver<PushInfo>,
    shutdown: CancellationToken,
) {
    loop {
        let info = tokio::select! {
            () = shutdown.cancelled() => return,
            info = push.recv() => match info {
                Some(info) => info,
                None => return,
            },
        };
        match info.kind {
            PushKind::SMessage | PushKind::Message => {
                let mut data = info.data.into_iter();
                let (Some(channel), Some(payload)) = (data.next(), data.next()) else {
                    continue;
                };
                let (Ok(channel), Ok(payload)) = (
                    redis::from_redis_value::<String>(channel),
                    redis::from_redis_value::<String>(payload),
                ) else {
                    continue;
                };
                on_message(&cluster, &channel, payload).await;
            }
            PushKind::Disconnection => {
                // Messages may have been lost, and a sharded channel whose
                // master failed over lives on another node now: subscribe
                // again (idempotent) and read everything again.
                counter!("holdfast_cluster_bus_reconnects_total").increment(1);
                let cluster = cluster.clone();
                tokio::spawn(async move { resubscribe(&cluster).await });
            }
            _ => {}
        }
    }
}

/// Subscribes to everything again and re-reads every SKU's counts.
pub async fn resubscribe(cluster: &Cluster) {
    let skus: Vec<(String, SkuIdx)> = local_skus(cluster)
        .into_iter()
        .map(|(sku, id)| (id, sku))
        .collect();
    if let Err(e) = subscribe_all(cluster, &skus).await {
        tracing::warn!(error = %e, "subscribing again after a disconnection failed; retried");
    }
}

/// Probes the cluster connections and replaces a stuck one (subscribing
/// everything again on the new shared connection).
pub async fn heal(cluster: Arc<Cluster>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(super::PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if cluster.heal().await {
            resubscribe(&cluster).await;
        }
    }
}

/// Renews this node's own inbox and reply subscriptions now and then: a
/// failover can move their slot without the client noticing at once, and
/// a node nobody can reach looks dead to the others.
pub async fn keep_subscribed(cluster: Arc<Cluster>, shutdown: CancellationToken) {
    let every = Duration::from_millis((cluster.settings.node_ttl_ms / 2).max(100));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let mut conn = cluster.conn();
        // Our own inbox: we publish a ping to it each round; if the last
        // one never came back, the subscription is gone (its master failed
        // over and the client only renews subscriptions on a connection
        // that comes back): subscribe afresh.
        let inbox = cluster.keys.inbox(cluster.node);
        if cluster.inbox_pings_lost() {
            counter!("holdfast_cluster_resubscribes_total").increment(1);
            for channel in [inbox.clone(), cluster.keys.replies(cluster.node)] {
                resubscribe_channel(&mut conn, &channel).await;
            }
        }
        let ping = cluster.next_inbox_ping();
        let _: redis::RedisResult<i64> = redis::cmd("SPUBLISH")
            .arg(&inbox)
            .arg(format!("ping|{ping}"))
            .query_async(&mut conn)
            .await;
        // A SKU channel silent past two and a half republish rounds lost its
        // subscription the same way: subscribe afresh and read again.
        for (sku, id) in local_skus(&cluster) {
            if cluster.counts.silent_for(sku, REPUBLISH_EVERY * 5 / 2) {
                counter!("holdfast_cluster_resubscribes_total").increment(1);
                resubscribe_channel(&mut conn, &cluster.keys.channel(&id)).await;
                snapshot(&cluster, &id, sku).await;
                cluster.counts.heard(sku);
            }
        }
    }
}

/// Unsubscribes and subscribes again, so the subscription is made on the
/// channel's current master.
async fn resubscribe_channel(conn: &mut redis::cluster_async::ClusterConnection, channel: &str) {
    let _ = conn.sunsubscribe(channel).await;
    if let Err(e) = conn.ssubscribe(channel).await {
        tracing::debug!(%channel, error = %e, "subscribing again failed; retried");
    }
}

fn local_skus(cluster: &Cluster) -> Vec<(SkuIdx, String)> {
    cluster
        .engine
        .snapshots()
        .into_iter()
        .map(|s| (s.sku, s.id.to_string()))
        .collect()
}

async fn on_message(cluster: &Arc<Cluster>, channel: &str, payload: String) {
    let keys = &cluster.keys;
    if channel == keys.inbox(cluster.node) {
        if let Some(n) = payload.strip_prefix("ping|") {
            cluster.inbox_pong(n.parse().unwrap_or(0));
            return;
        }
        let cluster = cluster.clone();
        tokio::spawn(async move { super::forward::handle(&cluster, &payload).await });
        return;
    }
    if channel == keys.replies(cluster.node) {
        cluster.forward.complete(&payload);
        return;
    }
    if channel == keys.catalog_channel() {
        if let Some(id) = payload.strip_prefix("n|") {
            match cluster.load_def(id).await {
                Ok(_) => subscribe_sku(cluster, id).await,
                Err(e) => tracing::warn!(sku = id, error = %e, "cannot load a new SKU"),
            }
        }
        return;
    }
    let Some(id) = keys.sku_of_channel(channel) else {
        return;
    };
    let Some(sku) = cluster.engine.sku(id) else {
        return;
    };
    cluster.counts.heard(sku);
    let f: Vec<&str> = payload.split('|').collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    match f.first().copied() {
        Some("c") => {
            let (Some(node), Some(a), Some(h), Some(s), Some(seq), Some(pool), Some(v)) =
                (num(1), num(2), num(3), num(4), num(5), num(6), num(7))
            else {
                return;
            };
            cluster.counts.set_pool(sku, pool as u32, v);
            cluster
                .counts
                .set_free(sku, f.get(8).copied().unwrap_or(""), v);
            if let Some(part) = NodeChannels::parse(f.get(9).copied().unwrap_or("")) {
                cluster.counts.set_node_channels(sku, node as u8, part);
            }
            let counts = NodeCounts {
                counts: Counts {
                    available: a as u32,
                    held: h as u32,
                    sold: s as u32,
                },
                seq,
            };
            if cluster.counts.set_node(sku, node as u8, counts) == Applied::Gap {
                counter!("holdfast_cluster_count_gaps_total").increment(1);
                snapshot(cluster, id, sku).await;
            }
        }
        Some("p") => {
            if let (Some(pool), Some(v)) = (num(1), num(2)) {
                cluster.counts.set_pool(sku, pool as u32, v);
                cluster
                    .counts
                    .set_free(sku, f.get(3).copied().unwrap_or(""), v);
            }
        }
        Some("w") if num(1) != Some(u64::from(cluster.node)) => cluster.demanded(sku),
        Some("f") => {
            if let Some(rid) = f.get(1) {
                tokio::spawn(cluster.clone().rebuild_requested(sku, (*rid).to_string()));
            }
        }
        Some("d") => {
            if let Err(e) = cluster.load_def(id).await {
                tracing::warn!(sku = id, error = %e, "cannot reload a SKU's definition");
            }
        }
        _ => {}
    }
}

/// Publishes this node's counts of every SKU that changed, each broadcast
/// interval, and of every SKU now and then.
pub async fn publish(cluster: Arc<Cluster>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(cluster.broadcast_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: HashMap<SkuIdx, (Counts, String)> = HashMap::new();
    let mut seq: u64 = cluster.epoch << 32;
    let mut last_full = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let full = last_full.elapsed() >= REPUBLISH_EVERY;
        if full {
            last_full = tokio::time::Instant::now();
        }
        for snap in cluster.engine.snapshots() {
            let counts = snap.counts;
            let part = NodeChannels::of(&snap).encode();
            if !full
                && last
                    .get(&snap.sku)
                    .is_some_and(|(c, p)| *c == counts && *p == part)
            {
                continue;
            }
            seq += 1;
            let sent = scripts::COUNTS
                .key(cluster.keys.counts(&snap.id))
                .key(cluster.keys.def(&snap.id))
                .arg(cluster.node)
                .arg(counts.available)
                .arg(counts.held)
                .arg(counts.sold)
                .arg(seq)
                .arg(cluster.keys.channel(&snap.id))
                .arg(&part)
                .invoke_async::<u64>(&mut cluster.conn())
                .await;
            match sent {
                Ok(_version) => {
                    last.insert(snap.sku, (counts, part));
                }
                Err(e) => {
                    tracing::debug!(sku = &*snap.id, error = %e, "publishing counts failed; retried");
                    break;
                }
            }
        }
    }
}

/// Parses a Redis value into a string, for messages.
pub fn text(v: Value) -> Option<String> {
    redis::from_redis_value(v).ok()
}
