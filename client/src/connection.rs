//! A connection to the supervisor, shared by every thread of the client process.
//!
//! Replies arrive in one stream (ring or socket) for all callers. Whichever waiting caller
//! finds no one receiving becomes the *leader*: it receives, files each reply under its id,
//! wakes the others, and hands leadership on once its own reply is in. A single-threaded
//! caller is always its own leader and never switches threads. Asynchronous calls are
//! completed by a helper thread that leads while any of them is outstanding.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use megavisor_wire::doorbell::{Doorbell, Patience};
use megavisor_wire::proto::{self, server_message, welcome};
use megavisor_wire::ring::{Consumer, Direction, Layout, Producer, Ring};
use megavisor_wire::{PROTOCOL_VERSION, frame};
use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use prost::Message;

use crate::call::Call;
use crate::error::{Error, ErrorKind, Result};
use crate::future::{AsyncSlot, CallFuture, Canceller};
use crate::link::{Link, RingLink};

/// Largest welcome the client reads (it is a few hundred bytes).
const WELCOME_MAX_BYTES: usize = 64 << 10;

/// How calls travel after the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// The shared-memory ring (the default, and the fast path).
    #[default]
    Ring,
    /// Frames on the Unix socket.
    Socket,
}

/// Connection settings.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Ring or socket.
    pub transport: Transport,
    /// How the client describes itself in the supervisor's logs.
    pub client_name: String,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            transport: Transport::Ring,
            client_name: format!("megavisor-client/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// The body of a `ClientMessage`, borrowed: a call is encoded straight from the caller's
/// `Call`, so its stdin and arguments are not copied once more before they are encoded.
enum Outgoing<'a> {
    Call(&'a proto::Call),
    ListTools,
    Cancel,
    OpenSession(&'a str),
    CloseSession(u64),
}

impl Outgoing<'_> {
    /// The `ClientMessage` with this body and `id`, encoded (fields as in `wire.proto`).
    fn encode(&self, id: u64) -> Vec<u8> {
        use prost::encoding::{message, uint64};
        let mut buf = Vec::new();
        match self {
            Outgoing::Call(call) => {
                buf.reserve(uint64::encoded_len(1, &id) + message::encoded_len(2, *call));
                uint64::encode(1, &id, &mut buf);
                message::encode(2, *call, &mut buf);
            }
            Outgoing::ListTools => {
                uint64::encode(1, &id, &mut buf);
                message::encode(3, &proto::ListTools {}, &mut buf);
            }
            Outgoing::Cancel => {
                uint64::encode(1, &id, &mut buf);
                message::encode(4, &proto::Cancel {}, &mut buf);
            }
            Outgoing::OpenSession(tool) => {
                uint64::encode(1, &id, &mut buf);
                let open = proto::OpenSession {
                    tool: (*tool).to_owned(),
                };
                message::encode(5, &open, &mut buf);
            }
            Outgoing::CloseSession(session) => {
                uint64::encode(1, &id, &mut buf);
                let close = proto::CloseSession { session: *session };
                message::encode(6, &close, &mut buf);
            }
        }
        buf
    }
}

/// The session a reply to `OpenSession` or `CloseSession` names.
fn session_of(reply: proto::ServerMessage, asked: &str) -> Result<u64> {
    match reply.body {
        Some(server_message::Body::Session(opened)) => Ok(opened.session),
        Some(server_message::Body::Failure(failure)) => Err(Error::from_failure(failure)),
        _ => Err(Error::protocol(format!(
            "the reply to {asked} does not name a session"
        ))),
    }
}

/// A connection to a running supervisor. Cheap to clone; every clone shares the connection,
/// and it is safe to call from any number of threads at once.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    socket: UnixStream,
    link: Link,
    server: String,
    max_in_flight: u32,
    max_request_bytes: u64,
    next_id: AtomicU64,
    state: Mutex<State>,
    /// Signalled when replies are filed, leadership is released, an in-flight permit frees
    /// up, or an asynchronous call is registered.
    changed: Condvar,
}

