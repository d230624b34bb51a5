//! Wire types of the websocket protocol and the HTTP API's JSON bodies,
//! shared by the gateway, the load tester and native clients.
//!
//! Two encodings carry the same messages (see `docs/PROTOCOL.md`):
//! - JSON text frames (the default, for browsers), internally tagged:
//!   `{"op":"reserve", ...}` from clients, `{"type":"update", ...}` from the
//!   server;
//! - postcard binary frames when the client negotiates
//!   [`SUBPROTOCOL_BINARY`]. Postcard is not self-describing, so the binary
//!   form uses the externally tagged mirror enums [`BinClientMsg`] /
//!   [`BinServerMsg`] around the very same payload structs.
//!
//! Nothing in this module may use `skip_serializing_if`: postcard needs
//! every field present.

use serde::{Deserialize, Serialize};

/// Subprotocol for JSON text frames (also the default when none is asked).
pub const SUBPROTOCOL_JSON: &str = "holdfast.v1.json";
/// Subprotocol for postcard binary frames.
pub const SUBPROTOCOL_BINARY: &str = "holdfast.v1.postcard";

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
    pub buyer: String,
    #[serde(default)]
    pub request_id: Option<String>,
    #[serde(default)]
    pub allow_partial: bool,
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

/// Present a checkout or admin token on an open connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Auth {
    #[serde(default)]
    pub id: u64,
    pub token: String,
}

/// A message from client to server (JSON form).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ClientMsg {
    Subscribe(Subscribe),
    Unsubscribe(Subscribe),
    Reserve(Reserve),
    Commit(Commit),
    Release(Release),
    Extend(Extend),
    Ping(Ping),
    Auth(Auth),
}

/// A message from client to server (binary form).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BinClientMsg {
    Subscribe(Subscribe),
    Unsubscribe(Subscribe),
    Reserve(Reserve),
    Commit(Commit),
    Release(Release),
    Extend(Extend),
    Ping(Ping),
    Auth(Auth),
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
    /// `open`, `scheduled`, `paused` or `closed`.
    pub state: String,
    pub opens_at_ms: Option<u64>,
    pub sold_out: bool,
    pub buyer_limit: u32,
    /// Present in snapshots and in HTTP responses; `None` in updates.
    pub meta: Option<SkuMeta>,
}

/// First frame after connecting: who the server thinks you are and the
/// limits it will enforce.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub server: String,
    /// `viewer`, `checkout` or `admin`.
    pub role: String,
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

/// A SKU sold out or came back in stock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockEvent {
    pub topic: String,
    pub seq: u64,
    pub ts_ms: u64,
    pub sku: String,
    /// `sold_out` or `back_in_stock`.
    pub event: String,
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
    pub role: String,
}

/// A refusal or a protocol error. `id` names the request it answers, if any.
/// The same body (without `id`) is the HTTP API's error body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorMsg {
    #[serde(default)]
    pub id: Option<u64>,
    /// Stable machine-readable code, e.g. `sold_out`.
    pub error: String,
    /// Human-readable detail.
    pub message: String,
}

/// A message from server to client (JSON form).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    Hello(Hello),
    Snapshot(Snapshot),
    Update(Update),
    StockEvent(StockEvent),
    Subscribed(Subscribed),
    Reserved(Reserved),
    Committed(Committed),
    Released(Released),
    Extended(Extended),
    Pong(Pong),
    Authed(Authed),
    Error(ErrorMsg),
}

/// A message from server to client (binary form).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BinServerMsg {
    Hello(Hello),
    Snapshot(Snapshot),
    Update(Update),
    StockEvent(StockEvent),
    Subscribed(Subscribed),
    Reserved(Reserved),
    Committed(Committed),
    Released(Released),
    Extended(Extended),
    Pong(Pong),
    Authed(Authed),
    Error(ErrorMsg),
}

macro_rules! mirror {
    ($a:ident <-> $b:ident : $($v:ident),*) => {
        impl From<$a> for $b {
            fn from(m: $a) -> Self {
                match m { $($a::$v(x) => $b::$v(x)),* }
            }
        }
        impl From<$b> for $a {
            fn from(m: $b) -> Self {
                match m { $($b::$v(x) => $a::$v(x)),* }
            }
        }
    };
}
mirror!(ClientMsg <-> BinClientMsg: Subscribe, Unsubscribe, Reserve, Commit, Release, Extend, Ping, Auth);

