use super::*;
use crate::policy::model::ParamSpec;

fn p(name: &str, decl: &str) -> ParamCheck {
    let spec: ParamSpec = serde_json::from_str(decl).unwrap();
    let pattern = spec
        .pattern
        .as_deref()
        .map(|x| crate::policy::sql::compile_pattern(x).unwrap());
    ParamCheck {
        name: name.into(),
        spec,
        pattern,
    }
}

fn one(decl: &str, v: &str) -> Result<Bound, ParamError> {
    check(&[p("x", decl)], format!("{{\"x\": {v}}}").as_bytes()).map(|mut b| b.remove(0))
}

fn refused(decl: &str, v: &str, needle: &str) {
    let e = one(decl, v).expect_err(&format!("{decl} must refuse {v}"));
    assert!(e.0.contains("parameter `x`"), "{e}");
    assert!(e.0.contains(needle), "{decl} {v}: {e}");
}

#[test]
fn each_type_takes_its_own_values() {
    let ok = |decl: &str, v: &str, want: Json| {
        let b = one(decl, v).unwrap_or_else(|e| panic!("{decl} {v}: {e}"));
        assert_eq!(b.to_json(), want, "{decl} {v}");
    };
    ok("\"int\"", "42", Json::from(42));
    ok("\"int\"", "-2147483648", Json::from(-2147483648i64));
    ok("\"bigint\"", "1099511627776", Json::from(1099511627776i64));
    ok("\"float\"", "1.5", Json::from(1.5));
    ok("\"float\"", "2", Json::from(2.0));
    ok("\"numeric\"", "\"12.50\"", Json::from("12.50"));
    ok("\"numeric\"", "\"1e3\"", Json::from("1000"));
    ok(
        "\"numeric\"",
        "\"-0.000000000000000000000000000001\"",
        Json::from("-0.000000000000000000000000000001"),
    );
    ok("\"bool\"", "true", Json::from(true));
    ok(
        "\"text\"",
        "\"x'); DROP TABLE t; --\"",
        Json::from("x'); DROP TABLE t; --"),
    );
    ok(
        "\"uuid\"",
        "\"6F9619FF-8B86-D011-B42D-00C04FC964FF\"",
        Json::from("6f9619ff-8b86-d011-b42d-00c04fc964ff"),
    );
    ok("\"date\"", "\"2026-02-28\"", Json::from("2026-02-28"));
    ok(
        "\"timestamp\"",
        "\"2026-02-28T10:11:12.5\"",
        Json::from("2026-02-28T10:11:12.500"),
    );
    // Two spellings of one instant are one value.
    ok(
        "\"timestamptz\"",
        "\"2026-02-28T12:00:00+02:00\"",
        Json::from("2026-02-28T10:00:00Z"),
    );
    ok(
        "{\"type\": \"enum\", \"values\": [\"gold\", \"silver\"]}",
        "\"gold\"",
        Json::from("gold"),
    );
    ok(
        "\"json\"",
        "{\"a\": [1, null]}",
        serde_json::json!({"a": [1, null]}),
    );
    ok("\"int[]\"", "[1, 2, 3]", serde_json::json!([1, 2, 3]));
    ok(
        "{\"type\": \"text\", \"nullable\": true}",
        "null",
        Json::Null,
    );
}

