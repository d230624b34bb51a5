//! One endpoint's queue of events to deliver, in memory: new events in
//! order, retries by due time, the dead letters, and a history of
//! delivered events for replay by id or time range. Every part is bounded;
//! a full queue drops the new event and counts it (the memory queue is
//! lossy by design: run with Redis for at-least-once across restarts).

use super::event::Event;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;
use tokio::time::Instant;

/// An event on its way to one endpoint.
#[derive(Debug, Clone)]
pub struct Queued {
    pub event: Arc<Event>,
    /// Tries made so far.
    pub tries: u32,
    /// Its entry in the endpoint's Redis stream (durable mode).
    pub entry: Option<String>,
}

/// An event that failed every try.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeadLetter {
    #[serde(serialize_with = "shared")]
    pub event: Arc<Event>,
    pub tries: u32,
    /// The last failure (status or transport error).
    pub error: String,
    pub dead_at_ms: u64,
}

fn shared<S: serde::Serializer>(event: &Arc<Event>, s: S) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(event.as_ref(), s)
}

/// How big each part may grow.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub queue_max: usize,
    pub dead_letters_max: usize,
    pub history_max: usize,
}

#[derive(Debug, Default)]
struct Inner {
    fresh: VecDeque<Queued>,
    /// Retries by due time (the counter breaks ties).
    retries: BTreeMap<(Instant, u64), Queued>,
    retry_seq: u64,
    in_flight: usize,
    dead: VecDeque<DeadLetter>,
    history: VecDeque<Arc<Event>>,
}

impl Inner {
    /// Events that still fit below `queue_max`.
    fn room(&self, queue_max: usize) -> usize {
        queue_max.saturating_sub(self.fresh.len() + self.retries.len() + self.in_flight)
    }

    /// Queues an event with fresh tries (in memory only).
    fn enqueue(&mut self, event: Arc<Event>) {
        self.fresh.push_back(Queued {
            event,
            tries: 0,
            entry: None,
        });
    }
}

#[derive(Debug)]
pub struct MemQueue {
    inner: Mutex<Inner>,
    bounds: Bounds,
    /// Rung on every push and every finished delivery.
    pub notify: Notify,
}

/// What became of a failed try.
#[derive(Debug, Clone)]
pub enum Failed {
    Retrying,
    /// A dead letter now (its stream entry, in durable mode).
    Dead(DeadLetter, Option<String>),
}

