//! Comparison with a previous report (`--baseline previous.json`): each
//! figure's change, whether it got worse, sorted by impact; and a warning
//! when the two runs are not comparable (another scenario, another load,
//! one of them invalid).
//!
//! Owns the direction of "better" per figure (lower latency is better,
//! higher throughput is better). Never fails a run by itself: thresholds do.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Report;
use crate::threshold::known_figures;

/// Why two reports may not be compared figure by figure.
pub fn warnings(before: &Report, after: &Report) -> Vec<String> {
    let mut w = Vec::new();
    if before.scenario != after.scenario {
        w.push(format!(
            "different scenarios: {:?} then {:?}",
            before.scenario, after.scenario
        ));
    } else if !before.provenance.scenario_toml.is_empty()
        && strip_ids(&before.provenance.scenario_toml) != strip_ids(&after.provenance.scenario_toml)
    {
        w.push(format!(
            "scenario {:?} was edited between the runs",
            after.scenario
        ));
    }
    let load = |r: &Report| {
        (
            r.bursts.iter().map(|b| b.buyers).sum::<u64>(),
            r.level,
            r.protocol.clone(),
        )
    };
    let (b, a) = (load(before), load(after));
    if b != a {
        w.push(format!(
            "different load: {} burst buyers at x{:.2} over {} then {} at x{:.2} over {}",
            b.0, b.1, b.2, a.0, a.1, a.2
        ));
    }
    for (r, when) in [(before, "the baseline"), (after, "this run")] {
        if !r.health.valid {
            w.push(format!(
                "{when} is invalid (the generator was the bottleneck): its figures prove nothing"
            ));
        }
        if r.interrupted {
            w.push(format!("{when} was interrupted: its figures are partial"));
        }
    }
    w
}

/// Scenario text without the per-run id suffixes (`-a1b2c3`).
fn strip_ids(toml: &str) -> String {
    toml.lines()
        .filter(|l| !l.trim_start().starts_with("id ="))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One figure before and after.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub figure: String,
    pub before: f64,
    pub after: f64,
    /// Relative change in percent (`None` when `before` is 0).
    pub change_pct: Option<f64>,
    pub worse: bool,
}

/// Changes of every figure both reports have, by impact: worse first,
/// then by the size of the change (a figure that appeared from 0 first).
pub fn compare(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> Vec<Change> {
    let mut changes = changes(before, after);
    let size = |c: &Change| c.change_pct.map_or(f64::INFINITY, f64::abs);
    changes.sort_by(|x, y| {
        y.worse
            .cmp(&x.worse)
            .then(size(y).total_cmp(&size(x)))
            .then(x.figure.cmp(&y.figure))
    });
    changes
}

fn changes(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> Vec<Change> {
    let lower_better: BTreeMap<String, bool> = known_figures()
        .into_iter()
        .map(|(n, _, l)| (n, l))
        .collect();
    after
        .iter()
        .filter_map(|(k, &a)| {
            let &b = before.get(k)?;
            let lower = lower_better.get(k).copied().unwrap_or(true);
            let change_pct = (b != 0.0).then(|| (a - b) / b.abs() * 100.0);
            // Below 1% is noise between two runs, not a regression.
            let worse = match change_pct {
                Some(p) => {
                    if lower {
                        p > 1.0
                    } else {
                        p < -1.0
                    }
                }
                None => {
                    if lower {
                        a > 0.0
                    } else {
                        false
                    }
                }
            };
            Some(Change {
                figure: k.clone(),
                before: b,
                after: a,
                change_pct,
                worse,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direction_depends_on_the_figure() {
        let before = BTreeMap::from([
            ("reserve.p99".to_string(), 10.0),
            ("reserve.rate".to_string(), 1000.0),
            ("oversold".to_string(), 0.0),
            ("only.before".to_string(), 1.0),
        ]);
        let after = BTreeMap::from([
            ("reserve.p99".to_string(), 15.0),
            ("reserve.rate".to_string(), 1200.0),
            ("oversold".to_string(), 2.0),
            ("only.after".to_string(), 1.0),
        ]);
        let c = compare(&before, &after);
        assert_eq!(c.len(), 3);
        // Worse first, the larger change first.
        let order: Vec<&str> = c.iter().map(|x| x.figure.as_str()).collect();
        assert_eq!(order, ["oversold", "reserve.p99", "reserve.rate"]);
        let get = |n: &str| c.iter().find(|x| x.figure == n).unwrap().clone();
        assert_eq!(get("reserve.p99").change_pct, Some(50.0));
        assert!(get("reserve.p99").worse);
        assert!(!get("reserve.rate").worse);
        assert!((get("reserve.rate").change_pct.unwrap() - 20.0).abs() < 1e-9);
        let o = get("oversold");
        assert!(o.worse && o.change_pct.is_none());
    }
}

#[cfg(test)]
mod warning_tests {
    use super::*;

    #[test]
    fn different_scenarios_loads_and_invalid_runs_are_named() {
        let base = crate::report::tests::sample();
        assert!(warnings(&base, &base).is_empty());
        let mut other = base.clone();
        other.scenario = "other".into();
        other.bursts[0].buyers = 40;
        other.health.valid = false;
        let w = warnings(&base, &other);
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(w[0].starts_with("different scenarios"), "{w:?}");
        assert!(w[1].starts_with("different load: 4 burst buyers"), "{w:?}");
        assert!(w[2].starts_with("this run is invalid"), "{w:?}");
    }
}
