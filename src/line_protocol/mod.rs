//! InfluxDB line protocol, parsed exactly as the InfluxDB OSS server parses it.
//!
//! The proxy forwards each write untouched and tees to Kafka only what InfluxDB stored,
//! so this parser must accept, reject and read values as the server's `models` package
//! does (1.8+/2.x, unsigned integers optionally enabled). The rules and their sources are
//! listed in `tests/fixtures/lp-corpus/RULES.md`; `scan.rs` cites the server function each
//! rule comes from.
//!
//! It is zero-copy: [`lines`] walks a request body and yields one [`Line`] per logical
//! line with a borrowed [`Point`] or a [`ParseError`]. Names and values are decoded on
//! access and allocate only when they contain escapes.
//!
//! Two paths, one result:
//! - `fast.rs` handles ordinary lines in a single pass (SSE2 scans, field positions kept
//!   in the point). It gives up on anything unusual, including every error.
//! - `scan.rs` emulates the server section by section (line splitter, key scanner, field
//!   scanners, number and time rules) and produces the server's error messages.
//!
//! Tests, the corpus run and the fuzz target check that both paths agree on every input.
//!
//! Where the server's scanners disagree with each other, the parser reads the line as
//! the server stores it (checked against InfluxDB 1.6 and 2.7): a field set that
//! `scanFields` and `walkFields` delimit differently (`a\\=1,b=2` is one field `a\=1,b`),
//! an empty first field key after a tab or NUL (`m \t=1`), a newline in a name of a
//! multi-line point. [`Point::write_line_protocol`] writes those lines back verbatim.
//! One kind is refused: a value `walkFields` cuts out that does not convert
//! (`a\\="=x"`), which the server's parser passes but its storage engine fails with 500.
//!
//! [`ParseOptions::reserved_tag_keys`] follows 2.x, whose parser refuses the tag keys
//! `_measurement`, `_field`, `time`, `\x00` and `\xff`; 1.x accepts them. What the storage
//! layer drops after parsing (a `time` tag in 1.x, a point whose only field is `time`) is
//! the write path's business.

mod fast;
mod number;
mod point;
mod precision;
mod scan;

pub use point::{Fields, Point, Tags};
pub use precision::Precision;

use std::borrow::Cow;
use std::ops::Range;

/// How to read a request body.
#[derive(Clone, Copy, Debug)]
pub struct ParseOptions {
    /// Unit of the timestamps in the body.
    pub precision: Precision,
    /// Accept `123u` unsigned integers (InfluxDB 2.x). InfluxDB 1.x OSS builds reject
    /// them with "invalid number".
    pub allow_unsigned: bool,
    /// Refuse the tag keys InfluxDB 2.x reserves (`_measurement`, `_field`, `time`, and
    /// the internal `\x00` and `\xff`), as 2.x's parser does. 1.x accepts them.
    pub reserved_tag_keys: bool,
}

impl Default for ParseOptions {
    fn default() -> Self {
        ParseOptions {
            precision: Precision::Nanosecond,
            allow_unsigned: true,
            reserved_tag_keys: true,
        }
    }
}

impl ParseOptions {
    /// InfluxDB 1.x OSS: no unsigned integers, no reserved tag keys.
    pub fn influxdb1(precision: Precision) -> Self {
        ParseOptions {
            precision,
            allow_unsigned: false,
            reserved_tag_keys: false,
        }
    }

    /// InfluxDB 2.x: unsigned integers, reserved tag keys refused.
    pub fn influxdb2(precision: Precision) -> Self {
        ParseOptions {
            precision,
            ..ParseOptions::default()
        }
    }
}

/// A field value, typed as the server types it.
#[derive(Clone, Debug, PartialEq)]
pub enum FieldValue<'a> {
    Float(f64),
    Integer(i64),
    Unsigned(u64),
    String(Cow<'a, str>),
    Boolean(bool),
}

