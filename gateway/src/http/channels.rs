//! The admin route of sales channels: `POST /api/admin/skus/{id}/channels/
//! {channel}/move` moves unsold units between the SKU's common pool and
//! the channel's quota, live. Channels themselves are set with the SKU
//! (`channels` in `POST /api/admin/skus` and `PATCH`).

use super::{Admin, ApiJson, AppState};
use crate::error::ApiError;
use crate::protocol::MoveReq;
use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};

/// The channel routes, merged into the API router.
pub fn routes() -> Router<AppState> {
    Router::new().route(
        "/api/admin/skus/{id}/channels/{channel}/move",
        post(move_quota),
    )
}

/// Answers the SKU's state after the move (its `channels` included).
async fn move_quota(
    State(s): State<AppState>,
    _: Admin,
    Path((id, channel)): Path<(String, String)>,
    ApiJson(req): ApiJson<MoveReq>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(s.ops.move_quota(&id, &channel, &req).await?))
}
