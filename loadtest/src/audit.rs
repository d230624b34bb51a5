//! The audit: after the run, prove from the server's own state (and Redis,
//! given `--redis`) that nothing was oversold and nothing was lost.
//!
//! Owns the checks and their arithmetic:
//! - per SKU, `available + held + sold == total`, and `total` is what the
//!   host made it;
//! - successful reservations never exceeded the stock: the units of holds
//!   that were certainly live at the same moment (from the reserve's answer
//!   until it was committed, released, or at the earliest its deadline) never
//!   exceed the stock that ever existed, and neither do committed units;
//! - the server sold exactly what clients committed (give or take answers
//!   that were lost);
//! - no hold is still held past its deadline, and each sampled hold ended as
//!   the client saw it end;
//! - per sales channel ([`crate::audit_channels`]): the channels' counts add
//!   up to the SKU's, none past its quota or cap, each channel sold what
//!   clients bought on it;
//! - with Redis: the SKU hashes match, no terminal hold is still listed
//!   live, and every hold the clients saw committed is in the order stream
//!   (and no released or expired one is).
//!
//! It never changes server state, and it waits only as long as the holds'
//! deadlines (bounded by `--audit-wait-max-s`).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use std::fmt::Write as _;

use holdfast_protocol::{Code, HoldStatus, HoldView, SkuState};

use crate::client::CallError;
use crate::client::http::Api;
use crate::plan::unix_us;
use crate::roles::host::{self, HostEvent};
use crate::scenario::Scenario;
use crate::stats::{HoldRecord, Outcome, Stats};
use crate::target::redact;

/// Grace after a deadline before a still-held hold is a problem: the
/// expiry timer's tick and the clock's millisecond rounding.
pub const EXPIRY_GRACE_MS: u64 = 1_500;
/// Poll period while waiting for holds to settle or Redis to catch up.
const POLL: Duration = Duration::from_millis(200);
/// Problems listed in full at most; the rest are counted.
const PROBLEMS_MAX: usize = 50;

/// What the audit reads besides the run's stats.
pub struct Input<'a> {
    pub scenario: &'a Scenario,
    pub stats: &'a Stats,
    pub host: &'a [HostEvent],
    pub api: &'a Api,
    pub redis: Option<(&'a str, &'a str)>,
    pub wait_max: Duration,
    pub holds_max: usize,
    pub stream_max: usize,
    /// SKU ids are this run's alone, so server counts must equal client counts.
    pub exclusive: bool,
    /// The server's hold table size (`/readyz` `holds_capacity`): finished
    /// holds are reported until that many more reservations reuse slots.
    pub holds_capacity: Option<u64>,
}

/// One SKU's figures.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SkuAudit {
    pub id: String,
    pub total: u32,
    pub available: u32,
    pub held: u32,
    pub sold: u32,
    pub expected_total: u64,
    pub stock_ever: u64,
    pub reserved_units: u64,
    pub committed_units: u64,
    pub unknown_units: u64,
    /// Most units certainly held or sold at one moment, client side.
    pub concurrent_max: u64,
    pub oversold: u64,
    /// Per-channel figures, for a SKU with sales channels
    /// ([`crate::audit_channels`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<crate::audit_channels::ChannelAudit>,
}

/// How one check came out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    /// Checked and right.
    #[default]
    Ok,
    /// Checked and wrong: the audit fails.
    Failed,
    /// Could not be checked (what it depends on is missing); the detail
    /// says why. Not a pass: the verdict names the cause.
    NotChecked,
    /// Something to know that is not a fault (a catalog change made
    /// outside the tester).
    Note,
}

impl CheckStatus {
    /// The tag printed before the check's name.
    pub fn tag(self) -> &'static str {
        match self {
            CheckStatus::Ok => "ok",
            CheckStatus::Failed => "FAIL",
            CheckStatus::NotChecked => "not checked",
            CheckStatus::Note => "note",
        }
    }
}

