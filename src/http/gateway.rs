//! Without an upstream (`upstream = "none"`), the proxy answers InfluxDB 2.x's
//! liveness endpoints itself, as 2.x does, so clients and load balancers that
//! probe them before writing keep working.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};

use crate::write::{identify, GATEWAY_VERSION};

/// When the gateway started, for `/ready`'s `started` and `up`.
fn started() -> SystemTime {
    static STARTED: OnceLock<SystemTime> = OnceLock::new();
    *STARTED.get_or_init(SystemTime::now)
}

/// Records the start time; called when the routes are built.
pub fn mark_started() {
    let _ = started();
}

/// The gateway's answer to a request that is not a write.
pub fn answer<B>(request: &Request<B>) -> Response<Body> {
    let get_or_head = matches!(*request.method(), Method::GET | Method::HEAD);
    let path = request.uri().path();
    let origin = request.headers().get(header::ORIGIN);
    let mut response = match path {
        // kit/transport/http SetCORS, around 2.x's `/api/v2` routes: a browser's preflight.
        _ if path.starts_with("/api/v2/") && request.method() == Method::OPTIONS => {
            if origin.is_some() {
                let mut response = empty(StatusCode::NO_CONTENT);
                let headers = response.headers_mut();
                headers.insert(
                    header::ACCESS_CONTROL_ALLOW_METHODS,
                    HeaderValue::from_static("POST, GET, OPTIONS, PUT, DELETE, PATCH"),
                );
                headers.insert(
                    header::ACCESS_CONTROL_ALLOW_HEADERS,
                    HeaderValue::from_static(
                        "Accept, Content-Type, Content-Length, Accept-Encoding, Authorization, User-Agent",
                    ),
                );
                response
            } else {
                let mut response = Response::new(Body::empty());
                *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
                response
            }
        }
        // http/legacy/ping_handler.go: GET and HEAD, 204, behind 2.x's gzip middleware.
        "/ping" if get_or_head => {
            let mut response = empty(StatusCode::NO_CONTENT);
            response
                .headers_mut()
                .insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
            response
        }
        "/ping" => {
            let mut response = Response::new(Body::from("Method Not Allowed\n"));
            *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            let headers = response.headers_mut();
            headers.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, OPTIONS"));
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
            headers.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            response
        }
        // http/health.go: any method, this exact text.
        "/health" => json(format!(
            "{{\"name\":\"influxdb\", \"message\":\"ready for queries and writes\", \"status\":\"pass\", \"checks\":[], \"version\": {}, \"commit\": {}}}\n",
            go_quote(GATEWAY_VERSION),
            go_quote(concat!("influx-tee-", env!("CARGO_PKG_VERSION"))),
        )),
        // http/ready.go: any method, indented JSON.
        "/ready" => {
            let started = started();
            let up = SystemTime::now().duration_since(started).unwrap_or_default();
            json(format!(
                "{{\n    \"status\": \"ready\",\n    \"started\": \"{}\",\n    \"up\": \"{}\"\n}}\n",
                rfc3339_nanos(started),
                go_duration(up)
            ))
        }
        _ => {
            let mut response = Response::new(Body::from("404 page not found\n"));
            *response.status_mut() = StatusCode::NOT_FOUND;
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            response
        }
    };
    allow_origin(path, origin, response.headers_mut());
    identify(response.headers_mut(), None);
    response
}

/// 2.x's SetCORS: every `/api/v2` answer to a request with an `Origin` names it.
pub fn allow_origin(path: &str, origin: Option<&HeaderValue>, headers: &mut http::HeaderMap) {
    if let Some(origin) = origin.filter(|_| path.starts_with("/api/v2/")) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    }
}

fn empty(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(crate::write::no_content_body());
    *response.status_mut() = status;
    response
}

fn json(body: String) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

/// Go's `%q` for the plain ASCII strings used here.
fn go_quote(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// A time as Go's `time.Time` marshals to JSON (RFC 3339, nanoseconds without trailing zeros, UTC).
fn rfc3339_nanos(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    let mut out = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    let nanos = since.subsec_nanos();
    if nanos > 0 {
        let fraction = format!("{nanos:09}");
        out.push('.');
        out.push_str(fraction.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A duration as Go's `time.Duration.String` writes it: `1h2m3.5s`, `1.5ms`, `0s`.
fn go_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    let fraction = |value: u128, unit: u128, suffix: &str| {
        let whole = value / unit;
        let rest = value % unit;
        let digits = unit.to_string().len() - 1;
        if rest == 0 {
            format!("{whole}{suffix}")
        } else {
            let rest = format!("{rest:0digits$}");
            format!("{whole}.{}{suffix}", rest.trim_end_matches('0'))
        }
    };
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return fraction(nanos, 1_000, "µs");
    }
    if nanos < 1_000_000_000 {
        return fraction(nanos, 1_000_000, "ms");
    }
    let seconds = fraction(nanos % 60_000_000_000, 1_000_000_000, "s");
    let minutes = nanos / 60_000_000_000;
    match (minutes / 60, minutes % 60) {
        (0, 0) => seconds,
        (0, m) => format!("{m}m{seconds}"),
        (h, m) => format!("{h}h{m}m{seconds}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_go_writes_them() {
        assert_eq!(go_duration(Duration::from_nanos(0)), "0s");
        assert_eq!(go_duration(Duration::from_nanos(450)), "450ns");
        assert_eq!(go_duration(Duration::from_nanos(1_500)), "1.5µs");
        assert_eq!(go_duration(Duration::from_micros(2_250)), "2.25ms");
        assert_eq!(go_duration(Duration::from_millis(3_500)), "3.5s");
        assert_eq!(go_duration(Duration::from_secs(3_600)), "1h0m0s");
        assert_eq!(go_duration(Duration::from_millis(61_001)), "1m1.001s");
    }

    #[test]
    fn times_read_as_go_marshals_them() {
        let time = UNIX_EPOCH + Duration::new(1_700_000_000, 120_000_000);
        assert_eq!(rfc3339_nanos(time), "2023-11-14T22:13:20.12Z");
        assert_eq!(rfc3339_nanos(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339_nanos(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
    }
}
