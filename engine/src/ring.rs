//! A bounded lock-free queue of `Copy` items: Dmitry Vyukov's bounded
//! MPMC array queue (the algorithm of crossbeam's `ArrayQueue`, in its
//! original power-of-two form), kept here so that the engine's hot path can
//! inline it, and so that a consumer can take a whole run of items with one
//! claim on the head (`pop_into`) and a producer give a run with one claim
//! on the tail (`push_slice`).
//!
//! Pushes and pops are numbered: push `s` (and pop `s`) use position
//! `s % capacity`. Every position carries a stamp: `s` while it is free for
//! push `s`, `s + 1` once push `s` has written it, `s + capacity` once pop
//! `s` has read it (free for the push one lap later). A producer claims
//! number `s` by moving `tail` from `s` with a CAS, writes the item, then
//! publishes it with a Release store of the stamp; a consumer claims numbers
//! by moving `head` with a CAS after it has seen (Acquire) their stamps,
//! reads them, then frees each with a Release store of its stamp. Ownership
//! of a position is decided by the index CAS alone; the stamps carry the
//! item between the two threads. Numbers wrap at 2^64 (a multiple of the
//! capacity), so all arithmetic on them is wrapping.
//!
//! The capacity is a power of two of at least 2 (and at least what was
//! asked for), so that a position is a mask and the next number an
//! increment. Items are `Copy` (hold slot indices, expiry notices, events),
//! so a position never needs dropping. This module must never block,
//! allocate after construction, or hand out an item twice.

use crate::sync::{AtomicUsize, Backoff, Ordering, UnsafeCell, fence};
use crossbeam::utils::CachePadded;
use std::mem::MaybeUninit;

/// One position of the ring.
#[derive(Debug)]
struct Position<T> {
    /// See the module documentation.
    stamp: AtomicUsize,
    value: UnsafeCell<MaybeUninit<T>>,
}

/// A bounded multi-producer multi-consumer FIFO.
#[derive(Debug)]
pub(crate) struct Ring<T: Copy> {
    /// Number of the next pop. Producers and consumers work on different
    /// cache lines.
    head: CachePadded<AtomicUsize>,
    /// Number of the next push.
    tail: CachePadded<AtomicUsize>,
    buffer: Box<[Position<T>]>,
    /// `capacity - 1`: a number's position is `number & mask`.
    mask: usize,
}

// SAFETY: items cross threads by value (`T: Send`); a position's value is
// only written by the one producer whose tail CAS claimed it and only read by
// the one consumer whose head CAS claimed it, ordered by its stamp.
unsafe impl<T: Copy + Send> Sync for Ring<T> {}