/// One named check. A failing check's detail states the finding (what the
/// server showed), not what the check claims.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Check {
    pub name: String,
    /// False only for [`CheckStatus::Failed`].
    pub ok: bool,
    #[serde(default)]
    pub status: CheckStatus,
    pub detail: String,
}

/// The audit's verdict.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Audit {
    pub oversold: u64,
    pub ok: bool,
    /// The server no longer knows SKUs or holds this run created: it lost
    /// its state (an in-memory gateway restarted mid-run, or a rollback).
    #[serde(default)]
    pub state_lost: bool,
    /// One line: what the audit found, worst first.
    #[serde(default)]
    pub verdict: String,
    pub skus: Vec<SkuAudit>,
    pub checks: Vec<Check>,
    pub problems: Vec<String>,
}

impl Audit {
    /// Adds a check made outside this module (e.g. [`crate::nodes`]) and
    /// judges again.
    pub fn add(&mut self, check: Check) {
        self.checks.push(check);
        self.conclude();
    }

    fn check(&mut self, name: &str, ok: bool, detail: String) {
        let status = if ok {
            CheckStatus::Ok
        } else {
            CheckStatus::Failed
        };
        self.check_as(name, status, detail);
    }

    fn check_as(&mut self, name: &str, status: CheckStatus, detail: String) {
        self.checks.push(Check {
            name: name.into(),
            ok: status != CheckStatus::Failed,
            status,
            detail,
        });
    }

    /// Sets `ok` and the one-line verdict from the checks and problems.
    fn conclude(&mut self) {
        let failed: Vec<&str> = self
            .checks
            .iter()
            .filter(|c| c.status == CheckStatus::Failed)
            .map(|c| c.name.as_str())
            .collect();
        self.ok = failed.is_empty() && self.problems.is_empty() && !self.state_lost;
        self.verdict = if self.state_lost {
            "AUDIT FAILED: state lost — was the gateway restarted? The server no longer knows SKUs or holds this run created".into()
        } else if self.oversold > 0 {
            format!("AUDIT FAILED: oversold {}", self.oversold)
        } else if !failed.is_empty() {
            format!("AUDIT FAILED: {}", failed.join(", "))
        } else if !self.problems.is_empty() {
            "AUDIT FAILED: see the problems listed".into()
        } else {
            "audit passed".into()
        }
    }

    fn problem(&mut self, p: String) {
        if self.problems.len() < PROBLEMS_MAX {
            self.problems.push(p);
        } else if self.problems.len() == PROBLEMS_MAX {
            self.problems.push("... more problems not listed".into());
        }
    }
}

/// Most units certainly live at one moment among `intervals` of
/// (start_ms, end_ms or None for never-ending, units).
pub fn concurrent_max(intervals: &[(u64, Option<u64>, u64)]) -> u64 {
    let mut evs: Vec<(u64, i64)> = Vec::with_capacity(intervals.len() * 2);
    for &(start, end, units) in intervals {
        match end {
            Some(e) if e <= start => {}
            Some(e) => {
                evs.push((start, units as i64));
                evs.push((e, -(units as i64)));
            }
            None => evs.push((start, units as i64)),
        }
    }
    // At equal times, ends before starts: touching intervals do not overlap.
    evs.sort_by_key(|&(t, d)| (t, d));
    let (mut cur, mut max) = (0i64, 0i64);
    for (_, d) in evs {
        cur += d;
        max = max.max(cur);
    }
    max as u64
}

