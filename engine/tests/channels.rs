//! Sales channels: the contract (quota only its channel sells, caps,
//! unknown channels refused, moves between quota and pool, per-channel
//! counts that add up to the SKU's), then a model test: random sequences of
//! channel and pool reservations, commits, releases, expiries, quota moves
//! and cap changes checked step by step against a plain sequential model.

mod common;
use common::*;
use holdfast_engine::*;
use proptest::prelude::*;

fn counts(available: u32, held: u32, sold: u32) -> Counts {
    Counts {
        available,
        held,
        sold,
    }
}

fn channel(r: &Rig, sku: SkuIdx, id: &str) -> ChannelCounts {
    r.engine
        .snapshot(sku)
        .unwrap()
        .channels
        .into_iter()
        .find(|c| &*c.id == id)
        .expect("channel")
}

#[test]
fn a_quota_is_sold_only_by_its_channel() {
    let r = Rig::small();
    let tee = r.sku("tee", 5, settings(60_000, 0));
    r.engine.configure_channel(tee, "live", 3, None).unwrap();
    r.engine.configure_channel(tee, "web", 0, None).unwrap();
    assert_eq!(
        r.counts(tee),
        counts(5, 0, 0),
        "a quota is part of the total"
    );

    // The pool has 2: the web shop and a reservation without channel share them.
    let web = r
        .engine
        .reserve_on(tee, 2, BuyerId(1), None, false, Some("web"));
    assert!(web.is_ok());
    assert_eq!(
        r.engine.reserve(tee, 1, BuyerId(2), None, false),
        Err(ReserveError::SoldOut)
    );
    assert_eq!(
        r.engine
            .reserve_on(tee, 1, BuyerId(2), None, false, Some("web")),
        Err(ReserveError::SoldOut),
        "the live quota is not the web shop's"
    );
    let live = r
        .engine
        .reserve_on(tee, 3, BuyerId(3), None, false, Some("live"))
        .unwrap();
    assert_eq!(live.units, 3);
    assert_eq!(r.counts(tee), counts(0, 5, 0));
    let l = channel(&r, tee, "live");
    assert_eq!((l.quota, l.held, l.available), (counts(0, 3, 0), 3, 0));
    r.engine.commit(live.hold, Some(&[2]), None).unwrap();
    let l = channel(&r, tee, "live");
    assert_eq!((l.quota, l.held, l.sold), (counts(1, 0, 2), 0, 2));
    assert_eq!(r.counts(tee), counts(1, 2, 2));
}

/// A node of a multi-node deployment holds only the quota units and cap
/// headroom it leased: buckets grow and shrink by lease, within the same
/// guarantees (a quota sold only by its channel, a cap never passed).
#[test]
fn leased_buckets_grow_and_shrink_within_their_guarantees() {
    let r = Rig::small();
    let tee = r.sku("tee", 0, settings(60_000, 0));
    let live = r.engine.configure_channel(tee, "live", 0, Some(0)).unwrap();
    let pool = Bucket::Pool;
    let (quota, allowance) = (Bucket::Quota(live), Bucket::Allowance(live));
    assert_eq!(
        r.engine
            .reserve_on(tee, 1, BuyerId(1), None, false, Some("live")),
        Err(ReserveError::ChannelCapReached { remaining: 0 }),
        "no headroom leased yet"
    );
    r.engine.lease_bucket(tee, quota, 4, true).unwrap();
    r.engine.lease_bucket(tee, pool, 2, true).unwrap();
    r.engine.lease_bucket(tee, allowance, 5, true).unwrap();
    assert_eq!(r.counts(tee), counts(6, 0, 0), "quota units join the total");
    assert_eq!(
        r.engine.reserve(tee, 3, BuyerId(2), None, false),
        Err(ReserveError::NotEnoughAvailable { available: 2 }),
        "the quota is the channel's alone"
    );
    let held = r
        .engine
        .reserve_on(tee, 5, BuyerId(3), None, false, Some("live"))
        .unwrap();
    assert_eq!(held.units, 5);
    assert_eq!(
        r.engine
            .reserve_on(tee, 1, BuyerId(4), None, false, Some("live")),
        Err(ReserveError::ChannelCapReached { remaining: 0 }),
        "the leased headroom is the cap here"
    );
    assert_eq!(r.engine.bucket_counts(tee, quota).unwrap(), counts(0, 4, 0));
    assert_eq!(r.engine.bucket_counts(tee, pool).unwrap(), counts(1, 1, 0));
    assert_eq!(
        r.engine.bucket_counts(tee, allowance).unwrap(),
        counts(0, 5, 0)
    );
    // Only available units leave: the quota has none, the pool one.
    assert_eq!(
        r.engine.lease_bucket(tee, quota, 1, false),
        Err(CatalogError::NotEnoughAvailable { available: 0 })
    );
    r.engine.lease_bucket(tee, pool, 1, false).unwrap();
    r.engine.release(held.hold, None).unwrap();
    r.engine.lease_bucket(tee, quota, 4, false).unwrap();
    r.engine.lease_bucket(tee, allowance, 5, false).unwrap();
    assert_eq!(r.counts(tee), counts(1, 0, 0));
    let l = channel(&r, tee, "live");
    assert_eq!((l.quota, l.cap, l.available), (counts(0, 0, 0), Some(0), 0));
    // An uncapped channel has no allowance to lease.
    let web = r.engine.configure_channel(tee, "web", 0, None).unwrap();
    assert_eq!(
        r.engine.lease_bucket(tee, Bucket::Allowance(web), 1, true),
        Err(CatalogError::UnknownChannel)
    );
}

