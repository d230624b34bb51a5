//! The inbox from the engine to the expirer: one `u64` notice per event in
//! a hold slot's life that the expirer's wheel must know about.
//!
//! - *link*: a new hold lives in slot S until tick T (`T << 24 | S`),
//!   pushed before the hold is published;
//! - *unlink*: the hold in slot S has ended and may be reclaimed
//!   (`1 << 63 | S`), pushed by whoever ended it.
//!
//! The queue is laned by slot, so one slot's notices go through one FIFO
//! and its link always arrives before its unlink. Each slot has at most one
//! of each outstanding, so a capacity of twice the hold table means a push
//! can never fail. This file owns the format; the engine writes notices,
//! the [`crate::expiry`] module reads them, and neither knows the other's
//! internals.

use crate::hold::DEADLINE_MAX_MS;
use crate::lanes::{self, Lanes};
use crate::limits::{EXPIRY_TICK_MS_MAX, EXPIRY_TICK_MS_MIN, HOLDS_MAX};
use crate::ring::Ring;

/// Bit 63 marks an unlink notice.
const UNLINK: u64 = 1 << 63;
/// The low bits of a notice hold the slot.
const SLOT_BITS: u32 = 24;
const SLOT_MASK: u64 = (1 << SLOT_BITS) - 1;

const _: () = assert!(HOLDS_MAX as u64 <= 1 << SLOT_BITS, "a slot fits its field");
// A link notice packs a deadline's tick between the slot and the unlink
// flag: the tick of the latest deadline must fit 63 - 24 = 39 bits at the
// finest tick allowed, and `EXPIRY_TICK_MS_MIN` is the finest that fits.
const _: () = assert!(
    DEADLINE_MAX_MS.div_ceil(EXPIRY_TICK_MS_MIN) < 1 << (63 - SLOT_BITS),
    "the latest deadline's tick fits below the unlink flag"
);
const _: () = assert!(
    DEADLINE_MAX_MS.div_ceil(EXPIRY_TICK_MS_MIN - 1) >= 1 << (63 - SLOT_BITS),
    "EXPIRY_TICK_MS_MIN is the finest tick that fits"
);
// `Ticks` is exact for deadlines below 2^43 and ticks below 2^10.
const _: () = assert!(DEADLINE_MAX_MS < 1 << 43 && EXPIRY_TICK_MS_MAX < 1 << 10);

/// One decoded notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Notice {
    /// A new hold lives in `slot`; its deadline falls in tick `tick`.
    Link { slot: u32, tick: u64 },
    /// The hold in `slot` has ended.
    Unlink { slot: u32 },
}

impl Notice {
    #[inline]
    pub(crate) fn decode(word: u64) -> Self {
        let slot = (word & SLOT_MASK) as u32;
        if word & UNLINK != 0 {
            Self::Unlink { slot }
        } else {
            Self::Link {
                slot,
                tick: word >> SLOT_BITS,
            }
        }
    }
}

/// The laned notice queue, and the tick length links are filed under.
#[derive(Debug)]
pub(crate) struct Inbox {
    lanes: Lanes<u64>,
    ticks: Ticks,
}

impl Inbox {
    /// An inbox for a hold table of `holds_max` slots in `lanes` lanes
    /// (slot `i` in lane `i % lanes`), filing deadlines in ticks of
    /// `tick_ms`.
    pub(crate) fn new(lanes: usize, holds_max: u32, tick_ms: u64) -> Self {
        Self {
            lanes: Lanes::new(lanes, |lane| {
                2 * lanes::share(holds_max as usize, lanes, lane)
            }),
            ticks: Ticks::new(tick_ms),
        }
    }

    /// Tells the expirer a new hold lives in `slot` until `deadline_ms`.
    #[inline(always)]
    pub(crate) fn link(&self, slot: u32, deadline_ms: u64) {
        let tick = self.ticks.ceil(deadline_ms);
        // Cannot fail: see the module docs.
        self.lanes
            .lane(slot as usize)
            .push(tick << SLOT_BITS | u64::from(slot))
            .expect("inbox sized to the hold table");
    }

