//! When InfluxDB's answer to a partial write does not say which points it stored, ask
//! InfluxDB: read the written series and times back with the client's own credentials,
//! bounded in points, bytes and time, and compare point by point.
//!
//! InfluxDB writes each shard group in parallel and answers with the first error of
//! the first group that fails, so one conflict named does not tell which points of
//! other groups, or other conflicts of the same group, were dropped.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::Duration;

use axum::body::Body;
use http::{header, HeaderValue, Method, Request, StatusCode};
use serde::{Deserialize, Serialize};

use super::accepted::Fate;
use crate::line_protocol::{FieldValue, Line, Point};
use crate::upstream::{Upstream, UpstreamError};

/// Bounds of one read-back (`[upstream.readback]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReadbackConfig {
    /// A partial write of more points than this is not read back (left unresolved).
    pub max_points: usize,
    /// Cap on the upstream's answer to the read-back query.
    pub max_bytes: usize,
    /// Timeout of the read-back query, answer included.
    pub timeout_ms: u64,
}

impl Default for ReadbackConfig {
    fn default() -> Self {
        ReadbackConfig {
            max_points: 10_000,
            max_bytes: 16 * 1024 * 1024,
            timeout_ms: 5_000,
        }
    }
}

/// Times of one measurement closer than this are read with one statement.
const RANGE_GAP_NS: i64 = 1_000_000_000;
/// More statements than this in one read-back: unresolved.
const MAX_STATEMENTS: usize = 1_000;

/// Why a read-back could not tell what was stored.
#[derive(Debug, thiserror::Error)]
pub enum ReadbackError {
    #[error("{0} points to read back, over upstream.readback.max_points")]
    TooManyPoints(usize),
    #[error("{0} time ranges to read back, over {MAX_STATEMENTS}")]
    TooManyRanges(usize),
    #[error("read-back query: {0}")]
    Upstream(#[from] UpstreamError),
    #[error("read-back query answered {status}: {message}")]
    Refused { status: StatusCode, message: String },
    #[error("read-back answer unreadable: {0}")]
    Decode(&'static str),
}

/// Where, and as whom, to read back: the write's database and retention policy, with
/// the credentials the client wrote with.
pub struct ReadbackTarget<'a> {
    pub db: &'a str,
    pub rp: &'a str,
    pub user: Option<Cow<'a, str>>,
    pub password: Option<Cow<'a, str>>,
    pub authorization: Option<&'a HeaderValue>,
}

impl<'a> ReadbackTarget<'a> {
    /// The client's credentials: `u` and `p` (first values, as InfluxDB reads them) and
    /// `Authorization`. With `token_is_user_password` (a v2 write to a 1.x that has no
    /// v2 API), `Token user:password` becomes `u` and `p`, as the write was sent.
    pub fn from_request(
        parts: &'a http::request::Parts,
        db: &'a str,
        rp: &'a str,
        token_is_user_password: bool,
    ) -> ReadbackTarget<'a> {
        let mut target = ReadbackTarget {
            db,
            rp,
            user: None,
            password: None,
            authorization: parts.headers.get(header::AUTHORIZATION),
        };
        for (key, value) in form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes()) {
            match key.as_ref() {
                "u" if target.user.is_none() => target.user = Some(value),
                "p" if target.password.is_none() => target.password = Some(value),
                _ => {}
            }
        }
        if token_is_user_password {
            let pair = target
                .authorization
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Token "))
                .and_then(|v| v.split_once(':'));
            if let Some((user, password)) = pair {
                target.user = Some(Cow::Borrowed(user));
                target.password = Some(Cow::Borrowed(password));
                target.authorization = None;
            }
        }
        target
    }
}

/// A point whose storing is in doubt, with its time in nanoseconds.
pub struct Candidate<'p, 'a> {
    pub point: &'p Point<'a>,
    pub time_ns: i64,
}

