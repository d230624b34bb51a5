//! Rebuilding a SKU's pool and lease ledger from what the nodes hold, after
//! a failover lost some of its writes (`POST /api/admin/skus/{id}/rebuild`).
//!
//! A SKU whose version went backwards is frozen on the node that saw it:
//! the ledger may have lost a grant (the pool then counts units a node
//! still sells: oversell) or a return (units in neither: stranded). The
//! truth is each node's engine: its local stock (available + held + sold)
//! is exactly what it leased. A rebuild:
//!
//! 1. publishes `f|<rebuild id>` on the SKU's channel: every node freezes
//!    the SKU (no reservations, no lease operations), forgets a lease
//!    operation whose outcome is unknown (its local stock is what counts
//!    now) and writes its claim `<node>:claim = <id>:<units>:<version
//!    seen>:<op>` into the SKU's lease ledger, `op` an operation id above
//!    every one it sent (one still on its way lands as a repeat afterwards,
//!    not applied twice);
//! 2. waits until every live node claimed (a node that does not answer in
//!    [`ANSWER_MAX`] fails the rebuild: the SKU stays frozen, fail closed);
//! 3. runs [`scripts::REBUILD`] in the SKU's slot: each claiming node's
//!    lease becomes its claim, a node that is not alive keeps its ledger
//!    (its holds end through adoption), the pool is the total less all of
//!    it, and the version moves above every version a node saw;
//! 4. each node sees `rebuilt = <id>` in the definition and sells again.
//!
//! If the nodes hold more than the total (the lost writes were already
//! oversold), the pool is 0 and the answer says by how much: a host
//! decides (restock, or cancel orders in the shop).

use super::{Cluster, redis_error, scripts, value};
use crate::error::ApiError;
use holdfast_engine::SkuIdx;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// How long the rebuild waits for every live node's claim.
pub const ANSWER_MAX: Duration = Duration::from_secs(5);
/// How long a node waits, frozen, for the rebuild it claimed for to land
/// (after that, the SKU stays frozen until a host rebuilds again).
const LANDED_WAIT_MAX: Duration = Duration::from_secs(30);
/// How often claims and the outcome are polled (pub/sub may drop a
/// message: the freeze request is also sent again at this pace).
const POLL_EVERY: Duration = Duration::from_millis(50);
const REPUBLISH_EVERY: Duration = Duration::from_millis(500);

/// What a rebuild did.
#[derive(Debug, serde::Serialize)]
pub struct Rebuilt {
    pub sku: String,
    pub rebuild: String,
    pub pool: u64,
    pub version: u64,
    /// Units each live node holds (its lease now).
    pub nodes: BTreeMap<u8, u64>,
    /// Units the nodes hold beyond the total (0 unless the lost writes
    /// were already sold).
    pub oversold: u64,
}

impl Cluster {
    /// Rebuilds one SKU (see the module doc).
    pub async fn rebuild(&self, id: &str) -> Result<Rebuilt, ApiError> {
        self.engine.sku(id).ok_or_else(ApiError::unknown_sku)?;
        let rid = format!("{:x}", self.next_op(self.epoch));
        tracing::warn!(sku = id, rebuild = %rid, "rebuilding a SKU from what the nodes hold");
        let live: Vec<u8> = self
            .node_states()
            .await?
            .into_iter()
            .filter(|n| n.alive)
            .map(|n| n.id)
            .collect();
        let started = tokio::time::Instant::now();
        let mut published = None::<tokio::time::Instant>;
        let claims = loop {
            if published.is_none_or(|p| p.elapsed() >= REPUBLISH_EVERY) {
                let _: i64 = redis::cmd("SPUBLISH")
                    .arg(self.keys.channel(id))
                    .arg(format!("f|{rid}"))
                    .query_async(&mut self.conn())
                    .await
                    .map_err(redis_error)?;
                published = Some(tokio::time::Instant::now());
            }
            let claims = self.claims(id, &rid).await?;
            let missing: Vec<u8> = live
                .iter()
                .copied()
                .filter(|n| !claims.contains_key(n))
                .collect();
            if missing.is_empty() {
                break claims;
            }
            if started.elapsed() >= ANSWER_MAX {
                return Err(ApiError::unavailable(format!(
                    "node(s) {missing:?} did not answer the rebuild of {id} within {} ms; the SKU \
                     stays frozen on the nodes that did: rebuild again once every node is up",
                    ANSWER_MAX.as_millis()
                )));
            }
            tokio::time::sleep(POLL_EVERY).await;
        };
        let seen = claims.values().map(|c| c.seen).max().unwrap_or(0);
        let mut invocation = scripts::REBUILD.key(self.keys.def(id));
        invocation
            .key(self.keys.lease(id))
            .arg(&rid)
            .arg(self.keys.channel(id))
            .arg(seen);
        for (node, c) in &claims {
            invocation.arg(node).arg(c.units).arg(c.op);
        }
        let reply: Vec<redis::Value> = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        let head: String = value(&reply[0])?;
        match head.as_str() {
            "ok" => {}
            "stale" => {
                return Err(ApiError::new(
                    axum::http::StatusCode::CONFLICT,
                    crate::protocol::Code::InProgress,
                    "another rebuild of this SKU started meanwhile: its outcome stands",
                ));
            }
            _ => return Err(ApiError::unknown_sku()),
        }
        self.wait_replicas(&self.keys.def(id)).await?;
        let out = Rebuilt {
            sku: id.to_string(),
            rebuild: rid,
            pool: value(&reply[1])?,
            version: value(&reply[2])?,
            nodes: claims.into_iter().map(|(n, c)| (n, c.units)).collect(),
            oversold: value(&reply[3])?,
        };
        metrics::counter!("holdfast_cluster_rebuilds_total").increment(1);
        if out.oversold > 0 {
            tracing::error!(
                sku = id,
                oversold = out.oversold,
                "rebuilt: the nodes hold more units than the total"
            );
        } else {
            tracing::warn!(sku = id, pool = out.pool, version = out.version, "rebuilt");
        }
        Ok(out)
    }

