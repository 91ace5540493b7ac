//! Frames on the Unix socket: a 4-byte little-endian length, then one protobuf message.
//! A frame may carry file descriptors (`SCM_RIGHTS`); they arrive with its first byte.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

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
    if body.len() > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge {
            len: body.len(),
            limit: MAX_FRAME_BYTES,
        });
    }
    let prefix = (body.len() as u32).to_le_bytes();
    let fd = socket.as_fd().as_raw_fd();
    let total = prefix.len() + body.len();
    let mut sent = 0;
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
        match sendmsg::<()>(fd, &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(n) => sent += n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::EPIPE | nix::errno::Errno::ECONNRESET) => {
                return Err(FrameError::Closed);
            }
            Err(e) => return Err(FrameError::Io(e.into())),
        }
    }
    Ok(())
}

/// Reads one frame of at most `max_len` bytes and decodes it as `M`, with the file
/// descriptors that came with it (at most [`MAX_FDS`]; more is an error).
pub fn read_with_fds<M: Message + Default>(
    socket: impl AsFd,
    what: &'static str,
    max_len: usize,
) -> Result<(M, Vec<OwnedFd>), FrameError> {
    let mut fds = Some(Vec::new());
    let bytes = read_frame(socket.as_fd().as_raw_fd(), max_len, &mut fds)?;
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
    read_frame(socket.as_fd().as_raw_fd(), max_len, &mut None)
}

fn decode<M: Message + Default>(bytes: &[u8], what: &'static str) -> Result<M, FrameError> {
    M::decode(bytes).map_err(|source| FrameError::Malformed { what, source })
}

/// Reads a length prefix and the body; collects passed descriptors into `fds` when it is
/// `Some`, and otherwise reads without a control buffer, so the kernel discards them.
fn read_frame(
    fd: RawFd,
    max_len: usize,
    fds: &mut Option<Vec<OwnedFd>>,
) -> Result<Vec<u8>, FrameError> {
    let mut prefix = [0u8; 4];
    read_exact(fd, &mut prefix, fds)?;
    let len = u32::from_le_bytes(prefix) as usize;
    if len > max_len.min(MAX_FRAME_BYTES) {
        return Err(FrameError::TooLarge {
            len,
            limit: max_len.min(MAX_FRAME_BYTES),
        });
    }
    let mut body = vec![0u8; len];
    read_exact(fd, &mut body, fds)?;
    Ok(body)
}

fn read_exact(fd: RawFd, buf: &mut [u8], fds: &mut Option<Vec<OwnedFd>>) -> Result<(), FrameError> {
    let mut filled = 0;
    while filled < buf.len() {
        let mut cmsg_space = nix::cmsg_space!([RawFd; MAX_FDS]);
        let mut iov = [IoSliceMut::new(&mut buf[filled..])];
        let control = if fds.is_some() {
            Some(cmsg_space.as_mut_slice())
        } else {
            None
        };
        let msg = match recvmsg::<()>(fd, &mut iov, control, MsgFlags::MSG_CMSG_CLOEXEC) {
            Ok(msg) => msg,
            Err(nix::errno::Errno::EINTR) => continue,
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
    }
    Ok(())
}
