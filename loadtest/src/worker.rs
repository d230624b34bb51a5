//! One worker: runs its share of the viewers, bursts and arrivals, and
//! returns what it measured. The coordinator runs one in-process, or
//! several as child processes (`--worker`, plan on stdin, JSON lines on
//! stdout) when one process's open-file limit or one core is not enough.
//!
//! Owns the schedule (open-model arrivals, the burst barrier), the
//! in-flight bound, the generator's own health measures (event-loop lag,
//! schedule lag, CPU) and the end of the run. Never talks to the admin API:
//! host actions are the coordinator's.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{Barrier, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::client::http::HttpPool;
use crate::client::net::Dialer;
use crate::client::ws::{WsConnector, WsPool};
use crate::client::{CallLimits, Checkout};
use crate::config::Protocol;
use crate::ctx::{Ctx, Node};
use crate::plan::{Clock, Control, Progress, Report, Rng, WorkerPlan};
use crate::roles::buyer::{Buyer, Origin};
use crate::roles::viewer;
use crate::scenario::{Encoding, arrival_times};
use crate::stats::{Recorder, Stats};

/// Health probe period: the probe asks to wake every 10 ms and records how
/// late it woke.
const PROBE_PERIOD: Duration = Duration::from_millis(10);
/// Progress reports per second to the coordinator.
const PROGRESS_PERIOD: Duration = Duration::from_millis(250);

/// Runs a worker's share; returns its stats when the run is over.
pub async fn run(
    plan: WorkerPlan,
    mut control: mpsc::Receiver<Control>,
    progress: mpsc::Sender<Progress>,
) -> Stats {
    let cpu0 = cpu_ms();
    let clock = Clock::new(plan.start_unix_ms);
    let recorder = Recorder::new(Stats::new(
        plan.scenario.bursts.len(),
        plan.scenario.skus.len(),
    ));
    let limits = CallLimits {
        timeout: Duration::from_millis(plan.request_timeout_ms),
    };
    let nodes = plan
        .targets
        .iter()
        .map(|t| Node {
            target: t.clone(),
            dialer: Arc::new(Dialer::new(t.addr, plan.sources.clone())),
            connector: Arc::new(WsConnector::new(
                Dialer::new(t.addr, plan.sources.clone()),
                t.clone(),
                limits.timeout,
                plan.connect_concurrency_max,
                recorder.clone(),
            )),
        })
        .collect();
    let sku_index = plan
        .scenario
        .skus
        .iter()
        .enumerate()
        .map(|(i, k)| (k.id.clone(), i as u16))
        .collect();
    let ctx = Arc::new(Ctx {
        plan,
        clock,
        recorder: recorder.clone(),
        nodes,
        limits,
        end: CancellationToken::new(),
        sku_index,
        frames: AtomicU64::new(0),
        viewers_live: AtomicU64::new(0),
        inflight: AtomicUsize::new(0),
    });
    let end_at = ctx.clock.at(ctx.plan.scenario.duration_s);
    let tasks = TaskTracker::new();

    tasks.spawn(probe(ctx.clone()));
    tasks.spawn(report_progress(ctx.clone(), progress));
    tasks.spawn(viewers(ctx.clone(), tasks.clone()));
    let barriers = bursts(&ctx, &tasks);
    tasks.spawn(arrivals(ctx.clone(), tasks.clone()));

    // Fire bursts when told, until the end.
    let mut fired = vec![false; barriers.len()];
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(end_at.into()) => break,
            c = control.recv() => match c {
                Some(Control::Fire(b)) if b < barriers.len() && !fired[b] => {
                    fired[b] = true;
                    let barrier = barriers[b].clone();
                    tokio::spawn(async move { barrier.wait().await; });
                }
                Some(Control::Fire(_)) => {}
                Some(Control::Stop) | None => break,
            },
        }
    }
    ctx.end.cancel();
    // Unfired bursts: release the waiting buyers so they can finish (they
    // see the end and do not send).
    for (b, barrier) in barriers.iter().enumerate() {
        if !fired[b] {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
            });
        }
    }
    tasks.close();
    // Requests in flight get their timeout to finish; then we stop waiting.
    let grace = ctx.limits.timeout + Duration::from_secs(2);
    if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
        ctx.recorder.add("generator.tasks_cut", 1);
        tracing::warn!(
            "worker {}: tasks still running {grace:?} after the end",
            ctx.plan.index
        );
    }
    let mut stats = recorder.take();
    stats.cpu_ms = cpu_ms().saturating_sub(cpu0);
    stats.wall_ms = Instant::now()
        .saturating_duration_since(ctx.clock.start)
        .as_millis() as u64;
    stats.threads = ctx.plan.threads as u64;
    stats.rss_bytes = rss_max_bytes();
    stats.workers = 1;
    stats
}

