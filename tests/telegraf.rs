//! Telegraf, built from the Go module proxy by `deploy/local/build-telegraf`, writes
//! the same files of points with `outputs.influxdb_v2` (to InfluxDB 2.7) and with
//! `outputs.influxdb` (to InfluxDB 1.x), once straight and once through the proxy:
//! a clean file (success), then a file where some points change a field's type (the
//! bad write a parsing client can still send: 2.7 answers 422, 1.x answers 400
//! `partial write`, both store the other points), then the clean file with a wrong
//! token or password. Telegraf must exit and log the same either way, both servers
//! must hold the same rows, and Kafka exactly the points InfluxDB stored.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(30);

fn telegraf() -> PathBuf {
    let cache = std::env::var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache"));
    let dir = cache.join("influx-tee/telegraf");
    let binary = std::fs::read_dir(&dir).ok().and_then(|mut versions| {
        versions.find_map(|v| Some(v.ok()?.path().join("telegraf")).filter(|path| path.exists()))
    });
    binary.unwrap_or_else(|| {
        panic!(
            "no Telegraf under {}: run `deploy/local/install-deps`",
            dir.display()
        )
    })
}

/// Telegraf-like points, with explicit times so both runs store the same points.
fn write_points_file(dir: &std::path::Path) -> PathBuf {
    let mut text = String::new();
    for i in 0..120i64 {
        text.push_str(&format!(
            "tg_cpu,host=h{},cpu=cpu{} usage_user={}.25,usage_idle={}.5,procs={i}i,up=true,state=\"running {i}\" {}\n",
            i % 3,
            i % 4,
            i,
            100 - i,
            1_700_000_000_000_000_000 + i * 1_000_000_000
        ));
    }
    let path = dir.join("points.lp");
    std::fs::write(&path, text).unwrap();
    path
}

/// Lines of the conflicting file, and how many of them InfluxDB drops.
const CONFLICT_LINES: i64 = 60;
const CONFLICTING: i64 = CONFLICT_LINES / 4;
/// Points InfluxDB keeps after both files.
const STORED: usize = (120 + CONFLICT_LINES - CONFLICTING) as usize;

/// Points written after the clean file: every fourth sends `procs`, an integer in
/// InfluxDB since the clean file, as a string, so InfluxDB drops those points and
/// stores the others. Times follow the clean file's, in the same shard (field types
/// are per shard).
fn write_conflicts_file(dir: &std::path::Path) -> PathBuf {
    let mut text = String::new();
    for i in 0..CONFLICT_LINES {
        let procs = if i % 4 == 1 {
            format!("\"p{i}\"")
        } else {
            format!("{i}i")
        };
        text.push_str(&format!(
            "tg_cpu,host=h{},cpu=cpu{} usage_user={}.75,usage_idle={}.5,procs={procs},up=false,state=\"sleeping {i}\" {}\n",
            i % 3,
            i % 4,
            i,
            100 - i,
            1_700_000_000_000_000_000 + (1_000 + i) * 1_000_000_000
        ));
    }
    let path = dir.join("conflicts.lp");
    std::fs::write(&path, text).unwrap();
    path
}

/// What InfluxDB says about the conflicting file, in the Telegraf log of the run
/// that wrote it straight: the test is about nothing if InfluxDB did not refuse it.
fn assert_conflict_logged(log: &str, status: &str) {
    let expected = format!("dropped={CONFLICTING}");
    assert!(
        log.contains(status)
            && log.contains("partial write: field type conflict")
            && log.contains(&expected),
        "InfluxDB did not answer {status} with a field type conflict and {expected}; Telegraf logged: {log:?}"
    );
}

