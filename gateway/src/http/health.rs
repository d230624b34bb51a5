//! Operations endpoints: `/healthz` (the process answers), `/readyz` (it
//! can take changes now: persistence admits writes) and `/metrics`
//! (Prometheus text). Served on the main port, or on `--metrics-listen`.

use crate::journal::Durability;
use crate::ops::Ops;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use metrics::gauge;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use std::sync::Arc;

/// What the operations endpoints read.
#[derive(Debug, Clone)]
pub struct Health {
    pub ops: Arc<Ops>,
    pub metrics: PrometheusHandle,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReadyReport {
    pub ready: bool,
    pub status: &'static str,
    pub reason: String,
    pub persistence: &'static str,
    /// Events not yet in Redis (0 in memory).
    pub backlog: usize,
    /// Redis answering (absent in memory).
    pub redis_up: Option<bool>,
    pub holds_in_use: u32,
    pub holds_capacity: u32,
    pub skus: usize,
    /// The gateway's version (load-test reports record what they ran against).
    pub version: &'static str,
}

/// Seconds a client should wait before asking `/readyz` (or retrying a
/// refused change) again.
pub const RETRY_AFTER_SECS: &str = "1";

impl Health {
    pub fn report(&self) -> ReadyReport {
        let ops = &self.ops;
        let reason = match ops.durability.admit() {
            Ok(()) => String::new(),
            Err(e) => e.message.to_string(),
        };
        let ready = reason.is_empty();
        ReadyReport {
            ready,
            status: if ready { "ready" } else { "not_ready" },
            reason,
            persistence: ops.durability.mode(),
            backlog: match &ops.durability {
                Durability::Redis(j) => j.backlog(&ops.engine),
                Durability::Memory => 0,
            },
            redis_up: match &ops.durability {
                Durability::Redis(j) => Some(j.is_up()),
                Durability::Memory => None,
            },
            holds_in_use: ops.engine.holds_in_use(),
            holds_capacity: ops.engine.holds_capacity(),
            skus: ops.engine.sku_count(),
            version: env!("CARGO_PKG_VERSION"),
        }
    }

    fn refresh_gauges(&self) {
        let ops = &self.ops;
        gauge!("holdfast_holds_in_use").set(f64::from(ops.engine.holds_in_use()));
        if let Durability::Redis(j) = &ops.durability {
            gauge!("holdfast_journal_backlog").set(j.backlog(&ops.engine) as f64);
        }
        if let Some(log) = ops.engine.events() {
            gauge!("holdfast_event_queue").set(log.len() as f64);
        }
        crate::channels::refresh_gauges(ops);
    }
}

pub async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "ok" }))
}

/// 200 when ready; 503 with `Retry-After` and the reason (`not_ready`)
/// while persistence cannot take changes (Redis down, or the async backlog
/// full).
pub async fn readyz(State(h): State<Health>) -> Response {
    let report = h.report();
    let mut body = serde_json::to_value(&report).unwrap_or_default();
    if report.ready {
        return (StatusCode::OK, Json(body)).into_response();
    }
    body["error"] = "not_ready".into();
    body["message"] = report.reason.clone().into();
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from_static(RETRY_AFTER_SECS),
    );
    response
}

pub async fn metrics(State(h): State<Health>) -> impl IntoResponse {
    h.refresh_gauges();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        h.metrics.render(),
    )
}

/// The operations routes alone, for `--metrics-listen`.
pub fn routes(health: Health) -> axum::Router {
    use axum::routing::get;
    axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(health)
}
