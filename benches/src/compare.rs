//! The side-by-side comparison: one flash-sale workload run against each
//! [`Target`] in turn, reported as one table (and optionally JSON).
//!
//! The workload: C concurrent clients buy one unit at a time from one hot
//! drop of S units, each purchase a reserve followed by a commit of that
//! hold. A sold-out drop is replaced by (engine) or restocked to (Redis) a
//! fresh S units, so every row runs for the same bounded time. Each row
//! warms up, then counts pairs for `duration`; its ratio is its pairs/s over
//! the unpipelined Redis-Lua row's, measured in the same run on the same
//! machine, which is what makes figures from a noisy 2-core box comparable.
//!
//! # Adding a row
//!
//! Implement [`Target`] and add it in [`targets`]. The gateway end-to-end
//! rows (websocket and HTTP, in memory, durable with Redis, a cluster node)
//! are in [`crate::gateway_ws`].

use crate::gateway_ws::{Backend, GatewayWs, Transport};
use crate::harness::{Bench, Drops, TEND_EVERY_PAIRS, Worker, XorShift, bench_config, pin_to_cpu};
use crate::measure::{
    Measurement, Percentiles, Phase, Phases, format_ns, format_rate, latency_histogram, record,
};
use crate::redis_lua::{self, Mode, RedisRun};
use anyhow::Result;
use holdfast_engine::BuyerId;
use holdfast_engine::HoldId;
use holdfast_engine::limits::SKUS_MAX;
use holdfast_testkit::RedisServer;
use serde::Serialize;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

pub use crate::target::{Target, Workload};

/// Masters of the cluster row's Redis Cluster (one replica each).
const CLUSTER_MASTERS: u32 = 3;

/// Every row, in table order.
pub fn targets(workload: &Workload) -> Vec<Box<dyn Target>> {
    vec![
        Box::new(BareCas),
        Box::new(EngineInProcess {
            threads: workload.engine_threads,
        }),
        // The same on one OS thread: what contention on the hot SKU costs.
        Box::new(EngineInProcess { threads: 1 }),
        Box::new(RedisLua {
            mode: Mode::Unpipelined,
        }),
        Box::new(RedisLua {
            mode: Mode::Pipelined(workload.pipeline),
        }),
        // End to end through the real gateway binary: pipelined up to the
        // gateway's in-flight limit, in memory and durable; then durable
        // with one request in flight per client, like the unpipelined
        // Redis row.
        Box::new(GatewayWs {
            backend: Backend::Memory,
            transport: Transport::Websocket,
            window: workload.gateway_window,
        }),
        Box::new(GatewayWs {
            backend: Backend::Redis,
            transport: Transport::Websocket,
            window: workload.gateway_window,
        }),
        Box::new(GatewayWs {
            backend: Backend::Redis,
            transport: Transport::Websocket,
            window: 1,
        }),
        // A checkout backend's usual pattern: HTTP/1.1 keep-alive, one
        // request in flight per pooled connection.
        Box::new(GatewayWs {
            backend: Backend::Memory,
            transport: Transport::Http,
            window: 1,
        }),
        Box::new(GatewayWs {
            backend: Backend::Redis,
            transport: Transport::Http,
            window: 1,
        }),
        // One node of a 3-master Redis Cluster, durable with a replica
        // acknowledging each batch: what multi-node mode costs a node
        // against the single-Redis row above (same run).
        Box::new(GatewayWs {
            backend: Backend::Cluster(CLUSTER_MASTERS),
            transport: Transport::Websocket,
            window: workload.gateway_window,
        }),
    ]
}

/// A measured (or pending) row, as printed and as written to JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub name: String,
    pub baseline: bool,
    /// `None` for a pending or failed row.
    pub pairs_per_s: Option<f64>,
    pub pairs: u64,
    pub seconds: f64,
    pub latency: Option<Percentiles>,
    /// CPU the row used on average while measured, in cores (client and
    /// server together); below the cores it could use means others had them.
    pub cores_used: Option<f64>,
    /// Pairs/s over the baseline's pairs/s.
    pub vs_baseline: Option<f64>,
    pub note: String,
}

impl Row {
    pub fn measured(target: &dyn Target, m: &Measurement) -> Self {
        let seconds = m.elapsed.as_secs_f64();
        Self {
            name: target.name(),
            baseline: target.is_baseline(),
            pairs_per_s: Some(m.pairs as f64 / seconds),
            pairs: m.pairs,
            seconds,
            latency: (!m.latency.is_empty()).then(|| Percentiles::of(&m.latency)),
            cores_used: Some(m.cpu_s / seconds),
            vs_baseline: None,
            note: m.note.clone(),
        }
    }

