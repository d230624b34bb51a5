//! The fan-out measurement: how many idle subscribed viewers the gateway
//! holds per GiB of RSS, and how fast it delivers count updates to all of
//! them.
//!
//! The coordinator (the `fanout` binary) starts the real gateway, creates
//! one SKU, and starts worker processes (this same binary, `--worker`);
//! each worker opens its share of viewer websockets from loopback source
//! addresses of its own, subscribes each to the SKU and waits for its
//! snapshot. The gateway's RSS before and after gives the memory per idle
//! viewer. Then the coordinator changes the SKU's count U times a second
//! (an admin restock of one unit each) for a phase, and every worker
//! records, for every `update` frame it receives, receipt time − the
//! frame's `ts_ms` (the server's clock when it built the frame; same
//! machine, same clock) in an HdrHistogram, and counts frames and sequence
//! gaps (updates a viewer skipped because it fell behind).
//!
//! The viewer client here is deliberately minimal — a raw websocket over a
//! tokio `TcpStream` that decodes only the frame header and the first
//! three fields of a postcard `update` — because on a 2-core machine the
//! generator shares the CPU with the gateway: every cycle the client spends
//! is taken from the server. Its CPU time is measured and reported next to
//! the gateway's so a reader can tell when the generator was the limit.
//!
//! Workers talk to the coordinator with one line per message: commands on
//! stdin (`phase K`, `idle`, `report K`, `quit`), JSON answers on stdout.

use crate::measure::{LATENCY_MAX_NS, latency_histogram, record};
use anyhow::{Context, Result, bail};
use base64::Engine as _;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

/// Variant indices of `BinServerMsg` on the wire (postcard encodes an
/// enum's variant as a varint of its index; the order is the declaration
/// order in `holdfast_gateway::protocol`, checked by a test below).
pub const VARIANT_SNAPSHOT: u64 = 1;
pub const VARIANT_UPDATE: u64 = 2;
pub const VARIANT_STOCK_EVENT: u64 = 3;

/// WebSocket opcodes (RFC 6455).
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// Initial read buffer per viewer: an update is ~60 bytes, a one-SKU
/// snapshot ~150. Grown on demand up to [`FRAME_BYTES_MAX`].
const READ_BUFFER_BYTES: usize = 512;

/// Largest frame a viewer accepts (a slow viewer's full-state update of
/// one SKU is tiny; anything this big is a broken stream).
const FRAME_BYTES_MAX: usize = 64 * 1024;

/// Time allowed for one viewer's connect + handshake + snapshot.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The fixed `Sec-WebSocket-Key`: the server's answer is not checked (the
/// `101` status and the subprotocol are), so any valid key will do.
const HANDSHAKE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// The subprotocol every viewer asks for.
const SUBPROTOCOL: &str = holdfast_gateway::protocol::SUBPROTOCOL_BINARY;

// ----- wire ------------------------------------------------------------

/// A websocket frame header parsed from the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    pub fin: bool,
    pub opcode: u8,
    /// Bytes of header (payload starts here).
    pub header_len: usize,
    pub payload_len: usize,
}

/// Parses a server frame header (servers never mask). `Ok(None)`: more
/// bytes needed.
pub fn parse_frame_head(buf: &[u8]) -> Result<Option<FrameHead>> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b1 & 0x80 != 0 {
        bail!("masked frame from the server");
    }
    let (header_len, payload_len) = match b1 & 0x7f {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (4, usize::from(u16::from_be_bytes([buf[2], buf[3]])))
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut len = [0u8; 8];
            len.copy_from_slice(&buf[2..10]);
            let len = u64::from_be_bytes(len);
            (10, usize::try_from(len).unwrap_or(usize::MAX))
        }
        n => (2, usize::from(n)),
    };
    if payload_len > FRAME_BYTES_MAX {
        bail!("frame of {payload_len} bytes");
    }
    Ok(Some(FrameHead {
        fin: b0 & 0x80 != 0,
        opcode: b0 & 0x0f,
        header_len,
        payload_len,
    }))
}