#[derive(Default)]
struct State {
    in_flight: u32,
    leader: bool,
    filed: HashMap<u64, proto::ServerMessage>,
    pending_async: HashMap<u64, Arc<AsyncSlot>>,
    helper_running: bool,
    lost: Option<Error>,
}

impl Client {
    /// The socket clients connect to when none is named: `$MEGAVISOR_SOCKET`, else
    /// `/run/megavisor/megavisor.sock` for root and `$XDG_RUNTIME_DIR/megavisor.sock` (or
    /// `/tmp/megavisor-<uid>.sock`) for other users.
    pub fn default_socket() -> PathBuf {
        if let Some(path) = std::env::var_os("MEGAVISOR_SOCKET").filter(|p| !p.is_empty()) {
            return path.into();
        }
        let uid = nix::unistd::getuid();
        if uid.is_root() {
            return "/run/megavisor/megavisor.sock".into();
        }
        match std::env::var_os("XDG_RUNTIME_DIR").filter(|p| !p.is_empty()) {
            Some(dir) => Path::new(&dir).join("megavisor.sock"),
            None => format!("/tmp/megavisor-{uid}.sock").into(),
        }
    }

    /// Connects over the shared-memory ring.
    pub fn connect(socket: impl AsRef<Path>) -> Result<Self> {
        Client::connect_with(socket, &ConnectOptions::default())
    }

    /// Connects with explicit options.
    pub fn connect_with(socket: impl AsRef<Path>, options: &ConnectOptions) -> Result<Self> {
        let path = socket.as_ref();
        let stream = UnixStream::connect(path).map_err(|e| {
            Error::new(
                ErrorKind::ConnectionLost,
                format!(
                    "cannot connect to the supervisor at {}: {e}",
                    path.display()
                ),
            )
        })?;
        let hello = proto::Hello {
            protocol_version: PROTOCOL_VERSION,
            transport: match options.transport {
                Transport::Ring => proto::Transport::Ring,
                Transport::Socket => proto::Transport::Socket,
            } as i32,
            client: options.client_name.clone(),
        };
        frame::write(&stream, &hello, &[])?;
        let (welcome, fds) =
            frame::read_with_fds::<proto::Welcome>(&stream, "welcome", WELCOME_MAX_BYTES)?;
        let accepted = match welcome.outcome {
            Some(welcome::Outcome::Accepted(accepted)) => accepted,
            Some(welcome::Outcome::Refused(failure)) => return Err(Error::from_failure(failure)),
            None => return Err(Error::protocol("welcome without an outcome")),
        };
        let link = match options.transport {
            Transport::Ring => Link::Ring(map_ring(&accepted, fds)?),
            Transport::Socket => Link::Socket {
                writer: Mutex::new(()),
            },
        };
        Ok(Client {
            inner: Arc::new(Inner {
                socket: stream,
                link,
                server: accepted.server,
                max_in_flight: accepted.max_in_flight.max(1),
                max_request_bytes: accepted.max_request_bytes,
                next_id: AtomicU64::new(1),
                state: Mutex::new(State::default()),
                changed: Condvar::new(),
            }),
        })
    }

    /// The supervisor's name and version.
    pub fn server(&self) -> &str {
        &self.inner.server
    }

    /// Runs a tool and waits for its output. A tool that exits non-zero is still `Ok`; the
    /// error kinds are for calls that did not run to an exit (see [`ErrorKind`]).
    pub fn call(&self, call: &Call) -> Result<proto::Output> {
        let id = self.send(Outgoing::Call(&call.message))?;
        output_of(self.inner.wait(id)?)
    }

    /// Starts a tool and returns a future of its output; the calling thread does not wait
    /// for the tool (it may wait for an in-flight permit when the connection is saturated).
    /// Dropping the future before it is ready gives up on the call: the supervisor stops it.
    pub fn call_async(&self, call: &Call) -> CallFuture {
        let slot = Arc::new(AsyncSlot::default());
        // Registered before the call is sent: its reply may be received (by another
        // thread leading) before `send` even returns.
        let register = |id| self.inner.register_async(id, slot.clone());
        let sent = self.send_registered(Outgoing::Call(&call.message), Some(register));
        let cancel = match sent {
            Ok(id) => Some(Canceller {
                inner: Arc::downgrade(&self.inner),
                id,
            }),
            Err(err) => {
                slot.complete(Err(err));
                None
            }
        };
        CallFuture { slot, cancel }
    }

