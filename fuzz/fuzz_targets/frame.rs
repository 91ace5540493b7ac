//! Bytes a peer writes on the socket: the hello, then length-prefixed frames, each decoded
//! as a client message, as the supervisor reads them. A frame's announced length never
//! makes the reader allocate past its limit.
#![no_main]

use std::io::Write;
use std::os::unix::net::UnixStream;

use libfuzzer_sys::fuzz_target;
use megavisor_wire::frame;
use megavisor_wire::proto;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    // Small enough for the socket's buffer, so one thread can write it all first.
    if data.len() > 64 << 10 {
        return;
    }
    let (mut peer, ours) = UnixStream::pair().expect("a socket pair");
    peer.write_all(data).expect("buffered");
    drop(peer);
    if frame::read::<proto::Hello>(&ours, "hello", 4096).is_err() {
        return;
    }
    while let Ok(bytes) = frame::read_bytes(&ours, 1 << 20) {
        let _ = proto::ClientMessage::decode(bytes.as_slice());
    }
});
