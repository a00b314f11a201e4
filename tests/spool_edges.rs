//! The spool at its edges, against the real Kafka and InfluxDB of the local stack:
//! topics Kafka cannot hold, room accounting, and shutdown of the real binary.
//!
//! Kafka stays up throughout (the tests that stop it are in `spool_faults.rs`).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use influx_tee::config::{Config, RecordFormat};
use influx_tee::kafka::topic::collision_key;
use influx_tee::kafka::{TopicTemplate, TopicVars};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique(&format!("influx-tee-edges-{name}")));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The topic `template` gives a v1 write to `db`.
fn topic_for(template: &str, db: &str) -> String {
    TopicTemplate::parse(template).unwrap().render(
        &TopicVars {
            db,
            bucket: db,
            ..Default::default()
        },
        "",
    )
}

fn points(measurement: &str, first: usize, count: usize, base: i64) -> String {
    (first..first + count)
        .map(|i| format!("{measurement},id=p{i} v={i}i {}\n", base + i as i64))
        .collect()
}

async fn write_ok(url: &str, body: String) {
    let response = post(url, body).await;
    let status = response.status();
    assert!(
        status.is_success(),
        "{url}: {status} {}",
        response.text().await.unwrap_or_default()
    );
}

/// Point 8: records for a topic that does not exist, with auto-creation off, are
/// retried for `unknown_topic_retry_ms`, then dead-lettered and counted; the committed
/// offset moves past them and a later write to a good topic ships.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn missing_topic_is_dead_lettered_and_the_spool_moves_on() {
    require_stack().await;
    let prefix = unique("it_edge_missing");
    let template = format!("{prefix}.{{db}}");
    let (missing_db, good_db) = (unique("edge_missing"), unique("edge_good"));
    create_database(&missing_db).await;
    create_database(&good_db).await;
    let (missing_topic, good_topic) = (
        topic_for(&template, &missing_db),
        topic_for(&template, &good_db),
    );
    create_topic(&good_topic).await;

    let mut config = config(&influxdb_url(), &template);
    let props = &mut config.kafka.properties;
    // The broker creates topics on demand; this producer asks it not to.
    props.insert("allow.auto.create.topics".into(), "false".into());
    props.insert("topic.metadata.propagation.max.ms".into(), "1000".into());
    config.spool.unknown_topic_retry_ms = 3_000;
    let dir = config.spool.dir.clone();
    let proxy = start_proxy(config).await;
    let base = now_ns();
    write_ok(
        &proxy.url(&format!("/write?db={missing_db}")),
        points("edge", 0, 10, base),
    )
    .await;
    write_ok(
        &proxy.url(&format!("/write?db={good_db}")),
        points("edge", 10, 10, base),
    )
    .await;
    wait_spool_drained(&proxy.admin_url("/metrics"), Duration::from_secs(90)).await;
    let dead = proxy
        .metric("influx_tee_spool_dead_letter_total{reason=\"unknown_topic\"} ")
        .await;
    let shipped = proxy
        .metric("influx_tee_spool_records_total{outcome=\"shipped\"} ")
        .await;
    // A write after the dead-lettering ships at once: nothing is stuck behind it.
    write_ok(
        &proxy.url(&format!("/write?db={good_db}")),
        points("edge", 20, 5, base),
    )
    .await;
    wait_spool_drained(&proxy.admin_url("/metrics"), Duration::from_secs(30)).await;
    proxy.stop().await;

    assert_eq!(dead, 10.0);
    assert!(shipped >= 10.0, "{shipped}");
    let letters = std::fs::read_to_string(dir.join("dead-letter.lp")).unwrap();
    assert_eq!(
        letters.matches(&format!("topic={missing_topic} ")).count(),
        10,
        "{letters}"
    );
    assert!(
        letters.contains("spool.unknown_topic_retry_ms"),
        "{letters}"
    );
    let records = kafka_records(&good_topic, 15, Duration::from_secs(60)).await;
    let ids: BTreeSet<String> = parse_records(&records)
        .iter()
        .map(|p| p.tags["id"].clone())
        .collect();
    assert_eq!(ids.len(), 15, "{ids:?}");
    assert_eq!(records.len(), 15, "the good topic's records shipped once");
    // The committed offset passed everything: a restart ships nothing again.
    let committed: u64 = std::fs::read_to_string(dir.join("committed"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(committed, 3);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Point 8: names Kafka would take for one (`x.y` and `x_y`), and two 300-character
/// names that agree on their first 299, each get a topic of their own, and every
/// record reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn confusable_and_long_names_get_distinct_topics() {
    require_stack().await;
    let prefix = unique("it_edge_names");
    let template = format!("{prefix}.{{db}}");
    let stem = unique("edge");
    let dotted = format!("{stem}.x");
    let underscored = format!("{stem}_x");
    let long_a = format!("{}a", "l".repeat(299));
    let long_b = format!("{}b", "l".repeat(299));
    // The long names are too long for InfluxDB 1.x's database directories: the
    // gateway (no upstream) stands in, the topic mapping is the same.
    create_database(&dotted).await;
    create_database(&underscored).await;
    let proxy = start_proxy(config(&influxdb_url(), &template)).await;
    let gateway = start_proxy(config("none", &template)).await;
    let base = now_ns();
    // (through the gateway?, db)
    let cases = [
        (false, &dotted),
        (false, &underscored),
        (true, &long_a),
        (true, &long_b),
    ];
    for (i, (via_gateway, db)) in cases.iter().enumerate() {
        let target = if *via_gateway { &gateway } else { &proxy };
        write_ok(
            &target.url(&format!("/write?db={db}")),
            points("names", i * 10, 10, base),
        )
        .await;
    }
    wait_spool_drained(&proxy.admin_url("/metrics"), Duration::from_secs(90)).await;
    wait_spool_drained(&gateway.admin_url("/metrics"), Duration::from_secs(90)).await;
    let collisions = proxy
        .metric("influx_tee_spool_topic_collisions_total ")
        .await;
    proxy.stop().await;
    gateway.stop().await;
    assert_eq!(collisions, 0.0);

    let topics: Vec<String> = cases
        .iter()
        .map(|(_, db)| topic_for(&template, db))
        .collect();
    let keys: BTreeSet<String> = topics.iter().map(|t| collision_key(t)).collect();
    assert_eq!(keys.len(), topics.len(), "{topics:?}");
    for (i, topic) in topics.iter().enumerate() {
        assert!(topic.len() <= 249, "{topic}");
        let records = kafka_records(topic, 10, Duration::from_secs(60)).await;
        let ids: BTreeSet<String> = parse_records(&records)
            .iter()
            .map(|p| p.tags["id"].clone())
            .collect();
        let expected: BTreeSet<String> = (i * 10..i * 10 + 10).map(|n| format!("p{n}")).collect();
        assert_eq!(ids, expected, "topic {topic}");
        assert!(records.iter().all(|r| r.headers["db"] == *cases[i].1));
    }
}

/// Point 11: the room a write reserves is what its entry takes, estimated from its
/// parsed lines. With Kafka unreachable (nothing ships), the spool takes writes until
/// its bytes are really used, stays within `max_bytes` even for `json` records of
/// short lines (which take ~5× their body), and names the true reason in its 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reservations_match_what_entries_take() {
    require_stack().await;
    let db = unique("edge_room");
    create_database(&db).await;
    let fields: String = (0..40).map(|f| format!("f{f}={f}.5,")).collect();
    let fields = fields.trim_end_matches(',');
    let base = now_ns();
    let wide = |write: usize| -> String {
        (0..1_800)
            .map(|i| format!("room,w=w{write} {fields} {}\n", base + i as i64))
            .collect()
    };
    let body_len = wide(0).len() as u64;
    // Room for six such entries (each ~1.1× its body), not for six `2 × body` reservations.
    let max_bytes = body_len * 6 * 115 / 100 + (64 << 10);

    // Wide lines, concurrently. The old `2 × body + 1024` reservation made an empty
    // spool refuse the fourth of these as "full … Kafka is behind".
    let mut wide_config = config(&influxdb_url(), &unique("it_edge_room"));
    wide_config.kafka.brokers = dead_address().to_string();
    wide_config.spool.max_bytes = max_bytes;
    wide_config.max_body_bytes = 1 << 20;
    // Nothing can ship: no need to wait the default 10 s drain at the stop.
    wide_config.spool.shutdown_drain_ms = 500;
    let proxy = start_proxy(wide_config).await;
    let writes: Vec<_> = (0..6)
        .map(|w| {
            let url = proxy.url(&format!("/write?db={db}"));
            let body = wide(w);
            tokio::spawn(async move { post(url, body).await.status() })
        })
        .collect();
    for write in writes {
        assert_eq!(write.await.unwrap(), 204);
    }
    let on_disk = proxy.metric("influx_tee_spool_bytes ").await;
    assert!(
        on_disk <= max_bytes as f64,
        "{on_disk} of {max_bytes} bytes"
    );
    // Unshipped bytes now fill the spool: the 503 says so.
    let mut refused = None;
    for w in 6..20 {
        let response = post(proxy.url(&format!("/write?db={db}")), wide(w)).await;
        if response.status() == 503 {
            refused = Some(response.text().await.unwrap());
            break;
        }
    }
    let refused = refused.expect("the spool filled up");
    assert!(
        refused.contains("the spool is full") && refused.contains("Kafka is behind"),
        "{refused}"
    );
    proxy.stop().await;

    // `json` records of short lines: the reservation covers them, so the spool never
    // holds more than `max_bytes` (the old one reserved 2 × 20 bytes for ~100).
    let mut json_config = config(&influxdb_url(), &unique("it_edge_room_json"));
    json_config.kafka.brokers = dead_address().to_string();
    json_config.kafka.format = RecordFormat::Json;
    json_config.spool.max_bytes = 1 << 20;
    json_config.max_body_bytes = 64 << 10;
    json_config.spool.shutdown_drain_ms = 500;
    let proxy = start_proxy(json_config).await;
    let short = |write: usize| -> String {
        (0..1_500)
            .map(|i| format!("j,t=a v={i}i {}\n", base + (write * 1_500 + i) as i64))
            .collect()
    };
    let mut accepted = 0;
    for w in 0..200 {
        let response = post(proxy.url(&format!("/write?db={db}")), short(w)).await;
        if response.status() == 503 {
            break;
        }
        assert_eq!(response.status(), 204);
        accepted += 1;
    }
    assert!(accepted > 3 && accepted < 200, "{accepted} writes accepted");
    let on_disk = proxy.metric("influx_tee_spool_bytes ").await;
    assert!(on_disk <= (1 << 20) as f64, "{on_disk} bytes on disk");
    proxy.stop().await;
}

