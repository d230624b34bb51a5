//! Signed webhooks to the shop's backend: orders, holds ending, stock
//! transitions, low stock and coalesced stock changes, each signed per the
//! Standard Webhooks spec and delivered at least once per endpoint (in
//! memory: bounded and lossy across a restart).
//!
//! # Layout
//!
//! - this file: [`Webhooks`] (the endpoints, fan-out of events to them,
//!   low-stock thresholds and stock-change coalescing) and [`Endpoint`];
//! - [`config`]: flags, endpoint definitions, URL checks;
//! - [`event`]: event types, ids and the JSON body;
//! - [`sign`]: Standard Webhooks signatures and secrets;
//! - [`queue`]: an endpoint's bounded queue, retries, dead letters, history;
//! - [`deliver`]: one task per endpoint, the HTTP(S) client, backoff;
//! - [`source`]: where events come from in memory (the engine's events)
//!   and always (the hub's broadcast rounds);
//! - [`stream`]: with Redis, the order stream as the source and a durable
//!   stream per endpoint;
//! - the admin API is `crate::http::webhooks` (routes live with the HTTP layer).
//!
//! Nothing here is on the reservation path: events are read after the
//! fact from the engine's event stream and from the broadcaster.

pub mod config;
pub mod deliver;
pub mod event;
pub mod queue;
pub mod sign;
pub mod source;
pub mod stream;

use crate::ops::Ops;
use config::{Checked, FieldError, WebhookArgs};
use event::{Event, EventIds, EventType};
use holdfast_engine::SkuIdx;
use metrics::{counter, gauge};
use queue::{Bounds, MemQueue};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Most SKUs with a low-stock threshold.
pub const LOW_STOCK_SKUS_MAX: usize = 10_000;

/// One receiving endpoint.
#[derive(Debug)]
pub struct Endpoint {
    pub id: String,
    pub url: config::Url,
    pub secret: sign::Secret,
    pub events: Vec<EventType>,
    pub concurrency: usize,
    pub timeout_ms: u64,
    pub stock_changed_interval_ms: u64,
    /// Defined in `--webhooks-file`: not changed through the API.
    pub from_file: bool,
    pub queue: MemQueue,
    /// With Redis: the endpoint's durable stream.
    pub streams: Option<Arc<stream::Streams>>,
    /// `stock.changed` coalescing: per SKU, when it was last sent and
    /// whether a change waits.
    stock_sent: Mutex<HashMap<SkuIdx, (u64, bool)>>,
    stop: CancellationToken,
}

impl Endpoint {
    pub fn wants(&self, kind: EventType) -> bool {
        self.events.contains(&kind)
    }

    /// Sets this endpoint's queue gauges.
    pub fn report(&self) {
        let c = self.queue.counts();
        gauge!("holdfast_webhook_retrying", "endpoint" => self.id.clone()).set(c.retrying as f64);
        let now = crate::auth::jwt::TokenClock::default().now_ms();
        let lag_s = c
            .oldest_ms
            .map_or(0.0, |o| now.saturating_sub(o) as f64 / 1000.0);
        gauge!("holdfast_webhook_lag_seconds", "endpoint" => self.id.clone()).set(lag_s);
    }

    fn push(&self, event: Arc<Event>) {
        if !self.queue.push(event) {
            counter!("holdfast_webhook_dropped_total", "endpoint" => self.id.clone()).increment(1);
        }
    }

    /// The admin API's view (never the secret).
    pub fn view(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "url": self.url.text,
            "events": self.events.iter().map(|e| e.as_str()).collect::<Vec<_>>(),
            "concurrency": self.concurrency,
            "timeout_ms": self.timeout_ms,
            "stock_changed_interval_ms": self.stock_changed_interval_ms,
            "read_only": self.from_file,
            "queue": self.queue.counts(),
        })
    }
}

