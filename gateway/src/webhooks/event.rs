//! The events sent to shop backends and their JSON body (the Standard
//! Webhooks payload shape: `type`, `timestamp`, `data`). An event's id is
//! its `webhook-id`: the same on every try and every replay, so receivers
//! dedupe by it.

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    /// A hold was committed (paid): one per hold, with its lines.
    #[serde(rename = "order.committed")]
    OrderCommitted,
    /// A hold was released by the buyer or the shop.
    #[serde(rename = "hold.released")]
    HoldReleased,
    /// A hold's deadline passed (opt-in: there are many).
    #[serde(rename = "hold.expired")]
    HoldExpired,
    /// Nothing available and nothing held.
    #[serde(rename = "sku.sold_out")]
    SkuSoldOut,
    /// Units on sale again after a sell-out.
    #[serde(rename = "sku.back_in_stock")]
    SkuBackInStock,
    /// Available units fell to the SKU's low-stock threshold.
    #[serde(rename = "sku.low_stock")]
    SkuLowStock,
    /// A SKU's counts changed (coalesced: at most one per SKU per interval
    /// per endpoint, carrying the latest counts).
    #[serde(rename = "stock.changed")]
    StockChanged,
}

impl EventType {
    pub const ALL: [EventType; 7] = [
        Self::OrderCommitted,
        Self::HoldReleased,
        Self::HoldExpired,
        Self::SkuSoldOut,
        Self::SkuBackInStock,
        Self::SkuLowStock,
        Self::StockChanged,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::OrderCommitted => "order.committed",
            Self::HoldReleased => "hold.released",
            Self::HoldExpired => "hold.expired",
            Self::SkuSoldOut => "sku.sold_out",
            Self::SkuBackInStock => "sku.back_in_stock",
            Self::SkuLowStock => "sku.low_stock",
            Self::StockChanged => "stock.changed",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// Sent to an endpoint that names no events: all but `hold.expired`.
    pub fn default_on(self) -> bool {
        self != Self::HoldExpired
    }
}

/// One event, as queued and sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// `webhook-id` (`msg_<hex>`).
    pub id: String,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub ts_ms: u64,
    pub data: serde_json::Value,
}

impl Event {
    /// The request body.
    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "type": self.kind.as_str(),
            "timestamp": rfc3339_ms(self.ts_ms),
            "data": self.data,
        }))
        .expect("an event always serialises")
    }
}

/// Makes event ids: a random prefix per process and a counter, so ids
/// never repeat across restarts.
#[derive(Debug)]
pub struct EventIds {
    prefix: u64,
    next: AtomicU64,
}

impl Default for EventIds {
    fn default() -> Self {
        Self {
            prefix: crate::ids::Ids::random_key().0,
            next: AtomicU64::new(1),
        }
    }
}

impl EventIds {
    pub fn next(&self) -> String {
        // Relaxed: only uniqueness matters, which fetch_add gives.
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("msg_{:016x}{n:012x}", self.prefix)
    }
}

/// `2026-12-03T13:34:25.123Z` (UTC) from ms since the Unix epoch.
pub fn rfc3339_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_times_and_ids() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
            assert_eq!(
                serde_json::to_string(&t).unwrap(),
                format!("\"{}\"", t.as_str())
            );
        }
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_614_265_330_123), "2021-02-25T15:02:10.123Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        let ids = EventIds::default();
        assert_ne!(ids.next(), ids.next());
    }
}
