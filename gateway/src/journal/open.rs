//! Opening the journal: connect to Redis (TLS with a private CA if asked),
//! rebuild the engine from what Redis holds, and start the writer on a
//! thread and runtime of its own.

use super::conn::Target;
use super::keys::Keys;
use super::mirror::Mirror;
use super::writer::Writer;
use super::{Durability, Journal, recover};
use crate::catalog::Meta;
use crate::config::ServeArgs;
use crate::ids::Ids;
use anyhow::Context as _;
use holdfast_engine::{Clock, Engine, EngineConfig, Expirer};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Removes the password from a Redis URL for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

/// What the journal keeps in Redis besides the engine's state.
pub struct Beside {
    pub meta: Arc<Meta>,
    pub stats: Arc<crate::stats::Stats>,
}

/// The engine rebuilt from Redis and the running journal.
pub struct Opened {
    pub engine: Arc<Engine>,
    pub expirer: Expirer,
    pub ids: Arc<Ids>,
    pub durability: Durability,
}

/// The client of a single Redis (`--redis`): TLS with a private CA when
/// asked, `TCP_NODELAY` always.
pub fn single_target(url: &str, ca_file: Option<&std::path::Path>) -> anyhow::Result<Target> {
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
    let client = match ca_file {
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
    Ok(Target::Single(client))
}

/// The pseudonym key of a store whose operator gave no `--buyer-id-key`:
/// the one in the journal record, or a fresh one written there (`HSETNX`:
/// two processes starting on one store at once agree on one), so
/// pseudonyms written before a restart match those written after it.
/// Written before the journal writer starts, so no pseudonym made with it
/// reaches Redis before the key does. In cluster mode each node's record
/// keeps its own (docs/PRIVACY.md: set `--buyer-id-key` there).
async fn generated_key(
    con: &mut super::conn::Conn,
    keys: &Keys,
) -> anyhow::Result<crate::privacy::BuyerIdKey> {
    use crate::privacy::{BuyerIdKey, GENERATED_KEY_FIELD};
    use redis::AsyncCommands as _;
    let fresh = BuyerIdKey::random();
    let _: bool = con
        .hset_nx(keys.journal(), GENERATED_KEY_FIELD, fresh.to_hex())
        .await
        .context("storing the generated buyer id key")?;
    let stored: Option<String> = con
        .hget(keys.journal(), GENERATED_KEY_FIELD)
        .await
        .context("reading the generated buyer id key")?;
    let stored = stored.context("the journal record lost its buyer_id_key")?;
    // The parse error never echoes the key.
    BuyerIdKey::parse(&stored)
        .map_err(|e| anyhow::anyhow!("journal record: {GENERATED_KEY_FIELD} is malformed: {e}"))
}

/// Where and how the journal writes.
pub struct Place {
    pub target: Target,
    pub keys: Keys,
    /// For errors: the Redis URL (without password) or the cluster.
    pub describe: String,
    /// Cluster mode: the node's ownership epoch, checked by every batch,
    /// and how many replicas must have each batch before it counts.
    pub cluster: Option<super::ClusterWrites>,
}

/// Connects, rebuilds the engine from what Redis holds (or starts fresh),
/// and starts the journal writer on a thread of its own.
#[allow(clippy::too_many_arguments)]
pub async fn open(
    place: Place,
    args: &ServeArgs,
    config: EngineConfig,
    clock: Arc<dyn Clock>,
    beside: Beside,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> anyhow::Result<Opened> {
    let Place {
        target,
        keys,
        describe,
        cluster,
    } = place;
    let timeout = Duration::from_millis(args.journal.redis_timeout_ms);
    let mut con = target
        .connect(timeout)
        .await
        .with_context(|| format!("cannot connect to Redis at {describe}"))?;
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
    let generated = match args.privacy.needs_generated_key() {
        true => Some(generated_key(&mut con, &keys).await?),
        false => None,
    };
    let names = match &generated {
        Some(key) => crate::privacy::BuyerNames::pseudonyms(key),
        None => args.privacy.buyer_names(),
    };
    let ids = Arc::new(Ids::new(loaded.key, args.limits.buyers_max as usize, names));
    for (buyer, name) in &loaded.names {
        ids.remember_buyer(*buyer, name);
    }
    for (id, m) in &loaded.metas {
        if let Some(sku) = engine.sku(id) {
            beside.meta.set(sku, m.clone());
        }
    }
    // Show statistics: the persisted counters, and the live holds'
    // deadlines for "expiring soon".
    for saved in &loaded.stats {
        if let Some(sku) = engine.sku(&saved.sku) {
            beside.stats.restore(sku, saved);
        }
    }
    let now_ms = engine.now_ms();
    for hold in &loaded.state.holds {
        for line in &hold.lines {
            if let Some(sku) = engine.sku(&line.sku) {
                beside
                    .stats
                    .restore_hold(sku, line.qty, hold.deadline_ms, now_ms);
            }
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
        super::ended::EndedLookup::new(
            target.clone(),
            keys.clone(),
            args.limits.ended_hold_retention_ms,
            timeout,
        ),
    ));
    // A full re-write deletes the journal record and writes it back from
    // this header: the generated pseudonym key goes with it.
    let mut header = Writer::header(loaded.key, loaded.incarnation, args.node_id);
    if let Some(key) = &generated {
        header.push((crate::privacy::GENERATED_KEY_FIELD, key.to_hex()));
    }
    let writer = Writer {
        journal: journal.clone(),
        engine: engine.clone(),
        meta: beside.meta,
        stats: beside.stats,
        ids: ids.clone(),
        target,
        keys,
        cluster,
        header,
        mirror,
        batch_size_max: args
            .journal
            .batch_size_max
            .max(crate::journal::BATCH_SIZE_MIN),
        batch_delay_max: Duration::from_micros(args.journal.batch_delay_max_us),
        timeout,
        orders_maxlen: args.journal.orders_maxlen,
        orders_max_age_ms: args.privacy.orders_max_age_ms,
        buyer_retention_ms: args.privacy.buyer_record_retention_ms,
        request_window_ms: args.limits.request_window_ms,
        ended_retention_ms: args.limits.ended_hold_retention_ms,
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
    Ok(Opened {
        engine,
        expirer,
        ids,
        durability: Durability::Redis(journal),
    })
}
