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
    /// What to do with lines that carry no timestamp.
    pub timestamps: TimestampMode,
    pub upstream: UpstreamConfig,
    pub kafka: KafkaConfig,
    /// The durable spool between a write's 2xx and Kafka (`ack = "influx"`).
    pub spool: crate::spool::SpoolConfig,
    pub log: LogConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8086)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9187)),
            max_body_bytes: 32 * 1024 * 1024,
            timestamps: TimestampMode::Stamp,
            upstream: UpstreamConfig::default(),
            kafka: KafkaConfig::default(),
            spool: crate::spool::SpoolConfig::default(),
            log: LogConfig::default(),
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
    /// Whole-request timeout for a forwarded write, answer body included.
    pub timeout_ms: u64,
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
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            url: "http://127.0.0.1:8086".to_owned(),
            api: UpstreamApi::Auto,
            connect_timeout_ms: 2_000,
            timeout_ms: 30_000,
            passthrough_timeout_ms: 0,
            pool_idle_timeout_ms: 90_000,
            retry_after_seconds: 5,
            version_probe_interval_ms: 60_000,
            forwarded_headers: true,
            readback: Default::default(),
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
    #[arg(long, short = 'c', env = "INFLUX_TEE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print the effective configuration, secrets masked, and exit.
    #[arg(long)]
    pub print_config: bool,
    #[arg(long, env = "INFLUX_TEE_LISTEN")]
    pub listen: Option<SocketAddr>,
    #[arg(long, env = "INFLUX_TEE_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    #[arg(long, env = "INFLUX_TEE_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    #[arg(long, value_enum, env = "INFLUX_TEE_TIMESTAMPS")]
    pub timestamps: Option<TimestampMode>,
    /// Upstream InfluxDB base URL, or `none` for a Kafka-only gateway.
    #[arg(long, env = "INFLUX_TEE_UPSTREAM")]
    pub upstream: Option<String>,
    #[arg(long, value_enum, env = "INFLUX_TEE_UPSTREAM_API")]
    pub upstream_api: Option<UpstreamApi>,
    #[arg(long, env = "INFLUX_TEE_UPSTREAM_TIMEOUT_MS")]
    pub upstream_timeout_ms: Option<u64>,
    /// Kafka `bootstrap.servers`.
    #[arg(long, env = "INFLUX_TEE_KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,
    #[arg(long, env = "INFLUX_TEE_KAFKA_TOPIC")]
    pub kafka_topic: Option<String>,
    #[arg(long, value_enum, env = "INFLUX_TEE_KAFKA_FORMAT")]
    pub kafka_format: Option<RecordFormat>,
    #[arg(long, value_enum, env = "INFLUX_TEE_ACK")]
    pub ack: Option<AckMode>,
    /// A librdkafka property as `key=value`; repeat it, or comma-separate in the env var.
    #[arg(
        long = "kafka-property",
        env = "INFLUX_TEE_KAFKA_PROPERTIES",
        value_delimiter = ','
    )]
    pub kafka_properties: Vec<String>,
    /// Directory of the durable spool.
    #[arg(long, env = "INFLUX_TEE_SPOOL_DIR")]
    pub spool_dir: Option<PathBuf>,
    #[arg(long, value_enum, env = "INFLUX_TEE_SPOOL_FSYNC")]
    pub spool_fsync: Option<crate::spool::FsyncMode>,
    #[arg(long, value_enum, env = "INFLUX_TEE_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    #[arg(long, env = "INFLUX_TEE_LOG_LEVEL")]
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
    #[error("invalid upstream url {0:?}: expected http://host:port or none")]
    UpstreamUrl(String),
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
        set(&mut self.kafka.brokers, &args.kafka_brokers);
        set(&mut self.kafka.topic, &args.kafka_topic);
        set(&mut self.kafka.format, &args.kafka_format);
        set(&mut self.kafka.ack, &args.ack);
        set(&mut self.spool.dir, &args.spool_dir);
        set(&mut self.spool.fsync, &args.spool_fsync);
        set(&mut self.log.format, &args.log_format);
        set(&mut self.log.level, &args.log_level);
        for pair in args.kafka_properties.iter().filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| ConfigError::KafkaProperty(pair.clone()))?;
            self.kafka
                .properties
                .insert(key.trim().to_owned(), value.trim().to_owned());
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        json_timestamp_divisor(&self.kafka.json_timestamp_units)?;
        if !self.upstream.is_none() {
            let uri: http::Uri = self
                .upstream
                .url
                .parse()
                .map_err(|_| ConfigError::UpstreamUrl(self.upstream.url.clone()))?;
            if uri.scheme_str() != Some("http") || uri.authority().is_none() {
                return Err(ConfigError::UpstreamUrl(self.upstream.url.clone()));
            }
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
    ["password", "secret", "jaas", "ssl.key.pem", "token"]
        .iter()
        .any(|s| key.contains(s))
}

fn mask_url_password(url: &str) -> String {
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
