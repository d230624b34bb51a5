//! Building an engine and its one [`Expirer`]: every table is allocated
//! here, at start-up, from the bounds in [`EngineConfig`]. The only file
//! that names both the engine and the expirer, so neither imports the
//! other's builder.

use super::Engine;
use crate::buyer_limit::BuyerTable;
use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::event::EventLog;
use crate::expiry::Expirer;
use crate::hold::HoldTable;
use crate::idempotency::RequestTable;
use crate::inbox::Inbox;
use crate::limits::{ConfigError, EngineConfig};
use crossbeam::queue::ArrayQueue;
use std::sync::Arc;

impl Engine {
    /// Builds an engine and its expirer. Allocates every table now.
    pub fn new(
        config: EngineConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<(Arc<Self>, Expirer), ConfigError> {
        Self::build(config, clock, &|_| false)
    }

    /// Builds an engine whose hold slots `taken` are kept out of the free
    /// list (recovery places restored holds there).
    pub(crate) fn build(
        config: EngineConfig,
        clock: Arc<dyn Clock>,
        taken: &dyn Fn(u32) -> bool,
    ) -> Result<(Arc<Self>, Expirer), ConfigError> {
        config.validate()?;
        // Every lane needs at least one hold slot.
        let lanes = if config.lanes > config.holds_max {
            1 << config.holds_max.ilog2()
        } else {
            config.lanes
        };
        let config = EngineConfig { lanes, ..config };
        let now = clock.now_ms();
        let engine = Arc::new(Self {
            catalog: Catalog::new(config.skus_max),
            holds: HoldTable::new(
                config.holds_max,
                config.lanes,
                config.node_id,
                config.incarnation,
                taken,
            ),
            buyers: BuyerTable::new(config.buyer_entries_max),
            requests: RequestTable::new(config.request_entries_max, config.request_window_ms, now),
            events: (config.events_max > 0).then(|| {
                EventLog::new(
                    config.events_max,
                    config.events_headroom,
                    config.lanes as usize,
                )
            }),
            inbox: Inbox::new(
                config.lanes as usize,
                config.holds_max,
                config.expiry_tick_ms,
            ),
            changed: ArrayQueue::new(config.skus_max as usize),
            scheduled: ArrayQueue::new(config.skus_max as usize),
            clock,
            config,
        });
        // The only expirer this engine will have.
        let expirer = Expirer::new(engine.clone());
        Ok((engine, expirer))
    }
}
