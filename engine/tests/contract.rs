//! The reservation contract, operation by operation, including every refusal.

mod common;
use common::*;
use holdfast_engine::limits::CART_LINES_MAX;
use holdfast_engine::*;

#[test]
fn reserve_moves_available_to_held_and_commit_to_sold() {
    let r = Rig::small();
    let tee = r.sku("tee", 5, settings(60_000, 0));
    let res = r.engine.reserve(tee, 2, BuyerId(1), None, false).unwrap();
    assert_eq!(res.units, 2);
    assert_eq!(res.deadline_ms, T0 + 60_000);
    assert!(!res.replayed);
    assert_eq!(
        r.counts(tee),
        Counts {
            available: 3,
            held: 2,
            sold: 0
        }
    );
    let s = r.engine.commit(res.hold, None, None).unwrap();
    assert_eq!((s.sold, s.returned), (2, 0));
    assert_eq!(
        r.counts(tee),
        Counts {
            available: 3,
            held: 0,
            sold: 2
        }
    );
    let info = r.engine.hold(res.hold).unwrap();
    assert_eq!(info.state, HoldState::Committed);
    assert_eq!(
        info.lines,
        vec![HoldLineInfo {
            sku: tee,
            qty: 2,
            sold: 2,
            channel: None
        }]
    );
}

#[test]
fn every_reserve_refusal() {
    let r = Rig::small();
    let tee = r.sku("tee", 3, settings(60_000, 2));
    let b = BuyerId(1);
    assert_eq!(
        r.engine.reserve(tee, 0, b, None, false),
        Err(ReserveError::InvalidQty),
        "zero qty"
    );
    assert_eq!(
        r.engine.reserve(tee, 11, b, None, false),
        Err(ReserveError::QtyAboveMax { max: 10 }),
        "above order max"
    );
    let unknown = SkuIdx::from(99);
    assert_eq!(
        r.engine.reserve(unknown, 1, b, None, false),
        Err(ReserveError::UnknownSku)
    );
    assert_eq!(
        r.engine.reserve(tee, 3, b, None, false),
        Err(ReserveError::LimitExceeded)
    );
    r.engine.reserve(tee, 2, b, None, false).unwrap();
    assert_eq!(
        r.engine.reserve(tee, 1, b, None, false),
        Err(ReserveError::LimitExceeded)
    );
    assert_eq!(
        r.engine.reserve(tee, 2, BuyerId(2), None, false),
        Err(ReserveError::NotEnoughAvailable { available: 1 }),
        "some left, fewer than asked"
    );
    r.engine.reserve(tee, 1, BuyerId(2), None, false).unwrap();
    assert_eq!(
        r.engine.reserve(tee, 1, BuyerId(3), None, false),
        Err(ReserveError::SoldOut),
        "none left"
    );
    r.engine.set_window(tee, SaleWindow::Paused).unwrap();
    assert_eq!(
        r.engine.reserve(tee, 1, BuyerId(4), None, false),
        Err(ReserveError::NotOpen)
    );
    r.engine.set_window(tee, SaleWindow::Closed).unwrap();
    assert_eq!(
        r.engine.reserve(tee, 1, BuyerId(4), None, false),
        Err(ReserveError::NotOpen)
    );
    r.assert_invariant();
}

#[test]
fn the_per_order_maximum_is_the_lower_of_the_skus_and_the_engines() {
    let r = Rig::new(EngineConfig {
        order_units_max: 5,
        ..EngineConfig::default()
    });
    let s = |order_units_max| SkuSettings {
        order_units_max,
        ..settings(60_000, 0)
    };
    let low = r.sku("low", 100, s(3));
    let high = r.sku("high", 100, s(10));
    assert!(r.engine.reserve(low, 3, BuyerId(1), None, false).is_ok());
    assert_eq!(
        r.engine.reserve(low, 4, BuyerId(1), None, false),
        Err(ReserveError::QtyAboveMax { max: 3 })
    );
    assert!(r.engine.reserve(high, 5, BuyerId(1), None, false).is_ok());
    assert_eq!(
        r.engine.reserve(high, 6, BuyerId(1), None, false),
        Err(ReserveError::QtyAboveMax { max: 5 })
    );
    let cart = [Line { sku: low, qty: 1 }, Line { sku: high, qty: 6 }];
    assert_eq!(
        r.engine.reserve_cart(&cart, BuyerId(1), None),
        Err(ReserveError::QtyAboveMax { max: 5 })
    );
}