/// Measures how late a 10 ms timer fires: when this grows, every latency
/// this process measures is inflated by the same amount.
async fn probe(ctx: Arc<Ctx>) {
    let mut next = Instant::now() + PROBE_PERIOD;
    loop {
        tokio::select! {
            _ = ctx.end.cancelled() => return,
            _ = tokio::time::sleep_until(next.into()) => {}
        }
        let late = Instant::now().saturating_duration_since(next);
        ctx.recorder
            .with(|s| s.record("loop_lag", late.as_micros() as u64));
        next = Instant::now() + PROBE_PERIOD;
    }
}

async fn report_progress(ctx: Arc<Ctx>, tx: mpsc::Sender<Progress>) {
    loop {
        let stop = tokio::select! {
            _ = ctx.end.cancelled() => true,
            _ = tokio::time::sleep(PROGRESS_PERIOD) => false,
        };
        let mut p = ctx.recorder.with(|s| Progress {
            reserve_ok: s.count("reserve.ok"),
            reserve_refused: s.count("reserve.error.sold_out")
                + s.count("reserve.error.not_open")
                + s.count("reserve.error.limit_exceeded"),
            errors: 0,
            commits: s.count("commit.ok"),
            viewers: 0,
            frames: 0,
            connect_failed: s.sum_prefix("connections.failed."),
            reserve_p99_ms: ctx
                .clock
                .second_of(Instant::now())
                .checked_sub(1)
                .and_then(|sec| s.series.get(sec as usize))
                .and_then(|b| b.reserve.as_ref())
                .map_or(0.0, |h| h.q_ms(0.99)),
            schedule_lag_p99_ms: s.hist("schedule_lag").map_or(0.0, |h| h.q_ms(0.99)),
        });
        p.errors = ctx.recorder.with(|s| {
            s.sum_prefix("reserve.error.")
                + s.sum_prefix("commit.error.")
                + s.sum_prefix("release.error.")
        }) - p.reserve_refused;
        // Relaxed: display-only counters.
        p.viewers = ctx.viewers_live.load(Ordering::Relaxed);
        let second = ctx.clock.second_of(Instant::now());
        if Instant::now() >= ctx.clock.start {
            ctx.recorder.with(|s| {
                let sec = s.second(second);
                sec.viewers = sec.viewers.max(p.viewers);
            });
        }
        p.frames = ctx.frames.load(Ordering::Relaxed);
        if tx.try_send(p).is_err() || stop {
            // A full channel means the coordinator is busy; skip a report
            // rather than queue stale ones.
            if stop {
                return;
            }
        }
    }
}

/// Starts this worker's viewers, spread over `connect_over_s`.
async fn viewers(ctx: Arc<Ctx>, tasks: TaskTracker) {
    let spec = &ctx.plan.scenario.viewers;
    let binary = spec.encoding == Encoding::Binary;
    let total = spec.count as u64;
    for v in (0..total).filter(|&v| ctx.plan.mine(v)) {
        let at = ctx
            .clock
            .at(spec.connect_over_s * v as f64 / total.max(1) as f64);
        tokio::select! {
            _ = ctx.end.cancelled() => return,
            _ = tokio::time::sleep_until(at.into()) => {}
        }
        tasks.spawn(viewer::run(ctx.clone(), binary, v));
    }
}

