//! One test (at least) per rule in tests/fixtures/lp-corpus/RULES.md, plus the server
//! quirks found in its `models/points.go`.
use super::*;

fn parse_with(input: &str, opts: ParseOptions) -> Vec<Result<Point<'_>, ParseError>> {
    lines(input.as_bytes(), opts).map(|l| l.result).collect()
}

type Snapshot = (
    String,
    Vec<(String, String)>,
    Vec<(String, FieldValue<'static>)>,
    Option<i64>,
    usize,
    Vec<u8>,
);

fn snapshot(p: &Point<'_>) -> Snapshot {
    let mut key = Vec::new();
    p.write_series_key(&mut key);
    (
        p.measurement().into_owned(),
        tags(p),
        fields(p),
        p.timestamp(),
        p.field_set_end(),
        key,
    )
}

/// Every test parses through this: it also checks that the single-pass fast path and the
/// section-by-section emulation agree exactly.
fn lines(input: &[u8], opts: ParseOptions) -> Lines<'_> {
    assert_paths_agree(input, opts);
    super::lines(input, opts)
}

fn assert_paths_agree(input: &[u8], opts: ParseOptions) {
    let fast: Vec<_> = super::lines(input, opts).collect();
    let exact: Vec<_> = lines_exact_only(input, opts).collect();
    assert_eq!(fast.len(), exact.len(), "{input:?}");
    for (f, e) in fast.iter().zip(&exact) {
        assert_eq!((f.number, &f.span), (e.number, &e.span), "{input:?}");
        match (&f.result, &e.result) {
            (Ok(p), Ok(q)) => assert_eq!(snapshot(p), snapshot(q), "{input:?}"),
            (Err(a), Err(b)) => assert_eq!(a, b),
            (a, b) => panic!("{input:?}: fast {a:?}, exact {b:?}"),
        }
    }
}

fn parse_all(input: &str) -> Vec<Result<Point<'_>, ParseError>> {
    parse_with(input, ParseOptions::default())
}

fn one(input: &str) -> Point<'_> {
    let mut v = parse_all(input);
    assert_eq!(v.len(), 1, "{input:?}");
    match v.remove(0) {
        Ok(p) => p,
        Err(e) => panic!("{input:?}: {e}"),
    }
}

/// The reason part of the error for a one-line input.
fn reason(input: &str) -> String {
    reason_with(input, ParseOptions::default())
}

fn reason_with(input: &str, opts: ParseOptions) -> String {
    let mut v = parse_with(input, opts);
    assert_eq!(v.len(), 1, "{input:?}");
    match v.remove(0) {
        Ok(_) => panic!("{input:?} was accepted"),
        Err(e) => {
            let (_, reason) = e.message.rsplit_once("': ").expect("wrapped message");
            reason.to_owned()
        }
    }
}

fn tags(p: &Point<'_>) -> Vec<(String, String)> {
    p.tags()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn fields(p: &Point<'_>) -> Vec<(String, FieldValue<'static>)> {
    p.fields()
        .map(|(k, v)| {
            let v = match v {
                FieldValue::String(s) => FieldValue::String(Cow::Owned(s.into_owned())),
                FieldValue::Float(f) => FieldValue::Float(f),
                FieldValue::Integer(i) => FieldValue::Integer(i),
                FieldValue::Unsigned(u) => FieldValue::Unsigned(u),
                FieldValue::Boolean(b) => FieldValue::Boolean(b),
            };
            (k.into_owned(), v)
        })
        .collect()
}

fn value(input: &str) -> FieldValue<'static> {
    let p = one(input);
    let mut f = fields(&p);
    assert_eq!(f.len(), 1);
    f.remove(0).1
}

fn pair(k: &str, v: &str) -> (String, String) {
    (k.to_owned(), v.to_owned())
}

#[test]
fn basic_point() {
    let p = one("cpu,host=a,region=b value=1.5,n=3i,s=\"x\",b=t 1000");
    assert_eq!(p.measurement(), "cpu");
    assert_eq!(tags(&p), vec![pair("host", "a"), pair("region", "b")]);
    assert_eq!(
        fields(&p),
        vec![
            ("value".into(), FieldValue::Float(1.5)),
            ("n".into(), FieldValue::Integer(3)),
            ("s".into(), FieldValue::String("x".into())),
            ("b".into(), FieldValue::Boolean(true)),
        ]
    );
    assert_eq!(p.timestamp(), Some(1000));
}

