//! Rebuilding an engine from persisted state, and exporting the live state
//! for a full re-write (the journal's recovery and resync).
//!
//! A restore builds a fresh engine and places every SKU, live hold and buyer
//! count exactly as given, keeping each hold's id (clients hold those ids),
//! after checking that the state is consistent: per SKU, the units in live
//! holds add up to `held`, and every count fits. An inconsistent state is
//! refused with a report of everything wrong, never half-loaded. Holds whose
//! deadline passed while the process was down are restored live and expire
//! on the expirer's first run, which emits their events like any expiry.

use crate::buyer_limit::BuyerId;
use crate::catalog::{SaleWindow, SkuIdx, SkuSettings};
use crate::channel::{ChannelSet, Source, is_valid_channel_id};
use crate::clock::Clock;
use crate::engine::Engine;
use crate::expiry::Expirer;
use crate::hold::{self, HoldId, HoldState, LINE, NO_LINE};
use crate::idempotency::{Claim, RequestId};
use crate::limits::{CART_LINES_MAX, CHANNELS_MAX, EngineConfig, SKU_UNITS_MAX};
use crate::stock::Counts;
use crate::sync::Ordering;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

/// One SKU as persisted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedSku {
    pub id: String,
    /// The SKU's counts: its common pool plus every channel quota.
    pub counts: Counts,
    pub settings: SkuSettings,
    pub window: SaleWindow,
    /// Its sales channels, in the order they were added.
    pub channels: Vec<SavedChannel>,
}

/// One sales channel of a SKU as persisted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedChannel {
    pub id: String,
    /// The channel's reserved quota's units (part of the SKU's counts).
    pub quota: Counts,
    /// Units the channel holds and sold, from its quota and the pool.
    pub held: u32,
    pub sold: u32,
    /// The most it may hold plus sell; `None`: no cap.
    pub cap: Option<u32>,
}

/// One line of a persisted hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedLine {
    pub sku: String,
    pub qty: u32,
    /// Whether the line counts against the buyer's limit.
    pub counted: bool,
    /// The channel it was reserved on (`None`: the common pool).
    pub channel: Option<String>,
    /// Units of the line from that channel's quota.
    pub quota: u32,
}

/// One live hold as persisted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedHold {
    pub hold: HoldId,
    pub buyer: BuyerId,
    pub deadline_ms: u64,
    pub latest_ms: u64,
    pub lines: Vec<SavedLine>,
}

/// Units counted against one buyer's limit on one SKU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedBuyer {
    pub sku: String,
    pub buyer: BuyerId,
    pub units: u32,
}

/// A remembered answer to a request id (idempotency across restarts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SavedRequest {
    pub request: RequestId,
    pub fingerprint: u32,
    pub outcome: u64,
    pub deadline_ms: u64,
    pub aux: u32,
}

/// Everything needed to rebuild an engine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SavedState {
    /// SKUs in creation order.
    pub skus: Vec<SavedSku>,
    pub holds: Vec<SavedHold>,
    pub buyers: Vec<SavedBuyer>,
    /// Remembered request answers (from `RequestDone` events; `save` cannot
    /// list them, since the engine keeps only hashes).
    pub requests: Vec<SavedRequest>,
    /// The last event sequence number the state includes.
    pub last_seq: u64,
}

/// Why a saved state cannot be loaded: every problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreError {
    pub problems: Vec<String>,
}

