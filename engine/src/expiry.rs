//! Expiry: a hashed timing wheel owned by one [`Expirer`], fed through a
//! bounded lock-free inbox.
//!
//! A reservation pushes "link slot S at deadline D" into the inbox before it
//! publishes the hold; whoever ends a hold (commit, release, or an expiry
//! decided on the commit path) pushes "unlink S". The expirer alone owns the
//! wheel's doubly-linked bucket lists, so linking and unlinking are O(1) with
//! no atomics, and it alone returns slots to the free list, so a slot is never
//! reused while still linked. Because a hold's link notice is pushed before
//! the hold becomes visible, and its unlink notice only after someone saw it,
//! the FIFO inbox always delivers a slot's link before its unlink. A hold
//! that has already ended when its link notice is drained (a commit right
//! behind the reservation) is not filed in the wheel at all: it waits for
//! its unlink notice outside it.
//!
//! Each run drains the inbox, then walks the buckets of the ticks that have
//! fully elapsed. A hold found there is expired with the same one-CAS
//! decision commit uses; one whose deadline moved later (extend, or a later
//! turn of the wheel) is relinked where it now belongs. Cost per hold is O(1)
//! (plus one look per wheel turn it outlives: with 65 536 buckets of 10 ms a
//! turn is 11 minutes). Nothing here scans all holds.

use crate::catalog::SkuIdx;
use crate::engine::{Ending, Engine};
use crate::hold::{
    self, COMMITTED, COMMITTING, EXPIRED, FreeBatch, HELD, Lost, RELEASED, RESERVING, To, Won,
};
use crate::inbox::Notice;
use crate::limits::EXPIRY_BATCH_MAX;
use crate::sync::Ordering;
use std::collections::HashSet;
use std::sync::Arc;

const NONE: u32 = u32::MAX;
/// Runs between two sweeps of every SKU for scheduled sale windows, which
/// catch a window whose notice the bounded `scheduled` queue dropped: at
/// the gateway's 10 ms interval, one sweep every 10 s.
const RUNS_PER_WINDOW_SWEEP: u32 = 1000;
/// `bucket_of` a slot whose hold had already ended when its link notice
/// arrived: it waits for its unlink notice outside the wheel. (Buckets are
/// fewer than 2^31, so no bucket has this number.)
const OUTSIDE_WHEEL: u32 = u32::MAX - 1;

/// What one [`Expirer::run`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExpiryReport {
    /// Holds this run expired.
    pub expired_holds: u32,
    /// Units those holds gave back.
    pub expired_units: u64,
    /// Hold slots returned to the free list.
    pub freed_slots: u32,
    /// Scheduled sale windows this run opened.
    pub windows_opened: u32,
    /// True if some due expiries were put off because the event queue was
    /// full (they run on a later call, once the journal has drained it).
    pub deferred: bool,
    /// True if this run stopped after looking at [`EXPIRY_BATCH_MAX`]
    /// holds with more due: call [`Expirer::run`] again at once rather
    /// than after the usual interval.
    pub batch_full: bool,
}

/// Expires holds and reclaims slots. Exactly one exists per engine; call
/// [`Expirer::run`] every few milliseconds from one thread.
pub struct Expirer {
    engine: Arc<Engine>,
    next: Box<[u32]>,
    prev: Box<[u32]>,
    /// Bucket a slot is linked in, `OUTSIDE_WHEEL`, or `NONE`.
    bucket_of: Box<[u32]>,
    heads: Box<[u32]>,
    mask: u64,
    tick_ms: u64,
    /// First tick whose bucket has not been processed.
    next_tick: u64,
    scheduled: HashSet<SkuIdx>,
    linked: usize,
    /// Runs since the last sweep of all SKUs for scheduled windows.
    runs_since_sweep: u32,
    /// Notices taken from one inbox lane, allocated once at the size of the
    /// largest lane.
    notices: Vec<u64>,
    /// Slots freed during a run, given back to the free list in runs (at
    /// the latest when `run` returns).
    freed: FreeBatch,
}

impl std::fmt::Debug for Expirer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Expirer")
            .field("linked", &self.linked)
            .field("next_tick", &self.next_tick)
            .finish()
    }
}

impl Expirer {
    pub(crate) fn new(engine: Arc<Engine>) -> Self {
        let slots = engine.holds.capacity() as usize;
        let buckets = engine.config().expiry_wheel_buckets as usize;
        let tick_ms = engine.config().expiry_tick_ms;
        // One tick back, so holds already past due (restored after downtime)
        // are filed in a bucket the very first run processes.
        let next_tick = (engine.now_ms() / tick_ms).saturating_sub(1);
        Self {
            next: vec![NONE; slots].into(),
            prev: vec![NONE; slots].into(),
            bucket_of: vec![NONE; slots].into(),
            heads: vec![NONE; buckets].into(),
            mask: buckets as u64 - 1,
            tick_ms,
            next_tick,
            scheduled: HashSet::new(),
            linked: 0,
            runs_since_sweep: 0,
            freed: engine.holds.free_batch(),
            notices: Vec::with_capacity(
                engine
                    .inbox
                    .lanes()
                    .iter()
                    .map(|l| l.capacity())
                    .max()
                    .unwrap_or(0),
            ),
            engine,
        }
    }

