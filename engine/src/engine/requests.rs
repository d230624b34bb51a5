//! Request ids on the engine's side: an operation with a request id claims
//! it (with a fingerprint of its parameters) before it changes anything,
//! answers with the remembered answer if the id was seen, and otherwise
//! records its own answer when done and tells the journal. In durable mode
//! a reservation's answer stays provisional until it is confirmed or
//! undone. The table and the outcome words are [`crate::idempotency`]'s.

use super::Engine;
use crate::answer::{Line, Reservation};
use crate::buyer_limit::{BuyerId, mix64};
use crate::channel::ChannelIdx;
use crate::error::{HoldError, ReserveError};
use crate::event::{EventBuf, EventKind};
use crate::hold::HoldId;
use crate::idempotency::{self, Claim, RequestId, Ticket};

/// Operation tags mixed into request fingerprints. Fingerprints are
/// persisted with remembered answers: changing how one is computed makes
/// the replays of answers remembered before a restart fail as mismatches.
const OP_RESERVE: u64 = 1;
const OP_COMMIT: u64 = 2;
const OP_RELEASE: u64 = 3;
const OP_EXTEND: u64 = 4;

/// A hold operation's remembered answer `(payload, deadline_ms, aux)` or
/// refusal, or why its request id cannot be used now.
pub(super) type Seen = Result<(u64, u64, u32), HoldError>;

/// Hash of an operation and its parameters, so a request id reused for a
/// different request is caught. Each part is mixed in on its own, so no two
/// parts can cancel each other out.
#[inline]
fn fingerprint(op: u64, parts: &[u64]) -> u64 {
    parts
        .iter()
        .fold(mix64(op.wrapping_mul(0x9e37_79b9_7f4a_7c15)), |fp, &p| {
            mix64(fp ^ p)
        })
}

pub(super) fn reserve_fingerprint(
    lines: &[Line],
    buyer: BuyerId,
    allow_partial: bool,
    channels: &[Option<ChannelIdx>],
) -> u64 {
    let mut fp = fingerprint(OP_RESERVE, &[buyer.0, u64::from(allow_partial)]);
    for (line, channel) in lines.iter().zip(channels) {
        fp = mix64(fp ^ (u64::from(line.sku.get()) << 32 | u64::from(line.qty)));
        // The same lines on another channel are another request; a pool
        // line mixes nothing, so fingerprints from before channels hold.
        if let Some(c) = channel {
            fp = mix64(fp ^ (u64::from(c.get()) + 1) << 56);
        }
    }
    fp
}

pub(super) fn commit_fingerprint(hold: HoldId, sold: Option<&[u32]>) -> u64 {
    let mut fp = fingerprint(OP_COMMIT, &[hold.to_raw(), u64::from(sold.is_some())]);
    for &q in sold.unwrap_or(&[]) {
        fp = mix64(fp ^ u64::from(q));
    }
    fp
}

pub(super) fn release_fingerprint(hold: HoldId) -> u64 {
    fingerprint(OP_RELEASE, &[hold.to_raw()])
}

pub(super) fn extend_fingerprint(hold: HoldId, by_ms: u64) -> u64 {
    fingerprint(OP_EXTEND, &[hold.to_raw(), by_ms])
}

