//! The one way either side of a ring waits for the other's next message: look a while,
//! then sleep on the doorbell. The supervisor waits for requests and a client for replies
//! the same way.

use std::os::fd::BorrowedFd;
use std::time::Instant;

use crate::doorbell::{Doorbell, Patience, Wake};
use crate::ring::{Direction, Ring};

/// How a wait ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Waited<T> {
    /// What `take` found.
    Found(T),
    /// The peer is gone, and nothing more was there.
    PeerGone,
}

/// Waits for what `take` finds on `ring`. It looks first, yielding the CPU between looks,
/// for as long as `patience` allows (the other side usually answers within microseconds,
/// and a sleep and a wake-up cost more); then it announces that it sleeps on `direction`,
/// looks once more (a message published before the announcement was seen would otherwise
/// wait for the next one), and sleeps on `doorbell` until it is rung, for at most
/// `sleep_ms()` at a time (-1: no limit), or until the peer behind `peer` goes, after
/// which it looks a last time (what the peer sent before it went is still valid).
pub fn wait_for<T, E>(
    ring: &Ring,
    direction: Direction,
    doorbell: &Doorbell,
    peer: BorrowedFd<'_>,
    patience: &mut Patience,
    mut take: impl FnMut() -> Result<Option<T>, E>,
    mut sleep_ms: impl FnMut() -> i32,
) -> Result<Waited<T>, E> {
    // A message already there costs no clock reading and says nothing about how long the
    // other side takes.
    if let Some(found) = take()? {
        return Ok(Waited::Found(found));
    }
    let started = Instant::now();
    let look_until = started + patience.budget();
    loop {
        if let Some(found) = take()? {
            patience.found_while_looking(started.elapsed());
            return Ok(Waited::Found(found));
        }
        if Instant::now() >= look_until {
            break;
        }
        // Yield rather than spin: on a busy machine the thread waited for may need this CPU.
        std::thread::yield_now();
    }
    loop {
        ring.announce_sleep(direction);
        if let Some(found) = take()? {
            ring.cancel_sleep(direction);
            patience.slept();
            return Ok(Waited::Found(found));
        }
        let wake = doorbell.wait(peer, sleep_ms());
        ring.cancel_sleep(direction);
        if let Some(found) = take()? {
            patience.slept();
            return Ok(Waited::Found(found));
        }
        if wake == Wake::PeerGone {
            return Ok(Waited::PeerGone);
        }
    }
}
