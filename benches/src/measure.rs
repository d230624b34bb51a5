//! Measuring a comparison row: the warm-up / measure / stop phases every
//! worker follows, latency histograms, and what one row reports.
//!
//! The main thread owns the clock: it lets workers warm up, flips the phase
//! to "measure" and notes the time, then flips it to "stop". Workers only
//! count what they finish while the phase reads "measure", so throughput is
//! their count over the main thread's measured interval, the same way for
//! every target. Nothing here asserts on speed.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

/// Largest latency a histogram records (10 s); anything slower is clamped,
/// and a row bounded at a few seconds cannot see more.
pub const LATENCY_MAX_NS: u64 = 10_000_000_000;

/// Significant figures kept by the latency histograms (0.1 % resolution).
const LATENCY_SIGFIG: u8 = 3;

/// A phase a worker can be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    WarmUp,
    Measure,
    Stop,
}

/// The shared phase word, written by the main thread only.
#[derive(Debug)]
pub struct Phases(AtomicU8);

impl Default for Phases {
    fn default() -> Self {
        Self(AtomicU8::new(0))
    }
}

impl Phases {
    /// What workers should be doing now.
    #[inline]
    pub fn get(&self) -> Phase {
        // Relaxed: the phase publishes no data; a worker that sees a change
        // a little late only shifts its count by a few operations.
        match self.0.load(Ordering::Relaxed) {
            0 => Phase::WarmUp,
            1 => Phase::Measure,
            _ => Phase::Stop,
        }
    }

    fn set(&self, phase: Phase) {
        let raw = match phase {
            Phase::WarmUp => 0,
            Phase::Measure => 1,
            Phase::Stop => 2,
        };
        // Relaxed: see `get`.
        self.0.store(raw, Ordering::Relaxed);
    }

    /// Runs the phases on the calling thread (blocking): warm-up, then
    /// measure for `duration`, then stop. `cpu_s` reads the CPU seconds
    /// used so far by everything the row runs; the interval reports how
    /// much of it fell in the measured part.
    pub fn drive(&self, warmup: Duration, duration: Duration, cpu_s: &dyn Fn() -> f64) -> Interval {
        std::thread::sleep(warmup);
        let (start, cpu_start) = (Instant::now(), cpu_s());
        self.set(Phase::Measure);
        std::thread::sleep(duration);
        self.set(Phase::Stop);
        Interval {
            elapsed: start.elapsed(),
            cpu_s: cpu_s() - cpu_start,
        }
    }

    /// The same, for a caller inside a tokio runtime.
    pub async fn drive_async(
        &self,
        warmup: Duration,
        duration: Duration,
        cpu_s: &dyn Fn() -> f64,
    ) -> Interval {
        tokio::time::sleep(warmup).await;
        let (start, cpu_start) = (Instant::now(), cpu_s());
        self.set(Phase::Measure);
        tokio::time::sleep(duration).await;
        self.set(Phase::Stop);
        Interval {
            elapsed: start.elapsed(),
            cpu_s: cpu_s() - cpu_start,
        }
    }
}

/// The measured part of a row.
#[derive(Debug, Clone, Copy)]
pub struct Interval {
    pub elapsed: Duration,
    /// CPU seconds the row's threads and processes used meanwhile.
    pub cpu_s: f64,
}

/// CPU seconds (user + system) another process has used, from
/// `/proc/PID/stat`; `None` if it cannot be read (not Linux, or gone).
pub fn other_process_cpu_s(pid: u32) -> Option<f64> {
    other_process_cpu_split(pid).map(|(user, system)| user + system)
}

/// CPU seconds another process has used, as (user, system): the system
/// part is mostly the network stack and syscalls.
pub fn other_process_cpu_split(pid: u32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name (which may hold spaces):
    // state is field 3, utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let user = fields.get(11)?.parse::<u64>().ok()?;
    let system = fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (per_s > 0).then(|| (user as f64 / per_s as f64, system as f64 / per_s as f64))
}

/// A latency histogram in nanoseconds.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_NS, LATENCY_SIGFIG).expect("static bounds are valid")
}

/// Records one latency (clamped into the histogram's range).
#[inline]
pub fn record(hist: &mut Histogram<u64>, ns: u64, count: u64) {
    let _ = hist.record_n(ns.clamp(1, LATENCY_MAX_NS), count);
}

/// What one target did in its measured interval.
#[derive(Debug)]
pub struct Measurement {
    /// Reserve→commit pairs finished while measuring.
    pub pairs: u64,
    /// The measured interval.
    pub elapsed: Duration,
    /// CPU seconds used during it (client and server processes together),
    /// to show how much of the machine a row actually got.
    pub cpu_s: f64,
    /// Latency of a pair as its caller saw it (ns).
    pub latency: Histogram<u64>,
    /// How the latency was taken, and anything else worth a footnote.
    pub note: String,
}

/// Latency percentiles in nanoseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Percentiles {
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub samples: u64,
}

impl Percentiles {
    pub fn of(hist: &Histogram<u64>) -> Self {
        Self {
            p50_ns: hist.value_at_quantile(0.50),
            p99_ns: hist.value_at_quantile(0.99),
            p999_ns: hist.value_at_quantile(0.999),
            samples: hist.len(),
        }
    }
}

/// Nanoseconds as a short human figure: `85 ns`, `4.2 µs`, `1.31 ms`.
pub fn format_ns(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns} ns"),
        1_000..100_000 => format!("{:.1} µs", ns as f64 / 1e3),
        100_000..1_000_000 => format!("{:.0} µs", ns as f64 / 1e3),
        _ => format!("{:.2} ms", ns as f64 / 1e6),
    }
}

/// A rate as a short human figure: `812 k`, `12.4 M`.
pub fn format_rate(per_s: f64) -> String {
    if per_s >= 1e6 {
        format!("{:.2} M", per_s / 1e6)
    } else if per_s >= 1e3 {
        format!("{:.1} k", per_s / 1e3)
    } else {
        format!("{per_s:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_short_and_in_range() {
        assert_eq!(format_ns(85), "85 ns");
        assert_eq!(format_ns(4_200), "4.2 µs");
        assert_eq!(format_ns(1_310_000), "1.31 ms");
        assert_eq!(format_rate(12_400_000.0), "12.40 M");
        assert_eq!(format_rate(81_234.0), "81.2 k");
    }

    #[test]
    fn record_clamps_instead_of_failing() {
        let mut hist = latency_histogram();
        record(&mut hist, 0, 1);
        record(&mut hist, u64::MAX, 1);
        assert_eq!(hist.len(), 2);
        assert!(hist.max() >= LATENCY_MAX_NS);
    }

    #[test]
    fn cpu_time_of_this_process_is_readable_both_ways() {
        let own = holdfast_sys::process_cpu_seconds();
        assert!(own > 0.0);
        if cfg!(target_os = "linux") {
            let via_proc = other_process_cpu_s(std::process::id()).unwrap();
            assert!(via_proc >= 0.0);
        }
    }

    #[test]
    fn phases_end_in_stop() {
        let phases = Phases::default();
        assert_eq!(phases.get(), Phase::WarmUp);
        let interval = phases.drive(
            Duration::ZERO,
            Duration::ZERO,
            &holdfast_sys::process_cpu_seconds,
        );
        assert!(interval.cpu_s >= 0.0);
        assert_eq!(phases.get(), Phase::Stop);
    }
}
