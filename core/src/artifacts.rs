//! Artifacts a tool reports (seed 000): a last-line JSON object `{"artifacts": {...}}` on
//! stdout, and the file `<out-dir>/<execution_id>.json` with the same shape. Entries of the
//! file win over those of the last line. Non-string values are kept as their JSON text.

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

/// Artifacts from a `<execution_id>.json` file, if it exists and has that shape.
pub fn from_file(path: &Path) -> BTreeMap<String, String> {
    match std::fs::metadata(path) {
        Ok(m) if m.len() <= MAX_ARTIFACT_FILE_BYTES => {}
        Ok(m) => {
            tracing::warn!(file = %path.display(), size = m.len(), "artifacts file too large; ignored");
            return BTreeMap::new();
        }
        Err(_) => return BTreeMap::new(),
    }
    std::fs::read(path).map(|b| parse(&b)).unwrap_or_default()
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
}
