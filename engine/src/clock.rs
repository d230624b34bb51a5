//! Time as the engine sees it: milliseconds since the Unix epoch, read through
//! a [`Clock`] so tests drive expiry with a [`ManualClock`] instead of sleeping.
//!
//! Deadlines are wall-clock milliseconds (not `Instant`s) because they are
//! persisted to Redis and must mean the same thing after a restart.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of the current time in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    /// The current time. Must never go backwards by more than a few ms.
    fn now_ms(&self) -> u64;
}

/// The real wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        // A clock before 1970 is a broken machine; report 0 rather than panic.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

/// A clock that only moves when told to. Shared by cloning the `Arc` it
/// lives in; tests advance it and then run the expirer.
#[derive(Debug)]
pub struct ManualClock {
    now_ms: AtomicU64,
}

impl ManualClock {
    /// A clock reading `start_ms`.
    pub fn new(start_ms: u64) -> Self {
        Self {
            now_ms: AtomicU64::new(start_ms),
        }
    }

    /// Moves the clock forward by `ms`.
    pub fn advance(&self, ms: u64) {
        // Relaxed: the clock value publishes no other memory; every reader
        // only needs some recent value, and tests sequence advance/read on
        // one thread or through a join.
        self.now_ms.fetch_add(ms, Ordering::Relaxed);
    }

    /// Sets the clock to `ms` (may not go backwards).
    pub fn set(&self, ms: u64) {
        // Relaxed: as in `advance`.
        self.now_ms.fetch_max(ms, Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        // Relaxed: as in `advance`.
        self.now_ms.load(Ordering::Relaxed)
    }
}

impl<C: Clock> Clock for std::sync::Arc<C> {
    fn now_ms(&self) -> u64 {
        (**self).now_ms()
    }
}

/// A clock read with one atomic load: the time of the last [`refresh`],
/// taken from an inner clock. Reading the system clock costs tens of
/// nanoseconds, a large share of a reservation; deadlines are in 10 ms ticks
/// anyway, so a value refreshed every millisecond by a ticker thread is
/// exact enough and keeps the clock off the hot path.
///
/// [`refresh`]: CachedClock::refresh
#[derive(Debug)]
pub struct CachedClock<C: Clock> {
    inner: C,
    now_ms: AtomicU64,
}

impl<C: Clock> CachedClock<C> {
    pub fn new(inner: C) -> Self {
        let now = inner.now_ms();
        Self {
            inner,
            now_ms: AtomicU64::new(now),
        }
    }

    /// Reads the inner clock into the cache (never backwards).
    pub fn refresh(&self) {
        // Relaxed: the value publishes no other memory; readers only need a
        // recent time, and fetch_max keeps it monotonic across refreshers.
        self.now_ms
            .fetch_max(self.inner.now_ms(), Ordering::Relaxed);
    }
}

impl<C: Clock> Clock for CachedClock<C> {
    #[inline]
    fn now_ms(&self) -> u64 {
        // Relaxed: see `refresh`.
        self.now_ms.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_clock_moves_only_on_refresh() {
        let inner = std::sync::Arc::new(ManualClock::new(1_000));
        let cached = CachedClock::new(inner.clone());
        inner.advance(5);
        assert_eq!(cached.now_ms(), 1_000);
        cached.refresh();
        assert_eq!(cached.now_ms(), 1_005);
    }
}
