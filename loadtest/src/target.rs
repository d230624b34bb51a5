//! What the target gateway says about itself (`GET /readyz`), and the
//! pre-flight checks against it: every token, the Redis URL, prefix and
//! persistence mode, and SKUs that already exist under `--fixed-ids`.
//!
//! Owns failing fast: a mistake found here costs a second, the same mistake
//! found by the audit costs a whole run (and a rehearsal slot). It never
//! changes server state: every probe is a read (a look-up of a hold id that
//! cannot exist, a read of the admin statistics).

use std::time::Duration;

use holdfast_protocol::{HoldView, SkuList};
use serde::{Deserialize, Serialize};

use crate::client::CallError;
use crate::client::http::Api;
use crate::config::Persistence;
use crate::scenario::Scenario;

/// How long Redis may take to answer a pre-flight probe.
const REDIS_PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// SCAN pages read at most while looking for the gateway's keys (1,000
/// keys a page): enough for any catalog, bounded on a shared Redis.
const REDIS_SCAN_PAGES_MAX: usize = 100;
/// How long a newly created SKU may take to appear in Redis (the async
/// journal writes behind the answer).
pub const JOURNAL_APPEAR_MAX: Duration = Duration::from_secs(5);
/// A hold id that is well formed and can never be issued: the checkout
/// token probe looks it up and expects `hold_not_found`.
const PROBE_HOLD: &str = "0000000000000";

/// The target's `GET /readyz` report (fields the tester uses; unknown ones
/// are ignored, missing ones default).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Readiness {
    pub ready: bool,
    /// `memory`, `durable` or `async`.
    pub persistence: String,
    pub redis_up: Option<bool>,
    pub holds_capacity: u64,
    pub holds_in_use: u64,
    pub skus: u64,
    /// The gateway's version, when its `/readyz` reports one.
    pub version: Option<String>,
}

/// Reads `GET /readyz`; an error says why the target cannot be used.
pub async fn readiness(api: &Api, target: &str) -> Result<Readiness, String> {
    match api.call(hyper::Method::GET, "/readyz", false, None).await {
        Ok((200, body)) => serde_json::from_slice(&body)
            .map_err(|e| format!("{target}/readyz answered 200 with an unreadable body: {e}")),
        Ok((status, body)) => Err(format!(
            "{target} is not ready: GET /readyz answered {status}: {}",
            String::from_utf8_lossy(&body)
        )),
        Err(e) => Err(format!("cannot reach {target}: {e}")),
    }
}

/// What the run expects of the target.
pub struct Expect<'a> {
    pub checkout_token: &'a str,
    /// `(url, prefix)` given with `--redis`.
    pub redis: Option<(&'a str, &'a str)>,
    /// `--persistence`, when given.
    pub persistence: Option<Persistence>,
    pub fixed_ids: bool,
    pub scenario: &'a Scenario,
}

/// The outcome of the pre-flight: things to fix (the run does not start)
/// and things to know.
#[derive(Debug, Default)]
pub struct Findings {
    pub errors: Vec<String>,
    pub notes: Vec<String>,
}

/// The token hint printed with any 401/403: which flag, and the gateway's
/// demo tokens.
fn token_hint(which: &str, flag: &str, demo: &str) -> String {
    format!(
        "the gateway refused the {which} token: pass {flag} with the value of the gateway's {flag} \
         (a gateway started with --demo and no token uses `{demo}`)"
    )
}

/// Runs every check against a ready target.
pub async fn check(api: &Api, ready: &Readiness, e: &Expect<'_>) -> Findings {
    let mut f = Findings::default();
    // Admin: a read of the statistics needs the admin role.
    match api.get_admin::<serde_json::Value>("/api/admin/stats").await {
        Ok(_) => {}
        Err(err) if err.is_auth() => {
            f.errors
                .push(token_hint("admin", "--admin-token", "demo-admin"))
        }
        // A gateway without the route cannot be asked; creating the SKUs
        // will tell.
        Err(CallError::Status(404)) => f
            .notes
            .push("the admin token is not checked: the gateway has no GET /api/admin/stats".into()),
        Err(err) => f.errors.push(format!(
            "admin token probe (GET /api/admin/stats) failed: {err}"
        )),
    }
    // Checkout: a hold that cannot exist; anything but 401/403 means the
    // token was accepted.
    match api
        .get_as::<HoldView>(&format!("/api/holds/{PROBE_HOLD}"), e.checkout_token)
        .await
    {
        Err(err) if err.is_auth() => {
            f.errors
                .push(token_hint("checkout", "--checkout-token", "demo-checkout"))
        }
        Err(CallError::Transport(d)) => f
            .errors
            .push(format!("checkout token probe failed: transport: {d}")),
        _ => {}
    }
    persistence(ready, e, &mut f);
    if let Some((url, prefix)) = e.redis
        && let Err(err) = redis_probe(url, prefix, ready.skus, &mut f).await
    {
        f.errors
            .push(format!("cannot use Redis at {}: {err}", redact(url)));
    }
    if e.fixed_ids {
        fixed_ids(api, e.scenario, &mut f).await;
    }
    f
}

