//! Applying an image's layers, in order, to a root directory on the host.
//!
//! A layer is untrusted input, so every entry lands inside the root or is refused, naming the
//! layer and the entry:
//! - a path is normalized lexically, and one whose `..` climbs above the root is refused;
//! - its parent directory is opened with `openat2(RESOLVE_IN_ROOT)`, so a symlink an earlier
//!   entry planted (`bin -> /`, `x -> ../../..`) resolves inside the root as it will inside
//!   the container, never on the host; the entry itself is then created beneath that
//!   descriptor without following anything;
//! - a hard link must name a regular file already in the root, resolved the same way;
//! - device files and FIFOs are refused, as are files over [`UnpackLimits::max_file_bytes`]
//!   and images past [`UnpackLimits::max_total_bytes`] or [`UnpackLimits::max_entries`];
//! - setuid and setgid bits are dropped; nothing is chowned (the root belongs to whoever
//!   unpacks it, and is only ever shown read-only).
//!
//! Whiteouts follow the OCI layer format: `.wh.NAME` removes `NAME` of the layers below, and
//! `.wh..wh..opq` empties its directory of what the layers below put there.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use megavisor_core::{Error, Result};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{Mode, SFlag, fchmod, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, linkat, symlinkat, unlinkat};

use crate::layout::{Hashing, Layer};
use crate::source::ImageSource;
pub use tempfile::TempDir;

/// The prefix of a whiteout entry's name.
const WHITEOUT: &str = ".wh.";
/// The name of an opaque-directory marker.
const OPAQUE: &str = ".wh..wh..opq";

/// What a layer's stream may hold beyond the file bytes left to the image: its headers,
/// long names, padding and end blocks.
const STREAM_SLACK: u64 = 64 << 20;

/// A reader that fails once it has yielded `left` bytes.
struct Bounded<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::other(
                "the layer holds more than the image's size limit allows",
            ));
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// How much an image may unpack to.
#[derive(Debug, Clone, Copy)]
pub struct UnpackLimits {
    /// The largest single file, bytes.
    pub max_file_bytes: u64,
    /// All files' bytes together, over every layer.
    pub max_total_bytes: u64,
    /// Entries, over every layer.
    pub max_entries: u64,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits {
            max_file_bytes: 2 << 30,
            max_total_bytes: 8 << 30,
            max_entries: 1_000_000,
        }
    }
}

/// A root directory being built from layers.
pub struct Unpacker {
    root: PathBuf,
    root_fd: OwnedFd,
    limits: UnpackLimits,
    bytes: u64,
    entries: u64,
}

impl Unpacker {
    /// Starts on `root`, an existing (normally empty) directory.
    pub fn new(root: &Path, limits: UnpackLimits) -> Result<Self> {
        let root_fd = nix::fcntl::open(
            root,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io(root, "open the image root", e.into()))?;
        Ok(Unpacker {
            root: root.to_owned(),
            root_fd,
            limits,
            bytes: 0,
            entries: 0,
        })
    }

