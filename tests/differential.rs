//! Differential test: generated batches (valid lines and every corner case) are written
//! to the real InfluxDB 1.6 and 2.7 directly, and the same batches through the proxy to
//! a second database or bucket. A client must not tell the two apart (status, headers,
//! body), both databases must hold the same data, and the proxy's Kafka topic must hold
//! exactly what its database stored.
//!
//! Seeded: `INFLUX_TEE_DIFF_SEED=<n>` replays a run, `INFLUX_TEE_DIFF_BATCHES=<n>` sizes
//! it, `INFLUX_TEE_DIFF_DUMP=<file>` writes its batches there. With
//! `INFLUX_TEE_DIFF_SELF_CHECK=1` the "proxied" side goes straight to InfluxDB too (no
//! Kafka), which checks the comparison itself: it must then find nothing. Every
//! divergence of a run is reported, grouped by class with the first reproducer of each,
//! before the test fails.
//!
//! Only what legitimately differs is normalised: the database names, `Date` and request
//! ids, message framing, the stamp of lines without a time (InfluxDB's or the proxy's,
//! both "now"), which storage error a racy multi-shard-group write names first, and the
//! number of U+FFFD a byte that is not UTF-8 reads back as.

mod common;
#[path = "differential/generator.rs"]
mod generator;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use common::*;
use generator::{Batch, Target};
use influx_tee::line_protocol::{self, ParseOptions, Precision};

const DEFAULT_BATCHES: usize = 400;
/// The seed of the test command's run, fixed so every run checks the same batches and a
/// red run replays exactly; other seeds are explored with `INFLUX_TEE_DIFF_SEED`.
const DEFAULT_SEED: u64 = 20_261_201;

#[test]
fn generator_is_deterministic_for_a_seed() {
    let first = generator::batches(7, 200);
    assert_eq!(first, generator::batches(7, 200), "same seed, same batches");
    assert_ne!(
        first,
        generator::batches(8, 200),
        "another seed, other batches"
    );
    // The corner cases are there: partial input, encodings, every target, repeated params.
    let bodies: Vec<u8> = first.iter().flat_map(|b| b.body.clone()).collect();
    for needle in [
        &b"\r\n"[..],
        b"# ",
        b"\\ ",
        b"\\,",
        b"\\\"",
        b"i,",
        b"9223372036854775807",
    ] {
        assert!(
            bodies.windows(needle.len()).any(|w| w == needle),
            "no {:?} in 200 batches",
            String::from_utf8_lossy(needle)
        );
    }
    for target in [Target::V1Influx1, Target::V1Influx2, Target::V2Influx2] {
        assert!(first.iter().any(|b| b.target == target));
    }
    assert!(first
        .iter()
        .any(|b| b.encoding == generator::Encoding::Gzip));
    assert!(first
        .iter()
        .any(|b| b.precision_label().matches("precision=").count() > 1));
}

/// One side of the comparison: where its writes go and which database they name.
struct Side {
    base: String,
    db: String,
}

/// An answer as the client sees it, with only what legitimately differs normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

impl Answer {
    fn summary(&self) -> String {
        format!("{} {:?} {:?}", self.status, self.headers, self.body)
    }
}

/// Headers that differ between any two answers of the same server.
const VOLATILE_HEADERS: &[&str] = &["date", "request-id", "x-request-id"];

/// Message framing (chunked or sized) is the HTTP layer's choice, not something a client
/// acts on; a 204's `Content-Length` is compared, though (InfluxDB sends none).
fn is_framing(name: &str, status: u16) -> bool {
    name == "transfer-encoding" || (name == "content-length" && status != 204)
}

