//! Outputs for people who watch a run live or chart it afterwards: the
//! OpenMetrics endpoint (`--metrics-listen`), the CSV series (`--csv`),
//! and plain progress lines when stderr is not a terminal.

mod common;

use common::{Gateway, Plan, api, eventually, free_port, run_loadtest_in_background};

/// Arrivals for six seconds, so there is a run to watch.
const WATCHED: &str = r#"
name = "watched"
duration_s = 6

[[sku]]
id = "w"
total = 1000

[viewers]
count = 2
topics = ["sku:w"]

[[arrival]]
executor = "constant"
start_s = 0.5
rate = 20
duration_s = 5
skus = ["w"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_openmetrics_csv_and_plain_progress_lines() {
    let gw = Gateway::memory().await;
    let plan = Plan::new(WATCHED);
    let csv = plan.path("series.csv");
    let listen = format!("127.0.0.1:{}", free_port());
    let mut args = plan.args(
        &gw.target(),
        &[
            "--metrics-listen",
            &listen,
            "--csv",
            &csv.display().to_string(),
        ],
    );
    // Not quiet: stderr is a pipe here, so progress comes as plain lines.
    args.retain(|a| a != "--quiet");
    let tester = run_loadtest_in_background(args);
    let scrape = api(listen.parse().unwrap(), "");
    let text = eventually("holds counted on /metrics", || async {
        let (status, body) = scrape
            .call(hyper::Method::GET, "/metrics", false, None)
            .await
            .ok()?;
        let text = String::from_utf8_lossy(&body).into_owned();
        (status == 200 && !text.contains("holdfast_loadtest_reserves_ok_total 0\n")).then_some(text)
    })
    .await;
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(text.contains("holdfast_loadtest_viewers "), "{text}");
    assert!(
        text.contains("holdfast_loadtest_phase_info{phase="),
        "{text}"
    );
    let run = tester.await.unwrap();
    assert_eq!(run.code, 0);
    assert!(
        run.stderr.contains("progress t=5s/6s"),
        "a plain line every 5 s: {}",
        run.stderr
    );
    let series = std::fs::read_to_string(&csv).unwrap();
    let rows: Vec<&str> = series.lines().collect();
    assert!(rows[0].starts_with("t_s,offered,reserve_ok,reserve_refused,errors"));
    let offered: u64 = rows[1..]
        .iter()
        .map(|r| r.split(',').nth(1).unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(offered, 100, "20/s for 5 s, each in the second it was due");
    let viewers_max = rows[1..]
        .iter()
        .map(|r| r.rsplit(',').next().unwrap().parse::<u64>().unwrap())
        .max();
    assert_eq!(viewers_max, Some(2), "both viewers connected");
    gw.stop().await;
}
