//! The durable spool: every write bound for Kafka is appended to a local,
//! segmented, append-only log before the client gets its 2xx, and a shipper
//! thread produces it to Kafka from there.
//!
//! Why: once a client has its 2xx, every point InfluxDB accepted must reach Kafka,
//! even when Kafka is down for an hour or the proxy is killed. Memory buffers (the
//! peers' approach) lose data on restart or when they fill up.
//!
//! Pieces:
//! - [`format`]: frames (`len`, CRC, sequence number, append time) and the entry encoding;
//! - [`segment`]: segment files, scanning with resynchronisation, crash recovery;
//! - this module: opening and recovery, the appender thread (group commit), room
//!   accounting (`when_full`), and the periodic fsync;
//! - [`shipper`]: reads the log in order, produces to Kafka, persists the committed
//!   sequence number, deletes acknowledged segments and dead-letters poison records;
//! - [`command`]: `influx-tee spool stat|dump|replay`.

pub mod command;
pub mod format;
mod lock;
pub mod metrics;
pub mod segment;
pub mod shipper;

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::kafka::RecordBatch;
use crate::metrics::Metrics;

pub use format::{EncodedEntry, Entry};
pub use metrics::SpoolMetrics;

/// `[spool]` in the configuration file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpoolConfig {
    /// Off keeps the direct path: records go to librdkafka's memory queue only.
    pub enabled: bool,
    pub dir: PathBuf,
    /// Bytes of segment files the spool may hold, acknowledged or not.
    pub max_bytes: u64,
    /// Size at which a segment is closed and a new one begun; at most an eighth of `max_bytes`.
    pub segment_bytes: u64,
    pub fsync: FsyncMode,
    /// How often the appender fsyncs in `fsync = "interval"`.
    pub fsync_interval_ms: u64,
    pub when_full: WhenFull,
    /// Records handed to librdkafka and not yet acknowledged, at most; bounds memory in an outage.
    pub max_inflight_records: usize,
    /// Payload bytes handed to librdkafka and not yet acknowledged, at most.
    pub max_inflight_bytes: u64,
    /// On shutdown (SIGTERM/SIGINT), how long the shipper may go on shipping before the
    /// proxy exits; what is left stays in the spool and ships on the next start.
    pub shutdown_drain_ms: u64,
    /// How long records for a topic Kafka does not have (and will not create) are
    /// retried before they are dead-lettered, so they cannot stall the spool for ever.
    pub unknown_topic_retry_ms: u64,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            enabled: true,
            dir: PathBuf::from("/var/lib/influx-tee/spool"),
            max_bytes: 1 << 30,
            segment_bytes: 64 << 20,
            fsync: FsyncMode::Interval,
            fsync_interval_ms: 10,
            when_full: WhenFull::Reject,
            max_inflight_records: 50_000,
            max_inflight_bytes: 64 << 20,
            shutdown_drain_ms: 10_000,
            // Long enough that a cluster briefly unsure of its topics loses nothing.
            unknown_topic_retry_ms: 300_000,
        }
    }
}

impl SpoolConfig {
    /// The segment size in effect: small enough that dropping or deleting whole
    /// segments frees room well before the spool is full.
    pub fn effective_segment_bytes(&self) -> u64 {
        self.segment_bytes
            .min(self.max_bytes / 8)
            .max(MIN_SEGMENT_BYTES)
    }

    /// Refuses settings under which the spool could never work, with the reason.
    /// `max_body_bytes` is the largest write the proxy takes.
    pub fn validate(
        &self,
        max_body_bytes: usize,
        format: crate::config::RecordFormat,
    ) -> Result<(), String> {
        if self.dir.as_os_str().is_empty() {
            return Err("spool.dir is empty".into());
        }
        if self.max_inflight_records == 0 {
            return Err(
                "spool.max_inflight_records = 0: the shipper could never hand a record to Kafka"
                    .into(),
            );
        }
        if self.max_inflight_bytes == 0 {
            return Err(
                "spool.max_inflight_bytes = 0: the shipper could never hand a record to Kafka"
                    .into(),
            );
        }
        if self.segment_bytes < MIN_SEGMENT_BYTES {
            return Err(format!(
                "spool.segment_bytes = {} is below the minimum of {MIN_SEGMENT_BYTES}",
                self.segment_bytes
            ));
        }
        if self.fsync == FsyncMode::Interval && self.fsync_interval_ms == 0 {
            return Err(
                "spool.fsync_interval_ms = 0 with fsync = \"interval\": use fsync = \"always\""
                    .into(),
            );
        }
        let largest_entry = max_entry_bytes(max_body_bytes, format);
        if largest_entry > format::MAX_PAYLOAD as u64 {
            return Err(format!(
                "max_body_bytes = {max_body_bytes} is too large for the spool: one write's entry may \
                 take {largest_entry} bytes, more than the {} one entry may hold",
                format::MAX_PAYLOAD
            ));
        }
        if self.max_bytes < largest_entry {
            return Err(format!(
                "spool.max_bytes = {} cannot hold one write of max_body_bytes = {max_body_bytes} \
                 (up to {largest_entry} bytes in the spool as {format:?} records)",
                self.max_bytes
            ));
        }
        Ok(())
    }
}

/// The smallest segment size; smaller settings are refused.
pub const MIN_SEGMENT_BYTES: u64 = 4096;

