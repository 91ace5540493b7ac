//! SHA-256 + BLAKE3 digest pairs, computed in one pass.
//!
//! Every file the manifest names is recorded with both digests: SHA-256 because it is what
//! fleets and registries already speak, BLAKE3 because it is what megavisor looks up by
//! on the hot path. Both are always checked.

use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::error::{Error, Result};

/// Lower-case hex SHA-256 and BLAKE3 digests of one byte string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Digests {
    /// SHA-256, 64 lower-case hex characters.
    pub sha256: String,
    /// BLAKE3 (256-bit), 64 lower-case hex characters.
    pub blake3: String,
}

impl Digests {
    /// Digests of an in-memory byte string.
    pub fn of_bytes(bytes: &[u8]) -> Self {
        let mut hasher = DualHasher::default();
        hasher.update(bytes);
        hasher.finish()
    }

    /// Digests of a file, streamed so that large binaries are never held twice.
    pub fn of_file(path: &Path) -> Result<(Self, u64)> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, "open", e))?;
        Self::of_reader(file, path)
    }

    /// Digests of everything `reader` yields (the content of `path`, named in errors), and
    /// its size.
    pub fn of_reader(mut reader: impl Read, path: &Path) -> Result<(Self, u64)> {
        let mut hasher = DualHasher::default();
        let mut buf = vec![0u8; 1 << 16];
        let mut size = 0u64;
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(|e| Error::io(path, "read", e))?;
            if n == 0 {
                break;
            }
            size += n as u64;
            hasher.update(&buf[..n]);
        }
        Ok((hasher.finish(), size))
    }

    /// Checks `actual` against `self` (the expected value) and names `file` on mismatch.
    pub fn verify(&self, actual: &Digests, file: &Path) -> Result<()> {
        for (algorithm, expected, found) in [
            ("sha256", &self.sha256, &actual.sha256),
            ("blake3", &self.blake3, &actual.blake3),
        ] {
            if expected != found {
                return Err(Error::HashMismatch {
                    file: file.to_owned(),
                    algorithm,
                    expected: expected.clone(),
                    actual: found.clone(),
                });
            }
        }
        Ok(())
    }

    /// Whether both digests are 64 lower-case hex characters.
    pub fn is_well_formed(&self) -> bool {
        is_hex_256(&self.sha256) && is_hex_256(&self.blake3)
    }

    /// Whether `hex` (a SHA-256 or BLAKE3 hex digest) names this content.
    pub fn matches_either(&self, hex: &str) -> bool {
        self.sha256 == hex || self.blake3 == hex
    }
}

fn is_hex_256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[derive(Default)]
struct DualHasher {
    sha256: sha2::Sha256,
    blake3: blake3::Hasher,
}

impl DualHasher {
    fn update(&mut self, bytes: &[u8]) {
        self.sha256.update(bytes);
        self.blake3.update(bytes);
    }

    fn finish(self) -> Digests {
        Digests {
            sha256: hex::encode(self.sha256.finalize()),
            blake3: self.blake3.finalize().to_hex().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors_of_empty_input() {
        let d = Digests::of_bytes(b"");
        assert_eq!(
            d.sha256,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            d.blake3,
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
        assert!(d.is_well_formed());
    }

    #[test]
    fn verify_names_file_and_both_digests() {
        let expected = Digests::of_bytes(b"a");
        let actual = Digests::of_bytes(b"b");
        let err = expected
            .verify(&actual, Path::new("/x/mega.wasm"))
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/x/mega.wasm"), "{msg}");
        assert!(
            msg.contains(&expected.sha256) && msg.contains(&actual.sha256),
            "{msg}"
        );
    }
}