/// A masked client frame (clients must mask; the key need not be secret
/// for a benchmark, only present).
pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    const MASK: [u8; 4] = [0x5a, 0x17, 0xc3, 0x81];
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(0x80 | opcode);
    match payload.len() {
        n @ 0..126 => out.push(0x80 | n as u8),
        n @ 126..=0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    out
}

/// Reads a postcard varint (LEB128, at most 10 bytes for a u64).
fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..70).step_by(7) {
        let byte = *buf.get(*pos)?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// The variant, `seq` and `ts_ms` of a postcard `snapshot`, `update` or
/// `stock_event` (all three start with topic, seq, ts_ms), without decoding
/// the rest; `None` for other messages.
pub fn peek_topic_frame(payload: &[u8]) -> Option<(u64, u64, u64)> {
    let mut pos = 0;
    let variant = varint(payload, &mut pos)?;
    if !matches!(
        variant,
        VARIANT_SNAPSHOT | VARIANT_UPDATE | VARIANT_STOCK_EVENT
    ) {
        return None;
    }
    let topic_len = usize::try_from(varint(payload, &mut pos)?).ok()?;
    pos = pos.checked_add(topic_len)?;
    let seq = varint(payload, &mut pos)?;
    let ts_ms = varint(payload, &mut pos)?;
    Some((variant, seq, ts_ms))
}

/// Wall-clock time in nanoseconds since the Unix epoch (the clock the
/// gateway's `ts_ms` comes from).
fn now_unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

// ----- change driver -------------------------------------------------------

/// Changes the watched SKU's count at a fixed rate, open loop: one
/// reserve of one unit per tick over a checkout websocket, sent on
/// schedule whether or not earlier answers have arrived (a driver that
/// waited for answers would slow down exactly when the gateway is
/// overloaded and hide it). Holds are left to their (long) TTL.
pub struct ChangeDriver {
    rt: tokio::runtime::Runtime,
    ws: Option<crate::gateway_ws::Ws>,
    sku: String,
    next_id: u64,
}

/// What one phase of driving did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DriveStats {
    pub changes: u64,
    /// Seconds from the first to the last send.
    pub drive_s: f64,
    /// Latest a send went out after its due time (ms): the driver's own lag.
    pub send_late_max_ms: f64,
    /// Answers that were not `reserved`.
    pub refused: u64,
}

impl ChangeDriver {
    pub fn connect(addr: SocketAddr, checkout_token: &str, sku: &str) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let ws = rt.block_on(crate::gateway_ws::connect(addr, checkout_token))?;
        Ok(Self {
            rt,
            ws: Some(ws),
            sku: sku.to_string(),
            next_id: 1,
        })
    }

    /// Sends `changes` reserves at `per_sec`, then waits (bounded) for
    /// their answers.
    pub fn drive(&mut self, per_sec: u32, changes: u64) -> Result<DriveStats> {
        use futures_util::{SinkExt, StreamExt};
        let mut ws = self.ws.take().context("driver connection lost")?;
        let first_id = self.next_id;
        self.next_id += changes;
        let sku = self.sku.clone();
        let result = self.rt.block_on(async {
            let mut stats = DriveStats::default();
            let started = tokio::time::Instant::now();
            let period = Duration::from_secs_f64(1.0 / f64::from(per_sec.max(1)));
            let (mut sent, mut answered) = (0u64, 0u64);
            let answers_deadline = |last: tokio::time::Instant| last + Duration::from_secs(10);
            let mut last_send = started;
            while answered < changes {
                let due = started + period.mul_f64(sent as f64);
                let sending = sent < changes;
                let wake = if sending { due } else { answers_deadline(last_send) };
                tokio::select! {
                    () = tokio::time::sleep_until(wake) => {
                        if !sending {
                            bail!("{} of {changes} reserves unanswered after 10 s", changes - answered);
                        }
                        let late = tokio::time::Instant::now().duration_since(due);
                        stats.send_late_max_ms = stats.send_late_max_ms.max(late.as_secs_f64() * 1e3);
                        let id = first_id + sent;
                        ws.send(crate::gateway_ws::reserve_msg(id as usize, &sku, "fanout-driver")).await?;
                        sent += 1;
                        last_send = tokio::time::Instant::now();
                    }
                    frame = ws.next() => {
                        let Some(frame) = frame else { bail!("driver connection closed") };
                        if let tokio_tungstenite::tungstenite::Message::Binary(b) = frame? {
                            match postcard::from_bytes::<holdfast_gateway::protocol::BinServerMsg>(&b)? {
                                holdfast_gateway::protocol::BinServerMsg::Reserved(_) => answered += 1,
                                holdfast_gateway::protocol::BinServerMsg::Error(_) => {
                                    answered += 1;
                                    stats.refused += 1;
                                }
                                _ => {}
                            }
                        }
                    }
                }
            }
            stats.changes = sent;
            stats.drive_s = last_send.duration_since(started).as_secs_f64();
            Ok::<_, anyhow::Error>((stats, ws))
        });
        let (stats, ws) = result?;
        self.ws = Some(ws);
        Ok(stats)
    }
}

