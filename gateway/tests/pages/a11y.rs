//! Accessibility and stability of both pages: an axe-core scan in both
//! themes, 44 px touch targets on a phone, the skip link, where focus goes,
//! and no layout shift while a show sells.
//!
//! axe-core (MPL-2.0, vendored in `pages/vendor/`, see README) is injected
//! over the DevTools protocol, so the pages' own policy never has to allow
//! it.

use super::*;

/// The vendored axe-core build.
const AXE_JS: &str = include_str!("vendor/axe-core-4.14.1.min.js");

/// Runs axe-core on the page and returns its serious and critical
/// violations (rule, impact, the first nodes and why).
pub async fn axe_violations(page: &Page) -> Value {
    page.eval(&format!("{AXE_JS}\n;true")).await;
    page.eval(
        "(async () => { \
           const r = await axe.run(document, {resultTypes: ['violations']}); \
           return r.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical') \
             .map((v) => ({id: v.id, impact: v.impact, help: v.help, \
                           nodes: v.nodes.slice(0, 4).map((n) => `${n.target.join(' ')}: ${n.failureSummary}`)})); \
         })()",
    )
    .await
}

/// A show with every state on screen: sales, units in carts, low, sold
/// out, paused, scheduled.
async fn lively_show(gw: &Gateway) {
    for _ in 0..12 {
        sell(gw, "runner-42", 1).await;
    }
    for _ in 0..3 {
        reserve(gw, "hoodie-sand", 2).await;
    }
    sell(gw, "tee-black-m", 3).await;
    pause_and_schedule(gw).await;
}

/// Cap paused, the tote scheduled far ahead: two sale states on screen.
async fn pause_and_schedule(gw: &Gateway) {
    let window = |sku: &str| format!("/api/admin/skus/{sku}/window");
    admin(gw, "POST", &window("cap-olive"), json!({"state": "paused"})).await;
    let later = json!({"state": "scheduled", "opens_at_ms": 4_102_444_800_000u64});
    admin(gw, "POST", &window("tote-canvas"), later).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axe_finds_nothing_serious_in_either_page_in_either_theme() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let gw = Gateway::demo().await;
    lively_show(&gw).await;
    let mut found = Vec::new();
    for scheme in ["light", "dark"] {
        for (width, height, mobile) in [(1280, 900, false), (390, 844, true)] {
            let dash = browser.new_page().await;
            dash.set_viewport(width, height, mobile).await;
            dash.set_color_scheme(scheme).await;
            open_dashboard(&dash, &gw, "show=demo&lang=en").await;
            // Signed in, with an outcome and a refusal on screen.
            sign_in_admin(&dash).await;
            dash.click("tr[data-sku=\"cap-olive\"] button.manage").await;
            dash.click("#restock-btn").await;
            dash.wait_text("#action-result", "t.startsWith('✓')").await;
            dash.type_into("#new-id", "runner-42").await;
            dash.type_into("#new-title", "Dup").await;
            dash.type_into("#new-price", "1").await;
            dash.click("#create-btn").await;
            dash.wait_text("#create-result", "t.startsWith('✗')").await;
            let v = axe_violations(&dash).await;
            if v != json!([]) {
                found.push(format!("dashboard, {scheme}, {width} px: {v:#}"));
            }
            dash.close().await;
        }
        let theme = if scheme == "dark" { "dark" } else { "light" };
        let view = browser.new_page().await;
        view.set_color_scheme(scheme).await;
        open_overlay(&view, &gw, &format!("show=demo&lang=en&theme={theme}")).await;
        view.wait_for(
            "five cards",
            "document.querySelectorAll('.card').length === 5",
        )
        .await;
        let v = axe_violations(&view).await;
        if v != json!([]) {
            found.push(format!("overlay, theme {theme}: {v:#}"));
        }
        view.close().await;
    }
    assert!(found.is_empty(), "axe-core found:\n{}", found.join("\n"));
    browser.close().await;
    gw.stop().await;
}

