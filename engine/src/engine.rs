//! The [`Engine`]: the reservation contract on top of the catalog, the hold
//! table, the buyer and request tables and the event log.
//!
//! Every buyer-facing operation is lock-free: a reservation is a few CASes
//! (buyer limit, stock word, publish of the hold slot); a commit, release,
//! extend or expiry is one CAS on the hold's state word that decides the
//! race, followed by the winner's CAS on the stock word. Nothing here blocks,
//! sleeps, does I/O or logs; outcomes are returned, not printed.

use crate::buyer::{BuyerId, BuyerRefusal, BuyerTable, mix64};
use crate::catalog::{Catalog, SaleWindow, SkuEntry, SkuIdx, SkuSettings, SkuSpec};
use crate::clock::Clock;
use crate::error::{CatalogError, HoldError, ReserveError};
use crate::event::{EventBuf, EventKind, EventLog, HoldLine};
use crate::expiry::{self, Expirer};
use crate::hold::{
    self, Fill, FreeBatch, HoldId, HoldState, HoldTable, LINE, Lost, NO_LINE, To, Won,
};
use crate::lanes::{self, Lanes};
use crate::limits::{CART_LINES_MAX, EngineConfig, SKU_UNITS_MAX};
use crate::request::{
    Claim, OUTCOME_ERR, OUTCOME_OK, OUTCOME_PAYLOAD, OUTCOME_PROVISIONAL, RequestId, RequestTable,
    Ticket, Withdrawal, settled,
};
use crate::stock::{Change, Counts, StockRefusal};
use crate::sync::{AtomicBool, Ordering};
use crossbeam::queue::ArrayQueue;
use std::sync::Arc;

/// One line of a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Line {
    pub sku: SkuIdx,
    pub qty: u32,
}

/// A successful reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    pub hold: HoldId,
    /// When the hold expires unless committed or extended.
    pub deadline_ms: u64,
    /// Units held in all (less than asked only with `allow_partial`).
    pub units: u32,
    /// True when this is the remembered answer to an earlier request with
    /// the same request id (nothing changed this time).
    pub replayed: bool,
    /// True when this replays an answer whose durable write is not
    /// confirmed yet (`EngineConfig::provisional_reservations`): wait for
    /// that write, then [`Engine::confirm_reservation`] before
    /// acknowledging it. Always false on a fresh reservation.
    pub provisional: bool,
}

/// A successful commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settlement {
    /// Units sold.
    pub sold: u32,
    /// Units that went back on sale (partial commit).
    pub returned: u32,
    /// The remembered answer to an earlier request with the same id.
    pub replayed: bool,
}

/// One line of a hold, as reported by [`Engine::hold`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldLineInfo {
    pub sku: SkuIdx,
    pub qty: u32,
    /// Units sold on this line (after a commit).
    pub sold: u32,
}

/// A hold, as reported by [`Engine::hold`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldInfo {
    pub hold: HoldId,
    pub state: HoldState,
    pub deadline_ms: u64,
    /// Latest deadline extensions may reach.
    pub latest_ms: u64,
    pub buyer: BuyerId,
    pub lines: Vec<HoldLineInfo>,
}

/// A SKU's counts, window and settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkuSnapshot {
    pub sku: SkuIdx,
    pub id: Arc<str>,
    pub counts: Counts,
    pub window: SaleWindow,
    pub settings: SkuSettings,
}

/// A fixed-capacity list with one entry per cart line (never initialised
/// beyond its length, so a one-line reservation pays for one line).
type PerLine<T> = arrayvec::ArrayVec<T, CART_LINES_MAX>;

/// What holding one line did, kept to undo it or to announce it.
#[derive(Debug, Clone, Copy)]
struct Taken {
    granted: u32,
    counted: bool,
    change: Change,
}

/// What ending one line of a hold did (see `Engine::end_line`).
#[derive(Debug, Clone, Copy)]
struct LineEnd {
    sold: u32,
    returned: u32,
    event: EventKind,
    /// The stock transition the line's units caused, if any.
    then: Option<EventKind>,
}

/// How a hold ends; the winner of its CAS applies this.
#[derive(Debug, Clone, Copy)]
pub(crate) enum End<'a> {
    /// Units sold per line (`None`: everything held).
    Commit(Option<&'a [u32]>),
    Release,
    Expire,
}

/// A remembered answer `(outcome, deadline_ms, aux)`, or why the request id
/// cannot be used now.
type Seen = Result<(u64, u64, u32), HoldError>;

/// Operation tags mixed into request fingerprints.
const OP_RESERVE: u64 = 1;
const OP_COMMIT: u64 = 2;
const OP_RELEASE: u64 = 3;
const OP_EXTEND: u64 = 4;

