//! Sales channels of one SKU: a live show, a social shop, the web shop
//! selling the same units at once.
//!
//! A SKU's units live in buckets, each a [`Stock`] word updated by one CAS:
//! the common pool (the SKU's own stock word, what a reservation without a
//! channel takes from) and, per channel, a reserved quota that only that
//! channel can sell. A channel reservation takes from its quota first, then
//! from the pool. A channel may also have a cap, the most units it may hold
//! plus sell from any bucket: its `allowance` word counts them, with the
//! headroom left under the cap as its `available`, so the cap check is the
//! same proven take/untake/settle CAS as the stock's.
//!
//! A channel reservation is three CASes in a fixed order (allowance, quota,
//! pool), each of which can only move units from available to held in its
//! own word. A later step that is refused undoes the earlier ones. So no
//! bucket ever goes below zero (no oversell of the SKU or of a quota), the
//! allowance never passes the cap, and a concurrent reader may at worst see
//! units briefly held by a reservation that is then undone. Reservations
//! without a channel never touch any of this: their path is unchanged.
//!
//! Moving units between a quota and the pool is an admin action (under the
//! set's mutex, never on a buyer's path): a remove from one bucket, then an
//! add to the other. Between the two the units are in neither, so nothing
//! can sell them twice; a reservation racing the move may be refused for
//! exactly those units. A sequence word around the move lets
//! [`ChannelSet::counts`] read every bucket with the move either wholly
//! applied or not at all, so the total it reports never dips.
//!
//! This module never blocks on the buyer's path and allocates only when a
//! SKU gets its first channel.

use crate::error::{CatalogError, ReserveError};
use crate::limits::{CHANNEL_ID_BYTES_MAX, CHANNELS_MAX, SKU_UNITS_MAX};
use crate::stock::{Change, Counts, Stock, StockRefusal};
use crate::sync::{AtomicU32, AtomicU64, Backoff, Ordering, fence};
use crossbeam::utils::CachePadded;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

/// Index of a channel in its SKU's set (stable: channels are never removed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelIdx(pub(crate) u8);

impl ChannelIdx {
    /// The raw index.
    pub fn get(self) -> u8 {
        self.0
    }
}

impl From<u8> for ChannelIdx {
    fn from(index: u8) -> Self {
        Self(index)
    }
}

/// Checks a channel id: 1 to [`CHANNEL_ID_BYTES_MAX`] characters of
/// `A-Z a-z 0-9 . _ -` (it becomes a metrics label and part of Redis keys).
pub fn is_valid_channel_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= CHANNEL_ID_BYTES_MAX
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Where a hold line's units came from, so its end returns them there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Source {
    /// The channel the line was reserved on; `None`: no channel (the
    /// common pool only).
    pub channel: Option<ChannelIdx>,
    /// Units of the line taken from the channel's quota; the rest came
    /// from the pool.
    pub quota: u32,
}

/// Bits of a packed [`Source`] holding the quota units (a line holds at
/// most `SKU_UNITS_MAX` units, 21 bits).
const SOURCE_QUOTA_BITS: u32 = 24;
const _: () = assert!(SKU_UNITS_MAX < 1 << SOURCE_QUOTA_BITS);
const _: () = assert!(CHANNELS_MAX < u8::MAX as usize);

impl Source {
    /// No channel: the common pool.
    pub const POOL: Self = Self {
        channel: None,
        quota: 0,
    };

    /// `(channel + 1) << 24 | quota`, 0 for the pool (a hold slot field).
    pub(crate) fn pack(self) -> u32 {
        match self.channel {
            None => 0,
            Some(c) => (u32::from(c.0) + 1) << SOURCE_QUOTA_BITS | self.quota,
        }
    }

    #[inline]
    pub(crate) fn unpack(raw: u32) -> Self {
        match raw >> SOURCE_QUOTA_BITS {
            0 => Self::POOL,
            c => Self {
                channel: Some(ChannelIdx((c - 1) as u8)),
                quota: raw & ((1 << SOURCE_QUOTA_BITS) - 1),
            },
        }
    }
}