/// When a hold was certainly live, client side: from its answer until
/// committed (never ends), released (the release was sent), or left to
/// expire (no earlier than its deadline, which is at least the reserve's
/// send time plus the TTL). An unknown outcome proves nothing.
fn live_interval(h: &HoldRecord, ttl_ms: u64) -> Option<(u64, Option<u64>)> {
    match h.outcome {
        Outcome::Committed { .. } => Some((h.acked_ms, None)),
        Outcome::Released => Some((h.acked_ms, Some(h.end_ms.unwrap_or(h.acked_ms)))),
        Outcome::Abandoned | Outcome::Expired => {
            Some((h.acked_ms, Some((h.sent_ms + ttl_ms).min(h.deadline_ms))))
        }
        Outcome::Unknown | Outcome::Lost => None,
    }
}

/// Runs every check.
pub async fn run(inp: Input<'_>) -> Audit {
    let mut a = Audit::default();
    let s = inp.scenario;
    let ids: Vec<String> = s.skus.iter().map(|k| k.id.clone()).collect();
    let started = std::time::Instant::now();

    // 1. Let abandoned holds expire (bounded), then read the final counts.
    let settle_ms = inp
        .stats
        .holds
        .iter()
        .filter(|h| !matches!(h.outcome, Outcome::Committed { .. } | Outcome::Released))
        .map(|h| h.deadline_ms + EXPIRY_GRACE_MS)
        .max()
        .unwrap_or(0);
    let deadline_wait = Duration::from_millis(settle_ms.saturating_sub(unix_us() / 1000));
    let waited_fully = deadline_wait <= inp.wait_max;
    let mut last = None;
    loop {
        match host::snapshot(inp.api, &ids).await {
            Ok(v) => {
                let settled = v.iter().all(|k| k.as_ref().is_some_and(|k| k.held == 0));
                last = Some(v);
                if settled || started.elapsed() >= deadline_wait.min(inp.wait_max) {
                    break;
                }
            }
            Err(e) => {
                if started.elapsed() >= inp.wait_max {
                    a.problem(format!("cannot read final counts (GET /api/skus): {e}"));
                    break;
                }
            }
        }
        tokio::time::sleep(POLL).await;
    }
    let Some(finals) = last else {
        a.check("final counts", false, "GET /api/skus never answered".into());
        a.conclude();
        return a;
    };

    // 2. Per-SKU arithmetic.
    let mut intervals: Vec<Vec<(u64, Option<u64>, u64)>> = vec![Vec::new(); s.skus.len()];
    let mut unknown_units = vec![0u64; s.skus.len()];
    for h in &inp.stats.holds {
        let ttl = h
            .lines
            .iter()
            .map(|(i, _)| s.skus.get(*i as usize).map_or(u64::MAX, |k| k.hold_ttl_ms))
            .min()
            .unwrap_or(0);
        for &(i, q) in &h.lines {
            match live_interval(h, ttl) {
                Some((st, en)) => intervals[i as usize].push((st, en, q as u64)),
                None => unknown_units[i as usize] += q as u64,
            }
        }
    }
    let mut invariant_ok = true;
    let mut sold_match_ok = true;
    let mut held_ok = true;
    let mut missing: Vec<&str> = Vec::new();
    let mut outside: Vec<String> = Vec::new();
    for (i, spec) in s.skus.iter().enumerate() {
        let expected_total = expected_total(spec.total as u64, &spec.id, inp.host);
        let mut sa = SkuAudit {
            id: spec.id.clone(),
            expected_total,
            stock_ever: s.stock_ever(i),
            reserved_units: inp.stats.count(&format!("units.reserved.{i}")),
            committed_units: inp.stats.count(&format!("units.committed.{i}")),
            unknown_units: unknown_units[i] + inp.stats.count(&format!("units.unknown.{i}")),
            concurrent_max: concurrent_max(&intervals[i]),
            ..SkuAudit::default()
        };
        let Some(k) = &finals[i] else {
            // Nothing the server says about this SKU can be compared; what
            // clients were told can still prove an oversell.
            missing.push(&spec.id);
            sa.oversold = sa
                .concurrent_max
                .max(sa.committed_units)
                .saturating_sub(sa.stock_ever);
            a.oversold += sa.oversold;
            a.skus.push(sa);
            continue;
        };
        (sa.total, sa.available, sa.held, sa.sold) = (k.total, k.available, k.held, k.sold);
        let sum = k.available as u64 + k.held as u64 + k.sold as u64;
        if sum != k.total as u64 {
            invariant_ok = false;
            a.problem(format!(
                "{}: available {} + held {} + sold {} = {sum} != total {}",
                k.id, k.available, k.held, k.sold, k.total
            ));
        }
        // Units added outside the tester (a host's restock during the run)
        // could be sold too; units removed are a change to report, not a
        // fault.
        let outside_delta = k.total as i64 - expected_total as i64;
        if outside_delta != 0 {
            outside.push(format!(
                "{}: total is {}, the tester's actions make it {expected_total} ({outside_delta:+} changed outside the tester)",
                k.id, k.total
            ));
        }
        sa.stock_ever += outside_delta.max(0) as u64;
        let over = [
            // The server's own books: more sold than it has.
            (k.sold as u64).saturating_sub(k.total as u64),
            // What clients were told: more held or sold at once, or
            // committed, than ever existed.
            sa.concurrent_max.saturating_sub(sa.stock_ever),
            sa.committed_units.saturating_sub(sa.stock_ever),
        ];
        sa.oversold = over.into_iter().max().unwrap_or(0);
        if sa.oversold > 0 {
            a.problem(format!(
                "{}: OVERSOLD by {}: stock ever {}, units held or sold at once (client-confirmed) {}, committed {}, server sold {} of total {}",
                k.id, sa.oversold, sa.stock_ever, sa.concurrent_max, sa.committed_units, k.sold, k.total
            ));
        }
        if inp.exclusive {
            if (k.sold as u64) < sa.committed_units {
                sold_match_ok = false;
                a.problem(format!("{}: clients were told {} units sold, the server counts {}: acknowledged sales lost", k.id, sa.committed_units, k.sold));
            } else if k.sold as u64
                > sa.committed_units + sa.unknown_units + outside_delta.max(0) as u64
            {
                sold_match_ok = false;
                a.problem(format!("{}: the server counts {} sold, clients committed {} (+{} unanswered): sales nobody made", k.id, k.sold, sa.committed_units, sa.unknown_units));
            }
            if waited_fully && k.held > 0 {
                held_ok = false;
                a.problem(format!(
                    "{}: {} units still held after every hold's deadline passed",
                    k.id, k.held
                ));
            }
        }
        a.oversold += sa.oversold;
        a.skus.push(sa);
    }
    let n = s.skus.len();
    let checked = n - missing.len();
    if !missing.is_empty() {
        a.state_lost = true;
        a.check(
            "skus present",
            false,
            format!(
                "{} of {n} SKUs this run created are missing from GET /api/skus: {}",
                missing.len(),
                missing.join(", ")
            ),
        );
    }
    // A check over SKUs of which some are missing says so; over none it is
    // not checked at all.
    let scope = |what: String| {
        if missing.is_empty() {
            what
        } else {
            format!("{what}; {} missing SKUs not checked", missing.len())
        }
    };
    let server_check = |a: &mut Audit, name: &str, ok: bool, finding: String, fine: String| {
        if checked == 0 {
            a.check_as(
                name,
                CheckStatus::NotChecked,
                "not checked: no SKU of this run is left on the server".into(),
            );
        } else {
            a.check(name, ok, scope(if ok { fine } else { finding }));
        }
    };
    a.check(
        "oversold",
        a.oversold == 0,
        format!("oversold: {}", a.oversold),
    );
    server_check(
        &mut a,
        "invariant",
        invariant_ok,
        "available + held + sold != total on the server (see problems)".into(),
        format!("available + held + sold == total for {checked} SKUs"),
    );
    if outside.is_empty() {
        server_check(
            &mut a,
            "totals",
            true,
            String::new(),
            "every total is what the host's actions made it".into(),
        );
    } else {
        a.check_as(
            "totals",
            CheckStatus::Note,
            format!("catalog changed outside the tester: {}", outside.join("; ")),
        );
    }
    if inp.exclusive {
        server_check(
            &mut a,
            "sold matches commits",
            sold_match_ok,
            "the server's sold count differs from what clients were told (see problems)".into(),
            "server sold == units clients were told were sold (within unanswered requests)".into(),
        );
        if waited_fully {
            server_check(
                &mut a,
                "holds settled",
                held_ok,
                "units still held after the last deadline (see problems)".into(),
                "no units held after the last deadline".into(),
            );
        } else {
            a.check_as(
                "holds settled",
                CheckStatus::NotChecked,
                format!(
                    "not checked: deadlines end after --audit-wait-max-s {}s",
                    inp.wait_max.as_secs()
                ),
            );
        }
    }
    for v in crate::audit_channels::check(&mut a.skus, s, inp.stats, &finals, inp.exclusive) {
        a.check(v.name, v.ok, v.detail);
        v.problems.into_iter().for_each(|p| a.problem(p));
    }
    let lost = inp
        .stats
        .holds
        .iter()
        .filter(|h| h.outcome == Outcome::Lost)
        .count();
    if lost > 0 {
        a.state_lost = true;
        a.problem(format!(
            "{lost} acknowledged holds were answered hold_not_found on commit or release during the run: lost"
        ));
    }

    // 3. Client-side contract violations seen during the run.
    let idem = inp.stats.count("idempotency.violation");
    a.check(
        "idempotency",
        idem == 0,
        format!(
            "{idem} of {} retried reservations answered differently",
            inp.stats.count("idempotency.checked")
        ),
    );
    if idem > 0 {
        a.problem(format!(
            "{idem} retries with the same request_id did not replay the first answer"
        ));
    }
    let viol = inp.stats.sum_prefix("viewer.violation.");
    a.check(
        "viewer consistency",
        viol == 0,
        format!("{viol} violations (seq order, sum, sold decreasing)"),
    );
    if viol > 0 {
        a.problem(format!(
            "viewers saw {viol} inconsistent frames: seq {} / sum {} / sold decreased {}",
            inp.stats.count("viewer.violation.seq"),
            inp.stats.count("viewer.violation.sum"),
            inp.stats.count("viewer.violation.sold_decreased")
        ));
    }

    // 4. Sampled holds: each ended the way the client saw it end.
    hold_lookups(&mut a, &inp).await;

    // 5. Redis.
    if let Some((url, prefix)) = inp.redis {
        let budget = inp
            .wait_max
            .saturating_sub(started.elapsed())
            .max(Duration::from_secs(2));
        if let Err(e) = redis_checks(&mut a, &inp, &finals, url, prefix, budget).await {
            a.check(
                "redis",
                false,
                format!("cannot read Redis at {}: {e}", redact(url)),
            );
            a.problem(format!("redis audit failed: {e}"));
        }
    }
    a.conclude();
    a
}

