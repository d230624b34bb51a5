//! The journal's mirror: exactly what Redis holds (or is about to hold) at
//! the journal's sequence number, kept in memory.
//!
//! Events are applied to the mirror in sequence order, and each batch writes
//! the *absolute* values of what it touched (counts, hold records, buyer
//! units), coalesced: a hold reserved and committed within one batch never
//! touches the holds hash at all. Absolute writes make a batch idempotent,
//! and the mirror makes recovering from a Redis that came back empty exact:
//! write the mirror out, and the stream of batches continues from there.

use super::keys::{
    ChannelRecord, Ended, EndedRecord, HOLD_RECORD_BYTES_MAX, HoldField, HoldRecord, Keys,
    RequestRecord, buyer_field, ended_bucket, ended_bucket_ttl_ms, hold_field, request_bucket,
    request_bucket_ttl_ms, request_field, sales_field,
};
use crate::catalog::Meta;
use crate::ids::Ids;
use holdfast_engine::{
    BuyerId, ChannelIdx, Counts, Engine, Event, EventKind, HoldId, SaleWindow, SavedChannel,
    SavedState, SkuIdx, SkuSettings, Source, hex16,
};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

/// A multiply-rotate hasher for the mirror's maps, whose keys are ids the
/// gateway made (hold ids) or already hashed with a secret key (buyer and
/// request ids): nobody outside can pick keys that collide, so SipHash's
/// flood resistance buys nothing here, and it was a visible share of the
/// journal thread's time (several lookups per event).
#[derive(Default, Clone, Copy)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.write_u64(u64::from(i));
    }

    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        // FxHash's step (rustc's hasher): rotate, mix in, multiply.
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
}

type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;
type IdSet<K> = HashSet<K, BuildHasherDefault<IdHasher>>;

/// Redis commands per non-atomic pipeline chunk in a full re-write.
const RESYNC_CHUNK: usize = 200;
/// Fields per `HSET` / `HDEL`: a batch writes all its changes to one hash
/// with one command, cut at this size.
const FIELDS_MAX: usize = 1_000;

/// One hash key's field changes as `HSET key f v …` and `HDEL key f …`
/// (instead of a command per field: Redis's cost is mostly per command).
struct HashWrites {
    key: Arc<str>,
    set: redis::Cmd,
    sets: usize,
    del: redis::Cmd,
    dels: usize,
    done: Vec<redis::Cmd>,
}

impl HashWrites {
    fn new(key: Arc<str>) -> Self {
        Self {
            set: Self::start("HSET", &key),
            del: Self::start("HDEL", &key),
            key,
            sets: 0,
            dels: 0,
            done: Vec::new(),
        }
    }

    fn start(name: &str, key: &str) -> redis::Cmd {
        let mut cmd = redis::cmd(name);
        cmd.arg(key);
        cmd
    }

    fn set(&mut self, field: impl redis::ToRedisArgs, value: impl redis::ToRedisArgs) {
        if self.sets == FIELDS_MAX {
            let full = std::mem::replace(&mut self.set, Self::start("HSET", &self.key));
            self.done.push(full);
            self.sets = 0;
        }
        self.set.arg(field).arg(value);
        self.sets += 1;
    }

    fn del(&mut self, field: impl redis::ToRedisArgs) {
        if self.dels == FIELDS_MAX {
            let full = std::mem::replace(&mut self.del, Self::start("HDEL", &self.key));
            self.done.push(full);
            self.dels = 0;
        }
        self.del.arg(field);
        self.dels += 1;
    }

    fn finish(mut self) -> Vec<redis::Cmd> {
        if self.sets > 0 {
            self.done.push(self.set);
        }
        if self.dels > 0 {
            self.done.push(self.del);
        }
        self.done
    }
}

/// Adds commands to a pipeline whose replies the caller does not read.
fn add_all(pipe: &mut redis::Pipeline, cmds: impl IntoIterator<Item = redis::Cmd>) {
    for cmd in cmds {
        pipe.add_command(cmd).ignore();
    }
}

#[derive(Debug, Clone)]
pub struct MirrorSku {
    pub id: Arc<str>,
    pub idx: SkuIdx,
    pub counts: Counts,
    pub settings: SkuSettings,
    pub window: SaleWindow,
    /// Its sales channels (`counts` includes their quotas).
    pub channels: Vec<ChannelRecord>,
    /// This SKU's Redis keys, built once (batches name them constantly).
    key_sku: Arc<str>,
    key_holds: Arc<str>,
    key_buyers: Arc<str>,
}

impl MirrorSku {
    fn new(
        keys: &Keys,
        id: Arc<str>,
        idx: SkuIdx,
        counts: Counts,
        settings: SkuSettings,
        window: SaleWindow,
    ) -> Self {
        Self {
            key_sku: Arc::from(keys.sku(&id)),
            key_holds: Arc::from(keys.holds(&id)),
            key_buyers: Arc::from(keys.buyers(&id)),
            id,
            idx,
            counts,
            settings,
            window,
            channels: Vec::new(),
        }
    }

