//! Where an installed megavisor finds its default bundle and the key that signed it, at
//! run time: an explicit option or variable first (the caller's business), then the
//! package's own data (the wheel's, the npm package's: the bindings pass it), then
//! `../share/megavisor` beside the program or library, then `/usr/share/megavisor`.
//!
//! The data directory holds `bundle/` and `megavisor.pub`. `make install PREFIX=...` puts
//! them in `PREFIX/share/megavisor`, beside `PREFIX/bin` and `PREFIX/lib`; the set-up links
//! `target/share/megavisor` to `build/`, so a program built in the checkout finds the
//! checkout's bundle the same way.

use std::path::{Path, PathBuf};

/// The system-wide data directory, the last place looked in.
pub const SYSTEM_DATA_DIR: &str = "/usr/share/megavisor";

/// The bundle directory inside a data directory.
pub const BUNDLE_DIR: &str = "bundle";

/// The trusted public key inside a data directory.
pub const TRUSTED_KEY_FILE: &str = "megavisor.pub";

/// The data directory for a program or library at `binary`: `../share/megavisor` beside
/// it when that holds a bundle, else [`SYSTEM_DATA_DIR`]. The directory may not exist; the
/// error of opening its bundle then names where it was looked for.
pub fn data_dir_beside(binary: &Path) -> PathBuf {
    let beside = binary
        .parent()
        .and_then(Path::parent)
        .map(|prefix| prefix.join("share/megavisor"));
    match beside {
        Some(dir) if dir.join(BUNDLE_DIR).join("manifest.json").exists() => dir,
        _ => PathBuf::from(SYSTEM_DATA_DIR),
    }
}

/// The data directory of the running program (see [`data_dir_beside`]).
pub fn data_dir_of_current_exe() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // The program as installed: a symlink to it in another directory still finds its data.
    let exe = exe.canonicalize().unwrap_or(exe);
    data_dir_beside(&exe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beside_the_binary_first_then_the_system() {
        let prefix = tempfile::tempdir().unwrap();
        let binary = prefix.path().join("bin/megavisor");
        assert_eq!(data_dir_beside(&binary), Path::new(SYSTEM_DATA_DIR));
        let data = prefix.path().join("share/megavisor");
        std::fs::create_dir_all(data.join(BUNDLE_DIR)).unwrap();
        std::fs::write(data.join(BUNDLE_DIR).join("manifest.json"), "{}").unwrap();
        assert_eq!(data_dir_beside(&binary), data);
    }
}
