//! Idempotency by execution id: per principal, a bounded LRU with a time-to-live.
//!
//! Each principal (a peer's uid, or the process itself) has ids of its own: another
//! principal's ids are invisible to it, so they can be neither probed, replayed nor taken
//! first. The first request with an id runs; a repeat with the same request replays its
//! result, waiting if the first is still running, so concurrent duplicates run once. A
//! repeat whose request differs is refused: silently answering a different question would
//! be worse.
//!
//! What counts as the same request is what the tool computes from: the tool, its
//! arguments, stdin, environment, mounts and capabilities. Limits and deadlines are not part
//! of it, so a retry with less time left is still the same request. Only the tool's own
//! answers are remembered (an exit, a trap, a limit it ran into); a call stopped because
//! its caller gave up or its deadline passed, or failed by the host, is forgotten, and a
//! duplicate waiting for it runs it again itself.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use lru::LruCache;

use crate::caller::Caller;
use crate::epoch::{Stop, Stopped};
use crate::error::{Error, Result};
use crate::request::{Request, ToolRef};
use crate::result::Output;

type Outcome = Result<Output>;

#[derive(Default)]
enum State {
    #[default]
    Running,
    Done(Box<Outcome>, Instant),
    /// The run ended without an answer to remember; duplicates claim the id again.
    Abandoned,
}

#[derive(Default)]
struct Slot {
    state: Mutex<State>,
    settled: Condvar,
}

struct Record {
    fingerprint: [u8; 32],
    /// Bytes of stdout and stderr its outcome holds, counted against the principal's share.
    bytes: usize,
    slot: Arc<Slot>,
}

/// One principal's ids.
struct Ids {
    records: LruCache<String, Record>,
    bytes: usize,
}

/// The cache of recent executions.
pub struct IdempotencyCache {
    principals: Mutex<HashMap<Option<u32>, Ids>>,
    capacity: NonZeroUsize,
    max_bytes: usize,
    ttl: Duration,
}

/// What to do with a request that carries an execution id.
pub enum Claim<'a> {
    /// First sighting: run it, then [`Ticket::settle`].
    Run(Ticket<'a>),
    /// Seen before: this is its result.
    Replay(Box<Outcome>),
}

/// The right (and duty) to run an execution id once.
pub struct Ticket<'a> {
    cache: &'a IdempotencyCache,
    principal: Option<u32>,
    id: String,
    slot: Arc<Slot>,
    settled: bool,
}

impl IdempotencyCache {
    /// A cache of at most `capacity` ids per principal, whose outcomes hold at most
    /// `max_bytes` of output per principal, each remembered for `ttl` after it completes.
    pub fn new(capacity: NonZeroUsize, max_bytes: usize, ttl: Duration) -> Self {
        IdempotencyCache {
            principals: Mutex::new(HashMap::new()),
            capacity,
            max_bytes,
            ttl,
        }
    }

    /// Claims `id` for `caller`'s request with this fingerprint. A duplicate of a run still
    /// going waits for it, as long as its own caller does.
    pub fn claim(
        &self,
        caller: &Caller,
        stop: &Stop,
        tool: &str,
        id: &str,
        fingerprint: [u8; 32],
    ) -> Result<Claim<'_>> {
        let principal = caller.identity.namespace();
        loop {
            let slot = {
                let mut principals = self.principals.lock().unwrap_or_else(|p| p.into_inner());
                let ids = principals.entry(principal).or_insert_with(|| Ids {
                    records: LruCache::new(self.capacity),
                    bytes: 0,
                });
                match ids.records.get(id) {
                    Some(record) if !self.expired(&record.slot) => {
                        if record.fingerprint != fingerprint {
                            return Err(Error::BadRequest(format!(
                                "execution id {id:?} was already used for a different request"
                            )));
                        }
                        record.slot.clone()
                    }
                    _ => {
                        let slot = Arc::new(Slot::default());
                        let record = Record {
                            fingerprint,
                            bytes: 0,
                            slot: slot.clone(),
                        };
                        if let Some((_, evicted)) = ids.records.push(id.to_owned(), record) {
                            ids.bytes -= evicted.bytes;
                        }
                        return Ok(Claim::Run(Ticket {
                            cache: self,
                            principal,
                            id: id.to_owned(),
                            slot,
                            settled: false,
                        }));
                    }
                }
            };
            let mut state = slot.state.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                match &*state {
                    State::Done(outcome, _) => {
                        return Ok(Claim::Replay(Box::new((**outcome).clone().map(|mut o| {
                            o.cached = true;
                            o
                        }))));
                    }
                    State::Abandoned => break,
                    State::Running => {
                        if let Some(reason) = stop.check() {
                            return Err(waiting_stopped(reason, tool, id, stop));
                        }
                        state = slot
                            .settled
                            .wait_timeout(state, stop.next_look())
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                    }
                }
            }
        }
    }

    fn expired(&self, slot: &Slot) -> bool {
        let state = slot.state.lock().unwrap_or_else(|p| p.into_inner());
        matches!(&*state, State::Done(_, at) if at.elapsed() > self.ttl)
    }
}

