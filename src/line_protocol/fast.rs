//! Single-pass fast path for ordinary lines.
//!
//! Most lines have no backslash outside string values, no leading whitespace and quotes
//! only around string values. For those, the server's line splitter, key scanner and two
//! field scanners all agree, so one pass can find the end of the line, validate it and
//! record where each field is. Anything else (any backslash in a name, a tab before a
//! section, anything the server would reject, ...) makes this pass give up, and the line
//! goes through the exact, section-by-section emulation in `scan.rs`. The fuzz target
//! checks that both paths agree.

use super::number::parse_f64;
use super::number::{parse_i64, parse_u64};
use super::scan::{
    Meta, FLAG_NOT_UTF8, FLAG_PLAIN_NAMES, FLAG_TAGS_UNSORTED, MAX_KEY_LENGTH, MAX_NANO_TIME,
    MIN_NANO_TIME,
};
use super::{ParseOptions, Point};

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

/// Where each field of a fast-path point has its `=` and where its value ends (relative
/// to the point's text), and its type, so reading fields needs no second scan.
/// `len == 0` means "no table; re-scan" (too many fields, or a line over 64 KiB).
#[derive(Clone, Copy, Debug)]
pub(crate) struct FieldTable {
    pub len: u8,
    pub kinds: [Kind; TABLE_FIELDS],
    pub ends: [u16; TABLE_FIELDS],
    /// Position of each field's `=`.
    pub eqs: [u16; TABLE_FIELDS],
}

impl FieldTable {
    pub(crate) const EMPTY: FieldTable = FieldTable {
        len: 0,
        kinds: [Kind::Float; TABLE_FIELDS],
        ends: [0; TABLE_FIELDS],
        eqs: [0; TABLE_FIELDS],
    };
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
    #[cfg(target_arch = "x86_64")]
    {
        let stops: &[u8] = match mask {
            C_MEAS => b", \\\n",
            C_TAG => b"=, \\\n",
            _ => b"=, \\\"\n",
        };
        while i + 16 <= b.len() {
            let (stop, high) = simd::find16(&b[i..i + 16], stops);
            if stop != 0 {
                let n = stop.trailing_zeros();
                if high & ((1 << n) - 1) != 0 {
                    *acc |= 0x80;
                }
                return i + n as usize;
            }
            if high != 0 {
                *acc |= 0x80;
            }
            i += 16;
        }
    }
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

/// Finds the next `"`, backslash or newline inside a string value, noting non-ASCII bytes.
#[inline(always)]
fn find_string_stop(b: &[u8], mut i: usize, acc: &mut u8) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    while i + 16 <= b.len() {
        let (stop, high) = simd::find16(&b[i..i + 16], b"\"\\\n");
        if high != 0 {
            *acc |= 0x80;
        }
        if stop != 0 {
            return Some(i + stop.trailing_zeros() as usize);
        }
        i += 16;
    }
    while i < b.len() {
        let c = b[i];
        if c == b'"' || c == b'\\' || c == b'\n' {
            return Some(i);
        }
        *acc |= c;
        i += 1;
    }
    None
}

/// Advances `i` past ASCII digits.
#[inline(always)]
fn skip_digits(b: &[u8], mut i: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    while i + 16 <= b.len() {
        let other = simd::non_digits16(&b[i..i + 16]);
        if other != 0 {
            return i + other.trailing_zeros() as usize;
        }
        i += 16;
    }
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    i
}

/// Advances `i` past a name: bytes without any `mask` class, and backslash escapes.
///
/// A backslash followed by any byte but another backslash or a newline escapes that byte
/// for every one of the server's scanners alike (they differ only on runs of
/// backslashes), so such escapes stay on the fast path.
#[inline(always)]
fn skip_name(b: &[u8], mut i: usize, mask: u8, acc: &mut u8, escaped: &mut bool) -> Option<usize> {
    loop {
        i = skip(b, i, mask, acc);
        if i >= b.len() || b[i] != b'\\' {
            return Some(i);
        }
        let next = *b.get(i + 1)?;
        if next == b'\\' || next == b'\n' {
            return None;
        }
        *acc |= next;
        *escaped = true;
        i += 2;
    }
}

