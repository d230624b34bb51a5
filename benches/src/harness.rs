//! In-process drivers shared by the criterion benchmarks and `compare`: an
//! engine with full bookkeeping, the rotation of sold-out "drops", and the
//! reserve→commit pair that both measure.
//!
//! "Full bookkeeping" means what the gateway will run: events enabled and
//! drained (the journal's side, here a counter), the expirer running (it
//! reclaims every finished hold's slot), and a real hold table. The drivers
//! do that work inline on the benchmark's own threads every
//! [`TEND_EVERY_PAIRS`] pairs, so its cost is inside every figure and no
//! third thread competes for the machine's two cores.
//!
//! Stock: a SKU accounts for at most [`SKU_UNITS_MAX`] units, sold ones
//! included, so a long run cannot restock one SKU for ever. Instead a sold-out
//! SKU is replaced by a fresh "drop" of the same size ([`Drops`]); the swap
//! happens once per drop (every 2 M pairs in the benches), so its cost is
//! amortised to nothing and the measured operation stays reserve + commit.
//!
//! This module must never assert on timing: it measures, callers report.

use holdfast_engine::limits::SKU_UNITS_MAX;
use holdfast_engine::{
    BuyerId, Clock, Engine, EngineConfig, Event, Expirer, HoldId, ReserveError, SaleWindow, SkuIdx,
    SkuSettings, SkuSpec, SystemClock,
};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, TryLockError};

/// Pairs between two bookkeeping passes on each thread. Small enough that
/// the event queue and the hold table never come near their bounds (two
/// threads × 1024 pairs × 2 events ≪ [`EVENTS_MAX`]), large enough that the
/// pass is amortised.
pub const TEND_EVERY_PAIRS: u32 = 1024;

/// Event queue capacity for the benchmark engines: room for many passes'
/// worth of events, so `Overloaded` only shows up if draining stops.
pub const EVENTS_MAX: usize = 1 << 16;

/// Most events one drain call moves before handing them to the sink; the
/// drain buffer is allocated once at this size.
pub const DRAIN_BATCH_MAX: usize = 4096;

/// Most times one operation is retried after `Capacity`/`Overloaded`/
/// `SoldOut` (each retry follows a bookkeeping pass or a new drop). Hitting
/// it means the bookkeeping is broken, and the driver panics rather than spin.
pub const RETRIES_MAX: u32 = 1000;

/// Units in each drop the benches sell: as close to the per-SKU bound as
/// leaves room, so drops change as rarely as possible.
pub const BENCH_DROP_UNITS: u32 = 2_000_000;

/// Engine configuration for a benchmark: defaults plus events enabled.
pub fn bench_config(skus_max: u32) -> EngineConfig {
    EngineConfig {
        events_max: EVENTS_MAX,
        skus_max,
        ..EngineConfig::default()
    }
}

/// SKU settings for the benches: the engine's defaults (5 minute holds,
/// no buyer limit), so no hold expires during a run unless the run wants it.
pub fn bench_settings() -> SkuSettings {
    SkuSettings::default()
}

/// The engine with its expirer behind a lock any worker can take, and a
/// count of the events drained (what the journal would have written).
pub struct Bench {
    pub engine: Arc<Engine>,
    expirer: Mutex<Expirer>,
    /// Set when the engine runs on a [`CachedClock`]; refreshed every pass.
    cached_clock: Option<Arc<CachedClock>>,
}

impl Bench {
    /// An engine on the system clock (the real cost of reading time).
    pub fn new(config: EngineConfig) -> Self {
        let (engine, expirer) =
            Engine::new(config, Arc::new(SystemClock)).expect("bench config is valid");
        Self {
            engine,
            expirer: Mutex::new(expirer),
            cached_clock: None,
        }
    }

    /// An engine on a [`CachedClock`] refreshed at every bookkeeping pass:
    /// what the engine would cost if it stopped reading the wall clock per
    /// operation (a suggestion in PERFORMANCE.md, measured without touching
    /// the engine: `Clock` is its public trait).
    pub fn with_cached_clock(config: EngineConfig) -> Self {
        let clock = Arc::new(CachedClock::new());
        let (engine, expirer) = Engine::new(config, clock.clone()).expect("bench config is valid");
        Self {
            engine,
            expirer: Mutex::new(expirer),
            cached_clock: Some(clock),
        }
    }

    /// One bookkeeping pass from a worker thread: drain every queued event
    /// into `sink`, then run the expirer if no other thread is running it.
    /// Returns the number of events drained.
    pub fn tend(&self, sink: &mut Vec<Event>) -> u64 {
        if let Some(clock) = &self.cached_clock {
            clock.refresh();
        }
        let drained = self.drain(sink);
        match self.expirer.try_lock() {
            Ok(mut expirer) => {
                expirer.run();
            }
            // The other thread is on it; our finished holds are in its run.
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Poisoned(e)) => panic!("expirer lock poisoned: {e}"),
        }
        drained
    }

    /// Runs the expirer, waiting for the lock (used at set-up and tear-down).
    pub fn run_expirer(&self) {
        self.expirer.lock().expect("expirer lock").run();
    }

    /// Drains queued events into `sink` (cleared after each batch, as a
    /// journal would after writing it). Bounded: at most the queue's
    /// capacity in batches, so a producer that never pauses cannot keep one
    /// call going for ever.
    pub fn drain(&self, sink: &mut Vec<Event>) -> u64 {
        let Some(log) = self.engine.events() else {
            return 0;
        };
        let mut drained = 0u64;
        for _ in 0..log.capacity().div_ceil(DRAIN_BATCH_MAX) {
            sink.clear();
            let n = log.drain_into(sink, DRAIN_BATCH_MAX);
            drained += n as u64;
            if n < DRAIN_BATCH_MAX {
                break;
            }
        }
        sink.clear();
        drained
    }
}

