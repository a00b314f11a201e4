//! A seeded generator of write batches for the differential test: mostly valid line
//! protocol, with every corner case InfluxDB's parser and storage treat specially.
//!
//! The generator does not decide what is valid: the real servers do. It only knows
//! enough structure to tag each well-formed line with its batch (`bt=<index>`), so a
//! stored row can be traced back to the write that produced it.

/// Where a batch is written, and with which API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    /// `/write` on InfluxDB 1.6.
    V1Influx1,
    /// `/write` (v1 compatibility) on InfluxDB 2.7.
    V1Influx2,
    /// `/api/v2/write` on InfluxDB 2.7.
    V2Influx2,
}

impl Target {
    pub fn label(self) -> &'static str {
        match self {
            Target::V1Influx1 => "v1@1.6",
            Target::V1Influx2 => "v1@2.7",
            Target::V2Influx2 => "v2@2.7",
        }
    }

    pub fn on_influxdb2(self) -> bool {
        self != Target::V1Influx1
    }
}

/// The value of one query parameter; names are filled in per side (direct or proxied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamValue {
    /// The side's own database or bucket.
    Db,
    /// Another database or bucket of the side, which does not exist.
    OtherDb,
    Literal(String),
}

/// How the body travels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encoding {
    Plain,
    Gzip,
    /// `Content-Encoding: gzip` on a body cut short.
    TruncatedGzip,
    /// `Content-Encoding: gzip` on a body that is not gzip at all.
    NotGzip,
    /// Another `Content-Encoding` header on a plain body.
    Header(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub index: usize,
    pub target: Target,
    pub params: Vec<(String, ParamValue)>,
    pub encoding: Encoding,
    pub body: Vec<u8>,
}

impl Batch {
    /// The query string for one side, given its database or bucket name.
    pub fn query(&self, db: &str) -> String {
        let other = format!("{db}x");
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (key, value) in &self.params {
            let value = match value {
                ParamValue::Db => db,
                ParamValue::OtherDb => other.as_str(),
                ParamValue::Literal(v) => v.as_str(),
            };
            query.append_pair(key, value);
        }
        query.finish()
    }

    /// The `precision` parameters as given, e.g. `precision=s&precision=ns`, for grouping findings.
    pub fn precision_label(&self) -> String {
        let given: Vec<String> = self
            .params
            .iter()
            .filter(|(key, _)| key == "precision")
            .map(|(_, value)| match value {
                ParamValue::Literal(v) => format!("precision={v}"),
                _ => "precision=?".to_owned(),
            })
            .collect();
        if given.is_empty() {
            "no precision".to_owned()
        } else {
            given.join("&")
        }
    }

    /// The body the client sends, encoded as the batch says.
    pub fn wire_body(&self) -> Vec<u8> {
        match self.encoding {
            Encoding::Plain | Encoding::Header(_) | Encoding::NotGzip => self.body.clone(),
            Encoding::Gzip => gzip(&self.body),
            Encoding::TruncatedGzip => {
                let mut zipped = gzip(&self.body);
                zipped.truncate(zipped.len() / 2);
                zipped
            }
        }
    }

    pub fn content_encoding(&self) -> Option<&'static str> {
        match self.encoding {
            Encoding::Plain => None,
            Encoding::Gzip | Encoding::TruncatedGzip | Encoding::NotGzip => Some("gzip"),
            Encoding::Header(name) => Some(name),
        }
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(data);
    encoder.finish().unwrap_or_default()
}

