//! Every request that is not a write goes to the upstream unchanged, with bodies
//! streaming both ways so a large query result never sits in the proxy's memory.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use http::header;

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
    strip_hop_by_hop(&mut parts.headers);
    upstream.add_forwarded(&mut parts.headers, client_address(&parts.extensions));
    parts.headers.remove(header::HOST);
    if let Ok(value) = id.parse() {
        parts.headers.entry(REQUEST_ID_HEADER).or_insert(value);
    }
    match upstream
        .send_streaming(Request::from_parts(parts, body))
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
