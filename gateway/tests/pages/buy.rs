//! Buying from the overlay (`?buy=1`) as a viewer lives it: the token in
//! the fragment (gone from the address bar, never in a request URL),
//! Buy → "Reserved for you — 4:59" → the shop's signed checkout link → the
//! shop commits server-to-server → "Bought"; a hold that expires gives its
//! unit back; the countdown on the server clock when the viewer's is 10
//! minutes fast; every refusal in words; a token expiring mid-session
//! (injected token clock); keyboard, axe-core and phone width.

use super::*;
use hmac::{Hmac, KeyInit, Mac};
use holdfast_gateway::auth::jwt::LEEWAY_MS;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use sha2::Sha256;

use common::TokenTestClock as Clock;

const SECRET: &str = "shop-secret-0123456789abcdef-0123456789";
const CHECKOUT_KEY: &str = "checkout-key-0123456789abcdef-0123456789";
const CHECKOUT_TEMPLATE: &str =
    "http://127.0.0.1:9/checkout?hold={hold}&sku={sku}&qty={qty}&until={deadline_ms}&sig={sig}";

async fn buy_gateway(clock: &Clock) -> Gateway {
    let mut args = demo_args();
    args.buyer_tokens.keys = vec![format!("hs1:HS256:{SECRET}")];
    args.buyer_tokens.clock = clock.token_clock();
    args.buy.checkout_url_template = Some(CHECKOUT_TEMPLATE.into());
    args.buy.checkout_url_key = Some(CHECKOUT_KEY.into());
    Gateway::start(args).await
}

/// A buyer token for `sub`, valid for 5 minutes of the token clock.
fn token(clock: &Clock, sub: &str) -> String {
    let s = clock.now_s();
    let n = REQUEST.fetch_add(1, Ordering::Relaxed);
    let claims = json!({"sub": sub, "jti": format!("jti-{n}"), "iat": s, "exp": s + 300});
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("hs1".into());
    encode(
        &h,
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
    )
    .unwrap()
}

/// Opens `/overlay?{query}&buy=1#token=...` and waits for its Buy buttons.
async fn buy_page(browser: &Browser, gw: &Gateway, query: &str, token: &str) -> Page {
    let page = browser.new_page().await;
    page.record_requests().await;
    page.goto(&gw.url(&format!("/overlay?{query}&buy=1#token={token}")))
        .await;
    page.wait_for(
        "the overlay to be live with Buy buttons",
        "document.getElementById('overlay').dataset.status === 'live' \
         && document.getElementById('overlay').dataset.auth === 'buyer' \
         && document.querySelector('.buy-btn') !== null",
    )
    .await;
    page
}

fn status(sku: &str) -> String {
    format!("{} .buy-status", card(sku))
}

fn panel(sku: &str) -> String {
    format!("{} .buy", card(sku))
}

fn buy_btn(sku: &str) -> String {
    format!("{} .buy-btn", card(sku))
}

/// The token appears in no URL the page requested, and the fragment is gone.
async fn assert_token_never_in_a_url(page: &Page, token: &str) {
    let urls = page.request_urls();
    assert!(
        urls.iter().any(|u| u.ends_with("/ws")),
        "the recorder saw the websocket: {urls:#?}"
    );
    let signature = token.rsplit('.').next().unwrap();
    for u in &urls {
        assert!(!u.contains(signature), "the token is in {u}");
    }
    assert_eq!(page.eval("location.hash").await, "");
    let href = page.eval("location.href").await;
    assert!(!href.as_str().unwrap().contains(signature), "{href}");
    assert!(
        !href.as_str().unwrap().contains("token"),
        "the fragment is gone: {href}"
    );
}

