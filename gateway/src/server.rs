//! Wiring and lifecycle: builds the engine, catalog, hub, router and
//! background workers from the configuration, serves connections from the
//! given listener until `shutdown` fires, then drains.
//!
//! `run` takes the listener and the shutdown token as arguments (as
//! mini-redis does), so tests bind `127.0.0.1:0` and stop the server
//! cleanly.

use crate::auth::Tokens;
use crate::catalog::{self, Meta};
use crate::config::ServeArgs;
use crate::http::{self, AppState};
use crate::ids::Ids;
use crate::journal::keys::Keys;
use crate::journal::mirror::Mirror;
use crate::journal::writer::Writer;
use crate::journal::{Durability, Journal, recover};
use crate::ops::Ops;
use crate::ws::{WsCtx, hub::Hub};
use anyhow::Context as _;
use holdfast_engine::{CachedClock, Clock, Engine, EngineConfig, Expirer, SystemClock};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics::{counter, gauge, histogram};
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Longest the server waits for connections to finish after shutdown.
const DRAIN_MAX: Duration = Duration::from_secs(10);

/// What `/readyz` reports.
#[derive(Debug, Default)]
pub struct Readiness {
    pub recovering: AtomicBool,
    pub started_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReadyReport {
    pub ready: bool,
    pub status: &'static str,
    pub reason: String,
    pub persistence: &'static str,
    /// Events not yet in Redis (0 in memory).
    pub backlog: usize,
    /// Redis answering (absent in memory).
    pub redis_up: Option<bool>,
    pub holds_in_use: u32,
    pub holds_capacity: u32,
    pub skus: usize,
}

impl Readiness {
    pub fn report(&self, ops: &Ops) -> ReadyReport {
        let mut reason = String::new();
        if self.recovering.load(Ordering::Acquire) {
            reason = "recovering state from Redis".into();
        } else if let Err(e) = ops.durability.admit() {
            reason = e.message.to_string();
        }
        let ready = reason.is_empty();
        ReadyReport {
            ready,
            status: if ready { "ready" } else { "not_ready" },
            reason,
            persistence: ops.durability.mode(),
            backlog: match &ops.durability {
                Durability::Redis(j) => j.backlog(&ops.engine),
                Durability::Memory => 0,
            },
            redis_up: match &ops.durability {
                Durability::Redis(j) => Some(j.is_up()),
                Durability::Memory => None,
            },
            holds_in_use: ops.engine.holds_in_use(),
            holds_capacity: ops.engine.holds_capacity(),
            skus: ops.engine.sku_count(),
        }
    }

    pub fn refresh_gauges(&self, ops: &Ops) {
        gauge!("holdfast_holds_in_use").set(f64::from(ops.engine.holds_in_use()));
        if let Durability::Redis(j) = &ops.durability {
            gauge!("holdfast_journal_backlog").set(j.backlog(&ops.engine) as f64);
        }
        if let Some(log) = ops.engine.events() {
            gauge!("holdfast_event_queue").set(log.len() as f64);
        }
    }
}

/// Raises the open-file soft limit to the hard limit (each websocket is a
/// file descriptor). Returns the limit now in force.
pub fn raise_nofile_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass,
    // which lives on our stack for the duration of the calls.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return raised.rlim_cur;
            }
        }
        lim.rlim_cur
    }
}

