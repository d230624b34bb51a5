//! The HTTP API (see `docs/API.md`): viewers, checkout, admin, operations.
//! Handlers are thin: authenticate, extract, call [`crate::ops`], answer.
//! Every failure, including a malformed body or an unknown route, is a JSON
//! `{"error","message"}` body with a fitting status.

use crate::auth::buyer::BuyerAuth;
use crate::auth::jwt::BuyerToken;
use crate::auth::{Role, Tokens, require};
use crate::error::ApiError;
use crate::ops::Ops;
use crate::protocol::Code;
use crate::protocol::{Commit, Extend, QtyReq, Release, Reserve, SkuDef, SkuPatch, WindowReq};
use crate::ws::{self, WsCtx};
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, MatchedPath, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Instant;

pub mod assets;
pub mod buy;
pub mod channels;
pub mod cors;
pub mod health;
pub mod privacy;
pub mod webhooks;

/// Shared state of the HTTP handlers.
#[derive(Debug, Clone)]
pub struct AppState {
    pub ops: Arc<Ops>,
    pub tokens: Tokens,
    pub health: health::Health,
    /// With `--webhooks` (or `--webhooks-file`).
    pub webhooks: Option<Arc<crate::webhooks::Webhooks>>,
    /// The Buy button's checkout hand-off and embedding origins.
    pub buy: Arc<buy::Checkout>,
}

impl axum::extract::FromRef<AppState> for health::Health {
    fn from_ref(s: &AppState) -> Self {
        s.health.clone()
    }
}

/// How the router is built.
#[derive(Debug, Clone)]
pub struct RouterOptions {
    pub body_bytes_max: usize,
    pub header_bytes_max: usize,
    /// Serve `/metrics` on the main port (no `--metrics-listen`).
    pub metrics_on_main: bool,
    pub cors: Option<tower_http::cors::CorsLayer>,
}

/// A JSON body whose rejections become our JSON errors.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Self(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    let status = rejection.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(status, Code::TooLarge, "request body too large");
    }
    if status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
        return ApiError::bad_request("expected Content-Type: application/json");
    }
    ApiError::bad_request(rejection.body_text())
}

fn role(state: &AppState, headers: &HeaderMap, need: Role) -> Result<(), ApiError> {
    require(state.tokens.role_of_headers(headers)?, need)
}

/// Extractor: the request carries the checkout (or admin) token.
pub struct Checkout;

/// Extractor: the request carries the admin token.
pub struct Admin;

/// Extractor: the checkout (or admin) token, or a buyer's signed token
/// (`Some`), whose requests go through [`crate::auth::buyer`].
pub struct Shopper(Option<Arc<BuyerToken>>);

impl FromRequestParts<AppState> for Shopper {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = state.tokens.caller_of_headers(&parts.headers)?;
        if caller.role == Role::Buyer {
            return Ok(Self(caller.buyer));
        }
        require(caller.role, Role::Checkout).map(|()| Self(None))
    }
}

impl Shopper {
    /// A buyer may touch only its own holds (anyone else's reads as
    /// `hold_not_found`); the checkout token any.
    fn may_touch(&self, s: &AppState, hold: &str) -> Result<(), ApiError> {
        match &self.0 {
            Some(t) => buyers(s)?.own_hold(&s.ops, t, hold),
            None => Ok(()),
        }
    }
}

/// The buyer-token side of the state (present whenever a buyer token was
/// accepted).
fn buyers(s: &AppState) -> Result<&BuyerAuth, ApiError> {
    s.tokens
        .buyers
        .as_deref()
        .ok_or_else(ApiError::unauthorized)
}

impl FromRequestParts<AppState> for Checkout {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        role(state, &parts.headers, Role::Checkout).map(|()| Self)
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        role(state, &parts.headers, Role::Admin).map(|()| Self)
    }
}

