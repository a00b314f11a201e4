//! Shared helpers for the integration tests: the real local stack's addresses, an
//! in-process proxy on port 0, and readers for InfluxDB, VictoriaMetrics and Kafka.
//!
//! The stack is started by `deploy/local/stack up`. A missing service fails the
//! test with a message saying so; nothing is skipped.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use influx_tee::config::Config;
use influx_tee::line_protocol::{self, FieldValue, ParseOptions, Precision};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, TopicPartitionList};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub fn kafka_brokers() -> String {
    std::env::var("INFLUX_TEE_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

pub fn influxdb_url() -> String {
    std::env::var("INFLUX_TEE_TEST_INFLUXDB").unwrap_or_else(|_| "http://127.0.0.1:18086".into())
}

pub fn victoria_url() -> String {
    std::env::var("INFLUX_TEE_TEST_VICTORIA").unwrap_or_else(|_| "http://127.0.0.1:18428".into())
}

/// A loopback address where nothing listens.
pub fn dead_address() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

/// A name no other test run uses: tests share one InfluxDB and one Kafka.
pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000_000
    )
}

pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

/// POSTs a body and returns the answer, whatever its status.
pub async fn post(url: impl reqwest::IntoUrl, body: impl Into<reqwest::Body>) -> reqwest::Response {
    http()
        .post(url)
        .body(body)
        .send()
        .await
        .expect("the request reaches the server")
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Fails the test, loudly, when a service of the local stack is not up.
pub async fn require_stack() {
    let client = http();
    for (name, url) in [
        ("InfluxDB", format!("{}/ping", influxdb_url())),
        ("VictoriaMetrics", format!("{}/health", victoria_url())),
    ] {
        let ok = client
            .get(&url)
            .send()
            .await
            .map(|r| r.status().is_success())
            .unwrap_or(false);
        assert!(
            ok,
            "{name} is not reachable at {url}: run `deploy/local/stack up`"
        );
    }
    let brokers = kafka_brokers();
    let reachable = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()
            .expect("kafka client");
        consumer
            .fetch_metadata(None, Duration::from_secs(10))
            .is_ok()
    })
    .await
    .unwrap();
    assert!(
        reachable,
        "Kafka is not reachable at {}: run `deploy/local/stack up`",
        kafka_brokers()
    );
}

/// A proxy running in this process on loopback port 0.
pub struct TestProxy {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestProxy {
    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.addr, path_and_query)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin_addr, path)
    }

    /// Stops the proxy gracefully, flushing Kafka.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("proxy task").expect("proxy run");
        }
    }

    /// The value of one sample of `/metrics`, e.g. `influx_tee_points_total{endpoint="v1",outcome="teed"}`.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = http()
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|line| {
                line.strip_prefix(series)
                    .and_then(|rest| rest.trim().parse().ok())
            })
            .unwrap_or(0.0)
    }
}

/// A config pointing at the local stack's Kafka and the given upstream.
pub fn config(upstream: &str, topic: &str) -> Config {
    let mut config = Config::default();
    config.upstream.url = upstream.to_owned();
    config.kafka.brokers = kafka_brokers();
    config.kafka.topic = topic.to_owned();
    config.upstream.timeout_ms = 10_000;
    config.kafka.ack_timeout_ms = 10_000;
    // Every proxy gets its own spool: tests run in parallel.
    config.spool.dir = std::env::temp_dir().join(unique("influx-tee-spool"));
    config
        .kafka
        .properties
        .insert("message.timeout.ms".into(), "8000".into());
    config
}

pub async fn start_proxy(config: Config) -> TestProxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let admin_addr = admin.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(influx_tee::server::run(listener, admin, config, async {
        let _ = stopped.await;
    }));
    TestProxy {
        addr,
        admin_addr,
        stop: Some(stop),
        task: Some(task),
    }
}

/// Creates a database on the InfluxDB 1.x of the stack.
pub async fn create_database(db: &str) {
    create_database_at(&influxdb_url(), None, db).await
}

