//! A validated line and lazy access to its parts, plus the serializers.
//!
//! Names and values are cut out of the line on access, with the server's rules for
//! where each part ends and which escapes it knows, and allocate only if they contain a
//! backslash escape.

use std::borrow::Cow;

use super::fast::{FieldTable, Kind};
use super::number::{parse_bool, parse_f64, parse_i64, parse_u64};
use super::scan::{
    self, Meta, FLAG_LEAD_SPACE, FLAG_NOT_UTF8, FLAG_PLAIN_NAMES, FLAG_TAGS_UNSORTED, FLAG_VERBATIM,
};
use super::FieldValue;

/// One accepted line. Borrows the request body.
#[derive(Clone, Debug)]
pub struct Point<'a> {
    /// The logical line from its measurement on (leading whitespace removed).
    text: &'a [u8],
    /// Bytes of leading whitespace before `text` in the line's span.
    lead: usize,
    meta: Meta,
    /// Field positions found by the fast path, so reading fields needs no second scan.
    table: FieldTable,
}

impl<'a> Point<'a> {
    pub(crate) fn new(text: &'a [u8], lead: usize, meta: Meta, table: FieldTable) -> Self {
        Point {
            text,
            lead,
            meta,
            table,
        }
    }

    /// The line from the measurement up to its end, as it appeared in the input.
    #[inline]
    pub fn raw(&self) -> &'a [u8] {
        self.text
    }

    /// The measurement, unescaped (`\,` `\ ` `\=` `\"`, as the server's `Point.Name`).
    #[inline]
    pub fn measurement(&self) -> Cow<'a, str> {
        let raw = &self.text[..self.meta.meas_end as usize];
        self.decode(raw, unescape_measurement)
    }

    /// Tags in input order, unescaped (`\,` `\ ` `\=`).
    #[inline]
    pub fn tags(&self) -> Tags<'a> {
        let (m, k) = (self.meta.meas_end as usize, self.meta.key_end as usize);
        let raw = if m < k { &self.text[m + 1..k] } else { &[][..] };
        Tags {
            raw,
            pos: 0,
            text: self.text_kind(),
        }
    }

    /// Fields in input order. Duplicate keys are all kept, as the server keeps them.
    #[inline]
    pub fn fields(&self) -> Fields<'_, 'a> {
        if self.table.len > 0 {
            return Fields {
                raw: self.text,
                pos: self.meta.fields_start as usize,
                table: Some(&self.table),
                index: 0,
                text: self.text_kind(),
            };
        }
        let raw = &self.text[self.meta.fields_start as usize..self.meta.fields_end as usize];
        Fields {
            raw,
            pos: 0,
            table: None,
            index: 0,
            text: self.text_kind(),
        }
    }

    /// Timestamp in nanoseconds, after precision scaling; `None` if the line had none.
    #[inline]
    pub fn timestamp(&self) -> Option<i64> {
        self.meta.timestamp
    }

    /// Offset, relative to `Line::span.start`, just after the last byte of the field set:
    /// where a proxy inserts `" <timestamp>"` into a line that has none, leaving every
    /// other byte unchanged.
    #[inline]
    pub fn field_set_end(&self) -> usize {
        self.lead + self.meta.fields_end as usize
    }

    /// Bytes of the measurement and tags as written: the length of the series key.
    #[inline]
    pub fn series_key_len(&self) -> usize {
        self.meta.key_end as usize
    }

    /// Series key as InfluxDB builds it: the measurement and tags exactly as written
    /// (escaped), tags sorted by their escaped key. Used for Kafka partitioning.
    pub fn write_series_key(&self, out: &mut Vec<u8>) {
        let key = &self.text[..self.meta.key_end as usize];
        if self.meta.flags & FLAG_TAGS_UNSORTED == 0 {
            out.extend_from_slice(key);
            return;
        }
        let m = self.meta.meas_end as usize;
        out.extend_from_slice(&key[..m]);
        let raw_tags = RawTags {
            raw: &key[m + 1..],
            pos: 0,
        };
        // Sort on the stack for the usual tag counts.
        let mut inline: [&[u8]; 32] = [&[]; 32];
        let mut n = 0;
        let mut spill = Vec::new();
        for pair in raw_tags {
            if n < inline.len() {
                inline[n] = pair;
            } else {
                if spill.is_empty() {
                    spill.extend_from_slice(&inline);
                }
                spill.push(pair);
            }
            n += 1;
        }
        let pairs = if n <= inline.len() {
            &mut inline[..n]
        } else {
            &mut spill[..]
        };
        pairs.sort_by(|a, b| tag_key_of(a).cmp(tag_key_of(b)));
        for pair in pairs.iter() {
            out.push(b',');
            out.extend_from_slice(pair);
        }
    }

    /// Canonical line protocol: escaped measurement, tags in input order, fields, then
    /// `" <timestamp_ns>"` if given. Parsing the result (with nanosecond precision) gives
    /// back the same measurement, tags, fields and timestamp.
    ///
    /// The few lines that the server reads in a way no re-escaping reproduces (see
    /// `FLAG_VERBATIM`) are written with their measurement, tags and fields as they came.
    pub fn write_line_protocol(&self, out: &mut Vec<u8>, timestamp_ns: Option<i64>) {
        if self.meta.flags & FLAG_VERBATIM != 0 {
            self.write_verbatim(out, timestamp_ns);
            return;
        }
        escape_measurement(&self.measurement(), out);
        for (k, v) in self.tags() {
            out.push(b',');
            escape_tag(&k, out);
            out.push(b'=');
            escape_tag(&v, out);
        }
        out.push(b' ');
        for (n, (k, v)) in self.fields().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            escape_field_key(&k, out);
            out.push(b'=');
            write_field_value(&v, out);
        }
        if let Some(ts) = timestamp_ns {
            out.push(b' ');
            out.extend_from_slice(itoa::Buffer::new().format(ts).as_bytes());
        }
    }

    /// Whether a field is named `time`: InfluxDB's storage skips such fields (1.x and
    /// 2.x `ValidateAndCreateFields`) and stores the point with its other fields.
    #[inline]
    pub fn has_time_field(&self) -> bool {
        let raw = &self.text[self.meta.fields_start as usize..self.meta.fields_end as usize];
        // A cheap scan of the bytes first; names are decoded only when it hits.
        memchr::memmem::find(raw, b"time").is_some() && self.fields().any(|(key, _)| key == "time")
    }

    /// The line as InfluxDB stores it when it has a `time` field beside others: the
    /// key as written, the other fields (canonically escaped), then `" <timestamp_ns>"`.
    pub fn write_without_time_fields(&self, out: &mut Vec<u8>, timestamp_ns: i64) {
        if self.meta.flags & FLAG_VERBATIM != 0 {
            out.extend_from_slice(&self.text[..self.meta.key_end as usize]);
        } else {
            escape_measurement(&self.measurement(), out);
            for (k, v) in self.tags() {
                out.push(b',');
                escape_tag(&k, out);
                out.push(b'=');
                escape_tag(&v, out);
            }
        }
        out.push(b' ');
        let mut first = true;
        for (k, v) in self.fields().filter(|(key, _)| key != "time") {
            if !first {
                out.push(b',');
            }
            first = false;
            escape_field_key(&k, out);
            out.push(b'=');
            write_field_value(&v, out);
        }
        out.push(b' ');
        out.extend_from_slice(itoa::Buffer::new().format(timestamp_ns).as_bytes());
    }

    /// The input's own bytes for the key and the fields, with just enough whitespace
    /// around them for the server's scanners to be in the same state as they were.
    #[cold]
    fn write_verbatim(&self, out: &mut Vec<u8>, timestamp_ns: Option<i64>) {
        if self.meta.flags & FLAG_LEAD_SPACE != 0 {
            out.push(b' ');
        }
        out.extend_from_slice(&self.text[..self.meta.key_end as usize]);
        let fields = &self.text[self.meta.fields_start as usize..self.meta.fields_end as usize];
        // A space right before an empty first key would read as "missing field key".
        out.extend_from_slice(if fields.first() == Some(&b'=') {
            b" \t"
        } else {
            b" "
        });
        out.extend_from_slice(fields);
        match timestamp_ns {
            Some(ts) => {
                out.push(b' ');
                out.extend_from_slice(itoa::Buffer::new().format(ts).as_bytes());
            }
            // A point read up to the end of its input inside a string the splitter saw
            // open keeps a final newline; reading drops one, so write one more.
            None if fields.last() == Some(&b'\n') => out.push(b'\n'),
            None => {}
        }
    }

    /// Whether the server's scanners read this line in a way only its own bytes
    /// reproduce (see [`Point::write_line_protocol`]): a field set its two field scanners
    /// delimit differently, an empty first field key, or a newline in a name.
    #[inline]
    pub fn is_irregular(&self) -> bool {
        self.meta.flags & FLAG_VERBATIM != 0
    }

    /// Whether the line is valid UTF-8. The server accepts any bytes; when this is false
    /// the names and strings this type returns are decoded lossily (U+FFFD), so they are
    /// not exactly what InfluxDB stored and distinct names may read the same.
    #[inline]
    pub fn is_utf8(&self) -> bool {
        self.meta.flags & FLAG_NOT_UTF8 == 0
    }

    fn decode(&self, raw: &'a [u8], unescape: fn(&[u8]) -> Vec<u8>) -> Cow<'a, str> {
        decode(raw, self.text_kind(), unescape)
    }

    fn text_kind(&self) -> TextKind {
        TextKind {
            utf8: self.is_utf8(),
            plain: self.meta.flags & FLAG_PLAIN_NAMES != 0,
        }
    }
}

