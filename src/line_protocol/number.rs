//! Field value and timestamp tokens: the server's `scanNumber`, `scanBoolean` and
//! `scanTime`, and the conversions its field iterator applies afterwards.

use nom::branch::alt;
use nom::bytes::complete::{tag, take_till};
use nom::character::complete::{char, digit0};
use nom::combinator::{all_consuming, opt, recognize};
use nom::{IResult, Parser};

use super::Reason;

/// Digits of the longest int64 (and of the shortest one without its sign): below this the
/// server skips the range check because nothing shorter can overflow.
const MAX_INT64_DIGITS: usize = 19;
const MAX_UINT64_DIGITS: usize = 20;
/// Non-scientific floats shorter than this cannot overflow, so the server does not parse them.
const MAX_FLOAT64_DIGITS: usize = 25;

#[inline]
fn is_numeric(c: u8) -> bool {
    c.is_ascii_digit() || c == b'.'
}

/// The server's `scanNumber`: validates the number starting at `start` and returns where
/// it ends (at `,`, space or the end of the line).
///
/// Its rules are looser than a grammar (`1e5e5` scans, then fails as a float) and are
/// reproduced step by step, including which errors are "invalid number" and which are
/// range errors.
#[inline]
pub(crate) fn scan_number(b: &[u8], start: usize, allow_unsigned: bool) -> Result<usize, Reason> {
    let len = b.len();
    let mut i = start;
    let mut is_int = false;
    let mut is_unsigned = false;
    if i < len && b[i] == b'-' {
        i += 1;
        if i == len {
            return Err(Reason::InvalidNumber);
        }
    }
    let mut decimal = false;
    let mut scientific = false;
    while i < len {
        let c = b[i];
        if c == b',' || c == b' ' {
            break;
        }
        if c.is_ascii_digit() {
            i += 1;
            continue;
        }
        if c == b'i' && i > start && !(is_int || is_unsigned) {
            is_int = true;
            i += 1;
            continue;
        }
        if c == b'u' && i > start && !(is_int || is_unsigned) {
            is_unsigned = true;
            i += 1;
            continue;
        }
        if c == b'.' {
            if decimal {
                return Err(Reason::InvalidNumber);
            }
            decimal = true;
        }
        if i > start && (c == b'e' || c == b'E') {
            scientific = true;
            i += 1;
            continue;
        }
        if (c == b'+' || c == b'-') && i > 0 && (b[i - 1] == b'e' || b[i - 1] == b'E') {
            i += 1;
            continue;
        }
        if !is_numeric(c) {
            // Covers the server's separate NaN check: it reports the same error.
            return Err(Reason::InvalidNumber);
        }
        i += 1;
    }
    if (is_int || is_unsigned) && (decimal || scientific) {
        return Err(Reason::InvalidNumber);
    }
    // The server does not discount the `u` suffix here, only `i`.
    let mut digits = i - start;
    if is_int {
        digits -= 1;
    }
    if decimal {
        digits -= 1;
    }
    if b[start] == b'-' {
        digits -= 1;
    }
    if digits == 0 {
        return Err(Reason::InvalidNumber);
    }
    if is_int {
        if b[i - 1] != b'i' {
            return Err(Reason::InvalidNumber);
        }
        let text = &b[start..i - 1];
        if text.len() >= MAX_INT64_DIGITS && parse_i64(text).is_none() {
            return Err(Reason::IntegerOutOfRange(lossy(text)));
        }
    } else if is_unsigned {
        // InfluxDB 1.x OSS builds reject unsigned integers at exactly this point.
        if !allow_unsigned {
            return Err(Reason::InvalidNumber);
        }
        if b[i - 1] != b'u' || b[start] == b'-' {
            return Err(Reason::InvalidNumber);
        }
        let text = &b[start..i - 1];
        if text.len() >= MAX_UINT64_DIGITS && parse_u64(text).is_none() {
            return Err(Reason::UnsignedOutOfRange(lossy(text)));
        }
    } else {
        let text = &b[start..i];
        if (scientific || text.len() >= MAX_FLOAT64_DIGITS) && parse_f64(text).is_none() {
            return Err(Reason::InvalidFloat);
        }
    }
    Ok(i)
}

