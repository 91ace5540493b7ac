//! A guest's sleep, bounded by its call's end.
//!
//! Epoch interruption reaches a guest only while it runs WebAssembly: a guest asleep in
//! WASI's `poll_oneoff` is in the host, where neither its time limit nor its caller giving
//! up could stop it (a `sleep(3600)` would hold its guest thread for an hour). This
//! `poll_oneoff` replaces WASI's: it sleeps in short steps, asking the call's [`Stop`]
//! between them.
//!
//! - A clock subscription is relative (`sleep`, `nanosleep`) or absolute on the monotonic
//!   or the realtime clock (`clock_nanosleep(TIMER_ABSTIME)`, which CPython's
//!   `time.sleep` uses). The guests' monotonic clock is [`GuestClock`], whose origin this
//!   module knows, so an absolute deadline turns back into a wait.
//! - A file descriptor subscription is ready at once: a call's stdio are in-memory
//!   streams and its mounts regular files, which never block.
//! - Other clocks (CPU time) are refused with `ENOTSUP`.

use std::sync::LazyLock;
use std::time::{Duration, Instant, SystemTime};

use wasmtime::{Caller, Extern, Linker, Memory, Trap};
use wasmtime_wasi::HostMonotonicClock;

use crate::epoch::{LOOK_EVERY, Stop, Stopped};

/// Bytes of a `subscription` and of an `event` (WASI preview 1).
const SUBSCRIPTION_BYTES: usize = 48;
const EVENT_BYTES: usize = 32;
/// `eventtype`: clock, fd_read, fd_write.
const CLOCK: u8 = 0;
const FD_READ: u8 = 1;
const FD_WRITE: u8 = 2;
/// `clockid`: realtime, monotonic.
const REALTIME: u32 = 0;
const MONOTONIC: u32 = 1;
/// `subclockflags::subscription_clock_abstime`.
const ABSTIME: u16 = 1;
/// `errno`: fault, inval, notsup.
const FAULT: i32 = 21;
const INVAL: i32 = 28;
const NOTSUP: i32 = 58;

/// Where every guest's monotonic clock starts: the first time a guest asks.
static ORIGIN: LazyLock<Instant> = LazyLock::new(Instant::now);

/// The monotonic clock of every guest: nanoseconds since [`ORIGIN`], the one origin this
/// `poll_oneoff` can turn an absolute deadline back into a wait from.
pub(crate) struct GuestClock;

impl HostMonotonicClock for GuestClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        u64::try_from(ORIGIN.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// One subscription, read.
enum Subscription {
    /// A clock that fires after this wait.
    Clock { userdata: u64, wait: Duration },
    /// A descriptor, ready at once.
    Descriptor { userdata: u64, kind: u8 },
}

/// A store's view of when its call must stop.
pub(crate) trait Stoppable {
    /// When the call must stop, if it is a call (the warm-up instance is not).
    fn stop(&self) -> Option<&Stop>;
    /// Records why the call was stopped.
    fn stopped(&mut self, reason: Stopped);
}

/// Shadows `poll_oneoff` in `linker` (which already holds WASI) with this module's.
pub(crate) fn link<T: Stoppable + Send + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    linker.func_wrap(
        "wasi_snapshot_preview1",
        "poll_oneoff",
        move |mut caller: Caller<'_, T>,
              subscriptions: u32,
              events: u32,
              count: u32,
              events_written: u32|
              -> wasmtime::Result<i32> {
            let Some(Extern::Memory(memory)) = caller.get_export("memory") else {
                return Ok(FAULT);
            };
            let subscriptions = match read_subscriptions(&memory, &caller, subscriptions, count) {
                Ok(subscriptions) => subscriptions,
                Err(errno) => return Ok(errno),
            };
            let ready_now = subscriptions
                .iter()
                .any(|s| matches!(s, Subscription::Descriptor { .. }));
            let shortest = subscriptions
                .iter()
                .filter_map(|s| match s {
                    Subscription::Clock { wait, .. } => Some(*wait),
                    Subscription::Descriptor { .. } => None,
                })
                .min()
                .unwrap_or_default();
            let started = Instant::now();
            if !ready_now {
                loop {
                    if let Some(reason) = caller.data().stop().and_then(Stop::check) {
                        caller.data_mut().stopped(reason);
                        return Err(Trap::Interrupt.into());
                    }
                    let left = shortest.saturating_sub(started.elapsed());
                    if left.is_zero() {
                        break;
                    }
                    std::thread::sleep(left.min(LOOK_EVERY));
                }
            }
            let slept = started.elapsed();
            let mut written = 0u32;
            for subscription in &subscriptions {
                let mut event = [0u8; EVENT_BYTES];
                match *subscription {
                    Subscription::Clock { userdata, wait } if wait <= slept => {
                        event[..8].copy_from_slice(&userdata.to_le_bytes());
                        event[10] = CLOCK;
                    }
                    Subscription::Descriptor { userdata, kind } => {
                        event[..8].copy_from_slice(&userdata.to_le_bytes());
                        event[10] = kind;
                        // One byte ready (for reading, or room for writing): enough for the
                        // guest to try, and learn the rest from the read or write itself.
                        event[16..24].copy_from_slice(&1u64.to_le_bytes());
                    }
                    Subscription::Clock { .. } => continue,
                }
                let at = events as usize + written as usize * EVENT_BYTES;
                if memory.write(&mut caller, at, &event).is_err() {
                    return Ok(FAULT);
                }
                written += 1;
            }
            if memory
                .write(&mut caller, events_written as usize, &written.to_le_bytes())
                .is_err()
            {
                return Ok(FAULT);
            }
            Ok(0)
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Every subscription of the call, or the errno that refuses them.
fn read_subscriptions<T>(
    memory: &Memory,
    caller: &Caller<'_, T>,
    subscriptions: u32,
    count: u32,
) -> std::result::Result<Vec<Subscription>, i32> {
    if count == 0 {
        return Err(INVAL);
    }
    let bytes = memory
        .data(caller)
        .get(subscriptions as usize..)
        .and_then(|b| b.get(..count as usize * SUBSCRIPTION_BYTES))
        .ok_or(FAULT)?;
    bytes
        .chunks_exact(SUBSCRIPTION_BYTES)
        .map(|subscription| {
            let u64_at = |at: usize| {
                u64::from_le_bytes(subscription[at..at + 8].try_into().expect("8 bytes"))
            };
            let userdata = u64_at(0);
            match subscription[8] {
                CLOCK => {
                    let clock = u32::from_le_bytes(subscription[16..20].try_into().expect("4"));
                    let timeout = Duration::from_nanos(u64_at(24));
                    let flags = u16::from_le_bytes([subscription[40], subscription[41]]);
                    let wait = if flags & ABSTIME == 0 {
                        timeout
                    } else {
                        match clock {
                            MONOTONIC => {
                                (*ORIGIN + timeout).saturating_duration_since(Instant::now())
                            }
                            REALTIME => (SystemTime::UNIX_EPOCH + timeout)
                                .duration_since(SystemTime::now())
                                .unwrap_or_default(),
                            _ => return Err(NOTSUP),
                        }
                    };
                    Ok(Subscription::Clock { userdata, wait })
                }
                kind @ (FD_READ | FD_WRITE) => Ok(Subscription::Descriptor { userdata, kind }),
                _ => Err(INVAL),
            }
        })
        .collect()
}
