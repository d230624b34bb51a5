//! Command-line and environment configuration of the `holdfast` binary.
//!
//! Every flag has a `HOLDFAST_*` environment variable and a default that
//! suits the demo; every limit is a flag whose doc says its default and why.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// holdfast: a live-shopping inventory engine that never oversells.
#[derive(Debug, Parser)]
#[command(name = "holdfast", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API, websockets, pages and metrics on one port.
    Serve(ServeArgs),
}

/// How reservations are persisted when `--redis` is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Persistence {
    /// Acknowledge a change only after Redis has it (no acknowledged
    /// reservation is ever lost).
    Durable,
    /// Acknowledge from memory; persist right behind, with a bounded backlog.
    Async,
}

impl Persistence {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Durable => "durable",
            Self::Async => "async",
        }
    }
}

/// The demo tokens, accepted only with `--demo` (or given explicitly by
/// tests): well known, so never safe in production.
pub const DEMO_ADMIN_TOKEN: &str = "demo-admin";
pub const DEMO_CHECKOUT_TOKEN: &str = "demo-checkout";
/// Shortest token accepted without `--demo`: 16 bytes is 128 bits of a
/// random secret written as bytes (a hex or base64 secret is longer).
pub const TOKEN_BYTES_MIN: usize = 16;

/// `holdfast serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on (HTTP API, websockets, pages, /metrics).
    #[arg(long, env = "HOLDFAST_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Bearer token for catalog changes (the host dashboard). Required
    /// (at least 16 bytes) unless `--demo` is given, which uses the demo
    /// token `demo-admin` when none is set.
    #[arg(long, env = "HOLDFAST_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Bearer token for reservations (the shop's checkout backend).
    /// Required (at least 16 bytes) unless `--demo` is given, which uses
    /// `demo-checkout` when none is set.
    #[arg(long, env = "HOLDFAST_CHECKOUT_TOKEN", hide_env_values = true)]
    pub checkout_token: Option<String>,

    /// Load the built-in demo show (a handful of products, all on sale),
    /// and allow the demo tokens when no token is set.
    #[arg(long, env = "HOLDFAST_DEMO")]
    pub demo: bool,

    /// Catalog file (TOML or JSON, by extension) with `[[skus]]` entries:
    /// id, title, price_minor, currency, image_url, show, total, buyer_limit,
    /// hold_ttl_ms, hold_lifetime_max_ms, order_units_max, window.
    #[arg(long, env = "HOLDFAST_CATALOG")]
    pub catalog: Option<PathBuf>,

    /// An https origin product images may come from besides the gateway's
    /// own `/assets/` (repeat the flag, or a comma list in the env var), e.g.
    /// `https://cdn.example.com`. Listed in the pages' CSP `img-src`;
    /// `image_url`s elsewhere are refused. Default: none.
    #[arg(
        long = "image-origin",
        env = "HOLDFAST_IMAGE_ORIGINS",
        value_delimiter = ','
    )]
    pub image_origins: Vec<String>,

    /// Redis URL (`redis://`, `rediss://`, password allowed). Without it,
    /// holdfast runs in memory and says so at start.
    #[arg(long, env = "HOLDFAST_REDIS")]
    pub redis: Option<String>,

    /// Redis Cluster nodes (comma-separated URLs; any few masters will do,
    /// the rest is discovered) to run as one node of a multi-node
    /// deployment: stock is leased from the cluster in blocks, every node
    /// shows the same global counts. Needs a distinct `--node-id` per node.
    /// Excludes `--redis`.
    #[arg(
        long,
        env = "HOLDFAST_REDIS_CLUSTER",
        value_delimiter = ',',
        conflicts_with = "redis"
    )]
    pub redis_cluster: Vec<String>,

    /// PEM file of the certificate authority to trust for a `rediss://`
    /// Redis (a private CA). Without it, the system's trust store is used.
    #[arg(long, env = "HOLDFAST_REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,

    /// Persistence mode with `--redis`.
    #[arg(
        long,
        env = "HOLDFAST_PERSISTENCE",
        value_enum,
        default_value = "durable"
    )]
    pub persistence: Persistence,

    /// Key prefix in Redis.
    #[arg(long, env = "HOLDFAST_REDIS_PREFIX", default_value = "hf")]
    pub redis_prefix: String,

    /// Node id carried in hold ids (0-255): with `--redis-cluster` each
    /// live node needs its own (a node id in use by a live node refuses to
    /// start); a restarted node keeps its id to take its state back.
    #[arg(long, env = "HOLDFAST_NODE_ID", default_value_t = 0)]
    pub node_id: u8,

    /// How often live counts are pushed to subscribers, in ms. Default 100:
    /// ten updates a second reads as live and coalesces bursts.
    #[arg(long, env = "HOLDFAST_BROADCAST_INTERVAL_MS", default_value_t = 100, value_parser = clap::value_parser!(u64).range(5..=10_000))]
    pub broadcast_interval_ms: u64,

    /// Async worker threads (HTTP, websockets, fan-out). Default: one per
    /// core. The journal, expirer and clock run on threads of their own, so
    /// on a small box that also runs Redis, a buyer-heavy load can go
    /// faster with fewer workers (measured on 2 cores: durable reservations
    /// +10-25 % with 1), while fan-out to many viewers wants them all
    /// (docs/PERFORMANCE.md).
    #[arg(long, env = "HOLDFAST_WORKERS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,

    /// How often the expirer runs, in ms. Default 10: holds expire at most
    /// about 20 ms after their deadline.
    #[arg(long, env = "HOLDFAST_EXPIRY_INTERVAL_MS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub expiry_interval_ms: u64,

    /// Origins allowed to call the HTTP API from a browser (CORS), e.g.
    /// `https://shop.example`; repeat the flag or give a comma-separated
    /// list. Default: none (no CORS headers; server-to-server calls and the
    /// gateway's own pages need none). Tokens are never cookies, so no
    /// credentials mode is offered.
    #[arg(
        long = "cors-origin",
        env = "HOLDFAST_CORS_ORIGINS",
        value_delimiter = ','
    )]
    pub cors_origins: Vec<String>,

    /// Serve `/metrics`, `/healthz` and `/readyz` on this address instead
    /// of the main port (e.g. `127.0.0.1:9090`, reachable only from the
    /// monitoring network). Without it, `/metrics` is public on the main
    /// port, like the counts it reports.
    #[arg(long, env = "HOLDFAST_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    #[command(flatten)]
    pub limits: Limits,

    /// Not a flag: accept given tokens shorter than [`TOKEN_BYTES_MIN`]
    /// (tests and embedding, which pass the demo tokens explicitly).
    #[arg(skip)]
    pub short_tokens_ok: bool,

    #[command(flatten)]
    pub journal: JournalArgs,

    #[command(flatten)]
    pub cluster: ClusterArgs,

    #[command(flatten)]
    pub buyer_tokens: crate::auth::BuyerTokenArgs,

    #[command(flatten)]
    pub webhooks: crate::webhooks::config::WebhookArgs,

    #[command(flatten)]
    pub buy: BuyArgs,

    #[command(flatten)]
    pub privacy: PrivacyArgs,
}