    /// Reads `layer` from `source`, applies it, and checks it against its digests.
    pub fn apply(&mut self, source: &ImageSource, layer: &Layer) -> Result<()> {
        let (reader, _) = source.open_member(&layer.member)?;
        let mut blob = BufReader::new(Hashing::new(reader));
        let magic = blob
            .fill_buf()
            .map_err(|e| Error::io(source.member_path(&layer.member), "read", e))?;
        let gzip = magic.starts_with(&[0x1f, 0x8b]);
        if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            return Err(Error::BadRequest(format!(
                "layer {} is zstd-compressed, which this build does not read; store it \
                 uncompressed or with gzip",
                source.member_path(&layer.member).display()
            )));
        }
        let uncompressed: Box<dyn Read + '_> = if gzip {
            Box::new(flate2::read::MultiGzDecoder::new(&mut blob))
        } else {
            Box::new(&mut blob)
        };
        // A stream, headers and all, is bounded like the files it may hold, so that a small
        // compressed layer cannot expand into endless headers (read whole by the tar
        // reader) or padding.
        let bound = self.limits.max_total_bytes.saturating_sub(self.bytes) + STREAM_SLACK;
        let mut diff = Hashing::new(Bounded {
            inner: uncompressed,
            left: bound,
        });
        let name = source.member_path(&layer.member).display().to_string();
        self.apply_tar(&name, &mut diff)?;
        let (diff_id, _, _) = diff
            .finish()
            .map_err(|e| Error::io(&name, "read layer", e))?;
        check_digest(&name, &layer.diff_id, &diff_id)?;
        let (blob_digest, _, _) = blob
            .into_inner()
            .finish()
            .map_err(|e| Error::io(&name, "read layer", e))?;
        if let Some(expected) = &layer.blob_digest {
            check_digest(&name, expected, &blob_digest)?;
        }
        Ok(())
    }

    /// Applies one layer's tar stream (`layer` names it in errors).
    pub fn apply_tar(&mut self, layer: &str, stream: impl Read) -> Result<()> {
        let mut archive = tar::Archive::new(stream);
        let mut this_layer: HashSet<PathBuf> = HashSet::new();
        let entries = archive
            .entries()
            .map_err(|e| Error::io(layer, "read layer", e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| Error::io(layer, "read layer", e))?;
            let raw = entry.path_bytes().into_owned();
            let shown = String::from_utf8_lossy(&raw).into_owned();
            let refuse = |why: &str| {
                Error::BadRequest(format!("layer {layer}: entry {shown:?} {why}; refused"))
            };
            self.entries += 1;
            if self.entries > self.limits.max_entries {
                return Err(refuse(&format!(
                    "is past the limit of {} entries per image",
                    self.limits.max_entries
                )));
            }
            let Some(path) = normalize(Path::new(OsStr::from_bytes(&raw))) else {
                return Err(refuse("would land outside the root"));
            };
            let Some(name) = path.file_name().map(OsStr::to_owned) else {
                continue; // the root itself
            };
            let parent_path = path.parent().unwrap_or(Path::new(""));
            let parent = self
                .directory(parent_path, &mut this_layer)
                .map_err(|why| refuse(&why))?;
            if name.as_bytes() == OPAQUE.as_bytes() {
                self.empty_directory(&parent, parent_path, &this_layer)
                    .map_err(|why| refuse(&why))?;
                continue;
            }
            // Compared as bytes: a whiteout of a name that is not UTF-8 names it exactly.
            if let Some(hidden) = name.as_bytes().strip_prefix(WHITEOUT.as_bytes()) {
                remove(&parent, OsStr::from_bytes(hidden)).map_err(|why| refuse(&why))?;
                continue;
            }
            let header = entry.header();
            let mode = header.mode().unwrap_or(0o644) & 0o1777;
            let kind = header.entry_type();
            match kind {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let size = entry.size();
                    if size > self.limits.max_file_bytes {
                        return Err(refuse(&format!(
                            "is {size} bytes, over the limit of {} per file",
                            self.limits.max_file_bytes
                        )));
                    }
                    if self.bytes + size > self.limits.max_total_bytes {
                        return Err(refuse(&format!(
                            "takes the image past the limit of {} bytes",
                            self.limits.max_total_bytes
                        )));
                    }
                    replace(&parent, &name, false).map_err(|why| refuse(&why))?;
                    let fd = nix::fcntl::openat(
                        &parent,
                        name.as_os_str(),
                        OFlag::O_WRONLY
                            | OFlag::O_CREAT
                            | OFlag::O_EXCL
                            | OFlag::O_NOFOLLOW
                            | OFlag::O_CLOEXEC,
                        Mode::from_bits_truncate(0o600),
                    )
                    .map_err(|e| refuse(&format!("cannot be created: {e}")))?;
                    let mut file = File::from(fd);
                    let written = std::io::copy(&mut (&mut entry).take(size), &mut file)
                        .map_err(|e| Error::io(layer, "read layer", e))?;
                    self.bytes += written;
                    fchmod(file.as_fd(), Mode::from_bits_truncate(mode))
                        .map_err(|e| refuse(&format!("cannot be chmod: {e}")))?;
                }
                tar::EntryType::Directory => {
                    replace(&parent, &name, true).map_err(|why| refuse(&why))?;
                    match mkdirat(&parent, name.as_os_str(), Mode::from_bits_truncate(0o755)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(refuse(&format!("cannot be created: {e}"))),
                    }
                    let dir = open_beneath(&parent, &name, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
                        .map_err(|e| refuse(&format!("cannot be opened: {e}")))?;
                    // The owner keeps full access, so later entries can be written into it.
                    fchmod(dir.as_fd(), Mode::from_bits_truncate(mode | 0o700))
                        .map_err(|e| refuse(&format!("cannot be chmod: {e}")))?;
                }
                tar::EntryType::Symlink => {
                    let target = entry
                        .link_name_bytes()
                        .ok_or_else(|| refuse("is a symlink without a target"))?
                        .into_owned();
                    replace(&parent, &name, false).map_err(|why| refuse(&why))?;
                    symlinkat(OsStr::from_bytes(&target), &parent, name.as_os_str())
                        .map_err(|e| refuse(&format!("cannot be created: {e}")))?;
                }
                tar::EntryType::Link => {
                    let target = entry
                        .link_name_bytes()
                        .ok_or_else(|| refuse("is a hard link without a target"))?
                        .into_owned();
                    let target = normalize(Path::new(OsStr::from_bytes(&target)))
                        .ok_or_else(|| refuse("is a hard link to outside the root"))?;
                    let linked = self
                        .open_in_root(&target, OFlag::O_PATH | OFlag::O_NOFOLLOW)
                        .map_err(|e| {
                            refuse(&format!(
                                "is a hard link to {}, which is not in the root: {e}",
                                target.display()
                            ))
                        })?;
                    let stat = nix::sys::stat::fstat(&linked)
                        .map_err(|e| refuse(&format!("cannot stat its target: {e}")))?;
                    if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
                        return Err(refuse("is a hard link to something not a regular file"));
                    }
                    replace(&parent, &name, false).map_err(|why| refuse(&why))?;
                    let proc_path = format!("/proc/self/fd/{}", linked.as_raw_fd());
                    linkat(
                        nix::fcntl::AT_FDCWD,
                        proc_path.as_str(),
                        &parent,
                        name.as_os_str(),
                        AtFlags::AT_SYMLINK_FOLLOW,
                    )
                    .map_err(|e| refuse(&format!("cannot be linked: {e}")))?;
                }
                tar::EntryType::Char | tar::EntryType::Block => {
                    return Err(refuse("is a device file"));
                }
                tar::EntryType::Fifo => return Err(refuse("is a FIFO")),
                tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => continue,
                other => return Err(refuse(&format!("has the unsupported type {other:?}"))),
            }
            this_layer.insert(path);
        }
        Ok(())
    }

    /// Opens `path` (relative to the root) resolved inside the root.
    fn open_in_root(&self, path: &Path, flags: OFlag) -> nix::Result<OwnedFd> {
        let how = OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        let path = if path.as_os_str().is_empty() {
            Path::new(".")
        } else {
            path
        };
        openat2(&self.root_fd, path, how)
    }

    /// The directory `path` of the root, resolved inside it; missing directories are
    /// created (and counted as this layer's), also where a symlink points to one that is
    /// not there yet (`bin -> usr/bin` before `usr/bin/` came).
    fn directory(
        &self,
        path: &Path,
        this_layer: &mut HashSet<PathBuf>,
    ) -> std::result::Result<OwnedFd, String> {
        self.directory_within(path, this_layer, 0)
    }

    fn directory_within(
        &self,
        path: &Path,
        this_layer: &mut HashSet<PathBuf>,
        links_followed: usize,
    ) -> std::result::Result<OwnedFd, String> {
        /// As many symlinks as the kernel follows in one path.
        const MAX_LINKS: usize = 40;
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY;
        match self.open_in_root(path, flags) {
            Ok(fd) => return Ok(fd),
            Err(Errno::ENOENT) => {}
            Err(Errno::ENOTDIR) => return Err("lies beneath something not a directory".into()),
            Err(e) => return Err(format!("has a parent that cannot be opened: {e}")),
        }
        let mut current = self
            .open_in_root(Path::new(""), flags)
            .map_err(|e| format!("cannot open the root {}: {e}", self.root.display()))?;
        let mut prefix = PathBuf::new();
        for component in path.components() {
            let parent = prefix.clone();
            prefix.push(component);
            match self.open_in_root(&prefix, flags) {
                Ok(fd) => {
                    current = fd;
                    continue;
                }
                Err(Errno::ENOENT) => {}
                Err(e) => return Err(format!("cannot open {}: {e}", prefix.display())),
            }
            let name = component.as_os_str();
            match nix::fcntl::readlinkat(&current, name) {
                Ok(target) if links_followed < MAX_LINKS => {
                    // A dangling symlink: create what it points to, inside the root.
                    let target = Path::new(&target);
                    let within = if target.is_absolute() {
                        normalize_clamped(target)
                    } else {
                        normalize_clamped(&parent.join(target))
                    };
                    self.directory_within(&within, this_layer, links_followed + 1)?;
                }
                Ok(_) => return Err(format!("{} is a loop of symlinks", prefix.display())),
                Err(_) => {
                    mkdirat(&current, name, Mode::from_bits_truncate(0o755))
                        .map_err(|e| format!("cannot create {}: {e}", prefix.display()))?;
                    this_layer.insert(prefix.clone());
                }
            }
            current = self
                .open_in_root(&prefix, flags)
                .map_err(|e| format!("cannot open {}: {e}", prefix.display()))?;
        }
        Ok(current)
    }

    /// Removes what the layers below put in the directory `dir` (at `path`): an opaque
    /// marker's meaning.
    fn empty_directory(
        &self,
        dir: &OwnedFd,
        path: &Path,
        this_layer: &HashSet<PathBuf>,
    ) -> std::result::Result<(), String> {
        let listing = std::fs::read_dir(proc_path(dir))
            .map_err(|e| format!("cannot list its directory: {e}"))?;
        for child in listing {
            let child = child.map_err(|e| format!("cannot list its directory: {e}"))?;
            if !this_layer.contains(&path.join(child.file_name())) {
                remove(dir, &child.file_name())?;
            }
        }
        Ok(())
    }
}

