//! The baseline a shop would pick today: stock in a Redis hash, a Lua script
//! that checks and moves units per request, called with EVALSHA.
//!
//! Reserve moves one unit from `available` to `held` if there is one
//! (`-1` otherwise); commit moves it from `held` to `sold`. Each of C
//! clients has its own connection. Unpipelined, a client has one request in
//! flight; pipelined, it sends P reserves in one round trip and then the P
//! commits in the next. When a reserve finds the drop sold out, the client
//! restocks it (one more script, counted as no pair), as the engine side
//! moves to a fresh drop.
//!
//! The baseline does less than the engine: no hold record, no deadline, no
//! expiry, no events, no buyer limit. A ratio against it is therefore an
//! under-claim for holdfast, never an over-claim. This module only ever
//! talks to the private server it is given (`holdfast_testkit::RedisServer`).

use crate::measure::{Measurement, Phase, Phases, latency_histogram, other_process_cpu_s, record};
use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use redis::aio::MultiplexedConnection;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The stock hash (hash-tagged so the layout would fit Redis Cluster).
pub const STOCK_KEY: &str = "{bench:hot}:stock";

/// Reserve: take `ARGV[1]` units if available. Returns units left, or -1.
pub const RESERVE_LUA: &str = r"
local q = tonumber(ARGV[1])
local a = tonumber(redis.call('HGET', KEYS[1], 'available') or '0')
if a >= q then
  redis.call('HINCRBY', KEYS[1], 'available', -q)
  redis.call('HINCRBY', KEYS[1], 'held', q)
  return a - q
end
return -1
";

/// Commit: move `ARGV[1]` held units to sold. Returns units sold so far.
pub const COMMIT_LUA: &str = r"
local q = tonumber(ARGV[1])
redis.call('HINCRBY', KEYS[1], 'held', -q)
return redis.call('HINCRBY', KEYS[1], 'sold', q)
";

/// Restock: add `ARGV[2]` units if fewer than `ARGV[1]` are available (so
/// clients that all saw the sell-out restock once, not once each).
pub const RESTOCK_LUA: &str = r"
local a = tonumber(redis.call('HGET', KEYS[1], 'available') or '0')
if a < tonumber(ARGV[1]) then
  return redis.call('HINCRBY', KEYS[1], 'available', ARGV[2])
end
return a
";

/// Most requests in one pipeline (bounds the client's buffers).
pub const PIPELINE_MAX: usize = 1024;

/// How the clients talk to Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One request in flight per client.
    Unpipelined,
    /// This many reserves per round trip, then as many commits.
    Pipelined(usize),
}

/// Everything a Redis-Lua run needs.
#[derive(Debug, Clone)]
pub struct RedisRun {
    pub url: String,
    pub clients: usize,
    pub mode: Mode,
    pub drop_units: u32,
    pub warmup: Duration,
    pub duration: Duration,
    /// Tokio worker threads driving the clients.
    pub client_threads: usize,
    /// The server's pid, to count its CPU time with the client's.
    pub server_pid: Option<u32>,
}

/// SHA1s of the loaded scripts.
#[derive(Debug, Clone)]
struct Shas {
    reserve: String,
    commit: String,
    restock: String,
}

