//! The shared-memory ring: one memfd holding a request ring (client to supervisor) and a
//! reply ring (supervisor to client), each a lock-free single-producer, single-consumer queue
//! of fixed-size slots, with per-slot spill space for messages too big for a slot.
//!
//! ```text
//! 0       header page: magic, version, geometry; then one cache line per index:
//!         request head | request tail | request sleeping | reply head | reply tail | reply sleeping
//! 4096    request slots   (slots x slot_bytes)
//!         reply slots     (slots x slot_bytes)
//!         request spill   (slots x request_spill_bytes, page-aligned)
//!         reply spill     (slots x reply_spill_bytes)
//! ```
//!
//! A slot starts with a 16-byte header: the message length (u32, little-endian) and where the
//! bytes are (0: inline after the header, 1: in the spill space of the same slot index).
//!
//! Indices are free-running `u32` sequence numbers; slot = index mod slots. Each side keeps
//! its own index privately and only *reads* the other's from shared memory, then checks it:
//! an index more than `slots` ahead, an unknown placement or a length beyond the slot's
//! capacity is a [`RingViolation`]. Messages are copied out of shared memory before anything
//! looks at them, so a peer rewriting a slot mid-read can only produce garbage bytes, which
//! the protobuf decoder then refuses.

use std::os::fd::AsFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};

use crate::proto::RingGeometry;

/// First eight bytes of a ring: `MVRING01`.
pub const MAGIC: u64 = u64::from_le_bytes(*b"MVRING01");
/// Layout version written in the header.
pub const LAYOUT_VERSION: u32 = 1;

const PAGE: u64 = 4096;
const CACHE_LINE: usize = 64;
const HEADER_BYTES: u64 = PAGE;
/// Bytes of each slot's header.
pub const SLOT_HEADER_BYTES: usize = 16;
const PLACEMENT_INLINE: u32 = 0;
const PLACEMENT_SPILL: u32 = 1;

// Offsets in the header page.
const OFF_MAGIC: usize = 0;
const OFF_VERSION: usize = 8;
const OFF_SLOTS: usize = 12;
const OFF_SLOT_BYTES: usize = 16;
const OFF_REQUEST_SPILL: usize = 20;
const OFF_REPLY_SPILL: usize = 24;
const OFF_TOTAL: usize = 32;

/// Bounds on a geometry, so that a hostile peer cannot describe an absurd ring.
const MAX_SLOTS: u32 = 1024;
const MAX_SLOT_BYTES: u32 = 1 << 20;
const MAX_SPILL_BYTES: u32 = 256 << 20;

/// Which of the two rings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to supervisor.
    Request,
    /// Supervisor to client.
    Reply,
}

impl Direction {
    fn name(self) -> &'static str {
        match self {
            Direction::Request => "request",
            Direction::Reply => "reply",
        }
    }

    /// Cache line (from the header's second) of this ring's head, tail and sleeping flag.
    fn first_index_line(self) -> usize {
        match self {
            Direction::Request => 1,
            Direction::Reply => 4,
        }
    }
}

/// A geometry that cannot describe a ring.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid ring geometry: {0}")]
pub struct GeometryError(String);

/// The peer broke the ring's rules; the connection must be dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{ring} ring violation: {detail}")]
pub struct RingViolation {
    /// `request` or `reply`.
    pub ring: &'static str,
    /// What was found.
    pub detail: String,
}

/// Why a message could not be pushed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// Every slot is taken; the consumer has not caught up.
    #[error("ring full")]
    Full,
    /// The message is larger than a slot's spill space.
    #[error("message of {len} bytes exceeds the ring's limit of {limit} bytes")]
    TooLarge {
        /// Encoded message length.
        len: usize,
        /// Largest message this ring carries.
        limit: usize,
    },
    /// The consumer's index is corrupt.
    #[error(transparent)]
    Violation(#[from] RingViolation),
}

/// Offsets of the ring's regions, computed from and checked against a geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    slots: u32,
    slot_bytes: usize,
    request_spill: usize,
    reply_spill: usize,
    request_slots_at: usize,
    reply_slots_at: usize,
    request_spill_at: usize,
    reply_spill_at: usize,
    total: usize,
}

