//! holdfast's wire format, shared by the server, the load tester and
//! native clients without the server's dependencies: websocket messages in
//! JSON and postcard, the HTTP API's bodies, every error code, and the
//! bounds a client must respect. See `docs/PROTOCOL.md` and `docs/API.md`.
//!
//! # Layout
//!
//! - [`msg`]: websocket messages, both directions, both encodings.
//! - [`http`]: HTTP bodies that are not websocket messages.
//! - [`code`]: every refusal and error code ([`Code`]).
//! - [`names`]: the small enums sent as strings (sale state, role, stock
//!   event, hold state).
//! - [`limits`]: shared bounds.

pub mod code;
pub mod http;
pub mod limits;
pub mod msg;
pub mod names;

pub use code::Code;
pub use http::*;
pub use msg::*;
pub use names::*;

/// Subprotocol for JSON text frames (also the default when none is asked).
pub const SUBPROTOCOL_JSON: &str = "holdfast.v1.json";
/// Subprotocol for postcard binary frames.
pub const SUBPROTOCOL_BINARY: &str = "holdfast.v1.postcard";

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
            channel: None,
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
                state: SaleState::Open,
                opens_at_ms: None,
                sold_out: false,
                all_in_carts: false,
                buyer_limit: 0,
                meta: None,
                channels: vec![ChannelState {
                    id: "live".into(),
                    available: 1,
                    held: 2,
                    sold: 0,
                    quota: 2,
                    quota_available: 0,
                    cap: Some(4),
                }],
            }],
        });
        assert_eq!(ServerMsg::from_postcard(&s.to_postcard()).unwrap(), s);
        // The channel is the last field of a reservation, in both forms.
        let ClientMsg::Reserve(mut on) = m.clone() else {
            unreachable!()
        };
        on.channel = Some("live".into());
        let on = ClientMsg::Reserve(on);
        let bytes = on.to_postcard();
        assert_eq!(
            &bytes[bytes.len() - 6..],
            b"\x01\x04live",
            "appended: Some, length, bytes"
        );
        assert_eq!(ClientMsg::from_postcard(&bytes).unwrap(), on);
        assert_eq!(ClientMsg::from_json(&on.to_json()).unwrap(), on);
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

    /// The binary protocol's tags, pinned: a change here breaks every
    /// native client, so it must be deliberate (and documented in
    /// PROTOCOL.md's layout table).
    #[test]
    fn postcard_indices_are_pinned() {
        let client: Vec<_> = ClientMsg::VARIANTS.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            client,
            [
                "Subscribe",
                "Unsubscribe",
                "Reserve",
                "Commit",
                "Release",
                "Extend",
                "Ping",
                "Auth"
            ]
        );
        let server: Vec<_> = ServerMsg::VARIANTS.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            server,
            [
                "Hello",
                "Snapshot",
                "Update",
                "StockEvent",
                "Subscribed",
                "Reserved",
                "Committed",
                "Released",
                "Extended",
                "Pong",
                "Authed",
                "Error",
                "Stats"
            ]
        );
        // The first byte of a postcard frame is the variant index.
        let m = sample_reserve();
        assert_eq!(u32::from(m.to_postcard()[0]), m.postcard_index());
        assert_eq!(m.postcard_index(), 2);
        let e = ServerMsg::Error(ErrorMsg {
            id: Some(1),
            error: Code::SoldOut,
            message: "sold out".into(),
        });
        assert_eq!(u32::from(e.to_postcard()[0]), 11);
        assert_eq!(ServerMsg::from_postcard(&e.to_postcard()).unwrap(), e);
        assert!(
            e.to_json().contains(r#""error":"sold_out""#),
            "{}",
            e.to_json()
        );
    }

    #[test]
    fn stats_frames_roundtrip_in_both_encodings() {
        let sku = SkuStats {
            id: "tee".into(),
            reserved_units: 9,
            reserved_holds: 4,
            sold_units: 5,
            committed_holds: 3,
            returned_units: 1,
            released_units: 1,
            released_holds: 1,
            expired_units: 1,
            expired_holds: 0,
            in_carts_units: 1,
            expiring_soon_units: 1,
            revenue: vec![Money {
                currency: "NOK".into(),
                minor: 124_500,
            }],
            sold_in_window: 5,
            window_ms: 60_000,
            sellout_eta_ms: None,
            sold_out_at_ms: Some(7),
            first_activity_ms: Some(1),
        };
        let m = ServerMsg::Stats(Box::new(Stats {
            topic: "show:demo".into(),
            seq: 2,
            ts_ms: 3,
            total: SkuStats {
                id: String::new(),
                ..sku.clone()
            },
            skus: vec![sku],
            bucket_ms: 10_000,
            sales_start_ms: 0,
            sales: vec![0, 5],
            channels: vec![ChannelStats {
                id: "live".into(),
                reserved_units: 3,
                reserved_holds: 2,
                sold_units: 1,
                committed_holds: 1,
                sales: vec![0, 1],
            }],
        }));
        assert!(m.to_json().starts_with(r#"{"type":"stats","#));
        assert_eq!(ServerMsg::from_json(&m.to_json()).unwrap(), m);
        assert_eq!(ServerMsg::from_postcard(&m.to_postcard()).unwrap(), m);
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
