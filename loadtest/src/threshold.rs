//! Pass/fail thresholds in k6's style: `reserve.p99<50ms`, `errors.rate<0.1%`.
//!
//! Owns the grammar, the list of figures a threshold may name and the
//! comparison. Figures come from [`crate::report::Report::figures`], always in
//! canonical units: milliseconds for times, a fraction for rates, plain
//! numbers for counts and per-second throughputs. A threshold that names an
//! unknown figure is a usage error at start, never a silent pass at the end.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// What kind of number a figure is; decides which units a threshold may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Milliseconds; thresholds may say `us`, `ms` (default) or `s`.
    Time,
    /// A fraction; thresholds may say `%` or give the fraction.
    Ratio,
    /// A count or a per-second rate; plain numbers.
    Number,
}

/// Latencies a threshold may name: `reserve` is every reserve;
/// `reserve_ok` those that got a hold, `reserve_refused` the sale
/// refusals (sold_out, limit_exceeded, not_open).
const LATENCIES: [&str; 7] = [
    "reserve",
    "reserve_ok",
    "reserve_refused",
    "commit",
    "release",
    "fanout",
    "connect",
];
const STATS: [&str; 7] = ["p50", "p90", "p95", "p99", "p99.9", "max", "mean"];

/// Every figure a threshold may name, with its kind and whether lower is
/// better (for the baseline comparison).
pub fn known_figures() -> Vec<(String, Kind, bool)> {
    let mut v = Vec::new();
    for l in LATENCIES {
        for s in STATS {
            v.push((format!("{l}.{s}"), Kind::Time, true));
        }
    }
    for l in ["reserve", "commit", "release"] {
        v.push((format!("{l}.count"), Kind::Number, false));
        v.push((format!("{l}.rate"), Kind::Number, false));
    }
    v.push(("reserve.offered_rate".into(), Kind::Number, false));
    v.push(("reserve.attempts".into(), Kind::Number, false));
    v.push(("errors.count".into(), Kind::Number, true));
    v.push(("errors.rate".into(), Kind::Ratio, true));
    v.push(("refusals.rate".into(), Kind::Ratio, true));
    v.push(("connections.ok".into(), Kind::Number, false));
    v.push(("connections.failed".into(), Kind::Number, true));
    v.push(("connections.failed_rate".into(), Kind::Ratio, true));
    v.push(("viewer.violations".into(), Kind::Number, true));
    v.push(("soldout.all_seen".into(), Kind::Time, true));
    v.push(("burst.spread".into(), Kind::Time, true));
    v.push(("soldout.after_open".into(), Kind::Time, true));
    v.push(("oversold".into(), Kind::Number, true));
    v
}

/// The kind of a known figure.
pub fn kind_of(metric: &str) -> Option<Kind> {
    known_figures()
        .into_iter()
        .find(|(n, _, _)| n == metric)
        .map(|(_, k, _)| k)
}

/// A figure's value with its unit: `5.0 ms`, `1.250 s`, `0.120%`, `1921`,
/// `31.5/s`. Unknown figures print as plain numbers.
pub fn with_unit(metric: &str, v: f64) -> String {
    match kind_of(metric) {
        Some(Kind::Time) if v.abs() >= 1000.0 => format!("{:.3} s", v / 1000.0),
        Some(Kind::Time) if v.abs() >= 10.0 => format!("{v:.1} ms"),
        Some(Kind::Time) => format!("{v:.2} ms"),
        Some(Kind::Ratio) => format!("{:.3}%", v * 100.0),
        _ if metric.ends_with("rate") => format!("{v:.1}/s"),
        _ if v.fract() == 0.0 => format!("{v:.0}"),
        _ => format!("{v:.3}"),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "==")]
    Eq,
}

impl Op {
    fn holds(self, actual: f64, limit: f64) -> bool {
        match self {
            Op::Lt => actual < limit,
            Op::Le => actual <= limit,
            Op::Gt => actual > limit,
            Op::Ge => actual >= limit,
            Op::Eq => (actual - limit).abs() < 1e-9,
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Eq => "==",
        }
    }
}

/// A parsed threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    /// As the operator wrote it.
    pub expr: String,
    pub metric: String,
    pub op: Op,
    /// In the figure's canonical unit (ms, fraction, number).
    pub limit: f64,
}

/// A threshold that does not parse; says what was expected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("threshold {expr:?}: {why}")]
pub struct ThresholdError {
    pub expr: String,
    pub why: String,
}