// ----- floor server ------------------------------------------------------

/// Runs the floor server: the least a tokio fan-out server can do for the
/// same viewers and the same wire bytes, to show how far the gateway is
/// from the machine's own limit. It answers the websocket upgrade with a
/// fixed `101`, sends each viewer one snapshot, then for every `tick` line
/// on stdin builds one `update` (postcard, the gateway's own types),
/// encodes it once, and lets one task per connection write it (woken
/// through a `watch` channel, latest value only). No hub, no limits, no
/// metrics, no tungstenite: what is left is tokio and the kernel.
pub fn run_floor_server(listen: SocketAddr, topic: &str) -> Result<()> {
    // Best effort: a lower limit shows as failed connections in the row.
    let _ = holdfast_sys::raise_nofile();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(floor_main(listen, topic.to_string()))
}

/// A server frame: unmasked, final, binary.
pub fn server_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    out.push(0x80 | OP_BINARY);
    match payload.len() {
        n @ 0..126 => out.push(n as u8),
        n @ 126..=0xffff => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out
}

async fn floor_main(listen: SocketAddr, topic: String) -> Result<()> {
    use holdfast_gateway::protocol::{ServerMsg, SkuState, Snapshot, Update};
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(listen)?;
    let listener = socket.listen(4096)?;
    let mut state = SkuState {
        id: topic.trim_start_matches("sku:").to_string(),
        available: 100_000,
        held: 0,
        sold: 0,
        total: 100_000,
        state: holdfast_gateway::protocol::SaleState::Open,
        opens_at_ms: None,
        sold_out: false,
        all_in_carts: false,
        buyer_limit: 0,
        meta: None,
        channels: Vec::new(),
    };
    let now_ms = || now_unix_ns() / 1_000_000;
    let snapshot = bytes::Bytes::from(server_frame(
        &ServerMsg::Snapshot(Snapshot {
            topic: topic.clone(),
            seq: 0,
            ts_ms: now_ms(),
            skus: vec![state.clone()],
        })
        .to_postcard(),
    ));
    let (tx, rx) = tokio::sync::watch::channel(bytes::Bytes::new());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            };
            let (snapshot, rx) = (snapshot.clone(), rx.clone());
            tokio::spawn(async move {
                let _ = floor_conn(stream, snapshot, rx).await;
            });
        }
    });
    say_text("ready").await?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut seq = 0;
    while let Some(line) = lines.next_line().await? {
        match line.trim() {
            "tick" => {
                seq += 1;
                state.held += 1;
                state.available -= 1;
                let update = ServerMsg::Update(Update {
                    topic: topic.clone(),
                    seq,
                    ts_ms: now_ms(),
                    skus: vec![state.clone()],
                });
                tx.send_replace(bytes::Bytes::from(server_frame(&update.to_postcard())));
            }
            "quit" => break,
            other => bail!("unknown floor command {other:?}"),
        }
    }
    Ok(())
}

