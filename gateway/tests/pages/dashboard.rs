//! The host dashboard as a host running a show lives it.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_restock_button_updates_the_table_and_the_overlay() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let gw = Gateway::demo().await;
    let dash = dashboard_page(&browser, &gw, "show=demo&lang=en").await;
    let viewer = overlay_page(&browser, &gw, "sku=tee-black-m&lang=en").await;
    assert_eq!(dash.text(&cell("tee-black-m", "available")).await, "120");
    assert_eq!(viewer.text(&left("tee-black-m")).await, "120 left");
    assert_eq!(
        dash.eval("document.querySelectorAll('#products tbody tr').length")
            .await,
        5
    );
    // Controls are locked until the host signs in; KPIs need it too.
    assert_eq!(
        dash.eval("document.getElementById('manage-controls').disabled")
            .await,
        true
    );
    assert_eq!(dash.text(&kpi("revenue")).await, "—");

    sign_in_admin(&dash).await;
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
    assert!(result.contains("Restocked Tee, black, M by 15"), "{result}");
    assert_eq!(
        dash.eval("document.activeElement.id").await,
        "restock-btn",
        "focus stays on the control that acted"
    );
    dash.wait_text(&cell("tee-black-m", "available"), "t === '135'")
        .await;
    viewer
        .wait_text(&left("tee-black-m"), "t === '135 left'")
        .await;
    assert_eq!(gw.sku("tee-black-m").await["total"], 135);
    dash.assert_clean_log(&[]);
    viewer.assert_clean_log(&[]);

    // The token lives as long as the tab: a reload keeps it (and presents
    // it again), another tab does not have it.
    open_dashboard(&dash, &gw, "show=demo&lang=en").await;
    dash.wait_for(
        "the reloaded page to be an admin's again",
        "document.body.dataset.auth === 'admin' && document.body.dataset.statsSeq",
    )
    .await;
    assert_eq!(
        dash.eval("document.getElementById('manage-controls').disabled")
            .await,
        false
    );
    let other = dashboard_page(&browser, &gw, "show=demo").await;
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
    let dash = dashboard_page(&browser, &gw, "").await;
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
    assert_eq!(
        dash.eval("document.activeElement.id").await,
        "token",
        "focus back in the field to try again"
    );

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
    let dash = admin_dashboard(&browser, &gw, "show=demo&lang=en").await;

    // The operator restarts the gateway with a new admin token: the
    // dashboard presents its token on reconnecting, and says at once that
    // it is no longer accepted.
    let mut args = demo_args();
    args.admin_token = Some("rotated-admin-token".into());
    let gw = restart(gw, args).await;
    dash.wait_text("#auth-msg", "t.includes('no longer accepts')")
        .await;
    assert_eq!(dash.eval("document.body.dataset.auth").await, "none");
    assert_eq!(dash.eval("sessionStorage.length").await, 0);
    assert_eq!(
        dash.eval("document.getElementById('manage-controls').disabled")
            .await,
        true
    );
    dash.wait_for(
        "live again as a viewer",
        "document.getElementById('conn').dataset.status === 'live'",
    )
    .await;
    assert_eq!(gw.sku("cap-olive").await["total"], 200, "nothing changed");
    dash.assert_clean_log(&["WebSocket connection to"]);
    browser.close().await;
    gw.stop().await;
}

