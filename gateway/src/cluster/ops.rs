//! The operations' multi-node paths: reservations that lease stock first,
//! and hold operations that go to the node that made the hold.

use super::forward::{self, Request};
use crate::error::ApiError;
use crate::journal::conn::Target;
use crate::journal::ended::{EndedHold, EndedLookup};
use crate::ops::{Applied, Ops};
use crate::protocol::{HoldView, Reserve, Reserved};
use holdfast_engine::{HoldId, ReserveError};
use serde::de::DeserializeOwned;

impl Ops {
    /// The node that made `hold`, if it is another one (multi-node only).
    pub fn remote_owner(&self, hold: &str) -> Option<u8> {
        let cluster = self.cluster.as_ref()?;
        let id: HoldId = hold.parse().ok()?;
        (id.node() != cluster.node).then_some(id.node())
    }

    /// Runs a hold operation at the node that made the hold.
    pub async fn forwarded<T: DeserializeOwned>(
        &self,
        owner: u8,
        request: Request,
    ) -> Result<T, ApiError> {
        let cluster = self.cluster.as_ref().expect("multi-node only");
        let body = forward::send(cluster, owner, request).await?;
        serde_json::from_value(body)
            .map_err(|_| ApiError::unavailable("another node's answer did not parse: retry"))
    }

    /// A reservation in multi-node mode: makes sure this node holds the
    /// units first (leasing them, and if the pool is short, asking other
    /// nodes for their idle ones), then reserves as a single node does.
    /// Refused as sold out only when the whole deployment has none.
    ///
    /// A retry of a request another node took gets that node's hold
    /// ([`super::requests`]).
    pub(crate) async fn reserve_here(&self, req: Reserve) -> Result<Applied<Reserved>, ApiError> {
        let claims = self
            .cluster
            .as_ref()
            .is_some_and(|c| c.settings.request_claims);
        let Some(request_id) = req.request_id.clone().filter(|_| claims) else {
            return self.reserve_leased_here(req).await;
        };
        let (reply_id, fp) = (req.id, super::requests::fingerprint(&req));
        let applied = self.reserve_leased_here(req).await;
        self.claim_request(applied, &request_id, fp, reply_id).await
    }

    async fn reserve_leased_here(&self, req: Reserve) -> Result<Applied<Reserved>, ApiError> {
        let cluster = self.cluster.as_ref().expect("multi-node only");
        cluster.check_fence()?;
        let mut needs = Vec::new();
        match (&req.sku, req.qty, &req.lines) {
            (Some(sku), Some(qty), None) => needs.push((sku.clone(), qty)),
            (None, None, Some(lines)) => {
                needs.extend(lines.iter().map(|l| (l.sku.clone(), l.qty)));
            }
            // Malformed: the single-node path says why.
            _ => return self.reserve_now(req),
        }
        for attempt in 0..2 {
            for (id, qty) in &needs {
                let Some(sku) = self.engine.sku(id) else {
                    return self.reserve_now(req);
                };
                cluster.check_frozen(sku)?;
                // A partial fill takes what there is: one unit will do.
                let need = if req.allow_partial { 1 } else { *qty };
                // A channel the SKU does not have: the engine refuses it.
                let channel = match req.channel.as_deref() {
                    Some(c) => match self.engine.channel(sku, c) {
                        Some(c) => Some(c),
                        None => return self.reserve_now(req),
                    },
                    None => None,
                };
                if !cluster.ensure(sku, need, channel).await? {
                    return Err(self.shortage(sku, *qty, channel));
                }
            }
            match self.reserve_now(req.clone()) {
                Err(e) if attempt == 0 && is_stock_refusal(&e) => continue,
                other => return other,
            }
        }
        self.reserve_now(req)
    }

    /// The refusal of a reservation the deployment cannot fill: sold out
    /// when no unit is available anywhere (for its channel, if it names
    /// one: other channels' quotas are not its), a channel's cap reached,
    /// else how many are.
    fn shortage(
        &self,
        sku: holdfast_engine::SkuIdx,
        qty: u32,
        channel: Option<holdfast_engine::ChannelIdx>,
    ) -> ApiError {
        let snap = self.snapshot(sku);
        let channels = snap.iter().flat_map(|s| &s.channels);
        let (available, headroom) = match channel {
            // Quota units are their channels' alone.
            None => {
                let quotas: u32 = channels.map(|c| c.quota.available).sum();
                let all = snap.as_ref().map_or(0, |s| s.counts.available);
                (all.saturating_sub(quotas), None)
            }
            Some(c) => match channels.into_iter().find(|x| x.channel == c) {
                Some(x) => (
                    x.available,
                    x.cap.map(|cap| cap.saturating_sub(x.held + x.sold)),
                ),
                None => (0, None),
            },
        };
        if let Some(remaining) = headroom.filter(|r| *r < qty) {
            ReserveError::ChannelCapReached { remaining }.into()
        } else if available == 0 {
            ReserveError::SoldOut.into()
        } else if available < qty {
            ReserveError::NotEnoughAvailable { available }.into()
        } else {
            // Units exist but sit on nodes that did not give them back in
            // time: say so as a shortage of the moment.
            ApiError::unavailable(format!(
                "{available} units are on other nodes and on their way back to the pool: retry shortly"
            ))
        }
    }

    /// A hold of node `node` that ended: its view from that node's ended
    /// records.
    pub async fn hold_in(&self, node: u8, hold: &str) -> Result<HoldView, ApiError> {
        let id: HoldId = hold
            .parse()
            .map_err(|_| ApiError::invalid("hold must be a hold id (16 hex digits)"))?;
        match self.ended_in(node, id).await? {
            Some(ended) => Ok(crate::ops::ended_view(id, &ended)),
            None => Err(holdfast_engine::HoldError::HoldNotFound.into()),
        }
    }

    /// The refusal for an operation on an ended hold of node `node`.
    pub async fn ended_refusal_in(&self, node: u8, hold: HoldId) -> ApiError {
        match self.ended_in(node, hold).await {
            Ok(Some(ended)) => crate::ops::ended_refusal(&ended).into(),
            Ok(None) => holdfast_engine::HoldError::HoldNotFound.into(),
            Err(e) => e,
        }
    }

    pub(super) async fn ended_in(
        &self,
        node: u8,
        hold: HoldId,
    ) -> Result<Option<EndedHold>, ApiError> {
        let cluster = self.cluster.as_ref().expect("multi-node only");
        let lookup = EndedLookup::new(
            Target::Cluster {
                client: Box::new(cluster.client.clone()),
                slot_key: cluster.keys.owner(node),
            },
            cluster.keys.node_journal(node),
            self.durability.ended_retention_ms(),
            std::time::Duration::from_millis(cluster.settings.forward_timeout_ms),
        );
        lookup.find(hold, self.engine.now_ms()).await
    }
}

fn is_stock_refusal(e: &ApiError) -> bool {
    use crate::protocol::Code;
    matches!(e.code, Code::SoldOut | Code::NotEnoughAvailable)
}