/// Spool bytes one write of `body_bytes` may take: the shortest lines (`m v=1`, 6
/// bytes) grow most, by 12 bytes of framing, the series key and a 19-digit time in
/// `line`, and by the JSON object in `json`. The bound the config is checked against.
pub fn max_entry_bytes(body_bytes: usize, format: crate::config::RecordFormat) -> u64 {
    let factor = match format {
        crate::config::RecordFormat::Line => 7,
        crate::config::RecordFormat::Batch => 5,
        crate::config::RecordFormat::Json => 15,
    };
    body_bytes as u64 * factor + 64 * 1024
}

/// When an append is made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum FsyncMode {
    /// fsync before the client's 2xx; writes queued together share one fsync.
    Always,
    /// 2xx once the entry is written to the OS; the appender fsyncs every
    /// `fsync_interval_ms`, between groups.
    Interval,
    /// Never fsync; the OS writes back when it likes.
    Never,
}

/// What a write meets when the spool is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// 503 + `Retry-After` before the write is forwarded, so InfluxDB and Kafka never diverge.
    Reject,
    /// Accept the write and delete the oldest segments, counting what was never shipped.
    DropOldest,
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("{}", full_reason(*.on_disk, *.reserved, *.need, *.max))]
    Full {
        /// Bytes of segment files: entries not yet shipped, and shipped ones whose
        /// segment is not yet deleted.
        on_disk: u64,
        /// Bytes set aside for writes on their way to InfluxDB.
        reserved: u64,
        /// What this write needs.
        need: u64,
        max: u64,
    },
    #[error("the spool is closed")]
    Closed,
    #[error("spool I/O error on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("the spool directory {0} is in use by another influx-tee process")]
    Locked(PathBuf),
    #[error("spool: {0}")]
    Other(String),
}

/// The true reason a write found no room.
fn full_reason(on_disk: u64, reserved: u64, need: u64, max: u64) -> String {
    if on_disk + need > max {
        format!(
            "the spool is full: {on_disk} of {max} bytes hold entries Kafka has not taken yet \
             (this write needs {need}); Kafka is behind"
        )
    } else {
        format!(
            "the spool has no room for this write right now: {reserved} bytes are reserved by \
             writes in flight and {on_disk} bytes are on disk, of {max} (this write needs {need}); \
             retry shortly"
        )
    }
}

impl SpoolError {
    fn io(path: &Path, source: io::Error) -> SpoolError {
        SpoolError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

impl From<SpoolError> for crate::http::error::ProxyError {
    fn from(error: SpoolError) -> Self {
        match error {
            SpoolError::Full { .. } => crate::http::error::ProxyError::SpoolFull(error.to_string()),
            other => crate::http::error::ProxyError::SpoolFailed(other.to_string()),
        }
    }
}

/// Nanoseconds since the epoch.
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// What opening the spool found on disk.
#[derive(Debug, Clone, Default)]
pub struct Inspection {
    pub segments: usize,
    pub bytes: u64,
    pub entries: u64,
    pub records: u64,
    pub unacked_entries: u64,
    pub unacked_records: u64,
    pub committed: u64,
    pub last_seq: u64,
    /// Sequence number and append time of the oldest entry Kafka has not acknowledged.
    pub oldest_unacked: Option<(u64, i64)>,
    pub skipped_bytes: u64,
    pub skipped_regions: u64,
    /// Per segment: first sequence number, bytes, entries, records, damaged bytes.
    pub per_segment: Vec<SegmentSummary>,
}

#[derive(Debug, Clone)]
pub struct SegmentSummary {
    pub path: PathBuf,
    pub first_seq: u64,
    pub last_seq: u64,
    pub bytes: u64,
    pub entries: u64,
    pub records: u64,
    pub skipped_bytes: u64,
}

/// A segment known to the appender and the shipper.
#[derive(Debug, Clone)]
pub(crate) struct SegmentMeta {
    pub path: PathBuf,
    /// Bytes written and visible to readers.
    pub bytes: u64,
    pub entries: u64,
    pub records: u64,
    /// Sequence number of the last entry; `first - 1` while empty.
    pub last_seq: u64,
}

pub(crate) struct State {
    pub segments: BTreeMap<u64, SegmentMeta>,
    /// First sequence number of the segment being appended to.
    pub active: Option<u64>,
    pub last_seq: u64,
}

/// Where the shipper is, and what `drop_oldest` took from under it.
#[derive(Default)]
pub(crate) struct ShipCursor {
    /// The highest sequence number handed to librdkafka.
    pub sent_seq: u64,
    /// Entries up to here were dropped with their segments; the shipper skips them.
    pub skip_through: u64,
}

/// A level-triggered wake-up for the shipper: new data, a delivery, or shutdown.
#[derive(Default)]
pub(crate) struct Wake {
    flag: Mutex<bool>,
    cv: Condvar,
}

impl Wake {
    pub fn notify(&self) {
        if let Ok(mut flag) = self.flag.lock() {
            *flag = true;
            self.cv.notify_all();
        }
    }

    pub fn wait(&self, timeout: Duration) {
        if let Ok(mut flag) = self.flag.lock() {
            if !*flag {
                flag = match self.cv.wait_timeout(flag, timeout) {
                    Ok((flag, _)) => flag,
                    Err(poisoned) => poisoned.into_inner().0,
                };
            }
            *flag = false;
        }
    }
}

/// State shared by the appender, the shipper and the write path.
pub(crate) struct Shared {
    pub dir: PathBuf,
    pub instance: String,
    pub config: SpoolConfig,
    pub state: Mutex<State>,
    pub cursor: Mutex<ShipCursor>,
    pub wake: Wake,
    /// Every entry up to here is acknowledged by Kafka (or dead-lettered, or dropped).
    pub committed: AtomicU64,
    pub bytes: AtomicU64,
    pub reserved: AtomicU64,
    /// Writes holding a [`SpoolRoom`]: reserved and not yet appended. `close` waits for them.
    pub rooms: AtomicU64,
    pub unacked_records: AtomicI64,
    pub written_seq: AtomicU64,
    pub metrics: SpoolMetrics,
    pub proxy_metrics: Option<Metrics>,
    pub dead_letter: Mutex<Option<File>>,
    /// Topics Kafka said it does not have, with when it first said so.
    pub unknown_topics: Mutex<HashMap<String, Instant>>,
    /// Whether `unknown_topics` holds anything: spares deliveries the lock.
    pub unknown_topics_any: AtomicBool,
    /// Topics shipped so far by their collision key (`.` as `_`), to report pairs Kafka
    /// cannot hold side by side (each once). Bounded by `MAX_TRACKED_TOPICS`.
    pub topic_names: Mutex<TopicNames>,
}

/// Topics remembered for collision reports, at most.
const MAX_TRACKED_TOPICS: usize = 100_000;

#[derive(Default)]
pub(crate) struct TopicNames {
    by_key: HashMap<String, String>,
    reported: std::collections::HashSet<String>,
}

/// Locks a mutex, taking the data of a poisoned one: a panic elsewhere must not stop the spool.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    pub fn committed_path(&self) -> PathBuf {
        self.dir.join("committed")
    }

