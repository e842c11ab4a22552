//! Bad input at the bundle level, and the snapshot hash laws on concrete examples.

use super::*;

const CONTRACT: &str = include_str!("../../examples/contract/bundle.yaml");

fn errs(text: &str) -> Vec<BundleError> {
    compile_str("f.yaml", text).expect_err("should be refused")
}

fn hash(text: &str) -> String {
    compile_str("f.yaml", text).unwrap().hash().to_string()
}

const PLANE: &str = "apiVersion: warden/v1\nkind: KnowledgePlane\nmetadata: { id: pl, tenant: acme }\nspec: { sensitivity: public }\n";

#[test]
fn malformed_yaml_has_a_location() {
    let e = &errs("apiVersion: warden/v1\nkind: [Policy\n")[0];
    assert!(e.message.starts_with("invalid YAML"), "{e}");
    assert!(e.render().starts_with("f.yaml:"), "{e}");
}

#[test]
fn wrong_api_version() {
    let e = &errs(&PLANE.replace("warden/v1", "warden/v2"))[0];
    assert_eq!((e.pos.line, e.pos.col), (1, 13));
    assert_eq!(e.path, "apiVersion");
    assert!(
        e.message.contains("unsupported apiVersion `warden/v2`"),
        "{e}"
    );
}

#[test]
fn unknown_kind() {
    let e = &errs(&PLANE.replace("kind: KnowledgePlane", "kind: Plane"))[0];
    assert_eq!((e.pos.line, e.pos.col), (2, 7));
    assert!(e.message.contains("unknown kind `Plane`"), "{e}");
}

#[test]
fn unknown_field_points_at_the_key() {
    let e = &errs(&PLANE.replace("sensitivity: public", "sensitivity: public, colour: red"))[0];
    assert_eq!(e.path, "spec.colour");
    assert_eq!(e.pos.line, 4);
    assert_eq!(e.pos.col, 30);
    assert!(e.message.contains("unknown field `colour`"), "{e}");
    let e = &errs(&format!("{PLANE}extra: 1\n"))[0];
    assert!(e.message.contains("unknown field `extra`"), "{e}");
}

#[test]
fn wrong_type_says_what_was_expected() {
    let text = CONTRACT.replace("max_rows: 100", "max_rows: lots");
    let e = &errs(&text)[0];
    assert_eq!(e.path, "spec.max_rows");
    assert!(
        e.message
            .contains("invalid type: string \"lots\", expected u32"),
        "{e}"
    );
    // Quoted numbers are strings in YAML 1.2; a number field refuses them.
    let e = &errs(&CONTRACT.replace("max_rows: 100", "max_rows: \"100\""))[0];
    assert!(e.message.contains("expected u32"), "{e}");
    // `yes` is not a boolean in YAML 1.2.
    let e = &errs(&CONTRACT.replace("all_runs: true", "all_runs: yes"))[0];
    assert!(e.message.contains("expected a boolean"), "{e}");
}

#[test]
fn missing_field() {
    let e = &errs(&PLANE.replace("spec: { sensitivity: public }", "spec: {}"))[0];
    assert_eq!(e.path, "spec");
    assert!(e.message.contains("missing field `sensitivity`"), "{e}");
}

#[test]
fn empty_files_are_refused() {
    for text in ["", "\n\n", "# only a comment\n", "---\n"] {
        let e = &errs(text)[0];
        assert!(e.message.contains("empty bundle"), "{text:?}: {e}");
    }
}

#[test]
fn every_error_is_reported_not_just_the_first() {
    let text = format!(
        "{CONTRACT}---\n{}---\n{}",
        PLANE.replace("warden/v1", "v0"),
        PLANE.replace("sensitivity: public", "sensitivity: loud")
    );
    let e = errs(&text);
    assert_eq!(e.len(), 2, "{e:#?}");
    assert!(e[0].pos.line < e[1].pos.line, "sorted by position");
}

