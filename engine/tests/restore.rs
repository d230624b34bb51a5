//! Recovery: an engine rebuilt from its saved state carries on exactly where
//! the old one stopped, and an inconsistent state is refused with a report.

mod common;
use common::*;
use holdfast_engine::*;
use std::sync::Arc;

fn config(incarnation: u16) -> EngineConfig {
    EngineConfig {
        incarnation,
        events_max: 1 << 12,
        events_headroom: 16,
        ..EngineConfig::default()
    }
}

#[test]
fn a_restored_engine_continues_where_the_old_one_stopped() {
    let r = Rig::new(config(1));
    let tee = r.sku("tee", 10, settings(60_000, 3));
    let cap = r.sku("cap", 5, settings(30_000, 0));
    let single = r.engine.reserve(tee, 2, BuyerId(7), None, false).unwrap();
    let cart = r
        .engine
        .reserve_cart(
            &[Line { sku: tee, qty: 1 }, Line { sku: cap, qty: 2 }],
            BuyerId(8),
            None,
        )
        .unwrap();
    let sold = r.engine.reserve(tee, 1, BuyerId(7), None, false).unwrap();
    r.engine.commit(sold.hold, None, None).unwrap();
    r.engine.set_window(cap, SaleWindow::Paused).unwrap();
    let saved = r.engine.save();
    assert_eq!(saved.holds.len(), 2);
    assert_eq!(saved.last_seq, r.engine.events().unwrap().next_seq() - 1);

    let clock = Arc::new(ManualClock::new(T0 + 1_000));
    let (engine, mut expirer) = Engine::restore(config(2), clock.clone(), &saved).unwrap();
    let tee2 = engine.sku("tee").unwrap();
    let cap2 = engine.sku("cap").unwrap();
    assert_eq!(engine.snapshot(tee2).unwrap().counts, r.counts(tee));
    assert_eq!(engine.snapshot(cap2).unwrap().window, SaleWindow::Paused);
    assert_eq!(
        engine.buyer_units(tee2, BuyerId(7)),
        3,
        "live hold + purchase"
    );
    let info = engine.hold(cart.hold).unwrap();
    assert_eq!(
        (info.state, info.deadline_ms, info.lines.len()),
        (HoldState::Held, cart.deadline_ms, 2)
    );
    assert_eq!(
        engine.reserve(tee2, 1, BuyerId(7), None, false),
        Err(ReserveError::LimitExceeded)
    );

    // The restored holds end like any other, with their original ids.
    engine.commit(single.hold, None, None).unwrap();
    let events: Vec<Event> = std::iter::from_fn(|| engine.events().unwrap().pop()).collect();
    assert_eq!(events[0].seq, saved.last_seq + 1, "the sequence continues");
    assert!(
        matches!(events[0].kind, EventKind::Committed { line, .. } if line.hold == single.hold)
    );
    // The cart expires on time after the restart.
    clock.advance(30_000);
    assert_eq!(expirer.run().expired_holds, 1);
    assert_eq!(
        engine.snapshot(cap2).unwrap().counts,
        Counts {
            available: 5,
            held: 0,
            sold: 0
        }
    );
    // New holds carry the new incarnation, so old ids never name them.
    let fresh = engine.reserve(cap2, 1, BuyerId(1), None, true);
    assert_eq!(fresh, Err(ReserveError::NotOpen));
    engine.set_window(cap2, SaleWindow::Open).unwrap();
    let fresh = engine.reserve(cap2, 1, BuyerId(1), None, false).unwrap();
    assert_eq!(fresh.hold.incarnation(), 2);
}

#[test]
fn holds_that_expired_during_downtime_expire_on_the_first_run() {
    let r = Rig::new(config(1));
    let tee = r.sku("tee", 4, settings(1_000, 2));
    let h = r.engine.reserve(tee, 2, BuyerId(1), None, false).unwrap();
    let saved = r.engine.save();
    let clock = Arc::new(ManualClock::new(T0 + 3_600_000));
    let (engine, mut expirer) = Engine::restore(config(2), clock, &saved).unwrap();
    assert_eq!(
        engine.commit(h.hold, None, None),
        Err(HoldError::HoldExpired),
        "the deadline is authoritative"
    );
    let report = expirer.run();
    assert_eq!(report.freed_slots, 1);
    let tee = engine.sku("tee").unwrap();
    assert_eq!(
        engine.snapshot(tee).unwrap().counts,
        Counts {
            available: 4,
            held: 0,
            sold: 0
        }
    );
    assert_eq!(engine.buyer_units(tee, BuyerId(1)), 0);
    let r2 = r
        .engine
        .reserve(r.engine.sku("tee").unwrap(), 1, BuyerId(2), None, false)
        .unwrap();
    let (engine3, mut expirer3) = Engine::restore(
        config(3),
        Arc::new(ManualClock::new(T0 + 3_600_000)),
        &r.engine.save(),
    )
    .unwrap();
    assert_eq!(
        expirer3.run().expired_holds,
        2,
        "both restored holds were past due"
    );
    assert_eq!(engine3.hold(r2.hold).unwrap().state, HoldState::Expired);
}

