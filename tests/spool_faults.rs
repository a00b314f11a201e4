//! The spool's promise under faults, against the real local stack: once a client has
//! its 2xx, every point InfluxDB accepted reaches Kafka.
//!
//! Every test writes unique, countable points (`spool,id=N v=Ni T`) and then checks,
//! point by point, what InfluxDB and Kafka hold. The Kafka-outage test stops the
//! shared broker, so every test of this binary runs under one lock, and a guard
//! starts the broker again even when a test fails.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use influx_tee::config::Config;
use influx_tee::spool::WhenFull;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const MEASUREMENT: &str = "spool";

fn stack_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/local/stack")
}

/// Starts the broker again when dropped, also when the test panicked.
struct KafkaGuard {
    stopped: bool,
}

impl KafkaGuard {
    fn stop() -> KafkaGuard {
        let status = Command::new(stack_script())
            .args(["stop", "kafka"])
            .status()
            .expect("run deploy/local/stack");
        assert!(status.success(), "deploy/local/stack stop kafka failed");
        KafkaGuard { stopped: true }
    }

    fn start(&mut self) {
        if self.stopped {
            let status = Command::new(stack_script())
                .args(["start", "kafka"])
                .status()
                .expect("run deploy/local/stack");
            assert!(status.success(), "deploy/local/stack start kafka failed");
            self.stopped = false;
        }
    }
}

impl Drop for KafkaGuard {
    fn drop(&mut self) {
        if self.stopped {
            let _ = Command::new(stack_script())
                .args(["start", "kafka"])
                .status();
        }
    }
}

fn kafka_reachable() -> bool {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: Result<BaseConsumer, _> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .create();
    consumer
        .map(|c| c.fetch_metadata(None, Duration::from_secs(3)).is_ok())
        .unwrap_or(false)
}

/// `count` lines with ids `first..first + count`, each its own series, at `base + id` ns.
fn lines(first: u64, count: u64, base: i64) -> String {
    let mut body = String::new();
    for id in first..first + count {
        body.push_str(&format!(
            "{MEASUREMENT},id={id} v={id}i {}\n",
            base + id as i64
        ));
    }
    body
}

/// The point id of a Kafka `line` record.
fn record_id(value: &str) -> u64 {
    let after = value
        .split_once(",id=")
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("no id in {value:?}"));
    after
        .split(' ')
        .next()
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("bad id in {value:?}"))
}