fn expected_total(initial: u64, id: &str, host: &[HostEvent]) -> u64 {
    host.iter()
        .filter(|h| h.ok && h.sku == id)
        .fold(initial, |t, h| match h.action.as_str() {
            "restock" => t + h.qty.unwrap_or(0) as u64,
            "adjust" => t.saturating_sub(h.qty.unwrap_or(0) as u64),
            _ => t,
        })
}

async fn hold_lookups(a: &mut Audit, inp: &Input<'_>) {
    let holds = &inp.stats.holds;
    if holds.is_empty() || inp.holds_max == 0 {
        return;
    }
    let step = holds.len().div_ceil(inp.holds_max).max(1);
    let now_ms = unix_us() / 1000;
    // The server reports finished holds until their slot is reused, a
    // whole hold table's worth of reservations later: below that, an
    // acknowledged hold it does not know was lost.
    let reused = match inp.holds_capacity {
        Some(cap) => inp.stats.count("reserve.ok") >= cap,
        None => false,
    };
    let (mut looked, mut wrong, mut lost, mut forgotten, mut unsupported) = (0, 0, 0, 0, 0);
    for h in holds.iter().step_by(step) {
        let view: Result<HoldView, CallError> =
            inp.api.get_admin(&format!("/api/holds/{}", h.hold)).await;
        looked += 1;
        let state = match view {
            Ok(v) => v.state,
            Err(e) if e.is(Code::HoldNotFound) && reused => {
                forgotten += 1;
                continue;
            }
            Err(e) if e.is(Code::HoldNotFound) => {
                lost += 1;
                a.problem(format!(
                    "hold {}: the client was told it was {}, the server answers hold_not_found: lost",
                    h.hold,
                    told(h.outcome)
                ));
                continue;
            }
            Err(e) if matches!(e, CallError::Status(404 | 405)) || e.is(Code::NotFound) => {
                unsupported += 1;
                continue;
            }
            Err(e) => {
                a.problem(format!("hold {}: look-up failed: {e}", h.hold));
                wrong += 1;
                continue;
            }
        };
        let past_deadline = now_ms > h.deadline_ms + EXPIRY_GRACE_MS;
        let finding = match (h.outcome, state) {
            (_, HoldStatus::Held) if past_deadline => Some(format!(
                "still held {} ms after its deadline",
                now_ms - h.deadline_ms
            )),
            (Outcome::Committed { .. }, s) if s != HoldStatus::Committed => Some(format!(
                "client was told committed, server says {}",
                s.as_str()
            )),
            (Outcome::Released, s) if s != HoldStatus::Released => Some(format!(
                "client was told released, server says {}",
                s.as_str()
            )),
            (Outcome::Abandoned | Outcome::Expired, s)
                if past_deadline && s != HoldStatus::Expired && s != HoldStatus::Released =>
            {
                Some(format!("left to expire, server says {}", s.as_str()))
            }
            _ => None,
        };
        if let Some(w) = finding {
            wrong += 1;
            a.problem(format!("hold {}: {w}", h.hold));
        }
    }
    if lost > 0 {
        a.state_lost = true;
    }
    let mut detail = format!("{looked} holds looked up");
    if unsupported == looked {
        a.check_as(
            "holds ended as told",
            CheckStatus::NotChecked,
            "not checked: the server has no GET /api/holds/{hold}".into(),
        );
        return;
    }
    if lost + wrong == 0 {
        detail.push_str(", every one ended as its client was told");
    } else {
        detail = format!(
            "{looked} holds looked up: {lost} unknown to the server (hold_not_found), {wrong} ended otherwise than their client was told"
        );
    }
    if forgotten > 0 {
        let _ = write!(
            detail,
            "; {forgotten} forgotten (the run made more holds than the server's table keeps)"
        );
    }
    a.check("holds ended as told", lost + wrong == 0, detail);
}

