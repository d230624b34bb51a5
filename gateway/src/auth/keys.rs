//! The keys buyer tokens are verified with: HS256 shared secrets and
//! EdDSA (Ed25519) or ES256 (P-256) public keys, several at once, each
//! named by a `kid` so the shop can rotate without downtime.
//!
//! Keys come from `--buyer-token-key KID:ALG:VALUE` (repeatable) and from a
//! JWKS file (`--buyer-token-jwks`). Each key carries its algorithm: a
//! token is always checked with its key's algorithm, never with the one
//! the token names (no `none`, no algorithm confusion). Start-up refuses a
//! short HS256 secret and a JWKS holding a private key: holdfast must never
//! hold what signs tokens for a public key.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey};
use std::path::Path;

/// Shortest HS256 secret accepted: 256 bits, the size of the HMAC-SHA256
/// output (RFC 7518 3.2 requires at least that).
pub const HS256_SECRET_BYTES_MIN: usize = 32;
/// Most keys configured at once (rotation needs two or three).
pub const KEYS_MAX: usize = 64;
/// Longest `kid`.
pub const KID_BYTES_MAX: usize = 128;
/// Largest key or JWKS file read.
const KEY_FILE_BYTES_MAX: u64 = 1 << 20;

/// One verification key.
#[derive(Clone)]
pub struct Key {
    pub kid: String,
    pub alg: Algorithm,
    pub decoding: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a secret.
        write!(f, "Key({}, {:?})", self.kid, self.alg)
    }
}

/// The keys in force.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<Key>,
}

impl KeySet {
    /// Keys from the flags' `KID:ALG:VALUE` specs and an optional JWKS file.
    pub fn load(specs: &[String], jwks: Option<&Path>) -> Result<Self, String> {
        let mut set = Self::default();
        for spec in specs {
            set.add(parse_spec(spec)?)?;
        }
        if let Some(path) = jwks {
            let text = read_small(path)?;
            for key in parse_jwks(&text).map_err(|e| format!("{}: {e}", path.display()))? {
                set.add(key)?;
            }
        }
        Ok(set)
    }