async fn send(batch: &Batch, side: &Side, names: &[&str]) -> Answer {
    let path = match batch.target {
        Target::V2Influx2 => "/api/v2/write",
        _ => "/write",
    };
    let url = format!("{}{path}?{}", side.base, batch.query(&side.db));
    let mut request = http()
        .post(url)
        .header("x-request-id", format!("diff-{}", batch.index))
        .body(batch.wire_body());
    if batch.target.on_influxdb2() {
        request = request.header("authorization", format!("Token {INFLUX2_TOKEN}"));
    }
    if let Some(encoding) = batch.content_encoding() {
        request = request.header("content-encoding", encoding);
    }
    let response = match request.send().await {
        Ok(response) => response,
        Err(error) => {
            return Answer {
                status: 0,
                headers: BTreeMap::new(),
                body: format!("transport error: {error}"),
            }
        }
    };
    let status = response.status().as_u16();
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in response.headers() {
        if VOLATILE_HEADERS.contains(&name.as_str()) || is_framing(name.as_str(), status) {
            continue;
        }
        let value = normalise_names(&String::from_utf8_lossy(value.as_bytes()), names);
        headers
            .entry(name.as_str().to_owned())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    let body = match response.bytes().await {
        Ok(bytes) => normalise_names(&String::from_utf8_lossy(&bytes), names),
        Err(error) => format!("body cut off: {error}"),
    };
    Answer {
        status,
        headers,
        body,
    }
}

/// Database and bucket names differ between the sides: replace them by `<DB>`.
fn normalise_names(text: &str, names: &[&str]) -> String {
    names
        .iter()
        .fold(text.to_owned(), |text, name| text.replace(name, "<DB>"))
}

/// InfluxDB writes a batch's shard groups in parallel and reports the first storage
/// error (a type conflict, a `time` field, …) of whichever group fails first, with
/// that group's `dropped=`, or (1.x) a bare `field type conflict`: two identical
/// writes spanning several groups may name different ones. When both answers are such storage errors (parse errors, which
/// are deterministic, take second place to them in 1.x), the error named is not
/// compared; what was stored still is.
fn without_racy_conflict(direct: &Answer, proxied: &Answer) -> (Answer, Answer) {
    const CONFLICT: &str = "partial write: ";
    if direct.status != proxied.status || !is_storage_error(direct) || !is_storage_error(proxied) {
        return (direct.clone(), proxied.clone());
    }
    let blank = |text: &str| -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(at) = rest.find(CONFLICT) {
            out.push_str(&rest[..at + CONFLICT.len()]);
            out.push_str("<the first failing shard group's error>");
            rest = &rest[at + CONFLICT.len()..];
            // The named conflict ends at ` dropped=N`, or at the message's end.
            let end = rest
                .find(" dropped=")
                .unwrap_or_else(|| rest.find(['"', '\n']).unwrap_or(rest.len()));
            rest = &rest[end..];
            if let Some(count) = rest.strip_prefix(" dropped=") {
                let digits = count
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(count.len());
                out.push_str(" dropped=<n>");
                rest = &count[digits..];
            }
        }
        out.push_str(rest);
        // 1.x answers a bare `field type conflict` when the race goes the other way.
        const BARE: &str = "field type conflict";
        const NAMED: &str = "partial write: <the first failing shard group's error> dropped=<n>";
        if out == BARE {
            return NAMED.to_owned();
        }
        out.replace(&format!("\"{BARE}\""), &format!("\"{NAMED}\""))
    };
    let strip = |answer: &Answer| Answer {
        status: answer.status,
        headers: answer
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    if k == "content-length" {
                        String::new()
                    } else {
                        blank(v)
                    },
                )
            })
            .collect(),
        body: blank(&answer.body),
    };
    (strip(direct), strip(proxied))
}

/// A stored point: series and time, and its fields as InfluxDB reads them back.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct RowKey {
    measurement: String,
    tags: BTreeMap<String, String>,
    time: Time,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Time {
    /// Within the run's wall-clock window: a stamp of the proxy or of InfluxDB, which
    /// legitimately differ between the two sides.
    Now,
    At(i64),
}

type Fields = BTreeMap<String, serde_json::Value>;

type Rows = BTreeMap<(String, BTreeMap<String, String>, i64), Fields>;

const DAY_NS: i64 = 86_400_000_000_000;
/// InfluxDB's bounds on a point's time (`models.MinNanoTime`, `MaxNanoTime`).
const MIN_TIME: i64 = i64::MIN + 2;
const MAX_TIME: i64 = i64::MAX - 1;

