//! The atomics the engine's CAS protocols use, swapped for loom's under
//! `--cfg loom` so the model checker can explore every interleaving of
//! [`crate::stock`], [`crate::hold`], `ring`, `buyer_limit`, `idempotency`
//! and [`crate::doorbell`] (see their `loom` test modules; `engine::requests`
//! has one of the whole engine). `UnsafeCell` and `Backoff` are swapped with them: loom tracks
//! every access to a cell, and a spin loop must yield to its scheduler.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{
    AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence,
};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{
    AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence,
};

#[cfg(loom)]
pub(crate) use loom::cell::UnsafeCell;

/// `std`'s `UnsafeCell` behind loom's closure-based interface.
#[cfg(not(loom))]
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    pub(crate) const fn new(value: T) -> Self {
        Self(std::cell::UnsafeCell::new(value))
    }

    #[inline]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    #[inline]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

#[cfg(not(loom))]
pub(crate) use crossbeam::utils::Backoff;

/// Under loom a wait is a yield to the model's scheduler.
#[cfg(loom)]
#[derive(Debug, Default)]
pub(crate) struct Backoff;

#[cfg(loom)]
impl Backoff {
    pub(crate) fn new() -> Self {
        Self
    }

    pub(crate) fn spin(&self) {
        loom::thread::yield_now();
    }

    pub(crate) fn snooze(&self) {
        loom::thread::yield_now();
    }
}

/// Runs a loom model of two racers, `a` and `b`, on threads of their own
/// over the state `setup` builds, once spawned in each order; `check` gets
/// the state and their results. Loom explores fewer interleavings of work
/// on a model's main thread, and of a thread spawned first running after
/// one spawned later: with the racers anywhere else, the idempotency
/// table's undo model missed a bug put back on purpose.
#[cfg(all(test, loom))]
pub(crate) fn race<T, A, B>(
    setup: impl Fn() -> T + Sync + Send + 'static,
    a: impl Fn(&T) -> A + Sync + Send + Copy + 'static,
    b: impl Fn(&T) -> B + Sync + Send + Copy + 'static,
    check: impl Fn(&T, A, B) + Sync + Send + 'static,
) where
    T: Sync + Send + 'static,
    A: Send + 'static,
    B: Send + 'static,
{
    use loom::sync::Arc;
    let setup = std::sync::Arc::new(setup);
    let check = std::sync::Arc::new(check);
    for a_first in [true, false] {
        let (setup, check) = (setup.clone(), check.clone());
        loom::model(move || {
            let state = Arc::new(setup());
            let (ha, hb) = if a_first {
                let ha = spawn_with(&state, a);
                (ha, spawn_with(&state, b))
            } else {
                let hb = spawn_with(&state, b);
                (spawn_with(&state, a), hb)
            };
            check(&state, ha.join().unwrap(), hb.join().unwrap());
        });
    }
}

/// Runs `f` with `state` on a thread of its own (in a loom model, racers
/// belong on spawned threads: see [`race`]).
#[cfg(all(test, loom))]
pub(crate) fn spawn_with<T, R>(
    state: &loom::sync::Arc<T>,
    f: impl FnOnce(&T) -> R + Send + 'static,
) -> loom::thread::JoinHandle<R>
where
    T: Sync + Send + 'static,
    R: Send + 'static,
{
    let state = state.clone();
    loom::thread::spawn(move || f(&state))
}
