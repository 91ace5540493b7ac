//! The listening socket: created owner-only (or group-accessible when a group is given),
//! refusing to take over a path where another supervisor is listening.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use megavisor_core::{Error, Result};
use megavisor_wire::proto;
use nix::sys::stat::{Mode, umask};
use tracing::{info, warn};

use super::{Shared, connection};

/// Binds `path` with mode 0600, or 0660 and group `group`.
pub fn bind(path: &Path, group: Option<u32>) -> Result<UnixListener> {
    let io = |action: &'static str, e: std::io::Error| Error::Io {
        path: path.to_owned(),
        action,
        message: e.to_string(),
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| io("create the socket's directory", e))?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(io(
                "bind",
                std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "another supervisor is listening there",
                ),
            ));
        }
        std::fs::remove_file(path).map_err(|e| io("remove the stale socket", e))?;
    }
    // The umask makes the socket private from the moment it exists; a chmod after bind would
    // leave a window in which anyone could connect.
    let previous = umask(Mode::from_bits_truncate(0o177));
    let bound = UnixListener::bind(path);
    umask(previous);
    let listener = bound.map_err(|e| io("bind", e))?;
    if let Some(gid) = group {
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(|e| io("chown", e))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
            .map_err(|e| io("chmod", e))?;
    }
    Ok(listener)
}

/// Accepts connections on a thread of its own; each gets a reader thread.
pub fn spawn_acceptor(shared: Arc<Shared>, listener: UnixListener) -> std::io::Result<()> {
    let clients = Arc::new(AtomicU64::new(0));
    std::thread::Builder::new()
        .name("mv-accept".into())
        .spawn(move || {
            let mut number = 0u64;
            for stream in listener.incoming() {
                let stream = match stream {
                    Ok(stream) => stream,
                    Err(e) => {
                        // Out of descriptors (EMFILE) the pending connection stays queued:
                        // pause instead of spinning on it.
                        warn!("accept failed: {e}");
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        continue;
                    }
                };
                number += 1;
                if clients.load(Ordering::Acquire) as usize >= shared.config.max_clients {
                    info!(
                        "client {number} refused: {} clients connected",
                        shared.config.max_clients
                    );
                    connection::refuse(
                        &stream,
                        proto::ErrorKind::Busy,
                        &format!(
                            "the supervisor serves at most {} clients (--max-clients)",
                            shared.config.max_clients
                        ),
                    );
                    continue;
                }
                clients.fetch_add(1, Ordering::AcqRel);
                let shared = shared.clone();
                let connected = clients.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("mv-conn-{number}"))
                    .spawn(move || {
                        connection::serve(shared, stream, number);
                        connected.fetch_sub(1, Ordering::AcqRel);
                    });
                if let Err(e) = spawned {
                    clients.fetch_sub(1, Ordering::AcqRel);
                    warn!("cannot start a thread for client {number}: {e}");
                }
            }
        })?;
    Ok(())
}
