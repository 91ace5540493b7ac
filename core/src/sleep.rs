//! A guest's sleep, bounded by its call's end.
//!
//! Epoch interruption reaches a guest only while it runs WebAssembly: a guest asleep in
//! WASI's `poll_oneoff` is in the host, where neither its time limit nor its caller giving
//! up could stop it (a `sleep(3600)` would hold its guest thread for an hour). This
//! `poll_oneoff` takes the common case itself, every subscription a relative clock (what
//! `sleep` and `nanosleep` ask), and sleeps in short steps, asking the call's [`Stop`]
//! between them. Anything else (file descriptors, absolute clocks) goes to WASI's own, whose
//! polls of the runtime's in-memory streams and of files return at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::{Caller, Extern, Linker, Memory, Trap};

use crate::epoch::{LOOK_EVERY, Stop, Stopped};

/// Bytes of a `subscription` and of an `event` (WASI preview 1).
const SUBSCRIPTION_BYTES: usize = 48;
const EVENT_BYTES: usize = 32;
/// `eventtype::clock`, and `subclockflags::subscription_clock_abstime`.
const CLOCK: u8 = 0;
const ABSTIME: u16 = 1;
/// `errno::fault`.
const FAULT: i32 = 21;

/// A store's view of when its call must stop.
pub(crate) trait Stoppable {
    /// When the call must stop, if it is a call (the warm-up instance is not).
    fn stop(&self) -> Option<&Stop>;
    /// Records why the call was stopped.
    fn stopped(&mut self, reason: Stopped);
}

/// Shadows `poll_oneoff` in `linker` (which already holds WASI); `wasi` is a linker with
/// WASI alone, whose `poll_oneoff` takes the cases this one does not.
pub(crate) fn link<T: Stoppable + Send + 'static>(
    linker: &mut Linker<T>,
    wasi: Linker<T>,
) -> wasmtime::Result<()> {
    let wasi = Arc::new(wasi);
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
            let Some(clocks) = relative_clocks(&memory, &caller, subscriptions, count) else {
                let original = wasi
                    .get(&mut caller, "wasi_snapshot_preview1", "poll_oneoff")?
                    .into_func()
                    .expect("WASI's poll_oneoff is a function");
                return original
                    .typed::<(u32, u32, u32, u32), i32>(&caller)?
                    .call(&mut caller, (subscriptions, events, count, events_written));
            };
            let shortest = clocks.iter().map(|(_, timeout)| *timeout).min();
            let started = Instant::now();
            loop {
                if let Some(reason) = caller.data().stop().and_then(Stop::check) {
                    caller.data_mut().stopped(reason);
                    return Err(Trap::Interrupt.into());
                }
                let left = shortest
                    .unwrap_or_default()
                    .saturating_sub(started.elapsed());
                if left.is_zero() {
                    break;
                }
                std::thread::sleep(left.min(LOOK_EVERY));
            }
            let slept = started.elapsed();
            let mut written = 0u32;
            for (userdata, _) in clocks.iter().filter(|(_, timeout)| *timeout <= slept) {
                let mut event = [0u8; EVENT_BYTES];
                event[..8].copy_from_slice(&userdata.to_le_bytes());
                event[10] = CLOCK;
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

/// The userdata and timeout of every subscription, if all are relative clocks.
fn relative_clocks<T>(
    memory: &Memory,
    caller: &Caller<'_, T>,
    subscriptions: u32,
    count: u32,
) -> Option<Vec<(u64, Duration)>> {
    if count == 0 {
        return None;
    }
    let bytes = memory.data(caller).get(subscriptions as usize..)?;
    let bytes = bytes.get(..count as usize * SUBSCRIPTION_BYTES)?;
    bytes
        .chunks_exact(SUBSCRIPTION_BYTES)
        .map(|subscription| {
            let u64_at = |at: usize| {
                u64::from_le_bytes(subscription[at..at + 8].try_into().expect("8 bytes"))
            };
            let flags = u16::from_le_bytes([subscription[40], subscription[41]]);
            (subscription[8] == CLOCK && flags & ABSTIME == 0)
                .then(|| (u64_at(0), Duration::from_nanos(u64_at(24))))
        })
        .collect()
}