/// A wall clock read once per bookkeeping pass and served from memory in
/// between: `now_ms` is one relaxed load. Deadlines live in 10 ms expiry
/// ticks, so a value up to a pass old (well under a millisecond here) changes
/// no outcome.
#[derive(Debug)]
pub struct CachedClock {
    now_ms: AtomicU64,
}

impl CachedClock {
    pub fn new() -> Self {
        Self {
            now_ms: AtomicU64::new(SystemClock.now_ms()),
        }
    }

    /// Reads the wall clock into the cache (never backwards).
    pub fn refresh(&self) {
        // Relaxed: the time publishes no other memory (as ManualClock).
        self.now_ms
            .fetch_max(SystemClock.now_ms(), Ordering::Relaxed);
    }
}

impl Default for CachedClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for CachedClock {
    fn now_ms(&self) -> u64 {
        // Relaxed: see `refresh`.
        self.now_ms.load(Ordering::Relaxed)
    }
}

/// A drop sold by rotating fresh SKUs: when the current SKU sells out, the
/// first thread to notice creates the next one; everyone moves on to it.
pub struct Drops {
    engine: Arc<Engine>,
    /// Raw index of the SKU on sale now.
    current: AtomicU32,
    /// Serialises creation of the next SKU (a cold path: once per drop).
    created: Mutex<u32>,
    units: u32,
}

impl Drops {
    /// Creates the first drop of `units` units.
    pub fn new(engine: Arc<Engine>, units: u32) -> Self {
        assert!(
            (1..=SKU_UNITS_MAX).contains(&units),
            "drop units must be 1..={SKU_UNITS_MAX}"
        );
        let first = create_drop(&engine, 0, units);
        Self {
            engine,
            current: AtomicU32::new(first.get()),
            created: Mutex::new(0),
            units,
        }
    }

    /// The SKU on sale now.
    pub fn current(&self) -> SkuIdx {
        // Relaxed: the SKU entry is published by the catalog itself; this
        // word only says which one to use, and a stale one just sells out.
        SkuIdx::from(self.current.load(Ordering::Relaxed))
    }

    /// Called after `sold_out` refused a reservation: returns the SKU to use
    /// now, creating it if nobody has yet.
    pub fn next_after(&self, sold_out: SkuIdx) -> SkuIdx {
        let mut created = self.created.lock().expect("drops lock");
        let now = self.current();
        if now != sold_out {
            return now;
        }
        *created += 1;
        let next = create_drop(&self.engine, *created, self.units);
        // Relaxed: see `current`.
        self.current.store(next.get(), Ordering::Relaxed);
        next
    }

    /// Drops created so far, the first included.
    pub fn count(&self) -> u32 {
        *self.created.lock().expect("drops lock") + 1
    }
}

fn create_drop(engine: &Engine, n: u32, units: u32) -> SkuIdx {
    let spec = SkuSpec {
        total: units,
        settings: bench_settings(),
        window: SaleWindow::Open,
    };
    engine
        .create_sku(&format!("drop-{n}"), spec)
        .expect("catalog has room for the next drop")
}

/// One worker thread's handle: its cached SKU, its bookkeeping cadence and
/// its drain buffer. Not shared; each thread makes its own.
pub struct Worker<'a> {
    bench: &'a Bench,
    drops: &'a Drops,
    sku: SkuIdx,
    since_tend: u32,
    sink: Vec<Event>,
    /// Events this worker drained.
    pub events: u64,
}

impl<'a> Worker<'a> {
    pub fn new(bench: &'a Bench, drops: &'a Drops) -> Self {
        Self {
            bench,
            drops,
            sku: drops.current(),
            since_tend: 0,
            sink: Vec::with_capacity(DRAIN_BATCH_MAX),
            events: 0,
        }
    }

    /// Reserves one unit of the current drop for `buyer`.
    #[inline]
    pub fn reserve(&mut self, buyer: BuyerId) -> HoldId {
        for _ in 0..RETRIES_MAX {
            match self.bench.engine.reserve(self.sku, 1, buyer, None, false) {
                Ok(r) => return r.hold,
                Err(ReserveError::SoldOut) => self.sku = self.drops.next_after(self.sku),
                // The table or the event queue is full: bookkeeping must
                // happen now, so wait for the expirer if another thread is
                // in it (it may have been preempted mid-run on a busy box).
                Err(ReserveError::Capacity | ReserveError::Overloaded) => self.tend_now(),
                Err(e) => panic!("bench reservation refused: {e}"),
            }
        }
        panic!(
            "reservation still refused after {RETRIES_MAX} retries: bookkeeping is not keeping up"
        );
    }

