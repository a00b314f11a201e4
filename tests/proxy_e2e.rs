//! The write proxy end to end against the real local stack: InfluxDB 1.6,
//! VictoriaMetrics and Apache Kafka, started by `deploy/local/stack up`.

mod common;

use std::time::Duration;

use common::*;
use influx_tee::config::{AckMode, RecordFormat, TimestampMode};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_write_reaches_influxdb_and_kafka_with_equal_values() {
    require_stack().await;
    let db = unique("v1");
    let topic = unique("it.v1");
    create_database(&db).await;
    let proxy = start_proxy(config(&influxdb_url(), &topic)).await;

    let body = "cpu,host=a,region=eu usage=1.5,count=3i,ok=true,msg=\"hello world\" 1700000000000000000\n\
                cpu,host=b usage=-2.25,count=-4i,ok=false,msg=\"say \\\"hi\\\"\" 1700000000000000001\n\
                # a comment\n\
                \n\
                cpu,host=c\\ d usage=1e3 1700000000000000002\n";
    let response = post(proxy.url(&format!("/write?db={db}")), body).await;
    assert_eq!(response.status(), 204, "{:?}", response.text().await);
    assert!(
        response.headers().contains_key("x-influxdb-version"),
        "upstream headers are relayed"
    );

    let records = kafka_records(&topic, 3, WAIT).await;
    assert_eq!(records.len(), 3);
    let rows = influx_rows(&db, "cpu").await;
    assert_same_points(&rows, &parse_records(&records));
    let first = records
        .iter()
        .find(|r| r.value_str().contains("host=a"))
        .unwrap();
    assert_eq!(
        first.value_str(),
        "cpu,host=a,region=eu usage=1.5,count=3i,ok=true,msg=\"hello world\" 1700000000000000000"
    );
    assert_eq!(first.key_str(), "cpu,host=a,region=eu");
    assert_eq!(first.headers["db"], db);
    assert_eq!(first.headers["bucket"], db);
    assert_eq!(first.headers["precision"], "ns");
    assert!(first.headers.contains_key("request-id"));
    assert!(first.headers["received-at"].parse::<i64>().unwrap() > 0);
    let escaped = records
        .iter()
        .find(|r| r.value_str().contains("host=c"))
        .unwrap();
    assert_eq!(escaped.key_str(), "cpu,host=c\\ d");
    assert_eq!(
        proxy
            .metric("influx_tee_points_total{endpoint=\"v1\",outcome=\"teed\"}")
            .await,
        3.0
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_precision_is_scaled_to_nanoseconds_in_kafka() {
    require_stack().await;
    let db = unique("v1s");
    let topic = unique("it.v1s");
    create_database(&db).await;
    let proxy = start_proxy(config(&influxdb_url(), &topic)).await;
    let response = post(
        proxy.url(&format!("/write?db={db}&rp=autogen&precision=s")),
        "mem,host=a used=10i 1700000000\nmem,host=b used=11i 1700000001\n",
    )
    .await;
    assert_eq!(response.status(), 204);
    let records = kafka_records(&topic, 2, WAIT).await;
    let teed = parse_records(&records);
    assert_same_points(&influx_rows(&db, "mem").await, &teed);
    assert!(teed.iter().any(|p| p.time == 1_700_000_000_000_000_000));
    assert_eq!(records[0].headers["bucket"], format!("{db}/autogen"));
    assert_eq!(records[0].headers["precision"], "s");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_without_time_get_the_same_stamp_in_influxdb_and_kafka() {
    require_stack().await;
    let db = unique("stamp");
    let topic = unique("it.stamp");
    create_database(&db).await;
    let proxy = start_proxy(config(&influxdb_url(), &topic)).await;
    let before = now_ns();
    let response = post(
        proxy.url(&format!("/write?db={db}&precision=ms")),
        "disk,path=/ used=1i\ndisk,path=/var used=2i   \ndisk,path=/tab used=4i \t\ndisk,path=/tmp used=3i 1700000000000\n",
    )
    .await;
    assert_eq!(response.status(), 204);
    let after = now_ns();
    let records = kafka_records(&topic, 4, WAIT).await;
    let teed = parse_records(&records);
    assert_same_points(&influx_rows(&db, "disk").await, &teed);
    let stamped: Vec<i64> = teed
        .iter()
        .filter(|p| p.tags["path"] != "/tmp")
        .map(|p| p.time)
        .collect();
    assert_eq!(stamped.len(), 3);
    assert!(
        stamped.iter().all(|t| *t == stamped[0]),
        "one stamp per request"
    );
    assert_eq!(
        stamped[0] % 1_000_000,
        0,
        "stamp truncated to the request's precision"
    );
    assert!(stamped[0] >= before - 1_000_000 && stamped[0] <= after);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_mode_leaves_time_to_influxdb() {
    require_stack().await;
    let db = unique("pass");
    let topic = unique("it.pass");
    create_database(&db).await;
    let mut config = config(&influxdb_url(), &topic);
    config.timestamps = TimestampMode::Passthrough;
    let proxy = start_proxy(config).await;
    let response = post(proxy.url(&format!("/write?db={db}")), "up v=1i").await;
    assert_eq!(response.status(), 204);
    let records = kafka_records(&topic, 1, WAIT).await;
    assert_eq!(records.len(), 1);
    assert_eq!(influx_rows(&db, "up").await.len(), 1);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_bodies_are_read_and_forwarded() {
    require_stack().await;
    let db = unique("gz");
    let topic = unique("it.gz");
    create_database(&db).await;
    let proxy = start_proxy(config(&influxdb_url(), &topic)).await;
    let timed: String = (0..200)
        .map(|i| format!("net,if=eth{i} rx={i}i,tx={}i 17000000000000{i:05}\n", i * 2))
        .collect();
    let response = http()
        .post(proxy.url(&format!("/write?db={db}")))
        .header("Content-Encoding", "gzip")
        .body(gzip(timed.as_bytes()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    // Lines without a time make the proxy forward a stamped, decompressed body.
    let response = http()
        .post(proxy.url(&format!("/write?db={db}")))
        .header("Content-Encoding", "gzip")
        .body(gzip(b"net,if=lo rx=1i,tx=1i\n"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let records = kafka_records(&topic, 201, WAIT).await;
    assert_eq!(records.len(), 201);
    assert_same_points(&influx_rows(&db, "net").await, &parse_records(&records));

    let response = http()
        .post(proxy.url(&format!("/write?db={db}")))
        .header("Content-Encoding", "gzip")
        .body("not gzip at all")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.headers().contains_key("x-influxdb-error"));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_partial_write_tees_exactly_what_influxdb_stored() {
    require_stack().await;
    let db = unique("partial");
    let topic = unique("it.partial");
    create_database(&db).await;
    let proxy = start_proxy(config(&influxdb_url(), &topic)).await;

    // A bad number and an unsigned integer, which InfluxDB 1.x refuses, between good lines.
    let body = "app,id=1 v=1 1700000000000000001\n\
                app,id=2 v=1.1.1 1700000000000000002\n\
                app,id=3 v=3 1700000000000000003\n\
                app,id=4 v=4u 1700000000000000004\n\
                app,id=5 v=5 1700000000000000005\n";
    let response = post(proxy.url(&format!("/write?db={db}")), body).await;
    assert_eq!(response.status(), 400);
    let error: serde_json::Value = response.json().await.unwrap();
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .starts_with("partial write"),
        "{error}"
    );

    // A field type conflict: InfluxDB drops that point after parsing it.
    // Asked for MessagePack (as the Python `influxdb` client does), InfluxDB 1.x answers
    // in it; the proxy must still read the verdict.
    let body = "app,id=6 v=6i 1700000000000000006\napp,id=7 w=7 1700000000000000007\n";
    let response = http()
        .post(proxy.url(&format!("/write?db={db}")))
        .header("Accept", "application/x-msgpack")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(response.headers()["content-type"], "application/x-msgpack");
    let error = response.headers()["x-influxdb-error"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(error.contains("field type conflict"), "{error}");

    // The storage layer drops a point with a `time` tag and one whose only field is
    // `time`, naming just the first in its answer.
    let body = "app,id=8,time=x v=8 1700000000000000008\n\
                app,id=9 time=9 1700000000000000009\n\
                app,id=10 v=10 1700000000000000010\n";
    let response = post(proxy.url(&format!("/write?db={db}")), body).await;
    assert_eq!(response.status(), 400);
    let error: serde_json::Value = response.json().await.unwrap();
    let error = error["error"].as_str().unwrap();
    assert!(
        error.contains("invalid tag key") && error.ends_with("dropped=2"),
        "{error}"
    );

    let records = kafka_records(&topic, 5, WAIT).await;
    let teed = parse_records(&records);
    let rows = influx_rows(&db, "app").await;
    assert_same_points(&rows, &teed);
    let mut ids: Vec<&str> = teed.iter().map(|p| p.tags["id"].as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["1", "10", "3", "5", "7"]);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_write_reaches_victoriametrics_and_kafka_with_equal_values() {
    require_stack().await;
    let measurement = unique("vmcpu");
    let bucket = unique("bucket");
    let topic = unique("it.v2");
    let proxy = start_proxy(config(&victoria_url(), &topic)).await;
    let base = now_ns() / 1_000_000 * 1_000_000 - 60_000_000_000;
    let body: String = (0..50)
        .map(|i| {
            format!(
                "{measurement},host=h{} load={}.5,procs={i}i {}\n",
                i % 5,
                i,
                base + i * 1_000_000
            )
        })
        .collect();
    let response = http()
        .post(proxy.url(&format!(
            "/api/v2/write?org=acme&bucket={bucket}&precision=ns"
        )))
        .header("Authorization", "Token secret-token")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let records = kafka_records(&topic, 50, WAIT).await;
    assert_eq!(records.len(), 50);
    assert_eq!(records[0].headers["org"], "acme");
    assert_eq!(records[0].headers["bucket"], bucket);

    let samples = victoria_samples(&measurement).await;
    assert_eq!(samples.len(), 100, "50 points x 2 fields");
    for point in parse_records(&records) {
        for (field, value) in &point.fields {
            let name = format!("{measurement}_{field}");
            let found = samples.iter().any(|s| {
                s.name == name
                    && s.labels.get("host") == point.tags.get("host")
                    && s.time_ms == point.time / 1_000_000
                    && Some(s.value) == value.as_f64()
            });
            assert!(
                found,
                "VictoriaMetrics lacks {name} {value} at {} for {:?}",
                point.time, point.tags
            );
        }
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_only_gateway_answers_like_influxdb_2() {
    require_stack().await;
    let topic = unique("it.none");
    let proxy = start_proxy(config("none", &topic)).await;
    let response = post(
        proxy.url("/api/v2/write?org=o&bucket=b"),
        "gw v=1 1\ngw v=2 2\n",
    )
    .await;
    assert_eq!(response.status(), 204);
    // One bad line rejects the whole v2 request, as InfluxDB 2.x does: same status and
    // body as a real InfluxDB 2.7, reserved tag keys included.
    let bucket = unique("gw");
    create_bucket(&bucket).await;
    for body in [
        "gw v=3 3\ngw v=1.1.1 4\n",
        "gw v=5 5\ngw,_field=x v=6 6\n",
        "gw,time=t v=7 7\n",
    ] {
        let ours = post(proxy.url("/api/v2/write?org=o&bucket=b"), body).await;
        let real = http()
            .post(format!(
                "{}/api/v2/write?org={INFLUX2_ORG}&bucket={bucket}",
                influxdb2_url()
            ))
            .header("Authorization", format!("Token {INFLUX2_TOKEN}"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(real.status(), 400, "{body:?}");
        assert_eq!(ours.status(), real.status(), "{body:?}");
        let ours: serde_json::Value = ours.json().await.unwrap();
        let real: serde_json::Value = real.json().await.unwrap();
        assert_eq!(ours, real, "{body:?}");
    }
    let records = kafka_records(&topic, 2, WAIT).await;
    let values: Vec<&str> = records.iter().map(|r| r.value_str()).collect();
    assert_eq!(records.len(), 2, "{values:?}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_answers_503_and_tees_nothing() {
    require_stack().await;
    let topic = unique("it.down");
    let proxy = start_proxy(config(&format!("http://{}", dead_address()), &topic)).await;
    let response = post(proxy.url("/write?db=x"), "m v=1 1\n").await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert!(response.headers().contains_key("x-influxdb-error"));
    let error: serde_json::Value = response.json().await.unwrap();
    assert!(error["error"].as_str().is_some());

    let response = post(proxy.url("/api/v2/write?org=o&bucket=b"), "m v=1 1\n").await;
    assert_eq!(response.status(), 503);
    let error: serde_json::Value = response.json().await.unwrap();
    assert_eq!(error["code"], "unavailable");

    assert!(kafka_records(&topic, 0, Duration::from_secs(3))
        .await
        .is_empty());
    assert_eq!(
        proxy
            .metric("influx_tee_kafka_records_total{outcome=\"enqueued\"}")
            .await,
        0.0
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_down_with_ack_all_answers_503() {
    require_stack().await;
    let db = unique("kdown");
    create_database(&db).await;
    let mut config = config(&influxdb_url(), "it.kdown");
    config.kafka.brokers = dead_address().to_string();
    config.kafka.ack = AckMode::All;
    config.kafka.ack_timeout_ms = 5_000;
    config
        .kafka
        .properties
        .insert("message.timeout.ms".into(), "2000".into());
    let proxy = start_proxy(config).await;
    let response = post(proxy.url(&format!("/write?db={db}")), "k v=1 1\n").await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let error: serde_json::Value = response.json().await.unwrap();
    assert!(
        error["error"].as_str().unwrap().contains("Kafka"),
        "{error}"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_all_answers_after_kafka_acknowledged() {
    require_stack().await;
    let db = unique("ackall");
    let topic = unique("it.ackall");
    create_database(&db).await;
    let mut config = config(&influxdb_url(), &topic);
    config.kafka.ack = AckMode::All;
    let proxy = start_proxy(config).await;
    let response = post(proxy.url(&format!("/write?db={db}")), "a v=1 1\na v=2 2\n").await;
    assert_eq!(response.status(), 204);
    assert_eq!(
        proxy
            .metric("influx_tee_kafka_records_total{outcome=\"delivered\"}")
            .await,
        2.0
    );
    assert_eq!(kafka_records(&topic, 2, WAIT).await.len(), 2);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_and_batch_record_formats() {
    require_stack().await;
    let db = unique("fmt");
    create_database(&db).await;
    // InfluxDB skips a field named `time`; a JSON record leaves it out too.
    let body = "fmt,b=2,a=1 f=1.5,i=2i,s=\"x\",time=9i,t=true 1700000000000000000\nfmt,a=3 f=2 1700000000000000001\n";

    let json_topic = unique("it.json");
    let mut config = config(&influxdb_url(), &json_topic);
    config.kafka.format = RecordFormat::Json;
    let proxy = start_proxy(config).await;
    let response = post(proxy.url(&format!("/write?db={db}")), body).await;
    assert_eq!(response.status(), 204);
    let records = kafka_records(&json_topic, 2, WAIT).await;
    let first = records
        .iter()
        .find(|r| r.key_str() == "fmt,a=1,b=2")
        .expect("keyed by series");
    assert_eq!(
        first.value_str(),
        r#"{"fields":{"f":1.5,"i":2,"s":"x","t":true},"name":"fmt","tags":{"a":"1","b":"2"},"timestamp":1700000000000000000}"#
    );
    proxy.stop().await;

    let batch_topic = unique("it.batch");
    let mut config = common::config(&influxdb_url(), &batch_topic);
    config.kafka.format = RecordFormat::Batch;
    let proxy = start_proxy(config).await;
    let response = post(proxy.url(&format!("/write?db={db}")), body).await;
    assert_eq!(response.status(), 204);
    let records = kafka_records(&batch_topic, 1, WAIT).await;
    assert_eq!(records.len(), 1);
    assert_eq!(
        records[0].value_str(),
        // Without the `time` field InfluxDB skipped.
        "fmt,b=2,a=1 f=1.5,i=2i,s=\"x\",t=true 1700000000000000000\nfmt,a=3 f=2 1700000000000000001"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_413_in_the_endpoint_dialect() {
    require_stack().await;
    let mut config = config(&influxdb_url(), "it.big");
    config.max_body_bytes = 1024;
    let proxy = start_proxy(config).await;
    let big = "m v=1 1\n".repeat(200);
    let response = post(proxy.url("/api/v2/write?org=o&bucket=b"), big.clone()).await;
    assert_eq!(response.status(), 413);
    let error: serde_json::Value = response.json().await.unwrap();
    assert_eq!(error["code"], "request too large");
    // Small on the wire, big once decompressed.
    let response = http()
        .post(proxy.url("/write?db=x"))
        .header("Content-Encoding", "gzip")
        .body(gzip(big.repeat(100).as_bytes()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert!(response.headers().contains_key("x-influxdb-error"));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_and_ping_pass_through() {
    require_stack().await;
    let db = unique("q");
    create_database(&db).await;
    let proxy = start_proxy(config(&influxdb_url(), &unique("it.q"))).await;
    let ping = http().get(proxy.url("/ping")).send().await.unwrap();
    assert_eq!(ping.status(), 204);
    let direct = http()
        .get(format!("{}/ping", influxdb_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        ping.headers().get("x-influxdb-version"),
        direct.headers().get("x-influxdb-version")
    );
    let response = http()
        .get(proxy.url("/query"))
        .query(&[("q", "SHOW DATABASES")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.text().await.unwrap().contains(&db));
    // InfluxDB's own diagnostics and unknown routes pass through too (the proxy's
    // metrics live on the admin listener).
    for path in ["/debug/vars", "/metrics", "/no-such-route"] {
        let through = http().get(proxy.url(path)).send().await.unwrap();
        let straight = http()
            .get(format!("{}{path}", influxdb_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(through.status(), straight.status(), "{path}");
        assert_eq!(
            through.headers().get("content-type"),
            straight.headers().get("content-type"),
            "{path}"
        );
        let body = through.text().await.unwrap();
        match path {
            "/debug/vars" => assert!(body.contains("\"memstats\""), "{path}"),
            "/metrics" => assert!(body.contains("go_goroutines"), "{path}"),
            _ => assert_eq!(body, straight.text().await.unwrap(), "{path}"),
        }
    }
    let ready = http().get(proxy.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_influxdb_client_writes_through_the_proxy() {
    require_stack().await;
    let measurement = unique("pyclient");
    let topic = unique("it.py");
    let proxy = start_proxy(config(&victoria_url(), &topic)).await;
    let base = now_ns() / 1_000_000 * 1_000_000 - 120_000_000_000;
    let url = proxy.url("");
    let base = base.to_string();
    let args = [
        url.as_str(),
        "acme",
        "pybucket",
        "token",
        &measurement,
        "400",
        &base,
    ];
    assert_eq!(run_python_client("python_v2_write.py", &args).await, "400");

    let records = kafka_records(&topic, 400, WAIT).await;
    assert_eq!(records.len(), 400);
    let teed = parse_records(&records);
    let samples = victoria_samples(&format!("{measurement}_value")).await;
    assert_eq!(samples.len(), 400);
    for point in &teed {
        let value = point.fields["value"].as_f64().unwrap();
        assert!(
            samples
                .iter()
                .any(|s| s.time_ms == point.time / 1_000_000 && s.value == value),
            "VictoriaMetrics lacks {point:?}"
        );
    }
    assert!(
        teed.iter().any(|p| p.tags["api"] == "batch"),
        "the batching write API was used"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_pass_through_and_rejected_writes_are_not_teed() {
    require_stack().await;
    let db = unique("auth");
    let topic = unique("it.auth");
    create_auth_database(&db).await;
    let proxy = start_proxy(config(&influxdb_auth_url(), &topic)).await;
    let write = |body: &'static str| {
        http()
            .post(proxy.url(&format!("/write?db={db}")))
            .body(body)
    };

    // The Authorization header reaches InfluxDB unchanged.
    let response = write("sec,via=header v=1 1\n")
        .basic_auth(INFLUX_AUTH_USER, Some(INFLUX_AUTH_PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    // So do the v1 `u` and `p` parameters.
    let response = post(
        proxy.url(&format!(
            "/write?db={db}&u={INFLUX_AUTH_USER}&p={INFLUX_AUTH_PASSWORD}"
        )),
        "sec,via=params v=2 2\n",
    )
    .await;
    assert_eq!(response.status(), 204);

    // Wrong or missing credentials: InfluxDB's own 401, headers and body, and nothing teed.
    let direct = http()
        .post(format!("{}/write?db={db}", influxdb_auth_url()))
        .basic_auth(INFLUX_AUTH_USER, Some("wrong"))
        .body("sec,via=wrong v=3 3\n")
        .send()
        .await
        .unwrap();
    let proxied = write("sec,via=wrong v=3 3\n")
        .basic_auth(INFLUX_AUTH_USER, Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(proxied.status(), 401);
    for header in [
        "www-authenticate",
        "x-influxdb-version",
        "x-influxdb-build",
        "content-type",
    ] {
        assert_eq!(
            proxied.headers().get(header),
            direct.headers().get(header),
            "{header}"
        );
    }
    assert!(proxied.headers().contains_key("request-id"));
    assert_eq!(proxied.text().await.unwrap(), direct.text().await.unwrap());
    let response = write("sec,via=none v=4 4\n").send().await.unwrap();
    assert_eq!(response.status(), 401);

    let records = kafka_records(&topic, 2, WAIT).await;
    let mut via: Vec<String> = parse_records(&records)
        .into_iter()
        .map(|p| p.tags["via"].clone())
        .collect();
    via.sort();
    assert_eq!(via, ["header", "params"]);
    assert_eq!(
        proxy
            .metric("influx_tee_points_total{endpoint=\"v1\",outcome=\"not_teed\"}")
            .await,
        2.0
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_writes_are_translated_for_influxdb_before_1_8() {
    require_stack().await;
    let db = unique("v2on1");
    let topic = unique("it.v2on1");
    create_database(&db).await;
    let proxy = start_proxy(config(&influxdb_url(), &topic)).await;
    let write = |query: String, body: &'static str| {
        http()
            .post(proxy.url(&format!("/api/v2/write?{query}")))
            .body(body)
    };

    let response = write(
        format!("org=o&bucket={db}/autogen&precision=s"),
        "tr,k=a v=1i 1700000000\n",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), 204);
    // A bad line: InfluxDB 1.x stores the good one, and says so in the v2 dialect.
    let response = write(
        format!("org=o&bucket={db}"),
        "tr,k=b v=2i 1700000001000000000\ntr,k=c v=1.1.1\n",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), 400);
    let error: serde_json::Value = response.json().await.unwrap();
    assert_eq!(error["code"], "invalid");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .starts_with("partial write"),
        "{error}"
    );
    // A bucket that does not exist: InfluxDB's 404, in the v2 dialect.
    let response = write("org=o&bucket=no_such_db".into(), "tr v=1\n")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let error: serde_json::Value = response.json().await.unwrap();
    assert_eq!(error["code"], "not found");

    let records = kafka_records(&topic, 2, WAIT).await;
    let teed = parse_records(&records);
    assert_same_points(&influx_rows(&db, "tr").await, &teed);
    assert!(teed.iter().any(|p| p.time == 1_700_000_000_000_000_000));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_token_credentials_reach_influxdb_1x_as_user_and_password() {
    require_stack().await;
    let db = unique("v2auth");
    let topic = unique("it.v2auth");
    create_auth_database(&db).await;
    let proxy = start_proxy(config(&influxdb_auth_url(), &topic)).await;
    let url = proxy.url(&format!("/api/v2/write?org=o&bucket={db}"));
    let token = format!("Token {INFLUX_AUTH_USER}:{INFLUX_AUTH_PASSWORD}");
    let response = http()
        .post(&url)
        .header("Authorization", token)
        .body("ok v=1 1\n")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let wrong = format!("Token {INFLUX_AUTH_USER}:wrong");
    let response = http()
        .post(&url)
        .header("Authorization", wrong)
        .body("no v=1 2\n")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let error: serde_json::Value = response.json().await.unwrap();
    assert_eq!(error["code"], "unauthorized");
    let records = kafka_records(&topic, 1, WAIT).await;
    assert_eq!(records.len(), 1);
    assert!(records[0].value_str().starts_with("ok "));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influxdb3_write_lp_with_auto_precision() {
    require_stack().await;
    let topic = unique("it.v3");
    let proxy = start_proxy(config("none", &topic)).await;
    // precision=auto: InfluxDB 3 guesses each timestamp's unit from its size.
    let body =
        "v3m,u=s v=1 1700000000\nv3m,u=ms v=2 1700000000001\nv3m,u=ns v=3 1700000000000000002\n";
    let response = post(
        proxy.url("/api/v3/write_lp?db=metrics&precision=auto"),
        body,
    )
    .await;
    assert_eq!(response.status(), 204);
    let response = post(
        proxy.url("/api/v3/write_lp?db=metrics&precision=hour"),
        body,
    )
    .await;
    assert_eq!(response.status(), 400);
    let error: serde_json::Value = response.json().await.unwrap();
    assert!(
        error["error"].as_str().unwrap().contains("precision"),
        "{error}"
    );

    let records = kafka_records(&topic, 3, WAIT).await;
    let mut times: Vec<(String, i64)> = parse_records(&records)
        .into_iter()
        .map(|p| (p.tags["u"].clone(), p.time))
        .collect();
    times.sort();
    assert_eq!(
        times,
        [
            ("ms".to_owned(), 1_700_000_000_001_000_000),
            ("ns".to_owned(), 1_700_000_000_000_000_002),
            ("s".to_owned(), 1_700_000_000_000_000_000)
        ]
    );
    assert_eq!(records[0].headers["precision"], "auto");
    assert_eq!(records[0].headers["db"], "metrics");
    proxy.stop().await;
}