/// Connects this worker's burst buyers now and parks them on one barrier
/// per burst; returns the barriers (each has one extra party: the release).
fn bursts(ctx: &Arc<Ctx>, tasks: &TaskTracker) -> Vec<Arc<Barrier>> {
    let s = &ctx.plan.scenario;
    let mut barriers = Vec::new();
    for (b, spec) in s.bursts.iter().enumerate() {
        let mine: Vec<u64> = (0..spec.buyers as u64)
            .filter(|&j| ctx.plan.mine(j))
            .collect();
        let barrier = Arc::new(Barrier::new(mine.len() + 1));
        barriers.push(barrier.clone());
        let lines: Vec<(String, u32)> = s
            .burst_lines(spec)
            .into_iter()
            .map(|l| (l, s.buyer.qty))
            .collect();
        ctx.recorder
            .with(|st| st.bursts[b].buyers += mine.len() as u64);
        for j in mine {
            let (ctx, barrier, lines) = (ctx.clone(), barrier.clone(), lines.clone());
            // Buyer numbers of bursts live above arrivals' (which count up
            // from 0), so request ids never collide.
            let number = (1 << 40) + ((b as u64) << 32) + j;
            tasks.spawn(async move {
                let checkout = connect_checkout(&ctx, ctx.node(j), 1).await;
                barrier.wait().await;
                let due = Instant::now();
                if ctx.end.is_cancelled() {
                    return;
                }
                let Some(checkout) = checkout else {
                    ctx.recorder.with(|st| {
                        st.bursts[b].errors += 1;
                        st.add("reserve.error.connect", 1);
                    });
                    return;
                };
                ctx.recorder.with(|st| st.bursts[b].fired += 1);
                Buyer {
                    n: number,
                    lines,
                    origin: Origin::Burst(b),
                    due,
                }
                .run(ctx.clone(), &checkout)
                .await;
                close_checkout(checkout).await;
            });
        }
    }
    barriers
}

/// A checkout client of `node` for the run's protocol: `size`
/// connections, opened now.
async fn connect_checkout(ctx: &Ctx, node: &Node, size: usize) -> Option<Checkout> {
    let token = ctx.plan.checkout_token.clone();
    match ctx.plan.scenario.protocol() {
        Protocol::Http => {
            let pool = HttpPool::new(
                size,
                node.dialer.clone(),
                node.target.authority.clone(),
                token,
                ctx.recorder.clone(),
            );
            pool.warm(size.min(64)).await;
            Some(Checkout::Http(Arc::new(pool)))
        }
        p @ (Protocol::WsJson | Protocol::WsBinary) => {
            let binary = p == Protocol::WsBinary;
            if size == 1 {
                node.connector
                    .session(&token, binary)
                    .await
                    .ok()
                    .map(Checkout::Ws)
            } else {
                let pool = WsPool::new(size, node.connector.clone(), token, binary);
                pool.warm().await;
                Some(Checkout::WsPool(Arc::new(pool)))
            }
        }
    }
}

async fn close_checkout(c: Checkout) {
    match c {
        Checkout::Ws(s) => s.close().await,
        Checkout::WsPool(p) => p.close().await,
        Checkout::Http(_) => {}
    }
}

