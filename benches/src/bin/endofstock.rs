//! `endofstock`: how a multi-node deployment sells the last units of a
//! drop. Starts a private Redis Cluster and N real `holdfast` nodes over it
//! (release binaries, loopback only), creates one SKU, and lets C HTTP
//! keep-alive clients spread over the nodes reserve one unit at a time
//! until every one is told `sold_out`. Reports how long the first 99 % and
//! the last 1 % took (near the end leases shrink to what each reservation
//! needs and idle units come back from other nodes: slower, exact), the
//! lease round trips per reservation, and what was stranded (units neither
//! held nor in a buyer's answer: must be 0). Bounded in time; stops by
//! itself.
//!
//! ```text
//! cargo build --release -p holdfast-gateway -p holdfast-benches
//! target/release/endofstock --nodes 3 --units 6000 --clients 48
//! ```

use anyhow::{Context, Result, bail};
use clap::Parser;
use holdfast_benches::gateway_http::HttpClient;
use holdfast_benches::gateway_proc::{GatewayProcess, GatewaySpec, default_gateway_bin};
use holdfast_benches::redis_cluster::RedisCluster;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
#[command(about = "Time to sell the last 1 % of a drop over several holdfast nodes")]
struct Args {
    /// holdfast nodes.
    #[arg(long, default_value_t = 3)]
    nodes: u8,
    /// Masters of the private Redis Cluster (one replica each).
    #[arg(long, default_value_t = 3)]
    masters: u32,
    /// Units of the drop.
    #[arg(long, default_value_t = 6_000)]
    units: u32,
    /// HTTP keep-alive clients, spread round-robin over the nodes.
    #[arg(long, default_value_t = 48)]
    clients: usize,
    /// The run stops after this many seconds whatever happened.
    #[arg(long, default_value_t = 120)]
    timeout_s: u64,
    /// The `holdfast` binary (default: next to this one).
    #[arg(long)]
    gateway_bin: Option<PathBuf>,
    /// Write the result as JSON here too.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Send a `request_id` with every reservation, as a checkout backend
    /// that retries does (each one is then claimed cluster-wide).
    #[arg(long)]
    request_ids: bool,
}

