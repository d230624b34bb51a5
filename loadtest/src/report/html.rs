//! The HTML report (`--html`): one self-contained page (inline CSS and
//! SVG, no scripts, no external resources) with the summary, the audit and
//! charts of latency, stock and throughput over time.
//!
//! Owns presentation only; charts are drawn with plotters' SVG backend.

use std::fmt::Write as _;

use plotters::prelude::*;

use super::Report;

/// Series drawn per chart at most, so a 64-SKU catalog stays readable.
const SERIES_MAX: usize = 12;

type Series = (String, Vec<(f64, f64)>);

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One line chart as an SVG string (empty chart when there is no data).
pub fn line_chart(title: &str, x_desc: &str, y_desc: &str, series: &[Series]) -> String {
    let mut svg = String::new();
    let x_max = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.0))
        .fold(1.0, f64::max);
    let y_max = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.1))
        .fold(1.0, f64::max)
        * 1.1;
    {
        let root = SVGBackend::with_string(&mut svg, (820, 320)).into_drawing_area();
        let draw = || -> Result<(), Box<dyn std::error::Error + '_>> {
            root.fill(&WHITE)?;
            let mut chart = ChartBuilder::on(&root)
                .caption(title, ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(60)
                .build_cartesian_2d(0f64..x_max, 0f64..y_max)?;
            chart
                .configure_mesh()
                .x_desc(x_desc)
                .y_desc(y_desc)
                .light_line_style(WHITE.mix(0.0))
                .draw()?;
            for (i, (name, pts)) in series.iter().take(SERIES_MAX).enumerate() {
                let color = Palette99::pick(i).to_rgba();
                chart
                    .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?
                    .label(name.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                    });
            }
            if !series.is_empty() {
                chart
                    .configure_series_labels()
                    .position(SeriesLabelPosition::UpperRight)
                    .background_style(WHITE.mix(0.85))
                    .border_style(BLACK.mix(0.3))
                    .draw()?;
            }
            root.present()?;
            Ok(())
        };
        if let Err(e) = draw() {
            tracing::warn!("chart {title}: {e}");
        }
    }
    svg
}

