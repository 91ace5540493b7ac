//! The sandbox's file system: a read-only root entered with `pivot_root`, with a private
//! `/proc`, a minimal `/dev`, a private `/tmp` and the workspace, the last two writable
//! but `noexec,nosuid,nodev`.
//!
//! Without an operator's root directory, the root is a fresh tmpfs holding read-only bind
//! mounts of the host directories the spec lists (`/usr`, `/etc`, ...; symlinks such as a
//! merged `/bin -> usr/bin` are recreated as symlinks), so nothing else of the host, its
//! home directories or its sockets, is visible.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use megavisor_jail::{JailSpec, OUT_DIR, WORKSPACE};
use nix::mount::{MntFlags, MsFlags, mount, umount2};

/// Device nodes bound from the host into the sandbox's `/dev`.
/// (No `tty`: a tool must not reach a terminal, where it could type for someone else.)
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom"];

/// Builds the root and moves into it.
pub fn enter(spec: &JailSpec) -> Result<(), String> {
    // Nothing mounted from here on reaches the host's mount namespace.
    mounted(None, "/", None, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None)?;
    // The host directories to show, held open: the staging tmpfs below covers the host's
    // /tmp, where they may lie, and they are then mounted through these descriptors.
    let workspace_dir = spec.workspace.as_deref().map(HostDir::open).transpose()?;
    let out_dir = spec.out_dir.as_deref().map(HostDir::open).transpose()?;
    let base = match &spec.root {
        Some(root) => {
            // pivot_root needs the new root to be a mount point.
            mounted(
                Some(root.as_path()),
                root,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )?;
            root.clone()
        }
        None => fresh_root(spec)?,
    };
    let tmpfs = |target: &Path, mode: &str| {
        let options = format!("size={},mode={mode}", spec.tmp_bytes);
        mounted(
            Some(Path::new("tmpfs")),
            target,
            Some("tmpfs"),
            noexec(),
            Some(&options),
        )
    };
    let proc_dir = mount_point(&base, "proc")?;
    mounted(
        Some(Path::new("proc")),
        &proc_dir,
        Some("proc"),
        noexec(),
        None,
    )?;
    let dev = mount_point(&base, "dev")?;
    mounted(
        Some(Path::new("tmpfs")),
        &dev,
        Some("tmpfs"),
        noexec(),
        Some("size=65536,mode=755"),
    )?;
    for device in DEVICES {
        let host = Path::new("/dev").join(device);
        if host.exists() {
            let inside = dev.join(device);
            fs::write(&inside, b"").map_err(|e| format!("create {}: {e}", inside.display()))?;
            mounted(Some(host.as_path()), &inside, None, MsFlags::MS_BIND, None)?;
        }
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(target, dev.join(name)).map_err(|e| format!("symlink /dev/{name}: {e}"))?;
    }
    tmpfs(&mount_point(&base, "tmp")?, "1777")?;
    let workspace = mount_point(&base, WORKSPACE.trim_start_matches('/'))?;
    match &workspace_dir {
        Some(host) => {
            mounted(
                Some(&host.source()),
                &workspace,
                None,
                MsFlags::MS_BIND,
                None,
            )?;
            let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | noexec();
            mounted(None, &workspace, None, flags, None)?;
        }
        None => tmpfs(&workspace, "1777")?,
    }
    if let Some(host) = &out_dir {
        let inside = mount_point(&base, OUT_DIR.trim_start_matches('/'))?;
        mounted(Some(&host.source()), &inside, None, MsFlags::MS_BIND, None)?;
        mounted(
            None,
            &inside,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | noexec(),
            None,
        )?;
    }
    let old = mount_point(&base, ".old-root")?;
    nix::unistd::pivot_root(&base, &old)
        .map_err(|e| format!("pivot_root {}: {e}", base.display()))?;
    nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))?;
    umount2("/.old-root", MntFlags::MNT_DETACH).map_err(|e| format!("umount the old root: {e}"))?;
    // A fresh root is ours to tidy; an operator's root may be read-only already.
    let _ = fs::remove_dir("/.old-root");
    let read_only = MsFlags::MS_BIND
        | MsFlags::MS_REMOUNT
        | MsFlags::MS_RDONLY
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV;
    mounted(None, "/", None, read_only, None)
}

