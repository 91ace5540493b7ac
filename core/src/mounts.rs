//! Where a call's mounts come from.
//!
//! This process's own calls (embedded ones) may mount any directory the process can open:
//! the caller is the process. A peer's calls may only name directories under the operator's
//! [`MountRoot`]s (none by default, so no mounts at all): each is resolved beneath its root,
//! so no `..`, absolute symlink or `/proc` magic link leads out of it, and opened, like every
//! file the guest then reaches through it, with the peer's own credentials (see
//! `peer_access`). A peer reaches nothing through a mount that it could not reach itself.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};

use crate::caller::Credentials;
use crate::capability::Access;
use crate::error::{Error, Result};

/// A host directory under which peers' mounts may lie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountRoot {
    /// The directory (absolute; the supervisor resolves it when it starts).
    pub path: PathBuf,
    /// Whether mounts under it may be writable.
    pub access: Access,
}

impl MountRoot {
    /// Parses `DIR[:ro|:rw]` (read-only when the mode is omitted).
    pub fn parse(spec: &str) -> Result<Self, String> {
        let (path, access) = match spec.rsplit_once(':') {
            Some((path, "ro")) => (path, Access::ReadOnly),
            Some((path, "rw")) => (path, Access::ReadWrite),
            _ => (spec, Access::ReadOnly),
        };
        if !path.starts_with('/') {
            return Err(format!(
                "mount root {spec:?} must be an absolute directory, DIR[:ro|:rw]"
            ));
        }
        Ok(MountRoot {
            path: path.into(),
            access,
        })
    }
}

/// A peer's mount source, opened beneath its root with the peer's credentials (the calling
/// thread must be acting as the peer). `host` is the path the peer named.
pub(crate) fn open_for_peer(
    roots: &[MountRoot],
    peer: &Credentials,
    host: &Path,
    access: Access,
) -> Result<OwnedFd> {
    let root = roots
        .iter()
        .filter(|root| host.starts_with(&root.path))
        .max_by_key(|root| root.path.as_os_str().len())
        .ok_or_else(|| {
            Error::NotAllowed(format!(
                "mount source {} is under no mount root of this supervisor ({})",
                host.display(),
                if roots.is_empty() {
                    "it has none: --mount-root".to_owned()
                } else {
                    roots
                        .iter()
                        .map(|r| r.path.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ))
        })?;
    if access == Access::ReadWrite && root.access != Access::ReadWrite {
        return Err(Error::NotAllowed(format!(
            "mount source {} is under the read-only mount root {}; it can only be mounted read-only",
            host.display(),
            root.path.display()
        )));
    }
    let failed = |errno: Errno, path: &Path| -> Error {
        match errno {
            Errno::EACCES | Errno::EPERM => Error::NotAllowed(format!(
                "uid {} may not open {}: permission denied",
                peer.uid,
                path.display()
            )),
            Errno::EXDEV | Errno::ELOOP => Error::NotAllowed(format!(
                "mount source {} leads out of its mount root {} (through '..' or a symlink)",
                host.display(),
                root.path.display()
            )),
            Errno::ENOENT => Error::BadRequest(format!(
                "mount source {}: no such directory",
                path.display()
            )),
            Errno::ENOTDIR => Error::BadRequest(format!(
                "mount source {} is not a directory",
                path.display()
            )),
            other => Error::BadRequest(format!("mount source {}: {other}", path.display())),
        }
    };
    // The root itself is opened as the peer too, so a root inside a directory the peer may
    // not enter stays closed to it.
    let root_dir = openat2(
        nix::fcntl::AT_FDCWD,
        &root.path,
        OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_NO_MAGICLINKS),
    )
    .map_err(|errno| failed(errno, &root.path))?;
    let beneath = host.strip_prefix(&root.path).expect("matched as a prefix");
    let beneath = if beneath.as_os_str().is_empty() {
        Path::new(".")
    } else {
        beneath
    };
    openat2(
        root_dir,
        beneath,
        OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS),
    )
    .map_err(|errno| failed(errno, host))
}

/// Makes (or finds) the directory `path` and gives it to `owner` (uid, gid), private to it
/// (mode 0700), without following a symlink at `path`: whoever owns its parent may have put
/// one there, and ownership handed through it would land on whatever it names.
pub(crate) fn own_dir(path: &Path, owner: (u32, u32)) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    match std::fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io(path, "create", e)),
    }
    let dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| Error::io(path, "open (it must be a directory, not a symlink)", e))?;
    std::os::unix::fs::fchown(&dir, Some(owner.0), Some(owner.1))
        .map_err(|e| Error::io(path, "hand over", e))?;
    dir.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .map_err(|e| Error::io(path, "make private", e))
}

/// The path through which WASI opens an already open directory: the descriptor's own entry
/// in `/proc/self/fd`, which names that directory and is not resolved again.
pub(crate) fn proc_path(dir: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", dir.as_raw_fd())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_roots_parse() {
        assert_eq!(
            MountRoot::parse("/srv/data:rw").unwrap(),
            MountRoot {
                path: "/srv/data".into(),
                access: Access::ReadWrite
            }
        );
        assert_eq!(
            MountRoot::parse("/srv/data").unwrap().access,
            Access::ReadOnly
        );
        assert!(MountRoot::parse("data:rw").is_err());
    }

    fn peer() -> Credentials {
        Credentials {
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            groups: Vec::new().into(),
        }
    }

    #[test]
    fn sources_resolve_beneath_their_root_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("inside/deeper")).unwrap();
        std::fs::create_dir(dir.path().join("outside")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside"), root.join("escape")).unwrap();
        std::os::unix::fs::symlink("inside/deeper", root.join("within")).unwrap();
        let roots = [MountRoot {
            path: root.clone(),
            access: Access::ReadOnly,
        }];
        let open = |path: &Path, access| open_for_peer(&roots, &peer(), path, access);

        assert!(open(&root.join("inside"), Access::ReadOnly).is_ok());
        assert!(open(&root, Access::ReadOnly).is_ok());
        assert!(
            open(&root.join("within"), Access::ReadOnly).is_ok(),
            "a symlink that stays inside"
        );
        for escape in [root.join("escape"), root.join("inside/../../outside")] {
            let refused = open(&escape, Access::ReadOnly).unwrap_err().to_string();
            assert!(refused.contains("leads out of its mount root"), "{refused}");
        }
        let refused = open(&dir.path().join("outside"), Access::ReadOnly).unwrap_err();
        assert!(
            refused.to_string().contains("under no mount root"),
            "{refused}"
        );
        let refused = open(&root.join("inside"), Access::ReadWrite).unwrap_err();
        assert!(
            refused.to_string().contains("read-only mount root"),
            "{refused}"
        );
        let missing = open(&root.join("missing"), Access::ReadOnly).unwrap_err();
        assert_eq!(missing.kind(), crate::ErrorKind::BadRequest);
    }

    #[test]
    fn a_directory_handed_over_is_never_one_a_symlink_names() {
        let dir = tempfile::tempdir().unwrap();
        let me = (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        );
        let made = dir.path().join("made");
        own_dir(&made, me).unwrap();
        own_dir(&made, me).unwrap();
        let mode = std::fs::metadata(&made).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o700
        );
        let target = dir.path().join("target");
        std::fs::create_dir(&target).unwrap();
        std::fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let planted = dir.path().join("planted");
        std::os::unix::fs::symlink(&target, &planted).unwrap();
        assert!(own_dir(&planted, me).is_err());
        let mode = std::fs::metadata(&target).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o755,
            "untouched"
        );
    }
}
