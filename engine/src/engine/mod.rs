//! The [`Engine`]: the reservation contract on top of the catalog, the hold
//! table, the buyer and request tables and the event log.
//!
//! Every buyer-facing operation is lock-free: a reservation is a few CASes
//! (buyer limit, stock word, publish of the hold slot); a commit, release,
//! extend or expiry is one CAS on the hold's state word that decides the
//! race, followed by the winner's CAS on the stock word. Nothing here blocks,
//! sleeps, does I/O or logs; outcomes are returned, not printed.
//!
//! # Layout
//!
//! - this file: the engine's state and what every operation shares
//!   (admission, events, the broadcaster's changed-SKU queue);
//! - `build`: building an engine and its expirer;
//! - `admin`: the catalog: SKUs, stock changes by the host, sale windows;
//! - `reserve`: reservations, one line or a cart, all or nothing;
//! - `settle`: how holds end (commit, release, extend, and the effects of
//!   an expiry) and how a hold is read;
//! - `requests`: request ids: claim, remember, replay, confirm.

mod admin;
pub use admin::Bucket;
mod build;
mod requests;
mod reserve;
mod settle;

pub(crate) use settle::Ending;

use crate::buyer_limit::BuyerTable;
use crate::catalog::{Catalog, SkuEntry, SkuIdx};
use crate::clock::Clock;
use crate::event::{EventBuf, EventKind, EventLog};
use crate::hold::HoldTable;
use crate::idempotency::RequestTable;
use crate::inbox::Inbox;
use crate::limits::EngineConfig;
use crate::stock::Change;
use crossbeam::queue::ArrayQueue;
use std::sync::Arc;

/// The reservation engine. Shared as `Arc<Engine>`; its
/// [`Expirer`](crate::Expirer) runs on one thread of the caller's choosing.
pub struct Engine {
    config: EngineConfig,
    clock: Arc<dyn Clock>,
    pub(crate) catalog: Catalog,
    pub(crate) holds: HoldTable,
    pub(crate) buyers: BuyerTable,
    pub(crate) requests: RequestTable,
    events: Option<EventLog>,
    /// Link / unlink notices for the expirer's wheel (see [`crate::inbox`]).
    pub(crate) inbox: Inbox,
    /// SKUs changed since the broadcaster last looked; each SKU is queued at
    /// most once (its dirty flag), so `skus_max` capacity suffices.
    changed: ArrayQueue<u32>,
    /// SKUs given a scheduled window, for the expirer to open on time.
    pub(crate) scheduled: ArrayQueue<u32>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Engine {
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

    /// Whether the event queue has room for an expiry right now.
    pub(crate) fn admits_events(&self) -> bool {
        self.admit()
    }
}

#[inline]
fn push_transition(buf: &mut EventBuf, sku: SkuIdx, change: Change) {
    if let Some(event) = transition(sku, change) {
        buf.push(event);
    }
}

/// The sold-out or back-in-stock event a stock change causes, if any (see
/// [`Counts::sold_out`](crate::Counts::sold_out)).
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
