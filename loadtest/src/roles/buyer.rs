//! A buyer: reserve, then pay (commit) after a delay, release, or walk away
//! and let the hold expire; retries reuse the request id.
//!
//! Owns the buyer's flow, the latency measurement and the hold ledger
//! entry. Latency is measured from the moment the request was *due* (the
//! burst's release or the arrival's scheduled time), not from when it was
//! sent, so a stalled client cannot hide a slow server (no coordinated
//! omission). It never decides whether the run passed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use holdfast_protocol::{Code, Reserved};

use crate::client::{CallError, Checkout, ReserveReq, Sent};
use crate::ctx::Ctx;
use crate::plan::Rng;
use crate::stats::{HoldRecord, Outcome};

/// Where a buyer came from, for the per-burst figures.
#[derive(Debug, Clone, Copy)]
pub enum Origin {
    Burst(usize),
    Arrival,
}

/// One buyer's reservation and what follows it.
pub struct Buyer {
    pub n: u64,
    pub lines: Vec<(String, u32)>,
    pub origin: Origin,
    /// When the reserve was due.
    pub due: Instant,
}

/// The counter of `what` units (`reserved`, `committed`, `unknown`) of
/// the scenario's SKU `sku` on its channel `channel` (indices), read by the
/// audit's per-channel checks.
pub fn channel_counter(what: &str, sku: u16, channel: usize) -> String {
    format!("units.{what}.{sku}.channel.{channel}")
}