/// Runs the workload against the server at `run.url` and measures it.
pub fn run(run: &RedisRun) -> Result<Measurement> {
    if let Mode::Pipelined(p) = run.mode
        && (p == 0 || p > PIPELINE_MAX)
    {
        bail!("pipeline depth must be 1..={PIPELINE_MAX}");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(run.client_threads.max(1))
        .enable_all()
        .build()?;
    rt.block_on(run_async(run))
}

async fn run_async(run: &RedisRun) -> Result<Measurement> {
    let client = redis::Client::open(run.url.as_str())?;
    let mut admin = client
        .get_multiplexed_async_connection()
        .await
        .context("connecting to redis")?;
    let shas = Shas {
        reserve: load(&mut admin, RESERVE_LUA).await?,
        commit: load(&mut admin, COMMIT_LUA).await?,
        restock: load(&mut admin, RESTOCK_LUA).await?,
    };
    redis::cmd("DEL")
        .arg(STOCK_KEY)
        .exec_async(&mut admin)
        .await?;
    redis::cmd("HSET")
        .arg(STOCK_KEY)
        .arg(&[("available", run.drop_units), ("held", 0), ("sold", 0)])
        .exec_async(&mut admin)
        .await?;

    let phases = Arc::new(Phases::default());
    let mut tasks = Vec::with_capacity(run.clients);
    for _ in 0..run.clients {
        // Its own TCP connection per client, as C separate app servers have.
        let con = client
            .get_multiplexed_async_connection()
            .await
            .context("connecting a client")?;
        let (phases, shas, run) = (phases.clone(), shas.clone(), run.clone());
        tasks.push(tokio::spawn(async move {
            client_loop(con, &run, &shas, &phases).await
        }));
    }
    let cpu_s = || {
        holdfast_sys::process_cpu_seconds()
            + run.server_pid.and_then(other_process_cpu_s).unwrap_or(0.0)
    };
    let interval = phases.drive_async(run.warmup, run.duration, &cpu_s).await;

    let mut pairs = 0;
    let mut latency = latency_histogram();
    for task in tasks {
        let (n, hist) = task.await??;
        pairs += n;
        latency.add(&hist).expect("same histogram bounds");
    }
    let counts: Vec<i64> = redis::cmd("HMGET")
        .arg(STOCK_KEY)
        .arg(&["available", "held", "sold"])
        .query_async(&mut admin)
        .await?;
    if counts.get(1) != Some(&0) {
        bail!("units still held after every client finished: {counts:?}");
    }
    let note = match run.mode {
        Mode::Unpipelined => "latency: every pair, reserve sent → commit reply".to_string(),
        Mode::Pipelined(p) => {
            format!("latency: every pair, its batch's reserve sent → commit reply (P={p})")
        }
    };
    Ok(Measurement {
        pairs,
        elapsed: interval.elapsed,
        cpu_s: interval.cpu_s,
        latency,
        note,
    })
}

async fn load(con: &mut MultiplexedConnection, script: &str) -> Result<String> {
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(script)
        .query_async(con)
        .await?;
    Ok(sha)
}

/// One client: reserve→commit until told to stop; returns pairs counted
/// while measuring and their latencies.
async fn client_loop(
    mut con: MultiplexedConnection,
    run: &RedisRun,
    shas: &Shas,
    phases: &Phases,
) -> Result<(u64, Histogram<u64>)> {
    let mut hist = latency_histogram();
    let mut pairs = 0u64;
    let depth = match run.mode {
        Mode::Unpipelined => 1,
        Mode::Pipelined(p) => p,
    };
    let mut reserve = redis::pipe();
    for _ in 0..depth {
        reserve
            .cmd("EVALSHA")
            .arg(&shas.reserve)
            .arg(1)
            .arg(STOCK_KEY)
            .arg(1);
    }
    let mut commit = redis::pipe();
    loop {
        let phase = phases.get();
        if phase == Phase::Stop {
            return Ok((pairs, hist));
        }
        let start = Instant::now();
        let ok = if depth == 1 {
            let left: i64 = redis::cmd("EVALSHA")
                .arg(&shas.reserve)
                .arg(1)
                .arg(STOCK_KEY)
                .arg(1)
                .query_async(&mut con)
                .await?;
            usize::from(left >= 0)
        } else {
            let left: Vec<i64> = reserve.query_async(&mut con).await?;
            left.iter().filter(|&&l| l >= 0).count()
        };
        if ok < depth {
            let _: i64 = redis::cmd("EVALSHA")
                .arg(&shas.restock)
                .arg(1)
                .arg(STOCK_KEY)
                .arg(depth)
                .arg(run.drop_units)
                .query_async(&mut con)
                .await?;
        }
        if ok == 0 {
            continue;
        }
        if depth == 1 {
            let _: i64 = redis::cmd("EVALSHA")
                .arg(&shas.commit)
                .arg(1)
                .arg(STOCK_KEY)
                .arg(1)
                .query_async(&mut con)
                .await?;
        } else {
            commit.clear();
            for _ in 0..ok {
                commit
                    .cmd("EVALSHA")
                    .arg(&shas.commit)
                    .arg(1)
                    .arg(STOCK_KEY)
                    .arg(1);
            }
            let _: Vec<i64> = commit.query_async(&mut con).await?;
        }
        if phase == Phase::Measure {
            pairs += ok as u64;
            record(&mut hist, start.elapsed().as_nanos() as u64, ok as u64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_testkit::RedisServer;

    #[test]
    fn scripts_never_oversell_and_settle_every_hold() {
        let Some(server) = RedisServer::for_test("the Redis-Lua baseline test") else {
            return;
        };
        for mode in [Mode::Unpipelined, Mode::Pipelined(8)] {
            let run = RedisRun {
                url: server.url(),
                clients: 4,
                mode,
                drop_units: 50,
                warmup: Duration::from_millis(20),
                duration: Duration::from_millis(150),
                client_threads: 1,
                server_pid: Some(server.pid()),
            };
            let m = super::run(&run).unwrap();
            assert!(m.pairs > 0);
            assert_eq!(m.latency.len(), m.pairs, "one latency per pair");
        }
    }
}
