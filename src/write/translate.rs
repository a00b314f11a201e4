//! v2 writes for an InfluxDB 1.x older than 1.8, which has no `/api/v2/write`:
//! the request becomes a v1 `/write`, and the answer goes back in the v2 dialect.

use http::{header, HeaderMap};

use crate::http::error::v2_code;
use crate::line_protocol::Precision;
use crate::upstream::BufferedResponse;

use super::request::WriteTarget;

/// The v1 `/write` path and query for a v2 write; moves `Authorization: Token user:pass`
/// (the v2 clients' way to send 1.x credentials) into the `u` and `p` parameters.
/// Credentials in the client's own `u` and `p` (first values) win, as in 1.8's
/// `parseCredentials`.
pub fn v1_write_path(
    target: &WriteTarget,
    headers: &mut HeaderMap,
    client_query: Option<&str>,
) -> String {
    let mut query = form_urlencoded::Serializer::new(String::with_capacity(64));
    query.append_pair("db", &target.db);
    if !target.rp.is_empty() {
        query.append_pair("rp", &target.rp);
    }
    query.append_pair("precision", v1_precision(target.precision));
    let first = |name: &str| {
        form_urlencoded::parse(client_query.unwrap_or_default().as_bytes())
            .find(|(key, _)| key == name)
            .map(|(_, value)| value)
            .filter(|value| !value.is_empty())
    };
    if let (Some(user), Some(password)) = (first("u"), first("p")) {
        query.append_pair("u", &user);
        query.append_pair("p", &password);
        return format!("/write?{}", query.finish());
    }
    let credentials = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Token "))
        .and_then(|v| v.split_once(':'))
        .map(|(user, password)| (user.to_owned(), password.to_owned()));
    if let Some((user, password)) = credentials {
        query.append_pair("u", &user);
        query.append_pair("p", &password);
        headers.remove(header::AUTHORIZATION);
    }
    format!("/write?{}", query.finish())
}

/// InfluxDB 1.x's name for a precision (it reads `us` and `ns` as nanoseconds).
fn v1_precision(precision: Precision) -> &'static str {
    match precision {
        Precision::Nanosecond => "n",
        Precision::Microsecond => "u",
        Precision::Millisecond => "ms",
        Precision::Second => "s",
        Precision::Minute => "m",
        Precision::Hour => "h",
    }
}

/// Rewrites a 1.x error answer (`{"error":…}`) as InfluxDB 2.x words it (`{"code":…,"message":…}`).
pub fn error_to_v2(answer: &mut BufferedResponse) {
    if answer.status.is_success() {
        return;
    }
    let message = answer.error_message().unwrap_or_else(|| {
        String::from_utf8_lossy(&answer.decoded_body())
            .trim()
            .to_owned()
    });
    let body = serde_json::json!({ "code": v2_code(answer.status), "message": message });
    answer.body = serde_json::to_vec(&body).unwrap_or_default().into();
    answer.headers.remove(header::CONTENT_ENCODING);
    answer.headers.insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json; charset=utf-8"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::error::Dialect;
    use http::StatusCode;

    #[test]
    fn bucket_precision_and_token_become_v1_parameters() {
        let target = WriteTarget::from_query(
            Dialect::V2,
            Some("org=o&bucket=telegraf%2Fweek&precision=us"),
            false,
        )
        .unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, "Token alice:s3cr%t".parse().unwrap());
        assert_eq!(
            v1_write_path(&target, &mut headers, None),
            "/write?db=telegraf&rp=week&precision=u&u=alice&p=s3cr%25t"
        );
        assert!(headers.get(header::AUTHORIZATION).is_none());
    }

    #[test]
    fn a_plain_token_stays_in_the_header() {
        let target = WriteTarget::from_query(Dialect::V2, Some("bucket=db"), false).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, "Token abc".parse().unwrap());
        assert_eq!(
            v1_write_path(&target, &mut headers, None),
            "/write?db=db&precision=n"
        );
        assert!(headers.get(header::AUTHORIZATION).is_some());
        assert_eq!(
            v1_write_path(
                &target,
                &mut headers,
                Some("bucket=db&u=bob&p=pw&u=eve&p=x")
            ),
            "/write?db=db&precision=n&u=bob&p=pw"
        );
    }

    #[test]
    fn v1_errors_are_reworded_for_v2_clients() {
        let mut answer = BufferedResponse {
            status: StatusCode::NOT_FOUND,
            headers: HeaderMap::new(),
            body: br#"{"error":"database not found: \"x\""}"#.as_slice().into(),
        };
        error_to_v2(&mut answer);
        let body: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
        assert_eq!(body["code"], "not found");
        assert_eq!(body["message"], "database not found: \"x\"");
    }
}
