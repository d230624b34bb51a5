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

/// Most sales channels one SKU may have (a live show, two social shops,
/// the web shop, a marketplace or two). Channels are resolved by a linear
/// scan of the SKU's set on every channel reservation, and each costs a
/// cache line per SKU that uses channels, so the set stays small.
pub const CHANNELS_MAX: usize = 8;

/// Longest channel id, in bytes (same alphabet as SKU ids). Channel ids
/// appear in metrics labels, events and Redis keys.
pub const CHANNEL_ID_BYTES_MAX: usize = 32;

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

/// Most holds one `Expirer::run` looks at in the wheel's due buckets
/// before returning (reporting `batch_full`), so one call cannot stall its
/// thread for long after a long pause, when a whole wheel turn may be
/// due. (Its inbox drain is bounded by the inbox lanes' capacity.)
pub const EXPIRY_BATCH_MAX: u32 = 65_536;

/// Finest expiry tick. A link notice packs a deadline's tick beside a
/// 24-bit hold slot below the unlink flag (bit 63), so the tick of any
/// deadline up to `hold::DEADLINE_MAX_MS` (2^42 - 1 ms) must fit 39 bits:
/// `ceil((2^42 - 1) / tick_ms) < 2^39` needs `tick_ms >= 9` (asserted at
/// compile time in `inbox`). With 1-3 ms ticks even today's wall-clock
/// deadlines would spill into the flag.
pub const EXPIRY_TICK_MS_MIN: u64 = 9;

/// Coarsest expiry tick: a hold may expire this much late, and the tick
/// arithmetic (`inbox::Ticks`) is exact only below 2^10 ms.
pub const EXPIRY_TICK_MS_MAX: u64 = 1000;

/// Fewest buckets in the expiry wheel: fewer would relink most holds on
/// every turn.
pub const EXPIRY_WHEEL_BUCKETS_MIN: u32 = 64;

/// Bits of the start counter in a hold id (`HoldId`: incarnation:12 |
/// node:8 | generation:18 | slot:24).
pub const INCARNATION_BITS: u32 = 12;

/// Incarnations before the counter wraps; `EngineConfig::incarnation` is
/// below this. The journal counts starts modulo this.
pub const INCARNATIONS: u16 = 1 << INCARNATION_BITS;

/// Tries of a seqlock read of one hold slot before it gives up (reported
/// as not found): a slot changes only when a hold is published, ends or is
/// reused, and a commit writes its units sold in a few stores, so a reader
/// that keeps losing for this long is racing a slot's reuse, not a writer
/// it would do well to wait for. Retries back off, yielding after a few.
pub const SLOT_READ_TRIES_MAX: u32 = 64;

/// Tries of reading a whole hold (its head and every line) consistently
/// before it is reported not found: each try is a read of up to
/// `CART_LINES_MAX + 2` slots, and only a slot reuse under the reader makes
/// one fail.
pub const HOLD_READ_TRIES_MAX: u32 = 16;

/// Most lanes (see `lanes`): past a few per core they only cost memory.
pub const LANES_MAX: u32 = 64;

/// Most lanes by default (one per core up to this).
pub const LANES_DEFAULT_MAX: usize = 16;

/// Fewest events per lane when events are on: an operation emits up to
/// two events per line, and admission keeps headroom below the capacity.
pub const EVENTS_PER_LANE_MIN: usize = 4;

/// Fewest hold slots: one to fill while another is being reclaimed.
pub const HOLDS_MIN: u32 = 2;

/// Most entries in the buyer and idempotency tables, so their size rounded
/// up to a power of two still fits a `u32` and stays allocatable.
pub const TABLE_ENTRIES_MAX: u32 = 1 << 30;

/// Shortest request window: it is cut in two epochs of at least 1 ms.
pub const REQUEST_WINDOW_MS_MIN: u64 = 2;

const _: () = assert!(EXPIRY_TICK_MS_MIN <= EXPIRY_TICK_MS_MAX);
const _: () = assert!(LANES_DEFAULT_MAX as u32 <= LANES_MAX);
const _: () = assert!(
    CART_LINES_MAX <= u8::MAX as usize,
    "line numbers are u8 in events"
);
const _: () = assert!(SKUS_MAX <= 1 << 24, "a sku index is 24 bits in events");

