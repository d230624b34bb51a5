//! The catalog side of the engine: SKUs by id, their counts and settings,
//! the host's stock changes (restock, adjust, new total) and sale windows.
//! Admin actions, not a buyer's: each announces its change as events and
//! queues the SKU for the broadcaster.

use super::{Engine, push_transition};
use crate::answer::SkuSnapshot;
use crate::buyer_limit::BuyerId;
use crate::catalog::{SaleWindow, SkuEntry, SkuIdx, SkuSettings, SkuSpec};
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
        SkuSnapshot {
            sku,
            id: entry.id.get().cloned().unwrap_or_else(|| Arc::from("")),
            counts: entry.stock.load(),
            window: entry.window(),
            settings: entry.settings(),
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
        change.after
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

    /// Sets the total units by adding or removing available ones.
    pub fn set_total(&self, sku: SkuIdx, total: u32) -> Result<Counts, CatalogError> {
        let entry = self.entry(sku)?;
        if !self.admit() {
            return Err(CatalogError::Overloaded);
        }
        let change = entry.stock.set_total(total).map_err(|r| match r {
            StockRefusal::Short(c) => CatalogError::TotalBelowCommitted {
                committed: c.held + c.sold,
            },
            StockRefusal::Overflow(_) => CatalogError::TotalAboveMax,
        })?;
        Ok(self.stock_change(sku, change))
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

    /// Units counted against `buyer`'s limit on `sku` (live holds + sales).
    pub fn buyer_units(&self, sku: SkuIdx, buyer: BuyerId) -> u32 {
        self.buyers.units(sku, buyer)
    }
}
