//! Inbound TLS against the real stack: writes over https reach InfluxDB and Kafka,
//! a rotated certificate is served to new connections while open ones go on (file
//! change in process, SIGHUP in the real binary), and client certificates are enforced
//! when a CA is configured.

mod common;

use std::time::{Duration, Instant};

use common::certs::{tls_connect, TestCa};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(unique(name));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One HTTP/1.1 write on an open TLS stream; returns the status line.
async fn write_on<S: AsyncReadExt + AsyncWriteExt + Unpin>(
    stream: &mut S,
    db: &str,
    line: &str,
) -> String {
    let request = format!(
        "POST /write?db={db} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{line}",
        line.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = stream.read(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn peer_cert(stream: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> Vec<u8> {
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test]
async fn writes_over_tls_and_a_rotated_certificate_is_picked_up_without_dropping_connections() {
    require_stack().await;
    let db = unique("tls_write");
    create_database(&db).await;
    let topic = format!("{db}_t");
    let dir = temp_dir("influx-tee-tls");
    let ca = TestCa::new("influx-tee test CA");
    let first = ca.leaf("first");
    let (cert, key) = first.write(&dir, "server");
    let mut config = config(&influxdb_url(), &topic);
    config.tls.cert_file = Some(cert.clone());
    config.tls.key_file = Some(key.clone());
    config.tls.reload_interval_ms = 100;
    let proxy = start_proxy(config).await;

    let client = ca.client_config(None);
    let mut open = tls_connect(proxy.addr, client.clone())
        .await
        .expect("handshake");
    assert_eq!(peer_cert(&open), first.der().to_vec());
    let base = now_ns();
    assert!(write_on(&mut open, &db, &format!("tls v=1i {base}\n"))
        .await
        .contains("204"));

    // Plain HTTP on the TLS port is refused, not served.
    let plain = http()
        .post(proxy.url(&format!("/write?db={db}")))
        .body("tls v=9i\n")
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());

    // Rotate: new connections get the new certificate; the open one keeps writing.
    let second = ca.leaf("second");
    second.write(&dir, "server");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let fresh = tls_connect(proxy.addr, client.clone())
            .await
            .expect("handshake");
        if peer_cert(&fresh) == second.der().to_vec() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rotated certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        write_on(&mut open, &db, &format!("tls v=2i {}\n", base + 1))
            .await
            .contains("204")
    );

    // A broken replacement keeps the working certificate.
    std::fs::write(&cert, "not a certificate").unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fresh = tls_connect(proxy.addr, client.clone())
        .await
        .expect("handshake after a bad reload");
    assert_eq!(peer_cert(&fresh), second.der().to_vec());

    let records = kafka_records(&topic, 2, Duration::from_secs(30)).await;
    assert_eq!(records.len(), 2);
    assert_eq!(influx_rows(&db, "tls").await.len(), 2);
    proxy.stop().await;
}

#[tokio::test]
async fn client_certificates_are_required_when_a_ca_is_set() {
    require_stack().await;
    let db = unique("tls_mtls");
    create_database(&db).await;
    let dir = temp_dir("influx-tee-mtls");
    let ca = TestCa::new("influx-tee test CA");
    let (cert, key) = ca.leaf("server").write(&dir, "server");
    let clients = TestCa::new("client CA");
    let mut config = config(&influxdb_url(), &format!("{db}_t"));
    config.tls.cert_file = Some(cert);
    config.tls.key_file = Some(key);
    config.tls.client_ca_file = Some(clients.write(&dir, "clients"));
    let proxy = start_proxy(config).await;

    // Without a certificate, or with one from another CA: no request gets through.
    let stranger = TestCa::new("stranger").leaf("mallory");
    for client in [ca.client_config(None), ca.client_config(Some(&stranger))] {
        let outcome = match tls_connect(proxy.addr, client).await {
            Err(_) => None,
            Ok(mut stream) => {
                let _ = stream
                    .write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
                    .await;
                let mut buffer = [0u8; 64];
                match stream.read(&mut buffer).await {
                    Ok(n) if n > 0 => Some(String::from_utf8_lossy(&buffer[..n]).into_owned()),
                    _ => None,
                }
            }
        };
        assert!(
            outcome.is_none(),
            "served without a valid client certificate: {outcome:?}"
        );
    }
    let alice = clients.leaf("alice");
    let mut stream = tls_connect(proxy.addr, ca.client_config(Some(&alice)))
        .await
        .expect("handshake with a client certificate");
    assert!(write_on(&mut stream, &db, "mtls v=1i\n")
        .await
        .contains("204"));
    proxy.stop().await;
}

#[tokio::test]
async fn sighup_reloads_the_certificate_of_the_real_binary() {
    require_stack().await;
    let dir = temp_dir("influx-tee-hup");
    let ca = TestCa::new("influx-tee test CA");
    let first = ca.leaf("first");
    let (cert, key) = first.write(&dir, "server");
    let port = free_port();
    let admin = free_port();
    let config_path = dir.join("influx-tee.toml");
    std::fs::write(
        &config_path,
        format!(
            "listen = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n\
             [upstream]\nurl = \"{}\"\n[kafka]\nbrokers = \"{}\"\n[spool]\ndir = \"{}\"\n\
             [tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nreload_interval_ms = 3600000\n",
            influxdb_url(),
            kafka_brokers(),
            dir.join("spool").display(),
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_influx-tee"))
        .args(["serve", "--config"])
        .arg(&config_path)
        .stderr(std::fs::File::create(dir.join("log")).unwrap())
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let client = ca.client_config(None);
    let deadline = Instant::now() + Duration::from_secs(30);
    let open = loop {
        if let Ok(stream) = tls_connect(addr, client.clone()).await {
            break stream;
        }
        assert!(Instant::now() < deadline, "the proxy did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(peer_cert(&open), first.der().to_vec());
    let second = ca.leaf("second");
    second.write(&dir, "server");
    // The hour-long poll cannot be what reloads it: SIGHUP does.
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let fresh = tls_connect(addr, client.clone()).await.expect("handshake");
        if peer_cert(&fresh) == second.der().to_vec() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload the certificate"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP stopped the proxy"
    );
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    let log = std::fs::read_to_string(dir.join("log")).unwrap();
    assert!(log.contains("tls certificate reloaded"), "{log}");
}

/// An InfluxDB 2.7 of this test's own, serving only https with a certificate from `ca`.
struct TlsInfluxdb2 {
    child: std::process::Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Drop for TlsInfluxdb2 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TlsInfluxdb2 {
    async fn start(ca: &TestCa) -> TlsInfluxdb2 {
        let dir = temp_dir("influxdb2-tls");
        let (cert, key) = ca.leaf("influxdb").write(&dir, "influxdb");
        let port = free_port();
        let child = std::process::Command::new(cached_tool("influxdb2/v2.7.12/influxd"))
            .env("INFLUXD_CONFIG_PATH", &dir)
            .arg("--bolt-path")
            .arg(dir.join("influxd.bolt"))
            .arg("--engine-path")
            .arg(dir.join("engine"))
            .arg("--sqlite-path")
            .arg(dir.join("influxd.sqlite"))
            .arg("--http-bind-address")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .args(["--reporting-disabled", "--log-level", "error"])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("influxd.log")).unwrap())
            .spawn()
            .unwrap();
        let influx = TlsInfluxdb2 { child, port, dir };
        let client = influx.client(ca);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ping = client.get(influx.url("/ping")).send().await;
            if ping.is_ok_and(|r| r.status() == 204) {
                break;
            }
            assert!(Instant::now() < deadline, "influxd with TLS did not start");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let setup = client
            .post(influx.url("/api/v2/setup"))
            .json(&serde_json::json!({
                "username": "admin", "password": "admin-password", "org": INFLUX2_ORG,
                "bucket": "tls", "token": INFLUX2_TOKEN, "retentionPeriodSeconds": 0
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(setup.status(), 201, "onboarding");
        influx
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }

    /// A reqwest client is plain-HTTP only here, so this one goes through hyper-rustls.
    fn client(&self, ca: &TestCa) -> HttpsClient {
        HttpsClient::new(ca)
    }
}

/// A tiny https client over hyper-rustls, trusting the test CA.
struct HttpsClient {
    inner: hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        http_body_util::Full<bytes::Bytes>,
    >,
}

struct HttpsRequest<'c> {
    client: &'c HttpsClient,
    builder: http::request::Builder,
    body: bytes::Bytes,
}

impl HttpsClient {
    fn new(ca: &TestCa) -> HttpsClient {
        let config = (*ca.client_config(None)).clone();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_only()
            .enable_http1()
            .build();
        HttpsClient {
            inner:
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build(connector),
        }
    }

    fn get(&self, url: String) -> HttpsRequest<'_> {
        HttpsRequest {
            client: self,
            builder: http::Request::get(url),
            body: bytes::Bytes::new(),
        }
    }

    fn post(&self, url: String) -> HttpsRequest<'_> {
        HttpsRequest {
            client: self,
            builder: http::Request::post(url),
            body: bytes::Bytes::new(),
        }
    }
}

impl HttpsRequest<'_> {
    fn json(mut self, value: &serde_json::Value) -> Self {
        self.builder = self.builder.header("content-type", "application/json");
        self.body = serde_json::to_vec(value).unwrap().into();
        self
    }

    fn header(mut self, name: &str, value: &str) -> Self {
        self.builder = self.builder.header(name, value);
        self
    }

    async fn send(self) -> Result<http::Response<bytes::Bytes>, String> {
        use http_body_util::BodyExt;
        let request = self
            .builder
            .body(http_body_util::Full::new(self.body))
            .map_err(|e| e.to_string())?;
        let response = self
            .client
            .inner
            .request(request)
            .await
            .map_err(|e| e.to_string())?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(http::Response::from_parts(parts, body))
    }
}

#[tokio::test]
async fn writes_reach_an_https_only_influxdb_2_7() {
    require_stack().await;
    let ca = TestCa::new("upstream CA");
    let influx = TlsInfluxdb2::start(&ca).await;
    let topic = unique("tls_upstream");
    let mut config = config(&influx.url(""), &topic);
    config.upstream.ca_file = Some(ca.write(&influx.dir, "ca"));
    let proxy = start_proxy(config).await;

    let base = now_ns();
    let body = format!(
        "secure,host=a v=1i {base}\nsecure,host=b v=2i {}\n",
        base + 1
    );
    let answer = http()
        .post(proxy.url(&format!("/api/v2/write?org={INFLUX2_ORG}&bucket=tls")))
        .header("Authorization", format!("Token {INFLUX2_TOKEN}"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 204, "{:?}", answer.text().await);
    let records = kafka_records(&topic, 2, Duration::from_secs(30)).await;
    assert_eq!(records.len(), 2);

    // What InfluxDB stored, read back over https with the same token.
    let query = influx
        .client(&ca)
        .get(influx.url("/query?db=tls&epoch=ns&q=SELECT%20*%20FROM%20secure"))
        .header("Authorization", &format!("Token {INFLUX2_TOKEN}"))
        .send()
        .await
        .unwrap();
    let stored: serde_json::Value = serde_json::from_slice(query.body()).unwrap();
    let values = stored["results"][0]["series"][0]["values"]
        .as_array()
        .unwrap();
    assert_eq!(values.len(), 2, "{stored}");

    // Pass-through over TLS too; and an upstream whose CA we do not trust is unavailable.
    let ping = http().get(proxy.url("/ping")).send().await.unwrap();
    assert_eq!(ping.status(), 204);
    assert!(ping.headers()["x-influxdb-version"]
        .to_str()
        .unwrap()
        .starts_with("v2.7"));
    proxy.stop().await;

    let untrusted = start_proxy(config_without_ca(&influx.url(""), &topic)).await;
    let answer = http()
        .post(untrusted.url(&format!("/api/v2/write?org={INFLUX2_ORG}&bucket=tls")))
        .header("Authorization", format!("Token {INFLUX2_TOKEN}"))
        .body(format!("secure,host=c v=3i {}\n", base + 2))
        .send()
        .await
        .unwrap();
    assert_eq!(
        answer.status(),
        503,
        "a certificate nobody vouches for is not trusted"
    );
    untrusted.stop().await;
}

fn config_without_ca(upstream: &str, topic: &str) -> influx_tee::config::Config {
    config(upstream, topic)
}

/// InfluxDB has no client-certificate option, so the https upstream that demands one is
/// a second influx-tee with `client_ca_file`, in front of the real InfluxDB 1.6.
#[tokio::test]
async fn an_upstream_that_demands_a_client_certificate_gets_one() {
    require_stack().await;
    let db = unique("tls_client_cert");
    create_database(&db).await;
    let dir = temp_dir("influx-tee-upstream-mtls");
    let ca = TestCa::new("both sides");
    let (cert, key) = ca.leaf("front").write(&dir, "front");
    let mut front = config(&influxdb_url(), &format!("{db}_front"));
    front.tls.cert_file = Some(cert);
    front.tls.key_file = Some(key);
    front.tls.client_ca_file = Some(ca.write(&dir, "ca"));
    let front = start_proxy(front).await;
    let front_url = format!("https://localhost:{}", front.addr.port());

    let topic = format!("{db}_t");
    let (client_cert, client_key) = ca.leaf("edge").write(&dir, "edge");
    let mut edge = config(&front_url, &topic);
    edge.upstream.ca_file = Some(dir.join("ca.crt"));
    edge.upstream.client_cert_file = Some(client_cert);
    edge.upstream.client_key_file = Some(client_key);
    let edge = start_proxy(edge).await;
    let answer = post(
        edge.url(&format!("/write?db={db}")),
        format!("mtls v=1i {}\n", now_ns()),
    )
    .await;
    assert_eq!(answer.status(), 204);
    assert_eq!(
        kafka_records(&topic, 1, Duration::from_secs(30))
            .await
            .len(),
        1
    );
    assert_eq!(influx_rows(&db, "mtls").await.len(), 1);

    // Without the certificate the front refuses the edge: the write is not stored.
    let mut bare = config(&front_url, &format!("{db}_bare"));
    bare.upstream.ca_file = Some(dir.join("ca.crt"));
    let bare = start_proxy(bare).await;
    let answer = post(bare.url(&format!("/write?db={db}")), "mtls v=2i\n").await;
    assert_eq!(answer.status(), 503);
    assert_eq!(influx_rows(&db, "mtls").await.len(), 1);
    for proxy in [edge, bare, front] {
        proxy.stop().await;
    }
}
