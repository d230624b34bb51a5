//! The operations behind both the HTTP API and the websocket: parse the wire
//! request, apply it to the engine, make it durable when configured, and
//! build the wire answer. One implementation, so HTTP and websocket clients
//! get the same answers and the same refusal names.

use crate::catalog::{self, Meta};
use crate::cluster::AdminKind;
use crate::cluster::forward::Request;
use crate::error::ApiError;
use crate::ids::Ids;
use crate::journal::Durability;
use crate::journal::ended::EndedHold;
use crate::journal::keys::Ended;
use crate::metrics as m;
use crate::protocol::{
    BuyerErased, Code, Commit, Committed, Extend, Extended, HoldLineView, HoldStatus, HoldView,
    LineReq, MoveReq, QtyReq, Release, Released, Reserve, Reserved, SaleState, SkuDef, SkuList,
    SkuMeta, SkuPatch, SkuState, WindowReq,
};
use crate::stats::Stats;
use holdfast_engine::{
    CatalogError, Engine, HoldError, HoldId, HoldInfo, HoldState, Line, RequestId, SaleWindow,
    SkuIdx, SkuSettings, SkuSnapshot, limits::CART_LINES_MAX as CART_LINES_MAX_PUB,
};
use std::sync::Arc;

/// Everything an operation needs. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct Ops {
    pub engine: Arc<Engine>,
    pub meta: Arc<Meta>,
    pub ids: Arc<Ids>,
    pub durability: Durability,
    /// Multi-node mode (`--redis-cluster`): stock is leased, counts are
    /// global, holds of other nodes are theirs (see `crate::cluster`).
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Server-side show statistics (see `crate::stats`).
    pub stats: Arc<Stats>,
    /// The webhooks, once started (they hold the operations, so this side
    /// is weak): an erasure blanks the buyer in their events.
    pub webhooks: std::sync::OnceLock<std::sync::Weak<crate::webhooks::Webhooks>>,
}

/// A checkout operation, for its outcome metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Reserve,
    Commit,
    Release,
    Extend,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reserve => "reserve",
            Self::Commit => "commit",
            Self::Release => "release",
            Self::Extend => "extend",
        }
    }

    fn record(self, outcome: Result<(), Code>) {
        match self {
            Self::Reserve => m::reservation(outcome),
            op => m::hold_op(op.as_str(), outcome),
        }
    }

    /// Counts a refusal at once; an applied operation is counted when it
    /// is finished.
    fn recorded<T>(self, r: Result<Applied<T>, ApiError>) -> Result<Applied<T>, ApiError> {
        if let Err(e) = &r {
            self.record(Err(e.code));
        }
        r
    }
}

/// A checkout operation applied to the engine but not yet acknowledged:
/// its answer may go out once event `seq` is persisted (0: at once).
#[derive(Debug)]
pub struct Applied<T> {
    pub answer: T,
    pub seq: u64,
    /// A reservation to release (and its request id to forget) if Redis
    /// never confirms it.
    undo: Option<(HoldId, Option<RequestId>)>,
    /// A provisional reservation answer (durable mode, with a request id)
    /// to confirm once `seq` is persisted: by the original, or by a replay
    /// that waited for it. Whichever of confirm and undo comes first wins
    /// (one CAS in the engine), so a replay is never acknowledged for a
    /// reservation that is then undone.
    confirm: Option<(RequestId, HoldId)>,
    pub op: Op,
}

impl<T> Applied<T> {
    /// An answer with no write of its own to wait for (it repeats one
    /// already in Redis).
    pub(crate) fn settled(answer: T, op: Op) -> Self {
        Self {
            answer,
            seq: 0,
            undo: None,
            confirm: None,
            op,
        }
    }

    /// The same operation with its answer converted (e.g. into a frame).
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Applied<U> {
        Applied {
            answer: f(self.answer),
            seq: self.seq,
            undo: self.undo,
            confirm: self.confirm,
            op: self.op,
        }
    }
}

/// How an ended hold refuses a further commit, release or extend.
pub(crate) fn ended_refusal(ended: &EndedHold) -> HoldError {
    match ended.lines.first().map(|l| l.ended) {
        Some(Ended::Committed) => HoldError::AlreadyCommitted,
        Some(Ended::Released) => HoldError::AlreadyReleased,
        Some(Ended::Expired) | None => HoldError::HoldExpired,
    }
}

