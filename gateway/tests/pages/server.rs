//! What the pages stand on, over real HTTP and websockets (no browser):
//! types and policies, image URLs, the sold-out rule of stock events,
//! display data pushed at once, and the show statistics.

use super::*;
use clap::Parser as _;
use holdfast_gateway::config::{Cli, Command};
use holdfast_gateway::protocol::{ClientMsg, ServerMsg, Stats};

#[tokio::test]
async fn pages_are_served_with_their_types_and_a_strict_policy() {
    let gw = Gateway::demo().await;
    for (path, frame_ancestors) in [
        ("/", true),
        ("/dashboard", true),
        ("/overlay", false),
        ("/buy-button", false),
    ] {
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
            "img-src 'self';",
            "connect-src 'self' ws: wss:",
        ] {
            assert!(csp.contains(directive), "{path}: {csp} lacks {directive}");
        }
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
        assert!(
            !csp.contains("data:"),
            "{path}: the pages need no data: URLs"
        );
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
        ("/assets/img/favicon.svg", "image/svg+xml"),
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

fn serve_args(argv: &[&str]) -> ServeArgs {
    let argv = ["holdfast", "serve"].iter().chain(argv).copied();
    match Cli::try_parse_from(argv).unwrap().command {
        Command::Serve(args) => args,
    }
}

#[test]
fn image_origins_are_a_repeatable_flag_and_a_comma_list() {
    let args = serve_args(&[
        "--image-origin",
        "https://a.example,https://b.example",
        "--image-origin",
        "https://c.example",
    ]);
    assert_eq!(
        args.image_origins,
        [
            "https://a.example",
            "https://b.example",
            "https://c.example"
        ]
    );
    assert!(serve_args(&[]).image_origins.is_empty(), "none by default");
}

#[tokio::test]
async fn image_urls_are_gateway_paths_or_configured_https_origins() {
    let mut args = demo_args();
    args.image_origins = vec!["https://cdn.example.com".into()];
    let gw = Gateway::start(args).await;
    // The pages may load images from the configured origin, nothing else.
    let r = gw.http.get(gw.url("/overlay")).send().await.unwrap();
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("img-src 'self' https://cdn.example.com;"),
        "{csp}"
    );

    let def = |id: &str, image: &str| json!({"id": id, "total": 1, "image_url": image});
    let created = gw
        .create_sku(def("cdn-1", "https://cdn.example.com/p/1.jpg"))
        .await;
    assert_eq!(
        created["meta"]["image_url"],
        "https://cdn.example.com/p/1.jpg"
    );
    for bad in [
        "javascript:alert(1)",
        "data:image/svg+xml,<svg/onload=alert(1)>",
        "http://cdn.example.com/p/1.jpg",
        "https://evil.example/p.jpg",
        "https://cdn.example.com@evil.example/p.jpg",
    ] {
        let (status, body) = gw
            .call(
                "POST",
                "/api/admin/skus",
                Some(ADMIN),
                Some(def("bad-1", bad)),
            )
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"], "invalid_image_url", "{bad}");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains("image_url") && message.contains("https://cdn.example.com"),
            "the message names the field and the allowed origins: {message}"
        );
        let (status, body) = gw
            .call(
                "PATCH",
                "/api/admin/skus/cdn-1",
                Some(ADMIN),
                Some(json!({"image_url": bad})),
            )
            .await;
        assert_eq!(status, 400, "PATCH {bad}: {body}");
        assert_eq!(body["error"], "invalid_image_url");
    }
    let (status, _) = gw.get("/api/skus/bad-1").await;
    assert_eq!(status, 404, "nothing was created");
    assert_eq!(
        gw.sku("cdn-1").await["meta"]["image_url"],
        "https://cdn.example.com/p/1.jpg",
        "nothing was changed"
    );
    gw.stop().await;

    // Without --image-origin, only the gateway's own images; the message
    // says how to allow more.
    let gw = Gateway::demo().await;
    let (status, body) = gw
        .call(
            "POST",
            "/api/admin/skus",
            Some(ADMIN),
            Some(def("x", "https://cdn.example.com/p.jpg")),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_image_url"))
    );
    assert!(
        body["message"].as_str().unwrap().contains("--image-origin"),
        "{body}"
    );
    gw.stop().await;

    // A catalog file with a bad image stops the start, naming the SKU.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog.toml");
    std::fs::write(
        &path,
        "[[skus]]\nid = \"evil\"\ntotal = 1\nimage_url = \"javascript:alert(1)\"\n",
    )
    .unwrap();
    let mut args = ServeArgs::for_tests();
    args.catalog = Some(path);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = holdfast_gateway::server::run(listener, args, Default::default())
        .await
        .unwrap_err();
    let chain = format!("{err:#}");
    assert!(
        chain.contains("evil") && chain.contains("invalid_image_url"),
        "{chain}"
    );
    // And a flag that is not an https origin is refused at start.
    let mut args = ServeArgs::for_tests();
    args.image_origins = vec!["http://cdn.example.com".into()];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = holdfast_gateway::server::run(listener, args, Default::default())
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("--image-origin"), "{err:#}");
}