fn hex_hmac(msg: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(CHECKOUT_KEY.as_bytes()).unwrap();
    mac.update(msg.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buy_counts_down_hands_off_signed_and_shows_bought_when_the_shop_commits() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let clock = Clock::new();
    let gw = buy_gateway(&clock).await;
    gw.create_sku(json!({"id": "drop-tee", "title": "Drop tee", "total": 5, "price_minor": 19900}))
        .await;
    let t = token(&clock, "viewer-1");
    let page = buy_page(&browser, &gw, "sku=drop-tee&lang=en", &t).await;
    assert_eq!(page.text(&buy_btn("drop-tee")).await, "Buy");
    assert_eq!(
        page.eval(&format!(
            "document.querySelector({:?}).getAttribute('aria-label')",
            buy_btn("drop-tee")
        ))
        .await,
        "Buy Drop tee"
    );

    // A double tap: one hold.
    page.eval(&format!(
        "(() => {{ const b = document.querySelector({:?}); b.click(); b.click(); return true; }})()",
        buy_btn("drop-tee")
    ))
    .await;
    let shown = page
        .wait_text(
            &status("drop-tee"),
            "/^Reserved for you — (5:00|4:5\\d)$/.test(t)",
        )
        .await;
    eprintln!("countdown: {shown}");
    let sku = gw.sku("drop-tee").await;
    assert_eq!(
        (sku["available"].as_u64(), sku["held"].as_u64()),
        (Some(4), Some(1))
    );
    assert_eq!(
        page.eval(&data(&panel("drop-tee"), "state")).await,
        "reserved"
    );

    // The hand-off: the shop's URL, filled and signed.
    page.wait_for(
        "the checkout link",
        &format!(
            "!document.querySelector({:?}).hidden",
            format!("{} .buy-checkout", card("drop-tee"))
        ),
    )
    .await;
    let href = page
        .eval(&format!(
            "document.querySelector({:?}).href",
            format!("{} .buy-checkout", card("drop-tee"))
        ))
        .await;
    let url = reqwest::Url::parse(href.as_str().unwrap()).unwrap();
    let q: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(q["sku"], "drop-tee");
    assert_eq!(q["qty"], "1");
    let hold = q["hold"].clone();
    let (_, view) = gw
        .call("GET", &format!("/api/holds/{hold}"), Some(CHECKOUT), None)
        .await;
    assert_eq!(view["state"], "held");
    assert_eq!(q["until"], view["deadline_ms"].to_string());
    assert_eq!(
        q["sig"],
        hex_hmac(&format!("{hold}.drop-tee.1.{}", q["until"])),
        "the shop can verify the hand-off"
    );

    // The shop commits server-to-server; the overlay learns it.
    hold_action(&gw, &hold, "commit").await;
    page.wait_text(&status("drop-tee"), "t === 'Bought — thank you!'")
        .await;
    assert_eq!(
        page.eval(&data(&panel("drop-tee"), "state")).await,
        "committed"
    );
    page.wait_text(&left("drop-tee"), "t === 'Only 4 left!'")
        .await;
    assert_token_never_in_a_url(&page, &t).await;
    page.assert_clean_log(&[]);
    browser.close().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_countdown_follows_the_servers_clock_not_a_wrong_local_one() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let clock = Clock::new();
    let gw = buy_gateway(&clock).await;
    gw.create_sku(json!({"id": "skew", "title": "Skew", "total": 2}))
        .await;
    // The viewer's clock is 10 minutes fast: uncorrected, a 5-minute hold
    // would read as long gone.
    let page = browser.new_page().await;
    page.on_new_document("{ const real = Date.now.bind(Date); Date.now = () => real() + 600000; }")
        .await;
    page.goto(&gw.url(&format!(
        "/overlay?sku=skew&lang=en&buy=1#token={}",
        token(&clock, "viewer-6")
    )))
    .await;
    page.wait_for(
        "the Buy button",
        "document.getElementById('overlay').dataset.auth === 'buyer'",
    )
    .await;
    page.click(&buy_btn("skew")).await;
    page.wait_text(
        &status("skew"),
        "/^Reserved for you — (5:00|4:5\\d)$/.test(t)",
    )
    .await;
    assert_eq!(page.eval(&data(&panel("skew"), "state")).await, "reserved");
    page.assert_clean_log(&[]);
    browser.close().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_hold_gives_its_unit_back_and_the_overlay_says_so() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let clock = Clock::new();
    let gw = buy_gateway(&clock).await;
    gw.create_sku(json!({"id": "short", "title": "Short hold", "total": 3, "hold_ttl_ms": 2500}))
        .await;
    let t = token(&clock, "viewer-2");
    let page = buy_page(&browser, &gw, "sku=short&lang=en&low=1", &t).await;
    // Every text the screen-reader region gets, to check it is not read
    // out every second.
    page.eval(
        "window.__said = []; new MutationObserver(() => window.__said.push(document.getElementById('announce').textContent)) \
           .observe(document.getElementById('announce'), {childList: true, characterData: true, subtree: true}); true",
    )
    .await;
    page.click(&buy_btn("short")).await;
    page.wait_text(&status("short"), "t.startsWith('Reserved for you — 0:0')")
        .await;
    page.wait_text(&left("short"), "t === '2 left'").await;
    page.wait_text(&status("short"), "t === 'Reservation ended — back on sale'")
        .await;
    assert_eq!(page.eval(&data(&panel("short"), "state")).await, "expired");
    page.wait_text(&left("short"), "t === '3 left'").await;
    let sku = gw.sku("short").await;
    assert_eq!(
        (sku["available"].as_u64(), sku["held"].as_u64()),
        (Some(3), Some(0))
    );
    let said = page.eval("window.__said").await;
    let said: Vec<&str> = said
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        said.len() <= 3,
        "the countdown is not read out every second: {said:?}"
    );
    assert!(
        said.iter().any(|s| s.starts_with("Reserved for you: 0:0")),
        "{said:?}"
    );
    assert_eq!(said.last(), Some(&"Reservation ended — back on sale"));
    // Buy again after the expiry: a new hold, which the shop releases
    // (payment failed) before it runs out.
    admin(
        &gw,
        "PATCH",
        "/api/admin/skus/short",
        json!({"hold_ttl_ms": 300000}),
    )
    .await;
    page.click(&buy_btn("short")).await;
    page.wait_text(
        &status("short"),
        "/^Reserved for you — (5:00|4:5\\d)$/.test(t)",
    )
    .await;
    let hold = page.eval(&data(&panel("short"), "hold")).await;
    hold_action(&gw, hold.as_str().unwrap(), "release").await;
    page.wait_text(&status("short"), "t === 'Reservation released'")
        .await;
    assert_eq!(page.eval(&data(&panel("short"), "state")).await, "released");
    page.assert_clean_log(&[]);
    browser.close().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_is_shown_in_words_and_in_the_viewers_language() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let clock = Clock::new();
    let gw = buy_gateway(&clock).await;
    for (id, extra) in [
        ("gone", json!({"total": 1})),
        ("limited", json!({"total": 10, "buyer_limit": 1})),
        (
            "later",
            json!({"total": 10, "window": {"state": "scheduled", "opens_at_ms": 4_102_444_800_000u64}}),
        ),
    ] {
        let mut def = json!({"id": id, "title": id, "show": "refusals"});
        def.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        gw.create_sku(def).await;
    }
    // Someone else has the only unit in a cart; this buyer already took
    // its one "limited" (over HTTP, same buyer, another token).
    reserve(&gw, "gone", 1).await;
    let (status_code, body) = gw
        .call(
            "POST",
            "/api/reservations",
            Some(&token(&clock, "viewer-3")),
            Some(json!({"sku": "limited", "qty": 1})),
        )
        .await;
    assert_eq!(status_code, 201, "{body}");

    let t = token(&clock, "viewer-3");
    let page = buy_page(&browser, &gw, "show=refusals&lang=en", &t).await;
    for (sku, text, code) in [
        ("gone", "Sold out", "sold_out"),
        ("limited", "Limit reached", "limit_exceeded"),
        ("later", "Not open yet", "not_open"),
    ] {
        page.click(&buy_btn(sku)).await;
        let pred = format!("t === {text:?}");
        page.wait_text(&status(sku), &pred).await;
        assert_eq!(page.eval(&data(&panel(sku), "code")).await, code);
        assert_eq!(page.eval(&data(&panel(sku), "state")).await, "refused");
    }

    // The same refusal in Norwegian.
    let nb = buy_page(
        &browser,
        &gw,
        "show=refusals&lang=nb",
        &token(&clock, "viewer-4"),
    )
    .await;
    nb.click(&buy_btn("gone")).await;
    nb.wait_text(&status("gone"), "t === 'Utsolgt'").await;
    assert_eq!(nb.text(&buy_btn("gone")).await, "Kjøp");

    // The token runs out mid-session (the gateway's token clock moves past
    // exp and its leeway): the next tap says so.
    clock.set_ms((clock.now_s() + 300) * 1000 + LEEWAY_MS + 1);
    gw.create_sku(json!({"id": "fresh", "title": "fresh", "total": 5, "show": "refusals"}))
        .await;
    page.wait_for(
        "the new card",
        &format!("document.querySelector({:?}) !== null", buy_btn("fresh")),
    )
    .await;
    page.click(&buy_btn("fresh")).await;
    page.wait_text(&status("fresh"), "t === 'Session expired — refresh'")
        .await;
    assert_eq!(page.eval(&data(&panel("fresh"), "state")).await, "session");
    let sku = gw.sku("fresh").await;
    assert_eq!(sku["held"], 0, "an expired token reserved nothing");
    page.assert_clean_log(&[]);
    nb.assert_clean_log(&[]);
    browser.close().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buying_works_by_keyboard_at_phone_width_and_axe_finds_nothing_serious() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let clock = Clock::new();
    let gw = buy_gateway(&clock).await;
    gw.create_sku(json!({
        "id": "phone-tee", "title": "A tee with a rather long title for a phone",
        "total": 5, "show": "phone", "price_minor": 24900
    }))
    .await;
    gw.create_sku(json!({"id": "phone-gone", "title": "Gone", "total": 1, "show": "phone"}))
        .await;
    reserve(&gw, "phone-gone", 1).await;
    let page = browser.new_page().await;
    page.set_viewport(390, 844, true).await;
    page.goto(&gw.url(&format!(
        "/overlay?show=phone&lang=en&buy=1#token={}",
        token(&clock, "viewer-5")
    )))
    .await;
    page.wait_for(
        "Buy buttons",
        "document.querySelectorAll('.buy-btn').length === 2",
    )
    .await;
    // Keyboard: Tab to the tee's Buy button, Enter.
    let focused = "document.activeElement.closest('.card')?.dataset.sku";
    page.press("Tab").await;
    if page.eval(focused).await != "phone-tee" {
        page.press("Tab").await;
    }
    assert_eq!(page.eval(focused).await, "phone-tee");
    assert_eq!(
        page.eval("document.activeElement.className").await,
        "buy-btn"
    );
    page.press("Enter").await;
    page.wait_text(&status("phone-tee"), "t.startsWith('Reserved for you')")
        .await;
    page.click(&buy_btn("phone-gone")).await;
    page.wait_text(&status("phone-gone"), "t === 'Sold out'")
        .await;
    page.wait_for(
        "the checkout link",
        &format!(
            "!document.querySelector({:?}).hidden",
            format!("{} .buy-checkout", card("phone-tee"))
        ),
    )
    .await;
    // Nothing wider than the phone; touch targets at least 44 px.
    assert_eq!(
        page.eval("document.documentElement.scrollWidth <= window.innerWidth")
            .await,
        true
    );
    let small = page
        .eval(
            "[...document.querySelectorAll('.buy-btn:not([hidden]), .buy-checkout:not([hidden])')] \
               .map((e) => e.getBoundingClientRect()).filter((r) => r.height < 44 || r.width < 44).length",
        )
        .await;
    assert_eq!(small, 0);
    for scheme in ["light", "dark"] {
        page.set_color_scheme(scheme).await;
        page.eval(&format!(
            "document.documentElement.dataset.theme = {scheme:?}"
        ))
        .await;
        let v = a11y::axe_violations(&page).await;
        assert_eq!(v, json!([]), "{scheme}: {v:#}");
    }
    page.assert_clean_log(&[]);
    browser.close().await;
    gw.stop().await;
}