/// The cheap query the gateway's reservation path asks (no snapshot).
#[test]
fn has_channels_answers_without_a_snapshot() {
    let r = Rig::with_events();
    let tee = r.sku("tee", 5, settings(60_000, 0));
    let plain = r.sku("plain", 5, settings(60_000, 0));
    assert!(!r.engine.has_channels(tee));
    r.engine.configure_channel(tee, "live", 1, None).unwrap();
    assert!(r.engine.has_channels(tee));
    assert!(!r.engine.has_channels(plain));
}

#[test]
fn unknown_channels_are_refused_before_anything_changes() {
    let r = Rig::with_events();
    let tee = r.sku("tee", 5, settings(60_000, 0));
    let plain = r.sku("plain", 5, settings(60_000, 0));
    r.engine.configure_channel(tee, "live", 1, None).unwrap();
    r.drain_events();
    for (sku, channel) in [(tee, "tiktok"), (plain, "live")] {
        assert_eq!(
            r.engine
                .reserve_on(sku, 1, BuyerId(1), None, false, Some(channel)),
            Err(ReserveError::UnknownChannel)
        );
    }
    let cart = [Line { sku: tee, qty: 1 }, Line { sku: plain, qty: 1 }];
    assert_eq!(
        r.engine
            .reserve_cart_on(&cart, BuyerId(1), None, Some("live")),
        Err(ReserveError::UnknownChannel),
        "every sku of a cart must have the channel"
    );
    assert!(r.drain_events().is_empty());
    assert_eq!(r.counts(tee), counts(5, 0, 0));
    assert_eq!(
        r.engine.move_quota(tee, "tiktok", 1),
        Err(CatalogError::UnknownChannel)
    );
    assert_eq!(
        r.engine.configure_channel(tee, "bad id", 0, None),
        Err(CatalogError::InvalidChannelId)
    );
}

#[test]
fn a_cap_bounds_what_a_channel_holds_plus_sells() {
    let r = Rig::small();
    let tee = r.sku("tee", 10, settings(60_000, 0));
    r.engine.configure_channel(tee, "ig", 0, Some(3)).unwrap();
    let a = r
        .engine
        .reserve_on(tee, 2, BuyerId(1), None, false, Some("ig"))
        .unwrap();
    r.engine.commit(a.hold, None, None).unwrap();
    assert_eq!(
        r.engine
            .reserve_on(tee, 2, BuyerId(2), None, false, Some("ig")),
        Err(ReserveError::ChannelCapReached { remaining: 1 })
    );
    let b = r
        .engine
        .reserve_on(tee, 2, BuyerId(2), None, true, Some("ig"))
        .unwrap();
    assert_eq!(b.units, 1, "a partial fill stops at the cap");
    assert_eq!(channel(&r, tee, "ig").available, 0);
    assert_eq!(
        r.engine.configure_channel(tee, "ig", 0, Some(2)),
        Err(CatalogError::CapBelowUsed { used: 3 })
    );
    r.engine.release(b.hold, None).unwrap();
    r.engine.configure_channel(tee, "ig", 0, None).unwrap();
    let ig = channel(&r, tee, "ig");
    assert_eq!((ig.cap, ig.held, ig.sold, ig.available), (None, 0, 2, 8));
    // The pool without a channel is untouched by caps.
    assert!(r.engine.reserve(tee, 8, BuyerId(3), None, false).is_ok());
}

