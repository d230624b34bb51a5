//! Idempotency: a retried request with the same request id gets the first
//! answer and changes nothing; ids age out after the window.

mod common;
use common::*;
use holdfast_engine::*;

#[test]
fn a_retried_reserve_returns_the_first_answer() {
    let r = Rig::with_events();
    let tee = r.sku("tee", 1, settings(60_000, 0));
    r.drain_events();
    let first = r
        .engine
        .reserve(tee, 1, BuyerId(1), Some(RequestId(42)), false)
        .unwrap();
    let again = r
        .engine
        .reserve(tee, 1, BuyerId(1), Some(RequestId(42)), false)
        .unwrap();
    assert_eq!(
        again,
        Reservation {
            replayed: true,
            ..first
        }
    );
    assert_eq!(r.counts(tee).held, 1, "the retry changed nothing");
    let kinds: Vec<EventKind> = r.drain_events().into_iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds.len(),
        2,
        "reserved + the remembered answer, once: {kinds:?}"
    );
    assert!(matches!(
        kinds[1],
        EventKind::RequestDone {
            request: RequestId(42),
            ..
        }
    ));
    // A refusal is remembered too (the first answer).
    let refused = r
        .engine
        .reserve(tee, 1, BuyerId(2), Some(RequestId(43)), false);
    assert_eq!(refused, Err(ReserveError::SoldOut));
    r.engine.restock(tee, 1).unwrap();
    assert_eq!(
        r.engine
            .reserve(tee, 1, BuyerId(2), Some(RequestId(43)), false),
        Err(ReserveError::SoldOut)
    );
    // The same id for a different request is refused, not replayed.
    assert_eq!(
        r.engine
            .reserve(tee, 1, BuyerId(3), Some(RequestId(42)), false),
        Err(ReserveError::RequestMismatch)
    );
}

#[test]
fn refusals_with_a_payload_replay_with_the_same_payload() {
    let r = Rig::small();
    let tee = r.sku("tee", 3, settings(60_000, 0));
    let first = r
        .engine
        .reserve(tee, 5, BuyerId(1), Some(RequestId(1)), false);
    assert_eq!(
        first,
        Err(ReserveError::NotEnoughAvailable { available: 3 })
    );
    r.engine.restock(tee, 1).unwrap();
    assert_eq!(
        r.engine
            .reserve(tee, 5, BuyerId(1), Some(RequestId(1)), false),
        first,
        "the first answer, count included, though 4 are available now"
    );
    assert_eq!(
        r.engine
            .reserve(tee, 11, BuyerId(1), Some(RequestId(2)), false),
        Err(ReserveError::QtyAboveMax { max: 10 }),
        "checked before the request id: not remembered, nothing to replay"
    );
    let h = r
        .engine
        .reserve(tee, 2, BuyerId(1), None, false)
        .unwrap()
        .hold;
    let over = r.engine.commit(h, Some(&[3]), Some(RequestId(3)));
    assert_eq!(over, Err(HoldError::QtyAboveHeld { held: 2 }));
    assert_eq!(r.engine.commit(h, Some(&[3]), Some(RequestId(3))), over);
}

#[test]
fn transient_refusals_are_not_remembered() {
    let r = Rig::new(EngineConfig {
        holds_max: 2,
        ..EngineConfig::default()
    });
    let tee = r.sku("tee", 5, settings(60_000, 0));
    let a = r.engine.reserve(tee, 1, BuyerId(1), None, false).unwrap();
    r.engine.reserve(tee, 1, BuyerId(1), None, false).unwrap();
    assert_eq!(
        r.engine
            .reserve(tee, 1, BuyerId(2), Some(RequestId(7)), false),
        Err(ReserveError::Capacity)
    );
    r.engine.release(a.hold, None).unwrap();
    let mut expirer = r.expirer;
    expirer.run();
    assert!(
        r.engine
            .reserve(tee, 1, BuyerId(2), Some(RequestId(7)), false)
            .is_ok(),
        "retry ran afresh"
    );
}