/// A tmpfs root with the host's read-only directories bound in.
fn fresh_root(spec: &JailSpec) -> Result<PathBuf, String> {
    let shown: Vec<(PathBuf, Option<HostDir>)> = spec
        .read_only
        .iter()
        .map(|dir| match fs::symlink_metadata(dir) {
            Ok(meta) if meta.is_dir() => HostDir::open(dir).map(|open| (dir.clone(), Some(open))),
            _ => Ok((dir.clone(), None)),
        })
        .collect::<Result<_, _>>()?;
    // The host's /tmp, hidden by a private tmpfs in this mount namespace, holds the new root
    // while it is built.
    mounted(
        Some(Path::new("tmpfs")),
        "/tmp",
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("size=1048576,mode=700"),
    )?;
    let base = PathBuf::from("/tmp/root");
    fs::create_dir(&base).map_err(|e| format!("create {}: {e}", base.display()))?;
    mounted(
        Some(Path::new("tmpfs")),
        &base,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("size=1048576,mode=755"),
    )?;
    for (dir, open) in &shown {
        let inside = base.join(
            dir.strip_prefix("/")
                .map_err(|_| format!("{} is not absolute", dir.display()))?,
        );
        match (open, fs::symlink_metadata(dir)) {
            (None, Ok(meta)) if meta.file_type().is_symlink() => {
                let target =
                    fs::read_link(dir).map_err(|e| format!("readlink {}: {e}", dir.display()))?;
                create_parent(&inside)?;
                symlink(&target, &inside)
                    .map_err(|e| format!("symlink {}: {e}", inside.display()))?;
            }
            (None, _) => continue, // absent on this host (or hidden now): nothing to show
            (Some(open), _) => {
                fs::create_dir_all(&inside)
                    .map_err(|e| format!("create {}: {e}", inside.display()))?;
                mounted(
                    Some(&open.source()),
                    &inside,
                    None,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None,
                )?;
                let flags = MsFlags::MS_BIND
                    | MsFlags::MS_REMOUNT
                    | MsFlags::MS_RDONLY
                    | MsFlags::MS_NOSUID
                    | MsFlags::MS_NODEV;
                mounted(None, &inside, None, flags, None)?;
            }
        }
    }
    Ok(base)
}

/// A host directory held open by descriptor, to be mounted even once its path is covered.
struct HostDir(fs::File);

impl HostDir {
    fn open(dir: &Path) -> Result<Self, String> {
        fs::File::open(dir)
            .map(HostDir)
            .map_err(|e| format!("open {}: {e}", dir.display()))
    }

    /// The mount source naming it through this process's descriptor table.
    fn source(&self) -> PathBuf {
        PathBuf::from(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&self.0)
        ))
    }
}

fn noexec() -> MsFlags {
    MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC
}

/// `base/name`, created if missing (an operator's root must already have it when it is
/// read-only).
fn mount_point(base: &Path, name: &str) -> Result<PathBuf, String> {
    let path = base.join(name);
    if !path.is_dir() {
        fs::create_dir_all(&path).map_err(|e| {
            format!(
                "mount point {} is missing and cannot be made: {e}",
                path.display()
            )
        })?;
    }
    Ok(path)
}

fn create_parent(path: &Path) -> Result<(), String> {
    match path.parent() {
        Some(parent) => {
            fs::create_dir_all(parent).map_err(|e| format!("create {}: {e}", parent.display()))
        }
        None => Ok(()),
    }
}

/// `mount(2)`, with an error naming what was mounted where.
fn mounted(
    source: Option<&Path>,
    target: impl AsRef<Path>,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), String> {
    let target = target.as_ref();
    mount(source, target, fstype, flags, data).map_err(|e| {
        let source = source.map_or("-".into(), |s| s.display().to_string());
        format!("mount {source} on {} ({flags:?}): {e}", target.display())
    })
}
