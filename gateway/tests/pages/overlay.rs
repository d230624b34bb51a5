//! The viewer overlay as a streamer and the viewers live it.

use super::*;

/// The product requirement: a change reaches viewers within this long.
const VIEWER_LATENCY_MAX_MS: u64 = 1000;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

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
    let page = overlay_page(&browser, &gw, "sku=runner-42&lang=en").await;

    assert_eq!(page.text(&left("runner-42")).await, "12 left");
    assert_eq!(
        page.text(&format!("{} .title", card("runner-42"))).await,
        "Runner 42, limited"
    );
    let price = page.text(&format!("{} .price", card("runner-42"))).await;
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
    assert_eq!(
        page.eval(&data(&card("runner-42"), "bumps")).await,
        "1",
        "the change animation ran once"
    );
    assert_eq!(page.eval(&data(&card("runner-42"), "level")).await, "ok");
    page.assert_clean_log(&[]);
    browser.close().await;
    gw.stop().await;
}

/// Records, in the page, every level the card goes through, every
/// "Back in stock!" badge, and every announcement to screen readers.
const RECORDER_JS: &str = r#"(sel) => {
  const card = document.querySelector(sel);
  const badge = card.querySelector('.badge');
  const announce = document.getElementById('announce');
  window.__levels = [card.dataset.level];
  window.__backs = 0;
  window.__announced = [];
  new MutationObserver(() => {
    const l = card.dataset.level;
    if (window.__levels[window.__levels.length - 1] !== l) window.__levels.push(l);
  }).observe(card, {attributes: true, attributeFilter: ['data-level']});
  new MutationObserver(() => {
    if (badge.textContent === 'Back in stock!' && !badge.hidden) window.__backs += 1;
  }).observe(badge, {childList: true, characterData: true, subtree: true, attributes: true});
  new MutationObserver(() => window.__announced.push(announce.textContent))
    .observe(announce, {childList: true, characterData: true, subtree: true});
  return true;
}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlay_never_says_sold_out_while_units_sit_in_carts() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let gw = Gateway::demo().await;
    // The reported show: 3 units, short holds, buyers reserving everything
    // again as soon as it comes back and paying for little.
    gw.create_sku(json!({"id": "flap", "title": "Flap", "total": 3, "hold_ttl_ms": 1200}))
        .await;
    let page = overlay_page(&browser, &gw, "sku=flap&lang=en&low=5").await;
    let level = data(&card("flap"), "level");
    page.wait_text(&left("flap"), "t === 'Only 3 left!'").await;
    // Only what matters is announced: the page as a whole is not a live
    // region that reads out every count.
    assert_eq!(
        page.eval("document.getElementById('overlay').getAttribute('aria-live')")
            .await,
        Value::Null
    );
    page.eval(&format!(
        "({RECORDER_JS})({})",
        serde_json::to_string(&card("flap")).unwrap()
    ))
    .await;

    for _ in 0..3 {
        for _ in 0..3 {
            reserve(&gw, "flap", 1).await;
        }
        assert_eq!(
            page.wait_text(&left("flap"), "t === 'All in carts'").await,
            "All in carts"
        );
        assert_eq!(page.eval(&level).await, "carts");
        assert_eq!(page.text(&badge("flap")).await, "may come back");
        // The holds expire: the units come back, which is not news.
        page.wait_text(&left("flap"), "t === 'Only 3 left!'").await;
    }
    // Two units paid, one given back, then the last one paid: sold out.
    let holds = [
        reserve(&gw, "flap", 1).await,
        reserve(&gw, "flap", 1).await,
        reserve(&gw, "flap", 1).await,
    ];
    page.wait_text(&left("flap"), "t === 'All in carts'").await;
    hold_action(&gw, &holds[0], "commit").await;
    hold_action(&gw, &holds[1], "commit").await;
    hold_action(&gw, &holds[2], "release").await;
    page.wait_text(&left("flap"), "t === 'Only 1 left!'").await;
    sell(&gw, "flap", 1).await;
    page.wait_text(&left("flap"), "t === 'SOLD OUT'").await;
    // Restocked: back in stock, for real this time.
    admin(
        &gw,
        "POST",
        "/api/admin/skus/flap/restock",
        json!({"qty": 2}),
    )
    .await;
    page.wait_text(&badge("flap"), "t === 'Back in stock!'")
        .await;
    page.wait_text(&left("flap"), "t === 'Only 2 left!'").await;

    let levels = page.eval("window.__levels").await;
    let sold_outs = levels
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| *l == "soldout")
        .count();
    assert_eq!(
        sold_outs, 1,
        "SOLD OUT once, at the real sell-out: {levels}"
    );
    assert_eq!(
        page.eval("window.__backs").await,
        1,
        "back in stock once: {levels}"
    );
    assert_eq!(
        page.eval("window.__announced").await,
        json!(["Flap: sold out", "Flap: back in stock, 2 left"]),
        "screen readers hear the two changes that matter, not the counts"
    );
    page.assert_clean_log(&[]);
    browser.close().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlay_shows_low_sold_out_back_in_stock_and_the_sale_window() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let gw = Gateway::demo().await;
    gw.create_sku(
        json!({"id": "drop-1", "title": "Drop one", "price_minor": 10000,
                         "show": "drops", "total": 4}),
    )
    .await;
    let page = overlay_page(&browser, &gw, "sku=drop-1&low=3").await;
    let level = data(&card("drop-1"), "level");
    assert_eq!(page.text(&left("drop-1")).await, "4 left");
    assert_eq!(page.eval(&level).await, "ok");
    let accent = page.eval(&style(&left("drop-1"), "color")).await;

    sell(&gw, "drop-1", 1).await;
    page.wait_text(&left("drop-1"), "t === 'Only 3 left!'")
        .await;
    assert_eq!(page.eval(&level).await, "low");
    sell(&gw, "drop-1", 3).await;
    page.wait_text(&left("drop-1"), "t === 'SOLD OUT'").await;
    assert_eq!(page.eval(&level).await, "soldout");

    // A restock after a real sell-out is back in stock.
    admin(
        &gw,
        "POST",
        "/api/admin/skus/drop-1/restock",
        json!({"qty": 2}),
    )
    .await;
    page.wait_text(&left("drop-1"), "t === 'Only 2 left!'")
        .await;
    page.wait_text(&badge("drop-1"), "t === 'Back in stock!'")
        .await;
    assert_eq!(
        page.eval(&style(&badge("drop-1"), "display")).await,
        "block"
    );
    admin(
        &gw,
        "POST",
        "/api/admin/skus/drop-1/restock",
        json!({"qty": 10}),
    )
    .await;
    page.wait_text(&left("drop-1"), "t === '12 left'").await;
    assert_eq!(page.eval(&level).await, "ok");

    // Paused and scheduled sales say so, in the text colour, not the
    // buyable accent, with the stock as the note (the state replaces the
    // back-in-stock badge, which would mislead while no one can buy).
    let window = "/api/admin/skus/drop-1/window";
    admin(&gw, "POST", window, json!({"state": "paused"})).await;
    page.wait_text(&left("drop-1"), "t === 'Paused'").await;
    assert_eq!(page.eval(&level).await, "paused");
    assert_eq!(page.text(&badge("drop-1")).await, "12 left");
    assert_ne!(
        page.eval(&style(&left("drop-1"), "color")).await,
        accent,
        "not in the buyable colour"
    );
    let at = 4_102_444_800_000u64; // 2100-01-01: too far for a countdown
    admin(
        &gw,
        "POST",
        window,
        json!({"state": "scheduled", "opens_at_ms": at}),
    )
    .await;
    let opens = page
        .wait_text(&left("drop-1"), "t.startsWith('Opens ')")
        .await;
    assert!(
        opens.contains("2100"),
        "not today, so with the date: {opens}"
    );
    assert_eq!(page.eval(&level).await, "scheduled");
    assert_ne!(page.eval(&style(&left("drop-1"), "color")).await, accent);
    admin(&gw, "POST", window, json!({"state": "closed"})).await;
    page.wait_text(&left("drop-1"), "t === 'Sale closed'").await;
    assert_eq!(page.eval(&level).await, "closed");
    page.assert_clean_log(&[]);
    browser.close().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlay_counts_down_to_a_drop_and_opens_it_on_time() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let gw = Gateway::demo().await;
    // Far enough ahead that a slow, shared machine still sees the
    // countdown, near enough not to make the test long.
    let opens_at = now_ms() + 8_000;
    gw.create_sku(json!({"id": "drop-9", "title": "Drop nine", "total": 5,
                         "window": {"state": "scheduled", "opens_at_ms": opens_at}}))
        .await;
    let page = overlay_page(&browser, &gw, "sku=drop-9&lang=en&low=0").await;
    let text = page
        .wait_text(&left("drop-9"), "/^Opens in 0:0[1-8]$/.test(t)")
        .await;
    assert!(text.starts_with("Opens in 0:0"), "{text}");
    assert_eq!(
        page.eval(&data(&card("drop-9"), "level")).await,
        "scheduled"
    );
    assert_eq!(page.text(&badge("drop-9")).await, "5 left");
    // It ticks down without any frame from the server...
    page.wait_text(
        &left("drop-9"),
        &format!("t !== {text:?} && t.startsWith('Opens in')"),
    )
    .await;
    // ...and the drop opens on the server's time, on its own.
    page.wait_text(&left("drop-9"), "t === '5 left'").await;
    assert_eq!(page.eval(&data(&card("drop-9"), "level")).await, "ok");
    reserve(&gw, "drop-9", 1).await; // the gateway agrees: on sale
    page.wait_text(&left("drop-9"), "t === '4 left'").await;
    page.assert_clean_log(&[]);
    browser.close().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlay_shows_a_new_title_price_and_image_at_once() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let gw = Gateway::demo().await;
    let page = overlay_page(&browser, &gw, "sku=tee-black-m&lang=en").await;
    let c = card("tee-black-m");
    page.wait_for(
        "the image",
        &format!("document.querySelector('{c} .img').complete && !document.querySelector('{c} .img').hidden"),
    )
    .await;
    admin(
        &gw,
        "PATCH",
        "/api/admin/skus/tee-black-m",
        json!({"title": "Tee, black, M (signed)", "price_minor": 29_900,
               "image_url": "/assets/img/cap.svg"}),
    )
    .await;
    page.wait_text(&format!("{c} .title"), "t === 'Tee, black, M (signed)'")
        .await;
    page.wait_text(&format!("{c} .price"), "t.includes('299.00')")
        .await;
    page.wait_for(
        "the new image",
        &format!(
            "document.querySelector('{c} .img').getAttribute('src') === '/assets/img/cap.svg'"
        ),
    )
    .await;
    assert_eq!(page.text(&left("tee-black-m")).await, "120 left");
    assert_eq!(
        page.eval(&data(&c, "bumps")).await,
        "0",
        "no count changed: the frame was the display data's own"
    );
    page.assert_clean_log(&[]);
    browser.close().await;
    gw.stop().await;
}

