//! Lanes: a bounded lock-free queue split into several, so threads working
//! at the same time mostly touch different cache lines.
//!
//! Each thread gets a lane number on first use (round-robin). Queues whose
//! order matters per item (a hold slot's link and unlink notices, its free
//! list) are laned by the *item* (slot index), so one item always goes
//! through one FIFO; the event queue is laned by *thread*, and its consumer
//! merges by sequence number. With one thread per core the common path of
//! two threads never shares a queue end.

use crate::ring::Ring;
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

static NEXT_LANE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static LANE: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// This thread's lane number (an index to take modulo the lane count).
/// Read several times per operation, so always inlined: one thread-local
/// load and a compare.
#[inline(always)]
pub(crate) fn current() -> usize {
    let n = LANE.with(Cell::get);
    if n == usize::MAX { first_use() } else { n }
}

/// Gives this thread its lane number.
#[cold]
#[inline(never)]
fn first_use() -> usize {
    // Relaxed: only spreads threads over lanes; any value is correct.
    let n = NEXT_LANE.fetch_add(1, Ordering::Relaxed);
    LANE.with(|lane| lane.set(n));
    n
}

#[derive(Debug)]
pub(crate) struct Lanes<T: Copy> {
    queues: Box<[Ring<T>]>,
    /// `count - 1`: the count is a power of two, so picking a lane is a
    /// mask, not a division (there are several picks per reservation).
    mask: usize,
}

impl<T: Copy> Lanes<T> {
    /// `count` (a power of two) queues; queue `i` has room for at least
    /// `capacity_of(i)` items (its ring rounds up to a power of two).
    pub(crate) fn new(count: usize, capacity_of: impl Fn(usize) -> usize) -> Self {
        assert!(count.is_power_of_two());
        Self {
            queues: (0..count)
                .map(|i| Ring::new(capacity_of(i).max(1)))
                .collect(),
            mask: count - 1,
        }
    }

    /// Queue `i` (taken modulo the lane count).
    #[inline]
    pub(crate) fn lane(&self, i: usize) -> &Ring<T> {
        &self.queues[i & self.mask]
    }

    /// Every queue, in lane order.
    pub(crate) fn all(&self) -> &[Ring<T>] {
        &self.queues
    }

    /// Items queued in all lanes.
    pub(crate) fn len(&self) -> usize {
        self.queues.iter().map(Ring::len).sum()
    }

    /// Pops from lane `first`, or else from the others in turn.
    #[inline]
    pub(crate) fn pop_from(&self, first: usize) -> Option<T> {
        if let Some(item) = self.lane(first).pop() {
            return Some(item);
        }
        (1..self.queues.len()).find_map(|k| self.lane(first + k).pop())
    }
}

/// Items among `total` indices that fall in lane `lane` of `count` (index
/// `i` belongs to lane `i % count`).
pub(crate) fn share(total: usize, count: usize, lane: usize) -> usize {
    (total + count - 1 - lane) / count
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_and_lanes_spill_over() {
        for (total, count) in [(10, 3), (1, 4), (16, 16), (262_144, 6)] {
            assert_eq!(
                (0..count).map(|l| share(total, count, l)).sum::<usize>(),
                total
            );
        }
        let lanes: Lanes<u32> = Lanes::new(4, |_| 2);
        lanes.lane(1).push(7).unwrap();
        assert_eq!(
            lanes.pop_from(0),
            Some(7),
            "an empty lane takes from the next"
        );
        assert_eq!(lanes.len(), 0);
        assert!(lanes.all().iter().all(|l| l.capacity() == 2));
        assert_eq!(current(), current(), "a thread keeps its lane");
    }
}
