//! What the engine's operations answer: a reservation, a settlement, a
//! hold's or a SKU's state. Plain `Copy` / owned values, shared by the
//! engine that builds them and the idempotency table that remembers them.

use crate::buyer_limit::BuyerId;
use crate::catalog::{SaleWindow, SkuIdx, SkuSettings};
use crate::channel::ChannelCounts;
use crate::hold::{HoldId, HoldState};
use crate::stock::Counts;
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
    /// that write, then [`Engine::confirm_reservation`](crate::Engine::confirm_reservation) before
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

/// One line of a hold, as reported by [`Engine::hold`](crate::Engine::hold).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldLineInfo {
    pub sku: SkuIdx,
    pub qty: u32,
    /// Units sold on this line (after a commit).
    pub sold: u32,
    /// The sales channel the line was reserved on (`None`: the common pool
    /// of a SKU without channels, or no channel named).
    pub channel: Option<crate::channel::ChannelIdx>,
}

/// A hold, as reported by [`Engine::hold`](crate::Engine::hold).
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
    /// Per-channel counts, in the order the channels were added (empty
    /// for a SKU without channels). `counts` includes every quota.
    pub channels: Vec<ChannelCounts>,
}
