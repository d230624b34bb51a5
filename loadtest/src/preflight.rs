//! Pre-flight: before connecting anything, check that this machine can
//! generate the planned load, and decide how (worker processes, source
//! addresses), or say why it cannot.
//!
//! Owns the capacity arithmetic (open files per process, ephemeral ports per
//! source address, memory) and raising `RLIMIT_NOFILE` to the hard limit.
//! The arithmetic is pure ([`decide`]) so it is tested without the machine.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// File descriptors kept free per process for everything that is not a
/// load connection (stdio, the runtime, the admin connection, logs).
pub const FD_RESERVE: u64 = 64;
/// Memory per connection, both ends on a loopback target: the client's
/// task, websocket state and 4 KiB read buffer, plus kernel socket buffers
/// (measured figures go in the report's bytes per viewer).
pub const BYTES_PER_CONNECTION: u64 = 48 * 1024;
/// Memory per worker process besides its connections.
pub const BYTES_PER_PROCESS: u64 = 32 << 20;
/// Share of a source address's ephemeral ports we plan to use: sockets of
/// the previous run linger in TIME_WAIT and other programs need ports too.
pub const PORT_USE_FRACTION: f64 = 0.8;
/// Share of the available memory we plan to use.
pub const MEMORY_USE_FRACTION: f64 = 0.7;
/// Gateway connection limit by default (docs/PROTOCOL.md).
pub const GATEWAY_CONNECTIONS_DEFAULT: u64 = 20_000;

/// What this machine offers.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Machine {
    pub nofile_soft: u64,
    pub nofile_hard: u64,
    pub port_lo: u32,
    pub port_hi: u32,
    pub mem_available_bytes: u64,
    pub cores: u32,
}

impl Machine {
    /// Reads the limits of this machine and process.
    pub fn probe() -> Machine {
        let (soft, hard) = nofile();
        let (lo, hi) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|s| {
                let mut it = s.split_whitespace().filter_map(|x| x.parse().ok());
                Some((it.next()?, it.next()?))
            })
            .unwrap_or((32768, 60999));
        let mem = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("MemAvailable:"))?
                    .split_whitespace()
                    .nth(1)?
                    .parse::<u64>()
                    .ok()
            })
            .map_or(4 << 30, |kib| kib * 1024);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        Machine {
            nofile_soft: soft,
            nofile_hard: hard,
            port_lo: lo,
            port_hi: hi,
            mem_available_bytes: mem,
            cores,
        }
    }

    pub fn ports_per_source(&self) -> u64 {
        (self.port_hi.saturating_sub(self.port_lo) + 1) as u64
    }
}

/// What the plan needs.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Need {
    pub viewers: u64,
    pub burst_buyers: u64,
    /// Peak arrivals per second over all executors.
    pub arrival_peak: f64,
    /// Messages per arrival (reserve plus commit, release, duplicate...).
    pub messages_per_arrival: f64,
    pub http: bool,
    pub loopback: bool,
}

/// What the run will do.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Decision {
    pub workers: u32,
    pub sources: u32,
    /// Checkout connections per worker for arrivals.
    pub pool_per_worker: u64,
    pub connections: u64,
    pub fds_per_worker: u64,
    pub mem_estimate_bytes: u64,
    /// Warnings that do not stop the run.
    pub warnings: Vec<String>,
}

/// Operator's requests that bound the decision.
#[derive(Debug, Clone, Copy)]
pub struct Asked {
    pub workers: u32,
    pub workers_max: u32,
    pub sources: u32,
    pub connections_max: u64,
}

/// Websocket messages per second we plan per checkout connection, under
/// the gateway's 50/s per-connection limit with room for jitter.
const MESSAGES_PER_CONNECTION_PER_S: f64 = 40.0;
/// HTTP: in-flight requests we plan for per arrival per second (250 ms of
/// full-rate arrivals): a pool smaller than this would make the generator
/// queue requests and call it server latency.
const HTTP_INFLIGHT_S: f64 = 0.25;

/// Checkout connections one worker needs for its share of arrivals.
pub fn pool_per_worker(need: &Need, workers: u32) -> u64 {
    if need.arrival_peak <= 0.0 {
        return 0;
    }
    let rate = need.arrival_peak / workers as f64;
    let n = if need.http {
        (rate * HTTP_INFLIGHT_S).ceil()
    } else {
        (rate * need.messages_per_arrival / MESSAGES_PER_CONNECTION_PER_S).ceil()
    };
    (n as u64).clamp(2, 2_000)
}