impl FieldValue<'_> {
    /// Name of the type as InfluxDB reports it.
    pub fn type_name(&self) -> &'static str {
        match self {
            FieldValue::Float(_) => "float",
            FieldValue::Integer(_) => "integer",
            FieldValue::Unsigned(_) => "unsigned",
            FieldValue::String(_) => "string",
            FieldValue::Boolean(_) => "boolean",
        }
    }
}

/// A rejected line. `message` is the server's text:
/// `unable to parse '<line>': <reason>`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

/// One non-blank, non-comment logical line of a body.
#[derive(Debug)]
pub struct Line<'a> {
    /// 1-based number of the (first) physical line.
    pub number: usize,
    /// Byte range of the logical line in the input, excluding its terminating `\n`.
    pub span: Range<usize>,
    pub result: Result<Point<'a>, ParseError>,
}

/// Iterates over the non-blank, non-comment lines of `input`.
///
/// One bad line never hides the others: each line carries its own result.
pub fn lines(input: &[u8], opts: ParseOptions) -> Lines<'_> {
    Lines {
        input,
        pos: 0,
        line_number: 1,
        opts,
        fast_path: true,
        more_follows: false,
    }
}

/// [`lines`] over one piece of a longer input, for reading a body in chunks.
///
/// With `more_follows`, the iterator stops before a line that reaches the end of
/// `input` (its end may depend on bytes not read yet: a quoted string may continue, and
/// a backslash before the last newline may hide it). [`Lines::consumed`] then says where
/// to resume, with [`Lines::next_line_number`] as `first_line_number`. The lines yielded
/// are exactly those that parsing the whole input at once would yield.
#[doc(hidden)]
pub fn lines_streaming(
    input: &[u8],
    opts: ParseOptions,
    first_line_number: usize,
    more_follows: bool,
) -> Lines<'_> {
    Lines {
        input,
        pos: 0,
        line_number: first_line_number,
        opts,
        fast_path: true,
        more_follows,
    }
}

/// [`lines`] without the single-pass fast path: every line goes through the
/// section-by-section emulation of the server. For tests and fuzzing, which check that
/// both give identical results.
#[doc(hidden)]
pub fn lines_exact_only(input: &[u8], opts: ParseOptions) -> Lines<'_> {
    Lines {
        input,
        pos: 0,
        line_number: 1,
        opts,
        fast_path: false,
        more_follows: false,
    }
}

/// Iterator returned by [`lines`].
#[derive(Clone, Debug)]
pub struct Lines<'a> {
    input: &'a [u8],
    pos: usize,
    line_number: usize,
    opts: ParseOptions,
    fast_path: bool,
    more_follows: bool,
}

impl Lines<'_> {
    /// Bytes of the input fully handled so far (see [`lines_streaming`]).
    #[doc(hidden)]
    pub fn consumed(&self) -> usize {
        self.pos.min(self.input.len())
    }

    /// Number of the physical line at [`Lines::consumed`].
    #[doc(hidden)]
    pub fn next_line_number(&self) -> usize {
        self.line_number
    }

    /// With more input to come, a line reaching the end of this piece is not final.
    #[inline]
    fn incomplete(&self, end: usize) -> bool {
        self.more_follows && end + 1 >= self.input.len()
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = Line<'a>;

    fn next(&mut self) -> Option<Line<'a>> {
        let input = self.input;
        while self.pos < input.len() {
            let start = self.pos;
            let fast = if self.fast_path {
                fast::parse_line(input, start, &self.opts)
            } else {
                None
            };
            if let Some((end, newlines, point)) = fast {
                if self.incomplete(end) {
                    return None;
                }
                let number = self.line_number;
                self.line_number += newlines + 1;
                self.pos = end + 1;
                return Some(Line {
                    number,
                    span: start..end,
                    result: Ok(point),
                });
            }
            let (end, inner_newlines) = scan::scan_line(input, start);
            if self.incomplete(end) {
                return None;
            }
            let number = self.line_number;
            self.line_number += inner_newlines + 1;
            self.pos = end + 1;

            let block = &input[start..end];
            let lead = scan::skip_ws(block, 0);
            if lead >= block.len() || block[lead] == b'#' {
                continue;
            }
            // A line can only end in '\n' when a string is still open at the end of input.
            let mut len = block.len();
            if block[len - 1] == b'\n' {
                len -= 1;
            }
            let text = &block[lead..len];
            let result = match scan::parse_point(text, &self.opts, inner_newlines > 0) {
                Ok(mut meta) => {
                    if meta.flags & scan::FLAG_VERBATIM != 0 && block[..lead].contains(&b' ') {
                        meta.flags |= scan::FLAG_LEAD_SPACE;
                    }
                    Ok(Point::new(text, lead, meta, fast::FieldTable::EMPTY))
                }
                Err(reason) => Err(ParseError {
                    line: number,
                    message: format!(
                        "unable to parse '{}': {}",
                        String::from_utf8_lossy(text),
                        reason
                    ),
                }),
            };
            return Some(Line {
                number,
                span: start..start + len,
                result,
            });
        }
        None
    }
}