#[test]
fn error_wording_wraps_the_line() {
    let errors: Vec<_> = parse_all("cpu value=1.1.1")
        .into_iter()
        .map(|r| r.unwrap_err())
        .collect();
    assert_eq!(
        errors[0].message,
        "unable to parse 'cpu value=1.1.1': invalid number"
    );
    assert_eq!(errors[0].to_string(), errors[0].message);
    // Leading whitespace is not part of the quoted line; trailing whitespace is.
    let e = parse_all("  \tcpu value=x ").remove(0).unwrap_err();
    assert_eq!(e.message, "unable to parse 'cpu value=x ': invalid boolean");
}

// --- Lines and whitespace -------------------------------------------------------------

#[test]
fn lines_split_on_newline_only() {
    let all: Vec<_> = lines(b"a v=1\nb v=2\rc v=3\n", ParseOptions::default()).collect();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].number, 1);
    assert_eq!(all[1].number, 2);
    // "\r" is not a line break: it ends up inside the number.
    assert_eq!(
        all[1].result.as_ref().unwrap_err().message,
        "unable to parse 'b v=2\rc v=3': invalid number"
    );
}

#[test]
fn carriage_return_stays_in_the_last_token() {
    assert_eq!(reason("cpu v=1 10\r\n"), "bad timestamp");
    assert_eq!(reason("cpu v=1\r\n"), "invalid number");
    assert_eq!(reason("cpu v=t\r\n"), "invalid boolean");
    // After a closing quote the server keeps reading the value: `"x"\r` is the string `x"`.
    assert_eq!(value("cpu v=\"x\"\r\n"), FieldValue::String("x\"".into()));
    assert_eq!(reason("\r\n"), "missing fields");
}

#[test]
fn quoted_strings_span_lines() {
    let all: Vec<_> = lines(b"a s=\"x\ny\" 1\nb v=2\n", ParseOptions::default()).collect();
    assert_eq!(all.len(), 2);
    let p = all[0].result.as_ref().unwrap();
    assert_eq!(
        fields(p),
        vec![("s".into(), FieldValue::String("x\ny".into()))]
    );
    assert_eq!(p.timestamp(), Some(1));
    assert_eq!((all[0].number, all[1].number), (1, 3));
    assert_eq!(all[0].span, 0..11);
    // An unterminated string swallows the rest of the body.
    let all: Vec<_> = lines(b"a s=\"x\nb v=2\n", ParseOptions::default()).collect();
    assert_eq!(all.len(), 1);
    assert_eq!(
        all[0].result.as_ref().unwrap_err().message,
        "unable to parse 'a s=\"x\nb v=2': unbalanced quotes"
    );
}

#[test]
fn backslash_newline_continues_the_line() {
    // The server's scanLine skips a backslash and the byte after it, newline included,
    // as long as one more byte follows in the body.
    let all: Vec<_> = lines(b"a,t=x\\\ny v=1\nb v=2", ParseOptions::default()).collect();
    assert_eq!(all.len(), 2);
    let p = all[0].result.as_ref().unwrap();
    assert_eq!(tags(p), vec![pair("t", "x\\\ny")]);
    assert_eq!(all[1].number, 3);
}

#[test]
fn blank_and_comment_lines_are_skipped() {
    let input = "\n   \n\t\t\n#c v=1\n   # also\n\0\nm v=1\n";
    let all: Vec<_> = lines(input.as_bytes(), ParseOptions::default()).collect();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].number, 7);
    assert!(all[0].result.is_ok());
}

#[test]
fn leading_whitespace_is_skipped() {
    for input in ["  m v=1", "\tm v=1", "\0 \tm v=1"] {
        let all: Vec<_> = lines(input.as_bytes(), ParseOptions::default()).collect();
        let p = all[0].result.as_ref().unwrap();
        assert_eq!(p.measurement(), "m");
        assert_eq!(all[0].span, 0..input.len());
    }
}

#[test]
fn sections_are_separated_by_spaces_not_tabs() {
    let p = one("m,t=1    v=1    5");
    assert_eq!(p.timestamp(), Some(5));
    assert_eq!(reason("m\tv=1"), "missing fields");
    assert_eq!(reason("m v=1\t5"), "invalid number");
    // Whitespace before the fields or the timestamp may include tabs once a space starts it.
    assert_eq!(one("m \tv=1 \t5").timestamp(), Some(5));
}

