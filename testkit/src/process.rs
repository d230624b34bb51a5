//! Child processes a test or bench starts: they die with it, and are
//! stopped by their handle, never by name.
//!
//! What it must never do: signal a pid that is not an unreaped child of
//! this process (a reaped pid may already belong to someone else).

use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

type SpawnJob = (Command, mpsc::SyncSender<std::io::Result<Child>>);

/// Spawns `cmd` so that the child is SIGKILLed when this process dies,
/// however it dies (a panic unwinds into our `Drop`s, but an abort, a
/// harness timeout or a SIGKILL does not): a crashed or timed-out test never
/// leaves servers behind on a shared machine.
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits,
/// not the process; a test may start a server on a thread that ends early
/// (a `spawn_blocking` thread exits after 10 s idle, each `#[test]` runs on
/// a thread of its own), so every child is forked by one spawner thread
/// that lives as long as the process.
pub fn spawn_owned(cmd: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnJob>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("testkit-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(spawn_with_parent_death_signal(&mut cmd));
                }
            })
            .expect("spawner thread");
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::sync_channel(1);
    spawner
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, reply_tx))
        .expect("spawner thread alive");
    reply_rx.recv().expect("spawner thread answered")
}

#[cfg(target_os = "linux")]
fn spawn_with_parent_death_signal(cmd: &mut Command) -> std::io::Result<Child> {
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure runs in the forked child before exec and only
    // makes async-signal-safe system calls (prctl, getppid); it allocates
    // nothing and touches no lock.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent died between fork and prctl: nobody would kill us.
            if libc::getppid() != parent {
                return Err(std::io::Error::other("parent exited during spawn"));
            }
            Ok(())
        })
    };
    cmd.spawn()
}

/// Elsewhere only `Drop` stops the child.
#[cfg(not(target_os = "linux"))]
fn spawn_with_parent_death_signal(cmd: &mut Command) -> std::io::Result<Child> {
    cmd.spawn()
}

/// Stops our own child: waits up to `grace` for it to exit by itself (the
/// caller asked it to: `quit` on its stdin, SIGTERM), then SIGKILLs it; it
/// is reaped either way. `Duration::ZERO`: SIGKILL at once. Never fails: a
/// child that is already gone is only reaped.
pub fn stop_child(child: &mut Child, grace: Duration) {
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_)) | Err(_)) {
            return;
        }
        std::thread::sleep(crate::POLL);
    }
    // Not reaped yet, so the pid is still this child's.
    let _ = child.kill();
    let _ = child.wait();
}

/// Sends SIGTERM to our own child (a graceful stop request); a child that
/// already exited is left alone.
pub fn terminate(child: &mut Child) {
    if !matches!(child.try_wait(), Ok(None)) {
        return;
    }
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) has no memory-safety preconditions; the child is
        // not reaped (try_wait just said it runs), so the pid is still its.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_child_kills_what_does_not_exit_and_reaps_it() {
        let mut cmd = Command::new("sleep");
        cmd.arg("600");
        let mut child = spawn_owned(cmd).unwrap();
        stop_child(&mut child, Duration::ZERO);
        assert!(child.try_wait().unwrap().is_some(), "still running");
    }

    #[test]
    fn terminate_then_stop_waits_for_a_graceful_exit() {
        let mut cmd = Command::new("sleep");
        cmd.arg("600");
        let mut child = spawn_owned(cmd).unwrap();
        terminate(&mut child);
        stop_child(&mut child, Duration::from_secs(20));
        let status = child.try_wait().unwrap().expect("exited");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
    }
}
