//! Standard Webhooks signatures: `webhook-signature: v1,<base64 of
//! HMAC-SHA256 over "<webhook-id>.<webhook-timestamp>.<body>">`, keyed by
//! the endpoint's secret, written `whsec_<base64 of the key>`.
//!
//! The receiver recomputes the signature over the exact bytes it received
//! and compares in constant time; it rejects timestamps far from its clock
//! (replays) and dedupes by `webhook-id` (a replay of an event keeps it).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The prefix of a Standard Webhooks secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// Key bytes of a generated secret (the spec asks for 24 to 64).
pub const SECRET_BYTES: usize = 32;
/// Shortest key accepted in a configured secret.
pub const SECRET_BYTES_MIN: usize = 24;
/// Longest key accepted.
pub const SECRET_BYTES_MAX: usize = 64;

/// An endpoint's signing key.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// A fresh random secret.
    pub fn generate() -> Self {
        let mut key = vec![0u8; SECRET_BYTES];
        getrandom::fill(&mut key).expect("the OS random source works");
        Self(key)
    }

    /// Parses `whsec_<base64>`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let b64 = text
            .strip_prefix(SECRET_PREFIX)
            .ok_or("a webhook secret starts with whsec_")?;
        let key = STANDARD
            .decode(b64)
            .map_err(|_| "a webhook secret is whsec_ and base64")?;
        if !(SECRET_BYTES_MIN..=SECRET_BYTES_MAX).contains(&key.len()) {
            return Err(format!(
                "a webhook secret's key is {SECRET_BYTES_MIN} to {SECRET_BYTES_MAX} bytes"
            ));
        }
        Ok(Self(key))
    }

    /// The `whsec_<base64>` form (shown once, when an endpoint is created).
    pub fn reveal(&self) -> String {
        format!("{SECRET_PREFIX}{}", STANDARD.encode(&self.0))
    }

    /// The `webhook-signature` value for one message.
    pub fn sign(&self, id: &str, timestamp_s: u64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp_s.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification, checked here
    /// with `openssl dgst -sha256 -mac HMAC` as well.
    #[test]
    fn signs_the_spec_example() {
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            secret.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert_eq!(secret.reveal(), "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        assert!(Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(Secret::parse("whsec_c2hvcnQ=").is_err(), "too short");
        let g = Secret::generate();
        assert_eq!(Secret::parse(&g.reveal()).unwrap(), g);
    }
}