#[test]
fn commit_release_and_extend_are_idempotent() {
    let r = Rig::small();
    let tee = r.sku("tee", 5, settings(10_000, 0));
    let h = r
        .engine
        .reserve(tee, 3, BuyerId(1), None, false)
        .unwrap()
        .hold;
    let first = r.engine.commit(h, Some(&[2]), Some(RequestId(1))).unwrap();
    let again = r.engine.commit(h, Some(&[2]), Some(RequestId(1))).unwrap();
    assert_eq!(
        again,
        Settlement {
            replayed: true,
            ..first
        }
    );
    assert_eq!(
        r.engine.commit(h, None, Some(RequestId(2))),
        Err(HoldError::AlreadyCommitted)
    );
    assert_eq!(
        r.counts(tee),
        Counts {
            available: 3,
            held: 0,
            sold: 2
        }
    );

    let h = r
        .engine
        .reserve(tee, 1, BuyerId(1), None, false)
        .unwrap()
        .hold;
    let d1 = r.engine.extend(h, 1_000, Some(RequestId(3))).unwrap();
    let d2 = r.engine.extend(h, 1_000, Some(RequestId(3))).unwrap();
    assert_eq!(d1, d2, "a retried extend does not extend twice");
    assert_eq!(r.engine.hold(h).unwrap().deadline_ms, d1);
    r.engine.release(h, Some(RequestId(4))).unwrap();
    r.engine.release(h, Some(RequestId(4))).unwrap();
    assert_eq!(
        r.engine.release(h, Some(RequestId(5))),
        Err(HoldError::AlreadyReleased)
    );
}

#[test]
fn hold_operations_refuse_a_request_id_when_the_table_is_full_and_forget_it() {
    let mut r = Rig::new(EngineConfig {
        request_entries_max: 1,
        request_window_ms: 2_000,
        ..EngineConfig::default()
    });
    let tee = r.sku("tee", 100, settings(60_000, 0));
    // With one entry asked for, the table is one probe window: every
    // position remembers a reservation.
    const WINDOW: u64 = holdfast_engine::limits::PROBE_WINDOW as u64;
    for request in 1..=WINDOW {
        r.engine
            .reserve(tee, 1, BuyerId(1), Some(RequestId(request)), false)
            .unwrap();
    }
    let h = r
        .engine
        .reserve(tee, 2, BuyerId(2), None, false)
        .unwrap()
        .hold;
    let new_id = Some(RequestId(WINDOW + 1));
    assert_eq!(r.engine.commit(h, None, new_id), Err(HoldError::Capacity));
    assert_eq!(r.engine.release(h, new_id), Err(HoldError::Capacity));
    assert_eq!(r.engine.extend(h, 1_000, new_id), Err(HoldError::Capacity));
    let info = r.engine.hold(h).unwrap();
    assert_eq!(info.state, HoldState::Held, "a refusal changes nothing");
    assert_eq!(info.deadline_ms, T0 + 60_000);
    assert_eq!(r.counts(tee).held, WINDOW as u32 + 2);
    // Without a request id nothing needs remembering: no refusal.
    r.engine.extend(h, 1_000, None).unwrap();
    // Half a window later inserts go to the other table: the refusal was
    // not remembered, so the same id now runs.
    r.advance(1_000);
    let s = r.engine.commit(h, None, new_id).unwrap();
    assert_eq!((s.sold, s.replayed), (2, false));
    assert!(r.engine.commit(h, None, new_id).unwrap().replayed);
}

#[test]
fn request_ids_age_out_after_the_window() {
    let mut r = Rig::new(EngineConfig {
        request_window_ms: 10_000,
        ..EngineConfig::default()
    });
    let tee = r.sku("tee", 5, settings(100_000, 0));
    let first = r
        .engine
        .reserve(tee, 1, BuyerId(1), Some(RequestId(9)), false)
        .unwrap();
    r.advance(9_000);
    assert!(
        r.engine
            .reserve(tee, 1, BuyerId(1), Some(RequestId(9)), false)
            .unwrap()
            .replayed
    );
    r.advance(6_000);
    r.advance(6_000);
    let later = r
        .engine
        .reserve(tee, 1, BuyerId(1), Some(RequestId(9)), false)
        .unwrap();
    assert!(!later.replayed, "forgotten after at most two windows");
    assert_ne!(later.hold, first.hold);
}

