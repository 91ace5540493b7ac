//! Calls waiting for a thread to run them, in order of arrival.
//!
//! A call's time limit runs from its arrival, and its caller may give up or reach its
//! deadline while it waits: a waiting call is answered then, not when a thread frees up
//! (which, behind long calls, could be much later). A warden thread watches the ends of the
//! waiting calls while some wait for a busy thread, and hands each call whose end has come
//! back to it ([`Waiting::stopped`]) to answer.
//!
//! Nothing is signalled that need not be: a call that an idle taker will take at once wakes
//! neither the warden nor, while the taker is still looking, anyone. On two cores a wake-up
//! per call (a futex and a context switch) was a tenth of a socket call's time.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::epoch::{Stop, Stopped};

/// How often the warden looks at the waiting calls' ends while there are any.
const WARDEN_TICK: Duration = Duration::from_millis(2);

/// A call that can wait in a [`Queue`].
pub trait Waiting: Send + 'static {
    /// When the call must end.
    fn stop(&self) -> &Stop;
    /// Answers a call whose end came while it waited (it never ran).
    fn stopped(self, reason: Stopped);
}

/// A FIFO of waiting calls, watched by a warden thread.
pub struct Queue<J: Waiting> {
    shared: Arc<Shared<J>>,
}

struct Shared<J> {
    state: Mutex<State<J>>,
    /// Signalled for a taker asleep in [`Queue::pop`]: a call came, or the queue closed.
    work: Condvar,
    /// Signalled for the warden: a call must wait for a busy thread, or the queue closed.
    watch: Condvar,
}

struct State<J> {
    calls: VecDeque<J>,
    /// Takers in `pop`, looking or asleep: each takes a call at once when one comes.
    idle: usize,
    /// Of them, the ones asleep on `work`, which need a signal.
    asleep: usize,
    /// The warden sleeps until some call waits for a busy thread.
    warden_asleep: bool,
    closed: bool,
}

impl<J> State<J> {
    /// Whether some call waits beyond the idle takers, so for a thread that is busy.
    fn must_wait(&self) -> bool {
        self.calls.len() > self.idle
    }
}

impl<J: Waiting> Queue<J> {
    /// An empty queue, with its warden thread started.
    pub fn new() -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                calls: VecDeque::new(),
                idle: 0,
                asleep: 0,
                warden_asleep: false,
                closed: false,
            }),
            work: Condvar::new(),
            watch: Condvar::new(),
        });
        let watched = shared.clone();
        std::thread::Builder::new()
            .name("mv-queue-warden".into())
            .spawn(move || warden(&watched))?;
        Ok(Queue { shared })
    }

    /// Queues a call, or gives it back when the queue is closed.
    pub fn push(&self, call: J) -> Result<(), J> {
        let mut state = self.shared.lock();
        if state.closed {
            return Err(call);
        }
        state.calls.push_back(call);
        // A taker still looking takes the call itself; one asleep is woken only for a call
        // that the looking ones leave.
        let looking = state.idle - state.asleep;
        let wake_taker = state.asleep > 0 && state.calls.len() > looking;
        let wake_warden = state.warden_asleep && state.must_wait();
        drop(state);
        if wake_taker {
            self.shared.work.notify_one();
        }
        if wake_warden {
            self.shared.watch.notify_one();
        }
        Ok(())
    }

    /// The next call: looked for for up to `spin` (yielding), then waited for. `None` once
    /// the queue is closed and empty.
    pub fn pop(&self, spin: Duration) -> Option<J> {
        let looking = Instant::now();
        let mut state = self.shared.lock();
        state.idle += 1;
        loop {
            if let Some(call) = state.calls.pop_front() {
                state.idle -= 1;
                return Some(call);
            }
            if state.closed {
                state.idle -= 1;
                return None;
            }
            if looking.elapsed() < spin {
                drop(state);
                std::thread::yield_now();
                state = self.shared.lock();
            } else {
                state.asleep += 1;
                state = self
                    .shared
                    .work
                    .wait(state)
                    .unwrap_or_else(|p| p.into_inner());
                state.asleep -= 1;
            }
        }
    }

    /// Calls waiting now.
    pub fn len(&self) -> usize {
        self.shared.lock().calls.len()
    }

    /// Whether no call waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<J: Waiting> Drop for Queue<J> {
    /// Closes the queue: takers get what is left, then `None`, and the warden ends.
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.work.notify_all();
        self.shared.watch.notify_all();
    }
}

