//! Connection-level limits against the real stack: slow or silent clients are cut off
//! by the header-read and idle timeouts, the connection cap holds while the admin
//! listener still answers, HTTP/2 passes through, and header limits are InfluxDB's.
//!
//! Each test checks that a well-behaved writer keeps writing meanwhile and that what
//! it wrote is in InfluxDB and Kafka. Time bounds are generous upper bounds on when the
//! proxy acts, never races between two clocks.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the peer closes, or `limit` passes; returns what was read and whether it closed.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (seen, true),
            Ok(Ok(n)) => seen.extend_from_slice(&buffer[..n]),
            Err(_) => return (seen, false),
        }
    }
}

fn fast_limits(config: &mut influx_tee::config::Config) {
    config.http.header_read_timeout_ms = 1_000;
    config.http.idle_timeout_ms = 1_500;
}

/// A writer that must keep succeeding while the attack goes on: its points end up in
/// InfluxDB and Kafka.
async fn write_and_check(proxy: &TestProxy, db: &str, topic: &str, n: usize) {
    let base = now_ns();
    for i in 0..n {
        let body = format!("good,writer=w v={i}i {}\n", base + i as i64);
        let answer = post(proxy.url(&format!("/write?db={db}")), body).await;
        assert_eq!(answer.status(), 204, "the well-behaved writer was refused");
    }
    let records = kafka_records(topic, n, Duration::from_secs(30)).await;
    assert_eq!(records.len(), n, "Kafka holds every acknowledged point");
    assert_eq!(
        influx_rows(db, "good").await.len(),
        n,
        "InfluxDB holds every point"
    );
}

#[tokio::test]
async fn slow_and_silent_clients_are_cut_off_while_writers_write() {
    require_stack().await;
    let db = unique("conn_slow");
    create_database(&db).await;
    let topic = format!("{db}_t");
    let mut config = config(&influxdb_url(), &topic);
    fast_limits(&mut config);
    let proxy = start_proxy(config).await;

    // 200 sockets: half trickle a request head a byte at a time, half say nothing.
    let started = Instant::now();
    let mut attackers = Vec::new();
    for i in 0..200 {
        let addr = proxy.addr;
        attackers.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            if i % 2 == 0 {
                let head = b"POST /write?db=x HTTP/1.1\r\nHost: a\r\nX-Slow: ";
                for byte in head.iter().cycle().take(60) {
                    if stream.write_all(&[*byte]).await.is_err() {
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            read_until_closed(&mut stream, Duration::from_secs(20))
                .await
                .1
        }));
    }
    write_and_check(&proxy, &db, &topic, 20).await;
    for attacker in attackers {
        assert!(
            attacker.await.unwrap(),
            "a slow or silent client kept its socket"
        );
    }
    // The 1 s header timeout cut them all off long before a trickle of 60 bytes (6 s) ended.
    assert!(started.elapsed() < Duration::from_secs(20));
    let cut = proxy
        .metric(
            "influx_tee_connections_closed_total{listener=\"client\",reason=\"header_timeout\"}",
        )
        .await;
    assert!(cut >= 200.0, "header timeouts counted: {cut}");
    proxy.stop().await;
}