fn write_config(path: &Path, topic: &str, spool: &Path, brokers: &str, drain_ms: u64) {
    let text = format!(
        "listen = \"127.0.0.1:{}\"\nadmin_listen = \"127.0.0.1:{}\"\n\
         [upstream]\nurl = \"{}\"\n\
         [kafka]\nbrokers = \"{brokers}\"\ntopic = \"{topic}\"\n\
         [spool]\ndir = \"{}\"\nshutdown_drain_ms = {drain_ms}\n\
         [log]\nlevel = \"info\"\n",
        free_port(),
        free_port(),
        influxdb_url(),
        spool.display(),
    );
    std::fs::write(path, text).unwrap();
}

/// The committed offset the spool persisted.
fn committed(spool: &Path) -> u64 {
    std::fs::read_to_string(spool.join("committed"))
        .unwrap_or_default()
        .trim()
        .parse()
        .unwrap_or(0)
}

/// Point 10: SIGTERM drains the spool, persists the committed offset and logs the
/// truth; a restart ships nothing twice. With Kafka unreachable the drain times out,
/// the log names what is left, and the next start ships exactly that.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_persists_and_the_next_start_ships_the_rest_once() {
    require_stack().await;
    let db = unique("edge_sigterm");
    create_database(&db).await;
    let dir = temp_dir("sigterm");
    let spool = dir.join("spool");
    let config_path = dir.join("influx-tee.toml");
    let log = dir.join("proxy.log");
    let base = now_ns();

    // Kafka up: everything ships before the exit.
    let topic = unique("it_edge_sigterm");
    write_config(&config_path, &topic, &spool, &kafka_brokers(), 20_000);
    let mut proxy = ProxyBinary::start(&config_path, &log).await;
    for w in 0..10 {
        write_ok(
            &proxy.url(&format!("/write?db={db}")),
            points("term", w * 10, 10, base),
        )
        .await;
    }
    proxy.terminate(Duration::from_secs(30)).await;
    let text = proxy.log_text();
    assert!(
        text.contains("spool closed: every entry shipped to Kafka"),
        "{text}"
    );
    assert!(!text.contains("all Kafka records delivered"), "{text}");
    assert_eq!(committed(&spool), 10, "the committed offset is persisted");
    drop(proxy);
    // The restart finds nothing to ship.
    let mut proxy = ProxyBinary::start(&config_path, &log).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.terminate(Duration::from_secs(30)).await;
    drop(proxy);
    let records = kafka_records(&topic, 100, Duration::from_secs(60)).await;
    let tee_ids: BTreeSet<&String> = records.iter().map(|r| &r.headers["tee-id"]).collect();
    assert_eq!(records.len(), 100, "no record twice");
    assert_eq!(tee_ids.len(), 100);

    // Kafka unreachable: the drain runs out, the log says what is left.
    let topic = unique("it_edge_sigterm_down");
    let spool = dir.join("spool-down");
    write_config(
        &config_path,
        &topic,
        &spool,
        &dead_address().to_string(),
        1_000,
    );
    let _ = std::fs::remove_file(&log);
    let mut proxy = ProxyBinary::start(&config_path, &log).await;
    for w in 0..5 {
        write_ok(
            &proxy.url(&format!("/write?db={db}")),
            points("down", w * 10, 10, base),
        )
        .await;
    }
    let took = proxy.terminate(Duration::from_secs(30)).await;
    let text = proxy.log_text();
    assert!(
        text.contains("spool closed with entries not yet in Kafka")
            && text.contains("unshipped_entries=5")
            && text.contains("unshipped_records=50"),
        "{text}"
    );
    assert!(took < Duration::from_secs(15), "exit took {took:?}");
    assert_eq!(committed(&spool), 0);
    drop(proxy);
    // Kafka back: the next start ships the rest, once.
    write_config(&config_path, &topic, &spool, &kafka_brokers(), 20_000);
    let mut proxy = ProxyBinary::start(&config_path, &log).await;
    wait_spool_drained(&proxy.metrics_url(), Duration::from_secs(90)).await;
    proxy.terminate(Duration::from_secs(30)).await;
    assert!(proxy
        .log_text()
        .contains("spool closed: every entry shipped to Kafka"));
    drop(proxy);
    let records = kafka_records(&topic, 50, Duration::from_secs(60)).await;
    let ids: BTreeSet<String> = parse_records(&records)
        .iter()
        .map(|p| p.tags["id"].clone())
        .collect();
    assert_eq!(records.len(), 50);
    assert_eq!(ids.len(), 50);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Point 12: a configuration that can never work is refused at start, by the binary,
