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

/// One channel's share of a SKU on one node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeChannel {
    pub id: String,
    /// The node's leased quota units: available, held, sold.
    pub quota: Counts,
    /// The channel's units in live holds and sold on the node (quota and
    /// pool).
    pub held: u32,
    pub sold: u32,
    /// Leased headroom under the channel's cap not yet used (0 uncapped).
    pub headroom: u32,
}

/// A node's channel part of a SKU's counts: its pool's available units
/// and each channel's share. Wire form (in `c` messages and the counts
/// hash): `pool available;id:quota available:quota held:quota sold:held:
/// sold:headroom,...`, empty for a SKU without channels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeChannels {
    pub pool_available: u32,
    pub channels: Vec<NodeChannel>,
}

impl NodeChannels {
    /// This node's part, from its engine's snapshot.
    pub fn of(snap: &SkuSnapshot) -> Self {
        let quotas: u32 = snap.channels.iter().map(|c| c.quota.available).sum();
        Self {
            pool_available: snap.counts.available.saturating_sub(quotas),
            channels: snap
                .channels
                .iter()
                .map(|c| NodeChannel {
                    id: c.id.to_string(),
                    quota: c.quota,
                    held: c.held,
                    sold: c.sold,
                    headroom: c.cap.map_or(0, |cap| cap.saturating_sub(c.held + c.sold)),
                })
                .collect(),
        }
    }

    pub fn encode(&self) -> String {
        if self.channels.is_empty() {
            return String::new();
        }
        let list: Vec<String> = self
            .channels
            .iter()
            .map(|c| {
                format!(
                    "{}:{}:{}:{}:{}:{}:{}",
                    c.id, c.quota.available, c.quota.held, c.quota.sold, c.held, c.sold, c.headroom
                )
            })
            .collect();
        format!("{};{}", self.pool_available, list.join(","))
    }

    pub fn parse(v: &str) -> Option<Self> {
        if v.is_empty() {
            return Some(Self::default());
        }
        let (pool, list) = v.split_once(';')?;
        let mut channels = Vec::new();
        for part in list.split(',').filter(|p| !p.is_empty()) {
            let mut f = part.split(':');
            let id = f.next()?.to_string();
            let mut n = || f.next()?.parse::<u32>().ok();
            channels.push(NodeChannel {
                id,
                quota: Counts {
                    available: n()?,
                    held: n()?,
                    sold: n()?,
                },
                held: n()?,
                sold: n()?,
                headroom: n()?,
            });
        }
        Some(Self {
            pool_available: pool.parse().ok()?,
            channels,
        })
    }
}

/// A SKU's channel buckets in Redis not leased to any node: per channel,
/// its quota's units and its headroom under the cap (`None`: uncapped).
/// Wire form: `id:quota:headroom` joined by commas, `-` for no cap (the
/// scripts' `FREE`).
pub fn parse_free(v: &str) -> Vec<(String, u32, Option<u32>)> {
    v.split(',')
        .filter_map(|p| {
            let mut f = p.split(':');
            let id = f.next().filter(|id| !id.is_empty())?.to_string();
            let quota = f.next()?.parse().ok()?;
            let headroom = f.next()?.parse().ok();
            Some((id, quota, headroom))
        })
        .collect()
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
    /// Every other node's last channel part.
    pub node_channels: HashMap<u8, NodeChannels>,
    /// The channel buckets no node holds, and the version they were read
    /// at.
    pub free: Vec<(String, u32, Option<u32>)>,
    pub free_version: u64,
    /// Each channel's configured quota and cap (from the definition).
    pub configured: Vec<(String, u32, Option<u32>)>,
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

    /// The unleased channel buckets (the scripts' `free`) at `version`;
    /// older versions are ignored.
    pub fn set_free(&self, sku: SkuIdx, free: &str, version: u64) {
        {
            let mut skus = self.skus.lock().expect("counts lock");
            let g = skus.entry(sku).or_default();
            if version < g.free_version {
                return;
            }
            g.free = parse_free(free);
            g.free_version = version;
        }
        self.mark(sku);
    }

    /// Each channel's configured quota and cap (the definition).
    pub fn set_configured(&self, sku: SkuIdx, configured: Vec<(String, u32, Option<u32>)>) {
        self.skus
            .lock()
            .expect("counts lock")
            .entry(sku)
            .or_default()
            .configured = configured;
        self.mark(sku);
    }

    /// Unleased quota units of channel `id`, as last seen.
    pub fn free_quota(&self, sku: SkuIdx, id: &str) -> u32 {
        self.skus
            .lock()
            .expect("counts lock")
            .get(&sku)
            .and_then(|g| g.free.iter().find(|(c, ..)| c == id).map(|(_, q, _)| *q))
            .unwrap_or(0)
    }

    /// Another node's channel part (with its counts, same sequence).
    pub fn set_node_channels(&self, sku: SkuIdx, node: u8, part: NodeChannels) {
        if node == self.me {
            return;
        }
        self.skus
            .lock()
            .expect("counts lock")
            .entry(sku)
            .or_default()
            .node_channels
            .insert(node, part);
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
    pub fn replace(
        &self,
        sku: SkuIdx,
        pool: u32,
        version: u64,
        nodes: HashMap<u8, (NodeCounts, NodeChannels)>,
        free: &str,
    ) {
        {
            let mut skus = self.skus.lock().expect("counts lock");
            let g = skus.entry(sku).or_default();
            g.pool = pool;
            g.version = g.version.max(version);
            if version >= g.free_version {
                g.free = parse_free(free);
                g.free_version = version;
            }
            g.node_channels = nodes.iter().map(|(n, (_, c))| (*n, c.clone())).collect();
            g.nodes = nodes.into_iter().map(|(n, (c, _))| (n, c)).collect();
            g.nodes.remove(&self.me);
            g.node_channels.remove(&self.me);
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
        let mine = NodeChannels::of(snap);
        let c = &mut snap.counts;
        c.available += g.pool;
        c.available += g.free.iter().map(|(_, q, _)| q).sum::<u32>();
        for n in g.nodes.values() {
            c.available += n.counts.available;
            c.held += n.counts.held;
            c.sold += n.counts.sold;
        }
        if snap.channels.is_empty() {
            return;
        }
        // Every node's share of each channel, this node's live one first.
        let parts: Vec<&NodeChannels> = std::iter::once(&mine)
            .chain(g.node_channels.values())
            .collect();
        let pool_available = g.pool + parts.iter().map(|p| p.pool_available).sum::<u32>();
        for ch in &mut snap.channels {
            let id = &*ch.id;
            let shares = parts
                .iter()
                .filter_map(|p| p.channels.iter().find(|c| c.id == id));
            let (mut quota, mut held, mut sold, mut headroom) = (Counts::default(), 0, 0, 0);
            for s in shares {
                quota.available += s.quota.available;
                quota.held += s.quota.held;
                quota.sold += s.quota.sold;
                held += s.held;
                sold += s.sold;
                headroom += s.headroom;
            }
            let free = g.free.iter().find(|(c, ..)| c == id);
            quota.available += free.map_or(0, |(_, q, _)| *q);
            let configured = g.configured.iter().find(|(c, ..)| c == id);
            let cap = configured.and_then(|(_, _, cap)| *cap);
            let units = quota.available + pool_available;
            ch.available = match free.and_then(|(_, _, h)| *h) {
                Some(free_headroom) if cap.is_some() => units.min(free_headroom + headroom),
                _ if cap.is_some() => units.min(headroom),
                _ => units,
            };
            ch.quota = quota;
            ch.held = held;
            ch.sold = sold;
            ch.cap = cap;
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
