//! Real components for the multi-node tests: a Redis Cluster of real
//! `redis-server` processes ([`RedisCluster`]) and real `holdfast` processes
//! ([`HoldfastNode`]), with the faults the tests inject (SIGKILL a slot's
//! master, SIGSTOP a server or a node, flush the script caches).
//!
//! What it owns: every process it starts is a child of the test and dies
//! with it: killed on drop (also when a test panics), and through
//! `PR_SET_PDEATHSIG` when the test process itself is killed, so a crashed
//! or timed-out test never leaves servers behind on a shared machine.
//!
//! What it must never do: touch the machine's own Redis on 6379 (every port
//! is fresh from the kernel, above 20000), wait without a deadline (every
//! wait is bounded by [`PATIENCE`] or [`CLI_TIMEOUT`], and a paused server
//! can never hang a `redis-cli` call), or sleep to wait for a state: it
//! polls the state.

use super::{PATIENCE, free_port, require_tool};
pub use holdfast_testkit::spawn_owned;
use holdfast_testkit::{POLL, RedisServer};
use std::collections::BTreeSet;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// `cluster-node-timeout` in ms: a master silent this long is failed over
/// to its replica. 2 s: failover measured at 1.9-2.6 s on this machine
/// (DESIGN.md), and short enough for tests, long enough that a loaded
/// 2-core machine does not fail over a healthy master.
pub const NODE_TIMEOUT_MS: u64 = 2_000;

/// Bounds on one cluster: every server is a process on a shared machine.
pub const MASTERS_MIN: usize = 3;
pub const MASTERS_MAX: usize = 8;
pub const REPLICAS_MAX: usize = 2;

/// How long one `redis-cli` call may take before it counts as no answer:
/// a paused (SIGSTOPped) server accepts the connection and never replies.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(2);

/// Start-up attempts of one process whose port was taken between
/// [`free_port`] and its own bind (another test, another helper).
const PORT_ATTEMPTS_MAX: usize = 5;

/// The whole slot space of a Redis Cluster.
const SLOTS: u16 = 16_384;

/// A server's role, as the cluster sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Master,
    Replica,
}

/// What the test did to a server's process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessState {
    Running,
    /// SIGSTOP ([`RedisCluster::pause`]): alive, answers nothing.
    Paused,
    /// SIGKILL ([`RedisCluster::kill_master_of_key`]): gone.
    Killed,
}

/// One server of the cluster: its port, its pid, its role as the cluster
/// currently sees it and what the test did to its process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterNode {
    pub port: u16,
    pub pid: u32,
    pub role: Role,
    pub state: ProcessState,
}

struct Server {
    port: u16,
    redis: RedisServer,
    state: ProcessState,
}

/// A Redis Cluster of `masters × (1 + replicas)` real servers on loopback,
/// each a child process of the test, killed on drop.
pub struct RedisCluster {
    servers: Mutex<Vec<Server>>,
}

impl RedisCluster {
    /// Starts `masters` masters with `replicas` replicas each and returns
    /// once every server says `cluster_state:ok`, knows every other one, and
    /// every replica is in sync with its master (so a master killed right
    /// away has a replica ready to take over). `None` only when the Redis
    /// tools are missing and skipping was asked for ([`require_tool`]).
    pub fn start(masters: usize, replicas: usize) -> Option<Self> {
        Self::start_with_node_timeout(masters, replicas, NODE_TIMEOUT_MS)
    }

