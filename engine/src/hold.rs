//! The hold table: preallocated slots whose one state word decides every
//! race on a hold (commit vs release vs expiry vs extend) with a single CAS.
//!
//! A slot's state word packs `generation:18 | state:4 | deadline_ms:42`.
//! Because the deadline lives in the same word as the state, "is it still
//! live?" and "is it past its deadline?" are answered by one atomic value:
//! an extend that moves the deadline and an expiry that reads the old one can
//! never both succeed. The generation changes on every reuse, so a stale
//! [`HoldId`] can never act on the slot's next hold. A commit is the one
//! ending in two steps: its CAS leaves the head `COMMITTING` while the
//! winner writes each line's units sold, then a store makes it `COMMITTED`;
//! readers wait out the first step, every other caller sees it as committed.
//!
//! A cart uses one slot per line: the head slot carries the state word that
//! decides; line slots hang off it (`next_line`) and are only read by the
//! thread that won the head's CAS. Slots are taken from a bounded lock-free
//! free list and given back only by the expirer (see [`crate::expiry`]), after
//! it has unlinked them from its wheel.
//!
//! This module must never block, allocate after start-up, or read a slot's
//! fields without first validating the generation.

use crate::channel::Source;
use crate::lanes::Lanes;
use crate::limits::{HOLDS_MAX, INCARNATION_BITS, INCARNATIONS, SLOT_READ_TRIES_MAX};
use crate::sync::{AtomicU32, AtomicU64, Backoff, Ordering, fence};
use std::fmt;
use std::str::FromStr;

const DEADLINE_BITS: u32 = 42;
const STATE_BITS: u32 = 4;
const GEN_BITS: u32 = 18;
const DEADLINE_MASK: u64 = (1 << DEADLINE_BITS) - 1;
const STATE_MASK: u64 = (1 << STATE_BITS) - 1;
const GEN_MASK: u32 = (1 << GEN_BITS) - 1;
/// Latest deadline representable (year 2109).
pub const DEADLINE_MAX_MS: u64 = DEADLINE_MASK;
/// Marks "no next line".
pub(crate) const NO_LINE: u32 = u32::MAX;

/// Raw slot states.
pub(crate) const FREE: u64 = 0;
pub(crate) const RESERVING: u64 = 1;
pub(crate) const HELD: u64 = 2;
pub(crate) const LINE: u64 = 3;
pub(crate) const COMMITTED: u64 = 4;
pub(crate) const RELEASED: u64 = 5;
pub(crate) const EXPIRED: u64 = 6;
/// A commit has won the head's CAS and is writing each line's `sold`; the
/// winner moves it to `COMMITTED` once they are written. Readers retry on
/// it (a Committed hold is never shown with its `sold` not yet written);
/// every other caller treats it as `COMMITTED`.
pub(crate) const COMMITTING: u64 = 7;

const _: () = assert!(
    GEN_BITS + STATE_BITS + DEADLINE_BITS == u64::BITS,
    "the state word is exactly full"
);
const _: () = assert!(COMMITTING <= STATE_MASK, "every state fits its field");

#[inline]
pub(crate) fn pack(generation: u32, state: u64, deadline_ms: u64) -> u64 {
    debug_assert!(generation <= GEN_MASK && state <= STATE_MASK && deadline_ms <= DEADLINE_MASK);
    u64::from(generation) << (DEADLINE_BITS + STATE_BITS) | state << DEADLINE_BITS | deadline_ms
}

#[inline]
pub(crate) fn generation(word: u64) -> u32 {
    (word >> (DEADLINE_BITS + STATE_BITS)) as u32
}

#[inline]
pub(crate) fn state(word: u64) -> u64 {
    (word >> DEADLINE_BITS) & STATE_MASK
}

#[inline]
pub(crate) fn deadline(word: u64) -> u64 {
    word & DEADLINE_MASK
}

/// Identifies one hold: `incarnation:12 | node:8 | generation:18 | slot:24`.
/// Stable across restarts (it is persisted) and unique across gateway nodes.
/// The incarnation changes at every start, so an id issued before a restart
/// can never name a hold issued after it in the same slot and generation.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HoldId(u64);

/// Bits of a [`HoldId`] in use.
pub const HOLD_ID_BITS: u32 = 62;

