//! Leasing stock from a SKU's pool, giving it back, and rebalancing.
//!
//! A node's local stock of a SKU is exactly what it leased: granted minus
//! returned in the SKU's ledger. Units move in an order that can only ever
//! undercount, never count a unit twice:
//!
//! - a grant takes units from the pool in Redis first, then adds them to
//!   the local engine (a crash between leaves them leased and unused,
//!   which the node's next start reconciles);
//! - a return removes units from the local engine first, then adds them to
//!   the pool (a crash between leaves them in neither until the next start
//!   reconciles).
//!
//! Sizing: a node asks for about one lease horizon of its recent sales
//! (an exponentially weighted rate), at least what the reservation at hand
//! needs; the script caps a grant at a quarter of the pool per live node.
//! A node refills in the background when its stock falls below half its
//! target, gives back what it has not sold for `--lease-idle-return-ms`,
//! and gives back everything idle at once when another node publishes
//! demand it could not lease. Near the end, leases shrink to what each
//! reservation needs: one Redis round trip per reservation, exact.

use super::{Cluster, redis_error, scripts};
use crate::error::ApiError;
use holdfast_engine::limits::SKU_UNITS_MAX;
use holdfast_engine::{Bucket, ChannelIdx, SkuIdx};
use metrics::counter;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long a reservation waits for idle units elsewhere to come back to
/// the pool after it published its demand, before it is refused.
pub const DEMAND_WAIT: Duration = Duration::from_millis(400);
/// How often the background manager looks at the leases.
const MANAGE_EVERY: Duration = Duration::from_millis(50);
/// A node asked for its idle units keeps what this many seconds of its
/// sales need, if it sold within the last `DEMAND_KEEP_IF_ACTIVE_MS`.
const DEMAND_KEEP_SECS: f64 = 0.2;
const DEMAND_KEEP_IF_ACTIVE_MS: u64 = 100;
/// Weight of the newest rate sample in the moving average.
const RATE_WEIGHT: f64 = 0.3;

/// This node's lease of one SKU.
#[derive(Debug)]
pub struct Lease {
    pub id: Arc<str>,
    /// One lease operation at a time per SKU (op ids then only grow).
    pub op: tokio::sync::Mutex<()>,
    stats: Mutex<LeaseStats>,
    /// Another node wants units of this SKU.
    demand: AtomicBool,
    /// This node's operation whose outcome is unknown (it timed out, or
    /// its replication was not confirmed): sent again with the same op id
    /// before any other, so it applies exactly once.
    pending: Mutex<Option<PendingOp>>,
}

/// A lease operation sent but not known to have landed.
#[derive(Debug, Clone, Copy)]
struct PendingOp {
    op: u64,
    bucket: Bucket,
    kind: Kind,
    units: u32,
    least: u32,
}

#[derive(Debug, Default)]
struct LeaseStats {
    /// Units ever taken here (held + sold) when last sampled.
    taken: u64,
    /// When last sampled (monotonic ms).
    sampled_ms: u64,
    /// When units were last taken (monotonic ms).
    active_ms: u64,
    /// Units per second, smoothed.
    rate: f64,
}

impl Lease {
    /// Fresh units are not idle: they were leased for a sale.
    fn touch(&self, now_ms: u64) {
        self.stats.lock().expect("lease stats").active_ms = now_ms;
    }

    /// Drops the operation whose outcome is unknown (a rebuild makes the
    /// ledger agree with the engine, whatever it did).
    pub fn forget_pending(&self) {
        *self.pending.lock().expect("pending lock") = None;
    }

    fn new(id: Arc<str>) -> Self {
        Self {
            id,
            op: tokio::sync::Mutex::new(()),
            stats: Mutex::default(),
            demand: AtomicBool::new(false),
            pending: Mutex::new(None),
        }
    }
}

/// Which way units move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// From the pool to the node.
    Grant,
    /// From the node back to the pool.
    Return,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Grant => "grant",
            Self::Return => "return",
        }
    }
}

