//! Unit tests of the spool without Kafka: log format, recovery, group commit, room
//! accounting and segment deletion.

use super::*;

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let nanos = now_ns();
        let dir = std::env::temp_dir().join(format!(
            "influx-tee-spool-{name}-{}-{nanos}",
            std::process::id()
        ));
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn config(dir: &Path, fsync: FsyncMode) -> SpoolConfig {
    SpoolConfig {
        dir: dir.to_owned(),
        fsync,
        ..SpoolConfig::default()
    }
}

fn entry(i: usize) -> EncodedEntry {
    let value = format!("cpu,host=h{i} v={i}i {i}");
    let key = format!("cpu,host=h{i}");
    EncodedEntry::from_records(
        || {
            [
                ("topic-a", Some(key.as_bytes()), value.as_bytes()),
                ("topic-b", None, value.as_bytes()),
            ]
            .into_iter()
        },
        &[("db", "d"), ("request-id", "r")],
    )
    .unwrap()
}

fn read_all(spool: &Spool, from: u64) -> Vec<Entry> {
    let mut reader = shipper::Reader::new(from);
    let mut entries = Vec::new();
    while let Some(entry) = reader.next(&spool.shared).unwrap() {
        entries.push(entry);
    }
    entries
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn entry_roundtrips_records_and_headers() {
    let mut encoded = entry(7);
    encoded.seal(42, 1234);
    let header = format::FrameHeader::parse(encoded.bytes[..FRAME].try_into().unwrap());
    let payload = encoded.bytes[FRAME..].to_vec();
    assert!(header.checks(&payload));
    assert_eq!(format::peek_record_count(&payload).unwrap(), 2);
    let decoded = Entry::decode(&header, payload).unwrap();
    assert_eq!((decoded.seq, decoded.appended_at_ns), (42, 1234));
    assert_eq!(decoded.header("db"), Some("d"));
    let records: Vec<_> = decoded
        .records()
        .map(|r| {
            (
                r.topic.to_owned(),
                r.key.map(<[u8]>::to_vec),
                r.value.to_vec(),
            )
        })
        .collect();
    assert_eq!(
        records[0],
        (
            "topic-a".into(),
            Some(b"cpu,host=h7".to_vec()),
            b"cpu,host=h7 v=7i 7".to_vec()
        )
    );
    assert_eq!(
        records[1],
        ("topic-b".into(), None, b"cpu,host=h7 v=7i 7".to_vec())
    );
}

const FRAME: usize = format::FRAME_HEADER;

#[test]
fn appends_survive_reopen_in_order() {
    let dir = TempDir::new("reopen");
    let rt = runtime();
    for fsync in [FsyncMode::Always, FsyncMode::Interval, FsyncMode::Never] {
        let _ = fs::remove_dir_all(&dir.0);
        let spool =
            Spool::open(&config(&dir.0, fsync), &prometheus::Registry::new(), None).unwrap();
        let seqs: Vec<u64> = rt.block_on(async {
            let mut seqs = Vec::new();
            for i in 0..20 {
                seqs.push(spool.append(entry(i)).await.unwrap());
            }
            spool.close(Duration::ZERO).await;
            seqs
        });
        assert_eq!(seqs, (1..=20).collect::<Vec<_>>());
        drop(spool);
        let spool =
            Spool::open(&config(&dir.0, fsync), &prometheus::Registry::new(), None).unwrap();
        assert_eq!(spool.recovery.unacked_entries, 20, "{fsync:?}");
        assert_eq!(spool.recovery.unacked_records, 40);
        assert_eq!(spool.recovery.skipped_regions, 0);
        let entries = read_all(&spool, 1);
        assert_eq!(
            entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
            (1..=20).collect::<Vec<_>>()
        );
        assert_eq!(
            entries[3].records().next().unwrap().value,
            b"cpu,host=h3 v=3i 3"
        );
        // New entries continue the sequence.
        let next = rt.block_on(spool.append(entry(99))).unwrap();
        assert_eq!(next, 21);
    }
}

#[test]
fn second_process_on_the_same_dir_is_refused() {
    let dir = TempDir::new("lock");
    let _first = Spool::open(
        &config(&dir.0, FsyncMode::Never),
        &prometheus::Registry::new(),
        None,
    )
    .unwrap();
    let second = Spool::open(
        &config(&dir.0, FsyncMode::Never),
        &prometheus::Registry::new(),
        None,
    );
    assert!(matches!(second, Err(SpoolError::Locked(_))));
}

#[test]
fn torn_and_corrupt_tail_keeps_every_intact_entry() {
    let dir = TempDir::new("torn");
    let rt = runtime();
    let spool = Spool::open(
        &config(&dir.0, FsyncMode::Always),
        &prometheus::Registry::new(),
        None,
    )
    .unwrap();
    rt.block_on(async {
        for i in 0..10 {
            spool.append(entry(i)).await.unwrap();
        }
        spool.close(Duration::ZERO).await;
    });
    drop(spool);
    let (_, path) = segment::list_segments(&dir.0).unwrap().pop().unwrap();
    let mut data = fs::read(&path).unwrap();
    // A crash mid-write: the last frame is torn, and a flipped byte in the 9th frame.
    data.truncate(data.len() - 7);
    let ninth = segment::scan(&data, 0).frames[8].offset;
    data[ninth + FRAME + 2] ^= 0x55;
    fs::write(&path, &data).unwrap();

    let registry = prometheus::Registry::new();
    let spool = Spool::open(&config(&dir.0, FsyncMode::Always), &registry, None).unwrap();
    assert_eq!(spool.recovery.unacked_entries, 8);
    assert!(spool.recovery.skipped_regions >= 1);
    assert!(spool.recovery.skipped_bytes > 0);
    assert_eq!(
        spool.metrics().recovery_skipped_bytes.get() as u64,
        spool.recovery.skipped_bytes
    );
    let seqs: Vec<u64> = read_all(&spool, 1).iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=8).collect::<Vec<_>>());
    // The damaged segment was rewritten clean; the next start finds nothing to skip.
    assert_eq!(rt.block_on(spool.append(entry(100))).unwrap(), 9);
    rt.block_on(spool.close(Duration::ZERO));
    drop(spool);
    let stat = stat(&dir.0).unwrap();
    assert_eq!(stat.skipped_regions, 0);
    assert_eq!(stat.unacked_entries, 9);
}

