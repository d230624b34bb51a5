//! Per-SKU stock: `available`, `held` and `sold` packed in one `AtomicU64`.
//!
//! Packing the three counts (21 bits each) into one word means every
//! transition (reserve, commit, release, expire, restock, adjust) is a single
//! compare-and-swap, so `available + held + sold == total` holds at every
//! instant, not just at quiescence, and no thread can observe a torn state.
//! `total` is derived, never stored. It also defines what "sold out" means
//! ([`Counts::sold_out`]), so every consumer applies one rule. This module
//! never blocks and never allocates.

use crate::limits::SKU_UNITS_MAX;
use crate::sync::{AtomicU64, Ordering};

const BITS: u32 = 21;
const MASK: u64 = (1 << BITS) - 1;
/// Top bit of the word: "changed since the broadcaster last looked". Kept in
/// the same word so the change and the flag are one CAS, not two RMWs.
const DIRTY: u64 = 1 << 63;

/// A consistent reading of one SKU's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Units on sale right now.
    pub available: u32,
    /// Units in live holds (reserved, not yet paid).
    pub held: u32,
    /// Units committed (sold).
    pub sold: u32,
}

impl Counts {
    /// `available + held + sold`.
    pub fn total(&self) -> u32 {
        self.available + self.held + self.sold
    }

    /// Sold out: nothing to buy and nothing in carts that could come back
    /// (`available == 0 && held == 0`). The one rule every consumer uses
    /// (events, websocket, order stream, pages): units in live holds may
    /// come back on sale when those holds expire or are released, so a SKU
    /// whose last units sit in carts is not sold out but
    /// [`all_in_carts`](Counts::all_in_carts).
    #[inline]
    pub fn sold_out(&self) -> bool {
        self.available == 0 && self.held == 0
    }

    /// Nothing to buy right now, but units sit in live holds and may come
    /// back (`available == 0 && held > 0`).
    #[inline]
    pub fn all_in_carts(&self) -> bool {
        self.available == 0 && self.held > 0
    }

    fn pack(self) -> u64 {
        debug_assert!(
            self.total() <= SKU_UNITS_MAX,
            "counts exceed SKU_UNITS_MAX: {self:?}"
        );
        u64::from(self.available)
            | u64::from(self.held) << BITS
            | u64::from(self.sold) << (2 * BITS)
    }

    fn unpack(word: u64) -> Self {
        Self {
            available: (word & MASK) as u32,
            held: ((word >> BITS) & MASK) as u32,
            sold: ((word >> (2 * BITS)) & MASK) as u32,
        }
    }
}

/// The counts before and after one successful transition, from which callers
/// derive sold-out and back-in-stock events without a second read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub before: Counts,
    pub after: Counts,
    /// This transition set the changed flag (it was clear): the caller
    /// queues the SKU for the broadcaster.
    pub(crate) newly_dirty: bool,
}

impl Change {
    /// This transition made the SKU sold out ([`Counts::sold_out`]): the
    /// last held units were committed, or the last available ones removed.
    /// Taking units into a hold never does (they are held), nor does a hold
    /// ending (its units go back on sale, or were sold from held > 0).
    #[inline]
    pub fn sold_out(&self) -> bool {
        !self.before.sold_out() && self.after.sold_out()
    }

    /// This transition put units on sale after a sell-out (a restock or a
    /// higher total). A hold ending while every unit sat in carts is not
    /// "back in stock": the SKU was never sold out.
    #[inline]
    pub fn back_in_stock(&self) -> bool {
        self.before.sold_out() && self.after.available > 0
    }
}

/// Why a stock transition was refused. Carries the counts seen, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StockRefusal {
    /// Fewer units available than the minimum asked for.
    Short(Counts),
    /// The result would exceed [`SKU_UNITS_MAX`].
    Overflow(Counts),
}

/// One SKU's counters.
#[derive(Debug)]
pub struct Stock {
    word: AtomicU64,
}