#[test]
fn trailing_spaces_are_fine() {
    assert_eq!(one("m v=1   ").timestamp(), None);
    assert_eq!(one("m v=1 5   ").timestamp(), Some(5));
    assert_eq!(one("m v=1 \t").timestamp(), None);
    assert_eq!(reason("m v=1 5 \t"), "point is invalid");
    assert_eq!(reason("m v=1 5 6"), "point is invalid");
}

// --- Names ------------------------------------------------------------------------------

#[test]
fn names_must_not_be_empty() {
    assert_eq!(reason(",t=1 v=1"), "missing measurement");
    assert_eq!(reason("m"), "missing fields");
    assert_eq!(reason("m,t=1"), "missing fields");
    assert_eq!(reason("m "), "invalid field format");
    assert_eq!(reason("m,t=1 "), "invalid field format");
    assert_eq!(reason("m, v=1"), "missing tag key");
    assert_eq!(reason("m,=1 v=1"), "missing tag key");
    assert_eq!(reason("m,t v=1"), "missing tag value");
    assert_eq!(reason("m,t= v=1"), "missing tag value");
    assert_eq!(reason("m,t=,u=1 v=1"), "missing tag value");
    assert_eq!(reason("m,t=a=b v=1"), "invalid tag format");
    assert_eq!(reason("m =1"), "missing field key");
    assert_eq!(reason("m v=1,=2"), "missing field key");
    // After a tab (or NUL) the server's check for a missing first key looks at the wrong
    // byte, so it stores a field with an empty key; so does this parser.
    assert_eq!(
        fields(&one("m \t=1")),
        vec![("".into(), FieldValue::Float(1.0))]
    );
    assert_eq!(
        fields(&one("m,t=1 \0=1i,\t=2i")),
        vec![
            ("".into(), FieldValue::Integer(1)),
            ("\t".into(), FieldValue::Integer(2))
        ]
    );
    round_trip("m \t=1");
    round_trip("m,t=1 \0\t=\"x\",v=2 5");
    assert_eq!(reason("m v="), "missing field value");
    assert_eq!(reason("m v=,w=1"), "missing field value");
    assert_eq!(reason("m v= 1"), "missing field value");
    assert_eq!(reason("m v=1,w"), "invalid field format");
    assert_eq!(reason("m v"), "invalid field format");
}

#[test]
fn tag_value_may_start_with_equals() {
    let p = one("m,t==x v=1");
    assert_eq!(tags(&p), vec![pair("t", "=x")]);
}