    /// The engine this expirer serves.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Holds currently tracked by the wheel (live or awaiting reclaim).
    pub fn tracked(&self) -> usize {
        self.linked
    }

    /// Expires due holds, reclaims finished ones, opens due sale windows
    /// and ages out old request ids, at the engine clock's current time.
    pub fn run(&mut self) -> ExpiryReport {
        let now = self.engine.now_ms();
        let mut report = ExpiryReport::default();
        self.engine.requests.rotate(now);
        self.open_windows(now, &mut report);
        self.drain_inbox(&mut report);
        self.expire_due(now, &mut report);
        self.engine.holds.free_now(&mut self.freed);
        report
    }

    fn open_windows(&mut self, now: u64, report: &mut ExpiryReport) {
        while let Some(index) = self.engine.scheduled.pop() {
            self.scheduled.insert(SkuIdx(index));
        }
        // The scheduled queue can overflow if every SKU is rescheduled
        // between two runs; a rare full sweep catches anything missed.
        self.runs_since_sweep += 1;
        if self.runs_since_sweep >= RUNS_PER_WINDOW_SWEEP {
            self.runs_since_sweep = 0;
            let found: Vec<SkuIdx> = self
                .engine
                .snapshots()
                .into_iter()
                .filter(|s| matches!(s.window, crate::SaleWindow::Scheduled { .. }))
                .map(|s| s.sku)
                .collect();
            self.scheduled.extend(found);
        }
        let engine = &self.engine;
        self.scheduled
            .retain(|&sku| match engine.open_if_due(sku, now) {
                Some(true) => {
                    report.windows_opened += 1;
                    false
                }
                Some(false) => true,
                None => false,
            });
    }

    fn drain_inbox(&mut self, report: &mut ExpiryReport) {
        let engine = self.engine.clone();
        let mut notices = std::mem::take(&mut self.notices);
        for lane in engine.inbox.lanes() {
            // One claim per lane for what it holds now, bounded by its
            // capacity so a busy engine cannot keep this loop going for
            // ever. A slot's notices are all in one lane, in order, so lanes
            // may be drained one after another.
            notices.clear();
            lane.pop_into(&mut notices, lane.capacity());
            for &notice in &notices {
                match Notice::decode(notice) {
                    Notice::Unlink { slot } => {
                        self.unlink(slot);
                        self.engine.free_hold_slots(slot, &mut self.freed);
                        report.freed_slots += 1;
                    }
                    Notice::Link { slot, .. } if self.has_ended(slot) => {
                        // Ended before the expirer ever saw it (a commit
                        // right after the reservation): nothing to expire,
                        // so it skips the wheel and waits for its unlink
                        // notice.
                        self.bucket_of[slot as usize] = OUTSIDE_WHEEL;
                        self.linked += 1;
                    }
                    Notice::Link { slot, tick } => self.link(slot, tick),
                }
            }
        }
        self.notices = notices;
    }

    fn link(&mut self, slot: u32, tick: u64) {
        debug_assert_eq!(
            self.bucket_of[slot as usize], NONE,
            "slot {slot} linked twice"
        );
        let bucket = (tick.max(self.next_tick) & self.mask) as u32;
        let head = self.heads[bucket as usize];
        self.next[slot as usize] = head;
        self.prev[slot as usize] = NONE;
        if head != NONE {
            self.prev[head as usize] = slot;
        }
        self.heads[bucket as usize] = slot;
        self.bucket_of[slot as usize] = bucket;
        self.linked += 1;
    }

    /// Whether the hold whose link notice names `slot` has already ended
    /// (committed, released, or expired on someone's commit / release /
    /// extend path). Its ender pushes an unlink notice after the link
    /// notice: only the expirer ends holds without one, and only holds in
    /// its wheel.
    fn has_ended(&self, slot: u32) -> bool {
        // Relaxed: the state only chooses where the slot waits for its
        // unlink notice, and either place is correct: a stale HELD or
        // RESERVING files it in the wheel, where the notice finds it too.
        let word = self.engine.holds.slot(slot).word.load(Ordering::Relaxed);
        matches!(
            hold::state(word),
            COMMITTING | COMMITTED | RELEASED | EXPIRED
        )
    }