    /// Lists the tools of the bundle being served.
    pub fn tools(&self) -> Result<proto::ToolList> {
        let id = self.send(Outgoing::ListTools)?;
        match self.inner.wait(id)?.body {
            Some(server_message::Body::Tools(list)) => Ok(list),
            Some(server_message::Body::Failure(failure)) => Err(Error::from_failure(failure)),
            _ => Err(Error::protocol("the reply to ListTools is not a tool list")),
        }
    }

    /// Opens a session of `tool`: one instance kept alive for the calls that name it
    /// ([`Call::session`]). Returns its id.
    pub fn open_session(&self, tool: &str) -> Result<u64> {
        let id = self.send(Outgoing::OpenSession(tool))?;
        session_of(self.inner.wait(id)?, "OpenSession")
    }

    /// Closes a session; `session_gone` when it is not there.
    pub fn close_session(&self, session: u64) -> Result<()> {
        let id = self.send(Outgoing::CloseSession(session))?;
        session_of(self.inner.wait(id)?, "CloseSession").map(|_| ())
    }

    /// Takes an in-flight permit, sends the message and returns its id.
    fn send(&self, body: Outgoing<'_>) -> Result<u64> {
        self.send_registered(body, None::<fn(u64) -> Result<()>>)
    }

    /// Like `send`; for an asynchronous call, `register` files it under its id once the
    /// permit is held and before the message leaves.
    fn send_registered(
        &self,
        body: Outgoing<'_>,
        register: Option<impl FnOnce(u64) -> Result<()>>,
    ) -> Result<u64> {
        let inner = &self.inner;
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let bytes = body.encode(id);
        if bytes.len() as u64 > inner.max_request_bytes {
            return Err(Error::new(
                ErrorKind::BadRequest,
                format!(
                    "call of {} bytes exceeds the supervisor's limit of {} bytes (stdin or arguments too large)",
                    bytes.len(),
                    inner.max_request_bytes
                ),
            ));
        }
        inner.acquire_permit()?;
        let asynchronous = register.is_some();
        if let Some(register) = register
            && let Err(err) = register(id)
        {
            inner.release_permit();
            return Err(err);
        }
        if let Err(err) = inner.link.send(&inner.socket, &bytes) {
            let mut state = inner.lock();
            // An asynchronous call no longer filed was failed, and its permit released, by
            // `lose` in the meantime.
            let released_already = asynchronous && state.pending_async.remove(&id).is_none();
            if !released_already {
                state.in_flight -= 1;
            }
            drop(state);
            inner.changed.notify_all();
            return Err(err);
        }
        Ok(id)
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("client state lock")
    }

    fn acquire_permit(&self) -> Result<()> {
        let mut state = self.lock();
        loop {
            if let Some(err) = &state.lost {
                return Err(err.clone());
            }
            if state.in_flight < self.max_in_flight {
                state.in_flight += 1;
                return Ok(());
            }
            state = self.changed.wait(state).expect("client state lock");
        }
    }

    fn release_permit(&self) {
        self.lock().in_flight -= 1;
        self.changed.notify_all();
    }

    /// Asks the supervisor to stop asynchronous call `id`, if it is still waiting for its
    /// reply (which then comes as a `cancelled` failure, or its output if it ended first).
    pub(crate) fn cancel(&self, id: u64) {
        if !self.lock().pending_async.contains_key(&id) {
            return;
        }
        // Best effort: a connection that is gone has stopped the call already.
        let _ = self.link.send(&self.socket, &Outgoing::Cancel.encode(id));
    }

