//! Redis key names and stored record formats (see `docs/REDIS.md`).
//!
//! Every key of one SKU carries the SKU id as a hash tag, `{<sku>}`, so a
//! SKU's keys share a Redis Cluster slot.

use holdfast_engine::{BuyerId, HoldId, hex16};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
    /// Keys named on every batch, built once.
    orders: String,
    journal: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
            orders: format!("{prefix}:orders"),
            journal: format!("{prefix}:journal"),
        }
    }

    /// What every key of this journal starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn sku(&self, id: &str) -> String {
        format!("{}:{{{id}}}:sku", self.prefix)
    }

    pub fn holds(&self, id: &str) -> String {
        format!("{}:{{{id}}}:holds", self.prefix)
    }

    pub fn buyers(&self, id: &str) -> String {
        format!("{}:{{{id}}}:buyers", self.prefix)
    }

    /// A SKU's show statistics' sales buckets: bucket index -> units, and
    /// its sales channels' ([`sales_field`]); the counters are the `stats`
    /// field of its `sku` hash.
    pub fn sales(&self, id: &str) -> String {
        format!("{}:{{{id}}}:sales", self.prefix)
    }

    pub fn catalog(&self) -> String {
        format!("{}:catalog", self.prefix)
    }

    pub fn buyer_names(&self) -> String {
        format!("{}:buyers", self.prefix)
    }

    pub fn journal(&self) -> &str {
        &self.journal
    }

    pub fn orders(&self) -> &str {
        &self.orders
    }

    /// The remembered request answers of one time bucket: a hash, request
    /// id (hex) -> postcard [`RequestRecord`], expiring as a whole once
    /// its newest answer is older than two request windows. One key per
    /// bucket (not per request) so a batch writes them with one `HSET`.
    pub fn requests(&self, bucket: u64) -> String {
        format!("{}:reqs:{bucket}", self.prefix)
    }

    /// The ended hold lines of one hour: a hash, `<hold>:<line>` ->
    /// postcard [`EndedRecord`], expiring as a whole once its newest entry
    /// is older than the retention window (`--ended-hold-retention-ms`).
    pub fn ended(&self, bucket: u64) -> String {
        format!("{}:ended:{bucket}", self.prefix)
    }

    /// SCAN pattern of all request buckets.
    pub fn requests_pattern(&self) -> String {
        format!("{}:reqs:*", self.prefix)
    }
}

/// Field of a sales bucket in a SKU's sales hash: the bucket index for the
/// SKU's own, `<channel index>:<bucket index>` for one of its sales
/// channels' (a reader that knows only the SKU's skips these: they do not
/// parse as a number).
pub fn sales_field(channel: Option<u8>, bucket: u64) -> String {
    match channel {
        None => bucket.to_string(),
        Some(idx) => format!("{idx}:{bucket}"),
    }
}

/// A sales hash field: (channel index, or none for the SKU's own; bucket
/// index).
pub fn parse_sales_field(field: &str) -> Option<(Option<u8>, u64)> {
    match field.split_once(':') {
        None => Some((None, field.parse().ok()?)),
        Some((idx, bucket)) => Some((Some(idx.parse().ok()?), bucket.parse().ok()?)),
    }
}

/// Width of one request bucket: answers given within the same second share
/// a key.
pub const REQUEST_BUCKET_MS: u64 = 1_000;

/// Bucket of an answer given at `at_ms`.
pub fn request_bucket(at_ms: u64) -> u64 {
    at_ms / REQUEST_BUCKET_MS
}

/// Milliseconds until a bucket may go: its last possible answer is then two
/// request windows old (at least 1, as `PEXPIRE` wants).
pub fn request_bucket_ttl_ms(bucket: u64, window_ms: u64, now_ms: u64) -> u64 {
    ((bucket + 1) * REQUEST_BUCKET_MS + 2 * window_ms)
        .saturating_sub(now_ms)
        .max(1)
}

/// Width of one ended-hold bucket: lines that ended within the same hour
/// share a key, so a lookup reads at most retention / 1 h + 1 keys.
pub const ENDED_BUCKET_MS: u64 = 3_600_000;

/// Bucket of a hold line that ended at `at_ms`.
pub fn ended_bucket(at_ms: u64) -> u64 {
    at_ms / ENDED_BUCKET_MS
}

