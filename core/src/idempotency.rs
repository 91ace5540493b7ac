//! Idempotency by execution id (seed 000): a bounded LRU with a time-to-live.
//!
//! The first request with an id runs; a repeat with the same request replays its result,
//! waiting if the first is still running, so concurrent duplicates run once. A repeat whose
//! request differs is refused: silently answering a different question would be worse.

use std::num::NonZeroUsize;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use lru::LruCache;

use crate::error::{Error, Result};
use crate::result::Output;

type Outcome = Result<Output>;

struct Slot {
    outcome: Mutex<Option<(Outcome, Instant)>>,
    done: Condvar,
}

struct Record {
    fingerprint: [u8; 32],
    slot: Arc<Slot>,
}

/// The cache of recent executions.
pub struct IdempotencyCache {
    records: Mutex<LruCache<String, Record>>,
    ttl: Duration,
}

/// What to do with a request that carries an execution id.
pub enum Claim<'a> {
    /// First sighting: run it, then [`Ticket::complete`].
    Run(Ticket<'a>),
    /// Seen before: this is its result.
    Replay(Box<Outcome>),
}

/// The right (and duty) to run an execution id once.
pub struct Ticket<'a> {
    cache: &'a IdempotencyCache,
    id: String,
    slot: Arc<Slot>,
    completed: bool,
}

impl IdempotencyCache {
    /// A cache of at most `capacity` ids, each remembered for `ttl` after it completes.
    pub fn new(capacity: NonZeroUsize, ttl: Duration) -> Self {
        IdempotencyCache {
            records: Mutex::new(LruCache::new(capacity)),
            ttl,
        }
    }

    /// Claims `id` for a request with this fingerprint.
    pub fn claim(&self, id: &str, fingerprint: [u8; 32]) -> Result<Claim<'_>> {
        let slot = {
            let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
            match records.get(id) {
                Some(record) if !self.expired(&record.slot) => {
                    if record.fingerprint != fingerprint {
                        return Err(Error::BadRequest(format!(
                            "execution id {id:?} was already used for a different request"
                        )));
                    }
                    Some(record.slot.clone())
                }
                _ => {
                    let slot = Arc::new(Slot {
                        outcome: Mutex::new(None),
                        done: Condvar::new(),
                    });
                    records.put(
                        id.to_owned(),
                        Record {
                            fingerprint,
                            slot: slot.clone(),
                        },
                    );
                    return Ok(Claim::Run(Ticket {
                        cache: self,
                        id: id.to_owned(),
                        slot,
                        completed: false,
                    }));
                }
            }
        };
        let slot = slot.expect("a replay slot");
        let mut outcome = slot.outcome.lock().unwrap_or_else(|p| p.into_inner());
        while outcome.is_none() {
            outcome = slot.done.wait(outcome).unwrap_or_else(|p| p.into_inner());
        }
        let (result, _) = outcome.as_ref().expect("completed");
        Ok(Claim::Replay(Box::new(result.clone().map(|mut o| {
            o.cached = true;
            o
        }))))
    }

    fn expired(&self, slot: &Slot) -> bool {
        let outcome = slot.outcome.lock().unwrap_or_else(|p| p.into_inner());
        outcome
            .as_ref()
            .is_some_and(|(_, at)| at.elapsed() > self.ttl)
    }
}

impl Ticket<'_> {
    /// Records the outcome and wakes any duplicate waiting for it.
    pub fn complete(mut self, outcome: &Outcome) {
        self.finish(outcome.clone());
        self.completed = true;
    }

    /// Hands `outcome` to the duplicates waiting now but forgets the id, so the next call
    /// with it runs again: a failure of the host (not of the tool) is no answer to replay.
    pub fn forget(mut self, outcome: &Outcome) {
        self.finish(outcome.clone());
        self.completed = true;
        let mut records = self.cache.records.lock().unwrap_or_else(|p| p.into_inner());
        records.pop(&self.id);
    }

    fn finish(&self, outcome: Outcome) {
        let mut slot = self.slot.outcome.lock().unwrap_or_else(|p| p.into_inner());
        *slot = Some((outcome, Instant::now()));
        self.slot.done.notify_all();
    }
}

impl Drop for Ticket<'_> {
    /// A ticket dropped without an outcome (the run panicked) must not leave duplicates
    /// waiting forever, nor poison the id: they get an error and the id is forgotten.
    fn drop(&mut self) {
        if !self.completed {
            self.finish(Err(Error::Engine(format!(
                "execution {:?} was abandoned before it finished",
                self.id
            ))));
            let mut records = self.cache.records.lock().unwrap_or_else(|p| p.into_inner());
            records.pop(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(ttl_ms: u64) -> IdempotencyCache {
        IdempotencyCache::new(NonZeroUsize::new(2).unwrap(), Duration::from_millis(ttl_ms))
    }

    fn output(code: i32) -> Outcome {
        Ok(Output {
            exit_code: code,
            ..Output::default()
        })
    }

    #[test]
    fn replays_and_refuses_a_different_request() {
        let c = cache(60_000);
        let Claim::Run(t) = c.claim("a", [1; 32]).unwrap() else {
            panic!("first claim runs")
        };
        t.complete(&output(7));
        let Claim::Replay(replayed) = c.claim("a", [1; 32]).unwrap() else {
            panic!("replay")
        };
        let o = replayed.unwrap();
        assert!(o.cached && o.exit_code == 7);
        let err = c.claim("a", [2; 32]).err().unwrap();
        assert!(err.to_string().contains("different request"));
    }

    #[test]
    fn bounded_and_expiring() {
        let c = cache(30);
        for id in ["a", "b", "c"] {
            let Claim::Run(t) = c.claim(id, [0; 32]).unwrap() else {
                panic!()
            };
            t.complete(&output(0));
        }
        assert!(
            matches!(c.claim("a", [0; 32]).unwrap(), Claim::Run(_)),
            "evicted by LRU"
        );
        std::thread::sleep(Duration::from_millis(40));
        assert!(
            matches!(c.claim("c", [0; 32]).unwrap(), Claim::Run(_)),
            "expired by TTL"
        );
    }

    #[test]
    fn concurrent_duplicate_waits_for_the_first() {
        let c = Arc::new(cache(60_000));
        let Claim::Run(t) = c.claim("x", [0; 32]).unwrap() else {
            panic!()
        };
        let c2 = c.clone();
        let waiter = std::thread::spawn(move || match c2.claim("x", [0; 32]).unwrap() {
            Claim::Replay(r) => (*r).unwrap().exit_code,
            Claim::Run(_) => -1,
        });
        std::thread::sleep(Duration::from_millis(20));
        t.complete(&output(3));
        assert_eq!(waiter.join().unwrap(), 3);
    }
}
