//! The report: every figure of a run, its generator-health verdict, audit,
//! thresholds and baseline comparison, in one serialisable value.
//!
//! Owns turning merged [`Stats`] into figures and the health verdict. The
//! submodules render it: [`table`] (terminal), [`html`] (self-contained
//! page with SVG charts), [`baseline`] (change against a previous report).
//! JSON is the report itself (`--out`), read back by `--baseline`.

pub mod baseline;
pub mod html;
pub mod table;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::audit::Audit;
use crate::coordinator::Outcome;
use crate::preflight::Decision;
use crate::roles::host::{HostEvent, StockSeries};
pub use crate::stats::Point;
use crate::stats::{Hist, Stats};
use crate::threshold::ThresholdResult;

/// Report format version, bumped on incompatible changes.
pub const VERSION: u32 = 2;

/// Percentiles of one latency, in ms, measured from the moment each
/// request was due (its intended send time), not from when it was sent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    #[serde(default)]
    pub p95: f64,
    pub p99: f64,
    #[serde(rename = "p99.9")]
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Latency {
    pub fn of(h: &Hist) -> Latency {
        Latency {
            count: h.count(),
            p50: h.q_ms(0.5),
            p90: h.q_ms(0.9),
            p95: h.q_ms(0.95),
            p99: h.q_ms(0.99),
            p999: h.q_ms(0.999),
            max: h.max_ms(),
            mean: h.mean_ms(),
        }
    }
}

/// One drop burst.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Burst {
    pub at_s: f64,
    pub skus: Vec<String>,
    pub buyers: u64,
    pub fired: u64,
    /// Spread of the actual send times: how together it fired.
    pub spread_ms: Option<f64>,
    pub reserved: u64,
    pub refused: u64,
    pub errors: u64,
    /// Fired buyers over the send spread: the rate the burst offered, per
    /// second (a 300-buyer burst over 6 ms offers 50,000/s; the per-second
    /// series cannot show it).
    #[serde(default)]
    pub offered_per_s: Option<f64>,
    /// Latency of the reserves that got a hold, and of the refused ones.
    #[serde(default)]
    pub ok: Option<Latency>,
    #[serde(default)]
    pub refused_latency: Option<Latency>,
}

/// One SKU's figures: latencies by answer, and when it sold out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SkuFigures {
    pub sku: String,
    pub ok: Option<Latency>,
    pub refused: Option<Latency>,
    /// Seconds after the start when it opened: created open (0 or its
    /// `create_at_s`) or the host's `open` action.
    pub opened_at_s: Option<f64>,
    /// From opening to the server's first sold-out frame, in ms.
    pub open_to_sold_out_ms: Option<f64>,
}

/// What produced the report: enough to run it again.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// The scenario as run (command-line overrides applied), as TOML.
    pub scenario_toml: String,
    pub seed: u64,
    pub command_line: Vec<String>,
    pub loadtest_version: String,
    /// From the gateway's `/readyz`, when it reports one.
    pub gateway_version: Option<String>,
    /// The gateway's persistence mode (`memory`, `durable`, `async`).
    pub gateway_persistence: String,
}

/// Sold-out propagation of one SKU.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SoldOut {
    pub sku: String,
    pub viewers_covering: u64,
    pub viewers_seen: u64,
    /// From the server's first sold-out frame to the last viewer seeing it.
    pub all_seen_ms: Option<u64>,
}

/// Whether the generator, not the server, limited the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub valid: bool,
    pub reasons: Vec<String>,
    /// Measures within [`BORDERLINE_FRACTION`] of their limit: the run is
    /// valid, but barely; a rerun may not be.
    #[serde(default)]
    pub borderline: Vec<String>,
    pub loop_lag_p99_ms: f64,
    pub loop_lag_max_ms: f64,
    pub schedule_lag_p99_ms: f64,
    /// CPU time over wall time per runtime thread, worst case over workers.
    pub cpu_per_thread: f64,
    pub dropped_arrivals: u64,
    pub socket_exhaustion: u64,
    pub rss_bytes: u64,
    pub bytes_per_connection: Option<u64>,
}

/// A health measure at or above this fraction of its limit is borderline.
pub const BORDERLINE_FRACTION: f64 = 0.9;

/// Limits the health verdict applies.
#[derive(Debug, Clone, Copy)]
pub struct HealthLimits {
    pub lag_max_ms: f64,
    pub cpu_max: f64,
    pub burst_spread_max_ms: f64,
}

