//! An allowlist file, as an operator (or whoever can write it) leaves it: every path it
//! yields is absolute and trimmed, and every digest 64 lower-case hex digits, whatever the
//! comments, blank lines and spaces around them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use megavisor_core::native::allowlist;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for listed in allowlist::parse(&text) {
        match listed {
            allowlist::Listed::Path(path) => {
                let path = path.to_string_lossy();
                assert!(path.starts_with('/'), "{path:?}");
                assert_eq!(path.trim(), path, "{path:?}");
            }
            allowlist::Listed::Digest(digest) => {
                assert_eq!(digest.len(), 64, "{digest:?}");
                assert!(digest.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
            }
        }
    }
});
