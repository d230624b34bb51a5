//! The HTTP API's JSON bodies (`docs/API.md`) that are not websocket
//! messages: lists, hold views, admin requests.

use crate::msg::SkuState;
use crate::names::{HoldStatus, SaleState};
use serde::{Deserialize, Serialize};

/// `GET /api/skus` (and `GET /api/shows/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkuList {
    pub ts_ms: u64,
    pub skus: Vec<SkuState>,
}

/// A hold as returned by `GET /api/holds/{hold}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldView {
    pub hold: String,
    pub state: HoldStatus,
    pub deadline_ms: u64,
    pub lines: Vec<HoldLineView>,
}

/// One line of a [`HoldView`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldLineView {
    pub sku: String,
    pub qty: u32,
    pub sold: u32,
}

/// Sale window in admin requests: `{"state":"open"}`,
/// `{"state":"scheduled","opens_at_ms":1767225600000}`, `paused`, `closed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowReq {
    pub state: SaleState,
    #[serde(default)]
    pub opens_at_ms: Option<u64>,
}

/// A SKU definition: in the catalog file and in `POST /api/admin/skus`.
/// Unset fields take the defaults shown in `docs/API.md`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SkuDef {
    pub id: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub price_minor: u64,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub image_url: String,
    #[serde(default)]
    pub show: Option<String>,
    #[serde(default)]
    pub total: u32,
    #[serde(default)]
    pub buyer_limit: u32,
    #[serde(default)]
    pub hold_ttl_ms: Option<u64>,
    #[serde(default)]
    pub hold_lifetime_max_ms: Option<u64>,
    #[serde(default)]
    pub order_units_max: Option<u32>,
    #[serde(default)]
    pub window: Option<WindowReq>,
    /// Sales channels (at most 8); without, the SKU has one common pool.
    #[serde(default)]
    pub channels: Vec<ChannelDef>,
}

/// One sales channel in a SKU definition or patch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelDef {
    /// 1 to 32 of `A-Z a-z 0-9 . _ -`.
    pub id: String,
    /// Units reserved for this channel alone, taken from the common pool
    /// (default 0: it shares the pool).
    #[serde(default)]
    pub quota: Option<u32>,
    /// Most units it may hold plus sell (default: no cap).
    #[serde(default)]
    pub cap: Option<u32>,
}

/// `POST /api/admin/skus/{id}/channels/{channel}/move`: `units` unsold
/// units from the common pool into the channel's quota (positive), or from
/// its quota back to the pool (negative).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveReq {
    pub units: i64,
}

/// `PATCH /api/admin/skus/{id}`: any subset of fields to change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SkuPatch {
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub price_minor: Option<u64>,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub image_url: Option<String>,
    #[serde(default)]
    pub total: Option<u32>,
    #[serde(default)]
    pub buyer_limit: Option<u32>,
    #[serde(default)]
    pub hold_ttl_ms: Option<u64>,
    #[serde(default)]
    pub hold_lifetime_max_ms: Option<u64>,
    #[serde(default)]
    pub order_units_max: Option<u32>,
    /// Channels to add or change (a listed channel's quota and cap are set
    /// to what is given; channels not listed are left as they are).
    #[serde(default)]
    pub channels: Option<Vec<ChannelDef>>,
}

/// `POST /api/admin/buyers/{id}/erase`: what was removed or blanked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuyerErased {
    /// The buyer as holdfast stored it (its pseudonym, or its id in the
    /// clear with `--buyer-ids-in-clear`).
    pub buyer: String,
    /// Stored names forgotten in memory (0 or 1).
    pub memory_names: u64,
    /// Per-SKU limit records of the engine's memory zeroed and blanked.
    pub memory_limit_records: u64,
    /// `hf:buyers` fields deleted (0 or 1).
    pub redis_names: u64,
    /// Per-SKU limit records deleted in Redis.
    pub redis_limit_records: u64,
    /// Order-stream entries naming the buyer, deleted.
    pub order_entries: u64,
    /// Webhook events kept in memory (queued, retrying, dead letters,
    /// delivery history) whose `buyer` was blanked.
    #[serde(default)]
    pub webhook_events: u64,
    /// Entries of the webhook streams in Redis (`<prefix>:webhooks:<id>`
    /// and `:dead`) naming the buyer, replaced by a copy without it.
    #[serde(default)]
    pub webhook_stream_entries: u64,
    /// Multi-node mode (`--redis-cluster`): the node slots erased (every
    /// node that ever joined, alive or not); the counts above are summed
    /// over them. Absent on a single node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<u64>,
}

/// `POST /api/admin/skus/{id}/restock` and `/adjust`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QtyReq {
    pub qty: u32,
}
