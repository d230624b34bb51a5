//! Every bound the engine enforces, with the reason for its value.
//!
//! Tables are allocated at start-up from these numbers and never grow: a full
//! table is a clear refusal ([`crate::ReserveError::Capacity`]), not an
//! allocation on the hot path or an out-of-memory kill mid-drop.

/// Most units one SKU can ever account for (`available + held + sold`).
///
/// The three counts share one `AtomicU64` at 21 bits each, which is what lets
/// every stock transition be a single CAS and the invariant hold at every
/// instant, not only at quiescence. Two million units of one SKU is far beyond
/// any live-shopping drop.
pub const SKU_UNITS_MAX: u32 = (1 << 21) - 1;

/// Longest a hold may live in all, extensions included (a SKU's
/// `hold_lifetime_max_ms`): a week, far past any checkout.
pub const HOLD_LIFETIME_MAX_MS: u64 = 7 * 24 * 3600 * 1000;

/// Longest SKU id, in bytes (ids are ASCII: `A-Z a-z 0-9 . _ -`). Ids go
/// into every event, Redis key and websocket topic.
pub const SKU_ID_BYTES_MAX: usize = 64;

/// Most hold slots a table can have: a hold id carries the slot in 24 bits.
pub const HOLDS_MAX: u32 = 1 << 24;

/// Most lines in one cart reservation. A cart is held line by line with
/// rollback; sixteen covers any "shop the look" bundle and bounds the rollback.
pub const CART_LINES_MAX: usize = 16;

/// Most distinct SKUs a catalog can hold (index is 24 bits in events).
pub const SKUS_MAX: u32 = 1 << 24;

/// Positions probed in the open-addressed buyer and idempotency tables. A
/// key that finds no free position in its window is refused as `Capacity`;
/// tables are sized at twice their expected load so this stays rare.
#[cfg(not(loom))]
pub const PROBE_WINDOW: usize = 16;

/// Under the loom model checker, two positions: enough for every step of
/// the tables' protocols (a key meets another in its window), few enough
/// atomics for the checker to explore every interleaving.
#[cfg(loom)]
pub const PROBE_WINDOW: usize = 2;

/// Most events the expirer handles per `run` call before returning, so one
/// call cannot stall its thread for long after a long pause.
pub const EXPIRY_BATCH_MAX: usize = 65_536;

/// Finest expiry tick. A link notice packs a deadline's tick beside a
/// 24-bit hold slot below the unlink flag (bit 63), so the tick of any
/// deadline up to `hold::DEADLINE_MAX_MS` (2^42 - 1 ms) must fit 39 bits:
/// `ceil((2^42 - 1) / tick_ms) < 2^39` needs `tick_ms >= 9`. (With 1-3 ms
/// ticks even today's wall-clock deadlines would spill into the flag.)
pub const EXPIRY_TICK_MS_MIN: u64 = 9;

