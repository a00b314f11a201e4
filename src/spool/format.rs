//! The on-disk format of the spool: segment files of CRC-checked, sequence-numbered frames.
//!
//! A segment starts with an 8-byte magic, then frames back to back:
//!
//! ```text
//! len: u32 LE | crc: u32 LE | seq: u64 LE | appended_at_ns: i64 LE | payload: len bytes
//! ```
//!
//! `crc` is CRC-32 (IEEE) over `seq`, `appended_at_ns` and the payload, so a frame
//! torn by a crash, or a payload glued to the wrong header, fails the check. A
//! payload is one write's [`Entry`]: its headers and its Kafka records.

use std::ops::Range;

use crate::kafka::RecordBatch;

/// First bytes of every segment file; the last byte is the format version.
pub const SEGMENT_MAGIC: &[u8; 8] = b"ITSPOOL\x01";
/// Bytes before a frame's payload.
pub const FRAME_HEADER: usize = 24;
/// Upper bound of one payload: larger lengths are treated as corruption, not allocated.
pub const MAX_PAYLOAD: usize = 1 << 30;
/// Marks a record without a key in the entry encoding.
const NO_KEY: u32 = u32::MAX;

/// One write, encoded for the spool and not yet given a sequence number.
///
/// The bytes start with room for the frame header, so the appender fills the header
/// in place and writes the frame with one copy-free `write`. The payload's CRC is
/// computed here, on the request's task, so the single appender thread only folds
/// in the header.
pub struct EncodedEntry {
    pub(crate) bytes: Vec<u8>,
    pub(crate) payload_crc: crc32fast::Hasher,
    /// Kafka records in the entry, for the record gauges and counters.
    pub records: usize,
}

impl EncodedEntry {
    /// Encodes a write's records and its per-write headers.
    pub fn new(batch: &RecordBatch, headers: &[(&str, &str)]) -> EncodedEntry {
        EncodedEntry::from_records(|| batch.iter().map(|r| (r.topic, r.key, r.value)), headers)
    }

    /// Encodes any records as `(topic, key, value)`, listed by `records` (called twice:
    /// once to size the buffer, once to fill it); [`EncodedEntry::new`] for a write.
    pub fn from_records<'r, F, I>(records: F, headers: &[(&str, &str)]) -> EncodedEntry
    where
        F: Fn() -> I,
        I: Iterator<Item = (&'r str, Option<&'r [u8]>, &'r [u8])>,
    {
        let mut topics: Vec<&str> = Vec::new();
        let mut count = 0usize;
        let mut size = FRAME_HEADER + 8;
        for (key, value) in headers {
            size += 6 + key.len() + value.len();
        }
        for (topic, key, value) in records() {
            count += 1;
            size += 10 + key.map_or(0, <[u8]>::len) + value.len();
            if !topics.contains(&topic) {
                topics.push(topic);
                size += 2 + topic.len();
            }
        }
        let mut out = Vec::with_capacity(size);
        out.resize(FRAME_HEADER, 0);
        put_u16(&mut out, headers.len());
        for (key, value) in headers {
            put_u16(&mut out, key.len());
            out.extend_from_slice(key.as_bytes());
            put_u32(&mut out, value.len());
            out.extend_from_slice(value.as_bytes());
        }
        put_u16(&mut out, topics.len());
        for topic in &topics {
            put_u16(&mut out, topic.len());
            out.extend_from_slice(topic.as_bytes());
        }
        put_u32(&mut out, count);
        let mut last_topic = (0usize, "");
        for (topic, key, value) in records() {
            let index = if topic == last_topic.1 {
                last_topic.0
            } else {
                let index = topics.iter().position(|t| *t == topic).unwrap_or(0);
                last_topic = (index, topic);
                index
            };
            put_u16(&mut out, index);
            match key {
                Some(key) => {
                    put_u32(&mut out, key.len());
                    out.extend_from_slice(key);
                }
                None => out.extend_from_slice(&NO_KEY.to_le_bytes()),
            }
            put_u32(&mut out, value.len());
            out.extend_from_slice(value);
        }
        let mut payload_crc = crc32fast::Hasher::new();
        payload_crc.update(&out[FRAME_HEADER..]);
        EncodedEntry {
            bytes: out,
            payload_crc,
            records: count,
        }
    }

    /// Bytes the frame takes on disk.
    pub fn frame_len(&self) -> usize {
        self.bytes.len()
    }

    /// Fills in the frame header for `seq`; the bytes are then the complete frame.
    pub(crate) fn seal(&mut self, seq: u64, appended_at_ns: i64) {
        let payload_len = (self.bytes.len() - FRAME_HEADER) as u32;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&seq.to_le_bytes());
        crc.update(&appended_at_ns.to_le_bytes());
        crc.combine(&self.payload_crc);
        self.bytes[0..4].copy_from_slice(&payload_len.to_le_bytes());
        self.bytes[4..8].copy_from_slice(&crc.finalize().to_le_bytes());
        self.bytes[8..16].copy_from_slice(&seq.to_le_bytes());
        self.bytes[16..24].copy_from_slice(&appended_at_ns.to_le_bytes());
    }
}

