//! The coordinator: one run of a scenario from SKU creation to merged stats.
//!
//! Owns the run's timeline (host actions, then the bursts due at the same
//! time), the worker processes (or the one in-process worker), the stock
//! sampler and the progress bar. It starts every worker on one shared
//! wall-clock start time and stops them all at the end, on Ctrl-C, or when a
//! worker dies. It never judges the results ([`crate::audit`] and
//! [`crate::report`] do).

use std::net::IpAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::client::http::Api;
use crate::client::net::Target;
use crate::openmetrics::Live;
use crate::plan::{Clock, Control, Progress, Report as WorkerMsg, WorkerPlan, unix_us};
use crate::progress::Bar;
use crate::roles::host::{self, HostEvent, StockSeries};
use crate::scenario::Scenario;
use crate::stats::Stats;

/// Settings shared by every run of one invocation (capacity search runs
/// several).
pub struct Env {
    /// Every gateway of the deployment; the first takes the admin calls.
    pub targets: Vec<Target>,
    pub api: Arc<Api>,
    pub checkout_token: String,
    pub workers: u32,
    pub sources: Vec<IpAddr>,
    pub pool_per_worker: usize,
    pub threads: usize,
    pub connect_concurrency_max: usize,
    pub inflight_max: usize,
    pub request_timeout_ms: u64,
    pub holds_tracked_max: usize,
    pub sample_interval: Duration,
    pub fixed_ids: bool,
    /// `(url, prefix)` of `--redis`: the journal must show the SKUs created.
    pub redis: Option<(String, String)>,
    pub seed: u64,
    pub quiet: bool,
    /// Cancelled on Ctrl-C / SIGTERM.
    pub interrupt: CancellationToken,
    /// What `--metrics-listen` serves, updated every tick.
    pub live: Live,
}

/// What one run produced, before judging.
pub struct Outcome {
    /// The scenario as run (ids suffixed, load scaled).
    pub scenario: Scenario,
    pub stats: Stats,
    pub stock: Vec<StockSeries>,
    pub host: Vec<HostEvent>,
    pub started_unix_ms: u64,
    pub interrupted: bool,
}

/// A running worker: where to send control lines and how to get its stats.
struct Handle {
    control: mpsc::Sender<Control>,
    done: tokio::task::JoinHandle<anyhow::Result<Stats>>,
}

/// Time between the last worker starting and t = 0: workers connect
/// viewers from t = 0, so they must all be up by then.
fn lead(workers: u32) -> Duration {
    if workers <= 1 {
        Duration::from_millis(300)
    } else {
        Duration::from_millis(1500)
    }
}