async fn say_text(text: &str) -> Result<()> {
    let mut out = tokio::io::stdout();
    out.write_all(format!("{text}\n").as_bytes()).await?;
    out.flush().await?;
    Ok(())
}

/// One floor connection: fixed upgrade, snapshot, then every new frame.
async fn floor_conn(
    mut stream: TcpStream,
    snapshot: bytes::Bytes,
    mut frames: tokio::sync::watch::Receiver<bytes::Bytes>,
) -> Result<()> {
    stream.set_nodelay(true)?;
    let mut head = Vec::with_capacity(512);
    while find(&head, b"\r\n\r\n").is_none() {
        if head.len() > 4096 {
            bail!("http head too long");
        }
        read_more(&mut stream, &mut head).await?;
    }
    let upgrade = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: {SUBPROTOCOL}\r\n\r\n"
    );
    stream.write_all(upgrade.as_bytes()).await?;
    stream.write_all(&snapshot).await?;
    frames.borrow_and_update();
    let (mut rd, mut wr) = stream.into_split();
    let mut sink = [0u8; 256];
    loop {
        tokio::select! {
            changed = frames.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                let frame = frames.borrow_and_update().clone();
                wr.write_all(&frame).await?;
            }
            n = rd.read(&mut sink) => {
                if n? == 0 {
                    return Ok(());
                }
            }
        }
    }
}

// ----- worker ------------------------------------------------------------

/// What a worker does.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub addr: SocketAddr,
    pub viewers: usize,
    /// Source addresses, used round-robin (each gives its own range of
    /// ephemeral ports).
    pub sources: Vec<Ipv4Addr>,
    pub topic: String,
    /// Handshakes in flight at once.
    pub connect_concurrency: usize,
    /// Phases the coordinator will ask about.
    pub phases: usize,
}

/// A worker's figures for one phase.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct PhaseReport {
    pub phase: usize,
    /// `update` frames received.
    pub updates: u64,
    /// Updates skipped (sequence gaps): the viewer fell behind and the
    /// gateway sent it the newest state instead.
    pub gaps: u64,
    /// Payload bytes of those frames.
    pub bytes: u64,
    /// Viewers whose connection ended during the phase.
    pub closed: u64,
    /// Delivery latency histogram (ns), V2-serialised, base64.
    pub hist: String,
}

/// One line from a worker to the coordinator.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerLine {
    Ready {
        connected: u64,
        failed: BTreeMap<String, u64>,
        /// Seconds from the first connect to the last snapshot.
        connect_s: f64,
    },
    Report(PhaseReport),
}

#[derive(Default)]
struct PhaseStats {
    hist: Option<Histogram<u64>>,
    updates: u64,
    gaps: u64,
    bytes: u64,
    closed: u64,
}

#[derive(Default)]
struct WorkerStats {
    phase: Option<usize>,
    phases: Vec<PhaseStats>,
    connected: u64,
    failed: BTreeMap<String, u64>,
}

impl WorkerStats {
    fn current(&mut self) -> Option<&mut PhaseStats> {
        let k = self.phase?;
        self.phases.get_mut(k)
    }
}

type Stats = Rc<RefCell<WorkerStats>>;

/// Runs a worker: connects its viewers, reports ready, then serves the
/// coordinator's commands until `quit` or end of input. Single-threaded on
/// purpose: one core's worth of client at most per worker process.
pub fn run_worker(cfg: &WorkerConfig) -> Result<()> {
    // Best effort: a lower limit shows as failed connections in the row.
    let _ = holdfast_sys::raise_nofile();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, worker_main(cfg.clone()))
}