impl<J> Shared<J> {
    fn lock(&self) -> MutexGuard<'_, State<J>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Answers the waiting calls whose end has come, every [`WARDEN_TICK`] while some wait for a
/// busy thread.
fn warden<J: Waiting>(shared: &Shared<J>) {
    let mut state = shared.lock();
    loop {
        if state.closed && state.calls.is_empty() {
            return;
        }
        if !state.closed && !state.must_wait() {
            state.warden_asleep = true;
            state = shared.watch.wait(state).unwrap_or_else(|p| p.into_inner());
            state.warden_asleep = false;
            continue;
        }
        let mut ended = Vec::new();
        let mut index = 0;
        while index < state.calls.len() {
            match state.calls[index].stop().check() {
                Some(reason) => {
                    let call = state.calls.remove(index).expect("index in range");
                    ended.push((call, reason));
                }
                None => index += 1,
            }
        }
        if !ended.is_empty() {
            // Answered without the lock: answering may take other locks (a connection's).
            drop(state);
            for (call, reason) in ended {
                call.stopped(reason);
            }
            state = shared.lock();
        }
        state = shared
            .watch
            .wait_timeout(state, WARDEN_TICK)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caller::Caller;
    use std::sync::mpsc;

    struct Call {
        stop: Stop,
        name: &'static str,
        answered: mpsc::Sender<(&'static str, Stopped, Instant)>,
    }

    impl Waiting for Call {
        fn stop(&self) -> &Stop {
            &self.stop
        }
        fn stopped(self, reason: Stopped) {
            let _ = self.answered.send((self.name, reason, Instant::now()));
        }
    }

    #[test]
    fn a_waiting_call_is_answered_at_its_end_and_the_others_keep_their_order() {
        let queue = Queue::new().unwrap();
        let (answered, answers) = mpsc::channel();
        let caller = Caller::process();
        let call = |name, limit_ms| Call {
            stop: Stop::new(&caller, Duration::from_millis(limit_ms)),
            name,
            answered: answered.clone(),
        };
        for (name, limit) in [("first", 10_000), ("short", 50), ("last", 10_000)] {
            assert!(queue.push(call(name, limit)).is_ok());
        }
        let (name, reason, at) = answers.recv_timeout(Duration::from_secs(1)).unwrap();
        assert_eq!((name, reason), ("short", Stopped::Limit));
        let late = at.saturating_duration_since(caller.received + Duration::from_millis(50));
        assert!(late < Duration::from_millis(20), "answered {late:?} late");
        let order: Vec<_> = std::iter::from_fn(|| {
            (!queue.is_empty()).then(|| queue.pop(Duration::ZERO).unwrap().name)
        })
        .collect();
        assert_eq!(order, ["first", "last"]);
    }

    #[test]
    fn a_taker_asleep_is_woken_by_the_next_call() {
        let queue: Arc<Queue<Call>> = Arc::new(Queue::new().unwrap());
        let (answered, _answers) = mpsc::channel();
        let taker = {
            let queue = queue.clone();
            std::thread::spawn(move || queue.pop(Duration::ZERO).map(|call| call.name))
        };
        while queue.shared.lock().asleep == 0 {
            std::thread::yield_now();
        }
        let call = Call {
            stop: Stop::new(&Caller::process(), Duration::from_secs(10)),
            name: "woken",
            answered,
        };
        assert!(queue.push(call).is_ok());
        assert_eq!(taker.join().unwrap(), Some("woken"));
    }

    #[test]
    fn a_cancelled_waiting_call_is_answered_at_once() {
        let queue = Queue::new().unwrap();
        let (answered, answers) = mpsc::channel();
        let caller = Caller::process();
        let call = Call {
            stop: Stop::new(&caller, Duration::from_secs(10)),
            name: "cancelled",
            answered,
        };
        assert!(queue.push(call).is_ok());
        caller.cancel.cancel();
        let (_, reason, _) = answers.recv_timeout(Duration::from_millis(100)).unwrap();
        assert_eq!(reason, Stopped::Cancelled);
    }
}