pub(crate) fn ended_view(hold: HoldId, ended: &EndedHold) -> HoldView {
    let state = match ended.lines.first().map(|l| l.ended) {
        Some(Ended::Committed) => HoldStatus::Committed,
        Some(Ended::Released) => HoldStatus::Released,
        Some(Ended::Expired) | None => HoldStatus::Expired,
    };
    HoldView {
        hold: hold.to_string(),
        state,
        deadline_ms: ended.lines.first().map_or(0, |l| l.deadline_ms),
        lines: ended
            .lines
            .iter()
            .map(|l| HoldLineView {
                sku: l.sku.clone(),
                qty: l.qty,
                sold: l.sold,
            })
            .collect(),
    }
}

/// A SKU's wire state from an engine snapshot. Sold out means nothing to
/// buy and nothing in carts; units in carts may still come back (the rule
/// every consumer follows, `docs/PROTOCOL.md`).
pub fn sku_state(s: &SkuSnapshot, meta: Option<&SkuMeta>) -> SkuState {
    let (state, opens_at_ms) = match s.window {
        SaleWindow::Open => (SaleState::Open, None),
        SaleWindow::Scheduled { opens_at_ms } => (SaleState::Scheduled, Some(opens_at_ms)),
        SaleWindow::Paused => (SaleState::Paused, None),
        SaleWindow::Closed => (SaleState::Closed, None),
    };
    SkuState {
        id: s.id.to_string(),
        available: s.counts.available,
        held: s.counts.held,
        sold: s.counts.sold,
        total: s.counts.total(),
        state,
        opens_at_ms,
        sold_out: s.counts.available == 0 && s.counts.held == 0,
        all_in_carts: s.counts.available == 0 && s.counts.held > 0,
        buyer_limit: s.settings.buyer_limit,
        meta: meta.cloned(),
        channels: crate::channels::states(s),
    }
}

/// The wire state of an engine hold state.
fn hold_status(state: HoldState) -> HoldStatus {
    match state {
        HoldState::Held => HoldStatus::Held,
        HoldState::Committed => HoldStatus::Committed,
        HoldState::Released => HoldStatus::Released,
        HoldState::Expired => HoldStatus::Expired,
    }
}

fn parse_hold(hold: &str) -> Result<HoldId, ApiError> {
    hold.parse().map_err(|_| {
        ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            Code::InvalidHoldId,
            "hold must be a hold id (16 hex digits)",
        )
    })
}

impl Ops {
    fn resolve(&self, sku: &str) -> Result<SkuIdx, ApiError> {
        self.engine.sku(sku).ok_or_else(ApiError::unknown_sku)
    }

    /// One SKU's state with display data.
    pub fn sku(&self, id: &str) -> Result<SkuState, ApiError> {
        let sku = self.resolve(id)?;
        self.state_of(sku).ok_or_else(ApiError::unknown_sku)
    }

    pub fn state_of(&self, sku: SkuIdx) -> Option<SkuState> {
        let snap = self.snapshot(sku)?;
        Some(sku_state(&snap, self.meta.get(sku).as_deref()))
    }

    /// A SKU's counts: this node's, or with `--redis-cluster` the whole
    /// deployment's (the pool plus every node).
    pub fn snapshot(&self, sku: SkuIdx) -> Option<SkuSnapshot> {
        let mut snap = self.engine.snapshot(sku)?;
        if let Some(c) = &self.cluster {
            c.counts.globalize(&mut snap);
        }
        Some(snap)
    }

    /// Every SKU.
    pub fn list(&self) -> SkuList {
        let skus = self
            .engine
            .snapshots()
            .into_iter()
            .map(|mut s| {
                if let Some(c) = &self.cluster {
                    c.counts.globalize(&mut s);
                }
                sku_state(&s, self.meta.get(s.sku).as_deref())
            })
            .collect();
        SkuList {
            ts_ms: self.engine.now_ms(),
            skus,
        }
    }

    /// The SKUs of one show.
    pub fn show(&self, show: &str) -> Result<SkuList, ApiError> {
        let skus = self
            .meta
            .show(show)
            .ok_or_else(|| ApiError::not_found("unknown show"))?;
        Ok(SkuList {
            ts_ms: self.engine.now_ms(),
            skus: skus.into_iter().filter_map(|s| self.state_of(s)).collect(),
        })
    }

    // ----- checkout ----------------------------------------------------
    //
    // Each checkout operation comes in two halves: `*_now` applies it to
    // the engine and returns the answer with the sequence number it must
    // see persisted ([`Applied`]); [`Ops::finish`] acknowledges it once
    // that is so, or undoes it. HTTP awaits both in one call; a websocket
    // session holds its applied requests in a queue and finishes them all
    // when a batch lands, without a future, a channel and a timer per
    // request.

    pub async fn reserve(&self, req: Reserve) -> Result<Reserved, ApiError> {
        self.reserve_claimed(req, None).await
    }