/// The lines whose fate is [`Fate::Unknown`], as candidates, with their indices.
pub fn doubtful<'p, 'a>(
    lines: &'p [Line<'a>],
    fates: &[Fate],
    time_ns: impl Fn(&Point<'a>) -> i64,
) -> (Vec<usize>, Vec<Candidate<'p, 'a>>) {
    lines
        .iter()
        .zip(fates)
        .enumerate()
        .filter(|(_, (_, fate))| **fate == Fate::Unknown)
        .filter_map(|(index, (line, _))| {
            let point = line.result.as_ref().ok()?;
            let time_ns = time_ns(point);
            Some((index, Candidate { point, time_ns }))
        })
        .unzip()
}

/// A series as InfluxQL's `GROUP BY *` names it: measurement and sorted, non-empty tags.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SeriesKey {
    measurement: String,
    tags: Vec<(String, String)>,
}

impl SeriesKey {
    fn of(point: &Point<'_>) -> SeriesKey {
        let mut tags: Vec<(String, String)> = point
            .tags()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        tags.sort();
        SeriesKey {
            measurement: point.measurement().into_owned(),
            tags,
        }
    }
}

/// Reads back the candidates' series and times; says for each whether InfluxDB holds
/// it: a row at its series and time with each of its fields of the same type and value
/// (or of the same type, when a later candidate at that series and time writes the
/// same field: last wins). A field type conflict leaves the other type stored, so the
/// type alone shows a dropped point even where an older point sits at its time.
pub async fn stored(
    upstream: &Upstream,
    target: &ReadbackTarget<'_>,
    candidates: &[Candidate<'_, '_>],
    config: &ReadbackConfig,
) -> Result<Vec<bool>, ReadbackError> {
    if candidates.len() > config.max_points {
        return Err(ReadbackError::TooManyPoints(candidates.len()));
    }
    let keys: Vec<SeriesKey> = candidates.iter().map(|c| SeriesKey::of(c.point)).collect();
    let query = select_statements(&keys, candidates)?;
    let last_writer = last_writers(candidates, &keys);
    // InfluxDB answers on the first failing shard group while the others may still
    // be writing: read again until two reads agree, at least SETTLE_MIN apart from
    // the first.
    let started = std::time::Instant::now();
    let mut verdicts: Option<Vec<bool>> = None;
    for delay_ms in [0, 20, 80, 200, 400] {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        let answer = query_upstream(upstream, target, &query, config).await?;
        let rows = stored_rows(&answer)?;
        let now = judge(candidates, &keys, &rows, &last_writer);
        let all_stored = now.iter().all(|stored| *stored);
        let settled = verdicts.as_ref() == Some(&now) && started.elapsed() >= SETTLE_MIN;
        verdicts = Some(now);
        if all_stored || settled {
            break;
        }
    }
    Ok(verdicts.unwrap_or_default())
}

/// How long after the answer a read-back is taken as settled.
const SETTLE_MIN: Duration = Duration::from_millis(100);

/// Whether InfluxDB holds each candidate: a row at its series and time with each of
/// its fields of the same type and value, or of the same type where a later candidate
/// writes that field at that series and time (last wins).
fn judge(
    candidates: &[Candidate<'_, '_>],
    keys: &[SeriesKey],
    rows: &HashMap<(SeriesKey, i64), Row>,
    last_writer: &HashMap<(&SeriesKey, i64, String), usize>,
) -> Vec<bool> {
    candidates
        .iter()
        .zip(keys)
        .enumerate()
        .map(|(index, (candidate, key))| {
            let Some(row) = rows.get(&(key.clone(), candidate.time_ns)) else {
                return false;
            };
            let fields: Vec<_> = candidate.point.fields().collect();
            fields.iter().enumerate().all(|(at, (name, value))| {
                // InfluxDB skips a field named `time`, and of a field given twice
                // stores the last.
                if name == "time" || fields[at + 1..].iter().any(|(later, _)| later == name) {
                    return true;
                }
                let Some(held) = row.get(name.as_ref()) else {
                    return false;
                };
                match same_value(value, held) {
                    None => false,
                    Some(true) => true,
                    Some(false) => last_writer
                        .get(&(key, candidate.time_ns, name.to_string()))
                        .is_some_and(|&last| last > index),
                }
            })
        })
        .collect()
}