/// Open-model arrivals: each one starts at its scheduled time whatever
/// happened to the ones before, up to the in-flight bound.
async fn arrivals(ctx: Arc<Ctx>, tasks: TaskTracker) {
    let s = &ctx.plan.scenario;
    if s.arrivals.is_empty() {
        return;
    }
    // One pool per node, the pool size shared among them.
    let per_node = ctx.plan.pool_size.div_ceil(ctx.nodes.len()).max(1);
    let mut pools = Vec::with_capacity(ctx.nodes.len());
    for node in &ctx.nodes {
        match connect_checkout(&ctx, node, per_node).await {
            Some(c) => pools.push(Arc::new(c)),
            None => return,
        }
    }
    let pools = Arc::new(pools);
    let mut schedulers = Vec::new();
    for (e, spec) in s.arrivals.iter().enumerate() {
        let (ctx, pools, tasks) = (ctx.clone(), pools.clone(), tasks.clone());
        let spec = spec.clone();
        schedulers.push(tokio::spawn(async move {
            let mut rng = Rng::new(ctx.plan.seed ^ ((e as u64) << 48));
            for (k, t) in arrival_times(&spec).enumerate() {
                let k = k as u64;
                // Every worker draws the same SKU sequence and keeps its own
                // arrivals, so the mix does not depend on the worker count.
                let picks: Vec<usize> = pick(&mut rng, spec.skus.len(), spec.cart_size as usize);
                if !ctx.plan.mine(k) {
                    continue;
                }
                let due = ctx.clock.at(t);
                tokio::select! {
                    _ = ctx.end.cancelled() => return,
                    _ = tokio::time::sleep_until(due.into()) => {}
                }
                let lag = Instant::now().saturating_duration_since(due);
                ctx.recorder
                    .with(|s| s.record("schedule_lag", lag.as_micros() as u64));
                // Relaxed: the bound is approximate by nature; no data hangs on it.
                if ctx.inflight.load(Ordering::Relaxed) >= ctx.plan.inflight_max {
                    ctx.recorder.add("generator.dropped_arrivals", 1);
                    continue;
                }
                ctx.inflight.fetch_add(1, Ordering::Relaxed);
                let lines = picks
                    .iter()
                    .map(|&i| (spec.skus[i].clone(), ctx.plan.scenario.buyer.qty))
                    .collect();
                let (ctx2, checkout) = (
                    ctx.clone(),
                    pools[(k % pools.len() as u64) as usize].clone(),
                );
                let number = ((e as u64) << 34) + k;
                tasks.spawn(async move {
                    Buyer {
                        n: number,
                        lines,
                        origin: Origin::Arrival,
                        due,
                    }
                    .run(ctx2.clone(), &checkout)
                    .await;
                    ctx2.inflight.fetch_sub(1, Ordering::Relaxed);
                });
            }
        }));
    }
    for s in schedulers {
        let _ = s.await;
    }
    // Let the buyers still paying finish before closing the shared connections.
    ctx.end.cancelled().await;
    while ctx.inflight.load(Ordering::Relaxed) > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if let Ok(pools) = Arc::try_unwrap(pools) {
        for p in pools {
            if let Ok(c) = Arc::try_unwrap(p) {
                close_checkout(c).await;
            }
        }
    }
}

/// `n` distinct indices out of `len`.
fn pick(rng: &mut Rng, len: usize, n: usize) -> Vec<usize> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n.min(len) {
        let i = rng.range(0, len as u64 - 1) as usize;
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

/// User + system CPU time of this process, in ms.
pub fn cpu_ms() -> u64 {
    u64::try_from(holdfast_sys::process_usage().cpu.as_millis()).unwrap_or(u64::MAX)
}

/// Peak resident memory of this process, in bytes.
pub fn rss_max_bytes() -> u64 {
    holdfast_sys::process_usage().rss_max_bytes
}

/// Entry point of a worker process: reads the plan (first stdin line) and
/// control lines, writes progress and the final stats as JSON lines.
pub async fn child_main() -> anyhow::Result<()> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let first = lines
        .next_line()
        .await?
        .ok_or_else(|| anyhow::anyhow!("worker: no plan on stdin"))?;
    let plan: WorkerPlan = serde_json::from_str(&first)?;
    crate::preflight::raise_nofile();
    let (ctl_tx, ctl_rx) = mpsc::channel(16);
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            match serde_json::from_str::<Control>(&line) {
                Ok(c) => {
                    if ctl_tx.send(c).await.is_err() {
                        return;
                    }
                }
                Err(e) => tracing::warn!("worker: bad control line: {e}"),
            }
        }
        // The coordinator went away: stop.
        let _ = ctl_tx.send(Control::Stop).await;
    });
    let (p_tx, mut p_rx) = mpsc::channel::<Progress>(4);
    let mut out = tokio::io::stdout();
    let writer = tokio::spawn(async move {
        let mut out2 = tokio::io::stdout();
        while let Some(p) = p_rx.recv().await {
            let line = serde_json::to_string(&Report::Progress(p)).expect("serialises") + "\n";
            if out2.write_all(line.as_bytes()).await.is_err() {
                return;
            }
            let _ = out2.flush().await;
        }
    });
    let stats = run(plan, ctl_rx, p_tx).await;
    let _ = writer.await;
    let line = serde_json::to_string(&Report::Done(Box::new(stats)))? + "\n";
    out.write_all(line.as_bytes()).await?;
    out.flush().await?;
    Ok(())
}
