//! Criterion benchmarks of the engine's hot paths against the bare-CAS
//! reference, with full bookkeeping (events drained, expirer running, a real
//! hold table). `cargo bench -p holdfast-benches --bench engine`; the whole
//! run is kept under about three minutes. Figures and their reading are in
//! `docs/PERFORMANCE.md`.
//!
//! - `cas/one_thread`, `cas/two_threads`: compare_exchange increments of one
//!   `AtomicU64`, the ceiling any one-word protocol lives under.
//! - `reserve_commit/one_sku_one_thread`, `.../one_sku_two_threads`: the
//!   pair a buyer's purchase is, on one hot SKU (drops rotate, see harness);
//!   `..._cpu_time` is the one-thread case timed in thread CPU time, and
//!   `..._cached_clock_cpu_time` the same on a clock read once per
//!   bookkeeping pass.
//! - `reserve_commit/10k_skus_random`: the same pair on a random one of
//!   10 000 SKUs (cache misses instead of contention).
//! - `expiry/1m_holds`: the expirer ending one million due holds.
//! - `clock/*`: what reading the time costs, since the engine reads it on
//!   every reserve and every commit (see the profile in PERFORMANCE.md).
//!
//! Multi-threaded benches spawn their threads per sample, pin them to
//! distinct cores and time from a barrier, so the spawn is not measured;
//! each thread does `iters / 2`.

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use holdfast_benches::harness::{
    BENCH_DROP_UNITS, Bench, Drops, TEND_EVERY_PAIRS, Worker, XorShift, bench_config,
    bench_settings, pin_to_cpu, thread_cpu_time,
};
use holdfast_engine::limits::SKU_UNITS_MAX;
use holdfast_engine::{
    BuyerId, Clock, Engine, EngineConfig, ManualClock, SaleWindow, SkuIdx, SkuSpec, SystemClock,
};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// Threads in the contended benches: the machine's two cores.
const THREADS: u64 = 2;

/// SKUs in the spread-out bench.
const SPREAD_SKUS: u32 = 10_000;

/// Holds in the expiry bench.
const EXPIRY_HOLDS: u32 = 1_000_000;

/// Catalog room for the hot-SKU benches: one drop per 2 M pairs, so 4096
/// drops cover 8 G pairs, far beyond any three-minute run.
const HOT_SKUS_MAX: u32 = 4096;

/// One compare_exchange increment, retried until it lands.
#[inline]
fn cas_increment(counter: &AtomicU64) {
    // Relaxed: the counter publishes nothing; only its own value matters.
    let mut current = counter.load(Ordering::Relaxed);
    loop {
        match counter.compare_exchange(current, current + 1, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return,
            Err(actual) => current = actual,
        }
    }
}

/// Runs `work(thread, iters_for_thread)` on `THREADS` threads started
/// together; returns the slowest thread's time.
fn timed_threads(iters: u64, work: impl Fn(u64, u64) + Sync) -> Duration {
    let barrier = Barrier::new(THREADS as usize);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (barrier, work) = (&barrier, &work);
                let n = iters / THREADS + u64::from(t < iters % THREADS);
                s.spawn(move || {
                    // One thread per core, for certain (see `pin_to_cpu`).
                    pin_to_cpu(t as usize);
                    barrier.wait();
                    let start = Instant::now();
                    work(t, n);
                    start.elapsed()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("bench thread"))
            .max()
            .unwrap_or_default()
    })
}

fn cas(c: &mut Criterion) {
    let mut group = c.benchmark_group("cas");
    group.throughput(Throughput::Elements(1));
    let counter = AtomicU64::new(0);
    group.bench_function("one_thread", |b| {
        b.iter(|| cas_increment(black_box(&counter)))
    });
    let shared = Padded(AtomicU64::new(0));
    group.bench_function("two_threads", |b| {
        b.iter_custom(|iters| {
            timed_threads(iters, |_, n| {
                for _ in 0..n {
                    cas_increment(black_box(&shared.0));
                }
            })
        })
    });
    group.finish();
}

