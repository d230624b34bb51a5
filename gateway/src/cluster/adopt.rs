//! Nodes that went silent: finding them, adopting them, and ending their
//! state in Redis.
//!
//! Every node looks at the registered nodes every half ownership ttl. A
//! node whose ownership lapsed in Redis is adopted by the first that
//! notices ([`scripts::ADOPT`]): the adoption bumps the silent node's epoch,
//! so from then on its journal cannot write (a paused process that resumes
//! finds itself fenced and stops). Only then is its state read as final:
//!
//! - its unsold units (each SKU's `available`) go back to the pools;
//! - its live holds stay, and end as they would have: a commit or release
//!   forwarded to it runs here, on its state in Redis, and holds past
//!   their deadline expire (units back to the pools);
//! - units leave the node's slot first (with a transfer record in the same
//!   transaction) and reach the pool second, by an idempotent script; an
//!   adopter that dies between the two leaves the record for the next.
//!
//! The adopter renews the adopted ownership; when the node restarts it
//! takes its state back (a new epoch), and the adopter lets go.

use super::{Cluster, redis_error, scripts};
use crate::error::ApiError;
use crate::journal::keys::{
    ChannelRecord, Ended, EndedRecord, HoldRecord, Keys, buyer_field, ended_bucket,
    ended_bucket_ttl_ms, hold_field,
};
use crate::protocol::{Code, HoldLineView, HoldStatus, HoldView};
use axum::http::StatusCode;
use holdfast_engine::limits::CART_LINES_MAX;
use holdfast_engine::{HoldId, hex16};
use metrics::counter;
use redis::cluster_async::ClusterConnection;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use super::counts::{NodeChannel, NodeChannels};
use super::forward::Request;

/// Retries of one adopted-state transaction that lost a race (`WATCH`).
const TXN_RETRIES_MAX: usize = 8;

/// How an adopted hold ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum How {
    Commit,
    Release,
    Expire,
}

/// One line of a hold, as stored in the node's slot.
#[derive(Debug, Clone)]
struct Line {
    sku: String,
    record: HoldRecord,
}

/// Watches the registered nodes: counts the live ones and adopts the
/// silent ones.
pub async fn watcher(cluster: Arc<Cluster>, shutdown: CancellationToken) {
    let every = Duration::from_millis((cluster.settings.node_ttl_ms / 2).max(100));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = cluster.fenced.token.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = look(&cluster, &shutdown).await {
            tracing::debug!(error = %e, "looking for silent nodes failed; retried");
        }
    }
}

async fn look(cluster: &Arc<Cluster>, shutdown: &CancellationToken) -> redis::RedisResult<()> {
    let mut conn = cluster.conn();
    let nodes: HashMap<u8, String> = redis::cmd("HGETALL")
        .arg(cluster.keys.registry())
        .query_async(&mut conn)
        .await?;
    let mut live = 1;
    for &node in nodes.keys() {
        if node == cluster.node {
            continue;
        }
        if let Some(epoch) = cluster.adopted.get(&node).map(|e| *e) {
            // Adopted for a forwarded hold operation: its upkeep starts here.
            if cluster.kept.insert(node) {
                let (cluster, shutdown) = (cluster.clone(), shutdown.clone());
                tokio::spawn(async move { keep(cluster, node, epoch, shutdown).await });
            }
            continue;
        }
        let reply: Vec<redis::Value> = scripts::ADOPT
            .key(cluster.keys.owner(node))
            .key(cluster.keys.node_journal(node).journal())
            .arg(cluster.node)
            .arg(cluster.settings.node_ttl_ms)
            .invoke_async(&mut conn)
            .await?;
        let head: String = redis::from_redis_value(reply[0].clone())?;
        if head == "alive" {
            live += 1;
            continue;
        }
        let epoch: u64 = redis::from_redis_value(reply[1].clone())?;
        tracing::warn!(
            node,
            epoch,
            "adopting a silent node: its unsold units go back to the pools"
        );
        counter!("holdfast_cluster_adoptions_total").increment(1);
        cluster.adopted.insert(node, epoch);
        cluster.kept.insert(node);
        let (cluster, shutdown) = (cluster.clone(), shutdown.clone());
        tokio::spawn(async move { keep(cluster, node, epoch, shutdown).await });
    }
    cluster.live_nodes.store(live, Ordering::Relaxed);
    Ok(())
}

