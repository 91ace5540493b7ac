//! An allowlist file, as an operator (or whoever can write it) leaves it: every path it
//! yields is absolute and trimmed, whatever the comments, blank lines and spaces around it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use megavisor_core::native::allowlist;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for path in allowlist::parse(&text) {
        let path = path.to_string_lossy();
        assert!(path.starts_with('/'), "{path:?}");
        assert_eq!(path.trim(), path, "{path:?}");
    }
});
