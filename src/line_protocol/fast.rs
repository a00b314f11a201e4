//! Single-pass fast path for ordinary lines.
//!
//! Most lines have no backslash outside string values, no leading whitespace and quotes
//! only around string values. For those, the server's line splitter, key scanner and two
//! field scanners all agree, so one pass can find the end of the line, validate it and
//! record where each field is. Anything else (any backslash in a name, a tab before a
//! section, anything the server would reject, ...) makes this pass give up, and the line
//! goes through the exact, section-by-section emulation in `scan.rs`. The fuzz target
//! checks that both paths agree.

use memchr::memchr3;

use super::number::parse_f64;
use super::number::{parse_i64, parse_u64};
use super::scan::{
    Meta, FLAG_NOT_UTF8, FLAG_PLAIN_NAMES, FLAG_TAGS_UNSORTED, MAX_KEY_LENGTH, MAX_NANO_TIME,
    MIN_NANO_TIME,
};
use super::ParseOptions;

/// Fields remembered per point; points with more are read by re-scanning.
pub(crate) const TABLE_FIELDS: usize = 16;

/// Type of a field value found by the fast path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Float,
    Integer,
    Unsigned,
    True,
    False,
    /// A string without backslashes.
    Str,
    /// A string with backslashes (`\"` and `\\` are escapes).
    StrEscaped,
}

/// Where each field of a fast-path point is: `=` position and value end, both relative
/// to the point's text. `len == 0` means "no table; re-scan".
#[derive(Clone, Copy, Debug)]
pub(crate) struct FieldTable {
    pub len: u8,
    pub spans: [(u32, u32); TABLE_FIELDS],
    pub kinds: [Kind; TABLE_FIELDS],
}

impl FieldTable {
    pub(crate) const EMPTY: FieldTable = FieldTable {
        len: 0,
        spans: [(0, 0); TABLE_FIELDS],
        kinds: [Kind::Float; TABLE_FIELDS],
    };
}

/// A line the fast path accepted.
pub(crate) struct Fast {
    /// End of the line (its `\n`, or the end of the input).
    pub end: usize,
    /// Newlines inside string values.
    pub newlines: usize,
    pub meta: Meta,
    pub table: FieldTable,
}

const C_MEAS: u8 = 1; // ends a measurement, or needs the slow path: , space \ \n
const C_TAG: u8 = 2; // ends a tag key or value, or needs the slow path: = , space \ \n
const C_FKEY: u8 = 4; // ends a field key, or needs the slow path: = , space \ " \n
const C_END: u8 = 8; // ends a number or boolean: , space \n

const CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    t[b',' as usize] = C_MEAS | C_TAG | C_FKEY | C_END;
    t[b' ' as usize] = C_MEAS | C_TAG | C_FKEY | C_END;
    t[b'\n' as usize] = C_MEAS | C_TAG | C_FKEY | C_END;
    t[b'\\' as usize] = C_MEAS | C_TAG | C_FKEY;
    t[b'=' as usize] = C_TAG | C_FKEY;
    t[b'"' as usize] = C_FKEY;
    t
};

#[inline(always)]
fn class(c: u8) -> u8 {
    CLASS[c as usize]
}

/// Advances `i` past bytes without any `mask` class, OR-ing them into `acc`.
#[inline(always)]
fn skip(b: &[u8], mut i: usize, mask: u8, acc: &mut u8) -> usize {
    while i < b.len() {
        let c = b[i];
        if class(c) & mask != 0 {
            break;
        }
        *acc |= c;
        i += 1;
    }
    i
}

/// Tag keys seen so far, for the sorted and duplicate checks.
struct TagKeys {
    spans: [(u32, u32); 32],
    len: usize,
}

