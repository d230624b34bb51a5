//! Server-side show statistics: per SKU, units and holds reserved,
//! committed, released and expired, revenue per currency, when it sold out,
//! sales per 10 s bucket, and the units in carts with how many of them
//! expire within the next minute. The host dashboard shows these numbers as
//! the server computed them, so two tabs, a reload and a restart (with
//! Redis) all agree; the browser derives nothing.
//!
//! Fed by [`crate::ops`] (one call per reservation, commit, release and
//! extend that changed something) and by the hub (the time a SKU sold out).
//! Expiry needs no hook: expired units are what was reserved and neither
//! committed, released nor still held (`held` comes from the engine), and
//! expired holds likewise against the holds still live in the per-SKU
//! deadline histogram this module keeps for "expiring soon".
//!
//! Each SKU's tally sits behind its own small mutex, taken once per
//! operation and never across an await; SKUs never share one. This module
//! must never block on I/O and never hold a lock while calling the engine.
//! Reading a tally and the engine's counts is not one atomic step: a
//! reading taken between an engine change and its tally update is off by
//! that one operation, and the update marks the SKU changed again, so the
//! next broadcast round corrects it.

use crate::protocol::{ChannelStats, Money, SkuStats, Stats as StatsMsg};
use holdfast_engine::{ChannelCounts, ChannelIdx, Counts, Engine, HoldInfo, SkuIdx};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

/// Width of one sales bucket.
pub const SALES_BUCKET_MS: u64 = 10_000;
/// Sales buckets kept per SKU: 6 hours of 10 s buckets, longer than any
/// live show (a longer one keeps its latest 6 hours). At most 8.6 KiB per
/// SKU that sells, allocated by its first sale.
pub const SALES_BUCKETS_MAX: usize = 2_160;
/// The sales rate (and the sell-out estimate) use the sales of the last 5
/// minutes: long enough not to jump with every order, short enough to
/// follow a show's pace.
pub const RATE_WINDOW_MS: u64 = 300_000;
/// A rate is never taken over less than a minute: 2 units sold in the
/// first 5 s of a show are 2 a minute, not 24.
pub const RATE_FLOOR_MS: u64 = 60_000;
/// No sell-out estimate before a SKU has sold for this long...
pub const ETA_HISTORY_MIN_MS: u64 = 60_000;
/// ...and at least this many units within the rate window: fewer is noise.
pub const ETA_UNITS_MIN: u64 = 3;
/// "Expiring soon" means a deadline within this long.
pub const EXPIRING_SOON_MS: u64 = 60_000;
/// Distinct deadlines kept per SKU. Past it a new deadline joins the
/// nearest earlier one kept (with 4 096 of them over a 5-minute TTL, ~75 ms
/// early): "expiring soon" may count a hold a little early, never late,
/// and counts stay exact. Every entry is at least one live hold, so all
/// SKUs together hold at most the engine's hold table's worth.
pub const DEADLINE_BUCKETS_MAX: usize = 4_096;
/// Currencies whose revenue one SKU keeps (a PATCH may change a SKU's
/// currency mid-show); further ones add to the last.
pub const CURRENCIES_MAX: usize = 4;
/// Most SKUs listed one by one in a stats frame; the total always covers
/// every SKU of the topic.
pub const STATS_SKUS_MAX: usize = 1_024;

/// The persisted part of a SKU's tally (JSON beside its stock in Redis;
/// the sales buckets are a hash of their own).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub reserved_units: u64,
    pub reserved_holds: u64,
    pub sold_units: u64,
    pub committed_holds: u64,
    pub returned_units: u64,
    pub released_units: u64,
    pub released_holds: u64,
    /// Revenue in minor units per currency, at most [`CURRENCIES_MAX`].
    pub revenue: Vec<(String, u64)>,
    pub first_activity_ms: Option<u64>,
    pub sold_out_at_ms: Option<u64>,
    /// Per sales channel the SKU has (by its index, stable: channels are
    /// never removed), what reservations on it did; at most
    /// `holdfast_engine::limits::CHANNELS_MAX` entries.
    #[serde(default)]
    pub channels: Vec<ChannelCounters>,
}

/// What reservations on one sales channel of a SKU did (conversion =
/// committed / reserved).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelCounters {
    /// The channel's index in its SKU's set.
    pub idx: u8,
    pub reserved_units: u64,
    pub reserved_holds: u64,
    pub sold_units: u64,
    pub committed_holds: u64,
}

impl Counters {
    fn channel(&mut self, idx: ChannelIdx) -> &mut ChannelCounters {
        let idx = idx.get();
        match self.channels.iter().position(|c| c.idx == idx) {
            Some(i) => &mut self.channels[i],
            None => {
                self.channels.push(ChannelCounters {
                    idx,
                    ..ChannelCounters::default()
                });
                self.channels.last_mut().expect("just pushed")
            }
        }
    }

    fn add_revenue(&mut self, currency: &str, minor: u64) {
        if let Some(entry) = self.revenue.iter_mut().find(|(c, _)| c == currency) {
            entry.1 = entry.1.saturating_add(minor);
        } else if self.revenue.len() < CURRENCIES_MAX {
            self.revenue.push((currency.to_string(), minor));
        } else if let Some(last) = self.revenue.last_mut() {
            last.1 = last.1.saturating_add(minor);
        }
    }
}

/// Units (and holds) of live holds by deadline (ms).
#[derive(Debug, Default)]
struct Deadlines {
    by_deadline: BTreeMap<u64, (u64, u64)>,
}

impl Deadlines {
    /// Drops deadlines that passed: those holds expired (or are about to,
    /// at the expirer's next run).
    fn prune(&mut self, now_ms: u64) {
        while let Some(entry) = self.by_deadline.first_entry()
            && *entry.key() <= now_ms
        {
            entry.remove();
        }
    }

