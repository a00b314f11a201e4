//! Validation of one logical line, following the InfluxDB server's `models` scanner.
//!
//! The server scans a line in sections (measurement, tags, fields, timestamp) and each
//! section has its own, sometimes surprising, notion of escaping: the key scanners treat
//! a byte as escaped when the byte *before* it is a backslash, while the field and line
//! scanners skip a backslash together with the byte after it. Accepting exactly what the
//! server accepts means reproducing each of those rules here, so every function below
//! names the server behaviour it mirrors. Validation records only offsets; values are
//! decoded lazily by [`super::Point`].

use memchr::{memchr2, memchr3};

use super::number::{scan_boolean, scan_number, scan_timestamp};
use super::{ParseOptions, Reason};

/// Largest series key (plus separator and field key) the server accepts.
pub(crate) const MAX_KEY_LENGTH: usize = 65535;
/// Bytes `tsm1` puts between the series key and the field key (`#!~#`).
const FIELD_KEY_SEPARATOR_LEN: usize = 4;
/// Smallest and largest nanosecond times the server stores (`models.MinNanoTime` / `MaxNanoTime`).
pub(crate) const MIN_NANO_TIME: i64 = i64::MIN + 2;
pub(crate) const MAX_NANO_TIME: i64 = i64::MAX - 1;

/// Tags are unsorted in the input: the series key must be rebuilt.
pub(crate) const FLAG_TAGS_UNSORTED: u8 = 1;
/// The line is not valid UTF-8: names and strings are decoded lossily.
pub(crate) const FLAG_NOT_UTF8: u8 = 2;
/// No backslash in the measurement, tags or field keys (set by the fast path).
pub(crate) const FLAG_PLAIN_NAMES: u8 = 4;
/// The server reads this line in a way that only its own bytes reproduce: the two field
/// scanners delimit the fields differently, the first field key is empty, or a name in a
/// multi-line point holds a newline or a space the scanners disagree on. Serializing it
/// must copy the measurement, tags and fields verbatim.
pub(crate) const FLAG_VERBATIM: u8 = 8;
/// With [`FLAG_VERBATIM`]: the whitespace before the measurement held a space, which the
/// server's line splitter counts when it decides where a multi-line point ends.
pub(crate) const FLAG_LEAD_SPACE: u8 = 16;

/// Offsets (into the logical line, leading whitespace removed) found by validation.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Meta {
    pub meas_end: u32,
    pub key_end: u32,
    pub fields_start: u32,
    pub fields_end: u32,
    pub flags: u8,
    pub timestamp: Option<i64>,
}

/// Space, tab and NUL: what the server's `skipWhitespace` skips.
#[inline]
pub(crate) fn is_ws(c: u8) -> bool {
    c == b' ' || c == b'\t' || c == 0
}

#[inline]
pub(crate) fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && is_ws(b[i]) {
        i += 1;
    }
    i
}

/// Finds the end of the logical line starting at `pos` (the server's `scanLine`).
///
/// Returns the index of the terminating `\n` (or `input.len()`) and how many `\n` bytes
/// the line itself contains. A backslash hides the byte after it (even a newline) when at
/// least one more byte follows in the whole body, and a `"` opens a string once the line
/// has had a space and more `=` than `,` since then; a newline inside such a string does
/// not end the line.
#[inline]
pub(crate) fn scan_line(input: &[u8], pos: usize) -> (usize, usize) {
    // Fast path: no quote or backslash before the newline means no state can hide it.
    match memchr3(b'\n', b'"', b'\\', &input[pos..]) {
        None => (input.len(), 0),
        Some(off) if input[pos + off] == b'\n' => (pos + off, 0),
        Some(_) => scan_line_slow(input, pos),
    }
}

#[cold]
fn scan_line_slow(input: &[u8], mut i: usize) -> (usize, usize) {
    let len = input.len();
    let mut quoted = false;
    let mut fields = false;
    let mut equals = 0usize;
    let mut commas = 0usize;
    let mut newlines = 0usize;
    while i < len {
        let c = input[i];
        if c == b'\\' && i + 2 < len {
            if input[i + 1] == b'\n' {
                newlines += 1;
            }
            i += 2;
            continue;
        }
        if c == b' ' {
            fields = true;
        }
        if fields {
            if !quoted && c == b'=' {
                equals += 1;
                i += 1;
                continue;
            } else if !quoted && c == b',' {
                commas += 1;
                i += 1;
                continue;
            } else if c == b'"' && equals > commas {
                quoted = !quoted;
                i += 1;
                continue;
            }
        }
        if c == b'\n' {
            if !quoted {
                break;
            }
            newlines += 1;
        }
        i += 1;
    }
    (i, newlines)
}

