//! Several holdfast nodes over one Redis Cluster (`--redis-cluster`): the
//! only shared state is in Redis; there is no node-to-node protocol of our
//! own. Design in `docs/CLUSTER.md`; in short:
//!
//! - **Stock is leased** (demarcation). A SKU's unleased units are its pool,
//!   in the SKU's slot. A node sells from units it leased, with the same
//!   lock-free engine as a single node (the lease is its local stock), and
//!   leases more when it runs low: as much as about one lease horizon of
//!   its recent sales, capped so one node cannot starve the others. Idle
//!   units go back; a node that finds the pool empty publishes its demand,
//!   and nodes holding idle units return them at once, so no unit stays
//!   stranded on one node while buyers on another are told "sold out".
//! - **A node owns its slot** (its journal, holds, order partition) while
//!   it renews its ownership; it stops selling before the ownership can
//!   lapse in Redis ([`owner`]). A node silent past its ownership is
//!   adopted by another ([`adopt`]): the adoption fences the silent node's
//!   journal writes first, then its unsold units go back to the pools and
//!   its holds end there (commit via any node, or expiry).
//! - **Counts** are published per SKU on a sharded channel and summed by
//!   every node ([`counts`]).
//! - **Hold operations** on another node's hold go to that node through its
//!   inbox channel ([`forward`]); to an adopted node's state directly. A
//!   buyer erasure asks every live node the same way ([`erase`]).
//!
//! # Layout
//!
//! - [`keys`], [`scripts`]: names and the Lua scripts (one slot each).
//! - [`owner`]: taking and renewing this node's ownership; the fence.
//! - [`lease`]: leasing, returning and rebalancing stock.
//! - [`counts`]: the global counts.
//! - [`forward`]: hold operations across nodes.
//! - [`adopt`]: finding silent nodes and ending their state.
//! - [`bus`]: the push-message loop (sharded pub/sub) and publishing.
//! - [`rebuild`]: a SKU's pool and ledger rebuilt from what the nodes hold.
//! - [`requests`]: a reservation's request id claimed across nodes.
//! - [`home`]: a buyer's home node, where its per-buyer limits are counted.
//! - [`erase`]: a buyer erased on every node and in every node's slot.

pub mod adopt;
pub mod bus;
pub mod counts;
pub mod erase;
pub mod forward;
pub mod home;
pub mod keys;
pub mod lease;
pub mod ops;
pub mod owner;
pub mod rebuild;
pub mod requests;
pub mod scripts;

use crate::catalog::{self, Meta};
use crate::config::ServeArgs;
use crate::error::ApiError;
use crate::journal::Fenced;
use crate::journal::replicas::ReplicaAcks;
use crate::protocol::{ChannelDef, Code, SkuDef, SkuMeta};
use anyhow::Context as _;
use counts::GlobalCounts;
use dashmap::DashMap;
use holdfast_engine::limits::SKU_UNITS_MAX;
use holdfast_engine::{Bucket, Engine, SaleWindow, SkuIdx, SkuSettings, SkuSpec};
use keys::ClusterKeys;
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// A node of a multi-node deployment: its identity, its connection to the
/// cluster, and the state that coordinates it with the others.
pub struct Cluster {
    pub node: u8,
    pub keys: ClusterKeys,
    /// This process (a restarted node is a new instance of the same node).
    pub instance: String,
    /// The ownership epoch this process holds.
    pub epoch: u64,
    conn: std::sync::RwLock<ClusterConnection>,
    /// For ownership renewals only (see [`Joined::owner_conn`]).
    owner_conn: std::sync::RwLock<ClusterConnection>,
    /// A client for connections of their own (the journal's).
    pub client: ClusterClient,
    /// The client ownership connections are made with (RESP2, no push).
    owner_client: ClusterClient,
    /// Consecutive failed probes of the shared and the ownership connection.
    probes_failed: (AtomicU32, AtomicU32),
    pub engine: Arc<Engine>,
    pub meta: Arc<Meta>,
    pub settings: crate::config::ClusterArgs,
    pub broadcast_interval: Duration,
    /// Monotonic origin of the fence and of lease bookkeeping.
    started: Instant,
    /// Monotonic ms until which this node may sell (see [`owner`]).
    fence_until_ms: AtomicU64,
    pub fenced: Arc<Fenced>,
    /// Operation ids: `epoch << 32 | n`, so they grow across restarts and
    /// adoptions (the SKU scripts apply an id once).
    op_counter: AtomicU64,
    pub leases: DashMap<SkuIdx, Arc<lease::Lease>>,
    pub counts: GlobalCounts,
    /// Nodes seen alive (for the lease cap), at least 1.
    pub live_nodes: AtomicU32,
    pub forward: forward::Pending,
    /// The operations, for requests other nodes forward to this one (set
    /// once the server has built them).
    ops: OnceLock<Weak<crate::ops::Ops>>,
    /// Nodes this one adopted: node -> adoption epoch.
    pub adopted: DashMap<u8, u64>,
    /// Adopted nodes whose upkeep (renewal, returning their unsold units,
    /// expiring their holds) runs: an adoption made on a forwarded hold
    /// operation gets its upkeep from the watcher's next look.
    pub kept: dashmap::DashSet<u8>,
    /// Per SKU: the highest version this node's own lease operations saw
    /// (a lower one is a rollback).
    versions: DashMap<SkuIdx, u64>,
    /// SKUs that stopped selling here after a rollback.
    frozen: DashMap<SkuIdx, ()>,
    /// The rebuild this node last claimed for, per SKU ([`rebuild`]).
    claimed_for: DashMap<SkuIdx, String>,
    /// Pings this node sent to its own inbox, and the last that came back
    /// (a lost subscription shows as a ping that does not).
    inbox_pings: (AtomicU64, AtomicU64),
    /// Replicas each master must confirm writes on.
    pub replicas: Arc<ReplicaAcks>,
    /// See [`Joined::starting_keeper`].
    starting_keeper: CancellationToken,
    /// The Redis command timeout (a `WAIT` stays well inside it).
    redis_timeout: Duration,
    /// How long answers to request ids are remembered ([`requests`]).
    pub request_window_ms: u64,
    /// The key buyer homes are hashed with ([`home`]), and how long a home
    /// lasts (0: for ever).
    home_secret: String,
    pub buyer_record_retention_ms: u64,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.node)
            .field("instance", &self.instance)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