/// One lease operation: `units` of SKU `id`'s bucket `field` (its field in
/// the SKU's definition: `pool`, `q:<channel>`, `a:<channel>`, see
/// [`bucket_field`]) for `node`, under op id `op` (a grant of fewer than
/// `least` grants none).
#[derive(Debug, Clone, Copy)]
pub struct LeaseOp<'a> {
    pub id: &'a str,
    pub field: &'a str,
    pub node: u8,
    pub op: u64,
    pub kind: Kind,
    pub units: u32,
    pub least: u32,
}

/// A grant or return, as the script answered it.
#[derive(Debug, Clone, Copy)]
pub struct Moved {
    pub units: u32,
    /// The bucket's unleased units after the operation.
    pub left: u32,
    pub version: u64,
}

/// A bucket's field in a SKU's definition (`pool`, `q:<channel>`,
/// `a:<channel>`); its ledger fields carry it as a suffix (none for the
/// pool). `None` for a channel the engine does not know.
pub fn bucket_field(
    engine: &holdfast_engine::Engine,
    sku: SkuIdx,
    bucket: Bucket,
) -> Option<String> {
    match bucket {
        Bucket::Pool => Some("pool".to_string()),
        Bucket::Quota(c) => Some(format!("q:{}", engine.channel_id(sku, c)?)),
        Bucket::Allowance(c) => Some(format!("a:{}", engine.channel_id(sku, c)?)),
    }
}

/// The ledger suffix of a bucket's field.
pub fn ledger_suffix(field: &str) -> String {
    if field == "pool" {
        String::new()
    } else {
        format!(":{field}")
    }
}

impl Cluster {
    /// This node's lease record of a SKU.
    pub fn lease(&self, sku: SkuIdx) -> Option<Arc<Lease>> {
        if let Some(l) = self.leases.get(&sku) {
            return Some(l.clone());
        }
        let id = self.engine.sku_id(sku)?;
        Some(
            self.leases
                .entry(sku)
                .or_insert_with(|| Arc::new(Lease::new(id)))
                .clone(),
        )
    }

    /// Runs the lease script for `node` (this one, or a node it adopted).
    pub async fn lease_op(&self, sku: SkuIdx, op: LeaseOp<'_>) -> Result<Moved, ApiError> {
        let LeaseOp {
            id,
            field,
            node,
            op,
            kind,
            units,
            least,
        } = op;
        counter!("holdfast_cluster_lease_round_trips_total").increment(1);
        let reply: Vec<redis::Value> = scripts::LEASE
            .key(self.keys.def(id))
            .key(self.keys.lease(id))
            .arg(node)
            .arg(op)
            .arg(kind.as_str())
            .arg(units)
            .arg(least)
            .arg(self.live_nodes.load(Ordering::Relaxed).max(1))
            .arg(self.keys.channel(id))
            .arg(field)
            .arg(ledger_suffix(field))
            .invoke_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        let head: String = super::value(&reply[0])?;
        match head.as_str() {
            "nosku" => return Err(ApiError::unknown_sku()),
            // A channel bucket the definition does not have (a cap
            // lifted): nothing to move.
            "nobucket" => {
                return Ok(Moved {
                    units: 0,
                    left: 0,
                    version: 0,
                });
            }
            _ => {}
        }
        let res: String = super::value(&reply[1])?;
        let free: String = reply
            .get(2)
            .and_then(|v| super::value(v).ok())
            .unwrap_or_default();
        let parts: Vec<u64> = res.split(':').filter_map(|p| p.parse().ok()).collect();
        let [units, left, version, ..] = parts[..] else {
            return Err(ApiError::unavailable("a lease answer did not parse"));
        };
        let moved = Moved {
            units: units as u32,
            left: left as u32,
            version,
        };
        let pool = if field == "pool" {
            Some(moved.left)
        } else {
            reply
                .get(3)
                .and_then(|v| super::value::<u64>(v).ok())
                .map(|p| p as u32)
        };
        // This node's own operations on a SKU are one at a time, so the
        // versions they see only grow; one that goes back means Redis lost
        // acknowledged writes (a failover without the replica having
        // them): the SKU stops selling here until a host rebuilds it.
        if node == self.node && !self.saw_version(sku, version) {
            counter!("holdfast_cluster_rollbacks_total").increment(1);
            tracing::error!(
                sku = id,
                version,
                "a SKU's version went backwards: Redis lost writes in a failover; the SKU is frozen until rebuilt"
            );
            self.freeze(sku);
        }
        if let Some(pool) = pool {
            self.counts.set_pool(sku, pool, version);
        }
        self.counts.set_free(sku, &free, version);
        // The grant or return counts only once a replica has it: a master
        // that fails before replicating it would hand the units out again.
        // (Unconfirmed, the operation stays pending and is sent again,
        // under the same op id, before any other.)
        if moved.units > 0 {
            self.wait_replicas(&self.keys.def(id)).await?;
        }
        Ok(moved)
    }