#[test]
fn capacity_refusal_when_the_hold_table_is_full() {
    let r = Rig::new(EngineConfig {
        holds_max: 4,
        ..EngineConfig::default()
    });
    let tee = r.sku("tee", 100, settings(60_000, 0));
    for i in 0..4 {
        r.engine.reserve(tee, 1, BuyerId(i), None, false).unwrap();
    }
    assert_eq!(
        r.engine.reserve(tee, 1, BuyerId(9), None, false),
        Err(ReserveError::Capacity)
    );
    assert_eq!(
        r.counts(tee),
        Counts {
            available: 96,
            held: 4,
            sold: 0
        },
        "refusal changed nothing"
    );
    // A cart needing more slots than are free is refused whole.
    let r = Rig::new(EngineConfig {
        holds_max: 2,
        ..EngineConfig::default()
    });
    let a = r.sku("a", 10, settings(60_000, 0));
    let b = r.sku("b", 10, settings(60_000, 0));
    let c = r.sku("c", 10, settings(60_000, 0));
    let lines = [
        Line { sku: a, qty: 1 },
        Line { sku: b, qty: 1 },
        Line { sku: c, qty: 1 },
    ];
    assert_eq!(
        r.engine.reserve_cart(&lines, BuyerId(1), None),
        Err(ReserveError::Capacity)
    );
    assert_eq!(
        r.counts(a).available + r.counts(b).available + r.counts(c).available,
        30
    );
    assert!(
        r.engine.reserve_cart(&lines[..2], BuyerId(1), None).is_ok(),
        "slots were given back"
    );
}

#[test]
fn partial_fill_is_opt_in() {
    let r = Rig::small();
    let tee = r.sku("tee", 3, settings(60_000, 0));
    assert_eq!(
        r.engine.reserve(tee, 5, BuyerId(1), None, false),
        Err(ReserveError::NotEnoughAvailable { available: 3 })
    );
    let res = r.engine.reserve(tee, 5, BuyerId(1), None, true).unwrap();
    assert_eq!(res.units, 3);
    assert_eq!(
        r.engine.reserve(tee, 1, BuyerId(2), None, true),
        Err(ReserveError::SoldOut),
        "none left at all"
    );
    // Partial fill also stops at the buyer limit.
    let cap = r.sku("cap", 10, settings(60_000, 2));
    assert_eq!(
        r.engine
            .reserve(cap, 5, BuyerId(1), None, true)
            .unwrap()
            .units,
        2
    );
    assert_eq!(
        r.engine.reserve(cap, 1, BuyerId(1), None, true),
        Err(ReserveError::LimitExceeded)
    );
    // Not on carts.
    let lines = [Line { sku: tee, qty: 1 }];
    assert_eq!(
        r.engine.reserve_cart(&lines, BuyerId(1), None).map(|_| ()),
        Err(ReserveError::SoldOut)
    );
}

