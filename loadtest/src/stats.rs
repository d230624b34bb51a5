//! What one worker measured, in a form that merges exactly across workers.
//!
//! Owns latency histograms (HdrHistogram, carried between processes in the
//! V2 wire format, base64 in JSON), counters, per-second series, burst send
//! times, sold-out propagation and the hold ledger the audit reads. Merging
//! two [`Stats`] is the same as having measured both in one process: nothing
//! here averages averages.
//!
//! It never decides pass or fail; [`crate::report`] and [`crate::audit`] do.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2DeflateSerializer};
use serde::{Deserialize, Serialize, Serializer};

/// Largest latency recorded, in microseconds (one minute); anything longer
/// saturates here rather than being lost.
pub const LATENCY_US_MAX: u64 = 60_000_000;
/// Per-second series length at most (the run length is capped at an hour).
pub const SERIES_S_MAX: usize = 3_700;
/// Error message samples kept per worker, for the operator to read.
pub const ERROR_SAMPLES_MAX: usize = 20;

/// A latency histogram in microseconds, 3 significant digits. In JSON it
/// is HdrHistogram's compressed V2 interchange format in base64 (what the
/// histogram log format and every HdrHistogram library read).
#[derive(Debug, Clone, PartialEq)]
pub struct Hist(pub Histogram<u64>);

impl Default for Hist {
    fn default() -> Self {
        Hist::with_sigfig(3)
    }
}

impl Hist {
    pub fn with_sigfig(sigfig: u8) -> Hist {
        Hist(
            Histogram::new_with_bounds(1, LATENCY_US_MAX, sigfig).expect("static bounds are valid"),
        )
    }

    pub fn record_us(&mut self, us: u64) {
        self.0.saturating_record(us.clamp(1, LATENCY_US_MAX));
    }

    pub fn merge(&mut self, other: &Hist) {
        // Both sides use the same bounds, so addition cannot fail.
        self.0.add(&other.0).expect("histograms share bounds");
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// Value at quantile `q` in milliseconds (0 when empty).
    pub fn q_ms(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            0.0
        } else {
            self.0.value_at_quantile(q) as f64 / 1000.0
        }
    }

    pub fn max_ms(&self) -> f64 {
        if self.0.is_empty() {
            0.0
        } else {
            self.0.max() as f64 / 1000.0
        }
    }

    pub fn mean_ms(&self) -> f64 {
        if self.0.is_empty() {
            0.0
        } else {
            self.0.mean() / 1000.0
        }
    }

    fn to_b64(&self) -> String {
        let mut buf = Vec::new();
        V2DeflateSerializer::new()
            .serialize(&self.0, &mut buf)
            .expect("serialising to memory cannot fail");
        base64::engine::general_purpose::STANDARD.encode(buf)
    }

    fn from_b64(s: &str) -> Result<Hist, String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|e| e.to_string())?;
        let h: Histogram<u64> = Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .map_err(|e| format!("{e:?}"))?;
        // Re-home into our bounds so later merges cannot fail.
        let mut out = Hist::with_sigfig(h.sigfig());
        out.0.add(&h).map_err(|e| format!("{e:?}"))?;
        Ok(out)
    }
}

impl Serialize for Hist {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_b64())
    }
}

impl<'de> Deserialize<'de> for Hist {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Hist::from_b64(&s).map_err(serde::de::Error::custom)
    }
}

/// Counts in one second of the run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Second {
    pub reserve_ok: u64,
    /// Business refusals: sold_out, limit_exceeded, not_open.
    pub reserve_refused: u64,
    pub errors: u64,
    pub commit_ok: u64,
    pub release_ok: u64,
    /// Viewers connected in this second (the most seen by the progress
    /// probe; workers' add up).
    #[serde(default)]
    pub viewers: u64,
    /// Reserve latency of the requests that were due in this second
    /// (2 significant digits: enough for a chart, small on the wire).
    pub reserve: Option<Hist>,
}

