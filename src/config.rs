//! Effective configuration: defaults, then a TOML file, then `INFLUX_TEE_*` env vars, then flags.
//!
//! clap resolves flag-over-env for each option; this module lays the result over
//! the file, so the precedence is flags > env > file > defaults.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The whole configuration of `influx-tee serve`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where InfluxDB clients connect.
    pub listen: SocketAddr,
    /// The proxy's own `/metrics`, `/healthz` and `/readyz`, apart so they never shadow InfluxDB's.
    pub admin_listen: SocketAddr,
    /// Cap on a write body, both as received and after gzip decompression.
    pub max_body_bytes: usize,
    /// Bytes of write bodies in memory at once, process-wide (as received plus
    /// decompressed); past it a write waits `inflight_wait_ms`, then gets 503.
    pub max_inflight_bytes: usize,
    pub inflight_wait_ms: u64,
    /// What to do with lines that carry no timestamp.
    pub timestamps: TimestampMode,
    pub upstream: UpstreamConfig,
    pub kafka: KafkaConfig,
    /// The durable spool between a write's 2xx and Kafka (`ack = "influx"`).
    pub spool: crate::spool::SpoolConfig,
    pub log: LogConfig,
    /// Connection limits of both listeners.
    pub http: HttpConfig,
    /// Inbound TLS of the client listener.
    pub tls: crate::http::tls::TlsConfig,
    /// Who may write when there is no upstream (`upstream = "none"`).
    pub gateway: crate::http::gateway_auth::GatewayConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8086)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9187)),
            max_body_bytes: 32 * 1024 * 1024,
            // Two largest gzip writes at once (as received and inflated), which with the
            // parse and records of a body keeps the proxy inside a 512 MiB container.
            max_inflight_bytes: 128 * 1024 * 1024,
            inflight_wait_ms: 1_000,
            timestamps: TimestampMode::Stamp,
            upstream: UpstreamConfig::default(),
            kafka: KafkaConfig::default(),
            spool: crate::spool::SpoolConfig::default(),
            log: LogConfig::default(),
            http: HttpConfig::default(),
            tls: crate::http::tls::TlsConfig::default(),
            gateway: Default::default(),
        }
    }
}

/// How lines without a timestamp are handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum TimestampMode {
    /// Insert the proxy's receive time, so InfluxDB and Kafka hold the same time.
    Stamp,
    /// Forward the lines as they are; Kafka records then carry the proxy's receive time.
    Passthrough,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Base URL of the real InfluxDB, or `none` for a Kafka-only gateway.
    pub url: String,
    /// Which API the upstream speaks; `auto` reads it from `/ping`.
    pub api: UpstreamApi,
    pub connect_timeout_ms: u64,
    /// Whole-request timeout for a forwarded write, answer body included; then the
    /// client gets 503.
    pub timeout_ms: u64,
    /// After that 503 the write is not abandoned: InfluxDB may still store it, so the
    /// proxy waits this much longer for its answer and tees what it stored.
    pub late_answer_wait_ms: u64,
    /// For everything passed through (queries, management), how long to wait for the
    /// answer's headers; 0 waits as long as the client does, as InfluxDB sets no query
    /// timeout by default. A short one would cut off long Flux or InfluxQL queries.
    pub passthrough_timeout_ms: u64,
    pub pool_idle_timeout_ms: u64,
    /// `Retry-After` seconds when the proxy answers 503.
    pub retry_after_seconds: u32,
    /// How often the upstream's version is read again from `/ping`.
    pub version_probe_interval_ms: u64,
    /// Add `X-Forwarded-For` and `Forwarded` naming the client to forwarded requests.
    pub forwarded_headers: bool,
    /// Bounds of reading back a partial write whose answer does not say what was stored.
    pub readback: crate::write::readback::ReadbackConfig,
    /// For an `https://` upstream: a PEM CA bundle trusted besides the system's roots.
    pub ca_file: Option<PathBuf>,
    /// For an `https://` upstream that wants client certificates: PEM certificate and key.
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            url: "http://127.0.0.1:8086".to_owned(),
            api: UpstreamApi::Auto,
            connect_timeout_ms: 2_000,
            timeout_ms: 30_000,
            late_answer_wait_ms: 300_000,
            passthrough_timeout_ms: 0,
            pool_idle_timeout_ms: 90_000,
            retry_after_seconds: 5,
            version_probe_interval_ms: 60_000,
            forwarded_headers: true,
            readback: Default::default(),
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
        }
    }
}

