//! The HTML report (`--html`): one self-contained page (inline CSS and
//! SVG, no scripts, no external resources) an SRE can act on: the verdict
//! with its reasons, latency over time and its distribution (holds and
//! refusals apart), throughput, one stock panel per SKU, fan-out, the
//! capacity search, every chart marked with the run's events (open,
//! bursts, restocks, pauses), and what produced it (scenario, command
//! line, seed, versions). Readable at phone width: charts scale to the
//! screen and their legends are HTML below them, never over the data.
//!
//! Owns presentation only; charts are drawn with plotters' SVG backend in
//! the Okabe–Ito palette (distinguishable with every common colour-vision
//! deficiency; "ok" is blue and "refused" orange, never red against
//! green).

use std::fmt::Write as _;

use plotters::prelude::*;

use super::{Latency, Report};

/// Series drawn per chart at most, so a crowded chart stays readable.
const SERIES_MAX: usize = 8;
/// Chart size in SVG units; the page scales it to the screen's width.
const CHART_W: u32 = 820;
const CHART_H: u32 = 300;
/// Quantiles drawn in a latency distribution.
const QUANTILES: [f64; 10] = [0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 1.0];

/// The Okabe–Ito palette, by role.
pub const OK: RGBColor = RGBColor(0, 114, 178); // blue
pub const REFUSED: RGBColor = RGBColor(230, 159, 0); // orange
pub const ERROR: RGBColor = RGBColor(213, 94, 0); // vermillion
pub const COMMIT: RGBColor = RGBColor(0, 158, 115); // bluish green
pub const OTHER: RGBColor = RGBColor(204, 121, 167); // reddish purple
pub const SKY: RGBColor = RGBColor(86, 180, 233); // sky blue
pub const MARKER: RGBColor = RGBColor(90, 90, 90);

/// One line of a chart.
pub struct Series {
    pub name: String,
    pub colour: RGBColor,
    pub points: Vec<(f64, f64)>,
}

fn series(name: &str, colour: RGBColor, points: Vec<(f64, f64)>) -> Series {
    Series {
        name: name.into(),
        colour,
        points,
    }
}

/// A vertical event line: seconds since the start, and its label.
pub type Marker = (f64, String);

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn hex(c: RGBColor) -> String {
    format!("#{:02x}{:02x}{:02x}", c.0, c.1, c.2)
}

/// One chart: an SVG that scales to the page, its legend below it, and
/// dashed vertical lines at `markers`. `circles` draws each point as a
/// dot too (for sparse data).
pub fn chart(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    all: &[Series],
    markers: &[Marker],
    circles: bool,
) -> String {
    let shown = &all[..all.len().min(SERIES_MAX)];
    let xs = shown.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let x_min = xs.clone().fold(f64::INFINITY, f64::min).min(0.0);
    let x_max = xs.chain(markers.iter().map(|m| m.0)).fold(1.0, f64::max);
    let y_max = shown
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(1.0, f64::max)
        * 1.1;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (CHART_W, CHART_H)).into_drawing_area();
        let draw = || -> Result<(), Box<dyn std::error::Error + '_>> {
            root.fill(&WHITE)?;
            let mut c = ChartBuilder::on(&root)
                .caption(title, ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(60)
                .build_cartesian_2d(x_min..x_max, 0f64..y_max)?;
            c.configure_mesh()
                .x_desc(x_desc)
                .y_desc(y_desc)
                .light_line_style(WHITE.mix(0.0))
                .draw()?;
            for (x, label) in markers {
                let style = ShapeStyle::from(MARKER.mix(0.6)).stroke_width(1);
                c.draw_series(DashedLineSeries::new(
                    vec![(*x, 0.0), (*x, y_max)],
                    4,
                    3,
                    style,
                ))?;
                c.draw_series(std::iter::once(Text::new(
                    label.clone(),
                    (*x, y_max * 0.97),
                    ("sans-serif", 12).into_font().color(&MARKER),
                )))?;
            }
            for s in shown {
                let style = s.colour.stroke_width(2);
                c.draw_series(LineSeries::new(s.points.iter().copied(), style))?;
                if circles {
                    c.draw_series(
                        s.points
                            .iter()
                            .map(|&p| Circle::new(p, 4, s.colour.filled())),
                    )?;
                }
            }
            root.present()?;
            Ok(())
        };
        if let Err(e) = draw() {
            tracing::warn!("chart {title}: {e}");
        }
    }
    // Scale with the page: a viewBox instead of a fixed size.
    let svg = svg.replacen(
        &format!("width=\"{CHART_W}\" height=\"{CHART_H}\""),
        &format!(
            "viewBox=\"0 0 {CHART_W} {CHART_H}\" role=\"img\" aria-label=\"{}\"",
            escape(title)
        ),
        1,
    );
    let mut legend = String::from("<ul class=\"legend\">");
    for s in shown {
        let _ = write!(
            legend,
            "<li><span class=\"sw\" style=\"background:{}\"></span>{}</li>",
            hex(s.colour),
            escape(&s.name)
        );
    }
    if all.len() > SERIES_MAX {
        let _ = write!(legend, "<li>{} more not drawn</li>", all.len() - SERIES_MAX);
    }
    legend.push_str("</ul>");
    format!("<figure>{svg}{legend}</figure>")
}