    /// [`Ops::reserve`] for a buyer token whose `channel` claim is `claim`
    /// (see [`crate::channels::of_reservation`]). In cluster mode SKUs have
    /// no channels, so a claim only attributes the sale there.
    pub async fn reserve_claimed(
        &self,
        req: Reserve,
        claim: Option<&str>,
    ) -> Result<Reserved, ApiError> {
        if self.cluster.is_some() {
            let req = self.claimed(req, claim)?;
            let applied = self.reserve_leased(req).await;
            return self.settle(applied).await;
        }
        self.settle(self.reserve_now_claimed(req, claim)).await
    }

    /// A buyer token's channel claim made the request's channel (multi-node:
    /// the request travels to the node that reserves it; the same rule as
    /// [`crate::channels::of_reservation`], which refuses a `channel` field
    /// naming another channel).
    pub fn claimed(&self, mut req: Reserve, claim: Option<&str>) -> Result<Reserve, ApiError> {
        let Some(claim) = claim else {
            return Ok(req);
        };
        let mut lines = Vec::new();
        for id in req
            .sku
            .iter()
            .chain(req.lines.iter().flatten().map(|l| &l.sku))
        {
            if let Some(sku) = self.engine.sku(id) {
                lines.push(Line { sku, qty: 1 });
            }
        }
        let chosen = crate::channels::of_reservation(
            &self.engine,
            &lines,
            req.channel.as_deref(),
            Some(claim),
        )?;
        if let Some(c) = chosen.id() {
            req.channel = Some(c.to_string());
        }
        Ok(req)
    }

    pub async fn commit(&self, req: &Commit) -> Result<Committed, ApiError> {
        if let Some(owner) = self.remote_owner(&req.hold) {
            return self.forwarded(owner, Request::Commit(req.clone())).await;
        }
        let applied = self.commit_now(req);
        self.settle(self.or_ended(&req.hold, applied).await).await
    }

    pub async fn release(&self, req: &Release) -> Result<Released, ApiError> {
        if let Some(owner) = self.remote_owner(&req.hold) {
            return self.forwarded(owner, Request::Release(req.clone())).await;
        }
        let applied = self.release_now(req);
        self.settle(self.or_ended(&req.hold, applied).await).await
    }

    pub async fn extend(&self, req: &Extend) -> Result<Extended, ApiError> {
        if let Some(owner) = self.remote_owner(&req.hold) {
            return self.forwarded(owner, Request::Extend(req.clone())).await;
        }
        let applied = self.extend_now(req);
        self.settle(self.or_ended(&req.hold, applied).await).await
    }

    /// A hold operation the engine refused with `hold_not_found`: if Redis
    /// remembers how the hold ended (after a restart, or once its slot was
    /// reused), the refusal says so, as the engine would have while it
    /// still knew the hold: a retried commit of a paid order reads
    /// `already_committed`, never "no such hold".
    pub async fn or_ended<T>(
        &self,
        hold: &str,
        applied: Result<Applied<T>, ApiError>,
    ) -> Result<Applied<T>, ApiError> {
        match applied {
            Err(e) if e.code == Code::HoldNotFound => {
                let Ok(hold) = parse_hold(hold) else {
                    return Err(e);
                };
                match self
                    .durability
                    .ended_hold(hold, self.engine.now_ms())
                    .await?
                {
                    Some(ended) => Err(ended_refusal(&ended).into()),
                    None => Err(e),
                }
            }
            other => other,
        }
    }

    pub(crate) async fn settle<T>(
        &self,
        applied: Result<Applied<T>, ApiError>,
    ) -> Result<T, ApiError> {
        let applied = applied?;
        let waited = self.durability.settle_seq(applied.seq).await;
        self.finish(applied, waited)
    }

    /// Acknowledges an applied operation once its events are persisted
    /// (`waited` is `Ok`), or undoes what can be undone and refuses it.
    pub fn finish<T>(
        &self,
        applied: Applied<T>,
        waited: Result<(), ApiError>,
    ) -> Result<T, ApiError> {
        let outcome = match waited {
            // Durable. A provisional answer becomes final unless the
            // original was undone first (then this is a replay of a
            // reservation that no longer exists: refuse it, and a retry
            // runs afresh).
            Ok(()) => match applied.confirm {
                Some((request, hold)) if !self.engine.confirm_reservation(request, hold) => {
                    Err(crate::journal::timed_out())
                }
                _ => Ok(applied.answer),
            },
            // Not durable in time. A reservation Redis did not take is
            // undone in memory, so nothing unacknowledged is held, and its
            // request id is forgotten so a retry runs afresh, unless a
            // replay saw its write land and confirmed it first: then it is
            // durable and acknowledged after all. A commit cannot be undone
            // (the buyer paid): it stays committed in memory, the journal
            // retries until it lands, and the client is told to retry (the
            // same request id gets this answer once it is durable). A
            // replay that timed out undoes nothing: its original does.
            Err(e) => match applied.undo {
                Some(_) if self.withdraw(&applied) => Err(e),
                Some(_) => Ok(applied.answer),
                None => Err(e),
            },
        };
        applied
            .op
            .record(outcome.as_ref().map(|_| ()).map_err(|e| e.code));
        outcome
    }

