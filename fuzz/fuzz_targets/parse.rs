//! Feeds arbitrary bytes to the line-protocol parser.
//!
//! Parsing must never panic, and every accepted point must come back identical from
//! serialize -> parse (nanosecond precision, same unsigned setting). Points that are not
//! valid UTF-8 are only read, not round-tripped: their names are decoded lossily.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code, unused_imports)]
#[path = "../../src/line_protocol/mod.rs"]
mod line_protocol;

use line_protocol::{
    lines, lines_exact_only, lines_streaming, FieldValue, ParseOptions, Point, Precision,
};

const PRECISIONS: [Precision; 6] = [
    Precision::Nanosecond,
    Precision::Microsecond,
    Precision::Millisecond,
    Precision::Second,
    Precision::Minute,
    Precision::Hour,
];

/// Everything a point reads back as, with floats compared bit for bit.
#[derive(Debug, PartialEq)]
struct Snapshot {
    measurement: String,
    tags: Vec<(String, String)>,
    fields: Vec<(String, String, u64)>,
    timestamp: Option<i64>,
}

fn snapshot(p: &Point<'_>) -> Snapshot {
    let fields = p
        .fields()
        .map(|(k, v)| {
            let (kind, bits) = match &v {
                FieldValue::Float(f) => ("float".to_owned(), f.to_bits()),
                FieldValue::Integer(i) => ("integer".to_owned(), *i as u64),
                FieldValue::Unsigned(u) => ("unsigned".to_owned(), *u),
                FieldValue::Boolean(b) => ("boolean".to_owned(), u64::from(*b)),
                FieldValue::String(s) => (format!("string:{s}"), 0),
            };
            (k.into_owned(), kind, bits)
        })
        .collect();
    Snapshot {
        measurement: p.measurement().into_owned(),
        tags: p
            .tags()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
        fields,
        timestamp: p.timestamp(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    let opts = ParseOptions {
        precision: PRECISIONS[usize::from(mode & 7) % PRECISIONS.len()],
        allow_unsigned: mode & 8 == 0,
        reserved_tag_keys: mode & 0x10 != 0,
    };
    // The single-pass fast path must agree with the section-by-section emulation.
    let exact: Vec<_> = lines_exact_only(input, opts).collect();
    let fast: Vec<_> = lines(input, opts).collect();
    assert_eq!(exact.len(), fast.len());
    for (e, f) in exact.iter().zip(&fast) {
        assert_eq!((e.number, &e.span), (f.number, &f.span));
        match (&e.result, &f.result) {
            (Ok(p), Ok(q)) => {
                assert_eq!(snapshot(p), snapshot(q));
                assert_eq!(p.field_set_end(), q.field_set_end());
                let (mut k1, mut k2) = (Vec::new(), Vec::new());
                p.write_series_key(&mut k1);
                q.write_series_key(&mut k2);
                assert_eq!(k1, k2);
            }
            (Err(a), Err(b)) => assert_eq!(a, b),
            (a, b) => panic!("paths disagree: {a:?} vs {b:?}"),
        }
    }

    // Reading the input in pieces (as `influx-tee parse` does) gives the same lines.
    let summary = |number: usize,
                   span: std::ops::Range<usize>,
                   r: &Result<Point<'_>, line_protocol::ParseError>| {
        (
            number,
            span,
            r.as_ref().map(snapshot).map_err(|e| e.message.clone()),
        )
    };
    let whole: Vec<_> = fast
        .iter()
        .map(|l| summary(l.number, l.span.clone(), &l.result))
        .collect();
    let chunk = 1 + usize::from(mode >> 4) * 5;
    let mut pieces = Vec::new();
    let (mut start, mut line_number) = (0, 1);
    let mut avail = chunk.min(input.len());
    loop {
        let eof = avail == input.len();
        let mut it = lines_streaming(&input[start..avail], opts, line_number, !eof);
        for l in &mut it {
            pieces.push(summary(
                l.number,
                l.span.start + start..l.span.end + start,
                &l.result,
            ));
        }
        let consumed = it.consumed();
        line_number = it.next_line_number();
        if eof {
            break;
        }
        avail = if consumed == 0 {
            (avail + chunk).min(input.len())
        } else {
            (start + consumed + chunk).min(input.len())
        };
        start += consumed;
    }
    assert_eq!(whole, pieces, "chunk {chunk}");

    let mut last_number = 0;
    let mut last_end = 0;
    for line in fast {
        assert!(line.number > last_number);
        assert!(line.span.start >= last_end && line.span.end <= input.len());
        last_number = line.number;
        last_end = line.span.end;
        let Ok(point) = &line.result else { continue };
        assert!(point.field_set_end() <= line.span.len());
        let mut key = Vec::new();
        point.write_series_key(&mut key);
        assert!(!key.is_empty());

        // Lossily decoded names (not UTF-8) cannot come back identical.
        if !point.is_utf8() {
            continue;
        }
        let before = snapshot(point);
        let mut text = Vec::new();
        point.write_line_protocol(&mut text, point.timestamp());
        let again_opts = ParseOptions {
            precision: Precision::Nanosecond,
            ..opts
        };
        let mut again = lines(&text, again_opts);
        let first = again.next().expect("serialized point yields a line");
        assert!(
            again.next().is_none(),
            "serialized point became several lines: {:?}",
            String::from_utf8_lossy(&text)
        );
        match &first.result {
            Ok(q) => assert_eq!(before, snapshot(q), "{:?}", String::from_utf8_lossy(&text)),
            Err(e) => panic!(
                "serialized point rejected: {e} (from {:?})",
                String::from_utf8_lossy(&input[line.span.clone()])
            ),
        }
    }
});
