//! Events: every state change, numbered from one global sequence, delivered
//! to the journal through one bounded lock-free queue (a lane per thread).
//!
//! The queue is bounded twice. Above `events_max - events_headroom` queued
//! events, new operations are refused up front as `Overloaded` (before they
//! change anything), so an operation that passed the check always has room
//! for its events; if more threads than the headroom raced past the check
//! at once, the push waits (backpressure) rather than drop. Nothing is ever
//! silently dropped.
//!
//! Sequence numbers come from a `fetch_add` taken just before the push, so
//! the queue may hold them slightly out of order (two threads, nanoseconds
//! apart). The consumer reorders within its batch and treats a gap as "still
//! in flight" (see the journal). Events of one hold are always in order: the
//! hold's next event can only happen after the push of its previous one.

use crate::buyer_limit::BuyerId;
use crate::catalog::{SaleWindow, SkuIdx, SkuSettings};
use crate::channel::{ChannelIdx, Source};
use crate::hold::HoldId;
use crate::idempotency::RequestId;
use crate::lanes::{self, Lanes};
use crate::ring::Ring;
use crate::sync::{AtomicU64, Ordering};
use crossbeam::utils::{Backoff, CachePadded};
use std::sync::atomic::AtomicUsize;

/// One line of a hold named in an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HoldLine {
    /// The hold (the cart's head id for every line).
    pub hold: HoldId,
    pub sku: SkuIdx,
    pub buyer: BuyerId,
    /// Line number within the hold, from 0.
    pub line: u8,
    /// Number of lines in the hold.
    pub lines: u8,
    /// Whether this line's units count against the buyer's limit.
    pub counted: bool,
    /// The line's channel and how many of its units came from that
    /// channel's quota ([`Source::POOL`] without a channel).
    pub source: Source,
}

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A SKU was created (its units follow as `Restocked`, its window as
    /// `WindowChanged`).
    SkuCreated { sku: SkuIdx, settings: SkuSettings },
    /// A SKU's settings changed.
    SettingsChanged { sku: SkuIdx, settings: SkuSettings },
    /// Units moved from available to held. `latest_ms` bounds extensions.
    Reserved {
        line: HoldLine,
        qty: u32,
        deadline_ms: u64,
        latest_ms: u64,
    },
    /// A held line was paid: `sold` units sold, `returned` back on sale.
    Committed {
        line: HoldLine,
        sold: u32,
        returned: u32,
    },
    /// The buyer gave a held line back.
    Released { line: HoldLine, qty: u32 },
    /// A held line's deadline passed.
    Expired { line: HoldLine, qty: u32 },
    /// A live hold's deadline moved.
    Extended { hold: HoldId, deadline_ms: u64 },
    /// The host added units.
    Restocked { sku: SkuIdx, qty: u32 },
    /// The host removed available units.
    Adjusted { sku: SkuIdx, qty: u32 },
    /// The SKU became sold out ([`crate::Counts::sold_out`]: nothing to
    /// buy, nothing in carts): its last held units were committed, or its
    /// last available ones removed. Units merely sitting in carts never
    /// cause it. Follows the event that caused it, in the same run.
    SoldOut { sku: SkuIdx },
    /// Units are on sale again after the SKU was sold out (a restock, a
    /// higher total). A hold ending while every unit sat in carts does not
    /// cause it. Follows the event that caused it, in the same run;
    /// `SoldOut` and `BackInStock` alternate per SKU.
    BackInStock { sku: SkuIdx },
    /// A request id's answer was remembered (idempotency), so the journal
    /// can keep it across restarts.
    RequestDone {
        request: RequestId,
        fingerprint: u32,
        outcome: u64,
        deadline_ms: u64,
        aux: u32,
    },
    /// The sale window changed.
    WindowChanged { sku: SkuIdx, window: SaleWindow },
    /// A sales channel was added to a SKU, or its cap changed (`None`: no
    /// cap). Its id: [`Engine::channel_id`](crate::Engine::channel_id).
    ChannelSet {
        sku: SkuIdx,
        channel: ChannelIdx,
        cap: Option<u32>,
    },
    /// `qty` unsold units moved from the SKU's common pool into a channel's
    /// quota (`to_quota`), or back.
    QuotaMoved {
        sku: SkuIdx,
        channel: ChannelIdx,
        to_quota: bool,
        qty: u32,
    },
    /// A remembered answer was withdrawn: its reservation's durable write
    /// failed and it was undone, so a retry must run afresh, after a
    /// restart too (the journal deletes the stored answer).
    RequestForgotten { request: RequestId },
}