#[test]
fn channels_are_bounded_per_sku() {
    let r = Rig::small();
    let tee = r.sku("tee", 10, settings(60_000, 0));
    for i in 0..limits::CHANNELS_MAX {
        r.engine
            .configure_channel(tee, &format!("c{i}"), 0, None)
            .unwrap();
    }
    assert_eq!(
        r.engine.configure_channel(tee, "one-more", 0, None),
        Err(CatalogError::ChannelsFull)
    );
    assert_eq!(
        r.engine.snapshot(tee).unwrap().channels.len(),
        limits::CHANNELS_MAX
    );
}

#[test]
fn quota_moves_both_ways_and_never_past_what_is_unsold() {
    let r = Rig::with_events();
    let tee = r.sku("tee", 6, settings(60_000, 0));
    r.engine.configure_channel(tee, "live", 2, None).unwrap();
    let live = channel(&r, tee, "live").channel;
    let h = r
        .engine
        .reserve_on(tee, 2, BuyerId(1), None, false, Some("live"))
        .unwrap();
    assert_eq!(
        r.engine.move_quota(tee, "live", -1),
        Err(CatalogError::NotEnoughQuota { available: 0 }),
        "held quota units stay"
    );
    assert_eq!(
        r.engine.move_quota(tee, "live", 5),
        Err(CatalogError::NotEnoughAvailable { available: 4 })
    );
    assert_eq!(
        r.engine.move_quota(tee, "live", 0),
        Err(CatalogError::InvalidQty)
    );
    let after = r.engine.move_quota(tee, "live", 4).unwrap();
    assert_eq!(after.quota, counts(4, 2, 0));
    assert_eq!(
        r.engine.reserve(tee, 1, BuyerId(2), None, false),
        Err(ReserveError::SoldOut)
    );
    r.engine.release(h.hold, None).unwrap();
    let after = r.engine.move_quota(tee, "live", -6).unwrap();
    assert_eq!(after.quota, counts(0, 0, 0));
    assert_eq!(r.counts(tee), counts(6, 0, 0));
    // The same changes through `configure_channel`'s quota size.
    r.engine.configure_channel(tee, "live", 3, None).unwrap();
    assert_eq!(channel(&r, tee, "live").quota, counts(3, 0, 0));
    assert_eq!(
        r.engine.set_total(tee, 2),
        Err(CatalogError::TotalBelowCommitted { committed: 3 })
    );
    assert_eq!(r.engine.set_total(tee, 4).unwrap(), counts(4, 0, 0));

    let moves: Vec<(bool, u32)> = r
        .drain_events()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::QuotaMoved {
                channel,
                to_quota,
                qty,
                ..
            } if channel == live => Some((to_quota, qty)),
            _ => None,
        })
        .collect();
    assert_eq!(moves, [(true, 2), (true, 4), (false, 6), (true, 3)]);
}

#[test]
fn hold_events_name_the_channel_and_the_quota_units() {
    let r = Rig::with_events();
    let tee = r.sku("tee", 4, settings(60_000, 0));
    let live = r.engine.configure_channel(tee, "live", 1, None).unwrap();
    r.drain_events();
    let h = r
        .engine
        .reserve_on(tee, 3, BuyerId(1), None, false, Some("live"))
        .unwrap();
    r.engine.commit(h.hold, Some(&[2]), None).unwrap();
    let sources: Vec<Source> = r
        .drain_events()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Reserved { line, .. } | EventKind::Committed { line, .. } => {
                Some(line.source)
            }
            _ => None,
        })
        .collect();
    let source = Source {
        channel: Some(live),
        quota: 1,
    };
    assert_eq!(sources, [source, source]);
    assert_eq!(
        channel(&r, tee, "live").quota,
        counts(0, 0, 1),
        "sold from the quota first"
    );
    assert_eq!(r.counts(tee), counts(2, 0, 2));
}

