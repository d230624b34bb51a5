//! Durable webhook queues with Redis (`--redis`): at least once, across
//! restarts.
//!
//! - Source: the order stream (`<prefix>:orders`, written by the journal)
//!   is read through the consumer group `webhooks`. A committed hold (all
//!   its lines), a released or expired hold (entries the journal writes
//!   once an endpoint wants `hold.released` / `hold.expired`, see
//!   `Journal::stream_hold_endings`) or a sell-out / back-in-stock entry
//!   becomes one event,
//!   `XADD`ed to each interested endpoint's stream, and the order-stream
//!   entries are `XACK`ed in the same `MULTI`: a kill between the two
//!   cannot happen, and a kill before re-reads the entries (the group's
//!   pending list is read first on start).
//! - Each endpoint's stream `<prefix>:webhooks:<endpoint>` is read through
//!   the group `deliver` into the endpoint's bounded in-memory window
//!   (pending entries first, so events read but not delivered before a
//!   restart come back); an entry is `XACK`ed and deleted after a 2xx, or
//!   moved to `<prefix>:webhooks:<endpoint>:dead` after the last try.
//!
//! Event ids are derived from the order stream (`msg_<hold>` for an
//! order), so a re-read makes the same `webhook-id` and receivers dedupe.

use super::event::{Event, EventType};
use super::queue::{DeadLetter, Queued};
use super::{Endpoint, Webhooks};
use crate::journal::conn::{Conn, Target};
use redis::AsyncCommands;
use redis::streams::{StreamId, StreamReadOptions, StreamReadReply};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

/// The order stream's consumer group of the webhooks.
pub const SOURCE_GROUP: &str = "webhooks";
/// Each endpoint stream's consumer group.
pub const DELIVER_GROUP: &str = "deliver";
/// The consumer name (one gateway per Redis: its pending entries are its
/// own after a restart).
const CONSUMER: &str = "holdfast";
/// Entries read per call.
const READ_COUNT_MAX: usize = 100;
/// Longest a blocking read waits (below the connection's timeout).
const BLOCK_MS_MAX: u64 = 1_000;
/// Pause after a Redis error before trying again.
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// Holds whose committed lines are being gathered (a cart's lines are
/// written in one batch; more than this means lost lines).
const GATHERING_MAX: usize = 4096;

/// Redis access of the webhooks.
#[derive(Debug)]
pub struct Streams {
    target: Target,
    timeout: Duration,
    prefix: String,
    orders: String,
    /// A shared connection for acks and dead letters (connected lazily).
    conn: Mutex<Option<Conn>>,
}

impl Streams {
    pub fn new(target: Target, timeout: Duration, prefix: &str, orders: &str) -> Self {
        Self {
            target,
            timeout,
            prefix: prefix.to_string(),
            orders: orders.to_string(),
            conn: Mutex::new(None),
        }
    }

    pub fn endpoint_key(&self, endpoint: &str) -> String {
        format!("{}:webhooks:{endpoint}", self.prefix)
    }

    pub fn dead_key(&self, endpoint: &str) -> String {
        format!("{}:webhooks:{endpoint}:dead", self.prefix)
    }

    fn block_ms(&self) -> usize {
        (self.timeout.as_millis() as u64 / 2).clamp(1, BLOCK_MS_MAX) as usize
    }

    async fn shared(&self) -> redis::RedisResult<Conn> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = &*slot {
            return Ok(c.clone());
        }
        let c = self.target.connect(self.timeout).await?;
        *slot = Some(c.clone());
        Ok(c)
    }

    async fn forget_conn(&self) {
        *self.conn.lock().await = None;
    }

    /// Runs a transaction on the shared connection (reconnects once).
    async fn exec(&self, pipe: &redis::Pipeline) -> redis::RedisResult<()> {
        let mut conn = self.shared().await?;
        match pipe.query_async::<()>(&mut conn).await {
            Ok(()) => Ok(()),
            Err(e) => {
                self.forget_conn().await;
                Err(e)
            }
        }
    }

    /// An entry delivered: acknowledged and deleted.
    pub async fn delivered(&self, endpoint: &str, entry: &str) {
        let key = self.endpoint_key(endpoint);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .xack(&key, DELIVER_GROUP, &[entry])
            .ignore()
            .xdel(&key, &[entry])
            .ignore();
        if let Err(e) = self.exec(&pipe).await {
            // Delivered again after a restart: at least once.
            tracing::warn!(endpoint, error = %e, "webhook ack not written");
        }
    }

    /// An entry that failed every try: moved to the dead-letter stream.
    pub async fn dead(&self, endpoint: &str, entry: &str, dead: &DeadLetter, keep: usize) {
        let key = self.endpoint_key(endpoint);
        let json = serde_json::to_string(dead).unwrap_or_default();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("XADD")
            .arg(self.dead_key(endpoint))
            .arg("MAXLEN")
            .arg("~")
            .arg(keep)
            .arg("*")
            .arg("dead")
            .arg(json)
            .ignore()
            .xack(&key, DELIVER_GROUP, &[entry])
            .ignore()
            .xdel(&key, &[entry])
            .ignore();
        if let Err(e) = self.exec(&pipe).await {
            tracing::warn!(endpoint, error = %e, "webhook dead letter not written");
        }
    }
}