/// A [`HoldId`]'s fields, low to high: slot, generation, node, incarnation.
const ID_SLOT_BITS: u32 = 24;
const ID_NODE_BITS: u32 = 8;
const ID_GEN_SHIFT: u32 = ID_SLOT_BITS;
const ID_NODE_SHIFT: u32 = ID_GEN_SHIFT + GEN_BITS;
const ID_INCARNATION_SHIFT: u32 = ID_NODE_SHIFT + ID_NODE_BITS;
const ID_SLOT_MASK: u64 = (1 << ID_SLOT_BITS) - 1;
const ID_INCARNATION_MASK: u64 = (1 << INCARNATION_BITS) - 1;

const _: () = assert!(
    ID_INCARNATION_SHIFT + INCARNATION_BITS == HOLD_ID_BITS,
    "the fields fill exactly the bits in use"
);
const _: () = assert!(
    HOLDS_MAX as u64 == 1 << ID_SLOT_BITS,
    "every slot has an id"
);
const _: () = assert!(
    INCARNATIONS as u64 == 1 << INCARNATION_BITS,
    "every incarnation has an id"
);
const _: () = assert!(u8::BITS == ID_NODE_BITS, "every node id fits");

impl HoldId {
    pub(crate) fn new(incarnation: u16, node: u8, generation: u32, slot: u32) -> Self {
        debug_assert!(generation <= GEN_MASK && slot < HOLDS_MAX && incarnation < INCARNATIONS);
        Self(
            (u64::from(incarnation) & ID_INCARNATION_MASK) << ID_INCARNATION_SHIFT
                | u64::from(node) << ID_NODE_SHIFT
                | u64::from(generation) << ID_GEN_SHIFT
                | u64::from(slot),
        )
    }

    /// The slot index.
    pub fn slot(self) -> u32 {
        (self.0 & ID_SLOT_MASK) as u32
    }

    /// The slot generation this id was issued for.
    pub fn generation(self) -> u32 {
        ((self.0 >> ID_GEN_SHIFT) as u32) & GEN_MASK
    }

    /// The node that issued it.
    pub fn node(self) -> u8 {
        (self.0 >> ID_NODE_SHIFT) as u8
    }

    /// The engine incarnation (start) that issued it.
    pub fn incarnation(self) -> u16 {
        ((self.0 >> ID_INCARNATION_SHIFT) & ID_INCARNATION_MASK) as u16
    }

    /// The raw 64-bit value (for persistence).
    pub fn to_raw(self) -> u64 {
        self.0
    }

    /// Rebuilds an id from [`HoldId::to_raw`]; `None` if bits outside the
    /// layout are set.
    pub fn from_raw(raw: u64) -> Option<Self> {
        (raw >> HOLD_ID_BITS == 0).then_some(Self(raw))
    }
}

impl fmt::Debug for HoldId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HoldId({self})")
    }
}

/// Printed as 16 lowercase hex digits, e.g. `0040000001000002`.
impl fmt::Display for HoldId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(hex16(self.0).as_str())
    }
}

/// A `u64` as 16 lowercase hex digits, what `{:016x}` writes, without the
/// formatting machinery: ids are written on every reply and journal entry,
/// and padded hex formatting cost several percent of a gateway's CPU.
pub fn hex16(v: u64) -> Hex16 {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = DIGITS[((v >> (60 - 4 * i)) & 0xf) as usize];
    }
    Hex16(out)
}

/// 16 hex digits on the stack (see [`hex16`]).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Hex16([u8; 16]);

impl Hex16 {
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("hex digits are ASCII")
    }
}

impl fmt::Display for Hex16 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Hex16 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Error parsing a [`HoldId`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("hold id must be 16 hex digits")]
pub struct ParseHoldIdError;

impl FromStr for HoldId {
    type Err = ParseHoldIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ParseHoldIdError);
        }
        let raw = u64::from_str_radix(s, 16).map_err(|_| ParseHoldIdError)?;
        Self::from_raw(raw).ok_or(ParseHoldIdError)
    }
}

/// Where a hold stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HoldState {
    /// Live: units held until the deadline.
    Held,
    /// Paid: units sold.
    Committed,
    /// Given up by the buyer: units back on sale.
    Released,
    /// Deadline passed: units back on sale.
    Expired,
}

