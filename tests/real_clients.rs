//! Real InfluxDB clients, unchanged but for their URL, write the same generated data
//! once straight to the upstream and once through the proxy. The data read back must
//! be identical, the Kafka records must match it, and each client must see the same
//! status for a success, a bad line and wrong credentials.

mod common;

use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(30);

/// `SELECT *` on the auth-enabled InfluxDB, rows sorted by time and tags.
async fn auth_rows(
    db: &str,
    measurement: &str,
) -> Vec<std::collections::BTreeMap<String, serde_json::Value>> {
    let mut rows = influx_rows_at(
        &influxdb_auth_url(),
        Some((INFLUX_AUTH_USER, INFLUX_AUTH_PASSWORD)),
        db,
        measurement,
    )
    .await;
    rows.sort_by_key(|row| format!("{:?}", row));
    rows
}

fn host_port(url: &str) -> (String, String) {
    let authority = url.trim_start_matches("http://").trim_end_matches('/');
    let (host, port) = authority.rsplit_once(':').unwrap();
    (host.to_owned(), port.to_owned())
}

async fn python_v1(
    url: &str,
    password: &str,
    db: &str,
    measurement: &str,
    base: i64,
    mode: &str,
) -> String {
    let (host, port) = host_port(url);
    let base = base.to_string();
    let args = [
        host.as_str(),
        &port,
        INFLUX_AUTH_USER,
        password,
        db,
        measurement,
        "300",
        &base,
        mode,
    ];
    run_python_client("python_v1_write.py", &args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_influxdb_v1_client() {
    require_stack().await;
    let (direct_db, proxied_db) = (unique("py1_direct"), unique("py1_proxy"));
    create_auth_database(&direct_db).await;
    create_auth_database(&proxied_db).await;
    let topic = unique("it.py1");
    let proxy = start_proxy(config(&influxdb_auth_url(), &topic)).await;
    let measurement = "pyv1";
    let base = 1_700_000_000_000_000_000;

    for (mode, password, expected) in [
        ("good", INFLUX_AUTH_PASSWORD, "ok"),
        ("bad", INFLUX_AUTH_PASSWORD, "400"),
        ("good", "wrong", "401"),
    ] {
        let direct = python_v1(
            &influxdb_auth_url(),
            password,
            &direct_db,
            measurement,
            base,
            mode,
        )
        .await;
        let proxied = python_v1(
            &proxy.url(""),
            password,
            &proxied_db,
            measurement,
            base,
            mode,
        )
        .await;
        assert_eq!(direct, expected, "{mode}/{password} straight to InfluxDB");
        assert_eq!(
            proxied, direct,
            "{mode}/{password}: the client saw something else through the proxy"
        );
    }

    let direct_rows = auth_rows(&direct_db, measurement).await;
    let proxied_rows = auth_rows(&proxied_db, measurement).await;
    assert_eq!(
        direct_rows.len(),
        301,
        "300 good points plus the good line of the partial write"
    );
    assert_eq!(proxied_rows, direct_rows);
    let records = kafka_records(&topic, 301, WAIT).await;
    assert_same_points(&proxied_rows, &parse_records(&records));
    proxy.stop().await;
}

/// Runs the `influx` 1.x CLI (Debian `influxdb-client`) and returns its exit code and
/// output without the log timestamps.
async fn influx_cli(url: &str, password: &str, args: &[&str]) -> (i32, String) {
    let (host, port) = host_port(url);
    let output = tokio::process::Command::new("influx")
        .args([
            "-host",
            &host,
            "-port",
            &port,
            "-username",
            INFLUX_AUTH_USER,
            "-password",
            password,
        ])
        .args(args)
        .output()
        .await
        .expect(
            "the influx CLI (Debian influxdb-client) is installed by deploy/local/install-deps",
        );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let normalized = text
        .lines()
        .map(|line| match line.get(..20) {
            Some(prefix) if prefix.starts_with("20") && prefix.as_bytes()[4] == b'/' => &line[20..],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    (output.status.code().unwrap_or(-1), normalized)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influx_v1_cli() {
    require_stack().await;
    let (direct_db, proxied_db) = (unique("cli_direct"), unique("cli_proxy"));
    create_auth_database(&direct_db).await;
    create_auth_database(&proxied_db).await;
    let topic = unique("it.cli");
    let proxy = start_proxy(config(&influxdb_auth_url(), &topic)).await;
    let dir = std::env::temp_dir().join(unique("cli"));
    std::fs::create_dir_all(&dir).unwrap();

    let import_file = |db: &str, name: &str, bad: bool| {
        let mut text = format!("# DML\n# CONTEXT-DATABASE: {db}\n");
        for i in 0..50 {
            text.push_str(&format!(
                "clim,host=h{} v={i}.5,n={i}i,s=\"x y\" {}\n",
                i % 3,
                1_700_000_000_000_000_000i64 + i
            ));
        }
        if bad {
            text.push_str("clim,host=bad v=1.1.1 1700000000000000999\n");
        }
        let path = dir.join(format!("{name}.txt"));
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    };

    for (name, bad, password) in [
        ("good", false, INFLUX_AUTH_PASSWORD),
        ("bad", true, INFLUX_AUTH_PASSWORD),
        ("denied", false, "wrong"),
    ] {
        let direct_file = import_file(&direct_db, &format!("{name}-direct"), bad);
        let proxied_file = import_file(&proxied_db, &format!("{name}-proxy"), bad);
        let direct = influx_cli(
            &influxdb_auth_url(),
            password,
            &["-import", "-path", &direct_file, "-precision", "ns"],
        )
        .await;
        let proxied = influx_cli(
            &proxy.url(""),
            password,
            &["-import", "-path", &proxied_file, "-precision", "ns"],
        )
        .await;
        assert_eq!(
            proxied.0, direct.0,
            "{name}: exit code; direct output:\n{}\nproxied output:\n{}",
            direct.1, proxied.1
        );
        assert_eq!(
            proxied.1.replace(&proxied_db, "DB"),
            direct.1.replace(&direct_db, "DB"),
            "{name}: output"
        );
    }
    // INSERT from the CLI's own prompt language, line protocol as typed.
    for db in [&direct_db, &proxied_db] {
        let url = if db == &direct_db {
            influxdb_auth_url()
        } else {
            proxy.url("")
        };
        let (code, output) = influx_cli(
            &url,
            INFLUX_AUTH_PASSWORD,
            &[
                "-database",
                db,
                "-execute",
                "INSERT clim,host=cli v=7 1700000000000000777",
            ],
        )
        .await;
        assert_eq!(code, 0, "{output}");
    }

    let direct_rows = auth_rows(&direct_db, "clim").await;
    let proxied_rows = auth_rows(&proxied_db, "clim").await;
    assert_eq!(direct_rows.len(), 51);
    assert_eq!(proxied_rows, direct_rows);
    let records = kafka_records(&topic, 51, WAIT).await;
    assert_same_points(&proxied_rows, &parse_records(&records));
    proxy.stop().await;
}
