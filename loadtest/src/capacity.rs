//! `--find-capacity`: step the load up (burst sizes and arrival rates, by
//! `--capacity-step`) until a threshold breaks, refine between the last
//! level that held and the first that broke, and report the headroom
//! against the planned event ("holds 1.5x the planned burst").
//!
//! Owns the search (a pure state machine, [`Search`], tested without a
//! server) and the wording. Each level runs `--capacity-repeats` times: it
//! holds only if it held every time, and the report gives the spread of
//! the samples (one sample is noise: 3.38x then 1.41x minutes later was
//! seen). An oversell at any level ends the search at once; a generator
//! that becomes the bottleneck ends it too, and the report says the
//! server's limit was not reached. An interrupted level is no result,
//! neither held nor broke.

use serde::{Deserialize, Serialize};

/// How one level went, over its samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Level {
    pub factor: f64,
    /// Held in every sample.
    pub held: bool,
    /// The generator was healthy in every sample (otherwise the level
    /// proves nothing).
    pub valid: bool,
    pub oversold: u64,
    pub detail: String,
    /// One entry per run of this level.
    #[serde(default)]
    pub samples: Vec<Sample>,
    /// Stopped by Ctrl-C: no verdict.
    #[serde(default)]
    pub interrupted: bool,
}

/// One run of a level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub held: bool,
    pub valid: bool,
    pub reserve_p99_ms: f64,
    pub errors_rate: f64,
}

impl Level {
    /// A level from its samples (at least one).
    pub fn of(factor: f64, samples: Vec<Sample>, oversold: u64, detail: String) -> Level {
        Level {
            factor,
            held: samples.iter().all(|s| s.held),
            valid: samples.iter().all(|s| s.valid),
            oversold,
            detail,
            samples,
            interrupted: false,
        }
    }

    /// The spread of reserve p99 over the samples: `(min, max)`.
    pub fn p99_spread_ms(&self) -> Option<(f64, f64)> {
        let p = self.samples.iter().map(|s| s.reserve_p99_ms);
        let min = p.clone().reduce(f64::min)?;
        Some((min, p.reduce(f64::max)?))
    }

    /// Words for the spread: `reserve p99 12.1-15.3 ms over 3 runs (1.26x)`.
    pub fn spread_words(&self) -> String {
        match self.p99_spread_ms() {
            Some((lo, hi)) if self.samples.len() > 1 => format!(
                "reserve p99 {lo:.1}-{hi:.1} ms over {} runs ({:.2}x); held {} of {}",
                self.samples.len(),
                if lo > 0.0 { hi / lo } else { 1.0 },
                self.samples.iter().filter(|s| s.held).count(),
                self.samples.len()
            ),
            Some((lo, _)) => format!("reserve p99 {lo:.1} ms (1 run)"),
            None => String::new(),
        }
    }
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
            .filter(|l| l.held && !l.interrupted)
            .map(|l| l.factor)
            .reduce(f64::max)
    }

    fn broke_min(&self) -> Option<f64> {
        self.levels
            .iter()
            .filter(|l| !l.held && l.valid && !l.interrupted)
            .map(|l| l.factor)
            .reduce(f64::min)
    }

    /// The next factor to run, or `None` when the search is over.
    pub fn next_factor(&mut self) -> Option<f64> {
        let Some(last) = self.levels.last() else {
            return Some(1.0);
        };
        if last.oversold > 0 || last.interrupted || !last.valid {
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
        let interrupted = self.levels.last().filter(|l| l.interrupted);
        let generator_limited = self
            .levels
            .last()
            .is_some_and(|l| !l.valid && !l.interrupted);
        let breach = self
            .levels
            .iter()
            .filter(|l| !l.held && l.valid && !l.interrupted)
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
        let summary = match interrupted {
            Some(l) => format!(
                "{summary}; interrupted at x{:.2}, so the search is incomplete",
                l.factor
            ),
            None => summary,
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

    fn sample(held: bool, p99: f64) -> Sample {
        Sample {
            held,
            valid: true,
            reserve_p99_ms: p99,
            errors_rate: 0.0,
        }
    }

    fn level(factor: f64, held: bool) -> Level {
        Level::of(
            factor,
            vec![sample(held, 10.0)],
            0,
            if held {
                "ok".into()
            } else {
                "reserve.p99 = 80 (< 50)".into()
            },
        )
    }

    #[test]
    fn a_level_holds_only_if_every_sample_held_and_reports_the_spread() {
        let l = Level::of(
            2.0,
            vec![sample(true, 10.0), sample(false, 33.8), sample(true, 14.1)],
            0,
            String::new(),
        );
        assert!(!l.held && l.valid);
        assert_eq!(l.p99_spread_ms(), Some((10.0, 33.8)));
        assert_eq!(
            l.spread_words(),
            "reserve p99 10.0-33.8 ms over 3 runs (3.38x); held 2 of 3"
        );
    }

    #[test]
    fn an_interrupted_level_is_no_verdict() {
        let mut s = Search::new(2.0, 16.0, 2);
        s.next_factor();
        s.record(level(1.0, true));
        s.next_factor();
        s.record(Level {
            interrupted: true,
            ..level(2.0, false)
        });
        assert_eq!(s.next_factor(), None, "the search stops");
        let c = s.finish("x");
        assert_eq!(c.held_max, Some(1.0));
        assert_eq!(c.broke_at, None, "not counted as broken");
        assert!(!c.generator_limited);
        assert!(
            c.summary
                .contains("interrupted at x2.00, so the search is incomplete"),
            "{}",
            c.summary
        );
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
