//! Erasing a buyer in a multi-node deployment (`POST
//! /api/admin/buyers/{id}/erase` on any node; docs/PRIVACY.md).
//!
//! A buyer's records live under every node it bought through, each in the
//! node's own slot `{node:<n>}` (stored name, per-SKU limit records,
//! holds, order-stream partition, webhook streams), and every live node
//! keeps names and limit records in memory. Each node hashes buyer ids with
//! its own key (its journal record's `hash_key`) and, without
//! `--buyer-id-key`, makes pseudonyms with its own generated key
//! (`buyer_id_key`): the node taking the erasure reads both from each
//! node's journal record and names the buyer as that node does. The id the
//! shop sent never leaves this process.
//!
//! 1. Every node that ever joined (the registry), alive or not.
//! 2. Refused with 409 `buyer_has_live_holds` if the buyer has a live hold
//!    on any node: each live node is asked (its engine is the truth; in
//!    `async` mode it is ahead of Redis); a node that is not alive (dead,
//!    adopted) has its holds in Redis only, and they are read there.
//! 3. Every live node forgets the buyer in memory: names, engine limit
//!    records, its journal mirror's records, webhook events. Each checks
//!    for a live hold again first (one may have started since step 2).
//! 4. Every node's slot in Redis, live or not: names, the limit records of
//!    every SKU of its catalog, the order-stream partition's entries
//!    naming the buyer, the webhook streams.
//!
//! A live node that does not answer within `--forward-timeout-ms` fails the
//! erasure with a retryable 503 before Redis is touched (what the nodes
//! that answered forgot stays forgotten): an erasure is safe to repeat.
//! Questions go through the nodes' inboxes, as hold operations do
//! ([`super::forward`]).

use super::Cluster;
use super::forward::{self, NodeRequest};
use crate::error::ApiError;
use crate::journal::conn::{Conn, key_slot};
use crate::journal::erase::{Erased, erase_all};
use crate::journal::keys::{HoldRecord, Keys, buyer_field, parse_buyer_field};
use crate::ops::{Forgotten, Ops, live_holds_refusal};
use crate::privacy::{BuyerIdKey, BuyerNames, GENERATED_KEY_FIELD};
use crate::protocol::BuyerErased;
use futures_util::future::join_all;
use holdfast_engine::BuyerId;
use std::sync::Arc;

/// Hold records read per `HSCAN` while looking for a silent node's live
/// holds of the buyer.
const HOLDS_SCAN_COUNT: usize = 1_000;

/// The buyer as one node knows it (a node whose journal has a hash key:
/// one without never wrote a buyer).
#[derive(Debug)]
struct OnNode {
    node: u8,
    alive: bool,
    /// Its id there.
    buyer: BuyerId,
    /// What the node writes for it: the stored name, and its hex hash.
    names: Vec<String>,
}

impl OnNode {
    fn names(&self) -> Vec<&str> {
        self.names.iter().map(String::as_str).collect()
    }
}

impl Cluster {
    /// Erases buyer `id` on every node (see the module doc). The live
    /// nodes are asked at once, each within `--forward-timeout-ms`.
    pub async fn erase_buyer(&self, ops: &Ops, id: &str) -> Result<BuyerErased, ApiError> {
        let (_, stored) = ops.ids.buyer_lookup(id)?;
        let mut nodes = Vec::new();
        for n in self.node_states().await? {
            nodes.extend(self.buyer_on(n.id, n.alive, id, &stored).await?);
        }
        // 2. No live hold anywhere.
        let holds = join_all(nodes.iter().map(|n| self.live_holds_on(ops, n))).await;
        let mut live = Vec::new();
        for (n, holds) in nodes.iter().zip(holds) {
            let holds = holds?;
            if holds > 0 {
                live.push((n.node, holds));
            }
        }
        if !live.is_empty() {
            let total = live.iter().map(|(_, h)| h).sum();
            let on: Vec<String> = live.iter().map(|(n, _)| n.to_string()).collect();
            let place = format!(" (on node {})", on.join(", "));
            return Err(live_holds_refusal(total, &place));
        }
        // 3. Every live node's memory.
        let live_nodes = nodes.iter().filter(|n| n.alive);
        let mut forgotten = Forgotten::default();
        for answer in join_all(live_nodes.map(|n| self.forget_on(ops, n))).await {
            forgotten += answer?;
        }
        // 4. Every node's slot in Redis, and the buyer's home.
        let _: u64 = redis::cmd("DEL")
            .arg(self.home_key(id))
            .query_async(&mut self.conn())
            .await
            .map_err(super::redis_error)?;
        let mut erased = Erased::default();
        for n in &nodes {
            erased += self
                .erase_slot(n.node, &buyer_field(n.buyer), &n.names())
                .await
                .map_err(super::redis_error)?;
        }
        Ok(forgotten.answer(&stored, erased, Some(nodes.len() as u64)))
    }

    /// Live holds of the buyer on node `n`: here, asked, or (a node that
    /// is not alive) in its slot.
    async fn live_holds_on(&self, ops: &Ops, n: &OnNode) -> Result<u64, ApiError> {
        if n.node == self.node {
            return Ok(ops.live_holds_of(n.buyer));
        }
        if n.alive {
            let asked = NodeRequest::BuyerHolds {
                buyer: buyer_field(n.buyer),
            };
            if let Some(answer) = forward::ask(self, n.node, asked).await? {
                return Ok(answer["live"].as_u64().unwrap_or(0));
            }
            // It died meanwhile: its holds are in Redis.
        }
        self.holds_in_redis(n.node, n.buyer).await
    }

