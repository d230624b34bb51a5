//! The gateway end-to-end rows of `compare`: the same flash-sale workload
//! as the other rows (C clients, reserve(1) → commit pairs on one hot drop),
//! driven over websockets through the real `holdfast` release binary, in
//! memory, `durable` with a private redis-server, or as one node of a
//! private Redis Cluster (`--redis-cluster`, durable, replica acks).
//!
//! Each of the C clients is one websocket connection with the checkout
//! token, speaking the binary subprotocol (`holdfast.v1.postcard`, what
//! native checkout clients and the load tester use). A client keeps up to W
//! requests in flight (the gateway's `--inflight-max`, passed to it): W
//! slots, each alternating a reserve and the commit of the hold it got, the
//! way the Redis-Lua pipelined row keeps P requests per round trip. With
//! W = 1 a client behaves like the unpipelined Redis row. Replies are
//! correlated by the protocol's `id` (the slot number).
//!
//! A drop is one SKU of `drop_units` units; when a reserve answers
//! `sold_out`, clients move on to the next pre-created drop, as the engine
//! rows rotate drops. Every run ends with an audit: every commit the
//! clients saw acknowledged is a sold unit in the gateway, and nothing is
//! left held.
//!
//! The latency of a pair is reserve sent → commit reply received, as in the
//! Redis rows. The client runs in this process on its own tokio runtime
//! (default one worker thread); its CPU, the gateway's and Redis's are all
//! in the row's `cores`, and split in its note.

use crate::clients::{ClientResult, ERRORS_MAX, REPLY_TIMEOUT, Shared};
use crate::gateway_http::HttpClient;
use crate::gateway_proc::{GatewayProcess, GatewaySpec, PerfRecord};
use crate::measure::{Measurement, Phase, Phases, latency_histogram, other_process_cpu_s, record};
use crate::redis_cluster::RedisCluster;
use crate::target::{Target, Workload};
use anyhow::{Context, Result, bail};
use bytes::Bytes;
use futures_util::{FutureExt, SinkExt, StreamExt};
use holdfast_gateway::protocol::{
    BinClientMsg, BinServerMsg, Commit, Reserve, SUBPROTOCOL_BINARY, SkuList,
};
use holdfast_testkit::RedisServer;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Fastest rate the drop count is sized for (pairs/s); far above what a
/// 2-core machine does end to end, so the drops never run out.
const PAIRS_PER_S_SIZED_FOR: f64 = 2e6;

/// Most drops created for one row (each is one SKU).
const DROPS_MAX: usize = 256;

/// Sampling frequency of `--perf-dir` profiles (Hz per CPU).
const PERF_FREQ: u32 = 499;

/// Client-side websocket limits: small buffers (replies are ~60 bytes),
/// frames written as they are fed and flushed in batches by the loop.
fn client_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(1 << 20)
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20))
}

/// Where the gateway keeps its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Memory,
    /// `--redis --persistence durable`.
    Redis,
    /// One node of a Redis Cluster of this many masters (one replica each).
    Cluster(u32),
}

/// How the clients talk to the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Websockets with the binary subprotocol, `window` requests in flight.
    Websocket,
    /// HTTP/1.1 keep-alive, JSON, one request in flight per connection
    /// (`window` is 1), as a checkout backend's connection pool.
    Http,
}

/// The gateway over websocket or HTTP, in memory, durable with Redis, or
/// one node of a Redis Cluster.
pub struct GatewayWs {
    pub backend: Backend,
    pub transport: Transport,
    /// Requests in flight per connection (also the gateway's
    /// `--inflight-max` for the row).
    pub window: usize,
}

impl Target for GatewayWs {
    fn name(&self) -> String {
        let mode = match self.backend {
            Backend::Memory => "in-memory".to_owned(),
            Backend::Redis => "durable (Redis)".to_owned(),
            Backend::Cluster(m) => format!("cluster node ({m} masters)"),
        };
        match self.transport {
            Transport::Websocket => format!("gateway websocket, {mode}, W={}", self.window),
            Transport::Http => format!("gateway HTTP/1.1, {mode}, 1 in flight"),
        }
    }

