//! What InfluxDB's answer says was stored, against the real InfluxDB 1.6 and 2.7:
//! partial writes across shard groups, the lines 1.x names as unparsable, headers
//! HTTP forbids, and an upstream whose `/ping` failed at start. In every case Kafka
//! must hold exactly the points InfluxDB holds.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(30);
/// A week: the shard group duration of an infinite-retention database or bucket.
const WEEK_NS: i64 = 7 * 24 * 3_600 * 1_000_000_000;
/// Far from "now" and from other tests' times; `T0 + 3 weeks` is another shard group.
const T0: i64 = 1_600_000_000_000_000_000;

type Rows = Vec<BTreeMap<String, serde_json::Value>>;

#[derive(Clone, Copy, Debug)]
enum Server {
    Influx1,
    Influx2,
    /// InfluxDB 2.7 through its v1-compatible `/write`.
    Influx2V1,
}

/// A fresh database (1.6) or bucket (2.7), with a proxy in front of its server.
struct Target {
    server: Server,
    name: String,
    topic: String,
    proxy: TestProxy,
}

impl Target {
    async fn new(server: Server, prefix: &str) -> Target {
        Target::with_config(server, prefix, |_| {}).await
    }

    async fn with_config(
        server: Server,
        prefix: &str,
        adjust: impl FnOnce(&mut influx_tee::config::Config),
    ) -> Target {
        require_stack().await;
        let name = unique(prefix);
        let topic = unique(&format!("it.{prefix}"));
        let upstream = match server {
            Server::Influx1 => {
                create_database(&name).await;
                await_database(&name).await;
                influxdb_url()
            }
            Server::Influx2 | Server::Influx2V1 => {
                create_bucket(&name).await;
                influxdb2_url()
            }
        };
        let mut config = config(&upstream, &topic);
        // The shared stack can be slow under parallel test runs.
        config.upstream.readback.timeout_ms = 20_000;
        adjust(&mut config);
        let proxy = start_proxy(config).await;
        Target {
            server,
            name,
            topic,
            proxy,
        }
    }

    /// Writes through the proxy; returns the status and body the client got.
    async fn write(&self, body: &str) -> (u16, String) {
        let request = match self.server {
            Server::Influx1 => http().post(self.proxy.url(&format!("/write?db={}", self.name))),
            Server::Influx2 => http()
                .post(self.proxy.url(&format!(
                    "/api/v2/write?org={INFLUX2_ORG}&bucket={}",
                    self.name
                )))
                .header("Authorization", format!("Token {INFLUX2_TOKEN}")),
            Server::Influx2V1 => http()
                .post(self.proxy.url(&format!("/write?db={}", self.name)))
                .header("Authorization", format!("Token {INFLUX2_TOKEN}")),
        };
        let response = request
            .body(body.to_owned())
            .send()
            .await
            .expect("the proxy answers");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }

    async fn rows(&self, measurement: &str) -> Rows {
        match self.server {
            Server::Influx1 => influx_rows(&self.name, measurement).await,
            Server::Influx2 | Server::Influx2V1 => influx2_rows(&self.name, measurement).await,
        }
    }

    /// Asserts that Kafka holds exactly what InfluxDB holds of `measurement`, and
    /// returns InfluxDB's rows.
    async fn assert_kafka_equals_influxdb(&self, measurement: &str) -> Rows {
        let rows = self.rows(measurement).await;
        let records = kafka_records(&self.topic, rows.len(), WAIT).await;
        let teed: Vec<TeedPoint> = parse_records(&records)
            .into_iter()
            .filter(|point| point.measurement == measurement)
            .collect();
        assert_eq!(teed.len(), rows.len(), "teed {teed:?}\nstored {rows:?}");
        assert_same_points(&rows, &teed);
        rows
    }

