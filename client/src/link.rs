//! The two ways messages travel after the handshake: the shared-memory ring or socket frames.

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::Mutex;

use megavisor_wire::doorbell::{Doorbell, Patience};
use megavisor_wire::frame;
use megavisor_wire::ring::{Consumer, Direction, Producer, PushError, Ring};
use megavisor_wire::waiting::{self, Waited};

use crate::error::{Error, ErrorKind, Result};

/// The ring's moving parts, each touched by one thread at a time.
pub(crate) struct RingLink {
    pub(crate) ring: Ring,
    pub(crate) producer: Mutex<Producer>,
    /// Held only by the receiving leader (see `Client`), so uncontended; with it, how long
    /// the leader looks for replies before it sleeps.
    pub(crate) consumer: Mutex<(Consumer, Patience)>,
    /// This client's end of the doorbell: rung to wake the supervisor, waited on to sleep.
    pub(crate) doorbell: Doorbell,
}

/// A connection's transport.
pub(crate) enum Link {
    Ring(RingLink),
    Socket { writer: Mutex<()> },
}

impl Link {
    /// Sends one encoded `ClientMessage`.
    pub(crate) fn send(&self, socket: &UnixStream, message: &[u8]) -> Result<()> {
        match self {
            Link::Ring(link) => {
                let mut producer = link.producer.lock().expect("producer lock");
                loop {
                    match producer.push(&link.ring, message) {
                        Ok(pushed) => {
                            drop(producer);
                            if pushed.wake {
                                link.doorbell.ring();
                            }
                            return Ok(());
                        }
                        // In-flight permits keep this rare: the supervisor is still copying
                        // out earlier requests. Wait a little, unless it has gone.
                        Err(PushError::Full) => {
                            if peer_gone_within(socket, 1) {
                                return Err(Error::connection_lost(
                                    "the supervisor closed the connection",
                                ));
                            }
                        }
                        Err(PushError::TooLarge { len, limit }) => {
                            return Err(Error::new(
                                ErrorKind::BadRequest,
                                format!(
                                    "call of {len} bytes exceeds the ring's limit of {limit} bytes (stdin or arguments too large)"
                                ),
                            ));
                        }
                        Err(PushError::Violation(v)) => return Err(Error::protocol(v)),
                    }
                }
            }
            Link::Socket { writer } => {
                let _guard = writer.lock().expect("writer lock");
                frame::write_bytes(socket, message, &[])?;
                Ok(())
            }
        }
    }

    /// Blocks until at least one encoded `ServerMessage` arrives and returns all that have.
    /// Called only by the receiving leader.
    pub(crate) fn receive(&self, socket: &UnixStream) -> Result<Vec<Vec<u8>>> {
        match self {
            Link::Ring(link) => receive_ring(link, socket),
            Link::Socket { .. } => Ok(vec![frame::read_bytes(socket, frame::MAX_FRAME_BYTES)?]),
        }
    }
}

fn receive_ring(link: &RingLink, socket: &UnixStream) -> Result<Vec<Vec<u8>>> {
    let mut guard = link.consumer.lock().expect("consumer lock");
    let (consumer, patience) = &mut *guard;
    let ring = &link.ring;
    let drain = || -> Result<Option<Vec<Vec<u8>>>> {
        let mut messages = Vec::new();
        while let Some(message) = consumer.pop(ring).map_err(Error::protocol)? {
            messages.push(message);
        }
        Ok((!messages.is_empty()).then_some(messages))
    };
    let waited = waiting::wait_for(
        ring,
        Direction::Reply,
        &link.doorbell,
        socket.as_fd(),
        patience,
        drain,
        || -1,
    )?;
    match waited {
        Waited::Found(messages) => Ok(messages),
        Waited::PeerGone => Err(Error::connection_lost(
            "the supervisor closed the connection",
        )),
    }
}

/// Waits up to `timeout_ms` for the supervisor's end of the socket to close. Nothing travels
/// on the socket once the ring is set up, so readable means closed.
fn peer_gone_within(socket: &UnixStream, timeout_ms: u8) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(socket.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::from(timeout_ms)) {
        Ok(0) | Err(nix::errno::Errno::EINTR) => false,
        Ok(_) | Err(_) => true,
    }
}
