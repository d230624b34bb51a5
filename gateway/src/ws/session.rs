//! One websocket connection: reads requests, answers them, and sends the
//! topics' frames it has not seen, with every limit enforced.
//!
//! One task per connection selects over: shutdown, the hub's wake-up, its
//! own requests completing, inbound frames, and one timer (ping / idle).
//! Requests run concurrently up to `inflight_max` (durable writes wait for
//! Redis); past that the task stops reading, which pushes back on the
//! client through TCP. Writes are fed and flushed together, under a
//! timeout: a client that stops reading is dropped as a slow consumer, and
//! its buffer is bounded by `write_buffer_bytes_max`.

use super::WsCtx;
use super::hub::{Frame, Signal, Topic};
use crate::auth::jwt::BuyerToken;
use crate::auth::{Role, require};
use crate::error::ApiError;
use crate::ops::{Applied, Op};
use crate::protocol::{Authed, ClientMsg, Hello, Pong, ServerMsg, Subscribed};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{FutureExt, SinkExt, StreamExt};
use metrics::{counter, gauge};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::OwnedSemaphorePermit;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};

/// Close codes (RFC 6455).
const CLOSE_GOING_AWAY: u16 = 1001;
const CLOSE_PROTOCOL: u16 = 1002;
const CLOSE_INVALID_DATA: u16 = 1007;
const CLOSE_POLICY: u16 = 1008;
const CLOSE_TOO_BIG: u16 = 1009;

/// A connection's requests waiting for Redis.
#[derive(Default)]
struct Waiting {
    /// Oldest first.
    pending: VecDeque<Pending>,
    /// The sequence number the journal was last asked to wake us at.
    wake_at: u64,
}

/// A request applied to the engine whose answer waits for its events to
/// reach Redis (durable mode). Requests are applied in order, so their
/// sequence numbers only grow along the queue.
struct Pending {
    applied: Applied<ServerMsg>,
    /// The request id, for the refusal if Redis does not confirm in time.
    id: u64,
    /// When it was applied: the journal's timeout counts from here.
    since: Instant,
    /// Set for the requests whose latency is sampled.
    started: Option<Instant>,
}

/// A request that needs an await before its answer (the rare paths; the
/// common one is answered without one).
enum Deferred {
    /// A hold operation refused with `hold_not_found`, to refine with what
    /// Redis remembers of the hold.
    UnknownHold {
        id: u64,
        hold: String,
        refusal: ApiError,
    },
    /// Multi-node: a reservation that may have to lease stock first.
    Reserve {
        id: u64,
        req: crate::protocol::Reserve,
        started: Option<Instant>,
    },
    /// Multi-node: an operation on a hold another node made.
    Remote { id: u64, msg: ClientMsg },
}

/// Most extra ready items taken per loop turn before flushing.
const READY_ROUNDS_MAX: usize = 256;

/// One request in this many is timed for the latency histogram: reading the
/// clock twice per request is a measurable share of a pipelined burst, and
/// a sample describes the distribution just as well.
const TIME_ONE_IN: u32 = 16;

struct Subscription {
    topic: Arc<Topic>,
    last_seq: u64,
    /// Seq of the last stats frame sent (admins only).
    stats_seq: u64,
}

/// Token bucket for inbound messages, with a tally of refusals in the
/// current second to spot a flood.
struct RateLimit {
    tokens: f64,
    per_sec: f64,
    burst: f64,
    last: Instant,
    refused_this_sec: u32,
    second_started: Instant,
}

impl RateLimit {
    fn new(per_sec: u32) -> Self {
        let now = Instant::now();
        let per_sec = f64::from(per_sec);
        Self {
            tokens: 2.0 * per_sec,
            per_sec,
            burst: 2.0 * per_sec,
            last: now,
            refused_this_sec: 0,
            second_started: now,
        }
    }

    /// Whether one more message may pass at `now`.
    fn take(&mut self, now: Instant) -> bool {
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.per_sec)
            .min(self.burst);
        self.last = now;
        if now.duration_since(self.second_started) >= Duration::from_secs(1) {
            self.second_started = now;
            self.refused_this_sec = 0;
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            self.refused_this_sec += 1;
            false
        }
    }

    /// Ten times the allowed rate refused within one second: a flood.
    fn flooding(&self) -> bool {
        f64::from(self.refused_this_sec) > 10.0 * self.per_sec
    }
}