#[test]
fn carts_are_all_or_nothing() {
    let r = Rig::small();
    let tee = r.sku("tee", 5, settings(60_000, 0));
    let cap = r.sku("cap", 1, settings(30_000, 0));
    let bag = r.sku("bag", 5, settings(60_000, 1));
    let cart = [Line { sku: tee, qty: 2 }, Line { sku: cap, qty: 1 }];
    let res = r.engine.reserve_cart(&cart, BuyerId(1), None).unwrap();
    assert_eq!(res.units, 3);
    assert_eq!(
        res.deadline_ms,
        T0 + 30_000,
        "a cart lives as long as its strictest line"
    );
    // cap is now sold out: a second cart fails and leaves tee untouched.
    assert_eq!(
        r.engine.reserve_cart(&cart, BuyerId(2), None),
        Err(ReserveError::SoldOut)
    );
    assert_eq!(
        r.counts(tee),
        Counts {
            available: 3,
            held: 2,
            sold: 0
        }
    );
    // A limit failure on a later line rolls back the earlier ones, buyer counts included.
    r.engine.reserve(bag, 1, BuyerId(3), None, false).unwrap();
    let cart2 = [Line { sku: tee, qty: 1 }, Line { sku: bag, qty: 1 }];
    assert_eq!(
        r.engine.reserve_cart(&cart2, BuyerId(3), None),
        Err(ReserveError::LimitExceeded)
    );
    assert_eq!(r.counts(tee).available, 3);
    assert_eq!(r.engine.buyer_units(bag, BuyerId(3)), 1);
    // Invalid carts, each with its own refusal.
    assert_eq!(
        r.engine.reserve_cart(&[], BuyerId(1), None),
        Err(ReserveError::CartSize)
    );
    let dup = [Line { sku: tee, qty: 1 }, Line { sku: tee, qty: 1 }];
    assert_eq!(
        r.engine.reserve_cart(&dup, BuyerId(1), None),
        Err(ReserveError::DuplicateSku)
    );
    let skus: Vec<SkuIdx> = (0..=CART_LINES_MAX)
        .map(|i| r.sku(&format!("many{i}"), 1, settings(60_000, 0)))
        .collect();
    let full: Vec<Line> = skus[..CART_LINES_MAX]
        .iter()
        .map(|&sku| Line { sku, qty: 1 })
        .collect();
    let big: Vec<Line> = skus.iter().map(|&sku| Line { sku, qty: 1 }).collect();
    assert_eq!(
        r.engine.reserve_cart(&big, BuyerId(1), None),
        Err(ReserveError::CartSize),
        "one line above the maximum"
    );
    let most = r.engine.reserve_cart(&full, BuyerId(1), None).unwrap();
    assert_eq!(most.units, CART_LINES_MAX as u32, "a cart at the maximum");
    // Committing the cart commits every line; partial per line.
    let info = r.engine.hold(res.hold).unwrap();
    assert_eq!(info.lines.len(), 2);
    assert_eq!(
        r.engine.commit(res.hold, Some(&[1]), None),
        Err(HoldError::LinesMismatch),
        "one number per line"
    );
    assert_eq!(
        r.engine.commit(res.hold, Some(&[]), None),
        Err(HoldError::LinesMismatch)
    );
    assert_eq!(
        r.engine
            .commit(res.hold, Some(&[1; CART_LINES_MAX + 1]), None),
        Err(HoldError::LinesMismatch)
    );
    assert_eq!(
        r.engine.commit(res.hold, Some(&[3, 1]), None),
        Err(HoldError::QtyAboveHeld { held: 2 }),
        "more than held"
    );
    assert_eq!(
        r.engine.commit(res.hold, Some(&[0, 0]), None),
        Err(HoldError::InvalidQty),
        "nothing at all"
    );
    let s = r.engine.commit(res.hold, Some(&[1, 1]), None).unwrap();
    assert_eq!((s.sold, s.returned), (2, 1));
    assert_eq!(
        r.counts(tee),
        Counts {
            available: 4,
            held: 0,
            sold: 1
        }
    );
    assert_eq!(
        r.counts(cap),
        Counts {
            available: 0,
            held: 0,
            sold: 1
        }
    );
    r.assert_invariant();
}

