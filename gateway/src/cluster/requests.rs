//! A reservation's request id across nodes. Each node remembers the
//! answers it gave (in its engine and its own slot), so a retry that a load
//! balancer sends to another node would be a new request there: a second
//! hold for one intent. So a node that reserves afresh for a request id
//! also claims the id cluster-wide before it answers: `SET NX GET` of the
//! answer under a key of the id's own slot ([`super::keys::ClusterKeys::request_claim`]).
//!
//! - The claim was free: this node's answer is the request's answer.
//! - Another node claimed it first: this node undoes its own reservation
//!   (never acknowledged) and answers the first one's hold, marked
//!   `replayed`, once that hold's write is in Redis (a replay waits for
//!   its original: it reads the hold in its node's slot, live or ended).
//! - A reservation this node refuses (sold out here, the limit reached)
//!   also looks for a claim: a retry of a request another node took gets
//!   that hold, not a refusal.
//!
//! A claim lives two request windows, as remembered answers do. It is not
//! waited onto a replica (a `WAIT` per reservation would cost a replica
//! round trip each): a master that fails over within moments of a claim
//! can forget it, and only a retry that then reaches another node would
//! make a second hold (never more units than the stock: both are counted).

use super::scripts;
use crate::error::ApiError;
use crate::journal::keys::hold_field;
use crate::ops::{Applied, Op, Ops};
use crate::protocol::{Code, Reserve, Reserved};
use holdfast_engine::{HoldId, ReserveError};
use metrics::counter;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// Longest pause between two looks at a first attempt's write.
pub const ORIGINAL_POLL_MAX: Duration = Duration::from_millis(32);

/// The claim key's digest of a (scoped) request id: 128 bits of SHA-256,
/// the same on every node (a node's own request hashes are keyed per node).
pub fn digest(request_id: &str) -> String {
    let d = Sha256::digest(request_id.as_bytes());
    crate::ids::hex(&d[..16])
}

/// What a reservation asked for (its lines and `allow_partial`; not the
/// buyer, whose id never reaches Redis in the clear): a retry that asks
/// for something else under the same request id is refused
/// `request_mismatch`, as on one node.
pub fn fingerprint(req: &Reserve) -> String {
    let mut h = Sha256::new();
    if let (Some(sku), Some(qty)) = (&req.sku, req.qty) {
        h.update(format!("{sku}\0{qty}\0"));
    }
    for l in req.lines.iter().flatten() {
        h.update(format!("{}\0{}\0", l.sku, l.qty));
    }
    h.update([u8::from(req.allow_partial)]);
    crate::ids::hex(&h.finalize()[..8])
}

/// A claim's value: the first attempt's answer and what it asked for.
#[derive(Debug, Serialize, Deserialize)]
struct ClaimValue {
    fp: String,
    #[serde(flatten)]
    answer: Reserved,
}

/// What the claim said.
enum Claimed {
    /// Ours now.
    Won,
    /// Another attempt's (its raw value too, to withdraw it).
    Taken(ClaimValue, String),
}

impl Ops {
    /// Runs after a multi-node reservation with request id `request_id`
    /// (see the module doc): claims it, or turns it into a replay of the
    /// attempt that claimed it first.
    pub(crate) async fn claim_request(
        &self,
        applied: Result<Applied<Reserved>, ApiError>,
        request_id: &str,
        fp: String,
        reply_id: u64,
    ) -> Result<Applied<Reserved>, ApiError> {
        let cluster = self.cluster.as_ref().expect("multi-node only");
        let key = cluster.keys.request_claim(&digest(request_id));
        let applied = match applied {
            Ok(a) if a.answer.replayed => return Ok(a),
            Ok(a) => a,
            Err(refusal) if hides_a_first_attempt(refusal.code) => {
                // Sold out or over a limit here: a first attempt elsewhere
                // may have the units. A failed look leaves the refusal.
                let Ok(Some(raw)) = self.read_claim(&key).await else {
                    return Err(refusal);
                };
                let Ok(original) = serde_json::from_str::<ClaimValue>(&raw) else {
                    return Err(refusal);
                };
                if original.fp != fp {
                    return Err(ReserveError::RequestMismatch.into());
                }
                return self.original(&key, original.answer, raw, reply_id).await;
            }
            Err(e) => return Err(e),
        };
        match self.claim(&key, &fp, &applied.answer).await {
            Ok(Claimed::Won) => {
                counter!("holdfast_cluster_request_claims_total", "outcome" => "won").increment(1);
                Ok(applied)
            }
            Ok(Claimed::Taken(original, _)) if original.answer.hold == applied.answer.hold => {
                Ok(applied)
            }
            Ok(Claimed::Taken(original, raw)) => {
                // Never acknowledged: undone before anyone saw it. If a
                // local replay confirmed it meanwhile, it stands as ours.
                if !self.withdraw(&applied) {
                    return Ok(applied);
                }
                if original.fp != fp {
                    return Err(ReserveError::RequestMismatch.into());
                }
                self.original(&key, original.answer, raw, reply_id).await
            }
            Err(e) => {
                // Whether another node has the request is unknown: refuse,
                // retryable, without keeping a hold nobody was told of.
                self.withdraw(&applied);
                Err(e)
            }
        }
    }

