//! Which native binaries may run: the allowlist, of paths and of content digests.
//!
//! A binary is allowed when its path is listed (statically, or in the allowlist file) or its
//! content's digest is listed. Paths are compared after resolving symlinks, on both sides.
//! When digests are configured, a listed path whose content matches none of them is refused:
//! the path names *which* binary an operator meant, the digest *what* it must be.
//!
//! The allowlist file is the fleet's one list: one absolute path or one content digest per
//! line (`sha256:HEX`, `blake3:HEX`, or 64 bare hex digits); blank lines and lines starting
//! with `#` are ignored, as is anything after ` #`. The supervisor, `megavisor recompile`,
//! the containerd shim and the exec gate all read it. It is checked about every
//! [`AllowlistConfig::reload_every`] and re-read when its modification time changes; while it
//! is missing or unreadable, the set last read stays in force.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use crate::digest::Digests;
use crate::error::{Error, Result};

/// Largest binary allowed by digest (hashed and copied on every call).
const MAX_HASHED_BYTES: u64 = 256 << 20;

/// Copies `file` into a sealed memory file while hashing it.
fn sealed_copy(mut file: File, path: &Path) -> Result<(Digests, File)> {
    let memfd = memfd::MemfdOptions::default()
        .allow_sealing(true)
        .close_on_exec(true)
        .create("megavisor-native")
        .map_err(|e| Error::io(path, "make a sealed copy of", std::io::Error::other(e)))?;
    let mut copy = memfd.as_file();
    let mut hashing = Tee {
        inner: &mut file,
        copy: &mut copy,
    };
    let (digests, _) = Digests::of_reader(&mut hashing, path)?;
    memfd
        .add_seals(&[
            memfd::FileSeal::SealShrink,
            memfd::FileSeal::SealGrow,
            memfd::FileSeal::SealWrite,
            memfd::FileSeal::SealSeal,
        ])
        .map_err(|e| Error::io(path, "seal the copy of", std::io::Error::other(e)))?;
    Ok((digests, memfd.into_file()))
}

/// A reader that writes what it reads into `copy`.
struct Tee<'a> {
    inner: &'a mut File,
    copy: &'a mut &'a File,
}

impl std::io::Read for Tee<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        std::io::Write::write_all(self.copy, &buf[..n])?;
        Ok(n)
    }
}

/// What an operator allows.
#[derive(Debug, Clone)]
pub struct AllowlistConfig {
    /// Absolute paths allowed whatever the file says.
    pub paths: Vec<PathBuf>,
    /// The allowlist file, if any.
    pub file: Option<PathBuf>,
    /// SHA-256 or BLAKE3 hex digests of allowed binaries, wherever they lie.
    pub digests: Vec<String>,
    /// How often the file's modification time is checked.
    pub reload_every: Duration,
}

impl Default for AllowlistConfig {
    fn default() -> Self {
        AllowlistConfig {
            paths: Vec::new(),
            file: None,
            digests: Vec::new(),
            reload_every: Duration::from_secs(2),
        }
    }
}

/// A binary the allowlist let through: opened once, so that what runs is exactly what was
/// checked (it is executed through this descriptor, not by path again).
#[derive(Debug)]
pub struct AllowedBinary {
    /// The path as requested.
    pub requested: PathBuf,
    /// The path with symlinks resolved.
    pub resolved: PathBuf,
    /// The open binary.
    pub file: File,
}

/// The allowlist in force.
#[derive(Debug)]
pub struct Allowlist {
    paths: HashSet<PathBuf>,
    digests: HashSet<String>,
    file: Option<Mutex<ListFile>>,
    reload_every: Duration,
}

/// The allowlist file and what was last read from it.
#[derive(Debug)]
struct ListFile {
    path: PathBuf,
    modified: Option<SystemTime>,
    checked: Option<Instant>,
    paths: HashSet<PathBuf>,
    digests: HashSet<String>,
}

/// One line of an allowlist file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listed {
    /// An absolute path.
    Path(PathBuf),
    /// A SHA-256 or BLAKE3 digest, 64 lower-case hex digits.
    Digest(String),
}