    /// Runs one of this node's own lease operations on a SKU (the caller
    /// holds the lease's `op` lock): first settles an operation whose
    /// outcome is unknown, then this one. A grant's units go into the
    /// engine here, once.
    async fn own_op(
        &self,
        sku: SkuIdx,
        lease: &Lease,
        bucket: Bucket,
        kind: Kind,
        units: u32,
        least: u32,
    ) -> Result<Moved, ApiError> {
        // A frozen SKU's ledger is being rebuilt (or cannot be trusted).
        self.check_frozen(sku)?;
        self.settle_pending(sku, lease).await?;
        let op = PendingOp {
            op: self.next_op(self.epoch),
            bucket,
            kind,
            units,
            least,
        };
        *lease.pending.lock().expect("pending lock") = Some(op);
        self.send_pending(sku, lease, op).await
    }

    /// Sends again an operation whose outcome is unknown (same op id: the
    /// script answers a repeat with the first answer).
    async fn settle_pending(&self, sku: SkuIdx, lease: &Lease) -> Result<(), ApiError> {
        let pending = *lease.pending.lock().expect("pending lock");
        match pending {
            Some(op) => self.send_pending(sku, lease, op).await.map(|_| ()),
            None => Ok(()),
        }
    }

    async fn send_pending(
        &self,
        sku: SkuIdx,
        lease: &Lease,
        p: PendingOp,
    ) -> Result<Moved, ApiError> {
        let field = bucket_field(&self.engine, sku, p.bucket).ok_or_else(|| {
            ApiError::unavailable("a lease for a channel this node does not know")
        })?;
        let moved = self
            .lease_op(
                sku,
                LeaseOp {
                    id: &lease.id,
                    field: &field,
                    node: self.node,
                    op: p.op,
                    kind: p.kind,
                    units: p.units,
                    least: p.least,
                },
            )
            .await?;
        *lease.pending.lock().expect("pending lock") = None;
        match p.kind {
            Kind::Grant if moved.units > 0 => {
                self.engine
                    .lease_bucket(sku, p.bucket, moved.units, true)
                    .map_err(ApiError::from)?;
                lease.touch(self.mono_ms());
                counter!("holdfast_cluster_lease_grants_total").increment(1);
                counter!("holdfast_cluster_leased_units_total").increment(u64::from(moved.units));
            }
            Kind::Grant => {}
            Kind::Return => counter!("holdfast_cluster_lease_returns_total").increment(1),
        }
        Ok(moved)
    }

