//! A viewer: one websocket subscriber watching the live counters, checking
//! what it is told.
//!
//! Owns the per-viewer consistency checks (per-topic `seq` strictly
//! increases; every SKU state has `available + held + sold == total`; `sold`
//! never decreases within a topic), the fan-out delivery lag and the moment
//! it first saw each SKU sold out. Its state is a few small vectors, so a
//! process holds tens of thousands; it never keeps a frame after checking it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use holdfast_protocol::{ClientMsg, ServerMsg, SkuState, Subscribe};

use crate::client::ws::{WsStream, decode, encode};
use crate::ctx::Ctx;
use crate::plan::Rng;

/// What one viewer remembers between frames.
#[derive(Debug, Default)]
struct Seen {
    /// Last seq per topic, by topic name (a viewer has few topics).
    seq: Vec<(Box<str>, u64)>,
    /// Last `sold` per (topic index in `seq`, SKU index).
    sold: Vec<(u16, u16, u32)>,
    /// SKUs (scenario index bits) this viewer's frames covered, and the ones
    /// it saw sold out.
    covered: u64,
    sold_out: u64,
}

/// Reconnect back-off, as the overlay's `live.js` does it: the first retry
/// after about [`BACKOFF_BASE_MS`], doubling up to [`BACKOFF_MAX_MS`], with
/// jitter over the upper half; reset by a snapshot. A restart rehearsal
/// then measures the recovery real viewers would see.
pub const BACKOFF_BASE_MS: u64 = 250;
pub const BACKOFF_MAX_MS: u64 = 8_000;

/// How one websocket session ended.
enum SessionEnd {
    /// The run is over (a clean close).
    RunOver,
    /// The connection failed or the server closed it.
    Lost,
}

/// The delay before reconnect `attempt` (0-based), given a uniform `u` in
/// [0, 1): between half the ceiling and the ceiling.
pub fn backoff_ms(attempt: u32, u: f64) -> u64 {
    let ceiling = BACKOFF_MAX_MS.min(BACKOFF_BASE_MS << attempt.min(16));
    ceiling / 2 + (u * (ceiling / 2) as f64) as u64
}