/// Clicks the undo button of the newest activity entry, once it offers
/// `label`, and waits until it is done.
pub async fn undo_latest(dash: &Page, label: &str) {
    let sel = "#log li:first-child button[data-undo]";
    dash.wait_text(sel, &format!("t === {label:?}")).await;
    dash.eval(&format!("document.querySelector('{sel}').id = 'undo-now'"))
        .await;
    dash.click("#undo-now").await;
    dash.wait_text("#undo-now", "t === 'Undone'").await;
    dash.eval("document.getElementById('undo-now').removeAttribute('id')")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_confirms_what_stops_sales_and_undoes_from_the_activity_log() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let gw = Gateway::demo().await;
    let dash = admin_dashboard(&browser, &gw, "show=demo&lang=en").await;

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

    // "Manage" names its product and moves focus into the panel.
    let manage = "tr[data-sku=\"scarf-red\"] button.manage";
    assert_eq!(
        dash.eval(&format!(
            "document.querySelector('{manage}').getAttribute('aria-label')"
        ))
        .await,
        "Manage Scarf, red"
    );
    dash.click(manage).await;
    assert_eq!(dash.eval("document.activeElement.id").await, "manage-h");
    assert_eq!(dash.text("#manage-h").await, "Manage Scarf, red");

    // Adjust asks first; cancelled, nothing happens.
    dash.type_into("#adjust-qty", "2").await;
    dash.click("#adjust-btn").await;
    dash.wait_for("the question", "document.getElementById('confirm').open")
        .await;
    let question = dash.text("#confirm-title").await;
    assert_eq!(question, "Remove 2 from Scarf, red?");
    dash.click("#confirm-cancel").await;
    assert_eq!(
        dash.eval("document.getElementById('confirm').open").await,
        false
    );
    assert_eq!(dash.eval("document.activeElement.id").await, "adjust-btn");
    assert_eq!(gw.sku("scarf-red").await["available"], 7, "cancelled");
    // Confirmed, it happens, and the log offers to restock them back.
    dash.click("#adjust-btn").await;
    dash.click("#confirm-ok").await;
    dash.wait_text(&cell("scarf-red", "available"), "t === '5'")
        .await;
    assert_eq!(dash.eval("document.activeElement.id").await, "adjust-btn");
    undo_latest(&dash, "Undo: restock 2").await;
    dash.wait_text(&cell("scarf-red", "available"), "t === '7'")
        .await;
    // Too many: the refusal is shown.
    dash.type_into("#adjust-qty", "50").await;
    dash.click("#adjust-btn").await;
    dash.click("#confirm-ok").await;
    let too_many = dash.wait_text("#action-result", "t.startsWith('✗')").await;
    assert!(too_many.contains("409 not_enough_available"), "{too_many}");
    assert_eq!(gw.sku("scarf-red").await["available"], 7);

    // Per-buyer limit.
    dash.type_into("#limit-qty", "3").await;
    dash.click("#limit-btn").await;
    dash.wait_text("#action-result", "t.includes('at most 3 per buyer')")
        .await;
    assert_eq!(gw.sku("scarf-red").await["buyer_limit"], 3);

    // Pause asks first; reservations are refused; undo reopens.
    dash.click("#pause-btn").await;
    assert_eq!(
        dash.text("#confirm-title").await,
        "Pause the sale of Scarf, red?"
    );
    dash.click("#confirm-ok").await;
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
    undo_latest(&dash, "Undo: reopen").await;
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

    // Close asks first; undo puts the schedule back.
    dash.click("#close-btn").await;
    dash.wait_for("the question", "document.getElementById('confirm').open")
        .await;
    assert!(
        dash.text("#confirm-text")
            .await
            .contains("can no longer reserve")
    );
    dash.click("#confirm-ok").await;
    dash.wait_text(&cell("scarf-red", "state"), "t === 'closed'")
        .await;
    assert_eq!(gw.sku("scarf-red").await["state"], "closed");
    undo_latest(&dash, "Undo: back to scheduled").await;
    dash.wait_text(&cell("scarf-red", "state"), "t.startsWith('opens ')")
        .await;
    assert_eq!(gw.sku("scarf-red").await["opens_at_ms"], expected_ms);

    // Title, price and image from the dashboard, with undo.
    dash.type_into("#edit-title", "Scarf, red (last ones)")
        .await;
    dash.type_into("#edit-price", "199").await;
    dash.type_into("#edit-image", "/assets/img/cap.svg").await;
    dash.click("#edit-btn").await;
    dash.wait_text(
        &format!("{} .title", cell("scarf-red", "product")),
        "t === 'Scarf, red (last ones)'",
    )
    .await;
    assert!(
        dash.text(&cell("scarf-red", "price"))
            .await
            .contains("199.00")
    );
    let meta = &gw.sku("scarf-red").await["meta"];
    assert_eq!(meta["image_url"], "/assets/img/cap.svg");
    assert_eq!(meta["price_minor"], 19900);
    undo_latest(&dash, "Undo: restore the previous title, price and image").await;
    dash.wait_text(
        &format!("{} .title", cell("scarf-red", "product")),
        "t === 'Scarf, red'",
    )
    .await;
    assert_eq!(gw.sku("scarf-red").await["meta"]["price_minor"], 24950);
    // A refused image URL says why.
    dash.type_into("#edit-image", "javascript:alert(1)").await;
    dash.click("#edit-btn").await;
    let bad = dash.wait_text("#action-result", "t.startsWith('✗')").await;
    assert!(bad.contains("400 invalid_image_url"), "{bad}");
    assert_eq!(
        gw.sku("scarf-red").await["meta"]["image_url"],
        "/assets/img/tee.svg"
    );
    let entries = dash
        .eval("document.querySelectorAll('#log li').length")
        .await;
    assert!(entries.as_u64().unwrap() >= 13, "{entries}");
    dash.assert_clean_log(&["status of 409", "status of 400"]);
    browser.close().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_rows_have_quick_restock_and_pause_on_a_phone() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let gw = Gateway::demo().await;
    let dash = browser.new_page().await;
    dash.set_viewport(390, 844, true).await;
    open_dashboard(&dash, &gw, "show=demo&lang=en").await;
    sign_in_admin(&dash).await;
    let quick = |i: usize| format!("tr[data-sku=\"cap-olive\"] .quick button:nth-child({i})");
    let label = |i: usize| {
        format!(
            "document.querySelector('{}').getAttribute('aria-label')",
            quick(i)
        )
    };
    assert_eq!(dash.eval(&label(1)).await, "Restock Cap, olive by 1");
    assert_eq!(dash.eval(&label(3)).await, "Restock Cap, olive by 10");
    assert_eq!(dash.eval(&label(4)).await, "Pause the sale of Cap, olive");
    assert_eq!(dash.eval(&label(5)).await, "Manage Cap, olive");
    for (i, expect) in [(1, "201"), (2, "206"), (3, "216")] {
        dash.click(&quick(i)).await;
        dash.wait_text(
            &cell("cap-olive", "available"),
            &format!("t === '{expect}'"),
        )
        .await;
    }
    undo_latest(&dash, "Undo: remove 10").await;
    dash.wait_text(&cell("cap-olive", "available"), "t === '206'")
        .await;
    // Pausing from the row asks first; opening again does not.
    dash.click(&quick(4)).await;
    dash.wait_for("the question", "document.getElementById('confirm').open")
        .await;
    dash.click("#confirm-ok").await;
    dash.wait_text(&cell("cap-olive", "state"), "t === 'paused'")
        .await;
    dash.wait_text(&quick(4), "t === 'Open'").await;
    assert_eq!(dash.eval(&label(4)).await, "Open the sale of Cap, olive");
    dash.click(&quick(4)).await;
    dash.wait_text(&cell("cap-olive", "state"), "t === 'open'")
        .await;
    assert_eq!(
        dash.eval("document.getElementById('confirm').open").await,
        false
    );
    assert_eq!(gw.sku("cap-olive").await["total"], 206);
    dash.assert_clean_log(&[]);
    browser.close().await;
    gw.stop().await;
}

