//! Where the shim sends its calls, and whom it trusts: a small TOML file.
//!
//! ```toml
//! # The node's supervisor: calls go to it (the fast path). Without it, the shim loads the
//! # bundle itself (embedded) and verifies it on its first container.
//! socket = "/run/megavisor/megavisor.sock"
//! # The bundle an embedded shim loads (default: MEGAVISOR_BUNDLE, else the data directory's).
//! bundle = "/usr/local/share/megavisor/bundle"
//! # Keys trusted to sign the bundle and the image maps (default: MEGAVISOR_TRUSTED_KEY,
//! # else the data directory's key).
//! trusted_keys = ["/etc/megavisor/megavisor.pub"]
//! # The fleet's allowlist: what an image's map runs natively must still be listed here.
//! allowlist = "/etc/megavisor/allowlist"
//! ```
//!
//! The file is found, in order: from containerd's runtime options (`ConfigPath`, or the
//! TOML itself in `ConfigBody`: what a CRI runtime handler's `options` table and
//! `ctr run --runtime-config-path` pass), from `MEGAVISOR_SHIM_CONFIG`, at
//! [`DEFAULT_CONFIG`]; with none of them, every default holds.

use std::path::{Path, PathBuf};

use megavisor_driver::data;
use serde::Deserialize;

/// Where an operator's file is read when containerd passes none.
pub const DEFAULT_CONFIG: &str = "/etc/megavisor/shim.toml";
/// The largest config file read.
const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// The environment variable naming the file.
pub const CONFIG_ENV: &str = "MEGAVISOR_SHIM_CONFIG";

/// The shim's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShimConfig {
    /// The supervisor's socket, if calls go through one.
    #[serde(default)]
    pub socket: Option<PathBuf>,
    /// The bundle directory of an embedded shim.
    #[serde(default)]
    pub bundle: Option<PathBuf>,
    /// Public keys trusted to sign the bundle and image maps.
    #[serde(default)]
    pub trusted_keys: Vec<PathBuf>,
    /// The fleet's allowlist file: an image's native binary runs only while it lists the
    /// binary's digest (re-read when it changes), whatever the image's map says.
    #[serde(default)]
    pub allowlist: Option<PathBuf>,
}

impl ShimConfig {
    /// Parses a config file's text (`origin` names it in errors).
    pub fn parse(text: &str, origin: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| format!("shim config {origin}: {e}"))
    }

    /// The config that containerd's runtime options name, or else the environment's, the
    /// default file's, or every default.
    pub fn find(options: Option<&RuntimeOptions>) -> Result<Self, String> {
        if let Some(options) = options {
            if !options.config_body.is_empty() {
                return Self::parse(&options.config_body, "(runtime options ConfigBody)");
            }
            if !options.config_path.is_empty() {
                return Self::read(Path::new(&options.config_path));
            }
        }
        if let Some(path) = std::env::var_os(CONFIG_ENV).filter(|v| !v.is_empty()) {
            return Self::read(Path::new(&path));
        }
        if Path::new(DEFAULT_CONFIG).exists() {
            return Self::read(Path::new(DEFAULT_CONFIG));
        }
        Ok(ShimConfig::default())
    }

    /// Reads a config file: a regular file of at most [`MAX_CONFIG_BYTES`], opened without
    /// blocking (a FIFO named as the config must not hold a container's create).
    fn read(path: &Path) -> Result<Self, String> {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        let failed = |e: std::io::Error| format!("shim config {}: {e}", path.display());
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .map_err(failed)?;
        if !file.metadata().map_err(failed)?.is_file() {
            return Err(format!(
                "shim config {} is not a regular file",
                path.display()
            ));
        }
        let mut text = String::new();
        file.take(MAX_CONFIG_BYTES)
            .read_to_string(&mut text)
            .map_err(failed)?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The bundle directory: this file's, else `MEGAVISOR_BUNDLE`, else the data
    /// directory's.
    pub fn bundle_dir(&self) -> PathBuf {
        self.bundle.clone().unwrap_or_else(|| {
            std::env::var_os(megavisor_driver::BUNDLE_ENV)
                .filter(|v| !v.is_empty())
                .map_or_else(|| data_dir().join(data::BUNDLE_DIR), PathBuf::from)
        })
    }

    /// The trusted keys: this file's, else `MEGAVISOR_TRUSTED_KEY`, else the data
    /// directory's.
    pub fn keys(&self) -> Vec<PathBuf> {
        if !self.trusted_keys.is_empty() {
            return self.trusted_keys.clone();
        }
        let key = std::env::var_os(megavisor_driver::TRUSTED_KEY_ENV)
            .filter(|v| !v.is_empty())
            .map_or_else(|| data_dir().join(data::TRUSTED_KEY_FILE), PathBuf::from);
        vec![key]
    }
}

fn data_dir() -> PathBuf {
    data::data_dir_of_current_exe()
}

/// containerd's generic runtime options (`runtimeoptions.v1.Options`): what it passes to a
/// shim that is not runc's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeOptions {
    /// `ConfigPath`: a file for the runtime to read.
    pub config_path: String,
    /// `ConfigBody`: the file's content itself.
    pub config_body: String,
}

/// The `type_url` of [`RuntimeOptions`] as containerd sends it.
pub const RUNTIME_OPTIONS_TYPE: &str = "runtimeoptions.v1.Options";

impl RuntimeOptions {
    /// Decodes the message (fields 2 and 3 are strings; others are skipped). `None` for
    /// bytes that are not such a message.
    pub fn decode(mut bytes: &[u8]) -> Option<Self> {
        let mut options = RuntimeOptions::default();
        while !bytes.is_empty() {
            let key = varint(&mut bytes)?;
            let (field, wire_type) = (key >> 3, key & 7);
            match wire_type {
                0 => {
                    varint(&mut bytes)?;
                }
                1 => bytes = bytes.get(8..)?,
                5 => bytes = bytes.get(4..)?,
                2 => {
                    let len = usize::try_from(varint(&mut bytes)?).ok()?;
                    let value = bytes.get(..len)?;
                    bytes = &bytes[len..];
                    let text = || String::from_utf8(value.to_vec()).ok();
                    match field {
                        2 => options.config_path = text()?,
                        3 => options.config_body = text()?,
                        _ => {}
                    }
                }
                _ => return None,
            }
        }
        Some(options)
    }
}

fn varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_options_decode_as_containerd_encodes_them() {
        // type_url = "x", config_path = "/etc/m.toml", config_body = "a"
        let mut bytes = vec![0x0a, 1, b'x', 0x12, 11];
        bytes.extend_from_slice(b"/etc/m.toml");
        bytes.extend_from_slice(&[0x1a, 1, b'a']);
        let options = RuntimeOptions::decode(&bytes).unwrap();
        assert_eq!(options.config_path, "/etc/m.toml");
        assert_eq!(options.config_body, "a");
        assert_eq!(RuntimeOptions::decode(&[0x12, 5, b'a']), None, "truncated");
    }

    #[test]
    fn the_config_file_refuses_unknown_keys() {
        let config = ShimConfig::parse("socket = \"/run/m.sock\"\n", "t").unwrap();
        assert_eq!(config.socket.as_deref(), Some(Path::new("/run/m.sock")));
        let err = ShimConfig::parse("sockett = \"x\"\n", "t").unwrap_err();
        assert!(err.contains("unknown field"), "{err}");
    }
}