    /// Undoes an applied reservation that was never acknowledged: its
    /// units back, its request id forgotten. False if it was confirmed
    /// first (a replay saw its write land), or if there is nothing to
    /// undo: then it stands.
    pub(crate) fn withdraw<T>(&self, applied: &Applied<T>) -> bool {
        // A reservation whose write landed before it was numbered for
        // waiting has no `undo`, but its `confirm` names it just as well.
        let undo = applied
            .undo
            .or_else(|| applied.confirm.map(|(request, hold)| (hold, Some(request))));
        let Some((hold, request)) = undo else {
            return false;
        };
        let before = self.held_info(hold);
        if !self.engine.undo_reservation(hold, request) {
            return false;
        }
        if let Some(h) = &before {
            self.stats.released(h);
        }
        true
    }

    /// Reserves in memory; see [`Ops::finish`].
    /// Takes the request by value: its SKU names move into the answer.
    pub fn reserve_now(&self, req: Reserve) -> Result<Applied<Reserved>, ApiError> {
        self.reserve_now_claimed(req, None)
    }

    /// [`Ops::reserve_now`] with a buyer token's `channel` claim.
    pub fn reserve_now_claimed(
        &self,
        req: Reserve,
        claim: Option<&str>,
    ) -> Result<Applied<Reserved>, ApiError> {
        Op::Reserve.recorded(self.reserve_apply(req, claim))
    }

    fn reserve_apply(
        &self,
        req: Reserve,
        claim: Option<&str>,
    ) -> Result<Applied<Reserved>, ApiError> {
        if let Some(c) = &self.cluster {
            c.check_fence()?;
        }
        let mut lines = Vec::new();
        let cart = match (req.sku, req.qty, req.lines) {
            (Some(sku), Some(qty), None) => {
                lines.push(LineReq { sku, qty });
                false
            }
            (None, None, Some(cart)) if !cart.is_empty() && cart.len() <= CART_LINES_MAX_PUB => {
                lines = cart;
                true
            }
            (None, None, Some(_)) => {
                return Err(catalog::field_error(
                    Code::CartSize,
                    format!("lines: a cart has 1 to {CART_LINES_MAX_PUB} lines"),
                ));
            }
            _ => return Err(ApiError::invalid("give either sku and qty, or lines")),
        };
        if cart && req.allow_partial {
            return Err(catalog::field_error(
                Code::PartialOnCart,
                "allow_partial is for single-sku reservations",
            ));
        }
        let buyer = self.ids.buyer(&req.buyer)?;
        let request = self.ids.request(req.request_id.as_deref())?;
        let mut engine_lines = Vec::with_capacity(lines.len());
        for l in &lines {
            engine_lines.push(Line {
                sku: self.resolve(&l.sku)?,
                qty: l.qty,
            });
        }
        let chosen = crate::channels::of_reservation(
            &self.engine,
            &engine_lines,
            req.channel.as_deref(),
            claim,
        )?;
        self.durability.admit()?;
        let channel = chosen.id();
        let res = if cart {
            self.engine
                .reserve_cart_on(&engine_lines, buyer, request, channel)
        } else {
            self.engine.reserve_on(
                engine_lines[0].sku,
                engine_lines[0].qty,
                buyer,
                request,
                req.allow_partial,
                channel,
            )
        }
        .map_err(|e| chosen.refusal(e))?;
        // A replay waits for every event numbered so far, which covers
        // the write of the original it repeats (still in flight, perhaps):
        // it is never acknowledged before that write is durable.
        let seq = self.durability.pending_seq(&self.engine);
        let (undo, confirm) = match (res.replayed, request) {
            // The original: undone if its write fails; its provisional
            // answer (durable mode) confirmed when its write lands.
            (false, _) => (
                (seq > 0).then_some((res.hold, request)),
                request.map(|r| (r, res.hold)),
            ),
            // A replay of a provisional answer confirms it after waiting,
            // and is refused if the original was undone meanwhile.
            (true, Some(r)) if res.provisional => (None, Some((r, res.hold))),
            _ => (None, None),
        };
        if !cart {
            lines[0].qty = res.units;
            engine_lines[0].qty = res.units;
        }
        if !res.replayed {
            self.count_reserved(&engine_lines, channel, res.deadline_ms);
        }
        Ok(Applied {
            answer: Reserved {
                id: req.id,
                hold: res.hold.to_string(),
                deadline_ms: res.deadline_ms,
                units: res.units,
                lines,
                replayed: res.replayed,
            },
            seq,
            undo,
            confirm,
            op: Op::Reserve,
        })
    }