impl fmt::Display for RestoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "saved state is inconsistent ({} problems)",
            self.problems.len()
        )?;
        for p in &self.problems {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for RestoreError {}

impl SavedState {
    /// Every consistency problem of this state for an engine with `config`.
    pub fn check(&self, config: &EngineConfig) -> Vec<String> {
        let mut problems = Vec::new();
        let mut held: HashMap<&str, u64> = HashMap::new();
        let mut counted: HashMap<(&str, BuyerId), u64> = HashMap::new();
        let mut slots = HashSet::new();
        let mut channel_held: HashMap<(&str, &str), (u64, u64)> = HashMap::new();
        let ids: HashSet<&str> = self.skus.iter().map(|s| s.id.as_str()).collect();
        if ids.len() != self.skus.len() {
            problems.push("a sku id appears twice".into());
        }
        if self.skus.len() > config.skus_max as usize {
            problems.push(format!(
                "{} skus but skus_max is {}",
                self.skus.len(),
                config.skus_max
            ));
        }
        let total_lines: usize = self.holds.iter().map(|h| h.lines.len()).sum();
        if total_lines > config.holds_max as usize {
            problems.push(format!(
                "{total_lines} hold lines but holds_max is {}",
                config.holds_max
            ));
        }
        for s in &self.skus {
            if !crate::is_valid_sku_id(&s.id) {
                problems.push(format!("sku {:?}: invalid id", s.id));
            }
            if s.counts.total() > SKU_UNITS_MAX {
                problems.push(format!(
                    "sku {}: total {} above the maximum",
                    s.id,
                    s.counts.total()
                ));
            }
        }
        for h in &self.holds {
            if h.hold.node() != config.node_id {
                problems.push(format!(
                    "hold {}: issued by node {}, this is node {}",
                    h.hold,
                    h.hold.node(),
                    config.node_id
                ));
            }
            if h.hold.slot() >= config.holds_max {
                problems.push(format!(
                    "hold {}: slot beyond holds_max {}",
                    h.hold, config.holds_max
                ));
            }
            if !slots.insert(h.hold.slot()) {
                problems.push(format!("hold {}: slot used by another hold", h.hold));
            }
            if h.lines.is_empty() || h.lines.len() > CART_LINES_MAX {
                problems.push(format!("hold {}: {} lines", h.hold, h.lines.len()));
            }
            if h.deadline_ms > hold::DEADLINE_MAX_MS || h.latest_ms > hold::DEADLINE_MAX_MS {
                problems.push(format!("hold {}: deadline out of range", h.hold));
            }
            for l in &h.lines {
                if !ids.contains(l.sku.as_str()) {
                    problems.push(format!("hold {}: unknown sku {:?}", h.hold, l.sku));
                }
                if l.qty == 0 {
                    problems.push(format!("hold {}: a line of zero units", h.hold));
                }
                *held.entry(&l.sku).or_default() += u64::from(l.qty);
                if let Some(c) = &l.channel {
                    let (h, q) = channel_held.entry((&l.sku, c.as_str())).or_default();
                    *h += u64::from(l.qty);
                    *q += u64::from(l.quota);
                } else if l.quota > 0 {
                    problems.push(format!("hold {}: quota units without a channel", h.hold));
                }
                if l.quota > l.qty {
                    problems.push(format!("hold {}: more quota units than units", h.hold));
                }
                if l.counted {
                    *counted.entry((&l.sku, h.buyer)).or_default() += u64::from(l.qty);
                }
            }
        }
        for s in &self.skus {
            problems.extend(check_channels(s, &channel_held));
        }
        for (sku, channel) in channel_held.keys() {
            let known = self
                .skus
                .iter()
                .any(|s| s.id == *sku && s.channels.iter().any(|c| c.id == *channel));
            if !known {
                problems.push(format!(
                    "sku {sku}: a hold names unknown channel {channel:?}"
                ));
            }
        }
        for s in &self.skus {
            let live = held.get(s.id.as_str()).copied().unwrap_or(0);
            if live != u64::from(s.counts.held) {
                problems.push(format!(
                    "sku {}: held is {} but its live holds add up to {live} (available {}, sold {})",
                    s.id, s.counts.held, s.counts.available, s.counts.sold
                ));
            }
        }
        let buyers: HashMap<(&str, BuyerId), u64> = self
            .buyers
            .iter()
            .map(|b| ((b.sku.as_str(), b.buyer), u64::from(b.units)))
            .collect();
        for ((sku, buyer), units) in counted {
            let recorded = buyers.get(&(sku, buyer)).copied().unwrap_or(0);
            if recorded < units {
                problems.push(format!(
                    "sku {sku}: buyer {:016x} has {units} units in live holds but only {recorded} counted",
                    buyer.0
                ));
            }
        }
        problems
    }
}

/// Every problem of one SKU's channels, given the (units, quota units)
/// its live holds have per channel.
fn check_channels(s: &SavedSku, held: &HashMap<(&str, &str), (u64, u64)>) -> Vec<String> {
    let mut problems = Vec::new();
    if s.channels.len() > CHANNELS_MAX {
        problems.push(format!("sku {}: more than {CHANNELS_MAX} channels", s.id));
    }
    let mut ids = HashSet::new();
    let mut quotas = Counts::default();
    for c in &s.channels {
        if !is_valid_channel_id(&c.id) || !ids.insert(c.id.as_str()) {
            problems.push(format!("sku {}: channel {:?} invalid or twice", s.id, c.id));
        }
        quotas.available += c.quota.available;
        quotas.held += c.quota.held;
        quotas.sold += c.quota.sold;
        let (live, live_quota) = held
            .get(&(s.id.as_str(), c.id.as_str()))
            .copied()
            .unwrap_or((0, 0));
        if live != u64::from(c.held) || live_quota != u64::from(c.quota.held) {
            problems.push(format!(
                "sku {} channel {}: holds {} ({} of its quota) but its live holds add up to {live} ({live_quota})",
                s.id, c.id, c.held, c.quota.held
            ));
        }
        if c.quota.held > c.held || c.quota.sold > c.sold {
            problems.push(format!(
                "sku {} channel {}: quota counts above the channel's",
                s.id, c.id
            ));
        }
        if c.cap
            .is_some_and(|cap| cap >= SKU_UNITS_MAX || cap < c.held + c.sold)
        {
            problems.push(format!("sku {} channel {}: cap out of range", s.id, c.id));
        }
    }
    if quotas.available > s.counts.available
        || quotas.held > s.counts.held
        || quotas.sold > s.counts.sold
    {
        problems.push(format!(
            "sku {}: channel quotas exceed the sku's counts",
            s.id
        ));
    }
    problems
}

/// A channel's allowance word (see `channel`): cap headroom, held, sold.
fn allowance(c: &SavedChannel) -> Counts {
    Counts {
        available: c.cap.unwrap_or(SKU_UNITS_MAX) - c.held - c.sold,
        held: c.held,
        sold: c.sold,
    }
}

impl Engine {
    /// Rebuilds an engine from a saved state (see the module docs). Emits
    /// no events for what it loads: it is already persisted.
    pub fn restore(
        config: EngineConfig,
        clock: Arc<dyn Clock>,
        state: &SavedState,
    ) -> Result<(Arc<Engine>, Expirer), RestoreError> {
        let mut problems = state.check(&config);
        if !problems.is_empty() {
            return Err(RestoreError { problems });
        }
        let heads: HashSet<u32> = state.holds.iter().map(|h| h.hold.slot()).collect();
        let (engine, expirer) = Engine::build(config, clock, &|slot| heads.contains(&slot))
            .map_err(|e| RestoreError {
                problems: vec![e.to_string()],
            })?;
        let mut index = HashMap::new();
        for s in &state.skus {
            let sku = engine.catalog.create(&s.id, |entry| {
                entry.store_settings(s.settings);
                let mut pool = s.counts;
                if !s.channels.is_empty() {
                    let set = ChannelSet::new();
                    for c in &s.channels {
                        let channel = set.get(set.add(&c.id).expect("checked above"));
                        channel.quota.reset(c.quota);
                        channel.allowance.reset(allowance(c));
                        pool.available -= c.quota.available;
                        pool.held -= c.quota.held;
                        pool.sold -= c.quota.sold;
                    }
                    let _ = entry.channels.set(Box::new(set));
                }
                entry.stock.reset(pool);
                // Relaxed: published with the entry by the catalog's OnceLock.
                entry.window.store(s.window.pack(), Ordering::Relaxed);
            });
            match sku {
                Ok(sku) => {
                    index.insert(s.id.as_str(), sku);
                    if matches!(s.window, SaleWindow::Scheduled { .. }) {
                        let _ = engine.scheduled.push(sku.get());
                    }
                }
                Err(e) => problems.push(format!("sku {}: {e}", s.id)),
            }
        }
        for b in &state.buyers {
            if let Some(&sku) = index.get(b.sku.as_str())
                && engine.buyers.add(sku, b.buyer, b.units).is_err()
            {
                problems.push("buyer table full: raise buyer_entries_max".into());
                break;
            }
        }
        for h in &state.holds {
            if let Err(p) = engine.place_hold(h, &index) {
                problems.push(p);
            }
        }
        for r in &state.requests {
            if let Claim::New(ticket) = engine.requests.claim(r.request.0, r.fingerprint) {
                ticket.record(r.outcome, r.deadline_ms, r.aux);
            }
        }
        if !problems.is_empty() {
            return Err(RestoreError { problems });
        }
        if let Some(log) = engine.events() {
            log.resume_after(state.last_seq);
        }
        for (sku, entry) in engine.catalog.iter() {
            engine.mark_changed(sku, entry);
        }
        Ok((engine, expirer))
    }

    /// Puts one saved hold in its own head slot, lines in free slots.
    fn place_hold(&self, h: &SavedHold, index: &HashMap<&str, SkuIdx>) -> Result<(), String> {
        let mut sources = Vec::with_capacity(h.lines.len());
        for line in &h.lines {
            sources.push(match &line.channel {
                None => Source::POOL,
                Some(c) => Source {
                    channel: Some(
                        self.channel(index[line.sku.as_str()], c)
                            .ok_or_else(|| format!("hold {}: unknown channel {c:?}", h.hold))?,
                    ),
                    quota: line.quota,
                },
            });
        }
        let head = h.hold.slot();
        let mut slots = Vec::with_capacity(h.lines.len());
        slots.push((head, h.hold.generation()));
        for _ in 1..h.lines.len() {
            slots.push(
                self.holds
                    .alloc()
                    .ok_or("hold table full: raise holds_max")?,
            );
        }
        for (i, (line, &(slot_index, generation))) in h.lines.iter().zip(&slots).enumerate() {
            let slot = self.holds.slot(slot_index);
            // Relaxed stores: the engine is not shared yet; the head's
            // Release publish below orders them for everyone later.
            slot.sku
                .store(index[line.sku.as_str()].get(), Ordering::Relaxed);
            slot.qty.store(line.qty, Ordering::Relaxed);
            slot.buyer.store(h.buyer.0, Ordering::Relaxed);
            slot.latest_ms.store(h.latest_ms, Ordering::Relaxed);
            slot.owner.store(h.hold.to_raw(), Ordering::Relaxed);
            let next = slots.get(i + 1).map_or(NO_LINE, |s| s.0);
            slot.next_line.store(next, Ordering::Relaxed);
            slot.lines.store(h.lines.len() as u32, Ordering::Relaxed);
            slot.sold.store(0, Ordering::Relaxed);
            slot.counted
                .store(u32::from(line.counted), Ordering::Relaxed);
            slot.source.store(sources[i].pack(), Ordering::Relaxed);
            if i > 0 {
                slot.word
                    .store(hold::pack(generation, LINE, 0), Ordering::Relaxed);
            }
        }
        self.inbox.link(head, h.deadline_ms);
        self.holds
            .slot(head)
            .publish(h.hold.generation(), h.deadline_ms);
        Ok(())
    }

    /// Every live hold, for a full re-write of the persisted state. Scans
    /// the hold table: call it only for a resync, never per request.
    pub fn live_holds(&self) -> Vec<SavedHold> {
        let mut out = Vec::new();
        for index in 0..self.holds.capacity() {
            let Some(view) = self.holds.read(index) else {
                continue;
            };
            if hold::state(view.word) != hold::HELD {
                continue;
            }
            let Some(id) = HoldId::from_raw(view.owner) else {
                continue;
            };
            let Ok(info) = self.hold(id) else { continue };
            if info.state != HoldState::Held {
                continue;
            }
            let mut lines = Vec::with_capacity(info.lines.len());
            let mut slot_index = index;
            for l in &info.lines {
                let counted = self.holds.slot(slot_index).counted.load(Ordering::Relaxed) == 1;
                let source =
                    Source::unpack(self.holds.slot(slot_index).source.load(Ordering::Relaxed));
                lines.push(SavedLine {
                    channel: source
                        .channel
                        .and_then(|c| self.channel_id(l.sku, c))
                        .map(|c| c.to_string()),
                    quota: source.quota,
                    sku: self
                        .sku_id(l.sku)
                        .map(|s| s.to_string())
                        .unwrap_or_default(),
                    qty: l.qty,
                    counted,
                });
                slot_index = self
                    .holds
                    .slot(slot_index)
                    .next_line
                    .load(Ordering::Relaxed);
                if slot_index == NO_LINE {
                    break;
                }
            }
            out.push(SavedHold {
                hold: id,
                buyer: info.buyer,
                deadline_ms: info.deadline_ms,
                latest_ms: info.latest_ms,
                lines,
            });
        }
        out
    }

    /// Every (sku, buyer) with units counted against a limit.
    pub fn buyer_counts(&self) -> Vec<SavedBuyer> {
        self.buyers
            .list()
            .into_iter()
            .filter_map(|(sku, buyer, units)| {
                Some(SavedBuyer {
                    sku: self.sku_id(sku)?.to_string(),
                    buyer,
                    units,
                })
            })
            .collect()
    }

    /// The whole live state as a [`SavedState`] (counts are read SKU by
    /// SKU while traffic may continue: quiesce first for an exact copy).
    pub fn save(&self) -> SavedState {
        SavedState {
            skus: self
                .snapshots()
                .into_iter()
                .map(|s| SavedSku {
                    id: s.id.to_string(),
                    counts: s.counts,
                    settings: s.settings,
                    window: s.window,
                    channels: s
                        .channels
                        .iter()
                        .map(|c| SavedChannel {
                            id: c.id.to_string(),
                            quota: c.quota,
                            held: c.held,
                            sold: c.sold,
                            cap: c.cap,
                        })
                        .collect(),
                })
                .collect(),
            holds: self.live_holds(),
            buyers: self.buyer_counts(),
            requests: Vec::new(),
            last_seq: self.events().map_or(0, |l| l.next_seq() - 1),
        }
    }
}