#[test]
fn nothing_is_coerced_and_ranges_hold() {
    refused("\"int\"", "\"1\"", "expected int");
    refused("\"int\"", "1.0", "expected int");
    refused("\"int\"", "1.5", "expected int");
    refused("\"int\"", "1099511627776", "out of range");
    refused("\"int\"", "18446744073709551615", "out of range");
    refused("\"int\"", "true", "got a boolean");
    refused("\"bigint\"", "9223372036854775808", "out of range");
    refused("\"bigint\"", "\"5\"", "expected bigint");
    refused("\"float\"", "\"1.5\"", "expected float");
    refused("\"numeric\"", "12.5", "expected numeric");
    refused("\"numeric\"", "\"NaN\"", "not a decimal");
    refused("\"numeric\"", "\"Infinity\"", "not a decimal");
    refused("\"numeric\"", "\"1e99999\"", "not a decimal");
    refused("\"numeric\"", "\"1e9999\"", "digits written out");
    refused("\"numeric\"", "\"1e-2000\"", "digits written out");
    refused("\"numeric\"", "\"1,5\"", "not a decimal");
    refused("\"bool\"", "1", "expected bool");
    refused("\"bool\"", "\"true\"", "expected bool");
    refused("\"text\"", "5", "expected text");
    refused("\"text\"", "\"a\\u0000b\"", "NUL");
    refused(
        "\"uuid\"",
        "\"6f9619ff8b86d011b42d00c04fc964ff\"",
        "hyphenated",
    );
    refused(
        "\"uuid\"",
        "\"{6f9619ff-8b86-d011-b42d-00c04fc964ff}\"",
        "hyphenated",
    );
    refused("\"date\"", "\"2026-2-3\"", "YYYY-MM-DD");
    refused("\"date\"", "\"2026-02-30\"", "YYYY-MM-DD");
    refused("\"timestamp\"", "\"2026-02-28T10:00:00Z\"", "has an offset");
    refused("\"timestamp\"", "\"2026-02-28 10:00\"", "not an RFC 3339");
    refused("\"timestamptz\"", "\"2026-02-28T10:00:00\"", "with offset");
    refused(
        "{\"type\": \"enum\", \"values\": [\"gold\"]}",
        "\"GOLD\"",
        "not one of gold",
    );
    refused("\"int\"", "null", "null is not allowed for int");
    refused("\"json\"", "null", "null is not allowed");
}

#[test]
fn text_rules_and_arrays() {
    let short = "{\"type\": \"text\", \"max_len\": 3}";
    assert!(one(short, "\"héé\"").is_ok(), "characters, not bytes");
    refused(short, "\"abcd\"", "4 characters, more than max_len 3");
    let pat = "{\"type\": \"text\", \"pattern\": \"[A-Z]{2}[0-9]+\"}";
    assert!(one(pat, "\"AB12\"").is_ok());
    refused(pat, "\"AB12\\nDROP\"", "does not match");
    refused(pat, "\"xAB12\"", "does not match");
    let arr = "{\"type\": \"int[]\", \"max_items\": 2}";
    refused(arr, "[1, 2, 3]", "3 items, more than max_items 2");
    refused(arr, "[1, null]", "item 1 is null");
    refused(arr, "[1, \"2\"]", "item 1: expected int");
    refused(arr, "1", "an array");
    refused(
        "{\"type\": \"text[]\", \"max_len\": 2}",
        "[\"ab\", \"abc\"]",
        "item 1: 3 characters",
    );
}

#[test]
fn the_body_is_one_object_of_exactly_the_declared_parameters() {
    let params = [p("id", "\"int\""), p("name", "\"text\"")];
    let e = |body: &str| check(&params, body.as_bytes()).unwrap_err().0;
    assert!(e("{\"id\": 1}").contains("parameter `name`: is missing"));
    assert!(e("{\"id\": 1, \"name\": \"a\", \"admin\": true}")
        .contains("unknown parameter `admin` (the template takes: id, name)"));
    assert!(e("[1]").contains("must be a JSON object"));
    assert!(e("{\"id\": 1").contains("not valid JSON"));
    assert!(e("").contains("parameter `id`: is missing"));
    let b = check(&params, b"{\"name\": \"a\", \"id\": 7}").unwrap();
    assert_eq!(b.len(), 2);
    assert_eq!(b[0].to_json(), Json::from(7), "in $n order");
    assert!(check(&[], b"").unwrap().is_empty());
    assert!(check(&[], b"{}").unwrap().is_empty());
}