/// Before the engine exists: connected, validated, ownership taken.
pub struct Joined {
    pub node: u8,
    pub keys: ClusterKeys,
    pub instance: String,
    pub epoch: u64,
    pub client: ClusterClient,
    pub conn: ClusterConnection,
    pub push: tokio::sync::mpsc::UnboundedReceiver<redis::PushInfo>,
    /// The client the node's journal writes with (RESP2, no push).
    pub journal_client: ClusterClient,
    /// The connection the ownership renewals use, alone: a renewal never
    /// waits behind other traffic stuck on a failing slot.
    pub owner_conn: ClusterConnection,
    /// Monotonic ms (from `started`) at which the ownership was taken.
    pub owned_at: (Instant, u64),
    /// Replicas each master must confirm writes on (shared with the
    /// journal; refreshed from the topology by the heal loop).
    pub replicas: Arc<ReplicaAcks>,
    /// Stops the renewals that keep the ownership alive while the node
    /// starts (see [`owner::keep_while_starting`]).
    pub starting_keeper: CancellationToken,
    /// See [`Cluster::home_key`].
    pub home_secret: String,
}

/// Connects to the cluster, checks it is one, and takes this node's
/// ownership (refusing to start while another live process owns it).
pub async fn join(args: &ServeArgs) -> anyhow::Result<Joined> {
    let urls = &args.redis_cluster;
    let timeout = Duration::from_millis(args.journal.redis_timeout_ms);
    let described = urls
        .iter()
        .map(|u| crate::journal::open::redact(u))
        .collect::<Vec<_>>()
        .join(",");
    // The push channel is bounded by what Redis sends us: counts of the
    // SKUs we subscribe to, at most one message per node per SKU per
    // broadcast interval, drained by one loop.
    let (push_tx, push) = tokio::sync::mpsc::unbounded_channel();
    let build = |resp3: bool| {
        // One command may retry (moved slots, a failover) but gives up as
        // a whole after the Redis timeout: a caller stuck in retries could
        // not renew its ownership in time, and its own loop retries anyway.
        let mut b = ClusterClientBuilder::new(urls.iter().map(String::as_str))
            // A dead master refuses or times out: find out fast, so the
            // client's slot refresh after a failover does not stall
            // every command behind it.
            .connection_timeout(timeout.min(CONNECT_TIMEOUT_MAX))
            .response_timeout(timeout)
            .overall_response_timeout(Some(timeout))
            .retries(CLUSTER_RETRIES);
        if resp3 {
            b = b.use_protocol(redis::ProtocolVersion::RESP3);
        }
        b
    };
    let client = build(true)
        .push_sender(push_tx)
        .build()
        .with_context(|| format!("bad --redis-cluster {described}"))?;
    let journal_client = build(false)
        .build()
        .with_context(|| format!("bad --redis-cluster {described}"))?;
    let mut conn = client.get_async_connection().await.map_err(|e| {
        if e.to_string().contains("cluster support disabled") {
            anyhow::anyhow!(
                "--redis-cluster {described} is not a Redis Cluster (cluster support disabled): \
                 use --redis for a single Redis"
            )
        } else {
            anyhow::anyhow!("cannot connect to the Redis Cluster at {described}: {e}")
        }
    })?;
    let info: String = redis::cmd("CLUSTER")
        .arg("INFO")
        .query_async(&mut conn)
        .await
        .map_err(|e| anyhow::anyhow!("--redis-cluster {described} is not a Redis Cluster: {e}"))?;
    anyhow::ensure!(
        info.contains("cluster_state:ok"),
        "the Redis Cluster at {described} is not ready (CLUSTER INFO: {})",
        info.lines()
            .find(|l| l.starts_with("cluster_state"))
            .unwrap_or("no cluster_state")
    );
    let owner_conn = build(false)
        .build()
        .with_context(|| format!("bad --redis-cluster {described}"))?
        .get_async_connection()
        .await
        .with_context(|| format!("cannot connect to the Redis Cluster at {described}"))?;
    let keys = ClusterKeys::new(&args.redis_prefix);
    let node = args.node_id;
    let instance = format!(
        "{:016x}-{}",
        crate::ids::Ids::random_key().0,
        std::process::id()
    );
    let started = Instant::now();
    let sent = started.elapsed().as_millis() as u64;
    let reply: Vec<redis::Value> = scripts::OWN
        .key(keys.owner(node))
        .key(keys.node_journal(node).journal())
        .arg(&instance)
        .arg(args.cluster.node_ttl_ms)
        .invoke_async(&mut conn)
        .await
        .context("taking this node's ownership")?;
    let head: String = redis::from_redis_value(reply[0].clone())?;
    if head == "busy" {
        let other: String = redis::from_redis_value(reply[1].clone())?;
        let left_ms: u64 = redis::from_redis_value(reply[2].clone())?;
        anyhow::bail!(
            "node id {node} is in use by a live node (instance {other}, its ownership lasts {left_ms} ms more): \
             give each node its own --node-id, or stop the other one"
        );
    }
    let epoch: u64 = redis::from_redis_value(reply[1].clone())?;
    let starting_keeper = CancellationToken::new();
    tokio::spawn(owner::keep_while_starting(
        owner_conn.clone(),
        keys.clone(),
        node,
        epoch,
        args.cluster.node_ttl_ms,
        starting_keeper.clone(),
    ));
    let _: () = redis::cmd("HSET")
        .arg(keys.registry())
        .arg(node)
        .arg(format!("{instance}|{epoch}"))
        .query_async(&mut conn)
        .await?;
    // The first node to join makes the key buyer homes are hashed with.
    let (a, b) = crate::ids::Ids::random_key();
    let made: Option<String> = redis::cmd("SET")
        .arg(keys.buyer_home_key())
        .arg(format!("{a:016x}{b:016x}"))
        .arg("NX")
        .arg("GET")
        .query_async(&mut conn)
        .await?;
    let home_secret = made.unwrap_or_else(|| format!("{a:016x}{b:016x}"));
    Ok(Joined {
        home_secret,
        node,
        keys,
        instance,
        epoch,
        client,
        conn,
        push,
        journal_client,
        owner_conn,
        owned_at: (started, sent),
        replicas: Arc::new(ReplicaAcks::new(
            args.cluster.replica_acks,
            args.cluster.replica_acks_strict,
        )),
        starting_keeper,
    })
}

