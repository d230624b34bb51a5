//! `chart`: draws `compare --json` runs side by side as multiples of the
//! Redis-Lua baseline of each run (the chart in `docs/PERFORMANCE.md`).
//!
//! `cargo run --release -p holdfast-benches --bin chart -- \
//!    --series "before=before.json" --series "after=after.json" --out chart.svg`

use anyhow::{Context, Result};
use clap::Parser;
use holdfast_benches::chart::{self, Report, Series};
use std::path::PathBuf;
use std::process::ExitCode;

/// Before/after chart of `compare --json` runs.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// One run as `LABEL=FILE` (a `compare --json` file); give 1 to 4, in
    /// the order to draw them.
    #[arg(long = "series", required = true, num_args = 1)]
    series: Vec<String>,

    /// The chart's title.
    #[arg(
        long,
        default_value = "pairs/s as a multiple of the unpipelined Redis-Lua baseline (same run, log scale)"
    )]
    title: String,

    /// Where to write the SVG.
    #[arg(long)]
    out: PathBuf,
}

fn run(args: Args) -> Result<()> {
    anyhow::ensure!(args.series.len() <= 4, "at most 4 series");
    let mut series = Vec::new();
    for s in &args.series {
        let (label, file) = s
            .split_once('=')
            .with_context(|| format!("--series {s:?}: expected LABEL=FILE"))?;
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
        let report: Report = serde_json::from_str(&text)
            .with_context(|| format!("{file}: not a compare --json file"))?;
        series.push(Series {
            label: label.to_string(),
            report,
        });
    }
    std::fs::write(&args.out, chart::render(&args.title, &series))
        .with_context(|| format!("writing {}", args.out.display()))
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chart: {e:#}");
            ExitCode::FAILURE
        }
    }
}