/// Validates one logical line (`b` starts at the measurement) and returns its offsets.
///
/// Checks run in the server's order, so a line with several faults reports the same one.
///
/// `may_have_newline` says the logical line spans several physical lines (only then can
/// a newline sit inside a name).
pub(crate) fn parse_point(
    b: &[u8],
    opts: &ParseOptions,
    may_have_newline: bool,
) -> Result<Meta, Reason> {
    if b.len() > u32::MAX as usize {
        return Err(Reason::LineTooLong);
    }
    let (meas_end, key_end, flags) = scan_key(b, opts.reserved_tag_keys)?;
    if key_end > MAX_KEY_LENGTH {
        return Err(Reason::MaxKeyLength(key_end));
    }
    let fields_start = skip_ws(b, key_end);
    let (fields_end, simple) = scan_fields(b, fields_start, opts, &mut |_| {})?;
    // The server's `len(fields) == 0` check ("missing fields") is unreachable: an empty
    // field set already fails in scanFields with "invalid field format".
    let mut irregular = 0;
    if simple {
        if key_end + FIELD_KEY_SEPARATOR_LEN + (fields_end - fields_start) > MAX_KEY_LENGTH {
            check_field_key_lengths(b, key_end, fields_start, fields_end)?;
        }
    } else if !check_irregular_fields(b, key_end, fields_start, fields_end, opts)? {
        irregular = FLAG_VERBATIM;
    }
    if may_have_newline && !names_survive_rewriting(b, key_end, fields_start, fields_end) {
        irregular = FLAG_VERBATIM;
    }
    let timestamp = scan_time(b, fields_end, opts)?;
    let mut flags = flags | irregular;
    if std::str::from_utf8(b).is_err() {
        flags |= FLAG_NOT_UTF8;
    }
    Ok(Meta {
        meas_end: meas_end as u32,
        key_end: key_end as u32,
        fields_start: fields_start as u32,
        fields_end: fields_end as u32,
        flags,
        timestamp,
    })
}

/// Raw tag keys of one line, kept on the stack for the common case.
struct KeySpans {
    inline: [(u32, u32); 32],
    len: usize,
    spill: Vec<(u32, u32)>,
}

impl KeySpans {
    fn new() -> Self {
        KeySpans {
            inline: [(0, 0); 32],
            len: 0,
            spill: Vec::new(),
        }
    }

    fn push(&mut self, span: (u32, u32)) {
        if self.len < self.inline.len() {
            self.inline[self.len] = span;
        } else {
            if self.spill.is_empty() {
                self.spill.extend_from_slice(&self.inline);
            }
            self.spill.push(span);
        }
        self.len += 1;
    }

    fn as_mut_slice(&mut self) -> &mut [(u32, u32)] {
        if self.len <= self.inline.len() {
            &mut self.inline[..self.len]
        } else {
            &mut self.spill
        }
    }
}

/// Finds the next byte in `set` at or after `i` whose previous byte is not a backslash.
#[inline]
fn find_unescaped3(b: &[u8], mut i: usize, x: u8, y: u8, z: u8) -> Option<usize> {
    loop {
        let j = i + memchr3(x, y, z, &b[i..])?;
        if b[j - 1] != b'\\' {
            return Some(j);
        }
        i = j + 1;
    }
}