/// One channel's counts, as reported with its SKU's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelCounts {
    pub channel: ChannelIdx,
    pub id: Arc<str>,
    /// The channel's reserved quota: units only it can sell, split into
    /// available, held and sold (part of the SKU's counts).
    pub quota: Counts,
    /// Units the channel holds in live holds, from its quota and the pool.
    pub held: u32,
    /// Units the channel sold, from its quota and the pool.
    pub sold: u32,
    /// The most units it may hold plus sell; `None`: no cap.
    pub cap: Option<u32>,
    /// Units a reservation on this channel could take right now: its
    /// quota's plus the pool's available units, within its cap.
    pub available: u32,
}

/// One channel of a SKU.
#[derive(Debug)]
pub(crate) struct Channel {
    /// Set once when the channel is added; its presence publishes it.
    id: OnceLock<Arc<str>>,
    /// The reserved quota's units.
    pub(crate) quota: Stock,
    /// `held`/`sold`: the channel's units from any bucket; `available`:
    /// what its cap still allows (`SKU_UNITS_MAX` in all when no cap).
    pub(crate) allowance: Stock,
}

/// What a channel reservation took, to store in the hold and announce.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Taken {
    pub(crate) granted: u32,
    pub(crate) quota: u32,
    /// The pool's change, if the pool gave units.
    pub(crate) pool: Option<Change>,
}

impl Channel {
    fn new() -> Self {
        Self {
            id: OnceLock::new(),
            quota: Stock::new(0),
            allowance: Stock::new(SKU_UNITS_MAX),
        }
    }

    /// The cap, or `None` when the allowance spans every possible unit.
    pub(crate) fn cap(&self) -> Option<u32> {
        let total = self.allowance.load().total();
        (total < SKU_UNITS_MAX).then_some(total)
    }

    /// Sets or lifts the cap; refused below the units already used.
    pub(crate) fn set_cap(&self, cap: Option<u32>) -> Result<(), CatalogError> {
        self.allowance
            .set_total(cap.unwrap_or(SKU_UNITS_MAX))
            .map(|_| ())
            .map_err(|r| match r {
                StockRefusal::Short(c) => CatalogError::CapBelowUsed {
                    used: c.held + c.sold,
                },
                StockRefusal::Overflow(_) => CatalogError::TotalAboveMax,
            })
    }

    /// Holds up to `want` units (at least `min`) for this channel: within
    /// its cap, from its quota first, then from `pool`. All or nothing:
    /// a refusal leaves every word as it found it.
    #[inline]
    pub(crate) fn take(&self, pool: &Stock, want: u32, min: u32) -> Result<Taken, ReserveError> {
        debug_assert!(min >= 1 && min <= want);
        let allowed = match self.allowance.take(want, min) {
            Ok(c) => c.after.held - c.before.held,
            Err(StockRefusal::Short(c) | StockRefusal::Overflow(c)) => {
                return Err(ReserveError::ChannelCapReached {
                    remaining: c.available,
                });
            }
        };
        let quota = self
            .quota
            .take(allowed, 1)
            .map_or(0, |c| c.after.held - c.before.held);
        let rest = allowed - quota;
        // What the pool must give for the line to reach `min`.
        let need = min.saturating_sub(quota);
        let mut from_pool = 0;
        let mut pool_change = None;
        if rest > 0 {
            match pool.take(rest, need.max(1)) {
                Ok(c) => {
                    from_pool = c.after.held - c.before.held;
                    pool_change = Some(c);
                }
                // The quota alone already reached `min` (a partial fill).
                Err(_) if need == 0 => {}
                Err(StockRefusal::Short(c) | StockRefusal::Overflow(c)) => {
                    if quota > 0 {
                        self.quota.untake(quota);
                    }
                    self.allowance.untake(allowed);
                    let available = quota + c.available;
                    return Err(if available == 0 {
                        ReserveError::SoldOut
                    } else {
                        ReserveError::NotEnoughAvailable { available }
                    });
                }
            }
        }
        let granted = quota + from_pool;
        if granted < allowed {
            self.allowance.untake(allowed - granted);
        }
        Ok(Taken {
            granted,
            quota,
            pool: pool_change,
        })
    }