    /// [`start`](Self::start) with another `cluster-node-timeout`.
    pub fn start_with_node_timeout(
        masters: usize,
        replicas: usize,
        node_timeout_ms: u64,
    ) -> Option<Self> {
        assert!(
            (MASTERS_MIN..=MASTERS_MAX).contains(&masters),
            "a test cluster has {MASTERS_MIN}..={MASTERS_MAX} masters, not {masters}"
        );
        assert!(
            replicas <= REPLICAS_MAX,
            "a test cluster has at most {REPLICAS_MAX} replicas per master, not {replicas}"
        );
        if !require_tool("redis-server", "the Redis Cluster tests")
            || !require_tool("redis-cli", "the Redis Cluster tests")
        {
            return None;
        }
        let total = masters * (1 + replicas);
        let mut cluster = Self {
            servers: Mutex::new(Vec::with_capacity(total)),
        };
        for _ in 0..total {
            let server = start_server(node_timeout_ms);
            cluster.servers.get_mut().unwrap().push(server);
        }
        let ports = cluster.ports();
        let mut create = Command::new("redis-cli");
        create
            .arg("--cluster")
            .arg("create")
            .args(ports.iter().map(|p| format!("127.0.0.1:{p}")))
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"]);
        let out = run_bounded(&mut create, PATIENCE)
            .unwrap_or_else(|e| panic!("redis-cli --cluster create: {e}"));
        assert!(
            out.ok,
            "redis-cli --cluster create failed:\n{}\n{}",
            out.stdout, out.stderr
        );
        cluster.wait_ready(masters, total);
        Some(cluster)
    }

    /// Polls every server until it is part of a healthy cluster of `total`,
    /// then until all of them see the same `masters` masters, replicas and
    /// slots (each server learns the roles by gossip, some later than
    /// others).
    fn wait_ready(&mut self, masters: usize, total: usize) {
        let deadline = Instant::now() + PATIENCE;
        let ports = self.ports();
        for &port in &ports {
            while let Err(why) = server_ready(port, total) {
                assert!(
                    Instant::now() < deadline,
                    "cluster not ready after {PATIENCE:?}: 127.0.0.1:{port}: {why}"
                );
                std::thread::sleep(POLL);
            }
        }
        while let Err(why) = views_agree(&ports, masters) {
            assert!(
                Instant::now() < deadline,
                "cluster not ready after {PATIENCE:?}: {why}"
            );
            std::thread::sleep(POLL);
        }
    }