/// Why the session ended (for the log and metrics).
#[derive(Debug, Clone, Copy)]
enum End {
    ClientClosed,
    Shutdown,
    Idle,
    SlowConsumer,
    Flood,
    TooBig,
    BadData,
    ProtocolError,
    Io,
}

impl End {
    fn as_str(self) -> &'static str {
        match self {
            Self::ClientClosed => "client_closed",
            Self::Shutdown => "shutdown",
            Self::Idle => "idle",
            Self::SlowConsumer => "slow_consumer",
            Self::Flood => "flood",
            Self::TooBig => "too_big",
            Self::BadData => "bad_data",
            Self::ProtocolError => "protocol_error",
            Self::Io => "io",
        }
    }
}

struct Session {
    ctx: Arc<WsCtx>,
    /// Requests waiting for Redis (durable mode), allocated by the first:
    /// most connections are viewers that never send one.
    waiting: Option<Box<Waiting>>,
    ws: WebSocket,
    conn: u64,
    role: Role,
    /// A buyer session's verified token (`role` is `Buyer`).
    buyer: Option<Arc<BuyerToken>>,
    binary: bool,
    signal: Arc<Signal>,
    subs: Vec<Subscription>,
    out: Vec<Message>,
    last_seen: Instant,
    last_ping: Instant,
    rate: RateLimit,
    /// Requests dispatched (for sampling their latency).
    requests: u32,
}

/// Runs one connection until it ends. Holds its connection permit.
pub async fn run(
    ws: WebSocket,
    ctx: Arc<WsCtx>,
    (role, buyer): (Role, Option<Arc<BuyerToken>>),
    binary: bool,
    _permit: OwnedSemaphorePermit,
) {
    gauge!("holdfast_ws_connections").increment(1.0);
    let now = Instant::now();
    let conn = ctx.hub.conn_id();
    let mut session = Session {
        waiting: None,
        rate: RateLimit::new(rate_for(&ctx.limits, role)),
        ctx,
        ws,
        conn,
        role,
        buyer,
        binary,
        signal: Arc::new(Signal::default()),
        subs: Vec::new(),
        out: Vec::new(),
        last_seen: now,
        last_ping: now,
        requests: 0,
    };
    let end = session.serve().await;
    for sub in &session.subs {
        session.ctx.hub.unsubscribe(&sub.topic, session.conn);
    }
    counter!("holdfast_ws_closed_total", "reason" => end.as_str()).increment(1);
    gauge!("holdfast_ws_connections").decrement(1.0);
    tracing::debug!(conn, reason = end.as_str(), "websocket closed");
}

