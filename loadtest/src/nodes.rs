//! Every node's view, after the audit. In a multi-node deployment each node
//! shows viewers the global counts (the pool and every node's stock), so
//! after a run every `--target` must show the same counts for every SKU the
//! run used; nodes converge within two broadcast intervals of the last
//! change, so the check polls for a bounded time before it judges.

use crate::audit::{Check, CheckStatus};
use crate::client::http::Api;
use crate::roles::host;
use holdfast_protocol::SkuState;
use std::time::{Duration, Instant};

/// Name of the check in the audit.
pub const CHECK: &str = "every node's view";
/// Longest wait for the nodes to agree (many broadcast intervals; the
/// audit's own `--audit-wait-max-s` bounds it too).
pub const CONVERGE_MAX: Duration = Duration::from_secs(10);
/// Poll period while the nodes converge.
const POLL: Duration = Duration::from_millis(100);

/// The figures compared: total, available, held, sold.
type View = Option<(u32, u32, u32, u32)>;

fn view(k: &Option<SkuState>) -> View {
    k.as_ref().map(|k| (k.total, k.available, k.held, k.sold))
}

/// Compares every node's view of `ids` with the first node's, polling for
/// at most `wait` until they agree. `nodes` are (url, api) in `--target`
/// order; with one node there is nothing to compare (`None`).
pub async fn check(nodes: &[(String, Api)], ids: &[String], wait: Duration) -> Option<Check> {
    if nodes.len() < 2 {
        return None;
    }
    let started = Instant::now();
    loop {
        let mut views = Vec::with_capacity(nodes.len());
        let mut unreadable = Vec::new();
        for (url, api) in nodes {
            match host::snapshot(api, ids).await {
                Ok(v) => views.push(v.iter().map(view).collect::<Vec<View>>()),
                Err(e) => {
                    unreadable.push(format!("{url}: {e}"));
                    views.push(Vec::new());
                }
            }
        }
        let differences = differences(nodes, ids, &views);
        if unreadable.is_empty() && differences.is_empty() {
            return Some(Check {
                name: CHECK.into(),
                ok: true,
                status: CheckStatus::Ok,
                detail: format!(
                    "{} nodes show the same counts for {} SKU(s)",
                    nodes.len(),
                    ids.len()
                ),
            });
        }
        if started.elapsed() >= wait {
            let mut found = unreadable
                .into_iter()
                .map(|u| format!("cannot read {u}"))
                .collect::<Vec<_>>();
            found.extend(differences);
            return Some(Check {
                name: CHECK.into(),
                ok: false,
                status: CheckStatus::Failed,
                detail: format!(
                    "after {:.1} s the nodes still disagree: {}",
                    started.elapsed().as_secs_f64(),
                    found.join("; ")
                ),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// What each node shows that differs from the first node, one line each.
fn differences(nodes: &[(String, Api)], ids: &[String], views: &[Vec<View>]) -> Vec<String> {
    let shown = |v: &View| match v {
        Some((total, available, held, sold)) => {
            format!("available {available}, held {held}, sold {sold} of {total}")
        }
        None => "no such SKU".into(),
    };
    let Some(first) = views.first().filter(|v| v.len() == ids.len()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for ((url, _), v) in nodes.iter().zip(views).skip(1) {
        if v.len() != ids.len() {
            continue;
        }
        for (i, id) in ids.iter().enumerate() {
            if v[i] != first[i] {
                out.push(format!(
                    "{id}: {url} shows {}, {} shows {}",
                    shown(&v[i]),
                    nodes[0].0,
                    shown(&first[i])
                ));
            }
        }
    }
    out
}
