//! Turning the points InfluxDB accepted into Kafka records.
//!
//! All records of one write share one buffer; a record is a pair of ranges into it,
//! so encoding a request costs a handful of allocations, not two per point.

use std::collections::HashMap;
use std::ops::Range;

use crate::config::RecordFormat;
use crate::line_protocol::{FieldValue, Point};

use super::topic::{TopicTemplate, TopicVars};

/// One accepted point, as the encoder needs it.
pub struct TeePoint<'a, 'p> {
    /// The line as the client sent it, from the measurement to the end of the field set.
    pub line_head: &'a [u8],
    pub point: &'p Point<'a>,
    /// The point's time in nanoseconds: its own, or the stamp the proxy gave it.
    pub time_ns: i64,
}

/// Where one record's topic, key and value are.
#[derive(Debug, Clone)]
struct EncodedRecord {
    topic: usize,
    key: Option<Range<usize>>,
    value: Range<usize>,
}

/// The records of one write.
#[derive(Debug, Default)]
pub struct RecordBatch {
    data: Vec<u8>,
    records: Vec<EncodedRecord>,
    topics: Vec<String>,
}

/// A record borrowed from a [`RecordBatch`].
pub struct RecordRef<'b> {
    pub topic: &'b str,
    pub key: Option<&'b [u8]>,
    pub value: &'b [u8],
}

impl RecordBatch {
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = RecordRef<'_>> {
        self.records.iter().map(|r| RecordRef {
            topic: &self.topics[r.topic],
            key: r.key.clone().map(|k| &self.data[k]),
            value: &self.data[r.value.clone()],
        })
    }

    /// The distinct topics, in order of first use; records refer to them by index.
    pub fn topics(&self) -> &[String] {
        &self.topics
    }

    /// Records as `(topic index, key, value)`.
    pub fn indexed(&self) -> impl Iterator<Item = (usize, Option<&[u8]>, &[u8])> {
        self.records.iter().map(|r| {
            (
                r.topic,
                r.key.clone().map(|k| &self.data[k]),
                &self.data[r.value.clone()],
            )
        })
    }
}

/// Topic names of one write and their indices: one hash lookup per distinct
/// measurement run, so a write with N measurements costs O(N), not O(N²).
#[derive(Default)]
struct TopicIndex {
    by_name: HashMap<String, usize>,
    #[cfg(test)]
    lookups: usize,
}

impl TopicIndex {
    fn index(&mut self, batch: &mut RecordBatch, topic: String) -> usize {
        #[cfg(test)]
        {
            self.lookups += 1;
        }
        if let Some(index) = self.by_name.get(&topic) {
            return *index;
        }
        batch.topics.push(topic.clone());
        self.by_name.insert(topic, batch.topics.len() - 1);
        batch.topics.len() - 1
    }
}

/// Encodes points in the configured record format.
#[derive(Debug, Clone)]
pub struct Encoder {
    format: RecordFormat,
    topic: TopicTemplate,
    /// Nanoseconds per unit of the `timestamp` of `json` records.
    json_timestamp_divisor: i64,
    batch_max_bytes: usize,
}

impl Encoder {
    pub fn new(
        format: RecordFormat,
        topic: TopicTemplate,
        json_timestamp_divisor: i64,
        batch_max_bytes: usize,
    ) -> Self {
        Encoder {
            format,
            topic,
            json_timestamp_divisor: json_timestamp_divisor.max(1),
            batch_max_bytes,
        }
    }

    pub fn encode(&self, vars: &TopicVars<'_>, points: &[TeePoint<'_, '_>]) -> RecordBatch {
        self.encode_counted(vars, points).0
    }