    /// Every server's port, in start order (killed ones included).
    pub fn ports(&self) -> Vec<u16> {
        self.servers
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.port)
            .collect()
    }

    /// The value of `--redis-cluster`: every server's URL, comma-separated
    /// (a killed one is harmless there: clients discover the live ones).
    pub fn urls(&self) -> String {
        self.ports()
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Every server with its role as a running server sees it now.
    pub fn nodes(&self) -> Vec<ClusterNode> {
        let view = self.view();
        let lines = cluster_nodes(view.any_running());
        self.servers
            .lock()
            .unwrap()
            .iter()
            .map(|s| {
                let line = lines
                    .iter()
                    .find(|l| l.port == s.port)
                    .unwrap_or_else(|| panic!("127.0.0.1:{} not in CLUSTER NODES", s.port));
                ClusterNode {
                    port: s.port,
                    pid: s.redis.pid(),
                    role: if line.is_master() {
                        Role::Master
                    } else {
                        Role::Replica
                    },
                    state: s.state,
                }
            })
            .collect()
    }

    /// The port of the master serving `key`'s slot, as the cluster sees it
    /// (`CLUSTER KEYSLOT`, then `CLUSTER NODES`). Panics when that master is
    /// a process this test killed or paused: call
    /// [`wait_failover`](Self::wait_failover) first.
    pub fn master_of_key(&self, key: &str) -> u16 {
        let view = self.view();
        let asked = view.any_running();
        let slot = key_slot(asked, key);
        let port = slot_master(&cluster_nodes(asked), slot)
            .unwrap_or_else(|| panic!("no master serves slot {slot} (key {key})"));
        assert!(
            view.running.contains(&port),
            "slot {slot}'s master 127.0.0.1:{port} is not running (killed or paused): wait_failover first"
        );
        port
    }

    /// SIGKILLs the master of `key`'s slot; returns its port.
    pub fn kill_master_of_key(&self, key: &str) -> u16 {
        let port = self.master_of_key(key);
        let mut servers = self.servers.lock().unwrap();
        let server = servers.iter_mut().find(|s| s.port == port).unwrap();
        // std's Child::kill is SIGKILL on Unix; wait reaps it, so the port
        // is free and the pid is never signalled again.
        server.redis.kill();
        server.state = ProcessState::Killed;
        port
    }

    /// Waits until `key`'s slot is served again by a running master: every
    /// running server names the same master for it (not a killed or paused
    /// one), says `cluster_state:ok`, and that master accepts a write to a
    /// probe key in the same slot. Returns that master's port. Bounded by
    /// [`PATIENCE`]; runs on a blocking thread, so a load the test drives on
    /// its runtime meanwhile keeps running.
    pub async fn wait_failover(&self, key: &str) -> u16 {
        let view = self.view();
        let key = key.to_string();
        match tokio::task::spawn_blocking(move || wait_failover_blocking(&view, &key)).await {
            Ok(port) => port,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    /// SIGSTOPs the server on `port`: it keeps its data and answers nothing
    /// (past the node timeout, the cluster fails it over).
    pub fn pause(&self, port: u16) {
        self.signal_server(port, libc::SIGSTOP, ProcessState::Paused);
    }

    /// SIGCONTs a paused server.
    pub fn resume(&self, port: u16) {
        self.signal_server(port, libc::SIGCONT, ProcessState::Running);
    }

    fn signal_server(&self, port: u16, signal: libc::c_int, then: ProcessState) {
        let mut servers = self.servers.lock().unwrap();
        let server = servers
            .iter_mut()
            .find(|s| s.port == port)
            .unwrap_or_else(|| panic!("no server of this cluster on port {port}"));
        assert_ne!(
            server.state,
            ProcessState::Killed,
            "127.0.0.1:{port} was killed"
        );
        send_signal(server.redis.pid(), signal);
        server.state = then;
    }

    /// `SCRIPT FLUSH` on every running server, masters and replicas (a
    /// replica promoted later lacks the scripts too), so the next `EVALSHA`
    /// meets `NOSCRIPT`, as after a failover to a fresh server. Returns how
    /// many servers were flushed.
    pub fn flush_scripts_everywhere(&self) -> usize {
        let view = self.view();
        for &port in &view.running {
            let reply = self.cli(port, &["SCRIPT", "FLUSH", "SYNC"]);
            assert_eq!(reply, "OK", "SCRIPT FLUSH on 127.0.0.1:{port}");
        }
        view.running.len()
    }

    /// Runs `redis-cli -p <port> <args>` and returns its output, trimmed
    /// (an error reply such as `NOSCRIPT ...` or `MOVED ...` is output too).
    /// Panics when the server does not answer within [`CLI_TIMEOUT`].
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        try_cli(port, args).unwrap_or_else(|e| panic!("redis-cli -p {port} {args:?}: {e}"))
    }

    /// Like [`cli`](Self::cli), but no answer in time is an `Err`: for
    /// servers that are paused or gone.
    pub fn try_cli(&self, port: u16, args: &[&str]) -> Result<String, String> {
        try_cli(port, args)
    }

    fn view(&self) -> View {
        let servers = self.servers.lock().unwrap();
        View {
            running: servers
                .iter()
                .filter(|s| s.state == ProcessState::Running)
                .map(|s| s.port)
                .collect(),
        }
    }
}

/// A failed assertion must not leave servers running.
impl Drop for RedisCluster {
    fn drop(&mut self) {
        let servers = self.servers.get_mut().unwrap_or_else(|e| e.into_inner());
        // SIGKILL ends a stopped process too; nothing is kept on disk.
        for s in servers.iter_mut() {
            s.redis.kill();
        }
    }
}

/// The ports of the servers that can answer (not killed, not paused), taken
/// while holding the lock, so a blocking wait can run without it.
struct View {
    running: Vec<u16>,
}

impl View {
    fn any_running(&self) -> u16 {
        *self
            .running
            .first()
            .expect("no server of the cluster is running")
    }
}

fn wait_failover_blocking(view: &View, key: &str) -> u16 {
    let slot = key_slot(view.any_running(), key);
    let probe = probe_key(view.any_running(), key, slot);
    let deadline = Instant::now() + PATIENCE;
    loop {
        match slot_served(view, slot, &probe) {
            Ok(port) => return port,
            Err(why) => assert!(
                Instant::now() < deadline,
                "slot {slot} (key {key}) not served by a running master after {PATIENCE:?}: {why}"
            ),
        }
        std::thread::sleep(POLL);
    }
}

/// `Ok(master)` when every running server agrees on a running master for
/// `slot` and that master takes a write.
fn slot_served(view: &View, slot: u16, probe: &str) -> Result<u16, String> {
    let mut masters = BTreeSet::new();
    for &port in &view.running {
        let info = try_cli(port, &["CLUSTER", "INFO"])?;
        if !info.lines().any(|l| l.trim() == "cluster_state:ok") {
            return Err(format!("127.0.0.1:{port} is not cluster_state:ok"));
        }
        let text = try_cli(port, &["CLUSTER", "NODES"])?;
        let master = slot_master(&parse_cluster_nodes(&text), slot)
            .ok_or_else(|| format!("127.0.0.1:{port} sees no master for slot {slot}"))?;
        masters.insert(master);
    }
    let master = match masters.iter().collect::<Vec<_>>()[..] {
        [&only] => only,
        _ => {
            return Err(format!(
                "servers disagree on slot {slot}'s master: {masters:?}"
            ));
        }
    };
    if !view.running.contains(&master) {
        return Err(format!(
            "slot {slot}'s master is still 127.0.0.1:{master}, which is down"
        ));
    }
    let reply = try_cli(master, &["SET", probe, "failover-probe"])?;
    if reply != "OK" {
        return Err(format!("write on 127.0.0.1:{master}: {reply}"));
    }
    Ok(master)
}

/// A key in `slot` of the test's own (`hf-test:probe`), for write checks
/// that must not touch the data under test: `key`'s hash tag (or the whole
/// key) inside braces. Checked with `CLUSTER KEYSLOT`.
fn probe_key(port: u16, key: &str, slot: u16) -> String {
    let hashed = match key.find('{') {
        Some(open) => match key[open + 1..].find('}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    let probe = format!("hf-test:probe:{{{hashed}}}");
    assert_eq!(
        key_slot(port, &probe),
        slot,
        "no probe key in the slot of {key:?}: give it a hash tag ({{sku:...}})"
    );
    probe
}

fn key_slot(port: u16, key: &str) -> u16 {
    let reply = try_cli(port, &["CLUSTER", "KEYSLOT", key])
        .unwrap_or_else(|e| panic!("CLUSTER KEYSLOT on 127.0.0.1:{port}: {e}"));
    let slot = reply
        .parse()
        .unwrap_or_else(|_| panic!("CLUSTER KEYSLOT {key}: {reply}"));
    assert!(slot < SLOTS, "slot {slot} out of range");
    slot
}

/// One line of `CLUSTER NODES`; two servers' views compare equal when
/// they agree on roles, replication and slots (the `myself` flag and the
/// timings, which differ by who is asked, are left out).
#[derive(Debug, PartialEq, Eq)]
struct NodeLine {
    port: u16,
    flags: Vec<String>,
    /// The master's node id, `-` for a master.
    master: String,
    /// Served slot ranges, inclusive (migration markers `[..]` skipped).
    slots: Vec<(u16, u16)>,
}

impl NodeLine {
    fn is_master(&self) -> bool {
        self.flags.iter().any(|f| f == "master")
    }

    /// Flagged failing by the cluster (`fail`) or by the server asked
    /// (`fail?`).
    fn is_failing(&self) -> bool {
        self.flags.iter().any(|f| f == "fail" || f == "fail?")
    }
}

fn cluster_nodes(port: u16) -> Vec<NodeLine> {
    let text = try_cli(port, &["CLUSTER", "NODES"])
        .unwrap_or_else(|e| panic!("CLUSTER NODES on 127.0.0.1:{port}: {e}"));
    parse_cluster_nodes(&text)
}

/// `<id> <ip:port@cport[,hostname]> <flags> <master> <ping> <pong> <epoch>
/// <link> <slot>...`
fn parse_cluster_nodes(text: &str) -> Vec<NodeLine> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert!(fields.len() >= 8, "CLUSTER NODES line: {line}");
            let addr = fields[1].split('@').next().unwrap();
            let port = addr
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("CLUSTER NODES address: {line}"));
            let slots = fields[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .map(|s| match s.split_once('-') {
                    Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap()),
                    None => {
                        let n = s.parse().unwrap();
                        (n, n)
                    }
                })
                .collect();
            NodeLine {
                port,
                flags: fields[2]
                    .split(',')
                    .filter(|&f| f != "myself")
                    .map(str::to_string)
                    .collect(),
                master: fields[3].to_string(),
                slots,
            }
        })
        .collect()
}

