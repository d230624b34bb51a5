//! Persistence: how an acknowledged change survives a crash.
//!
//! Without `--redis` the gateway runs in memory ([`Durability::Memory`]):
//! nothing survives a restart, and the start-up log says so. With it, the
//! [`writer`] task drains the engine's events into Redis in batches
//! (group commit), [`recover`] rebuilds the engine from Redis at start, and
//! [`mirror`] keeps an exact copy of what Redis should hold so a Redis that
//! came back empty is re-written, not silently diverged from.
//!
//! Modes: `durable` acknowledges a change only after the batch containing it
//! is in Redis, and refuses changes (503) while Redis is down; `async`
//! acknowledges from memory and refuses new changes only when the backlog of
//! unwritten events passes its bound.

pub mod conn;
pub mod ended;
pub mod erase;
pub mod keys;
pub mod mirror;
pub mod open;
pub mod pages;
pub mod recover;
pub mod replicas;
pub mod writer;

use crate::catalog::Meta;
use crate::config::Persistence;
use crate::error::ApiError;
use holdfast_engine::{Doorbell, Engine, SkuIdx};
use metrics::gauge;
use std::collections::{BTreeSet, BinaryHeap};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, oneshot};

/// Smallest batch the journal accepts: a cart's events (two per line at
/// most) always fit in one batch.
pub const BATCH_SIZE_MIN: usize = 2 * holdfast_engine::limits::CART_LINES_MAX;

/// Where acknowledged changes go.
#[derive(Debug, Clone)]
pub enum Durability {
    /// Nothing is persisted.
    Memory,
    /// Redis, through the journal.
    Redis(Arc<Journal>),
}

impl Durability {
    /// Refuses up front when persistence cannot take a change right now.
    pub fn admit(&self) -> Result<(), ApiError> {
        match self {
            Self::Memory => Ok(()),
            Self::Redis(j) => j.admit(),
        }
    }

    /// Waits until the engine's events so far are persisted (durable mode).
    pub async fn settle(&self, engine: &Engine) -> Result<(), ApiError> {
        self.settle_seq(self.pending_seq(engine)).await
    }

    /// The sequence number a change just applied to `engine` must see
    /// persisted before it is acknowledged: 0 when there is nothing to wait
    /// for (in memory, `async` mode, or already in Redis). Wakes the journal.
    pub fn pending_seq(&self, engine: &Engine) -> u64 {
        match self {
            Self::Memory => 0,
            Self::Redis(j) => j.pending_seq(engine),
        }
    }

    /// Waits until `seq` is persisted (0: returns at once), or refuses once
    /// the journal's timeout has passed.
    pub async fn settle_seq(&self, seq: u64) -> Result<(), ApiError> {
        match self {
            Self::Redis(j) if seq > 0 => j.settle_seq(seq).await,
            _ => Ok(()),
        }
    }

    /// Whether `seq` is in Redis (always, without a journal).
    pub fn is_persisted(&self, seq: u64) -> bool {
        match self {
            Self::Memory => true,
            Self::Redis(j) => j.persisted_seq() >= seq,
        }
    }

    /// Has `task` woken once `seq` is persisted (at once if it already is).
    /// A connection with many requests waiting registers once per batch,
    /// for its oldest, instead of once per request.
    pub fn wake_at(&self, seq: u64, task: Arc<dyn Wake>) {
        match self {
            Self::Memory => task.wake(),
            Self::Redis(j) => j.push_waiter(Waiter {
                seq,
                wake: WakeBy::Task(task),
            }),
        }
    }

    /// How long a change may wait for Redis before it is refused.
    pub fn timeout(&self) -> Duration {
        match self {
            Self::Memory => Duration::MAX,
            Self::Redis(j) => j.timeout,
        }
    }

    /// A SKU's display data changed (it is persisted beside its stock).
    pub fn meta_changed(&self, _engine: &Engine, sku: SkuIdx, _meta: &Meta) {
        if let Self::Redis(j) = self {
            j.meta_dirty.lock().expect("meta lock").insert(sku);
            j.wake_writer();
        }
    }