/// The run's events as chart markers: host actions and bursts.
fn markers(r: &Report) -> Vec<Marker> {
    let mut m: Vec<Marker> = r
        .host
        .iter()
        .map(|h| {
            let qty = h.qty.map_or(String::new(), |q| format!(" {q}"));
            (h.at_s, format!("{}{qty}", h.action))
        })
        .collect();
    m.extend(
        r.bursts
            .iter()
            .enumerate()
            .map(|(i, b)| (b.at_s, format!("burst {}", i + 1))),
    );
    m.sort_by(|a, b| a.0.total_cmp(&b.0));
    m
}

/// Latency against quantile (in %), per histogram.
fn distribution(r: &Report) -> String {
    let mut all = Vec::new();
    for (name, label, colour) in [
        ("reserve_ok", "reserve, got a hold", OK),
        ("reserve_refused", "reserve, refused", REFUSED),
        ("commit", "commit", COMMIT),
        ("fanout", "fan-out to viewers", SKY),
    ] {
        if let Some(h) = r.histograms.get(name).filter(|h| h.count() > 0) {
            all.push(series(
                label,
                colour,
                QUANTILES.iter().map(|&q| (q * 100.0, h.q_ms(q))).collect(),
            ));
        }
    }
    chart(
        "Latency distribution (from the intended send time)",
        "percentile",
        "ms",
        &all,
        &[],
        true,
    )
}

fn latency_row(name: &str, l: &Latency) -> String {
    format!(
        "<tr><td>{}</td><td>{}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td></tr>",
        escape(name),
        l.count,
        l.p50,
        l.p90,
        l.p95,
        l.p99,
        l.p999,
        l.max
    )
}

