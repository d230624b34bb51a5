//! Idempotency: remembers the first outcome of each request id for a bounded
//! window, in two fixed-capacity, lock-free, open-addressed tables.
//!
//! Time is cut into epochs of half the window. Inserts go to the table of the
//! current epoch's parity; lookups check both. An entry is live while its
//! epoch tag is the current or the previous epoch, so it is remembered for at
//! least one window and at most two, and stale entries are simply overwritten:
//! no clearing pass, no allocation. Within one epoch a position only ever
//! goes from free to taken, so two threads claiming the same key meet at the
//! same position. For the rare claim that straddles an epoch change, every
//! claim is re-verified against both tables after the CAS (a Dekker-style
//! check with a `SeqCst` fence): if two claims of one key see each other,
//! both back off and report `InProgress`, so at most one ever proceeds.
//!
//! A claimed position still carries the previous occupant's outcome until
//! ours is recorded, so `record` writes the outcome first and then `owner`
//! (the key it belongs to, Release); a reader trusts an outcome only when
//! `owner` equals the key it found.
//!
//! # Provisional answers
//!
//! In durable mode a reservation is only acknowledged once its write is in
//! Redis, but its answer is remembered at once so a retry does not reserve
//! twice. Such an answer is recorded *provisional* (outcome tag
//! [`OUTCOME_PROVISIONAL`]): a replay of it must wait for the original's
//! write before it may be acknowledged. Two callers then race on the one
//! outcome word with a CAS, and exactly one wins:
//!
//! - [`RequestTable::confirm`] (the write is durable: the original, or a
//!   replay after its wait) moves it provisional -> final;
//! - [`RequestTable::withdraw`] (the original's write timed out) moves it
//!   provisional -> pending ("being undone": replays answer `InProgress`);
//!   the caller releases the hold, then forgets the entry so a retry runs
//!   afresh.
//!
//! The outcome word carries the hold id, which is never reused for another
//! reservation, so a confirm or withdraw that comes late can never act on a
//! later answer to the same request id (no ABA).

use crate::answer::Reservation;
use crate::buyer_limit::mix64;
use crate::error::{HoldError, ReserveError};
use crate::hold::{HOLD_ID_BITS, HoldId};
use crate::limits::PROBE_WINDOW;
use crate::sync::{AtomicU64, Ordering, fence};

/// A client-chosen request id, hashed by the gateway with a keyed hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId(pub u64);

const HASH_BITS: u32 = 48;
const HASH_MASK: u64 = (1 << HASH_BITS) - 1;
const TAG_MASK: u64 = 0xffff;

/// An outcome word's top two bits say what kind of answer it holds; the
/// other 62 are its payload (a hold id, units sold, an error's raw code).
const OUTCOME_TAG_SHIFT: u32 = 62;
/// No answer (tag 0): never recorded. With `owner == key` it means the
/// provisional answer is being withdrawn (see the module docs).
const PENDING: u64 = 0;
/// A success; the payload is the operation's result.
const OUTCOME_OK: u64 = 1 << OUTCOME_TAG_SHIFT;
/// A refusal; the payload is the error's raw code (`to_raw`).
const OUTCOME_ERR: u64 = 2 << OUTCOME_TAG_SHIFT;
/// A successful reservation whose durable write is not confirmed yet; the
/// payload is the hold id.
const OUTCOME_PROVISIONAL: u64 = 3 << OUTCOME_TAG_SHIFT;
/// The payload bits of an outcome word.
const OUTCOME_PAYLOAD: u64 = (1 << OUTCOME_TAG_SHIFT) - 1;
const _: () = assert!(
    HOLD_ID_BITS <= OUTCOME_TAG_SHIFT,
    "a hold id fits the payload"
);

// ----- outcome words ------------------------------------------------------
//
// The encoding is persisted (the journal keeps remembered answers in Redis
// as `RequestDone.outcome`): tags and payloads never change meaning.

