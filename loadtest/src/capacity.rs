//! `--find-capacity`: step the load up (burst sizes and arrival rates, by
//! `--capacity-step`) until a threshold breaks, refine between the last
//! level that held and the first that broke, and report the headroom
//! against the planned event ("holds 1.5x the planned burst").
//!
//! Owns the search (a pure state machine, [`Search`], tested without a
//! server) and the wording. An oversell at any level ends the search at
//! once; a generator that becomes the bottleneck ends it too, and the
//! report says the server's limit was not reached.

use serde::{Deserialize, Serialize};

/// How one level went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Level {
    pub factor: f64,
    pub held: bool,
    /// The generator was healthy (otherwise the level proves nothing).
    pub valid: bool,
    pub oversold: u64,
    pub detail: String,
}

/// The search's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capacity {
    pub levels: Vec<Level>,
    pub held_max: Option<f64>,
    pub broke_at: Option<f64>,
    pub generator_limited: bool,
    pub oversold: bool,
    pub summary: String,
}

/// Search state: which factor to try next.
#[derive(Debug, Clone)]
pub struct Search {
    step: f64,
    max: f64,
    refine_left: u32,
    /// Downward steps left when even the plan breaks.
    down_left: u32,
    pub levels: Vec<Level>,
}

impl Search {
    pub fn new(step: f64, max: f64, refine: u32) -> Search {
        Search {
            step: step.max(1.05),
            max: max.max(1.0),
            refine_left: refine,
            down_left: 4,
            levels: Vec::new(),
        }
    }

    fn held_max(&self) -> Option<f64> {
        self.levels
            .iter()
            .filter(|l| l.held)
            .map(|l| l.factor)
            .reduce(f64::max)
    }

    fn broke_min(&self) -> Option<f64> {
        self.levels
            .iter()
            .filter(|l| !l.held && l.valid)
            .map(|l| l.factor)
            .reduce(f64::min)
    }

    /// The next factor to run, or `None` when the search is over.
    pub fn next_factor(&mut self) -> Option<f64> {
        let Some(last) = self.levels.last() else {
            return Some(1.0);
        };
        if last.oversold > 0 || !last.valid {
            return None;
        }
        match (self.held_max(), self.broke_min()) {
            (Some(g), None) => (g < self.max).then(|| (g * self.step).min(self.max)),
            (Some(g), Some(b)) => {
                if self.refine_left == 0 || b / g < 1.05 {
                    return None;
                }
                self.refine_left -= 1;
                Some((g * b).sqrt())
            }
            (None, Some(b)) => {
                if self.down_left == 0 {
                    return None;
                }
                self.down_left -= 1;
                Some(b / self.step)
            }
            (None, None) => None,
        }
    }

    pub fn record(&mut self, level: Level) {
        self.levels.push(level);
    }

    /// The result and its one-line summary; `planned` names the load at 1.0x.
    pub fn finish(self, planned: &str) -> Capacity {
        let held_max = self.held_max();
        let broke_at = self.broke_min();
        let oversold = self.levels.iter().any(|l| l.oversold > 0);
        let generator_limited = self.levels.last().is_some_and(|l| !l.valid);
        let breach = self
            .levels
            .iter()
            .filter(|l| !l.held && l.valid)
            .min_by(|a, b| a.factor.total_cmp(&b.factor))
            .map(|l| format!("; x{:.2} broke: {}", l.factor, l.detail))
            .unwrap_or_default();
        let summary = if oversold {
            let l = self
                .levels
                .iter()
                .find(|l| l.oversold > 0)
                .expect("some level oversold");
            format!(
                "OVERSOLD {} units at x{:.2}: the deployment does not hold ({planned})",
                l.oversold, l.factor
            )
        } else {
            match held_max {
                Some(g) if generator_limited => format!(
                    "holds at least {g:.2}x the planned load ({planned}); the load generator became the bottleneck at x{:.2} before the server did: add --workers",
                    self.levels.last().map_or(0.0, |l| l.factor)
                ),
                Some(g) if broke_at.is_none() => format!("holds {g:.2}x the planned load ({planned}), the most tried (--capacity-max)"),
                Some(g) => format!("holds {g:.2}x the planned load ({planned}){breach}"),
                None if generator_limited => "no level completed with a healthy generator: the results say nothing about the server".to_string(),
                None => format!("does NOT hold the planned load ({planned}){breach}"),
            }
        };
        Capacity {
            levels: self.levels,
            held_max,
            broke_at,
            generator_limited,
            oversold,
            summary,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(factor: f64, held: bool) -> Level {
        Level {
            factor,
            held,
            valid: true,
            oversold: 0,
            detail: if held {
                "ok".into()
            } else {
                "reserve.p99 = 80 (< 50)".into()
            },
        }
    }

    /// Runs the search against a server that holds up to `limit`.
    fn search_with_limit(limit: f64) -> Capacity {
        let mut s = Search::new(1.5, 16.0, 2);
        let mut runs = 0;
        while let Some(f) = s.next_factor() {
            runs += 1;
            assert!(runs < 20, "search does not end");
            s.record(level(f, f <= limit));
        }
        s.finish("500 buyers")
    }

    #[test]
    fn steps_up_then_refines() {
        let c = search_with_limit(2.0);
        let factors: Vec<f64> = c
            .levels
            .iter()
            .map(|l| (l.factor * 1000.0).round() / 1000.0)
            .collect();
        // 1, 1.5, 2.25 (breaks), then sqrt(1.5 * 2.25) = 1.837 (holds), then sqrt(1.837 * 2.25) = 2.033 (breaks).
        assert_eq!(factors, vec![1.0, 1.5, 2.25, 1.837, 2.033]);
        assert!((c.held_max.unwrap() - 1.837).abs() < 1e-3);
        assert!(
            c.summary
                .starts_with("holds 1.84x the planned load (500 buyers); x2.03 broke"),
            "{}",
            c.summary
        );
    }

    #[test]
    fn stops_at_the_maximum() {
        let c = search_with_limit(100.0);
        assert_eq!(c.held_max, Some(16.0));
        assert!(c.summary.contains("the most tried"));
    }

    #[test]
    fn steps_down_when_the_plan_breaks() {
        let c = search_with_limit(0.5);
        // 1 and 0.67 break, 0.44 holds, then refinement: 0.54 breaks, 0.49 holds.
        let held = c.held_max.unwrap();
        assert!(held > 0.44 && held <= 0.5, "{held}");
        assert!(c.summary.starts_with("holds 0.49x"), "{}", c.summary);
    }

    #[test]
    fn oversell_and_generator_limits_end_the_search() {
        let mut s = Search::new(1.5, 16.0, 2);
        assert_eq!(s.next_factor(), Some(1.0));
        s.record(level(1.0, true));
        assert_eq!(s.next_factor(), Some(1.5));
        s.record(Level {
            oversold: 3,
            ..level(1.5, false)
        });
        assert_eq!(s.next_factor(), None);
        assert!(
            s.finish("x")
                .summary
                .starts_with("OVERSOLD 3 units at x1.50")
        );

        let mut s = Search::new(2.0, 16.0, 2);
        s.next_factor();
        s.record(level(1.0, true));
        s.next_factor();
        s.record(Level {
            valid: false,
            ..level(2.0, false)
        });
        assert_eq!(s.next_factor(), None);
        let c = s.finish("x");
        assert!(
            c.generator_limited && c.summary.contains("load generator became the bottleneck"),
            "{}",
            c.summary
        );
    }
}