/// Runs `telegraf --once` with `output` as its output section; returns the exit code
/// and the log without timestamps and with `url` masked, to compare two runs.
async fn run_once(
    dir: &std::path::Path,
    points: &std::path::Path,
    output: &str,
    url: &str,
) -> (i32, String) {
    let config = format!(
        "[agent]\n  omit_hostname = true\n  quiet = true\n\
         [[inputs.file]]\n  files = [{points:?}]\n  data_format = \"influx\"\n{output}"
    );
    let path = dir.join(format!("{}.conf", unique("telegraf")));
    std::fs::write(&path, config).unwrap();
    let output = tokio::process::Command::new(telegraf())
        .args(["--config", path.to_str().unwrap(), "--once"])
        .output()
        .await
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter(|line| line.contains(" E! "))
        .map(|line| {
            line.split_once(' ')
                .map_or(line, |(_, rest)| rest)
                .replace(url, "URL")
        })
        .collect::<Vec<_>>()
        .join("\n");
    (output.status.code().unwrap_or(-1), log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegraf_outputs_influxdb_v2() {
    require_stack().await;
    let dir = std::env::temp_dir().join(unique("telegraf"));
    std::fs::create_dir_all(&dir).unwrap();
    let points = write_points_file(&dir);
    let conflicts = write_conflicts_file(&dir);
    let (direct, proxied) = (unique("tg2_direct"), unique("tg2_proxy"));
    create_bucket(&direct).await;
    create_bucket(&proxied).await;
    let topic = unique("it.tg2");
    let proxy = start_proxy(config(&influxdb2_url(), &topic)).await;
    let output = |url: &str, bucket: &str, token: &str| {
        format!(
            "[[outputs.influxdb_v2]]\n  urls = [{url:?}]\n  token = {token:?}\n  organization = {INFLUX2_ORG:?}\n  bucket = {bucket:?}\n"
        )
    };

    for (file, token) in [
        (&points, INFLUX2_TOKEN),
        (&conflicts, INFLUX2_TOKEN),
        (&points, "wrong"),
    ] {
        let straight = run_once(
            &dir,
            file,
            &output(&influxdb2_url(), &direct, token),
            &influxdb2_url(),
        )
        .await;
        let through = run_once(
            &dir,
            file,
            &output(&proxy.url(""), &proxied, token),
            &proxy.url(""),
        )
        .await;
        let case = format!("{} with token {token}", file.display());
        assert_eq!(
            through.0, straight.0,
            "exit code, {case}: {straight:?} / {through:?}"
        );
        assert_eq!(
            through.1.replace(&proxied, "B"),
            straight.1.replace(&direct, "B"),
            "log, {case}"
        );
        if file == &conflicts {
            assert_conflict_logged(&straight.1, "422 Unprocessable Entity");
        }
    }

    let direct_rows = influx2_rows(&direct, "tg_cpu").await;
    let proxied_rows = influx2_rows(&proxied, "tg_cpu").await;
    assert_eq!(direct_rows.len(), STORED);
    assert_eq!(proxied_rows, direct_rows);
    let records = kafka_records(&topic, STORED, WAIT).await;
    assert_eq!(records.len(), STORED, "records in Kafka");
    assert_same_points(&proxied_rows, &parse_records(&records));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegraf_outputs_influxdb_v1() {
    require_stack().await;
    let dir = std::env::temp_dir().join(unique("telegraf"));
    std::fs::create_dir_all(&dir).unwrap();
    let points = write_points_file(&dir);
    let conflicts = write_conflicts_file(&dir);
    let (direct, proxied) = (unique("tg1_direct"), unique("tg1_proxy"));
    create_auth_database(&direct).await;
    create_auth_database(&proxied).await;
    let topic = unique("it.tg1");
    let proxy = start_proxy(config(&influxdb_auth_url(), &topic)).await;
    let output = |url: &str, db: &str, password: &str| {
        format!(
            "[[outputs.influxdb]]\n  urls = [{url:?}]\n  database = {db:?}\n  skip_database_creation = true\n  username = {INFLUX_AUTH_USER:?}\n  password = {password:?}\n"
        )
    };

    for (file, password) in [
        (&points, INFLUX_AUTH_PASSWORD),
        (&conflicts, INFLUX_AUTH_PASSWORD),
        (&points, "wrong"),
    ] {
        let straight = run_once(
            &dir,
            file,
            &output(&influxdb_auth_url(), &direct, password),
            &influxdb_auth_url(),
        )
        .await;
        let through = run_once(
            &dir,
            file,
            &output(&proxy.url(""), &proxied, password),
            &proxy.url(""),
        )
        .await;
        let case = format!("{} with password {password}", file.display());
        assert_eq!(
            through.0, straight.0,
            "exit code, {case}: {straight:?} / {through:?}"
        );
        assert_eq!(
            through.1.replace(&proxied, "DB"),
            straight.1.replace(&direct, "DB"),
            "log, {case}"
        );
        if file == &conflicts {
            assert_conflict_logged(&straight.1, "400 Bad Request");
        }
    }

    let rows = |db: String| async move {
        let mut rows = influx_rows_at(
            &influxdb_auth_url(),
            Some((INFLUX_AUTH_USER, INFLUX_AUTH_PASSWORD)),
            &db,
            "tg_cpu",
        )
        .await;
        rows.sort_by_key(|row| format!("{row:?}"));
        rows
    };
    let direct_rows = rows(direct.clone()).await;
    let proxied_rows = rows(proxied.clone()).await;
    assert_eq!(direct_rows.len(), STORED);
    assert_eq!(proxied_rows, direct_rows);
    let records = kafka_records(&topic, STORED, WAIT).await;
    assert_eq!(records.len(), STORED, "records in Kafka");
    assert_same_points(&proxied_rows, &parse_records(&records));
    proxy.stop().await;
}