/// A counter on its own cache line (128 bytes: the adjacent-line prefetcher
/// pairs lines), as the engine pads its contended words.
#[repr(align(128))]
struct Padded(AtomicU64);

fn reserve_commit(c: &mut Criterion) {
    let mut group = c.benchmark_group("reserve_commit");
    group.throughput(Throughput::Elements(1));

    let bench = Bench::new(bench_config(HOT_SKUS_MAX));
    let drops = Drops::new(bench.engine.clone(), BENCH_DROP_UNITS);
    group.bench_function("one_sku_one_thread", |b| {
        let mut worker = Worker::new(&bench, &drops);
        let mut buyer = 0u64;
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                buyer = (buyer + 1) & 63;
                worker.pair(BuyerId(buyer));
            }
            start.elapsed()
        });
        worker.tend();
    });

    // The same, timed in thread CPU time: what the pair costs when the core
    // is ours, whatever else the shared machine runs meanwhile.
    group.bench_function("one_sku_one_thread_cpu_time", |b| {
        let mut worker = Worker::new(&bench, &drops);
        let mut buyer = 0u64;
        b.iter_custom(|iters| {
            let start = thread_cpu_time();
            for _ in 0..iters {
                buyer = (buyer + 1) & 63;
                worker.pair(BuyerId(buyer));
            }
            thread_cpu_time() - start
        });
        worker.tend();
    });

    // The one-thread pair on an engine whose clock is read once per
    // bookkeeping pass, in thread CPU time like the bench above: the
    // measured value of not reading the wall clock on every operation (see
    // PERFORMANCE.md, "What would move the numbers").
    let cached = Bench::with_cached_clock(bench_config(HOT_SKUS_MAX));
    let cached_drops = Drops::new(cached.engine.clone(), BENCH_DROP_UNITS);
    group.bench_function("one_sku_one_thread_cached_clock_cpu_time", |b| {
        let mut worker = Worker::new(&cached, &cached_drops);
        let mut buyer = 0u64;
        b.iter_custom(|iters| {
            let start = thread_cpu_time();
            for _ in 0..iters {
                buyer = (buyer + 1) & 63;
                worker.pair(BuyerId(buyer));
            }
            thread_cpu_time() - start
        });
        worker.tend();
    });
    drop(cached_drops);
    drop(cached);

    group.bench_function("one_sku_two_threads", |b| {
        b.iter_custom(|iters| {
            timed_threads(iters, |t, n| {
                let mut worker = Worker::new(&bench, &drops);
                for i in 0..n {
                    worker.pair(BuyerId(t << 32 | (i & 63)));
                }
                worker.tend();
            })
        })
    });
    bench.run_expirer();
    drop(drops);

    let spread = Bench::new(bench_config(SPREAD_SKUS + 16));
    let skus: Vec<SkuIdx> = (0..SPREAD_SKUS)
        .map(|i| {
            let spec = SkuSpec {
                total: SKU_UNITS_MAX,
                settings: bench_settings(),
                window: SaleWindow::Open,
            };
            spread
                .engine
                .create_sku(&format!("sku-{i}"), spec)
                .expect("catalog room")
        })
        .collect();
    group.bench_function(BenchmarkId::new("10k_skus_random", SPREAD_SKUS), |b| {
        let mut sink = Vec::with_capacity(holdfast_benches::harness::DRAIN_BATCH_MAX);
        // Creating the catalog queued three events per SKU: drain them, as
        // the journal would have, before measuring.
        spread.tend(&mut sink);
        let mut rng = XorShift::new(0x5eed);
        let mut since_tend = 0u32;
        b.iter_custom(|iters| {
            let start = Instant::now();
            for i in 0..iters {
                let sku = skus[rng.below(SPREAD_SKUS) as usize];
                // 10 000 SKUs of 2 M units: 20 G pairs before any sells out.
                let hold = spread
                    .engine
                    .reserve(sku, 1, BuyerId(i & 63), None, false)
                    .expect("reserve");
                spread.engine.commit(hold.hold, None, None).expect("commit");
                since_tend += 1;
                if since_tend == TEND_EVERY_PAIRS {
                    since_tend = 0;
                    spread.tend(&mut sink);
                }
            }
            start.elapsed()
        });
    });
    group.finish();
}

