//! Live progress while a run is going: a bar (indicatif) on a terminal, a
//! plain line every [`PLAIN_LINE_PERIOD`] otherwise (CI logs, `nohup`,
//! a pipe), so something shows between the pre-flight and the summary.
//!
//! Owns only display: the phase of the scenario at a moment, rates
//! smoothed over a few ticks, the live reserve p99 and schedule lag.
//! Hidden with `--quiet`; never writes to stdout, which carries the summary.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::plan::Progress;
use crate::scenario::Scenario;

/// A plain progress line this often when stderr is not a terminal.
pub const PLAIN_LINE_PERIOD: Duration = Duration::from_secs(5);
/// Weight of the newest tick in the smoothed rates: over about four ticks
/// (a second at 4 ticks/s), so a burst shows without a 0/s flicker.
const SMOOTHING: f64 = 0.25;
/// A burst's phase label lasts this long after it fires.
const BURST_LABEL_S: f64 = 1.0;

/// What the scenario is doing at `t_s` seconds: the burst just fired,
/// the arrivals running, viewers connecting, or watching.
pub fn phase_at(s: &Scenario, t_s: f64) -> String {
    if t_s < 0.0 {
        return "starting".into();
    }
    if let Some((i, b)) = s
        .bursts
        .iter()
        .enumerate()
        .rev()
        .find(|(_, b)| t_s >= b.at_s && t_s < b.at_s + BURST_LABEL_S)
    {
        return format!("burst {} @{}s", i + 1, b.at_s);
    }
    let arriving = s
        .arrivals
        .iter()
        .filter(|a| t_s >= a.start_s && t_s < a.start_s + Scenario::arrival_duration_s(a));
    let rate: f64 = arriving.map(|a| Scenario::arrival_rate_at(a, t_s)).sum();
    if rate > 0.0 {
        return format!("arrivals {rate:.0}/s");
    }
    if t_s < s.viewers.connect_over_s {
        return "viewers connecting".into();
    }
    "watching".into()
}

/// Rates smoothed over ticks.
#[derive(Debug, Default, Clone, Copy)]
struct Smoothed {
    reserve_ok: f64,
    refused: f64,
    commits: f64,
    frames: f64,
}

struct Last {
    t_s: f64,
    p: Progress,
    rates: Smoothed,
    plain_at_s: f64,
}

pub struct Bar {
    bar: ProgressBar,
    plain: bool,
    scenario: Scenario,
    last: Mutex<Last>,
}

impl Bar {
    pub fn new(quiet: bool, scenario: &Scenario) -> Bar {
        let bar = ProgressBar::new((scenario.duration_s * 10.0) as u64);
        let terminal = std::io::stderr().is_terminal();
        if quiet || !terminal {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        } else {
            bar.set_draw_target(ProgressDrawTarget::stderr_with_hz(4));
        }
        bar.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {msg}")
                .expect("static template")
                .progress_chars("=> "),
        );
        Bar {
            bar,
            plain: !quiet && !terminal,
            scenario: scenario.clone(),
            last: Mutex::new(Last {
                t_s: 0.0,
                p: Progress::default(),
                rates: Smoothed::default(),
                plain_at_s: 0.0,
            }),
        }
    }

    /// Shows progress at `t_s` seconds with cumulative counts `p`.
    pub fn update(&self, t_s: f64, p: &Progress) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let line = tick(&mut last, t_s, p, &phase_at(&self.scenario, t_s));
        self.bar.set_position((t_s.max(0.0) * 10.0) as u64);
        self.bar.set_message(line.clone());
        if self.plain && t_s - last.plain_at_s >= PLAIN_LINE_PERIOD.as_secs_f64() {
            last.plain_at_s = t_s;
            eprintln!(
                "progress t={t_s:.0}s/{:.0}s {line}",
                self.scenario.duration_s
            );
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// Folds one tick into the smoothed rates; returns the progress line.
fn tick(last: &mut Last, t_s: f64, p: &Progress, phase: &str) -> String {
    let dt = (t_s - last.t_s).max(1e-3);
    let rate = |now: u64, before: u64| now.saturating_sub(before) as f64 / dt;
    let ema = |old: f64, new: f64| old + SMOOTHING * (new - old);
    let r = &mut last.rates;
    r.reserve_ok = ema(r.reserve_ok, rate(p.reserve_ok, last.p.reserve_ok));
    r.refused = ema(r.refused, rate(p.reserve_refused, last.p.reserve_refused));
    r.commits = ema(r.commits, rate(p.commits, last.p.commits));
    r.frames = ema(r.frames, rate(p.frames, last.p.frames));
    let line = format!(
        "{phase} | reserve {:.0}/s ok, {:.0}/s refused, p99 {:.1} ms | commit {:.0}/s | errors {} | \
         schedule lag p99 {:.1} ms | viewers {} | frames {:.0}/s | connect failed {}",
        r.reserve_ok,
        r.refused,
        p.reserve_p99_ms,
        r.commits,
        p.errors,
        p.schedule_lag_p99_ms,
        p.viewers,
        r.frames,
        p.connect_failed
    );
    last.t_s = t_s;
    last.p = *p;
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: &str = r#"
name = "p"
duration_s = 10
[[sku]]
id = "a"
total = 5
[viewers]
count = 3
connect_over_s = 1
[[burst]]
at_s = 2
buyers = 3
sku = "a"
[[arrival]]
executor = "constant"
start_s = 4
rate = 30
duration_s = 3
skus = ["a"]
"#;

    #[test]
    fn phases_follow_the_scenario() {
        let s = Scenario::parse(S, "p").unwrap();
        assert_eq!(phase_at(&s, -0.1), "starting");
        assert_eq!(phase_at(&s, 0.5), "viewers connecting");
        assert_eq!(phase_at(&s, 1.5), "watching");
        assert_eq!(phase_at(&s, 2.2), "burst 1 @2s");
        assert_eq!(phase_at(&s, 5.0), "arrivals 30/s");
        assert_eq!(phase_at(&s, 8.0), "watching");
    }

    #[test]
    fn a_frame_rate_that_arrives_in_lumps_is_smoothed() {
        let mut last = Last {
            t_s: 0.0,
            p: Progress::default(),
            rates: Smoothed::default(),
            plain_at_s: 0.0,
        };
        // 1,000 frames/s arriving as one lump per second (every fourth
        // tick of 0.25 s): the shown rate never drops to 0 after the first
        // lumps and never shows the lump's 4,000/s.
        let mut p = Progress::default();
        let mut shown = Vec::new();
        for i in 1..=64u64 {
            if i % 4 == 0 {
                p.frames += 1_000;
            }
            tick(&mut last, i as f64 * 0.25, &p, "x");
            shown.push(last.rates.frames);
        }
        let after = &shown[8..];
        assert!(after.iter().all(|&r| r > 100.0), "{after:?}");
        assert!(after.iter().all(|&r| r < 2_000.0), "{after:?}");
    }
}