    /// The key a deadline is counted under: its own, or past the bound the
    /// nearest one kept (earlier first).
    fn key(&self, deadline_ms: u64, inserting: bool) -> Option<u64> {
        if self.by_deadline.contains_key(&deadline_ms)
            || (inserting && self.by_deadline.len() < DEADLINE_BUCKETS_MAX)
        {
            return Some(deadline_ms);
        }
        self.by_deadline
            .range(..deadline_ms)
            .next_back()
            .or_else(|| self.by_deadline.range(deadline_ms..).next())
            .map(|(k, _)| *k)
    }

    fn add(&mut self, deadline_ms: u64, units: u64, now_ms: u64) {
        self.prune(now_ms);
        if deadline_ms <= now_ms {
            return; // already due: the expirer is about to end it
        }
        if let Some(k) = self.key(deadline_ms, true) {
            let e = self.by_deadline.entry(k).or_default();
            e.0 += units;
            e.1 += 1;
        }
    }

    fn remove(&mut self, deadline_ms: u64, units: u64) {
        if let Some(k) = self.key(deadline_ms, false)
            && let Some(e) = self.by_deadline.get_mut(&k)
        {
            e.0 = e.0.saturating_sub(units);
            e.1 = e.1.saturating_sub(1);
            if e.1 == 0 {
                self.by_deadline.remove(&k);
            }
        }
    }

    /// (units expiring within [`EXPIRING_SOON_MS`], live holds).
    fn read(&mut self, now_ms: u64) -> (u64, u64) {
        self.prune(now_ms);
        let soon_until = now_ms + EXPIRING_SOON_MS;
        let mut soon = 0;
        let mut holds = 0;
        for (k, (units, h)) in &self.by_deadline {
            if *k <= soon_until {
                soon += units;
            }
            holds += h;
        }
        (soon, holds)
    }
}

/// Units sold per [`SALES_BUCKET_MS`], dense from `first` (a bucket index),
/// at most [`SALES_BUCKETS_MAX`] of them.
#[derive(Debug, Default)]
struct Sales {
    first: u64,
    units: VecDeque<u32>,
    /// Lowest bucket changed since the journal last took them.
    dirty_from: Option<u64>,
    /// Buckets that left the window since the journal last took them, and
    /// that it may have written (`start..end`): it deletes them, so Redis
    /// keeps the same bound.
    dropped: Option<(u64, u64)>,
}

impl Sales {
    fn add(&mut self, at_ms: u64, units: u32) {
        let b = at_ms / SALES_BUCKET_MS;
        let (old_first, old_end) = (self.first, self.first + self.units.len() as u64);
        if self.units.is_empty() {
            self.first = b;
        }
        // A sale stamped before the oldest bucket kept (clocks of two
        // threads a millisecond apart at a bucket edge) joins the oldest.
        let b = b.max(self.first);
        while self.first + self.units.len() as u64 <= b {
            self.units.push_back(0);
        }
        while self.units.len() > SALES_BUCKETS_MAX {
            self.units.pop_front();
            self.first += 1;
        }
        // Only buckets kept before this call can have been written.
        let end = self.first.min(old_end);
        if end > old_first {
            self.dropped = Some(match self.dropped {
                Some((s, e)) => (s.min(old_first), e.max(end)),
                None => (old_first, end),
            });
        }
        let i = (b - self.first) as usize;
        self.units[i] = self.units[i].saturating_add(units);
        self.dirty_from = Some(self.dirty_from.map_or(b, |d| d.min(b)));
    }

    fn get(&self, b: u64) -> u32 {
        b.checked_sub(self.first)
            .and_then(|i| self.units.get(i as usize))
            .copied()
            .unwrap_or(0)
    }

    /// Units sold in the buckets from `from` (a bucket index) on.
    fn since(&self, from: u64) -> u64 {
        let skip = from.saturating_sub(self.first) as usize;
        self.units.iter().skip(skip).map(|&u| u64::from(u)).sum()
    }

    fn restore(&mut self, b: u64, units: u32) {
        if self.units.is_empty() {
            self.first = b;
        }
        if b < self.first {
            // Older than what is kept so far: grow at the front, unless
            // that passes the bound.
            let grow = self.first - b;
            if self.units.len() as u64 + grow > SALES_BUCKETS_MAX as u64 {
                return;
            }
            for _ in 0..grow {
                self.units.push_front(0);
            }
            self.first = b;
        }
        self.add(b * SALES_BUCKET_MS, units);
        self.dirty_from = None;
        self.dropped = None;
    }

    /// The buckets changed since the last call (`all`: every bucket), and
    /// those dropped meanwhile (the newest [`SALES_BUCKETS_MAX`] of them:
    /// the journal takes them every batch, so there are never more unless
    /// it was down for hours), for the journal.
    fn take_changed(&mut self, all: bool) -> (Vec<(u64, u32)>, Vec<u64>) {
        let from = if all { Some(0) } else { self.dirty_from };
        self.dirty_from = None;
        let dropped = self.dropped.take().map_or_else(Vec::new, |(s, e)| {
            (s.max(e.saturating_sub(SALES_BUCKETS_MAX as u64))..e).collect()
        });
        (
            from.map_or_else(Vec::new, |f| self.buckets_from(f)),
            dropped,
        )
    }

    fn buckets_from(&self, from: u64) -> Vec<(u64, u32)> {
        let skip = from.saturating_sub(self.first) as usize;
        self.units
            .iter()
            .enumerate()
            .skip(skip)
            .map(|(i, &u)| (self.first + i as u64, u))
            .collect()
    }
}

