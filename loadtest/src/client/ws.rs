//! Websocket clients: the handshake (JSON or the postcard subprotocol), a
//! multiplexed checkout session that correlates answers by `id`, and a pool
//! of such sessions for open-model arrivals.
//!
//! Owns per-connection memory: every connection uses [`ws_config`], a 4 KiB
//! read buffer and bounded frames, instead of tungstenite's 128 KiB buffers
//! and 64 MiB messages, because tens of thousands of viewers share one
//! process. Never buffers writes without bound: a write waits for the socket.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use holdfast_protocol::{
    self as protocol, ClientMsg, Committed, LineReq, Released, Reserved, ServerMsg,
};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, oneshot};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;

use super::net::{Dialer, Target, is_local_exhaustion};
use super::{CallError, CallLimits, ReserveReq, Sent};
use crate::stats::Recorder;

pub type WsStream = WebSocketStream<TcpStream>;

/// Read buffer per connection: one small frame at a time is all a viewer
/// needs, and this buffer is allocated up front for every connection.
pub const READ_BUFFER_BYTES: usize = 4 * 1024;
/// Largest message accepted from the server: a snapshot of a 64-SKU show
/// with metadata fits many times over.
pub const MESSAGE_BYTES_MAX: usize = 1 << 20;
/// Write buffer bound; our frames are under 4 KiB (the server's limit).
pub const WRITE_BUFFER_BYTES_MAX: usize = 64 * 1024;

/// The websocket limits every connection of the load tester uses.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        // Write each frame at once: latency is what we measure.
        .write_buffer_size(0)
        .max_write_buffer_size(WRITE_BUFFER_BYTES_MAX)
        .max_message_size(Some(MESSAGE_BYTES_MAX))
        .max_frame_size(Some(MESSAGE_BYTES_MAX))
}

/// Why a connection could not be made.
#[derive(Debug, Clone)]
pub struct ConnectError {
    /// The generator ran out of sockets or ports (not the server's fault).
    pub local: bool,
    /// Short reason for counters: `refused`, `timeout`, `http_503`, ...
    pub code: String,
    pub detail: String,
}

/// Encodes a client message for the negotiated encoding.
pub fn encode(msg: &ClientMsg, binary: bool) -> Message {
    if binary {
        Message::Binary(msg.to_postcard().into())
    } else {
        Message::Text(msg.to_json().into())
    }
}

/// Decodes a server frame; `None` for control frames.
pub fn decode(m: &Message) -> Option<Result<ServerMsg, String>> {
    match m {
        Message::Text(t) => Some(ServerMsg::from_json(t.as_str()).map_err(|e| e.to_string())),
        Message::Binary(b) => Some(ServerMsg::from_postcard(b).map_err(|e| e.to_string())),
        _ => None,
    }
}

/// Opens websocket connections (with a bound on handshakes in flight) and
/// counts them.
#[derive(Debug)]
pub struct WsConnector {
    pub dialer: Dialer,
    pub target: Target,
    pub connect_timeout: Duration,
    handshakes: Semaphore,
    recorder: Recorder,
}

impl WsConnector {
    pub fn new(
        dialer: Dialer,
        target: Target,
        connect_timeout: Duration,
        handshakes_max: usize,
        recorder: Recorder,
    ) -> WsConnector {
        WsConnector {
            dialer,
            target,
            connect_timeout,
            handshakes: Semaphore::new(handshakes_max.max(1)),
            recorder,
        }
    }

    /// Connects and completes the handshake; counts `connections.ok` or
    /// `connections.failed.<code>` and records the connect time.
    pub async fn connect(
        &self,
        token: Option<&str>,
        binary: bool,
    ) -> Result<WsStream, ConnectError> {
        let _permit = self.handshakes.acquire().await.expect("never closed");
        let started = Instant::now();
        let result = tokio::time::timeout(self.connect_timeout, self.handshake(token, binary))
            .await
            .unwrap_or_else(|_| {
                Err(ConnectError {
                    local: false,
                    code: "timeout".into(),
                    detail: "connect or handshake timed out".into(),
                })
            });
        match &result {
            Ok(_) => self.recorder.with(|s| {
                s.add("connections.ok", 1);
                s.record("connect", started.elapsed().as_micros() as u64);
            }),
            Err(e) => self.recorder.with(|s| {
                s.add(&format!("connections.failed.{}", e.code), 1);
                if e.local {
                    s.add("generator.socket_exhaustion", 1);
                }
                s.sample_error(format!("connect: {}: {}", e.code, e.detail));
            }),
        }
        result
    }

