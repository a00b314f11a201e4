//! What a write request addresses: its endpoint, database or bucket, and precision.

use std::borrow::Cow;

use crate::http::error::{Dialect, ProxyError};
use crate::line_protocol::Precision;

/// The target of one write, from its query parameters.
#[derive(Debug, Clone)]
pub struct WriteTarget {
    pub dialect: Dialect,
    pub org: String,
    pub bucket: String,
    pub db: String,
    pub rp: String,
    pub precision: Precision,
    /// InfluxDB 3's `precision=auto`: each timestamp's unit is guessed from its size.
    pub auto_precision: bool,
}

impl WriteTarget {
    /// Reads the parameters of `/api/v2/write` (`org`, `orgID`, `bucket`, `precision`)
    /// or of v1 `/write` (`db`, `rp`, `precision`). `u` and `p` are never kept.
    ///
    /// With `influxdb1_semantics`, v1 precision is read as InfluxDB 1.x reads it ([`influxdb1_precision`]).
    pub fn from_query(
        dialect: Dialect,
        query: Option<&str>,
        influxdb1_semantics: bool,
    ) -> Result<WriteTarget, ProxyError> {
        let mut org = String::new();
        let mut org_id = String::new();
        let mut bucket = String::new();
        let mut db = String::new();
        let mut rp = String::new();
        let mut precision: Option<Cow<'_, str>> = None;
        for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            match key.as_ref() {
                "org" => org = value.into_owned(),
                "orgID" => org_id = value.into_owned(),
                "bucket" => bucket = value.into_owned(),
                "db" => db = value.into_owned(),
                "rp" => rp = value.into_owned(),
                "precision" => precision = Some(value),
                _ => {}
            }
        }
        if org.is_empty() {
            org = org_id;
        }
        let auto_precision = dialect == Dialect::V3
            && matches!(precision.as_deref(), None | Some("") | Some("auto"));
        let precision = match (dialect, precision.as_deref()) {
            (_, None | Some("")) => Precision::Nanosecond,
            (Dialect::V3, Some(p)) => v3_precision(p).ok_or(ProxyError::InvalidPrecision {
                valid: "auto, nanosecond, microsecond, millisecond, and second",
            })?,
            (Dialect::V2, Some(p)) => {
                Precision::from_v2_param(p).ok_or(ProxyError::InvalidPrecision {
                    valid: "ns, us, ms, and s",
                })?
            }
            (Dialect::V1, Some(p)) if influxdb1_semantics => influxdb1_precision(p),
            (Dialect::V1, Some(p)) => Precision::from_v1_param(p).unwrap_or(Precision::Nanosecond),
        };
        match dialect {
            // InfluxDB 1.8 maps a v2 bucket to `db/rp`.
            Dialect::V2 => {
                let (d, r) = bucket.split_once('/').unwrap_or((&bucket, ""));
                db = d.to_owned();
                rp = r.to_owned();
            }
            Dialect::V3 => bucket = db.clone(),
            Dialect::V1 => {
                bucket = if rp.is_empty() {
                    db.clone()
                } else {
                    format!("{db}/{rp}")
                };
            }
        }
        Ok(WriteTarget {
            dialect,
            org,
            bucket,
            db,
            rp,
            precision,
            auto_precision,
        })
    }

    pub fn endpoint_label(&self) -> &'static str {
        match self.dialect {
            Dialect::V1 => "v1",
            Dialect::V2 => "v2",
            Dialect::V3 => "v3",
        }
    }

    /// The precision as the request gave it, for the records' `precision` header.
    pub fn precision_label(&self) -> &'static str {
        if self.auto_precision {
            "auto"
        } else {
            self.precision.as_v2_str()
        }
    }

    /// A point's time in nanoseconds: its own (parsed in the request's precision, or
    /// guessed as InfluxDB 3 does for `precision=auto`), else the proxy's stamp.
    pub fn time_ns(&self, parsed: Option<i64>, stamp_ns: i64) -> i64 {
        match parsed {
            Some(raw) if self.auto_precision => {
                raw.saturating_mul(guess_v3_precision(raw).nanos_per_unit())
            }
            Some(time) => time,
            None => stamp_ns,
        }
    }
}