/// Parses the line starting at `pos` if it is ordinary; `None` sends it to the slow path
/// (which also produces every error message).
#[inline]
pub(crate) fn parse_line(b: &[u8], pos: usize, opts: &ParseOptions) -> Option<Fast> {
    let len = b.len();
    let mut acc = 0u8;
    let first = *b.get(pos)?;
    if matches!(first, b',' | b' ' | b'\t' | 0 | b'#' | b'\n' | b'\\') {
        return None;
    }
    acc |= first;

    // Measurement.
    let mut i = skip(b, pos + 1, C_MEAS, &mut acc);
    if i >= len || b[i] == b'\\' || b[i] == b'\n' {
        return None;
    }
    let meas_end = i;

    // Tags.
    let mut flags = FLAG_PLAIN_NAMES;
    if b[i] == b',' {
        let mut keys = TagKeys {
            spans: [(0, 0); 32],
            len: 0,
        };
        loop {
            let ks = i + 1;
            i = skip(b, ks, C_TAG, &mut acc);
            if i >= len || b[i] != b'=' || i == ks {
                return None;
            }
            let ke = i;
            let vs = i + 1;
            i = skip(b, vs, C_TAG, &mut acc);
            if i >= len || i == vs || (b[i] != b',' && b[i] != b' ') {
                return None;
            }
            let key = &b[ks..ke];
            if keys.len > 0 {
                let (ps, pe) = keys.spans[keys.len - 1];
                match b[ps as usize..pe as usize].cmp(key) {
                    std::cmp::Ordering::Less => {}
                    std::cmp::Ordering::Equal => return None,
                    std::cmp::Ordering::Greater => flags |= FLAG_TAGS_UNSORTED,
                }
            }
            if keys.len == keys.spans.len() {
                return None;
            }
            keys.spans[keys.len] = (ks as u32, ke as u32);
            keys.len += 1;
            if b[i] == b' ' {
                break;
            }
        }
        if flags & FLAG_TAGS_UNSORTED != 0 {
            let spans = &mut keys.spans[..keys.len];
            let key = |s: (u32, u32)| &b[s.0 as usize..s.1 as usize];
            spans.sort_unstable_by(|x, y| key(*x).cmp(key(*y)));
            if spans.windows(2).any(|w| key(w[0]) == key(w[1])) {
                return None;
            }
        }
    }
    let key_end = i;
    if key_end - pos > MAX_KEY_LENGTH {
        return None;
    }

    // Spaces, then the field set.
    while i < len && b[i] == b' ' {
        i += 1;
    }
    if i >= len || matches!(b[i], b'\t' | 0 | b'\n') {
        return None;
    }
    let fields_start = i;
    let mut table = FieldTable::EMPTY;
    let mut count = 0usize;
    let mut newlines = 0usize;
    let mut string_bytes_ascii = true;
    loop {
        let ks = i;
        i = skip(b, ks, C_FKEY, &mut acc);
        if i >= len || b[i] != b'=' || i == ks {
            return None;
        }
        if key_end - pos + 4 + (i - ks) > MAX_KEY_LENGTH {
            return None;
        }
        let eq = i;
        i += 1;
        let c = *b.get(i)?;
        let kind = match c {
            b'0'..=b'9' | b'-' | b'.' => {
                let (end, kind) = number(b, i, opts.allow_unsigned)?;
                i = end;
                kind
            }
            b'"' => {
                let start = i + 1;
                let mut escaped = false;
                i = start;
                loop {
                    let j = i + memchr3(b'"', b'\\', b'\n', &b[i..])?;
                    match b[j] {
                        b'"' => {
                            i = j + 1;
                            break;
                        }
                        b'\\' => {
                            escaped = true;
                            if b.get(j + 1) == Some(&b'\n') {
                                newlines += 1;
                            }
                            i = (j + 2).min(len);
                        }
                        _ => {
                            newlines += 1;
                            i = j + 1;
                        }
                    }
                }
                string_bytes_ascii &= b[start..i].is_ascii();
                if escaped {
                    Kind::StrEscaped
                } else {
                    Kind::Str
                }
            }
            b't' | b'f' | b'T' | b'F' => {
                let start = i;
                while i < len && class(b[i]) & C_END == 0 {
                    i += 1;
                }
                match &b[start..i] {
                    b"t" | b"T" | b"true" | b"True" | b"TRUE" => Kind::True,
                    b"f" | b"F" | b"false" | b"False" | b"FALSE" => Kind::False,
                    _ => return None,
                }
            }
            _ => return None,
        };
        if count < TABLE_FIELDS {
            table.spans[count] = ((eq - pos) as u32, (i - pos) as u32);
            table.kinds[count] = kind;
        }
        count += 1;
        if i < len && b[i] == b',' {
            i += 1;
            continue;
        }
        if i < len && !matches!(b[i], b' ' | b'\n') {
            return None;
        }
        break;
    }
    if count <= TABLE_FIELDS {
        table.len = count as u8;
    }
    let fields_end = i;

    // Optional timestamp, then only spaces.
    let mut timestamp = None;
    while i < len && b[i] == b' ' {
        i += 1;
    }
    if i < len && b[i] != b'\n' {
        let start = i;
        if b[i] == b'-' {
            i += 1;
        }
        while i < len && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &b[start..i];
        if digits.is_empty() || digits == b"-" || (i < len && !matches!(b[i], b' ' | b'\n')) {
            return None;
        }
        let ns = opts.precision.to_nanos(parse_i64(digits)?)?;
        if !(MIN_NANO_TIME..=MAX_NANO_TIME).contains(&ns) {
            return None;
        }
        timestamp = Some(ns);
        while i < len && b[i] == b' ' {
            i += 1;
        }
        if i < len && b[i] != b'\n' {
            return None;
        }
    }
    let end = i;
    if end - pos > u32::MAX as usize {
        return None;
    }
    if (acc & 0x80 != 0 || !string_bytes_ascii) && std::str::from_utf8(&b[pos..end]).is_err() {
        flags |= FLAG_NOT_UTF8;
    }
    let meta = Meta {
        meas_end: (meas_end - pos) as u32,
        key_end: (key_end - pos) as u32,
        fields_start: (fields_start - pos) as u32,
        fields_end: (fields_end - pos) as u32,
        flags,
        timestamp,
    };
    Some(Fast {
        end,
        newlines,
        meta,
        table,
    })
}

