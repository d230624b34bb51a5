//! Verifies a buyer token (a compact JWS): the header and claims are parsed
//! and checked here, so each refusal has its own code and the clock is
//! injectable; `jsonwebtoken` only checks the signature, always with the
//! algorithm of the key the `kid` names (never the token's own `alg`).
//!
//! Order matters: the signature is checked before any claim is trusted,
//! so an attacker cannot learn from the codes whether a forged token's
//! claims would have been accepted.

use super::keys::KeySet;
use crate::error::ApiError;
use crate::protocol::Code;
use crate::protocol::limits::ID_BYTES_MAX;
use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use std::sync::Arc;

/// Clock skew tolerated between the shop that mints tokens and holdfast,
/// on `exp`, `nbf`, `iat` and the lifetime.
pub const LEEWAY_MS: u64 = 5_000;
/// Longest token accepted (a token with a long `skus` list is a few KiB).
pub const TOKEN_BYTES_MAX: usize = 8 * 1024;
/// Most SKUs a `skus` claim may list.
pub const SKUS_CLAIM_MAX: usize = 256;

/// The time buyer tokens are checked against, in ms since the Unix epoch:
/// the system clock, or in tests a function they control.
#[derive(Clone, Default)]
pub struct TokenClock(Option<Arc<dyn Fn() -> u64 + Send + Sync>>);

impl TokenClock {
    pub fn from_fn(f: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(f)))
    }

    pub fn now_ms(&self) -> u64 {
        match &self.0 {
            Some(f) => f(),
            None => holdfast_engine::Clock::now_ms(&holdfast_engine::SystemClock),
        }
    }
}

impl std::fmt::Debug for TokenClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "TokenClock(injected)"
        } else {
            "TokenClock(system)"
        })
    }
}

/// A verified buyer token's claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuyerToken {
    /// The buyer (opaque id from the shop).
    pub sub: String,
    pub jti: String,
    /// `exp` in ms.
    pub exp_ms: u64,
    pub channel: Option<String>,
    pub max_units: Option<u32>,
    pub skus: Option<Vec<String>>,
    pub show: Option<String>,
}

impl BuyerToken {
    /// Whether the token still grants buyer rights at `now_ms`.
    pub fn is_live(&self, now_ms: u64) -> bool {
        now_ms <= self.exp_ms.saturating_add(LEEWAY_MS)
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    exp: Option<u64>,
    jti: Option<String>,
    #[serde(default)]
    nbf: Option<u64>,
    #[serde(default)]
    iat: Option<u64>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    max_units: Option<u32>,
    #[serde(default)]
    skus: Option<Vec<String>>,
    #[serde(default)]
    show: Option<String>,
}

pub(crate) fn refuse(code: Code, message: impl Into<std::borrow::Cow<'static, str>>) -> ApiError {
    let status = match code {
        Code::TokenReplayed
        | Code::TokenSkuNotAllowed
        | Code::TokenLimitExceeded
        | Code::BuyerMismatch => StatusCode::FORBIDDEN,
        _ => StatusCode::UNAUTHORIZED,
    };
    ApiError::new(status, code, message)
}

fn malformed(what: &'static str) -> ApiError {
    refuse(Code::TokenMalformed, what)
}

/// Whether a presented bearer token has the shape of a JWT (three
/// dot-separated parts), as opposed to a shared token.
pub fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3 && token.starts_with("eyJ")
}

