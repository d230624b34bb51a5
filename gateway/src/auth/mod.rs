//! Roles and tokens: the shared admin and checkout tokens, and buyers'
//! signed tokens (JWTs minted by the shop). Shared tokens are compared in
//! constant time, so response timing does not reveal how much of a guessed
//! token was right.
//!
//! # Layout
//!
//! - this file: [`Tokens`] (who a presented token is), [`require`];
//! - [`keys`]: the verification keys, by `kid`;
//! - [`jwt`]: verifying a buyer token, each refusal with its code;
//! - [`replay`]: per-token reservation counts (bounded);
//! - [`buyer`]: what a buyer token may do, in front of `ops`.

pub mod buyer;
pub mod jwt;
pub mod keys;
pub mod replay;

use crate::error::ApiError;
use crate::protocol::Code;
use axum::http::HeaderMap;
use buyer::BuyerAuth;
use jwt::{BuyerToken, TokenClock};
use std::path::PathBuf;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// What a caller may do (the wire enum; ranked).
pub use crate::protocol::Role;

/// Buyer token flags (`holdfast serve`).
#[derive(Debug, Clone, clap::Args)]
pub struct BuyerTokenArgs {
    /// A key buyer tokens are verified with, `KID:ALG:VALUE` (repeatable;
    /// the env var takes a comma-separated list). ALG is HS256 (VALUE: the
    /// shared secret, at least 32 bytes), EdDSA or ES256 (VALUE: the public
    /// key PEM, or `@path.pem`). None: buyer tokens are refused.
    #[arg(
        long = "buyer-token-key",
        env = "HOLDFAST_BUYER_TOKEN_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub keys: Vec<String>,

    /// A JWKS file of buyer token keys (public keys, or `oct` HS256
    /// secrets; a private key is refused), each with a `kid`.
    #[arg(long = "buyer-token-jwks", env = "HOLDFAST_BUYER_TOKEN_JWKS")]
    pub jwks: Option<PathBuf>,

    /// Longest a buyer token may live, from `iat` (or `nbf`, or now) to
    /// `exp`, in ms. Default 15 minutes: a checkout session, no more.
    #[arg(
        long = "buyer-token-lifetime-max-ms",
        env = "HOLDFAST_BUYER_TOKEN_LIFETIME_MAX_MS",
        default_value_t = 900_000
    )]
    pub lifetime_max_ms: u64,

    /// Most reservations one buyer token (`sub`, `jti`) may make. Default
    /// 10: a few taps and retries of one viewer, not a bot.
    #[arg(
        long = "buyer-token-reservations-max",
        env = "HOLDFAST_BUYER_TOKEN_RESERVATIONS_MAX",
        default_value_t = 10
    )]
    pub reservations_max: u32,

    /// Most live buyer tokens counted at once (each ~200 bytes). Default
    /// 100000; full of live tokens, a new token's reservation is 503.
    #[arg(
        long = "buyer-token-entries-max",
        env = "HOLDFAST_BUYER_TOKEN_ENTRIES_MAX",
        default_value_t = replay::ENTRIES_MAX_DEFAULT
    )]
    pub entries_max: usize,

    /// The clock tokens are checked against (tests inject their own).
    #[arg(skip)]
    pub clock: TokenClock,
}

impl BuyerTokenArgs {
    /// The buyer-token verifier, or `None` when no key is configured.
    pub fn build(&self) -> Result<Option<Arc<BuyerAuth>>, String> {
        let keys = keys::KeySet::load(&self.keys, self.jwks.as_deref())?;
        if keys.is_empty() {
            return Ok(None);
        }
        if self.reservations_max == 0 || self.entries_max == 0 || self.lifetime_max_ms == 0 {
            return Err("buyer token limits must be positive".into());
        }
        Ok(Some(Arc::new(BuyerAuth::new(
            keys,
            self.lifetime_max_ms,
            replay::ReplayTable::new(self.entries_max, self.reservations_max),
            self.clock.clone(),
        ))))
    }
}

/// Who is calling: a role, and for a buyer its verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub role: Role,
    pub buyer: Option<Arc<BuyerToken>>,
}

impl Caller {
    fn of(role: Role) -> Self {
        Self { role, buyer: None }
    }
}

#[derive(Debug, Clone)]
pub struct Tokens {
    admin: Vec<u8>,
    checkout: Vec<u8>,
    /// Buyer-token verification, when keys are configured.
    pub buyers: Option<Arc<BuyerAuth>>,
}

impl Tokens {
    pub fn new(admin: &str, checkout: &str) -> Self {
        Self {
            admin: admin.as_bytes().to_vec(),
            checkout: checkout.as_bytes().to_vec(),
            buyers: None,
        }
    }