/// A whole run's report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub version: u32,
    pub scenario: String,
    pub target: String,
    pub protocol: String,
    pub started_unix_ms: u64,
    pub duration_s: f64,
    /// Load factor against the scenario (1.0 except in a capacity search).
    pub level: f64,
    pub workers: u64,
    pub preflight: Option<Decision>,
    pub latency: BTreeMap<String, Latency>,
    pub counts: BTreeMap<String, u64>,
    /// Refusals and failures by `op.code`, e.g. `reserve.sold_out`.
    pub errors: BTreeMap<String, u64>,
    pub throughput: Vec<Point>,
    pub stock: Vec<StockSeries>,
    pub bursts: Vec<Burst>,
    pub soldout: Vec<SoldOut>,
    pub host: Vec<HostEvent>,
    pub health: Health,
    pub audit: Audit,
    pub thresholds: Vec<ThresholdResult>,
    /// Every named figure thresholds and baselines use.
    pub figures: BTreeMap<String, f64>,
    pub baseline: Vec<baseline::Change>,
    /// Why the baseline comparison may mislead (another scenario or load,
    /// an invalid run).
    #[serde(default)]
    pub baseline_warnings: Vec<String>,
    pub capacity: Option<crate::capacity::Capacity>,
    pub error_samples: Vec<String>,
    pub interrupted: bool,
    #[serde(default)]
    pub skus: Vec<SkuFigures>,
    /// Every latency histogram of the run, raw: HdrHistogram's compressed
    /// V2 interchange format, base64 (decode with any HdrHistogram
    /// library's `decodeFromCompressedByteBuffer`), values in microseconds.
    #[serde(default)]
    pub histograms: BTreeMap<String, Hist>,
    #[serde(default)]
    pub provenance: Provenance,
}

