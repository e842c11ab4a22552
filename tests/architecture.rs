//! The module tree is the architecture: this test reads `src/**/*.rs` and fails when a room
//! imports one it must not (docs/architecture.md, "Rules of the rooms").
//!
//! A path counts wherever it appears outside a comment: `use crate::a::b`, grouped
//! `use crate::{a::b, c}`, and inline `crate::a::b::f()`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Every `crate::…` path in `src`, as its segments (`crate::spine::{decide, Call}` gives
/// `[spine, decide]` and `[spine, Call]`).
fn crate_paths(src: &str) -> Vec<Vec<String>> {
    let code: String = src
        .lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let b = code.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(at) = code[i..].find("crate::") {
        let start = i + at;
        i = start + "crate::".len();
        // `crate` must be a whole word (not `my_crate::`).
        if start > 0 && (b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_') {
            continue;
        }
        let (paths, end) = tree(&code, i, Vec::new());
        out.extend(paths);
        i = end;
    }
    out
}

/// Parse a path tree at `i` (`a::b`, `a::{b, c::d}`, `{a, b}`), prefixed by `prefix`.
fn tree(code: &str, mut i: usize, prefix: Vec<String>) -> (Vec<Vec<String>>, usize) {
    let b = code.as_bytes();
    let skip_ws = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    i = skip_ws(i);
    if i < b.len() && b[i] == b'{' {
        let mut out = Vec::new();
        i += 1;
        loop {
            i = skip_ws(i);
            if i >= b.len() {
                return (out, i);
            }
            if b[i] == b'}' {
                return (out, i + 1);
            }
            if b[i] == b',' {
                i += 1;
                continue;
            }
            let (paths, end) = tree(code, i, prefix.clone());
            out.extend(paths);
            if end == i {
                i += 1; // not a path (`*`, `self`): step over it
            } else {
                i = end;
            }
        }
    }
    let s = i;
    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
        i += 1;
    }
    if i == s {
        return (
            if prefix.is_empty() {
                vec![]
            } else {
                vec![prefix]
            },
            i,
        );
    }
    let mut path = prefix;
    path.push(code[s..i].to_string());
    if code[i..].starts_with("::") {
        let (paths, end) = tree(code, i + 2, path.clone());
        if paths.is_empty() {
            return (vec![path], end);
        }
        return (paths, end);
    }
    (vec![path], i)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read src") {
        let p = e.expect("dir entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The room a file is in: its first directory under `src/` (or the file itself: `codes`).
fn room(rel: &Path) -> String {
    let first = rel.components().next().expect("a path").as_os_str();
    first.to_string_lossy().trim_end_matches(".rs").to_string()
}

/// Test files (`tests.rs`, `*/tests/*`) may reach anything.
fn is_test(rel: &Path) -> bool {
    rel.components()
        .any(|c| c.as_os_str() == "tests.rs" || c.as_os_str() == "tests")
}

struct Rule {
    rooms: &'static [&'static str],
    /// Whether a path (its segments after `crate::`) is forbidden, and why.
    forbids: fn(&[String]) -> Option<&'static str>,
}

/// Runtime rooms: where I/O, listeners and mutable state live.
const RUNTIME: [&str; 8] = [
    "service",
    "spine",
    "connectors",
    "sidecar",
    "front",
    "dev",
    "cli",
    "evidence",
];

/// The spine's layers; a connector is given what it needs (its call, a guard, the runtime
/// state), never a layer.
const SPINE_LAYERS: [&str; 7] = [
    "decide", "detect", "evidence", "limit", "meter", "mode", "parse",
];