fn expiry(c: &mut Criterion) {
    let mut group = c.benchmark_group("expiry");
    group.throughput(Throughput::Elements(u64::from(EXPIRY_HOLDS)));
    // Each sample builds and fills a fresh engine (about a second of set-up
    // that is not timed), so few, flat samples keep the run short.
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .measurement_time(Duration::from_secs(2));
    group.bench_function("1m_holds", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| expire_one_million()).sum());
    });
    group.finish();
}

/// Fills an engine with a million live holds on a manual clock, moves the
/// clock past their deadline and times the expirer (with the journal's
/// event drain) until every hold has expired.
fn expire_one_million() -> Duration {
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let config = EngineConfig {
        holds_max: 1 << 20,
        // Every expiry emits an event; room for all of them at once, so the
        // timed part measures expiry, not back-pressure.
        events_max: 1 << 22,
        ..EngineConfig::default()
    };
    let (engine, mut expirer) = Engine::new(config, clock.clone()).expect("config");
    let spec = SkuSpec {
        total: EXPIRY_HOLDS,
        settings: bench_settings(),
        window: SaleWindow::Open,
    };
    let sku = engine.create_sku("expiring", spec).expect("sku");
    let log = engine.events().expect("events on");
    let mut sink = Vec::with_capacity(holdfast_benches::harness::DRAIN_BATCH_MAX);
    let drain = |sink: &mut Vec<_>| {
        while log.drain_into(sink, holdfast_benches::harness::DRAIN_BATCH_MAX) > 0 {
            sink.clear();
        }
    };
    for i in 0..EXPIRY_HOLDS {
        engine
            .reserve(sku, 1, BuyerId(u64::from(i & 1023)), None, false)
            .expect("reserve");
        if i % 4096 == 0 {
            drain(&mut sink);
        }
    }
    drain(&mut sink);
    // Link every hold into the wheel now: that is reservation bookkeeping,
    // not expiry.
    expirer.run();
    clock.advance(bench_settings().hold_ttl_ms + 2 * engine.config().expiry_tick_ms);

    let start = Instant::now();
    let mut expired = 0u64;
    // Bounded: each run expires up to a batch; a million holds need a few.
    for _ in 0..1_000_000 {
        let report = expirer.run();
        expired += u64::from(report.expired_holds);
        drain(&mut sink);
        if expired >= u64::from(EXPIRY_HOLDS) {
            break;
        }
    }
    let elapsed = start.elapsed();
    assert_eq!(expired, u64::from(EXPIRY_HOLDS), "every hold expired");
    black_box(engine.snapshot(sku));
    elapsed
}

fn clock(c: &mut Criterion) {
    let mut group = c.benchmark_group("clock");
    group
        .throughput(Throughput::Elements(1))
        .measurement_time(Duration::from_secs(1));
    // What the engine's `SystemClock` costs per read today.
    group.bench_function("system_clock_now_ms", |b| {
        b.iter(|| black_box(SystemClock.now_ms()))
    });
    // The kernel's tick-granular clock (a few ms resolution): a candidate
    // for deadlines kept in 10 ms expiry ticks.
    group.bench_function("realtime_coarse", |b| {
        b.iter(|| {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: `ts` is a valid, writable timespec for the call.
            unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
            black_box(ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000)
        })
    });
    // A cached time another thread refreshes: one relaxed load.
    let cached = AtomicU64::new(SystemClock.now_ms());
    group.bench_function("cached_atomic_load", |b| {
        b.iter(|| black_box(cached.load(Ordering::Relaxed)))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    // Three seconds per benchmark after one of warm-up: the whole file runs
    // in well under three minutes on the 2-core machines.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    targets = cas, reserve_commit, expiry, clock
}
criterion_main!(benches);
