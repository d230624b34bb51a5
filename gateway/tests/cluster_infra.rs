//! The multi-node test bed tests itself (`common/cluster.rs`): a real
//! Redis Cluster of 3 masters and 3 replicas starts, routes keys to the
//! master the cluster names, fails over when that master is SIGKILLed
//! (keeping a write a replica confirmed), loses its scripts on
//! `SCRIPT FLUSH`, answers nothing while paused, and leaves no process
//! behind; a real `holdfast` process starts, stops and continues on
//! signals, reports a start-up refusal, and dies with the test process.
//! None of this needs holdfast's cluster mode.

mod common;
use common::cluster::{HoldfastNode, ProcessState, RedisCluster, Role};
use common::*;
use std::io::BufRead;
use std::time::{Duration, Instant};

const HOT_KEY: &str = "hf:{sku:runner-42}:def";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_routes_keys_fails_over_flushes_scripts_and_tears_down() {
    let started = Instant::now();
    let Some(cluster) = RedisCluster::start(3, 1) else {
        return;
    };
    eprintln!("3 masters + 3 replicas ready in {:?}", started.elapsed());

    // Six servers, three of each role, all running; urls() names them all.
    let nodes = cluster.nodes();
    assert_eq!(nodes.len(), 6);
    let masters: Vec<u16> = nodes
        .iter()
        .filter(|n| n.role == Role::Master)
        .map(|n| n.port)
        .collect();
    assert_eq!(masters.len(), 3, "{nodes:?}");
    assert!(nodes.iter().all(|n| n.state == ProcessState::Running));
    assert!(nodes.iter().all(|n| n.port > 20_000 && n.port != 6379));
    let urls = cluster.urls();
    assert_eq!(urls.split(',').count(), 6);
    for n in &nodes {
        assert!(
            urls.contains(&format!("redis://127.0.0.1:{},", n.port))
                || urls.ends_with(&format!("redis://127.0.0.1:{}", n.port)),
            "{urls}"
        );
    }

    // master_of_key names the master that takes the key; every other
    // master redirects there.
    let owner = cluster.master_of_key(HOT_KEY);
    assert!(masters.contains(&owner));
    assert_eq!(cluster.cli(owner, &["SET", HOT_KEY, "before"]), "OK");
    for &m in masters.iter().filter(|&&m| m != owner) {
        let reply = cluster.cli(m, &["SET", HOT_KEY, "x"]);
        assert!(
            reply.starts_with("MOVED ") && reply.ends_with(&format!("127.0.0.1:{owner}")),
            "{reply}"
        );
    }
    // Keys spread: some SKU lands on each master.
    let spread: std::collections::BTreeSet<u16> = (0..64)
        .map(|i| cluster.master_of_key(&format!("hf:{{sku:s{i}}}:def")))
        .collect();
    assert_eq!(spread.into_iter().collect::<Vec<_>>(), {
        let mut m = masters.clone();
        m.sort();
        m
    });

    // Scripts: loaded everywhere, gone everywhere after the flush.
    let mut sha = String::new();
    for &m in &masters {
        sha = cluster.cli(m, &["SCRIPT", "LOAD", "return 'hf'"]);
        assert_eq!(cluster.cli(m, &["EVALSHA", &sha, "0"]), "hf");
    }
    assert_eq!(cluster.flush_scripts_everywhere(), 6);
    for &m in &masters {
        let reply = cluster.cli(m, &["EVALSHA", &sha, "0"]);
        assert!(reply.starts_with("NOSCRIPT"), "{reply}");
    }

    // Failover: the write a replica confirmed survives the master's death.
    assert_eq!(cluster.cli(owner, &["WAIT", "1", "5000"]), "1");
    let replica_of_owner = replica_ports_of(&cluster, owner);
    assert_eq!(replica_of_owner.len(), 1);
    let killed_at = Instant::now();
    assert_eq!(cluster.kill_master_of_key(HOT_KEY), owner);
    let killed = cluster.nodes();
    let dead = killed.iter().find(|n| n.port == owner).unwrap();
    assert_eq!(dead.state, ProcessState::Killed);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", owner)).is_err(),
        "the killed master's port is closed"
    );
    let new_master = cluster.wait_failover(HOT_KEY).await;
    eprintln!(
        "master 127.0.0.1:{owner} SIGKILLed: writes accepted by 127.0.0.1:{new_master} after {:?}",
        killed_at.elapsed()
    );
    assert_eq!(vec![new_master], replica_of_owner, "its replica took over");
    assert_eq!(cluster.master_of_key(HOT_KEY), new_master);
    assert_eq!(cluster.cli(new_master, &["GET", HOT_KEY]), "before");
    let promoted = cluster.nodes();
    assert_eq!(
        promoted.iter().find(|n| n.port == new_master).unwrap().role,
        Role::Master
    );

    // Pause: a stopped server answers nothing (the call is bounded), then
    // answers again. A replica, so the pause fails nothing over.
    let replica = promoted
        .iter()
        .find(|n| n.role == Role::Replica && n.state == ProcessState::Running)
        .expect("a running replica")
        .port;
    cluster.pause(replica);
    let asked = Instant::now();
    assert!(cluster.try_cli(replica, &["PING"]).is_err());
    assert!(asked.elapsed() < Duration::from_secs(10), "bounded call");
    assert_eq!(
        cluster
            .nodes()
            .iter()
            .find(|n| n.port == replica)
            .unwrap()
            .state,
        ProcessState::Paused
    );
    cluster.resume(replica);
    assert_eq!(cluster.cli(replica, &["PING"]), "PONG");

    // Tear-down: every process is gone and every port closed.
    let all = cluster.nodes();
    drop(cluster);
    for n in all {
        assert!(!process_exists(n.pid), "pid {} still exists", n.pid);
        assert!(std::net::TcpStream::connect(("127.0.0.1", n.port)).is_err());
    }
    eprintln!("whole test in {:?}", started.elapsed());
}

