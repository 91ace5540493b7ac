//! containerd's Task API (runtime v2, over ttrpc) on this shim's containers.
//!
//! There is no process behind a task: its pid is the shim's own, which is what containerd
//! and the CRI use to find its namespaces (the host's; pods run on the host network).
//! `exec`, `pause`, `resume`, `checkpoint`, `update` and `stats` are not offered.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use containerd_shim::api;
use containerd_shim::api::Empty;
use containerd_shim::protos::events::task::{TaskCreate, TaskDelete, TaskExit, TaskStart};
use containerd_shim::protos::protobuf::{MessageDyn, MessageField};
use containerd_shim::protos::ttrpc::{self, Code};
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Context, ExitSignal, TtrpcContext, TtrpcResult};
use oci_spec::runtime::Spec;

use crate::config::{RUNTIME_OPTIONS_TYPE, RuntimeOptions, ShimConfig};
use crate::container::{Container, Status, now};
use crate::runner::Runner;

/// The shim's containers and what runs them.
pub struct Tasks {
    namespace: String,
    pid: u32,
    publisher: RemotePublisher,
    exit: Arc<ExitSignal>,
    containers: Mutex<HashMap<String, Arc<Container>>>,
    /// Opened on the first create, with that container's runtime options.
    runner: OnceLock<Arc<Runner>>,
    /// Guards the opening of `runner`, so two creates do not load the bundle twice.
    opening: Mutex<()>,
}

impl Tasks {
    /// The service of a shim for `namespace`, publishing events through `publisher`.
    pub fn new(namespace: String, publisher: RemotePublisher, exit: Arc<ExitSignal>) -> Self {
        Tasks {
            namespace,
            pid: std::process::id(),
            publisher,
            exit,
            containers: Mutex::new(HashMap::new()),
            runner: OnceLock::new(),
            opening: Mutex::new(()),
        }
    }

    fn container(&self, id: &str) -> TtrpcResult<Arc<Container>> {
        self.containers
            .lock()
            .expect("containers lock")
            .get(id)
            .cloned()
            .ok_or_else(|| status(Code::NOT_FOUND, format!("container {id} does not exist")))
    }

    fn runner(&self, options: Option<&RuntimeOptions>) -> TtrpcResult<Arc<Runner>> {
        if let Some(runner) = self.runner.get() {
            return Ok(Arc::clone(runner));
        }
        let _opening = self.opening.lock().expect("opening lock");
        if let Some(runner) = self.runner.get() {
            return Ok(Arc::clone(runner));
        }
        let config = ShimConfig::find(options).map_err(|e| status(Code::INVALID_ARGUMENT, e))?;
        let runner = Runner::open(&config).map_err(|e| status(Code::FAILED_PRECONDITION, e))?;
        Ok(Arc::clone(self.runner.get_or_init(|| Arc::new(runner))))
    }

    fn publish(&self, topic: &str, event: Box<dyn MessageDyn>) {
        if let Err(e) = self
            .publisher
            .publish(Context::default(), topic, &self.namespace, event)
        {
            log::warn!("cannot publish {topic}: {e}");
        }
    }
}

/// Publishes the exit of `container` (what the CRI learns a container ended by).
fn exit_event(container: &Container, pid: u32) -> TaskExit {
    let (_, exit_status, exited_at) = container.status();
    TaskExit {
        container_id: container.id.clone(),
        id: container.id.clone(),
        pid,
        exit_status,
        exited_at: MessageField::from_option(exited_at),
        ..Default::default()
    }
}

/// The Task service containerd calls: the shim's [`Tasks`], shared with the threads that
/// report containers' exits.
#[derive(Clone)]
pub struct TaskService(pub Arc<Tasks>);

impl std::ops::Deref for TaskService {
    type Target = Tasks;

    fn deref(&self) -> &Tasks {
        &self.0
    }
}