    fn run(&mut self, w: &Workload) -> Result<Measurement> {
        let window = self.window.max(1);
        let redis = if self.backend == Backend::Redis {
            Some(RedisServer::start(&w.redis_server)?)
        } else {
            None
        };
        let cluster = match self.backend {
            Backend::Cluster(masters) => Some(RedisCluster::start(masters)?),
            _ => None,
        };
        let cluster_args = cluster
            .iter()
            .flat_map(|c| ["--redis-cluster", c.urls(), "--node-id", "1"].map(String::from));
        let spec = GatewaySpec {
            bin: w.gateway_bin.clone(),
            redis: redis.as_ref().map(|r| (r.url(), "durable")),
            args: cluster_args
                .chain([
                    // The benchmark pipelines on purpose: lift the per-connection
                    // rate limit (a buyer-facing default of 50/s) and allow W in
                    // flight.
                    "--messages-per-sec-max".into(),
                    "1000000000".into(),
                    "--inflight-max".into(),
                    window.to_string(),
                    "--ws-connections-max".into(),
                    (w.clients + 64).to_string(),
                ])
                .chain(w.gateway_args.iter().cloned())
                .collect(),
            wrapper: Vec::new(),
        };
        let gateway = GatewayProcess::start(&spec)?;
        let seconds = (w.warmup + w.duration).as_secs_f64() + REPLY_TIMEOUT.as_secs_f64();
        let drops_n = ((seconds * PAIRS_PER_S_SIZED_FOR / f64::from(w.drop_units)).ceil() as usize
            + 2)
        .min(DROPS_MAX);
        let drops: Vec<String> = (0..drops_n).map(|k| format!("bench-drop-{k}")).collect();
        for id in &drops {
            let body = format!(
                r#"{{"id":"{id}","title":"bench drop","total":{}}}"#,
                w.drop_units
            );
            let (status, reply) = gateway.admin("POST", "/api/admin/skus", &body)?;
            if status != 201 {
                bail!("creating {id}: {status} {reply}");
            }
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(w.ws_client_threads.max(1))
            .enable_all()
            .build()?;
        let shared = Arc::new(Shared {
            phases: Phases::default(),
            drop: AtomicUsize::new(0),
            drops,
            window,
        });
        let redis_pids: Vec<u32> = match (&redis, &cluster) {
            (Some(r), _) => vec![r.pid()],
            (_, Some(c)) => c.pids(),
            _ => Vec::new(),
        };
        let perf = match &w.perf_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                let file = format!(
                    "gateway-{}-w{window}.data",
                    match self.backend {
                        Backend::Memory => "memory",
                        Backend::Redis => "durable",
                        Backend::Cluster(_) => "cluster",
                    }
                );
                Some(PerfRecord::attach(
                    gateway.pid(),
                    &dir.join(file),
                    (w.warmup + w.duration).as_secs_f64() + 1.0,
                    PERF_FREQ,
                )?)
            }
            None => None,
        };
        let (interval, results, cpu_parts) = rt.block_on(drive(
            &gateway,
            shared.clone(),
            w,
            &redis_pids,
            self.transport,
        ))?;
        drop(rt);
        if let Some(perf) = perf {
            perf.finish()?;
        }

