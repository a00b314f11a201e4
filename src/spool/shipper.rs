//! The shipper: reads the spool in order and produces it to Kafka.
//!
//! Order: one thread reads the log in sequence order and hands records to an
//! idempotent producer (`max.in.flight` ≤ 5), so records of one key, which share a
//! partition, keep their order. librdkafka retries retriable errors itself, for
//! ever (`message.timeout.ms = 0`); anything that still fails (a fatal producer
//! error, a purge, a timeout set by hand) restarts shipping from the committed
//! offset with a backoff, which may produce records twice, never lose them.
//!
//! Progress: the committed offset is the highest sequence number below which every
//! entry is acknowledged (or dead-lettered, or dropped). It is persisted at most
//! every 100 ms, then segments wholly below it are deleted.
//!
//! Poison records (too large for the topic, invalid topic, …) would block their
//! partition for ever: they go to `dead-letter.lp`, a metric and the error log, and
//! count as done.
//!
//! Records for a topic Kafka does not have (auto-creation off, or a name colliding
//! with an existing topic) are parked and sent again every 500 ms, in order, while the
//! rest of the stream ships on; after `unknown_topic_retry_ms` they are dead-lettered.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use super::format::{self, Entry, FrameHeader, FRAME_HEADER};
use super::{lock, now_ns, Shared, SpoolError};

/// How often the committed offset is persisted (and acknowledged segments deleted), at most.
const PERSIST_EVERY: Duration = Duration::from_millis(100);
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Delivery state of one spool entry.
pub(crate) struct EntryAck {
    seq: u64,
    appended_at_ns: i64,
    records: usize,
    bytes: usize,
    /// Records not yet settled, plus one held by the sender until it has sent them all.
    pending: AtomicUsize,
    /// Records that failed retriably: the entry must be shipped again.
    failed: AtomicUsize,
    session_failed: Arc<AtomicBool>,
}

impl EntryAck {
    fn settle_one(&self, wake: &super::Wake) {
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            wake.notify();
        }
    }

    fn fail(&self) {
        self.failed.fetch_add(1, Ordering::AcqRel);
        self.session_failed.store(true, Ordering::Release);
    }

    fn settled(&self) -> bool {
        self.pending.load(Ordering::Acquire) == 0
    }
}

/// Errors after which Kafka will never take the record, however often it is retried.
fn is_permanent(error: &KafkaError) -> bool {
    let code = match error {
        KafkaError::MessageProduction(code) => *code,
        _ => return false,
    };
    matches!(
        code,
        RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::InvalidMessage
            | RDKafkaErrorCode::InvalidTopic
            | RDKafkaErrorCode::MessageBatchTooLarge
            | RDKafkaErrorCode::InvalidRecord
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::PolicyViolation
            | RDKafkaErrorCode::UnsupportedForMessageFormat
            | RDKafkaErrorCode::InvalidArgument
    )
}

/// Errors saying the topic does not exist (and the broker will not create it): retried
/// for `spool.unknown_topic_retry_ms`, then the records are dead-lettered.
fn is_unknown_topic(error: &KafkaError) -> bool {
    matches!(
        error,
        KafkaError::MessageProduction(
            RDKafkaErrorCode::UnknownTopic | RDKafkaErrorCode::UnknownTopicOrPartition
        )
    )
}

/// How often records parked for a missing topic are sent again.
const PARKED_RETRY: Duration = Duration::from_millis(500);

/// A record for a topic Kafka does not have (yet), held and sent again every
/// `PARKED_RETRY` rather than restarting the whole stream: other topics ship on without
/// duplicates. Its entry stays unsettled (the committed offset waits) until it is
/// delivered or, after `unknown_topic_retry_ms`, dead-lettered.
struct ParkedRecord {
    topic: String,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    headers: Option<OwnedHeaders>,
    /// Holds one of the entry's pending counts.
    ack: Arc<EntryAck>,
}

#[derive(Default)]
struct ParkedQueue {
    records: VecDeque<ParkedRecord>,
    per_topic: HashMap<String, usize>,
}

/// Records parked for missing topics, in order.
#[derive(Default)]
struct Parking {
    queue: Mutex<ParkedQueue>,
    /// Whether anything is parked: spares `send_entry` the lock per record.
    any: AtomicBool,
}