#[test]
fn concurrent_writes_share_one_group_commit() {
    let dir = TempDir::new("group");
    let spool = Spool::open(
        &config(&dir.0, FsyncMode::Always),
        &prometheus::Registry::new(),
        None,
    )
    .unwrap();
    // Queue 30 writes before a second appender runs once, so they form one group.
    let (sender, receiver) = mpsc::channel();
    let mut answers = Vec::new();
    for i in 0..30 {
        let (reply, answer) = tokio::sync::oneshot::channel();
        sender
            .send(AppendRequest {
                entry: entry(i),
                reply,
            })
            .unwrap();
        answers.push(answer);
    }
    drop(sender);
    let fsyncs_before = spool.metrics().fsync_seconds.get_sample_count();
    let appender = Appender::new(spool.shared.clone());
    appender.run(receiver);
    let seqs: Vec<u64> = answers
        .into_iter()
        .map(|a| a.blocking_recv().unwrap().unwrap())
        .collect();
    assert_eq!(seqs, (1..=30).collect::<Vec<_>>());
    // One fsync for the new segment's data, one for the final sync at shutdown.
    let fsyncs = spool.metrics().fsync_seconds.get_sample_count() - fsyncs_before;
    assert!(fsyncs <= 2, "{fsyncs} fsyncs for one group");
    assert_eq!(read_all(&spool, 1).len(), 30);
}

#[test]
fn reject_mode_refuses_when_full_and_frees_room_after_deletion() {
    let dir = TempDir::new("reject");
    let rt = runtime();
    let mut config = config(&dir.0, FsyncMode::Never);
    config.max_bytes = 64 * 1024;
    let spool = Spool::open(&config, &prometheus::Registry::new(), None).unwrap();
    let mut accepted = 0;
    loop {
        match spool.reserve(200) {
            Ok(_room) => {
                rt.block_on(spool.append(entry(accepted))).unwrap();
                accepted += 1;
            }
            Err(SpoolError::Full { .. }) => break,
            Err(other) => panic!("{other}"),
        }
        assert!(accepted < 10_000, "never full");
    }
    assert!(spool.shared.bytes.load(Ordering::Acquire) <= config.max_bytes);
    assert_eq!(spool.metrics().rejected_writes.get(), 1);
    let segments = lock(&spool.shared.state).segments.len();
    assert!(segments > 2, "{segments} segments");
    // Kafka acknowledged everything: closed segments go, room comes back.
    let last = spool.last_seq();
    spool.shared.committed.store(last, Ordering::Release);
    shipper::delete_acked(&spool.shared, last);
    assert_eq!(lock(&spool.shared.state).segments.len(), 1);
    assert!(spool.reserve(200).is_ok());
}