/// Why a duplicate stopped waiting for the run it duplicates.
fn waiting_stopped(reason: Stopped, tool: &str, id: &str, stop: &Stop) -> Error {
    let partial = Box::new(Output {
        tool: tool.to_owned(),
        execution_id: Some(id.to_owned()),
        ..Output::default()
    });
    let tool = tool.to_owned();
    match reason {
        Stopped::Cancelled => Error::Cancelled { tool, partial },
        Stopped::Deadline => Error::DeadlineExceeded {
            tool,
            reason: format!(
                "was waiting for the first run of execution id {id:?} when its caller's deadline passed"
            ),
            partial,
        },
        Stopped::Limit => Error::DeadlineExceeded {
            tool,
            reason: format!(
                "was waiting for the first run of execution id {id:?} past its time limit of {} ms",
                stop.limit().as_millis()
            ),
            partial,
        },
    }
}

impl Ticket<'_> {
    /// Remembers the outcome if it is the tool's own answer (see the module's doc) and wakes
    /// the duplicates waiting for it; otherwise forgets the id, and they claim it again.
    pub fn settle(mut self, outcome: &Outcome) {
        self.settled = true;
        let answer = match outcome {
            Ok(_) => true,
            Err(err) => err.is_answer(),
        };
        if !answer {
            self.abandon();
            return;
        }
        let bytes = outcome
            .as_ref()
            .ok()
            .or_else(|| outcome.as_ref().err().and_then(Error::partial_output))
            .map_or(0, |o| o.stdout.len() + o.stderr.len());
        {
            let mut principals = self
                .cache
                .principals
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(ids) = principals.get_mut(&self.principal)
                && let Some(record) = ids.records.peek_mut(&self.id)
                && Arc::ptr_eq(&record.slot, &self.slot)
            {
                record.bytes = bytes;
                ids.bytes += bytes;
                // The oldest outcomes go first when this principal's share is full; a
                // retry of an id evicted here runs again.
                while ids.bytes > self.cache.max_bytes {
                    let Some((_, evicted)) = ids.records.pop_lru() else {
                        break;
                    };
                    ids.bytes -= evicted.bytes;
                }
            }
        }
        let mut state = self.slot.state.lock().unwrap_or_else(|p| p.into_inner());
        *state = State::Done(Box::new(outcome.clone()), Instant::now());
        self.slot.settled.notify_all();
    }

    /// Forgets the id (if its record is still this run's) and sends its duplicates to claim
    /// it again.
    fn abandon(&self) {
        {
            let mut principals = self
                .cache
                .principals
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(ids) = principals.get_mut(&self.principal)
                && ids
                    .records
                    .peek(&self.id)
                    .is_some_and(|record| Arc::ptr_eq(&record.slot, &self.slot))
                && let Some(record) = ids.records.pop(&self.id)
            {
                ids.bytes -= record.bytes;
            }
        }
        let mut state = self.slot.state.lock().unwrap_or_else(|p| p.into_inner());
        *state = State::Abandoned;
        self.slot.settled.notify_all();
    }
}

impl Drop for Ticket<'_> {
    /// A ticket dropped without an outcome (the run panicked) must not leave duplicates
    /// waiting forever, nor keep the id: it is abandoned.
    fn drop(&mut self) {
        if !self.settled {
            self.abandon();
        }
    }
}