/// Looks after an adopted node until it comes back or shutdown: renews
/// the adoption, returns its unsold units, expires its holds.
async fn keep(cluster: Arc<Cluster>, node: u8, epoch: u64, shutdown: CancellationToken) {
    let every = Duration::from_millis((cluster.settings.node_ttl_ms / 4).max(50));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reclaimed = false;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let renewed: redis::RedisResult<Vec<redis::Value>> = scripts::HEARTBEAT
            .key(cluster.keys.owner(node))
            .key(cluster.keys.node_journal(node).journal())
            .arg(epoch)
            .arg(cluster.settings.node_ttl_ms)
            .invoke_async(&mut cluster.owner_conn())
            .await;
        match renewed {
            Ok(r) if super::bus::text(r[0].clone()).as_deref() == Some("fenced") => {
                tracing::info!(node, "an adopted node took its state back");
                break;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(node, error = %e, "renewing an adoption failed");
                continue;
            }
        }
        let state = Adopted::new(&cluster, node, epoch).await;
        let state = match state {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(node, error = %e, "cannot reach an adopted node's state");
                continue;
            }
        };
        if !reclaimed {
            match state.reclaim().await {
                Ok(()) => reclaimed = true,
                Err(e) => {
                    tracing::warn!(node, error = %e, "returning an adopted node's units failed; retried")
                }
            }
        }
        if let Err(e) = state.expire_due().await {
            tracing::debug!(node, error = %e, "expiring an adopted node's holds failed; retried");
        }
        if let Err(e) = state.redrive().await {
            tracing::debug!(node, error = %e, "finishing an adopted node's transfers failed; retried");
        }
    }
    cluster.adopted.remove(&node);
    cluster.kept.remove(&node);
}

/// An adopted node's state in Redis, worked on through a connection of
/// its own (its transactions `WATCH` keys: no other user may interleave
/// a `MULTI` on that connection).
struct Adopted<'c> {
    cluster: &'c Cluster,
    node: u8,
    epoch: u64,
    keys: Keys,
    conn: ClusterConnection,
}

impl<'c> Adopted<'c> {
    async fn new(cluster: &'c Cluster, node: u8, epoch: u64) -> redis::RedisResult<Self> {
        Ok(Self {
            cluster,
            node,
            epoch,
            keys: cluster.keys.node_journal(node),
            conn: cluster.client.get_async_connection().await?,
        })
    }

    async fn skus(&mut self) -> redis::RedisResult<Vec<String>> {
        redis::cmd("HKEYS")
            .arg(self.keys.catalog())
            .query_async(&mut self.conn)
            .await
    }

