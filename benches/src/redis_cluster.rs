//! A private Redis Cluster for the benches' multi-node rows, made and
//! stopped with the scripts an operator uses by hand (`scripts/cluster-up`,
//! `scripts/cluster-down`): M masters with one replica each on free
//! loopback ports from a high base, never 6379.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository's scripts directory (the benches run from the source
/// tree; `cargo` sets the manifest directory at build time).
fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("scripts")
        .join(name)
}

/// First port tried for the cluster's servers: above the benches' other
/// servers, below the kernel's ephemeral range with the bus port (+10 000).
const BASE_PORT: u16 = 23_000;

/// A running Redis Cluster; stopped (and its directory removed) on drop.
#[derive(Debug)]
pub struct RedisCluster {
    dir: tempfile::TempDir,
    urls: String,
}

impl RedisCluster {
    /// Starts `masters` masters with one replica each and waits until the
    /// cluster is ready (the script bounds every wait).
    pub fn start(masters: u32) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("holdfast-bench-cluster")
            .tempdir()?;
        let out = Command::new(script("cluster-up"))
            .arg("--dir")
            .arg(dir.path())
            .args(["--base-port", &BASE_PORT.to_string()])
            .args(["--masters", &masters.to_string(), "--replicas", "1"])
            .output()
            .context("running scripts/cluster-up (needs redis-server and redis-cli)")?;
        if !out.status.success() {
            bail!(
                "scripts/cluster-up failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let urls = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .to_owned();
        if !urls.starts_with("redis://") {
            bail!("scripts/cluster-up printed no URL list: {urls:?}");
        }
        Ok(Self { dir, urls })
    }

    /// The `--redis-cluster` argument.
    pub fn urls(&self) -> &str {
        &self.urls
    }

    /// Pids of every server, for their CPU time (`DIR/pids` has a
    /// `pid port` line per server).
    pub fn pids(&self) -> Vec<u32> {
        std::fs::read_to_string(self.dir.path().join("pids"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        let _ = Command::new(script("cluster-down"))
            .arg(self.dir.path())
            .output();
    }
}