/// For "last wins": the last candidate writing each field of each series and time.
fn last_writers<'k>(
    candidates: &[Candidate<'_, '_>],
    keys: &'k [SeriesKey],
) -> HashMap<(&'k SeriesKey, i64, String), usize> {
    let mut last_writer = HashMap::new();
    for (index, (candidate, key)) in candidates.iter().zip(keys).enumerate() {
        for (name, _) in candidate.point.fields() {
            last_writer.insert((key, candidate.time_ns, name.into_owned()), index);
        }
    }
    last_writer
}

/// One `SELECT * … GROUP BY *` per measurement and cluster of close times.
fn select_statements(
    keys: &[SeriesKey],
    candidates: &[Candidate<'_, '_>],
) -> Result<String, ReadbackError> {
    let mut times: HashMap<&str, Vec<i64>> = HashMap::new();
    for (key, candidate) in keys.iter().zip(candidates) {
        times
            .entry(key.measurement.as_str())
            .or_default()
            .push(candidate.time_ns);
    }
    let mut query = String::new();
    let mut statements = 0;
    for (measurement, mut times) in times {
        times.sort_unstable();
        let mut start = 0;
        while start < times.len() {
            let mut end = start;
            while end + 1 < times.len() && times[end + 1].saturating_sub(times[end]) <= RANGE_GAP_NS
            {
                end += 1;
            }
            statements += 1;
            if statements > MAX_STATEMENTS {
                return Err(ReadbackError::TooManyRanges(statements));
            }
            if !query.is_empty() {
                query.push_str("; ");
            }
            query.push_str("SELECT * FROM ");
            push_identifier(&mut query, measurement);
            query.push_str(&format!(
                " WHERE time >= {} AND time <= {} GROUP BY *",
                times[start], times[end]
            ));
            start = end + 1;
        }
    }
    Ok(query)
}

/// An InfluxQL double-quoted identifier (its scanner knows `\\`, `\"` and `\n`).
fn push_identifier(out: &mut String, name: &str) {
    out.push('"');
    for c in name.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
}

async fn query_upstream(
    upstream: &Upstream,
    target: &ReadbackTarget<'_>,
    query: &str,
    config: &ReadbackConfig,
) -> Result<bytes::Bytes, ReadbackError> {
    let params = {
        let mut params = form_urlencoded::Serializer::new(String::with_capacity(64));
        params.append_pair("db", target.db);
        if !target.rp.is_empty() {
            params.append_pair("rp", target.rp);
        }
        params.append_pair("epoch", "ns");
        // 1.x reads `u` and `p` from the URL only.
        if let Some(user) = &target.user {
            params.append_pair("u", user);
        }
        if let Some(password) = &target.password {
            params.append_pair("p", password);
        }
        params.finish()
    };
    let body = form_urlencoded::Serializer::new(String::with_capacity(query.len() + 8))
        .append_pair("q", query)
        .finish();
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(upstream.uri_for(&format!("/query?{params}"))?)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        // MessagePack keeps integers and floats apart, where JSON writes `1` for both.
        .header(header::ACCEPT, "application/x-msgpack");
    if let Some(authorization) = target.authorization {
        request = request.header(header::AUTHORIZATION, authorization);
    }
    let request = request
        .body(Body::from(body))
        .map_err(|e| UpstreamError::Request(e.to_string()))?;
    let answer = upstream
        .send_capped(
            request,
            config.max_bytes,
            Duration::from_millis(config.timeout_ms),
        )
        .await?;
    if answer.status != StatusCode::OK {
        let message = answer.error_message().unwrap_or_default();
        return Err(ReadbackError::Refused {
            status: answer.status,
            message,
        });
    }
    Ok(answer.body)
}

/// The non-null fields of a stored row, by name.
type Row = HashMap<String, Value>;