    /// The claims written for rebuild `rid`, per node.
    async fn claims(&self, id: &str, rid: &str) -> Result<HashMap<u8, Claim>, ApiError> {
        let ledger: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.keys.lease(id))
            .query_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        Ok(ledger
            .iter()
            .filter_map(|(field, v)| {
                let node = field.strip_suffix(":claim")?.parse().ok()?;
                let mut p = v.split(':');
                (p.next()? == rid).then_some(())?;
                let mut num = || p.next()?.parse().ok();
                Some((
                    node,
                    Claim {
                        units: num()?,
                        seen: num()?,
                        op: num()?,
                    },
                ))
            })
            .collect())
    }

    /// A rebuild asked this node for its claim (`f|<id>` on the SKU's
    /// channel): freezes the SKU here, writes the claim, and waits for the
    /// rebuild to land before selling again.
    pub async fn rebuild_requested(self: Arc<Self>, sku: SkuIdx, rid: String) {
        let Some(lease) = self.lease(sku) else {
            return;
        };
        if self.claimed_for.get(&sku).is_some_and(|r| *r == rid) {
            return;
        }
        let claimed = {
            let _one = lease.op.lock().await;
            if self.claimed_for.insert(sku, rid.clone()).as_deref() == Some(rid.as_str()) {
                return;
            }
            self.freeze(sku);
            // Whatever an unanswered operation did, this node's stock is
            // what its engine holds; the rebuild makes the ledger say so.
            lease.forget_pending();
            // The common pool's units only: channel quotas are kept as
            // their ledgers say (see `scripts::REBUILD`).
            let units = self
                .engine
                .bucket_counts(sku, holdfast_engine::Bucket::Pool)
                .map_or(0, |c| u64::from(c.total()));
            let seen = self.versions.get(&sku).map_or(0, |v| *v);
            let op = self.next_op(self.epoch);
            redis::cmd("HSET")
                .arg(self.keys.lease(&lease.id))
                .arg(format!("{}:claim", self.node))
                .arg(format!("{rid}:{units}:{seen}:{op}"))
                .query_async::<i64>(&mut self.conn())
                .await
        };
        if let Err(e) = claimed {
            tracing::warn!(sku = &*lease.id, error = %e, "cannot answer a rebuild; it will ask again");
            self.claimed_for.remove(&sku);
            return;
        }
        let deadline = tokio::time::Instant::now() + LANDED_WAIT_MAX;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(POLL_EVERY).await;
            let read: redis::RedisResult<(Option<String>, Option<u64>, Option<u64>)> =
                redis::cmd("HMGET")
                    .arg(self.keys.def(&lease.id))
                    .arg("rebuilt")
                    .arg("pool")
                    .arg("version")
                    .query_async(&mut self.conn())
                    .await;
            if let Ok((Some(done), Some(pool), Some(version))) = read
                && done == rid
            {
                self.saw_version(sku, version);
                self.counts.set_pool(sku, pool as u32, version);
                self.frozen.remove(&sku);
                tracing::info!(sku = &*lease.id, "rebuilt: selling again");
                return;
            }
            if self.claimed_for.get(&sku).is_none_or(|r| *r != rid) {
                return; // a newer rebuild took over
            }
        }
        tracing::error!(
            sku = &*lease.id,
            "a rebuild did not land: the SKU stays frozen here until a host rebuilds it again"
        );
    }
}

/// A node's answer to a rebuild.
#[derive(Debug, Clone, Copy)]
struct Claim {
    /// Its engine's stock of the SKU (available + held + sold).
    units: u64,
    /// The highest version of the SKU it saw.
    seen: u64,
    /// An operation id above every one it sent.
    op: u64,
}

/// One node of the deployment as its ownership record says.
#[derive(Debug, Clone, Copy)]
pub struct NodeState {
    pub id: u8,
    pub alive: bool,
    pub adopted_by: Option<u8>,
    pub lease_left_ms: u64,
}

impl Cluster {
    /// Every node that ever joined, alive or not (by Redis's clock).
    pub async fn node_states(&self) -> Result<Vec<NodeState>, ApiError> {
        let mut conn = self.conn();
        let registry: HashMap<u8, String> = redis::cmd("HGETALL")
            .arg(self.keys.registry())
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        let t: (u64, u64) = redis::cmd("TIME")
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        let now_ms = t.0 * 1000 + t.1 / 1000;
        let mut ids: Vec<u8> = registry.keys().copied().collect();
        ids.sort_unstable();
        let mut nodes = Vec::with_capacity(ids.len());
        for id in ids {
            let owner: HashMap<String, String> = redis::cmd("HGETALL")
                .arg(self.keys.owner(id))
                .query_async(&mut conn)
                .await
                .map_err(redis_error)?;
            let until: u64 = owner
                .get("until_ms")
                .and_then(|u| u.parse().ok())
                .unwrap_or(0);
            let adopted_by = owner.get("adopted_by").and_then(|a| a.parse::<u8>().ok());
            nodes.push(NodeState {
                id,
                alive: until > now_ms && adopted_by.is_none(),
                adopted_by,
                lease_left_ms: until.saturating_sub(now_ms),
            });
        }
        Ok(nodes)
    }
}
