//! The privacy route: `POST /api/admin/buyers/{id}/erase` removes or
//! blanks a buyer everywhere holdfast keeps it (docs/PRIVACY.md) and says
//! what it touched.

use super::{Admin, AppState};
use crate::error::ApiError;
use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};

/// The privacy routes, merged into the API router.
pub fn routes() -> Router<AppState> {
    Router::new().route("/api/admin/buyers/{id}/erase", post(erase))
}

/// `{id}` is the buyer id as the shop gave it (URL-encoded).
async fn erase(
    State(s): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(s.ops.erase_buyer(&id).await?))
}