impl Report {
    /// Builds the report of one run (before audit and thresholds are added).
    pub fn build(
        o: &Outcome,
        target: &str,
        level: f64,
        preflight: Option<Decision>,
        limits: HealthLimits,
    ) -> Report {
        let s = &o.stats;
        let sc = &o.scenario;
        let latency: BTreeMap<String, Latency> = s
            .hist
            .iter()
            .map(|(k, h)| (k.clone(), Latency::of(h)))
            .collect();
        let mut errors = BTreeMap::new();
        for op in ["reserve", "commit", "release"] {
            let prefix = format!("{op}.error.");
            for (k, v) in s
                .counts
                .range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
            {
                errors.insert(format!("{op}.{}", &k[prefix.len()..]), *v);
            }
        }
        for (k, v) in s
            .counts
            .range("connections.failed.".to_string()..)
            .take_while(|(k, _)| k.starts_with("connections.failed."))
        {
            errors.insert(format!("connect.{}", &k["connections.failed.".len()..]), *v);
        }
        let throughput = s
            .series
            .iter()
            .enumerate()
            .map(|(t, b)| Point {
                t_s: t as u64,
                offered: b.reserve.as_ref().map_or(0, Hist::count),
                reserve_ok: b.reserve_ok,
                reserve_refused: b.reserve_refused,
                errors: b.errors,
                commits: b.commit_ok,
                releases: b.release_ok,
                reserve_p50_ms: b.reserve.as_ref().map_or(0.0, |h| h.q_ms(0.5)),
                reserve_p99_ms: b.reserve.as_ref().map_or(0.0, |h| h.q_ms(0.99)),
                viewers: b.viewers,
            })
            .collect();
        let bursts = sc
            .bursts
            .iter()
            .zip(&s.bursts)
            .enumerate()
            .map(|(i, (spec, b))| Burst {
                at_s: spec.at_s,
                skus: sc.burst_lines(spec),
                buyers: b.buyers,
                fired: b.fired,
                spread_ms: b.spread_ms(),
                reserved: b.reserved,
                refused: b.refused,
                errors: b.errors,
                offered_per_s: b
                    .spread_ms()
                    .filter(|&ms| ms > 0.0)
                    .map(|ms| b.fired as f64 * 1000.0 / ms),
                ok: latency.get(&format!("burst.{i}.reserve_ok")).cloned(),
                refused_latency: latency.get(&format!("burst.{i}.reserve_refused")).cloned(),
            })
            .collect();
        let skus = sc
            .skus
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let opened_at_s = opened_at_s(sc, i);
                let sold_out_s = s
                    .soldout
                    .get(i)
                    .and_then(|so| so.first_server_ms)
                    .map(|ms| (ms as f64 - o.started_unix_ms as f64) / 1000.0);
                SkuFigures {
                    sku: k.id.clone(),
                    ok: latency.get(&format!("sku.{i}.reserve_ok")).cloned(),
                    refused: latency.get(&format!("sku.{i}.reserve_refused")).cloned(),
                    opened_at_s,
                    open_to_sold_out_ms: match (opened_at_s, sold_out_s) {
                        (Some(o), Some(so)) if so >= o => Some((so - o) * 1000.0),
                        _ => None,
                    },
                }
            })
            .collect();
        let soldout = sc
            .skus
            .iter()
            .zip(&s.soldout)
            .map(|(k, so)| SoldOut {
                sku: k.id.clone(),
                viewers_covering: so.viewers_covering,
                viewers_seen: so.viewers_seen,
                all_seen_ms: so.all_seen_ms(),
            })
            .collect();
        let mut r = Report {
            version: VERSION,
            scenario: sc.name.clone(),
            target: target.to_string(),
            protocol: sc.protocol().name().to_string(),
            started_unix_ms: o.started_unix_ms,
            duration_s: sc.duration_s,
            level,
            workers: s.workers,
            preflight,
            latency,
            counts: s.counts.clone(),
            errors,
            throughput,
            stock: o.stock.clone(),
            bursts,
            soldout,
            host: o.host.clone(),
            health: Health::default(),
            audit: Audit::default(),
            thresholds: Vec::new(),
            figures: BTreeMap::new(),
            baseline: Vec::new(),
            baseline_warnings: Vec::new(),
            capacity: None,
            error_samples: s.error_samples.clone(),
            interrupted: o.interrupted,
            skus,
            histograms: s.hist.clone(),
            provenance: Provenance::default(),
        };
        r.health = health(s, &r, limits, sc.viewers.count as u64);
        r.figures = r.compute_figures();
        r
    }

    /// Requests answered one way or another: acknowledged, refused or failed
    /// (connection failures are not requests).
    fn requests(&self) -> u64 {
        self.count("reserve.ok")
            + self.count("commit.ok")
            + self.count("release.ok")
            + self
                .errors
                .iter()
                .filter(|(k, _)| !k.starts_with("connect."))
                .map(|(_, v)| v)
                .sum::<u64>()
    }

    fn count(&self, k: &str) -> u64 {
        self.counts.get(k).copied().unwrap_or(0)
    }

    fn sum_prefix(&self, p: &str) -> u64 {
        self.counts
            .iter()
            .filter(|(k, _)| k.starts_with(p))
            .map(|(_, v)| v)
            .sum()
    }

    /// The named figures (see [`crate::threshold::known_figures`]).
    pub fn compute_figures(&self) -> BTreeMap<String, f64> {
        let mut f = BTreeMap::new();
        for (name, l) in &self.latency {
            for (stat, v) in [
                ("p50", l.p50),
                ("p90", l.p90),
                ("p95", l.p95),
                ("p99", l.p99),
                ("p99.9", l.p999),
                ("max", l.max),
                ("mean", l.mean),
            ] {
                f.insert(format!("{name}.{stat}"), v);
            }
        }
        let active = |pick: fn(&Point) -> u64| {
            let secs: Vec<u64> = self
                .throughput
                .iter()
                .map(pick)
                .filter(|&n| n > 0)
                .collect();
            if secs.is_empty() {
                0.0
            } else {
                secs.iter().sum::<u64>() as f64 / secs.len() as f64
            }
        };
        f.insert("reserve.count".into(), self.count("reserve.ok") as f64);
        f.insert("commit.count".into(), self.count("commit.ok") as f64);
        f.insert("release.count".into(), self.count("release.ok") as f64);
        f.insert("reserve.rate".into(), active(|p| p.reserve_ok));
        f.insert("reserve.offered_rate".into(), active(|p| p.offered));
        f.insert(
            "reserve.attempts".into(),
            self.latency.get("reserve").map_or(0, |l| l.count) as f64,
        );
        f.insert("commit.rate".into(), active(|p| p.commits));
        f.insert("release.rate".into(), active(|p| p.releases));
        let refusals: u64 = self
            .errors
            .iter()
            .filter(|(k, _)| {
                k.ends_with(".sold_out")
                    || k.ends_with(".not_open")
                    || k.ends_with(".limit_exceeded")
            })
            .map(|(_, v)| v)
            .sum();
        let failures: u64 = self
            .errors
            .iter()
            .filter(|(k, _)| !k.starts_with("connect."))
            .map(|(_, v)| v)
            .sum::<u64>()
            - refusals
            - self.count("commit.error.hold_expired");
        let requests = self.requests();
        let ratio = |n: u64, d: u64| if d == 0 { 0.0 } else { n as f64 / d as f64 };
        f.insert("errors.count".into(), failures as f64);
        f.insert("errors.rate".into(), ratio(failures, requests));
        f.insert("refusals.rate".into(), ratio(refusals, requests));
        let ok = self.count("connections.ok");
        let failed = self.sum_prefix("connections.failed.");
        f.insert("connections.ok".into(), ok as f64);
        f.insert("connections.failed".into(), failed as f64);
        f.insert("connections.failed_rate".into(), ratio(failed, ok + failed));
        f.insert(
            "viewer.violations".into(),
            self.sum_prefix("viewer.violation.") as f64,
        );
        if let Some(ms) = self.soldout.iter().filter_map(|s| s.all_seen_ms).max() {
            f.insert("soldout.all_seen".into(), ms as f64);
        }
        if let Some(ms) = self
            .bursts
            .iter()
            .filter_map(|b| b.spread_ms)
            .reduce(f64::max)
        {
            f.insert("burst.spread".into(), ms);
        }
        if let Some(ms) = self
            .skus
            .iter()
            .filter_map(|k| k.open_to_sold_out_ms)
            .reduce(f64::max)
        {
            f.insert("soldout.after_open".into(), ms);
        }
        f.insert("oversold".into(), self.audit.oversold as f64);
        f
    }

    /// Why the run failed as a whole, if it did: every request failed, or
    /// no connection could be opened. Names the codes seen and, for 401 or
    /// 403, which token to pass.
    pub fn all_failed(&self) -> Option<String> {
        let requests = self.requests();
        let failures = self.figures.get("errors.count").copied().unwrap_or(0.0) as u64;
        let conns_ok = self.count("connections.ok");
        let conns_failed = self.sum_prefix("connections.failed.");
        let every_request = requests > 0 && failures >= requests;
        let every_connection = conns_ok == 0 && conns_failed > 0;
        if !every_request && !every_connection {
            return None;
        }
        let codes: Vec<String> = self
            .errors
            .iter()
            .filter(|(k, _)| {
                !k.ends_with(".sold_out")
                    && !k.ends_with(".not_open")
                    && !k.ends_with(".limit_exceeded")
            })
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let mut why = format!(
            "every {} failed ({})",
            if every_request {
                "request"
            } else {
                "connection"
            },
            codes.join(", ")
        );
        let auth = self.errors.keys().any(|k| {
            k.ends_with("http_401")
                || k.ends_with("http_403")
                || k.ends_with(".unauthorized")
                || k.ends_with(".forbidden")
        });
        if auth {
            why.push_str(
                ": the gateway refused the token; pass --checkout-token and --admin-token with the \
                 gateway's values (`holdfast serve --demo` without tokens uses demo-checkout and demo-admin)",
            );
        }
        Some(why)
    }

    /// Process exit code, in this order of precedence: interrupted (130);
    /// the audit (4: an oversell or a loss is the server's whatever the
    /// generator did); every request failed (1: nothing was measured);
    /// generator invalid (5); a threshold breached (3); else 0.
    pub fn exit_code(&self) -> u8 {
        if self.interrupted {
            130
        } else if !self.audit.ok {
            crate::EXIT_AUDIT
        } else if self.all_failed().is_some() {
            crate::EXIT_ERROR
        } else if !self.health.valid {
            crate::EXIT_INVALID
        } else if self.thresholds.iter().any(|t| !t.ok) {
            crate::EXIT_THRESHOLD
        } else {
            0
        }
    }
}

