//! CORS for the HTTP API: a shop page on another origin may call it when
//! its origin is on the `--cors-origin` allow-list. Tokens travel in the
//! `Authorization` header, never in cookies, so credentials are not
//! allowed; the websocket does not check `Origin` at all, deliberately
//! (a viewer needs no token, and OBS browser sources send `Origin: null`),
//! which is safe for the same reason: no ambient credentials exist.

use axum::http::{HeaderValue, Method, header};
use std::time::Duration;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// How long a browser may cache a preflight answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// Checks one allow-list entry: `scheme://host[:port]`, nothing else.
pub fn parse_origin(origin: &str) -> Result<HeaderValue, String> {
    let bad = || {
        format!(
            "--cors-origin {origin:?} is not an origin: give scheme://host[:port], e.g. https://shop.example"
        )
    };
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .ok_or_else(bad)?;
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', '*', ' ']) {
        return Err(bad());
    }
    HeaderValue::from_str(origin).map_err(|_| bad())
}

/// The CORS layer for the allow-list, or `None` when it is empty (no
/// CORS headers at all, and `OPTIONS` stays 405).
pub fn layer(origins: &[String]) -> Result<Option<CorsLayer>, String> {
    if origins.is_empty() {
        return Ok(None);
    }
    let list = origins
        .iter()
        .map(|o| parse_origin(o))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(list))
            .allow_methods([Method::GET, Method::POST, Method::PATCH])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .expose_headers([header::RETRY_AFTER])
            .max_age(PREFLIGHT_MAX_AGE),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_checked() {
        assert!(parse_origin("https://shop.example").is_ok());
        assert!(parse_origin("http://localhost:3000").is_ok());
        for bad in [
            "shop.example",
            "https://",
            "https://shop.example/",
            "https://*.example",
            "ftp://x",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
    }
}
