use super::*;

fn parse(src: &str) -> Result<Vec<Document>, YamlError> {
    parse_stream(src, Limits::default())
}

#[test]
fn positions_are_one_based_line_and_column() {
    let docs = parse("a: 1\nb:\n  c: [x, y]\n").unwrap();
    let root = &docs[0].root;
    assert_eq!(root.get("a").unwrap().pos, Pos { line: 1, col: 4 });
    let c = root.get("b").unwrap().get("c").unwrap();
    assert_eq!(c.pos, Pos { line: 3, col: 6 });
    let path = [
        PathSeg::Key("b".into()),
        PathSeg::Key("c".into()),
        PathSeg::Index(1),
    ];
    assert_eq!(root.locate(&path), Pos { line: 3, col: 10 });
    assert_eq!(path_string(&path), "b.c[1]");
}

#[test]
fn missing_tail_of_a_path_locates_its_parent() {
    let docs = parse("spec:\n  x: 1\n").unwrap();
    let path = [PathSeg::Key("spec".into()), PathSeg::Key("nope".into())];
    assert_eq!(docs[0].root.locate(&path), Pos { line: 2, col: 3 });
}

#[test]
fn multiple_documents_and_quoting() {
    let docs = parse("a: '1'\n---\nb: 2\n").unwrap();
    assert_eq!(docs.len(), 2);
    assert!(matches!(
        &docs[0].root.get("a").unwrap().value,
        Value::Scalar { quoted: true, .. }
    ));
    assert!(matches!(
        &docs[1].root.get("b").unwrap().value,
        Value::Scalar { quoted: false, .. }
    ));
}

#[test]
fn duplicate_keys_are_refused_at_the_second_key() {
    let err = parse("a: 1\nb: 2\na: 3\n").unwrap_err();
    assert!(err.message.contains("duplicate key `a`"), "{err:?}");
    assert_eq!(err.pos.line, 3);
}

#[test]
fn syntax_errors_have_a_position() {
    let err = parse("a: [1, 2\nb: 3\n").unwrap_err();
    assert!(err.pos.line >= 1);
    assert!(!err.message.is_empty());
}

#[test]
fn custom_tags_are_refused() {
    let err = parse("a: !python/object:os.system 1\n").unwrap_err();
    assert!(err.message.contains("unsupported YAML tag"), "{err:?}");
}

#[test]
fn aliases_expand_within_budget() {
    let docs = parse("base: &b {x: 1}\nuse: *b\n").unwrap();
    assert_eq!(
        docs[0].root.get("use").unwrap().get("x").unwrap().pos.line,
        1
    );
}

#[test]
fn alias_bomb_is_bounded_in_time_and_memory() {
    // Each level doubles: 2^40 nodes if expanded naively.
    let mut src = String::from("a0: &a0 [x, x]\n");
    for i in 1..=40 {
        src.push_str(&format!("a{i}: &a{i} [*a{prev}, *a{prev}]\n", prev = i - 1));
    }
    let started = std::time::Instant::now();
    let err = parse(&src).unwrap_err();
    assert!(err.message.contains("alias bomb"), "{err:?}");
    // A generous bound: the budget stops it after ~1M node copies.
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}

#[test]
fn deep_nesting_is_refused_without_recursion() {
    let depth = 100_000;
    let src = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let err = parse(&src).unwrap_err();
    // The scanner refuses deep flow collections itself; either way, a clear bounded error.
    assert!(
        err.message.contains("nesting deeper than 64") || err.message.contains("recursion limit"),
        "{err:?}"
    );
    let src = format!(
        "a:\n{}",
        (1..200)
            .map(|i| format!("{}k{i}:\n", "  ".repeat(i)))
            .collect::<String>()
    );
    let err = parse(&src).unwrap_err();
    assert!(err.message.contains("nesting deeper"), "{err:?}");
}

#[test]
fn nesting_through_aliases_is_bounded_too() {
    let mut src = String::from("l0: &l0 [x]\n");
    for i in 1..=70 {
        src.push_str(&format!("l{i}: &l{i} [*l{}]\n", i - 1));
    }
    let err = parse(&src).unwrap_err();
    assert!(err.message.contains("nesting deeper"), "{err:?}");
}

#[test]
fn keys_differing_only_in_quoting_are_duplicates() {
    let err = parse("labels:\n  a: 1\n  \"a\": 2\n").unwrap_err();
    assert!(err.message.contains("duplicate key `a`"), "{err:?}");
}

#[test]
fn tags_on_collections_and_non_str_core_tags_are_refused() {
    for src in [
        "spec: !custom {a: 1}\n",
        "spec: !!map {a: 1}\n",
        "a: !!binary aGVsbG8=\n",
        "l: !x [1]\n",
    ] {
        let err = parse(src).unwrap_err();
        assert!(
            err.message.contains("unsupported YAML tag"),
            "{src}: {err:?}"
        );
    }
    let docs = parse("a: !!str 5\n").unwrap();
    assert!(
        matches!(&docs[0].root.get("a").unwrap().value, Value::Scalar { text, .. } if text == "5")
    );
}

#[test]
fn parallel_parse_equals_sequential_parse() {
    // Big enough to be cut into pieces, with documents of varied shape and a marker that only
    // looks like one inside a block scalar.
    let mut src = String::from("# leading comment\n");
    for i in 0..4000 {
        src.push_str(&format!(
            "---\nid: d{i}\nanchored: &a{i} {{ x: [1, 2, {i}] }}\nuse: *a{i}\ntext: |\n  line one\n   --- not a marker\n---  # comment\nplain: {i}\n"
        ));
    }
    assert!(src.len() > PARALLEL_MIN_BYTES);
    let parallel = parse(&src).unwrap();
    let (sequential, _) = parse_chunk(&src, 0, Limits::default()).unwrap();
    assert_eq!(parallel.len(), 8000);
    assert_eq!(parallel.len(), sequential.len());
    for (a, b) in parallel.iter().zip(&sequential) {
        assert_eq!(a.pos, b.pos);
        assert_eq!(a.root, b.root);
    }
}

#[test]
fn parallel_parse_reports_the_first_error_in_stream_order() {
    let mut src = String::new();
    for i in 0..6000 {
        src.push_str(&format!("---\nid: d{i}\nlist: [1, 2, 3]\n"));
    }
    let bad_line = src.lines().count() / 2;
    let mut lines: Vec<String> = src.lines().map(str::to_string).collect();
    lines[bad_line] = "list: [1, 2".into();
    let last = lines.len() - 1;
    lines[last] = "list: {a: 1".into();
    let text = lines.join("\n") + "\n";
    let err = parse(&text).unwrap_err();
    let seq = parse_chunk(&text, 0, Limits::default()).unwrap_err();
    assert_eq!(err.pos.line, seq.pos.line, "{err:?} vs {seq:?}");
}