/// One drop burst as one worker saw it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BurstStats {
    pub buyers: u64,
    /// Buyers whose connection was up when the barrier released them.
    pub fired: u64,
    /// Earliest and latest send time, microseconds since the Unix epoch.
    pub first_send_us: Option<u64>,
    pub last_send_us: Option<u64>,
    pub reserved: u64,
    pub refused: u64,
    pub errors: u64,
}

impl BurstStats {
    fn merge(&mut self, o: &BurstStats) {
        self.buyers += o.buyers;
        self.fired += o.fired;
        self.first_send_us = min_opt(self.first_send_us, o.first_send_us);
        self.last_send_us = self.last_send_us.max(o.last_send_us);
        self.reserved += o.reserved;
        self.refused += o.refused;
        self.errors += o.errors;
    }

    /// Spread of send times in ms: how together the burst really fired.
    pub fn spread_ms(&self) -> Option<f64> {
        Some((self.last_send_us? - self.first_send_us?) as f64 / 1000.0)
    }
}

fn min_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// How a SKU's sold-out reached the viewers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SoldOutStats {
    /// Viewers whose frames covered this SKU at all.
    pub viewers_covering: u64,
    /// Of those, viewers that saw it sold out.
    pub viewers_seen: u64,
    /// Earliest server timestamp (ms) of a frame showing it sold out.
    pub first_server_ms: Option<u64>,
    /// Latest receipt (ms since epoch) of a viewer's first sold-out frame.
    pub last_seen_ms: Option<u64>,
}

impl SoldOutStats {
    fn merge(&mut self, o: &SoldOutStats) {
        self.viewers_covering += o.viewers_covering;
        self.viewers_seen += o.viewers_seen;
        self.first_server_ms = min_opt(self.first_server_ms, o.first_server_ms);
        self.last_seen_ms = self.last_seen_ms.max(o.last_seen_ms);
    }

    /// Time from the server announcing sold-out to the last viewer seeing it.
    pub fn all_seen_ms(&self) -> Option<u64> {
        Some(self.last_seen_ms?.saturating_sub(self.first_server_ms?))
    }
}

/// What finally happened to a hold, as far as the client knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The commit was acknowledged; `sold` units sold.
    Committed { sold: u32 },
    /// The release was acknowledged.
    Released,
    /// Left to expire: the buyer walked away, or the run ended first.
    Abandoned,
    /// A commit or release was sent but never answered: either may have won.
    Unknown,
    /// The hold expired before the commit (`hold_expired`).
    Expired,
    /// The server answered a commit or release with `hold_not_found` for a
    /// hold it had acknowledged: the hold was lost (an in-memory gateway
    /// restarted, or state was rolled back).
    Lost,
}

/// One acknowledged hold, for the audit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HoldRecord {
    pub hold: String,
    /// (SKU index in the scenario, units).
    pub lines: Vec<(u16, u32)>,
    /// When the reserve was sent and when its answer arrived (ms since epoch).
    pub sent_ms: u64,
    pub acked_ms: u64,
    /// The deadline the server gave.
    pub deadline_ms: u64,
    /// When the hold stopped being live at the earliest, client side: the
    /// release was sent (released), never (committed).
    pub end_ms: Option<u64>,
    pub outcome: Outcome,
}

/// Everything one worker (or, after merging, the whole run) measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stats {
    /// Latency histograms by name: reserve, commit, release, fanout,
    /// connect, schedule_lag, loop_lag.
    pub hist: BTreeMap<String, Hist>,
    /// Counters by name, e.g. `reserve.ok`, `reserve.error.sold_out`,
    /// `connections.ok`, `viewer.violation.seq`.
    pub counts: BTreeMap<String, u64>,
    pub series: Vec<Second>,
    pub bursts: Vec<BurstStats>,
    /// Indexed like the scenario's SKUs.
    pub soldout: Vec<SoldOutStats>,
    pub holds: Vec<HoldRecord>,
    /// The first few error messages, verbatim.
    pub error_samples: Vec<String>,
    /// Process CPU time (user + system) and wall time of the worker, and
    /// its runtime threads: the CPU-starvation check.
    pub cpu_ms: u64,
    pub wall_ms: u64,
    pub threads: u64,
    /// Resident memory at the end and viewers then connected, per worker
    /// (summed), for the bytes-per-viewer figure.
    pub rss_bytes: u64,
    pub workers: u64,
}

