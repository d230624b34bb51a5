//! The dashboard's sales-channel columns (docs/CHANNELS.md): per channel,
//! available, in carts and sold for each product with channels, the same
//! numbers the API gives, and the totals per channel.

use super::*;

async fn reserve_on(gw: &Gateway, sku: &str, channel: &str) -> String {
    reserve_with(gw, json!({"sku": sku, "qty": 1, "channel": channel})).await
}

fn ch_cell(sku: &str, channel: &str, col: &str) -> String {
    format!(
        "#channels-body tr[data-sku=\"{sku}\"] td[data-channel=\"{channel}\"][data-col=\"{col}\"]"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_per_channel_columns_as_the_gateway_counts_them() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let gw = Gateway::demo().await;
    let page = admin_dashboard(&browser, &gw, "show=demo").await;
    assert_eq!(
        page.eval("document.getElementById('channels').hidden")
            .await,
        true
    );
    gw.create_sku(json!({
        "id": "ch-tee", "title": "Channel tee", "total": 20, "show": "demo",
        "channels": [{"id": "live", "quota": 5}, {"id": "web", "cap": 10}]
    }))
    .await;
    let h = reserve_on(&gw, "ch-tee", "live").await;
    hold_action(&gw, &h, "commit").await;
    reserve_on(&gw, "ch-tee", "live").await;
    reserve_on(&gw, "ch-tee", "web").await;
    page.wait_text(&ch_cell("ch-tee", "web", "held"), "t === '1'")
        .await;
    page.wait_text(&ch_cell("ch-tee", "live", "sold"), "t === '1'")
        .await;
    let sku = gw.sku("ch-tee").await;
    for c in sku["channels"].as_array().unwrap() {
        let id = c["id"].as_str().unwrap();
        for col in ["available", "held", "sold"] {
            assert_eq!(
                page.text(&ch_cell("ch-tee", id, col)).await,
                c[col].to_string(),
                "{id} {col}: {c}"
            );
        }
    }
    // Products without channels have no row; the totals per channel.
    assert_eq!(
        page.eval("document.querySelectorAll('#channels-body tr').length")
            .await,
        1
    );
    let foot = |ch: &str, col: &str| {
        format!("#channels-foot td[data-channel=\"{ch}\"][data-col=\"{col}\"]")
    };
    assert_eq!(page.text(&foot("live", "held")).await, "1");
    assert_eq!(page.text(&foot("live", "sold")).await, "1 (50 %)");
    assert_eq!(page.text(&foot("web", "sold")).await, "0 (0 %)");
    // The channel breakdown, from the server's statistics: conversion
    // (holds bought of holds reserved) and sales over time per channel.
    let conv = |ch: &str| format!("#channel-sales li[data-channel=\"{ch}\"] .channel-conv");
    page.wait_text(&conv("live"), "t.includes('1 of 2 holds bought (50 %)')")
        .await;
    page.wait_text(&conv("web"), "t.includes('0 of 1 holds bought (0 %)')")
        .await;
    assert_eq!(
        page.eval(
            "document.querySelector('#channel-sales li[data-channel=\"live\"] svg').dataset.total"
        )
        .await,
        "1",
        "the live channel's sales chart holds its one sale"
    );
    page.assert_clean_log(&[]);
    browser.close().await;
    gw.stop().await;
}
