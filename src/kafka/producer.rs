//! The Kafka side: one idempotent librdkafka producer per process, and per-write
//! acknowledgement tracking for `ack = "all"`.
//!
//! librdkafka's own queue is the bounded queue between writes and the broker. A
//! full queue makes a write wait (backpressure) for a while instead of dropping
//! records; only when the wait runs out is the failure reported.
//!
//! Order and duplicates: the producer is always idempotent, so librdkafka's own
//! retries (a leader that died, a broker restart) neither reorder nor repeat a
//! series' records. Every record carries a `tee-id`, `<instance>-<write>-<index>`
//! (a per-process id, the write's number in this process, the record's index in
//! it), unique per record; a client's retry of a write is a new write and gets new
//! ids, as InfluxDB stores it again too.
//!
//! A fatal producer error (librdkafka gave up on idempotence, e.g. a broker lost
//! acknowledged data) makes a producer refuse every record for good: it is then
//! replaced by a fresh one, so writes fail only while it happens.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use tokio::sync::Notify;

use crate::metrics::Metrics;

use super::encoder::RecordBatch;

/// Delivery state of the records of one write.
#[derive(Default)]
pub struct WriteAck {
    /// Records not yet delivered or failed, plus one held by the sender until it is done sending.
    pending: AtomicUsize,
    failed: AtomicUsize,
    first_error: Mutex<Option<String>>,
    done: Notify,
}

impl WriteAck {
    fn new() -> Arc<WriteAck> {
        Arc::new(WriteAck {
            pending: AtomicUsize::new(1),
            ..Default::default()
        })
    }

    fn settle_one(&self) {
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.done.notify_one();
        }
    }

    fn fail(&self, error: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut first) = self.first_error.lock() {
            first.get_or_insert(error);
        }
    }

    /// Waits until every record is delivered or failed; `Err` names the first failure.
    pub async fn wait(&self, timeout: Duration) -> Result<(), String> {
        if self.pending.load(Ordering::Acquire) != 0
            && tokio::time::timeout(timeout, self.done.notified())
                .await
                .is_err()
        {
            return Err(format!("no acknowledgement within {timeout:?}"));
        }
        match self.failed.load(Ordering::Relaxed) {
            0 => Ok(()),
            n => Err(format!(
                "{n} record(s) failed: {}",
                self.first_error
                    .lock()
                    .ok()
                    .and_then(|e| e.clone())
                    .unwrap_or_default()
            )),
        }
    }
}

/// Counts delivery outcomes and settles each write's [`WriteAck`].
pub struct TeeContext {
    metrics: Metrics,
}

impl ClientContext for TeeContext {}

impl ProducerContext for TeeContext {
    type DeliveryOpaque = Arc<WriteAck>;

    fn delivery(&self, result: &DeliveryResult<'_>, ack: Arc<WriteAck>) {
        self.metrics.kafka_queue_depth.dec();
        match result {
            Ok(_) => self
                .metrics
                .kafka_records
                .with_label_values(&["delivered"])
                .inc(),
            Err((error, message)) => {
                self.metrics
                    .kafka_records
                    .with_label_values(&["failed"])
                    .inc();
                tracing::warn!(topic = rdkafka::Message::topic(message), %error, "kafka delivery failed");
                ack.fail(error.to_string());
            }
        }
        ack.settle_one();
    }
}

/// What became of a batch handed to [`TeeProducer::send`].
pub struct SendOutcome {
    pub ack: Arc<WriteAck>,
    /// Records librdkafka would not take (queue still full after the wait, or an invalid record).
    pub refused: usize,
    pub first_refusal: Option<String>,
}

/// The process-wide Kafka producer.
pub struct TeeProducer {
    /// Replaced after a fatal error; each send holds its own handle.
    producer: RwLock<Arc<ThreadedProducer<TeeContext>>>,
    config: ClientConfig,
    metrics: Metrics,
    queue_full_wait: Duration,
    /// Prefix of every `tee-id` of this process.
    instance: String,
    writes: AtomicU64,
}

