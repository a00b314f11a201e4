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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