/// How long a connection probe may take, and how many may fail in a row
/// before the connection is replaced.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1_000);
const PROBES_FAILED_MAX: u32 = 2;
/// How often the connections are probed.
pub const PROBE_EVERY: Duration = Duration::from_millis(500);

/// Longest wait for a TCP connection to one cluster node.
const CONNECT_TIMEOUT_MAX: Duration = Duration::from_millis(500);

/// Retries of one cluster command (moved slots, failovers). The scripts
/// are idempotent, so a retry never applies twice.
pub const CLUSTER_RETRIES: u32 = 16;

impl Cluster {
    pub fn new(
        joined: &Joined,
        engine: Arc<Engine>,
        meta: Arc<Meta>,
        args: &ServeArgs,
        fenced: Arc<Fenced>,
    ) -> Arc<Self> {
        let (started, owned_at) = joined.owned_at;
        let cluster = Self {
            node: joined.node,
            keys: joined.keys.clone(),
            instance: joined.instance.clone(),
            epoch: joined.epoch,
            conn: std::sync::RwLock::new(joined.conn.clone()),
            owner_conn: std::sync::RwLock::new(joined.owner_conn.clone()),
            client: joined.client.clone(),
            owner_client: joined.journal_client.clone(),
            probes_failed: (AtomicU32::new(0), AtomicU32::new(0)),
            engine,
            meta,
            settings: args.cluster.clone(),
            broadcast_interval: Duration::from_millis(args.broadcast_interval_ms),
            started,
            fence_until_ms: AtomicU64::new(0),
            fenced,
            op_counter: AtomicU64::new(0),
            leases: DashMap::new(),
            counts: GlobalCounts::new(joined.node),
            live_nodes: AtomicU32::new(1),
            forward: forward::Pending::default(),
            ops: OnceLock::new(),
            adopted: DashMap::new(),
            kept: dashmap::DashSet::new(),
            versions: DashMap::new(),
            frozen: DashMap::new(),
            claimed_for: DashMap::new(),
            inbox_pings: (AtomicU64::new(0), AtomicU64::new(0)),
            replicas: joined.replicas.clone(),
            starting_keeper: joined.starting_keeper.clone(),
            redis_timeout: Duration::from_millis(args.journal.redis_timeout_ms),
            request_window_ms: args.limits.request_window_ms,
            home_secret: joined.home_secret.clone(),
            buyer_record_retention_ms: args.privacy.buyer_record_retention_ms,
        };
        cluster.renewed(owned_at);
        Arc::new(cluster)
    }