/// Tunable bounds, fixed when the engine is built.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Node id carried in every hold id (0..=255), so hold ids stay unique
    /// when several gateways share one Redis (scale-out).
    pub node_id: u8,
    /// Start counter carried in every hold id (0..4096, wrapping), so ids
    /// issued before a restart never name holds issued after it. The journal
    /// takes it from Redis; in memory mode any fresh value will do.
    pub incarnation: u16,
    /// Lanes of the hold free list, expiry inbox and event queue (see
    /// `lanes`): threads working at once use different ones. Default: one
    /// per core, rounded up to a power of two, at most 16 (and never more
    /// than `holds_max`).
    pub lanes: u32,
    /// Catalog capacity. Default 16 384 SKUs: a show has tens, a shop
    /// thousands; each slot costs about 128 bytes.
    pub skus_max: u32,
    /// Hold table capacity (live holds plus those finished within the last
    /// expiry tick). Default 262 144: a sold-out drop of 100 k units with
    /// churn fits; each slot is 64 bytes (16 MiB).
    pub holds_max: u32,
    /// Buyer-limit table capacity in (sku, buyer) pairs; rounded up to a power
    /// of two. Default 262 144 (4 MiB). Only SKUs with a limit use it.
    pub buyer_entries_max: u32,
    /// Idempotency table capacity per generation; rounded up to a power of
    /// two. Default 262 144 (two generations, 16 MiB in all).
    pub request_entries_max: u32,
    /// How long a request id is remembered: at least this, at most twice.
    /// Default 10 minutes, longer than any client retry loop.
    pub request_window_ms: u64,
    /// Remember successful reservations made with a request id as
    /// *provisional* until [`crate::Engine::confirm_reservation`] (or
    /// [`crate::Engine::undo_reservation`]): a replay meanwhile answers
    /// with `provisional: true`, so the caller waits for the original's
    /// durable write before acknowledging it. For durable mode; default
    /// false (answers are final at once, as in memory and async modes).
    pub provisional_reservations: bool,
    /// Capacity of the journal event queue; 0 disables events (in-memory
    /// mode has no consumer). Default 0.
    pub events_max: usize,
    /// Events the queue keeps free for operations already past their
    /// capacity check (at least the number of threads calling the engine).
    /// New operations are refused as `Overloaded` above
    /// `events_max - events_headroom`. Default 4096.
    pub events_headroom: usize,
    /// Most units in one reservation line (refused as `QtyAboveMax` above).
    /// Default 1000; a SKU can lower it.
    pub order_units_max: u32,
    /// Granularity of the expiry wheel. Default 10 ms: expiry is at most one
    /// tick plus the caller's run interval late.
    pub expiry_tick_ms: u64,
    /// Buckets in the expiry wheel (power of two). Default 65 536: with 10 ms
    /// ticks one turn is 11 minutes, so a typical hold is looked at once.
    pub expiry_wheel_buckets: u32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            node_id: 0,
            incarnation: 1,
            lanes: crate::lanes::default_count(),
            skus_max: 16_384,
            holds_max: 262_144,
            buyer_entries_max: 262_144,
            request_entries_max: 262_144,
            request_window_ms: 10 * 60 * 1000,
            provisional_reservations: false,
            events_max: 0,
            events_headroom: 4096,
            order_units_max: 1000,
            expiry_tick_ms: 10,
            expiry_wheel_buckets: 65_536,
        }
    }
}

impl EngineConfig {
    /// Checks the bounds against the engine's hard limits.
    pub fn validate(&self) -> Result<(), String> {
        if self.incarnation >= 1 << 12 {
            return Err("incarnation must be below 4096".into());
        }
        if !self.lanes.is_power_of_two() || self.lanes > 64 {
            return Err("lanes must be a power of two, 1..=64".into());
        }
        if self.events_max != 0 && self.events_max < 4 * self.lanes as usize {
            return Err("events_max must be at least four events per lane".into());
        }
        if self.skus_max == 0 || self.skus_max > SKUS_MAX {
            return Err(format!("skus_max must be 1..={SKUS_MAX}"));
        }
        if self.holds_max < 2 || self.holds_max > HOLDS_MAX {
            return Err(format!("holds_max must be 2..={HOLDS_MAX}"));
        }
        if self.buyer_entries_max == 0 || self.request_entries_max == 0 {
            return Err("buyer_entries_max and request_entries_max must be positive".into());
        }
        if self.buyer_entries_max > 1 << 30 || self.request_entries_max > 1 << 30 {
            return Err("buyer_entries_max and request_entries_max must be at most 2^30".into());
        }
        if self.request_window_ms < 2 {
            return Err("request_window_ms must be at least 2".into());
        }
        if self.events_max != 0 && self.events_headroom >= self.events_max {
            return Err("events_headroom must be below events_max".into());
        }
        if self.order_units_max == 0 || self.order_units_max > SKU_UNITS_MAX {
            return Err(format!("order_units_max must be 1..={SKU_UNITS_MAX}"));
        }
        if !(EXPIRY_TICK_MS_MIN..=1000).contains(&self.expiry_tick_ms) {
            return Err(format!(
                "expiry_tick_ms must be {EXPIRY_TICK_MS_MIN}..=1000"
            ));
        }
        if !self.expiry_wheel_buckets.is_power_of_two() || self.expiry_wheel_buckets < 64 {
            return Err("expiry_wheel_buckets must be a power of two, at least 64".into());
        }
        Ok(())
    }
}