impl Layout {
    /// A geometry for `slots` slots of `slot_bytes` and the given spill sizes, rounded up to
    /// what the layout requires (cache-line slots, page-sized spill).
    pub fn geometry(
        slots: u32,
        slot_bytes: u32,
        request_spill: u32,
        reply_spill: u32,
    ) -> RingGeometry {
        let round = |v: u32, to: u32| v.div_ceil(to).saturating_mul(to);
        let mut geometry = RingGeometry {
            slots: slots.next_power_of_two(),
            slot_bytes: round(
                slot_bytes.max(SLOT_HEADER_BYTES as u32 + 1),
                CACHE_LINE as u32,
            ),
            request_spill_bytes: round(request_spill, PAGE as u32),
            reply_spill_bytes: round(reply_spill, PAGE as u32),
            total_bytes: 0,
        };
        if let Ok(layout) = Layout::new_unchecked_total(&geometry) {
            geometry.total_bytes = layout.total as u64;
        }
        geometry
    }

    /// Checks `geometry` (including its total size) and computes the layout.
    pub fn new(geometry: &RingGeometry) -> Result<Self, GeometryError> {
        let layout = Layout::new_unchecked_total(geometry)?;
        if layout.total as u64 != geometry.total_bytes {
            return Err(GeometryError(format!(
                "total_bytes is {}, the geometry needs {}",
                geometry.total_bytes, layout.total
            )));
        }
        Ok(layout)
    }

    fn new_unchecked_total(g: &RingGeometry) -> Result<Self, GeometryError> {
        let bad = |m: String| Err(GeometryError(m));
        if g.slots == 0 || !g.slots.is_power_of_two() || g.slots > MAX_SLOTS {
            return bad(format!(
                "slots is {}, must be a power of two in 1..={MAX_SLOTS}",
                g.slots
            ));
        }
        if g.slot_bytes as usize <= SLOT_HEADER_BYTES
            || !g.slot_bytes.is_multiple_of(CACHE_LINE as u32)
            || g.slot_bytes > MAX_SLOT_BYTES
        {
            // The smallest size accepted: the first cache-line multiple past the header.
            return bad(format!(
                "slot_bytes is {}, must be a multiple of {CACHE_LINE} in {}..={MAX_SLOT_BYTES}",
                g.slot_bytes,
                (SLOT_HEADER_BYTES / CACHE_LINE + 1) * CACHE_LINE
            ));
        }
        for (name, spill) in [
            ("request_spill_bytes", g.request_spill_bytes),
            ("reply_spill_bytes", g.reply_spill_bytes),
        ] {
            if !u64::from(spill).is_multiple_of(PAGE) || spill > MAX_SPILL_BYTES {
                return bad(format!(
                    "{name} is {spill}, must be a multiple of {PAGE} up to {MAX_SPILL_BYTES}"
                ));
            }
        }
        // Every product below is bounded by MAX_SLOTS * MAX_SPILL_BYTES = 2^38: no overflow in u64.
        let slots = u64::from(g.slots);
        let slot_region = slots * u64::from(g.slot_bytes);
        let request_slots_at = HEADER_BYTES;
        let reply_slots_at = request_slots_at + slot_region;
        let request_spill_at = (reply_slots_at + slot_region).div_ceil(PAGE) * PAGE;
        let reply_spill_at = request_spill_at + slots * u64::from(g.request_spill_bytes);
        let total = reply_spill_at + slots * u64::from(g.reply_spill_bytes);
        let total = usize::try_from(total)
            .map_err(|_| GeometryError(format!("{total} bytes do not fit in memory")))?;
        Ok(Layout {
            slots: g.slots,
            slot_bytes: g.slot_bytes as usize,
            request_spill: g.request_spill_bytes as usize,
            reply_spill: g.reply_spill_bytes as usize,
            request_slots_at: request_slots_at as usize,
            reply_slots_at: reply_slots_at as usize,
            request_spill_at: request_spill_at as usize,
            reply_spill_at: reply_spill_at as usize,
            total,
        })
    }

    /// Total bytes of the mapping.
    pub fn total_bytes(&self) -> usize {
        self.total
    }

    /// Slots per ring.
    pub fn slots(&self) -> u32 {
        self.slots
    }

    /// Bytes of each slot, its header included.
    pub fn slot_bytes(&self) -> usize {
        self.slot_bytes
    }

    /// Largest message `direction` carries (the larger of inline and spill capacity).
    pub fn max_message(&self, direction: Direction) -> usize {
        let spill = match direction {
            Direction::Request => self.request_spill,
            Direction::Reply => self.reply_spill,
        };
        spill.max(self.inline_capacity())
    }