impl Parking {
    fn park(&self, record: ParkedRecord) {
        let mut queue = lock(&self.queue);
        *queue.per_topic.entry(record.topic.clone()).or_default() += 1;
        queue.records.push_back(record);
        self.any.store(true, Ordering::Release);
    }

    /// Whether records of `topic` wait here: a newer one must queue behind them.
    fn holds(&self, topic: &str) -> bool {
        self.any.load(Ordering::Acquire) && lock(&self.queue).per_topic.contains_key(topic)
    }

    fn take_all(&self) -> VecDeque<ParkedRecord> {
        let mut queue = lock(&self.queue);
        queue.per_topic.clear();
        self.any.store(false, Ordering::Release);
        std::mem::take(&mut queue.records)
    }

    /// Puts records that failed again back in front of any parked meanwhile.
    fn repark_front(&self, mut records: VecDeque<ParkedRecord>) {
        if records.is_empty() {
            return;
        }
        let mut queue = lock(&self.queue);
        for record in &records {
            *queue.per_topic.entry(record.topic.clone()).or_default() += 1;
        }
        records.append(&mut queue.records);
        queue.records = records;
        self.any.store(true, Ordering::Release);
    }

    /// Gives every parked record up as failed (a restart ships its entry again).
    fn release(&self, wake: &super::Wake) {
        for record in self.take_all() {
            record.ack.fail();
            record.ack.settle_one(wake);
        }
    }
}

/// Settles entries as Kafka answers, and dead-letters poison records.
pub(crate) struct ShipContext {
    shared: Arc<Shared>,
    /// `shipped` and the proxy's `delivered`, looked up once rather than per record.
    shipped: prometheus::IntCounter,
    delivered: Option<prometheus::IntCounter>,
    parking: Parking,
}

impl ShipContext {
    fn new(shared: Arc<Shared>) -> ShipContext {
        ShipContext {
            shipped: shared.metrics.records_total.with_label_values(&["shipped"]),
            delivered: shared
                .proxy_metrics
                .as_ref()
                .map(|p| p.kafka_records.with_label_values(&["delivered"])),
            shared,
            parking: Parking::default(),
        }
    }
}

impl ClientContext for ShipContext {}

impl ProducerContext for ShipContext {
    type DeliveryOpaque = Arc<EntryAck>;

    fn delivery(&self, result: &DeliveryResult<'_>, ack: Arc<EntryAck>) {
        let shared = &self.shared;
        if let Some(proxy) = &shared.proxy_metrics {
            proxy.kafka_queue_depth.dec();
        }
        match result {
            Ok(message) => {
                self.shipped.inc();
                if let Some(delivered) = &self.delivered {
                    delivered.inc();
                }
                shared.topic_exists(message.topic());
            }
            Err((error, message))
                if is_permanent(error)
                    || (is_unknown_topic(error) && shared.gives_up_on_topic(message.topic())) =>
            {
                let tee_id = message
                    .headers()
                    .and_then(|h| h.iter().find(|h| h.key == "tee-id").and_then(|h| h.value))
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default();
                let (reason, text) = dead_letter_reason(shared, error);
                shared.dead_letter(
                    reason,
                    &tee_id,
                    message.topic(),
                    message.key(),
                    message.payload().unwrap_or_default(),
                    &text,
                );
            }
            Err((error, message)) if is_unknown_topic(error) => {
                shared.metrics.count("retried", 1);
                // Keeps its pending count: the entry settles when it is finally
                // delivered or dead-lettered.
                self.parking.park(ParkedRecord {
                    topic: message.topic().to_owned(),
                    key: message.key().map(<[u8]>::to_vec),
                    value: message.payload().unwrap_or_default().to_vec(),
                    headers: message.headers().map(|h| h.detach()),
                    ack,
                });
                return;
            }
            Err((error, message)) => {
                shared.metrics.count("retried", 1);
                if let Some(proxy) = &shared.proxy_metrics {
                    proxy.kafka_records.with_label_values(&["failed"]).inc();
                }
                // A purge is the shipper's own doing (shutdown, restart): one line per
                // record would bury the log; the close and restart lines say it all.
                let purged = matches!(
                    error,
                    KafkaError::MessageProduction(
                        RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight
                    )
                );
                if purged {
                    tracing::debug!(topic = message.topic(), %error, seq = ack.seq, "spool: record purged; the entry will be shipped again");
                } else {
                    tracing::warn!(topic = message.topic(), %error, seq = ack.seq, "spool: delivery failed; the entry will be shipped again");
                }
                ack.fail();
            }
        }
        ack.settle_one(&shared.wake);
    }
}