    /// A connection for one command (cheap: the cluster connection is
    /// multiplexed and shared).
    pub fn conn(&self) -> ClusterConnection {
        self.conn.read().expect("conn lock").clone()
    }

    /// Probes the shared connection and the ownership connection, and
    /// replaces one that failed twice in a row. Measured here: after a
    /// master is killed, a cluster connection can stay stuck retrying its
    /// slot refresh for tens of seconds; a fresh one works at once.
    /// Returns whether the shared connection was replaced (its
    /// subscriptions must then be made again).
    pub async fn heal(&self) -> bool {
        self.refresh_replicas().await;
        let probe = |mut c: ClusterConnection| async move {
            // Every master must answer: a connection stuck on one slot's
            // old master fails here.
            let ping = redis::cmd("PING");
            let routed = c.route_command(
                ping,
                RoutingInfo::MultiNode((
                    redis::cluster_routing::MultipleNodeRoutingInfo::AllMasters,
                    Some(redis::cluster_routing::ResponsePolicy::AllSucceeded),
                )),
            );
            matches!(tokio::time::timeout(PROBE_TIMEOUT, routed).await, Ok(Ok(_)))
        };
        let mut replaced = false;
        if probe(self.conn()).await {
            self.probes_failed.0.store(0, Ordering::Relaxed);
        } else if self.probes_failed.0.fetch_add(1, Ordering::Relaxed) + 1 >= PROBES_FAILED_MAX
            && let Ok(Ok(fresh)) =
                tokio::time::timeout(PROBE_TIMEOUT, self.client.get_async_connection()).await
        {
            tracing::warn!("the cluster connection was stuck: replaced it");
            metrics::counter!("holdfast_cluster_reconnects_total", "conn" => "shared").increment(1);
            *self.conn.write().expect("conn lock") = fresh;
            self.probes_failed.0.store(0, Ordering::Relaxed);
            replaced = true;
        }
        let owner = self.owner_conn.read().expect("conn lock").clone();
        if probe(owner).await {
            self.probes_failed.1.store(0, Ordering::Relaxed);
        } else if self.probes_failed.1.fetch_add(1, Ordering::Relaxed) + 1 >= PROBES_FAILED_MAX
            && let Ok(Ok(fresh)) =
                tokio::time::timeout(PROBE_TIMEOUT, self.owner_client.get_async_connection()).await
        {
            tracing::warn!("the ownership connection was stuck: replaced it");
            metrics::counter!("holdfast_cluster_reconnects_total", "conn" => "owner").increment(1);
            *self.owner_conn.write().expect("conn lock") = fresh;
            self.probes_failed.1.store(0, Ordering::Relaxed);
        }
        replaced
    }

