//! Client-chosen buyer ids and request ids, hashed into the engine's 64-bit
//! ids with a keyed SipHash, so nobody outside can craft two ids that
//! collide (and share a buyer limit or a remembered answer).
//!
//! The key is persisted with the journal (ids must hash the same after a
//! restart, or buyer limits would reset); in memory it is random per start.
//! Buyer names are kept (bounded) for the order stream: as pseudonyms
//! unless the operator chose otherwise ([`crate::privacy`]); the id as
//! given is never stored.

use crate::error::ApiError;
use crate::privacy::BuyerNames;
use crate::protocol::Code;
use dashmap::DashMap;
use holdfast_engine::{BuyerId, RequestId};
use siphasher::sip::SipHasher13;
use std::hash::Hasher;
use std::sync::Arc;

/// Longest buyer id and request id accepted, in bytes.
pub use crate::protocol::limits::ID_BYTES_MAX;

#[derive(Debug)]
pub struct Ids {
    key: (u64, u64),
    names: DashMap<u64, Arc<str>>,
    names_max: usize,
    stored: BuyerNames,
}

impl Ids {
    pub fn new(key: (u64, u64), names_max: usize, stored: BuyerNames) -> Self {
        Self {
            key,
            names: DashMap::new(),
            names_max,
            stored,
        }
    }

    /// A fresh random key.
    pub fn random_key() -> (u64, u64) {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).expect("the OS random source works");
        let (a, b) = bytes.split_at(8);
        (
            u64::from_le_bytes(a.try_into().expect("8 bytes")),
            u64::from_le_bytes(b.try_into().expect("8 bytes")),
        )
    }

    pub fn key(&self) -> (u64, u64) {
        self.key
    }

    fn hash(&self, domain: u8, text: &str) -> u64 {
        keyed_hash(self.key, domain, text)
    }

    fn check(code: Code, what: &str, text: &str) -> Result<(), ApiError> {
        if text.is_empty() || text.len() > ID_BYTES_MAX || text.chars().any(char::is_control) {
            return Err(crate::catalog::field_error(
                code,
                format!("{what} must be 1-{ID_BYTES_MAX} bytes without control characters"),
            ));
        }
        Ok(())
    }

    /// The engine id of a buyer, remembering its stored name (a
    /// pseudonym unless buyer ids are kept in the clear).
    pub fn buyer(&self, name: &str) -> Result<BuyerId, ApiError> {
        Self::check(Code::InvalidBuyer, "buyer", name)?;
        let id = self.hash(b'b', name);
        if !self.names.contains_key(&id) {
            if self.names.len() >= self.names_max {
                return Err(ApiError::capacity("too many distinct buyers"));
            }
            self.names.insert(id, self.stored.name(name));
        }
        Ok(BuyerId(id))
    }

    /// The engine id and stored name of a buyer id, remembering nothing
    /// (erasure).
    pub fn buyer_lookup(&self, name: &str) -> Result<(BuyerId, Arc<str>), ApiError> {
        Self::check(Code::InvalidBuyer, "buyer", name)?;
        Ok((BuyerId(self.hash(b'b', name)), self.stored.name(name)))
    }

    /// Forgets a buyer's stored name (erasure). Returns whether it was known.
    pub fn forget_buyer(&self, id: BuyerId) -> bool {
        self.names.remove(&id.0).is_some()
    }

    /// The name a buyer id was made from, if known.
    pub fn buyer_name(&self, id: BuyerId) -> Option<Arc<str>> {
        self.names.get(&id.0).map(|n| n.clone())
    }

    /// Learns a buyer name read back from Redis (recovery), converted to
    /// what this mode stores.
    pub fn remember_buyer(&self, id: BuyerId, name: &str) {
        self.names.insert(id.0, self.stored.restored(name));
    }

    pub fn request(&self, request: Option<&str>) -> Result<Option<RequestId>, ApiError> {
        match request {
            None => Ok(None),
            Some(r) => {
                Self::check(Code::InvalidRequestId, "request_id", r)?;
                Ok(Some(RequestId(self.hash(b'r', r))))
            }
        }
    }
}

/// The keyed SipHash of `text` in `domain` (`b` buyers, `r` requests).
fn keyed_hash(key: (u64, u64), domain: u8, text: &str) -> u64 {
    let mut h = SipHasher13::new_with_keys(key.0, key.1);
    h.write_u8(domain);
    h.write(text.as_bytes());
    h.finish()
}

/// The engine id buyer `name` has under another journal's hash `key`: in
/// a multi-node deployment each node keeps its own key (its journal
/// record's `hash_key`), so one buyer has a different id on each node, and
/// an erasure sent to one node finds the others' this way.
pub fn buyer_id_under(key: (u64, u64), name: &str) -> BuyerId {
    BuyerId(keyed_hash(key, b'b', name))
}

/// `bytes` in lower-case hex (one allocation, not one per byte: digests
/// are written on the reservation path).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_writes_what_padded_hex_formatting_writes() {
        let bytes = [0u8, 1, 0x0f, 0x10, 0xab, 0xff];
        let want: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex(&bytes), want);
    }

    #[test]
    fn ids_are_keyed_checked_and_bounded() {
        let a = Ids::new((1, 2), 2, BuyerNames::Clear);
        let b = Ids::new((3, 4), 2, BuyerNames::Clear);
        assert_ne!(
            a.buyer("x").unwrap(),
            b.buyer("x").unwrap(),
            "the key matters"
        );
        assert_eq!(a.buyer("x").unwrap(), a.buyer("x").unwrap());
        assert_eq!(buyer_id_under((3, 4), "x"), b.buyer("x").unwrap());
        assert_eq!(a.buyer_name(a.buyer("x").unwrap()).as_deref(), Some("x"));
        assert_ne!(
            a.request(Some("x")).unwrap().unwrap().0,
            a.buyer("x").unwrap().0,
            "domains differ"
        );
        assert_eq!(a.buyer("").unwrap_err().code, Code::InvalidBuyer);
        assert_eq!(
            a.buyer(&"x".repeat(129)).unwrap_err().code,
            Code::InvalidBuyer
        );
        assert_eq!(a.buyer("a\nb").unwrap_err().code, Code::InvalidBuyer);
        a.buyer("y").unwrap();
        assert_eq!(a.buyer("z").unwrap_err().code, Code::Capacity);
        assert!(a.buyer("y").is_ok(), "known buyers still work when full");
    }
}
