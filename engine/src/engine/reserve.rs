//! Reservations: one line (the hot path, no request id) or a cart, all
//! lines held or none. Checks come first, in a fixed order (SKU, quantity,
//! admission, request id, window), then the buyer limit and the stock word
//! per line, then the hold slot is filled and published.

use super::requests::reserve_fingerprint;
use super::{Engine, transition};
use crate::answer::{Line, Reservation};
use crate::buyer_limit::{BuyerId, BuyerRefusal};
use crate::catalog::{SkuEntry, SkuIdx};
use crate::channel::{ChannelIdx, Source};
use crate::error::ReserveError;
use crate::event::{EventBuf, EventKind, HoldLine};
use crate::hold::{self, Fill, LINE, NO_LINE};
use crate::idempotency::RequestId;
use crate::limits::CART_LINES_MAX;
use crate::stock::{Change, StockRefusal};
use crate::sync::Ordering;

/// A fixed-capacity list with one entry per cart line (never initialised
/// beyond its length, so a one-line reservation pays for one line).
type PerLine<T> = arrayvec::ArrayVec<T, CART_LINES_MAX>;

/// What holding one line did, kept to undo it or to announce it.
#[derive(Debug, Clone, Copy)]
struct Taken {
    granted: u32,
    counted: bool,
    /// The pool's change (`None`: a channel line served by its quota alone).
    change: Option<Change>,
    source: Source,
}

impl Engine {
    /// Holds `qty` units of `sku` for `buyer`. With `allow_partial`, holds
    /// as many as are available (at least one) instead of refusing.
    #[inline]
    pub fn reserve(
        &self,
        sku: SkuIdx,
        qty: u32,
        buyer: BuyerId,
        request: Option<RequestId>,
        allow_partial: bool,
    ) -> Result<Reservation, ReserveError> {
        self.reserve_on(sku, qty, buyer, request, allow_partial, None)
    }

    /// [`Engine::reserve`] on a sales channel (`None`: the common pool, the
    /// same as `reserve`). The units come from the channel's quota first,
    /// then from the pool, within the channel's cap.
    #[inline]
    pub fn reserve_on(
        &self,
        sku: SkuIdx,
        qty: u32,
        buyer: BuyerId,
        request: Option<RequestId>,
        allow_partial: bool,
        channel: Option<&str>,
    ) -> Result<Reservation, ReserveError> {
        match (request, channel) {
            // Nothing to remember, no channel: the one-line path, without
            // the per-line lists a cart needs.
            (None, None) => self.reserve_one(sku, qty, buyer, allow_partial),
            _ => self.reserve_lines(&[Line { sku, qty }], buyer, request, allow_partial, channel),
        }
    }

    /// [`Engine::reserve_cart`] on a sales channel, which every SKU of the
    /// cart must have (`None`: the common pool).
    pub fn reserve_cart_on(
        &self,
        lines: &[Line],
        buyer: BuyerId,
        request: Option<RequestId>,
        channel: Option<&str>,
    ) -> Result<Reservation, ReserveError> {
        self.reserve_lines(lines, buyer, request, false, channel)
    }

