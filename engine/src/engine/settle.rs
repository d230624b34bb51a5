//! How holds end: commit, release, extend, and the effects of an expiry
//! (the expirer decides it, the same way); and how a hold is read.
//!
//! Every path is one CAS on the head slot's state word that decides the
//! race ([`crate::hold`]), then the winner alone applies the effects:
//! stock, buyer limits, events, the expirer's unlink notice.

use super::requests::{commit_fingerprint, extend_fingerprint, release_fingerprint};
use super::{Engine, transition};
use crate::answer::{HoldInfo, HoldLineInfo, Settlement};
use crate::buyer_limit::BuyerId;
use crate::catalog::SkuIdx;
use crate::channel::Source;
use crate::error::HoldError;
use crate::event::{EventBuf, EventKind, HoldLine};
use crate::hold::{self, FreeBatch, HoldId, HoldState, LINE, Lost, NO_LINE, To, Won};
use crate::idempotency::{RequestId, Withdrawal};
use crate::limits::{CART_LINES_MAX, HOLD_READ_TRIES_MAX};
use crate::sync::Ordering;

/// What ending one line of a hold did (see `Engine::end_line`).
#[derive(Debug, Clone, Copy)]
struct LineEnding {
    sold: u32,
    returned: u32,
    event: EventKind,
    /// The stock transition the line's units caused, if any.
    then: Option<EventKind>,
}

/// How a hold ends; the winner of its CAS applies this (the request the
/// winner made is a [`To`]; this is what it then does).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Ending<'a> {
    /// Units sold per line (`None`: everything held).
    Commit(Option<&'a [u32]>),
    Release,
    Expire,
}

impl Engine {
    /// Commits a hold: all held units are sold, or with `sold` (one number
    /// per line, each at most the line's units) only those, the rest going
    /// back on sale. Exactly once; racing expiry, exactly one wins.
    pub fn commit(
        &self,
        hold: HoldId,
        sold: Option<&[u32]>,
        request: Option<RequestId>,
    ) -> Result<Settlement, HoldError> {
        if let Some(sold) = sold {
            // No hold has no line or more than a cart's.
            if sold.is_empty() || sold.len() > CART_LINES_MAX {
                return Err(HoldError::LinesMismatch);
            }
            if sold.iter().all(|&q| q == 0) {
                return Err(HoldError::InvalidQty);
            }
        }
        if !self.admit() {
            return Err(HoldError::Overloaded);
        }
        if request.is_none() {
            // Nothing to remember, so no fingerprint to compute.
            return self.commit_now(hold, sold);
        }
        let ticket = match self.claim_hold_request(request, commit_fingerprint(hold, sold)) {
            Ok(ticket) => ticket,
            Err(seen) => {
                return seen.map(|(sold, _, returned)| Settlement {
                    sold: sold as u32,
                    returned,
                    replayed: true,
                });
            }
        };
        let result = self.commit_now(hold, sold);
        if let Some(ticket) = ticket {
            let answer = result.map(|s| (u64::from(s.sold), 0, s.returned));
            self.remember_hold(ticket, request, answer);
        }
        result
    }

    #[inline(always)]
    fn commit_now(&self, hold: HoldId, sold: Option<&[u32]>) -> Result<Settlement, HoldError> {
        if let Some(sold) = sold {
            // Validate against the lines before the deciding CAS: if the
            // slot is reused meanwhile, the CAS fails on the generation.
            let info = self.hold(hold)?;
            if info.state == HoldState::Held {
                if sold.len() != info.lines.len() {
                    return Err(HoldError::LinesMismatch);
                }
                if let Some(line) = sold.iter().zip(&info.lines).find(|(s, l)| **s > l.qty) {
                    return Err(HoldError::QtyAboveHeld { held: line.1.qty });
                }
            }
        }
        let (sold, returned) = self.end_hold(hold, To::Commit, Ending::Commit(sold))?;
        Ok(Settlement {
            sold,
            returned,
            replayed: false,
        })
    }

    /// Gives a live hold back: its units go back on sale.
    pub fn release(&self, hold: HoldId, request: Option<RequestId>) -> Result<(), HoldError> {
        if !self.admit() {
            return Err(HoldError::Overloaded);
        }
        let ticket = match self.claim_hold_request(request, release_fingerprint(hold)) {
            Ok(ticket) => ticket,
            Err(seen) => return seen.map(|_| ()),
        };
        let result = self
            .end_hold(hold, To::Release, Ending::Release)
            .map(|_| ());
        if let Some(ticket) = ticket {
            self.remember_hold(ticket, request, result.map(|()| (0, 0, 0)));
        }
        result
    }

