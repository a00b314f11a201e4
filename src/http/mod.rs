//! The HTTP face of the proxy: InfluxDB's write endpoints, pass-through for
//! everything else, and the admin endpoints on their own listener.

pub mod admin;
pub mod body;
pub mod error;
pub mod passthrough;
pub mod serve;
pub mod tls;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::post;
use axum::Router;

use crate::write::WritePipeline;
use error::Dialect;

/// Routes of the client-facing listener.
pub fn client_router(pipeline: Arc<WritePipeline>) -> Router {
    Router::new()
        .route("/api/v2/write", post(write_v2))
        .route("/write", post(write_v1))
        .route("/api/v3/write_lp", post(write_v3))
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