impl Session {
    async fn serve(&mut self) -> End {
        let hello = ServerMsg::Hello(Hello {
            server: format!("holdfast {}", env!("CARGO_PKG_VERSION")),
            role: self.role,
            subscriptions_max: self.ctx.limits.subscriptions_max as u32,
            frame_bytes_max: self.ctx.limits.frame_bytes_max as u32,
            messages_per_sec_max: rate_for(&self.ctx.limits, self.role),
            broadcast_interval_ms: self.ctx.broadcast_interval_ms,
        });
        self.queue(&hello, "reply");
        if let Err(end) = self.flush().await {
            return end;
        }
        let shutdown = self.ctx.shutdown.clone();
        let idle = self.ctx.limits.idle_timeout();
        let ping_every = self.ctx.limits.ping_interval();
        let signal = self.signal.clone();
        // One timer per connection, re-armed only when it fires or when a
        // request starts waiting for Redis with nothing else waiting (traffic
        // only moves `last_seen`), so thousands of busy sessions do not
        // churn the runtime's timer wheel on every frame.
        let timer = tokio::time::sleep_until(
            (self.last_ping + ping_every)
                .min(self.last_seen + idle)
                .into(),
        );
        tokio::pin!(timer);
        loop {
            let can_read = self.pending_len() < self.ctx.limits.inflight_max;
            tokio::select! {
                biased;
                () = shutdown.cancelled() => {
                    Box::pin(self.close(CLOSE_GOING_AWAY, "server shutting down")).await;
                    return End::Shutdown;
                }
                // The hub (new counts) or the journal (a batch landed).
                () = signal.notify.notified() => self.queue_topics(),
                frame = self.ws.next(), if can_read => {
                    // One clock reading per wake-up, shared by the frames
                    // handled in it (below): per frame it was a measurable
                    // share of a pipelined burst.
                    self.last_seen = Instant::now();
                    if let Err(end) = self.on_frame(frame).await {
                        return end;
                    }
                }
                () = &mut timer => {
                    let now = Instant::now();
                    if now.duration_since(self.last_seen) >= idle {
                        Box::pin(self.close(CLOSE_GOING_AWAY, "idle timeout")).await;
                        return End::Idle;
                    }
                    if now.duration_since(self.last_ping) >= ping_every {
                        self.last_ping = now;
                        self.out.push(Message::Ping(bytes::Bytes::new()));
                    }
                    self.expire_pending(now);
                    let mut next = (self.last_ping + ping_every).min(self.last_seen + idle);
                    if let Some(due) = self.pending_due() {
                        next = next.min(due);
                    }
                    timer.as_mut().reset(next.into());
                }
            }
            // Everything else that is ready right now (frames already
            // received) goes out in the same flush: one write for a
            // pipelined burst instead of one per reply.
            for _ in 0..READY_ROUNDS_MAX {
                if self.pending_len() >= self.ctx.limits.inflight_max {
                    break;
                }
                let Some(frame) = self.ws.next().now_or_never() else {
                    break;
                };
                if let Err(end) = self.on_frame(frame).await {
                    return end;
                }
            }
            self.answer_persisted();
            // The timer must fire by the oldest waiting request's deadline,
            // however the request got queued (one frame, or several read in
            // the same turn): re-armed only when that is earlier, so busy
            // sessions do not churn the timer wheel.
            if let Some(due) = self.pending_due()
                && due < timer.deadline().into_std()
            {
                timer.as_mut().reset(due.into());
            }
            if let Err(end) = self.flush().await {
                return end;
            }
        }
    }

    fn pending_len(&self) -> usize {
        self.waiting.as_ref().map_or(0, |w| w.pending.len())
    }

    /// When the oldest request waiting for Redis is refused.
    fn pending_due(&self) -> Option<Instant> {
        let timeout = self.ctx.ops.durability.timeout();
        let oldest = self.waiting.as_ref()?.pending.front()?;
        oldest.since.checked_add(timeout)
    }

    /// Answers the requests whose events are now in Redis, and asks the
    /// journal to wake this task for the oldest one still waiting.
    fn answer_persisted(&mut self) {
        let Some(mut waiting) = self.waiting.take() else {
            return;
        };
        while let Some(p) = waiting.pending.front()
            && self.ctx.ops.durability.is_persisted(p.applied.seq)
        {
            let p = waiting.pending.pop_front().expect("peeked");
            self.finish(p, Ok(()));
        }
        if let Some(p) = waiting.pending.front()
            && p.applied.seq > waiting.wake_at
        {
            // Once per batch, not per request: the journal wakes us for the
            // oldest, and every younger one landed in the same batch or
            // waits for the next wake-up.
            waiting.wake_at = p.applied.seq;
            self.ctx
                .ops
                .durability
                .wake_at(p.applied.seq, self.signal.clone());
        }
        self.waiting = Some(waiting);
    }

    /// Refuses the requests Redis did not confirm within the journal's
    /// timeout (a reservation is undone, see [`crate::ops::Ops::finish`]).
    fn expire_pending(&mut self, now: Instant) {
        let Some(mut waiting) = self.waiting.take() else {
            return;
        };
        let timeout = self.ctx.ops.durability.timeout();
        while let Some(p) = waiting.pending.front()
            && now.duration_since(p.since) >= timeout
        {
            let p = waiting.pending.pop_front().expect("peeked");
            self.finish(p, Err(crate::journal::timed_out()));
        }
        self.waiting = Some(waiting);
    }