impl EventKind {
    /// The SKU the event is about, if it is about one.
    pub fn sku(&self) -> Option<SkuIdx> {
        match *self {
            Self::SkuCreated { sku, .. }
            | Self::SettingsChanged { sku, .. }
            | Self::Restocked { sku, .. }
            | Self::Adjusted { sku, .. }
            | Self::SoldOut { sku }
            | Self::BackInStock { sku }
            | Self::WindowChanged { sku, .. }
            | Self::ChannelSet { sku, .. }
            | Self::QuotaMoved { sku, .. } => Some(sku),
            Self::Reserved { line, .. }
            | Self::Committed { line, .. }
            | Self::Released { line, .. }
            | Self::Expired { line, .. } => Some(line.sku),
            Self::Extended { .. } | Self::RequestDone { .. } | Self::RequestForgotten { .. } => {
                None
            }
        }
    }
}

/// One numbered state change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Event {
    /// Global sequence number, gapless from the engine's start value.
    pub seq: u64,
    /// When it happened (engine clock).
    pub at_ms: u64,
    pub kind: EventKind,
}

/// The bounded queue from the engine to the journal, in lanes (one per
/// thread, see `lanes`): events of one operation are in one lane,
/// contiguous in sequence; the consumer merges lanes by sequence number.
#[derive(Debug)]
pub struct EventLog {
    lanes: Lanes<Event>,
    next_seq: CachePadded<AtomicU64>,
    /// Above this many queued events in its lane, an operation is refused.
    admit_max: usize,
    /// Events the lanes were sized for (each lane's ring rounds its share up
    /// to a power of two; admission keeps to this figure).
    capacity: usize,
    /// Lane the next `pop` starts from (consumer side only).
    cursor: AtomicUsize,
}

impl EventLog {
    pub(crate) fn new(capacity: usize, headroom: usize, lanes: usize) -> Self {
        let per_lane = capacity.div_ceil(lanes);
        let headroom_per_lane = headroom.div_ceil(lanes).min(per_lane - 1);
        Self {
            lanes: Lanes::new(lanes, |_| per_lane),
            next_seq: CachePadded::new(AtomicU64::new(1)),
            admit_max: per_lane - headroom_per_lane,
            capacity: per_lane * lanes,
            cursor: AtomicUsize::new(0),
        }
    }

    /// Whether a new operation on this thread may start (its events fit).
    #[inline]
    pub(crate) fn admits(&self) -> bool {
        // An over-count (pops running meanwhile) only refuses a little early.
        self.lanes.lane(lanes::current()).len_at_most() < self.admit_max
    }

    /// Numbers and enqueues `kinds` as one contiguous run of sequence
    /// numbers (a cart's lines stay adjacent), all in this thread's lane.
    #[inline]
    pub(crate) fn emit(&self, at_ms: u64, kinds: &[EventKind]) {
        if kinds.is_empty() {
            return;
        }
        let lane = self.lanes.lane(lanes::current());
        // Relaxed: the counter only hands out unique numbers; event contents
        // reach the consumer through the queue's own Release/Acquire.
        let first = self
            .next_seq
            .fetch_add(kinds.len() as u64, Ordering::Relaxed);
        for (i, kind) in kinds.iter().enumerate() {
            push_waiting(
                lane,
                Event {
                    seq: first + i as u64,
                    at_ms,
                    kind: *kind,
                },
            );
        }
    }