/// The overlay's Buy button and the embeddable buy button
/// (docs/INTEGRATION.md, "Buying from the overlay"). Checked by
/// `crate::http::buy::Checkout::from_args` at start.
#[derive(Debug, Clone, Default, Args)]
pub struct BuyArgs {
    /// Where a Buy button hands the buyer off after reserving: the shop's
    /// checkout URL with `{hold}`, `{sku}`, `{qty}`, `{deadline_ms}` and
    /// `{sig}` (required) filled in, e.g.
    /// `https://shop.example/checkout?hold={hold}&sku={sku}&qty={qty}&until={deadline_ms}&sig={sig}`.
    /// https, or http to a loopback host. Default: none (the Buy button
    /// reserves and counts down, with no checkout link).
    #[arg(long, env = "HOLDFAST_CHECKOUT_URL_TEMPLATE")]
    pub checkout_url_template: Option<String>,

    /// Key of `{sig}`: hex(HMAC-SHA256(key, "hold.sku.qty.deadline_ms")),
    /// which the shop recomputes to trust the hand-off. At least 32 bytes;
    /// required with `--checkout-url-template`.
    #[arg(long, env = "HOLDFAST_CHECKOUT_URL_KEY", hide_env_values = true)]
    pub checkout_url_key: Option<String>,