    fn add(&mut self, key: Key) -> Result<(), String> {
        if self.keys.iter().any(|k| k.kid == key.kid) {
            return Err(format!("buyer token key id {:?} is given twice", key.kid));
        }
        if self.keys.len() >= KEYS_MAX {
            return Err(format!("at most {KEYS_MAX} buyer token keys"));
        }
        self.keys.push(key);
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The key a token names; a token without `kid` only when exactly one
    /// key is configured (with several, guessing would let a token pick).
    pub fn pick(&self, kid: Option<&str>) -> Option<&Key> {
        match kid {
            Some(kid) => self.keys.iter().find(|k| k.kid == kid),
            None if self.keys.len() == 1 => self.keys.first(),
            None => None,
        }
    }
}

fn read_small(path: &Path) -> Result<String, String> {
    let len = std::fs::metadata(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    if len > KEY_FILE_BYTES_MAX {
        return Err(format!(
            "{}: larger than {KEY_FILE_BYTES_MAX} bytes",
            path.display()
        ));
    }
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn check_kid(kid: &str) -> Result<(), String> {
    if kid.is_empty() || kid.len() > KID_BYTES_MAX || kid.chars().any(char::is_control) {
        return Err(format!(
            "a buyer token key id must be 1-{KID_BYTES_MAX} bytes without control characters"
        ));
    }
    Ok(())
}

fn hs256(kid: String, secret: &[u8]) -> Result<Key, String> {
    if secret.len() < HS256_SECRET_BYTES_MIN {
        return Err(format!(
            "buyer token key {kid:?}: an HS256 secret must be at least {HS256_SECRET_BYTES_MIN} bytes"
        ));
    }
    let decoding =
        DecodingKey::from_secret(secret).map_err(|e| format!("buyer token key {kid:?}: {e}"))?;
    Ok(Key {
        kid,
        alg: Algorithm::HS256,
        decoding,
    })
}

/// `KID:ALG:VALUE`: an HS256 secret as text, or for EdDSA / ES256 a public
/// key PEM, inline or `@path.pem`.
pub fn parse_spec(spec: &str) -> Result<Key, String> {
    let mut parts = spec.splitn(3, ':');
    let (Some(kid), Some(alg), Some(value)) = (parts.next(), parts.next(), parts.next()) else {
        return Err("a buyer token key is KID:ALG:VALUE (ALG one of HS256, EdDSA, ES256)".into());
    };
    check_kid(kid)?;
    let kid = kid.to_string();
    let pem = || -> Result<Vec<u8>, String> {
        match value.strip_prefix('@') {
            Some(path) => read_small(Path::new(path)).map(String::into_bytes),
            None => Ok(value.as_bytes().to_vec()),
        }
    };
    let bad = |e: jsonwebtoken::errors::Error| format!("buyer token key {kid:?}: {e}");
    match alg {
        "HS256" => hs256(kid.clone(), value.as_bytes()),
        "EdDSA" => Ok(Key {
            decoding: DecodingKey::from_ed_pem(&pem()?).map_err(bad)?,
            kid: kid.clone(),
            alg: Algorithm::EdDSA,
        }),
        "ES256" => Ok(Key {
            decoding: DecodingKey::from_ec_pem(&pem()?).map_err(bad)?,
            kid: kid.clone(),
            alg: Algorithm::ES256,
        }),
        other => Err(format!(
            "buyer token key {kid:?}: algorithm {other:?} is not HS256, EdDSA or ES256"
        )),
    }
}

/// Members of a JWK that only a private key has (RFC 7518 6.2.2, 6.3.2,
/// RFC 8037 2).
const PRIVATE_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth"];

/// The keys of a JWKS document (`{"keys":[...]}`). Every key needs a
/// `kid`; `oct` keys are HS256 secrets, `OKP`/Ed25519 EdDSA, `EC`/P-256
/// ES256. A private key refuses the whole file.
pub fn parse_jwks(text: &str) -> Result<Vec<Key>, String> {
    let doc: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not a JWKS document: {e}"))?;
    let Some(list) = doc.get("keys").and_then(|k| k.as_array()) else {
        return Err("not a JWKS document: no \"keys\" array".into());
    };
    let mut keys = Vec::with_capacity(list.len());
    for raw in list {
        if let Some(member) = PRIVATE_MEMBERS.iter().find(|m| raw.get(**m).is_some()) {
            return Err(format!(
                "holds a private key (member {member:?}): give only public keys"
            ));
        }
        let jwk: Jwk = serde_json::from_value(raw.clone()).map_err(|e| format!("a key: {e}"))?;
        let kid = jwk
            .common
            .key_id
            .clone()
            .ok_or("every key needs a \"kid\"")?;
        check_kid(&kid)?;
        let key = match &jwk.algorithm {
            AlgorithmParameters::OctetKey(oct) => {
                use base64::Engine as _;
                let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(oct.value.trim_end_matches('='))
                    .map_err(|e| format!("key {kid:?}: \"k\": {e}"))?;
                hs256(kid, &secret)?
            }
            AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => Key {
                decoding: DecodingKey::from_jwk(&jwk).map_err(|e| format!("key {kid:?}: {e}"))?,
                kid,
                alg: Algorithm::EdDSA,
            },
            AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => Key {
                decoding: DecodingKey::from_jwk(&jwk).map_err(|e| format!("key {kid:?}: {e}"))?,
                kid,
                alg: Algorithm::ES256,
            },
            _ => {
                return Err(format!(
                    "key {kid:?}: only oct (HS256), OKP Ed25519 (EdDSA) and EC P-256 (ES256) keys"
                ));
            }
        };
        keys.push(key);
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_secrets_private_jwks_and_duplicates_are_refused() {
        let short = parse_spec("k1:HS256:0123456789012345678901234567890").unwrap_err();
        assert!(short.contains("at least 32 bytes"), "{short}");
        assert!(parse_spec("k1:HS256:01234567890123456789012345678901").is_ok());
        assert!(parse_spec("k1:none:x").unwrap_err().contains("not HS256"));
        assert!(parse_spec("k1").is_err());
        let private = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"a",
            "x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
            "d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"}]}"#;
        assert!(parse_jwks(private).unwrap_err().contains("private key"));
        let public = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"a",
            "x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;
        assert_eq!(parse_jwks(public).unwrap()[0].alg, Algorithm::EdDSA);
        let specs = [
            "a:HS256:01234567890123456789012345678901".to_string(),
            "a:HS256:01234567890123456789012345678902".to_string(),
        ];
        assert!(KeySet::load(&specs, None).unwrap_err().contains("twice"));
        let one = KeySet::load(&specs[..1], None).unwrap();
        assert!(one.pick(None).is_some(), "one key: no kid needed");
        assert!(one.pick(Some("b")).is_none());
    }
}
