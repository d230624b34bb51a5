//! holdfast's reservation core: stock, holds, expiry and events for a
//! live-shopping drop, lock-free and bounded, with no I/O and no async
//! runtime. The gateway adapts it to the network and the journal to Redis.
//!
//! The contract: every SKU's units are split at every instant into
//! `available + held + sold == total`; a reservation moves units from
//! available to held (never more than are available); a hold ends exactly
//! once, by commit (held to sold), release or expiry (held to available).
//!
//! # Layout
//!
//! - [`limits`]: every bound, with its reason, and [`EngineConfig`].
//! - [`clock`]: wall-clock milliseconds, injectable for tests.
//! - [`stock`]: one SKU's three counts packed in one atomic word, and what
//!   "sold out" means.
//! - [`channel`]: sales channels of a SKU: reserved quotas, caps, and
//!   what each channel holds and sold.
//! - [`catalog`]: SKUs by id and index; settings and sale windows.
//! - [`hold`]: the preallocated hold table; one state word decides each hold.
//! - `buyer_limit`: per-buyer limits per SKU.
//! - `idempotency`: remembered answers by request id, and their encoding.
//! - [`event`]: numbered events to the journal through a bounded queue.
//! - `ring`: the bounded lock-free queue every hot-path queue is made of.
//! - `lanes`: queues split per thread so concurrent threads touch different lines.
//! - `inbox`: the link / unlink notices from the engine to the expirer.
//! - [`expiry`]: the timing wheel and the [`Expirer`] that reclaims slots.
//! - `engine`: the [`Engine`] that ties them into the contract (`build`,
//!   `admin`, `reserve`, `settle`, `requests`).
//! - [`answer`]: what the engine's operations return.
//! - [`restore`]: rebuilding from persisted state; exporting it for a resync.
//! - [`error`]: one small refusal enum per kind of operation.
//! - [`doorbell`]: a wake-up for the journal that never loses one.
//!
//! ```
//! use holdfast_engine::*;
//! use std::sync::Arc;
//!
//! let (engine, mut expirer) = Engine::new(EngineConfig::default(), Arc::new(SystemClock)).unwrap();
//! let spec = SkuSpec { total: 3, settings: SkuSettings::default(), window: SaleWindow::Open };
//! let tee = engine.create_sku("tee", spec).unwrap();
//! let hold = engine.reserve(tee, 2, BuyerId(7), None, false).unwrap();
//! assert_eq!(
//!     engine.reserve(tee, 2, BuyerId(8), None, false),
//!     Err(ReserveError::NotEnoughAvailable { available: 1 })
//! );
//! engine.commit(hold.hold, None, None).unwrap();
//! expirer.run();
//! let counts = engine.snapshot(tee).unwrap().counts;
//! assert_eq!((counts.available, counts.held, counts.sold), (1, 0, 2));
//! ```

pub mod answer;
mod buyer_limit;
pub mod catalog;
pub mod channel;
pub mod clock;
pub mod doorbell;
mod engine;
pub mod error;
pub mod event;
pub mod expiry;
pub mod hold;
mod idempotency;
mod inbox;
mod lanes;
pub mod limits;
pub mod restore;
mod ring;
pub mod stock;
mod sync;

pub use answer::{HoldInfo, HoldLineInfo, Line, Reservation, Settlement, SkuSnapshot};
pub use buyer_limit::BuyerId;
pub use catalog::{SaleWindow, SkuIdx, SkuSettings, SkuSpec, is_valid_sku_id};
pub use channel::{ChannelCounts, ChannelIdx, Source, is_valid_channel_id};
pub use clock::{CachedClock, Clock, ManualClock, SystemClock};
pub use doorbell::Doorbell;
pub use engine::{Bucket, Engine};
pub use error::{CatalogError, HoldError, ReserveError};
pub use event::{Event, EventKind, EventLog, HoldLine};
pub use expiry::{Expirer, ExpiryReport};
pub use hold::{Hex16, HoldId, HoldState, hex16};
pub use idempotency::RequestId;
pub use limits::{ConfigError, EngineConfig};
pub use restore::{
    RestoreError, SavedBuyer, SavedChannel, SavedHold, SavedLine, SavedRequest, SavedSku,
    SavedState,
};
pub use stock::Counts;