/// Verifies `token` with `keys` at `now_ms`, allowing at most
/// `lifetime_max_ms` between the token's start (`iat`, else `nbf`, else
/// now) and its `exp`.
pub fn verify(
    token: &str,
    keys: &KeySet,
    now_ms: u64,
    lifetime_max_ms: u64,
) -> Result<BuyerToken, ApiError> {
    if token.len() > TOKEN_BYTES_MAX {
        return Err(malformed("the token is too long"));
    }
    let mut parts = token.split('.');
    let (Some(h64), Some(c64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("a token is three base64url parts joined by dots"));
    };
    let header: Header = URL_SAFE_NO_PAD
        .decode(h64)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| malformed("the token header is not base64url JSON with an alg"))?;
    if header.alg.eq_ignore_ascii_case("none") {
        return Err(refuse(
            Code::TokenBadAlgorithm,
            "unsigned tokens (alg none) are refused",
        ));
    }
    let key = keys.pick(header.kid.as_deref()).ok_or_else(|| {
        refuse(
            Code::TokenUnknownKid,
            match header.kid {
                Some(_) => "no key with the token's kid",
                None => "the token has no kid and several keys are configured",
            },
        )
    })?;
    // The key decides the algorithm; a token naming another one (an RSA or
    // HMAC token against a public key: algorithm confusion) is refused.
    let key_alg = serde_json::to_value(key.alg).unwrap_or_default();
    if key_alg.as_str() != Some(header.alg.as_str()) {
        return Err(refuse(
            Code::TokenBadAlgorithm,
            "the token's alg is not its key's algorithm",
        ));
    }
    let signed = &token[..h64.len() + 1 + c64.len()];
    match jsonwebtoken::crypto::verify(s64, signed.as_bytes(), &key.decoding, key.alg) {
        Ok(true) => {}
        Ok(false) => {
            return Err(refuse(
                Code::TokenBadSignature,
                "the signature does not verify",
            ));
        }
        Err(_) => return Err(malformed("the signature is not base64url")),
    }
    let claims: Claims = URL_SAFE_NO_PAD
        .decode(c64)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| malformed("the claims are not base64url JSON of the expected types"))?;
    let (Some(sub), Some(exp), Some(jti)) = (claims.sub, claims.exp, claims.jti) else {
        return Err(malformed("sub, exp and jti are required"));
    };
    for (what, text) in [("sub", &sub), ("jti", &jti)] {
        if text.is_empty() || text.len() > ID_BYTES_MAX || text.chars().any(char::is_control) {
            return Err(refuse(
                Code::TokenMalformed,
                format!("{what} must be 1-{ID_BYTES_MAX} bytes without control characters"),
            ));
        }
    }
    if claims
        .skus
        .as_ref()
        .is_some_and(|s| s.len() > SKUS_CLAIM_MAX)
    {
        return Err(refuse(
            Code::TokenMalformed,
            format!("skus lists at most {SKUS_CLAIM_MAX} SKUs"),
        ));
    }
    let exp_ms = exp.saturating_mul(1000);
    if now_ms > exp_ms.saturating_add(LEEWAY_MS) {
        return Err(refuse(Code::TokenExpired, "the token has expired"));
    }
    let not_before_ms = claims.nbf.max(claims.iat).map(|s| s.saturating_mul(1000));
    if not_before_ms.is_some_and(|nbf| nbf > now_ms.saturating_add(LEEWAY_MS)) {
        return Err(refuse(Code::TokenNotYetValid, "the token is not valid yet"));
    }
    let start_ms = claims
        .iat
        .or(claims.nbf)
        .map_or(now_ms, |s| s.saturating_mul(1000));
    if exp_ms.saturating_sub(start_ms) > lifetime_max_ms.saturating_add(LEEWAY_MS) {
        return Err(refuse(
            Code::TokenLifetimeTooLong,
            format!("a buyer token may live at most {lifetime_max_ms} ms"),
        ));
    }
    Ok(BuyerToken {
        sub,
        jti,
        exp_ms,
        channel: claims.channel,
        max_units: claims.max_units,
        skus: claims.skus,
        show: claims.show,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header as JwtHeader, encode};

    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    const NOW_MS: u64 = 1_800_000_000_000;

    fn keys() -> KeySet {
        KeySet::load(&[format!("k1:HS256:{SECRET}")], None).unwrap()
    }

    fn token(claims: serde_json::Value, kid: Option<&str>) -> String {
        let mut h = JwtHeader::new(jsonwebtoken::Algorithm::HS256);
        h.kid = kid.map(str::to_string);
        encode(
            &h,
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
        )
        .unwrap()
    }

    fn code(t: &str, now: u64) -> Code {
        verify(t, &keys(), now, 900_000).unwrap_err().code
    }

    #[test]
    fn each_refusal_has_its_code() {
        let s = NOW_MS / 1000;
        let ok = serde_json::json!({"sub":"b1","exp":s+60,"jti":"j1","iat":s});
        let good = token(ok.clone(), Some("k1"));
        let v = verify(&good, &keys(), NOW_MS, 900_000).unwrap();
        assert_eq!((v.sub.as_str(), v.exp_ms), ("b1", (s + 60) * 1000));
        assert!(verify(&token(ok.clone(), None), &keys(), NOW_MS, 900_000).is_ok());
        assert_eq!(
            code(&good, (s + 60) * 1000 + LEEWAY_MS + 1),
            Code::TokenExpired
        );
        assert!(verify(&good, &keys(), (s + 60) * 1000 + LEEWAY_MS, 900_000).is_ok());
        let early = serde_json::json!({"sub":"b1","exp":s+60,"jti":"j1","nbf":s+10});
        assert_eq!(code(&token(early, None), NOW_MS), Code::TokenNotYetValid);
        let long = serde_json::json!({"sub":"b1","exp":s+3600,"jti":"j1","iat":s});
        assert_eq!(code(&token(long, None), NOW_MS), Code::TokenLifetimeTooLong);
        assert_eq!(
            code(&token(ok.clone(), Some("k9")), NOW_MS),
            Code::TokenUnknownKid
        );
        let no_jti = serde_json::json!({"sub":"b1","exp":s+60});
        assert_eq!(code(&token(no_jti, None), NOW_MS), Code::TokenMalformed);
        let mut forged = good.clone();
        forged.pop();
        forged.push(if good.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(code(&forged, NOW_MS), Code::TokenBadSignature);
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none","kid":"k1"}"#),
            good.split('.').nth(1).unwrap()
        );
        assert_eq!(code(&none, NOW_MS), Code::TokenBadAlgorithm);
        assert_eq!(code("eyJ.x", NOW_MS), Code::TokenMalformed);
    }

    #[test]
    fn size_bounds_are_enforced_at_the_limit() {
        let s = NOW_MS / 1000;
        let skus = |n: usize| (0..n).map(|i| format!("s{i}")).collect::<Vec<_>>();
        let at = serde_json::json!({"sub":"b","exp":s+60,"jti":"j","skus":skus(SKUS_CLAIM_MAX)});
        assert!(verify(&token(at, None), &keys(), NOW_MS, 900_000).is_ok());
        let over =
            serde_json::json!({"sub":"b","exp":s+60,"jti":"j","skus":skus(SKUS_CLAIM_MAX + 1)});
        assert_eq!(code(&token(over, None), NOW_MS), Code::TokenMalformed);
        let long = "x".repeat(ID_BYTES_MAX + 1);
        let sub = serde_json::json!({"sub":long,"exp":s+60,"jti":"j"});
        assert_eq!(code(&token(sub, None), NOW_MS), Code::TokenMalformed);
        let big = format!("eyJ{}.x.y", "A".repeat(TOKEN_BYTES_MAX));
        assert_eq!(code(&big, NOW_MS), Code::TokenMalformed);
    }
}