/// Every KPI and per-product statistic on the page, and the stats frame
/// they come from.
const KPI_TEXTS_JS: &str = "(() => ({ \
    seq: document.body.dataset.statsSeq, \
    kpis: [...document.querySelectorAll('[data-kpi]')].map((e) => `${e.dataset.kpi}=${e.textContent}`), \
    cells: [...document.querySelectorAll('#products tbody tr')].map((r) => \
      ['held', 'revenue', 'rate', 'conversion', 'eta', 'state'].map((c) => r.querySelector(`[data-col=\"${c}\"]`).textContent).join('|')), \
    chart: document.getElementById('sales-chart').dataset.total }))()";

/// Waits until both pages show the same stats frame, and returns what
/// they show.
async fn same_frame(a: &Page, b: &Page) -> (Value, Value) {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let x = a.eval(KPI_TEXTS_JS).await;
        let y = b.eval(KPI_TEXTS_JS).await;
        if x["seq"] == y["seq"] && !x["seq"].is_null() {
            return (x, y);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the tabs never showed the same frame: {x} {y}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_kpis_come_from_the_server_and_agree_across_tabs_and_reloads() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let gw = Gateway::demo().await;
    // kpi-1's holds expire after 1.5 s; kpi-2's sit in carts (30 s, so
    // within the minute); kpi-3 sells nothing.
    gw.create_sku(
        json!({"id": "kpi-1", "title": "KPI one", "price_minor": 100, "show": "kpi",
                         "total": 100, "hold_ttl_ms": 1500}),
    )
    .await;
    gw.create_sku(
        json!({"id": "kpi-2", "title": "KPI two", "price_minor": 250, "show": "kpi",
                         "total": 10, "hold_ttl_ms": 30000}),
    )
    .await;
    gw.create_sku(
        json!({"id": "kpi-3", "title": "KPI three", "price_minor": 900, "show": "kpi",
                         "total": 50}),
    )
    .await;
    let a = admin_dashboard(&browser, &gw, "show=kpi&lang=en").await;

    sell(&gw, "kpi-1", 2).await;
    let h = reserve(&gw, "kpi-1", 1).await;
    hold_action(&gw, &h, "release").await;
    reserve(&gw, "kpi-1", 1).await; // expires
    reserve(&gw, "kpi-2", 2).await; // in carts
    a.wait_text(&kpi("abandoned"), "t === '2'").await;
    a.wait_text(&kpi("expiring"), "t === '2 expire within 1 min'")
        .await;
    assert_eq!(
        a.text(&kpi("abandoned-hint")).await,
        "1 expired, 1 released"
    );
    assert_eq!(a.text(&kpi("sold")).await, "2");
    assert_eq!(a.text(&kpi("carts")).await, "2");
    assert_eq!(a.text(&kpi("conversion")).await, "50%");
    assert_eq!(a.text(&kpi("rate")).await, "2.0");
    let revenue = a.text(&kpi("revenue")).await;
    assert!(revenue.contains("2.00"), "{revenue}");
    assert_eq!(a.text(&cell("kpi-1", "conversion")).await, "50%");
    assert!(a.text(&cell("kpi-2", "held")).await.starts_with('2'));
    assert_eq!(
        a.text(&format!("{} .soon", cell("kpi-2", "held"))).await,
        "2 < 1 min"
    );
    // The sell-out estimate waits for enough data, and never counts a
    // product that sells nothing.
    assert_eq!(a.text(&kpi("eta")).await, "—");
    assert_eq!(a.text(&cell("kpi-3", "eta")).await, "—");
    a.wait_for(
        "the chart to show the sale",
        "document.getElementById('sales-chart').dataset.total === '2'",
    )
    .await;

    // A second tab shows the very same numbers, and so does a reload.
    let b = admin_dashboard(&browser, &gw, "show=kpi&lang=en").await;
    let (x, y) = same_frame(&a, &b).await;
    assert_eq!(x["kpis"], y["kpis"]);
    assert_eq!(x["cells"], y["cells"]);
    assert_eq!(x["chart"], "2");
    assert_eq!(y["chart"], "2");
    open_dashboard(&b, &gw, "show=kpi&lang=en").await;
    b.wait_for(
        "statistics after the reload",
        "document.body.dataset.statsSeq",
    )
    .await;
    let (x, y) = same_frame(&a, &b).await;
    assert_eq!(x["kpis"], y["kpis"]);
    assert_eq!(x["cells"], y["cells"]);
    a.assert_clean_log(&[]);
    b.assert_clean_log(&[]);
    browser.close().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_says_it_is_offline_and_disables_actions_until_the_gateway_is_back() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let gw = Gateway::demo().await;
    let dash = admin_dashboard(&browser, &gw, "show=demo&lang=en").await;
    let plus1 = "tr[data-sku=\"cap-olive\"] .quick button:nth-child(1)";
    dash.eval(&format!("document.querySelector('{plus1}').focus()"))
        .await;

    let addr = gw.addr;
    gw.stop().await;
    let banner = dash
        .wait_text(
            "#offline",
            "!document.getElementById('offline').hidden && t.includes('cannot be reached since')",
        )
        .await;
    assert!(banner.contains("actions are disabled"), "{banner}");
    assert_eq!(
        dash.eval("getComputedStyle(document.getElementById('offline')).position")
            .await,
        "fixed",
        "a banner that moves nothing"
    );
    let dimmed: f64 = dash
        .eval("Number(getComputedStyle(document.querySelector('main')).opacity)")
        .await
        .as_f64()
        .unwrap();
    assert!(dimmed < 0.6, "the stale data is dimmed: {dimmed}");
    assert_eq!(
        dash.eval(
            "[...document.querySelectorAll('.quick button')].every((b) => b.disabled) \
             && document.getElementById('manage-controls').disabled \
             && document.getElementById('create-controls').disabled"
        )
        .await,
        true
    );
    assert_eq!(dash.eval(&data("#conn", "status")).await, "reconnecting");

    let mut args = demo_args();
    args.listen = addr;
    let gw = Gateway::start(args).await;
    let back = dash
        .wait_text("#online", "t.startsWith('Live again')")
        .await;
    assert!(back.contains("current"), "{back}");
    dash.wait_for(
        "the banner to go",
        "document.getElementById('offline').hidden && !document.body.dataset.offline",
    )
    .await;
    dash.wait_for(
        "actions enabled, statistics back",
        "![...document.querySelectorAll('.quick button')].some((b) => b.disabled) \
         && document.body.dataset.auth === 'admin' && document.body.dataset.statsSeq",
    )
    .await;
    assert_eq!(
        dash.eval("document.activeElement.getAttribute('aria-label')")
            .await,
        "Restock Cap, olive by 1",
        "focus is back where it was"
    );
    dash.click(plus1).await;
    dash.wait_text(&cell("cap-olive", "available"), "t === '201'")
        .await;
    let log = dash.text("#log").await;
    assert!(
        log.contains("Gateway offline") && log.contains("Gateway back"),
        "{log}"
    );
    dash.assert_clean_log(&["WebSocket connection to"]);
    browser.close().await;
    gw.stop().await;
}

/// Two real nodes over a real Redis Cluster: the dashboard of either shows
/// every node with its state and the units each holds leased per product,
/// and says so when one dies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_the_nodes_of_a_multi_node_deployment() {
    use common::cluster::{HoldfastNode, RedisCluster};
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let Some(cluster) = RedisCluster::start(3, 1) else {
        return;
    };
    let urls = cluster.urls();
    let ttl = ["--node-ttl-ms", "1500"];
    let n1 = HoldfastNode::spawn(&urls, 1, &ttl).await;
    let n2 = HoldfastNode::spawn(&urls, 2, &ttl).await;
    // A sale on node 2 makes it lease units of the product.
    let http = reqwest::Client::new();
    let r = http
        .post(n2.url("/api/reservations"))
        .bearer_auth(CHECKOUT)
        .json(&json!({"sku": "tee-black-m", "qty": 1, "buyer": "n2-buyer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let dash = browser.new_page().await;
    dash.goto(&n1.url("/dashboard?show=demo&lang=en")).await;
    dash.wait_for(
        "the dashboard to be live with products",
        "document.getElementById('conn').dataset.status === 'live' \
         && document.querySelectorAll('#products tbody tr').length > 0",
    )
    .await;
    assert_eq!(
        dash.eval("document.getElementById('nodes').hidden").await,
        true,
        "nothing to show before sign-in"
    );
    sign_in_admin(&dash).await;
    let head = dash
        .wait_text(
            "#nodes-head",
            "t.includes('Node 1 (this one): alive') && t.includes('Node 2: alive')",
        )
        .await;
    assert!(!head.contains("down"), "{head}");
    let leased_on_2 = dash
        .eval(
            "Number(document.querySelector('#nodes-body tr[data-sku=\"tee-black-m\"]')\
             .querySelectorAll('td')[2].textContent)",
        )
        .await;
    assert!(
        leased_on_2.as_u64().is_some_and(|n| n >= 1),
        "node 2 leased what it sold from: {leased_on_2}"
    );
    assert_eq!(
        dash.eval("document.getElementById('nodes').hidden").await,
        false
    );
    n2.kill9();
    dash.wait_text(
        "#nodes-head",
        "t.includes('Node 2: down') && t.includes('Node 1 (this one): alive')",
    )
    .await;
    dash.wait_text("#nodes-note", "t === '1 of 2 alive'").await;
    dash.close().await;
    browser.close().await;
}