    fn inline_capacity(&self) -> usize {
        self.slot_bytes - SLOT_HEADER_BYTES
    }

    fn regions(&self, direction: Direction) -> (usize, usize, usize) {
        match direction {
            Direction::Request => (
                self.request_slots_at,
                self.request_spill_at,
                self.request_spill,
            ),
            Direction::Reply => (self.reply_slots_at, self.reply_spill_at, self.reply_spill),
        }
    }
}

/// A mapped ring. Both processes map the same memfd; every access to the shared bytes goes
/// through this type's atomics and bounded copies.
#[derive(Debug)]
pub struct Ring {
    base: NonNull<u8>,
    layout: Layout,
}

// SAFETY: the mapping is plain shared memory owned by this value until drop. All concurrent
// access is either through `AtomicU32` indices or copies into and out of slots that the
// ring protocol hands to one side at a time (and a hostile peer breaking that protocol can
// only corrupt bytes we copy and then validate, never our own memory).
unsafe impl Send for Ring {}
// SAFETY: as above; `&Ring` methods never create references to non-atomic shared bytes.
unsafe impl Sync for Ring {}

impl Ring {
    /// Maps `fd` (a memfd of at least `layout.total_bytes()`) read-write, shared.
    pub fn map(fd: impl AsFd, layout: Layout) -> std::io::Result<Self> {
        let len = std::num::NonZeroUsize::new(layout.total).expect("a layout is never empty");
        // SAFETY: a fresh shared mapping that nothing else in this process aliases. The file
        // is at least `len` bytes and sealed against shrinking (the supervisor creates and
        // seals it before mapping; the client checks size and seals before mapping), so no
        // access within the mapping can fault.
        let base = unsafe {
            mmap(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                fd,
                0,
            )
        }?;
        Ok(Ring {
            base: base.cast(),
            layout,
        })
    }

    /// The layout this ring was mapped with.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Writes the header (creator side, before the memfd is handed over).
    pub fn init_header(&self, geometry: &RingGeometry) {
        self.write_bytes(OFF_MAGIC, &MAGIC.to_le_bytes());
        self.write_bytes(OFF_VERSION, &LAYOUT_VERSION.to_le_bytes());
        self.write_bytes(OFF_SLOTS, &geometry.slots.to_le_bytes());
        self.write_bytes(OFF_SLOT_BYTES, &geometry.slot_bytes.to_le_bytes());
        self.write_bytes(
            OFF_REQUEST_SPILL,
            &geometry.request_spill_bytes.to_le_bytes(),
        );
        self.write_bytes(OFF_REPLY_SPILL, &geometry.reply_spill_bytes.to_le_bytes());
        self.write_bytes(OFF_TOTAL, &geometry.total_bytes.to_le_bytes());
    }

    /// Checks that the header describes `geometry` (the side that did not create the ring).
    pub fn check_header(&self, geometry: &RingGeometry) -> Result<(), GeometryError> {
        let u32_at = |off| u32::from_le_bytes(self.read_array(off));
        let magic = u64::from_le_bytes(self.read_array(OFF_MAGIC));
        let found = RingGeometry {
            slots: u32_at(OFF_SLOTS),
            slot_bytes: u32_at(OFF_SLOT_BYTES),
            request_spill_bytes: u32_at(OFF_REQUEST_SPILL),
            reply_spill_bytes: u32_at(OFF_REPLY_SPILL),
            total_bytes: u64::from_le_bytes(self.read_array(OFF_TOTAL)),
        };
        if magic != MAGIC || u32_at(OFF_VERSION) != LAYOUT_VERSION || &found != geometry {
            return Err(GeometryError(format!(
                "ring header (magic {magic:#x}, version {}, {found:?}) does not match the handshake ({geometry:?})",
                u32_at(OFF_VERSION)
            )));
        }
        Ok(())
    }

    fn index(&self, direction: Direction, which: usize) -> &AtomicU32 {
        let offset = (direction.first_index_line() + which) * CACHE_LINE;
        // SAFETY: the offset is a cache-line multiple inside the header page, so aligned and in
        // bounds; AtomicU32 has the layout of u32 and shared memory may be accessed atomically
        // by both processes.
        unsafe { &*self.base.as_ptr().add(offset).cast::<AtomicU32>() }
    }

    fn head(&self, d: Direction) -> &AtomicU32 {
        self.index(d, 0)
    }

    fn tail(&self, d: Direction) -> &AtomicU32 {
        self.index(d, 1)
    }

