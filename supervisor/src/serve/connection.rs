//! One client connection: the handshake, then a reader that takes calls off the ring (or
//! the socket) and hands them to the guest threads, whose replies go back the same way.
//!
//! The client is untrusted, and so is everything it was handed. Its messages are copied out
//! of shared memory before they are parsed, every index and length is checked (see
//! `megavisor_wire::ring`), and any violation closes this connection alone. The supervisor
//! never blocks on anything the client can touch:
//! - a ring reply is pushed only into room the client's in-flight limit guarantees (a client
//!   that breaks the limit is disconnected), and its doorbell is the supervisor's own end
//!   of a socket pair, rung without blocking after the reply ring's lock is released;
//! - a socket reply is queued to the connection's writer thread, which gives the client
//!   `--reply-timeout` to take it and disconnects it otherwise: a reader that stops reading
//!   never holds a guest thread;
//! - the hello (`--hello-timeout`), and each socket frame once its length has come
//!   (`--reply-timeout`), have a deadline for the whole of them, however slowly they drip.
//!
//! When the connection ends, however it ends, every call still running for it is stopped.

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use megavisor_core::{Caller, CancelToken, Credentials, Identity};
use megavisor_wire::PROTOCOL_VERSION;
use megavisor_wire::doorbell::{self, Doorbell, Patience};
use megavisor_wire::frame::{self, FrameError};
use megavisor_wire::proto::{self, client_message, server_message, welcome};
use megavisor_wire::ring::{Consumer, Direction, Layout, Producer, Ring};
use megavisor_wire::waiting::{self, Waited};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use prost::Message;
use tracing::{debug, info, warn};

use megavisor_driver::convert;

use super::budget::{Budget, Hold};
use super::{Shared, fit};

/// How long a call may run on the reader thread before calls queued behind it are moved to
/// the guest pool.
const STRAGGLER_AFTER_US: u64 = 1_000;
/// Largest hello accepted (a real one is a few dozen bytes).
const HELLO_MAX_BYTES: usize = 4096;
/// How often a sleeping ring reader looks whether its client has taken the spilled replies
/// whose memory it still holds, to give that memory back.
const RECLAIM_EVERY_MS: i32 = 50;
/// Bytes of a refused socket frame read to learn its message id (field 1 comes first).
const ID_BYTES: usize = 16;

/// Who is on the other end, from `SO_PEERCRED` and `SO_PEERGROUPS`.
#[derive(Debug, Clone)]
pub struct Peer {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

impl Peer {
    /// The peer of a Unix socket.
    pub fn of(socket: BorrowedFd<'_>) -> std::io::Result<Self> {
        let cred = getsockopt(&socket, PeerCredentials)?;
        Ok(Peer {
            pid: cred.pid(),
            uid: cred.uid(),
            gid: cred.gid(),
            groups: peer_groups(socket)?,
        })
    }

