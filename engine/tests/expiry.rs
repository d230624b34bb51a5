//! Expiry: holds not committed by their deadline go back on sale, on time,
//! driven by a manual clock (no sleeps), and commit racing expiry has
//! exactly one winner.

mod common;
use common::*;
use holdfast_engine::*;

#[test]
fn holds_expire_at_their_deadline_not_before() {
    let mut r = Rig::small();
    let tee = r.sku("tee", 3, settings(1_000, 0));
    let h = r
        .engine
        .reserve(tee, 2, BuyerId(1), None, false)
        .unwrap()
        .hold;
    let report = r.advance(990);
    assert_eq!(report.expired_holds, 0);
    assert_eq!(r.counts(tee).held, 2);
    // One tick granularity (10 ms) plus the run interval: at most ~20 ms late.
    let report = r.advance(30);
    assert_eq!(report.expired_holds, 1);
    assert_eq!(report.expired_units, 2);
    assert_eq!(
        r.counts(tee),
        Counts {
            available: 3,
            held: 0,
            sold: 0
        }
    );
    assert_eq!(r.engine.hold(h).unwrap().state, HoldState::Expired);
    assert_eq!(r.engine.commit(h, None, None), Err(HoldError::HoldExpired));
}

#[test]
fn commit_after_the_deadline_loses_even_before_the_expirer_runs() {
    let r = Rig::with_events();
    let tee = r.sku("tee", 1, settings(1_000, 0));
    let h = r
        .engine
        .reserve(tee, 1, BuyerId(1), None, false)
        .unwrap()
        .hold;
    r.clock.advance(1_000);
    // The deadline is authoritative: the commit sees it passed and expires
    // the hold itself, and is told so.
    assert_eq!(r.engine.commit(h, None, None), Err(HoldError::HoldExpired));
    assert_eq!(
        r.counts(tee),
        Counts {
            available: 1,
            held: 0,
            sold: 0
        }
    );
    assert_eq!(r.engine.release(h, None), Err(HoldError::HoldExpired));
    assert_eq!(r.engine.extend(h, 10, None), Err(HoldError::HoldExpired));
    let kinds: Vec<_> = r.drain_events().into_iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds
            .iter()
            .filter(|k| matches!(k, EventKind::Expired { .. }))
            .count(),
        1
    );
    assert!(
        !kinds
            .iter()
            .any(|k| matches!(k, EventKind::Committed { .. }))
    );
}

#[test]
fn commit_racing_expiry_has_exactly_one_winner() {
    // Many rounds of a commit thread against the expirer on a deadline that
    // is passing; every hold ends exactly once and counts always add up.
    let r = Rig::new(EngineConfig {
        holds_max: 1024,
        ..EngineConfig::default()
    });
    let tee = r.sku("tee", 1_000_000, settings(5, 0));
    let engine = r.engine.clone();
    let clock = r.clock.clone();
    let mut expirer = r.expirer;
    let (mut committed, mut expired) = (0u32, 0u32);
    for round in 0..300 {
        let holds: Vec<HoldId> = (0..8)
            .map(|i| {
                engine
                    .reserve(tee, 1, BuyerId(i), None, false)
                    .unwrap()
                    .hold
            })
            .collect();
        let outcome = std::thread::scope(|s| {
            let committer = s.spawn(|| {
                holds
                    .iter()
                    .map(|&h| engine.commit(h, None, None))
                    .collect::<Vec<_>>()
            });
            // Cross the deadline while the committer runs.
            clock.advance(if round % 2 == 0 { 20 } else { 3 });
            let report = expirer.run();
            (committer.join().unwrap(), report)
        });
        let (results, report) = outcome;
        let wins = results.iter().filter(|r| r.is_ok()).count() as u32;
        let lost = results
            .iter()
            .filter(|r| **r == Err(HoldError::HoldExpired))
            .count() as u32;
        assert_eq!(
            wins + lost,
            8,
            "every commit either won or was told the hold expired: {results:?}"
        );
        committed += wins;
        expired += lost;
        assert!(report.expired_holds <= lost);
        clock.advance(20);
        expirer.run();
        let c = engine.snapshot(tee).unwrap().counts;
        assert_eq!(c.held, 0, "round {round}: nothing left held");
        assert_eq!(c.sold, committed);
        assert_eq!(c.total(), 1_000_000);
    }
    assert!(committed + expired == 2400);
}

