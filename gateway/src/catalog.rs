//! Display data of the catalog (titles, prices, images, shows) that the
//! engine does not carry, the catalog file, and the built-in demo show.
//!
//! The engine owns stock; this module owns what viewers see about a product.
//! Shows group SKUs for the `show:<id>` topic.
//!
//! It also decides which product images the pages may load: an `image_url`
//! is a path under `/assets/` (served by the gateway) or an `https://` URL
//! on an origin the operator allowed (`--image-origin`, [`ImageOrigins`]);
//! the pages' Content-Security-Policy lists exactly the same origins. It
//! must never accept any other scheme (`javascript:`, `data:`, `http:`).

use crate::error::ApiError;
use crate::protocol::limits::{SKU_ID_BYTES_MAX, SKU_UNITS_MAX};
use crate::protocol::{Code, SaleState, SkuDef, SkuMeta, WindowReq};
use dashmap::DashMap;
use holdfast_engine::{SaleWindow, SkuIdx, SkuSettings, SkuSpec};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

/// Longest title, currency and image URL accepted (bytes).
pub use crate::protocol::limits::{IMAGE_URL_BYTES_MAX, TITLE_BYTES_MAX};
/// Most `--image-origin`s: each is spelled out in every page's CSP header.
pub const IMAGE_ORIGINS_MAX: usize = 16;
/// Same-origin images must live here (the gateway serves nothing else).
pub const IMAGE_PATH_PREFIX: &str = "/assets/";

/// The origins product images may come from besides the gateway itself:
/// `https://host[:port]`, lowercase, without a default port or a path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageOrigins(Vec<String>);

impl ImageOrigins {
    /// Parses `--image-origin` values; refuses anything that is not an
    /// https origin, so a typo cannot widen the pages' policy.
    pub fn parse(values: &[String]) -> Result<Self, String> {
        let mut origins = Vec::new();
        for v in values.iter().map(|v| v.trim()).filter(|v| !v.is_empty()) {
            let origin = v.strip_suffix('/').unwrap_or(v);
            let bare = !origin.get(8..).unwrap_or("").contains(['/', '?', '#']);
            match https_origin(origin) {
                Some(o) if bare => {
                    if !origins.contains(&o) {
                        origins.push(o);
                    }
                }
                _ => {
                    return Err(format!(
                        "--image-origin {v:?} is not an https origin like https://cdn.example.com \
                         (scheme https, a host, an optional port, no path)"
                    ));
                }
            }
        }
        if origins.len() > IMAGE_ORIGINS_MAX {
            return Err(format!(
                "at most {IMAGE_ORIGINS_MAX} --image-origin values (each is listed in every page's policy)"
            ));
        }
        Ok(Self(origins))
    }

    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    /// Checks an `image_url`: empty (no image), a path under `/assets/`,
    /// or an https URL on one of these origins.
    pub fn check(&self, url: &str) -> Result<(), ApiError> {
        let allowed = || {
            if self.0.is_empty() {
                "a path under /assets/ (no https origin is allowed: the operator can add \
                 one with --image-origin)"
                    .to_string()
            } else {
                format!(
                    "a path under /assets/ or an https:// URL on {}",
                    self.0.join(", ")
                )
            }
        };
        let refuse = |why: &str| {
            ApiError::new(
                axum::http::StatusCode::BAD_REQUEST,
                Code::InvalidImageUrl,
                format!("image_url {why}: it must be {}", allowed()),
            )
        };
        if url.is_empty() {
            return Ok(());
        }
        if url.len() > IMAGE_URL_BYTES_MAX {
            return Err(refuse(&format!(
                "is longer than {IMAGE_URL_BYTES_MAX} bytes"
            )));
        }
        if url
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '\\')
        {
            return Err(refuse("contains spaces, control characters or backslashes"));
        }
        if url.starts_with(IMAGE_PATH_PREFIX) {
            return Ok(());
        }
        match https_origin(url) {
            Some(origin) if self.0.contains(&origin) => Ok(()),
            Some(origin) => Err(refuse(&format!("is on {origin}, which is not allowed"))),
            None => Err(refuse("is neither a gateway path nor an https URL")),
        }
    }
}

