//! Static assets embedded in the binary (no CDN, no files at run time): the
//! host dashboard (`/`, `/dashboard`), the viewer overlay (`/overlay`), the
//! embeddable buy button (`/buy-button`, the overlay in button mode), their
//! scripts and styles, and the demo catalog's product images, all under
//! `/assets/`. The pages themselves live in `gateway/assets/pages/` and are
//! described in `docs/PAGES.md`.
//!
//! This module owns what the browser is allowed to do with them: every
//! response carries its exact content type and `nosniff`, and the pages a
//! Content-Security-Policy that allows only this origin (plus websocket
//! connections, and images from the operator's `--image-origin`s), so a
//! product title or URL parameter can never run code. It must never serve
//! anything that is not in [`FILES`].

use crate::catalog::ImageOrigins;
use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// (path under `/assets/`, bytes). Content types come from the extension.
const FILES: &[(&str, &[u8])] = &[
    (
        "img/hoodie.svg",
        include_bytes!("../../assets/img/hoodie.svg"),
    ),
    ("img/tee.svg", include_bytes!("../../assets/img/tee.svg")),
    ("img/cap.svg", include_bytes!("../../assets/img/cap.svg")),
    (
        "img/runner.svg",
        include_bytes!("../../assets/img/runner.svg"),
    ),
    ("img/tote.svg", include_bytes!("../../assets/img/tote.svg")),
    (
        "img/favicon.svg",
        include_bytes!("../../assets/img/favicon.svg"),
    ),
    (
        "pages/dashboard.html",
        include_bytes!("../../assets/pages/dashboard.html"),
    ),
    (
        "pages/dashboard.css",
        include_bytes!("../../assets/pages/dashboard.css"),
    ),
    (
        "pages/dashboard.js",
        include_bytes!("../../assets/pages/dashboard.js"),
    ),
    (
        "pages/overlay.html",
        include_bytes!("../../assets/pages/overlay.html"),
    ),
    (
        "pages/overlay.css",
        include_bytes!("../../assets/pages/overlay.css"),
    ),
    (
        "pages/overlay.js",
        include_bytes!("../../assets/pages/overlay.js"),
    ),
    ("pages/buy.js", include_bytes!("../../assets/pages/buy.js")),
    (
        "pages/buy-button.html",
        include_bytes!("../../assets/pages/buy-button.html"),
    ),
    (
        "pages/live.js",
        include_bytes!("../../assets/pages/live.js"),
    ),
    (
        "pages/chart.js",
        include_bytes!("../../assets/pages/chart.js"),
    ),
    (
        "pages/format.js",
        include_bytes!("../../assets/pages/format.js"),
    ),
    (
        "pages/i18n.js",
        include_bytes!("../../assets/pages/i18n.js"),
    ),
];

/// Policy of the host dashboard: scripts, styles and fonts from this origin
/// only (no inline code, no eval), images from this origin and the
/// configured image origins (no `data:`: the pages need none), websockets
/// back to the gateway, no native form submission (a form that posted
/// without the script would put the admin token in a URL), and no framing
/// (the dashboard holds an admin token; framing it invites clickjacking).
pub fn csp_dashboard(images: &ImageOrigins) -> String {
    format!("{}; frame-ancestors 'none'", csp_overlay(images))
}

/// Policy of the overlay: the same, except that it may be framed, because
/// in-app overlays embed it in an iframe and it has no actions to hijack.
pub fn csp_overlay(images: &ImageOrigins) -> String {
    let mut img_src = String::from("'self'");
    for origin in images.as_slice() {
        img_src.push(' ');
        img_src.push_str(origin);
    }
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src {img_src}; \
         font-src 'self'; connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'"
    )
}

/// Routes of the pages and of `/assets/`; the pages' policies allow images
/// from `images`.
pub fn routes<S: Clone + Send + Sync + 'static>(images: &ImageOrigins) -> Router<S> {
    // Origins are checked by `ImageOrigins::parse` (https, host, port):
    // always a valid header value.
    let header = |csp: String| HeaderValue::from_str(&csp).expect("origins are header-safe");
    let dashboard = header(csp_dashboard(images));
    let overlay = header(csp_overlay(images));
    let buy_button = overlay.clone();
    let dashboard_page = move || {
        let csp = dashboard.clone();
        async move { page("pages/dashboard.html", csp) }
    };
    Router::new()
        .route("/", get(dashboard_page.clone()))
        .route("/dashboard", get(dashboard_page))
        .route(
            "/overlay",
            get(move || {
                let csp = overlay.clone();
                async move { page("pages/overlay.html", csp) }
            }),
        )
        .route(
            "/buy-button",
            get(move || {
                let csp = buy_button.clone();
                async move { page("pages/buy-button.html", csp) }
            }),
        )
        .route("/assets/{*path}", get(asset))
}