/// A reservation's answer: its hold, provisional or final.
#[inline]
pub(crate) fn reservation_outcome(hold: HoldId, provisional: bool) -> u64 {
    let tag = if provisional {
        OUTCOME_PROVISIONAL
    } else {
        OUTCOME_OK
    };
    tag | hold.to_raw()
}

/// A hold operation's success: units sold (commit), or 0.
#[inline]
pub(crate) fn success_outcome(payload: u64) -> u64 {
    debug_assert_eq!(payload & !OUTCOME_PAYLOAD, 0);
    OUTCOME_OK | payload
}

/// A refusal, by its raw code (`ReserveError::to_raw`, `HoldError::to_raw`).
#[inline]
pub(crate) fn refusal_outcome(raw: u64) -> u64 {
    debug_assert_eq!(raw & !OUTCOME_PAYLOAD, 0);
    OUTCOME_ERR | raw
}

/// The final form of an outcome: a provisional success becomes a success;
/// anything else is already final.
#[inline]
pub(crate) fn settled(outcome: u64) -> u64 {
    if outcome & !OUTCOME_PAYLOAD == OUTCOME_PROVISIONAL {
        OUTCOME_OK | outcome & OUTCOME_PAYLOAD
    } else {
        outcome
    }
}

/// A remembered reservation answer, replayed.
pub(crate) fn decode_reservation(r: Recorded) -> Result<Reservation, ReserveError> {
    let tag = r.outcome & !OUTCOME_PAYLOAD;
    if tag == OUTCOME_OK || tag == OUTCOME_PROVISIONAL {
        let hold = HoldId::from_raw(r.outcome & OUTCOME_PAYLOAD).ok_or(ReserveError::Invalid)?;
        Ok(Reservation {
            hold,
            deadline_ms: r.deadline_ms,
            units: r.aux,
            replayed: true,
            provisional: tag == OUTCOME_PROVISIONAL,
        })
    } else {
        Err(ReserveError::from_raw(r.outcome & OUTCOME_PAYLOAD))
    }
}

/// A remembered hold operation's answer: its payload, or its refusal.
pub(crate) fn decode_hold(outcome: u64) -> Result<u64, HoldError> {
    if outcome & !OUTCOME_PAYLOAD == OUTCOME_OK {
        Ok(outcome & OUTCOME_PAYLOAD)
    } else {
        Err(HoldError::from_raw(outcome & OUTCOME_PAYLOAD))
    }
}

/// What was remembered about a finished request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Recorded {
    pub(crate) outcome: u64,
    pub(crate) deadline_ms: u64,
    pub(crate) aux: u32,
}

#[derive(Debug)]
pub(crate) enum Claim<'a> {
    /// First time: run the request, then `record` or `abandon` the ticket.
    New(Ticket<'a>),
    /// Seen before: this is how it ended.
    Done(Recorded),
    /// Seen before and still running.
    InProgress,
    /// Seen before with a different fingerprint.
    Mismatch,
    /// No room in the probe window.
    Full,
}

/// How [`RequestTable::withdraw`] ended.
#[derive(Debug)]
pub(crate) enum Withdrawal<'a> {
    /// The provisional answer is withdrawn: replays now answer
    /// `InProgress`. Undo the operation, then `forget` the entry.
    Withdrawn(Withdrawn<'a>),
    /// A confirm won: the answer is final and stays; nothing changed.
    Confirmed,
    /// No such provisional answer (none recorded, aged out, or another).
    Absent,
}

/// A withdrawn answer whose entry is still taken; [`Withdrawn::forget`]
/// frees it once the operation is undone.
#[derive(Debug)]
#[must_use]
pub(crate) struct Withdrawn<'a> {
    entry: &'a Entry,
    key: u64,
}

impl Withdrawn<'_> {
    /// Frees the entry, so a retry of the request runs afresh.
    pub(crate) fn forget(self) {
        self.entry.clear(self.key);
    }
}