    /// `reserve_lines` for one line and no request id: the same checks in
    /// the same order, the same effects and events.
    #[inline]
    fn reserve_one(
        &self,
        sku: SkuIdx,
        qty: u32,
        buyer: BuyerId,
        allow_partial: bool,
    ) -> Result<Reservation, ReserveError> {
        let entry = self.catalog.get(sku).ok_or(ReserveError::UnknownSku)?;
        self.check_qty(entry, qty)?;
        if !self.admit() {
            return Err(ReserveError::Overloaded);
        }
        let now = self.now_ms();
        if !entry.window().is_open_at(now) {
            return Err(ReserveError::NotOpen);
        }
        let (index, generation) = self.holds.alloc().ok_or(ReserveError::Capacity)?;
        let min = if allow_partial { 1 } else { qty };
        // Relaxed: see `SkuEntry::settings`.
        let limit = entry.buyer_limit.load(Ordering::Relaxed);
        let (mut want, mut counted) = (qty, false);
        if limit > 0 {
            match self.buyers.acquire(sku, buyer, qty, min, limit) {
                Ok(g) => (want, counted) = (g, true),
                Err(refusal) => {
                    self.holds.unalloc(index, generation);
                    return Err(match refusal {
                        BuyerRefusal::LimitExceeded => ReserveError::LimitExceeded,
                        BuyerRefusal::Capacity => ReserveError::Capacity,
                    });
                }
            }
        }
        let change = match entry.stock.take(want, min.min(want)) {
            Ok(change) => change,
            Err(refusal) => {
                if counted {
                    self.buyers.release(sku, buyer, want);
                }
                self.holds.unalloc(index, generation);
                return Err(short_of(refusal));
            }
        };
        let granted = change.after.held - change.before.held;
        if counted && granted < want {
            self.buyers.release(sku, buyer, want - granted);
        }

        // Relaxed: see `SkuEntry::settings`.
        let ttl_ms = entry.hold_ttl_ms.load(Ordering::Relaxed);
        let lifetime_ms = entry.hold_lifetime_max_ms.load(Ordering::Relaxed);
        let deadline_ms = now.saturating_add(ttl_ms).min(hold::DEADLINE_MAX_MS);
        let latest_ms = now.saturating_add(lifetime_ms).min(hold::DEADLINE_MAX_MS);
        let hold = self.holds.hold_id(index, generation);
        self.holds.slot(index).fill(Fill {
            sku: sku.0,
            qty: granted,
            buyer: buyer.0,
            latest_ms,
            owner: hold.to_raw(),
            next_line: NO_LINE,
            lines: 1,
            counted,
            source: Source::POOL,
        });
        // Events before publishing: this hold's later events (commit, expiry)
        // can only be numbered after these.
        if let Some(log) = &self.events {
            let reserved = EventKind::Reserved {
                line: HoldLine {
                    hold,
                    sku,
                    buyer,
                    line: 0,
                    lines: 1,
                    counted,
                    source: Source::POOL,
                },
                qty: granted,
                deadline_ms,
                latest_ms,
            };
            // Taking units into a hold never makes a SKU sold out (they
            // are held), nor back in stock (it was not sold out before).
            debug_assert_eq!(transition(sku, change), None);
            log.emit_one(now, reserved, None);
        }
        self.inbox.link(index, deadline_ms);
        self.holds.slot(index).publish(generation, deadline_ms);
        self.note(sku, change);
        Ok(Reservation {
            hold,
            deadline_ms,
            units: granted,
            replayed: false,
            provisional: false,
        })
    }

    /// Checks one line's quantity against the SKU's per-order maximum
    /// (capped by the engine's).
    #[inline]
    fn check_qty(&self, entry: &SkuEntry, qty: u32) -> Result<(), ReserveError> {
        // Relaxed: see `SkuEntry::settings`.
        let max = entry
            .order_units_max
            .load(Ordering::Relaxed)
            .min(self.config.order_units_max);
        if qty == 0 {
            Err(ReserveError::InvalidQty)
        } else if qty > max {
            Err(ReserveError::QtyAboveMax { max })
        } else {
            Ok(())
        }
    }

    /// Holds every line of a cart, or none of them.
    pub fn reserve_cart(
        &self,
        lines: &[Line],
        buyer: BuyerId,
        request: Option<RequestId>,
    ) -> Result<Reservation, ReserveError> {
        self.reserve_lines(lines, buyer, request, false, None)
    }