/// Builds the router.
pub fn router(state: AppState, ws_ctx: Arc<WsCtx>, options: &RouterOptions) -> Router {
    let mut api = Router::new()
        .route("/api/skus", get(list))
        .route("/api/skus/{id}", get(one))
        .route("/api/shows/{id}", get(show))
        .route("/api/reservations", post(reserve))
        .route("/api/holds/{hold}", get(hold))
        .route("/api/holds/{hold}/commit", post(commit))
        .route("/api/holds/{hold}/release", post(release))
        .route("/api/holds/{hold}/extend", post(extend))
        .route("/api/admin/skus", post(create_sku))
        .route("/api/admin/skus/{id}", axum::routing::patch(patch_sku))
        .route("/api/admin/skus/{id}/restock", post(restock))
        .route("/api/admin/skus/{id}/adjust", post(adjust))
        .route("/api/admin/skus/{id}/window", post(window))
        .route("/api/admin/skus/{id}/rebuild", post(rebuild))
        .route("/api/admin/cluster", get(cluster_overview))
        .route("/api/admin/stats", get(stats_all))
        .route("/api/admin/shows/{id}/stats", get(stats_show))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz));
    if options.metrics_on_main {
        api = api.route("/metrics", get(health::metrics));
    }
    let header_bytes_max = options.header_bytes_max;
    let images = state.ops.meta.images();
    let mut api = api
        .merge(assets::routes(images))
        .merge(webhooks::routes())
        .merge(channels::routes())
        .merge(privacy::routes())
        .merge(buy::routes())
        .layer(middleware::from_fn(timing))
        .layer(axum::extract::DefaultBodyLimit::max(options.body_bytes_max))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state);
    if let Some(cors) = &options.cors {
        api = api.layer(cors.clone());
    }
    let ws = Router::new()
        .route("/ws", get(ws::upgrade))
        .with_state(ws_ctx);
    api.merge(ws)
        .layer(middleware::from_fn(move |r, n| {
            header_bytes(r, n, header_bytes_max)
        }))
        .layer(middleware::from_fn(crate::accept::track_requests))
}

/// Refuses a request head larger than `--header-bytes-max` with a JSON 431
/// (hyper's own, bare 431 only answers heads twice that size).
async fn header_bytes(request: Request, next: Next, max: usize) -> Response {
    // Request line ("METHOD URI HTTP/1.1\r\n") and each "name: value\r\n".
    let line = request.method().as_str().len() + request.uri().to_string().len() + 12;
    let headers: usize = request
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    if line + headers > max {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Code::HeadersTooLarge,
            format!("the request line and headers are above {max} bytes"),
        )
        .into_response();
    }
    next.run(request).await
}

async fn timing(request: Request, next: Next) -> Response {
    let op = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let started = Instant::now();
    let response = next.run(request).await;
    metrics::histogram!("holdfast_request_seconds", "api" => "http", "op" => op)
        .record(started.elapsed().as_secs_f64());
    response
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        Code::MethodNotAllowed,
        "method not allowed on this route",
    )
}

async fn list(State(s): State<AppState>) -> impl IntoResponse {
    Json(s.ops.list())
}

async fn one(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(s.ops.sku(&id)?))
}

async fn show(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(s.ops.show(&id)?))
}

async fn reserve(
    State(s): State<AppState>,
    Shopper(buyer): Shopper,
    ApiJson(req): ApiJson<Reserve>,
) -> Result<Response, ApiError> {
    let r = match &buyer {
        Some(t) => buyers(&s)?.reserve(&s.ops, t, req).await?,
        None => s.ops.reserve(req).await?,
    };
    let status = if r.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(r)).into_response())
}

async fn hold(
    State(s): State<AppState>,
    buyer: Shopper,
    Path(hold): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    buyer.may_touch(&s, &hold)?;
    Ok(Json(s.ops.hold(&hold).await?))
}

/// A hold operation's body may be empty (`{}` implied).
fn body_or_default<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("bad json: {e}")))
}

#[derive(Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CommitBody {
    #[serde(default)]
    qty: Option<u32>,
    #[serde(default)]
    lines: Option<Vec<u32>>,
    #[serde(default)]
    request_id: Option<String>,
}

#[derive(Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleaseBody {
    #[serde(default)]
    request_id: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ExtendBody {
    by_ms: u64,
    #[serde(default)]
    request_id: Option<String>,
}

async fn commit(
    State(s): State<AppState>,
    _: Checkout,
    Path(hold): Path<String>,
    body: bytes::Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let b: CommitBody = body_or_default(&body)?;
    let req = Commit {
        id: 0,
        hold,
        qty: b.qty,
        lines: b.lines,
        request_id: b.request_id,
    };
    Ok(Json(s.ops.commit(&req).await?))
}