    /// [`Encoder::encode`], also returning how many topic lookups it made (tests bound the work).
    fn encode_counted(
        &self,
        vars: &TopicVars<'_>,
        points: &[TeePoint<'_, '_>],
    ) -> (RecordBatch, TopicIndex) {
        let mut index = TopicIndex::default();
        let mut batch = RecordBatch {
            data: Vec::with_capacity(points.iter().map(|p| p.line_head.len() * 2 + 48).sum()),
            records: Vec::with_capacity(points.len()),
            topics: Vec::new(),
        };
        let single_topic = (!self.topic.uses_measurement()).then(|| self.topic.render(vars, ""));
        let mut last_measurement: Option<(std::borrow::Cow<'_, str>, usize)> = None;
        let mut batch_members: Vec<(usize, &TeePoint<'_, '_>)> = Vec::new();
        for tee in points {
            let topic = match &single_topic {
                Some(topic) if batch.topics.is_empty() => index.index(&mut batch, topic.clone()),
                Some(_) => 0,
                None => {
                    let measurement = tee.point.measurement();
                    match &last_measurement {
                        Some((last, index)) if *last == measurement => *index,
                        _ => {
                            let topic =
                                index.index(&mut batch, self.topic.render(vars, &measurement));
                            last_measurement = Some((measurement, topic));
                            topic
                        }
                    }
                }
            };
            match self.format {
                RecordFormat::Line => {
                    let key = write_range(&mut batch.data, |out| tee.point.write_series_key(out));
                    let value = write_range(&mut batch.data, |out| write_line(out, tee));
                    batch.records.push(EncodedRecord {
                        topic,
                        key: Some(key),
                        value,
                    });
                }
                RecordFormat::Json => {
                    let key = write_range(&mut batch.data, |out| tee.point.write_series_key(out));
                    let value = write_range(&mut batch.data, |out| self.write_json(out, tee));
                    batch.records.push(EncodedRecord {
                        topic,
                        key: Some(key),
                        value,
                    });
                }
                RecordFormat::Batch => batch_members.push((topic, tee)),
            }
        }
        batch_members.sort_by_key(|(topic, _)| *topic);
        self.write_batches(&mut batch, &batch_members);
        (batch, index)
    }

    /// Chunks each topic's lines, in input order, into records of at most `batch_max_bytes`.
    fn write_batches(&self, batch: &mut RecordBatch, members: &[(usize, &TeePoint<'_, '_>)]) {
        // `members` is sorted by topic, stably: each topic's lines stay in input order
        // and are found without scanning every member per topic (quadratic).
        for group in members.chunk_by(|a, b| a.0 == b.0) {
            let topic = group[0].0;
            let mut chunk: Option<Range<usize>> = None;
            for (_, tee) in group {
                let start = match chunk.take() {
                    Some(open)
                        if open.len() + 1 + tee.line_head.len() + 21 <= self.batch_max_bytes =>
                    {
                        batch.data.push(b'\n');
                        open.start
                    }
                    Some(full) => {
                        batch.records.push(EncodedRecord {
                            topic,
                            key: None,
                            value: full,
                        });
                        batch.data.len()
                    }
                    None => batch.data.len(),
                };
                write_line(&mut batch.data, tee);
                chunk = Some(start..batch.data.len());
            }
            if let Some(last) = chunk {
                batch.records.push(EncodedRecord {
                    topic,
                    key: None,
                    value: last,
                });
            }
        }
    }

    /// About how many bytes the spool entry of these points will take, from the parsed
    /// lines alone: reserved before the write is forwarded, trued up after encoding.
    /// Exact for `line` up to the digits of the time; `json` assumes no escapes.
    pub fn estimate_entry_bytes<'p, 'a: 'p>(
        &self,
        points: impl Iterator<Item = &'p Point<'a>>,
    ) -> u64 {
        // Frame header, version, the write's headers, the topic table.
        let mut bytes: u64 = 1024;
        let mut last_measurement: &[u8] = &[];
        let per_measurement = self.topic.uses_measurement();
        for point in points {
            let head = point.field_set_end() as u64;
            let key = point.series_key_len() as u64;
            // Index, key length and value length, then a time of up to 20 characters.
            bytes += 12
                + match self.format {
                    RecordFormat::Line => key + head + 21,
                    RecordFormat::Batch => head + 21,
                    RecordFormat::Json => key + 2 * head + 64,
                }
                // Rewritten without its `time` field, a line's values are escaped and
                // formatted anew, which can make it longer than the client's bytes.
                + if self.format != RecordFormat::Json && point.has_time_field() {
                    2 * head
                } else {
                    0
                };
            if per_measurement {
                let measurement = &point.raw()[..point.series_key_len().min(point.raw().len())];
                let measurement = measurement.split(|b| *b == b',').next().unwrap_or_default();
                if measurement != last_measurement {
                    // The topic's name in the entry's table: the template's other parts
                    // are rarely longer than 64 bytes.
                    bytes += 68 + measurement.len() as u64;
                    last_measurement = measurement;
                }
            }
        }
        bytes
    }

