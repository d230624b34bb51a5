//! Wiring and lifecycle: builds the engine, catalog, hub, router and
//! background workers from the configuration, serves connections from the
//! given listener until `shutdown` fires, then drains.
//!
//! `run` takes the listener and the shutdown token as arguments (as
//! mini-redis does), so tests bind `127.0.0.1:0` and stop the server
//! cleanly.

use crate::accept::accept_loop;
use crate::auth::Tokens;
use crate::catalog::{self, Meta};
use crate::cluster::Cluster;
use crate::config::{Limits, ServeArgs};
use crate::http::health::Health;
use crate::http::{self, AppState};
use crate::ids::Ids;
use crate::journal::conn::Target;
use crate::journal::open::Beside;
use crate::journal::{self, ClusterWrites, Durability, Fenced};
use crate::ops::Ops;
use crate::stats::Stats;
use crate::ws::{WsCtx, hub::Hub};
use anyhow::Context as _;
use holdfast_engine::limits::INCARNATIONS;
use holdfast_engine::{CachedClock, Engine, EngineConfig, Expirer, SystemClock};
use metrics::{counter, histogram};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Longest the server waits for connections to finish after shutdown.
const DRAIN_MAX: Duration = Duration::from_secs(10);
/// Connections the `--metrics-listen` port serves at once: scrapers and
/// probes, a handful.
const METRICS_CONNECTIONS_MAX: usize = 64;
/// Interval of the clock thread: deadlines are in 10 ms ticks, so a 1 ms
/// stale clock is well inside one.
const CLOCK_REFRESH: Duration = Duration::from_millis(1);

/// The engine and how its changes are persisted.
struct Core {
    engine: Arc<Engine>,
    expirer: Expirer,
    ids: Arc<Ids>,
    durability: Durability,
    /// For the start-up line.
    persistence: String,
    /// Multi-node mode: the node and its push messages.
    cluster: Option<(Arc<Cluster>, UnboundedReceiver<redis::PushInfo>)>,
    /// With webhooks and Redis: their streams, where the journal writes
    /// (in a cluster, the node's slot).
    webhook_streams: Option<Arc<crate::webhooks::stream::Streams>>,
}

/// The webhooks' Redis streams beside a journal at `target` whose keys
/// start with `prefix`, when webhooks are on.
fn webhook_streams(
    args: &ServeArgs,
    target: &Target,
    prefix: &str,
) -> Option<Arc<crate::webhooks::stream::Streams>> {
    args.webhooks.is_on().then(|| {
        Arc::new(crate::webhooks::stream::Streams::new(
            target.clone(),
            Duration::from_millis(args.journal.redis_timeout_ms),
            prefix,
            journal::keys::Keys::new(prefix).orders(),
        ))
    })
}

