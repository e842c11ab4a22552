//! The `warden` binary as a user runs it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Output};

fn warden(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn temp_file(name: &str, body: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("warden-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

const ALLOWED: &str = r#"{"tenant":"acme","project":"support","agent":"support-bot","channel":"llm","connector":"openai","model":"gpt-4o-mini","facts":{"pii":{"found":[]}}}"#;

#[test]
fn check_prints_hash_and_summary() {
    let out = warden(&["policy", "check", "examples/contract/bundle.yaml"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    let first = s.lines().next().unwrap();
    assert!(
        first.starts_with("snapshot sha256:") && first.len() == "snapshot sha256:".len() + 64,
        "{s}"
    );
    assert!(
        s.contains("documents: KnowledgePlane 1, Connector 4, SqlTemplate 1, McpTool 0, Policy 4"),
        "{s}"
    );
    assert!(
        s.contains("active policies: llm 1, http 1, sql 1, mcp 1"),
        "{s}"
    );
}

#[test]
fn check_prints_every_error_with_location_and_fails() {
    let bad = temp_file(
        "bad.yaml",
        "apiVersion: warden/v1\nkind: Policy\nmetadata: { id: a, tenant: t }\nspec:\n  scope: { all_runs: true }\n  match: { channel: llm }\n  effect: allow\n  limits: [ { metric: requests, window: 90x, max: 1 } ]\n---\napiVersion: warden/v1\nkind: Gadget\nmetadata: { id: b, tenant: t }\nspec: {}\n",
    );
    let out = warden(&["policy", "check", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    let path = bad.display().to_string();
    assert!(err.contains(&format!("{path}:8:")), "{err}");
    assert!(
        err.contains("spec.limits[0].window: bad window `90x`"),
        "{err}"
    );
    assert!(
        err.contains(&format!("{path}:11:7: kind: unknown kind `Gadget`")),
        "{err}"
    );
    assert!(err.contains("2 errors found"), "{err}");
    assert!(text(&out.stdout).is_empty());
}

#[test]
fn check_refuses_missing_and_empty_files() {
    let out = warden(&["policy", "check", "/nonexistent/bundle.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot read"));
    let empty = temp_file("empty.yaml", "");
    let out = warden(&["policy", "check", empty.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("empty bundle"));
}

#[test]
fn eval_shows_the_decision_with_reasons() {
    let out = warden(&[
        "policy",
        "eval",
        "--bundle",
        "examples/contract/bundle.yaml",
        "--request",
        ALLOWED,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(
        s.starts_with("decision: CONTINUE\nwinning policy: p100-llm\n"),
        "{s}"
    );
    assert!(s.contains("clamp: max_tokens 1024"), "{s}");

    let refused = ALLOWED.replace("support-bot", "intruder");
    let out = warden(&[
        "policy",
        "eval",
        "--bundle",
        "examples/contract/bundle.yaml",
        "--request",
        &refused,
    ]);
    let s = text(&out.stdout);
    assert!(s.starts_with("decision: STOP (no_allow_policy)"), "{s}");

    let out = warden(&[
        "policy",
        "eval",
        "--bundle",
        "examples/contract/bundle.yaml",
        "--request",
        ALLOWED,
        "--mode",
        "halted",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["code"], "governance_halted");
    assert_eq!(v["action"], "stop");

    let req = temp_file("req.json", ALLOWED);
    let usage = temp_file("usage.json", r#"{"p100-llm": [2500]}"#);
    let out = warden(&[
        "policy",
        "eval",
        "--bundle",
        "examples/contract/bundle.yaml",
        "--request",
        &format!("@{}", req.display()),
        "--usage",
        &format!("@{}", usage.display()),
    ]);
    assert!(
        text(&out.stdout).starts_with("decision: STOP (budget_exceeded)"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn eval_refuses_bad_requests_clearly() {
    let out = warden(&[
        "policy",
        "eval",
        "--bundle",
        "examples/contract/bundle.yaml",
        "--request",
        "{not json",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("invalid JSON in --request"),
        "{}",
        text(&out.stderr)
    );
    let out = warden(&[
        "policy",
        "eval",
        "--bundle",
        "examples/contract/bundle.yaml",
        "--request",
        r#"{"tenant":"acme","channel":"llm","surprise":1}"#,
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("unknown field `surprise`"),
        "{}",
        text(&out.stderr)
    );
    let out = warden(&[
        "policy",
        "eval",
        "--bundle",
        "examples/contract/bundle.yaml",
        "--request",
        ALLOWED,
        "--mode",
        "chaos",
    ]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("unknown mode `chaos`"));
}

/// `warden dev` on free ports, so it runs beside another `dev` (or the same test twice).
const DEV_FREE_PORTS: [&str; 14] = [
    "--agent",
    "127.0.0.1:0",
    "--admin",
    "127.0.0.1:0",
    "--mock-llm",
    "127.0.0.1:0",
    "--mock-weather",
    "127.0.0.1:0",
    "--mock-mcp",
    "127.0.0.1:0",
    "--service",
    "127.0.0.1:0",
    "--service-http",
    "127.0.0.1:0",
];

#[test]
fn dev_smoke_makes_the_calls_of_the_quick_start() {
    let dir = std::env::temp_dir().join(format!("warden-dev-{}", std::process::id()));
    let mut args = vec!["dev", "--smoke", "--dir", dir.to_str().unwrap()];
    args.extend(DEV_FREE_PORTS);
    let out = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(&args)
        .env_remove("CRM_DATABASE_URL")
        .output()
        .unwrap();
    let s = text(&out.stdout);
    assert!(out.status.success(), "{s}\n{}", text(&out.stderr));
    assert!(s.contains("admin token"), "{s}");
    assert!(s.contains("snapshot         sha256:"), "{s}");
    assert!(s.contains("\n200 {"), "{s}");
    assert!(s.contains("\n403 {") && s.contains("pii_detected"), "{s}");
    // The SQL template on the CRM dev seeded, and the curl that runs it.
    assert!(s.contains("crm.db (seeded: 4 customers)"), "{s}");
    assert!(
        s.contains("/sql/customer_by_id -H 'content-type: application/json' -d '{\"id\":1}'"),
        "{s}"
    );
    assert!(s.contains(r#""rows":[[1,"Ada Lovelace","gold"]]"#), "{s}");
    // The MCP tool list through the sidecar: the allowed tools of the mock, not the hidden one.
    assert!(
        s.contains(r#""name":"search_tickets""#) && s.contains(r#""name":"get_ticket""#),
        "{s}"
    );
    assert!(!s.contains(r#""name":"delete_ticket""#), "{s}");
    // The banner prints the bound ports, never the `:0` it was asked for.
    assert!(!s.contains("127.0.0.1:0"), "{s}");
    let token = std::fs::read_to_string(dir.join("admin-token")).unwrap();
    assert_eq!(token.trim().len(), 32);
    // The bundle dev wrote names the mocks it started, not the contract's fixed ports.
    let bundle = std::fs::read_to_string(dir.join("bundle.yaml")).unwrap();
    assert!(!bundle.contains("127.0.0.1:18080") && !bundle.contains("127.0.0.1:18081"));
    let out = warden(&["evidence", "verify", dir.join("evidence").to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("ok: 4 records"),
        "{}",
        text(&out.stdout)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// With `CRM_DATABASE_URL` set, dev seeds nothing and the template reads that database.
#[test]
fn dev_reads_the_crm_database_it_is_given() {
    let dir = std::env::temp_dir().join(format!("warden-dev-crm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let theirs = dir.join("their-crm.db");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = rt.block_on(warden::dev::crm::seed(&theirs)).unwrap();
    drop(rt);
    let mut args = vec!["dev", "--smoke", "--dir", dir.to_str().unwrap()];
    args.extend(DEV_FREE_PORTS);
    let out = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(&args)
        .env("CRM_DATABASE_URL", &url)
        .output()
        .unwrap();
    let s = text(&out.stdout);
    assert!(out.status.success(), "{s}\n{}", text(&out.stderr));
    assert!(s.contains("CRM_DATABASE_URL (yours)"), "{s}");
    assert!(!dir.join("crm.db").exists(), "dev seeded a CRM of its own");
    assert!(s.contains(r#""rows":[[1,"Ada Lovelace","gold"]]"#), "{s}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The quick start's kill switch: `warden dev` in its default directory and service port, and
/// `warden ops kill-switch engage --reason test` with no flags and no token in the
/// environment (it finds `.warden/dev/admin-token`), then `ops status` and `release`.
#[test]
fn dev_kill_switch_with_no_flags() {
    use std::io::{BufRead, BufReader};
    let cwd = std::env::temp_dir().join(format!("warden-dev-ks-{}", std::process::id()));
    std::fs::create_dir_all(&cwd).unwrap();
    let mut args = vec!["dev"];
    args.extend(&DEV_FREE_PORTS[..10]);
    args.extend(["--service-http", "127.0.0.1:0"]);
    let mut dev = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(&args)
        .current_dir(&cwd)
        .env_remove("CRM_DATABASE_URL")
        .env_remove("WARDEN_ADMIN_TOKEN")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(dev.stdout.take().unwrap()).lines();
    let mut agent = String::new();
    let mut admin = String::new();
    let mut banner = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        banner.push_str(&line);
        banner.push('\n');
        if let Some(rest) = line.trim().strip_prefix("agent endpoint") {
            agent = rest.split_whitespace().next().unwrap().to_string();
        }
        if let Some(rest) = line.trim().strip_prefix("admin endpoint") {
            admin = rest.split_whitespace().next().unwrap().to_string();
        }
        if line.contains("Ctrl-C stops everything") {
            break;
        }
    }
    assert!(
        banner.contains("warden ops kill-switch engage --reason test\n"),
        "{banner}"
    );
    let ops = |a: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_warden"))
            .args(a)
            .current_dir(&cwd)
            .env_remove("WARDEN_ADMIN_TOKEN")
            .output()
            .unwrap()
    };
    let out = ops(&["ops", "kill-switch", "engage", "--reason", "test"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("global: halted"),
        "{}",
        text(&out.stdout)
    );
    let url = format!("{agent}/v1/chat/completions");
    let halted = (0..200).any(|_| {
        let out = Command::new("curl")
            .args([
                "-s",
                &url,
                "-H",
                "content-type: application/json",
                "-d",
                r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#,
            ])
            .output()
            .unwrap();
        let body = text(&out.stdout);
        if body.contains("governance_halted") {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        false
    });
    assert!(halted, "the sidecar did not refuse after the kill switch");
    let out = ops(&["ops", "status"]);
    let s = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        s.contains("global: halted") && s.contains("acme/support/support-bot"),
        "{s}"
    );
    let out = ops(&["ops", "status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["sidecars"][0]["connected"], true, "{v}");
    let out = ops(&["ops", "kill-switch", "release", "--reason", "test done"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = ops(&["ops", "audit", "--action", "mode_change"]);
    let s = text(&out.stdout);
    assert!(s.contains("test done") && s.contains("mode_change"), "{s}");
    // Policy admin on the same service: list, show, lifecycle moves (and a refused one), a
    // broken bundle refused with its location, a dry run that stores nothing, shadow.
    let out = ops(&["policy", "list"]);
    let s = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        s.contains("KIND") && s.contains("p100-llm") && s.contains("active"),
        "{s}"
    );
    let out = ops(&["policy", "list", "--json", "--kind", "Policy"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["items"].as_array().unwrap().len(), 4, "{v}");
    let out = ops(&["policy", "show", "p100-llm"]);
    assert!(
        text(&out.stdout).contains("max_tokens: 1024"),
        "{}",
        text(&out.stdout)
    );
    let out = ops(&["policy", "suspend", "p300-weather", "--reason", "try it"]);
    assert!(
        text(&out.stdout).contains("is suspended"),
        "{}",
        text(&out.stderr)
    );
    let weather = format!("{agent}/http/weather/v1/forecast/oslo");
    let refused = (0..200).any(|i| {
        let out = Command::new("curl")
            .args(["-s", &weather, "-H", &format!("x-warden-run-id: cli-{i}")])
            .output()
            .unwrap();
        if text(&out.stdout).contains("no_allow_policy") {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        false
    });
    assert!(refused, "the suspended policy still allowed weather calls");
    let out = ops(&["policy", "suspend", "p300-weather", "--reason", "again"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("lifecycle_not_allowed"),
        "{}",
        text(&out.stderr)
    );
    let out = ops(&["policy", "activate", "p300-weather", "--reason", "back"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = ops(&["policy", "shadow", "p300-weather", "--reason", "watch only"]);
    assert!(
        text(&out.stdout).contains("in shadow"),
        "{}",
        text(&out.stderr)
    );
    let out = ops(&[
        "policy",
        "shadow",
        "p300-weather",
        "--reason",
        "enforce",
        "--off",
    ]);
    assert!(
        text(&out.stdout).contains("out of shadow"),
        "{}",
        text(&out.stderr)
    );
    let doc = |connector: &str| {
        format!("apiVersion: warden/v1\nkind: Policy\nmetadata: {{ id: p9-cli, tenant: acme }}\nspec:\n  status: active\n  scope: {{ all_runs: true }}\n  match: {{ channel: http, connectors: [{connector}] }}\n  effect: allow\n")
    };
    std::fs::write(cwd.join("bad.yaml"), doc("nope")).unwrap();
    let out = ops(&["policy", "apply", "-f", "bad.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("bad.yaml:") && err.contains("nothing was applied"),
        "{err}"
    );
    std::fs::write(cwd.join("extra.yaml"), doc("weather")).unwrap();
    let out = ops(&["policy", "apply", "-f", "extra.yaml", "--dry-run", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["dry_run"].as_bool(), v["changes"][0]["change"].as_str()),
        (Some(true), Some("created")),
        "{v}"
    );
    assert!(!text(&ops(&["policy", "list"]).stdout).contains("p9-cli"));
    let out = ops(&[
        "policy",
        "apply",
        "-f",
        "extra.yaml",
        "--reason",
        "cli test",
    ]);
    assert!(
        text(&out.stdout).contains("created")
            && text(&out.stdout).contains("serving snapshot sha256:"),
        "{}",
        text(&out.stdout)
    );
    // One sidecar's admin port, directly.
    let out = ops(&[
        "ops",
        "mode",
        "degraded",
        "--reason",
        "one sidecar",
        "--sidecar",
        &admin,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = ops(&["ops", "status", "--sidecar", &admin]);
    assert!(
        text(&out.stdout).contains("degraded"),
        "{}",
        text(&out.stdout)
    );
    let out = ops(&[
        "ops",
        "mode",
        "enforcing",
        "--reason",
        "back",
        "--sidecar",
        &admin,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // A wrong token is refused with a message that says what to check.
    std::fs::write(cwd.join("bad-token"), "nope").unwrap();
    let out = ops(&["ops", "status", "--token-file", "bad-token"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("unauthorized") && text(&out.stderr).contains("token"),
        "{}",
        text(&out.stderr)
    );
    let _ = dev.kill();
    let _ = dev.wait();
    let _ = std::fs::remove_dir_all(&cwd);
}

#[test]
fn dev_on_a_taken_port_says_which_and_how_to_pick_another_in_one_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let dir = std::env::temp_dir().join(format!("warden-dev-taken-{}", std::process::id()));
    for flag in ["--agent", "--mock-llm"] {
        let mut args = vec!["dev", "--smoke", "--dir", dir.to_str().unwrap()];
        args.extend(DEV_FREE_PORTS);
        let at = args.iter().position(|a| *a == flag).unwrap();
        args[at + 1] = &taken;
        let out = Command::new(env!("CARGO_BIN_EXE_warden"))
            .args(&args)
            .env("RUST_BACKTRACE", "full")
            .env("RUST_LOG", "off")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = text(&out.stderr);
        assert_eq!(err.lines().count(), 1, "one line, no backtrace: {err}");
        assert!(
            err.starts_with("error: warden dev: cannot listen on "),
            "{err}"
        );
        assert!(err.contains(&taken), "{err}");
        assert!(err.contains("--agent") && err.contains("port 0"), "{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_contract_sidecar_yaml_starts_as_it_is() {
    use std::io::{BufRead, BufReader};
    // The contract files, copied with their fixed ports replaced by free ones.
    let dir = std::env::temp_dir().join(format!("warden-contract-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/contract");
    let cfg = std::fs::read_to_string(root.join("sidecar.yaml")).unwrap();
    assert!(cfg.contains("127.0.0.1:15001") && cfg.contains("127.0.0.1:15000"));
    let cfg = cfg
        .replace("127.0.0.1:15001", "127.0.0.1:0")
        .replace("127.0.0.1:15000", "127.0.0.1:0");
    std::fs::write(dir.join("sidecar.yaml"), cfg).unwrap();
    std::fs::copy(root.join("bundle.yaml"), dir.join("bundle.yaml")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["sidecar", "--config", "sidecar.yaml"])
        .current_dir(&dir)
        .env("OPENAI_API_KEY", "k")
        .env("WEATHER_AUTH", "w")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut seen = Vec::new();
    let started = loop {
        match rx.recv_timeout(std::time::Duration::from_secs(1)) {
            Ok(line) if line.contains("warden sidecar: agent http://127.0.0.1:") => {
                break !line.contains("127.0.0.1:0 ")
            }
            Ok(line) => seen.push(line),
            Err(_) if std::time::Instant::now() > deadline => break false,
            Err(_) => {}
        }
    };
    child.kill().unwrap();
    child.wait().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        started,
        "the contract sidecar.yaml did not start: {seen:#?}"
    );
}

#[test]
fn evidence_verify_reports_ok_and_tampering() {
    use warden::evidence::{Durability, Kind, Record, Spool, SpoolConfig};
    let dir = std::env::temp_dir().join(format!("warden-cli-ev-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    {
        let (spool, _) = Spool::open(SpoolConfig::new(&dir, Durability::Sync)).unwrap();
        for i in 0..3 {
            spool
                .append_blocking(Record::new(Kind::Call, format!("e{i}"), i))
                .unwrap();
        }
    }
    let out = warden(&["evidence", "verify", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("ok: 3 records in 1 segment, chain verified, head anchored"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stderr).contains("cannot prove that nobody with write access"),
        "{}",
        text(&out.stderr)
    );
    // Change one byte of the first record's body (keeping the file length): its checksum no
    // longer matches and valid records follow, so this is damage, not a torn tail.
    let seg = evidence_segments(&dir).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = frame_offsets(&bytes)[0] + 8 + 2;
    bytes[at] ^= 0x40;
    std::fs::write(&seg, bytes).unwrap();
    let out = warden(&["evidence", "verify", "--strict", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("frame checksum mismatch, followed by a valid record"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Where each frame of a segment starts (`[len][crc][body]` after the header).
fn frame_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut at = warden::evidence::segment::HEADER;
    let mut out = Vec::new();
    while at + 8 <= bytes.len() {
        out.push(at);
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        at += 8 + len;
    }
    out
}

/// The segment files of a spool, in chain order.
fn evidence_segments(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut segs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wev"))
        .collect();
    segs.sort();
    segs
}

#[test]
fn evidence_verify_fails_on_records_cut_off_the_end() {
    use warden::evidence::{Durability, Kind, Record, Spool, SpoolConfig};
    let dir = std::env::temp_dir().join(format!("warden-cli-ev-cut-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    {
        let (spool, _) = Spool::open(SpoolConfig::new(&dir, Durability::Sync)).unwrap();
        for i in 0..5 {
            spool
                .append_blocking(Record::new(Kind::Call, format!("e{i}"), i))
                .unwrap();
        }
    }
    // Cut the last two records off at a frame boundary: every record left chains.
    let seg = evidence_segments(&dir).pop().unwrap();
    let bytes = std::fs::read(&seg).unwrap();
    let cut = frame_offsets(&bytes)[3];
    std::fs::write(&seg, &bytes[..cut]).unwrap();
    let out = warden(&["evidence", "verify", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(
        err.contains("chain head: records 3..4 are missing") && err.contains("cut off its end"),
        "{err}"
    );
    assert!(err.contains("cannot prove"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