/// What a request asks the tool to compute from, hashed: the tool, arguments, stdin,
/// environment (in any order), mounts and capabilities; not its limits, which bound how it
/// runs but not what it answers.
pub(crate) fn fingerprint(request: &Request) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    let mut field = |bytes: &[u8]| {
        hasher.update(&(bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    match &request.tool {
        ToolRef::Name(name) => {
            field(b"name");
            field(name.as_bytes());
        }
        ToolRef::Digest(digest) => {
            field(b"digest");
            field(digest.as_bytes());
        }
        ToolRef::Native(path) => {
            field(b"native");
            field(path.as_os_str().as_encoded_bytes());
        }
    }
    field(&(request.args.len() as u64).to_le_bytes());
    for arg in &request.args {
        field(arg.as_bytes());
    }
    let mut env: Vec<_> = request.env.iter().collect();
    env.sort();
    field(&(env.len() as u64).to_le_bytes());
    for (key, value) in env {
        field(key.as_bytes());
        field(value.as_bytes());
    }
    field(&request.stdin);
    field(&(request.mounts.len() as u64).to_le_bytes());
    for mount in &request.mounts {
        field(mount.host.as_os_str().as_encoded_bytes());
        field(mount.guest.as_bytes());
        field(&[mount.access as u8]);
    }
    match &request.capabilities {
        None => field(b"declared"),
        Some(capabilities) => {
            field(b"narrowed");
            field(&(capabilities.len() as u64).to_le_bytes());
            for capability in capabilities {
                field(capability.to_string().as_bytes());
            }
        }
    }
    *hasher.finalize().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caller::{Credentials, Identity};
    use crate::request::Limits;

    fn cache(ttl_ms: u64) -> IdempotencyCache {
        IdempotencyCache::new(
            NonZeroUsize::new(2).unwrap(),
            1 << 20,
            Duration::from_millis(ttl_ms),
        )
    }

    fn peer(uid: u32) -> Caller {
        Caller::new(Identity::Peer(Credentials {
            uid,
            gid: uid,
            groups: Vec::new().into(),
        }))
    }

    fn stop(caller: &Caller) -> Stop {
        Stop::new(caller, Duration::from_secs(10))
    }

    fn output(code: i32) -> Outcome {
        Ok(Output {
            exit_code: code,
            ..Output::default()
        })
    }

    fn claim<'a>(c: &'a IdempotencyCache, caller: &Caller, id: &str, fp: u8) -> Claim<'a> {
        c.claim(caller, &stop(caller), "tool", id, [fp; 32])
            .unwrap()
    }

    #[test]
    fn replays_and_refuses_a_different_request() {
        let c = cache(60_000);
        let me = Caller::process();
        let Claim::Run(t) = claim(&c, &me, "a", 1) else {
            panic!("first claim runs")
        };
        t.settle(&output(7));
        let Claim::Replay(replayed) = claim(&c, &me, "a", 1) else {
            panic!("replay")
        };
        let o = replayed.unwrap();
        assert!(o.cached && o.exit_code == 7);
        let err = c
            .claim(&me, &stop(&me), "tool", "a", [2; 32])
            .err()
            .unwrap();
        assert!(err.to_string().contains("different request"));
    }

    #[test]
    fn another_principals_ids_are_invisible() {
        let c = cache(60_000);
        let (alice, mallory) = (peer(1000), peer(1001));
        let Claim::Run(t) = claim(&c, &alice, "job-1", 1) else {
            panic!()
        };
        t.settle(&output(42));
        // Neither an oracle ("different request") nor a replay for someone else.
        let Claim::Run(theirs) = claim(&c, &mallory, "job-1", 2) else {
            panic!("another principal's id is a new id")
        };
        theirs.settle(&output(0));
        let Claim::Replay(mine) = claim(&c, &alice, "job-1", 1) else {
            panic!()
        };
        assert_eq!(mine.unwrap().exit_code, 42, "not squatted");
    }

    #[test]
    fn bounded_and_expiring() {
        let c = cache(30);
        let me = Caller::process();
        for id in ["a", "b", "c"] {
            let Claim::Run(t) = claim(&c, &me, id, 0) else {
                panic!()
            };
            t.settle(&output(0));
        }
        assert!(
            matches!(claim(&c, &me, "a", 0), Claim::Run(_)),
            "evicted by LRU"
        );
        std::thread::sleep(Duration::from_millis(40));
        assert!(
            matches!(claim(&c, &me, "c", 0), Claim::Run(_)),
            "expired by TTL"
        );
    }

    #[test]
    fn concurrent_duplicate_waits_for_the_first() {
        let c = Arc::new(cache(60_000));
        let me = Caller::process();
        let Claim::Run(t) = claim(&c, &me, "x", 0) else {
            panic!()
        };
        let c2 = c.clone();
        let waiter = std::thread::spawn(move || match claim(&c2, &Caller::process(), "x", 0) {
            Claim::Replay(r) => (*r).unwrap().exit_code,
            Claim::Run(_) => -1,
        });
        std::thread::sleep(Duration::from_millis(20));
        t.settle(&output(3));
        assert_eq!(waiter.join().unwrap(), 3);
    }

    #[test]
    fn a_run_stopped_by_its_caller_is_forgotten_and_its_duplicate_runs() {
        let c = Arc::new(cache(60_000));
        let me = Caller::process();
        let Claim::Run(t) = claim(&c, &me, "x", 0) else {
            panic!()
        };
        let c2 = c.clone();
        let duplicate = std::thread::spawn(move || {
            matches!(claim(&c2, &Caller::process(), "x", 0), Claim::Run(_))
        });
        std::thread::sleep(Duration::from_millis(20));
        t.settle(&Err(Error::Cancelled {
            tool: "tool".into(),
            partial: Box::default(),
        }));
        assert!(duplicate.join().unwrap(), "the duplicate runs it itself");
    }

    #[test]
    fn a_duplicate_stops_waiting_at_its_own_deadline() {
        let c = cache(60_000);
        let me = Caller::process();
        let _running = claim(&c, &me, "x", 0);
        let mut impatient = Caller::process();
        impatient.deadline = Some(Instant::now() + Duration::from_millis(30));
        let started = Instant::now();
        let err = c
            .claim(&impatient, &stop(&impatient), "tool", "x", [0; 32])
            .err()
            .unwrap();
        assert!(matches!(err, Error::DeadlineExceeded { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_millis(500));
    }

    #[test]
    fn outputs_beyond_a_principals_share_are_evicted_oldest_first() {
        let c = IdempotencyCache::new(NonZeroUsize::new(100).unwrap(), 10, Duration::from_secs(60));
        let me = Caller::process();
        for id in ["a", "b"] {
            let Claim::Run(t) = claim(&c, &me, id, 0) else {
                panic!()
            };
            t.settle(&Ok(Output {
                stdout: vec![0; 6],
                ..Output::default()
            }));
        }
        assert!(matches!(claim(&c, &me, "a", 0), Claim::Run(_)), "a evicted");
        assert!(matches!(claim(&c, &me, "b", 0), Claim::Replay(_)));
    }

    #[test]
    fn the_fingerprint_ignores_limits_and_env_order_but_not_inputs() {
        let base = Request::new("wc")
            .args(["-l"])
            .stdin("a\n")
            .env("A", "1")
            .env("B", "2");
        let mut reordered = base.clone();
        reordered.env.reverse();
        let mut limited = base.clone();
        limited.limits = Limits {
            timeout: Some(Duration::from_millis(5)),
            memory_bytes: Some(1 << 20),
            ..Limits::default()
        };
        assert_eq!(fingerprint(&base), fingerprint(&reordered));
        assert_eq!(fingerprint(&base), fingerprint(&limited));
        assert_ne!(fingerprint(&base), fingerprint(&base.clone().stdin("b\n")));
        assert_ne!(fingerprint(&base), fingerprint(&base.clone().args(["-c"])));
        // Field boundaries count: ["ab"] is not ["a", "b"].
        assert_ne!(
            fingerprint(&Request::new("x").args(["ab"])),
            fingerprint(&Request::new("x").args(["a", "b"]))
        );
    }
}