#[test]
fn partial_commit_returns_the_rest() {
    let r = Rig::small();
    let tee = r.sku("tee", 5, settings(60_000, 3));
    let res = r.engine.reserve(tee, 3, BuyerId(1), None, false).unwrap();
    assert_eq!(
        r.engine.commit(res.hold, Some(&[0]), None),
        Err(HoldError::InvalidQty),
        "nothing sold"
    );
    assert_eq!(
        r.engine.commit(res.hold, Some(&[4]), None),
        Err(HoldError::QtyAboveHeld { held: 3 })
    );
    let s = r.engine.commit(res.hold, Some(&[1]), None).unwrap();
    assert_eq!((s.sold, s.returned), (1, 2));
    assert_eq!(
        r.counts(tee),
        Counts {
            available: 4,
            held: 0,
            sold: 1
        }
    );
    assert_eq!(
        r.engine.buyer_units(tee, BuyerId(1)),
        1,
        "only the bought unit counts"
    );
    assert_eq!(
        r.engine
            .reserve(tee, 2, BuyerId(1), None, false)
            .unwrap()
            .units,
        2
    );
    assert_eq!(
        r.engine.reserve(tee, 1, BuyerId(1), None, false),
        Err(ReserveError::LimitExceeded)
    );
}

#[test]
fn each_hold_ends_exactly_once() {
    let r = Rig::small();
    let tee = r.sku("tee", 5, settings(60_000, 0));
    let a = r
        .engine
        .reserve(tee, 1, BuyerId(1), None, false)
        .unwrap()
        .hold;
    let b = r
        .engine
        .reserve(tee, 1, BuyerId(1), None, false)
        .unwrap()
        .hold;
    r.engine.commit(a, None, None).unwrap();
    assert_eq!(
        r.engine.commit(a, None, None),
        Err(HoldError::AlreadyCommitted)
    );
    assert_eq!(r.engine.release(a, None), Err(HoldError::AlreadyCommitted));
    assert_eq!(
        r.engine.extend(a, 1000, None),
        Err(HoldError::AlreadyCommitted)
    );
    r.engine.release(b, None).unwrap();
    assert_eq!(r.engine.release(b, None), Err(HoldError::AlreadyReleased));
    assert_eq!(
        r.engine.commit(b, None, None),
        Err(HoldError::AlreadyReleased)
    );
    assert_eq!(
        r.counts(tee),
        Counts {
            available: 4,
            held: 0,
            sold: 1
        }
    );
}

#[test]
fn unknown_and_foreign_holds_are_not_found() {
    let r = Rig::small();
    let tee = r.sku("tee", 5, settings(60_000, 0));
    let real = r
        .engine
        .reserve(tee, 1, BuyerId(1), None, false)
        .unwrap()
        .hold;
    let forged: HoldId = format!("{:016x}", real.to_raw() + (1 << 24))
        .parse()
        .unwrap();
    assert_eq!(
        r.engine.commit(forged, None, None),
        Err(HoldError::HoldNotFound),
        "wrong generation"
    );
    let other_node: HoldId = format!("{:016x}", real.to_raw() | (3 << 42))
        .parse()
        .unwrap();
    assert_eq!(
        r.engine.release(other_node, None),
        Err(HoldError::HoldNotFound)
    );
    let far: HoldId = "0000000000ffffff".parse().unwrap();
    assert_eq!(
        r.engine.hold(far),
        Err(HoldError::HoldNotFound),
        "slot out of range"
    );
    let never: HoldId = "0000000000000005".parse().unwrap();
    assert_eq!(
        r.engine.hold(never),
        Err(HoldError::HoldNotFound),
        "free slot"
    );
    assert_eq!(
        r.engine.extend(real, 0, None),
        Err(HoldError::InvalidExtend)
    );
}

#[test]
fn extend_moves_the_deadline_up_to_the_lifetime_max() {
    let mut r = Rig::small();
    let tee = r.sku("tee", 5, settings(10_000, 0)); // lifetime max 30 s
    let res = r.engine.reserve(tee, 1, BuyerId(1), None, false).unwrap();
    assert_eq!(r.engine.extend(res.hold, 15_000, None), Ok(T0 + 25_000));
    assert_eq!(
        r.engine.extend(res.hold, 5_001, None),
        Err(HoldError::ExtendLimit)
    );
    assert_eq!(r.engine.extend(res.hold, 5_000, None), Ok(T0 + 30_000));
    r.advance(20_000);
    assert_eq!(
        r.engine.hold(res.hold).unwrap().state,
        HoldState::Held,
        "extended past the old deadline"
    );
    r.advance(10_100);
    assert_eq!(r.engine.hold(res.hold).unwrap().state, HoldState::Expired);
    assert_eq!(r.counts(tee).available, 5);
}

