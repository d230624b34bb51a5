//! This node's ownership of its slot, and the fence that keeps it from
//! selling past it.
//!
//! The node renews its ownership every quarter of `--node-ttl-ms`; Redis
//! records `until = its TIME + ttl`. The node may sell until its own send
//! time of the last successful renewal plus two thirds of the ttl: that
//! is before Redis can consider it lapsed (whatever the network delay of
//! the renewal, its send time came first), with a third of the ttl to
//! spare for clock rate differences and the moment between the check and
//! the sale. A node that was stopped (SIGSTOP, a long pause) finds its
//! fence passed when it resumes and refuses until it has renewed; if
//! another node adopted it meanwhile, renewing fails for good and the node
//! shuts down (its journal would also refuse to write).

use super::{Cluster, scripts};
use crate::error::ApiError;
use crate::protocol::Code;
use axum::http::StatusCode;
use metrics::{counter, gauge};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

impl Cluster {
    /// The ownership was renewed by a request sent at `sent_ms` (monotonic).
    pub(super) fn renewed(&self, sent_ms: u64) {
        let until = sent_ms + self.settings.node_ttl_ms * 2 / 3;
        // Relaxed: a single value, read by `check_fence`; a reader that
        // sees the old value refuses a sale a moment too early at worst.
        self.fence_until_ms.fetch_max(until, Ordering::Relaxed);
    }

    /// Refuses when this node may not sell now (its ownership may have
    /// lapsed in Redis, or it was fenced out).
    pub fn check_fence(&self) -> Result<(), ApiError> {
        if self.fenced.is_tripped() {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                Code::Unavailable,
                "this node was fenced out of the cluster (another node adopted its state): it is restarting",
            ));
        }
        if self.mono_ms() >= self.fence_until_ms.load(Ordering::Relaxed) {
            counter!("holdfast_cluster_fence_refusals_total").increment(1);
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                Code::Unavailable,
                "this node has not renewed its lease with the Redis Cluster in time: retry (another node, or shortly)",
            ));
        }
        Ok(())
    }

    /// After a clean stop: lets a restart of this node take it at once
    /// (see [`scripts::RESIGN`]). Bounded; a failure only means the
    /// restart waits out the ttl.
    pub async fn resign(&self) {
        let mut conn = self.owner_conn();
        let mut invocation = scripts::RESIGN.key(self.keys.owner(self.node));
        invocation
            .key(self.keys.node_journal(self.node).journal())
            .arg(&self.instance)
            .arg(self.epoch);
        let resigned = invocation.invoke_async::<u64>(&mut conn);
        match tokio::time::timeout(std::time::Duration::from_secs(2), resigned).await {
            Ok(Ok(1)) => tracing::info!(
                node = self.node,
                "resigned this node's ownership: a restart with this --node-id takes it at once"
            ),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not resign this node's ownership: a restart waits out --node-ttl-ms")
            }
            Err(_) => tracing::warn!(
                "resigning this node's ownership timed out: a restart waits out --node-ttl-ms"
            ),
        }
    }

    /// Renews the ownership once.
    async fn renew(&self) -> Result<(), String> {
        let sent = self.mono_ms();
        let reply: Vec<redis::Value> = scripts::HEARTBEAT
            .key(self.keys.owner(self.node))
            .key(self.keys.node_journal(self.node).journal())
            .arg(self.epoch)
            .arg(self.settings.node_ttl_ms)
            .invoke_async(&mut self.owner_conn())
            .await
            .map_err(|e| format!("renewing the node's ownership: {e}"))?;
        let head: String = redis::from_redis_value(reply[0].clone()).map_err(|e| e.to_string())?;
        if head == "fenced" {
            let now: u64 = redis::from_redis_value(reply[1].clone()).unwrap_or(0);
            self.fenced.trip(format!(
                "node {} is at epoch {now} in Redis, this process holds epoch {}: another node adopted it \
                 while it was silent; restart it to take its state back",
                self.node, self.epoch
            ));
            return Err("fenced".into());
        }
        self.renewed(sent);
        Ok(())
    }
}

/// Renews the ownership from the moment it is taken until the node's
/// heartbeat starts (`stop`): recovery and catalog sync can take longer
/// than `--node-ttl-ms` on a loaded machine or with a large journal, and a
/// node that is merely starting must not look dead and be adopted. It only
/// keeps the ownership alive; the fence is the heartbeat's.
pub async fn keep_while_starting(
    mut conn: redis::cluster_async::ClusterConnection,
    keys: super::keys::ClusterKeys,
    node: u8,
    epoch: u64,
    ttl_ms: u64,
    stop: CancellationToken,
) {
    let every = Duration::from_millis((ttl_ms / 4).max(50));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let mut invocation = scripts::HEARTBEAT.key(keys.owner(node));
        invocation
            .key(keys.node_journal(node).journal())
            .arg(epoch)
            .arg(ttl_ms);
        let renewal = invocation.invoke_async::<Vec<redis::Value>>(&mut conn);
        match tokio::time::timeout(every, renewal).await {
            Ok(Ok(reply)) => {
                if matches!(
                    redis::from_redis_value::<String>(reply[0].clone()).as_deref(),
                    Ok("fenced")
                ) {
                    // Adopted anyway: the heartbeat finds out and stops the node.
                    return;
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not renew this node's ownership while starting")
            }
            Err(_) => tracing::warn!("renewing this node's ownership while starting timed out"),
        }
    }
}

/// Renews the ownership every quarter ttl until shutdown or fencing.
pub async fn heartbeat(cluster: Arc<Cluster>, shutdown: CancellationToken) {
    // From here on the heartbeat renews.
    cluster.starting_keeper.cancel();
    let every = Duration::from_millis((cluster.settings.node_ttl_ms / 4).max(50));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = cluster.fenced.token.cancelled() => return,
            _ = tick.tick() => {}
        }
        // Bounded: a renewal stuck in a failover must not delay the next.
        let renewed = tokio::time::timeout(every, cluster.renew())
            .await
            .unwrap_or_else(|_| Err("renewing the node's ownership timed out".into()));
        match renewed {
            Ok(()) => gauge!("holdfast_cluster_owner_up").set(1.0),
            Err(e) if e == "fenced" => return,
            Err(e) => {
                gauge!("holdfast_cluster_owner_up").set(0.0);
                tracing::warn!(error = %e, "could not renew this node's ownership");
            }
        }
    }
}