    fn channel_mut(&mut self, channel: ChannelIdx) -> Result<&mut ChannelRecord, String> {
        let id = &self.id;
        self.channels
            .get_mut(usize::from(channel.get()))
            .ok_or_else(|| format!("sku {id}: event for a channel the journal never saw"))
    }

    /// A hold line's units taken (`sign` 1) or ended (`sold` of them sold)
    /// on its channel, if it has one.
    fn channel_line(&mut self, source: Source, qty: u32, ended: Option<u32>) -> Result<(), String> {
        let Some(channel) = source.channel else {
            return Ok(());
        };
        let c = self.channel_mut(channel)?;
        let q = source.quota;
        let broken = || "channel counts below zero".to_string();
        match ended {
            None => {
                c.held += qty;
                c.quota_available = c.quota_available.checked_sub(q).ok_or_else(broken)?;
                c.quota_held += q;
            }
            Some(sold) => {
                let sold_quota = sold.min(q);
                c.held = c.held.checked_sub(qty).ok_or_else(broken)?;
                c.sold += sold;
                c.quota_held = c.quota_held.checked_sub(q).ok_or_else(broken)?;
                c.quota_sold += sold_quota;
                c.quota_available += q - sold_quota;
            }
        }
        Ok(())
    }
}

/// A hold line's place in Redis: the SKU's holds hash, field `<hold>:<line>`
/// (formatted only when written).
type HoldKey = (SkuIdx, HoldId, u8);

/// What a batch writes for one hold line.
#[derive(Debug, Clone, Copy)]
struct HoldWrite {
    /// The record to store, or `None` to delete the field.
    record: Option<HoldRecord>,
    /// Created in this batch: deleting it again needs no write at all.
    fresh: bool,
}

/// One order-stream entry, kept typed until it is written (no string
/// building per event).
#[derive(Debug)]
enum Order {
    /// A hold line that ended: `committed` (sold `qty`, `returned` went
    /// back on sale), or `released` / `expired` (only while webhooks want
    /// them; `returned` is `None`).
    Line {
        event: &'static str,
        seq: u64,
        at_ms: u64,
        hold: HoldId,
        line: u8,
        lines: u8,
        sku: Arc<str>,
        qty: u32,
        returned: Option<u32>,
        buyer: BuyerId,
        /// The sales channel it was reserved on (attribution), if any.
        channel: Option<Arc<str>>,
    },
    Stock {
        event: &'static str,
        seq: u64,
        at_ms: u64,
        sku: Arc<str>,
    },
}

/// What one batch changed, coalesced, in the order Redis must see it.
#[derive(Debug, Default)]
pub struct Writes {
    /// Last event sequence number in the batch.
    pub seq: u64,
    pub events: usize,
    skus: BTreeSet<SkuIdx>,
    created: BTreeSet<SkuIdx>,
    meta: BTreeSet<SkuIdx>,
    /// SKUs whose show statistics changed (written once per batch).
    stats: BTreeSet<SkuIdx>,
    /// Hold lines to write or delete (grouped by SKU when the batch is
    /// sealed: one `HSET` and one `HDEL` per SKU's holds hash).
    holds: IdMap<HoldKey, HoldWrite>,
    buyers: IdSet<(SkuIdx, BuyerId)>,
    names: Vec<(BuyerId, Arc<str>)>,
    orders: Vec<Order>,
    requests: Vec<(u64, RequestRecord)>,
    /// Remembered answers withdrawn in this batch: (request, bucket).
    forgotten: Vec<(u64, u64)>,
    /// Hold lines that ended in this batch, kept findable for the
    /// retention window (`<prefix>:ended:<hour>`).
    ended: Vec<(HoldId, EndedRecord)>,
}

impl Writes {
    pub fn is_empty(&self) -> bool {
        self.events == 0 && self.meta.is_empty() && self.stats.is_empty()
    }

    pub fn orders(&self) -> usize {
        self.orders.len()
    }
}

/// What the mirror needs from the rest of the gateway to name things.
pub struct Ctx<'a> {
    pub engine: &'a Engine,
    pub meta: &'a Meta,
    pub stats: &'a crate::stats::Stats,
    pub ids: &'a Ids,
    pub keys: &'a Keys,
    pub orders_maxlen: usize,
    /// Order-stream entries older than this go (`XTRIM MINID`); 0: none.
    pub orders_max_age_ms: u64,
    /// Per-buyer records (limit counts, stored names) expire this long
    /// after their hash was last written; 0: never.
    pub buyer_retention_ms: u64,
    /// How long a request id is remembered (the engine's window).
    pub request_window_ms: u64,
    /// How long an ended hold stays findable.
    pub ended_retention_ms: u64,
    /// Released and expired hold lines get order-stream entries too
    /// (see [`super::Journal::stream_hold_endings`]).
    pub hold_endings: bool,
}

#[derive(Debug, Default)]
pub struct Mirror {
    pub seq: u64,
    pub skus: HashMap<SkuIdx, MirrorSku>,
    /// Live hold lines by (hold, line): one entry per line, so a hold
    /// costs no allocation of its own.
    holds: IdMap<(HoldId, u8), (SkuIdx, HoldRecord)>,
    buyers: IdMap<(SkuIdx, BuyerId), u32>,
    names: IdSet<BuyerId>,
    /// Remembered request answers, kept for at most two request windows.
    requests: IdMap<u64, RequestRecord>,
}

