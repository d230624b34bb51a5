//! Buyer ids as pseudonyms: what the shop calls a buyer (an account id, an
//! e-mail) reaches Redis, the order stream, logs and metrics only as
//! `hex(HMAC-SHA256(key, buyer id))`, unless the operator opts out with
//! `--buyer-ids-in-clear`. The shop, holding the same key
//! (`--buyer-id-key`), maps a pseudonym back by computing the same HMAC of
//! its own ids (docs/PRIVACY.md shows how).
//!
//! This module never logs, prints or formats a key: [`BuyerIdKey`]'s
//! `Debug` says `redacted`.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::fmt;
use std::sync::Arc;

/// Fewest key bytes accepted: HMAC-SHA256's security needs at least the
/// hash's half (RFC 2104 recommends the output length, 32).
pub const BUYER_ID_KEY_BYTES_MIN: usize = 16;

/// Most key bytes accepted (a longer HMAC key is hashed down anyway).
pub const BUYER_ID_KEY_BYTES_MAX: usize = 64;

/// Hex digits of a pseudonym: the whole HMAC-SHA256 output.
pub const PSEUDONYM_HEX_LEN: usize = 64;

/// The journal record's field (`hf:journal`) holding the key generated
/// for a store when the operator gives no `--buyer-id-key`, so pseudonyms
/// stay the same across restarts (docs/PRIVACY.md).
pub const GENERATED_KEY_FIELD: &str = "buyer_id_key";

/// The `--buyer-id-key` secret: hex, or base64 (standard or URL-safe,
/// padded or not), of 16 to 64 bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct BuyerIdKey(Vec<u8>);

impl fmt::Debug for BuyerIdKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BuyerIdKey(redacted)")
    }
}

impl BuyerIdKey {
    /// Parses a key (clap's value parser); the error never echoes it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let bytes = if text.len().is_multiple_of(2) && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            (0..text.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&text[i..i + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .map_err(|_| "not hex".to_string())?
        } else {
            use base64::Engine as _;
            let trimmed = text.trim_end_matches('=');
            base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(trimmed)
                .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(trimmed))
                .map_err(|_| "the buyer id key must be hex or base64".to_string())?
        };
        if !(BUYER_ID_KEY_BYTES_MIN..=BUYER_ID_KEY_BYTES_MAX).contains(&bytes.len()) {
            return Err(format!(
                "the buyer id key must be {BUYER_ID_KEY_BYTES_MIN} to {BUYER_ID_KEY_BYTES_MAX} bytes (it has {})",
                bytes.len()
            ));
        }
        Ok(Self(bytes))
    }

    /// A fresh random key (when none is configured).
    pub fn random() -> Self {
        let mut bytes = vec![0u8; 32];
        getrandom::fill(&mut bytes).expect("the OS random source works");
        Self(bytes)
    }

    /// The key in hex, as [`Self::parse`] reads it back: only for storing a
    /// generated key in the journal record, never for a log.
    pub fn to_hex(&self) -> String {
        crate::ids::hex(&self.0)
    }
}

/// What holdfast stores for a buyer id it was given.
#[derive(Clone)]
pub enum BuyerNames {
    /// `hex(HMAC-SHA256(key, id))`, from this keyed state.
    Pseudonyms(Hmac<Sha256>),
    /// The id as given (`--buyer-ids-in-clear`).
    Clear,
}

impl fmt::Debug for BuyerNames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Pseudonyms(_) => "BuyerNames::Pseudonyms",
            Self::Clear => "BuyerNames::Clear",
        })
    }
}

impl BuyerNames {
    pub fn pseudonyms(key: &BuyerIdKey) -> Self {
        Self::Pseudonyms(Hmac::<Sha256>::new_from_slice(&key.0).expect("HMAC takes any key length"))
    }

    /// The stored name of buyer id `id`.
    pub fn name(&self, id: &str) -> Arc<str> {
        match self {
            Self::Clear => Arc::from(id),
            Self::Pseudonyms(key) => {
                let mut mac = key.clone();
                mac.update(id.as_bytes());
                let tag = mac.finalize().into_bytes();
                let mut hex = String::with_capacity(PSEUDONYM_HEX_LEN);
                for b in tag.iter().copied() {
                    hex.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
                    hex.push(char::from(b"0123456789abcdef"[usize::from(b & 0xf)]));
                }
                Arc::from(hex)
            }
        }
    }

    /// A name read back from Redis: kept if it is already what this mode
    /// stores, else made a pseudonym (a store written in the clear before
    /// pseudonyms were on is converted as it is rewritten).
    pub fn restored(&self, stored: &str) -> Arc<str> {
        match self {
            Self::Clear => Arc::from(stored),
            Self::Pseudonyms(_) if is_pseudonym(stored) => Arc::from(stored),
            Self::Pseudonyms(_) => self.name(stored),
        }
    }
}

/// A JSON parse error for a log line: its kind and position, never its
/// message (serde_json quotes the offending value, which may be a buyer
/// id or a token).
pub fn json_error_for_log(e: &serde_json::Error) -> String {
    format!(
        "{:?} at line {} column {}",
        e.classify(),
        e.line(),
        e.column()
    )
}

/// Whether `s` looks like a pseudonym (64 lowercase hex digits).
pub fn is_pseudonym(s: &str) -> bool {
    s.len() == PSEUDONYM_HEX_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_from_hex_or_base64_within_bounds_and_never_show() {
        let hex = "000102030405060708090a0b0c0d0e0f";
        let k = BuyerIdKey::parse(hex).unwrap();
        assert_eq!(k.0, (0u8..16).collect::<Vec<_>>());
        assert_eq!(BuyerIdKey::parse("AAECAwQFBgcICQoLDA0ODw==").unwrap(), k);
        assert_eq!(BuyerIdKey::parse("AAECAwQFBgcICQoLDA0ODw").unwrap(), k);
        assert!(
            BuyerIdKey::parse("00")
                .unwrap_err()
                .contains("16 to 64 bytes")
        );
        assert!(BuyerIdKey::parse(&"ab".repeat(65)).is_err());
        assert!(BuyerIdKey::parse("not a key!").is_err());
        assert_eq!(format!("{k:?}"), "BuyerIdKey(redacted)");
        assert_eq!(k.to_hex(), hex);
        let r = BuyerIdKey::random();
        assert_eq!(BuyerIdKey::parse(&r.to_hex()).unwrap(), r);
    }

    /// The documented recipe: `hex(HMAC-SHA256(key, id))`, as the shop
    /// computes it (RFC 4231 test case 2: key "Jefe").
    #[test]
    fn a_pseudonym_is_the_hmac_the_shop_computes() {
        let names = BuyerNames::Pseudonyms(Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap());
        assert_eq!(
            &*names.name("what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let p = names.name("buyer-1");
        assert!(is_pseudonym(&p));
        assert_eq!(names.restored(&p), p, "already a pseudonym");
        assert_eq!(
            names.restored("buyer-1"),
            p,
            "a clear name read back is converted"
        );
        assert_eq!(&*BuyerNames::Clear.name("buyer-1"), "buyer-1");
    }

    #[test]
    fn json_errors_are_logged_without_the_value() {
        let e = serde_json::from_str::<u32>("\"alice@example.com\"").unwrap_err();
        assert!(e.to_string().contains("alice"), "serde quotes it");
        assert!(!json_error_for_log(&e).contains("alice"));
    }
}
