//! The shim binary's side of containerd's runtime v2 protocol: `start` (spawn, or find, the
//! shim serving the container's group), `delete` (clean up after a shim that died), and the
//! server that offers the Task API.

use std::path::Path;
use std::sync::Arc;

use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Config, DeleteResponse, ExitSignal, Flags, StartOpts};
use oci_spec::runtime::Spec;

use crate::container::now;
use crate::task::{TaskService, Tasks};

/// The annotation naming a pod's sandbox on each of its containers: the containers of one
/// pod share one shim.
const SANDBOX_ID_ANNOTATION: &str = "io.kubernetes.cri.sandbox-id";

/// One shim process.
pub struct Service {
    namespace: String,
    id: String,
    bundle: String,
    exit: Arc<ExitSignal>,
}

impl containerd_shim::Shim for Service {
    type T = TaskService;

    fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        Service {
            namespace: args.namespace.clone(),
            id: args.id.clone(),
            bundle: args.bundle.clone(),
            exit: Arc::new(ExitSignal::default()),
        }
    }

    fn start_shim(&mut self, opts: StartOpts) -> containerd_shim::Result<String> {
        spawn_server(opts)
    }

    fn delete_shim(&mut self) -> containerd_shim::Result<DeleteResponse> {
        // The shim serving this container is gone; what it mounted goes too.
        let bundle = if self.bundle.is_empty() {
            std::env::current_dir().unwrap_or_default()
        } else {
            self.bundle.clone().into()
        };
        let rootfs = bundle.join("rootfs");
        if is_mount_point(&rootfs) {
            let _ = nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH);
        }
        log::info!(
            "shim of container {} in {} deleted",
            self.id,
            self.namespace
        );
        Ok(DeleteResponse {
            exit_status: 128 + libc::SIGKILL as u32,
            exited_at: containerd_shim::protos::protobuf::MessageField::some(now()),
            ..Default::default()
        })
    }

    fn wait(&mut self) {
        self.exit.wait();
    }

    fn create_task_service(&self, publisher: RemotePublisher) -> Self::T {
        TaskService(Arc::new(Tasks::new(
            self.namespace.clone(),
            publisher,
            Arc::clone(&self.exit),
        )))
    }
}

/// The crate's settings for this shim. It waits for its own children (a native binary's
/// `megavisor run-image`): a reaper of every child would take the exit statuses they are
/// waited for by, and a subreaper would inherit, and never reap, what such a child leaves
/// behind.
pub fn config() -> Config {
    Config {
        no_reaper: true,
        no_sub_reaper: true,
        ..Config::default()
    }
}

/// Starts (or finds) the server of the container's group and returns its address. Run in
/// the container's bundle directory: a pod's containers go to the shim of its sandbox.
fn spawn_server(opts: StartOpts) -> containerd_shim::Result<String> {
    let grouping = Spec::load("config.json")
        .ok()
        .and_then(|spec| spec.annotations().clone())
        .and_then(|annotations| annotations.get(SANDBOX_ID_ANNOTATION).cloned())
        .unwrap_or_else(|| opts.id.clone());
    let (_pid, address) = containerd_shim::spawn(opts, &grouping, Vec::new())?;
    Ok(address)
}

/// Whether `path` is a mount point (its device differs from its parent's).
fn is_mount_point(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(inner), Some(Ok(outer))) = (
        std::fs::metadata(path),
        path.parent().map(std::fs::metadata),
    ) else {
        return false;
    };
    inner.dev() != outer.dev()
}
