//! The host: creates the scenario's SKUs, restocks and opens drops at the
//! scenario's times through the admin API, and samples the stock for the
//! stock-over-time chart.
//!
//! Owns the admin calls and the log of what the host did (the audit's
//! expected totals come from it). Runs in the coordinator only, so a drop
//! opens once however many workers there are.

use serde::{Deserialize, Serialize};

use holdfast_protocol::{
    ChannelDef, Code, QtyReq, SaleState, SkuDef, SkuList, SkuState, WindowReq,
};

use crate::client::CallError;
use crate::client::http::Api;
use crate::scenario::{HostAction, SkuSpec};

/// One host action and how it went.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HostEvent {
    pub at_s: f64,
    pub action: String,
    pub sku: String,
    pub qty: Option<u32>,
    pub ok: bool,
    pub error: Option<String>,
    pub latency_ms: f64,
}

/// The admin body creating `spec`; `start_unix_ms` anchors a scheduled window.
pub fn sku_def(spec: &SkuSpec, start_unix_ms: u64) -> SkuDef {
    let window = match spec.window.as_str() {
        "scheduled" => WindowReq {
            state: SaleState::Scheduled,
            opens_at_ms: spec.opens_at_s.map(|s| start_unix_ms + (s * 1000.0) as u64),
        },
        w => WindowReq {
            state: w.parse().unwrap_or(SaleState::Closed),
            opens_at_ms: None,
        },
    };
    SkuDef {
        id: spec.id.clone(),
        title: spec.title.clone().unwrap_or_else(|| spec.id.clone()),
        price_minor: spec.price_minor,
        currency: None,
        image_url: String::new(),
        show: spec.show.clone(),
        total: spec.total,
        buyer_limit: spec.buyer_limit,
        hold_ttl_ms: Some(spec.hold_ttl_ms),
        hold_lifetime_max_ms: None,
        order_units_max: None,
        window: Some(window),
        channels: spec
            .channels
            .iter()
            .map(|c| ChannelDef {
                id: c.id.clone(),
                quota: c.quota,
                cap: c.cap,
            })
            .collect(),
    }
}

/// Creates one SKU. With fixed ids an existing SKU is fine.
pub async fn create(
    api: &Api,
    spec: &SkuSpec,
    start_unix_ms: u64,
    fixed_ids: bool,
) -> Result<(), CallError> {
    match api
        .admin::<SkuState>("/api/admin/skus", &sku_def(spec, start_unix_ms))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.is(Code::AlreadyExists) && fixed_ids => Ok(()),
        Err(e) => Err(e),
    }
}

/// Performs one host action.
pub async fn act(api: &Api, a: &HostAction) -> Result<(), CallError> {
    let path = |tail: &str| format!("/api/admin/skus/{}/{tail}", a.sku);
    match a.action.as_str() {
        "open" | "pause" | "close" => {
            let state = match a.action.as_str() {
                "open" => "open",
                "pause" => "paused",
                _ => "closed",
            };
            api.admin::<SkuState>(
                &path("window"),
                &WindowReq {
                    state: state.parse().expect("a sale state"),
                    opens_at_ms: None,
                },
            )
            .await
            .map(drop)
        }
        "restock" | "adjust" => api
            .admin::<SkuState>(
                &path(&a.action),
                &QtyReq {
                    qty: a.qty.unwrap_or(0),
                },
            )
            .await
            .map(drop),
        other => Err(CallError::Unsupported(format!(
            "unknown host action {other}"
        ))),
    }
}

/// The current state of the given SKUs (in that order; `None` if missing).
pub async fn snapshot(api: &Api, ids: &[String]) -> Result<Vec<Option<SkuState>>, CallError> {
    let list: SkuList = api.get("/api/skus").await?;
    Ok(ids
        .iter()
        .map(|id| list.skus.iter().find(|k| &k.id == id).cloned())
        .collect())
}

/// Stock of one SKU over the run, for the chart.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StockSeries {
    pub sku: String,
    /// (seconds since start, available, held, sold).
    pub points: Vec<(f64, u32, u32, u32)>,
}
