//! holdfast-loadtest: the pre-event load tester that proves a holdfast
//! deployment holds the expected burst and never oversells.
//!
//! A run creates the scenario's SKUs, connects viewers (websocket
//! subscribers that check every frame) and buyers (websocket or HTTP), plays
//! the host's actions and the drop bursts on a shared clock, then audits the
//! inventory and judges thresholds. Exit codes: see [`config::Cli`].
//!
//! # Layout
//!
//! - [`config`]: the command-line flags, every limit with its reason.
//! - [`scenario`]: scenario files (TOML), validation with line numbers,
//!   arrival schedules.
//! - [`preflight`]: can this machine generate the plan; workers and source
//!   addresses; `RLIMIT_NOFILE`.
//! - [`plan`]: a worker's share, the shared clock, coordinator/worker messages.
//! - [`coordinator`]: one run: SKUs, timeline, workers, sampler, progress.
//! - [`ctx`]: what a worker's tasks share (the worker builds it, roles read it).
//! - [`worker`]: one worker's viewers, bursts and arrivals, and its health probe.
//! - [`roles`]: viewer, buyer and host behaviour.
//! - [`client`]: TCP dialing over spread source addresses, websocket and HTTP clients.
//! - [`stats`]: histograms, counters and series that merge exactly across workers.
//! - [`audit`]: the after-run inventory audit (HTTP and Redis).
//! - [`audit_channels`]: the audit's per-channel checks.
//! - [`threshold`]: k6-style pass/fail thresholds.
//! - [`report`]: the report, its summary table, HTML page and baseline comparison.
//! - [`capacity`]: the capacity search behind `--find-capacity`.
//! - [`spawn`]: the gateway child process behind `--spawn`.
//! - [`progress`]: the live progress bar, or plain lines without a terminal.
//! - [`openmetrics`]: `--metrics-listen` (live OpenMetrics) and `--csv`.
//! - [`target`]: what the gateway says about itself; pre-flight checks of
//!   tokens, Redis and existing SKUs.

pub mod audit;
pub mod audit_channels;
pub mod capacity;
pub mod client;
pub mod config;
pub mod coordinator;
pub mod ctx;
pub mod nodes;
pub mod openmetrics;
pub mod plan;
pub mod preflight;
pub mod progress;
pub mod report;
pub mod roles;
pub mod scenario;
pub mod spawn;
pub mod stats;
pub mod target;
pub mod threshold;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::client::http::Api;
use crate::client::net::{Dialer, Target, loopback_sources};
use crate::config::{Cli, Protocol};
use crate::coordinator::Env;
use crate::report::{HealthLimits, Report};
use crate::scenario::Scenario;
use crate::threshold::Threshold;

/// Could not run: unreachable target, pre-flight refused, a worker died.
pub const EXIT_ERROR: u8 = 1;
/// Bad usage: flags, thresholds or scenario file (clap uses 2 as well).
pub const EXIT_USAGE: u8 = 2;
/// A threshold was breached.
pub const EXIT_THRESHOLD: u8 = 3;
/// The audit failed: oversold or inconsistent counts.
pub const EXIT_AUDIT: u8 = 4;
/// The load generator was the bottleneck; the figures prove nothing.
pub const EXIT_INVALID: u8 = 5;

/// A usage error: printed as is, exit code [`EXIT_USAGE`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Runs the load test described by `cli`; returns the exit code.
pub async fn run(cli: Cli) -> anyhow::Result<u8> {
    let thresholds: Vec<Threshold> = cli
        .thresholds
        .iter()
        .filter(|t| !t.trim().is_empty())
        .map(|t| Threshold::parse(t))
        .collect::<Result<_, _>>()
        .map_err(|e| UsageError(e.to_string()))?;
    let mut scenario = match &cli.scenario {
        Some(p) => Scenario::load(p).map_err(|e| UsageError(e.to_string()))?,
        None => Scenario::from_flags(&cli),
    };
    scenario.apply_overrides(&cli);
    scenario
        .revalidate()
        .map_err(|e| UsageError(format!("after command-line overrides: {e}")))?;
    if cli.find_capacity && thresholds.is_empty() {
        return Err(UsageError(
            "--find-capacity needs at least one --threshold to know when the load breaks".into(),
        )
        .into());
    }
    let baseline: Option<Report> = match &cli.baseline {
        Some(p) => Some(
            serde_json::from_str(
                &std::fs::read_to_string(p)
                    .with_context(|| format!("reading baseline {}", p.display()))?,
            )
            .with_context(|| format!("{} is not a holdfast-loadtest report", p.display()))?,
        ),
        None => None,
    };

    let interrupt = CancellationToken::new();
    tokio::spawn(watch_signals(interrupt.clone()));

    let mut gateway = if cli.spawn {
        Some(spawn::start(&cli).await?)
    } else {
        None
    };
    let result = run_with_target(
        &cli,
        scenario,
        thresholds,
        baseline,
        gateway.as_ref(),
        interrupt,
    )
    .await;
    if let Some(gw) = &mut gateway {
        gw.stop().await;
    }
    result
}

