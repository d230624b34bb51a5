//! The audit's per-channel checks against the real gateway, in process: a
//! drop whose SKU has a channel with a reserved quota and one with a cap,
//! buyers taking turns over the channels and the common pool. The audit
//! passes, reports each channel's counts, and the clients' per-channel
//! sales match the server's.
//!
//! (The per-channel counts after a SIGKILL of a durable `holdfast`
//! process are checked in `gateway/tests/channels.rs`,
//! `per_channel_counts_add_up_after_sigkill_mid_burst`.)

mod common;

use common::{Gateway, Plan, run_loadtest};
use holdfast_loadtest::audit::CheckStatus;

/// 60 buyers at 30 units: `live` keeps 8 for itself, `web` may hold plus
/// sell 6 at most; every third buyer reserves on the pool.
const CHANNELS: &str = r#"
name = "channels"
duration_s = 3
protocol = "ws-json"

[[sku]]
id = "split"
total = 30
show = "live"
hold_ttl_ms = 400
window = "closed"
channels = [{id = "live", quota = 8}, {id = "web", cap = 6}]

[viewers]
count = 2
topics = ["show:live"]
connect_over_s = 0.5

[buyer]
commit_probability = 0.7
release_probability = 0.1
pay_delay_ms = [10, 60]

[[host]]
at_s = 1
action = "open"
sku = "split"

[[burst]]
at_s = 1
buyers = 60
sku = "split"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_channel_counts_add_up_and_match_what_clients_bought() {
    let gw = Gateway::memory().await;
    let plan = Plan::new(CHANNELS);
    let run = run_loadtest(&plan.args(&gw.target(), &[])).await;
    let report = plan.report();
    assert_eq!(run.code, 0, "{}\n{:?}", run.stdout, report.audit.problems);
    let check = |name: &str| {
        report
            .audit
            .checks
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no check {name}: {:?}", report.audit.checks))
            .clone()
    };
    assert_eq!(check("channels").status, CheckStatus::Ok);
    assert_eq!(check("channel sales match commits").status, CheckStatus::Ok);

    let sku = &report.audit.skus[0];
    let ids: Vec<&str> = sku.channels.iter().map(|c| c.server.id.as_str()).collect();
    assert_eq!(ids, ["live", "web"]);
    let live = &sku.channels[0];
    let web = &sku.channels[1];
    assert_eq!((live.server.quota, web.server.cap), (8, Some(6)));
    assert!(web.server.sold + web.server.held <= 6, "{web:?}");
    assert!(
        live.committed_units > 0 && web.committed_units > 0,
        "both channels sold: {:?}",
        sku.channels
    );
    // The channels' sales are part of the SKU's, and each is what clients
    // were told (no answer was lost against an in-process gateway).
    assert!(u64::from(live.server.sold + web.server.sold) <= u64::from(sku.sold));
    assert_eq!(u64::from(live.server.sold), live.committed_units);
    assert_eq!(u64::from(web.server.sold), web.committed_units);
    // The pool's buyers sold too: the SKU sold more than its channels.
    assert!(sku.sold > live.server.sold + web.server.sold, "{sku:?}");
    gw.stop().await;
}

/// A scenario's channels are checked before the run: quotas past the
/// total and a channel listed twice are refused with the line's SKU.
#[tokio::test]
async fn scenario_channels_are_validated_before_the_run() {
    for (channels, says) in [
        (r#"[{id = "live", quota = 31}]"#, "quotas add up to 31"),
        (r#"[{id = "live"}, {id = "live"}]"#, "listed twice"),
        (r#"[{id = "bad id"}]"#, "channels[0].id"),
    ] {
        let text = CHANNELS.replace(
            r#"channels = [{id = "live", quota = 8}, {id = "web", cap = 6}]"#,
            &format!("channels = {channels}"),
        );
        let plan = Plan::new(&text);
        let run = run_loadtest(&plan.args("http://127.0.0.1:9", &[])).await;
        assert_ne!(run.code, 0);
        assert!(
            run.stderr.contains(says) || run.stdout.contains(says),
            "{says}: {}\n{}",
            run.stdout,
            run.stderr
        );
    }
}