    /// The identity its calls run with.
    pub fn identity(&self) -> Identity {
        Identity::Peer(Credentials {
            uid: self.uid,
            gid: self.gid,
            groups: self.groups.as_slice().into(),
        })
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {} uid {} gid {}", self.pid, self.uid, self.gid)
    }
}

/// The peer's supplementary groups, as the kernel recorded them when it connected.
fn peer_groups(socket: BorrowedFd<'_>) -> std::io::Result<Vec<u32>> {
    let mut groups = vec![0 as libc::gid_t; 64];
    loop {
        let mut len = (groups.len() * size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: the buffer holds `len` bytes; the kernel writes at most that many and
        // says how many it wrote (or needed, with ERANGE).
        let rc = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let count = len as usize / size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(count);
            return Ok(groups);
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ERANGE) || count <= groups.len() {
            return Err(err);
        }
        groups.resize(count, 0);
    }
}

/// The server's half of a ring.
struct ServerRing {
    ring: Ring,
    /// Held by the reader, or by the straggler watch while the reader runs a call.
    consumer: Mutex<Consumer>,
    replies: Mutex<Replies>,
    /// The supervisor's end of the doorbell: rung to wake the client, waited on to sleep.
    doorbell: Doorbell,
    /// The ring's slots, counted against the budget while the ring exists.
    _slots: Hold,
}

/// The reply ring's producer, and the spilled replies the client has not taken yet.
struct Replies {
    producer: Producer,
    /// Index and budget of each spilled reply whose memory is still held.
    spilled: VecDeque<(u32, Hold)>,
}

impl Replies {
    /// Gives back the memory of the spilled replies the client has taken.
    fn reclaim(&mut self, ring: &Ring) -> Result<(), String> {
        while let Some((index, _)) = self.spilled.front() {
            if !self
                .producer
                .consumed(ring, *index)
                .map_err(|v| v.to_string())?
            {
                break;
            }
            ring.discard_spill(Direction::Reply, *index);
            self.spilled.pop_front();
        }
        Ok(())
    }
}

/// A socket connection's replies. A reply is sent at once, without waiting, when nothing is
/// queued before it; what the socket does not take at once (and what comes after it) goes
/// to the connection's writer thread, which gives the client `--reply-timeout` per reply.
struct SocketWriter {
    state: Mutex<Writing>,
    /// Signalled when a reply is queued or the connection goes.
    queued: Condvar,
}

#[derive(Default)]
struct Writing {
    /// Replies waiting for the writer thread: bytes, how much of each frame went already,
    /// and the budget each holds until it is gone.
    queue: VecDeque<(Vec<u8>, usize, Hold)>,
    /// The writer thread has a reply in hand.
    busy: bool,
    /// The connection has gone: the writer thread ends.
    closed: bool,
}

enum ReplyPath {
    Ring(ServerRing),
    Socket(Arc<SocketWriter>),
}

/// What the reader and the guest threads share about one connection.
pub struct Connection {
    label: String,
    socket: UnixStream,
    link: ReplyPath,
    /// Whose calls these are (the peer's credentials as it connected).
    identity: Identity,
    budget: Arc<Budget>,
    /// Calls and tool lists taken from the client and not yet answered.
    unanswered: AtomicU32,
    /// When the reader started running a call itself (supervisor clock, µs); 0 when not.
    running_here_since: AtomicU64,
    max_in_flight: u32,
    max_request: usize,
    max_reply: usize,
    /// How long the socket client may take to send a frame's body, or to take a reply.
    patience: Duration,
    /// Cancelled when the connection ends: its calls' tokens are children of it.
    gone: CancelToken,
    /// The cancel tokens of the calls in flight, by message id, for `Cancel` messages (at
    /// most the in-flight limit of them: a scan beats hashing).
    calls: Mutex<Vec<(u64, CancelToken)>>,
    /// The sessions this connection opened: they end with it, so a client that goes away
    /// cannot leave them holding pool permits until they expire.
    sessions: Mutex<Vec<u64>>,
}

impl Drop for Connection {
    /// The last of the connection (its reader, or the last call answering it) lets the
    /// writer thread go.
    fn drop(&mut self) {
        if let ReplyPath::Socket(writer) = &self.link {
            writer.close();
        }
    }
}

/// Serves one accepted connection until the client leaves or misbehaves.
pub fn serve(shared: Arc<Shared>, socket: UnixStream, number: u64) {
    // This thread runs guest code too (calls that come alone), so it is filtered like the
    // guest threads before it reads a byte from the client.
    if let Err(e) = shared.filter.install_on_current_thread() {
        warn!(connection = number, "refusing the connection: {e}");
        return;
    }
    let peer = match Peer::of(socket.as_fd()) {
        Ok(peer) => peer,
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
        ReplyPath::Ring(ring) => read_ring(&shared, &connection, ring),
        ReplyPath::Socket(_) => read_socket(&shared, &connection),
    };
    // Whatever still runs for this client is stopped: nobody is left to answer.
    connection.gone.cancel();
    let sessions = std::mem::take(&mut *connection.sessions.lock().expect("sessions lock"));
    for session in sessions {
        // Gone already (closed by the client, expired) is fine: it is gone either way.
        let _ = shared
            .runtime()
            .close_session(session, &connection.caller(Instant::now()));
    }
    match ended {
        Ok(()) => info!("{label} disconnected"),
        Err(violation) => warn!("{label} disconnected for a protocol violation: {violation}"),
    }
    let _ = connection.socket.shutdown(std::net::Shutdown::Both);
}

/// Tells a connecting client why it is refused (best effort: it may already be gone, and it
/// gets a moment to take the answer, no more).
pub fn refuse(socket: &UnixStream, kind: proto::ErrorKind, message: &str) {
    let welcome = proto::Welcome {
        protocol_version: PROTOCOL_VERSION,
        outcome: Some(welcome::Outcome::Refused(proto::Failure::new(
            kind, message,
        ))),
    };
    let deadline = Instant::now() + Duration::from_secs(1);
    let _ = frame::write_bytes_by(socket, &welcome.encode_to_vec(), &[], Some(deadline));
    // Refused before its hello was read: closing on it would reset the connection, and the
    // client could lose this answer and see only a lost connection.
    let _ = socket.shutdown(std::net::Shutdown::Write);
    frame::drain_until_closed(socket, HELLO_MAX_BYTES, deadline);
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
    let hello = frame::read_by::<proto::Hello>(
        &socket,
        "hello",
        HELLO_MAX_BYTES,
        Instant::now() + shared.config.hello_timeout,
    )
    .map_err(|e| e.to_string())?;
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
    let layout = Layout::new(&config.ring).map_err(|e| e.to_string())?;
    let max_request = layout.max_message(Direction::Request);
    let max_reply = layout.max_message(Direction::Reply);
    let (link, accepted) = match proto::Transport::try_from(hello.transport) {
        Ok(proto::Transport::Ring) => {
            let slots = ring_slot_bytes(&layout);
            let Some(hold) = shared.budget.try_hold(slots) else {
                let refusal = shared.budget.refusal(slots);
                return Err(refuse(&socket, proto::ErrorKind::Busy, refusal));
            };
            let (ring, memfd, client_end) = create_ring(config.ring, hold).map_err(|e| {
                refuse(
                    &socket,
                    proto::ErrorKind::Internal,
                    format!("cannot create the ring: {e}"),
                )
            })?;
            let accepted = proto::Accepted {
                server: super::server_name(),
                ring: Some(config.ring),
                max_in_flight: config.client_in_flight.min(layout.slots()),
                max_request_bytes: max_request as u64,
                max_reply_bytes: max_reply as u64,
            };
            let fds = [memfd.as_raw_fd(), client_end.as_raw_fd()];
            // The memfd and the client's end close here once sent: the client's copy is
            // the only one left of its end, and the mapping keeps the ring.
            welcome(&socket, &accepted, &fds, config.hello_timeout)?;
            (ReplyPath::Ring(ring), accepted)
        }
        Ok(proto::Transport::Socket) => {
            let accepted = proto::Accepted {
                server: super::server_name(),
                ring: None,
                max_in_flight: config.client_in_flight,
                max_request_bytes: max_request as u64,
                max_reply_bytes: max_reply as u64,
            };
            welcome(&socket, &accepted, &[], config.hello_timeout)?;
            let writer =
                start_writer(&socket, label, config.reply_timeout).map_err(|e| e.to_string())?;
            (ReplyPath::Socket(writer), accepted)
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
        identity: peer.identity(),
        budget: shared.budget.clone(),
        unanswered: AtomicU32::new(0),
        running_here_since: AtomicU64::new(0),
        max_in_flight: accepted.max_in_flight,
        max_request,
        max_reply,
        patience: config.reply_timeout,
        gone: CancelToken::new(),
        calls: Mutex::new(Vec::new()),
        sessions: Mutex::new(Vec::new()),
    })
}

fn welcome(
    socket: &UnixStream,
    accepted: &proto::Accepted,
    fds: &[RawFd],
    timeout: Duration,
) -> Result<(), String> {
    let welcome = proto::Welcome {
        protocol_version: PROTOCOL_VERSION,
        outcome: Some(welcome::Outcome::Accepted(accepted.clone())),
    };
    let deadline = Instant::now() + timeout;
    frame::write_bytes_by(socket, &welcome.encode_to_vec(), fds, Some(deadline))
        .map_err(|e| e.to_string())
}

/// The bytes of a ring that are resident from its first calls: the header page and both
/// rings' slots (spill space is counted as replies use it).
fn ring_slot_bytes(layout: &Layout) -> usize {
    4096 + 2 * layout.slots() as usize * layout.slot_bytes()
}

/// A memfd sized for `geometry`, sealed so that neither side can resize it (a shrink would
/// make the other side's accesses fault), mapped and initialised; with it, the client's end
/// of the doorbell.
fn create_ring(
    geometry: proto::RingGeometry,
    slots: Hold,
) -> std::io::Result<(ServerRing, memfd::Memfd, Doorbell)> {
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
    let (doorbell, client_end) = doorbell::pair()?;
    Ok((
        ServerRing {
            ring,
            consumer: Mutex::new(Consumer::new(Direction::Request)),
            replies: Mutex::new(Replies {
                producer: Producer::new(Direction::Reply),
                spilled: VecDeque::new(),
            }),
            doorbell,
            _slots: slots,
        },
        memfd,
        client_end,
    ))
}

/// Starts the thread that writes what a socket connection's replies could not send at once,
/// each by its deadline; a client too slow to take one is disconnected (and the replies
/// queued behind it dropped).
fn start_writer(
    socket: &UnixStream,
    label: &str,
    timeout: Duration,
) -> std::io::Result<Arc<SocketWriter>> {
    let writer = Arc::new(SocketWriter {
        state: Mutex::new(Writing::default()),
        queued: Condvar::new(),
    });
    let socket = socket.try_clone()?;
    let label = label.to_owned();
    let thread_writer = writer.clone();
    std::thread::Builder::new()
        .name("mv-reply-writer".into())
        .spawn(move || {
            let writer = thread_writer;
            let mut state = writer.state.lock().expect("writer lock");
            loop {
                let Some((bytes, sent, held)) = state.queue.pop_front() else {
                    state.busy = false;
                    if state.closed {
                        return;
                    }
                    state = writer.queued.wait(state).expect("writer lock");
                    continue;
                };
                state.busy = true;
                drop(state);
                let deadline = Instant::now() + timeout;
                let written = frame::finish_by(&socket, &bytes, sent, deadline);
                drop(held);
                state = writer.state.lock().expect("writer lock");
                if let Err(e) = written {
                    info!("{label}: a reply could not be delivered ({e}); disconnecting");
                    let _ = socket.shutdown(std::net::Shutdown::Both);
                    state.queue.clear();
                    state.closed = true;
                }
            }
        })?;
    Ok(writer)
}

impl SocketWriter {
    /// Sends `bytes` (one reply), at once if it can, else through the writer thread.
    fn send(
        &self,
        socket: &UnixStream,
        bytes: Vec<u8>,
        budget: &Arc<Budget>,
    ) -> Result<(), String> {
        let mut state = self.state.lock().expect("writer lock");
        if state.closed {
            return Err("the reply writer has stopped".to_owned());
        }
        let mut sent = 0;
        if !state.busy && state.queue.is_empty() {
            // Nothing before it: the socket takes it now, or takes part of it.
            sent = frame::write_bytes_now(socket, &bytes).map_err(|e| e.to_string())?;
            if sent == frame::frame_len(&bytes) {
                return Ok(());
            }
        }
        let held = budget.hold(bytes.len());
        state.queue.push_back((bytes, sent, held));
        drop(state);
        self.queued.notify_one();
        Ok(())
    }