/// When to stop: set by [`ShipperHandle::stop`].
#[derive(Default)]
struct Control {
    deadline: Mutex<Option<Instant>>,
}

impl Control {
    fn deadline(&self) -> Option<Instant> {
        *lock(&self.deadline)
    }
}

/// A running shipper thread.
pub struct ShipperHandle {
    control: Arc<Control>,
    shared: Arc<Shared>,
    thread: JoinHandle<()>,
}

impl ShipperHandle {
    /// Lets the shipper drain until everything appended is acknowledged or `deadline`, then joins it.
    pub(crate) fn stop(self, deadline: Instant) {
        *lock(&self.control.deadline) = Some(deadline);
        self.shared.wake.notify();
        if self.thread.join().is_err() {
            tracing::error!("spool shipper panicked");
        }
    }
}

pub(crate) fn start(
    shared: Arc<Shared>,
    properties: BTreeMap<String, String>,
) -> Result<ShipperHandle, SpoolError> {
    let control = Arc::new(Control::default());
    let thread = {
        let shared = shared.clone();
        let control = control.clone();
        std::thread::Builder::new()
            .name("spool-ship".into())
            .spawn(move || run(shared, properties, control))
            .map_err(|e| SpoolError::Other(format!("cannot start the shipper thread: {e}")))?
    };
    Ok(ShipperHandle {
        control,
        shared,
        thread,
    })
}

/// The producer settings the shipper's guarantees rest on; they win over the configured ones.
pub fn shipper_properties(configured: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut props = configured.clone();
    for (key, value) in [
        ("enable.idempotence", "true"),
        ("acks", "all"),
        ("max.in.flight.requests.per.connection", "5"),
        // Retry retriable errors for ever, in order; an outage only makes the spool grow.
        ("message.timeout.ms", "0"),
    ] {
        props.insert(key.to_owned(), value.to_owned());
    }
    props.remove("delivery.timeout.ms");
    // librdkafka's default is to retry for ever; a configured limit would only make
    // idempotence refuse to start (0) or turn outages into replays.
    props.remove("retries");
    props.remove("message.send.max.retries");
    props
}

enum Outcome {
    Exit,
    Restart,
}

