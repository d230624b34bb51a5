//! The fan-out hub: topics, their latest frames, and the broadcaster that
//! turns engine changes into coalesced, encode-once frames.
//!
//! Every broadcast interval the broadcaster asks the engine which SKUs
//! changed (and the catalog whose display data changed), builds one delta
//! `update` per affected topic (plus `stock_event` frames for sell-outs),
//! encodes each frame once as JSON and once as
//! postcard, stores them as the topic's latest [`TopicFrames`] and wakes the
//! topic's subscribers. Each subscriber's task then sends what it has not
//! seen: the deltas if it is exactly one round behind, otherwise one `update`
//! with the topic's full state (built lazily, once, and shared). So a slow
//! viewer skips straight to the newest values and never makes the server
//! queue anything for it: memory does not grow with lag.
//!
//! Stock events follow one rule with the engine and the pages: a SKU is
//! sold out when nothing is available and nothing is held; units in carts
//! are not sold out (they may come back), and `back_in_stock` is only the
//! way out of sold out to `available > 0`.
//!
//! Topics with admin subscribers also get a `stats` frame (the server-side
//! show statistics of [`crate::stats`]), rebuilt after their SKUs change
//! but at most every [`STATS_INTERVAL_MIN_MS`], and at least every
//! [`STATS_REFRESH_MS`] while admins watch (rates and "expiring soon" move
//! with time). Only admins are woken for it, and it is latest-value too.
//!
//! The hub never blocks an engine thread and never holds a lock across an
//! await.

use crate::catalog::Meta;
use crate::error::ApiError;
use crate::ops::sku_state;
use crate::protocol::{ServerMsg, SkuState, Snapshot, StockEvent, StockEventKind, Update};
use crate::stats::Stats;
use arc_swap::{ArcSwap, ArcSwapOption};
use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use holdfast_engine::{Engine, SkuIdx};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::Notify;

/// Most SKUs taken from the engine's change list per broadcast round; the
/// rest wait for the next round (bounds one round's work).
pub const CHANGES_PER_ROUND_MAX: usize = 65_536;

/// A topic's stats frame is rebuilt at most this often: a busy show
/// changes every round, and a host reads KPIs, not a ticker.
pub const STATS_INTERVAL_MIN_MS: u64 = 250;
/// ...and at least this often while an admin watches, since rates and
/// "expiring within a minute" change with time alone.
pub const STATS_REFRESH_MS: u64 = 1_000;

/// One server message, encoded once for each wire format and shared by
/// every subscriber (cloning is a reference-count increment).
#[derive(Debug, Clone)]
pub struct Frame {
    pub json: Utf8Bytes,
    pub bin: Bytes,
}

impl Frame {
    pub fn encode(msg: &ServerMsg) -> Self {
        Self {
            json: Utf8Bytes::from(msg.to_json()),
            bin: Bytes::from(msg.to_postcard()),
        }
    }

    /// Encoded size for the given format.
    pub fn len(&self, binary: bool) -> usize {
        if binary {
            self.bin.len()
        } else {
            self.json.len()
        }
    }
}

/// What a subscription is to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TopicKey {
    Sku(SkuIdx),
    Show(String),
    All,
}

/// A topic's frames as of its latest round.
#[derive(Debug)]
pub struct TopicFrames {
    /// Sequence number of the newest frame.
    pub seq: u64,
    /// Sequence number of `frames[0]`; frames are consecutive.
    pub first_seq: u64,
    /// The latest round's frames (stock events, then the delta update).
    pub frames: Vec<Frame>,
    /// The topic's full state at `seq`.
    states: Arc<Vec<SkuState>>,
    ts_ms: u64,
    topic: Arc<str>,
    full: OnceLock<Frame>,
    snapshot: OnceLock<Frame>,
}

impl TopicFrames {
    /// An `update` carrying every SKU of the topic at `seq` (for a
    /// subscriber that fell more than one round behind).
    pub fn full(&self) -> &Frame {
        self.full.get_or_init(|| {
            Frame::encode(&ServerMsg::Update(Update {
                topic: self.topic.to_string(),
                seq: self.seq,
                ts_ms: self.ts_ms,
                skus: self.states.as_ref().clone(),
            }))
        })
    }

    /// The `snapshot` a new subscriber gets first.
    pub fn snapshot(&self) -> &Frame {
        self.snapshot.get_or_init(|| {
            Frame::encode(&ServerMsg::Snapshot(Snapshot {
                topic: self.topic.to_string(),
                seq: self.seq,
                ts_ms: self.ts_ms,
                skus: self.states.as_ref().clone(),
            }))
        })
    }
}