/// Ports of the servers replicating the master on `master`.
fn replica_ports_of(cluster: &RedisCluster, master: u16) -> Vec<u16> {
    let nodes = cluster.cli(master, &["CLUSTER", "NODES"]);
    let master_id = nodes
        .lines()
        .find(|l| l.contains("myself"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    nodes
        .lines()
        .filter(|l| l.split_whitespace().nth(3) == Some(master_id.as_str()))
        .map(|l| {
            let addr = l.split_whitespace().nth(1).unwrap();
            let addr = addr.split('@').next().unwrap();
            addr.rsplit(':').next().unwrap().parse().unwrap()
        })
        .collect()
}

/// The process exists and is not a zombie waiting to be reaped.
fn process_exists(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

#[tokio::test]
async fn a_holdfast_process_starts_stops_continues_terminates_and_reports_a_refusal() {
    let node = HoldfastNode::serve(&["--demo".to_string()]).await;
    assert!(
        node.stderr()
            .contains(&format!("127.0.0.1:{}", node.port())),
        "the start-up line is captured: {}",
        node.stderr()
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let ready = || http.get(node.url("/readyz")).send();
    assert_eq!(ready().await.unwrap().status(), 200);

    node.stop_signal();
    assert!(ready().await.is_err(), "a stopped node answers nothing");
    node.cont();
    node.wait_ready().await.expect("ready again after SIGCONT");

    let status = node.terminate().await;
    assert!(status.success(), "graceful exit on SIGTERM: {status}");
    assert!(node.try_status().is_some());

    let killed = HoldfastNode::serve(&["--demo".to_string()]).await;
    killed.kill9();
    assert!(!process_exists(killed.pid()));

    let (status, stderr) = HoldfastNode::serve_expect_failure(&[
        "--demo".to_string(),
        "--broadcast-interval-ms".to_string(),
        "1".to_string(),
    ])
    .await;
    assert!(!status.success());
    assert!(stderr.contains("--broadcast-interval-ms"), "{stderr}");
}

#[tokio::test]
async fn a_node_dropped_by_a_panicking_test_is_killed() {
    let node = HoldfastNode::serve(&["--demo".to_string()]).await;
    let pid = node.pid();
    let panicked = std::thread::spawn(move || {
        let _node = node;
        panic!("a failing test");
    })
    .join();
    assert!(panicked.is_err());
    assert!(!process_exists(pid));
}

const HOLDER_ENV: &str = "HOLDFAST_TEST_CHILD_HOLDER";

/// Runs this test binary's `holds_a_node_until_killed` as a child process,
/// SIGKILLs it, and checks the holdfast process it had started died with
/// it: no `Drop` runs on SIGKILL, only `PR_SET_PDEATHSIG` can do this.
#[tokio::test]
async fn a_node_dies_with_a_killed_test_process() {
    let mut holder = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "holds_a_node_until_killed",
            "--ignored",
            "--nocapture",
        ])
        .env(HOLDER_ENV, "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run the holder test");
    let stdout = holder.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.starts_with("NODE-PID "))
    });
    let line = tokio::time::timeout(PATIENCE, line)
        .await
        .expect("the holder started a node in time")
        .unwrap();
    let pid: u32 = line
        .expect("the holder printed its node's pid")
        .trim_start_matches("NODE-PID ")
        .parse()
        .unwrap();
    assert!(process_exists(pid));
    holder.kill().unwrap();
    holder.wait().unwrap();
    eventually(
        &format!("holdfast {pid} exiting with the killed test"),
        || async { (!process_exists(pid)).then_some(()) },
    )
    .await;
}

/// The child side of `a_node_dies_with_a_killed_test_process`; does nothing
/// unless that test runs it.
#[tokio::test]
#[ignore = "run by a_node_dies_with_a_killed_test_process"]
async fn holds_a_node_until_killed() {
    if std::env::var(HOLDER_ENV).is_err() {
        return;
    }
    let node = HoldfastNode::serve(&["--demo".to_string()]).await;
    println!("NODE-PID {}", node.pid());
    // Bounded: if the parent never kills us, end (and drop the node).
    tokio::time::sleep(PATIENCE).await;
}
