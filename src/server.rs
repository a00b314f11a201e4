//! Wiring: build the pipeline from the config and serve both listeners until shutdown.
//!
//! Listeners and the shutdown signal are injected, so tests bind port 0 and stop
//! the proxy cleanly.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::config::{json_timestamp_divisor, Config, HttpConfig};
use crate::http::serve::{serve, ConnectionLimits, ConnectionMetrics};
use crate::http::tls::ReloadingAcceptor;
use crate::http::{admin::admin_router, client_router};
use crate::kafka::{Encoder, TeeProducer, TopicTemplate};
use crate::metrics::Metrics;
use crate::upstream::Upstream;
use crate::write::{WritePipeline, WriteSettings};

/// Builds the write pipeline: upstream client, Kafka producer, encoder and metrics.
pub fn build_pipeline(config: &Config) -> anyhow::Result<Arc<WritePipeline>> {
    let metrics = Metrics::new();
    let upstream = if config.upstream.is_none() {
        None
    } else {
        Some(Upstream::new(&config.upstream).context("upstream client")?)
    };
    let gateway_auth = crate::http::gateway_auth::GatewayAuth::load(&config.gateway)
        .map_err(anyhow::Error::msg)?;
    match &gateway_auth {
        Some(auth) => tracing::info!(tokens = auth.len(), "gateway writes need a listed token"),
        None if upstream.is_none() => tracing::warn!(
            "the gateway accepts writes from anyone who reaches its port: no [gateway] tokens are configured"
        ),
        None => {}
    }
    // librdkafka quotes a value it refuses, which may be a password.
    let producer = TeeProducer::new(
        &config.kafka.client_properties(),
        metrics.clone(),
        Duration::from_millis(config.kafka.queue_full_wait_ms),
    )
    .map_err(|error| {
        anyhow::anyhow!(
            "kafka producer: {}",
            config.scrub_secrets(&error.to_string())
        )
    })?;
    let encoder = Encoder::new(
        config.kafka.format,
        TopicTemplate::parse(&config.kafka.topic)?,
        json_timestamp_divisor(&config.kafka.json_timestamp_units)?,
        config.kafka.batch_max_bytes,
    );
    // The spool serves `ack = "influx"`; `ack = "all"` already waits for Kafka itself.
    let spool = if config.spool.enabled && config.kafka.ack == crate::config::AckMode::Influx {
        let spool =
            crate::spool::Spool::open(&config.spool, metrics.registry(), Some(metrics.clone()))
                .with_context(|| format!("spool in {}", config.spool.dir.display()))?;
        Some(Arc::new(spool))
    } else {
        None
    };
    let budget = crate::write::budget::BodyBudget::new(
        config.max_inflight_bytes,
        Duration::from_millis(config.inflight_wait_ms),
        metrics.registry(),
    );
    Ok(Arc::new(WritePipeline {
        upstream,
        gateway_auth,
        producer: Arc::new(producer),
        spool,
        encoder,
        metrics,
        settings: WriteSettings {
            max_body_bytes: config.max_body_bytes,
            timestamps: config.timestamps,
            ack: config.kafka.ack,
            ack_timeout: Duration::from_millis(config.kafka.ack_timeout_ms),
            retry_after_seconds: config.upstream.retry_after_seconds,
            readback: config.upstream.readback.clone(),
            body_pace: body_pace(&config.http),
            late_answer_wait: Duration::from_millis(config.upstream.late_answer_wait_ms),
        },
        in_flight: Default::default(),
        budget,
    }))
}