/// The endpoints and what feeds them.
#[derive(Debug)]
pub struct Webhooks {
    pub args: WebhookArgs,
    endpoints: RwLock<Vec<Arc<Endpoint>>>,
    ids: EventIds,
    ops: Arc<Ops>,
    /// SKU id → threshold; and the last available count seen per SKU.
    low_stock: Mutex<LowStock>,
    /// With Redis: durable queues.
    streams: Option<Arc<stream::Streams>>,
    /// Buyer tokens: the channel each buyer hold was made through.
    buyers: Option<Arc<crate::auth::buyer::BuyerAuth>>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

#[derive(Debug, Default)]
struct LowStock {
    thresholds: HashMap<String, u32>,
    last_available: HashMap<SkuIdx, u32>,
}

impl Webhooks {
    /// Builds the webhooks (with the file's endpoints) and starts their
    /// delivery tasks.
    pub fn start(
        args: &WebhookArgs,
        ops: Arc<Ops>,
        streams: Option<Arc<stream::Streams>>,
        buyers: Option<Arc<crate::auth::buyer::BuyerAuth>>,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
    ) -> Result<Arc<Self>, String> {
        args.check()?;
        let hooks = Arc::new(Self {
            args: args.clone(),
            endpoints: RwLock::default(),
            ids: EventIds::default(),
            ops,
            low_stock: Mutex::default(),
            streams: streams.clone(),
            buyers,
            tracker: tracker.clone(),
            shutdown: shutdown.clone(),
        });
        if let Some(path) = &args.file {
            for spec in config::load_file(path)? {
                let checked = spec.check(args.http_allowed).map_err(|e| {
                    format!(
                        "{}: endpoint {:?}: {}: {}",
                        path.display(),
                        spec.id,
                        e.field,
                        e.message
                    )
                })?;
                if spec.secret.is_none() {
                    return Err(format!(
                        "{}: endpoint {:?} needs a secret (whsec_...) the receiver knows",
                        path.display(),
                        spec.id
                    ));
                }
                hooks.add(checked, true).map_err(|e| e.message)?;
            }
        }
        if let Some(s) = streams {
            tracker.spawn(stream::run_source(hooks.clone(), s, shutdown.clone()));
        }
        Ok(hooks)
    }

