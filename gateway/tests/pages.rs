//! The host dashboard and the viewer overlay in a real browser: headless
//! Chromium driven over the DevTools protocol (`pages/cdp.rs`) against an
//! in-process gateway, over real HTTP and websockets.
//!
//! Nothing here sleeps to let time pass: every wait polls the DOM for the
//! expected state with a generous deadline. Without `chromium` on the PATH
//! the browser tests skip loudly, except in CI (`CI=true`), where they fail.
//! `HOLDFAST_SCREENSHOTS=1` makes `screenshots_at_desktop_and_phone_widths`
//! refresh the pictures in `docs/img/`.

#[path = "pages/cdp.rs"]
mod cdp;
mod common;

use cdp::{Browser, Page};
use common::*;
use holdfast_gateway::config::ServeArgs;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU64, Ordering};

/// The product requirement: a change reaches viewers within this long.
const VIEWER_LATENCY_MAX_MS: u64 = 1000;

static REQUEST: AtomicU64 = AtomicU64::new(1);

/// Reserves through the HTTP API and returns the hold id.
async fn reserve(gw: &Gateway, sku: &str, qty: u32) -> String {
    let n = REQUEST.fetch_add(1, Ordering::Relaxed);
    let (status, body) = gw
        .call(
            "POST",
            "/api/reservations",
            Some(CHECKOUT),
            Some(json!({"sku": sku, "qty": qty, "buyer": format!("buyer-{n}")})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["hold"].as_str().unwrap().to_owned()
}

async fn hold_action(gw: &Gateway, hold: &str, action: &str) {
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

async fn admin(gw: &Gateway, method: &str, path: &str, body: Value) -> Value {
    let (status, answer) = gw.call(method, path, Some(ADMIN), Some(body)).await;
    assert!(status < 300, "{method} {path}: {status} {answer}");
    answer
}

/// Stops `gw` and starts a gateway with `args` on the same address, as an
/// operator restarting the process would.
async fn restart(gw: Gateway, mut args: ServeArgs) -> Gateway {
    let addr = gw.addr;
    gw.stop().await;
    args.listen = addr;
    Gateway::start(args).await
}

/// Opens the overlay with `query` and waits until it is live.
async fn overlay(browser: &Browser, gw: &Gateway, query: &str) -> Page {
    let page = browser.new_page().await;
    page.goto(&gw.url(&format!("/overlay?{query}"))).await;
    page.wait_for(
        "the overlay to be live",
        "document.getElementById('overlay').dataset.status === 'live'",
    )
    .await;
    page
}

/// Opens the dashboard with `query` and waits for its product table.
async fn dashboard(browser: &Browser, gw: &Gateway, query: &str) -> Page {
    let page = browser.new_page().await;
    page.goto(&gw.url(&format!("/dashboard?{query}"))).await;
    page.wait_for(
        "the dashboard to be live with products",
        "document.getElementById('conn').dataset.status === 'live' \
         && document.querySelectorAll('#products tbody tr').length > 0",
    )
    .await;
    page
}

async fn sign_in(page: &Page, token: &str) {
    page.type_into("#token", token).await;
    page.click("#signin-btn").await;
}

fn left(sku: &str) -> String {
    format!(".card[data-sku=\"{sku}\"] .left")
}

fn cell(sku: &str, col: &str) -> String {
    format!("tr[data-sku=\"{sku}\"] td[data-col=\"{col}\"]")
}

/// Intl separates groups with (narrow) no-break spaces in nb; compare text
/// with plain spaces.
fn plain(s: &str) -> String {
    s.replace(['\u{a0}', '\u{202f}'], " ")
}

// ----- HTTP: types and policy (no browser needed) ------------------------------

#[tokio::test]
async fn pages_are_served_with_their_types_and_a_strict_policy() {
    let gw = Gateway::demo().await;
    for (path, frame_ancestors) in [("/", true), ("/dashboard", true), ("/overlay", false)] {
        let r = gw.http.get(gw.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers();
        assert_eq!(h["content-type"], "text/html; charset=utf-8", "{path}");
        assert_eq!(h["x-content-type-options"], "nosniff");
        let csp = h["content-security-policy"].to_str().unwrap();
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self' ws: wss:",
        ] {
            assert!(csp.contains(directive), "{path}: {csp} lacks {directive}");
        }
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
        assert_eq!(
            csp.contains("frame-ancestors 'none'"),
            frame_ancestors,
            "{path}: {csp}"
        );
        let body = r.text().await.unwrap();
        assert!(body.starts_with("<!doctype html>"), "{path}");
        assert!(!body.contains("<script>"), "{path}: no inline scripts");
        assert!(
            !body.contains("http://") && !body.contains("https://"),
            "{path}: nothing from the network"
        );
    }
    for (path, ty) in [
        ("/assets/pages/overlay.js", "text/javascript; charset=utf-8"),
        ("/assets/pages/live.js", "text/javascript; charset=utf-8"),
        ("/assets/pages/dashboard.css", "text/css; charset=utf-8"),
        ("/assets/img/tee.svg", "image/svg+xml"),
    ] {
        let r = gw.http.get(gw.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["content-type"], ty, "{path}");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    }
    let (status, body) = gw.get("/assets/pages/nope.js").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "not_found");
    let (status, _) = gw.get("/assets/../Cargo.toml").await;
    assert_eq!(status, 404);
    gw.stop().await;
}

// ----- overlay -----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlay_shows_the_count_and_a_reservation_lowers_it() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    // The default broadcast interval, not the tests' fast one: the latency
    // measured below is the one viewers get.
    let mut args = demo_args();
    args.broadcast_interval_ms = ServeArgs::for_tests().broadcast_interval_ms;
    assert!(
        args.broadcast_interval_ms <= VIEWER_LATENCY_MAX_MS,
        "the default broadcast interval alone breaks the 1 s promise"
    );
    let gw = Gateway::start(args).await;
    let page = overlay(&browser, &gw, "sku=runner-42&lang=en").await;

    assert_eq!(page.text(&left("runner-42")).await, "12 left");
    assert_eq!(
        page.text(".card[data-sku=\"runner-42\"] .title").await,
        "Runner 42, limited"
    );
    let price = page.text(".card[data-sku=\"runner-42\"] .price").await;
    assert!(
        price.contains("1,499.00"),
        "price in minor units, en: {price}"
    );
    let interval: u64 = page
        .eval("document.getElementById('overlay').dataset.broadcastIntervalMs")
        .await
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        interval <= VIEWER_LATENCY_MAX_MS,
        "the gateway pushes every {interval} ms, slower than the 1 s promise"
    );

    // Record in the page when the count changes, then reserve.
    page.eval(
        "window.__changedAt = null; window.__t0 = Date.now(); \
         new MutationObserver(() => { window.__changedAt ??= Date.now(); }) \
           .observe(document.querySelector('.card .left'), {childList: true, characterData: true, subtree: true})",
    )
    .await;
    reserve(&gw, "runner-42", 1).await;
    assert_eq!(
        page.wait_text(&left("runner-42"), "t === '11 left'").await,
        "11 left"
    );
    let latency = page.eval("window.__changedAt - window.__t0").await;
    eprintln!(
        "overlay latency, reservation to DOM: {latency} ms (broadcast interval {interval} ms)"
    );
    let bumps = page
        .eval("document.querySelector('.card').dataset.bumps")
        .await;
    assert_eq!(bumps, "1", "the change animation ran once");
    assert_eq!(
        page.eval("document.querySelector('.card').dataset.level")
            .await,
        "ok"
    );
    page.assert_clean_log(&[]);
    browser.close().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlay_goes_low_then_sold_out_then_back_in_stock() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let gw = Gateway::demo().await;
    gw.create_sku(
        json!({"id": "drop-1", "title": "Drop one", "price_minor": 10000,
                         "show": "drops", "total": 4}),
    )
    .await;
    let page = overlay(&browser, &gw, "sku=drop-1&low=3").await;
    let card = ".card[data-sku=\"drop-1\"]";
    let level = format!("document.querySelector('{card}').dataset.level");
    assert_eq!(page.text(&left("drop-1")).await, "4 left");
    assert_eq!(page.eval(&level).await, "ok");

    reserve(&gw, "drop-1", 1).await;
    page.wait_text(&left("drop-1"), "t === 'Only 3 left!'")
        .await;
    assert_eq!(page.eval(&level).await, "low");

    let last = reserve(&gw, "drop-1", 3).await;
    page.wait_text(&left("drop-1"), "t === 'SOLD OUT'").await;
    assert_eq!(page.eval(&level).await, "soldout");

    // A released hold puts units back on sale: back in stock.
    hold_action(&gw, &last, "release").await;
    page.wait_text(&left("drop-1"), "t === 'Only 3 left!'")
        .await;
    assert_eq!(
        page.wait_text(&format!("{card} .badge"), "t === 'Back in stock!'")
            .await,
        "Back in stock!"
    );
    let badge_visible = page
        .eval(&format!(
            "getComputedStyle(document.querySelector('{card} .badge')).display !== 'none'"
        ))
        .await;
    assert_eq!(badge_visible, true);

    // A restock above the threshold leaves the low style.
    admin(
        &gw,
        "POST",
        "/api/admin/skus/drop-1/restock",
        json!({"qty": 10}),
    )
    .await;
    page.wait_text(&left("drop-1"), "t === '13 left'").await;
    assert_eq!(page.eval(&level).await, "ok");

    // The sale window shows too: paused, scheduled, closed (each replaces
    // the back-in-stock badge, which would mislead while no one can buy).
    let window = "/api/admin/skus/drop-1/window";
    let badge = format!("{card} .badge");
    admin(&gw, "POST", window, json!({"state": "paused"})).await;
    page.wait_text(&badge, "t === 'Paused'").await;
    assert_eq!(page.eval(&level).await, "paused");
    assert_eq!(page.text(&left("drop-1")).await, "13 left");
    let at = 4_102_444_800_000u64; // 2100-01-01
    admin(
        &gw,
        "POST",
        window,
        json!({"state": "scheduled", "opens_at_ms": at}),
    )
    .await;
    let opens = page.wait_text(&badge, "t.startsWith('Opens ')").await;
    assert!(
        opens.contains("2100"),
        "not today, so with the date: {opens}"
    );
    assert_eq!(page.eval(&level).await, "scheduled");
    admin(&gw, "POST", window, json!({"state": "closed"})).await;
    page.wait_text(&left("drop-1"), "t === 'Sale closed'").await;
    assert_eq!(page.eval(&level).await, "closed");
    page.assert_clean_log(&[]);
    browser.close().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlay_reconnects_after_a_gateway_restart_and_shows_the_current_count() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let gw = Gateway::demo().await;
    let page = overlay(&browser, &gw, "sku=runner-42").await;
    reserve(&gw, "runner-42", 1).await;
    reserve(&gw, "runner-42", 1).await;
    page.wait_text(&left("runner-42"), "t === '10 left'").await;

    // The demo gateway keeps state in memory: after the restart runner-42
    // starts again at 12, and three units go before the overlay is back.
    let addr = gw.addr;
    gw.shutdown.cancel();
    page.wait_for(
        "the overlay to notice the gateway left",
        "document.getElementById('overlay').dataset.status === 'reconnecting'",
    )
    .await;
    gw.handle.await.unwrap().unwrap();
    // While down, the last counts stay on screen, dimmed.
    assert_eq!(page.text(&left("runner-42")).await, "10 left");
    let mut args = demo_args();
    args.listen = addr;
    let gw = Gateway::start(args).await;
    for _ in 0..3 {
        reserve(&gw, "runner-42", 1).await;
    }
    page.wait_text(&left("runner-42"), "t === '9 left'").await;
    page.wait_for(
        "the overlay to be live again",
        "document.getElementById('overlay').dataset.status === 'live'",
    )
    .await;
    // And it follows the new gateway's updates, not just its snapshot.
    reserve(&gw, "runner-42", 1).await;
    page.wait_text(&left("runner-42"), "t === '8 left'").await;
    // Chromium logs each refused reconnect attempt.
    page.assert_clean_log(&["WebSocket connection to"]);
    browser.close().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlay_speaks_the_language_and_takes_theme_size_and_colours() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let gw = Gateway::demo().await;
    admin(
        &gw,
        "POST",
        "/api/admin/skus/tote-canvas/restock",
        json!({"qty": 1000}),
    )
    .await;
    let page = overlay(
        &browser,
        &gw,
        "show=demo&lang=nb&theme=light&size=l&accent=ff0000&warn=%2300aa00&text=navy&card=transparent&max=5&price=0&low=50",
    )
    .await;
    page.wait_for(
        "five cards",
        "document.querySelectorAll('.card').length === 5",
    )
    .await;
    assert_eq!(page.eval("document.documentElement.lang").await, "nb");
    assert_eq!(plain(&page.text(&left("tote-canvas")).await), "1 500 igjen");
    assert_eq!(
        page.text(&left("runner-42")).await,
        "Bare 12 igjen!",
        "below ?low=50 it is low stock"
    );
    let style =
        |sel: &str, prop: &str| format!("getComputedStyle(document.querySelector('{sel}')).{prop}");
    assert_eq!(
        page.eval(&style(&left("tote-canvas"), "color")).await,
        "rgb(255, 0, 0)"
    );
    assert_eq!(
        page.eval(&style(&left("runner-42"), "color")).await,
        "rgb(0, 170, 0)"
    );
    assert_eq!(
        page.eval(&style(".card .title", "color")).await,
        "rgb(0, 0, 128)"
    );
    assert_eq!(
        page.eval(&style(".card", "backgroundColor")).await,
        "rgba(0, 0, 0, 0)"
    );
    assert_eq!(
        page.eval(&style("body", "fontSize")).await,
        "27px",
        "size=l is 1.35 x 20 px"
    );
    assert_eq!(page.eval(&style(".card .price", "display")).await, "none");
    assert_eq!(
        page.eval("document.documentElement.dataset.theme").await,
        "light"
    );
    for sel in ["html", "body"] {
        assert_eq!(
            page.eval(&style(sel, "backgroundColor")).await,
            "rgba(0, 0, 0, 0)",
            "{sel} must be transparent for OBS"
        );
    }
    // Prices follow the locale when shown: nb puts the decimals after a comma.
    let nb_price = page
        .eval("document.querySelector('.card[data-sku=\"hoodie-sand\"] .price').textContent")
        .await;
    assert!(
        plain(nb_price.as_str().unwrap()).contains("599,00"),
        "{nb_price}"
    );

    // Sold out in Norwegian.
    for _ in 0..12 {
        reserve(&gw, "runner-42", 1).await;
    }
    page.wait_text(&left("runner-42"), "t === 'UTSOLGT'").await;

    // ?max= bounds the cards; a bad value of any parameter falls back to its
    // default instead of breaking the page.
    let capped = overlay(&browser, &gw, "show=demo&max=2&image=0&size=0.5").await;
    capped
        .wait_for(
            "two cards",
            "document.querySelectorAll('.card').length === 2",
        )
        .await;
    assert_eq!(capped.eval(&style(".card .img", "display")).await, "none");
    assert_eq!(capped.eval(&style("body", "fontSize")).await, "10px");
    let odd = overlay(
        &browser,
        &gw,
        "sku=cap-olive&lang=!!&size=99&accent=red;x:y&low=-1&theme=neon&max=0",
    )
    .await;
    assert_eq!(odd.text(&left("cap-olive")).await, "200 left");
    assert_eq!(odd.eval("document.documentElement.lang").await, "en");
    assert_eq!(odd.eval(&style("body", "fontSize")).await, "20px");
    assert_eq!(
        odd.eval("document.documentElement.dataset.theme").await,
        "dark"
    );
    assert_eq!(
        odd.eval(&style(&left("cap-olive"), "color")).await,
        "rgb(61, 220, 151)"
    );
    assert_eq!(
        odd.eval("document.getElementById('overlay').dataset.low")
            .await,
        "5"
    );
    for p in [&page, &capped, &odd] {
        p.assert_clean_log(&[]);
    }
    browser.close().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlay_explains_a_missing_product_and_comes_alive_when_it_is_created() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let gw = Gateway::demo().await;
    let page = browser.new_page().await;
    page.goto(&gw.url("/overlay")).await;
    assert_eq!(
        page.text(".message").await,
        "Add ?sku=<id> or ?show=<id> to the address"
    );
    page.goto(&gw.url("/overlay?sku=later&lang=no")).await;
    page.wait_text(".message", "t === 'Fant ikke produktet'")
        .await;
    gw.create_sku(json!({"id": "later", "title": "Later", "total": 3}))
        .await;
    assert_eq!(
        page.wait_text(&left("later"), "t === 'Bare 3 igjen!'")
            .await,
        "Bare 3 igjen!"
    );
    page.assert_clean_log(&[]);
    browser.close().await;
    gw.stop().await;
}

