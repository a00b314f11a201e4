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
/// First two bytes of a version-2 entry. A version-1 entry starts with its header
/// count as a `u16`, which is 7 for every entry ever written, never `0xFFFF`.
const ENTRY_V2_MARK: [u8; 2] = [0xFF, 0xFF];
const ENTRY_V2: u16 = 2;

/// A write whose entry would exceed [`MAX_PAYLOAD`]: readers would take it for corruption.
#[derive(Debug, thiserror::Error)]
#[error(
    "the write's spool entry would take {0} bytes, more than the {MAX_PAYLOAD} one entry may hold"
)]
pub struct EntryTooLarge(pub usize);

/// One write, encoded for the spool and not yet given a sequence number.
///
/// The bytes start with room for the frame header, so the appender fills the header
/// in place and writes the frame with one copy-free `write`. The payload's CRC is
/// computed here, on the request's task, so the single appender thread only folds
/// in the header.
///
/// Entry encoding, version 2 (every count and length a `u32` LE, so nothing is
/// ever clamped):
///
/// ```text
/// 0xFFFF | version: u16 = 2 | headers: n, (key len, key, value len, value)* |
/// topics: n, (len, name)* | records: n, (topic index, key len or u32::MAX, key, value len, value)*
/// ```
///
/// Version 1 (`u16` header count, key length, topic count, topic length and record
/// topic index; no mark) is still read, so a spool written by an older proxy ships.
pub struct EncodedEntry {
    pub(crate) bytes: Vec<u8>,
    pub(crate) payload_crc: crc32fast::Hasher,
    /// Kafka records in the entry, for the record gauges and counters.
    pub records: usize,
}

impl EncodedEntry {
    /// Encodes a write's records and its per-write headers. The batch's topics are
    /// already distinct and indexed, so this is one pass with no lookups.
    pub fn new(
        batch: &RecordBatch,
        headers: &[(&str, &str)],
    ) -> Result<EncodedEntry, EntryTooLarge> {
        let topics = batch.topics();
        let mut size = FRAME_HEADER + 4 + headers_size(headers) + 4 + 4;
        size += topics.iter().map(|t| 4 + t.len()).sum::<usize>();
        for (_, key, value) in batch.indexed() {
            size += 12 + key.map_or(0, <[u8]>::len) + value.len();
        }
        let mut out = start_entry(size, headers)?;
        put_len(&mut out, topics.len());
        for topic in topics {
            put_str(&mut out, topic.as_bytes());
        }
        put_len(&mut out, batch.len());
        for (topic, key, value) in batch.indexed() {
            put_record(&mut out, topic, key, value);
        }
        Ok(EncodedEntry::finish(out, batch.len()))
    }