    pub fn endpoints(&self) -> Vec<Arc<Endpoint>> {
        self.endpoints
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn endpoint(&self, id: &str) -> Option<Arc<Endpoint>> {
        self.endpoints().into_iter().find(|e| e.id == id)
    }

    /// Adds an endpoint and starts its task.
    pub fn add(&self, c: Checked, from_file: bool) -> Result<Arc<Endpoint>, FieldError> {
        let mut list = self.endpoints.write().unwrap_or_else(|p| p.into_inner());
        if list.iter().any(|e| e.id == c.id) {
            return Err(FieldError {
                field: "id",
                message: format!("an endpoint {:?} exists", c.id),
            });
        }
        if list.len() >= self.args.endpoints_max {
            return Err(FieldError {
                field: "id",
                message: format!("at most {} endpoints", self.args.endpoints_max),
            });
        }
        let ep = Arc::new(Endpoint {
            id: c.id,
            url: c.url,
            secret: c.secret,
            events: c.events,
            concurrency: c.concurrency,
            timeout_ms: c.timeout_ms,
            stock_changed_interval_ms: c.stock_changed_interval_ms,
            from_file,
            queue: MemQueue::new(Bounds {
                queue_max: self.args.queue_max,
                dead_letters_max: self.args.dead_letters_max,
                history_max: self.args.history_max,
            }),
            streams: self.streams.clone(),
            stock_sent: Mutex::default(),
            stop: self.shutdown.child_token(),
        });
        if let Some(s) = &self.streams {
            self.tracker.spawn(stream::run_feeder(
                ep.clone(),
                s.clone(),
                self.args.queue_max,
                ep.stop.clone(),
            ));
        }
        list.push(ep.clone());
        // With Redis, hold endings reach the webhooks through the order
        // stream, like orders: the journal writes them there from now on.
        if (ep.wants(EventType::HoldReleased) || ep.wants(EventType::HoldExpired))
            && let crate::journal::Durability::Redis(journal) = &self.ops.durability
        {
            journal.stream_hold_endings();
        }
        let backoff = deliver::Backoff {
            tries_max: self.args.tries_max,
            base_ms: self.args.backoff_ms,
            max_ms: self.args.backoff_max_ms,
        };
        self.tracker.spawn(deliver::run(
            ep.clone(),
            backoff,
            self.tracker.clone(),
            ep.stop.clone(),
        ));
        Ok(ep)
    }

    /// Removes an API-made endpoint (its queue is dropped).
    pub fn remove(&self, id: &str) -> Option<Arc<Endpoint>> {
        let mut list = self.endpoints.write().unwrap_or_else(|p| p.into_inner());
        let at = list.iter().position(|e| e.id == id)?;
        let ep = list.remove(at);
        ep.stop.cancel();
        Some(ep)
    }

    /// Makes an event and queues it for every endpoint that wants it.
    pub fn emit(&self, kind: EventType, data: serde_json::Value) {
        let targets: Vec<_> = self
            .endpoints()
            .into_iter()
            .filter(|e| e.wants(kind))
            .collect();
        if targets.is_empty() {
            return;
        }
        let event = Arc::new(self.event(kind, data));
        for ep in targets {
            ep.push(event.clone());
        }
    }

    fn event(&self, kind: EventType, data: serde_json::Value) -> Event {
        Event {
            id: self.ids.next(),
            kind,
            ts_ms: self.ops.engine.now_ms(),
            data,
        }
    }

    /// Blanks buyer `names` (its stored name, its hex hash) in every
    /// endpoint's events kept in memory (see [`MemQueue::erase_buyer`]).
    /// Returns the events blanked. Their Redis streams are the journal's
    /// erasure's (`crate::journal::erase::erase_all`).
    pub fn erase_buyer_in_memory(&self, names: &[&str]) -> u64 {
        self.endpoints()
            .iter()
            .map(|ep| ep.queue.erase_buyer(names))
            .sum()
    }

    /// The sales channel of a buyer-token hold (remembered in memory).
    pub fn channel_of(&self, hold: holdfast_engine::HoldId) -> Option<String> {
        self.buyers
            .as_ref()
            .and_then(|b| b.channel_of(hold))
            .map(|c| c.to_string())
    }

    /// Sets (or with 0 clears) a SKU's low-stock threshold.
    pub fn set_low_stock(&self, sku: &str, threshold: u32) -> Result<(), String> {
        let mut l = self.low_stock.lock().unwrap_or_else(|p| p.into_inner());
        if threshold == 0 {
            l.thresholds.remove(sku);
            return Ok(());
        }
        if !l.thresholds.contains_key(sku) && l.thresholds.len() >= LOW_STOCK_SKUS_MAX {
            return Err(format!(
                "at most {LOW_STOCK_SKUS_MAX} SKUs with a threshold"
            ));
        }
        l.thresholds.insert(sku.to_string(), threshold);
        Ok(())
    }

    pub fn low_stock(&self) -> HashMap<String, u32> {
        self.low_stock
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .thresholds
            .clone()
    }

    /// One broadcast round of the hub: `changed` SKUs' counts moved.
    /// Low stock fires when available falls to the threshold or below
    /// (again only after it rose above); `stock.changed` goes out at most
    /// once per SKU per endpoint interval, with the latest counts.
    pub fn on_round(&self, changed: &[SkuIdx]) {
        let now = self.ops.engine.now_ms();
        let mut states = HashMap::new();
        for &sku in changed {
            if let Some(snap) = self.ops.snapshot(sku) {
                states.insert(sku, crate::ops::sku_state(&snap, None));
            }
        }
        {
            let mut l = self.low_stock.lock().unwrap_or_else(|p| p.into_inner());
            let mut fired = Vec::new();
            for (sku, state) in &states {
                let before = l.last_available.insert(*sku, state.available);
                let Some(&threshold) = l.thresholds.get(&state.id) else {
                    continue;
                };
                let was_above = before.is_none_or(|b| b > threshold);
                if was_above && state.available <= threshold && state.available > 0 {
                    fired.push((state.id.clone(), state.available, threshold));
                }
            }
            drop(l);
            for (sku, available, threshold) in fired {
                self.emit(
                    EventType::SkuLowStock,
                    serde_json::json!({"sku": sku, "available": available, "threshold": threshold}),
                );
            }
        }
        for ep in self.endpoints() {
            if !ep.wants(EventType::StockChanged) {
                continue;
            }
            let mut sent = ep.stock_sent.lock().unwrap_or_else(|p| p.into_inner());
            for sku in changed {
                sent.entry(*sku).or_insert((0, false)).1 = true;
            }
            let due: Vec<SkuIdx> = sent
                .iter()
                .filter(|(_, (at, pending))| {
                    *pending && now.saturating_sub(*at) >= ep.stock_changed_interval_ms
                })
                .map(|(s, _)| *s)
                .collect();
            for sku in due {
                let state = match states.get(&sku) {
                    Some(s) => s.clone(),
                    None => match self.ops.snapshot(sku) {
                        Some(snap) => crate::ops::sku_state(&snap, None),
                        None => continue,
                    },
                };
                sent.insert(sku, (now, false));
                let data = serde_json::json!({
                    "sku": state.id, "available": state.available, "held": state.held,
                    "sold": state.sold, "total": state.total, "state": state.state,
                    "sold_out": state.sold_out,
                });
                ep.push(Arc::new(self.event(EventType::StockChanged, data)));
            }
        }
    }
}