/// Milliseconds until an ended-hold bucket may go: its last possible entry
/// is then `retention_ms` old (at least 1, as `PEXPIRE` wants).
pub fn ended_bucket_ttl_ms(bucket: u64, retention_ms: u64, now_ms: u64) -> u64 {
    ((bucket + 1) * ENDED_BUCKET_MS + retention_ms)
        .saturating_sub(now_ms)
        .max(1)
}

/// How a hold ended, as stored in an [`EndedRecord`] (stable numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u8)]
pub enum Ended {
    Committed = 1,
    Released = 2,
    Expired = 3,
}

/// One ended hold line, as stored (postcard): enough to answer
/// `GET /api/holds/{id}` and a repeated commit after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndedRecord {
    pub ended: Ended,
    pub line: u8,
    pub lines: u8,
    pub sku: String,
    /// Units the line held when it ended.
    pub qty: u32,
    /// Units sold (committed lines; 0 otherwise).
    pub sold: u32,
    pub deadline_ms: u64,
    pub ended_at_ms: u64,
}

impl EndedRecord {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("records always serialise")
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        postcard::from_bytes(bytes).ok()
    }
}

/// Field of a request id in a request bucket.
pub fn request_field(request: u64) -> String {
    hex16(request).as_str().to_owned()
}

pub fn parse_request_field(field: &str) -> Option<u64> {
    u64::from_str_radix(field, 16).ok()
}

/// A remembered request answer, as stored (postcard).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub fingerprint: u32,
    pub outcome: u64,
    pub deadline_ms: u64,
    pub aux: u32,
    pub at_ms: u64,
}

impl RequestRecord {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("records always serialise")
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        postcard::from_bytes(bytes).ok()
    }
}

/// Field of a hold line in `<prefix>:{<sku>}:holds`: `<hold>:<line>`,
/// formatted on the stack (the journal writes one per reservation).
pub fn hold_field(hold: HoldId, line: u8) -> HoldField {
    use std::io::Write as _;
    let mut buf = [0u8; HOLD_FIELD_BYTES_MAX];
    let mut rest = &mut buf[..];
    write!(rest, "{}:{line}", hex16(hold.to_raw()).as_str()).expect("the field fits its bound");
    let len = HOLD_FIELD_BYTES_MAX - rest.len();
    HoldField { buf, len }
}

/// 16 hex digits, `:`, at most 3 decimal digits.
const HOLD_FIELD_BYTES_MAX: usize = 20;

/// A formatted hold field (see [`hold_field`]).
#[derive(Clone, Copy)]
pub struct HoldField {
    buf: [u8; HOLD_FIELD_BYTES_MAX],
    len: usize,
}

impl HoldField {
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).expect("hex digits, a colon and digits")
    }
}

/// Field of a buyer in `<prefix>:{<sku>}:buyers` and `<prefix>:buyers`.
pub fn buyer_field(buyer: BuyerId) -> String {
    hex16(buyer.0).as_str().to_owned()
}

pub fn parse_buyer_field(field: &str) -> Option<BuyerId> {
    u64::from_str_radix(field, 16).ok().map(BuyerId)
}

/// One live hold line, as stored (postcard).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldRecord {
    pub hold: u64,
    pub line: u8,
    pub lines: u8,
    pub qty: u32,
    pub buyer: u64,
    pub deadline_ms: u64,
    pub latest_ms: u64,
    pub counted: bool,
    /// The sales channel's index in its SKU's `channels` list, plus one
    /// (0: no channel). Appended: records written before channels end
    /// before it and decode with 0 (see [`HoldRecord::decode`]).
    pub channel: u8,
    /// Units of the line from the channel's quota.
    pub quota: u32,
}

/// A [`HoldRecord`] as written before sales channels.
#[derive(Deserialize)]
struct HoldRecordV1 {
    hold: u64,
    line: u8,
    lines: u8,
    qty: u32,
    buyer: u64,
    deadline_ms: u64,
    latest_ms: u64,
    counted: bool,
}

/// Largest postcard encoding of a [`HoldRecord`]: four varint u64 (10
/// bytes each), two varint u32 (5 each), three u8 and a bool.
pub const HOLD_RECORD_BYTES_MAX: usize = 54;

