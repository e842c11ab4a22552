//! Untrusted text through the PII stream scanner, split into chunks at NUL bytes. Must never
//! panic; what it emits is always a prefix of the input, all of it when nothing was found;
//! and chunking never changes the verdict of a whole-text scan, nor lets a match out.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warden::detect::pii::{scan, StreamScanner};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut scanner = StreamScanner::new();
    let mut whole = String::new();
    let mut emitted = String::new();
    for chunk in text.split('\0') {
        whole.push_str(chunk);
        emitted.push_str(&scanner.push(chunk).emit);
    }
    let end = scanner.finish();
    emitted.push_str(&end.emit);
    assert!(
        whole.starts_with(&emitted),
        "emitted text is not a prefix of the input"
    );
    if end.found == 0 {
        assert_eq!(emitted, whole, "nothing found but text was held back");
    }
    let hits = scan(&whole);
    assert_eq!(
        end.found == 0,
        hits.is_empty(),
        "stream and whole-text scan disagree"
    );
    // Only matches that fit the hold-back are promised never to leak.
    if let Some(first) = hits.first().filter(|h| h.end - h.start <= 64) {
        assert!(emitted.len() <= first.start, "a match leaked: {first:?}");
    }
});