    /// Encodes any records as `(topic, key, value)`, listed by `records` (called twice:
    /// once to size the buffer, once to fill it); [`EncodedEntry::new`] for a write.
    pub fn from_records<'r, F, I>(
        records: F,
        headers: &[(&str, &str)],
    ) -> Result<EncodedEntry, EntryTooLarge>
    where
        F: Fn() -> I,
        I: Iterator<Item = (&'r str, Option<&'r [u8]>, &'r [u8])>,
    {
        let mut topics: Vec<&str> = Vec::new();
        let mut index: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        let mut count = 0usize;
        let mut size = FRAME_HEADER + 4 + headers_size(headers) + 4 + 4;
        for (topic, key, value) in records() {
            count += 1;
            size += 12 + key.map_or(0, <[u8]>::len) + value.len();
            index.entry(topic).or_insert_with(|| {
                topics.push(topic);
                size += 4 + topic.len();
                topics.len() - 1
            });
        }
        let mut out = start_entry(size, headers)?;
        put_len(&mut out, topics.len());
        for topic in &topics {
            put_str(&mut out, topic.as_bytes());
        }
        put_len(&mut out, count);
        for (topic, key, value) in records() {
            put_record(&mut out, index.get(topic).copied().unwrap_or(0), key, value);
        }
        Ok(EncodedEntry::finish(out, count))
    }

    fn finish(out: Vec<u8>, records: usize) -> EncodedEntry {
        let mut payload_crc = crc32fast::Hasher::new();
        payload_crc.update(&out[FRAME_HEADER..]);
        EncodedEntry {
            bytes: out,
            payload_crc,
            records,
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

fn headers_size(headers: &[(&str, &str)]) -> usize {
    headers.iter().map(|(k, v)| 8 + k.len() + v.len()).sum()
}

/// The frame header's room, the version mark and the headers, once the whole entry
/// is known to fit: every length below [`MAX_PAYLOAD`] fits a `u32`.
fn start_entry(size: usize, headers: &[(&str, &str)]) -> Result<Vec<u8>, EntryTooLarge> {
    if size - FRAME_HEADER > MAX_PAYLOAD {
        return Err(EntryTooLarge(size - FRAME_HEADER));
    }
    let mut out = Vec::with_capacity(size);
    out.resize(FRAME_HEADER, 0);
    out.extend_from_slice(&ENTRY_V2_MARK);
    out.extend_from_slice(&ENTRY_V2.to_le_bytes());
    put_len(&mut out, headers.len());
    for (key, value) in headers {
        put_str(&mut out, key.as_bytes());
        put_str(&mut out, value.as_bytes());
    }
    Ok(out)
}

fn put_record(out: &mut Vec<u8>, topic: usize, key: Option<&[u8]>, value: &[u8]) {
    put_len(out, topic);
    match key {
        Some(key) => put_str(out, key),
        None => out.extend_from_slice(&NO_KEY.to_le_bytes()),
    }
    put_str(out, value);
}

/// A length or count; callers checked the entry against [`MAX_PAYLOAD`], so it fits.
fn put_len(out: &mut Vec<u8>, value: usize) {
    out.extend_from_slice(&(value as u32).to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, bytes: &[u8]) {
    put_len(out, bytes.len());
    out.extend_from_slice(bytes);
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

/// The widths of one entry version's counts: version 1 used `u16` where version 2 uses `u32`.
#[derive(Clone, Copy)]
struct Layout {
    /// Header count, header key length, topic count, topic length, record topic index.
    wide: bool,
}

impl Layout {
    /// Reads the version mark, if any, and says how the rest is laid out.
    fn detect(c: &mut Cursor<'_>) -> Result<Layout, MalformedEntry> {
        if c.bytes.get(..2) != Some(&ENTRY_V2_MARK[..]) {
            return Ok(Layout { wide: false });
        }
        c.take(2, "version mark")?;
        if c.u16("version")? == usize::from(ENTRY_V2) {
            Ok(Layout { wide: true })
        } else {
            Err(MalformedEntry("unknown entry version"))
        }
    }

    fn count(self, c: &mut Cursor<'_>, what: &'static str) -> Result<usize, MalformedEntry> {
        if self.wide {
            Ok(c.u32(what)? as usize)
        } else {
            c.u16(what)
        }
    }
}

/// The number of Kafka records in a payload, without decoding the records.
pub fn peek_record_count(payload: &[u8]) -> Result<usize, MalformedEntry> {
    let mut c = Cursor {
        bytes: payload,
        at: 0,
    };
    let layout = Layout::detect(&mut c)?;
    for _ in 0..layout.count(&mut c, "header count")? {
        let key_len = layout.count(&mut c, "header key length")?;
        c.take(key_len, "header key")?;
        let value_len = c.u32("header value length")? as usize;
        c.take(value_len, "header value")?;
    }
    for _ in 0..layout.count(&mut c, "topic count")? {
        let len = layout.count(&mut c, "topic length")?;
        c.take(len, "topic")?;
    }
    Ok(c.u32("record count")? as usize)
}

impl Entry {
    /// Decodes a payload whose frame passed its CRC (either entry version).
    pub fn decode(header: &FrameHeader, payload: Vec<u8>) -> Result<Entry, MalformedEntry> {
        Entry::decode_keeping(header, payload).map_err(|(error, _)| error)
    }

    /// [`Entry::decode`], handing the payload back on failure (for the dead letter).
    pub fn decode_keeping(
        header: &FrameHeader,
        payload: Vec<u8>,
    ) -> Result<Entry, (MalformedEntry, Vec<u8>)> {
        match Entry::layout(&payload) {
            Ok(parts) => Ok(Entry {
                seq: header.seq,
                appended_at_ns: header.appended_at_ns,
                payload,
                headers: parts.0,
                topics: parts.1,
                records: parts.2,
            }),
            Err(error) => Err((error, payload)),
        }
    }

    #[allow(clippy::type_complexity)]
    fn layout(
        payload: &[u8],
    ) -> Result<
        (
            Vec<(Range<usize>, Range<usize>)>,
            Vec<Range<usize>>,
            Vec<(usize, Option<Range<usize>>, Range<usize>)>,
        ),
        MalformedEntry,
    > {
        let mut c = Cursor {
            bytes: payload,
            at: 0,
        };
        let layout = Layout::detect(&mut c)?;
        let header_count = layout.count(&mut c, "header count")?;
        let mut headers = Vec::with_capacity(header_count.min(payload.len() / 8 + 1));
        for _ in 0..header_count {
            let key_len = layout.count(&mut c, "header key length")?;
            let key = c.str(key_len, "header key")?;
            let value_len = c.u32("header value length")? as usize;
            let value = c.str(value_len, "header value")?;
            headers.push((key, value));
        }
        let topic_count = layout.count(&mut c, "topic count")?;
        let mut topics = Vec::with_capacity(topic_count.min(payload.len() / 4 + 1));
        for _ in 0..topic_count {
            let len = layout.count(&mut c, "topic length")?;
            topics.push(c.str(len, "topic")?);
        }
        let record_count = c.u32("record count")? as usize;
        let mut records = Vec::with_capacity(record_count.min(payload.len() / 10 + 1));
        for _ in 0..record_count {
            let topic = layout.count(&mut c, "record topic")?;
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
        Ok((headers, topics, records))
    }

    /// An entry with no records and no headers, standing in for one that could not be
    /// decoded (and was dead-lettered), so the committed offset moves past it.
    pub(crate) fn placeholder(header: &FrameHeader, payload: Vec<u8>) -> Entry {
        Entry {
            seq: header.seq,
            appended_at_ns: header.appended_at_ns,
            payload,
            headers: Vec::new(),
            topics: Vec::new(),
            records: Vec::new(),
        }
    }

    /// The payload buffer, for reuse.
    pub fn into_payload(self) -> Vec<u8> {
        self.payload
    }

    /// The distinct topics of the entry's records.
    pub fn topics(&self) -> impl Iterator<Item = &str> {
        self.topics.iter().map(|t| self.text(t))
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