/// The page.
pub fn render(r: &Report) -> String {
    let tp = &r.throughput;
    let t = |p: &super::Point| p.t_s as f64 + 0.5;
    let marks = markers(r);
    let busy = |p: &&super::Point| p.reserve_p99_ms > 0.0;
    let latency = chart(
        "Reserve latency per second (from the intended send time)",
        "seconds",
        "ms",
        &[
            series(
                "p50",
                SKY,
                tp.iter()
                    .filter(busy)
                    .map(|p| (t(p), p.reserve_p50_ms))
                    .collect(),
            ),
            series(
                "p99",
                OK,
                tp.iter()
                    .filter(busy)
                    .map(|p| (t(p), p.reserve_p99_ms))
                    .collect(),
            ),
        ],
        &marks,
        false,
    );
    let throughput = chart(
        "Reserves per second, by the second they were due",
        "seconds",
        "per second",
        &[
            series(
                "offered",
                MARKER,
                tp.iter().map(|p| (t(p), p.offered as f64)).collect(),
            ),
            series(
                "got a hold",
                OK,
                tp.iter().map(|p| (t(p), p.reserve_ok as f64)).collect(),
            ),
            series(
                "refused",
                REFUSED,
                tp.iter()
                    .map(|p| (t(p), p.reserve_refused as f64))
                    .collect(),
            ),
            series(
                "commits",
                COMMIT,
                tp.iter().map(|p| (t(p), p.commits as f64)).collect(),
            ),
            series(
                "errors",
                ERROR,
                tp.iter().map(|p| (t(p), p.errors as f64)).collect(),
            ),
        ],
        &marks,
        false,
    );
    let viewers = chart(
        "Viewers connected (a dip is a loss; its width the recovery)",
        "seconds",
        "viewers",
        &[series(
            "viewers connected",
            SKY,
            tp.iter().map(|p| (t(p), p.viewers as f64)).collect(),
        )],
        &marks,
        false,
    );
    // One panel per SKU: a 5,000-unit SKU must not flatten a 150-unit drop.
    let mut stock = String::new();
    for s in &r.stock {
        let col = |f: fn(&(f64, u32, u32, u32)) -> u32| -> Vec<(f64, f64)> {
            s.points.iter().map(|p| (p.0, f(p) as f64)).collect()
        };
        let own: Vec<Marker> = r
            .host
            .iter()
            .filter(|h| h.sku == s.sku)
            .map(|h| (h.at_s, h.action.clone()))
            .chain(
                r.bursts
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| b.skus.contains(&s.sku))
                    .map(|(i, b)| (b.at_s, format!("burst {}", i + 1))),
            )
            .collect();
        stock.push_str(&chart(
            &format!("Stock of {}", s.sku),
            "seconds",
            "units",
            &[
                series("available", OK, col(|p| p.1)),
                series("held (in carts)", REFUSED, col(|p| p.2)),
                series("sold", COMMIT, col(|p| p.3)),
            ],
            &own,
            false,
        ));
    }
    let capacity = r.capacity.as_ref().map(|c| {
        let pts = |held: bool| -> Vec<(f64, f64)> {
            c.levels
                .iter()
                .filter(|l| l.held == held && !l.interrupted)
                .filter_map(|l| Some((l.factor, l.p99_spread_ms()?.1)))
                .collect()
        };
        chart(
            "Capacity search: reserve p99 (worst run) by load factor",
            "load factor (x the plan)",
            "ms",
            &[
                series("held", OK, pts(true)),
                series("broke", ERROR, pts(false)),
            ],
            &[],
            true,
        )
    });

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
    } else if !r.health.borderline.is_empty() {
        (
            "warn",
            format!("PASS, BORDERLINE: {}", r.health.borderline.join("; ")),
        )
    } else {
        ("ok", "PASS: oversold 0, thresholds held".to_string())
    };
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<title>holdfast-loadtest: {}</title><style>\
body{{font:14px/1.4 system-ui,sans-serif;margin:1em auto;max-width:980px;padding:0 .8em;color:#222}}h1{{font-size:20px}}\
.ok{{background:#e8f1f8}}.bad{{background:#fbe9df}}.warn{{background:#fdf3dc}}.verdict{{padding:.6em 1em;font-weight:600}}\
.wrap{{overflow-x:auto}}table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ddd;padding:3px 8px;text-align:right}}\
th{{background:#f5f5f5}}td:first-child,th:first-child{{text-align:left}}pre{{background:#f7f7f7;padding:1em;overflow:auto}}\
figure{{margin:1em 0}}svg{{width:100%;height:auto}}.legend{{list-style:none;padding:0;margin:.2em 0;display:flex;flex-wrap:wrap;gap:.3em 1.2em}}\
.sw{{display:inline-block;width:1.4em;height:.35em;margin-right:.4em;vertical-align:middle}}</style></head><body>",
        escape(&r.scenario)
    );
    let _ = write!(
        h,
        "<h1>holdfast-loadtest: {} against {}</h1><div class=\"verdict {}\">{}</div>",
        escape(&r.scenario),
        escape(&r.target),
        verdict.0,
        escape(&verdict.1)
    );
    for why in r.audit.problems.iter().take(5) {
        let _ = write!(h, "<p class=\"bad\">{}</p>", escape(why));
    }
    let _ = write!(
        h,
        "<p>{} buyers' protocol, {} worker(s), load x{:.2}, {:.1} s; latency is measured from each request's intended send time.</p>",
        escape(&r.protocol),
        r.workers,
        r.level,
        r.duration_s
    );
    h.push_str(
        "<h2>Latency</h2><div class=\"wrap\"><table><tr><th>ms</th><th>count</th><th>p50</th><th>p90</th><th>p95</th><th>p99</th><th>p99.9</th><th>max</th></tr>",
    );
    for (name, label) in [
        ("reserve", "reserve (all)"),
        ("reserve_ok", "reserve, got a hold"),
        ("reserve_refused", "reserve, refused"),
        ("commit", "commit"),
        ("release", "release"),
        ("fanout", "fan-out"),
        ("viewer_recovery", "viewer recovery"),
        ("connect", "connect"),
    ] {
        if let Some(l) = r.latency.get(name) {
            h.push_str(&latency_row(label, l));
        }
    }
    h.push_str("</table></div>");
    h.push_str(&latency);
    h.push_str(&distribution(r));
    h.push_str(&throughput);
    h.push_str(&viewers);
    h.push_str("<h2>Stock</h2>");
    h.push_str(&stock);
    if let Some(c) = &capacity {
        let _ = write!(
            h,
            "<h2>Capacity</h2><p>{}</p>{c}",
            escape(
                &r.capacity
                    .as_ref()
                    .map_or(String::new(), |c| c.summary.clone())
            )
        );
    }
    let _ = write!(
        h,
        "<h2>Audit: oversold {}</h2><div class=\"wrap\"><table><tr><th>check</th><th>result</th><th>finding</th></tr>",
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
    h.push_str("</table></div>");
    if !r.audit.problems.is_empty() {
        let _ = write!(h, "<pre>{}</pre>", escape(&r.audit.problems.join("\n")));
    }
    if !r.thresholds.is_empty() {
        h.push_str(
            "<h2>Thresholds</h2><div class=\"wrap\"><table><tr><th>threshold</th><th>actual</th><th>ok</th></tr>",
        );
        for t in &r.thresholds {
            let _ = write!(
                h,
                "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td></tr>",
                if t.ok { "ok" } else { "bad" },
                escape(&t.expr),
                t.actual
                    .map_or("missing".into(), |a| crate::threshold::with_unit(
                        &t.metric, a
                    )),
                t.ok
            );
        }
        h.push_str("</table></div>");
    }
    let _ = write!(
        h,
        "<h2>Summary</h2><pre>{}</pre>",
        escape(&super::table::render(r))
    );
    let p = &r.provenance;
    let _ = write!(
        h,
        "<h2>How this was produced</h2><p>holdfast-loadtest {}; gateway {} ({}); seed {:#x}.</p>\
<p>Command line:</p><pre>{}</pre><p>Scenario as run:</p><pre>{}</pre>",
        escape(&p.loadtest_version),
        escape(
            p.gateway_version
                .as_deref()
                .unwrap_or("version not reported")
        ),
        escape(&p.gateway_persistence),
        p.seed,
        escape(&p.command_line.join(" ")),
        escape(&p.scenario_toml)
    );
    h.push_str("</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    #[test]
    fn page_is_self_contained_scales_and_marks_events() {
        let mut r = super::super::tests::sample();
        r.host.push(crate::roles::host::HostEvent {
            at_s: 0.25,
            action: "restock".into(),
            sku: "a".into(),
            qty: Some(5),
            ok: true,
            error: None,
            latency_ms: 1.0,
        });
        r.provenance.command_line = vec!["holdfast-loadtest".into(), "--seed".into(), "7".into()];
        r.provenance.scenario_toml = "name = \"x\"".into();
        let page = super::render(&r);
        // Latency over time, distribution, throughput, viewers, one stock panel.
        assert_eq!(page.matches("<svg").count(), 5, "{page}");
        assert!(page.contains("Stock of a"));
        assert!(page.contains("restock 5"), "event markers are labelled");
        assert!(page.contains("viewBox=\"0 0 820 300\""), "charts scale");
        assert!(page.contains("name=\"viewport\""));
        assert!(
            page.contains("class=\"legend\""),
            "legends are outside the plot"
        );
        assert!(
            page.contains("#0072b2") && page.contains("#e69f00"),
            "Okabe–Ito ok/refused"
        );
        assert!(page.contains("holdfast-loadtest --seed 7"));
        assert!(page.contains("name = &quot;x&quot;"));
        assert!(
            !page.contains("<script")
                && !page.contains("http-equiv")
                && !page.contains("src=\"http")
        );
        assert!(page.contains("PASS"));
    }
}