/// Serves clients on `listener` and the admin endpoints on `admin_listener` until
/// `shutdown` resolves, then finishes requests in flight and flushes Kafka.
pub async fn run(
    listener: TcpListener,
    admin_listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let pipeline = build_pipeline(&config)?;
    if let Some(spool) = &pipeline.spool {
        spool
            .start_shipper(config.kafka.client_properties())
            .map_err(|error| {
                anyhow::anyhow!(
                    "spool shipper: {}",
                    config.scrub_secrets(&error.to_string())
                )
            })?;
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    if let Some(upstream) = pipeline.upstream.clone() {
        // Learn the upstream's version before the first write: it decides whether
        // unsigned integers parse.
        let metrics = pipeline.metrics.clone();
        let mut last_version = log_identity(&upstream, &metrics, None).await;
        let interval = Duration::from_millis(config.upstream.version_probe_interval_ms.max(1000));
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = stop.wait_for(|s| *s) => break,
                }
                last_version = log_identity(&upstream, &metrics, last_version).await;
            }
        });
    }

    tracing::info!(
        listen = %listener.local_addr()?,
        admin = %admin_listener.local_addr()?,
        tls = config.tls.enabled(),
        upstream = %crate::config::mask_url_password(&config.upstream.url),
        kafka = %config.kafka.brokers,
        "influx-tee serving"
    );
    let tls = if config.tls.enabled() {
        let acceptor = ReloadingAcceptor::new(&config.tls)?;
        acceptor.spawn_watcher();
        Some(acceptor)
    } else {
        None
    };
    let admin = serve(
        admin_listener,
        admin_router(pipeline.clone()),
        connection_limits(&config.http, true),
        ConnectionMetrics::new(pipeline.metrics.registry(), "admin"),
        None,
        stopped(stop_rx.clone()),
    );
    let admin = tokio::spawn(admin);
    serve(
        listener,
        client_router(pipeline.clone()),
        connection_limits(&config.http, false),
        ConnectionMetrics::new(pipeline.metrics.registry(), "client"),
        tls,
        stopped(stop_rx),
    )
    .await
    .context("client listener")?;
    // Writes whose client hung up run on in their own tasks: let them finish their tee.
    let flush_timeout = Duration::from_millis(config.kafka.flush_timeout_ms);
    let unfinished = pipeline.in_flight.drained(flush_timeout).await;
    if unfinished > 0 {
        tracing::error!(
            unfinished,
            "shutdown: writes still in flight after the flush timeout"
        );
    }
    // The spool drains, persists its committed offset, stops its threads and logs
    // what is left; its directory lock goes when the last handle does.
    if let Some(spool) = &pipeline.spool {
        spool
            .close(Duration::from_millis(config.spool.shutdown_drain_ms))
            .await;
    }
    let unsent = pipeline
        .producer
        .flush(Duration::from_millis(config.kafka.flush_timeout_ms))
        .await;
    if unsent > 0 {
        tracing::error!(
            unsent,
            "shutdown: Kafka records still undelivered after the flush timeout"
        );
    } else if pipeline.spool.is_none() {
        tracing::info!("shutdown: all Kafka records delivered");
    }
    let _ = admin.await;
    Ok(())
}

/// How slowly a request body may arrive.
pub fn body_pace(config: &HttpConfig) -> crate::http::timed_body::BodyPace {
    crate::http::timed_body::BodyPace {
        idle: Duration::from_millis(config.body_idle_timeout_ms),
        min_bytes_per_second: config.body_min_bytes_per_second,
        grace: Duration::from_millis(config.body_min_rate_grace_ms),
    }
}

/// The limits of the client listener, or of the admin listener (`admin`).
pub fn connection_limits(config: &HttpConfig, admin: bool) -> ConnectionLimits {
    ConnectionLimits {
        header_read_timeout: Duration::from_millis(config.header_read_timeout_ms),
        idle_timeout: Duration::from_millis(config.idle_timeout_ms),
        max_connections: if admin {
            config.admin_max_connections
        } else {
            config.max_connections
        },
        max_headers: config.max_headers,
        max_header_bytes: config.max_header_bytes,
        drain_timeout: Duration::from_millis(config.drain_timeout_ms),
    }
}

/// Probes the upstream's `/ping` and logs its version when it changed.
async fn log_identity(
    upstream: &Upstream,
    metrics: &Metrics,
    last: Option<String>,
) -> Option<String> {
    match upstream.probe(metrics).await {
        Ok(identity) => {
            if identity.version != last {
                tracing::info!(version = ?identity.version, build = ?identity.build, api = ?upstream.api(), "upstream identified");
            }
            identity.version
        }
        Err(error) => {
            tracing::warn!(%error, "upstream /ping failed");
            last
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutdown requested");
}

/// Installs the `tracing` subscriber; `RUST_LOG` wins over the configured level.
pub fn init_logging(config: &crate::config::LogConfig) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: files, pipes and journald get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match config.format {
        crate::config::LogFormat::Json => builder.json().try_init(),
        crate::config::LogFormat::Text => builder.try_init(),
    };
}