/// Builds everything and serves until `shutdown` is cancelled.
pub async fn run(
    listener: TcpListener,
    args: ServeArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    args.validate().map_err(|e| anyhow::anyhow!(e))?;
    let nofile = raise_nofile_limit();
    let metrics = crate::metrics::install();
    let limits = args.limits.clone();
    let mut config = EngineConfig {
        node_id: args.node_id,
        incarnation: (Ids::random_key().0 % 4096) as u16,
        skus_max: limits.skus_max,
        holds_max: limits.holds_max,
        buyer_entries_max: limits.buyers_max,
        request_entries_max: limits.requests_max,
        request_window_ms: limits.request_window_ms,
        events_max: 0,
        ..EngineConfig::default()
    };
    let meta = Arc::new(Meta::default());
    // The engine reads the time on every reservation; a cached clock makes
    // that one atomic load. A dedicated thread refreshes it every
    // millisecond (deadlines are in 10 ms ticks).
    let clock = Arc::new(CachedClock::new(SystemClock));
    let clock_thread = spawn_clock(clock.clone(), shutdown.clone());
    let tracker = TaskTracker::new();
    let (engine, expirer, ids, durability, persistence_line) = match &args.redis {
        None => {
            let (engine, expirer) = Engine::new(config, clock).map_err(|e| anyhow::anyhow!(e))?;
            let ids = Arc::new(Ids::new(Ids::random_key(), limits.buyers_max as usize));
            let line = "memory (nothing survives a restart; give --redis to persist)".to_string();
            (engine, expirer, ids, Durability::Memory, line)
        }
        Some(url) => {
            config.events_max = args.journal.events_max;
            config.events_headroom = config.events_headroom.min(args.journal.events_max / 4);
            let opened = open_journal(
                url,
                &args,
                config,
                clock.clone(),
                meta.clone(),
                &tracker,
                &shutdown,
            )
            .await?;
            let line = format!("redis {} ({})", redact(url), args.persistence.as_str());
            (opened.0, opened.1, opened.2, opened.3, line)
        }
    };
    let ops = Arc::new(Ops {
        engine: engine.clone(),
        meta: meta.clone(),
        ids,
        durability,
    });

    let mut defs = Vec::new();
    if args.demo {
        defs.extend(catalog::demo());
    }
    if let Some(path) = &args.catalog {
        defs.extend(catalog::load_file(path)?);
    }
    for def in &defs {
        if engine.sku(&def.id).is_none() {
            ops.create_sku(def)
                .await
                .with_context(|| format!("catalog sku {:?}", def.id))?;
        }
    }

    let hub = Arc::new(Hub::new(engine.clone(), meta.clone()));
    let tokens = Tokens::new(&args.admin_token, &args.checkout_token);
    let ready = Arc::new(Readiness {
        started_ms: engine.now_ms(),
        ..Readiness::default()
    });
    let ws_slots = Arc::new(Semaphore::new(limits.ws_connections_max));
    let ws_ctx = Arc::new(WsCtx {
        ops: ops.clone(),
        hub: hub.clone(),
        tokens: tokens.clone(),
        limits: limits.clone(),
        broadcast_interval_ms: args.broadcast_interval_ms,
        connections: ws_slots.clone(),
        shutdown: shutdown.clone(),
    });
    let state = AppState {
        ops: ops.clone(),
        tokens,
        metrics,
        ready,
    };
    let router = http::router(state, ws_ctx, limits.body_bytes_max);

    let expirer_thread = spawn_expirer(
        expirer,
        Duration::from_millis(args.expiry_interval_ms),
        shutdown.clone(),
    );
    tracker.spawn(broadcaster(
        hub,
        Duration::from_millis(args.broadcast_interval_ms),
        shutdown.clone(),
    ));

    let addr = listener.local_addr()?;
    if args.admin_token == "demo-admin" || args.checkout_token == "demo-checkout" {
        tracing::warn!(
            "using the demo tokens: set HOLDFAST_ADMIN_TOKEN and HOLDFAST_CHECKOUT_TOKEN in production"
        );
    }
    tracing::info!(
        %addr,
        persistence = %persistence_line,
        skus = engine.sku_count(),
        holds_max = limits.holds_max,
        ws_connections_max = limits.ws_connections_max,
        http_connections_max = limits.http_connections_max,
        frame_bytes_max = limits.frame_bytes_max,
        messages_per_sec_max = limits.messages_per_sec_max,
        broadcast_interval_ms = args.broadcast_interval_ms,
        open_files_max = nofile,
        workers = tokio::runtime::Handle::current().metrics().num_workers(),
        "holdfast serving HTTP API, websockets, pages and /metrics on http://{addr}"
    );

    accept_loop(listener, router, &limits, &tracker, &shutdown).await;

    tracing::info!("shutting down: no new connections; closing websockets and draining");
    tracker.close();
    // Websocket sessions run in tasks of their own (spawned on upgrade);
    // each holds a slot, so all slots back means all have closed.
    let drained = async {
        tracker.wait().await;
        let _ = ws_slots
            .acquire_many(limits.ws_connections_max as u32)
            .await;
    };
    if tokio::time::timeout(DRAIN_MAX, drained).await.is_err() {
        tracing::warn!("some connections did not finish within {DRAIN_MAX:?}");
    }
    let _ = expirer_thread.join();
    let _ = clock_thread.join();
    tracing::info!("stopped");
    Ok(())
}