    fn finish(&mut self, p: Pending, waited: Result<(), ApiError>) {
        let op = p.applied.op;
        match self.ctx.ops.finish(p.applied, waited) {
            Ok(msg) => self.queue(&msg, "reply"),
            Err(e) => self.queue_error(Some(p.id), &e),
        }
        if let Some(started) = p.started {
            crate::metrics::request_time("ws", op.as_str(), started.elapsed());
        }
    }

    async fn on_frame(&mut self, frame: Option<Result<Message, axum::Error>>) -> Result<(), End> {
        match frame {
            None => Err(End::ClientClosed),
            Some(Ok(message)) => self.on_message(message).await,
            // Cold path, boxed so its future does not sit in every
            // session's state.
            Some(Err(e)) => Err(Box::pin(self.on_read_error(e)).await),
        }
    }

    fn frame_message(&self, frame: &Frame) -> Message {
        if self.binary {
            Message::Binary(frame.bin.clone())
        } else {
            Message::Text(frame.json.clone())
        }
    }

    fn queue(&mut self, msg: &ServerMsg, kind: &'static str) {
        let m = if self.binary {
            Message::Binary(msg.to_postcard().into())
        } else {
            Message::Text(msg.to_json().into())
        };
        self.out.push(m);
        let hot = crate::metrics::hot();
        match kind {
            "reply" => hot.frames_reply.increment(1),
            _ => counter!("holdfast_ws_frames_sent_total", "kind" => kind).increment(1),
        }
    }

    fn queue_error(&mut self, id: Option<u64>, e: &ApiError) {
        self.queue(&ServerMsg::Error(e.to_msg(id)), "reply");
    }

    /// Queues, for every subscription, what it has not seen yet.
    fn queue_topics(&mut self) {
        let mut updates = 0u64;
        for i in 0..self.subs.len() {
            let frames = self.subs[i].topic.frames_guard();
            let last = self.subs[i].last_seq;
            if frames.seq <= last {
                continue;
            }
            if last + 1 >= frames.first_seq {
                let skip = (last + 1 - frames.first_seq) as usize;
                for f in &frames.frames[skip..] {
                    let m = self.frame_message(f);
                    self.out.push(m);
                    updates += 1;
                }
            } else {
                // More than one round behind: skip to the full current state.
                let m = self.frame_message(frames.full());
                self.out.push(m);
                updates += 1;
            }
            self.subs[i].last_seq = frames.seq;
        }
        if self.role == Role::Admin {
            for i in 0..self.subs.len() {
                if let Some(stats) = self.subs[i].topic.stats_frame()
                    && stats.seq > self.subs[i].stats_seq
                {
                    self.subs[i].stats_seq = stats.seq;
                    let m = self.frame_message(&stats.frame);
                    self.out.push(m);
                    counter!("holdfast_ws_frames_sent_total", "kind" => "stats").increment(1);
                }
            }
        }
        if updates > 0 {
            let hot = crate::metrics::hot();
            hot.updates_delivered.increment(updates);
            hot.frames_update.increment(updates);
        }
    }

