//! The server side of the Buy button (the overlay's `?buy=1` and the
//! embeddable `/buy-button`): which origins may hand a page a buyer token
//! by `postMessage`, and the signed hand-off to the shop's checkout.
//!
//! `GET /api/pages/config` tells a page the embedding origins it may accept a
//! token from, whether a checkout hand-off exists and whether webhooks run. `POST
//! /api/holds/{hold}/checkout` (the buyer's own hold, or the checkout
//! token) fills `--checkout-url-template` with the hold and an HMAC the
//! shop verifies; the key never leaves the gateway, so a page cannot forge
//! a hand-off for another hold, SKU, quantity or deadline. The scheme is
//! documented in docs/INTEGRATION.md and must not change without it.

use super::{AppState, Shopper};
use crate::config::BuyArgs;
use crate::error::ApiError;
use crate::protocol::Code;
use crate::protocol::{HoldLineView, HoldStatus};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use hmac::{Hmac, KeyInit, Mac};
use holdfast_engine::HoldError;
use serde_json::json;
use sha2::Sha256;

/// Shortest checkout signing key: an HMAC-SHA256 key below the hash's
/// size weakens it.
const CHECKOUT_KEY_BYTES_MIN: usize = 32;
/// Longest template: a URL, not a document.
const TEMPLATE_BYTES_MAX: usize = 2048;
/// Most `--embed-origin`s: a handful of shop domains.
const EMBED_ORIGINS_MAX: usize = 32;

/// The checkout hand-off and the embedding origins, checked at start.
#[derive(Debug, Clone, Default)]
pub struct Checkout {
    template: Option<String>,
    key: Vec<u8>,
    embed_origins: Vec<String>,
}

impl Checkout {
    pub fn from_args(args: &BuyArgs) -> Result<Self, String> {
        let key = args.checkout_url_key.clone().unwrap_or_default();
        if let Some(t) = &args.checkout_url_template {
            if t.len() > TEMPLATE_BYTES_MAX {
                return Err(format!(
                    "--checkout-url-template is longer than {TEMPLATE_BYTES_MAX} bytes"
                ));
            }
            if !t.contains("{hold}") || !t.contains("{sig}") {
                return Err("--checkout-url-template must contain {hold} and {sig}".into());
            }
            if !secure_or_loopback(t) {
                return Err(
                    "--checkout-url-template must be https (or http to a loopback host)".into(),
                );
            }
            if key.len() < CHECKOUT_KEY_BYTES_MIN {
                return Err(format!(
                    "--checkout-url-key must be at least {CHECKOUT_KEY_BYTES_MIN} bytes \
                     with --checkout-url-template"
                ));
            }
        }
        if args.embed_origins.len() > EMBED_ORIGINS_MAX {
            return Err(format!("at most {EMBED_ORIGINS_MAX} --embed-origin values"));
        }
        for o in &args.embed_origins {
            if !is_origin(o) {
                return Err(format!(
                    "--embed-origin {o:?} is not an origin (https://host[:port], \
                     or http to a loopback host)"
                ));
            }
        }
        Ok(Self {
            template: args.checkout_url_template.clone(),
            key: key.into_bytes(),
            embed_origins: args.embed_origins.clone(),
        })
    }

    /// `hex(HMAC-SHA256(key, "{hold}.{skus}.{qtys}.{deadline_ms}"))`.
    pub fn sign(&self, hold: &str, skus: &str, qtys: &str, deadline_ms: u64) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(format!("{hold}.{skus}.{qtys}.{deadline_ms}").as_bytes());
        crate::ids::hex(&mac.finalize().into_bytes())
    }
}

fn secure_or_loopback(url: &str) -> bool {
    if url.starts_with("https://") {
        return true;
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    matches!(host, "localhost" | "127.0.0.1" | "[::1]")
}

/// `scheme://host[:port]` with nothing after it, as `MessageEvent.origin`
/// reads.
fn is_origin(o: &str) -> bool {
    let host = o
        .strip_prefix("https://")
        .or_else(|| o.strip_prefix("http://"))
        .unwrap_or("");
    !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
        && secure_or_loopback(o)
}

/// The Buy button's routes, merged into the API router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/pages/config", get(config))
        .route("/api/holds/{hold}/checkout", post(checkout))
}