    /// Commits in memory; see [`Ops::finish`].
    pub fn commit_now(&self, req: &Commit) -> Result<Applied<Committed>, ApiError> {
        Op::Commit.recorded(self.commit_apply(req))
    }

    fn commit_apply(&self, req: &Commit) -> Result<Applied<Committed>, ApiError> {
        let hold = parse_hold(&req.hold)?;
        let request = self.ids.request(req.request_id.as_deref())?;
        let sold: Option<Vec<u32>> = match (req.qty, &req.lines) {
            (None, None) => None,
            (Some(q), None) => Some(vec![q]),
            (None, Some(lines)) if lines.len() <= CART_LINES_MAX_PUB => Some(lines.clone()),
            (None, Some(_)) => return Err(ApiError::invalid("too many lines")),
            (Some(_), Some(_)) => return Err(ApiError::invalid("give qty or lines, not both")),
        };
        self.durability.admit()?;
        let before = self.held_info(hold);
        let s = self.engine.commit(hold, sold.as_deref(), request)?;
        if !s.replayed
            && let Some(h) = &before
        {
            self.count_committed(h, sold.as_deref());
        }
        // A replay too waits for everything numbered so far: its original
        // may still be on its way to Redis.
        let seq = self.durability.pending_seq(&self.engine);
        Ok(Applied {
            answer: Committed {
                id: req.id,
                hold: hold.to_string(),
                sold: s.sold,
                returned: s.returned,
                replayed: s.replayed,
            },
            seq,
            undo: None,
            confirm: None,
            op: Op::Commit,
        })
    }

    /// Releases in memory; see [`Ops::finish`].
    pub fn release_now(&self, req: &Release) -> Result<Applied<Released>, ApiError> {
        Op::Release.recorded(self.release_apply(req))
    }

    fn release_apply(&self, req: &Release) -> Result<Applied<Released>, ApiError> {
        let hold = parse_hold(&req.hold)?;
        let request = self.ids.request(req.request_id.as_deref())?;
        self.durability.admit()?;
        // A release replay is not told apart by the engine: a hold already
        // released before the call is not counted again.
        let before = self.held_info(hold);
        self.engine.release(hold, request)?;
        if let Some(h) = &before {
            self.stats.released(h);
        }
        Ok(Applied {
            answer: Released {
                id: req.id,
                hold: hold.to_string(),
            },
            seq: self.durability.pending_seq(&self.engine),
            undo: None,
            confirm: None,
            op: Op::Release,
        })
    }

    /// Extends in memory; see [`Ops::finish`].
    pub fn extend_now(&self, req: &Extend) -> Result<Applied<Extended>, ApiError> {
        Op::Extend.recorded(self.extend_apply(req))
    }

    fn extend_apply(&self, req: &Extend) -> Result<Applied<Extended>, ApiError> {
        let hold = parse_hold(&req.hold)?;
        let request = self.ids.request(req.request_id.as_deref())?;
        self.durability.admit()?;
        let before = self.held_info(hold);
        let deadline_ms = self.engine.extend(hold, req.by_ms, request)?;
        if let Some(h) = &before {
            self.stats.extended(h, deadline_ms, self.engine.now_ms());
        }
        Ok(Applied {
            answer: Extended {
                id: req.id,
                hold: hold.to_string(),
                deadline_ms,
            },
            seq: self.durability.pending_seq(&self.engine),
            undo: None,
            confirm: None,
            op: Op::Extend,
        })
    }

    // ----- statistics (see `crate::stats`) --------------------------------

    /// A live hold's lines and deadline, read before an operation ends or
    /// moves it (the statistics count what it held).
    fn held_info(&self, hold: HoldId) -> Option<HoldInfo> {
        self.engine
            .hold(hold)
            .ok()
            .filter(|h| h.state == HoldState::Held)
    }

    /// `channel`: the channel id the reservation was made on.
    fn count_reserved(&self, lines: &[Line], channel: Option<&str>, deadline_ms: u64) {
        let lines: Vec<_> = lines
            .iter()
            .map(|l| {
                (
                    l.sku,
                    l.qty,
                    channel.and_then(|c| self.engine.channel(l.sku, c)),
                )
            })
            .collect();
        self.stats
            .reserved(&lines, deadline_ms, self.engine.now_ms());
    }