#[test]
fn oversized_files_are_refused_before_reading() {
    let dir = std::env::temp_dir().join(format!("warden-big-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("big.yaml");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(load::MAX_FILE_BYTES + 1).unwrap();
    let e = compile_files(&[&path]).unwrap_err();
    assert!(e[0].message.contains("10 MiB"), "{}", e[0]);
    std::fs::remove_dir_all(&dir).unwrap();
    let e = compile_files(&["/nonexistent/x.yaml"]).unwrap_err();
    assert!(e[0].message.contains("cannot read"), "{}", e[0]);
}

fn docs(text: &str) -> Vec<&str> {
    text.split("---\n")
        .filter(|d| !d.trim().is_empty())
        .collect()
}

#[test]
fn hash_ignores_document_order_comments_whitespace_and_explicit_defaults() {
    let base = hash(CONTRACT);
    let mut reversed = docs(CONTRACT);
    reversed.reverse();
    assert_eq!(hash(&reversed.join("---\n")), base, "document order");
    let noisy = CONTRACT
        .replace("spec:\n", "# a comment\nspec:   # another\n")
        .replace(
            "metadata: { id: p300-weather, tenant: acme }",
            "metadata:\n  tenant: acme\n  id: \"p300-weather\"",
        );
    assert_eq!(
        hash(&noisy),
        base,
        "comments, key order, quoting, flow vs block"
    );
    let explicit = CONTRACT.replace(
        "  effect: allow\n",
        "  effect: allow\n  shadow: false\n  bind_at: run_start\n  failure_mode: fail_closed\n",
    );
    assert_eq!(hash(&explicit), base, "explicit defaults");
    let lists = CONTRACT.replace(
        "tools: [search_tickets, get_ticket]",
        "tools: [get_ticket, search_tickets, get_ticket]",
    );
    assert_eq!(hash(&lists), base, "unordered lists");

    let one = "- { metric: queries, window: 1m, max: 60, on_breach: stop }";
    let two = "- { metric: queries, window: 1h, max: 600 }";
    let a = CONTRACT.replace(one, &format!("{one}\n    {two}"));
    let b = CONTRACT.replace(one, &format!("{two}\n    {one}"));
    assert_ne!(a, b);
    assert_eq!(hash(&a), hash(&b), "limit order");
    let snap = compile_str("f.yaml", &b).unwrap();
    let p200 = snap
        .policies()
        .iter()
        .find(|p| &*p.id == "p200-crm-read")
        .unwrap();
    let windows: Vec<String> = p200.limits.iter().map(|l| l.window.to_string()).collect();
    assert_eq!(
        windows,
        ["60s", "3600s"],
        "canonical order: shorter window first"
    );
}

#[test]
fn hash_changes_with_any_semantic_change() {
    let base = hash(CONTRACT);
    for (from, to) in [
        ("max: 2000", "max: 2001"),
        ("near: [0.8]", "near: [0.7]"),
        ("max_tokens: 1024", "max_tokens: 1023"),
        (
            "status: active\n  scope: { all_runs: true }",
            "status: suspended\n  scope: { all_runs: true }",
        ),
        ("output_usd_per_mtok: 0.60", "output_usd_per_mtok: 0.61"),
        ("max_rows: 100", "max_rows: 101"),
        (
            "paths: [\"/v1/forecast/*\"]",
            "paths: [\"/v1/forecast/*\", \"/v2/*\"]",
        ),
        ("sensitivity: confidential", "sensitivity: restricted"),
    ] {
        assert!(CONTRACT.contains(from), "{from}");
        assert_ne!(
            hash(&CONTRACT.replacen(from, to, 1)),
            base,
            "{from} -> {to}"
        );
    }
}

#[test]
fn inactive_policies_stay_in_the_snapshot_but_are_not_indexed() {
    let text = CONTRACT
        .replacen("status: active", "status: draft", 1)
        .replacen("status: active", "status: retired", 1);
    let snap = compile_str("f.yaml", &text).unwrap();
    assert_eq!(snap.policies().len(), 4);
    assert_eq!(snap.active_per_channel().iter().sum::<usize>(), 2);
}

#[test]
fn a_bundle_without_a_secrets_detector_keeps_its_hash() {
    // The hash README.md and docs/snapshot-hash.md print for the contract bundle, from before
    // `detectors.secrets` existed: an absent field is absent from the canonical form.
    assert_eq!(
        hash(CONTRACT),
        "sha256:3c2d75f43326dafd7c6867c8424ce4ade440a7b32797fa40a2d3c2dec802e980"
    );
    let with = CONTRACT.replacen(
        "detectors: { pii: { on_match: stop } }",
        "detectors: { pii: { on_match: stop }, secrets: { on_match: stop } }",
        1,
    );
    assert_ne!(hash(&with), hash(CONTRACT));
    // Defaults and all kinds written out do not change it.
    let explicit = CONTRACT.replacen(
        "detectors: { pii: { on_match: stop } }",
        "detectors: { pii: { on_match: stop }, secrets: { kinds: [jwt, openai_key, anthropic_key, aws_access_key_id, aws_secret_key, github_token, gitlab_token, slack_token, slack_webhook, google_api_key, private_key, bearer_token, connection_password, jwt] } }",
        1,
    );
    assert_eq!(hash(&explicit), hash(&with));
    let narrow = CONTRACT.replacen(
        "detectors: { pii: { on_match: stop } }",
        "detectors: { pii: { on_match: stop }, secrets: { kinds: [jwt] } }",
        1,
    );
    assert_ne!(hash(&narrow), hash(&with));
}