    /// Tells the expirer the hold in `slot` has ended and may be reclaimed.
    #[inline(always)]
    pub(crate) fn unlink(&self, slot: u32) {
        self.lanes
            .lane(slot as usize)
            .push(UNLINK | u64::from(slot))
            .expect("inbox sized to the hold table");
    }

    /// Every lane, for the expirer to drain one after another (a slot's
    /// notices are all in one lane, in order).
    pub(crate) fn lanes(&self) -> &[Ring<u64>] {
        self.lanes.all()
    }
}

/// `ceil(ms / tick_ms)` as a multiplication: a 64-bit division costs tens
/// of cycles, on every reservation. Exact for `ms` up to
/// [`DEADLINE_MAX_MS`] and `tick_ms` up to [`EXPIRY_TICK_MS_MAX`] (asserted
/// above). With `n = ms + tick_ms - 1 < 2^43` and `magic = ceil(2^53 /
/// tick_ms) = (2^53 + e) / tick_ms` for some `0 <= e < tick_ms < 2^10`:
/// `n * magic / 2^53 = n / tick_ms + n * e / (tick_ms * 2^53)`, and `n * e
/// < 2^53`, so the excess is below `1 / tick_ms` and `(n * magic) >> 53 =
/// floor(n / tick_ms)`. (A wrong tick would only file a hold in the wrong
/// bucket, which the expirer corrects when it looks at the hold's own
/// deadline.)
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticks {
    tick_ms: u64,
    magic: u64,
}

impl Ticks {
    const SHIFT: u32 = 53;

    pub(crate) fn new(tick_ms: u64) -> Self {
        assert!(
            (1..=EXPIRY_TICK_MS_MAX).contains(&tick_ms),
            "expiry_tick_ms is 1..={EXPIRY_TICK_MS_MAX}"
        );
        Self {
            tick_ms,
            magic: (1u64 << Self::SHIFT).div_ceil(tick_ms),
        }
    }

    /// The first tick at or after `ms`.
    #[inline(always)]
    pub(crate) fn ceil(self, ms: u64) -> u64 {
        debug_assert!(ms <= DEADLINE_MAX_MS);
        let n = u128::from(ms + self.tick_ms - 1);
        ((n * u128::from(self.magic)) >> Self::SHIFT) as u64
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn notices_decode_to_what_was_pushed_at_the_bounds() {
        let inbox = Inbox::new(1, 4, EXPIRY_TICK_MS_MIN);
        let slot = 3;
        inbox.link(slot, DEADLINE_MAX_MS);
        inbox.unlink(slot);
        let lane = &inbox.lanes()[0];
        assert_eq!(
            Notice::decode(lane.pop().unwrap()),
            Notice::Link {
                slot,
                tick: DEADLINE_MAX_MS.div_ceil(EXPIRY_TICK_MS_MIN)
            },
            "the latest deadline at the finest tick is a link, not an unlink"
        );
        assert_eq!(Notice::decode(lane.pop().unwrap()), Notice::Unlink { slot });
        let top = u64::from(HOLDS_MAX - 1);
        assert_eq!(
            Notice::decode(UNLINK | top),
            Notice::Unlink {
                slot: HOLDS_MAX - 1
            }
        );
    }

    #[test]
    fn ticks_divide_exactly_over_the_whole_range() {
        let edges = [0, 1, 999, 1000, 1001, 1_767_225_600_000, DEADLINE_MAX_MS];
        for tick_ms in 1..=EXPIRY_TICK_MS_MAX {
            let ticks = Ticks::new(tick_ms);
            let mut x = tick_ms.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            for i in 0..200u64 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let ms = if (i as usize) < edges.len() {
                    edges[i as usize]
                } else {
                    // Around multiples of the tick, and anywhere.
                    let near = (x % (DEADLINE_MAX_MS / tick_ms)) * tick_ms;
                    (near + i % 3).wrapping_sub(1).min(DEADLINE_MAX_MS)
                };
                assert_eq!(ticks.ceil(ms), ms.div_ceil(tick_ms), "{ms} / {tick_ms}");
            }
            let top = DEADLINE_MAX_MS;
            for ms in top.saturating_sub(2 * tick_ms)..=top {
                assert_eq!(ticks.ceil(ms), ms.div_ceil(tick_ms), "{ms} / {tick_ms}");
            }
        }
    }
}