#[test]
fn measurement_escapes() {
    let p = one(r#"my\,meas\ ure\=d\"x,t=1 v=1"#);
    assert_eq!(p.measurement(), r#"my,meas ure=d"x"#);
    // A raw '=' is just a byte in a measurement.
    assert_eq!(one("a=b v=1").measurement(), "a=b");
    // The byte after a backslash never ends the measurement.
    assert_eq!(one(r"a\\,b v=1").measurement(), r"a\,b");
}

#[test]
fn tag_and_field_key_escapes() {
    let p = one(r"m,k\,1\ x\=y=v\,1\ x\=y f\,1\ x\=y=1");
    assert_eq!(tags(&p), vec![pair("k,1 x=y", "v,1 x=y")]);
    assert_eq!(fields(&p)[0].0, "f,1 x=y");
    // Field keys also know `\"`.
    assert_eq!(fields(&one(r#"m a\"b=1"#))[0].0, "a\"b");
}

#[test]
fn other_backslashes_are_literal() {
    let p = one(r"m,t=two\\\ words,u=a\b v\n=1");
    assert_eq!(tags(&p), vec![pair("t", r"two\\ words"), pair("u", r"a\b")]);
    assert_eq!(fields(&p)[0].0, r"v\n");
    assert_eq!(one(r"m\\x v=1").measurement(), r"m\\x");
}

#[test]
fn control_characters_and_utf8_are_allowed() {
    let p = one("m\u{1}é,t\u{b}=ü\u{0} 日本=1");
    assert_eq!(p.measurement(), "m\u{1}é");
    assert_eq!(tags(&p), vec![pair("t\u{b}", "ü\u{0}")]);
    assert_eq!(fields(&p)[0].0, "日本");
}

#[test]
fn invalid_utf8_is_accepted_and_read_lossily() {
    let input = b"m\xff,t=\xfe v=\"\xfd\"";
    let all: Vec<_> = lines(input, ParseOptions::default()).collect();
    let p = all[0].result.as_ref().unwrap();
    assert_eq!(p.measurement(), "m\u{fffd}");
    assert_eq!(tags(p), vec![pair("t", "\u{fffd}")]);
    assert_eq!(
        fields(p),
        vec![("v".into(), FieldValue::String("\u{fffd}".into()))]
    );
}

#[test]
fn duplicate_tags_are_rejected() {
    assert_eq!(reason("m,a=1,a=2 v=1"), "duplicate tags");
    assert_eq!(reason("m,b=1,a=1,b=2 v=1"), "duplicate tags");
    assert_eq!(reason("m,c=1,b=1,a=1,b=2 v=1"), "duplicate tags");
    // Compared as written: `a\=` and `a=` differ.
    assert!(parse_all(r"m,a\==1,a=2 v=1")[0].is_ok());
    // Structural errors win over duplicates.
    assert_eq!(reason("m,a=1,a=2,b v=1"), "missing tag value");
}

#[test]
fn duplicate_fields_are_kept() {
    let p = one("m v=1,v=2i,v=\"x\"");
    assert_eq!(
        fields(&p),
        vec![
            ("v".into(), FieldValue::Float(1.0)),
            ("v".into(), FieldValue::Integer(2)),
            ("v".into(), FieldValue::String("x".into())),
        ]
    );
}

#[test]
fn max_key_length() {
    // series key + 4 + field key must not exceed 65535.
    let m = "m".repeat(65_535 - 4 - 1);
    assert!(parse_all(&format!("{m} v=1"))[0].is_ok());
    assert_eq!(
        reason(&format!("{m} vv=1")),
        "max key length exceeded: 65536 > 65535"
    );
    assert_eq!(
        reason(&format!("{m} v=1,ww=2")),
        "max key length exceeded: 65536 > 65535"
    );
    let m = "m".repeat(65_536);
    assert_eq!(
        reason(&format!("{m} v=1")),
        "max key length exceeded: 65536 > 65535"
    );
    let t = "t".repeat(65_530);
    assert_eq!(
        reason(&format!("m,a={t} v=1")),
        "max key length exceeded: 65539 > 65535"
    );
}

// --- Field values -----------------------------------------------------------------------

#[test]
fn floats() {
    for (text, v) in [
        ("1", 1.0),
        ("-1.5", -1.5),
        (".5", 0.5),
        ("1.", 1.0),
        ("1e3", 1000.0),
        ("1E-3", 0.001),
        ("-1.5e+2", -150.0),
        ("0.1", 0.1),
        ("1e-400", 0.0),
    ] {
        assert_eq!(
            value(&format!("m v={text}")),
            FieldValue::Float(v),
            "{text}"
        );
    }
    assert!(matches!(value("m v=-0"), FieldValue::Float(f) if f == 0.0 && f.is_sign_negative()));
    for bad in [
        "NaN", "nan", "Inf", "-Inf", "inf", "1.2.3", "--1", "+1", "0x10", "1_0",
    ] {
        let r = reason(&format!("m v={bad}"));
        assert!(
            r == "invalid number" || r == "invalid boolean",
            "{bad}: {r}"
        );
    }
    assert_eq!(reason("m v=1e5."), "invalid float");
    assert_eq!(reason("m v=1e309"), "invalid float");
    assert_eq!(reason("m v=1e5e5"), "invalid float");
    assert_eq!(reason(&format!("m v={}", "9".repeat(400))), "invalid float");
}

#[test]
fn integers() {
    assert_eq!(value("m v=-42i"), FieldValue::Integer(-42));
    assert_eq!(value("m v=007i"), FieldValue::Integer(7));
    assert_eq!(
        value("m v=9223372036854775807i"),
        FieldValue::Integer(i64::MAX)
    );
    assert_eq!(
        value("m v=-9223372036854775808i"),
        FieldValue::Integer(i64::MIN)
    );
    assert_eq!(
        reason("m v=9223372036854775808i"),
        "unable to parse integer 9223372036854775808: strconv.ParseInt: parsing \"9223372036854775808\": value out of range"
    );
    assert_eq!(reason("m v=1.5i"), "invalid number");
    assert_eq!(reason("m v=1i5"), "invalid number");
    assert_eq!(reason("m v=-i"), "invalid number");
}

#[test]
fn unsigned_integers() {
    assert_eq!(
        value("m v=18446744073709551615u"),
        FieldValue::Unsigned(u64::MAX)
    );
    assert_eq!(value("m v=0u"), FieldValue::Unsigned(0));
    assert_eq!(
        reason("m v=18446744073709551616u"),
        "unable to parse unsigned 18446744073709551616: strconv.ParseUint: parsing \"18446744073709551616\": value out of range"
    );
    assert_eq!(reason("m v=-1u"), "invalid number");
    assert_eq!(reason("m v=1.0u"), "invalid number");
    let v1 = ParseOptions {
        allow_unsigned: false,
        ..ParseOptions::default()
    };
    assert_eq!(reason_with("m v=1u", v1), "invalid number");
    assert!(parse_with("m v=1i", v1)[0].is_ok());
}

#[test]
fn strings_know_only_quote_and_backslash_escapes() {
    assert_eq!(value(r#"m v="a\"b""#), FieldValue::String("a\"b".into()));
    assert_eq!(value(r#"m v="a\\b""#), FieldValue::String("a\\b".into()));
    assert_eq!(
        value(r#"m v="a\nb\t""#),
        FieldValue::String("a\\nb\\t".into())
    );
    assert_eq!(value(r#"m v="a\\""#), FieldValue::String("a\\".into()));
    assert_eq!(value(r#"m v="""#), FieldValue::String("".into()));
    assert_eq!(
        value(r#"m v="a,b=c d""#),
        FieldValue::String("a,b=c d".into())
    );
    assert_eq!(reason(r#"m v="abc"#), "unbalanced quotes");
    assert_eq!(reason(r#"m v="a\""#), "unbalanced quotes");
}

#[test]
fn bytes_after_a_closing_quote_belong_to_the_value() {
    // The server keeps `"x"y` as one value and drops its first and last byte.
    assert_eq!(value(r#"m v="x"y"#), FieldValue::String("x\"".into()));
}

#[test]
fn booleans() {
    for (text, v) in [
        ("t", true),
        ("T", true),
        ("true", true),
        ("True", true),
        ("TRUE", true),
        ("f", false),
        ("F", false),
        ("false", false),
        ("False", false),
        ("FALSE", false),
    ] {
        assert_eq!(
            value(&format!("m v={text}")),
            FieldValue::Boolean(v),
            "{text}"
        );
    }
    for bad in ["tRUE", "yes", "truex", "fals", "\"true", "x"] {
        let r = reason(&format!("m v={bad}"));
        assert!(
            r == "invalid boolean" || r == "unbalanced quotes",
            "{bad}: {r}"
        );
    }
}

// --- Timestamps -------------------------------------------------------------------------

#[test]
fn timestamp_is_optional() {
    assert_eq!(one("m v=1").timestamp(), None);
    assert_eq!(one("m v=1 -5").timestamp(), Some(-5));
    assert_eq!(one("m v=1 0").timestamp(), Some(0));
    assert_eq!(reason("m v=1 12a"), "bad timestamp");
    assert_eq!(reason("m v=1 1.5"), "bad timestamp");
    assert_eq!(
        reason("m v=1 -"),
        "strconv.ParseInt: parsing \"-\": invalid syntax"
    );
    assert_eq!(
        reason("m v=1 9223372036854775808"),
        "strconv.ParseInt: parsing \"9223372036854775808\": value out of range"
    );
}

#[test]
fn precision_scaling() {
    let at = |p: Precision, ts: &str| {
        let opts = ParseOptions::influxdb2(p);
        let input = format!("m v=1 {ts}");
        parse_with(&input, opts)
            .remove(0)
            .map(|p| p.timestamp())
            .map_err(|e| e.message)
    };
    assert_eq!(at(Precision::Nanosecond, "5"), Ok(Some(5)));
    assert_eq!(at(Precision::Microsecond, "5"), Ok(Some(5_000)));
    assert_eq!(at(Precision::Millisecond, "5"), Ok(Some(5_000_000)));
    assert_eq!(at(Precision::Second, "-5"), Ok(Some(-5_000_000_000)));
    assert_eq!(at(Precision::Minute, "1"), Ok(Some(60_000_000_000)));
    assert_eq!(at(Precision::Hour, "1"), Ok(Some(3_600_000_000_000)));
    assert_eq!(
        at(Precision::Second, "9223372036"),
        Ok(Some(9_223_372_036_000_000_000))
    );
    let outside = "time outside range -9223372036854775806 - 9223372036854775806";
    assert!(at(Precision::Second, "9223372037")
        .unwrap_err()
        .ends_with(outside));
    assert!(at(Precision::Hour, "-2562048")
        .unwrap_err()
        .ends_with(outside));
}

#[test]
fn time_range() {
    assert_eq!(
        one("m v=1 9223372036854775806").timestamp(),
        Some(9_223_372_036_854_775_806)
    );
    assert_eq!(
        one("m v=1 -9223372036854775806").timestamp(),
        Some(-9_223_372_036_854_775_806)
    );
    let outside = "time outside range -9223372036854775806 - 9223372036854775806";
    assert_eq!(reason("m v=1 9223372036854775807"), outside);
    assert_eq!(reason("m v=1 -9223372036854775807"), outside);
    assert_eq!(reason("m v=1 -9223372036854775808"), outside);
}

// --- Request outcome --------------------------------------------------------------------

#[test]
fn one_bad_line_never_hides_the_others() {
    let input = "a v=1\nb v=x\n\nc v=3 1\nd\n";
    let all: Vec<_> = lines(input.as_bytes(), ParseOptions::default()).collect();
    let summary: Vec<_> = all.iter().map(|l| (l.number, l.result.is_ok())).collect();
    assert_eq!(summary, vec![(1, true), (2, false), (4, true), (5, false)]);
    assert_eq!(all[1].result.as_ref().unwrap_err().line, 2);
    assert_eq!(&input[all[2].span.clone()], "c v=3 1");
}

// --- Series key, serializer, offsets ----------------------------------------------------

#[test]
fn series_key_sorts_tags_and_keeps_escapes() {
    let key = |input: &str| {
        let mut out = Vec::new();
        one(input).write_series_key(&mut out);
        String::from_utf8(out).unwrap()
    };
    assert_eq!(key("cpu,b=2,a=1 v=1"), "cpu,a=1,b=2");
    assert_eq!(key("cpu,a=1,b=2 v=1"), "cpu,a=1,b=2");
    assert_eq!(key("cpu v=1"), "cpu");
    assert_eq!(key(r"c\ pu,z\,z=1\ 2,a\==x v=1"), r"c\ pu,a\==x,z\,z=1\ 2");
}

#[test]
fn field_set_end_is_where_a_timestamp_goes() {
    let input = "  m,t=1 v=1,s=\"a b\"   ";
    let all: Vec<_> = lines(input.as_bytes(), ParseOptions::default()).collect();
    let line = &all[0];
    let end = line.result.as_ref().unwrap().field_set_end();
    assert_eq!(
        &input[line.span.start..line.span.start + end],
        "  m,t=1 v=1,s=\"a b\""
    );
    let with_ts = format!("{} 42{}", &input[..end], &input[end..]);
    assert_eq!(one(&with_ts).timestamp(), Some(42));
}

fn round_trip(input: &str) {
    let p = one(input);
    let mut out = Vec::new();
    p.write_line_protocol(&mut out, p.timestamp());
    let text = String::from_utf8(out).unwrap();
    let q = one(&text);
    assert_eq!(p.measurement(), q.measurement(), "{input:?} -> {text:?}");
    assert_eq!(tags(&p), tags(&q), "{input:?} -> {text:?}");
    assert_eq!(fields(&p), fields(&q), "{input:?} -> {text:?}");
    assert_eq!(p.timestamp(), q.timestamp());
}

#[test]
fn serializer_round_trips() {
    round_trip("cpu,host=a,region=b value=1.5,n=3i,u=4u,s=\"x\",b=t 1000");
    round_trip(r#"m\,e\ a\=s\"x,t\ k=v\=\,1 f\"\ k=1e300,s="q\"\\ \n",x=-0"#);
    round_trip("m,t==x v=0.1,w=-9223372036854775808i");
    round_trip(r"a\\,b,t=two\\\ words v=1");
    round_trip("m s=\"multi\nline\"");
    round_trip("m=x,t=1 v=\"x\"y");
    let mut out = Vec::new();
    one("m,b=2,a=1 v=1i,s=\"a\\\"b\" 5").write_line_protocol(&mut out, None);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "m,b=2,a=1 v=1i,s=\"a\\\"b\""
    );
}

#[test]
fn irregular_field_sets() {
    // The server validates the field set with `scanFields` (a backslash hides the next
    // byte) but stores what `walkFields` reads (a byte is escaped when a backslash
    // precedes it). For `a\\=1,b=2` they disagree, and the server stores one field.
    assert_eq!(
        fields(&one(r"m a\\=1,b=2")),
        vec![(r"a\=1,b".into(), FieldValue::Float(2.0))]
    );
    round_trip(r"m a\\=1,b=2");
    round_trip(r"m,t=x a\\=1,b=2,c=3i 7");
    let mut out = Vec::new();
    one(r"m,b=1,a=2  a\\=1,b=2").write_line_protocol(&mut out, Some(9));
    assert_eq!(out, br"m,b=1,a=2 a\\=1,b=2 9");
    assert_eq!(reason(r"m a\\=1"), r"invalid value: field-key=a\\=1");
    // Literal quotes in keys are fine.
    assert_eq!(fields(&one(r#"m a"b=1"#))[0].0, "a\"b");
}

#[test]
fn newline_in_a_name() {
    // A leading space makes the server's line splitter count the measurement's `=` and
    // `"`, so it keeps reading past the newline: the measurement holds a newline.
    let input = " a=\"b\nc v=1";
    let p = one(input);
    assert_eq!(p.measurement(), "a=\"b\nc");
    assert_eq!(fields(&p), vec![("v".into(), FieldValue::Float(1.0))]);
    let mut out = Vec::new();
    p.write_line_protocol(&mut out, Some(5));
    assert_eq!(out, b" a=\"b\nc v=1 5");
    round_trip(input);
    // Found by fuzzing: a string the splitter sees open up to the end of the input keeps
    // a final newline, which must survive the round trip.
    round_trip(" N\u{3}=\"\u{2}+\\\u{2}\\\u{8}\0\n\u{e} \u{3}=\"\u{2}\u{15}\u{3}=\"\u{2}+\\\u{2}\\\u{8}\0\n\n");
    // Without the leading space the newline ends the line.
    assert_eq!(parse_all("a=\"b\nc v=1").len(), 2);
    // The server's own error wins where it has one.
    let all: Vec<_> = lines(b" a=\"b\nc v=1 \"", ParseOptions::default()).collect();
    assert_eq!(all.len(), 1);
    let msg = &all[0].result.as_ref().unwrap_err().message;
    assert!(msg.ends_with("bad timestamp"), "{msg}");
}

#[test]
fn reserved_tag_keys() {
    // InfluxDB 2.x refuses them before it looks for duplicates; 1.x stores them.
    for (key, quoted) in [
        ("_measurement", "\"_measurement\""),
        ("_field", "\"_field\""),
        ("time", "\"time\""),
        ("\0", "\"\\x00\""),
    ] {
        let line = format!("m,a=1,{key}=x,a=2 v=1");
        assert_eq!(
            reason(&line),
            format!("cannot use reserved tag key {quoted}")
        );
        let v1 = ParseOptions::influxdb1(Precision::Nanosecond);
        assert_eq!(reason_with(&line, v1), "duplicate tags");
        let line = format!("m,{key}=x v=1");
        assert_eq!(tags(&parse_with(&line, v1)[0].clone().unwrap())[0].1, "x");
    }
    let bytes = b"m,\xff=x v=1";
    let all: Vec<_> = lines(bytes, ParseOptions::default()).collect();
    let msg = &all[0].result.as_ref().unwrap_err().message;
    assert!(
        msg.ends_with(r#"cannot use reserved tag key "\xff""#),
        "{msg}"
    );
    // Compared raw, as written: an escaped look-alike is a different key.
    assert_eq!(tags(&one(r"m,tim\e=x,_Field=y v=1")).len(), 2);
}

#[test]
fn non_utf8_byte_after_a_string_escape_is_noticed() {
    // Found by fuzzing: the byte after a backslash in a string must count for UTF-8.
    let input = b"u e=\"\\\\\\\\\\\xdcy\"";
    let all: Vec<_> = lines(input, ParseOptions::default()).collect();
    let p = all[0].result.as_ref().unwrap();
    assert!(!p.is_utf8());
    assert_eq!(
        fields(p),
        vec![("e".into(), FieldValue::String("\\\\\\\u{fffd}y".into()))]
    );
}
