//! Refusals, one small `Copy` enum per kind of operation. No allocation on the
//! refusal path. Each variant has a stable snake_case [`code`](ReserveError::code)
//! that the gateway, the websocket protocol and the docs use verbatim, so the
//! same refusal has the same name everywhere; its message is lowercase, has
//! no trailing period, and names the field and the limit where there is one.
//!
//! Every enum is `#[repr(u8)]` with explicit discriminants. For
//! [`ReserveError`] and [`HoldError`] the discriminant is the raw code of a
//! refusal remembered under a request id, which the journal persists: a
//! variant keeps its number whatever the order of the list, a new variant
//! takes a new number, and a number once used is never given to another
//! refusal. A variant's payload (a limit, a count) is remembered beside its
//! number, so a replay returns the same refusal with the same payload.

use crate::limits::{
    CART_LINES_MAX, CHANNEL_ID_BYTES_MAX, CHANNELS_MAX, SKU_ID_BYTES_MAX, SKU_UNITS_MAX,
};

/// Bits of a raw refusal holding its discriminant; the payload sits above.
const RAW_CODE_BITS: u32 = 8;

/// The discriminant of a `#[repr(u8)]` enum value.
macro_rules! discriminant {
    ($value:expr) => {{
        let value = &$value;
        // SAFETY: the enum is `#[repr(u8)]`, so (Rust Reference, "Primitive
        // representation of enums with fields") every variant is laid out
        // as a `#[repr(C)]` struct whose first field is the `u8`
        // discriminant; `value` is a valid, aligned reference to it.
        unsafe { *(value as *const Self).cast::<u8>() }
    }};
}

/// Why a reservation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[repr(u8)]
pub enum ReserveError {
    /// No SKU with that id.
    #[error("unknown sku")]
    UnknownSku = 0,
    /// The sale window is scheduled for later, paused or closed.
    #[error("sale is not open")]
    NotOpen = 1,
    /// No unit is available at all (some may sit in carts and come back).
    #[error("sold out")]
    SoldOut = 2,
    /// The buyer's live holds plus purchases would exceed the per-buyer limit.
    #[error("per-buyer limit exceeded")]
    LimitExceeded = 3,
    /// A refusal remembered by an earlier version, before this was split
    /// into the precise variants below; also what a raw code this version
    /// does not know decodes to. Never the answer to a new request.
    #[error("invalid request")]
    Invalid = 4,
    /// The hold table, buyer table or request table is full.
    #[error("capacity exhausted")]
    Capacity = 5,
    /// The event queue is backed up (the journal is behind): retry later.
    #[error("overloaded, retry later")]
    Overloaded = 6,
    /// The same request id is being processed (or undone) right now.
    #[error("request in progress")]
    InProgress = 7,
    /// The request id was first used for a different request.
    #[error("request id reused for a different request")]
    RequestMismatch = 8,
    /// A line asks for zero units.
    #[error("qty must be at least 1")]
    InvalidQty = 9,
    /// A line asks for more units than one order may (the SKU's
    /// `order_units_max`, capped by the engine's).
    #[error("qty above the per-order maximum of {max}")]
    QtyAboveMax { max: u32 } = 10,
    /// A SKU appears on two lines of one cart.
    #[error("a sku appears twice in the cart's lines")]
    DuplicateSku = 11,
    /// Some units are available, fewer than asked, and no partial fill was
    /// allowed.
    #[error("only {available} available")]
    NotEnoughAvailable { available: u32 } = 12,
    /// A cart with no line, or more than [`CART_LINES_MAX`].
    #[error("lines must have 1 to {CART_LINES_MAX} entries")]
    CartSize = 13,
    /// The reservation names a sales channel the SKU does not have.
    #[error("unknown channel for this sku")]
    UnknownChannel = 14,
    /// The channel's cap (the most it may sell) leaves fewer units than
    /// asked; `remaining` is what it may still take.
    #[error("channel cap reached, {remaining} remaining")]
    ChannelCapReached { remaining: u32 } = 15,
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
            Self::InvalidQty => "invalid_qty",
            Self::QtyAboveMax { .. } => "qty_above_max",
            Self::DuplicateSku => "duplicate_sku",
            Self::NotEnoughAvailable { .. } => "not_enough_available",
            Self::CartSize => "cart_size",
            Self::UnknownChannel => "unknown_channel",
            Self::ChannelCapReached { .. } => "channel_cap_reached",
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