    /// An ended hold the engine no longer knows (after a restart, or once
    /// its slot was reused): Redis keeps it for the retention window.
    /// Always `None` in memory.
    pub async fn ended_hold(
        &self,
        hold: holdfast_engine::HoldId,
        now_ms: u64,
    ) -> Result<Option<ended::EndedHold>, ApiError> {
        match self {
            Self::Memory => Ok(None),
            Self::Redis(j) => j.ended.find(hold, now_ms).await,
        }
    }

    /// How long ended holds stay findable (0 in memory).
    pub fn ended_retention_ms(&self) -> u64 {
        match self {
            Self::Memory => 0,
            Self::Redis(j) => j.ended.retention_ms(),
        }
    }

    pub fn mode(&self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Redis(j) => j.mode.as_str(),
        }
    }
}

/// What a node's journal does on top of the single-Redis journal in a
/// Redis Cluster (`--redis-cluster`).
#[derive(Debug, Clone)]
pub struct ClusterWrites {
    /// The node's ownership epoch: the journal record's `epoch` field. A
    /// batch that finds another epoch was fenced out (another node adopted
    /// this one's state): it must never re-write that state.
    pub epoch: u64,
    /// Replicas that must confirm each batch (`WAIT`) before its changes
    /// are acknowledged, per master (see [`replicas`]).
    pub replica_acks: Arc<replicas::ReplicaAcks>,
    /// Tripped once when the journal finds itself fenced out.
    pub fenced: Arc<Fenced>,
}

/// A node fenced out of its own state: another node adopted it while it
/// was stopped or cut off. It must stop taking changes and restart from
/// what Redis holds now; the server shuts down with this reason.
#[derive(Debug, Default)]
pub struct Fenced {
    pub token: tokio_util::sync::CancellationToken,
    reason: Mutex<Option<String>>,
}

impl Fenced {
    /// Trips the fence (the first reason is kept).
    pub fn trip(&self, reason: String) {
        let mut r = self.reason.lock().expect("fence lock");
        if r.is_none() {
            tracing::error!(%reason, "this node was fenced out of its state");
            *r = Some(reason);
        }
        self.token.cancel();
    }

    pub fn reason(&self) -> Option<String> {
        self.reason.lock().expect("fence lock").clone()
    }

    pub fn is_tripped(&self) -> bool {
        self.token.is_cancelled()
    }
}

/// Something to wake once a sequence number is persisted: a websocket
/// session, which then answers all of its requests that are now durable.
pub trait Wake: Send + Sync {
    fn wake(&self);
}

enum WakeBy {
    /// One waiting request (HTTP).
    Request(oneshot::Sender<()>),
    /// A task with requests waiting (websocket session).
    Task(Arc<dyn Wake>),
}

impl std::fmt::Debug for WakeBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Request(_) => "Request",
            Self::Task(_) => "Task",
        })
    }
}

/// A request or task waiting for sequence number `seq` to be persisted;
/// ordered so the heap's top is the smallest.
#[derive(Debug)]
struct Waiter {
    seq: u64,
    wake: WakeBy,
}

impl PartialEq for Waiter {
    fn eq(&self, other: &Self) -> bool {
        self.seq == other.seq
    }
}

impl Eq for Waiter {}

impl PartialOrd for Waiter {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Waiter {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.seq.cmp(&self.seq) // reversed: BinaryHeap is a max-heap
    }
}

/// The refusal of a change Redis did not confirm within the journal's
/// timeout.
pub fn timed_out() -> ApiError {
    ApiError::unavailable("redis did not confirm the write in time: retry with the same request_id")
}

