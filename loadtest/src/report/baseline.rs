//! Comparison with a previous report (`--baseline previous.json`): each
//! figure's change, and whether it got worse.
//!
//! Owns the direction of "better" per figure (lower latency is better,
//! higher throughput is better). Never fails a run by itself: thresholds do.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::threshold::known_figures;

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

/// Changes of every figure both reports have, in name order.
pub fn compare(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> Vec<Change> {
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
        let get = |n: &str| c.iter().find(|x| x.figure == n).unwrap().clone();
        assert_eq!(get("reserve.p99").change_pct, Some(50.0));
        assert!(get("reserve.p99").worse);
        assert!(!get("reserve.rate").worse);
        assert!((get("reserve.rate").change_pct.unwrap() - 20.0).abs() < 1e-9);
        let o = get("oversold");
        assert!(o.worse && o.change_pct.is_none());
    }
}
