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
pub mod target;