        let mut m = Measurement {
            pairs: 0,
            elapsed: interval.elapsed,
            cpu_s: interval.cpu_s,
            latency: latency_histogram(),
            note: String::new(),
        };
        let mut commits = 0;
        let mut errors: BTreeMap<String, u64> = BTreeMap::new();
        for r in results {
            m.pairs += r.pairs;
            commits += r.commits_total;
            m.latency.add(&r.hist).expect("same bounds");
            for (code, n) in r.errors {
                *errors.entry(code).or_default() += n;
            }
        }
        let audit = audit(&gateway, &shared.drops, commits)?;
        let secs = interval.elapsed.as_secs_f64();
        let [client, gw, redis_cpu] = cpu_parts.map(|c| c / secs);
        let redis_part = match self.backend {
            Backend::Memory => String::new(),
            Backend::Redis => format!(", redis {redis_cpu:.2}"),
            Backend::Cluster(_) => {
                // The lease traffic: round trips to a SKU's pool per
                // reservation, over the whole run (warm-up included).
                let trips = gateway.metric("holdfast_cluster_lease_round_trips_total")?;
                format!(
                    ", redis (all servers) {redis_cpu:.2}; lease round trips per reservation {:.4}",
                    trips / commits.max(1) as f64
                )
            }
        };
        let errors = if errors.is_empty() {
            "none".to_string()
        } else {
            errors
                .iter()
                .map(|(c, n)| format!("{c} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        m.note = format!(
            "{} websocket connections (postcard), W={window} requests in flight each, {} tokio client thread(s); \
             cores: gateway {gw:.2}, client {client:.2}{redis_part}; drops used {}; refusals besides sold_out: {errors}; {audit}",
            w.clients,
            w.ws_client_threads,
            shared.drop.load(Ordering::Relaxed) + 1,
        );
        Ok(m)
    }
}

/// Connects every client, runs the phases, and collects the results and
/// the CPU seconds (client, gateway, redis) of the measured interval.
async fn drive(
    gateway: &GatewayProcess,
    shared: Arc<Shared>,
    w: &Workload,
    redis_pids: &[u32],
    transport: Transport,
) -> Result<(crate::measure::Interval, Vec<ClientResult>, [f64; 3])> {
    let mut tasks = Vec::with_capacity(w.clients);
    match transport {
        Transport::Websocket => {
            let mut conns = Vec::with_capacity(w.clients);
            for _ in 0..w.clients {
                conns.push(connect(gateway.addr(), gateway.checkout_token()).await?);
            }
            for (c, ws) in conns.into_iter().enumerate() {
                let shared = shared.clone();
                tasks.push(tokio::spawn(async move {
                    client_loop(ws, &shared, &format!("bench-buyer-{c}")).await
                }));
            }
        }
        Transport::Http => {
            let mut conns = Vec::with_capacity(w.clients);
            for _ in 0..w.clients {
                conns.push(HttpClient::connect(gateway.addr(), gateway.checkout_token()).await?);
            }
            for (c, client) in conns.into_iter().enumerate() {
                let shared = shared.clone();
                tasks.push(tokio::spawn(async move {
                    crate::gateway_http::client_loop(client, &shared, &format!("bench-buyer-{c}"))
                        .await
                }));
            }
        }
    }
    let gw_pid = gateway.pid();
    let samples: Mutex<Vec<[f64; 3]>> = Mutex::default();
    let cpu = || {
        let parts = [
            holdfast_sys::process_cpu_seconds(),
            other_process_cpu_s(gw_pid).unwrap_or(0.0),
            redis_pids
                .iter()
                .filter_map(|&p| other_process_cpu_s(p))
                .sum(),
        ];
        samples.lock().expect("cpu samples").push(parts);
        parts.iter().sum()
    };
    let interval = shared.phases.drive_async(w.warmup, w.duration, &cpu).await;
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(task.await.context("client task")??);
    }
    let samples = samples.into_inner().expect("cpu samples");
    let parts = match samples.as_slice() {
        [start, end, ..] => std::array::from_fn(|i| end[i] - start[i]),
        _ => [0.0; 3],
    };
    Ok((interval, results, parts))
}

/// A client websocket to the gateway.
pub type Ws = WebSocketStream<TcpStream>;

/// Opens one checkout websocket with the binary subprotocol and reads its
/// `hello`.
pub async fn connect(addr: SocketAddr, checkout_token: &str) -> Result<Ws> {
    let mut request = format!("ws://{addr}/ws").into_client_request()?;
    let headers = request.headers_mut();
    headers.insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(SUBPROTOCOL_BINARY),
    );
    headers.insert(
        "Authorization",
        HeaderValue::from_str(&format!("Bearer {checkout_token}"))?,
    );
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(client_config()))
            .await
            .context("websocket handshake")?;
    match ws.next().await {
        Some(Ok(Message::Binary(b))) => match postcard::from_bytes::<BinServerMsg>(&b) {
            Ok(BinServerMsg::Hello(h)) if h.role != holdfast_gateway::protocol::Role::Viewer => {
                Ok(ws)
            }
            other => bail!("expected a checkout hello, got {other:?}"),
        },
        other => bail!("expected a binary hello, got {other:?}"),
    }
}

/// A slot's request in flight.
#[derive(Clone)]
enum Slot {
    Idle,
    /// Reserve sent at `started` on drop `drop`.
    Reserving {
        started: Instant,
        drop: usize,
    },
    /// Commit of the hold sent; the pair began at `started`.
    Committing {
        started: Instant,
    },
}

fn encode(msg: &BinClientMsg) -> Message {
    Message::Binary(
        postcard::to_stdvec(msg)
            .expect("client messages always serialise")
            .into(),
    )
}

