//! An image's root directory on the host: finding its executables, and resolving a path the
//! way the container would (symlinks resolved inside the root with
//! `openat2(RESOLVE_IN_ROOT)`, never on the host).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use megavisor_core::{Digests, Error, Result, TrustPolicy};
use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::Mode;

use crate::map::{Disposition, ImageMap, MAP_DIR};
use crate::unpack::normalize;

/// The largest executable hashed.
pub const MAX_EXECUTABLE_BYTES: u64 = 2 << 30;

/// An executable path of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Executable {
    /// Absolute within the image, e.g. `/bin/sh`.
    pub path: String,
    /// For a symlink: the regular file it resolves to.
    pub target: Option<String>,
    /// Size of the content.
    pub size: u64,
    /// Digests of the content.
    pub digests: Digests,
}

/// A root directory, opened.
#[derive(Debug)]
pub struct Root {
    dir: PathBuf,
    fd: OwnedFd,
}

impl Root {
    /// Opens the root directory `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        let dir = dir
            .canonicalize()
            .map_err(|e| Error::io(dir, "open the image root", e))?;
        let fd = nix::fcntl::open(
            &dir,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io(&dir, "open the image root", e.into()))?;
        Ok(Root { dir, fd })
    }

    /// The directory on the host.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every executable path: regular files with an execute bit, and symlinks that resolve
    /// to one inside the root, sorted by path. The map's own directory is left out.
    pub fn executables(&self) -> Result<Vec<Executable>> {
        let mut regular = BTreeMap::new();
        let mut links = Vec::new();
        self.walk(&self.dir.clone(), &mut regular, &mut links)?;
        let mut found: Vec<Executable> = regular.values().cloned().collect();
        for link in links {
            let Ok(resolved) = self.open_inside(&link, OFlag::O_PATH) else {
                continue; // dangling, or a loop: nothing to run
            };
            if let Some(target) = self.path_of(&resolved).and_then(|t| regular.get(&t)) {
                found.push(Executable {
                    path: link,
                    target: Some(target.path.clone()),
                    size: target.size,
                    digests: target.digests.clone(),
                });
            }
        }
        found.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(found)
    }

    fn walk(
        &self,
        dir: &Path,
        regular: &mut BTreeMap<String, Executable>,
        links: &mut Vec<String>,
    ) -> Result<()> {
        let listing = std::fs::read_dir(dir).map_err(|e| Error::io(dir, "list", e))?;
        for child in listing {
            let child = child.map_err(|e| Error::io(dir, "list", e))?;
            let path = child.path();
            let inside = self.inside(&path);
            if inside == format!("/{MAP_DIR}") {
                continue;
            }
            let metadata = child.metadata().map_err(|e| Error::io(&path, "stat", e))?;
            if metadata.is_dir() {
                self.walk(&path, regular, links)?;
            } else if metadata.is_symlink() {
                links.push(inside);
            } else if metadata.is_file() && metadata.permissions().mode() & 0o111 != 0 {
                let file = File::open(&path).map_err(|e| Error::io(&path, "open", e))?;
                let (digests, size) = hash(file, &path)?;
                regular.insert(
                    inside.clone(),
                    Executable {
                        path: inside,
                        target: None,
                        size,
                        digests,
                    },
                );
            }
        }
        Ok(())
    }

    /// Opens `path` (absolute within the image) with symlinks resolved inside the root.
    pub fn open_inside(&self, path: &str, flags: OFlag) -> nix::Result<OwnedFd> {
        let relative = normalize(Path::new(path)).ok_or(Errno::ENOENT)?;
        let relative = if relative.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            relative
        };
        let how = OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        openat2(&self.fd, &relative, how)
    }

    /// The bytes of the regular file at `path` (absolute within the image, resolved inside
    /// it, the last component not followed), at most `limit` of them; `None` when there is
    /// no such file.
    pub fn read_file(&self, path: &str, limit: u64) -> Result<Option<Vec<u8>>> {
        let shown = self.dir.join(path.trim_start_matches('/'));
        let fd = match self.open_inside(
            path,
            OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOFOLLOW,
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(Error::NotAllowed(format!("{}: {e}", shown.display()))),
        };
        let file = File::from(fd);
        let metadata = file.metadata().map_err(|e| Error::io(&shown, "stat", e))?;
        if !metadata.is_file() {
            return Err(Error::NotAllowed(format!(
                "{} is not a regular file",
                shown.display()
            )));
        }
        if metadata.len() > limit {
            return Err(Error::InvalidManifest {
                file: shown,
                reason: format!("larger than the limit of {limit} bytes"),
            });
        }
        let mut bytes = Vec::with_capacity(metadata.len() as usize);
        file.take(limit)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io(&shown, "read", e))?;
        Ok(Some(bytes))
    }

    /// Where an open descriptor lies within the image, if it lies in it.
    fn path_of(&self, fd: &OwnedFd) -> Option<String> {
        let host = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
        host.strip_prefix(&self.dir).ok().map(|rest| {
            let rest = rest.to_string_lossy();
            format!("/{rest}")
        })
    }

    /// A host path below the root, as the image sees it.
    fn inside(&self, host: &Path) -> String {
        let rest = host.strip_prefix(&self.dir).unwrap_or(host);
        format!("/{}", rest.to_string_lossy())
    }
}

