//! The catalog side of the engine: SKUs by id, their counts and settings,
//! the host's stock changes (restock, adjust, new total) and sale windows.
//! Admin actions, not a buyer's: each announces its change as events and
//! queues the SKU for the broadcaster.

use super::{Engine, push_transition};
use crate::answer::SkuSnapshot;
use crate::buyer_limit::BuyerId;
use crate::catalog::{SaleWindow, SkuEntry, SkuIdx, SkuSettings, SkuSpec};
use crate::channel::{ChannelCounts, ChannelIdx, ChannelSet, is_valid_channel_id};
use crate::error::CatalogError;
use crate::event::{EventBuf, EventKind};
use crate::limits::SKU_UNITS_MAX;
use crate::stock::{Change, Counts, StockRefusal};
use crate::sync::Ordering;
use std::sync::Arc;

impl Engine {
    /// Resolves a SKU id. Do this once per request, not per step.
    pub fn sku(&self, id: &str) -> Option<SkuIdx> {
        self.catalog.lookup(id)
    }

    /// The id of a SKU.
    pub fn sku_id(&self, sku: SkuIdx) -> Option<Arc<str>> {
        self.catalog.get(sku).and_then(|e| e.id.get().cloned())
    }

    /// Counts, window and settings of one SKU.
    pub fn snapshot(&self, sku: SkuIdx) -> Option<SkuSnapshot> {
        let entry = self.catalog.get(sku)?;
        Some(Self::snapshot_of(sku, entry))
    }

    fn snapshot_of(sku: SkuIdx, entry: &SkuEntry) -> SkuSnapshot {
        let (counts, channels) = match entry.channels.get() {
            None => (entry.stock.load(), Vec::new()),
            Some(set) => set.counts(&entry.stock),
        };
        SkuSnapshot {
            sku,
            id: entry.id.get().cloned().unwrap_or_else(|| Arc::from("")),
            counts,
            window: entry.window(),
            settings: entry.settings(),
            channels,
        }
    }

    /// Every SKU, in creation order.
    pub fn snapshots(&self) -> Vec<SkuSnapshot> {
        self.catalog
            .iter()
            .map(|(sku, e)| Self::snapshot_of(sku, e))
            .collect()
    }

    /// Number of SKUs.
    pub fn sku_count(&self) -> usize {
        self.catalog.iter().count()
    }

    /// Catalog capacity.
    pub fn skus_capacity(&self) -> u32 {
        self.catalog.capacity()
    }

    fn entry(&self, sku: SkuIdx) -> Result<&SkuEntry, CatalogError> {
        self.catalog.get(sku).ok_or(CatalogError::UnknownSku)
    }

    /// Creates a SKU with `spec.total` units.
    pub fn create_sku(&self, id: &str, spec: SkuSpec) -> Result<SkuIdx, CatalogError> {
        spec.settings.check()?;
        if spec.total > SKU_UNITS_MAX {
            return Err(CatalogError::TotalAboveMax);
        }
        if !self.admit() {
            return Err(CatalogError::Overloaded);
        }
        let now = self.now_ms();
        let sku = self.catalog.create(id, |entry| {
            entry.store_settings(spec.settings);
            entry
                .stock
                .restock(spec.total)
                .expect("total checked above");
            // Relaxed: published with the entry by the catalog's OnceLock.
            entry.window.store(spec.window.pack(), Ordering::Relaxed);
        })?;
        let mut buf = EventBuf::new();
        buf.push(EventKind::SkuCreated {
            sku,
            settings: spec.settings,
        });
        if spec.total > 0 {
            buf.push(EventKind::Restocked {
                sku,
                qty: spec.total,
            });
        }
        buf.push(EventKind::WindowChanged {
            sku,
            window: spec.window,
        });
        self.emit(now, &buf);
        self.after_window_change(sku, spec.window);
        // A new SKU is in no queue yet; its flag was set by the initial
        // stock write, so queue it here unconditionally.
        self.entry(sku)?.stock.mark_dirty();
        let _ = self.changed.push(sku.0);
        Ok(sku)
    }