fn persistence(ready: &Readiness, e: &Expect<'_>, f: &mut Findings) {
    let mode = ready.persistence.as_str();
    if let Some(want) = e.persistence {
        let want = match want {
            Persistence::Durable => "durable",
            Persistence::Async => "async",
        };
        if want != mode {
            f.errors.push(format!(
                "--persistence {want} asked, but the gateway runs {mode} (GET /readyz)"
            ));
        }
    }
    match (e.redis, mode) {
        (Some((url, _)), "memory") => f.errors.push(format!(
            "--redis {} given, but the gateway runs in memory (GET /readyz persistence: memory): \
             it writes nothing there, so every Redis check of the audit would fail after the run",
            redact(url)
        )),
        (None, m) if m != "memory" && !m.is_empty() => f.notes.push(format!(
            "the gateway persists to Redis ({m}) but no --redis was given: the audit will not check the journal"
        )),
        _ => {}
    }
}

async fn redis_probe(
    url: &str,
    prefix: &str,
    gateway_skus: u64,
    f: &mut Findings,
) -> anyhow::Result<()> {
    let client = redis::Client::open(url)?;
    let mut con = tokio::time::timeout(
        REDIS_PROBE_TIMEOUT,
        client.get_multiplexed_async_connection(),
    )
    .await
    .map_err(|_| anyhow::anyhow!("connect timed out after {REDIS_PROBE_TIMEOUT:?}"))??;
    let _: String = redis::cmd("PING").query_async(&mut con).await?;
    if gateway_skus == 0 {
        f.notes.push(format!(
            "the gateway has no SKU yet: the Redis prefix `{prefix}` is checked once the run's SKUs are created"
        ));
        return Ok(());
    }
    let pattern = format!("{prefix}:{{*}}:sku");
    let mut cursor = 0u64;
    for _ in 0..REDIS_SCAN_PAGES_MAX {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut con)
            .await?;
        if !keys.is_empty() {
            return Ok(());
        }
        if next == 0 {
            f.errors.push(format!(
                "no key in {} matches `{pattern}`, yet the gateway has {gateway_skus} SKUs: \
                 a wrong --redis-prefix (the gateway's default is hf) or a different Redis",
                redact(url)
            ));
            return Ok(());
        }
        cursor = next;
    }
    Ok(())
}

/// After the run's SKUs are created: the journal must write them under
/// `prefix` in this Redis, or the audit would fail for a typo.
pub async fn journal_has(url: &str, prefix: &str, sku: &str) -> anyhow::Result<()> {
    let client = redis::Client::open(url)?;
    let mut con = tokio::time::timeout(
        REDIS_PROBE_TIMEOUT,
        client.get_multiplexed_async_connection(),
    )
    .await
    .map_err(|_| anyhow::anyhow!("connect timed out"))??;
    let key = format!("{prefix}:{{{sku}}}:sku");
    let deadline = tokio::time::Instant::now() + JOURNAL_APPEAR_MAX;
    loop {
        let n: u64 = redis::cmd("EXISTS").arg(&key).query_async(&mut con).await?;
        if n == 1 {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "SKU {sku} was created but {key} did not appear in {} within {JOURNAL_APPEAR_MAX:?}: \
                 a wrong --redis-prefix (the gateway's default is hf) or a different Redis than the gateway's",
                redact(url)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn fixed_ids(api: &Api, s: &Scenario, f: &mut Findings) {
    let list: SkuList = match api.get("/api/skus").await {
        Ok(l) => l,
        Err(e) => {
            f.errors.push(format!("GET /api/skus failed: {e}"));
            return;
        }
    };
    for spec in &s.skus {
        let Some(k) = list.skus.iter().find(|k| k.id == spec.id) else {
            continue;
        };
        let restocked = s
            .host
            .iter()
            .any(|h| h.sku == spec.id && h.action == "restock");
        let counts = format!(
            "available {}, held {}, sold {} of {}",
            k.available, k.held, k.sold, k.total
        );
        if k.sold_out && !restocked {
            f.errors.push(format!(
                "--fixed-ids: SKU {} already exists and is sold out ({counts}): the run would measure \
                 nothing but sold_out refusals, and sold-out figures from an earlier run; restock it or \
                 run without --fixed-ids",
                spec.id
            ));
        } else {
            f.notes.push(format!(
                "--fixed-ids: SKU {} already exists ({counts}); its counts include earlier runs', \
                 and the scenario's total {} is not applied",
                spec.id, spec.total
            ));
        }
    }
}

/// A Redis URL without its password.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("redis://:secret@127.0.0.1:6379"),
            "redis://***@127.0.0.1:6379"
        );
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }

    #[test]
    fn readiness_reads_the_gateway_report() {
        let r: Readiness = serde_json::from_str(
            r#"{"ready":true,"status":"ready","reason":"","persistence":"durable","backlog":0,
                "redis_up":true,"holds_in_use":3,"holds_capacity":1048576,"skus":2}"#,
        )
        .unwrap();
        assert_eq!(r.persistence, "durable");
        assert_eq!(r.holds_capacity, 1_048_576);
        assert_eq!(r.version, None);
    }
}