/// Every row of a `GROUP BY *` answer, by series and time.
fn stored_rows(answer: &[u8]) -> Result<HashMap<(SeriesKey, i64), Row>, ReadbackError> {
    let mut input = answer;
    let value = Value::decode(&mut input, 0).ok_or(ReadbackError::Decode("not MessagePack"))?;
    if let Some(error) = value.get("error").and_then(Value::as_str) {
        return Err(ReadbackError::Refused {
            status: StatusCode::OK,
            message: error.to_owned(),
        });
    }
    let results = value
        .get("results")
        .and_then(Value::as_array)
        .ok_or(ReadbackError::Decode("no results"))?;
    let mut rows = HashMap::new();
    for result in results {
        if let Some(error) = result.get("error").and_then(Value::as_str) {
            return Err(ReadbackError::Refused {
                status: StatusCode::OK,
                message: error.to_owned(),
            });
        }
        // A row limit (`max-row-limit`) cut the answer short.
        if matches!(result.get("partial"), Some(Value::Bool(true))) {
            return Err(ReadbackError::Decode("answer truncated by the server"));
        }
        let Some(series) = result.get("series").and_then(Value::as_array) else {
            continue;
        };
        for one in series {
            if matches!(one.get("partial"), Some(Value::Bool(true))) {
                return Err(ReadbackError::Decode("answer truncated by the server"));
            }
            let measurement = one.get("name").and_then(Value::as_str).unwrap_or("");
            let mut tags: Vec<(String, String)> = match one.get("tags") {
                Some(Value::Map(entries)) => entries
                    .iter()
                    .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v.as_str()?.to_owned())))
                    .filter(|(_, v)| !v.is_empty())
                    .collect(),
                _ => Vec::new(),
            };
            tags.sort();
            let key = SeriesKey {
                measurement: measurement.to_owned(),
                tags,
            };
            let columns: Vec<&str> = one
                .get("columns")
                .and_then(Value::as_array)
                .ok_or(ReadbackError::Decode("no columns"))?
                .iter()
                .map(|c| c.as_str().unwrap_or(""))
                .collect();
            let values = one.get("values").and_then(Value::as_array).unwrap_or(&[]);
            for row in values {
                let row = row.as_array().ok_or(ReadbackError::Decode("row"))?;
                let mut time = None;
                let mut fields = Row::new();
                for (column, value) in columns.iter().zip(row) {
                    if *column == "time" {
                        time = value.as_i64();
                    } else if !matches!(value, Value::Nil) {
                        fields.insert((*column).to_owned(), value.clone());
                    }
                }
                let time = time.ok_or(ReadbackError::Decode("row without a time"))?;
                rows.insert((key.clone(), time), fields);
            }
        }
    }
    Ok(rows)
}

/// Whether a stored value is ours: `None` if of another type.
fn same_value(ours: &FieldValue<'_>, held: &Value) -> Option<bool> {
    Some(match (ours, held) {
        (FieldValue::Float(a), Value::Float(b)) => a == b,
        (FieldValue::Integer(a), Value::Int(b)) => a == b,
        // MessagePack writes 0..=127 alike for signed and unsigned.
        (FieldValue::Integer(a), Value::Small(b)) => *a == i64::from(*b),
        (FieldValue::Unsigned(a), Value::Uint(b)) => a == b,
        (FieldValue::Unsigned(a), Value::Small(b)) => *a == u64::from(*b),
        (FieldValue::String(a), Value::Str(b)) => a.as_ref() == b.as_str(),
        (FieldValue::Boolean(a), Value::Bool(b)) => a == b,
        _ => return None,
    })
}

/// A decoded MessagePack value, as InfluxDB's query answers use them.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Nil,
    Bool(bool),
    /// A positive fixint: signed or unsigned, MessagePack does not say.
    Small(u8),
    Int(i64),
    Uint(u64),
    Float(f64),
    Str(String),
    Bin,
    Array(Vec<Value>),
    Map(Vec<(Value, Value)>),
}

/// Nesting deeper than any InfluxDB answer: refused rather than recursed into.
const MAX_DEPTH: usize = 16;