    /// `sold`: units per line as asked (`None`: everything held).
    fn count_committed(&self, hold: &HoldInfo, sold: Option<&[u32]>) {
        let per_line: Vec<u32> = match sold {
            Some(s) => s.to_vec(),
            None => hold.lines.iter().map(|l| l.qty).collect(),
        };
        let price = |sku| {
            self.meta
                .get(sku)
                .map(|m| (m.currency.clone(), m.price_minor))
        };
        self.stats
            .committed(hold, &per_line, price, self.engine.now_ms());
    }

    /// A hold's state and lines: live or recently ended from the engine,
    /// or, once the engine forgot it, from Redis for the retention window.
    pub async fn hold(&self, hold: &str) -> Result<HoldView, ApiError> {
        if let Some(owner) = self.remote_owner(hold) {
            return self
                .forwarded(
                    owner,
                    Request::Hold {
                        hold: hold.to_string(),
                    },
                )
                .await;
        }
        let id = parse_hold(hold)?;
        match self.engine.hold(id) {
            Err(HoldError::HoldNotFound) => {
                match self.durability.ended_hold(id, self.engine.now_ms()).await? {
                    Some(ended) => Ok(ended_view(id, &ended)),
                    None => Err(HoldError::HoldNotFound.into()),
                }
            }
            Err(e) => Err(e.into()),
            Ok(_) => self.live_hold(id),
        }
    }

    fn live_hold(&self, hold: HoldId) -> Result<HoldView, ApiError> {
        let info = self.engine.hold(hold)?;
        Ok(HoldView {
            hold: info.hold.to_string(),
            state: hold_status(info.state),
            deadline_ms: info.deadline_ms,
            lines: info
                .lines
                .iter()
                .map(|l| HoldLineView {
                    sku: self
                        .engine
                        .sku_id(l.sku)
                        .map(|s| s.to_string())
                        .unwrap_or_default(),
                    qty: l.qty,
                    sold: l.sold,
                })
                .collect(),
        })
    }

    // ----- admin -------------------------------------------------------

    pub async fn create_sku(&self, def: &SkuDef) -> Result<SkuState, ApiError> {
        if let Some(c) = &self.cluster {
            crate::channels::check(&def.channels, &[], Some(def.total))?;
            let (sku, created) = c.create_sku(def).await?;
            if !created {
                return Err(CatalogError::AlreadyExists.into());
            }
            return self.state_of(sku).ok_or_else(ApiError::unknown_sku);
        }
        let (spec, meta) = catalog::def_to_spec(def, self.meta.images())?;
        crate::channels::check(&def.channels, &[], Some(def.total))?;
        self.durability.admit()?;
        let sku = self.engine.create_sku(&def.id, spec)?;
        crate::channels::apply(&self.engine, sku, &def.channels)?;
        self.meta.set(sku, meta);
        self.durability.meta_changed(&self.engine, sku, &self.meta);
        self.durability.settle(&self.engine).await?;
        self.state_of(sku).ok_or_else(ApiError::unknown_sku)
    }

    /// Validates the whole patch first, then applies it: a refused PATCH
    /// changes nothing. The total goes first, as the one part that can
    /// still be refused by the engine (units held or sold meanwhile).
    pub async fn patch_sku(&self, id: &str, patch: &SkuPatch) -> Result<SkuState, ApiError> {
        let sku = self.resolve(id)?;
        let snap = self
            .engine
            .snapshot(sku)
            .ok_or_else(ApiError::unknown_sku)?;
        let old_meta = self.meta.get(sku);
        let mut meta = old_meta.as_deref().cloned().unwrap_or(SkuMeta {
            title: id.to_string(),
            price_minor: 0,
            currency: "NOK".into(),
            image_url: String::new(),
            show: None,
        });
        if let Some(t) = &patch.title {
            meta.title = t.clone();
        }
        if let Some(p) = patch.price_minor {
            meta.price_minor = p;
        }
        if let Some(c) = &patch.currency {
            meta.currency = c.clone();
        }
        if let Some(u) = &patch.image_url {
            meta.image_url = u.clone();
        }
        catalog::check_meta(&meta, self.meta.images())?;
        let s = snap.settings;
        let settings = SkuSettings {
            buyer_limit: patch.buyer_limit.unwrap_or(s.buyer_limit),
            hold_ttl_ms: patch.hold_ttl_ms.unwrap_or(s.hold_ttl_ms),
            hold_lifetime_max_ms: patch.hold_lifetime_max_ms.unwrap_or(s.hold_lifetime_max_ms),
            order_units_max: patch.order_units_max.unwrap_or(s.order_units_max),
        };
        catalog::check_settings(&settings)?;
        if let Some(total) = patch.total {
            catalog::check_total(total)?;
        }
        if let Some(defs) = &patch.channels {
            let existing: Vec<&str> = snap.channels.iter().map(|c| &*c.id).collect();
            crate::channels::check(defs, &existing, None)?;
        }
        if let Some(c) = &self.cluster {
            let fields = [
                ("buyer_limit", settings.buyer_limit.to_string()),
                ("hold_ttl_ms", settings.hold_ttl_ms.to_string()),
                (
                    "hold_lifetime_max_ms",
                    settings.hold_lifetime_max_ms.to_string(),
                ),
                ("order_units_max", settings.order_units_max.to_string()),
                ("meta", serde_json::to_string(&meta).unwrap_or_default()),
            ];
            let kind = patch.total.map_or(AdminKind::Fields, AdminKind::Total);
            c.admin(id, kind, &fields).await?;
            for def in patch.channels.iter().flatten() {
                c.configure_channel(id, def).await?;
            }
            return self.state_of(sku).ok_or_else(ApiError::unknown_sku);
        }
        self.durability.admit()?;
        if let Some(total) = patch.total {
            self.engine.set_total(sku, total)?;
        }
        if settings != s {
            self.engine.update_settings(sku, settings)?;
        }
        // Last: a quota may still be refused for units sold meanwhile.
        if let Some(defs) = &patch.channels {
            crate::channels::apply(&self.engine, sku, defs)?;
        }
        if old_meta.as_deref() != Some(&meta) {
            self.meta.set(sku, meta);
            self.durability.meta_changed(&self.engine, sku, &self.meta);
        }
        self.durability.settle(&self.engine).await?;
        self.state_of(sku).ok_or_else(ApiError::unknown_sku)
    }