/// Wakes one connection's task.
#[derive(Debug, Default)]
pub struct Signal {
    pub notify: Notify,
}

/// The journal wakes a session through the same signal when a batch with
/// its requests lands.
impl crate::journal::Wake for Signal {
    fn wake(&self) {
        self.notify.notify_one();
    }
}

/// A topic's latest stats frame.
#[derive(Debug)]
pub struct StatsFrame {
    pub seq: u64,
    pub frame: Frame,
}

/// Broadcaster-side stats state of a topic.
#[derive(Debug, Default)]
struct StatsState {
    seq: u64,
    built_ms: u64,
    /// A SKU of the topic changed since the last build.
    dirty: bool,
}

/// Broadcaster-side state of a topic.
#[derive(Debug, Default)]
struct Owned {
    index: HashMap<SkuIdx, usize>,
    skus: Vec<SkuIdx>,
    states: Vec<SkuState>,
    /// No subscribers at the last round: states were not kept up to date.
    stale: bool,
}

#[derive(Debug)]
pub struct Topic {
    pub name: Arc<str>,
    key: TopicKey,
    frames: ArcSwap<TopicFrames>,
    subscribers: Mutex<HashMap<u64, Arc<Signal>>>,
    owned: Mutex<Owned>,
    has_subscribers: AtomicBool,
    /// Admin subscribers, woken for stats frames.
    admins: Mutex<HashMap<u64, Arc<Signal>>>,
    stats: ArcSwapOption<StatsFrame>,
    stats_state: Mutex<StatsState>,
}

impl Topic {
    /// The latest frames.
    pub fn frames(&self) -> Arc<TopicFrames> {
        self.frames.load_full()
    }

    /// The latest frames without touching the shared reference count
    /// (thousands of sessions read this every round; `load_full` would
    /// make them all increment one atomic).
    pub fn frames_guard(&self) -> arc_swap::Guard<Arc<TopicFrames>> {
        self.frames.load()
    }

    pub fn subscriber_count(&self) -> usize {
        self.subscribers.lock().expect("subscribers lock").len()
    }

    /// The latest stats frame, if an admin ever watched this topic.
    pub fn stats_frame(&self) -> Option<Arc<StatsFrame>> {
        self.stats.load_full()
    }
}

/// All topics, and what the broadcaster remembers between rounds.
#[derive(Debug)]
pub struct Hub {
    engine: Arc<Engine>,
    meta: Arc<Meta>,
    stats: Arc<Stats>,
    topics: Mutex<HashMap<TopicKey, Arc<Topic>>>,
    next_conn: AtomicU64,
    /// Last published state per SKU (broadcaster only).
    published: Mutex<HashMap<SkuIdx, SkuState>>,
    changed: Mutex<Vec<SkuIdx>>,
    /// Multi-node mode: counts are the deployment's, and other nodes'
    /// changes arrive from the cluster.
    cluster: std::sync::OnceLock<Arc<crate::cluster::Cluster>>,
    stats_changed: Mutex<Vec<SkuIdx>>,
    /// Admin subscriptions over all topics: none (the usual case on a
    /// viewer-facing node) and a round does no stats work at all.
    stats_watchers: AtomicU64,
    /// Called once per round with the changed SKUs (the webhooks' low
    /// stock and stock changes).
    observer: std::sync::OnceLock<RoundObserver>,
}

/// What a round observer is: told the SKUs whose counts changed.
pub type RoundFn = dyn Fn(&[SkuIdx]) + Send + Sync;

/// A function told the SKUs whose counts changed in a broadcast round.
pub struct RoundObserver(pub Box<RoundFn>);

impl std::fmt::Debug for RoundObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RoundObserver")
    }
}

impl Hub {
    pub fn new(engine: Arc<Engine>, meta: Arc<Meta>, stats: Arc<Stats>) -> Self {
        Self {
            engine,
            meta,
            stats,
            topics: Mutex::default(),
            next_conn: AtomicU64::new(1),
            published: Mutex::default(),
            changed: Mutex::default(),
            cluster: std::sync::OnceLock::new(),
            stats_changed: Mutex::default(),
            stats_watchers: AtomicU64::new(0),
            observer: std::sync::OnceLock::new(),
        }
    }