/// Runs `base` once (its ids suffixed unless fixed) and returns the merged stats.
pub async fn run_once(env: &Env, base: &Scenario) -> anyhow::Result<Outcome> {
    let run_id = format!(
        "{:x}",
        (unix_us() ^ (std::process::id() as u64) << 20) & 0xff_ffff
    );
    let scenario = if env.fixed_ids {
        base.clone()
    } else {
        base.with_id_suffix(&format!("-{run_id}"))
    };
    let start_unix_ms = unix_us() / 1000 + lead(env.workers).as_millis() as u64 + 200;

    // SKUs that exist from the start are created before any worker starts.
    for spec in scenario.skus.iter().filter(|k| k.create_at_s.is_none()) {
        host::create(&env.api, spec, start_unix_ms, env.fixed_ids)
            .await
            .with_context(|| format!("creating SKU {} through the admin API", spec.id))?;
    }
    if let (Some((url, prefix)), Some(first)) = (
        &env.redis,
        scenario.skus.iter().find(|k| k.create_at_s.is_none()),
    ) {
        crate::target::journal_has(url, prefix, &first.id)
            .await
            .context("pre-flight")?;
    }

    let progress: Arc<Mutex<Vec<Progress>>> =
        Arc::new(Mutex::new(vec![Progress::default(); env.workers as usize]));
    let mut handles = Vec::new();
    for index in 0..env.workers {
        let plan = WorkerPlan {
            index,
            count: env.workers,
            run_id: run_id.clone(),
            targets: env.targets.clone(),
            // Every worker rotates over every source address: ports are per
            // (source, destination), shared by all processes alike.
            sources: env.sources.clone(),
            checkout_token: env.checkout_token.clone(),
            scenario: scenario.clone(),
            start_unix_ms,
            threads: env.threads,
            connect_concurrency_max: env.connect_concurrency_max,
            inflight_max: env.inflight_max,
            request_timeout_ms: env.request_timeout_ms,
            holds_tracked_max: env.holds_tracked_max,
            pool_size: env.pool_per_worker,
            seed: env.seed ^ (index as u64) << 56,
        };
        let h = if env.workers == 1 {
            in_process(plan, progress.clone())
        } else {
            child(plan, progress.clone()).await?
        };
        handles.push(h);
    }

    let clock = Clock::new(start_unix_ms);
    let end = clock.at(scenario.duration_s);
    let stop = CancellationToken::new();
    let host_log = Arc::new(Mutex::new(Vec::new()));
    let controls: Vec<mpsc::Sender<Control>> = handles.iter().map(|h| h.control.clone()).collect();
    let timeline = tokio::spawn(timeline(
        env.api.clone(),
        scenario.clone(),
        clock,
        controls.clone(),
        host_log.clone(),
        stop.clone(),
        env.fixed_ids,
        start_unix_ms,
    ));
    let sampler = tokio::spawn(sample(
        env.api.clone(),
        scenario.skus.iter().map(|k| k.id.clone()).collect(),
        clock,
        env.sample_interval,
        stop.clone(),
    ));
    let bar = Bar::new(env.quiet, &scenario);

    // Wait for the end, an interrupt, or a worker that died early.
    let mut interrupted = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(end.into()) => break,
            _ = env.interrupt.cancelled() => { interrupted = true; break }
            _ = tokio::time::sleep(Duration::from_millis(250)) => {
                let total = progress.lock().unwrap_or_else(|p| p.into_inner()).iter().fold(Progress::default(), |mut a, p| { a.add(p); a });
                let t_s = Instant::now().saturating_duration_since(clock.start).as_secs_f64();
                bar.update(t_s, &total);
                {
                    let mut live = env.live.lock().unwrap_or_else(|p| p.into_inner());
                    live.progress = total;
                    live.t_s = t_s;
                    live.phase = crate::progress::phase_at(&scenario, t_s);
                }
                if handles.iter().any(|h| h.done.is_finished()) && Instant::now() < end {
                    tracing::error!("a worker stopped before the end of the run; stopping the others");
                    interrupted = true;
                    break;
                }
            }
        }
    }
    bar.finish();
    env.live.lock().unwrap_or_else(|p| p.into_inner()).runs_done += 1;
    stop.cancel();
    for c in &controls {
        let _ = c.send(Control::Stop).await;
    }
    // Close every control channel: a worker process sees EOF on stdin and
    // can exit without a read pending.
    drop(controls);
    let _ = timeline.await;
    let mut stats = Stats::new(scenario.bursts.len(), scenario.skus.len());
    stats.workers = 0;
    let wait = Duration::from_millis(env.request_timeout_ms) + Duration::from_secs(10);
    let dones: Vec<_> = handles.into_iter().map(|h| h.done).collect();
    for (i, done) in dones.into_iter().enumerate() {
        match tokio::time::timeout(wait, done).await {
            Ok(Ok(Ok(s))) => stats.merge(&s),
            Ok(Ok(Err(e))) => anyhow::bail!("worker {i} failed: {e:#}"),
            Ok(Err(e)) => anyhow::bail!("worker {i} panicked: {e}"),
            Err(_) => anyhow::bail!("worker {i} did not report within {wait:?} after the end"),
        }
    }
    let stock = sampler.await.unwrap_or_default();
    let host = std::mem::take(&mut *host_log.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(Outcome {
        scenario,
        stats,
        stock,
        host,
        started_unix_ms: start_unix_ms,
        interrupted,
    })
}

fn in_process(plan: WorkerPlan, progress: Arc<Mutex<Vec<Progress>>>) -> Handle {
    let (ctl_tx, ctl_rx) = mpsc::channel(16);
    let (p_tx, mut p_rx) = mpsc::channel::<Progress>(4);
    tokio::spawn(async move {
        while let Some(p) = p_rx.recv().await {
            progress.lock().unwrap_or_else(|p| p.into_inner())[0] = p;
        }
    });
    let done = tokio::spawn(async move { Ok(crate::worker::run(plan, ctl_rx, p_tx).await) });
    Handle {
        control: ctl_tx,
        done,
    }
}