#[test]
fn expiry_cost_does_not_scan_unrelated_holds() {
    // 20 000 long holds sit in the wheel; expiring 10 short ones must not
    // touch them (the wheel only visits due buckets).
    let mut r = Rig::new(EngineConfig {
        holds_max: 32_768,
        ..EngineConfig::default()
    });
    let long = r.sku("long", 20_000, settings(3_600_000, 0));
    let short = r.sku("short", 10, settings(1_000, 0));
    for i in 0..20_000 {
        r.engine.reserve(long, 1, BuyerId(i), None, false).unwrap();
    }
    for i in 0..10 {
        r.engine.reserve(short, 1, BuyerId(i), None, false).unwrap();
    }
    r.advance(1);
    assert_eq!(r.expirer.tracked(), 20_010);
    let report = r.advance(1_100);
    assert_eq!(report.expired_holds, 10);
    assert_eq!(r.counts(long).held, 20_000);
    assert_eq!(r.expirer.tracked(), 20_000);
}

#[test]
fn finished_holds_are_reclaimed_so_the_table_recycles() {
    let mut r = Rig::new(EngineConfig {
        holds_max: 8,
        ..EngineConfig::default()
    });
    let tee = r.sku("tee", 1_000, settings(60_000, 0));
    for round in 0..50u64 {
        let holds: Vec<_> = (0..8)
            .map(|i| {
                r.engine
                    .reserve(tee, 1, BuyerId(i), None, false)
                    .unwrap()
                    .hold
            })
            .collect();
        assert_eq!(
            r.engine.reserve(tee, 1, BuyerId(9), None, false),
            Err(ReserveError::Capacity)
        );
        for (i, h) in holds.into_iter().enumerate() {
            if (i as u64 + round).is_multiple_of(2) {
                r.engine.commit(h, None, None).unwrap();
            } else {
                r.engine.release(h, None).unwrap();
            }
        }
        assert_eq!(
            r.engine.holds_in_use(),
            8,
            "slots come back only through the expirer"
        );
        let report = r.expirer.run();
        assert_eq!(report.freed_slots, 8);
        assert_eq!(r.engine.holds_in_use(), 0);
        r.engine.restock(tee, 4).unwrap();
    }
}

#[test]
fn holds_ended_before_the_expirer_saw_them_skip_the_wheel() {
    let mut r = Rig::small();
    let tee = r.sku("tee", 10, settings(1_000, 0));
    let reserve = |r: &Rig| {
        r.engine
            .reserve(tee, 1, BuyerId(1), None, false)
            .unwrap()
            .hold
    };
    // Committed before the expirer ever ran, and one still live.
    let done = reserve(&r);
    r.engine.commit(done, None, None).unwrap();
    let live = reserve(&r);
    let report = r.expirer.run();
    assert_eq!(report.freed_slots, 1, "the ended hold is reclaimed at once");
    assert_eq!(r.expirer.tracked(), 1, "only the live hold is in the wheel");
    assert_eq!(r.engine.holds_in_use(), 1);
    // The live one ends later, through its unlink notice as before.
    r.engine.release(live, None).unwrap();
    let report = r.expirer.run();
    assert_eq!((report.freed_slots, r.expirer.tracked()), (1, 0));
    assert_eq!(r.engine.holds_in_use(), 0);
    // A hold that is never ended still expires on time.
    let late = reserve(&r);
    r.expirer.run();
    assert_eq!(r.advance(1_100).expired_holds, 1);
    assert_eq!(r.engine.hold(late).unwrap().state, HoldState::Expired);
    assert_eq!(r.expirer.tracked(), 0);
    assert_eq!(
        r.counts(tee),
        Counts {
            available: 9,
            held: 0,
            sold: 1
        }
    );
}