impl Value {
    fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(items) => Some(items),
            _ => None,
        }
    }

    fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Small(v) => Some(i64::from(*v)),
            Value::Int(v) => Some(*v),
            Value::Uint(v) => i64::try_from(*v).ok(),
            _ => None,
        }
    }

    fn decode(input: &mut &[u8], depth: usize) -> Option<Value> {
        fn take<'b>(input: &mut &'b [u8], n: usize) -> Option<&'b [u8]> {
            let (head, rest) = input.split_at_checked(n)?;
            *input = rest;
            Some(head)
        }
        fn be(input: &mut &[u8], n: usize) -> Option<u64> {
            Some(
                take(input, n)?
                    .iter()
                    .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)),
            )
        }
        if depth > MAX_DEPTH {
            return None;
        }
        let tag = *take(input, 1)?.first()?;
        let string = |input: &mut &[u8], len: usize| {
            take(input, len).map(|b| Value::Str(String::from_utf8_lossy(b).into_owned()))
        };
        Some(match tag {
            0x00..=0x7f => Value::Small(tag),
            0x80..=0x8f => Value::map(input, usize::from(tag & 0x0f), depth)?,
            0x90..=0x9f => Value::array(input, usize::from(tag & 0x0f), depth)?,
            0xa0..=0xbf => string(input, usize::from(tag & 0x1f))?,
            0xc0 => Value::Nil,
            0xc2 => Value::Bool(false),
            0xc3 => Value::Bool(true),
            0xc4..=0xc6 => {
                let len = be(input, 1 << (tag - 0xc4))? as usize;
                take(input, len)?;
                Value::Bin
            }
            0xca => Value::Float(f64::from(f32::from_bits(be(input, 4)? as u32))),
            0xcb => Value::Float(f64::from_bits(be(input, 8)?)),
            0xcc..=0xcf => Value::Uint(be(input, 1 << (tag - 0xcc))?),
            0xd0 => Value::Int(i64::from(be(input, 1)? as u8 as i8)),
            0xd1 => Value::Int(i64::from(be(input, 2)? as u16 as i16)),
            0xd2 => Value::Int(i64::from(be(input, 4)? as u32 as i32)),
            0xd3 => Value::Int(be(input, 8)? as i64),
            0xd9..=0xdb => {
                let len = be(input, 1 << (tag - 0xd9))? as usize;
                string(input, len)?
            }
            0xdc | 0xdd => {
                let len = be(input, 2 << (tag - 0xdc))? as usize;
                Value::array(input, len, depth)?
            }
            0xde | 0xdf => {
                let len = be(input, 2 << (tag - 0xde))? as usize;
                Value::map(input, len, depth)?
            }
            0xe0..=0xff => Value::Int(i64::from(tag as i8)),
            // Extensions (time values, never asked for with `epoch=ns`) and 0xc1.
            _ => return None,
        })
    }

    fn array(input: &mut &[u8], len: usize, depth: usize) -> Option<Value> {
        // Every item takes at least a byte: a length beyond the input is a lie.
        let mut items = Vec::with_capacity(len.min(input.len()));
        for _ in 0..len {
            items.push(Value::decode(input, depth + 1)?);
        }
        Some(Value::Array(items))
    }

    fn map(input: &mut &[u8], len: usize, depth: usize) -> Option<Value> {
        let mut entries = Vec::with_capacity(len.min(input.len() / 2));
        for _ in 0..len {
            let key = Value::decode(input, depth + 1)?;
            let value = Value::decode(input, depth + 1)?;
            entries.push((key, value));
        }
        Some(Value::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::line_protocol::{lines, ParseOptions};

    #[test]
    fn decodes_influxdb_msgpack_answers() {
        // {"results":[{"statement_id":0,"series":[{"name":"m","tags":{"h":"a"},
        //   "columns":["time","v","w"],"values":[[300,1.5,nil],[-1,7,"x"]]}]}]}
        let mut body = vec![0x81, 0xa7];
        body.extend_from_slice(b"results");
        body.extend_from_slice(&[0x91, 0x82, 0xac]);
        body.extend_from_slice(b"statement_id");
        body.extend_from_slice(&[0x00, 0xa6]);
        body.extend_from_slice(b"series");
        body.extend_from_slice(&[0x91, 0x84, 0xa4]);
        body.extend_from_slice(b"name");
        body.extend_from_slice(&[0xa1, b'm', 0xa4]);
        body.extend_from_slice(b"tags");
        body.extend_from_slice(&[0x81, 0xa1, b'h', 0xa1, b'a', 0xa7]);
        body.extend_from_slice(b"columns");
        body.extend_from_slice(&[0x93, 0xa4]);
        body.extend_from_slice(b"time");
        body.extend_from_slice(&[0xa1, b'v', 0xa1, b'w', 0xa6]);
        body.extend_from_slice(b"values");
        body.extend_from_slice(&[0x92, 0x93, 0xd1, 0x01, 0x2c, 0xcb]);
        body.extend_from_slice(&1.5f64.to_bits().to_be_bytes());
        body.extend_from_slice(&[0xc0, 0x93, 0xff, 0x07, 0xa1, b'x']);
        let rows = stored_rows(&body).unwrap();
        let key = SeriesKey {
            measurement: "m".into(),
            tags: vec![("h".into(), "a".into())],
        };
        let first = &rows[&(key.clone(), 300)];
        assert_eq!(first.get("v"), Some(&Value::Float(1.5)));
        assert!(!first.contains_key("w"), "null is no field");
        let second = &rows[&(key, -1)];
        assert_eq!(second.get("v"), Some(&Value::Small(7)));
        assert_eq!(second.get("w"), Some(&Value::Str("x".into())));
    }

    #[test]
    fn refuses_truncated_and_hostile_msgpack() {
        assert!(stored_rows(&[0x81, 0xa7, b'r']).is_err());
        // An array claiming 2^32-1 items in five bytes allocates nothing big.
        assert!(stored_rows(&[0xdd, 0xff, 0xff, 0xff, 0xff]).is_err());
        let deep = vec![0x91; 100];
        assert!(stored_rows(&deep).is_err());
    }

    #[test]
    fn types_decide_where_values_agree() {
        assert_eq!(
            same_value(&FieldValue::Integer(1), &Value::Float(1.0)),
            None
        );
        assert_eq!(same_value(&FieldValue::Float(1.0), &Value::Small(1)), None);
        assert_eq!(
            same_value(&FieldValue::Integer(-3), &Value::Int(-3)),
            Some(true)
        );
        assert_eq!(
            same_value(&FieldValue::Unsigned(300), &Value::Uint(300)),
            Some(true)
        );
        assert_eq!(
            same_value(&FieldValue::Float(2.0), &Value::Float(1.0)),
            Some(false)
        );
    }

    #[test]
    fn last_wins_and_types_decide() {
        let body = "m v=1i 1\nm v=2i 1\nm v=3,v=4 2\nm v=5i 3\n";
        let points: Vec<_> = lines(body.as_bytes(), ParseOptions::default())
            .map(|l| l.result.unwrap())
            .collect();
        let candidates: Vec<Candidate> = points
            .iter()
            .map(|point| Candidate {
                point,
                time_ns: point.timestamp().unwrap(),
            })
            .collect();
        let keys: Vec<SeriesKey> = points.iter().map(SeriesKey::of).collect();
        let last_writer = last_writers(&candidates, &keys);
        let row = |value: Value| Row::from([("v".to_owned(), value)]);
        let rows = HashMap::from([
            ((keys[0].clone(), 1), row(Value::Small(2))),
            ((keys[0].clone(), 2), row(Value::Float(4.0))),
            // A field type conflict: the other type stayed.
            ((keys[0].clone(), 3), row(Value::Float(5.0))),
        ]);
        assert_eq!(
            judge(&candidates, &keys, &rows, &last_writer),
            [true, true, true, false]
        );
    }

    #[test]
    fn one_statement_per_measurement_and_cluster_of_times() {
        let body = "a,h=1 v=1 10\na,h=2 v=1 20\na v=1 5000000000\nb\\ \"x v=1 10\n";
        let points: Vec<_> = lines(body.as_bytes(), ParseOptions::default())
            .map(|l| l.result.unwrap())
            .collect();
        let candidates: Vec<Candidate> = points
            .iter()
            .map(|point| Candidate {
                point,
                time_ns: point.timestamp().unwrap(),
            })
            .collect();
        let keys: Vec<SeriesKey> = points.iter().map(SeriesKey::of).collect();
        let query = select_statements(&keys, &candidates).unwrap();
        let mut statements: Vec<&str> = query.split("; ").collect();
        statements.sort();
        assert_eq!(
            statements,
            [
                "SELECT * FROM \"a\" WHERE time >= 10 AND time <= 20 GROUP BY *",
                "SELECT * FROM \"a\" WHERE time >= 5000000000 AND time <= 5000000000 GROUP BY *",
                "SELECT * FROM \"b \\\"x\" WHERE time >= 10 AND time <= 10 GROUP BY *",
            ]
        );
    }
}