/// Connects, subscribes and checks frames until the run ends; when the
/// connection is lost, reconnects with the overlay's back-off and records
/// the time from the loss to the next snapshot (`viewer_recovery`).
pub async fn run(ctx: Arc<Ctx>, binary: bool, n: u64) {
    let mut rng = Rng::new(ctx.plan.seed ^ n.wrapping_mul(0x2545_F491_4F6C_DD1D));
    let mut seen = Seen::default();
    let mut attempt = 0u32;
    let mut lost_at: Option<Instant> = None;
    let mut frames = 0u64;
    loop {
        if let Ok(ws) = ctx.node(n).connector.connect(None, binary).await {
            match session(
                &ctx,
                ws,
                binary,
                &mut seen,
                &mut frames,
                &mut lost_at,
                &mut attempt,
            )
            .await
            {
                SessionEnd::RunOver => break,
                SessionEnd::Lost => {
                    ctx.recorder.add("viewers.disconnected", 1);
                    lost_at.get_or_insert_with(Instant::now);
                }
            }
        }
        let delay = Duration::from_millis(backoff_ms(attempt, rng.unit()));
        attempt = attempt.saturating_add(1);
        tokio::select! {
            _ = ctx.end.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
        ctx.recorder.add("viewers.reconnects", 1);
    }
    ctx.recorder.with(|s| {
        s.add("viewer.frames", frames);
        if lost_at.is_some() {
            s.add("viewers.unrecovered", 1);
        }
        for i in 0..s.soldout.len().min(64) {
            if seen.covered & (1 << i) != 0 {
                s.soldout[i].viewers_covering += 1;
            }
        }
    });
}

/// One connection: subscribe, then check frames until the end or a loss.
async fn session(
    ctx: &Ctx,
    mut ws: WsStream,
    binary: bool,
    seen: &mut Seen,
    frames: &mut u64,
    lost_at: &mut Option<Instant>,
    attempt: &mut u32,
) -> SessionEnd {
    // Relaxed: a progress counter, read only for display.
    ctx.viewers_live.fetch_add(1, Ordering::Relaxed);
    // A new session starts new topic sequences (a restarted gateway counts
    // from 1 again); what it showed before is not compared across.
    seen.seq.clear();
    seen.sold.clear();
    let sub = ClientMsg::Subscribe(Subscribe {
        id: 1,
        topics: ctx.plan.scenario.viewers.topics.clone(),
    });
    let mut end = SessionEnd::Lost;
    if ws.send(encode(&sub, binary)).await.is_ok() {
        loop {
            let frame = tokio::select! {
                _ = ctx.end.cancelled() => { end = SessionEnd::RunOver; break }
                f = ws.next() => f,
            };
            let Some(Ok(frame)) = frame else { break };
            if frame.is_close() {
                break;
            }
            let Some(msg) = decode(&frame) else { continue };
            *frames += 1;
            ctx.frames.fetch_add(1, Ordering::Relaxed);
            match msg {
                Ok(m) => {
                    if matches!(m, ServerMsg::Snapshot(_)) {
                        *attempt = 0;
                        if let Some(t) = lost_at.take() {
                            ctx.recorder.with(|s| {
                                s.record("viewer_recovery", t.elapsed().as_micros() as u64)
                            });
                        }
                    }
                    check(ctx, seen, m)
                }
                Err(e) => ctx.recorder.with(|s| {
                    s.add("viewer.undecodable", 1);
                    s.sample_error(format!("viewer frame: {e}"));
                }),
            }
        }
    }
    ctx.viewers_live.fetch_sub(1, Ordering::Relaxed);
    if matches!(end, SessionEnd::RunOver) {
        let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
    }
    end
}

fn check(ctx: &Ctx, seen: &mut Seen, msg: ServerMsg) {
    let now_us = ctx.clock.unix_us(Instant::now());
    match msg {
        ServerMsg::Snapshot(f) => {
            let t = topic_seq(ctx, seen, &f.topic, f.seq);
            skus(ctx, seen, t, None, now_us, &f.skus);
        }
        ServerMsg::Update(f) => {
            let t = topic_seq(ctx, seen, &f.topic, f.seq);
            ctx.recorder.with(|s| {
                s.add("viewer.updates", 1);
                s.record("fanout", now_us.saturating_sub(f.ts_ms * 1000));
            });
            skus(ctx, seen, t, Some(f.ts_ms), now_us, &f.skus);
        }
        ServerMsg::StockEvent(f) => {
            topic_seq(ctx, seen, &f.topic, f.seq);
            ctx.recorder
                .with(|s| s.record("fanout", now_us.saturating_sub(f.ts_ms * 1000)));
            if f.event == holdfast_protocol::StockEventKind::SoldOut
                && let Some(&i) = ctx.sku_index.get(&f.sku)
            {
                saw_sold_out(ctx, seen, i, f.ts_ms, now_us);
            }
        }
        ServerMsg::Error(e) => ctx.recorder.add(&format!("viewer.error.{}", e.error), 1),
        _ => {}
    }
}

/// Checks that `seq` strictly increases on `topic`; returns the topic's slot.
fn topic_seq(ctx: &Ctx, seen: &mut Seen, topic: &str, seq: u64) -> u16 {
    match seen.seq.iter().position(|(t, _)| &**t == topic) {
        Some(i) => {
            if seq <= seen.seq[i].1 {
                ctx.recorder.with(|s| {
                    s.add("viewer.violation.seq", 1);
                    s.sample_error(format!(
                        "viewer: topic {topic} seq {seq} after {}",
                        seen.seq[i].1
                    ));
                });
            }
            seen.seq[i].1 = seen.seq[i].1.max(seq);
            i as u16
        }
        None => {
            seen.seq.push((topic.into(), seq));
            (seen.seq.len() - 1) as u16
        }
    }
}

/// Checks the SKU states of one frame; `ts_ms` is the server's time of a
/// change (`None` for a snapshot).
fn skus(
    ctx: &Ctx,
    seen: &mut Seen,
    topic: u16,
    ts_ms: Option<u64>,
    now_us: u64,
    skus: &[SkuState],
) {
    for k in skus {
        if k.available as u64 + k.held as u64 + k.sold as u64 != k.total as u64 {
            ctx.recorder.with(|s| {
                s.add("viewer.violation.sum", 1);
                s.sample_error(format!(
                    "viewer: {} available {} + held {} + sold {} != total {}",
                    k.id, k.available, k.held, k.sold, k.total
                ));
            });
        }
        let Some(&i) = ctx.sku_index.get(&k.id) else {
            continue;
        };
        seen.covered |= 1 << i;
        match seen
            .sold
            .iter_mut()
            .find(|(t, s, _)| *t == topic && *s == i)
        {
            Some(entry) => {
                if k.sold < entry.2 {
                    ctx.recorder.with(|s| {
                        s.add("viewer.violation.sold_decreased", 1);
                        s.sample_error(format!(
                            "viewer: {} sold went from {} to {}",
                            k.id, entry.2, k.sold
                        ));
                    });
                }
                entry.2 = entry.2.max(k.sold);
            }
            None => seen.sold.push((topic, i, k.sold)),
        }
        // Only a change frame shows a sell-out happening: a snapshot of a
        // SKU that sold out before this viewer subscribed (in an earlier
        // run, say) is not a propagation to measure.
        if let Some(ts) = ts_ms
            && k.sold_out
        {
            saw_sold_out(ctx, seen, i, ts, now_us);
        }
    }
}

/// This viewer saw SKU `i` sell out, in a frame the server sent at `ts_ms`.
fn saw_sold_out(ctx: &Ctx, seen: &mut Seen, i: u16, ts_ms: u64, now_us: u64) {
    if seen.sold_out & (1 << i) != 0 {
        return;
    }
    seen.sold_out |= 1 << i;
    ctx.recorder.with(|s| {
        let so = &mut s.soldout[i as usize];
        so.viewers_seen += 1;
        so.first_server_ms = Some(so.first_server_ms.map_or(ts_ms, |x| x.min(ts_ms)));
        so.last_seen_ms = so.last_seen_ms.max(Some(now_us / 1000));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap_like_the_overlay() {
        assert_eq!(backoff_ms(0, 0.0), 125);
        assert_eq!(backoff_ms(0, 0.999), 249);
        assert_eq!(backoff_ms(1, 0.0), 250);
        assert_eq!(backoff_ms(4, 0.0), 2_000);
        // Capped at 8 s (4..8 s with jitter), however many attempts.
        assert_eq!(backoff_ms(5, 0.0), 4_000);
        assert_eq!(backoff_ms(40, 0.0), 4_000);
        assert!(backoff_ms(40, 0.999) < BACKOFF_MAX_MS);
    }
}