/// The origin of an `https://` URL (lowercase, default port dropped), or
/// `None` if it is not one. User info (`https://cdn@evil/`) and IP-v6
/// literals are refused rather than parsed: a host name or IPv4 address is
/// all a CDN needs, and anything cleverer is where origin checks go wrong.
fn https_origin(url: &str) -> Option<String> {
    if !url.get(..8)?.eq_ignore_ascii_case("https://") {
        return None;
    }
    let rest = &url[8..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let (host, port) = match authority.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (authority, None),
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'));
    let port_ok =
        port.is_none_or(|p| (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()));
    if !host_ok || !port_ok {
        return None;
    }
    let host = host.to_ascii_lowercase();
    Some(match port {
        Some(p) if p != "443" => format!("https://{host}:{p}"),
        _ => format!("https://{host}"),
    })
}

/// Titles, prices and shows by SKU.
#[derive(Debug, Default)]
pub struct Meta {
    /// Where product images may come from.
    images: ImageOrigins,
    by_sku: DashMap<SkuIdx, Arc<SkuMeta>>,
    /// Show id -> its SKUs in creation order. Read on every subscribe and
    /// broadcast, written only by admin actions: an RwLock fits.
    shows: RwLock<Vec<(String, Vec<SkuIdx>)>>,
    /// SKUs whose display data changed since the hub last looked, so a
    /// PATCH reaches subscribers within one broadcast interval. A set: a
    /// host editing one product many times between rounds is one entry;
    /// bounded by the catalog.
    changed: Mutex<BTreeSet<SkuIdx>>,
}

impl Meta {
    /// Display data whose images may come from `images` (besides the
    /// gateway's own `/assets/`).
    pub fn new(images: ImageOrigins) -> Self {
        Self {
            images,
            ..Self::default()
        }
    }

    pub fn images(&self) -> &ImageOrigins {
        &self.images
    }

    pub fn get(&self, sku: SkuIdx) -> Option<Arc<SkuMeta>> {
        self.by_sku.get(&sku).map(|m| m.clone())
    }

    pub fn set(&self, sku: SkuIdx, meta: SkuMeta) {
        if let Some(show) = &meta.show {
            let mut shows = self.shows.write().expect("shows lock");
            match shows.iter_mut().find(|(id, _)| id == show) {
                Some((_, skus)) if !skus.contains(&sku) => skus.push(sku),
                Some(_) => {}
                None => shows.push((show.clone(), vec![sku])),
            }
        }
        self.by_sku.insert(sku, Arc::new(meta));
        self.changed.lock().expect("changed lock").insert(sku);
    }

    /// Moves the SKUs whose display data changed since the last call into
    /// `out`.
    pub fn take_changed(&self, out: &mut Vec<SkuIdx>) {
        out.extend(std::mem::take(
            &mut *self.changed.lock().expect("changed lock"),
        ));
    }

    /// The SKUs of a show, if it exists.
    pub fn show(&self, show: &str) -> Option<Vec<SkuIdx>> {
        let shows = self.shows.read().expect("shows lock");
        shows
            .iter()
            .find(|(id, _)| id == show)
            .map(|(_, skus)| skus.clone())
    }

    /// Every show id.
    pub fn shows(&self) -> Vec<String> {
        self.shows
            .read()
            .expect("shows lock")
            .iter()
            .map(|(id, _)| id.clone())
            .collect()
    }
}

/// Parses a sale window from its wire form.
pub fn parse_window(w: &WindowReq) -> Result<SaleWindow, ApiError> {
    match (w.state, w.opens_at_ms) {
        (SaleState::Open, _) => Ok(SaleWindow::Open),
        (SaleState::Paused, _) => Ok(SaleWindow::Paused),
        (SaleState::Closed, _) => Ok(SaleWindow::Closed),
        (SaleState::Scheduled, Some(at)) => Ok(SaleWindow::Scheduled { opens_at_ms: at }),
        (SaleState::Scheduled, None) => Err(field_error(
            Code::InvalidWindow,
            "window: a scheduled window needs opens_at_ms",
        )),
    }
}

/// A 400 whose code names the field at fault.
pub fn field_error(code: Code, message: impl Into<std::borrow::Cow<'static, str>>) -> ApiError {
    ApiError::new(axum::http::StatusCode::BAD_REQUEST, code, message)
}

/// Checks a SKU id (and a show id, which follows the same rule).
pub fn check_sku_id(id: &str, code: Code, field: &str) -> Result<(), ApiError> {
    if holdfast_engine::is_valid_sku_id(id) {
        return Ok(());
    }
    Err(field_error(
        code,
        format!("{field} must be 1 to {SKU_ID_BYTES_MAX} of A-Z a-z 0-9 . _ -"),
    ))
}

/// Checks a SKU's settings, naming the field at fault (the engine only
/// says whether they are valid as a whole).
pub fn check_settings(s: &SkuSettings) -> Result<(), ApiError> {
    const LIFETIME_MAX_MS: u64 = 7 * 24 * 3600 * 1000;
    if s.hold_ttl_ms == 0 {
        return Err(field_error(
            Code::InvalidHoldTtl,
            "hold_ttl_ms must be at least 1",
        ));
    }
    if s.hold_lifetime_max_ms > LIFETIME_MAX_MS {
        return Err(field_error(
            Code::InvalidHoldLifetime,
            format!("hold_lifetime_max_ms must be at most {LIFETIME_MAX_MS} (a week)"),
        ));
    }
    if s.hold_ttl_ms > s.hold_lifetime_max_ms {
        return Err(field_error(
            Code::InvalidHoldTtl,
            format!(
                "hold_ttl_ms ({}) must not be above hold_lifetime_max_ms ({})",
                s.hold_ttl_ms, s.hold_lifetime_max_ms
            ),
        ));
    }
    if s.order_units_max == 0 || s.order_units_max > SKU_UNITS_MAX {
        return Err(field_error(
            Code::InvalidOrderUnitsMax,
            format!("order_units_max must be 1 to {SKU_UNITS_MAX}"),
        ));
    }
    if s.buyer_limit > SKU_UNITS_MAX {
        return Err(field_error(
            Code::InvalidBuyerLimit,
            format!("buyer_limit must be 0 (none) to {SKU_UNITS_MAX}"),
        ));
    }
    Ok(())
}

/// Checks a total: at most what one SKU can hold.
pub fn check_total(total: u32) -> Result<(), ApiError> {
    if total > SKU_UNITS_MAX {
        return Err(ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            Code::TotalAboveMax,
            format!("total: a sku holds at most {SKU_UNITS_MAX} units"),
        ));
    }
    Ok(())
}