/// When SKU `i` opened, in seconds after the start: created open, or the
/// first `open` action; `None` if it never opened during the run.
fn opened_at_s(sc: &crate::scenario::Scenario, i: usize) -> Option<f64> {
    let k = &sc.skus[i];
    let created = k.create_at_s.unwrap_or(0.0);
    match k.window.as_str() {
        "open" => Some(created),
        "scheduled" => k.opens_at_s,
        _ => sc
            .host
            .iter()
            .filter(|h| h.sku == k.id && h.action == "open")
            .map(|h| h.at_s)
            .reduce(f64::min),
    }
}

fn health(s: &Stats, r: &Report, lim: HealthLimits, viewers: u64) -> Health {
    let lag = s.hist("loop_lag").map(Latency::of).unwrap_or_default();
    let sched = s.hist("schedule_lag").map(Latency::of).unwrap_or_default();
    let cpu = if s.wall_ms == 0 || s.threads == 0 {
        0.0
    } else {
        s.cpu_ms as f64 / (s.wall_ms as f64 * s.threads as f64)
    };
    let mut h = Health {
        valid: true,
        reasons: Vec::new(),
        loop_lag_p99_ms: lag.p99,
        loop_lag_max_ms: lag.max,
        schedule_lag_p99_ms: sched.p99,
        cpu_per_thread: cpu,
        dropped_arrivals: s.count("generator.dropped_arrivals"),
        socket_exhaustion: s.count("generator.socket_exhaustion"),
        rss_bytes: s.rss_bytes,
        bytes_per_connection: None,
        borderline: Vec::new(),
    };
    // Valid but within 10% of a limit: said, so a pass is not read as
    // comfortable.
    let mut near = Vec::new();
    let mut borderline = |what: &str, actual: f64, limit: f64, unit: &str| {
        if actual <= limit && actual >= limit * BORDERLINE_FRACTION && limit > 0.0 {
            near.push(format!(
                "{what} {actual:.1} {unit} against a {limit} {unit} limit"
            ));
        }
    };
    borderline("event-loop lag p99", lag.p99, lim.lag_max_ms, "ms");
    borderline("schedule lag p99", sched.p99, lim.lag_max_ms, "ms");
    borderline("CPU per thread", cpu * 100.0, lim.cpu_max * 100.0, "%");
    for b in &r.bursts {
        if let Some(sp) = b.spread_ms {
            borderline(
                &format!("burst at {}s send spread", b.at_s),
                sp,
                lim.burst_spread_max_ms,
                "ms",
            );
        }
    }
    h.borderline = near;
    let conns = s.count("connections.ok");
    if conns > 0 && viewers > 0 {
        h.bytes_per_connection = Some(s.rss_bytes / conns);
    }
    let mut bad = |why: String| {
        h.valid = false;
        h.reasons.push(why);
    };
    if lag.p99 > lim.lag_max_ms {
        bad(format!(
            "the generator's event loop woke {:.1} ms late at p99 (limit {} ms): it was CPU-starved",
            lag.p99, lim.lag_max_ms
        ));
    }
    if sched.p99 > lim.lag_max_ms {
        bad(format!(
            "arrivals started {:.1} ms behind schedule at p99 (limit {} ms)",
            sched.p99, lim.lag_max_ms
        ));
    }
    if cpu > lim.cpu_max {
        bad(format!(
            "the generator used {:.0}% of its CPU (limit {:.0}%): add --workers or --threads",
            cpu * 100.0,
            lim.cpu_max * 100.0
        ));
    }
    if h.dropped_arrivals > 0 {
        bad(format!(
            "{} arrivals dropped at --inflight-max",
            h.dropped_arrivals
        ));
    }
    if h.socket_exhaustion > 0 {
        bad(format!(
            "{} connections failed for lack of local sockets or ports (EMFILE/EADDRNOTAVAIL)",
            h.socket_exhaustion
        ));
    }
    for b in &r.bursts {
        if let Some(sp) = b.spread_ms
            && sp > lim.burst_spread_max_ms
        {
            bad(format!(
                "the burst at {}s fired over {sp:.1} ms (limit {} ms): not a burst",
                b.at_s, lim.burst_spread_max_ms
            ));
        }
    }
    if s.count("generator.tasks_cut") > 0 {
        bad("requests were still running after the end and were cut".into());
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report with something in every field kind.
    pub(crate) fn sample() -> Report {
        let mut s = Stats::new(1, 1);
        for us in [800, 1200, 5000, 40_000] {
            s.record("reserve", us);
            s.record("loop_lag", 100);
        }
        s.add("reserve.ok", 3);
        s.add("reserve.error.sold_out", 1);
        s.add("reserve.error.timeout", 1);
        s.add("connections.ok", 10);
        s.second(0).reserve_ok = 3;
        s.bursts[0].buyers = 4;
        s.bursts[0].first_send_us = Some(1000);
        s.bursts[0].last_send_us = Some(1500);
        s.cpu_ms = 100;
        s.wall_ms = 1000;
        s.threads = 1;
        let sc = crate::scenario::Scenario::parse("name='x'\nduration_s=1\n[[sku]]\nid='a'\ntotal=3\n[[burst]]\nat_s=0\nbuyers=4\nsku='a'\n", "x").unwrap();
        let o = Outcome {
            scenario: sc,
            stats: s,
            stock: vec![StockSeries {
                sku: "a".into(),
                points: vec![(0.0, 3, 0, 0), (0.5, 0, 1, 2)],
            }],
            host: vec![],
            started_unix_ms: 1,
            interrupted: false,
        };
        let mut r = Report::build(
            &o,
            "http://127.0.0.1:1",
            1.0,
            None,
            HealthLimits {
                lag_max_ms: 25.0,
                cpu_max: 0.95,
                burst_spread_max_ms: 50.0,
            },
        );
        r.audit.ok = true;
        r
    }

    #[test]
    fn json_roundtrip_is_lossless() {
        let r = sample();
        let text = serde_json::to_string_pretty(&r).unwrap();
        let back: Report = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn figures_and_verdicts() {
        let r = sample();
        assert_eq!(r.figures["reserve.count"], 3.0);
        assert_eq!(r.figures["errors.count"], 1.0);
        assert!(
            (r.figures["errors.rate"] - 0.2).abs() < 1e-9,
            "{}",
            r.figures["errors.rate"]
        );
        assert!((r.figures["refusals.rate"] - 0.2).abs() < 1e-9);
        assert_eq!(r.figures["burst.spread"], 0.5);
        assert!(r.figures["reserve.p99"] >= 39.0);
        assert!(r.health.valid, "{:?}", r.health.reasons);
        assert_eq!(r.exit_code(), 0);
        let mut bad = r.clone();
        bad.audit.ok = false;
        assert_eq!(bad.exit_code(), crate::EXIT_AUDIT);
        let mut slow = r.clone();
        slow.health.valid = false;
        assert_eq!(slow.exit_code(), crate::EXIT_INVALID);
    }

    #[test]
    fn a_measure_just_under_its_limit_is_borderline() {
        let r = sample();
        let mut s = Stats::new(1, 1);
        s.record("loop_lag", 24_900);
        let lim = HealthLimits {
            lag_max_ms: 25.0,
            cpu_max: 0.95,
            burst_spread_max_ms: 50.0,
        };
        let h = health(&s, &r, lim, 0);
        assert!(h.valid, "{:?}", h.reasons);
        assert_eq!(h.borderline.len(), 1, "{:?}", h.borderline);
        assert!(
            h.borderline[0].starts_with("event-loop lag p99 24.9 ms against a 25 ms limit"),
            "{:?}",
            h.borderline
        );
        let mut r = r;
        r.health = h;
        assert!(super::table::render(&r).contains("BORDERLINE (valid, near a limit)"));
        assert_eq!(r.exit_code(), 0, "borderline is said, not failed");
        // Well under the limit: nothing said.
        let mut s = Stats::new(1, 1);
        s.record("loop_lag", 2_000);
        assert!(health(&s, &r, lim, 0).borderline.is_empty());
    }

    #[test]
    fn every_request_failing_fails_the_run_with_a_token_hint() {
        let mut r = sample();
        r.counts.clear();
        r.errors = BTreeMap::from([("reserve.http_401".to_string(), 10)]);
        r.figures = r.compute_figures();
        let why = r.all_failed().expect("a failed run");
        assert!(
            why.starts_with("every request failed (reserve.http_401 10)"),
            "{why}"
        );
        assert!(why.contains("--checkout-token"), "{why}");
        assert_eq!(r.exit_code(), crate::EXIT_ERROR);
        // Sale refusals alone are the server doing its job, not a failure.
        r.errors = BTreeMap::from([("reserve.sold_out".to_string(), 10)]);
        r.figures = r.compute_figures();
        assert_eq!(r.all_failed(), None);
    }

    #[test]
    fn starved_generator_is_invalid() {
        let mut r = sample();
        let mut s = Stats::new(1, 1);
        s.record("loop_lag", 90_000);
        s.cpu_ms = 990;
        s.wall_ms = 1000;
        s.threads = 1;
        s.add("generator.socket_exhaustion", 2);
        let h = health(
            &s,
            &r,
            HealthLimits {
                lag_max_ms: 25.0,
                cpu_max: 0.95,
                burst_spread_max_ms: 0.1,
            },
            0,
        );
        assert!(!h.valid);
        assert_eq!(h.reasons.len(), 4, "{:?}", h.reasons); // lag, cpu, sockets, burst spread
        r.health = h;
        assert_eq!(r.exit_code(), crate::EXIT_INVALID);
    }
}
