//! The operations behind both the HTTP API and the websocket: parse the wire
//! request, apply it to the engine, make it durable when configured, and
//! build the wire answer. One implementation, so HTTP and websocket clients
//! get the same answers and the same refusal names.

use crate::catalog::{self, Meta};
use crate::error::ApiError;
use crate::ids::Ids;
use crate::journal::Durability;
use crate::metrics as m;
use crate::protocol::{
    Commit, Committed, Extend, Extended, HoldLineView, HoldView, LineReq, QtyReq, Release,
    Released, Reserve, Reserved, SkuDef, SkuList, SkuMeta, SkuPatch, SkuState, WindowReq,
};
use holdfast_engine::{
    Engine, HoldId, Line, SaleWindow, SkuIdx, SkuSettings, SkuSnapshot,
    limits::CART_LINES_MAX as CART_LINES_MAX_PUB,
};
use std::sync::Arc;

/// Everything an operation needs. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct Ops {
    pub engine: Arc<Engine>,
    pub meta: Arc<Meta>,
    pub ids: Arc<Ids>,
    pub durability: Durability,
}

/// A SKU's wire state from an engine snapshot.
pub fn sku_state(s: &SkuSnapshot, meta: Option<&SkuMeta>) -> SkuState {
    let (state, opens_at_ms) = match s.window {
        SaleWindow::Scheduled { opens_at_ms } => ("scheduled", Some(opens_at_ms)),
        w => (w.as_str(), None),
    };
    SkuState {
        id: s.id.to_string(),
        available: s.counts.available,
        held: s.counts.held,
        sold: s.counts.sold,
        total: s.counts.total(),
        state: state.to_string(),
        opens_at_ms,
        sold_out: s.counts.available == 0,
        buyer_limit: s.settings.buyer_limit,
        meta: meta.cloned(),
    }
}

