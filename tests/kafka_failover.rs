//! Kafka itself fails: the three-broker KRaft cluster of the local stack
//! (`deploy/local/stack up kafka-cluster`: replication factor 3,
//! `min.insync.replicas = 2`) loses a broker under a steady write load through
//! the proxy, once with the spool (`ack = "influx"`) and once with `ack = "all"`,
//! both at the same time on their own topics.
//!
//! What must hold, checked against what Kafka and InfluxDB hold at the end:
//! - every point whose write got a 2xx is in Kafka;
//! - Kafka holds exactly the points InfluxDB stored (every writer retries a
//!   refused write until it succeeds, so none is left half-done);
//! - each series stays in one partition, in write order: a record may repeat an
//!   earlier one only as an identifiable duplicate, the same `tee-id` (a spool
//!   replay) or the same point again after the client retried a refused write;
//! - every record carries a `tee-id`.
//!
//! Phases are bounded by counts of acknowledged writes and by the cluster's own
//! state (a new leader elected, the broker back in every ISR), not by sleeps. The
//! tests stop and start shared brokers, so they run one at a time.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use influx_tee::config::AckMode;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, TopicPartitionList};

const WRITERS: usize = 4;
const SERIES_PER_WRITER: usize = 3;
const MEASUREMENT: &str = "failover";
/// Acknowledged writes (per proxy) each phase waits for.
const PHASE_WRITES: usize = 40;
/// Safety net for each phase; the phases end on counts and cluster state.
const PHASE_TIMEOUT: Duration = Duration::from_secs(90);
const NODES: [i32; 3] = [1, 2, 3];

/// Brokers kill, stop and start one at a time, whatever test asks.
static CLUSTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn cluster_brokers() -> String {
    std::env::var("INFLUX_TEE_TEST_KAFKA_CLUSTER")
        .unwrap_or_else(|_| "127.0.0.1:19201,127.0.0.1:19202,127.0.0.1:19203".into())
}

// ---------------------------------------------------------------- the cluster

/// Runs `deploy/local/stack <command> kafka-cluster-<node>`; `expect` must be in what it says.
async fn stack(command: &str, node: i32, expect: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/local/stack");
    let output = tokio::process::Command::new(&script)
        .arg(command)
        .arg(format!("kafka-cluster-{node}"))
        .output()
        .await
        .expect("run deploy/local/stack");
    assert!(
        output.status.success(),
        "deploy/local/stack {command} kafka-cluster-{node} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(
        said.contains(expect),
        "deploy/local/stack {command} kafka-cluster-{node} said {said:?}, not {expect:?}: \
         is the cluster run from another stack dir than INFLUX_TEE_STACK_DIR?"
    );
}

/// Brokers this test took down; dropping it brings them back, even after a panic.
#[derive(Default)]
struct Downed(BTreeSet<i32>);

impl Downed {
    async fn kill(&mut self, node: i32) {
        self.0.insert(node);
        stack("kill", node, "killed").await;
    }
    async fn stop(&mut self, node: i32) {
        self.0.insert(node);
        stack("stop", node, "stopped").await;
    }
    async fn start(&mut self, node: i32) {
        stack("start", node, " up ").await;
        self.0.remove(&node);
    }
}

impl Drop for Downed {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/local/stack");
        for node in &self.0 {
            let _ = std::process::Command::new(&script)
                .arg("start")
                .arg(format!("kafka-cluster-{node}"))
                .status();
        }
    }
}

/// Leader and in-sync replicas of one partition.
#[derive(Debug, Clone)]
struct PartitionState {
    partition: i32,
    leader: i32,
    isr: Vec<i32>,
}

fn client_config() -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", cluster_brokers());
    config
}

/// The partitions of `topic` as the cluster reports them now.
async fn partitions(topic: &str) -> Vec<PartitionState> {
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = client_config().create().expect("kafka client");
        let Ok(metadata) = consumer.fetch_metadata(Some(&topic), Duration::from_secs(5)) else {
            return Vec::new();
        };
        metadata
            .topics()
            .iter()
            .flat_map(|t| t.partitions())
            .map(|p| PartitionState {
                partition: p.id(),
                leader: p.leader(),
                isr: p.isr().to_vec(),
            })
            .collect()
    })
    .await
    .expect("metadata task")
}

/// Fails the test unless InfluxDB 1.x answers (the single Kafka broker is not needed).
async fn require_influxdb() {
    let url = format!("{}/ping", influxdb_url());
    let ok = http()
        .get(&url)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success());
    assert!(
        ok,
        "InfluxDB is not reachable at {url}: run `deploy/local/stack up`"
    );
}

