//! The two ways messages travel after the handshake: the shared-memory ring or socket frames.

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use megavisor_wire::doorbell::{Doorbell, Wake};
use megavisor_wire::frame;
use megavisor_wire::ring::{Consumer, Direction, Producer, PushError, Ring};

use crate::error::{Error, ErrorKind, Result};

/// How long a waiting receiver polls the reply ring before it sleeps on the doorbell. A call
/// of a trivial tool answers within this, so the common case never sleeps; an idle client
/// sleeps and costs no CPU.
const SPIN: Duration = Duration::from_micros(50);

/// The ring's moving parts, each touched by one thread at a time.
pub(crate) struct RingLink {
    pub(crate) ring: Ring,
    pub(crate) producer: Mutex<Producer>,
    /// Held only by the receiving leader (see `Client`), so uncontended.
    pub(crate) consumer: Mutex<Consumer>,
    pub(crate) wake_server: Doorbell,
    pub(crate) wake_client: Doorbell,
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
                        Ok(sleeping) => {
                            if sleeping {
                                link.wake_server.ring();
                            }
                            return Ok(());
                        }
                        // In-flight permits keep this rare: the supervisor is still copying
                        // out earlier requests.
                        Err(PushError::Full) => std::thread::yield_now(),
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
                let mut framed = Vec::with_capacity(4 + message.len());
                framed.extend_from_slice(&(message.len() as u32).to_le_bytes());
                framed.extend_from_slice(message);
                frame::write_bytes(socket, &framed, &[])?;
                Ok(())
            }
        }
    }

    /// Blocks until at least one encoded `ServerMessage` arrives and returns all that have.
    /// Called only by the receiving leader.
    pub(crate) fn receive(&self, socket: &UnixStream) -> Result<Vec<Vec<u8>>> {
        match self {
            Link::Ring(link) => receive_ring(link, socket),
            Link::Socket { .. } => Ok(vec![frame::read_bytes(socket)?.0]),
        }
    }
}

fn receive_ring(link: &RingLink, socket: &UnixStream) -> Result<Vec<Vec<u8>>> {
    let mut consumer = link.consumer.lock().expect("consumer lock");
    let ring = &link.ring;
    let drain = |consumer: &mut Consumer| -> Result<Vec<Vec<u8>>> {
        let mut messages = Vec::new();
        while let Some(message) = consumer.pop(ring).map_err(Error::protocol)? {
            messages.push(message);
        }
        Ok(messages)
    };
    let spin_until = Instant::now() + SPIN;
    loop {
        let messages = drain(&mut consumer)?;
        if !messages.is_empty() {
            return Ok(messages);
        }
        if Instant::now() < spin_until {
            std::hint::spin_loop();
            continue;
        }
        ring.announce_sleep(Direction::Reply);
        if consumer.available(ring).map_err(Error::protocol)? > 0 {
            ring.cancel_sleep(Direction::Reply);
            continue;
        }
        let wake = link.wake_client.wait(socket.as_fd(), -1);
        ring.cancel_sleep(Direction::Reply);
        if wake == Wake::PeerGone {
            // Replies written just before the supervisor went are still valid.
            let messages = drain(&mut consumer)?;
            if !messages.is_empty() {
                return Ok(messages);
            }
            return Err(Error::connection_lost(
                "the supervisor closed the connection",
            ));
        }
    }
}