#[derive(Debug)]
struct Entry {
    /// `epoch_tag:16 | hash:48`, 0 when never used.
    key: AtomicU64,
    /// The key whose outcome `outcome`, `meta` and `deadline_ms` hold;
    /// written last by `record`.
    owner: AtomicU64,
    /// `fingerprint:32 | aux:32`.
    meta: AtomicU64,
    deadline_ms: AtomicU64,
    /// The recorded outcome, valid only when `owner == key`. Changed after
    /// the record only by `confirm` and `withdraw` (provisional answers).
    outcome: AtomicU64,
}

impl Entry {
    /// Frees a recorded entry under `key` (it must be the one found with
    /// `owner == key`). Only `Withdrawn::forget` does this; the entry
    /// cannot have been reused meanwhile, because a recorded key only frees
    /// by this or by aging out, a window later.
    fn clear(&self, key: u64) {
        // Relaxed: clear the owner first so a later claim of the same key
        // at this position cannot read this record as its own; ordered
        // before the position becomes claimable by the Release below.
        self.owner.store(0, Ordering::Relaxed);
        // Release: orders the owner reset before the position becomes
        // claimable (a claimer's CAS on `key` reads this value).
        let _ = self
            .key
            .compare_exchange(key, 0, Ordering::Release, Ordering::Relaxed);
    }
}

/// A claimed entry; must be recorded or abandoned.
#[derive(Debug)]
#[must_use]
pub(crate) struct Ticket<'a> {
    entry: &'a Entry,
    key: u64,
    fingerprint: u32,
}

impl Ticket<'_> {
    /// The fingerprint the request was claimed with.
    pub(crate) fn fingerprint(&self) -> u32 {
        self.fingerprint
    }

    /// Remembers the outcome. `outcome` must not be `PENDING`.
    pub(crate) fn record(self, outcome: u64, deadline_ms: u64, aux: u32) {
        debug_assert_ne!(outcome, PENDING);
        // Relaxed: published by the Release store of `owner` below.
        self.entry.meta.store(
            u64::from(self.fingerprint) << 32 | u64::from(aux),
            Ordering::Relaxed,
        );
        self.entry.deadline_ms.store(deadline_ms, Ordering::Relaxed);
        self.entry.outcome.store(outcome, Ordering::Relaxed);
        // Release: pairs with the Acquire load in `inspect`, which then sees
        // the three stores above.
        self.entry.owner.store(self.key, Ordering::Release);
    }

    /// Forgets the claim (transient refusal): a retry runs afresh.
    pub(crate) fn abandon(self) {
        // Release: orders our earlier writes before the position is reused.
        self.entry.key.store(0, Ordering::Release);
    }
}

#[derive(Debug)]
pub(crate) struct RequestTable {
    tables: [Box<[Entry]>; 2],
    mask: usize,
    epoch: AtomicU64,
    epoch_started_ms: AtomicU64,
    epoch_ms: u64,
}

impl RequestTable {
    pub(crate) fn new(capacity: u32, window_ms: u64, now_ms: u64) -> Self {
        let size = (capacity as usize).next_power_of_two().max(PROBE_WINDOW);
        let table = || -> Box<[Entry]> {
            (0..size)
                .map(|_| Entry {
                    key: AtomicU64::new(0),
                    owner: AtomicU64::new(0),
                    meta: AtomicU64::new(0),
                    deadline_ms: AtomicU64::new(0),
                    outcome: AtomicU64::new(PENDING),
                })
                .collect()
        };
        Self {
            tables: [table(), table()],
            mask: size - 1,
            // Start at 2 so that tag 0 (never used) is never "previous".
            epoch: AtomicU64::new(2),
            epoch_started_ms: AtomicU64::new(now_ms),
            epoch_ms: (window_ms / 2).max(1),
        }
    }