/// Decides workers and source addresses, or says why this machine cannot
/// generate the plan.
pub fn decide(need: &Need, m: &Machine, asked: &Asked) -> Result<Decision, String> {
    let per_process = m.nofile_hard.saturating_sub(FD_RESERVE).max(1);
    let mut workers = asked.workers.max(1);
    // The pool depends on the worker count, so settle the two together.
    let (pool, connections) = loop {
        let pool = pool_per_worker(need, workers);
        let connections = need.viewers + need.burst_buyers + pool * workers as u64;
        let needed = connections.div_ceil(per_process).max(1) as u32;
        if needed <= workers || asked.workers > 0 {
            break (pool, connections);
        }
        workers = needed;
    };
    if connections > asked.connections_max {
        return Err(format!(
            "the plan opens {connections} connections, above --connections-max {}",
            asked.connections_max
        ));
    }
    let fds_per_worker = connections.div_ceil(workers as u64) + FD_RESERVE;
    if fds_per_worker > m.nofile_hard {
        return Err(format!(
            "{connections} connections over {workers} worker(s) need {fds_per_worker} open files per process, above the hard limit {}: use --workers {} or more",
            m.nofile_hard,
            connections.div_ceil(per_process)
        ));
    }
    if workers > asked.workers_max {
        return Err(format!(
            "{connections} connections need {workers} worker processes at {} open files each, above --workers-max {}",
            m.nofile_hard, asked.workers_max
        ));
    }
    let ports = (m.ports_per_source() as f64 * PORT_USE_FRACTION) as u64;
    let needed_sources = connections.div_ceil(ports.max(1)).max(1);
    let sources = if asked.sources > 0 {
        asked.sources as u64
    } else {
        needed_sources
    };
    if !need.loopback && needed_sources > 1 {
        return Err(format!(
            "{connections} connections to one remote address need {needed_sources} source addresses ({ports} usable ports each); this tool spreads sources only over 127.0.0.x for a loopback target"
        ));
    }
    if sources < needed_sources {
        return Err(format!(
            "{connections} connections need {needed_sources} source addresses at {ports} usable ports each, but --source-addrs is {sources}"
        ));
    }
    if sources > 254 {
        return Err(format!(
            "{connections} connections need {sources} source addresses; 127.0.0.1-254 has 254"
        ));
    }
    let mem = connections * BYTES_PER_CONNECTION + workers as u64 * BYTES_PER_PROCESS;
    let mem_ok = (m.mem_available_bytes as f64 * MEMORY_USE_FRACTION) as u64;
    if mem > mem_ok {
        return Err(format!(
            "about {} MiB needed for {connections} connections, above {} MiB ({:.0}% of available memory)",
            mem >> 20,
            mem_ok >> 20,
            MEMORY_USE_FRACTION * 100.0
        ));
    }
    let mut warnings = Vec::new();
    if workers > m.cores {
        warnings.push(format!(
            "{workers} worker processes on {} cores: watch the generator-health line",
            m.cores
        ));
    }
    if need.loopback && connections > GATEWAY_CONNECTIONS_DEFAULT {
        warnings.push(format!("{connections} connections exceed the gateway's default limit of {GATEWAY_CONNECTIONS_DEFAULT}; expect too_many_connections unless it was raised"));
    }
    Ok(Decision {
        workers,
        sources: if need.loopback { sources as u32 } else { 0 },
        pool_per_worker: pool,
        connections,
        fds_per_worker,
        mem_estimate_bytes: mem,
        warnings,
    })
}

