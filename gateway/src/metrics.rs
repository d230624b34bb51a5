//! Prometheus metrics, through the `metrics` facade. Names and labels live
//! here, so the set is documented in one place:
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `holdfast_reservations_total` | counter | `outcome` (`ok` or a refusal code) |
//! | `holdfast_hold_ops_total` | counter | `op` (commit/release/extend), `outcome` |
//! | `holdfast_expired_holds_total` | counter | |
//! | `holdfast_request_seconds` | histogram | `api` (http/ws), `op` |
//! | `holdfast_ws_connections` | gauge | |
//! | `holdfast_ws_connections_total` | counter | `outcome` (accepted/refused) |
//! | `holdfast_ws_frames_sent_total` | counter | `kind` (snapshot/update/stock_event/reply) |
//! | `holdfast_ws_updates_delivered_total` | counter | |
//! | `holdfast_ws_slow_client_drops_total` | counter | `reason` |
//! | `holdfast_ws_closed_total` | counter | `reason` |
//! | `holdfast_broadcast_seconds` | histogram | |
//! | `holdfast_holds_in_use` | gauge | |
//! | `holdfast_event_queue` | gauge | |
//! | `holdfast_journal_batch_events` | histogram | |
//! | `holdfast_journal_persist_seconds` | histogram | |
//! | `holdfast_journal_backlog` | gauge | |
//! | `holdfast_journal_errors_total` | counter | |
//! | `holdfast_redis_up` | gauge | |
//! | `holdfast_webhook_deliveries_total` | counter | `endpoint`, `outcome` (delivered/failed/dead_letter) |
//! | `holdfast_webhook_retrying` | gauge | `endpoint` |
//! | `holdfast_webhook_lag_seconds` | gauge | `endpoint` (age of the oldest waiting event) |
//! | `holdfast_webhook_dropped_total` | counter | `endpoint` (memory queue full) |
//! | `holdfast_channel_units` | gauge | `sku`, `channel` (configured ones only), `state` (available/held/sold/quota_available) |

use crate::protocol::Code;
use metrics::{Counter, Histogram, counter, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder once per process (tests start several
/// gateways in one process; they share it) and returns its handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let seconds = [
                0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05,
                0.1, 0.25, 0.5, 1.0, 2.5,
            ];
            let events = [
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
            ];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Suffix("seconds".into()),
                    &seconds,
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        metrics_exporter_prometheus::Matcher::Full(
                            "holdfast_journal_batch_events".into(),
                        ),
                        &events,
                    )
                })
                .expect("static buckets are valid");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (an embedding
            // program); then ours still renders what we record through it
            // only if it is ours, so say so in the log.
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
            }
            handle
        })
        .clone()
}

/// Metric handles used on hot paths (per frame, per reservation): a
/// `counter!` call hashes its name and labels and looks the metric up in
/// the registry every time; a handle is one atomic add.
pub struct Hot {
    pub updates_delivered: Counter,
    pub frames_update: Counter,
    pub frames_reply: Counter,
    pub frames_snapshot: Counter,
    pub frames_stock_event: Counter,
    /// By outcome: `ok`, then every [`Code`] in declaration order.
    reservations: Vec<Counter>,
    /// By operation (commit, release, extend), then outcome as above.
    hold_ops: [Vec<Counter>; 3],
    ws_request: HashMap<&'static str, Histogram>,
}

/// The metric label of an outcome, and its index in the handle tables.
fn outcome_index(outcome: Result<(), Code>) -> usize {
    match outcome {
        Ok(()) => 0,
        Err(code) => 1 + code as usize,
    }
}

fn outcome_labels() -> impl Iterator<Item = &'static str> {
    std::iter::once("ok")
        .chain(Code::ALL.iter().map(|c| c.as_str()))
        .chain(std::iter::once(Code::Unknown.as_str()))
}

const HOLD_OPS: [&str; 3] = ["commit", "release", "extend"];

impl Hot {
    fn new() -> Self {
        let reservations = outcome_labels()
            .map(|outcome| counter!("holdfast_reservations_total", "outcome" => outcome))
            .collect();
        let hold_ops = HOLD_OPS.map(|op| {
            outcome_labels()
                .map(
                    |outcome| counter!("holdfast_hold_ops_total", "op" => op, "outcome" => outcome),
                )
                .collect()
        });
        let ws_request = ["reserve", "commit", "release", "extend"]
            .into_iter()
            .map(|op| {
                (
                    op,
                    histogram!("holdfast_request_seconds", "api" => "ws", "op" => op),
                )
            })
            .collect();
        Self {
            updates_delivered: counter!("holdfast_ws_updates_delivered_total"),
            frames_update: counter!("holdfast_ws_frames_sent_total", "kind" => "update"),
            frames_reply: counter!("holdfast_ws_frames_sent_total", "kind" => "reply"),
            frames_snapshot: counter!("holdfast_ws_frames_sent_total", "kind" => "snapshot"),
            frames_stock_event: counter!("holdfast_ws_frames_sent_total", "kind" => "stock_event"),
            reservations,
            hold_ops,
            ws_request,
        }
    }
}

static HOT: OnceLock<Hot> = OnceLock::new();

/// The hot-path handles (registered on first use, after `install`).
pub fn hot() -> &'static Hot {
    HOT.get_or_init(Hot::new)
}

pub fn reservation(outcome: Result<(), Code>) {
    hot().reservations[outcome_index(outcome)].increment(1);
}

/// `op` is `commit`, `release` or `extend`.
pub fn hold_op(op: &'static str, outcome: Result<(), Code>) {
    let i = HOLD_OPS
        .iter()
        .position(|o| *o == op)
        .expect("a hold operation");
    hot().hold_ops[i][outcome_index(outcome)].increment(1);
}

pub fn request_time(api: &'static str, op: &'static str, took: Duration) {
    match (api, hot().ws_request.get(op)) {
        ("ws", Some(h)) => h.record(took.as_secs_f64()),
        _ => histogram!("holdfast_request_seconds", "api" => api, "op" => op)
            .record(took.as_secs_f64()),
    }
}