/// Sets SO_SNDBUF on an accepted socket (best effort).
fn set_send_buffer(stream: &tokio::net::TcpStream, bytes: usize) {
    use std::os::fd::AsRawFd;
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: the fd is open for the lifetime of `stream`, which we borrow;
    // setsockopt reads `size_of::<c_int>()` bytes from `&value`, which lives
    // on our stack for the call.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&raw const value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Removes the password from a Redis URL for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

type Opened = (Arc<Engine>, Expirer, Arc<Ids>, Durability);

/// Connects to Redis, rebuilds the engine from it (or starts fresh), and
/// starts the journal writer.
async fn open_journal(
    url: &str,
    args: &ServeArgs,
    config: EngineConfig,
    clock: Arc<dyn Clock>,
    meta: Arc<Meta>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> anyhow::Result<Opened> {
    if url.starts_with("rediss://") {
        // rustls needs a process-wide crypto provider; ignore "already set".
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    // TCP_NODELAY (redis-rs leaves Nagle on): a batch is a pipeline of many
    // segments, and Nagle would hold its last, short one until Redis
    // acknowledged the rest, a delayed-ACK wait on every batch.
    let info = redis::IntoConnectionInfo::into_connection_info(url)
        .with_context(|| format!("bad Redis URL {}", redact(url)))?;
    let info = info.set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
    let client = match &args.redis_ca_file {
        Some(path) => {
            anyhow::ensure!(
                url.starts_with("rediss://"),
                "--redis-ca-file is for a TLS Redis (a rediss:// URL)"
            );
            let pem = std::fs::read(path)
                .with_context(|| format!("cannot read --redis-ca-file {}", path.display()))?;
            redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                },
            )
        }
        None => redis::Client::open(info),
    }
    .with_context(|| format!("bad Redis URL {}", redact(url)))?;
    let timeout = Duration::from_millis(args.journal.redis_timeout_ms);
    let conn_config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    let mut con = client
        .get_multiplexed_async_connection_with_config(&conn_config)
        .await
        .with_context(|| format!("cannot connect to Redis at {}", redact(url)))?;
    let keys = Keys::new(&args.redis_prefix);
    let loaded = recover::load(&mut con, &keys, args.node_id, Ids::random_key()).await?;
    let config = EngineConfig {
        incarnation: loaded.incarnation,
        ..config
    };
    let (engine, expirer) = if loaded.fresh {
        Engine::new(config, clock).map_err(|e| anyhow::anyhow!(e))?
    } else {
        Engine::restore(config, clock, &loaded.state).map_err(|e| {
            anyhow::anyhow!("refusing to start: the state in Redis is inconsistent\n{e}")
        })?
    };
    let ids = Arc::new(Ids::new(loaded.key, args.limits.buyers_max as usize));
    for (buyer, name) in &loaded.names {
        ids.remember_buyer(*buyer, name);
    }
    for (id, m) in &loaded.metas {
        if let Some(sku) = engine.sku(id) {
            meta.set(sku, m.clone());
        }
    }
    let mut mirror = Mirror::from_saved(
        &loaded.state,
        &engine,
        loaded.names.iter().map(|(b, _)| *b),
        &keys,
    );
    mirror.add_requests(loaded.requests.iter().copied());
    if !loaded.fresh {
        tracing::info!(
            skus = loaded.state.skus.len(),
            live_holds = loaded.state.holds.len(),
            seq = loaded.state.last_seq,
            incarnation = loaded.incarnation,
            "recovered state from Redis (holds past their deadline expire on the first expirer run)"
        );
    }
    let journal = Arc::new(Journal::new(
        args.persistence,
        engine.clone(),
        mirror.seq,
        args.journal.backlog_max,
        timeout,
    ));
    let writer = Writer {
        journal: journal.clone(),
        engine: engine.clone(),
        meta,
        ids: ids.clone(),
        client,
        keys,
        header: Writer::header(loaded.key, loaded.incarnation, args.node_id),
        mirror,
        batch_size_max: args
            .journal
            .batch_size_max
            .max(crate::journal::BATCH_SIZE_MIN),
        batch_delay_max: Duration::from_micros(args.journal.batch_delay_max_us),
        timeout,
        orders_maxlen: args.journal.orders_maxlen,
        request_window_ms: args.limits.request_window_ms,
    };
    // The journal gets a thread and a runtime of its own: on the shared
    // runtime its wake-ups (a batch's reply from Redis) queued behind
    // thousands of session tasks, and every durable request waits on it.
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let stop = shutdown.clone();
    std::thread::Builder::new()
        .name("holdfast-journal".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime.block_on(writer.run(stop)),
                Err(e) => tracing::error!(error = %e, "cannot start the journal's runtime"),
            }
            let _ = done_tx.send(());
        })
        .context("spawn the journal thread")?;
    // Shutdown waits for the journal's final flush like for any task.
    tracker.spawn(async move {
        let _ = done_rx.await;
    });
    Ok((engine, expirer, ids, Durability::Redis(journal)))
}

