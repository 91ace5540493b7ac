//! An entry of an entries file and the JSON arguments a caller (a model) sends it, rendered
//! into argv and stdin through the entry's schema and its `x-argv` hints: an answer or a
//! typed error, the same answer every time.
#![no_main]

use libfuzzer_sys::fuzz_target;
use megavisor_core::Entry;

fuzz_target!(|data: &[u8]| {
    let (entry, params) = megavisor_fuzz::two_parts(data);
    let Ok(entry) = serde_json::from_slice::<Entry>(entry) else {
        return;
    };
    let Ok(params) = serde_json::from_slice::<serde_json::Value>(params) else {
        return;
    };
    let first = entry.render_arguments(&params);
    let second = entry.render_arguments(&params);
    match (first, second) {
        (Ok(a), Ok(b)) => assert_eq!((a.args, a.stdin), (b.args, b.stdin)),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        _ => panic!("rendered once, refused once"),
    }
});