    pub fn set_unacked(&self, delta: i64) {
        let now = self.unacked_records.fetch_add(delta, Ordering::AcqRel) + delta;
        self.metrics.records.set(now.max(0));
    }

    pub fn publish_sizes(&self, state: &State) {
        self.metrics.segments.set(state.segments.len() as i64);
        self.metrics
            .bytes
            .set(self.bytes.load(Ordering::Acquire) as i64);
    }

    /// Deletes a segment file and forgets it.
    pub fn delete_segment(&self, state: &mut State, first: u64) {
        if let Some(meta) = state.segments.remove(&first) {
            if let Err(error) = fs::remove_file(&meta.path) {
                if error.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(path = %meta.path.display(), %error, "cannot delete spool segment");
                }
            }
            self.bytes.fetch_sub(
                meta.bytes.min(self.bytes.load(Ordering::Acquire)),
                Ordering::AcqRel,
            );
        }
        self.publish_sizes(state);
    }

    /// Whether records for `topic`, which Kafka says does not exist, have been retried
    /// long enough (`unknown_topic_retry_ms` since the first refusal) to dead-letter them.
    pub fn gives_up_on_topic(&self, topic: &str) -> bool {
        let limit = Duration::from_millis(self.config.unknown_topic_retry_ms);
        let mut topics = lock(&self.unknown_topics);
        self.unknown_topics_any.store(true, Ordering::Release);
        let first = *topics.entry(topic.to_owned()).or_insert_with(|| {
            tracing::warn!(topic, retry_for_ms = self.config.unknown_topic_retry_ms, "spool: Kafka does not have the topic (auto-creation off or refused); retrying, then dead-lettering");
            Instant::now()
        });
        first.elapsed() >= limit
    }

    /// A record reached `topic`: it exists (again).
    pub fn topic_exists(&self, topic: &str) {
        if self.unknown_topics_any.load(Ordering::Acquire) {
            let mut topics = lock(&self.unknown_topics);
            topics.remove(topic);
            self.unknown_topics_any
                .store(!topics.is_empty(), Ordering::Release);
        }
    }

    /// Reports topics that Kafka takes for the same (`.` and `_` alike): the second one
    /// cannot be created, and its records end in the dead-letter file.
    pub fn check_collisions<'t>(&self, topics: impl Iterator<Item = &'t str>) {
        let mut guard = lock(&self.topic_names);
        let TopicNames { by_key, reported } = &mut *guard;
        for topic in topics {
            if by_key.len() >= MAX_TRACKED_TOPICS {
                return;
            }
            // Most names hold no `.`: their key is the name itself, no allocation.
            let key: std::borrow::Cow<'_, str> = if topic.contains('.') {
                crate::kafka::topic::collision_key(topic).into()
            } else {
                topic.into()
            };
            match by_key.get(key.as_ref()) {
                Some(known) if known != topic => {
                    if reported.len() < MAX_TRACKED_TOPICS && reported.insert(topic.to_owned()) {
                        self.metrics.topic_collisions.inc();
                        tracing::error!(topic, collides_with = %known, "spool: Kafka cannot hold both topics (it takes '.' and '_' as the same); adjust kafka.topic");
                    }
                }
                Some(_) => {}
                None => {
                    by_key.insert(key.into_owned(), topic.to_owned());
                }
            }
        }
    }

    /// Appends an entry that passed its CRC but does not decode to the dead-letter
    /// file, whole, so nothing is skipped silently.
    pub fn dead_letter_entry(&self, seq: u64, payload: &[u8], error: &str) {
        let records = format::peek_record_count(payload).unwrap_or(0) as u64;
        // Its records leave the gauge here: the stand-in entry that ships has none.
        self.set_unacked(-(records as i64));
        self.metrics.count("dead_lettered", records.max(1));
        self.metrics
            .dead_letter
            .with_label_values(&["undecodable"])
            .inc_by(records.max(1));
        tracing::error!(seq, %error, bytes = payload.len(), records, "spool entry undecodable: dead-lettered whole (its raw payload follows its comment line)");
        let text = format!(
            "# dead-letter at={} entry-seq={seq} bytes={} error={}\n",
            now_ns(),
            payload.len(),
            error.replace('\n', " ")
        );
        self.append_dead_letter(&[text.as_bytes(), payload, b"\n"]);
    }

    /// Appends a record Kafka will never take to the dead-letter file; `reason` labels
    /// the metric (`refused`, `unknown_topic`).
    pub fn dead_letter(
        &self,
        reason: &str,
        tee_id: &str,
        topic: &str,
        key: Option<&[u8]>,
        value: &[u8],
        error: &str,
    ) {
        self.metrics.count("dead_lettered", 1);
        self.metrics.dead_letter.with_label_values(&[reason]).inc();
        tracing::error!(tee_id, topic, %error, bytes = value.len(), "record dead-lettered: Kafka refuses it for good");
        let key = key.map(String::from_utf8_lossy).unwrap_or_default();
        let error = error.replace('\n', " ");
        let comment = format!(
            "# dead-letter at={} tee-id={tee_id} topic={topic} key={key} error={error}\n",
            now_ns()
        );
        self.append_dead_letter(&[comment.as_bytes(), value, b"\n"]);
    }

    fn append_dead_letter(&self, parts: &[&[u8]]) {
        let path = self.dir.join("dead-letter.lp");
        let mut file = lock(&self.dead_letter);
        if file.is_none() {
            match OpenOptions::new().create(true).append(true).open(&path) {
                Ok(opened) => *file = Some(opened),
                Err(error) => {
                    tracing::error!(path = %path.display(), %error, "cannot open the dead-letter file");
                    return;
                }
            }
        }
        let Some(out) = file.as_mut() else { return };
        let text = parts.concat();
        if let Err(error) = out.write_all(&text).and_then(|_| out.sync_data()) {
            tracing::error!(path = %path.display(), %error, "cannot write the dead-letter file");
        }
    }

    pub fn persist_committed(&self, seq: u64) -> io::Result<()> {
        segment::write_atomic(&self.committed_path(), format!("{seq}\n").as_bytes())
    }
}