/// Builds everything and serves until `shutdown` is cancelled.
pub async fn run(
    listener: TcpListener,
    args: ServeArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    args.validate().map_err(|e| anyhow::anyhow!(e))?;
    let (admin_token, checkout_token) = args.tokens().map_err(|e| anyhow::anyhow!(e))?;
    let buyers = args.buyer_tokens.build().map_err(|e| anyhow::anyhow!(e))?;
    let tokens = Tokens::new(admin_token, checkout_token).with_buyers(buyers);
    let cors = http::cors::layer(&args.cors_origins).map_err(|e| anyhow::anyhow!(e))?;
    let metrics_listener = match args.metrics_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on --metrics-listen {addr}"))?,
        ),
        None => None,
    };
    // The limit in force: raised to the hard limit, or left as it was (the
    // start-up line shows it either way).
    let nofile = match holdfast_sys::raise_nofile() {
        Ok(raise) => raise.now,
        Err(e) => {
            tracing::warn!("could not raise the open-file limit: {e}");
            holdfast_sys::nofile_limit().map_or(0, |l| l.soft)
        }
    };
    let metrics = crate::metrics::install();
    let limits = args.limits.clone();
    let images =
        catalog::ImageOrigins::parse(&args.image_origins).map_err(|e| anyhow::anyhow!(e))?;
    let meta = Arc::new(Meta::new(images));
    let stats = Arc::new(Stats::new(limits.skus_max));
    let tracker = TaskTracker::new();
    // The engine reads the time on every reservation; a cached clock makes
    // that one atomic load, refreshed by a thread of its own.
    let clock = Arc::new(CachedClock::new(SystemClock));
    let clock_thread = spawn_clock(clock.clone(), shutdown.clone());
    let beside = Beside {
        meta: meta.clone(),
        stats: stats.clone(),
    };
    let core = build_core(&args, clock, beside, &tracker, &shutdown).await?;
    let engine = core.engine.clone();
    let (cluster, push) = match core.cluster {
        Some((c, p)) => (Some(c), Some(p)),
        None => (None, None),
    };
    let ops = Arc::new(Ops {
        engine: engine.clone(),
        meta: meta.clone(),
        ids: core.ids,
        durability: core.durability,
        cluster: cluster.clone(),
        stats: stats.clone(),
    });
    if let (Some(c), Some(push)) = (&cluster, push) {
        start_cluster(c, &ops, push, &tracker, &shutdown);
    }
    load_catalog(&ops, &args).await?;

    let webhooks = if args.webhooks.is_on() {
        Some(
            crate::webhooks::Webhooks::start(
                &args.webhooks,
                ops.clone(),
                core.webhook_streams.clone(),
                tokens.buyers.clone(),
                &tracker,
                &shutdown,
            )
            .map_err(|e| anyhow::anyhow!(e))?,
        )
    } else {
        None
    };
    // In memory, the engine's events feed the webhooks (with Redis, the
    // order stream does).
    let webhook_thread = webhooks
        .as_ref()
        .filter(|_| core.webhook_streams.is_none())
        .map(|w| crate::webhooks::source::spawn_engine_source(w.clone(), shutdown.clone()));
    let hub = Arc::new(Hub::new(engine.clone(), meta.clone(), stats));
    if let Some(w) = &webhooks {
        let w = w.clone();
        hub.set_observer(crate::ws::hub::RoundObserver(Box::new(move |changed| {
            w.on_round(changed);
        })));
    }
    if let Some(c) = &cluster {
        hub.set_cluster(c.clone());
    }
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
    let health = Health {
        ops: ops.clone(),
        metrics,
    };
    let state = AppState {
        ops: ops.clone(),
        tokens,
        health: health.clone(),
        webhooks,
        buy: Arc::new(http::buy::Checkout::from_args(&args.buy).map_err(|e| anyhow::anyhow!(e))?),
    };
    let router = http::router(
        state,
        ws_ctx,
        &http::RouterOptions {
            body_bytes_max: limits.body_bytes_max,
            header_bytes_max: limits.header_bytes_max,
            metrics_on_main: metrics_listener.is_none(),
            cors,
        },
    );

    let expirer_thread = spawn_expirer(
        core.expirer,
        Duration::from_millis(args.expiry_interval_ms),
        shutdown.clone(),
    );
    tracker.spawn(broadcaster(
        hub,
        Duration::from_millis(args.broadcast_interval_ms),
        shutdown.clone(),
    ));
    if let Some(listener) = metrics_listener {
        let limits = Limits {
            http_connections_max: METRICS_CONNECTIONS_MAX,
            ..limits.clone()
        };
        let (tracker2, shutdown2) = (tracker.clone(), shutdown.clone());
        let routes = http::health::routes(health);
        tracker.spawn(async move {
            accept_loop(listener, routes, &limits, &tracker2, &shutdown2).await;
        });
    }
    log_start(&listener, &args, &engine, &core.persistence, nofile);

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
    if let Some(t) = webhook_thread {
        let _ = t.join();
    }
    if let Some(reason) = cluster.as_ref().and_then(|c| c.fenced.reason()) {
        anyhow::bail!("stopped: {reason}");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Starts a cluster node's background work: ownership renewal, lease
/// upkeep, the pub/sub loop, counts publishing, the watch for silent
/// nodes; and a fenced node shuts the server down.
fn start_cluster(
    cluster: &Arc<Cluster>,
    ops: &Arc<Ops>,
    push: UnboundedReceiver<redis::PushInfo>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) {
    cluster.set_ops(ops);
    let c = || cluster.clone();
    tracker.spawn(crate::cluster::owner::heartbeat(c(), shutdown.clone()));
    tracker.spawn(crate::cluster::lease::manager(c(), shutdown.clone()));
    tracker.spawn(crate::cluster::bus::run(c(), push, shutdown.clone()));
    tracker.spawn(crate::cluster::bus::publish(c(), shutdown.clone()));
    tracker.spawn(crate::cluster::bus::keep_subscribed(c(), shutdown.clone()));
    tracker.spawn(crate::cluster::bus::heal(c(), shutdown.clone()));
    tracker.spawn(crate::cluster::adopt::watcher(c(), shutdown.clone()));
    let (fenced, stop) = (cluster.fenced.clone(), shutdown.clone());
    tracker.spawn(async move {
        tokio::select! {
            () = fenced.token.cancelled() => stop.cancel(),
            () = stop.cancelled() => {}
        }
    });
}

/// The engine, in memory or rebuilt from Redis with its journal running.
async fn build_core(
    args: &ServeArgs,
    clock: Arc<CachedClock<SystemClock>>,
    beside: Beside,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> anyhow::Result<Core> {
    let limits = &args.limits;
    let mut config = EngineConfig {
        node_id: args.node_id,
        incarnation: (Ids::random_key().0 % u64::from(INCARNATIONS)) as u16,
        skus_max: limits.skus_max,
        holds_max: limits.holds_max,
        buyer_entries_max: limits.buyers_max,
        request_entries_max: limits.requests_max,
        request_window_ms: limits.request_window_ms,
        events_max: 0,
        ..EngineConfig::default()
    };
    if !args.redis_cluster.is_empty() {
        return build_cluster_core(args, config, clock, beside, tracker, shutdown).await;
    }
    let Some(url) = &args.redis else {
        // Webhooks read the engine's events in memory mode (with Redis the
        // journal does, and webhooks read the order stream instead).
        if args.webhooks.is_on() {
            config.events_max = args.journal.events_max;
            config.events_headroom = config.events_headroom.min(args.journal.events_max / 4);
        }
        let (engine, expirer) = Engine::new(config, clock).map_err(|e| anyhow::anyhow!(e))?;
        return Ok(Core {
            engine,
            expirer,
            ids: Arc::new(Ids::new(
                Ids::random_key(),
                limits.buyers_max as usize,
                args.privacy.buyer_names(),
            )),
            durability: Durability::Memory,
            persistence: "memory (nothing survives a restart; give --redis to persist)".into(),
            cluster: None,
            webhook_streams: None,
        });
    };
    config.events_max = args.journal.events_max;
    // Durable mode undoes a reservation whose write times out; its answer
    // stays provisional until then, so a replay cannot be acknowledged for
    // a reservation that is then undone (see `ops::Ops::finish`).
    config.provisional_reservations = args.persistence == crate::config::Persistence::Durable;
    config.events_headroom = config.events_headroom.min(args.journal.events_max / 4);
    let target = journal::open::single_target(url, args.redis_ca_file.as_deref())?;
    let webhook_streams = webhook_streams(args, &target, &args.redis_prefix);
    let place = journal::open::Place {
        target,
        keys: journal::keys::Keys::new(&args.redis_prefix),
        describe: journal::open::redact(url),
        cluster: None,
    };
    let opened = journal::open::open(place, args, config, clock, beside, tracker, shutdown).await?;
    Ok(Core {
        engine: opened.engine,
        expirer: opened.expirer,
        ids: opened.ids,
        durability: opened.durability,
        persistence: format!(
            "redis {} ({})",
            journal::open::redact(url),
            args.persistence.as_str()
        ),
        cluster: None,
        webhook_streams,
    })
}

/// A node of a multi-node deployment: joins the cluster (taking this
/// node's ownership), rebuilds the engine from the node's slot, loads the
/// catalog, reconciles the leases, subscribes.
async fn build_cluster_core(
    args: &ServeArgs,
    mut config: EngineConfig,
    clock: Arc<CachedClock<SystemClock>>,
    beside: Beside,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> anyhow::Result<Core> {
    let joined = crate::cluster::join(args).await?;
    let node = joined.node;
    config.events_max = args.journal.events_max;
    config.events_headroom = config.events_headroom.min(args.journal.events_max / 4);
    config.provisional_reservations = args.persistence == crate::config::Persistence::Durable;
    // A node short of units leases more and retries: its shortage is not
    // the request's final answer.
    config.stock_refusals_final = false;
    let fenced = Arc::new(Fenced::default());
    let target = Target::Cluster {
        client: Box::new(joined.journal_client.clone()),
        slot_key: joined.keys.owner(node),
    };
    // The node's prefix: the webhook streams share the node's slot.
    let webhook_streams = webhook_streams(args, &target, &joined.keys.node_prefix(node));
    let place = journal::open::Place {
        target,
        keys: joined.keys.node_journal(node),
        describe: format!("the Redis Cluster (node {node}'s slot)"),
        cluster: Some(ClusterWrites {
            epoch: joined.epoch,
            replica_acks: joined.replicas.clone(),
            fenced: fenced.clone(),
        }),
    };
    let meta = beside.meta.clone();
    let opened = journal::open::open(place, args, config, clock, beside, tracker, shutdown).await?;
    let cluster = Cluster::new(&joined, opened.engine.clone(), meta, args, fenced);
    let skus = cluster.sync_catalog().await?;
    cluster.reconcile(&skus).await?;
    crate::cluster::bus::subscribe_all(&cluster, &skus).await?;
    let persistence = format!(
        "redis cluster, node {node} (epoch {}, {}, {} replica ack(s))",
        joined.epoch,
        args.persistence.as_str(),
        args.cluster.replica_acks
    );
    Ok(Core {
        engine: opened.engine,
        expirer: opened.expirer,
        ids: opened.ids,
        durability: opened.durability,
        persistence,
        cluster: Some((cluster, joined.push)),
        webhook_streams,
    })
}

/// Creates the demo show and the catalog file's SKUs that do not exist yet
/// (recovered ones keep their state).
async fn load_catalog(ops: &Ops, args: &ServeArgs) -> anyhow::Result<()> {
    let mut defs = Vec::new();
    if args.demo {
        defs.extend(catalog::demo());
    }
    if let Some(path) = &args.catalog {
        defs.extend(catalog::load_file(path)?);
    }
    for def in &defs {
        if ops.engine.sku(&def.id).is_none() {
            match ops.create_sku(def).await {
                Ok(_) => {}
                // Created meanwhile by another node of a multi-node
                // deployment starting at the same time: already there.
                Err(e) if e.code == crate::protocol::Code::AlreadyExists => {}
                Err(e) => {
                    return Err(anyhow::Error::new(e))
                        .with_context(|| format!("catalog sku {:?}", def.id));
                }
            }
        }
    }
    Ok(())
}

/// One line that says what runs where.
fn log_start(
    listener: &TcpListener,
    args: &ServeArgs,
    engine: &Engine,
    persistence: &str,
    nofile: u64,
) {
    let addr = listener
        .local_addr()
        .map_or_else(|_| args.listen.to_string(), |a| a.to_string());
    if args.demo && (args.admin_token.is_none() || args.checkout_token.is_none()) {
        tracing::warn!(
            "--demo: using the well-known demo tokens; set HOLDFAST_ADMIN_TOKEN and HOLDFAST_CHECKOUT_TOKEN in production"
        );
    }
    let limits = &args.limits;
    tracing::info!(
        %addr,
        persistence = %persistence,
        metrics = %args.metrics_listen.map_or_else(|| format!("http://{addr}/metrics"), |m| format!("http://{m}/metrics")),
        skus = engine.sku_count(),
        holds_max = limits.holds_max,
        ws_connections_max = limits.ws_connections_max,
        http_connections_max = limits.http_connections_max,
        http_connections_per_source_max = limits.http_connections_per_source_max,
        frame_bytes_max = limits.frame_bytes_max,
        messages_per_sec_max = limits.messages_per_sec_max,
        checkout_messages_per_sec_max = limits.checkout_messages_per_sec_max,
        broadcast_interval_ms = args.broadcast_interval_ms,
        cors_origins = args.cors_origins.len(),
        buyer_ids = args.privacy.describe(),
        open_files_max = nofile,
        workers = tokio::runtime::Handle::current().metrics().num_workers(),
        "holdfast serving HTTP API, websockets and pages on http://{addr}"
    );
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
                std::thread::sleep(CLOCK_REFRESH);
            }
        })
        .expect("spawn the clock thread")
}