    /// Replaces a SKU's settings. Live holds keep the deadline they have;
    /// a new buyer limit applies to reservations from now on.
    pub fn update_settings(&self, sku: SkuIdx, settings: SkuSettings) -> Result<(), CatalogError> {
        let entry = self.entry(sku)?;
        settings.check()?;
        if !self.admit() {
            return Err(CatalogError::Overloaded);
        }
        entry.store_settings(settings);
        let mut buf = EventBuf::new();
        buf.push(EventKind::SettingsChanged { sku, settings });
        self.emit(self.now_ms(), &buf);
        self.mark_changed(sku, entry);
        Ok(())
    }

    /// Announces a host's stock change (restock, adjust, new total).
    fn stock_change(&self, sku: SkuIdx, change: Change) -> Counts {
        let mut buf = EventBuf::new();
        let delta = i64::from(change.after.available) - i64::from(change.before.available);
        if delta > 0 {
            buf.push(EventKind::Restocked {
                sku,
                qty: delta as u32,
            });
        } else if delta < 0 {
            buf.push(EventKind::Adjusted {
                sku,
                qty: (-delta) as u32,
            });
        }
        push_transition(&mut buf, sku, change);
        self.emit(self.now_ms(), &buf);
        self.note(sku, change);
        // With channels, the SKU's counts include every quota.
        match self
            .catalog
            .get(sku)
            .and_then(|e| Some((e, e.channels.get()?)))
        {
            Some((entry, set)) => set.counts(&entry.stock).0,
            None => change.after,
        }
    }

    /// Adds `qty` units (restock).
    pub fn restock(&self, sku: SkuIdx, qty: u32) -> Result<Counts, CatalogError> {
        let entry = self.entry(sku)?;
        if qty == 0 {
            return Err(CatalogError::InvalidQty);
        }
        if !self.admit() {
            return Err(CatalogError::Overloaded);
        }
        let change = entry
            .stock
            .restock(qty)
            .map_err(|_| CatalogError::TotalAboveMax)?;
        Ok(self.stock_change(sku, change))
    }

    /// Removes `qty` available units. Held and sold units are never removed.
    pub fn adjust_down(&self, sku: SkuIdx, qty: u32) -> Result<Counts, CatalogError> {
        let entry = self.entry(sku)?;
        if qty == 0 {
            return Err(CatalogError::InvalidQty);
        }
        if !self.admit() {
            return Err(CatalogError::Overloaded);
        }
        let change = entry.stock.remove(qty).map_err(|r| match r {
            StockRefusal::Short(c) | StockRefusal::Overflow(c) => {
                CatalogError::NotEnoughAvailable {
                    available: c.available,
                }
            }
        })?;
        Ok(self.stock_change(sku, change))
    }

    /// Sets the total units by adding or removing available ones (of the
    /// common pool: channel quotas keep theirs).
    pub fn set_total(&self, sku: SkuIdx, total: u32) -> Result<Counts, CatalogError> {
        let entry = self.entry(sku)?;
        if !self.admit() {
            return Err(CatalogError::Overloaded);
        }
        let Some(set) = entry.channels.get() else {
            let change = entry.stock.set_total(total).map_err(total_refusal(0))?;
            return Ok(self.stock_change(sku, change));
        };
        // Under the lock: no quota move may run between reading the quotas'
        // total and setting the pool's.
        let _admin = set.lock();
        let quotas = set.quota_total();
        let short = CatalogError::TotalBelowCommitted {
            committed: quotas + entry.stock.load().held + entry.stock.load().sold,
        };
        let pool_total = total.checked_sub(quotas).ok_or(short)?;
        let change = entry
            .stock
            .set_total(pool_total)
            .map_err(total_refusal(quotas))?;
        Ok(self.stock_change(sku, change))
    }

    /// Whether a SKU has sales channels: two atomic loads, no allocation
    /// (the reservation path asks it to decide whether a buyer token's
    /// channel claim sells from a channel or only attributes the sale).
    /// False for an unknown SKU.
    #[inline]
    pub fn has_channels(&self, sku: SkuIdx) -> bool {
        self.catalog
            .get(sku)
            .and_then(|e| e.channels.get())
            .is_some_and(|set| !set.is_empty())
    }

