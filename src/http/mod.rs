//! The HTTP face of the proxy: InfluxDB's write endpoints, pass-through for
//! everything else, and the admin endpoints on their own listener.

pub mod admin;
pub mod body;
pub mod error;
pub mod gateway;
pub mod passthrough;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::post;
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
        .route(
            "/api/v2/write",
            post(write_v2).fallback(passthrough::forward),
        )
        .route("/write", post(write_v1).fallback(passthrough::forward))
        .route(
            "/api/v3/write_lp",
            post(write_v3).fallback(passthrough::forward),
        )
        .fallback(passthrough::forward)
        .with_state(pipeline)
}

async fn write_v2(State(pipeline): State<Arc<WritePipeline>>, request: Request) -> Response<Body> {
    pipeline.handle(Dialect::V2, request).await
}

async fn write_v3(State(pipeline): State<Arc<WritePipeline>>, request: Request) -> Response<Body> {
    pipeline.handle(Dialect::V3, request).await
}

async fn write_v1(State(pipeline): State<Arc<WritePipeline>>, request: Request) -> Response<Body> {
    pipeline.handle(Dialect::V1, request).await
}
