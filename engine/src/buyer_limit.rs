//! Per-buyer limits: a fixed-capacity, open-addressed, lock-free table of
//! `(sku, buyer) -> units` counting live holds plus purchases.
//!
//! Entries are claimed with one CAS on an empty key and never removed (a
//! buyer's purchases count for the life of the engine), so a key, once in a
//! position, stays there, and two threads inserting the same key always
//! meet at the same position. An erasure ([`BuyerTable::forget`]) zeroes a
//! buyer's counts and blanks the pair its entries list, but leaves the
//! positions claimed. A key that finds no room in its probe window
//! is refused as `Capacity`, never silently unlimited.

use crate::catalog::SkuIdx;
use crate::limits::PROBE_WINDOW;
use crate::sync::{AtomicU32, AtomicU64, Ordering};

/// Identifies a buyer. The gateway derives it from the buyer's token or id
/// with a keyed hash, so ids from outside cannot be crafted to collide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BuyerId(pub u64);

/// 64-bit finaliser from MurmurHash3: a cheap bijective mix so nearby keys
/// spread over the table.
#[inline]
pub(crate) fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BuyerRefusal {
    LimitExceeded,
    Capacity,
}

#[derive(Debug)]
struct Entry {
    key: AtomicU64,
    units: AtomicU32,
    /// The pair the key was made from, so the table can be listed (journal
    /// resync). Written right after the key is claimed; a lister recomputes
    /// the key from them and skips an entry still being filled.
    sku: AtomicU32,
    buyer: AtomicU64,
}

#[derive(Debug)]
pub(crate) struct BuyerTable {
    entries: Box<[Entry]>,
    mask: usize,
}

impl BuyerTable {
    pub(crate) fn new(capacity: u32) -> Self {
        let size = (capacity as usize).next_power_of_two().max(PROBE_WINDOW);
        Self {
            entries: (0..size)
                .map(|_| Entry {
                    key: AtomicU64::new(0),
                    units: AtomicU32::new(0),
                    sku: AtomicU32::new(0),
                    buyer: AtomicU64::new(0),
                })
                .collect(),
            mask: size - 1,
        }
    }

    #[inline]
    fn key(sku: SkuIdx, buyer: BuyerId) -> u64 {
        // Never 0: 0 marks an empty position.
        mix64(buyer.0 ^ mix64(u64::from(sku.0) + 1)).max(1)
    }

    /// The entry for the pair, claiming an empty position if `insert`.
    #[inline]
    fn find_pair(&self, sku: SkuIdx, buyer: BuyerId, insert: bool) -> Option<&Entry> {
        let entry = self.find(Self::key(sku, buyer), insert)?;
        // Relaxed: see `list`, which validates these against the key.
        if insert && entry.buyer.load(Ordering::Relaxed) != buyer.0 {
            entry.sku.store(sku.0, Ordering::Relaxed);
            entry.buyer.store(buyer.0, Ordering::Relaxed);
        }
        Some(entry)
    }

    #[inline]
    fn find(&self, key: u64, insert: bool) -> Option<&Entry> {
        let start = key as usize & self.mask;
        for i in 0..PROBE_WINDOW {
            let entry = &self.entries[(start + i) & self.mask];
            // Relaxed: the key is the only data an entry publishes about
            // itself; `units` is only touched with RMWs, which see the
            // latest value whatever the ordering.
            let seen = entry.key.load(Ordering::Relaxed);
            if seen == key {
                return Some(entry);
            }
            if seen == 0 {
                if !insert {
                    return None;
                }
                // Relaxed on both: as above. On failure someone claimed this
                // position first; if it was for our key we share it.
                match entry
                    .key
                    .compare_exchange(0, key, Ordering::Relaxed, Ordering::Relaxed)
                {
                    Ok(_) => return Some(entry),
                    Err(other) if other == key => return Some(entry),
                    Err(_) => continue,
                }
            }
        }
        None
    }

    /// Counts up to `want` (at least `min`) more units against `limit`.
    /// Returns the units granted.
    #[inline]
    pub(crate) fn acquire(
        &self,
        sku: SkuIdx,
        buyer: BuyerId,
        want: u32,
        min: u32,
        limit: u32,
    ) -> Result<u32, BuyerRefusal> {
        let entry = self
            .find_pair(sku, buyer, true)
            .ok_or(BuyerRefusal::Capacity)?;
        // Relaxed: a per-pair counter; RMWs on it are totally ordered, and a
        // later release of the same hold is ordered after this through the
        // hold slot's publish.
        let mut current = entry.units.load(Ordering::Relaxed);
        loop {
            let room = limit.saturating_sub(current);
            let grant = want.min(room);
            if grant < min {
                return Err(BuyerRefusal::LimitExceeded);
            }
            match entry.units.compare_exchange_weak(
                current,
                current + grant,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(grant),
                Err(actual) => current = actual,
            }
        }
    }

