//! The one error type of the request path: a stable [`Code`] (the engine's
//! refusal names, verbatim), an HTTP status, and a message safe to show.
//! Details that could leak internals are logged, not returned.

use crate::protocol::{Code, ErrorMsg};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use holdfast_engine::{CatalogError, HoldError, ReserveError};
use std::borrow::Cow;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: Code,
    pub message: Cow<'static, str>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: Code, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Code::Invalid, message)
    }

    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Code::BadRequest, message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            Code::Unauthorized,
            "missing or wrong token",
        )
    }

    pub fn forbidden(what: &'static str) -> Self {
        Self::new(StatusCode::FORBIDDEN, Code::Forbidden, what)
    }

    pub fn not_found(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::NOT_FOUND, Code::NotFound, message)
    }

    pub fn unknown_sku() -> Self {
        Self::new(StatusCode::NOT_FOUND, Code::UnknownSku, "unknown sku")
    }

    pub fn unavailable(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, Code::Unavailable, message)
    }

    pub fn capacity(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, Code::Capacity, message)
    }

    pub fn rate_limited() -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            Code::RateLimited,
            "too many messages, slow down",
        )
    }

    /// The body sent over HTTP and (with an `id`) as a websocket error frame.
    pub fn to_msg(&self, id: Option<u64>) -> ErrorMsg {
        ErrorMsg {
            id,
            error: self.code,
            message: self.message.to_string(),
        }
    }

    /// Whether a client should retry later (sent with `Retry-After`).
    pub fn is_retryable(&self) -> bool {
        self.status == StatusCode::SERVICE_UNAVAILABLE
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.code,
            self.status.as_u16(),
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry = self.is_retryable();
        let body = serde_json::json!({ "error": self.code.as_str(), "message": self.message });
        let mut response = (self.status, axum::Json(body)).into_response();
        if retry {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// The wire code of an engine refusal: the same name (the engine's codes
/// are a subset of [`Code`]; a test checks every one).
fn engine_code(name: &'static str) -> Code {
    let code = Code::parse(name);
    debug_assert!(code.is_some(), "engine code {name} missing from Code");
    code.unwrap_or(Code::Invalid)
}

impl From<ReserveError> for ApiError {
    fn from(e: ReserveError) -> Self {
        let status = match e {
            ReserveError::UnknownSku => StatusCode::NOT_FOUND,
            ReserveError::NotOpen
            | ReserveError::SoldOut
            | ReserveError::NotEnoughAvailable { .. }
            | ReserveError::InProgress => StatusCode::CONFLICT,
            ReserveError::LimitExceeded => StatusCode::TOO_MANY_REQUESTS,
            ReserveError::Invalid
            | ReserveError::InvalidQty
            | ReserveError::QtyAboveMax { .. }
            | ReserveError::DuplicateSku
            | ReserveError::CartSize
            | ReserveError::RequestMismatch => StatusCode::BAD_REQUEST,
            // A field of the request names what the SKU does not have
            // (docs/API.md: unknown_channel is 400 wherever it is named).
            ReserveError::UnknownChannel => StatusCode::BAD_REQUEST,
            ReserveError::ChannelCapReached { .. } => StatusCode::CONFLICT,
            ReserveError::Capacity | ReserveError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
        };
        Self::new(status, engine_code(e.code()), e.to_string())
    }
}

impl From<HoldError> for ApiError {
    fn from(e: HoldError) -> Self {
        let status = match e {
            HoldError::HoldNotFound => StatusCode::NOT_FOUND,
            HoldError::AlreadyCommitted
            | HoldError::AlreadyReleased
            | HoldError::HoldExpired
            | HoldError::ExtendLimit
            | HoldError::InProgress => StatusCode::CONFLICT,
            HoldError::Invalid
            | HoldError::QtyAboveHeld { .. }
            | HoldError::LinesMismatch
            | HoldError::InvalidQty
            | HoldError::InvalidExtend
            | HoldError::RequestMismatch => StatusCode::BAD_REQUEST,
            HoldError::Capacity | HoldError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
        };
        Self::new(status, engine_code(e.code()), e.to_string())
    }
}

impl From<CatalogError> for ApiError {
    fn from(e: CatalogError) -> Self {
        let status = match e {
            CatalogError::UnknownSku => StatusCode::NOT_FOUND,
            CatalogError::AlreadyExists
            | CatalogError::NotEnoughAvailable { .. }
            | CatalogError::TotalBelowCommitted { .. }
            | CatalogError::CapBelowUsed { .. }
            | CatalogError::NotEnoughQuota { .. } => StatusCode::CONFLICT,
            CatalogError::InvalidSkuId
            | CatalogError::InvalidSettings { .. }
            | CatalogError::InvalidQty
            | CatalogError::InvalidChannelId
            | CatalogError::ChannelsFull => StatusCode::BAD_REQUEST,
            CatalogError::UnknownChannel => StatusCode::BAD_REQUEST,
            // Well-formed, but never possible: not a retryable 503.
            CatalogError::TotalAboveMax => StatusCode::UNPROCESSABLE_ENTITY,
            CatalogError::Capacity | CatalogError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
        };
        Self::new(status, engine_code(e.code()), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every engine refusal has a wire [`Code`] of the same name.
    #[test]
    fn every_engine_refusal_is_a_wire_code() {
        use ReserveError as R;
        let reserve = [
            R::UnknownSku,
            R::NotOpen,
            R::SoldOut,
            R::LimitExceeded,
            R::Invalid,
            R::Capacity,
            R::Overloaded,
            R::InProgress,
            R::RequestMismatch,
            R::InvalidQty,
            R::QtyAboveMax { max: 1 },
            R::DuplicateSku,
            R::NotEnoughAvailable { available: 1 },
            R::CartSize,
            R::UnknownChannel,
            R::ChannelCapReached { remaining: 1 },
        ];
        use HoldError as H;
        let hold = [
            H::HoldNotFound,
            H::AlreadyCommitted,
            H::AlreadyReleased,
            H::HoldExpired,
            H::Invalid,
            H::ExtendLimit,
            H::Capacity,
            H::Overloaded,
            H::InProgress,
            H::RequestMismatch,
            H::QtyAboveHeld { held: 1 },
            H::LinesMismatch,
            H::InvalidQty,
            H::InvalidExtend,
        ];
        use CatalogError as C;
        let catalog = [
            C::UnknownSku,
            C::AlreadyExists,
            C::NotEnoughAvailable { available: 1 },
            C::Capacity,
            C::Overloaded,
            C::TotalAboveMax,
            C::InvalidSkuId,
            C::InvalidSettings { reason: "x" },
            C::InvalidQty,
            C::TotalBelowCommitted { committed: 1 },
            C::UnknownChannel,
            C::InvalidChannelId,
            C::ChannelsFull,
            C::CapBelowUsed { used: 1 },
            C::NotEnoughQuota { available: 1 },
        ];
        let names = reserve
            .iter()
            .map(|e| e.code())
            .chain(hold.iter().map(|e| e.code()))
            .chain(catalog.iter().map(|e| e.code()));
        for name in names {
            assert!(Code::parse(name).is_some(), "{name} is not a wire code");
        }
    }

    #[test]
    fn engine_refusals_keep_their_names() {
        assert_eq!(ApiError::from(ReserveError::SoldOut).code, Code::SoldOut);
        assert_eq!(
            ApiError::from(ReserveError::SoldOut).status,
            StatusCode::CONFLICT
        );
        assert_eq!(
            ApiError::from(ReserveError::LimitExceeded).status,
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            ApiError::from(HoldError::HoldExpired).code,
            Code::HoldExpired
        );
        assert_eq!(
            ApiError::from(CatalogError::NotEnoughAvailable { available: 1 }).status,
            StatusCode::CONFLICT
        );
    }
}