fn window_fields(w: SaleWindow) -> (&'static str, String) {
    match w {
        SaleWindow::Scheduled { opens_at_ms } => ("scheduled", opens_at_ms.to_string()),
        other => (other.as_str(), String::new()),
    }
}

impl Mirror {
    /// The mirror of a restored state (the engine restored from it).
    pub fn from_saved(
        state: &SavedState,
        engine: &Engine,
        known_names: impl Iterator<Item = BuyerId>,
        keys: &Keys,
    ) -> Self {
        let mut m = Self {
            seq: state.last_seq,
            names: known_names.collect(),
            ..Self::default()
        };
        for s in &state.skus {
            if let Some(idx) = engine.sku(&s.id) {
                let id = Arc::from(s.id.as_str());
                let mut sku = MirrorSku::new(keys, id, idx, s.counts, s.settings, s.window);
                sku.channels = s.channels.iter().map(channel_record).collect();
                m.skus.insert(idx, sku);
            }
        }
        for h in &state.holds {
            for (i, l) in h.lines.iter().enumerate() {
                let Some(sku) = engine.sku(&l.sku) else {
                    continue;
                };
                let channel = l
                    .channel
                    .as_deref()
                    .and_then(|c| engine.channel(sku, c))
                    .map_or(0, |c| c.get() + 1);
                let record = HoldRecord {
                    channel,
                    quota: l.quota,
                    hold: h.hold.to_raw(),
                    line: i as u8,
                    lines: h.lines.len() as u8,
                    qty: l.qty,
                    buyer: h.buyer.0,
                    deadline_ms: h.deadline_ms,
                    latest_ms: h.latest_ms,
                    counted: l.counted,
                };
                m.holds.insert((h.hold, i as u8), (sku, record));
            }
        }
        for b in &state.buyers {
            if let Some(idx) = engine.sku(&b.sku) {
                m.buyers.insert((idx, b.buyer), b.units);
            }
        }
        m
    }

    /// Adds remembered requests read back from Redis.
    pub fn add_requests(&mut self, requests: impl IntoIterator<Item = (u64, RequestRecord)>) {
        self.requests.extend(requests);
    }

    /// Forgets request answers older than two windows (the engine has).
    pub fn prune_requests(&mut self, now_ms: u64, window_ms: u64) {
        self.requests
            .retain(|_, r| r.at_ms + 2 * window_ms > now_ms);
    }

    fn sku_mut(&mut self, sku: SkuIdx) -> Result<&mut MirrorSku, String> {
        self.skus
            .get_mut(&sku)
            .ok_or_else(|| format!("event for sku #{} the journal never saw created", sku.get()))
    }

    fn buyer_add(&mut self, w: &mut Writes, sku: SkuIdx, buyer: BuyerId, delta: i64) {
        let units = self.buyers.entry((sku, buyer)).or_default();
        *units = (i64::from(*units) + delta).max(0) as u32;
        w.buyers.insert((sku, buyer));
    }

    /// A hold line ended: its live record goes, an ended one is kept.
    fn hold_gone(
        &mut self,
        w: &mut Writes,
        end: (Ended, u64, u32),
        hold: HoldId,
        line: u8,
        sku: SkuIdx,
    ) {
        let (ended, at_ms, sold) = end;
        if let Some((_, live)) = self.holds.remove(&(hold, line)) {
            w.ended.push((
                hold,
                EndedRecord {
                    ended,
                    line,
                    lines: live.lines,
                    sku: self
                        .skus
                        .get(&sku)
                        .map(|s| s.id.to_string())
                        .unwrap_or_default(),
                    qty: live.qty,
                    sold,
                    deadline_ms: live.deadline_ms,
                    ended_at_ms: at_ms,
                },
            ));
        }
        let key = (sku, hold, line);
        match w.holds.get(&key) {
            Some(HoldWrite { fresh: true, .. }) => {
                w.holds.remove(&key);
            }
            _ => {
                w.holds.insert(
                    key,
                    HoldWrite {
                        record: None,
                        fresh: false,
                    },
                );
            }
        }
    }