#[test]
fn concurrent_duplicates_reserve_once() {
    let r = Rig::new(EngineConfig {
        holds_max: 1 << 16,
        ..EngineConfig::default()
    });
    let tee = r.sku("tee", 1_000_000, settings(100_000, 0));
    let engine = &r.engine;
    for request in 0..2_000u64 {
        let results: Vec<_> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(move || {
                        engine.reserve(tee, 1, BuyerId(1), Some(RequestId(request)), false)
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let fresh = results
            .iter()
            .filter(|r| matches!(r, Ok(x) if !x.replayed))
            .count();
        assert_eq!(fresh, 1, "exactly one fresh reservation: {results:?}");
        assert!(
            results
                .iter()
                .all(|r| matches!(r, Ok(_) | Err(ReserveError::InProgress)))
        );
        let holds: std::collections::HashSet<_> =
            results.iter().flatten().map(|x| x.hold).collect();
        assert!(holds.len() <= 1, "both answers name the same hold");
    }
    assert_eq!(
        r.counts(tee).held,
        2_000,
        "every request reserved exactly once"
    );
}

// ----- provisional answers (durable mode) -------------------------------
//
// With `provisional_reservations`, a reservation's remembered answer is
// provisional until the caller confirms its durable write; a replay
// meanwhile says so, and "confirmed" and "undone" exclude each other.

fn durable_rig() -> Rig {
    Rig::new(EngineConfig {
        provisional_reservations: true,
        events_max: 1 << 12,
        events_headroom: 16,
        ..EngineConfig::default()
    })
}

fn reserve_with(r: &Rig, sku: SkuIdx, request: u64) -> Result<Reservation, ReserveError> {
    r.engine
        .reserve(sku, 1, BuyerId(1), Some(RequestId(request)), false)
}

#[test]
fn a_replay_of_an_unconfirmed_reservation_is_provisional_until_confirmed() {
    let r = durable_rig();
    let tee = r.sku("tee", 5, settings(60_000, 0));
    let first = reserve_with(&r, tee, 1).unwrap();
    assert!(!first.replayed && !first.provisional, "a fresh answer");
    let replay = reserve_with(&r, tee, 1).unwrap();
    assert_eq!(
        replay,
        Reservation {
            replayed: true,
            provisional: true,
            ..first
        }
    );
    assert!(r.engine.confirm_reservation(RequestId(1), first.hold));
    assert!(
        r.engine.confirm_reservation(RequestId(1), first.hold),
        "confirming twice (original and replay) is fine"
    );
    assert_eq!(
        reserve_with(&r, tee, 1).unwrap(),
        Reservation {
            replayed: true,
            ..first
        },
        "final once confirmed"
    );
    assert_eq!(r.counts(tee).held, 1, "replays changed nothing");

    // Carts are provisional the same way.
    let cart = [Line { sku: tee, qty: 2 }];
    let first = r
        .engine
        .reserve_cart(&cart, BuyerId(1), Some(RequestId(2)))
        .unwrap();
    let replay = r
        .engine
        .reserve_cart(&cart, BuyerId(1), Some(RequestId(2)))
        .unwrap();
    assert!(replay.replayed && replay.provisional && replay.hold == first.hold);

    // Refusals, and commit / release / extend answers, are final at once.
    let big = r
        .engine
        .reserve(tee, 9, BuyerId(1), Some(RequestId(3)), false);
    assert!(big.is_err());
    assert_eq!(
        r.engine
            .reserve(tee, 9, BuyerId(1), Some(RequestId(3)), false),
        big
    );
    let s = r
        .engine
        .commit(first.hold, None, Some(RequestId(4)))
        .unwrap();
    assert_eq!(
        r.engine.commit(first.hold, None, Some(RequestId(4))),
        Ok(Settlement {
            replayed: true,
            ..s
        })
    );
}

#[test]
fn undo_after_confirm_changes_nothing_and_the_hold_stays_live() {
    let r = durable_rig();
    let tee = r.sku("tee", 5, settings(60_000, 0));
    let first = reserve_with(&r, tee, 1).unwrap();
    assert!(r.engine.confirm_reservation(RequestId(1), first.hold));
    assert!(
        !r.engine.undo_reservation(first.hold, Some(RequestId(1))),
        "a confirmed reservation is acknowledged, not undone"
    );
    assert_eq!(r.engine.hold(first.hold).unwrap().state, HoldState::Held);
    assert_eq!(r.counts(tee).held, 1);
    let replay = reserve_with(&r, tee, 1).unwrap();
    assert!(replay.replayed && !replay.provisional && replay.hold == first.hold);
}

#[test]
fn confirm_after_undo_is_refused_and_a_retry_runs_afresh() {
    let r = durable_rig();
    let tee = r.sku("tee", 5, settings(60_000, 0));
    let first = reserve_with(&r, tee, 1).unwrap();
    assert!(r.engine.undo_reservation(first.hold, Some(RequestId(1))));
    assert_eq!(
        r.engine.hold(first.hold).unwrap().state,
        HoldState::Released,
        "undone: the hold is released"
    );
    assert_eq!(r.counts(tee).held, 0);
    assert!(
        !r.engine.confirm_reservation(RequestId(1), first.hold),
        "undo won: a replay must not acknowledge it"
    );
    assert!(
        r.engine.undo_reservation(first.hold, Some(RequestId(1))),
        "a second undo finds nothing to withdraw and releases nothing more"
    );
    assert_eq!(r.counts(tee).available, 5);
    let retry = reserve_with(&r, tee, 1).unwrap();
    assert!(!retry.replayed, "the retry ran afresh");
    assert_ne!(retry.hold, first.hold, "with a new hold");
    assert_eq!(r.counts(tee).held, 1);
    assert!(
        !r.engine.confirm_reservation(RequestId(1), first.hold),
        "a late confirm of the undone hold never confirms the retry's"
    );
    assert!(r.engine.confirm_reservation(RequestId(1), retry.hold));
}

#[test]
fn confirm_and_undo_with_another_hold_are_refused() {
    let r = durable_rig();
    let tee = r.sku("tee", 5, settings(60_000, 0));
    let first = reserve_with(&r, tee, 1).unwrap();
    let other = reserve_with(&r, tee, 2).unwrap();
    assert!(!r.engine.confirm_reservation(RequestId(1), other.hold));
    assert!(!r.engine.confirm_reservation(RequestId(99), first.hold));
    let replay = reserve_with(&r, tee, 1).unwrap();
    assert!(replay.provisional, "still provisional: {replay:?}");
    assert_eq!(r.counts(tee).held, 2);
}

#[test]
fn undo_without_a_request_id_releases_the_hold() {
    let r = durable_rig();
    let tee = r.sku("tee", 5, settings(60_000, 0));
    let h = r.engine.reserve(tee, 2, BuyerId(1), None, false).unwrap();
    assert!(!h.provisional);
    assert!(r.engine.undo_reservation(h.hold, None));
    assert_eq!(r.engine.hold(h.hold).unwrap().state, HoldState::Released);
    assert_eq!(r.counts(tee).available, 5);
}

#[test]
fn without_provisional_answers_are_final_at_once() {
    let r = Rig::small();
    let tee = r.sku("tee", 5, settings(60_000, 0));
    let first = reserve_with(&r, tee, 1).unwrap();
    let replay = reserve_with(&r, tee, 1).unwrap();
    assert!(replay.replayed && !replay.provisional);
    assert!(r.engine.confirm_reservation(RequestId(1), first.hold));
    assert!(
        !r.engine.undo_reservation(first.hold, Some(RequestId(1))),
        "a final answer is never withdrawn"
    );
    assert_eq!(r.engine.hold(first.hold).unwrap().state, HoldState::Held);
}

/// A node of a multi-node deployment leases more units and retries the
/// same request: its local shortage is not remembered as the answer.
#[test]
fn stock_refusals_are_not_final_when_configured() {
    let r = Rig::new(EngineConfig {
        stock_refusals_final: false,
        ..EngineConfig::default()
    });
    let sku = r.sku("tee", 0, SkuSettings::default());
    let req = Some(RequestId(77));
    assert_eq!(
        r.engine.reserve(sku, 1, BuyerId(1), req, false),
        Err(ReserveError::SoldOut)
    );
    r.engine.restock(sku, 2).unwrap();
    let ok = r.engine.reserve(sku, 1, BuyerId(1), req, false).unwrap();
    assert!(!ok.replayed, "the retry ran afresh");
    // The default remembers it.
    let r = Rig::new(EngineConfig::default());
    let sku = r.sku("tee", 0, SkuSettings::default());
    assert_eq!(
        r.engine.reserve(sku, 1, BuyerId(1), req, false),
        Err(ReserveError::SoldOut)
    );
    r.engine.restock(sku, 2).unwrap();
    assert_eq!(
        r.engine.reserve(sku, 1, BuyerId(1), req, false),
        Err(ReserveError::SoldOut),
        "remembered"
    );
}
