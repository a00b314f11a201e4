//! Which of the points we parsed did the upstream store? Only those go to Kafka.

use std::collections::HashSet;

use http::StatusCode;

use crate::line_protocol::{Line, Point};
use crate::upstream::BufferedResponse;

/// `{"error":"partial write of line protocol occurred","data":[{"line_number":N,…}]}`:
/// the lines InfluxDB 3 refused while storing the others. It numbers the lines its
/// parser yields (`parse_lines(lp).enumerate()`, 1-based), which skips blank and
/// comment lines as [`crate::line_protocol::lines`] does.
fn v3_rejected_lines(body: &[u8]) -> Option<HashSet<usize>> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    if value.get("error")?.as_str()? != "partial write of line protocol occurred" {
        return None;
    }
    value
        .get("data")?
        .as_array()?
        .iter()
        .map(|item| item.get("line_number")?.as_u64().map(|n| n as usize))
        .collect()
}

/// The upstream's verdict on a write, as far as the tee is concerned.
#[derive(Debug, PartialEq, Eq)]
pub enum Accepted {
    /// Every point that parsed was stored.
    All,
    /// Nothing was stored (or the write was refused as a whole).
    Nothing,
    /// A partial write: the points that parsed were stored, except those the upstream dropped.
    Partial(PartialWrite),
    /// One shard group refused its points as a whole (`field type conflict` between
    /// two points of the write on a new field); other shard groups may have stored theirs.
    ShardGroupRefused,
    /// A server error (500) that says nothing of what was stored: InfluxDB writes shard
    /// groups in parallel and fails the write on the first group's error (1.6:
    /// `proto: field "tsdb.MeasurementFields.Name" contains invalid UTF-8`) while the
    /// others store theirs. What was stored is read back.
    Unknown,
    /// InfluxDB 3's partial write: every line was stored but those it names, numbered
    /// among the non-blank, non-comment lines (1-based).
    AllBut(HashSet<usize>),
}

/// What a `partial write: … dropped=N` answer says.
#[derive(Debug, PartialEq, Eq, Default)]
pub struct PartialWrite {
    /// Points dropped after parsing, e.g. for a field type conflict.
    pub dropped: u64,
    /// The conflict InfluxDB names, if any: the first of the first shard group that
    /// failed. These points were dropped in that group, not necessarily in others.
    pub conflict: Option<FieldTypeConflict>,
    /// The lines InfluxDB 1.x names in `unable to parse '<line>': …` (from the
    /// measurement on, without the newline): it refused them while parsing.
    pub unparsed: HashSet<Vec<u8>>,
    /// How many lines it names so, duplicates included.
    pub unparsed_count: usize,
}

/// `field type conflict: input field "F" on measurement "M" is type T, already exists as type U`.
#[derive(Debug, PartialEq, Eq)]
pub struct FieldTypeConflict {
    pub measurement: String,
    pub field: String,
    pub input_type: String,
}

impl Accepted {
    /// Reads an upstream answer: InfluxDB 3 names the lines it refused, 1.x and 2.x
    /// say it in an error message.
    pub fn from_answer(answer: &BufferedResponse) -> Accepted {
        if answer.status == StatusCode::BAD_REQUEST {
            if let Some(rejected) = v3_rejected_lines(&answer.decoded_body()) {
                return Accepted::AllBut(rejected);
            }
        }
        Accepted::from_response(answer.status, answer.error_message().as_deref())
    }