    pub fn unmeasured(name: &str, baseline: bool, note: String) -> Self {
        Self {
            name: name.to_string(),
            baseline,
            pairs_per_s: None,
            pairs: 0,
            seconds: 0.0,
            latency: None,
            cores_used: None,
            vs_baseline: None,
            note,
        }
    }
}

/// Fills in every row's ratio to the baseline row, if it was measured.
pub fn fill_ratios(rows: &mut [Row]) {
    let Some(base) = rows.iter().find(|r| r.baseline).and_then(|r| r.pairs_per_s) else {
        return;
    };
    for row in rows {
        row.vs_baseline = row.pairs_per_s.map(|p| p / base);
    }
}

/// The table, ready to print.
pub fn render(rows: &[Row], workload: &Workload) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "flash sale: {} clients, drops of {} units, reserve(1)→commit pairs, {:?} per row after {:?} warm-up",
        workload.clients, workload.drop_units, workload.duration, workload.warmup
    );
    let header = [
        "target",
        "pairs/s",
        "p50",
        "p99",
        "p99.9",
        "cores",
        "× redis-lua",
    ];
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            let lat = |f: fn(&Percentiles) -> u64| {
                r.latency.as_ref().map_or("-".into(), |p| format_ns(f(p)))
            };
            [
                r.name.clone(),
                r.pairs_per_s.map_or("-".into(), format_rate),
                lat(|p| p.p50_ns),
                lat(|p| p.p99_ns),
                lat(|p| p.p999_ns),
                r.cores_used.map_or("-".into(), |c| format!("{c:.2}")),
                match (r.baseline, r.vs_baseline) {
                    (true, Some(_)) => "1 (baseline)".into(),
                    (_, Some(x)) if x >= 10.0 => format!("{x:.0}×"),
                    (_, Some(x)) => format!("{x:.2}×"),
                    (_, None) => "-".into(),
                },
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |out: &mut String, row: &[&str]| {
        for (i, (c, w)) in row.iter().zip(widths).enumerate() {
            let pad = w - c.chars().count();
            if i == 0 {
                let _ = write!(out, "{c}{}", " ".repeat(pad));
            } else {
                let _ = write!(out, "  {}{c}", " ".repeat(pad));
            }
        }
        out.push('\n');
    };
    line(&mut out, &header);
    let rule: Vec<String> = widths.iter().map(|&w| "-".repeat(w)).collect();
    line(
        &mut out,
        &rule.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    for row in &cells {
        line(
            &mut out,
            &row.iter().map(String::as_str).collect::<Vec<_>>(),
        );
    }
    out.push('\n');
    for r in rows.iter().filter(|r| !r.note.is_empty()) {
        let _ = writeln!(out, "{}: {}", r.name, r.note);
    }
    out
}

// ----- rows ---------------------------------------------------------------

/// The floor: one check-and-decrement CAS per "pair" on one shared counter
/// (what the reserve alone would cost with nothing else to do).
pub struct BareCas;

impl Target for BareCas {
    fn name(&self) -> String {
        "bare CAS, 1 counter".into()
    }

    fn run(&mut self, w: &Workload) -> Result<Measurement> {
        let counter = AtomicU64::new(u64::from(w.drop_units));
        let phases = Phases::default();
        let refill = u64::from(w.drop_units);
        let (interval, results) = std::thread::scope(|s| {
            let handles: Vec<_> = (0..w.engine_threads)
                .map(|t| {
                    let (counter, phases) = (&counter, &phases);
                    s.spawn(move || {
                        pin_to_cpu(t);
                        let mut hist = latency_histogram();
                        let mut ops = 0u64;
                        let mut measuring = false;
                        let mut sampler = XorShift::new(0xc45 + t as u64);
                        loop {
                            for _ in 0..TEND_EVERY_PAIRS {
                                if sampler.below(w.sample_every) == 0 {
                                    let t0 = Instant::now();
                                    take_one(counter, refill);
                                    record(&mut hist, t0.elapsed().as_nanos() as u64, 1);
                                } else {
                                    take_one(counter, refill);
                                }
                            }
                            ops += u64::from(TEND_EVERY_PAIRS);
                            match (phases.get(), measuring) {
                                (Phase::Measure, false) => {
                                    measuring = true;
                                    ops = 0;
                                    hist.reset();
                                }
                                (Phase::Stop, _) => return (ops, hist),
                                _ => {}
                            }
                        }
                    })
                })
                .collect();
            let interval = phases.drive(w.warmup, w.duration, &holdfast_sys::process_cpu_seconds);
            (
                interval,
                handles
                    .into_iter()
                    .map(|h| h.join().expect("cas worker"))
                    .collect::<Vec<_>>(),
            )
        });
        let mut m = Measurement {
            pairs: 0,
            elapsed: interval.elapsed,
            cpu_s: interval.cpu_s,
            latency: latency_histogram(),
            note: format!(
                "{} threads; one CAS per op; latency: 1 op in {} at random, and includes one clock read (20-40 ns here)",
                w.engine_threads, w.sample_every
            ),
        };
        for (ops, hist) in results {
            m.pairs += ops;
            m.latency.add(&hist).expect("same bounds");
        }
        Ok(m)
    }
}

/// Takes one unit from `counter` with one CAS, refilling an empty one.
#[inline]
fn take_one(counter: &AtomicU64, refill: u64) {
    // Relaxed: the counter publishes nothing else; only its own value matters.
    let mut current = counter.load(Ordering::Relaxed);
    loop {
        let next = if current == 0 {
            refill - 1
        } else {
            current - 1
        };
        match counter.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return,
            Err(actual) => current = actual,
        }
    }
}