    /// Applies one event (in sequence order) and records what to write.
    /// An `Err` means the event stream and the mirror disagree: a bug.
    pub fn apply(&mut self, e: &Event, w: &mut Writes, ctx: &Ctx<'_>) -> Result<(), String> {
        debug_assert!(e.seq > self.seq, "events applied in order");
        self.seq = e.seq;
        w.seq = e.seq;
        w.events += 1;
        match e.kind {
            EventKind::SkuCreated { sku, settings } => {
                let id = ctx.engine.sku_id(sku).ok_or("created sku has no id")?;
                let fresh = MirrorSku::new(
                    ctx.keys,
                    id,
                    sku,
                    Counts::default(),
                    settings,
                    SaleWindow::Closed,
                );
                self.skus.insert(sku, fresh);
                w.created.insert(sku);
                w.skus.insert(sku);
                w.meta.insert(sku);
            }
            EventKind::SettingsChanged { sku, settings } => {
                self.sku_mut(sku)?.settings = settings;
                w.skus.insert(sku);
            }
            EventKind::WindowChanged { sku, window } => {
                self.sku_mut(sku)?.window = window;
                w.skus.insert(sku);
            }
            EventKind::Restocked { sku, qty } => {
                self.sku_mut(sku)?.counts.available += qty;
                w.skus.insert(sku);
            }
            EventKind::Adjusted { sku, qty } => {
                let c = &mut self.sku_mut(sku)?.counts;
                c.available = c.available.checked_sub(qty).ok_or("adjust below zero")?;
                w.skus.insert(sku);
            }
            EventKind::Reserved {
                line,
                qty,
                deadline_ms,
                latest_ms,
            } => {
                let c = &mut self.sku_mut(line.sku)?.counts;
                c.available = c.available.checked_sub(qty).ok_or("reserve below zero")?;
                c.held += qty;
                self.sku_mut(line.sku)?
                    .channel_line(line.source, qty, None)?;
                w.skus.insert(line.sku);
                let record = HoldRecord {
                    channel: line.source.channel.map_or(0, |c| c.get() + 1),
                    quota: line.source.quota,
                    hold: line.hold.to_raw(),
                    line: line.line,
                    lines: line.lines,
                    qty,
                    buyer: line.buyer.0,
                    deadline_ms,
                    latest_ms,
                    counted: line.counted,
                };
                self.holds
                    .insert((line.hold, line.line), (line.sku, record));
                w.holds.insert(
                    (line.sku, line.hold, line.line),
                    HoldWrite {
                        record: Some(record),
                        fresh: true,
                    },
                );
                if line.counted {
                    self.buyer_add(w, line.sku, line.buyer, i64::from(qty));
                }
                if self.names.insert(line.buyer)
                    && let Some(name) = ctx.ids.buyer_name(line.buyer)
                {
                    w.names.push((line.buyer, name));
                }
            }
            EventKind::Committed {
                line,
                sold,
                returned,
            } => {
                let c = &mut self.sku_mut(line.sku)?.counts;
                c.held = c
                    .held
                    .checked_sub(sold + returned)
                    .ok_or("commit more than held")?;
                c.sold += sold;
                c.available += returned;
                self.sku_mut(line.sku)?
                    .channel_line(line.source, sold + returned, Some(sold))?;
                w.skus.insert(line.sku);
                let end = (Ended::Committed, e.at_ms, sold);
                self.hold_gone(w, end, line.hold, line.line, line.sku);
                if line.counted {
                    self.buyer_add(w, line.sku, line.buyer, -i64::from(returned));
                }
                w.orders.push(Order::Line {
                    event: "committed",
                    seq: e.seq,
                    at_ms: e.at_ms,
                    hold: line.hold,
                    line: line.line,
                    lines: line.lines,
                    sku: self.skus[&line.sku].id.clone(),
                    qty: sold,
                    returned: Some(returned),
                    buyer: line.buyer,
                    channel: self.channel_name(line.sku, line.source),
                });
            }
            EventKind::Released { line, qty } | EventKind::Expired { line, qty } => {
                let c = &mut self.sku_mut(line.sku)?.counts;
                c.held = c.held.checked_sub(qty).ok_or("release more than held")?;
                c.available += qty;
                self.sku_mut(line.sku)?
                    .channel_line(line.source, qty, Some(0))?;
                w.skus.insert(line.sku);
                let ended = if matches!(e.kind, EventKind::Expired { .. }) {
                    Ended::Expired
                } else {
                    Ended::Released
                };
                self.hold_gone(w, (ended, e.at_ms, 0), line.hold, line.line, line.sku);
                if line.counted {
                    self.buyer_add(w, line.sku, line.buyer, -i64::from(qty));
                }
                if ctx.hold_endings {
                    w.orders.push(Order::Line {
                        event: if matches!(ended, Ended::Expired) {
                            "expired"
                        } else {
                            "released"
                        },
                        seq: e.seq,
                        at_ms: e.at_ms,
                        hold: line.hold,
                        line: line.line,
                        lines: line.lines,
                        sku: self.skus[&line.sku].id.clone(),
                        qty,
                        returned: None,
                        buyer: line.buyer,
                        channel: self.channel_name(line.sku, line.source),
                    });
                }
            }
            EventKind::Extended { hold, deadline_ms } => {
                for line in 0..holdfast_engine::limits::CART_LINES_MAX as u8 {
                    let Some((sku, record)) = self.holds.get_mut(&(hold, line)) else {
                        continue;
                    };
                    record.deadline_ms = deadline_ms;
                    let fresh = w.holds.get(&(*sku, hold, line)).is_some_and(|h| h.fresh);
                    w.holds.insert(
                        (*sku, hold, line),
                        HoldWrite {
                            record: Some(*record),
                            fresh,
                        },
                    );
                }
            }
            EventKind::RequestDone {
                request,
                fingerprint,
                outcome,
                deadline_ms,
                aux,
            } => {
                let record = RequestRecord {
                    fingerprint,
                    outcome,
                    deadline_ms,
                    aux,
                    at_ms: e.at_ms,
                };
                self.requests.insert(request.0, record);
                w.requests.push((request.0, record));
            }
            EventKind::RequestForgotten { request } => {
                if let Some(r) = self.requests.remove(&request.0) {
                    w.requests.retain(|(q, _)| *q != request.0);
                    w.forgotten.push((request.0, request_bucket(r.at_ms)));
                }
            }
            EventKind::ChannelSet { sku, channel, cap } => {
                let id = ctx
                    .engine
                    .channel_id(sku, channel)
                    .ok_or("channel event for a channel the engine does not have")?;
                let s = self.sku_mut(sku)?;
                if usize::from(channel.get()) == s.channels.len() {
                    s.channels.push(ChannelRecord {
                        id: id.to_string(),
                        cap,
                        ..ChannelRecord::default()
                    });
                } else {
                    s.channel_mut(channel)?.cap = cap;
                }
                w.skus.insert(sku);
            }
            EventKind::QuotaMoved {
                sku,
                channel,
                to_quota,
                qty,
            } => {
                let s = self.sku_mut(sku)?;
                let c = s.channel_mut(channel)?;
                if to_quota {
                    c.quota_available += qty;
                } else {
                    c.quota_available = c
                        .quota_available
                        .checked_sub(qty)
                        .ok_or("quota moved below zero")?;
                }
                w.skus.insert(sku);
            }
            EventKind::SoldOut { sku } | EventKind::BackInStock { sku } => {
                let event = if matches!(e.kind, EventKind::SoldOut { .. }) {
                    "sold_out"
                } else {
                    "back_in_stock"
                };
                let sku = self.sku_mut(sku)?.id.clone();
                w.orders.push(Order::Stock {
                    event,
                    seq: e.seq,
                    at_ms: e.at_ms,
                    sku,
                });
            }
        }
        Ok(())
    }

