//! The end-of-run summary printed on stdout: plain aligned text that reads
//! the same in a terminal, a CI log and an email.
//!
//! Owns wording and layout only; every number comes from the [`Report`].

use std::fmt::Write as _;

use super::{Latency, Report};
use crate::threshold::with_unit;

fn ms(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.2}s", v / 1000.0)
    } else if v >= 10.0 {
        format!("{v:.1}ms")
    } else {
        format!("{v:.2}ms")
    }
}

/// One latency row: count and percentiles with units.
fn row(l: &Latency) -> String {
    format!(
        "{:>9}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
        l.count,
        ms(l.p50),
        ms(l.p90),
        ms(l.p95),
        ms(l.p99),
        ms(l.p999),
        ms(l.max)
    )
}

/// The summary table.
pub fn render(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\nholdfast-loadtest: {} against {} ({}, {} worker{}, load x{:.2}, {:.1}s)",
        r.scenario,
        r.target,
        r.protocol,
        r.workers,
        if r.workers == 1 { "" } else { "s" },
        r.level,
        r.duration_s
    );
    if r.interrupted {
        let _ = writeln!(s, "INTERRUPTED: partial results");
    }
    let _ = writeln!(
        s,
        "\nlatency from each request's intended send time (a stalled client cannot hide a slow server)"
    );
    let _ = writeln!(
        s,
        "{:<16}{:>9}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
        "", "count", "p50", "p90", "p95", "p99", "p99.9", "max"
    );
    for (name, label) in [
        ("reserve", "reserve (all)"),
        ("reserve_ok", "  got a hold"),
        ("reserve_refused", "  refused"),
        ("commit", "commit"),
        ("release", "release"),
        ("fanout", "fanout"),
        ("connect", "connect"),
    ] {
        if let Some(l) = r.latency.get(name) {
            let _ = writeln!(s, "{label:<16}{}", row(l));
        }
    }
    let f = |k: &str| r.figures.get(k).copied().unwrap_or(0.0);
    let _ = writeln!(
        s,
        "\nthroughput    offered {:.1} reserves/s, accepted {:.1} holds/s, commit {:.1}/s \
         (means over seconds with traffic); peak accepted {}/s in one second",
        f("reserve.offered_rate"),
        f("reserve.rate"),
        f("commit.rate"),
        r.throughput.iter().map(|p| p.reserve_ok).max().unwrap_or(0)
    );
    let _ = writeln!(
        s,
        "requests      {} reserves sent: {} holds, {} refused (sale refusals, {}), {} failed (errors.rate {}); \
         commit ok {}, release ok {}",
        f("reserve.attempts"),
        f("reserve.count"),
        r.latency.get("reserve_refused").map_or(0, |l| l.count),
        with_unit("refusals.rate", f("refusals.rate")),
        f("errors.count"),
        with_unit("errors.rate", f("errors.rate")),
        f("commit.count"),
        f("release.count"),
    );
    if !r.errors.is_empty() {
        let list: Vec<String> = r.errors.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(s, "by code       {}", list.join(", "));
    }
    let _ = writeln!(
        s,
        "connections   {} ok, {} failed",
        f("connections.ok"),
        f("connections.failed")
    );
    let c = |k: &str| r.counts.get(k).copied().unwrap_or(0);
    let _ = writeln!(
        s,
        "viewers       {} frames, {} updates, {} connections lost, {} consistency violations",
        c("viewer.frames"),
        c("viewer.updates"),
        c("viewers.disconnected"),
        f("viewer.violations")
    );
    if let Some(l) = r.latency.get("viewer_recovery") {
        let _ = writeln!(
            s,
            "              {} recovered (loss to next snapshot, with the overlay's back-off): p50 {}, p99 {}, max {}; {} never recovered",
            l.count,
            ms(l.p50),
            ms(l.p99),
            ms(l.max),
            c("viewers.unrecovered")
        );
    }
    for so in r.soldout.iter().filter(|so| so.viewers_seen > 0) {
        let _ = writeln!(
            s,
            "sold out      {}: seen by {}/{} viewers, all within {} of the server's frame",
            so.sku,
            so.viewers_seen,
            so.viewers_covering,
            so.all_seen_ms.map_or("?".into(), |v| ms(v as f64))
        );
    }
    for k in &r.skus {
        let _ = writeln!(
            s,
            "sku           {}: holds p99 {} ({}), refused p99 {} ({}); open to sold out {}",
            k.sku,
            k.ok.as_ref().map_or("-".into(), |l| ms(l.p99)),
            k.ok.as_ref().map_or(0, |l| l.count),
            k.refused.as_ref().map_or("-".into(), |l| ms(l.p99)),
            k.refused.as_ref().map_or(0, |l| l.count),
            k.open_to_sold_out_ms.map_or("-".into(), ms)
        );
    }
    for b in &r.bursts {
        let _ = writeln!(
            s,
            "burst @{:>5.1}s {} buyers ({} fired) on {}: send spread {} (offered {}), {} reserved (p99 {}), {} refused (p99 {}), {} errors",
            b.at_s,
            b.buyers,
            b.fired,
            b.skus.join("+"),
            b.spread_ms.map_or("-".into(), ms),
            b.offered_per_s.map_or("-".into(), |r| format!("{r:.0}/s")),
            b.reserved,
            b.ok.as_ref().map_or("-".into(), |l| ms(l.p99)),
            b.refused,
            b.refused_latency.as_ref().map_or("-".into(), |l| ms(l.p99)),
            b.errors
        );
    }
    if let Some(l) = r.latency.get("arrivals.reserve_ok") {
        let _ = writeln!(
            s,
            "arrivals      {} holds (p99 {}), {} refused (p99 {})",
            l.count,
            ms(l.p99),
            r.latency
                .get("arrivals.reserve_refused")
                .map_or(0, |l| l.count),
            r.latency
                .get("arrivals.reserve_refused")
                .map_or("-".into(), |l| ms(l.p99))
        );
    }
    for h in r.host.iter().filter(|h| !h.ok) {
        let _ = writeln!(
            s,
            "host action   {} {} at {}s FAILED: {}",
            h.action,
            h.sku,
            h.at_s,
            h.error.as_deref().unwrap_or("?")
        );
    }
    let h = &r.health;
    let _ = write!(
        s,
        "generator     {}: loop lag p99 {}, schedule lag p99 {}, CPU {:.0}% per thread, RSS {} MiB",
        match (h.valid, h.borderline.is_empty()) {
            (false, _) => "RESULTS INVALID",
            (true, true) => "healthy",
            (true, false) => "BORDERLINE (valid, near a limit)",
        },
        ms(h.loop_lag_p99_ms),
        ms(h.schedule_lag_p99_ms),
        h.cpu_per_thread * 100.0,
        h.rss_bytes >> 20
    );
    if let Some(b) = h.bytes_per_connection {
        let _ = write!(s, " (~{} KiB per connection)", b / 1024);
    }
    let _ = writeln!(s);
    for why in &h.reasons {
        let _ = writeln!(s, "              invalid: {why}");
    }
    for why in &h.borderline {
        let _ = writeln!(s, "              borderline: {why}");
    }
    let _ = writeln!(
        s,
        "\naudit         oversold: {}; {}",
        r.audit.oversold, r.audit.verdict
    );
    for c in &r.audit.checks {
        let _ = writeln!(s, "  [{}] {}: {}", c.status.tag(), c.name, c.detail);
    }
    for p in &r.audit.problems {
        let _ = writeln!(s, "  problem: {p}");
    }
    if let Some(why) = r.all_failed() {
        let _ = writeln!(s, "\nRUN FAILED    {why}");
    }
    if !r.thresholds.is_empty() {
        let _ = writeln!(s, "\nthresholds");
        for t in &r.thresholds {
            let verdict = if !h.valid {
                "not judged (invalid run)"
            } else if t.ok {
                "ok"
            } else {
                "BREACHED"
            };
            let limit = crate::threshold::Threshold::parse(&t.expr)
                .map(|p| p.to_string())
                .unwrap_or_else(|_| t.expr.clone());
            let _ = writeln!(
                s,
                "  {:<32} actual {:<12} {verdict} (limit {limit})",
                t.expr,
                t.actual
                    .map_or("missing".into(), |a| with_unit(&t.metric, a)),
            );
        }
    }
    if !r.baseline.is_empty() {
        let _ = writeln!(
            s,
            "\nagainst baseline (worse first, then by the size of the change)"
        );
        for w in &r.baseline_warnings {
            let _ = writeln!(s, "  WARNING: {w}");
        }
        for c in r.baseline.iter().filter(|c| c.before != c.after) {
            let pct = c.change_pct.map_or("new".into(), |p| format!("{p:+.1}%"));
            let _ = writeln!(
                s,
                "  {:<26} {:>12} -> {:>12}  {:>9} {}",
                c.figure,
                with_unit(&c.figure, c.before),
                with_unit(&c.figure, c.after),
                pct,
                if c.worse { "worse" } else { "" }
            );
        }
    }
    if let Some(c) = &r.capacity {
        let _ = writeln!(s, "\ncapacity      {}", c.summary);
        for l in &c.levels {
            let _ = writeln!(
                s,
                "  x{:<6.2} {:<9} {}",
                l.factor,
                if l.held { "held" } else { "broke" },
                l.detail
            );
        }
    }
    if !r.error_samples.is_empty() {
        let _ = writeln!(s, "\nfirst errors");
        for e in r.error_samples.iter().take(5) {
            let _ = writeln!(s, "  {e}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_every_section() {
        let mut r = super::super::tests::sample();
        r.thresholds.push(
            crate::threshold::Threshold::parse("reserve.p99<1ms")
                .unwrap()
                .check(&r.figures),
        );
        let t = super::render(&r);
        for needle in [
            "reserve",
            "oversold: 0",
            "BREACHED",
            "burst @",
            "generator     healthy",
        ] {
            assert!(t.contains(needle), "missing {needle}:\n{t}");
        }
    }
}
