//! The webhook admin API (admin token): endpoints (the secret is shown only
//! in the answer that creates one), their dead letters, replays, and the
//! low-stock thresholds. Endpoints from `--webhooks-file` are read-only.

use super::{Admin, ApiJson, AppState};
use crate::error::ApiError;
use crate::protocol::Code;
use crate::webhooks::Webhooks;
use crate::webhooks::config::{EndpointSpec, FieldError};
use crate::webhooks::queue::Replay;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use std::sync::Arc;

/// Most event ids one replay names.
pub const REPLAY_IDS_MAX: usize = 1_000;

/// The routes, merged into the API router.
pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/api/admin/webhooks", get(list).post(create))
        .route("/api/admin/webhooks/{id}", get(one).delete(remove))
        .route("/api/admin/webhooks/{id}/dead-letters", get(dead_letters))
        .route("/api/admin/webhooks/{id}/replay", post(replay))
        .route("/api/admin/low-stock", get(low_stock).put(set_low_stock))
}

fn hooks(s: &AppState) -> Result<&Arc<Webhooks>, ApiError> {
    s.webhooks
        .as_ref()
        .ok_or_else(|| ApiError::not_found("webhooks are off (start with --webhooks)"))
}

fn endpoint(s: &AppState, id: &str) -> Result<Arc<crate::webhooks::Endpoint>, ApiError> {
    hooks(s)?.endpoint(id).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            Code::UnknownWebhook,
            "no webhook endpoint with that id",
        )
    })
}

fn field_error(e: FieldError) -> ApiError {
    let code = match e.field {
        "url" => Code::InvalidUrl,
        "secret" => Code::InvalidSecret,
        "events" => Code::InvalidEvents,
        _ => Code::Invalid,
    };
    ApiError::new(
        StatusCode::BAD_REQUEST,
        code,
        format!("{}: {}", e.field, e.message),
    )
}

async fn list(State(s): State<AppState>, _: Admin) -> Result<impl IntoResponse, ApiError> {
    let eps: Vec<_> = hooks(&s)?.endpoints().iter().map(|e| e.view()).collect();
    Ok(Json(serde_json::json!({ "endpoints": eps })))
}

async fn one(
    State(s): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(endpoint(&s, &id)?.view()))
}

async fn create(
    State(s): State<AppState>,
    _: Admin,
    ApiJson(spec): ApiJson<EndpointSpec>,
) -> Result<impl IntoResponse, ApiError> {
    let hooks = hooks(&s)?;
    let checked = spec.check(hooks.args.http_allowed).map_err(field_error)?;
    let secret = checked.secret.reveal();
    let ep = hooks
        .add(checked, false)
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, Code::AlreadyExists, e.message))?;
    let mut view = ep.view();
    view["secret"] = serde_json::Value::String(secret);
    Ok((StatusCode::CREATED, Json(view)))
}

async fn remove(
    State(s): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let ep = endpoint(&s, &id)?;
    if ep.from_file {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            Code::ReadOnly,
            "this endpoint is defined in --webhooks-file",
        ));
    }
    hooks(&s)?.remove(&id);
    Ok(StatusCode::NO_CONTENT)
}

async fn dead_letters(
    State(s): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let dead = endpoint(&s, &id)?.queue.dead_letters();
    Ok(Json(serde_json::json!({ "dead_letters": dead })))
}

/// `{"event_ids":[...]}`, `{"from_ms":..,"to_ms":..}` or
/// `{"dead_letters":true}`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayReq {
    #[serde(default)]
    event_ids: Option<Vec<String>>,
    #[serde(default)]
    from_ms: Option<u64>,
    #[serde(default)]
    to_ms: Option<u64>,
    #[serde(default)]
    dead_letters: bool,
}

async fn replay(
    State(s): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ReplayReq>,
) -> Result<impl IntoResponse, ApiError> {
    let ep = endpoint(&s, &id)?;
    let pick = match (req.event_ids, req.from_ms, req.to_ms, req.dead_letters) {
        (Some(ids), None, None, false) if !ids.is_empty() && ids.len() <= REPLAY_IDS_MAX => {
            Replay::Ids(ids)
        }
        (Some(_), None, None, false) => {
            return Err(ApiError::invalid(format!(
                "event_ids: 1 to {REPLAY_IDS_MAX} ids"
            )));
        }
        (None, Some(from_ms), Some(to_ms), false) if from_ms <= to_ms => {
            Replay::Range { from_ms, to_ms }
        }
        (None, None, None, true) => Replay::DeadLetters,
        _ => {
            return Err(ApiError::invalid(
                "give event_ids, or from_ms and to_ms (from_ms <= to_ms), or dead_letters: true",
            ));
        }
    };
    let replayed = ep.queue.replay(&pick);
    Ok(Json(serde_json::json!({ "replayed": replayed })))
}

async fn low_stock(State(s): State<AppState>, _: Admin) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(
        serde_json::json!({ "thresholds": hooks(&s)?.low_stock() }),
    ))
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LowStockReq {
    sku: String,
    /// 0 clears the threshold.
    threshold: u32,
}

async fn set_low_stock(
    State(s): State<AppState>,
    _: Admin,
    ApiJson(req): ApiJson<LowStockReq>,
) -> Result<impl IntoResponse, ApiError> {
    let hooks = hooks(&s)?;
    if s.ops.engine.sku(&req.sku).is_none() {
        return Err(ApiError::unknown_sku());
    }
    hooks
        .set_low_stock(&req.sku, req.threshold)
        .map_err(ApiError::capacity)?;
    Ok(Json(
        serde_json::json!({ "sku": req.sku, "threshold": req.threshold }),
    ))
}
