//! Global counts of a multi-node deployment: for every SKU, the unleased
//! pool plus what each node last published (`available`, `held`, `sold`),
//! with this node's own share read live from its engine. Every node shows
//! viewers the same "N left" within about two broadcast intervals of a
//! change anywhere.
//!
//! Messages carry a per-node sequence number and the SKU's version; a gap
//! in a node's sequence or an unknown SKU is healed with a snapshot from
//! the SKU's `counts` hash.

use holdfast_engine::{Counts, SkuIdx, SkuSnapshot};
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::Notify;

/// What one node last said about one SKU.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeCounts {
    pub counts: Counts,
    pub seq: u64,
}

/// One SKU across the deployment.
#[derive(Debug, Default)]
pub struct SkuGlobal {
    /// Units no node holds.
    pub pool: u32,
    /// The SKU's version when `pool` was read.
    pub version: u64,
    /// Every other node's last counts.
    pub nodes: HashMap<u8, NodeCounts>,
}

/// The SKUs whose global counts changed since the hub last looked, and
/// the pools (woken when a pool grows: a node waiting for units retries).
#[derive(Debug)]
pub struct GlobalCounts {
    me: u8,
    skus: Mutex<HashMap<SkuIdx, SkuGlobal>>,
    changed: Mutex<Vec<SkuIdx>>,
    /// Rung whenever some pool grows.
    pub pool_grew: Notify,
    /// When a message about each SKU last arrived (every node, this one
    /// included, republishes its counts every few seconds: silence means a
    /// lost subscription).
    heard: Mutex<HashMap<SkuIdx, std::time::Instant>>,
}

/// What a message changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Fresh,
    /// A message older than what we have (reordered): ignored.
    Stale,
    /// A node's sequence skipped ahead: a snapshot is due.
    Gap,
}

impl GlobalCounts {
    pub fn new(me: u8) -> Self {
        Self {
            me,
            skus: Mutex::default(),
            changed: Mutex::default(),
            pool_grew: Notify::new(),
            heard: Mutex::default(),
        }
    }

    /// A message about `sku` arrived.
    pub fn heard(&self, sku: SkuIdx) {
        self.heard
            .lock()
            .expect("heard lock")
            .insert(sku, std::time::Instant::now());
    }

    /// Whether nothing was heard about `sku` for `quiet` (or ever).
    pub fn silent_for(&self, sku: SkuIdx, quiet: std::time::Duration) -> bool {
        self.heard
            .lock()
            .expect("heard lock")
            .get(&sku)
            .is_none_or(|t| t.elapsed() >= quiet)
    }

    fn mark(&self, sku: SkuIdx) {
        let mut changed = self.changed.lock().expect("changed lock");
        if !changed.contains(&sku) {
            changed.push(sku);
        }
    }

    /// SKUs whose global counts changed (taken: each reported once).
    pub fn take_changed(&self) -> Vec<SkuIdx> {
        std::mem::take(&mut *self.changed.lock().expect("changed lock"))
    }

    /// A pool value with its SKU version (from a script's answer or a
    /// message); older versions are ignored.
    pub fn set_pool(&self, sku: SkuIdx, pool: u32, version: u64) {
        let grew = {
            let mut skus = self.skus.lock().expect("counts lock");
            let g = skus.entry(sku).or_default();
            if version < g.version {
                return;
            }
            let grew = pool > g.pool;
            g.pool = pool;
            g.version = version;
            grew
        };
        self.mark(sku);
        if grew {
            self.pool_grew.notify_waiters();
        }
    }

    /// Another node's counts.
    pub fn set_node(&self, sku: SkuIdx, node: u8, counts: NodeCounts) -> Applied {
        if node == self.me {
            return Applied::Stale;
        }
        let applied = {
            let mut skus = self.skus.lock().expect("counts lock");
            let g = skus.entry(sku).or_default();
            let applied = match g.nodes.get(&node).map(|n| n.seq) {
                Some(seq) if counts.seq <= seq => return Applied::Stale,
                Some(seq) if counts.seq > seq + 1 => Applied::Gap,
                _ => Applied::Fresh,
            };
            g.nodes.insert(node, counts);
            applied
        };
        self.mark(sku);
        applied
    }

