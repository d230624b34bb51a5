//! Ended holds, findable after the engine forgot them: after a restart
//! (the engine restores live holds only) or once a hold's slot was reused.
//! The writer keeps every ended hold line in `<prefix>:ended:<hour>` for
//! `--ended-hold-retention-ms`; this module looks one up, on the rare path
//! where the engine answers `hold_not_found`.

use super::conn::{Conn, Target};
use super::keys::{ENDED_BUCKET_MS, EndedRecord, Keys, ended_bucket, hold_field};
use crate::error::ApiError;
use holdfast_engine::HoldId;
use holdfast_engine::limits::CART_LINES_MAX;
use std::time::Duration;
use tokio::sync::Mutex;

/// An ended hold as Redis remembers it: its lines in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndedHold {
    pub lines: Vec<EndedRecord>,
}

/// Looks ended holds up in Redis, on a connection of its own (the writer's
/// lives on the journal's thread).
#[derive(Debug)]
pub struct EndedLookup {
    target: Target,
    conn: Mutex<Option<Conn>>,
    keys: Keys,
    retention_ms: u64,
    timeout: Duration,
}

impl EndedLookup {
    pub fn new(target: Target, keys: Keys, retention_ms: u64, timeout: Duration) -> Self {
        Self {
            target,
            conn: Mutex::new(None),
            keys,
            retention_ms,
            timeout,
        }
    }

    /// The key names (erasure uses this connection too).
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// How long ended holds are kept.
    pub fn retention_ms(&self) -> u64 {
        self.retention_ms
    }

    /// The ended hold `hold`, if Redis still has it. Reads every hour
    /// bucket of the retention window in one pipeline.
    pub async fn find(&self, hold: HoldId, now_ms: u64) -> Result<Option<EndedHold>, ApiError> {
        if self.retention_ms == 0 {
            return Ok(None);
        }
        let newest = ended_bucket(now_ms);
        let oldest = ended_bucket(now_ms.saturating_sub(self.retention_ms + ENDED_BUCKET_MS));
        let fields: Vec<_> = (0..CART_LINES_MAX as u8)
            .map(|line| hold_field(hold, line).as_str().to_owned())
            .collect();
        let mut pipe = redis::pipe();
        for bucket in oldest..=newest {
            pipe.cmd("HMGET").arg(self.keys.ended(bucket)).arg(&fields);
        }
        let replies: Vec<Vec<Option<Vec<u8>>>> = self.query(&pipe).await?;
        let mut lines: Vec<EndedRecord> = replies
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|bytes| EndedRecord::decode(&bytes))
            .collect();
        if lines.is_empty() {
            return Ok(None);
        }
        lines.sort_by_key(|l| l.line);
        lines.dedup_by_key(|l| l.line);
        Ok(Some(EndedHold { lines }))
    }

    /// Runs `pipe` on this lookup's own connection (reconnecting once it
    /// failed).
    pub(crate) async fn query<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, ApiError> {
        let mut conn = self.connection().await?;
        match pipe.query_async(&mut conn).await {
            Ok(v) => Ok(v),
            Err(e) => Err(self.failed(&e).await),
        }
    }

    /// A clone of this lookup's multiplexed connection (lookups do not
    /// wait for each other behind the lock), connecting first if needed.
    /// Also used by erasure, which runs many commands on it.
    pub(crate) async fn connection(&self) -> Result<Conn, ApiError> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let c = self
            .target
            .connect(self.timeout)
            .await
            .map_err(|e| unavailable(&e))?;
        Ok(guard.insert(c).clone())
    }

    /// A command on [`Self::connection`] failed: reconnect next time.
    pub(crate) async fn failed(&self, e: &redis::RedisError) -> ApiError {
        *self.conn.lock().await = None;
        unavailable(e)
    }
}

fn unavailable(e: &dyn std::fmt::Display) -> ApiError {
    tracing::warn!(error = %e, "redis lookup failed");
    ApiError::unavailable("redis is unavailable, retry shortly")
}