impl Engine {
    /// Claims a request id for a reservation: `Ok(ticket)` to go ahead,
    /// `Err(answer)` to answer at once (the remembered answer, or why the
    /// id cannot be used now).
    pub(super) fn claim_reservation(
        &self,
        request: RequestId,
        fingerprint: u64,
    ) -> Result<Ticket<'_>, Result<Reservation, ReserveError>> {
        match self.requests.claim(request.0, fingerprint as u32) {
            Claim::New(ticket) => Ok(ticket),
            Claim::Done(r) => Err(idempotency::decode_reservation(r)),
            Claim::InProgress => Err(Err(ReserveError::InProgress)),
            Claim::Mismatch => Err(Err(ReserveError::RequestMismatch)),
            Claim::Full => Err(Err(ReserveError::Capacity)),
        }
    }

    /// Remembers a reservation's answer: provisional until the caller
    /// confirms its write (see `confirm_reservation`) when the engine is
    /// built with `provisional_reservations`; a replay meanwhile says so.
    pub(super) fn remember_reservation(
        &self,
        ticket: Ticket<'_>,
        request: Option<RequestId>,
        result: &Result<Reservation, ReserveError>,
    ) {
        match result {
            Ok(r) => {
                let provisional = self.config.provisional_reservations;
                let outcome = idempotency::reservation_outcome(r.hold, provisional);
                self.remember(ticket, request, outcome, r.deadline_ms, r.units);
            }
            Err(e) if e.is_transient() => ticket.abandon(),
            Err(ReserveError::SoldOut | ReserveError::NotEnoughAvailable { .. })
                if !self.config.stock_refusals_final =>
            {
                ticket.abandon()
            }
            Err(e) => self.remember(
                ticket,
                request,
                idempotency::refusal_outcome(e.to_raw()),
                0,
                0,
            ),
        }
    }

    /// Claims a request id for a hold operation: `Ok(ticket)` to go ahead
    /// (none without a request id), `Err(seen)` to answer at once.
    pub(super) fn claim_hold_request(
        &self,
        request: Option<RequestId>,
        fingerprint: u64,
    ) -> Result<Option<Ticket<'_>>, Seen> {
        let Some(request) = request else {
            return Ok(None);
        };
        match self.requests.claim(request.0, fingerprint as u32) {
            Claim::New(ticket) => Ok(Some(ticket)),
            Claim::Done(r) => {
                Err(idempotency::decode_hold(r.outcome).map(|p| (p, r.deadline_ms, r.aux)))
            }
            Claim::InProgress => Err(Err(HoldError::InProgress)),
            Claim::Mismatch => Err(Err(HoldError::RequestMismatch)),
            Claim::Full => Err(Err(HoldError::Capacity)),
        }
    }

    /// Remembers a hold operation's answer `(payload, deadline_ms, aux)`,
    /// or its refusal unless it may go away on retry.
    pub(super) fn remember_hold(
        &self,
        ticket: Ticket<'_>,
        request: Option<RequestId>,
        result: Result<(u64, u64, u32), HoldError>,
    ) {
        match result {
            Ok((payload, deadline_ms, aux)) => {
                let outcome = idempotency::success_outcome(payload);
                self.remember(ticket, request, outcome, deadline_ms, aux);
            }
            Err(e) if e.is_transient() => ticket.abandon(),
            Err(e) => self.remember(
                ticket,
                request,
                idempotency::refusal_outcome(e.to_raw()),
                0,
                0,
            ),
        }
    }

    /// Records an answer, and tells the journal (so a retry after a
    /// restart still gets the first answer). The journal gets the answer's
    /// final form: it is only persisted with the write it answers, so once
    /// persisted it is confirmed.
    fn remember(
        &self,
        ticket: Ticket<'_>,
        request: Option<RequestId>,
        outcome: u64,
        deadline_ms: u64,
        aux: u32,
    ) {
        let fingerprint = ticket.fingerprint();
        ticket.record(outcome, deadline_ms, aux);
        if let Some(request) = request {
            let mut buf = EventBuf::new();
            buf.push(EventKind::RequestDone {
                request,
                fingerprint,
                outcome: idempotency::settled(outcome),
                deadline_ms,
                aux,
            });
            self.emit(self.now_ms(), &buf);
        }
    }

    /// Tells the journal a remembered answer is gone, so it does not come
    /// back from Redis after a restart.
    pub(super) fn emit_forgotten(&self, request: RequestId) {
        let mut buf = EventBuf::new();
        buf.push(EventKind::RequestForgotten { request });
        self.emit(self.now_ms(), &buf);
    }

    /// Confirms the provisional answer of the reservation `request` made
    /// as `hold` (see `EngineConfig::provisional_reservations`): its write
    /// is durable, so it may be acknowledged, and replays now get it as
    /// final. Called by the original once its write is durable, and by a
    /// replay after waiting for that write.
    ///
    /// True if the answer is now (or already was) final with that hold;
    /// then acknowledge. False if it is gone, being undone, or names
    /// another hold (a later retry that ran afresh); then do not.
    /// Exactly one of this and [`Engine::undo_reservation`] wins.
    pub fn confirm_reservation(&self, request: RequestId, hold: HoldId) -> bool {
        self.requests.confirm(request.0, hold)
    }
}

/// A request id claimed by an operation still running is `InProgress` to
/// a hold operation with the same id. Only a thread in the middle of an
/// operation holds such a claim, so the test holds one itself.
#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::{EngineConfig, HoldState, SaleWindow, SkuSettings, SkuSpec};
    use std::sync::Arc;

    #[test]
    fn hold_operations_with_a_request_id_in_flight_are_in_progress() {
        let (engine, _expirer) =
            Engine::new(EngineConfig::default(), Arc::new(ManualClock::new(1_000)))
                .expect("valid config");
        let spec = SkuSpec {
            total: 5,
            settings: SkuSettings::default(),
            window: SaleWindow::Open,
        };
        let tee = engine.create_sku("tee", spec).expect("sku");
        let h = engine.reserve(tee, 2, BuyerId(1), None, false).unwrap();
        let request = RequestId(77);
        let Claim::New(running) = engine.requests.claim(request.0, 0) else {
            panic!("a fresh id is claimed");
        };
        assert_eq!(
            engine.commit(h.hold, None, Some(request)),
            Err(HoldError::InProgress)
        );
        assert_eq!(
            engine.commit(h.hold, Some(&[1]), Some(request)),
            Err(HoldError::InProgress)
        );
        assert_eq!(
            engine.release(h.hold, Some(request)),
            Err(HoldError::InProgress)
        );
        assert_eq!(
            engine.extend(h.hold, 1_000, Some(request)),
            Err(HoldError::InProgress)
        );
        let info = engine.hold(h.hold).unwrap();
        assert_eq!(
            (info.state, info.deadline_ms),
            (HoldState::Held, h.deadline_ms)
        );
        // Not remembered: once the claim is given up, the id runs.
        running.abandon();
        assert_eq!(engine.release(h.hold, Some(request)), Ok(()));
        assert_eq!(engine.hold(h.hold).unwrap().state, HoldState::Released);
    }
}