/// What the client was told about a hold, in words.
fn told(o: Outcome) -> &'static str {
    match o {
        Outcome::Committed { .. } => "committed",
        Outcome::Released => "released",
        Outcome::Abandoned => "held (left to expire)",
        Outcome::Expired => "expired",
        Outcome::Unknown => "held (its last answer was lost)",
        Outcome::Lost => "held",
    }
}

async fn redis_checks(
    a: &mut Audit,
    inp: &Input<'_>,
    finals: &[Option<SkuState>],
    url: &str,
    prefix: &str,
    budget: Duration,
) -> anyhow::Result<()> {
    let client = redis::Client::open(url)?;
    let mut con = tokio::time::timeout(
        Duration::from_secs(5),
        client.get_multiplexed_async_connection(),
    )
    .await
    .map_err(|_| anyhow::anyhow!("connect timed out"))??;
    let s = inp.scenario;
    let started = std::time::Instant::now();

    // SKU hashes: wait (bounded) for the journal to catch up with the
    // server's final counts, then compare.
    let mut mismatches;
    loop {
        mismatches = Vec::new();
        for (k, fin) in s.skus.iter().zip(finals) {
            let h: HashMap<String, String> = redis::cmd("HGETALL")
                .arg(format!("{prefix}:{{{}}}:sku", k.id))
                .query_async(&mut con)
                .await?;
            let num = |f: &str| h.get(f).and_then(|v| v.parse::<u64>().ok());
            let (t, av, he, so) = (num("total"), num("available"), num("held"), num("sold"));
            let (Some(t), Some(av), Some(he), Some(so)) = (t, av, he, so) else {
                mismatches.push(format!(
                    "{}: hash {prefix}:{{{}}}:sku missing or incomplete",
                    k.id, k.id
                ));
                continue;
            };
            if av + he + so != t {
                mismatches.push(format!(
                    "{}: Redis available {av} + held {he} + sold {so} != total {t}",
                    k.id
                ));
            }
            if let Some(f) = fin
                && (
                    f.total as u64,
                    f.available as u64,
                    f.held as u64,
                    f.sold as u64,
                ) != (t, av, he, so)
            {
                mismatches.push(format!("{}: Redis (total {t}, available {av}, held {he}, sold {so}) != server (total {}, available {}, held {}, sold {})", k.id, f.total, f.available, f.held, f.sold));
            }
        }
        if mismatches.is_empty() || started.elapsed() >= budget {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    a.check(
        "redis sku hashes",
        mismatches.is_empty(),
        format!("{} SKUs compared with the server's counts", s.skus.len()),
    );
    for m in mismatches {
        a.problem(m);
    }

    // Live holds in Redis: none may be a hold the client saw end.
    let ended: HashSet<&str> = inp
        .stats
        .holds
        .iter()
        .filter(|h| matches!(h.outcome, Outcome::Committed { .. } | Outcome::Released))
        .map(|h| h.hold.as_str())
        .collect();
    let mut live_bad = 0;
    for (k, fin) in s.skus.iter().zip(finals) {
        let fields: Vec<String> = redis::cmd("HKEYS")
            .arg(format!("{prefix}:{{{}}}:holds", k.id))
            .query_async(&mut con)
            .await?;
        let held = fin.as_ref().map_or(0, |f| f.held as usize);
        if fields.len() > held {
            live_bad += 1;
            a.problem(format!(
                "{}: Redis lists {} live hold lines but only {held} units are held",
                k.id,
                fields.len()
            ));
        }
        for f in &fields {
            let hold = f.split(':').next().unwrap_or(f);
            if ended.contains(hold) {
                live_bad += 1;
                a.problem(format!(
                    "{}: Redis still lists hold {hold} live, but it was committed or released",
                    k.id
                ));
            }
        }
    }
    a.check(
        "redis live holds",
        live_bad == 0,
        "no ended hold is listed live".into(),
    );

    // The order stream: every committed hold is there; no ended-unsold one is.
    let ours: HashSet<&str> = s.skus.iter().map(|k| k.id.as_str()).collect();
    let mut in_stream: HashSet<String> = HashSet::new();
    let mut next = "-".to_string();
    let mut read = 0usize;
    loop {
        let page: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(format!("{prefix}:orders"))
            .arg(&next)
            .arg("+")
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut con)
            .await?;
        let n = page.ids.len();
        for e in &page.ids {
            let field = |name: &str| {
                e.map
                    .get(name)
                    .and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
            };
            if field("event").as_deref() == Some("committed")
                && field("sku").is_some_and(|sku| ours.contains(sku.as_str()))
                && let Some(h) = field("hold")
            {
                in_stream.insert(h);
            }
            next = format!("({}", e.id);
        }
        read += n;
        if n < 1000 || read >= inp.stream_max {
            break;
        }
    }
    let committed: Vec<&HoldRecord> = inp
        .stats
        .holds
        .iter()
        .filter(|h| matches!(h.outcome, Outcome::Committed { .. }))
        .collect();
    let missing: Vec<&str> = committed
        .iter()
        .filter(|h| !in_stream.contains(&h.hold))
        .map(|h| h.hold.as_str())
        .collect();
    let by_hold: HashMap<&str, Outcome> = inp
        .stats
        .holds
        .iter()
        .map(|h| (h.hold.as_str(), h.outcome))
        .collect();
    let phantom: Vec<&String> = in_stream
        .iter()
        .filter(|h| {
            matches!(
                by_hold.get(h.as_str()),
                Some(Outcome::Released | Outcome::Abandoned | Outcome::Expired)
            )
        })
        .collect();
    let capped = read >= inp.stream_max;
    a.check(
        "order stream",
        missing.is_empty() && phantom.is_empty(),
        format!(
            "{} committed holds, {} found in {prefix}:orders ({read} entries read{})",
            committed.len(),
            committed.len() - missing.len(),
            if capped { ", capped" } else { "" }
        ),
    );
    for h in missing.iter().take(10) {
        a.problem(format!(
            "committed hold {h} is missing from {prefix}:orders"
        ));
    }
    if missing.len() > 10 {
        a.problem(format!(
            "... and {} more committed holds missing from {prefix}:orders",
            missing.len() - 10
        ));
    }
    for h in phantom.iter().take(10) {
        a.problem(format!(
            "{prefix}:orders has an order for hold {h}, which the client released or left to expire"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrency_sweep() {
        // Three holds overlap in [20, 30); touching intervals do not.
        let iv = [
            (10, Some(30), 1),
            (20, Some(40), 1),
            (20, None, 1),
            (40, Some(50), 1),
        ];
        assert_eq!(concurrent_max(&iv), 3);
        assert_eq!(concurrent_max(&[(0, Some(10), 2), (10, Some(20), 2)]), 2);
        assert_eq!(concurrent_max(&[(5, Some(5), 9)]), 0);
        assert_eq!(concurrent_max(&[]), 0);
    }

    fn rec(outcome: Outcome, acked: u64, end: Option<u64>) -> HoldRecord {
        HoldRecord {
            hold: "h".into(),
            lines: vec![(0, 1)],
            sent_ms: acked - 1,
            acked_ms: acked,
            deadline_ms: acked + 100,
            end_ms: end,
            outcome,
        }
    }

    #[test]
    fn live_intervals_are_lower_bounds() {
        assert_eq!(
            live_interval(&rec(Outcome::Committed { sold: 1 }, 10, None), 50),
            Some((10, None))
        );
        assert_eq!(
            live_interval(&rec(Outcome::Released, 10, Some(30)), 50),
            Some((10, Some(30)))
        );
        // Abandoned: live until sent + ttl at least (9 + 50), before the deadline (110).
        assert_eq!(
            live_interval(&rec(Outcome::Abandoned, 10, None), 50),
            Some((10, Some(59)))
        );
        assert_eq!(live_interval(&rec(Outcome::Unknown, 10, None), 50), None);
    }

    #[test]
    fn expected_totals_follow_successful_host_actions() {
        let ev = |action: &str, qty, ok| HostEvent {
            at_s: 0.0,
            action: action.into(),
            sku: "a".into(),
            qty: Some(qty),
            ok,
            error: None,
            latency_ms: 0.0,
        };
        let host = [
            ev("restock", 5, true),
            ev("adjust", 2, true),
            ev("restock", 100, false),
            ev("open", 0, true),
        ];
        assert_eq!(expected_total(10, "a", &host), 13);
        assert_eq!(expected_total(10, "b", &host), 10);
    }
}
