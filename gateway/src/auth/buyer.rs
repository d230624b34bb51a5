//! What a buyer token may do, applied in front of [`crate::ops`]: reserve
//! for its own subject only (within its `skus` / `show` claims and replay
//! limits), release, extend and read only its own holds, never commit.
//!
//! A buyer's request ids are scoped to it: the id the engine sees is a
//! SHA-256 digest of the subject and the client's id, so two buyers using
//! the same request id never share an answer, and the digest is the same
//! after a restart (a retry across a restart is still a replay).
//!
//! Someone else's hold answers `hold_not_found`, exactly as a hold that
//! does not exist: a buyer cannot probe which hold ids are live.

use super::jwt::{self, BuyerToken, TokenClock, refuse};
use super::keys::KeySet;
use super::replay::{ReplayTable, Ticket};
use crate::error::ApiError;
use crate::ops::{Applied, Ops};
use crate::protocol::{Code, Extend, Release, Reserve, Reserved};
use dashmap::DashMap;
use holdfast_engine::{HoldError, HoldId, HoldState};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Most holds whose sales channel (the token's `channel` claim) is
/// remembered at once, for the webhooks; past it, entries of holds that
/// have ended are dropped first.
pub const HOLD_CHANNELS_MAX: usize = 100_000;

/// Buyer-token verification and the state behind its limits.
#[derive(Debug)]
pub struct BuyerAuth {
    keys: KeySet,
    lifetime_max_ms: u64,
    pub replay: ReplayTable,
    pub clock: TokenClock,
    /// Hold → the channel its token named (in memory only).
    channels: DashMap<HoldId, Arc<str>>,
}

impl BuyerAuth {
    pub fn new(keys: KeySet, lifetime_max_ms: u64, replay: ReplayTable, clock: TokenClock) -> Self {
        Self {
            keys,
            lifetime_max_ms,
            replay,
            clock,
            channels: DashMap::new(),
        }
    }

    /// Verifies a presented JWT now.
    pub fn verify(&self, token: &str) -> Result<BuyerToken, ApiError> {
        jwt::verify(token, &self.keys, self.clock.now_ms(), self.lifetime_max_ms)
    }

    /// Refuses a token that expired since it was presented (a websocket
    /// session keeps its token).
    pub fn live(&self, token: &BuyerToken) -> Result<(), ApiError> {
        if token.is_live(self.clock.now_ms()) {
            Ok(())
        } else {
            Err(refuse(
                Code::TokenExpired,
                "the buyer token has expired; present a new one",
            ))
        }
    }

    /// The sales channel a buyer token named when `hold` was reserved.
    pub fn channel_of(&self, hold: HoldId) -> Option<Arc<str>> {
        self.channels.get(&hold).map(|c| c.clone())
    }

    fn remember_channel(&self, ops: &Ops, token: &BuyerToken, hold: &str) {
        let (Some(channel), Ok(hold)) = (&token.channel, hold.parse::<HoldId>()) else {
            return;
        };
        if self.channels.len() >= HOLD_CHANNELS_MAX {
            self.channels.retain(|h, _| {
                ops.engine
                    .hold(*h)
                    .is_ok_and(|i| i.state == HoldState::Held)
            });
        }
        if self.channels.len() < HOLD_CHANNELS_MAX {
            self.channels.insert(hold, Arc::from(channel.as_str()));
        }
    }

    /// Checks a buyer's reservation and counts it against the token:
    /// fills in the buyer, scopes the request id.
    pub fn prepare_reserve(
        &self,
        ops: &Ops,
        token: &BuyerToken,
        req: &mut Reserve,
    ) -> Result<Ticket, ApiError> {
        self.live(token)?;
        if req.buyer.is_empty() {
            req.buyer = token.sub.clone();
        } else if req.buyer != token.sub {
            return Err(refuse(
                Code::BuyerMismatch,
                "a buyer token reserves for its own subject only (omit buyer)",
            ));
        }
        // Malformed (both or neither of sku and lines): nothing to check
        // here, the operation refuses it with its usual code.
        let single = req.sku.as_deref().filter(|_| req.lines.is_none());
        let lines = req.lines.as_deref().filter(|_| req.sku.is_none());
        let skus = single
            .into_iter()
            .chain(lines.unwrap_or_default().iter().map(|l| l.sku.as_str()));
        for sku in skus {
            self.check_sku(ops, token, sku)?;
        }
        // The token's channel claim is applied on the reservation path
        // with the other channel rules ([`crate::channels::of_reservation`]).
        let units = match (&req.qty, &req.lines) {
            (Some(q), _) => *q,
            (None, Some(lines)) => lines.iter().fold(0u32, |a, l| a.saturating_add(l.qty)),
            (None, None) => 0,
        };
        req.request_id = scope_request(token, req.request_id.take());
        let request_key = req.request_id.as_deref().map(request_key);
        self.replay
            .admit(token, units, request_key, self.clock.now_ms())
    }

    fn check_sku(&self, ops: &Ops, token: &BuyerToken, sku: &str) -> Result<(), ApiError> {
        if let Some(allowed) = &token.skus
            && !allowed.iter().any(|s| s == sku)
        {
            return Err(refuse(
                Code::TokenSkuNotAllowed,
                "the token does not allow this sku",
            ));
        }
        if let Some(show) = &token.show
            && let Some(idx) = ops.engine.sku(sku)
            && ops.meta.get(idx).and_then(|m| m.show.clone()).as_deref() != Some(show.as_str())
        {
            return Err(refuse(
                Code::TokenSkuNotAllowed,
                "the token is for another show",
            ));
        }
        Ok(())
    }

    /// Reserves in memory for a buyer (the websocket path); see
    /// [`Ops::reserve_now`]. A refused reservation is not counted.
    pub fn reserve_now(
        &self,
        ops: &Ops,
        token: &BuyerToken,
        mut req: Reserve,
    ) -> Result<Applied<Reserved>, ApiError> {
        let ticket = self.prepare_reserve(ops, token, &mut req)?;
        match ops.reserve_now_claimed(req, token.channel.as_deref()) {
            Ok(applied) => {
                self.remember_channel(ops, token, &applied.answer.hold);
                Ok(applied)
            }
            Err(e) => {
                self.replay.cancel(ticket);
                Err(e)
            }
        }
    }

    /// Reserves for a buyer and waits until it is durable (the HTTP path).
    pub async fn reserve(
        &self,
        ops: &Ops,
        token: &BuyerToken,
        mut req: Reserve,
    ) -> Result<Reserved, ApiError> {
        let ticket = self.prepare_reserve(ops, token, &mut req)?;
        match ops.reserve_claimed(req, token.channel.as_deref()).await {
            Ok(r) => {
                self.remember_channel(ops, token, &r.hold);
                Ok(r)
            }
            Err(e) => {
                self.replay.cancel(ticket);
                Err(e)
            }
        }
    }

    /// Refuses unless `hold` is a hold of this buyer that the engine knows
    /// (someone else's reads as not found).
    pub fn own_hold(&self, ops: &Ops, token: &BuyerToken, hold: &str) -> Result<(), ApiError> {
        self.live(token)?;
        let id: HoldId = hold.parse().map_err(|_| {
            ApiError::new(
                axum::http::StatusCode::BAD_REQUEST,
                Code::InvalidHoldId,
                "hold must be a hold id (16 hex digits)",
            )
        })?;
        let buyer = ops.ids.buyer(&token.sub)?;
        match ops.engine.hold(id) {
            Ok(info) if info.buyer == buyer => Ok(()),
            _ => Err(HoldError::HoldNotFound.into()),
        }
    }

    /// A buyer's release: its own hold, its scoped request id.
    pub fn prepare_release(
        &self,
        ops: &Ops,
        token: &BuyerToken,
        req: &mut Release,
    ) -> Result<(), ApiError> {
        self.own_request(ops, token, &req.hold, &mut req.request_id)
    }

    /// A buyer's extend: its own hold, its scoped request id.
    pub fn prepare_extend(
        &self,
        ops: &Ops,
        token: &BuyerToken,
        req: &mut Extend,
    ) -> Result<(), ApiError> {
        self.own_request(ops, token, &req.hold, &mut req.request_id)
    }

    fn own_request(
        &self,
        ops: &Ops,
        token: &BuyerToken,
        hold: &str,
        request: &mut Option<String>,
    ) -> Result<(), ApiError> {
        self.own_hold(ops, token, hold)?;
        *request = scope_request(token, request.take());
        Ok(())
    }
}

/// A buyer's request id as the engine sees it: hex SHA-256 of a domain
/// tag, the subject and the client's id (64 characters, within the
/// request id limit).
pub fn scope_request(token: &BuyerToken, request: Option<String>) -> Option<String> {
    let request = request?;
    let mut h = Sha256::new();
    h.update(b"holdfast buyer request\0");
    h.update(token.sub.as_bytes());
    h.update([0]);
    h.update(request.as_bytes());
    let digest = h.finalize();
    Some(crate::ids::hex(&digest))
}

/// The replay table's key of a scoped request id (its first 64 bits).
fn request_key(scoped: &str) -> u64 {
    scoped
        .get(..16)
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_scoped_per_buyer_and_stable() {
        let t = |sub: &str| BuyerToken {
            sub: sub.into(),
            jti: "j".into(),
            exp_ms: 0,
            channel: None,
            max_units: None,
            skus: None,
            show: None,
        };
        let a = scope_request(&t("a"), Some("r1".into())).unwrap();
        assert_eq!(a.len(), 64);
        assert_eq!(Some(a.clone()), scope_request(&t("a"), Some("r1".into())));
        assert_ne!(Some(a.clone()), scope_request(&t("b"), Some("r1".into())));
        assert_eq!(scope_request(&t("a"), None), None);
        assert_ne!(request_key(&a), 0);
    }
}
