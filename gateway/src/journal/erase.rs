//! Erasing a buyer from Redis (`POST /api/admin/buyers/{id}/erase`): the
//! stored name in `hf:buyers`, the per-buyer limit records of every SKU,
//! and every order-stream entry that names the buyer (deleted with `XDEL`:
//! a stream entry cannot be rewritten in place, and a redacted copy would
//! read as a second order to a fulfilment consumer).
//!
//! The writer's mirror forgets the buyer at its next batch
//! ([`super::Journal::forget_buyer`]), so a later re-write of the whole
//! state does not bring the records back. It must never touch a live
//! hold: the caller refuses the erasure while the buyer has one.

use super::ended::EndedLookup;
use crate::error::ApiError;
use std::sync::Arc;

/// Order-stream entries read per `XRANGE` while looking for the buyer's.
pub const ERASE_SCAN_COUNT: usize = 1_000;

/// What an erasure removed from Redis.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Erased {
    /// `hf:buyers` fields (0 or 1).
    pub names: u64,
    /// Per-SKU limit records (`hf:{<sku>}:buyers` fields).
    pub limit_records: u64,
    /// Order-stream entries deleted.
    pub order_entries: u64,
}

/// Removes buyer `field` (its hex hash) and every order-stream entry whose
/// `buyer` is `stored` (its pseudonym, or its id in the clear).
pub async fn erase(
    redis: &EndedLookup,
    skus: &[Arc<str>],
    field: &str,
    stored: &str,
) -> Result<Erased, ApiError> {
    let keys = redis.keys();
    let mut pipe = redis::pipe();
    pipe.hdel(keys.buyer_names(), field);
    for sku in skus {
        pipe.hdel(keys.buyers(sku), field);
    }
    let removed: Vec<u64> = redis.query(&pipe).await?;
    let mut erased = Erased {
        names: removed.first().copied().unwrap_or(0),
        limit_records: removed.iter().skip(1).sum(),
        order_entries: 0,
    };
    // The stream in pages, oldest first; each page's matches deleted at
    // once. The stream is bounded (`--orders-maxlen`, `--orders-max-age-ms`).
    let mut start = "-".to_string();
    loop {
        let mut page = redis::pipe();
        page.cmd("XRANGE")
            .arg(keys.orders())
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(ERASE_SCAN_COUNT);
        let (reply,): (redis::streams::StreamRangeReply,) = redis.query(&page).await?;
        let Some(last) = reply.ids.last().map(|e| e.id.clone()) else {
            break;
        };
        let ids: Vec<&str> = reply
            .ids
            .iter()
            .filter(|e| e.get::<String>("buyer").as_deref() == Some(stored))
            .map(|e| e.id.as_str())
            .collect();
        if !ids.is_empty() {
            let mut del = redis::pipe();
            del.cmd("XDEL").arg(keys.orders()).arg(&ids);
            let (n,): (u64,) = redis.query(&del).await?;
            erased.order_entries += n;
        }
        if reply.ids.len() < ERASE_SCAN_COUNT {
            break;
        }
        start = format!("({last}");
    }
    Ok(erased)
}