    /// Waits for the reply to `id`, leading the receiving when no one else is.
    fn wait(&self, id: u64) -> Result<proto::ServerMessage> {
        let mut state = self.lock();
        let result = loop {
            if let Some(reply) = state.filed.remove(&id) {
                break Ok(reply);
            }
            if let Some(err) = &state.lost {
                break Err(err.clone());
            }
            if state.leader {
                state = self.changed.wait(state).expect("client state lock");
            } else {
                state = self.lead(state);
            }
        };
        state.in_flight -= 1;
        drop(state);
        self.changed.notify_all();
        result
    }

    /// Receives one batch of replies without holding the state lock, then files them.
    /// Asynchronous calls are completed after the lock is released: their callbacks may
    /// start further calls, which take it.
    fn lead<'a>(&'a self, mut state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        state.leader = true;
        drop(state);
        let received = self.link.receive(&self.socket);
        let mut state = self.lock();
        state.leader = false;
        let mut completed = Vec::new();
        match received {
            Ok(batch) => {
                for bytes in batch {
                    match proto::ServerMessage::decode(bytes.as_slice()) {
                        Ok(reply) => self.file(&mut state, reply, &mut completed),
                        Err(e) => {
                            let err = Error::protocol(format!("malformed reply: {e}"));
                            self.lose(&mut state, err, &mut completed);
                        }
                    }
                }
            }
            Err(err) => self.lose(&mut state, err, &mut completed),
        }
        if !completed.is_empty() {
            drop(state);
            for (slot, result) in completed {
                slot.complete(result);
            }
            state = self.lock();
        }
        self.changed.notify_all();
        state
    }

    /// Files a reply for its waiting caller, or adds an asynchronous call's result to
    /// `completed`.
    fn file(&self, state: &mut State, reply: proto::ServerMessage, completed: &mut Completed) {
        match state.pending_async.remove(&reply.id) {
            Some(slot) => {
                state.in_flight -= 1;
                completed.push((slot, output_of(reply)));
            }
            None => {
                state.filed.insert(reply.id, reply);
            }
        }
    }

    /// Marks the connection lost; every asynchronous call still waiting fails with `err`.
    fn lose(&self, state: &mut State, err: Error, completed: &mut Completed) {
        for (_, slot) in state.pending_async.drain() {
            state.in_flight -= 1;
            completed.push((slot, Err(err.clone())));
        }
        state.lost.get_or_insert(err);
    }

    /// Files `slot` to be completed with the reply to `id`, and makes sure a thread is
    /// receiving on behalf of asynchronous calls.
    fn register_async(self: &Arc<Self>, id: u64, slot: Arc<AsyncSlot>) -> Result<()> {
        let mut state = self.lock();
        if let Some(err) = &state.lost {
            return Err(err.clone());
        }
        state.pending_async.insert(id, slot);
        if !state.helper_running {
            let inner = self.clone();
            let spawned = std::thread::Builder::new()
                .name("megavisor-client".into())
                .spawn(move || inner.lead_for_async());
            if let Err(e) = spawned {
                state.pending_async.remove(&id);
                return Err(Error::new(
                    ErrorKind::Internal,
                    format!("cannot start the client's receiving thread: {e}"),
                ));
            }
            state.helper_running = true;
        }
        drop(state);
        self.changed.notify_all();
        Ok(())
    }

    /// The helper thread: leads while asynchronous calls are outstanding, then exits once
    /// none has come for [`ASYNC_HELPER_LINGER`] (so an idle client holds no thread and
    /// dropping the last `Client` closes the connection soon after).
    fn lead_for_async(self: Arc<Self>) {
        let mut state = self.lock();
        loop {
            if state.lost.is_some() {
                state.helper_running = false;
                return;
            }
            if state.pending_async.is_empty() {
                state = self.await_async_calls(state);
                if state.pending_async.is_empty() {
                    state.helper_running = false;
                    return;
                }
                continue;
            }
            if state.leader {
                state = self.changed.wait(state).expect("client state lock");
            } else {
                state = self.lead(state);
            }
        }
    }

    /// Waits for an asynchronous call to be registered, for up to [`ASYNC_HELPER_LINGER`].
    ///
    /// A caller awaiting its calls one after another sends the next one right after its
    /// last reply: the helper looks for it a little while (as a ring waiter does, see
    /// [`Patience`]) before sleeping, and stays a while before exiting, so that neither a
    /// wake-up nor a new thread is paid per call.
    fn await_async_calls<'a>(&'a self, mut state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        let started = Instant::now();
        while state.pending_async.is_empty() && started.elapsed() < Patience::MAX {
            drop(state);
            std::thread::yield_now();
            state = self.lock();
        }
        while state.pending_async.is_empty() && state.lost.is_none() {
            let Some(left) = ASYNC_HELPER_LINGER.checked_sub(started.elapsed()) else {
                break;
            };
            state = self
                .changed
                .wait_timeout(state, left)
                .expect("client state lock")
                .0;
        }
        state
    }
}