/// The server's `scanBoolean`: `t`, `T`, `true`, `True`, `TRUE` and the `f` forms.
#[inline]
pub(crate) fn scan_boolean(b: &[u8], start: usize) -> Result<usize, Reason> {
    let rest = &b[start..];
    let token: IResult<&[u8], &[u8], ()> = take_till(|c| c == b',' || c == b' ').parse(rest);
    let token = match token {
        Ok((_, t)) => t,
        Err(_) => return Err(Reason::InvalidBoolean),
    };
    if parse_bool(token).is_none() {
        return Err(Reason::InvalidBoolean);
    }
    Ok(start + token.len())
}

/// Reads a boolean token that [`scan_boolean`] accepted.
#[inline]
pub(crate) fn parse_bool(token: &[u8]) -> Option<bool> {
    let parsed: IResult<&[u8], &[u8], ()> = all_consuming(alt((
        alt((tag("true"), tag("True"), tag("TRUE"), tag("t"), tag("T"))),
        alt((tag("false"), tag("False"), tag("FALSE"), tag("f"), tag("F"))),
    )))
    .parse(token);
    match parsed {
        Ok((_, t)) => Some(matches!(t.first(), Some(b't' | b'T'))),
        Err(_) => None,
    }
}

/// The server's `scanTime` token plus `strconv.ParseInt`: an optional `-` and digits,
/// ending at a space, a newline or the end of the line.
///
/// Returns where the token ends and its value (`None` when there is no token).
pub(crate) fn scan_timestamp(b: &[u8], start: usize) -> Result<(usize, Option<i64>), Reason> {
    let rest = &b[start..];
    let token: IResult<&[u8], &[u8], ()> = recognize((opt(char('-')), digit0)).parse(rest);
    let (after, token) = match token {
        Ok(v) => v,
        Err(_) => return Err(Reason::BadTimestamp),
    };
    if let Some(&c) = after.first() {
        if c != b' ' && c != b'\n' {
            return Err(Reason::BadTimestamp);
        }
    }
    let end = start + token.len();
    if token.is_empty() {
        return Ok((end, None));
    }
    if token == b"-" {
        return Err(Reason::TimestampSyntax(lossy(token)));
    }
    match parse_i64(token) {
        Some(v) => Ok((end, Some(v))),
        None => Err(Reason::TimestampOutOfRange(lossy(token))),
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Parses `-?[0-9]+` (leading zeros allowed); `None` on overflow or bad syntax.
#[inline]
pub(crate) fn parse_i64(text: &[u8]) -> Option<i64> {
    let (neg, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    if digits.is_empty() {
        return None;
    }
    if digits.len() <= 19 {
        let u = parse_digits(digits)?;
        return if neg {
            // 2^63 is i64::MIN.
            (u <= 1 << 63).then(|| (u as i64).wrapping_neg())
        } else {
            i64::try_from(u).ok()
        };
    }
    // Longer only with leading zeros: accumulate negatively so that i64::MIN is reachable.
    let mut v: i64 = 0;
    for &c in digits {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v.checked_mul(10)?.checked_sub(i64::from(d))?;
    }
    if neg {
        Some(v)
    } else {
        v.checked_neg()
    }
}

/// Parses `[0-9]+`; `None` on overflow or bad syntax.
#[inline]
pub(crate) fn parse_u64(text: &[u8]) -> Option<u64> {
    if text.is_empty() {
        return None;
    }
    if text.len() <= 19 {
        return parse_digits(text);
    }
    let mut v: u64 = 0;
    for &c in text {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d))?;
    }
    Some(v)
}

/// Value of at most 19 ASCII digits (which cannot overflow a u64); `None` if any byte is
/// not a digit. Eight digits at a time.
#[inline]
fn parse_digits(mut d: &[u8]) -> Option<u64> {
    debug_assert!(d.len() <= 19);
    let mut v: u64 = 0;
    while d.len() >= 8 {
        let mut chunk = [0u8; 8];
        chunk.copy_from_slice(&d[..8]);
        let x = u64::from_le_bytes(chunk);
        // Every byte in '0'..='9': high nibble 3, and still 3 after adding 6.
        let nibbles = (x & 0xF0F0_F0F0_F0F0_F0F0)
            | ((x.wrapping_add(0x0606_0606_0606_0606) & 0xF0F0_F0F0_F0F0_F0F0) >> 4);
        if nibbles != 0x3333_3333_3333_3333 {
            return None;
        }
        v = v * 100_000_000 + eight_digits(x);
        d = &d[8..];
    }
    for &c in d {
        let digit = c.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        v = v * 10 + u64::from(digit);
    }
    Some(v)
}

/// Eight ASCII digits, first digit in the lowest byte, to their value (SWAR).
#[inline(always)]
fn eight_digits(x: u64) -> u64 {
    const MASK: u64 = 0x0000_00FF_0000_00FF;
    const MUL1: u64 = 100 + (1_000_000 << 32);
    const MUL2: u64 = 1 + (10_000 << 32);
    let x = x.wrapping_sub(0x3030_3030_3030_3030);
    let x = x.wrapping_mul(10).wrapping_add(x >> 8);
    ((x & MASK)
        .wrapping_mul(MUL1)
        .wrapping_add(((x >> 16) & MASK).wrapping_mul(MUL2)))
        >> 32
}

/// Parses a float as Go's `strconv.ParseFloat` does for the characters `scanNumber`
/// lets through; `None` for bad syntax and for overflow to infinity.
#[inline]
pub(crate) fn parse_f64(text: &[u8]) -> Option<f64> {
    if let Some(v) = parse_f64_fast(text) {
        return Some(v);
    }
    // A leading '+' is the one form Rust accepts and Go does not here; scanNumber never
    // produces it, but keep the two grammars identical regardless.
    if text.first() == Some(&b'+') {
        return None;
    }
    let s = std::str::from_utf8(text).ok()?;
    let v: f64 = s.parse().ok()?;
    if v.is_finite() {
        Some(v)
    } else {
        None
    }
}

/// Exact powers of ten representable in an f64.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// Clinger's fast path for plain decimals (`-?digits[.digits]`): when the digits fit in
/// 2^53 and the scale is an exact power of ten, one IEEE division is correctly rounded.
#[inline]
fn parse_f64_fast(text: &[u8]) -> Option<f64> {
    let (neg, body) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    if body.len() > 20 {
        return None;
    }
    let (int, frac) = match body.iter().position(|&c| c == b'.') {
        Some(dot) => (&body[..dot], &body[dot + 1..]),
        None => (body, &body[body.len()..]),
    };
    let digits = int.len() + frac.len();
    if digits == 0 || digits > 19 {
        return None;
    }
    let int = if int.is_empty() {
        0
    } else {
        parse_digits(int)?
    };
    let frac_value = if frac.is_empty() {
        0
    } else {
        parse_digits(frac)?
    };
    let mantissa = int * 10u64.pow(frac.len() as u32) + frac_value;
    if mantissa > (1u64 << 53) {
        return None;
    }
    let v = mantissa as f64 / POW10[frac.len()];
    Some(if neg { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(s: &str, unsigned: bool) -> Result<usize, Reason> {
        scan_number(s.as_bytes(), 0, unsigned)
    }

    #[test]
    fn number_forms() {
        for ok in [
            "1", "-1", "1.5", ".5", "1.", "-.5", "1e5", "1E5", "1e+5", "1e-5", "1.5e3", "1i",
            "-1i", "007i", "1u", "0u",
        ] {
            assert_eq!(num(ok, true), Ok(ok.len()), "{ok}");
        }
        for bad in [
            "-", ".", "-.", "1.1.1", "1i5", "1.5i", "1e5i", "-1u", "1.5u", "-i", "NaN", "nan",
            "1a", "1ii", "+1", "1+1",
        ] {
            assert_eq!(num(bad, true), Err(Reason::InvalidNumber), "{bad}");
        }
        for bad in ["1e", "1e5e5", "-e5", "1e.5", "1e400", "-1e400"] {
            assert_eq!(num(bad, true), Err(Reason::InvalidFloat), "{bad}");
        }
        assert_eq!(num("1e-400", true), Ok(6));
    }

    #[test]
    fn number_stops_at_separators() {
        assert_eq!(scan_number(b"12,x", 0, true), Ok(2));
        assert_eq!(scan_number(b"12i 5", 0, true), Ok(3));
    }

    #[test]
    fn unsigned_disabled_is_invalid_number() {
        assert_eq!(num("1u", false), Err(Reason::InvalidNumber));
        assert_eq!(num("1i", false), Ok(2));
    }

    #[test]
    fn integer_ranges() {
        assert_eq!(num("9223372036854775807i", true), Ok(20));
        assert_eq!(num("-9223372036854775808i", true), Ok(21));
        assert_eq!(
            num("9223372036854775808i", true),
            Err(Reason::IntegerOutOfRange("9223372036854775808".into()))
        );
        assert_eq!(num("18446744073709551615u", true), Ok(21));
        assert_eq!(
            num("18446744073709551616u", true),
            Err(Reason::UnsignedOutOfRange("18446744073709551616".into()))
        );
        // Long runs of leading zeros are still in range.
        assert_eq!(num("000000000000000000000000001i", true), Ok(28));
    }

    #[test]
    fn long_plain_floats_are_range_checked() {
        let huge = format!("{}.0", "9".repeat(400));
        assert_eq!(num(&huge, true), Err(Reason::InvalidFloat));
        let long = format!("0.{}", "1".repeat(40));
        assert_eq!(num(&long, true), Ok(long.len()));
    }

    #[test]
    fn booleans() {
        for ok in [
            "t", "T", "true", "True", "TRUE", "f", "F", "false", "False", "FALSE",
        ] {
            assert_eq!(scan_boolean(ok.as_bytes(), 0), Ok(ok.len()), "{ok}");
            assert_eq!(parse_bool(ok.as_bytes()), Some(ok.starts_with(['t', 'T'])));
        }
        for bad in ["tRUE", "truE", "yes", "1", "tru", "falsey", "x", "\t"] {
            assert_eq!(
                scan_boolean(bad.as_bytes(), 0),
                Err(Reason::InvalidBoolean),
                "{bad}"
            );
        }
        assert_eq!(scan_boolean(b"true,x", 0), Ok(4));
    }

    #[test]
    fn timestamps() {
        assert_eq!(scan_timestamp(b"123", 0), Ok((3, Some(123))));
        assert_eq!(scan_timestamp(b"-123 ", 0), Ok((4, Some(-123))));
        assert_eq!(scan_timestamp(b"", 0), Ok((0, None)));
        assert_eq!(scan_timestamp(b"\nx", 0), Ok((0, None)));
        assert_eq!(scan_timestamp(b"12a", 0), Err(Reason::BadTimestamp));
        assert_eq!(scan_timestamp(b"1-2", 0), Err(Reason::BadTimestamp));
        assert_eq!(scan_timestamp(b"123\r", 0), Err(Reason::BadTimestamp));
        assert_eq!(
            scan_timestamp(b"-", 0),
            Err(Reason::TimestampSyntax("-".into()))
        );
        assert_eq!(
            scan_timestamp(b"9223372036854775808", 0),
            Err(Reason::TimestampOutOfRange("9223372036854775808".into()))
        );
    }

    #[test]
    fn integer_parsing_matches_std() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for len in 1..=22 {
            for _ in 0..200 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let digits: String = (0..len)
                    .map(|k| char::from(b'0' + ((x >> (k % 60)) % 10) as u8))
                    .collect();
                for text in [digits.clone(), format!("-{digits}")] {
                    assert_eq!(
                        parse_i64(text.as_bytes()),
                        text.parse::<i64>().ok(),
                        "{text}"
                    );
                }
                assert_eq!(
                    parse_u64(digits.as_bytes()),
                    digits.parse::<u64>().ok(),
                    "{digits}"
                );
                let dotted = format!("{}.{}", &digits[..len / 2], &digits[len / 2..]);
                let expect: f64 = dotted.parse().unwrap_or(f64::NAN);
                assert_eq!(
                    parse_f64(dotted.as_bytes()).map(f64::to_bits),
                    Some(expect.to_bits()),
                    "{dotted}"
                );
            }
        }
        for bad in ["", "-", "1a", "12345678a", "1234567/", "--1", "1.2.3"] {
            assert_eq!(parse_i64(bad.as_bytes()), None, "{bad}");
        }
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775808"), None);
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
    }

    #[test]
    fn float_parsing_matches_std() {
        for s in [
            "0",
            "-0",
            "1.",
            ".5",
            "123.456",
            "0.1",
            "9007199254740993",
            "1.7976931348623157e308",
            "4.9e-324",
            "12345678901234567890.5",
        ] {
            let expect: f64 = s.parse().unwrap_or(f64::NAN);
            let got = parse_f64(s.as_bytes()).unwrap_or(f64::NAN);
            assert_eq!(got.to_bits(), expect.to_bits(), "{s}");
        }
        assert_eq!(parse_f64(b"1e309"), None);
        assert_eq!(parse_f64(b"+1"), None);
        assert_eq!(parse_f64(b"inf"), None);
    }
}