    /// Ends a line of `qty` units, `quota` of them from this channel's
    /// quota, with `sold` of them sold (0 for a release or expiry). Sold
    /// units count from the quota first; the rest go back where they came
    /// from. Returns the pool's change, if the pool was touched.
    #[inline]
    pub(crate) fn settle(&self, pool: &Stock, qty: u32, quota: u32, sold: u32) -> Option<Change> {
        debug_assert!(quota <= qty && sold <= qty);
        let sold_quota = sold.min(quota);
        if quota > 0 {
            self.quota.settle(quota, sold_quota);
        }
        let from_pool = qty - quota;
        let change = (from_pool > 0).then(|| pool.settle(from_pool, sold - sold_quota));
        self.allowance.settle(qty, sold);
        change
    }
}

/// The channels of one SKU: at most [`CHANNELS_MAX`], added and never
/// removed (a channel no longer used keeps its counts, with no quota).
#[derive(Debug)]
pub(crate) struct ChannelSet {
    channels: [CachePadded<Channel>; CHANNELS_MAX],
    /// Channels added so far; a channel below it has its id set.
    len: AtomicU32,
    /// Odd while a quota move is between its two CASes (a sequence lock
    /// for readers of the counts; only moves and total changes bump it).
    epoch: AtomicU64,
    /// Serialises the admin actions on this set (add, cap, move, total).
    admin: Mutex<()>,
}

impl ChannelSet {
    pub(crate) fn new() -> Self {
        Self {
            channels: std::array::from_fn(|_| CachePadded::new(Channel::new())),
            len: AtomicU32::new(0),
            epoch: AtomicU64::new(0),
            admin: Mutex::new(()),
        }
    }

    /// Takes the admin lock (poisoning is ignored: every action leaves the
    /// words consistent after each CAS, so a panic mid-way loses nothing).
    pub(crate) fn lock(&self) -> MutexGuard<'_, ()> {
        self.admin.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether any channel was added (a set is made on the first add).
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn len(&self) -> usize {
        // Acquire: pairs with `add`'s Release, so every channel below `len`
        // has its id and initial words.
        self.len.load(Ordering::Acquire) as usize
    }

    /// The channel with this id.
    #[inline]
    pub(crate) fn find(&self, id: &str) -> Option<ChannelIdx> {
        self.channels[..self.len()]
            .iter()
            .position(|c| c.id.get().is_some_and(|have| &**have == id))
            .map(|i| ChannelIdx(i as u8))
    }

    /// A channel by index (any index a hold or lookup gave).
    #[inline]
    pub(crate) fn get(&self, channel: ChannelIdx) -> &Channel {
        &self.channels[channel.0 as usize]
    }

    /// The id of a channel added to this set.
    pub(crate) fn id(&self, channel: ChannelIdx) -> Option<Arc<str>> {
        self.channels.get(channel.0 as usize)?.id.get().cloned()
    }

    /// Adds a channel with no quota and no cap. Call under [`Self::lock`].
    pub(crate) fn add(&self, id: &str) -> Result<ChannelIdx, CatalogError> {
        if !is_valid_channel_id(id) {
            return Err(CatalogError::InvalidChannelId);
        }
        let len = self.len();
        if len >= CHANNELS_MAX {
            return Err(CatalogError::ChannelsFull);
        }
        self.channels[len]
            .id
            .set(Arc::from(id))
            .expect("channels are added under the admin lock");
        // Release: publishes the id (see `len`).
        self.len.store(len as u32 + 1, Ordering::Release);
        Ok(ChannelIdx(len as u8))
    }

    /// Runs `f` (which moves units between buckets) so that `counts` sees
    /// all of it or none. Call under [`Self::lock`].
    pub(crate) fn moving<T>(&self, f: impl FnOnce() -> T) -> T {
        // Relaxed: writers are serialised by the admin lock.
        let epoch = self.epoch.load(Ordering::Relaxed);
        self.epoch.store(epoch + 1, Ordering::Relaxed);
        // Release fence: a reader that sees any of `f`'s writes (its
        // Acquire fence) then sees the odd epoch and retries.
        fence(Ordering::Release);
        let out = f();
        // Release: a reader that Acquires the even epoch sees `f`'s writes.
        self.epoch.store(epoch + 2, Ordering::Release);
        out
    }