/// The holdfast engine in-process with full bookkeeping: C logical clients
/// spread over `threads` OS threads, each client with a hold in flight.
pub struct EngineInProcess {
    pub threads: usize,
}

impl Target for EngineInProcess {
    fn name(&self) -> String {
        match self.threads {
            1 => "holdfast engine, in-process, 1 thread".into(),
            n => format!("holdfast engine, in-process, {n} threads"),
        }
    }

    fn run(&mut self, w: &Workload) -> Result<Measurement> {
        // Room for every drop a very fast run could sell (100 M pairs/s).
        let seconds = (w.warmup + w.duration).as_secs_f64() + 1.0;
        let drops_max = (seconds * 1e8 / f64::from(w.drop_units)).ceil() as u64 + 16;
        // The clock the gateway runs the engine on: a cached wall clock
        // (refreshed at every bookkeeping pass here, every millisecond there).
        let bench =
            Bench::with_cached_clock(bench_config(drops_max.min(u64::from(SKUS_MAX)) as u32));
        let drops = Drops::new(bench.engine.clone(), w.drop_units);
        let phases = Phases::default();
        let threads = self.threads.max(1);
        let (interval, results) = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let (bench, drops, phases) = (&bench, &drops, &phases);
                    let buyers: Vec<BuyerId> = (t..w.clients)
                        .step_by(threads)
                        .map(|c| BuyerId(c as u64))
                        .collect();
                    s.spawn(move || {
                        pin_to_cpu(t);
                        engine_worker(bench, drops, phases, &buyers, w.sample_every)
                    })
                })
                .collect();
            let interval = phases.drive(w.warmup, w.duration, &holdfast_sys::process_cpu_seconds);
            (
                interval,
                handles
                    .into_iter()
                    .map(|h| h.join().expect("engine worker"))
                    .collect::<Vec<_>>(),
            )
        });
        let mut m = Measurement {
            pairs: 0,
            elapsed: interval.elapsed,
            cpu_s: interval.cpu_s,
            latency: latency_histogram(),
            note: String::new(),
        };
        let mut events = 0;
        for (pairs, hist, drained) in results {
            m.pairs += pairs;
            events += drained;
            m.latency.add(&hist).expect("same bounds");
        }
        bench.run_expirer();
        let in_use = bench.engine.holds_in_use();
        m.note = format!(
            "{threads} OS thread(s), cached wall clock as in the gateway, events on and drained ({events} in all), expirer inline every {TEND_EVERY_PAIRS} pairs; \
             latency: reserve + commit call time of 1 pair in {} at random, bookkeeping not inside it; {} drops; {in_use} hold slots left in use",
            w.sample_every,
            drops.count()
        );
        Ok(m)
    }
}