#[derive(Debug, Default)]
struct Tally {
    counters: Counters,
    deadlines: Deadlines,
    sales: Sales,
    /// Sales buckets per channel index (persisted beside the SKU's, see
    /// [`Record::channel_sales`]).
    channel_sales: Vec<(u8, Sales)>,
}

impl Tally {
    fn channel_sales(&mut self, idx: ChannelIdx) -> &mut Sales {
        self.channel_sales_at(idx.get())
    }

    fn channel_sales_at(&mut self, idx: u8) -> &mut Sales {
        match self.channel_sales.iter().position(|(i, _)| *i == idx) {
            Some(i) => &mut self.channel_sales[i].1,
            None => {
                self.channel_sales.push((idx, Sales::default()));
                &mut self.channel_sales.last_mut().expect("just pushed").1
            }
        }
    }
}

#[derive(Debug, Default)]
struct SkuTally {
    tally: Mutex<Tally>,
    /// Changed since the hub last looked (stats frames are rebuilt).
    hub_flag: AtomicBool,
    /// Changed since the journal last wrote it.
    journal_flag: AtomicBool,
}

/// One SKU's persisted statistics as recovery reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    pub sku: String,
    pub counters: Counters,
    /// (bucket index, units).
    pub sales: Vec<(u64, u32)>,
    /// Per sales channel: (channel index, bucket index, units).
    pub channel_sales: Vec<(u8, u64, u32)>,
}

/// One SKU's tally as the journal writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// [`Counters`] as JSON.
    pub counters: String,
    /// Sales buckets (bucket index, units) changed since the last record
    /// (all of them for a full re-write).
    pub sales: Vec<(u64, u32)>,
    /// The same per sales channel: (channel index, bucket index, units),
    /// each channel's bounded like the SKU's.
    pub channel_sales: Vec<(u8, u64, u32)>,
    /// Buckets that left the bound since the last record, to delete:
    /// (channel index, or none for the SKU's own; bucket index).
    pub dropped: Vec<(Option<u8>, u64)>,
}

/// The statistics of every SKU, indexed like the engine's catalog.
#[derive(Debug)]
pub struct Stats {
    skus: Box<[OnceLock<SkuTally>]>,
    hub_changed: Mutex<Vec<SkuIdx>>,
    journal_dirty: Mutex<Vec<SkuIdx>>,
}

/// The live counts of one SKU that statistics are read against.
#[derive(Debug, Clone, Copy)]
pub struct Live<'a> {
    pub sku: SkuIdx,
    pub id: &'a str,
    pub counts: Counts,
    /// The SKU's channels (their ids name the per-channel statistics).
    pub channels: &'a [ChannelCounts],
}

impl Stats {
    /// Room for `skus_max` SKUs (the engine's catalog bound); a tally is
    /// allocated by a SKU's first counted operation.
    pub fn new(skus_max: u32) -> Self {
        Self {
            skus: (0..skus_max).map(|_| OnceLock::new()).collect(),
            hub_changed: Mutex::default(),
            journal_dirty: Mutex::default(),
        }
    }

    /// Runs `f` on a SKU's tally, then marks it changed for the hub and the
    /// journal.
    fn update<R>(&self, sku: SkuIdx, f: impl FnOnce(&mut Tally) -> R) -> Option<R> {
        let slot = self.skus.get(sku.get() as usize)?;
        let t = slot.get_or_init(SkuTally::default);
        let r = f(&mut t.tally.lock().expect("tally lock"));
        // AcqRel swap: only the caller that raises the flag queues the SKU,
        // so a hot SKU takes the shared list's lock once per reader pass,
        // not once per operation; the reader clears the flag before it
        // reads the tally (see `take_hub_changed`), so an update that sees
        // the flag still raised is read by that pass.
        if !t.hub_flag.swap(true, Ordering::AcqRel) {
            self.hub_changed.lock().expect("changed lock").push(sku);
        }
        if !t.journal_flag.swap(true, Ordering::AcqRel) {
            self.journal_dirty.lock().expect("dirty lock").push(sku);
        }
        Some(r)
    }

    /// A reservation (not a replay) held `lines` until `deadline_ms`.
    /// Each line: SKU, units, and the SKU's sales channel it was made on
    /// (counted per channel too).
    pub fn reserved(
        &self,
        lines: &[(SkuIdx, u32, Option<ChannelIdx>)],
        deadline_ms: u64,
        now_ms: u64,
    ) {
        for &(sku, qty, channel) in lines {
            self.update(sku, |t| {
                let c = &mut t.counters;
                c.reserved_units += u64::from(qty);
                c.reserved_holds += 1;
                c.first_activity_ms.get_or_insert(now_ms);
                if let Some(idx) = channel {
                    let ch = c.channel(idx);
                    ch.reserved_units += u64::from(qty);
                    ch.reserved_holds += 1;
                }
                t.deadlines.add(deadline_ms, u64::from(qty), now_ms);
            });
        }
    }

    /// A commit (not a replay) of `hold` (as it was before the commit) sold
    /// `sold[i]` units of line `i`; `price(sku)` is the SKU's price now.
    pub fn committed(
        &self,
        hold: &HoldInfo,
        sold: &[u32],
        price: impl Fn(SkuIdx) -> Option<(String, u64)>,
        now_ms: u64,
    ) {
        for (line, &s) in hold.lines.iter().zip(sold) {
            let price = price(line.sku);
            self.update(line.sku, |t| {
                let c = &mut t.counters;
                c.sold_units += u64::from(s);
                c.returned_units += u64::from(line.qty.saturating_sub(s));
                c.committed_holds += 1;
                if let Some((currency, minor)) = price
                    && s > 0
                {
                    c.add_revenue(&currency, minor.saturating_mul(u64::from(s)));
                }
                if let Some(idx) = line.channel {
                    let ch = c.channel(idx);
                    ch.sold_units += u64::from(s);
                    ch.committed_holds += 1;
                }
                if s > 0 {
                    t.sales.add(now_ms, s);
                    if let Some(idx) = line.channel {
                        t.channel_sales(idx).add(now_ms, s);
                    }
                }
                t.deadlines.remove(hold.deadline_ms, u64::from(line.qty));
            });
        }
    }

