//! The exec gate of the native sandbox: which files of the sandbox's read-only root a tool
//! may execute, decided by content.
//!
//! The gate's directories (the sandbox's `PATH` by default) are listed, and every
//! executable file in them is hashed, once per (device, inode, size, modification time):
//! the digests are cached under that identity, so a file is hashed again only when it
//! changed. A file whose SHA-256 or BLAKE3 is allowed (the allowlist's digests, the
//! manifest's originals) is granted, and with it the ELF interpreter it names, without
//! which the kernel cannot start it. The jailer hands the list to Landlock, which then
//! refuses every other `execve` with `EACCES`; it also checks that each file is still the
//! one hashed, so a list kept for [`GATE_RESCAN`] can only be stale towards refusing.
//!
//! What the kernel cannot see is stated in `docs/security.md`: a script run by an allowed
//! interpreter runs, and a dynamic loader granted for an allowed binary can map any file of
//! the read-only root (never of `/workspace` or `/tmp`, which are `noexec`).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use megavisor_jail::GrantedFile;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::Mode;

use super::sandbox::SandboxOptions;
use crate::digest::Digests;
use crate::error::{Error, Result};

/// How long a list of granted files is reused before the directories are listed again.
pub const GATE_RESCAN: Duration = Duration::from_secs(2);

/// The largest file the gate hashes; a larger one is never granted.
const MAX_GATED_BYTES: u64 = 512 << 20;

/// What identifies a file's content without reading it. The change time is in it because
/// no one can set it back: a file rewritten in place, its modification time restored, still
/// has a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Identity {
    device: u64,
    inode: u64,
    size: u64,
    modified_ns: i128,
    changed_ns: i128,
}

impl Identity {
    fn of(metadata: &std::fs::Metadata) -> Self {
        let ns = |seconds: i64, nanos: i64| i128::from(seconds) * 1_000_000_000 + i128::from(nanos);
        Identity {
            device: metadata.dev(),
            inode: metadata.ino(),
            size: metadata.size(),
            modified_ns: ns(metadata.mtime(), metadata.mtime_nsec()),
            changed_ns: ns(metadata.ctime(), metadata.ctime_nsec()),
        }
    }

    fn granted(self, path: PathBuf) -> GrantedFile {
        GrantedFile {
            path,
            device: self.device,
            inode: self.inode,
            size: self.size,
            modified_ns: self.modified_ns,
            changed_ns: self.changed_ns,
        }
    }
}

/// The gate's state: digests by identity, and the last list of granted files.
#[derive(Debug, Default)]
pub(crate) struct ExecGate {
    digests: Mutex<HashMap<Identity, Digests>>,
    last: Mutex<Option<Scan>>,
}

#[derive(Debug)]
struct Scan {
    at: Instant,
    allowed: HashSet<String>,
    granted: Vec<GrantedFile>,
}

impl ExecGate {
    /// The files of `sandbox`'s root that may be executed, given the `allowed` digests.
    pub(crate) fn granted(
        &self,
        sandbox: &SandboxOptions,
        allowed: &HashSet<String>,
    ) -> Result<Vec<GrantedFile>> {
        let mut last = self.last.lock().expect("gate scan lock");
        if let Some(scan) = last.as_ref()
            && scan.at.elapsed() < GATE_RESCAN
            && scan.allowed == *allowed
        {
            return Ok(scan.granted.clone());
        }
        let granted = self.scan(sandbox, allowed)?;
        *last = Some(Scan {
            at: Instant::now(),
            allowed: allowed.clone(),
            granted: granted.clone(),
        });
        Ok(granted)
    }

    /// The ELF interpreter of `binary` (the file a call executes), granted so that it can
    /// start, if the sandbox shows it and may trust it: the host's own loader in a root
    /// built from the host's directories; in an operator's root (an image's), one whose
    /// content is `allowed` like any binary's, since whoever built the root chose it.
    pub(crate) fn interpreter_of(
        &self,
        sandbox: &SandboxOptions,
        binary: &File,
        allowed: &HashSet<String>,
    ) -> Result<Option<GrantedFile>> {
        let Some(interpreter) = elf_interpreter(binary) else {
            return Ok(None);
        };
        let Some((host, granted)) = visible_file(sandbox, Path::new(&interpreter)) else {
            return Ok(None);
        };
        if sandbox.root.is_none() {
            return Ok(Some(granted));
        }
        let metadata = std::fs::metadata(&host).map_err(|e| Error::io(&host, "stat", e))?;
        Ok(self
            .digests_of(&host, Identity::of(&metadata))?
            .filter(|d| allowed.contains(&d.sha256) || allowed.contains(&d.blake3))
            .map(|_| granted))
    }

    fn scan(
        &self,
        sandbox: &SandboxOptions,
        allowed: &HashSet<String>,
    ) -> Result<Vec<GrantedFile>> {
        let mut granted: Vec<GrantedFile> = Vec::new();
        let mut seen = HashSet::new();
        for dir in &sandbox.gate_dirs {
            let Some(host_dir) = host_path(sandbox, dir) else {
                continue; // not shown in the sandbox
            };
            if !seen.insert(host_dir.clone()) {
                continue; // `/bin` is `/usr/bin` on a merged root
            }
            let Ok(listing) = std::fs::read_dir(&host_dir) else {
                continue;
            };
            for child in listing.flatten() {
                let path = child.path();
                let Ok(metadata) = std::fs::symlink_metadata(&path) else {
                    continue;
                };
                if !metadata.is_file()
                    || metadata.permissions().mode() & 0o111 == 0
                    || metadata.size() > MAX_GATED_BYTES
                {
                    continue;
                }
                let identity = Identity::of(&metadata);
                let Some(digests) = self.digests_of(&path, identity)? else {
                    continue;
                };
                if !(allowed.contains(&digests.sha256) || allowed.contains(&digests.blake3)) {
                    continue;
                }
                let Some(inside) = inside_path(sandbox, &path) else {
                    continue;
                };
                if let Ok(file) = File::open(&path)
                    && let Some(interpreter) = self.interpreter_of(sandbox, &file, allowed)?
                    && !granted.iter().any(|g| g.path == interpreter.path)
                {
                    granted.push(interpreter);
                }
                granted.push(identity.granted(inside));
            }
        }
        Ok(granted)
    }