/// State shared between the operations and the journal task.
#[derive(Debug)]
pub struct Journal {
    pub mode: Persistence,
    engine: Arc<Engine>,
    up: AtomicBool,
    /// Consecutive failures, for the back-off.
    failures: AtomicU32,
    /// Last event sequence number known to be in Redis.
    watermark: AtomicU64,
    /// Requests waiting for their events to reach Redis, by the sequence
    /// number they need: each is woken exactly once, by the batch that
    /// covers it (a broadcast channel would wake every waiter per batch).
    waiters: Mutex<BinaryHeap<Waiter>>,
    pub(crate) kick: Notify,
    /// Rung by requests only while the journal waits for events (the
    /// writer arms it before waiting on `kick`).
    pub(crate) doorbell: Doorbell,
    meta_dirty: Mutex<BTreeSet<SkuIdx>>,
    /// Buyers erased since the writer's last batch: its mirror forgets them.
    erased: Mutex<Vec<holdfast_engine::BuyerId>>,
    backlog_max: usize,
    timeout: Duration,
    last_error: Mutex<String>,
    /// Ended holds the engine no longer knows, looked up in Redis.
    pub ended: ended::EndedLookup,
    /// Released and expired holds go to the order stream too (a webhook
    /// endpoint asked for `hold.released` / `hold.expired`).
    hold_endings: AtomicBool,
}

impl Journal {
    pub fn new(
        mode: Persistence,
        engine: Arc<Engine>,
        persisted: u64,
        backlog_max: usize,
        timeout: Duration,
        ended: ended::EndedLookup,
    ) -> Self {
        gauge!("holdfast_redis_up").set(1.0);
        Self {
            mode,
            engine,
            up: AtomicBool::new(true),
            failures: AtomicU32::new(0),
            watermark: AtomicU64::new(persisted),
            waiters: Mutex::default(),
            kick: Notify::new(),
            doorbell: Doorbell::new(),
            meta_dirty: Mutex::default(),
            erased: Mutex::default(),
            backlog_max,
            timeout,
            last_error: Mutex::default(),
            ended,
            hold_endings: AtomicBool::new(false),
        }
    }

    /// From now on, released and expired holds are written to the order
    /// stream too (`event` `released` / `expired`), in the batch that
    /// records them: the webhooks' source reads them from there, as it
    /// reads orders, so a `hold.released` / `hold.expired` webhook is as
    /// durable as the release it reports. Never switched off (a consumer
    /// that reads these entries may still be there).
    pub fn stream_hold_endings(&self) {
        // Relaxed: a flag the writer reads per batch; a batch sealed a
        // moment before it is seen simply has no such entries.
        self.hold_endings.store(true, Ordering::Relaxed);
    }

    /// See [`Self::stream_hold_endings`].
    pub fn hold_endings_streamed(&self) -> bool {
        self.hold_endings.load(Ordering::Relaxed)
    }

    pub fn is_up(&self) -> bool {
        // Acquire: pairs with the Release in set_up/set_down.
        self.up.load(Ordering::Acquire)
    }

    /// Events numbered but not yet in Redis: those still queued, those the
    /// journal holds in a batch and those waiting out a Redis outage alike.
    pub fn backlog(&self, engine: &Engine) -> usize {
        engine.events().map_or(0, |l| {
            let numbered = l.next_seq().saturating_sub(1);
            usize::try_from(numbered.saturating_sub(self.persisted_seq())).unwrap_or(usize::MAX)
        })
    }

    /// The last event sequence number known to be in Redis.
    pub fn persisted_seq(&self) -> u64 {
        // Acquire: pairs with `persisted`'s Release.
        self.watermark.load(Ordering::Acquire)
    }

    fn admit(&self) -> Result<(), ApiError> {
        match self.mode {
            Persistence::Durable if !self.is_up() => Err(ApiError::unavailable(format!(
                "redis is unavailable ({}): changes are refused until it is back",
                self.last_error.lock().expect("error lock")
            ))),
            Persistence::Async if self.backlog(&self.engine) > self.backlog_max => Err(
                ApiError::unavailable("persistence backlog is full: retry shortly"),
            ),
            _ => Ok(()),
        }
    }

    fn pending_seq(&self, engine: &Engine) -> u64 {
        self.wake_writer();
        if self.mode == Persistence::Async {
            return 0;
        }
        // Our events were numbered before the engine call returned, so
        // every one of them is at most this.
        let target = engine
            .events()
            .map_or(0, |l| l.next_seq().saturating_sub(1));
        if self.persisted_seq() >= target {
            return 0;
        }
        target
    }