    fn reserve_lines(
        &self,
        lines: &[Line],
        buyer: BuyerId,
        request: Option<RequestId>,
        allow_partial: bool,
        channel: Option<&str>,
    ) -> Result<Reservation, ReserveError> {
        if lines.is_empty() || lines.len() > CART_LINES_MAX {
            return Err(ReserveError::CartSize);
        }
        // Partial fills are for one line only: `reserve` is the only
        // caller that allows them.
        debug_assert!(!allow_partial || lines.len() == 1);
        let mut entries: PerLine<&SkuEntry> = PerLine::new();
        let mut channels: PerLine<Option<ChannelIdx>> = PerLine::new();
        for (i, line) in lines.iter().enumerate() {
            let entry = self.catalog.get(line.sku).ok_or(ReserveError::UnknownSku)?;
            self.check_qty(entry, line.qty)?;
            if lines[..i].iter().any(|l| l.sku == line.sku) {
                return Err(ReserveError::DuplicateSku);
            }
            channels.push(match channel {
                None => None,
                Some(id) => Some(
                    entry
                        .channels
                        .get()
                        .and_then(|set| set.find(id))
                        .ok_or(ReserveError::UnknownChannel)?,
                ),
            });
            entries.push(entry);
        }
        if !self.admit() {
            return Err(ReserveError::Overloaded);
        }
        let ticket = match request {
            None => None,
            Some(request) => {
                let fp = reserve_fingerprint(lines, buyer, allow_partial, &channels);
                match self.claim_reservation(request, fp) {
                    Ok(ticket) => Some(ticket),
                    Err(seen) => return seen,
                }
            }
        };
        let result = self.hold_lines(lines, &entries, &channels, buyer, allow_partial);
        if let Some(ticket) = ticket {
            self.remember_reservation(ticket, request, &result);
        }
        result
    }

    /// Reserves the lines; all or nothing.
    #[inline]
    fn hold_lines(
        &self,
        lines: &[Line],
        entries: &[&SkuEntry],
        channels: &[Option<ChannelIdx>],
        buyer: BuyerId,
        allow_partial: bool,
    ) -> Result<Reservation, ReserveError> {
        let now = self.now_ms();
        let mut ttl_ms = u64::MAX;
        let mut lifetime_ms = u64::MAX;
        for entry in entries {
            if !entry.window().is_open_at(now) {
                return Err(ReserveError::NotOpen);
            }
            let settings = entry.settings();
            ttl_ms = ttl_ms.min(settings.hold_ttl_ms);
            lifetime_ms = lifetime_ms.min(settings.hold_lifetime_max_ms);
        }

        let mut slots: PerLine<(u32, u32)> = PerLine::new();
        for _ in lines {
            match self.holds.alloc() {
                Some(s) => slots.push(s),
                None => {
                    for &(index, generation) in &slots {
                        self.holds.unalloc(index, generation);
                    }
                    return Err(ReserveError::Capacity);
                }
            }
        }

        let mut taken: PerLine<Taken> = PerLine::new();
        let mut failure = None;
        for ((line, entry), &channel) in lines.iter().zip(entries).zip(channels) {
            let min = if allow_partial { 1 } else { line.qty };
            // Relaxed: see `SkuEntry::settings`.
            let limit = entry.buyer_limit.load(Ordering::Relaxed);
            let (mut want, mut counted) = (line.qty, false);
            if limit > 0 {
                match self.buyers.acquire(line.sku, buyer, line.qty, min, limit) {
                    Ok(g) => (want, counted) = (g, true),
                    Err(BuyerRefusal::LimitExceeded) => {
                        failure = Some(ReserveError::LimitExceeded);
                        break;
                    }
                    Err(BuyerRefusal::Capacity) => {
                        failure = Some(ReserveError::Capacity);
                        break;
                    }
                }
            }
            match take_line(entry, channel, want, min.min(want)) {
                Ok(t) => {
                    if counted && t.granted < want {
                        self.buyers.release(line.sku, buyer, want - t.granted);
                    }
                    taken.push(Taken { counted, ..t });
                }
                Err(refusal) => {
                    if counted {
                        self.buyers.release(line.sku, buyer, want);
                    }
                    failure = Some(refusal);
                    break;
                }
            }
        }

        let mut buf = EventBuf::new();
        if let Some(error) = failure {
            // Undo the lines already held. Nothing to announce: a take
            // leaves units held, and giving held units back starts from
            // held > 0, so neither enters or leaves sold out
            // (`Counts::sold_out`).
            for ((line, entry), t) in lines.iter().zip(entries).zip(&taken) {
                let gave_back = untake_line(entry, t);
                if t.counted {
                    self.buyers.release(line.sku, buyer, t.granted);
                }
                for change in [t.change, gave_back].into_iter().flatten() {
                    debug_assert_eq!(transition(line.sku, change), None);
                    self.note(line.sku, change);
                }
                if t.source.channel.is_some() {
                    self.mark_changed(line.sku, entry);
                }
            }
            for &(index, generation) in &slots {
                self.holds.unalloc(index, generation);
            }
            return Err(error);
        }

        let n = lines.len();
        let deadline_ms = now.saturating_add(ttl_ms).min(hold::DEADLINE_MAX_MS);
        let latest_ms = now.saturating_add(lifetime_ms).min(hold::DEADLINE_MAX_MS);
        let (head, head_gen) = slots[0];
        let hold = self.holds.hold_id(head, head_gen);
        let mut units = 0;
        for (i, (line, t)) in lines.iter().zip(&taken).enumerate() {
            let (index, generation) = slots[i];
            let slot = self.holds.slot(index);
            slot.fill(Fill {
                sku: line.sku.0,
                qty: t.granted,
                buyer: buyer.0,
                latest_ms,
                owner: hold.to_raw(),
                next_line: slots.get(i + 1).map_or(NO_LINE, |s| s.0),
                lines: n as u32,
                counted: t.counted,
                source: t.source,
            });
            if i > 0 {
                // Relaxed: published by the head's Release store below.
                slot.word
                    .store(hold::pack(generation, LINE, 0), Ordering::Relaxed);
            }
            units += t.granted;
            let line_ref = HoldLine {
                hold,
                sku: line.sku,
                buyer,
                line: i as u8,
                lines: n as u8,
                counted: t.counted,
                source: t.source,
            };
            buf.push(EventKind::Reserved {
                line: line_ref,
                qty: t.granted,
                deadline_ms,
                latest_ms,
            });
        }
        // No sold-out or back-in-stock event: see `reserve_one`.
        debug_assert!(
            lines
                .iter()
                .zip(&taken)
                .all(|(line, t)| t.change.is_none_or(|c| transition(line.sku, c).is_none()))
        );
        // Events before publishing: this hold's later events (commit, expiry)
        // can only be numbered after these.
        self.emit(now, &buf);
        self.inbox.link(head, deadline_ms);
        self.holds.slot(head).publish(head_gen, deadline_ms);
        for ((line, entry), t) in lines.iter().zip(entries).zip(&taken) {
            if let Some(change) = t.change {
                self.note(line.sku, change);
            }
            if t.source.channel.is_some() {
                // A quota's word carries no changed flag the broadcaster
                // reads: flag the SKU's.
                self.mark_changed(line.sku, entry);
            }
        }
        Ok(Reservation {
            hold,
            deadline_ms,
            units,
            replayed: false,
            provisional: false,
        })
    }
}

