//! Untrusted text through the PII stream scanner, split into chunks at NUL bytes. Must never
//! panic; what it emits is always a prefix of the input, all of it when nothing was found;
//! whatever a whole-text scan finds the stream finds too (and, below the raw hold-back
//! bound, nothing else), however it is chunked; and short matches never leak.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warden::detect::pii::{kinds, scan, StreamScanner, HOLD_RAW_MAX};

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
    assert!(
        hits.iter().all(|h| h.start < h.end
            && h.end <= whole.len()
            && whole.is_char_boundary(h.start)
            && whole.is_char_boundary(h.end)),
        "a hit is not a range of the input"
    );
    assert_eq!(
        kinds(&whole),
        hits.iter().fold(0, |m, h| m | h.kind.bit()),
        "kinds and scan disagree"
    );
    assert!(
        hits.is_empty() || end.found != 0,
        "the whole text has a match the stream missed"
    );
    // Past the raw bound, held text invisible characters keep undecided is decided as if it
    // ended there, which may find a match the whole text does not have.
    if whole.len() <= HOLD_RAW_MAX {
        assert_eq!(
            end.found == 0,
            hits.is_empty(),
            "stream and whole-text scan disagree"
        );
    }
    // Only matches that fit the hold-back are promised never to leak.
    if let Some(first) = hits.first().filter(|h| h.end - h.start <= 64) {
        assert!(emitted.len() <= first.start, "a match leaked: {first:?}");
    }
});