    /// A release of `hold` (as it was before the release) gave its units
    /// back.
    pub fn released(&self, hold: &HoldInfo) {
        for line in &hold.lines {
            self.update(line.sku, |t| {
                t.counters.released_units += u64::from(line.qty);
                t.counters.released_holds += 1;
                t.deadlines.remove(hold.deadline_ms, u64::from(line.qty));
            });
        }
    }

    /// `hold` (as it was before) now ends at `deadline_ms`.
    pub fn extended(&self, hold: &HoldInfo, deadline_ms: u64, now_ms: u64) {
        if hold.deadline_ms == deadline_ms {
            return;
        }
        for line in &hold.lines {
            self.update(line.sku, |t| {
                t.deadlines.remove(hold.deadline_ms, u64::from(line.qty));
                t.deadlines.add(deadline_ms, u64::from(line.qty), now_ms);
            });
        }
    }

    /// The SKU sold out (the hub saw `sold_out` become true) at `at_ms`.
    pub fn sold_out(&self, sku: SkuIdx, at_ms: u64) {
        self.update(sku, |t| t.counters.sold_out_at_ms = Some(at_ms));
    }

    /// A live hold found at recovery (its deadline counts for "expiring
    /// soon"; the counters come from the persisted record).
    pub fn restore_hold(&self, sku: SkuIdx, qty: u32, deadline_ms: u64, now_ms: u64) {
        if let Some(t) = self.skus.get(sku.get() as usize) {
            let t = t.get_or_init(SkuTally::default);
            t.tally
                .lock()
                .expect("tally lock")
                .deadlines
                .add(deadline_ms, u64::from(qty), now_ms);
        }
    }

    /// A SKU's persisted counters and sales buckets, at recovery.
    pub fn restore(&self, sku: SkuIdx, saved: &Saved) {
        let Some(t) = self.skus.get(sku.get() as usize) else {
            return;
        };
        let t = t.get_or_init(SkuTally::default);
        let mut tally = t.tally.lock().expect("tally lock");
        tally.counters = saved.counters.clone();
        let mut sorted = saved.sales.clone();
        sorted.sort_unstable();
        // Newest first, so the bound keeps the latest buckets.
        for &(b, units) in sorted.iter().rev() {
            tally.sales.restore(b, units);
        }
        let mut sorted = saved.channel_sales.clone();
        sorted.sort_unstable();
        // A SKU has at most CHANNELS_MAX channels: another index is not
        // one of this version's records, and is left out (bounded).
        let known = |idx: u8| usize::from(idx) < holdfast_engine::limits::CHANNELS_MAX;
        for &(idx, b, units) in sorted.iter().rev().filter(|(i, ..)| known(*i)) {
            tally.channel_sales_at(idx).restore(b, units);
        }
    }

    /// SKUs whose tally changed since the last call (for the hub).
    pub fn take_hub_changed(&self, out: &mut Vec<SkuIdx>) {
        let taken = std::mem::take(&mut *self.hub_changed.lock().expect("changed lock"));
        for sku in taken {
            if let Some(t) = self.skus.get(sku.get() as usize).and_then(OnceLock::get) {
                // Release: pairs with the AcqRel swap in `update`; cleared
                // before the caller reads the tally, so a later update
                // queues the SKU again.
                t.hub_flag.store(false, Ordering::Release);
            }
            out.push(sku);
        }
    }

    /// SKUs whose tally changed since the journal last took them.
    pub fn take_journal_dirty(&self) -> Vec<SkuIdx> {
        let taken = std::mem::take(&mut *self.journal_dirty.lock().expect("dirty lock"));
        for sku in &taken {
            if let Some(t) = self.skus.get(sku.get() as usize).and_then(OnceLock::get) {
                // Release: as in `take_hub_changed`.
                t.journal_flag.store(false, Ordering::Release);
            }
        }
        taken
    }

    pub fn journal_dirty_is_empty(&self) -> bool {
        self.journal_dirty.lock().expect("dirty lock").is_empty()
    }

    /// What the journal writes for a SKU: the counters, and the sales
    /// buckets changed since the last record (`all`: every bucket).
    pub fn record(&self, sku: SkuIdx, all: bool) -> Option<Record> {
        let t = self.skus.get(sku.get() as usize)?.get()?;
        let mut tally = t.tally.lock().expect("tally lock");
        let (sales, dropped) = tally.sales.take_changed(all);
        let mut record = Record {
            counters: serde_json::to_string(&tally.counters).expect("counters serialise"),
            sales,
            channel_sales: Vec::new(),
            dropped: dropped.into_iter().map(|b| (None, b)).collect(),
        };
        for (idx, s) in &mut tally.channel_sales {
            let (sales, dropped) = s.take_changed(all);
            let idx = *idx;
            record
                .channel_sales
                .extend(sales.into_iter().map(|(b, u)| (idx, b, u)));
            record
                .dropped
                .extend(dropped.into_iter().map(|b| (Some(idx), b)));
        }
        Some(record)
    }

