//! The pictures of `docs/PAGES.md`, taken from a show with some life in it
//! (and the layout checks that come with taking them).

use super::*;

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
    // Some life in the show: sales, holds, a low and a sold-out product,
    // one whose last units sit in carts.
    for _ in 0..9 {
        sell(&gw, "runner-42", 1).await;
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
        open_dashboard(&dash, &gw, "show=demo&lang=en").await;
        sign_in_admin(&dash).await;
        dash.wait_text(&cell("runner-42", "sold"), "t === '9'")
            .await;
        sell(&gw, "tee-black-m", 1).await;
        dash.wait_text(&cell("tee-black-m", "sold"), "Number(t) > 0")
            .await;
        dash.wait_for(
            "the revenue",
            "document.querySelector('[data-kpi=\"revenue\"]').textContent !== '—'",
        )
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
        assert!(done.starts_with("✓ Restocked Cap, olive by 10"), "{done}");
        dash.eval("window.scrollTo(0, 0); document.activeElement.blur()")
            .await;
        let png = dash.screenshot(None).await;
        assert_eq!(png_size(&png).0, width);
        std::fs::write(out.join(format!("dashboard-{name}.png")), &png).unwrap();
        dash.assert_clean_log(&[]);
        dash.close().await;

        let view = browser.new_page().await;
        view.set_viewport(width, height, mobile).await;
        // A stream-like backdrop shows through, as in OBS.
        view.set_backdrop((38, 52, 72, 1.0)).await;
        open_overlay(&view, &gw, "show=demo&lang=nb&max=4").await;
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
    open_overlay(&view, &gw, "sku=runner-42&theme=light&size=l&lang=en").await;
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
