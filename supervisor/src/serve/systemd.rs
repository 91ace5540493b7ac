//! systemd's readiness protocol (`sd_notify`): one datagram to `$NOTIFY_SOCKET`.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

use tracing::warn;

/// Sends `state` (e.g. `READY=1`) when the supervisor runs under a notify-aware manager.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let path = path.to_string_lossy().into_owned();
    let address = match path.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
        None => SocketAddr::from_pathname(&path),
    };
    let sent = address.and_then(|address| {
        let socket = UnixDatagram::unbound()?;
        let message = format!("{state}\nMAINPID={}", std::process::id());
        socket.send_to_addr(message.as_bytes(), &address)
    });
    if let Err(e) = sent {
        warn!("cannot notify {path}: {e}");
    }
}