    /// An origin (`https://shop.example`) whose pages may hand the overlay
    /// or the buy button a buyer token by `postMessage` (repeat the flag,
    /// or a comma list in the env var). Default: none (a token only
    /// arrives in the URL fragment).
    #[arg(
        long = "embed-origin",
        env = "HOLDFAST_EMBED_ORIGINS",
        value_delimiter = ','
    )]
    pub embed_origins: Vec<String>,
}

/// How buyer data is kept (docs/PRIVACY.md).
#[derive(Debug, Clone, Args)]
pub struct PrivacyArgs {
    /// Key of the buyer-id pseudonyms: buyer ids reach Redis, the order
    /// stream, logs and metrics only as hex(HMAC-SHA256(key, id)), which
    /// the shop computes with the same key to map back. Hex or base64, 16
    /// to 64 bytes. Without it a random key is generated and kept in Redis
    /// with the journal (`hf:journal` `buyer_id_key`), so pseudonyms stay
    /// the same across restarts; in memory mode it lives as long as the
    /// process.
    #[arg(
        long,
        env = "HOLDFAST_BUYER_ID_KEY",
        hide_env_values = true,
        value_parser = crate::privacy::BuyerIdKey::parse
    )]
    pub buyer_id_key: Option<crate::privacy::BuyerIdKey>,

    /// Store buyer ids as given instead of pseudonyms (for operators whose
    /// order system needs them and who handle the personal data there).
    #[arg(long, env = "HOLDFAST_BUYER_IDS_IN_CLEAR")]
    pub buyer_ids_in_clear: bool,

    /// Order-stream entries older than this are trimmed (`XTRIM MINID`
    /// after each batch's entries), in ms, besides `--orders-maxlen`.
    /// Default 2 592 000 000 (30 days: consumers read entries within
    /// seconds; a month covers any replay). 0: no age limit.
    #[arg(
        long,
        env = "HOLDFAST_ORDERS_MAX_AGE_MS",
        default_value_t = 2_592_000_000
    )]
    pub orders_max_age_ms: u64,

    /// Per-buyer records in Redis (limit counts per SKU, stored names)
    /// expire this long after their hash was last written, in ms. Default
    /// 2 592 000 000 (30 days, as the order stream). A SKU's limit records
    /// outlive any sale that is still selling (each purchase renews them);
    /// after a restart, limits count afresh for records that expired.
    /// 0: never.
    #[arg(
        long,
        env = "HOLDFAST_BUYER_RECORD_RETENTION_MS",
        default_value_t = 2_592_000_000
    )]
    pub buyer_record_retention_ms: u64,
}

impl PrivacyArgs {
    /// Whether pseudonyms need a generated key (none configured, not in
    /// the clear): the journal keeps it (`journal::open`).
    pub fn needs_generated_key(&self) -> bool {
        !self.buyer_ids_in_clear && self.buyer_id_key.is_none()
    }

    /// What holdfast stores for a buyer id (a generated key, if needed,
    /// lives as long as the process: memory mode).
    pub fn buyer_names(&self) -> crate::privacy::BuyerNames {
        use crate::privacy::{BuyerIdKey, BuyerNames};
        if self.buyer_ids_in_clear {
            return BuyerNames::Clear;
        }
        match &self.buyer_id_key {
            Some(key) => BuyerNames::pseudonyms(key),
            None => BuyerNames::pseudonyms(&BuyerIdKey::random()),
        }
    }

    /// For the start-up line.
    pub fn describe(&self) -> &'static str {
        match (self.buyer_ids_in_clear, self.buyer_id_key.is_some()) {
            (true, _) => "in clear (--buyer-ids-in-clear)",
            (false, true) => "pseudonyms (HMAC-SHA256, --buyer-id-key)",
            (false, false) => {
                "pseudonyms with a generated key (kept in Redis with the journal, per process in memory mode; set --buyer-id-key to map back)"
            }
        }
    }
}