/// Loom model of the durable-mode race the provisional answers exist for
/// (issue 16.1): the original's write timed out and it undoes the
/// reservation, while a client's retry replays it and, having waited for
/// the write, confirms it. Run with
/// `RUSTFLAGS="--cfg loom" cargo test -p holdfast-engine --release --lib loom`.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::{EngineConfig, Expirer, HoldState, SaleWindow, SkuIdx, SkuSettings, SkuSpec};
    use loom::thread;
    use std::sync::Arc;

    fn durable_engine() -> (Arc<Engine>, Expirer, SkuIdx) {
        let config = EngineConfig {
            provisional_reservations: true,
            lanes: 1,
            skus_max: 1,
            holds_max: 2,
            buyer_entries_max: 1,
            request_entries_max: 1,
            ..EngineConfig::default()
        };
        let (engine, expirer) =
            Engine::new(config, Arc::new(ManualClock::new(1_000))).expect("valid config");
        let spec = SkuSpec {
            total: 2,
            settings: SkuSettings::default(),
            window: SaleWindow::Open,
        };
        let tee = engine.create_sku("tee", spec).expect("sku");
        (engine, expirer, tee)
    }

    /// Exactly one of "the replay is acknowledged" and "the original is
    /// undone" happens, and whatever a client was told it holds is held.
    /// The replay thread follows the gateway's protocol: a provisional
    /// answer is acknowledged only if `confirm_reservation` says so; an
    /// `InProgress` is not acknowledged; a fresh reservation (the original
    /// was undone and forgotten first) is a new hold of its own.
    #[test]
    fn loom_replay_confirm_races_undo_exactly_one_wins() {
        loom::model(|| {
            let (engine, _expirer, tee) = durable_engine();
            let request = Some(RequestId(9));
            let original = engine
                .reserve(tee, 1, BuyerId(1), request, false)
                .expect("reserved");
            assert!(!original.provisional);
            let retry = {
                let engine = engine.clone();
                thread::spawn(
                    move || match engine.reserve(tee, 1, BuyerId(1), request, false) {
                        Ok(r) if r.replayed => {
                            assert_eq!(r.hold, original.hold, "a replay names the original");
                            assert!(r.provisional, "nobody confirmed it before");
                            engine
                                .confirm_reservation(RequestId(9), r.hold)
                                .then_some(r.hold)
                        }
                        Ok(fresh) => {
                            assert_ne!(fresh.hold, original.hold);
                            Some(fresh.hold)
                        }
                        Err(e) => {
                            assert_eq!(e, ReserveError::InProgress, "read while undone");
                            None
                        }
                    },
                )
            };
            let undone = engine.undo_reservation(original.hold, request);
            let retry_acked = retry.join().unwrap();
            let state = engine.hold(original.hold).unwrap().state;
            if undone {
                assert_eq!(state, HoldState::Released, "undo won: released");
                assert_ne!(retry_acked, Some(original.hold), "and never acknowledged");
                if let Some(fresh) = retry_acked {
                    assert_eq!(engine.hold(fresh).unwrap().state, HoldState::Held);
                }
                // Forgotten: a later retry (if the one above did not
                // already) runs afresh.
                let later = engine.reserve(tee, 1, BuyerId(1), request, false);
                assert_ne!(later.map(|r| r.hold), Ok(original.hold));
            } else {
                assert_eq!(retry_acked, Some(original.hold), "confirm won");
                assert_eq!(state, HoldState::Held, "the acknowledged hold stays");
                let later = engine.reserve(tee, 1, BuyerId(1), request, false).unwrap();
                assert!(later.replayed && !later.provisional);
                assert_eq!(later.hold, original.hold);
            }
            let counts = engine.snapshot(tee).unwrap().counts;
            assert_eq!(counts.total(), 2);
        });
    }
}