// ----- dashboard ---------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_restock_button_updates_the_table_and_the_overlay() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let gw = Gateway::demo().await;
    let dash = dashboard(&browser, &gw, "show=demo&lang=en").await;
    let viewer = overlay(&browser, &gw, "sku=tee-black-m&lang=en").await;
    assert_eq!(dash.text(&cell("tee-black-m", "available")).await, "120");
    assert_eq!(viewer.text(&left("tee-black-m")).await, "120 left");
    assert_eq!(
        dash.eval("document.querySelectorAll('#products tbody tr').length")
            .await,
        5
    );
    // Controls are locked until the host signs in.
    assert_eq!(
        dash.eval("document.getElementById('manage-controls').disabled")
            .await,
        true
    );

    sign_in(&dash, ADMIN).await;
    dash.wait_for("signed in", "document.body.dataset.auth === 'admin'")
        .await;
    assert_eq!(
        dash.eval("sessionStorage.getItem('holdfast.admin_token')")
            .await,
        ADMIN,
        "kept for this tab"
    );
    assert_eq!(
        dash.eval("localStorage.length").await,
        0,
        "and nowhere else"
    );
    assert_eq!(
        dash.eval("document.getElementById('token').value").await,
        ""
    );

    dash.click("tr[data-sku=\"tee-black-m\"] button.manage")
        .await;
    assert_eq!(
        dash.eval("document.getElementById('manage-sku').value")
            .await,
        "tee-black-m"
    );
    dash.type_into("#restock-qty", "15").await;
    dash.click("#restock-btn").await;
    let result = dash.wait_text("#action-result", "t.startsWith('✓')").await;
    assert!(result.contains("Restocked tee-black-m by 15"), "{result}");
    dash.wait_text(&cell("tee-black-m", "available"), "t === '135'")
        .await;
    assert_eq!(dash.text(&cell("tee-black-m", "total")).await, "135");
    viewer
        .wait_text(&left("tee-black-m"), "t === '135 left'")
        .await;
    assert_eq!(gw.sku("tee-black-m").await["total"], 135);
    dash.assert_clean_log(&[]);
    viewer.assert_clean_log(&[]);

    // The token lives as long as the tab: a reload keeps it (and checks it
    // again), another tab does not have it.
    dash.goto(&gw.url("/dashboard?show=demo&lang=en")).await;
    dash.wait_for(
        "the reloaded page to be live",
        "document.getElementById('conn').dataset.status === 'live'",
    )
    .await;
    assert_eq!(dash.eval("document.body.dataset.auth").await, "admin");
    assert_eq!(
        dash.eval("document.getElementById('manage-controls').disabled")
            .await,
        false
    );
    let other = dashboard(&browser, &gw, "show=demo").await;
    assert_eq!(other.eval("document.body.dataset.auth").await, "none");
    assert_eq!(other.eval("sessionStorage.length").await, 0);
    browser.close().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_with_a_wrong_token_shows_an_error_and_changes_nothing() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let gw = Gateway::demo().await;
    let before = gw.get("/api/skus").await.1["skus"].clone();
    // Without ?show= the dashboard covers the whole catalog.
    let dash = dashboard(&browser, &gw, "").await;
    assert_eq!(dash.text("#scope").await, "all products");
    dash.wait_for(
        "every product",
        "document.querySelectorAll('#products tbody tr').length === 5",
    )
    .await;

    sign_in(&dash, "not-the-admin-token").await;
    let msg = dash
        .wait_text("#auth-msg", "t.includes('unauthorized')")
        .await;
    assert!(msg.contains("refused"), "{msg}");
    assert_eq!(dash.eval("document.body.dataset.auth").await, "none");
    assert_eq!(
        dash.eval("document.getElementById('manage-controls').disabled")
            .await,
        true
    );
    assert_eq!(
        dash.eval("document.getElementById('create-controls').disabled")
            .await,
        true
    );
    assert_eq!(dash.eval("sessionStorage.length").await, 0);

    // A valid token of the wrong role is refused too.
    sign_in(&dash, CHECKOUT).await;
    dash.wait_text("#auth-msg", "t.includes('checkout token')")
        .await;
    assert_eq!(dash.eval("document.body.dataset.auth").await, "none");

    assert_eq!(
        gw.get("/api/skus").await.1["skus"],
        before,
        "nothing changed"
    );
    dash.assert_clean_log(&[]);
    browser.close().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_reports_a_token_the_gateway_stopped_accepting() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let gw = Gateway::demo().await;
    let dash = dashboard(&browser, &gw, "show=demo&lang=en").await;
    sign_in(&dash, ADMIN).await;
    dash.wait_for("signed in", "document.body.dataset.auth === 'admin'")
        .await;

    // The operator restarts the gateway with a new admin token.
    let mut args = demo_args();
    args.admin_token = Some("rotated-admin-token".into());
    let gw = restart(gw, args).await;
    dash.wait_for(
        "the dashboard to resync",
        "document.getElementById('conn').dataset.status === 'live'",
    )
    .await;
    dash.click("tr[data-sku=\"cap-olive\"] button.manage").await;
    dash.click("#restock-btn").await;
    let result = dash.wait_text("#action-result", "t.startsWith('✗')").await;
    assert!(result.contains("401 unauthorized"), "{result}");
    dash.wait_text("#auth-msg", "t.includes('no longer accepts')")
        .await;
    assert_eq!(dash.eval("document.body.dataset.auth").await, "none");
    assert_eq!(dash.eval("sessionStorage.length").await, 0);
    assert_eq!(dash.text(&cell("cap-olive", "total")).await, "200");
    assert_eq!(gw.sku("cap-olive").await["total"], 200, "nothing changed");
    dash.assert_clean_log(&["status of 401", "WebSocket connection to"]);
    browser.close().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_creates_adjusts_limits_and_runs_the_sale_window() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let gw = Gateway::demo().await;
    let dash = dashboard(&browser, &gw, "show=demo&lang=en").await;
    sign_in(&dash, ADMIN).await;
    dash.wait_for("signed in", "document.body.dataset.auth === 'admin'")
        .await;

    // Create a product.
    dash.type_into("#new-id", "scarf-red").await;
    dash.type_into("#new-title", "Scarf, red").await;
    dash.type_into("#new-price", "249,50").await;
    dash.type_into("#new-total", "7").await;
    dash.type_into("#new-limit", "2").await;
    dash.type_into("#new-image", "/assets/img/tee.svg").await;
    dash.click("#create-btn").await;
    let created = dash.wait_text("#create-result", "t.length > 0").await;
    assert!(
        created.starts_with("✓ Created scarf-red with 7 units"),
        "{created}"
    );
    dash.wait_text(&cell("scarf-red", "available"), "t === '7'")
        .await;
    let price = dash.text(&cell("scarf-red", "price")).await;
    assert!(price.contains("249.50"), "{price}");
    let sku = gw.sku("scarf-red").await;
    assert_eq!(sku["meta"]["price_minor"], 24950);
    assert_eq!(sku["meta"]["show"], "demo");
    assert_eq!(sku["buyer_limit"], 2);

    // The same id again is refused, and the refusal is shown.
    dash.type_into("#new-id", "scarf-red").await;
    dash.click("#create-btn").await;
    let refused = dash.wait_text("#create-result", "t.startsWith('✗')").await;
    assert!(refused.contains("409 already_exists"), "{refused}");

    // Adjust, and an adjust beyond what is available.
    dash.click("tr[data-sku=\"scarf-red\"] button.manage").await;
    dash.type_into("#adjust-qty", "2").await;
    dash.click("#adjust-btn").await;
    dash.wait_text(&cell("scarf-red", "available"), "t === '5'")
        .await;
    dash.type_into("#adjust-qty", "50").await;
    dash.click("#adjust-btn").await;
    let too_many = dash.wait_text("#action-result", "t.startsWith('✗')").await;
    assert!(too_many.contains("409 not_enough_available"), "{too_many}");
    assert_eq!(gw.sku("scarf-red").await["available"], 5);

    // Per-buyer limit.
    dash.type_into("#limit-qty", "3").await;
    dash.click("#limit-btn").await;
    dash.wait_text(&cell("scarf-red", "limit"), "t === '3'")
        .await;
    assert_eq!(gw.sku("scarf-red").await["buyer_limit"], 3);

    // Pause: reservations are refused; open now: they work again.
    dash.click("#pause-btn").await;
    dash.wait_text(&cell("scarf-red", "state"), "t === 'paused'")
        .await;
    let (status, body) = gw
        .call(
            "POST",
            "/api/reservations",
            Some(CHECKOUT),
            Some(json!({"sku": "scarf-red", "qty": 1, "buyer": "b"})),
        )
        .await;
    assert_eq!((status, body["error"].as_str()), (409, Some("not_open")));
    dash.click("#open-btn").await;
    dash.wait_text(&cell("scarf-red", "state"), "t === 'open'")
        .await;
    reserve(&gw, "scarf-red", 1).await;

    // Schedule a drop at a time (the datetime picker is Chromium's own
    // widget; its value is set the way the picker sets it).
    dash.eval(
        "const i = document.getElementById('schedule-at'); i.value = '2030-01-04T20:00'; \
         i.dispatchEvent(new Event('input', {bubbles: true}))",
    )
    .await;
    let expected_ms = dash.eval("new Date('2030-01-04T20:00').getTime()").await;
    dash.click("#schedule-btn").await;
    dash.wait_text(&cell("scarf-red", "state"), "t.startsWith('opens ')")
        .await;
    let sku = gw.sku("scarf-red").await;
    assert_eq!(sku["state"], "scheduled");
    assert_eq!(sku["opens_at_ms"], expected_ms);

    dash.click("#close-btn").await;
    dash.wait_text(&cell("scarf-red", "state"), "t === 'closed'")
        .await;
    assert_eq!(gw.sku("scarf-red").await["state"], "closed");
    let log_entries = dash
        .eval("document.querySelectorAll('#log li').length")
        .await;
    assert!(log_entries.as_u64().unwrap() >= 8, "{log_entries}");
    dash.assert_clean_log(&["status of 409"]);
    browser.close().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_kpis_follow_sales_and_abandoned_holds() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let gw = Gateway::demo().await;
    // Holds of this product expire after 3 s: long against the 20 ms
    // broadcast interval, so the dashboard sees the hold before it ends.
    gw.create_sku(
        json!({"id": "kpi-1", "title": "KPI", "price_minor": 100, "show": "kpi",
                         "total": 100, "hold_ttl_ms": 3000}),
    )
    .await;
    let dash = dashboard(&browser, &gw, "show=kpi&lang=en").await;
    let kpi = |name: &str| format!("[data-kpi=\"{name}\"]");

    let a = reserve(&gw, "kpi-1", 2).await;
    dash.wait_text(&cell("kpi-1", "held"), "t === '2'").await;
    hold_action(&gw, &a, "commit").await;
    dash.wait_text(&cell("kpi-1", "sold"), "t === '2'").await;
    assert_eq!(dash.text(&cell("kpi-1", "conversion")).await, "100%");
    assert_eq!(dash.wait_text(&kpi("rate"), "t === '2.0'").await, "2.0");
    assert_eq!(dash.text(&cell("kpi-1", "rate")).await, "2.0");
    assert_eq!(dash.text(&kpi("sellthrough")).await, "2%");
    // 98 available at 2 a minute.
    assert_eq!(dash.text(&cell("kpi-1", "eta")).await, "49 min");

    // Released: an abandoned hold.
    let b = reserve(&gw, "kpi-1", 1).await;
    dash.wait_text(&cell("kpi-1", "held"), "t === '1'").await;
    hold_action(&gw, &b, "release").await;
    dash.wait_text(&cell("kpi-1", "abandoned"), "t === '1'")
        .await;
    assert_eq!(dash.text(&cell("kpi-1", "conversion")).await, "67%");

    // Expired: abandoned too, with no call at all.
    reserve(&gw, "kpi-1", 1).await;
    dash.wait_text(&cell("kpi-1", "held"), "t === '1'").await;
    dash.wait_text(&cell("kpi-1", "abandoned"), "t === '2'")
        .await;
    assert_eq!(dash.text(&cell("kpi-1", "held")).await, "0");
    assert_eq!(dash.text(&kpi("conversion")).await, "50%");
    assert_eq!(dash.text(&kpi("abandoned")).await, "2");

    // The chart shows the two units sold.
    let charted = dash
        .wait_for(
            "the chart to show the sale",
            "(() => { const n = [...document.querySelectorAll('#sales-chart rect.bar')] \
               .reduce((s, r) => s + Number(r.dataset.units), 0); return n === 2 ? n : null; })()",
        )
        .await;
    assert_eq!(charted, 2);
    let bars = dash
        .eval("document.querySelectorAll('#sales-chart rect.bar').length")
        .await;
    assert_eq!(bars, 30, "five minutes in 10 s bars");
    dash.assert_clean_log(&[]);
    browser.close().await;
    gw.stop().await;
}

