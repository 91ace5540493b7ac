//! Artifacts a tool reports, as a map of strings: a last-line JSON object
//! `{"artifacts": {...}}` on stdout, and the file `<out-dir>/<execution_id>.json` with the
//! same shape. Entries of the file win over those of the last line. Non-string values are
//! kept as their JSON text.

use std::collections::BTreeMap;
use std::path::Path;

/// Largest artifacts file read; a bigger one is ignored with a warning.
const MAX_ARTIFACT_FILE_BYTES: u64 = 1 << 20;

/// Artifacts from the last non-empty line of `stdout`, if it is such an object.
pub fn from_stdout(stdout: &[u8]) -> BTreeMap<String, String> {
    let text = String::from_utf8_lossy(stdout);
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|line| parse(line.as_bytes()))
        .unwrap_or_default()
}

/// Artifacts from a `<execution_id>.json` file, if it is a regular file of that shape.
///
/// The tool wrote the directory, so the file is opened without following a symlink: a tool
/// must not make the runtime read, for it, a file it could not read itself.
pub fn from_file(path: &Path) -> BTreeMap<String, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path);
    let Ok(file) = file else {
        return BTreeMap::new();
    };
    match file.metadata() {
        Ok(m) if m.is_file() && m.len() <= MAX_ARTIFACT_FILE_BYTES => {}
        Ok(m) => {
            tracing::warn!(file = %path.display(), size = m.len(), "artifacts file too large or not a regular file; ignored");
            return BTreeMap::new();
        }
        Err(_) => return BTreeMap::new(),
    }
    let mut bytes = Vec::new();
    match file.take(MAX_ARTIFACT_FILE_BYTES).read_to_end(&mut bytes) {
        Ok(_) => parse(&bytes),
        Err(_) => BTreeMap::new(),
    }
}

fn parse(bytes: &[u8]) -> BTreeMap<String, String> {
    let Ok(serde_json::Value::Object(mut root)) = serde_json::from_slice(bytes) else {
        return BTreeMap::new();
    };
    let Some(serde_json::Value::Object(map)) = root.remove("artifacts") else {
        return BTreeMap::new();
    };
    map.into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => (k, s),
            other => (k, other.to_string()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_non_empty_line_is_read() {
        let out = b"work\n{\"artifacts\":{\"a\":\"/x\",\"n\":2}}\n\n";
        let a = from_stdout(out);
        assert_eq!(a.get("a").map(String::as_str), Some("/x"));
        assert_eq!(a.get("n").map(String::as_str), Some("2"));
    }

    #[test]
    fn other_json_or_text_gives_nothing() {
        assert!(from_stdout(b"{\"artifacts\":[1]}\n").is_empty());
        assert!(from_stdout(b"{\"x\":{}}").is_empty());
        assert!(from_stdout(b"plain text").is_empty());
        assert!(from_stdout(b"").is_empty());
    }

    #[test]
    fn a_file_behind_a_symlink_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret.json");
        std::fs::write(&secret, br#"{"artifacts":{"k":"secret"}}"#).unwrap();
        assert_eq!(
            from_file(&secret).get("k").map(String::as_str),
            Some("secret")
        );
        let planted = dir.path().join("id.json");
        std::os::unix::fs::symlink(&secret, &planted).unwrap();
        assert!(from_file(&planted).is_empty());
    }
}