/// Holds one line's units: from the pool, or on a channel (its quota, then
/// the pool, within its cap). `counted` is left false for the caller.
#[inline]
fn take_line(
    entry: &SkuEntry,
    channel: Option<ChannelIdx>,
    want: u32,
    min: u32,
) -> Result<Taken, ReserveError> {
    match channel {
        None => {
            let change = entry.stock.take(want, min).map_err(short_of)?;
            Ok(Taken {
                granted: change.after.held - change.before.held,
                counted: false,
                change: Some(change),
                source: Source::POOL,
            })
        }
        Some(c) => {
            let set = entry.channels.get().expect("a resolved channel has a set");
            let t = set.get(c).take(&entry.stock, want, min)?;
            Ok(Taken {
                granted: t.granted,
                counted: false,
                change: t.pool,
                source: Source {
                    channel: Some(c),
                    quota: t.quota,
                },
            })
        }
    }
}

/// Gives a line taken by `take_line` back (a cart's rollback). Returns the
/// pool's change, if the pool was touched.
fn untake_line(entry: &SkuEntry, t: &Taken) -> Option<Change> {
    match t.source.channel {
        None => Some(entry.stock.untake(t.granted)),
        Some(c) => {
            let set = entry.channels.get().expect("a channel line has a set");
            set.get(c)
                .settle(&entry.stock, t.granted, t.source.quota, 0)
        }
    }
}

/// The refusal for a line the stock could not fill: none left at all, or
/// some but fewer than asked (a partial fill takes any, so it is only ever
/// refused with none left).
#[inline]
fn short_of(refusal: StockRefusal) -> ReserveError {
    let (StockRefusal::Short(c) | StockRefusal::Overflow(c)) = refusal;
    if c.available == 0 {
        ReserveError::SoldOut
    } else {
        ReserveError::NotEnoughAvailable {
            available: c.available,
        }
    }
}