    /// Multi-node mode: show the deployment's counts.
    pub fn set_cluster(&self, cluster: Arc<crate::cluster::Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    /// A SKU's counts as viewers see them (the deployment's, with a cluster).
    fn snapshot(&self, sku: SkuIdx) -> Option<holdfast_engine::SkuSnapshot> {
        let mut snap = self.engine.snapshot(sku)?;
        if let Some(c) = self.cluster.get() {
            c.counts.globalize(&mut snap);
        }
        Some(snap)
    }

    /// A fresh connection id.
    pub fn conn_id(&self) -> u64 {
        // Relaxed: only uniqueness matters.
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Parses a topic name: `sku:<id>`, `show:<id>` or `all`.
    pub fn parse(&self, name: &str) -> Result<TopicKey, ApiError> {
        let unknown = || {
            ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                crate::protocol::Code::UnknownTopic,
                "topics are sku:<id>, show:<id> or all, naming something that exists",
            )
        };
        if name == "all" {
            return Ok(TopicKey::All);
        }
        if let Some(id) = name.strip_prefix("sku:") {
            return self.engine.sku(id).map(TopicKey::Sku).ok_or_else(unknown);
        }
        if let Some(id) = name.strip_prefix("show:")
            && self.meta.show(id).is_some()
        {
            return Ok(TopicKey::Show(id.to_string()));
        }
        Err(unknown())
    }

    fn topic_name(&self, key: &TopicKey) -> String {
        match key {
            TopicKey::Sku(sku) => {
                format!("sku:{}", self.engine.sku_id(*sku).as_deref().unwrap_or(""))
            }
            TopicKey::Show(id) => format!("show:{id}"),
            TopicKey::All => "all".into(),
        }
    }

    fn members(&self, key: &TopicKey) -> Vec<SkuIdx> {
        match key {
            TopicKey::Sku(sku) => vec![*sku],
            TopicKey::Show(id) => self.meta.show(id).unwrap_or_default(),
            TopicKey::All => self.engine.snapshots().iter().map(|s| s.sku).collect(),
        }
    }

    /// (Re)builds a topic's state from the engine and publishes it as a new
    /// round, so seq keeps increasing.
    fn rebuild(&self, topic: &Topic, owned: &mut Owned, seq: u64) {
        owned.skus = self.members(&topic.key);
        owned.index = owned
            .skus
            .iter()
            .enumerate()
            .map(|(i, s)| (*s, i))
            .collect();
        owned.states = owned
            .skus
            .iter()
            .filter_map(|&s| {
                let snap = self.snapshot(s)?;
                Some(sku_state(&snap, self.meta.get(s).as_deref()))
            })
            .collect();
        owned.stale = false;
        let frames = TopicFrames {
            seq,
            first_seq: seq + 1,
            frames: Vec::new(),
            states: Arc::new(owned.states.clone()),
            ts_ms: self.engine.now_ms(),
            topic: topic.name.clone(),
            full: OnceLock::new(),
            snapshot: OnceLock::new(),
        };
        topic.frames.store(Arc::new(frames));
    }

    /// Subscribes a connection; returns the topic, whose current frames
    /// give the snapshot to send first.
    pub fn subscribe(&self, key: TopicKey, conn: u64, signal: &Arc<Signal>) -> Arc<Topic> {
        let topic = {
            let mut topics = self.topics.lock().expect("topics lock");
            topics
                .entry(key.clone())
                .or_insert_with(|| {
                    let name: Arc<str> = Arc::from(self.topic_name(&key));
                    let empty = TopicFrames {
                        seq: 0,
                        first_seq: 1,
                        frames: Vec::new(),
                        states: Arc::default(),
                        ts_ms: 0,
                        topic: name.clone(),
                        full: OnceLock::new(),
                        snapshot: OnceLock::new(),
                    };
                    Arc::new(Topic {
                        name,
                        key,
                        frames: ArcSwap::from_pointee(empty),
                        subscribers: Mutex::default(),
                        owned: Mutex::new(Owned {
                            stale: true,
                            ..Owned::default()
                        }),
                        has_subscribers: AtomicBool::new(false),
                        admins: Mutex::default(),
                        stats: ArcSwapOption::empty(),
                        stats_state: Mutex::default(),
                    })
                })
                .clone()
        };
        {
            let mut owned = topic.owned.lock().expect("owned lock");
            if owned.stale {
                let seq = topic.frames.load().seq + 1;
                self.rebuild(&topic, &mut owned, seq);
            }
            topic
                .subscribers
                .lock()
                .expect("subscribers lock")
                .insert(conn, signal.clone());
            // Relaxed: a hint for the broadcaster; `owned` orders the rest.
            topic.has_subscribers.store(true, Ordering::Relaxed);
        }
        topic
    }

    pub fn unsubscribe(&self, topic: &Topic, conn: u64) {
        if topic
            .admins
            .lock()
            .expect("admins lock")
            .remove(&conn)
            .is_some()
        {
            // Relaxed: a hint to skip idle rounds; the admins map decides.
            self.stats_watchers.fetch_sub(1, Ordering::Relaxed);
        }
        let mut subs = topic.subscribers.lock().expect("subscribers lock");
        subs.remove(&conn);
        if subs.is_empty() {
            topic.has_subscribers.store(false, Ordering::Relaxed);
        }
    }

    /// An admin subscriber of `topic` gets its stats frames from now on;
    /// returns the current one (built now if nobody watched before).
    pub fn watch_stats(&self, topic: &Topic, conn: u64, signal: &Arc<Signal>) -> Arc<StatsFrame> {
        let watched = {
            let mut admins = topic.admins.lock().expect("admins lock");
            let watched = !admins.is_empty();
            if admins.insert(conn, signal.clone()).is_none() {
                // Relaxed: see `unsubscribe`.
                self.stats_watchers.fetch_add(1, Ordering::Relaxed);
            }
            watched
        };
        // Nobody kept the frame current while no admin watched: build it.
        let mut state = topic.stats_state.lock().expect("stats lock");
        match topic.stats.load_full() {
            Some(frame) if watched && !state.dirty => frame,
            _ => self.build_stats(topic, &mut state, self.engine.now_ms()),
        }
    }

    /// Builds and publishes a topic's stats frame.
    fn build_stats(&self, topic: &Topic, state: &mut StatsState, now: u64) -> Arc<StatsFrame> {
        // `now` stamps the build for the throttle; the frame reads the
        // clock itself.
        let skus = self.members(&topic.key);
        state.seq += 1;
        state.built_ms = now;
        state.dirty = false;
        let msg = self
            .stats
            .of_skus(&self.engine, &topic.name, state.seq, &skus);
        let frame = Arc::new(StatsFrame {
            seq: state.seq,
            frame: Frame::encode(&ServerMsg::Stats(Box::new(msg))),
        });
        topic.stats.store(Some(frame.clone()));
        frame
    }

    /// Whether `sku` belongs to the topic.
    fn relevant(&self, key: &TopicKey, sku: SkuIdx) -> bool {
        match key {
            TopicKey::Sku(s) => *s == sku,
            TopicKey::All => true,
            TopicKey::Show(show) => self
                .meta
                .get(sku)
                .is_some_and(|m| m.show.as_deref() == Some(show.as_str())),
        }
    }

    /// Sets the round observer (once).
    pub fn set_observer(&self, observer: RoundObserver) {
        let _ = self.observer.set(observer);
    }

    /// One broadcast round. Returns the number of subscriber wake-ups.
    pub fn broadcast(&self) -> usize {
        let mut changed = self.changed.lock().expect("changed lock");
        changed.clear();
        self.engine
            .take_changed(&mut changed, CHANGES_PER_ROUND_MAX);
        if let Some(c) = self.cluster.get() {
            for sku in c.counts.take_changed() {
                if !changed.contains(&sku) {
                    changed.push(sku);
                }
            }
        }
        self.meta.take_changed(&mut changed);
        changed.sort_unstable();
        changed.dedup();
        let mut woken = self.publish_updates(&changed);
        if let Some(observer) = self.observer.get() {
            (observer.0)(&changed);
        }
        let mut stats_changed = self.stats_changed.lock().expect("stats changed lock");
        stats_changed.clear();
        self.stats.take_hub_changed(&mut stats_changed);
        woken += self.publish_stats(&changed, &stats_changed);
        woken
    }

    /// Rebuilds the stats frames that are due and wakes their admins.
    fn publish_stats(&self, changed: &[SkuIdx], stats_changed: &[SkuIdx]) -> usize {
        // Relaxed: a watcher added meanwhile got a fresh frame when it
        // subscribed, and the next round sees it.
        if self.stats_watchers.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        let topics: Vec<Arc<Topic>> = self
            .topics
            .lock()
            .expect("topics lock")
            .values()
            .filter(|t| !t.admins.lock().expect("admins lock").is_empty())
            .cloned()
            .collect();
        let now = self.engine.now_ms();
        let mut woken = 0;
        for topic in topics {
            let mut state = topic.stats_state.lock().expect("stats lock");
            if !state.dirty {
                state.dirty = changed
                    .iter()
                    .chain(stats_changed)
                    .any(|&s| self.relevant(&topic.key, s));
            }
            let since = now.saturating_sub(state.built_ms);
            let due = (state.dirty && since >= STATS_INTERVAL_MIN_MS) || since >= STATS_REFRESH_MS;
            if !due {
                continue;
            }
            self.build_stats(&topic, &mut state, now);
            drop(state);
            for signal in topic.admins.lock().expect("admins lock").values() {
                signal.notify.notify_one();
                woken += 1;
            }
        }
        woken
    }

    /// Builds and publishes the update frames of the SKUs that changed.
    fn publish_updates(&self, changed: &[SkuIdx]) -> usize {
        if changed.is_empty() {
            return 0;
        }
        // New state per changed SKU, and the stock events it implies.
        let mut published = self.published.lock().expect("published lock");
        let mut fresh: Vec<(SkuIdx, SkuState, Option<StockEventKind>, bool)> =
            Vec::with_capacity(changed.len());
        for &sku in changed.iter() {
            let Some(snap) = self.snapshot(sku) else {
                continue;
            };
            let meta = self.meta.get(sku);
            let state = sku_state(&snap, meta.as_deref());
            let previous = published.get(&sku);
            if previous == Some(&state) {
                continue;
            }
            let event = match previous {
                Some(p) if !p.sold_out && state.sold_out => Some(StockEventKind::SoldOut),
                // Out of sold out only to something buyable: a restock
                // taken straight into carts is not back yet.
                Some(p) if p.sold_out && state.available > 0 => Some(StockEventKind::BackInStock),
                _ => None,
            };
            if event == Some(StockEventKind::SoldOut) {
                self.stats.sold_out(sku, self.engine.now_ms());
            }
            let meta_changed = previous.is_none_or(|p| p.meta != state.meta);
            published.insert(sku, state.clone());
            fresh.push((sku, state, event, meta_changed));
        }
        drop(published);
        if fresh.is_empty() {
            return 0;
        }
        let topics: Vec<Arc<Topic>> = self
            .topics
            .lock()
            .expect("topics lock")
            .values()
            .cloned()
            .collect();
        let now = self.engine.now_ms();
        let mut woken = 0;
        for topic in topics {
            let mine: Vec<&(SkuIdx, SkuState, Option<StockEventKind>, bool)> = fresh
                .iter()
                .filter(|f| self.relevant(&topic.key, f.0))
                .collect();
            if mine.is_empty() {
                continue;
            }
            let mut guard = topic.owned.lock().expect("owned lock");
            let owned = &mut *guard;
            // Relaxed: see `subscribe`; a late subscriber rebuilds anyway.
            if !topic.has_subscribers.load(Ordering::Relaxed) {
                owned.stale = true;
                continue;
            }
            if owned.stale {
                continue; // rebuilt on the next subscribe
            }
            let mut seq = topic.frames.load().seq;
            let first_seq = seq + 1;
            let mut frames = Vec::with_capacity(mine.len() + 1);
            let mut delta = Vec::with_capacity(mine.len());
            for (sku, state, event, meta_changed) in mine {
                match owned.index.get(sku) {
                    Some(&i) => owned.states[i] = state.clone(),
                    None => {
                        // A SKU new to this topic (created into a show).
                        owned.index.insert(*sku, owned.states.len());
                        owned.skus.push(*sku);
                        owned.states.push(state.clone());
                    }
                }
                if let Some(event) = event {
                    seq += 1;
                    frames.push(Frame::encode(&ServerMsg::StockEvent(StockEvent {
                        topic: topic.name.to_string(),
                        seq,
                        ts_ms: now,
                        sku: state.id.clone(),
                        event: *event,
                    })));
                }
                let mut s = state.clone();
                if !meta_changed {
                    s.meta = None;
                }
                delta.push(s);
            }
            seq += 1;
            frames.push(Frame::encode(&ServerMsg::Update(Update {
                topic: topic.name.to_string(),
                seq,
                ts_ms: now,
                skus: delta,
            })));
            topic.frames.store(Arc::new(TopicFrames {
                seq,
                first_seq,
                frames,
                states: Arc::new(owned.states.clone()),
                ts_ms: now,
                topic: topic.name.clone(),
                full: OnceLock::new(),
                snapshot: OnceLock::new(),
            }));
            drop(guard);
            for signal in topic.subscribers.lock().expect("subscribers lock").values() {
                signal.notify.notify_one();
                woken += 1;
            }
        }
        woken
    }

    /// Topics and their subscriber counts (for /readyz and tests).
    pub fn stats(&self) -> Vec<(Arc<str>, usize)> {
        self.topics
            .lock()
            .expect("topics lock")
            .values()
            .map(|t| (t.name.clone(), t.subscriber_count()))
            .collect()
    }
}