/// A shop page that embeds `/buy-button` in an iframe and hands it the
/// token by `postMessage` once the button says it is ready; it records
/// every message the button sends back.
fn shop_html(gw: &Gateway, token: &str) -> String {
    let gw_origin = gw.url("");
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>shop</title></head><body>
<iframe id="f" title="Buy" src="{gw_origin}/buy-button?sku=embed-tee&lang=en" width="380" height="220"></iframe>
<script>
window.__got = [];
const f = document.getElementById('f');
window.addEventListener('message', (ev) => {{
  if (ev.source !== f.contentWindow || ev.origin !== {gw_origin:?}) return;
  window.__got.push(ev.data.type);
  if (ev.data.type === 'holdfast:ready') f.contentWindow.postMessage({{type: 'holdfast:token', token: {token:?}}}, {gw_origin:?});
  if (ev.data.type === 'holdfast:checkout') window.__checkout = ev.data.url;
}});
</script></body></html>"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_buy_button_takes_a_token_only_from_an_allowed_origin() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let clock = Clock::new();
    // The shop's server first: its origin goes into --embed-origin.
    let shop = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = shop.local_addr().unwrap().port();
    let mut args = demo_args();
    args.buyer_tokens.keys = vec![format!("hs1:HS256:{SECRET}")];
    args.buy.checkout_url_template = Some(CHECKOUT_TEMPLATE.into());
    args.buy.checkout_url_key = Some(CHECKOUT_KEY.into());
    args.buy.embed_origins = vec![format!("http://127.0.0.1:{port}")];
    let gw = Gateway::start(args).await;
    gw.create_sku(json!({"id": "embed-tee", "title": "Embedded tee", "total": 3}))
        .await;
    let html = shop_html(&gw, &token(&clock, "shopper-1"));
    let server = tokio::spawn(async move {
        let app = axum::Router::new().route(
            "/",
            axum::routing::get(move || {
                let html = html.clone();
                async move { axum::response::Html(html) }
            }),
        );
        axum::serve(shop, app).await.unwrap();
    });

    // The allowed origin: the button takes the token, Tab and Enter buy,
    // and the shop page hears about the hand-off.
    let page = browser.new_page().await;
    page.goto(&format!("http://127.0.0.1:{port}/")).await;
    page.wait_for(
        "the button to accept the token",
        "window.__got.includes('holdfast:authed')",
    )
    .await;
    page.press("Tab").await;
    page.press("Enter").await;
    let url = page
        .wait_for("the checkout hand-off", "window.__checkout")
        .await;
    assert!(url.as_str().unwrap().contains("sku=embed-tee"), "{url}");
    assert_eq!(gw.sku("embed-tee").await["held"], 1);

    // The same page on another origin (localhost is not 127.0.0.1): the
    // token is refused, and nothing is reserved.
    let other = browser.new_page().await;
    other.goto(&format!("http://localhost:{port}/")).await;
    other
        .wait_for(
            "the button to refuse the origin",
            "window.__got.includes('holdfast:origin_refused')",
        )
        .await;
    assert_eq!(
        other.eval("window.__got.includes('holdfast:authed')").await,
        false
    );
    assert_eq!(gw.sku("embed-tee").await["held"], 1);
    page.assert_clean_log(&[]);
    server.abort();
    browser.close().await;
    gw.stop().await;
}