/// Reads the committed sequence number; a missing or unreadable file means "replay everything".
pub fn read_committed(dir: &Path) -> u64 {
    match fs::read_to_string(dir.join("committed")) {
        Ok(text) => text.trim().parse().unwrap_or_else(|_| {
            tracing::warn!(dir = %dir.display(), "unreadable committed offset: replaying the whole spool");
            0
        }),
        Err(_) => 0,
    }
}

/// What a spool directory holds, read-only (safe while a proxy runs on it).
pub fn stat(dir: &Path) -> Result<Inspection, SpoolError> {
    inspect(dir, false).map(|(inspection, _)| inspection)
}

/// Scans every segment; with `repair`, rewrites damaged ones and deletes empty and fully acknowledged ones.
pub(crate) fn inspect(
    dir: &Path,
    repair: bool,
) -> Result<(Inspection, BTreeMap<u64, SegmentMeta>), SpoolError> {
    let committed = read_committed(dir);
    let mut inspection = Inspection {
        committed,
        last_seq: committed,
        ..Default::default()
    };
    let mut metas = BTreeMap::new();
    let mut prev_last = 0u64;
    for (first, path) in segment::list_segments(dir).map_err(|e| SpoolError::io(dir, e))? {
        let data = fs::read(&path).map_err(|e| SpoolError::io(&path, e))?;
        let scan = segment::scan(&data, prev_last);
        inspection.last_seq = inspection.last_seq.max(first.saturating_sub(1));
        let skipped = scan.damaged_bytes() as u64;
        if !scan.is_clean() {
            inspection.skipped_bytes += skipped;
            inspection.skipped_regions +=
                scan.damaged.len() as u64 + u64::from(scan.bad_magic && data.len() < 8);
            tracing::warn!(
                path = %path.display(),
                damaged_bytes = skipped,
                damaged_regions = scan.damaged.len(),
                intact_entries = scan.frames.len(),
                "spool segment damaged (torn or corrupt frames); keeping every intact entry"
            );
        }
        let mut meta = SegmentMeta {
            path: path.clone(),
            bytes: 8 + scan
                .frames
                .iter()
                .map(|f| (format::FRAME_HEADER + f.header.len as usize) as u64)
                .sum::<u64>(),
            entries: scan.frames.len() as u64,
            records: 0,
            last_seq: scan.last_seq().unwrap_or(first.saturating_sub(1)),
        };
        if !repair {
            meta.bytes = data.len() as u64;
        }
        let mut summary = SegmentSummary {
            path: path.clone(),
            first_seq: scan.frames.first().map_or(first, |f| f.header.seq),
            last_seq: meta.last_seq,
            bytes: meta.bytes,
            entries: meta.entries,
            records: 0,
            skipped_bytes: skipped,
        };
        for frame in &scan.frames {
            let records = format::peek_record_count(scan.payload(&data, frame)).unwrap_or(0) as u64;
            meta.records += records;
            if frame.header.seq > committed {
                inspection.unacked_entries += 1;
                inspection.unacked_records += records;
                inspection
                    .oldest_unacked
                    .get_or_insert((frame.header.seq, frame.header.appended_at_ns));
            }
        }
        summary.records = meta.records;
        prev_last = prev_last.max(meta.last_seq);
        inspection.last_seq = inspection.last_seq.max(meta.last_seq);
        if repair {
            let fully_acked = meta.last_seq <= committed;
            if scan.frames.is_empty() || fully_acked {
                fs::remove_file(&path).map_err(|e| SpoolError::io(&path, e))?;
                continue;
            }
            if !scan.is_clean() {
                segment::rewrite(&path, &data, &scan).map_err(|e| SpoolError::io(&path, e))?;
            }
        }
        inspection.segments += 1;
        inspection.bytes += meta.bytes;
        inspection.entries += meta.entries;
        inspection.records += meta.records;
        inspection.per_segment.push(summary);
        metas.insert(first, meta);
    }
    Ok((inspection, metas))
}

