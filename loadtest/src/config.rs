//! Command-line flags: the one `clap` parser of `holdfast-loadtest`.
//!
//! Owns every knob and every limit of a run, each with its default and the
//! reason for it. It never does I/O: [`crate::run`] turns a [`Cli`] into a
//! run.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use serde::{Deserialize, Serialize};

/// How buyers talk to the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// Websocket, JSON text frames (what browsers send).
    WsJson,
    /// Websocket, postcard binary subprotocol (what native clients send).
    WsBinary,
    /// HTTP/1.1 with keep-alive, one request in flight per connection.
    Http,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::WsJson => "ws-json",
            Protocol::WsBinary => "ws-binary",
            Protocol::Http => "http",
        }
    }
}

/// Gateway persistence mode, passed through to `holdfast serve` on `--spawn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Persistence {
    Durable,
    Async,
}

/// An inclusive range of TCP ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

/// Parses `FIRST-LAST` (or one port).
pub fn parse_port_range(s: &str) -> Result<PortRange, String> {
    let port = |p: &str| {
        p.trim()
            .parse::<u16>()
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| format!("{p:?} is not a port (1-65535)"))
    };
    let (first, last) = match s.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => (port(s)?, port(s)?),
    };
    if first > last {
        return Err(format!("{s}: the first port is above the last"));
    }
    Ok(PortRange { first, last })
}

/// Pre-event load tester for holdfast: drives viewers and buyers at a
/// gateway, then audits the inventory.
///
/// Latency is measured from each request's intended send time (the burst's
/// release, the arrival's scheduled time), not from when it left: a
/// stalled client cannot hide a slow server.
///
/// Exit codes, the first that applies: 2 bad usage (before any load);
/// 1 could not run (target unreachable, pre-flight refused: tokens, Redis,
/// sold-out SKUs); 130 interrupted; 4 the audit failed (oversell, lost
/// state or inconsistent counts); 1 every request failed; 5 the results
/// are invalid (the load generator was the bottleneck); 3 a threshold was
/// breached; 0 pass. See docs/LOADTEST.md.
#[derive(Debug, Clone, Parser)]
#[command(name = "holdfast-loadtest", version, about, long_about)]
pub struct Cli {
    /// Scenario file (TOML). Without it, a single drop is built from
    /// `--viewers`, `--burst`, `--stock`, `--rate` and `--duration-s`.
    #[arg(long, short = 's', env = "HOLDFAST_LOADTEST_SCENARIO")]
    pub scenario: Option<PathBuf>,