    /// `payload << 8 | discriminant`, as remembered under a request id.
    pub(crate) fn to_raw(self) -> u64 {
        let payload = match self {
            Self::QtyAboveMax { max } => max,
            Self::NotEnoughAvailable { available } => available,
            Self::ChannelCapReached { remaining } => remaining,
            _ => 0,
        };
        u64::from(payload) << RAW_CODE_BITS | u64::from(discriminant!(self))
    }

    /// The refusal [`ReserveError::to_raw`] encoded.
    pub(crate) fn from_raw(raw: u64) -> Self {
        let payload = (raw >> RAW_CODE_BITS) as u32;
        match raw as u8 {
            0 => Self::UnknownSku,
            1 => Self::NotOpen,
            2 => Self::SoldOut,
            3 => Self::LimitExceeded,
            5 => Self::Capacity,
            6 => Self::Overloaded,
            7 => Self::InProgress,
            8 => Self::RequestMismatch,
            9 => Self::InvalidQty,
            10 => Self::QtyAboveMax { max: payload },
            11 => Self::DuplicateSku,
            12 => Self::NotEnoughAvailable { available: payload },
            13 => Self::CartSize,
            14 => Self::UnknownChannel,
            15 => Self::ChannelCapReached { remaining: payload },
            _ => Self::Invalid,
        }
    }
}

/// Why a commit, release, extend or lookup of a hold was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[repr(u8)]
pub enum HoldError {
    /// No such hold (never issued, issued by another node, or long gone).
    #[error("hold not found")]
    HoldNotFound = 0,
    /// The hold was already committed.
    #[error("hold already committed")]
    AlreadyCommitted = 1,
    /// The hold was already released.
    #[error("hold already released")]
    AlreadyReleased = 2,
    /// The hold's deadline passed; its units went back on sale. When a commit
    /// races the expiry, exactly one of them wins and this tells the caller
    /// that expiry did.
    #[error("hold expired")]
    HoldExpired = 3,
    /// A refusal remembered by an earlier version, before this was split
    /// into the precise variants below; also what a raw code this version
    /// does not know decodes to. Never the answer to a new request.
    #[error("invalid request")]
    Invalid = 4,
    /// Extending past the hold's maximum lifetime.
    #[error("hold cannot be extended further")]
    ExtendLimit = 5,
    /// The request table is full.
    #[error("capacity exhausted")]
    Capacity = 6,
    /// The event queue is backed up: retry later.
    #[error("overloaded, retry later")]
    Overloaded = 7,
    /// The same request id is being processed right now.
    #[error("request in progress")]
    InProgress = 8,
    /// The request id was first used for a different request.
    #[error("request id reused for a different request")]
    RequestMismatch = 9,
    /// Committing more units of a line than it holds.
    #[error("qty above the {held} units held")]
    QtyAboveHeld { held: u32 } = 10,
    /// A partial commit whose list of units does not have one entry per
    /// line of the hold.
    #[error("lines must have one qty per line of the hold")]
    LinesMismatch = 11,
    /// A partial commit of zero units in all.
    #[error("qty must be at least 1")]
    InvalidQty = 12,
    /// An extension by zero milliseconds.
    #[error("by_ms must be at least 1")]
    InvalidExtend = 13,
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
            Self::QtyAboveHeld { .. } => "qty_above_held",
            Self::LinesMismatch => "lines_mismatch",
            Self::InvalidQty => "invalid_qty",
            Self::InvalidExtend => "invalid_extend",
        }
    }

    /// Refusals that may go away on retry and so are never remembered.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            Self::Capacity | Self::Overloaded | Self::InProgress | Self::RequestMismatch
        )
    }

    /// `payload << 8 | discriminant`, as remembered under a request id.
    pub(crate) fn to_raw(self) -> u64 {
        let payload = match self {
            Self::QtyAboveHeld { held } => held,
            _ => 0,
        };
        u64::from(payload) << RAW_CODE_BITS | u64::from(discriminant!(self))
    }

    /// The refusal [`HoldError::to_raw`] encoded.
    pub(crate) fn from_raw(raw: u64) -> Self {
        let payload = (raw >> RAW_CODE_BITS) as u32;
        match raw as u8 {
            0 => Self::HoldNotFound,
            1 => Self::AlreadyCommitted,
            2 => Self::AlreadyReleased,
            3 => Self::HoldExpired,
            5 => Self::ExtendLimit,
            6 => Self::Capacity,
            7 => Self::Overloaded,
            8 => Self::InProgress,
            9 => Self::RequestMismatch,
            10 => Self::QtyAboveHeld { held: payload },
            11 => Self::LinesMismatch,
            12 => Self::InvalidQty,
            13 => Self::InvalidExtend,
            _ => Self::Invalid,
        }
    }
}

