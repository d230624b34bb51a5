//! A fixed amount of reserve→commit pairs on one hot SKU with full
//! bookkeeping (events on and drained, expirer running), for instruction
//! counting: `valgrind --tool=callgrind target/release/examples/pairs 200000`
//! gives a repeatable cost per pair whatever else the machine is doing.

use holdfast_engine::{
    BuyerId, Engine, EngineConfig, ManualClock, SaleWindow, SkuSettings, SkuSpec,
};
use std::sync::Arc;

fn main() {
    let pairs: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let clock = Arc::new(ManualClock::new(1_767_225_600_000));
    let config = EngineConfig {
        events_max: 1 << 16,
        events_headroom: 1024,
        ..EngineConfig::default()
    };
    let (engine, mut expirer) = Engine::new(config, clock).expect("valid config");
    let spec = SkuSpec {
        total: 2_000_000,
        settings: SkuSettings::default(),
        window: SaleWindow::Open,
    };
    let mut sku = engine.create_sku("hot-0", spec).expect("sku");
    let mut sink = Vec::with_capacity(4096);
    let mut drops = 0;
    for i in 0..pairs {
        let hold = match engine.reserve(sku, 1, BuyerId(i & 63), None, false) {
            Ok(r) => r.hold,
            Err(_) => {
                drops += 1;
                sku = engine
                    .create_sku(&format!("hot-{drops}"), spec)
                    .expect("sku");
                engine
                    .reserve(sku, 1, BuyerId(i & 63), None, false)
                    .expect("fresh stock")
                    .hold
            }
        };
        engine.commit(hold, None, None).expect("commit");
        if i % 1024 == 1023 {
            sink.clear();
            engine
                .events()
                .expect("events on")
                .drain_into(&mut sink, usize::MAX);
            expirer.run();
        }
    }
    std::hint::black_box(&sink);
    println!("{pairs} pairs");
}
