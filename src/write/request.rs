//! What a write request addresses: its endpoint, database or bucket, and precision.
//!
//! Each server reads a write's query parameters its own way, and the tee must read
//! them as the server that stores the write does: InfluxDB 1.x and 2.x take the
//! first value of a repeated parameter (Go's `url.Values.Get`), InfluxDB 3 refuses a
//! repeated one (`serde_urlencoded` into a struct), and the units of a timestamp and
//! of the receive-time stamp differ between versions.

use std::borrow::Cow;

use crate::config::UpstreamApi;
use crate::http::error::{Dialect, ProxyError};
use crate::line_protocol::Precision;

/// The server whose rules decide how a write's parameters (and body) are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    InfluxDb1,
    InfluxDb2,
    InfluxDb3,
    /// Another server on InfluxDB's API, or one not identified (yet): VictoriaMetrics
    /// answers `/ping` without a version. Read as the proxy always read it, and what
    /// the proxy cannot read it refuses itself, as without an upstream.
    Other,
    /// No upstream (`upstream = "none"`): the proxy decides on its own.
    Gateway,
}

impl Server {
    /// The rules of an upstream identified as speaking `api` (`None`: not identified),
    /// or of the gateway without an upstream.
    pub fn of(upstream: Option<Option<UpstreamApi>>) -> Server {
        match upstream {
            None => Server::Gateway,
            Some(Some(UpstreamApi::V1)) => Server::InfluxDb1,
            Some(Some(UpstreamApi::V2)) => Server::InfluxDb2,
            Some(Some(UpstreamApi::V3)) => Server::InfluxDb3,
            Some(None | Some(UpstreamApi::Auto)) => Server::Other,
        }
    }

    /// Whether the proxy itself refuses what it cannot read, instead of leaving it
    /// to a server whose rules it knows.
    pub fn proxy_decides(self) -> bool {
        matches!(self, Server::Gateway | Server::Other)
    }
}

/// The target of one write, from its query parameters.
#[derive(Debug, Clone)]
pub struct WriteTarget {
    pub dialect: Dialect,
    pub org: String,
    pub bucket: String,
    pub db: String,
    pub rp: String,
    /// The unit of the timestamps the lines carry.
    pub precision: Precision,
    /// The unit the server truncates its receive time to for lines without one;
    /// InfluxDB 2.x's v1 `/write` reads `precision=m` times as nanoseconds but
    /// truncates its own stamp to the minute.
    pub stamp_precision: Precision,
    /// InfluxDB 3's `precision=auto`: each timestamp's unit is guessed from its size.
    pub auto_precision: bool,
}

impl WriteTarget {
    /// Reads the parameters of `/api/v2/write` (`org`, `orgID`, `bucket`, `precision`)
    /// or of v1 `/write` (`db`, `rp`, `precision`). `u` and `p` are never kept.
    ///
    /// With `influxdb1_semantics`, the parameters are read as InfluxDB 1.x reads them,
    /// else as the proxy reads them without an upstream.
    pub fn from_query(
        dialect: Dialect,
        query: Option<&str>,
        influxdb1_semantics: bool,
    ) -> Result<WriteTarget, ProxyError> {
        let server = if influxdb1_semantics {
            Server::InfluxDb1
        } else {
            Server::Gateway
        };
        Self::from_query_for(dialect, query, server)
    }