/// Why a catalog change was refused. Never remembered or persisted; the
/// discriminants are pinned all the same, like the other refusals'.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[repr(u8)]
pub enum CatalogError {
    /// No SKU with that id.
    #[error("unknown sku")]
    UnknownSku = 0,
    /// A SKU with that id already exists.
    #[error("sku already exists")]
    AlreadyExists = 1,
    // 2 was `Invalid`, split into `InvalidSkuId`, `InvalidSettings` and
    // `InvalidQty`.
    /// Removing more units than are available (held and sold units can
    /// never be removed).
    #[error("only {available} available")]
    NotEnoughAvailable { available: u32 } = 3,
    /// The catalog already has `skus_max` SKUs.
    #[error("catalog is full")]
    Capacity = 4,
    /// The event queue is backed up: retry later.
    #[error("overloaded, retry later")]
    Overloaded = 5,
    /// The SKU's total would exceed [`SKU_UNITS_MAX`] (the width of its
    /// count fields): a request that can never succeed, not a capacity
    /// problem to retry.
    #[error("a sku holds at most {SKU_UNITS_MAX} units")]
    TotalAboveMax = 6,
    /// A SKU id that is not 1 to [`SKU_ID_BYTES_MAX`] of `A-Z a-z 0-9 . _ -`.
    #[error("sku id must be 1 to {SKU_ID_BYTES_MAX} ascii letters, digits, '.', '_' or '-'")]
    InvalidSkuId = 7,
    /// A setting out of range; the message names it and its range.
    #[error("{reason}")]
    InvalidSettings { reason: &'static str } = 8,
    /// A restock or adjustment of zero units.
    #[error("qty must be at least 1")]
    InvalidQty = 9,
    /// A total below the units held and sold (which can never be removed).
    #[error("total below the {committed} units held or sold")]
    TotalBelowCommitted { committed: u32 } = 10,
    /// The SKU has no sales channel with that id.
    #[error("unknown channel for this sku")]
    UnknownChannel = 11,
    /// A channel id that is not 1 to [`CHANNEL_ID_BYTES_MAX`] of
    /// `A-Z a-z 0-9 . _ -`.
    #[error(
        "channel id must be 1 to {CHANNEL_ID_BYTES_MAX} ascii letters, digits, '.', '_' or '-'"
    )]
    InvalidChannelId = 12,
    /// The SKU already has [`CHANNELS_MAX`] channels.
    #[error("a sku has at most {CHANNELS_MAX} channels")]
    ChannelsFull = 13,
    /// A channel cap below the units the channel already holds or sold.
    #[error("cap below the {used} units the channel holds or sold")]
    CapBelowUsed { used: u32 } = 14,
    /// Moving more units out of a channel's quota than it has unsold.
    #[error("only {available} units of the channel's quota available")]
    NotEnoughQuota { available: u32 } = 15,
}