/// InfluxDB 3's precision names; `auto` is read as nanoseconds and rescaled per point.
fn v3_precision(param: &str) -> Option<Precision> {
    match param {
        "auto" | "nanosecond" | "ns" => Some(Precision::Nanosecond),
        "microsecond" | "us" => Some(Precision::Microsecond),
        "millisecond" | "ms" => Some(Precision::Millisecond),
        "second" | "s" => Some(Precision::Second),
        _ => None,
    }
}

/// InfluxDB 3's guess for `precision=auto`, from the magnitude of the timestamp.
fn guess_v3_precision(timestamp: i64) -> Precision {
    match timestamp.unsigned_abs() / 1_000_000_000 {
        0..5 => Precision::Second,
        5..5_000 => Precision::Millisecond,
        5_000..5_000_000 => Precision::Microsecond,
        _ => Precision::Nanosecond,
    }
}

/// InfluxDB 1.x (`models.GetPrecisionMultiplier`) knows only `u`, `ms`, `s`, `m` and
/// `h`; anything else, `us` and `ns` included, silently means nanoseconds. The tee
/// must read timestamps the way the server that stored them did.
pub fn influxdb1_precision(param: &str) -> Precision {
    match param {
        "u" => Precision::Microsecond,
        "ms" => Precision::Millisecond,
        "s" => Precision::Second,
        "m" => Precision::Minute,
        "h" => Precision::Hour,
        _ => Precision::Nanosecond,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_bucket_is_db_slash_rp() {
        let target = WriteTarget::from_query(
            Dialect::V1,
            Some("db=telegraf&rp=week&precision=s&u=x&p=y"),
            true,
        )
        .unwrap();
        assert_eq!(target.bucket, "telegraf/week");
        assert_eq!(target.precision, Precision::Second);
        let target =
            WriteTarget::from_query(Dialect::V1, Some("db=telegraf&precision=rfc3339"), false)
                .unwrap();
        assert_eq!(target.bucket, "telegraf");
        assert_eq!(target.precision, Precision::Nanosecond);
    }

    #[test]
    fn v2_precision_is_checked() {
        let target = WriteTarget::from_query(
            Dialect::V2,
            Some("org=o&bucket=db%2Frp&precision=ms"),
            false,
        )
        .unwrap();
        assert_eq!((target.db.as_str(), target.rp.as_str()), ("db", "rp"));
        assert_eq!(target.precision, Precision::Millisecond);
        assert!(WriteTarget::from_query(Dialect::V2, Some("bucket=b&precision=h"), false).is_err());
        let target =
            WriteTarget::from_query(Dialect::V2, Some("orgID=0123&bucket=b"), false).unwrap();
        assert_eq!(target.org, "0123");
    }

    #[test]
    fn influxdb3_auto_precision_guesses_per_point() {
        let target = WriteTarget::from_query(Dialect::V3, Some("db=metrics"), false).unwrap();
        assert!(target.auto_precision);
        assert_eq!(target.bucket, "metrics");
        assert_eq!(
            target.time_ns(Some(1_708_976_567), 0),
            1_708_976_567_000_000_000
        );
        assert_eq!(
            target.time_ns(Some(1_708_976_567_123), 0),
            1_708_976_567_123_000_000
        );
        assert_eq!(
            target.time_ns(Some(1_708_976_567_123_456), 0),
            1_708_976_567_123_456_000
        );
        assert_eq!(
            target.time_ns(Some(1_708_976_567_123_456_789), 0),
            1_708_976_567_123_456_789
        );
        let target =
            WriteTarget::from_query(Dialect::V3, Some("db=m&precision=second"), false).unwrap();
        assert!(!target.auto_precision);
        assert_eq!(target.precision, Precision::Second);
        assert!(WriteTarget::from_query(Dialect::V3, Some("db=m&precision=h"), false).is_err());
    }

    #[test]
    fn influxdb1_reads_us_and_ns_as_nanoseconds() {
        let us = |semantics| {
            WriteTarget::from_query(Dialect::V1, Some("db=d&precision=us"), semantics)
                .unwrap()
                .precision
        };
        assert_eq!(us(true), Precision::Nanosecond);
        assert_eq!(us(false), Precision::Microsecond);
        assert_eq!(influxdb1_precision("u"), Precision::Microsecond);
    }
}