/// Reads frames of `topic` until `done` says so; returns every stock event
/// seen on the way, in order.
async fn events_until(
    ws: &mut Ws,
    mut done: impl FnMut(&holdfast_gateway::protocol::SkuState) -> bool,
) -> Vec<String> {
    let mut events = Vec::new();
    loop {
        match ws.recv().await {
            ServerMsg::StockEvent(e) => events.push(e.event.as_str().to_owned()),
            ServerMsg::Update(u) if u.skus.iter().any(&mut done) => return events,
            _ => {}
        }
    }
}

#[tokio::test]
async fn units_in_carts_are_not_sold_out_and_stock_events_say_so() {
    let gw = Gateway::demo().await;
    gw.create_sku(json!({"id": "flap", "total": 3, "hold_ttl_ms": 300}))
        .await;
    let mut ws = Ws::connect(&gw, None).await;
    ws.subscribe(&["sku:flap"]).await;
    let mut seen = Vec::new();

    // Every unit in carts, twice, each time coming back by expiry: nothing
    // sold out, nothing "back in stock".
    for _ in 0..2 {
        for _ in 0..3 {
            reserve(&gw, "flap", 1).await;
        }
        seen.extend(
            events_until(&mut ws, |s| {
                if s.available == 0 && s.held == 3 {
                    assert!(!s.sold_out && s.all_in_carts, "{s:?}");
                    true
                } else {
                    false
                }
            })
            .await,
        );
        seen.extend(events_until(&mut ws, |s| s.available == 3).await);
    }
    let rest = gw.sku("flap").await;
    assert_eq!(
        (&rest["sold_out"], &rest["all_in_carts"]),
        (&json!(false), &json!(false))
    );
    // Sold out for real: nothing available, nothing held.
    for _ in 0..3 {
        sell(&gw, "flap", 1).await;
    }
    seen.extend(
        events_until(&mut ws, |s| {
            s.sold == 3 && {
                assert!(s.sold_out && !s.all_in_carts, "{s:?}");
                true
            }
        })
        .await,
    );
    // A restock taken straight into a cart is not back yet; the units
    // coming back from it are.
    admin(
        &gw,
        "POST",
        "/api/admin/skus/flap/restock",
        json!({"qty": 1}),
    )
    .await;
    seen.extend(events_until(&mut ws, |s| s.total == 4).await);
    let h = reserve(&gw, "flap", 1).await;
    seen.extend(events_until(&mut ws, |s| s.held == 1).await);
    hold_action(&gw, &h, "release").await;
    seen.extend(events_until(&mut ws, |s| s.held == 0 && s.available == 1).await);
    assert_eq!(
        seen,
        ["sold_out", "back_in_stock"],
        "one sell-out, then back in stock with the restock; units coming back from a cart are not news"
    );
    gw.stop().await;
}

#[tokio::test]
async fn display_data_changes_are_pushed_in_the_next_round() {
    let gw = Gateway::demo().await;
    let mut ws = Ws::connect(&gw, None).await;
    ws.subscribe(&["show:demo"]).await;
    admin(
        &gw,
        "PATCH",
        "/api/admin/skus/cap-olive",
        json!({"title": "Cap, olive (signed)", "price_minor": 29_900}),
    )
    .await;
    let meta = ws
        .until(|m| match m {
            ServerMsg::Update(u) => u
                .skus
                .iter()
                .find(|s| s.id == "cap-olive")
                .and_then(|s| s.meta.clone()),
            _ => None,
        })
        .await;
    assert_eq!(meta.title, "Cap, olive (signed)");
    assert_eq!(meta.price_minor, 29_900);
    gw.stop().await;
}

async fn next_stats(ws: &mut Ws, mut pick: impl FnMut(&Stats) -> bool) -> Stats {
    ws.until(|m| match m {
        ServerMsg::Stats(s) if pick(s) => Some((**s).clone()),
        _ => None,
    })
    .await
}