impl<T: Copy> Ring<T> {
    /// A ring of at least `capacity` positions: `capacity` rounded up to a
    /// power of two, and at least 2 (with one position, "published by push
    /// `s`" and "free for push `s + 1`" would be the same stamp).
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = capacity.max(2).next_power_of_two();
        let buffer = (0..capacity)
            .map(|i| Position {
                // Position i is free for push i.
                stamp: AtomicUsize::new(i),
                value: UnsafeCell::new(MaybeUninit::uninit()),
            })
            .collect();
        Self {
            head: CachePadded::new(AtomicUsize::new(0)),
            tail: CachePadded::new(AtomicUsize::new(0)),
            buffer,
            mask: capacity - 1,
        }
    }

    /// Positions in all (a power of two).
    pub(crate) fn capacity(&self) -> usize {
        self.mask + 1
    }

    #[inline(always)]
    fn position(&self, number: usize) -> &Position<T> {
        &self.buffer[number & self.mask]
    }

    /// Appends `value`, or gives it back if the ring is full.
    #[inline(always)]
    pub(crate) fn push(&self, value: T) -> Result<(), T> {
        // The uncontended case, inlined into the engine's hot path: one
        // look at the tail position and one CAS. Anything else (a race, a
        // full ring) goes to the out-of-line loop.
        // Relaxed: a first guess, validated by the CAS.
        let tail = self.tail.load(Ordering::Relaxed);
        match self.try_push_at(tail, value) {
            Ok(()) => Ok(()),
            Err(value) => self.push_slow(value),
        }
    }

    /// One attempt at push number `tail` while its position is free for it.
    /// Gives the value back if the position is not free or the CAS lost.
    #[inline(always)]
    fn try_push_at(&self, tail: usize, value: T) -> Result<(), T> {
        let position = self.position(tail);
        // Acquire: pairs with the Release stamp store of the pop that
        // freed this position, so our write below comes after its read.
        if position.stamp.load(Ordering::Acquire) != tail {
            return Err(value);
        }
        // Success SeqCst, as crossbeam's ArrayQueue: the index CASes and the
        // fences of the full / empty checks are in one total order, so those
        // answers are linearizable (free on x86: any CAS is a locked
        // instruction). Failure Relaxed: the caller only retries.
        if self
            .tail
            .compare_exchange_weak(
                tail,
                tail.wrapping_add(1),
                Ordering::SeqCst,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return Err(value);
        }
        // SAFETY: our CAS claimed this number and its position's stamp said
        // the last consumer is done with it; no other thread touches the
        // value until our stamp store below publishes it.
        position
            .value
            .with_mut(|p| unsafe { p.write(MaybeUninit::new(value)) });
        // Release: pairs with the consumer's Acquire stamp load; it then
        // sees the value written above.
        position
            .stamp
            .store(tail.wrapping_add(1), Ordering::Release);
        Ok(())
    }

    #[cold]
    #[inline(never)]
    fn push_slow(&self, value: T) -> Result<(), T> {
        let backoff = Backoff::new();
        loop {
            // Relaxed: a new guess, validated by the CAS.
            let tail = self.tail.load(Ordering::Relaxed);
            // Acquire: as in `try_push_at`.
            let stamp = self.position(tail).stamp.load(Ordering::Acquire);
            if stamp == tail {
                match self.try_push_at(tail, value) {
                    Ok(()) => return Ok(()),
                    Err(_) => backoff.spin(),
                }
            } else if stamp.wrapping_add(self.capacity()) == tail.wrapping_add(1) {
                // The position still holds the item of push `tail -
                // capacity`: full, unless a pop has claimed it and not freed
                // it yet.
                // SeqCst: see `try_push_at`.
                fence(Ordering::SeqCst);
                // Relaxed: ordered by the fence.
                let head = self.head.load(Ordering::Relaxed);
                if head.wrapping_add(self.capacity()) == tail {
                    return Err(value);
                }
                backoff.spin();
            } else {
                // Another producer took this number meanwhile: look again.
                backoff.snooze();
            }
        }
    }

    /// Appends `items` in order, each run of free positions with one claim
    /// on the tail; returns how many were pushed (fewer only if the ring
    /// filled up).
    pub(crate) fn push_slice(&self, items: &[T]) -> usize {
        let (buffer, mask) = (&*self.buffer, self.mask);
        let backoff = Backoff::new();
        let mut done = 0;
        while done < items.len() {
            // Relaxed: a first guess, validated by the CAS below.
            let tail = self.tail.load(Ordering::Relaxed);
            let want = (items.len() - done).min(buffer.len());
            let mut n = 0;
            while n < want {
                let number = tail.wrapping_add(n);
                // Acquire: as in `try_push_at`.
                if buffer[number & mask].stamp.load(Ordering::Acquire) != number {
                    break;
                }
                n += 1;
            }
            if n == 0 {
                // Full, or another producer is at the tail: one item the
                // ordinary way, which tells the two apart.
                match self.push(items[done]) {
                    Ok(()) => done += 1,
                    Err(_) => return done,
                }
                continue;
            }
            // If the tail has not moved since we loaded it, no other
            // producer took any of these numbers (a tail value comes back
            // only after 2^64 pushes), so their positions are still free and
            // the CAS makes them ours.
            // Success SeqCst: see `try_push_at`. Failure Relaxed: we only
            // retry.
            if self
                .tail
                .compare_exchange(
                    tail,
                    tail.wrapping_add(n),
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                )
                .is_err()
            {
                backoff.spin();
                continue;
            }
            for (i, &item) in items[done..done + n].iter().enumerate() {
                let number = tail.wrapping_add(i);
                let position = &buffer[number & mask];
                // SAFETY: as in `try_push_at`: our CAS claimed this number
                // and its stamp said the last consumer is done with it.
                position
                    .value
                    .with_mut(|p| unsafe { p.write(MaybeUninit::new(item)) });
                // Release: as in `try_push_at`.
                position
                    .stamp
                    .store(number.wrapping_add(1), Ordering::Release);
            }
            done += n;
        }
        done
    }

    /// Takes the oldest item, if any. Waits (spins, then yields) only while
    /// a push that already claimed the oldest number is writing it.
    #[inline(always)]
    pub(crate) fn pop(&self) -> Option<T> {
        // The uncontended case inlined, as in `push`.
        // Relaxed: a first guess, validated by the CAS.
        let head = self.head.load(Ordering::Relaxed);
        self.try_pop_at(head).or_else(|| self.pop_slow())
    }

    /// One attempt at pop number `head` while its item is published.
    #[inline(always)]
    fn try_pop_at(&self, head: usize) -> Option<T> {
        let position = self.position(head);
        // Acquire: pairs with the push's Release stamp store (the value).
        if position.stamp.load(Ordering::Acquire) != head.wrapping_add(1) {
            return None;
        }
        // Success SeqCst: see `try_push_at`. Failure Relaxed: the caller
        // only retries.
        self.head
            .compare_exchange_weak(
                head,
                head.wrapping_add(1),
                Ordering::SeqCst,
                Ordering::Relaxed,
            )
            .ok()?;
        Some(self.take(position, head))
    }

    #[cold]
    #[inline(never)]
    fn pop_slow(&self) -> Option<T> {
        let backoff = Backoff::new();
        loop {
            // Relaxed: a new guess, validated by the CAS.
            let head = self.head.load(Ordering::Relaxed);
            // Acquire: as in `try_pop_at`.
            let stamp = self.position(head).stamp.load(Ordering::Acquire);
            if stamp == head.wrapping_add(1) {
                match self.try_pop_at(head) {
                    Some(value) => return Some(value),
                    None => backoff.spin(),
                }
            } else if stamp == head {
                // Not written: empty, unless a push has claimed this number
                // and not published it yet.
                // SeqCst: see `try_push_at`.
                fence(Ordering::SeqCst);
                // Relaxed: ordered by the fence.
                let tail = self.tail.load(Ordering::Relaxed);
                if tail == head {
                    return None;
                }
                backoff.spin();
            } else {
                // Another consumer took this number meanwhile: look again.
                backoff.snooze();
            }
        }
    }

    /// Moves the run of published items at the head, at most `max`, into
    /// `out` with one claim on the head; returns how many. Stops early (it
    /// never waits) at a number a push has claimed but not yet published:
    /// that item is taken by a later call.
    pub(crate) fn pop_into(&self, out: &mut Vec<T>, max: usize) -> usize {
        // Locals, so the loops below do not reload them after every write
        // to `out` (which the compiler cannot prove is not `self`).
        let (buffer, mask) = (&*self.buffer, self.mask);
        let max = max.min(buffer.len());
        let backoff = Backoff::new();
        loop {
            // Relaxed: a first guess, validated by the CAS below.
            let head = self.head.load(Ordering::Relaxed);
            let mut n = 0;
            while n < max {
                let number = head.wrapping_add(n);
                // Acquire: pairs with each push's Release stamp store.
                let stamp = buffer[number & mask].stamp.load(Ordering::Acquire);
                if stamp != number.wrapping_add(1) {
                    break;
                }
                n += 1;
            }
            if n == 0 {
                return 0;
            }
            // Room first, so nothing between the claim and the frees below
            // can fail (a panic there would leave positions claimed forever).
            out.reserve(n);
            // If the head has not moved since we loaded it, no other consumer
            // took any of these numbers (a head value comes back only after
            // 2^64 pops), so their stamps still say "published" and the CAS
            // makes them ours.
            // Success SeqCst: see `try_push_at`. Failure Relaxed: we only
            // retry.
            if self
                .head
                .compare_exchange(
                    head,
                    head.wrapping_add(n),
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                )
                .is_err()
            {
                backoff.spin();
                continue;
            }
            let spare = &mut out.spare_capacity_mut()[..n];
            for (i, item) in spare.iter_mut().enumerate() {
                let number = head.wrapping_add(i);
                let position = &buffer[number & mask];
                // SAFETY: as in `take`: the stamp we loaded (Acquire) said
                // published, and our CAS made us its only reader until the
                // stamp store below frees it.
                item.write(position.value.with(|p| unsafe { (*p).assume_init() }));
                // Release: as in `take`.
                position
                    .stamp
                    .store(number.wrapping_add(buffer.len()), Ordering::Release);
            }
            // SAFETY: the loop above initialised the `n` items after the
            // current length, within the capacity reserved above.
            unsafe { out.set_len(out.len() + n) };
            return n;
        }
    }

    /// Reads the item of pop number `number`, which this thread's head CAS
    /// claimed after an Acquire load saw it published, and frees its
    /// position for the push one lap later.
    #[inline(always)]
    fn take(&self, position: &Position<T>, number: usize) -> T {
        // SAFETY: the stamp we loaded with Acquire was `number + 1`, so the
        // push that wrote the value is visible and done with it; our head
        // CAS made us its only reader; and it stays unwritten until our
        // stamp store below frees it.
        let value = position.value.with(|p| unsafe { (*p).assume_init() });
        // Release: pairs with the next lap's producer's Acquire stamp load,
        // so its write comes after our read above.
        position
            .stamp
            .store(number.wrapping_add(self.capacity()), Ordering::Release);
        value
    }

    /// Items queued right now (exact only when nothing runs concurrently).
    pub(crate) fn len(&self) -> usize {
        loop {
            // SeqCst loads, as crossbeam's `len`: they are in the total
            // order of the SeqCst index CASes, so an unchanged tail around
            // the head load means the pair existed at one instant.
            let tail = self.tail.load(Ordering::SeqCst);
            let head = self.head.load(Ordering::SeqCst);
            if self.tail.load(Ordering::SeqCst) == tail {
                return tail.wrapping_sub(head).min(self.capacity());
            }
        }
    }

    /// Items queued, read with two loads and no retry loop (for an
    /// admission check on every operation). Never less than the items
    /// queued when the tail is read; more if pops ran between the two loads.
    #[inline(always)]
    pub(crate) fn len_at_most(&self) -> usize {
        // Acquire: the value was written by a pop's SeqCst (so Release)
        // head CAS, made after it saw (Acquire) the stamps of the pushes it
        // took, each published after that push's tail CAS: so the tail
        // load below reads at least this head, and the difference is never
        // negative.
        let head = self.head.load(Ordering::Acquire);
        // Relaxed: see above.
        let tail = self.tail.load(Ordering::Relaxed);
        tail.wrapping_sub(head).min(self.capacity())
    }

    /// Whether no item is queued right now.
    pub(crate) fn is_empty(&self) -> bool {
        // SeqCst: as in `len` (and the journal's doorbell fences order its
        // look at the queue through these loads).
        let head = self.head.load(Ordering::SeqCst);
        let tail = self.tail.load(Ordering::SeqCst);
        head == tail
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn fifo_bounded_and_wrapping() {
        assert_eq!(Ring::<u8>::new(1).capacity(), 2, "never one position");
        let ring = Ring::new(3);
        assert_eq!(ring.capacity(), 4, "rounded up to a power of two");
        for lap in 0..5u32 {
            for i in 0..4 {
                ring.push(lap * 10 + i).unwrap();
            }
            assert_eq!(ring.push(99), Err(99), "a full ring refuses");
            assert_eq!(ring.len(), 4);
            assert_eq!(ring.len_at_most(), 4);
            assert_eq!(ring.pop(), Some(lap * 10));
            let mut out = Vec::new();
            assert_eq!(ring.pop_into(&mut out, 1), 1);
            assert_eq!(ring.pop_into(&mut out, 10), 2);
            assert_eq!(out, [lap * 10 + 1, lap * 10 + 2, lap * 10 + 3]);
            assert!(ring.is_empty());
            assert_eq!(ring.pop(), None);
            assert_eq!(ring.pop_into(&mut out, 10), 0);
        }
    }

    #[test]
    fn push_slice_fills_up_to_capacity_in_order() {
        let ring = Ring::new(4);
        ring.push(0u32).unwrap();
        assert_eq!(ring.push_slice(&[1, 2]), 2);
        assert_eq!(ring.pop(), Some(0));
        assert_eq!(ring.push_slice(&[3, 4, 5]), 2, "only two positions left");
        let mut out = Vec::new();
        assert_eq!(ring.pop_into(&mut out, 10), 4);
        assert_eq!(out, [1, 2, 3, 4]);
        assert_eq!(ring.push_slice(&[6, 7, 8, 9, 10]), 4);
        out.clear();
        ring.pop_into(&mut out, 10);
        assert_eq!(out, [6, 7, 8, 9]);
    }

    #[test]
    fn batches_cross_the_end_of_the_buffer() {
        let ring = Ring::new(4);
        let mut out = Vec::new();
        for round in 0..10u64 {
            for i in 0..3 {
                ring.push(round * 3 + i).unwrap();
            }
            out.clear();
            assert_eq!(ring.pop_into(&mut out, usize::MAX), 3);
            assert_eq!(out, [round * 3, round * 3 + 1, round * 3 + 2]);
        }
    }

    #[test]
    fn threads_hand_over_every_item_exactly_once() {
        const PER_PRODUCER: u64 = 100_000;
        let ring = Ring::new(64);
        let taken = std::sync::atomic::AtomicU64::new(0);
        let mut seen = std::thread::scope(|s| {
            for p in 0..2u64 {
                let ring = &ring;
                s.spawn(move || {
                    for i in 0..PER_PRODUCER {
                        let mut v = p << 32 | i;
                        while let Err(back) = ring.push(v) {
                            v = back;
                            std::hint::spin_loop();
                        }
                    }
                });
            }
            let consumers: Vec<_> = (0..2)
                .map(|c| {
                    let (ring, taken) = (&ring, &taken);
                    s.spawn(move || {
                        let (mut got, mut batch) = (Vec::new(), Vec::new());
                        // Until both consumers together have every item.
                        while taken.load(std::sync::atomic::Ordering::Relaxed) < 2 * PER_PRODUCER {
                            batch.clear();
                            if c == 0 {
                                batch.extend(ring.pop());
                            } else {
                                ring.pop_into(&mut batch, 7);
                            }
                            taken.fetch_add(
                                batch.len() as u64,
                                std::sync::atomic::Ordering::Relaxed,
                            );
                            got.extend_from_slice(&batch);
                        }
                        got
                    })
                })
                .collect();
            consumers
                .into_iter()
                .flat_map(|h| {
                    let got = h.join().unwrap();
                    // Each consumer sees each producer's items in order.
                    for p in 0..2u64 {
                        let mine: Vec<_> = got.iter().filter(|v| *v >> 32 == p).collect();
                        assert!(mine.windows(2).all(|w| w[0] < w[1]));
                    }
                    got
                })
                .collect::<Vec<_>>()
        });
        seen.sort_unstable();
        let want: Vec<u64> = (0..2u64)
            .flat_map(|p| (0..PER_PRODUCER).map(move |i| p << 32 | i))
            .collect();
        assert_eq!(seen, want, "every item exactly once");
        assert!(ring.is_empty());
    }
}