/// A root with its verified map: what runs when a path of the image is executed.
#[derive(Debug)]
pub struct MappedRoot {
    root: Root,
    map: ImageMap,
}

/// An executable path resolved against the map: what runs in its place.
#[derive(Debug)]
pub struct Resolved {
    /// The path asked for.
    pub path: String,
    /// The regular file it resolved to inside the image.
    pub file_path: String,
    /// The content's digests, as hashed now.
    pub digests: Digests,
    /// What runs: an entry or the native binary (never [`Disposition::Denied`]).
    pub run: Disposition,
}

impl MappedRoot {
    /// Opens the root directory `dir` and its map, whose signature is checked under
    /// `policy`.
    pub fn open(dir: &Path, policy: &TrustPolicy) -> Result<Self> {
        let root = Root::open(dir)?;
        let (map, _) = ImageMap::load_verified(&root, policy)?;
        Ok(MappedRoot { root, map })
    }

    /// The map.
    pub fn map(&self) -> &ImageMap {
        &self.map
    }

    /// The root.
    pub fn root(&self) -> &Root {
        &self.root
    }

    /// Resolves `path` (absolute within the image), hashes what it resolves to, and finds
    /// what runs in its place. A path that is not in the map, whose content is not what
    /// the map records, or that the map denies, is refused with EACCES (`not_allowed`).
    pub fn resolve(&self, path: &str) -> Result<Resolved> {
        if !path.starts_with('/') {
            return Err(Error::BadRequest(format!(
                "{path:?} is not an absolute path within the image"
            )));
        }
        let fd = self
            .root
            .open_inside(path, OFlag::O_RDONLY | OFlag::O_NONBLOCK)
            .map_err(|e| match e {
                Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP => Error::ToolNotFound {
                    name: format!("{path} (not in the image)"),
                    available: String::new(),
                },
                e => Error::NotAllowed(format!("{path}: cannot be opened in the image: {e}")),
            })?;
        let file_path = self.root.path_of(&fd).unwrap_or_else(|| path.to_owned());
        let file = File::from(fd);
        let metadata = file
            .metadata()
            .map_err(|e| Error::io(&file_path, "stat", e))?;
        if !metadata.is_file() {
            return Err(Error::NotAllowed(format!(
                "{path} is not a regular file in the image"
            )));
        }
        let (digests, _) = hash(&file, Path::new(&file_path))?;
        let not_mapped = || {
            Error::NotAllowed(format!(
                "{path} (sha256 {}) is not in the image map",
                digests.sha256
            ))
        };
        let mapping = self
            .map
            .files
            .get(path)
            .or_else(|| self.map.files.get(&file_path))
            .ok_or_else(not_mapped)?;
        if mapping.digests != digests {
            return Err(not_mapped());
        }
        if mapping.run == Disposition::Denied {
            return Err(Error::NotAllowed(format!(
                "{path} (sha256 {}) is not in the image map as runnable: the map denies it",
                digests.sha256
            )));
        }
        Ok(Resolved {
            path: path.to_owned(),
            file_path,
            run: mapping.run.clone(),
            digests,
        })
    }
}

/// Digests and size of an open file, up to [`MAX_EXECUTABLE_BYTES`].
fn hash(file: impl Read, path: &Path) -> Result<(Digests, u64)> {
    let mut limited = file.take(MAX_EXECUTABLE_BYTES + 1);
    let (digests, size) = Digests::of_reader(&mut limited, path)?;
    if size > MAX_EXECUTABLE_BYTES {
        return Err(Error::BadRequest(format!(
            "{} is larger than the {MAX_EXECUTABLE_BYTES} bytes an executable may be",
            path.display()
        )));
    }
    Ok((digests, size))
}