    /// Reads the upstream's status and error message.
    pub fn from_response(status: StatusCode, error_message: Option<&str>) -> Accepted {
        if status.is_success() {
            return Accepted::All;
        }
        let Some(message) = error_message else {
            return Accepted::Nothing;
        };
        let Some(at) = message.find("partial write") else {
            // 1.x (400) and 2.x (500, "unexpected error writing points to database: …")
            // name the whole-group refusal without "partial write".
            if message.trim_end().ends_with("field type conflict") {
                return Accepted::ShardGroupRefused;
            }
            if status == StatusCode::INTERNAL_SERVER_ERROR {
                return Accepted::Unknown;
            }
            return Accepted::Nothing;
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            return Accepted::Unknown;
        }
        if !status.is_client_error() {
            return Accepted::Nothing;
        }
        let detail = &message[at..];
        let dropped = detail
            .rfind("dropped=")
            .and_then(|i| {
                detail[i + 8..]
                    .trim()
                    .split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or(0);
        Accepted::Partial(PartialWrite {
            dropped,
            conflict: FieldTypeConflict::find(detail),
            unparsed: unparsed_lines(detail),
            unparsed_count: detail.matches("unable to parse '").count(),
        })
    }
}

/// The lines of `unable to parse '<line>': <reason>` messages (InfluxDB 1.x joins one
/// per refused line with `\n`, quoting the line verbatim). A line may itself hold
/// `': `, so every such end up to the next message is taken as a candidate: a wrong one
/// matches no line of ours.
fn unparsed_lines(message: &str) -> HashSet<Vec<u8>> {
    const OPEN: &str = "unable to parse '";
    const NEXT: &str = "\nunable to parse '";
    let mut lines = HashSet::new();
    let mut rest = message;
    while let Some(at) = rest.find(OPEN) {
        let quoted = &rest[at + OPEN.len()..];
        let scope = quoted.find(NEXT).map_or(quoted, |next| &quoted[..next]);
        let mut searched = 0;
        while let Some(end) = scope[searched..].find("': ") {
            lines.insert(scope.as_bytes()[..searched + end].to_vec());
            searched += end + 1;
        }
        rest = &quoted[scope.len()..];
    }
    lines
}

/// What the upstream's answer says of one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Stored,
    Dropped,
    /// The answer does not tell: ask InfluxDB ([`super::readback`]).
    Unknown,
}

/// The answer's word on every line of a write.
#[derive(Debug)]
pub struct Verdict {
    /// One per line, in order.
    pub fates: Vec<Fate>,
    /// Lines InfluxDB 3 stored but our (InfluxDB 1.x/2.x) parser refused: not teeable.
    pub unteeable: u64,
}

impl Accepted {
    /// Which lines the upstream stored, as far as its answer says. `time_ns` is a
    /// point's time as stored.
    pub fn verdict(&self, lines: &[Line<'_>], time_ns: impl Fn(&Point<'_>) -> i64) -> Verdict {
        let stored_if_parsed = |line: &Line<'_>| match line.result {
            Ok(_) => Fate::Stored,
            Err(_) => Fate::Dropped,
        };
        let mut unteeable = 0;
        let fates = match self {
            Accepted::All => lines.iter().map(stored_if_parsed).collect(),
            Accepted::Nothing => vec![Fate::Dropped; lines.len()],
            Accepted::AllBut(rejected) => lines
                .iter()
                .enumerate()
                .map(|(index, line)| {
                    let refused = rejected.contains(&(index + 1));
                    match (&line.result, refused) {
                        (Ok(_), false) => Fate::Stored,
                        (Err(_), false) => {
                            unteeable += 1;
                            Fate::Dropped
                        }
                        (_, true) => Fate::Dropped,
                    }
                })
                .collect(),
            Accepted::Partial(partial) => partial.verdict(lines, time_ns),
            Accepted::Unknown => lines
                .iter()
                .map(|line| match &line.result {
                    Ok(point) if !dropped_by_storage(point) => Fate::Unknown,
                    _ => Fate::Dropped,
                })
                .collect(),
            Accepted::ShardGroupRefused => {
                let reached = reached_storage(lines, &Default::default());
                if one_shard_group(&reached, &time_ns) {
                    vec![Fate::Dropped; lines.len()]
                } else {
                    lines
                        .iter()
                        .map(|line| match &line.result {
                            Ok(point) if !dropped_by_storage(point) => Fate::Unknown,
                            _ => Fate::Dropped,
                        })
                        .collect()
                }
            }
        };
        Verdict { fates, unteeable }
    }
}