impl Stats {
    pub fn new(bursts: usize, skus: usize) -> Stats {
        Stats {
            bursts: vec![BurstStats::default(); bursts],
            soldout: vec![SoldOutStats::default(); skus],
            workers: 1,
            ..Stats::default()
        }
    }

    pub fn count(&self, name: &str) -> u64 {
        self.counts.get(name).copied().unwrap_or(0)
    }

    pub fn add(&mut self, name: &str, n: u64) {
        *self.counts.entry(name.to_string()).or_default() += n;
    }

    /// Sum of every counter starting with `prefix`.
    pub fn sum_prefix(&self, prefix: &str) -> u64 {
        self.counts
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
            .sum()
    }

    pub fn hist(&self, name: &str) -> Option<&Hist> {
        self.hist.get(name)
    }

    pub fn record(&mut self, name: &str, us: u64) {
        self.hist.entry(name.to_string()).or_default().record_us(us);
    }

    /// The series bucket of second `s` (clamped to the series limit).
    pub fn second(&mut self, s: u64) -> &mut Second {
        let i = (s as usize).min(SERIES_S_MAX - 1);
        if self.series.len() <= i {
            self.series.resize_with(i + 1, Second::default);
        }
        &mut self.series[i]
    }

    pub fn sample_error(&mut self, msg: String) {
        if self.error_samples.len() < ERROR_SAMPLES_MAX {
            self.error_samples.push(msg);
        }
    }

    /// Adds `o` into `self`, exactly.
    pub fn merge(&mut self, o: &Stats) {
        for (k, h) in &o.hist {
            self.hist.entry(k.clone()).or_default().merge(h);
        }
        for (k, v) in &o.counts {
            *self.counts.entry(k.clone()).or_default() += v;
        }
        if self.series.len() < o.series.len() {
            self.series.resize_with(o.series.len(), Second::default);
        }
        for (a, b) in self.series.iter_mut().zip(&o.series) {
            a.reserve_ok += b.reserve_ok;
            a.reserve_refused += b.reserve_refused;
            a.errors += b.errors;
            a.commit_ok += b.commit_ok;
            a.release_ok += b.release_ok;
            a.viewers += b.viewers;
            match (&mut a.reserve, &b.reserve) {
                (Some(x), Some(y)) => x.merge(y),
                (None, Some(y)) => a.reserve = Some(y.clone()),
                _ => {}
            }
        }
        if self.bursts.len() < o.bursts.len() {
            self.bursts.resize_with(o.bursts.len(), BurstStats::default);
        }
        for (a, b) in self.bursts.iter_mut().zip(&o.bursts) {
            a.merge(b);
        }
        if self.soldout.len() < o.soldout.len() {
            self.soldout
                .resize_with(o.soldout.len(), SoldOutStats::default);
        }
        for (a, b) in self.soldout.iter_mut().zip(&o.soldout) {
            a.merge(b);
        }
        self.holds.extend(o.holds.iter().cloned());
        for e in &o.error_samples {
            self.sample_error(e.clone());
        }
        self.cpu_ms += o.cpu_ms;
        self.wall_ms = self.wall_ms.max(o.wall_ms);
        self.threads += o.threads;
        self.rss_bytes += o.rss_bytes;
        self.workers += o.workers;
    }
}

/// A worker's shared, lock-protected [`Stats`]. Recording takes a short
/// uncontended mutex: simpler than per-task shards, and never held across
/// an `.await`.
#[derive(Debug, Clone)]
pub struct Recorder(Arc<Mutex<Stats>>);

impl Recorder {
    pub fn new(stats: Stats) -> Recorder {
        Recorder(Arc::new(Mutex::new(stats)))
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut Stats) -> R) -> R {
        // A panic while recording poisons the lock; the numbers are still
        // the best we have, so keep using them.
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    pub fn add(&self, name: &str, n: u64) {
        self.with(|s| s.add(name, n));
    }

    pub fn take(&self) -> Stats {
        self.with(std::mem::take)
    }
}

