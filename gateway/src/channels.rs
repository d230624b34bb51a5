//! Sales channels at the gateway: checking the `channels` of a SKU
//! definition or patch, applying them to the engine, the wire form of each
//! channel's counts, and which channel a reservation counts against (from
//! the request's `channel` field or a buyer token's claim: one rule, in
//! [`of_reservation`]).
//!
//! The engine owns the counts and enforces quotas and caps
//! ([`holdfast_engine::channel`]); this module only adapts. It must never
//! accept a channel list the engine would take half of: everything that
//! can be checked up front is checked before the first change.

use crate::catalog::field_error;
use crate::error::ApiError;
use crate::protocol::limits::SKU_UNITS_MAX;
use crate::protocol::{ChannelDef, ChannelState, Code};
use axum::http::StatusCode;
use holdfast_engine::limits::{CHANNEL_ID_BYTES_MAX, CHANNELS_MAX};
use holdfast_engine::{Engine, Line, ReserveError, SkuIdx, SkuSnapshot, is_valid_channel_id};
use std::collections::HashSet;

/// Checks a `channels` list: at most [`CHANNELS_MAX`] (with those the SKU
/// already has, `existing`), valid ids, none twice, quotas and caps in
/// range, and (for a new SKU of `total` units) quotas within the total.
pub fn check(defs: &[ChannelDef], existing: &[&str], total: Option<u32>) -> Result<(), ApiError> {
    let mut seen = HashSet::new();
    for (i, def) in defs.iter().enumerate() {
        if !is_valid_channel_id(&def.id) {
            return Err(field_error(
                Code::InvalidChannelId,
                format!(
                    "channels[{i}].id must be 1 to {CHANNEL_ID_BYTES_MAX} of A-Z a-z 0-9 . _ -"
                ),
            ));
        }
        if !seen.insert(def.id.as_str()) {
            return Err(field_error(
                Code::InvalidChannels,
                format!("channels[{i}].id: {:?} is listed twice", def.id),
            ));
        }
        if def.quota.is_some_and(|q| q > SKU_UNITS_MAX) {
            return Err(field_error(
                Code::TotalAboveMax,
                format!("channels[{i}].quota: at most {SKU_UNITS_MAX}"),
            ));
        }
        if def.cap.is_some_and(|c| c >= SKU_UNITS_MAX) {
            return Err(field_error(
                Code::TotalAboveMax,
                format!("channels[{i}].cap: below {SKU_UNITS_MAX} (leave it out for no cap)"),
            ));
        }
    }
    let added = defs
        .iter()
        .filter(|d| !existing.contains(&d.id.as_str()))
        .count();
    if existing.len() + added > CHANNELS_MAX {
        return Err(field_error(
            Code::ChannelsFull,
            format!("channels: a sku has at most {CHANNELS_MAX} channels"),
        ));
    }
    let quotas: u64 = defs.iter().map(|d| u64::from(d.quota.unwrap_or(0))).sum();
    if let Some(total) = total
        && quotas > u64::from(total)
    {
        return Err(field_error(
            Code::NotEnoughAvailable,
            format!("channels: quotas add up to {quotas}, above the total of {total}"),
        ));
    }
    Ok(())
}

/// Adds or changes each channel (see [`Engine::configure_channel`]).
pub fn apply(engine: &Engine, sku: SkuIdx, defs: &[ChannelDef]) -> Result<(), ApiError> {
    for def in defs {
        engine.configure_channel(sku, &def.id, def.quota.unwrap_or(0), def.cap)?;
    }
    Ok(())
}

/// The wire form of a SKU's channels.
pub fn states(s: &SkuSnapshot) -> Vec<ChannelState> {
    s.channels
        .iter()
        .map(|c| ChannelState {
            id: c.id.to_string(),
            available: c.available,
            held: c.held,
            sold: c.sold,
            quota: c.quota.total(),
            quota_available: c.quota.available,
            cap: c.cap,
        })
        .collect()
}

