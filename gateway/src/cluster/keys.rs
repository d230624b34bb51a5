//! Key and channel names of a multi-node deployment (see `docs/REDIS.md`).
//!
//! Every script touches one slot. Per SKU, under the hash tag `{sku:<id>}`:
//! its definition and unleased pool (`def`), each node's lease ledger
//! (`lease`), each node's last published counts (`counts`) and its channel.
//! Per node, under `{node:<n>}`: the node's journal (the single-Redis
//! layout, prefixed), its ownership record (`owner`), and its inbox and
//! reply channels. The catalog and the node registry have a slot each.

use crate::journal::keys::Keys;

#[derive(Debug, Clone)]
pub struct ClusterKeys {
    prefix: String,
}

impl ClusterKeys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
        }
    }

    fn sku(&self, id: &str, what: &str) -> String {
        format!("{}:{{sku:{id}}}:{what}", self.prefix)
    }

    /// Hash: `total`, `pool` (units no node holds), `version` (+1 per
    /// change: a version that goes backwards is a rollback), settings,
    /// window, `meta` (JSON).
    pub fn def(&self, id: &str) -> String {
        self.sku(id, "def")
    }

    /// Hash, per node `n`: `n:g` units granted to it in all, `n:r` units it
    /// returned in all (so it holds `g - r`), `n:op` its last operation id
    /// and `n:res` that operation's answer (a retried operation gets it
    /// again instead of applying twice).
    pub fn lease(&self, id: &str) -> String {
        self.sku(id, "lease")
    }

    /// Hash: node -> `available:held:sold:seq` as that node last published.
    pub fn counts(&self, id: &str) -> String {
        self.sku(id, "counts")
    }

    /// Sharded channel of one SKU: counts, pool changes, demand, new
    /// definitions.
    pub fn channel(&self, id: &str) -> String {
        self.sku(id, "ch")
    }

    /// Hash: SKU id -> creation time (ms).
    pub fn catalog(&self) -> String {
        format!("{}:{{catalog}}", self.prefix)
    }

    /// Sharded channel of catalog changes (a SKU created).
    pub fn catalog_channel(&self) -> String {
        format!("{}:{{catalog}}:ch", self.prefix)
    }

    /// Hash: node id -> `instance|started_ms` of every node that ever ran.
    pub fn registry(&self) -> String {
        format!("{}:{{nodes}}", self.prefix)
    }

    /// String: the first answer to a reservation's request id, JSON
    /// [`crate::protocol::Reserved`], under a slot of its own (`digest` is
    /// a hash of the scoped request id), so every node finds it.
    pub fn request_claim(&self, digest: &str) -> String {
        format!("{}:{{rq:{digest}}}", self.prefix)
    }

    /// String: a buyer's home node ([`super::home`]), under a slot of its
    /// own (`digest`: a keyed hash of the buyer id).
    pub fn buyer_home(&self, digest: &str) -> String {
        format!("{}:{{bh:{digest}}}", self.prefix)
    }

    /// String: the key buyer homes are hashed with, shared by the nodes
    /// (made by the first node that joins).
    pub fn buyer_home_key(&self) -> String {
        format!("{}:{{nodes}}:buyer-home-key", self.prefix)
    }

    /// The node's own prefix: its journal keys live under it.
    pub fn node_prefix(&self, node: u8) -> String {
        format!("{}:{{node:{node}}}", self.prefix)
    }

    /// The node's journal keys (one slot).
    pub fn node_journal(&self, node: u8) -> Keys {
        Keys::new(&self.node_prefix(node))
    }

    /// Hash: `instance` (the process that owns the node), `until_ms` (Redis
    /// time the ownership lasts to), `epoch`, `adopted_by`.
    pub fn owner(&self, node: u8) -> String {
        format!("{}:owner", self.node_prefix(node))
    }

    /// Hash: transfers of units from the node back to pools that are under
    /// way: op id -> `sku|units` (re-driven by whoever owns the node).
    pub fn transfers(&self, node: u8) -> String {
        format!("{}:xfer", self.node_prefix(node))
    }

    /// Sharded channel: operations other nodes forward to this node.
    pub fn inbox(&self, node: u8) -> String {
        format!("{}:inbox", self.node_prefix(node))
    }

    /// Sharded channel: answers to the operations this node forwarded.
    pub fn replies(&self, node: u8) -> String {
        format!("{}:reply", self.node_prefix(node))
    }

    /// The SKU id of a SKU channel, if `channel` is one.
    pub fn sku_of_channel<'c>(&self, channel: &'c str) -> Option<&'c str> {
        channel
            .strip_prefix(&self.prefix)?
            .strip_prefix(":{sku:")?
            .strip_suffix("}:ch")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::conn::key_slot;

    #[test]
    fn a_skus_keys_and_a_nodes_keys_each_share_a_slot() {
        let k = ClusterKeys::new("hf");
        let slot = key_slot(&k.def("tee"));
        for key in [k.lease("tee"), k.counts("tee"), k.channel("tee")] {
            assert_eq!(key_slot(&key), slot, "{key}");
        }
        let node = key_slot(&k.owner(3));
        let j = k.node_journal(3);
        for key in [
            j.journal().to_string(),
            j.sku("tee"),
            j.holds("tee"),
            j.orders().to_string(),
            k.transfers(3),
            k.inbox(3),
        ] {
            assert_eq!(key_slot(&key), node, "{key}");
        }
        assert_eq!(k.sku_of_channel(&k.channel("tee-black")), Some("tee-black"));
        assert_eq!(k.sku_of_channel(&k.inbox(1)), None);
    }
}
