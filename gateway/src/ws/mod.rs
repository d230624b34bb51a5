//! The websocket endpoint `/ws`: the upgrade (auth, connection limit,
//! subprotocol, tungstenite limits), the per-connection [`session`], and the
//! fan-out [`hub`].

pub mod hub;
pub mod session;

use crate::auth::{Role, Tokens};
use crate::config::Limits;
use crate::error::ApiError;
use crate::ops::Ops;
use crate::protocol::{SUBPROTOCOL_BINARY, SUBPROTOCOL_JSON};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Query, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use metrics::counter;
use std::sync::Arc;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Read buffer of a viewer connection (part of its idle memory).
const VIEWER_READ_BUFFER: usize = 128;
/// Read buffer of a checkout or admin connection: a pipelined burst of
/// requests in one read.
const CLIENT_READ_BUFFER: usize = 4 * 1024;

/// Everything a websocket session needs.
#[derive(Debug)]
pub struct WsCtx {
    pub ops: Arc<Ops>,
    pub hub: Arc<hub::Hub>,
    pub tokens: Tokens,
    pub limits: Limits,
    pub broadcast_interval_ms: u64,
    pub connections: Arc<Semaphore>,
    pub shutdown: CancellationToken,
}

#[derive(Debug, serde::Deserialize)]
pub struct WsQuery {
    token: Option<String>,
}

/// `GET /ws`.
pub async fn upgrade(
    State(ctx): State<Arc<WsCtx>>,
    Query(query): Query<WsQuery>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => {
            return ApiError::bad_request(format!("expected a websocket upgrade: {rejection}"))
                .into_response();
        }
    };
    if let Some(token) = &query.token
        && let Err(e) = Tokens::refuse_jwt_in_url(token)
    {
        return e.into_response();
    }
    let (role, buyer) = match (&query.token, ctx.tokens.caller_of_headers(&headers)) {
        (_, Err(e)) => return e.into_response(),
        (Some(token), Ok(header)) => match ctx.tokens.role_of(token) {
            Some(role) if role >= header.role => (role, None),
            Some(_) => (header.role, header.buyer),
            None => return ApiError::unauthorized().into_response(),
        },
        (None, Ok(header)) => (header.role, header.buyer),
    };
    let Ok(permit) = ctx.connections.clone().try_acquire_owned() else {
        counter!("holdfast_ws_connections_total", "outcome" => "refused").increment(1);
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            crate::protocol::Code::TooManyConnections,
            "connection limit reached",
        )
        .into_response();
    };
    counter!("holdfast_ws_connections_total", "outcome" => "accepted").increment(1);
    let limits = &ctx.limits;
    // Our own limits, never tungstenite's defaults (128 KiB read buffer per
    // connection, 64 MiB messages, unbounded write buffer). The read buffer
    // is also the most one read takes from the socket: viewers send next to
    // nothing and there are tens of thousands of them, so theirs is tiny;
    // a checkout backend pipelines requests on a few connections, and a
    // tiny buffer would cost it one read syscall per two or three frames.
    let read_buffer = match role {
        Role::Viewer => VIEWER_READ_BUFFER,
        Role::Buyer | Role::Checkout | Role::Admin => CLIENT_READ_BUFFER,
    };
    let ws = ws
        .protocols([SUBPROTOCOL_JSON, SUBPROTOCOL_BINARY])
        .read_buffer_size(read_buffer)
        .write_buffer_size(8 * 1024)
        .max_write_buffer_size(limits.write_buffer_bytes_max)
        .max_message_size(limits.frame_bytes_max)
        .max_frame_size(limits.frame_bytes_max);
    let ctx = ctx.clone();
    ws.on_failed_upgrade(|e| tracing::debug!(error = %e, "websocket upgrade failed"))
        .on_upgrade(move |socket| {
            let binary = socket
                .protocol()
                .is_some_and(|p| p.as_bytes() == SUBPROTOCOL_BINARY.as_bytes());
            session::run(socket, ctx, (role, buyer), binary, permit)
        })
}