/// Applies the layers of the image at `image` (a layout directory or a tarball) to a fresh
/// scratch directory, removed when the result is dropped.
pub fn unpack_to_scratch(image: &Path, limits: UnpackLimits) -> Result<TempDir> {
    let source = ImageSource::open(image)?;
    let description = crate::layout::describe(&source)?;
    let scratch = tempfile::Builder::new()
        .prefix("megavisor-image-")
        .tempdir()
        .map_err(|e| Error::io(std::env::temp_dir(), "create a scratch root in", e))?;
    let mut unpacker = Unpacker::new(scratch.path(), limits)?;
    for layer in &description.layers {
        unpacker.apply(&source, layer)?;
    }
    Ok(scratch)
}

/// Removes `name` beneath `dir` (a whole tree for a directory), if it is there.
fn remove(dir: &OwnedFd, name: &OsStr) -> std::result::Result<(), String> {
    if name.is_empty() || name == "." || name == ".." || name.as_bytes().contains(&b'/') {
        return Err("is a whiteout of no valid name".into());
    }
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(format!("cannot stat what it removes: {e}")),
        Ok(stat) if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR => {
            // Through the descriptor's /proc path, which is the directory resolved inside
            // the root; remove_dir_all follows no symlink below it.
            std::fs::remove_dir_all(proc_path(dir).join(name))
                .map_err(|e| format!("cannot remove {}: {e}", name.to_string_lossy()))
        }
        Ok(_) => unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)
            .map_err(|e| format!("cannot remove {}: {e}", name.to_string_lossy())),
    }
}