    /// Makes sure this node holds at least `need` available units of
    /// `sku` for a reservation at hand on `channel` (or none), leasing more
    /// (and, if the buckets are short, asking other nodes for their idle
    /// units and waiting a moment for them). `Ok(false)`: the deployment
    /// has fewer than `need` units (or, for a capped channel, less
    /// headroom) for this reservation now.
    pub async fn ensure(
        &self,
        sku: SkuIdx,
        need: u32,
        channel: Option<ChannelIdx>,
    ) -> Result<bool, ApiError> {
        let lease = self.lease(sku).ok_or_else(ApiError::unknown_sku)?;
        for attempt in 0..2 {
            let short = {
                let _one = lease.op.lock().await;
                self.fill(sku, &lease, need, channel).await?
            };
            if !short {
                return Ok(true);
            }
            if attempt == 0 {
                // The script published our demand; idle units elsewhere
                // come back to the pool within a moment: wait for that.
                let grew = self.counts.pool_grew.notified();
                let _ = tokio::time::timeout(DEMAND_WAIT, grew).await;
            }
        }
        Ok(false)
    }

    /// Leases what a reservation of `need` units lacks here (the caller
    /// holds the lease's `op` lock): a capped channel's headroom first,
    /// then its quota's units, then the pool's (the order the engine takes
    /// them in). True if still short.
    async fn fill(
        &self,
        sku: SkuIdx,
        lease: &Lease,
        need: u32,
        channel: Option<ChannelIdx>,
    ) -> Result<bool, ApiError> {
        let want = self.target(lease).max(need);
        let Some(c) = channel else {
            let have = self.local_available(sku, Bucket::Pool);
            if have < need {
                self.grant(sku, lease, Bucket::Pool, want - have, need - have)
                    .await?;
            }
            return Ok(self.local_available(sku, Bucket::Pool) < need);
        };
        if self.is_capped(sku, c) {
            let headroom = Bucket::Allowance(c);
            let have = self.local_available(sku, headroom);
            if have < need {
                self.grant(sku, lease, headroom, want - have, need - have)
                    .await?;
            }
            if self.local_available(sku, headroom) < need {
                return Ok(true);
            }
        }
        // The quota's units before the pool's, as in one process: while
        // Redis has unleased quota units, lease them rather than sell the
        // channel the pool's (which every buyer shares).
        let have_quota = self.local_available(sku, Bucket::Quota(c));
        let free_quota = self
            .engine
            .channel_id(sku, c)
            .map_or(0, |id| self.counts.free_quota(sku, &id));
        if have_quota < need && free_quota > 0 {
            let least = (need - have_quota).min(free_quota);
            self.grant(sku, lease, Bucket::Quota(c), want - have_quota, least)
                .await?;
        }
        let units = |me: &Self| {
            me.local_available(sku, Bucket::Quota(c)) + me.local_available(sku, Bucket::Pool)
        };
        let have = units(self);
        if have < need {
            self.grant(sku, lease, Bucket::Pool, want - have, need - have)
                .await?;
        }
        Ok(units(self) < need)
    }

    /// Leases `units` more of a bucket (none unless at least `least`).
    async fn grant(
        &self,
        sku: SkuIdx,
        lease: &Lease,
        bucket: Bucket,
        units: u32,
        least: u32,
    ) -> Result<Moved, ApiError> {
        self.own_op(sku, lease, bucket, Kind::Grant, units, least)
            .await
    }

    fn local_available(&self, sku: SkuIdx, bucket: Bucket) -> u32 {
        self.engine
            .bucket_counts(sku, bucket)
            .map_or(0, |c| c.available)
    }

    /// Whether a channel has a cap (its headroom is leased like units).
    fn is_capped(&self, sku: SkuIdx, c: ChannelIdx) -> bool {
        self.engine
            .bucket_counts(sku, Bucket::Allowance(c))
            .is_ok_and(|a| a.total() < SKU_UNITS_MAX)
    }

    /// Every bucket a node may lease of a SKU: the pool, each channel's
    /// quota, each capped channel's headroom.
    fn buckets(&self, sku: SkuIdx) -> Vec<Bucket> {
        let mut out = vec![Bucket::Pool];
        if let Some(snap) = self.engine.snapshot(sku) {
            for c in &snap.channels {
                out.push(Bucket::Quota(c.channel));
                if c.cap.is_some() {
                    out.push(Bucket::Allowance(c.channel));
                }
            }
        }
        out
    }

