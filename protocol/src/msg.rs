//! The websocket messages, in both encodings (see `docs/PROTOCOL.md`):
//! - JSON text frames (the default, for browsers), internally tagged:
//!   `{"op":"reserve", ...}` from clients, `{"type":"update", ...}` from the
//!   server;
//! - postcard binary frames when the client negotiates
//!   [`crate::SUBPROTOCOL_BINARY`]. Postcard is not self-describing, so the
//!   binary form uses externally tagged mirror enums ([`BinClientMsg`],
//!   [`BinServerMsg`]) around the very same payload structs; their variant
//!   index is the wire tag, pinned at compile time.
//!
//! Each direction's variants are listed once, in [`messages!`], which
//! generates the JSON enum, the binary enum, a borrowing twin for encoding
//! without a clone, and the conversions.
//!
//! Nothing in this module may use `skip_serializing_if`: postcard needs
//! every field present.

use crate::code::Code;
use crate::names::{Role, SaleState, StockEventKind};
use serde::{Deserialize, Serialize};

/// Declares one direction's messages: the JSON enum (internally tagged by
/// `tag`, variant names in `snake_case`), the postcard enum (same variants,
/// same payloads, externally tagged by index), a borrowing twin of the
/// postcard enum, and conversions. Each variant's postcard index is written
/// beside it and checked at compile time against its position, so
/// reordering the list cannot silently change the binary protocol.
macro_rules! messages {
    (
        $(#[$json_doc:meta])* $json:ident, tag = $tag:literal;
        $(#[$bin_doc:meta])* $bin:ident, $borrowed:ident;
        $( $variant:ident($ty:ty) = $index:literal ),* $(,)?
    ) => {
        $(#[$json_doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(tag = $tag, rename_all = "snake_case")]
        pub enum $json { $($variant($ty)),* }

        $(#[$bin_doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        pub enum $bin { $($variant($ty)),* }

        /// Encodes like the binary enum, from a borrowed message.
        #[derive(Serialize)]
        enum $borrowed<'a> { $($variant(&'a $ty)),* }

        const _: () = {
            let pinned: &[u32] = &[$($index),*];
            let mut i = 0;
            while i < pinned.len() {
                assert!(pinned[i] as usize == i, "a variant's postcard index moved");
                i += 1;
            }
        };

        impl $json {
            /// Every variant's name and postcard index, for docs and tests.
            pub const VARIANTS: &'static [(&'static str, u32)] = &[$((stringify!($variant), $index)),*];

            fn as_bin(&self) -> $borrowed<'_> {
                match self { $(Self::$variant(x) => $borrowed::$variant(x)),* }
            }

            /// This message's postcard variant index.
            pub fn postcard_index(&self) -> u32 {
                match self { $(Self::$variant(_) => $index),* }
            }
        }

        impl From<$json> for $bin {
            fn from(m: $json) -> Self {
                match m { $($json::$variant(x) => $bin::$variant(x)),* }
            }
        }

        impl From<$bin> for $json {
            fn from(m: $bin) -> Self {
                match m { $($bin::$variant(x) => $json::$variant(x)),* }
            }
        }
    };
}

/// One line of a reservation request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineReq {
    pub sku: String,
    pub qty: u32,
}

/// Subscribe to (or unsubscribe from) topics: `sku:<id>`, `show:<id>` or
/// `all`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscribe {
    pub id: u64,
    pub topics: Vec<String>,
}

/// Reserve one SKU (`sku` + `qty`) or a cart (`lines`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reserve {
    #[serde(default)]
    pub id: u64,
    #[serde(default)]
    pub sku: Option<String>,
    #[serde(default)]
    pub qty: Option<u32>,
    #[serde(default)]
    pub lines: Option<Vec<LineReq>>,
    /// The buyer (for per-buyer limits and idempotency). May be omitted by
    /// a buyer-token caller: the token's subject is the buyer.
    #[serde(default)]
    pub buyer: String,
    #[serde(default)]
    pub request_id: Option<String>,
    #[serde(default)]
    pub allow_partial: bool,
    /// The sales channel the reservation is made on (`None`: the common
    /// pool). Every SKU of the request must have it.
    #[serde(default)]
    pub channel: Option<String>,
}