    /// The SKU's counts (`pool` plus every quota) and each channel's, with
    /// no quota move half-applied.
    pub(crate) fn counts(&self, pool: &Stock) -> (Counts, Vec<ChannelCounts>) {
        let backoff = Backoff::new();
        loop {
            // Acquire: pairs with the closing Release store of `moving`.
            let before = self.epoch.load(Ordering::Acquire);
            if before & 1 == 0 {
                let read = self.read(pool);
                // Acquire fence: pairs with `moving`'s Release fence, so a
                // write of a move seen above means the odd epoch is seen
                // below.
                fence(Ordering::Acquire);
                // Relaxed: ordered by the fence above.
                if self.epoch.load(Ordering::Relaxed) == before {
                    return read;
                }
            }
            // A move is between its two CASes (nanoseconds): wait it out.
            backoff.snooze();
        }
    }

    fn read(&self, pool: &Stock) -> (Counts, Vec<ChannelCounts>) {
        let pool = pool.load();
        let mut sku = pool;
        let mut out = Vec::with_capacity(self.len());
        for (i, c) in self.channels[..self.len()].iter().enumerate() {
            let quota = c.quota.load();
            let used = c.allowance.load();
            sku.available += quota.available;
            sku.held += quota.held;
            sku.sold += quota.sold;
            out.push(ChannelCounts {
                channel: ChannelIdx(i as u8),
                id: c.id.get().cloned().unwrap_or_else(|| Arc::from("")),
                quota,
                held: used.held,
                sold: used.sold,
                cap: (used.total() < SKU_UNITS_MAX).then_some(used.total()),
                available: used.available.min(quota.available + pool.available),
            });
        }
        (sku, out)
    }