    /// Moves a live hold's deadline `by_ms` later, up to its maximum
    /// lifetime. Returns the new deadline.
    pub fn extend(
        &self,
        hold: HoldId,
        by_ms: u64,
        request: Option<RequestId>,
    ) -> Result<u64, HoldError> {
        if by_ms == 0 {
            return Err(HoldError::InvalidExtend);
        }
        if !self.admit() {
            return Err(HoldError::Overloaded);
        }
        let ticket = match self.claim_hold_request(request, extend_fingerprint(hold, by_ms)) {
            Ok(ticket) => ticket,
            Err(seen) => return seen.map(|(_, deadline_ms, _)| deadline_ms),
        };
        let result = self.extend_now(hold, by_ms);
        if let Some(ticket) = ticket {
            let answer = result.map(|deadline_ms| (0, deadline_ms, 0));
            self.remember_hold(ticket, request, answer);
        }
        result
    }

    fn extend_now(&self, hold: HoldId, by_ms: u64) -> Result<u64, HoldError> {
        let slot = self.head_slot(hold)?;
        let now = self.now_ms();
        match slot.transition(hold.generation(), To::Extend { by_ms }, now) {
            Ok(Won::Extended(deadline_ms)) => {
                let mut buf = EventBuf::new();
                buf.push(EventKind::Extended { hold, deadline_ms });
                self.emit(now, &buf);
                // The expirer relinks the hold when its old bucket comes up.
                Ok(deadline_ms)
            }
            Ok(Won::ExpiredInstead) => {
                self.apply_ending(hold.slot(), Ending::Expire, now);
                self.inbox.unlink(hold.slot());
                Err(HoldError::HoldExpired)
            }
            Ok(other) => unreachable!("extend cannot end as {other:?}"),
            Err(lost) => Err(lost_to_error(lost)),
        }
    }

    /// The head slot of a hold this engine issued (or restored), checked
    /// down to the full id: a stale id from an earlier incarnation with the
    /// same slot and generation is not found.
    #[inline]
    fn head_slot(&self, hold: HoldId) -> Result<&hold::Slot, HoldError> {
        if hold.node() != self.holds.node() {
            return Err(HoldError::HoldNotFound);
        }
        let slot = self.holds.slot_of(hold).ok_or(HoldError::HoldNotFound)?;
        // Acquire: pairs with `publish`, so the owner read is this hold's
        // (or a later one's, if the slot was reused: then it differs).
        let word = slot.word.load(Ordering::Acquire);
        if hold::generation(word) != hold.generation()
            || slot.owner.load(Ordering::Relaxed) != hold.to_raw()
        {
            return Err(HoldError::HoldNotFound);
        }
        Ok(slot)
    }

    /// Ends a hold by commit or release; the CAS winner applies the effects.
    #[inline(always)]
    fn end_hold(&self, hold: HoldId, to: To, ending: Ending<'_>) -> Result<(u32, u32), HoldError> {
        let slot = self.head_slot(hold)?;
        let now = self.now_ms();
        match slot.transition(hold.generation(), to, now) {
            Ok(Won::Committed) => {
                let result = self.apply_ending(hold.slot(), ending, now);
                // Before the unlink: the expirer frees the slot on it.
                slot.finish_commit(hold.generation());
                self.inbox.unlink(hold.slot());
                Ok(result)
            }
            Ok(Won::Released) => {
                let result = self.apply_ending(hold.slot(), ending, now);
                self.inbox.unlink(hold.slot());
                Ok(result)
            }
            Ok(Won::ExpiredInstead) => {
                self.apply_ending(hold.slot(), Ending::Expire, now);
                self.inbox.unlink(hold.slot());
                Err(HoldError::HoldExpired)
            }
            Ok(other) => unreachable!("{to:?} cannot end as {other:?}"),
            Err(lost) => Err(lost_to_error(lost)),
        }
    }

    /// Applies a hold's end to stock, buyer limits and events. Only the
    /// winner of the head slot's terminal CAS calls this, exactly once.
    /// Returns (units sold, units returned to sale).
    #[inline]
    pub(crate) fn apply_ending(&self, head: u32, ending: Ending<'_>, now_ms: u64) -> (u32, u32) {
        let hold = self.holds.owner_id(head);
        let slot = self.holds.slot(head);
        // Relaxed field loads: the winner's Acquire CAS synchronised with
        // the head's Release publish, which came after every line write.
        let lines = slot.lines.load(Ordering::Relaxed) as u8;
        if slot.next_line.load(Ordering::Relaxed) != NO_LINE {
            return self.apply_ending_cart(hold, head, lines, ending, now_ms);
        }
        // One line, the common case: its events go out without a buffer.
        let ended = self.end_line(hold, head, 0, lines, ending);
        if let Some(log) = &self.events {
            log.emit_one(now_ms, ended.event, ended.then);
        }
        (ended.sold, ended.returned)
    }

