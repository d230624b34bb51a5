//! A buyer's home node. Each node's engine counts per-buyer limits
//! (`buyer_limit`) exactly, but only for what it sold itself; a buyer whose
//! reservations a load balancer spreads over several nodes could take up to
//! one limit per node. So in multi-node mode a buyer who reserves a SKU
//! with a limit has one home node, claimed in Redis on first use (`SET NX
//! GET` under `hf:{bh:<digest>}`, a slot of its own): the home reserves
//! itself, and any other node forwards that buyer's reservations there
//! through the home's inbox ([`super::forward`]), so one engine counts all
//! of them.
//!
//! A home whose node died (its ownership lapsed) is taken over by the next
//! node the buyer reaches (compare-and-set, so one node wins). What the dead
//! node counted for the buyer is not carried over: after a node dies, a
//! buyer homed there may take up to one more limit (documented in
//! docs/CLUSTER.md). The key is a keyed hash of the buyer id (the key is
//! shared by the nodes, in `hf:{nodes}:buyer-home-key`), never the id, and
//! an erasure deletes it.

use super::Cluster;
use super::forward::{self, NodeRequest};
use crate::error::ApiError;
use crate::ops::{Applied, Op, Ops};
use crate::protocol::{Reserve, Reserved};
use metrics::counter;
use redis::Script;
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

/// Moves a home from a node that died to this one. KEYS: the home.
/// ARGV: the dead node, this node, ttl_ms (0: none). 1 if moved.
static TAKE_HOME: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[3]) > 0 then redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
else redis.call('SET', KEYS[1], ARGV[2]) end
return 1",
    )
});

/// Where a reservation runs.
enum Home {
    Here,
    Elsewhere(u8),
}

impl Cluster {
    /// The home key of buyer `buyer` (a keyed hash of the id).
    pub fn home_key(&self, buyer: &str) -> String {
        let mut h = Sha256::new();
        h.update(self.home_secret.as_bytes());
        h.update([0]);
        h.update(buyer.as_bytes());
        self.keys.buyer_home(&crate::ids::hex(&h.finalize()[..16]))
    }
}

impl Ops {
    /// A multi-node reservation: at the buyer's home node (this one, or
    /// forwarded there) when a SKU of it has a per-buyer limit.
    pub async fn reserve_leased(&self, req: Reserve) -> Result<Applied<Reserved>, ApiError> {
        match self.home_of(&req).await? {
            Home::Here => self.reserve_here(req).await,
            Home::Elsewhere(node) => {
                let cluster = self.cluster.as_ref().expect("multi-node only");
                let reply_id = req.id;
                match forward::ask(cluster, node, NodeRequest::Reserve(req.clone())).await? {
                    Some(body) => {
                        let answer: Reserved = serde_json::from_value(body).map_err(|_| {
                            ApiError::unavailable("the buyer's home node's answer did not parse")
                        })?;
                        counter!("holdfast_cluster_buyer_home_total", "outcome" => "forwarded")
                            .increment(1);
                        Ok(Applied::settled(
                            Reserved {
                                id: reply_id,
                                ..answer
                            },
                            Op::Reserve,
                        ))
                    }
                    // It died meanwhile: the home moves here.
                    None => {
                        self.take_home(&req.buyer, node).await?;
                        self.reserve_here(req).await
                    }
                }
            }
        }
    }

    /// A reservation another node forwarded to this one, the buyer's
    /// home: made here, answered once durable.
    pub async fn reserve_as_home(&self, req: Reserve) -> Result<Reserved, ApiError> {
        let applied = self.reserve_here(req).await;
        self.settle(applied).await
    }

    async fn home_of(&self, req: &Reserve) -> Result<Home, ApiError> {
        let cluster = self.cluster.as_ref().expect("multi-node only");
        if req.buyer.is_empty() || !self.has_buyer_limit(req) {
            return Ok(Home::Here);
        }
        let key = cluster.home_key(&req.buyer);
        let mut set = redis::cmd("SET");
        set.arg(&key).arg(cluster.node).arg("NX").arg("GET");
        if cluster.buyer_record_retention_ms > 0 {
            set.arg("PX").arg(cluster.buyer_record_retention_ms);
        }
        let home: Option<u8> = set
            .query_async(&mut cluster.conn())
            .await
            .map_err(super::redis_error)?;
        match home {
            None => {
                counter!("holdfast_cluster_buyer_home_total", "outcome" => "claimed").increment(1);
                Ok(Home::Here)
            }
            Some(n) if n == cluster.node => Ok(Home::Here),
            Some(n) if super::adopt::is_alive(cluster, n).await => Ok(Home::Elsewhere(n)),
            Some(n) => {
                self.take_home(&req.buyer, n).await?;
                Ok(Home::Here)
            }
        }
    }

    /// Moves the buyer's home from dead node `from` to this one (if
    /// another node moved it first, the buyer reserves here this time and
    /// there from the next).
    async fn take_home(&self, buyer: &str, from: u8) -> Result<(), ApiError> {
        let cluster = self.cluster.as_ref().expect("multi-node only");
        let moved: u64 = TAKE_HOME
            .key(cluster.home_key(buyer))
            .arg(from)
            .arg(cluster.node)
            .arg(cluster.buyer_record_retention_ms)
            .invoke_async(&mut cluster.conn())
            .await
            .map_err(super::redis_error)?;
        if moved == 1 {
            counter!("holdfast_cluster_buyer_home_total", "outcome" => "taken_over").increment(1);
            tracing::info!(
                from,
                "a buyer's home node died: this node is the buyer's home now"
            );
        }
        Ok(())
    }

    /// Whether a SKU the reservation names has a per-buyer limit.
    fn has_buyer_limit(&self, req: &Reserve) -> bool {
        let limited = |id: &str| {
            self.engine
                .sku(id)
                .and_then(|s| self.engine.snapshot(s))
                .is_some_and(|s| s.settings.buyer_limit > 0)
        };
        req.sku.as_deref().is_some_and(limited)
            || req.lines.iter().flatten().any(|l| limited(&l.sku))
    }
}
