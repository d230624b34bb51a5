//! A journal batch as one gated script call (single Redis): Redis applies
//! the batch's writes only if the journal record's `seq` is the one the
//! batch follows, and answers with one reply.
//!
//! The gate is what lets the writer keep a second batch on the wire while
//! the first is still on its way: batch N+1 can only land on top of batch
//! N, never on a state N did not reach (N refused, or lost with a dropped
//! connection and executed late). So `seq = X` in Redis always means every
//! batch up to X landed, in order. It must never apply a batch whose
//! predecessor is not in Redis.
//!
//! One command instead of `WATCH`, `HGET`, `MULTI`, a few hundred queued
//! commands and `EXEC` also spares the journal thread the parsing of a
//! `QUEUED` reply per command. Every key the batch writes is declared
//! (`KEYS`), as Redis asks of scripts.

use redis::{Arg, Cmd, Pipeline, Value};
use std::collections::HashSet;

/// `KEYS[1]`: the journal record, then every key the batch writes.
/// `ARGV[1]`: the `seq` the record must hold; then each command as its
/// argument count followed by its arguments. Answers 1 once applied,
/// else the `seq` found (empty: no record), having written nothing.
const SCRIPT: &str = r"
local seq = redis.call('HGET', KEYS[1], 'seq')
if seq ~= ARGV[1] then
  return seq or ''
end
local i, n = 2, #ARGV
while i <= n do
  local c = tonumber(ARGV[i])
  redis.call(unpack(ARGV, i + 1, i + c))
  i = i + c + 1
end
return 1
";

/// What the gate did with a batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Gate {
    Applied,
    /// Nothing written: the record held this `seq` (`None`: no record).
    Refused(Option<u64>),
}

/// The `EVAL` that applies `body` (commands whose first argument is their
/// key, as every journal write is) if the journal record is at `from`.
/// `EVAL` rather than `EVALSHA`: a Redis that restarted or flushed its
/// script cache can never answer `NOSCRIPT`, and the script text is a few
/// hundred bytes next to a batch's tens of kilobytes.
pub fn gated(journal_key: &str, from: u64, body: &Pipeline) -> Cmd {
    let mut keys: Vec<&[u8]> = vec![journal_key.as_bytes()];
    let mut seen: HashSet<&[u8]> = HashSet::new();
    seen.insert(journal_key.as_bytes());
    for cmd in body.cmd_iter() {
        if let Some(Arg::Simple(key)) = cmd.args_iter().nth(1)
            && seen.insert(key)
        {
            keys.push(key);
        }
    }
    let mut eval = Cmd::with_capacity(
        4 + keys.len()
            + body
                .cmd_iter()
                .map(|c| c.args_iter().len() + 1)
                .sum::<usize>(),
        SCRIPT.len()
            + body
                .cmd_iter()
                .flat_map(|c| c.args_iter())
                .map(|a| match a {
                    Arg::Simple(bytes) => bytes.len() + 2,
                    _ => 0,
                })
                .sum::<usize>(),
    );
    eval.arg("EVAL").arg(SCRIPT).arg(keys.len());
    for key in &keys {
        eval.arg(*key);
    }
    eval.arg(from);
    for cmd in body.cmd_iter() {
        eval.arg(cmd.args_iter().len());
        for arg in cmd.args_iter() {
            if let Arg::Simple(bytes) = arg {
                eval.arg(bytes);
            }
        }
    }
    eval
}

/// Reads the script's answer.
pub fn outcome(reply: Value) -> redis::RedisResult<Gate> {
    match reply {
        Value::Int(1) => Ok(Gate::Applied),
        Value::BulkString(ref found) if found.is_empty() => Ok(Gate::Refused(None)),
        other => {
            let found: String = redis::from_redis_value(other)?;
            let seq = found.parse().map_err(|_| {
                redis::RedisError::from((
                    redis::ErrorKind::Parse,
                    "the journal record's seq is not a number",
                    found,
                ))
            })?;
            Ok(Gate::Refused(Some(seq)))
        }
    }
}