impl Stock {
    /// Stock with `available` units and nothing held or sold.
    pub fn new(available: u32) -> Self {
        assert!(available <= SKU_UNITS_MAX);
        Self {
            word: AtomicU64::new(
                Counts {
                    available,
                    held: 0,
                    sold: 0,
                }
                .pack(),
            ),
        }
    }

    /// Overwrites the counts (recovery, before the SKU is published).
    pub(crate) fn reset(&self, counts: Counts) {
        assert!(counts.total() <= SKU_UNITS_MAX);
        // Relaxed: the entry is published later through the catalog.
        self.word.store(counts.pack(), Ordering::Relaxed);
    }

    /// A consistent snapshot of the counts.
    pub fn load(&self) -> Counts {
        // Relaxed: the word is self-contained (it publishes no other memory),
        // and any value in its modification order is a consistent triple.
        Counts::unpack(self.word.load(Ordering::Relaxed))
    }

    /// Applies `f` with one CAS, retrying on contention, and sets the
    /// changed flag in the same CAS.
    #[inline]
    fn update(
        &self,
        mut f: impl FnMut(Counts) -> Result<Counts, StockRefusal>,
    ) -> Result<Change, StockRefusal> {
        // Relaxed load: only a starting guess; the CAS below validates it.
        let mut current = self.word.load(Ordering::Relaxed);
        loop {
            let before = Counts::unpack(current);
            let after = f(before)?;
            debug_assert!(after.total() <= SKU_UNITS_MAX);
            // Relaxed on success and failure: the stock word publishes no
            // other data. Ordering against a hold (reserve before commit of
            // the same hold) comes from the hold slot's Release publish /
            // Acquire load, which puts this RMW earlier in the word's
            // modification order than the later one (write-write coherence).
            // The broadcaster's `take_dirty` is an RMW on this same word, so
            // either it comes first (and we see the flag clear and queue the
            // SKU again) or after (and it returns our counts).
            match self.word.compare_exchange_weak(
                current,
                after.pack() | DIRTY,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Ok(Change {
                        before,
                        after,
                        newly_dirty: current & DIRTY == 0,
                    });
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// Sets the changed flag for a change outside the counts (window,
    /// settings). Returns whether it was clear.
    pub(crate) fn mark_dirty(&self) -> bool {
        // Release: the window/settings stores made before this are seen by
        // the broadcaster's Acquire `take_dirty` that clears the flag.
        self.word.fetch_or(DIRTY, Ordering::Release) & DIRTY == 0
    }

    /// Clears the changed flag and returns the counts at that instant.
    pub(crate) fn take_dirty(&self) -> Counts {
        // Acquire: pairs with `mark_dirty`'s Release (window/settings).
        Counts::unpack(self.word.fetch_and(!DIRTY, Ordering::Acquire))
    }

    /// Moves up to `want` units from available to held, at least `min`
    /// (`min == want` unless partial fills are allowed). Returns the change;
    /// the granted quantity is `after.held - before.held`.
    #[inline]
    pub fn take(&self, want: u32, min: u32) -> Result<Change, StockRefusal> {
        debug_assert!(min >= 1 && min <= want);
        self.update(|c| {
            let grant = want.min(c.available);
            if grant < min {
                return Err(StockRefusal::Short(c));
            }
            Ok(Counts {
                available: c.available - grant,
                held: c.held + grant,
                sold: c.sold,
            })
        })
    }

    /// Moves `qty` held units back to available (release, expiry, rollback).
    #[inline]
    pub fn untake(&self, qty: u32) -> Change {
        self.update(|c| {
            assert!(
                c.held >= qty,
                "untake {qty} with only {} held: hold accounting broken",
                c.held
            );
            Ok(Counts {
                available: c.available + qty,
                held: c.held - qty,
                sold: c.sold,
            })
        })
        .expect("untake never refuses")
    }

    /// Settles a hold of `held_qty` units of which `sold_qty` are bought; the
    /// rest go back on sale (full commit when equal, partial otherwise).
    #[inline]
    pub fn settle(&self, held_qty: u32, sold_qty: u32) -> Change {
        debug_assert!(sold_qty <= held_qty);
        self.update(|c| {
            assert!(
                c.held >= held_qty,
                "settle {held_qty} with only {} held",
                c.held
            );
            Ok(Counts {
                available: c.available + (held_qty - sold_qty),
                held: c.held - held_qty,
                sold: c.sold + sold_qty,
            })
        })
        .expect("settle never refuses")
    }

    /// Adds `qty` units to available (restock).
    pub fn restock(&self, qty: u32) -> Result<Change, StockRefusal> {
        self.update(|c| {
            if u64::from(c.total()) + u64::from(qty) > u64::from(SKU_UNITS_MAX) {
                return Err(StockRefusal::Overflow(c));
            }
            Ok(Counts {
                available: c.available + qty,
                ..c
            })
        })
    }

    /// Removes `qty` units from available only (never held or sold ones).
    pub fn remove(&self, qty: u32) -> Result<Change, StockRefusal> {
        self.update(|c| {
            if c.available < qty {
                return Err(StockRefusal::Short(c));
            }
            Ok(Counts {
                available: c.available - qty,
                ..c
            })
        })
    }

    /// Sets `total` by adding or removing available units.
    pub fn set_total(&self, total: u32) -> Result<Change, StockRefusal> {
        self.update(|c| {
            if total > SKU_UNITS_MAX {
                return Err(StockRefusal::Overflow(c));
            }
            let committed = c.held + c.sold;
            if total < committed {
                return Err(StockRefusal::Short(c));
            }
            Ok(Counts {
                available: total - committed,
                ..c
            })
        })
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn pack_roundtrip_at_the_bounds() {
        for c in [
            Counts {
                available: SKU_UNITS_MAX,
                held: 0,
                sold: 0,
            },
            Counts {
                available: 0,
                held: SKU_UNITS_MAX,
                sold: 0,
            },
            Counts {
                available: 0,
                held: 0,
                sold: SKU_UNITS_MAX,
            },
            Counts {
                available: 1,
                held: 2,
                sold: 3,
            },
        ] {
            assert_eq!(Counts::unpack(c.pack()), c);
        }
    }

    #[test]
    fn changed_flag_rides_in_the_word() {
        let s = Stock::new(3);
        assert!(
            s.take(1, 1).unwrap().newly_dirty,
            "first change sets the flag"
        );
        assert!(!s.take(1, 1).unwrap().newly_dirty, "already set");
        assert_eq!(
            s.take_dirty(),
            Counts {
                available: 1,
                held: 2,
                sold: 0
            }
        );
        assert!(
            s.settle(2, 2).newly_dirty,
            "set again after the broadcaster looked"
        );
        assert!(!s.mark_dirty());
        s.take_dirty();
        assert!(s.mark_dirty());
        assert_eq!(
            s.load(),
            Counts {
                available: 1,
                held: 0,
                sold: 2
            },
            "the flag never shows in counts"
        );
    }

    #[test]
    fn take_refuses_short_and_grants_partial() {
        let s = Stock::new(3);
        assert_eq!(s.take(5, 5), Err(StockRefusal::Short(s.load())));
        let ch = s.take(5, 1).unwrap();
        assert_eq!(ch.after.held - ch.before.held, 3);
        assert_eq!(
            s.load(),
            Counts {
                available: 0,
                held: 3,
                sold: 0
            }
        );
        let ch = s.settle(3, 2);
        assert_eq!(
            s.load(),
            Counts {
                available: 1,
                held: 0,
                sold: 2
            }
        );
        assert!(!ch.sold_out() && !ch.back_in_stock());
    }

    #[test]
    fn sold_out_means_nothing_to_buy_and_nothing_in_carts() {
        let counts = |available, held, sold| Counts {
            available,
            held,
            sold,
        };
        assert!(counts(0, 0, 3).sold_out() && !counts(0, 0, 3).all_in_carts());
        assert!(counts(0, 2, 1).all_in_carts() && !counts(0, 2, 1).sold_out());
        assert!(!counts(1, 2, 0).sold_out() && !counts(1, 2, 0).all_in_carts());

        let s = Stock::new(2);
        let take = s.take(2, 2).unwrap();
        assert!(!take.sold_out(), "the last units in carts: not sold out");
        assert!(s.load().all_in_carts());
        let expire = s.untake(1);
        assert!(
            !expire.back_in_stock(),
            "a hold ending while all sat in carts is not back in stock"
        );
        s.take(1, 1).unwrap();
        let commit = s.settle(1, 1);
        assert!(!commit.sold_out(), "one unit still held");
        let last = s.settle(1, 1);
        assert!(last.sold_out(), "the last held unit sold: sold out");
        let restock = s.restock(1).unwrap();
        assert!(restock.back_in_stock());
        let removed = s.remove(1).unwrap();
        assert!(removed.sold_out(), "the last available unit removed");
        assert!(!s.set_total(2).unwrap().sold_out());
    }

    #[test]
    fn restock_and_remove_respect_bounds() {
        let s = Stock::new(SKU_UNITS_MAX - 1);
        assert!(s.restock(1).is_ok());
        assert!(matches!(s.restock(1), Err(StockRefusal::Overflow(_))));
        s.take(10, 10).unwrap();
        assert!(matches!(
            s.remove(SKU_UNITS_MAX),
            Err(StockRefusal::Short(_))
        ));
        s.remove(SKU_UNITS_MAX - 10).unwrap();
        assert_eq!(
            s.load(),
            Counts {
                available: 0,
                held: 10,
                sold: 0
            }
        );
        assert!(matches!(s.set_total(9), Err(StockRefusal::Short(_))));
        s.set_total(15).unwrap();
        assert_eq!(
            s.load(),
            Counts {
                available: 5,
                held: 10,
                sold: 0
            }
        );
    }
}

/// Loom model of the stock CAS: two buyers race for the last unit while the
/// host restocks one; no interleaving oversells or breaks the invariant.
/// Run with `RUSTFLAGS="--cfg loom" cargo test -p holdfast-engine --release --lib loom`.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    #[test]
    fn loom_two_buyers_and_a_restock_never_oversell() {
        loom::model(|| {
            let stock = Arc::new(Stock::new(1));
            let buyers: Vec<_> = (0..2)
                .map(|_| {
                    let stock = stock.clone();
                    thread::spawn(move || stock.take(1, 1).is_ok())
                })
                .collect();
            let host = {
                let stock = stock.clone();
                thread::spawn(move || stock.restock(1).unwrap())
            };
            let won = buyers
                .into_iter()
                .map(|t| t.join().unwrap())
                .filter(|w| *w)
                .count() as u32;
            host.join().unwrap();
            let c = stock.load();
            assert_eq!(c.total(), 2, "invariant: available + held + sold == total");
            assert_eq!(c.held, won, "every successful take is held, no more");
            assert!(won >= 1, "one unit was always there for the first buyer");
        });
    }

    /// The broadcaster clearing the changed flag races a reservation: either
    /// the counts it takes include the reservation, or the reservation saw
    /// the flag clear (and queues the SKU again). No update is lost.
    #[test]
    fn loom_changed_flag_never_loses_an_update() {
        loom::model(|| {
            let stock = Arc::new(Stock::new(2));
            stock.mark_dirty(); // queued once already
            let buyer = {
                let stock = stock.clone();
                thread::spawn(move || stock.take(1, 1).unwrap().newly_dirty)
            };
            let seen = stock.take_dirty();
            let requeued = buyer.join().unwrap();
            assert!(seen.held == 1 || requeued, "update lost: {seen:?}");
        });
    }

    #[test]
    fn loom_commit_and_release_settle_exactly_the_held_units() {
        loom::model(|| {
            let stock = Arc::new(Stock::new(3));
            stock.take(2, 2).unwrap();
            stock.take(1, 1).unwrap();
            let a = {
                let stock = stock.clone();
                thread::spawn(move || stock.settle(2, 1))
            };
            let b = {
                let stock = stock.clone();
                thread::spawn(move || stock.untake(1))
            };
            a.join().unwrap();
            b.join().unwrap();
            assert_eq!(
                stock.load(),
                Counts {
                    available: 2,
                    held: 0,
                    sold: 1
                }
            );
        });
    }
}