/// Everything wrong with the layout of the cards now on screen, as text.
const LAYOUT_PROBLEMS_JS: &str = r#"(() => {
  const vw = window.innerWidth;
  const out = [];
  const sw = document.documentElement.scrollWidth;
  if (sw > vw) out.push(`the page scrolls sideways by ${sw - vw}px`);
  for (const c of document.querySelectorAll('.card')) {
    const id = c.dataset.sku;
    const r = c.getBoundingClientRect();
    if (r.left < -0.5 || r.right > vw + 0.5) out.push(`${id}: card spans ${r.left}..${r.right} of ${vw}`);
    for (const part of c.querySelectorAll('.title, .stock, .left, .badge, .price')) {
      const p = part.getBoundingClientRect();
      if (p.width > 0 && (p.right > r.right + 0.5 || p.left < r.left - 0.5)) out.push(`${id}: .${part.className} sticks out of its card`);
    }
    const t = c.querySelector('.title');
    const lines = Math.round(t.getBoundingClientRect().height / parseFloat(getComputedStyle(t).lineHeight));
    if (lines > 2) out.push(`${id}: title on ${lines} lines`);
    const node = t.firstChild;
    if (node) {
      // Words, and the parts of hyphenated ones (a hyphen is a fair break).
      for (const m of node.data.matchAll(/[^\s-]+/g)) {
        const range = document.createRange();
        range.setStart(node, m.index);
        range.setEnd(node, m.index + m[0].length);
        // Distinct lines (the clamped last line reports its text twice).
        const tops = new Set([...range.getClientRects()].filter((x) => x.width > 0).map((x) => Math.round(x.top)));
        if (tops.size > 1) out.push(`${id}: "${m[0]}" broken across lines`);
      }
    }
    const tr = t.getBoundingClientRect();
    const s = c.querySelector('.stock').getBoundingClientRect();
    const overlap = !(s.left >= tr.right || s.right <= tr.left || s.top >= tr.bottom || s.bottom <= tr.top);
    if (overlap) out.push(`${id}: the stock covers the title`);
  }
  return out;
})()"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlay_fits_any_width_at_any_size_and_clamps_long_titles() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let gw = Gateway::demo().await;
    let long = "Limited edition hand-stitched waxed canvas weekender bag with leather \
                handles and a detachable shoulder strap, in forest green, signed by the \
                designer live on stream tonight only";
    assert!(long.len() <= 200);
    gw.create_sku(
        json!({"id": "long-1", "title": long, "show": "demo", "total": 7,
                         "image_url": "/assets/img/tote.svg"}),
    )
    .await;
    // Sold out and low cards, the widest texts.
    for _ in 0..12 {
        sell(&gw, "runner-42", 1).await;
    }
    let page = browser.new_page().await;
    for (width, height, mobile) in [(390, 844, true), (1280, 720, false)] {
        page.set_viewport(width, height, mobile).await;
        for size in ["s", "m", "l", "xl", "0.5", "2", "4"] {
            open_overlay(
                &page,
                &gw,
                &format!("show=demo&lang=de&max=6&low=50&size={size}"),
            )
            .await;
            page.wait_for(
                "six cards with titles",
                "document.querySelectorAll('.card').length === 6 && \
                 [...document.querySelectorAll('.card .title')].every((t) => t.textContent)",
            )
            .await;
            let problems = page.eval(LAYOUT_PROBLEMS_JS).await;
            assert_eq!(problems, json!([]), "at {width} px with size={size}");
            // The long title is cut at two lines with an ellipsis, and the
            // whole of it is in the tooltip.
            let clamped = page
                .eval(&format!(
                    "(() => {{ const t = document.querySelector('{} .title'); \
                     return t.scrollHeight > t.clientHeight + 1 && getComputedStyle(t).webkitLineClamp === '2'; }})()",
                    card("long-1")
                ))
                .await;
            assert_eq!(clamped, true, "at {width} px with size={size}");
            assert_eq!(
                page.eval(&format!(
                    "document.querySelector('{}').title",
                    card("long-1")
                ))
                .await,
                long
            );
        }
    }

    // The change animation never covers the title, even at its peak (on
    // a wide page, where the stock sits beside the title).
    page.set_viewport(1280, 720, false).await;
    open_overlay(&page, &gw, "sku=hoodie-sand&lang=en&low=50").await;
    page.wait_text(&left("hoodie-sand"), "t === 'Only 40 left!'")
        .await;
    page.eval(
        "window.__peak = null; document.addEventListener('animationstart', (e) => { \
           for (const a of e.target.getAnimations()) { a.pause(); a.currentTime = a.effect.getTiming().duration * 0.35; } \
           const l = e.target.getBoundingClientRect(); \
           const t = e.target.closest('.card').querySelector('.title').getBoundingClientRect(); \
           window.__peak = {overlap: !(l.left >= t.right || l.right <= t.left || l.top >= t.bottom || l.bottom <= t.top), \
                            left: l.left, titleRight: t.right}; }, true)",
    )
    .await;
    reserve(&gw, "hoodie-sand", 1).await;
    let peak = page.wait_for("the animation's peak", "window.__peak").await;
    assert!(
        peak["titleRight"].as_f64().unwrap() > 200.0,
        "title and stock side by side: {peak}"
    );
    assert_eq!(peak["overlap"], false, "{peak}");
    page.assert_clean_log(&[]);
    browser.close().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlay_hides_an_image_that_fails_to_load() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let mut args = demo_args();
    // An origin that never resolves: the image is blocked, as a CDN outage
    // or a wrong URL would block it.
    args.image_origins = vec!["https://cdn.invalid".into()];
    let gw = Gateway::start(args).await;
    gw.create_sku(
        json!({"id": "img-404", "title": "Missing image", "show": "imgs", "total": 3,
                         "image_url": "/assets/img/missing.svg"}),
    )
    .await;
    gw.create_sku(
        json!({"id": "img-cdn", "title": "CDN image", "show": "imgs", "total": 3,
                         "image_url": "https://cdn.invalid/p/1.jpg"}),
    )
    .await;
    gw.create_sku(
        json!({"id": "img-ok", "title": "Good image", "show": "imgs", "total": 3,
                         "image_url": "/assets/img/cap.svg"}),
    )
    .await;
    let page = overlay_page(&browser, &gw, "show=imgs&lang=en").await;
    for sku in ["img-404", "img-cdn"] {
        page.wait_for(
            &format!("{sku}'s image to be hidden"),
            &format!(
                "(() => {{ const i = document.querySelector('{} .img'); \
                 return i.hidden && getComputedStyle(i).display === 'none'; }})()",
                card(sku)
            ),
        )
        .await;
    }
    page.wait_for(
        "the good image",
        &format!(
            "(() => {{ const i = document.querySelector('{} .img'); \
             return i.complete && i.naturalWidth > 0 && getComputedStyle(i).display !== 'none'; }})()",
            card("img-ok")
        ),
    )
    .await;
    page.assert_clean_log(&["404", "ERR_NAME_NOT_RESOLVED", "Failed to load resource"]);
    browser.close().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlay_reconnects_after_a_gateway_restart_and_shows_the_current_count() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let gw = Gateway::demo().await;
    let page = overlay_page(&browser, &gw, "sku=runner-42").await;
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
    let page = overlay_page(
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
        .eval(&format!(
            "document.querySelector('{} .price').textContent",
            card("hoodie-sand")
        ))
        .await;
    assert!(
        plain(nb_price.as_str().unwrap()).contains("599,00"),
        "{nb_price}"
    );

    // In carts, then sold out, in Norwegian.
    let holds: Vec<String> = {
        let mut v = Vec::new();
        for _ in 0..12 {
            v.push(reserve(&gw, "runner-42", 1).await);
        }
        v
    };
    page.wait_text(&left("runner-42"), "t === 'Alt i handlekurver'")
        .await;
    assert_eq!(page.text(&badge("runner-42")).await, "kan komme tilbake");
    for h in &holds {
        hold_action(&gw, h, "commit").await;
    }
    page.wait_text(&left("runner-42"), "t === 'UTSOLGT'").await;

    // ?max= bounds the cards; a bad value of any parameter falls back to its
    // default instead of breaking the page.
    let capped = overlay_page(&browser, &gw, "show=demo&max=2&image=0&size=0.5").await;
    capped
        .wait_for(
            "two cards",
            "document.querySelectorAll('.card').length === 2",
        )
        .await;
    assert_eq!(capped.eval(&style(".card .img", "display")).await, "none");
    assert_eq!(capped.eval(&style("body", "fontSize")).await, "10px");
    let odd = overlay_page(
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