/// with the reason; `--kafka-property` keeps commas in values.
#[test]
fn unworkable_config_is_refused_at_start() {
    let dir = temp_dir("config");
    let path = dir.join("bad.toml");
    std::fs::write(&path, "[spool]\nmax_inflight_records = 0\n").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_influx-tee"))
        .args(["serve", "--print-config", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("max_inflight_records = 0"), "{stderr}");

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_influx-tee"))
        .args([
            "serve",
            "--print-config",
            "--kafka-property",
            "debug=broker,topic",
        ])
        .env(
            "INFLUX_TEE_KAFKA_PROPERTIES",
            "linger.ms=3\nssl.cipher.suites=AES128-SHA:AES256-SHA",
        )
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let shown: Config = toml::from_str(&String::from_utf8_lossy(&output.stdout)).unwrap();
    let props = &shown.kafka.properties;
    assert_eq!(props["debug"], "broker,topic");
    assert_eq!(props["linger.ms"], "3");
    assert_eq!(props["ssl.cipher.suites"], "AES128-SHA:AES256-SHA");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Point 8: a template whose variables are separated by `.` can render two names Kafka
/// takes for one (`a_b` + `c` and `a` + `b_c`). The shipper reports the pair, Kafka
/// refuses to create the second, and its records are dead-lettered after the bounded
/// retry instead of stalling the spool; the first topic gets its records.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn topics_kafka_confuses_are_reported_and_do_not_wedge_the_spool() {
    require_stack().await;
    let prefix = unique("it_edge_confused");
    let template = format!("{prefix}.{{db}}.{{rp}}");
    let mut config = config("none", &template);
    config
        .kafka
        .properties
        .insert("topic.metadata.propagation.max.ms".into(), "1000".into());
    config.spool.unknown_topic_retry_ms = 3_000;
    let dir = config.spool.dir.clone();
    let proxy = start_proxy(config).await;
    let base = now_ns();
    let render = |db: &str, rp: &str| {
        TopicTemplate::parse(&template).unwrap().render(
            &TopicVars {
                db,
                rp,
                ..Default::default()
            },
            "",
        )
    };
    let first = render("a_b", "c");
    let second = render("a", "b_c");
    assert_eq!(collision_key(&first), collision_key(&second));
    write_ok(&proxy.url("/write?db=a_b&rp=c"), points("conf", 0, 5, base)).await;
    // The first topic exists before the second is asked for.
    let records = kafka_records(&first, 5, Duration::from_secs(60)).await;
    assert_eq!(records.len(), 5);
    write_ok(&proxy.url("/write?db=a&rp=b_c"), points("conf", 5, 5, base)).await;
    write_ok(
        &proxy.url("/write?db=a_b&rp=c"),
        points("conf", 10, 5, base),
    )
    .await;
    wait_spool_drained(&proxy.admin_url("/metrics"), Duration::from_secs(120)).await;
    let collisions = proxy
        .metric("influx_tee_spool_topic_collisions_total ")
        .await;
    let dead = proxy
        .metric("influx_tee_spool_records_total{outcome=\"dead_lettered\"} ")
        .await;
    proxy.stop().await;
    assert_eq!(collisions, 1.0);
    assert_eq!(dead, 5.0);
    let letters = std::fs::read_to_string(dir.join("dead-letter.lp")).unwrap();
    assert_eq!(
        letters.matches(&format!("topic={second} ")).count(),
        5,
        "{letters}"
    );
    // While the second topic's records waited, the first topic's newer ones shipped,
    // once: the stream was not restarted for them.
    let records = kafka_records(&first, 10, Duration::from_secs(60)).await;
    let tee_ids: BTreeSet<&String> = records.iter().map(|r| &r.headers["tee-id"]).collect();
    assert_eq!(tee_ids.len(), 10);
    assert_eq!(records.len(), 10, "no duplicates");
    eprintln!(
        "confused topics: {} records for 10 points in {first}; dead letter: {}",
        records.len(),
        letters.lines().next().unwrap_or_default()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
