//! The audit's per-channel checks (docs/CHANNELS.md), for SKUs whose
//! scenario gives them sales channels: every channel's counts add up to
//! the SKU's, no channel holds or sells past its quota or cap, and (with
//! SKU ids this run's alone) each channel's sales are what the clients
//! were told they bought on it.
//!
//! Reads only the final `GET /api/skus` counts and the run's counters
//! ([`crate::roles::buyer::channel_counter`]); never changes server state.

use holdfast_protocol::{ChannelState, SkuState};
use serde::{Deserialize, Serialize};

use crate::audit::SkuAudit;
use crate::roles::buyer::channel_counter;
use crate::scenario::Scenario;
use crate::stats::Stats;

/// One channel's figures: the server's counts and the clients' units.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChannelAudit {
    /// The channel as the server reports it.
    #[serde(flatten)]
    pub server: ChannelState,
    /// Units clients were told they reserved, and bought, on the channel.
    pub reserved_units: u64,
    pub committed_units: u64,
    /// Units of reservations on the channel whose answer was lost.
    pub unknown_units: u64,
}

/// What the server's counts of one SKU break: a line per finding.
pub fn findings(sku: &SkuState) -> Vec<String> {
    let mut out = Vec::new();
    let (held, sold) = sku.channels.iter().fold((0u64, 0u64), |(h, s), c| {
        (h + u64::from(c.held), s + u64::from(c.sold))
    });
    // Reservations without a channel make up the rest of the SKU's.
    if held > u64::from(sku.held) || sold > u64::from(sku.sold) {
        out.push(format!(
            "{}: channels hold {held} and sold {sold}, more than the sku's {} held and {} sold",
            sku.id, sku.held, sku.sold
        ));
    }
    let unsold_quota: u64 = sku
        .channels
        .iter()
        .map(|c| u64::from(c.quota_available))
        .sum();
    if unsold_quota > u64::from(sku.available) {
        out.push(format!(
            "{}: {unsold_quota} quota units unsold, more than the sku's {} available",
            sku.id, sku.available
        ));
    }
    for c in &sku.channels {
        let used = u64::from(c.held) + u64::from(c.sold);
        let from_quota = c.quota.saturating_sub(c.quota_available);
        if c.quota_available > c.quota || u64::from(from_quota) > used {
            out.push(format!(
                "{}/{}: quota {} with {} unsold, but the channel holds and sold {used}",
                sku.id, c.id, c.quota, c.quota_available
            ));
        }
        if let Some(cap) = c.cap
            && (used > u64::from(cap) || u64::from(c.available) + used > u64::from(cap))
        {
            out.push(format!(
                "{}/{}: over its cap {cap}: holds {}, sold {}, offers {} more",
                sku.id, c.id, c.held, c.sold, c.available
            ));
        }
        if c.available > sku.available || c.available < c.quota_available {
            out.push(format!(
                "{}/{}: offers {} units, but the sku has {} available and the quota {} unsold",
                sku.id, c.id, c.available, sku.available, c.quota_available
            ));
        }
    }
    out
}

/// One check's outcome, for [`Audit`](crate::audit::Audit) to record.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub name: &'static str,
    pub ok: bool,
    /// The finding when it failed, what it proved when it passed.
    pub detail: String,
    /// One line per fault found.
    pub problems: Vec<String>,
}