    fn sleeping(&self, d: Direction) -> &AtomicU32 {
        self.index(d, 2)
    }

    /// The consumer of `direction` is about to sleep: after this, producers ring its doorbell.
    /// The consumer must look for messages once more before actually sleeping.
    pub fn announce_sleep(&self, direction: Direction) {
        self.sleeping(direction).store(1, Ordering::SeqCst);
    }

    /// Whether the consumer of `direction` has announced it is sleeping (for producers of
    /// something other than a message, e.g. freed capacity, that the consumer waits on).
    pub fn consumer_sleeping(&self, direction: Direction) -> bool {
        self.sleeping(direction).load(Ordering::SeqCst) != 0
    }

    /// The consumer of `direction` is awake again.
    pub fn cancel_sleep(&self, direction: Direction) {
        self.sleeping(direction).store(0, Ordering::Relaxed);
    }

    /// Gives the memory of the spill space of message `index` back to the system (it reads
    /// as zeros until written again). Only for a message the consumer has taken: a peer
    /// reading it anyway sees zeros, nothing of ours.
    pub fn discard_spill(&self, direction: Direction, index: u32) {
        let (_, spill_at, spill) = self.layout.regions(direction);
        let slot = (index & (self.layout.slots - 1)) as usize;
        if spill == 0 {
            return;
        }
        // SAFETY: the range is one slot's spill space inside the mapping, page-aligned
        // (spill sizes and offsets are page multiples); MADV_REMOVE frees the pages of the
        // shared file behind it without unmapping anything.
        unsafe {
            libc::madvise(
                self.base.as_ptr().add(spill_at + slot * spill).cast(),
                spill,
                libc::MADV_REMOVE,
            );
        }
    }

    fn write_bytes(&self, offset: usize, bytes: &[u8]) {
        assert!(
            offset + bytes.len() <= self.layout.total,
            "write within the mapping"
        );
        // SAFETY: bounds checked above; the destination is shared memory owned by the mapping,
        // which no Rust reference aliases.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.base.as_ptr().add(offset),
                bytes.len(),
            )
        }
    }

    fn read_into(&self, offset: usize, out: &mut [u8]) {
        assert!(
            offset + out.len() <= self.layout.total,
            "read within the mapping"
        );
        // SAFETY: bounds checked above; the peer may be writing these bytes concurrently, which
        // can only give us garbage values in our own buffer, checked by the caller.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.base.as_ptr().add(offset),
                out.as_mut_ptr(),
                out.len(),
            )
        }
    }

    fn read_array<const N: usize>(&self, offset: usize) -> [u8; N] {
        let mut out = [0u8; N];
        self.read_into(offset, &mut out);
        out
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: the mapping was created in `map` with this base and length and is unmapped
        // once; no reference into it outlives `self`.
        let _ = unsafe { munmap(self.base.cast(), self.layout.total) };
    }
}

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    /// The consumer had announced it is sleeping: ring its doorbell.
    pub wake: bool,
    /// The index of the message, when it went to its slot's spill space (which stays
    /// resident until [`Ring::discard_spill`] gives it back once consumed).
    pub spilled: Option<u32>,
}

/// The producing end of one ring; holds the head privately.
#[derive(Debug)]
pub struct Producer {
    direction: Direction,
    head: u32,
}

impl Producer {
    /// The producer of `direction`, starting at index 0.
    pub fn new(direction: Direction) -> Self {
        Producer { direction, head: 0 }
    }

    /// Slots holding messages the consumer has not taken yet (checked against the ring size).
    pub fn in_use(&self, ring: &Ring) -> Result<u32, RingViolation> {
        let tail = ring.tail(self.direction).load(Ordering::Acquire);
        let used = self.head.wrapping_sub(tail);
        if used > ring.layout.slots {
            return Err(violation(
                self.direction,
                format!(
                    "consumer tail {tail} is {} slots behind head {}; the ring has {}",
                    used, self.head, ring.layout.slots
                ),
            ));
        }
        Ok(used)
    }

    /// Whether the message pushed at `index` has been taken by the consumer.
    pub fn consumed(&self, ring: &Ring, index: u32) -> Result<bool, RingViolation> {
        let tail = self.head.wrapping_sub(self.in_use(ring)?);
        Ok((tail.wrapping_sub(index) as i32) > 0)
    }

