//! What runs a container's process: the driver (the node's supervisor, or the bundle loaded
//! in the shim), and the one decision of this shim, made for every process: which entry
//! stands for `args[0]`, found in the image map by the content of the file it resolves to.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::str::FromStr;

use megavisor_core::capability::Grant;
use megavisor_core::{Access, Capability, Policy, TrustPolicy};
use megavisor_driver::{Call, Driver, EmbeddedOptions, Tool};
use megavisor_image::{Disposition, MappedRoot};
use nix::fcntl::OFlag;

use crate::config::ShimConfig;

/// `PATH` when the process's environment sets none (what runc's images assume).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A process that may not start, and the exit status and message it ends with instead, as
/// a shell's `exec` would: 126 for a file that may not run, 127 for one not found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The exit status reported for the process.
    pub exit_status: u32,
    /// Written to the process's stderr.
    pub message: String,
}

impl Refusal {
    fn denied(message: impl Into<String>) -> Self {
        Refusal {
            exit_status: 126,
            message: message.into(),
        }
    }

    fn from_error(err: megavisor_core::Error) -> Self {
        let exit_status = match err.kind() {
            megavisor_core::ErrorKind::ToolNotFound => 127,
            _ => 126,
        };
        Refusal {
            exit_status,
            message: err.to_string(),
        }
    }
}

/// A container's process, from its OCI spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    /// argv.
    pub args: Vec<String>,
    /// `NAME=VALUE` pairs.
    pub env: Vec<String>,
    /// The working directory inside the image.
    pub cwd: String,
}

/// What stands for a container's process.
pub enum Work {
    /// A call of a bundle entry.
    Call(Call),
    /// The image's own binary, which the map runs natively: `megavisor run-image` on the
    /// container's root runs it in the native sandbox behind the exec gate.
    Native(Command),
}

/// The driver and what the shim knows of its bundle.
pub struct Runner {
    driver: Driver,
    config: ShimConfig,
    bundle_name: String,
    manifest_digest: String,
    tools: HashMap<String, Tool>,
    trust: TrustPolicy,
}

impl Runner {
    /// Connects to the supervisor, or loads the bundle, as `config` says.
    pub fn open(config: &ShimConfig) -> Result<Self, String> {
        let keys = config.keys();
        let driver = match &config.socket {
            Some(socket) => Driver::connect(Some(socket))
                .map_err(|e| format!("cannot reach the supervisor at {}: {e}", socket.display()))?,
            None => {
                let options = EmbeddedOptions {
                    bundle: config.bundle_dir(),
                    trusted_keys: keys.clone(),
                    policy: Policy::default(),
                };
                Driver::embedded(&options).map_err(|e| e.to_string())?
            }
        };
        let list = driver.tools().map_err(|e| e.to_string())?;
        let trust = TrustPolicy::from_key_files(&keys).map_err(|e| e.to_string())?;
        Ok(Runner {
            driver,
            config: config.clone(),
            bundle_name: list.bundle,
            manifest_digest: list.manifest_sha256,
            tools: list
                .tools
                .into_iter()
                .map(|tool| (tool.name.clone(), tool))
                .collect(),
            trust,
        })
    }

    /// The driver calls go to.
    pub fn driver(&self) -> &Driver {
        &self.driver
    }

    /// What stands for `process` of the image whose root is `rootfs`, or why the process
    /// may not run.
    pub fn prepare(&self, rootfs: &Path, process: &Process) -> Result<Work, Refusal> {
        let mapped = MappedRoot::open(rootfs, &self.trust).map_err(Refusal::from_error)?;
        mapped
            .map()
            .check_bundle(&self.bundle_name, &self.manifest_digest)
            .map_err(Refusal::from_error)?;
        let (command, args) = process
            .args
            .split_first()
            .ok_or_else(|| Refusal::denied("the container's process has no args"))?;
        let path = find_command(&mapped, command, &process.env, &process.cwd)?;
        let resolved = mapped.resolve(&path).map_err(Refusal::from_error)?;
        let tool = match &resolved.run {
            Disposition::Entry(tool) => tool,
            Disposition::Native => return self.native(rootfs, &path, args),
            Disposition::Denied => {
                return Err(Refusal::denied(format!(
                    "EACCES: {path} (sha256 {}) is not in the image map as runnable",
                    resolved.digests.sha256
                )));
            }
        };
        let Some(declared) = self.tools.get(tool) else {
            return Err(Refusal {
                exit_status: 127,
                message: format!(
                    "{path} maps to the entry {tool}, which bundle {:?} does not have",
                    self.bundle_name
                ),
            });
        };
        let capabilities: Vec<Capability> = declared
            .capabilities
            .iter()
            .filter_map(|c| Capability::from_str(c).ok())
            .collect();
        let grant = Grant::new(tool, &capabilities, None).map_err(Refusal::from_error)?;
        let mut call = Call::new(tool).args(args.iter().cloned());
        // The image's variables the entry may see; the rest (PATH, HOSTNAME, ...) are the
        // container's business, not the tool's.
        for pair in &process.env {
            if let Some((name, value)) = pair.split_once('=')
                && grant.check_env(tool, name).is_ok()
            {
                call = call.env(name, value);
            }
        }
        if grant.check_mount(tool, "/", Access::ReadOnly).is_ok() {
            call = call.mount(rootfs.to_string_lossy(), "/", false);
        }
        Ok(Work::Call(call))
    }

    /// `megavisor run-image ROOTFS PATH ARGS`, which checks the map again and runs the
    /// binary natively; it needs the bundle on this node (the config's `bundle`).
    fn native(&self, rootfs: &Path, path: &str, args: &[String]) -> Result<Work, Refusal> {
        let megavisor = std::env::current_exe()
            .map(|exe| exe.with_file_name("megavisor"))
            .map_err(|e| Refusal::denied(format!("cannot find the megavisor program: {e}")))?;
        let mut command = Command::new(megavisor);
        command
            .arg("run-image")
            .arg("--bundle")
            .arg(self.config.bundle_dir());
        for key in self.config.keys() {
            command.arg("--trusted-key").arg(key);
        }
        if let Some(allowlist) = &self.config.allowlist {
            command.arg("--allowlist").arg(allowlist);
        }
        command.arg(rootfs).arg(path).args(args).env_clear();
        Ok(Work::Native(command))
    }
}

/// Where `command` lies in the image: itself when it names a path, else the first match on
/// the process's `PATH`, looked up inside the image.
fn find_command(
    mapped: &MappedRoot,
    command: &str,
    env: &[String],
    cwd: &str,
) -> Result<String, Refusal> {
    if command.contains('/') {
        return Ok(if command.starts_with('/') {
            command.to_owned()
        } else {
            format!("{}/{command}", cwd.trim_end_matches('/'))
        });
    }
    let path = env
        .iter()
        .find_map(|pair| pair.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    path.split(':')
        .filter(|dir| dir.starts_with('/'))
        .map(|dir| format!("{}/{command}", dir.trim_end_matches('/')))
        .find(|candidate| {
            // The first regular file of that name: a directory on PATH is searched past.
            mapped
                .root()
                .open_inside(candidate, OFlag::O_PATH)
                .is_ok_and(|fd| {
                    std::fs::File::from(fd)
                        .metadata()
                        .is_ok_and(|m| m.is_file())
                })
        })
        .ok_or_else(|| Refusal {
            exit_status: 127,
            message: format!("{command}: not found in the image on PATH {path}"),
        })
}