    /// Writes everything queued in one flush, under the write timeout.
    async fn flush(&mut self) -> Result<(), End> {
        if self.out.is_empty() {
            return Ok(());
        }
        let timeout = self.ctx.limits.write_timeout();
        let mut out = std::mem::take(&mut self.out);
        let write = async {
            for m in out.drain(..) {
                self.ws.feed(m).await?;
            }
            self.ws.flush().await
        };
        let result = tokio::time::timeout(timeout, write).await;
        self.out = out; // keep the (now empty) buffer's allocation
        self.out.clear();
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                let capacity = matches!(
                    e.into_inner().downcast_ref::<WsError>(),
                    Some(WsError::WriteBufferFull(_))
                );
                if capacity {
                    counter!("holdfast_ws_slow_client_drops_total", "reason" => "buffer_full")
                        .increment(1);
                    Err(End::SlowConsumer)
                } else {
                    Err(End::Io)
                }
            }
            Err(_) => {
                counter!("holdfast_ws_slow_client_drops_total", "reason" => "write_timeout")
                    .increment(1);
                Err(End::SlowConsumer)
            }
        }
    }

    /// Sends a close frame, then reads (and discards) until the client's
    /// close or a short timeout, so the close frame is not lost to a TCP
    /// reset caused by unread input.
    async fn close(&mut self, code: u16, reason: &'static str) {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let handshake = async {
            self.ws.send(Message::Close(Some(frame))).await?;
            while let Some(message) = self.ws.next().await {
                if matches!(message?, Message::Close(_)) {
                    break;
                }
            }
            Ok::<(), axum::Error>(())
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), handshake).await;
    }

    async fn on_read_error(&mut self, e: axum::Error) -> End {
        let (code, reason, end) = match e.into_inner().downcast::<WsError>().map(|b| *b) {
            Ok(WsError::Capacity(CapacityError::MessageTooLong { .. })) => {
                (CLOSE_TOO_BIG, "message too big", End::TooBig)
            }
            Ok(WsError::Capacity(_)) => (CLOSE_TOO_BIG, "frame too big", End::TooBig),
            Ok(WsError::Utf8(_)) => (CLOSE_INVALID_DATA, "invalid utf-8", End::BadData),
            Ok(WsError::Protocol(_)) => (CLOSE_PROTOCOL, "protocol error", End::ProtocolError),
            Ok(WsError::ConnectionClosed | WsError::AlreadyClosed) => return End::ClientClosed,
            _ => return End::Io,
        };
        self.close(code, reason).await;
        end
    }

    async fn on_message(&mut self, message: Message) -> Result<(), End> {
        // Every frame counts against the rate, control frames too: a flood
        // of pings costs the server a pong each (tungstenite answers them
        // before we see them).
        let allowed = self.rate.take(self.last_seen);
        if !allowed {
            counter!("holdfast_ws_rate_limited_total").increment(1);
            if self.rate.flooding() {
                Box::pin(self.close(CLOSE_POLICY, "message flood")).await;
                return Err(End::Flood);
            }
        }
        let parsed = match &message {
            Message::Text(text) => ClientMsg::from_json(text.as_str()).map_err(|e| {
                (
                    json_id(text.as_str()),
                    ApiError::bad_request(format!("bad json: {e}")),
                )
            }),
            Message::Binary(bytes) if self.binary => ClientMsg::from_postcard(bytes)
                .map_err(|e| (None, ApiError::bad_request(format!("bad postcard: {e}")))),
            Message::Binary(_) => Err((
                None,
                ApiError::bad_request("binary frames need the holdfast.v1.postcard subprotocol"),
            )),
            Message::Close(_) => return Err(End::ClientClosed),
            Message::Ping(_) | Message::Pong(_) => return Ok(()),
        };
        if !allowed {
            let id = match &parsed {
                Ok(msg) => Some(request_id(msg)),
                Err((id, _)) => *id,
            };
            self.queue_error(id, &ApiError::rate_limited());
            return Ok(());
        }
        let msg = match parsed {
            Ok(msg) => msg,
            Err((id, e)) => {
                self.queue_error(id, &e);
                return Ok(());
            }
        };
        if let Some(deferred) = self.dispatch(msg) {
            Box::pin(self.run_deferred(deferred)).await;
        }
        Ok(())
    }

    /// The awaited paths (this session waits meanwhile; other sessions do
    /// not).
    async fn run_deferred(&mut self, deferred: Deferred) {
        let ops = self.ctx.ops.clone();
        match deferred {
            Deferred::UnknownHold { id, hold, refusal } => {
                // The engine no longer knows this hold: Redis may remember
                // how it ended (one round trip).
                let refusal = ops
                    .or_ended::<()>(&hold, Err(refusal))
                    .await
                    .expect_err("a refusal stays a refusal");
                self.queue_error(Some(id), &refusal);
            }
            Deferred::Reserve { id, req, started } => {
                let applied = ops.reserve_leased(req).await;
                self.applied(
                    id,
                    started,
                    Op::Reserve,
                    applied.map(|a| a.map(ServerMsg::Reserved)),
                );
            }
            Deferred::Remote { id, msg } => {
                let answer = match msg {
                    ClientMsg::Commit(c) => ops.commit(&c).await.map(ServerMsg::Committed),
                    ClientMsg::Release(r) => ops.release(&r).await.map(ServerMsg::Released),
                    ClientMsg::Extend(x) => ops.extend(&x).await.map(ServerMsg::Extended),
                    _ => return,
                };
                match answer {
                    Ok(mut msg) => {
                        set_reply_id(&mut msg, id);
                        self.queue(&msg, "reply");
                    }
                    Err(e) => self.queue_error(Some(id), &e),
                }
            }
        }
    }

    /// An applied (or refused) request: answered now, or queued until its
    /// events are in Redis.
    fn applied(
        &mut self,
        id: u64,
        started: Option<Instant>,
        op: Op,
        applied: Result<Applied<ServerMsg>, ApiError>,
    ) {
        match applied {
            Err(e) => {
                if let Some(started) = started {
                    crate::metrics::request_time("ws", op.as_str(), started.elapsed());
                }
                self.queue_error(Some(id), &e);
            }
            Ok(applied) => {
                let pending = Pending {
                    applied,
                    id,
                    since: self.last_seen,
                    started,
                };
                if pending.applied.seq == 0 {
                    // Nothing to wait for (in memory, async, replayed):
                    // answer now.
                    self.finish(pending, Ok(()));
                } else {
                    self.waiting
                        .get_or_insert_default()
                        .pending
                        .push_back(pending);
                }
            }
        }
    }

    /// A buyer's checkout request (see [`crate::auth::buyer`]). A token
    /// that expired since it was presented ends the buyer's rights: the
    /// session is a viewer again until it presents a new one.
    fn dispatch_buyer(&mut self, id: u64, msg: ClientMsg) -> Option<Deferred> {
        let (Some(token), Some(buyers)) = (self.buyer.clone(), self.ctx.tokens.buyers.clone())
        else {
            self.queue_error(Some(id), &ApiError::unauthorized());
            return None;
        };
        if let Err(e) = buyers.live(&token) {
            self.role = Role::Viewer;
            self.buyer = None;
            self.rate = RateLimit::new(rate_for(&self.ctx.limits, Role::Viewer));
            self.queue_error(Some(id), &e);
            return None;
        }
        let ops = self.ctx.ops.clone();
        let (op, applied) = match msg {
            ClientMsg::Reserve(mut r) if ops.cluster.is_some() => {
                // Leased stock is reserved on the awaited path; the
                // token's count is taken here and kept even if refused.
                if let Err(e) = buyers.prepare_reserve(&ops, &token, &mut r) {
                    self.queue_error(Some(id), &e);
                    return None;
                }
                let req = match ops.claimed(r, token.channel.as_deref()) {
                    Ok(req) => req,
                    Err(e) => {
                        self.queue_error(Some(id), &e);
                        return None;
                    }
                };
                return Some(Deferred::Reserve {
                    id,
                    req,
                    started: None,
                });
            }
            ClientMsg::Reserve(r) => (
                Op::Reserve,
                buyers
                    .reserve_now(&ops, &token, r)
                    .map(|a| a.map(ServerMsg::Reserved)),
            ),
            ClientMsg::Release(mut r) => (
                Op::Release,
                buyers
                    .prepare_release(&ops, &token, &mut r)
                    .and_then(|()| ops.release_now(&r))
                    .map(|a| a.map(ServerMsg::Released)),
            ),
            ClientMsg::Extend(mut x) => (
                Op::Extend,
                buyers
                    .prepare_extend(&ops, &token, &mut x)
                    .and_then(|()| ops.extend_now(&x))
                    .map(|a| a.map(ServerMsg::Extended)),
            ),
            _ => {
                self.queue_error(
                    Some(id),
                    &ApiError::forbidden(
                        "a buyer token may not commit: the shop commits after payment",
                    ),
                );
                return None;
            }
        };
        self.applied(id, None, op, applied);
        None
    }

    /// Runs one request; returns the refusal of a hold operation on a hold
    /// the engine does not know, which the caller refines asynchronously.
    fn dispatch(&mut self, msg: ClientMsg) -> Option<Deferred> {
        let id = request_id(&msg);
        match msg {
            ClientMsg::Subscribe(s) => self.subscribe(s.id, &s.topics),
            ClientMsg::Unsubscribe(s) => {
                // (`Hub::unsubscribe` also ends an admin's stats frames.)
                self.subs.retain(|sub| {
                    let keep = !s.topics.iter().any(|t| **t == *sub.topic.name);
                    if !keep {
                        self.ctx.hub.unsubscribe(&sub.topic, self.conn);
                    }
                    keep
                });
                let topics = self.subs.iter().map(|s| s.topic.name.to_string()).collect();
                self.queue(
                    &ServerMsg::Subscribed(Subscribed { id: s.id, topics }),
                    "reply",
                );
            }
            ClientMsg::Ping(p) => {
                self.queue(
                    &ServerMsg::Pong(Pong {
                        id: p.id,
                        ts_ms: self.ctx.ops.engine.now_ms(),
                    }),
                    "reply",
                );
            }
            ClientMsg::Auth(a) => match self.ctx.tokens.caller_of(&a.token) {
                Ok(caller) => {
                    let was_admin = self.role == Role::Admin;
                    // A buyer may present a fresh token (its old one
                    // expiring); a stronger role keeps its rights.
                    if caller.role == Role::Buyer && self.role <= Role::Buyer {
                        self.buyer = caller.buyer;
                    }
                    if caller.role > self.role {
                        self.role = caller.role;
                        self.rate = RateLimit::new(rate_for(&self.ctx.limits, caller.role));
                    }
                    if self.role != Role::Buyer {
                        self.buyer = None;
                    }
                    self.queue(
                        &ServerMsg::Authed(Authed {
                            id: a.id,
                            role: self.role,
                        }),
                        "reply",
                    );
                    // After the answer: the client knows it is an admin
                    // when the statistics arrive.
                    if !was_admin && self.role == Role::Admin {
                        self.watch_stats();
                    }
                }
                Err(e) => self.queue_error(Some(a.id), &e),
            },
            ClientMsg::Reserve(_)
            | ClientMsg::Commit(_)
            | ClientMsg::Release(_)
            | ClientMsg::Extend(_) => {
                if self.role == Role::Buyer {
                    return self.dispatch_buyer(id, msg);
                }
                if let Err(e) = require(self.role, Role::Checkout) {
                    self.queue_error(Some(id), &e);
                    return None;
                }
                let hold = match &msg {
                    ClientMsg::Commit(c) => Some(c.hold.clone()),
                    ClientMsg::Release(r) => Some(r.hold.clone()),
                    ClientMsg::Extend(x) => Some(x.hold.clone()),
                    _ => None,
                };
                self.requests = self.requests.wrapping_add(1);
                let started = self.requests.is_multiple_of(TIME_ONE_IN).then(Instant::now);
                let ops = &self.ctx.ops;
                if ops.cluster.is_some() {
                    if let ClientMsg::Reserve(req) = msg {
                        return Some(Deferred::Reserve { id, req, started });
                    }
                    if hold
                        .as_deref()
                        .is_some_and(|h| ops.remote_owner(h).is_some())
                    {
                        return Some(Deferred::Remote { id, msg });
                    }
                }
                let (op, applied) = match msg {
                    ClientMsg::Reserve(r) => (
                        Op::Reserve,
                        ops.reserve_now(r).map(|a| a.map(ServerMsg::Reserved)),
                    ),
                    ClientMsg::Commit(c) => (
                        Op::Commit,
                        ops.commit_now(&c).map(|a| a.map(ServerMsg::Committed)),
                    ),
                    ClientMsg::Release(r) => (
                        Op::Release,
                        ops.release_now(&r).map(|a| a.map(ServerMsg::Released)),
                    ),
                    ClientMsg::Extend(x) => (
                        Op::Extend,
                        ops.extend_now(&x).map(|a| a.map(ServerMsg::Extended)),
                    ),
                    _ => unreachable!("filtered above"),
                };
                match applied {
                    Err(e) => {
                        if let Some(started) = started {
                            crate::metrics::request_time("ws", op.as_str(), started.elapsed());
                        }
                        if let Some(hold) = hold
                            && e.code == crate::protocol::Code::HoldNotFound
                        {
                            return Some(Deferred::UnknownHold {
                                id,
                                hold,
                                refusal: e,
                            });
                        }
                        self.queue_error(Some(id), &e);
                    }
                    Ok(applied) => {
                        let pending = Pending {
                            applied,
                            id,
                            since: self.last_seen,
                            started,
                        };
                        if pending.applied.seq == 0 {
                            // Nothing to wait for (in memory, async,
                            // replayed): answer now.
                            self.finish(pending, Ok(()));
                        } else {
                            self.waiting
                                .get_or_insert_default()
                                .pending
                                .push_back(pending);
                        }
                    }
                }
            }
        }
        None
    }

    fn subscribe(&mut self, id: u64, topics: &[String]) {
        let mut keys = Vec::with_capacity(topics.len());
        for name in topics {
            if self.subs.iter().any(|s| *s.topic.name == **name)
                || keys.iter().any(|(n, _)| n == name)
            {
                continue;
            }
            match self.ctx.hub.parse(name) {
                Ok(key) => keys.push((name.clone(), key)),
                Err(e) => {
                    self.queue_error(Some(id), &e);
                    return;
                }
            }
        }
        if self.subs.len() + keys.len() > self.ctx.limits.subscriptions_max {
            let e = ApiError::new(
                axum::http::StatusCode::BAD_REQUEST,
                crate::protocol::Code::TooManySubscriptions,
                format!(
                    "at most {} topics per connection",
                    self.ctx.limits.subscriptions_max
                ),
            );
            self.queue_error(Some(id), &e);
            return;
        }
        let mut snapshots = Vec::with_capacity(keys.len());
        for (_, key) in keys {
            let topic = self.ctx.hub.subscribe(key, self.conn, &self.signal);
            let frames = topic.frames();
            snapshots.push(self.frame_message(frames.snapshot()));
            self.subs.push(Subscription {
                topic,
                last_seq: frames.seq,
                stats_seq: 0,
            });
        }
        let names = self.subs.iter().map(|s| s.topic.name.to_string()).collect();
        self.queue(
            &ServerMsg::Subscribed(Subscribed { id, topics: names }),
            "reply",
        );
        crate::metrics::hot()
            .frames_snapshot
            .increment(snapshots.len() as u64);
        self.out.extend(snapshots);
        if self.role == Role::Admin {
            self.watch_stats();
        }
    }

    /// An admin gets the stats frames of every topic it subscribes to:
    /// registers for them and queues the current ones not yet sent.
    fn watch_stats(&mut self) {
        for i in 0..self.subs.len() {
            if self.subs[i].stats_seq > 0 {
                continue;
            }
            let stats = self
                .ctx
                .hub
                .watch_stats(&self.subs[i].topic, self.conn, &self.signal);
            self.subs[i].stats_seq = stats.seq;
            let m = self.frame_message(&stats.frame);
            self.out.push(m);
        }
    }
}