    pub async fn restock(&self, id: &str, req: &QtyReq) -> Result<SkuState, ApiError> {
        let sku = self.resolve(id)?;
        // Past the per-SKU maximum can never work: a clear 422 with the
        // limit, not a retryable 503 (the engine refuses it as well).
        if let Some(snap) = self.snapshot(sku) {
            catalog::check_total(snap.counts.total().saturating_add(req.qty))?;
        }
        if let Some(c) = &self.cluster {
            if req.qty == 0 {
                return Err(CatalogError::InvalidQty.into());
            }
            c.admin(id, AdminKind::Restock(req.qty), &[]).await?;
            return self.state_of(sku).ok_or_else(ApiError::unknown_sku);
        }
        self.durability.admit()?;
        self.engine.restock(sku, req.qty)?;
        self.durability.settle(&self.engine).await?;
        self.state_of(sku).ok_or_else(ApiError::unknown_sku)
    }

    pub async fn adjust(&self, id: &str, req: &QtyReq) -> Result<SkuState, ApiError> {
        let sku = self.resolve(id)?;
        if let Some(c) = &self.cluster {
            if req.qty == 0 {
                return Err(CatalogError::InvalidQty.into());
            }
            c.admin(id, AdminKind::Adjust(req.qty), &[]).await?;
            return self.state_of(sku).ok_or_else(ApiError::unknown_sku);
        }
        self.durability.admit()?;
        self.engine.adjust_down(sku, req.qty)?;
        self.durability.settle(&self.engine).await?;
        self.state_of(sku).ok_or_else(ApiError::unknown_sku)
    }

    /// Erases a buyer everywhere holdfast keeps it (docs/PRIVACY.md):
    /// refused while the buyer has live holds (their records are the
    /// stock's); then the stored name in memory and in Redis, the per-SKU
    /// limit records, the order-stream entries naming the buyer and its
    /// webhook events. In multi-node mode on every node (see
    /// `crate::cluster::erase`).
    pub async fn erase_buyer(&self, id: &str) -> Result<BuyerErased, ApiError> {
        if let Some(c) = &self.cluster {
            return c.erase_buyer(self, id).await;
        }
        let (buyer, stored) = self.ids.buyer_lookup(id)?;
        let field = crate::journal::keys::buyer_field(buyer);
        let names = [&*stored, field.as_str()];
        let here = self.forget_buyer_here(buyer, &names)?;
        let redis = match &self.durability {
            Durability::Memory => Default::default(),
            Durability::Redis(j) => {
                let skus: Vec<_> = self.engine.snapshots().into_iter().map(|s| s.id).collect();
                let mut conn = j.ended.connection().await?;
                let keys = j.ended.keys();
                match crate::journal::erase::erase_all(&mut conn, keys, &skus, &field, &names).await
                {
                    Ok(erased) => erased,
                    Err(e) => return Err(j.ended.failed(&e).await),
                }
            }
        };
        Ok(here.answer(&stored, redis, None))
    }