/// Commit a hold: everything (`qty` and `lines` absent), `qty` units of a
/// one-line hold, or `lines` (units per cart line, in order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    #[serde(default)]
    pub id: u64,
    #[serde(default)]
    pub hold: String,
    #[serde(default)]
    pub qty: Option<u32>,
    #[serde(default)]
    pub lines: Option<Vec<u32>>,
    #[serde(default)]
    pub request_id: Option<String>,
}

/// Release a hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    #[serde(default)]
    pub id: u64,
    #[serde(default)]
    pub hold: String,
    #[serde(default)]
    pub request_id: Option<String>,
}

/// Extend a live hold's deadline by `by_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extend {
    #[serde(default)]
    pub id: u64,
    #[serde(default)]
    pub hold: String,
    pub by_ms: u64,
    #[serde(default)]
    pub request_id: Option<String>,
}

/// Liveness check; answered with [`Pong`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    #[serde(default)]
    pub id: u64,
}

/// Present a checkout or admin token, or a buyer's signed token (a JWT),
/// on an open connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Auth {
    #[serde(default)]
    pub id: u64,
    pub token: String,
}

/// Display data of a SKU (sent in snapshots, not in every update).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkuMeta {
    pub title: String,
    /// Price in minor units (øre, cents).
    pub price_minor: u64,
    /// ISO 4217 code, e.g. `NOK`.
    pub currency: String,
    pub image_url: String,
    /// Show (livestream) the SKU belongs to, if any.
    pub show: Option<String>,
}

/// Live state of one SKU: absolute counts, never deltas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkuState {
    pub id: String,
    pub available: u32,
    pub held: u32,
    pub sold: u32,
    pub total: u32,
    pub state: SaleState,
    pub opens_at_ms: Option<u64>,
    /// Nothing to buy and nothing in carts: `available == 0 && held == 0`.
    pub sold_out: bool,
    /// Nothing to buy, but units sit in carts and may come back when their
    /// holds are released or expire: `available == 0 && held > 0`.
    pub all_in_carts: bool,
    pub buyer_limit: u32,
    /// Present in snapshots and in HTTP responses; `None` in updates.
    pub meta: Option<SkuMeta>,
    /// Per-channel counts, in the order the channels were added (empty
    /// without channels). The counts above include every channel quota.
    #[serde(default)]
    pub channels: Vec<ChannelState>,
}

/// One sales channel of a SKU: its quota, what it holds and sold, and
/// what a reservation on it could take now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelState {
    pub id: String,
    /// Units a reservation on this channel could take now: its quota's
    /// unsold units plus the common pool's available ones, within its cap.
    pub available: u32,
    /// Units the channel holds in live holds (quota and pool).
    pub held: u32,
    /// Units the channel sold (quota and pool).
    pub sold: u32,
    /// Size of its reserved quota (units only it may sell).
    pub quota: u32,
    /// Units of the quota not yet held or sold.
    pub quota_available: u32,
    /// Most units it may hold plus sell; `None`: no cap.
    pub cap: Option<u32>,
}

/// First frame after connecting: who the server thinks you are and the
/// limits it will enforce.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub server: String,
    pub role: Role,
    pub subscriptions_max: u32,
    pub frame_bytes_max: u32,
    pub messages_per_sec_max: u32,
    pub broadcast_interval_ms: u64,
}

/// Full state of a topic; always the first frame of a subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub topic: String,
    /// Topic sequence number; updates that follow carry larger ones.
    pub seq: u64,
    /// Server time when built (ms since the Unix epoch).
    pub ts_ms: u64,
    pub skus: Vec<SkuState>,
}

