//! Wake-ups between the two sides of a ring: a socket pair, one end per side, rung only
//! when the other side has said it is about to sleep, so a busy pair never makes a system
//! call.
//!
//! A side rings the other by sending a byte on its own end, and sleeps until its own end is
//! readable. The two ends of a socket pair are separate open files, so neither side can
//! change the other's flags (an eventfd passed over the socket would share one
//! `O_NONBLOCK` flag with the peer, which could then make the other side block on it); and
//! every send and receive says `MSG_DONTWAIT`, so no flag matters at all: a full queue is
//! ringing already, an empty one has been answered. Sends also say `MSG_NOSIGNAL`: a peer
//! that has gone costs no `SIGPIPE` (which would kill a C client that never asked for it).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType, recv, send, socketpair};

/// One side's end of a doorbell.
#[derive(Debug)]
pub struct Doorbell {
    fd: OwnedFd,
}

/// What ended a wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The doorbell rang (or the wait timed out): look at the ring again.
    Rang,
    /// The peer's socket closed or failed, or it let go of its end of the doorbell: the
    /// peer is gone.
    PeerGone,
}

/// A new doorbell: this side's end, and the end to hand to the peer.
pub fn pair() -> io::Result<(Doorbell, Doorbell)> {
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    Ok((Doorbell { fd: ours }, Doorbell { fd: theirs }))
}

impl Doorbell {
    /// Wraps this side's end of a doorbell, received from the peer.
    pub fn from_fd(fd: OwnedFd) -> Self {
        Doorbell { fd }
    }

    /// Rings the other side. Never blocks and never raises `SIGPIPE`: a queue too full to
    /// take the byte is ringing already, and a peer that has gone has nobody to wake.
    pub fn ring(&self) {
        loop {
            let sent = send(
                self.fd.as_raw_fd(),
                &[1],
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            );
            match sent {
                Err(Errno::EINTR) => continue,
                _ => return,
            }
        }
    }

    /// Sleeps until the bell rings or `peer` (the connection's socket) hangs up, at most
    /// `timeout_ms` (-1: no limit). Resets the bell. Nothing travels on the socket once the
    /// ring is set up, so a readable socket also counts as the peer gone (closed or broken).
    pub fn wait(&self, peer: BorrowedFd<'_>, timeout_ms: i32) -> Wake {
        let mut fds = [
            PollFd::new(self.fd.as_fd(), PollFlags::POLLIN),
            PollFd::new(peer, PollFlags::POLLIN),
        ];
        let timeout = PollTimeout::try_from(timeout_ms).unwrap_or(PollTimeout::NONE);
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => return Wake::PeerGone,
        }
        let peer_events = fds[1].revents().unwrap_or(PollFlags::empty());
        let gone =
            PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL;
        if !self.reset() || peer_events.intersects(gone) {
            Wake::PeerGone
        } else {
            Wake::Rang
        }
    }

    /// Clears pending rings; false when the peer has let go of its end (end of file).
    /// Reads a bounded amount, so a peer that rings without pause costs its own connection
    /// a busy waiter, nothing more.
    pub fn reset(&self) -> bool {
        let mut rings = [0u8; 4096];
        for _ in 0..16 {
            match recv(self.fd.as_raw_fd(), &mut rings, MsgFlags::MSG_DONTWAIT) {
                Ok(0) => return false,
                Ok(n) if n < rings.len() => return true,
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(_) => return true,
            }
        }
        true
    }
}

impl AsFd for Doorbell {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Doorbell {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

/// How long a waiting side keeps looking for the next message before it sleeps on its
/// doorbell, learned from its recent waits.
///
/// Sleeping is expensive on the machines megavisor runs on (waking a thread on an idle
/// virtual CPU takes tens of microseconds), so while messages come quickly a waiter looks
/// for up to [`Patience::MAX`] first. But a waiter that looks is a runnable thread, and when
/// the CPUs are oversubscribed (more clients than cores) it takes CPU from the threads doing
/// the work. So once the recent average wait exceeds the budget, looking would not pay, and
/// the waiter sleeps at once.
///
/// A sleeping waiter cannot tell how soon a message would have come, so every
/// [`Patience::PROBE_EVERY`]th wait looks anyway: if the message comes within the budget,
/// messages are quick again (a client past its slow start, a machine no longer
/// oversubscribed) and looking resumes at once.
#[derive(Debug, Clone, Copy)]
pub struct Patience {
    average_wait_ns: u64,
    /// Waits left before the next probe, while sleeping at once.
    until_probe: u32,
    /// Whether the current wait is a probe.
    probing: bool,
}

impl Default for Patience {
    fn default() -> Self {
        Patience {
            average_wait_ns: 0,
            until_probe: Self::PROBE_EVERY,
            probing: false,
        }
    }
}

impl Patience {
    /// The longest a waiter looks before sleeping.
    pub const MAX: std::time::Duration = std::time::Duration::from_micros(50);
    /// While sleeping at once, one wait in this many looks anyway.
    pub const PROBE_EVERY: u32 = 16;