    /// Every line of `hold` (in whichever of the node's SKUs they are).
    async fn find(&mut self, hold: HoldId) -> redis::RedisResult<Vec<Line>> {
        let skus = self.skus().await?;
        let fields: Vec<String> = (0..CART_LINES_MAX as u8)
            .map(|l| hold_field(hold, l).as_str().to_owned())
            .collect();
        let mut pipe = redis::pipe();
        for sku in &skus {
            pipe.cmd("HMGET").arg(self.keys.holds(sku)).arg(&fields);
        }
        let found: Vec<Vec<Option<Vec<u8>>>> = pipe.query_async(&mut self.conn).await?;
        let mut lines: Vec<Line> = skus
            .into_iter()
            .zip(found)
            .flat_map(|(sku, values)| {
                values
                    .into_iter()
                    .flatten()
                    .filter_map(|b| HoldRecord::decode(&b))
                    .map(move |record| Line {
                        sku: sku.clone(),
                        record,
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        lines.sort_by_key(|l| l.record.line);
        Ok(lines)
    }

    /// Ends a hold in the node's slot, in one transaction guarded by the
    /// node's epoch; its units go to the pools (release, expiry) or to
    /// sold (commit). Returns the lines ended (empty if it was gone).
    async fn end(&mut self, hold: HoldId, how: How) -> Result<Vec<Line>, ApiError> {
        for _ in 0..TXN_RETRIES_MAX {
            let journal = self.keys.journal().to_string();
            let _: () = redis::cmd("WATCH")
                .arg(&journal)
                .query_async(&mut self.conn)
                .await
                .map_err(redis_error)?;
            let epoch: Option<u64> = redis::cmd("HGET")
                .arg(&journal)
                .arg("epoch")
                .query_async(&mut self.conn)
                .await
                .map_err(redis_error)?;
            if epoch != Some(self.epoch) {
                let _: redis::RedisResult<()> =
                    redis::cmd("UNWATCH").query_async(&mut self.conn).await;
                return Err(node_back(self.node));
            }
            let lines = self.find(hold).await.map_err(redis_error)?;
            if lines.is_empty() {
                let _: redis::RedisResult<()> =
                    redis::cmd("UNWATCH").query_async(&mut self.conn).await;
                return Ok(lines);
            }
            let now = self.cluster.engine.now_ms();
            let mut pipe = redis::pipe();
            pipe.atomic();
            let mut transfers = Vec::new();
            // The node's per-channel counts, as its journal keeps them,
            // follow the lines that end (its next adopter reads them).
            let mut records: HashMap<String, Vec<ChannelRecord>> = HashMap::new();
            for line in lines.iter().filter(|l| l.record.channel > 0) {
                if !records.contains_key(&line.sku) {
                    let list = self.channel_records(&line.sku).await;
                    records.insert(line.sku.clone(), list);
                }
            }
            for line in &lines {
                let r = &line.record;
                let quota = r.quota.min(r.qty);
                let record = records
                    .get_mut(&line.sku)
                    .and_then(|l| l.get_mut(usize::from(r.channel.checked_sub(1)?)));
                let channel = record.as_ref().map(|c| c.id.clone());
                if let Some(c) = record {
                    c.held = c.held.saturating_sub(r.qty);
                    c.quota_held = c.quota_held.saturating_sub(quota);
                    if how == How::Commit {
                        c.sold += r.qty;
                        c.quota_sold += quota;
                    }
                }
                pipe.cmd("HDEL")
                    .arg(self.keys.holds(&line.sku))
                    .arg(hold_field(hold, r.line).as_bytes())
                    .ignore();
                let sku_key = self.keys.sku(&line.sku);
                pipe.cmd("HINCRBY")
                    .arg(&sku_key)
                    .arg("held")
                    .arg(-i64::from(r.qty))
                    .ignore();
                let ended = if how == How::Commit {
                    pipe.cmd("HINCRBY")
                        .arg(&sku_key)
                        .arg("sold")
                        .arg(r.qty)
                        .ignore();
                    pipe.cmd("XADD")
                        .arg(self.keys.orders())
                        .arg("*")
                        .arg("event")
                        .arg("committed")
                        .arg("seq")
                        .arg(0)
                        .arg("at_ms")
                        .arg(now)
                        .arg("hold")
                        .arg(hex16(hold.to_raw()).as_str())
                        .arg("line")
                        .arg(r.line)
                        .arg("lines")
                        .arg(r.lines)
                        .arg("sku")
                        .arg(&line.sku)
                        .arg("qty")
                        .arg(r.qty)
                        .arg("returned")
                        .arg(0)
                        .arg("buyer")
                        .arg(buyer_field(holdfast_engine::BuyerId(r.buyer)))
                        .arg("adopted_by")
                        .arg(self.cluster.node)
                        .ignore();
                    Ended::Committed
                } else {
                    // The units leave this node: to its SKU's pool.
                    pipe.cmd("HINCRBY")
                        .arg(&sku_key)
                        .arg("total")
                        .arg(-i64::from(r.qty))
                        .ignore();
                    if r.counted {
                        pipe.cmd("HINCRBY")
                            .arg(self.keys.buyers(&line.sku))
                            .arg(buyer_field(holdfast_engine::BuyerId(r.buyer)))
                            .arg(-i64::from(r.qty))
                            .ignore();
                    }
                    // Per bucket: quota units to the channel's quota, the
                    // rest to the pool, and a capped channel's headroom back.
                    let mut parts = vec![("pool".to_string(), r.qty - quota)];
                    if let Some(c) = &channel {
                        parts.push((format!("q:{c}"), quota));
                        parts.push((format!("a:{c}"), r.qty));
                    }
                    for (field, units) in parts.into_iter().filter(|(_, u)| *u > 0) {
                        let op = self.cluster.next_op(self.epoch);
                        pipe.cmd("HSET")
                            .arg(self.cluster.keys.transfers(self.node))
                            .arg(op)
                            .arg(format!("{}|{units}|{field}", line.sku))
                            .ignore();
                        transfers.push((line.sku.clone(), op, units, field));
                    }
                    if how == How::Expire {
                        Ended::Expired
                    } else {
                        Ended::Released
                    }
                };
                let record = EndedRecord {
                    ended,
                    line: r.line,
                    lines: r.lines,
                    sku: line.sku.clone(),
                    qty: r.qty,
                    sold: if how == How::Commit { r.qty } else { 0 },
                    deadline_ms: r.deadline_ms,
                    ended_at_ms: now,
                };
                let bucket = ended_bucket(now);
                pipe.cmd("HSET")
                    .arg(self.keys.ended(bucket))
                    .arg(hold_field(hold, r.line).as_bytes())
                    .arg(record.encode())
                    .ignore();
                pipe.cmd("PEXPIRE")
                    .arg(self.keys.ended(bucket))
                    .arg(ended_bucket_ttl_ms(bucket, ENDED_RETENTION_MS, now))
                    .ignore();
            }
            for (sku, list) in &records {
                pipe.cmd("HSET")
                    .arg(self.keys.sku(sku))
                    .arg("channels")
                    .arg(serde_json::to_string(list).unwrap_or_default())
                    .ignore();
            }
            let done: Option<()> = pipe
                .query_async(&mut self.conn)
                .await
                .map_err(redis_error)?;
            if done.is_none() {
                continue; // the node's record changed meanwhile: look again
            }
            for (sku, op, units, field) in transfers {
                self.transfer(&sku, op, units, &field).await?;
            }
            self.publish(&lines).await;
            counter!("holdfast_cluster_adopted_hold_ends_total").increment(1);
            return Ok(lines);
        }
        Err(ApiError::unavailable(
            "an adopted node's state kept changing: retry",
        ))
    }

    /// A SKU's channels as the node's journal keeps them (in the order
    /// they were added: a hold record names one by its place plus one).
    async fn channel_records(&mut self, sku: &str) -> Vec<ChannelRecord> {
        let json: Option<String> = redis::cmd("HGET")
            .arg(self.keys.sku(sku))
            .arg("channels")
            .query_async(&mut self.conn)
            .await
            .ok()
            .flatten();
        json.filter(|j| !j.is_empty())
            .and_then(|j| serde_json::from_str(&j).ok())
            .unwrap_or_default()
    }

    /// Moves `units` of a transfer record into the SKU's bucket `field`
    /// (`pool`, `q:<channel>`, `a:<channel>`; idempotent by op id), then
    /// drops the record. A bucket the SKU no longer has (a cap lifted) is
    /// skipped.
    async fn transfer(
        &mut self,
        sku_id: &str,
        op: u64,
        units: u32,
        field: &str,
    ) -> Result<(), ApiError> {
        let sku = self.cluster.engine.sku(sku_id);
        if let Some(sku) = sku {
            self.cluster
                .lease_op(
                    sku,
                    super::lease::LeaseOp {
                        id: sku_id,
                        field,
                        node: self.node,
                        op,
                        kind: super::lease::Kind::Return,
                        units,
                        least: 0,
                    },
                )
                .await?;
        } else {
            // Not known here yet: the script by itself, no local record.
            let _: Vec<redis::Value> = scripts::LEASE
                .key(self.cluster.keys.def(sku_id))
                .key(self.cluster.keys.lease(sku_id))
                .arg(self.node)
                .arg(op)
                .arg("return")
                .arg(units)
                .arg(0)
                .arg(1)
                .arg(self.cluster.keys.channel(sku_id))
                .arg(field)
                .arg(super::lease::ledger_suffix(field))
                .invoke_async(&mut self.conn)
                .await
                .map_err(redis_error)?;
        }
        let _: () = redis::cmd("HDEL")
            .arg(self.cluster.keys.transfers(self.node))
            .arg(op)
            .query_async(&mut self.conn)
            .await
            .map_err(redis_error)?;
        counter!("holdfast_cluster_transfers_total").increment(1);
        Ok(())
    }

    /// Finishes transfers an earlier adopter left half done.
    async fn redrive(&self) -> Result<(), ApiError> {
        let mut me = Adopted::new(self.cluster, self.node, self.epoch)
            .await
            .map_err(redis_error)?;
        let pending: HashMap<u64, String> = redis::cmd("HGETALL")
            .arg(self.cluster.keys.transfers(self.node))
            .query_async(&mut me.conn)
            .await
            .map_err(redis_error)?;
        for (op, what) in pending {
            let mut f = what.split('|');
            let (Some(sku), Some(units)) = (f.next(), f.next()) else {
                continue;
            };
            let units: u32 = units.parse().unwrap_or(0);
            let field = f.next().unwrap_or("pool");
            me.transfer(sku, op, units, field).await?;
        }
        Ok(())
    }

    /// The node's unsold units of every SKU go back to the pools: what the
    /// SKU's lease ledger says the node holds, less what its journal says
    /// it holds in carts or sold. (The journal's own `available` can lag
    /// the ledger: a grant lands in the SKU's slot first and in the node's
    /// journal with its next batch, so a node stopped in between would
    /// strand the granted units.) The node is fenced, so its ledger entry
    /// no longer moves but for our own operations.
    async fn reclaim(&self) -> Result<(), ApiError> {
        let mut me = Adopted::new(self.cluster, self.node, self.epoch)
            .await
            .map_err(redis_error)?;
        for sku in me.skus().await.map_err(redis_error)? {
            for _ in 0..TXN_RETRIES_MAX {
                // Counters, and each node's last answer (text).
                let ledger: HashMap<String, String> = redis::cmd("HGETALL")
                    .arg(me.cluster.keys.lease(&sku))
                    .query_async(&mut me.conn)
                    .await
                    .map_err(redis_error)?;
                let counter = |field: String| {
                    ledger
                        .get(&field)
                        .and_then(|v| v.parse::<i64>().ok())
                        .unwrap_or(0)
                };
                let leased = |suffix: &str| {
                    counter(format!("{}:g{suffix}", me.node))
                        - counter(format!("{}:r{suffix}", me.node))
                };
                let sku_key = me.keys.sku(&sku);
                let journal = me.keys.journal().to_string();
                let (_, epoch, held, sold, channels): (
                    (),
                    Option<u64>,
                    Option<i64>,
                    Option<i64>,
                    Option<String>,
                ) = redis::pipe()
                    .cmd("WATCH")
                    .arg(&journal)
                    .arg(&sku_key)
                    .cmd("HGET")
                    .arg(&journal)
                    .arg("epoch")
                    .cmd("HGET")
                    .arg(&sku_key)
                    .arg("held")
                    .cmd("HGET")
                    .arg(&sku_key)
                    .arg("sold")
                    .cmd("HGET")
                    .arg(&sku_key)
                    .arg("channels")
                    .query_async(&mut me.conn)
                    .await
                    .map_err(redis_error)?;
                if epoch != Some(me.epoch) {
                    let _: redis::RedisResult<()> =
                        redis::cmd("UNWATCH").query_async(&mut me.conn).await;
                    return Err(node_back(me.node));
                }
                let kept = held.unwrap_or(0) + sold.unwrap_or(0);
                // Each bucket's unsold units: what the ledger says the node
                // leased of it, less what its journal holds or sold of it.
                let records: Vec<ChannelRecord> = channels
                    .filter(|j| !j.is_empty())
                    .and_then(|j| serde_json::from_str(&j).ok())
                    .unwrap_or_default();
                let quota_kept: i64 = records
                    .iter()
                    .map(|c| i64::from(c.quota_held + c.quota_sold))
                    .sum();
                let mut unsold = vec![("pool".to_string(), leased("") - (kept - quota_kept))];
                for c in &records {
                    let q = format!("q:{}", c.id);
                    let a = format!("a:{}", c.id);
                    unsold.push((
                        q.clone(),
                        leased(&format!(":{q}")) - i64::from(c.quota_held + c.quota_sold),
                    ));
                    unsold.push((
                        a.clone(),
                        leased(&format!(":{a}")) - i64::from(c.held + c.sold),
                    ));
                }
                let unsold: Vec<(String, u32)> = unsold
                    .into_iter()
                    .filter_map(|(f, u)| Some((f, u32::try_from(u).ok().filter(|u| *u > 0)?)))
                    .collect();
                if unsold.is_empty() {
                    let _: redis::RedisResult<()> =
                        redis::cmd("UNWATCH").query_async(&mut me.conn).await;
                    break;
                }
                let mut pipe = redis::pipe();
                pipe.atomic()
                    .cmd("HSET")
                    .arg(&sku_key)
                    .arg("available")
                    .arg(0)
                    .arg("total")
                    .arg(kept)
                    .ignore();
                if !records.is_empty() {
                    // Its quotas and headroom leave it too.
                    let left: Vec<ChannelRecord> = records
                        .iter()
                        .map(|c| ChannelRecord {
                            quota_available: 0,
                            cap: c.cap.map(|_| c.held + c.sold),
                            ..c.clone()
                        })
                        .collect();
                    pipe.cmd("HSET")
                        .arg(&sku_key)
                        .arg("channels")
                        .arg(serde_json::to_string(&left).unwrap_or_default())
                        .ignore();
                }
                let mut transfers = Vec::new();
                for (field, units) in unsold {
                    let op = me.cluster.next_op(me.epoch);
                    pipe.cmd("HSET")
                        .arg(me.cluster.keys.transfers(me.node))
                        .arg(op)
                        .arg(format!("{sku}|{units}|{field}"))
                        .ignore();
                    transfers.push((op, units, field));
                }
                let done: Option<()> = pipe.query_async(&mut me.conn).await.map_err(redis_error)?;
                if done.is_none() {
                    continue;
                }
                for (op, units, field) in transfers {
                    me.transfer(&sku, op, units, &field).await?;
                    if !field.starts_with("a:") {
                        counter!("holdfast_cluster_reclaimed_units_total")
                            .increment(u64::from(units));
                    }
                }
                break;
            }
        }
        me.publish_all().await;
        Ok(())
    }

    /// Expires the holds whose deadline passed.
    async fn expire_due(&self) -> Result<(), ApiError> {
        let mut me = Adopted::new(self.cluster, self.node, self.epoch)
            .await
            .map_err(redis_error)?;
        let now = me.cluster.engine.now_ms();
        let mut due = Vec::new();
        for sku in me.skus().await.map_err(redis_error)? {
            let lines: HashMap<String, Vec<u8>> = redis::cmd("HGETALL")
                .arg(me.keys.holds(&sku))
                .query_async(&mut me.conn)
                .await
                .map_err(redis_error)?;
            for bytes in lines.values() {
                if let Some(r) = HoldRecord::decode(bytes)
                    && r.deadline_ms <= now
                    && let Some(hold) = HoldId::from_raw(r.hold)
                    && !due.contains(&hold)
                {
                    due.push(hold);
                }
            }
        }
        for hold in due {
            me.end(hold, How::Expire).await?;
        }
        Ok(())
    }

    /// Publishes the node's counts of the SKUs `lines` touched.
    async fn publish(&mut self, lines: &[Line]) {
        let mut skus: Vec<&str> = lines.iter().map(|l| l.sku.as_str()).collect();
        skus.dedup();
        for sku in skus {
            self.publish_sku(sku).await;
        }
    }

    async fn publish_all(&mut self) {
        if let Ok(skus) = self.skus().await {
            for sku in skus {
                self.publish_sku(&sku).await;
            }
        }
    }

    async fn publish_sku(&mut self, sku: &str) {
        let read: redis::RedisResult<Vec<Option<u32>>> = redis::cmd("HMGET")
            .arg(self.keys.sku(sku))
            .arg("available")
            .arg("held")
            .arg("sold")
            .query_async(&mut self.conn)
            .await;
        let Ok(c) = read else { return };
        // Its share of each channel: nothing left to sell (its unsold
        // units went back), what it still holds and what it sold.
        let part = NodeChannels {
            pool_available: 0,
            channels: self
                .channel_records(sku)
                .await
                .into_iter()
                .map(|r| NodeChannel {
                    id: r.id,
                    quota: holdfast_engine::Counts {
                        available: 0,
                        held: r.quota_held,
                        sold: r.quota_sold,
                    },
                    held: r.held,
                    sold: r.sold,
                    headroom: 0,
                })
                .collect(),
        };
        let seq = self.cluster.next_op(self.epoch);
        let _: redis::RedisResult<u64> = scripts::COUNTS
            .key(self.cluster.keys.counts(sku))
            .key(self.cluster.keys.def(sku))
            .arg(self.node)
            .arg(c[0].unwrap_or(0))
            .arg(c[1].unwrap_or(0))
            .arg(c[2].unwrap_or(0))
            .arg(seq)
            .arg(self.cluster.keys.channel(sku))
            .arg(part.encode())
            .invoke_async(&mut self.conn)
            .await;
    }
}

/// How long ended holds of an adopted node stay findable (the node's own
/// setting is not known here; a day, the default).
const ENDED_RETENTION_MS: u64 = 86_400_000;

/// Whether `node`'s ownership still lasts (Redis time).
pub async fn is_alive(cluster: &Cluster, node: u8) -> bool {
    let mut conn = cluster.conn();
    let owner: redis::RedisResult<(Option<u64>, Option<String>)> = redis::pipe()
        .cmd("HGET")
        .arg(cluster.keys.owner(node))
        .arg("until_ms")
        .cmd("HGET")
        .arg(cluster.keys.owner(node))
        .arg("adopted_by")
        .query_async(&mut conn)
        .await;
    let time: redis::RedisResult<(u64, u64)> = redis::cmd("TIME").query_async(&mut conn).await;
    match (owner, time) {
        (Ok((Some(until), None)), Ok((s, us))) => until > s * 1000 + us / 1000,
        _ => false,
    }
}

fn node_back(node: u8) -> ApiError {
    ApiError::unavailable(format!(
        "node {node} came back and owns its holds again: retry"
    ))
}

/// Runs `request` on the state of `owner`, a node that does not listen:
/// here if this node adopted it (adopting it now if its ownership lapsed),
/// or at the node that did.
pub async fn run_on_adopted(
    cluster: &Cluster,
    owner: u8,
    request: Request,
) -> Result<serde_json::Value, ApiError> {
    let epoch = match cluster.adopted.get(&owner).map(|e| *e) {
        Some(epoch) => epoch,
        None => {
            let mut conn = cluster.conn();
            let reply: Vec<redis::Value> = scripts::ADOPT
                .key(cluster.keys.owner(owner))
                .key(cluster.keys.node_journal(owner).journal())
                .arg(cluster.node)
                .arg(cluster.settings.node_ttl_ms)
                .invoke_async(&mut conn)
                .await
                .map_err(redis_error)?;
            let head: String = super::value(&reply[0])?;
            if head == "alive" {
                let by: String = redis::from_redis_value(reply[1].clone()).unwrap_or_default();
                if let Ok(adopter) = by.parse::<u8>()
                    && adopter != cluster.node
                {
                    // Another node adopted it: that node runs it.
                    return Box::pin(super::forward::send(cluster, adopter, request)).await;
                }
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Code::Unavailable,
                    format!(
                        "node {owner}, which made this hold, does not answer; its hold ends elsewhere once its lease \
                         lapses (within {} ms): retry then",
                        cluster.settings.node_ttl_ms
                    ),
                ));
            }
            let epoch: u64 = super::value(&reply[1])?;
            cluster.adopted.insert(owner, epoch);
            epoch
        }
    };
    let mut state = Adopted::new(cluster, owner, epoch)
        .await
        .map_err(redis_error)?;
    let hold: HoldId = request.hold().parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            Code::InvalidHoldId,
            "hold must be a hold id",
        )
    })?;
    let lines = state.find(hold).await.map_err(redis_error)?;
    let live = !lines.is_empty();
    let expired = lines
        .first()
        .is_some_and(|l| l.record.deadline_ms <= cluster.engine.now_ms());
    if live && expired {
        state.end(hold, How::Expire).await?;
    }
    if !live || expired {
        // Ended already: say how, as the node would have.
        return match request {
            Request::Hold { hold } => cluster
                .ops()
                .ok_or_else(|| ApiError::unavailable("starting up"))?
                .hold_in(owner, &hold)
                .await
                .map(|v| serde_json::to_value(v).unwrap_or_default()),
            _ => Err(cluster
                .ops()
                .ok_or_else(|| ApiError::unavailable("starting up"))?
                .ended_refusal_in(owner, hold)
                .await),
        };
    }
    let view = |lines: &[Line], status| HoldView {
        hold: hold.to_string(),
        state: status,
        deadline_ms: lines.first().map_or(0, |l| l.record.deadline_ms),
        lines: lines
            .iter()
            .map(|l| HoldLineView {
                sku: l.sku.clone(),
                qty: l.record.qty,
                sold: 0,
            })
            .collect(),
    };
    let body = match request {
        Request::Hold { .. } => serde_json::to_value(view(&lines, HoldStatus::Held)),
        Request::Commit(c) => {
            if c.qty.is_some() || c.lines.is_some() {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    Code::Unavailable,
                    "a partial commit of a hold whose node is down is not supported: commit it whole",
                ));
            }
            let ended = state.end(hold, How::Commit).await?;
            let sold: u32 = ended.iter().map(|l| l.record.qty).sum();
            serde_json::to_value(crate::protocol::Committed {
                id: c.id,
                hold: hold.to_string(),
                sold,
                returned: 0,
                replayed: false,
            })
        }
        Request::Release(r) => {
            state.end(hold, How::Release).await?;
            serde_json::to_value(crate::protocol::Released {
                id: r.id,
                hold: hold.to_string(),
            })
        }
        Request::Extend(_) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                Code::ExtendLimit,
                "a hold whose node is down cannot be extended: commit or release it",
            ));
        }
    };
    Ok(body.unwrap_or_default())
}