    async fn handshake(&self, token: Option<&str>, binary: bool) -> Result<WsStream, ConnectError> {
        let stream = self.dialer.connect().await.map_err(|e| ConnectError {
            local: is_local_exhaustion(&e),
            code: if is_local_exhaustion(&e) {
                "local_exhaustion".into()
            } else {
                "tcp".into()
            },
            detail: e.to_string(),
        })?;
        let mut req = self
            .target
            .ws_url()
            .into_client_request()
            .map_err(|e| ConnectError {
                local: false,
                code: "request".into(),
                detail: e.to_string(),
            })?;
        if let Some(t) = token {
            let v = HeaderValue::from_str(&format!("Bearer {t}")).map_err(|e| ConnectError {
                local: false,
                code: "request".into(),
                detail: e.to_string(),
            })?;
            req.headers_mut().insert("authorization", v);
        }
        let proto = if binary {
            protocol::SUBPROTOCOL_BINARY
        } else {
            protocol::SUBPROTOCOL_JSON
        };
        req.headers_mut()
            .insert("sec-websocket-protocol", HeaderValue::from_static(proto));
        let (ws, _resp) =
            tokio_tungstenite::client_async_with_config(req, stream, Some(ws_config()))
                .await
                .map_err(|e| {
                    let code = match &e {
                        tungstenite::Error::Http(r) => format!("http_{}", r.status().as_u16()),
                        tungstenite::Error::Io(_) => "io".into(),
                        tungstenite::Error::Protocol(_) => "protocol".into(),
                        _ => "handshake".into(),
                    };
                    ConnectError {
                        local: false,
                        code,
                        detail: e.to_string(),
                    }
                })?;
        Ok(ws)
    }

    /// A checkout session: a connection authenticated with `token`.
    pub async fn session(&self, token: &str, binary: bool) -> Result<Arc<WsSession>, ConnectError> {
        let ws = self.connect(Some(token), binary).await?;
        Ok(WsSession::start(ws, binary))
    }
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<ServerMsg>>>>;

/// One checkout connection. Requests from many tasks are pipelined and
/// answers matched by `id`.
pub struct WsSession {
    sink: tokio::sync::Mutex<SplitSink<WsStream, Message>>,
    pending: Pending,
    next_id: AtomicU64,
    closed: CancellationToken,
    binary: bool,
}

impl WsSession {
    fn start(ws: WsStream, binary: bool) -> Arc<WsSession> {
        let (sink, stream) = ws.split();
        let session = Arc::new(WsSession {
            sink: tokio::sync::Mutex::new(sink),
            pending: Arc::default(),
            next_id: AtomicU64::new(1),
            closed: CancellationToken::new(),
            binary,
        });
        tokio::spawn(read_answers(
            stream,
            session.pending.clone(),
            session.closed.clone(),
        ));
        session
    }

    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// Sends a close frame; the reader task ends when the server answers.
    pub async fn close(&self) {
        let mut sink = self.sink.lock().await;
        let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
    }

    /// Sends `msg` with a fresh id and waits for the answer with that id.
    pub async fn call(&self, mut msg: ClientMsg, lim: CallLimits) -> Sent<ServerMsg> {
        // Relaxed: ids only need to be unique per connection.
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        set_id(&mut msg, id);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        let started = Instant::now();
        let fail = |e: CallError| {
            self.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            Sent {
                answer: Err(e),
                sent_at: Instant::now(),
            }
        };
        if self.is_closed() {
            return fail(CallError::Transport("connection closed".into()));
        }
        let frame = encode(&msg, self.binary);
        let written = {
            let mut sink = self.sink.lock().await;
            tokio::time::timeout(lim.timeout, sink.send(frame)).await
        };
        let sent_at = Instant::now();
        match written {
            Err(_) => return fail(CallError::Timeout),
            Ok(Err(e)) => return fail(CallError::Transport(e.to_string())),
            Ok(Ok(())) => {}
        }
        let left = lim.timeout.saturating_sub(started.elapsed());
        let answer = match tokio::time::timeout(left, rx).await {
            Ok(Ok(ServerMsg::Error(e))) => Err(CallError::Refused(e.error)),
            Ok(Ok(m)) => Ok(m),
            Ok(Err(_)) => Err(CallError::Transport(
                "connection closed before the answer".into(),
            )),
            Err(_) => {
                self.pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
                Err(CallError::Timeout)
            }
        };
        Sent { answer, sent_at }
    }

    pub async fn reserve(&self, r: &ReserveReq, lim: CallLimits) -> Sent<Reserved> {
        let msg = ClientMsg::Reserve(reserve_body(r));
        let s = self.call(msg, lim).await;
        map_answer(s, |m| {
            if let ServerMsg::Reserved(x) = m {
                Some(x)
            } else {
                None
            }
        })
    }

    pub async fn commit(&self, hold: &str, request_id: &str, lim: CallLimits) -> Sent<Committed> {
        let msg = ClientMsg::Commit(protocol::Commit {
            id: 0,
            hold: hold.into(),
            qty: None,
            lines: None,
            request_id: Some(request_id.into()),
        });
        let s = self.call(msg, lim).await;
        map_answer(s, |m| {
            if let ServerMsg::Committed(x) = m {
                Some(x)
            } else {
                None
            }
        })
    }