/// The producer settings that keep each series' records in order and unrepeated
/// across retries; they win over the configured ones. With idempotence on,
/// librdkafka itself refuses to start with settings that would break it (`acks`
/// other than `all`, `max.in.flight` above 5, no retries).
pub fn direct_properties(configured: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut props = configured.clone();
    if let Some(value) = props.insert("enable.idempotence".to_owned(), "true".to_owned()) {
        if value != "true" {
            tracing::warn!(
                configured = %value,
                "kafka.properties: enable.idempotence is always true (records of a series must stay in order)"
            );
        }
    }
    props
}

impl TeeProducer {
    pub fn new(
        properties: &BTreeMap<String, String>,
        metrics: Metrics,
        queue_full_wait: Duration,
    ) -> Result<TeeProducer, KafkaError> {
        let mut config = ClientConfig::new();
        for (key, value) in &direct_properties(properties) {
            config.set(key, value);
        }
        let producer = config.create_with_context(TeeContext {
            metrics: metrics.clone(),
        })?;
        Ok(TeeProducer {
            producer: RwLock::new(Arc::new(producer)),
            config,
            metrics,
            queue_full_wait,
            instance: uuid::Uuid::new_v4().simple().to_string(),
            writes: AtomicU64::new(0),
        })
    }

    /// The producer to use, replaced first if librdkafka declared it unusable.
    fn current(&self) -> Arc<ThreadedProducer<TeeContext>> {
        let producer = match self.producer.read() {
            Ok(slot) => Arc::clone(&slot),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        };
        let Some((code, reason)) = producer.client().fatal_error() else {
            return producer;
        };
        let mut slot = match self.producer.write() {
            Ok(slot) => slot,
            Err(poisoned) => poisoned.into_inner(),
        };
        if !Arc::ptr_eq(&slot, &producer) {
            // another write already replaced it
            return Arc::clone(&slot);
        }
        match self.config.create_with_context(TeeContext {
            metrics: self.metrics.clone(),
        }) {
            Ok(fresh) => {
                tracing::error!(?code, %reason, "fatal Kafka producer error: records not yet delivered fail; a new producer takes over");
                let old = std::mem::replace(&mut *slot, Arc::new(fresh));
                drop(producer);
                // Dropping purges and flushes it (up to 500 ms): not on this thread.
                let _ = std::thread::Builder::new()
                    .name("kafka-drop".into())
                    .spawn(move || drop(old));
                Arc::clone(&slot)
            }
            Err(error) => {
                tracing::error!(?code, %reason, %error, "fatal Kafka producer error, and no new producer can be made");
                producer
            }
        }
    }

