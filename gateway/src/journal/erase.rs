//! Erasing a buyer from Redis (`POST /api/admin/buyers/{id}/erase`): the
//! stored name in `hf:buyers`, the per-buyer limit records of every SKU,
//! and every order-stream entry that names the buyer (deleted with `XDEL`:
//! a stream entry cannot be rewritten in place, and a redacted copy would
//! read as a second order to a fulfilment consumer).
//!
//! The webhook streams under the same prefix get [`erase_all`]'s pass too
//! (found by `SCAN`, so an endpoint deleted since is not missed).
//!
//! The writer's mirror forgets the buyer at its next batch
//! ([`super::Journal::forget_buyer`]), so a later re-write of the whole
//! state does not bring the records back. It must never touch a live
//! hold: the caller refuses the erasure while the buyer has one.

use super::conn::Conn;
use super::keys::Keys;
use redis::aio::ConnectionLike;
use std::sync::Arc;

pub use super::pages::{ERASE_SCAN_COUNT, StreamPages};

/// What an erasure removed from Redis.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Erased {
    /// `hf:buyers` fields (0 or 1).
    pub names: u64,
    /// Per-SKU limit records (`hf:{<sku>}:buyers` fields).
    pub limit_records: u64,
    /// Order-stream entries deleted.
    pub order_entries: u64,
    /// Webhook stream entries replaced by a copy without the buyer.
    pub webhook_stream_entries: u64,
}

impl std::ops::AddAssign for Erased {
    fn add_assign(&mut self, other: Self) {
        self.names += other.names;
        self.limit_records += other.limit_records;
        self.order_entries += other.order_entries;
        self.webhook_stream_entries += other.webhook_stream_entries;
    }
}

/// Removes buyer `field` (its hex hash) from the journal under `keys`, and
/// every order-stream entry whose `buyer` is one of `names`: its stored
/// name, and its hex hash (what an entry says of a buyer whose name the
/// writer did not know, and what an adopted node's commits say).
/// Every key is under `keys`' prefix: in a cluster, one node's slot.
pub async fn erase<C: ConnectionLike + Send>(
    conn: &mut C,
    keys: &Keys,
    skus: &[Arc<str>],
    field: &str,
    names: &[&str],
) -> redis::RedisResult<Erased> {
    let mut pipe = redis::pipe();
    pipe.hdel(keys.buyer_names(), field);
    for sku in skus {
        pipe.hdel(keys.buyers(sku), field);
    }
    let removed: Vec<u64> = pipe.query_async(conn).await?;
    let mut erased = Erased {
        names: removed.first().copied().unwrap_or(0),
        limit_records: removed.iter().skip(1).sum(),
        ..Erased::default()
    };
    // The stream in pages, oldest first; each page's matches deleted at
    // once. The stream is bounded (`--orders-maxlen`, `--orders-max-age-ms`).
    let mut pages = StreamPages::new(keys.orders());
    while let Some(page) = pages.next(conn).await? {
        let ids: Vec<&str> = page
            .iter()
            .filter(|e| {
                e.get::<String>("buyer")
                    .is_some_and(|b| names.contains(&b.as_str()))
            })
            .map(|e| e.id.as_str())
            .collect();
        if !ids.is_empty() {
            let n: u64 = redis::cmd("XDEL")
                .arg(keys.orders())
                .arg(&ids)
                .query_async(conn)
                .await?;
            erased.order_entries += n;
        }
    }
    Ok(erased)
}

/// [`erase`], then every webhook stream under the same prefix (see
/// [`crate::webhooks::stream::erase_buyer_in`]).
pub async fn erase_all(
    conn: &mut Conn,
    keys: &Keys,
    skus: &[Arc<str>],
    field: &str,
    names: &[&str],
) -> redis::RedisResult<Erased> {
    let mut erased = erase(conn, keys, skus, field, names).await?;
    let pattern = crate::webhooks::stream::streams_pattern(keys.prefix());
    for key in conn.scan_keys(&pattern).await? {
        erased.webhook_stream_entries +=
            crate::webhooks::stream::erase_buyer_in(conn, &key, names).await?;
    }
    Ok(erased)
}