    /// Adds units without a limit check (recovery of existing holds/sales).
    pub(crate) fn add(&self, sku: SkuIdx, buyer: BuyerId, units: u32) -> Result<(), BuyerRefusal> {
        let entry = self
            .find_pair(sku, buyer, true)
            .ok_or(BuyerRefusal::Capacity)?;
        // Relaxed: see `acquire`.
        entry.units.fetch_add(units, Ordering::Relaxed);
        Ok(())
    }

    /// Gives back `units` counted by an earlier `acquire`.
    #[inline]
    pub(crate) fn release(&self, sku: SkuIdx, buyer: BuyerId, units: u32) {
        if units == 0 {
            return;
        }
        let entry = self
            .find(Self::key(sku, buyer), false)
            .expect("release of a buyer entry that was never acquired");
        // Relaxed: see `acquire`. Saturating, not an underflow check: an
        // erasure racing a reservation of the same buyer may have zeroed
        // the count while this hold lived (`forget`); the buyer then counts
        // afresh, which is what erasing means (docs/PRIVACY.md).
        let _ = entry
            .units
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                Some(u.saturating_sub(units))
            });
    }

    /// Erases `buyer` from the table: zeroes its count on every SKU and
    /// blanks the buyer an entry lists, so [`Self::list`] and a journal
    /// resync never name it again. The positions stay claimed (a lock-free
    /// open-addressed table never frees one: a later probe for another key
    /// must still walk past them). A full scan: erasure is an admin action,
    /// never on the reservation path. Returns the entries that counted
    /// units for the buyer.
    pub(crate) fn forget(&self, buyer: BuyerId) -> u32 {
        let mut forgotten = 0;
        for entry in self.entries.iter() {
            // Relaxed: as `list`; validated by recomputing the key. A
            // reservation racing the erasure may count units again right
            // after (and set the buyer back): it is a new purchase.
            let key = entry.key.load(Ordering::Relaxed);
            let sku = SkuIdx(entry.sku.load(Ordering::Relaxed));
            if key == 0
                || entry.buyer.load(Ordering::Relaxed) != buyer.0
                || Self::key(sku, buyer) != key
            {
                continue;
            }
            if entry.units.swap(0, Ordering::Relaxed) > 0 {
                forgotten += 1;
            }
            entry.buyer.store(0, Ordering::Relaxed);
        }
        forgotten
    }

    /// Every pair with units counted, as `(sku, buyer, units)`.
    pub(crate) fn list(&self) -> Vec<(SkuIdx, BuyerId, u32)> {
        let mut out = Vec::new();
        for entry in self.entries.iter() {
            // Relaxed: a listing for a resync, validated by the key check.
            let key = entry.key.load(Ordering::Relaxed);
            if key == 0 {
                continue;
            }
            let (sku, buyer) = (
                SkuIdx(entry.sku.load(Ordering::Relaxed)),
                BuyerId(entry.buyer.load(Ordering::Relaxed)),
            );
            let units = entry.units.load(Ordering::Relaxed);
            if Self::key(sku, buyer) == key && units > 0 {
                out.push((sku, buyer, units));
            }
        }
        out
    }

    /// Units counted for the pair right now.
    pub(crate) fn units(&self, sku: SkuIdx, buyer: BuyerId) -> u32 {
        // Relaxed: a reading for reports.
        self.find(Self::key(sku, buyer), false)
            .map_or(0, |e| e.units.load(Ordering::Relaxed))
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn limit_counts_and_releases() {
        let t = BuyerTable::new(64);
        let (s, b) = (SkuIdx(1), BuyerId(9));
        assert_eq!(t.acquire(s, b, 2, 2, 3), Ok(2));
        assert_eq!(t.acquire(s, b, 2, 2, 3), Err(BuyerRefusal::LimitExceeded));
        assert_eq!(t.acquire(s, b, 2, 1, 3), Ok(1), "partial up to the limit");
        t.release(s, b, 3);
        assert_eq!(t.units(s, b), 0);
        assert_eq!(
            t.acquire(SkuIdx(2), b, 3, 3, 3),
            Ok(3),
            "limits are per sku"
        );
    }

    #[test]
    fn an_erased_buyer_counts_afresh_and_is_never_listed() {
        let t = BuyerTable::new(64);
        let (b, other) = (BuyerId(9), BuyerId(10));
        assert_eq!(t.acquire(SkuIdx(1), b, 3, 3, 3), Ok(3));
        assert_eq!(t.acquire(SkuIdx(2), b, 1, 1, 3), Ok(1));
        assert_eq!(t.acquire(SkuIdx(1), other, 2, 2, 3), Ok(2));
        assert_eq!(t.forget(b), 2);
        assert_eq!(t.list(), vec![(SkuIdx(1), other, 2)]);
        assert_eq!(t.units(SkuIdx(1), b), 0);
        assert_eq!(t.acquire(SkuIdx(1), b, 3, 3, 3), Ok(3), "counts afresh");
        // A hold from before the erasure ending now gives back what it can.
        t.release(SkuIdx(2), b, 1);
        assert_eq!(t.units(SkuIdx(2), b), 0, "never below zero");
        assert_eq!(t.forget(BuyerId(77)), 0);
    }

    #[test]
    fn full_window_is_capacity() {
        let t = BuyerTable::new(1); // PROBE_WINDOW positions in all
        for buyer in 0..PROBE_WINDOW as u64 {
            assert!(t.acquire(SkuIdx(0), BuyerId(buyer), 1, 1, 5).is_ok());
        }
        assert_eq!(
            t.acquire(SkuIdx(0), BuyerId(1000), 1, 1, 5),
            Err(BuyerRefusal::Capacity)
        );
    }
}