/// A one-unit reserve of `sku` for `buyer`, correlated by `slot`.
pub fn reserve_msg(slot: usize, sku: &str, buyer: &str) -> Message {
    encode(&BinClientMsg::Reserve(Reserve {
        id: slot as u64,
        sku: Some(sku.to_string()),
        qty: Some(1),
        lines: None,
        buyer: buyer.to_string(),
        // No request ids: at 100 k+ requests/s they would fill the
        // idempotency table (262 144 per 10-minute generation) in seconds,
        // and the baseline has no idempotency either.
        request_id: None,
        allow_partial: false,
        channel: None,
    }))
}

/// One client: W slots of reserve → commit until told to stop, then settles
/// what is in flight.
async fn client_loop(mut ws: Ws, shared: &Shared, buyer: &str) -> Result<ClientResult> {
    let mut result = ClientResult {
        pairs: 0,
        hist: latency_histogram(),
        commits_total: 0,
        errors: BTreeMap::new(),
    };
    let mut slots = vec![Slot::Idle; shared.window];
    let mut busy = 0usize;
    let mut stopping = false;
    let send_reserve = |slot: usize, slots: &mut [Slot]| {
        let drop = shared.drop.load(Ordering::Relaxed);
        slots[slot] = Slot::Reserving {
            started: Instant::now(),
            drop,
        };
        reserve_msg(slot, &shared.drops[drop], buyer)
    };
    for slot in 0..shared.window {
        let m = send_reserve(slot, &mut slots);
        ws.feed(m).await?;
        busy += 1;
    }
    ws.flush().await?;
    loop {
        let phase = shared.phases.get();
        stopping |= phase == Phase::Stop;
        if stopping && busy == 0 {
            let _ = ws.close(None).await;
            return Ok(result);
        }
        let first = tokio::time::timeout(REPLY_TIMEOUT, ws.next())
            .await
            .context("no reply from the gateway")?;
        let mut next = first;
        // Handle every frame already read, then write all answers with one
        // flush (one syscall for many frames, as a pipelining client does).
        loop {
            let message = match next {
                Some(m) => m?,
                None => bail!("gateway closed the connection"),
            };
            let bytes = match message {
                Message::Binary(b) => b,
                Message::Close(c) => bail!("gateway closed the connection: {c:?}"),
                _ => Bytes::new(),
            };
            if !bytes.is_empty() {
                let reply = postcard::from_bytes::<BinServerMsg>(&bytes)
                    .context("undecodable server frame")?;
                if let Some(out) = on_reply(
                    reply,
                    &mut slots,
                    &mut busy,
                    stopping,
                    phase,
                    shared,
                    buyer,
                    &mut result,
                )? {
                    ws.feed(out).await?;
                }
            }
            match ws.next().now_or_never() {
                Some(m) => next = m,
                None => break,
            }
        }
        ws.flush().await?;
    }
}

