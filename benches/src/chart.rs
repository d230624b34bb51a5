//! The before/after chart of `docs/PERFORMANCE.md`: each `compare` row's
//! pairs/s as a multiple of the Redis-Lua baseline measured in the same
//! run, one bar per run ("series"), on a log scale. Reads `compare --json`
//! files; writes a self-contained SVG (no fonts or scripts to fetch).
//!
//! Owns presentation only: it never measures anything.

use serde::Deserialize;
use std::fmt::Write as _;

/// What the chart needs of a `compare --json` file.
#[derive(Debug, Clone, Deserialize)]
pub struct Report {
    pub rows: Vec<ReportRow>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ReportRow {
    pub name: String,
    pub baseline: bool,
    pub vs_baseline: Option<f64>,
}

/// One run, drawn in one colour.
#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    pub report: Report,
}

const WIDTH: f64 = 820.0;
const LABEL_W: f64 = 290.0;
const RIGHT_PAD: f64 = 70.0;
const TOP: f64 = 42.0;
const BAR_H: f64 = 14.0;
const GROUP_GAP: f64 = 18.0;
const COLOURS: [&str; 4] = ["#b0b7c3", "#2f6fdb", "#e08a1e", "#3a9d5d"];
/// Decades shown on the log axis, as multiples of the baseline.
const TICKS: [f64; 9] = [0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The rows to draw: every non-baseline row measured in at least one
/// series, in the order of their first appearance.
fn row_names(series: &[Series]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for s in series {
        for r in &s.report.rows {
            if !r.baseline && r.vs_baseline.is_some() && !names.contains(&r.name) {
                names.push(r.name.clone());
            }
        }
    }
    names
}

/// The SVG of `series` (at most four), with `title` on top.
pub fn render(title: &str, series: &[Series]) -> String {
    let names = row_names(series);
    let ratios: Vec<f64> = series
        .iter()
        .flat_map(|s| s.report.rows.iter().filter_map(|r| r.vs_baseline))
        .filter(|r| *r > 0.0)
        .collect();
    let lo = TICKS
        .iter()
        .copied()
        .filter(|t| ratios.iter().all(|r| *r >= *t))
        .fold(TICKS[0], f64::max);
    let hi = TICKS
        .iter()
        .copied()
        .find(|t| ratios.iter().all(|r| *r <= *t))
        .unwrap_or(TICKS[TICKS.len() - 1]);
    let plot_w = WIDTH - LABEL_W - RIGHT_PAD;
    let x = |ratio: f64| {
        let f = (ratio.max(lo).ln() - lo.ln()) / (hi.ln() - lo.ln());
        LABEL_W + f * plot_w
    };
    let group_h = series.len() as f64 * (BAR_H + 2.0) + GROUP_GAP;
    let plot_bottom = TOP + names.len() as f64 * group_h;
    let height = plot_bottom + 60.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    svg.push_str("<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n");
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="14" font-weight="bold">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    for t in TICKS.iter().copied().filter(|t| *t >= lo && *t <= hi) {
        let tx = x(t);
        let _ = writeln!(
            svg,
            r##"<line x1="{tx:.1}" y1="{TOP}" x2="{tx:.1}" y2="{plot_bottom}" stroke="{}"{}/>"##,
            if t == 1.0 { "#999" } else { "#ddd" },
            if t == 1.0 {
                r#" stroke-dasharray="4 3""#
            } else {
                ""
            }
        );
        let _ = writeln!(
            svg,
            r##"<text x="{tx:.1}" y="{}" text-anchor="middle" fill="#555">{}×</text>"##,
            plot_bottom + 14.0,
            t
        );
    }
    for (i, name) in names.iter().enumerate() {
        let top = TOP + i as f64 * group_h;
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            LABEL_W - 8.0,
            top + series.len() as f64 * (BAR_H + 2.0) / 2.0 + 4.0,
            escape(name)
        );
        for (k, s) in series.iter().enumerate() {
            let y = top + k as f64 * (BAR_H + 2.0);
            let ratio = s
                .report
                .rows
                .iter()
                .find(|r| &r.name == name)
                .and_then(|r| r.vs_baseline);
            match ratio {
                Some(r) => {
                    let w = (x(r) - LABEL_W).max(1.0);
                    let _ = writeln!(
                        svg,
                        r#"<rect x="{LABEL_W}" y="{y:.1}" width="{w:.1}" height="{BAR_H}" fill="{}"/>"#,
                        COLOURS[k % COLOURS.len()]
                    );
                    let _ = writeln!(
                        svg,
                        r##"<text x="{:.1}" y="{:.1}" fill="#333">{}×</text>"##,
                        LABEL_W + w + 4.0,
                        y + BAR_H - 3.0,
                        format_ratio(r)
                    );
                }
                None => {
                    let _ = writeln!(
                        svg,
                        r##"<text x="{}" y="{:.1}" fill="#999">not measured</text>"##,
                        LABEL_W + 4.0,
                        y + BAR_H - 3.0
                    );
                }
            }
        }
    }
    let mut lx = LABEL_W;
    for (k, s) in series.iter().enumerate() {
        let ly = plot_bottom + 34.0;
        let _ = writeln!(
            svg,
            r#"<rect x="{lx:.1}" y="{:.1}" width="12" height="12" fill="{}"/>"#,
            ly - 10.0,
            COLOURS[k % COLOURS.len()]
        );
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{ly:.1}" fill="#333">{}</text>"##,
            lx + 16.0,
            escape(&s.label)
        );
        lx += 16.0 + 7.0 * s.label.chars().count() as f64 + 24.0;
    }
    svg.push_str("</svg>\n");
    svg
}

/// `153`, `7.12`, `0.86`: three significant digits at most.
fn format_ratio(r: f64) -> String {
    if r >= 100.0 {
        format!("{r:.0}")
    } else if r >= 10.0 {
        format!("{r:.1}")
    } else {
        format!("{r:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(rows: &[(&str, bool, Option<f64>)]) -> Report {
        Report {
            rows: rows
                .iter()
                .map(|(n, b, v)| ReportRow {
                    name: (*n).into(),
                    baseline: *b,
                    vs_baseline: *v,
                })
                .collect(),
        }
    }

    #[test]
    fn one_bar_per_row_and_series_and_the_baseline_is_the_dashed_line() {
        let before = Series {
            label: "before".into(),
            report: report(&[
                ("redis-lua, unpipelined", true, Some(1.0)),
                ("engine", false, Some(150.0)),
                ("durable", false, Some(2.8)),
            ]),
        };
        let after = Series {
            label: "after".into(),
            report: report(&[
                ("redis-lua, unpipelined", true, Some(1.0)),
                ("engine", false, Some(200.0)),
                ("durable", false, None),
            ]),
        };
        let svg = render("t <&>", &[before, after]);
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("t &lt;&amp;&gt;"));
        // Two rows (the baseline is the 1× line, not a bar) × two series,
        // one of them not measured; plus two legend swatches.
        assert_eq!(svg.matches("<rect x=").count(), 3 + 2);
        assert!(svg.contains("not measured"));
        assert!(svg.contains(">150×<") && svg.contains(">200×<") && svg.contains(">2.80×<"));
        assert!(svg.contains("stroke-dasharray"));
        assert!(!svg.contains(">redis-lua, unpipelined<"));
    }

    #[test]
    fn ratios_keep_three_significant_digits() {
        assert_eq!(format_ratio(153.4), "153");
        assert_eq!(format_ratio(7.123), "7.12");
        assert_eq!(format_ratio(12.34), "12.3");
    }
}
