//! Events: every state change, numbered, bounded, never silently dropped.

mod common;
use common::*;
use holdfast_engine::*;

#[test]
fn every_state_change_emits_a_numbered_event() {
    let mut r = Rig::with_events();
    let tee = r.sku("tee", 2, settings(1_000, 0));
    let a = r
        .engine
        .reserve(tee, 1, BuyerId(1), None, false)
        .unwrap()
        .hold;
    let b = r
        .engine
        .reserve(tee, 1, BuyerId(2), None, false)
        .unwrap()
        .hold;
    r.engine.commit(a, None, None).unwrap();
    r.engine.extend(b, 500, None).unwrap();
    r.advance(2_000);
    r.engine.restock(tee, 3).unwrap();
    r.engine.adjust_down(tee, 4).unwrap();
    r.engine.set_window(tee, SaleWindow::Paused).unwrap();
    r.engine.update_settings(tee, settings(2_000, 1)).unwrap();
    let c = r.engine.reserve(tee, 1, BuyerId(3), None, false);
    assert_eq!(c, Err(ReserveError::NotOpen));

    let events = r.drain_events();
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "gapless from 1"
    );
    let names: Vec<&str> = events
        .iter()
        .map(|e| match e.kind {
            EventKind::SkuCreated { .. } => "created",
            EventKind::SettingsChanged { .. } => "settings",
            EventKind::Reserved { .. } => "reserved",
            EventKind::Committed { .. } => "committed",
            EventKind::Released { .. } => "released",
            EventKind::Expired { .. } => "expired",
            EventKind::Extended { .. } => "extended",
            EventKind::Restocked { .. } => "restocked",
            EventKind::Adjusted { .. } => "adjusted",
            EventKind::SoldOut { .. } => "sold_out",
            EventKind::BackInStock { .. } => "back_in_stock",
            EventKind::WindowChanged { .. } => "window",
            EventKind::RequestDone { .. } => "request",
            EventKind::RequestForgotten { .. } => "forgotten",
            EventKind::ChannelSet { .. } => "channel",
            EventKind::QuotaMoved { .. } => "quota_moved",
        })
        .collect();
    assert_eq!(
        names,
        [
            "created",
            "restocked",
            "window",
            "reserved",
            "reserved",
            // Every unit in carts: not sold out, so no event.
            "committed",
            "extended",
            // The held unit comes back: never sold out, so not back in stock.
            "expired",
            "restocked",
            // Nothing available and nothing held: sold out.
            "adjusted",
            "sold_out",
            "window",
            "settings"
        ]
    );
    match events[3].kind {
        EventKind::Reserved {
            line,
            qty,
            deadline_ms,
            latest_ms,
        } => {
            assert_eq!(
                (
                    line.hold,
                    line.sku,
                    line.buyer,
                    line.line,
                    line.lines,
                    line.counted
                ),
                (a, tee, BuyerId(1), 0, 1, false)
            );
            assert_eq!((qty, deadline_ms, latest_ms), (1, T0 + 1_000, T0 + 3_000));
        }
        other => panic!("{other:?}"),
    }
    assert!(events.iter().all(|e| e.at_ms >= T0));
}