    /// Hands every record of a write to librdkafka, waiting for room while its queue is full.
    pub async fn send(&self, batch: &RecordBatch, headers: &[(&str, &str)]) -> SendOutcome {
        let producer = self.current();
        let ack = WriteAck::new();
        let mut shared = OwnedHeaders::new_with_capacity(headers.len());
        for (key, value) in headers {
            shared = shared.insert(Header {
                key,
                value: Some(*value),
            });
        }
        let mut refused = 0;
        let mut first_refusal = None;
        let mut deadline: Option<Instant> = None;
        // `<instance>-<write>-`, then each record's index appended in place.
        let write = self.writes.fetch_add(1, Ordering::Relaxed);
        let mut tee_id = String::with_capacity(self.instance.len() + 24);
        tee_id.push_str(&self.instance);
        tee_id.push('-');
        tee_id.push_str(itoa::Buffer::new().format(write));
        tee_id.push('-');
        let prefix_len = tee_id.len();
        let mut index_buffer = itoa::Buffer::new();
        for (index, record) in batch.iter().enumerate() {
            tee_id.truncate(prefix_len);
            tee_id.push_str(index_buffer.format(index));
            let mut base = BaseRecord::with_opaque_to(record.topic, ack.clone())
                .payload(record.value)
                .headers(shared.clone().insert(Header {
                    key: "tee-id",
                    value: Some(tee_id.as_str()),
                }));
            if let Some(key) = record.key {
                base = base.key(key);
            }
            loop {
                ack.pending.fetch_add(1, Ordering::AcqRel);
                match producer.send(base) {
                    Ok(()) => {
                        self.metrics
                            .kafka_records
                            .with_label_values(&["enqueued"])
                            .inc();
                        self.metrics.kafka_queue_depth.inc();
                        break;
                    }
                    Err((error, returned)) => {
                        ack.pending.fetch_sub(1, Ordering::AcqRel);
                        let queue_full = matches!(
                            error,
                            KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)
                        );
                        let deadline =
                            *deadline.get_or_insert_with(|| Instant::now() + self.queue_full_wait);
                        if queue_full && Instant::now() < deadline {
                            tokio::time::sleep(Duration::from_millis(2)).await;
                            // the very same record, headers and all, once there is room
                            base = returned;
                            continue;
                        }
                        let outcome = if queue_full { "queue_full" } else { "refused" };
                        self.metrics
                            .kafka_records
                            .with_label_values(&[outcome])
                            .inc();
                        refused += 1;
                        first_refusal.get_or_insert_with(|| error.to_string());
                        break;
                    }
                }
            }
        }
        if let Some(reason) = &first_refusal {
            ack.fail(reason.clone());
        }
        ack.settle_one();
        SendOutcome {
            ack,
            refused,
            first_refusal,
        }
    }

    /// Whether a broker answers a metadata request in time.
    pub async fn check_reachable(self: &Arc<Self>, timeout: Duration) -> Result<(), String> {
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            this.current()
                .client()
                .fetch_metadata(None, timeout)
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// Waits for queued records on shutdown; returns how many were still undelivered.
    pub async fn flush(self: &Arc<Self>, timeout: Duration) -> usize {
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let producer = this.current();
            let _ = producer.flush(timeout);
            producer.in_flight_count().max(0) as usize
        })
        .await
        .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_producer_with_a_fatal_error_is_replaced() {
        let properties: BTreeMap<String, String> =
            [("bootstrap.servers".to_owned(), "127.0.0.1:1".to_owned())].into();
        let tee = TeeProducer::new(&properties, Metrics::new(), Duration::from_millis(10))
            .expect("producer");
        let first = tee.current();
        assert!(first.client().fatal_error().is_none());
        // librdkafka's own hook for fabricating the fatal errors idempotence can raise.
        // SAFETY: a live client's handle and a NUL-terminated reason.
        let injected = unsafe {
            rdkafka::bindings::rd_kafka_test_fatal_error(
                first.client().native_ptr(),
                rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
                c"injected by the test".as_ptr(),
            )
        };
        assert_eq!(
            injected,
            rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
        );
        assert!(first.client().fatal_error().is_some());
        let second = tee.current();
        assert!(
            !Arc::ptr_eq(&first, &second),
            "the producer was not replaced"
        );
        assert!(second.client().fatal_error().is_none());
        assert!(Arc::ptr_eq(&second, &tee.current()));
    }

    #[test]
    fn idempotence_cannot_be_configured_away() {
        let configured: BTreeMap<String, String> =
            [("enable.idempotence", "false"), ("linger.ms", "1")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
        let props = direct_properties(&configured);
        assert_eq!(props["enable.idempotence"], "true");
        assert_eq!(props["linger.ms"], "1");
        // and librdkafka refuses, at start, what idempotence cannot work with
        for (key, value) in [
            ("acks", "1"),
            ("max.in.flight.requests.per.connection", "6"),
            ("retries", "0"),
        ] {
            let properties: BTreeMap<String, String> = [
                ("bootstrap.servers".to_owned(), "127.0.0.1:1".to_owned()),
                (key.to_owned(), value.to_owned()),
            ]
            .into();
            assert!(
                TeeProducer::new(&properties, Metrics::new(), Duration::from_millis(10)).is_err(),
                "{key}={value} accepted"
            );
        }
    }

    #[test]
    fn shipper_retries_for_ever_whatever_is_configured() {
        let configured: BTreeMap<String, String> = [
            ("retries", "0"),
            ("message.send.max.retries", "3"),
            ("delivery.timeout.ms", "1000"),
            ("acks", "1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let props = crate::spool::shipper::shipper_properties(&configured);
        assert!(!props.contains_key("retries"));
        assert!(!props.contains_key("message.send.max.retries"));
        assert!(!props.contains_key("delivery.timeout.ms"));
        assert_eq!(props["acks"], "all");
        assert_eq!(props["message.timeout.ms"], "0");
        assert_eq!(props["enable.idempotence"], "true");
    }
}