/// Asynchronous calls whose results are ready, completed once the state lock is released.
type Completed = Vec<(Arc<AsyncSlot>, Result<proto::Output>)>;

/// How long the helper thread stays for the next asynchronous call before it exits.
const ASYNC_HELPER_LINGER: Duration = Duration::from_millis(20);

fn output_of(reply: proto::ServerMessage) -> Result<proto::Output> {
    match reply.body {
        Some(server_message::Body::Output(output)) => Ok(output),
        Some(server_message::Body::Failure(failure)) => Err(Error::from_failure(failure)),
        _ => Err(Error::protocol(
            "the reply to a call is neither an output nor a failure",
        )),
    }
}

/// Checks and maps the ring the supervisor passed: the memfd must be sealed against
/// shrinking (so the mapping can never fault) and its header must match the handshake.
fn map_ring(accepted: &proto::Accepted, fds: Vec<OwnedFd>) -> Result<RingLink> {
    let geometry = accepted
        .ring
        .ok_or_else(|| Error::protocol("ring transport accepted without a ring geometry"))?;
    let layout = Layout::new(&geometry).map_err(Error::protocol)?;
    let [memfd, doorbell]: [OwnedFd; 2] = fds.try_into().map_err(|fds: Vec<OwnedFd>| {
        Error::protocol(format!(
            "expected 2 descriptors with the welcome, got {}",
            fds.len()
        ))
    })?;
    let seals = fcntl(memfd.as_fd(), FcntlArg::F_GET_SEALS).map_err(Error::protocol)?;
    let seals = SealFlag::from_bits_truncate(seals);
    if !seals.contains(SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_SEAL) {
        return Err(Error::protocol(format!(
            "ring memfd is not sealed against shrinking ({seals:?})"
        )));
    }
    let size = nix::sys::stat::fstat(memfd.as_fd())
        .map_err(Error::protocol)?
        .st_size;
    if (size as u64) < layout.total_bytes() as u64 {
        return Err(Error::protocol(format!(
            "ring memfd has {size} bytes, the geometry needs {}",
            layout.total_bytes()
        )));
    }
    let ring = Ring::map(&memfd, layout)
        .map_err(|e| Error::protocol(format!("cannot map the ring: {e}")))?;
    ring.check_header(&geometry).map_err(Error::protocol)?;
    Ok(RingLink {
        ring,
        producer: Mutex::new(Producer::new(Direction::Request)),
        consumer: Mutex::new((Consumer::new(Direction::Reply), Patience::default())),
        doorbell: Doorbell::from_fd(doorbell),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use megavisor_wire::proto::client_message;

    #[test]
    fn borrowed_encoding_is_the_client_message_encoding() {
        let call = crate::Call::new("wc")
            .args(["-l"])
            .stdin(b"a\nb\n".as_slice());
        let expected = proto::ClientMessage {
            id: 7,
            body: Some(client_message::Body::Call(call.message.clone())),
        };
        assert_eq!(
            Outgoing::Call(&call.message).encode(7),
            expected.encode_to_vec()
        );
        let expected = proto::ClientMessage {
            id: 8,
            body: Some(client_message::Body::ListTools(proto::ListTools {})),
        };
        assert_eq!(Outgoing::ListTools.encode(8), expected.encode_to_vec());
    }
}