    /// One SKU's statistics against its live counts.
    pub fn sku(&self, live: Live<'_>, now_ms: u64) -> SkuStats {
        let mut s = SkuStats {
            id: live.id.to_string(),
            in_carts_units: u64::from(live.counts.held),
            sellout_eta_ms: (live.counts.available == 0).then_some(0),
            ..empty()
        };
        let Some(t) = self
            .skus
            .get(live.sku.get() as usize)
            .and_then(OnceLock::get)
        else {
            return s;
        };
        let mut tally = t.tally.lock().expect("tally lock");
        let (soon, live_holds) = tally.deadlines.read(now_ms);
        let c = &tally.counters;
        s.reserved_units = c.reserved_units;
        s.reserved_holds = c.reserved_holds;
        s.sold_units = c.sold_units;
        s.committed_holds = c.committed_holds;
        s.returned_units = c.returned_units;
        s.released_units = c.released_units;
        s.released_holds = c.released_holds;
        s.expired_units = c
            .reserved_units
            .saturating_sub(c.sold_units + c.returned_units + c.released_units)
            .saturating_sub(u64::from(live.counts.held));
        s.expired_holds = c
            .reserved_holds
            .saturating_sub(c.committed_holds + c.released_holds)
            .saturating_sub(live_holds);
        s.expiring_soon_units = soon.min(s.in_carts_units);
        s.revenue = c
            .revenue
            .iter()
            .map(|(currency, minor)| Money {
                currency: currency.clone(),
                minor: *minor,
            })
            .collect();
        s.sold_out_at_ms = c.sold_out_at_ms;
        s.first_activity_ms = c.first_activity_ms;
        let (sold, window) = rate(&tally.sales, c.first_activity_ms, now_ms);
        s.sold_in_window = sold;
        s.window_ms = window;
        s.sellout_eta_ms = eta(
            live.counts.available,
            sold,
            window,
            c.first_activity_ms,
            now_ms,
        );
        drop(tally);
        s
    }

    /// Statistics of `skus` (in this order) against the engine's counts
    /// now: what the hub pushes and the API answers.
    pub fn of_skus(&self, engine: &Engine, topic: &str, seq: u64, skus: &[SkuIdx]) -> StatsMsg {
        let snaps: Vec<_> = skus.iter().filter_map(|&k| engine.snapshot(k)).collect();
        let live: Vec<Live<'_>> = snaps
            .iter()
            .map(|s| Live {
                sku: s.sku,
                id: &s.id,
                counts: s.counts,
                channels: &s.channels,
            })
            .collect();
        self.topic(topic, seq, &live, engine.now_ms())
    }