    /// How many units this node would like to hold: about one horizon of
    /// its recent sales, at least one.
    fn target(&self, lease: &Lease) -> u32 {
        let rate = lease.stats.lock().expect("lease stats").rate;
        let horizon = self.settings.lease_horizon_ms as f64 / 1000.0;
        ((rate * horizon).ceil() as u32).max(1)
    }

    /// Takes `units` out of one of the engine's buckets (only available
    /// ones) and gives them back to the SKU's bucket in Redis.
    pub async fn give_back(
        &self,
        sku: SkuIdx,
        lease: &Lease,
        bucket: Bucket,
        units: u32,
    ) -> Result<u32, ApiError> {
        let _one = lease.op.lock().await;
        self.check_frozen(sku)?;
        self.settle_pending(sku, lease).await?;
        let units = units.min(self.local_available(sku, bucket));
        if units == 0 {
            return Ok(0);
        }
        self.engine
            .lease_bucket(sku, bucket, units, false)
            .map_err(ApiError::from)?;
        let moved = self
            .own_op(sku, lease, bucket, Kind::Return, units, 0)
            .await?;
        Ok(moved.units)
    }

    /// Another node could not lease `wanted` units of this SKU.
    pub fn demanded(&self, sku: SkuIdx) {
        if let Some(l) = self.leases.get(&sku) {
            l.demand.store(true, Ordering::Relaxed);
        }
    }

    /// One pass of the manager over every lease: sample rates, return idle
    /// or demanded units, refill busy ones, retry owed returns.
    async fn manage(&self) {
        let now = self.mono_ms();
        let leases: Vec<(SkuIdx, Arc<Lease>)> = self
            .leases
            .iter()
            .map(|e| (*e.key(), e.value().clone()))
            .collect();
        for (sku, lease) in leases {
            if self.is_frozen(sku) {
                continue;
            }
            let Some(snap) = self.engine.snapshot(sku) else {
                continue;
            };
            let taken = u64::from(snap.counts.held + snap.counts.sold);
            let (idle_ms, rate) = {
                let mut s = lease.stats.lock().expect("lease stats");
                let dt = now.saturating_sub(s.sampled_ms).max(1);
                let sample = taken.saturating_sub(s.taken) as f64 * 1000.0 / dt as f64;
                if taken != s.taken {
                    s.active_ms = now;
                }
                s.rate = RATE_WEIGHT * sample + (1.0 - RATE_WEIGHT) * s.rate;
                s.taken = taken;
                s.sampled_ms = now;
                (now.saturating_sub(s.active_ms), s.rate)
            };
            let demanded = lease.demand.swap(false, Ordering::Relaxed);
            let idle = idle_ms >= self.settings.lease_idle_return_ms;
            // Asked for units: keep what the next moment's sales need if
            // this node is busy, give back the rest (of every bucket).
            let keep_units = if demanded && idle_ms < DEMAND_KEEP_IF_ACTIVE_MS {
                (rate * DEMAND_KEEP_SECS).ceil() as u32
            } else {
                0
            };
            let mut result = Ok(());
            let mut gave = false;
            if demanded || idle {
                for bucket in self.buckets(sku) {
                    let available = self.local_available(sku, bucket);
                    if available > keep_units {
                        gave = true;
                        if let Err(e) = self
                            .give_back(sku, &lease, bucket, available - keep_units)
                            .await
                        {
                            result = Err(e);
                            break;
                        }
                    }
                }
            }
            if !gave && result.is_ok() {
                let available = self.local_available(sku, Bucket::Pool);
                result = if lease.pending.lock().expect("pending lock").is_some() {
                    let _one = lease.op.lock().await;
                    self.settle_pending(sku, &lease).await
                } else if rate > 0.0 && !idle && self.check_fence().is_ok() {
                    let target = self.target(&lease);
                    if available < target.div_ceil(2) && self.counts.pool(sku) > 0 {
                        self.refill(sku, &lease, target).await
                    } else {
                        Ok(())
                    }
                } else {
                    Ok(())
                };
            }
            if let Err(e) = result {
                tracing::debug!(sku = &*lease.id, error = %e, "lease upkeep failed; retried next pass");
            }
        }
    }