/// Every point of a database, through InfluxQL (`/query`), as key → fields.
///
/// One InfluxQL query reads each field with a single type, across the measurements
/// and shard groups it spans (values of other types come back null), and a field may
/// have another type in another measurement or shard group. So each measurement is
/// read by itself, one UTC day at a time (shard groups start at midnight) when it
/// holds points of several days (or Kafka says it should).
async fn stored_rows(
    base: &str,
    credentials: Option<(&str, &str)>,
    db: &str,
    extra_days: &BTreeMap<String, std::collections::BTreeSet<i64>>,
) -> Result<Rows, String> {
    let measurements = query(base, credentials, db, "SHOW MEASUREMENTS").await?;
    let names: Vec<String> = measurements["results"][0]["series"][0]["values"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v[0].as_str().map(str::to_owned))
        .collect();
    let mut rows = Rows::new();
    for name in names {
        let quoted = exact_measurement_regex(&name);
        let everything = query_rows(base, credentials, db, &quoted, "").await?;
        let mut days: std::collections::BTreeSet<i64> = everything
            .keys()
            .map(|(_, _, t)| t.div_euclid(DAY_NS))
            .collect();
        days.extend(extra_days.get(&name).into_iter().flatten());
        if days.len() <= 1 {
            rows.extend(everything);
            continue;
        }
        for day in days {
            let start = (i128::from(day) * i128::from(DAY_NS)).max(i128::from(MIN_TIME));
            let end = (i128::from(day + 1) * i128::from(DAY_NS) - 1).min(i128::from(MAX_TIME));
            if start > end {
                continue;
            }
            let condition = format!(" WHERE time >= {start} AND time <= {end}");
            rows.extend(query_rows(base, credentials, db, &quoted, &condition).await?);
        }
    }
    Ok(rows)
}

/// An InfluxQL regex (`/^name$/`) matching exactly one measurement name. A quoted
/// identifier cannot hold every name InfluxDB stores (a carriage return, for one).
fn exact_measurement_regex(name: &str) -> String {
    let mut regex = String::from("/^");
    for c in name.chars() {
        match c {
            '\\' | '.' | '+' | '*' | '?' | '(' | ')' | '|' | '[' | ']' | '{' | '}' | '^' | '$'
            | '/' => {
                regex.push('\\');
                regex.push(c);
            }
            '\n' => regex.push_str("\\n"),
            '\r' => regex.push_str("\\r"),
            '\t' => regex.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(regex, "\\x{{{:x}}}", c as u32);
            }
            c => regex.push(c),
        }
    }
    regex.push_str("$/");
    regex
}

async fn query(
    base: &str,
    credentials: Option<(&str, &str)>,
    db: &str,
    q: &str,
) -> Result<serde_json::Value, String> {
    let mut request = http().get(format!("{base}/query"));
    if let Some((user, password)) = credentials {
        request = request.basic_auth(user, Some(password));
    }
    let response = request
        .query(&[("db", db), ("epoch", "ns"), ("q", q)])
        .send()
        .await
        .map_err(|e| format!("query: {e}"))?;
    let json: serde_json::Value = response.json().await.map_err(|e| format!("query: {e}"))?;
    if let Some(error) = json["results"][0]
        .get("error")
        .or_else(|| json.get("error"))
    {
        return Err(format!("query {q:?}: {error}"));
    }
    Ok(json)
}

