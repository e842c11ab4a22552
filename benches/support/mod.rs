//! What the loopback benches share: the release binary, and the agent address a sidecar process
//! prints when it listens.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Child;

/// `target/release/warden` (or under `CARGO_TARGET_DIR`), which must have been built.
pub fn release_binary() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let bin = target.join("release").join("warden");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --release` first",
        bin.display()
    );
    bin
}

/// Read a sidecar process's stderr (piped) until it says where its agent port listens; keep
/// draining the rest on a thread so a full pipe can never stall it.
pub fn agent_addr(child: &mut Child, what: &str) -> SocketAddr {
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let agent = loop {
        let Some(Ok(line)) = lines.next() else {
            let _ = child.kill();
            panic!("sidecar ({what}) exited before listening");
        };
        if let Some(rest) = line.strip_prefix("warden sidecar: agent http://") {
            break rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .parse()
                .unwrap();
        }
    };
    std::thread::spawn(move || for _ in lines.by_ref() {});
    agent
}