/// One run of the expirer; true if it stopped at its batch bound with more
/// holds due (after a pause), so the caller runs it again at once instead
/// of sleeping: a bounded batch at a time, without falling behind.
fn expire_once(expirer: &mut Expirer) -> bool {
    let report = expirer.run();
    if report.expired_holds > 0 {
        counter!("holdfast_expired_holds_total").increment(u64::from(report.expired_holds));
    }
    report.batch_full
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
                if !expire_once(&mut expirer) {
                    std::thread::sleep(every);
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_engine::limits::EXPIRY_BATCH_MAX;
    use holdfast_engine::{BuyerId, ManualClock, SaleWindow, SkuSettings, SkuSpec};

    #[test]
    fn the_expirer_runs_again_at_once_while_a_batch_was_full() {
        let clock = Arc::new(ManualClock::new(1_000));
        let (engine, mut expirer) =
            Engine::new(EngineConfig::default(), clock.clone()).expect("valid config");
        let total = EXPIRY_BATCH_MAX + 1;
        let spec = SkuSpec {
            total,
            settings: SkuSettings::default(),
            window: SaleWindow::Open,
        };
        let tee = engine.create_sku("tee", spec).expect("sku");
        for buyer in 0..u64::from(total) {
            engine.reserve(tee, 1, BuyerId(buyer), None, false).unwrap();
        }
        clock.advance(24 * 3_600_000);
        assert!(expire_once(&mut expirer), "a full batch: again at once");
        assert!(!expire_once(&mut expirer), "caught up: sleep");
        assert_eq!(engine.snapshot(tee).unwrap().counts.available, total);
    }
}