    /// Forgets an erased buyer (its records were deleted from Redis), so a
    /// full re-write does not bring them back.
    /// The name of the channel a line was reserved on, if any.
    fn channel_name(&self, sku: SkuIdx, source: Source) -> Option<Arc<str>> {
        let c = source.channel?;
        let s = self.skus.get(&sku)?;
        Some(Arc::from(s.channels.get(usize::from(c.get()))?.id.as_str()))
    }

    pub fn forget_buyer(&mut self, buyer: BuyerId) {
        self.buyers.retain(|(_, b), _| *b != buyer);
        self.names.remove(&buyer);
    }

    /// Marks a SKU's display data for writing with the next batch.
    pub fn meta_changed(&self, w: &mut Writes, sku: SkuIdx) {
        if self.skus.contains_key(&sku) {
            w.meta.insert(sku);
        }
    }

    /// Marks a SKU's show statistics for writing with the next batch.
    pub fn stats_changed(&self, w: &mut Writes, sku: SkuIdx) {
        if self.skus.contains_key(&sku) {
            w.stats.insert(sku);
        }
    }

    /// A SKU's statistics record: the counters beside its stock, the sales
    /// buckets, the SKU's and its channels' (changed ones, or `all`), in
    /// their own hash.
    fn stats_commands(ctx: &Ctx<'_>, s: &MirrorSku, all: bool) -> Vec<redis::Cmd> {
        let Some(record) = ctx.stats.record(s.idx, all) else {
            return Vec::new();
        };
        let mut counters = redis::cmd("HSET");
        counters.arg(&*s.key_sku).arg("stats").arg(record.counters);
        let mut cmds = vec![counters];
        // Buckets past the bound go from Redis too (before the new ones:
        // never the same buckets, but one order reads simpler).
        if !record.dropped.is_empty() {
            let mut dropped = redis::cmd("HDEL");
            dropped.arg(ctx.keys.sales(&s.id));
            for (channel, bucket) in record.dropped {
                dropped.arg(sales_field(channel, bucket));
            }
            cmds.push(dropped);
        }
        if !record.sales.is_empty() || !record.channel_sales.is_empty() {
            let mut sales = redis::cmd("HSET");
            sales.arg(ctx.keys.sales(&s.id));
            for (bucket, units) in record.sales {
                sales.arg(sales_field(None, bucket)).arg(units);
            }
            for (channel, bucket, units) in record.channel_sales {
                sales.arg(sales_field(Some(channel), bucket)).arg(units);
            }
            cmds.push(sales);
        }
        cmds
    }