    /// Reads the parameters as `server` reads them. An error is what that server
    /// refuses the write for (it then stores nothing).
    pub fn from_query_for(
        dialect: Dialect,
        query: Option<&str>,
        server: Server,
    ) -> Result<WriteTarget, ProxyError> {
        // InfluxDB 3 deserializes the query into a struct, which refuses a repeated
        // field of its own (others are ignored); the gateway answers
        // `/api/v3/write_lp` as InfluxDB 3 does.
        let refuses_repeats =
            server == Server::InfluxDb3 || (server == Server::Gateway && dialect == Dialect::V3);
        let own_field = |key: &str| match dialect {
            // influxdb3_types `WriteParams` (also `accept_partial`, `no_sync`, unread here).
            Dialect::V3 => matches!(key, "db" | "precision"),
            // iox_http `WriteParamsV1` (also `p`).
            Dialect::V1 => matches!(key, "db" | "rp" | "precision"),
            // iox_http `WriteParamsV2`.
            Dialect::V2 => matches!(key, "org" | "bucket" | "precision"),
        };
        let mut org: Option<Cow<'_, str>> = None;
        let mut org_id: Option<Cow<'_, str>> = None;
        let mut bucket: Option<Cow<'_, str>> = None;
        let mut db: Option<Cow<'_, str>> = None;
        let mut rp: Option<Cow<'_, str>> = None;
        let mut precision: Option<Cow<'_, str>> = None;
        for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            let slot = match key.as_ref() {
                "org" => &mut org,
                "orgID" => &mut org_id,
                "bucket" => &mut bucket,
                "db" => &mut db,
                "rp" => &mut rp,
                "precision" => &mut precision,
                _ => continue,
            };
            // Go's `url.Values.Get` returns the first value, even an empty one.
            match slot {
                None => *slot = Some(value),
                Some(_) if refuses_repeats && own_field(&key) => {
                    return Err(ProxyError::InvalidParameter(format!(
                        "duplicate field `{key}`"
                    )))
                }
                Some(_) => {}
            }
        }
        let org = match org.filter(|o| !o.is_empty()) {
            Some(org) => org.into_owned(),
            None => org_id.unwrap_or_default().into_owned(),
        };
        let mut bucket = bucket.unwrap_or_default().into_owned();
        let mut db = db.unwrap_or_default().into_owned();
        let mut rp = rp.unwrap_or_default().into_owned();
        let auto_precision = dialect == Dialect::V3
            && matches!(precision.as_deref(), None | Some("") | Some("auto"));
        let (precision, stamp_precision) = precisions(dialect, server, precision.as_deref())?;
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
            stamp_precision,
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

    /// The stamp for lines without a time received at `received_ns`: the receive time
    /// truncated as the server would truncate its own, in the lines' unit (to insert)
    /// and in nanoseconds (for Kafka).
    pub fn stamp(&self, received_ns: i64) -> (i64, i64) {
        let stamp_ns = self
            .stamp_precision
            .from_nanos(received_ns)
            .saturating_mul(self.stamp_precision.nanos_per_unit());
        (stamp_ns / self.precision.nanos_per_unit(), stamp_ns)
    }
}

/// The unit of the lines' timestamps and the unit of the receive-time stamp, as
/// `server` reads `precision` on `dialect`'s endpoint; an error where it refuses it.
fn precisions(
    dialect: Dialect,
    server: Server,
    param: Option<&str>,
) -> Result<(Precision, Precision), ProxyError> {
    let same = |p: Precision| Ok((p, p));
    match (dialect, server, param) {
        (Dialect::V3, _, _) => match param {
            None | Some("") => same(Precision::Nanosecond),
            Some(p) => v3_precision(p).map_or(Err(v3_precision_error()), same),
        },
        // InfluxDB 3's `/write` and `/api/v2/write` know s, ms, us/u, ns/n and the long
        // names; a present but empty or unknown value is refused.
        (_, Server::InfluxDb3, None) => same(Precision::Nanosecond),
        (_, Server::InfluxDb3, Some(p)) => influxdb3_compat_precision(p).map_or(
            Err(ProxyError::InvalidParameter(format!(
                "unknown variant `{p}`, expected one of `second`, `millisecond`, `microsecond`, `nanosecond`"
            ))),
            same,
        ),
        (Dialect::V2, _, None | Some("")) => same(Precision::Nanosecond),
        (Dialect::V2, _, Some(p)) => Precision::from_v2_param(p).map_or(
            Err(ProxyError::InvalidPrecision {
                valid: "ns, us, ms, and s",
            }),
            same,
        ),
        (Dialect::V1, Server::InfluxDb1, p) => same(influxdb1_precision(p.unwrap_or_default())),
        (Dialect::V1, Server::InfluxDb2, p) => Ok(influxdb2_v1_precision(p.unwrap_or_default())),
        (Dialect::V1, Server::Gateway | Server::Other, p) => same(
            p.and_then(Precision::from_v1_param)
                .unwrap_or(Precision::Nanosecond),
        ),
    }
}

fn v3_precision_error() -> ProxyError {
    ProxyError::InvalidPrecision {
        valid: "auto, nanosecond, microsecond, millisecond, and second",
    }
}

/// InfluxDB 3's precision names on `/api/v3/write_lp`; `auto` is read as nanoseconds
/// and rescaled per point.
fn v3_precision(param: &str) -> Option<Precision> {
    match param {
        "auto" | "nanosecond" | "ns" => Some(Precision::Nanosecond),
        "microsecond" | "us" => Some(Precision::Microsecond),
        "millisecond" | "ms" => Some(Precision::Millisecond),
        "second" | "s" => Some(Precision::Second),
        _ => None,
    }
}