/// The inbound message rate of a role: viewers send next to nothing, a
/// checkout backend pipelines.
fn rate_for(limits: &crate::config::Limits, role: Role) -> u32 {
    match role {
        // A buyer is a browser tapping "buy": a viewer's rate.
        Role::Viewer | Role::Buyer => limits.messages_per_sec_max,
        Role::Checkout | Role::Admin => limits.checkout_messages_per_sec_max,
    }
}

/// The `id` of a JSON message that did not parse as a whole (a field of
/// the wrong type, an unknown `op`), so a pipelining client can match the
/// error to its request. Only on the error path.
fn json_id(text: &str) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct IdOnly {
        id: Option<u64>,
    }
    serde_json::from_str::<IdOnly>(text).ok()?.id
}

/// Puts the request's id on an answer that came from another node.
fn set_reply_id(msg: &mut ServerMsg, id: u64) {
    match msg {
        ServerMsg::Committed(c) => c.id = id,
        ServerMsg::Released(r) => r.id = id,
        ServerMsg::Extended(x) => x.id = id,
        ServerMsg::Reserved(r) => r.id = id,
        _ => {}
    }
}

fn request_id(msg: &ClientMsg) -> u64 {
    match msg {
        ClientMsg::Subscribe(s) | ClientMsg::Unsubscribe(s) => s.id,
        ClientMsg::Reserve(r) => r.id,
        ClientMsg::Commit(c) => c.id,
        ClientMsg::Release(r) => r.id,
        ClientMsg::Extend(x) => x.id,
        ClientMsg::Ping(p) => p.id,
        ClientMsg::Auth(a) => a.id,
    }
}