/// What is known about a line's bytes: valid UTF-8, and no backslash in any name.
#[derive(Clone, Copy, Debug)]
struct TextKind {
    utf8: bool,
    plain: bool,
}

/// Turns raw name bytes into text, unescaping only if there is a backslash.
///
/// `utf8` says the whole line is valid UTF-8; every piece is cut at ASCII delimiters, so
/// each piece is valid UTF-8 too. Otherwise bytes are decoded lossily (the server stores
/// them as they are, which a `str` cannot hold).
#[inline]
fn decode<'a>(raw: &'a [u8], kind: TextKind, unescape: fn(&[u8]) -> Vec<u8>) -> Cow<'a, str> {
    if kind.plain {
        return borrowed_str(raw, kind.utf8);
    }
    decode_value(raw, kind.utf8, unescape)
}

/// [`decode`] for bytes that may hold escapes whatever the names hold (string values).
#[inline]
fn decode_value<'a>(raw: &'a [u8], utf8: bool, unescape: fn(&[u8]) -> Vec<u8>) -> Cow<'a, str> {
    if find_backslash(raw).is_none() {
        return borrowed_str(raw, utf8);
    }
    decode_escaped(raw, utf8, unescape)
}

/// Unescapes bytes known to hold a backslash.
fn decode_escaped(raw: &[u8], utf8: bool, unescape: fn(&[u8]) -> Vec<u8>) -> Cow<'static, str> {
    let bytes = unescape(raw);
    if utf8 {
        debug_assert!(std::str::from_utf8(&bytes).is_ok());
        // SAFETY: `raw` is valid UTF-8 (see `borrowed_str`) and unescaping only drops
        // ASCII backslashes that precede ASCII bytes, which keeps it valid.
        return Cow::Owned(unsafe { String::from_utf8_unchecked(bytes) });
    }
    match String::from_utf8(bytes) {
        Ok(s) => Cow::Owned(s),
        Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
}