/// Fails the test unless the three brokers answer.
async fn require_cluster() {
    let brokers = tokio::task::spawn_blocking(|| {
        let consumer: BaseConsumer = client_config().create().expect("kafka client");
        consumer
            .fetch_metadata(None, Duration::from_secs(10))
            .map(|m| m.brokers().len())
            .unwrap_or(0)
    })
    .await
    .expect("metadata task");
    assert_eq!(
        brokers,
        NODES.len(),
        "the Kafka cluster at {} is not up with its three brokers: run `deploy/local/stack up kafka-cluster`",
        cluster_brokers()
    );
}

/// A topic of three partitions on all three brokers, two of which must take each record.
async fn create_topic(topic: &str) {
    let admin: AdminClient<DefaultClientContext> = client_config().create().expect("admin client");
    let new_topic =
        NewTopic::new(topic, 3, TopicReplication::Fixed(3)).set("min.insync.replicas", "2");
    let results = admin
        .create_topics(
            [&new_topic],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(20))),
        )
        .await
        .expect("create topic");
    for result in results {
        result.unwrap_or_else(|(name, error)| panic!("create topic {name}: {error}"));
    }
    wait_for(
        "the topic's partitions to have leaders and full ISRs",
        || async move {
            let parts = partitions(topic).await;
            parts.len() == 3 && parts.iter().all(|p| p.leader > 0 && p.isr.len() == 3)
        },
    )
    .await;
}

