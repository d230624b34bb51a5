//! `--metrics-listen`: the tester's own live figures as an OpenMetrics
//! endpoint (`GET /metrics`), for people who watch a rehearsal in Grafana
//! next to the gateway's metrics; and `--csv`, the per-second series as a
//! file.
//!
//! Owns the text formats only. The coordinator writes the latest merged
//! progress into [`Live`] every tick; the endpoint reads it. It never
//! blocks the run: a scrape takes the lock for a copy.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;

use crate::plan::Progress;
use crate::stats::Point;

/// OpenMetrics' content type.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Scrapes served at once at most; more wait for the accept loop (a
/// Prometheus or two scrape; nothing else should).
const SCRAPES_MAX: usize = 8;

/// What the endpoint shows: the current run's merged progress.
#[derive(Debug, Default, Clone)]
pub struct LiveState {
    pub progress: Progress,
    /// Seconds since the run's start.
    pub t_s: f64,
    /// Load factor of the run (1 except in a capacity search).
    pub level: f64,
    pub phase: String,
    /// Runs finished by this invocation (capacity levels, repeats).
    pub runs_done: u64,
}

/// Shared between the coordinator (writer) and the endpoint (reader).
pub type Live = Arc<Mutex<LiveState>>;

/// One metric family: name (after `holdfast_loadtest_`), type, help, value.
type Family = (
    &'static str,
    &'static str,
    &'static str,
    fn(&LiveState) -> f64,
);

/// Every family the endpoint serves (besides the phase).
const FAMILIES: [Family; 12] = [
    (
        "reserves_ok",
        "counter",
        "Reservations that got a hold.",
        |s| s.progress.reserve_ok as f64,
    ),
    (
        "reserves_refused",
        "counter",
        "Reservations refused as a sale refusal (sold_out, limit_exceeded, not_open).",
        |s| s.progress.reserve_refused as f64,
    ),
    (
        "errors",
        "counter",
        "Requests that failed (not sale refusals).",
        |s| s.progress.errors as f64,
    ),
    ("commits", "counter", "Commits acknowledged.", |s| {
        s.progress.commits as f64
    }),
    (
        "frames",
        "counter",
        "Websocket frames viewers received.",
        |s| s.progress.frames as f64,
    ),
    (
        "connect_failures",
        "counter",
        "Connections that could not be opened.",
        |s| s.progress.connect_failed as f64,
    ),
    ("viewers", "gauge", "Viewers connected now.", |s| {
        s.progress.viewers as f64
    }),
    (
        "reserve_p99_seconds",
        "gauge",
        "Reserve latency p99 of the last complete second, from the intended send time.",
        |s| s.progress.reserve_p99_ms / 1000.0,
    ),
    (
        "schedule_lag_p99_seconds",
        "gauge",
        "How late arrivals started, p99 so far.",
        |s| s.progress.schedule_lag_p99_ms / 1000.0,
    ),
    (
        "run_elapsed_seconds",
        "gauge",
        "Seconds since the current run started.",
        |s| s.t_s.max(0.0),
    ),
    (
        "load_factor",
        "gauge",
        "Load factor of the current run against the scenario.",
        |s| s.level,
    ),
    ("runs", "counter", "Runs this invocation finished.", |s| {
        s.runs_done as f64
    }),
];

/// The OpenMetrics text of `s`.
pub fn render(s: &LiveState) -> String {
    let mut out = String::new();
    for (name, kind, help, value) in FAMILIES {
        let suffix = if kind == "counter" { "_total" } else { "" };
        let _ = writeln!(out, "# TYPE holdfast_loadtest_{name} {kind}");
        let _ = writeln!(out, "# HELP holdfast_loadtest_{name} {help}");
        let _ = writeln!(out, "holdfast_loadtest_{name}{suffix} {}", value(s));
    }
    let _ = writeln!(out, "# TYPE holdfast_loadtest_phase info");
    let _ = writeln!(
        out,
        "holdfast_loadtest_phase_info{{phase=\"{}\"}} 1",
        s.phase.replace(['\\', '"', '\n'], "_")
    );
    out.push_str("# EOF\n");
    out
}

/// Serves `GET /metrics` on `listener` until `stop`.
pub async fn serve(listener: tokio::net::TcpListener, live: Live, stop: CancellationToken) {
    let slots = Arc::new(tokio::sync::Semaphore::new(SCRAPES_MAX));
    loop {
        let (stream, _) = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("--metrics-listen: accept failed: {e}");
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let live = live.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                let live = live.clone();
                async move {
                    if req.uri().path() == "/metrics" {
                        let state = live.lock().unwrap_or_else(|p| p.into_inner()).clone();
                        Response::builder()
                            .header("content-type", CONTENT_TYPE)
                            .body(Full::new(Bytes::from(render(&state))))
                    } else {
                        Response::builder()
                            .status(404)
                            .body(Full::new(Bytes::from_static(b"GET /metrics\n")))
                    }
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
            drop(permit);
        });
    }
}

/// Binds `addr` for [`serve`]; the error names the flag.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("--metrics-listen {addr}: {e}"))
}

/// The per-second series as CSV: one row per second of the run, by the
/// second each reserve was due; latencies in ms; viewers connected.
pub fn csv(points: &[Point]) -> String {
    let mut out = String::from(
        "t_s,offered,reserve_ok,reserve_refused,errors,commits,releases,reserve_p50_ms,reserve_p99_ms,viewers\n",
    );
    for p in points {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{:.3},{:.3},{}",
            p.t_s,
            p.offered,
            p.reserve_ok,
            p.reserve_refused,
            p.errors,
            p.commits,
            p.releases,
            p.reserve_p50_ms,
            p.reserve_p99_ms,
            p.viewers
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_text_is_well_formed() {
        let s = LiveState {
            progress: Progress {
                reserve_ok: 7,
                reserve_p99_ms: 12.5,
                ..Progress::default()
            },
            t_s: 3.0,
            level: 1.5,
            phase: "burst 1 @2s".into(),
            runs_done: 0,
        };
        let text = render(&s);
        assert!(text.ends_with("# EOF\n"));
        assert!(text.contains("# TYPE holdfast_loadtest_reserves_ok counter\n"));
        assert!(text.contains("holdfast_loadtest_reserves_ok_total 7\n"));
        assert!(text.contains("holdfast_loadtest_reserve_p99_seconds 0.0125\n"));
        assert!(text.contains("holdfast_loadtest_phase_info{phase=\"burst 1 @2s\"} 1\n"));
        // Every sample line belongs to a declared family.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let family = name.trim_end_matches("_total").trim_end_matches("_info");
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "{name} has no TYPE line"
            );
        }
    }

    #[test]
    fn csv_has_a_header_and_a_row_per_second() {
        let pts = vec![
            Point {
                t_s: 0,
                offered: 3,
                reserve_ok: 2,
                reserve_refused: 1,
                ..Point::default()
            },
            Point {
                t_s: 1,
                ..Point::default()
            },
        ];
        let text = csv(&pts);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("t_s,offered,reserve_ok"));
        assert_eq!(lines[1], "0,3,2,1,0,0,0,0.000,0.000,0");
    }
}
