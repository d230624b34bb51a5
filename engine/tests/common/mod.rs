//! Shared helpers for the engine's integration tests.
#![allow(dead_code)]

use holdfast_engine::*;
use std::sync::Arc;

/// A fixed, realistic start time (2026-01-01T00:00:00Z).
pub const T0: u64 = 1_767_225_600_000;

pub struct Rig {
    pub engine: Arc<Engine>,
    pub expirer: Expirer,
    pub clock: Arc<ManualClock>,
}

impl Rig {
    pub fn new(config: EngineConfig) -> Self {
        let clock = Arc::new(ManualClock::new(T0));
        let (engine, expirer) = Engine::new(config, clock.clone()).expect("valid config");
        Self {
            engine,
            expirer,
            clock,
        }
    }

    pub fn with_events() -> Self {
        Self::new(EngineConfig {
            events_max: 1 << 16,
            events_headroom: 64,
            ..EngineConfig::default()
        })
    }

    pub fn small() -> Self {
        Self::new(EngineConfig::default())
    }

    pub fn sku(&self, id: &str, total: u32, settings: SkuSettings) -> SkuIdx {
        self.engine
            .create_sku(
                id,
                SkuSpec {
                    total,
                    settings,
                    window: SaleWindow::Open,
                },
            )
            .expect("create sku")
    }

    pub fn counts(&self, sku: SkuIdx) -> Counts {
        self.engine.snapshot(sku).unwrap().counts
    }

    pub fn advance(&mut self, ms: u64) -> ExpiryReport {
        self.clock.advance(ms);
        self.expirer.run()
    }

    pub fn drain_events(&self) -> Vec<Event> {
        let mut out = Vec::new();
        if let Some(log) = self.engine.events() {
            log.drain_into(&mut out, usize::MAX);
        }
        out.sort_by_key(|e| e.seq);
        out
    }

    pub fn assert_invariant(&self) {
        for s in self.engine.snapshots() {
            let c = s.counts;
            assert_eq!(c.available + c.held + c.sold, c.total(), "{}", s.id);
        }
    }
}

pub fn settings(ttl_ms: u64, buyer_limit: u32) -> SkuSettings {
    SkuSettings {
        buyer_limit,
        hold_ttl_ms: ttl_ms,
        hold_lifetime_max_ms: ttl_ms * 3,
        order_units_max: 10,
    }
}