/// Polls `condition` every 200 ms; fails the test after [`PHASE_TIMEOUT`].
async fn wait_for<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + PHASE_TIMEOUT;
    while !condition().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {PHASE_TIMEOUT:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until no partition of `topics` is led by `node` any more.
async fn wait_leadership_moved(topics: &[String], node: i32) {
    for topic in topics {
        wait_for(
            &format!("{topic}: a leader other than broker {node}"),
            || async move {
                let parts = partitions(topic).await;
                !parts.is_empty() && parts.iter().all(|p| p.leader > 0 && p.leader != node)
            },
        )
        .await;
    }
}

/// Waits until `node` is back in the ISR of every partition of `topics`.
async fn wait_in_isr(topics: &[String], node: i32) {
    for topic in topics {
        wait_for(
            &format!("{topic}: broker {node} in every ISR"),
            || async move {
                let parts = partitions(topic).await;
                !parts.is_empty() && parts.iter().all(|p| p.isr.contains(&node))
            },
        )
        .await;
    }
}

/// High watermark of every partition of `topic`.
fn high_watermarks(consumer: &BaseConsumer, topic: &str) -> Vec<(i32, i64)> {
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("topic metadata");
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    partitions
        .into_iter()
        .map(|p| {
            let (_, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks");
            (p, high)
        })
        .collect()
}

/// Every record of `topic`, read up to each partition's high watermark.
async fn read_topic(topic: &str) -> Vec<KafkaRecord> {
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = client_config()
            .set("group.id", unique("failover-reader"))
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .create()
            .expect("consumer");
        let ends = high_watermarks(&consumer, &topic);
        let mut assignment = TopicPartitionList::new();
        for (p, _) in &ends {
            assignment
                .add_partition_offset(&topic, *p, rdkafka::Offset::Beginning)
                .expect("assignment");
        }
        consumer.assign(&assignment).expect("assign");
        let mut next: HashMap<i32, i64> = ends.iter().map(|(p, _)| (*p, 0)).collect();
        let ends: HashMap<i32, i64> = ends.into_iter().collect();
        let mut records = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while ends.iter().any(|(p, end)| next[p] < *end) {
            assert!(
                Instant::now() < deadline,
                "reading {topic} to its end took over 60 s"
            );
            let Some(message) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let Ok(message) = message else { continue };
            let headers = message
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            (
                                h.key.to_owned(),
                                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            next.insert(message.partition(), message.offset() + 1);
            records.push(KafkaRecord {
                partition: message.partition(),
                offset: message.offset(),
                key: message.key().map(<[u8]>::to_vec),
                value: message.payload().unwrap_or_default().to_vec(),
                headers,
            });
        }
        records.sort_by_key(|r| (r.partition, r.offset));
        records
    })
    .await
    .expect("reader task")
}

// ---------------------------------------------------------------- the load

/// A point: its series key and its sequence number in that series.
type Point = (String, u64);

fn series_key(writer: usize, series: usize) -> String {
    format!("{MEASUREMENT},series=s{series},writer=w{writer}")
}

/// A proxy on the cluster with its writers: each writer owns its series and writes one
/// point to each per write, sequence numbers and timestamps increasing.
struct Load {
    mode: &'static str,
    /// `None` once stopped.
    proxy: Option<TestProxy>,
    db: String,
    topic: String,
    acked: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    writers: Vec<tokio::task::JoinHandle<Vec<Point>>>,
}

impl Load {
    /// `ack_timeout_ms` bounds how long an `ack = "all"` write waits for Kafka.
    async fn start(ack: AckMode, ack_timeout_ms: u64) -> Load {
        let mode = match ack {
            AckMode::Influx => "influx",
            AckMode::All => "all",
        };
        let db = unique(&format!("failover_{mode}"));
        let topic = unique(&format!("failover.{mode}"));
        create_database(&db).await;
        create_topic(&topic).await;
        let mut config = config(&influxdb_url(), &topic);
        config.kafka.brokers = cluster_brokers();
        config.kafka.ack = ack;
        config.kafka.ack_timeout_ms = ack_timeout_ms;
        // the proxy's default: a record outlives any client's wait
        config
            .kafka
            .properties
            .insert("message.timeout.ms".into(), "300000".into());
        let proxy = start_proxy(config).await;
        let acked = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let base_ns = now_ns();
        let url = proxy.url(&format!("/write?db={db}"));
        let writers = (0..WRITERS)
            .map(|writer| {
                tokio::spawn(write_steadily(
                    writer,
                    url.clone(),
                    base_ns,
                    acked.clone(),
                    refused.clone(),
                    stop.clone(),
                ))
            })
            .collect();
        Load {
            mode,
            proxy: Some(proxy),
            db,
            topic,
            acked,
            refused,
            stop,
            writers,
        }
    }

    fn acked(&self) -> usize {
        self.acked.load(Ordering::Acquire)
    }

    /// Stops the writers (each finishes its write) and returns every acknowledged point.
    async fn finish(&mut self) -> BTreeSet<Point> {
        self.stop.store(true, Ordering::Release);
        let mut points = BTreeSet::new();
        for writer in self.writers.drain(..) {
            points.extend(writer.await.expect("writer task"));
        }
        points
    }
}

/// One writer: writes until told to stop, retrying each refused write until it
/// succeeds (a client that retries, as InfluxDB's clients do).
async fn write_steadily(
    writer: usize,
    url: String,
    base_ns: i64,
    acked: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> Vec<Point> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client");
    let mut points = Vec::new();
    let mut seq: u64 = 0;
    while !stop.load(Ordering::Acquire) {
        let time = base_ns + seq as i64 * 1_000;
        let body: String = (0..SERIES_PER_WRITER)
            .map(|s| format!("{} seq={seq}i {time}\n", series_key(writer, s)))
            .collect();
        let mut attempts = 0;
        loop {
            attempts += 1;
            match client.post(&url).body(body.clone()).send().await {
                Ok(answer) if answer.status().is_success() => break,
                Ok(_) | Err(_) => {
                    refused.fetch_add(1, Ordering::AcqRel);
                    assert!(
                        attempts < 200,
                        "writer {writer}: write {seq} refused 200 times"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        points.extend((0..SERIES_PER_WRITER).map(|s| (series_key(writer, s), seq)));
        acked.fetch_add(1, Ordering::AcqRel);
        seq += 1;
        // steady, not flat out: two cores serve the three brokers, InfluxDB and us
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    points
}

/// Says how far a scenario got, for the test's output.
fn phase(started: Instant, what: &str) {
    eprintln!("[{:6.1} s] {what}", started.elapsed().as_secs_f64());
}

/// Waits until every load has `count` more acknowledged writes than now.
async fn more_writes(loads: &[Load], count: usize, phase: &str) {
    let marks: Vec<usize> = loads.iter().map(|l| l.acked() + count).collect();
    wait_for(
        &format!("{count} acknowledged writes per proxy ({phase})"),
        || {
            let done = loads.iter().zip(&marks).all(|(l, mark)| l.acked() >= *mark);
            async move { done }
        },
    )
    .await;
}

// ---------------------------------------------------------------- the checks

/// What one topic held, as counted by [`check`].
struct Verdict {
    records: usize,
    points: usize,
    tee_id_duplicates: usize,
    retry_duplicates: usize,
}

fn parse_seq(value: &str) -> u64 {
    value
        .split_once(" seq=")
        .and_then(|(_, rest)| rest.split_once('i'))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("no seq field in record {value:?}"))
}

/// Kafka's records against the acknowledged points and InfluxDB's; panics on any breach.
fn check(
    mode: &str,
    records: &[KafkaRecord],
    acked: &BTreeSet<Point>,
    stored: &BTreeSet<Point>,
) -> Verdict {
    let mut by_tee_id: HashMap<&str, &[u8]> = HashMap::new();
    let mut partition_of: HashMap<String, i32> = HashMap::new();
    // per series: the last sequence number seen, and its record's value
    let mut last: HashMap<String, (u64, &[u8])> = HashMap::new();
    let mut in_kafka = BTreeSet::new();
    let mut tee_id_duplicates = 0;
    let mut retry_duplicates = 0;
    for record in records {
        let tee_id = record
            .headers
            .get("tee-id")
            .unwrap_or_else(|| panic!("{mode}: record without tee-id: {record:?}"));
        if let Some(first) = by_tee_id.insert(tee_id, &record.value) {
            assert_eq!(
                first,
                &record.value[..],
                "{mode}: two records share tee-id {tee_id} but differ"
            );
            tee_id_duplicates += 1;
            continue;
        }
        let value = record.value_str();
        let key = record.key_str().to_owned();
        assert!(
            value.starts_with(&format!("{key} ")),
            "{mode}: record {value:?} under key {key:?}"
        );
        let seq = parse_seq(value);
        let partition = *partition_of.entry(key.clone()).or_insert(record.partition);
        assert_eq!(
            partition, record.partition,
            "{mode}: series {key} in partitions {partition} and {}",
            record.partition
        );
        match last.insert(key.clone(), (seq, &record.value)) {
            Some((previous, _)) if seq < previous => panic!(
                "{mode}: series {key} reordered in partition {partition}: {seq} after {previous} (offset {})",
                record.offset
            ),
            // the same point again under a new tee-id: the client retried a refused write
            Some((previous, earlier)) if seq == previous => {
                assert_eq!(
                    earlier,
                    &record.value[..],
                    "{mode}: series {key}: two different records for point {seq}"
                );
                retry_duplicates += 1;
            }
            _ => {}
        }
        in_kafka.insert((key, seq));
    }
    let missing: Vec<&Point> = acked.difference(&in_kafka).take(10).collect();
    assert!(
        missing.is_empty(),
        "{mode}: {} acknowledged points are not in Kafka, e.g. {missing:?}",
        acked.difference(&in_kafka).count()
    );
    let only_kafka: Vec<&Point> = in_kafka.difference(stored).take(10).collect();
    let only_influx: Vec<&Point> = stored.difference(&in_kafka).take(10).collect();
    assert!(
        only_kafka.is_empty() && only_influx.is_empty(),
        "{mode}: Kafka and InfluxDB differ: only in Kafka {only_kafka:?}, only in InfluxDB {only_influx:?}"
    );
    Verdict {
        records: records.len(),
        points: in_kafka.len(),
        tee_id_duplicates,
        retry_duplicates,
    }
}

/// The points InfluxDB holds in `db`.
async fn stored_points(db: &str) -> BTreeSet<Point> {
    influx_rows(db, MEASUREMENT)
        .await
        .iter()
        .map(|row| {
            let tag = |name: &str| {
                row[name]
                    .as_str()
                    .unwrap_or_else(|| panic!("tag {name} in {row:?}"))
                    .to_owned()
            };
            let key = format!(
                "{MEASUREMENT},series={},writer={}",
                tag("series"),
                tag("writer")
            );
            let seq = row["seq"]
                .as_u64()
                .unwrap_or_else(|| panic!("seq in {row:?}"));
            (key, seq)
        })
        .collect()
}

/// Stops the loads, waits until Kafka holds every acknowledged point (the spool ships
/// in the background), and checks each topic.
async fn finish_and_check(loads: &mut [Load], scenario: &str) {
    let started = Instant::now();
    for load in loads.iter_mut() {
        let acked = load.finish().await;
        let stored = stored_points(&load.db).await;
        let deadline = Instant::now() + PHASE_TIMEOUT;
        let records = loop {
            let records = read_topic(&load.topic).await;
            let ids: BTreeSet<Point> = records
                .iter()
                .map(|r| (r.key_str().to_owned(), parse_seq(r.value_str())))
                .collect();
            if acked.is_subset(&ids) || Instant::now() >= deadline {
                break records;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let verdict = check(load.mode, &records, &acked, &stored);
        let mut failed = 0.0;
        if let Some(proxy) = &load.proxy {
            failed = proxy
                .metric("influx_tee_kafka_records_total{outcome=\"failed\"}")
                .await;
        }
        eprintln!(
            "{scenario}, ack = {:?}: {} writes acknowledged ({} points), {} refused and retried; \
             Kafka {} records = {} points + {} tee-id duplicates + {} retried-write duplicates; \
             {failed} failed deliveries reported by librdkafka",
            load.mode,
            load.acked(),
            acked.len(),
            load.refused.load(Ordering::Acquire),
            verdict.records,
            verdict.points,
            verdict.tee_id_duplicates,
            verdict.retry_duplicates,
        );
    }
    phase(started, "checked");
    for load in loads.iter_mut() {
        if let Some(proxy) = load.proxy.take() {
            proxy.stop().await;
        }
    }
    // every topic left behind makes each broker's restart after a crash slower
    let topics: Vec<&str> = loads.iter().map(|l| l.topic.as_str()).collect();
    let admin: AdminClient<DefaultClientContext> = client_config().create().expect("admin client");
    let _ = admin.delete_topics(&topics, &AdminOptions::new()).await;
}

// ---------------------------------------------------------------- the tests

/// The leader of a partition the tee writes to is killed (`kill -9`) mid-load, then
/// brought back; the load goes on throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_a_partition_leader_loses_and_reorders_nothing() {
    let _serial = CLUSTER.lock().await;
    require_influxdb().await;
    require_cluster().await;
    let started = Instant::now();
    let mut downed = Downed::default();
    // A dead leader takes the cluster ~6-10 s to fence and replace: with a 2 s wait,
    // `ack = "all"` writes get 503s meanwhile, and the writers retry them.
    let mut loads = vec![
        Load::start(AckMode::Influx, 2_000).await,
        Load::start(AckMode::All, 2_000).await,
    ];
    let topics: Vec<String> = loads.iter().map(|l| l.topic.clone()).collect();
    more_writes(&loads, PHASE_WRITES, "warm-up").await;
    phase(started, "warmed up");

    // the leader of the first partition the `ack = "all"` proxy has written to
    let victim = {
        let topic = topics[1].clone();
        let (ends, parts) = (
            tokio::task::spawn_blocking(move || {
                let consumer: BaseConsumer = client_config().create().expect("kafka client");
                high_watermarks(&consumer, &topic)
            })
            .await
            .expect("watermarks task"),
            partitions(&topics[1]).await,
        );
        let written: BTreeMap<i32, i64> = ends.into_iter().filter(|(_, h)| *h > 0).collect();
        parts
            .iter()
            .find(|p| written.contains_key(&p.partition))
            .map(|p| p.leader)
            .expect("a partition with records")
    };
    downed.kill(victim).await;
    phase(started, &format!("broker {victim} killed"));
    wait_leadership_moved(&topics, victim).await;
    phase(started, "new leaders elected");
    more_writes(&loads, PHASE_WRITES, "leader dead").await;
    phase(started, &format!("{PHASE_WRITES} more writes per proxy"));
    downed.start(victim).await;
    phase(started, &format!("broker {victim} started"));
    wait_in_isr(&topics, victim).await;
    phase(started, &format!("broker {victim} in every ISR"));
    more_writes(&loads, PHASE_WRITES, "leader back").await;
    phase(started, "load done");
    finish_and_check(&mut loads, &format!("kill -9 of broker {victim}")).await;
}

/// A rolling restart: each broker in turn is stopped cleanly and started again, the
/// next one only once the last is back in every ISR; the load goes on throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rolling_restart_of_all_three_brokers_loses_and_reorders_nothing() {
    let _serial = CLUSTER.lock().await;
    require_influxdb().await;
    require_cluster().await;
    let started = Instant::now();
    let mut downed = Downed::default();
    // the default wait: a clean stop moves leadership at once, so no write should fail
    let mut loads = vec![
        Load::start(AckMode::Influx, 30_000).await,
        Load::start(AckMode::All, 30_000).await,
    ];
    let topics: Vec<String> = loads.iter().map(|l| l.topic.clone()).collect();
    more_writes(&loads, PHASE_WRITES, "warm-up").await;
    phase(started, "warmed up");
    for node in NODES {
        downed.stop(node).await;
        phase(started, &format!("broker {node} stopped"));
        wait_leadership_moved(&topics, node).await;
        more_writes(&loads, PHASE_WRITES / 2, &format!("broker {node} stopped")).await;
        phase(
            started,
            &format!("{} more writes per proxy", PHASE_WRITES / 2),
        );
        downed.start(node).await;
        phase(started, &format!("broker {node} started"));
        wait_in_isr(&topics, node).await;
        phase(started, &format!("broker {node} in every ISR"));
        more_writes(&loads, PHASE_WRITES / 2, &format!("broker {node} back")).await;
    }
    phase(started, "load done");
    finish_and_check(&mut loads, "rolling restart").await;
}