/// Coalesced changes of a topic since its previous frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Update {
    pub topic: String,
    pub seq: u64,
    pub ts_ms: u64,
    /// Only the SKUs that changed, with absolute values.
    pub skus: Vec<SkuState>,
}

/// A SKU sold out or came back in stock (see [`SkuState::sold_out`]:
/// units in carts are not sold out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockEvent {
    pub topic: String,
    pub seq: u64,
    pub ts_ms: u64,
    pub sku: String,
    pub event: StockEventKind,
}

/// An amount of money in minor units (øre, cents) of one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    /// ISO 4217 code, e.g. `NOK`.
    pub currency: String,
    pub minor: u64,
}

/// Server-side statistics of one SKU (or, in [`Stats::total`], of a whole
/// topic) since the gateway started counting it; persisted with the journal
/// when Redis is configured. Holds are counted per SKU: a cart line is a
/// hold of its SKU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkuStats {
    /// The SKU id (empty in [`Stats::total`]).
    pub id: String,
    pub reserved_units: u64,
    pub reserved_holds: u64,
    /// Units sold by commits.
    pub sold_units: u64,
    pub committed_holds: u64,
    /// Units a partial commit gave back to sale.
    pub returned_units: u64,
    pub released_units: u64,
    pub released_holds: u64,
    /// Units and holds that expired: reserved, minus committed (sold and
    /// returned), released and still held.
    pub expired_units: u64,
    pub expired_holds: u64,
    /// Units in live holds now (`held`).
    pub in_carts_units: u64,
    /// Of those, units whose hold's deadline falls within the next minute.
    pub expiring_soon_units: u64,
    /// Revenue (GMV): units sold times the price at commit time, per
    /// currency.
    pub revenue: Vec<Money>,
    /// Units sold within the last `window_ms` (the sales rate is
    /// `sold_in_window * 60000 / window_ms` per minute).
    pub sold_in_window: u64,
    pub window_ms: u64,
    /// Estimated time to sell out at the windowed rate; `None` until there
    /// is enough data (see `docs/PROTOCOL.md`) or when nothing sells.
    pub sellout_eta_ms: Option<u64>,
    /// When the SKU last sold out (`sold_out` became true).
    pub sold_out_at_ms: Option<u64>,
    /// First reservation counted.
    pub first_activity_ms: Option<u64>,
}

/// Statistics of a topic's SKUs: the frame admin subscribers get after
/// every change (at most a few times a second) and the body of
/// `GET /api/admin/stats` and `GET /api/admin/shows/{id}/stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub topic: String,
    /// Per topic, increasing; independent of the topic's update `seq`.
    pub seq: u64,
    pub ts_ms: u64,
    /// Everything summed over `skus`.
    pub total: SkuStats,
    pub skus: Vec<SkuStats>,
    /// Width of one sales bucket (10 000 ms).
    pub bucket_ms: u64,
    /// Start of `sales[0]` (a multiple of `bucket_ms`).
    pub sales_start_ms: u64,
    /// Units sold per bucket over the topic's SKUs, oldest first, up to the
    /// bucket of `ts_ms`; at most the server's bound of buckets.
    pub sales: Vec<u32>,
    /// Per sales channel of the topic's SKUs (by channel id, sorted):
    /// reservations and commits made on it (conversion = committed /
    /// reserved) and its sales in the same buckets as `sales`. Empty when no
    /// SKU has channels.
    #[serde(default)]
    pub channels: Vec<ChannelStats>,
}

/// One sales channel's part of a topic's statistics (docs/CHANNELS.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelStats {
    pub id: String,
    pub reserved_units: u64,
    pub reserved_holds: u64,
    pub sold_units: u64,
    pub committed_holds: u64,
    /// Units sold on the channel per bucket, aligned with `Stats::sales`.
    pub sales: Vec<u32>,
}

