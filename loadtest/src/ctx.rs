//! What every task of one worker shares: the plan, the clock, the
//! recorder, the clients' connectors and the run's end.
//!
//! Its own module so that the worker (which builds it) and the roles
//! (which read it) both depend on it and not on each other.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize};

use tokio_util::sync::CancellationToken;

use crate::client::CallLimits;
use crate::client::net::Dialer;
use crate::client::net::Target;
use crate::client::ws::WsConnector;
use crate::plan::{Clock, WorkerPlan};
use crate::stats::Recorder;

/// What every task of a worker shares.
pub struct Ctx {
    pub plan: WorkerPlan,
    pub clock: Clock,
    pub recorder: Recorder,
    /// One per `--target`: clients spread over them by number.
    pub nodes: Vec<Node>,
    pub limits: CallLimits,
    /// Cancelled when the run's duration is over (or on Stop).
    pub end: CancellationToken,
    /// SKU id → scenario index.
    pub sku_index: HashMap<String, u16>,
    pub frames: AtomicU64,
    pub viewers_live: AtomicU64,
    pub inflight: AtomicUsize,
}

/// One gateway of the deployment and the clients' ways to it.
pub struct Node {
    pub target: Target,
    pub connector: Arc<WsConnector>,
    pub dialer: Arc<Dialer>,
}

impl Ctx {
    /// The gateway client number `n` (a viewer, a burst buyer, an arrival)
    /// talks to: round robin, so every node of a multi-node deployment
    /// gets its share of viewers and buyers.
    pub fn node(&self, n: u64) -> &Node {
        &self.nodes[(n % self.nodes.len() as u64) as usize]
    }
}