    /// A full snapshot of one SKU (start-up, a gap): replaces what we had.
    pub fn replace(&self, sku: SkuIdx, pool: u32, version: u64, nodes: HashMap<u8, NodeCounts>) {
        {
            let mut skus = self.skus.lock().expect("counts lock");
            let g = skus.entry(sku).or_default();
            g.pool = pool;
            g.version = g.version.max(version);
            g.nodes = nodes;
            g.nodes.remove(&self.me);
        }
        self.mark(sku);
    }

    /// The pool as last seen.
    pub fn pool(&self, sku: SkuIdx) -> u32 {
        self.skus
            .lock()
            .expect("counts lock")
            .get(&sku)
            .map_or(0, |g| g.pool)
    }

    /// Units available on other nodes, as last published.
    pub fn available_elsewhere(&self, sku: SkuIdx) -> u32 {
        self.skus
            .lock()
            .expect("counts lock")
            .get(&sku)
            .map_or(0, |g| g.nodes.values().map(|n| n.counts.available).sum())
    }

    /// This node's snapshot turned global: the pool and every other node's
    /// counts added to this node's own (live) ones.
    pub fn globalize(&self, snap: &mut SkuSnapshot) {
        let skus = self.skus.lock().expect("counts lock");
        let Some(g) = skus.get(&snap.sku) else {
            return;
        };
        let c = &mut snap.counts;
        c.available += g.pool;
        for n in g.nodes.values() {
            c.available += n.counts.available;
            c.held += n.counts.held;
            c.sold += n.counts.sold;
        }
    }

    /// Every other node's counts of one SKU (for the dashboard).
    pub fn nodes_of(&self, sku: SkuIdx) -> Vec<(u8, Counts)> {
        let skus = self.skus.lock().expect("counts lock");
        let mut out: Vec<(u8, Counts)> = skus
            .get(&sku)
            .map(|g| g.nodes.iter().map(|(n, c)| (*n, c.counts)).collect())
            .unwrap_or_default();
        out.sort_by_key(|(n, _)| *n);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_engine::{SaleWindow, SkuSettings};

    fn snap(sku: SkuIdx, a: u32, h: u32, s: u32) -> SkuSnapshot {
        SkuSnapshot {
            sku,
            id: "x".into(),
            counts: Counts {
                available: a,
                held: h,
                sold: s,
            },
            window: SaleWindow::Open,
            settings: SkuSettings::default(),
            channels: Vec::new(),
        }
    }

    fn node(a: u32, h: u32, s: u32, seq: u64) -> NodeCounts {
        NodeCounts {
            counts: Counts {
                available: a,
                held: h,
                sold: s,
            },
            seq,
        }
    }

    #[test]
    fn global_is_pool_plus_every_node_with_ours_live() {
        let sku = SkuIdx::from(0);
        let g = GlobalCounts::new(1);
        g.set_pool(sku, 100, 5);
        assert_eq!(g.set_node(sku, 2, node(10, 3, 7, 1)), Applied::Fresh);
        assert_eq!(
            g.set_node(sku, 1, node(99, 99, 99, 1)),
            Applied::Stale,
            "our own share is live"
        );
        let mut s = snap(sku, 4, 1, 2);
        g.globalize(&mut s);
        assert_eq!(
            (s.counts.available, s.counts.held, s.counts.sold),
            (114, 4, 9)
        );
        assert_eq!(g.take_changed(), vec![sku]);
        assert!(g.take_changed().is_empty());
    }

    #[test]
    fn old_messages_are_ignored_and_gaps_reported() {
        let sku = SkuIdx::from(3);
        let g = GlobalCounts::new(1);
        g.set_node(sku, 2, node(10, 0, 0, 5));
        assert_eq!(g.set_node(sku, 2, node(9, 0, 0, 4)), Applied::Stale);
        assert_eq!(g.set_node(sku, 2, node(8, 0, 0, 9)), Applied::Gap);
        g.set_pool(sku, 50, 10);
        g.set_pool(sku, 60, 9);
        assert_eq!(g.pool(sku), 50, "an older version does not win");
        assert_eq!(g.available_elsewhere(sku), 8);
    }
}