/// One sales channel of a SKU, as stored: a JSON list in the `channels`
/// field of the SKU's hash, in the order the channels were added (a hold
/// record names a channel by its place in this list).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelRecord {
    pub id: String,
    pub quota_available: u32,
    pub quota_held: u32,
    pub quota_sold: u32,
    /// Units the channel holds and sold, from its quota and the pool.
    pub held: u32,
    pub sold: u32,
    pub cap: Option<u32>,
}

impl HoldRecord {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("records always serialise")
    }

    /// The same bytes as [`Self::encode`], into `buf` (no allocation).
    pub fn encode_into<'b>(&self, buf: &'b mut [u8; HOLD_RECORD_BYTES_MAX]) -> &'b [u8] {
        postcard::to_slice(self, buf).expect("a record fits its bound")
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        postcard::from_bytes(bytes).ok().or_else(|| {
            let v1: HoldRecordV1 = postcard::from_bytes(bytes).ok()?;
            Some(Self {
                hold: v1.hold,
                line: v1.line,
                lines: v1.lines,
                qty: v1.qty,
                buyer: v1.buyer,
                deadline_ms: v1.deadline_ms,
                latest_ms: v1.latest_ms,
                counted: v1.counted,
                channel: 0,
                quota: 0,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_a_hash_tag_per_sku() {
        let k = Keys::new("hf");
        assert_eq!(k.sku("tee"), "hf:{tee}:sku");
        assert_eq!(k.holds("tee"), "hf:{tee}:holds");
        assert_eq!(k.buyers("tee"), "hf:{tee}:buyers");
        let r = HoldRecord {
            hold: 7,
            line: 1,
            lines: 2,
            qty: 3,
            buyer: 9,
            deadline_ms: 10,
            latest_ms: 20,
            counted: true,
            channel: 2,
            quota: 1,
        };
        assert_eq!(HoldRecord::decode(&r.encode()), Some(r));
        // A record written before channels: no channel.
        let old = &r.encode()[..r.encode().len() - 2];
        let legacy = HoldRecord {
            channel: 0,
            quota: 0,
            ..r
        };
        assert_eq!(HoldRecord::decode(old), Some(legacy));
        let widest = HoldRecord {
            hold: u64::MAX,
            line: u8::MAX,
            lines: u8::MAX,
            qty: u32::MAX,
            buyer: u64::MAX,
            deadline_ms: u64::MAX,
            latest_ms: u64::MAX,
            counted: true,
            channel: u8::MAX,
            quota: u32::MAX,
        };
        let mut buf = [0u8; HOLD_RECORD_BYTES_MAX];
        assert_eq!(widest.encode_into(&mut buf), widest.encode().as_slice());
        assert_eq!(
            parse_buyer_field(&buyer_field(BuyerId(u64::MAX))),
            Some(BuyerId(u64::MAX))
        );
        assert_eq!(buyer_field(BuyerId(0xab)), format!("{:016x}", 0xab));
        assert_eq!(parse_request_field(&request_field(42)), Some(42));
        for (channel, bucket) in [(None, 179_632_633), (Some(0), 7), (Some(7), u64::MAX)] {
            let field = sales_field(channel, bucket);
            assert_eq!(
                parse_sales_field(&field),
                Some((channel, bucket)),
                "{field}"
            );
        }
        assert_eq!(sales_field(Some(3), 12), "3:12");
        assert_eq!(parse_sales_field("x:1"), None);
        let e = EndedRecord {
            ended: Ended::Committed,
            line: 0,
            lines: 1,
            sku: "tee".into(),
            qty: 2,
            sold: 1,
            deadline_ms: 5,
            ended_at_ms: 6,
        };
        assert_eq!(EndedRecord::decode(&e.encode()), Some(e));
        assert_eq!(k.ended(ended_bucket(7_200_000)), "hf:ended:2");
        assert_eq!(ended_bucket_ttl_ms(2, 1_000, 7_200_000), 3_601_000);
    }

    #[test]
    fn hold_fields_are_the_hold_id_and_the_line() {
        let hold = HoldId::from_raw(0x0040_0000_0100_0002).expect("a valid id");
        for line in [0u8, 7, 9, 10, 15, 99, 100, 255] {
            assert_eq!(hold_field(hold, line).as_str(), format!("{hold}:{line}"));
        }
    }
}
