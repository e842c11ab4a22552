//! Untrusted evidence segment bytes (a copied or damaged spool file): scanning must never
//! panic, and whatever it accepts must chain-check without panicking either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warden::evidence::segment::{check_chain, scan, Head, MAGIC};

fuzz_target!(|data: &[u8]| {
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(data);
    let path = std::path::Path::new("fuzz.wev");
    for input in [data, &bytes[..]] {
        if let Ok(s) = scan(path, input) {
            let mut head = Head::default();
            let _ = check_chain(path, &mut head, &s.records);
            assert!(s.good_len as usize <= input.len());
        }
    }
});