impl HoldState {
    /// The stable lowercase name used in APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Held => "held",
            Self::Committed => "committed",
            Self::Released => "released",
            Self::Expired => "expired",
        }
    }

    pub(crate) fn from_raw(state: u64) -> Option<Self> {
        match state {
            HELD => Some(Self::Held),
            COMMITTED => Some(Self::Committed),
            RELEASED => Some(Self::Released),
            EXPIRED => Some(Self::Expired),
            _ => None,
        }
    }
}

/// What a caller asks of a live hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum To {
    Commit,
    Release,
    /// Only succeeds once the deadline has passed.
    Expire,
    /// Move the deadline later by this much, up to the slot's `latest_ms`.
    Extend {
        by_ms: u64,
    },
}

/// The CAS on the state word succeeded: the caller now owns the effects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Won {
    /// The slot is `COMMITTING`: the caller writes each line's `sold`,
    /// then calls [`Slot::finish_commit`] before anything else (its unlink
    /// notice included) may see the hold's end.
    Committed,
    Released,
    /// `To::Expire` succeeded.
    Expired,
    /// The deadline had passed, so the caller expired the hold instead of
    /// committing / releasing / extending it; it must apply the expiry's
    /// effects and tell its own caller the hold expired.
    ExpiredInstead,
    /// The hold stays live with this new deadline.
    Extended(u64),
}

/// The CAS was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lost {
    /// No such hold (wrong generation, free slot, or a cart line's id).
    NotFound,
    /// The hold already ended in this state.
    Ended(HoldState),
    /// `To::Expire` on a hold whose deadline has not passed.
    NotDue(u64),
    /// The slot is being filled by a reservation still in flight.
    Reserving,
    /// `To::Extend` past the hold's maximum lifetime.
    ExtendLimit,
}

/// One hold slot. Fields other than `word` are written only while the slot is
/// `RESERVING` (by the reserving thread) or by the thread that won the head's
/// commit (`sold`, while the head is `COMMITTING`), and read only by a thread
/// that has validated the generation through `word`.
#[repr(align(64))]
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) word: AtomicU64,
    pub(crate) sku: AtomicU32,
    pub(crate) qty: AtomicU32,
    pub(crate) buyer: AtomicU64,
    /// Latest deadline extensions may reach (created + lifetime max).
    pub(crate) latest_ms: AtomicU64,
    /// The head's `HoldId` (raw), on the head and on every line.
    pub(crate) owner: AtomicU64,
    /// Next line slot of a cart, or `NO_LINE`.
    pub(crate) next_line: AtomicU32,
    /// Number of lines (head only).
    pub(crate) lines: AtomicU32,
    /// Units committed on this line (set by the commit winner).
    pub(crate) sold: AtomicU32,
    /// 1 if this line's units count against the buyer's limit.
    pub(crate) counted: AtomicU32,
    /// Where the line's units came from ([`Source::pack`]; 0: the pool).
    pub(crate) source: AtomicU32,
}

/// The fields of one line of a hold, written into its slot while the slot
/// is `RESERVING`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fill {
    pub(crate) sku: u32,
    pub(crate) qty: u32,
    pub(crate) buyer: u64,
    pub(crate) latest_ms: u64,
    /// The head's `HoldId` (raw).
    pub(crate) owner: u64,
    pub(crate) next_line: u32,
    pub(crate) lines: u32,
    pub(crate) counted: bool,
    pub(crate) source: Source,
}

impl Slot {
    fn new() -> Self {
        Self {
            word: AtomicU64::new(pack(0, FREE, 0)),
            sku: AtomicU32::new(0),
            qty: AtomicU32::new(0),
            buyer: AtomicU64::new(0),
            latest_ms: AtomicU64::new(0),
            owner: AtomicU64::new(0),
            next_line: AtomicU32::new(NO_LINE),
            lines: AtomicU32::new(0),
            sold: AtomicU32::new(0),
            counted: AtomicU32::new(0),
            source: AtomicU32::new(0),
        }
    }

    /// Writes a line's fields. Only the reserving thread calls this, while
    /// it owns the slot (`RESERVING`, or a line slot of a hold not yet
    /// published).
    #[inline]
    pub(crate) fn fill(&self, f: Fill) {
        // Relaxed field stores: published by the head's Release store in
        // `publish` (line slots are only read through the head).
        self.sku.store(f.sku, Ordering::Relaxed);
        self.qty.store(f.qty, Ordering::Relaxed);
        self.buyer.store(f.buyer, Ordering::Relaxed);
        self.latest_ms.store(f.latest_ms, Ordering::Relaxed);
        self.owner.store(f.owner, Ordering::Relaxed);
        self.next_line.store(f.next_line, Ordering::Relaxed);
        self.lines.store(f.lines, Ordering::Relaxed);
        self.sold.store(0, Ordering::Relaxed);
        self.counted.store(u32::from(f.counted), Ordering::Relaxed);
        self.source.store(f.source.pack(), Ordering::Relaxed);
    }

