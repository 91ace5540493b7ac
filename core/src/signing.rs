//! Ed25519 signatures over the exact bytes of `manifest.json`.
//!
//! Key files are one line of text: `ed25519-public:<64 hex>` or `ed25519-secret:<64 hex>`.
//! The signature file is a small JSON object naming the key that signed, so a refusal can say
//! which key it was. Trust comes only from keys the operator passes in: a key that sits in the
//! bundle being checked is never trusted for that reason.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

const PUBLIC_PREFIX: &str = "ed25519-public:";
const SECRET_PREFIX: &str = "ed25519-secret:";

/// A public key the operator trusts to sign manifests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey {
    key: VerifyingKey,
}

impl TrustedKey {
    /// Reads a public key file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, "read key", e))?;
        let bytes = decode_key_line(&text, PUBLIC_PREFIX)
            .map_err(|reason| Error::io(path, "parse public key", std::io::Error::other(reason)))?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|e| {
            Error::io(
                path,
                "parse public key",
                std::io::Error::other(e.to_string()),
            )
        })?;
        Ok(TrustedKey { key })
    }

    /// Short identifier: the first 16 hex characters of the BLAKE3 of the key bytes.
    pub fn id(&self) -> String {
        key_id(&self.key)
    }
}

/// A secret key used by `megavisor pack` to sign manifests.
pub struct ManifestSigner {
    key: SigningKey,
}

impl ManifestSigner {
    /// Generates a fresh key pair from the operating system's random source.
    pub fn generate() -> Self {
        ManifestSigner {
            key: SigningKey::generate(&mut rand_core::OsRng),
        }
    }

    /// Reads a secret key file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, "read key", e))?;
        let bytes = decode_key_line(&text, SECRET_PREFIX)
            .map_err(|reason| Error::io(path, "parse secret key", std::io::Error::other(reason)))?;
        Ok(ManifestSigner {
            key: SigningKey::from_bytes(&bytes),
        })
    }

    /// Writes the secret key (mode 0600, refusing to overwrite) and the public key.
    pub fn save(&self, secret: &Path, public: &Path) -> Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(secret)
            .map_err(|e| Error::io(secret, "create secret key", e))?;
        writeln!(file, "{SECRET_PREFIX}{}", hex::encode(self.key.to_bytes()))
            .map_err(|e| Error::io(secret, "write", e))?;
        std::fs::write(
            public,
            format!(
                "{PUBLIC_PREFIX}{}\n",
                hex::encode(self.key.verifying_key().to_bytes())
            ),
        )
        .map_err(|e| Error::io(public, "write", e))
    }

    /// The public half, as a [`TrustedKey`].
    pub fn public(&self) -> TrustedKey {
        TrustedKey {
            key: self.key.verifying_key(),
        }
    }

    /// Signs `manifest` and returns the bytes of `manifest.json.sig`.
    pub fn sign(&self, manifest: &[u8]) -> Vec<u8> {
        let file = SignatureFile {
            algorithm: "ed25519".to_owned(),
            key_id: key_id(&self.key.verifying_key()),
            signature: hex::encode(self.key.sign(manifest).to_bytes()),
        };
        let mut bytes = serde_json::to_vec_pretty(&file).expect("signature serializes");
        bytes.push(b'\n');
        bytes
    }
}

/// Which manifests a runtime accepts.
#[derive(Debug, Clone, Default)]
pub struct TrustPolicy {
    /// Keys whose signatures are accepted.
    pub keys: Vec<TrustedKey>,
    /// Accept manifests that are unsigned or whose signature does not verify. File digests
    /// are still checked; only the authenticity of the manifest itself is given up.
    pub allow_unsigned: bool,
}

impl TrustPolicy {
    /// A policy trusting the keys in these public key files.
    pub fn from_key_files(paths: &[PathBuf]) -> Result<Self> {
        let keys = paths
            .iter()
            .map(|p| TrustedKey::load(p))
            .collect::<Result<_>>()?;
        Ok(TrustPolicy {
            keys,
            allow_unsigned: false,
        })
    }
}