impl Buyer {
    /// The channel this buyer's reservation names (index and id): a
    /// one-line reservation on a SKU with channels takes its turn
    /// ([`crate::scenario::SkuSpec::channel_of_buyer`]); a cart reserves on
    /// the common pool.
    fn channel<'c>(&self, ctx: &'c Ctx) -> Option<(usize, &'c str)> {
        let [(sku, _)] = self.lines.as_slice() else {
            return None;
        };
        let spec = &ctx.plan.scenario.skus[*ctx.sku_index.get(sku)? as usize];
        let c = spec.channel_of_buyer(self.n)?;
        Some((c, spec.channels[c].id.as_str()))
    }

    pub async fn run(self, ctx: Arc<Ctx>, checkout: &Checkout) {
        let plan = &ctx.plan;
        let spec = &plan.scenario.buyer;
        let id = format!("{}-{}-{}", plan.run_id, plan.index, self.n);
        let channel = self.channel(&ctx);
        let req = ReserveReq {
            lines: self.lines.clone(),
            buyer: format!("b-{id}"),
            request_id: format!("r-{id}"),
            channel: channel.map(|(_, c)| c.to_string()),
        };
        let mut rng = Rng::new(plan.seed ^ (self.n.wrapping_mul(0x9E37_79B9) + plan.index as u64));

        let (sent, first_sent) =
            retrying(&ctx, "reserve", || checkout.reserve(&req, ctx.limits)).await;
        let done = Instant::now();
        let second = ctx.clock.second_of(self.due);
        let latency_us = done.saturating_duration_since(self.due).as_micros() as u64;
        let sku_idx: Vec<u16> = self
            .lines
            .iter()
            .map(|(s, _)| ctx.sku_index.get(s).copied().unwrap_or(0))
            .collect();
        let first_sent_us = ctx.clock.unix_us(first_sent);
        let reserved = ctx.recorder.with(|s| {
            s.record("reserve", latency_us);
            let sec = s.second(second);
            sec.reserve
                .get_or_insert_with(|| crate::stats::Hist::with_sigfig(2))
                .record_us(latency_us);
            let outcome = match &sent {
                Ok(_) => {
                    sec.reserve_ok += 1;
                    "ok"
                }
                Err(e) if e.is_business_refusal() => {
                    sec.reserve_refused += 1;
                    "refused"
                }
                Err(_) => {
                    sec.errors += 1;
                    "error"
                }
            };
            // A hold and a sold_out refusal cost the server different work:
            // their latencies are kept apart, per phase and per SKU too.
            if outcome != "error" {
                let phase = match self.origin {
                    Origin::Burst(b) => format!("burst.{b}"),
                    Origin::Arrival => "arrivals".into(),
                };
                s.record(&format!("reserve_{outcome}"), latency_us);
                s.record(&format!("{phase}.reserve_{outcome}"), latency_us);
                for &i in &sku_idx {
                    s.record(&format!("sku.{i}.reserve_{outcome}"), latency_us);
                }
            }
            if let Origin::Burst(b) = self.origin {
                let bs = &mut s.bursts[b];
                bs.first_send_us = Some(
                    bs.first_send_us
                        .map_or(first_sent_us, |x| x.min(first_sent_us)),
                );
                bs.last_send_us = bs.last_send_us.max(Some(first_sent_us));
                match outcome {
                    "ok" => bs.reserved += 1,
                    "refused" => bs.refused += 1,
                    _ => bs.errors += 1,
                }
            }
            match &sent {
                Ok(r) => {
                    s.add("reserve.ok", 1);
                    for (&i, (_, q)) in sku_idx.iter().zip(&self.lines) {
                        s.add(&format!("units.reserved.{i}"), *q as u64);
                    }
                    if let Some((c, _)) = channel {
                        s.add(&channel_counter("reserved", sku_idx[0], c), r.units as u64);
                    }
                    let sent_ms = first_sent_us / 1000;
                    let acked_ms = ctx.clock.unix_us(done) / 1000;
                    if s.holds.len() < ctx.plan.holds_tracked_max {
                        s.holds.push(HoldRecord {
                            hold: r.hold.clone(),
                            lines: sku_idx
                                .iter()
                                .copied()
                                .zip(self.lines.iter().map(|l| l.1))
                                .collect(),
                            sent_ms,
                            acked_ms,
                            deadline_ms: r.deadline_ms,
                            end_ms: None,
                            outcome: Outcome::Unknown,
                        });
                        Some((r.clone(), Some(s.holds.len() - 1)))
                    } else {
                        s.add("holds.untracked", 1);
                        Some((r.clone(), None))
                    }
                }
                Err(e) => {
                    s.add(&format!("reserve.error.{}", e.code()), 1);
                    if !e.is_business_refusal() {
                        s.sample_error(format!("reserve {}: {e}", req.request_id));
                    }
                    if matches!(e, CallError::Transport(_) | CallError::Timeout) {
                        // The server may hold units for a reservation whose
                        // answer we lost; the audit allows for them.
                        for (&i, (_, q)) in sku_idx.iter().zip(&self.lines) {
                            s.add(&format!("units.unknown.{i}"), *q as u64);
                        }
                        if let Some((c, _)) = channel {
                            let q = self.lines[0].1 as u64;
                            s.add(&channel_counter("unknown", sku_idx[0], c), q);
                        }
                    }
                    None
                }
            }
        });
        let Some((r, slot)) = reserved else { return };

        if rng.unit() < spec.duplicate_probability {
            self.check_idempotent(&ctx, checkout, &req, &r).await;
        }

        let choice = rng.unit();
        let pay = Duration::from_millis(rng.range(spec.pay_delay_ms[0], spec.pay_delay_ms[1]));
        let due = Instant::now() + pay;
        let outcome = if choice >= spec.commit_probability + spec.release_probability {
            Outcome::Abandoned
        } else {
            tokio::select! {
                _ = ctx.end.cancelled() => Outcome::Abandoned,
                _ = tokio::time::sleep_until(due.into()) => {
                    if choice < spec.commit_probability { self.commit(&ctx, checkout, &r, &id, due, &sku_idx).await } else { self.release(&ctx, checkout, &r, &id, due).await }
                }
            }
        };
        if let Some(slot) = slot {
            ctx.recorder.with(|s| {
                let h = &mut s.holds[slot];
                h.outcome = outcome;
                if outcome == Outcome::Released {
                    h.end_ms = Some(ctx.clock.unix_us(due) / 1000);
                }
            });
        }
    }

    async fn commit(
        &self,
        ctx: &Ctx,
        checkout: &Checkout,
        r: &Reserved,
        id: &str,
        due: Instant,
        sku_idx: &[u16],
    ) -> Outcome {
        let rid = format!("c-{id}");
        let (sent, _) =
            retrying(ctx, "commit", || checkout.commit(&r.hold, &rid, ctx.limits)).await;
        let latency_us = Instant::now().saturating_duration_since(due).as_micros() as u64;
        ctx.recorder.with(|s| {
            s.record("commit", latency_us);
            match &sent {
                Ok(c) => {
                    s.add("commit.ok", 1);
                    s.second(ctx.clock.second_of(due)).commit_ok += 1;
                    // A one-line hold's sold units belong to its SKU; a
                    // cart's are split by line as reserved (full commit).
                    if sku_idx.len() == 1 {
                        s.add(&format!("units.committed.{}", sku_idx[0]), c.sold as u64);
                        if let Some((ch, _)) = self.channel(ctx) {
                            s.add(&channel_counter("committed", sku_idx[0], ch), c.sold as u64);
                        }
                    } else {
                        for (&i, l) in sku_idx.iter().zip(&r.lines) {
                            s.add(&format!("units.committed.{i}"), l.qty as u64);
                        }
                    }
                    Outcome::Committed { sold: c.sold }
                }
                Err(e) => {
                    s.add(&format!("commit.error.{}", e.code()), 1);
                    s.second(ctx.clock.second_of(due)).errors +=
                        u64::from(!e.is(Code::HoldExpired));
                    s.sample_error(format!("commit {}: {e}", r.hold));
                    match e {
                        CallError::Refused(Code::HoldExpired) => Outcome::Expired,
                        CallError::Refused(Code::HoldNotFound) => Outcome::Lost,
                        CallError::Refused(_) => Outcome::Abandoned,
                        _ => Outcome::Unknown,
                    }
                }
            }
        })
    }

    async fn release(
        &self,
        ctx: &Ctx,
        checkout: &Checkout,
        r: &Reserved,
        id: &str,
        due: Instant,
    ) -> Outcome {
        let rid = format!("x-{id}");
        let (sent, _) = retrying(ctx, "release", || {
            checkout.release(&r.hold, &rid, ctx.limits)
        })
        .await;
        let latency_us = Instant::now().saturating_duration_since(due).as_micros() as u64;
        ctx.recorder.with(|s| {
            s.record("release", latency_us);
            match &sent {
                Ok(_) => {
                    s.add("release.ok", 1);
                    s.second(ctx.clock.second_of(due)).release_ok += 1;
                    Outcome::Released
                }
                Err(e) => {
                    s.add(&format!("release.error.{}", e.code()), 1);
                    s.sample_error(format!("release {}: {e}", r.hold));
                    match e {
                        CallError::Refused(Code::HoldExpired) => Outcome::Expired,
                        CallError::Refused(Code::HoldNotFound) => Outcome::Lost,
                        CallError::Refused(_) => Outcome::Abandoned,
                        _ => Outcome::Unknown,
                    }
                }
            }
        })
    }

    /// Sends the same reserve again: the server must answer with the same
    /// hold, marked replayed, and change nothing.
    async fn check_idempotent(
        &self,
        ctx: &Ctx,
        checkout: &Checkout,
        req: &ReserveReq,
        first: &Reserved,
    ) {
        let again = checkout.reserve(req, ctx.limits).await;
        ctx.recorder.with(|s| match again.answer {
            Ok(r) if r.hold == first.hold && r.replayed => s.add("idempotency.checked", 1),
            Ok(r) => {
                s.add("idempotency.checked", 1);
                s.add("idempotency.violation", 1);
                s.sample_error(format!(
                    "idempotency: {} answered hold {} (replayed {}) after {}",
                    req.request_id, r.hold, r.replayed, first.hold
                ));
            }
            Err(e) if e.retryable() => {}
            Err(e) => {
                s.add("idempotency.checked", 1);
                s.add("idempotency.violation", 1);
                s.sample_error(format!("idempotency: {} retried got {e}", req.request_id));
            }
        });
    }
}

/// Calls `f` until it succeeds, fails for good, or runs out of retries;
/// returns the answer and when the first attempt was sent.
async fn retrying<T, F, Fut>(ctx: &Ctx, op: &str, mut f: F) -> (Result<T, CallError>, Instant)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Sent<T>>,
{
    let spec = &ctx.plan.scenario.buyer;
    let mut first = None;
    let mut attempt = 0;
    loop {
        let s = f().await;
        let first_sent = *first.get_or_insert(s.sent_at);
        match s.answer {
            Err(e) if e.retryable() && attempt < spec.retries_max && !ctx.end.is_cancelled() => {
                attempt += 1;
                ctx.recorder.add(&format!("retries.{op}"), 1);
                let backoff = Duration::from_millis(spec.retry_backoff_ms * attempt as u64);
                tokio::select! {
                    _ = ctx.end.cancelled() => return (Err(e), first_sent),
                    _ = tokio::time::sleep(backoff) => {}
                }
            }
            answer => return (answer, first_sent),
        }
    }
}
