//! Prometheus metrics of the spool, registered into the proxy's registry.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Metrics of one spool. Cloning shares the underlying series.
#[derive(Clone)]
pub struct SpoolMetrics {
    /// Bytes of segment files on disk.
    pub bytes: IntGauge,
    pub segments: IntGauge,
    /// Kafka records in the spool that Kafka has not acknowledged (nor were dead-lettered or dropped).
    pub records: IntGauge,
    /// Age of the oldest record not yet acknowledged, 0 when everything is acknowledged.
    pub oldest_unacked_age_seconds: prometheus::Gauge,
    /// Records by outcome: `appended`, `shipped`, `retried`, `dead_lettered`, `dropped`.
    pub records_total: IntCounterVec,
    /// Writes answered 503 because the spool was full (`when_full = "reject"`).
    pub rejected_writes: IntCounter,
    pub fsync_seconds: Histogram,
    /// What the last start found damaged and skipped.
    pub recovery_skipped_bytes: IntGauge,
    pub recovery_skipped_regions: IntGauge,
    /// Records dead-lettered by reason: `refused` (Kafka refuses them for good),
    /// `unknown_topic` (the topic does not exist), `undecodable` (a damaged entry).
    pub dead_letter: IntCounterVec,
    /// Frames the shipper could not read back (corrupt after recovery); the rest of their segment is skipped.
    pub unreadable_frames: IntCounter,
    /// Pairs of topics Kafka cannot hold side by side (`.` versus `_`).
    pub topic_collisions: IntCounter,
}

impl SpoolMetrics {
    /// Creates the metrics and registers them; a second spool in one registry gets fresh,
    /// unregistered metrics instead of failing.
    pub fn new(registry: &Registry) -> SpoolMetrics {
        let gauge =
            |name: &str, help: &str| IntGauge::new(name, help).expect("static metric definition");
        let metrics = SpoolMetrics {
            bytes: gauge("influx_tee_spool_bytes", "Bytes of spool segment files on disk"),
            segments: gauge("influx_tee_spool_segments", "Spool segment files on disk"),
            records: gauge("influx_tee_spool_records", "Kafka records in the spool not yet acknowledged by Kafka"),
            oldest_unacked_age_seconds: prometheus::Gauge::new(
                "influx_tee_spool_oldest_unacked_age_seconds",
                "Age of the oldest spooled record Kafka has not acknowledged",
            )
            .expect("static metric definition"),
            records_total: IntCounterVec::new(
                Opts::new(
                    "influx_tee_spool_records_total",
                    "Spooled Kafka records by outcome: appended, shipped, retried, dead_lettered, dropped",
                ),
                &["outcome"],
            )
            .expect("static metric definition"),
            rejected_writes: IntCounter::new(
                "influx_tee_spool_rejected_writes_total",
                "Writes refused with 503 because the spool was full",
            )
            .expect("static metric definition"),
            fsync_seconds: Histogram::with_opts(
                HistogramOpts::new("influx_tee_spool_fsync_duration_seconds", "Latency of spool fsyncs").buckets(
                    vec![0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0],
                ),
            )
            .expect("static metric definition"),
            recovery_skipped_bytes: gauge(
                "influx_tee_spool_recovery_skipped_bytes",
                "Damaged spool bytes skipped when the spool was opened",
            ),
            recovery_skipped_regions: gauge(
                "influx_tee_spool_recovery_skipped_regions",
                "Damaged spool regions (torn or corrupt frames) skipped when the spool was opened",
            ),
            dead_letter: IntCounterVec::new(
                Opts::new(
                    "influx_tee_spool_dead_letter_total",
                    "Spooled records written to the dead-letter file, by reason: refused, unknown_topic, undecodable",
                ),
                &["reason"],
            )
            .expect("static metric definition"),
            unreadable_frames: IntCounter::new(
                "influx_tee_spool_unreadable_frames_total",
                "Spool frames the shipper found corrupt when reading them back; the rest of their segment was skipped",
            )
            .expect("static metric definition"),
            topic_collisions: IntCounter::new(
                "influx_tee_spool_topic_collisions_total",
                "Topics Kafka cannot hold beside another one that differs only in '.' versus '_'",
            )
            .expect("static metric definition"),
        };
        for reason in ["refused", "unknown_topic", "undecodable"] {
            metrics.dead_letter.with_label_values(&[reason]);
        }
        for outcome in ["appended", "shipped", "retried", "dead_lettered", "dropped"] {
            metrics.records_total.with_label_values(&[outcome]);
        }
        for collector in [
            Box::new(metrics.bytes.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(metrics.segments.clone()),
            Box::new(metrics.records.clone()),
            Box::new(metrics.oldest_unacked_age_seconds.clone()),
            Box::new(metrics.records_total.clone()),
            Box::new(metrics.rejected_writes.clone()),
            Box::new(metrics.fsync_seconds.clone()),
            Box::new(metrics.recovery_skipped_bytes.clone()),
            Box::new(metrics.recovery_skipped_regions.clone()),
            Box::new(metrics.dead_letter.clone()),
            Box::new(metrics.unreadable_frames.clone()),
            Box::new(metrics.topic_collisions.clone()),
        ] {
            if let Err(error) = registry.register(collector) {
                tracing::warn!(%error, "spool metric not registered");
            }
        }
        metrics
    }

    pub fn count_unreadable(&self) {
        self.unreadable_frames.inc();
    }

    pub fn count(&self, outcome: &str, n: u64) {
        if n > 0 {
            self.records_total.with_label_values(&[outcome]).inc_by(n);
        }
    }
}
