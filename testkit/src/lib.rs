//! What holdfast's integration tests (gateway, load tester) and benches
//! share, written once: the check that a tool is present, free loopback
//! ports, a private `redis-server`, waiting for a condition with a
//! deadline, and starting and stopping child processes.
//!
//! # Layout
//!
//! - [`require_tool`], [`skip_or_fail`]: a missing tool fails the test,
//!   unless [`ALLOW_SKIP_ENV`]`=1` (local runs only) skips it, loudly.
//! - [`free_port`]: a loopback port nobody listens on (never 6379).
//! - [`eventually`], [`wait_until`]: poll a condition until a deadline
//!   (async and blocking); never a sleep standing in for a condition.
//! - [`process`]: children that die with the test process
//!   ([`process::spawn_owned`]) and [`process::stop_child`].
//! - [`redis`]: [`RedisServer`], a private throw-away `redis-server`.
//!
//! What it must never do: touch a process it did not start (the machine's
//! own Redis on 6379 above all), wait without a deadline, or let a missing
//! tool read as a passing test.

pub mod process;
pub mod redis;

pub use process::{spawn_owned, stop_child};
pub use redis::RedisServer;

use std::future::Future;
use std::time::{Duration, Instant};

/// The opt-out for local runs on a machine without a tool (never set in
/// CI): with it, a test that lacks its tool is skipped with a message;
/// without it, the test fails.
pub const ALLOW_SKIP_ENV: &str = "HOLDFAST_TEST_ALLOW_SKIP";

/// The port a shared Redis usually holds; [`free_port`] never returns it.
pub const REDIS_DEFAULT_PORT: u16 = 6379;

/// Interval between two looks at a condition being waited for: short next
/// to every deadline, long enough not to busy a shared 2-core machine.
pub const POLL: Duration = Duration::from_millis(20);

/// Attempts at finding a free port (the kernel may hand out 6379).
const FREE_PORT_ATTEMPTS_MAX: usize = 16;

/// Whether `tool` can run (`tool --version` starts). A missing tool fails
/// the test, unless [`ALLOW_SKIP_ENV`]`=1` is set, which skips it (returns
/// `false`) with a `SKIPPED` line: a skip is an explicit choice, never a
/// silent pass.
pub fn require_tool(tool: &str, for_what: &str) -> bool {
    if tool_present(tool) {
        return true;
    }
    skip_or_fail(&format!(
        "`{tool}` is needed for {for_what} and is not on PATH: install it \
         (./scripts/test-all does)"
    ))
}

/// Whether `tool --version` runs at all (its exit status does not matter).
pub fn tool_present(tool: &str) -> bool {
    std::process::Command::new(tool)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok()
}

/// Whether skipping was asked for ([`ALLOW_SKIP_ENV`]`=1`).
pub fn skip_allowed() -> bool {
    std::env::var(ALLOW_SKIP_ENV).is_ok_and(|v| v == "1")
}

/// Fails the test with `why`, unless [`ALLOW_SKIP_ENV`]`=1`: then writes
/// `SKIPPED` with `why` where libtest does not hide it, and returns
/// `false` (the caller returns early; libtest counts the test as passed,
/// the `SKIPPED` line says it was not run).
pub fn skip_or_fail(why: &str) -> bool {
    assert!(
        skip_allowed(),
        "{why}; set {ALLOW_SKIP_ENV}=1 to skip this test locally"
    );
    // Straight to the process's stderr, not through `eprintln!`: libtest
    // captures the macros' output of a passing test and would hide the
    // skip; a direct write shows in every run's output.
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr().lock(),
        "SKIPPED ({ALLOW_SKIP_ENV}=1): {why}"
    );
    false
}

/// A loopback port nobody was listening on a moment ago, never
/// [`REDIS_DEFAULT_PORT`]. Another process may take it before the caller
/// binds: launchers that cannot bind retry on another ([`RedisServer`]).
pub fn try_free_port() -> std::io::Result<u16> {
    for _ in 0..FREE_PORT_ATTEMPTS_MAX {
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))?
            .local_addr()?
            .port();
        if port != REDIS_DEFAULT_PORT {
            return Ok(port);
        }
    }
    Err(std::io::Error::other("no free loopback port found"))
}

/// [`try_free_port`] for tests: panics when the machine has none.
pub fn free_port() -> u16 {
    try_free_port().expect("a free loopback port")
}

/// Polls `probe` every [`POLL`] until it returns `Some`, for at most
/// `within`; panics naming `what` otherwise. The async form, for tests on
/// a tokio runtime.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(t) = probe().await {
            return t;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not happen within {within:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// [`eventually`] for code off the async runtime (process start-up,
/// `Drop`): blocks the calling thread between looks.
pub fn wait_until<T>(what: &str, within: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(t) = probe() {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {within:?}"
        );
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_port_is_never_the_shared_redis_port() {
        for _ in 0..20 {
            assert_ne!(free_port(), REDIS_DEFAULT_PORT);
        }
    }

    #[test]
    fn a_missing_tool_is_absent() {
        assert!(!tool_present("/nonexistent/holdfast-no-such-tool"));
        assert!(tool_present("sh") || tool_present("true"));
    }

    #[test]
    #[should_panic(expected = "never did not happen within")]
    fn waiting_gives_up_at_the_deadline() {
        wait_until("never", Duration::from_millis(50), || None::<()>);
    }

    #[tokio::test]
    async fn eventually_returns_what_the_probe_found() {
        let mut n = 0;
        let got = eventually("the third look", Duration::from_secs(20), || {
            n += 1;
            let seen = n;
            async move { (seen >= 3).then_some(seen) }
        })
        .await;
        assert_eq!(got, 3);
    }
}
