//! What every row of `compare` shares: the workload it runs and the
//! [`Target`] trait a row implements (in a module of their own, so the rows
//! in other modules and the table in `compare` do not import each other).

use crate::measure::Measurement;
use anyhow::Result;
use serde::Serialize;
use std::time::Duration;

/// The workload every row runs.
#[derive(Debug, Clone, Serialize)]
pub struct Workload {
    /// Concurrent clients (logical clients in-process, connections to Redis).
    pub clients: usize,
    /// Units per drop.
    pub drop_units: u32,
    /// Measured time per row.
    pub duration: Duration,
    /// Unmeasured warm-up before it.
    pub warmup: Duration,
    /// OS threads the in-process rows use.
    pub engine_threads: usize,
    /// Reserves per round trip in the pipelined Redis row.
    pub pipeline: usize,
    /// In-process rows time one pair in this many (timing every call would
    /// cost about as much as the call).
    pub sample_every: u32,
    /// Tokio worker threads for the Redis clients.
    pub redis_client_threads: usize,
    /// The redis-server binary to start.
    #[serde(skip)]
    pub redis_server: String,
    /// The `holdfast` gateway binary the end-to-end rows start.
    pub gateway_bin: std::path::PathBuf,
    /// Requests in flight per websocket in the pipelined gateway rows (and
    /// the gateway's `--inflight-max` for them).
    pub gateway_window: usize,
    /// Tokio worker threads driving the websocket clients.
    pub ws_client_threads: usize,
    /// Profile the gateway rows with `perf record` into this directory.
    pub perf_dir: Option<std::path::PathBuf>,
    /// Extra `holdfast serve` flags for every gateway row (experiments,
    /// e.g. `--batch-delay-max-us 100`).
    pub gateway_args: Vec<String>,
}

/// One row of the comparison. Implement this to add a row.
pub trait Target {
    /// Name shown in the table.
    fn name(&self) -> String;
    /// Whether this row is the baseline the others are divided by.
    fn is_baseline(&self) -> bool {
        false
    }
    /// Runs the workload and measures it. Must stop by itself within the
    /// workload's warm-up + duration (plus set-up and tear-down).
    fn run(&mut self, workload: &Workload) -> Result<Measurement>;
}
