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
//! - [`stock`]: one SKU's three counts packed in one atomic word.
//! - [`catalog`]: SKUs by id and index; settings and sale windows.
//! - [`hold`]: the preallocated hold table; one state word decides each hold.
//! - `buyer`: per-buyer limits; `request`: idempotency by request id.
//! - [`event`]: numbered events to the journal through a bounded queue.
//! - `ring`: the bounded lock-free queue every hot-path queue is made of.
//! - `lanes`: queues split per thread so concurrent threads touch different lines.
//! - [`expiry`]: the timing wheel and the [`Expirer`] that reclaims slots.
//! - `engine`: the [`Engine`] that ties them into the contract.
//! - [`restore`]: rebuilding from persisted state; exporting it for a resync.
//! - [`error`]: one small refusal enum per kind of operation.
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

mod buyer;
pub mod catalog;
pub mod clock;
pub mod doorbell;
mod engine;
pub mod error;
pub mod event;
pub mod expiry;
pub mod hold;
mod lanes;
pub mod limits;
mod request;
pub mod restore;
mod ring;
pub mod stock;
mod sync;

pub use buyer::BuyerId;
pub use catalog::{SaleWindow, SkuIdx, SkuSettings, SkuSpec, is_valid_sku_id};
pub use clock::{CachedClock, Clock, ManualClock, SystemClock};
pub use doorbell::Doorbell;
pub use engine::{Engine, HoldInfo, HoldLineInfo, Line, Reservation, Settlement, SkuSnapshot};
pub use error::{CatalogError, HoldError, ReserveError};
pub use event::{Event, EventKind, EventLog, HoldLine};
pub use expiry::{Expirer, ExpiryReport};
pub use hold::{Hex16, HoldId, HoldState, hex16};
pub use limits::EngineConfig;
pub use request::RequestId;
pub use restore::{
    RestoreError, SavedBuyer, SavedHold, SavedLine, SavedRequest, SavedSku, SavedState,
};
pub use stock::Counts;