    /// The number of the next ping to this node's own inbox.
    pub fn next_inbox_ping(&self) -> u64 {
        // Relaxed: a counter read by the same loop.
        self.inbox_pings.0.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// A ping came back through the inbox.
    pub fn inbox_pong(&self, n: u64) {
        self.inbox_pings.1.fetch_max(n, Ordering::Relaxed);
    }

    /// Whether the last ping sent never came back.
    pub fn inbox_pings_lost(&self) -> bool {
        let sent = self.inbox_pings.0.load(Ordering::Relaxed);
        sent > 0 && self.inbox_pings.1.load(Ordering::Relaxed) < sent
    }

    /// The connection for ownership renewals (this node's and adoptions').
    pub fn owner_conn(&self) -> ClusterConnection {
        self.owner_conn.read().expect("conn lock").clone()
    }

    /// Monotonic ms since this process joined.
    pub fn mono_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// A fresh operation id (see `op_counter`).
    pub fn next_op(&self, epoch: u64) -> u64 {
        epoch << 32 | (self.op_counter.fetch_add(1, Ordering::Relaxed) & 0xffff_ffff)
    }

    /// The operations, once built, for forwarded requests.
    pub fn set_ops(&self, ops: &Arc<crate::ops::Ops>) {
        let _ = self.ops.set(Arc::downgrade(ops));
    }

    pub fn ops(&self) -> Option<Arc<crate::ops::Ops>> {
        self.ops.get()?.upgrade()
    }

    /// Waits until the master of `key`'s slot has its writes so far on
    /// `--cluster-replica-acks` replicas (`WAIT` on the connection that
    /// wrote them: the cluster connection keeps one per node).
    pub async fn wait_replicas(&self, key: &str) -> Result<(), ApiError> {
        let slot = crate::journal::conn::key_slot(key);
        let Some(want) = self.replicas.for_slot(slot) else {
            return Ok(());
        };
        let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::new(
            slot,
            SlotAddr::Master,
        )));
        let mut wait = redis::cmd("WAIT");
        wait.arg(want)
            .arg(crate::journal::writer::wait_ms(self.redis_timeout));
        let got: u32 = redis::from_redis_value(
            self.conn()
                .route_command(wait, route)
                .await
                .map_err(redis_error)?,
        )
        .map_err(|_| ApiError::unavailable("WAIT's answer did not parse"))?;
        if got < want {
            metrics::counter!("holdfast_journal_errors_total", "kind" => "replication")
                .increment(1);
            return Err(ApiError::unavailable(format!(
                "the Redis Cluster's replicas did not confirm in time ({got} of {want}): retry shortly"
            )));
        }
        Ok(())
    }

    /// Reads how many replicas each master has connected (`CLUSTER NODES`
    /// from any node), so writes wait for the replicas a master can give.
    async fn refresh_replicas(&self) {
        if self.replicas.wanted() == 0 {
            return;
        }
        let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random);
        let mut conn = self.conn();
        let asked = conn.route_command(redis::cmd("CLUSTER").arg("NODES").clone(), route);
        let Ok(Ok(answer)) = tokio::time::timeout(PROBE_TIMEOUT, asked).await else {
            return;
        };
        let Ok(text) = redis::from_redis_value::<String>(answer) else {
            return;
        };
        for (master, have) in self.replicas.update(&text) {
            tracing::warn!(
                master,
                replicas = have,
                wanted = self.replicas.wanted(),
                strict = self.settings.replica_acks_strict,
                "a master has fewer replicas connected than --cluster-replica-acks asks: writes \
                 there wait for the ones it has, or are refused with --cluster-replica-acks-strict"
            );
        }
    }

    /// Stops selling a SKU here (a rollback was detected).
    pub fn freeze(&self, sku: SkuIdx) {
        self.frozen.insert(sku, ());
    }

    /// Whether a SKU is frozen here.
    pub fn is_frozen(&self, sku: SkuIdx) -> bool {
        self.frozen.contains_key(&sku)
    }

    /// Refuses a frozen SKU.
    pub fn check_frozen(&self, sku: SkuIdx) -> Result<(), ApiError> {
        if self.frozen.contains_key(&sku) {
            return Err(ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                Code::Unavailable,
                "this SKU is frozen: a Redis failover lost some of its stock records (or a rebuild runs); it sells again once rebuilt (POST /api/admin/skus/{id}/rebuild)",
            ));
        }
        Ok(())
    }

    /// Records a SKU version from Redis; false if it went backwards (a
    /// failover lost writes: the SKU is frozen until rebuilt).
    pub fn saw_version(&self, sku: SkuIdx, version: u64) -> bool {
        let mut seen = self.versions.entry(sku).or_insert(0);
        if version < *seen {
            return false;
        }
        *seen = version;
        true
    }

    /// The SKU ids of the catalog, with their index here, creating the
    /// missing ones locally (with no units: units come by lease).
    pub async fn sync_catalog(&self) -> anyhow::Result<Vec<(String, SkuIdx)>> {
        let mut conn = self.conn();
        let ids: HashMap<String, u64> = redis::cmd("HGETALL")
            .arg(self.keys.catalog())
            .query_async(&mut conn)
            .await
            .context("reading the cluster catalog")?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids.into_keys() {
            let sku = self.load_def(&id).await?;
            out.push((id, sku));
        }
        Ok(out)
    }

    /// Reads one SKU's definition from Redis and applies it here (creating
    /// the SKU locally with no units if it is new to this node).
    pub async fn load_def(&self, id: &str) -> anyhow::Result<SkuIdx> {
        let mut conn = self.conn();
        let def: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.keys.def(id))
            .query_async(&mut conn)
            .await?;
        anyhow::ensure!(!def.is_empty(), "sku {id}: no definition in the cluster");
        let num = |k: &str| -> anyhow::Result<u64> {
            def.get(k)
                .ok_or_else(|| anyhow::anyhow!("sku {id}: {k} missing"))?
                .parse()
                .map_err(|_| anyhow::anyhow!("sku {id}: {k} is not a number"))
        };
        let settings = SkuSettings {
            buyer_limit: num("buyer_limit")? as u32,
            hold_ttl_ms: num("hold_ttl_ms")?,
            hold_lifetime_max_ms: num("hold_lifetime_max_ms")?,
            order_units_max: num("order_units_max")? as u32,
        };
        let window = match def.get("window").map(String::as_str) {
            Some("open") => SaleWindow::Open,
            Some("paused") => SaleWindow::Paused,
            Some("closed") => SaleWindow::Closed,
            Some("scheduled") => SaleWindow::Scheduled {
                opens_at_ms: num("opens_at_ms")?,
            },
            other => anyhow::bail!("sku {id}: unknown window {other:?}"),
        };
        let sku = match self.engine.sku(id) {
            Some(sku) => {
                let snap = self.engine.snapshot(sku).expect("a known sku");
                if snap.settings != settings {
                    self.engine
                        .update_settings(sku, settings)
                        .map_err(|e| anyhow::anyhow!("sku {id}: {e}"))?;
                }
                if snap.window != window {
                    self.engine
                        .set_window(sku, window)
                        .map_err(|e| anyhow::anyhow!("sku {id}: {e}"))?;
                }
                sku
            }
            None => {
                let spec = SkuSpec {
                    total: 0,
                    settings,
                    window,
                };
                match self.engine.create_sku(id, spec) {
                    Ok(sku) => sku,
                    // Created here meanwhile (the catalog channel announced
                    // it while this call read it): the same SKU.
                    Err(holdfast_engine::CatalogError::AlreadyExists) => self
                        .engine
                        .sku(id)
                        .ok_or_else(|| anyhow::anyhow!("sku {id}: vanished"))?,
                    Err(e) => anyhow::bail!("sku {id}: {e}"),
                }
            }
        };
        if let Some(meta) = def
            .get("meta")
            .filter(|m| !m.is_empty())
            .and_then(|m| serde_json::from_str::<SkuMeta>(m).ok())
            && self.meta.get(sku).as_deref() != Some(&meta)
        {
            self.meta.set(sku, meta);
        }
        self.load_channels(id, sku, &def)?;
        let pool = num("pool")? as u32;
        let version = num("version")?;
        self.counts.set_pool(sku, pool, version);
        Ok(sku)
    }

    /// A definition's sales channels applied here: each channel the
    /// engine does not have yet is added with nothing leased (no quota
    /// units, and a capped one no headroom: both come by lease), a lifted
    /// cap is lifted here too; the configured quotas and caps go to the
    /// global counts.
    fn load_channels(
        &self,
        id: &str,
        sku: SkuIdx,
        def: &HashMap<String, String>,
    ) -> anyhow::Result<()> {
        let list = def.get("channels").map_or("", String::as_str);
        let mut configured = Vec::new();
        for c in list.split(',').filter(|c| !c.is_empty()) {
            let quota = def
                .get(&format!("cq:{c}"))
                .and_then(|q| q.parse().ok())
                .unwrap_or(0);
            let cap: Option<u32> = def.get(&format!("cc:{c}")).and_then(|q| q.parse().ok());
            configured.push((c.to_string(), quota, cap));
            let local = self
                .engine
                .channel(sku, c)
                .and_then(|ch| self.engine.bucket_counts(sku, Bucket::Allowance(ch)).ok());
            let capped_here = local.is_some_and(|a| a.total() < SKU_UNITS_MAX);
            match local {
                None => {
                    self.engine
                        .configure_channel(sku, c, 0, cap.map(|_| 0))
                        .map_err(|e| anyhow::anyhow!("sku {id}, channel {c}: {e}"))?;
                }
                Some(_) if cap.is_none() && capped_here => {
                    let quota_here = self
                        .engine
                        .channel(sku, c)
                        .and_then(|ch| self.engine.bucket_counts(sku, Bucket::Quota(ch)).ok())
                        .map_or(0, |q| q.total());
                    self.engine
                        .configure_channel(sku, c, quota_here, None)
                        .map_err(|e| anyhow::anyhow!("sku {id}, channel {c}: {e}"))?;
                }
                Some(_) => {}
            }
        }
        self.counts.set_configured(sku, configured);
        Ok(())
    }

    /// Creates a SKU in the cluster if it is not there (the catalog file
    /// and the demo create theirs on every node; the first wins), then here.
    pub async fn create_sku(&self, def: &SkuDef) -> Result<(SkuIdx, bool), ApiError> {
        let (spec, meta) = catalog::def_to_spec(def, self.meta.images())?;
        let (window, opens_at_ms) = window_fields(spec.window);
        let mut conn = self.conn();
        let mut invocation = scripts::CREATE.key(self.keys.def(&def.id));
        invocation
            .arg(spec.total)
            .arg(spec.settings.buyer_limit)
            .arg(spec.settings.hold_ttl_ms)
            .arg(spec.settings.hold_lifetime_max_ms)
            .arg(spec.settings.order_units_max)
            .arg(window)
            .arg(opens_at_ms)
            .arg(serde_json::to_string(&meta).unwrap_or_default());
        for c in &def.channels {
            invocation
                .arg(&c.id)
                .arg(c.quota.unwrap_or(0))
                .arg(c.cap.map(|c| c.to_string()).unwrap_or_default());
        }
        let created: i64 = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(redis_error)?;
        if created == 1 {
            let _: () = redis::pipe()
                .cmd("HSET")
                .arg(self.keys.catalog())
                .arg(&def.id)
                .arg(self.engine.now_ms())
                .ignore()
                .cmd("SPUBLISH")
                .arg(self.keys.catalog_channel())
                .arg(format!("n|{}", def.id))
                .ignore()
                .query_async(&mut conn)
                .await
                .map_err(redis_error)?;
        }
        let sku = self
            .load_def(&def.id)
            .await
            .map_err(|e| ApiError::unavailable(format!("{e:#}")))?;
        bus::subscribe_sku(self, &def.id).await;
        Ok((sku, created == 1))
    }

    /// A host's change to a SKU's stock or fields, applied to its
    /// definition in the cluster; every node reloads it.
    pub async fn admin(
        &self,
        id: &str,
        kind: AdminKind,
        fields: &[(&str, String)],
    ) -> Result<(), ApiError> {
        let (name, units) = match kind {
            AdminKind::Restock(n) => ("restock", n),
            AdminKind::Adjust(n) => ("adjust", n),
            AdminKind::Total(n) => ("total", n),
            AdminKind::Fields => ("fields", 0),
        };
        let args: Vec<String> = fields
            .iter()
            .flat_map(|(k, v)| [k.to_string(), v.clone()])
            .collect();
        self.run_admin(id, name, units, &args).await
    }

    /// Adds a sales channel to a SKU or changes its quota and cap (the
    /// whole definition: no quota is 0, no cap is uncapped), in the SKU's
    /// definition; every node reloads it.
    pub async fn configure_channel(&self, id: &str, def: &ChannelDef) -> Result<(), ApiError> {
        let args = [
            def.id.clone(),
            def.quota.unwrap_or(0).to_string(),
            def.cap.map(|c| c.to_string()).unwrap_or_default(),
        ];
        self.run_admin(id, "channel", 0, &args).await
    }

    /// Moves `units` unleased units from the pool into a channel's quota
    /// (negative: back).
    pub async fn move_quota(&self, id: &str, channel: &str, units: i64) -> Result<(), ApiError> {
        let args = [channel.to_string(), units.to_string()];
        self.run_admin(id, "move", units.unsigned_abs() as u32, &args)
            .await
    }

    async fn run_admin(
        &self,
        id: &str,
        name: &str,
        units: u32,
        args: &[String],
    ) -> Result<(), ApiError> {
        let mut invocation = scripts::ADMIN.key(self.keys.def(id));
        invocation
            .arg(name)
            .arg(units)
            .arg(self.keys.channel(id))
            .arg(holdfast_engine::limits::SKU_UNITS_MAX);
        for a in args {
            invocation.arg(a);
        }
        let reply: Vec<redis::Value> = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        let head: String = value(&reply[0])?;
        match head.as_str() {
            "ok" => {
                if let Err(e) = self.load_def(id).await {
                    tracing::warn!(sku = id, error = %e, "reloading a sku after a change");
                }
                Ok(())
            }
            "short" => {
                let pool: u32 = redis::from_redis_value(reply[1].clone()).unwrap_or(0);
                // Nodes give idle units back when asked: ask.
                let _ = lease::publish_demand(self, id, units.saturating_sub(pool)).await;
                Err(ApiError::new(
                    axum::http::StatusCode::CONFLICT,
                    Code::NotEnoughAvailable,
                    format!(
                        "only {pool} units are not leased to a node right now; nodes return idle units within \
                         {} ms, retry then",
                        self.settings.lease_idle_return_ms
                    ),
                ))
            }
            "shortq" => {
                let quota: u32 = redis::from_redis_value(reply[1].clone()).unwrap_or(0);
                let _ = lease::publish_demand(self, id, units.saturating_sub(quota)).await;
                Err(ApiError::new(
                    axum::http::StatusCode::CONFLICT,
                    Code::NotEnoughQuota,
                    format!(
                        "only {quota} of the channel's quota units are not leased to a node right now; nodes \
                         return idle units within {} ms, retry then",
                        self.settings.lease_idle_return_ms
                    ),
                ))
            }
            "capshort" => {
                let headroom: u32 = redis::from_redis_value(reply[1].clone()).unwrap_or(0);
                let _ = lease::publish_demand(self, id, 1).await;
                Err(ApiError::new(
                    axum::http::StatusCode::CONFLICT,
                    Code::CapBelowUsed,
                    format!(
                        "the cap can shrink by {headroom} now: the rest of its headroom is used or leased to \
                         nodes, which return idle headroom within {} ms",
                        self.settings.lease_idle_return_ms
                    ),
                ))
            }
            "capnew" => Err(ApiError::new(
                axum::http::StatusCode::CONFLICT,
                Code::InvalidChannels,
                "in multi-node mode a cap is set when its channel is added (the units a channel already \
                 sold are counted on the nodes): add a new channel with the cap",
            )),
            "nochannel" => Err(ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                Code::UnknownChannel,
                "{channel}: the sku has no such channel",
            )),
            "above" => Err(catalog::check_total(u32::MAX).expect_err("above the maximum")),
            _ => Err(ApiError::unknown_sku()),
        }
    }
}

