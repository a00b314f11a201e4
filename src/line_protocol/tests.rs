//! One test (at least) per rule in /work/shared/lp-corpus/README.md.
use super::*;

pub(crate) fn parse_all(input: &str) -> Vec<Result<Point<'_>, ParseError>> {
    lines(input.as_bytes(), ParseOptions::default())
        .map(|l| l.result)
        .collect()
}

pub(crate) fn one(input: &str) -> Point<'_> {
    let mut v = parse_all(input);
    assert_eq!(v.len(), 1, "{input:?}");
    match v.remove(0) {
        Ok(p) => p,
        Err(e) => panic!("{input:?}: {e}"),
    }
}

pub(crate) fn err(input: &str) -> String {
    let mut v = parse_all(input);
    assert_eq!(v.len(), 1, "{input:?}");
    match v.remove(0) {
        Ok(_) => panic!("{input:?} was accepted"),
        Err(e) => e.message,
    }
}

#[test]
fn basic_point() {
    let p = one("cpu,host=a,region=b value=1.5,n=3i,s=\"x\",b=t 1000");
    assert_eq!(p.measurement(), "cpu");
    let tags: Vec<_> = p.tags().collect();
    assert_eq!(
        tags,
        vec![("host".into(), "a".into()), ("region".into(), "b".into())]
    );
    let fields: Vec<_> = p.fields().collect();
    assert_eq!(
        fields,
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
fn error_wording() {
    assert_eq!(
        err("cpu value=1.1.1"),
        "unable to parse 'cpu value=1.1.1': invalid number"
    );
}