/// Runs the per-channel checks over the final counts (`finals`, in the
/// scenario's SKU order) and adds each SKU's channel figures to its
/// [`SkuAudit`] in `skus`. No checks for a scenario without channels.
pub fn check(
    skus: &mut [SkuAudit],
    scenario: &Scenario,
    stats: &Stats,
    finals: &[Option<SkuState>],
    exclusive: bool,
) -> Vec<Verdict> {
    if scenario.skus.iter().all(|k| k.channels.is_empty()) {
        return Vec::new();
    }
    let mut add_up: Vec<String> = Vec::new();
    let mut sales: Vec<String> = Vec::new();
    let mut checked = 0;
    for (i, spec) in scenario.skus.iter().enumerate() {
        let Some(Some(k)) = finals.get(i) else {
            continue;
        };
        if spec.channels.is_empty() {
            continue;
        }
        checked += 1;
        add_up.extend(findings(k));
        let mut figures = Vec::new();
        for (c, want) in spec.channels.iter().enumerate() {
            let Some(have) = k.channels.iter().find(|h| h.id == want.id) else {
                add_up.push(format!(
                    "{}: channel {} is missing on the server",
                    k.id, want.id
                ));
                continue;
            };
            let count = |what| stats.count(&channel_counter(what, i as u16, c));
            let ca = ChannelAudit {
                server: have.clone(),
                reserved_units: count("reserved"),
                committed_units: count("committed"),
                unknown_units: count("unknown"),
            };
            if exclusive {
                let sold = u64::from(ca.server.sold);
                if sold < ca.committed_units {
                    sales.push(format!(
                        "{}/{}: clients were told {} units sold on the channel, the server counts {sold}",
                        k.id, ca.server.id, ca.committed_units
                    ));
                } else if sold > ca.committed_units + ca.unknown_units {
                    sales.push(format!(
                        "{}/{}: the server counts {sold} sold on the channel, clients committed {} (+{} unanswered)",
                        k.id, ca.server.id, ca.committed_units, ca.unknown_units
                    ));
                }
            }
            figures.push(ca);
        }
        if let Some(sa) = skus.iter_mut().find(|s| s.id == spec.id) {
            sa.channels = figures;
        }
    }
    let mut verdicts = vec![Verdict {
        name: "channels",
        ok: add_up.is_empty(),
        detail: if add_up.is_empty() {
            format!(
                "per-channel counts add up to the sku's, none past its quota or cap, for {checked} SKUs with channels"
            )
        } else {
            "per-channel counts do not add up (see problems)".into()
        },
        problems: add_up,
    }];
    if exclusive {
        verdicts.push(Verdict {
            name: "channel sales match commits",
            ok: sales.is_empty(),
            detail: if sales.is_empty() {
                "each channel's sold == units clients were told were sold on it (within unanswered requests)".into()
            } else {
                "a channel's sold count differs from what clients were told (see problems)".into()
            },
            problems: sales,
        });
    }
    verdicts
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_protocol::SaleState;

    fn sku(available: u32, held: u32, sold: u32, channels: Vec<ChannelState>) -> SkuState {
        SkuState {
            id: "tee".into(),
            available,
            held,
            sold,
            total: available + held + sold,
            state: SaleState::Open,
            opens_at_ms: None,
            sold_out: false,
            all_in_carts: false,
            buyer_limit: 0,
            meta: None,
            channels,
        }
    }

    fn ch(
        id: &str,
        available: u32,
        held: u32,
        sold: u32,
        quota: u32,
        quota_available: u32,
        cap: Option<u32>,
    ) -> ChannelState {
        ChannelState {
            id: id.into(),
            available,
            held,
            sold,
            quota,
            quota_available,
            cap,
        }
    }

    #[test]
    fn honest_counts_pass_and_each_broken_rule_is_named() {
        // total 20: live has a quota of 5 (2 sold from it), web a cap of 6.
        let good = sku(
            12,
            2,
            6,
            vec![
                ch("live", 12, 0, 2, 5, 3, None),
                ch("web", 2, 1, 3, 0, 0, Some(6)),
            ],
        );
        assert!(findings(&good).is_empty(), "{:?}", findings(&good));

        let more_sold = sku(
            12,
            2,
            6,
            vec![
                ch("live", 12, 0, 5, 5, 0, None),
                ch("web", 2, 1, 3, 0, 0, Some(6)),
            ],
        );
        assert!(findings(&more_sold)[0].contains("more than the sku's"));
        let over_cap = sku(12, 2, 6, vec![ch("web", 0, 2, 5, 0, 0, Some(6))]);
        assert!(
            findings(&over_cap)
                .iter()
                .any(|f| f.contains("over its cap 6"))
        );
        let over_quota = sku(12, 2, 6, vec![ch("live", 12, 0, 1, 5, 0, None)]);
        assert!(findings(&over_quota).iter().any(|f| f.contains("quota 5")));
        let offers_too_much = sku(3, 0, 0, vec![ch("live", 4, 0, 0, 0, 0, None)]);
        assert!(
            findings(&offers_too_much)
                .iter()
                .any(|f| f.contains("offers 4"))
        );
    }
}