/// SplitMix64: small, fast, and the same on every platform.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u32) -> bool {
        self.below(100) < percent as usize
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    pub fn pick_str(&mut self, items: &[&'static str]) -> &'static str {
        items[self.below(items.len())]
    }
}

/// Measurement names, escaped as they appear in line protocol.
const MEASUREMENTS: &[&str] = &[
    "cpu",
    "disk\\ io",
    "net\\,if",
    "eq=name",
    "bs\\\\x",
    "ünï✓",
    "quote\"m",
    "_under",
];

/// Field keys per measurement, escaped.
const FIELD_KEYS: &[&str] = &["value", "f\\ sp", "f\\,c", "f\\=e", "f\\\\b", "ü", "\"q\""];

const TAG_KEYS: &[&str] = &[
    "host", "t\\ sp", "t\\,c", "t\\=e", "t\\\\b", "ẗag", "z", "a",
];

const TAG_VALUES: &[&str] = &[
    "a", "b", "v\\ 1", "v\\,2", "v\\=3", "väl", "b\\\\s", "x=y", "q\"t", "日本",
];

/// The five field types, as line protocol spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldType {
    Float,
    Integer,
    Unsigned,
    Boolean,
    String,
}

const TYPES: [FieldType; 5] = [
    FieldType::Float,
    FieldType::Integer,
    FieldType::Unsigned,
    FieldType::Boolean,
    FieldType::String,
];

const FLOATS: &[&str] = &[
    "1",
    "0",
    "-0",
    "1.5",
    "-2.25",
    "1e3",
    "1E-3",
    "-1.5e+10",
    ".5",
    "1.7976931348623157e308",
    "-1.7976931348623157e308",
    "4.9e-324",
];

const ODD_FLOATS: &[&str] = &[
    "1e309",
    "5.",
    "+1",
    "0.1",
    "123456789012345678901234567890",
    "01.50",
    "1e",
    "1.2.3",
    "NaN",
    "inf",
    "-",
    "0x1f",
];

const INTEGERS: &[&str] = &[
    "1i",
    "0i",
    "-0i",
    "-1i",
    "42i",
    "9223372036854775807i",
    "-9223372036854775808i",
];

const ODD_INTEGERS: &[&str] = &[
    "9223372036854775808i",
    "-9223372036854775809i",
    "+5i",
    "007i",
    "1.0i",
    "1e3i",
    "i",
    "-i",
    "1I",
];

const UNSIGNEDS: &[&str] = &["1u", "0u", "18446744073709551615u"];

const ODD_UNSIGNEDS: &[&str] = &["18446744073709551616u", "-1u", "+1u", "1.5u", "u"];

const BOOLEANS: &[&str] = &[
    "t", "T", "true", "True", "TRUE", "f", "F", "false", "False", "FALSE",
];

const ODD_BOOLEANS: &[&str] = &["tRUE", "yes", "tru", "falsey", "t1"];

const STRINGS: &[&str] = &[
    "\"x\"",
    "\"\"",
    "\"with space, comma=eq\"",
    "\"esc \\\" quote\"",
    "\"back\\\\slash\"",
    "\"trailing back\\\\\"",
    "\"new\nline\"",
    "\"crlf\r\nin\"",
    "\"tab\there\"",
    "\"ünïcødé ✓ 日本\"",
    "\"lone \\ backslash\"",
    "\"\\n not a newline\"",
    "\"# not a comment\"",
];

const ODD_STRINGS: &[&str] = &["\"unterminated", "\"a\"b\""];

/// Nanosecond times far from now (the test tells the proxy's stamps from InfluxDB's
/// by their being near now), in several shard groups.
const WEEK_NS: i64 = 7 * 24 * 3600 * 1_000_000_000;
const BASE_NS: i64 = 1_600_000_000_000_000_000; // 2020-09-13

/// Timestamps InfluxDB treats specially, as written.
const TIME_EDGES: &[&str] = &[
    "9223372036854775806",
    "9223372036854775805",
    "-9223372036854775806",
    "-9223372036854775805",
    "0",
    "-1",
    "-1000000000000000000",
];

const ODD_TIMES: &[&str] = &[
    "9223372036854775807",
    "-9223372036854775808",
    "-9223372036854775807",
    "9223372036854775808",
    "-0",
    "+5",
    "0001",
    "1.5",
    "1e9",
];

/// Lines that are not points.
const NOT_POINTS: &[&str] = &[
    "# a comment",
    "#no space comment",
    "   # indented comment",
    "",
    "   ",
    "\t",
];