#[tokio::test]
async fn show_statistics_are_pushed_to_admins_and_served_to_them_only() {
    let gw = Gateway::demo().await;
    gw.create_sku(json!({"id": "st-1", "title": "Stats", "price_minor": 1_500,
                         "show": "st", "total": 10, "hold_ttl_ms": 200}))
        .await;
    let mut admin_ws = Ws::connect(&gw, Some(ADMIN)).await;
    admin_ws.subscribe(&["show:st"]).await;
    let first = next_stats(&mut admin_ws, |_| true).await;
    assert_eq!(first.topic, "show:st");
    assert_eq!(first.total.sold_units, 0);

    // A viewer on the same topic never gets stats frames; one that becomes
    // an admin with `auth` does.
    let mut viewer = Ws::connect(&gw, None).await;
    viewer.subscribe(&["show:st"]).await;

    sell(&gw, "st-1", 2).await;
    let h = reserve(&gw, "st-1", 1).await;
    hold_action(&gw, &h, "release").await;
    reserve(&gw, "st-1", 3).await; // expires (200 ms)
    let s = next_stats(&mut admin_ws, |s| s.total.expired_units == 3).await;
    let t = &s.total;
    assert_eq!((t.reserved_units, t.reserved_holds), (6, 3));
    assert_eq!((t.sold_units, t.committed_holds), (2, 1));
    assert_eq!((t.released_units, t.released_holds), (1, 1));
    assert_eq!((t.expired_units, t.expired_holds), (3, 1));
    assert_eq!(t.in_carts_units, 0);
    assert_eq!(t.revenue.len(), 1);
    assert_eq!(
        (t.revenue[0].currency.as_str(), t.revenue[0].minor),
        ("NOK", 3_000)
    );
    assert_eq!(s.skus.len(), 1);
    assert_eq!(s.skus[0].id, "st-1");
    assert_eq!(s.sales.iter().map(|&u| u64::from(u)).sum::<u64>(), 2);
    assert_eq!(s.bucket_ms, 10_000);

    // The viewer saw the updates up to the expiry, but no stats frame,
    // until it signs in.
    loop {
        match viewer.recv().await {
            ServerMsg::Stats(_) => panic!("a viewer got statistics"),
            ServerMsg::Update(u) if u.skus.iter().any(|s| s.available == 8 && s.held == 0) => break,
            _ => {}
        }
    }
    let id = viewer.id();
    viewer
        .send(&ClientMsg::Auth(holdfast_gateway::protocol::Auth {
            id,
            token: ADMIN.into(),
        }))
        .await;
    let seen = next_stats(&mut viewer, |_| true).await;
    assert_eq!(seen.total.sold_units, 2);

    // The API answers the same numbers, to the admin only.
    let (status, body) = gw
        .call("GET", "/api/admin/shows/st/stats", Some(ADMIN), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let api: Stats = serde_json::from_value(body).unwrap();
    assert_eq!(api.total, {
        let mut t = s.total.clone();
        // Time-based fields may have moved on since the frame.
        t.window_ms = api.total.window_ms;
        t.sellout_eta_ms = api.total.sellout_eta_ms;
        t
    });
    let (status, all) = gw.call("GET", "/api/admin/stats", Some(ADMIN), None).await;
    assert_eq!(status, 200);
    assert_eq!(all["topic"], "all");
    assert_eq!(all["total"]["sold_units"], 2);
    for token in [None, Some(CHECKOUT)] {
        let (status, _) = gw
            .call("GET", "/api/admin/shows/st/stats", token, None)
            .await;
        assert!(status == 401 || status == 403, "{status}");
    }
    let (status, body) = gw
        .call("GET", "/api/admin/shows/nope/stats", Some(ADMIN), None)
        .await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_statistics_survive_a_restart_with_redis() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let args = || {
        let mut a = demo_args();
        a.redis = Some(redis.url());
        a
    };
    let gw = Gateway::start(args()).await;
    gw.create_sku(
        json!({"id": "pst-1", "title": "Persisted", "price_minor": 700,
                         "show": "pst", "total": 20, "hold_ttl_ms": 300}),
    )
    .await;
    gw.create_sku(
        json!({"id": "pst-2", "title": "In carts", "price_minor": 100,
                         "show": "pst", "total": 5, "hold_ttl_ms": 40_000}),
    )
    .await;
    sell(&gw, "pst-1", 3).await;
    let h = reserve(&gw, "pst-1", 2).await;
    hold_action(&gw, &h, "release").await;
    reserve(&gw, "pst-1", 1).await; // expires
    reserve(&gw, "pst-2", 2).await; // stays in a cart across the restart
    let mut ws = Ws::connect(&gw, Some(ADMIN)).await;
    ws.subscribe(&["show:pst"]).await;
    let before = next_stats(&mut ws, |s| s.total.expired_units == 1).await;
    // The journal writes statistics with its batches; a sell-out mark or a
    // last change may still be on its way: wait until Redis has them all.
    let key = "hf:{pst-1}:sku";
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &redis.port.to_string(), "HGET", key, "stats"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        if text.contains("\"released_units\":2") && text.contains("\"reserved_units\":6") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "stats never reached Redis: {text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    drop(ws);
    let gw = restart(gw, args()).await;
    let (status, body) = gw
        .call("GET", "/api/admin/shows/pst/stats", Some(ADMIN), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let after: Stats = serde_json::from_value(body).unwrap();
    for (b, a) in before.skus.iter().zip(&after.skus) {
        assert_eq!(
            (
                b.reserved_units,
                b.reserved_holds,
                b.sold_units,
                b.released_units,
                b.expired_units,
                b.expired_holds,
                &b.revenue,
                b.first_activity_ms
            ),
            (
                a.reserved_units,
                a.reserved_holds,
                a.sold_units,
                a.released_units,
                a.expired_units,
                a.expired_holds,
                &a.revenue,
                a.first_activity_ms
            ),
            "{}",
            b.id
        );
    }
    assert_eq!(after.total.revenue[0].minor, 2_100);
    // The hold still in a cart counts as in carts and expiring soon.
    assert_eq!(after.skus[1].in_carts_units, 2);
    assert_eq!(after.skus[1].expiring_soon_units, 2);
    assert_eq!(after.sales.iter().map(|&u| u64::from(u)).sum::<u64>(), 3);
    gw.stop().await;
}