    async fn refill(&self, sku: SkuIdx, lease: &Lease, target: u32) -> Result<(), ApiError> {
        let _one = lease.op.lock().await;
        let have = self.local_available(sku, Bucket::Pool);
        if have >= target {
            return Ok(());
        }
        self.own_op(sku, lease, Bucket::Pool, Kind::Grant, target - have, 1)
            .await
            .map(|_| ())
    }

    /// At start: makes the local stock of every SKU's buckets agree with
    /// the ledger (granted minus returned). Less locally than the ledger
    /// says (a grant or a return cut short by a crash): the difference
    /// goes back to the SKU's bucket. More locally: a return cut short the
    /// other way; the extra available units are removed here.
    pub async fn reconcile(&self, skus: &[(String, SkuIdx)]) -> anyhow::Result<()> {
        let mut conn = self.conn();
        for (id, sku) in skus {
            for bucket in self.buckets(*sku) {
                let Some(field) = bucket_field(&self.engine, *sku, bucket) else {
                    continue;
                };
                let suffix = ledger_suffix(&field);
                let ledger: Vec<Option<u64>> = redis::cmd("HMGET")
                    .arg(self.keys.lease(id))
                    .arg(format!("{}:g{suffix}", self.node))
                    .arg(format!("{}:r{suffix}", self.node))
                    .query_async(&mut conn)
                    .await?;
                let held_by_us = ledger[0]
                    .unwrap_or(0)
                    .saturating_sub(ledger[1].unwrap_or(0));
                let Ok(counts) = self.engine.bucket_counts(*sku, bucket) else {
                    continue;
                };
                let local = u64::from(counts.total());
                let lease = self.lease(*sku).expect("a known sku");
                if held_by_us > local {
                    let extra = (held_by_us - local) as u32;
                    tracing::info!(
                        sku = id,
                        bucket = field,
                        extra,
                        "reconciling: leased units this node never used go back"
                    );
                    let _one = lease.op.lock().await;
                    self.own_op(*sku, &lease, bucket, Kind::Return, extra, 0)
                        .await
                        .map_err(|e| anyhow::anyhow!("sku {id}: {e}"))?;
                } else if local > held_by_us {
                    let extra = (local - held_by_us) as u32;
                    anyhow::ensure!(
                        extra <= counts.available,
                        "sku {id} ({field}): this node holds {local} units but its lease is {held_by_us} and \
                         only {} are available: the cluster lost lease records (a failover?); rebuild the SKU",
                        counts.available
                    );
                    tracing::info!(
                        sku = id,
                        bucket = field,
                        extra,
                        "reconciling: units already returned leave the engine"
                    );
                    self.engine
                        .lease_bucket(*sku, bucket, extra, false)
                        .map_err(|e| anyhow::anyhow!("sku {id}: {e}"))?;
                }
            }
        }
        Ok(())
    }
}

/// Publishes that this node (or a host's adjust) wants `units` of a SKU
/// the pool could not give, so nodes holding idle units return them.
pub async fn publish_demand(cluster: &Cluster, id: &str, units: u32) -> Result<(), ApiError> {
    let _: i64 = redis::cmd("SPUBLISH")
        .arg(cluster.keys.channel(id))
        .arg(format!("w|{}|{units}", cluster.node))
        .query_async(&mut cluster.conn())
        .await
        .map_err(redis_error)?;
    Ok(())
}

/// Runs the manager until shutdown.
pub async fn manager(cluster: Arc<Cluster>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(MANAGE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => cluster.manage().await,
        }
    }
}