/// The reservation engine. Shared as `Arc<Engine>`; its [`Expirer`] runs
/// on one thread of the caller's choosing.
pub struct Engine {
    config: EngineConfig,
    clock: Arc<dyn Clock>,
    pub(crate) catalog: Catalog,
    pub(crate) holds: HoldTable,
    pub(crate) buyers: BuyerTable,
    pub(crate) requests: RequestTable,
    events: Option<EventLog>,
    /// Link / unlink notices for the expirer's wheel (see [`crate::expiry`]).
    /// Each hold slot has at most one of each outstanding, so a capacity of
    /// twice the hold table means a push can never fail.
    pub(crate) inbox: Lanes<u64>,
    /// SKUs changed since the broadcaster last looked; each SKU is queued at
    /// most once (its dirty flag), so `skus_max` capacity suffices.
    changed: ArrayQueue<u32>,
    /// SKUs given a scheduled window, for the expirer to open on time.
    pub(crate) scheduled: ArrayQueue<u32>,
    /// `expiry_tick_ms` as a multiplier, for the expirer's link notices.
    pub(crate) ticks: expiry::Ticks,
    expirer_taken: AtomicBool,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Builds an engine and its expirer. Allocates every table now.
    pub fn new(
        config: EngineConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<(Arc<Self>, Expirer), String> {
        Self::build(config, clock, &|_| false)
    }

    /// Builds an engine whose hold slots `taken` are kept out of the free
    /// list (recovery places restored holds there).
    pub(crate) fn build(
        config: EngineConfig,
        clock: Arc<dyn Clock>,
        taken: &dyn Fn(u32) -> bool,
    ) -> Result<(Arc<Self>, Expirer), String> {
        config.validate()?;
        // Every lane needs at least one hold slot.
        let lanes = if config.lanes > config.holds_max {
            1 << config.holds_max.ilog2()
        } else {
            config.lanes
        };
        let config = EngineConfig { lanes, ..config };
        let now = clock.now_ms();
        let engine = Arc::new(Self {
            catalog: Catalog::new(config.skus_max),
            holds: HoldTable::new(
                config.holds_max,
                config.lanes,
                config.node_id,
                config.incarnation,
                taken,
            ),
            buyers: BuyerTable::new(config.buyer_entries_max),
            requests: RequestTable::new(config.request_entries_max, config.request_window_ms, now),
            events: (config.events_max > 0).then(|| {
                EventLog::new(
                    config.events_max,
                    config.events_headroom,
                    config.lanes as usize,
                )
            }),
            inbox: Lanes::new(config.lanes as usize, |lane| {
                2 * lanes::share(config.holds_max as usize, config.lanes as usize, lane)
            }),
            changed: ArrayQueue::new(config.skus_max as usize),
            scheduled: ArrayQueue::new(config.skus_max as usize),
            ticks: expiry::Ticks::new(config.expiry_tick_ms),
            expirer_taken: AtomicBool::new(false),
            clock,
            config,
        });
        let expirer = engine.take_expirer().expect("fresh engine");
        Ok((engine, expirer))
    }

    fn take_expirer(self: &Arc<Self>) -> Option<Expirer> {
        // Relaxed: only guards against a second expirer being built.
        if self.expirer_taken.swap(true, Ordering::Relaxed) {
            return None;
        }
        Some(Expirer::new(self.clone()))
    }

    /// The bounds this engine was built with.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The engine clock's current time.
    #[inline]
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// The journal's event queue (`None` when `events_max` is 0).
    pub fn events(&self) -> Option<&EventLog> {
        self.events.as_ref()
    }

    /// Hold slots in use (live holds and those not yet reclaimed).
    pub fn holds_in_use(&self) -> u32 {
        self.holds.capacity() - self.holds.free_len() as u32
    }

    /// Hold table capacity.
    pub fn holds_capacity(&self) -> u32 {
        self.holds.capacity()
    }

    #[inline]
    fn admit(&self) -> bool {
        self.events.as_ref().is_none_or(EventLog::admits)
    }

    #[inline]
    fn emit(&self, now_ms: u64, buf: &EventBuf) {
        if let Some(log) = &self.events {
            log.emit(now_ms, buf.as_slice());
        }
    }

    /// Queues a SKU for the broadcaster after a stock change, if that change
    /// set its changed flag (the flag rides in the stock word's CAS, so the
    /// hot path pays no extra atomic for it).
    #[inline]
    fn note(&self, sku: SkuIdx, change: Change) {
        if change.newly_dirty {
            // Cannot fail: each SKU is queued at most once (its flag).
            let _ = self.changed.push(sku.0);
        }
    }

    /// Marks a SKU changed for a change outside its counts (window,
    /// settings, creation).
    pub(crate) fn mark_changed(&self, sku: SkuIdx, entry: &SkuEntry) {
        if entry.stock.mark_dirty() {
            // Cannot fail: each SKU is queued at most once (its flag).
            let _ = self.changed.push(sku.0);
        }
    }

    /// Moves the SKUs changed since the last call into `out` (at most
    /// `max`). Read their counts after this returns: a change made after
    /// the flag was cleared queues the SKU again.
    pub fn take_changed(&self, out: &mut Vec<SkuIdx>, max: usize) {
        for _ in 0..max {
            let Some(index) = self.changed.pop() else {
                break;
            };
            let sku = SkuIdx(index);
            if let Some(entry) = self.catalog.get(sku) {
                entry.stock.take_dirty();
                out.push(sku);
            }
        }
    }

    // ----- catalog -------------------------------------------------------

    /// Resolves a SKU id. Do this once per request, not per step.
    pub fn sku(&self, id: &str) -> Option<SkuIdx> {
        self.catalog.lookup(id)
    }

    /// The id of a SKU.
    pub fn sku_id(&self, sku: SkuIdx) -> Option<Arc<str>> {
        self.catalog.get(sku).and_then(|e| e.id.get().cloned())
    }

    /// Counts, window and settings of one SKU.
    pub fn snapshot(&self, sku: SkuIdx) -> Option<SkuSnapshot> {
        let entry = self.catalog.get(sku)?;
        Some(Self::snapshot_of(sku, entry))
    }

    fn snapshot_of(sku: SkuIdx, entry: &SkuEntry) -> SkuSnapshot {
        SkuSnapshot {
            sku,
            id: entry.id.get().cloned().unwrap_or_else(|| Arc::from("")),
            counts: entry.stock.load(),
            window: entry.window(),
            settings: entry.settings(),
        }
    }

    /// Every SKU, in creation order.
    pub fn snapshots(&self) -> Vec<SkuSnapshot> {
        self.catalog
            .iter()
            .map(|(sku, e)| Self::snapshot_of(sku, e))
            .collect()
    }

    /// Number of SKUs.
    pub fn sku_count(&self) -> usize {
        self.catalog.iter().count()
    }

    /// Catalog capacity.
    pub fn skus_capacity(&self) -> u32 {
        self.catalog.capacity()
    }

    fn entry(&self, sku: SkuIdx) -> Result<&SkuEntry, CatalogError> {
        self.catalog.get(sku).ok_or(CatalogError::UnknownSku)
    }

    /// Creates a SKU with `spec.total` units.
    pub fn create_sku(&self, id: &str, spec: SkuSpec) -> Result<SkuIdx, CatalogError> {
        spec.settings.check()?;
        if spec.total > SKU_UNITS_MAX {
            return Err(CatalogError::TotalAboveMax);
        }
        if !self.admit() {
            return Err(CatalogError::Overloaded);
        }
        let now = self.now_ms();
        let sku = self.catalog.create(id, |entry| {
            entry.store_settings(spec.settings);
            entry
                .stock
                .restock(spec.total)
                .expect("total checked above");
            // Relaxed: published with the entry by the catalog's OnceLock.
            entry.window.store(spec.window.pack(), Ordering::Relaxed);
        })?;
        let mut buf = EventBuf::new();
        buf.push(EventKind::SkuCreated {
            sku,
            settings: spec.settings,
        });
        if spec.total > 0 {
            buf.push(EventKind::Restocked {
                sku,
                qty: spec.total,
            });
        }
        buf.push(EventKind::WindowChanged {
            sku,
            window: spec.window,
        });
        self.emit(now, &buf);
        self.after_window_change(sku, spec.window);
        // A new SKU is in no queue yet; its flag was set by the initial
        // stock write, so queue it here unconditionally.
        self.entry(sku)?.stock.mark_dirty();
        let _ = self.changed.push(sku.0);
        Ok(sku)
    }

    /// Replaces a SKU's settings. Live holds keep the deadline they have;
    /// a new buyer limit applies to reservations from now on.
    pub fn update_settings(&self, sku: SkuIdx, settings: SkuSettings) -> Result<(), CatalogError> {
        let entry = self.entry(sku)?;
        settings.check()?;
        if !self.admit() {
            return Err(CatalogError::Overloaded);
        }
        entry.store_settings(settings);
        let mut buf = EventBuf::new();
        buf.push(EventKind::SettingsChanged { sku, settings });
        self.emit(self.now_ms(), &buf);
        self.mark_changed(sku, entry);
        Ok(())
    }

    /// Announces a host's stock change (restock, adjust, new total).
    fn stock_change(&self, sku: SkuIdx, change: Change) -> Counts {
        let mut buf = EventBuf::new();
        let delta = i64::from(change.after.available) - i64::from(change.before.available);
        if delta > 0 {
            buf.push(EventKind::Restocked {
                sku,
                qty: delta as u32,
            });
        } else if delta < 0 {
            buf.push(EventKind::Adjusted {
                sku,
                qty: (-delta) as u32,
            });
        }
        push_transition(&mut buf, sku, change);
        self.emit(self.now_ms(), &buf);
        self.note(sku, change);
        change.after
    }

    /// Adds `qty` units (restock).
    pub fn restock(&self, sku: SkuIdx, qty: u32) -> Result<Counts, CatalogError> {
        let entry = self.entry(sku)?;
        if qty == 0 {
            return Err(CatalogError::InvalidQty);
        }
        if !self.admit() {
            return Err(CatalogError::Overloaded);
        }
        let change = entry
            .stock
            .restock(qty)
            .map_err(|_| CatalogError::TotalAboveMax)?;
        Ok(self.stock_change(sku, change))
    }

    /// Removes `qty` available units. Held and sold units are never removed.
    pub fn adjust_down(&self, sku: SkuIdx, qty: u32) -> Result<Counts, CatalogError> {
        let entry = self.entry(sku)?;
        if qty == 0 {
            return Err(CatalogError::InvalidQty);
        }
        if !self.admit() {
            return Err(CatalogError::Overloaded);
        }
        let change = entry.stock.remove(qty).map_err(|r| match r {
            StockRefusal::Short(c) | StockRefusal::Overflow(c) => {
                CatalogError::NotEnoughAvailable {
                    available: c.available,
                }
            }
        })?;
        Ok(self.stock_change(sku, change))
    }

    /// Sets the total units by adding or removing available ones.
    pub fn set_total(&self, sku: SkuIdx, total: u32) -> Result<Counts, CatalogError> {
        let entry = self.entry(sku)?;
        if !self.admit() {
            return Err(CatalogError::Overloaded);
        }
        let change = entry.stock.set_total(total).map_err(|r| match r {
            StockRefusal::Short(c) => CatalogError::TotalBelowCommitted {
                committed: c.held + c.sold,
            },
            StockRefusal::Overflow(_) => CatalogError::TotalAboveMax,
        })?;
        Ok(self.stock_change(sku, change))
    }

    /// Opens, pauses, closes or schedules the sale.
    pub fn set_window(&self, sku: SkuIdx, window: SaleWindow) -> Result<(), CatalogError> {
        let entry = self.entry(sku)?;
        if !self.admit() {
            return Err(CatalogError::Overloaded);
        }
        // Relaxed: see `SkuEntry::window`.
        entry.window.store(window.pack(), Ordering::Relaxed);
        let mut buf = EventBuf::new();
        buf.push(EventKind::WindowChanged { sku, window });
        self.emit(self.now_ms(), &buf);
        self.after_window_change(sku, window);
        self.mark_changed(sku, entry);
        Ok(())
    }

    fn after_window_change(&self, sku: SkuIdx, window: SaleWindow) {
        if matches!(window, SaleWindow::Scheduled { .. }) {
            // Full only if every SKU was scheduled since the expirer last
            // ran; then the expirer's periodic sweep still finds it.
            let _ = self.scheduled.push(sku.0);
        }
    }

    /// Opens a scheduled window whose time has come (called by the expirer).
    /// Returns whether this call opened it.
    pub(crate) fn open_if_due(&self, sku: SkuIdx, now_ms: u64) -> Option<bool> {
        let entry = self.catalog.get(sku)?;
        // Relaxed: see `SkuEntry::window`.
        let word = entry.window.load(Ordering::Relaxed);
        match SaleWindow::unpack(word) {
            SaleWindow::Scheduled { opens_at_ms } if now_ms >= opens_at_ms => {
                if !self.admit() {
                    return Some(false);
                }
                // Relaxed: a CAS so a host's concurrent change wins over us.
                let opened = entry
                    .window
                    .compare_exchange(
                        word,
                        SaleWindow::Open.pack(),
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    )
                    .is_ok();
                if opened {
                    let mut buf = EventBuf::new();
                    buf.push(EventKind::WindowChanged {
                        sku,
                        window: SaleWindow::Open,
                    });
                    self.emit(now_ms, &buf);
                    self.mark_changed(sku, entry);
                }
                Some(opened)
            }
            SaleWindow::Scheduled { .. } => Some(false),
            _ => None,
        }
    }

    // ----- reservations --------------------------------------------------

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
        match request {
            // Nothing to remember: the one-line path, without the per-line
            // lists a cart needs.
            None => self.reserve_one(sku, qty, buyer, allow_partial),
            Some(_) => self.reserve_lines(&[Line { sku, qty }], buyer, request, allow_partial),
        }
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
        expiry::notify_link(&self.inbox, index, deadline_ms, self.ticks);
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
        self.reserve_lines(lines, buyer, request, false)
    }