/// Acknowledges a subscribe / unsubscribe; the topics now subscribed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscribed {
    pub id: u64,
    pub topics: Vec<String>,
}

/// A reservation succeeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reserved {
    #[serde(default)]
    pub id: u64,
    pub hold: String,
    pub deadline_ms: u64,
    pub units: u32,
    pub lines: Vec<LineReq>,
    pub replayed: bool,
}

/// A commit succeeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    #[serde(default)]
    pub id: u64,
    pub hold: String,
    pub sold: u32,
    pub returned: u32,
    pub replayed: bool,
}

/// A release succeeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Released {
    #[serde(default)]
    pub id: u64,
    pub hold: String,
}

/// An extend succeeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extended {
    #[serde(default)]
    pub id: u64,
    pub hold: String,
    pub deadline_ms: u64,
}

/// Answer to [`Ping`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pong {
    pub id: u64,
    pub ts_ms: u64,
}

/// Answer to [`Auth`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authed {
    pub id: u64,
    pub role: Role,
}

/// A refusal or a protocol error. `id` names the request it answers, if any.
/// The same body (without `id`) is the HTTP API's error body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorMsg {
    #[serde(default)]
    pub id: Option<u64>,
    /// Stable machine-readable code, e.g. `sold_out`.
    pub error: Code,
    /// Human-readable detail.
    pub message: String,
}

messages! {
    /// A message from client to server: JSON text frames, internally tagged
    /// by `op` (`{"op":"reserve", ...}`).
    ClientMsg, tag = "op";
    /// The same messages in the binary subprotocol (postcard, externally
    /// tagged by variant index).
    BinClientMsg, BinClientRef;
    Subscribe(Subscribe) = 0,
    Unsubscribe(Subscribe) = 1,
    Reserve(Reserve) = 2,
    Commit(Commit) = 3,
    Release(Release) = 4,
    Extend(Extend) = 5,
    Ping(Ping) = 6,
    Auth(Auth) = 7,
}

messages! {
    /// A message from server to client: JSON text frames, internally
    /// tagged by `type` (`{"type":"update", ...}`).
    ServerMsg, tag = "type";
    /// The same messages in the binary subprotocol.
    BinServerMsg, BinServerRef;
    Hello(Hello) = 0,
    Snapshot(Snapshot) = 1,
    Update(Update) = 2,
    StockEvent(StockEvent) = 3,
    Subscribed(Subscribed) = 4,
    Reserved(Reserved) = 5,
    Committed(Committed) = 6,
    Released(Released) = 7,
    Extended(Extended) = 8,
    Pong(Pong) = 9,
    Authed(Authed) = 10,
    Error(ErrorMsg) = 11,
    Stats(Box<Stats>) = 12,
}

impl ClientMsg {
    /// Decodes a JSON text frame.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// Decodes a postcard binary frame.
    pub fn from_postcard(bytes: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes::<BinClientMsg>(bytes).map(Into::into)
    }

    /// Encodes as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("client messages always serialise")
    }

    /// Encodes as postcard.
    pub fn to_postcard(&self) -> Vec<u8> {
        postcard::to_stdvec(&self.as_bin()).expect("client messages always serialise")
    }
}

impl ServerMsg {
    /// Decodes a JSON text frame.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// Decodes a postcard binary frame.
    pub fn from_postcard(bytes: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes::<BinServerMsg>(bytes).map(Into::into)
    }

    /// Encodes as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server messages always serialise")
    }

    /// Encodes as postcard.
    pub fn to_postcard(&self) -> Vec<u8> {
        // Sized for a reply up front: grown from empty, the buffer was
        // reallocated (and copied) several times per reply.
        postcard::to_extend(&self.as_bin(), Vec::with_capacity(REPLY_BYTES_TYPICAL))
            .expect("server messages always serialise")
    }
}

/// Room for a typical reply (a reservation with one line is ~50 bytes).
const REPLY_BYTES_TYPICAL: usize = 96;