/// Scans measurement and tags (the server's `scanKey`, `scanMeasurement`, `scanTags`).
///
/// Returns (end of measurement, end of series key, flags). Here a byte is escaped when
/// the byte before it is a backslash, so `a\\,b` is one measurement.
fn scan_key(b: &[u8], refuse_reserved: bool) -> Result<(usize, usize, u8), Reason> {
    let len = b.len();
    if len == 0 || b[0] == b',' {
        return Err(Reason::MissingMeasurement);
    }
    let mut i = 1;
    let meas_end = loop {
        let Some(off) = memchr2(b',', b' ', &b[i..]) else {
            return Err(Reason::MissingFields);
        };
        let j = i + off;
        if b[j - 1] != b'\\' {
            break j;
        }
        i = j + 1;
    };
    if b[meas_end] == b' ' {
        return Ok((meas_end, meas_end, 0));
    }

    let mut keys = KeySpans::new();
    let mut i = meas_end + 1;
    let key_end = 'tags: loop {
        // Tag key: non-empty, ends at an unescaped '='.
        let key_start = i;
        if i >= len || matches!(b[i], b' ' | b',' | b'=') {
            return Err(Reason::MissingTagKey);
        }
        let eq = match find_unescaped3(b, i + 1, b'=', b',', b' ') {
            Some(j) if b[j] == b'=' => j,
            _ => return Err(Reason::MissingTagValue),
        };
        keys.push((key_start as u32, eq as u32));
        // Tag value: non-empty; may start with '=', but no other unescaped '='.
        i = eq + 1;
        if i >= len || b[i] == b',' || b[i] == b' ' {
            return Err(Reason::MissingTagValue);
        }
        match find_unescaped3(b, i + 1, b'=', b',', b' ') {
            None => return Err(Reason::MissingFields),
            Some(j) => match b[j] {
                b'=' => return Err(Reason::InvalidTagFormat),
                b',' => i = j + 1,
                _ => break 'tags j,
            },
        }
    };

    let spans = keys.as_mut_slice();
    let key = |s: (u32, u32)| &b[s.0 as usize..s.1 as usize];
    if refuse_reserved {
        if let Some(quoted) = spans.iter().find_map(|&s| reserved_tag_key(key(s))) {
            return Err(Reason::ReservedTagKey(quoted));
        }
    }
    // Duplicate keys are compared raw (escaped), as the server does.
    let mut sorted = true;
    for w in spans.windows(2) {
        match key(w[0]).cmp(key(w[1])) {
            std::cmp::Ordering::Less => {}
            std::cmp::Ordering::Equal => return Err(Reason::DuplicateTags),
            std::cmp::Ordering::Greater => {
                sorted = false;
                break;
            }
        }
    }
    let mut flags = 0;
    if !sorted {
        flags |= FLAG_TAGS_UNSORTED;
        spans.sort_unstable_by(|x, y| key(*x).cmp(key(*y)));
        if spans.windows(2).any(|w| key(w[0]) == key(w[1])) {
            return Err(Reason::DuplicateTags);
        }
    }
    Ok((meas_end, key_end, flags))
}