impl CatalogError {
    /// Stable machine-readable name.
    pub fn code(self) -> &'static str {
        match self {
            Self::UnknownSku => "unknown_sku",
            Self::AlreadyExists => "already_exists",
            Self::NotEnoughAvailable { .. } => "not_enough_available",
            Self::Capacity => "capacity",
            Self::Overloaded => "overloaded",
            Self::TotalAboveMax => "total_above_max",
            Self::InvalidSkuId => "invalid_sku_id",
            Self::InvalidSettings { .. } => "invalid_settings",
            Self::InvalidQty => "invalid_qty",
            Self::TotalBelowCommitted { .. } => "total_below_committed",
            Self::UnknownChannel => "unknown_channel",
            Self::InvalidChannelId => "invalid_channel_id",
            Self::ChannelsFull => "channels_full",
            Self::CapBelowUsed { .. } => "cap_below_used",
            Self::NotEnoughQuota { .. } => "not_enough_quota",
        }
    }

    /// The pinned discriminant.
    #[cfg(test)]
    fn discriminant(self) -> u8 {
        discriminant!(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every refusal's raw value and code, pinned. The match is exhaustive:
    /// a new variant does not compile until it is listed here, with a new
    /// number.
    fn reserve_pinned(e: ReserveError) -> (u64, &'static str) {
        use ReserveError::*;
        match e {
            UnknownSku => (0, "unknown_sku"),
            NotOpen => (1, "not_open"),
            SoldOut => (2, "sold_out"),
            LimitExceeded => (3, "limit_exceeded"),
            Invalid => (4, "invalid"),
            Capacity => (5, "capacity"),
            Overloaded => (6, "overloaded"),
            InProgress => (7, "in_progress"),
            RequestMismatch => (8, "request_mismatch"),
            InvalidQty => (9, "invalid_qty"),
            QtyAboveMax { max } => (u64::from(max) << 8 | 10, "qty_above_max"),
            DuplicateSku => (11, "duplicate_sku"),
            NotEnoughAvailable { available } => {
                (u64::from(available) << 8 | 12, "not_enough_available")
            }
            CartSize => (13, "cart_size"),
            UnknownChannel => (14, "unknown_channel"),
            ChannelCapReached { remaining } => {
                (u64::from(remaining) << 8 | 15, "channel_cap_reached")
            }
        }
    }

    fn hold_pinned(e: HoldError) -> (u64, &'static str) {
        use HoldError::*;
        match e {
            HoldNotFound => (0, "hold_not_found"),
            AlreadyCommitted => (1, "already_committed"),
            AlreadyReleased => (2, "already_released"),
            HoldExpired => (3, "hold_expired"),
            Invalid => (4, "invalid"),
            ExtendLimit => (5, "extend_limit"),
            Capacity => (6, "capacity"),
            Overloaded => (7, "overloaded"),
            InProgress => (8, "in_progress"),
            RequestMismatch => (9, "request_mismatch"),
            QtyAboveHeld { held } => (u64::from(held) << 8 | 10, "qty_above_held"),
            LinesMismatch => (11, "lines_mismatch"),
            InvalidQty => (12, "invalid_qty"),
            InvalidExtend => (13, "invalid_extend"),
        }
    }

    fn catalog_pinned(e: CatalogError) -> (u8, &'static str) {
        use CatalogError::*;
        match e {
            UnknownSku => (0, "unknown_sku"),
            AlreadyExists => (1, "already_exists"),
            NotEnoughAvailable { .. } => (3, "not_enough_available"),
            Capacity => (4, "capacity"),
            Overloaded => (5, "overloaded"),
            TotalAboveMax => (6, "total_above_max"),
            InvalidSkuId => (7, "invalid_sku_id"),
            InvalidSettings { .. } => (8, "invalid_settings"),
            InvalidQty => (9, "invalid_qty"),
            TotalBelowCommitted { .. } => (10, "total_below_committed"),
            UnknownChannel => (11, "unknown_channel"),
            InvalidChannelId => (12, "invalid_channel_id"),
            ChannelsFull => (13, "channels_full"),
            CapBelowUsed { .. } => (14, "cap_below_used"),
            NotEnoughQuota { .. } => (15, "not_enough_quota"),
        }
    }

    /// Payloads that exercise every bit of the 32 a payload may use.
    const PAYLOADS: [u64; 3] = [0, 3, u32::MAX as u64];

    #[test]
    fn every_reserve_refusal_keeps_its_raw_value_and_code() {
        let mut seen = std::collections::HashSet::new();
        for code in 0..=u8::MAX as u64 {
            for payload in PAYLOADS {
                let e = ReserveError::from_raw(payload << 8 | code);
                let (raw, name) = reserve_pinned(e);
                assert_eq!(e.to_raw(), raw, "{e:?}");
                assert_eq!(e.code(), name, "{e:?}");
                assert_eq!(ReserveError::from_raw(raw), e, "{e:?} round-trips");
                if raw & 0xff == code {
                    seen.insert(std::mem::discriminant(&e));
                } else {
                    assert_eq!(e, ReserveError::Invalid, "unknown code {code}");
                }
            }
        }
        assert_eq!(seen.len(), 16, "every variant decodes from its number");
    }

    #[test]
    fn every_hold_refusal_keeps_its_raw_value_and_code() {
        let mut seen = std::collections::HashSet::new();
        for code in 0..=u8::MAX as u64 {
            for payload in PAYLOADS {
                let e = HoldError::from_raw(payload << 8 | code);
                let (raw, name) = hold_pinned(e);
                assert_eq!(e.to_raw(), raw, "{e:?}");
                assert_eq!(e.code(), name, "{e:?}");
                assert_eq!(HoldError::from_raw(raw), e, "{e:?} round-trips");
                if raw & 0xff == code {
                    seen.insert(std::mem::discriminant(&e));
                } else {
                    assert_eq!(e, HoldError::Invalid, "unknown code {code}");
                }
            }
        }
        assert_eq!(seen.len(), 14, "every variant decodes from its number");
    }

    #[test]
    fn every_catalog_refusal_keeps_its_discriminant_and_code() {
        use CatalogError::*;
        let all = [
            UnknownSku,
            AlreadyExists,
            NotEnoughAvailable { available: 3 },
            Capacity,
            Overloaded,
            TotalAboveMax,
            InvalidSkuId,
            InvalidSettings { reason: "x" },
            InvalidQty,
            TotalBelowCommitted { committed: 2 },
            UnknownChannel,
            InvalidChannelId,
            ChannelsFull,
            CapBelowUsed { used: 2 },
            NotEnoughQuota { available: 1 },
        ];
        for e in all {
            let (discriminant, name) = catalog_pinned(e);
            assert_eq!(e.discriminant(), discriminant, "{e:?}");
            assert_eq!(e.code(), name, "{e:?}");
        }
    }

    #[test]
    fn messages_are_lowercase_without_period_and_name_their_limits() {
        let reserve = (0..=15).map(|c| ReserveError::from_raw(7 << 8 | c).to_string());
        let hold = (0..=13).map(|c| HoldError::from_raw(7 << 8 | c).to_string());
        let catalog = [
            CatalogError::NotEnoughAvailable { available: 7 },
            CatalogError::TotalAboveMax,
            CatalogError::InvalidSkuId,
            CatalogError::TotalBelowCommitted { committed: 7 },
            CatalogError::InvalidChannelId,
            CatalogError::ChannelsFull,
            CatalogError::CapBelowUsed { used: 7 },
            CatalogError::NotEnoughQuota { available: 7 },
        ]
        .map(|e| e.to_string());
        for m in reserve.chain(hold).chain(catalog) {
            assert_eq!(m, m.to_lowercase());
            assert!(!m.ends_with('.'), "{m}");
        }
        assert_eq!(
            ReserveError::QtyAboveMax { max: 10 }.to_string(),
            "qty above the per-order maximum of 10"
        );
        assert_eq!(
            ReserveError::NotEnoughAvailable { available: 3 }.to_string(),
            "only 3 available"
        );
        assert_eq!(
            ReserveError::CartSize.to_string(),
            format!("lines must have 1 to {CART_LINES_MAX} entries")
        );
        assert_eq!(
            CatalogError::TotalAboveMax.to_string(),
            "a sku holds at most 2097151 units"
        );
        assert_eq!(
            HoldError::QtyAboveHeld { held: 2 }.to_string(),
            "qty above the 2 units held"
        );
        assert_eq!(
            CatalogError::InvalidSkuId.to_string(),
            "sku id must be 1 to 64 ascii letters, digits, '.', '_' or '-'"
        );
    }
}