/// How a manifest's authenticity was established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authenticity {
    /// Signed by the trusted key with this id.
    Signed {
        /// Id of the key that signed.
        key_id: String,
    },
    /// Accepted without a valid signature because the policy allows unsigned manifests.
    Unverified {
        /// Why the signature would otherwise have been refused.
        reason: String,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignatureFile {
    algorithm: String,
    key_id: String,
    signature: String,
}

/// Checks `signature` (the content of `manifest.json.sig`, if present) over `manifest`.
pub fn verify_manifest(
    manifest: &[u8],
    signature: Option<&[u8]>,
    manifest_path: &Path,
    policy: &TrustPolicy,
) -> Result<Authenticity> {
    match check_signature(manifest, signature, &policy.keys) {
        Ok(key_id) => Ok(Authenticity::Signed { key_id }),
        Err(reason) if policy.allow_unsigned => Ok(Authenticity::Unverified { reason }),
        Err(reason) => Err(Error::BadSignature {
            manifest: manifest_path.to_owned(),
            reason,
        }),
    }
}

fn check_signature(
    manifest: &[u8],
    signature: Option<&[u8]>,
    keys: &[TrustedKey],
) -> std::result::Result<String, String> {
    let Some(signature) = signature else {
        return Err(format!(
            "{} is missing: the manifest is unsigned (sign it with `megavisor pack`, or pass allow-unsigned to accept it anyway)",
            crate::manifest::SIGNATURE_FILE
        ));
    };
    if keys.is_empty() {
        return Err("no trusted key was given: pass the public key of the bundle's signer (--trusted-key FILE)".to_owned());
    }
    let file: SignatureFile = serde_json::from_slice(signature)
        .map_err(|e| format!("signature file is malformed: {e}"))?;
    if file.algorithm != "ed25519" {
        return Err(format!(
            "signature algorithm {:?} is not ed25519",
            file.algorithm
        ));
    }
    let sig_bytes: [u8; 64] = hex::decode(&file.signature)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or("signature is not 128 hex characters")?;
    let sig = Signature::from_bytes(&sig_bytes);
    let Some(key) = keys.iter().find(|k| k.id() == file.key_id) else {
        let trusted: Vec<String> = keys.iter().map(TrustedKey::id).collect();
        return Err(format!(
            "signed by key {}, which is not among the trusted keys ({})",
            file.key_id,
            trusted.join(", ")
        ));
    };
    key.key.verify(manifest, &sig).map_err(|_| {
        format!(
            "the signature by key {} does not verify: the manifest was changed after signing, or the signature is corrupt",
            file.key_id
        )
    })?;
    Ok(file.key_id)
}

fn key_id(key: &VerifyingKey) -> String {
    blake3::hash(key.as_bytes()).to_hex()[..16].to_owned()
}

fn decode_key_line(text: &str, prefix: &str) -> std::result::Result<[u8; 32], String> {
    let hex_part = text
        .trim()
        .strip_prefix(prefix)
        .ok_or_else(|| format!("expected one line starting with {prefix:?}"))?;
    hex::decode(hex_part)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| "key is not 64 hex characters".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(signer: &ManifestSigner) -> TrustPolicy {
        TrustPolicy {
            keys: vec![signer.public()],
            allow_unsigned: false,
        }
    }

    #[test]
    fn signed_manifest_verifies_and_tampering_is_refused() {
        let signer = ManifestSigner::generate();
        let sig = signer.sign(b"{\"a\":1}");
        let p = Path::new("m.json");
        let ok = verify_manifest(b"{\"a\":1}", Some(&sig), p, &policy(&signer)).unwrap();
        assert_eq!(
            ok,
            Authenticity::Signed {
                key_id: signer.public().id()
            }
        );
        let err = verify_manifest(b"{\"a\":2}", Some(&sig), p, &policy(&signer)).unwrap_err();
        assert!(err.to_string().contains("does not verify"), "{err}");
    }

    #[test]
    fn wrong_key_and_missing_signature_say_why() {
        let signer = ManifestSigner::generate();
        let other = ManifestSigner::generate();
        let sig = signer.sign(b"m");
        let p = Path::new("m.json");
        let err = verify_manifest(b"m", Some(&sig), p, &policy(&other)).unwrap_err();
        assert!(
            err.to_string().contains("not among the trusted keys"),
            "{err}"
        );
        let err = verify_manifest(b"m", None, p, &policy(&signer)).unwrap_err();
        assert!(err.to_string().contains("unsigned"), "{err}");
        let lax = TrustPolicy {
            keys: vec![],
            allow_unsigned: true,
        };
        assert!(matches!(
            verify_manifest(b"m", None, p, &lax).unwrap(),
            Authenticity::Unverified { .. }
        ));
    }

    #[test]
    fn key_files_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let (secret, public) = (dir.path().join("k"), dir.path().join("k.pub"));
        let signer = ManifestSigner::generate();
        signer.save(&secret, &public).unwrap();
        assert!(
            signer.save(&secret, &public).is_err(),
            "must not overwrite a secret key"
        );
        let loaded = ManifestSigner::load(&secret).unwrap();
        assert_eq!(loaded.public(), TrustedKey::load(&public).unwrap());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secret).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