impl Decision {
    /// One paragraph saying what the run will do and why.
    pub fn describe(&self, need: &Need, m: &Machine, raised_from: Option<u64>) -> String {
        let mut s = String::new();
        let _ = write!(
            s,
            "pre-flight: {} connections ({} viewers, {} burst buyers, {} checkout per worker)",
            self.connections, need.viewers, need.burst_buyers, self.pool_per_worker
        );
        let _ = write!(
            s,
            "\n  open files: {} per process needed; limit ",
            self.fds_per_worker
        );
        match raised_from {
            Some(old) if old < m.nofile_soft => {
                let _ = write!(
                    s,
                    "raised {old} -> {} (hard {})",
                    m.nofile_soft, m.nofile_hard
                );
            }
            _ => {
                let _ = write!(s, "{} (hard {})", m.nofile_soft, m.nofile_hard);
            }
        }
        let _ = write!(
            s,
            " -> {} worker process{}",
            self.workers,
            if self.workers == 1 { "" } else { "es" }
        );
        let _ = write!(
            s,
            "\n  ephemeral ports {}-{}: {} per source address -> ",
            m.port_lo,
            m.port_hi,
            m.ports_per_source()
        );
        if self.sources == 0 {
            let _ = write!(s, "kernel-chosen source address (remote target)");
        } else if self.sources == 1 {
            let _ = write!(s, "1 source address (127.0.0.1)");
        } else {
            let _ = write!(
                s,
                "{} source addresses (127.0.0.1-127.0.0.{})",
                self.sources, self.sources
            );
        }
        let _ = write!(
            s,
            "\n  memory: about {} MiB of {} MiB available: ok",
            self.mem_estimate_bytes >> 20,
            m.mem_available_bytes >> 20
        );
        for w in &self.warnings {
            let _ = write!(s, "\n  warning: {w}");
        }
        s
    }
}

/// Current (soft, hard) open-file limits; 1024 each if they cannot be
/// read (the usual default, so pre-flight errs on the careful side).
pub fn nofile() -> (u64, u64) {
    holdfast_sys::nofile_limit().map_or((1024, 1024), |l| (l.soft, l.hard))
}

/// Raises the soft open-file limit to the hard limit; returns the old soft
/// limit. Child processes inherit the raised limit.
pub fn raise_nofile() -> u64 {
    match holdfast_sys::raise_nofile() {
        Ok(raise) => raise.before,
        Err(e) => {
            tracing::warn!("could not raise the open-file limit: {e}");
            nofile().0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> Machine {
        Machine {
            nofile_soft: 1024,
            nofile_hard: 20_000,
            port_lo: 32768,
            port_hi: 60999,
            mem_available_bytes: 24 << 30,
            cores: 2,
        }
    }

    fn need(viewers: u64) -> Need {
        Need {
            viewers,
            burst_buyers: 1000,
            arrival_peak: 0.0,
            messages_per_arrival: 2.0,
            http: false,
            loopback: true,
        }
    }

    fn asked() -> Asked {
        Asked {
            workers: 0,
            workers_max: 16,
            sources: 0,
            connections_max: 200_000,
        }
    }

    #[test]
    fn one_process_when_it_fits() {
        let d = decide(&need(5_000), &machine(), &asked()).unwrap();
        assert_eq!((d.workers, d.sources, d.connections), (1, 1, 6_000));
        assert_eq!(d.fds_per_worker, 6_000 + FD_RESERVE);
    }

    #[test]
    fn splits_over_processes_and_source_addresses() {
        // 50,000 connections: 19,936 per process -> 3 workers; 28,232 ports
        // per address, 22,585 usable -> 3 source addresses.
        let d = decide(&need(49_000), &machine(), &asked()).unwrap();
        assert_eq!((d.workers, d.sources, d.connections), (3, 3, 50_000));
        assert!(
            d.describe(&need(49_000), &machine(), Some(1024))
                .contains("3 source addresses (127.0.0.1-127.0.0.3)")
        );
        assert!(d.warnings.iter().any(|w| w.contains("cores")));
    }

    #[test]
    fn refuses_what_it_cannot_do_and_says_why() {
        let mut a = asked();
        a.workers = 1;
        let e = decide(&need(49_000), &machine(), &a).unwrap_err();
        assert!(e.contains("--workers 3"), "{e}");
        let mut remote = need(49_000);
        remote.loopback = false;
        assert!(
            decide(&remote, &machine(), &asked())
                .unwrap_err()
                .contains("source addresses")
        );
        let mut small = machine();
        small.mem_available_bytes = 1 << 30;
        assert!(
            decide(&need(49_000), &small, &asked())
                .unwrap_err()
                .contains("MiB")
        );
        let mut few = asked();
        few.workers_max = 2;
        assert!(
            decide(&need(49_000), &machine(), &few)
                .unwrap_err()
                .contains("--workers-max")
        );
    }

    #[test]
    fn checkout_pool_respects_the_per_connection_message_rate() {
        let mut n = need(0);
        n.arrival_peak = 2_000.0;
        // 2,000 arrivals/s x 2 messages / 40 per connection = 100.
        assert_eq!(pool_per_worker(&n, 1), 100);
        assert_eq!(pool_per_worker(&n, 2), 50);
        n.http = true;
        assert_eq!(pool_per_worker(&n, 1), 500);
    }
}
