//! Cluster mode: one round trip per journal batch, by carrying the fence's
//! `WATCH` from one batch to the next on a connection of the writer's own.
//!
//! A node's batch may only land while the node's journal record carries
//! the node's ownership epoch: an adopter (`cluster::adopt`) or a
//! restarted owner bumps it, and from then on this process's view is
//! stale. The guarded path reads the epoch under `WATCH` in a round trip
//! of its own before every batch. Here that read rides at the tail of the
//! previous batch instead; each batch's pipeline is
//!
//! ```text
//! MULTI, body, EXEC, [WAIT n ms], WATCH j, HGET j seq, HGET j epoch
//! ```
//!
//! `EXEC` ends the previous watch; the `WATCH` after it starts the next,
//! and the two `HGET`s read the record under it. When they show this
//! node's epoch and the seq the batch just wrote, the next batch needs no
//! check of its own: its `EXEC` applies only if no client has written the
//! record since that `WATCH`. The first batch, and the first after any
//! fallback, arms the path with a round trip of its own (`WATCH`, the two
//! `HGET`s).
//!
//! # Why this is as safe as the guarded path
//!
//! - **Everything that can fence the node writes the journal record**
//!   (`HINCRBY epoch` by an adopter or a restarted owner; another writer's
//!   batch; a full re-write). Any of them between the `WATCH` and the
//!   `EXEC` makes the `EXEC` answer nil, and nothing of the batch applies:
//!   the fence is checked by Redis at `EXEC`, exactly as on the guarded
//!   path, only the read that sets it up moved one batch earlier. An idle
//!   time between two batches changes nothing: the watch stays on the
//!   connection however long it waits.
//! - **A `WATCH` lives on one TCP connection.** The cluster connection may
//!   reconnect or re-route by itself (after `MOVED`, a topology refresh), and
//!   a `MULTI`/`EXEC` arriving on a fresh connection carries no watch: it
//!   would apply unfenced. So this path runs on a plain
//!   [`MultiplexedConnection`] to the master of the node's slot, used by
//!   the writer alone. It never reconnects by itself: once its socket is
//!   gone every request on it errors, so the `EXEC` either reaches the
//!   connection that holds the watch or does not reach Redis at all.
//! - **A connection to a node that no longer serves the slot** gets
//!   `MOVED` for the `WATCH`, the `HGET`s and every queued command (so
//!   `EXECABORT`): an error. A master demoted by a failover resyncs from
//!   the new one, which touches every watched key.
//! - **Any doubt drops the connection**: an error, a nil `EXEC`, a tail
//!   showing another epoch or seq, a timed-out or cancelled send (the
//!   link is taken out of [`Carried`] before the pipeline goes out, and
//!   put back only after a complete, expected answer). The batch then
//!   takes the guarded path on the cluster connection, which trips the
//!   fence, re-writes, or finds the batch landed, as it always did; the
//!   next batch finds the slot's master again and re-arms.
//! - **Acknowledgements are unchanged**: the `WAIT` follows the `EXEC` on
//!   the same connection, so it waits for that `EXEC`'s writes, and the
//!   batch is acknowledged only when enough replicas confirmed.

use super::conn::Conn;
use redis::aio::MultiplexedConnection;
use redis::{ConnectionAddr, ConnectionInfo, Value};
use std::time::{Duration, Instant};

/// After a failure to set up the direct connection, the guarded path alone
/// for this long: a master that cannot be reached directly must not cost
/// every batch a connection attempt.
const ARM_RETRY_AFTER: Duration = Duration::from_secs(1);

/// How to reach the slot's master directly: the settings (auth, TLS) of
/// the first `--redis-cluster` address, with the master's host and port.
#[derive(Clone)]
pub struct Seed(pub ConnectionInfo);

impl std::fmt::Debug for Seed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        write!(f, "Seed({})", self.0.addr())
    }
}

