//! No secret leaves the proxy: a client's token, `u`/`p` and Basic credentials, the
//! upstream URL's password and Kafka credentials never appear in its logs (at trace
//! level), `--help`, `--print-config`, Kafka records or headers, or the spool.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const CLIENT_TOKEN: &str = "CLIENTTOKEN5f3a9";
const QUERY_PASSWORD: &str = "QUERYPASS8c1d2";
const BASIC_PASSWORD: &str = "BASICPASS77e0b";
const URL_PASSWORD: &str = "URLPASS3b9f1";
const KAFKA_PASSWORD: &str = "KAFKAPASS0d4e6";
const FILE_PASSWORD: &str = "FILEPASS9a2c7";

const SECRETS: [&str; 6] = [
    CLIENT_TOKEN,
    QUERY_PASSWORD,
    BASIC_PASSWORD,
    URL_PASSWORD,
    KAFKA_PASSWORD,
    FILE_PASSWORD,
];

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_influx-tee"))
}

fn assert_no_secret(what: &str, text: &[u8]) {
    let text = String::from_utf8_lossy(text);
    for secret in SECRETS {
        assert!(!text.contains(secret), "{secret} found in {what}");
    }
}

#[tokio::test]
async fn no_secret_in_logs_help_config_records_or_spool() {
    require_stack().await;
    let dir = std::env::temp_dir().join(unique("influx-tee-secrets"));
    std::fs::create_dir_all(&dir).unwrap();
    let db = unique("secrets");
    create_database(&db).await;
    let topic = format!("{db}_t");
    let secret_file = dir.join("kafka-secret");
    std::fs::write(&secret_file, format!("{FILE_PASSWORD}\n")).unwrap();
    let port = free_port();
    let admin = free_port();
    let upstream = influxdb_url().replace("http://", &format!("http://tee:{URL_PASSWORD}@"));
    let config = dir.join("influx-tee.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n\
             [upstream]\nurl = \"{upstream}\"\n\
             [kafka]\nbrokers = \"{}\"\ntopic = \"{topic}\"\n\
             [kafka.properties]\n\"sasl.username\" = \"tee\"\n\"sasl.password\" = \"{KAFKA_PASSWORD}\"\n\
             [kafka.property_files]\n\"ssl.key.password\" = \"{}\"\n\
             [spool]\ndir = \"{}\"\n",
            kafka_brokers(),
            secret_file.display(),
            dir.join("spool").display()
        ),
    )
    .unwrap();

    // --help never shows the values of the env vars it names.
    let help = binary()
        .args(["serve", "--help"])
        .env(
            "INFLUX_TEE_KAFKA_PROPERTIES",
            format!("sasl.password={KAFKA_PASSWORD}"),
        )
        .env("INFLUX_TEE_UPSTREAM", &upstream)
        .output()
        .unwrap();
    assert!(help.status.success());
    assert_no_secret("serve --help", &help.stdout);

    // --print-config masks every secret, whichever way it came.
    let printed = binary()
        .args(["serve", "--print-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        printed.status.success(),
        "{}",
        String::from_utf8_lossy(&printed.stderr)
    );
    assert_no_secret("--print-config", &printed.stdout);
    assert!(String::from_utf8_lossy(&printed.stdout).contains("****"));

    // Serve at trace level and write with every kind of client credential.
    let log_path = dir.join("influx-tee.log");
    let mut child = binary()
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "trace")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while http().get(format!("{base}/ping")).send().await.is_err() {
        assert!(Instant::now() < deadline, "the proxy did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let t = now_ns();
    let writes = [
        http()
            .post(format!("{base}/write?db={db}"))
            .header("Authorization", format!("Token {CLIENT_TOKEN}")),
        http().post(format!("{base}/write?db={db}&u=writer&p={QUERY_PASSWORD}")),
        http()
            .post(format!("{base}/write?db={db}"))
            .basic_auth("writer", Some(BASIC_PASSWORD)),
    ];
    for (i, request) in writes.into_iter().enumerate() {
        let answer = request
            .body(format!("secret,n={i} v={i}i {}\n", t + i as i64))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 204);
    }
    // A pass-through request with credentials, and one that fails.
    let _ = http()
        .get(format!(
            "{base}/query?db={db}&u=writer&p={QUERY_PASSWORD}&q=SHOW%20MEASUREMENTS"
        ))
        .send()
        .await
        .unwrap();
    let _ = http()
        .post(format!("{base}/write?db={db}&p={QUERY_PASSWORD}"))
        .header("Authorization", format!("Token {CLIENT_TOKEN}"))
        .body("bad line\n")
        .send()
        .await
        .unwrap();

    let records = kafka_records(&topic, 3, Duration::from_secs(30)).await;
    assert_eq!(records.len(), 3);
    for record in &records {
        assert_no_secret("a Kafka record's value", &record.value);
        assert_no_secret(
            "a Kafka record's key",
            record.key.as_deref().unwrap_or_default(),
        );
        for (name, value) in &record.headers {
            assert_no_secret(&format!("Kafka header {name}"), value.as_bytes());
        }
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();

    let log = std::fs::read(&log_path).unwrap();
    assert!(
        log.len() > 10_000,
        "a trace-level log has content ({} bytes)",
        log.len()
    );
    assert_no_secret("the trace-level log", &log);
    for entry in walk(&dir.join("spool")) {
        assert_no_secret(
            &format!("spool file {}", entry.display()),
            &std::fs::read(&entry).unwrap(),
        );
    }
}

/// A rejected Kafka property is named in the start-up error, its secret value is not.
/// (This librdkafka is built without OIDC, so it refuses the client secret and quotes it.)
#[test]
fn a_refused_secret_property_is_not_echoed() {
    let output = binary()
        .args([
            "serve",
            "--upstream",
            "none",
            "--kafka-brokers",
            "127.0.0.1:1",
        ])
        .args([
            "--kafka-property",
            &format!("sasl.oauthbearer.client.secret={KAFKA_PASSWORD}"),
        ])
        .args(["--spool-dir"])
        .arg(std::env::temp_dir().join(unique("influx-tee-refused")))
        .output()
        .unwrap();
    assert!(!output.status.success(), "an invalid property was accepted");
    assert_no_secret("the start-up error", &output.stderr);
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("kafka"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                files.extend(walk(&path));
            } else {
                files.push(path);
            }
        }
    }
    files
}