fn parse_hold(hold: &str) -> Result<HoldId, ApiError> {
    hold.parse()
        .map_err(|_| ApiError::invalid("hold must be a hold id (16 hex digits)"))
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
        let snap = self.engine.snapshot(sku)?;
        Some(sku_state(&snap, self.meta.get(sku).as_deref()))
    }

    /// Every SKU.
    pub fn list(&self) -> SkuList {
        let skus = self
            .engine
            .snapshots()
            .iter()
            .map(|s| sku_state(s, self.meta.get(s.sku).as_deref()))
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

    pub async fn reserve(&self, req: &Reserve) -> Result<Reserved, ApiError> {
        let result = self.reserve_inner(req).await;
        m::reservation(result.as_ref().map(|_| ()).map_err(|e| e.code));
        result
    }

    async fn reserve_inner(&self, req: &Reserve) -> Result<Reserved, ApiError> {
        let mut lines = Vec::new();
        let cart = match (&req.sku, req.qty, &req.lines) {
            (Some(sku), Some(qty), None) => {
                lines.push(LineReq {
                    sku: sku.clone(),
                    qty,
                });
                false
            }
            (None, None, Some(cart)) if !cart.is_empty() && cart.len() <= CART_LINES_MAX_PUB => {
                lines.extend(cart.iter().cloned());
                true
            }
            (None, None, Some(_)) => {
                return Err(ApiError::invalid(format!(
                    "a cart has 1 to {CART_LINES_MAX_PUB} lines"
                )));
            }
            _ => return Err(ApiError::invalid("give either sku and qty, or lines")),
        };
        if cart && req.allow_partial {
            return Err(ApiError::invalid(
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
        self.durability.admit()?;
        let res = if cart {
            self.engine.reserve_cart(&engine_lines, buyer, request)?
        } else {
            self.engine.reserve(
                engine_lines[0].sku,
                engine_lines[0].qty,
                buyer,
                request,
                req.allow_partial,
            )?
        };
        if !res.replayed
            && let Err(e) = self.durability.settle(&self.engine).await
        {
            // Durable mode and Redis did not take it: undo in memory, so
            // nothing unacknowledged is held, and forget the request id so a
            // retry runs afresh.
            let _ = self.engine.release(res.hold, None);
            if let Some(r) = request {
                self.engine.forget_request(r);
            }
            return Err(e);
        }
        if !cart {
            lines[0].qty = res.units;
        }
        Ok(Reserved {
            id: req.id,
            hold: res.hold.to_string(),
            deadline_ms: res.deadline_ms,
            units: res.units,
            lines,
            replayed: res.replayed,
        })
    }

    pub async fn commit(&self, req: &Commit) -> Result<Committed, ApiError> {
        let result = self.commit_inner(req).await;
        m::hold_op("commit", result.as_ref().map(|_| ()).map_err(|e| e.code));
        result
    }

    async fn commit_inner(&self, req: &Commit) -> Result<Committed, ApiError> {
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
        let s = self.engine.commit(hold, sold.as_deref(), request)?;
        // A commit cannot be undone (the buyer paid): if Redis is down it
        // stays committed in memory, the journal retries until it lands, and
        // the client is told to retry (same request id gets this answer).
        if !s.replayed {
            self.durability.settle(&self.engine).await?;
        }
        Ok(Committed {
            id: req.id,
            hold: hold.to_string(),
            sold: s.sold,
            returned: s.returned,
            replayed: s.replayed,
        })
    }

    pub async fn release(&self, req: &Release) -> Result<Released, ApiError> {
        let result = async {
            let hold = parse_hold(&req.hold)?;
            let request = self.ids.request(req.request_id.as_deref())?;
            self.durability.admit()?;
            self.engine.release(hold, request)?;
            self.durability.settle(&self.engine).await?;
            Ok(Released {
                id: req.id,
                hold: hold.to_string(),
            })
        }
        .await;
        m::hold_op(
            "release",
            result.as_ref().map(|_| ()).map_err(|e: &ApiError| e.code),
        );
        result
    }

    pub async fn extend(&self, req: &Extend) -> Result<Extended, ApiError> {
        let result = async {
            let hold = parse_hold(&req.hold)?;
            let request = self.ids.request(req.request_id.as_deref())?;
            self.durability.admit()?;
            let deadline_ms = self.engine.extend(hold, req.by_ms, request)?;
            self.durability.settle(&self.engine).await?;
            Ok(Extended {
                id: req.id,
                hold: hold.to_string(),
                deadline_ms,
            })
        }
        .await;
        m::hold_op(
            "extend",
            result.as_ref().map(|_| ()).map_err(|e: &ApiError| e.code),
        );
        result
    }

    pub fn hold(&self, hold: &str) -> Result<HoldView, ApiError> {
        let info = self.engine.hold(parse_hold(hold)?)?;
        Ok(HoldView {
            hold: info.hold.to_string(),
            state: info.state.as_str().to_string(),
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
        let (spec, meta) = catalog::def_to_spec(def)?;
        self.durability.admit()?;
        let sku = self.engine.create_sku(&def.id, spec)?;
        self.meta.set(sku, meta);
        self.durability.meta_changed(&self.engine, sku, &self.meta);
        self.durability.settle(&self.engine).await?;
        self.state_of(sku).ok_or_else(ApiError::unknown_sku)
    }

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
        catalog::check_meta(&meta)?;
        let s = snap.settings;
        let settings = SkuSettings {
            buyer_limit: patch.buyer_limit.unwrap_or(s.buyer_limit),
            hold_ttl_ms: patch.hold_ttl_ms.unwrap_or(s.hold_ttl_ms),
            hold_lifetime_max_ms: patch.hold_lifetime_max_ms.unwrap_or(s.hold_lifetime_max_ms),
            order_units_max: patch.order_units_max.unwrap_or(s.order_units_max),
        };
        self.durability.admit()?;
        if settings != s {
            self.engine.update_settings(sku, settings)?;
        }
        if let Some(total) = patch.total {
            self.engine.set_total(sku, total)?;
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
        self.durability.admit()?;
        self.engine.restock(sku, req.qty)?;
        self.durability.settle(&self.engine).await?;
        self.state_of(sku).ok_or_else(ApiError::unknown_sku)
    }

    pub async fn adjust(&self, id: &str, req: &QtyReq) -> Result<SkuState, ApiError> {
        let sku = self.resolve(id)?;
        self.durability.admit()?;
        self.engine.adjust_down(sku, req.qty)?;
        self.durability.settle(&self.engine).await?;
        self.state_of(sku).ok_or_else(ApiError::unknown_sku)
    }

    pub async fn set_window(&self, id: &str, req: &WindowReq) -> Result<SkuState, ApiError> {
        let sku = self.resolve(id)?;
        let window = catalog::parse_window(req)?;
        self.durability.admit()?;
        self.engine.set_window(sku, window)?;
        self.durability.settle(&self.engine).await?;
        self.state_of(sku).ok_or_else(ApiError::unknown_sku)
    }
}