    /// Copies `message` into the next slot and publishes it. Says whether the consumer
    /// announced it is sleeping, in which case the caller rings its doorbell (after letting
    /// go of whatever lock guards this producer).
    pub fn push(&mut self, ring: &Ring, message: &[u8]) -> Result<Pushed, PushError> {
        let layout = &ring.layout;
        let limit = layout.max_message(self.direction);
        if message.len() > limit {
            return Err(PushError::TooLarge {
                len: message.len(),
                limit,
            });
        }
        if self.in_use(ring)? == layout.slots {
            return Err(PushError::Full);
        }
        let slot = (self.head & (layout.slots - 1)) as usize;
        let (slots_at, spill_at, spill) = layout.regions(self.direction);
        let slot_at = slots_at + slot * layout.slot_bytes;
        let index = self.head;
        let (placement, spilled) = if message.len() <= layout.inline_capacity() {
            ring.write_bytes(slot_at + SLOT_HEADER_BYTES, message);
            (PLACEMENT_INLINE, None)
        } else {
            ring.write_bytes(spill_at + slot * spill, message);
            (PLACEMENT_SPILL, Some(index))
        };
        let mut header = [0u8; SLOT_HEADER_BYTES];
        header[..4].copy_from_slice(&(message.len() as u32).to_le_bytes());
        header[4..8].copy_from_slice(&placement.to_le_bytes());
        ring.write_bytes(slot_at, &header);
        self.head = self.head.wrapping_add(1);
        // SeqCst pairs with the consumer's `announce_sleep` then re-check: either it sees this
        // head, or we see its sleeping flag and ring.
        ring.head(self.direction).store(self.head, Ordering::SeqCst);
        Ok(Pushed {
            wake: ring.sleeping(self.direction).load(Ordering::SeqCst) != 0,
            spilled,
        })
    }
}

/// The consuming end of one ring; holds the tail privately.
#[derive(Debug)]
pub struct Consumer {
    direction: Direction,
    tail: u32,
}

impl Consumer {
    /// The consumer of `direction`, starting at index 0.
    pub fn new(direction: Direction) -> Self {
        Consumer { direction, tail: 0 }
    }

    /// Messages published and not yet taken (checked against the ring size).
    pub fn available(&self, ring: &Ring) -> Result<u32, RingViolation> {
        let head = ring.head(self.direction).load(Ordering::Acquire);
        let available = head.wrapping_sub(self.tail);
        if available > ring.layout.slots {
            return Err(violation(
                self.direction,
                format!(
                    "producer head {head} is {available} slots ahead of tail {}; the ring has {}",
                    self.tail, ring.layout.slots
                ),
            ));
        }
        Ok(available)
    }

    /// Copies the next message out of the ring and frees its slot; `None` when empty.
    pub fn pop(&mut self, ring: &Ring) -> Result<Option<Vec<u8>>, RingViolation> {
        if self.available(ring)? == 0 {
            return Ok(None);
        }
        let layout = &ring.layout;
        let slot = (self.tail & (layout.slots - 1)) as usize;
        let (slots_at, spill_at, spill) = layout.regions(self.direction);
        let slot_at = slots_at + slot * layout.slot_bytes;
        let header: [u8; 8] = ring.read_array(slot_at);
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let placement = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        let (at, capacity) = match placement {
            PLACEMENT_INLINE => (slot_at + SLOT_HEADER_BYTES, layout.inline_capacity()),
            PLACEMENT_SPILL => (spill_at + slot * spill, spill),
            other => {
                return Err(violation(
                    self.direction,
                    format!("slot {slot} has unknown placement {other}"),
                ));
            }
        };
        if len > capacity {
            return Err(violation(
                self.direction,
                format!("slot {slot} claims {len} bytes, its capacity is {capacity}"),
            ));
        }
        let mut message = vec![0u8; len];
        ring.read_into(at, &mut message);
        self.tail = self.tail.wrapping_add(1);
        ring.tail(self.direction)
            .store(self.tail, Ordering::Release);
        Ok(Some(message))
    }
}

