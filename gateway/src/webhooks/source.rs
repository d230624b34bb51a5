//! Where webhook events come from, never the reservation path:
//!
//! - in memory (no `--redis`), the engine's event stream (switched on only
//!   when webhooks are on) is drained by a thread of its own, which turns
//!   committed, released and expired hold lines into one event per hold,
//!   and sell-outs / back-in-stock into events;
//! - low stock and `stock.changed` come from the hub's broadcast rounds
//!   (an observer called once per round, see `ws::hub`).

use super::Webhooks;
use super::event::EventType;
use holdfast_engine::{Event, EventKind, HoldId, HoldLine};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Events taken from the engine per drain.
const DRAIN_BATCH_MAX: usize = 1024;
/// Pause when the engine had nothing (the expirer thread's pattern).
const IDLE_SLEEP: Duration = Duration::from_millis(2);
/// Holds whose lines are being gathered at once (a cart's lines arrive
/// together; more means lines were lost, and the oldest are dropped).
const GATHERING_MAX: usize = 4096;

/// Which kind of ending a gathered hold is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Ending {
    Committed,
    Released,
    Expired,
}

/// Lines of a hold seen so far: `(line, sku, qty or sold, returned)`.
type Gathered = Vec<(u8, holdfast_engine::SkuIdx, u32, u32)>;

/// Drains the engine's events on a thread until `shutdown`.
pub fn spawn_engine_source(
    hooks: Arc<Webhooks>,
    shutdown: CancellationToken,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("holdfast-webhooks".into())
        .spawn(move || {
            let mut buf = Vec::with_capacity(DRAIN_BATCH_MAX);
            let mut gathering: HashMap<(HoldId, Ending), Gathered> = HashMap::new();
            while !shutdown.is_cancelled() {
                buf.clear();
                let Some(log) = hooks.ops.engine.events() else {
                    return;
                };
                if log.drain_into(&mut buf, DRAIN_BATCH_MAX) == 0 {
                    std::thread::sleep(IDLE_SLEEP);
                    continue;
                }
                for event in &buf {
                    on_event(&hooks, &mut gathering, event);
                }
            }
        })
        .expect("spawn the webhooks thread")
}

fn on_event(hooks: &Webhooks, gathering: &mut HashMap<(HoldId, Ending), Gathered>, event: &Event) {
    let engine = &hooks.ops.engine;
    let sku_name = |sku| {
        engine
            .sku_id(sku)
            .map(|s| s.to_string())
            .unwrap_or_default()
    };
    let (line, ending, qty, returned): (HoldLine, Ending, u32, u32) = match event.kind {
        EventKind::Committed {
            line,
            sold,
            returned,
        } => (line, Ending::Committed, sold, returned),
        EventKind::Released { line, qty } => (line, Ending::Released, qty, 0),
        EventKind::Expired { line, qty } => (line, Ending::Expired, qty, 0),
        EventKind::SoldOut { sku } => {
            hooks.emit(
                EventType::SkuSoldOut,
                serde_json::json!({"sku": sku_name(sku)}),
            );
            return;
        }
        EventKind::BackInStock { sku } => {
            hooks.emit(
                EventType::SkuBackInStock,
                serde_json::json!({"sku": sku_name(sku)}),
            );
            return;
        }
        _ => return,
    };
    if gathering.len() >= GATHERING_MAX
        && let Some(k) = gathering.keys().next().copied()
    {
        gathering.remove(&k);
    }
    let key = (line.hold, ending);
    let lines = gathering.entry(key).or_default();
    lines.push((line.line, line.sku, qty, returned));
    if lines.len() < usize::from(line.lines) {
        return;
    }
    let mut lines = gathering.remove(&key).unwrap_or_default();
    lines.sort_by_key(|l| l.0);
    let buyer = hooks.ops.ids.buyer_name(line.buyer).map(|b| b.to_string());
    let channel = hooks.channel_of(line.hold);
    let (kind, lines_json): (EventType, Vec<serde_json::Value>) = match ending {
        Ending::Committed => (
            EventType::OrderCommitted,
            lines
                .iter()
                .map(|(_, sku, sold, returned)| {
                    serde_json::json!({"sku": sku_name(*sku), "qty": sold, "returned": returned})
                })
                .collect(),
        ),
        Ending::Released | Ending::Expired => (
            if ending == Ending::Released {
                EventType::HoldReleased
            } else {
                EventType::HoldExpired
            },
            lines
                .iter()
                .map(|(_, sku, qty, _)| serde_json::json!({"sku": sku_name(*sku), "qty": qty}))
                .collect(),
        ),
    };
    hooks.emit(
        kind,
        serde_json::json!({
            "hold": line.hold.to_string(),
            "buyer": buyer,
            "channel": channel,
            "lines": lines_json,
            "at_ms": event.at_ms,
        }),
    );
}