    /// Publishes a filled head slot as a live hold.
    #[inline]
    pub(crate) fn publish(&self, generation: u32, deadline_ms: u64) {
        // Release: pairs with the Acquire load / CAS in `transition` and
        // `read`, so whoever sees HELD also sees every field of this slot
        // and of its line slots written before this store.
        self.word
            .store(pack(generation, HELD, deadline_ms), Ordering::Release);
    }

    /// Tries one transition of a live hold with the given generation, at
    /// time `now_ms`. Exactly one of any set of racing callers wins.
    #[inline]
    pub(crate) fn transition(&self, generation: u32, to: To, now_ms: u64) -> Result<Won, Lost> {
        // Acquire: pairs with `publish`'s Release so that, having won, we
        // read the fields the reserving thread wrote.
        let mut current = self.word.load(Ordering::Acquire);
        loop {
            if self::generation(current) != generation {
                return Err(Lost::NotFound);
            }
            let due = deadline(current);
            let next = match state(current) {
                HELD if now_ms >= due => pack(generation, EXPIRED, due),
                HELD => match to {
                    To::Commit => pack(generation, COMMITTING, due),
                    To::Release => pack(generation, RELEASED, due),
                    To::Expire => return Err(Lost::NotDue(due)),
                    To::Extend { by_ms } => {
                        // Relaxed: published with the word we Acquired; if
                        // the slot was reused since, the CAS below fails.
                        let latest = self.latest_ms.load(Ordering::Relaxed);
                        let new_due = due.saturating_add(by_ms);
                        if new_due > latest || new_due > DEADLINE_MAX_MS {
                            return Err(Lost::ExtendLimit);
                        }
                        pack(generation, HELD, new_due)
                    }
                },
                RESERVING => return Err(Lost::Reserving),
                // The commit is decided; only its `sold` writes are running.
                COMMITTING => return Err(Lost::Ended(HoldState::Committed)),
                s => match HoldState::from_raw(s) {
                    Some(ended) => return Err(Lost::Ended(ended)),
                    None => return Err(Lost::NotFound),
                },
            };
            let won = match (state(next), to) {
                (EXPIRED, To::Expire) => Won::Expired,
                (EXPIRED, _) => Won::ExpiredInstead,
                (COMMITTING, _) => Won::Committed,
                (RELEASED, _) => Won::Released,
                _ => Won::Extended(deadline(next)),
            };
            // Success Acquire: as for the load above (the winner reads the
            // fields next). Success needs no Release: the winner's later
            // effects are published to the expirer through its inbox queue.
            // Failure Acquire: we loop and may read fields on the next try.
            match self
                .word
                .compare_exchange(current, next, Ordering::Acquire, Ordering::Acquire)
            {
                Ok(_) => {
                    if won == Won::Committed {
                        // Seqlock writer side, as in `HoldTable::alloc`:
                        // the winner writes `sold` next, and a reader that
                        // sees one of those writes, followed by its Acquire
                        // fence, then sees this CAS's word and discards its
                        // copy (no Held hold is shown with units sold).
                        fence(Ordering::Release);
                    }
                    return Ok(won);
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// Ends a commit this thread won (`Won::Committed`): the lines' `sold`
    /// are written, so the hold may now be read as Committed.
    #[inline]
    pub(crate) fn finish_commit(&self, generation: u32) {
        // Relaxed load: only the commit's winner writes a COMMITTING word
        // (every CAS refuses it, and the slot is not freed before the
        // winner's unlink notice), so this reads our own CAS's value.
        let word = self.word.load(Ordering::Relaxed);
        debug_assert_eq!(
            (self::generation(word), state(word)),
            (generation, COMMITTING),
            "finish_commit without winning the commit"
        );
        // Release: pairs with the Acquire load in `read`, so a reader that
        // sees COMMITTED also sees every line's `sold` written before this.
        self.word.store(
            pack(generation, COMMITTED, deadline(word)),
            Ordering::Release,
        );
    }

    /// Seqlock read of this slot: a copy whose fields all belong to the
    /// state word it carries, or `None` if writers kept it changing. A
    /// commit still writing its `sold` (`COMMITTING`) is waited for like a
    /// change in flight, so no copy ever shows a Committed hold before its
    /// units sold are written.
    pub(crate) fn read(&self) -> Option<SlotView> {
        let backoff = Backoff::new();
        for _ in 0..SLOT_READ_TRIES_MAX {
            // Acquire: pairs with `publish` (fields of a live hold) and
            // with `finish_commit` (the lines' `sold`).
            let word = self.word.load(Ordering::Acquire);
            if state(word) != COMMITTING {
                // Relaxed field loads, validated by the fence and re-read
                // below.
                let view = SlotView {
                    word,
                    sku: self.sku.load(Ordering::Relaxed),
                    qty: self.qty.load(Ordering::Relaxed),
                    buyer: self.buyer.load(Ordering::Relaxed),
                    latest_ms: self.latest_ms.load(Ordering::Relaxed),
                    owner: self.owner.load(Ordering::Relaxed),
                    next_line: self.next_line.load(Ordering::Relaxed),
                    lines: self.lines.load(Ordering::Relaxed),
                    sold: self.sold.load(Ordering::Relaxed),
                    source: self.source.load(Ordering::Relaxed),
                };
                // Acquire fence: pairs with `alloc`'s Release fence, so if
                // any field came from a newer owner, the re-read sees the
                // new word.
                fence(Ordering::Acquire);
                if self.word.load(Ordering::Relaxed) == word {
                    return Some(view);
                }
            }
            backoff.snooze();
        }
        None
    }
}

/// A consistent copy of one slot, read without blocking the writers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlotView {
    pub(crate) word: u64,
    pub(crate) sku: u32,
    pub(crate) qty: u32,
    pub(crate) buyer: u64,
    pub(crate) latest_ms: u64,
    pub(crate) owner: u64,
    pub(crate) next_line: u32,
    pub(crate) lines: u32,
    pub(crate) sold: u32,
    /// The line's [`Source`], packed.
    pub(crate) source: u32,
}

/// Slots the expirer has finished with, per free-list lane, given back a
/// run at a time: one claim on a lane's tail per run instead of one per slot.
#[derive(Debug)]
pub(crate) struct FreeBatch {
    lanes: Box<[Vec<u32>]>,
}

impl FreeBatch {
    /// Most slots held back per lane before its run is given back.
    const RUN_MAX: usize = 256;
}

/// The fixed-capacity table of hold slots and its free list.
#[derive(Debug)]
pub(crate) struct HoldTable {
    slots: Box<[Slot]>,
    /// Free slot indices; slot `i` lives in lane `i % lanes` (see
    /// [`crate::lanes`]), so two threads mostly pop and push different ones.
    free: Lanes<u32>,
    node: u8,
    incarnation: u16,
}

impl HoldTable {
    /// A table whose free list holds every slot except `taken` (slots of
    /// holds being restored), in `lanes` lanes.
    pub(crate) fn new(
        capacity: u32,
        lanes: u32,
        node: u8,
        incarnation: u16,
        taken: &dyn Fn(u32) -> bool,
    ) -> Self {
        assert!((1..=HOLDS_MAX).contains(&capacity));
        let slots: Box<[Slot]> = (0..capacity).map(|_| Slot::new()).collect();
        let n = lanes as usize;
        let free = Lanes::new(n, |lane| crate::lanes::share(capacity as usize, n, lane));
        for i in (0..capacity).filter(|&i| !taken(i)) {
            free.lane(i as usize)
                .push(i)
                .expect("free list sized to the table");
        }
        Self {
            slots,
            free,
            node,
            incarnation,
        }
    }

    pub(crate) fn capacity(&self) -> u32 {
        self.slots.len() as u32
    }

    pub(crate) fn node(&self) -> u8 {
        self.node
    }

    /// Free slots right now (for metrics).
    pub(crate) fn free_len(&self) -> usize {
        self.free.len()
    }

    #[inline]
    pub(crate) fn slot(&self, index: u32) -> &Slot {
        &self.slots[index as usize]
    }

    /// The slot an id names, if the index is in range.
    #[inline]
    pub(crate) fn slot_of(&self, id: HoldId) -> Option<&Slot> {
        self.slots.get(id.slot() as usize)
    }

    /// Takes a free slot and marks it `RESERVING` under a new generation.
    #[inline]
    pub(crate) fn alloc(&self) -> Option<(u32, u32)> {
        let index = self.free.pop_from(crate::lanes::current())?;
        let slot = &self.slots[index as usize];
        // Relaxed: the pop synchronised with the push that freed the slot,
        // which came after the last write to this word.
        let word = slot.word.load(Ordering::Relaxed);
        let generation = (self::generation(word) + 1) & GEN_MASK;
        // Relaxed store then a Release fence: seqlock writer side. A reader
        // (`read`) that sees any field write below, followed by its Acquire
        // fence, then sees this word change and discards its copy.
        slot.word
            .store(pack(generation, RESERVING, 0), Ordering::Relaxed);
        fence(Ordering::Release);
        Some((index, generation))
    }

    /// Gives back a slot (its final state word stays, so a late query on the
    /// old id still sees how it ended until the slot is reused).
    #[inline]
    pub(crate) fn free(&self, index: u32) {
        // The queue holds at most `capacity` indices and each is in it at most
        // once, so this push cannot fail.
        self.free
            .lane(index as usize)
            .push(index)
            .expect("free list sized to the table");
    }

    /// A buffer for slots the expirer gives back in runs.
    pub(crate) fn free_batch(&self) -> FreeBatch {
        FreeBatch {
            lanes: (0..self.free.all().len())
                .map(|_| Vec::with_capacity(FreeBatch::RUN_MAX))
                .collect(),
        }
    }

    /// Puts a slot in `batch`; gives back its lane's run once it is full.
    #[inline]
    pub(crate) fn free_later(&self, batch: &mut FreeBatch, index: u32) {
        let lane = index as usize & (batch.lanes.len() - 1);
        batch.lanes[lane].push(index);
        if batch.lanes[lane].len() == FreeBatch::RUN_MAX {
            self.free_run(lane, &mut batch.lanes[lane]);
        }
    }

    /// Gives back every slot in `batch`.
    pub(crate) fn free_now(&self, batch: &mut FreeBatch) {
        for (lane, run) in batch.lanes.iter_mut().enumerate() {
            if !run.is_empty() {
                self.free_run(lane, run);
            }
        }
    }

    fn free_run(&self, lane: usize, run: &mut Vec<u32>) {
        // As in `free`: each index is in the free list at most once, so the
        // whole run always fits.
        let pushed = self.free.lane(lane).push_slice(run);
        assert_eq!(pushed, run.len(), "free list sized to the table");
        run.clear();
    }

    /// Gives back a slot that was allocated but never published.
    pub(crate) fn unalloc(&self, index: u32, generation: u32) {
        // Relaxed: nobody holds an id for this generation.
        self.slots[index as usize]
            .word
            .store(pack(generation, FREE, 0), Ordering::Relaxed);
        self.free(index);
    }

    pub(crate) fn hold_id(&self, index: u32, generation: u32) -> HoldId {
        HoldId::new(self.incarnation, self.node, generation, index)
    }

    /// The id of the hold whose head is `index` under `generation` (the
    /// incarnation may be an earlier one for restored holds).
    pub(crate) fn owner_id(&self, index: u32) -> HoldId {
        // Relaxed: read by the CAS winner, synchronised by its Acquire.
        HoldId(self.slots[index as usize].owner.load(Ordering::Relaxed))
    }

    /// Seqlock read of a slot (see [`Slot::read`]); `None` also for an
    /// index out of range.
    pub(crate) fn read(&self, index: u32) -> Option<SlotView> {
        self.slots.get(index as usize)?.read()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn hex16_writes_what_padded_hex_formatting_writes() {
        for v in [
            0,
            1,
            0xf,
            0x10,
            0xdead_beef,
            u64::MAX,
            1 << 63,
            0x0123_4567_89ab_cdef,
        ] {
            assert_eq!(hex16(v).as_str(), format!("{v:016x}"));
        }
    }

    #[test]
    fn hold_id_roundtrips_through_text_and_raw() {
        let id = HoldId::new(INCARNATIONS - 1, 7, GEN_MASK, HOLDS_MAX - 1);
        assert_eq!(
            (id.incarnation(), id.node(), id.generation(), id.slot()),
            (INCARNATIONS - 1, 7, GEN_MASK, HOLDS_MAX - 1)
        );
        assert_eq!(id.to_string().len(), 16);
        assert_eq!(id.to_string(), format!("{:016x}", id.to_raw()));
        assert_eq!(id.to_string().parse::<HoldId>(), Ok(id));
        assert_eq!(HoldId::from_raw(id.to_raw()), Some(id));
        assert_eq!(HoldId::from_raw(1 << 62), None);
        assert_eq!("xyz".parse::<HoldId>(), Err(ParseHoldIdError));
        assert_eq!("ffffffffffffffff".parse::<HoldId>(), Err(ParseHoldIdError));
    }

    #[test]
    fn state_word_packs_all_fields() {
        let w = pack(GEN_MASK, EXPIRED, DEADLINE_MAX_MS);
        assert_eq!(
            (generation(w), state(w), deadline(w)),
            (GEN_MASK, EXPIRED, DEADLINE_MAX_MS)
        );
    }

    #[test]
    fn transitions_respect_state_generation_and_deadline() {
        let slot = Slot::new();
        slot.latest_ms.store(250, Ordering::Relaxed);
        slot.publish(3, 100);
        assert_eq!(slot.transition(2, To::Commit, 0), Err(Lost::NotFound));
        assert_eq!(slot.transition(3, To::Expire, 99), Err(Lost::NotDue(100)));
        assert_eq!(
            slot.transition(3, To::Extend { by_ms: 100 }, 99),
            Ok(Won::Extended(200))
        );
        assert_eq!(
            slot.transition(3, To::Extend { by_ms: 51 }, 99),
            Err(Lost::ExtendLimit)
        );
        assert_eq!(slot.transition(3, To::Expire, 150), Err(Lost::NotDue(200)));
        assert_eq!(slot.transition(3, To::Commit, 200), Ok(Won::ExpiredInstead));
        assert_eq!(
            slot.transition(3, To::Commit, 0),
            Err(Lost::Ended(HoldState::Expired))
        );

        slot.publish(4, 100);
        assert_eq!(slot.transition(4, To::Release, 99), Ok(Won::Released));
        assert_eq!(
            slot.transition(4, To::Release, 99),
            Err(Lost::Ended(HoldState::Released))
        );
    }

    #[test]
    fn freed_slots_come_back_in_runs_and_all_at_the_end() {
        let table = HoldTable::new(1000, 2, 1, 0, &|_| false);
        let mut taken: Vec<u32> = (0..1000).map(|_| table.alloc().unwrap().0).collect();
        assert!(table.alloc().is_none());
        // Slot i lives in lane i % 2: freed in index order, the lanes fill
        // evenly.
        taken.sort_unstable();
        let mut batch = table.free_batch();
        for &index in &taken[..600] {
            table.free_later(&mut batch, index);
        }
        // Each lane gave back one full run (256 of its 300) on the way.
        assert_eq!(table.free_len(), 2 * FreeBatch::RUN_MAX);
        for &index in &taken[600..] {
            table.free_later(&mut batch, index);
        }
        table.free_now(&mut batch);
        assert_eq!(table.free_len(), 1000, "every slot is back");
        let mut again: Vec<u32> = (0..1000).map(|_| table.alloc().unwrap().0).collect();
        again.sort_unstable();
        assert_eq!(again, (0..1000).collect::<Vec<_>>(), "each slot once");
    }

    #[test]
    fn table_recycles_slots_under_new_generations() {
        let table = HoldTable::new(2, 1, 1, 0, &|_| false);
        let (a, ga) = table.alloc().unwrap();
        let (b, _) = table.alloc().unwrap();
        assert_ne!(a, b);
        assert!(table.alloc().is_none(), "a full table refuses");
        table.unalloc(a, ga);
        let (c, gc) = table.alloc().unwrap();
        assert_eq!(c, a);
        assert_ne!(gc, ga);
        assert_eq!(table.hold_id(c, gc).node(), 1);
    }
}

/// Loom models of the one-CAS decision on a hold.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    /// Commit, release and the expirer race on one hold whose deadline is
    /// passing: exactly one wins, the others learn how it ended.
    #[test]
    fn loom_commit_release_expire_exactly_one_wins() {
        loom::model(|| {
            let slot = Arc::new(Slot::new());
            slot.publish(1, 10);
            let end_hold = |slot: &Slot, to: To, now: u64| {
                let result = slot.transition(1, to, now);
                if result == Ok(Won::Committed) {
                    slot.finish_commit(1);
                }
                result
            };
            let run = |to: To, now: u64| {
                let slot = slot.clone();
                thread::spawn(move || end_hold(&slot, to, now))
            };
            let c = run(To::Commit, 9);
            let r = run(To::Release, 9);
            let e = run(To::Expire, 10);
            let results = [c.join().unwrap(), r.join().unwrap(), e.join().unwrap()];
            let wins = results.iter().filter(|r| r.is_ok()).count();
            assert_eq!(wins, 1, "exactly one transition wins: {results:?}");
            let end = HoldState::from_raw(state(slot.word.load(Ordering::Relaxed))).unwrap();
            for r in results {
                match r {
                    Ok(Won::Committed) => assert_eq!(end, HoldState::Committed),
                    Ok(Won::Released) => assert_eq!(end, HoldState::Released),
                    Ok(Won::Expired) => assert_eq!(end, HoldState::Expired),
                    Err(Lost::Ended(s)) => assert_eq!(s, end, "losers are told who won"),
                    other => panic!("unexpected {other:?}"),
                }
            }
        });
    }

    /// An extend and the expirer race: either the hold is extended and the
    /// expirer sees it is not due, or it expired and the extend is told so.
    #[test]
    fn loom_extend_vs_expire() {
        loom::model(|| {
            let slot = Arc::new(Slot::new());
            slot.latest_ms.store(100, Ordering::Relaxed);
            slot.publish(1, 10);
            let ext = {
                let slot = slot.clone();
                thread::spawn(move || slot.transition(1, To::Extend { by_ms: 10 }, 9))
            };
            let exp = {
                let slot = slot.clone();
                thread::spawn(move || slot.transition(1, To::Expire, 15))
            };
            match (ext.join().unwrap(), exp.join().unwrap()) {
                (Ok(Won::Extended(20)), Err(Lost::NotDue(20))) => {
                    assert_eq!(deadline(slot.word.load(Ordering::Relaxed)), 20);
                }
                (Err(Lost::Ended(HoldState::Expired)), Ok(Won::Expired)) => {}
                other => panic!("impossible interleaving outcome {other:?}"),
            }
        });
    }

    /// A commit is two steps (the CAS that decides it, then each line's
    /// `sold`): a reader racing it sees the hold Held, or Committed with
    /// every line's `sold` written, never Committed with `sold` still 0.
    #[test]
    fn loom_a_reader_never_sees_committed_before_sold() {
        crate::sync::race(
            || {
                let [head, line] = [Slot::new(), Slot::new()];
                line.qty.store(4, Ordering::Relaxed);
                line.word.store(pack(1, LINE, 0), Ordering::Relaxed);
                head.qty.store(5, Ordering::Relaxed);
                head.publish(1, 10);
                [head, line]
            },
            |[head, line]| {
                assert_eq!(head.transition(1, To::Commit, 0), Ok(Won::Committed));
                // As `Engine::end_line` does, line by line.
                head.sold.store(3, Ordering::Relaxed);
                line.sold.store(2, Ordering::Relaxed);
                head.finish_commit(1);
            },
            |[head, line]| {
                let view = head.read()?;
                match state(view.word) {
                    HELD => assert_eq!(view.sold, 0),
                    COMMITTED => {
                        assert_eq!(view.sold, 3, "head read as committed before its sold");
                        let line = line.read().expect("a line slot is stable");
                        assert_eq!(line.sold, 2, "line read before its sold");
                    }
                    other => panic!("a reader saw state {other}"),
                }
                Some(())
            },
            |[head, _], (), _| assert_eq!(state(head.word.load(Ordering::Relaxed)), COMMITTED),
        );
    }

    /// The reserving thread's field writes are visible to whoever wins.
    #[test]
    fn loom_publish_makes_fields_visible_to_the_winner() {
        loom::model(|| {
            let slot = Arc::new(Slot::new());
            let writer = {
                let slot = slot.clone();
                thread::spawn(move || {
                    slot.qty.store(5, Ordering::Relaxed);
                    slot.publish(1, 10);
                })
            };
            let committer = {
                let slot = slot.clone();
                thread::spawn(move || match slot.transition(1, To::Commit, 0) {
                    Ok(_) => assert_eq!(slot.qty.load(Ordering::Relaxed), 5),
                    Err(Lost::NotFound) => {}
                    Err(other) => panic!("{other:?}"),
                })
            };
            writer.join().unwrap();
            committer.join().unwrap();
        });
    }
}