/// Sets `holdfast_channel_units{sku,channel,state}` for every configured
/// channel (read at scrape time, so the label set is exactly the
/// configured channels: at most `CHANNELS_MAX` per SKU, never a value a
/// client made up). `state`: `available`, `held`, `sold`, `quota_available`.
/// Counts are the deployment's with `--redis-cluster`.
pub fn refresh_gauges(ops: &crate::ops::Ops) {
    let snaps = ops.engine.snapshots().into_iter().filter_map(|s| {
        (!s.channels.is_empty())
            .then(|| ops.snapshot(s.sku))
            .flatten()
    });
    for s in snaps {
        for c in &s.channels {
            for (state, units) in [
                ("available", c.available),
                ("held", c.held),
                ("sold", c.sold),
                ("quota_available", c.quota.available),
            ] {
                metrics::gauge!("holdfast_channel_units", "sku" => s.id.to_string(),
                    "channel" => c.id.to_string(), "state" => state)
                .set(f64::from(units));
            }
        }
    }
}

/// The channel a reservation counts against, and where its name came
/// from (so a refusal names the field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chosen<'a> {
    /// The common pool only.
    Pool,
    /// The request's `channel` field.
    Field(&'a str),
    /// A buyer token's `channel` claim.
    Claim(&'a str),
}

impl<'a> Chosen<'a> {
    /// The channel id the engine reserves on.
    pub fn id(self) -> Option<&'a str> {
        match self {
            Self::Pool => None,
            Self::Field(c) | Self::Claim(c) => Some(c),
        }
    }

    /// The engine's refusal of a reservation on this channel, an unknown
    /// channel with the field that named it (400 `unknown_channel`).
    pub fn refusal(self, e: ReserveError) -> ApiError {
        match (e, self) {
            (ReserveError::UnknownChannel, Self::Field(c)) => field_error(
                Code::UnknownChannel,
                format!("channel: {c:?} is not a channel of every sku of the request"),
            ),
            (ReserveError::UnknownChannel, Self::Claim(c)) => field_error(
                Code::UnknownChannel,
                format!(
                    "channel (the buyer token's claim): {c:?} is not a channel of every sku of the request"
                ),
            ),
            _ => e.into(),
        }
    }
}