async fn release(
    State(s): State<AppState>,
    Shopper(buyer): Shopper,
    Path(hold): Path<String>,
    body: bytes::Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let b: ReleaseBody = body_or_default(&body)?;
    let mut req = Release {
        id: 0,
        hold,
        request_id: b.request_id,
    };
    if let Some(t) = &buyer {
        buyers(&s)?.prepare_release(&s.ops, t, &mut req)?;
    }
    Ok(Json(s.ops.release(&req).await?))
}

async fn extend(
    State(s): State<AppState>,
    Shopper(buyer): Shopper,
    Path(hold): Path<String>,
    ApiJson(b): ApiJson<ExtendBody>,
) -> Result<impl IntoResponse, ApiError> {
    let mut req = Extend {
        id: 0,
        hold,
        by_ms: b.by_ms,
        request_id: b.request_id,
    };
    if let Some(t) = &buyer {
        buyers(&s)?.prepare_extend(&s.ops, t, &mut req)?;
    }
    Ok(Json(s.ops.extend(&req).await?))
}

/// `GET /api/admin/cluster`: the nodes and each SKU's pool and leases in
/// multi-node mode; on a single node `{"node": null, "nodes": [], "skus": []}`
/// (the dashboard then shows no nodes panel).
async fn cluster_overview(
    State(s): State<AppState>,
    _: Admin,
) -> Result<impl IntoResponse, ApiError> {
    match s.ops.cluster.as_ref() {
        Some(cluster) => Ok(Json(cluster.overview().await?)),
        None => Ok(Json(
            serde_json::json!({"node": null, "nodes": [], "skus": []}),
        )),
    }
}

/// `POST /api/admin/skus/{id}/rebuild`: multi-node only. Rebuilds a SKU's
/// pool and lease ledger from what every live node holds (after a failover
/// lost writes froze it); answers what it found.
async fn rebuild(
    State(s): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let Some(cluster) = s.ops.cluster.as_ref() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            Code::Invalid,
            "rebuild is for multi-node mode (--redis-cluster); a single node rebuilds its stock from its journal at start",
        ));
    };
    Ok(Json(cluster.rebuild(&id).await?))
}

async fn create_sku(
    State(s): State<AppState>,
    _: Admin,
    ApiJson(def): ApiJson<SkuDef>,
) -> Result<impl IntoResponse, ApiError> {
    Ok((StatusCode::CREATED, Json(s.ops.create_sku(&def).await?)))
}

async fn patch_sku(
    State(s): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    ApiJson(patch): ApiJson<SkuPatch>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(s.ops.patch_sku(&id, &patch).await?))
}

async fn restock(
    State(s): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    ApiJson(q): ApiJson<QtyReq>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(s.ops.restock(&id, &q).await?))
}

async fn adjust(
    State(s): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    ApiJson(q): ApiJson<QtyReq>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(s.ops.adjust(&id, &q).await?))
}

async fn window(
    State(s): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    ApiJson(w): ApiJson<WindowReq>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(s.ops.set_window(&id, &w).await?))
}

/// `GET /api/admin/stats`: the statistics of every SKU.
async fn stats_all(State(s): State<AppState>, _: Admin) -> impl IntoResponse {
    let skus: Vec<_> = s.ops.engine.snapshots().iter().map(|x| x.sku).collect();
    Json(topic_stats(&s, "all", &skus))
}

/// `GET /api/admin/shows/{id}/stats`: the statistics of one show.
async fn stats_show(
    State(s): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let skus = s
        .ops
        .meta
        .show(&id)
        .ok_or_else(|| ApiError::not_found("unknown show"))?;
    Ok(Json(topic_stats(&s, &format!("show:{id}"), &skus)))
}

/// A topic's statistics as the hub would push them (`seq` 0: an answer,
/// not a frame of the topic).
fn topic_stats(
    s: &AppState,
    topic: &str,
    skus: &[holdfast_engine::SkuIdx],
) -> crate::protocol::Stats {
    s.ops.stats.of_skus(&s.ops.engine, topic, 0, skus)
}