async fn child(plan: WorkerPlan, progress: Arc<Mutex<Vec<Progress>>>) -> anyhow::Result<Handle> {
    let exe = std::env::current_exe().context("locating this executable to start workers")?;
    let index = plan.index as usize;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("--worker")
        .arg("--threads")
        .arg(plan.threads.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let mut proc = cmd.spawn().context("starting a worker process")?;
    let mut stdin = proc.stdin.take().expect("piped");
    let stdout = proc.stdout.take().expect("piped");
    stdin
        .write_all((serde_json::to_string(&plan)? + "\n").as_bytes())
        .await?;
    let (ctl_tx, mut ctl_rx) = mpsc::channel::<Control>(16);
    tokio::spawn(async move {
        while let Some(c) = ctl_rx.recv().await {
            let line = serde_json::to_string(&c).expect("serialises") + "\n";
            if stdin.write_all(line.as_bytes()).await.is_err() || stdin.flush().await.is_err() {
                return;
            }
        }
    });
    let done = tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        let mut result = None;
        while let Some(line) = lines.next_line().await? {
            match serde_json::from_str::<WorkerMsg>(&line) {
                Ok(WorkerMsg::Progress(p)) => {
                    progress.lock().unwrap_or_else(|p| p.into_inner())[index] = p
                }
                Ok(WorkerMsg::Done(s)) => result = Some(*s),
                Err(e) => tracing::warn!("worker {index}: unreadable line ({e}): {:.80}", line),
            }
        }
        let status = proc.wait().await?;
        result.ok_or_else(|| anyhow::anyhow!("worker {index} exited ({status}) without a report"))
    });
    Ok(Handle {
        control: ctl_tx,
        done,
    })
}

/// Host actions and bursts in time order; at equal times host actions go
/// first, and a burst fires only after the actions before it were answered.
#[allow(clippy::too_many_arguments)]
async fn timeline(
    api: Arc<Api>,
    s: Scenario,
    clock: Clock,
    controls: Vec<mpsc::Sender<Control>>,
    log: Arc<Mutex<Vec<HostEvent>>>,
    stop: CancellationToken,
    fixed_ids: bool,
    start_unix_ms: u64,
) {
    enum Ev {
        Create(usize),
        Host(usize),
        Burst(usize),
    }
    let mut evs: Vec<(f64, u8, Ev)> = Vec::new();
    for (i, k) in s.skus.iter().enumerate() {
        if let Some(t) = k.create_at_s {
            evs.push((t, 0, Ev::Create(i)));
        }
    }
    evs.extend(
        s.host
            .iter()
            .enumerate()
            .map(|(i, h)| (h.at_s, 1, Ev::Host(i))),
    );
    evs.extend(
        s.bursts
            .iter()
            .enumerate()
            .map(|(i, b)| (b.at_s, 2, Ev::Burst(i))),
    );
    evs.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    for (at, _, ev) in evs {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(clock.at(at).into()) => {}
        }
        match ev {
            Ev::Burst(b) => {
                for c in &controls {
                    let _ = c.send(Control::Fire(b)).await;
                }
            }
            Ev::Create(i) | Ev::Host(i) => {
                let started = Instant::now();
                let (action, sku, qty, r) = match ev {
                    Ev::Create(_) => (
                        "create".to_string(),
                        s.skus[i].id.clone(),
                        Some(s.skus[i].total),
                        host::create(&api, &s.skus[i], start_unix_ms, fixed_ids).await,
                    ),
                    _ => (
                        s.host[i].action.clone(),
                        s.host[i].sku.clone(),
                        s.host[i].qty,
                        host::act(&api, &s.host[i]).await,
                    ),
                };
                if let Err(e) = &r {
                    tracing::warn!("host action {action} {sku} at {at}s failed: {e}");
                }
                log.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(HostEvent {
                        at_s: at,
                        action,
                        sku,
                        qty,
                        ok: r.is_ok(),
                        error: r.err().map(|e| e.to_string()),
                        latency_ms: started.elapsed().as_secs_f64() * 1000.0,
                    });
            }
        }
    }
}

/// Samples the run's SKUs every `every` until stopped.
async fn sample(
    api: Arc<Api>,
    ids: Vec<String>,
    clock: Clock,
    every: Duration,
    stop: CancellationToken,
) -> Vec<StockSeries> {
    let mut series: Vec<StockSeries> = ids
        .iter()
        .map(|id| StockSeries {
            sku: id.clone(),
            points: Vec::new(),
        })
        .collect();
    tokio::select! {
        _ = stop.cancelled() => return series,
        _ = tokio::time::sleep_until(clock.start.into()) => {}
    }
    loop {
        if let Ok(now) = host::snapshot(&api, &ids).await {
            let t = Instant::now()
                .saturating_duration_since(clock.start)
                .as_secs_f64();
            for (s, k) in series.iter_mut().zip(now) {
                if let Some(k) = k {
                    s.points.push((t, k.available, k.held, k.sold));
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return series,
            _ = tokio::time::sleep(every) => {}
        }
    }
}