#[inline]
fn borrowed_str(raw: &[u8], utf8: bool) -> Cow<'_, str> {
    if utf8 {
        debug_assert!(std::str::from_utf8(raw).is_ok());
        // SAFETY: `utf8` is set only when the whole line passed `str::from_utf8`, and
        // `raw` is a sub-slice cut before or after ASCII bytes, which never splits a
        // multi-byte UTF-8 sequence.
        Cow::Borrowed(unsafe { std::str::from_utf8_unchecked(raw) })
    } else {
        String::from_utf8_lossy(raw)
    }
}

/// First backslash in `hay`, eight bytes at a time: names and strings are short, so this
/// beats a call into a general-purpose search.
#[inline(always)]
fn find_backslash(hay: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut i = 0;
    while i + 8 <= hay.len() {
        let mut chunk = [0u8; 8];
        chunk.copy_from_slice(&hay[i..i + 8]);
        let x = u64::from_le_bytes(chunk) ^ (ONES * u64::from(b'\\'));
        // The lowest flagged byte of this zero-byte test is always exact.
        let zero = x.wrapping_sub(ONES) & !x & HIGHS;
        if zero != 0 {
            return Some(i + (zero.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    hay[i..].iter().position(|&c| c == b'\\').map(|p| i + p)
}

/// Drops the backslash of each `\` + one of `set`, left to right; any other backslash
/// is kept (the server's `escape.Unescape` / `unescapeTag`).
///
/// Copies eight bytes at a time up to the next backslash: escaped names and strings are
/// short with many escapes, where a call per run (`memchr`, `extend_from_slice`) costs
/// more than the copying.
#[inline]
fn unescape_with(raw: &[u8], set: &[u8]) -> Vec<u8> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let n = raw.len();
    // Eight spare bytes: a whole word is stored even when only part of it is kept.
    let mut out: Vec<u8> = Vec::with_capacity(n + 8);
    let dst = out.as_mut_ptr();
    let (mut r, mut w) = (0, 0);
    while r < n {
        if r + 8 <= n {
            let mut word = [0u8; 8];
            word.copy_from_slice(&raw[r..r + 8]);
            // SAFETY: `w <= r` always (each step writes at most what it reads), so
            // `w + 8 <= n + 8`, the capacity.
            unsafe { dst.add(w).cast::<[u8; 8]>().write_unaligned(word) };
            let x = u64::from_le_bytes(word) ^ (ONES * u64::from(b'\\'));
            // The lowest flagged byte of this zero-byte test is always exact.
            let zero = x.wrapping_sub(ONES) & !x & HIGHS;
            if zero == 0 {
                r += 8;
                w += 8;
                continue;
            }
            let k = (zero.trailing_zeros() / 8) as usize;
            r += k;
            w += k;
        } else if raw[r] != b'\\' {
            // SAFETY: `w <= r < n`, within the capacity.
            unsafe { dst.add(w).write(raw[r]) };
            r += 1;
            w += 1;
            continue;
        }
        // `raw[r]` is a backslash.
        let escaped = r + 1 < n && set.contains(&raw[r + 1]);
        let (byte, step) = if escaped { (raw[r + 1], 2) } else { (b'\\', 1) };
        // SAFETY: `w <= r < n`, within the capacity.
        unsafe { dst.add(w).write(byte) };
        r += step;
        w += 1;
    }
    // SAFETY: every byte below `w` was written above, and `w <= n`.
    unsafe { out.set_len(w) };
    out
}

fn unescape_measurement(raw: &[u8]) -> Vec<u8> {
    unescape_with(raw, b", =\"")
}

fn unescape_tag(raw: &[u8]) -> Vec<u8> {
    unescape_with(raw, b", =")
}

fn unescape_field_key(raw: &[u8]) -> Vec<u8> {
    unescape_with(raw, b", =\"")
}

/// String field values: only `\\` and `\"` are escapes (the server's `unescapeStringField`).
fn unescape_string(raw: &[u8]) -> Vec<u8> {
    unescape_with(raw, b"\\\"")
}

/// Raw `key=value` pieces of a tag set: pieces end at a `,` not preceded by a backslash.
struct RawTags<'a> {
    raw: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for RawTags<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        let raw = self.raw;
        if self.pos >= raw.len() {
            return None;
        }
        let start = self.pos;
        let mut i = start + 1;
        let end = loop {
            match memchr::memchr(b',', &raw[i.min(raw.len())..]) {
                None => break raw.len(),
                Some(off) => {
                    let j = i + off;
                    if raw[j - 1] != b'\\' {
                        break j;
                    }
                    i = j + 1;
                }
            }
        };
        self.pos = end + 1;
        Some(&raw[start..end])
    }
}

/// The key of a raw `key=value` piece: up to the first `=` not preceded by a backslash.
#[inline]
fn tag_key_of(pair: &[u8]) -> &[u8] {
    &pair[..scan::scan_to_eq(pair, 0)]
}

/// Iterator over a point's tags; see [`Point::tags`].
#[derive(Clone, Debug)]
pub struct Tags<'a> {
    raw: &'a [u8],
    pos: usize,
    text: TextKind,
}