/// Creates a database on the InfluxDB 1.x of the stack that has auth enabled.
pub async fn create_auth_database(db: &str) {
    create_database_at(
        &influxdb_auth_url(),
        Some((INFLUX_AUTH_USER, INFLUX_AUTH_PASSWORD)),
        db,
    )
    .await
}

async fn create_database_at(url: &str, credentials: Option<(&str, &str)>, db: &str) {
    let mut request = http().post(format!("{url}/query"));
    if let Some((user, password)) = credentials {
        request = request.basic_auth(user, Some(password));
    }
    let query = [("q", format!("CREATE DATABASE \"{db}\""))];
    let response = request.form(&query).send().await.expect("InfluxDB answers");
    assert!(
        response.status().is_success(),
        "CREATE DATABASE {db} at {url}: {}",
        response.status()
    );
}

/// Rows of `SELECT * FROM measurement` with nanosecond times, each as column → value.
pub async fn influx_rows(db: &str, measurement: &str) -> Vec<BTreeMap<String, serde_json::Value>> {
    influx_rows_at(&influxdb_url(), None, db, measurement).await
}

/// Like [`influx_rows`], from any InfluxDB 1.x, with optional credentials.
pub async fn influx_rows_at(
    url: &str,
    credentials: Option<(&str, &str)>,
    db: &str,
    measurement: &str,
) -> Vec<BTreeMap<String, serde_json::Value>> {
    let mut request = http().get(format!("{url}/query"));
    if let Some((user, password)) = credentials {
        request = request.basic_auth(user, Some(password));
    }
    let response: serde_json::Value = request
        .query(&[
            ("db", db),
            ("epoch", "ns"),
            ("q", &format!("SELECT * FROM \"{measurement}\"")),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut rows = Vec::new();
    let Some(series) = response["results"][0]["series"].as_array() else {
        return rows;
    };
    for s in series {
        let columns: Vec<String> = s["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_owned())
            .collect();
        for values in s["values"].as_array().unwrap() {
            let row = columns
                .iter()
                .cloned()
                .zip(values.as_array().unwrap().iter().cloned())
                .collect();
            rows.push(row);
        }
    }
    rows
}

/// One sample exported by VictoriaMetrics: metric name (`measurement_field`), labels, value, ms time.
#[derive(Debug, Clone, PartialEq)]
pub struct VmSample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
    pub time_ms: i64,
}

/// Every sample VictoriaMetrics holds for metric names starting with `prefix`.
pub async fn victoria_samples(prefix: &str) -> Vec<VmSample> {
    let client = http();
    let _ = client
        .get(format!("{}/internal/force_flush", victoria_url()))
        .send()
        .await;
    let text = client
        .get(format!("{}/api/v1/export", victoria_url()))
        // Export ends at "now" in whole seconds unless told otherwise.
        .query(&[
            ("match[]", format!("{{__name__=~\"{prefix}.*\"}}")),
            ("end", (now_ns() / 1_000_000_000 + 600).to_string()),
        ])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let row: serde_json::Value = serde_json::from_str(line).unwrap();
        let mut labels: BTreeMap<String, String> = row["metric"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
            .collect();
        let name = labels.remove("__name__").unwrap_or_default();
        for (value, time) in row["values"]
            .as_array()
            .unwrap()
            .iter()
            .zip(row["timestamps"].as_array().unwrap())
        {
            samples.push(VmSample {
                name: name.clone(),
                labels: labels.clone(),
                value: value.as_f64().unwrap_or(f64::NAN),
                time_ms: time.as_i64().unwrap(),
            });
        }
    }
    samples
}

/// A record read back from Kafka.
#[derive(Debug, Clone)]
pub struct KafkaRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: BTreeMap<String, String>,
}

impl KafkaRecord {
    pub fn value_str(&self) -> &str {
        std::str::from_utf8(&self.value).unwrap()
    }
    pub fn key_str(&self) -> &str {
        std::str::from_utf8(self.key.as_deref().unwrap_or_default()).unwrap()
    }
}

/// Reads a topic from the beginning until `expected` records arrived, then keeps
/// reading for `settle` more to catch any extra record, or until `timeout`.
pub async fn kafka_records(topic: &str, expected: usize, timeout: Duration) -> Vec<KafkaRecord> {
    let topic = topic.to_owned();
    let brokers = kafka_brokers();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", unique("test"))
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .create()
            .expect("consumer");
        let deadline = Instant::now() + timeout;
        // Wait for the topic's metadata so every partition is assigned from offset 0.
        let partitions = loop {
            let found = consumer
                .fetch_metadata(Some(&topic), Duration::from_secs(5))
                .ok()
                .and_then(|m| m.topics().first().map(|t| t.partitions().len()))
                .unwrap_or(0);
            if found > 0 || Instant::now() > deadline {
                break found;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let mut assignment = TopicPartitionList::new();
        for p in 0..partitions as i32 {
            assignment
                .add_partition_offset(&topic, p, rdkafka::Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&assignment).unwrap();
        let mut records = Vec::new();
        let mut settle_until: Option<Instant> = None;
        loop {
            let now = Instant::now();
            if now > deadline || settle_until.is_some_and(|s| now > s) {
                break;
            }
            if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
                let headers = message
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                (
                                    h.key.to_owned(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                records.push(KafkaRecord {
                    partition: message.partition(),
                    offset: message.offset(),
                    key: message.key().map(<[u8]>::to_vec),
                    value: message.payload().unwrap_or_default().to_vec(),
                    headers,
                });
            }
            if records.len() >= expected && settle_until.is_none() {
                settle_until = Some(Instant::now() + Duration::from_millis(1500));
            }
        }
        records
    })
    .await
    .unwrap()
}

/// Gzips a body the way clients do for `Content-Encoding: gzip`.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// A tool `deploy/local/install-deps` builds or installs into its cache
/// (`${XDG_CACHE_HOME:-~/.cache}/influx-tee/<relative>`).
pub fn cached_tool(relative: &str) -> std::path::PathBuf {
    let cache = std::env::var("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::path::PathBuf::from(std::env::var("HOME").unwrap()).join(".cache")
        });
    let path = cache.join("influx-tee").join(relative);
    assert!(
        path.exists(),
        "{} is missing: run `deploy/local/install-deps`",
        path.display()
    );
    path
}

/// The Python of the venv `deploy/local/install-deps` prepares, with the InfluxDB clients.
pub fn venv_python() -> std::path::PathBuf {
    match std::env::var("INFLUX_TEE_TEST_PYTHON") {
        Ok(path) => path.into(),
        Err(_) => cached_tool("venv/bin/python"),
    }
}

/// Runs a client script of `tests/clients/` with the venv's Python; returns what it
/// printed (the outcome the client reported).
pub async fn run_python_client(script: &str, args: &[&str]) -> String {
    let path = format!("{}/tests/clients/{script}", env!("CARGO_MANIFEST_DIR"));
    let output = tokio::process::Command::new(venv_python())
        .arg(path)
        .args(args)
        .output()
        .await
        .expect("the venv's Python runs");
    assert!(
        output.status.success(),
        "{script} crashed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// The InfluxDB 1.x of the stack that has `auth-enabled = true`.
pub fn influxdb_auth_url() -> String {
    std::env::var("INFLUX_TEE_TEST_INFLUXDB_AUTH")
        .unwrap_or_else(|_| "http://127.0.0.1:18096".into())
}

/// The admin credentials `deploy/local/stack` creates on that InfluxDB.
pub const INFLUX_AUTH_USER: &str = "admin";
pub const INFLUX_AUTH_PASSWORD: &str = "admin-password";

/// A point read back from a Kafka `line` record.
#[derive(Debug, Clone, PartialEq)]
pub struct TeedPoint {
    pub measurement: String,
    pub tags: BTreeMap<String, String>,
    pub fields: BTreeMap<String, serde_json::Value>,
    pub time: i64,
}

pub fn json_value(value: &FieldValue<'_>) -> serde_json::Value {
    match value {
        FieldValue::Float(v) => serde_json::json!(v),
        FieldValue::Integer(v) => serde_json::json!(v),
        FieldValue::Unsigned(v) => serde_json::json!(v),
        FieldValue::String(v) => serde_json::json!(v),
        FieldValue::Boolean(v) => serde_json::json!(v),
    }
}

pub fn parse_records(records: &[KafkaRecord]) -> Vec<TeedPoint> {
    records
        .iter()
        .map(|record| {
            // Records hold what InfluxDB stored, whichever version it was.
            let options = ParseOptions {
                precision: Precision::Nanosecond,
                allow_unsigned: true,
                reserved_tag_keys: false,
            };
            let line = line_protocol::lines(&record.value, options)
                .next()
                .expect("one line per record");
            let point = line
                .result
                .unwrap_or_else(|e| panic!("record {:?} does not parse: {e}", record.value_str()));
            TeedPoint {
                measurement: point.measurement().into_owned(),
                tags: point
                    .tags()
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect(),
                fields: point
                    .fields()
                    .map(|(k, v)| (k.into_owned(), json_value(&v)))
                    .collect(),
                time: point
                    .timestamp()
                    .expect("records always carry a nanosecond time"),
            }
        })
        .collect()
}

/// Asserts that InfluxDB's rows and the teed points are the same set, value for value.
///
/// A point written twice is stored once by InfluxDB (it overwrites) and teed twice,
/// so the teed points are compared as a set of series and times.
pub fn assert_same_points(rows: &[BTreeMap<String, serde_json::Value>], teed: &[TeedPoint]) {
    let mut distinct: BTreeMap<(String, i64), &TeedPoint> = BTreeMap::new();
    for point in teed {
        distinct.insert((format!("{:?}", point.tags), point.time), point);
    }
    let matches = |row: &BTreeMap<String, serde_json::Value>, point: &TeedPoint| {
        row["time"].as_i64() == Some(point.time)
            && point
                .tags
                .iter()
                .all(|(k, v)| row.get(k).and_then(|x| x.as_str()) == Some(v))
    };
    let unmatched_rows: Vec<_> = rows
        .iter()
        .filter(|row| !distinct.values().any(|p| matches(row, p)))
        .take(5)
        .collect();
    assert!(
        unmatched_rows.is_empty(),
        "InfluxDB rows with no teed point: {unmatched_rows:?}"
    );
    for point in distinct.values() {
        let row = rows
            .iter()
            .find(|row| matches(row, point))
            .unwrap_or_else(|| {
                panic!(
                    "teed point {point:?} is not in InfluxDB ({} rows)",
                    rows.len()
                )
            });
        for (key, value) in &point.fields {
            let stored = &row[key];
            let equal = match (value.as_f64(), stored.as_f64()) {
                (Some(a), Some(b)) => a == b,
                _ => value == stored,
            };
            assert!(
                equal,
                "{point:?}: field {key} teed as {value} but InfluxDB holds {stored}"
            );
        }
    }
    assert_eq!(rows.len(), distinct.len(), "distinct teed points");
}

/// The InfluxDB OSS 2.7 of the stack (built by `deploy/local/build-influxdb2`).
pub fn influxdb2_url() -> String {
    std::env::var("INFLUX_TEE_TEST_INFLUXDB2").unwrap_or_else(|_| "http://127.0.0.1:18097".into())
}

/// The org and operator token `deploy/local/stack` sets up on InfluxDB 2.7.
pub const INFLUX2_ORG: &str = "influx-tee";
pub const INFLUX2_TOKEN: &str = "influx-tee-test-token";

/// Creates a bucket on InfluxDB 2.7, with a DBRP mapping of the same name so InfluxQL
/// (and [`influx2_rows`]) can read it.
pub async fn create_bucket(name: &str) {
    let client = http();
    let api = |path: &str| format!("{}{path}", influxdb2_url());
    let auth = format!("Token {INFLUX2_TOKEN}");
    let orgs: serde_json::Value = client
        .get(api("/api/v2/orgs"))
        .query(&[("org", INFLUX2_ORG)])
        .header("Authorization", &auth)
        .send()
        .await
        .expect("InfluxDB 2.7 answers: run `deploy/local/stack up`")
        .json()
        .await
        .unwrap();
    let org_id = orgs["orgs"][0]["id"]
        .as_str()
        .expect("the stack's org exists")
        .to_owned();
    let bucket: serde_json::Value = client
        .post(api("/api/v2/buckets"))
        .header("Authorization", &auth)
        .json(&serde_json::json!({ "orgID": org_id, "name": name, "retentionRules": [] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let bucket_id = bucket["id"]
        .as_str()
        .unwrap_or_else(|| panic!("bucket not created: {bucket}"));
    let mapping = client
        .post(api("/api/v2/dbrps"))
        .header("Authorization", &auth)
        .json(&serde_json::json!({
            "orgID": org_id, "bucketID": bucket_id, "database": name,
            "retention_policy": "autogen", "default": true
        }))
        .send()
        .await
        .unwrap();
    assert!(
        mapping.status().is_success(),
        "DBRP mapping: {}",
        mapping.status()
    );
}

/// `SELECT *` rows of a bucket on InfluxDB 2.7, through its InfluxQL API.
pub async fn influx2_rows(
    bucket: &str,
    measurement: &str,
) -> Vec<BTreeMap<String, serde_json::Value>> {
    let mut rows = influx_rows_at(
        &influxdb2_url(),
        Some(("tee", INFLUX2_TOKEN)),
        bucket,
        measurement,
    )
    .await;
    rows.sort_by_key(|row| format!("{row:?}"));
    rows
}

/// An answer read off the socket, for servers whose headers HTTP clients refuse.
pub struct RawAnswer {
    pub status: u16,
    /// Header lines as sent, without the status line.
    pub headers: Vec<Vec<u8>>,
    pub body: Vec<u8>,
}

impl RawAnswer {
    /// The raw value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find_map(|line| {
            let colon = line.iter().position(|b| *b == b':')?;
            std::str::from_utf8(&line[..colon])
                .ok()?
                .eq_ignore_ascii_case(name)
                .then(|| line[colon + 1..].trim_ascii())
        })
    }
}

/// POSTs a body over a plain socket (`Connection: close`) and reads the answer as sent.
pub async fn raw_post(base_url: &str, path_and_query: &str, body: &[u8]) -> RawAnswer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = base_url.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = tokio::net::TcpStream::connect(host)
        .await
        .expect("the server listens");
    let head = format!(
        "POST {path_and_query} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete answer head");
    let mut lines = answer[..split]
        .split(|b| *b == b'\n')
        .map(|l| l.trim_ascii_end());
    let status_line = std::str::from_utf8(lines.next().unwrap())
        .unwrap()
        .to_owned();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    RawAnswer {
        status,
        headers: lines.map(<[u8]>::to_vec).collect(),
        body: answer[split + 4..].to_vec(),
    }
}

/// A loopback TCP relay to `target` that closes its first `refuse` connections
/// unanswered, as an upstream that is briefly down.
pub struct FlakyRelay {
    pub addr: SocketAddr,
    pub refused: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl FlakyRelay {
    pub async fn start(target: &str, refuse: usize) -> FlakyRelay {
        use std::sync::atomic::Ordering;
        let target = target.trim_start_matches("http://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let refused = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = refused.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if counter.load(Ordering::SeqCst) < refuse {
                    counter.fetch_add(1, Ordering::SeqCst);
                    drop(client);
                    continue;
                }
                let target = target.clone();
                tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        FlakyRelay { addr, refused }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Runs an InfluxQL statement as admin on the InfluxDB 1.x with auth enabled.
pub async fn influx_auth_query(statement: &str) {
    let response = http()
        .post(format!("{}/query", influxdb_auth_url()))
        .basic_auth(INFLUX_AUTH_USER, Some(INFLUX_AUTH_PASSWORD))
        .form(&[("q", statement)])
        .send()
        .await
        .expect("InfluxDB answers");
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    assert!(
        status.is_success() && !text.contains("\"error\""),
        "{statement}: {status} {text}"
    );
}

/// Waits until the InfluxDB 1.x of the stack lists `db`: under load a database
/// created a moment ago can still be unknown to the write path.
pub async fn await_database(db: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let listed: serde_json::Value = http()
            .get(format!("{}/query", influxdb_url()))
            .query(&[("q", "SHOW DATABASES")])
            .send()
            .await
            .expect("InfluxDB answers")
            .json()
            .await
            .unwrap_or_default();
        let found = listed["results"][0]["series"][0]["values"]
            .as_array()
            .is_some_and(|names| names.iter().any(|n| n[0].as_str() == Some(db)));
        if found {
            return;
        }
        assert!(Instant::now() < deadline, "database {db} never appeared");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
pub mod certs;

// --- Spool edges (tests/spool_edges.rs): a proxy process, Kafka topics. ---

/// Creates a Kafka topic (3 partitions), so it exists whatever the producer may create.
pub async fn create_topic(topic: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .create()
        .expect("kafka admin client");
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, 3, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(20))),
        )
        .await
        .expect("Kafka answers CreateTopics: run `deploy/local/stack up`");
    for result in results {
        if let Err((name, code)) = result {
            assert_eq!(
                code,
                rdkafka::error::RDKafkaErrorCode::TopicAlreadyExists,
                "creating {name}"
            );
        }
    }
}

/// A loopback port nothing listens on yet.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An `influx-tee serve` process of this build, its stderr in a log file.
pub struct ProxyBinary {
    pub child: std::process::Child,
    pub addr: String,
    pub admin: String,
    pub log: std::path::PathBuf,
}

impl ProxyBinary {
    /// Starts the binary on `config_path` (which names `listen` and `admin_listen`)
    /// and waits until its admin listener answers.
    pub async fn start(config_path: &std::path::Path, log: &std::path::Path) -> ProxyBinary {
        let text = std::fs::read_to_string(config_path).unwrap();
        let value: toml::Value = toml::from_str(&text).unwrap();
        let addr = value["listen"].as_str().unwrap().to_owned();
        let admin = value["admin_listen"].as_str().unwrap().to_owned();
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_influx-tee"))
            .args(["serve", "-c"])
            .arg(config_path)
            .stdout(std::process::Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn influx-tee");
        let mut proxy = ProxyBinary {
            child,
            addr,
            admin,
            log: log.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if http().get(proxy.metrics_url()).send().await.is_ok() {
                return proxy;
            }
            if let Ok(Some(status)) = proxy.child.try_wait() {
                panic!(
                    "influx-tee exited: {status}\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "influx-tee did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.addr, path_and_query)
    }

    pub fn metrics_url(&self) -> String {
        format!("http://{}/metrics", self.admin)
    }

    /// Sends SIGTERM and waits for the process to exit; returns how long that took.
    pub async fn terminate(&mut self, timeout: Duration) -> Duration {
        let started = Instant::now();
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: signalling our own child process by its pid.
        let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(sent, 0, "SIGTERM to {pid}");
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "influx-tee exited with {status}");
                return started.elapsed();
            }
            assert!(
                started.elapsed() < timeout,
                "influx-tee did not exit within {timeout:?} of SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The log so far, without ANSI colour codes.
    pub fn log_text(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut plain = String::with_capacity(text.len());
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                // CSI: ESC [ parameters, ended by a letter.
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            } else {
                plain.push(c);
            }
        }
        plain
    }
}

impl Drop for ProxyBinary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of one sample at a `/metrics` URL, e.g. `influx_tee_spool_records `.
pub async fn metric_value(metrics_url: &str, series: &str) -> Option<f64> {
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

/// Waits until the spool behind `metrics_url` has no record left to ship.
pub async fn wait_spool_drained(metrics_url: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let records = metric_value(metrics_url, "influx_tee_spool_records ").await;
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

/// `SELECT count(*)` of a measurement on an InfluxDB 1.x API (the largest field count), 0 if none.
pub async fn influx_count_at(
    url: &str,
    credentials: Option<(&str, &str)>,
    db: &str,
    measurement: &str,
) -> i64 {
    let mut request = http().get(format!("{url}/query"));
    if let Some((user, password)) = credentials {
        request = request.basic_auth(user, Some(password));
    }
    let response: serde_json::Value = request
        .query(&[
            ("db", db),
            ("q", &format!("SELECT count(*) FROM \"{measurement}\"")),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    response["results"][0]["series"][0]["values"][0]
        .as_array()
        .map(|values| {
            values
                .iter()
                .skip(1)
                .filter_map(|v| v.as_i64())
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}