    fn reserve_lines(
        &self,
        lines: &[Line],
        buyer: BuyerId,
        request: Option<RequestId>,
        allow_partial: bool,
    ) -> Result<Reservation, ReserveError> {
        if lines.is_empty() || lines.len() > CART_LINES_MAX {
            return Err(ReserveError::CartSize);
        }
        // Partial fills are for one line only: `reserve` is the only
        // caller that allows them.
        debug_assert!(!allow_partial || lines.len() == 1);
        let mut entries: PerLine<&SkuEntry> = PerLine::new();
        for (i, line) in lines.iter().enumerate() {
            let entry = self.catalog.get(line.sku).ok_or(ReserveError::UnknownSku)?;
            self.check_qty(entry, line.qty)?;
            if lines[..i].iter().any(|l| l.sku == line.sku) {
                return Err(ReserveError::DuplicateSku);
            }
            entries.push(entry);
        }
        if !self.admit() {
            return Err(ReserveError::Overloaded);
        }
        let ticket = match request {
            None => None,
            Some(request) => {
                let mut fp = fingerprint(OP_RESERVE, &[buyer.0, u64::from(allow_partial)]);
                for line in lines {
                    fp = mix64(fp ^ (u64::from(line.sku.0) << 32 | u64::from(line.qty)));
                }
                match self.requests.claim(request.0, fp as u32) {
                    Claim::New(ticket) => Some(ticket),
                    Claim::Done(r) => return decode_reservation(r.outcome, r.deadline_ms, r.aux),
                    Claim::InProgress => return Err(ReserveError::InProgress),
                    Claim::Mismatch => return Err(ReserveError::RequestMismatch),
                    Claim::Full => return Err(ReserveError::Capacity),
                }
            }
        };
        let result = self.hold_lines(lines, &entries, buyer, allow_partial);
        if let Some(ticket) = ticket {
            match result {
                Ok(r) => {
                    // Provisional until the caller confirms its write (see
                    // `confirm_reservation`); a replay meanwhile says so.
                    let tag = if self.config.provisional_reservations {
                        OUTCOME_PROVISIONAL
                    } else {
                        OUTCOME_OK
                    };
                    self.remember(
                        ticket,
                        request,
                        tag | r.hold.to_raw(),
                        r.deadline_ms,
                        r.units,
                    )
                }
                Err(e) => self.remember_err(ticket, request, e.is_transient(), e.to_raw()),
            }
        }
        result
    }

