//! The live progress bar (indicatif): elapsed time against the run length,
//! with current rates.
//!
//! Owns only display. Hidden with `--quiet` or when stderr is not a
//! terminal, so logs and CI output stay clean; never writes to stdout,
//! which carries the summary.

use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::plan::Progress;

pub struct Bar {
    bar: ProgressBar,
    last: Mutex<(f64, Progress)>,
}

impl Bar {
    pub fn new(quiet: bool, duration_s: f64) -> Bar {
        let bar = ProgressBar::new((duration_s * 10.0) as u64);
        if quiet || !std::io::stderr().is_terminal() {
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
            last: Mutex::new((0.0, Progress::default())),
        }
    }

    /// Shows progress at `t_s` seconds with cumulative counts `p`.
    pub fn update(&self, t_s: f64, p: &Progress) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let dt = (t_s - last.0).max(1e-3);
        let rate = |now: u64, before: u64| now.saturating_sub(before) as f64 / dt;
        self.bar.set_position((t_s.max(0.0) * 10.0) as u64);
        self.bar.set_message(format!(
            "reserve {:.0}/s ok, {:.0}/s refused | commit {:.0}/s | errors {} | viewers {} | frames {:.0}/s | connect failed {}",
            rate(p.reserve_ok, last.1.reserve_ok),
            rate(p.reserve_refused, last.1.reserve_refused),
            rate(p.commits, last.1.commits),
            p.errors,
            p.viewers,
            rate(p.frames, last.1.frames),
            p.connect_failed
        ));
        *last = (t_s, *p);
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