/// Parses the line starting at `pos` if it is ordinary; `None` sends it to the slow path
/// (which also produces every error message).
#[inline]
pub(crate) fn parse_line<'a>(
    b: &'a [u8],
    pos: usize,
    opts: &ParseOptions,
) -> Option<(usize, usize, Point<'a>)> {
    let len = b.len();
    let mut acc = 0u8;
    let mut escaped = false;
    let first = *b.get(pos)?;
    if matches!(first, b',' | b' ' | b'\t' | 0 | b'#' | b'\n') {
        return None;
    }

    // Measurement.
    let mut i = skip_name(b, pos, C_MEAS, &mut acc, &mut escaped)?;
    if i >= len || b[i] == b'\n' {
        return None;
    }
    let meas_end = i;

    // Tags.
    let mut flags = 0;
    if b[i] == b',' {
        let mut prev_key = (0, 0);
        // The first keys, to check unsorted tags for duplicates without a second scan.
        let mut keys = [(0u32, 0u32); 8];
        let mut n_keys = 0;
        loop {
            let ks = i + 1;
            i = skip_name(b, ks, C_TAG, &mut acc, &mut escaped)?;
            if i >= len || b[i] != b'=' || i == ks {
                return None;
            }
            let ke = i;
            if opts.reserved_tag_keys && super::scan::reserved_tag_key(&b[ks..ke]).is_some() {
                return None;
            }
            let vs = i + 1;
            i = skip_name(b, vs, C_TAG, &mut acc, &mut escaped)?;
            if i >= len || i == vs || (b[i] != b',' && b[i] != b' ') {
                return None;
            }
            if prev_key.1 > 0 {
                match b[prev_key.0..prev_key.1].cmp(&b[ks..ke]) {
                    std::cmp::Ordering::Less => {}
                    std::cmp::Ordering::Equal => return None,
                    std::cmp::Ordering::Greater => flags |= FLAG_TAGS_UNSORTED,
                }
            }
            prev_key = (ks, ke);
            if n_keys < keys.len() {
                keys[n_keys] = (ks as u32, ke as u32);
            }
            n_keys += 1;
            if b[i] == b' ' {
                break;
            }
        }
        if flags & FLAG_TAGS_UNSORTED != 0 {
            let unique = if n_keys <= keys.len() {
                let key = |k: (u32, u32)| &b[k.0 as usize..k.1 as usize];
                let keys = &keys[..n_keys];
                keys.iter()
                    .enumerate()
                    .all(|(j, &x)| keys[j + 1..].iter().all(|&y| key(x) != key(y)))
            } else {
                unsorted_tags_are_unique(&b[meas_end + 1..i])?
            };
            if !unique {
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
    loop {
        let ks = i;
        i = skip_name(b, ks, C_FKEY, &mut acc, &mut escaped)?;
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
                let mut string_escaped = false;
                i = start;
                loop {
                    let j = find_string_stop(b, i, &mut acc)?;
                    match b[j] {
                        b'"' => {
                            i = j + 1;
                            break;
                        }
                        b'\\' => {
                            string_escaped = true;
                            match b.get(j + 1) {
                                Some(b'\n') => newlines += 1,
                                // The escaped byte is skipped, so note it for the UTF-8 check.
                                Some(&c) => acc |= c,
                                None => {}
                            }
                            i = (j + 2).min(len);
                        }
                        _ => {
                            newlines += 1;
                            i = j + 1;
                        }
                    }
                }
                if string_escaped {
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
            table.ends[count] = u16::try_from(i - pos).unwrap_or(0);
            table.eqs[count] = u16::try_from(eq - pos).unwrap_or(0);
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
    if count <= TABLE_FIELDS && i - pos <= usize::from(u16::MAX) {
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
        i = skip_digits(b, i);
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
    if !escaped {
        flags |= FLAG_PLAIN_NAMES;
    }
    if acc & 0x80 != 0 && std::str::from_utf8(&b[pos..end]).is_err() {
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
    Some((end, newlines, Point::new(&b[pos..end], 0, meta, table)))
}

/// Duplicate check for tags that are not in order (raw keys, as the server compares them).
/// `None` (too many tags to check here) sends the line to the slow path.
#[cold]
fn unsorted_tags_are_unique(tags: &[u8]) -> Option<bool> {
    let mut keys: [&[u8]; 32] = [&[]; 32];
    let mut n = 0;
    // The main scan already validated the pairs; find their keys the same way.
    let (mut acc, mut escaped) = (0u8, false);
    let mut i = 0;
    while i < tags.len() {
        let eq = skip_name(tags, i, C_TAG, &mut acc, &mut escaped)?;
        let end = skip_name(tags, eq + 1, C_TAG, &mut acc, &mut escaped)?;
        if n == keys.len() {
            return None;
        }
        keys[n] = &tags[i..eq];
        n += 1;
        i = end + 1;
    }
    let keys = &mut keys[..n];
    keys.sort_unstable();
    Some(keys.windows(2).all(|w| w[0] != w[1]))
}

/// Whether a number or boolean may end at `i`: `,`, space, newline or the end.
#[inline(always)]
fn ends_value(b: &[u8], i: usize) -> bool {
    i >= b.len() || class(b[i]) & C_END != 0
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
    i = skip_digits(b, i);
    let int_digits = i - int_start;
    if i < len && (b[i] == b'i' || b[i] == b'u') {
        let unsigned = b[i] == b'u';
        if int_digits == 0 || !ends_value(b, i + 1) || (unsigned && (neg || !allow_unsigned)) {
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
        i = skip_digits(b, i);
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
        i = skip_digits(b, i);
        if i == e {
            return None;
        }
    }
    if !ends_value(b, i) {
        return None;
    }
    if scientific || i - start >= 25 {
        parse_f64(&b[start..i])?;
    }
    Some((i, Kind::Float))
}

/// 16 bytes at a time with SSE2, which every x86-64 CPU has.
#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_cmpgt_epi8, _mm_cmplt_epi8, _mm_loadu_si128,
        _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8, _mm_setzero_si128,
    };

    #[inline(always)]
    fn load(chunk: &[u8]) -> __m128i {
        assert!(chunk.len() >= 16);
        // SAFETY: the assert above keeps the unaligned 16-byte load inside `chunk`.
        unsafe { _mm_loadu_si128(chunk.as_ptr().cast()) }
    }

    /// Bit k set where `chunk[k]` is one of `stops`, and bit k set where it is not ASCII.
    #[inline(always)]
    #[allow(unused_unsafe)] // the value intrinsics are safe from Rust 1.87 on
    pub(super) fn find16(chunk: &[u8], stops: &[u8]) -> (u32, u32) {
        let v = load(chunk);
        // SAFETY: SSE2 is part of the x86-64 baseline; these only compute on values.
        unsafe {
            let mut hits = _mm_setzero_si128();
            for &s in stops {
                hits = _mm_or_si128(hits, _mm_cmpeq_epi8(v, _mm_set1_epi8(s as i8)));
            }
            (_mm_movemask_epi8(hits) as u32, _mm_movemask_epi8(v) as u32)
        }
    }

    /// Bit k set where `chunk[k]` is not an ASCII digit.
    #[inline(always)]
    #[allow(unused_unsafe)]
    pub(super) fn non_digits16(chunk: &[u8]) -> u32 {
        let v = load(chunk);
        // SAFETY: as in `find16`. Bytes >= 0x80 are negative as i8, so below '0'.
        unsafe {
            let below = _mm_cmplt_epi8(v, _mm_set1_epi8(b'0' as i8));
            let above = _mm_cmpgt_epi8(v, _mm_set1_epi8(b'9' as i8));
            _mm_movemask_epi8(_mm_or_si128(below, above)) as u32
        }
    }
}