/// A host's change (see [`Cluster::admin`]).
#[derive(Debug, Clone, Copy)]
pub enum AdminKind {
    Restock(u32),
    Adjust(u32),
    Total(u32),
    Fields,
}

/// The stored form of a sale window.
pub fn window_fields(w: SaleWindow) -> (&'static str, u64) {
    match w {
        SaleWindow::Open => ("open", 0),
        SaleWindow::Paused => ("paused", 0),
        SaleWindow::Closed => ("closed", 0),
        SaleWindow::Scheduled { opens_at_ms } => ("scheduled", opens_at_ms),
    }
}

/// A script's answer field, typed, or a retryable refusal.
pub fn value<T: redis::FromRedisValue>(v: &redis::Value) -> Result<T, ApiError> {
    redis::from_redis_value(v.clone()).map_err(|e| {
        tracing::warn!(error = %e, "a cluster answer did not parse");
        ApiError::unavailable("the Redis Cluster's answer did not parse: retry shortly")
    })
}

/// A Redis error on the request path: retryable, details logged.
pub fn redis_error(e: redis::RedisError) -> ApiError {
    tracing::warn!(error = %e, "cluster command failed");
    ApiError::unavailable("the Redis Cluster did not answer: retry shortly")
}

impl Cluster {
    /// What the host's dashboard shows of the deployment: every node (alive
    /// or not, adopted by whom) and every SKU's pool and leases.
    pub async fn overview(&self) -> Result<serde_json::Value, ApiError> {
        let nodes: Vec<serde_json::Value> = self
            .node_states()
            .await?
            .into_iter()
            .map(|n| {
                serde_json::json!({
                    "id": n.id,
                    "alive": n.alive,
                    "adopted_by": n.adopted_by,
                    "lease_left_ms": n.lease_left_ms,
                    "this": n.id == self.node,
                })
            })
            .collect();
        let mut conn = self.conn();
        let mut skus = Vec::new();
        for snap in self.engine.snapshots() {
            // Numbers (`n:g`, `n:r`) beside each node's last operation and
            // its answer (`n:op`, `n:res`, text): read all as text.
            let lease: HashMap<String, String> = redis::cmd("HGETALL")
                .arg(self.keys.lease(&snap.id))
                .query_async(&mut conn)
                .await
                .map_err(redis_error)?;
            let mut leases: std::collections::BTreeMap<u8, i64> = Default::default();
            for (field, v) in lease {
                if let Some((node, kind)) = field.split_once(':')
                    && let Ok(node) = node.parse::<u8>()
                {
                    let units = v.parse::<i64>().unwrap_or(0);
                    match kind {
                        "g" => *leases.entry(node).or_default() += units,
                        "r" => *leases.entry(node).or_default() -= units,
                        _ => {}
                    }
                }
            }
            skus.push(serde_json::json!({
                "id": &*snap.id,
                "pool": self.counts.pool(snap.sku),
                "leased": leases,
                "frozen": self.frozen.contains_key(&snap.sku),
            }));
        }
        metrics::gauge!("holdfast_cluster_live_nodes")
            .set(f64::from(self.live_nodes.load(Ordering::Relaxed)));
        metrics::gauge!("holdfast_cluster_frozen_skus").set(self.frozen.len() as f64);
        Ok(serde_json::json!({
            "node": self.node,
            "epoch": self.epoch,
            "nodes": nodes,
            "skus": skus,
        }))
    }
}
