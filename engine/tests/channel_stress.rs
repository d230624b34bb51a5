//! Channels under concurrency: two channels fighting for the last shared
//! units while one of them has a reserved quota, and quota moved back and
//! forth during a burst of reservations, commits and releases on every
//! channel and on the pool. Checked while running and at the end: the SKU's
//! total never changes (not even mid-move), `available + held + sold ==
//! total`, no quota or cap is passed, and the channels add up to the SKU.

mod common;
use common::*;
use holdfast_engine::*;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// xorshift64*: a tiny deterministic generator, one per thread.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// Sets the flag when dropped, also while unwinding: a thread that fails
/// stops the others instead of leaving them spinning (a failing test fails,
/// it never hangs).
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn rig() -> Rig {
    Rig::new(EngineConfig {
        skus_max: 512,
        holds_max: 1 << 16,
        ..EngineConfig::default()
    })
}

#[test]
fn two_channels_fight_for_the_last_shared_units_and_the_quota_holds() {
    const QUOTA: u32 = 3;
    const SHARED: u32 = 4;
    const ROUNDS: usize = 300;
    let r = rig();
    for round in 0..ROUNDS {
        let sku = r.sku(
            &format!("drop-{round}"),
            QUOTA + SHARED,
            settings(60_000, 0),
        );
        r.engine
            .configure_channel(sku, "live", QUOTA, None)
            .unwrap();
        r.engine.configure_channel(sku, "web", 0, None).unwrap();
        let start = Barrier::new(2);
        let grab = |channel: &str| {
            start.wait();
            let mut got = 0u32;
            loop {
                match r
                    .engine
                    .reserve_on(sku, 1, BuyerId(got.into()), None, false, Some(channel))
                {
                    Ok(h) => got += h.units,
                    Err(ReserveError::SoldOut) => return got,
                    Err(e) => panic!("{channel}: {e:?}"),
                }
            }
        };
        let (live, web) = std::thread::scope(|s| {
            let live = s.spawn(|| grab("live"));
            let web = s.spawn(|| grab("web"));
            (live.join().unwrap(), web.join().unwrap())
        });
        assert_eq!(
            live + web,
            QUOTA + SHARED,
            "every unit sold once, none twice"
        );
        assert!(live >= QUOTA, "the quota is the live channel's: {live}");
        assert!(web <= SHARED, "the web shop never sells the quota: {web}");
        let snap = r.engine.snapshot(sku).unwrap();
        assert_eq!(
            snap.counts,
            Counts {
                available: 0,
                held: QUOTA + SHARED,
                sold: 0
            }
        );
        assert_eq!(snap.channels[0].quota.held, QUOTA);
        assert_eq!(
            (snap.channels[0].held, snap.channels[1].held),
            (live, web),
            "per-channel counts match what each was told"
        );
    }
}

#[test]
fn quota_moves_during_a_burst_never_change_the_total_or_break_a_bound() {
    const TOTAL: u32 = 2_000;
    const WEB_CAP: u32 = 600;
    const OPS: usize = 20_000;
    /// Buyers keep going until the admin moved this often and the reader
    /// read this often: the overlap never depends on the scheduler.
    const MOVES_MIN: u64 = 200;
    const READS_MIN: u64 = 200;
    let r = rig();
    let sku = r.sku("tee", TOTAL, settings(60_000, 0));
    r.engine.configure_channel(sku, "live", 100, None).unwrap();
    r.engine
        .configure_channel(sku, "web", 0, Some(WEB_CAP))
        .unwrap();
    let done = AtomicBool::new(false);
    let (moved, read) = (AtomicU64::new(0), AtomicU64::new(0));
    let channels = [Some("live"), Some("web"), None];

    let (moves, reads, sold) = std::thread::scope(|s| {
        let buyers: Vec<_> = (0..2u64)
            .map(|t| {
                let (r, moved, read, done) = (&r, &moved, &read, &done);
                s.spawn(move || {
                    let mut rng = Rng(0x9e37_79b9 + t);
                    let mut live = Vec::new();
                    let mut sold = [0u32; 3];
                    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
                    for i in 0.. {
                        let overlapped = moved.load(Ordering::Relaxed) >= MOVES_MIN
                            && read.load(Ordering::Relaxed) >= READS_MIN;
                        // `done` before the end: the admin or the reader failed.
                        if (i >= OPS && overlapped) || done.load(Ordering::Relaxed) {
                            break;
                        }
                        assert!(std::time::Instant::now() < deadline, "no overlap in 120 s");
                        let pick = rng.below(3) as usize;
                        let qty = 1 + rng.below(3) as u32;
                        if let Ok(h) = r.engine.reserve_on(
                            sku,
                            qty,
                            BuyerId(i as u64),
                            None,
                            true,
                            channels[pick],
                        ) {
                            live.push((h.hold, pick, h.units));
                        }
                        if live.len() > 20 || (rng.below(2) == 0 && !live.is_empty()) {
                            let (h, pick, units) =
                                live.swap_remove(rng.below(live.len() as u64) as usize);
                            if rng.below(50) == 0 {
                                r.engine.commit(h, None, None).unwrap();
                                sold[pick] += units;
                            } else {
                                r.engine.release(h, None).unwrap();
                            }
                        }
                    }
                    for (h, _, _) in live {
                        r.engine.release(h, None).unwrap();
                    }
                    sold
                })
            })
            .collect();
        let admin = s.spawn(|| {
            let _stop = StopOnDrop(&done);
            let mut rng = Rng(7);
            let mut moves = 0u64;
            while !done.load(Ordering::Relaxed) {
                let units = rng.below(41) as i64 - 20;
                if units != 0 && r.engine.move_quota(sku, "live", units).is_ok() {
                    moves += 1;
                    moved.store(moves, Ordering::Relaxed);
                }
            }
            moves
        });
        let reader = s.spawn(|| {
            let _stop = StopOnDrop(&done);
            let mut reads = 0u64;
            while !done.load(Ordering::Relaxed) {
                let snap = r.engine.snapshot(sku).unwrap();
                let c = snap.counts;
                assert_eq!(c.total(), TOTAL, "total seen mid-move: {c:?}");
                let web = &snap.channels[1];
                assert!(web.held + web.sold <= WEB_CAP, "cap passed: {web:?}");
                reads += 1;
                read.store(reads, Ordering::Relaxed);
            }
            reads
        });
        let stop = StopOnDrop(&done);
        let mut sold = [0u32; 3];
        for b in buyers {
            for (all, one) in sold.iter_mut().zip(b.join().unwrap()) {
                *all += one;
            }
        }
        drop(stop);
        (admin.join().unwrap(), reader.join().unwrap(), sold)
    });
    assert!(
        moves >= MOVES_MIN && reads >= READS_MIN,
        "the admin moved ({moves}) and the reader read ({reads})"
    );

    let snap = r.engine.snapshot(sku).unwrap();
    let c = snap.counts;
    assert_eq!((c.total(), c.held), (TOTAL, 0), "every hold ended: {c:?}");
    let (live, web) = (&snap.channels[0], &snap.channels[1]);
    assert_eq!((live.held, web.held), (0, 0));
    assert!(web.sold <= WEB_CAP);
    assert!(
        live.quota.sold <= live.sold,
        "quota sales are the channel's"
    );
    assert_eq!(
        [live.sold, web.sold, c.sold - live.sold - web.sold],
        sold,
        "per-channel sales are what the buyers were told, and add up to the sku's"
    );
    r.assert_invariant();
}
