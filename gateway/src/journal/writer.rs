//! The journal task: drains the engine's event queue and writes it to Redis
//! in batches, one `MULTI`/`EXEC` per batch (group commit), each guarded by
//! `WATCH` on the journal record so a batch only lands on the exact state it
//! follows.
//!
//! Per batch: take the events in sequence order (the queue may hold a few
//! out of order: they wait in a small reorder buffer; a cart is never split
//! across batches) and apply them to the [`Mirror`]: those queued when a
//! batch is sent while it is on its way, the rest when it lands. Then the next batch's Redis
//! commands are built and frozen, so a retry sends exactly the commands
//! first built. Requests wake the journal only while it waits for events
//! (a [`holdfast_engine::Doorbell`]): a wake-up per request while a batch
//! is in flight cost a thread switch each. Sending checks the journal's
//! `seq` in Redis:
//!
//! - it is the previous watermark: the batch applies;
//! - it is this batch's end: a previous attempt landed (its reply was lost);
//! - it is missing (Redis came back empty) or anything else: the whole state
//!   is re-written from the mirror, then the stream of batches carries on.
//!
//! While batches land on one connection, the check and the batch go in one
//! round trip (`WATCH`, `HGET`, `MULTI` … `EXEC` pipelined); after any error
//! the check comes first (two round trips), because the last batch may have
//! landed without our knowing. On an error the connection is dropped, Redis
//! is marked down (durable mode then refuses new changes with 503), and the
//! same batch is retried with a capped back-off until Redis answers again:
//! nothing is ever skipped.

use super::Journal;
use super::conn::{Conn, Target};
use super::keys::Keys;
use super::mirror::{Ctx, Mirror, Writes};
use super::recover::format_key;
use crate::catalog::Meta;
use crate::ids::Ids;
use holdfast_engine::{Engine, Event, EventKind};
use metrics::{counter, gauge, histogram};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How often an idle journal checks Redis is still there and not empty.
const HEALTH_EVERY: Duration = Duration::from_millis(500);
/// Longest the journal waits for events before looking again (events from
/// the expirer arrive without a kick).
const IDLE_WAIT: Duration = Duration::from_millis(5);
/// How long shutdown waits for the last events to reach Redis.
const FLUSH_ON_SHUTDOWN: Duration = Duration::from_secs(5);
/// Commands before the batch body in its pipeline: `WATCH`, `HGET`, `MULTI`.
const PREFIX_CMDS: usize = 3;

pub struct Writer {
    pub journal: Arc<Journal>,
    pub engine: Arc<Engine>,
    pub meta: Arc<Meta>,
    pub stats: Arc<crate::stats::Stats>,
    pub ids: Arc<Ids>,
    pub target: Target,
    pub keys: Keys,
    /// Cluster mode only: ownership fencing and replica acknowledgement.
    pub cluster: Option<super::ClusterWrites>,
    pub mirror: Mirror,
    /// Fields of the journal record a full re-write restores.
    pub header: Vec<(&'static str, String)>,
    pub batch_size_max: usize,
    pub batch_delay_max: Duration,
    pub timeout: Duration,
    pub orders_maxlen: usize,
    pub orders_max_age_ms: u64,
    pub buyer_retention_ms: u64,
    pub request_window_ms: u64,
    pub ended_retention_ms: u64,
}

enum Landed {
    Yes,
    /// Cluster mode: another node adopted this one's state; nothing was
    /// written, and nothing will be.
    Fenced,
    /// Redis is missing our state or has another: re-write it. `applied`:
    /// the batch's commands were executed all the same (the one-round-trip
    /// path checks the seq in the same round trip), so its order-stream
    /// entries are already in Redis and must not be added twice.
    Resync {
        why: String,
        applied: bool,
    },
}

/// One batch, its commands built when its events were applied to the
/// mirror: `WATCH j`, `HGET j seq`, `MULTI`, the body, `EXEC`.
struct Batch {
    writes: Writes,
    pipe: redis::Pipeline,
    /// Replicas the batch's `WAIT` asks for (`None`: no `WAIT` in it).
    acks: Option<u32>,
}

/// The events taken from the engine but not yet in a batch.
#[derive(Default)]
struct Intake {
    reorder: BTreeMap<u64, Event>,
    drained: Vec<Event>,
    /// The in-order run taken from `reorder` (reused between calls).
    ready: Vec<Event>,
}

/// The writer loop's state between batches.
struct RunState {
    mirror: Mirror,
    con: Option<Conn>,
    intake: Intake,
    /// Every event up to this seq is in Redis.
    persisted: u64,
    /// Whether the last batch landed on the current connection (then the
    /// one-round-trip path is safe).
    healthy: bool,
    last_health: Instant,
    shutdown_started: Option<Instant>,
    /// The batch sealed while the last one was in flight.
    next: Option<Batch>,
}

/// What waiting for work gave.
enum Wait {
    Batch(Box<Batch>),
    /// Events arrived but none is ready yet (e.g. a cart's tail): look again.
    Nothing,
    /// Shutting down, and everything is in Redis.
    Flushed,
}

/// How a batch's landing ended.
enum Settled {
    /// In Redis; `rewritten`: by a full re-write of the state.
    Landed { rewritten: bool },
    /// Stop the writer.
    Stop,
}

impl Writer {
    pub fn header(key: (u64, u64), incarnation: u16, node: u8) -> Vec<(&'static str, String)> {
        vec![
            ("hash_key", format_key(key)),
            ("incarnation", incarnation.to_string()),
            ("node", node.to_string()),
        ]
    }