    /// Advances the epoch when half a window has passed. Called by the
    /// expirer; entries older than two epochs become free positions.
    pub(crate) fn rotate(&self, now_ms: u64) {
        // Relaxed: only the expirer writes these; readers of `epoch` need no
        // data from the rotation, only its value (see `claim`).
        let started = self.epoch_started_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(started) >= self.epoch_ms {
            self.epoch_started_ms.store(now_ms, Ordering::Relaxed);
            self.epoch.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// 48 well-mixed bits of the request id, never 0 (0 marks a free
    /// position), so ids that differ only in high bits do not collide.
    fn hash(request: u64) -> u64 {
        (mix64(request ^ 0x9e37_79b9_7f4a_7c15) & HASH_MASK).max(1)
    }

    fn tag(epoch: u64) -> u64 {
        (epoch & TAG_MASK) << HASH_BITS
    }

    fn live_key(epoch: u64, hash: u64) -> u64 {
        Self::tag(epoch) | hash
    }

    fn window(&self, table: usize, hash: u64) -> impl Iterator<Item = &Entry> {
        let start = mix64(hash) as usize & self.mask;
        let entries = &self.tables[table];
        (0..PROBE_WINDOW).map(move |i| &entries[(start + i) & self.mask])
    }

    fn inspect(entry: &Entry, key: u64, fingerprint: u32) -> Claim<'static> {
        // Acquire: pairs with `record`'s Release store of `owner`, so the
        // fields read next are that record's.
        if entry.owner.load(Ordering::Acquire) != key {
            return Claim::InProgress;
        }
        // Relaxed: synchronised by the `owner` load above. The outcome may
        // be changed by `confirm` / `withdraw` since; any value in its
        // modification order is a valid answer to return (a provisional one
        // is confirmed by its caller before it is acknowledged).
        let outcome = entry.outcome.load(Ordering::Relaxed);
        let meta = entry.meta.load(Ordering::Relaxed);
        let deadline_ms = entry.deadline_ms.load(Ordering::Relaxed);
        // Seqlock-style re-check: a position is reused two epochs after its
        // key was live, or at once after a `forget` (and a new claim of the
        // same key may then land here): make sure neither happened while we
        // read. Only successful reservations are ever forgotten, and their
        // outcomes name distinct holds, so an unchanged outcome rules out a
        // forget-and-reclaim.
        fence(Ordering::Acquire);
        if entry.key.load(Ordering::Relaxed) != key
            || entry.owner.load(Ordering::Relaxed) != key
            || entry.outcome.load(Ordering::Relaxed) != outcome
        {
            return Claim::InProgress;
        }
        if outcome == PENDING {
            // Recorded, then withdrawn: being undone right now.
            return Claim::InProgress;
        }
        if (meta >> 32) as u32 != fingerprint {
            return Claim::Mismatch;
        }
        Claim::Done(Recorded {
            outcome,
            deadline_ms,
            aux: meta as u32,
        })
    }

    /// Looks up or claims `request`. `fingerprint` identifies the request's
    /// content, so a reused id with other content is caught.
    pub(crate) fn claim(&self, request: u64, fingerprint: u32) -> Claim<'_> {
        let hash = Self::hash(request);
        // SeqCst: one order of epoch changes for all claims and `rotate`;
        // two claims of one key under different epochs are kept apart by
        // the Dekker check below (its fence).
        let epoch = self.epoch.load(Ordering::SeqCst);
        let current = (epoch & 1) as usize;
        let previous = current ^ 1;
        let cur_key = Self::live_key(epoch, hash);
        let prev_key = Self::live_key(epoch.wrapping_sub(1), hash);

        // 1. Seen in the previous epoch?
        for entry in self.window(previous, hash) {
            // SeqCst: these loads pair with other claimers' SeqCst CAS in
            // the final verification (see module docs).
            if entry.key.load(Ordering::SeqCst) == prev_key {
                return Self::inspect(entry, prev_key, fingerprint);
            }
        }
        // 2. Seen in this epoch, or claim the first free position.
        let cur_tag = Self::tag(epoch);
        let mut claimed = None;
        'probe: for entry in self.window(current, hash) {
            let mut seen = entry.key.load(Ordering::SeqCst);
            loop {
                if seen == cur_key {
                    return Self::inspect(entry, cur_key, fingerprint);
                }
                let free = seen == 0 || seen & !HASH_MASK != cur_tag;
                if !free {
                    continue 'probe;
                }
                // SeqCst on success: the store half of the Dekker check.
                // On failure we re-examine the same position (SeqCst load).
                match entry
                    .key
                    .compare_exchange(seen, cur_key, Ordering::SeqCst, Ordering::SeqCst)
                {
                    Ok(_) => {
                        claimed = Some(entry);
                        break 'probe;
                    }
                    Err(actual) => seen = actual,
                }
            }
        }
        let Some(mine) = claimed else {
            return Claim::Full;
        };
        // SeqCst fence: the middle of the Dekker check, between our CAS and
        // the loads below. Two claimers each store (CAS), fence, then load:
        // the one whose fence comes second in the single total order sees
        // the other's key. (SeqCst accesses alone would do in the C++
        // model; loom checks the fence form, and a claim with a new id
        // can afford the one fence.)
        fence(Ordering::SeqCst);
        // 3. Verify no other live claim of this key exists anywhere (a claim
        // made under another epoch). Either we see theirs or they see ours.
        for table in [current, previous] {
            for entry in self.window(table, hash) {
                if std::ptr::eq(entry, mine) {
                    continue;
                }
                let k = entry.key.load(Ordering::SeqCst);
                if k == cur_key || k == prev_key || k == Self::live_key(epoch + 1, hash) {
                    // Release: our position becomes free for others; we wrote
                    // nothing else to it.
                    mine.key.store(0, Ordering::Release);
                    return Claim::InProgress;
                }
            }
        }
        Claim::New(Ticket {
            entry: mine,
            key: cur_key,
            fingerprint,
        })
    }

    /// The entry holding `request`'s recorded answer, and its key.
    fn find_recorded(&self, request: u64) -> Option<(&Entry, u64)> {
        let hash = Self::hash(request);
        // Relaxed: callers come after the claim that recorded the answer
        // (same thread, or handed over with synchronisation), so coherence
        // gives an epoch at least as new as the one it was recorded under;
        // there is no Dekker pairing here (nothing is claimed).
        let epoch = self.epoch.load(Ordering::Relaxed);
        for (table, e) in [
            ((epoch & 1) as usize, epoch),
            (((epoch & 1) ^ 1) as usize, epoch.wrapping_sub(1)),
        ] {
            let key = Self::live_key(e, hash);
            for entry in self.window(table, hash) {
                // Acquire (owner): pairs with `record`'s Release, so the
                // outcome our caller compares next is this record's or a
                // later change of it; we never act on a running claim.
                // Relaxed (key): validated by the owner, which `record`
                // writes only after the key is ours.
                if entry.key.load(Ordering::Relaxed) == key
                    && entry.owner.load(Ordering::Acquire) == key
                {
                    return Some((entry, key));
                }
            }
        }
        None
    }

    /// Turns `request`'s provisional answer naming `hold` into a final
    /// one. True if the answer is now, or already was, final with that
    /// hold; false if it is gone, being withdrawn, or another answer.
    pub(crate) fn confirm(&self, request: u64, hold: HoldId) -> bool {
        let provisional = reservation_outcome(hold, true);
        let Some((entry, _)) = self.find_recorded(request) else {
            return false;
        };
        let done = settled(provisional);
        // Relaxed, success and failure: what decides between confirm and
        // withdraw is which RMW comes first in this one word's modification
        // order, which every thread agrees on; no other data is published
        // through it (the record's fields were, by `owner`).
        match entry.outcome.compare_exchange(
            provisional,
            done,
            Ordering::Relaxed,
            Ordering::Relaxed,
        ) {
            Ok(_) => true,
            Err(actual) => actual == done,
        }
    }

    /// Withdraws `request`'s provisional answer naming `hold`, unless a
    /// `confirm` made it final first (see [`Withdrawal`]).
    pub(crate) fn withdraw(&self, request: u64, hold: HoldId) -> Withdrawal<'_> {
        let provisional = reservation_outcome(hold, true);
        let Some((entry, key)) = self.find_recorded(request) else {
            return Withdrawal::Absent;
        };
        // Relaxed, success and failure: see `confirm`. The caller's undo
        // (release, then `forget`) is ordered by its own atomics.
        match entry.outcome.compare_exchange(
            provisional,
            PENDING,
            Ordering::Relaxed,
            Ordering::Relaxed,
        ) {
            Ok(_) => Withdrawal::Withdrawn(Withdrawn { entry, key }),
            Err(actual) if actual == settled(provisional) => Withdrawal::Confirmed,
            Err(_) => Withdrawal::Absent,
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn new_ticket(c: Claim<'_>) -> Ticket<'_> {
        match c {
            Claim::New(t) => t,
            other => panic!("expected a new claim, got {other:?}"),
        }
    }

    #[test]
    fn first_outcome_is_replayed_and_mismatch_caught() {
        let t = RequestTable::new(64, 1000, 0);
        let ticket = new_ticket(t.claim(42, 7));
        assert!(matches!(t.claim(42, 7), Claim::InProgress));
        ticket.record(99, 1234, 5);
        match t.claim(42, 7) {
            Claim::Done(r) => assert_eq!(
                r,
                Recorded {
                    outcome: 99,
                    deadline_ms: 1234,
                    aux: 5
                }
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(t.claim(42, 8), Claim::Mismatch));
    }

    #[test]
    fn abandoned_claims_run_again() {
        let t = RequestTable::new(64, 1000, 0);
        new_ticket(t.claim(1, 1)).abandon();
        new_ticket(t.claim(1, 1)).abandon();
    }

    #[test]
    fn entries_live_one_to_two_windows_then_age_out() {
        let t = RequestTable::new(64, 1000, 0);
        new_ticket(t.claim(5, 1)).record(3, 0, 0);
        t.rotate(499);
        assert!(matches!(t.claim(5, 1), Claim::Done(_)), "same epoch");
        t.rotate(500);
        assert!(
            matches!(t.claim(5, 1), Claim::Done(_)),
            "previous epoch still remembered"
        );
        t.rotate(1000);
        new_ticket(t.claim(5, 1)).record(4, 0, 0);
    }

    #[test]
    fn full_window_refuses() {
        let t = RequestTable::new(1, 1000, 0);
        let mut n = 0u64;
        let mut kept = Vec::new();
        // Fill every position of one window by finding keys that share it.
        let target = mix64(1) as usize & t.mask;
        for key in 1.. {
            if mix64(key) as usize & t.mask == target {
                match t.claim(key, 0) {
                    Claim::New(ticket) => kept.push(ticket),
                    Claim::Full => break,
                    other => panic!("{other:?}"),
                }
                n += 1;
            }
            assert!(n <= PROBE_WINDOW as u64 + 1);
        }
        assert_eq!(kept.len(), PROBE_WINDOW.min(t.mask + 1));
        for k in kept {
            k.abandon();
        }
    }

    const HOLD_A: u64 = 0x0040_0000_0100_0002;
    const HOLD_B: u64 = 0x0040_0000_0200_0002;

    fn hold(raw: u64) -> HoldId {
        HoldId::from_raw(raw).unwrap()
    }

    fn done(c: Claim<'_>) -> u64 {
        match c {
            Claim::Done(r) => r.outcome,
            other => panic!("expected a recorded answer, got {other:?}"),
        }
    }

    #[test]
    fn settled_turns_only_provisional_answers_final() {
        assert_eq!(settled(OUTCOME_PROVISIONAL | HOLD_A), OUTCOME_OK | HOLD_A);
        assert_eq!(settled(OUTCOME_OK | HOLD_A), OUTCOME_OK | HOLD_A);
        assert_eq!(settled(OUTCOME_ERR | 2), OUTCOME_ERR | 2);
    }

    #[test]
    fn a_confirmed_answer_is_final_and_cannot_be_withdrawn() {
        let t = RequestTable::new(64, 1000, 0);
        new_ticket(t.claim(7, 1)).record(OUTCOME_PROVISIONAL | HOLD_A, 50, 1);
        assert_eq!(done(t.claim(7, 1)), OUTCOME_PROVISIONAL | HOLD_A);
        assert!(!t.confirm(7, hold(HOLD_B)), "another hold's confirm");
        assert!(t.confirm(7, hold(HOLD_A)));
        assert!(t.confirm(7, hold(HOLD_A)), "already final");
        assert_eq!(done(t.claim(7, 1)), OUTCOME_OK | HOLD_A);
        assert!(matches!(t.withdraw(7, hold(HOLD_A)), Withdrawal::Confirmed));
        assert_eq!(done(t.claim(7, 1)), OUTCOME_OK | HOLD_A, "unchanged");
        assert!(!t.confirm(8, hold(HOLD_A)), "unknown id");
    }

    #[test]
    fn a_withdrawn_answer_is_in_progress_then_forgotten() {
        let t = RequestTable::new(64, 1000, 0);
        new_ticket(t.claim(7, 1)).record(OUTCOME_PROVISIONAL | HOLD_A, 50, 1);
        assert!(matches!(t.withdraw(7, hold(HOLD_B)), Withdrawal::Absent));
        let Withdrawal::Withdrawn(w) = t.withdraw(7, hold(HOLD_A)) else {
            panic!("the first withdraw wins");
        };
        assert!(matches!(t.claim(7, 1), Claim::InProgress), "being undone");
        assert!(!t.confirm(7, hold(HOLD_A)), "undo won");
        assert!(matches!(t.withdraw(7, hold(HOLD_A)), Withdrawal::Absent));
        w.forget();
        assert!(!t.confirm(7, hold(HOLD_A)), "gone");
        let retry = new_ticket(t.claim(7, 1));
        retry.record(OUTCOME_PROVISIONAL | HOLD_B, 60, 1);
        assert!(
            !t.confirm(7, hold(HOLD_A)),
            "a late confirm never acts on the retry's answer"
        );
        assert!(t.confirm(7, hold(HOLD_B)));
    }

    #[test]
    fn concurrent_duplicates_run_at_most_once() {
        use std::sync::Arc;
        let t = Arc::new(RequestTable::new(1024, 1000, 0));
        for request in 0..2000u64 {
            let runs: usize = std::thread::scope(|s| {
                let hs: Vec<_> = (0..2)
                    .map(|_| {
                        let t = &t;
                        s.spawn(move || match t.claim(request, 0) {
                            Claim::New(ticket) => {
                                ticket.record(1, 0, 0);
                                1
                            }
                            _ => 0,
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).sum()
            });
            assert!(runs <= 1);
            if request % 100 == 0 {
                t.rotate(request * 10);
            }
        }
    }
}

/// Loom models of claims, epoch rotation and forgetting. Each table has
/// `PROBE_WINDOW` (2 under loom) positions, so a key's window covers it.
/// Two different racers run through [`crate::sync::race`] (both spawn
/// orders, nothing on the main thread).
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::sync::{race, spawn_with as spawn};
    use loom::sync::Arc;

    const REQUEST: u64 = 42;
    const FINGERPRINT: u32 = 7;

    /// A table whose epochs last 1 ms (`rotate(n)` moves to epoch n + 2).
    fn table() -> Arc<RequestTable> {
        Arc::new(RequestTable::new(1, 2, 0))
    }

    /// Claims `REQUEST` and, if this call is the one that runs it, records
    /// `answer`. Returns whether it ran, checking that a replay is told
    /// `earlier` (the answer recorded first) or that it is in progress.
    fn claim_and_run_after(t: &RequestTable, answer: u64, earlier: u64) -> bool {
        match t.claim(REQUEST, FINGERPRINT) {
            Claim::New(ticket) => {
                ticket.record(answer, 0, 0);
                true
            }
            Claim::Done(r) => {
                assert_eq!(r.outcome, earlier, "a replay gets the first answer");
                false
            }
            Claim::InProgress => false,
            other => panic!("a claim of one id saw {other:?}"),
        }
    }

    /// `claim_and_run_after` where any earlier answer is `answer` too.
    fn claim_and_run(t: &RequestTable, answer: u64) -> bool {
        claim_and_run_after(t, answer, answer)
    }

    /// Claims `REQUEST` on two threads at once; returns how many ran it.
    fn two_claims(t: &Arc<RequestTable>) -> usize {
        let claims = [(); 2].map(|()| spawn(t, |t| claim_and_run(t, success_outcome(1))));
        claims
            .into_iter()
            .map(|c| usize::from(c.join().unwrap()))
            .sum()
    }

    /// Two claims of one id at once: exactly one runs; the other is told it
    /// is in progress or gets its answer.
    #[test]
    fn loom_concurrent_claims_of_one_id_run_it_once() {
        loom::model(|| {
            let t = table();
            let runs = two_claims(&t);
            assert_eq!(runs, 1, "exactly one claim runs the request");
            assert!(matches!(t.claim(REQUEST, FINGERPRINT), Claim::Done(_)));
        });
    }

    /// Two claims of one id straddle an epoch change (one inserts in each
    /// table): the Dekker check lets at most one run. The second claim
    /// comes right after the rotation on its thread, so it is always under
    /// the new epoch; the first reads either (both under one epoch is the
    /// model above).
    #[test]
    fn loom_claims_straddling_an_epoch_change_run_at_most_once() {
        race(
            table,
            |t| claim_and_run(t, success_outcome(1)),
            |t| {
                t.rotate(1);
                claim_and_run(t, success_outcome(1))
            },
            |_, first, second| {
                assert!(!(first && second), "both claims ran the request");
            },
        );
    }

    /// A recorded answer outlives one rotation and is gone after two, even
    /// when the claim races the rotation.
    #[test]
    fn loom_an_answer_survives_one_rotation() {
        race(
            || {
                let t = table();
                assert!(claim_and_run(&t, success_outcome(1)));
                t
            },
            |t| t.rotate(1),
            |t| claim_and_run(t, success_outcome(1)),
            |t, (), ran| {
                assert!(!ran, "remembered in its epoch and the next");
                t.rotate(2);
                assert!(
                    claim_and_run(t, success_outcome(2)),
                    "aged out two epochs later: runs afresh"
                );
            },
        );
    }

    /// Undoing a provisional answer (withdraw, then forget once the hold
    /// is released) racing a replay's claim: the replay gets the answer
    /// (before the withdraw), is told it is in progress (being undone), or
    /// runs afresh (after the forget); and whatever ran last is what a
    /// later claim replays.
    #[test]
    fn loom_an_undo_racing_a_claim() {
        const HOLD: u64 = 0x0040_0000_0100_0002;
        let hold = || HoldId::from_raw(HOLD).unwrap();
        let provisional = reservation_outcome(hold(), true);
        race(
            move || {
                let t = table();
                assert!(claim_and_run(&t, provisional));
                t
            },
            move |t| match t.withdraw(REQUEST, hold()) {
                Withdrawal::Withdrawn(w) => w.forget(),
                other => panic!("nobody confirms here: {other:?}"),
            },
            move |t| claim_and_run_after(t, success_outcome(2), provisional),
            |t, (), ran| match (ran, t.claim(REQUEST, FINGERPRINT)) {
                (true, Claim::Done(r)) => assert_eq!(r.outcome, success_outcome(2)),
                (false, Claim::New(ticket)) => ticket.abandon(),
                (ran, later) => panic!("ran {ran}, then a claim saw {later:?}"),
            },
        );
    }
}