/// Loom models of the per-buyer count: two reservations of one buyer never
/// pass the limit together, and a release gives the units back.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::sync::{race, spawn_with as spawn};
    use loom::sync::Arc;

    const SKU: SkuIdx = SkuIdx(1);
    const BUYER: BuyerId = BuyerId(9);

    /// Two threads `acquire(want, min, limit)` for one buyer at once, its
    /// entry not yet in the table (both race to claim its position).
    fn both_acquire(
        want: u32,
        min: u32,
        limit: u32,
    ) -> (Arc<BuyerTable>, [Result<u32, BuyerRefusal>; 2]) {
        let t = Arc::new(BuyerTable::new(1));
        let racers = [(); 2].map(|()| spawn(&t, move |t| t.acquire(SKU, BUYER, want, min, limit)));
        (t, racers.map(|r| r.join().unwrap()))
    }

    /// Two reservations of 2 units against a limit of 3: exactly one is
    /// granted.
    #[test]
    fn loom_two_reservations_of_one_buyer_never_pass_the_limit() {
        loom::model(|| {
            let (t, results) = both_acquire(2, 2, 3);
            let granted = results.iter().filter(|r| r.is_ok()).count();
            assert_eq!(granted, 1, "{results:?}");
            assert!(results.contains(&Err(BuyerRefusal::LimitExceeded)));
            assert_eq!(t.units(SKU, BUYER), 2, "one entry, counted once");
        });
    }

    /// Partial grants racing: each gets at least its minimum or nothing,
    /// and together never more than the limit.
    #[test]
    fn loom_partial_grants_share_the_limit() {
        loom::model(|| {
            let (t, results) = both_acquire(3, 1, 4);
            let [mine, theirs] = results.map(|r| r.expect("room for one"));
            assert_eq!(mine + theirs, 4, "the limit, exactly: {mine} + {theirs}");
            assert_eq!(t.units(SKU, BUYER), 4);
        });
    }

    /// A release racing a reservation of the same buyer at the limit: the
    /// reservation is granted only if the release came first, and the
    /// count ends matching what was granted.
    #[test]
    fn loom_a_release_gives_units_back() {
        race(
            || {
                let t = BuyerTable::new(1);
                assert_eq!(t.acquire(SKU, BUYER, 2, 2, 3), Ok(2));
                t
            },
            |t| t.release(SKU, BUYER, 2),
            |t| t.acquire(SKU, BUYER, 2, 2, 3),
            |t, (), again| {
                match again {
                    Ok(2) => assert_eq!(t.units(SKU, BUYER), 2),
                    Err(BuyerRefusal::LimitExceeded) => assert_eq!(t.units(SKU, BUYER), 0),
                    other => panic!("{other:?}"),
                }
                let room = 3 - t.units(SKU, BUYER);
                assert_eq!(t.acquire(SKU, BUYER, 3, 1, 3), Ok(room), "what is left");
            },
        );
    }
}
