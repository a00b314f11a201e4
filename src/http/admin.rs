//! The proxy's own endpoints, on a listener apart from the client one so they never
//! shadow InfluxDB's `/metrics` or `/health`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use http::{header, StatusCode};

use crate::write::WritePipeline;

pub fn admin_router(pipeline: Arc<WritePipeline>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(pipeline)
}

async fn metrics(State(pipeline): State<Arc<WritePipeline>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        pipeline.metrics.render(),
    )
        .into_response()
}

/// Ready when the upstream answers and, unless the spool covers for it, a Kafka broker.
async fn ready(State(pipeline): State<Arc<WritePipeline>>) -> Response {
    let upstream = match &pipeline.upstream {
        None => Ok(()),
        Some(upstream) => upstream
            .probe(&pipeline.metrics)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
    };
    let kafka = pipeline
        .producer
        .check_reachable(Duration::from_secs(2))
        .await;
    let body = serde_json::json!({
        "upstream": upstream.as_ref().err().map_or("ok".to_owned(), |e| e.clone()),
        "kafka": kafka.as_ref().err().map_or("ok".to_owned(), |e| e.clone()),
    });
    // With the spool on, writes keep succeeding while Kafka is away (the spool holds
    // them), so a Kafka outage must not take the proxy out of a load balancer.
    let kafka_needed = pipeline.spool.is_none();
    let status = if upstream.is_ok() && (kafka.is_ok() || !kafka_needed) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}