/// Borrowing mirrors of the binary enums, for encoding without cloning the
/// message. Same variants in the same order, so the same postcard bytes.
macro_rules! borrowed {
    ($owned:ident => $name:ident : $($v:ident($t:ty)),*) => {
        #[derive(Serialize)]
        enum $name<'a> { $($v(&'a $t)),* }
        impl $owned {
            fn as_bin(&self) -> $name<'_> {
                match self { $(Self::$v(x) => $name::$v(x)),* }
            }
        }
    };
}
borrowed!(ClientMsg => BinClientRef: Subscribe(Subscribe), Unsubscribe(Subscribe), Reserve(Reserve), Commit(Commit),
    Release(Release), Extend(Extend), Ping(Ping), Auth(Auth));
mirror!(ServerMsg <-> BinServerMsg: Hello, Snapshot, Update, StockEvent, Subscribed, Reserved, Committed, Released, Extended, Pong, Authed, Error);
borrowed!(ServerMsg => BinServerRef: Hello(Hello), Snapshot(Snapshot), Update(Update), StockEvent(StockEvent),
    Subscribed(Subscribed), Reserved(Reserved), Committed(Committed), Released(Released), Extended(Extended),
    Pong(Pong), Authed(Authed), Error(ErrorMsg));

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

// ----- HTTP bodies ---------------------------------------------------------

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
    /// `held`, `committed`, `released` or `expired`.
    pub state: String,
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
    pub state: String,
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
}

/// `POST /api/admin/skus/{id}/restock` and `/adjust`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QtyReq {
    pub qty: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_reserve() -> ClientMsg {
        ClientMsg::Reserve(Reserve {
            id: 7,
            sku: Some("tee".into()),
            qty: Some(2),
            lines: None,
            buyer: "b1".into(),
            request_id: Some("r1".into()),
            allow_partial: false,
        })
    }

    #[test]
    fn json_is_internally_tagged() {
        let json = sample_reserve().to_json();
        assert!(json.starts_with(r#"{"op":"reserve","#), "{json}");
        let back = ClientMsg::from_json(
            r#"{"op":"reserve","id":7,"sku":"tee","qty":2,"buyer":"b1","request_id":"r1"}"#,
        )
        .unwrap();
        assert_eq!(back, sample_reserve());
    }

    #[test]
    fn postcard_roundtrips_every_direction() {
        let m = sample_reserve();
        assert_eq!(ClientMsg::from_postcard(&m.to_postcard()).unwrap(), m);
        let s = ServerMsg::Update(Update {
            topic: "sku:tee".into(),
            seq: 3,
            ts_ms: 9,
            skus: vec![SkuState {
                id: "tee".into(),
                available: 1,
                held: 2,
                sold: 3,
                total: 6,
                state: "open".into(),
                opens_at_ms: None,
                sold_out: false,
                buyer_limit: 0,
                meta: None,
            }],
        });
        assert_eq!(ServerMsg::from_postcard(&s.to_postcard()).unwrap(), s);
        // Encoding by reference gives the owned enum's exact bytes.
        assert_eq!(
            s.to_postcard(),
            postcard::to_stdvec(&BinServerMsg::from(s.clone())).unwrap()
        );
        assert_eq!(
            m.to_postcard(),
            postcard::to_stdvec(&BinClientMsg::from(m.clone())).unwrap()
        );
        assert_eq!(ServerMsg::from_json(&s.to_json()).unwrap(), s);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        for bad in [
            r#"{"op":"nope"}"#,
            r#"{"op":"reserve","qty":-1,"buyer":"x"}"#,
            "not json",
            r#"{"op":"reserve","qty":"2","buyer":"x"}"#,
        ] {
            assert!(ClientMsg::from_json(bad).is_err(), "{bad}");
        }
        assert!(ClientMsg::from_postcard(&[0xff, 0xff, 0xff]).is_err());
    }
}