/// Lines that are not UTF-8, as series key and field set (the batch tag goes between).
const NOT_UTF8: &[(&[u8], &[u8])] = &[
    (b"bad\xff", b"v=1i"),
    (b"m,t=\xc3", b"v=1i"),
    (b"m", b"v=\"\xfe\xfe\",w=1i"),
    (b"m", b"\xe2\x82=1i"),
    (b"m\xc3\x28,t=a", b"v=2i"),
];

/// Lines InfluxDB refuses or reads surprisingly.
const MALFORMED: &[&str] = &[
    "m",
    "m v",
    "m v=",
    "m =1",
    "m v=1,",
    "m,t=1",
    "m,t= v=1",
    "m,=x v=1",
    ",t=1 v=1",
    " v=1",
    "m v=1 1 2",
    "m v=1 abc",
    "m,t=a,t=b v=1",
    "m v=1,v=2",
    "m v=1i,v=2",
    "m,_field=x v=1",
    "m,_measurement=x v=1",
    "m,time=x v=1",
    "m time=1",
    "m time=1,v=2",
    "m,t=a\\ v=1",
    "m\\ v=1",
    "m v=\"unterminated",
    "m v=1 \t",
    "m  v=1",
    "m v=1  1600000000000000000",
    "m\\",
    "m,t=\\ v=1",
    "m,\\ =x v=1",
    "m v=1\\",
    "\\ v=1",
];