#[test]
fn an_expired_channel_hold_goes_back_where_it_came_from() {
    let mut r = Rig::small();
    let tee = r.sku("tee", 4, settings(1_000, 0));
    r.engine.configure_channel(tee, "live", 2, Some(3)).unwrap();
    r.engine
        .reserve_on(tee, 3, BuyerId(1), None, false, Some("live"))
        .unwrap();
    r.advance(2_000);
    let live = channel(&r, tee, "live");
    assert_eq!(
        (live.quota, live.held, live.available),
        (counts(2, 0, 0), 0, 3)
    );
    assert_eq!(r.counts(tee), counts(4, 0, 0));
}

#[test]
fn a_request_id_remembers_the_channel() {
    let r = Rig::small();
    let tee = r.sku("tee", 4, settings(60_000, 0));
    r.engine.configure_channel(tee, "live", 1, None).unwrap();
    let req = Some(RequestId(77));
    let first = r
        .engine
        .reserve_on(tee, 1, BuyerId(1), req, false, Some("live"))
        .unwrap();
    let again = r
        .engine
        .reserve_on(tee, 1, BuyerId(1), req, false, Some("live"))
        .unwrap();
    assert!(again.replayed && again.hold == first.hold);
    assert_eq!(
        r.engine.reserve_on(tee, 1, BuyerId(1), req, false, None),
        Err(ReserveError::RequestMismatch),
        "the same lines on another channel are another request"
    );
}

// ---- model ----

const CHANNELS: [&str; 3] = ["live", "web", "ig"];

#[derive(Debug, Clone)]
enum Op {
    /// `channel`: an index into CHANNELS, 3 = an unknown one, None = pool.
    Reserve {
        channel: Option<usize>,
        qty: u32,
        partial: bool,
    },
    Commit {
        pick: usize,
        sold: u32,
    },
    Release {
        pick: usize,
    },
    Expire,
    Move {
        channel: usize,
        units: i64,
    },
    Cap {
        channel: usize,
        cap: Option<u32>,
    },
    Restock {
        qty: u32,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (prop::option::weighted(0.7, 0..4usize), 1..5u32, any::<bool>())
            .prop_map(|(channel, qty, partial)| Op::Reserve { channel, qty, partial }),
        2 => (any::<usize>(), 0..5u32).prop_map(|(pick, sold)| Op::Commit { pick, sold }),
        1 => any::<usize>().prop_map(|pick| Op::Release { pick }),
        1 => Just(Op::Expire),
        2 => (0..3usize, -6..7i64).prop_map(|(channel, units)| Op::Move { channel, units }),
        1 => (0..3usize, prop::option::of(0..12u32)).prop_map(|(channel, cap)| Op::Cap { channel, cap }),
        1 => (1..4u32).prop_map(|qty| Op::Restock { qty }),
    ]
}

/// One channel in the model.
#[derive(Debug, Clone, Copy, Default)]
struct MChannel {
    quota: Counts,
    held: u32,
    sold: u32,
    cap: Option<u32>,
}

#[derive(Debug, Clone, Copy)]
struct MHold {
    hold: HoldId,
    channel: Option<usize>,
    qty: u32,
    quota: u32,
}

#[derive(Debug, Default)]
struct Model {
    pool: Counts,
    channels: [MChannel; 3],
    live: Vec<MHold>,
}

impl Model {
    fn reserve(
        &mut self,
        channel: Option<usize>,
        qty: u32,
        partial: bool,
    ) -> Result<(u32, u32), ReserveError> {
        let min = if partial { 1 } else { qty };
        let Some(c) = channel else {
            let grant = qty.min(self.pool.available);
            if grant < min {
                return Err(short(self.pool.available));
            }
            self.pool.available -= grant;
            self.pool.held += grant;
            return Ok((grant, 0));
        };
        if c >= CHANNELS.len() {
            return Err(ReserveError::UnknownChannel);
        }
        let ch = &mut self.channels[c];
        let room = ch.cap.map_or(u32::MAX, |cap| cap - ch.held - ch.sold);
        let allowed = qty.min(room);
        if allowed < min {
            return Err(ReserveError::ChannelCapReached { remaining: room });
        }
        let quota = allowed.min(ch.quota.available);
        let need = min.saturating_sub(quota);
        let pool = (allowed - quota).min(self.pool.available);
        if pool < need {
            return Err(short(quota + self.pool.available));
        }
        ch.quota.available -= quota;
        ch.quota.held += quota;
        self.pool.available -= pool;
        self.pool.held += pool;
        ch.held += quota + pool;
        Ok((quota + pool, quota))
    }

