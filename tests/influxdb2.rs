//! Against a real InfluxDB OSS 2.7: the v2 API through the proxy behaves as it does
//! without it (statuses and bodies for success, a bad line, a wrong token, a missing
//! bucket, a partial write), and real v2 clients get the same data stored and teed.

mod common;

use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_api_answers_like_influxdb_2() {
    require_stack().await;
    let (direct, proxied) = (unique("v2_direct"), unique("v2_proxy"));
    create_bucket(&direct).await;
    create_bucket(&proxied).await;
    let topic = unique("it.influx2");
    let proxy = start_proxy(config(&influxdb2_url(), &topic)).await;
    let org = INFLUX2_ORG;

    let cases: [(&str, &str, &'static str, u16); 7] = [
        ("ok", INFLUX2_TOKEN, "m2,host=a v=1i,s=\"x\",b=true,u=7u 1700000000000000000\nm2,host=b v=2i 1700000000000000001\n", 204),
        ("bad line", INFLUX2_TOKEN, "m2,host=c v=3i 1700000000000000002\nm2,host=d v=1.1.1 1700000000000000003\n", 400),
        ("wrong token", "not-a-token", "m2,host=e v=5i 1700000000000000004\n", 401),
        ("type conflict", INFLUX2_TOKEN, "m2,host=f v=6 1700000000000000005\nm2,host=g v=7i 1700000000000000006\n", 422),
        ("missing bucket", INFLUX2_TOKEN, "m2,host=h v=8i 1700000000000000007\n", 404),
        ("reserved tag key", INFLUX2_TOKEN, "m2,host=i v=9i 1700000000000000008\nm2,host=j,_field=x v=10i 1700000000000000009\n", 400),
        ("only a time field", INFLUX2_TOKEN, "m2,host=k time=11i 1700000000000000010\nm2,host=l v=12i 1700000000000000011\n", 422),
    ];
    for (name, token, body, expected) in cases {
        let bucket_of = |b: &str| {
            if name == "missing bucket" {
                "no_such_bucket".to_owned()
            } else {
                b.to_owned()
            }
        };
        let direct_answer = both_one(
            &influxdb2_url(),
            &format!("org={org}&bucket={}", bucket_of(&direct)),
            token,
            body,
        )
        .await;
        let proxied_answer = both_one(
            &proxy.url(""),
            &format!("org={org}&bucket={}", bucket_of(&proxied)),
            token,
            body,
        )
        .await;
        assert_eq!(
            direct_answer.0, expected,
            "{name}: InfluxDB 2.7 said {direct_answer:?}"
        );
        assert_eq!(proxied_answer, direct_answer, "{name}: through the proxy");
    }

    let direct_rows = influx2_rows(&direct, "m2").await;
    let proxied_rows = influx2_rows(&proxied, "m2").await;
    assert_eq!(direct_rows.len(), 4, "a, b, g and l: {direct_rows:?}");
    assert_eq!(proxied_rows, direct_rows);
    let records = kafka_records(&topic, 4, WAIT).await;
    assert_same_points(&proxied_rows, &parse_records(&records));
    proxy.stop().await;
}

/// One write to `base`; the status and the body plus `X-Platform-Error-Code`.
async fn both_one(base: &str, query: &str, token: &str, body: &'static str) -> (u16, String) {
    let response = http()
        .post(format!("{base}/api/v2/write?{query}"))
        .header("Authorization", format!("Token {token}"))
        .body(body)
        .send()
        .await
        .unwrap();
    let platform_code = response.headers().get("x-platform-error-code").cloned();
    (
        response.status().as_u16(),
        format!("{} {platform_code:?}", response.text().await.unwrap()),
    )
}

async fn python_v2(url: &str, bucket: &str, token: &str, measurement: &str, mode: &str) -> String {
    let base = "1700000000000000000";
    let args = [
        url,
        INFLUX2_ORG,
        bucket,
        token,
        measurement,
        "300",
        base,
        mode,
    ];
    run_python_client("python_v2_write.py", &args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_influxdb_client_v2() {
    require_stack().await;
    let (direct, proxied) = (unique("py2_direct"), unique("py2_proxy"));
    create_bucket(&direct).await;
    create_bucket(&proxied).await;
    let topic = unique("it.py2");
    let proxy = start_proxy(config(&influxdb2_url(), &topic)).await;
    for (mode, token, expected) in [
        ("good", INFLUX2_TOKEN, "300"),
        ("bad", INFLUX2_TOKEN, "400"),
        ("good", "wrong", "401"),
    ] {
        let straight = python_v2(&influxdb2_url(), &direct, token, "py2", mode).await;
        let through = python_v2(&proxy.url(""), &proxied, token, "py2", mode).await;
        assert_eq!(
            straight, expected,
            "{mode}/{token} straight to InfluxDB 2.7"
        );
        assert_eq!(
            through, straight,
            "{mode}/{token}: the client saw something else through the proxy"
        );
    }
    let direct_rows = influx2_rows(&direct, "py2").await;
    let proxied_rows = influx2_rows(&proxied, "py2").await;
    assert_eq!(direct_rows.len(), 300);
    assert_eq!(proxied_rows, direct_rows);
    let records = kafka_records(&topic, 300, WAIT).await;
    assert_same_points(&proxied_rows, &parse_records(&records));
    proxy.stop().await;
}

/// The Go writer built by `deploy/local/build-go-client` (influxdb-client-go v2).
fn go_writer() -> std::path::PathBuf {
    cached_tool("go-client/writer")
}

async fn go_write(url: &str, bucket: &str, token: &str, extra: &[&str]) -> (bool, String) {
    let output = tokio::process::Command::new(go_writer())
        .args(extra)
        .args([
            "-url",
            url,
            "-token",
            token,
            "-org",
            INFLUX2_ORG,
            "-bucket",
            bucket,
        ])
        .args([
            "-measurement",
            "go2",
            "-count",
            "400",
            "-batch-size",
            "50",
            "-base",
            "1700000000000000000",
        ])
        .output()
        .await
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).trim().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_influxdb_client_v2() {
    require_stack().await;
    let (direct, proxied) = (unique("go_direct"), unique("go_proxy"));
    create_bucket(&direct).await;
    create_bucket(&proxied).await;
    let topic = unique("it.go");
    let proxy = start_proxy(config(&influxdb2_url(), &topic)).await;
    assert_eq!(
        go_write(&influxdb2_url(), &direct, INFLUX2_TOKEN, &[]).await,
        (true, "400".to_owned())
    );
    assert_eq!(
        go_write(&proxy.url(""), &proxied, INFLUX2_TOKEN, &[]).await,
        (true, "400".to_owned())
    );
    // A wrong token fails the client the same way with and without the proxy.
    let straight = go_write(&influxdb2_url(), &direct, "wrong", &[]).await;
    let through = go_write(&proxy.url(""), &proxied, "wrong", &[]).await;
    assert!(!straight.0);
    assert_eq!(through, straight);
    // A bad line: InfluxDB 2.7 refuses the whole request, and the client reports 400.
    let straight = go_write(&influxdb2_url(), &direct, INFLUX2_TOKEN, &["-bad"]).await;
    let through = go_write(&proxy.url(""), &proxied, INFLUX2_TOKEN, &["-bad"]).await;
    assert_eq!(straight, (true, "400".to_owned()));
    assert_eq!(through, straight);

    let direct_rows = influx2_rows(&direct, "go2").await;
    let proxied_rows = influx2_rows(&proxied, "go2").await;
    assert_eq!(direct_rows.len(), 400);
    assert_eq!(proxied_rows, direct_rows);
    let records = kafka_records(&topic, 400, WAIT).await;
    assert_same_points(&proxied_rows, &parse_records(&records));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_management_and_query_api_pass_through() {
    require_stack().await;
    let bucket = unique("pass2");
    create_bucket(&bucket).await;
    let proxy = start_proxy(config(&influxdb2_url(), &unique("it.pass2"))).await;
    let auth = format!("Token {INFLUX2_TOKEN}");
    let response = post(
        format!(
            "{}/api/v2/write?org={INFLUX2_ORG}&bucket={bucket}",
            proxy.url("")
        ),
        "q2,host=a v=1 1700000000000000000\n",
    )
    .await;
    assert_eq!(response.status(), 401, "no token, no write");

    for path in [
        format!("/api/v2/orgs?org={INFLUX2_ORG}"),
        format!("/api/v2/buckets?name={bucket}"),
        "/health".to_owned(),
        "/ready".to_owned(),
        "/ping".to_owned(),
        "/metrics".to_owned(),
        "/debug/pprof/".to_owned(),
        "/api/v2/no-such-route".to_owned(),
    ] {
        let get = |base: String| {
            http()
                .get(format!("{base}{path}"))
                .header("Authorization", &auth)
                .send()
        };
        let straight = get(influxdb2_url()).await.unwrap();
        let through = get(proxy.url("")).await.unwrap();
        assert_eq!(through.status(), straight.status(), "{path}");
        assert_eq!(
            through.headers().get("x-influxdb-version"),
            straight.headers().get("x-influxdb-version"),
            "{path}"
        );
        assert_eq!(
            through.headers().get("content-type"),
            straight.headers().get("content-type"),
            "{path}"
        );
        if path.starts_with("/api") {
            assert_eq!(
                through.text().await.unwrap(),
                straight.text().await.unwrap(),
                "{path}"
            );
        }
    }

    // A Flux query streams back through the proxy.
    let response = http()
        .post(format!(
            "{}/api/v2/write?org={INFLUX2_ORG}&bucket={bucket}",
            proxy.url("")
        ))
        .header("Authorization", &auth)
        .body("q2,host=a v=1 1700000000000000000\n")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let flux = format!("from(bucket: \"{bucket}\") |> range(start: 0) |> filter(fn: (r) => r._measurement == \"q2\")");
    let csv = http()
        .post(format!("{}/api/v2/query?org={INFLUX2_ORG}", proxy.url("")))
        .header("Authorization", &auth)
        .header("Content-Type", "application/vnd.flux")
        .body(flux)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        csv.contains("2023-11-14T22:13:20Z") && csv.contains(",v,q2,a"),
        "{csv}"
    );
    proxy.stop().await;
}