    pub fn with_buyers(mut self, buyers: Option<Arc<BuyerAuth>>) -> Self {
        self.buyers = buyers;
        self
    }

    /// Who a presented token is: a shared token's role, or a buyer with a
    /// verified JWT. A JWT-shaped token is refused with its own code;
    /// anything else unknown is `unauthorized`.
    pub fn caller_of(&self, token: &str) -> Result<Caller, ApiError> {
        if let Some(role) = self.role_of(token) {
            return Ok(Caller::of(role));
        }
        match &self.buyers {
            Some(buyers) if jwt::looks_like_jwt(token) => {
                let t = buyers.verify(token)?;
                Ok(Caller {
                    role: Role::Buyer,
                    buyer: Some(Arc::new(t)),
                })
            }
            _ => Err(ApiError::unauthorized()),
        }
    }

    /// Refuses a JWT given in a URL (`?token=`): URLs end up in logs and
    /// browser history. Shared tokens keep working there.
    pub fn refuse_jwt_in_url(token: &str) -> Result<(), ApiError> {
        if jwt::looks_like_jwt(token) {
            return Err(jwt::refuse(
                Code::TokenMalformed,
                "a buyer token never goes in a URL: send it in the auth message or the Authorization header",
            ));
        }
        Ok(())
    }

    /// The role a presented token grants, or `None` for a wrong token.
    pub fn role_of(&self, token: &str) -> Option<Role> {
        let t = token.as_bytes();
        // Both comparisons always run: no early exit on the first match.
        let admin = bool::from(t.ct_eq(&self.admin));
        let checkout = bool::from(t.ct_eq(&self.checkout));
        if admin {
            Some(Role::Admin)
        } else if checkout {
            Some(Role::Checkout)
        } else {
            None
        }
    }

    /// The role of an HTTP request: no `Authorization` header is a viewer;
    /// a wrong or malformed one is refused.
    pub fn role_of_headers(&self, headers: &HeaderMap) -> Result<Role, ApiError> {
        self.caller_of_headers(headers).map(|c| c.role)
    }

    /// The caller of an HTTP request (see [`Tokens::role_of_headers`]).
    pub fn caller_of_headers(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        match headers.get(axum::http::header::AUTHORIZATION) {
            None => Ok(Caller::of(Role::Viewer)),
            Some(value) => {
                let value = value.to_str().map_err(|_| ApiError::unauthorized())?;
                // The scheme is case-insensitive (RFC 9110 11.1).
                let token = match value.split_once(' ') {
                    Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token,
                    _ => return Err(ApiError::unauthorized()),
                };
                self.caller_of(token.trim())
            }
        }
    }
}

/// Refuses unless `have` is at least `need`: 401 for an anonymous caller,
/// 403 for a known one without the right.
pub fn require(have: Role, need: Role) -> Result<(), ApiError> {
    if have >= need {
        Ok(())
    } else if have == Role::Viewer {
        Err(ApiError::unauthorized())
    } else if have == Role::Buyer {
        Err(ApiError::forbidden(
            "a buyer token may reserve, release and extend its own holds; the shop commits after payment",
        ))
    } else {
        Err(ApiError::forbidden("this token may not do that"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Code;

    #[test]
    fn tokens_map_to_roles() {
        let t = Tokens::new("adm", "chk");
        assert_eq!(t.role_of("adm"), Some(Role::Admin));
        assert_eq!(t.role_of("chk"), Some(Role::Checkout));
        assert_eq!(t.role_of("ch"), None);
        assert_eq!(t.role_of(""), None);
        let mut h = HeaderMap::new();
        assert_eq!(t.role_of_headers(&h), Ok(Role::Viewer));
        h.insert("authorization", "Bearer chk".parse().unwrap());
        assert_eq!(t.role_of_headers(&h), Ok(Role::Checkout));
        h.insert("authorization", "bearer chk".parse().unwrap());
        assert_eq!(t.role_of_headers(&h), Ok(Role::Checkout), "any case");
        h.insert("authorization", "BEARER  chk".parse().unwrap());
        assert_eq!(t.role_of_headers(&h), Ok(Role::Checkout));
        h.insert("authorization", "Basic chk".parse().unwrap());
        assert_eq!(t.role_of_headers(&h).unwrap_err().code, Code::Unauthorized);
        assert_eq!(
            require(Role::Checkout, Role::Admin).unwrap_err().code,
            Code::Forbidden
        );
        assert_eq!(
            require(Role::Viewer, Role::Checkout).unwrap_err().code,
            Code::Unauthorized
        );
    }
}