impl UpstreamConfig {
    /// True for a Kafka-only gateway.
    pub fn is_none(&self) -> bool {
        self.url.eq_ignore_ascii_case("none")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamApi {
    Auto,
    V1,
    V2,
    V3,
}

/// How a point becomes a Kafka record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum RecordFormat {
    /// One record per point, line protocol with a nanosecond timestamp.
    Line,
    /// One record per point, shaped like Telegraf's JSON serializer.
    Json,
    /// One record per chunk of a request, line protocol.
    Batch,
}

/// When the client gets its 2xx.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum AckMode {
    /// After InfluxDB answered; Kafka delivery happens in the background.
    Influx,
    /// After InfluxDB answered and Kafka acknowledged every record.
    All,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Topic template: `{bucket}`, `{org}`, `{db}`, `{rp}`, `{measurement}`.
    pub topic: String,
    pub format: RecordFormat,
    pub ack: AckMode,
    /// Unit of `timestamp` in `json` records: `1ns`, `1us`, `1ms` or `1s` (Telegraf's `json_timestamp_units`).
    pub json_timestamp_units: String,
    /// Upper bound of one `batch` record's value; keep it under the topic's `max.message.bytes`.
    pub batch_max_bytes: usize,
    /// In `ack = "all"`, how long to wait for Kafka before answering 503.
    pub ack_timeout_ms: u64,
    /// How long a write waits for room when librdkafka's queue is full.
    pub queue_full_wait_ms: u64,
    /// On shutdown, how long to wait for records still queued.
    pub flush_timeout_ms: u64,
    /// Any librdkafka property; these win over the defaults set by the proxy.
    pub properties: BTreeMap<String, String>,
    /// librdkafka properties whose values are read from files (secrets mounted by
    /// Kubernetes or systemd credentials); a trailing newline is dropped.
    pub property_files: BTreeMap<String, PathBuf>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".to_owned(),
            topic: "influx.{bucket}".to_owned(),
            format: RecordFormat::Line,
            ack: AckMode::Influx,
            json_timestamp_units: "1ns".to_owned(),
            batch_max_bytes: 900 * 1024,
            ack_timeout_ms: 30_000,
            queue_full_wait_ms: 5_000,
            flush_timeout_ms: 10_000,
            properties: BTreeMap::new(),
            property_files: BTreeMap::new(),
        }
    }
}

