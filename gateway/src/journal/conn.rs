//! Where the journal writes: one Redis (`--redis`), or this node's slot of a
//! Redis Cluster (`--redis-cluster`). Both are a [`Conn`], so the writer,
//! recovery and lookups run the same commands either way; in a cluster
//! every key of a node carries the node's hash tag, so a batch's
//! `MULTI`/`EXEC` stays in one slot, and the few keyless commands (`SCAN`)
//! are routed to that slot's master explicitly.

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};
use std::time::Duration;

/// How to connect.
#[derive(Clone)]
#[allow(clippy::large_enum_variant)] // built once per process
pub enum Target {
    Single(redis::Client),
    /// A cluster, and a key of the slot this journal writes (its node's).
    Cluster {
        client: Box<ClusterClient>,
        slot_key: String,
    },
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Single(_) => f.write_str("Target::Single"),
            Self::Cluster { slot_key, .. } => write!(f, "Target::Cluster({slot_key})"),
        }
    }
}

/// A connection of either kind.
#[derive(Clone)]
pub enum Conn {
    Single(MultiplexedConnection),
    /// A cluster connection and the slot of this journal's keys.
    Cluster(ClusterConnection, u16),
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Single(_) => f.write_str("Conn::Single"),
            Self::Cluster(_, slot) => write!(f, "Conn::Cluster(slot {slot})"),
        }
    }
}

impl Target {
    /// A fresh connection with the journal's timeouts.
    pub async fn connect(&self, timeout: Duration) -> RedisResult<Conn> {
        match self {
            Self::Single(client) => {
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout));
                Ok(Conn::Single(
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?,
                ))
            }
            Self::Cluster { client, slot_key } => Ok(Conn::Cluster(
                client.get_async_connection().await?,
                key_slot(slot_key),
            )),
        }
    }
}

impl Conn {
    /// `SCAN` for `pattern` where this journal's keys live: the one Redis,
    /// or the master of the node's slot.
    pub async fn scan_keys(&mut self, pattern: &str) -> RedisResult<Vec<String>> {
        let mut found = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000);
            let (next, batch): (u64, Vec<String>) = match self {
                Self::Single(c) => cmd.query_async(c).await?,
                Self::Cluster(c, slot) => {
                    let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
                        Route::new(*slot, SlotAddr::Master),
                    ));
                    redis::from_redis_value(c.route_command(cmd, route).await?)?
                }
            };
            found.extend(batch);
            cursor = next;
            if cursor == 0 {
                return Ok(found);
            }
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c, _) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c, _) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        0
    }
}

/// The cluster slot of a key (CRC16 of its hash tag, mod 16384).
pub fn key_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = match bytes.iter().position(|&b| b == b'{') {
        Some(open) => match bytes[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &bytes[open + 1..open + 1 + len],
            _ => bytes,
        },
        None => bytes,
    };
    crc16_xmodem(tagged) % 16384
}

/// CRC16/XMODEM, the checksum Redis Cluster uses for key slots.
fn crc16_xmodem(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis() {
        // Values from `CLUSTER KEYSLOT` on redis-server 7.0.
        assert_eq!(key_slot("foo"), 12182);
        assert_eq!(key_slot("{user1000}.following"), key_slot("user1000"));
        assert_eq!(key_slot("hf:{node:1}:journal"), key_slot("node:1"));
        assert_eq!(
            key_slot("a{}b"),
            key_slot("a{}b"),
            "an empty tag hashes the whole key"
        );
    }
}
