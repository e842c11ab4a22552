//! Untrusted bundle bytes through the whole front end: YAML tree with budgets, typed documents,
//! validation (including the SQL parser), compilation and hashing. Must never panic, and an
//! accepted bundle must compile to the same hash twice.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(snap) = warden::policy::compile_str("fuzz.yaml", text) {
        let again = warden::policy::compile_str("fuzz.yaml", text).unwrap_or_else(|_| panic!("flaky compile"));
        assert_eq!(snap.hash(), again.hash());
    }
});