/// Stats through JSON and back, as a worker process sends them.
#[cfg(test)]
fn roundtrip_json(s: &Stats) -> Stats {
    serde_json::from_str(&serde_json::to_string(s).expect("stats serialise"))
        .expect("stats deserialise")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_histograms_equal_one_histogram_of_everything() {
        let mut a = Stats::default();
        let mut b = Stats::default();
        let mut all = Hist::default();
        for v in 1..=1000u64 {
            let us = v * 37 % 5000 + 1;
            all.record_us(us);
            if v % 3 == 0 {
                a.record("reserve", us)
            } else {
                b.record("reserve", us)
            }
        }
        // Through JSON, as worker processes send them.
        let a = roundtrip_json(&a);
        let b = roundtrip_json(&b);
        let mut m = Stats::default();
        m.merge(&a);
        m.merge(&b);
        let h = m.hist("reserve").unwrap();
        assert_eq!(h.count(), 1000);
        for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(h.q_ms(q), all.q_ms(q), "q={q}");
        }
        assert_eq!(h.max_ms(), all.max_ms());
    }

    #[test]
    fn merge_adds_counts_series_and_keeps_burst_extremes() {
        let mut a = Stats::new(1, 1);
        let mut b = Stats::new(1, 1);
        a.add("reserve.ok", 3);
        b.add("reserve.ok", 4);
        b.add("reserve.error.sold_out", 2);
        a.second(2).reserve_ok = 1;
        b.second(5).reserve_ok = 2;
        a.bursts[0] = BurstStats {
            buyers: 5,
            fired: 5,
            first_send_us: Some(1_000),
            last_send_us: Some(1_400),
            ..Default::default()
        };
        b.bursts[0] = BurstStats {
            buyers: 5,
            fired: 4,
            first_send_us: Some(1_200),
            last_send_us: Some(3_000),
            ..Default::default()
        };
        a.soldout[0] = SoldOutStats {
            viewers_covering: 2,
            viewers_seen: 2,
            first_server_ms: Some(50),
            last_seen_ms: Some(80),
        };
        b.soldout[0] = SoldOutStats {
            viewers_covering: 3,
            viewers_seen: 1,
            first_server_ms: Some(40),
            last_seen_ms: Some(70),
        };
        let mut m = Stats::new(1, 1);
        m.workers = 0;
        m.merge(&roundtrip_json(&a));
        m.merge(&roundtrip_json(&b));
        assert_eq!(m.count("reserve.ok"), 7);
        assert_eq!(m.sum_prefix("reserve."), 9);
        assert_eq!(m.series.len(), 6);
        assert_eq!(m.series[2].reserve_ok + m.series[5].reserve_ok, 3);
        assert_eq!(m.bursts[0].fired, 9);
        assert_eq!(m.bursts[0].spread_ms(), Some(2.0));
        assert_eq!(m.soldout[0].viewers_seen, 3);
        assert_eq!(m.soldout[0].all_seen_ms(), Some(40));
        assert_eq!(m.workers, 2);
    }

    #[test]
    fn latencies_saturate_instead_of_vanishing() {
        let mut h = Hist::default();
        h.record_us(u64::MAX);
        h.record_us(0);
        assert_eq!(h.count(), 2);
        assert!(h.max_ms() >= 59_000.0);
    }
}

/// One second of the run (by the second each request was due).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub t_s: u64,
    /// Reserves due in this second, whatever their answer: the offered load.
    #[serde(default)]
    pub offered: u64,
    pub reserve_ok: u64,
    pub reserve_refused: u64,
    pub errors: u64,
    pub commits: u64,
    pub releases: u64,
    pub reserve_p50_ms: f64,
    pub reserve_p99_ms: f64,
    /// Viewers connected (the most seen in the second).
    #[serde(default)]
    pub viewers: u64,
}