    /// Statistics of a topic's SKUs (in topic order) at `now_ms`.
    pub fn topic(&self, topic: &str, seq: u64, members: &[Live<'_>], now_ms: u64) -> StatsMsg {
        let mut total = empty();
        let mut skus = Vec::with_capacity(members.len().min(STATS_SKUS_MAX));
        let mut first_bucket: Option<u64> = None;
        let now_bucket = now_ms / SALES_BUCKET_MS;
        let mut eta_max: Option<u64> = None;
        let mut all_sold_out = !members.is_empty();
        for live in members {
            let s = self.sku(*live, now_ms);
            add_into(&mut total, &s);
            match s.sellout_eta_ms {
                Some(0) => {}
                Some(eta) => eta_max = Some(eta_max.map_or(eta, |m| m.max(eta))),
                None => {}
            }
            all_sold_out &= live.counts.available == 0;
            if let Some(t) = self
                .skus
                .get(live.sku.get() as usize)
                .and_then(OnceLock::get)
            {
                let tally = t.tally.lock().expect("tally lock");
                if !tally.sales.units.is_empty() {
                    let f = tally.sales.first;
                    first_bucket = Some(first_bucket.map_or(f, |m: u64| m.min(f)));
                }
            }
            if skus.len() < STATS_SKUS_MAX {
                skus.push(s);
            }
        }
        // The show's rate is over the window since its first activity.
        let (sold, window) = (total.sold_in_window, {
            let since = total
                .first_activity_ms
                .map_or(0, |f| now_ms.saturating_sub(f));
            since.clamp(RATE_FLOOR_MS, RATE_WINDOW_MS)
        });
        total.sold_in_window = sold;
        total.window_ms = window;
        // The show sells out when the last of the products that sell does;
        // products that sell nothing are left out (they would say "never").
        total.sellout_eta_ms = if all_sold_out { Some(0) } else { eta_max };
        let start = first_bucket
            .unwrap_or(now_bucket)
            .max((now_bucket + 1).saturating_sub(SALES_BUCKETS_MAX as u64))
            .min(now_bucket);
        let mut sales = vec![0u32; (now_bucket - start + 1) as usize];
        let mut channels: Vec<ChannelStats> = Vec::new();
        for live in members {
            if let Some(t) = self
                .skus
                .get(live.sku.get() as usize)
                .and_then(OnceLock::get)
            {
                let tally = t.tally.lock().expect("tally lock");
                for (i, slot) in sales.iter_mut().enumerate() {
                    *slot = slot.saturating_add(tally.sales.get(start + i as u64));
                }
                for c in &tally.counters.channels {
                    let Some(id) = live.channels.get(usize::from(c.idx)).map(|k| &*k.id) else {
                        continue;
                    };
                    let at = match channels.iter().position(|x| x.id == id) {
                        Some(at) => at,
                        None => {
                            channels.push(ChannelStats {
                                id: id.to_string(),
                                reserved_units: 0,
                                reserved_holds: 0,
                                sold_units: 0,
                                committed_holds: 0,
                                sales: vec![0; sales.len()],
                            });
                            channels.len() - 1
                        }
                    };
                    let out = &mut channels[at];
                    out.reserved_units += c.reserved_units;
                    out.reserved_holds += c.reserved_holds;
                    out.sold_units += c.sold_units;
                    out.committed_holds += c.committed_holds;
                    if let Some((_, cs)) = tally.channel_sales.iter().find(|(i, _)| *i == c.idx) {
                        for (i, slot) in out.sales.iter_mut().enumerate() {
                            *slot = slot.saturating_add(cs.get(start + i as u64));
                        }
                    }
                }
            }
        }
        channels.sort_by(|a, b| a.id.cmp(&b.id));
        StatsMsg {
            topic: topic.to_string(),
            seq,
            ts_ms: now_ms,
            total,
            skus,
            bucket_ms: SALES_BUCKET_MS,
            sales_start_ms: start * SALES_BUCKET_MS,
            sales,
            channels,
        }
    }
}

fn empty() -> SkuStats {
    SkuStats {
        id: String::new(),
        reserved_units: 0,
        reserved_holds: 0,
        sold_units: 0,
        committed_holds: 0,
        returned_units: 0,
        released_units: 0,
        released_holds: 0,
        expired_units: 0,
        expired_holds: 0,
        in_carts_units: 0,
        expiring_soon_units: 0,
        revenue: Vec::new(),
        sold_in_window: 0,
        window_ms: RATE_FLOOR_MS,
        sellout_eta_ms: None,
        sold_out_at_ms: None,
        first_activity_ms: None,
    }
}

fn add_into(total: &mut SkuStats, s: &SkuStats) {
    total.reserved_units += s.reserved_units;
    total.reserved_holds += s.reserved_holds;
    total.sold_units += s.sold_units;
    total.committed_holds += s.committed_holds;
    total.returned_units += s.returned_units;
    total.released_units += s.released_units;
    total.released_holds += s.released_holds;
    total.expired_units += s.expired_units;
    total.expired_holds += s.expired_holds;
    total.in_carts_units += s.in_carts_units;
    total.expiring_soon_units += s.expiring_soon_units;
    total.sold_in_window += s.sold_in_window;
    for m in &s.revenue {
        match total.revenue.iter_mut().find(|t| t.currency == m.currency) {
            Some(t) => t.minor = t.minor.saturating_add(m.minor),
            None => total.revenue.push(m.clone()),
        }
    }
    total.revenue.sort_by(|a, b| a.currency.cmp(&b.currency));
    total.first_activity_ms = match (total.first_activity_ms, s.first_activity_ms) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    total.sold_out_at_ms = total.sold_out_at_ms.max(s.sold_out_at_ms);
}

/// (units sold in the rate window, the window's length): the window is the
/// last [`RATE_WINDOW_MS`], or the time since the first activity if
/// shorter, but never under [`RATE_FLOOR_MS`].
fn rate(sales: &Sales, first_activity_ms: Option<u64>, now_ms: u64) -> (u64, u64) {
    let since = first_activity_ms.map_or(0, |f| now_ms.saturating_sub(f));
    let window = since.clamp(RATE_FLOOR_MS, RATE_WINDOW_MS);
    let buckets = RATE_WINDOW_MS / SALES_BUCKET_MS;
    let from = (now_ms / SALES_BUCKET_MS + 1).saturating_sub(buckets);
    (sales.since(from), window)
}

/// Time to sell `available` at `sold` per `window`: 0 when nothing is
/// left; `None` with too little history or too few sales to say.
fn eta(
    available: u32,
    sold: u64,
    window_ms: u64,
    first_activity_ms: Option<u64>,
    now_ms: u64,
) -> Option<u64> {
    if available == 0 {
        return Some(0);
    }
    let history = first_activity_ms.map_or(0, |f| now_ms.saturating_sub(f));
    if history < ETA_HISTORY_MIN_MS || sold < ETA_UNITS_MIN {
        return None;
    }
    Some(u64::from(available).saturating_mul(window_ms) / sold)
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_engine::{BuyerId, HoldId, HoldLineInfo, HoldState};

    const T0: u64 = 1_767_225_600_000; // a multiple of every bucket width

    fn sku(i: u32) -> SkuIdx {
        SkuIdx::from(i)
    }

    fn hold(lines: &[(u32, u32)], deadline_ms: u64) -> HoldInfo {
        HoldInfo {
            hold: "0040000001000002".parse::<HoldId>().unwrap(),
            state: HoldState::Held,
            deadline_ms,
            latest_ms: deadline_ms,
            buyer: BuyerId(1),
            lines: lines
                .iter()
                .map(|&(s, qty)| HoldLineInfo {
                    sku: sku(s),
                    qty,
                    sold: 0,
                    channel: None,
                })
                .collect(),
        }
    }

    fn live(i: u32, available: u32, held: u32, sold: u32) -> Live<'static> {
        Live {
            sku: sku(i),
            id: "x",
            counts: Counts {
                available,
                held,
                sold,
            },
            channels: &[],
        }
    }

    fn nok(minor: u64) -> impl Fn(SkuIdx) -> Option<(String, u64)> {
        move |_| Some(("NOK".to_string(), minor))
    }

    #[test]
    fn flows_add_up_and_expired_is_what_is_left() {
        let stats = Stats::new(4);
        let d = T0 + 300_000;
        // Three holds of 2: one committed, one released, one still held.
        stats.reserved(&[(sku(0), 2, None)], d, T0);
        stats.reserved(&[(sku(0), 2, None)], d, T0);
        stats.reserved(&[(sku(0), 2, None)], d, T0);
        stats.committed(&hold(&[(0, 2)], d), &[2], nok(100), T0 + 1);
        stats.released(&hold(&[(0, 2)], d));
        let s = stats.sku(live(0, 4, 2, 2), T0 + 2);
        assert_eq!((s.reserved_units, s.reserved_holds), (6, 3));
        assert_eq!((s.sold_units, s.committed_holds), (2, 1));
        assert_eq!((s.released_units, s.released_holds), (2, 1));
        assert_eq!((s.expired_units, s.expired_holds), (0, 0));
        assert_eq!(s.in_carts_units, 2);
        assert_eq!(
            s.revenue,
            vec![Money {
                currency: "NOK".into(),
                minor: 200
            }]
        );
        // The held one expires: the engine's held drops to 0 and its
        // deadline passes; no hook ran.
        let s = stats.sku(live(0, 6, 0, 2), d + 1_000);
        assert_eq!((s.expired_units, s.expired_holds), (2, 1));
    }