#[tokio::test]
async fn idle_keep_alive_connections_close_and_busy_ones_stay() {
    require_stack().await;
    let db = unique("conn_idle");
    create_database(&db).await;
    let mut config = config(&influxdb_url(), &format!("{db}_t"));
    fast_limits(&mut config);
    let proxy = start_proxy(config).await;

    // A busy keep-alive connection: a request every 300 ms for 4 s is never cut,
    // though that is well past both timeouts.
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let base = now_ns();
    for i in 0..13 {
        let body = format!("busy v={i}i {}\n", base + i);
        let request = format!(
            "POST /write?db={db} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = [0u8; 1024];
        let n = stream.read(&mut answer).await.unwrap();
        let text = String::from_utf8_lossy(&answer[..n]).into_owned();
        assert!(text.starts_with("HTTP/1.1 204"), "request {i}: {text}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Then idle: closed after the idle timeout (1.5 s), well within 10 s.
    let (_, closed) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    assert!(closed, "an idle keep-alive connection was kept");
    assert_eq!(influx_rows(&db, "busy").await.len(), 13);
    let idle = proxy
        .metric("influx_tee_connections_closed_total{listener=\"client\",reason=\"idle_timeout\"}")
        .await;
    assert!(idle >= 1.0);
    proxy.stop().await;
}

#[tokio::test]
async fn at_the_connection_limit_new_sockets_close_and_readyz_answers() {
    require_stack().await;
    let db = unique("conn_cap");
    create_database(&db).await;
    let topic = format!("{db}_t");
    let mut config = config(&influxdb_url(), &topic);
    config.http.max_connections = 20;
    let proxy = start_proxy(config).await;

    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(TcpStream::connect(proxy.addr).await.unwrap());
    }
    // Let the proxy accept all 20 before the 21st.
    let deadline = Instant::now() + Duration::from_secs(10);
    while proxy
        .metric("influx_tee_connections_open{listener=\"client\"}")
        .await
        < 20.0
    {
        assert!(
            Instant::now() < deadline,
            "the proxy did not accept 20 connections"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut over = TcpStream::connect(proxy.addr).await.unwrap();
    let _ = over
        .write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let (answer, closed) = read_until_closed(&mut over, Duration::from_secs(10)).await;
    assert!(
        closed && answer.is_empty(),
        "the 21st connection was served"
    );
    let ready = http().get(proxy.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(
        ready.status(),
        200,
        "/readyz answers at the connection limit"
    );
    assert!(
        proxy
            .metric("influx_tee_connections_total{listener=\"client\",outcome=\"refused_limit\"}")
            .await
            >= 1.0
    );
    drop(held);
    // Once the held sockets are gone, writers write again.
    let deadline = Instant::now() + Duration::from_secs(10);
    while proxy
        .metric("influx_tee_connections_open{listener=\"client\"}")
        .await
        > 0.0
    {
        assert!(
            Instant::now() < deadline,
            "closed connections are still counted open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    write_and_check(&proxy, &db, &topic, 5).await;
    proxy.stop().await;
}

/// Sends one raw HTTP/1.1 request and returns the status line.
async fn raw_status(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(15)).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    text.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn header_limits_are_at_least_influxdbs() {
    require_stack().await;
    let db = unique("conn_headers");
    create_database(&db).await;
    let proxy = start_proxy(config(&influxdb_url(), &format!("{db}_t"))).await;
    let influx: std::net::SocketAddr = influxdb_url()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    for count in [101, 500] {
        let mut request =
            format!("POST /write?db={db} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
        for i in 0..count {
            request.push_str(&format!("X-Extra-{i}: {i}\r\n"));
        }
        let body = format!("hdr v={count}i\n");
        request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        let direct = raw_status(influx, request.as_bytes()).await;
        let proxied = raw_status(proxy.addr, request.as_bytes()).await;
        assert!(direct.starts_with("HTTP/1.1 204"), "InfluxDB: {direct}");
        assert_eq!(proxied, direct, "{count} header fields");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn http2_passes_through_and_a_malformed_body_gets_400() {
    require_stack().await;
    let db = unique("conn_h2");
    create_database(&db).await;
    let proxy = start_proxy(config(&influxdb_url(), &format!("{db}_t"))).await;

    // HTTP/2 with prior knowledge, as gRPC-era clients and some load balancers speak it.
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    for path in ["/ping", &format!("/query?db={db}&q=SHOW%20MEASUREMENTS")] {
        let request = http::Request::get(proxy.url(path))
            .body(http_body_util::Full::default())
            .unwrap();
        let answer = client.request(request).await.expect("h2 answer");
        assert!(answer.status().is_success(), "{path}: {}", answer.status());
        assert!(
            answer.headers().contains_key("x-influxdb-version"),
            "{path}"
        );
    }

    // Broken chunked framing on a pass-through path is the client's fault: 400, not 503.
    let status = raw_status(
        proxy.addr,
        format!(
            "POST /query?db={db} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\nzz\r\nq=1\r\n0\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert!(status.starts_with("HTTP/1.1 400"), "{status}");
    proxy.stop().await;
}

#[tokio::test]
async fn a_trickled_body_gets_408_and_nothing_is_stored() {
    require_stack().await;
    let db = unique("conn_body");
    create_database(&db).await;
    let topic = format!("{db}_t");
    let mut config = config(&influxdb_url(), &topic);
    config.http.body_idle_timeout_ms = 1_000;
    config.http.body_min_bytes_per_second = 100;
    config.http.body_min_rate_grace_ms = 1_000;
    let proxy = start_proxy(config).await;

    // A write and a pass-through upload, each trickling one byte every 300 ms: never
    // idle for a second, but far under 100 bytes/s once the grace has passed.
    for path in [format!("/write?db={db}"), format!("/query?db={db}")] {
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        let body = "slow v=1i 1600000000000000000\n".repeat(20);
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let started = Instant::now();
        let mut answer = Vec::new();
        for byte in body.bytes() {
            if stream.write_all(&[byte]).await.is_err() {
                break;
            }
            let mut buffer = [0u8; 1024];
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(300), stream.read(&mut buffer)).await
            {
                answer.extend_from_slice(&buffer[..n]);
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{path}: never cut off"
            );
        }
        let (rest, closed) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
        answer.extend_from_slice(&rest);
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 408"), "{path}: {text}");
        assert!(closed, "{path}: the connection stays open after 408");
    }
    write_and_check(&proxy, &db, &topic, 3).await;
    assert!(
        influx_rows(&db, "slow").await.is_empty(),
        "a cut-off body was stored"
    );
    proxy.stop().await;
}
