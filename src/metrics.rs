//! Prometheus metrics of the proxy, registered in one registry served on the admin listener.
//!
//! Latency is split by phase so an operator can tell whether a slow write is
//! InfluxDB's, Kafka's or ours.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// All metrics of one proxy instance.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Write requests by endpoint (`v1`, `v2`) and HTTP status code.
    pub requests: IntCounterVec,
    /// Write request latency by phase: `total`, `proxy` (our own work), `upstream`, `kafka`,
    /// `readback` (reading back a partial write).
    pub request_seconds: HistogramVec,
    /// Points seen in write bodies by outcome: `parsed`, `invalid`, `teed`, `not_teed`.
    pub points: IntCounterVec,
    /// Bytes of write bodies received, after decompression, by endpoint.
    pub body_bytes: IntCounterVec,
    /// Kafka records by outcome: `enqueued`, `delivered`, `failed`, `queue_full`.
    pub kafka_records: IntCounterVec,
    /// Records handed to librdkafka that it has not yet delivered or failed.
    pub kafka_queue_depth: IntGauge,
    /// Requests that never reached the upstream, by reason.
    pub upstream_errors: IntCounterVec,
    /// Upstream partial-write answers whose rejected points could not be identified exactly.
    pub partial_write_unresolved: IntCounterVec,
    /// Requests passed through unchanged (everything that is not a write).
    pub passthrough_requests: IntCounterVec,
    /// Clients that hung up before their write was answered (the write completed).
    pub client_disconnects: IntCounterVec,
    /// Writes the upstream stored although the proxy expected a refusal, so not teed.
    pub stored_not_teed: IntCounterVec,
    /// Time to read the upstream's `/ping` in the readiness and version probes.
    pub upstream_probe_seconds: Histogram,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "influx_tee_write_requests_total",
                "Write requests by endpoint and status code",
            ),
            &["endpoint", "status"],
        )
        .expect("static metric definition");
        let request_seconds = HistogramVec::new(
            HistogramOpts::new(
                "influx_tee_write_request_duration_seconds",
                "Write request latency by phase (total, proxy, upstream, kafka, readback)",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["endpoint", "phase"],
        )
        .expect("static metric definition");
        let points = IntCounterVec::new(
            Opts::new(
                "influx_tee_points_total",
                "Points in write bodies by outcome",
            ),
            &["endpoint", "outcome"],
        )
        .expect("static metric definition");
        let body_bytes = IntCounterVec::new(
            Opts::new(
                "influx_tee_write_body_bytes_total",
                "Write body bytes after decompression",
            ),
            &["endpoint"],
        )
        .expect("static metric definition");
        let kafka_records = IntCounterVec::new(
            Opts::new("influx_tee_kafka_records_total", "Kafka records by outcome"),
            &["outcome"],
        )
        .expect("static metric definition");
        let kafka_queue_depth = IntGauge::new(
            "influx_tee_kafka_queue_depth",
            "Records handed to the Kafka producer and not yet acknowledged or failed",
        )
        .expect("static metric definition");
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "influx_tee_upstream_errors_total",
                "Requests that got no answer from the upstream",
            ),
            &["reason"],
        )
        .expect("static metric definition");
        let partial_write_unresolved = IntCounterVec::new(
            Opts::new(
                "influx_tee_partial_write_unresolved_total",
                "Partial writes where the points the upstream dropped could not all be identified",
            ),
            &["endpoint"],
        )
        .expect("static metric definition");
        let passthrough_requests = IntCounterVec::new(
            Opts::new(
                "influx_tee_passthrough_requests_total",
                "Non-write requests passed through",
            ),
            &["status"],
        )
        .expect("static metric definition");
        let client_disconnects = IntCounterVec::new(
            Opts::new(
                "influx_tee_client_disconnects_total",
                "Clients that went away before their write was answered; the write still completed",
            ),
            &["endpoint"],
        )
        .expect("static metric definition");
        let stored_not_teed = IntCounterVec::new(
            Opts::new(
                "influx_tee_stored_not_teed_total",
                "Writes the upstream accepted although the proxy expected it to refuse them; not teed",
            ),
            &["endpoint"],
        )
        .expect("static metric definition");
        let upstream_probe_seconds = Histogram::with_opts(HistogramOpts::new(
            "influx_tee_upstream_probe_duration_seconds",
            "Latency of the upstream /ping probe",
        ))
        .expect("static metric definition");

        for collector in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(request_seconds.clone()),
            Box::new(points.clone()),
            Box::new(body_bytes.clone()),
            Box::new(kafka_records.clone()),
            Box::new(kafka_queue_depth.clone()),
            Box::new(upstream_errors.clone()),
            Box::new(partial_write_unresolved.clone()),
            Box::new(passthrough_requests.clone()),
            Box::new(upstream_probe_seconds.clone()),
            Box::new(client_disconnects.clone()),
            Box::new(stored_not_teed.clone()),
        ] {
            registry
                .register(collector)
                .expect("metric names are unique");
        }
        Metrics {
            registry,
            requests,
            request_seconds,
            points,
            body_bytes,
            kafka_records,
            kafka_queue_depth,
            upstream_errors,
            partial_write_unresolved,
            passthrough_requests,
            upstream_probe_seconds,
            client_disconnects,
            stored_not_teed,
        }
    }

    /// The registry, for modules that register metrics of their own (the spool, for one).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The metrics in Prometheus' text exposition format.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 * 1024);
        // Encoding into a Vec cannot fail for the text format.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
