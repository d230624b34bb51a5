//! The atomics the engine's CAS protocols use, swapped for loom's under
//! `--cfg loom` so the model checker can explore every interleaving of
//! [`crate::stock`] and [`crate::hold`] (see their `loom` test modules).

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering, fence};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering, fence};