/// Applies one reply to the slots; returns the request to send next.
#[allow(clippy::too_many_arguments)]
fn on_reply(
    reply: BinServerMsg,
    slots: &mut [Slot],
    busy: &mut usize,
    stopping: bool,
    phase: Phase,
    shared: &Shared,
    buyer: &str,
    result: &mut ClientResult,
) -> Result<Option<Message>> {
    let slot_of = |id: u64| -> Result<usize> {
        let i = usize::try_from(id).unwrap_or(usize::MAX);
        if i >= slots.len() {
            bail!("reply for unknown slot {id}");
        }
        Ok(i)
    };
    let next_reserve = |i: usize, slots: &mut [Slot], busy: &mut usize| {
        if stopping {
            slots[i] = Slot::Idle;
            *busy -= 1;
            return None;
        }
        let drop = shared.drop.load(Ordering::Relaxed);
        slots[i] = Slot::Reserving {
            started: Instant::now(),
            drop,
        };
        Some(reserve_msg(i, &shared.drops[drop], buyer))
    };
    match reply {
        BinServerMsg::Reserved(r) => {
            let i = slot_of(r.id)?;
            let Slot::Reserving { started, .. } = slots[i] else {
                bail!("unexpected reserved for slot {i}");
            };
            slots[i] = Slot::Committing { started };
            Ok(Some(encode(&BinClientMsg::Commit(Commit {
                id: r.id,
                hold: r.hold,
                qty: None,
                lines: None,
                request_id: None,
            }))))
        }
        BinServerMsg::Committed(c) => {
            let i = slot_of(c.id)?;
            let Slot::Committing { started } = slots[i] else {
                bail!("unexpected committed for slot {i}");
            };
            result.commits_total += 1;
            if phase == Phase::Measure {
                result.pairs += 1;
                record(&mut result.hist, started.elapsed().as_nanos() as u64, 1);
            }
            Ok(next_reserve(i, slots, busy))
        }
        BinServerMsg::Error(e) => {
            let Some(i) = e.id.map(slot_of).transpose()? else {
                bail!("error frame without id: {} {}", e.error, e.message);
            };
            match (slots[i].clone(), e.error.as_str()) {
                (Slot::Reserving { drop, .. }, "sold_out") => {
                    if drop + 1 >= shared.drops.len() {
                        bail!("ran out of drops ({} sold out)", shared.drops.len());
                    }
                    // One client moves everyone on; the others see the new
                    // index and simply retry there.
                    let _ = shared.drop.compare_exchange(
                        drop,
                        drop + 1,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                    Ok(next_reserve(i, slots, busy))
                }
                (_, code) => {
                    let n = result.errors.entry(code.to_string()).or_default();
                    *n += 1;
                    if *n > ERRORS_MAX {
                        bail!("too many `{code}` refusals: {}", e.message);
                    }
                    // A failed commit leaves the hold to expire; either way
                    // the slot starts a fresh pair.
                    Ok(next_reserve(i, slots, busy))
                }
            }
        }
        other => bail!("unexpected server frame {other:?}"),
    }
}

/// Checks the gateway's books against what the clients saw: every
/// acknowledged commit is a sold unit, nothing is left held.
fn audit(gateway: &GatewayProcess, drops: &[String], commits: u64) -> Result<String> {
    let (status, body) = gateway.get("/api/skus")?;
    if status != 200 {
        bail!("GET /api/skus answered {status}");
    }
    let list: SkuList = serde_json::from_str(&body).context("parsing /api/skus")?;
    let (mut sold, mut held) = (0u64, 0u64);
    for s in list.skus.iter().filter(|s| drops.contains(&s.id)) {
        sold += u64::from(s.sold);
        held += u64::from(s.held);
    }
    if sold != commits || held != 0 {
        bail!(
            "audit failed: clients saw {commits} commits, gateway has {sold} sold and {held} held"
        );
    }
    Ok(format!(
        "audit: {commits} acknowledged commits = {sold} units sold, 0 held"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway_proc::default_gateway_bin;
    use std::time::Duration;

    /// A tiny run through the real gateway over each transport (the
    /// workspace's tests build `holdfast`); asserts what must happen, not
    /// how fast.
    #[test]
    fn a_tiny_row_runs_end_to_end_and_passes_its_audit() {
        let bin = default_gateway_bin();
        if !holdfast_testkit::require_tool(&bin.display().to_string(), "the gateway rows' test") {
            return;
        }
        let w = Workload {
            clients: 4,
            drop_units: 10_000,
            duration: Duration::from_millis(300),
            warmup: Duration::from_millis(50),
            engine_threads: 1,
            pipeline: 4,
            sample_every: 1,
            redis_client_threads: 1,
            redis_server: "redis-server".into(),
            gateway_bin: bin,
            gateway_window: 4,
            ws_client_threads: 1,
            perf_dir: None,
            gateway_args: Vec::new(),
        };
        for (transport, window) in [(Transport::Websocket, 4), (Transport::Http, 1)] {
            let m = GatewayWs {
                backend: Backend::Memory,
                transport,
                window,
            }
            .run(&w)
            .unwrap();
            assert!(m.pairs > 0, "{transport:?}");
            assert_eq!(m.latency.len(), m.pairs, "one latency per measured pair");
            assert!(m.note.contains("audit:"), "{}", m.note);
        }
    }

    #[test]
    fn requests_roundtrip_through_the_gateways_decoder() {
        let Message::Binary(b) = reserve_msg(3, "bench-drop-0", "bench-buyer-1") else {
            panic!("binary");
        };
        let back = holdfast_gateway::protocol::ClientMsg::from_postcard(&b).unwrap();
        let holdfast_gateway::protocol::ClientMsg::Reserve(r) = back else {
            panic!("reserve");
        };
        assert_eq!(
            (r.id, r.qty, r.sku.as_deref()),
            (3, Some(1), Some("bench-drop-0"))
        );
    }
}
