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
const MAX_FDS: usize = 4;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the connection.
    #[error("connection closed by peer")]
    Closed,
    /// The socket failed.
    #[error("socket: {0}")]
    Io(#[from] io::Error),
    /// The length prefix exceeds [`MAX_FRAME_BYTES`].
    #[error("frame of {len} bytes exceeds the limit of {MAX_FRAME_BYTES} bytes")]
    TooLarge {
        /// The announced length.
        len: usize,
    },
    /// The frame is not a valid message of the expected type.
    #[error("malformed {what}: {source}")]
    Malformed {
        /// The message type expected.
        what: &'static str,
        /// What the decoder found.
        source: prost::DecodeError,
    },
}

/// Encodes `message` as one frame (length prefix included).
pub fn encode<M: Message>(message: &M) -> Vec<u8> {
    let len = message.encoded_len();
    let mut buf = Vec::with_capacity(4 + len);
    buf.extend_from_slice(&(len as u32).to_le_bytes());
    message
        .encode(&mut buf)
        .expect("a Vec grows to fit any message");
    buf
}

/// Writes `message` as one frame, passing `fds` with it.
pub fn write<M: Message>(socket: impl AsFd, message: &M, fds: &[RawFd]) -> Result<(), FrameError> {
    write_bytes(socket, &encode(message), fds)
}

/// Writes an already encoded frame, passing `fds` with its first byte.
pub fn write_bytes(socket: impl AsFd, frame: &[u8], fds: &[RawFd]) -> Result<(), FrameError> {
    let fd = socket.as_fd().as_raw_fd();
    let mut sent = 0;
    while sent < frame.len() {
        let iov = [IoSlice::new(&frame[sent..])];
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

/// Reads one frame and decodes it as `M`, returning any file descriptors that came with it.
pub fn read<M: Message + Default>(
    socket: impl AsFd,
    what: &'static str,
) -> Result<(M, Vec<OwnedFd>), FrameError> {
    let (bytes, fds) = read_bytes(socket)?;
    let message =
        M::decode(bytes.as_slice()).map_err(|source| FrameError::Malformed { what, source })?;
    Ok((message, fds))
}

/// Reads one frame's message bytes and any file descriptors passed with it.
pub fn read_bytes(socket: impl AsFd) -> Result<(Vec<u8>, Vec<OwnedFd>), FrameError> {
    let fd = socket.as_fd().as_raw_fd();
    let mut fds = Vec::new();
    let mut prefix = [0u8; 4];
    read_exact(fd, &mut prefix, &mut fds)?;
    let len = u32::from_le_bytes(prefix) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge { len });
    }
    let mut body = vec![0u8; len];
    read_exact(fd, &mut body, &mut fds)?;
    Ok((body, fds))
}

fn read_exact(fd: RawFd, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> Result<(), FrameError> {
    let mut filled = 0;
    while filled < buf.len() {
        let mut cmsg_space = nix::cmsg_space!([RawFd; MAX_FDS]);
        let mut iov = [IoSliceMut::new(&mut buf[filled..])];
        let msg = match recvmsg::<()>(
            fd,
            &mut iov,
            Some(&mut cmsg_space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => msg,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::ECONNRESET) => return Err(FrameError::Closed),
            Err(e) => return Err(FrameError::Io(e.into())),
        };
        let received = msg.bytes;
        if let Ok(cmsgs) = msg.cmsgs() {
            for cmsg in cmsgs {
                if let ControlMessageOwned::ScmRights(raw) = cmsg {
                    // SAFETY: the kernel installed these descriptors in this process for us
                    // alone; wrapping them at once makes sure each is closed exactly once.
                    fds.extend(raw.into_iter().map(|r| unsafe { OwnedFd::from_raw_fd(r) }));
                }
            }
        }
        if received == 0 {
            return Err(FrameError::Closed);
        }
        filled += received;
    }
    Ok(())
}