    /// Commits a hold this worker reserved. Call [`Worker::pair_done`]
    /// after it (outside any latency timing: in the gateway the journal and
    /// the expirer run on their own thread, not inside a buyer's request).
    #[inline]
    pub fn commit(&mut self, hold: HoldId) {
        if let Err(e) = self.bench.engine.commit(hold, None, None) {
            panic!("bench commit refused: {e}");
        }
    }

    /// Counts a finished pair and tends the engine every
    /// [`TEND_EVERY_PAIRS`] pairs.
    #[inline]
    pub fn pair_done(&mut self) {
        self.since_tend += 1;
        if self.since_tend >= TEND_EVERY_PAIRS {
            self.tend();
        }
    }

    /// One reserve→commit pair, bookkeeping included.
    #[inline]
    pub fn pair(&mut self, buyer: BuyerId) {
        let hold = self.reserve(buyer);
        self.commit(hold);
        self.pair_done();
    }

    /// A bookkeeping pass now (the expirer only if no other thread runs it).
    pub fn tend(&mut self) {
        self.since_tend = 0;
        self.events += self.bench.tend(&mut self.sink);
    }

    /// A bookkeeping pass now that waits for the expirer's lock.
    fn tend_now(&mut self) {
        self.since_tend = 0;
        self.events += self.bench.drain(&mut self.sink);
        self.bench.run_expirer();
    }
}

/// Pins the calling thread to CPU `index % cores`, so "two threads" means
/// two cores working at once. Without it the scheduler sometimes time-slices
/// both threads on one core (no cache-line traffic at all) and a contended
/// figure comes out two to three times better than the truth, varying from
/// run to run. Returns whether the pin took.
pub fn pin_to_cpu(index: usize) -> bool {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    // SAFETY: `set` is a plain bitmask owned by this frame; CPU_ZERO and
    // CPU_SET only write inside it, and the index is below the machine's
    // core count (far below CPU_SETSIZE). sched_setaffinity reads it for
    // the calling thread (pid 0) and changes nothing else.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(index % cores, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// CPU time the calling thread has used. Timing a single-threaded bench with
/// it instead of the wall clock leaves out the time other processes on a
/// shared machine had the core, which is most of the noise here.
pub fn thread_cpu_time() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec owned by this frame.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(
        rc, 0,
        "CLOCK_THREAD_CPUTIME_ID is always available on Linux"
    );
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// A small fast PRNG (xorshift64*) for picking SKUs: a few instructions, so
/// the pick does not weigh on what is measured.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-enough index below `n` (multiply-shift, no division).
    #[inline]
    pub fn below(&mut self, n: u32) -> u32 {
        (((self.next_u64() >> 32) * u64::from(n)) >> 32) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_across_drops_keep_the_invariant_and_free_every_slot() {
        let bench = Bench::new(bench_config(64));
        let drops = Drops::new(bench.engine.clone(), 1000);
        let mut worker = Worker::new(&bench, &drops);
        for i in 0..2500u64 {
            worker.pair(BuyerId(i % 7));
        }
        worker.tend();
        bench.run_expirer();
        assert_eq!(drops.count(), 3, "2500 units over drops of 1000");
        assert_eq!(
            bench.engine.holds_in_use(),
            0,
            "every finished hold reclaimed"
        );
        let sold: u32 = bench.engine.snapshots().iter().map(|s| s.counts.sold).sum();
        assert_eq!(sold, 2500);
        for s in bench.engine.snapshots() {
            assert_eq!(
                s.counts.available + s.counts.held + s.counts.sold,
                s.counts.total()
            );
        }
        assert!(
            worker.events >= 2 * 2500,
            "a reserved and a committed event per pair"
        );
    }

    #[test]
    fn a_full_table_waits_for_an_expirer_run_elsewhere_instead_of_giving_up() {
        let bench = Bench::new(EngineConfig {
            holds_max: 64,
            ..bench_config(8)
        });
        let drops = Drops::new(bench.engine.clone(), 10_000);
        let mut worker = Worker::new(&bench, &drops);
        // Fill the table with finished holds nobody has reclaimed yet.
        for i in 0..64 {
            let hold = worker.reserve(BuyerId(i));
            worker.commit(hold);
        }
        assert_eq!(bench.engine.holds_in_use(), 64);
        let locked = std::sync::Barrier::new(2);
        std::thread::scope(|s| {
            s.spawn(|| {
                // Another thread is "inside" the expirer for a while, as a
                // preempted worker would be.
                let _guard = bench.expirer.lock().unwrap();
                locked.wait();
                std::thread::sleep(std::time::Duration::from_millis(50));
            });
            locked.wait();
            let hold = worker.reserve(BuyerId(99));
            worker.commit(hold);
        });
        worker.tend();
    }

    #[test]
    fn xorshift_stays_below_its_bound() {
        let mut rng = XorShift::new(42);
        assert!((0..10_000).all(|_| rng.below(10) < 10));
    }
}