fn spawn_clock(
    clock: Arc<CachedClock<SystemClock>>,
    shutdown: CancellationToken,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("holdfast-clock".into())
        .spawn(move || {
            while !shutdown.is_cancelled() {
                clock.refresh();
                std::thread::sleep(Duration::from_millis(1));
            }
        })
        .expect("spawn the clock thread")
}

fn spawn_expirer(
    mut expirer: Expirer,
    every: Duration,
    shutdown: CancellationToken,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("holdfast-expirer".into())
        .spawn(move || {
            // A dedicated thread: the engine is synchronous, and expiry must
            // not wait behind network work on the runtime's threads.
            while !shutdown.is_cancelled() {
                let report = expirer.run();
                if report.expired_holds > 0 {
                    counter!("holdfast_expired_holds_total")
                        .increment(u64::from(report.expired_holds));
                }
                std::thread::sleep(every);
            }
        })
        .expect("spawn the expirer thread")
}

async fn broadcaster(hub: Arc<Hub>, every: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {
                let started = Instant::now();
                hub.broadcast();
                histogram!("holdfast_broadcast_seconds").record(started.elapsed().as_secs_f64());
            }
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    router: axum::Router,
    limits: &crate::config::Limits,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) {
    let http_slots = Arc::new(Semaphore::new(limits.http_connections_max));
    let mut backoff = Duration::from_millis(5);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.handshake_timeout())
        .max_buf_size(16 * 1024);
    loop {
        // Take a connection slot before accepting, so a flood waits in the
        // kernel's backlog instead of in our memory.
        let permit = tokio::select! {
            () = shutdown.cancelled() => return,
            p = http_slots.clone().acquire_owned() => p.expect("semaphore never closed"),
        };
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => {
                    backoff = Duration::from_millis(5);
                    x
                }
                Err(e) => {
                    // Out of file descriptors or similar: back off (capped)
                    // rather than spin.
                    tracing::warn!(error = %e, ?backoff, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        if limits.socket_send_buffer_bytes > 0 {
            set_send_buffer(&stream, limits.socket_send_buffer_bytes);
        }
        let service = hyper_util::service::TowerToHyperService::new(
            router
                .clone()
                .layer(axum::Extension(axum::extract::ConnectInfo(peer))),
        );
        let conn = http
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let _permit = permit; // released when the HTTP connection ends (or upgrades)
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "http connection ended with an error");
                    }
                }
                () = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
}