/// Multi-node settings (with `--redis-cluster`).
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// A node's liveness lease, in ms: it renews every quarter of this, and
    /// stops selling at its last renewal's send time plus two thirds of it
    /// (so it stops before Redis can consider it dead). A node silent for
    /// this long is adopted by another: its unsold units go back to the
    /// pool and its holds are ended there. Default 6 000.
    #[arg(long, env = "HOLDFAST_NODE_TTL_MS", default_value_t = 6_000, value_parser = clap::value_parser!(u64).range(300..=600_000))]
    pub node_ttl_ms: u64,

    /// How much demand a lease covers, in ms: a node asks for about this
    /// long's worth of its recent sales (grows when a lease drains fast,
    /// shrinks when idle), capped at a quarter of the pool per node. Default 1 000.
    #[arg(long, env = "HOLDFAST_LEASE_HORIZON_MS", default_value_t = 1_000)]
    pub lease_horizon_ms: u64,

    /// Leased units a node has not sold for this long go back to the pool,
    /// in ms. Default 2 000. (When another node finds the pool empty, idle
    /// units go back at once.)
    #[arg(long, env = "HOLDFAST_LEASE_IDLE_RETURN_MS", default_value_t = 2_000)]
    pub lease_idle_return_ms: u64,

    /// Replicas that must confirm a node's durable batch (`WAIT`) before it
    /// is acknowledged. Default 1: an acknowledged hold survives the loss
    /// of its master. 0 trusts the master alone (a cluster without replicas).
    #[arg(long, env = "HOLDFAST_CLUSTER_REPLICA_ACKS", default_value_t = 1)]
    pub replica_acks: u32,

    /// Refuse writes (503) on a master that has fewer replicas connected
    /// than `--cluster-replica-acks` (after a failover, until a replica is
    /// back), instead of waiting for the replicas it has. A master without
    /// replicas has none that could be promoted without a write it
    /// acknowledged, so the default keeps selling there.
    #[arg(long, env = "HOLDFAST_CLUSTER_REPLICA_ACKS_STRICT")]
    pub replica_acks_strict: bool,

    /// Claim every reservation's `request_id` cluster-wide, so a retry
    /// that reaches another node gets the first hold (docs/CLUSTER.md).
    /// Costs one Redis command per reservation with a request id (measured
    /// here: about half the throughput of a node on a saturated 2-core
    /// machine); turn it off only if the load balancer sends a checkout
    /// session's retries to the node that answered first. Default true.
    #[arg(
        long,
        env = "HOLDFAST_CLUSTER_REQUEST_CLAIMS",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub request_claims: bool,

    /// How long a node waits for another node to answer an operation on a
    /// hold that node made, in ms. Default 2 000.
    #[arg(long, env = "HOLDFAST_FORWARD_TIMEOUT_MS", default_value_t = 2_000)]
    pub forward_timeout_ms: u64,
}

/// Bounds on everything a client can make the server hold.
#[derive(Debug, Clone, Args)]
pub struct Limits {
    /// Most concurrent websocket connections. Default 20 000: one process
    /// may hold 20 000 open files on these machines.
    #[arg(long, env = "HOLDFAST_WS_CONNECTIONS_MAX", default_value_t = 20_000)]
    pub ws_connections_max: usize,

    /// Most concurrent plain HTTP connections. Default 2 048: checkout
    /// backends use keep-alive pools, not one connection per buyer.
    #[arg(long, env = "HOLDFAST_HTTP_CONNECTIONS_MAX", default_value_t = 2_048)]
    pub http_connections_max: usize,

    /// Most topics one websocket may subscribe to. Default 64: an overlay
    /// needs one, a dashboard a show.
    #[arg(long, env = "HOLDFAST_SUBSCRIPTIONS_MAX", default_value_t = 64)]
    pub subscriptions_max: usize,

    /// Largest inbound websocket frame / message in bytes. Default 4 096:
    /// the largest legitimate message (a 16-line cart) is well under 2 KiB.
    #[arg(long, env = "HOLDFAST_FRAME_BYTES_MAX", default_value_t = 4_096)]
    pub frame_bytes_max: usize,

    /// Largest HTTP request body in bytes. Default 16 384.
    #[arg(long, env = "HOLDFAST_BODY_BYTES_MAX", default_value_t = 16_384)]
    pub body_bytes_max: usize,

    /// Inbound websocket messages per second per viewer connection,
    /// control frames (ping, pong) included; burst: twice this. Default 50:
    /// an overlay subscribes once and pings now and then.
    #[arg(long, env = "HOLDFAST_MESSAGES_PER_SEC_MAX", default_value_t = 50)]
    pub messages_per_sec_max: u32,