/// InfluxDB 3's names on its v1 and v2 compatible write endpoints (`iox_http` `Precision`).
fn influxdb3_compat_precision(param: &str) -> Option<Precision> {
    match param {
        "nanosecond" | "ns" | "n" => Some(Precision::Nanosecond),
        "microsecond" | "us" | "u" => Some(Precision::Microsecond),
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
/// `h`; anything else, `us` and `ns` included, silently means nanoseconds, and its
/// receive-time stamp is truncated to the same unit (`SetPrecision`).
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

/// InfluxDB 2.x's v1 `/write`: timestamps are scaled only for `us`, `ms` and `s`
/// (`models.GetPrecisionMultiplier`), but its own receive time is truncated for
/// `u`/`us`, `ms`, `s`, `m` and `h` (`point.SetPrecision`). Returns (timestamp unit, stamp unit).
pub fn influxdb2_v1_precision(param: &str) -> (Precision, Precision) {
    let timestamps = match param {
        "us" => Precision::Microsecond,
        "ms" => Precision::Millisecond,
        "s" => Precision::Second,
        _ => Precision::Nanosecond,
    };
    let stamp = match param {
        "u" | "us" => Precision::Microsecond,
        "ms" => Precision::Millisecond,
        "s" => Precision::Second,
        "m" => Precision::Minute,
        "h" => Precision::Hour,
        _ => Precision::Nanosecond,
    };
    (timestamps, stamp)
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
    fn repeated_parameters_take_the_first_value_or_are_refused_by_influxdb3() {
        for server in [
            Server::InfluxDb1,
            Server::InfluxDb2,
            Server::Other,
            Server::Gateway,
        ] {
            let target = WriteTarget::from_query_for(
                Dialect::V1,
                Some("db=a&db=b&rp=&rp=x&precision=s&precision=ns"),
                server,
            )
            .unwrap();
            assert_eq!((target.db.as_str(), target.rp.as_str()), ("a", ""));
            assert_eq!(target.precision, Precision::Second, "{server:?}");
            let target = WriteTarget::from_query_for(
                Dialect::V2,
                Some("org=o&org=p&bucket=a&bucket=b&precision=ms&precision=s"),
                server,
            )
            .unwrap();
            assert_eq!((target.org.as_str(), target.bucket.as_str()), ("o", "a"));
            assert_eq!(target.precision, Precision::Millisecond);
        }
        for dialect in [Dialect::V1, Dialect::V2, Dialect::V3] {
            assert!(matches!(
                WriteTarget::from_query_for(
                    dialect,
                    Some("db=a&bucket=a&org=o&db=b&bucket=b&org=p"),
                    Server::InfluxDb3
                ),
                Err(ProxyError::InvalidParameter(_))
            ));
        }
        // A field InfluxDB 3's struct does not have is ignored, repeated or not.
        let target = WriteTarget::from_query_for(
            Dialect::V3,
            Some("db=a&rp=x&rp=y&orgID=1&orgID=2"),
            Server::InfluxDb3,
        )
        .unwrap();
        assert_eq!(target.db, "a");
        assert!(
            WriteTarget::from_query_for(Dialect::V3, Some("db=a&db=b"), Server::Gateway).is_err()
        );
    }

    #[test]
    fn influxdb2_v1_write_scales_few_precisions_but_truncates_its_stamp_to_more() {
        let target = |p: &str| {
            WriteTarget::from_query_for(
                Dialect::V1,
                Some(&format!("db=d&precision={p}")),
                Server::InfluxDb2,
            )
            .unwrap()
        };
        let now = 1_700_000_123_456_789_012;
        let m = target("m");
        assert_eq!(m.precision, Precision::Nanosecond);
        assert_eq!(
            m.stamp(now),
            (1_700_000_100_000_000_000, 1_700_000_100_000_000_000)
        );
        let u = target("u");
        assert_eq!(u.precision, Precision::Nanosecond);
        assert_eq!(u.stamp(now).0, 1_700_000_123_456_789_000);
        let us = target("us");
        assert_eq!(us.precision, Precision::Microsecond);
        assert_eq!(
            us.stamp(now),
            (1_700_000_123_456_789, 1_700_000_123_456_789_000)
        );
        for p in ["", "n", "ns", "µ", "x"] {
            assert_eq!(target(p).stamp(now), (now, now), "{p}");
        }
        let h1 =
            WriteTarget::from_query_for(Dialect::V1, Some("db=d&precision=h"), Server::InfluxDb1)
                .unwrap();
        assert_eq!(h1.precision, Precision::Hour);
        assert_eq!(h1.stamp(now), (472_222, 472_222 * 3_600_000_000_000));
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