impl Allowlist {
    /// Builds the allowlist; a static path or digest that is malformed is `bad_request`.
    pub fn new(config: &AllowlistConfig) -> Result<Self> {
        let mut paths = HashSet::new();
        for path in &config.paths {
            if !path.is_absolute() {
                return Err(Error::BadRequest(format!(
                    "allowed binary {} is not an absolute path",
                    path.display()
                )));
            }
            paths.insert(resolve(path));
        }
        let mut digests = HashSet::new();
        for digest in &config.digests {
            let digest = digest.to_ascii_lowercase();
            if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Error::BadRequest(format!(
                    "allowed digest {digest:?} is not 64 hex digits (SHA-256 or BLAKE3)"
                )));
            }
            digests.insert(digest);
        }
        let file = config.file.as_ref().map(|path| {
            Mutex::new(ListFile {
                path: path.clone(),
                modified: None,
                checked: None,
                paths: HashSet::new(),
                digests: HashSet::new(),
            })
        });
        Ok(Allowlist {
            paths,
            digests,
            file,
            reload_every: config.reload_every,
        })
    }

    /// Checks `binary` and opens it, or says why it may not run (`not_allowed`).
    pub fn check(&self, binary: &Path) -> Result<AllowedBinary> {
        if !binary.is_absolute() {
            return Err(Error::NotAllowed(format!(
                "{} is not an absolute path (native tools are named by absolute path)",
                binary.display()
            )));
        }
        let resolved = std::fs::canonicalize(binary)
            .map_err(|e| Error::NotAllowed(format!("{}: cannot resolve: {e}", binary.display())))?;
        let (file_lists, digests) = self.current(&resolved);
        let listed = self.paths.contains(&resolved) || file_lists;
        if !listed && digests.is_empty() {
            return Err(Error::NotAllowed(format!(
                "{} ({}) is not in the allowlist",
                binary.display(),
                resolved.display()
            )));
        }
        // Non-blocking, so a FIFO cannot hold the caller; only a regular file may run.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&resolved)
            .map_err(|e| Error::NotAllowed(format!("{}: cannot open: {e}", resolved.display())))?;
        let size = file
            .metadata()
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .ok_or_else(|| {
                Error::NotAllowed(format!("{} is not a regular file", resolved.display()))
            })?;
        if digests.is_empty() {
            return Ok(AllowedBinary {
                requested: binary.to_owned(),
                resolved,
                file,
            });
        }
        if size > MAX_HASHED_BYTES {
            return Err(Error::NotAllowed(format!(
                "{} is larger ({size} bytes) than the {MAX_HASHED_BYTES} bytes a binary allowed \
                 by digest may be",
                resolved.display()
            )));
        }
        // What runs is a sealed copy of what was hashed: the file itself could still be
        // rewritten through another descriptor between the check and the exec.
        let (actual, sealed) = sealed_copy(file, &resolved)?;
        if digests.contains(&actual.sha256) || digests.contains(&actual.blake3) {
            return Ok(AllowedBinary {
                requested: binary.to_owned(),
                resolved,
                file: sealed,
            });
        }
        if listed {
            return Err(Error::NotAllowed(format!(
                "{} is listed, but its content matches none of the allowed digests \
                 (sha256 {}, blake3 {})",
                resolved.display(),
                actual.sha256,
                actual.blake3
            )));
        }
        // No digests of files that are not listed: the error must not become a way to
        // learn the hash of any file the supervisor can read.
        Err(Error::NotAllowed(format!(
            "{} is neither listed nor of an allowed digest",
            resolved.display()
        )))
    }

    /// The digests allowed now: the configured ones and the file's (re-read when it
    /// changed). What `megavisor recompile`, the shim and the exec gate allow by content.
    pub fn digests(&self) -> HashSet<String> {
        self.current(Path::new("")).1
    }

    /// Whether the allowlist file lists `resolved`, and the digests allowed, re-reading
    /// the file when it changed.
    fn current(&self, resolved: &Path) -> (bool, HashSet<String>) {
        let Some(file) = &self.file else {
            return (false, self.digests.clone());
        };
        let mut file = file.lock().expect("allowlist file lock");
        let due = file
            .checked
            .is_none_or(|checked| checked.elapsed() >= self.reload_every);
        if due {
            file.checked = Some(Instant::now());
            file.reload();
        }
        let digests = self.digests.union(&file.digests).cloned().collect();
        (file.paths.contains(resolved), digests)
    }
}