impl containerd_shim::Task for TaskService {
    fn create(
        &self,
        _ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        if req.terminal {
            return Err(status(
                Code::INVALID_ARGUMENT,
                "megavisor containers have no terminal (-t)",
            ));
        }
        let options = req
            .options
            .as_ref()
            .filter(|any| any.type_url.ends_with(RUNTIME_OPTIONS_TYPE))
            .and_then(|any| RuntimeOptions::decode(&any.value));
        self.runner(options.as_ref())?;
        let exists = || status(Code::ALREADY_EXISTS, format!("container {} exists", req.id));
        if self
            .containers
            .lock()
            .expect("containers lock")
            .contains_key(&req.id)
        {
            return Err(exists()); // before anything is mounted over its root
        }
        let bundle = PathBuf::from(&req.bundle);
        let spec = Spec::load(bundle.join("config.json")).map_err(|e| {
            status(
                Code::INVALID_ARGUMENT,
                format!("{}/config.json: {e}", req.bundle),
            )
        })?;
        let (rootfs, mounted) = rootfs_of(&bundle, &spec, &req.rootfs)?;
        let unmount_on_error = |e: ttrpc::Error| {
            if mounted {
                unmount(&rootfs);
            }
            e
        };
        let container = Container::new(
            req.id.clone(),
            bundle.clone(),
            (rootfs.clone(), mounted),
            [req.stdin.clone(), req.stdout.clone(), req.stderr.clone()],
            &spec,
        )
        .map_err(|e| unmount_on_error(status(Code::INVALID_ARGUMENT, e)))?;
        {
            let mut containers = self.containers.lock().expect("containers lock");
            if containers.contains_key(&req.id) {
                return Err(unmount_on_error(exists()));
            }
            containers.insert(req.id.clone(), Arc::new(container));
        }
        self.publish(
            "/tasks/create",
            Box::new(TaskCreate {
                container_id: req.id.clone(),
                bundle: req.bundle.clone(),
                pid: self.pid,
                ..Default::default()
            }),
        );
        Ok(api::CreateTaskResponse {
            pid: self.pid,
            ..Default::default()
        })
    }

    fn start(
        &self,
        _ctx: &TtrpcContext,
        req: api::StartRequest,
    ) -> TtrpcResult<api::StartResponse> {
        let container = self.container(&req.id)?;
        let runner = self.runner(None)?;
        let tasks = Arc::clone(&self.0);
        container
            .start(runner, move |container| {
                let event = exit_event(container, tasks.pid);
                tasks.publish("/tasks/exit", Box::new(event));
            })
            .map_err(|e| status(Code::FAILED_PRECONDITION, e))?;
        self.publish(
            "/tasks/start",
            Box::new(TaskStart {
                container_id: req.id.clone(),
                pid: self.pid,
                ..Default::default()
            }),
        );
        Ok(api::StartResponse {
            pid: self.pid,
            ..Default::default()
        })
    }

    fn state(
        &self,
        _ctx: &TtrpcContext,
        req: api::StateRequest,
    ) -> TtrpcResult<api::StateResponse> {
        let container = self.container(&req.id)?;
        let (state, exit_status, exited_at) = container.status();
        Ok(api::StateResponse {
            id: container.id.clone(),
            bundle: container.bundle.to_string_lossy().into_owned(),
            pid: self.pid,
            status: match state {
                Status::Created => api::Status::CREATED,
                Status::Running => api::Status::RUNNING,
                Status::Stopped => api::Status::STOPPED,
            }
            .into(),
            stdin: container.stdin.clone(),
            stdout: container.stdout.clone(),
            stderr: container.stderr.clone(),
            exit_status,
            exited_at: MessageField::from_option(exited_at),
            ..Default::default()
        })
    }

    fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<Empty> {
        let container = self.container(&req.id)?;
        if container.kill(req.signal) {
            self.publish("/tasks/exit", Box::new(exit_event(&container, self.pid)));
            container.reported();
        }
        Ok(Empty::new())
    }

    fn wait(&self, _ctx: &TtrpcContext, req: api::WaitRequest) -> TtrpcResult<api::WaitResponse> {
        let container = self.container(&req.id)?;
        let (exit_status, exited_at) = container.wait();
        Ok(api::WaitResponse {
            exit_status,
            exited_at: MessageField::from_option(exited_at),
            ..Default::default()
        })
    }

    fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> TtrpcResult<api::DeleteResponse> {
        let container = self.container(&req.id)?;
        let (state, exit_status, exited_at) = container.status();
        if state == Status::Running {
            return Err(status(
                Code::FAILED_PRECONDITION,
                format!("container {} is running: kill it first", req.id),
            ));
        }
        self.containers
            .lock()
            .expect("containers lock")
            .remove(&req.id);
        if container.mounted_rootfs {
            unmount(&container.rootfs);
        }
        let exited_at = exited_at.unwrap_or_else(now);
        self.publish(
            "/tasks/delete",
            Box::new(TaskDelete {
                container_id: req.id.clone(),
                id: req.id.clone(),
                pid: self.pid,
                exit_status,
                exited_at: MessageField::some(exited_at.clone()),
                ..Default::default()
            }),
        );
        Ok(api::DeleteResponse {
            pid: self.pid,
            exit_status,
            exited_at: MessageField::some(exited_at),
            ..Default::default()
        })
    }

