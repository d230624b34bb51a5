//! Refusals, one small `Copy` enum per kind of operation. No allocation on the
//! refusal path. Each variant has a stable snake_case [`code`](ReserveError::code)
//! that the gateway, the websocket protocol and the docs use verbatim, so the
//! same refusal has the same name everywhere.

/// Why a reservation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum ReserveError {
    /// No SKU with that id.
    #[error("unknown sku")]
    UnknownSku,
    /// The sale window is scheduled for later, paused or closed.
    #[error("sale is not open")]
    NotOpen,
    /// Not enough units available (and no partial fill was allowed, or none
    /// was left at all).
    #[error("sold out")]
    SoldOut,
    /// The buyer's live holds plus purchases would exceed the per-buyer limit.
    #[error("per-buyer limit exceeded")]
    LimitExceeded,
    /// Zero quantity, quantity above the per-order maximum, an empty or
    /// oversized cart, a SKU twice in one cart, or partial fill on a cart.
    #[error("invalid request")]
    Invalid,
    /// The hold table, buyer table or request table is full.
    #[error("capacity exhausted")]
    Capacity,
    /// The event queue is backed up (the journal is behind): retry later.
    #[error("overloaded, retry later")]
    Overloaded,
    /// The same request id is being processed right now.
    #[error("request in progress")]
    InProgress,
    /// The request id was first used for a different request.
    #[error("request id reused for a different request")]
    RequestMismatch,
}

impl ReserveError {
    /// Stable machine-readable name.
    pub fn code(self) -> &'static str {
        match self {
            Self::UnknownSku => "unknown_sku",
            Self::NotOpen => "not_open",
            Self::SoldOut => "sold_out",
            Self::LimitExceeded => "limit_exceeded",
            Self::Invalid => "invalid",
            Self::Capacity => "capacity",
            Self::Overloaded => "overloaded",
            Self::InProgress => "in_progress",
            Self::RequestMismatch => "request_mismatch",
        }
    }

    /// Refusals that may go away on retry and so are never remembered under a
    /// request id.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            Self::Capacity | Self::Overloaded | Self::InProgress | Self::RequestMismatch
        )
    }

    pub(crate) fn to_raw(self) -> u8 {
        self as u8
    }

    pub(crate) fn from_raw(raw: u8) -> Self {
        const ALL: [ReserveError; 9] = [
            ReserveError::UnknownSku,
            ReserveError::NotOpen,
            ReserveError::SoldOut,
            ReserveError::LimitExceeded,
            ReserveError::Invalid,
            ReserveError::Capacity,
            ReserveError::Overloaded,
            ReserveError::InProgress,
            ReserveError::RequestMismatch,
        ];
        ALL.get(raw as usize)
            .copied()
            .unwrap_or(ReserveError::Invalid)
    }
}

/// Why a commit, release, extend or lookup of a hold was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum HoldError {
    /// No such hold (never issued, issued by another node, or long gone).
    #[error("hold not found")]
    HoldNotFound,
    /// The hold was already committed.
    #[error("hold already committed")]
    AlreadyCommitted,
    /// The hold was already released.
    #[error("hold already released")]
    AlreadyReleased,
    /// The hold's deadline passed; its units went back on sale. When a commit
    /// races the expiry, exactly one of them wins and this tells the caller
    /// that expiry did.
    #[error("hold expired")]
    HoldExpired,
    /// Committing more units than held, or a wrong number of cart lines.
    #[error("invalid request")]
    Invalid,
    /// Extending past the hold's maximum lifetime.
    #[error("hold cannot be extended further")]
    ExtendLimit,
    /// The request table is full.
    #[error("capacity exhausted")]
    Capacity,
    /// The event queue is backed up: retry later.
    #[error("overloaded, retry later")]
    Overloaded,
    /// The same request id is being processed right now.
    #[error("request in progress")]
    InProgress,
    /// The request id was first used for a different request.
    #[error("request id reused for a different request")]
    RequestMismatch,
}

impl HoldError {
    /// Stable machine-readable name.
    pub fn code(self) -> &'static str {
        match self {
            Self::HoldNotFound => "hold_not_found",
            Self::AlreadyCommitted => "already_committed",
            Self::AlreadyReleased => "already_released",
            Self::HoldExpired => "hold_expired",
            Self::Invalid => "invalid",
            Self::ExtendLimit => "extend_limit",
            Self::Capacity => "capacity",
            Self::Overloaded => "overloaded",
            Self::InProgress => "in_progress",
            Self::RequestMismatch => "request_mismatch",
        }
    }

    /// Refusals that may go away on retry and so are never remembered.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            Self::Capacity | Self::Overloaded | Self::InProgress | Self::RequestMismatch
        )
    }

    pub(crate) fn to_raw(self) -> u8 {
        self as u8
    }

    pub(crate) fn from_raw(raw: u8) -> Self {
        const ALL: [HoldError; 10] = [
            HoldError::HoldNotFound,
            HoldError::AlreadyCommitted,
            HoldError::AlreadyReleased,
            HoldError::HoldExpired,
            HoldError::Invalid,
            HoldError::ExtendLimit,
            HoldError::Capacity,
            HoldError::Overloaded,
            HoldError::InProgress,
            HoldError::RequestMismatch,
        ];
        ALL.get(raw as usize).copied().unwrap_or(HoldError::Invalid)
    }
}

/// Why a catalog change was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum CatalogError {
    /// No SKU with that id.
    #[error("unknown sku")]
    UnknownSku,
    /// A SKU with that id already exists.
    #[error("sku already exists")]
    AlreadyExists,
    /// Bad id (1-64 of `A-Z a-z 0-9 . _ -`) or settings out of range.
    #[error("invalid request")]
    Invalid,
    /// Removing more units than are available (held and sold units can
    /// never be removed), or lowering the total below held + sold.
    #[error("not enough available units")]
    NotEnoughAvailable,
    /// The SKU would exceed its unit maximum, or the catalog is full.
    #[error("capacity exhausted")]
    Capacity,
    /// The event queue is backed up: retry later.
    #[error("overloaded, retry later")]
    Overloaded,
}

impl CatalogError {
    /// Stable machine-readable name.
    pub fn code(self) -> &'static str {
        match self {
            Self::UnknownSku => "unknown_sku",
            Self::AlreadyExists => "already_exists",
            Self::Invalid => "invalid",
            Self::NotEnoughAvailable => "not_enough_available",
            Self::Capacity => "capacity",
            Self::Overloaded => "overloaded",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_codes_roundtrip() {
        for e in [
            ReserveError::UnknownSku,
            ReserveError::RequestMismatch,
            ReserveError::SoldOut,
        ] {
            assert_eq!(ReserveError::from_raw(e.to_raw()), e);
        }
        for e in [
            HoldError::HoldNotFound,
            HoldError::RequestMismatch,
            HoldError::HoldExpired,
        ] {
            assert_eq!(HoldError::from_raw(e.to_raw()), e);
        }
    }

    #[test]
    fn messages_are_lowercase_without_period() {
        let all = [
            ReserveError::SoldOut.to_string(),
            HoldError::HoldExpired.to_string(),
            CatalogError::NotEnoughAvailable.to_string(),
        ];
        for m in all {
            assert_eq!(m, m.to_lowercase());
            assert!(!m.ends_with('.'));
        }
    }
}