#[test]
fn a_cart_gets_adjacent_sequence_numbers() {
    let r = Rig::with_events();
    let a = r.sku("a", 5, settings(1_000, 0));
    let b = r.sku("b", 5, settings(1_000, 0));
    r.drain_events();
    let hold = r
        .engine
        .reserve_cart(
            &[Line { sku: a, qty: 1 }, Line { sku: b, qty: 2 }],
            BuyerId(1),
            None,
        )
        .unwrap();
    let events = r.drain_events();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].seq, events[0].seq + 1);
    for (i, e) in events.iter().enumerate() {
        match e.kind {
            EventKind::Reserved { line, .. } => {
                assert_eq!((line.hold, line.line, line.lines), (hold.hold, i as u8, 2));
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn full_queue_refuses_new_operations_instead_of_dropping() {
    let r = Rig::new(EngineConfig {
        events_max: 32,
        events_headroom: 4,
        ..EngineConfig::default()
    });
    let tee = r.sku("tee", 100, settings(60_000, 0));
    let mut ok = Vec::new();
    loop {
        match r.engine.reserve(tee, 1, BuyerId(1), None, false) {
            Ok(res) => ok.push(res.hold),
            Err(e) => {
                assert_eq!(e, ReserveError::Overloaded);
                break;
            }
        }
    }
    assert_eq!(
        r.engine.commit(ok[0], None, None),
        Err(HoldError::Overloaded)
    );
    assert_eq!(r.engine.restock(tee, 1), Err(CatalogError::Overloaded));
    // Every accepted operation's event is in the queue.
    let events = r.drain_events();
    let reserved = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Reserved { .. }))
        .count();
    assert_eq!(reserved, ok.len());
    assert_eq!(r.counts(tee).held, ok.len() as u32);
    assert!(
        r.engine.commit(ok[0], None, None).is_ok(),
        "room again after draining"
    );
}

#[test]
fn failed_cart_leaves_no_trace_in_the_events() {
    let r = Rig::with_events();
    let a = r.sku("a", 1, settings(1_000, 0));
    let b = r.sku("b", 0, settings(1_000, 0));
    r.drain_events();
    let cart = [Line { sku: a, qty: 1 }, Line { sku: b, qty: 1 }];
    assert_eq!(
        r.engine.reserve_cart(&cart, BuyerId(1), None),
        Err(ReserveError::SoldOut)
    );
    assert!(
        r.drain_events().is_empty(),
        "took a into the cart and put it back: nothing to announce"
    );
    assert_eq!(r.counts(a).available, 1);
}

#[test]
fn changed_skus_are_reported_once_per_look() {
    let r = Rig::small();
    let a = r.sku("a", 5, settings(1_000, 0));
    let b = r.sku("b", 5, settings(1_000, 0));
    let mut out = Vec::new();
    r.engine.take_changed(&mut out, 100);
    out.sort();
    assert_eq!(out, vec![a, b], "creation marks a sku changed");
    out.clear();
    r.engine.take_changed(&mut out, 100);
    assert!(out.is_empty());
    for _ in 0..5 {
        r.engine.reserve(a, 1, BuyerId(1), None, false).unwrap();
    }
    r.engine.take_changed(&mut out, 100);
    assert_eq!(out, vec![a], "coalesced: one entry for five changes");
    out.clear();
    r.engine.reserve(b, 1, BuyerId(1), None, false).unwrap();
    r.engine.take_changed(&mut out, 100);
    assert_eq!(out, vec![b]);
}

/// Issue 14: a SKU whose last units sit in carts is not sold out, so holds
/// expiring and being taken again do not flap SOLD OUT <-> back in stock.
/// Sold out fires when nothing is available and nothing held; back in stock
/// only when units come back from that state.
#[test]
fn sold_out_and_back_in_stock_fire_only_when_nothing_is_left_in_carts() {
    let mut r = Rig::with_events();
    let tee = r.sku("tee", 3, settings(4_000, 0));
    r.drain_events();
    let transitions = |r: &Rig| -> Vec<&'static str> {
        r.drain_events()
            .into_iter()
            .filter_map(|e| match e.kind {
                EventKind::SoldOut { .. } => Some("sold_out"),
                EventKind::BackInStock { .. } => Some("back_in_stock"),
                _ => None,
            })
            .collect()
    };
    // Buyers keep the last units in carts; holds expire and are taken again.
    for round in 0..5 {
        for b in 0..3 {
            r.engine.reserve(tee, 1, BuyerId(b), None, false).unwrap();
        }
        assert!(r.counts(tee).all_in_carts(), "round {round}");
        assert!(!r.counts(tee).sold_out());
        r.advance(5_000);
        assert_eq!(r.counts(tee).available, 3);
    }
    assert_eq!(transitions(&r), Vec::<&str>::new(), "no flapping");

    // The last units committed: sold out, once.
    let holds: Vec<HoldId> = (0..3)
        .map(|b| {
            r.engine
                .reserve(tee, 1, BuyerId(b), None, false)
                .unwrap()
                .hold
        })
        .collect();
    r.engine.commit(holds[0], None, None).unwrap();
    r.engine.release(holds[1], None).unwrap();
    let h = r
        .engine
        .reserve(tee, 1, BuyerId(4), None, false)
        .unwrap()
        .hold;
    r.engine.commit(h, None, None).unwrap();
    assert_eq!(transitions(&r), Vec::<&str>::new(), "one unit still held");
    r.engine.commit(holds[2], Some(&[1]), None).unwrap();
    assert!(r.counts(tee).sold_out());
    assert_eq!(transitions(&r), ["sold_out"]);

    // A restock brings it back, once; a partial commit that returns units
    // from a hold is not "back in stock" (it was not sold out).
    r.engine.restock(tee, 2).unwrap();
    assert_eq!(transitions(&r), ["back_in_stock"]);
    let h = r
        .engine
        .reserve(tee, 2, BuyerId(5), None, false)
        .unwrap()
        .hold;
    r.engine.commit(h, Some(&[1]), None).unwrap();
    assert_eq!(transitions(&r), Vec::<&str>::new());
    r.engine.set_total(tee, r.counts(tee).sold).unwrap();
    assert_eq!(transitions(&r), ["sold_out"], "the last available removed");
}
