//! `fanout`: idle viewers held per GiB of gateway RSS, and update delivery
//! latency and deliveries/s with N viewers on one SKU whose count changes U
//! times a second. Starts its own gateway (in memory) and its own client
//! worker processes; everything stops by itself.
//!
//! `cargo run --release -p holdfast-benches --bin fanout -- --help`

use anyhow::{Context, Result, bail};
use clap::Parser;
use holdfast_benches::fanout::{self, ChangeDriver, PhaseReport, WorkerConfig, WorkerLine};
use holdfast_benches::gateway_proc::{
    GatewayProcess, GatewaySpec, PerfRecord, default_gateway_bin, rss_kib,
};
use holdfast_benches::measure::{
    format_ns, format_rate, latency_histogram, other_process_cpu_split,
};
use serde::Serialize;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The SKU every viewer watches.
const SKU: &str = "fanout-sku";

/// Viewers per worker process at most: a process may hold 20 000 open
/// files here, and a worker needs a few for itself.
const VIEWERS_PER_WORKER_MAX: usize = 19_000;

/// Connections per source address at most: the ephemeral port range here
/// is 32768-60999 (28 232 ports per source and destination).
const VIEWERS_PER_SOURCE_MAX: usize = 25_000;

/// How long workers get to connect all their viewers.
const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// How long a worker gets to answer a report request.
const REPORT_TIMEOUT: Duration = Duration::from_secs(30);

/// Fan-out measurement of the holdfast gateway.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Idle viewers to connect, each subscribed to the one SKU (default
    /// 15 000: issue 3's figure; the gateway may hold 20 000 files).
    #[arg(long, env = "HOLDFAST_FANOUT_VIEWERS", default_value_t = 15_000,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    viewers: u32,

    /// Count changes per second, one measured phase each (default
    /// 10,50,100: the issue's two rates, then one past 1 M offered
    /// deliveries/s at 15 000 viewers).
    #[arg(long, env = "HOLDFAST_FANOUT_UPDATES_PER_SEC", value_delimiter = ',',
          default_values_t = [10u32, 50, 100],
          value_parser = clap::value_parser!(u32).range(1..=200))]
    updates_per_sec: Vec<u32>,

    /// Seconds of count changes per phase (default 10).
    #[arg(long, env = "HOLDFAST_FANOUT_PHASE_S", default_value_t = 10.0)]
    phase_s: f64,

    /// The gateway's `--broadcast-interval-ms` (default 5, its minimum: a
    /// round per change at up to 100 changes/s, so each change is delivered
    /// as its own update rather than coalesced).
    #[arg(long, env = "HOLDFAST_FANOUT_BROADCAST_INTERVAL_MS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(5..=10_000))]
    broadcast_interval_ms: u64,

    /// Client worker processes (default 0: as few as the open-file limit
    /// allows, i.e. one up to 19 000 viewers; each is single-threaded).
    #[arg(long, env = "HOLDFAST_FANOUT_WORKERS", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=16))]
    workers: u32,

    /// Loopback source addresses 127.0.0.2.. (default 0: as many as the
    /// ephemeral port range needs, at most 25 000 viewers each).
    #[arg(long, env = "HOLDFAST_FANOUT_SOURCE_ADDRS", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=200))]
    source_addrs: u32,

    /// Handshakes in flight per worker while connecting (default 128: well
    /// inside the gateway's accept backlog of 4 096).
    #[arg(long, env = "HOLDFAST_FANOUT_CONNECT_CONCURRENCY", default_value_t = 128,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    connect_concurrency: u32,

    /// Seconds to let the gateway settle before each RSS reading (default 2).
    #[arg(long, env = "HOLDFAST_FANOUT_SETTLE_S", default_value_t = 2.0)]
    settle_s: f64,

    /// The `holdfast` binary. Default: next to this executable.
    #[arg(long, env = "HOLDFAST_FANOUT_GATEWAY_BIN")]
    gateway_bin: Option<PathBuf>,

    /// Also write the results as JSON to this file.
    #[arg(long, env = "HOLDFAST_FANOUT_JSON")]
    json: Option<PathBuf>,

    /// Profile the gateway during each phase with `perf record` into this
    /// directory (`fanout-U.data`). A profiling run: perf's own cost shows
    /// in its figures.
    #[arg(long, env = "HOLDFAST_FANOUT_PERF_DIR")]
    perf_dir: Option<PathBuf>,

    /// Sampling frequency for `--perf-dir` (default 499 Hz).
    #[arg(long, env = "HOLDFAST_FANOUT_PERF_FREQ", default_value_t = 499)]
    perf_freq: u32,

    /// Extra `holdfast serve` flags, as one whitespace-separated string
    /// (experiments, e.g. `--gateway-args "--socket-send-buffer-bytes 4096"`).
    #[arg(long, env = "HOLDFAST_FANOUT_GATEWAY_ARGS", allow_hyphen_values = true)]
    gateway_args: Option<String>,

    /// Run the gateway under this command, as one whitespace-separated
    /// string (e.g. `--gateway-wrapper "valgrind --tool=massif
    /// --massif-out-file=/tmp/massif.out"` to see what an idle viewer
    /// allocates; use few viewers and `--updates-per-sec 1 --phase-s 1`).
    #[arg(
        long,
        env = "HOLDFAST_FANOUT_GATEWAY_WRAPPER",
        allow_hyphen_values = true
    )]
    gateway_wrapper: Option<String>,

    /// Measure the floor instead of the gateway: a minimal tokio fan-out
    /// server (this binary, `--floor-server`: fixed upgrade, encode once,
    /// one write per viewer per update, nothing else) with the same viewers
    /// and the same wire bytes. Shows what the machine itself allows.
    #[arg(long, env = "HOLDFAST_FANOUT_FLOOR")]
    floor: bool,

    #[arg(long, hide = true)]
    floor_server: bool,
    #[arg(long, hide = true)]
    worker: bool,
    #[arg(long, hide = true)]
    worker_addr: Option<SocketAddr>,
    #[arg(long, hide = true, value_delimiter = ',')]
    worker_sources: Vec<Ipv4Addr>,
}