#[test]
fn catalog_operations_and_their_refusals() {
    let r = Rig::small();
    let tee = r.sku("tee", 5, settings(60_000, 0));
    let spec = SkuSpec {
        total: 1,
        settings: settings(60_000, 0),
        window: SaleWindow::Open,
    };
    assert_eq!(
        r.engine.create_sku("tee", spec),
        Err(CatalogError::AlreadyExists)
    );
    assert_eq!(
        r.engine.create_sku("bad id", spec),
        Err(CatalogError::InvalidSkuId)
    );
    let mut bad = spec;
    bad.settings.hold_ttl_ms = 0;
    assert_eq!(
        r.engine.create_sku("x", bad),
        Err(CatalogError::InvalidSettings {
            reason: "hold_ttl_ms must be at least 1"
        })
    );
    bad = spec;
    bad.total = limits::SKU_UNITS_MAX + 1;
    assert_eq!(
        r.engine.create_sku("x", bad),
        Err(CatalogError::TotalAboveMax),
        "a client error, never a retryable capacity one"
    );
    bad.total = limits::SKU_UNITS_MAX;
    let full = r.engine.create_sku("full", bad).expect("at the maximum");
    assert_eq!(r.engine.restock(full, 1), Err(CatalogError::TotalAboveMax));
    assert_eq!(
        r.engine.set_total(full, limits::SKU_UNITS_MAX + 1),
        Err(CatalogError::TotalAboveMax)
    );
    assert_eq!(r.engine.sku("tee"), Some(tee));
    assert_eq!(r.engine.sku_id(tee).as_deref(), Some("tee"));
    assert_eq!(r.engine.sku("nope"), None);

    let h = r
        .engine
        .reserve(tee, 2, BuyerId(1), None, false)
        .unwrap()
        .hold;
    r.engine.commit(h, Some(&[1]), None).unwrap();
    r.engine.reserve(tee, 1, BuyerId(1), None, false).unwrap();
    // available 3, held 1, sold 1
    assert_eq!(
        r.engine.restock(tee, 4).unwrap(),
        Counts {
            available: 7,
            held: 1,
            sold: 1
        }
    );
    assert_eq!(r.engine.restock(tee, 0), Err(CatalogError::InvalidQty));
    assert_eq!(r.engine.adjust_down(tee, 0), Err(CatalogError::InvalidQty));
    assert_eq!(
        r.engine.restock(tee, limits::SKU_UNITS_MAX - 8),
        Err(CatalogError::TotalAboveMax),
        "one past the maximum"
    );
    assert_eq!(
        r.engine.adjust_down(tee, 8),
        Err(CatalogError::NotEnoughAvailable { available: 7 }),
        "held and sold stay"
    );
    assert_eq!(
        r.engine.adjust_down(tee, 7).unwrap(),
        Counts {
            available: 0,
            held: 1,
            sold: 1
        }
    );
    assert_eq!(
        r.engine.set_total(tee, 1),
        Err(CatalogError::TotalBelowCommitted { committed: 2 })
    );
    assert_eq!(
        r.engine.set_total(tee, 10).unwrap(),
        Counts {
            available: 8,
            held: 1,
            sold: 1
        }
    );
    assert_eq!(
        r.engine.restock(SkuIdx::from(77), 1),
        Err(CatalogError::UnknownSku)
    );

    let mut s = settings(5_000, 1);
    r.engine.update_settings(tee, s).unwrap();
    assert_eq!(r.engine.snapshot(tee).unwrap().settings, s);
    s.order_units_max = 0;
    assert_eq!(
        r.engine.update_settings(tee, s),
        Err(CatalogError::InvalidSettings {
            reason: "order_units_max must be 1 to 2097151"
        })
    );
    r.assert_invariant();
}