/// Every visible control smaller than 44 x 44 CSS pixels.
const SMALL_TARGETS_JS: &str = "(() => [...document.querySelectorAll('a[href], button, input, select, summary')] \
  .filter((e) => e.getClientRects().length > 0 && !e.closest('dialog:not([open])')) \
  .map((e) => [e, e.getBoundingClientRect()]) \
  .filter(([, r]) => r.width < 44 || r.height < 44) \
  .map(([e, r]) => `${e.tagName.toLowerCase()}#${e.id || ''}.${e.className} '${(e.getAttribute('aria-label') || e.textContent).trim()}' ${Math.round(r.width)}x${Math.round(r.height)}`))()";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_on_a_phone_has_big_targets_a_skip_link_and_keeps_focus() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let gw = Gateway::demo().await;
    let dash = browser.new_page().await;
    dash.set_viewport(390, 844, true).await;
    open_dashboard(&dash, &gw, "show=demo&lang=en").await;

    // The skip link comes first and lands on the products.
    dash.press("Tab").await;
    assert_eq!(dash.eval("document.activeElement.className").await, "skip");
    let top = dash
        .eval("document.activeElement.getBoundingClientRect().top")
        .await;
    assert!(top.as_f64().unwrap() >= 0.0, "visible when focused: {top}");
    dash.press("Enter").await;
    dash.wait_for(
        "focus on the products",
        "document.activeElement.id === 'products-h'",
    )
    .await;

    // Signing in with the keyboard keeps focus in the page.
    dash.click("#token").await;
    dash.type_into("#token", ADMIN).await;
    dash.press("Enter").await;
    dash.wait_for(
        "signed in with statistics",
        "document.body.dataset.auth === 'admin' && document.body.dataset.statsSeq",
    )
    .await;
    assert_eq!(
        dash.eval("document.activeElement.id").await,
        "session",
        "focus on what the sign-in did, not lost to the page"
    );

    let small = dash.eval(SMALL_TARGETS_JS).await;
    assert_eq!(small, json!([]), "touch targets under 44 px");

    // Manage moves focus into the panel; an action keeps it on its button;
    // a question gives it back when answered.
    dash.click("tr[data-sku=\"tote-canvas\"] button.manage")
        .await;
    assert_eq!(dash.eval("document.activeElement.id").await, "manage-h");
    assert_eq!(dash.text("#manage-h").await, "Manage Canvas tote");
    dash.click("#restock-btn").await;
    dash.wait_text("#action-result", "t.startsWith('✓')").await;
    assert_eq!(dash.eval("document.activeElement.id").await, "restock-btn");
    dash.click("#close-btn").await;
    dash.wait_for("the question", "document.getElementById('confirm').open")
        .await;
    assert_eq!(
        dash.eval("document.activeElement.id").await,
        "confirm-cancel",
        "the safe answer has focus"
    );
    dash.press("Escape").await;
    dash.wait_for(
        "the question to close",
        "!document.getElementById('confirm').open",
    )
    .await;
    assert_eq!(dash.eval("document.activeElement.id").await, "close-btn");
    assert_eq!(
        gw.sku("tote-canvas").await["state"],
        "open",
        "Escape changed nothing"
    );
    dash.assert_clean_log(&[]);
    browser.close().await;
    gw.stop().await;
}

/// Sums layout shifts (none right after input counts) from now on.
const CLS_OBSERVER_JS: &str = "window.__cls = 0; window.__shifts = []; \
  new PerformanceObserver((list) => { for (const e of list.getEntries()) { \
    if (!e.hadRecentInput) { window.__cls += e.value; \
      window.__shifts.push({value: e.value, sources: (e.sources || []).map((s) => s.node ? (s.node.id || s.node.className || s.node.nodeName) : '?')}); } } }) \
  .observe({type: 'layout-shift', buffered: false}); true";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_does_not_shift_while_a_show_sells() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    for (width, height, mobile) in [(390, 844, true), (1280, 900, false)] {
        let gw = Gateway::demo().await;
        let dash = browser.new_page().await;
        dash.set_viewport(width, height, mobile).await;
        open_dashboard(&dash, &gw, "show=demo&lang=en").await;
        sign_in_admin(&dash).await;
        // Where the host looks (shifts off screen do not count): the whole
        // page from the top on a desktop, the products on a phone. The old
        // table moved its rows by 0.045 here at 1280 px.
        let watch = if mobile {
            "document.getElementById('products-h').scrollIntoView({block: 'start', behavior: 'instant'})"
        } else {
            "window.scrollTo(0, 0)"
        };
        dash.eval(watch).await;
        dash.eval(CLS_OBSERVER_JS).await;
        // A burst in the rows on screen: sales, every unit of the first
        // product in carts, then sold out and back, a pause, a schedule.
        for _ in 0..8 {
            sell(&gw, "tee-black-m", 1).await;
            reserve(&gw, "runner-42", 1).await;
        }
        let mut hoodies = Vec::new();
        for _ in 0..20 {
            hoodies.push(reserve(&gw, "hoodie-sand", 2).await);
        }
        dash.wait_text(&cell("hoodie-sand", "state"), "t === 'all in carts'")
            .await;
        for h in &hoodies {
            hold_action(&gw, h, "commit").await;
        }
        dash.wait_text(&cell("hoodie-sand", "state"), "t.startsWith('sold out')")
            .await;
        admin(
            &gw,
            "POST",
            "/api/admin/skus/hoodie-sand/restock",
            json!({"qty": 1000}),
        )
        .await;
        pause_and_schedule(&gw).await;
        dash.wait_text(&cell("hoodie-sand", "available"), "t === '1,000'")
            .await;
        dash.wait_text(&cell("tote-canvas", "state"), "t.startsWith('opens')")
            .await;
        dash.wait_text(&cell("tee-black-m", "sold"), "t === '8'")
            .await;
        // Two more statistics frames, so their numbers are drawn too.
        let seq: u64 = dash
            .eval("Number(document.body.dataset.statsSeq)")
            .await
            .as_u64()
            .unwrap();
        dash.wait_for(
            "two more statistics frames",
            &format!("Number(document.body.dataset.statsSeq) >= {}", seq + 2),
        )
        .await;
        dash.wait_for(
            "a frame drawn",
            "new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))",
        )
        .await;
        let cls = dash.eval("window.__cls").await.as_f64().unwrap();
        let shifts = dash.eval("window.__shifts").await;
        eprintln!("cumulative layout shift during the burst at {width} px: {cls:.4}");
        assert!(
            cls < 0.01,
            "layout shifted by {cls} at {width} px during a burst: {shifts:#}"
        );
        dash.assert_clean_log(&[]);
        dash.close().await;
        gw.stop().await;
    }
    browser.close().await;
}
