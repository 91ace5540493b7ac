//! A module's data mount: private copies of its verified data files, in a directory the
//! runtime owns, mounted read-only into each of its instances. Copies, because the bundle's
//! own files could be replaced after they were verified; world-readable, because a peer's
//! call runs with the peer's file credentials and must still read them (they are the
//! module's public data: integrity matters here, not secrecy).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::error::{Error, Result};
use crate::manifest::DataMount;

/// The directory holding a module's data files, removed when the runtime is dropped.
pub(crate) struct DataDir {
    dir: tempfile::TempDir,
    guest: String,
}

impl DataDir {
    /// Writes `bytes` (verified, in the order of `mount.files`) into a new directory.
    pub(crate) fn materialize(mount: &DataMount, bytes: &[Vec<u8>]) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("megavisor-data-")
            .tempdir()
            .map_err(|e| Error::io("data directory", "create", e))?;
        for (record, content) in mount.files.iter().zip(bytes) {
            let path = dir.path().join(&record.file);
            std::fs::write(&path, content).map_err(|e| Error::io(&path, "write", e))?;
            set_mode(&path, 0o444)?;
        }
        set_mode(dir.path(), 0o555)?;
        Ok(DataDir {
            dir,
            guest: mount.guest.clone(),
        })
    }

    /// The host directory.
    pub(crate) fn host(&self) -> &Path {
        self.dir.path()
    }

    /// Where instances see it.
    pub(crate) fn guest(&self) -> &str {
        &self.guest
    }

    /// Whether `guest` (normalized) is this mount's directory or lies beneath it.
    pub(crate) fn covers(&self, guest: &str) -> bool {
        guest == self.guest
            || guest
                .strip_prefix(self.guest.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        // The directory is read-only; make it writable again so it can be removed.
        let _ = std::fs::set_permissions(self.dir.path(), std::fs::Permissions::from_mode(0o755));
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io(path, "chmod", e))
}