    async fn claim(&self, key: &str, fp: &str, answer: &Reserved) -> Result<Claimed, ApiError> {
        let cluster = self.cluster.as_ref().expect("multi-node only");
        let value = serde_json::to_string(&ClaimValue {
            fp: fp.to_string(),
            answer: Reserved {
                id: 0,
                replayed: false,
                ..answer.clone()
            },
        })
        .expect("answers serialise");
        let prior: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg(&value)
            .arg("NX")
            .arg("GET")
            .arg("PX")
            .arg(2 * cluster.request_window_ms.max(1))
            .query_async(&mut cluster.conn())
            .await
            .map_err(super::redis_error)?;
        match prior {
            None => Ok(Claimed::Won),
            Some(raw) => match serde_json::from_str(&raw) {
                Ok(original) => Ok(Claimed::Taken(original, raw)),
                Err(_) => Err(ApiError::unavailable(
                    "this request id's first answer in Redis does not parse: retry with a new request id",
                )),
            },
        }
    }

    async fn read_claim(&self, key: &str) -> redis::RedisResult<Option<String>> {
        let cluster = self.cluster.as_ref().expect("multi-node only");
        redis::cmd("GET")
            .arg(key)
            .query_async(&mut cluster.conn())
            .await
    }

    /// The first attempt's answer, marked as a replay, once its hold is
    /// in Redis. If its write does not show within the forward timeout,
    /// a retryable refusal; and if its node no longer knows the hold (the
    /// write failed and was undone), the claim is withdrawn so the next
    /// retry runs afresh.
    async fn original(
        &self,
        key: &str,
        mut original: Reserved,
        mut raw: String,
        reply_id: u64,
    ) -> Result<Applied<Reserved>, ApiError> {
        let cluster = self.cluster.as_ref().expect("multi-node only");
        let wait = Duration::from_millis(cluster.settings.forward_timeout_ms);
        let deadline = tokio::time::Instant::now() + wait;
        let mut pause = Duration::from_millis(1);
        loop {
            if self.written(&original).await? {
                counter!("holdfast_cluster_request_claims_total", "outcome" => "replayed")
                    .increment(1);
                let answer = Reserved {
                    id: reply_id,
                    replayed: true,
                    ..original
                };
                return Ok(Applied::settled(answer, Op::Reserve));
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(ORIGINAL_POLL_MAX);
            match self.read_claim(key).await.map_err(super::redis_error)? {
                Some(now) if now == raw => {}
                Some(now) => {
                    let value: ClaimValue = serde_json::from_str(&now).map_err(|_| {
                        ApiError::unavailable("this request id's first answer does not parse")
                    })?;
                    original = value.answer;
                    raw = now;
                }
                None => {
                    return Err(ApiError::unavailable(
                        "the first attempt of this request was undone: retry",
                    ));
                }
            }
        }
        counter!("holdfast_cluster_request_claims_total", "outcome" => "pending").increment(1);
        if let Err(e) = self.hold(&original.hold).await
            && e.code == Code::HoldNotFound
        {
            let _: Result<u64, _> = scripts::UNCLAIM
                .key(key)
                .arg(&raw)
                .invoke_async(&mut cluster.conn())
                .await;
        }
        Err(ApiError::unavailable(format!(
            "the first attempt of this request (hold {}) is still being written: retry shortly",
            original.hold
        )))
    }

    /// Whether a first attempt's hold is in Redis: live in its node's
    /// holds, or ended.
    async fn written(&self, original: &Reserved) -> Result<bool, ApiError> {
        let cluster = self.cluster.as_ref().expect("multi-node only");
        let hold: HoldId = original
            .hold
            .parse()
            .map_err(|_| ApiError::unavailable("this request id's first answer names no hold"))?;
        let Some(first) = original.lines.first() else {
            return Ok(false);
        };
        let keys = cluster.keys.node_journal(hold.node());
        let live: bool = redis::cmd("HEXISTS")
            .arg(keys.holds(&first.sku))
            .arg(hold_field(hold, 0).as_bytes())
            .query_async(&mut cluster.conn())
            .await
            .map_err(super::redis_error)?;
        if live {
            return Ok(true);
        }
        Ok(self.ended_in(hold.node(), hold).await?.is_some())
    }
}

/// Refusals a retry of a request that another node took may get here.
fn hides_a_first_attempt(code: Code) -> bool {
    matches!(
        code,
        Code::SoldOut | Code::NotEnoughAvailable | Code::LimitExceeded | Code::NotOpen
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_is_the_same_everywhere_and_tells_ids_apart() {
        assert_eq!(digest("order-1"), digest("order-1"));
        assert_ne!(digest("order-1"), digest("order-2"));
        assert_eq!(digest("x").len(), 32);
        assert!(digest("x").bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn the_fingerprint_tells_what_was_asked_apart_but_not_who_asked() {
        let req = |sku: &str, qty: u32, buyer: &str| -> Reserve {
            serde_json::from_value(serde_json::json!({"sku": sku, "qty": qty, "buyer": buyer}))
                .expect("a reservation")
        };
        assert_eq!(
            fingerprint(&req("a", 1, "x")),
            fingerprint(&req("a", 1, "y"))
        );
        assert_ne!(
            fingerprint(&req("a", 1, "x")),
            fingerprint(&req("a", 2, "x"))
        );
        assert_ne!(
            fingerprint(&req("a", 1, "x")),
            fingerprint(&req("b", 1, "x"))
        );
        let partial = Reserve {
            allow_partial: true,
            ..req("a", 1, "x")
        };
        assert_ne!(fingerprint(&partial), fingerprint(&req("a", 1, "x")));
    }

    #[test]
    fn only_refusals_a_first_attempt_can_explain_look_for_one() {
        assert!(hides_a_first_attempt(Code::SoldOut));
        assert!(hides_a_first_attempt(Code::LimitExceeded));
        assert!(!hides_a_first_attempt(Code::Invalid));
        assert!(!hides_a_first_attempt(Code::RateLimited));
    }
}
