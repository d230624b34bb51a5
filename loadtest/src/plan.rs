//! A worker's share of a run, the clock every worker agrees on, and the
//! messages between the coordinator and its workers.
//!
//! Owns the division of work: viewer `v`, burst buyer `j` and arrival `k`
//! belong to worker `index` when their number modulo `count` is `index`, so
//! the workers' arrivals interleave into the planned rate exactly. It never
//! does I/O.

use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::client::net::Target;
use crate::scenario::Scenario;

/// Everything a worker needs; sent as one JSON line to a worker process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerPlan {
    pub index: u32,
    pub count: u32,
    /// Unique per run; prefixes buyer and request ids.
    pub run_id: String,
    /// Every `--target`; clients spread over them.
    pub targets: Vec<Target>,
    /// Source addresses this worker dials from (empty: kernel's choice).
    pub sources: Vec<IpAddr>,
    pub checkout_token: String,
    /// With the run's SKU ids already suffixed.
    pub scenario: Scenario,
    /// The run's t = 0, ms since the Unix epoch (same machine, same clock).
    pub start_unix_ms: u64,
    pub threads: usize,
    pub connect_concurrency_max: usize,
    pub inflight_max: usize,
    pub request_timeout_ms: u64,
    pub holds_tracked_max: usize,
    /// Checkout connections shared by this worker's arrivals.
    pub pool_size: usize,
    pub seed: u64,
}

impl WorkerPlan {
    /// Whether item number `n` is this worker's.
    pub fn mine(&self, n: u64) -> bool {
        n % self.count as u64 == self.index as u64
    }

    /// How many of `total` items are this worker's.
    pub fn share(&self, total: u64) -> u64 {
        share(total, self.index, self.count)
    }
}

/// How many of `total` items worker `index` of `count` gets.
pub fn share(total: u64, index: u32, count: u32) -> u64 {
    let (q, r) = (total / count as u64, total % count as u64);
    q + u64::from((index as u64) < r)
}

/// Coordinator to worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Control {
    /// Release burst `n`'s barrier now (the host's action before it was answered).
    Fire(usize),
    /// Stop early (Ctrl-C): finish up and report.
    Stop,
}

/// Cumulative counts a worker reports a few times a second for the
/// progress bar.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Progress {
    pub reserve_ok: u64,
    pub reserve_refused: u64,
    pub errors: u64,
    pub commits: u64,
    pub viewers: u64,
    pub frames: u64,
    pub connect_failed: u64,
    /// Reserve p99 (ms) of the last complete second, and the arrivals'
    /// schedule lag p99 (ms) so far: merged as the worst worker's.
    #[serde(default)]
    pub reserve_p99_ms: f64,
    #[serde(default)]
    pub schedule_lag_p99_ms: f64,
}

impl Progress {
    pub fn add(&mut self, o: &Progress) {
        self.reserve_p99_ms = self.reserve_p99_ms.max(o.reserve_p99_ms);
        self.schedule_lag_p99_ms = self.schedule_lag_p99_ms.max(o.schedule_lag_p99_ms);
        self.reserve_ok += o.reserve_ok;
        self.reserve_refused += o.reserve_refused;
        self.errors += o.errors;
        self.commits += o.commits;
        self.viewers += o.viewers;
        self.frames += o.frames;
        self.connect_failed += o.connect_failed;
    }
}

/// Worker to coordinator (one JSON line each, on a worker process's stdout).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Report {
    Progress(Progress),
    Done(Box<crate::stats::Stats>),
}

/// Converts between this process's monotonic clock and the wall clock all
/// workers share, anchored once so that conversions never jump.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    anchor: Instant,
    anchor_unix_us: u64,
    /// The run's t = 0 on this process's monotonic clock.
    pub start: Instant,
}

impl Clock {
    pub fn new(start_unix_ms: u64) -> Clock {
        let anchor = Instant::now();
        let anchor_unix_us = unix_us();
        let start_us = start_unix_ms * 1000;
        let start = if start_us >= anchor_unix_us {
            anchor + Duration::from_micros(start_us - anchor_unix_us)
        } else {
            anchor - Duration::from_micros(anchor_unix_us - start_us).min(anchor.elapsed())
        };
        Clock {
            anchor,
            anchor_unix_us,
            start,
        }
    }

    /// Wall-clock microseconds of a monotonic instant.
    pub fn unix_us(&self, t: Instant) -> u64 {
        if t >= self.anchor {
            self.anchor_unix_us + (t - self.anchor).as_micros() as u64
        } else {
            self.anchor_unix_us
                .saturating_sub((self.anchor - t).as_micros() as u64)
        }
    }

    pub fn now_unix_ms(&self) -> u64 {
        self.unix_us(Instant::now()) / 1000
    }

    /// The instant `s` seconds after the run start.
    pub fn at(&self, s: f64) -> Instant {
        self.start + Duration::from_secs_f64(s.max(0.0))
    }

    /// The run second an instant falls in (0 before the start).
    pub fn second_of(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.start).as_secs()
    }
}

/// Microseconds since the Unix epoch, now.
pub fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A small, fast, seedable generator (SplitMix64): buyers' choices must be
/// reproducible from `--seed`, and need no cryptographic quality.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi].
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            lo
        } else {
            lo + self.next_u64() % (hi - lo + 1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_everything_once() {
        for total in [0u64, 1, 7, 100] {
            for count in 1..5u32 {
                let sum: u64 = (0..count).map(|i| share(total, i, count)).sum();
                assert_eq!(sum, total);
                for i in 0..count {
                    assert_eq!(
                        share(total, i, count),
                        (0..total).filter(|n| n % count as u64 == i as u64).count() as u64
                    );
                }
            }
        }
    }

    #[test]
    fn clock_round_trips() {
        let c = Clock::new(unix_us() / 1000 + 1000);
        let t = c.at(2.5);
        let back = c.unix_us(t);
        let start_us = c.unix_us(c.start);
        assert!(
            (back - start_us).abs_diff(2_500_000) < 2,
            "{back} {start_us}"
        );
        assert_eq!(c.second_of(t), 2);
    }

    #[test]
    fn rng_is_reproducible_and_in_range() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..1000 {
            assert_eq!(a.next_u64(), b.next_u64());
            let u = a.unit();
            assert!((0.0..1.0).contains(&u));
            b.unit();
            let r = a.range(200, 1000);
            assert!((200..=1000).contains(&r));
            b.range(200, 1000);
        }
    }
}