    fn sku_fields(&self, s: &MirrorSku) -> Vec<(&'static str, String)> {
        let (window, opens_at) = window_fields(s.window);
        let mut fields = vec![
            ("idx", s.idx.get().to_string()),
            ("total", s.counts.total().to_string()),
            ("available", s.counts.available.to_string()),
            ("held", s.counts.held.to_string()),
            ("sold", s.counts.sold.to_string()),
            ("window", window.into()),
            ("opens_at_ms", opens_at),
            ("buyer_limit", s.settings.buyer_limit.to_string()),
            ("hold_ttl_ms", s.settings.hold_ttl_ms.to_string()),
            (
                "hold_lifetime_max_ms",
                s.settings.hold_lifetime_max_ms.to_string(),
            ),
            ("order_units_max", s.settings.order_units_max.to_string()),
        ];
        // Only SKUs with channels carry the field (and pay for its bytes).
        if !s.channels.is_empty() {
            let json = serde_json::to_string(&s.channels).unwrap_or_default();
            fields.push(("channels", json));
        }
        fields
    }

    /// The remembered request answers, one `HSET` per time bucket (usually
    /// one per batch) and its `PEXPIRE`: kept as long as the engine could
    /// remember them, two windows from the bucket's last answer.
    fn request_commands<'r>(
        ctx: &Ctx<'_>,
        requests: impl IntoIterator<Item = (u64, &'r RequestRecord)>,
        now_ms: u64,
    ) -> Vec<redis::Cmd> {
        let mut buckets: BTreeMap<u64, HashWrites> = BTreeMap::new();
        for (request, r) in requests {
            let bucket = request_bucket(r.at_ms);
            buckets
                .entry(bucket)
                .or_insert_with(|| HashWrites::new(Arc::from(ctx.keys.requests(bucket))))
                .set(request_field(request), r.encode());
        }
        let mut cmds = Vec::new();
        for (bucket, hash) in buckets {
            let mut expire = redis::cmd("PEXPIRE");
            expire.arg(&*hash.key).arg(request_bucket_ttl_ms(
                bucket,
                ctx.request_window_ms,
                now_ms,
            ));
            cmds.extend(hash.finish());
            cmds.push(expire);
        }
        cmds
    }

    fn meta_json(ctx: &Ctx<'_>, sku: SkuIdx) -> String {
        ctx.meta
            .get(sku)
            .map(|m| serde_json::to_string(&*m).unwrap_or_default())
            .unwrap_or_default()
    }

    /// The `XADD` of one order-stream entry. The stream is capped once per
    /// batch (`XTRIM`, see [`Self::add_orders`]), not per entry: three
    /// fewer arguments for Redis to parse on every order.
    fn xadd(ctx: &Ctx<'_>, order: &Order) -> redis::Cmd {
        let mut cmd = redis::Cmd::with_capacity(24, 192);
        cmd.arg("XADD").arg(ctx.keys.orders()).arg("*");
        match order {
            Order::Line {
                event,
                seq,
                at_ms,
                hold,
                line,
                lines,
                sku,
                qty,
                returned,
                buyer,
                channel,
            } => {
                cmd.arg("event")
                    .arg(*event)
                    .arg("seq")
                    .arg(*seq)
                    .arg("at_ms")
                    .arg(*at_ms);
                cmd.arg("hold")
                    .arg(hex16(hold.to_raw()).as_str())
                    .arg("line")
                    .arg(*line)
                    .arg("lines")
                    .arg(*lines);
                cmd.arg("sku").arg(&**sku).arg("qty").arg(*qty);
                if let Some(returned) = returned {
                    cmd.arg("returned").arg(*returned);
                }
                match ctx.ids.buyer_name(*buyer) {
                    Some(name) => cmd.arg("buyer").arg(&*name),
                    None => cmd.arg("buyer").arg(buyer_field(*buyer)),
                };
                if let Some(channel) = channel {
                    cmd.arg("channel").arg(&**channel);
                }
            }
            Order::Stock {
                event,
                seq,
                at_ms,
                sku,
            } => {
                cmd.arg("event")
                    .arg(*event)
                    .arg("seq")
                    .arg(*seq)
                    .arg("at_ms")
                    .arg(*at_ms)
                    .arg("sku")
                    .arg(&**sku);
            }
        }
        cmd
    }

    /// A batch's order-stream entries, then one cap on the stream
    /// (approximate: whole stream nodes, as `MAXLEN ~` does).
    fn add_orders(pipe: &mut redis::Pipeline, ctx: &Ctx<'_>, orders: &[Order]) {
        for order in orders {
            pipe.add_command(Self::xadd(ctx, order)).ignore();
        }
        if !orders.is_empty() && ctx.orders_maxlen > 0 {
            pipe.cmd("XTRIM")
                .arg(ctx.keys.orders())
                .arg("MAXLEN")
                .arg("~")
                .arg(ctx.orders_maxlen)
                .ignore();
        }
        // By age too (retention of buyer pseudonyms and sales): entry ids
        // are Redis's clock in ms, so the cut-off is an id. Approximate
        // (whole stream nodes), like the length cap.
        let now_ms = ctx.engine.now_ms();
        if !orders.is_empty() && ctx.orders_max_age_ms > 0 && now_ms > ctx.orders_max_age_ms {
            pipe.cmd("XTRIM")
                .arg(ctx.keys.orders())
                .arg("MINID")
                .arg("~")
                .arg(now_ms - ctx.orders_max_age_ms)
                .ignore();
        }
    }