impl MemQueue {
    pub fn new(bounds: Bounds) -> Self {
        Self {
            inner: Mutex::default(),
            bounds,
            notify: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a new event; `false` when the queue is full (dropped).
    pub fn push(&self, event: Arc<Event>) -> bool {
        let mut q = self.lock();
        if q.room(self.bounds.queue_max) == 0 {
            return false;
        }
        q.enqueue(event);
        drop(q);
        self.notify.notify_one();
        true
    }

    /// Queues an event read from the endpoint's Redis stream (the reader
    /// checked for room first).
    pub fn push_entry(&self, item: Queued) {
        self.lock().fresh.push_back(item);
        self.notify.notify_one();
    }

    /// The next event due at `now` (a due retry first), marked in flight.
    pub fn take(&self, now: Instant) -> Option<Queued> {
        let mut q = self.lock();
        let due_retry = q.retries.first_key_value().is_some_and(|(k, _)| k.0 <= now);
        let next = if due_retry {
            q.retries.pop_first().map(|(_, v)| v)
        } else {
            q.fresh.pop_front()
        };
        if next.is_some() {
            q.in_flight += 1;
        }
        next
    }

    /// When the earliest retry is due, if any is waiting.
    pub fn next_retry(&self) -> Option<Instant> {
        self.lock().retries.first_key_value().map(|(k, _)| k.0)
    }

    /// A delivered event.
    pub fn delivered(&self, item: Queued) {
        let mut q = self.lock();
        q.in_flight = q.in_flight.saturating_sub(1);
        if q.history.len() >= self.bounds.history_max {
            q.history.pop_front();
        }
        if self.bounds.history_max > 0 {
            q.history.push_back(item.event);
        }
        drop(q);
        self.notify.notify_one();
    }

    /// A failed try: retried at `retry_at`, or a dead letter after
    /// `tries_max` tries.
    pub fn failed(
        &self,
        mut item: Queued,
        error: String,
        tries_max: u32,
        retry_at: Instant,
        now_ms: u64,
    ) -> Failed {
        item.tries += 1;
        let mut q = self.lock();
        q.in_flight = q.in_flight.saturating_sub(1);
        let outcome = if item.tries >= tries_max {
            if q.dead.len() >= self.bounds.dead_letters_max {
                q.dead.pop_front();
            }
            let dead = DeadLetter {
                event: item.event,
                tries: item.tries,
                error,
                dead_at_ms: now_ms,
            };
            q.dead.push_back(dead.clone());
            Failed::Dead(dead, item.entry)
        } else {
            q.retry_seq += 1;
            let key = (retry_at, q.retry_seq);
            q.retries.insert(key, item);
            Failed::Retrying
        };
        drop(q);
        self.notify.notify_one();
        outcome
    }

    pub fn dead_letters_max(&self) -> usize {
        self.bounds.dead_letters_max
    }

    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.lock().dead.iter().cloned().collect()
    }

    /// Queues again, with fresh tries and the same ids: the dead letters
    /// (all of them), or the events named, or those of a time range, from
    /// the dead letters and the delivery history. Returns how many.
    pub fn replay(&self, pick: &Replay) -> usize {
        let mut q = self.lock();
        let mut again: Vec<Arc<Event>> = Vec::new();
        let matches = |e: &Event| match pick {
            Replay::DeadLetters => false,
            Replay::Ids(ids) => ids.contains(&e.id),
            Replay::Range { from_ms, to_ms } => (*from_ms..=*to_ms).contains(&e.ts_ms),
        };
        let dead = std::mem::take(&mut q.dead);
        for d in dead {
            if matches!(pick, Replay::DeadLetters) || matches(&d.event) {
                again.push(d.event);
            } else {
                q.dead.push_back(d);
            }
        }
        for e in &q.history {
            if matches(e) && !again.iter().any(|a| a.id == e.id) {
                again.push(e.clone());
            }
        }
        again.sort_by_key(|e| e.ts_ms);
        let n = again.len().min(q.room(self.bounds.queue_max));
        for event in again.into_iter().take(n) {
            q.enqueue(event);
        }
        drop(q);
        self.notify.notify_one();
        n
    }

    /// Blanks buyer `stored` (its pseudonym, or its id in the clear) in
    /// every event this queue keeps: queued, retrying, dead letters and the
    /// delivery history (`data.buyer` becomes `null`; the event is still
    /// delivered, with the same id). An event in flight is not reachable
    /// here: it is delivered as it was. Returns the events blanked.
    pub fn erase_buyer(&self, names: &[&str]) -> u64 {
        let mut q = self.lock();
        let mut n = 0;
        let mut blank = |event: &mut Arc<Event>| {
            if event
                .data
                .get("buyer")
                .and_then(|b| b.as_str())
                .is_some_and(|b| names.contains(&b))
            {
                let mut copy = Event::clone(event);
                copy.data["buyer"] = serde_json::Value::Null;
                *event = Arc::new(copy);
                n += 1;
            }
        };
        let Inner {
            fresh,
            retries,
            dead,
            history,
            ..
        } = &mut *q;
        fresh.iter_mut().for_each(|x| blank(&mut x.event));
        retries.values_mut().for_each(|x| blank(&mut x.event));
        dead.iter_mut().for_each(|d| blank(&mut d.event));
        history.iter_mut().for_each(blank);
        n
    }

    /// `(queued, retrying, in flight, dead letters, oldest queued ts)`.
    pub fn counts(&self) -> QueueCounts {
        let q = self.lock();
        let oldest_ms = q
            .fresh
            .front()
            .map(|x| x.event.ts_ms)
            .into_iter()
            .chain(q.retries.values().map(|x| x.event.ts_ms))
            .min();
        QueueCounts {
            queued: q.fresh.len(),
            retrying: q.retries.len(),
            in_flight: q.in_flight,
            dead_letters: q.dead.len(),
            oldest_ms,
        }
    }
}

/// What to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replay {
    DeadLetters,
    Ids(Vec<String>),
    Range { from_ms: u64, to_ms: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct QueueCounts {
    pub queued: usize,
    pub retrying: usize,
    pub in_flight: usize,
    pub dead_letters: usize,
    #[serde(skip)]
    pub oldest_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::super::event::EventType;
    use super::*;

    fn ev(id: &str, ts_ms: u64) -> Arc<Event> {
        Arc::new(Event {
            id: id.into(),
            kind: EventType::OrderCommitted,
            ts_ms,
            data: serde_json::Value::Null,
        })
    }

    #[test]
    fn bounded_retried_dead_and_replayed() {
        let q = MemQueue::new(Bounds {
            queue_max: 2,
            dead_letters_max: 1,
            history_max: 1,
        });
        assert!(q.push(ev("a", 1)) && q.push(ev("b", 2)));
        assert!(!q.push(ev("c", 3)), "full at the bound");
        let now = Instant::now();
        let a = q.take(now).unwrap();
        assert!(matches!(
            q.failed(a, "500".into(), 2, now, 0),
            Failed::Retrying
        ));
        let a = q.take(now).unwrap();
        assert_eq!(a.event.id, "a", "a due retry goes first");
        assert!(matches!(
            q.failed(a, "500".into(), 2, now, 0),
            Failed::Dead(..)
        ));
        let b = q.take(now).unwrap();
        q.delivered(b);
        assert_eq!(q.dead_letters().len(), 1);
        assert_eq!(q.replay(&Replay::Ids(vec!["b".into()])), 1, "from history");
        assert_eq!(q.replay(&Replay::DeadLetters), 1);
        assert!(q.dead_letters().is_empty());
        assert_eq!(q.counts().queued, 2);
    }
}