impl Seed {
    /// A connection of its own to `host:port` (no reconnection: see the
    /// module docs).
    async fn connect(
        &self,
        (host, port): (String, u16),
        timeout: Duration,
    ) -> redis::RedisResult<MultiplexedConnection> {
        let addr = match self.0.addr() {
            ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => ConnectionAddr::TcpTls {
                host,
                port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => ConnectionAddr::Tcp(host, port),
        };
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        redis::Client::open(self.0.clone().set_addr(addr))?
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }
}

/// The writer's carried fence: armed or not.
#[derive(Default)]
pub struct Carried {
    /// Present only while armed: a `WATCH` on the journal record is in
    /// force on this connection, under which the record showed this
    /// node's epoch and `seq`.
    link: Option<Link>,
    /// No new attempt to arm before this.
    retry_at: Option<Instant>,
}

struct Link {
    con: MultiplexedConnection,
    seq: u64,
}

/// What a batch sent over the carried fence gave.
pub enum Carry {
    /// Applied, and acknowledged by the replicas asked for.
    Landed,
    /// Not sent: not armed (nothing known about Redis), or the fence
    /// could not be set up. Take the guarded path.
    NotArmed,
    /// The `EXEC` answered nil: someone wrote the journal record since
    /// the `WATCH`; nothing was applied. Take the guarded path.
    Aborted,
}

/// The commands after a batch's `EXEC` (and `WAIT`) that carry the fence to
/// the next batch.
pub fn add_tail(pipe: &mut redis::Pipeline, journal_key: &str) {
    pipe.cmd("WATCH").arg(journal_key).ignore();
    pipe.cmd("HGET").arg(journal_key).arg("seq");
    pipe.cmd("HGET").arg(journal_key).arg("epoch");
}

/// The journal record's `seq` and `epoch`, as read by the tail's `HGET`s.
fn read_tail(
    seq: Option<Value>,
    epoch: Option<Value>,
) -> redis::RedisResult<(Option<u64>, Option<u64>)> {
    Ok((
        redis::from_redis_value(seq.unwrap_or(Value::Nil))?,
        redis::from_redis_value(epoch.unwrap_or(Value::Nil))?,
    ))
}

/// One batch's fixed inputs to [`Carried::exec`].
pub struct Sending<'a> {
    pub pipe: &'a redis::Pipeline,
    /// Replicas the batch's `WAIT` asks for (`None`: no `WAIT`).
    pub acks: Option<u32>,
    pub journal_key: &'a str,
    /// This process's ownership epoch.
    pub epoch: u64,
    /// The journal's seq before the batch, and after it.
    pub persisted: u64,
    pub end: u64,
    pub timeout: Duration,
}

impl Carried {
    /// Forgets the fence (and closes its connection).
    pub fn drop_link(&mut self) {
        self.link = None;
    }

    /// Sends `batch` over the carried fence, arming it first if needed.
    /// Errors drop the connection; then the batch may or may not have
    /// applied, and the caller's guarded path finds out.
    pub async fn exec(&mut self, cluster: &mut Conn, seed: &Seed, b: Sending<'_>) -> Carry {
        let link = match self.link.take() {
            Some(link) if link.seq == b.persisted => Some(link),
            _ => self.arm(cluster, seed, &b).await,
        };
        let Some(mut link) = link else {
            metrics::counter!("holdfast_journal_carried_total", "outcome" => "not_armed")
                .increment(1);
            return Carry::NotArmed;
        };
        match Self::send(&mut link.con, &b).await {
            Ok(Some(tail)) => {
                metrics::counter!("holdfast_journal_carried_total", "outcome" => "landed")
                    .increment(1);
                // Armed for the next batch only if the record is as this
                // batch left it, under the tail's watch.
                if tail == (Some(b.end), Some(b.epoch)) {
                    link.seq = b.end;
                    self.link = Some(link);
                }
                Carry::Landed
            }
            Ok(None) => {
                metrics::counter!("holdfast_journal_carried_total", "outcome" => "aborted")
                    .increment(1);
                Carry::Aborted
            }
            Err(e) => {
                tracing::debug!(error = %e, "journal batch over the carried fence failed; the guarded path decides");
                metrics::counter!("holdfast_journal_carried_total", "outcome" => "error")
                    .increment(1);
                Carry::NotArmed
            }
        }
    }