    /// Total units in every quota (for a new SKU total).
    pub(crate) fn quota_total(&self) -> u32 {
        self.channels[..self.len()]
            .iter()
            .map(|c| c.quota.load().total())
            .sum()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn source_packs() {
        for s in [
            Source::POOL,
            Source {
                channel: Some(ChannelIdx(0)),
                quota: 0,
            },
            Source {
                channel: Some(ChannelIdx(CHANNELS_MAX as u8 - 1)),
                quota: SKU_UNITS_MAX,
            },
        ] {
            assert_eq!(Source::unpack(s.pack()), s);
        }
        assert_eq!(
            Source::POOL.pack(),
            0,
            "the pool is the zero of a fresh slot"
        );
    }

    #[test]
    fn channel_ids_are_checked() {
        assert!(is_valid_channel_id("tiktok-live_1.eu"));
        assert!(!is_valid_channel_id(""));
        assert!(!is_valid_channel_id("a b"));
        assert!(is_valid_channel_id(&"x".repeat(CHANNEL_ID_BYTES_MAX)));
        assert!(!is_valid_channel_id(&"x".repeat(CHANNEL_ID_BYTES_MAX + 1)));
    }

    #[test]
    fn set_is_bounded_at_channels_max() {
        let set = ChannelSet::new();
        for i in 0..CHANNELS_MAX {
            assert_eq!(set.add(&format!("c{i}")), Ok(ChannelIdx(i as u8)));
        }
        assert_eq!(set.add("one-more"), Err(CatalogError::ChannelsFull));
        assert_eq!(set.find("c3"), Some(ChannelIdx(3)));
        assert_eq!(set.find("nope"), None);
        assert_eq!(set.add("bad id"), Err(CatalogError::InvalidChannelId));
    }

    fn counts(available: u32, held: u32, sold: u32) -> Counts {
        Counts {
            available,
            held,
            sold,
        }
    }

    #[test]
    fn take_uses_quota_first_then_pool_and_respects_the_cap() {
        let pool = Stock::new(5);
        let set = ChannelSet::new();
        let live = set.get(set.add("live").unwrap());
        live.quota.restock(2).unwrap();
        live.set_cap(Some(4)).unwrap();

        let t = live.take(&pool, 3, 3).unwrap();
        assert_eq!((t.granted, t.quota), (3, 2));
        assert_eq!(pool.load(), counts(4, 1, 0));
        assert_eq!(
            live.take(&pool, 2, 2).unwrap_err(),
            ReserveError::ChannelCapReached { remaining: 1 }
        );
        let t = live.take(&pool, 2, 1).unwrap();
        assert_eq!((t.granted, t.quota), (1, 0), "partial within the cap");
        assert_eq!(live.allowance.load(), counts(0, 4, 0));

        assert_eq!(
            live.settle(&pool, 3, 2, 3).map(|c| c.after),
            Some(counts(3, 1, 1))
        );
        assert_eq!(live.quota.load(), counts(0, 0, 2));
        assert_eq!(live.allowance.load(), counts(0, 1, 3));
        live.settle(&pool, 1, 0, 0);
        assert_eq!(pool.load(), counts(4, 0, 1));
        assert_eq!(live.allowance.load(), counts(1, 0, 3));
        assert_eq!(
            live.set_cap(Some(2)),
            Err(CatalogError::CapBelowUsed { used: 3 })
        );
        live.set_cap(None).unwrap();
        assert_eq!(live.cap(), None);
    }

    #[test]
    fn a_refused_take_leaves_every_word_as_it_was() {
        let pool = Stock::new(1);
        let set = ChannelSet::new();
        let web = set.get(set.add("web").unwrap());
        web.quota.restock(1).unwrap();
        let before = (pool.load(), web.quota.load(), web.allowance.load());
        assert_eq!(
            web.take(&pool, 3, 3).unwrap_err(),
            ReserveError::NotEnoughAvailable { available: 2 }
        );
        assert_eq!(
            before,
            (pool.load(), web.quota.load(), web.allowance.load())
        );
        let t = web.take(&pool, 3, 1).unwrap();
        assert_eq!((t.granted, t.quota), (2, 1), "a partial fill takes both");
        assert_eq!(web.take(&pool, 1, 1).unwrap_err(), ReserveError::SoldOut);
    }

    #[test]
    fn counts_add_quotas_to_the_pool() {
        let pool = Stock::new(6);
        let set = ChannelSet::new();
        let live = set.add("live").unwrap();
        let _guard = set.lock();
        set.moving(|| {
            pool.remove(4).unwrap();
            set.get(live).quota.restock(4).unwrap();
        });
        set.get(live).take(&pool, 5, 5).unwrap();
        let (sku, channels) = set.counts(&pool);
        assert_eq!(sku, counts(1, 5, 0));
        assert_eq!(channels[0].quota, counts(0, 4, 0));
        assert_eq!((channels[0].held, channels[0].available), (5, 1));
        assert_eq!(set.quota_total(), 4);
    }
}

/// Loom model of a channel reservation's three CASes: a channel with a
/// one-unit quota and a cap of two races another channel (pool only) for
/// the pool's last unit. No interleaving oversells the pool or the quota,
/// passes the cap, or leaves an undone take behind. (Quota moves run under
/// the admin lock and are two CASes of the stock protocol already modelled
/// in `stock`.)
/// Run with `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test
/// -p holdfast-engine --release --lib loom_channels`.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    #[test]
    fn loom_channels_quota_pool_and_cap_never_oversell() {
        loom::model(|| {
            let pool = Arc::new(Stock::new(1));
            let live = Arc::new(Channel::new());
            live.quota.restock(1).unwrap();
            live.set_cap(Some(2)).unwrap();
            let web = Arc::new(Channel::new());
            // The live channel asks for 2 (quota 1 + pool 1), all or nothing.
            let a = {
                let (pool, live) = (pool.clone(), live.clone());
                thread::spawn(move || live.take(&pool, 2, 2).map(|t| (t.granted, t.quota)))
            };
            let b = {
                let (pool, web) = (pool.clone(), web.clone());
                thread::spawn(move || web.take(&pool, 1, 1).map(|t| t.granted))
            };
            let a = a.join().unwrap();
            let b = b.join().unwrap();
            let (p, q) = (pool.load(), live.quota.load());
            assert_eq!(p.total(), 1, "pool invariant");
            assert_eq!(q.total(), 1, "quota invariant");
            match (a, b) {
                (Ok((2, 1)), Err(_)) => assert_eq!((p.held, q.held), (1, 1)),
                (Err(_), Ok(1)) => {
                    assert_eq!((p.held, q.held), (1, 0), "the live take was undone");
                    assert_eq!(live.allowance.load().held, 0, "allowance undone");
                }
                other => panic!("oversold or lost: {other:?}"),
            }
            assert!(live.allowance.load().held <= 2, "cap");
        });
    }
}