#[test]
fn an_inconsistent_state_is_refused_with_every_problem() {
    let r = Rig::new(config(1));
    let tee = r.sku("tee", 4, settings(1_000, 2));
    let h = r.engine.reserve(tee, 2, BuyerId(1), None, false).unwrap();
    let mut saved = r.engine.save();
    saved.skus[0].counts.held = 3; // live holds say 2
    saved.buyers.clear(); // the hold's counted units are missing
    saved.holds.push(SavedHold {
        hold: h.hold,
        ..saved.holds[0].clone()
    }); // same slot twice
    saved.holds[1].lines[0].sku = "ghost".into();
    let err = Engine::restore(config(2), Arc::new(ManualClock::new(T0)), &saved).unwrap_err();
    let text = err.to_string();
    assert!(err.problems.len() >= 4, "{text}");
    assert!(
        text.contains("held is 3 but its live holds add up to"),
        "{text}"
    );
    assert!(text.contains("slot used by another hold"), "{text}");
    assert!(text.contains("unknown sku \"ghost\""), "{text}");
    assert!(text.contains("counted"), "{text}");

    let mut foreign = r.engine.save();
    let err = Engine::restore(
        EngineConfig {
            node_id: 9,
            ..config(2)
        },
        Arc::new(ManualClock::new(T0)),
        &foreign,
    )
    .unwrap_err();
    assert!(err.to_string().contains("issued by node 0, this is node 9"));
    foreign.holds.clear();
    assert!(
        Engine::restore(config(2), Arc::new(ManualClock::new(T0)), &foreign).is_err(),
        "held 2 without holds"
    );
}

/// A remembered answer survives a restart, final: the journal persists an
/// answer only with the write it answers, so a provisional answer (durable
/// mode) is persisted in its confirmed form.
#[test]
fn remembered_requests_survive_a_restore() {
    for provisional in [false, true] {
        remembered_request_survives_a_restore(provisional);
    }
}

fn remembered_request_survives_a_restore(provisional: bool) {
    let config = |incarnation| EngineConfig {
        provisional_reservations: provisional,
        ..config(incarnation)
    };
    let r = Rig::new(config(1));
    let tee = r.sku("tee", 4, settings(60_000, 0));
    let first = r
        .engine
        .reserve(tee, 1, BuyerId(1), Some(RequestId(77)), false)
        .unwrap();
    let events: Vec<Event> = std::iter::from_fn(|| r.engine.events().unwrap().pop()).collect();
    let done = events
        .iter()
        .find_map(|e| match e.kind {
            EventKind::RequestDone {
                request,
                fingerprint,
                outcome,
                deadline_ms,
                aux,
            } => Some(SavedRequest {
                request,
                fingerprint,
                outcome,
                deadline_ms,
                aux,
            }),
            _ => None,
        })
        .expect("the answer is announced");
    let mut saved = r.engine.save();
    saved.requests.push(done);
    let (engine, _expirer) =
        Engine::restore(config(2), Arc::new(ManualClock::new(T0)), &saved).unwrap();
    let tee = engine.sku("tee").unwrap();
    let again = engine
        .reserve(tee, 1, BuyerId(1), Some(RequestId(77)), false)
        .unwrap();
    assert_eq!(
        again,
        Reservation {
            replayed: true,
            ..first
        }
    );
    assert_eq!(
        engine.snapshot(tee).unwrap().counts.held,
        1,
        "the retry changed nothing"
    );
}

#[test]
fn ids_from_before_a_restart_never_name_new_holds() {
    // Same slot, same generation, different incarnation: not found.
    let r = Rig::new(config(1));
    let tee = r.sku("tee", 4, settings(60_000, 0));
    let old = r.engine.reserve(tee, 1, BuyerId(1), None, false).unwrap();
    r.engine.release(old.hold, None).unwrap();
    let mut saved = r.engine.save();
    saved.skus[0].counts = Counts {
        available: 4,
        held: 0,
        sold: 0,
    };
    let (engine, _expirer) =
        Engine::restore(config(2), Arc::new(ManualClock::new(T0)), &saved).unwrap();
    let tee = engine.sku("tee").unwrap();
    let new = engine.reserve(tee, 1, BuyerId(2), None, false).unwrap();
    assert_eq!(
        (new.hold.slot(), new.hold.generation()),
        (old.hold.slot(), old.hold.generation())
    );
    assert_eq!(
        engine.commit(old.hold, None, None),
        Err(HoldError::HoldNotFound)
    );
    assert_eq!(engine.hold(new.hold).unwrap().state, HoldState::Held);
}
