//! The catalog: a preallocated table of SKUs (stock word, sale window and
//! settings in one cache-aligned entry) and a dashmap from SKU id to index.
//!
//! Hot paths resolve a SKU id once ([`crate::Engine::sku`]) and then work
//! with the [`SkuIdx`]; the per-SKU entry never moves, so no lookup or lock is
//! on the reserve path. Creating a SKU takes the dashmap shard lock, which is
//! fine: it is an admin action, not a buyer's.

use crate::channel::ChannelSet;
use crate::error::CatalogError;
use crate::limits::HOLD_LIFETIME_MAX_MS;
use crate::limits::{SKU_ID_BYTES_MAX, SKU_UNITS_MAX};
use crate::stock::Stock;
use crate::sync::{AtomicU32, AtomicU64, Ordering};
use crossbeam::utils::CachePadded;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use std::sync::{Arc, OnceLock};

/// Index of a SKU in the catalog table. Stable for the engine's lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SkuIdx(pub(crate) u32);

impl From<u32> for SkuIdx {
    fn from(index: u32) -> Self {
        Self(index)
    }
}

impl SkuIdx {
    /// The raw index.
    pub fn get(self) -> u32 {
        self.0
    }
}

/// When a SKU can be reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SaleWindow {
    /// Opens by itself at this time (ms since the Unix epoch).
    Scheduled { opens_at_ms: u64 },
    /// On sale.
    Open,
    /// Temporarily not on sale (the host paused the drop).
    Paused,
    /// Sale over.
    Closed,
}

impl SaleWindow {
    /// Whether a reservation at `now_ms` is allowed.
    #[inline]
    pub fn is_open_at(self, now_ms: u64) -> bool {
        match self {
            Self::Open => true,
            Self::Scheduled { opens_at_ms } => now_ms >= opens_at_ms,
            Self::Paused | Self::Closed => false,
        }
    }

    /// Stable lowercase name used in APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled { .. } => "scheduled",
            Self::Open => "open",
            Self::Paused => "paused",
            Self::Closed => "closed",
        }
    }

    const TAG_SHIFT: u32 = 62;
    const AT_MASK: u64 = (1 << Self::TAG_SHIFT) - 1;

    pub(crate) fn pack(self) -> u64 {
        match self {
            Self::Scheduled { opens_at_ms } => opens_at_ms.min(Self::AT_MASK),
            Self::Open => 1 << Self::TAG_SHIFT,
            Self::Paused => 2 << Self::TAG_SHIFT,
            Self::Closed => 3 << Self::TAG_SHIFT,
        }
    }

    #[inline]
    pub(crate) fn unpack(word: u64) -> Self {
        match word >> Self::TAG_SHIFT {
            0 => Self::Scheduled {
                opens_at_ms: word & Self::AT_MASK,
            },
            1 => Self::Open,
            2 => Self::Paused,
            _ => Self::Closed,
        }
    }
}

/// Per-SKU rules a host can change at any time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SkuSettings {
    /// Most units one buyer may hold plus have bought; 0 means no limit.
    pub buyer_limit: u32,
    /// How long a hold lives before it expires.
    pub hold_ttl_ms: u64,
    /// Longest a hold may live in all, extensions included.
    pub hold_lifetime_max_ms: u64,
    /// Most units in one reservation line (capped by the engine's
    /// `order_units_max`).
    pub order_units_max: u32,
}

impl Default for SkuSettings {
    fn default() -> Self {
        Self {
            buyer_limit: 0,
            hold_ttl_ms: 5 * 60 * 1000,
            hold_lifetime_max_ms: 15 * 60 * 1000,
            order_units_max: 10,
        }
    }
}

impl SkuSettings {
    /// Checks every setting against its range; the refusal names the first
    /// one out of range, and its range.
    pub(crate) fn check(&self) -> Result<(), CatalogError> {
        let reason = if self.hold_ttl_ms == 0 {
            "hold_ttl_ms must be at least 1"
        } else if self.hold_ttl_ms > self.hold_lifetime_max_ms {
            "hold_ttl_ms must be at most hold_lifetime_max_ms"
        } else if self.hold_lifetime_max_ms > HOLD_LIFETIME_MAX_MS {
            "hold_lifetime_max_ms must be at most 604800000 (7 days)"
        } else if self.order_units_max == 0 || self.order_units_max > SKU_UNITS_MAX {
            "order_units_max must be 1 to 2097151"
        } else if self.buyer_limit > SKU_UNITS_MAX {
            "buyer_limit must be at most 2097151"
        } else {
            return Ok(());
        };
        Err(CatalogError::InvalidSettings { reason })
    }
}