    /// Inbound websocket messages per second on a checkout or admin
    /// connection (burst: twice this). Default 20 000: a checkout backend
    /// pipelines requests on a few connections (32 in flight at ~200 k
    /// reservations/s over 64 connections is ~6 000 messages/s each).
    #[arg(
        long,
        env = "HOLDFAST_CHECKOUT_MESSAGES_PER_SEC_MAX",
        default_value_t = 20_000
    )]
    pub checkout_messages_per_sec_max: u32,

    /// Requests one websocket may have in flight at once. Default 32.
    #[arg(long, env = "HOLDFAST_INFLIGHT_MAX", default_value_t = 32)]
    pub inflight_max: usize,

    /// Time allowed for an HTTP request head (and so the websocket
    /// handshake) from its first byte to its last, in ms. Default 10 000.
    #[arg(long, env = "HOLDFAST_HANDSHAKE_TIMEOUT_MS", default_value_t = 10_000)]
    pub handshake_timeout_ms: u64,

    /// A new connection must send the first byte of its first request
    /// within this many ms, or it is closed. Default 5 000: a browser or a
    /// checkout backend sends at once; connections opened and left silent
    /// (a flood, or a pool warming up too eagerly) must not hold the HTTP
    /// slots others need.
    #[arg(
        long,
        env = "HOLDFAST_HTTP_FIRST_REQUEST_TIMEOUT_MS",
        default_value_t = 5_000
    )]
    pub http_first_request_timeout_ms: u64,

    /// A keep-alive connection idle this long between requests is closed,
    /// in ms. Default 120 000: longer than common client pools keep idle
    /// connections (reqwest 90 s, nginx upstream 60 s), so a client never
    /// sends a request on a connection the server is closing.
    #[arg(
        long,
        env = "HOLDFAST_HTTP_KEEPALIVE_IDLE_TIMEOUT_MS",
        default_value_t = 120_000
    )]
    pub http_keepalive_idle_timeout_ms: u64,

    /// Longest one HTTP request may take from its complete head to its
    /// response (body upload included), in ms. Default 30 000: a durable
    /// write waits at most the Redis timeout (2 s); only a client that
    /// trickles its body takes longer.
    #[arg(
        long,
        env = "HOLDFAST_HTTP_REQUEST_TIMEOUT_MS",
        default_value_t = 30_000
    )]
    pub http_request_timeout_ms: u64,

    /// Most plain HTTP connections (websockets not counted once upgraded)
    /// from one source address. Default 256: a checkout backend's pool is
    /// far smaller, and one address can no longer take every slot. 0: no
    /// per-address limit.
    #[arg(
        long,
        env = "HOLDFAST_HTTP_CONNECTIONS_PER_SOURCE_MAX",
        default_value_t = 256
    )]
    pub http_connections_per_source_max: usize,

    /// Largest HTTP request head (request line and headers) in bytes.
    /// Default 16 384; larger heads get a 431 with a JSON body.
    #[arg(long, env = "HOLDFAST_HEADER_BYTES_MAX", default_value_t = 16_384)]
    pub header_bytes_max: usize,

    /// A websocket that sends nothing (no frame, no pong) for this long is
    /// closed, in ms. Default 60 000.
    #[arg(long, env = "HOLDFAST_IDLE_TIMEOUT_MS", default_value_t = 60_000)]
    pub idle_timeout_ms: u64,

    /// Interval of server pings, in ms. Default 20 000 (a third of the idle
    /// timeout, so two can be lost).
    #[arg(long, env = "HOLDFAST_PING_INTERVAL_MS", default_value_t = 20_000)]
    pub ping_interval_ms: u64,

    /// A websocket whose writes stall this long (the client stopped
    /// reading) is dropped as a slow consumer, in ms. Default 10 000.
    #[arg(long, env = "HOLDFAST_WRITE_TIMEOUT_MS", default_value_t = 10_000)]
    pub write_timeout_ms: u64,

    /// Most bytes buffered for one websocket before it is dropped as a slow
    /// consumer. Default 8 MiB: latest-value semantics buffer at most one
    /// round of frames (the largest is an `all` snapshot of a full catalog,
    /// about 250 bytes per SKU); a client that is not reading stalls the
    /// flush and is dropped by the write timeout long before.
    #[arg(long, env = "HOLDFAST_WRITE_BUFFER_BYTES_MAX", default_value_t = 8 << 20)]
    pub write_buffer_bytes_max: usize,

    /// Kernel send buffer per accepted socket, in bytes (SO_SNDBUF); 0 keeps
    /// the system default. Smaller bounds kernel memory per viewer and makes
    /// a stalled client visible sooner.
    #[arg(long, env = "HOLDFAST_SOCKET_SEND_BUFFER_BYTES", default_value_t = 0)]
    pub socket_send_buffer_bytes: usize,

    /// Hold table size (live holds). Default 262 144.
    #[arg(long, env = "HOLDFAST_HOLDS_MAX", default_value_t = 262_144)]
    pub holds_max: u32,

    /// Catalog size. Default 16 384 SKUs.
    #[arg(long, env = "HOLDFAST_SKUS_MAX", default_value_t = 16_384)]
    pub skus_max: u32,

    /// Distinct buyer ids remembered (for per-buyer limits and the order
    /// stream). Default 1 048 576.
    #[arg(long, env = "HOLDFAST_BUYERS_MAX", default_value_t = 1 << 20)]
    pub buyers_max: u32,

    /// Request ids remembered for idempotency, per generation. Default
    /// 262 144.
    #[arg(long, env = "HOLDFAST_REQUESTS_MAX", default_value_t = 262_144)]
    pub requests_max: u32,

    /// How long a request id is remembered, in ms (at least; at most twice).
    /// Default 600 000 (10 minutes).
    #[arg(long, env = "HOLDFAST_REQUEST_WINDOW_MS", default_value_t = 600_000)]
    pub request_window_ms: u64,

    /// How long an ended hold (committed, released, expired) stays
    /// findable with Redis, across restarts, in ms: `GET /api/holds/{id}`
    /// shows it and a repeated commit answers `already_committed`, never
    /// `hold_not_found`. Default 86 400 000 (a day: longer than any
    /// checkout retries). In memory, an ended hold stays findable until its
    /// slot in the hold table is reused (the least recently freed slot is
    /// reused first: at least `--holds-max` minus the live holds later).
    #[arg(
        long,
        env = "HOLDFAST_ENDED_HOLD_RETENTION_MS",
        default_value_t = 86_400_000
    )]
    pub ended_hold_retention_ms: u64,
}