#[test]
fn drop_oldest_deletes_old_segments_and_counts_what_was_never_shipped() {
    let dir = TempDir::new("drop");
    let rt = runtime();
    let mut config = config(&dir.0, FsyncMode::Never);
    config.max_bytes = 64 * 1024;
    config.when_full = WhenFull::DropOldest;
    let spool = Spool::open(&config, &prometheus::Registry::new(), None).unwrap();
    let writes = 2000;
    rt.block_on(async {
        for i in 0..writes {
            spool.reserve(200).unwrap();
            spool.append(entry(i)).await.unwrap();
        }
    });
    let dropped = spool
        .metrics()
        .records_total
        .with_label_values(&["dropped"])
        .get();
    assert!(dropped > 0);
    assert!(spool.shared.bytes.load(Ordering::Acquire) <= config.max_bytes);
    // What is left plus what was dropped is everything that was written.
    let left: u64 = read_all(&spool, 1)
        .iter()
        .map(|e| e.record_count() as u64)
        .sum();
    assert_eq!(left + dropped, 2 * writes as u64);
    assert_eq!(spool.metrics().records.get() as u64, left);
    // The survivors are the newest.
    assert_eq!(read_all(&spool, 1).last().unwrap().seq, writes as u64);
}

/// A version-1 entry (u16 counts), as older proxies wrote it.
fn v1_payload() -> Vec<u8> {
    let mut out = Vec::new();
    let u16 = |out: &mut Vec<u8>, v: usize| out.extend_from_slice(&(v as u16).to_le_bytes());
    let u32 = |out: &mut Vec<u8>, v: usize| out.extend_from_slice(&(v as u32).to_le_bytes());
    u16(&mut out, 1);
    u16(&mut out, 2);
    out.extend_from_slice(b"db");
    u32(&mut out, 1);
    out.extend_from_slice(b"d");
    u16(&mut out, 1);
    u16(&mut out, 5);
    out.extend_from_slice(b"topic");
    u32(&mut out, 1);
    u16(&mut out, 0);
    u32(&mut out, 3);
    out.extend_from_slice(b"cpu");
    u32(&mut out, 9);
    out.extend_from_slice(b"cpu v=1 1");
    out
}

/// An entry whose frame checks but whose payload is `payload`.
fn raw_entry(payload: &[u8]) -> EncodedEntry {
    let mut bytes = vec![0u8; FRAME];
    bytes.extend_from_slice(payload);
    let mut payload_crc = crc32fast::Hasher::new();
    payload_crc.update(payload);
    EncodedEntry {
        bytes,
        payload_crc,
        records: 1,
    }
}

#[test]
fn old_format_entries_still_decode() {
    let payload = v1_payload();
    let header = format::FrameHeader {
        len: payload.len() as u32,
        crc: 0,
        seq: 3,
        appended_at_ns: 4,
    };
    assert_eq!(format::peek_record_count(&payload).unwrap(), 1);
    let entry = Entry::decode(&header, payload).unwrap();
    assert_eq!(entry.header("db"), Some("d"));
    let record = entry.records().next().unwrap();
    assert_eq!(
        (record.topic, record.key, record.value),
        ("topic", Some(&b"cpu"[..]), &b"cpu v=1 1"[..])
    );
}

#[test]
fn more_topics_than_a_u16_holds_roundtrip() {
    let topics: Vec<String> = (0..70_000).map(|i| format!("t{i}")).collect();
    let mut encoded = EncodedEntry::from_records(
        || topics.iter().map(|t| (t.as_str(), None, &b"v"[..])),
        &[("db", "d")],
    )
    .unwrap();
    encoded.seal(1, 1);
    let header = format::FrameHeader::parse(encoded.bytes[..FRAME].try_into().unwrap());
    let entry = Entry::decode(&header, encoded.bytes[FRAME..].to_vec()).unwrap();
    assert_eq!(entry.record_count(), 70_000);
    let last = entry.records().last().unwrap();
    assert_eq!(last.topic, "t69999");
}