fn put_u16(out: &mut Vec<u8>, value: usize) {
    // Topic names, header keys and counts of topics are far below 64 KiB; clamp, never wrap.
    out.extend_from_slice(&(value.min(u16::MAX as usize) as u16).to_le_bytes());
}

fn put_u32(out: &mut Vec<u8>, value: usize) {
    out.extend_from_slice(&(value.min(u32::MAX as usize - 1) as u32).to_le_bytes());
}

/// A frame header as read from disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub len: u32,
    pub crc: u32,
    pub seq: u64,
    pub appended_at_ns: i64,
}

impl FrameHeader {
    pub fn parse(bytes: &[u8; FRAME_HEADER]) -> FrameHeader {
        let u32_at =
            |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&bytes[8..16]);
        let mut time = [0u8; 8];
        time.copy_from_slice(&bytes[16..24]);
        FrameHeader {
            len: u32_at(0),
            crc: u32_at(4),
            seq: u64::from_le_bytes(seq),
            appended_at_ns: i64::from_le_bytes(time),
        }
    }

    /// Whether `payload` belongs to this header, untorn and unaltered.
    pub fn checks(&self, payload: &[u8]) -> bool {
        let mut crc = crc32fast::Hasher::new();
        crc.update(&self.seq.to_le_bytes());
        crc.update(&self.appended_at_ns.to_le_bytes());
        crc.update(payload);
        payload.len() == self.len as usize && crc.finalize() == self.crc
    }
}