#[test]
fn catalog_is_bounded() {
    let r = Rig::new(EngineConfig {
        skus_max: 2,
        ..EngineConfig::default()
    });
    r.sku("a", 1, settings(1000, 0));
    r.sku("b", 1, settings(1000, 0));
    let spec = SkuSpec {
        total: 1,
        settings: settings(1000, 0),
        window: SaleWindow::Open,
    };
    assert_eq!(r.engine.create_sku("c", spec), Err(CatalogError::Capacity));
    assert_eq!(r.engine.sku_count(), 2);
}

#[test]
fn scheduled_windows_open_on_time() {
    let mut r = Rig::with_events();
    let spec = SkuSpec {
        total: 3,
        settings: settings(60_000, 0),
        window: SaleWindow::Scheduled {
            opens_at_ms: T0 + 5_000,
        },
    };
    let drop = r.engine.create_sku("drop", spec).unwrap();
    assert_eq!(
        r.engine.reserve(drop, 1, BuyerId(1), None, false),
        Err(ReserveError::NotOpen)
    );
    r.drain_events();
    assert_eq!(r.advance(4_999).windows_opened, 0);
    r.clock.advance(1);
    // Reservations work from the instant, even before the expirer announces it.
    assert!(r.engine.reserve(drop, 1, BuyerId(1), None, false).is_ok());
    assert_eq!(r.expirer.run().windows_opened, 1);
    assert_eq!(r.engine.snapshot(drop).unwrap().window, SaleWindow::Open);
    let events = r.drain_events();
    assert!(events.iter().any(|e| e.kind
        == EventKind::WindowChanged {
            sku: drop,
            window: SaleWindow::Open
        }));
}

#[test]
fn per_buyer_limit_counts_live_holds_and_sales_but_not_released_ones() {
    let mut r = Rig::small();
    let tee = r.sku("tee", 10, settings(1_000, 2));
    let b = BuyerId(5);
    let h1 = r.engine.reserve(tee, 1, b, None, false).unwrap().hold;
    let h2 = r.engine.reserve(tee, 1, b, None, false).unwrap().hold;
    assert_eq!(
        r.engine.reserve(tee, 1, b, None, false),
        Err(ReserveError::LimitExceeded)
    );
    r.engine.commit(h1, None, None).unwrap();
    assert_eq!(
        r.engine.reserve(tee, 1, b, None, false),
        Err(ReserveError::LimitExceeded),
        "a sale still counts"
    );
    r.engine.release(h2, None).unwrap();
    let h3 = r.engine.reserve(tee, 1, b, None, false).unwrap().hold;
    r.advance(1_100);
    assert_eq!(r.engine.hold(h3).unwrap().state, HoldState::Expired);
    assert_eq!(
        r.engine.buyer_units(tee, b),
        1,
        "expiry gives the units back to the limit too"
    );
    assert!(r.engine.reserve(tee, 1, b, None, false).is_ok());
    // A limit set after a hold was taken never underflows when it ends.
    let cap = r.sku("cap", 10, settings(1_000, 0));
    let h = r.engine.reserve(cap, 3, b, None, false).unwrap().hold;
    r.engine.update_settings(cap, settings(1_000, 1)).unwrap();
    r.engine.release(h, None).unwrap();
    assert_eq!(r.engine.buyer_units(cap, b), 0);
}

#[test]
fn config_is_validated() {
    let clock = std::sync::Arc::new(ManualClock::new(T0));
    for bad in [
        EngineConfig {
            holds_max: 1,
            ..EngineConfig::default()
        },
        EngineConfig {
            skus_max: 0,
            ..EngineConfig::default()
        },
        EngineConfig {
            events_max: 10,
            events_headroom: 10,
            ..EngineConfig::default()
        },
        EngineConfig {
            expiry_wheel_buckets: 100,
            ..EngineConfig::default()
        },
        EngineConfig {
            order_units_max: 0,
            ..EngineConfig::default()
        },
    ] {
        assert!(Engine::new(bad, clock.clone()).is_err());
    }
}