    /// The sales channel `id` of a SKU.
    pub fn channel(&self, sku: SkuIdx, id: &str) -> Option<ChannelIdx> {
        self.catalog.get(sku)?.channels.get()?.find(id)
    }

    /// The id of a SKU's sales channel.
    pub fn channel_id(&self, sku: SkuIdx, channel: ChannelIdx) -> Option<Arc<str>> {
        self.catalog.get(sku)?.channels.get()?.id(channel)
    }

    /// Adds sales channel `id` to a SKU, or changes it: its cap (`None`: no
    /// cap) and its reserved quota's size (`quota`: units only it may
    /// sell, counting those it already holds or sold from the quota). A
    /// bigger quota takes available units from the common pool; a smaller
    /// one gives unsold quota units back. Applied in that order (add, cap,
    /// quota); a refusal stops there and names what was refused.
    pub fn configure_channel(
        &self,
        sku: SkuIdx,
        id: &str,
        quota: u32,
        cap: Option<u32>,
    ) -> Result<ChannelIdx, CatalogError> {
        let entry = self.entry(sku)?;
        if !is_valid_channel_id(id) {
            return Err(CatalogError::InvalidChannelId);
        }
        if cap.is_some_and(|c| c >= SKU_UNITS_MAX) {
            return Err(CatalogError::TotalAboveMax);
        }
        if !self.admit() {
            return Err(CatalogError::Overloaded);
        }
        let set = entry.channels.get_or_init(|| Box::new(ChannelSet::new()));
        let _admin = set.lock();
        let (channel, added) = match set.find(id) {
            Some(c) => (c, false),
            None => (set.add(id)?, true),
        };
        let had_cap = set.get(channel).cap();
        set.get(channel).set_cap(cap)?;
        if added || had_cap != cap {
            let mut buf = EventBuf::new();
            buf.push(EventKind::ChannelSet { sku, channel, cap });
            self.emit(self.now_ms(), &buf);
        }
        let have = set.get(channel).quota.load().total();
        if quota != have {
            self.move_locked(sku, entry, set, channel, i64::from(quota) - i64::from(have))?;
        }
        self.mark_changed(sku, entry);
        Ok(channel)
    }

    /// Moves `units` unsold units from the common pool into channel `id`'s
    /// quota (`units > 0`), or from its quota back to the pool (`< 0`).
    /// Live and atomic: no reservation can sell a unit twice or see the
    /// SKU's total change; one racing the move may be refused for the
    /// units in transit. Returns the channel's counts after the move.
    pub fn move_quota(
        &self,
        sku: SkuIdx,
        id: &str,
        units: i64,
    ) -> Result<ChannelCounts, CatalogError> {
        let entry = self.entry(sku)?;
        let set = entry.channels.get().ok_or(CatalogError::UnknownChannel)?;
        let channel = set.find(id).ok_or(CatalogError::UnknownChannel)?;
        if units == 0 || units.unsigned_abs() > u64::from(SKU_UNITS_MAX) {
            return Err(CatalogError::InvalidQty);
        }
        if !self.admit() {
            return Err(CatalogError::Overloaded);
        }
        let _admin = set.lock();
        self.move_locked(sku, entry, set, channel, units)?;
        self.mark_changed(sku, entry);
        let (_, mut channels) = set.counts(&entry.stock);
        Ok(channels.swap_remove(channel.get() as usize))
    }