async fn worker_main(cfg: WorkerConfig) -> Result<()> {
    let stats: Stats = Rc::new(RefCell::new(WorkerStats {
        phases: (0..cfg.phases).map(|_| PhaseStats::default()).collect(),
        ..WorkerStats::default()
    }));
    let started = std::time::Instant::now();
    let handshakes = Rc::new(tokio::sync::Semaphore::new(cfg.connect_concurrency.max(1)));
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    for i in 0..cfg.viewers {
        let source = cfg.sources.get(i % cfg.sources.len().max(1)).copied();
        let (stats, handshakes, done) = (stats.clone(), handshakes.clone(), done_tx.clone());
        let (addr, topic) = (cfg.addr, cfg.topic.clone());
        tokio::task::spawn_local(async move {
            viewer(addr, source, &topic, &stats, &handshakes, &done).await;
        });
    }
    drop(done_tx);
    // Every viewer reports once: connected (snapshot seen) or failed.
    let mut reported = 0;
    while reported < cfg.viewers {
        if done_rx.recv().await.is_none() {
            break;
        }
        reported += 1;
    }
    let ready = {
        let s = stats.borrow();
        WorkerLine::Ready {
            connected: s.connected,
            failed: s.failed.clone(),
            connect_s: started.elapsed().as_secs_f64(),
        }
    };
    say(&ready).await?;

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let mut words = line.split_whitespace();
        match (
            words.next(),
            words.next().and_then(|k| k.parse::<usize>().ok()),
        ) {
            (Some("phase"), Some(k)) if k < cfg.phases => stats.borrow_mut().phase = Some(k),
            (Some("idle"), _) => stats.borrow_mut().phase = None,
            (Some("report"), Some(k)) if k < cfg.phases => {
                let report = {
                    let mut s = stats.borrow_mut();
                    let p = std::mem::take(&mut s.phases[k]);
                    PhaseReport {
                        phase: k,
                        updates: p.updates,
                        gaps: p.gaps,
                        bytes: p.bytes,
                        closed: p.closed,
                        hist: encode_hist(&p.hist.unwrap_or_else(latency_histogram))?,
                    }
                };
                say(&WorkerLine::Report(report)).await?;
            }
            (Some("quit"), _) => break,
            _ => bail!("unknown worker command {line:?}"),
        }
    }
    Ok(())
}

async fn say(line: &WorkerLine) -> Result<()> {
    let mut text = serde_json::to_string(line)?;
    text.push('\n');
    let mut out = tokio::io::stdout();
    out.write_all(text.as_bytes()).await?;
    out.flush().await?;
    Ok(())
}

/// Serialises a histogram for the coordinator (V2, base64).
pub fn encode_hist(hist: &Histogram<u64>) -> Result<String> {
    let mut bytes = Vec::new();
    V2Serializer::new()
        .serialize(hist, &mut bytes)
        .map_err(|e| anyhow::anyhow!("serialising a histogram: {e:?}"))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// The inverse of [`encode_hist`].
pub fn decode_hist(text: &str) -> Result<Histogram<u64>> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(text)?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| anyhow::anyhow!("reading a histogram: {e:?}"))
}

/// One viewer: connect, subscribe, then read frames until the connection
/// ends. Reports on `done` once, when its snapshot arrived or it failed.
async fn viewer(
    addr: SocketAddr,
    source: Option<Ipv4Addr>,
    topic: &str,
    stats: &Stats,
    handshakes: &tokio::sync::Semaphore,
    done: &tokio::sync::mpsc::UnboundedSender<()>,
) {
    let permit = handshakes.acquire().await.expect("never closed");
    let opened = tokio::time::timeout(CONNECT_TIMEOUT, open(addr, source, topic)).await;
    drop(permit);
    let (mut stream, mut buf, last_seq) = match opened {
        Ok(Ok(open)) => open,
        Ok(Err(e)) => {
            fail(stats, &short_error(&e));
            let _ = done.send(());
            return;
        }
        Err(_) => {
            fail(stats, "timeout");
            let _ = done.send(());
            return;
        }
    };
    stats.borrow_mut().connected += 1;
    let _ = done.send(());
    let _ = read_loop(&mut stream, &mut buf, last_seq, stats).await;
    if let Some(p) = stats.borrow_mut().current() {
        p.closed += 1;
    }
}