    fn endpoint(&self) -> &'static str {
        match self.server {
            Server::Influx1 | Server::Influx2V1 => "v1",
            Server::Influx2 => "v2",
        }
    }

    async fn readbacks(&self) -> f64 {
        let endpoint = self.endpoint();
        self.proxy
            .metric(&format!(
                "influx_tee_write_request_duration_seconds_count{{endpoint=\"{endpoint}\",phase=\"readback\"}}"
            ))
            .await
    }

    async fn unresolved(&self) -> f64 {
        let endpoint = self.endpoint();
        self.proxy
            .metric(&format!(
                "influx_tee_partial_write_unresolved_total{{endpoint=\"{endpoint}\"}}"
            ))
            .await
    }
}

fn hosts(rows: &Rows) -> Vec<String> {
    let mut hosts: Vec<String> = rows
        .iter()
        .map(|row| row["h"].as_str().unwrap_or_default().to_owned())
        .collect();
    hosts.sort();
    hosts
}

async fn two_conflicts_in_one_shard_group(server: Server) {
    let target = Target::new(server, "pw_two").await;
    let (status, _) = target.write(&format!("m,h=a v=1.5,w=\"s\" {T0}\n")).await;
    assert_eq!(status, 204);
    // v and w conflict in the same group; InfluxDB names only v, with dropped=2.
    let (status, body) = target
        .write(&format!(
            "m,h=b v=1i {}\nm,h=c w=2i {}\nm,h=d v=3.5 {}\n",
            T0 + 1,
            T0 + 2,
            T0 + 3
        ))
        .await;
    assert!(status == 400 || status == 422, "{status} {body}");
    assert!(body.contains("dropped=2"), "{body}");
    let rows = target.assert_kafka_equals_influxdb("m").await;
    assert_eq!(hosts(&rows), ["a", "d"]);
    assert_eq!(target.readbacks().await, 1.0);
    assert_eq!(target.unresolved().await, 0.0);
    target.proxy.stop().await;
}

/// Field `v` is a float in the group of `T0` and an integer in that of `T0 + 3 weeks`.
async fn two_groups_of_other_types(target: &Target) {
    let (status, body) = target
        .write(&format!(
            "m,h=a v=1.5 {T0}\nm,h=a v=1i {}\n",
            T0 + 3 * WEEK_NS
        ))
        .await;
    assert_eq!(status, 204, "{body}");
}

async fn conflicts_in_two_shard_groups(server: Server) {
    let target = Target::new(server, "pw_groups").await;
    two_groups_of_other_types(&target).await;
    // One conflict in each group; InfluxDB names whichever group failed first.
    let (status, body) = target
        .write(&format!(
            "m,h=x v=2i {}\nm,h=y v=2.5 {}\nm,h=z v=4.5 {}\nm,h=q v=5i {}\n",
            T0 + 10,
            T0 + 3 * WEEK_NS + 10,
            T0 + 11,
            T0 + 3 * WEEK_NS + 11
        ))
        .await;
    assert!(status == 400 || status == 422, "{status} {body}");
    assert!(body.contains("dropped=1"), "{body}");
    let rows = target.assert_kafka_equals_influxdb("m").await;
    assert_eq!(hosts(&rows), ["a", "a", "q", "z"]);
    assert_eq!(target.unresolved().await, 0.0);
    target.proxy.stop().await;
}

async fn same_field_stored_in_another_group(server: Server) {
    let target = Target::new(server, "pw_same").await;
    two_groups_of_other_types(&target).await;
    // `v=…i` conflicts in the first group only: the second stores it.
    let (status, body) = target
        .write(&format!(
            "m,h=b v=1i {}\nm,h=c v=7i {}\n",
            T0 + 20,
            T0 + 3 * WEEK_NS + 20
        ))
        .await;
    assert!(status == 400 || status == 422, "{status} {body}");
    let rows = target.assert_kafka_equals_influxdb("m").await;
    assert_eq!(hosts(&rows), ["a", "a", "c"]);
    assert_eq!(target.unresolved().await, 0.0);
    target.proxy.stop().await;
}