    /// The digests of the file at `path` with `identity`, hashed unless cached; `None` when
    /// it changed while it was read (it is left ungranted).
    fn digests_of(&self, path: &Path, identity: Identity) -> Result<Option<Digests>> {
        if let Some(digests) = self
            .digests
            .lock()
            .expect("gate digests lock")
            .get(&identity)
        {
            return Ok(Some(digests.clone()));
        }
        let Ok(file) = File::open(path) else {
            return Ok(None);
        };
        let (digests, size) = Digests::of_reader((&file).take(MAX_GATED_BYTES + 1), path)?;
        let now = file.metadata().map_err(|e| Error::io(path, "stat", e))?;
        if size != identity.size || Identity::of(&now) != identity {
            return Ok(None);
        }
        self.digests
            .lock()
            .expect("gate digests lock")
            .insert(identity, digests.clone());
        Ok(Some(digests))
    }
}

/// Where `inside` (a path as the sandbox shows it) lies on the host, symlinks resolved, if
/// the sandbox shows it: in the operator's root, resolved inside it as the tool will
/// resolve it (`openat2(RESOLVE_IN_ROOT)`: an image's absolute symlinks do not lead to the
/// host's files), or under one of the host's read-only directories of a fresh root.
fn host_path(sandbox: &SandboxOptions, inside: &Path) -> Option<PathBuf> {
    match &sandbox.root {
        Some(root) => {
            let root_fd = nix::fcntl::open(
                root.as_path(),
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .ok()?;
            let how = OpenHow::new()
                .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
                .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
            let relative = inside.strip_prefix("/").ok()?;
            let fd = openat2(&root_fd, relative, how).ok()?;
            std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()
        }
        None => sandbox
            .read_only
            .iter()
            .any(|dir| inside.starts_with(dir))
            .then(|| inside.canonicalize().ok())
            .flatten(),
    }
}

/// Where the host file `host` appears inside the sandbox, if it does.
fn inside_path(sandbox: &SandboxOptions, host: &Path) -> Option<PathBuf> {
    match &sandbox.root {
        Some(root) => {
            let root = root.canonicalize().ok()?;
            host.strip_prefix(&root)
                .ok()
                .map(|rest| Path::new("/").join(rest))
        }
        None => sandbox
            .read_only
            .iter()
            .filter_map(|dir| dir.canonicalize().ok())
            .any(|dir| host.starts_with(&dir))
            .then(|| host.to_owned()),
    }
}

/// The file at `inside` (symlinks resolved), on the host and as a granted file, if the
/// sandbox shows it.
fn visible_file(sandbox: &SandboxOptions, inside: &Path) -> Option<(PathBuf, GrantedFile)> {
    let host = host_path(sandbox, inside)?;
    let metadata = std::fs::metadata(&host).ok()?;
    if !metadata.is_file() {
        return None;
    }
    let granted = Identity::of(&metadata).granted(inside_path(sandbox, &host)?);
    Some((host, granted))
}

/// The `PT_INTERP` path of an ELF executable (64-bit, little-endian), if it has one.
fn elf_interpreter(file: &File) -> Option<String> {
    const PT_INTERP: u32 = 3;
    let mut header = [0u8; 64];
    file.read_exact_at(&mut header, 0).ok()?;
    if &header[..4] != b"\x7fELF" || header[4] != 2 || header[5] != 1 {
        return None;
    }
    let u16_at = |b: &[u8], at: usize| u16::from_le_bytes([b[at], b[at + 1]]);
    let u64_at = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    let (table, entry_size, entries) = (
        u64_at(&header, 32),
        u64::from(u16_at(&header, 54)),
        u16_at(&header, 56),
    );
    if entry_size < 56 {
        return None;
    }
    for index in 0..u64::from(entries) {
        let mut entry = [0u8; 56];
        let at = index.checked_mul(entry_size)?.checked_add(table)?;
        file.read_exact_at(&mut entry, at).ok()?;
        if u32::from_le_bytes(entry[..4].try_into().unwrap()) != PT_INTERP {
            continue;
        }
        let (offset, size) = (u64_at(&entry, 8), u64_at(&entry, 32));
        if size == 0 || size > 4096 {
            return None;
        }
        let mut path = vec![0u8; size as usize];
        file.read_exact_at(&mut path, offset).ok()?;
        let path = path.split(|&b| b == 0).next()?;
        return String::from_utf8(path.to_vec()).ok();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interpreter_of_a_dynamic_binary_is_found() {
        let sh = File::open("/bin/sh").unwrap();
        let interpreter = elf_interpreter(&sh).expect("/bin/sh is dynamically linked here");
        assert!(interpreter.contains("ld-linux"), "{interpreter}");
        let text = File::open("/etc/hostname").unwrap();
        assert_eq!(elf_interpreter(&text), None);
    }
}
