//! One client connection: the handshake, then a reader that takes calls off the ring (or
//! the socket) and hands them to the guest threads, which write the replies back.
//!
//! The client is untrusted. Its messages are copied out of shared memory before they are
//! parsed, every index and length is checked (see `megavisor_wire::ring`), and any violation
//! closes this connection alone. A call is taken off the request ring only when the reply
//! ring is sure to have room for its reply, so a ring client that stops reading replies
//! stalls only itself and never blocks a guest thread. (A socket client that stops reading
//! holds the guest thread writing its reply until the socket's write timeout.)

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use megavisor_wire::PROTOCOL_VERSION;
use megavisor_wire::doorbell::{Doorbell, Patience, Wake};
use megavisor_wire::frame::{self, FrameError, MAX_FRAME_BYTES};
use megavisor_wire::proto::{self, client_message, server_message, welcome};
use megavisor_wire::ring::{Consumer, Direction, Layout, Producer, Ring};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use prost::Message;
use tracing::{debug, info, warn};

use megavisor_driver::convert;

use super::{Shared, executor};

/// How long a call may run on the reader thread before calls queued behind it are moved to
/// the guest pool.
const STRAGGLER_AFTER_US: u64 = 1_000;
/// Largest hello accepted (a real one is a few dozen bytes).
const HELLO_MAX_BYTES: usize = 4096;
/// How long a new connection has to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a reply may wait for a socket client to read before the client is dropped.
const SOCKET_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Who is on the other end, from `SO_PEERCRED`.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {} uid {} gid {}", self.pid, self.uid, self.gid)
    }
}

/// The server's half of a ring.
struct ServerRing {
    ring: Ring,
    /// Held by the reader, or by the straggler watch while the reader runs a call.
    consumer: Mutex<Consumer>,
    producer: Mutex<Producer>,
    wake_server: Doorbell,
    wake_client: Doorbell,
}

enum Link {
    Ring(ServerRing),
    Socket { writer: Mutex<()> },
}

/// What the reader and the guest threads share about one connection.
pub struct Connection {
    label: String,
    socket: UnixStream,
    link: Link,
    /// Messages taken from the client and not yet answered.
    unanswered: AtomicU32,
    /// When the reader started running a call itself (supervisor clock, µs); 0 when not.
    running_here_since: AtomicU64,
    /// Signalled when a call is answered (socket transport waits on it for credit).
    answered: Condvar,
    answered_lock: Mutex<()>,
    max_in_flight: u32,
    max_reply: usize,
}

/// Serves one accepted connection until the client leaves or misbehaves.
pub fn serve(shared: Arc<Shared>, socket: UnixStream, number: u64) {
    // This thread runs guest code too (calls that come alone), so it is filtered like the
    // guest threads before it reads a byte from the client.
    if let Err(e) = shared.filter.install_on_current_thread() {
        warn!(connection = number, "refusing the connection: {e}");
        return;
    }
    let peer = match getsockopt(&socket, PeerCredentials) {
        Ok(cred) => Peer {
            pid: cred.pid(),
            uid: cred.uid(),
            gid: cred.gid(),
        },
        Err(e) => {
            warn!(
                connection = number,
                "cannot read the peer's credentials: {e}"
            );
            return;
        }
    };
    let label = format!("client {number} ({peer})");
    let connection = match handshake(&shared, socket, peer, &label) {
        Ok(connection) => Arc::new(connection),
        Err(reason) => {
            info!("{label} refused: {reason}");
            return;
        }
    };
    info!("{label} connected");
    shared.stragglers.register(&connection);
    let ended = match &connection.link {
        Link::Ring(ring) => read_ring(&shared, &connection, ring),
        Link::Socket { .. } => read_socket(&shared, &connection),
    };
    match ended {
        Ok(()) => info!("{label} disconnected"),
        Err(violation) => warn!("{label} disconnected for a protocol violation: {violation}"),
    }
    let _ = connection.socket.shutdown(std::net::Shutdown::Both);
}