async fn ensure_group(
    conn: &mut Conn,
    key: &str,
    group: &str,
    start: &str,
) -> redis::RedisResult<()> {
    let created: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(key)
        .arg(group)
        .arg(start)
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match created {
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        other => other,
    }
}

/// A consumer-group reader: the group's pending entries first (those read
/// but not acknowledged before a restart), then new ones, blocking.
struct Reader {
    key: String,
    group: &'static str,
    /// `"0"` and then the last pending id read; `">"` once they are done.
    cursor: String,
}

impl Reader {
    /// Connects and makes sure the group exists (created at `start`),
    /// retrying until `stop`.
    async fn connect(
        streams: &Streams,
        key: &str,
        group: &'static str,
        start: &str,
        stop: &CancellationToken,
    ) -> Option<(Self, Conn)> {
        while !stop.is_cancelled() {
            let made = async {
                let mut conn = streams.target.connect(streams.timeout).await?;
                ensure_group(&mut conn, key, group, start).await?;
                Ok::<_, redis::RedisError>(conn)
            };
            match made.await {
                Ok(conn) => {
                    let reader = Self {
                        key: key.to_string(),
                        group,
                        cursor: "0".into(),
                    };
                    return Some((reader, conn));
                }
                Err(e) => {
                    tracing::warn!(key, error = %e, "webhooks: Redis not ready");
                    pause(stop).await;
                }
            }
        }
        None
    }

    async fn next(
        &mut self,
        conn: &mut Conn,
        count: usize,
        block_ms: usize,
    ) -> redis::RedisResult<Vec<StreamId>> {
        let mut opts = StreamReadOptions::default()
            .group(self.group, CONSUMER)
            .count(count);
        if self.cursor == ">" {
            opts = opts.block(block_ms);
        }
        let reply: Option<StreamReadReply> = conn
            .xread_options(&[&self.key], &[&self.cursor], &opts)
            .await?;
        let entries: Vec<StreamId> = reply
            .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
            .unwrap_or_default();
        if self.cursor != ">" {
            self.cursor = entries.last().map_or_else(|| ">".into(), |e| e.id.clone());
        }
        Ok(entries)
    }
}