/// The port of the master serving `slot` and not flagged as failing.
fn slot_master(lines: &[NodeLine], slot: u16) -> Option<u16> {
    lines
        .iter()
        .find(|l| {
            l.is_master()
                && !l.is_failing()
                && l.slots.iter().any(|&(a, b)| (a..=b).contains(&slot))
        })
        .map(|l| l.port)
}

/// `Ok` when every server sees the same topology: `masters` masters
/// serving slots, the same replica of each, nobody failing.
fn views_agree(ports: &[u16], masters: usize) -> Result<(), String> {
    let mut first: Option<(u16, Vec<NodeLine>)> = None;
    for &port in ports {
        let text = try_cli(port, &["CLUSTER", "NODES"])?;
        let mut lines = parse_cluster_nodes(&text);
        lines.sort_by_key(|l| l.port);
        if let Some(l) = lines.iter().find(|l| l.is_failing()) {
            return Err(format!(
                "127.0.0.1:{port} flags 127.0.0.1:{} failing",
                l.port
            ));
        }
        let serving = lines
            .iter()
            .filter(|l| l.is_master() && !l.slots.is_empty())
            .count();
        if serving != masters || lines.iter().filter(|l| l.is_master()).count() != masters {
            return Err(format!(
                "127.0.0.1:{port} sees {serving} of {masters} masters serving slots"
            ));
        }
        match &first {
            None => first = Some((port, lines)),
            Some((seen_by, seen)) if *seen != lines => {
                return Err(format!(
                    "127.0.0.1:{seen_by} and 127.0.0.1:{port} disagree on the topology"
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// `Ok` when the server on `port` is in a healthy cluster of `total`;
/// otherwise what is missing.
fn server_ready(port: u16, total: usize) -> Result<(), String> {
    let info = try_cli(port, &["CLUSTER", "INFO"])?;
    for want in ["cluster_state:ok", &format!("cluster_known_nodes:{total}")] {
        if !info.lines().any(|l| l.trim() == want) {
            return Err(format!("no {want} in CLUSTER INFO"));
        }
    }
    let repl = try_cli(port, &["INFO", "replication"])?;
    let line = |l: &str| repl.lines().any(|x| x.trim() == l);
    if line("role:slave") && !line("master_link_status:up") {
        return Err("replica not in sync with its master yet".into());
    }
    Ok(())
}

/// Starts one cluster-enabled server (the testkit's launcher, which moves
/// to fresh ports when its port or bus port was taken meanwhile).
fn start_server(node_timeout_ms: u64) -> Server {
    let redis = RedisServer::start_with("redis-server", &|port| {
        let bus_port = loop {
            let p = free_port();
            if p != port {
                break p;
            }
        };
        [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            &node_timeout_ms.to_string(),
            "--cluster-port",
            &bus_port.to_string(),
            // A replica's first sync starts at once, not after Redis's
            // default 5 s wait for more replicas.
            "--repl-diskless-sync-delay",
            "0",
        ]
        .map(Into::into)
        .to_vec()
    })
    .expect("start a cluster-enabled redis-server");
    Server {
        port: redis.port(),
        redis,
        state: ProcessState::Running,
    }
}

fn try_cli(port: u16, args: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new("redis-cli");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args);
    let out = run_bounded(&mut cmd, CLI_TIMEOUT)?;
    if out.ok {
        Ok(out.stdout.trim().to_string())
    } else {
        Err(format!("no answer: {}", out.stderr.trim()))
    }
}

struct Output {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` to its end, or kills it after `limit` (`Err`).
fn run_bounded(cmd: &mut Command, limit: Duration) -> Result<Output, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    // Read both pipes on threads of their own, so a chatty child never
    // blocks on a full pipe while we wait for it to exit.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if Instant::now() >= deadline {
            // The child is not reaped yet, so its pid is still its own.
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "{cmd:?} took over {limit:?} (server paused or hung?)"
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    Ok(Output {
        ok: status.success(),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// Sends `signal` to `pid`, a child of this process not yet reaped.
fn send_signal(pid: u32, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(pid).expect("pid fits pid_t");
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is a child
    // we have not reaped, so it cannot have been reused by another process.
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(
        rc,
        0,
        "kill({pid}, {signal}): {}",
        std::io::Error::last_os_error()
    );
    if signal == libc::SIGSTOP {
        wait_all_threads_stopped(pid);
    }
}

/// How long a SIGSTOPped process may take to show every thread stopped.
const STOP_SETTLE_MAX: Duration = Duration::from_secs(10);

/// kill(2) returns before the target's threads have stopped: one running on
/// the other core may still answer a request sent right after. Waits until
/// every thread of `pid` reads state `T` in /proc, so "stopped" means it.
fn wait_all_threads_stopped(pid: libc::pid_t) {
    let deadline = Instant::now() + STOP_SETTLE_MAX;
    loop {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the process's threads");
        let all_stopped = tasks.filter_map(Result::ok).all(|task| {
            std::fs::read_to_string(task.path().join("stat")).is_ok_and(|stat| {
                stat.rsplit_once(") ").is_some_and(|(_, rest)| {
                    matches!(rest.as_bytes().first(), Some(b'T' | b't' | b'Z'))
                })
            })
        });
        if all_stopped {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "pid {pid}: not every thread stopped within {STOP_SETTLE_MAX:?} of SIGSTOP"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A real `holdfast` process, listening on a fresh port of 127.0.0.1, its
/// stderr (the logs) in a temp file, killed on drop.
pub struct HoldfastNode {
    child: Mutex<Child>,
    pid: u32,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl HoldfastNode {
    /// `holdfast serve --redis-cluster <cluster_urls> --node-id <node_id>
    /// --listen 127.0.0.1:<free> --demo <extra_args>`, returned once
    /// `/readyz` says 200 (bounded by [`PATIENCE`]; a node that exits or
    /// never gets ready fails the test with its stderr).
    pub async fn spawn(cluster_urls: &str, node_id: u8, extra_args: &[&str]) -> Self {
        Self::serve(&cluster_args(cluster_urls, node_id, extra_args)).await
    }

    /// `holdfast serve --listen 127.0.0.1:<free> <args>`, once ready: any
    /// mode (the single-node modes too).
    pub async fn serve(args: &[String]) -> Self {
        let mut last = String::new();
        for _ in 0..PORT_ATTEMPTS_MAX {
            let node = Self::start(args);
            match node.wait_ready().await {
                Ok(()) => return node,
                // The port was taken between free_port and holdfast's bind.
                Err(text) if text.contains("cannot listen on") => last = text,
                Err(text) => panic!("holdfast {args:?} did not become ready: {text}"),
            }
        }
        panic!("holdfast found no free port in {PORT_ATTEMPTS_MAX} attempts: {last}")
    }

    /// Runs the node [`spawn`](Self::spawn) would run and expects it to
    /// refuse to start: returns its exit status and stderr. Fails the test
    /// if it still runs after [`PATIENCE`].
    pub async fn spawn_expect_failure(
        cluster_urls: &str,
        node_id: u8,
        extra_args: &[&str],
    ) -> (ExitStatus, String) {
        Self::serve_expect_failure(&cluster_args(cluster_urls, node_id, extra_args)).await
    }

    /// [`spawn_expect_failure`](Self::spawn_expect_failure) for any
    /// `holdfast serve` arguments.
    pub async fn serve_expect_failure(args: &[String]) -> (ExitStatus, String) {
        let node = Self::start(args);
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(status) = node.try_status() {
                return (status, node.stderr());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "holdfast {args:?} was expected to refuse to start, still running after {PATIENCE:?}; stderr:\n{}",
                node.stderr()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    fn start(args: &[String]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("holdfast-node-test")
            .tempdir()
            .expect("a temp dir for the node");
        let log = dir.path().join("stderr.log");
        let stderr = std::fs::File::create(&log).expect("node log file");
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_holdfast"));
        cmd.arg("serve")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let child = spawn_owned(cmd).expect("start holdfast");
        Self {
            pid: child.id(),
            child: Mutex::new(child),
            port,
            log,
            _dir: dir,
            http: reqwest::Client::builder()
                .timeout(CLI_TIMEOUT)
                .build()
                .unwrap(),
        }
    }

    /// Polls `/readyz` until 200. `Err(stderr)` when the process exited or
    /// was not ready in [`PATIENCE`].
    pub async fn wait_ready(&self) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Ok(r) = self.http.get(self.url("/readyz")).send().await
                && r.status() == 200
            {
                return Ok(());
            }
            if let Some(status) = self.try_status() {
                return Err(format!("exited ({status}); stderr:\n{}", self.stderr()));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "not ready after {PATIENCE:?}; stderr:\n{}",
                    self.stderr()
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// POSTs JSON `body` to `path` with `token`: the status and the JSON
    /// answer (status 0 when the node did not answer at all).
    pub async fn post(
        &self,
        http: &reqwest::Client,
        path: &str,
        body: serde_json::Value,
        token: &str,
    ) -> (u16, serde_json::Value) {
        match http
            .post(self.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
        {
            Ok(r) => {
                let status = r.status().as_u16();
                (status, r.json().await.unwrap_or(serde_json::Value::Null))
            }
            Err(e) => (
                0,
                serde_json::json!({"error": "transport", "message": e.to_string()}),
            ),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Everything the node wrote to stderr so far (its logs).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The exit status, once it exited (it is reaped then).
    pub fn try_status(&self) -> Option<ExitStatus> {
        self.child
            .lock()
            .unwrap()
            .try_wait()
            .expect("holdfast status")
    }

    /// SIGKILL, and reaped (a node that already exited is only reaped).
    pub fn kill9(&self) {
        let mut child = self.child.lock().unwrap();
        if child.try_wait().expect("holdfast status").is_none() {
            child.kill().expect("SIGKILL holdfast");
        }
        child.wait().expect("reap holdfast");
    }

    /// SIGSTOP: the node keeps its state and does nothing (no lease
    /// renewal, no answers) until [`cont`](Self::cont).
    pub fn stop_signal(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT after [`stop_signal`](Self::stop_signal).
    pub fn cont(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: libc::c_int) {
        let mut child = self.child.lock().unwrap();
        if let Some(status) = child.try_wait().expect("holdfast status") {
            panic!(
                "holdfast already exited ({status}); stderr:\n{}",
                self.stderr()
            );
        }
        // Not reaped, and nobody reaps it while we hold the lock: the pid
        // is still this child's.
        send_signal(child.id(), signal);
    }

    /// SIGTERM (a graceful shutdown), and waits for the exit, bounded by
    /// [`PATIENCE`]; returns the exit status.
    pub async fn terminate(&self) -> ExitStatus {
        if let Some(status) = self.try_status() {
            return status;
        }
        self.signal(libc::SIGTERM);
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.try_status() {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "holdfast did not exit within {PATIENCE:?} of SIGTERM; stderr:\n{}",
                self.stderr()
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

/// A failed assertion must not leave a node running.
impl Drop for HoldfastNode {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        holdfast_testkit::stop_child(child, Duration::ZERO);
    }
}

fn cluster_args(cluster_urls: &str, node_id: u8, extra_args: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--redis-cluster".into(),
        cluster_urls.into(),
        "--node-id".into(),
        node_id.to_string(),
        "--demo".into(),
    ];
    args.extend(extra_args.iter().map(|a| a.to_string()));
    args
}