struct MeasurementShape {
    name: &'static str,
    /// Each field key's usual type; other types make conflicts.
    fields: Vec<(&'static str, FieldType)>,
}

/// Generates `count` batches from `seed`; the same seed always gives the same batches.
pub fn batches(seed: u64, count: usize) -> Vec<Batch> {
    let mut rng = Rng::new(seed);
    let shapes: Vec<MeasurementShape> = MEASUREMENTS
        .iter()
        .map(|name| {
            let mut keys: Vec<&'static str> = FIELD_KEYS.to_vec();
            let mut fields = Vec::new();
            for _ in 0..3 {
                let key = keys.remove(rng.below(keys.len()));
                // Unsigned is never a usual type: InfluxDB 1.6 refuses it.
                let usual = *rng.pick(&[
                    FieldType::Float,
                    FieldType::Float,
                    FieldType::Integer,
                    FieldType::Boolean,
                    FieldType::String,
                ]);
                fields.push((key, usual));
            }
            MeasurementShape { name, fields }
        })
        .collect();
    (0..count)
        .map(|index| batch(&mut rng, &shapes, index))
        .collect()
}

fn batch(rng: &mut Rng, shapes: &[MeasurementShape], index: usize) -> Batch {
    let target = *rng.pick(&[
        Target::V1Influx1,
        Target::V1Influx1,
        Target::V1Influx2,
        Target::V2Influx2,
    ]);
    let (params, unit_ns) = params(rng, target);
    // InfluxDB 2.x refuses a whole batch for one bad line: half the batches have none.
    let style = Style {
        clean: rng.chance(50),
        unsigned: target.on_influxdb2(),
        unit_ns,
        batch: index,
        week: *rng.pick(&[0i64, 0, 0, 1, 2, 5]),
        spread_weeks: rng.chance(15),
    };
    let lines = match rng.below(100) {
        0..5 => 40 + rng.below(11),
        5..30 => 1,
        _ => 2 + rng.below(15),
    };
    let mut body = Vec::new();
    for n in 0..lines {
        let line = match rng.below(100) {
            0..6 => rng.pick(NOT_POINTS).to_string(),
            // InfluxDB takes any bytes; the two sides must agree on these too.
            16..18 if !style.clean => {
                let (series, fields) = *rng.pick(NOT_UTF8);
                body.extend_from_slice(series);
                body.extend_from_slice(format!(",bt={index} ").as_bytes());
                body.extend_from_slice(fields);
                String::from(" 1600000000000000000")
            }
            // Stamped lines carry their batch, so stamps of two batches never merge.
            6..12 if !style.clean => {
                let line = *rng.pick(MALFORMED);
                match line.strip_prefix("m ") {
                    Some(rest) => format!("m,bt={index} {rest}"),
                    None => line.to_owned(),
                }
            }
            12..16 if !style.clean => {
                let line = point(rng, shapes, &style);
                mutate(rng, &line)
            }
            _ => point(rng, shapes, &style),
        };
        body.extend_from_slice(line.as_bytes());
        let last = n + 1 == lines;
        if !last || rng.chance(80) {
            let crlf = !style.clean && rng.chance(10);
            body.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
        }
    }
    let encoding = match rng.below(100) {
        0..12 => Encoding::Gzip,
        12..14 => Encoding::TruncatedGzip,
        14..15 => Encoding::NotGzip,
        15..18 => Encoding::Header(rng.pick_str(&["deflate", "br", "identity", "GZIP", "x-gzip"])),
        _ => Encoding::Plain,
    };
    Batch {
        index,
        target,
        params,
        encoding,
        body,
    }
}

/// What the lines of one batch look like.
struct Style {
    /// Only spellings both InfluxDB versions accept (type conflicts still happen).
    clean: bool,
    /// Whether unsigned integers are valid (InfluxDB 2.x).
    unsigned: bool,
    /// The unit (in ns) the batch's timestamps are written in.
    unit_ns: i64,
    batch: usize,
    /// The week (shard group) the batch writes to, unless it spreads over several.
    week: i64,
    spread_weeks: bool,
}

/// The query parameters of a batch, and the unit (in ns) its timestamps are written in.
fn params(rng: &mut Rng, target: Target) -> (Vec<(String, ParamValue)>, i64) {
    let mut params: Vec<(String, ParamValue)> = Vec::new();
    let db_key = match target {
        Target::V2Influx2 => "bucket",
        _ => "db",
    };
    if target == Target::V2Influx2 {
        params.push(("org".into(), ParamValue::Literal("influx-tee".into())));
        if rng.chance(5) {
            params.push(("org".into(), ParamValue::Literal("no-such-org".into())));
        }
    }
    params.push((db_key.into(), ParamValue::Db));
    if rng.chance(5) {
        params.push((db_key.into(), ParamValue::OtherDb));
    }
    if target != Target::V2Influx2 && rng.chance(10) {
        let rp = *rng.pick(&["autogen", "autogen", "no_such_rp", ""]);
        params.push(("rp".into(), ParamValue::Literal(rp.into())));
    }
    let choices: &[&str] = match target {
        Target::V2Influx2 => &["", "ns", "us", "ms", "s", "h", "n", "x", "NS"],
        _ => &[
            "", "n", "u", "ms", "s", "m", "h", "ns", "us", "rfc3339", "x", "MS",
        ],
    };
    let mut unit_ns = 1;
    if rng.chance(75) {
        let first = *rng.pick(choices);
        unit_ns = unit_of(first);
        params.push(("precision".into(), ParamValue::Literal(first.into())));
        if rng.chance(6) {
            let second = *rng.pick(choices);
            params.push(("precision".into(), ParamValue::Literal(second.into())));
        }
    }
    if rng.chance(3) {
        // Parameters are read by name, whatever their order.
        params.reverse();
    }
    (params, unit_ns)
}

/// The unit InfluxDB would read a precision name in, for writing plausible times.
fn unit_of(precision: &str) -> i64 {
    match precision {
        "u" | "us" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => 1,
    }
}

/// One well-formed point (as far as the generator knows) of a usual measurement.
fn point(rng: &mut Rng, shapes: &[MeasurementShape], style: &Style) -> String {
    let shape = rng.pick(shapes);
    let mut line = String::from(shape.name);
    let mut tags: Vec<(&str, &str)> = Vec::new();
    for _ in 0..rng.below(4) {
        let key = *rng.pick(TAG_KEYS);
        if style.clean && tags.iter().any(|(k, _)| *k == key) {
            continue;
        }
        tags.push((key, *rng.pick(TAG_VALUES)));
    }
    // Timestamp: none (InfluxDB's or the proxy's stamp), an edge, or a usual one.
    let time = rng.below(100);
    let stamped = time < 20;
    if stamped || rng.chance(92) {
        let at = rng.below(tags.len() + 1);
        tags.insert(at, ("bt", ""));
    }
    let batch_tag = style.batch.to_string();
    for (key, value) in tags {
        line.push(',');
        line.push_str(key);
        line.push('=');
        line.push_str(if key == "bt" { &batch_tag } else { value });
    }
    line.push(' ');
    let fields = 1 + rng.below(3);
    for n in 0..fields {
        if n > 0 {
            line.push(',');
        }
        let (key, usual) = *rng.pick(&shape.fields);
        // A conflicting type now and then, within and across shard groups.
        let mut kind = if rng.chance(6) {
            *rng.pick(&TYPES)
        } else {
            usual
        };
        if kind == FieldType::Unsigned && style.clean && !style.unsigned {
            kind = FieldType::Integer;
        }
        line.push_str(key);
        line.push('=');
        line.push_str(&value(rng, kind, style.clean));
    }
    match time {
        0..20 => {}
        // Edge times only make sense in nanoseconds; other units overflow them.
        20..27 if style.unit_ns == 1 || !style.clean => {
            line.push(' ');
            let times = if style.clean || rng.chance(50) {
                TIME_EDGES
            } else {
                ODD_TIMES
            };
            line.push_str(rng.pick_str(times));
        }
        _ => {
            let week = if style.spread_weeks {
                *rng.pick(&[0i64, 1, 2, 5])
            } else {
                style.week
            };
            // A few distinct seconds, so points sometimes share a series and time.
            let ns = BASE_NS + week * WEEK_NS + rng.below(20) as i64 * 1_000_000_000;
            let double_space = !style.clean && rng.chance(5);
            line.push_str(if double_space { "  " } else { " " });
            line.push_str(&(ns / style.unit_ns).to_string());
        }
    }
    if !style.clean && rng.chance(3) {
        line.push_str(rng.pick_str(&[" ", "\t", "  "]));
    }
    if rng.chance(3) {
        line.insert_str(0, rng.pick_str(&[" ", "\t", "  "]));
    }
    line
}

/// A field value of `kind`: usually a valid spelling, in dirty batches sometimes an odd one.
fn value(rng: &mut Rng, kind: FieldType, clean: bool) -> String {
    let (valid, odd): (&[&str], &[&str]) = match kind {
        FieldType::Float => (FLOATS, ODD_FLOATS),
        FieldType::Integer => (INTEGERS, ODD_INTEGERS),
        FieldType::Unsigned => (UNSIGNEDS, ODD_UNSIGNEDS),
        FieldType::Boolean => (BOOLEANS, ODD_BOOLEANS),
        FieldType::String => (STRINGS, ODD_STRINGS),
    };
    let spellings = if clean || rng.chance(85) { valid } else { odd };
    rng.pick(spellings).to_string()
}

/// The line with one character inserted, removed or replaced, at a char boundary.
fn mutate(rng: &mut Rng, line: &str) -> String {
    let boundaries: Vec<usize> = line
        .char_indices()
        .map(|(i, _)| i)
        .chain([line.len()])
        .collect();
    let at = *rng.pick(&boundaries);
    let special = *rng.pick(&[",", " ", "=", "\\", "\"", "\n", "#", "\r", "é"]);
    let mut mutated = line.to_owned();
    match rng.below(3) {
        0 => mutated.insert_str(at, special),
        _ if at < line.len() => {
            let end = at + line[at..].chars().next().map_or(0, char::len_utf8);
            let replacement = if rng.chance(50) { "" } else { special };
            mutated.replace_range(at..end, replacement);
        }
        _ => mutated.push_str(special),
    }
    mutated
}