/// Progress is printed this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
struct Outcome {
    /// When each unit was acknowledged, from the start.
    held_at: Vec<Duration>,
    /// Refusals that were not `sold_out` (leases moving, retried).
    retried: u64,
    /// When each client was told `sold_out`.
    sold_out_at: Vec<Duration>,
    errors: Vec<String>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.nodes == 0 || args.units == 0 || args.clients == 0 {
        bail!("--nodes, --units and --clients must be at least 1");
    }
    let bin = args.gateway_bin.clone().unwrap_or_else(default_gateway_bin);
    eprintln!(
        "starting a Redis Cluster ({} masters, 1 replica each)…",
        args.masters
    );
    let cluster = RedisCluster::start(args.masters)?;
    let mut nodes = Vec::new();
    for id in 1..=args.nodes {
        eprintln!("starting holdfast node {id}…");
        nodes.push(GatewayProcess::start(&GatewaySpec {
            bin: bin.clone(),
            redis: None,
            args: [
                "--redis-cluster",
                cluster.urls(),
                "--node-id",
                &id.to_string(),
                "--broadcast-interval-ms",
                "50",
            ]
            .map(String::from)
            .to_vec(),
            wrapper: Vec::new(),
        })?);
    }
    let body = format!(
        r#"{{"id":"eos","title":"end of stock","total":{},"order_units_max":1,"hold_ttl_ms":600000}}"#,
        args.units
    );
    let (status, reply) = nodes[0].admin("POST", "/api/admin/skus", &body)?;
    if status != 201 {
        bail!("creating the drop: {status} {reply}");
    }
    for node in &nodes {
        let deadline = Instant::now() + Duration::from_secs(10);
        while node.get("/api/skus/eos")?.0 != 200 {
            if Instant::now() > deadline {
                bail!("node {} never saw the drop", node.addr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let start = Instant::now();
    let stop_at = start + Duration::from_secs(args.timeout_s);
    let targets: Vec<_> = nodes
        .iter()
        .map(|n| (n.addr(), n.checkout_token().to_owned()))
        .collect();
    let units = args.units;
    rt.block_on(async {
        let progress = {
            let outcome = outcome.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(PROGRESS_EVERY).await;
                    let held = outcome.lock().expect("outcome").held_at.len();
                    eprintln!(
                        "  {:>5.1} s: {held} of {units} held",
                        start.elapsed().as_secs_f64()
                    );
                }
            })
        };
        let clients: Vec<_> = (0..args.clients)
            .map(|c| {
                let (addr, token) = targets[c % targets.len()].clone();
                let request_ids = args.request_ids;
                let outcome = outcome.clone();
                tokio::spawn(async move {
                    let record_error = |e: String| outcome.lock().expect("outcome").errors.push(e);
                    let mut client = match HttpClient::connect(addr, &token).await {
                        Ok(client) => client,
                        Err(e) => return record_error(format!("client {c}: {e:#}")),
                    };
                    for k in 0u64.. {
                        if Instant::now() > stop_at {
                            return record_error(format!("client {c}: timed out"));
                        }
                        let body = if request_ids {
                            format!(r#"{{"sku":"eos","qty":1,"buyer":"c{c}-{k}","request_id":"eos-{c}-{k}"}}"#)
                        } else {
                            format!(r#"{{"sku":"eos","qty":1,"buyer":"c{c}-{k}"}}"#)
                        };
                        let (status, reply) = match client.post("/api/reservations", body).await {
                            Ok(answer) => answer,
                            Err(e) => return record_error(format!("client {c}: {e:#}")),
                        };
                        let code = serde_json::from_slice::<serde_json::Value>(&reply)
                            .ok()
                            .and_then(|v| v["error"].as_str().map(str::to_owned))
                            .unwrap_or_default();
                        let mut o = outcome.lock().expect("outcome");
                        match (status.as_u16(), code.as_str()) {
                            (201, _) => o.held_at.push(start.elapsed()),
                            (409, "sold_out") => {
                                o.sold_out_at.push(start.elapsed());
                                return;
                            }
                            (409 | 503, _) => o.retried += 1,
                            (s, _) => {
                                o.errors.push(format!(
                                    "client {c}: {s} {}",
                                    String::from_utf8_lossy(&reply)
                                ));
                                return;
                            }
                        }
                    }
                })
            })
            .collect();
        for c in clients {
            let _ = c.await;
        }
        progress.abort();
    });
    let mut o = std::mem::take(&mut *outcome.lock().expect("outcome"));
    o.held_at.sort_unstable();
    let held = o.held_at.len();
    let round_trips: f64 = nodes
        .iter()
        .map(|n| {
            n.metric("holdfast_cluster_lease_round_trips_total")
                .unwrap_or(f64::NAN)
        })
        .sum();
    let sold_out_last = o.sold_out_at.iter().max().copied().unwrap_or_default();
    let nth = |frac: f64| {
        let i = ((f64::from(units) * frac).ceil() as usize).clamp(1, held.max(1)) - 1;
        o.held_at.get(i).copied().unwrap_or_default()
    };
    let (t99, t100) = (nth(0.99), nth(1.0));
    let last_units = units - (f64::from(units) * 0.99).ceil() as u32;
    let result = serde_json::json!({
        "nodes": args.nodes,
        "masters": args.masters,
        "units": units,
        "clients": args.clients,
        "held": held,
        "stranded": i64::from(units) - held as i64,
        "first_99_percent_s": t99.as_secs_f64(),
        "last_1_percent_s": (t100.saturating_sub(t99)).as_secs_f64(),
        "units_per_s_first_99_percent": f64::from(units - last_units) / t99.as_secs_f64().max(1e-9),
        "units_per_s_last_1_percent": f64::from(last_units) / t100.saturating_sub(t99).as_secs_f64().max(1e-9),
        "every_client_told_sold_out_s": sold_out_last.as_secs_f64(),
        "lease_round_trips_per_reservation": round_trips / held.max(1) as f64,
        "retried_refusals": o.retried,
        "errors": o.errors.len(),
    });
    println!("{}", serde_json::to_string_pretty(&result)?);
    for e in o.errors.iter().take(5) {
        eprintln!("error: {e}");
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&result)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    drop(nodes);
    drop(cluster);
    if held != units as usize {
        bail!(
            "{} units stranded or oversold: {held} held of {units}",
            i64::from(units) - held as i64
        );
    }
    Ok(())
}