impl Threshold {
    pub fn parse(expr: &str) -> Result<Threshold, ThresholdError> {
        let err = |why: String| ThresholdError {
            expr: expr.to_string(),
            why,
        };
        let s: String = expr.chars().filter(|c| !c.is_whitespace()).collect();
        let at = s
            .find(['<', '>', '='])
            .ok_or_else(|| err("expected <figure><op><value>, e.g. reserve.p99<50ms".into()))?;
        let (metric, rest) = s.split_at(at);
        let (op, value) = if let Some(v) = rest.strip_prefix("<=") {
            (Op::Le, v)
        } else if let Some(v) = rest.strip_prefix(">=") {
            (Op::Ge, v)
        } else if let Some(v) = rest.strip_prefix("==") {
            (Op::Eq, v)
        } else if let Some(v) = rest.strip_prefix('<') {
            (Op::Lt, v)
        } else if let Some(v) = rest.strip_prefix('>') {
            (Op::Gt, v)
        } else {
            return Err(err("the operator must be <, <=, >, >= or ==".into()));
        };
        let metric = metric.replace(".p999", ".p99.9");
        let kind = kind_of(&metric).ok_or_else(|| {
            let names: Vec<String> = known_figures().into_iter().map(|(n, _, _)| n).collect();
            err(format!(
                "unknown figure {metric:?}; known: {}",
                names.join(", ")
            ))
        })?;
        let split = value
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == 'e' || c == '+'))
            .unwrap_or(value.len());
        let (num, unit) = value.split_at(split);
        let num: f64 = num
            .parse()
            .map_err(|_| err(format!("{value:?} is not a number with an optional unit")))?;
        if !num.is_finite() {
            return Err(err("the value must be finite".into()));
        }
        let limit = match (kind, unit) {
            (Kind::Time, "" | "ms") => num,
            (Kind::Time, "us" | "µs") => num / 1000.0,
            (Kind::Time, "s") => num * 1000.0,
            (Kind::Ratio, "") => num,
            (Kind::Ratio, "%") => num / 100.0,
            (Kind::Number, "" | "/s") => num,
            (k, u) => {
                return Err(err(format!(
                    "unit {u:?} does not fit {metric} ({k:?}); use {}",
                    unit_hint(k)
                )));
            }
        };
        Ok(Threshold {
            expr: expr.to_string(),
            metric,
            op,
            limit,
        })
    }

    /// Checks this threshold against the run's figures.
    pub fn check(&self, figures: &BTreeMap<String, f64>) -> ThresholdResult {
        let actual = figures.get(&self.metric).copied();
        let ok = actual.is_some_and(|a| self.op.holds(a, self.limit));
        ThresholdResult {
            expr: self.expr.clone(),
            metric: self.metric.clone(),
            actual,
            ok,
        }
    }
}

fn unit_hint(k: Kind) -> &'static str {
    match k {
        Kind::Time => "us, ms or s",
        Kind::Ratio => "% or a fraction",
        Kind::Number => "a plain number",
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {}",
            self.metric,
            self.op.symbol(),
            with_unit(&self.metric, self.limit)
        )
    }
}

/// One threshold's verdict. A figure the run did not produce (no commits
/// at all, say) fails: a gate must not pass on missing data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThresholdResult {
    pub expr: String,
    pub metric: String,
    pub actual: Option<f64>,
    pub ok: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_into_canonical_values() {
        let t = Threshold::parse("reserve.p99<50ms").unwrap();
        assert_eq!(
            (t.metric.as_str(), t.op, t.limit),
            ("reserve.p99", Op::Lt, 50.0)
        );
        assert_eq!(Threshold::parse("reserve.p99 < 0.5s").unwrap().limit, 500.0);
        assert_eq!(Threshold::parse("fanout.p99.9<=250us").unwrap().limit, 0.25);
        assert_eq!(
            Threshold::parse("commit.p999<7").unwrap().metric,
            "commit.p99.9"
        );
        assert_eq!(Threshold::parse("errors.rate<0.1%").unwrap().limit, 0.001);
        assert_eq!(Threshold::parse("errors.rate<0.01").unwrap().limit, 0.01);
        let t = Threshold::parse("reserve.rate>=1000/s").unwrap();
        assert_eq!((t.op, t.limit), (Op::Ge, 1000.0));
        assert_eq!(Threshold::parse("oversold==0").unwrap().op, Op::Eq);
    }

    #[test]
    fn values_print_with_their_units() {
        assert_eq!(with_unit("soldout.all_seen", 5.0), "5.00 ms");
        assert_eq!(with_unit("reserve.p99", 42.25), "42.2 ms");
        assert_eq!(with_unit("reserve.p99", 1500.0), "1.500 s");
        assert_eq!(with_unit("errors.rate", 0.0012), "0.120%");
        assert_eq!(with_unit("reserve.rate", 31.5), "31.5/s");
        assert_eq!(with_unit("commit.count", 1921.0), "1921");
        let t = Threshold::parse("soldout.all_seen<1s").unwrap();
        assert_eq!(t.to_string(), "soldout.all_seen < 1.000 s");
    }

    #[test]
    fn rejects_what_it_cannot_judge() {
        for bad in [
            "reserve.p99",
            "reserve.p98<5ms",
            "nope<1",
            "reserve.p99<fast",
            "errors.rate<5ms",
            "reserve.p99<5%",
            "reserve.p99=<5",
            "reserve.count>1ms",
        ] {
            assert!(Threshold::parse(bad).is_err(), "{bad} parsed");
        }
        let e = Threshold::parse("reserve.p98<5ms").unwrap_err().to_string();
        assert!(e.contains("reserve.p99"), "lists known figures: {e}");
    }

    #[test]
    fn checks_against_figures_and_fails_on_missing_data() {
        let figures = BTreeMap::from([
            ("reserve.p99".to_string(), 42.0),
            ("errors.rate".to_string(), 0.002),
        ]);
        assert!(
            Threshold::parse("reserve.p99<50ms")
                .unwrap()
                .check(&figures)
                .ok
        );
        assert!(
            !Threshold::parse("reserve.p99<42ms")
                .unwrap()
                .check(&figures)
                .ok
        );
        assert!(
            Threshold::parse("reserve.p99<=42ms")
                .unwrap()
                .check(&figures)
                .ok
        );
        assert!(
            !Threshold::parse("errors.rate<0.1%")
                .unwrap()
                .check(&figures)
                .ok
        );
        let missing = Threshold::parse("commit.p99<1s").unwrap().check(&figures);
        assert!(!missing.ok && missing.actual.is_none());
    }
}