#[test]
fn long_pause_of_the_expirer_catches_up() {
    let mut r = Rig::small();
    let tee = r.sku("tee", 100, settings(1_000, 0));
    for i in 0..100 {
        r.engine.reserve(tee, 1, BuyerId(i), None, false).unwrap();
    }
    // More than a whole wheel turn (65 536 ticks of 10 ms) later.
    let report = r.advance(3 * 3_600_000);
    assert_eq!(report.expired_holds, 100);
    assert_eq!(r.counts(tee).available, 100);
}

#[test]
fn expiry_backs_off_when_the_event_queue_is_full() {
    let mut r = Rig::new(EngineConfig {
        events_max: 64,
        events_headroom: 8,
        ..EngineConfig::default()
    });
    let tee = r.sku("tee", 100, settings(1_000, 0));
    r.drain_events();
    let mut n = 0;
    while r.engine.reserve(tee, 1, BuyerId(n), None, false).is_ok() {
        n += 1;
    }
    assert_eq!(
        r.engine.reserve(tee, 1, BuyerId(n), None, false),
        Err(ReserveError::Overloaded)
    );
    let report = r.advance(2_000);
    assert!(report.deferred, "no room for expiry events: expiry waits");
    assert_eq!(report.expired_holds, 0);
    assert_eq!(
        r.counts(tee).held,
        n as u32,
        "nothing changed without its event"
    );
    let mut total_expired = 0;
    while total_expired < n {
        r.drain_events();
        total_expired += r.expirer.run().expired_holds as u64;
    }
    assert_eq!(r.counts(tee).available, 100);
}

/// Reserves `n` one-unit holds of `sku`, the first half `gap_ms` before the
/// rest, so they sit in two of the wheel's buckets.
fn reserve_in_two_buckets(r: &Rig, sku: SkuIdx, n: u32, gap_ms: u64) {
    for i in 0..n {
        if i == n / 2 {
            r.clock.advance(gap_ms);
        }
        r.engine
            .reserve(sku, 1, BuyerId(u64::from(i)), None, false)
            .unwrap();
    }
}

#[test]
fn a_run_expires_at_most_a_batch_and_says_when_more_are_due() {
    use holdfast_engine::limits::EXPIRY_BATCH_MAX;
    let mut r = Rig::small();
    let n = EXPIRY_BATCH_MAX + 1;
    let tee = r.sku("tee", n, settings(1_000, 0));
    reserve_in_two_buckets(&r, tee, n, 50);
    // A pause of more than a whole wheel turn: everything is due at once.
    let first = r.advance(3 * 3_600_000);
    assert_eq!(first.expired_holds, EXPIRY_BATCH_MAX, "one batch, no more");
    assert!(first.batch_full, "more are due: run again at once");
    assert_eq!(r.counts(tee).held, 1);
    r.assert_invariant();
    // The same instant: what the first run left is due and nothing else.
    let second = r.expirer.run();
    assert_eq!(second.expired_holds, 1);
    assert!(!second.batch_full);
    assert_eq!(r.counts(tee).available, n);
    assert_eq!(r.expirer.tracked(), 0, "every slot reclaimed");
    assert_eq!(r.engine.holds_in_use(), 0);
}

#[test]
fn a_run_with_exactly_a_batch_due_is_not_full() {
    use holdfast_engine::limits::EXPIRY_BATCH_MAX;
    let mut r = Rig::small();
    let n = EXPIRY_BATCH_MAX;
    let tee = r.sku("tee", n, settings(1_000, 0));
    reserve_in_two_buckets(&r, tee, n, 50);
    let report = r.advance(3 * 3_600_000);
    assert_eq!(report.expired_holds, n);
    assert!(!report.batch_full, "nothing left due");
    assert_eq!(r.counts(tee).available, n);
}