// ----- phones and screenshots ----------------------------------------------------

/// Width and height of a PNG, from its IHDR chunk.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let be = |i: usize| u32::from_be_bytes(png[i..i + 4].try_into().unwrap());
    (be(16), be(20))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn screenshots_at_desktop_and_phone_widths() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let gw = Gateway::demo().await;
    // Some life in the show: sales, holds, a low and a sold-out product.
    for _ in 0..9 {
        let h = reserve(&gw, "runner-42", 1).await;
        hold_action(&gw, &h, "commit").await;
    }
    for i in 0..20 {
        let h = reserve(&gw, "hoodie-sand", 2).await;
        if i % 3 == 0 {
            hold_action(&gw, &h, "commit").await;
        }
    }
    let scratch = tempfile::tempdir().unwrap();
    let out = match std::env::var_os("HOLDFAST_SCREENSHOTS") {
        Some(_) => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/img"),
        None => scratch.path().to_path_buf(),
    };
    std::fs::create_dir_all(&out).unwrap();

    for (name, width, height, mobile) in [("desktop", 1280, 900, false), ("phone", 390, 844, true)]
    {
        let dash = browser.new_page().await;
        dash.set_viewport(width, height, mobile).await;
        dash.goto(&gw.url("/dashboard?show=demo&lang=en")).await;
        sign_in(&dash, ADMIN).await;
        dash.wait_for("signed in", "document.body.dataset.auth === 'admin'")
            .await;
        dash.wait_text(&cell("runner-42", "sold"), "t === '9'")
            .await;
        let h = reserve(&gw, "tee-black-m", 1).await;
        hold_action(&gw, &h, "commit").await;
        dash.wait_text(&cell("tee-black-m", "sold"), "Number(t) > 0")
            .await;
        let overflow = dash
            .eval("document.documentElement.scrollWidth - window.innerWidth")
            .await;
        assert!(
            overflow.as_i64().unwrap() <= 0,
            "dashboard scrolls sideways at {width} px by {overflow} px"
        );
        // The controls work at this width too.
        dash.click("tr[data-sku=\"cap-olive\"] button.manage").await;
        dash.click("#restock-btn").await;
        let done = dash.wait_text("#action-result", "t.length > 0").await;
        assert!(done.starts_with("✓ Restocked cap-olive by 10"), "{done}");
        dash.eval("window.scrollTo(0, 0)").await;
        let png = dash.screenshot(None).await;
        assert_eq!(png_size(&png).0, width);
        std::fs::write(out.join(format!("dashboard-{name}.png")), &png).unwrap();
        dash.assert_clean_log(&[]);
        dash.close().await;

        let view = browser.new_page().await;
        view.set_viewport(width, height, mobile).await;
        // A stream-like backdrop shows through, as in OBS.
        view.set_backdrop((38, 52, 72, 1.0)).await;
        view.goto(&gw.url("/overlay?show=demo&lang=nb&max=4")).await;
        view.wait_for(
            "four cards",
            "document.querySelectorAll('.card').length === 4",
        )
        .await;
        view.wait_text(&left("runner-42"), "t.length > 0").await;
        let overflow = view
            .eval("document.documentElement.scrollWidth - window.innerWidth")
            .await;
        assert!(
            overflow.as_i64().unwrap() <= 0,
            "overlay scrolls sideways at {width} px by {overflow} px"
        );
        let region = view
            .eval(
                "(() => { const r = document.getElementById('overlay').getBoundingClientRect(); \
                 return [r.right + 8, r.bottom + 8]; })()",
            )
            .await;
        let w = region[0].as_f64().unwrap().min(width as f64);
        let h = region[1].as_f64().unwrap();
        let png = view.screenshot(Some((0.0, 0.0, w, h))).await;
        assert_eq!(png_size(&png).0, w as u32);
        std::fs::write(out.join(format!("overlay-{name}.png")), &png).unwrap();
        view.assert_clean_log(&[]);
        view.close().await;
    }
    // The light theme, larger, in English, over a light scene.
    let view = browser.new_page().await;
    view.set_viewport(1280, 400, false).await;
    view.set_backdrop((214, 222, 232, 1.0)).await;
    view.goto(&gw.url("/overlay?sku=runner-42&theme=light&size=l&lang=en"))
        .await;
    view.wait_text(&left("runner-42"), "t.length > 0").await;
    let region = view
        .eval(
            "(() => { const r = document.getElementById('overlay').getBoundingClientRect(); \
             return [r.right + 12, r.bottom + 12]; })()",
        )
        .await;
    let png = view
        .screenshot(Some((
            0.0,
            0.0,
            region[0].as_f64().unwrap(),
            region[1].as_f64().unwrap(),
        )))
        .await;
    std::fs::write(out.join("overlay-light.png"), &png).unwrap();
    view.assert_clean_log(&[]);
    browser.close().await;
    gw.stop().await;
}