    /// Adds one batch's writes to `pipe` (which the caller wraps in
    /// MULTI/EXEC), ending with the new journal watermark.
    pub fn batch_commands(
        &self,
        w: &Writes,
        ctx: &Ctx<'_>,
        pipe: &mut redis::Pipeline,
        now_ms: u64,
    ) {
        let keys = ctx.keys;
        for sku in &w.created {
            if let Some(s) = self.skus.get(sku) {
                pipe.cmd("HSET")
                    .arg(keys.catalog())
                    .arg(&*s.id)
                    .arg(s.idx.get())
                    .ignore();
            }
        }
        for sku in &w.skus {
            if let Some(s) = self.skus.get(sku) {
                pipe.cmd("HSET")
                    .arg(&*s.key_sku)
                    .arg(self.sku_fields(s))
                    .ignore();
            }
        }
        for sku in &w.meta {
            if let Some(s) = self.skus.get(sku) {
                pipe.cmd("HSET")
                    .arg(&*s.key_sku)
                    .arg("meta")
                    .arg(Self::meta_json(ctx, *sku))
                    .ignore();
            }
        }
        for sku in &w.stats {
            if let Some(s) = self.skus.get(sku) {
                add_all(pipe, Self::stats_commands(ctx, s, false));
            }
        }
        // One HSET and one HDEL per SKU's holds hash (and one HSET / HDEL
        // per SKU's buyers hash): grouped by SKU, in no particular order
        // within one (the fields are independent).
        let mut holds: BTreeMap<SkuIdx, HashWrites> = BTreeMap::new();
        for ((sku, hold, line), write) in &w.holds {
            let Some(s) = self.skus.get(sku) else {
                continue;
            };
            let hash = holds
                .entry(*sku)
                .or_insert_with(|| HashWrites::new(s.key_holds.clone()));
            let field = hold_field(*hold, *line);
            match &write.record {
                Some(r) => hash.set(
                    field.as_bytes(),
                    r.encode_into(&mut [0; HOLD_RECORD_BYTES_MAX]),
                ),
                None => hash.del(field.as_bytes()),
            }
        }
        add_all(pipe, holds.into_values().flat_map(HashWrites::finish));
        let mut buyers: BTreeMap<SkuIdx, HashWrites> = BTreeMap::new();
        for (sku, buyer) in &w.buyers {
            let Some(s) = self.skus.get(sku) else {
                continue;
            };
            let hash = buyers
                .entry(*sku)
                .or_insert_with(|| HashWrites::new(s.key_buyers.clone()));
            match self.buyers.get(&(*sku, *buyer)).copied().unwrap_or(0) {
                0 => hash.del(buyer_field(*buyer)),
                units => hash.set(buyer_field(*buyer), units),
            }
        }
        let mut expiring: Vec<Arc<str>> = buyers.values().map(|h| h.key.clone()).collect();
        add_all(pipe, buyers.into_values().flat_map(HashWrites::finish));
        let mut names = HashWrites::new(Arc::from(keys.buyer_names()));
        for (buyer, name) in &w.names {
            names.set(buyer_field(*buyer), &**name);
        }
        if !w.names.is_empty() {
            expiring.push(names.key.clone());
        }
        add_all(pipe, names.finish());
        // Retention of buyer data: a hash lives on while buyers keep
        // buying, and goes `buyer_retention_ms` after its last write.
        if ctx.buyer_retention_ms > 0 {
            for key in expiring {
                pipe.cmd("PEXPIRE")
                    .arg(&*key)
                    .arg(ctx.buyer_retention_ms)
                    .ignore();
            }
        }
        Self::add_orders(pipe, ctx, &w.orders);
        add_all(
            pipe,
            Self::request_commands(ctx, w.requests.iter().map(|(q, r)| (*q, r)), now_ms),
        );
        for (request, bucket) in &w.forgotten {
            pipe.cmd("HDEL")
                .arg(ctx.keys.requests(*bucket))
                .arg(request_field(*request))
                .ignore();
        }
        Self::add_ended(pipe, ctx, &w.ended, now_ms);
        pipe.cmd("HSET")
            .arg(keys.journal())
            .arg("seq")
            .arg(w.seq.max(self.seq))
            .arg("written_at_ms")
            .arg(now_ms)
            .ignore();
    }

    /// One `HSET` and one `PEXPIRE` per hour bucket of ended hold lines.
    fn add_ended(
        pipe: &mut redis::Pipeline,
        ctx: &Ctx<'_>,
        ended: &[(HoldId, EndedRecord)],
        now_ms: u64,
    ) {
        if ended.is_empty() || ctx.ended_retention_ms == 0 {
            return;
        }
        let mut buckets: BTreeMap<u64, Vec<(HoldField, Vec<u8>)>> = BTreeMap::new();
        for (hold, record) in ended {
            buckets
                .entry(ended_bucket(record.ended_at_ms))
                .or_default()
                .push((hold_field(*hold, record.line), record.encode()));
        }
        for (bucket, fields) in buckets {
            let key = ctx.keys.ended(bucket);
            let hset = pipe.cmd("HSET").arg(&key);
            for (field, value) in &fields {
                hset.arg(field.as_bytes()).arg(value.as_slice());
            }
            hset.ignore();
            pipe.cmd("PEXPIRE")
                .arg(&key)
                .arg(ended_bucket_ttl_ms(bucket, ctx.ended_retention_ms, now_ms))
                .ignore();
        }
    }