async fn query_rows(
    base: &str,
    credentials: Option<(&str, &str)>,
    db: &str,
    measurement: &str,
    condition: &str,
) -> Result<Rows, String> {
    let q = format!("SELECT * FROM {measurement}{condition} GROUP BY *");
    let json = query(base, credentials, db, &q).await?;
    let result = &json["results"][0];
    let mut rows = Rows::new();
    let Some(series) = result["series"].as_array() else {
        return Ok(rows);
    };
    for s in series {
        let measurement = lossy(s["name"].as_str().unwrap_or_default());
        // GROUP BY * lists every tag key of the measurement, "" where a series has none.
        let tags: BTreeMap<String, String> = s["tags"]
            .as_object()
            .map(|tags| {
                tags.iter()
                    .filter_map(|(k, v)| {
                        let v = v.as_str().unwrap_or_default();
                        (!v.is_empty()).then(|| (lossy(k), lossy(v)))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let columns: Vec<&str> = s["columns"]
            .as_array()
            .map(|c| c.iter().filter_map(|c| c.as_str()).collect())
            .unwrap_or_default();
        for values in s["values"].as_array().into_iter().flatten() {
            let Some(values) = values.as_array() else {
                continue;
            };
            let mut time = None;
            let mut fields = Fields::new();
            for (column, value) in columns.iter().zip(values) {
                if *column == "time" {
                    time = value.as_i64();
                } else if !value.is_null() {
                    fields.insert(lossy(column), lossy_value(value.clone()));
                }
            }
            if let Some(time) = time {
                rows.insert((measurement.clone(), tags.clone(), time), fields);
            }
        }
    }
    Ok(rows)
}

/// Bytes that are not UTF-8 read back as U+FFFD on both sides, but Go's JSON writes one
/// per byte and Rust's lossy decoding one per invalid sequence: compare runs as one.
fn lossy(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if !(c == char::REPLACEMENT_CHARACTER && out.ends_with(char::REPLACEMENT_CHARACTER)) {
            out.push(c);
        }
    }
    out
}

fn lossy_value(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::String(text) => serde_json::Value::String(lossy(&text)),
        other => other,
    }
}

/// Field values compare as InfluxDB's JSON writes them: a float 2.0 reads back as `2`.
fn same_value(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    let exact = |v: &serde_json::Value| {
        v.as_i64()
            .map(i128::from)
            .or_else(|| v.as_u64().map(i128::from))
    };
    match (exact(a), exact(b)) {
        (Some(x), Some(y)) => x == y,
        _ => match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => x == y,
            _ => a == b,
        },
    }
}

fn same_fields(a: &Fields, b: &Fields) -> bool {
    a.len() == b.len()
        && a.iter()
            .all(|(k, v)| b.get(k).is_some_and(|w| same_value(v, w)))
}

/// Divergences of a run, grouped by class, each with its first reproducer.
#[derive(Default)]
struct Findings {
    classes: BTreeMap<String, (usize, String)>,
}

impl Findings {
    fn add(&mut self, class: String, reproducer: impl FnOnce() -> String) {
        self.classes
            .entry(class)
            .and_modify(|(count, _)| *count += 1)
            .or_insert_with(|| (1, reproducer()));
    }
}

/// A batch as a reproducer: where it went, how, and what each side answered.
fn describe(batch: &Batch, answers: &[(Answer, Answer)]) -> String {
    let mut body = String::from_utf8_lossy(&batch.body).into_owned();
    if body.len() > 1500 {
        let cut = (0..=1500)
            .rev()
            .find(|i| body.is_char_boundary(*i))
            .unwrap_or(0);
        body.truncate(cut);
        body.push('…');
    }
    let (direct, proxied) = &answers[batch.index];
    format!(
        "batch {} {} ?{} content-encoding={:?}\n      body: {body:?}\n      direct:  {}\n      proxied: {}",
        batch.index,
        batch.target.label(),
        batch.query("<DB>"),
        batch.content_encoding(),
        direct.summary(),
        proxied.summary(),
    )
}

/// InfluxDB 2.7 answers 204 to a point whose measurement has an escaped `=` (`q=r\=s`)
/// and lists the measurement, but neither InfluxQL nor Flux ever reads the point back.
fn unreadable_in_influxdb2(record: &[u8]) -> bool {
    let mut bytes = record.iter();
    while let Some(byte) = bytes.next() {
        match byte {
            b'\\' if bytes.next() == Some(&b'=') => return true,
            b',' | b' ' => return false,
            _ => {}
        }
    }
    false
}

/// What is unusual about a batch's request, to group answers by likely cause: its
/// `Content-Encoding` and repeated parameters, e.g. ` [gzip (truncated), repeated db]`.
fn shape_of(batch: &Batch) -> String {
    let mut parts: Vec<String> = Vec::new();
    match &batch.encoding {
        generator::Encoding::Plain => {}
        generator::Encoding::Gzip => parts.push("gzip".into()),
        generator::Encoding::TruncatedGzip => parts.push("gzip (truncated)".into()),
        generator::Encoding::NotGzip => parts.push("gzip (not gzip)".into()),
        generator::Encoding::Header(name) => parts.push(format!("content-encoding {name}")),
    }
    let mut seen: Vec<&str> = Vec::new();
    for (key, _) in &batch.params {
        if seen.contains(&key.as_str()) {
            parts.push(format!("repeated {key}"));
        }
        seen.push(key);
    }
    parts.dedup();
    if parts.is_empty() {
        String::new()
    } else {
        format!(" [{}]", parts.join(", "))
    }
}

/// What probably made the tee go wrong for a batch, to group its Kafka divergences:
/// a partial write whose answer names a storage error (InfluxDB names only the first
/// failing shard group's first), 1.x's bare `field type conflict` (no partial write
/// named), else the precision parameters.
fn cause_of(batch: &Batch, answers: &[(Answer, Answer)]) -> String {
    let (_, proxied) = &answers[batch.index];
    if proxied.body.contains("\"field type conflict\"") {
        "after a bare 'field type conflict'".to_owned()
    } else if is_storage_error(proxied) {
        "after a partial write naming a storage error".to_owned()
    } else {
        batch.precision_label()
    }
}

/// A partial write InfluxDB's storage reported (which takes precedence over parse errors).
fn is_storage_error(answer: &Answer) -> bool {
    (answer.body.contains("partial write: ") || answer.body.contains("\"field type conflict\""))
        && !answer.body.contains("unable to parse")
}

/// The batch a stored row or record came from: its `bt` tag, when the generator put one.
fn batch_of<'b>(batches: &'b [Batch], tags: &BTreeMap<String, String>) -> Option<&'b Batch> {
    let bt = tags.get("bt")?;
    match bt.parse::<usize>() {
        Ok(i) => batches.get(i),
        // A mutated line: the batch whose body holds that tag.
        Err(_) => {
            let needle = format!("bt={bt}");
            batches
                .iter()
                .find(|b| String::from_utf8_lossy(&b.body).contains(&needle))
        }
    }
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_is_indistinguishable_from_influxdb() {
    require_stack().await;
    let seed = env_number("INFLUX_TEE_DIFF_SEED").unwrap_or(DEFAULT_SEED);
    let count = env_number("INFLUX_TEE_DIFF_BATCHES").map_or(DEFAULT_BATCHES, |n| n as usize);
    println!("differential run: INFLUX_TEE_DIFF_SEED={seed} INFLUX_TEE_DIFF_BATCHES={count}");
    let batches = generator::batches(seed, count);
    if let Ok(path) = std::env::var("INFLUX_TEE_DIFF_DUMP") {
        let text: String = batches
            .iter()
            .map(|b| {
                format!(
                    "batch {} {} ?{} content-encoding={:?}\n{:?}\n\n",
                    b.index,
                    b.target.label(),
                    b.query("<DB>"),
                    b.content_encoding(),
                    String::from_utf8_lossy(&b.body)
                )
            })
            .collect();
        std::fs::write(&path, text).expect("INFLUX_TEE_DIFF_DUMP is writable");
    }

    // Names that are no substring of each other, so `<DB>` replaces each cleanly.
    let (direct1, proxied1) = (unique("diffd1"), unique("diffp1"));
    let (direct2, proxied2) = (unique("diffd2"), unique("diffp2"));
    create_database(&direct1).await;
    create_database(&proxied1).await;
    create_bucket(&direct2).await;
    create_bucket(&proxied2).await;
    let (topic1, topic2) = (unique("it.diff1"), unique("it.diff2"));
    let proxy1 = start_proxy(config(&influxdb_url(), &topic1)).await;
    let proxy2 = start_proxy(config(&influxdb2_url(), &topic2)).await;
    let names = [
        direct1.as_str(),
        proxied1.as_str(),
        direct2.as_str(),
        proxied2.as_str(),
    ];

    // The harness checked against itself: both sides straight to InfluxDB, no Kafka.
    // Any finding then is a flaw of the comparison, not of the proxy.
    let self_check = std::env::var_os("INFLUX_TEE_DIFF_SELF_CHECK").is_some();
    let mut findings = Findings::default();
    let started_ns = now_ns();
    let mut answers = Vec::with_capacity(batches.len());
    // Writes whose outcome the proxy could not determine and so did not tee (it counts
    // them in `influx_tee_partial_write_unresolved_total`, as the issue prescribes).
    let mut unresolved_batches = std::collections::BTreeSet::new();
    for batch in &batches {
        let proxy_of_batch = match batch.target {
            Target::V1Influx1 => &proxy1,
            _ => &proxy2,
        };
        let unresolved_before = unresolved_writes(proxy_of_batch).await;
        let (direct, proxied) = match batch.target {
            Target::V1Influx1 => (
                Side {
                    base: influxdb_url(),
                    db: direct1.clone(),
                },
                Side {
                    base: if self_check {
                        influxdb_url()
                    } else {
                        proxy1.url("")
                    },
                    db: proxied1.clone(),
                },
            ),
            _ => (
                Side {
                    base: influxdb2_url(),
                    db: direct2.clone(),
                },
                Side {
                    base: if self_check {
                        influxdb2_url()
                    } else {
                        proxy2.url("")
                    },
                    db: proxied2.clone(),
                },
            ),
        };
        // Direct first, then proxied: both databases see the same history.
        let direct_answer = send(batch, &direct, &names).await;
        let proxied_answer = send(batch, &proxied, &names).await;
        answers.push((direct_answer, proxied_answer));
        if !self_check && unresolved_writes(proxy_of_batch).await > unresolved_before {
            unresolved_batches.insert(batch.index);
        }
    }
    let finished_ns = now_ns();
    for batch in &batches {
        let (direct, proxied) = &answers[batch.index];
        let (direct, proxied) = &without_racy_conflict(direct, proxied);
        let target = format!("{}{}", batch.target.label(), shape_of(batch));
        let class = if direct.status != proxied.status {
            format!(
                "answer {target}: status {} direct, {} proxied",
                direct.status, proxied.status
            )
        } else if direct.headers != proxied.headers {
            let differing: Vec<&String> = direct
                .headers
                .keys()
                .chain(proxied.headers.keys())
                .filter(|k| direct.headers.get(*k) != proxied.headers.get(*k))
                .collect();
            format!(
                "answer {target} {}: headers {differing:?} differ",
                direct.status
            )
        } else if direct.body != proxied.body {
            format!("answer {target} {}: body differs", direct.status)
        } else {
            continue;
        };
        findings.add(class, || describe(batch, &answers));
    }

    // Stamps of either side fall in the run's window (an hour back for precision=h).
    let window = started_ns - 3_660_000_000_000..finished_ns + 60_000_000_000;
    let normalise = |rows: &Rows| {
        rows.iter()
            .map(|((measurement, tags, time), fields)| {
                let time = if window.contains(time) {
                    Time::Now
                } else {
                    Time::At(*time)
                };
                let key = RowKey {
                    measurement: measurement.clone(),
                    tags: tags.clone(),
                    time,
                };
                (key, fields.clone())
            })
            .collect::<BTreeMap<RowKey, Fields>>()
    };
    let auth2 = Some(("tee", INFLUX2_TOKEN));
    let mut stored_points = 0;
    let sides = [
        (
            "1.6",
            influxdb_url(),
            None,
            &direct1,
            &proxied1,
            &proxy1,
            &topic1,
        ),
        (
            "2.7",
            influxdb2_url(),
            auth2,
            &direct2,
            &proxied2,
            &proxy2,
            &topic2,
        ),
    ];
    for (influxdb, base, credentials, direct_db, proxied_db, proxy, topic) in sides {
        // Kafka: exactly what the proxied database stored, merged as InfluxDB merges
        // points of one series and time (later fields win).
        let mut teed = 0.0;
        for endpoint in ["v1", "v2"] {
            let series =
                format!("influx_tee_points_total{{endpoint=\"{endpoint}\",outcome=\"teed\"}}");
            teed += proxy.metric(&series).await;
        }
        let teed = teed as usize;
        let mut records = if self_check {
            Vec::new()
        } else {
            kafka_records(topic, teed, Duration::from_secs(60)).await
        };
        records.sort_by_key(|r| (r.partition, r.offset));
        if records.len() != teed {
            findings.add(
                format!(
                    "kafka {influxdb}: {} records for {teed} points teed",
                    records.len()
                ),
                String::new,
            );
        }
        let mut from_kafka = Rows::new();
        let mut unreadable = 0;
        let mut record_batch: BTreeMap<(String, BTreeMap<String, String>, i64), usize> =
            BTreeMap::new();
        for record in &records {
            let batch = record
                .headers
                .get("request-id")
                .and_then(|id| id.strip_prefix("diff-"))
                .and_then(|i| i.parse::<usize>().ok())
                .and_then(|i| batches.get(i));
            let options = ParseOptions {
                precision: Precision::Nanosecond,
                allow_unsigned: true,
                reserved_tag_keys: false,
            };
            let parsed = line_protocol::lines(&record.value, options).next();
            let Some(Ok(point)) = parsed.map(|line| line.result) else {
                findings.add(format!("kafka {influxdb}: a record does not parse"), || {
                    format!(
                        "record {:?} headers {:?}",
                        String::from_utf8_lossy(&record.value),
                        record.headers
                    )
                });
                continue;
            };
            if let Some(batch) = batch {
                let named = match batch.target {
                    Target::V2Influx2 => record.headers.get("bucket"),
                    _ => record.headers.get("db"),
                };
                let named = named.map(|n| n.split('/').next().unwrap_or_default());
                if named != Some(proxied_db.as_str()) {
                    let class = format!(
                        "kafka {influxdb} {}: record headers name another database",
                        batch.target.label()
                    );
                    findings.add(class, || {
                        format!(
                            "headers {:?}\n    from {}",
                            record.headers,
                            describe(batch, &answers)
                        )
                    });
                }
            }
            if influxdb == "2.7" && unreadable_in_influxdb2(&record.value) {
                unreadable += 1;
                continue;
            }
            let Some(time) = point.timestamp() else {
                findings.add(format!("kafka {influxdb}: a record without time"), || {
                    format!("record {:?}", String::from_utf8_lossy(&record.value))
                });
                continue;
            };
            let key = (
                lossy(&point.measurement()),
                point
                    .tags()
                    .map(|(k, v)| (lossy(&k), lossy(&v)))
                    .collect::<BTreeMap<_, _>>(),
                time,
            );
            let fields = from_kafka.entry(key.clone()).or_default();
            for (field, value) in point.fields() {
                fields.insert(lossy(&field), lossy_value(json_value(&value)));
            }
            if let Some(batch) = batch {
                record_batch.insert(key, batch.index);
            }
        }

        if unreadable > 0 {
            println!("not compared: {unreadable} records InfluxDB {influxdb} stores unreadably (escaped '=' in the measurement)");
        }

        // Both databases, read day by day over every day any of them (or Kafka) holds.
        let days_of = |rows: &Rows| {
            let mut days: BTreeMap<String, std::collections::BTreeSet<i64>> = BTreeMap::new();
            for (measurement, _, time) in rows.keys() {
                days.entry(measurement.clone())
                    .or_default()
                    .insert(time.div_euclid(DAY_NS));
            }
            days
        };
        let merge = |into: &mut BTreeMap<String, std::collections::BTreeSet<i64>>,
                     from: BTreeMap<String, std::collections::BTreeSet<i64>>|
         -> bool {
            let mut grew = false;
            for (measurement, days) in from {
                let known = into.entry(measurement).or_default();
                for day in days {
                    grew |= known.insert(day);
                }
            }
            grew
        };
        let read = |db: &str, days: BTreeMap<String, std::collections::BTreeSet<i64>>| {
            let (base, db) = (base.clone(), db.to_owned());
            async move {
                match stored_rows(&base, credentials, &db, &days).await {
                    Ok(rows) => rows,
                    Err(error) => panic!("reading InfluxDB {influxdb} back: {error}"),
                }
            }
        };
        let mut days = days_of(&from_kafka);
        let mut direct_raw = read(direct_db, days.clone()).await;
        merge(&mut days, days_of(&direct_raw));
        let proxied_raw = read(proxied_db, days.clone()).await;
        if merge(&mut days, days_of(&proxied_raw)) {
            direct_raw = read(direct_db, days.clone()).await;
        }
        stored_points += direct_raw.len();

        let direct_rows = normalise(&direct_raw);
        let proxied_rows = normalise(&proxied_raw);
        let keys: std::collections::BTreeSet<&RowKey> =
            direct_rows.keys().chain(proxied_rows.keys()).collect();
        for key in keys {
            let batch = batch_of(&batches, &key.tags);
            let (target, precision) =
                batch.map_or(("?".to_owned(), "unattributed".to_owned()), |b| {
                    (
                        format!("{}{}", b.target.label(), shape_of(b)),
                        b.precision_label(),
                    )
                });
            let difference = match (direct_rows.get(key), proxied_rows.get(key)) {
                (Some(_), None) => "only in the direct database",
                (None, Some(_)) => "only in the proxied database",
                (Some(d), Some(p)) if !same_fields(d, p) => "fields differ",
                _ => continue,
            };
            let class = format!("stored {influxdb} {target} {precision}: a point {difference}");
            findings.add(class, || {
                let mut text = format!(
                    "point {key:?}\n      direct fields:  {:?}\n      proxied fields: {:?}",
                    direct_rows.get(key),
                    proxied_rows.get(key)
                );
                if let Some(batch) = batch {
                    let _ = write!(text, "\n    from {}", describe(batch, &answers));
                }
                text
            });
        }

        if self_check {
            continue;
        }
        let keys: std::collections::BTreeSet<_> =
            from_kafka.keys().chain(proxied_raw.keys()).collect();
        let mut not_teed_unresolved = 0usize;
        for key in keys {
            let batch = record_batch
                .get(key)
                .and_then(|i| batches.get(*i))
                .or_else(|| batch_of(&batches, &key.1));
            let (target, cause) = batch.map_or(("?", "unattributed".to_owned()), |b| {
                (b.target.label(), cause_of(b, &answers))
            });
            let difference = match (proxied_raw.get(key), from_kafka.get(key)) {
                // The one way the proxy may leave a stored point out: it could not tell
                // whether InfluxDB stored it (bytes that are not UTF-8 read back lossily,
                // a read-back refused), counted that write as unresolved and teed nothing
                // uncertain, as issue 9 prescribes. Their number is bounded below.
                // Anything else is a divergence.
                (Some(_), None) if batch.is_some_and(|b| unresolved_batches.contains(&b.index)) => {
                    not_teed_unresolved += 1;
                    continue;
                }
                (Some(_), None) => "stored but not in Kafka",
                (None, Some(_)) => "in Kafka but not stored",
                (Some(s), Some(k)) if !same_fields(s, k) => {
                    let mut without_time = k.clone();
                    without_time.remove("time");
                    if same_fields(s, &without_time) {
                        // README: `line` records keep the client's bytes, `time` field included.
                        "stored without the `time` field its record carries"
                    } else {
                        "stored with other fields than in Kafka"
                    }
                }
                _ => continue,
            };
            let class = format!("kafka {influxdb} {target} {cause}: a point {difference}");
            findings.add(class, || {
                let mut text = format!(
                    "point {key:?}\n      stored: {:?}\n      kafka:  {:?}",
                    proxied_raw.get(key),
                    from_kafka.get(key)
                );
                if let Some(batch) = batch {
                    let _ = write!(text, "\n    from {}", describe(batch, &answers));
                }
                text
            });
        }
        if not_teed_unresolved > 0 {
            println!(
                "not teed: {not_teed_unresolved} stored points of writes the proxy counted as unresolved ({influxdb})"
            );
        }
    }
    proxy1.stop().await;
    proxy2.stop().await;

    // Giving up is allowed, rarely: a proxy that gave up on many writes tees too little.
    assert!(
        unresolved_batches.len() * 20 <= count,
        "the proxy left {} of {count} writes unresolved (seed {seed})",
        unresolved_batches.len()
    );
    println!("unresolved writes: {} of {count}", unresolved_batches.len());
    // A run that stored next to nothing proves nothing.
    assert!(
        stored_points > count,
        "only {stored_points} points stored directly from {count} batches (seed {seed})"
    );
    if !findings.classes.is_empty() {
        let mut report = format!(
            "{} classes of divergence (INFLUX_TEE_DIFF_SEED={seed} INFLUX_TEE_DIFF_BATCHES={count}):\n",
            findings.classes.len()
        );
        for (class, (count, _)) in &findings.classes {
            let _ = writeln!(report, "  [{count}×] {class}");
        }
        report.push_str("\nThe first reproducer of each:\n");
        for (class, (count, first)) in &findings.classes {
            let _ = writeln!(report, "\n[{count}×] {class}\n    {first}");
        }
        report.push_str("\nBatches after the first divergence may diverge as a consequence (the two databases then differ).\n");
        panic!("{report}");
    }
    println!("{stored_points} points stored directly, no divergence");
}

/// Writes the proxy counted as unresolved, over both endpoints.
async fn unresolved_writes(proxy: &TestProxy) -> f64 {
    let mut total = 0.0;
    for endpoint in ["v1", "v2"] {
        total += proxy
            .metric(&format!(
                "influx_tee_partial_write_unresolved_total{{endpoint=\"{endpoint}\"}}"
            ))
            .await;
    }
    total
}