    async fn connect(&self) -> redis::RedisResult<Conn> {
        self.target.connect(self.timeout).await
    }

    fn ctx(&self) -> Ctx<'_> {
        Ctx {
            engine: &self.engine,
            meta: &self.meta,
            stats: &self.stats,
            ids: &self.ids,
            keys: &self.keys,
            orders_maxlen: self.orders_maxlen,
            orders_max_age_ms: self.orders_max_age_ms,
            buyer_retention_ms: self.buyer_retention_ms,
            request_window_ms: self.request_window_ms,
            ended_retention_ms: self.ended_retention_ms,
            hold_endings: self.journal.hold_endings_streamed(),
        }
    }

    /// Runs until `shutdown`, then flushes what it can: takes a batch
    /// (the one sealed while the last was in flight, or a fresh one once
    /// events arrive), lands it, and seals the next from what was gathered
    /// meanwhile.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mirror = std::mem::take(&mut self.mirror);
        let mut st = RunState {
            persisted: mirror.seq,
            mirror,
            con: None,
            intake: Intake::default(),
            healthy: false,
            last_health: Instant::now(),
            shutdown_started: None,
            next: None,
        };
        loop {
            if shutdown.is_cancelled() && st.shutdown_started.is_none() {
                st.shutdown_started = Some(Instant::now());
            }
            let batch = match st.next.take() {
                Some(batch) => batch,
                None => match self.wait_for_batch(&mut st, &shutdown).await {
                    Wait::Batch(batch) => *batch,
                    Wait::Nothing => continue,
                    Wait::Flushed => return,
                },
            };
            if !self.land(&mut st, batch).await {
                return;
            }
        }
    }

    /// Idle: waits for events (a health check now and then), then builds a
    /// batch of them. `Flushed` once shutting down with nothing left.
    async fn wait_for_batch(&self, st: &mut RunState, shutdown: &CancellationToken) -> Wait {
        if self.nothing_pending(&st.intake) {
            if st.shutdown_started.is_some() {
                tracing::info!(seq = st.persisted, "journal flushed");
                return Wait::Flushed;
            }
            if st.last_health.elapsed() >= HEALTH_EVERY {
                st.last_health = Instant::now();
                st.mirror
                    .prune_requests(self.engine.now_ms(), self.request_window_ms);
                self.health(&mut st.con, &st.mirror, st.persisted).await;
            }
            // Requests wake the journal only while it waits here (a
            // wake-up per request while a batch is in flight cost a thread
            // switch each, for nothing: the landing takes everything queued
            // anyway).
            self.journal.doorbell.arm();
            if self.nothing_pending(&st.intake) {
                tokio::select! {
                    () = self.journal.kick.notified() => {}
                    () = tokio::time::sleep(IDLE_WAIT) => {}
                    () = shutdown.cancelled(), if st.shutdown_started.is_none() => {}
                }
            }
            self.journal.doorbell.disarm();
            // Group commit: optionally give concurrent operations a moment
            // to add their events to this batch.
            let queued = self.engine.events().map_or(0, |l| l.len());
            if !self.batch_delay_max.is_zero() && queued < self.batch_size_max {
                tokio::time::sleep(self.batch_delay_max).await;
            }
        }
        match self.build(&mut st.mirror, &mut st.intake) {
            Some(batch) => Wait::Batch(Box::new(batch)),
            None => Wait::Nothing,
        }
    }

    /// Lands one batch, retrying (and re-writing the whole state when Redis
    /// lost or changed it) until it is in Redis; meanwhile gathers the next
    /// batch's events. False: stop (fenced out, or shutting down with Redis
    /// unreachable).
    async fn land(&self, st: &mut RunState, batch: Batch) -> bool {
        let end = batch.writes.seq.max(st.persisted);
        let started = Instant::now();
        // A fresh connection proves nothing about the last batch.
        st.healthy &= st.con.is_some();
        // Send this batch, and meanwhile take in the events already queued
        // for the next one; the rest are taken in when this one lands, and
        // then only the next one's commands remain to build.
        let mut gathered = Writes::default();
        let (outcome, ()) = tokio::join!(
            self.send(&mut st.con, &batch, st.persisted, st.healthy),
            async {
                self.absorb(&mut st.mirror, &mut st.intake, &mut gathered);
            }
        );
        let rewritten = match self.settle(st, &batch, end, outcome).await {
            Settled::Landed { rewritten } => rewritten,
            Settled::Stop => return false,
        };
        st.healthy = true;
        st.persisted = end;
        histogram!("holdfast_journal_batch_events").record(batch.writes.events as f64);
        histogram!("holdfast_journal_persist_seconds").record(started.elapsed().as_secs_f64());
        self.journal.persisted(st.persisted);
        if rewritten {
            // The re-write wrote the whole mirror, which already holds what
            // was gathered meanwhile: only its order-stream entries are
            // still to go out.
            while let Err(e) = self.orders_only(&mut st.con, &st.mirror, &gathered).await {
                st.con = None;
                self.journal.set_down(&e);
                tokio::time::sleep(self.journal.next_backoff()).await;
            }
            st.persisted = gathered.seq.max(st.persisted);
            self.journal.persisted(st.persisted);
        } else {
            self.absorb(&mut st.mirror, &mut st.intake, &mut gathered);
            st.next = self.seal(&mut st.mirror, gathered);
        }
        st.last_health = Instant::now();
        true
    }

    /// Turns a batch's first outcome into a landing: retries after errors
    /// (always on the guarded path), re-writes everything on a resync.
    async fn settle(
        &self,
        st: &mut RunState,
        batch: &Batch,
        end: u64,
        mut outcome: redis::RedisResult<Landed>,
    ) -> Settled {
        let mut rewritten = false;
        // Whether this batch's commands were executed on some attempt (then
        // its order-stream entries are in Redis already).
        let mut orders_landed = false;
        loop {
            match outcome {
                Ok(Landed::Yes) => return Settled::Landed { rewritten },
                Ok(Landed::Fenced) => return Settled::Stop,
                Ok(Landed::Resync { why, applied }) => {
                    match self.connection(&mut st.con).await {
                        Ok(c) => match self.still_owner(c).await {
                            Ok(true) => {}
                            Ok(false) => return Settled::Stop,
                            Err(e) => {
                                outcome = Err(e);
                                continue;
                            }
                        },
                        Err(e) => {
                            outcome = Err(e);
                            continue;
                        }
                    }
                    tracing::warn!(%why, seq = st.mirror.seq, "re-writing holdfast's whole state to Redis");
                    counter!("holdfast_journal_resyncs_total").increment(1);
                    orders_landed |= applied;
                    let orders = (!orders_landed).then_some(&batch.writes);
                    match self.rewrite(&mut st.con, &st.mirror, orders).await {
                        Ok(()) => {
                            rewritten = true;
                            return Settled::Landed { rewritten };
                        }
                        Err(e) => outcome = Err(e),
                    }
                }
                Err(e) => {
                    st.con = None;
                    self.journal.set_down(&e);
                    counter!("holdfast_journal_errors_total", "kind" => "redis").increment(1);
                    if st
                        .shutdown_started
                        .is_some_and(|s| s.elapsed() > FLUSH_ON_SHUTDOWN)
                    {
                        tracing::error!(
                            persisted = st.persisted,
                            unwritten = end - st.persisted,
                            "shutting down with events not in Redis (Redis unreachable)"
                        );
                        return Settled::Stop;
                    }
                    tokio::time::sleep(self.journal.next_backoff()).await;
                    // After an error, always the guarded path.
                    outcome = self.send(&mut st.con, batch, st.persisted, false).await;
                }
            }
        }
    }

    fn nothing_pending(&self, intake: &Intake) -> bool {
        let log = self
            .engine
            .events()
            .expect("the journal runs with events enabled");
        log.is_empty()
            && intake.reorder.is_empty()
            && self.journal.meta_dirty_is_empty()
            && self.stats.journal_dirty_is_empty()
    }

    /// Takes the events that are ready and builds a batch of them.
    fn build(&self, mirror: &mut Mirror, intake: &mut Intake) -> Option<Batch> {
        let mut writes = Writes::default();
        self.absorb(mirror, intake, &mut writes);
        self.seal(mirror, writes)
    }

    /// Takes the events that are ready, in sequence order and never ending
    /// inside a cart, and applies them to the mirror, adding their effects
    /// to `writes` (up to the batch size).
    fn absorb(&self, mirror: &mut Mirror, intake: &mut Intake, writes: &mut Writes) {
        let log = self
            .engine
            .events()
            .expect("the journal runs with events enabled");
        let room = self.batch_size_max.saturating_sub(writes.events);
        if room == 0 {
            return;
        }
        intake.drained.clear();
        log.drain_into(
            &mut intake.drained,
            room.saturating_sub(intake.reorder.len()).max(1),
        );
        let ctx = self.ctx();
        let mut next = mirror.seq + 1;
        let batch = &mut intake.ready;
        batch.clear();
        // Each lane hands over its events in sequence order, so the drained
        // events are a few sorted runs: a stable sort merges them in about
        // linear time, and then those that continue the sequence go
        // straight into the run; only the rest wait in the reorder buffer
        // for the gaps before them to fill (a BTreeMap insert and remove
        // per event was a visible share of the journal thread).
        intake.drained.sort_by_key(|e| e.seq);
        for e in intake.drained.drain(..) {
            while !intake.reorder.is_empty()
                && batch.len() < room
                && let Some(r) = intake.reorder.remove(&next)
            {
                next += 1;
                batch.push(r);
            }
            if e.seq == next && batch.len() < room {
                next += 1;
                batch.push(e);
            } else {
                intake.reorder.insert(e.seq, e);
            }
        }
        while batch.len() < room {
            let Some(e) = intake.reorder.remove(&next) else {
                break;
            };
            next += 1;
            batch.push(e);
        }
        while let Some(last) = batch.last() {
            let open_cart = match last.kind {
                EventKind::Reserved { line, .. }
                | EventKind::Committed { line, .. }
                | EventKind::Released { line, .. }
                | EventKind::Expired { line, .. } => line.line + 1 < line.lines,
                _ => false,
            };
            if !open_cart {
                break;
            }
            let e = batch.pop().expect("non-empty");
            intake.reorder.insert(e.seq, e);
        }
        for e in batch.iter() {
            if let Err(problem) = mirror.apply(e, writes, &ctx) {
                tracing::error!(seq = e.seq, %problem, "journal mirror disagrees with the event stream");
                counter!("holdfast_journal_errors_total", "kind" => "mirror").increment(1);
            }
        }
    }

    /// Freezes `writes` (and pending catalog text changes) into a batch's
    /// Redis commands.
    fn seal(&self, mirror: &mut Mirror, mut writes: Writes) -> Option<Batch> {
        for sku in self.journal.take_meta_dirty() {
            mirror.meta_changed(&mut writes, sku);
        }
        for buyer in self.journal.take_erased() {
            mirror.forget_buyer(buyer);
        }
        // Statistics ride with the batch, once per SKU however many
        // operations changed them.
        for sku in self.stats.take_journal_dirty() {
            mirror.stats_changed(&mut writes, sku);
        }
        if writes.is_empty() {
            return None;
        }
        let ctx = self.ctx();
        let journal_key = self.keys.journal();
        let mut pipe = redis::pipe();
        pipe.cmd("WATCH").arg(journal_key).ignore();
        pipe.cmd("HGET").arg(journal_key).arg("seq");
        pipe.cmd("MULTI").ignore();
        mirror.batch_commands(&writes, &ctx, &mut pipe, self.engine.now_ms());
        pipe.cmd("EXEC");
        let acks = self.replica_acks();
        if let Some(acks) = acks {
            // Acknowledged only once a replica has it too: an acked write
            // that only the master had is lost when a replica takes over.
            pipe.cmd("WAIT").arg(acks).arg(wait_ms(self.timeout));
        }
        Some(Batch { writes, pipe, acks })
    }

    /// Replicas that must confirm each batch (cluster mode with `WAIT`),
    /// as many as the journal's master can give (see `replicas`).
    fn replica_acks(&self) -> Option<u32> {
        let slot = super::conn::key_slot(self.keys.journal());
        self.cluster.as_ref()?.replica_acks.for_slot(slot)
    }

    /// Cluster mode: whether the journal record still carries this node's
    /// epoch. Another epoch means another node adopted this node's state
    /// (it was stopped or cut off past its lease): the fence trips, and
    /// this node must never write its stale view over that state.
    async fn still_owner(&self, c: &mut Conn) -> redis::RedisResult<bool> {
        let Some(cluster) = &self.cluster else {
            return Ok(true);
        };
        let epoch: Option<u64> = redis::cmd("HGET")
            .arg(self.keys.journal())
            .arg("epoch")
            .query_async(c)
            .await?;
        if epoch == Some(cluster.epoch) {
            return Ok(true);
        }
        self.journal
            .set_down(&"fenced out: another node adopted this node's state");
        cluster.fenced.trip(format!(
            "the journal record of this node is at epoch {epoch:?}, this process owns epoch {}: \
             another node adopted its state; restart this node to take it back",
            cluster.epoch
        ));
        Ok(false)
    }

    /// After a batch is known to have landed on a fresh connection: a tiny
    /// write, then `WAIT`, which confirms everything the master had before
    /// it (replication is in order) reached a replica.
    async fn confirm_replicated(&self, c: &mut Conn) -> redis::RedisResult<()> {
        let Some(acks) = self.replica_acks() else {
            return Ok(());
        };
        let (_, got): ((), u32) = redis::pipe()
            .cmd("HSET")
            .arg(self.keys.journal())
            .arg("confirmed_at_ms")
            .arg(self.engine.now_ms())
            .cmd("WAIT")
            .arg(acks)
            .arg(wait_ms(self.timeout))
            .query_async(c)
            .await?;
        replicated(got, acks)
    }

    async fn connection<'a>(&self, con: &'a mut Option<Conn>) -> redis::RedisResult<&'a mut Conn> {
        if con.is_none() {
            *con = Some(self.connect().await?);
        }
        Ok(con.as_mut().expect("just set"))
    }

    /// Sends one batch (bounded in time). `healthy`: the previous batch
    /// landed on this connection, so the one-round-trip path is safe.
    async fn send(
        &self,
        con: &mut Option<Conn>,
        batch: &Batch,
        persisted: u64,
        healthy: bool,
    ) -> redis::RedisResult<Landed> {
        let fut = async {
            let c = self.connection(con).await?;
            // In a cluster the ownership epoch must be checked before the
            // batch applies (an adopted node's stale view must never land):
            // always the guarded path there.
            if healthy && self.cluster.is_none() {
                self.optimistic_exec(c, batch, persisted).await
            } else {
                self.guarded_exec(c, batch, persisted).await
            }
        };
        match tokio::time::timeout(self.timeout * 4, fut).await {
            Ok(r) => r,
            Err(_) => Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "journal batch timed out",
            ))),
        }
    }

    /// One round trip: the batch's whole pipeline. If the seq read under
    /// `WATCH` was not ours (Redis restarted empty, or was restored from an
    /// older copy), the batch has just been applied on top of the wrong
    /// state, and the full re-write from the mirror (which includes it)
    /// repairs that.
    async fn optimistic_exec(
        &self,
        c: &mut Conn,
        batch: &Batch,
        persisted: u64,
    ) -> redis::RedisResult<Landed> {
        let values: Vec<redis::Value> = batch.pipe.query_async(c).await?;
        let mut values = values.into_iter();
        let seq: Option<u64> = redis::from_redis_value(values.next().unwrap_or(redis::Value::Nil))?;
        let exec = values.next().unwrap_or(redis::Value::Nil);
        if let (Some(acks), Some(got)) = (batch.acks, values.next()) {
            replicated(redis::from_redis_value(got)?, acks)?;
        }
        if matches!(exec, redis::Value::Nil) {
            return Ok(Landed::Resync {
                why: "the journal record changed under the batch".into(),
                applied: false,
            });
        }
        Ok(match seq {
            Some(s) if s == persisted => Landed::Yes,
            None => Landed::Resync {
                why: "Redis has no journal record (restarted empty?)".into(),
                applied: true,
            },
            Some(s) => Landed::Resync {
                why: format!("Redis journal was at seq {s}, expected {persisted}"),
                applied: true,
            },
        })
    }

    /// Two round trips: look at the journal's seq first, then send the
    /// batch only if it follows (used after an error, when the last attempt
    /// may or may not have landed).
    async fn guarded_exec(
        &self,
        c: &mut Conn,
        batch: &Batch,
        persisted: u64,
    ) -> redis::RedisResult<Landed> {
        let journal_key = self.keys.journal();
        let (_, seq, epoch): ((), Option<u64>, Option<u64>) = redis::pipe()
            .cmd("WATCH")
            .arg(journal_key)
            .cmd("HGET")
            .arg(journal_key)
            .arg("seq")
            .cmd("HGET")
            .arg(journal_key)
            .arg("epoch")
            .query_async(c)
            .await?;
        // Cluster mode: the epoch is checked under the WATCH, so an
        // adoption between here and EXEC aborts the EXEC.
        if let Some(cluster) = &self.cluster
            && epoch != Some(cluster.epoch)
        {
            redis::cmd("UNWATCH").query_async::<()>(c).await?;
            self.still_owner(c).await?;
            return Ok(Landed::Fenced);
        }
        let settled = match seq {
            Some(s) if s == persisted => None,
            Some(s) if s == batch.writes.seq => Some(Landed::Yes),
            Some(s) => Some(Landed::Resync {
                why: format!("Redis journal is at seq {s}, expected {persisted}"),
                applied: false,
            }),
            None => Some(Landed::Resync {
                why: "Redis has no journal record (restarted empty?)".into(),
                applied: false,
            }),
        };
        if let Some(landed) = settled {
            redis::pipe()
                .cmd("UNWATCH")
                .ignore()
                .cmd("HGET")
                .arg(journal_key)
                .arg("seq")
                .ignore()
                .query_async::<()>(c)
                .await?;
            if matches!(landed, Landed::Yes) {
                self.confirm_replicated(c).await?;
            }
            return Ok(landed);
        }
        // The frozen body, without the WATCH / HGET / MULTI before it and
        // the EXEC after it.
        let mut pipe = redis::pipe();
        pipe.atomic();
        // After the body: `EXEC`, and `WAIT` when replicas must confirm.
        let suffix = 1 + usize::from(batch.acks.is_some());
        let body = batch.pipe.cmd_iter().count() - PREFIX_CMDS - suffix;
        for cmd in batch.pipe.cmd_iter().skip(PREFIX_CMDS).take(body) {
            pipe.add_command(cmd.clone()).ignore();
        }
        let result: redis::Value = pipe.query_async(c).await?;
        if !matches!(result, redis::Value::Nil) {
            self.confirm_replicated(c).await?;
        }
        if matches!(result, redis::Value::Nil) {
            // Someone else touched the journal record between WATCH and
            // EXEC: nothing was applied; look again.
            return Ok(Landed::Resync {
                why: "the journal record changed under the batch".into(),
                applied: false,
            });
        }
        Ok(Landed::Yes)
    }

    /// Writes the whole mirror, then the order-stream entries of the batch
    /// being sent unless they already landed (the mirror holds state, not
    /// the stream's history).
    async fn rewrite(
        &self,
        con: &mut Option<Conn>,
        mirror: &Mirror,
        orders: Option<&Writes>,
    ) -> redis::RedisResult<()> {
        let c = self.connection(con).await?;
        for pipe in mirror.full_rewrite(&self.ctx(), &self.header, self.engine.now_ms()) {
            pipe.query_async::<()>(c).await?;
        }
        match orders {
            Some(writes) => self.orders_only(con, mirror, writes).await,
            None => Ok(()),
        }
    }

    /// Only a batch's order-stream entries (its state is already written).
    async fn orders_only(
        &self,
        con: &mut Option<Conn>,
        mirror: &Mirror,
        writes: &Writes,
    ) -> redis::RedisResult<()> {
        if writes.orders() == 0 {
            return Ok(());
        }
        let c = self.connection(con).await?;
        let mut pipe = redis::pipe();
        mirror.orders_only(writes, &self.ctx(), &mut pipe);
        pipe.query_async::<()>(c).await
    }

    /// Idle check: Redis answers and still holds our journal record.
    async fn health(&self, con: &mut Option<Conn>, mirror: &Mirror, persisted: u64) {
        let check = async {
            let c = self.connection(con).await?;
            let seq: Option<u64> = redis::cmd("HGET")
                .arg(self.keys.journal())
                .arg("seq")
                .query_async(c)
                .await?;
            if seq != Some(persisted) && self.still_owner(c).await? {
                let why = match seq {
                    None => "Redis has no journal record (restarted empty?)".to_string(),
                    Some(s) => format!("Redis journal is at seq {s}, expected {persisted}"),
                };
                tracing::warn!(%why, "re-writing holdfast's whole state to Redis");
                counter!("holdfast_journal_resyncs_total").increment(1);
                let ctx = self.ctx();
                for pipe in mirror.full_rewrite(&ctx, &self.header, self.engine.now_ms()) {
                    pipe.query_async::<()>(c).await?;
                }
            }
            redis::RedisResult::Ok(())
        };
        match tokio::time::timeout(self.timeout, check).await {
            Ok(Ok(())) => self.journal.set_up(),
            Ok(Err(e)) => {
                *con = None;
                self.journal.set_down(&e);
            }
            Err(_) => {
                *con = None;
                self.journal.set_down(&"health check timed out");
            }
        }
        gauge!("holdfast_journal_backlog").set(self.journal.backlog(&self.engine) as f64);
    }
}

/// `WAIT`'s answer: enough replicas, or an error that keeps the batch
/// unacknowledged and retried (durable mode refuses changes meanwhile).
/// How long a `WAIT` may block: well inside the command's own timeout, so
/// a short count comes back as an answer rather than a timed-out
/// connection.
pub fn wait_ms(timeout: Duration) -> u64 {
    (timeout.as_millis() as u64 * 3 / 4).max(1)
}

fn replicated(got: u32, want: u32) -> redis::RedisResult<()> {
    if got >= want {
        return Ok(());
    }
    counter!("holdfast_journal_errors_total", "kind" => "replication").increment(1);
    Err(redis::RedisError::from((
        redis::ErrorKind::Io,
        "replicas did not confirm the batch in time",
        format!("{got} of {want} replicas"),
    )))
}