impl PartialWrite {
    fn verdict(&self, lines: &[Line<'_>], time_ns: impl Fn(&Point<'_>) -> i64) -> Vec<Fate> {
        let reached = reached_storage(lines, &self.unparsed);
        let doubtful = |point: &Point<'_>| !dropped_by_storage(point);
        // Each line InfluxDB names as unparsable is one we refused too or one whose
        // text we found; else a text did not match ours (invalid UTF-8 comes back as
        // U+FFFD), and which of our points it was is unknown.
        let refused_by_us = lines.iter().filter(|line| line.result.is_err()).count();
        let found = lines
            .iter()
            .zip(&reached)
            .filter(|(line, point)| line.result.is_ok() && point.is_none())
            .count();
        let identified = refused_by_us + found >= self.unparsed_count;
        // An answer naming parse errors says nothing of what the storage dropped besides:
        // its `dropped=0` is the parser's. InfluxDB 1.6 was seen answering only the parse
        // errors of a write whose type-conflicting point it also dropped, so the points
        // of such a write are read back.
        let storage_answered = self.unparsed_count == 0;
        // Only lines refused while parsing: everything else was stored.
        if identified && storage_answered && self.dropped == 0 && self.conflict.is_none() {
            return fates_where(lines, &reached, |_| Fate::Stored);
        }
        // One shard group answered for all: its count says whether the conflict
        // named was its only one.
        if identified && storage_answered && one_shard_group(&reached, &time_ns) {
            let conflicting = |point: &Point<'_>| {
                dropped_by_storage(point)
                    || self.conflict.as_ref().is_some_and(|c| c.matches(point))
            };
            let explained = reached
                .iter()
                .flatten()
                .copied()
                .filter(|point| conflicting(point))
                .count();
            if explained as u64 == self.dropped {
                return fates_where(lines, &reached, |point| {
                    if conflicting(point) {
                        Fate::Dropped
                    } else {
                        Fate::Stored
                    }
                });
            }
        }
        fates_where(lines, &reached, |point| {
            if doubtful(point) {
                Fate::Unknown
            } else {
                Fate::Dropped
            }
        })
    }
}

/// The points that reached InfluxDB's storage: parsed by us and by it.
fn reached_storage<'p, 'a>(
    lines: &'p [Line<'a>],
    unparsed: &HashSet<Vec<u8>>,
) -> Vec<Option<&'p Point<'a>>> {
    lines
        .iter()
        .map(|line| {
            line.result
                .as_ref()
                .ok()
                .filter(|point| unparsed.is_empty() || !unparsed.contains(point.raw()))
        })
        .collect()
}