    fn end(&mut self, h: MHold, sold: u32) {
        let pool_qty = h.qty - h.quota;
        let sold_quota = sold.min(h.quota);
        let sold_pool = sold - sold_quota;
        self.pool.held -= pool_qty;
        self.pool.sold += sold_pool;
        self.pool.available += pool_qty - sold_pool;
        if let Some(c) = h.channel {
            let ch = &mut self.channels[c];
            ch.quota.held -= h.quota;
            ch.quota.sold += sold_quota;
            ch.quota.available += h.quota - sold_quota;
            ch.held -= h.qty;
            ch.sold += sold;
        }
    }

    fn sku(&self) -> Counts {
        let mut c = self.pool;
        for ch in &self.channels {
            c.available += ch.quota.available;
            c.held += ch.quota.held;
            c.sold += ch.quota.sold;
        }
        c
    }
}

fn short(available: u32) -> ReserveError {
    if available == 0 {
        ReserveError::SoldOut
    } else {
        ReserveError::NotEnoughAvailable { available }
    }
}

fn run(ops: Vec<Op>) {
    // Small tables: a case is built and dropped hundreds of times.
    let mut r = Rig::new(EngineConfig {
        skus_max: 4,
        holds_max: 256,
        buyer_entries_max: 256,
        request_entries_max: 256,
        ..EngineConfig::default()
    });
    let tee = r.sku("tee", 12, settings(1_000, 0));
    let mut m = Model {
        pool: counts(12, 0, 0),
        ..Model::default()
    };
    for (i, id) in CHANNELS.iter().enumerate() {
        r.engine.configure_channel(tee, id, i as u32, None).unwrap();
        m.pool.available -= i as u32;
        m.channels[i].quota.available = i as u32;
    }
    let mut buyer = 0;
    for op in ops {
        match op {
            Op::Reserve {
                channel,
                qty,
                partial,
            } => {
                buyer += 1;
                let name = channel.map(|c| CHANNELS.get(c).copied().unwrap_or("tiktok"));
                let got = r
                    .engine
                    .reserve_on(tee, qty, BuyerId(buyer), None, partial, name);
                let want = m.reserve(channel, qty, partial);
                assert_eq!(got.map(|g| g.units), want.map(|w| w.0), "{op:?}");
                if let (Ok(g), Ok((units, quota))) = (got, want) {
                    m.live.push(MHold {
                        hold: g.hold,
                        channel,
                        qty: units,
                        quota,
                    });
                }
            }
            Op::Commit { pick, sold } if !m.live.is_empty() => {
                let h = m.live.remove(pick % m.live.len());
                let sold = sold.min(h.qty);
                if sold == 0 {
                    r.engine.commit(h.hold, None, None).unwrap();
                    m.end(h, h.qty);
                } else {
                    r.engine.commit(h.hold, Some(&[sold]), None).unwrap();
                    m.end(h, sold);
                }
            }
            Op::Release { pick } if !m.live.is_empty() => {
                let h = m.live.remove(pick % m.live.len());
                r.engine.release(h.hold, None).unwrap();
                m.end(h, 0);
            }
            Op::Commit { .. } | Op::Release { .. } => {}
            Op::Expire => {
                r.advance(2_000);
                for h in std::mem::take(&mut m.live) {
                    m.end(h, 0);
                }
            }
            Op::Move { channel, units } => {
                let got = r
                    .engine
                    .move_quota(tee, CHANNELS[channel], units)
                    .map(|c| c.quota);
                let q = &mut m.channels[channel].quota;
                let want = if units == 0 {
                    Err(CatalogError::InvalidQty)
                } else if units > 0 && m.pool.available < units as u32 {
                    Err(CatalogError::NotEnoughAvailable {
                        available: m.pool.available,
                    })
                } else if units < 0 && q.available < units.unsigned_abs() as u32 {
                    Err(CatalogError::NotEnoughQuota {
                        available: q.available,
                    })
                } else {
                    let n = units.unsigned_abs() as u32;
                    if units > 0 {
                        m.pool.available -= n;
                        q.available += n;
                    } else {
                        q.available -= n;
                        m.pool.available += n;
                    }
                    Ok(*q)
                };
                assert_eq!(got, want, "{op:?}");
            }
            Op::Cap { channel, cap } => {
                let quota = m.channels[channel].quota.total();
                let got = r
                    .engine
                    .configure_channel(tee, CHANNELS[channel], quota, cap);
                let ch = &mut m.channels[channel];
                let used = ch.held + ch.sold;
                if cap.is_some_and(|c| c < used) {
                    assert_eq!(got, Err(CatalogError::CapBelowUsed { used }), "{op:?}");
                } else {
                    assert!(got.is_ok(), "{op:?}");
                    ch.cap = cap;
                }
            }
            Op::Restock { qty } => {
                r.engine.restock(tee, qty).unwrap();
                m.pool.available += qty;
            }
        }
        let snap = r.engine.snapshot(tee).unwrap();
        assert_eq!(snap.counts, m.sku(), "sku counts after {op:?}");
        let mut held = 0;
        for (ch, mc) in snap.channels.iter().zip(&m.channels) {
            assert_eq!(
                (ch.quota, ch.held, ch.sold, ch.cap),
                (mc.quota, mc.held, mc.sold, mc.cap),
                "{} after {op:?}",
                ch.id
            );
            let room = mc.cap.map_or(u32::MAX, |c| c - mc.held - mc.sold);
            assert_eq!(
                ch.available,
                room.min(mc.quota.available + m.pool.available)
            );
            held += ch.held;
        }
        let pool_held: u32 = m
            .live
            .iter()
            .filter(|h| h.channel.is_none())
            .map(|h| h.qty)
            .sum();
        assert_eq!(
            held + pool_held,
            snap.counts.held,
            "channels add up to the sku"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, max_shrink_iters: 2000, ..ProptestConfig::default() })]

    #[test]
    fn channels_agree_with_the_model(ops in prop::collection::vec(op(), 1..60)) {
        run(ops);
    }
}