/// The tag keys InfluxDB 2.x refuses (compared raw), quoted as its `%q` prints them.
#[inline]
pub(crate) fn reserved_tag_key(key: &[u8]) -> Option<&'static str> {
    match key {
        b"\x00" => Some(r#""\x00""#),
        b"\xff" => Some(r#""\xff""#),
        b"time" => Some(r#""time""#),
        b"_field" => Some(r#""_field""#),
        b"_measurement" => Some(r#""_measurement""#),
        _ => None,
    }
}

/// One field as the server's `scanFields` delimits it: key start, `=` position, value end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FieldSeg {
    pub key_start: usize,
    pub eq: usize,
    pub value_end: usize,
}

/// The server's `scanFields`: validates the field set starting at `start`.
///
/// Returns the end of the field set and whether it is "simple": every field is one
/// `key=value` with exactly one `=` outside strings, no backslash outside strings, every
/// quote outside a string opens one, and a closing quote is followed by `,`, a space or
/// the end. Simple field sets are read identically by the server's `walkFields`, which
/// decides what is stored; others get an extra check. `on_field` sees each field as this
/// scanner delimits it.
#[inline]
pub(crate) fn scan_fields(
    b: &[u8],
    start: usize,
    opts: &ParseOptions,
    on_field: &mut impl FnMut(FieldSeg),
) -> Result<(usize, bool), Reason> {
    let len = b.len();
    let mut i = start;
    let mut quoted = false;
    let mut equals = 0usize;
    let mut commas = 0usize;
    let mut simple = true;
    let mut key_start = start;
    let mut eq = usize::MAX;
    // Same as `eq != usize::MAX`, kept as a flag for the hot loop.
    let mut seg_has_eq = false;
    while i < len {
        let c = b[i];
        if quoted {
            // Inside a string only a backslash pair or a quote matters.
            match memchr2(b'"', b'\\', &b[i..]) {
                None => {
                    i = len;
                    break;
                }
                Some(off) => {
                    i += off;
                    if b[i] == b'\\' {
                        if i + 1 < len {
                            i += 2;
                        } else {
                            i += 1;
                        }
                        continue;
                    }
                    quoted = false;
                    i += 1;
                    if i < len && b[i] != b',' && b[i] != b' ' {
                        simple = false;
                    }
                    continue;
                }
            }
        }
        match c {
            b'\\' if i + 1 < len => {
                simple = false;
                i += 2;
                continue;
            }
            b'"' => {
                if equals > commas {
                    quoted = true;
                } else {
                    simple = false;
                }
                i += 1;
                continue;
            }
            b'=' => {
                equals += 1;
                if seg_has_eq {
                    simple = false;
                }
                seg_has_eq = true;
                if i >= 2 && (b[i - 1] == b' ' || b[i - 1] == b',') && b[i - 2] != b'\\' {
                    return Err(Reason::MissingFieldKey);
                }
                // The server accepts (and stores) an empty first key when a tab or NUL
                // precedes it; only a verbatim copy writes that back.
                if i == start {
                    simple = false;
                }
                if i + 1 >= len {
                    return Err(Reason::MissingFieldValue);
                }
                let n = b[i + 1];
                if n == b',' || n == b' ' {
                    return Err(Reason::MissingFieldValue);
                }
                if eq == usize::MAX {
                    eq = i;
                }
                if n.is_ascii_digit() || n == b'.' || n == b'-' || n == b'N' || n == b'n' {
                    i = scan_number(b, i + 1, opts.allow_unsigned)?;
                    continue;
                }
                if n != b'"' {
                    i = scan_boolean(b, i + 1)?;
                    continue;
                }
                i += 1;
                continue;
            }
            b',' => {
                commas += 1;
                if !seg_has_eq {
                    simple = false;
                }
                seg_has_eq = false;
                on_field(FieldSeg {
                    key_start,
                    eq,
                    value_end: i,
                });
                key_start = i + 1;
                eq = usize::MAX;
            }
            b' ' => break,
            _ => {}
        }
        i += 1;
    }
    if quoted {
        return Err(Reason::UnbalancedQuotes);
    }
    if !seg_has_eq {
        simple = false;
    }
    if equals == 0 || commas != equals - 1 {
        return Err(Reason::InvalidFieldFormat);
    }
    on_field(FieldSeg {
        key_start,
        eq,
        value_end: i,
    });
    Ok((i, simple))
}

/// The server's `scanTo(buf, i, '=')`: the next `=` whose previous byte is not a backslash.
#[inline]
pub(crate) fn scan_to_eq(b: &[u8], mut i: usize) -> usize {
    let len = b.len();
    while i < len {
        match memchr::memchr(b'=', &b[i..]) {
            None => return len,
            Some(off) => {
                let j = i + off;
                if j == 0 || b[j - 1] != b'\\' {
                    return j;
                }
                i = j + 1;
            }
        }
    }
    len
}

/// The server's `scanFieldValue`: a value ends at a `,` outside quotes; only `\"` and
/// `\\` are escapes.
#[inline]
pub(crate) fn scan_field_value(b: &[u8], mut i: usize) -> usize {
    let len = b.len();
    let mut quoted = false;
    while i < len {
        let found = if quoted {
            memchr2(b'"', b'\\', &b[i..])
        } else {
            memchr3(b',', b'"', b'\\', &b[i..])
        };
        let Some(off) = found else { return len };
        i += off;
        match b[i] {
            b'\\' => {
                if i + 1 < len && (b[i + 1] == b'"' || b[i + 1] == b'\\') {
                    i += 2;
                } else {
                    i += 1;
                }
            }
            b'"' => {
                quoted = !quoted;
                i += 1;
            }
            _ => return i,
        }
    }
    len
}

/// Checks each field key against the maximum series key size (rarely needed).
fn check_field_key_lengths(
    b: &[u8],
    key_end: usize,
    start: usize,
    end: usize,
) -> Result<(), Reason> {
    Walk::new(b, start, end).try_for_each(|seg| check_key_size(key_end, seg))
}

/// The server's `seriesKeySize` check for one field key.
#[inline]
fn check_key_size(key_end: usize, seg: FieldSeg) -> Result<(), Reason> {
    let size = key_end + FIELD_KEY_SEPARATOR_LEN + (seg.eq - seg.key_start);
    if size > MAX_KEY_LENGTH {
        return Err(Reason::MaxKeyLength(size));
    }
    Ok(())
}

/// Field sets that are not simple: replays the server's `walkFields` (which decides the
/// stored keys and values). Returns whether it delimits the same fields as `scanFields`
/// did with a non-empty key each; if not, the server still stores what `walkFields`
/// reads, and only a verbatim copy of the field set reads back the same.
///
/// A value `walkFields` cuts out that does not convert (`a\\="=x"` gives `x"`) is refused:
/// the server's parser passes it, but its storage engine then fails the whole write.
#[cold]
fn check_irregular_fields(
    b: &[u8],
    key_end: usize,
    start: usize,
    end: usize,
    opts: &ParseOptions,
) -> Result<bool, Reason> {
    // walkFields as the server runs it first: its errors win.
    for seg in Walk::new(b, start, end) {
        // walkFields: `if i > len(buf)-2` (2.x reports this, 1.x panics).
        if seg.eq + 2 > end {
            let key = String::from_utf8_lossy(&b[seg.key_start..seg.eq]).into_owned();
            return Err(Reason::InvalidValueFieldKey(key));
        }
        check_key_size(key_end, seg)?;
    }
    // Both scanners must delimit the same fields (compared in step, without storing them).
    let mut walk = Walk::new(b, start, end);
    let mut same = true;
    scan_fields(b, start, opts, &mut |seg| same &= walk.next() == Some(seg))?;
    if walk.next().is_some() {
        same = false;
    }
    for seg in Walk::new(b, start, end) {
        if seg.eq == seg.key_start {
            same = false;
        }
        if !super::point::value_converts(&b[seg.eq + 1..seg.value_end]) {
            return Err(Reason::InvalidFieldFormat);
        }
    }
    Ok(same)
}

/// The fields as the server's `walkFields` delimits them (absolute positions in `b`).
struct Walk<'b> {
    b: &'b [u8],
    start: usize,
    pos: usize,
    end: usize,
}

impl<'b> Walk<'b> {
    /// The fields of `b[start..end]`.
    fn new(b: &'b [u8], start: usize, end: usize) -> Self {
        Walk {
            b,
            start,
            pos: 0,
            end,
        }
    }
}

impl Iterator for Walk<'_> {
    type Item = FieldSeg;

    fn next(&mut self) -> Option<FieldSeg> {
        let fields = &self.b[self.start..self.end];
        if self.pos >= fields.len() {
            return None;
        }
        let eq = scan_to_eq(fields, self.pos);
        let value_end = scan_field_value(fields, (eq + 1).min(fields.len()));
        let seg = FieldSeg {
            key_start: self.start + self.pos,
            eq: self.start + eq,
            value_end: self.start + value_end,
        };
        self.pos = value_end + 1;
        Some(seg)
    }
}

/// The server's `scanTime` plus the timestamp checks of `parsePoint`.
fn scan_time(b: &[u8], end_of_fields: usize, opts: &ParseOptions) -> Result<Option<i64>, Reason> {
    let start = skip_ws(b, end_of_fields);
    let (ts_end, value) = scan_timestamp(b, start)?;
    let Some(value) = value else {
        // No timestamp: the server does not look at anything after this point.
        return Ok(None);
    };
    let ns = match opts.precision.to_nanos(value) {
        Some(ns) if (MIN_NANO_TIME..=MAX_NANO_TIME).contains(&ns) => ns,
        _ => return Err(Reason::TimeOutsideRange),
    };
    if b[ts_end..].iter().any(|&c| c != b' ') {
        return Err(Reason::PointIsInvalid);
    }
    Ok(Some(ns))
}

/// Lines that span several physical lines, where the server's line splitter (which
/// pairs a backslash with the next byte) and its key scanner (which looks at the byte
/// before) disagree.
///
/// A newline inside a name is kept by the server when a backslash hides it from the
/// splitter, or when the splitter's quote heuristic (which also counts quotes in the
/// measurement and tags once it has seen a space) thinks it is inside a string. A
/// newline right after an odd run of backslashes is written out again unchanged by the
/// canonical serializer; any other depends on the splitter's state, which only the
/// line's own bytes reproduce. The same holds for a space in the measurement or tags
/// that only the key scanner sees as escaped (after an even run of backslashes).
#[cold]
fn names_survive_rewriting(
    b: &[u8],
    key_end: usize,
    fields_start: usize,
    fields_end: usize,
) -> bool {
    let odd_backslashes_before =
        |i: usize| b[..i].iter().rev().take_while(|&&c| c == b'\\').count() % 2 == 1;
    let plain = |range: std::ops::Range<usize>| {
        memchr::memchr_iter(b'\n', &b[range.clone()])
            .all(|nl| odd_backslashes_before(range.start + nl))
    };
    plain(0..key_end)
        && memchr::memchr_iter(b' ', &b[..key_end]).all(odd_backslashes_before)
        && Walk::new(b, fields_start, fields_end).all(|seg| plain(seg.key_start..seg.eq))
}