impl<'a> Iterator for Tags<'a> {
    type Item = (Cow<'a, str>, Cow<'a, str>);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.text.plain {
            // No backslashes: the first '=' ends the key and the next ',' the value.
            let raw = self.raw;
            let start = self.pos;
            if start >= raw.len() {
                return None;
            }
            let mut eq = start;
            while eq < raw.len() && raw[eq] != b'=' {
                eq += 1;
            }
            let mut end = eq;
            while end < raw.len() && raw[end] != b',' {
                end += 1;
            }
            self.pos = end + 1;
            let value = raw.get(eq + 1..end).unwrap_or_default();
            return Some((
                borrowed_str(&raw[start..eq], self.text.utf8),
                borrowed_str(value, self.text.utf8),
            ));
        }
        let mut raw_tags = RawTags {
            raw: self.raw,
            pos: self.pos,
        };
        let pair = raw_tags.next()?;
        self.pos = raw_tags.pos;
        let eq = scan::scan_to_eq(pair, 0);
        let key = &pair[..eq];
        let value = pair.get(eq + 1..).unwrap_or_default();
        Some((
            decode(key, self.text, unescape_tag),
            decode(value, self.text, unescape_tag),
        ))
    }
}

/// Iterator over a point's fields; see [`Point::fields`].
///
/// Walks the field set as the server's `walkFields` does: that walk, not the validating
/// scan, decides which keys and values InfluxDB stores. Points from the fast path carry
/// the field positions already (both walks agree on them there).
#[derive(Clone, Debug)]
pub struct Fields<'p, 'a> {
    /// The field set, or with a table the whole point text.
    raw: &'a [u8],
    /// Start of the next key in `raw`.
    pos: usize,
    table: Option<&'p FieldTable>,
    index: usize,
    text: TextKind,
}