/// Moves the order stream into the endpoint streams until `shutdown`.
pub async fn run_source(hooks: Arc<Webhooks>, streams: Arc<Streams>, shutdown: CancellationToken) {
    let mut gathering: HashMap<String, Vec<StreamId>> = HashMap::new();
    // "$": a first start does not send the whole order history.
    while let Some((mut reader, mut conn)) =
        Reader::connect(&streams, &streams.orders, SOURCE_GROUP, "$", &shutdown).await
    {
        gathering.clear();
        'read: loop {
            let entries = tokio::select! {
                () = shutdown.cancelled() => return,
                r = reader.next(&mut conn, READ_COUNT_MAX, streams.block_ms()) => r,
            };
            let Ok(entries) = entries.inspect_err(|e| {
                tracing::warn!(error = %e, "webhooks: order stream read failed");
            }) else {
                pause(&shutdown).await;
                break;
            };
            for entry in entries {
                let Some((mut event, acked)) = to_event(&mut gathering, entry) else {
                    continue;
                };
                if let Some(ev) = &mut event
                    && ev.kind == EventType::OrderCommitted
                    && ev.data["channel"].is_null()
                    && let Some(hold) = ev.data["hold"].as_str().and_then(|h| h.parse().ok())
                {
                    ev.data["channel"] = hooks.channel_of(hold).into();
                }
                let mut pipe = redis::pipe();
                pipe.atomic();
                let targets = match &event {
                    Some(ev) => hooks
                        .endpoints()
                        .into_iter()
                        .filter(|e| e.wants(ev.kind))
                        .collect(),
                    None => Vec::new(),
                };
                for ep in targets {
                    let json = serde_json::to_string(&event).unwrap_or_default();
                    pipe.cmd("XADD")
                        .arg(streams.endpoint_key(&ep.id))
                        .arg("MAXLEN")
                        .arg("~")
                        .arg(hooks.args.stream_max)
                        .arg("*")
                        .arg("event")
                        .arg(json)
                        .ignore();
                }
                let ids: Vec<&str> = acked.iter().map(String::as_str).collect();
                pipe.xack(&streams.orders, SOURCE_GROUP, &ids).ignore();
                if let Err(e) = pipe.query_async::<()>(&mut conn).await {
                    tracing::warn!(error = %e, "webhooks: queueing failed; re-read on reconnect");
                    pause(&shutdown).await;
                    break 'read;
                }
            }
            if gathering.len() > GATHERING_MAX {
                tracing::warn!("webhooks: too many partial holds; dropping them");
                gathering.clear();
            }
        }
    }
}

async fn pause(shutdown: &CancellationToken) {
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = tokio::time::sleep(RETRY_PAUSE) => {}
    }
}

/// An order-stream entry's event once complete (`None`: an entry with
/// nothing to send), with the entries it consumed; `None` while a cart's
/// lines are still being gathered.
fn to_event(
    gathering: &mut HashMap<String, Vec<StreamId>>,
    entry: StreamId,
) -> Option<(Option<Event>, Vec<String>)> {
    let field = |e: &StreamId, k: &str| e.get::<String>(k).unwrap_or_default();
    let at_ms: u64 = field(&entry, "at_ms").parse().unwrap_or(0);
    match field(&entry, "event").as_str() {
        kind @ ("sold_out" | "back_in_stock") => {
            let kind = if kind == "sold_out" {
                EventType::SkuSoldOut
            } else {
                EventType::SkuBackInStock
            };
            let event = Event {
                id: format!(
                    "msg_{}_{}",
                    kind.as_str().replace('.', "_"),
                    entry.id.replace('-', "_")
                ),
                kind,
                ts_ms: at_ms,
                data: serde_json::json!({"sku": field(&entry, "sku")}),
            };
            Some((Some(event), vec![entry.id]))
        }
        ending @ ("committed" | "released" | "expired") => {
            // A hold's lines arrive one entry each (a cart's in one batch):
            // the event goes once all of them are here.
            let hold = field(&entry, "hold");
            let lines: usize = field(&entry, "lines").parse().unwrap_or(1);
            let key = format!("{ending}:{hold}");
            let seen = gathering.entry(key.clone()).or_default();
            seen.push(entry);
            if seen.len() < lines {
                return None;
            }
            let mut seen = gathering.remove(&key).unwrap_or_default();
            seen.sort_by_key(|e| field(e, "line").parse::<u32>().unwrap_or(0));
            let committed = ending == "committed";
            let (kind, id) = match ending {
                "committed" => (EventType::OrderCommitted, format!("msg_order_{hold}")),
                "released" => (EventType::HoldReleased, format!("msg_hold_released_{hold}")),
                _ => (EventType::HoldExpired, format!("msg_hold_expired_{hold}")),
            };
            // The sales channel the order stream names (a SKU with channels);
            // an order's is else filled in from memory (a buyer token's claim).
            let channel = field(&seen[0], "channel");
            let data = serde_json::json!({
                "hold": hold,
                "buyer": field(&seen[0], "buyer"),
                "channel": (!channel.is_empty()).then_some(channel),
                "lines": seen.iter().map(|e| {
                    let mut line = serde_json::json!({
                        "sku": field(e, "sku"),
                        "qty": field(e, "qty").parse::<u64>().unwrap_or(0),
                    });
                    if committed {
                        line["returned"] = field(e, "returned").parse::<u64>().unwrap_or(0).into();
                    }
                    line
                }).collect::<Vec<_>>(),
                "at_ms": at_ms,
            });
            let event = Event {
                id,
                kind,
                ts_ms: at_ms,
                data,
            };
            Some((Some(event), seen.into_iter().map(|e| e.id).collect()))
        }
        // Another kind of entry: acknowledged, nothing to send.
        _ => Some((None, vec![entry.id])),
    }
}