    /// `apply_ending` for a hold of several lines, out of line so the one-line
    /// case does not carry its event buffer.
    #[inline(never)]
    fn apply_ending_cart(
        &self,
        hold: HoldId,
        head: u32,
        lines: u8,
        ending: Ending<'_>,
        now_ms: u64,
    ) -> (u32, u32) {
        let mut buf = EventBuf::new();
        let (mut sold_total, mut returned_total) = (0, 0);
        let mut index = head;
        let mut line = 0usize;
        while index != NO_LINE && line < CART_LINES_MAX {
            let ended = self.end_line(hold, index, line, lines, ending);
            sold_total += ended.sold;
            returned_total += ended.returned;
            buf.push(ended.event);
            if let Some(then) = ended.then {
                buf.push(then);
            }
            // Relaxed: see `apply_ending`.
            index = self.holds.slot(index).next_line.load(Ordering::Relaxed);
            line += 1;
        }
        self.emit(now_ms, &buf);
        (sold_total, returned_total)
    }

    /// Applies a hold's end to one of its lines (slot `index`, line number
    /// `line` of `lines`): stock, buyer limit, the broadcaster's queue.
    /// Returns the units sold and returned and the line's events.
    #[inline(always)]
    fn end_line(
        &self,
        hold: HoldId,
        index: u32,
        line: usize,
        lines: u8,
        ending: Ending<'_>,
    ) -> LineEnding {
        let slot = self.holds.slot(index);
        // Relaxed field loads: see `apply_ending`.
        let sku = SkuIdx(slot.sku.load(Ordering::Relaxed));
        let qty = slot.qty.load(Ordering::Relaxed);
        let buyer = BuyerId(slot.buyer.load(Ordering::Relaxed));
        let counted = slot.counted.load(Ordering::Relaxed) == 1;
        let source = Source::unpack(slot.source.load(Ordering::Relaxed));
        let entry = self.catalog.get(sku).expect("a hold names a published sku");
        let line_ref = HoldLine {
            hold,
            sku,
            buyer,
            line: line as u8,
            lines,
            counted,
            source,
        };
        let (sold, event) = match ending {
            Ending::Commit(sold) => {
                let sold = sold.map_or(qty, |s| s[line].min(qty));
                // Relaxed: the head stays COMMITTING until every line's
                // `sold` is written; its Release store of COMMITTED
                // (`finish_commit`) publishes them to `hold()`'s reads,
                // which wait while it is COMMITTING.
                slot.sold.store(sold, Ordering::Relaxed);
                if counted {
                    self.buyers.release(sku, buyer, qty - sold);
                }
                let event = EventKind::Committed {
                    line: line_ref,
                    sold,
                    returned: qty - sold,
                };
                (sold, event)
            }
            Ending::Release | Ending::Expire => {
                if counted {
                    self.buyers.release(sku, buyer, qty);
                }
                let event = match ending {
                    Ending::Release => EventKind::Released {
                        line: line_ref,
                        qty,
                    },
                    _ => EventKind::Expired {
                        line: line_ref,
                        qty,
                    },
                };
                (0, event)
            }
        };
        let change = match source.channel {
            None if sold == 0 => Some(entry.stock.untake(qty)),
            None => Some(entry.stock.settle(qty, sold)),
            Some(c) => {
                let set = entry.channels.get().expect("a channel hold has a set");
                let change = set.get(c).settle(&entry.stock, qty, source.quota, sold);
                // The quota's word carries no changed flag: flag the SKU's.
                self.mark_changed(sku, entry);
                change
            }
        };
        if let Some(change) = change {
            self.note(sku, change);
        }
        LineEnding {
            sold,
            returned: qty - sold,
            event,
            then: change.and_then(|c| transition(sku, c)),
        }
    }

    /// Frees a finished hold's slots into `batch` (the expirer calls this
    /// once it has unlinked the head from its wheel, and gives the batch
    /// back by the end of its run).
    #[inline]
    pub(crate) fn free_hold_slots(&self, head: u32, batch: &mut FreeBatch) {
        // Every `next_line` is read before any slot is freed: a freed slot
        // may be taken and refilled at once.
        // Relaxed: the expirer synchronised with the winner through the
        // inbox (or is the winner); these fields are stable until freed.
        if self.holds.slot(head).next_line.load(Ordering::Relaxed) == NO_LINE {
            self.holds.free_later(batch, head);
        } else {
            self.free_cart_slots(head, batch);
        }
    }