/// A decoding failure: the payload passed its CRC but is not a valid entry.
#[derive(Debug, thiserror::Error)]
#[error("malformed spool entry: {0}")]
pub struct MalformedEntry(&'static str);

/// A decoded entry: ranges into the payload it was read from.
#[derive(Debug)]
pub struct Entry {
    pub seq: u64,
    pub appended_at_ns: i64,
    payload: Vec<u8>,
    headers: Vec<(Range<usize>, Range<usize>)>,
    topics: Vec<Range<usize>>,
    records: Vec<(usize, Option<Range<usize>>, Range<usize>)>,
}

/// A record borrowed from an [`Entry`].
pub struct EntryRecord<'e> {
    pub index: usize,
    pub topic: &'e str,
    pub key: Option<&'e [u8]>,
    pub value: &'e [u8],
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<Range<usize>, MalformedEntry> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or(MalformedEntry(what))?;
        let range = self.at..end;
        self.at = end;
        Ok(range)
    }
    fn u16(&mut self, what: &'static str) -> Result<usize, MalformedEntry> {
        let r = self.take(2, what)?;
        Ok(u16::from_le_bytes([self.bytes[r.start], self.bytes[r.start + 1]]) as usize)
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, MalformedEntry> {
        let r = self.take(4, what)?;
        let b = &self.bytes[r];
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn str(&mut self, n: usize, what: &'static str) -> Result<Range<usize>, MalformedEntry> {
        let r = self.take(n, what)?;
        std::str::from_utf8(&self.bytes[r.clone()]).map_err(|_| MalformedEntry(what))?;
        Ok(r)
    }
}

/// The number of Kafka records in a payload, without decoding the records.
pub fn peek_record_count(payload: &[u8]) -> Result<usize, MalformedEntry> {
    let mut c = Cursor {
        bytes: payload,
        at: 0,
    };
    for _ in 0..c.u16("header count")? {
        let key_len = c.u16("header key length")?;
        c.take(key_len, "header key")?;
        let value_len = c.u32("header value length")? as usize;
        c.take(value_len, "header value")?;
    }
    for _ in 0..c.u16("topic count")? {
        let len = c.u16("topic length")?;
        c.take(len, "topic")?;
    }
    Ok(c.u32("record count")? as usize)
}

impl Entry {
    /// Decodes a payload whose frame passed its CRC.
    pub fn decode(header: &FrameHeader, payload: Vec<u8>) -> Result<Entry, MalformedEntry> {
        let mut c = Cursor {
            bytes: &payload,
            at: 0,
        };
        let header_count = c.u16("header count")?;
        let mut headers = Vec::with_capacity(header_count);
        for _ in 0..header_count {
            let key_len = c.u16("header key length")?;
            let key = c.str(key_len, "header key")?;
            let value_len = c.u32("header value length")? as usize;
            let value = c.str(value_len, "header value")?;
            headers.push((key, value));
        }
        let topic_count = c.u16("topic count")?;
        let mut topics = Vec::with_capacity(topic_count);
        for _ in 0..topic_count {
            let len = c.u16("topic length")?;
            topics.push(c.str(len, "topic")?);
        }
        let record_count = c.u32("record count")? as usize;
        let mut records = Vec::with_capacity(record_count.min(payload.len() / 10 + 1));
        for _ in 0..record_count {
            let topic = c.u16("record topic")?;
            if topic >= topics.len() {
                return Err(MalformedEntry("record topic index"));
            }
            let key = match c.u32("record key length")? {
                NO_KEY => None,
                len => Some(c.take(len as usize, "record key")?),
            };
            let value_len = c.u32("record value length")? as usize;
            let value = c.take(value_len, "record value")?;
            records.push((topic, key, value));
        }
        if c.at != payload.len() {
            return Err(MalformedEntry("trailing bytes"));
        }
        Ok(Entry {
            seq: header.seq,
            appended_at_ns: header.appended_at_ns,
            payload,
            headers,
            topics,
            records,
        })
    }

    /// The payload buffer, for reuse.
    pub fn into_payload(self) -> Vec<u8> {
        self.payload
    }

    pub fn record_count(&self) -> usize {
        self.records.len()
    }

    /// Bytes of the payload, for in-flight accounting.
    pub fn payload_len(&self) -> usize {
        self.payload.len()
    }

    fn text(&self, range: &Range<usize>) -> &str {
        // Validated as UTF-8 by `decode`.
        std::str::from_utf8(&self.payload[range.clone()]).unwrap_or_default()
    }

    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers
            .iter()
            .map(|(k, v)| (self.text(k), self.text(v)))
    }

    pub fn header(&self, key: &str) -> Option<&str> {
        self.headers().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    pub fn records(&self) -> impl Iterator<Item = EntryRecord<'_>> {
        self.records
            .iter()
            .enumerate()
            .map(|(index, (topic, key, value))| EntryRecord {
                index,
                topic: self.text(&self.topics[*topic]),
                key: key.clone().map(|k| &self.payload[k]),
                value: &self.payload[value.clone()],
            })
    }
}

/// The `tee-id` of one record: stable across replays, unique per instance.
pub fn tee_id(instance: &str, seq: u64, index: usize) -> String {
    format!("{instance}-{seq}-{index}")
}