    /// The live holds `buyer` (its id here) has on this process.
    pub(crate) fn live_holds_of(&self, buyer: holdfast_engine::BuyerId) -> u64 {
        self.engine
            .live_holds()
            .iter()
            .filter(|h| h.buyer == buyer)
            .count() as u64
    }

    /// The memory side of an erasure on this process: refused while
    /// `buyer` (its id here) has a live hold here; then its stored name,
    /// its limit records in the engine, its records in the journal's
    /// mirror (forgotten at the writer's next batch, so a re-write of the
    /// whole state does not bring back what Redis loses next) and the
    /// webhook events naming one of `names`.
    pub(crate) fn forget_buyer_here(
        &self,
        buyer: holdfast_engine::BuyerId,
        names: &[&str],
    ) -> Result<Forgotten, ApiError> {
        let live = self.live_holds_of(buyer);
        if live > 0 {
            return Err(live_holds_refusal(live, ""));
        }
        if let Durability::Redis(j) = &self.durability {
            j.forget_buyer(buyer);
        }
        let webhook_events = self
            .webhooks
            .get()
            .and_then(std::sync::Weak::upgrade)
            .map_or(0, |w| w.erase_buyer_in_memory(names));
        Ok(Forgotten {
            names: u64::from(self.ids.forget_buyer(buyer)),
            limit_records: u64::from(self.engine.erase_buyer(buyer)),
            webhook_events,
        })
    }

    /// Moves units between the common pool and a channel's quota (see
    /// [`Engine::move_quota`]).
    pub async fn move_quota(
        &self,
        id: &str,
        channel: &str,
        req: &MoveReq,
    ) -> Result<SkuState, ApiError> {
        let sku = self.resolve(id)?;
        if let Some(c) = &self.cluster {
            if req.units == 0 {
                return Err(holdfast_engine::CatalogError::InvalidQty.into());
            }
            c.move_quota(id, channel, req.units).await?;
            return self.state_of(sku).ok_or_else(ApiError::unknown_sku);
        }
        self.durability.admit()?;
        self.engine
            .move_quota(sku, channel, req.units)
            .map_err(|e| match e {
                holdfast_engine::CatalogError::UnknownChannel => catalog::field_error(
                    Code::UnknownChannel,
                    format!("{{channel}}: the sku has no channel {channel:?}"),
                ),
                e => e.into(),
            })?;
        self.durability.settle(&self.engine).await?;
        self.state_of(sku).ok_or_else(ApiError::unknown_sku)
    }

    pub async fn set_window(&self, id: &str, req: &WindowReq) -> Result<SkuState, ApiError> {
        let sku = self.resolve(id)?;
        let window = catalog::parse_window(req)?;
        if let Some(c) = &self.cluster {
            let (name, at) = crate::cluster::window_fields(window);
            let fields = [
                ("window", name.to_string()),
                ("opens_at_ms", at.to_string()),
            ];
            c.admin(id, AdminKind::Fields, &fields).await?;
            return self.state_of(sku).ok_or_else(ApiError::unknown_sku);
        }
        self.durability.admit()?;
        self.engine.set_window(sku, window)?;
        self.durability.settle(&self.engine).await?;
        self.state_of(sku).ok_or_else(ApiError::unknown_sku)
    }
}

/// What an erasure forgot in one process's memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Forgotten {
    /// Stored names (0 or 1).
    pub names: u64,
    /// The engine's per-SKU limit records.
    pub limit_records: u64,
    /// Webhook events kept in memory whose buyer was blanked.
    pub webhook_events: u64,
}

impl std::ops::AddAssign for Forgotten {
    fn add_assign(&mut self, other: Self) {
        self.names += other.names;
        self.limit_records += other.limit_records;
        self.webhook_events += other.webhook_events;
    }
}

impl Forgotten {
    /// The erasure's answer: what memory forgot and Redis lost, for
    /// `nodes` node slots (multi-node mode).
    pub(crate) fn answer(
        self,
        stored: &str,
        redis: crate::journal::erase::Erased,
        nodes: Option<u64>,
    ) -> BuyerErased {
        BuyerErased {
            buyer: stored.to_string(),
            memory_names: self.names,
            memory_limit_records: self.limit_records,
            redis_names: redis.names,
            redis_limit_records: redis.limit_records,
            order_entries: redis.order_entries,
            webhook_events: self.webhook_events,
            webhook_stream_entries: redis.webhook_stream_entries,
            nodes,
        }
    }
}

/// The refusal of an erasure while the buyer has `live` holds (`place`:
/// where, or empty).
pub(crate) fn live_holds_refusal(live: u64, place: &str) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::CONFLICT,
        Code::BuyerHasLiveHolds,
        format!("the buyer has {live} live holds{place}: release them or let them expire first"),
    )
}