    /// Gateway to test, `http://host:port` (plain HTTP; websockets go to
    /// `ws://host:port/ws`). Repeat it (or give a comma list) for the nodes
    /// of a multi-node deployment: viewers and buyers spread over them
    /// round robin; the first takes the admin calls, the sampler and the
    /// audit. Ignored with `--spawn`.
    #[arg(
        long = "target",
        env = "HOLDFAST_LOADTEST_TARGET",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:8080"
    )]
    pub targets: Vec<String>,

    /// Allow a target outside 127.0.0.0/8 and ::1. Off by default so that a
    /// typo never turns a rehearsal into a load test of someone else's server.
    #[arg(long, env = "HOLDFAST_LOADTEST_ALLOW_REMOTE")]
    pub allow_remote: bool,

    /// Start a holdfast gateway as a child process on a free loopback port
    /// for a self-contained run, and stop it at the end.
    #[arg(long, env = "HOLDFAST_LOADTEST_SPAWN")]
    pub spawn: bool,

    /// Ports a spawned gateway may listen on, `FIRST-LAST` (e.g.
    /// `18080-18089` where a firewall or a dashboard expects one); the first
    /// free one is taken. Default: any free port.
    #[arg(long, env = "HOLDFAST_LOADTEST_SPAWN_PORTS", value_parser = parse_port_range)]
    pub spawn_ports: Option<PortRange>,

    /// Gateway binary for `--spawn`. Default: `holdfast` next to this
    /// executable (where cargo puts both).
    #[arg(long, env = "HOLDFAST_LOADTEST_GATEWAY_BIN")]
    pub gateway_bin: Option<PathBuf>,

    /// Seconds to wait for a spawned gateway's `/readyz` (default 30: a
    /// recovery from a large Redis state takes a few seconds).
    #[arg(
        long,
        env = "HOLDFAST_LOADTEST_SPAWN_READY_TIMEOUT_S",
        default_value_t = 30
    )]
    pub spawn_ready_timeout_s: u64,

    /// Persistence mode for a spawned gateway (needs `--redis`).
    #[arg(long, env = "HOLDFAST_LOADTEST_PERSISTENCE", value_enum)]
    pub persistence: Option<Persistence>,

    /// Redis URL. With `--spawn` the gateway journals to it; in every case the
    /// audit reads SKU hashes, live holds and the order stream from it.
    #[arg(long, env = "HOLDFAST_LOADTEST_REDIS")]
    pub redis: Option<String>,

    /// Key prefix of the gateway's Redis layout (default `hf`, as the gateway's).
    #[arg(long, env = "HOLDFAST_LOADTEST_REDIS_PREFIX", default_value = "hf")]
    pub redis_prefix: String,

    /// Admin bearer token (creates SKUs, runs host actions): the gateway's
    /// `--admin-token`. Default: `demo-admin`, what `holdfast serve --demo`
    /// uses when no token is set. Generated for `--spawn`.
    #[arg(
        long,
        env = "HOLDFAST_LOADTEST_ADMIN_TOKEN",
        default_value = "demo-admin",
        hide_env_values = true
    )]
    pub admin_token: String,

    /// Checkout bearer token (buyers): the gateway's `--checkout-token`.
    /// Default: `demo-checkout`, what `holdfast serve --demo` uses when no
    /// token is set. Generated for `--spawn`.
    #[arg(
        long,
        env = "HOLDFAST_LOADTEST_CHECKOUT_TOKEN",
        default_value = "demo-checkout",
        hide_env_values = true
    )]
    pub checkout_token: String,

    /// Buyer protocol; overrides the scenario's `protocol` (default ws-binary).
    #[arg(long, env = "HOLDFAST_LOADTEST_PROTOCOL", value_enum)]
    pub protocol: Option<Protocol>,

    /// Viewer count; overrides the scenario (flag-built default 100).
    #[arg(long, env = "HOLDFAST_LOADTEST_VIEWERS")]
    pub viewers: Option<u32>,

    /// Buyers per drop burst; overrides every burst of the scenario
    /// (flag-built default 100).
    #[arg(long, env = "HOLDFAST_LOADTEST_BURST")]
    pub burst: Option<u32>,

    /// Units of the drop SKU in a flag-built scenario (default 50, so a
    /// burst of 100 sells out).
    #[arg(long, env = "HOLDFAST_LOADTEST_STOCK", default_value_t = 50)]
    pub stock: u32,

    /// Constant arrival rate (reservations per second) after the drop;
    /// overrides the rate of every constant executor of the scenario.
    #[arg(long, env = "HOLDFAST_LOADTEST_RATE")]
    pub rate: Option<f64>,

    /// Run length in seconds; overrides the scenario (flag-built default 10).
    #[arg(long, env = "HOLDFAST_LOADTEST_DURATION_S")]
    pub duration_s: Option<f64>,

    /// Worker processes. 0 (default) picks the fewest the pre-flight needs
    /// (open files per process); more spreads CPU over cores.
    #[arg(long, env = "HOLDFAST_LOADTEST_WORKERS", default_value_t = 0)]
    pub workers: u32,

    /// Worker processes at most (default 16: beyond that the coordinator's
    /// merge and the machine's cores are the limit, not file descriptors).
    #[arg(long, env = "HOLDFAST_LOADTEST_WORKERS_MAX", default_value_t = 16)]
    pub workers_max: u32,

    /// Runtime threads per process (default 1: one core per worker keeps the
    /// CPU-starvation check simple and, with `--spawn`, leaves the other
    /// core to the gateway; use `--workers` to scale out).
    #[arg(long, env = "HOLDFAST_LOADTEST_THREADS", default_value_t = 1)]
    pub threads: usize,

    /// Source addresses 127.0.0.1..=127.0.0.N for a loopback target. 0
    /// (default) picks as many as the ephemeral port range needs.
    #[arg(long, env = "HOLDFAST_LOADTEST_SOURCE_ADDRS", default_value_t = 0)]
    pub source_addrs: u32,

    /// Connections at most per run (default 200,000: ten processes at the
    /// 20,000 open files a process may hold here).
    #[arg(
        long,
        env = "HOLDFAST_LOADTEST_CONNECTIONS_MAX",
        default_value_t = 200_000
    )]
    pub connections_max: u64,

    /// Websocket / TCP handshakes in flight at once per worker (default
    /// 256: more overflows the server's accept backlog and turns into 1 s SYN
    /// retransmits that look like server latency).
    #[arg(
        long,
        env = "HOLDFAST_LOADTEST_CONNECT_CONCURRENCY_MAX",
        default_value_t = 256
    )]
    pub connect_concurrency_max: usize,

    /// Buyer flows in flight at once per worker for open-model arrivals
    /// (default 50,000). An arrival beyond it is dropped and counted, and the
    /// run is marked invalid, as k6 does when it runs out of VUs.
    #[arg(long, env = "HOLDFAST_LOADTEST_INFLIGHT_MAX", default_value_t = 50_000)]
    pub inflight_max: usize,

    /// Request timeout in milliseconds (default 10,000: far above any
    /// acceptable latency, so a timeout means something is stuck).
    #[arg(
        long,
        env = "HOLDFAST_LOADTEST_REQUEST_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub request_timeout_ms: u64,

    /// Threshold like k6's, repeatable: `reserve.p99<50ms`, `errors.rate<0.1%`,
    /// `fanout.p99<=200ms`, `soldout.all_seen<2s`. A breach exits with 3.
    #[arg(
        long = "threshold",
        short = 't',
        env = "HOLDFAST_LOADTEST_THRESHOLDS",
        value_delimiter = ','
    )]
    pub thresholds: Vec<String>,

    /// Write the machine-readable report here.
    #[arg(long, env = "HOLDFAST_LOADTEST_OUT")]
    pub out: Option<PathBuf>,

    /// Write a self-contained HTML report with SVG charts here.
    #[arg(long, env = "HOLDFAST_LOADTEST_HTML")]
    pub html: Option<PathBuf>,

    /// Serve the tester's live figures as OpenMetrics on this address
    /// (`GET /metrics`, e.g. `127.0.0.1:9464`) for Prometheus and Grafana
    /// while the run goes. Default: off.
    #[arg(long, env = "HOLDFAST_LOADTEST_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,

    /// Write the per-second series (offered, holds, refusals, errors,
    /// commits, releases, reserve p50/p99 in ms) here as CSV.
    #[arg(long, env = "HOLDFAST_LOADTEST_CSV")]
    pub csv: Option<PathBuf>,

    /// A previous `--out` report; the summary shows each figure's change.
    #[arg(long, env = "HOLDFAST_LOADTEST_BASELINE")]
    pub baseline: Option<PathBuf>,

    /// Step the load (burst sizes and arrival rates) up until a threshold
    /// breaks; report the highest level that held as headroom.
    #[arg(long, env = "HOLDFAST_LOADTEST_FIND_CAPACITY")]
    pub find_capacity: bool,

    /// Capacity search: factor between levels (default 1.5).
    #[arg(long, env = "HOLDFAST_LOADTEST_CAPACITY_STEP", default_value_t = 1.5)]
    pub capacity_step: f64,

    /// Capacity search: highest load factor tried (default 16x the plan).
    #[arg(long, env = "HOLDFAST_LOADTEST_CAPACITY_MAX", default_value_t = 16.0)]
    pub capacity_max: f64,

    /// Capacity search: runs of each level (default 3). A level holds only
    /// if it held every time; the report gives the spread. One run is noise
    /// on a shared machine.
    #[arg(long, env = "HOLDFAST_LOADTEST_CAPACITY_REPEATS", default_value_t = 3)]
    pub capacity_repeats: u32,

    /// Capacity search: bisection steps between the last level that held and
    /// the first that broke (default 2).
    #[arg(long, env = "HOLDFAST_LOADTEST_CAPACITY_REFINE", default_value_t = 2)]
    pub capacity_refine: u32,

    /// Generator health: event-loop and schedule lag p99 above this many ms
    /// marks the results invalid (default 25: a 10 ms timer that wakes
    /// 25 ms late means latencies are the generator's, not the server's).
    #[arg(
        long,
        env = "HOLDFAST_LOADTEST_HEALTH_LAG_MAX_MS",
        default_value_t = 25
    )]
    pub health_lag_max_ms: u64,

    /// Generator health: CPU use per runtime thread above this fraction marks
    /// the results invalid (default 0.95).
    #[arg(long, env = "HOLDFAST_LOADTEST_HEALTH_CPU_MAX", default_value_t = 0.95)]
    pub health_cpu_max: f64,

    /// Generator health: a drop burst whose send times spread wider than
    /// this many ms is not a burst (default 50); the run is marked invalid.
    #[arg(
        long,
        env = "HOLDFAST_LOADTEST_BURST_SPREAD_MAX_MS",
        default_value_t = 50
    )]
    pub burst_spread_max_ms: u64,

    /// Stock sampling interval in ms for the stock-over-time chart (default
    /// 250: two requests a second to the read API is noise to the server).
    #[arg(
        long,
        env = "HOLDFAST_LOADTEST_SAMPLE_INTERVAL_MS",
        default_value_t = 250
    )]
    pub sample_interval_ms: u64,

    /// Audit: seconds at most to wait after the run for abandoned holds to
    /// expire and the Redis journal to catch up (default 30).
    #[arg(long, env = "HOLDFAST_LOADTEST_AUDIT_WAIT_MAX_S", default_value_t = 30)]
    pub audit_wait_max_s: u64,

    /// Audit: holds looked up one by one (`GET /api/holds/{hold}`) at most
    /// (default 500: a sample over every outcome, without hammering the API).
    #[arg(long, env = "HOLDFAST_LOADTEST_AUDIT_HOLDS_MAX", default_value_t = 500)]
    pub audit_holds_max: usize,

    /// Audit: order-stream entries read at most (default 2,000,000).
    #[arg(
        long,
        env = "HOLDFAST_LOADTEST_AUDIT_STREAM_MAX",
        default_value_t = 2_000_000
    )]
    pub audit_stream_max: usize,

    /// Holds remembered per worker for the audit (default 1,000,000, about
    /// 100 MB); later ones are counted but not audited one by one.
    #[arg(
        long,
        env = "HOLDFAST_LOADTEST_HOLDS_TRACKED_MAX",
        default_value_t = 1_000_000
    )]
    pub holds_tracked_max: usize,

    /// Seed of the buyers' random choices (commit or abandon, pay delay).
    #[arg(long, env = "HOLDFAST_LOADTEST_SEED", default_value_t = 0x5eed)]
    pub seed: u64,

    /// Reuse the scenario's SKU ids as they are instead of suffixing a run
    /// id (needed to test a catalog loaded from a file; repeated runs then
    /// share stock).
    #[arg(long, env = "HOLDFAST_LOADTEST_FIXED_IDS")]
    pub fixed_ids: bool,

    /// No progress bar (it is hidden anyway when stderr is not a terminal).
    #[arg(long, short = 'q', env = "HOLDFAST_LOADTEST_QUIET")]
    pub quiet: bool,

    /// Internal: run as a worker process of a coordinator (plan on stdin).
    #[arg(long, hide = true, env = "HOLDFAST_LOADTEST_WORKER")]
    pub worker: bool,
}