    fn pids(&self, _ctx: &TtrpcContext, req: api::PidsRequest) -> TtrpcResult<api::PidsResponse> {
        self.container(&req.id)?;
        Ok(api::PidsResponse {
            processes: vec![containerd_shim::protos::types::task::ProcessInfo {
                pid: self.pid,
                ..Default::default()
            }],
            ..Default::default()
        })
    }

    fn close_io(&self, _ctx: &TtrpcContext, _req: api::CloseIORequest) -> TtrpcResult<Empty> {
        // Standard input is not read, so there is nothing to close.
        Ok(Empty::new())
    }

    fn connect(
        &self,
        _ctx: &TtrpcContext,
        _req: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        Ok(api::ConnectResponse {
            shim_pid: self.pid,
            task_pid: self.pid,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            ..Default::default()
        })
    }

    fn shutdown(&self, _ctx: &TtrpcContext, _req: api::ShutdownRequest) -> TtrpcResult<Empty> {
        if self.containers.lock().expect("containers lock").is_empty() {
            self.exit.signal();
        }
        Ok(Empty::new())
    }
}

/// The container's root: the snapshot containerd hands over, mounted on `<bundle>/rootfs`
/// (under containerd's task directory, whatever the snapshotter: the one place a
/// supervisor's mount root must cover), or the spec's `root.path` when it handed none.
/// Returns it and whether the shim mounted it.
fn rootfs_of(
    bundle: &Path,
    spec: &Spec,
    mounts: &[containerd_shim::protos::types::mount::Mount],
) -> TtrpcResult<(PathBuf, bool)> {
    match mounts {
        [] => {
            let root = spec
                .root()
                .as_ref()
                .map_or_else(|| PathBuf::from("rootfs"), |root| root.path().clone());
            Ok((bundle.join(root), false))
        }
        mounts => {
            let target = bundle.join("rootfs");
            for (done, mount) in mounts.iter().enumerate() {
                let mounted = mount_one(mount, &target);
                if let Err(e) = mounted {
                    // What was mounted before it comes off again.
                    for _ in 0..done {
                        unmount(&target);
                    }
                    return Err(status(
                        Code::INTERNAL,
                        format!("cannot mount {} on {}: {e}", mount.source, target.display()),
                    ));
                }
            }
            Ok((target, true))
        }
    }
}

/// Mounts one of containerd's mounts on `target`: its options that are mount flags as
/// flags, the rest (an overlay's `lowerdir=`...) as data. (The crate's own helper waits
/// for a helper process through a reaper, which this shim does not run.)
fn mount_one(
    mount: &containerd_shim::protos::types::mount::Mount,
    target: &Path,
) -> nix::Result<()> {
    use nix::mount::MsFlags;
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for option in &mount.options {
        match option.as_str() {
            "bind" => flags |= MsFlags::MS_BIND,
            "rbind" => flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" => flags &= !MsFlags::MS_RDONLY,
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "noatime" => flags |= MsFlags::MS_NOATIME,
            other => data.push(other),
        }
    }
    let data = data.join(",");
    let kind = (!flags.contains(MsFlags::MS_BIND)).then_some(mount.type_.as_str());
    nix::mount::mount(
        Some(mount.source.as_str()),
        target,
        kind,
        flags,
        (!data.is_empty()).then_some(data.as_str()),
    )?;
    // A read-only bind takes a second, remounting call.
    if flags.contains(MsFlags::MS_BIND | MsFlags::MS_RDONLY) {
        nix::mount::mount(
            None::<&str>,
            target,
            None::<&str>,
            flags | MsFlags::MS_REMOUNT,
            None::<&str>,
        )?;
    }
    Ok(())
}

fn unmount(rootfs: &Path) {
    if let Err(e) = nix::mount::umount2(rootfs, nix::mount::MntFlags::MNT_DETACH) {
        log::warn!("cannot unmount {}: {e}", rootfs.display());
    }
}

/// A ttrpc error with `code` and `message`.
pub fn status(code: Code, message: impl Into<String>) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, message.into()))
}