/// The common number forms (`-?digits[.digits][e[+-]digits]`, `-?digits i`, `digits u`)
/// followed by `,`, a space, a newline or the end. Returns the end and the type.
#[inline(always)]
fn number(b: &[u8], start: usize, allow_unsigned: bool) -> Option<(usize, Kind)> {
    let len = b.len();
    let mut i = start;
    let neg = b[i] == b'-';
    if neg {
        i += 1;
    }
    let int_start = i;
    while i < len && b[i].is_ascii_digit() {
        i += 1;
    }
    let int_digits = i - int_start;
    let ends = |i: usize| i >= len || class(b[i]) & C_END != 0;
    if i < len && (b[i] == b'i' || b[i] == b'u') {
        let unsigned = b[i] == b'u';
        if int_digits == 0 || !ends(i + 1) || (unsigned && (neg || !allow_unsigned)) {
            return None;
        }
        let text = &b[start..i];
        if unsigned {
            if text.len() >= 20 {
                parse_u64(text)?;
            }
            return Some((i + 1, Kind::Unsigned));
        }
        if text.len() >= 19 {
            parse_i64(text)?;
        }
        return Some((i + 1, Kind::Integer));
    }
    let mut frac_digits = 0;
    if i < len && b[i] == b'.' {
        i += 1;
        let f = i;
        while i < len && b[i].is_ascii_digit() {
            i += 1;
        }
        frac_digits = i - f;
    }
    if int_digits + frac_digits == 0 {
        return None;
    }
    let mut scientific = false;
    if i < len && (b[i] == b'e' || b[i] == b'E') {
        scientific = true;
        i += 1;
        if i < len && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        let e = i;
        while i < len && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == e {
            return None;
        }
    }
    if !ends(i) {
        return None;
    }
    if scientific || i - start >= 25 {
        parse_f64(&b[start..i])?;
    }
    Some((i, Kind::Float))
}