/// Journal (Redis) bounds.
#[derive(Debug, Clone, Args)]
pub struct JournalArgs {
    /// Most events in one Redis batch (one MULTI/EXEC). Default 4 096.
    #[arg(long, env = "HOLDFAST_BATCH_SIZE_MAX", default_value_t = 4_096)]
    pub batch_size_max: usize,

    /// Longest a batch waits for more events before it is written, in
    /// microseconds. Default 0: while one batch is in flight the next one
    /// fills by itself (group commit without added latency); a small delay
    /// can help only at low, steady rates.
    #[arg(long, env = "HOLDFAST_BATCH_DELAY_MAX_US", default_value_t = 0)]
    pub batch_delay_max_us: u64,

    /// Engine event queue capacity (unwritten events). Default 262 144.
    #[arg(long, env = "HOLDFAST_EVENTS_MAX", default_value_t = 262_144)]
    pub events_max: usize,

    /// In async mode, most events not yet in Redis before new reservations
    /// are refused (503). Default 100 000.
    #[arg(long, env = "HOLDFAST_BACKLOG_MAX", default_value_t = 100_000)]
    pub backlog_max: usize,

    /// Approximate cap on the order stream's length (`XTRIM MAXLEN ~` after
    /// each batch's entries). Default
    /// 10 000 000: days of orders for a busy shop; size it so consumers
    /// always read entries before they are trimmed. 0: no cap.
    #[arg(long, env = "HOLDFAST_ORDERS_MAXLEN", default_value_t = 10_000_000)]
    pub orders_maxlen: usize,

    /// Timeout of one Redis command or batch, in ms. Default 2 000.
    #[arg(long, env = "HOLDFAST_REDIS_TIMEOUT_MS", default_value_t = 2_000)]
    pub redis_timeout_ms: u64,
}

