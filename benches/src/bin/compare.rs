//! `compare`: runs the same flash-sale workload against a bare CAS, the
//! holdfast engine in-process, the Redis-Lua baseline (unpipelined and
//! pipelined, on a private redis-server it starts and stops) and the real
//! gateway end to end over websocket (in memory, and durable on a private
//! redis-server), and prints one table. `--json FILE` also writes the rows
//! for machines.
//!
//! `cargo run --release -p holdfast-benches --bin compare -- --help`

use anyhow::{Context, Result};
use clap::Parser;
use holdfast_benches::compare::{self, Row, Workload};
use serde::Serialize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Flash-sale comparison: holdfast engine and gateway vs a bare CAS vs
/// Redis-Lua.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Concurrent clients in every row (default 64: a busy checkout tier's
    /// connection pool).
    #[arg(long, env = "HOLDFAST_COMPARE_CLIENTS", default_value_t = 64,
          value_parser = clap::value_parser!(u16).range(1..=4096))]
    clients: u16,

    /// Measured seconds per row (default 5: long enough to average out a
    /// noisy shared machine, short enough for the whole run to take ~30 s).
    #[arg(long, env = "HOLDFAST_COMPARE_DURATION_S", default_value_t = 5.0)]
    duration_s: f64,

    /// Unmeasured warm-up seconds before each row (default 1).
    #[arg(long, env = "HOLDFAST_COMPARE_WARMUP_S", default_value_t = 1.0)]
    warmup_s: f64,

    /// Units per drop; a sold-out drop is replaced or restocked (default
    /// 1 000 000; at most the engine's per-SKU bound).
    #[arg(long, env = "HOLDFAST_COMPARE_DROP_UNITS", default_value_t = 1_000_000,
          value_parser = clap::value_parser!(u32).range(10_000..=2_097_151))]
    drop_units: u32,

    /// OS threads for the in-process rows (default 2: the machine's cores).
    #[arg(long, env = "HOLDFAST_COMPARE_ENGINE_THREADS", default_value_t = 2,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    engine_threads: u16,

    /// Reserves per round trip in the pipelined Redis row (default 32, as
    /// redis-benchmark -P 32).
    #[arg(long, env = "HOLDFAST_COMPARE_PIPELINE", default_value_t = 32,
          value_parser = clap::value_parser!(u16).range(2..=1024))]
    pipeline: u16,

    /// Time one in-process pair in this many (default 16: the two clock
    /// reads then cost about 3 ns per pair on average).
    #[arg(long, env = "HOLDFAST_COMPARE_SAMPLE_EVERY", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    sample_every: u32,

    /// Tokio worker threads driving the Redis clients (default 1: the other
    /// core is redis-server's).
    #[arg(long, env = "HOLDFAST_COMPARE_REDIS_CLIENT_THREADS", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    redis_client_threads: u16,

    /// The redis-server binary to start (a private one, on a free port).
    #[arg(
        long,
        env = "HOLDFAST_COMPARE_REDIS_SERVER",
        default_value = "redis-server"
    )]
    redis_server: String,

    /// The `holdfast` gateway binary for the end-to-end rows. Default:
    /// `holdfast` next to this executable (build it with `cargo build
    /// --release -p holdfast-gateway`).
    #[arg(long, env = "HOLDFAST_COMPARE_GATEWAY_BIN")]
    gateway_bin: Option<PathBuf>,

    /// Requests in flight per websocket in the pipelined gateway rows
    /// (default 32: the gateway's default `--inflight-max`, passed to it).
    #[arg(long, env = "HOLDFAST_COMPARE_GATEWAY_WINDOW", default_value_t = 32,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    gateway_window: u16,

    /// Tokio worker threads driving the websocket clients (default 1: the
    /// gateway needs the other core).
    #[arg(long, env = "HOLDFAST_COMPARE_WS_CLIENT_THREADS", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    ws_client_threads: u16,

    /// Profile the gateway during each gateway row with `perf record`
    /// (cpu-clock, DWARF call graphs) into this directory, one file per row.
    /// A profiling run: perf's own cost shows in the figures.
    #[arg(long, env = "HOLDFAST_COMPARE_PERF_DIR")]
    perf_dir: Option<PathBuf>,

    /// Extra `holdfast serve` flags for every gateway row, as one
    /// whitespace-separated string (experiments, e.g.
    /// `--gateway-args "--batch-delay-max-us 100"`); they come after the
    /// row's own flags, so they win.
    #[arg(
        long,
        env = "HOLDFAST_COMPARE_GATEWAY_ARGS",
        allow_hyphen_values = true
    )]
    gateway_args: Option<String>,

    /// Only run rows whose name contains this (e.g. "engine"); several
    /// alternatives separated by `|` (e.g. "unpipelined|durable": the
    /// baseline and the durable rows, so their ratios are of one run).
    #[arg(long, env = "HOLDFAST_COMPARE_ONLY")]
    only: Option<String>,

    /// Also write the rows as JSON to this file.
    #[arg(long, env = "HOLDFAST_COMPARE_JSON")]
    json: Option<PathBuf>,
}

#[derive(Serialize)]
struct Report<'a> {
    workload: &'a Workload,
    cores: usize,
    rows: &'a [Row],
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("compare: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn seconds(s: f64, what: &str) -> Result<Duration> {
    // Bounded: a row is a benchmark, not a soak test.
    anyhow::ensure!((0.0..=600.0).contains(&s), "{what} must be 0..=600 seconds");
    Ok(Duration::from_secs_f64(s))
}

fn run(args: Args) -> Result<()> {
    let workload = Workload {
        clients: args.clients.into(),
        drop_units: args.drop_units,
        duration: seconds(args.duration_s, "--duration-s")?,
        warmup: seconds(args.warmup_s, "--warmup-s")?,
        engine_threads: args.engine_threads.into(),
        pipeline: args.pipeline.into(),
        sample_every: args.sample_every,
        redis_client_threads: args.redis_client_threads.into(),
        redis_server: args.redis_server,
        gateway_bin: args
            .gateway_bin
            .unwrap_or_else(holdfast_benches::gateway_proc::default_gateway_bin),
        gateway_window: args.gateway_window.into(),
        ws_client_threads: args.ws_client_threads.into(),
        perf_dir: args.perf_dir,
        gateway_args: args
            .gateway_args
            .as_deref()
            .unwrap_or("")
            .split_whitespace()
            .map(str::to_string)
            .collect(),
    };
    anyhow::ensure!(
        workload.duration > Duration::ZERO,
        "--duration-s must be positive"
    );
    let wanted = |name: &str| {
        args.only
            .as_deref()
            .is_none_or(|o| o.split('|').any(|alt| name.contains(alt)))
    };
    let mut rows = Vec::new();
    for mut target in compare::targets(&workload) {
        let name = target.name();
        if !wanted(&name) {
            continue;
        }
        tracing::info!(row = %name, "running");
        rows.push(match target.run(&workload) {
            Ok(m) => Row::measured(target.as_ref(), &m),
            Err(e) => {
                tracing::error!(row = %name, "failed: {e:#}");
                Row::unmeasured(&name, target.is_baseline(), format!("failed: {e:#}"))
            }
        });
    }
    compare::fill_ratios(&mut rows);
    print!("{}", compare::render(&rows, &workload));
    if let Some(path) = &args.json {
        let cores = std::thread::available_parallelism().map_or(0, usize::from);
        let report = Report {
            workload: &workload,
            cores,
            rows: &rows,
        };
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
