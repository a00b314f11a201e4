//! The HTTP face of the proxy: InfluxDB's write endpoints, pass-through for
//! everything else, and the admin endpoints on their own listener.

pub mod admin;
pub mod body;
pub mod error;
pub mod gateway;
pub mod gateway_auth;
pub mod passthrough;
pub mod serve;
pub mod timed_body;
pub mod tls;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::any;
use axum::Router;

use crate::write::WritePipeline;
use error::Dialect;

/// Routes of the client-facing listener.
///
/// Only `POST` is a write; every other method on the write paths (a browser's CORS
/// preflight `OPTIONS`, `GET`, `HEAD`) is InfluxDB's to answer and passes through.
pub fn client_router(pipeline: Arc<WritePipeline>) -> Router {
    gateway::mark_started();
    Router::new()
        .route("/api/v2/write", any(write_v2))
        .route("/write", any(write_v1))
        .route("/api/v3/write_lp", any(write_v3))
        .fallback(passthrough::forward)
        .with_state(pipeline)
}

async fn write_v2(State(pipeline): State<Arc<WritePipeline>>, request: Request) -> Response<Body> {
    write_or_pass(pipeline, Dialect::V2, request).await
}

async fn write_v3(State(pipeline): State<Arc<WritePipeline>>, request: Request) -> Response<Body> {
    write_or_pass(pipeline, Dialect::V3, request).await
}

async fn write_v1(State(pipeline): State<Arc<WritePipeline>>, request: Request) -> Response<Body> {
    write_or_pass(pipeline, Dialect::V1, request).await
}

/// `POST` is a write; any other method is InfluxDB's to answer. Dispatched here
/// rather than by a method router, which would add its own `Allow` header.
async fn write_or_pass(
    pipeline: Arc<WritePipeline>,
    dialect: Dialect,
    request: Request,
) -> Response<Body> {
    if request.method() != http::Method::POST {
        return passthrough::forward(State(pipeline), request).await;
    }
    if pipeline.upstream.is_some() {
        return pipeline.handle(dialect, request).await;
    }
    // The gateway answers browsers as 2.x does.
    let origin = request.headers().get(http::header::ORIGIN).cloned();
    let path = request.uri().path().to_owned();
    let mut response = pipeline.handle(dialect, request).await;
    gateway::allow_origin(&path, origin.as_ref(), response.headers_mut());
    response
}