    fn unlink(&mut self, slot: u32) {
        let bucket = self.bucket_of[slot as usize];
        assert_ne!(
            bucket, NONE,
            "unlink of slot {slot} that is not linked: inbox order broken"
        );
        if bucket == OUTSIDE_WHEEL {
            self.bucket_of[slot as usize] = NONE;
            self.linked -= 1;
            return;
        }
        let (prev, next) = (self.prev[slot as usize], self.next[slot as usize]);
        if prev == NONE {
            self.heads[bucket as usize] = next;
        } else {
            self.next[prev as usize] = next;
        }
        if next != NONE {
            self.prev[next as usize] = prev;
        }
        self.bucket_of[slot as usize] = NONE;
        self.next[slot as usize] = NONE;
        self.prev[slot as usize] = NONE;
        self.linked -= 1;
    }

    /// Walks the buckets of the ticks that have fully elapsed, looking at
    /// no more than [`EXPIRY_BATCH_MAX`] holds: after a long pause a whole
    /// wheel turn may be due, and the rest waits for the next call
    /// (`batch_full`), so one call never stalls its thread for long.
    fn expire_due(&mut self, now: u64, report: &mut ExpiryReport) {
        let now_tick = now / self.tick_ms;
        let buckets = self.mask + 1;
        // Only ticks that have fully elapsed: every deadline in them is due.
        let end = now_tick.min(self.next_tick + buckets);
        let mut visited = 0;
        let mut tick = self.next_tick;
        while tick < end {
            let bucket = (tick & self.mask) as usize;
            // Detached first: a visit may link a slot back into this very
            // bucket (due a whole turn later), and must not meet it again.
            let mut slot = std::mem::replace(&mut self.heads[bucket], NONE);
            while slot != NONE {
                if visited == EXPIRY_BATCH_MAX {
                    report.batch_full = true;
                    self.put_back(bucket, slot);
                    // Stay on this tick: the rest are looked at next call.
                    self.next_tick = tick;
                    return;
                }
                visited += 1;
                let next = self.next[slot as usize];
                self.bucket_of[slot as usize] = NONE;
                self.next[slot as usize] = NONE;
                self.prev[slot as usize] = NONE;
                self.linked -= 1;
                if !self.visit(slot, now, now_tick, report) {
                    report.deferred = true;
                    self.link(slot, tick);
                    self.put_back(bucket, next);
                    // Stay on this tick: the rest are retried next call.
                    self.next_tick = tick;
                    return;
                }
                slot = next;
            }
            tick += 1;
        }
        self.next_tick = self.next_tick.max(now_tick);
    }

    /// Puts `rest`, the part of `bucket`'s detached list not yet looked at
    /// (still linked to each other and counted in `linked`), back into the
    /// bucket after the slots linked into it meanwhile: O(those), not
    /// O(rest).
    fn put_back(&mut self, bucket: usize, rest: u32) {
        if rest == NONE {
            return;
        }
        let mut tail = self.heads[bucket];
        if tail == NONE {
            self.prev[rest as usize] = NONE;
            self.heads[bucket] = rest;
            return;
        }
        while self.next[tail as usize] != NONE {
            tail = self.next[tail as usize];
        }
        self.next[tail as usize] = rest;
        self.prev[rest as usize] = tail;
    }

    /// Handles one slot found in a due bucket. Returns false if it could not
    /// be expired for lack of event-queue room.
    fn visit(&mut self, slot: u32, now: u64, now_tick: u64, report: &mut ExpiryReport) -> bool {
        let table = &self.engine.holds;
        // Acquire: pairs with the hold's Release publish (fields follow).
        let word = table.slot(slot).word.load(Ordering::Acquire);
        match hold::state(word) {
            HELD => {
                if hold::deadline(word) <= now && !self.engine.admits_events() {
                    return false;
                }
                let generation = hold::generation(word);
                match table.slot(slot).transition(generation, To::Expire, now) {
                    Ok(Won::Expired) => {
                        let (_, units) = self.engine.apply_ending(slot, Ending::Expire, now);
                        report.expired_holds += 1;
                        report.expired_units += u64::from(units);
                        self.engine.free_hold_slots(slot, &mut self.freed);
                        report.freed_slots += 1;
                    }
                    Err(Lost::NotDue(deadline_ms)) => {
                        self.link(slot, deadline_ms.div_ceil(self.tick_ms))
                    }
                    // Someone else ended it just now: its unlink notice is on
                    // the way; keep it linked until then.
                    _ => self.link(slot, now_tick),
                }
            }
            // Ended by commit/release, or still being filled: the unlink
            // notice (or the publish) is on its way.
            RESERVING | COMMITTING | COMMITTED | RELEASED | EXPIRED => self.link(slot, now_tick),
            other => unreachable!("slot {slot} in the wheel with state {other}"),
        }
        true
    }
}
