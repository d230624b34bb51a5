//! Every refusal and error code, listed once. The same name is used by the
//! engine's refusals, HTTP error bodies, websocket error frames, metrics
//! labels and the docs. Codes are stable: a new one may be added, an
//! existing one is never renamed; clients decoding JSON map a code they do
//! not know yet to [`Code::Unknown`].

use serde::{Deserialize, Serialize};

macro_rules! codes {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal ),* $(,)?) => {
        /// A stable, machine-readable error code (`snake_case` on the wire).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum Code {
            $( $(#[$doc])* #[serde(rename = $name)] $variant, )*
            /// A code this client does not know (a newer server).
            #[serde(other, rename = "unknown")]
            Unknown,
        }

        impl Code {
            /// Every code, in declaration order (without [`Code::Unknown`]).
            pub const ALL: &'static [Code] = &[$(Code::$variant),*];

            /// The wire name.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $name,)*
                    Code::Unknown => "unknown",
                }
            }

            /// The code of a wire name, if it is one.
            pub fn parse(name: &str) -> Option<Code> {
                match name {
                    $($name => Some(Code::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

codes! {
    // ----- reservations (engine) -----
    /// No SKU with that id.
    UnknownSku = "unknown_sku",
    /// The sale is scheduled for later, paused or closed.
    NotOpen = "not_open",
    /// Nothing is available (and nothing partial was asked for).
    SoldOut = "sold_out",
    /// Some units are available, fewer than asked (the message says how many).
    NotEnoughAvailable = "not_enough_available",
    /// The buyer's live holds and purchases would pass the per-buyer limit.
    LimitExceeded = "limit_exceeded",
    /// `qty` is 0.
    InvalidQty = "invalid_qty",
    /// `qty` is above the SKU's per-order maximum.
    QtyAboveMax = "qty_above_max",
    /// A cart names one SKU twice.
    DuplicateSku = "duplicate_sku",
    /// A cart with no lines or more than the most allowed.
    CartSize = "cart_size",
    /// `allow_partial` on a cart (partial fills are for one SKU).
    PartialOnCart = "partial_on_cart",
    /// A request that is malformed in a way no other code names.
    Invalid = "invalid",
    /// A fixed-size table (holds, buyers, request ids) is full.
    Capacity = "capacity",
    /// The event queue is backed up: retry shortly.
    Overloaded = "overloaded",
    /// The same request id is being processed right now.
    InProgress = "in_progress",
    /// The request id was first used for a different request.
    RequestMismatch = "request_mismatch",
    // ----- holds (engine) -----
    /// No hold with that id (never made, or forgotten after the retention window).
    HoldNotFound = "hold_not_found",
    AlreadyCommitted = "already_committed",
    AlreadyReleased = "already_released",
    HoldExpired = "hold_expired",
    /// The hold may not be extended that far.
    ExtendLimit = "extend_limit",
    /// A commit of more units than the line holds.
    QtyAboveHeld = "qty_above_held",
    /// A commit whose `lines` do not match the hold's lines.
    LinesMismatch = "lines_mismatch",
    /// An extend by 0 ms or past what the engine can represent.
    InvalidExtend = "invalid_extend",
    // ----- catalog (engine) -----
    /// A SKU with that id exists.
    AlreadyExists = "already_exists",
    /// A total or restock past the most one SKU can hold.
    TotalAboveMax = "total_above_max",
    /// A new total below the units held and sold.
    TotalBelowCommitted = "total_below_committed",
    /// A SKU's settings do not fit together (the message names the one).
    InvalidSettings = "invalid_settings",
    // ----- request shape (gateway) -----
    /// Malformed JSON or postcard, a wrong content type, an unknown field.
    BadRequest = "bad_request",
    InvalidSkuId = "invalid_sku_id",
    InvalidHoldId = "invalid_hold_id",
    InvalidBuyer = "invalid_buyer",
    InvalidRequestId = "invalid_request_id",
    InvalidTitle = "invalid_title",
    InvalidCurrency = "invalid_currency",
    InvalidImageUrl = "invalid_image_url",
    InvalidShow = "invalid_show",
    InvalidWindow = "invalid_window",
    InvalidHoldTtl = "invalid_hold_ttl_ms",
    InvalidHoldLifetime = "invalid_hold_lifetime_max_ms",
    InvalidOrderUnitsMax = "invalid_order_units_max",
    InvalidBuyerLimit = "invalid_buyer_limit",
    /// The request body is larger than the server takes.
    TooLarge = "too_large",
    /// The request line and headers are larger than the server takes.
    HeadersTooLarge = "headers_too_large",
    // ----- access -----
    Unauthorized = "unauthorized",
    Forbidden = "forbidden",
    // ----- buyer tokens (401: the token does not prove who is calling) -----
    /// The token's `exp` (plus the leeway) has passed.
    TokenExpired = "token_expired",
    /// The token's `nbf` or `iat` is still in the future (past the leeway).
    TokenNotYetValid = "token_not_yet_valid",
    /// The token lives longer than the server's maximum lifetime.
    TokenLifetimeTooLong = "token_lifetime_too_long",
    /// The signature does not verify with the key named by `kid`.
    TokenBadSignature = "token_bad_signature",
    /// No key with the token's `kid` (or no `kid` while several keys are
    /// configured).
    TokenUnknownKid = "token_unknown_kid",
    /// The token's `alg` is not the algorithm of its key (or is `none`).
    TokenBadAlgorithm = "token_bad_algorithm",
    /// Not a JWT, a JWT without a required claim, or a JWT in a URL.
    TokenMalformed = "token_malformed",
    // ----- buyer tokens (403: a valid token that may not do this) -----
    /// The token was used for more reservations than allowed.
    TokenReplayed = "token_replayed",
    /// The token's `skus` or `show` claim does not allow this SKU.
    TokenSkuNotAllowed = "token_sku_not_allowed",
    /// The token's `max_units` would be passed.
    TokenLimitExceeded = "token_limit_exceeded",
    /// A buyer token naming another buyer than its own subject.
    BuyerMismatch = "buyer_mismatch",
    // ----- routes and topics -----
    NotFound = "not_found",
    MethodNotAllowed = "method_not_allowed",
    UnknownShow = "unknown_show",
    UnknownTopic = "unknown_topic",
    // ----- limits and availability -----
    RateLimited = "rate_limited",
    TooManyConnections = "too_many_connections",
    TooManySubscriptions = "too_many_subscriptions",
    /// Persistence cannot take the change now (Redis down or slow): retry
    /// with the same request id.
    Unavailable = "unavailable",
    /// `/readyz`: not ready to take changes.
    NotReady = "not_ready",
    // ----- webhooks (admin API) -----
    /// A webhook URL that is not http(s), has no host, or is plain http to
    /// a non-loopback address without `--webhook-http-allowed`.
    InvalidUrl = "invalid_url",
    /// A webhook secret that is not `whsec_` and 24-64 bytes of base64.
    InvalidSecret = "invalid_secret",
    /// An unknown webhook event type.
    InvalidEvents = "invalid_events",
    /// No webhook endpoint with that id.
    UnknownWebhook = "unknown_webhook",
    /// Defined in a configuration file: not changed through the API.
    ReadOnly = "read_only",
    // ----- sales channels -----
    /// The reservation (its `channel` field, a buyer token's claim, or the
    /// `{channel}` of a move's path) names a channel the SKU does not have
    /// (400).
    UnknownChannel = "unknown_channel",
    /// A buyer token's `channel` claim does not allow the channel the
    /// request names (403).
    ChannelNotAllowed = "channel_not_allowed",
    /// The channel's cap (most it may hold plus sell) leaves too few units.
    ChannelCapReached = "channel_cap_reached",
    /// A channel id that is not 1 to 32 of `A-Z a-z 0-9 . _ -`.
    InvalidChannelId = "invalid_channel_id",
    /// A SKU already has the most channels it may have (8).
    ChannelsFull = "channels_full",
    /// A channel cap below the units the channel already holds or sold.
    CapBelowUsed = "cap_below_used",
    /// Moving more units out of a channel's quota than it has unsold.
    NotEnoughQuota = "not_enough_quota",
    /// A channel list that names one channel twice, or a `channels` field
    /// where channels are not supported (cluster mode).
    InvalidChannels = "invalid_channels",
    // ----- privacy -----
    /// A buyer cannot be erased while they have live holds.
    BuyerHasLiveHolds = "buyer_has_live_holds",
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_by_name_and_json() {
        let mut seen = std::collections::HashSet::new();
        for &c in Code::ALL {
            assert!(seen.insert(c.as_str()), "{c} listed twice");
            assert_eq!(Code::parse(c.as_str()), Some(c));
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(
                json,
                format!("\"{}\"", c.as_str()),
                "serde and as_str agree"
            );
            assert_eq!(serde_json::from_str::<Code>(&json).unwrap(), c);
        }
        assert_eq!(
            serde_json::from_str::<Code>("\"from_the_future\"").unwrap(),
            Code::Unknown
        );
    }
}