/// Everything needed to create a SKU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SkuSpec {
    /// Units for sale in all.
    pub total: u32,
    /// Rules.
    pub settings: SkuSettings,
    /// Initial sale window.
    pub window: SaleWindow,
}

/// One catalog slot: the stock word (with its changed flag) on its own
/// cache line, then the settings, read-mostly, on the next.
#[repr(align(64))]
#[derive(Debug)]
pub(crate) struct SkuEntry {
    /// On a cache line of its own: two cores reserving the same SKU bounce
    /// this line on every CAS, and the settings read on every reservation
    /// would otherwise bounce with it.
    pub(crate) stock: CachePadded<Stock>,
    pub(crate) window: AtomicU64,
    pub(crate) buyer_limit: AtomicU32,
    pub(crate) order_units_max: AtomicU32,
    pub(crate) hold_ttl_ms: AtomicU64,
    pub(crate) hold_lifetime_max_ms: AtomicU64,
    /// The SKU's sales channels, allocated when it gets its first one
    /// (most SKUs have none, and their reservations never look here).
    pub(crate) channels: OnceLock<Box<ChannelSet>>,
    /// Set last when the SKU is created: its presence publishes the entry.
    pub(crate) id: OnceLock<Arc<str>>,
}

impl SkuEntry {
    fn new() -> Self {
        Self {
            stock: CachePadded::new(Stock::new(0)),
            window: AtomicU64::new(SaleWindow::Closed.pack()),
            buyer_limit: AtomicU32::new(0),
            order_units_max: AtomicU32::new(1),
            hold_ttl_ms: AtomicU64::new(1),
            hold_lifetime_max_ms: AtomicU64::new(1),
            channels: OnceLock::new(),
            id: OnceLock::new(),
        }
    }

    #[inline]
    pub(crate) fn window(&self) -> SaleWindow {
        // Relaxed: the window is a self-contained value; a reserve racing a
        // pause may see either, and either order is a valid linearisation.
        SaleWindow::unpack(self.window.load(Ordering::Relaxed))
    }