/// Which channel a reservation of `lines` counts against: the one place
/// for the rule, for HTTP and the websocket alike (docs/CHANNELS.md).
///
/// - A buyer token's `claim` decides where its holder buys: a `channel`
///   field naming another channel is refused with 403
///   `channel_not_allowed`, never silently moved.
/// - With a claim and no field, the reservation sells from the claimed
///   channel if any SKU of the request has channels; on SKUs without any
///   the claim only attributes the sale (orders and webhooks).
/// - Otherwise the field's channel, or the pool.
///
/// A channel the SKUs lack is refused by the engine before anything
/// changes; [`Chosen::refusal`] names the field (400 `unknown_channel`).
/// Asks the engine [`Engine::has_channels`]: no allocation.
pub fn of_reservation<'a>(
    engine: &Engine,
    lines: &[Line],
    field: Option<&'a str>,
    claim: Option<&'a str>,
) -> Result<Chosen<'a>, ApiError> {
    match (field, claim) {
        (Some(asked), Some(claim)) if asked != claim => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            Code::ChannelNotAllowed,
            format!("channel: the buyer token allows channel {claim:?} only"),
        )),
        (Some(asked), _) => Ok(Chosen::Field(asked)),
        (None, Some(claim)) if lines.iter().any(|l| engine.has_channels(l.sku)) => {
            Ok(Chosen::Claim(claim))
        }
        (None, _) => Ok(Chosen::Pool),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(id: &str, quota: Option<u32>, cap: Option<u32>) -> ChannelDef {
        ChannelDef {
            id: id.into(),
            quota,
            cap,
        }
    }

    #[test]
    fn lists_are_checked_field_by_field() {
        let code = |defs: &[ChannelDef], existing: &[&str], total| {
            check(defs, existing, total).map_err(|e| (e.code, e.message.to_string()))
        };
        assert!(code(&[def("live", Some(3), Some(5))], &[], Some(3)).is_ok());
        let (c, m) = code(&[def("bad id", None, None)], &[], None).unwrap_err();
        assert_eq!(
            (c, m.starts_with("channels[0].id")),
            (Code::InvalidChannelId, true)
        );
        let twice = [def("a", None, None), def("a", None, None)];
        assert_eq!(
            code(&twice, &[], None).unwrap_err().0,
            Code::InvalidChannels
        );
        let (c, m) = code(&[def("a", Some(4), None)], &[], Some(3)).unwrap_err();
        assert_eq!(c, Code::NotEnoughAvailable, "{m}");
        let nine: Vec<_> = (0..=CHANNELS_MAX)
            .map(|i| def(&format!("c{i}"), None, None))
            .collect();
        assert_eq!(code(&nine, &[], None).unwrap_err().0, Code::ChannelsFull);
        let existing: Vec<String> = (0..CHANNELS_MAX).map(|i| format!("c{i}")).collect();
        let existing: Vec<&str> = existing.iter().map(String::as_str).collect();
        assert!(
            code(&[def("c0", Some(1), None)], &existing, None).is_ok(),
            "a change, not an add"
        );
        assert_eq!(
            code(&[def("new", None, None)], &existing, None)
                .unwrap_err()
                .0,
            Code::ChannelsFull
        );
        assert_eq!(
            code(&[def("a", None, Some(SKU_UNITS_MAX))], &[], None)
                .unwrap_err()
                .0,
            Code::TotalAboveMax
        );
    }

    #[test]
    fn a_token_claim_decides_the_channel_and_a_different_field_is_forbidden() {
        use holdfast_engine::{EngineConfig, ManualClock, SaleWindow, SkuSettings, SkuSpec};
        let clock = std::sync::Arc::new(ManualClock::new(1_000));
        let (engine, _expirer) = Engine::new(EngineConfig::default(), clock).unwrap();
        let spec = || SkuSpec {
            total: 5,
            settings: SkuSettings::default(),
            window: SaleWindow::Open,
        };
        let tee = engine.create_sku("tee", spec()).unwrap();
        let mug = engine.create_sku("mug", spec()).unwrap();
        engine.configure_channel(tee, "live", 1, None).unwrap();
        let on = |sku| [Line { sku, qty: 1 }];
        let pick = |lines: &[Line], field, claim| of_reservation(&engine, lines, field, claim);
        assert_eq!(pick(&on(tee), None, None).unwrap(), Chosen::Pool);
        assert_eq!(
            pick(&on(tee), Some("live"), None).unwrap(),
            Chosen::Field("live")
        );
        assert_eq!(
            pick(&on(tee), None, Some("live")).unwrap(),
            Chosen::Claim("live")
        );
        assert_eq!(
            pick(&on(tee), Some("live"), Some("live")).unwrap(),
            Chosen::Field("live")
        );
        assert_eq!(
            pick(&on(mug), None, Some("live")).unwrap(),
            Chosen::Pool,
            "no channels: the claim only attributes"
        );
        let e = pick(&on(mug), Some("web"), Some("live")).unwrap_err();
        assert_eq!(
            (e.status, e.code),
            (StatusCode::FORBIDDEN, Code::ChannelNotAllowed)
        );
        let e = Chosen::Claim("tiktok").refusal(ReserveError::UnknownChannel);
        assert_eq!(
            (
                e.status,
                e.code,
                e.message.starts_with("channel (the buyer token")
            ),
            (StatusCode::BAD_REQUEST, Code::UnknownChannel, true)
        );
        let e = Chosen::Field("tiktok").refusal(ReserveError::UnknownChannel);
        assert!(
            e.message.starts_with("channel: \"tiktok\""),
            "{}",
            e.message
        );
        assert_eq!(
            Chosen::Pool.refusal(ReserveError::SoldOut).code,
            Code::SoldOut
        );
    }
}
