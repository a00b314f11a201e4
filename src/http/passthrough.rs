//! Every request that is not a write goes to the upstream unchanged, with bodies
//! streaming both ways so a large query result never sits in the proxy's memory.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use http::header;

use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Frame;

use super::error::{Dialect, ProxyError};
use crate::upstream::strip_hop_by_hop;
use crate::write::{client_address, identify, request_id, WritePipeline, REQUEST_ID_HEADER};

pub async fn forward(
    State(pipeline): State<Arc<WritePipeline>>,
    request: Request,
) -> Response<Body> {
    let path = request.uri().path();
    let dialect = if path.starts_with("/api/v2") {
        Dialect::V2
    } else if path.starts_with("/api/v3") {
        Dialect::V3
    } else {
        Dialect::V1
    };
    let retry_after = pipeline.settings.retry_after_seconds;
    let Some(upstream) = &pipeline.upstream else {
        return super::gateway::answer(&request);
    };
    let id = request_id(&request);
    let (mut parts, body) = request.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let uri = match upstream.uri_for(path_and_query) {
        Ok(uri) => uri,
        Err(error) => {
            let mut response = ProxyError::UpstreamUnavailable(error.to_string())
                .into_response(dialect, retry_after);
            identify(response.headers_mut(), Some(upstream));
            return response;
        }
    };
    parts.uri = uri;
    // The upstream leg is HTTP/1.1 whatever the client spoke (h2 or h1.0): the pool's
    // client refuses to send an HTTP/2 request over an HTTP/1 connection.
    parts.version = http::Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    upstream.add_forwarded(&mut parts.headers, client_address(&parts.extensions));
    parts.headers.remove(header::HOST);
    if let Ok(value) = id.parse() {
        parts.headers.entry(REQUEST_ID_HEADER).or_insert(value);
    }
    let body = super::timed_body::TimedBody::new(body, pipeline.settings.body_pace).into_body();
    let (body, client_body_failed) = WatchedBody::new(body);
    match upstream
        .send_streaming(Request::from_parts(parts, Body::new(body)))
        .await
    {
        Ok(mut response) => {
            strip_hop_by_hop(response.headers_mut());
            pipeline
                .metrics
                .passthrough_requests
                .with_label_values(&[response.status().as_str()])
                .inc();
            response
        }
        Err(_) if client_body_failed.load(Ordering::Relaxed) != BODY_OK => {
            // The client's own body was malformed (bad chunked framing, a reset stream):
            // InfluxDB's server would have answered 400 for it. Or it came too slowly.
            let error = if client_body_failed.load(Ordering::Relaxed) == BODY_TOO_SLOW {
                ProxyError::BodyTimeout("request body too slow".into())
            } else {
                ProxyError::BodyRead("malformed request body".into())
            };
            pipeline
                .metrics
                .passthrough_requests
                .with_label_values(&[error.status().as_str()])
                .inc();
            error.into_response(dialect, retry_after)
        }
        Err(error) => {
            pipeline
                .metrics
                .upstream_errors
                .with_label_values(&[error.reason()])
                .inc();
            pipeline
                .metrics
                .passthrough_requests
                .with_label_values(&["503"])
                .inc();
            let mut response = ProxyError::UpstreamUnavailable(error.to_string())
                .into_response(dialect, retry_after);
            identify(response.headers_mut(), Some(upstream));
            response
        }
    }
}

/// The client's body on its way upstream, noting whether reading it failed, so a
/// malformed body is told apart from an unreachable upstream.
struct WatchedBody {
    inner: Body,
    failed: Arc<AtomicU8>,
}

const BODY_OK: u8 = 0;
const BODY_MALFORMED: u8 = 1;
const BODY_TOO_SLOW: u8 = 2;

impl WatchedBody {
    fn new(inner: Body) -> (WatchedBody, Arc<AtomicU8>) {
        let failed = Arc::new(AtomicU8::new(BODY_OK));
        (
            WatchedBody {
                inner,
                failed: failed.clone(),
            },
            failed,
        )
    }
}

impl http_body::Body for WatchedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Err(error))) = &polled {
            let kind = if super::timed_body::BodyTimeout::is_in(error) {
                BODY_TOO_SLOW
            } else {
                BODY_MALFORMED
            };
            self.failed.store(kind, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