#[derive(Debug, Serialize)]
struct PhaseResult {
    updates_per_sec: u32,
    /// Count changes the driver made, over how long (nominal), and how late
    /// its sends ran at worst.
    changes: u64,
    drive_s: f64,
    send_late_max_ms: f64,
    refused: u64,
    viewers: u64,
    updates_received: u64,
    deliveries_per_s: f64,
    /// Of changes × viewers.
    delivered_fraction: f64,
    gaps: u64,
    closed: u64,
    /// The gateway's own delivered-updates counter (not for the floor).
    gateway_counted: Option<f64>,
    p50_ns: u64,
    p99_ns: u64,
    p999_ns: u64,
    max_ns: u64,
    gateway_user_cores: f64,
    gateway_sys_cores: f64,
    client_user_cores: f64,
    client_sys_cores: f64,
    rss_after_kib: u64,
}

#[derive(Debug, Serialize)]
struct Report {
    server: String,
    viewers_asked: u32,
    viewers_connected: u64,
    connect_failures: std::collections::BTreeMap<String, u64>,
    connect_s: f64,
    workers: usize,
    source_addrs: usize,
    broadcast_interval_ms: u64,
    rss_base_kib: u64,
    rss_idle_kib: u64,
    kib_per_idle_viewer: f64,
    viewers_per_gib: f64,
    kernel_tcp_mem_kib_delta: i64,
    phases: Vec<PhaseResult>,
    load_avg: String,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let result = if args.worker {
        run_worker(&args)
    } else if args.floor_server {
        args.worker_addr
            .context("--worker-addr")
            .and_then(|addr| fanout::run_floor_server(addr, &format!("sku:{SKU}")))
    } else {
        run(&args)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fanout: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_worker(args: &Args) -> Result<()> {
    let cfg = WorkerConfig {
        addr: args.worker_addr.context("--worker-addr")?,
        viewers: args.viewers as usize,
        sources: args.worker_sources.clone(),
        topic: format!("sku:{SKU}"),
        connect_concurrency: args.connect_concurrency as usize,
        phases: args.updates_per_sec.len(),
    };
    fanout::run_worker(&cfg)
}

/// A worker process and its line channel.
struct Worker {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Worker {
    fn send(&mut self, command: &str) -> Result<()> {
        writeln!(self.stdin, "{command}")?;
        self.stdin.flush()?;
        Ok(())
    }

    fn expect(&mut self, timeout: Duration) -> Result<WorkerLine> {
        let line = self
            .lines
            .recv_timeout(timeout)
            .context("worker did not answer (see its stderr above)")?;
        serde_json::from_str(&line).with_context(|| format!("bad worker line {line:?}"))
    }

    fn cpu(&self) -> (f64, f64) {
        other_process_cpu_split(self.child.id()).unwrap_or((0.0, 0.0))
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // `quit`, then our own child by its handle if it lingers.
        let _ = self.send("quit");
        holdfast_testkit::stop_child(&mut self.child, Duration::from_secs(5));
    }
}

fn spawn_worker(
    args: &Args,
    addr: SocketAddr,
    viewers: usize,
    sources: &[Ipv4Addr],
) -> Result<Worker> {
    let exe = std::env::current_exe()?;
    let rates: Vec<String> = args.updates_per_sec.iter().map(u32::to_string).collect();
    let sources: Vec<String> = sources.iter().map(Ipv4Addr::to_string).collect();
    let mut child = Command::new(exe)
        .arg("--worker")
        .args(["--worker-addr", &addr.to_string()])
        .args(["--viewers", &viewers.to_string()])
        .args(["--worker-sources", &sources.join(",")])
        .args(["--updates-per-sec", &rates.join(",")])
        .args([
            "--connect-concurrency",
            &args.connect_concurrency.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("spawning a worker")?;
    let stdin = child.stdin.take().context("worker stdin")?;
    let stdout = child.stdout.take().context("worker stdout")?;
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Ok(Worker {
        child,
        stdin,
        lines,
    })
}

/// What the viewers connect to, and how its count is changed.
enum Server {
    /// The real gateway, changed by reserves over a checkout websocket
    /// (boxed: one value per run, and the variants differ in size).
    Gateway(Box<(GatewayProcess, ChangeDriver)>),
    /// The floor server, changed by `tick` lines on its stdin.
    Floor(FloorProcess),
}

impl Server {
    fn pid(&self) -> u32 {
        match self {
            Self::Gateway(g) => g.0.pid(),
            Self::Floor(f) => f.child.id(),
        }
    }

    fn addr(&self) -> SocketAddr {
        match self {
            Self::Gateway(g) => g.0.addr(),
            Self::Floor(f) => f.addr,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Self::Gateway(..) => "holdfast gateway",
            Self::Floor(_) => "floor server (minimal tokio fan-out)",
        }
    }

    fn rss_kib(&self) -> Result<u64> {
        rss_kib(self.pid())
    }

    /// The gateway's own count of delivered updates (`None` for the floor).
    fn counted(&self) -> Result<Option<f64>> {
        match self {
            Self::Gateway(g) => g.0.metric("holdfast_ws_updates_delivered_total").map(Some),
            Self::Floor(_) => Ok(None),
        }
    }

    fn drive(&mut self, per_sec: u32, changes: u64) -> Result<fanout::DriveStats> {
        match self {
            Self::Gateway(g) => g.1.drive(per_sec, changes),
            Self::Floor(f) => f.drive(per_sec, changes),
        }
    }
}

/// The floor server as a child process.
struct FloorProcess {
    child: Child,
    stdin: ChildStdin,
    addr: SocketAddr,
}

impl FloorProcess {
    fn start() -> Result<Self> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, holdfast_testkit::try_free_port()?));
        let mut child = Command::new(std::env::current_exe()?)
            .args(["--floor-server", "--worker-addr", &addr.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawning the floor server")?;
        let stdin = child.stdin.take().context("floor stdin")?;
        let mut stdout = BufReader::new(child.stdout.take().context("floor stdout")?);
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        anyhow::ensure!(line.trim() == "ready", "floor server said {line:?}");
        Ok(Self { child, stdin, addr })
    }

    /// One `tick` per change, on schedule (open loop, like the gateway's
    /// driver).
    fn drive(&mut self, per_sec: u32, changes: u64) -> Result<fanout::DriveStats> {
        let mut stats = fanout::DriveStats::default();
        let started = Instant::now();
        for i in 0..changes {
            let due = started + Duration::from_secs_f64(i as f64 / f64::from(per_sec));
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let late = Instant::now().duration_since(due);
            stats.send_late_max_ms = stats.send_late_max_ms.max(late.as_secs_f64() * 1e3);
            writeln!(self.stdin, "tick")?;
            self.stdin.flush()?;
            stats.changes += 1;
        }
        stats.drive_s = started.elapsed().as_secs_f64();
        Ok(stats)
    }
}

impl Drop for FloorProcess {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.stdin.flush();
        holdfast_testkit::stop_child(&mut self.child, Duration::from_secs(5));
    }
}

/// Kernel TCP buffer memory in use, system-wide (`/proc/net/sockstat`,
/// pages → KiB): not in any process's RSS, so reported beside it.
fn kernel_tcp_mem_kib() -> i64 {
    let text = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    let pages: i64 = text
        .lines()
        .find(|l| l.starts_with("TCP:"))
        .and_then(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let i = words.iter().position(|w| *w == "mem")?;
            words.get(i + 1)?.parse().ok()
        })
        .unwrap_or(0);
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as i64;
    pages * page / 1024
}

fn load_avg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn run(args: &Args) -> Result<()> {
    anyhow::ensure!(
        (1.0..=120.0).contains(&args.phase_s),
        "--phase-s must be 1..=120"
    );
    anyhow::ensure!(
        (0.0..=60.0).contains(&args.settle_s),
        "--settle-s must be 0..=60"
    );
    let _ = holdfast_sys::raise_nofile();
    let viewers = args.viewers as usize;
    let workers_n = match args.workers as usize {
        0 => viewers.div_ceil(VIEWERS_PER_WORKER_MAX),
        n => n,
    };
    anyhow::ensure!(
        viewers.div_ceil(workers_n) <= VIEWERS_PER_WORKER_MAX,
        "more than {VIEWERS_PER_WORKER_MAX} viewers per worker: raise --workers"
    );
    let sources_n = match args.source_addrs as usize {
        0 => viewers.div_ceil(VIEWERS_PER_SOURCE_MAX),
        n => n,
    };
    // 127.0.0.2 and up: 127.0.0.1 stays the gateway's own address.
    let sources: Vec<Ipv4Addr> = (0..sources_n)
        .map(|i| Ipv4Addr::new(127, 0, 0, 2 + i as u8))
        .collect();

    let mut server = if args.floor {
        Server::Floor(FloorProcess::start()?)
    } else {
        start_gateway(args, viewers)?
    };
    let settle = Duration::from_secs_f64(args.settle_s);
    std::thread::sleep(settle);
    let rss_base = server.rss_kib()?;
    let kmem_base = kernel_tcp_mem_kib();

    eprintln!(
        "fanout: {} pid {} on {}, RSS {rss_base} KiB; connecting {viewers} viewers from {workers_n} worker(s), {sources_n} source address(es)",
        server.name(),
        server.pid(),
        server.addr()
    );
    let mut workers = Vec::with_capacity(workers_n);
    for w in 0..workers_n {
        let share = viewers / workers_n + usize::from(w < viewers % workers_n);
        // Each worker gets its own slice of the source addresses when there
        // are enough, else all of them.
        let mine: Vec<Ipv4Addr> = if sources.len() >= workers_n {
            sources.iter().skip(w).step_by(workers_n).copied().collect()
        } else {
            sources.clone()
        };
        workers.push(spawn_worker(args, server.addr(), share, &mine)?);
    }
    let (mut connected, mut connect_s) = (0u64, 0f64);
    let mut failures = std::collections::BTreeMap::new();
    for worker in &mut workers {
        match worker.expect(READY_TIMEOUT)? {
            WorkerLine::Ready {
                connected: c,
                failed,
                connect_s: s,
            } => {
                connected += c;
                connect_s = connect_s.max(s);
                for (code, n) in failed {
                    *failures.entry(code).or_default() += n;
                }
            }
            other => bail!("expected ready, got {other:?}"),
        }
    }
    eprintln!("fanout: {connected} viewers connected in {connect_s:.1} s, failures {failures:?}");
    anyhow::ensure!(connected > 0, "no viewer connected");
    std::thread::sleep(settle);
    let rss_idle = server.rss_kib()?;
    let kmem_idle = kernel_tcp_mem_kib();
    let kib_per_viewer = (rss_idle as f64 - rss_base as f64) / connected as f64;

    let mut phases = Vec::new();
    for (k, &rate) in args.updates_per_sec.iter().enumerate() {
        eprintln!("fanout: phase {k}: {rate} changes/s for {} s", args.phase_s);
        phases.push(run_phase(
            args,
            &mut server,
            &mut workers,
            k,
            rate,
            connected,
        )?);
    }
    let report = Report {
        server: server.name().to_string(),
        viewers_asked: args.viewers,
        viewers_connected: connected,
        connect_failures: failures,
        connect_s,
        workers: workers_n,
        source_addrs: sources_n,
        broadcast_interval_ms: args.broadcast_interval_ms,
        rss_base_kib: rss_base,
        rss_idle_kib: rss_idle,
        kib_per_idle_viewer: kib_per_viewer,
        viewers_per_gib: if kib_per_viewer > 0.0 {
            1024.0 * 1024.0 / kib_per_viewer
        } else {
            f64::INFINITY
        },
        kernel_tcp_mem_kib_delta: kmem_idle - kmem_base,
        phases,
        load_avg: load_avg(),
    };
    drop(workers);
    drop(server);
    print!("{}", render(&report));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn split_words(text: Option<&str>) -> Vec<String> {
    text.unwrap_or("")
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Starts the gateway (in memory), creates the SKU, connects the driver.
fn start_gateway(args: &Args, viewers: usize) -> Result<Server> {
    let gateway = GatewayProcess::start(&GatewaySpec {
        bin: args.gateway_bin.clone().unwrap_or_else(default_gateway_bin),
        redis: None,
        args: vec![
            "--broadcast-interval-ms".into(),
            args.broadcast_interval_ms.to_string(),
            "--ws-connections-max".into(),
            (viewers + 16).to_string(),
            // The change driver sends up to 200 reserves a second on one
            // connection (viewers send nothing after subscribing).
            "--messages-per-sec-max".into(),
            "1000".into(),
        ]
        .into_iter()
        .chain(split_words(args.gateway_args.as_deref()))
        .collect(),
        wrapper: split_words(args.gateway_wrapper.as_deref()),
    })?;
    // Room for every change of the longest run (one unit reserved each).
    let body = format!(r#"{{"id":"{SKU}","title":"fan-out","total":100000}}"#);
    let (status, reply) = gateway.admin("POST", "/api/admin/skus", &body)?;
    if status != 201 {
        bail!("creating the SKU: {status} {reply}");
    }
    let driver = ChangeDriver::connect(gateway.addr(), gateway.checkout_token(), SKU)?;
    Ok(Server::Gateway(Box::new((gateway, driver))))
}

fn run_phase(
    args: &Args,
    server: &mut Server,
    workers: &mut [Worker],
    k: usize,
    rate: u32,
    viewers: u64,
) -> Result<PhaseResult> {
    let pid = server.pid();
    let cpu = |workers: &[Worker]| {
        let gw = other_process_cpu_split(pid).unwrap_or((0.0, 0.0));
        let clients = workers
            .iter()
            .map(Worker::cpu)
            .fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
        (gw, clients)
    };
    let counted_before = server.counted()?;
    for w in workers.iter_mut() {
        w.send(&format!("phase {k}"))?;
    }
    let perf = match &args.perf_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            Some(PerfRecord::attach(
                pid,
                &dir.join(format!("fanout-{rate}.data")),
                args.phase_s,
                args.perf_freq,
            )?)
        }
        None => None,
    };
    let (cpu_gw0, cpu_cl0) = cpu(workers);
    let started = Instant::now();
    let changes_n = (f64::from(rate) * args.phase_s).round() as u64;
    let drive = server.drive(rate, changes_n)?;
    // Deliveries are counted over the nominal phase (changes / rate); the
    // driver's own lateness is reported beside it.
    let drive_s = changes_n as f64 / f64::from(rate);
    std::thread::sleep(Duration::from_millis(500 + 4 * args.broadcast_interval_ms));
    let (cpu_gw1, cpu_cl1) = cpu(workers);
    let cpu_s = started.elapsed().as_secs_f64();
    for w in workers.iter_mut() {
        w.send("idle")?;
    }
    if let Some(perf) = perf {
        perf.finish()?;
    }
    let counted_after = server.counted()?;
    let mut hist = latency_histogram();
    let mut total = PhaseReport::default();
    for w in workers.iter_mut() {
        w.send(&format!("report {k}"))?;
        match w.expect(REPORT_TIMEOUT)? {
            WorkerLine::Report(r) => {
                hist.add(fanout::decode_hist(&r.hist)?)
                    .map_err(|e| anyhow::anyhow!("merging histograms: {e:?}"))?;
                total.updates += r.updates;
                total.gaps += r.gaps;
                total.bytes += r.bytes;
                total.closed += r.closed;
            }
            other => bail!("expected a report, got {other:?}"),
        }
    }
    Ok(PhaseResult {
        updates_per_sec: rate,
        changes: drive.changes,
        drive_s,
        send_late_max_ms: drive.send_late_max_ms,
        refused: drive.refused,
        viewers,
        updates_received: total.updates,
        deliveries_per_s: total.updates as f64 / drive_s,
        delivered_fraction: total.updates as f64 / (changes_n * viewers).max(1) as f64,
        gaps: total.gaps,
        closed: total.closed,
        gateway_counted: counted_after.zip(counted_before).map(|(a, b)| a - b),
        p50_ns: hist.value_at_quantile(0.50),
        p99_ns: hist.value_at_quantile(0.99),
        p999_ns: hist.value_at_quantile(0.999),
        max_ns: hist.max(),
        gateway_user_cores: (cpu_gw1.0 - cpu_gw0.0) / cpu_s,
        gateway_sys_cores: (cpu_gw1.1 - cpu_gw0.1) / cpu_s,
        client_user_cores: (cpu_cl1.0 - cpu_cl0.0) / cpu_s,
        client_sys_cores: (cpu_cl1.1 - cpu_cl0.1) / cpu_s,
        rss_after_kib: server.rss_kib()?,
    })
}

fn render(r: &Report) -> String {
    let mut out = String::new();
    let mib = |kib: u64| kib as f64 / 1024.0;
    out.push_str(&format!(
        "fan-out through the {}: {} viewers on sku:{SKU} ({} connected in {:.1} s, failures {:?}), {} worker process(es), {} source address(es), broadcast every {} ms, load average {}\n",
        r.server,
        r.viewers_asked,
        r.viewers_connected,
        r.connect_s,
        r.connect_failures,
        r.workers,
        r.source_addrs,
        r.broadcast_interval_ms,
        r.load_avg
    ));
    out.push_str(&format!(
        "idle memory: server RSS {:.1} MiB -> {:.1} MiB = {:.2} KiB per idle viewer = {:.0} viewers per GiB (kernel TCP buffers, both ends, not in RSS: {:+.1} MiB)\n\n",
        mib(r.rss_base_kib),
        mib(r.rss_idle_kib),
        r.kib_per_idle_viewer,
        r.viewers_per_gib,
        r.kernel_tcp_mem_kib_delta as f64 / 1024.0
    ));
    let header = [
        "changes/s",
        "deliveries/s",
        "delivered",
        "gaps",
        "p50",
        "p99",
        "p99.9",
        "max",
        "server cores usr+sys",
        "client cores usr+sys",
        "RSS after",
    ];
    let rows: Vec<[String; 11]> = r
        .phases
        .iter()
        .map(|p| {
            [
                p.updates_per_sec.to_string(),
                format_rate(p.deliveries_per_s),
                format!("{:.2} %", 100.0 * p.delivered_fraction),
                p.gaps.to_string(),
                format_ns(p.p50_ns),
                format_ns(p.p99_ns),
                format_ns(p.p999_ns),
                format_ns(p.max_ns),
                format!("{:.2}+{:.2}", p.gateway_user_cores, p.gateway_sys_cores),
                format!("{:.2}+{:.2}", p.client_user_cores, p.client_sys_cores),
                format!("{:.1} MiB", mib(p.rss_after_kib)),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |out: &mut String, cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{}{c}", " ".repeat(w - c.chars().count())))
            .collect();
        out.push_str(&padded.join("  "));
        out.push('\n');
    };
    line(&mut out, header.to_vec());
    for row in &rows {
        line(&mut out, row.iter().map(String::as_str).collect());
    }
    out.push_str(
        "\nlatency: receipt − frame ts_ms (server clock at build, ms resolution), every update of every viewer; \
         delivered: updates received / (changes × viewers); gaps: updates a viewer skipped (fell behind)\n",
    );
    for p in &r.phases {
        out.push_str(&format!(
            "{}/s: {} changes over {:.2} s (sends at most {:.1} ms late, {} refused), {} updates received, gateway counted {}, {} viewers closed\n",
            p.updates_per_sec,
            p.changes,
            p.drive_s,
            p.send_late_max_ms,
            p.refused,
            p.updates_received,
            p.gateway_counted
                .map_or("-".to_string(), |c| format!("{c:.0}")),
            p.closed
        ));
    }
    out
}
