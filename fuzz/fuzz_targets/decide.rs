//! Arbitrary request JSON against the contract bundle: parsing the request and deciding must
//! never panic, and a refusal is always explained by at least one reason.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use warden::decide::{decide, Mode, Request, Usage};
use warden::policy::Snapshot;

fn snapshot() -> &'static Snapshot {
    static SNAP: OnceLock<Snapshot> = OnceLock::new();
    SNAP.get_or_init(|| {
        warden::policy::compile_str("bundle.yaml", include_str!("../../examples/contract/bundle.yaml"))
            .unwrap_or_else(|e| panic!("contract bundle invalid: {e:?}"))
    })
}

fuzz_target!(|data: &[u8]| {
    let Some(split) = data.iter().position(|b| *b == 0) else {
        return;
    };
    let (req, usage) = (&data[..split], &data[split + 1..]);
    let Ok(req) = serde_json::from_slice::<Request>(req) else {
        return;
    };
    let usage: Usage = serde_json::from_slice(usage).unwrap_or_default();
    for mode in [Mode::Enforcing, Mode::Degraded, Mode::Bypass, Mode::Halted] {
        let d = decide(snapshot(), &req, &usage, mode, 0, "fuzz");
        assert!(!d.reasons.is_empty() || d.action == warden::policy::model::Action::Continue);
        if d.refused() {
            assert!(d.code.is_some());
        }
    }
});