/// Point ids and their full lines as InfluxDB holds them.
async fn influx_ids(db: &str) -> BTreeMap<u64, i64> {
    influx_rows(db, MEASUREMENT)
        .await
        .iter()
        .map(|row| {
            let id: u64 = row["id"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .expect("id tag");
            let time = row["time"].as_i64().expect("time");
            assert_eq!(row["v"].as_i64(), Some(id as i64), "value of point {id}");
            (id, time)
        })
        .collect()
}

/// What Kafka holds: each point id once, after checking that every duplicate is
/// identifiable (same `tee-id`, same value) and that every record has a `tee-id`.
struct KafkaView {
    ids: BTreeMap<u64, i64>,
    records: usize,
    duplicates: usize,
}

fn kafka_view(records: &[KafkaRecord]) -> KafkaView {
    let mut by_tee_id: BTreeMap<String, &KafkaRecord> = BTreeMap::new();
    let mut ids = BTreeMap::new();
    let mut duplicates = 0;
    for record in records {
        let tee_id = record
            .headers
            .get("tee-id")
            .unwrap_or_else(|| panic!("record without tee-id: {record:?}"));
        if let Some(first) = by_tee_id.insert(tee_id.clone(), record) {
            assert_eq!(
                first.value, record.value,
                "two records share tee-id {tee_id} but differ"
            );
            duplicates += 1;
            continue;
        }
        let value = record.value_str();
        let id = record_id(value);
        let time: i64 = value
            .rsplit(' ')
            .next()
            .and_then(|t| t.parse().ok())
            .expect("time");
        assert!(
            ids.insert(id, time).is_none(),
            "point {id} under two different tee-ids: {value}"
        );
    }
    KafkaView {
        ids,
        records: records.len(),
        duplicates,
    }
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    body: String,
) -> Result<reqwest::Response, reqwest::Error> {
    client.post(url).body(body).send().await
}

/// A proxy in this process whose spool lives in `dir`.
fn spool_config(topic: &str, brokers: &str, dir: &Path) -> Config {
    let mut config = config(&influxdb_url(), topic);
    config.kafka.brokers = brokers.to_owned();
    config.kafka.flush_timeout_ms = 1_000;
    config.spool.dir = dir.to_owned();
    config
}

fn temp_spool(name: &str) -> PathBuf {
    std::env::temp_dir().join(unique(&format!("influx-tee-spool-{name}")))
}

/// How long a spool may take to ship what it holds. Generous: right after another test
/// restarted the broker, its first metadata and topic creation can take most of a minute.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(180);

/// Waits until the proxy's spool has nothing left to ship.
async fn wait_drained(metrics_url: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let records = metric_at(metrics_url, "influx_tee_spool_records ").await;
        if records == Some(0.0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "spool not drained within {timeout:?} ({records:?} records left)"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn metric_at(metrics_url: &str, series: &str) -> Option<f64> {
    let text = http()
        .get(metrics_url)
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines().find_map(|line| {
        line.strip_prefix(series)
            .and_then(|rest| rest.trim().parse().ok())
    })
}

// ---------------------------------------------------------------------------------------

/// 1. Kafka outage: the broker is stopped for 60 s under a steady write load.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_outage_loses_no_acknowledged_point() {
    let _serial = SERIAL.lock().await;
    require_stack().await;
    let db = unique("spool_outage");
    let topic = unique("it.spool.outage");
    create_database(&db).await;
    let dir = temp_spool("outage");
    let proxy = start_proxy(spool_config(&topic, &kafka_brokers(), &dir)).await;

    let acked: Arc<Mutex<Vec<u64>>> = Arc::default();
    let failed: Arc<Mutex<usize>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (acked, failed, stop) = (acked.clone(), failed.clone(), stop.clone());
        let url = proxy.url(&format!("/write?db={db}"));
        tokio::spawn(async move {
            let client = http();
            let base = now_ns();
            let mut next = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                // Plus one point of one of 3 series whose order the test checks in Kafka.
                let write = next / 20;
                let order = format!("order,s={} n={write}i {}\n", write % 3, base + write as i64);
                let response = post(&client, &url, lines(next, 20, base) + &order).await;
                match response {
                    Ok(r) if r.status().is_success() => {
                        acked.lock().unwrap().extend(next..next + 20)
                    }
                    _ => *failed.lock().unwrap() += 1,
                }
                next += 20;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut kafka = tokio::task::spawn_blocking(KafkaGuard::stop).await.unwrap();
    assert!(
        !tokio::task::spawn_blocking(kafka_reachable).await.unwrap(),
        "Kafka still answers after stop"
    );
    let acked_at_stop = acked.lock().unwrap().len();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let age = proxy
        .metric("influx_tee_spool_oldest_unacked_age_seconds ")
        .await;
    let spooled = proxy.metric("influx_tee_spool_records ").await;
    let acked_in_outage = acked.lock().unwrap().len() - acked_at_stop;
    tokio::task::spawn_blocking(move || {
        kafka.start();
        kafka
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, std::sync::atomic::Ordering::Release);
    load.await.unwrap();

    let acked: BTreeSet<u64> = acked.lock().unwrap().iter().copied().collect();
    assert!(
        acked_in_outage >= 400,
        "the load kept getting 2xx during the outage: {acked_in_outage}"
    );
    assert!(age >= 45.0, "oldest unacked age during the outage: {age}");
    assert!(
        spooled >= acked_in_outage as f64,
        "spooled {spooled} < acked in outage {acked_in_outage}"
    );
    wait_drained(&proxy.admin_url("/metrics"), Duration::from_secs(120)).await;
    let retried = proxy
        .metric("influx_tee_spool_records_total{outcome=\"retried\"} ")
        .await;
    let shipped = proxy
        .metric("influx_tee_spool_records_total{outcome=\"shipped\"} ")
        .await;
    proxy.stop().await;

    let expected = acked.len() + acked.len() / 20;
    let (ordered, records): (Vec<_>, Vec<_>) =
        kafka_records(&topic, expected, Duration::from_secs(90))
            .await
            .into_iter()
            .partition(|r| r.value_str().starts_with("order,"));
    assert_series_order(&ordered, acked.len() / 20);
    let view = kafka_view(&records);
    let influx = influx_ids(&db).await;
    let missing: Vec<_> = acked
        .iter()
        .filter(|id| !view.ids.contains_key(id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged points not in Kafka, first {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    // Point by point: the same set, with the same times, in both.
    assert_eq!(influx, view.ids, "InfluxDB and Kafka differ");
    eprintln!(
        "outage: {} points acknowledged ({acked_in_outage} during 60 s without Kafka, {} writes failed), \
         Kafka {} records = {} points + {} duplicates (same tee-id), shipped {shipped}, retried {retried}, \
         oldest unacked age at 60 s {age:.1} s",
        acked.len(),
        failed.lock().unwrap(),
        view.records,
        view.ids.len(),
        view.duplicates,
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Each series' points arrive in write order within their partition (first copy per
/// `tee-id`; a replayed duplicate may come later), and none is missing.
fn assert_series_order(records: &[KafkaRecord], writes: usize) {
    let mut seen = BTreeSet::new();
    let mut last: BTreeMap<(i32, String), i64> = BTreeMap::new();
    for record in records {
        if !seen.insert(record.headers["tee-id"].clone()) {
            continue;
        }
        let n: i64 = record
            .value_str()
            .split_once(" n=")
            .and_then(|(_, rest)| rest.split('i').next())
            .and_then(|n| n.parse().ok())
            .expect("n field");
        let key = (record.partition, record.key_str().to_owned());
        if let Some(previous) = last.insert(key.clone(), n) {
            assert!(n > previous, "series {key:?}: {n} after {previous}");
        }
    }
    assert!(
        seen.len() >= writes,
        "{} ordered points for {writes} acknowledged writes",
        seen.len()
    );
}

// ---------------------------------------------------------------------------------------

/// A proxy process, for `kill -9`.
struct ProxyProcess {
    child: Child,
    addr: String,
    admin: String,
}

impl ProxyProcess {
    fn spawn(config_path: &Path, log: &Path) -> ProxyProcess {
        let text = std::fs::read_to_string(config_path).unwrap();
        let value: toml::Value = toml::from_str(&text).unwrap();
        let addr = value["listen"].as_str().unwrap().to_owned();
        let admin = value["admin_listen"].as_str().unwrap().to_owned();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_influx-tee"))
            .args(["serve", "-c"])
            .arg(config_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn influx-tee");
        ProxyProcess { child, addr, admin }
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if http()
                .get(format!("http://{}/metrics", self.admin))
                .send()
                .await
                .is_ok()
            {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("influx-tee exited: {status}");
            }
            assert!(Instant::now() < deadline, "influx-tee did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn metrics_url(&self) -> String {
        format!("http://{}/metrics", self.admin)
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn write_config(path: &Path, topic: &str, spool: &Path, extra_kafka: &str) {
    let text = format!(
        "listen = \"127.0.0.1:{}\"\nadmin_listen = \"127.0.0.1:{}\"\n\
         [upstream]\nurl = \"{}\"\n\
         [kafka]\nbrokers = \"{}\"\ntopic = \"{topic}\"\n{extra_kafka}\n\
         [spool]\ndir = \"{}\"\n\
         [log]\nlevel = \"info\"\n",
        free_port(),
        free_port(),
        influxdb_url(),
        kafka_brokers(),
        spool.display(),
    );
    std::fs::write(path, text).unwrap();
}

/// 2. Crash: `kill -9` mid-load, restart on the same spool.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_mid_load_then_restart_ships_every_acknowledged_point() {
    let _serial = SERIAL.lock().await;
    require_stack().await;
    let db = unique("spool_crash");
    let topic = unique("it.spool.crash");
    create_database(&db).await;
    let dir = temp_spool("crash");
    std::fs::create_dir_all(&dir).unwrap();
    let config_path = dir.with_extension("toml");
    let log = dir.with_extension("log");
    // Records linger a second in librdkafka, so the kill finds acknowledged writes that only the spool holds.
    write_config(
        &config_path,
        &topic,
        &dir.join("spool"),
        "[kafka.properties]\n\"linger.ms\" = \"1000\"\n",
    );
    let mut proxy = ProxyProcess::spawn(&config_path, &log);
    proxy.wait_ready().await;

    let acked: Arc<Mutex<Vec<u64>>> = Arc::default();
    let url = format!("http://{}/write?db={db}", proxy.addr);
    let base = now_ns();
    let mut writers = Vec::new();
    for writer in 0..4u64 {
        let (acked, url) = (acked.clone(), url.clone());
        writers.push(tokio::spawn(async move {
            let client = http();
            for round in 0u64.. {
                let first = (round * 4 + writer) * 50;
                match post(&client, &url, lines(first, 50, base)).await {
                    Ok(r) if r.status().is_success() => {
                        acked.lock().unwrap().extend(first..first + 50)
                    }
                    Ok(r) => panic!("write answered {}", r.status()),
                    Err(_) => return, // the proxy is gone
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let unshipped_at_kill = metric_at(&proxy.metrics_url(), "influx_tee_spool_records ")
        .await
        .unwrap_or(0.0);
    proxy.child.kill().unwrap(); // SIGKILL
    proxy.child.wait().unwrap();
    for writer in writers {
        writer.await.unwrap();
    }
    let acked: BTreeSet<u64> = acked.lock().unwrap().iter().copied().collect();
    assert!(
        acked.len() >= 1000,
        "too little load before the kill: {}",
        acked.len()
    );

    write_config(&config_path, &topic, &dir.join("spool"), "");
    let mut restarted = ProxyProcess::spawn(&config_path, &log);
    restarted.wait_ready().await;
    wait_drained(&restarted.metrics_url(), Duration::from_secs(60)).await;
    drop(restarted);

    let records = kafka_records(&topic, acked.len(), Duration::from_secs(60)).await;
    let view = kafka_view(&records);
    let influx = influx_ids(&db).await;
    let missing: Vec<_> = acked
        .iter()
        .filter(|id| !view.ids.contains_key(id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged points not in Kafka, first {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    // Kafka holds nothing InfluxDB lacks; InfluxDB may hold the writes cut off by the kill (no 2xx).
    for (id, time) in &view.ids {
        assert_eq!(
            influx.get(id),
            Some(time),
            "point {id} in Kafka but not in InfluxDB"
        );
    }
    let unacked_in_influx: Vec<_> = influx
        .keys()
        .filter(|id| !view.ids.contains_key(id))
        .collect();
    assert!(unacked_in_influx.iter().all(|id| !acked.contains(id)));
    eprintln!(
        "crash: {} points acknowledged, {unshipped_at_kill} records only in the spool at the kill; \
         Kafka {} records = {} points + {} duplicates; InfluxDB {} points ({} from writes the kill cut off)",
        acked.len(),
        view.records,
        view.ids.len(),
        view.duplicates,
        influx.len(),
        unacked_in_influx.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------

/// 3a. Spool full, `when_full = "reject"`: 503 + Retry-After before forwarding; nothing diverges.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_spool_rejects_before_forwarding_and_counts_match() {
    let _serial = SERIAL.lock().await;
    require_stack().await;
    let db = unique("spool_reject");
    let topic = unique("it.spool.reject");
    create_database(&db).await;
    let dir = temp_spool("reject");
    // Kafka unreachable: nothing ships, the spool fills.
    let mut config = spool_config(&topic, &dead_address().to_string(), &dir);
    config.spool.max_bytes = 256 * 1024;
    let proxy = start_proxy(config.clone()).await;

    let client = http();
    let url = proxy.url(&format!("/write?db={db}"));
    let base = now_ns();
    let (mut acked, mut rejected) = (BTreeSet::new(), 0usize);
    let mut next = 0;
    while rejected < 20 {
        let response = post(&client, &url, lines(next, 50, base)).await.unwrap();
        if response.status().is_success() {
            assert_eq!(rejected, 0, "a write got 2xx after the spool was full");
            acked.extend(next..next + 50);
        } else {
            assert_eq!(response.status(), 503);
            assert_eq!(response.headers()["retry-after"], "5");
            assert!(response.headers().contains_key("x-influxdb-error"));
            let body: serde_json::Value = response.json().await.unwrap();
            assert!(
                body["error"].as_str().unwrap().contains("spool is full"),
                "{body}"
            );
            rejected += 1;
        }
        next += 50;
        assert!(next < 1_000_000, "the spool never filled");
    }
    let rejected_metric = proxy
        .metric("influx_tee_spool_rejected_writes_total ")
        .await;
    let appended = proxy
        .metric("influx_tee_spool_records_total{outcome=\"appended\"} ")
        .await;
    let spooled = proxy.metric("influx_tee_spool_records ").await;
    let bytes = proxy.metric("influx_tee_spool_bytes ").await;
    assert_eq!(rejected_metric as usize, rejected);
    assert_eq!(appended as usize, acked.len());
    assert_eq!(spooled as usize, acked.len());
    assert!(bytes <= 256.0 * 1024.0, "{bytes} bytes");
    // The refused writes never reached InfluxDB.
    let influx = influx_ids(&db).await;
    assert_eq!(influx.keys().copied().collect::<BTreeSet<_>>(), acked);
    proxy.stop().await;

    // Kafka is back: everything acknowledged ships, and only that.
    config.kafka.brokers = kafka_brokers();
    let proxy = start_proxy(config).await;
    wait_drained(&proxy.admin_url("/metrics"), DRAIN_TIMEOUT).await;
    proxy.stop().await;
    let view = kafka_view(&kafka_records(&topic, acked.len(), Duration::from_secs(60)).await);
    assert_eq!(view.ids, influx, "InfluxDB and Kafka differ");
    eprintln!(
        "reject: {} points acknowledged and in both, {rejected} writes refused with 503",
        acked.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// 3b. Spool full, `when_full = "drop_oldest"`: every write is accepted, the oldest
/// records are dropped and counted, and Kafka lacks exactly those.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_spool_drops_the_oldest_and_counts_them() {
    let _serial = SERIAL.lock().await;
    require_stack().await;
    let db = unique("spool_drop");
    let topic = unique("it.spool.drop");
    create_database(&db).await;
    let dir = temp_spool("drop");
    let mut config = spool_config(&topic, &dead_address().to_string(), &dir);
    config.spool.max_bytes = 256 * 1024;
    config.spool.when_full = WhenFull::DropOldest;
    let proxy = start_proxy(config).await;

    let client = http();
    let url = proxy.url(&format!("/write?db={db}"));
    let base = now_ns();
    let writes = 300u64;
    for write in 0..writes {
        let response = post(&client, &url, lines(write * 50, 50, base))
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "write {write}: {}",
            response.status()
        );
    }
    let dropped = proxy
        .metric("influx_tee_spool_records_total{outcome=\"dropped\"} ")
        .await as usize;
    let spooled = proxy.metric("influx_tee_spool_records ").await as usize;
    let bytes = proxy.metric("influx_tee_spool_bytes ").await;
    assert!(dropped > 0, "nothing dropped");
    assert_eq!(dropped + spooled, (writes * 50) as usize);
    assert!(bytes <= 256.0 * 1024.0, "{bytes} bytes");
    proxy.stop().await;

    // Kafka is back: ship what is left offline, with `influx-tee spool replay`.
    let replay = Command::new(env!("CARGO_BIN_EXE_influx-tee"))
        .args([
            "spool",
            "replay",
            "--timeout-seconds",
            "60",
            "--kafka-brokers",
            &kafka_brokers(),
            "--spool-dir",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    let replay_text = String::from_utf8_lossy(&replay.stdout);
    assert!(
        replay.status.success(),
        "{replay_text}\n{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    assert!(
        replay_text.contains(&format!("{spooled} records shipped")),
        "{replay_text}"
    );
    let view = kafka_view(&kafka_records(&topic, spooled, Duration::from_secs(60)).await);
    let influx = influx_ids(&db).await;
    assert_eq!(influx.len() as u64, writes * 50, "InfluxDB has every point");
    let missing: Vec<u64> = influx
        .keys()
        .filter(|id| !view.ids.contains_key(id))
        .copied()
        .collect();
    assert_eq!(
        missing.len(),
        dropped,
        "Kafka lacks exactly the dropped points"
    );
    assert_eq!(view.ids.len(), spooled);
    // The dropped ones are the oldest.
    assert!(
        missing.iter().max() < view.ids.keys().min(),
        "dropped points are not the oldest"
    );
    for (id, time) in &view.ids {
        assert_eq!(influx.get(id), Some(time));
    }
    eprintln!(
        "drop_oldest: {} points in InfluxDB, {} in Kafka, {dropped} dropped (metric)",
        influx.len(),
        view.ids.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------

/// 4. Corrupt tail: a torn last frame, garbage after it and a flipped byte in the frame
/// before, as a crash mid-write leaves it. The proxy starts, ships every intact entry
/// and reports what it skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn corrupt_tail_keeps_every_intact_record_and_reports_the_rest() {
    let _serial = SERIAL.lock().await;
    require_stack().await;
    let db = unique("spool_corrupt");
    let topic = unique("it.spool.corrupt");
    create_database(&db).await;
    let dir = temp_spool("corrupt");
    let mut config = spool_config(&topic, &dead_address().to_string(), &dir);
    let proxy = start_proxy(config.clone()).await;
    let client = http();
    let url = proxy.url(&format!("/write?db={db}"));
    let base = now_ns();
    let writes = 40u64;
    for write in 0..writes {
        let response = post(&client, &url, lines(write * 10, 10, base))
            .await
            .unwrap();
        assert!(response.status().is_success());
    }
    proxy.stop().await;

    // One entry per write, in order: damage the last two.
    let segment = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .max()
        .expect("a segment");
    let mut data = std::fs::read(&segment).unwrap();
    let frames = frame_offsets(&data);
    assert_eq!(frames.len(), writes as usize);
    let last = frames[frames.len() - 1];
    data.truncate(last + (data.len() - last) / 2);
    data.extend_from_slice(&[0x5a; 37]);
    let second_last = frames[frames.len() - 2];
    data[second_last + 24 + 5] ^= 0xff;
    std::fs::write(&segment, &data).unwrap();

    // `spool stat` sees the damage without touching the files.
    let stat = Command::new(env!("CARGO_BIN_EXE_influx-tee"))
        .args(["spool", "stat", "--spool-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let stat_text = String::from_utf8_lossy(&stat.stdout);
    assert!(stat.status.success(), "{stat_text}");
    assert!(
        stat_text.contains(&format!(
            "entries          {} ({} not acknowledged)",
            writes - 2,
            writes - 2
        )),
        "{stat_text}"
    );
    assert!(
        !stat_text.contains("damaged          0 bytes"),
        "{stat_text}"
    );
    // `spool dump` prints the intact records as line protocol.
    let dump = Command::new(env!("CARGO_BIN_EXE_influx-tee"))
        .args(["spool", "dump", "--spool-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let dumped: Vec<u64> = String::from_utf8_lossy(&dump.stdout)
        .lines()
        .map(record_id)
        .collect();
    assert_eq!(dumped, (0..(writes - 2) * 10).collect::<Vec<_>>());

    config.kafka.brokers = kafka_brokers();
    let proxy = start_proxy(config).await;
    let skipped_bytes = proxy
        .metric("influx_tee_spool_recovery_skipped_bytes ")
        .await;
    let skipped_regions = proxy
        .metric("influx_tee_spool_recovery_skipped_regions ")
        .await;
    assert!(
        skipped_regions >= 1.0 && skipped_bytes > 0.0,
        "{skipped_regions} regions, {skipped_bytes} bytes"
    );
    wait_drained(&proxy.admin_url("/metrics"), DRAIN_TIMEOUT).await;
    proxy.stop().await;

    let intact = ((writes - 2) * 10) as usize;
    let view = kafka_view(&kafka_records(&topic, intact, Duration::from_secs(60)).await);
    let influx = influx_ids(&db).await;
    assert_eq!(influx.len() as u64, writes * 10);
    let expected: BTreeMap<u64, i64> = influx
        .iter()
        .filter(|(id, _)| **id < intact as u64)
        .map(|(k, v)| (*k, *v))
        .collect();
    assert_eq!(
        view.ids, expected,
        "Kafka holds exactly the intact entries' points"
    );
    eprintln!(
        "corrupt tail: {intact} of {} points intact and shipped; skipped {skipped_bytes} bytes in {skipped_regions} regions",
        writes * 10
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Offsets of the frames of a clean segment (8-byte magic, then `len`-prefixed frames).
fn frame_offsets(data: &[u8]) -> Vec<usize> {
    let mut offsets = Vec::new();
    let mut at = 8;
    while at + 24 <= data.len() {
        offsets.push(at);
        let len = u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as usize;
        at += 24 + len;
    }
    offsets
}

// ---------------------------------------------------------------------------------------

/// A record Kafka refuses for good goes to the dead-letter file and a metric; the
/// records around it still ship, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_record_is_dead_lettered_and_the_stream_goes_on() {
    let _serial = SERIAL.lock().await;
    require_stack().await;
    let db = unique("spool_poison");
    let topic = unique("it.spool.poison");
    create_database(&db).await;
    let dir = temp_spool("poison");
    let mut config = spool_config(&topic, &kafka_brokers(), &dir);
    // Records over 2,000 bytes are too large for this producer: a permanent error.
    config
        .kafka
        .properties
        .insert("message.max.bytes".into(), "2000".into());
    let proxy = start_proxy(config).await;
    let client = http();
    let url = proxy.url(&format!("/write?db={db}"));
    let base = now_ns();
    let big = "x".repeat(3000);
    for write in 0..5u64 {
        let mut body = lines(write * 10, 10, base);
        if write == 2 {
            body.push_str(&format!(
                "{MEASUREMENT},id=poison v=0i,s=\"{big}\" {base}\n"
            ));
        }
        let response = post(&client, &url, body).await.unwrap();
        assert!(response.status().is_success(), "{}", response.status());
    }
    wait_drained(&proxy.admin_url("/metrics"), DRAIN_TIMEOUT).await;
    let dead = proxy
        .metric("influx_tee_spool_records_total{outcome=\"dead_lettered\"} ")
        .await;
    let shipped = proxy
        .metric("influx_tee_spool_records_total{outcome=\"shipped\"} ")
        .await;
    proxy.stop().await;
    assert_eq!(dead, 1.0);
    assert_eq!(shipped, 50.0);
    let letters = std::fs::read_to_string(dir.join("dead-letter.lp")).unwrap();
    assert!(letters.starts_with("# dead-letter at="), "{letters}");
    assert!(
        letters.contains(&format!("topic={topic}")) && letters.contains("tee-id="),
        "{letters}"
    );
    assert!(letters.contains(&big), "the record's value is kept");
    let view = kafka_view(&kafka_records(&topic, 50, Duration::from_secs(60)).await);
    assert_eq!(
        view.ids.keys().copied().collect::<Vec<_>>(),
        (0..50).collect::<Vec<_>>()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