const RULES: &[Rule] = &[
    Rule {
        rooms: &["decide", "policy"],
        forbids: |p| {
            RUNTIME
                .contains(&p[0].as_str())
                .then_some("the decision core and the policy compiler import no runtime module")
        },
    },
    Rule {
        rooms: &["spine"],
        forbids: |p| match p[0].as_str() {
            "front" | "sidecar" | "cli" | "service" => {
                Some("the spine imports no front end, no sidecar wiring and not the policy service")
            }
            // The connectors' interface (`Guard`, `Registry`, `Settings`) and the credential
            // references are the spine's to use; a connector's own room (`llm`, `http`, …) is
            // not: the spine sees targets only through `spine::Target`.
            "connectors"
                if p.len() > 1
                    && p[1].starts_with(|c: char| c.is_ascii_lowercase())
                    && p[1] != "creds" =>
            {
                Some("the spine names no connector's own module (targets are `spine::Target`s)")
            }
            _ => None,
        },
    },
    Rule {
        rooms: &["connectors"],
        forbids: |p| match p[0].as_str() {
            "spine" if p.len() > 1 && SPINE_LAYERS.contains(&p[1].as_str()) => {
                Some("connectors import no spine layer (they are given a guard)")
            }
            "front" | "sidecar" | "cli" => Some("connectors import no front end or wiring"),
            _ => None,
        },
    },
    Rule {
        rooms: &[
            "spine",
            "connectors",
            "front",
            "decide",
            "policy",
            "detect",
            "evidence",
            "codes",
            "sidecar",
        ],
        forbids: |p| (p[0] == "dev").then_some("nothing on the request path imports dev"),
    },
];

/// Every forbidden import in the tree, as `file: crate::path — why`.
fn violations(src_dir: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src_dir, &mut files);
    let mut found = BTreeSet::new();
    for f in files {
        let rel = f.strip_prefix(src_dir).expect("under src");
        if is_test(rel) {
            continue;
        }
        let room = room(rel);
        let text = std::fs::read_to_string(&f).expect("read a source file");
        for path in crate_paths(&text) {
            for rule in RULES.iter().filter(|r| r.rooms.contains(&room.as_str())) {
                if let Some(why) = (rule.forbids)(&path) {
                    found.insert(format!(
                        "{}: crate::{} — {why}",
                        rel.display(),
                        path.join("::")
                    ));
                }
            }
        }
    }
    found.into_iter().collect()
}

#[test]
fn no_room_imports_what_it_must_not() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let v = violations(&src);
    assert!(v.is_empty(), "forbidden imports:\n  {}", v.join("\n  "));
}

/// The spine's call holds no HTTP server's types: a front end turns hyper's request into the
/// spine's call, so a front end that is not hyper can feed the same spine.
#[test]
fn the_spine_holds_no_hyper_types() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src.join("spine"), &mut files);
    let mut found = Vec::new();
    // The runtime state holds the upstream client (hyper-util), which connectors use: that is
    // the client side, not the call.
    for f in files
        .into_iter()
        .filter(|f| !f.starts_with(src.join("spine/state")))
    {
        let text = std::fs::read_to_string(&f).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if code.contains("hyper::") {
                found.push(format!("{}:{}: {}", f.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "hyper in the spine:\n  {}",
        found.join("\n  ")
    );
}

#[test]
fn the_reader_sees_every_form_of_path() {
    let src = "use crate::spine::{decide::recheck, Call};\n\
               use crate::{dev, policy::model::{Action, Channel}};\n\
               fn f() { crate::sidecar::state::go(); } // crate::front::x in a comment\n\
               let y = my_crate::dev::no;";
    let got: Vec<String> = crate_paths(src).iter().map(|p| p.join("::")).collect();
    assert_eq!(
        got,
        [
            "spine::decide::recheck",
            "spine::Call",
            "dev",
            "policy::model::Action",
            "policy::model::Channel",
            "sidecar::state::go",
        ]
    );
}

#[test]
fn each_rule_refuses_its_example() {
    let check = |room: &str, path: &str| {
        let p: Vec<String> = path.split("::").map(String::from).collect();
        RULES
            .iter()
            .filter(|r| r.rooms.contains(&room))
            .any(|r| (r.forbids)(&p).is_some())
    };
    assert!(check("decide", "spine::Call"));
    assert!(check("policy", "evidence::Record"));
    assert!(check("spine", "sidecar::state::Shared"));
    assert!(check("spine", "front::agent::Agent"));
    assert!(check("spine", "connectors::llm::ChatCall"));
    assert!(check("spine", "connectors::http::request_fact"));
    assert!(!check("spine", "connectors::Guard"));
    assert!(!check("spine", "connectors::creds::Resolved"));
    assert!(check("connectors", "spine::decide::recheck"));
    assert!(check("connectors", "sidecar::config"));
    assert!(check("evidence", "dev::mocks"));
    // What the rooms may import.
    assert!(!check("connectors", "spine::Call"));
    assert!(!check("spine", "connectors::Registry"));
    assert!(!check("decide", "policy::model::Action"));
    assert!(!check("dev", "sidecar::start"));
}