    /// Only the order-stream entries of a batch (after a full re-write,
    /// which carries everything else).
    pub fn orders_only(&self, w: &Writes, ctx: &Ctx<'_>, pipe: &mut redis::Pipeline) {
        Self::add_orders(pipe, ctx, &w.orders);
    }

    /// Pipelines that write the whole mirror (after Redis came back empty,
    /// or was found at another sequence number), in chunks. The first
    /// deletes the journal record and every hash the mirror owns, so what an
    /// older copy of the state held beyond the mirror (a hold since ended,
    /// a buyer since released) cannot linger, and a re-write cut short
    /// leaves data without a journal record, which recovery refuses rather
    /// than trusting; the last sets the record and watermark. Buyer names
    /// come from `ids`.
    pub fn full_rewrite(
        &self,
        ctx: &Ctx<'_>,
        header: &[(&'static str, String)],
        now_ms: u64,
    ) -> Vec<redis::Pipeline> {
        let keys = ctx.keys;
        let mut clear = redis::cmd("DEL");
        clear
            .arg(keys.journal())
            .arg(keys.catalog())
            .arg(keys.buyer_names());
        for s in self.skus.values() {
            clear
                .arg(&*s.key_holds)
                .arg(&*s.key_buyers)
                .arg(keys.sales(&s.id));
        }
        let mut cmds = vec![clear];
        let mut catalog = HashWrites::new(Arc::from(keys.catalog()));
        for s in self.skus.values() {
            catalog.set(&*s.id, s.idx.get());
            let mut sku = redis::cmd("HSET");
            sku.arg(&*s.key_sku)
                .arg(self.sku_fields(s))
                .arg("meta")
                .arg(Self::meta_json(ctx, s.idx));
            cmds.push(sku);
            cmds.extend(Self::stats_commands(ctx, s, true));
        }
        cmds.extend(catalog.finish());
        let mut holds: HashMap<SkuIdx, HashWrites> = HashMap::new();
        for ((hold, line), (sku, r)) in &self.holds {
            if let Some(s) = self.skus.get(sku) {
                holds
                    .entry(*sku)
                    .or_insert_with(|| HashWrites::new(s.key_holds.clone()))
                    .set(
                        hold_field(*hold, *line).as_bytes(),
                        r.encode_into(&mut [0; HOLD_RECORD_BYTES_MAX]),
                    );
            }
        }
        cmds.extend(holds.into_values().flat_map(HashWrites::finish));
        let mut buyers: HashMap<SkuIdx, HashWrites> = HashMap::new();
        for ((sku, buyer), units) in &self.buyers {
            if let Some(s) = self.skus.get(sku)
                && *units > 0
            {
                buyers
                    .entry(*sku)
                    .or_insert_with(|| HashWrites::new(s.key_buyers.clone()))
                    .set(buyer_field(*buyer), *units);
            }
        }
        cmds.extend(buyers.into_values().flat_map(HashWrites::finish));
        cmds.extend(Self::request_commands(
            ctx,
            self.requests.iter().map(|(q, r)| (*q, r)),
            now_ms,
        ));
        let mut names = HashWrites::new(Arc::from(keys.buyer_names()));
        for buyer in &self.names {
            if let Some(name) = ctx.ids.buyer_name(*buyer) {
                names.set(buyer_field(*buyer), &*name);
            }
        }
        cmds.extend(names.finish());
        let mut pipes: Vec<redis::Pipeline> = Vec::new();
        for chunk in cmds.chunks(RESYNC_CHUNK) {
            let mut pipe = redis::pipe();
            add_all(&mut pipe, chunk.iter().cloned());
            pipes.push(pipe);
        }
        let mut pipe = redis::pipe();
        let mut fields: Vec<(&'static str, String)> = header.to_vec();
        fields.push(("seq", self.seq.to_string()));
        fields.push(("written_at_ms", now_ms.to_string()));
        pipe.cmd("HSET").arg(keys.journal()).arg(fields).ignore();
        pipes.push(pipe);
        pipes
    }
}

/// The stored form of a saved channel.
pub(super) fn channel_record(c: &SavedChannel) -> ChannelRecord {
    ChannelRecord {
        id: c.id.clone(),
        quota_available: c.quota.available,
        quota_held: c.quota.held,
        quota_sold: c.quota.sold,
        held: c.held,
        sold: c.sold,
        cap: c.cap,
    }
}

/// A stored channel as the engine restores it.
pub(super) fn saved_channel(c: &ChannelRecord) -> SavedChannel {
    SavedChannel {
        id: c.id.clone(),
        quota: Counts {
            available: c.quota_available,
            held: c.quota_held,
            sold: c.quota_sold,
        },
        held: c.held,
        sold: c.sold,
        cap: c.cap,
    }
}