/// Feeds one endpoint's in-memory window from its stream until `stop`.
pub async fn run_feeder(
    ep: Arc<Endpoint>,
    streams: Arc<Streams>,
    queue_max: usize,
    stop: CancellationToken,
) {
    let key = streams.endpoint_key(&ep.id);
    while let Some((mut reader, mut conn)) =
        Reader::connect(&streams, &key, DELIVER_GROUP, "0", &stop).await
    {
        loop {
            // Read only what the window has room for: nothing read is
            // ever dropped.
            let room = loop {
                let c = ep.queue.counts();
                let used = c.queued + c.retrying + c.in_flight;
                if used < queue_max {
                    break (queue_max - used).min(READ_COUNT_MAX);
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = ep.queue.notify.notified() => {}
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            };
            let entries = tokio::select! {
                () = stop.cancelled() => return,
                r = reader.next(&mut conn, room, streams.block_ms()) => r,
            };
            let Ok(entries) = entries.inspect_err(|e| {
                tracing::warn!(endpoint = %ep.id, error = %e, "webhooks: stream read failed");
            }) else {
                pause(&stop).await;
                break;
            };
            for entry in entries {
                let json = entry.get::<String>("event").unwrap_or_default();
                match serde_json::from_str::<Event>(&json) {
                    Ok(event) => {
                        ep.queue.push_entry(Queued {
                            event: Arc::new(event),
                            tries: 0,
                            entry: Some(entry.id),
                        });
                    }
                    Err(e) => {
                        tracing::warn!(endpoint = %ep.id, error = %e, "webhooks: unreadable entry skipped");
                        streams.delivered(&ep.id, &entry.id).await;
                    }
                }
            }
        }
    }
}

/// `SCAN` pattern of every webhook stream (endpoint and dead-letter) of the
/// journal whose keys start with `prefix`.
pub fn streams_pattern(prefix: &str) -> String {
    format!("{prefix}:webhooks:*")
}

/// Erasure (docs/PRIVACY.md): every entry of the webhook stream `key` (an
/// endpoint's stream, or its dead-letter stream: a key ending in `:dead`)
/// whose event names one of buyer `names` is replaced by a copy whose
/// `buyer` is `null` (a stream entry cannot be rewritten in place: the
/// copy is `XADD`ed and the original `XDEL`ed in one `MULTI`). The copy
/// keeps the event's id, so a receiver that already got the original
/// dedupes a second delivery. Reads in pages
/// ([`crate::journal::pages::StreamPages`]); the streams are bounded
/// (`--webhook-stream-max`, `--webhook-dead-letters-max`). Returns the
/// entries replaced.
pub async fn erase_buyer_in(conn: &mut Conn, key: &str, names: &[&str]) -> redis::RedisResult<u64> {
    // A dead letter keeps the whole event under `event`.
    let (field, path) = match key.ends_with(":dead") {
        false => ("event", &["data"][..]),
        true => ("dead", &["event", "data"][..]),
    };
    let mut replaced = 0;
    let mut pages = crate::journal::pages::StreamPages::new(key);
    while let Some(page) = pages.next(conn).await? {
        let mut pipe = redis::pipe();
        pipe.atomic();
        let mut found = 0;
        for entry in &page {
            let Some(mut value) = entry
                .get::<String>(field)
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            else {
                continue;
            };
            let data = path.iter().try_fold(&mut value, |v, p| v.get_mut(*p));
            let Some(data) =
                data.filter(|d| d["buyer"].as_str().is_some_and(|b| names.contains(&b)))
            else {
                continue;
            };
            data["buyer"] = serde_json::Value::Null;
            pipe.cmd("XADD")
                .arg(key)
                .arg("*")
                .arg(field)
                .arg(value.to_string())
                .ignore()
                .xdel(key, &[&entry.id])
                .ignore();
            found += 1;
        }
        if found > 0 {
            pipe.query_async::<()>(conn).await?;
            replaced += found;
        }
    }
    Ok(replaced)
}