    /// Queues a waiter, and wakes it at once if its batch has landed.
    fn push_waiter(&self, waiter: Waiter) {
        let target = waiter.seq;
        self.waiters.lock().expect("waiters lock").push(waiter);
        // The batch may have landed between the caller's check and the
        // push: look again now that we are in the heap (`persisted` stores
        // the watermark before it takes the lock, so one of us sees the
        // other).
        if self.persisted_seq() >= target {
            self.wake(self.persisted_seq());
        }
    }

    async fn settle_seq(&self, target: u64) -> Result<(), ApiError> {
        if self.persisted_seq() >= target {
            return Ok(());
        }
        let (tx, rx) = oneshot::channel();
        self.push_waiter(Waiter {
            seq: target,
            wake: WakeBy::Request(tx),
        });
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(timed_out()),
        }
    }

    /// Wakes every waiter whose events are now in Redis.
    fn wake(&self, seq: u64) {
        // Taken out under the lock, answered outside it: each answer may
        // wake a task on another thread, and requests queueing themselves
        // meanwhile should not wait for all of that.
        let ready: Vec<Waiter> = {
            let mut waiters = self.waiters.lock().expect("waiters lock");
            let mut ready = Vec::new();
            while waiters.peek().is_some_and(|w| w.seq <= seq) {
                ready.push(waiters.pop().expect("peeked"));
            }
            ready
        };
        for w in ready {
            match w.wake {
                WakeBy::Request(tx) => {
                    let _ = tx.send(());
                }
                WakeBy::Task(task) => task.wake(),
            }
        }
        // A waiter that gave up (timed out) is popped the same way once its
        // sequence number lands; the heap never holds more than the
        // requests in flight, since durable mode admits none while Redis
        // is down.
    }

    pub(crate) fn persisted(&self, seq: u64) {
        // Release: pairs with the Acquire in `persisted_seq`. Never moves
        // back, whatever order announcements come in.
        self.watermark.fetch_max(seq, Ordering::Release);
        self.wake(seq);
        self.set_up();
    }

    pub(crate) fn set_up(&self) {
        self.failures.store(0, Ordering::Relaxed);
        if !self.up.swap(true, Ordering::AcqRel) {
            tracing::info!("redis is back: accepting changes again");
            gauge!("holdfast_redis_up").set(1.0);
        }
    }

    pub(crate) fn set_down(&self, error: &dyn std::fmt::Display) {
        *self.last_error.lock().expect("error lock") = error.to_string();
        self.failures.fetch_add(1, Ordering::Relaxed);
        if self.up.swap(false, Ordering::AcqRel) {
            tracing::error!(%error, mode = self.mode.as_str(), "redis is unavailable");
            gauge!("holdfast_redis_up").set(0.0);
        }
    }

    /// Capped exponential back-off between reconnect attempts.
    pub(crate) fn next_backoff(&self) -> Duration {
        let n = self.failures.load(Ordering::Relaxed).min(6);
        Duration::from_millis(25 << n).min(Duration::from_secs(1))
    }

    /// Wakes the journal if it waits for events: call after adding some.
    fn wake_writer(&self) {
        if self.doorbell.should_ring() {
            self.kick.notify_one();
        }
    }

    /// Tells the writer's mirror to forget an erased buyer (see `erase`).
    pub fn forget_buyer(&self, buyer: holdfast_engine::BuyerId) {
        self.erased.lock().expect("erased lock").push(buyer);
        self.wake_writer();
    }

    pub(crate) fn take_erased(&self) -> Vec<holdfast_engine::BuyerId> {
        std::mem::take(&mut *self.erased.lock().expect("erased lock"))
    }

    pub(crate) fn meta_dirty_is_empty(&self) -> bool {
        self.meta_dirty.lock().expect("meta lock").is_empty()
    }

    pub(crate) fn take_meta_dirty(&self) -> Vec<SkuIdx> {
        std::mem::take(&mut *self.meta_dirty.lock().expect("meta lock"))
            .into_iter()
            .collect()
    }
}