fn run(shared: Arc<Shared>, properties: BTreeMap<String, String>, control: Arc<Control>) {
    let properties = shipper_properties(&properties);
    let mut backoff = BACKOFF_MIN;
    loop {
        let mut config = ClientConfig::new();
        for (key, value) in &properties {
            config.set(key, value);
        }
        let producer: ThreadedProducer<ShipContext> =
            match config.create_with_context(ShipContext::new(shared.clone())) {
                Ok(producer) => producer,
                Err(error) => {
                    tracing::error!(%error, "spool: cannot create the Kafka producer; retrying");
                    if sleep_or_exit(&shared, &control, backoff) {
                        break;
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
        let mut session = Session::new(&shared);
        let started_at = session.committed;
        match session.run(&shared, &producer, &control) {
            Outcome::Exit => {
                let left = control.deadline().map_or(Duration::ZERO, |d| {
                    d.saturating_duration_since(Instant::now())
                });
                let _ = producer.flush(left.max(Duration::from_millis(100)));
                session.settle(&shared);
                session.persist(&shared, true);
                break;
            }
            Outcome::Restart => {
                session.settle(&shared);
                session.persist(&shared, true);
                if session.committed > started_at {
                    backoff = BACKOFF_MIN;
                }
                tracing::warn!(
                    committed = session.committed,
                    backoff_ms = backoff.as_millis() as u64,
                    "spool: shipping restarts from the committed offset"
                );
                drop(producer);
                if sleep_or_exit(&shared, &control, backoff) {
                    break;
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
    let committed = shared.committed.load(Ordering::Acquire);
    if let Err(error) = shared.persist_committed(committed) {
        tracing::error!(%error, "spool: cannot persist the committed offset");
    }
}

/// Sleeps for `pause`; true when the shipper should stop instead.
fn sleep_or_exit(shared: &Shared, control: &Control, pause: Duration) -> bool {
    let until = Instant::now() + pause;
    while Instant::now() < until {
        if control.deadline().is_some_and(|d| Instant::now() >= d) {
            return true;
        }
        shared
            .wake
            .wait(Duration::from_millis(50).min(until.saturating_duration_since(Instant::now())));
    }
    false
}

/// One producer's run from the committed offset.
struct Session {
    reader: Reader,
    inflight: VecDeque<Arc<EntryAck>>,
    inflight_records: usize,
    inflight_bytes: usize,
    committed: u64,
    persisted: u64,
    last_persist: Instant,
    last_parked_retry: Instant,
    failed: Arc<AtomicBool>,
}

impl Session {
    fn new(shared: &Shared) -> Session {
        let committed = shared.committed.load(Ordering::Acquire);
        Session {
            reader: Reader::new(committed + 1),
            inflight: VecDeque::new(),
            inflight_records: 0,
            inflight_bytes: 0,
            committed,
            persisted: committed,
            last_persist: Instant::now(),
            last_parked_retry: Instant::now(),
            failed: Arc::new(AtomicBool::new(false)),
        }
    }

    fn run(
        &mut self,
        shared: &Shared,
        producer: &ThreadedProducer<ShipContext>,
        control: &Control,
    ) -> Outcome {
        loop {
            self.settle(shared);
            self.persist(shared, false);
            if self.failed.load(Ordering::Acquire) {
                // Parked records would never settle: the restart ships their entries again.
                producer.context().parking.release(&shared.wake);
                if self.inflight.iter().all(|a| a.settled()) {
                    return Outcome::Restart;
                }
            } else if self.last_parked_retry.elapsed() >= PARKED_RETRY {
                self.last_parked_retry = Instant::now();
                resend_parked(shared, producer);
            }
            if let Some((code, reason)) = producer.client().fatal_error() {
                tracing::error!(?code, %reason, "spool: fatal Kafka producer error; recreating the producer");
                return Outcome::Restart;
            }
            if !self.failed.load(Ordering::Acquire) {
                self.fill(shared, producer);
            }
            if let Some(deadline) = control.deadline() {
                let done =
                    self.inflight.is_empty() && self.committed >= lock(&shared.state).last_seq;
                if done || Instant::now() >= deadline {
                    return Outcome::Exit;
                }
            }
            shared.wake.wait(Duration::from_millis(50));
        }
    }

    /// Advances the committed offset over settled entries at the front.
    fn settle(&mut self, shared: &Shared) {
        while let Some(front) = self.inflight.front() {
            if !front.settled() || front.failed.load(Ordering::Acquire) > 0 {
                break;
            }
            self.committed = front.seq;
            self.inflight_records -= front.records;
            self.inflight_bytes -= front.bytes;
            // Under the cursor lock, so `drop_oldest` counts an entry as dropped or
            // sees it committed, never both.
            let dropped = {
                let cursor = lock(&shared.cursor);
                shared.committed.store(front.seq, Ordering::Release);
                front.seq <= cursor.skip_through
            };
            if !dropped {
                shared.set_unacked(-(front.records as i64));
            }
            self.inflight.pop_front();
        }
        let age = match self.inflight.front() {
            Some(front) => ((now_ns() - front.appended_at_ns) as f64 / 1e9).max(0.0),
            None if self.committed >= shared.written_seq.load(Ordering::Acquire) => 0.0,
            None => shared.metrics.oldest_unacked_age_seconds.get(),
        };
        shared.metrics.oldest_unacked_age_seconds.set(age);
    }

    /// Persists the committed offset (at most every 100 ms unless `now`) and deletes acknowledged segments.
    fn persist(&mut self, shared: &Shared, now: bool) {
        if self.committed == self.persisted || (!now && self.last_persist.elapsed() < PERSIST_EVERY)
        {
            return;
        }
        self.last_persist = Instant::now();
        if let Err(error) = shared.persist_committed(self.committed) {
            tracing::error!(%error, "spool: cannot persist the committed offset");
            return;
        }
        self.persisted = self.committed;
        delete_acked(shared, self.committed);
    }

    /// Hands entries to librdkafka while the in-flight bounds allow.
    fn fill(&mut self, shared: &Shared, producer: &ThreadedProducer<ShipContext>) {
        let config = &shared.config;
        while self.inflight_records < config.max_inflight_records
            && (self.inflight_bytes as u64) < config.max_inflight_bytes
            && !self.failed.load(Ordering::Acquire)
        {
            let entry = match self.reader.next(shared) {
                Ok(Some(entry)) => entry,
                Ok(None) => return,
                Err(error) => {
                    tracing::error!(%error, "spool: cannot read the spool; retrying");
                    return;
                }
            };
            let skip = {
                let mut cursor = lock(&shared.cursor);
                if entry.seq <= cursor.skip_through {
                    true
                } else {
                    cursor.sent_seq = cursor.sent_seq.max(entry.seq);
                    false
                }
            };
            let ack = Arc::new(EntryAck {
                seq: entry.seq,
                appended_at_ns: entry.appended_at_ns,
                // Dropped entries were already taken off the gauge when their segment went.
                records: if skip { 0 } else { entry.record_count() },
                bytes: entry.payload_len(),
                pending: AtomicUsize::new(1),
                failed: AtomicUsize::new(0),
                session_failed: self.failed.clone(),
            });
            if !skip {
                send_entry(shared, producer, &entry, &ack);
            }
            self.reader.recycle(entry);
            self.inflight_records += ack.records;
            self.inflight_bytes += ack.bytes;
            ack.settle_one(&shared.wake);
            self.inflight.push_back(ack);
        }
    }
}

/// Deletes closed segments whose every entry is at or below `committed`.
pub(crate) fn delete_acked(shared: &Shared, committed: u64) {
    let mut state = lock(&shared.state);
    let done: Vec<u64> = state
        .segments
        .iter()
        .filter(|(first, meta)| Some(**first) != state.active && meta.last_seq <= committed)
        .map(|(first, _)| *first)
        .collect();
    for first in done {
        shared.delete_segment(&mut state, first);
    }
}

/// The metric label and the dead-letter file's text for a refused record.
fn dead_letter_reason(shared: &Shared, error: &KafkaError) -> (&'static str, String) {
    if is_unknown_topic(error) {
        let text = format!(
            "{error}: the topic does not exist and the broker does not create it \
             (retried for spool.unknown_topic_retry_ms = {})",
            shared.config.unknown_topic_retry_ms
        );
        ("unknown_topic", text)
    } else {
        ("refused", error.to_string())
    }
}

/// Sends the records parked for missing topics again, in order. Each holds its
/// entry's pending count: a delivery, a dead letter or a restart settles it.
fn resend_parked(shared: &Shared, producer: &ThreadedProducer<ShipContext>) {
    let parking = &producer.context().parking;
    let mut parked = parking.take_all();
    let mut again = VecDeque::new();
    // Topics with an older record still waiting: their newer ones wait too, in order.
    let mut waiting: std::collections::HashSet<String> = std::collections::HashSet::new();
    while let Some(record) = parked.pop_front() {
        if waiting.contains(&record.topic) {
            again.push_back(record);
            continue;
        }
        let mut base =
            BaseRecord::with_opaque_to(&record.topic, record.ack.clone()).payload(&record.value);
        if let Some(headers) = &record.headers {
            base = base.headers(headers.clone());
        }
        if let Some(key) = &record.key {
            base = base.key(key);
        }
        match producer.send(base) {
            Ok(()) => {
                if let Some(proxy) = &shared.proxy_metrics {
                    proxy.kafka_queue_depth.inc();
                }
            }
            Err((error, _)) => {
                let retry = matches!(
                    error,
                    KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)
                ) || (is_unknown_topic(&error)
                    && !shared.gives_up_on_topic(&record.topic));
                if retry {
                    waiting.insert(record.topic.clone());
                    again.push_back(record);
                } else if is_permanent(&error) || is_unknown_topic(&error) {
                    let (reason, text) = dead_letter_reason(shared, &error);
                    let tee_id = record
                        .headers
                        .as_ref()
                        .and_then(|h| h.iter().find(|h| h.key == "tee-id").and_then(|h| h.value))
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                        .unwrap_or_default();
                    shared.dead_letter(
                        reason,
                        &tee_id,
                        &record.topic,
                        record.key.as_deref(),
                        &record.value,
                        &text,
                    );
                    record.ack.settle_one(&shared.wake);
                } else {
                    tracing::warn!(%error, topic = record.topic, "spool: Kafka refused a parked record; shipping restarts");
                    record.ack.fail();
                    record.ack.settle_one(&shared.wake);
                }
            }
        }
    }
    parking.repark_front(again);
}

/// Sends every record of an entry, each with the write's headers plus its `tee-id`.
fn send_entry(
    shared: &Shared,
    producer: &ThreadedProducer<ShipContext>,
    entry: &Entry,
    ack: &Arc<EntryAck>,
) {
    shared.check_collisions(entry.topics());
    let header_count = entry.headers().count() + 1;
    let mut base_headers = OwnedHeaders::new_with_capacity(header_count);
    for (key, value) in entry.headers() {
        base_headers = base_headers.insert(Header {
            key,
            value: Some(value),
        });
    }
    // Looked up once per entry, not once per record.
    let enqueued = shared.proxy_metrics.as_ref().map(|p| {
        (
            p.kafka_records.with_label_values(&["enqueued"]),
            &p.kafka_queue_depth,
        )
    });
    for record in entry.records() {
        let tee_id = format::tee_id(&shared.instance, entry.seq, record.index);
        let headers = base_headers.clone().insert(Header {
            key: "tee-id",
            value: Some(&tee_id),
        });
        let parking = &producer.context().parking;
        if parking.holds(record.topic) {
            // Behind its topic's parked records, to keep their order.
            ack.pending.fetch_add(1, Ordering::AcqRel);
            parking.park(ParkedRecord {
                topic: record.topic.to_owned(),
                key: record.key.map(<[u8]>::to_vec),
                value: record.value.to_vec(),
                headers: Some(headers),
                ack: ack.clone(),
            });
            continue;
        }
        let mut base = BaseRecord::with_opaque_to(record.topic, ack.clone())
            .payload(record.value)
            .headers(headers);
        if let Some(key) = record.key {
            base = base.key(key);
        }
        let mut waited_since: Option<Instant> = None;
        loop {
            ack.pending.fetch_add(1, Ordering::AcqRel);
            match producer.send(base) {
                Ok(()) => {
                    if let Some((enqueued, depth)) = &enqueued {
                        enqueued.inc();
                        depth.inc();
                    }
                    break;
                }
                Err((error, refused)) => {
                    ack.pending.fetch_sub(1, Ordering::AcqRel);
                    if matches!(
                        error,
                        KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)
                    ) {
                        // librdkafka's own queue is full: wait for deliveries, keep the
                        // order, and send the very same record again.
                        let since = *waited_since.get_or_insert_with(Instant::now);
                        if since.elapsed() > Duration::from_secs(60) {
                            tracing::warn!("spool: librdkafka queue full for a minute");
                            waited_since = Some(Instant::now());
                        }
                        std::thread::sleep(Duration::from_millis(5));
                        base = refused;
                        continue;
                    }
                    if is_unknown_topic(&error) && !shared.gives_up_on_topic(record.topic) {
                        shared.metrics.count("retried", 1);
                        ack.pending.fetch_add(1, Ordering::AcqRel);
                        parking.park(ParkedRecord {
                            topic: record.topic.to_owned(),
                            key: record.key.map(<[u8]>::to_vec),
                            value: record.value.to_vec(),
                            headers: refused.headers,
                            ack: ack.clone(),
                        });
                        break;
                    }
                    if is_permanent(&error) || is_unknown_topic(&error) {
                        let (reason, text) = dead_letter_reason(shared, &error);
                        shared.dead_letter(
                            reason,
                            &tee_id,
                            record.topic,
                            record.key,
                            record.value,
                            &text,
                        );
                    } else {
                        tracing::warn!(%error, seq = entry.seq, "spool: Kafka refused a record; shipping restarts");
                        shared.metrics.count("retried", 1);
                        ack.fail();
                        return;
                    }
                    break;
                }
            }
        }
    }
}

/// Reads entries in sequence order across segments, never past what the appender published.
pub(crate) struct Reader {
    next_seq: u64,
    current: Option<(u64, File)>,
    offset: u64,
    /// A payload buffer handed back by the caller: reading entries of hundreds of KB
    /// into fresh allocations made the shipper spend its time in malloc.
    spare: Vec<u8>,
}

impl Reader {
    pub fn new(from_seq: u64) -> Reader {
        Reader {
            next_seq: from_seq,
            current: None,
            offset: 0,
            spare: Vec::new(),
        }
    }

    /// Takes back an entry's buffer for the next read.
    pub fn recycle(&mut self, entry: Entry) {
        let buffer = entry.into_payload();
        if buffer.capacity() > self.spare.capacity() {
            self.spare = buffer;
        }
    }

    /// The next entry at or after `next_seq`, or `None` when nothing more is published yet.
    pub fn next(&mut self, shared: &Shared) -> io::Result<Option<Entry>> {
        loop {
            if self.current.is_none() {
                let (first, path) = {
                    let state = lock(&shared.state);
                    let candidate = state
                        .segments
                        .range(..=self.next_seq)
                        .next_back()
                        .filter(|(first, meta)| {
                            meta.last_seq >= self.next_seq || state.active == Some(**first)
                        })
                        .or_else(|| state.segments.range(self.next_seq..).next())
                        .or_else(|| state.segments.range(..=self.next_seq).next_back());
                    match candidate {
                        Some((first, meta)) => (*first, meta.path.clone()),
                        None => return Ok(None),
                    }
                };
                let file = File::open(&path)?;
                self.current = Some((first, file));
                self.offset = format::SEGMENT_MAGIC.len() as u64;
            }
            let Some((first, file)) = &self.current else {
                return Ok(None);
            };
            let first = *first;
            let (limit, sealed, next_first) = {
                let state = lock(&shared.state);
                let next_first = state.segments.range(first + 1..).next().map(|(f, _)| *f);
                match state.segments.get(&first) {
                    Some(meta) => (meta.bytes, state.active != Some(first), next_first),
                    None => (0, true, next_first),
                }
            };
            if self.offset + FRAME_HEADER as u64 > limit {
                match next_first {
                    Some(next) if sealed => {
                        self.open(shared, next)?;
                        continue;
                    }
                    _ => return Ok(None),
                }
            }
            let mut head = [0u8; FRAME_HEADER];
            file.read_exact_at(&mut head, self.offset)?;
            let header = FrameHeader::parse(&head);
            let end = self.offset + (FRAME_HEADER as u64) + header.len as u64;
            if end > limit {
                if sealed {
                    tracing::error!(
                        segment = first,
                        offset = self.offset,
                        "spool: frame runs past its segment; skipping the rest"
                    );
                    shared.metrics.count_unreadable();
                    self.offset = limit;
                    continue;
                }
                return Ok(None);
            }
            let mut payload = std::mem::take(&mut self.spare);
            payload.clear();
            payload.resize(header.len as usize, 0);
            file.read_exact_at(&mut payload, self.offset + FRAME_HEADER as u64)?;
            if !header.checks(&payload) {
                tracing::error!(
                    segment = first,
                    offset = self.offset,
                    "spool: corrupt frame read back; skipping the rest of the segment"
                );
                shared.metrics.count_unreadable();
                self.offset = limit;
                continue;
            }
            self.offset = end;
            if header.seq < self.next_seq {
                continue;
            }
            self.next_seq = header.seq + 1;
            // An entry that passed its CRC but does not decode is dead-lettered whole and
            // stands as an empty entry, so the committed offset moves past it.
            return Ok(Some(match Entry::decode_keeping(&header, payload) {
                Ok(entry) => entry,
                Err((error, payload)) => {
                    shared.dead_letter_entry(header.seq, &payload, &error.to_string());
                    Entry::placeholder(&header, payload)
                }
            }));
        }
    }

    /// Continues at the start of the segment `first`, or looks the segment up again if it is gone.
    fn open(&mut self, shared: &Shared, first: u64) -> io::Result<()> {
        self.current = None;
        let path = lock(&shared.state)
            .segments
            .get(&first)
            .map(|meta| meta.path.clone());
        if let Some(path) = path {
            self.current = Some((first, File::open(&path)?));
            self.offset = format::SEGMENT_MAGIC.len() as u64;
        }
        Ok(())
    }
}
