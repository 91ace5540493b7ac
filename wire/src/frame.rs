//! Frames on the Unix socket: a 4-byte little-endian length, then one protobuf message.
//! A frame may carry file descriptors (`SCM_RIGHTS`); they arrive with its first byte.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use prost::Message;

/// Largest frame either side reads; a longer length prefix is a protocol error, so a hostile
/// peer cannot make the other allocate without bound.
pub const MAX_FRAME_BYTES: usize = 64 << 20;

/// Most file descriptors one frame may carry.
pub const MAX_FDS: usize = 4;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the connection.
    #[error("connection closed by peer")]
    Closed,
    /// The deadline passed before the frame was read or written whole.
    #[error("the peer was too slow: the deadline passed before the frame was {0} whole")]
    TimedOut(&'static str),
    /// The socket failed.
    #[error("socket: {0}")]
    Io(#[from] io::Error),
    /// The length prefix exceeds what the reader accepts (at most [`MAX_FRAME_BYTES`]).
    #[error("frame of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The announced length.
        len: usize,
        /// The reader's limit.
        limit: usize,
    },
    /// More file descriptors came with a frame than it may carry.
    #[error("more than {MAX_FDS} file descriptors came with one frame")]
    TooManyFds,
    /// The frame is not a valid message of the expected type.
    #[error("malformed {what}: {source}")]
    Malformed {
        /// The message type expected.
        what: &'static str,
        /// What the decoder found.
        source: prost::DecodeError,
    },
}

/// Writes `message` as one frame, passing `fds` with it.
pub fn write<M: Message>(socket: impl AsFd, message: &M, fds: &[RawFd]) -> Result<(), FrameError> {
    write_bytes(socket, &message.encode_to_vec(), fds)
}

/// Writes one frame holding the already encoded message `body`, passing `fds` with its
/// first byte. The length prefix and the body go out together, without copying the body.
pub fn write_bytes(socket: impl AsFd, body: &[u8], fds: &[RawFd]) -> Result<(), FrameError> {
    write_bytes_by(socket, body, fds, None)
}

/// Like [`write_bytes`], but gives up when `deadline` passes before the peer has taken the
/// whole frame; it never blocks past it, whatever the socket's own flags.
pub fn write_bytes_by(
    socket: impl AsFd,
    body: &[u8],
    fds: &[RawFd],
    deadline: Option<Instant>,
) -> Result<(), FrameError> {
    let wait = match deadline {
        Some(deadline) => Wait::Until(deadline),
        None => Wait::Block,
    };
    send_frame(socket.as_fd(), body, fds, 0, wait).map(drop)
}

/// Sends as much of the frame holding `body` as the socket takes now, without waiting, and
/// returns how many of its bytes (the 4-byte prefix included) are sent: all of them, or the
/// point from which [`finish_by`] goes on.
pub fn write_bytes_now(socket: impl AsFd, body: &[u8]) -> Result<usize, FrameError> {
    send_frame(socket.as_fd(), body, &[], 0, Wait::Never)
}

/// Sends the rest of a frame of which `sent` bytes went already, by `deadline`.
pub fn finish_by(
    socket: impl AsFd,
    body: &[u8],
    sent: usize,
    deadline: Instant,
) -> Result<(), FrameError> {
    send_frame(socket.as_fd(), body, &[], sent, Wait::Until(deadline)).map(drop)
}

/// The bytes of the frame holding `body`, its prefix included.
pub fn frame_len(body: &[u8]) -> usize {
    4 + body.len()
}

/// What a send does when the socket takes no more for now.
#[derive(Clone, Copy)]
enum Wait {
    Block,
    Until(Instant),
    Never,
}