/// Clears the way for a new entry `name` beneath `dir`: what is there goes, except a
/// directory where a directory is coming (the layers merge).
fn replace(dir: &OwnedFd, name: &OsStr, keep_directory: bool) -> std::result::Result<(), String> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(format!("cannot stat what it replaces: {e}")),
        Ok(stat)
            if keep_directory
                && SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR =>
        {
            Ok(())
        }
        Ok(_) => remove(dir, name),
    }
}

/// Opens `name` beneath `dir` without following a symlink.
fn open_beneath(dir: &OwnedFd, name: &OsStr, flags: OFlag) -> nix::Result<OwnedFd> {
    nix::fcntl::openat(
        dir,
        name,
        flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// The `/proc/self/fd` path of a descriptor.
fn proc_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// `path` relative to the root, with `.` and `..` applied lexically; `None` when a `..`
/// climbs above the root.
pub fn normalize(path: &Path) -> Option<PathBuf> {
    let mut parts: Vec<&OsStr> = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => parts.push(part),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::Prefix(_) => return None,
        }
    }
    Some(parts.iter().collect())
}

/// `path` relative to the root with `..` stopping at the root, as `RESOLVE_IN_ROOT` (and a
/// container) resolves a symlink's target.
fn normalize_clamped(path: &Path) -> PathBuf {
    let mut parts: Vec<&OsStr> = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => parts.push(part),
            Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    parts.iter().collect()
}

/// A layer's stream (compressed or not) against the digest that names it.
fn check_digest(layer: &str, expected: &str, actual: &str) -> Result<()> {
    if expected == actual {
        return Ok(());
    }
    let strip = |d: &str| d.strip_prefix("sha256:").unwrap_or(d).to_owned();
    Err(Error::HashMismatch {
        file: layer.into(),
        algorithm: "sha256",
        expected: strip(expected),
        actual: strip(actual),
    })
}
