//! Which of the points we parsed did the upstream store? Only those go to Kafka.

use http::StatusCode;

use crate::line_protocol::Point;
use crate::upstream::BufferedResponse;

/// `{"error":"partial write of line protocol occurred","data":[{"line_number":N,…}]}`:
/// the line numbers InfluxDB 3 refused while storing the others.
fn v3_rejected_lines(body: &[u8]) -> Option<Vec<usize>> {
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
    /// InfluxDB 3's partial write: every line was stored but those it names (1-based).
    AllBut(Vec<usize>),
}

/// What a `partial write: … dropped=N` answer says.
#[derive(Debug, PartialEq, Eq, Default)]
pub struct PartialWrite {
    /// Points dropped after parsing, e.g. for a field type conflict.
    pub dropped: u64,
    /// The conflict InfluxDB names, if any: these points were dropped.
    pub conflict: Option<FieldTypeConflict>,
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
        if !status.is_client_error() {
            return Accepted::Nothing;
        }
        let Some(message) = error_message else {
            return Accepted::Nothing;
        };
        let Some(at) = message.find("partial write") else {
            return Accepted::Nothing;
        };
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
        })
    }
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
        assert_eq!(Accepted::from_answer(&answer), Accepted::AllBut(vec![2]));
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
            Accepted::Nothing
        );
    }

    #[test]
    fn v1_parse_errors_drop_nothing_that_parsed() {
        let body = Some("partial write: unable to parse 'cpu v=1.1.1': invalid number dropped=0");
        assert_eq!(
            Accepted::from_response(StatusCode::BAD_REQUEST, body),
            Accepted::Partial(PartialWrite {
                dropped: 0,
                conflict: None
            })
        );
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
}
