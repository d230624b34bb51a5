//! Operations on a hold another node made. The hold id names its node;
//! that node's engine and journal own the hold, so the operation goes
//! there, through Redis: published on the node's inbox channel, answered
//! on the asking node's reply channel. No node talks to another directly.
//!
//! If nobody listens on the inbox (the node is down), the hold's node is
//! adopted once its ownership lapsed ([`super::adopt`]) and the operation
//! runs on its state in Redis; until then the caller gets a retryable
//! refusal. Answers that never come (a lost message) time out the same
//! way: every operation is safe to retry (a commit retried without a
//! request id answers `already_committed`).

use super::Cluster;
use crate::error::ApiError;
use crate::protocol::{Code, Commit, ErrorMsg, Extend, HoldView, Release};
use axum::http::StatusCode;
use dashmap::DashMap;
use metrics::counter;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::oneshot;

/// A forwarded operation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Commit(Commit),
    Release(Release),
    Extend(Extend),
    Hold { hold: String },
}

impl Request {
    pub fn hold(&self) -> &str {
        match self {
            Self::Commit(c) => &c.hold,
            Self::Release(r) => &r.hold,
            Self::Extend(x) => &x.hold,
            Self::Hold { hold } => hold,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    id: u64,
    from: u8,
    request: Request,
}

/// The answer: the HTTP status and body the owner would have sent.
#[derive(Debug, Serialize, Deserialize)]
struct Answer {
    id: u64,
    status: u16,
    body: serde_json::Value,
}

/// Forwarded requests waiting for their answer.
#[derive(Debug, Default)]
pub struct Pending {
    next: AtomicU64,
    waiting: DashMap<u64, oneshot::Sender<Answer>>,
}

impl Pending {
    /// An answer arrived on our reply channel.
    pub fn complete(&self, payload: &str) {
        match serde_json::from_str::<Answer>(payload) {
            Ok(a) => {
                if let Some((_, tx)) = self.waiting.remove(&a.id) {
                    let _ = tx.send(a);
                }
            }
            Err(e) => tracing::warn!(
                error = %crate::privacy::json_error_for_log(&e),
                "a forwarded answer did not parse"
            ),
        }
    }
}

/// Pause before publishing again to a node that is alive but not listening.
const RELISTEN_WAIT: std::time::Duration = std::time::Duration::from_millis(50);

/// Most forwarded requests one node waits for at once; past it, new ones
/// are refused as retryable (a bound on the map above).
pub const FORWARDS_IN_FLIGHT_MAX: usize = 4096;

/// Sends `request` to node `owner` and waits for its answer: the body on
/// success, or the owner's refusal.
pub async fn send(
    cluster: &Cluster,
    owner: u8,
    request: Request,
) -> Result<serde_json::Value, ApiError> {
    if cluster.forward.waiting.len() >= FORWARDS_IN_FLIGHT_MAX {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Code::Capacity,
            "too many operations waiting for other nodes: retry shortly",
        ));
    }
    let id = cluster.forward.next.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = oneshot::channel();
    cluster.forward.waiting.insert(id, tx);
    let envelope = Envelope {
        id,
        from: cluster.node,
        request: request.clone(),
    };
    let payload = serde_json::to_string(&envelope).expect("requests serialise");
    let wait = std::time::Duration::from_millis(cluster.settings.forward_timeout_ms);
    let deadline = tokio::time::Instant::now() + wait;
    let listeners = loop {
        let sent: Result<i64, _> = redis::cmd("SPUBLISH")
            .arg(cluster.keys.inbox(owner))
            .arg(&payload)
            .query_async(&mut cluster.conn())
            .await;
        // Nobody listening: the node is down, or its subscription is on its
        // way to the slot's new master after a failover. Try again for a
        // moment before taking it for down.
        match sent {
            Ok(0)
                if tokio::time::Instant::now() + RELISTEN_WAIT < deadline
                    && super::adopt::is_alive(cluster, owner).await =>
            {
                tokio::time::sleep(RELISTEN_WAIT).await;
            }
            other => break other,
        }
    };
    let answer = match listeners {
        Ok(0) => {
            cluster.forward.waiting.remove(&id);
            counter!("holdfast_cluster_forwards_total", "outcome" => "no_listener").increment(1);
            // The node is down: its state is ended here once it is adopted.
            return super::adopt::run_on_adopted(cluster, owner, request).await;
        }
        Ok(_) => match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(answer)) => answer,
            _ => {
                cluster.forward.waiting.remove(&id);
                counter!("holdfast_cluster_forwards_total", "outcome" => "timeout").increment(1);
                return Err(ApiError::unavailable(format!(
                    "node {owner}, which made this hold, did not answer in time: retry (with the same request_id)"
                )));
            }
        },
        Err(e) => {
            cluster.forward.waiting.remove(&id);
            return Err(super::redis_error(e));
        }
    };
    counter!("holdfast_cluster_forwards_total", "outcome" => "answered").increment(1);
    if (200..300).contains(&answer.status) {
        return Ok(answer.body);
    }
    let msg: ErrorMsg = serde_json::from_value(answer.body)
        .unwrap_or_else(|_| ApiError::unavailable("a forwarded answer did not parse").to_msg(None));
    Err(ApiError::new(
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
        msg.error,
        msg.message,
    ))
}

/// Runs a request another node forwarded to this one, and answers it.
pub async fn handle(cluster: &Cluster, payload: &str) {
    let envelope: Envelope = match serde_json::from_str(payload) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(
                error = %crate::privacy::json_error_for_log(&e),
                "a forwarded request did not parse"
            );
            return;
        }
    };
    let Some(ops) = cluster.ops() else {
        return;
    };
    let result = match envelope.request {
        Request::Commit(c) => ops.commit(&c).await.map(to_json),
        Request::Release(r) => ops.release(&r).await.map(to_json),
        Request::Extend(x) => ops.extend(&x).await.map(to_json),
        Request::Hold { hold } => ops.hold(&hold).await.map(to_json),
    };
    let answer = match result {
        Ok(body) => Answer {
            id: envelope.id,
            status: 200,
            body,
        },
        Err(e) => Answer {
            id: envelope.id,
            status: e.status.as_u16(),
            body: to_json(e.to_msg(None)),
        },
    };
    let payload = serde_json::to_string(&answer).expect("answers serialise");
    if let Err(e) = redis::cmd("SPUBLISH")
        .arg(cluster.keys.replies(envelope.from))
        .arg(payload)
        .query_async::<i64>(&mut cluster.conn())
        .await
    {
        tracing::warn!(error = %e, "cannot answer a forwarded request");
    }
}

fn to_json<T: Serialize>(v: T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or_default()
}

/// A forwarded hold view, typed.
pub fn hold_view(body: serde_json::Value) -> Result<HoldView, ApiError> {
    serde_json::from_value(body)
        .map_err(|_| ApiError::unavailable("a forwarded answer did not parse"))
}