fn fates_where(
    lines: &[Line<'_>],
    reached: &[Option<&Point<'_>>],
    fate: impl Fn(&Point<'_>) -> Fate,
) -> Vec<Fate> {
    debug_assert_eq!(lines.len(), reached.len());
    reached
        .iter()
        .map(|point| match point {
            Some(point) => fate(point),
            None => Fate::Dropped,
        })
        .collect()
}

/// Whether all points fall into one shard group. Shard groups last a whole number of
/// hours in practice (at least one: InfluxDB raises shorter durations to 1h) and
/// start at multiples of their duration from Go's zero time, which is hour-aligned with
/// the Unix epoch: points within one UTC hour share a group.
fn one_shard_group(points: &[Option<&Point<'_>>], time_ns: impl Fn(&Point<'_>) -> i64) -> bool {
    const HOUR_NS: i64 = 3_600_000_000_000;
    let mut hours = points
        .iter()
        .flatten()
        .map(|point| time_ns(point).div_euclid(HOUR_NS));
    let Some(first) = hours.next() else {
        return true;
    };
    hours.all(|hour| hour == first)
}

impl FieldTypeConflict {
    fn find(message: &str) -> Option<FieldTypeConflict> {
        let rest = &message[message.find("field type conflict: input field \"")? + 34..];
        let (field, rest) = rest.split_once("\" on measurement \"")?;
        let (measurement, rest) = rest.split_once("\" is type ")?;
        let input_type = rest.split([',', ' ']).next()?.to_owned();
        Some(FieldTypeConflict {
            measurement: measurement.to_owned(),
            field: field.to_owned(),
            input_type,
        })
    }

    /// Whether InfluxDB dropped this point for the conflict.
    pub fn matches(&self, point: &Point<'_>) -> bool {
        point.measurement() == self.measurement.as_str()
            && point.fields().any(|(key, value)| {
                key == self.field.as_str() && value.type_name() == self.input_type
            })
    }
}

/// Whether InfluxDB's storage layer drops this parsed point (answering `partial write:
/// invalid tag key …` or `invalid field name …`, which name only the first such point):
/// a tag key `time` (1.x; 2.x refuses it while parsing), or no field but ones named
/// `time`. A `time` field beside others is skipped and the point stored.
pub fn dropped_by_storage(point: &Point<'_>) -> bool {
    point.tags().any(|(key, _)| key == "time") || point.fields().all(|(key, _)| key == "time")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn influxdb3_names_the_refused_lines() {
        let body = r#"{"error":"partial write of line protocol occurred","data":[{"original_line":"cpu,host=a val= 123","line_number":2,"error_message":"No fields were provided"}]}"#;
        let answer = BufferedResponse {
            status: StatusCode::BAD_REQUEST,
            headers: http::HeaderMap::new(),
            body: body.as_bytes().to_vec().into(),
        };
        assert_eq!(
            Accepted::from_answer(&answer),
            Accepted::AllBut(HashSet::from([2]))
        );
        // With accept_partial=false InfluxDB 3 stores nothing.
        let answer = BufferedResponse {
            body: br#"{"error":"parsing failed for write_lp endpoint","data":{"line_number":2}}"#
                .to_vec()
                .into(),
            ..answer
        };
        assert_eq!(Accepted::from_answer(&answer), Accepted::Nothing);
    }

    #[test]
    fn success_and_refusal() {
        assert_eq!(
            Accepted::from_response(StatusCode::NO_CONTENT, None),
            Accepted::All
        );
        assert_eq!(
            Accepted::from_response(StatusCode::UNAUTHORIZED, Some("x")),
            Accepted::Nothing
        );
        assert_eq!(
            Accepted::from_response(StatusCode::INTERNAL_SERVER_ERROR, Some("partial write")),
            Accepted::Unknown
        );
    }

    #[test]
    fn v1_parse_errors_drop_nothing_that_parsed() {
        let body = Some("partial write: unable to parse 'cpu v=1.1.1': invalid number dropped=0");
        assert_eq!(
            Accepted::from_response(StatusCode::BAD_REQUEST, body),
            Accepted::Partial(PartialWrite {
                dropped: 0,
                conflict: None,
                unparsed: HashSet::from([b"cpu v=1.1.1".to_vec()]),
                unparsed_count: 1,
            })
        );
    }

    #[test]
    fn v1_names_every_refused_line() {
        let message = "partial write: unable to parse 'm v=1u 5': invalid number\n\
                       unable to parse 'm s=\"a': b\" 6': invalid boolean\n\
                       unable to parse 'm\r': missing fields dropped=0";
        let Accepted::Partial(partial) =
            Accepted::from_response(StatusCode::BAD_REQUEST, Some(message))
        else {
            panic!("not partial")
        };
        for line in ["m v=1u 5", "m s=\"a': b\" 6", "m\r"] {
            assert!(partial.unparsed.contains(line.as_bytes()), "{line}");
        }
        assert!(!partial.unparsed.contains(b"m v=1u".as_slice()));
    }

    #[test]
    fn a_shard_group_refused_whole_is_not_nothing() {
        for (status, message) in [
            (StatusCode::BAD_REQUEST, "field type conflict"),
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "unexpected error writing points to database: field type conflict",
            ),
        ] {
            assert_eq!(
                Accepted::from_response(status, Some(message)),
                Accepted::ShardGroupRefused
            );
        }
    }

    #[test]
    fn storage_drops_time_tags_and_time_only_fields() {
        let body = "m,time=x v=1\nm time=1i\nm time=1i,v=2\nm,tim\\e=x v=1\nm v=1";
        let options = crate::line_protocol::ParseOptions::influxdb1(Default::default());
        let dropped: Vec<bool> = crate::line_protocol::lines(body.as_bytes(), options)
            .map(|line| dropped_by_storage(&line.result.unwrap()))
            .collect();
        assert_eq!(dropped, [true, true, false, false, false]);
    }

    #[test]
    fn field_type_conflicts_are_named() {
        let body = Some("partial write: field type conflict: input field \"v\" on measurement \"cpu\" is type integer, already exists as type float dropped=2");
        let Accepted::Partial(partial) = Accepted::from_response(StatusCode::BAD_REQUEST, body)
        else {
            panic!("not partial")
        };
        assert_eq!(partial.dropped, 2);
        let conflict = partial.conflict.unwrap();
        assert_eq!(
            (conflict.measurement.as_str(), conflict.field.as_str()),
            ("cpu", "v")
        );
        assert_eq!(conflict.input_type, "integer");
    }

    fn fates(accepted: &Accepted, body: &str) -> Vec<Fate> {
        let options = crate::line_protocol::ParseOptions::influxdb1(Default::default());
        let lines: Vec<Line<'_>> = crate::line_protocol::lines(body.as_bytes(), options).collect();
        accepted
            .verdict(&lines, |point| point.timestamp().unwrap_or(0))
            .fates
    }

    #[test]
    fn influxdb3_numbers_lines_without_blanks_and_comments() {
        let body = "# c\ncpu v=1\n\ncpu v=\n";
        // InfluxDB 3 numbers the lines of its parser, `parse_lines(lp).enumerate()`.
        let v3_refused: Vec<usize> = influxdb_line_protocol::parse_lines(body)
            .enumerate()
            .filter(|(_, line)| line.is_err())
            .map(|(index, _)| index + 1)
            .collect();
        assert_eq!(v3_refused, [2]);
        let answer = BufferedResponse {
            status: StatusCode::BAD_REQUEST,
            headers: http::HeaderMap::new(),
            body: br#"{"error":"partial write of line protocol occurred","data":[{"original_line":"cpu v=","line_number":2,"error_message":"x"}]}"#
                .to_vec()
                .into(),
        };
        let accepted = Accepted::from_answer(&answer);
        assert_eq!(fates(&accepted, body), [Fate::Stored, Fate::Dropped]);
    }

    fn conflict(dropped: u64) -> Accepted {
        let message = format!("partial write: field type conflict: input field \"v\" on measurement \"m\" is type integer, already exists as type float dropped={dropped}");
        Accepted::from_response(StatusCode::BAD_REQUEST, Some(&message))
    }

    #[test]
    fn one_shard_group_and_one_conflict_is_told_by_the_answer() {
        let body = "m v=1i 1\nm v=2 2\nm,time=x v=3 3\nm v=4i 4\n";
        assert_eq!(
            fates(&conflict(3), body),
            [Fate::Dropped, Fate::Stored, Fate::Dropped, Fate::Dropped]
        );
    }

    #[test]
    fn another_conflict_or_shard_group_needs_a_read_back() {
        // dropped=2 but one point is named: another conflict hides in the group.
        let body = "m v=1i 1\nm w=2i 2\nm v=3 3\n";
        assert_eq!(
            fates(&conflict(2), body),
            [Fate::Unknown, Fate::Unknown, Fate::Unknown]
        );
        // Two shard groups (hours apart): the count covers one of them only.
        let body = "m v=1i 1\nm v=2i 7200000000000\nm,time=x v=1 3\n";
        assert_eq!(
            fates(&conflict(1), body),
            [Fate::Unknown, Fate::Unknown, Fate::Dropped]
        );
        let body = "m v=1 1\nm v=1i 7200000000000\n";
        assert_eq!(
            fates(&Accepted::ShardGroupRefused, body),
            [Fate::Unknown, Fate::Unknown]
        );
        let body = "m v=1 1\nm v=1i 2\n";
        assert_eq!(
            fates(&Accepted::ShardGroupRefused, body),
            [Fate::Dropped, Fate::Dropped]
        );
    }

    #[test]
    fn lines_1x_could_not_parse_are_not_stored() {
        let message = "partial write: unable to parse 'm v=2u 2': invalid number dropped=0";
        let accepted = Accepted::from_response(StatusCode::BAD_REQUEST, Some(message));
        let options = crate::line_protocol::ParseOptions::influxdb2(Default::default());
        let body = "m v=1i 1\n  m v=2u 2\n";
        let lines: Vec<Line<'_>> = crate::line_protocol::lines(body.as_bytes(), options).collect();
        let verdict = accepted.verdict(&lines, |point| point.timestamp().unwrap_or(0));
        // The named line is not stored; the other is read back, as a parse-error answer
        // does not say what the storage dropped besides.
        assert_eq!(verdict.fates, [Fate::Unknown, Fate::Dropped]);
        // A named line we cannot find (its bytes came back mangled): all in doubt.
        let message =
            "partial write: unable to parse 'm,h=\u{FFFD} v=2u 2': invalid number dropped=0";
        let accepted = Accepted::from_response(StatusCode::BAD_REQUEST, Some(message));
        let body = b"m v=1i 1\nm,h=\xff v=2u 2\n";
        let lines: Vec<Line<'_>> = crate::line_protocol::lines(body, options).collect();
        let verdict = accepted.verdict(&lines, |point| point.timestamp().unwrap_or(0));
        assert_eq!(verdict.fates, [Fate::Unknown, Fate::Unknown]);
    }
}