fn page(path: &str, csp: HeaderValue) -> Response {
    let mut response = asset_response(path);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

async fn asset(Path(path): Path<String>) -> Response {
    asset_response(&path)
}

fn asset_response(path: &str) -> Response {
    let Some((_, bytes)) = FILES.iter().find(|(p, _)| *p == path) else {
        return crate::error::ApiError::new(
            StatusCode::NOT_FOUND,
            crate::protocol::Code::NotFound,
            "no such asset",
        )
        .into_response();
    };
    // Pages and their code must follow the gateway's version at once after
    // an upgrade (an old script against a new protocol is a broken overlay
    // mid-show), so they are revalidated on every load; images may be cached.
    let cache = if path.starts_with("img/") {
        "public, max-age=3600"
    } else {
        "no-cache"
    };
    (
        [
            (header::CONTENT_TYPE, content_type(path)),
            (header::CACHE_CONTROL, cache),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        *bytes,
    )
        .into_response()
}

/// The content type of an embedded file, by extension. Module scripts are
/// refused by browsers unless served as JavaScript, and `nosniff` makes the
/// type binding, so every extension in [`FILES`] must be known here.
fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_file_has_a_known_content_type() {
        for (path, bytes) in FILES {
            assert_ne!(
                content_type(path),
                "application/octet-stream",
                "{path} has no content type"
            );
            assert!(!bytes.is_empty(), "{path} is empty");
        }
    }

    #[test]
    fn policies_allow_only_this_origin_and_the_image_origins() {
        let none = ImageOrigins::default();
        for csp in [csp_dashboard(&none), csp_overlay(&none)] {
            assert!(csp.starts_with("default-src 'none';"));
            assert!(!csp.contains("unsafe"), "{csp}");
            assert!(!csp.contains('*'), "{csp}");
            assert!(!csp.contains("http"), "{csp}");
            assert!(!csp.contains("data:"), "{csp}");
            assert!(csp.contains("img-src 'self';"), "{csp}");
        }
        assert!(csp_dashboard(&none).contains("frame-ancestors 'none'"));
        assert!(!csp_overlay(&none).contains("frame-ancestors"));
        let cdn = ImageOrigins::parse(&[
            "https://cdn.example.com".to_string(),
            "https://img.example:8443".to_string(),
        ])
        .unwrap();
        for csp in [csp_dashboard(&cdn), csp_overlay(&cdn)] {
            assert!(
                csp.contains("img-src 'self' https://cdn.example.com https://img.example:8443;"),
                "{csp}"
            );
            // Images only: scripts and connections stay with the gateway.
            assert!(csp.contains("script-src 'self';"), "{csp}");
            assert!(csp.contains("connect-src 'self' ws: wss:;"), "{csp}");
        }
    }

    #[test]
    fn pages_import_only_embedded_modules() {
        // A module that a page imports but FILES lacks is a 404 and a blank
        // overlay on stream: check every relative import resolves.
        for (path, bytes) in FILES.iter().filter(|(p, _)| p.ends_with(".js")) {
            let text = std::str::from_utf8(bytes).unwrap();
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let module = line
                    .split(['"', '\''])
                    .nth(1)
                    .unwrap_or_else(|| panic!("{path}: cannot parse {line:?}"));
                let target = format!("pages/{}", module.trim_start_matches("./"));
                assert!(
                    FILES.iter().any(|(p, _)| *p == target),
                    "{path} imports {module}, which is not embedded"
                );
            }
        }
        for (path, bytes) in FILES.iter().filter(|(p, _)| p.ends_with(".html")) {
            let text = std::str::from_utf8(bytes).unwrap();
            for reference in text.split("\"/assets/").skip(1) {
                let target = reference.split('"').next().unwrap();
                assert!(
                    FILES.iter().any(|(p, _)| *p == target),
                    "{path} references /assets/{target}, which is not embedded"
                );
            }
        }
    }
}