/// A write queued for the appender thread.
struct AppendRequest {
    entry: EncodedEntry,
    reply: tokio::sync::oneshot::Sender<Result<u64, SpoolError>>,
}

/// Room set aside for one write in `when_full = "reject"`, released when dropped.
pub struct SpoolRoom {
    shared: Arc<Shared>,
    bytes: u64,
}

impl SpoolRoom {
    fn new(shared: &Arc<Shared>, bytes: u64) -> SpoolRoom {
        shared.rooms.fetch_add(1, Ordering::AcqRel);
        SpoolRoom {
            shared: shared.clone(),
            bytes,
        }
    }

    /// Sets the reservation to what the encoded entry really takes. Never refused:
    /// InfluxDB has stored the write by now.
    pub fn true_up(&mut self, actual: u64) {
        if self.shared.config.when_full == WhenFull::DropOldest {
            return;
        }
        if actual > self.bytes {
            self.shared
                .reserved
                .fetch_add(actual - self.bytes, Ordering::AcqRel);
        } else {
            self.shared
                .reserved
                .fetch_sub(self.bytes - actual, Ordering::AcqRel);
        }
        self.bytes = actual;
    }
}

impl Drop for SpoolRoom {
    fn drop(&mut self) {
        self.shared.reserved.fetch_sub(self.bytes, Ordering::AcqRel);
        self.shared.rooms.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The spool of one proxy process.
pub struct Spool {
    shared: Arc<Shared>,
    sender: Mutex<Option<mpsc::Sender<AppendRequest>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    shipper: Mutex<Option<shipper::ShipperHandle>>,
    /// What opening found; also logged and in the metrics.
    pub recovery: Inspection,
    _lock: lock::DirLock,
}

impl Spool {
    /// Opens (creating, recovering) the spool in `config.dir` and starts its appender.
    /// Needs no Kafka: shipping starts with [`Spool::start_shipper`].
    pub fn open(
        config: &SpoolConfig,
        registry: &prometheus::Registry,
        proxy_metrics: Option<Metrics>,
    ) -> Result<Spool, SpoolError> {
        let dir = config.dir.clone();
        fs::create_dir_all(&dir).map_err(|e| SpoolError::io(&dir, e))?;
        let dir_lock = lock::DirLock::acquire(&dir)?;
        let instance = instance_id(&dir)?;
        let (inspection, segments) = inspect(&dir, true)?;
        let metrics = SpoolMetrics::new(registry);
        metrics
            .recovery_skipped_bytes
            .set(inspection.skipped_bytes as i64);
        metrics
            .recovery_skipped_regions
            .set(inspection.skipped_regions as i64);
        if inspection.skipped_regions > 0 {
            tracing::warn!(
                skipped_bytes = inspection.skipped_bytes,
                skipped_regions = inspection.skipped_regions,
                "spool recovery skipped damaged data"
            );
        }
        tracing::info!(
            dir = %dir.display(),
            segments = inspection.segments,
            unacked_entries = inspection.unacked_entries,
            unacked_records = inspection.unacked_records,
            committed = inspection.committed,
            "spool opened"
        );
        let mut config = config.clone();
        config.segment_bytes = config.effective_segment_bytes();
        let shared = Arc::new(Shared {
            dir: dir.clone(),
            instance,
            state: Mutex::new(State {
                segments,
                active: None,
                last_seq: inspection.last_seq,
            }),
            cursor: Mutex::new(ShipCursor {
                sent_seq: inspection.committed,
                skip_through: 0,
            }),
            wake: Wake::default(),
            committed: AtomicU64::new(inspection.committed),
            bytes: AtomicU64::new(inspection.bytes),
            reserved: AtomicU64::new(0),
            rooms: AtomicU64::new(0),
            unacked_records: AtomicI64::new(0),
            written_seq: AtomicU64::new(inspection.last_seq),
            metrics,
            proxy_metrics,
            dead_letter: Mutex::new(None),
            unknown_topics: Mutex::new(HashMap::new()),
            unknown_topics_any: AtomicBool::new(false),
            topic_names: Mutex::new(TopicNames::default()),
            config,
        });
        shared.set_unacked(inspection.unacked_records as i64);
        shared.publish_sizes(&lock(&shared.state));
        if let Some((_, appended)) = inspection.oldest_unacked {
            shared
                .metrics
                .oldest_unacked_age_seconds
                .set(((now_ns() - appended) as f64 / 1e9).max(0.0));
        }

        let (sender, receiver) = mpsc::channel();
        let mut threads = Vec::new();
        let appender = Appender::new(shared.clone());
        threads.push(
            std::thread::Builder::new()
                .name("spool-append".into())
                .spawn(move || appender.run(receiver))
                .map_err(|e| SpoolError::io(&dir, e))?,
        );
        Ok(Spool {
            shared,
            sender: Mutex::new(Some(sender)),
            threads: Mutex::new(threads),
            shipper: Mutex::new(None),
            recovery: inspection,
            _lock: dir_lock,
        })
    }

    pub fn metrics(&self) -> &SpoolMetrics {
        &self.shared.metrics
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    pub fn instance_id(&self) -> &str {
        &self.shared.instance
    }

    /// Every entry up to this sequence number is acknowledged, dead-lettered or dropped.
    pub fn committed(&self) -> u64 {
        self.shared.committed.load(Ordering::Acquire)
    }

    pub fn last_seq(&self) -> u64 {
        lock(&self.shared.state).last_seq
    }

    /// Sets room aside for a write whose entry will take about `entry_bytes` (see
    /// `Encoder::estimate_entry_bytes`) before it is forwarded, so a write InfluxDB
    /// accepted is never refused by the spool afterwards.
    pub fn reserve(&self, entry_bytes: u64) -> Result<SpoolRoom, SpoolError> {
        let shared = &self.shared;
        if shared.config.when_full == WhenFull::DropOldest {
            return Ok(SpoolRoom::new(shared, 0));
        }
        let max = shared.config.max_bytes;
        // A write larger than the whole spool still fits an empty one.
        let need = entry_bytes.min(max);
        let mut reserved = shared.reserved.load(Ordering::Acquire);
        loop {
            let on_disk = shared.bytes.load(Ordering::Acquire);
            if on_disk + reserved + need > max {
                shared.metrics.rejected_writes.inc();
                return Err(SpoolError::Full {
                    on_disk,
                    reserved,
                    need,
                    max,
                });
            }
            match shared.reserved.compare_exchange(
                reserved,
                reserved + need,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(SpoolRoom::new(shared, need)),
                Err(now) => reserved = now,
            }
        }
    }

    /// Bytes reserved by writes in flight.
    pub fn reserved_bytes(&self) -> u64 {
        self.shared.reserved.load(Ordering::Acquire)
    }

    /// Appends one write's records; resolves once the entry is written (and, with
    /// `fsync = "always"`, synced). Returns its sequence number.
    pub async fn append(&self, entry: EncodedEntry) -> Result<u64, SpoolError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        {
            let sender = lock(&self.sender);
            let sender = sender.as_ref().ok_or(SpoolError::Closed)?;
            sender
                .send(AppendRequest { entry, reply })
                .map_err(|_| SpoolError::Closed)?;
        }
        answer.await.map_err(|_| SpoolError::Closed)?
    }

    /// Encodes and appends a write's records with its per-write headers. `room`, the
    /// write's reservation, is trued up to the entry's size and released once the
    /// entry is on disk (and counted there).
    pub async fn append_batch(
        &self,
        batch: &RecordBatch,
        headers: &[(&str, &str)],
        mut room: Option<SpoolRoom>,
    ) -> Result<u64, SpoolError> {
        let entry =
            EncodedEntry::new(batch, headers).map_err(|e| SpoolError::Other(e.to_string()))?;
        if let Some(room) = room.as_mut() {
            room.true_up(entry.frame_len() as u64);
        }
        let seq = self.append(entry).await;
        drop(room);
        seq
    }

    /// Starts shipping to Kafka with these librdkafka properties (the shipper forces
    /// idempotence and infinite retries on top).
    pub fn start_shipper(&self, properties: BTreeMap<String, String>) -> Result<(), SpoolError> {
        let handle = shipper::start(self.shared.clone(), properties)?;
        *lock(&self.shipper) = Some(handle);
        Ok(())
    }

    /// Blocks until everything appended so far is acknowledged, or `timeout` passes.
    /// Returns whether the spool is fully shipped.
    pub async fn wait_shipped(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.committed() >= self.last_seq() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops taking writes, syncs, gives the shipper up to `drain` to ship what is
    /// left, and persists the committed offset. What is not shipped stays on disk
    /// and is replayed on the next start.
    pub async fn close(&self, drain: Duration) {
        let deadline = Instant::now() + drain;
        // A write that reserved room may already be stored by InfluxDB: let it append
        // before the appender stops, within the drain time.
        while self.shared.rooms.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let in_flight = self.shared.rooms.load(Ordering::Acquire);
        if in_flight > 0 {
            tracing::warn!(
                writes = in_flight,
                "spool closing with writes still on their way; they get 503 and are not teed"
            );
        }
        lock(&self.sender).take();
        let threads: Vec<_> = lock(&self.threads).drain(..).collect();
        let shipper = lock(&self.shipper).take();
        let shared = self.shared.clone();
        let joined = tokio::task::spawn_blocking(move || {
            // The appender ends (with a last fsync) once the last sender is gone.
            for thread in threads {
                let _ = thread.join();
            }
            if let Some(shipper) = shipper {
                shipper.stop(deadline);
            }
            let committed = shared.committed.load(Ordering::Acquire);
            if let Err(error) = shared.persist_committed(committed) {
                tracing::error!(%error, "cannot persist the spool's committed offset");
            }
            (committed, lock(&shared.state).last_seq)
        })
        .await;
        let unshipped_records = self.shared.unacked_records.load(Ordering::Acquire).max(0);
        match joined {
            Ok((committed, last)) if committed >= last => {
                tracing::info!(committed, "spool closed: every entry shipped to Kafka")
            }
            Ok((committed, last)) => tracing::warn!(
                committed,
                unshipped_entries = last - committed,
                unshipped_records,
                drain_ms = drain.as_millis() as u64,
                "spool closed with entries not yet in Kafka; they stay in the spool and ship on the next start"
            ),
            Err(error) => tracing::error!(%error, "spool close failed"),
        }
    }

    /// Stops the threads without a drain if [`Spool::close`] was not called, so the
    /// directory lock (a field, released after this) is never released while they run.
    fn stop_threads(&mut self) {
        lock(&self.sender).take();
        for thread in lock(&self.threads).drain(..) {
            let _ = thread.join();
        }
        if let Some(shipper) = lock(&self.shipper).take() {
            shipper.stop(Instant::now());
        }
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        self.stop_threads();
    }
}

/// The instance id in `dir/instance-id`, created once; it prefixes every `tee-id`.
fn instance_id(dir: &Path) -> Result<String, SpoolError> {
    let path = dir.join("instance-id");
    if let Ok(text) = fs::read_to_string(&path) {
        let id = text.trim();
        if !id.is_empty() {
            return Ok(id.to_owned());
        }
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    segment::write_atomic(&path, format!("{id}\n").as_bytes())
        .map_err(|e| SpoolError::io(&path, e))?;
    Ok(id)
}

/// Upper bound of one group commit, so a burst does not hold every waiter for one huge write.
const GROUP_MAX_BYTES: usize = 4 << 20;

/// The single writer of the log. Writes queued while it was busy go out together:
/// one `write` (and in `always` mode one fsync) for the whole group.
struct Appender {
    shared: Arc<Shared>,
    file: Option<File>,
    active_len: u64,
    buf: Vec<u8>,
    /// Written since the last fsync (`fsync = "interval"` syncs only then).
    unsynced: bool,
}

/// An entry written in the current group, waiting for its answer.
struct Staged {
    seq: u64,
    records: usize,
    reply: tokio::sync::oneshot::Sender<Result<u64, SpoolError>>,
}

impl Appender {
    fn new(shared: Arc<Shared>) -> Self {
        Appender {
            shared,
            file: None,
            active_len: 0,
            buf: Vec::new(),
            unsynced: false,
        }
    }

    fn run(mut self, requests: mpsc::Receiver<AppendRequest>) {
        // `interval` syncs here, between groups, rather than on a thread of its own: an
        // fsync running beside the appender's writes stalls them (the journal commit),
        // which cost more throughput than syncing in turn.
        let period = (self.shared.config.fsync == FsyncMode::Interval)
            .then(|| Duration::from_millis(self.shared.config.fsync_interval_ms.max(1)));
        let mut last_sync = Instant::now();
        loop {
            let next = match period {
                // Wake up in time to sync what the last groups wrote.
                Some(period) if self.unsynced => {
                    match requests.recv_timeout(period.saturating_sub(last_sync.elapsed())) {
                        Ok(request) => Some(request),
                        Err(mpsc::RecvTimeoutError::Timeout) => None,
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                }
                _ => match requests.recv() {
                    Ok(request) => Some(request),
                    Err(_) => break,
                },
            };
            if let Some(first) = next {
                self.commit_queued(first, &requests);
            }
            if let Some(period) = period {
                if last_sync.elapsed() >= period {
                    self.sync_written();
                    last_sync = Instant::now();
                }
            }
        }
        if let Some(file) = &self.file {
            if self.shared.config.fsync != FsyncMode::Never {
                let _ = self.sync(file);
            }
        }
    }

    /// Commits `first` together with whatever else is queued, up to `GROUP_MAX_BYTES`.
    fn commit_queued(&mut self, first: AppendRequest, requests: &mpsc::Receiver<AppendRequest>) {
        {
            let mut bytes = first.entry.frame_len();
            let mut group = vec![first];
            while bytes < GROUP_MAX_BYTES {
                match requests.try_recv() {
                    Ok(next) => {
                        bytes += next.entry.frame_len();
                        group.push(next);
                    }
                    Err(_) => break,
                }
            }
            self.commit(group);
        }
    }

    /// `fsync = "interval"`: syncs the active segment if anything was written since the
    /// last sync.
    fn sync_written(&mut self) {
        if !self.unsynced {
            return;
        }
        let Some(file) = &self.file else { return };
        match self.sync(file) {
            Ok(()) => self.unsynced = false,
            Err(error) => tracing::error!(%error, "spool fsync failed"),
        }
    }

    fn sync(&self, file: &File) -> io::Result<()> {
        let started = Instant::now();
        let result = file.sync_data();
        self.shared
            .metrics
            .fsync_seconds
            .observe(started.elapsed().as_secs_f64());
        result
    }

    fn commit(&mut self, group: Vec<AppendRequest>) {
        let shared = self.shared.clone();
        let now = now_ns();
        let base = lock(&shared.state).last_seq;
        let mut staged: Vec<Staged> = Vec::with_capacity(group.len());
        let mut chunk_start = 0usize;
        let mut result: io::Result<()> = Ok(());
        self.buf.clear();
        for mut request in group {
            if result.is_err() {
                let _ = request
                    .reply
                    .send(Err(SpoolError::Other("spool write failed".into())));
                continue;
            }
            let len = request.entry.frame_len() as u64;
            if shared.config.when_full == WhenFull::DropOldest {
                self.make_room(len + self.buf.len() as u64);
            }
            let pending = self.buf.len() as u64;
            let roll = match &self.file {
                None => true,
                Some(_) => {
                    self.active_len + pending + len > shared.config.segment_bytes
                        && self.active_len + pending > 8
                }
            };
            let seq = base + staged.len() as u64 + 1;
            if roll {
                result = self
                    .flush_chunk(&staged[chunk_start..])
                    .and_then(|_| self.roll(seq));
                chunk_start = staged.len();
                if result.is_err() {
                    let _ = request
                        .reply
                        .send(Err(SpoolError::Other("spool write failed".into())));
                    continue;
                }
            }
            request.entry.seal(seq, now);
            if self.buf.is_empty() {
                // One entry alone needs no copy; the common case for light load.
                std::mem::swap(&mut self.buf, &mut request.entry.bytes);
            } else {
                self.buf.extend_from_slice(&request.entry.bytes);
            }
            staged.push(Staged {
                seq,
                records: request.entry.records,
                reply: request.reply,
            });
        }
        if result.is_ok() {
            result = self.flush_chunk(&staged[chunk_start..]);
        }
        if result.is_ok() && shared.config.fsync == FsyncMode::Always {
            if let Some(file) = &self.file {
                result = self.sync(file);
            }
        }
        if result.is_ok() {
            if let Some(last) = staged.last() {
                shared.written_seq.store(last.seq, Ordering::Release);
                self.unsynced = shared.config.fsync != FsyncMode::Always;
            }
        }
        shared.wake.notify();
        match result {
            Ok(()) => {
                for entry in staged {
                    let _ = entry.reply.send(Ok(entry.seq));
                }
            }
            Err(error) => {
                tracing::error!(%error, dir = %shared.dir.display(), "spool append failed; the writes get 503");
                // Whatever reached the file is published and will ship; the clients retry.
                // The next append starts a fresh segment rather than write after a torn frame.
                self.file = None;
                for entry in staged {
                    let _ = entry.reply.send(Err(SpoolError::Other(format!(
                        "spool write failed: {error}"
                    ))));
                }
            }
        }
        if self.buf.capacity() > GROUP_MAX_BYTES * 2 {
            self.buf = Vec::new();
        }
    }

    /// Writes the buffered frames to the active segment and publishes them to readers.
    fn flush_chunk(&mut self, chunk: &[Staged]) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let Some(file) = &self.file else {
            return Err(io::Error::other("no active segment"));
        };
        if let Err(error) = (&*file).write_all(&self.buf) {
            // Cut a partial frame off, so readers never meet it.
            let _ = file.set_len(self.active_len);
            self.buf.clear();
            return Err(error);
        }
        let written = self.buf.len() as u64;
        self.buf.clear();
        self.active_len += written;
        let records: usize = chunk.iter().map(|s| s.records).sum();
        let shared = &self.shared;
        shared.bytes.fetch_add(written, Ordering::AcqRel);
        shared.metrics.count("appended", records as u64);
        shared.set_unacked(records as i64);
        let mut state = lock(&shared.state);
        if let Some(last) = chunk.last() {
            state.last_seq = last.seq;
        }
        if let Some(active) = state.active {
            if let Some(meta) = state.segments.get_mut(&active) {
                meta.bytes = self.active_len;
                meta.entries += chunk.len() as u64;
                meta.records += records as u64;
                if let Some(last) = chunk.last() {
                    meta.last_seq = last.seq;
                }
            }
        }
        shared.publish_sizes(&state);
        Ok(())
    }

    /// Closes the active segment (synced unless `fsync = "never"`) and starts one at `first_seq`.
    fn roll(&mut self, first_seq: u64) -> io::Result<()> {
        let shared = self.shared.clone();
        if let Some(old) = self.file.take() {
            if shared.config.fsync != FsyncMode::Never {
                self.sync(&old)?;
            }
        }
        let path = segment::segment_path(&shared.dir, first_seq);
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)?;
        file.write_all(format::SEGMENT_MAGIC)?;
        if shared.config.fsync != FsyncMode::Never {
            file.sync_all()?;
            segment::sync_dir(&shared.dir)?;
        }
        self.file = Some(file);
        self.active_len = format::SEGMENT_MAGIC.len() as u64;
        shared.bytes.fetch_add(self.active_len, Ordering::AcqRel);
        let mut state = lock(&shared.state);
        state.segments.insert(
            first_seq,
            SegmentMeta {
                path,
                bytes: self.active_len,
                entries: 0,
                records: 0,
                last_seq: first_seq - 1,
            },
        );
        state.active = Some(first_seq);
        shared.publish_sizes(&state);
        Ok(())
    }

    /// `when_full = "drop_oldest"`: deletes the oldest closed segments until `len` more bytes fit.
    fn make_room(&mut self, len: u64) {
        let shared = self.shared.clone();
        while shared.bytes.load(Ordering::Acquire) + len > shared.config.max_bytes {
            let victim = {
                let state = lock(&shared.state);
                state
                    .segments
                    .iter()
                    .find(|(first, _)| Some(**first) != state.active)
                    .map(|(f, m)| (*f, m.clone()))
            };
            let Some((first, meta)) = victim else { break };
            // Everything not yet acknowledged counts as dropped, also entries already in
            // librdkafka's memory: a restart would lose them. Some of those may still
            // arrive; the metric errs on the side of loss, never hides it.
            let floor = {
                let mut cursor = lock(&shared.cursor);
                cursor.skip_through = cursor.skip_through.max(meta.last_seq);
                shared.committed.load(Ordering::Acquire)
            };
            let (entries, records) = if meta.last_seq <= floor {
                (0, 0)
            } else {
                count_after(&meta.path, floor)
            };
            shared.delete_segment(&mut lock(&shared.state), first);
            if records > 0 {
                shared.metrics.count("dropped", records);
                shared.set_unacked(-(records as i64));
                tracing::warn!(
                    segment = %meta.path.display(),
                    entries,
                    records,
                    "spool full: dropped the oldest records, never shipped (when_full = \"drop_oldest\")"
                );
            }
            shared.wake.notify();
        }
    }
}

/// Entries and records in a segment file with a sequence number above `floor`.
fn count_after(path: &Path, floor: u64) -> (u64, u64) {
    let Ok(data) = fs::read(path) else {
        return (0, 0);
    };
    let scan = segment::scan(&data, 0);
    let mut counts = (0, 0);
    for frame in scan.frames.iter().filter(|f| f.header.seq > floor) {
        counts.0 += 1;
        counts.1 += format::peek_record_count(scan.payload(&data, frame)).unwrap_or(0) as u64;
    }
    counts
}

#[cfg(test)]
mod tests;