    /// One round trip: the batch's pipeline. `None`: the `EXEC` was
    /// refused (nil). Otherwise the tail's `(seq, epoch)`.
    async fn send(
        con: &mut MultiplexedConnection,
        b: &Sending<'_>,
    ) -> redis::RedisResult<Option<(Option<u64>, Option<u64>)>> {
        let values: Vec<Value> = b.pipe.query_async(con).await?;
        let mut values = values.into_iter();
        if matches!(values.next(), None | Some(Value::Nil)) {
            return Ok(None);
        }
        if let Some(acks) = b.acks {
            let got: u32 = redis::from_redis_value(values.next().unwrap_or(Value::Nil))?;
            super::writer::replicated(got, acks)?;
        }
        read_tail(values.next(), values.next()).map(Some)
    }

    /// Finds the slot's master, connects to it, and reads the record under
    /// a fresh `WATCH`. `None` (and no connection kept) unless it shows this
    /// node's epoch and the seq the batch follows.
    async fn arm(&mut self, cluster: &mut Conn, seed: &Seed, b: &Sending<'_>) -> Option<Link> {
        if self.retry_at.is_some_and(|at| Instant::now() < at) {
            return None;
        }
        let armed = async {
            let master = cluster.slot_master().await?;
            let mut con = seed.connect(master, b.timeout).await?;
            let mut pipe = redis::pipe();
            add_tail(&mut pipe, b.journal_key);
            let values: Vec<Value> = pipe.query_async(&mut con).await?;
            let mut values = values.into_iter();
            let tail = read_tail(values.next(), values.next())?;
            redis::RedisResult::Ok((tail == (Some(b.persisted), Some(b.epoch))).then_some(con))
        };
        match armed.await {
            Ok(con) => {
                self.retry_at = None;
                con.map(|con| Link {
                    con,
                    seq: b.persisted,
                })
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot set up the journal's carried fence; guarded batches meanwhile");
                self.retry_at = Some(Instant::now() + ARM_RETRY_AFTER);
                None
            }
        }
    }
}

/// The master serving `slot` in a `CLUSTER SLOTS` answer: ranges of
/// `[start, end, [host, port, id, ...], replicas...]`. `None` when the
/// answer has no such range, or the master's host is unknown (empty or
/// `?`).
pub fn master_in_slots(reply: &Value, slot: u16) -> Option<(String, u16)> {
    let Value::Array(ranges) = reply else {
        return None;
    };
    ranges.iter().find_map(|range| {
        let Value::Array(fields) = range else {
            return None;
        };
        let int = |v: &Value| redis::from_redis_value::<u16>(v.clone()).ok();
        let (start, end) = (int(fields.first()?)?, int(fields.get(1)?)?);
        if !(start..=end).contains(&slot) {
            return None;
        }
        let Value::Array(master) = fields.get(2)? else {
            return None;
        };
        let host: String = redis::from_redis_value(master.first()?.clone()).ok()?;
        let port = int(master.get(1)?)?;
        (!host.is_empty() && host != "?").then_some((host, port))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn the_master_of_a_slot_is_found_in_cluster_slots() {
        let node = |host: &str, port: i64| Value::Array(vec![bulk(host), Value::Int(port), bulk("id")]);
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node("127.0.0.1", 7000),
                node("127.0.0.1", 7003),
            ]),
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(16383),
                node("10.0.0.2", 7001),
            ]),
            Value::Array(vec![Value::Int(100), Value::Int(100), node("", 7009)]),
        ]);
        assert_eq!(
            master_in_slots(&reply, 0),
            Some(("127.0.0.1".into(), 7000))
        );
        assert_eq!(
            master_in_slots(&reply, 12_000),
            Some(("10.0.0.2".into(), 7001))
        );
        assert_eq!(master_in_slots(&Value::Nil, 1), None);
        let unknown = Value::Array(vec![Value::Array(vec![
            Value::Int(0),
            Value::Int(16383),
            node("?", 7000),
        ])]);
        assert_eq!(master_in_slots(&unknown, 5), None, "an unknown host");
    }
}