impl Limits {
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }
    pub fn first_request_timeout(&self) -> Duration {
        Duration::from_millis(self.http_first_request_timeout_ms)
    }
    pub fn keepalive_idle_timeout(&self) -> Duration {
        Duration::from_millis(self.http_keepalive_idle_timeout_ms)
    }
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.http_request_timeout_ms)
    }
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }
    pub fn ping_interval(&self) -> Duration {
        Duration::from_millis(self.ping_interval_ms)
    }
    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms)
    }
}

impl ServeArgs {
    /// Checks combinations clap cannot.
    pub fn validate(&self) -> Result<(), String> {
        let l = &self.limits;
        if l.frame_bytes_max < 256 {
            return Err("--frame-bytes-max must be at least 256".into());
        }
        if l.write_buffer_bytes_max <= 8192 {
            return Err("--write-buffer-bytes-max must be above 8192".into());
        }
        if l.messages_per_sec_max == 0
            || l.checkout_messages_per_sec_max == 0
            || l.inflight_max == 0
            || l.subscriptions_max == 0
        {
            return Err("message rate, in-flight and subscription limits must be positive".into());
        }
        if l.header_bytes_max < 1024 {
            return Err("--header-bytes-max must be at least 1024".into());
        }
        let (admin, checkout) = self.tokens()?;
        if admin == checkout {
            return Err("the admin and checkout tokens must differ".into());
        }
        for origin in &self.cors_origins {
            crate::http::cors::parse_origin(origin)?;
        }
        if self.journal.backlog_max >= self.journal.events_max {
            return Err("--backlog-max must be below --events-max".into());
        }
        Ok(())
    }

    /// The admin and checkout tokens in force: the ones given, or with
    /// `--demo` the demo tokens for those not given. Without `--demo` both
    /// must be given and at least [`TOKEN_BYTES_MIN`] long: a server that
    /// starts with well-known tokens lets anyone sell its stock.
    pub fn tokens(&self) -> Result<(&str, &str), String> {
        fn pick<'a>(
            args: &ServeArgs,
            given: &'a Option<String>,
            demo: &'static str,
            flag: &str,
            env: &str,
        ) -> Result<&'a str, String> {
            match given {
                Some(t) if t.is_empty() => Err(format!("{flag} must not be empty")),
                Some(t) if !args.demo && !args.short_tokens_ok && t.len() < TOKEN_BYTES_MIN => Err(
                    format!("{flag} must be at least {TOKEN_BYTES_MIN} bytes (a random secret)"),
                ),
                Some(t) => Ok(t.as_str()),
                None if args.demo => Ok(demo),
                None => Err(format!(
                    "no {flag} given: set {flag} / {env} (at least {TOKEN_BYTES_MIN} random \
                     bytes), or pass --demo to run with the demo tokens"
                )),
            }
        }
        Ok((
            pick(
                self,
                &self.admin_token,
                DEMO_ADMIN_TOKEN,
                "--admin-token",
                "HOLDFAST_ADMIN_TOKEN",
            )?,
            pick(
                self,
                &self.checkout_token,
                DEMO_CHECKOUT_TOKEN,
                "--checkout-token",
                "HOLDFAST_CHECKOUT_TOKEN",
            )?,
        ))
    }

    /// Defaults for tests and embedding: in memory, port 0, the demo tokens
    /// given explicitly (the demo catalog is not loaded).
    pub fn for_tests() -> Self {
        let cli = Cli::parse_from([
            "holdfast",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-token",
            DEMO_ADMIN_TOKEN,
            "--checkout-token",
            DEMO_CHECKOUT_TOKEN,
        ]);
        match cli.command {
            Command::Serve(mut args) => {
                args.short_tokens_ok = true;
                args
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(extra: &[&str]) -> Result<ServeArgs, clap::Error> {
        let argv = ["holdfast", "serve"].iter().chain(extra).copied();
        Cli::try_parse_from(argv).map(|cli| match cli.command {
            Command::Serve(args) => args,
        })
    }

    #[test]
    fn workers_default_to_the_runtime_and_must_be_positive() {
        assert_eq!(serve(&[]).unwrap().workers, None);
        assert_eq!(serve(&["--workers", "1"]).unwrap().workers, Some(1));
        let refused = serve(&["--workers", "0"]).unwrap_err().to_string();
        assert!(refused.contains("--workers"), "{refused}");
    }
}
