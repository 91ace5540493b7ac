//! A hostile client's shared memory, as the supervisor's ring reader meets it: indices and
//! slot headers of any value, messages of any bytes, each message decoded and its call
//! converted into the engine's request (arguments rendered through the entry's schema).
#![no_main]

use std::os::unix::fs::FileExt;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use megavisor_wire::proto::{self, client_message};
use megavisor_wire::ring::{Consumer, Direction, Layout, Ring};
use prost::Message;

/// A small ring (4 slots of 256 bytes, 4 KiB of spill each way) and its memfd.
fn ring() -> &'static (std::fs::File, Ring) {
    static RING: OnceLock<(std::fs::File, Ring)> = OnceLock::new();
    RING.get_or_init(|| {
        let geometry = Layout::geometry(4, 256, 4096, 4096);
        let layout = Layout::new(&geometry).expect("a valid geometry");
        let fd = nix::sys::memfd::memfd_create("fuzz-ring", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
            .expect("memfd");
        let file = std::fs::File::from(fd);
        file.set_len(layout.total_bytes() as u64).expect("sized");
        let ring = Ring::map(&file, layout).expect("mapped");
        ring.init_header(&geometry);
        (file, ring)
    })
}

fuzz_target!(|data: &[u8]| {
    let (file, ring) = ring();
    let total = ring.layout().total_bytes();
    // Everything after the header's geometry is the client's to write: its indices, its
    // sleeping flags, its slots and spill space.
    let at = 64;
    let mut memory = vec![0u8; total - at];
    let len = data.len().min(memory.len());
    memory[..len].copy_from_slice(&data[..len]);
    file.write_all_at(&memory, at as u64).expect("written");
    let mut consumer = Consumer::new(Direction::Request);
    for _ in 0..2 * ring.layout().slots() {
        let Ok(Some(bytes)) = consumer.pop(ring) else {
            break;
        };
        let Ok(message) = proto::ClientMessage::decode(bytes.as_slice()) else {
            continue;
        };
        if let Some(client_message::Body::Call(call)) = message.body {
            let _ = megavisor_driver::convert::request(megavisor_fuzz::runtime(), call);
        }
    }
});
