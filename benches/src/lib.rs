//! Shared code for holdfast's benchmarks: the in-process drivers the
//! criterion benches use, and the side-by-side comparison (`compare`) of
//! the engine with the Redis-Lua reservation most shops run today.
//!
//! Everything here measures; nothing asserts on speed (the machines are
//! shared and noisy, so figures are read as ratios within one run, see
//! `docs/PERFORMANCE.md`).
//!
//! # Layout
//!
//! - [`harness`]: an engine with full bookkeeping (events drained, expirer
//!   running), rotating drops, the reserve→commit pair.
//! - [`measure`]: warm-up / measure / stop phases, latency histograms.
//! - [`redis_server`]: a private, throw-away `redis-server` on a free port.
//! - [`redis_cluster`]: a private Redis Cluster (the operator's scripts).
//! - [`redis_lua`]: the Redis-Lua baseline (EVALSHA, C connections,
//!   unpipelined or pipelined).
//! - [`target`]: the workload and the [`target::Target`] trait of a row.
//! - [`compare`]: the rows, the table.
//! - [`gateway_proc`]: the real `holdfast` binary as a child process on a
//!   free loopback port (RSS, CPU, `/metrics`, admin calls).
//! - [`gateway_ws`]: the gateway end-to-end rows of `compare` (pipelined
//!   websocket checkout clients), and [`gateway_http`]: their HTTP/1.1
//!   keep-alive client; [`clients`]: what their clients share.
//! - [`fanout`]: the fan-out measurement (idle viewers per GiB, update
//!   delivery latency and deliveries/s).
//! - [`chart`]: the before/after SVG of `compare` runs in the docs.

pub mod chart;
pub mod clients;
pub mod compare;
pub mod fanout;
pub mod gateway_http;
pub mod gateway_proc;
pub mod gateway_ws;
pub mod harness;
pub mod measure;
pub mod redis_cluster;
pub mod redis_lua;
pub mod redis_server;
pub mod target;

/// Whether `tool` can run, for tests that need it. A missing tool fails
/// the test unless `HOLDFAST_TEST_ALLOW_SKIP=1` is set (local runs only),
/// which skips it with a message: never a silent pass.
#[cfg(test)]
pub(crate) fn require_tool(tool: &str) -> bool {
    if std::process::Command::new(tool)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok()
    {
        return true;
    }
    assert!(
        std::env::var("HOLDFAST_TEST_ALLOW_SKIP").is_ok_and(|v| v == "1"),
        "`{tool}` is needed and is not on PATH: install it (./scripts/test-all does), \
         or set HOLDFAST_TEST_ALLOW_SKIP=1 to skip locally"
    );
    eprintln!("SKIPPED (HOLDFAST_TEST_ALLOW_SKIP=1): `{tool}` not found");
    false
}