/// The page.
pub fn render(r: &Report) -> String {
    let tp = &r.throughput;
    let t = |p: &super::Point| p.t_s as f64 + 0.5;
    let latency = line_chart(
        "Reserve latency over time (from the intended send time)",
        "seconds",
        "ms",
        &[
            (
                "p50".into(),
                tp.iter()
                    .filter(|p| p.reserve_p99_ms > 0.0)
                    .map(|p| (t(p), p.reserve_p50_ms))
                    .collect(),
            ),
            (
                "p99".into(),
                tp.iter()
                    .filter(|p| p.reserve_p99_ms > 0.0)
                    .map(|p| (t(p), p.reserve_p99_ms))
                    .collect(),
            ),
        ],
    );
    let mut stock_series: Vec<Series> = Vec::new();
    for s in &r.stock {
        stock_series.push((
            format!("{} available", s.sku),
            s.points.iter().map(|p| (p.0, p.1 as f64)).collect(),
        ));
        stock_series.push((
            format!("{} held", s.sku),
            s.points.iter().map(|p| (p.0, p.2 as f64)).collect(),
        ));
        stock_series.push((
            format!("{} sold", s.sku),
            s.points.iter().map(|p| (p.0, p.3 as f64)).collect(),
        ));
    }
    let stock = line_chart("Stock over time", "seconds", "units", &stock_series);
    let throughput = line_chart(
        "Throughput per second",
        "seconds",
        "per second",
        &[
            (
                "reserve ok".into(),
                tp.iter().map(|p| (t(p), p.reserve_ok as f64)).collect(),
            ),
            (
                "refused".into(),
                tp.iter()
                    .map(|p| (t(p), p.reserve_refused as f64))
                    .collect(),
            ),
            (
                "commits".into(),
                tp.iter().map(|p| (t(p), p.commits as f64)).collect(),
            ),
            (
                "errors".into(),
                tp.iter().map(|p| (t(p), p.errors as f64)).collect(),
            ),
        ],
    );
    let verdict = if !r.audit.ok {
        ("bad", r.audit.verdict.clone())
    } else if let Some(why) = r.all_failed() {
        ("bad", format!("RUN FAILED: {why}"))
    } else if !r.health.valid {
        (
            "warn",
            format!(
                "RESULTS INVALID: the generator was the bottleneck: {}",
                r.health.reasons.join("; ")
            ),
        )
    } else if r.thresholds.iter().any(|t| !t.ok) {
        ("bad", "THRESHOLD BREACHED".to_string())
    } else {
        ("ok", "PASS: oversold 0, thresholds held".to_string())
    };
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>holdfast-loadtest: {}</title><style>\
body{{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}}h1{{font-size:20px}}\
.ok{{background:#e6f4ea}}.bad{{background:#fce8e6}}.warn{{background:#fef7e0}}.verdict{{padding:.6em 1em;font-weight:600}}\
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ddd;padding:3px 8px;text-align:right}}th{{background:#f5f5f5}}\
td:first-child,th:first-child{{text-align:left}}pre{{background:#f7f7f7;padding:1em;overflow:auto}}</style></head><body>",
        escape(&r.scenario)
    );
    let _ = write!(
        h,
        "<h1>holdfast-loadtest: {} against {}</h1>",
        escape(&r.scenario),
        escape(&r.target)
    );
    let _ = write!(
        h,
        "<div class=\"verdict {}\">{}</div>",
        verdict.0,
        escape(&verdict.1)
    );
    let _ = write!(
        h,
        "<p>{} buyers' protocol, {} worker(s), load x{:.2}, {:.1} s.</p>",
        escape(&r.protocol),
        r.workers,
        r.level,
        r.duration_s
    );
    let _ = write!(
        h,
        "<h2>Latency</h2><table><tr><th>ms</th><th>count</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th></tr>"
    );
    for name in ["reserve", "commit", "release", "fanout", "connect"] {
        if let Some(l) = r.latency.get(name) {
            let _ = write!(
                h,
                "<tr><td>{name}</td><td>{}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td></tr>",
                l.count, l.p50, l.p90, l.p99, l.p999, l.max
            );
        }
    }
    h.push_str("</table>");
    h.push_str(&latency);
    h.push_str(&throughput);
    h.push_str(&stock);
    let _ = write!(
        h,
        "<h2>Audit: oversold {}</h2><table><tr><th>check</th><th>ok</th><th>detail</th></tr>",
        r.audit.oversold
    );
    for c in &r.audit.checks {
        let _ = write!(
            h,
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td style=\"text-align:left\">{}</td></tr>",
            match c.status {
                crate::audit::CheckStatus::Ok => "ok",
                crate::audit::CheckStatus::Failed => "bad",
                _ => "warn",
            },
            escape(&c.name),
            c.status.tag(),
            escape(&c.detail)
        );
    }
    h.push_str("</table>");
    if !r.audit.problems.is_empty() {
        let _ = write!(h, "<pre>{}</pre>", escape(&r.audit.problems.join("\n")));
    }
    if !r.thresholds.is_empty() {
        h.push_str(
            "<h2>Thresholds</h2><table><tr><th>threshold</th><th>actual</th><th>ok</th></tr>",
        );
        for t in &r.thresholds {
            let _ = write!(
                h,
                "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td></tr>",
                if t.ok { "ok" } else { "bad" },
                escape(&t.expr),
                t.actual.map_or("missing".into(), |a| format!("{a:.3}")),
                t.ok
            );
        }
        h.push_str("</table>");
    }
    let _ = write!(
        h,
        "<h2>Summary</h2><pre>{}</pre>",
        escape(&super::table::render(r))
    );
    h.push_str("</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    #[test]
    fn page_is_self_contained_with_three_charts() {
        let r = super::super::tests::sample();
        let page = super::render(&r);
        assert_eq!(page.matches("<svg").count(), 3);
        assert!(page.contains("Stock over time") && page.contains("a available"));
        assert!(
            !page.contains("<script")
                && !page.contains("http-equiv")
                && !page.contains("src=\"http")
        );
        assert!(page.contains("PASS"));
    }
}
