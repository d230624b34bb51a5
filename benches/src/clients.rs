//! What the clients of `compare`'s gateway rows share, whatever their
//! transport ([`crate::gateway_ws`], [`crate::gateway_http`]): the drops
//! and phases, each client's result, and their bounds.

use crate::measure::Phases;
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

/// A reply later than this means the gateway is stuck: the row fails
/// instead of hanging.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(15);

/// Refusals other than `sold_out` tolerated per client before the row is
/// declared failed (a few `overloaded` under a burst are information; a
/// stream of them is a broken set-up).
pub const ERRORS_MAX: u64 = 10_000;

/// What one client did.
pub struct ClientResult {
    pub pairs: u64,
    pub hist: Histogram<u64>,
    pub commits_total: u64,
    pub errors: BTreeMap<String, u64>,
}

/// State every client shares.
pub struct Shared {
    pub phases: Phases,
    /// Index of the drop being sold.
    pub drop: AtomicUsize,
    pub drops: Vec<String>,
    /// Requests in flight per client.
    pub window: usize,
}
