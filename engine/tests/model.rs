//! Model-based test: random sequences of every operation (time advancing
//! included) run against the engine and against a plain sequential model of
//! the contract; every answer and every count must agree, and the event
//! stream replayed from zero must reproduce the final counts.

mod common;
use common::*;
use holdfast_engine::*;
use proptest::prelude::*;
use std::collections::{HashMap, HashSet};

const SKUS: usize = 3;
const TICK_MS: u64 = 10;

#[derive(Debug, Clone)]
enum Op {
    Reserve {
        sku: usize,
        qty: u32,
        buyer: u64,
        request: Option<u64>,
        partial: bool,
    },
    Cart {
        lines: Vec<(usize, u32)>,
        buyer: u64,
        request: Option<u64>,
    },
    Commit {
        pick: usize,
        sold: Option<Vec<u32>>,
        request: Option<u64>,
    },
    Release {
        pick: usize,
        request: Option<u64>,
    },
    Extend {
        pick: usize,
        by_s: u64,
        request: Option<u64>,
    },
    Lookup {
        pick: usize,
    },
    Restock {
        sku: usize,
        qty: u32,
    },
    Adjust {
        sku: usize,
        qty: u32,
    },
    SetTotal {
        sku: usize,
        total: u32,
    },
    Window {
        sku: usize,
        window: u8,
        at_s: u64,
    },
    Limit {
        sku: usize,
        limit: u32,
        ttl_s: u64,
    },
    Advance {
        ms: u64,
    },
    /// `confirm_reservation` of a request id's hold (or of some other hold).
    Confirm {
        request: u64,
        other: Option<usize>,
    },
    /// `undo_reservation` of a request id's hold (or of some other hold).
    Undo {
        request: Option<u64>,
        other: Option<usize>,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let request = proptest::option::weighted(0.3, 0u64..6);
    prop_oneof![
        6 => (0..SKUS, 0u32..5, 0u64..3, request.clone(), any::<bool>())
            .prop_map(|(sku, qty, buyer, request, partial)| Op::Reserve { sku, qty, buyer, request, partial }),
        2 => (proptest::collection::vec((0..SKUS, 0u32..4), 0..4), 0u64..3, request.clone())
            .prop_map(|(lines, buyer, request)| Op::Cart { lines, buyer, request }),
        4 => (any::<usize>(), proptest::option::weighted(0.3, proptest::collection::vec(0u32..4, 1..3)), request.clone())
            .prop_map(|(pick, sold, request)| Op::Commit { pick, sold, request }),
        2 => (any::<usize>(), request.clone()).prop_map(|(pick, request)| Op::Release { pick, request }),
        1 => (any::<usize>(), 1u64..25, request).prop_map(|(pick, by_s, request)| Op::Extend { pick, by_s, request }),
        1 => any::<usize>().prop_map(|pick| Op::Lookup { pick }),
        1 => (0..SKUS, 0u32..4).prop_map(|(sku, qty)| Op::Restock { sku, qty }),
        1 => (0..SKUS, 0u32..4).prop_map(|(sku, qty)| Op::Adjust { sku, qty }),
        1 => (0..SKUS, 0u32..12).prop_map(|(sku, total)| Op::SetTotal { sku, total }),
        1 => (0..SKUS, 0u8..4, 0u64..30).prop_map(|(sku, window, at_s)| Op::Window { sku, window, at_s }),
        1 => (0..SKUS, 0u32..4, 5u64..40).prop_map(|(sku, limit, ttl_s)| Op::Limit { sku, limit, ttl_s }),
        3 => prop_oneof![Just(5u64), 0u64..40_000, Just(1_000), Just(10_000)].prop_map(|ms| Op::Advance { ms }),
        1 => (0u64..6, proptest::option::weighted(0.2, any::<usize>()))
            .prop_map(|(request, other)| Op::Confirm { request, other }),
        1 => (proptest::option::weighted(0.8, 0u64..6), proptest::option::weighted(0.2, any::<usize>()))
            .prop_map(|(request, other)| Op::Undo { request, other }),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MState {
    Held,
    Committed,
    Released,
    Expired,
}

#[derive(Debug, Clone)]
struct MHold {
    lines: Vec<(usize, u32, bool)>, // sku, qty, counted against the buyer limit
    buyer: u64,
    deadline: u64,
    latest: u64,
    state: MState,
}

#[derive(Debug, Clone, Copy, Default)]
struct MSku {
    available: u32,
    held: u32,
    sold: u32,
    limit: u32,
    ttl: u64,
    lifetime: u64,
    window: Option<SaleWindow>,
}

/// What a request id remembers: its parameters and its first answer.
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    Reserve(Result<(HoldId, u64, u32), ReserveError>),
    Commit(Result<(u32, u32), HoldError>),
    Release(Result<(), HoldError>),
    Extend(Result<u64, HoldError>),
}

struct Model {
    now: u64,
    skus: [MSku; SKUS],
    holds: HashMap<HoldId, MHold>,
    buyer_units: HashMap<(usize, u64), u32>,
    requests: HashMap<u64, (String, Answer)>,
    /// Request ids whose reservation answer is still provisional (the
    /// engine runs with `provisional_reservations`).
    provisional: HashSet<u64>,
}

impl Model {
    fn expire(&mut self, id: HoldId) {
        let h = self.holds.get_mut(&id).unwrap();
        h.state = MState::Expired;
        let (lines, buyer) = (h.lines.clone(), h.buyer);
        for (sku, qty, counted) in lines {
            self.skus[sku].held -= qty;
            self.skus[sku].available += qty;
            if counted {
                *self.buyer_units.get_mut(&(sku, buyer)).unwrap() -= qty;
            }
        }
    }

    /// A live hold past its deadline ends as expired when touched.
    fn touch(&mut self, id: HoldId) -> Result<(), HoldError> {
        let Some(h) = self.holds.get(&id) else {
            return Err(HoldError::HoldNotFound);
        };
        match h.state {
            MState::Held if self.now >= h.deadline => {
                self.expire(id);
                Err(HoldError::HoldExpired)
            }
            MState::Held => Ok(()),
            MState::Committed => Err(HoldError::AlreadyCommitted),
            MState::Released => Err(HoldError::AlreadyReleased),
            MState::Expired => Err(HoldError::HoldExpired),
        }
    }

    /// After an expirer run: a hold whose deadline tick has fully elapsed
    /// must have expired; one whose deadline is still ahead must not have;
    /// one in between (deadline passed within the last tick or so, or
    /// extended after it was filed in the wheel) may have, and the model
    /// follows the engine there.
    fn run_expirer(&mut self, engine: &Engine) {
        let now_tick = self.now / TICK_MS;
        let live: Vec<(HoldId, u64)> = self
            .holds
            .iter()
            .filter(|(_, h)| h.state == MState::Held)
            .map(|(id, h)| (*id, h.deadline))
            .collect();
        for (id, deadline) in live {
            let expired = engine.hold(id).unwrap().state == HoldState::Expired;
            if deadline.div_ceil(TICK_MS) < now_tick {
                assert!(
                    expired,
                    "{id} is due (deadline {deadline}) and must have expired"
                );
            } else if deadline > self.now {
                assert!(!expired, "{id} expired before its deadline {deadline}");
            }
            if expired {
                self.expire(id);
            }
        }
    }

    /// Releases a hold as `release(id, None)` does; true if it released it.
    fn release(&mut self, id: HoldId) -> Result<(), HoldError> {
        self.touch(id).map(|()| {
            let h = self.holds.get_mut(&id).unwrap();
            h.state = MState::Released;
            let (lines, buyer) = (h.lines.clone(), h.buyer);
            for (sku, qty, counted) in lines {
                self.skus[sku].held -= qty;
                self.skus[sku].available += qty;
                if counted {
                    *self.buyer_units.get_mut(&(sku, buyer)).unwrap() -= qty;
                }
            }
        })
    }

    /// The hold a request id's remembered reservation names, if any.
    fn reserved_by(&self, request: u64) -> Option<HoldId> {
        match self.requests.get(&request) {
            Some((_, Answer::Reserve(Ok((hold, _, _))))) => Some(*hold),
            _ => None,
        }
    }

    /// Replays a remembered answer, or says the id was used differently.
    fn replay(&self, request: Option<u64>, params: &str) -> Option<Result<Answer, ()>> {
        let (seen, answer) = self.requests.get(&request?)?;
        Some(if seen == params {
            Ok(answer.clone())
        } else {
            Err(())
        })
    }
}

fn window_of(w: u8, at: u64) -> SaleWindow {
    match w {
        0 => SaleWindow::Open,
        1 => SaleWindow::Paused,
        2 => SaleWindow::Closed,
        _ => SaleWindow::Scheduled { opens_at_ms: at },
    }
}

fn run(ops: Vec<Op>) {
    let mut rig = Rig::new(EngineConfig {
        events_max: 1 << 14,
        events_headroom: 64,
        provisional_reservations: true,
        ..EngineConfig::default()
    });
    let mut m = Model {
        now: T0,
        skus: [MSku::default(); SKUS],
        holds: HashMap::new(),
        buyer_units: HashMap::new(),
        requests: HashMap::new(),
        provisional: HashSet::new(),
    };
    let mut idx = Vec::new();
    for i in 0..SKUS {
        let s = settings(10_000, if i == 1 { 2 } else { 0 });
        idx.push(rig.sku(&format!("sku{i}"), 5, s));
        m.skus[i] = MSku {
            available: 5,
            limit: s.buyer_limit,
            ttl: 10_000,
            lifetime: 30_000,
            window: Some(SaleWindow::Open),
            ..MSku::default()
        };
    }
    let mut issued: Vec<HoldId> = Vec::new();
    let pick = |issued: &Vec<HoldId>, p: usize| -> Option<HoldId> {
        (!issued.is_empty()).then(|| issued[p % issued.len()])
    };

    for op in ops {
        match op {
            Op::Reserve {
                sku,
                qty,
                buyer,
                request,
                partial,
            } => {
                let lines = vec![(sku, qty)];
                let got = rig.engine.reserve(
                    idx[sku],
                    qty,
                    BuyerId(buyer),
                    request.map(RequestId),
                    partial,
                );
                let want = model_reserve(&mut m, &lines, buyer, request, partial);
                check_reserve(&mut m, got, want, &mut issued);
            }
            Op::Cart {
                lines,
                buyer,
                request,
            } => {
                let elines: Vec<Line> = lines
                    .iter()
                    .map(|&(s, q)| Line {
                        sku: idx[s],
                        qty: q,
                    })
                    .collect();
                let got = rig
                    .engine
                    .reserve_cart(&elines, BuyerId(buyer), request.map(RequestId));
                let want = model_reserve(&mut m, &lines, buyer, request, false);
                check_reserve(&mut m, got, want, &mut issued);
            }
            Op::Commit {
                pick: p,
                sold,
                request,
            } => {
                let Some(id) = pick(&issued, p) else { continue };
                let got = rig
                    .engine
                    .commit(id, sold.as_deref(), request.map(RequestId));
                let want = model_commit(&mut m, id, sold.as_deref(), request);
                assert_eq!(
                    got.map(|s| (s.sold, s.returned, s.replayed)),
                    want,
                    "commit {id}"
                );
            }
            Op::Release { pick: p, request } => {
                let Some(id) = pick(&issued, p) else { continue };
                let got = rig.engine.release(id, request.map(RequestId));
                let params = format!("release {id}");
                let want = match m.replay(request, &params) {
                    Some(Ok(Answer::Release(a))) => a,
                    Some(_) => Err(HoldError::RequestMismatch),
                    None => {
                        let a = m.release(id);
                        if let Some(r) = request {
                            m.requests.insert(r, (params, Answer::Release(a)));
                        }
                        a
                    }
                };
                assert_eq!(got, want, "release {id}");
            }
            Op::Extend {
                pick: p,
                by_s,
                request,
            } => {
                let Some(id) = pick(&issued, p) else { continue };
                let by = by_s * 1000;
                let got = rig.engine.extend(id, by, request.map(RequestId));
                let params = format!("extend {id} {by}");
                let want = match m.replay(request, &params) {
                    Some(Ok(Answer::Extend(a))) => a,
                    Some(_) => Err(HoldError::RequestMismatch),
                    None => {
                        let a = m.touch(id).and_then(|()| {
                            let h = m.holds.get_mut(&id).unwrap();
                            if h.deadline + by > h.latest {
                                return Err(HoldError::ExtendLimit);
                            }
                            h.deadline += by;
                            Ok(h.deadline)
                        });
                        if let Some(r) = request {
                            m.requests.insert(r, (params, Answer::Extend(a)));
                        }
                        a
                    }
                };
                assert_eq!(got, want, "extend {id}");
            }
            Op::Lookup { pick: p } => {
                let Some(id) = pick(&issued, p) else { continue };
                let info = rig.engine.hold(id).unwrap();
                let h = &m.holds[&id];
                let state = match h.state {
                    MState::Held => HoldState::Held,
                    MState::Committed => HoldState::Committed,
                    MState::Released => HoldState::Released,
                    MState::Expired => HoldState::Expired,
                };
                assert_eq!(
                    (info.state, info.deadline_ms, info.lines.len()),
                    (state, h.deadline, h.lines.len())
                );
            }
            Op::Restock { sku, qty } => {
                let got = rig.engine.restock(idx[sku], qty);
                if qty == 0 {
                    assert_eq!(got, Err(CatalogError::InvalidQty));
                } else {
                    m.skus[sku].available += qty;
                    assert!(got.is_ok());
                }
            }
            Op::Adjust { sku, qty } => {
                let got = rig.engine.adjust_down(idx[sku], qty);
                let available = m.skus[sku].available;
                if qty == 0 {
                    assert_eq!(got, Err(CatalogError::InvalidQty));
                } else if qty > available {
                    assert_eq!(got, Err(CatalogError::NotEnoughAvailable { available }));
                } else {
                    m.skus[sku].available -= qty;
                    assert!(got.is_ok());
                }
            }
            Op::SetTotal { sku, total } => {
                let got = rig.engine.set_total(idx[sku], total);
                let s = &mut m.skus[sku];
                if total < s.held + s.sold {
                    let committed = s.held + s.sold;
                    assert_eq!(got, Err(CatalogError::TotalBelowCommitted { committed }));
                } else {
                    s.available = total - s.held - s.sold;
                    assert!(got.is_ok());
                }
            }
            Op::Window { sku, window, at_s } => {
                let w = window_of(window, m.now + at_s * 1000);
                rig.engine.set_window(idx[sku], w).unwrap();
                m.skus[sku].window = Some(w);
            }
            Op::Limit { sku, limit, ttl_s } => {
                let s = SkuSettings {
                    buyer_limit: limit,
                    hold_ttl_ms: ttl_s * 1000,
                    hold_lifetime_max_ms: ttl_s * 3000,
                    order_units_max: 10,
                };
                rig.engine.update_settings(idx[sku], s).unwrap();
                m.skus[sku].limit = limit;
                m.skus[sku].ttl = s.hold_ttl_ms;
                m.skus[sku].lifetime = s.hold_lifetime_max_ms;
            }
            Op::Advance { ms } => {
                m.now += ms;
                rig.advance(ms);
                m.run_expirer(&rig.engine);
            }
            Op::Confirm { request, other } => {
                let Some(hold) = other
                    .and_then(|p| pick(&issued, p))
                    .or_else(|| m.reserved_by(request))
                else {
                    continue;
                };
                let got = rig.engine.confirm_reservation(RequestId(request), hold);
                let want = m.reserved_by(request) == Some(hold);
                if want {
                    m.provisional.remove(&request);
                }
                assert_eq!(got, want, "confirm {request} {hold}");
            }
            Op::Undo { request, other } => {
                let Some(hold) = other
                    .and_then(|p| pick(&issued, p))
                    .or_else(|| request.and_then(|r| m.reserved_by(r)))
                else {
                    continue;
                };
                let got = rig.engine.undo_reservation(hold, request.map(RequestId));
                let mine = request.filter(|&r| m.reserved_by(r) == Some(hold));
                let want = match mine {
                    // Confirmed: acknowledged, nothing changes.
                    Some(r) if !m.provisional.contains(&r) => false,
                    // Withdrawn: released, forgotten.
                    Some(r) => {
                        let _ = m.release(hold);
                        m.requests.remove(&r);
                        m.provisional.remove(&r);
                        true
                    }
                    // Not this request's hold: released as without an id.
                    None => {
                        let _ = m.release(hold);
                        true
                    }
                };
                assert_eq!(got, want, "undo {hold} {request:?}");
            }
        }
        for (i, &sku) in idx.iter().enumerate() {
            let c = rig.counts(sku);
            let s = m.skus[i];
            assert_eq!(
                (c.available, c.held, c.sold),
                (s.available, s.held, s.sold),
                "sku{i} counts"
            );
            for buyer in 0..3 {
                let want = m.buyer_units.get(&(i, buyer)).copied().unwrap_or(0);
                assert_eq!(
                    rig.engine.buyer_units(sku, BuyerId(buyer)),
                    want,
                    "sku{i} buyer {buyer}"
                );
            }
        }
    }

    // The event stream alone reproduces the final counts, gaplessly
    // numbered; and a SKU's sold-out and back-in-stock events come exactly
    // when its counts enter and leave `Counts::sold_out`, right after the
    // event that caused it.
    let events = rig.drain_events();
    let mut replay = [Counts::default(); SKUS];
    // The transition event the previous event owes: (sku, sold out).
    let mut owed: Option<(usize, bool)> = None;
    // A SKU's first units come with its creation: no transition.
    let mut creating = [false; SKUS];
    for (n, e) in events.iter().enumerate() {
        assert_eq!(e.seq, n as u64 + 1);
        let c = |s: SkuIdx| s.get() as usize;
        match e.kind {
            EventKind::SoldOut { sku } => {
                assert_eq!(owed.take(), Some((c(sku), true)), "sold_out at {}", e.seq);
                continue;
            }
            EventKind::BackInStock { sku } => {
                assert_eq!(
                    owed.take(),
                    Some((c(sku), false)),
                    "back_in_stock at {}",
                    e.seq
                );
                continue;
            }
            _ => assert_eq!(owed, None, "a transition event is missing before {}", e.seq),
        }
        let sku = e.kind.sku().map(c);
        let before = sku.map(|k| replay[k].sold_out());
        match e.kind {
            EventKind::SkuCreated { sku, .. } => creating[c(sku)] = true,
            EventKind::WindowChanged { sku, .. } => creating[c(sku)] = false,
            EventKind::Restocked { sku, qty } => replay[c(sku)].available += qty,
            EventKind::Adjusted { sku, qty } => replay[c(sku)].available -= qty,
            EventKind::Reserved { line, qty, .. } => {
                replay[c(line.sku)].available -= qty;
                replay[c(line.sku)].held += qty;
            }
            EventKind::Committed {
                line,
                sold,
                returned,
            } => {
                let r = &mut replay[c(line.sku)];
                r.held -= sold + returned;
                r.sold += sold;
                r.available += returned;
            }
            EventKind::Released { line, qty } | EventKind::Expired { line, qty } => {
                replay[c(line.sku)].held -= qty;
                replay[c(line.sku)].available += qty;
            }
            _ => {}
        }
        if let (Some(k), Some(before)) = (sku, before) {
            let after = replay[k].sold_out();
            if before != after && !creating[k] {
                owed = Some((k, after));
            }
        }
    }
    assert_eq!(owed, None, "the last transition event is missing");
    for (i, &sku) in idx.iter().enumerate() {
        assert_eq!(replay[i], rig.counts(sku), "event replay of sku{i}");
    }
}

/// The model's answer to a reservation.
enum Expect {
    /// A new hold (the engine picks its id) with these lines.
    Fresh {
        hold: MHold,
        units: u32,
        request: Option<u64>,
        params: String,
    },
    /// The remembered first answer.
    Replayed {
        hold: HoldId,
        deadline: u64,
        units: u32,
        provisional: bool,
    },
}

fn model_reserve(
    m: &mut Model,
    lines: &[(usize, u32)],
    buyer: u64,
    request: Option<u64>,
    partial: bool,
) -> Result<Expect, ReserveError> {
    // Checks made before the request id is looked at, in this order.
    if lines.is_empty() {
        return Err(ReserveError::CartSize);
    }
    for (i, &(sku, qty)) in lines.iter().enumerate() {
        if qty == 0 {
            return Err(ReserveError::InvalidQty);
        }
        if qty > 10 {
            return Err(ReserveError::QtyAboveMax { max: 10 });
        }
        if lines[..i].iter().any(|p| p.0 == sku) {
            return Err(ReserveError::DuplicateSku);
        }
    }
    let params = format!("reserve {lines:?} {buyer} {partial}");
    match m.replay(request, &params) {
        Some(Ok(Answer::Reserve(a))) => {
            let provisional = m.provisional.contains(&request.unwrap());
            return a.map(|(hold, deadline, units)| Expect::Replayed {
                hold,
                deadline,
                units,
                provisional,
            });
        }
        Some(_) => return Err(ReserveError::RequestMismatch),
        None => {}
    }
    let result = (|| {
        if lines
            .iter()
            .any(|l| !m.skus[l.0].window.unwrap().is_open_at(m.now))
        {
            return Err(ReserveError::NotOpen);
        }
        let mut grants = Vec::new();
        for &(sku, qty) in lines {
            let s = m.skus[sku];
            let min = if partial { 1 } else { qty };
            let mut want = qty;
            let counted = s.limit > 0;
            if counted {
                let have = m.buyer_units.get(&(sku, buyer)).copied().unwrap_or(0);
                let room = s.limit.saturating_sub(have);
                if room.min(qty) < min {
                    return Err(ReserveError::LimitExceeded);
                }
                want = room.min(qty);
            }
            let grant = want.min(s.available);
            if grant < min.min(want) {
                return Err(if s.available == 0 {
                    ReserveError::SoldOut
                } else {
                    ReserveError::NotEnoughAvailable {
                        available: s.available,
                    }
                });
            }
            grants.push((sku, grant, counted));
        }
        Ok(grants)
    })();
    let answer = result.map(|grants| {
        let ttl = grants.iter().map(|g| m.skus[g.0].ttl).min().unwrap();
        let life = grants.iter().map(|g| m.skus[g.0].lifetime).min().unwrap();
        for &(sku, grant, counted) in &grants {
            m.skus[sku].available -= grant;
            m.skus[sku].held += grant;
            if counted {
                *m.buyer_units.entry((sku, buyer)).or_default() += grant;
            }
        }
        let units = grants.iter().map(|g| g.1).sum();
        (grants, m.now + ttl, m.now + life, units)
    });
    // The hold id is the engine's to choose; `check_reserve` records it.
    match answer {
        Ok((grants, deadline, latest, units)) => {
            let hold = MHold {
                lines: grants,
                buyer,
                deadline,
                latest,
                state: MState::Held,
            };
            Ok(Expect::Fresh {
                hold,
                units,
                request,
                params,
            })
        }
        Err(e) => {
            if let Some(r) = request {
                m.requests.insert(r, (params, Answer::Reserve(Err(e))));
            }
            Err(e)
        }
    }
}

fn check_reserve(
    m: &mut Model,
    got: Result<Reservation, ReserveError>,
    want: Result<Expect, ReserveError>,
    issued: &mut Vec<HoldId>,
) {
    match (got, want) {
        (
            Ok(g),
            Ok(Expect::Replayed {
                hold,
                deadline,
                units,
                provisional,
            }),
        ) => {
            assert_eq!(
                (g.hold, g.deadline_ms, g.units, g.replayed, g.provisional),
                (hold, deadline, units, true, provisional),
                "replay"
            );
        }
        (
            Ok(g),
            Ok(Expect::Fresh {
                hold,
                units,
                request,
                params,
            }),
        ) => {
            assert_eq!(
                (g.deadline_ms, g.units, g.replayed),
                (hold.deadline, units, false),
                "reserve"
            );
            assert!(
                !m.holds.contains_key(&g.hold),
                "hold ids are unique among remembered holds"
            );
            assert!(!g.provisional, "a fresh answer is never provisional");
            if let Some(r) = request {
                m.requests.insert(
                    r,
                    (params, Answer::Reserve(Ok((g.hold, hold.deadline, units)))),
                );
                m.provisional.insert(r);
            }
            m.holds.insert(g.hold, hold);
            issued.push(g.hold);
        }
        (g, w) => assert_eq!(g.map(|_| ()), w.map(|_| ()), "reserve"),
    }
}

fn model_commit(
    m: &mut Model,
    id: HoldId,
    sold: Option<&[u32]>,
    request: Option<u64>,
) -> Result<(u32, u32, bool), HoldError> {
    if sold.is_some_and(|s| s.iter().all(|&q| q == 0)) {
        return Err(HoldError::InvalidQty);
    }
    let params = format!("commit {id} {sold:?}");
    match m.replay(request, &params) {
        Some(Ok(Answer::Commit(a))) => return a.map(|(s, r)| (s, r, true)),
        Some(_) => return Err(HoldError::RequestMismatch),
        None => {}
    }
    let result = (|| {
        let h = m.holds.get(&id).ok_or(HoldError::HoldNotFound)?.clone();
        if let Some(sold) = sold
            && h.state == MState::Held
        {
            if sold.len() != h.lines.len() {
                return Err(HoldError::LinesMismatch);
            }
            if let Some((_, l)) = sold.iter().zip(&h.lines).find(|(s, l)| **s > l.1) {
                return Err(HoldError::QtyAboveHeld { held: l.1 });
            }
        }
        m.touch(id)?;
        let (mut total_sold, mut total_returned) = (0, 0);
        for (i, &(sku, qty, counted)) in h.lines.iter().enumerate() {
            let s = sold.map_or(qty, |s| s[i]);
            m.skus[sku].held -= qty;
            m.skus[sku].sold += s;
            m.skus[sku].available += qty - s;
            if counted {
                *m.buyer_units.get_mut(&(sku, h.buyer)).unwrap() -= qty - s;
            }
            total_sold += s;
            total_returned += qty - s;
        }
        m.holds.get_mut(&id).unwrap().state = MState::Committed;
        Ok((total_sold, total_returned))
    })();
    if let Some(r) = request {
        m.requests.insert(r, (params, Answer::Commit(result)));
    }
    result.map(|(s, r)| (s, r, false))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, max_shrink_iters: 2000, ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_the_sequential_model(ops in proptest::collection::vec(op(), 1..80)) {
        run(ops);
    }
}