    /// Telegraf's JSON serializer shape: keys sorted, as Go's encoding/json sorts map keys.
    fn write_json(&self, out: &mut Vec<u8>, tee: &TeePoint<'_, '_>) {
        let point = tee.point;
        // InfluxDB (1.x and 2.x) skips a field named `time` and stores the others.
        let mut fields: Vec<_> = point.fields().filter(|(key, _)| key != "time").collect();
        // A later duplicate field wins, as it does when Telegraf builds a metric.
        fields.reverse();
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        fields.dedup_by(|later, earlier| later.0 == earlier.0);
        let mut tags: Vec<_> = point.tags().collect();
        tags.sort_by(|a, b| a.0.cmp(&b.0));

        out.extend_from_slice(b"{\"fields\":{");
        for (i, (key, value)) in fields.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_json_string(out, key);
            out.push(b':');
            match value {
                FieldValue::Float(v) => {
                    let _ = serde_json::to_writer(&mut *out, v);
                }
                FieldValue::Integer(v) => {
                    out.extend_from_slice(itoa::Buffer::new().format(*v).as_bytes())
                }
                FieldValue::Unsigned(v) => {
                    out.extend_from_slice(itoa::Buffer::new().format(*v).as_bytes())
                }
                FieldValue::String(v) => write_json_string(out, v),
                FieldValue::Boolean(v) => {
                    out.extend_from_slice(if *v { b"true" } else { b"false" })
                }
            }
        }
        out.extend_from_slice(b"},\"name\":");
        write_json_string(out, &point.measurement());
        out.extend_from_slice(b",\"tags\":{");
        for (i, (key, value)) in tags.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_json_string(out, key);
            out.push(b':');
            write_json_string(out, value);
        }
        out.extend_from_slice(b"},\"timestamp\":");
        let timestamp = tee.time_ns.div_euclid(self.json_timestamp_divisor);
        out.extend_from_slice(itoa::Buffer::new().format(timestamp).as_bytes());
        out.push(b'}');
    }
}

/// The client's own bytes up to the end of the field set, then the nanosecond time;
/// a point with a `time` field is written as InfluxDB stored it, without that field.
fn write_line(out: &mut Vec<u8>, tee: &TeePoint<'_, '_>) {
    if tee.point.has_time_field() {
        tee.point.write_without_time_fields(out, tee.time_ns);
        return;
    }
    out.extend_from_slice(tee.line_head);
    out.push(b' ');
    out.extend_from_slice(itoa::Buffer::new().format(tee.time_ns).as_bytes());
}

fn write_range(data: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) -> Range<usize> {
    let start = data.len();
    write(data);
    start..data.len()
}