impl<'a> Iterator for Fields<'_, 'a> {
    type Item = (Cow<'a, str>, FieldValue<'a>);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let raw = self.raw;
        if let Some(table) = self.table {
            if self.index >= usize::from(table.len) {
                return None;
            }
            let end = usize::from(table.ends[self.index]);
            let kind = table.kinds[self.index];
            let eq = usize::from(table.eqs[self.index]);
            self.index += 1;
            let key = &raw[self.pos..eq];
            self.pos = end + 1;
            let value = table_value(&raw[eq + 1..end], kind, self.text.utf8);
            return Some((decode(key, self.text, unescape_field_key), value));
        }
        if self.pos >= raw.len() {
            return None;
        }
        let eq = scan::scan_to_eq(raw, self.pos);
        let key = &raw[self.pos..eq];
        let value_start = (eq + 1).min(raw.len());
        let value_end = scan::scan_field_value(raw, value_start);
        self.pos = value_end + 1;
        let value = field_value(&raw[value_start..value_end], self.text.utf8);
        Some((decode(key, self.text, unescape_field_key), value))
    }
}

/// Reads a value the fast path has typed already.
#[inline]
fn table_value(v: &[u8], kind: Kind, utf8: bool) -> FieldValue<'_> {
    // Each arm builds its variant directly: going through `Option<FieldValue>` made the
    // compiler store the payload in pieces and stall on reading it back.
    match kind {
        Kind::Float => match parse_f64(v) {
            Some(f) => FieldValue::Float(f),
            None => unconvertible(v),
        },
        Kind::Integer => match parse_i64(&v[..v.len() - 1]) {
            Some(i) => FieldValue::Integer(i),
            None => unconvertible(v),
        },
        Kind::Unsigned => match parse_u64(&v[..v.len() - 1]) {
            Some(u) => FieldValue::Unsigned(u),
            None => unconvertible(v),
        },
        Kind::True => FieldValue::Boolean(true),
        Kind::False => FieldValue::Boolean(false),
        Kind::Str => FieldValue::String(borrowed_str(&v[1..v.len() - 1], utf8)),
        Kind::StrEscaped => {
            FieldValue::String(decode_escaped(&v[1..v.len() - 1], utf8, unescape_string))
        }
    }
}

/// Never reached: the fast path only records values that convert.
#[cold]
#[inline(never)]
fn unconvertible(v: &[u8]) -> FieldValue<'_> {
    debug_assert!(false, "fast-path field value failed to convert: {v:?}");
    FieldValue::String(String::from_utf8_lossy(v))
}

/// Whether a raw value (as delimited by `walkFields`) reads back as a typed value.
pub(crate) fn value_converts(v: &[u8]) -> bool {
    v.first() == Some(&b'"') || convert_value(v, false).is_some()
}