    /// Lets the writer thread end once it has written what is queued.
    fn close(&self) {
        self.state.lock().expect("writer lock").closed = true;
        self.queued.notify_one();
    }
}

/// A message taken from the client.
struct Taken {
    bytes: Vec<u8>,
    /// Whether more of its messages are waiting already.
    more_pending: bool,
    /// Its replies it has not read yet (on the ring), which count against its limit.
    unread_replies: u32,
}

/// Takes calls off the request ring until the client goes or breaks the rules.
fn read_ring(
    shared: &Arc<Shared>,
    connection: &Arc<Connection>,
    link: &ServerRing,
) -> Result<(), String> {
    let mut patience = Patience::default();
    loop {
        // Spilled replies still held: wake now and then to give their memory back once
        // the client has taken them.
        let sleep_ms = || {
            let replies = link.replies.lock().expect("reply ring lock");
            if replies.spilled.is_empty() {
                -1
            } else {
                RECLAIM_EVERY_MS
            }
        };
        let waited = waiting::wait_for(
            &link.ring,
            Direction::Request,
            &link.doorbell,
            connection.socket.as_fd(),
            &mut patience,
            || connection.take_message(link),
            sleep_ms,
        )?;
        match waited {
            Waited::Found(taken) => handle(shared, connection, taken, None)?,
            Waited::PeerGone => return Ok(()),
        }
    }
}

/// Moves calls waiting behind a call that runs on the reader thread to the guest pool, so a
/// long call never holds up the calls its client sent after it (nor its `Cancel`s); and
/// stops that call if its client has gone meanwhile. Called by the straggler watch, once
/// per millisecond at most.
pub fn dispatch_stragglers(shared: &Arc<Shared>, connection: &Arc<Connection>) {
    let ReplyPath::Ring(link) = &connection.link else {
        return;
    };
    let started = connection.running_here_since.load(Ordering::Acquire);
    if started == 0 || shared.clock_us().saturating_sub(started) < STRAGGLER_AFTER_US {
        return;
    }
    if hung_up(connection.socket.as_fd()) {
        connection.gone.cancel();
        return;
    }
    // At most a connection's worth per pass, so one client cannot keep the watch from the
    // others.
    for _ in 0..connection.max_in_flight {
        match connection.take_message(link) {
            Ok(Some(taken)) => {
                let taken = Taken {
                    more_pending: true,
                    ..taken
                };
                if let Err(violation) = handle(shared, connection, taken, None) {
                    warn!("{}: {violation}", connection.label);
                    connection.gone.cancel();
                    let _ = connection.socket.shutdown(std::net::Shutdown::Both);
                    return;
                }
            }
            Ok(None) => return,
            Err(violation) => {
                warn!("{}: {violation}", connection.label);
                connection.gone.cancel();
                let _ = connection.socket.shutdown(std::net::Shutdown::Both);
                return;
            }
        }
    }
}

/// Whether the client's end of the socket has closed (nothing else travels on it).
fn hung_up(socket: BorrowedFd<'_>) -> bool {
    let mut fds = [PollFd::new(socket, PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
}

/// Reads framed calls off the socket until the client goes.
fn read_socket(shared: &Arc<Shared>, connection: &Arc<Connection>) -> Result<(), String> {
    let socket = &connection.socket;
    loop {
        let len = match frame::read_len(socket) {
            Ok(len) => len,
            Err(FrameError::Closed) => return Ok(()),
            Err(e) => return Err(e.to_string()),
        };
        if len > connection.max_request {
            return Err(format!(
                "a frame of {len} bytes exceeds this connection's limit of {} bytes",
                connection.max_request
            ));
        }
        let deadline = Instant::now() + connection.patience;
        let hold = shared.budget.try_hold(len);
        let refused = hold.is_none() && len > ID_BYTES;
        let bytes = if refused {
            frame::discard_body(socket, len, ID_BYTES, deadline)
        } else {
            frame::read_body(socket, len, deadline)
        };
        let bytes = match bytes {
            Ok(bytes) => bytes,
            Err(FrameError::Closed) => return Ok(()),
            Err(e) => return Err(e.to_string()),
        };
        if refused {
            connection.refuse_unread(&bytes, shared.budget.refusal(len))?;
            continue;
        }
        let taken = Taken {
            bytes,
            more_pending: false,
            unread_replies: 0,
        };
        handle(shared, connection, taken, hold)?;
    }
}

/// Decodes one client message and answers it, or hands it to the guest threads, which
/// answer it. `hold` is the budget its bytes hold already (socket frames), if any.
fn handle(
    shared: &Arc<Shared>,
    connection: &Arc<Connection>,
    taken: Taken,
    hold: Option<Hold>,
) -> Result<(), String> {
    let Taken {
        bytes,
        more_pending,
        unread_replies,
    } = taken;
    let received = Instant::now();
    let message = proto::ClientMessage::decode(bytes.as_slice())
        .map_err(|e| format!("malformed message: {e}"))?;
    let id = message.id;
    let call = match message.body {
        None => return Err(format!("message {id} has no body")),
        Some(client_message::Body::Cancel(_)) => {
            let calls = connection.calls.lock().expect("calls lock");
            if let Some((_, call)) = calls.iter().find(|(call, _)| *call == id) {
                call.cancel();
            }
            return Ok(());
        }
        Some(client_message::Body::ListTools(_)) => {
            connection.admit(unread_replies)?;
            let tools = convert::tool_list(&shared.runtime());
            return connection.answer(id, server_message::Body::Tools(tools));
        }
        Some(client_message::Body::OpenSession(open)) => {
            connection.admit(unread_replies)?;
            // Opening instantiates once (well under a millisecond), so it is done here.
            let caller = connection.caller(received);
            let opened = shared.runtime().open_session(&open.tool, &caller);
            if let Ok(session) = opened {
                connection
                    .sessions
                    .lock()
                    .expect("sessions lock")
                    .push(session);
            }
            return connection.answer(id, session_reply(opened));
        }
        Some(client_message::Body::CloseSession(close)) => {
            connection.admit(unread_replies)?;
            let caller = connection.caller(received);
            let closed = shared.runtime().close_session(close.session, &caller);
            connection
                .sessions
                .lock()
                .expect("sessions lock")
                .retain(|s| *s != close.session);
            return connection.answer(id, session_reply(closed.map(|()| close.session)));
        }
        Some(client_message::Body::Call(call)) => call,
    };
    connection.admit(unread_replies)?;
    let refuse = |kind, message: String| {
        connection.answer(
            id,
            server_message::Body::Failure(proto::Failure::new(kind, message)),
        )
    };
    if shared.draining() {
        return refuse(
            proto::ErrorKind::ShuttingDown,
            "the supervisor is shutting down (SIGTERM) and takes no new calls".to_owned(),
        );
    }
    let Some(hold) = hold.or_else(|| shared.budget.try_hold(bytes.len())) else {
        return refuse(proto::ErrorKind::Busy, shared.budget.refusal(bytes.len()));
    };
    drop(bytes);
    let runtime = shared.runtime();
    let request = match convert::request(&runtime, call) {
        Ok(request) => request,
        Err(failure) => return connection.answer(id, server_message::Body::Failure(*failure)),
    };
    let cancel = connection.gone.child();
    connection
        .calls
        .lock()
        .expect("calls lock")
        .push((id, cancel.clone()));
    let caller = Caller {
        cancel,
        ..connection.caller(received)
    };
    // A lone call runs right here: handing it to a guest thread would cost a wake-up and a
    // third busy thread. Calls that come together go to the pool so they run in parallel.
    let run_here = matches!(connection.link, ReplyPath::Ring(_))
        && !more_pending
        && connection.unanswered.load(Ordering::SeqCst) == 1;
    let job_connection = connection.clone();
    let job = super::call_job(runtime, request, caller, move |outcome| {
        let body = match outcome {
            Some(Ok(output)) => server_message::Body::Output(convert::output(output)),
            Some(Err(err)) => server_message::Body::Failure(convert::failure(&err)),
            None => server_message::Body::Failure(proto::Failure::new(
                proto::ErrorKind::Internal,
                "the supervisor failed while running this call (a bug: see its log)",
            )),
        };
        drop(hold);
        job_connection.forget_call(id);
        // A failed reply has already closed the connection; nothing more to do here.
        let _ = job_connection.answer(id, body);
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
        connection.forget_call(id);
        return refuse(proto::ErrorKind::Busy, busy.to_string());
    }
    Ok(())
}

/// The answer to opening or closing a session: its id, or why not.
fn session_reply(outcome: megavisor_core::Result<u64>) -> server_message::Body {
    match outcome {
        Ok(session) => server_message::Body::Session(proto::SessionOpened { session }),
        Err(err) => server_message::Body::Failure(convert::failure(&err)),
    }
}

impl Connection {
    /// This connection's peer as the caller of a message received at `received`, given up
    /// on when the connection ends.
    fn caller(&self, received: Instant) -> Caller {
        Caller {
            identity: self.identity.clone(),
            received,
            deadline: None,
            cancel: self.gone.child(),
        }
    }

    /// Takes the next message off the request ring, if there is one; with it, whether more
    /// are waiting and how many replies the client has not read.
    fn take_message(&self, link: &ServerRing) -> Result<Option<Taken>, String> {
        let ring = &link.ring;
        let mut consumer = link.consumer.lock().expect("request consumer lock");
        let unread_replies = {
            let mut replies = link.replies.lock().expect("reply ring lock");
            replies.reclaim(ring)?;
            replies.producer.in_use(ring).map_err(|v| v.to_string())?
        };
        let Some(bytes) = consumer.pop(ring).map_err(|v| v.to_string())? else {
            return Ok(None);
        };
        let more_pending = consumer.available(ring).map_err(|v| v.to_string())? > 0;
        Ok(Some(Taken {
            bytes,
            more_pending,
            unread_replies,
        }))
    }

    /// Forgets a call's cancel token once it is answered.
    fn forget_call(&self, id: u64) {
        let mut calls = self.calls.lock().expect("calls lock");
        if let Some(at) = calls.iter().position(|(call, _)| *call == id) {
            calls.swap_remove(at);
        }
    }

    /// Counts a call (or tool list) taken from the client against its in-flight limit, with
    /// `unread` of its replies not read yet. A client that keeps to the limit it was given
    /// never passes it: one that does has sent more than its reply ring is sure to hold, and
    /// is disconnected.
    fn admit(&self, unread: u32) -> Result<(), String> {
        let unanswered = self.unanswered.fetch_add(1, Ordering::SeqCst);
        if unanswered + unread >= self.max_in_flight {
            return Err(format!(
                "more than {} calls in flight ({unanswered} unanswered, {unread} replies unread)",
                self.max_in_flight
            ));
        }
        Ok(())
    }

    /// Answers a socket frame that was not read for want of budget: a call is refused as
    /// `busy`. The frame's first bytes hold its id (field 1 comes first).
    fn refuse_unread(&self, head: &[u8], refusal: String) -> Result<(), String> {
        self.admit(0)?;
        let id = message_id(head).ok_or("a frame that does not start with a message id")?;
        self.answer(
            id,
            server_message::Body::Failure(proto::Failure::new(proto::ErrorKind::Busy, refusal)),
        )
    }

    /// Sends the answer to a message taken from the client, and counts it answered. An
    /// error means the connection is closed (the reader then sees it go).
    fn answer(&self, id: u64, body: server_message::Body) -> Result<(), String> {
        // Counted off before the reply goes: a client may take it and send its next call
        // at once, and `admit` must not count the answered one twice (unanswered, and
        // unread). A client that keeps its limit leaves room for every reply whatever the
        // count; one that does not finds the ring full and is disconnected.
        self.unanswered.fetch_sub(1, Ordering::SeqCst);
        let sent = self.reply(proto::ServerMessage {
            id,
            body: Some(body),
        });
        if let Err(reason) = &sent {
            debug!("{}: reply {id} not delivered: {reason}", self.label);
            self.gone.cancel();
            let _ = self.socket.shutdown(std::net::Shutdown::Both);
        }
        sent
    }

    /// Sends a reply, cut to fit the transport if it must be (see `fit`).
    fn reply(&self, message: proto::ServerMessage) -> Result<(), String> {
        let bytes = fit::encode_within(message, self.max_reply);
        match &self.link {
            ReplyPath::Ring(link) => {
                let wake = {
                    let mut replies = link.replies.lock().expect("reply ring lock");
                    replies.reclaim(&link.ring)?;
                    let pushed = replies
                        .producer
                        .push(&link.ring, &bytes)
                        .map_err(|e| e.to_string())?;
                    if let Some(index) = pushed.spilled {
                        let held = self.budget.hold(bytes.len().next_multiple_of(4096));
                        replies.spilled.push_back((index, held));
                    }
                    pushed.wake
                };
                // Rung with no lock held: ringing never blocks, but nothing else should
                // wait for it either.
                if wake {
                    link.doorbell.ring();
                }
                Ok(())
            }
            ReplyPath::Socket(writer) => writer.send(&self.socket, bytes, &self.budget),
        }
    }
}

/// The id of a `ClientMessage` from its first bytes: field 1, a varint, encoded first (an
/// id of 0 is not encoded at all).
fn message_id(head: &[u8]) -> Option<u64> {
    match head.first() {
        Some(0x08) => {
            let mut id = 0u64;
            for (i, byte) in head[1..].iter().take(10).enumerate() {
                id |= u64::from(byte & 0x7f) << (7 * i);
                if byte & 0x80 == 0 {
                    return Some(id);
                }
            }
            None
        }
        Some(_) => Some(0),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_id_is_read_from_the_head_of_its_encoding() {
        for id in [0, 1, 127, 128, 300, u64::MAX] {
            let message = proto::ClientMessage {
                id,
                body: Some(client_message::Body::Call(proto::Call {
                    stdin: vec![0; 1000],
                    ..proto::Call::default()
                })),
            };
            let bytes = message.encode_to_vec();
            assert_eq!(message_id(&bytes[..ID_BYTES]), Some(id));
        }
    }
}