/// Sends the frame holding `body` from its byte `sent` on; returns the bytes sent in all.
fn send_frame(
    socket: BorrowedFd<'_>,
    body: &[u8],
    fds: &[RawFd],
    mut sent: usize,
    wait: Wait,
) -> Result<usize, FrameError> {
    if body.len() > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge {
            len: body.len(),
            limit: MAX_FRAME_BYTES,
        });
    }
    let prefix = (body.len() as u32).to_le_bytes();
    let total = frame_len(body);
    while sent < total {
        let iov = [
            IoSlice::new(&prefix[sent.min(prefix.len())..]),
            IoSlice::new(&body[sent.saturating_sub(prefix.len())..]),
        ];
        let rights = [ControlMessage::ScmRights(fds)];
        let cmsgs: &[ControlMessage] = if sent == 0 && !fds.is_empty() {
            &rights
        } else {
            &[]
        };
        let flags = match wait {
            Wait::Block => MsgFlags::MSG_NOSIGNAL,
            Wait::Until(_) | Wait::Never => MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
        };
        match sendmsg::<()>(socket.as_raw_fd(), &iov, cmsgs, flags, None) {
            Ok(n) => sent += n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::EAGAIN) => match wait {
                Wait::Never => return Ok(sent),
                Wait::Until(deadline) => {
                    wait_until_ready(socket, PollFlags::POLLOUT, Some(deadline), "written")?;
                }
                Wait::Block => return Err(FrameError::Io(io::ErrorKind::WouldBlock.into())),
            },
            Err(nix::errno::Errno::EPIPE | nix::errno::Errno::ECONNRESET) => {
                return Err(FrameError::Closed);
            }
            Err(e) => return Err(FrameError::Io(e.into())),
        }
    }
    Ok(sent)
}

/// Reads one frame of at most `max_len` bytes and decodes it as `M`, with the file
/// descriptors that came with it (at most [`MAX_FDS`]; more is an error).
pub fn read_with_fds<M: Message + Default>(
    socket: impl AsFd,
    what: &'static str,
    max_len: usize,
) -> Result<(M, Vec<OwnedFd>), FrameError> {
    let mut fds = Some(Vec::new());
    let bytes = read_frame(socket.as_fd(), max_len, &mut fds, None)?;
    let message = decode(&bytes, what)?;
    Ok((message, fds.unwrap_or_default()))
}

/// Reads one frame of at most `max_len` bytes and decodes it as `M`. File descriptors a
/// peer sends along are not accepted: the kernel closes them.
pub fn read<M: Message + Default>(
    socket: impl AsFd,
    what: &'static str,
    max_len: usize,
) -> Result<M, FrameError> {
    decode(&read_bytes(socket, max_len)?, what)
}

/// Reads one frame's message bytes (at most `max_len`), refusing file descriptors.
pub fn read_bytes(socket: impl AsFd, max_len: usize) -> Result<Vec<u8>, FrameError> {
    read_frame(socket.as_fd(), max_len, &mut None, None)
}

/// Like [`read`], but the whole frame must have arrived by `deadline` (however slowly the
/// peer sends it, byte by byte).
pub fn read_by<M: Message + Default>(
    socket: impl AsFd,
    what: &'static str,
    max_len: usize,
    deadline: Instant,
) -> Result<M, FrameError> {
    let bytes = read_frame(socket.as_fd(), max_len, &mut None, Some(deadline))?;
    decode(&bytes, what)
}

/// Reads the length prefix of the next frame, waiting as long as it takes.
pub fn read_len(socket: impl AsFd) -> Result<usize, FrameError> {
    let mut prefix = [0u8; 4];
    read_exact(socket.as_fd(), &mut prefix, &mut None, None)?;
    Ok(u32::from_le_bytes(prefix) as usize)
}

/// Reads a frame body of `len` bytes (its prefix read already), by `deadline`.
pub fn read_body(socket: impl AsFd, len: usize, deadline: Instant) -> Result<Vec<u8>, FrameError> {
    let mut body = vec![0u8; len];
    read_exact(socket.as_fd(), &mut body, &mut None, Some(deadline))?;
    Ok(body)
}