/// Types and reads a raw value as the server's field iterator does: a quote means a
/// string, a leading digit, sign or dot a number (suffix `i` integer, `u` unsigned, else
/// float), anything else a boolean.
#[inline]
fn field_value(v: &[u8], utf8: bool) -> FieldValue<'_> {
    convert_value(v, utf8).unwrap_or_else(|| {
        debug_assert!(false, "validated field value failed to convert: {v:?}");
        FieldValue::String(String::from_utf8_lossy(v))
    })
}

#[inline]
fn convert_value(v: &[u8], utf8: bool) -> Option<FieldValue<'_>> {
    let &first = v.first()?;
    if first == b'"' {
        // The server drops the first and the last byte. The last is a quote except in
        // odd inputs like `"x"y`, where it may even split a UTF-8 sequence.
        let inner = if v.len() >= 2 {
            &v[1..v.len() - 1]
        } else {
            &v[..0]
        };
        let utf8 = utf8 && v[v.len() - 1].is_ascii();
        Some(FieldValue::String(decode_value(
            inner,
            utf8,
            unescape_string,
        )))
    } else if b"0123456789-.nNiIu".contains(&first) {
        match v[v.len() - 1] {
            b'i' => parse_i64(&v[..v.len() - 1]).map(FieldValue::Integer),
            b'u' => parse_u64(&v[..v.len() - 1]).map(FieldValue::Unsigned),
            _ => parse_f64(v).map(FieldValue::Float),
        }
    } else {
        parse_bool(v).map(FieldValue::Boolean)
    }
}

/// Escapes a measurement: `,` and space always; `=` and `"` only after a backslash, where
/// the server would otherwise read the pair as an escape.
pub(crate) fn escape_measurement(s: &str, out: &mut Vec<u8>) {
    let mut prev = 0u8;
    for &c in s.as_bytes() {
        match c {
            b',' | b' ' => out.push(b'\\'),
            b'=' | b'"' if prev == b'\\' => out.push(b'\\'),
            _ => {}
        }
        out.push(c);
        prev = c;
    }
}

/// Escapes a tag key or value: `,`, space and `=`.
pub(crate) fn escape_tag(s: &str, out: &mut Vec<u8>) {
    for &c in s.as_bytes() {
        if matches!(c, b',' | b' ' | b'=') {
            out.push(b'\\');
        }
        out.push(c);
    }
}

/// Escapes a field key: `,`, space, `=` and `"` (the server unescapes all four).
pub(crate) fn escape_field_key(s: &str, out: &mut Vec<u8>) {
    for &c in s.as_bytes() {
        if matches!(c, b',' | b' ' | b'=' | b'"') {
            out.push(b'\\');
        }
        out.push(c);
    }
}

/// Writes a field value in line protocol.
pub(crate) fn write_field_value(v: &FieldValue<'_>, out: &mut Vec<u8>) {
    match v {
        FieldValue::Float(f) => {
            out.extend_from_slice(ryu::Buffer::new().format_finite(*f).as_bytes())
        }
        FieldValue::Integer(i) => {
            out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes());
            out.push(b'i');
        }
        FieldValue::Unsigned(u) => {
            out.extend_from_slice(itoa::Buffer::new().format(*u).as_bytes());
            out.push(b'u');
        }
        FieldValue::Boolean(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        FieldValue::String(s) => {
            out.push(b'"');
            for &c in s.as_bytes() {
                if c == b'"' || c == b'\\' {
                    out.push(b'\\');
                }
                out.push(c);
            }
            out.push(b'"');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The server's `escape.Unescape`, byte by byte.
    fn reference(raw: &[u8], set: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < raw.len() {
            if raw[i] == b'\\' && i + 1 < raw.len() && set.contains(&raw[i + 1]) {
                out.push(raw[i + 1]);
                i += 2;
            } else {
                out.push(raw[i]);
                i += 1;
            }
        }
        out
    }

    #[test]
    fn word_at_a_time_unescape_matches_the_byte_by_byte_rule() {
        let alphabet = b"a\\\\\\,= \"x";
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
            let len = (state >> 58) as usize;
            let raw: Vec<u8> = (0..len)
                .map(|k| {
                    let r = state.rotate_left(7 * k as u32) ^ (k as u64).wrapping_mul(0x2545_f491);
                    alphabet[(r % alphabet.len() as u64) as usize]
                })
                .collect();
            for set in [&b", =\""[..], b", =", b"\\\""] {
                assert_eq!(unescape_with(&raw, set), reference(&raw, set), "{raw:?}");
            }
        }
    }
}