    /// `move_quota` under the set's admin lock.
    fn move_locked(
        &self,
        sku: SkuIdx,
        entry: &SkuEntry,
        set: &ChannelSet,
        channel: ChannelIdx,
        units: i64,
    ) -> Result<(), CatalogError> {
        let quota = &set.get(channel).quota;
        let qty = units.unsigned_abs() as u32;
        let to_quota = units > 0;
        let pool_change = set.moving(|| {
            if to_quota {
                let change = entry.stock.remove(qty).map_err(|r| {
                    let (StockRefusal::Short(c) | StockRefusal::Overflow(c)) = r;
                    CatalogError::NotEnoughAvailable {
                        available: c.available,
                    }
                })?;
                quota.restock(qty).expect("units moved within one sku fit");
                Ok(change)
            } else {
                quota.remove(qty).map_err(|r| {
                    let (StockRefusal::Short(c) | StockRefusal::Overflow(c)) = r;
                    CatalogError::NotEnoughQuota {
                        available: c.available,
                    }
                })?;
                Ok(entry
                    .stock
                    .restock(qty)
                    .expect("units moved within one sku fit"))
            }
        })?;
        let mut buf = EventBuf::new();
        buf.push(EventKind::QuotaMoved {
            sku,
            channel,
            to_quota,
            qty,
        });
        push_transition(&mut buf, sku, pool_change);
        self.emit(self.now_ms(), &buf);
        self.note(sku, pool_change);
        Ok(())
    }

    /// Opens, pauses, closes or schedules the sale.
    pub fn set_window(&self, sku: SkuIdx, window: SaleWindow) -> Result<(), CatalogError> {
        let entry = self.entry(sku)?;
        if !self.admit() {
            return Err(CatalogError::Overloaded);
        }
        // Relaxed: see `SkuEntry::window`.
        entry.window.store(window.pack(), Ordering::Relaxed);
        let mut buf = EventBuf::new();
        buf.push(EventKind::WindowChanged { sku, window });
        self.emit(self.now_ms(), &buf);
        self.after_window_change(sku, window);
        self.mark_changed(sku, entry);
        Ok(())
    }

    fn after_window_change(&self, sku: SkuIdx, window: SaleWindow) {
        if matches!(window, SaleWindow::Scheduled { .. }) {
            // Full only if every SKU was scheduled since the expirer last
            // ran; then the expirer's periodic sweep still finds it.
            let _ = self.scheduled.push(sku.0);
        }
    }

    /// Opens a scheduled window whose time has come (called by the expirer).
    /// Returns whether this call opened it.
    pub(crate) fn open_if_due(&self, sku: SkuIdx, now_ms: u64) -> Option<bool> {
        let entry = self.catalog.get(sku)?;
        // Relaxed: see `SkuEntry::window`.
        let word = entry.window.load(Ordering::Relaxed);
        match SaleWindow::unpack(word) {
            SaleWindow::Scheduled { opens_at_ms } if now_ms >= opens_at_ms => {
                if !self.admit() {
                    return Some(false);
                }
                // Relaxed: a CAS so a host's concurrent change wins over us.
                let opened = entry
                    .window
                    .compare_exchange(
                        word,
                        SaleWindow::Open.pack(),
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    )
                    .is_ok();
                if opened {
                    let mut buf = EventBuf::new();
                    buf.push(EventKind::WindowChanged {
                        sku,
                        window: SaleWindow::Open,
                    });
                    self.emit(now_ms, &buf);
                    self.mark_changed(sku, entry);
                }
                Some(opened)
            }
            SaleWindow::Scheduled { .. } => Some(false),
            _ => None,
        }
    }

    /// Erases `buyer` from the per-buyer limit table (docs/PRIVACY.md): its
    /// counts on every SKU go to zero (it counts afresh) and no entry
    /// names it any more. Call only when the buyer has no live hold (the
    /// gateway refuses the erasure otherwise); a reservation racing it is
    /// counted as a new purchase, and a hold from before it that ends
    /// later never takes a count below zero. Scans the whole table.
    /// Returns the limit records that counted units.
    pub fn erase_buyer(&self, buyer: BuyerId) -> u32 {
        self.buyers.forget(buyer)
    }

    /// Units counted against `buyer`'s limit on `sku` (live holds + sales).
    pub fn buyer_units(&self, sku: SkuIdx, buyer: BuyerId) -> u32 {
        self.buyers.units(sku, buyer)
    }
}

/// The refusal of a new pool total, `quotas` units of the SKU sitting in
/// channel quotas besides the pool's.
fn total_refusal(quotas: u32) -> impl Fn(StockRefusal) -> CatalogError {
    move |r| match r {
        StockRefusal::Short(c) => CatalogError::TotalBelowCommitted {
            committed: quotas + c.held + c.sold,
        },
        StockRefusal::Overflow(_) => CatalogError::TotalAboveMax,
    }
}