    pub async fn release(&self, hold: &str, request_id: &str, lim: CallLimits) -> Sent<Released> {
        let msg = ClientMsg::Release(protocol::Release {
            id: 0,
            hold: hold.into(),
            request_id: Some(request_id.into()),
        });
        let s = self.call(msg, lim).await;
        map_answer(s, |m| {
            if let ServerMsg::Released(x) = m {
                Some(x)
            } else {
                None
            }
        })
    }
}

/// The protocol body of a reserve request: one line as `sku`/`qty`, a cart
/// as `lines`.
pub fn reserve_body(r: &ReserveReq) -> protocol::Reserve {
    let single = r.lines.len() == 1;
    protocol::Reserve {
        id: 0,
        sku: single.then(|| r.lines[0].0.clone()),
        qty: single.then_some(r.lines[0].1),
        lines: (!single).then(|| {
            r.lines
                .iter()
                .map(|(s, q)| LineReq {
                    sku: s.clone(),
                    qty: *q,
                })
                .collect()
        }),
        buyer: r.buyer.clone(),
        request_id: Some(r.request_id.clone()),
        allow_partial: false,
        channel: r.channel.clone(),
    }
}

fn map_answer<T>(s: Sent<ServerMsg>, f: impl FnOnce(ServerMsg) -> Option<T>) -> Sent<T> {
    let answer = s.answer.and_then(|m| {
        let name = format!("{m:?}").chars().take(40).collect::<String>();
        f(m).ok_or_else(|| CallError::Transport(format!("unexpected answer {name}")))
    });
    Sent {
        answer,
        sent_at: s.sent_at,
    }
}

fn set_id(msg: &mut ClientMsg, id: u64) {
    match msg {
        ClientMsg::Subscribe(m) | ClientMsg::Unsubscribe(m) => m.id = id,
        ClientMsg::Reserve(m) => m.id = id,
        ClientMsg::Commit(m) => m.id = id,
        ClientMsg::Release(m) => m.id = id,
        ClientMsg::Extend(m) => m.id = id,
        ClientMsg::Ping(m) => m.id = id,
        ClientMsg::Auth(m) => m.id = id,
    }
}

fn answer_id(m: &ServerMsg) -> Option<u64> {
    match m {
        ServerMsg::Reserved(x) => Some(x.id),
        ServerMsg::Committed(x) => Some(x.id),
        ServerMsg::Released(x) => Some(x.id),
        ServerMsg::Extended(x) => Some(x.id),
        ServerMsg::Pong(x) => Some(x.id),
        ServerMsg::Authed(x) => Some(x.id),
        ServerMsg::Subscribed(x) => Some(x.id),
        ServerMsg::Error(x) => x.id,
        _ => None,
    }
}

async fn read_answers(
    mut stream: SplitStream<WsStream>,
    pending: Pending,
    closed: CancellationToken,
) {
    while let Some(frame) = stream.next().await {
        let Ok(frame) = frame else { break };
        if let Some(Ok(msg)) = decode(&frame)
            && let Some(id) = answer_id(&msg)
            && let Some(tx) = pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id)
        {
            let _ = tx.send(msg);
        }
        if frame.is_close() {
            break;
        }
    }
    closed.cancel();
    // Dropping the senders wakes every waiter with "closed before the answer".
    pending.lock().unwrap_or_else(|p| p.into_inner()).clear();
}

/// A fixed set of checkout sessions shared by open-model arrivals, each
/// reconnected on demand when it dies. Sized so no session exceeds the
/// gateway's per-connection message rate.
pub struct WsPool {
    slots: Vec<tokio::sync::Mutex<Option<Arc<WsSession>>>>,
    next: AtomicUsize,
    connector: Arc<WsConnector>,
    token: String,
    binary: bool,
}

impl WsPool {
    pub fn new(size: usize, connector: Arc<WsConnector>, token: String, binary: bool) -> WsPool {
        WsPool {
            slots: (0..size.max(1))
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
            next: AtomicUsize::new(0),
            connector,
            token,
            binary,
        }
    }

    /// Connects every slot now, so arrivals do not pay for handshakes.
    pub async fn warm(&self) {
        let all = self.slots.iter().map(|slot| async move {
            let mut g = slot.lock().await;
            if g.is_none() {
                *g = self.connector.session(&self.token, self.binary).await.ok();
            }
        });
        futures_util::future::join_all(all).await;
    }

    /// A live session, round-robin; a dead one is replaced first.
    pub async fn get(&self) -> Result<Arc<WsSession>, CallError> {
        // Relaxed: round-robin needs no ordering with anything else.
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut slot = self.slots[i].lock().await;
        if let Some(s) = slot.as_ref().filter(|s| !s.is_closed()) {
            return Ok(s.clone());
        }
        let s = self
            .connector
            .session(&self.token, self.binary)
            .await
            .map_err(|e| CallError::Transport(format!("connect: {}", e.code)))?;
        *slot = Some(s.clone());
        Ok(s)
    }

    pub async fn close(&self) {
        for slot in &self.slots {
            if let Some(s) = slot.lock().await.take() {
                s.close().await;
            }
        }
    }
}