    #[test]
    fn partial_commits_return_units_and_carts_count_per_sku() {
        let stats = Stats::new(4);
        let d = T0 + 60_000;
        stats.reserved(&[(sku(0), 3, None), (sku(1), 1, None)], d, T0);
        stats.committed(&hold(&[(0, 3), (1, 1)], d), &[1, 1], nok(50), T0);
        let a = stats.sku(live(0, 2, 0, 1), T0);
        assert_eq!((a.sold_units, a.returned_units, a.expired_units), (1, 2, 0));
        let b = stats.sku(live(1, 0, 0, 1), T0);
        assert_eq!((b.reserved_holds, b.committed_holds), (1, 1));
        assert_eq!(b.revenue[0].minor, 50);
    }

    #[test]
    fn expiring_soon_counts_deadlines_within_the_next_minute() {
        let stats = Stats::new(1);
        stats.reserved(&[(sku(0), 1, None)], T0 + 30_000, T0);
        stats.reserved(&[(sku(0), 2, None)], T0 + 59_000, T0);
        stats.reserved(&[(sku(0), 4, None)], T0 + 61_000, T0);
        let s = stats.sku(live(0, 0, 7, 0), T0);
        assert_eq!(s.expiring_soon_units, 3);
        // Extended beyond the minute: no longer soon.
        stats.extended(&hold(&[(0, 1)], T0 + 30_000), T0 + 120_000, T0);
        assert_eq!(stats.sku(live(0, 0, 7, 0), T0).expiring_soon_units, 2);
        // Later, the 61 s one comes within the minute.
        assert_eq!(
            stats.sku(live(0, 0, 7, 0), T0 + 10_000).expiring_soon_units,
            6
        );
    }

    #[test]
    fn deadline_histogram_is_bounded_and_keeps_counts_exact() {
        let stats = Stats::new(1);
        let n = DEADLINE_BUCKETS_MAX as u64 + 10;
        for i in 0..n {
            stats.reserved(&[(sku(0), 1, None)], T0 + 1_000 * (i + 1), T0);
        }
        {
            let t = stats.skus[0].get().unwrap();
            let mut tally = t.tally.lock().unwrap();
            assert_eq!(tally.deadlines.by_deadline.len(), DEADLINE_BUCKETS_MAX);
            assert_eq!(tally.deadlines.read(T0).1, n, "every hold still counted");
        }
        // Ending the holds past the bound finds them where they were merged.
        for i in DEADLINE_BUCKETS_MAX as u64..n {
            stats.released(&hold(&[(0, 1)], T0 + 1_000 * (i + 1)));
        }
        let t = stats.skus[0].get().unwrap();
        assert_eq!(
            t.tally.lock().unwrap().deadlines.read(T0).1,
            DEADLINE_BUCKETS_MAX as u64
        );
    }

    #[test]
    fn buckets_past_the_bound_are_recorded_for_deletion() {
        let stats = Stats::new(1);
        let d = T0 + 900_000;
        let mut on_channel = hold(&[(0, 1)], d);
        on_channel.lines[0].channel = Some(ChannelIdx::from(2));
        let at = |b: u64| T0 + b * SALES_BUCKET_MS;
        // Buckets 0 and 1 written, then a sale that pushes both out.
        stats.committed(&on_channel, &[1], nok(1), at(0));
        stats.committed(&on_channel, &[1], nok(1), at(1));
        let first = T0 / SALES_BUCKET_MS;
        let r = stats.record(sku(0), false).unwrap();
        assert!(r.dropped.is_empty());
        stats.committed(&on_channel, &[1], nok(1), at(SALES_BUCKETS_MAX as u64 + 1));
        let r = stats.record(sku(0), false).unwrap();
        let mut dropped = r.dropped.clone();
        dropped.sort_unstable();
        assert_eq!(
            dropped,
            vec![
                (None, first),
                (None, first + 1),
                (Some(2), first),
                (Some(2), first + 1)
            ]
        );
        assert!(
            stats.record(sku(0), false).unwrap().dropped.is_empty(),
            "taken"
        );
        // After a long silence a sale drops what the window held, at most
        // the bound per series.
        stats.committed(&on_channel, &[1], nok(1), at(10 * SALES_BUCKETS_MAX as u64));
        let r = stats.record(sku(0), false).unwrap();
        assert_eq!(r.dropped.len(), 2 * SALES_BUCKETS_MAX);
    }

    #[test]
    fn sales_buckets_are_bounded_and_keep_the_latest() {
        let mut s = Sales::default();
        let n = SALES_BUCKETS_MAX as u64 + 5;
        for i in 0..n {
            s.add(T0 + i * SALES_BUCKET_MS, 1);
        }
        assert_eq!(s.units.len(), SALES_BUCKETS_MAX);
        assert_eq!(s.first, T0 / SALES_BUCKET_MS + 5);
        s.add(T0, 7); // older than anything kept: joins the oldest
        assert_eq!(s.units[0], 8);
    }