/// One of a SKU's leasable amounts, as a multi-node deployment moves them
/// between its nodes: the common pool's units, a channel's quota units, or
/// a capped channel's headroom under its cap (its allowance).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bucket {
    Pool,
    Quota(ChannelIdx),
    Allowance(ChannelIdx),
}

impl Engine {
    /// A bucket's counts: its available, held and sold units (for an
    /// allowance: headroom, and the channel's held and sold units).
    pub fn bucket_counts(&self, sku: SkuIdx, bucket: Bucket) -> Result<Counts, CatalogError> {
        let entry = self.entry(sku)?;
        match bucket {
            Bucket::Pool => Ok(entry.stock.load()),
            Bucket::Quota(c) | Bucket::Allowance(c) => {
                let set = entry.channels.get().ok_or(CatalogError::UnknownChannel)?;
                if set.id(c).is_none() {
                    return Err(CatalogError::UnknownChannel);
                }
                let channel = set.get(c);
                Ok(match bucket {
                    Bucket::Quota(_) => channel.quota.load(),
                    _ => channel.allowance.load(),
                })
            }
        }
    }

    /// Adds `qty` available units to a bucket (`grow`) or removes `qty`
    /// available ones (`!grow`): a lease granted to this node, or given
    /// back. Quota units join or leave the SKU's total (announced as a
    /// restock into the quota, or a move out of it and an adjustment); an
    /// allowance's headroom changes the channel's cap here (announced as
    /// the channel's new cap). A capped channel only: an uncapped one has
    /// no allowance to lease (`UnknownChannel`).
    pub fn lease_bucket(
        &self,
        sku: SkuIdx,
        bucket: Bucket,
        qty: u32,
        grow: bool,
    ) -> Result<Counts, CatalogError> {
        let channel = match bucket {
            Bucket::Pool if grow => return self.restock(sku, qty),
            Bucket::Pool => return self.adjust_down(sku, qty),
            Bucket::Quota(c) | Bucket::Allowance(c) => c,
        };
        let entry = self.entry(sku)?;
        if qty == 0 {
            return Err(CatalogError::InvalidQty);
        }
        let set = entry.channels.get().ok_or(CatalogError::UnknownChannel)?;
        if set.id(channel).is_none() {
            return Err(CatalogError::UnknownChannel);
        }
        if !self.admit() {
            return Err(CatalogError::Overloaded);
        }
        let _admin = set.lock();
        let short = |r: StockRefusal| {
            let (StockRefusal::Short(c) | StockRefusal::Overflow(c)) = r;
            CatalogError::NotEnoughAvailable {
                available: c.available,
            }
        };
        let mut buf = EventBuf::new();
        let ch = set.get(channel);
        let change = match bucket {
            Bucket::Quota(_) => {
                let change = set.moving(|| {
                    if grow {
                        ch.quota
                            .restock(qty)
                            .map_err(|_| CatalogError::TotalAboveMax)
                    } else {
                        ch.quota.remove(qty).map_err(short)
                    }
                })?;
                let moved = EventKind::QuotaMoved {
                    sku,
                    channel,
                    to_quota: grow,
                    qty,
                };
                if grow {
                    buf.push(EventKind::Restocked { sku, qty });
                    buf.push(moved);
                } else {
                    buf.push(moved);
                    buf.push(EventKind::Adjusted { sku, qty });
                }
                change
            }
            _ => {
                if ch.cap().is_none() {
                    return Err(CatalogError::UnknownChannel);
                }
                let change = if grow {
                    ch.allowance
                        .restock(qty)
                        .map_err(|_| CatalogError::TotalAboveMax)?
                } else {
                    ch.allowance.remove(qty).map_err(short)?
                };
                buf.push(EventKind::ChannelSet {
                    sku,
                    channel,
                    cap: Some(change.after.total()),
                });
                change
            }
        };
        self.emit(self.now_ms(), &buf);
        self.mark_changed(sku, entry);
        Ok(change.after)
    }
}