    /// `free_hold_slots` for a hold of several lines.
    #[inline(never)]
    fn free_cart_slots(&self, head: u32, batch: &mut FreeBatch) {
        let mut indices = [NO_LINE; CART_LINES_MAX];
        let mut index = head;
        let mut n = 0;
        while index != NO_LINE && n < CART_LINES_MAX {
            indices[n] = index;
            // Relaxed: the expirer synchronised with the winner through the
            // inbox (or is the winner); these fields are stable until freed.
            index = self.holds.slot(index).next_line.load(Ordering::Relaxed);
            n += 1;
        }
        for &index in &indices[..n] {
            self.holds.free_later(batch, index);
        }
    }

    /// Looks up a hold. Finished holds are reported until their slot is
    /// reused (the free list is FIFO, so that is a whole table's worth of
    /// reservations later).
    pub fn hold(&self, hold: HoldId) -> Result<HoldInfo, HoldError> {
        self.head_slot(hold)?;
        for _ in 0..HOLD_READ_TRIES_MAX {
            let head = self
                .holds
                .read(hold.slot())
                .ok_or(HoldError::HoldNotFound)?;
            if hold::generation(head.word) != hold.generation() {
                return Err(HoldError::HoldNotFound);
            }
            let state =
                HoldState::from_raw(hold::state(head.word)).ok_or(HoldError::HoldNotFound)?;
            let mut lines = Vec::with_capacity(head.lines as usize);
            let mut view = head;
            let mut consistent = true;
            loop {
                if view.owner != hold.to_raw() || lines.len() >= CART_LINES_MAX {
                    consistent = false;
                    break;
                }
                lines.push(HoldLineInfo {
                    sku: SkuIdx(view.sku),
                    qty: view.qty,
                    sold: view.sold,
                    channel: Source::unpack(view.source).channel,
                });
                if view.next_line == NO_LINE {
                    break;
                }
                match self.holds.read(view.next_line) {
                    Some(next) if hold::state(next.word) == LINE => view = next,
                    _ => {
                        consistent = false;
                        break;
                    }
                }
            }
            // The head word unchanged means no line was reused under us.
            let again = self.holds.read(hold.slot()).map(|v| v.word);
            if consistent && again == Some(head.word) && lines.len() == head.lines as usize {
                return Ok(HoldInfo {
                    hold,
                    state,
                    deadline_ms: hold::deadline(head.word),
                    latest_ms: head.latest_ms,
                    buyer: BuyerId(head.buyer),
                    lines,
                });
            }
            if again.is_some_and(|w| hold::generation(w) != hold.generation()) {
                return Err(HoldError::HoldNotFound);
            }
        }
        Err(HoldError::HoldNotFound)
    }

    /// Undoes a reservation whose durable write failed or timed out, unless
    /// its answer was confirmed first.
    ///
    /// With a request id: one CAS withdraws the provisional answer; a
    /// replay reading it from then on gets `InProgress`. If that CAS loses
    /// because a replay already confirmed the answer (it saw the write
    /// durable), nothing changes and this returns false: acknowledge the
    /// reservation instead. If it wins, the hold is released (as
    /// `release(hold, None)` does) and the answer forgotten, so a retry
    /// runs afresh; returns true. A request id with no provisional answer
    /// for this hold (none was recorded, or it aged out after a whole
    /// request window) is treated as no request id. With
    /// `provisional_reservations` off every answer is final at once, so
    /// with a request id this returns false.
    ///
    /// Without a request id: releases the hold; returns true.
    ///
    /// The release is refused like any release when the event queue is
    /// full (`Overloaded`); the hold then stays until its deadline, when
    /// the expirer reclaims it. It is never acknowledged either way.
    pub fn undo_reservation(&self, hold: HoldId, request: Option<RequestId>) -> bool {
        let withdrawn = match request {
            None => None,
            Some(request) => match self.requests.withdraw(request.0, hold) {
                Withdrawal::Withdrawn(w) => Some(w),
                Withdrawal::Confirmed => return false,
                Withdrawal::Absent => None,
            },
        };
        // Already ended (expired meanwhile) or refused as overloaded: the
        // hold is not acknowledged and its units come back at the latest
        // at its deadline.
        let _ = self.release(hold, None);
        // After the release: until here, a replay reads "in progress", and
        // a retry cannot run afresh while the hold is still held.
        if let Some(w) = withdrawn {
            w.forget();
            if let Some(request) = request {
                self.emit_forgotten(request);
            }
        }
        true
    }
}

fn lost_to_error(lost: Lost) -> HoldError {
    match lost {
        Lost::NotFound | Lost::Reserving | Lost::NotDue(_) => HoldError::HoldNotFound,
        Lost::Ended(HoldState::Committed) => HoldError::AlreadyCommitted,
        Lost::Ended(HoldState::Released) => HoldError::AlreadyReleased,
        Lost::Ended(HoldState::Expired | HoldState::Held) => HoldError::HoldExpired,
        Lost::ExtendLimit => HoldError::ExtendLimit,
    }
}