    /// Numbers and enqueues the events of a one-line operation: its own
    /// and, if it caused one, the stock transition (sold out, back in
    /// stock), as one contiguous run like [`EventLog::emit`], without
    /// building a buffer first.
    #[inline(always)]
    pub(crate) fn emit_one(&self, at_ms: u64, kind: EventKind, then: Option<EventKind>) {
        let lane = self.lanes.lane(lanes::current());
        // Relaxed: as in `emit`.
        let first = self
            .next_seq
            .fetch_add(1 + u64::from(then.is_some()), Ordering::Relaxed);
        push_waiting(
            lane,
            Event {
                seq: first,
                at_ms,
                kind,
            },
        );
        if let Some(kind) = then {
            push_waiting(
                lane,
                Event {
                    seq: first + 1,
                    at_ms,
                    kind,
                },
            );
        }
    }

    /// Takes the next event from some lane, if any (lanes in turn).
    pub fn pop(&self) -> Option<Event> {
        // Relaxed: a fairness hint for one consumer.
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        self.lanes.pop_from(start)
    }

    /// Moves up to `max` events into `out`, from every lane; returns how
    /// many. Sequence numbers may come out of order across lanes.
    pub fn drain_into(&self, out: &mut Vec<Event>, max: usize) -> usize {
        let mut n = 0;
        for lane in self.lanes.all() {
            // Each call claims the run of events published in this lane so
            // far; repeat while producers keep adding to it, up to `max`.
            while n < max {
                let taken = lane.pop_into(out, max - n);
                if taken == 0 {
                    break;
                }
                n += taken;
            }
        }
        n
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.lanes.len()
    }

    /// No events waiting.
    pub fn is_empty(&self) -> bool {
        self.lanes.all().iter().all(|l| l.is_empty())
    }

    /// Capacity of the queue (all lanes).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The sequence number the next event will get.
    pub fn next_seq(&self) -> u64 {
        // Relaxed: a reading for reports and recovery.
        self.next_seq.load(Ordering::Relaxed)
    }

    /// Continues numbering after `last` (recovery). Call before any event.
    pub fn resume_after(&self, last: u64) {
        // Relaxed: called before the engine is shared.
        self.next_seq.store(last + 1, Ordering::Relaxed);
    }
}

/// Pushes an event that passed the admission check. There is always room
/// unless more threads than the headroom raced past the check; then wait,
/// never drop.
#[inline(always)]
fn push_waiting(lane: &Ring<Event>, event: Event) {
    if let Err(event) = lane.push(event) {
        wait_for_room(lane, event);
    }
}

#[cold]
#[inline(never)]
fn wait_for_room(lane: &Ring<Event>, mut event: Event) {
    let backoff = Backoff::new();
    while let Err(back) = lane.push(event) {
        event = back;
        backoff.snooze();
    }
}

/// A fixed-size buffer of events an operation will emit, so the hot path
/// never allocates (and, being an `ArrayVec`, never initialises its slots).
#[derive(Debug)]
pub(crate) struct EventBuf {
    kinds: arrayvec::ArrayVec<EventKind, { EventBuf::CAPACITY }>,
}

impl EventBuf {
    /// A cart of `CART_LINES_MAX` lines emits at most two events per line.
    pub(crate) const CAPACITY: usize = 2 * crate::limits::CART_LINES_MAX;

    #[inline]
    pub(crate) fn new() -> Self {
        Self {
            kinds: arrayvec::ArrayVec::new(),
        }
    }

    #[inline]
    pub(crate) fn push(&mut self, kind: EventKind) {
        self.kinds.push(kind);
    }

    #[inline]
    pub(crate) fn as_slice(&self) -> &[EventKind] {
        &self.kinds
    }
}