impl ListFile {
    /// Re-reads the file if its modification time changed; keeps the last set otherwise,
    /// and while the file is missing or unreadable.
    fn reload(&mut self) {
        let modified = match std::fs::metadata(&self.path).and_then(|m| m.modified()) {
            Ok(modified) => modified,
            Err(e) => {
                tracing::warn!(file = %self.path.display(), "allowlist unreadable, keeping the last set: {e}");
                return;
            }
        };
        if self.modified == Some(modified) {
            return;
        }
        match std::fs::read_to_string(&self.path) {
            Ok(text) => {
                let (mut paths, mut digests) = (HashSet::new(), HashSet::new());
                for listed in parse(&text) {
                    match listed {
                        Listed::Path(path) => paths.insert(resolve(&path)),
                        Listed::Digest(digest) => digests.insert(digest),
                    };
                }
                self.paths = paths;
                self.digests = digests;
                self.modified = Some(modified);
                tracing::info!(file = %self.path.display(), binaries = self.paths.len(), digests = self.digests.len(), "allowlist read");
            }
            Err(e) => {
                tracing::warn!(file = %self.path.display(), "allowlist unreadable, keeping the last set: {e}");
            }
        }
    }
}

/// The paths and digests an allowlist file lists.
pub fn parse(text: &str) -> impl Iterator<Item = Listed> + '_ {
    text.lines().filter_map(|line| {
        let line = line.split_once(" #").map_or(line, |(path, _)| path).trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        if line.starts_with('/') {
            return Some(Listed::Path(PathBuf::from(line)));
        }
        let hex = line
            .strip_prefix("sha256:")
            .or_else(|| line.strip_prefix("blake3:"))
            .unwrap_or(line);
        if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Some(Listed::Digest(hex.to_ascii_lowercase()));
        }
        tracing::warn!(
            line,
            "allowlist line is neither an absolute path nor a digest; ignored"
        );
        None
    })
}

/// `path` with symlinks resolved, or as written when it does not exist (yet).
fn resolve(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allowlist_file_format() {
        let sha = "ab".repeat(32);
        let blake = "CD".repeat(32);
        let text = format!(
            "# allowed tools\n\n/usr/bin/ctr\n  /bin/ls   # listing\n#/bin/rm\nrelative/path\n\
             /opt/a b #c\nsha256:{sha}\nblake3:{blake} # a build\n{sha}\nsha256:abc\n"
        );
        let listed: Vec<_> = parse(&text).collect();
        assert_eq!(
            listed,
            [
                Listed::Path(PathBuf::from("/usr/bin/ctr")),
                Listed::Path(PathBuf::from("/bin/ls")),
                Listed::Path(PathBuf::from("/opt/a b")),
                Listed::Digest(sha.clone()),
                Listed::Digest(blake.to_ascii_lowercase()),
                Listed::Digest(sha),
            ]
        );
    }

    #[test]
    fn digests_in_the_file_are_reloaded_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("allowlist");
        std::fs::write(&file, "/usr/bin/true\n").unwrap();
        let allowlist = Allowlist::new(&AllowlistConfig {
            file: Some(file.clone()),
            reload_every: Duration::ZERO,
            ..AllowlistConfig::default()
        })
        .unwrap();
        assert!(allowlist.digests().is_empty());
        let digest = "0f".repeat(32);
        std::fs::write(&file, format!("sha256:{digest}\n")).unwrap();
        // A later modification time, whatever the file system's resolution.
        let later = SystemTime::now() + Duration::from_secs(5);
        File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert_eq!(allowlist.digests(), HashSet::from([digest]));
    }
}