    #[test]
    fn rate_and_eta_need_enough_data() {
        let stats = Stats::new(2);
        let d = T0 + 600_000;
        // Two units sold in the first 10 s: a rate over the 1 min floor,
        // no estimate yet.
        stats.reserved(&[(sku(0), 2, None)], d, T0);
        stats.committed(&hold(&[(0, 2)], d), &[2], nok(1), T0 + 5_000);
        let s = stats.sku(live(0, 98, 0, 2), T0 + 10_000);
        assert_eq!((s.sold_in_window, s.window_ms), (2, RATE_FLOOR_MS));
        assert_eq!(s.sellout_eta_ms, None, "too early and too few");
        // Two minutes in, 6 sold over 2 minutes: 3/min, 94 left: 31.3 min.
        stats.reserved(&[(sku(0), 4, None)], d, T0 + 100_000);
        stats.committed(&hold(&[(0, 4)], d), &[4], nok(1), T0 + 100_000);
        let s = stats.sku(live(0, 94, 0, 6), T0 + 120_000);
        assert_eq!((s.sold_in_window, s.window_ms), (6, 120_000));
        assert_eq!(s.sellout_eta_ms, Some(94 * 120_000 / 6));
        // After 10 quiet minutes the window holds nothing: no estimate.
        let s = stats.sku(live(0, 94, 0, 6), T0 + 720_000);
        assert_eq!((s.sold_in_window, s.window_ms), (0, RATE_WINDOW_MS));
        assert_eq!(s.sellout_eta_ms, None);
        // A product that sells nothing never has one; a sold out one is 0.
        assert_eq!(stats.sku(live(1, 5, 0, 0), T0).sellout_eta_ms, None);
        assert_eq!(stats.sku(live(1, 0, 0, 5), T0).sellout_eta_ms, Some(0));
    }

    #[test]
    fn a_topic_sums_its_skus_and_ignores_products_that_sell_nothing() {
        let stats = Stats::new(3);
        let d = T0 + 900_000;
        for (i, units) in [(0u32, 6u32), (1, 3)] {
            stats.reserved(&[(sku(i), units, None)], d, T0);
            stats.committed(&hold(&[(i, units)], d), &[units], nok(10), T0 + 20_000);
        }
        let members = [live(0, 6, 0, 6), live(1, 30, 0, 3), live(2, 50, 0, 0)];
        let now = T0 + 120_000;
        let t = stats.topic("show:x", 7, &members, now);
        assert_eq!(t.total.sold_units, 9);
        assert_eq!(t.total.revenue[0].minor, 90);
        assert_eq!(t.skus.len(), 3);
        // sku 0: 6 left at 3/min = 2 min; sku 1: 30 at 1.5/min = 20 min;
        // sku 2 sells nothing and is left out.
        assert_eq!(t.skus[0].sellout_eta_ms, Some(120_000));
        assert_eq!(t.skus[1].sellout_eta_ms, Some(1_200_000));
        assert_eq!(t.total.sellout_eta_ms, Some(1_200_000));
        // Sales per bucket from the first sale's bucket to now.
        assert_eq!(t.sales_start_ms, T0 + 20_000);
        assert_eq!(t.sales[0], 9);
        assert_eq!(
            t.sales.len() as u64,
            (now - (T0 + 20_000)) / SALES_BUCKET_MS + 1
        );
        assert_eq!(t.seq, 7);
    }

    #[test]
    fn records_carry_changed_buckets_and_restore_round_trips() {
        let stats = Stats::new(2);
        let d = T0 + 900_000;
        stats.reserved(&[(sku(0), 5, None)], d, T0);
        stats.committed(&hold(&[(0, 2)], d), &[2], nok(100), T0);
        // One unit sold on channel 1, a bucket later.
        let mut on_channel = hold(&[(0, 1)], d);
        on_channel.lines[0].channel = Some(ChannelIdx::from(1));
        let later = T0 + SALES_BUCKET_MS;
        stats.committed(&on_channel, &[1], nok(100), later);
        stats.sold_out(sku(0), T0 + 5);
        assert_eq!(stats.take_journal_dirty(), vec![sku(0)]);
        let r = stats.record(sku(0), false).unwrap();
        let (b0, b1) = (T0 / SALES_BUCKET_MS, later / SALES_BUCKET_MS);
        assert_eq!(r.sales, vec![(b0, 2), (b1, 1)]);
        assert_eq!(r.channel_sales, vec![(1, b1, 1)]);
        let taken = stats.record(sku(0), false).unwrap();
        assert!(
            taken.sales.is_empty() && taken.channel_sales.is_empty(),
            "taken"
        );
        let again = Stats::new(2);
        let saved = Saved {
            sku: "s0".into(),
            counters: serde_json::from_str(&r.counters).unwrap(),
            sales: r.sales.clone(),
            channel_sales: r.channel_sales.clone(),
        };
        again.restore(sku(0), &saved);
        let a = stats.sku(live(0, 3, 0, 2), T0 + 1);
        let b = again.sku(live(0, 3, 0, 2), T0 + 1);
        assert_eq!(a, b);
        assert_eq!(b.sold_out_at_ms, Some(T0 + 5));
        let full = again.record(sku(0), true).unwrap();
        assert_eq!(
            (full.sales, full.channel_sales),
            (r.sales, r.channel_sales),
            "a full record has every bucket, the channels' too"
        );
    }

    #[test]
    fn updates_mark_the_sku_once_until_taken() {
        let stats = Stats::new(2);
        for _ in 0..3 {
            stats.reserved(&[(sku(1), 1, None)], T0 + 1_000, T0);
        }
        let mut out = Vec::new();
        stats.take_hub_changed(&mut out);
        assert_eq!(out, vec![sku(1)]);
        out.clear();
        stats.take_hub_changed(&mut out);
        assert!(out.is_empty());
        stats.sold_out(sku(1), T0);
        stats.take_hub_changed(&mut out);
        assert_eq!(out, vec![sku(1)]);
        // Out of range: ignored, never a panic.
        stats.reserved(&[(sku(9), 1, None)], T0, T0);
    }
}