fn write_json_string(out: &mut Vec<u8>, value: &str) {
    // serde_json escapes exactly what JSON requires; writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::line_protocol::{self, ParseOptions};
    use crate::spool::format::{EncodedEntry, Entry, FrameHeader, FRAME_HEADER};

    fn encode(format: RecordFormat, body: &[u8]) -> (RecordBatch, TopicIndex) {
        let lines: Vec<_> = line_protocol::lines(body, ParseOptions::default()).collect();
        let points: Vec<TeePoint<'_, '_>> = lines
            .iter()
            .map(|line| {
                let point = line.result.as_ref().unwrap();
                TeePoint {
                    line_head: &body[line.span.start..line.span.start + point.field_set_end()],
                    point,
                    time_ns: point.timestamp().unwrap_or(0),
                }
            })
            .collect();
        let encoder = Encoder::new(
            format,
            TopicTemplate::parse("t.{measurement}").unwrap(),
            1,
            1 << 20,
        );
        let estimate = encoder.estimate_entry_bytes(points.iter().map(|p| p.point));
        let (batch, index) = encoder.encode_counted(&TopicVars::default(), &points);
        let entry = EncodedEntry::new(&batch, &[("db", "d")]).unwrap();
        if format != RecordFormat::Json {
            assert!(
                estimate >= entry.frame_len() as u64,
                "{format:?}: estimate {estimate} < {}",
                entry.frame_len()
            );
        }
        (batch, index)
    }

    /// InfluxDB skips a field named `time` and stores the others: so do the records (the
    /// other fields then written canonically, `2` as `2.0`).
    #[test]
    fn records_leave_out_a_time_field_as_influxdb_does() {
        let body =
            b"m,t=a time=1i,v=2 5\nm,t=a v=1,timer=3i 6\nm,t=a\\ b x=\"time=1\",time=\"x\" 7\n";
        for format in [RecordFormat::Line, RecordFormat::Batch] {
            let (batch, _) = encode(format, body);
            let values: Vec<&[u8]> = batch.iter().map(|r| r.value).collect();
            let expected: &[&[u8]] = match format {
                RecordFormat::Line => &[
                    b"m,t=a v=2.0 5",
                    b"m,t=a v=1,timer=3i 6",
                    b"m,t=a\\ b x=\"time=1\" 7",
                ],
                _ => &[b"m,t=a v=2.0 5\nm,t=a v=1,timer=3i 6\nm,t=a\\ b x=\"time=1\" 7"],
            };
            assert_eq!(values, expected, "{format:?}");
        }
    }

    /// 80,000 measurements in one write under `{measurement}`: one topic lookup per
    /// point and one entry of 80,000 topics (more than a u16 holds), with nothing clamped.
    #[test]
    fn many_measurements_cost_linear_work_and_encode_losslessly() {
        let n = 80_000usize;
        let mut body = Vec::new();
        // Interleaved, so no two neighbours share a measurement.
        for round in 0..2 {
            for i in 0..n / 2 {
                body.extend_from_slice(format!("m{i},r={round} v={i}i {}\n", i + 1).as_bytes());
            }
        }
        for format in [RecordFormat::Line, RecordFormat::Batch, RecordFormat::Json] {
            let (batch, index) = encode(format, &body);
            assert_eq!(batch.topics().len(), n / 2);
            // One hash lookup per point: the old scan of the topic list made
            // n²/4 ≈ 1.6e9 string comparisons here.
            assert!(index.lookups <= n, "{format:?}: {} lookups", index.lookups);
            let mut entry = EncodedEntry::new(&batch, &[("db", "d")]).unwrap();
            entry.seal(1, 2);
            let header = FrameHeader::parse(entry.bytes[..FRAME_HEADER].try_into().unwrap());
            let decoded = Entry::decode(&header, entry.bytes[FRAME_HEADER..].to_vec()).unwrap();
            assert_eq!(decoded.topics().count(), n / 2);
            assert_eq!(decoded.record_count(), batch.len());
            let last = decoded.records().last().unwrap();
            assert_eq!(last.topic, format!("t.m{}", n / 2 - 1));
        }
        // `batch`: each topic's lines in input order, one record per topic here.
        let (batch, _) = encode(RecordFormat::Batch, &body);
        let first = batch.iter().next().unwrap();
        assert_eq!(first.topic, "t.m0");
        assert_eq!(first.value, b"m0,r=0 v=0i 1\nm0,r=1 v=0i 1");
    }
}
