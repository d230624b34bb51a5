//! Sales channels at the gateway: checking the `channels` of a SKU
//! definition or patch, applying them to the engine, the wire form of each
//! channel's counts, and the channel of a reservation (from the request
//! body, or from a buyer token's claim, which wins).
//!
//! The engine owns the counts and enforces quotas and caps
//! ([`holdfast_engine::channel`]); this module only adapts. It must never
//! accept a channel list the engine would take half of: everything that
//! can be checked up front is checked before the first change.

use crate::catalog::field_error;
use crate::error::ApiError;
use crate::protocol::limits::SKU_UNITS_MAX;
use crate::protocol::{ChannelDef, ChannelState, Code, Reserve};
use holdfast_engine::limits::{CHANNEL_ID_BYTES_MAX, CHANNELS_MAX};
use holdfast_engine::{Engine, SkuIdx, SkuSnapshot, is_valid_channel_id};
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

/// Refuses channels where they are not supported yet: with
/// `--redis-cluster`, leases move stock between nodes and the Lua scripts
/// know nothing of quotas.
pub fn refuse_in_cluster(any: bool) -> Result<(), ApiError> {
    if any {
        return Err(field_error(
            Code::InvalidChannels,
            "channels need single-node mode for now (not --redis-cluster)",
        ));
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
pub fn refresh_gauges(engine: &Engine) {
    for s in engine.snapshots().iter().filter(|s| !s.channels.is_empty()) {
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

/// Sets a reservation's channel from a buyer token's `claim`: the token
/// decides where its holder buys. A body naming another channel than the
/// claim is refused, never silently moved.
pub fn apply_claim(req: &mut Reserve, claim: Option<&str>) -> Result<(), ApiError> {
    let Some(claim) = claim else {
        return Ok(());
    };
    match req.channel.as_deref() {
        Some(asked) if asked != claim => Err(field_error(
            Code::UnknownChannel,
            "channel: the buyer token is for another channel",
        )),
        _ => {
            req.channel = Some(claim.to_string());
            Ok(())
        }
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
    fn cluster_mode_refuses_channels_by_name() {
        assert!(refuse_in_cluster(false).is_ok());
        let e = refuse_in_cluster(true).unwrap_err();
        assert_eq!(e.code, Code::InvalidChannels);
        assert!(e.message.contains("single-node mode"));
    }

    #[test]
    fn a_token_claim_sets_the_channel_and_a_different_body_is_refused() {
        let mut req = Reserve {
            id: 1,
            sku: Some("tee".into()),
            qty: Some(1),
            lines: None,
            buyer: "b".into(),
            request_id: None,
            allow_partial: false,
            channel: None,
        };
        apply_claim(&mut req, None).unwrap();
        assert_eq!(req.channel, None);
        apply_claim(&mut req, Some("live")).unwrap();
        assert_eq!(req.channel.as_deref(), Some("live"));
        apply_claim(&mut req, Some("live")).unwrap();
        assert_eq!(
            apply_claim(&mut req, Some("web")).unwrap_err().code,
            Code::UnknownChannel
        );
    }
}