    /// Node `n`, live, forgets the buyer in memory (here, or asked).
    async fn forget_on(&self, ops: &Ops, n: &OnNode) -> Result<Forgotten, ApiError> {
        if n.node == self.node {
            return ops.forget_buyer_here(n.buyer, &n.names());
        }
        let asked = NodeRequest::ForgetBuyer {
            buyer: buyer_field(n.buyer),
            names: n.names.clone(),
        };
        match forward::ask(self, n.node, asked).await? {
            Some(answer) => serde_json::from_value(answer)
                .map_err(|_| ApiError::unavailable("another node's answer did not parse: retry")),
            // It died meanwhile: it has no memory left.
            None => Ok(Forgotten::default()),
        }
    }

    /// The buyer as node `node` knows it, from its journal record (`None`:
    /// the node has no hash key, so it never wrote a buyer).
    async fn buyer_on(
        &self,
        node: u8,
        alive: bool,
        id: &str,
        stored: &str,
    ) -> Result<Option<OnNode>, ApiError> {
        let (hash_key, generated): (Option<String>, Option<String>) = redis::cmd("HMGET")
            .arg(self.keys.node_journal(node).journal())
            .arg("hash_key")
            .arg(GENERATED_KEY_FIELD)
            .query_async(&mut self.conn())
            .await
            .map_err(super::redis_error)?;
        let Some(key) = hash_key
            .as_deref()
            .and_then(crate::journal::recover::parse_key)
        else {
            return Ok(None);
        };
        let buyer = crate::ids::buyer_id_under(key, id);
        let mut names = vec![stored.to_string()];
        // A node without `--buyer-id-key` makes pseudonyms with the key
        // it generated (this node's own, if it did, is among them).
        if let Some(key) = generated.as_deref().and_then(|k| BuyerIdKey::parse(k).ok()) {
            names.push(BuyerNames::pseudonyms(&key).name(id).to_string());
        }
        names.push(buyer_field(buyer));
        names.dedup();
        Ok(Some(OnNode {
            node,
            alive,
            buyer,
            names,
        }))
    }

    /// A connection for node `node`'s slot (its keys share one).
    fn slot_conn(&self, node: u8) -> Conn {
        Conn::Cluster(self.conn(), key_slot(&self.keys.owner(node)))
    }

    /// The SKUs node `node` journaled (its catalog).
    async fn node_skus(&self, keys: &Keys) -> redis::RedisResult<Vec<Arc<str>>> {
        let ids: Vec<String> = redis::cmd("HKEYS")
            .arg(keys.catalog())
            .query_async(&mut self.conn())
            .await?;
        Ok(ids.into_iter().map(Arc::from).collect())
    }

    /// Live holds of `buyer` in node `node`'s slot (a node that is not
    /// alive: what Redis has is all there is). Read in pages: a node's
    /// holds are bounded by its hold table.
    async fn holds_in_redis(&self, node: u8, buyer: BuyerId) -> Result<u64, ApiError> {
        let keys = self.keys.node_journal(node);
        let mut conn = self.slot_conn(node);
        let mut found = 0;
        for sku in self.node_skus(&keys).await.map_err(super::redis_error)? {
            let key = keys.holds(&sku);
            let mut cursor: u64 = 0;
            loop {
                let (next, page): (u64, Vec<Vec<u8>>) = redis::cmd("HSCAN")
                    .arg(&key)
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(HOLDS_SCAN_COUNT)
                    .query_async(&mut conn)
                    .await
                    .map_err(super::redis_error)?;
                // Field, value, field, value...: the values are records.
                found += page
                    .iter()
                    .skip(1)
                    .step_by(2)
                    .filter_map(|v| HoldRecord::decode(v))
                    .filter(|r| r.buyer == buyer.0)
                    .count() as u64;
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        Ok(found)
    }

    /// The buyer's records in node `node`'s slot (see
    /// [`crate::journal::erase::erase_all`]).
    async fn erase_slot(
        &self,
        node: u8,
        field: &str,
        names: &[&str],
    ) -> redis::RedisResult<Erased> {
        let keys = self.keys.node_journal(node);
        let skus = self.node_skus(&keys).await?;
        erase_all(&mut self.slot_conn(node), &keys, &skus, field, names).await
    }
}

/// Runs a node request another node sent to this one (see
/// [`super::forward::NodeRequest`]).
pub fn handle(ops: &Ops, request: NodeRequest) -> Result<serde_json::Value, ApiError> {
    let buyer = |field: &str| {
        parse_buyer_field(field).ok_or_else(|| ApiError::invalid("buyer must be 16 hex digits"))
    };
    match request {
        NodeRequest::BuyerHolds { buyer: b } => {
            Ok(serde_json::json!({ "live": ops.live_holds_of(buyer(&b)?) }))
        }
        NodeRequest::Reserve(_) => Err(ApiError::invalid("not a request about a buyer's memory")),
        NodeRequest::ForgetBuyer { buyer: b, names } => {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let forgotten = ops.forget_buyer_here(buyer(&b)?, &names)?;
            Ok(serde_json::to_value(forgotten).unwrap_or_default())
        }
    }
}