/// Reads a frame body of `len` bytes by `deadline` without keeping it, but for its first
/// `keep` bytes (enough to tell whom to refuse).
pub fn discard_body(
    socket: impl AsFd,
    len: usize,
    keep: usize,
    deadline: Instant,
) -> Result<Vec<u8>, FrameError> {
    let mut head = vec![0u8; keep.min(len)];
    read_exact(socket.as_fd(), &mut head, &mut None, Some(deadline))?;
    let mut scratch = [0u8; 16 << 10];
    let mut left = len - head.len();
    while left > 0 {
        let chunk = left.min(scratch.len());
        read_exact(
            socket.as_fd(),
            &mut scratch[..chunk],
            &mut None,
            Some(deadline),
        )?;
        left -= chunk;
    }
    Ok(head)
}

/// Reads and discards what the peer still sends, up to `max_bytes`, until it hangs up or
/// `deadline` passes. A Unix socket closed with unread data resets the connection, and its
/// peer may then lose what was written to it last (a refusal, say) before reading it: a
/// side that answers and hangs up first shuts down its writing half, then drains.
pub fn drain_until_closed(socket: impl AsFd, max_bytes: usize, deadline: Instant) {
    let fd = socket.as_fd();
    let mut sink = [0u8; 4096];
    let mut taken = 0;
    while taken < max_bytes {
        if wait_until_ready(fd, PollFlags::POLLIN, Some(deadline), "hang-up").is_err() {
            return;
        }
        match nix::sys::socket::recv(fd.as_raw_fd(), &mut sink, MsgFlags::MSG_DONTWAIT) {
            Ok(0) => return,
            Ok(n) => taken += n,
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
        }
    }
}

/// Waits until `socket` is ready for `events`, or fails once `deadline` passes.
fn wait_until_ready(
    socket: BorrowedFd<'_>,
    events: PollFlags,
    deadline: Option<Instant>,
    what: &'static str,
) -> Result<(), FrameError> {
    loop {
        let timeout = match deadline {
            None => PollTimeout::NONE,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(FrameError::TimedOut(what));
                }
                // Rounded up, so a wait never ends just short of the deadline.
                PollTimeout::try_from(
                    left.as_millis().saturating_add(1).min(i32::MAX as u128) as i32
                )
                .unwrap_or(PollTimeout::MAX)
            }
        };
        let mut fds = [PollFd::new(socket, events)];
        match poll(&mut fds, timeout) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => return Ok(()),
            Err(e) => return Err(FrameError::Io(e.into())),
        }
    }
}

fn decode<M: Message + Default>(bytes: &[u8], what: &'static str) -> Result<M, FrameError> {
    M::decode(bytes).map_err(|source| FrameError::Malformed { what, source })
}

/// Reads a length prefix and the body; collects passed descriptors into `fds` when it is
/// `Some`, and otherwise reads without a control buffer, so the kernel discards them.
fn read_frame(
    fd: BorrowedFd<'_>,
    max_len: usize,
    fds: &mut Option<Vec<OwnedFd>>,
    deadline: Option<Instant>,
) -> Result<Vec<u8>, FrameError> {
    let mut prefix = [0u8; 4];
    read_exact(fd, &mut prefix, fds, deadline)?;
    let len = u32::from_le_bytes(prefix) as usize;
    if len > max_len.min(MAX_FRAME_BYTES) {
        return Err(FrameError::TooLarge {
            len,
            limit: max_len.min(MAX_FRAME_BYTES),
        });
    }
    let mut body = vec![0u8; len];
    read_exact(fd, &mut body, fds, deadline)?;
    Ok(body)
}