/// Tells a connecting client why it is refused (best effort: it may already be gone).
pub fn refuse(socket: &UnixStream, kind: proto::ErrorKind, message: &str) {
    let welcome = proto::Welcome {
        protocol_version: PROTOCOL_VERSION,
        outcome: Some(welcome::Outcome::Refused(proto::Failure::new(
            kind, message,
        ))),
    };
    let _ = frame::write(socket, &welcome, &[]);
}

/// Reads `Hello`, applies the peer policy and limits, sets up the transport, and answers.
fn handshake(
    shared: &Shared,
    socket: UnixStream,
    peer: Peer,
    label: &str,
) -> Result<Connection, String> {
    let refuse = |socket: &UnixStream, kind: proto::ErrorKind, message: String| {
        refuse(socket, kind, &message);
        message
    };
    if let Err(reason) = shared.config.peers.check(&peer) {
        return Err(refuse(&socket, proto::ErrorKind::NotAllowed, reason));
    }
    socket
        .set_read_timeout(Some(HELLO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let hello = frame::read::<proto::Hello>(&socket, "hello", HELLO_MAX_BYTES)
        .map_err(|e| e.to_string())?;
    socket.set_read_timeout(None).map_err(|e| e.to_string())?;
    if hello.protocol_version != PROTOCOL_VERSION {
        return Err(refuse(
            &socket,
            proto::ErrorKind::BadRequest,
            format!(
                "protocol version {} is not supported; this supervisor speaks {PROTOCOL_VERSION}",
                hello.protocol_version
            ),
        ));
    }
    if shared.draining() {
        return Err(refuse(
            &socket,
            proto::ErrorKind::ShuttingDown,
            "the supervisor is shutting down".to_owned(),
        ));
    }
    debug!("{label} says it is {:?}", hello.client);
    let config = &shared.config;
    let (link, accepted) = match proto::Transport::try_from(hello.transport) {
        Ok(proto::Transport::Ring) => {
            let (ring, geometry, memfd) = create_ring(config.ring).map_err(|e| {
                refuse(
                    &socket,
                    proto::ErrorKind::Internal,
                    format!("cannot create the ring: {e}"),
                )
            })?;
            let layout = *ring.ring.layout();
            let accepted = proto::Accepted {
                server: super::server_name(),
                ring: Some(geometry),
                max_in_flight: config.client_in_flight.min(layout.slots()),
                max_request_bytes: layout.max_message(Direction::Request) as u64,
                max_reply_bytes: layout.max_message(Direction::Reply) as u64,
            };
            let fds = [
                memfd.as_raw_fd(),
                ring.wake_server.as_raw_fd(),
                ring.wake_client.as_raw_fd(),
            ];
            // The memfd closes here once sent; the mapping and the client's copy keep it.
            welcome(&socket, &accepted, &fds)?;
            (Link::Ring(ring), accepted)
        }
        Ok(proto::Transport::Socket) => {
            socket
                .set_write_timeout(Some(SOCKET_WRITE_TIMEOUT))
                .map_err(|e| e.to_string())?;
            let accepted = proto::Accepted {
                server: super::server_name(),
                ring: None,
                max_in_flight: config.client_in_flight,
                max_request_bytes: MAX_FRAME_BYTES as u64,
                max_reply_bytes: MAX_FRAME_BYTES as u64,
            };
            welcome(&socket, &accepted, &[])?;
            let writer = Mutex::new(());
            (Link::Socket { writer }, accepted)
        }
        _ => {
            return Err(refuse(
                &socket,
                proto::ErrorKind::BadRequest,
                format!("unknown transport {}", hello.transport),
            ));
        }
    };
    Ok(Connection {
        label: label.to_owned(),
        socket,
        link,
        unanswered: AtomicU32::new(0),
        running_here_since: AtomicU64::new(0),
        answered: Condvar::new(),
        answered_lock: Mutex::new(()),
        max_in_flight: accepted.max_in_flight,
        max_reply: accepted.max_reply_bytes as usize,
    })
}

fn welcome(socket: &UnixStream, accepted: &proto::Accepted, fds: &[RawFd]) -> Result<(), String> {
    let welcome = proto::Welcome {
        protocol_version: PROTOCOL_VERSION,
        outcome: Some(welcome::Outcome::Accepted(accepted.clone())),
    };
    frame::write(socket, &welcome, fds).map_err(|e| e.to_string())
}

/// A memfd sized for `geometry`, sealed so that neither side can resize it (a shrink would
/// make the other side's accesses fault), mapped and initialised.
fn create_ring(
    geometry: proto::RingGeometry,
) -> std::io::Result<(ServerRing, proto::RingGeometry, memfd::Memfd)> {
    let layout = Layout::new(&geometry).map_err(std::io::Error::other)?;
    let memfd = memfd::MemfdOptions::default()
        .allow_sealing(true)
        .close_on_exec(true)
        .create("megavisor-ring")
        .map_err(std::io::Error::other)?;
    memfd.as_file().set_len(layout.total_bytes() as u64)?;
    memfd
        .add_seals(&[memfd::FileSeal::SealShrink, memfd::FileSeal::SealGrow])
        .and_then(|()| memfd.add_seal(memfd::FileSeal::SealSeal))
        .map_err(std::io::Error::other)?;
    let ring = Ring::map(memfd.as_file(), layout)?;
    ring.init_header(&geometry);
    Ok((
        ServerRing {
            ring,
            consumer: Mutex::new(Consumer::new(Direction::Request)),
            producer: Mutex::new(Producer::new(Direction::Reply)),
            wake_server: Doorbell::new()?,
            wake_client: Doorbell::new()?,
        },
        geometry,
        memfd,
    ))
}

/// Takes calls off the request ring until the client goes or breaks the rules.
fn read_ring(
    shared: &Arc<Shared>,
    connection: &Arc<Connection>,
    link: &ServerRing,
) -> Result<(), String> {
    let ring = &link.ring;
    let mut patience = Patience::default();
    // When the reader began looking for the next call, and how long it may look.
    let mut looking: Option<(Instant, Duration)> = None;
    loop {
        if let Some((bytes, more_pending)) = connection.take_call(link)? {
            if let Some((since, _)) = looking.take() {
                patience.found_while_looking(since.elapsed());
            }
            handle(shared, connection, &bytes, more_pending)?;
            continue;
        }
        // A client usually sends its next call right after its last reply: look for it a
        // little while (yielding the CPU) before paying for a sleep and a wake-up.
        let (since, budget) = *looking.get_or_insert_with(|| (Instant::now(), patience.budget()));
        if since.elapsed() < budget {
            std::thread::yield_now();
            continue;
        }
        ring.announce_sleep(Direction::Request);
        // Look once more after announcing: a request published before the flag was seen
        // would otherwise wait for the next one.
        if let Some((bytes, more_pending)) = connection.take_call(link)? {
            ring.cancel_sleep(Direction::Request);
            looking = None;
            patience.slept();
            handle(shared, connection, &bytes, more_pending)?;
            continue;
        }
        let wake = link.wake_server.wait(connection.socket_fd(), -1);
        ring.cancel_sleep(Direction::Request);
        looking = None;
        patience.slept();
        if wake == Wake::PeerGone {
            return Ok(());
        }
    }
}

/// Moves calls waiting behind a call that runs on the reader thread to the guest pool, so a
/// long call never holds up the calls its client sent after it. Called by the straggler
/// watch, once per millisecond at most.
pub fn dispatch_stragglers(shared: &Arc<Shared>, connection: &Arc<Connection>) {
    let Link::Ring(link) = &connection.link else {
        return;
    };
    let started = connection.running_here_since.load(Ordering::Acquire);
    if started == 0 || shared.clock_us().saturating_sub(started) < STRAGGLER_AFTER_US {
        return;
    }
    // At most a connection's worth per pass, so one client cannot keep the watch from the
    // others.
    for _ in 0..connection.max_in_flight {
        match connection.take_call(link) {
            Ok(Some((bytes, _))) => {
                if let Err(violation) = handle(shared, connection, &bytes, true) {
                    warn!("{}: {violation}", connection.label);
                    let _ = connection.socket.shutdown(std::net::Shutdown::Both);
                    return;
                }
            }
            Ok(None) => return,
            Err(violation) => {
                warn!("{}: {violation}", connection.label);
                let _ = connection.socket.shutdown(std::net::Shutdown::Both);
                return;
            }
        }
    }
}

/// Reads framed calls off the socket until the client goes.
fn read_socket(shared: &Arc<Shared>, connection: &Arc<Connection>) -> Result<(), String> {
    loop {
        {
            let mut guard = connection.answered_lock.lock().expect("answered lock");
            while connection.unanswered.load(Ordering::SeqCst) >= connection.max_in_flight {
                guard = connection.answered.wait(guard).expect("answered lock");
            }
        }
        match frame::read_bytes(&connection.socket, MAX_FRAME_BYTES) {
            Ok(bytes) => {
                connection.unanswered.fetch_add(1, Ordering::SeqCst);
                handle(shared, connection, &bytes, false)?;
            }
            Err(FrameError::Closed) => return Ok(()),
            Err(FrameError::Io(e)) => return Err(format!("socket: {e}")),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Decodes one client message (already counted in `unanswered`) and answers it, or hands it
/// to the guest threads, which answer it. `more_pending` says whether further calls from
/// this client are already waiting.
fn handle(
    shared: &Arc<Shared>,
    connection: &Arc<Connection>,
    bytes: &[u8],
    more_pending: bool,
) -> Result<(), String> {
    let message =
        proto::ClientMessage::decode(bytes).map_err(|e| format!("malformed message: {e}"))?;
    let id = message.id;
    let reply_failure = |failure: proto::Failure| {
        connection.answer(proto::ServerMessage {
            id,
            body: Some(server_message::Body::Failure(failure)),
        });
    };
    match message.body {
        Some(client_message::Body::ListTools(_)) => {
            let tools = convert::tool_list(&shared.runtime());
            connection.answer(proto::ServerMessage {
                id,
                body: Some(server_message::Body::Tools(tools)),
            });
        }
        Some(client_message::Body::Call(call)) => {
            if shared.draining() {
                reply_failure(proto::Failure::new(
                    proto::ErrorKind::ShuttingDown,
                    "the supervisor is shutting down (SIGTERM) and takes no new calls",
                ));
                return Ok(());
            }
            let runtime = shared.runtime();
            let request = match convert::request(&runtime, call) {
                Ok(request) => request,
                Err(failure) => {
                    reply_failure(*failure);
                    return Ok(());
                }
            };
            // A lone call runs right here: handing it to a guest thread would cost a
            // wake-up and a third busy thread. Calls that come together go to the pool so
            // they run in parallel.
            let run_here = matches!(connection.link, Link::Ring(_))
                && !more_pending
                && connection.unanswered.load(Ordering::SeqCst) == 1;
            let job_connection = connection.clone();
            let job: executor::Job = Box::new(move |permit| {
                let body = match super::run_call(&runtime, &request, permit) {
                    Some(Ok(output)) => server_message::Body::Output(convert::output(output)),
                    Some(Err(err)) => server_message::Body::Failure(convert::failure(&err)),
                    None => server_message::Body::Failure(proto::Failure::new(
                        proto::ErrorKind::Internal,
                        "the supervisor failed while running this call (a bug: see its log)",
                    )),
                };
                job_connection.answer(proto::ServerMessage {
                    id,
                    body: Some(body),
                });
            });
            let submitted = if run_here {
                connection
                    .running_here_since
                    .store(shared.clock_us().max(1), Ordering::SeqCst);
                let _watched = shared.stragglers.watch();
                let ran = shared.executor.run_here(job);
                connection.running_here_since.store(0, Ordering::SeqCst);
                ran
            } else {
                shared.executor.submit(job)
            };
            if let Err(busy) = submitted {
                reply_failure(proto::Failure::new(
                    proto::ErrorKind::Busy,
                    busy.to_string(),
                ));
            }
        }
        None => return Err(format!("message {id} has no body")),
    }
    Ok(())
}

impl Connection {
    /// Takes the next call off the request ring, if there is one and the reply ring is sure
    /// to have room for its reply; with it, whether more calls are waiting.
    fn take_call(&self, link: &ServerRing) -> Result<Option<(Vec<u8>, bool)>, String> {
        let ring = &link.ring;
        let mut consumer = link.consumer.lock().expect("request consumer lock");
        let unread_replies = link
            .producer
            .lock()
            .expect("reply producer lock")
            .in_use(ring)
            .map_err(|v| v.to_string())?;
        if self.unanswered.load(Ordering::SeqCst) + unread_replies >= self.max_in_flight {
            return Ok(None);
        }
        let Some(bytes) = consumer.pop(ring).map_err(|v| v.to_string())? else {
            return Ok(None);
        };
        // Counted while the consumer lock is held, so the reader and the straggler watch
        // never both pass the check above on the same count.
        self.unanswered.fetch_add(1, Ordering::SeqCst);
        let more_pending = consumer.available(ring).map_err(|v| v.to_string())? > 0;
        Ok(Some((bytes, more_pending)))
    }

    fn socket_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.socket.as_fd()
    }

    /// Sends the answer to a message taken from the client, and counts it answered.
    fn answer(&self, message: proto::ServerMessage) {
        self.reply(message);
        // After the reply is in the ring: until then the answered message still counts
        // against the client's in-flight limit, so the reply ring cannot overflow.
        self.unanswered.fetch_sub(1, Ordering::SeqCst);
        match &self.link {
            // The reader may have gone to sleep because the limit was reached; calls may be
            // waiting in the ring now that it is not.
            Link::Ring(link) => {
                if link.ring.consumer_sleeping(Direction::Request) {
                    link.wake_server.ring();
                }
            }
            Link::Socket { .. } => {
                let _guard = self.answered_lock.lock().expect("answered lock");
                self.answered.notify_one();
            }
        }
    }

    /// Sends a reply. A reply too big for the transport becomes a failure that says so; a
    /// transport that fails closes the connection (the reader then sees it go).
    fn reply(&self, message: proto::ServerMessage) {
        let mut bytes = message.encode_to_vec();
        if bytes.len() > self.max_reply {
            bytes = proto::ServerMessage {
                id: message.id,
                body: Some(server_message::Body::Failure(proto::Failure::new(
                    proto::ErrorKind::BadRequest,
                    format!(
                        "reply of {} bytes exceeds this connection's limit of {} bytes; lower the call's output_bytes limit",
                        bytes.len(),
                        self.max_reply
                    ),
                ))),
            }
            .encode_to_vec();
        }
        let sent = match &self.link {
            Link::Ring(link) => {
                let mut producer = link.producer.lock().expect("reply producer lock");
                match producer.push(&link.ring, &bytes) {
                    Ok(sleeping) => {
                        if sleeping {
                            link.wake_client.ring();
                        }
                        Ok(())
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
            Link::Socket { writer } => {
                let _guard = writer.lock().expect("socket writer lock");
                frame::write_bytes(&self.socket, &bytes, &[]).map_err(|e| e.to_string())
            }
        };
        if let Err(reason) = sent {
            debug!(
                "{}: reply {} not delivered: {reason}",
                self.label, message.id
            );
            let _ = self.socket.shutdown(std::net::Shutdown::Both);
        }
    }
}