fn violation(direction: Direction, detail: String) -> RingViolation {
    RingViolation {
        ring: direction.name(),
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(slots: u32) -> (Ring, RingGeometry) {
        let geometry = Layout::geometry(slots, 128, 8192, 8192);
        let layout = Layout::new(&geometry).unwrap();
        let file = tempfile_memfd(layout.total_bytes());
        let ring = Ring::map(&file, layout).unwrap();
        ring.init_header(&geometry);
        (ring, geometry)
    }

    fn tempfile_memfd(len: usize) -> std::fs::File {
        let fd = nix::sys::memfd::memfd_create("ring-test", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
            .unwrap();
        let file = std::fs::File::from(fd);
        file.set_len(len as u64).unwrap();
        file
    }

    #[test]
    fn messages_round_trip_inline_and_spilled_in_order() {
        let (ring, geometry) = ring(4);
        ring.check_header(&geometry).unwrap();
        let mut producer = Producer::new(Direction::Request);
        let mut consumer = Consumer::new(Direction::Request);
        for round in 0..10u8 {
            let small = vec![round; 10];
            let big = vec![round; 5000];
            producer.push(&ring, &small).unwrap();
            producer.push(&ring, &big).unwrap();
            assert_eq!(consumer.pop(&ring).unwrap().unwrap(), small);
            assert_eq!(consumer.pop(&ring).unwrap().unwrap(), big);
            assert_eq!(consumer.pop(&ring).unwrap(), None);
        }
    }

    #[test]
    fn a_producer_knows_what_was_consumed_and_spilled() {
        let (ring, _) = ring(4);
        let mut producer = Producer::new(Direction::Reply);
        let mut consumer = Consumer::new(Direction::Reply);
        assert_eq!(producer.push(&ring, b"small").unwrap().spilled, None);
        let big = producer.push(&ring, &[5; 5000]).unwrap();
        assert_eq!(big.spilled, Some(1));
        assert!(!producer.consumed(&ring, 0).unwrap());
        consumer.pop(&ring).unwrap();
        assert!(producer.consumed(&ring, 0).unwrap() && !producer.consumed(&ring, 1).unwrap());
        assert_eq!(consumer.pop(&ring).unwrap().unwrap(), vec![5; 5000]);
        assert!(producer.consumed(&ring, 1).unwrap());
        ring.discard_spill(Direction::Reply, 1);
        // The pages read back as zeros, and the slot is as good as new.
        producer.push(&ring, &[6; 5000]).unwrap();
        producer.push(&ring, &[7; 5000]).unwrap();
        producer.push(&ring, &[8; 5000]).unwrap();
        producer.push(&ring, &[9; 5000]).unwrap();
        for expected in [6, 7, 8, 9] {
            assert_eq!(consumer.pop(&ring).unwrap().unwrap(), vec![expected; 5000]);
        }
    }

    #[test]
    fn full_ring_and_oversized_messages_are_refused() {
        let (ring, _) = ring(2);
        let mut producer = Producer::new(Direction::Reply);
        producer.push(&ring, b"a").unwrap();
        producer.push(&ring, b"b").unwrap();
        assert_eq!(producer.push(&ring, b"c"), Err(PushError::Full));
        assert_eq!(
            producer.push(&ring, &vec![0; 8193]),
            Err(PushError::TooLarge {
                len: 8193,
                limit: 8192
            })
        );
    }

    #[test]
    fn corrupt_indices_and_slots_are_violations() {
        let (ring, _) = ring(4);
        let mut consumer = Consumer::new(Direction::Request);
        ring.head(Direction::Request).store(1000, Ordering::SeqCst);
        assert!(
            consumer
                .pop(&ring)
                .unwrap_err()
                .detail
                .contains("1000 slots ahead")
        );

        ring.head(Direction::Request).store(1, Ordering::SeqCst);
        let slot_at = ring.layout.request_slots_at;
        ring.write_bytes(slot_at, &u32::MAX.to_le_bytes());
        assert!(consumer.pop(&ring).unwrap_err().detail.contains("capacity"));
        ring.write_bytes(slot_at + 4, &7u32.to_le_bytes());
        assert!(
            consumer
                .pop(&ring)
                .unwrap_err()
                .detail
                .contains("placement 7")
        );

        let mut producer = Producer::new(Direction::Request);
        ring.tail(Direction::Request).store(50, Ordering::SeqCst);
        assert!(matches!(
            producer.push(&ring, b"x"),
            Err(PushError::Violation(_))
        ));
    }

    #[test]
    fn header_and_geometry_are_checked() {
        let (ring, geometry) = ring(4);
        let mut other = geometry;
        other.slots = 8;
        assert!(ring.check_header(&other).is_err());
        let mut wrong_total = geometry;
        wrong_total.total_bytes += 1;
        assert!(Layout::new(&wrong_total).is_err());
        assert!(
            Layout::new(&RingGeometry {
                slots: 3,
                ..geometry
            })
            .is_err()
        );
    }
}
