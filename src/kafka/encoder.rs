//! Turning the points InfluxDB accepted into Kafka records.
//!
//! All records of one write share one buffer; a record is a pair of ranges into it,
//! so encoding a request costs a handful of allocations, not two per point.

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

    fn topic_index(&mut self, topic: String) -> usize {
        match self.topics.iter().position(|t| *t == topic) {
            Some(index) => index,
            None => {
                self.topics.push(topic);
                self.topics.len() - 1
            }
        }
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
                Some(topic) if batch.topics.is_empty() => batch.topic_index(topic.clone()),
                Some(_) => 0,
                None => {
                    let measurement = tee.point.measurement();
                    match &last_measurement {
                        Some((last, index)) if *last == measurement => *index,
                        _ => {
                            let index = batch.topic_index(self.topic.render(vars, &measurement));
                            last_measurement = Some((measurement, index));
                            index
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
        self.write_batches(&mut batch, &batch_members);
        batch
    }

    /// Chunks each topic's lines, in input order, into records of at most `batch_max_bytes`.
    fn write_batches(&self, batch: &mut RecordBatch, members: &[(usize, &TeePoint<'_, '_>)]) {
        for topic in 0..batch.topics.len() {
            let mut chunk: Option<Range<usize>> = None;
            for (_, tee) in members.iter().filter(|(t, _)| *t == topic) {
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

/// The client's own bytes up to the end of the field set, then the nanosecond time.
fn write_line(out: &mut Vec<u8>, tee: &TeePoint<'_, '_>) {
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