fn read_exact(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Option<Vec<OwnedFd>>,
    deadline: Option<Instant>,
) -> Result<(), FrameError> {
    let fd = socket.as_raw_fd();
    let mut filled = 0;
    // With a deadline each read only takes what is there (`MSG_DONTWAIT`, a flag of the call
    // and not of the socket, which the peer may share), and waits with a timeout only when
    // nothing is: a body that came with its prefix costs no `poll`.
    let flags = match deadline {
        Some(_) => MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
        None => MsgFlags::MSG_CMSG_CLOEXEC,
    };
    while filled < buf.len() {
        let mut cmsg_space = nix::cmsg_space!([RawFd; MAX_FDS]);
        let mut iov = [IoSliceMut::new(&mut buf[filled..])];
        let control = if fds.is_some() {
            Some(cmsg_space.as_mut_slice())
        } else {
            None
        };
        let msg = match recvmsg::<()>(fd, &mut iov, control, flags) {
            Ok(msg) => msg,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::EAGAIN) => {
                wait_until_ready(socket, PollFlags::POLLIN, deadline, "read")?;
                continue;
            }
            Err(nix::errno::Errno::ECONNRESET) => return Err(FrameError::Closed),
            Err(e) => return Err(FrameError::Io(e.into())),
        };
        let received = msg.bytes;
        let truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
        if let Some(fds) = fds.as_mut() {
            if let Ok(cmsgs) = msg.cmsgs() {
                for cmsg in cmsgs {
                    if let ControlMessageOwned::ScmRights(raw) = cmsg {
                        // SAFETY: the kernel installed these descriptors in this process for
                        // us alone; wrapping them at once makes sure each is closed exactly
                        // once.
                        fds.extend(raw.into_iter().map(|r| unsafe { OwnedFd::from_raw_fd(r) }));
                    }
                }
            }
            if truncated {
                return Err(FrameError::TooManyFds);
            }
        }
        if received == 0 {
            return Err(FrameError::Closed);
        }
        filled += received;
        if filled < buf.len() && deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            return Err(FrameError::TimedOut("read"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    #[test]
    fn a_frame_dripped_byte_by_byte_misses_its_deadline() {
        let (reader, mut writer) = UnixStream::pair().unwrap();
        let dripping = std::thread::spawn(move || {
            for byte in [8u8, 0, 0, 0, 1, 2, 3] {
                if writer.write_all(&[byte]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(40));
            }
        });
        let started = Instant::now();
        let outcome = read_by::<crate::proto::Hello>(
            &reader,
            "hello",
            64,
            started + Duration::from_millis(100),
        );
        assert!(
            matches!(outcome, Err(FrameError::TimedOut("read"))),
            "{outcome:?}"
        );
        assert!(started.elapsed() < Duration::from_millis(300));
        drop(reader);
        dripping.join().unwrap();
    }

    #[test]
    fn a_peer_that_does_not_read_cannot_hold_a_writer_past_its_deadline() {
        let (writer, _reader) = UnixStream::pair().unwrap();
        let big = vec![7u8; 8 << 20];
        let started = Instant::now();
        let outcome = write_bytes_by(
            &writer,
            &big,
            &[],
            Some(started + Duration::from_millis(100)),
        );
        assert!(
            matches!(outcome, Err(FrameError::TimedOut("written"))),
            "{outcome:?}"
        );
        assert!(started.elapsed() < Duration::from_millis(300));
    }

    #[test]
    fn a_frame_begun_now_is_finished_later_whole() {
        let (writer, reader) = UnixStream::pair().unwrap();
        let big = vec![3u8; 4 << 20];
        let sent = write_bytes_now(&writer, &big).unwrap();
        assert!(
            sent < frame_len(&big),
            "the socket took {sent} bytes at once"
        );
        let finishing = std::thread::spawn(move || {
            finish_by(
                &writer,
                &big,
                sent,
                Instant::now() + Duration::from_secs(10),
            )
        });
        assert_eq!(read_bytes(&reader, 8 << 20).unwrap(), vec![3u8; 4 << 20]);
        finishing.join().unwrap().unwrap();
        let (writer, reader) = UnixStream::pair().unwrap();
        assert_eq!(
            write_bytes_now(&writer, b"small").unwrap(),
            frame_len(b"small")
        );
        assert_eq!(read_bytes(&reader, 100).unwrap(), b"small");
    }

    #[test]
    fn a_discarded_body_leaves_the_next_frame_intact() {
        let (reader, writer) = UnixStream::pair().unwrap();
        write_bytes(&writer, &[9u8; 50_000], &[]).unwrap();
        write_bytes(&writer, b"next", &[]).unwrap();
        let len = read_len(&reader).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        assert_eq!(discard_body(&reader, len, 4, deadline).unwrap(), vec![9; 4]);
        assert_eq!(read_bytes(&reader, 100).unwrap(), b"next");
    }
}
