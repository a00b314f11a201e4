//! Every answer the proxy gives on its own, mapped to InfluxDB's status codes and
//! error bodies in one place.
//!
//! A client must not be able to tell these answers from InfluxDB's own: v2
//! endpoints answer `{"code":…,"message":…}`, v1 endpoints `{"error":…}` plus an
//! `X-Influxdb-Error` header.

use axum::body::Body;
use http::{header, HeaderValue, Response, StatusCode};

/// The error format of the endpoint that was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    V1,
    V2,
    /// InfluxDB 3's `/api/v3/write_lp`: `{"error":…}`.
    V3,
}

/// A failure the proxy answers itself instead of relaying the upstream's answer.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("request body is larger than the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("{0}")]
    BadGzip(String),
    #[error("unable to read data: {0}")]
    BodyRead(String),
    /// The body came too slowly (`http.body_idle_timeout_ms`, `http.body_min_bytes_per_second`).
    #[error("unable to read data: {0}")]
    BodyTimeout(String),
    #[error("invalid precision; valid precision units are {valid}")]
    InvalidPrecision { valid: &'static str },
    #[error("{0}")]
    MissingParameter(&'static str),
    /// A query parameter the server refuses (InfluxDB 3: a repeated or unknown value).
    #[error("{0}")]
    InvalidParameter(String),
    /// Bad line protocol, answered by the proxy only when there is no upstream.
    #[error("{0}")]
    InvalidLineProtocol(String),
    #[error("upstream InfluxDB is unavailable: {0}")]
    UpstreamUnavailable(String),
    /// Write bodies in memory are at `max_inflight_bytes`: the proxy's own safety.
    #[error("{0}")]
    Busy(String),
    /// A bug in the proxy (a panicked write task).
    #[error("{0}")]
    Internal(String),
    #[error("Kafka did not acknowledge the write: {0}")]
    KafkaUnavailable(String),
    /// The spool has no room (`when_full = "reject"`); refused before forwarding, so InfluxDB and Kafka stay equal.
    #[error("{0}")]
    SpoolFull(String),
    /// The spool could not store a write InfluxDB accepted; the client retries, InfluxDB overwrites.
    #[error("{0}")]
    SpoolFailed(String),
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ProxyError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ProxyError::BadGzip(_)
            | ProxyError::BodyRead(_)
            | ProxyError::InvalidPrecision { .. }
            | ProxyError::MissingParameter(_)
            | ProxyError::InvalidParameter(_)
            | ProxyError::InvalidLineProtocol(_) => StatusCode::BAD_REQUEST,
            ProxyError::UpstreamUnavailable(_)
            | ProxyError::Busy(_)
            | ProxyError::KafkaUnavailable(_)
            | ProxyError::SpoolFull(_)
            | ProxyError::SpoolFailed(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Whether a client should retry later, and so gets `Retry-After`.
    fn retryable(&self) -> bool {
        self.status() == StatusCode::SERVICE_UNAVAILABLE
    }

    /// Renders the error in the dialect of the endpoint that was called.
    pub fn into_response(self, dialect: Dialect, retry_after_seconds: u32) -> Response<Body> {
        let status = self.status();
        let message = self.to_string();
        let mut builder = Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "application/json; charset=utf-8");
        let body = match dialect {
            Dialect::V2 => {
                // InfluxDB 2.x repeats the code in a header.
                builder = builder.header("X-Platform-Error-Code", v2_code(status));
                serde_json::json!({ "code": v2_code(status), "message": message })
            }
            Dialect::V3 => serde_json::json!({ "error": message }),
            Dialect::V1 => {
                if let Ok(value) = HeaderValue::from_str(&message) {
                    builder = builder.header("X-Influxdb-Error", value);
                }
                serde_json::json!({ "error": message })
            }
        };
        if self.retryable() {
            builder = builder.header(header::RETRY_AFTER, retry_after_seconds);
        }
        if status == StatusCode::REQUEST_TIMEOUT {
            // What is left of a too-slow body is not worth reading: close the connection.
            builder = builder.header(header::CONNECTION, "close");
        }
        let mut bytes = serde_json::to_vec(&body).unwrap_or_default();
        bytes.push(b'\n');
        builder.body(Body::from(bytes)).unwrap_or_else(|_| {
            let mut fallback = Response::new(Body::empty());
            *fallback.status_mut() = status;
            fallback
        })
    }
}

/// InfluxDB 2.x's error code for an HTTP status.
pub fn v2_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "invalid",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not found",
        405 => "method not allowed",
        408 => "request timeout",
        409 => "conflict",
        413 => "request too large",
        422 => "unprocessable entity",
        429 => "too many requests",
        503 => "unavailable",
        _ => "internal error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body_json(response: Response<Body>) -> serde_json::Value {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn v2_errors_carry_code_and_message() {
        let response = ProxyError::BodyTooLarge { limit: 10 }.into_response(Dialect::V2, 5);
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(response.headers().get(header::RETRY_AFTER).is_none());
        assert_eq!(
            response.headers()["X-Platform-Error-Code"],
            "request too large"
        );
        let json = body_json(response).await;
        assert_eq!(json["code"], "request too large");
    }

    #[tokio::test]
    async fn v1_errors_carry_error_and_header() {
        let response =
            ProxyError::UpstreamUnavailable("refused".into()).into_response(Dialect::V1, 7);
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "7");
        assert!(response.headers()["X-Influxdb-Error"]
            .to_str()
            .unwrap()
            .contains("refused"));
        let json = body_json(response).await;
        assert!(json["error"].as_str().unwrap().contains("refused"));
    }
}
