//! The host dashboard and the viewer overlay in a real browser: headless
//! Chromium driven over the DevTools protocol (`pages/cdp.rs`) against an
//! in-process gateway, over real HTTP and websockets; and the server side
//! the pages stand on (policies, image URLs, stock events, pushed display
//! data, show statistics).
//!
//! Nothing here sleeps to let time pass: every wait polls the DOM (or reads
//! frames) for the expected state with a generous deadline; time-based
//! behaviour runs on short per-SKU hold TTLs and drops a few seconds ahead.
//! Without `chromium` on the PATH the browser tests skip loudly, except in
//! CI (`CI=true`), where they fail. `HOLDFAST_SCREENSHOTS=1` makes
//! `screenshots_at_desktop_and_phone_widths` refresh the pictures in
//! `docs/img/`.
//!
//! # Layout
//!
//! - `pages/cdp.rs`: the DevTools client.
//! - `pages/server.rs`: HTTP and websocket behaviour the pages rely on.
//! - `pages/overlay.rs`, `pages/dashboard.rs`: each page as its users live it.
//! - `pages/buy.rs`: the overlay's Buy button, from token to outcome.
//! - `pages/webhooks.rs`: the dashboard's webhooks panel and replays
//!   against a real receiver.
//! - `pages/channels.rs`: the dashboard's per-channel columns.
//! - `pages/a11y.rs`: axe-core in both themes, touch targets, focus, skip
//!   link, layout shift.
//! - `pages/screenshots.rs`: the pictures of `docs/PAGES.md`.

#[path = "pages/a11y.rs"]
mod a11y;
#[path = "pages/buy.rs"]
mod buy;
#[path = "pages/cdp.rs"]
mod cdp;
#[path = "pages/channels.rs"]
mod channels;
mod common;
#[path = "pages/dashboard.rs"]
mod dashboard;
#[path = "pages/overlay.rs"]
mod overlay;
#[path = "pages/screenshots.rs"]
mod screenshots;
#[path = "pages/server.rs"]
mod server;
#[path = "pages/webhooks.rs"]
mod webhooks;

use cdp::{Browser, Page};
use common::*;
use holdfast_gateway::config::ServeArgs;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU64, Ordering};

static REQUEST: AtomicU64 = AtomicU64::new(1);

/// Reserves through the HTTP API and returns the hold id.
pub async fn reserve(gw: &Gateway, sku: &str, qty: u32) -> String {
    reserve_with(gw, json!({"sku": sku, "qty": qty})).await
}

/// Reserves `body` (a fresh buyer added) and returns the hold id.
pub async fn reserve_with(gw: &Gateway, mut body: Value) -> String {
    let n = REQUEST.fetch_add(1, Ordering::Relaxed);
    body["buyer"] = json!(format!("buyer-{n}"));
    let (status, body) = gw
        .call("POST", "/api/reservations", Some(CHECKOUT), Some(body))
        .await;
    assert_eq!(status, 201, "{body}");
    body["hold"].as_str().unwrap().to_owned()
}

pub async fn hold_action(gw: &Gateway, hold: &str, action: &str) {
    let (status, body) = gw
        .call(
            "POST",
            &format!("/api/holds/{hold}/{action}"),
            Some(CHECKOUT),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200, "{action}: {body}");
}

/// Reserves `qty` and commits it.
pub async fn sell(gw: &Gateway, sku: &str, qty: u32) {
    let h = reserve(gw, sku, qty).await;
    hold_action(gw, &h, "commit").await;
}

pub async fn admin(gw: &Gateway, method: &str, path: &str, body: Value) -> Value {
    let (status, answer) = gw.call(method, path, Some(ADMIN), Some(body)).await;
    assert!(status < 300, "{method} {path}: {status} {answer}");
    answer
}

/// Stops `gw` and starts a gateway with `args` on the same address, as an
/// operator restarting the process would.
pub async fn restart(gw: Gateway, mut args: ServeArgs) -> Gateway {
    let addr = gw.addr;
    gw.stop().await;
    args.listen = addr;
    Gateway::start(args).await
}

/// Opens the overlay with `query` and waits until it is live.
pub async fn overlay_page(browser: &Browser, gw: &Gateway, query: &str) -> Page {
    let page = browser.new_page().await;
    open_overlay(&page, gw, query).await;
    page
}

pub async fn open_overlay(page: &Page, gw: &Gateway, query: &str) {
    page.goto(&gw.url(&format!("/overlay?{query}"))).await;
    page.wait_for(
        "the overlay to be live",
        "document.getElementById('overlay').dataset.status === 'live'",
    )
    .await;
}

/// Opens the dashboard with `query` and waits for its product table.
pub async fn dashboard_page(browser: &Browser, gw: &Gateway, query: &str) -> Page {
    let page = browser.new_page().await;
    open_dashboard(&page, gw, query).await;
    page
}

pub async fn open_dashboard(page: &Page, gw: &Gateway, query: &str) {
    page.goto(&gw.url(&format!("/dashboard?{query}"))).await;
    page.wait_for(
        "the dashboard to be live with products",
        "document.getElementById('conn').dataset.status === 'live' \
         && document.querySelectorAll('#products tbody tr').length > 0",
    )
    .await;
}

pub async fn sign_in(page: &Page, token: &str) {
    page.type_into("#token", token).await;
    page.click("#signin-btn").await;
}

/// Signs in with the admin token and waits for the first stats frame.
pub async fn sign_in_admin(page: &Page) {
    sign_in(page, ADMIN).await;
    page.wait_for(
        "signed in with statistics",
        "document.body.dataset.auth === 'admin' && document.body.dataset.statsSeq",
    )
    .await;
}

/// A dashboard at `query`, signed in, with statistics.
pub async fn admin_dashboard(browser: &Browser, gw: &Gateway, query: &str) -> Page {
    let page = dashboard_page(browser, gw, query).await;
    sign_in_admin(&page).await;
    page
}

pub fn card(sku: &str) -> String {
    format!(".card[data-sku=\"{sku}\"]")
}

pub fn left(sku: &str) -> String {
    format!("{} .left", card(sku))
}

pub fn badge(sku: &str) -> String {
    format!("{} .badge", card(sku))
}

pub fn cell(sku: &str, col: &str) -> String {
    format!("tr[data-sku=\"{sku}\"] [data-col=\"{col}\"]")
}

pub fn kpi(name: &str) -> String {
    format!("[data-kpi=\"{name}\"]")
}

/// A JS expression for an element's computed style property.
pub fn style(selector: &str, prop: &str) -> String {
    let sel = serde_json::to_string(selector).unwrap();
    format!("getComputedStyle(document.querySelector({sel})).{prop}")
}

/// A JS expression for an element's `dataset` entry.
pub fn data(selector: &str, key: &str) -> String {
    let sel = serde_json::to_string(selector).unwrap();
    format!("document.querySelector({sel}).dataset.{key}")
}

/// Intl separates groups with (narrow) no-break spaces in nb; compare text
/// with plain spaces.
pub fn plain(s: &str) -> String {
    s.replace(['\u{a0}', '\u{202f}'], " ")
}