async fn run_with_target(
    cli: &Cli,
    scenario: Scenario,
    thresholds: Vec<Threshold>,
    baseline: Option<Report>,
    gw: Option<&spawn::Gateway>,
    interrupt: CancellationToken,
) -> anyhow::Result<u8> {
    let (target_urls, admin, checkout) = match gw {
        Some(g) => (
            vec![g.target.clone()],
            g.admin_token.clone(),
            g.checkout_token.clone(),
        ),
        None => (
            cli.targets.clone(),
            cli.admin_token.clone(),
            cli.checkout_token.clone(),
        ),
    };
    let mut targets = Vec::with_capacity(target_urls.len());
    for url in &target_urls {
        let t = Target::resolve(url).await?;
        if !t.is_loopback() && !cli.allow_remote {
            return Err(UsageError(format!(
                "target {} is not a loopback address; pass --allow-remote to load-test another machine",
                t.addr
            ))
            .into());
        }
        targets.push(t);
    }
    let Some(target) = targets.first().cloned() else {
        return Err(UsageError("no --target given".into()).into());
    };
    let target_url = target_urls.join(",");
    let timeout = Duration::from_millis(cli.request_timeout_ms);
    // Every node must be ready; the first answers for the deployment.
    for (t, url) in targets.iter().zip(&target_urls).skip(1) {
        let node = Api::new(
            Dialer::new(t.addr, vec![]),
            t.authority.clone(),
            String::new(),
            timeout,
        );
        target::readiness(&node, url)
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
    }
    let api = Arc::new(Api::new(
        Dialer::new(target.addr, vec![]),
        target.authority.clone(),
        admin,
        timeout,
    ));
    let ready = target::readiness(&api, &target_urls[0])
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    let findings = target::check(
        &api,
        &ready,
        &target::Expect {
            checkout_token: &checkout,
            redis: cli.redis.as_deref().map(|u| (u, cli.redis_prefix.as_str())),
            persistence: cli.persistence,
            fixed_ids: cli.fixed_ids,
            scenario: &scenario,
        },
    )
    .await;
    for n in &findings.notes {
        eprintln!("pre-flight: note: {n}");
    }
    if !findings.errors.is_empty() {
        anyhow::bail!(
            "pre-flight: the target is not set up for this run:\n  - {}",
            findings.errors.join("\n  - ")
        );
    }

    // Pre-flight, for the largest load this invocation will run.
    let old_soft = preflight::raise_nofile();
    let machine = preflight::Machine::probe();
    let top = if cli.find_capacity {
        scenario.scaled(cli.capacity_max)
    } else {
        scenario.clone()
    };
    let need = need_of(&top, targets.iter().all(Target::is_loopback));
    let asked = preflight::Asked {
        workers: cli.workers,
        workers_max: cli.workers_max,
        sources: cli.source_addrs,
        connections_max: cli.connections_max,
    };
    let decision = preflight::decide(&need, &machine, &asked)
        .map_err(|why| anyhow::anyhow!("pre-flight: cannot generate this load here: {why}"))?;
    eprintln!("{}", decision.describe(&need, &machine, Some(old_soft)));

    let env = Env {
        targets,
        api: api.clone(),
        checkout_token: checkout,
        workers: decision.workers,
        sources: if decision.sources > 1 {
            loopback_sources(decision.sources)
        } else {
            vec![]
        },
        pool_per_worker: decision.pool_per_worker as usize,
        threads: cli.threads.max(1),
        connect_concurrency_max: cli.connect_concurrency_max,
        inflight_max: cli.inflight_max,
        request_timeout_ms: cli.request_timeout_ms,
        holds_tracked_max: cli.holds_tracked_max,
        sample_interval: Duration::from_millis(cli.sample_interval_ms.max(50)),
        fixed_ids: cli.fixed_ids,
        redis: cli.redis.clone().map(|u| (u, cli.redis_prefix.clone())),
        seed: cli.seed,
        quiet: cli.quiet,
        interrupt,
        live: openmetrics::Live::default(),
    };
    let metrics_stop = CancellationToken::new();
    let _metrics_stop = metrics_stop.clone().drop_guard();
    if let Some(addr) = cli.metrics_listen {
        let listener = openmetrics::bind(addr).await?;
        eprintln!(
            "live metrics: http://{}/metrics (OpenMetrics)",
            listener.local_addr()?
        );
        tokio::spawn(openmetrics::serve(listener, env.live.clone(), metrics_stop));
    }
    let judge = Judge {
        cli,
        env: &env,
        thresholds: &thresholds,
        target: &target_url,
        decision: &decision,
    };

    let mut report = if cli.find_capacity {
        capacity_search(&judge, &scenario, cli).await?
    } else {
        judge.once(&scenario, 1.0).await?
    };

    if let Some(b) = &baseline {
        report.baseline = report::baseline::compare(&b.figures, &report.figures);
        report.baseline_warnings = report::baseline::warnings(b, &report);
    }
    print!("{}", report::table::render(&report));
    if let Some(p) = &cli.out {
        std::fs::write(p, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &cli.csv {
        std::fs::write(p, openmetrics::csv(&report.throughput))
            .with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &cli.html {
        std::fs::write(p, report::html::render(&report))
            .with_context(|| format!("writing {}", p.display()))?;
    }
    let code = match &report.capacity {
        Some(c) if c.oversold => EXIT_AUDIT,
        Some(c) if c.held_max.is_some_and(|g| g >= 1.0) => 0,
        Some(c) if c.held_max.is_none() && c.generator_limited => EXIT_INVALID,
        Some(_) => EXIT_THRESHOLD,
        None => report.exit_code(),
    };
    Ok(code)
}

/// `--find-capacity`: each level `--capacity-repeats` times; returns the
/// report of the highest level that held (or of the oversold one).
async fn capacity_search(
    judge: &Judge<'_>,
    scenario: &Scenario,
    cli: &Cli,
) -> anyhow::Result<Report> {
    let planned = planned_load(scenario);
    let mut search =
        capacity::Search::new(cli.capacity_step, cli.capacity_max, cli.capacity_refine);
    let mut best: Option<Report> = None;
    let mut last: Option<Report> = None;
    let repeats = cli.capacity_repeats.max(1);
    while let Some(f) = search.next_factor() {
        eprintln!(
            "capacity: running x{f:.2} ({}), {repeats} time(s)",
            planned_load(&scenario.scaled(f))
        );
        let mut samples = Vec::new();
        let mut oversold = 0;
        let mut detail = String::new();
        let mut interrupted = false;
        for _ in 0..repeats {
            let r = judge.once(&scenario.scaled(f), f).await?;
            if r.interrupted {
                interrupted = true;
                break;
            }
            let (held, why) = judge_level(&r);
            samples.push(capacity::Sample {
                held,
                valid: r.health.valid,
                reserve_p99_ms: r.figures.get("reserve.p99").copied().unwrap_or(0.0),
                errors_rate: r.figures.get("errors.rate").copied().unwrap_or(0.0),
            });
            oversold = oversold.max(r.audit.oversold);
            if !held && detail.is_empty() {
                detail = why;
            }
            // The worst sample is the level's report: a level that held
            // keeps its last run.
            let stop = !held;
            if held && best.as_ref().is_none_or(|b| b.level <= f) {
                best = Some(r.clone());
            }
            last = Some(r);
            if stop {
                break;
            }
        }
        let mut level = if samples.is_empty() {
            capacity::Level::of(f, vec![], 0, String::new())
        } else {
            capacity::Level::of(f, samples, oversold, detail)
        };
        level.interrupted = interrupted;
        if interrupted {
            level.held = false;
            level.valid = false;
            level.detail = "interrupted: no verdict".into();
        } else if level.held {
            level.detail = level.spread_words();
        } else {
            level.detail = format!("{}; {}", level.detail, level.spread_words());
        }
        eprintln!(
            "capacity: x{f:.2} {}: {}",
            if interrupted {
                "interrupted"
            } else if level.held {
                "held"
            } else {
                "broke"
            },
            level.detail
        );
        search.record(level);
        if interrupted {
            break;
        }
    }
    let cap = search.finish(&planned);
    let mut r = if cap.oversold { last } else { best.or(last) }.ok_or_else(|| {
        anyhow::anyhow!("the capacity search was interrupted before any run ended")
    })?;
    r.capacity = Some(cap);
    Ok(r)
}

/// Whether one run held, and if not, why (the audit, the generator, or
/// the breached thresholds).
fn judge_level(r: &Report) -> (bool, String) {
    let breached: Vec<String> = r
        .thresholds
        .iter()
        .filter(|t| !t.ok)
        .map(|t| {
            format!(
                "{} = {}",
                t.expr,
                t.actual
                    .map_or("missing".into(), |a| threshold::with_unit(&t.metric, a))
            )
        })
        .collect();
    if !r.audit.ok {
        (
            false,
            format!("audit failed, oversold {}", r.audit.oversold),
        )
    } else if !r.health.valid {
        (
            false,
            format!("generator limit: {}", r.health.reasons.join("; ")),
        )
    } else if !breached.is_empty() {
        (false, breached.join(", "))
    } else {
        (true, String::new())
    }
}

/// Runs a scenario once and judges it: audit, health, thresholds.
struct Judge<'a> {
    cli: &'a Cli,
    env: &'a Env,
    thresholds: &'a [Threshold],
    target: &'a str,
    decision: &'a preflight::Decision,
}

impl Judge<'_> {
    async fn once(&self, scenario: &Scenario, level: f64) -> anyhow::Result<Report> {
        let cli = self.cli;
        self.env
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .level = level;
        let outcome = coordinator::run_once(self.env, scenario).await?;
        let limits = HealthLimits {
            lag_max_ms: cli.health_lag_max_ms as f64,
            cpu_max: cli.health_cpu_max,
            burst_spread_max_ms: cli.burst_spread_max_ms as f64,
        };
        let mut report = Report::build(
            &outcome,
            self.target,
            level,
            Some(self.decision.clone()),
            limits,
        );
        // Read again after the run: a restarted gateway has a new table.
        let ready = target::readiness(&self.env.api, self.target).await.ok();
        let holds_capacity = ready.as_ref().map(|r| r.holds_capacity).filter(|&c| c > 0);
        report.provenance = report::Provenance {
            scenario_toml: toml::to_string(&outcome.scenario).unwrap_or_default(),
            seed: cli.seed,
            command_line: std::env::args().collect(),
            loadtest_version: env!("CARGO_PKG_VERSION").into(),
            gateway_version: ready.as_ref().and_then(|r| r.version.clone()),
            gateway_persistence: ready.map(|r| r.persistence).unwrap_or_default(),
        };
        report.audit = audit::run(audit::Input {
            scenario: &outcome.scenario,
            stats: &outcome.stats,
            host: &outcome.host,
            api: &self.env.api,
            redis: cli.redis.as_deref().map(|u| (u, cli.redis_prefix.as_str())),
            wait_max: Duration::from_secs(cli.audit_wait_max_s),
            holds_max: cli.audit_holds_max,
            stream_max: cli.audit_stream_max,
            exclusive: !cli.fixed_ids,
            holds_capacity,
        })
        .await;
        let node_apis: Vec<(String, Api)> = self
            .target
            .split(',')
            .zip(&self.env.targets)
            .map(|(url, t)| {
                let api = Api::new(
                    Dialer::new(t.addr, vec![]),
                    t.authority.clone(),
                    String::new(),
                    Duration::from_millis(cli.request_timeout_ms),
                );
                (url.to_string(), api)
            })
            .collect();
        let ids: Vec<String> = outcome.scenario.skus.iter().map(|k| k.id.clone()).collect();
        if let Some(check) = nodes::check(
            &node_apis,
            &ids,
            Duration::from_secs(cli.audit_wait_max_s).min(nodes::CONVERGE_MAX),
        )
        .await
        {
            report.audit.add(check);
        }
        report.figures = report.compute_figures();
        report.thresholds = self
            .thresholds
            .iter()
            .map(|t| t.check(&report.figures))
            .collect();
        Ok(report)
    }
}

fn need_of(s: &Scenario, loopback: bool) -> preflight::Need {
    let (viewers, burst_buyers) = s.connections();
    let b = &s.buyer;
    preflight::Need {
        viewers,
        burst_buyers,
        arrival_peak: s.arrivals.iter().map(Scenario::arrival_peak).sum(),
        messages_per_arrival: 1.0
            + b.commit_probability
            + b.release_probability
            + b.duplicate_probability,
        http: s.protocol() == Protocol::Http,
        loopback,
    }
}

/// Words for the load at one level: the largest burst and the peak rate.
fn planned_load(s: &Scenario) -> String {
    let burst = s.bursts.iter().map(|b| b.buyers).max();
    let rate: f64 = s.arrivals.iter().map(Scenario::arrival_peak).sum();
    match (burst, rate > 0.0) {
        (Some(b), true) => format!("burst {b} buyers, {rate:.0} arrivals/s"),
        (Some(b), false) => format!("burst {b} buyers"),
        (None, true) => format!("{rate:.0} arrivals/s"),
        (None, false) => "no buyers".into(),
    }
}

/// Ctrl-C or SIGTERM: stop the run early, still report and clean up.
async fn watch_signals(token: CancellationToken) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot watch SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            token.cancel();
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    eprintln!("interrupted: stopping the run, then reporting");
    token.cancel();
}