/// Tunable bounds, fixed when the engine is built.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Node id carried in every hold id (0..=255), so hold ids stay unique
    /// when several gateways share one Redis (scale-out).
    pub node_id: u8,
    /// Start counter carried in every hold id (below [`INCARNATIONS`],
    /// wrapping), so ids
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
    /// Remember `sold_out` and `not_enough_available` under a request id
    /// like any refusal. Off for a node of a multi-node deployment, where a
    /// node short of units leases more and retries the same request: the
    /// shortage is this node's of the moment, not the request's answer.
    /// Default true.
    pub stock_refusals_final: bool,
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
            lanes: default_lanes(),
            skus_max: 16_384,
            holds_max: 262_144,
            buyer_entries_max: 262_144,
            request_entries_max: 262_144,
            request_window_ms: 10 * 60 * 1000,
            provisional_reservations: false,
            stock_refusals_final: true,
            events_max: 0,
            events_headroom: 4096,
            order_units_max: 1000,
            expiry_tick_ms: 10,
            expiry_wheel_buckets: 65_536,
        }
    }
}

/// The default lane count: one per core (4 if unknown), rounded up to a
/// power of two, at most [`LANES_DEFAULT_MAX`].
fn default_lanes() -> u32 {
    std::thread::available_parallelism()
        .map_or(4, |n| n.get())
        .clamp(1, LANES_DEFAULT_MAX)
        .next_power_of_two() as u32
}

/// Why an [`EngineConfig`] was refused: the first bound it breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("incarnation must be below {INCARNATIONS}")]
    Incarnation,
    #[error("lanes must be a power of two, 1 to {LANES_MAX}")]
    Lanes,
    #[error("events_max must be 0 or at least {EVENTS_PER_LANE_MIN} events per lane")]
    EventsMax,
    #[error("events_headroom must be below events_max")]
    EventsHeadroom,
    #[error("skus_max must be 1 to {SKUS_MAX}")]
    SkusMax,
    #[error("holds_max must be {HOLDS_MIN} to {HOLDS_MAX}")]
    HoldsMax,
    #[error("buyer_entries_max must be 1 to {TABLE_ENTRIES_MAX}")]
    BuyerEntriesMax,
    #[error("request_entries_max must be 1 to {TABLE_ENTRIES_MAX}")]
    RequestEntriesMax,
    #[error("request_window_ms must be at least {REQUEST_WINDOW_MS_MIN}")]
    RequestWindow,
    #[error("order_units_max must be 1 to {SKU_UNITS_MAX}")]
    OrderUnitsMax,
    #[error("expiry_tick_ms must be {EXPIRY_TICK_MS_MIN} to {EXPIRY_TICK_MS_MAX}")]
    ExpiryTick,
    #[error("expiry_wheel_buckets must be a power of two, at least {EXPIRY_WHEEL_BUCKETS_MIN}")]
    ExpiryWheelBuckets,
}

impl EngineConfig {
    /// Checks the bounds against the engine's hard limits.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let table = 1..=TABLE_ENTRIES_MAX;
        let checks = [
            (
                u32::from(self.incarnation) < u32::from(INCARNATIONS),
                ConfigError::Incarnation,
            ),
            (
                self.lanes.is_power_of_two() && self.lanes <= LANES_MAX,
                ConfigError::Lanes,
            ),
            (
                self.events_max == 0
                    || self.events_max >= EVENTS_PER_LANE_MIN * self.lanes as usize,
                ConfigError::EventsMax,
            ),
            (
                self.events_max == 0 || self.events_headroom < self.events_max,
                ConfigError::EventsHeadroom,
            ),
            (
                (1..=SKUS_MAX).contains(&self.skus_max),
                ConfigError::SkusMax,
            ),
            (
                (HOLDS_MIN..=HOLDS_MAX).contains(&self.holds_max),
                ConfigError::HoldsMax,
            ),
            (
                table.contains(&self.buyer_entries_max),
                ConfigError::BuyerEntriesMax,
            ),
            (
                table.contains(&self.request_entries_max),
                ConfigError::RequestEntriesMax,
            ),
            (
                self.request_window_ms >= REQUEST_WINDOW_MS_MIN,
                ConfigError::RequestWindow,
            ),
            (
                (1..=SKU_UNITS_MAX).contains(&self.order_units_max),
                ConfigError::OrderUnitsMax,
            ),
            (
                (EXPIRY_TICK_MS_MIN..=EXPIRY_TICK_MS_MAX).contains(&self.expiry_tick_ms),
                ConfigError::ExpiryTick,
            ),
            (
                self.expiry_wheel_buckets.is_power_of_two()
                    && self.expiry_wheel_buckets >= EXPIRY_WHEEL_BUCKETS_MIN,
                ConfigError::ExpiryWheelBuckets,
            ),
        ];
        match checks.into_iter().find(|(ok, _)| !ok) {
            Some((_, error)) => Err(error),
            None => Ok(()),
        }
    }
}