fn fail(stats: &Stats, code: &str) {
    *stats
        .borrow_mut()
        .failed
        .entry(code.to_string())
        .or_default() += 1;
}

fn short_error(e: &anyhow::Error) -> String {
    match e.downcast_ref::<std::io::Error>() {
        Some(io) => format!("{:?}", io.kind()),
        None => {
            let text = format!("{e}");
            text.chars().take(40).collect()
        }
    }
}

/// Connects, upgrades, subscribes, and reads up to the snapshot. Returns
/// the stream, the bytes already read past the snapshot, and its `seq`.
async fn open(
    addr: SocketAddr,
    source: Option<Ipv4Addr>,
    topic: &str,
) -> Result<(TcpStream, Vec<u8>, u64)> {
    let mut stream = match source {
        Some(ip) => holdfast_sys::connect_from(ip.into(), addr).await?,
        None => {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            stream
        }
    };
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {HANDSHAKE_KEY}\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: {SUBPROTOCOL}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut buf = Vec::with_capacity(READ_BUFFER_BYTES);
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 4096 {
            bail!("http head too long");
        }
        read_more(&mut stream, &mut buf).await?;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    if !head.starts_with("http/1.1 101") {
        let status: String = head.lines().next().unwrap_or("").chars().take(40).collect();
        bail!("{status}");
    }
    if !head.contains(SUBPROTOCOL) {
        bail!("subprotocol not accepted");
    }
    buf.drain(..head_end);
    let subscribe =
        holdfast_gateway::protocol::ClientMsg::Subscribe(holdfast_gateway::protocol::Subscribe {
            id: 1,
            topics: vec![topic.to_string()],
        });
    stream
        .write_all(&client_frame(OP_BINARY, &subscribe.to_postcard()))
        .await?;
    // Frames until the snapshot: hello, subscribed, snapshot.
    loop {
        while let Some(head) = parse_frame_head(&buf)? {
            let end = head.header_len + head.payload_len;
            if buf.len() < end {
                break;
            }
            let payload = &buf[head.header_len..end];
            match head.opcode {
                OP_BINARY => {
                    if let Some((VARIANT_SNAPSHOT, seq, _)) = peek_topic_frame(payload) {
                        buf.drain(..end);
                        return Ok((stream, buf, seq));
                    }
                    if payload.first() == Some(&11) {
                        // BinServerMsg::Error: the subscription was refused.
                        bail!("subscribe refused");
                    }
                }
                OP_CLOSE => bail!("closed by the server"),
                OP_PING => {
                    let pong = client_frame(OP_PONG, payload);
                    stream.write_all(&pong).await?;
                }
                _ => {}
            }
            buf.drain(..end);
        }
        read_more(&mut stream, &mut buf).await?;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Appends what the socket has to `buf`; an error at end of stream.
async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<()> {
    if buf.capacity() - buf.len() < 256 {
        buf.reserve(buf.capacity().max(READ_BUFFER_BYTES));
    }
    let n = stream.read_buf(buf).await?;
    if n == 0 {
        bail!("connection closed");
    }
    Ok(())
}

/// Reads frames until the connection ends, recording every update.
async fn read_loop(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    mut last_seq: u64,
    stats: &Stats,
) -> Result<()> {
    loop {
        let mut consumed = 0;
        while let Some(head) = parse_frame_head(&buf[consumed..])? {
            let start = consumed + head.header_len;
            let end = start + head.payload_len;
            if buf.len() < end {
                break;
            }
            let payload = &buf[start..end];
            match head.opcode {
                OP_BINARY => {
                    if let Some((VARIANT_UPDATE, seq, ts_ms)) = peek_topic_frame(payload) {
                        let now_ns = now_unix_ns();
                        let mut s = stats.borrow_mut();
                        if let Some(p) = s.current() {
                            let lag_ns = now_ns.saturating_sub(ts_ms.saturating_mul(1_000_000));
                            let hist = p.hist.get_or_insert_with(latency_histogram);
                            record(hist, lag_ns.min(LATENCY_MAX_NS), 1);
                            p.updates += 1;
                            p.bytes += head.payload_len as u64;
                            p.gaps += seq.saturating_sub(last_seq + 1);
                        }
                        last_seq = last_seq.max(seq);
                    }
                }
                OP_CLOSE => return Ok(()),
                OP_PING => {
                    let pong = client_frame(OP_PONG, payload);
                    stream.write_all(&pong).await?;
                }
                _ => {}
            }
            consumed = end;
        }
        buf.drain(..consumed);
        read_more(stream, buf).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_gateway::protocol::{Hello, ServerMsg, SkuState, Snapshot, StockEvent, Update};

    /// The raw viewer against the real gateway (when built): snapshot, then
    /// an update with a larger seq after the driver changes the count.
    #[test]
    fn a_raw_viewer_sees_the_snapshot_then_the_drivers_change() {
        use crate::gateway_proc::{GatewayProcess, GatewaySpec, default_gateway_bin};
        let bin = default_gateway_bin();
        if !bin.exists() {
            eprintln!("{} not built; skipping", bin.display());
            return;
        }
        let gateway = GatewayProcess::start(&GatewaySpec {
            bin,
            redis: None,
            args: vec!["--broadcast-interval-ms".into(), "5".into()],
            wrapper: Vec::new(),
        })
        .unwrap();
        let (status, body) = gateway
            .admin(
                "POST",
                "/api/admin/skus",
                r#"{"id":"fan","title":"t","total":100}"#,
            )
            .unwrap();
        assert_eq!(status, 201, "{body}");
        let mut driver =
            ChangeDriver::connect(gateway.addr(), gateway.checkout_token(), "fan").unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (mut stream, mut buf, seq) =
            rt.block_on(open(gateway.addr(), None, "sku:fan")).unwrap();
        let stats = driver.drive(100, 3).unwrap();
        assert_eq!((stats.changes, stats.refused), (3, 0));
        let newer = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    let mut consumed = 0;
                    while let Some(head) = parse_frame_head(&buf[consumed..]).unwrap() {
                        let start = consumed + head.header_len;
                        let end = start + head.payload_len;
                        if buf.len() < end {
                            break;
                        }
                        if let Some((VARIANT_UPDATE, s, ts)) = peek_topic_frame(&buf[start..end]) {
                            return (s, ts);
                        }
                        consumed = end;
                    }
                    buf.drain(..consumed);
                    read_more(&mut stream, &mut buf).await.unwrap();
                }
            })
            .await
            .expect("an update within 10 s")
        });
        assert!(
            newer.0 > seq,
            "update seq {} after snapshot seq {seq}",
            newer.0
        );
        assert!(
            newer.1 > 1_600_000_000_000,
            "ts_ms is wall-clock milliseconds"
        );
    }

    fn state() -> SkuState {
        SkuState {
            id: "fan".into(),
            available: 7,
            held: 0,
            sold: 0,
            total: 7,
            state: holdfast_gateway::protocol::SaleState::Open,
            opens_at_ms: None,
            sold_out: false,
            all_in_carts: false,
            buyer_limit: 0,
            meta: None,
            channels: Vec::new(),
        }
    }

    #[test]
    fn peeks_seq_and_ts_of_the_gateways_own_encoding() {
        let u = ServerMsg::Update(Update {
            topic: "sku:fan".into(),
            seq: 300,
            ts_ms: 1_767_225_600_123,
            skus: vec![state()],
        });
        assert_eq!(
            peek_topic_frame(&u.to_postcard()),
            Some((VARIANT_UPDATE, 300, 1_767_225_600_123))
        );
        let s = ServerMsg::Snapshot(Snapshot {
            topic: "sku:fan".into(),
            seq: 1,
            ts_ms: 5,
            skus: vec![state()],
        });
        assert_eq!(
            peek_topic_frame(&s.to_postcard()),
            Some((VARIANT_SNAPSHOT, 1, 5))
        );
        let e = ServerMsg::StockEvent(StockEvent {
            topic: "sku:fan".into(),
            seq: 9,
            ts_ms: 6,
            sku: "fan".into(),
            event: holdfast_gateway::protocol::StockEventKind::SoldOut,
        });
        assert_eq!(
            peek_topic_frame(&e.to_postcard()),
            Some((VARIANT_STOCK_EVENT, 9, 6))
        );
        let hello = ServerMsg::Hello(Hello {
            server: "x".into(),
            role: holdfast_gateway::protocol::Role::Viewer,
            subscriptions_max: 1,
            frame_bytes_max: 1,
            messages_per_sec_max: 1,
            broadcast_interval_ms: 1,
        });
        assert_eq!(peek_topic_frame(&hello.to_postcard()), None);
        let err = ServerMsg::Error(holdfast_gateway::protocol::ErrorMsg {
            id: Some(1),
            error: holdfast_gateway::protocol::Code::Invalid,
            message: "y".into(),
        });
        assert_eq!(
            err.to_postcard()[0],
            11,
            "the error variant index `open` checks"
        );
        assert_eq!(peek_topic_frame(&[]), None);
        assert_eq!(peek_topic_frame(&[2, 200]), None, "truncated");
    }

    #[test]
    fn frames_parse_in_every_length_form_and_in_pieces() {
        let unmask = |f: &[u8]| -> Vec<u8> {
            let head = {
                // Parse as if unmasked by clearing the mask bit.
                let mut g = f.to_vec();
                g[1] &= 0x7f;
                parse_frame_head(&g).unwrap().unwrap()
            };
            let key = &f[head.header_len..head.header_len + 4];
            f[head.header_len + 4..]
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ key[i % 4])
                .collect()
        };
        for len in [0usize, 5, 125, 126, 300, 65_535] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let f = client_frame(OP_BINARY, &payload);
            assert_eq!(unmask(&f), payload, "len {len}");
        }
        // Above 64 KiB: the 64-bit length form.
        let big = client_frame(OP_BINARY, &vec![0u8; 70_000]);
        assert_eq!(big[1], 0x80 | 127);
        assert_eq!(big[2..10], 70_000u64.to_be_bytes());
        // A server frame (unmasked) of 300 bytes, parsed as it arrives.
        let mut server = vec![0x82, 126, 0x01, 0x2c];
        server.extend(std::iter::repeat_n(0u8, 300));
        assert_eq!(parse_frame_head(&server[..1]).unwrap(), None);
        assert_eq!(parse_frame_head(&server[..3]).unwrap(), None);
        let head = parse_frame_head(&server).unwrap().unwrap();
        assert_eq!(
            (head.fin, head.opcode, head.header_len, head.payload_len),
            (true, OP_BINARY, 4, 300)
        );
        assert!(parse_frame_head(&[0x82, 0x85]).is_err(), "masked");
        assert!(
            parse_frame_head(&[0x82, 127, 0, 0, 0, 0, 0x10, 0, 0, 0]).is_err(),
            "too big"
        );
    }

    #[test]
    fn histograms_survive_the_trip_to_the_coordinator() {
        let mut h = latency_histogram();
        for v in [1_000u64, 2_000_000, 45_000_000] {
            record(&mut h, v, 3);
        }
        let back = decode_hist(&encode_hist(&h).unwrap()).unwrap();
        assert_eq!(back.len(), 9);
        assert_eq!(back.value_at_quantile(0.99), h.value_at_quantile(0.99));
    }
}
