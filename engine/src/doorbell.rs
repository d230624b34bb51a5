//! A doorbell: producers wake a consumer only while it waits, and no
//! wake-up is ever lost.
//!
//! The gateway's journal thread takes the engine's events in batches; a
//! request that ringed it on every event would cost a cross-thread wake-up
//! per request while a batch is in flight, for nothing. With a doorbell the
//! consumer [`arm`](Doorbell::arm)s it, looks at its queue once more, and
//! only then waits; a producer queues its work and then asks
//! [`should_ring`](Doorbell::should_ring). The two `SeqCst` fences make it
//! a Dekker handshake: of "the consumer saw the work" and "the producer saw
//! the consumer waiting", at least one is true (loom model below).

use crate::sync::{AtomicBool, Ordering, fence};

#[derive(Debug, Default)]
pub struct Doorbell {
    waiting: AtomicBool,
}

impl Doorbell {
    pub fn new() -> Self {
        Self::default()
    }

    /// The consumer is about to wait: after this, look at the queue once
    /// more and wait only if it is still empty.
    pub fn arm(&self) {
        self.waiting.store(true, Ordering::Relaxed);
        // SeqCst: orders the store above before the consumer's next look
        // at its queue (pairs with the fence in `should_ring`).
        fence(Ordering::SeqCst);
    }

    /// The consumer stopped waiting.
    pub fn disarm(&self) {
        self.waiting.store(false, Ordering::Relaxed);
    }

    /// After queueing work: whether the consumer waits and must be woken.
    pub fn should_ring(&self) -> bool {
        // SeqCst: orders the producer's queueing before this load (pairs
        // with the fence in `arm`).
        fence(Ordering::SeqCst);
        self.waiting.load(Ordering::Relaxed)
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    #[test]
    fn loom_a_doorbell_never_loses_a_wake_up() {
        loom::model(|| {
            let bell = Arc::new(Doorbell::new());
            // The queue, reduced to "something is in it", written with
            // the weakest ordering: the fences alone must carry it.
            let queued = Arc::new(AtomicBool::new(false));
            let producer = {
                let (bell, queued) = (bell.clone(), queued.clone());
                thread::spawn(move || {
                    queued.store(true, Ordering::Relaxed);
                    bell.should_ring()
                })
            };
            bell.arm();
            let consumer_saw_work = queued.load(Ordering::Relaxed);
            let rang = producer.join().unwrap();
            assert!(
                consumer_saw_work || rang,
                "the consumer waits on an empty-looking queue and nobody wakes it"
            );
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rings_only_while_armed() {
        let bell = Doorbell::new();
        assert!(!bell.should_ring());
        bell.arm();
        assert!(bell.should_ring());
        bell.disarm();
        assert!(!bell.should_ring());
    }
}