    /// How long to look before sleeping this time.
    pub fn budget(&mut self) -> std::time::Duration {
        if self.average_wait_ns <= Self::MAX.as_nanos() as u64 {
            return Self::MAX;
        }
        self.until_probe = self.until_probe.saturating_sub(1);
        if self.until_probe == 0 {
            self.until_probe = Self::PROBE_EVERY;
            self.probing = true;
            Self::MAX
        } else {
            std::time::Duration::ZERO
        }
    }

    /// Records a wait that ended while looking, after `waited`.
    pub fn found_while_looking(&mut self, waited: std::time::Duration) {
        let waited = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
        if std::mem::take(&mut self.probing) {
            self.average_wait_ns = waited;
        } else {
            self.average(waited);
        }
    }

    /// Records a wait that had to sleep: longer than the budget.
    pub fn slept(&mut self) {
        self.probing = false;
        self.average(2 * Self::MAX.as_nanos() as u64);
    }

    /// An exponential moving average over about the last eight waits.
    fn average(&mut self, wait_ns: u64) {
        self.average_wait_ns =
            (self.average_wait_ns.saturating_mul(7) / 8).saturating_add(wait_ns / 8);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn patience_looks_while_waits_are_short_and_stops_when_they_are_long() {
        let mut patience = Patience::default();
        assert_eq!(patience.budget(), Patience::MAX);
        for _ in 0..20 {
            patience.found_while_looking(Duration::from_micros(20));
        }
        assert_eq!(patience.budget(), Patience::MAX);
        for _ in 0..20 {
            patience.slept();
        }
        assert_eq!(patience.budget(), Duration::ZERO);
    }

    #[test]
    fn a_sleeping_waiter_probes_and_resumes_looking_when_messages_are_quick_again() {
        let mut patience = Patience::default();
        for _ in 0..20 {
            patience.slept();
        }
        let budgets: Vec<_> = (0..Patience::PROBE_EVERY)
            .map(|_| {
                let budget = patience.budget();
                if budget.is_zero() {
                    patience.slept();
                }
                budget
            })
            .collect();
        // Every wait sleeps at once but the last, which looks.
        assert!(budgets[..budgets.len() - 1].iter().all(Duration::is_zero));
        assert_eq!(budgets.last(), Some(&Patience::MAX));
        patience.found_while_looking(Duration::from_micros(5));
        assert_eq!(patience.budget(), Patience::MAX);
    }

    #[test]
    fn a_doorbell_wakes_its_waiter_and_notices_a_peer_let_go() {
        let (ours, theirs) = pair().unwrap();
        let (socket, _other) = std::os::unix::net::UnixStream::pair().unwrap();
        theirs.ring();
        theirs.ring();
        assert_eq!(ours.wait(socket.as_fd(), 1000), Wake::Rang);
        assert!(ours.reset(), "nothing pending, and the peer still there");
        drop(theirs);
        assert_eq!(ours.wait(socket.as_fd(), 1000), Wake::PeerGone);
        // Ringing a peer that has gone is no signal, no error.
        ours.ring();
    }

    #[test]
    fn neither_end_blocks_whatever_the_peer_does_to_its_own() {
        use nix::fcntl::{FcntlArg, OFlag, fcntl};
        let (ours, theirs) = pair().unwrap();
        // A hostile peer makes its own end blocking; that is its open file, not ours, and
        // ours is used with MSG_DONTWAIT anyway.
        fcntl(theirs.fd.as_fd(), FcntlArg::F_SETFL(OFlag::empty())).unwrap();
        fcntl(ours.fd.as_fd(), FcntlArg::F_SETFL(OFlag::empty())).unwrap();
        // It never reads: ringing it past full returns at once.
        for _ in 0..200_000 {
            ours.ring();
        }
        // It rings us, then stops: resetting returns, and so does resetting it empty.
        nix::unistd::write(&theirs.fd, &[1; 1000]).unwrap();
        assert!(ours.reset());
        assert!(ours.reset());
    }

    #[test]
    fn a_failed_probe_keeps_the_waiter_sleeping() {
        let mut patience = Patience::default();
        for _ in 0..20 {
            patience.slept();
        }
        for _ in 0..Patience::PROBE_EVERY {
            patience.budget();
        }
        patience.slept();
        assert_eq!(patience.budget(), Duration::ZERO);
    }
}