impl KafkaConfig {
    /// librdkafka properties: the proxy's safe defaults, overridden by `properties`.
    pub fn client_properties(&self) -> BTreeMap<String, String> {
        let mut props: BTreeMap<String, String> = [
            ("bootstrap.servers", self.brokers.as_str()),
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("compression.type", "lz4"),
            ("linger.ms", "5"),
            ("message.timeout.ms", "300000"),
            ("client.id", "influx-tee"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        props.extend(self.properties.iter().map(|(k, v)| (k.clone(), v.clone())));
        props
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `influx_tee=debug`. `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".to_owned(),
        }
    }
}

/// `[http]`: what a client may hold of the listeners. The timeouts are InfluxDB 2.x's
/// defaults (`http-read-header-timeout`, `http-idle-timeout`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// From a request's first byte (or the accept) to its complete headers; then the connection is closed.
    pub header_read_timeout_ms: u64,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout_ms: u64,
    /// Open client connections at most; more are accepted and closed at once. Kept
    /// under the open-files limit, so the admin listener and the upstream still get sockets.
    pub max_connections: usize,
    /// Open admin connections at most (`/metrics`, `/healthz`, `/readyz`).
    pub admin_max_connections: usize,
    /// Header fields per request at most (InfluxDB, like Go, counts only bytes).
    pub max_headers: usize,
    /// Header bytes per request at most (Go's default `MaxHeaderBytes`).
    pub max_header_bytes: usize,
    /// On shutdown, how long open connections may take to finish their requests.
    pub drain_timeout_ms: u64,
    /// Longest wait for the next bytes of a request body; then 408 and the connection closes.
    pub body_idle_timeout_ms: u64,
    /// Average rate a request body must keep once `body_min_rate_grace_ms` has passed (0: off).
    pub body_min_bytes_per_second: u64,
    pub body_min_rate_grace_ms: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 180_000,
            max_connections: 10_000,
            admin_max_connections: 256,
            max_headers: 1_000,
            max_header_bytes: 1 << 20,
            drain_timeout_ms: 30_000,
            body_idle_timeout_ms: 30_000,
            body_min_bytes_per_second: 1024,
            body_min_rate_grace_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

/// Flags of `influx-tee serve`; each also reads an `INFLUX_TEE_*` env var.
#[derive(clap::Args, Debug, Default)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, short = 'c', env = "INFLUX_TEE_CONFIG", hide_env_values = true)]
    pub config: Option<PathBuf>,
    /// Print the effective configuration, secrets masked, and exit.
    #[arg(long)]
    pub print_config: bool,
    #[arg(long, env = "INFLUX_TEE_LISTEN", hide_env_values = true)]
    pub listen: Option<SocketAddr>,
    #[arg(long, env = "INFLUX_TEE_ADMIN_LISTEN", hide_env_values = true)]
    pub admin_listen: Option<SocketAddr>,
    #[arg(long, env = "INFLUX_TEE_MAX_BODY_BYTES", hide_env_values = true)]
    pub max_body_bytes: Option<usize>,
    #[arg(
        long,
        value_enum,
        env = "INFLUX_TEE_TIMESTAMPS",
        hide_env_values = true
    )]
    pub timestamps: Option<TimestampMode>,
    /// Upstream InfluxDB base URL, or `none` for a Kafka-only gateway.
    #[arg(long, env = "INFLUX_TEE_UPSTREAM", hide_env_values = true)]
    pub upstream: Option<String>,
    #[arg(
        long,
        value_enum,
        env = "INFLUX_TEE_UPSTREAM_API",
        hide_env_values = true
    )]
    pub upstream_api: Option<UpstreamApi>,
    #[arg(long, env = "INFLUX_TEE_UPSTREAM_TIMEOUT_MS", hide_env_values = true)]
    pub upstream_timeout_ms: Option<u64>,
    /// With `--upstream none`: a TOML (or `.json`) file of the tokens that may write.
    #[arg(long, env = "INFLUX_TEE_GATEWAY_TOKENS_FILE", hide_env_values = true)]
    pub gateway_tokens_file: Option<PathBuf>,
    /// Kafka `bootstrap.servers`.
    #[arg(long, env = "INFLUX_TEE_KAFKA_BROKERS", hide_env_values = true)]
    pub kafka_brokers: Option<String>,
    #[arg(long, env = "INFLUX_TEE_KAFKA_TOPIC", hide_env_values = true)]
    pub kafka_topic: Option<String>,
    #[arg(
        long,
        value_enum,
        env = "INFLUX_TEE_KAFKA_FORMAT",
        hide_env_values = true
    )]
    pub kafka_format: Option<RecordFormat>,
    #[arg(long, value_enum, env = "INFLUX_TEE_ACK", hide_env_values = true)]
    pub ack: Option<AckMode>,
    /// A librdkafka property as `key=value`, one per flag (values may hold commas:
    /// `debug=broker,topic`); repeat the flag for more.
    #[arg(long = "kafka-property")]
    pub kafka_properties: Vec<String>,
    /// librdkafka properties as `key=value`, one per line (values may hold commas,
    /// colons and semicolons); `--kafka-property` flags win for the same key.
    #[arg(
        long = "kafka-properties",
        env = "INFLUX_TEE_KAFKA_PROPERTIES",
        hide = true,
        hide_env_values = true
    )]
    pub kafka_properties_env: Option<String>,
    /// A librdkafka property read from a file, as `key=path` (e.g.
    /// `sasl.password=/run/secrets/kafka`), so secrets stay out of flags and env;
    /// one per flag, or one per line in the env var.
    #[arg(
        long = "kafka-property-file",
        env = "INFLUX_TEE_KAFKA_PROPERTY_FILES",
        hide_env_values = true,
        value_delimiter = '\n'
    )]
    pub kafka_property_files: Vec<String>,
    /// Directory of the durable spool.
    #[arg(long, env = "INFLUX_TEE_SPOOL_DIR", hide_env_values = true)]
    pub spool_dir: Option<PathBuf>,
    #[arg(
        long,
        value_enum,
        env = "INFLUX_TEE_SPOOL_FSYNC",
        hide_env_values = true
    )]
    pub spool_fsync: Option<crate::spool::FsyncMode>,
    #[arg(
        long,
        value_enum,
        env = "INFLUX_TEE_LOG_FORMAT",
        hide_env_values = true
    )]
    pub log_format: Option<LogFormat>,
    #[arg(long, env = "INFLUX_TEE_LOG_LEVEL", hide_env_values = true)]
    pub log_level: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("invalid --kafka-property {0:?}: expected key=value")]
    KafkaProperty(String),
    #[error("invalid json_timestamp_units {0:?}: expected 1ns, 1us, 1ms or 1s")]
    JsonTimestampUnits(String),
    #[error("invalid upstream url {0:?}: expected http://host:port, https://host:port or none")]
    UpstreamUrl(String),
    /// A setting under which the proxy could never work.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Builds the effective configuration from the file named by `args` (if any) and the flags.
    pub fn load(args: &ServeArgs) -> Result<Config, ConfigError> {
        let mut config = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                toml::from_str(&text).map_err(|source| ConfigError::Parse {
                    path: path.clone(),
                    source,
                })?
            }
            None => Config::default(),
        };
        config.apply(args)?;
        config.read_property_files()?;
        config.validate()?;
        Ok(config)
    }

    fn apply(&mut self, args: &ServeArgs) -> Result<(), ConfigError> {
        fn set<T: Clone>(target: &mut T, value: &Option<T>) {
            if let Some(v) = value {
                *target = v.clone();
            }
        }
        set(&mut self.listen, &args.listen);
        set(&mut self.admin_listen, &args.admin_listen);
        set(&mut self.max_body_bytes, &args.max_body_bytes);
        set(&mut self.timestamps, &args.timestamps);
        set(&mut self.upstream.url, &args.upstream);
        set(&mut self.upstream.api, &args.upstream_api);
        set(&mut self.upstream.timeout_ms, &args.upstream_timeout_ms);
        if let Some(path) = &args.gateway_tokens_file {
            self.gateway.tokens_file = Some(path.clone());
        }
        set(&mut self.kafka.brokers, &args.kafka_brokers);
        set(&mut self.kafka.topic, &args.kafka_topic);
        set(&mut self.kafka.format, &args.kafka_format);
        set(&mut self.kafka.ack, &args.ack);
        set(&mut self.spool.dir, &args.spool_dir);
        set(&mut self.spool.fsync, &args.spool_fsync);
        set(&mut self.log.format, &args.log_format);
        set(&mut self.log.level, &args.log_level);
        for pair in args.kafka_property_files.iter().filter(|p| !p.is_empty()) {
            let (key, path) = pair
                .split_once('=')
                .ok_or_else(|| ConfigError::KafkaProperty(pair.clone()))?;
            self.kafka
                .property_files
                .insert(key.trim().to_owned(), PathBuf::from(path.trim()));
        }
        // The env var's lines first, so a flag wins for the same key.
        let env_lines = args
            .kafka_properties_env
            .iter()
            .flat_map(|text| text.lines());
        let flags = args.kafka_properties.iter().map(String::as_str);
        for pair in env_lines.chain(flags).filter(|p| !p.trim().is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .filter(|(key, _)| !key.trim().is_empty())
                .ok_or_else(|| ConfigError::KafkaProperty(pair.to_owned()))?;
            self.kafka
                .properties
                .insert(key.trim().to_owned(), value.trim().to_owned());
        }
        Ok(())
    }

    /// Reads `kafka.property_files` into `kafka.properties`; a file wins over a value
    /// given directly, as it is the more deliberate of the two.
    fn read_property_files(&mut self) -> Result<(), ConfigError> {
        for (key, path) in &self.kafka.property_files {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            let value = text.strip_suffix('\n').unwrap_or(&text);
            let value = value.strip_suffix('\r').unwrap_or(value);
            self.kafka.properties.insert(key.clone(), value.to_owned());
        }
        Ok(())
    }

    /// `text` with every secret of this configuration (secret Kafka properties, the
    /// upstream URL's password) replaced by `****`: for errors that quote what a
    /// library was given.
    pub fn scrub_secrets(&self, text: &str) -> String {
        let mut scrubbed = text.to_owned();
        let url_password = url_password(&self.upstream.url);
        let secrets = self
            .kafka
            .properties
            .iter()
            .filter(|(key, _)| is_secret_property(key))
            .map(|(_, value)| value.as_str())
            .chain(url_password);
        for secret in secrets.filter(|s| !s.is_empty()) {
            scrubbed = scrubbed.replace(secret, "****");
        }
        scrubbed
    }

    fn validate(&self) -> Result<(), ConfigError> {
        json_timestamp_divisor(&self.kafka.json_timestamp_units)?;
        self.refuse_unworkable().map_err(ConfigError::Invalid)?;
        if !self.upstream.is_none() {
            let uri: http::Uri = self
                .upstream
                .url
                .parse()
                .map_err(|_| ConfigError::UpstreamUrl(self.upstream.url.clone()))?;
            if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
                return Err(ConfigError::UpstreamUrl(self.upstream.url.clone()));
            }
        }
        Ok(())
    }

    /// Settings under which nothing could work, refused at start rather than met by
    /// every write.
    fn refuse_unworkable(&self) -> Result<(), String> {
        if self.max_body_bytes == 0 {
            return Err("max_body_bytes = 0 would refuse every write".into());
        }
        if self.listen == self.admin_listen {
            return Err(format!("listen and admin_listen are both {}", self.listen));
        }
        // A gzip write of the largest size holds it twice: as received and inflated.
        if self.max_inflight_bytes < 2 * self.max_body_bytes {
            return Err(format!(
                "max_inflight_bytes = {} cannot hold one gzip write of max_body_bytes = {} (as received and inflated: {})",
                self.max_inflight_bytes,
                self.max_body_bytes,
                2 * self.max_body_bytes
            ));
        }
        if !self.upstream.is_none() {
            if self.upstream.timeout_ms == 0 {
                return Err("upstream.timeout_ms = 0: every forwarded write would time out".into());
            }
            if self.upstream.connect_timeout_ms == 0 {
                return Err("upstream.connect_timeout_ms = 0: no connection could be made".into());
            }
        }
        // With an upstream, InfluxDB authorises writes itself; a second allow-list
        // would only hide which one decides.
        if self.gateway.is_configured() && !self.upstream.is_none() {
            return Err(
                "[gateway] tokens apply only with upstream = \"none\"; with an upstream, \
                 InfluxDB authorises writes itself"
                    .into(),
            );
        }
        if self.kafka.brokers.trim().is_empty() {
            return Err("kafka.brokers is empty".into());
        }
        crate::kafka::TopicTemplate::parse(&self.kafka.topic).map_err(|e| e.to_string())?;
        if self.kafka.format == RecordFormat::Batch {
            // librdkafka refuses a record over `message.max.bytes` (default 1,000,000):
            // every full batch would be dead-lettered.
            let limit = self
                .kafka
                .properties
                .get("message.max.bytes")
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(1_000_000);
            if self.kafka.batch_max_bytes == 0 || self.kafka.batch_max_bytes + 1024 > limit {
                return Err(format!(
                    "kafka.batch_max_bytes = {} must be above 0 and leave 1 KiB of the \
                     producer's message.max.bytes = {limit} for the record's framing",
                    self.kafka.batch_max_bytes
                ));
            }
        }
        if self.kafka.ack == AckMode::All && self.kafka.ack_timeout_ms == 0 {
            return Err(
                "kafka.ack_timeout_ms = 0 with ack = \"all\": every write would get 503".into(),
            );
        }
        if self.spool.enabled && self.kafka.ack == AckMode::Influx {
            self.spool
                .validate(self.max_body_bytes, self.kafka.format)?;
        }
        Ok(())
    }

    /// The configuration as TOML with passwords, secrets and keys masked.
    pub fn to_masked_toml(&self) -> String {
        let mut shown = self.clone();
        shown.upstream.url = mask_url_password(&shown.upstream.url);
        for (key, value) in shown.kafka.properties.iter_mut() {
            if is_secret_property(key) {
                *value = "****".to_owned();
            }
        }
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

/// Nanoseconds per unit of `json_timestamp_units`.
pub fn json_timestamp_divisor(units: &str) -> Result<i64, ConfigError> {
    match units {
        "1ns" | "ns" => Ok(1),
        "1us" | "us" | "1µs" => Ok(1_000),
        "1ms" | "ms" => Ok(1_000_000),
        "1s" | "s" => Ok(1_000_000_000),
        other => Err(ConfigError::JsonTimestampUnits(other.to_owned())),
    }
}

fn is_secret_property(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    // `sasl.oauthbearer.config` carries client secrets in its `key=value` list.
    [
        "password",
        "secret",
        "jaas",
        "ssl.key.pem",
        "token",
        "oauthbearer.config",
    ]
    .iter()
    .any(|s| key.contains(s))
}

/// The password in a URL's user info, if any.
fn url_password(url: &str) -> Option<&str> {
    let scheme_end = url.find("://")? + 3;
    let at = url.rfind('@').filter(|at| *at > scheme_end)?;
    url[scheme_end..at]
        .split_once(':')
        .map(|(_, password)| password)
}

/// `url` with the password of its user info, if any, replaced by `****`.
pub fn mask_url_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{}:****{}", &url[..scheme_end + 3], user, &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_values() {
        let dir = std::env::temp_dir().join(format!("influx-tee-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:1\"\n[kafka]\nbrokers = \"file:9092\"\ntopic = \"t\"\n[kafka.properties]\n\"sasl.password\" = \"hunter2\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            kafka_brokers: Some("flag:9092".into()),
            kafka_properties: vec!["linger.ms=1".into()],
            ..Default::default()
        };
        let config = Config::load(&args).unwrap();
        assert_eq!(config.listen, "127.0.0.1:1".parse().unwrap());
        assert_eq!(config.kafka.brokers, "flag:9092");
        assert_eq!(config.kafka.topic, "t");
        assert_eq!(config.kafka.properties["linger.ms"], "1");
        let shown = config.to_masked_toml();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("****"));
    }

    #[test]
    fn secrets_are_scrubbed_from_text_and_read_from_files() {
        let dir = std::env::temp_dir().join(format!("influx-tee-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("kafka-password");
        std::fs::write(&file, "from-a-file\n").unwrap();
        let args = ServeArgs {
            upstream: Some("http://admin:url-secret@127.0.0.1:8086".into()),
            kafka_properties: vec!["sasl.oauthbearer.config=clientSecret=abc".into()],
            kafka_property_files: vec![format!("sasl.password={}", file.display())],
            ..Default::default()
        };
        let config = Config::load(&args).unwrap();
        assert_eq!(config.kafka.properties["sasl.password"], "from-a-file");
        let shown = config.to_masked_toml();
        for secret in ["from-a-file", "clientSecret=abc", "url-secret"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert_eq!(
            config.scrub_secrets("bad value from-a-file, url-secret and clientSecret=abc"),
            "bad value ****, **** and ****"
        );
    }

    #[test]
    fn kafka_properties_keep_commas_and_take_env_lines() {
        let args = ServeArgs {
            kafka_properties: vec![
                "debug=broker,topic".into(),
                "ssl.cipher.suites=ECDHE-RSA-AES128-GCM-SHA256:AES256-SHA".into(),
            ],
            kafka_properties_env: Some(
                "linger.ms=7\nsasl.oauthbearer.extensions=a=1,b=2\n\ndebug=all\n".into(),
            ),
            ..Default::default()
        };
        let config = Config::load(&args).unwrap();
        let props = &config.kafka.properties;
        assert_eq!(
            props["debug"], "broker,topic",
            "the flag wins over the env var"
        );
        assert_eq!(
            props["ssl.cipher.suites"],
            "ECDHE-RSA-AES128-GCM-SHA256:AES256-SHA"
        );
        assert_eq!(props["linger.ms"], "7");
        assert_eq!(props["sasl.oauthbearer.extensions"], "a=1,b=2");
        let bad = ServeArgs {
            kafka_properties: vec!["=x".into()],
            ..Default::default()
        };
        assert!(matches!(
            Config::load(&bad),
            Err(ConfigError::KafkaProperty(_))
        ));
    }

    #[test]
    fn refuses_config_that_can_never_work() {
        let refused = |edit: &dyn Fn(&mut Config), needle: &str| {
            let mut config = Config::default();
            edit(&mut config);
            match config.validate() {
                Err(ConfigError::Invalid(reason)) => {
                    assert!(reason.contains(needle), "{reason} lacks {needle}")
                }
                other => panic!("{needle}: {other:?}"),
            }
        };
        refused(
            &|c| c.spool.max_inflight_records = 0,
            "max_inflight_records",
        );
        refused(&|c| c.spool.max_inflight_bytes = 0, "max_inflight_bytes");
        refused(&|c| c.spool.max_bytes = 10 << 20, "spool.max_bytes");
        refused(&|c| c.spool.segment_bytes = 100, "segment_bytes");
        refused(&|c| c.spool.fsync_interval_ms = 0, "fsync_interval_ms");
        refused(&|c| c.max_body_bytes = 0, "max_body_bytes");
        refused(
            &|c| c.max_inflight_bytes = c.max_body_bytes,
            "max_inflight_bytes",
        );
        refused(&|c| c.max_body_bytes = 1 << 30, "max_body_bytes");
        refused(&|c| c.upstream.timeout_ms = 0, "upstream.timeout_ms");
        refused(&|c| c.upstream.connect_timeout_ms = 0, "connect_timeout_ms");
        refused(
            &|c| {
                c.kafka.ack = AckMode::All;
                c.kafka.ack_timeout_ms = 0
            },
            "ack_timeout_ms",
        );
        refused(&|c| c.kafka.topic = "x.{nope}".into(), "nope");
        refused(&|c| c.admin_listen = c.listen, "admin_listen");
        refused(
            &|c| {
                c.kafka.format = RecordFormat::Batch;
                c.kafka.batch_max_bytes = 2_000_000
            },
            "batch_max_bytes",
        );
        // The spool's limits do not apply when it is off or `ack = "all"` bypasses it.
        let mut config = Config::default();
        config.spool.max_inflight_records = 0;
        config.spool.enabled = false;
        assert!(config.validate().is_ok());
        assert!(Config::default().validate().is_ok());
    }

    #[test]
    fn masks_url_password() {
        assert_eq!(mask_url_password("http://u:p@h:1"), "http://u:****@h:1");
        assert_eq!(mask_url_password("http://h:1"), "http://h:1");
    }

    #[test]
    fn rejects_unknown_keys_and_bad_urls() {
        assert!(toml::from_str::<Config>("nope = 1").is_err());
        let args = ServeArgs {
            upstream: Some("ftp://x".into()),
            ..Default::default()
        };
        assert!(matches!(
            Config::load(&args),
            Err(ConfigError::UpstreamUrl(_))
        ));
    }
}