    /// Reserves the lines; all or nothing.
    #[inline]
    fn hold_lines(
        &self,
        lines: &[Line],
        entries: &[&SkuEntry],
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
        for (line, entry) in lines.iter().zip(entries) {
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
            match entry.stock.take(want, min.min(want)) {
                Ok(change) => {
                    let granted = change.after.held - change.before.held;
                    if counted && granted < want {
                        self.buyers.release(line.sku, buyer, want - granted);
                    }
                    taken.push(Taken {
                        granted,
                        counted,
                        change,
                    });
                }
                Err(refusal) => {
                    if counted {
                        self.buyers.release(line.sku, buyer, want);
                    }
                    failure = Some(short_of(refusal));
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
                let gave_back = entry.stock.untake(t.granted);
                debug_assert_eq!(transition(line.sku, t.change), None);
                debug_assert_eq!(transition(line.sku, gave_back), None);
                if t.counted {
                    self.buyers.release(line.sku, buyer, t.granted);
                }
                self.note(line.sku, t.change);
                self.note(line.sku, gave_back);
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
                .all(|(line, t)| transition(line.sku, t.change).is_none())
        );
        // Events before publishing: this hold's later events (commit, expiry)
        // can only be numbered after these.
        self.emit(now, &buf);
        expiry::notify_link(&self.inbox, head, deadline_ms, self.ticks);
        self.holds.slot(head).publish(head_gen, deadline_ms);
        for (line, t) in lines.iter().zip(&taken) {
            self.note(line.sku, t.change);
        }
        Ok(Reservation {
            hold,
            deadline_ms,
            units,
            replayed: false,
            provisional: false,
        })
    }

    // ----- settling holds --------------------------------------------------

    /// Remembers a request's answer, and tells the journal (so a retry
    /// after a restart still gets the first answer). The journal gets the
    /// answer's final form: it is only persisted with the write it answers,
    /// so once persisted it is confirmed.
    fn remember(
        &self,
        ticket: Ticket<'_>,
        request: Option<RequestId>,
        outcome: u64,
        deadline_ms: u64,
        aux: u32,
    ) {
        let fingerprint = ticket.fingerprint();
        ticket.record(outcome, deadline_ms, aux);
        if let Some(request) = request {
            let mut buf = EventBuf::new();
            buf.push(EventKind::RequestDone {
                request,
                fingerprint,
                outcome: settled(outcome),
                deadline_ms,
                aux,
            });
            self.emit(self.now_ms(), &buf);
        }
    }

    fn remember_err(
        &self,
        ticket: Ticket<'_>,
        request: Option<RequestId>,
        transient: bool,
        raw: u64,
    ) {
        if transient {
            ticket.abandon();
        } else {
            self.remember(ticket, request, OUTCOME_ERR | raw, 0, 0);
        }
    }

    /// Claims a request id for a hold operation: `Ok(ticket)` to go ahead,
    /// `Err(answer)` when the request was seen before.
    fn claim_hold_request(
        &self,
        request: Option<RequestId>,
        fingerprint: u64,
    ) -> Result<Option<Ticket<'_>>, Seen> {
        let Some(request) = request else {
            return Ok(None);
        };
        match self.requests.claim(request.0, fingerprint as u32) {
            Claim::New(ticket) => Ok(Some(ticket)),
            Claim::Done(r) => Err(Ok((r.outcome, r.deadline_ms, r.aux))),
            Claim::InProgress => Err(Err(HoldError::InProgress)),
            Claim::Mismatch => Err(Err(HoldError::RequestMismatch)),
            Claim::Full => Err(Err(HoldError::Capacity)),
        }
    }

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
        let mut fp = fingerprint(OP_COMMIT, &[hold.to_raw(), u64::from(sold.is_some())]);
        for &q in sold.unwrap_or(&[]) {
            fp = mix64(fp ^ u64::from(q));
        }
        let ticket = match self.claim_hold_request(request, fp) {
            Ok(t) => t,
            Err(Ok((outcome, _, aux))) => {
                return decode(outcome).map(|sold| Settlement {
                    sold: sold as u32,
                    returned: aux,
                    replayed: true,
                });
            }
            Err(Err(e)) => return Err(e),
        };
        let result = self.commit_now(hold, sold);
        if let Some(ticket) = ticket {
            match result {
                Ok(s) => self.remember(
                    ticket,
                    request,
                    OUTCOME_OK | u64::from(s.sold),
                    0,
                    s.returned,
                ),
                Err(e) => self.remember_err(ticket, request, e.is_transient(), e.to_raw()),
            }
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
        let (sold, returned) = self.end(hold, To::Commit, End::Commit(sold))?;
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
        let ticket =
            match self.claim_hold_request(request, fingerprint(OP_RELEASE, &[hold.to_raw()])) {
                Ok(t) => t,
                Err(Ok((outcome, _, _))) => return decode(outcome).map(|_| ()),
                Err(Err(e)) => return Err(e),
            };
        let result = self.end(hold, To::Release, End::Release).map(|_| ());
        if let Some(ticket) = ticket {
            match result {
                Ok(()) => self.remember(ticket, request, OUTCOME_OK, 0, 0),
                Err(e) => self.remember_err(ticket, request, e.is_transient(), e.to_raw()),
            }
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
        let fp = fingerprint(OP_EXTEND, &[hold.to_raw(), by_ms]);
        let ticket = match self.claim_hold_request(request, fp) {
            Ok(t) => t,
            Err(Ok((outcome, deadline_ms, _))) => return decode(outcome).map(|_| deadline_ms),
            Err(Err(e)) => return Err(e),
        };
        let result = self.extend_now(hold, by_ms);
        if let Some(ticket) = ticket {
            match result {
                Ok(deadline_ms) => self.remember(ticket, request, OUTCOME_OK, deadline_ms, 0),
                Err(e) => self.remember_err(ticket, request, e.is_transient(), e.to_raw()),
            }
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
                self.apply_end(hold.slot(), End::Expire, now);
                expiry::notify_unlink(&self.inbox, hold.slot());
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
    fn end(&self, hold: HoldId, to: To, end: End<'_>) -> Result<(u32, u32), HoldError> {
        let slot = self.head_slot(hold)?;
        let now = self.now_ms();
        match slot.transition(hold.generation(), to, now) {
            Ok(Won::Committed | Won::Released) => {
                let result = self.apply_end(hold.slot(), end, now);
                expiry::notify_unlink(&self.inbox, hold.slot());
                Ok(result)
            }
            Ok(Won::ExpiredInstead) => {
                self.apply_end(hold.slot(), End::Expire, now);
                expiry::notify_unlink(&self.inbox, hold.slot());
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
    pub(crate) fn apply_end(&self, head: u32, end: End<'_>, now_ms: u64) -> (u32, u32) {
        let hold = self.holds.owner_id(head);
        let slot = self.holds.slot(head);
        // Relaxed field loads: the winner's Acquire CAS synchronised with
        // the head's Release publish, which came after every line write.
        let lines = slot.lines.load(Ordering::Relaxed) as u8;
        if slot.next_line.load(Ordering::Relaxed) != NO_LINE {
            return self.apply_end_cart(hold, head, lines, end, now_ms);
        }
        // One line, the common case: its events go out without a buffer.
        let ended = self.end_line(hold, head, 0, lines, end);
        if let Some(log) = &self.events {
            log.emit_one(now_ms, ended.event, ended.then);
        }
        (ended.sold, ended.returned)
    }

    /// `apply_end` for a hold of several lines, out of line so the one-line
    /// case does not carry its event buffer.
    #[inline(never)]
    fn apply_end_cart(
        &self,
        hold: HoldId,
        head: u32,
        lines: u8,
        end: End<'_>,
        now_ms: u64,
    ) -> (u32, u32) {
        let mut buf = EventBuf::new();
        let (mut sold_total, mut returned_total) = (0, 0);
        let mut index = head;
        let mut line = 0usize;
        while index != NO_LINE && line < CART_LINES_MAX {
            let ended = self.end_line(hold, index, line, lines, end);
            sold_total += ended.sold;
            returned_total += ended.returned;
            buf.push(ended.event);
            if let Some(then) = ended.then {
                buf.push(then);
            }
            // Relaxed: see `apply_end`.
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
    fn end_line(&self, hold: HoldId, index: u32, line: usize, lines: u8, end: End<'_>) -> LineEnd {
        let slot = self.holds.slot(index);
        // Relaxed field loads: see `apply_end`.
        let sku = SkuIdx(slot.sku.load(Ordering::Relaxed));
        let qty = slot.qty.load(Ordering::Relaxed);
        let buyer = BuyerId(slot.buyer.load(Ordering::Relaxed));
        let counted = slot.counted.load(Ordering::Relaxed) == 1;
        let entry = self.catalog.get(sku).expect("a hold names a published sku");
        let line_ref = HoldLine {
            hold,
            sku,
            buyer,
            line: line as u8,
            lines,
            counted,
        };
        let (sold, event, change) = match end {
            End::Commit(sold) => {
                let sold = sold.map_or(qty, |s| s[line].min(qty));
                // Relaxed: read by `hold()` through the seqlock.
                slot.sold.store(sold, Ordering::Relaxed);
                if counted {
                    self.buyers.release(sku, buyer, qty - sold);
                }
                let event = EventKind::Committed {
                    line: line_ref,
                    sold,
                    returned: qty - sold,
                };
                (sold, event, entry.stock.settle(qty, sold))
            }
            End::Release | End::Expire => {
                if counted {
                    self.buyers.release(sku, buyer, qty);
                }
                let event = match end {
                    End::Release => EventKind::Released {
                        line: line_ref,
                        qty,
                    },
                    _ => EventKind::Expired {
                        line: line_ref,
                        qty,
                    },
                };
                (0, event, entry.stock.untake(qty))
            }
        };
        self.note(sku, change);
        LineEnd {
            sold,
            returned: qty - sold,
            event,
            then: transition(sku, change),
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

    /// Whether the event queue has room for an expiry right now.
    pub(crate) fn admits_events(&self) -> bool {
        self.admit()
    }

    /// Looks up a hold. Finished holds are reported until their slot is
    /// reused (the free list is FIFO, so that is a whole table's worth of
    /// reservations later).
    pub fn hold(&self, hold: HoldId) -> Result<HoldInfo, HoldError> {
        self.head_slot(hold)?;
        for _ in 0..16 {
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

    /// Units counted against `buyer`'s limit on `sku` (live holds + sales).
    pub fn buyer_units(&self, sku: SkuIdx, buyer: BuyerId) -> u32 {
        self.buyers.units(sku, buyer)
    }

    /// Forgets a request id's remembered outcome, so a retry runs afresh.
    pub fn forget_request(&self, request: RequestId) {
        self.requests.forget(request.0);
    }

    /// Confirms the provisional answer of the reservation `request` made
    /// as `hold` (see `EngineConfig::provisional_reservations`): its write
    /// is durable, so it may be acknowledged, and replays now get it as
    /// final. Called by the original once its write is durable, and by a
    /// replay after waiting for that write.
    ///
    /// True if the answer is now (or already was) final with that hold;
    /// then acknowledge. False if it is gone, being undone, or names
    /// another hold (a later retry that ran afresh); then do not.
    /// Exactly one of this and [`Engine::undo_reservation`] wins.
    pub fn confirm_reservation(&self, request: RequestId, hold: HoldId) -> bool {
        self.requests
            .confirm(request.0, OUTCOME_PROVISIONAL | hold.to_raw())
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
            Some(request) => match self
                .requests
                .withdraw(request.0, OUTCOME_PROVISIONAL | hold.to_raw())
            {
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
        }
        true
    }
}

/// Hash of an operation and its parameters, so a request id reused for a
/// different request is caught. Each part is mixed in on its own, so no two
/// parts can cancel each other out.
#[inline]
fn fingerprint(op: u64, parts: &[u64]) -> u64 {
    parts
        .iter()
        .fold(mix64(op.wrapping_mul(0x9e37_79b9_7f4a_7c15)), |fp, &p| {
            mix64(fp ^ p)
        })
}

#[inline]
fn push_transition(buf: &mut EventBuf, sku: SkuIdx, change: Change) {
    if let Some(event) = transition(sku, change) {
        buf.push(event);
    }
}

/// The sold-out or back-in-stock event a stock change causes, if any (see
/// [`Counts::sold_out`]).
#[inline]
fn transition(sku: SkuIdx, change: Change) -> Option<EventKind> {
    if change.sold_out() {
        Some(EventKind::SoldOut { sku })
    } else if change.back_in_stock() {
        Some(EventKind::BackInStock { sku })
    } else {
        None
    }
}

fn decode_reservation(
    outcome: u64,
    deadline_ms: u64,
    units: u32,
) -> Result<Reservation, ReserveError> {
    let tag = outcome & !OUTCOME_PAYLOAD;
    if tag == OUTCOME_OK || tag == OUTCOME_PROVISIONAL {
        let hold = HoldId::from_raw(outcome & OUTCOME_PAYLOAD).ok_or(ReserveError::Invalid)?;
        Ok(Reservation {
            hold,
            deadline_ms,
            units,
            replayed: true,
            provisional: tag == OUTCOME_PROVISIONAL,
        })
    } else {
        Err(ReserveError::from_raw(outcome & OUTCOME_PAYLOAD))
    }
}

fn decode(outcome: u64) -> Result<u64, HoldError> {
    if outcome & !OUTCOME_PAYLOAD == OUTCOME_OK {
        Ok(outcome & OUTCOME_PAYLOAD)
    } else {
        Err(HoldError::from_raw(outcome & OUTCOME_PAYLOAD))
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

fn lost_to_error(lost: Lost) -> HoldError {
    match lost {
        Lost::NotFound | Lost::Reserving | Lost::NotDue(_) => HoldError::HoldNotFound,
        Lost::Ended(HoldState::Committed) => HoldError::AlreadyCommitted,
        Lost::Ended(HoldState::Released) => HoldError::AlreadyReleased,
        Lost::Ended(HoldState::Expired | HoldState::Held) => HoldError::HoldExpired,
        Lost::ExtendLimit => HoldError::ExtendLimit,
    }
}

/// Loom model of the durable-mode race the provisional answers exist for
/// (issue 16.1): the original's write timed out and it undoes the
/// reservation, while a client's retry replays it and, having waited for
/// the write, confirms it. Run with
/// `RUSTFLAGS="--cfg loom" cargo test -p holdfast-engine --release --lib loom`.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::clock::ManualClock;
    use loom::thread;

    fn durable_engine() -> (Arc<Engine>, Expirer, SkuIdx) {
        let config = EngineConfig {
            provisional_reservations: true,
            lanes: 1,
            skus_max: 1,
            holds_max: 2,
            buyer_entries_max: 1,
            request_entries_max: 1,
            ..EngineConfig::default()
        };
        let (engine, expirer) =
            Engine::new(config, Arc::new(ManualClock::new(1_000))).expect("valid config");
        let spec = SkuSpec {
            total: 2,
            settings: SkuSettings::default(),
            window: SaleWindow::Open,
        };
        let tee = engine.create_sku("tee", spec).expect("sku");
        (engine, expirer, tee)
    }

    /// Exactly one of "the replay is acknowledged" and "the original is
    /// undone" happens, and whatever a client was told it holds is held.
    /// The replay thread follows the gateway's protocol: a provisional
    /// answer is acknowledged only if `confirm_reservation` says so; an
    /// `InProgress` is not acknowledged; a fresh reservation (the original
    /// was undone and forgotten first) is a new hold of its own.
    #[test]
    fn loom_replay_confirm_races_undo_exactly_one_wins() {
        loom::model(|| {
            let (engine, _expirer, tee) = durable_engine();
            let request = Some(RequestId(9));
            let original = engine
                .reserve(tee, 1, BuyerId(1), request, false)
                .expect("reserved");
            assert!(!original.provisional);
            let retry = {
                let engine = engine.clone();
                thread::spawn(
                    move || match engine.reserve(tee, 1, BuyerId(1), request, false) {
                        Ok(r) if r.replayed => {
                            assert_eq!(r.hold, original.hold, "a replay names the original");
                            assert!(r.provisional, "nobody confirmed it before");
                            engine
                                .confirm_reservation(RequestId(9), r.hold)
                                .then_some(r.hold)
                        }
                        Ok(fresh) => {
                            assert_ne!(fresh.hold, original.hold);
                            Some(fresh.hold)
                        }
                        Err(e) => {
                            assert_eq!(e, ReserveError::InProgress, "read while undone");
                            None
                        }
                    },
                )
            };
            let undone = engine.undo_reservation(original.hold, request);
            let retry_acked = retry.join().unwrap();
            let state = engine.hold(original.hold).unwrap().state;
            if undone {
                assert_eq!(state, HoldState::Released, "undo won: released");
                assert_ne!(retry_acked, Some(original.hold), "and never acknowledged");
                if let Some(fresh) = retry_acked {
                    assert_eq!(engine.hold(fresh).unwrap().state, HoldState::Held);
                }
                // Forgotten: a later retry (if the one above did not
                // already) runs afresh.
                let later = engine.reserve(tee, 1, BuyerId(1), request, false);
                assert_ne!(later.map(|r| r.hold), Ok(original.hold));
            } else {
                assert_eq!(retry_acked, Some(original.hold), "confirm won");
                assert_eq!(state, HoldState::Held, "the acknowledged hold stays");
                let later = engine.reserve(tee, 1, BuyerId(1), request, false).unwrap();
                assert!(later.replayed && !later.provisional);
                assert_eq!(later.hold, original.hold);
            }
            let counts = engine.snapshot(tee).unwrap().counts;
            assert_eq!(counts.total(), 2);
        });
    }
}