#[test]
fn channels_and_channel_holds_survive_save_and_restore() {
    let r = Rig::small();
    let tee = r.sku("tee", 10, settings(60_000, 0));
    r.engine.configure_channel(tee, "live", 3, Some(6)).unwrap();
    r.engine.configure_channel(tee, "web", 0, None).unwrap();
    let live = r
        .engine
        .reserve_on(tee, 4, BuyerId(1), None, false, Some("live"))
        .unwrap();
    let sold = r
        .engine
        .reserve_on(tee, 2, BuyerId(2), None, false, Some("web"))
        .unwrap();
    r.engine.commit(sold.hold, None, None).unwrap();
    let saved = r.engine.save();
    assert_eq!(saved.holds[0].lines[0].channel.as_deref(), Some("live"));
    assert_eq!(saved.holds[0].lines[0].quota, 3);

    let (engine, _expirer) =
        Engine::restore(EngineConfig::default(), r.clock.clone(), &saved).expect("consistent");
    assert_eq!(engine.snapshots(), r.engine.snapshots());
    // The restored hold ends back where its units came from.
    engine.release(live.hold, None).unwrap();
    let snap = engine.snapshot(tee).unwrap();
    assert_eq!(snap.counts, counts(8, 0, 2));
    assert_eq!(
        (snap.channels[0].quota, snap.channels[0].held),
        (counts(3, 0, 0), 0)
    );

    let mut bad = saved.clone();
    bad.holds[0].lines[0].channel = Some("tiktok".into());
    let err = Engine::restore(EngineConfig::default(), r.clock.clone(), &bad).unwrap_err();
    assert!(
        err.problems.iter().any(|p| p.contains("unknown channel")),
        "{err}"
    );
    let mut bad = saved;
    bad.skus[0].channels[0].held = 1;
    let err = Engine::restore(EngineConfig::default(), r.clock.clone(), &bad).unwrap_err();
    assert!(
        err.problems.iter().any(|p| p.contains("channel live")),
        "{err}"
    );
}