/// An entry that passed its CRC but does not decode is dead-lettered whole and
/// counted, and the shipper's reader hands back an empty stand-in, so the committed
/// offset can move past it; nothing is skipped silently.
#[test]
fn undecodable_entry_is_dead_lettered_and_counted() {
    let dir = TempDir::new("undecodable");
    let rt = runtime();
    let spool = Spool::open(
        &config(&dir.0, FsyncMode::Never),
        &prometheus::Registry::new(),
        None,
    )
    .unwrap();
    rt.block_on(async {
        spool.append(entry(1)).await.unwrap();
        spool
            .append(raw_entry(b"\xff\xff\x02\x00garbage"))
            .await
            .unwrap();
        spool.append(entry(3)).await.unwrap();
    });
    let entries = read_all(&spool, 1);
    assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(
        entries.iter().map(|e| e.record_count()).collect::<Vec<_>>(),
        [2, 0, 2]
    );
    let metrics = spool.metrics();
    assert_eq!(
        metrics
            .dead_letter
            .with_label_values(&["undecodable"])
            .get(),
        1
    );
    let letters = fs::read(dir.0.join("dead-letter.lp")).unwrap();
    let text = String::from_utf8_lossy(&letters);
    assert!(
        text.starts_with("# dead-letter at=") && text.contains("entry-seq=2"),
        "{text}"
    );
    assert!(text.contains("garbage"), "the raw payload is kept: {text}");
}

/// The 503 says whether the room is taken by writes in flight or by bytes Kafka has
/// not taken yet; a true-up moves the reservation to the entry's real size.
#[test]
fn full_spool_names_the_true_reason() {
    let dir = TempDir::new("reason");
    let rt = runtime();
    let mut config = config(&dir.0, FsyncMode::Never);
    config.max_bytes = 64 * 1024;
    let spool = Spool::open(&config, &prometheus::Registry::new(), None).unwrap();
    let mut held = spool.reserve(40_000).unwrap();
    let refused = spool.reserve(40_000).err().unwrap().to_string();
    assert!(
        refused.contains("reserved by writes in flight") && refused.contains("40000 bytes"),
        "{refused}"
    );
    held.true_up(1_000);
    assert_eq!(spool.reserved_bytes(), 1_000);
    drop(held);
    assert_eq!(spool.reserved_bytes(), 0);
    rt.block_on(async {
        while spool.shared.bytes.load(Ordering::Acquire) < 40_000 {
            spool.append(entry(1)).await.unwrap();
        }
    });
    let refused = spool.reserve(40_000).err().unwrap().to_string();
    assert!(
        refused.contains("the spool is full") && refused.contains("Kafka is behind"),
        "{refused}"
    );
    // A write larger than the whole spool still fits an empty one.
    let dir2 = TempDir::new("reason-empty");
    let mut config = config.clone();
    config.dir = dir2.0.clone();
    let empty = Spool::open(&config, &prometheus::Registry::new(), None).unwrap();
    assert!(empty.reserve(1 << 30).is_ok());
}

#[test]
fn topics_kafka_would_confuse_are_reported_once() {
    let dir = TempDir::new("collide");
    let spool = Spool::open(
        &config(&dir.0, FsyncMode::Never),
        &prometheus::Registry::new(),
        None,
    )
    .unwrap();
    let shared = &spool.shared;
    shared.check_collisions(["a.b", "c"].into_iter());
    shared.check_collisions(["a_b", "a.b", "c"].into_iter());
    shared.check_collisions(["a_b"].into_iter());
    assert_eq!(spool.metrics().topic_collisions.get(), 1);
}

/// `close` lets a write that reserved room (InfluxDB may have stored it) append
/// before the appender stops.
#[test]
fn close_waits_for_writes_holding_room() {
    let dir = TempDir::new("close-waits");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let spool = Arc::new(
        Spool::open(
            &config(&dir.0, FsyncMode::Never),
            &prometheus::Registry::new(),
            None,
        )
        .unwrap(),
    );
    rt.block_on(async {
        let room = spool.reserve(200).unwrap();
        let closing = {
            let spool = spool.clone();
            tokio::spawn(async move { spool.close(Duration::from_secs(10)).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!closing.is_finished(), "close waits for the write");
        let seq = spool.append(entry(1)).await.unwrap();
        drop(room);
        closing.await.unwrap();
        assert_eq!(seq, 1);
        assert!(matches!(
            spool.append(entry(2)).await,
            Err(SpoolError::Closed)
        ));
    });
}