    #[inline]
    pub(crate) fn settings(&self) -> SkuSettings {
        // Relaxed: settings are independent values; a reserve racing a
        // settings change may use the old or the new one.
        SkuSettings {
            buyer_limit: self.buyer_limit.load(Ordering::Relaxed),
            hold_ttl_ms: self.hold_ttl_ms.load(Ordering::Relaxed),
            hold_lifetime_max_ms: self.hold_lifetime_max_ms.load(Ordering::Relaxed),
            order_units_max: self.order_units_max.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn store_settings(&self, s: SkuSettings) {
        // Relaxed: see `settings`.
        self.buyer_limit.store(s.buyer_limit, Ordering::Relaxed);
        self.hold_ttl_ms.store(s.hold_ttl_ms, Ordering::Relaxed);
        self.hold_lifetime_max_ms
            .store(s.hold_lifetime_max_ms, Ordering::Relaxed);
        self.order_units_max
            .store(s.order_units_max, Ordering::Relaxed);
    }
}

/// Checks a SKU id: 1 to [`SKU_ID_BYTES_MAX`] characters of `A-Z a-z 0-9 . _ -`.
pub fn is_valid_sku_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= SKU_ID_BYTES_MAX
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[derive(Debug)]
pub(crate) struct Catalog {
    entries: Box<[SkuEntry]>,
    len: AtomicU32,
    index: DashMap<Arc<str>, SkuIdx>,
}

impl Catalog {
    pub(crate) fn new(capacity: u32) -> Self {
        Self {
            entries: (0..capacity).map(|_| SkuEntry::new()).collect(),
            len: AtomicU32::new(0),
            index: DashMap::new(),
        }
    }

    /// Creates a SKU; `init` fills the entry before it is published.
    pub(crate) fn create(
        &self,
        id: &str,
        init: impl FnOnce(&SkuEntry),
    ) -> Result<SkuIdx, CatalogError> {
        if !is_valid_sku_id(id) {
            return Err(CatalogError::InvalidSkuId);
        }
        match self.index.entry(Arc::from(id)) {
            Entry::Occupied(_) => Err(CatalogError::AlreadyExists),
            Entry::Vacant(vacant) => {
                // Relaxed: creators are serialised per id by the shard lock
                // and distinct ids get distinct indices from the RMW; the
                // entry is published by `id.set` below, not by `len`.
                let index = self.len.fetch_add(1, Ordering::Relaxed);
                if index as usize >= self.entries.len() {
                    self.len.fetch_sub(1, Ordering::Relaxed);
                    return Err(CatalogError::Capacity);
                }
                let entry = &self.entries[index as usize];
                init(entry);
                // OnceLock::set is a Release; `get` (used by every reader)
                // is an Acquire, so a reader that sees the id sees `init`.
                entry.id.set(vacant.key().clone()).expect("fresh entry");
                vacant.insert(SkuIdx(index));
                Ok(SkuIdx(index))
            }
        }
    }

    pub(crate) fn lookup(&self, id: &str) -> Option<SkuIdx> {
        self.index.get(id).map(|r| *r)
    }

    /// The entry of a published SKU.
    #[inline]
    pub(crate) fn get(&self, sku: SkuIdx) -> Option<&SkuEntry> {
        let entry = self.entries.get(sku.0 as usize)?;
        entry.id.get().is_some().then_some(entry)
    }

    /// Every published SKU, in creation order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (SkuIdx, &SkuEntry)> {
        let len = (self.len.load(Ordering::Relaxed) as usize).min(self.entries.len());
        self.entries[..len]
            .iter()
            .enumerate()
            .filter(|(_, e)| e.id.get().is_some())
            .map(|(i, e)| (SkuIdx(i as u32), e))
    }

    pub(crate) fn capacity(&self) -> u32 {
        self.entries.len() as u32
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn window_packs() {
        for w in [
            SaleWindow::Open,
            SaleWindow::Paused,
            SaleWindow::Closed,
            SaleWindow::Scheduled {
                opens_at_ms: 1_800_000_000_000,
            },
        ] {
            assert_eq!(SaleWindow::unpack(w.pack()), w);
        }
        assert!(SaleWindow::Scheduled { opens_at_ms: 10 }.is_open_at(10));
        assert!(!SaleWindow::Scheduled { opens_at_ms: 10 }.is_open_at(9));
    }

    #[test]
    fn sku_ids_are_checked() {
        assert!(is_valid_sku_id("tee-red_M.2"));
        assert!(!is_valid_sku_id(""));
        assert!(!is_valid_sku_id("a b"));
        assert!(is_valid_sku_id(&"x".repeat(SKU_ID_BYTES_MAX)));
        assert!(!is_valid_sku_id(&"x".repeat(SKU_ID_BYTES_MAX + 1)));
        assert!(!is_valid_sku_id("æ"));
    }

    #[test]
    fn settings_refusals_name_the_setting_and_its_bound() {
        let ok = SkuSettings::default();
        assert_eq!(ok.check(), Ok(()));
        let at_bounds = SkuSettings {
            buyer_limit: SKU_UNITS_MAX,
            hold_ttl_ms: HOLD_LIFETIME_MAX_MS,
            hold_lifetime_max_ms: HOLD_LIFETIME_MAX_MS,
            order_units_max: SKU_UNITS_MAX,
        };
        assert_eq!(at_bounds.check(), Ok(()));
        let reason = |s: SkuSettings| match s.check() {
            Err(CatalogError::InvalidSettings { reason }) => reason,
            other => panic!("{other:?}"),
        };
        let past = |f: &dyn Fn(&mut SkuSettings)| {
            let mut s = at_bounds;
            f(&mut s);
            reason(s)
        };
        assert!(past(&|s| s.hold_ttl_ms = 0).starts_with("hold_ttl_ms"));
        assert!(
            past(&|s| s.hold_lifetime_max_ms = HOLD_LIFETIME_MAX_MS + 1)
                .contains(&HOLD_LIFETIME_MAX_MS.to_string())
        );
        assert!(
            past(&|s| s.order_units_max = SKU_UNITS_MAX + 1).contains(&SKU_UNITS_MAX.to_string())
        );
        assert!(past(&|s| s.order_units_max = 0).starts_with("order_units_max"));
        assert!(past(&|s| s.buyer_limit = SKU_UNITS_MAX + 1).contains(&SKU_UNITS_MAX.to_string()));
        let mut short = ok;
        short.hold_lifetime_max_ms = short.hold_ttl_ms - 1;
        assert!(reason(short).contains("hold_lifetime_max_ms"));
    }

    #[test]
    fn catalog_is_bounded_and_rejects_duplicates() {
        let c = Catalog::new(1);
        let a = c.create("a", |_| {}).unwrap();
        assert_eq!(c.lookup("a"), Some(a));
        assert_eq!(c.create("a", |_| {}), Err(CatalogError::AlreadyExists));
        assert_eq!(c.create("b", |_| {}), Err(CatalogError::Capacity));
        assert_eq!(c.iter().count(), 1);
        assert!(c.get(SkuIdx(0)).is_some());
        assert!(c.get(SkuIdx(1)).is_none());
    }
}