/// Checks display fields (images against `images`).
pub fn check_meta(meta: &SkuMeta, images: &ImageOrigins) -> Result<(), ApiError> {
    if meta.title.len() > TITLE_BYTES_MAX {
        return Err(field_error(
            Code::InvalidTitle,
            format!("title longer than {TITLE_BYTES_MAX} bytes"),
        ));
    }
    if meta.currency.len() != 3 || !meta.currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(field_error(
            Code::InvalidCurrency,
            "currency must be an ISO 4217 code like NOK",
        ));
    }
    images.check(&meta.image_url)?;
    if let Some(show) = &meta.show {
        check_sku_id(show, Code::InvalidShow, "show")?;
    }
    Ok(())
}

/// Turns a SKU definition into the engine's spec and the display data.
pub fn def_to_spec(def: &SkuDef, images: &ImageOrigins) -> Result<(SkuSpec, SkuMeta), ApiError> {
    // The id first: an empty title defaults to it, and a bad id must not
    // be reported as a bad title.
    check_sku_id(&def.id, Code::InvalidSkuId, "id")?;
    check_total(def.total)?;
    let defaults = SkuSettings::default();
    let settings = SkuSettings {
        buyer_limit: def.buyer_limit,
        hold_ttl_ms: def.hold_ttl_ms.unwrap_or(defaults.hold_ttl_ms),
        hold_lifetime_max_ms: def.hold_lifetime_max_ms.unwrap_or(
            defaults
                .hold_lifetime_max_ms
                .max(def.hold_ttl_ms.unwrap_or(0)),
        ),
        order_units_max: def.order_units_max.unwrap_or(defaults.order_units_max),
    };
    let window = match &def.window {
        Some(w) => parse_window(w)?,
        None => SaleWindow::Open,
    };
    let meta = SkuMeta {
        title: if def.title.is_empty() {
            def.id.clone()
        } else {
            def.title.clone()
        },
        price_minor: def.price_minor,
        currency: def.currency.clone().unwrap_or_else(|| "NOK".into()),
        image_url: def.image_url.clone(),
        show: def.show.clone(),
    };
    check_meta(&meta, images)?;
    check_settings(&settings)?;
    Ok((
        SkuSpec {
            total: def.total,
            settings,
            window,
        },
        meta,
    ))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    skus: Vec<SkuDef>,
}

/// Reads a catalog file: TOML (`[[skus]]` tables) or JSON (`{"skus":[...]}`)
/// by extension. Errors name the file and, for TOML, the line.
pub fn load_file(path: &Path) -> anyhow::Result<Vec<SkuDef>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read catalog {}: {e}", path.display()))?;
    let parsed: CatalogFile = match path.extension().and_then(|e| e.to_str()) {
        Some("json") => serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("catalog {}: {e}", path.display()))?,
        _ => {
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("catalog {}: {e}", path.display()))?
        }
    };
    Ok(parsed.skus)
}