/// One engine thread: its logical clients take turns, each alternating a
/// reserve and the commit of the hold it got.
fn engine_worker(
    bench: &Bench,
    drops: &Drops,
    phases: &Phases,
    buyers: &[BuyerId],
    sample_every: u32,
) -> (u64, hdrhistogram::Histogram<u64>, u64) {
    /// A client's hold in flight and, if this pair is timed, its reserve time.
    const UNTIMED: u64 = u64::MAX;
    let mut worker = Worker::new(bench, drops);
    let mut pending: Vec<Option<(HoldId, u64)>> = vec![None; buyers.len()];
    let mut hist = latency_histogram();
    let (mut pairs, mut checked_at) = (0u64, 0u64);
    let mut sampler = XorShift::new(0x5a3d_1e00 + buyers.first().map_or(0, |b| b.0));
    let mut measuring = false;
    loop {
        for (slot, &buyer) in pending.iter_mut().zip(buyers) {
            match slot.take() {
                None => {
                    // Random, not every n-th: a fixed stride can alias with
                    // the clients' turn order and the bookkeeping cadence.
                    *slot = Some(if sampler.below(sample_every) == 0 {
                        let t0 = Instant::now();
                        let hold = worker.reserve(buyer);
                        (hold, t0.elapsed().as_nanos() as u64)
                    } else {
                        (worker.reserve(buyer), UNTIMED)
                    });
                }
                Some((hold, reserve_ns)) => {
                    if reserve_ns == UNTIMED {
                        worker.commit(hold);
                    } else {
                        let t0 = Instant::now();
                        worker.commit(hold);
                        record(&mut hist, reserve_ns + t0.elapsed().as_nanos() as u64, 1);
                    }
                    worker.pair_done();
                    pairs += 1;
                }
            }
        }
        if pairs - checked_at < u64::from(TEND_EVERY_PAIRS) {
            continue;
        }
        checked_at = pairs;
        match (phases.get(), measuring) {
            (Phase::Measure, false) => {
                measuring = true;
                (pairs, checked_at) = (0, 0);
                hist.reset();
            }
            (Phase::Stop, _) => break,
            _ => {}
        }
    }
    // Settle what is still in flight (not counted) so the run ends clean.
    for (hold, _) in pending.into_iter().flatten() {
        worker.commit(hold);
        worker.pair_done();
    }
    worker.tend();
    (pairs, hist, worker.events)
}

/// The Redis-Lua baseline against a private redis-server started for the row.
pub struct RedisLua {
    pub mode: Mode,
}

impl Target for RedisLua {
    fn name(&self) -> String {
        match self.mode {
            Mode::Unpipelined => "redis-lua, unpipelined".into(),
            Mode::Pipelined(p) => format!("redis-lua, pipelined P={p}"),
        }
    }

    fn is_baseline(&self) -> bool {
        self.mode == Mode::Unpipelined
    }

    fn run(&mut self, w: &Workload) -> Result<Measurement> {
        let server = RedisServer::start(&w.redis_server)?;
        let mut m = redis_lua::run(&RedisRun {
            url: server.url(),
            clients: w.clients,
            mode: self.mode,
            drop_units: w.drop_units,
            warmup: w.warmup,
            duration: w.duration,
            client_threads: w.redis_client_threads,
            server_pid: Some(server.pid()),
        })?;
        m.note = format!(
            "{} connections, {} tokio client thread(s), redis-server on its own port; {}",
            w.clients, w.redis_client_threads, m.note
        );
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn tiny() -> Workload {
        Workload {
            clients: 8,
            drop_units: 10_000,
            duration: Duration::from_millis(300),
            warmup: Duration::from_millis(20),
            engine_threads: 2,
            pipeline: 4,
            sample_every: 4,
            redis_client_threads: 1,
            redis_server: "redis-server".into(),
            gateway_bin: crate::gateway_proc::default_gateway_bin(),
            gateway_window: 4,
            ws_client_threads: 1,
            perf_dir: None,
            gateway_args: Vec::new(),
        }
    }

    #[test]
    fn in_process_rows_measure_something() {
        let w = tiny();
        for mut target in [
            Box::new(BareCas) as Box<dyn Target>,
            Box::new(EngineInProcess { threads: 2 }),
        ] {
            let m = target.run(&w).unwrap();
            assert!(m.pairs > 0, "{}", target.name());
            assert!(!m.latency.is_empty(), "{}", target.name());
        }
    }

    #[test]
    fn ratios_divide_by_the_baseline_and_pending_rows_stay_blank() {
        let mut rows = vec![
            Row {
                pairs_per_s: Some(40.0),
                baseline: true,
                ..Row::unmeasured("base", true, String::new())
            },
            Row {
                pairs_per_s: Some(4000.0),
                ..Row::unmeasured("fast", false, String::new())
            },
            Row::unmeasured("later", false, "not yet measured".into()),
        ];
        fill_ratios(&mut rows);
        assert_eq!(rows[0].vs_baseline, Some(1.0));
        assert_eq!(rows[1].vs_baseline, Some(100.0));
        assert_eq!(rows[2].vs_baseline, None);
        let table = render(&rows, &tiny());
        assert!(table.contains("100×"), "{table}");
        assert!(table.contains("not yet measured"), "{table}");
    }
}