/// Why the server rejects a line; `Display` gives its exact words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Reason {
    MissingMeasurement,
    MissingFields,
    MissingTagKey,
    MissingTagValue,
    InvalidTagFormat,
    ReservedTagKey(&'static str),
    DuplicateTags,
    MaxKeyLength(usize),
    MissingFieldKey,
    MissingFieldValue,
    InvalidNumber,
    InvalidBoolean,
    InvalidFloat,
    IntegerOutOfRange(String),
    UnsignedOutOfRange(String),
    UnbalancedQuotes,
    InvalidFieldFormat,
    InvalidValueFieldKey(String),
    BadTimestamp,
    TimestampSyntax(String),
    TimestampOutOfRange(String),
    TimeOutsideRange,
    PointIsInvalid,
    LineTooLong,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::MissingMeasurement => f.write_str("missing measurement"),
            Reason::MissingFields => f.write_str("missing fields"),
            Reason::MissingTagKey => f.write_str("missing tag key"),
            Reason::MissingTagValue => f.write_str("missing tag value"),
            Reason::InvalidTagFormat => f.write_str("invalid tag format"),
            Reason::ReservedTagKey(quoted) => write!(f, "cannot use reserved tag key {quoted}"),
            Reason::DuplicateTags => f.write_str("duplicate tags"),
            Reason::MaxKeyLength(n) => {
                write!(f, "max key length exceeded: {n} > {}", scan::MAX_KEY_LENGTH)
            }
            Reason::MissingFieldKey => f.write_str("missing field key"),
            Reason::MissingFieldValue => f.write_str("missing field value"),
            Reason::InvalidNumber => f.write_str("invalid number"),
            Reason::InvalidBoolean => f.write_str("invalid boolean"),
            Reason::InvalidFloat => f.write_str("invalid float"),
            Reason::IntegerOutOfRange(s) => {
                write!(f, "unable to parse integer {s}: strconv.ParseInt: parsing \"{s}\": value out of range")
            }
            Reason::UnsignedOutOfRange(s) => {
                write!(f, "unable to parse unsigned {s}: strconv.ParseUint: parsing \"{s}\": value out of range")
            }
            Reason::UnbalancedQuotes => f.write_str("unbalanced quotes"),
            Reason::InvalidFieldFormat => f.write_str("invalid field format"),
            Reason::InvalidValueFieldKey(k) => write!(f, "invalid value: field-key={k}"),
            Reason::BadTimestamp => f.write_str("bad timestamp"),
            Reason::TimestampSyntax(s) => {
                write!(f, "strconv.ParseInt: parsing \"{s}\": invalid syntax")
            }
            Reason::TimestampOutOfRange(s) => {
                write!(f, "strconv.ParseInt: parsing \"{s}\": value out of range")
            }
            Reason::TimeOutsideRange => {
                write!(
                    f,
                    "time outside range {} - {}",
                    scan::MIN_NANO_TIME,
                    scan::MAX_NANO_TIME
                )
            }
            Reason::PointIsInvalid => f.write_str("point is invalid"),
            Reason::LineTooLong => f.write_str("line too long"),
        }
    }
}

#[cfg(test)]
mod tests;