/// Loom models of the ring's claim-and-stamp protocol: pushes, single pops
/// and batch pops racing, on rings small enough to wrap. Every racing party
/// is a spawned thread (loom explores few schedules of the model's own
/// thread against threads it spawns).
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    fn spawn<R: 'static>(
        ring: &Arc<Ring<u64>>,
        f: impl FnOnce(&Ring<u64>) -> R + 'static,
    ) -> thread::JoinHandle<R> {
        let ring = ring.clone();
        thread::spawn(move || f(&ring))
    }

    /// Two producers race for the last free position of a ring: exactly
    /// one gets it, the other is told the ring is full, and the winner's
    /// item comes out after the one already queued.
    #[test]
    fn loom_two_producers_race_for_the_last_position() {
        loom::model(|| {
            let ring = Arc::new(Ring::<u64>::new(2));
            ring.push(0).unwrap();
            let a = spawn(&ring, |r| r.push(1).is_ok());
            let b = spawn(&ring, |r| r.push(2).is_ok());
            let pushed = [a.join().unwrap(), b.join().unwrap()];
            assert_eq!(pushed.iter().filter(|&&ok| ok).count(), 1, "{pushed:?}");
            let winner = if pushed[0] { 1 } else { 2 };
            assert_eq!(ring.pop(), Some(0));
            assert_eq!(ring.pop(), Some(winner));
            assert_eq!(ring.pop(), None);
        });
    }

    /// A pop races a push on an empty ring whose numbers have gone round
    /// once: the pop gets the item or nothing (waiting out a push caught
    /// between its claim and its publication), and the item is never lost.
    #[test]
    fn loom_pop_racing_a_push_gets_it_or_nothing() {
        loom::model(|| {
            let ring = Arc::new(Ring::<u64>::new(2));
            for v in [10, 11] {
                ring.push(v).unwrap();
                assert_eq!(ring.pop(), Some(v));
            }
            let producer = spawn(&ring, |r| r.push(2).unwrap());
            let consumer = spawn(&ring, |r| r.pop());
            producer.join().unwrap();
            let got = consumer.join().unwrap();
            let rest = ring.pop();
            assert_eq!(got.or(rest), Some(2));
            assert!(got.is_none() || rest.is_none(), "never twice");
        });
    }

    /// A batch pop and a single pop race while a producer publishes: each
    /// item goes to exactly one of them, and a batch is in FIFO order.
    #[test]
    fn loom_batch_pop_and_pop_take_each_item_once() {
        loom::model(|| {
            let ring = Arc::new(Ring::<u64>::new(2));
            ring.push(1).unwrap();
            let producer = spawn(&ring, |r| r.push(2).unwrap());
            let single = spawn(&ring, |r| r.pop());
            let batch = spawn(&ring, |r| {
                let mut out = Vec::new();
                r.pop_into(&mut out, 2);
                out
            });
            producer.join().unwrap();
            let single = single.join().unwrap();
            let batch = batch.join().unwrap();
            assert!(batch.windows(2).all(|w| w[0] < w[1]), "a batch is in order");
            let mut all: Vec<u64> = batch.into_iter().chain(single).collect();
            ring.pop_into(&mut all, 2);
            all.sort_unstable();
            assert_eq!(all, [1, 2], "each item exactly once");
        });
    }

    /// A run push races a single push and a pop: every accepted item comes
    /// out exactly once, the run's items in their order, a full ring refuses
    /// the rest.
    #[test]
    fn loom_push_slice_races_a_push_and_a_pop() {
        loom::model(|| {
            let ring = Arc::new(Ring::<u64>::new(2));
            ring.push(0).unwrap();
            let run = spawn(&ring, |r| r.push_slice(&[1, 2]));
            let single = spawn(&ring, |r| r.push(3).is_ok());
            let popper = spawn(&ring, |r| r.pop());
            let pushed_run = run.join().unwrap();
            let pushed_single = single.join().unwrap();
            let mut all: Vec<u64> = popper.join().unwrap().into_iter().collect();
            while let Some(v) = ring.pop() {
                all.push(v);
            }
            assert_eq!(all.first(), Some(&0), "FIFO: the first item first");
            let run_items: Vec<u64> = all.iter().copied().filter(|&v| v == 1 || v == 2).collect();
            assert_eq!(run_items, [1, 2][..pushed_run], "a run's prefix, in order");
            assert_eq!(all.contains(&3), pushed_single);
            assert_eq!(all.len(), 1 + pushed_run + usize::from(pushed_single));
        });
    }

    /// Pops take a run's items while it is being published: each comes out
    /// whole (loom checks the cell accesses), once, in order.
    #[test]
    fn loom_pops_see_a_run_published() {
        loom::model(|| {
            let ring = Arc::new(Ring::<u64>::new(2));
            let run = spawn(&ring, |r| r.push_slice(&[1, 2]));
            let popper = spawn(&ring, |r| [r.pop(), r.pop()]);
            assert_eq!(run.join().unwrap(), 2);
            let mut all: Vec<u64> = popper.join().unwrap().into_iter().flatten().collect();
            while let Some(v) = ring.pop() {
                all.push(v);
            }
            assert_eq!(all, [1, 2]);
        });
    }

    /// A batch pop frees a position of a full ring while a producer waits
    /// to reuse it on the next lap: the producer's write never overlaps the
    /// consumer's read (loom checks every access to the cell) and every
    /// value arrives, in order.
    #[test]
    fn loom_reuse_of_a_position_waits_for_its_reader() {
        loom::model(|| {
            let ring = Arc::new(Ring::<u64>::new(2));
            ring.push(7).unwrap();
            ring.push(9).unwrap();
            let consumer = spawn(&ring, |r| {
                let mut out = Vec::new();
                r.pop_into(&mut out, 1);
                out
            });
            let producer = spawn(&ring, |r| r.push(8).is_ok());
            let pushed = producer.join().unwrap();
            let mut all = consumer.join().unwrap();
            if !pushed {
                ring.push(8).unwrap();
            }
            ring.pop_into(&mut all, 2);
            assert_eq!(all, [7, 9, 8]);
        });
    }

    /// The same with a single pop freeing the position.
    #[test]
    fn loom_reuse_after_a_single_pop() {
        loom::model(|| {
            let ring = Arc::new(Ring::<u64>::new(2));
            ring.push(7).unwrap();
            ring.push(9).unwrap();
            let consumer = spawn(&ring, |r| r.pop());
            let producer = spawn(&ring, |r| r.push(8).is_ok());
            let pushed = producer.join().unwrap();
            let mut all: Vec<u64> = consumer.join().unwrap().into_iter().collect();
            if !pushed {
                ring.push(8).unwrap();
            }
            all.extend(ring.pop());
            all.extend(ring.pop());
            assert_eq!(all, [7, 9, 8]);
        });
    }
}