/// What the pages need to know before they ask anything that might not
/// exist (a 404 would be an error in the browser's console).
async fn config(State(s): State<AppState>) -> impl IntoResponse {
    Json(json!({
        "embed_origins": s.buy.embed_origins,
        "checkout": s.buy.template.is_some(),
        "webhooks": s.webhooks.is_some(),
    }))
}

async fn checkout(
    State(s): State<AppState>,
    buyer: Shopper,
    Path(hold): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    buyer.may_touch(&s, &hold)?;
    let Some(template) = &s.buy.template else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            Code::NotFound,
            "no checkout hand-off: the gateway runs without --checkout-url-template",
        ));
    };
    let view = s.ops.hold(&hold).await?;
    match view.state {
        HoldStatus::Held => {}
        HoldStatus::Committed => return Err(HoldError::AlreadyCommitted.into()),
        HoldStatus::Released => return Err(HoldError::AlreadyReleased.into()),
        HoldStatus::Expired => return Err(HoldError::HoldExpired.into()),
    }
    // SKU ids are `[A-Za-z0-9._-]` and the rest are digits and hex: every
    // value is URL-safe as it is, so the URL carries exactly what was signed.
    let join = |f: &dyn Fn(&HoldLineView) -> String| {
        view.lines.iter().map(f).collect::<Vec<_>>().join(",")
    };
    let skus = join(&|l| l.sku.clone());
    let qtys = join(&|l| l.qty.to_string());
    let sig = s.buy.sign(&view.hold, &skus, &qtys, view.deadline_ms);
    let url = template
        .replace("{hold}", &view.hold)
        .replace("{sku}", &skus)
        .replace("{qty}", &qtys)
        .replace("{deadline_ms}", &view.deadline_ms.to_string())
        .replace("{sig}", &sig);
    Ok(Json(json!({
        "hold": view.hold,
        "url": url,
        "deadline_ms": view.deadline_ms,
        "sig": sig,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(template: Option<&str>, key: Option<&str>, origins: &[&str]) -> BuyArgs {
        BuyArgs {
            checkout_url_template: template.map(str::to_string),
            checkout_url_key: key.map(str::to_string),
            embed_origins: origins.iter().map(|o| o.to_string()).collect(),
        }
    }

    const KEY: &str = "checkout-key-0123456789abcdef-0123456789";

    #[test]
    fn bad_configuration_is_refused_with_the_flag_named() {
        let t = "https://shop.example/c?h={hold}&s={sig}";
        assert!(Checkout::from_args(&args(Some(t), Some(KEY), &[])).is_ok());
        for (template, key, origins, flag) in [
            (Some(t), None, &[][..], "--checkout-url-key"),
            (Some(t), Some("short"), &[], "--checkout-url-key"),
            (Some("https://shop.example/c"), Some(KEY), &[], "{sig}"),
            (
                Some("http://shop.example/{hold}{sig}"),
                Some(KEY),
                &[],
                "https",
            ),
            (None, None, &["https://shop.example/path"], "--embed-origin"),
            (None, None, &["http://shop.example"], "--embed-origin"),
            (None, None, &["javascript:alert(1)"], "--embed-origin"),
        ] {
            let e = Checkout::from_args(&args(template, key, origins)).unwrap_err();
            assert!(e.contains(flag), "{e}");
        }
        let ok = [
            "https://shop.example",
            "http://127.0.0.1:8080",
            "http://localhost:3000",
        ];
        assert!(Checkout::from_args(&args(None, None, &ok)).is_ok());
    }

    #[test]
    fn the_signature_covers_every_field() {
        let c = Checkout::from_args(&args(
            Some("https://s.example/{hold}/{sig}"),
            Some(KEY),
            &[],
        ))
        .unwrap();
        let base = c.sign("0040000001000002", "tee", "1", 1000);
        assert_eq!(base.len(), 64);
        assert_eq!(base, c.sign("0040000001000002", "tee", "1", 1000));
        for other in [
            c.sign("0040000001000003", "tee", "1", 1000),
            c.sign("0040000001000002", "cap", "1", 1000),
            c.sign("0040000001000002", "tee", "2", 1000),
            c.sign("0040000001000002", "tee", "1", 1001),
        ] {
            assert_ne!(base, other);
        }
    }
}
