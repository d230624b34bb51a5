//! Operations on a hold another node made. The hold id names its node;
//! that node's engine and journal own the hold, so the operation goes
//! there, through Redis: published on the node's inbox channel, answered
//! on the asking node's reply channel. No node talks to another directly.
//!
//! The same inbox carries operations on a node's memory that are not about
//! a hold ([`NodeRequest`]: a buyer erasure, [`super::erase`]).
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

/// An operation on a node's own memory, not on one hold (see
/// [`super::erase`]). The buyer is named by its id on the asked node (16
/// hex digits: each node hashes buyer ids with its own key) and its
/// stored names there: never by the id the shop sent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum NodeRequest {
    /// How many live holds the buyer has on the node.
    BuyerHolds { buyer: String },
    /// Forget the buyer in the node's memory (refused while it has a live
    /// hold there): stored name, limit records, journal mirror, webhook
    /// events naming one of `names`.
    ForgetBuyer { buyer: String, names: Vec<String> },
    /// Reserve here, the buyer's home node ([`super::home`]).
    Reserve(crate::protocol::Reserve),
}

/// Whatever a node asks another (the inbox's JSON; a hold operation reads
/// as it did before node requests existed).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum Asked {
    Hold(Request),
    Node(NodeRequest),
}

#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    id: u64,
    from: u8,
    request: Asked,
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

/// How a published request ended.
enum Reply {
    Answered(Answer),
    /// Nobody listens on the node's inbox (it is down, or was until the
    /// deadline).
    NotListening,
    TimedOut,
}

/// Publishes `request` on node `to`'s inbox and waits for its answer until
/// `--forward-timeout-ms`.
async fn publish(cluster: &Cluster, to: u8, request: Asked) -> Result<Reply, ApiError> {
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
        request,
    };
    let payload = serde_json::to_string(&envelope).expect("requests serialise");
    let wait = std::time::Duration::from_millis(cluster.settings.forward_timeout_ms);
    let deadline = tokio::time::Instant::now() + wait;
    let listeners = loop {
        let sent: Result<i64, _> = redis::cmd("SPUBLISH")
            .arg(cluster.keys.inbox(to))
            .arg(&payload)
            .query_async(&mut cluster.conn())
            .await;
        // Nobody listening: the node is down, or its subscription is on its
        // way to the slot's new master after a failover. Try again for a
        // moment before taking it for down.
        match sent {
            Ok(0)
                if tokio::time::Instant::now() + RELISTEN_WAIT < deadline
                    && super::adopt::is_alive(cluster, to).await =>
            {
                tokio::time::sleep(RELISTEN_WAIT).await;
            }
            other => break other,
        }
    };
    let reply = match listeners {
        Ok(0) => Reply::NotListening,
        Ok(_) => match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(answer)) => Reply::Answered(answer),
            _ => Reply::TimedOut,
        },
        Err(e) => {
            cluster.forward.waiting.remove(&id);
            return Err(super::redis_error(e));
        }
    };
    if !matches!(reply, Reply::Answered(_)) {
        cluster.forward.waiting.remove(&id);
    }
    let outcome = match reply {
        Reply::Answered(_) => "answered",
        Reply::NotListening => "no_listener",
        Reply::TimedOut => "timeout",
    };
    counter!("holdfast_cluster_forwards_total", "outcome" => outcome).increment(1);
    Ok(reply)
}

/// The body of a 2xx answer, or the answering node's refusal.
fn answered(answer: Answer) -> Result<serde_json::Value, ApiError> {
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

/// Sends `request` to node `owner` and waits for its answer: the body on
/// success, or the owner's refusal.
pub async fn send(
    cluster: &Cluster,
    owner: u8,
    request: Request,
) -> Result<serde_json::Value, ApiError> {
    match publish(cluster, owner, Asked::Hold(request.clone())).await? {
        Reply::Answered(answer) => answered(answer),
        // The node is down: its state is ended here once it is adopted.
        Reply::NotListening => super::adopt::run_on_adopted(cluster, owner, request).await,
        Reply::TimedOut => Err(ApiError::unavailable(format!(
            "node {owner}, which made this hold, did not answer in time: retry (with the same request_id)"
        ))),
    }
}

/// Sends `request` to live node `node` and waits for its answer: the body,
/// or `None` when the node turned out not to be alive (nobody listens and
/// its ownership lapsed: it has no memory to ask). A live node that does
/// not answer in time is a retryable refusal.
pub async fn ask(
    cluster: &Cluster,
    node: u8,
    request: NodeRequest,
) -> Result<Option<serde_json::Value>, ApiError> {
    let unanswered = || {
        ApiError::unavailable(format!(
            "node {node} is alive but did not answer within {} ms: retry once it does (or once it \
             is adopted)",
            cluster.settings.forward_timeout_ms
        ))
    };
    match publish(cluster, node, Asked::Node(request)).await? {
        Reply::Answered(answer) => answered(answer).map(Some),
        Reply::NotListening if !super::adopt::is_alive(cluster, node).await => Ok(None),
        Reply::NotListening | Reply::TimedOut => Err(unanswered()),
    }
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
        Asked::Hold(Request::Commit(c)) => ops.commit(&c).await.map(to_json),
        Asked::Hold(Request::Release(r)) => ops.release(&r).await.map(to_json),
        Asked::Hold(Request::Extend(x)) => ops.extend(&x).await.map(to_json),
        Asked::Hold(Request::Hold { hold }) => ops.hold(&hold).await.map(to_json),
        Asked::Node(NodeRequest::Reserve(r)) => ops.reserve_as_home(r).await.map(to_json),
        Asked::Node(request) => super::erase::handle(&ops, request),
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