/// The built-in demo show: a Friday-night drop of five products.
pub fn demo() -> Vec<SkuDef> {
    let sku =
        |id: &str, title: &str, price_minor: u64, image: &str, total: u32, buyer_limit: u32| {
            SkuDef {
                id: id.into(),
                title: title.into(),
                price_minor,
                currency: Some("NOK".into()),
                image_url: format!("/assets/img/{image}.svg"),
                show: Some("demo".into()),
                total,
                buyer_limit,
                hold_ttl_ms: Some(5 * 60 * 1000),
                hold_lifetime_max_ms: Some(15 * 60 * 1000),
                order_units_max: Some(10),
                window: None,
                channels: Vec::new(),
            }
        };
    vec![
        sku("hoodie-sand", "Hoodie, sand", 59_900, "hoodie", 40, 2),
        sku("tee-black-m", "Tee, black, M", 24_900, "tee", 120, 4),
        sku("cap-olive", "Cap, olive", 19_900, "cap", 200, 0),
        sku("runner-42", "Runner 42, limited", 149_900, "runner", 12, 1),
        sku("tote-canvas", "Canvas tote", 9_900, "tote", 500, 0),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_is_valid() {
        for def in demo() {
            def_to_spec(&def, &ImageOrigins::default()).unwrap();
        }
    }

    #[test]
    fn image_origins_parse_only_https_origins() {
        let parse =
            |v: &[&str]| ImageOrigins::parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            parse(&[
                "https://CDN.example.com/",
                " https://img.example:8443",
                "https://cdn.example.com:443"
            ])
            .unwrap()
            .as_slice(),
            ["https://cdn.example.com", "https://img.example:8443"]
        );
        for bad in [
            "http://cdn.example.com",
            "https://cdn.example.com/images",
            "https://user@cdn.example.com",
            "cdn.example.com",
            "https://",
            "https://cdn.example.com:x",
            "*",
        ] {
            let e = parse(&[bad]).unwrap_err();
            assert!(e.contains("--image-origin"), "{bad}: {e}");
        }
        let many: Vec<String> = (0..=IMAGE_ORIGINS_MAX)
            .map(|i| format!("https://c{i}.example"))
            .collect();
        assert!(ImageOrigins::parse(&many).is_err(), "bounded");
    }

    #[test]
    fn image_urls_are_gateway_paths_or_allowed_https() {
        let none = ImageOrigins::default();
        let cdn = ImageOrigins::parse(&["https://cdn.example.com".to_string()]).unwrap();
        for ok in ["", "/assets/img/tee.svg"] {
            none.check(ok).unwrap();
            cdn.check(ok).unwrap();
        }
        for ok in [
            "https://cdn.example.com/p/1.jpg",
            "HTTPS://cdn.EXAMPLE.com:443/p.png?w=80#x",
        ] {
            cdn.check(ok).unwrap();
            let e = none.check(ok).unwrap_err();
            assert!(e.message.contains("--image-origin"), "{}", e.message);
        }
        for bad in [
            "javascript:alert(1)",
            "JavaScript:alert(1)",
            "data:image/svg+xml,<svg onload=alert(1)>",
            "http://cdn.example.com/p.jpg",
            "https://evil.example/p.jpg",
            "https://cdn.example.com@evil.example/p.jpg",
            "https://cdn.example.com.evil.example/p.jpg",
            "//cdn.example.com/p.jpg",
            "/api/skus",
            "/assets/img/a b.svg",
            "/assets/img/a\\b.svg",
        ] {
            let e = cdn.check(bad).unwrap_err();
            assert_eq!(e.code, Code::InvalidImageUrl, "{bad}");
            assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
            assert!(
                e.message.contains("https://cdn.example.com"),
                "{bad}: {}",
                e.message
            );
        }
        let long = format!("/assets/{}", "a".repeat(IMAGE_URL_BYTES_MAX));
        assert!(cdn.check(&long).unwrap_err().message.contains("longer"));
    }

    #[test]
    fn windows_parse_or_say_why_not() {
        let w = |state, at| WindowReq {
            state,
            opens_at_ms: at,
        };
        assert_eq!(
            parse_window(&w(SaleState::Open, None)).unwrap(),
            SaleWindow::Open
        );
        assert_eq!(
            parse_window(&w(SaleState::Scheduled, Some(5))).unwrap(),
            SaleWindow::Scheduled { opens_at_ms: 5 }
        );
        assert_eq!(
            parse_window(&w(SaleState::Scheduled, None))
                .unwrap_err()
                .code,
            Code::InvalidWindow
        );
        assert!(serde_json::from_str::<WindowReq>(r#"{"state":"later"}"#).is_err());
    }

    #[test]
    fn catalog_files_parse_and_errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("c.toml");
        std::fs::write(&good, "[[skus]]\nid = \"a\"\ntotal = 3\n\n[[skus]]\nid = \"b\"\ntotal = 1\nwindow = { state = \"paused\" }\n").unwrap();
        assert_eq!(load_file(&good).unwrap().len(), 2);
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "[[skus]]\nid = \"a\"\ntotal = \"three\"\n").unwrap();
        let err = load_file(&bad).unwrap_err().to_string();
        assert!(err.contains("line 3"), "{err}");
        let json = dir.path().join("c.json");
        std::fs::write(&json, r#"{"skus":[{"id":"a","total":1,"colour":"red"}]}"#).unwrap();
        assert!(load_file(&json).unwrap_err().to_string().contains("colour"));
    }
}
