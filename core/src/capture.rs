//! Capturing a guest's stdout or stderr: the first `cap` bytes in full, the last
//! [`TAIL_BYTES`] always (the tails), and the total count.
//!
//! The guest never sees a write fail because of the cap: output past it is counted and fed
//! to the tail, so a chatty tool still finishes and its final lines are still reported.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Size of the tail kept of each output stream.
pub const TAIL_BYTES: usize = 8 << 10;

/// What one stream captured.
#[derive(Debug, Default)]
pub struct Captured {
    /// The first `cap` bytes written.
    pub head: Vec<u8>,
    /// The last [`TAIL_BYTES`] written.
    pub tail: Vec<u8>,
    /// Total bytes the guest wrote.
    pub total: u64,
}

#[derive(Debug)]
struct Buffers {
    cap: usize,
    head: Vec<u8>,
    /// The last bytes that did not fit in `head`, at most [`TAIL_BYTES`] of them.
    overflow_tail: VecDeque<u8>,
    total: u64,
}

impl Buffers {
    fn write(&mut self, bytes: &[u8]) {
        self.total += bytes.len() as u64;
        let room = self.cap.saturating_sub(self.head.len()).min(bytes.len());
        self.head.extend_from_slice(&bytes[..room]);
        let overflow = &bytes[room..];
        self.overflow_tail
            .extend(&overflow[overflow.len().saturating_sub(TAIL_BYTES)..]);
        let excess = self.overflow_tail.len().saturating_sub(TAIL_BYTES);
        self.overflow_tail.drain(..excess);
    }

    fn take(&mut self) -> Captured {
        let head = std::mem::take(&mut self.head);
        let overflow: Vec<u8> = std::mem::take(&mut self.overflow_tail).into();
        // The tail is the end of everything written: the end of the head, then the overflow.
        let from_head = (TAIL_BYTES - overflow.len()).min(head.len());
        let mut tail = head[head.len() - from_head..].to_vec();
        tail.extend_from_slice(&overflow);
        Captured {
            head,
            tail,
            total: std::mem::take(&mut self.total),
        }
    }
}

/// A cloneable handle on one captured stream; give a clone to WASI, keep one to read.
#[derive(Debug, Clone)]
pub struct CaptureStream {
    buffers: Arc<Mutex<Buffers>>,
}

impl CaptureStream {
    /// A stream keeping at most `cap` bytes in full.
    pub fn new(cap: usize) -> Self {
        CaptureStream {
            buffers: Arc::new(Mutex::new(Buffers {
                cap,
                head: Vec::new(),
                overflow_tail: VecDeque::new(),
                total: 0,
            })),
        }
    }

    /// Records bytes written by the tool (a native process's pipe, read by the host).
    pub fn push(&self, bytes: &[u8]) {
        self.lock().write(bytes);
    }

    /// Takes what was captured so far, leaving the stream empty.
    pub fn take(&self) -> Captured {
        self.lock().take()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Buffers> {
        // A panic while holding this lock cannot leave the buffers inconsistent in a way
        // that matters more than losing the output, so recover from poisoning.
        self.buffers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl IsTerminal for CaptureStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CaptureStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for CaptureStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.lock().write(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(1 << 20)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CaptureStream {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for CaptureStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.lock().write(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(cap: usize, chunks: &[&[u8]]) -> Captured {
        let s = CaptureStream::new(cap);
        for c in chunks {
            s.lock().write(c);
        }
        s.take()
    }

    #[test]
    fn small_output_is_head_and_tail() {
        let c = feed(100, &[b"hello ", b"world"]);
        assert_eq!(c.head, b"hello world");
        assert_eq!(c.tail, b"hello world");
        assert_eq!(c.total, 11);
    }

    #[test]
    fn output_past_the_cap_keeps_the_true_tail() {
        let data: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
        let chunks: Vec<&[u8]> = data.chunks(777).collect();
        let c = feed(1000, &chunks);
        assert_eq!(c.head, &data[..1000]);
        assert_eq!(c.tail, &data[data.len() - TAIL_BYTES..]);
        assert_eq!(c.total, 50_000);
    }

    #[test]
    fn tail_spanning_head_and_ring_is_contiguous() {
        let data: Vec<u8> = (0..9000u32).map(|i| (i % 253) as u8).collect();
        let c = feed(8500, &[&data[..8400], &data[8400..]]);
        assert_eq!(c.head, &data[..8500]);
        assert_eq!(c.tail, &data[9000 - TAIL_BYTES..]);
    }
}