/// Two points of one write give a new field two types: one is dropped, in that group
/// only, while the other groups store theirs.
async fn new_field_of_two_types_across_groups(server: Server) {
    let target = Target::new(server, "pw_new").await;
    let (status, body) = target
        .write(&format!(
            "n,h=a a=1 {T0}\nn,h=b a=1i {}\nn,h=c b=1 {}\nn,h=d a=2i {}\n",
            T0 + 1,
            T0 + 3 * WEEK_NS,
            T0 + 3 * WEEK_NS + 1
        ))
        .await;
    match server {
        // 1.x checks the batch against the fields it held before, then fails to
        // create `a` twice: the whole group is refused, without "partial write".
        Server::Influx1 => assert_eq!(
            (status, body.as_str()),
            (400, "{\"error\":\"field type conflict\"}\n")
        ),
        Server::Influx2 | Server::Influx2V1 => {
            assert!(body.contains("partial write"), "{status} {body}")
        }
    }
    let rows = target.assert_kafka_equals_influxdb("n").await;
    assert!(
        hosts(&rows).contains(&"c".to_owned()),
        "the other group is stored: {rows:?}"
    );
    assert_eq!(target.unresolved().await, 0.0);
    target.proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influxdb1_two_conflicts_in_one_shard_group() {
    two_conflicts_in_one_shard_group(Server::Influx1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influxdb2_two_conflicts_in_one_shard_group() {
    two_conflicts_in_one_shard_group(Server::Influx2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influxdb1_conflicts_in_two_shard_groups() {
    conflicts_in_two_shard_groups(Server::Influx1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influxdb2_conflicts_in_two_shard_groups() {
    conflicts_in_two_shard_groups(Server::Influx2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influxdb2_v1_write_conflicts_in_two_shard_groups() {
    conflicts_in_two_shard_groups(Server::Influx2V1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influxdb1_same_field_stored_in_another_group() {
    same_field_stored_in_another_group(Server::Influx1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influxdb2_same_field_stored_in_another_group() {
    same_field_stored_in_another_group(Server::Influx2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influxdb1_new_field_of_two_types_across_groups() {
    new_field_of_two_types_across_groups(Server::Influx1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influxdb2_new_field_of_two_types_across_groups() {
    new_field_of_two_types_across_groups(Server::Influx2).await;
}

/// A big partial write over two shard groups is read back within its bounds (the
/// cost is printed), and one over `max_points` is left unresolved: not teed, counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_back_cost_is_measured_and_bounded() {
    const POINTS: i64 = 5_000;
    let target = Target::new(Server::Influx1, "pw_cost").await;
    two_groups_of_other_types(&target).await;
    // Half the points in each group, one conflict in each.
    let body = |base: i64| {
        let mut body = String::new();
        for i in 0..POINTS / 2 {
            let value = if i == 7 {
                "1i".to_owned()
            } else {
                format!("{i}.5")
            };
            body.push_str(&format!("m,h=p{i} v={value} {}\n", T0 + base + i));
            let value = if i == 9 {
                "1.5".to_owned()
            } else {
                format!("{i}i")
            };
            body.push_str(&format!(
                "m,h=q{i} v={value} {}\n",
                T0 + 3 * WEEK_NS + base + i
            ));
        }
        body
    };
    let (status, answer) = target.write(&body(1_000)).await;
    assert_eq!(status, 400, "{answer}");
    let rows = target.assert_kafka_equals_influxdb("m").await;
    assert_eq!(rows.len() as i64, 2 + POINTS - 2);
    let seconds = target
        .proxy
        .metric("influx_tee_write_request_duration_seconds_sum{endpoint=\"v1\",phase=\"readback\"}")
        .await;
    eprintln!(
        "read-back of {POINTS} points over 2 shard groups: {:.1} ms",
        seconds * 1e3
    );
    assert!(seconds > 0.0);
    target.proxy.stop().await;

    let small = Target::with_config(Server::Influx1, "pw_cap", |config| {
        config.upstream.readback.max_points = 100;
    })
    .await;
    two_groups_of_other_types(&small).await;
    let (status, _) = small.write(&body(1_000)).await;
    assert_eq!(status, 400);
    let records = kafka_records(&small.topic, 3, Duration::from_secs(10)).await;
    assert_eq!(records.len(), 2, "only the first write is teed");
    assert_eq!(small.unresolved().await, 1.0);
    small.proxy.stop().await;
}

/// A writer that may not read: the read-back is refused, so nothing uncertain is
/// teed, and the proxy counts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_read_back_tees_nothing_uncertain() {
    require_stack().await;
    let db = unique("pw_wo");
    let topic = unique("it.pw_wo");
    let user = unique("writer");
    create_auth_database(&db).await;
    influx_auth_query(&format!("CREATE USER \"{user}\" WITH PASSWORD 'pw'")).await;
    influx_auth_query(&format!("GRANT WRITE ON \"{db}\" TO \"{user}\"")).await;
    let proxy = start_proxy(config(&influxdb_auth_url(), &topic)).await;
    let write = |body: String| {
        let url = proxy.url(&format!("/write?db={db}&u={user}&p=pw"));
        async move { post(url, body).await.status().as_u16() }
    };
    assert_eq!(write(format!("m,h=a v=1.5,w=\"s\" {T0}\n")).await, 204);
    let status = write(format!(
        "m,h=b v=1i {}\nm,h=c w=2i {}\nm,h=d v=3.5 {}\n",
        T0 + 1,
        T0 + 2,
        T0 + 3
    ))
    .await;
    assert_eq!(status, 400);
    let records = kafka_records(&topic, 2, Duration::from_secs(10)).await;
    let teed = parse_records(&records);
    assert_eq!(teed.len(), 1, "only the first write is certain: {teed:?}");
    assert_eq!(
        proxy
            .metric("influx_tee_partial_write_unresolved_total{endpoint=\"v1\"}")
            .await,
        1.0
    );
    let rows = influx_rows_at(
        &influxdb_auth_url(),
        Some((INFLUX_AUTH_USER, INFLUX_AUTH_PASSWORD)),
        &db,
        "m",
    )
    .await;
    assert_eq!(rows.len(), 2, "InfluxDB stored a and d: {rows:?}");
    proxy.stop().await;
}

/// InfluxDB 1.x copies a refused line, control bytes and all, into `X-Influxdb-Error`.
/// The client gets InfluxDB's answer with those bytes as spaces, and the good lines
/// are teed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influxdb1_error_header_with_control_bytes_is_relayed() {
    require_stack().await;
    for control in [0x01u8, 0x7f, 0x00] {
        let direct_db = unique("pw_hdr_direct");
        let db = unique("pw_hdr");
        let topic = unique("it.pw_hdr");
        create_database(&direct_db).await;
        create_database(&db).await;
        await_database(&direct_db).await;
        await_database(&db).await;
        let mut body = format!("good,h=a v=1 {T0}\ncpu,h=a").into_bytes();
        body.push(control);
        body.extend_from_slice(format!(" v=1x {T0}\n").as_bytes());

        let direct = raw_post(&influxdb_url(), &format!("/write?db={direct_db}"), &body).await;
        let direct_header = direct
            .header("X-Influxdb-Error")
            .expect("InfluxDB names the error in a header")
            .to_vec();
        assert!(
            direct_header.contains(&control),
            "InfluxDB echoes byte {control:#04x}: {} {:?} {:?}",
            direct.status,
            String::from_utf8_lossy(&direct_header),
            String::from_utf8_lossy(&direct.body)
        );

        let proxy = start_proxy(config(&influxdb_url(), &topic)).await;
        let response = post(proxy.url(&format!("/write?db={db}")), body.clone()).await;
        assert_eq!(
            response.status().as_u16(),
            direct.status,
            "byte {control:#04x}"
        );
        let header = response
            .headers()
            .get("X-Influxdb-Error")
            .expect("the header is relayed")
            .as_bytes()
            .to_vec();
        let sanitized: Vec<u8> = direct_header
            .iter()
            .map(|&b| if b == control { b' ' } else { b })
            .collect();
        assert_eq!(header, sanitized);
        assert_eq!(response.bytes().await.unwrap(), direct.body, "same body");

        let rows = influx_rows(&db, "good").await;
        assert_eq!(rows.len(), 1);
        let records = kafka_records(&topic, 1, WAIT).await;
        assert_same_points(&rows, &parse_records(&records));
        proxy.stop().await;
    }
}

/// The proxy starts while the upstream's `/ping` fails, so it assumes v2 and parses
/// `1u` as InfluxDB 2.x would; the 1.6 behind refuses those lines and names them. They
/// must not be teed, and the version in the answer corrects the proxy's view.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_upstream_detection_tees_no_line_1x_refused() {
    require_stack().await;
    let db = unique("pw_stale");
    let topic = unique("it.pw_stale");
    create_database(&db).await;
    await_database(&db).await;
    let relay = FlakyRelay::start(&influxdb_url(), 1).await;
    let mut config = config(&relay.url(), &topic);
    config.upstream.version_probe_interval_ms = 600_000;
    let proxy = start_proxy(config).await;
    let write = |body: String| {
        let url = proxy.url(&format!("/write?db={db}"));
        async move {
            let response = post(url, body).await;
            (
                response.status().as_u16(),
                response.text().await.unwrap_or_default(),
            )
        }
    };
    let (status, body) = write(format!(
        "m,h=a v=1i {T0}\n  m,h=b v=2u {}\nm,h=c v=3i {}\nm,h=b v=2u {}\n",
        T0 + 1,
        T0 + 2,
        T0 + 3
    ))
    .await;
    assert_eq!(
        relay.refused.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the first /ping failed"
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("unable to parse 'm,h=b v=2u"), "{body}");
    // Now known as 1.x: `u` lines are refused by the proxy's parser as by 1.x.
    let (status, body) = write(format!("m,h=d v=4i {}\nm,h=e v=5u {}\n", T0 + 4, T0 + 5)).await;
    assert_eq!(status, 400, "{body}");
    let rows = influx_rows(&db, "m").await;
    assert_eq!(hosts(&rows), ["a", "c", "d"]);
    let records = kafka_records(&topic, rows.len(), WAIT).await;
    assert_same_points(&rows, &parse_records(&records));
    assert_eq!(records.len(), rows.len());
    proxy.stop().await;
}

/// InfluxDB 3 numbers the lines of a partial write among the non-blank, non-comment
/// ones. No InfluxDB 3 runs here: a loopback upstream answers `# c\ncpu…\ncpu v=` as
/// v3 (`influxdb3_write` validator, `parse_lines(lp).enumerate()`) does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influxdb3_partial_write_excludes_the_line_it_numbers() {
    require_stack().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/api/v3/write_lp",
        axum::routing::post(|| async {
            (
                http::StatusCode::BAD_REQUEST,
                [("content-type", "application/json")],
                r#"{"error":"partial write of line protocol occurred","data":[{"original_line":"cpu,h=b v= 2","line_number":2,"error_message":"No fields were provided"}]}"#,
            )
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let topic = unique("it.pw_v3");
    let mut config = config(&format!("http://{addr}"), &topic);
    config.upstream.api = influx_tee::config::UpstreamApi::V3;
    let proxy = start_proxy(config).await;
    let response = post(
        proxy.url("/api/v3/write_lp?db=metrics&accept_partial=true"),
        format!("# c\ncpu,h=a v=1 {T0}\ncpu,h=b v= {T0}\n"),
    )
    .await;
    assert_eq!(response.status(), 400);
    let records = kafka_records(&topic, 1, WAIT).await;
    let teed = parse_records(&records);
    assert_eq!(teed.len(), 1, "{teed:?}");
    assert_eq!(teed[0].tags["h"], "a");
    proxy.stop().await;
}
