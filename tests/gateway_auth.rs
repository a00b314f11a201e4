//! Gateway authorisation (`upstream = "none"`): only listed tokens write, each only
//! its buckets; credentials are read, and refusals answered, as the real InfluxDB 2.7
//! of the stack reads and answers them; nothing refused reaches Kafka; no token is logged.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use influx_tee::http::gateway_auth::{hash_token, GatewayConfig, TokenEntry};

const WAIT: Duration = Duration::from_secs(30);

fn entry(token: &str, buckets: &[&str]) -> TokenEntry {
    TokenEntry {
        sha256: hash_token(token.as_bytes()),
        buckets: buckets.iter().map(|b| b.to_string()).collect(),
        name: None,
    }
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

/// The id of a bucket of the stack's InfluxDB 2.7, and its org's.
async fn bucket_ids(name: &str) -> (String, String) {
    let buckets: serde_json::Value = http()
        .get(format!("{}/api/v2/buckets", influxdb2_url()))
        .query(&[("org", INFLUX2_ORG), ("name", name)])
        .header("Authorization", format!("Token {INFLUX2_TOKEN}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let bucket = &buckets["buckets"][0];
    (
        bucket["id"].as_str().unwrap().to_owned(),
        bucket["orgID"].as_str().unwrap().to_owned(),
    )
}

/// A token of InfluxDB 2.7 that may write `allowed` and only read `other` (so its
/// v1 `/write` finds the other's DBRP mapping and answers 403, not 404).
async fn scoped_influx2_token(allowed: &str, other: &str) -> String {
    let (allowed_id, org_id) = bucket_ids(allowed).await;
    let (other_id, _) = bucket_ids(other).await;
    let permission = |action: &str, id: &str| serde_json::json!({ "action": action, "resource": { "type": "buckets", "id": id, "orgID": org_id } });
    let authorization: serde_json::Value = http()
        .post(format!("{}/api/v2/authorizations", influxdb2_url()))
        .header("Authorization", format!("Token {INFLUX2_TOKEN}"))
        .json(&serde_json::json!({
            "orgID": org_id,
            "description": "influx-tee gateway_auth test",
            "permissions": [permission("write", &allowed_id), permission("read", &other_id)],
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    authorization["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token created: {authorization}"))
        .to_owned()
}

/// What a client sees of an answer: status, the headers 2.7 sets, and the body.
#[derive(Debug, PartialEq)]
struct Answer {
    status: u16,
    content_type: Option<String>,
    error_code: Option<String>,
    vary: Option<String>,
    body: String,
}

async fn send(base: &str, path_and_query: &str, authorization: Option<&str>, body: &str) -> Answer {
    let mut request = http()
        .post(format!("{base}{path_and_query}"))
        .body(body.to_owned());
    if let Some(value) = authorization {
        request = request.header("Authorization", value);
    }
    let response = request.send().await.unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    Answer {
        status: response.status().as_u16(),
        content_type: header("content-type"),
        error_code: header("x-platform-error-code"),
        vary: header("vary"),
        body: response.text().await.unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listed_tokens_write_their_buckets_and_the_rest_is_refused_as_influxdb_2_7_does() {
    require_stack().await;
    let allowed = unique("gwauth_ok");
    let other = unique("gwauth_no");
    create_bucket(&allowed).await;
    create_bucket(&other).await;
    // The same token on both sides: InfluxDB 2.7's scoped token, and on the gateway an
    // entry for it naming only `allowed`.
    let token = scoped_influx2_token(&allowed, &other).await;
    let topic = unique("it.gwauth");
    let mut config = config("none", &topic);
    config.gateway = GatewayConfig {
        tokens: vec![entry(&token, &[&allowed])],
        tokens_file: None,
    };
    let proxy = start_proxy(config).await;
    let gateway = format!("http://{}", proxy.addr);
    let real = influxdb2_url();
    let v2 = |bucket: &str| format!("/api/v2/write?org={INFLUX2_ORG}&bucket={bucket}");
    let v1 = |db: &str| format!("/write?db={db}");
    let token_header = format!("Token {token}");

    // Every credential form InfluxDB 2.7 accepts, each to its allowed bucket.
    let good: Vec<(String, Option<String>, &str)> = vec![
        (v2(&allowed), Some(token_header.clone()), "good_v2_token"),
        (
            v2(&allowed),
            Some(format!("Bearer {token}")),
            "good_v2_bearer",
        ),
        (
            v2(&allowed),
            Some(format!("token {token}")),
            "good_v2_lowercase",
        ),
        (
            format!("{}&u=any&p={token}", v1(&allowed)),
            None,
            "good_v1_query",
        ),
        (v1(&allowed), Some(token_header.clone()), "good_v1_token"),
        (
            v1(&allowed),
            Some(format!("Token someone:{token}")),
            "good_v1_user_token",
        ),
        (
            v1(&allowed),
            Some(basic("someone", &token)),
            "good_v1_basic",
        ),
    ];
    for (path, authorization, measurement) in &good {
        let line = format!("{measurement} v=1");
        let ours = send(&gateway, path, authorization.as_deref(), &line).await;
        let theirs = send(&real, path, authorization.as_deref(), &line).await;
        assert_eq!(theirs.status, 204, "2.7 on {measurement}: {theirs:?}");
        assert_eq!(ours.status, 204, "{measurement}: {ours:?}");
    }

    // Missing, unknown, misplaced credentials (401) and a bucket the token may not
    // write (403): the same status, body and headers as 2.7's.
    let wrong = "Token not-a-listed-token";
    let refused: Vec<(String, Option<String>, &str)> = vec![
        (v2(&allowed), None, "no_v2_missing"),
        (v2(&allowed), Some(wrong.into()), "no_v2_unknown"),
        (v2(&allowed), Some(basic("someone", &token)), "no_v2_basic"),
        (
            format!("{}&u=any&p={token}", v2(&allowed)),
            None,
            "no_v2_query",
        ),
        (v2(&allowed), Some(format!("Bearer{token}")), "no_v2_scheme"),
        (v2(&other), Some(token_header.clone()), "no_v2_forbidden"),
        (v1(&allowed), None, "no_v1_missing"),
        (v1(&allowed), Some(wrong.into()), "no_v1_unknown"),
        (
            format!("{}&u=any&p=wrong", v1(&allowed)),
            None,
            "no_v1_query_unknown",
        ),
        (
            v1(&allowed),
            Some(format!("Bearer {token}")),
            "no_v1_bearer",
        ),
        (
            v1(&allowed),
            Some(format!("token {token}")),
            "no_v1_lowercase",
        ),
        (v1(&allowed), Some(basic(&token, "")), "no_v1_basic_user"),
        (v1(&other), Some(token_header.clone()), "no_v1_forbidden"),
        (
            v1(&other),
            Some(basic("someone", &token)),
            "no_v1_basic_forbidden",
        ),
    ];
    for (path, authorization, measurement) in &refused {
        let line = format!("{measurement} v=1");
        let ours = send(&gateway, path, authorization.as_deref(), &line).await;
        let theirs = send(&real, path, authorization.as_deref(), &line).await;
        assert!(
            matches!(theirs.status, 401 | 403),
            "2.7 on {measurement}: {theirs:?}"
        );
        assert_eq!(ours, theirs, "{measurement}");
    }
    assert!(
        proxy
            .metric(r#"influx_tee_write_requests_total{endpoint="v2",status="403"}"#)
            .await
            >= 1.0
    );

    // Kafka holds exactly the accepted writes.
    let records = kafka_records(&topic, good.len(), WAIT).await;
    let mut measurements: Vec<&str> = records
        .iter()
        .map(|r| r.value_str().split(' ').next().unwrap_or_default())
        .collect();
    measurements.sort_unstable();
    let mut expected: Vec<&str> = good.iter().map(|(_, _, m)| *m).collect();
    expected.sort_unstable();
    assert_eq!(measurements, expected);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_file_entries_and_wildcards_are_honoured() {
    require_stack().await;
    let dir = std::env::temp_dir().join(unique("influx-tee-gwauth"));
    std::fs::create_dir_all(&dir).unwrap();
    let json_file = dir.join("tokens.json");
    std::fs::write(
        &json_file,
        serde_json::json!({ "tokens": [
            { "sha256": hash_token(b"ops-token"), "buckets": ["metrics/*", "events"], "name": "ops" },
            { "sha256": hash_token(b"root-token").to_uppercase(), "buckets": ["*"] },
        ]})
        .to_string(),
    )
    .unwrap();
    let topic = unique("it.gwauthfile");
    let mut config = config("none", &topic);
    config.gateway = GatewayConfig {
        tokens: vec![entry("inline-token", &["inline"])],
        tokens_file: Some(json_file),
    };
    let proxy = start_proxy(config).await;
    let gateway = format!("http://{}", proxy.addr);
    let cases = [
        ("/write?db=metrics", "Token ops-token", 204),
        ("/write?db=metrics&rp=autogen", "Token ops-token", 204),
        (
            "/api/v2/write?org=o&bucket=metrics/week",
            "Token ops-token",
            204,
        ),
        ("/api/v2/write?org=o&bucket=events", "Token ops-token", 204),
        (
            "/api/v2/write?org=o&bucket=metricsx",
            "Token ops-token",
            403,
        ),
        ("/write?db=events&rp=autogen", "Token ops-token", 403),
        (
            "/api/v2/write?org=o&bucket=anything",
            "Token root-token",
            204,
        ),
        (
            "/api/v2/write?org=o&bucket=inline",
            "Token inline-token",
            204,
        ),
        (
            "/api/v2/write?org=o&bucket=events",
            "Token inline-token",
            403,
        ),
        ("/api/v3/write_lp?db=inline", "Bearer inline-token", 204),
        ("/api/v3/write_lp?db=events", "Bearer inline-token", 403),
        ("/api/v3/write_lp?db=inline", "Bearer unknown", 401),
        ("/api/v3/write_lp?db=inline", "bearer inline-token", 400),
    ];
    let mut accepted = 0;
    for (index, (path, authorization, status)) in cases.iter().enumerate() {
        let answer = send(
            &gateway,
            path,
            Some(authorization),
            &format!("f{index} v=1"),
        )
        .await;
        assert_eq!(answer.status, *status, "{path} {authorization}: {answer:?}");
        if *status == 204 {
            accepted += 1;
        }
        if path.starts_with("/api/v3/") && *status != 204 {
            let body: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
            assert!(body["error"].is_string(), "{answer:?}");
        }
    }
    let records = kafka_records(&topic, accepted, WAIT).await;
    let mut teed: Vec<String> = records
        .iter()
        .map(|r| {
            r.value_str()
                .split(' ')
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    teed.sort_unstable();
    let mut expected: Vec<String> = cases
        .iter()
        .enumerate()
        .filter(|(_, case)| case.2 == 204)
        .map(|(index, _)| format!("f{index}"))
        .collect();
    expected.sort_unstable();
    assert_eq!(teed, expected);
    proxy.stop().await;

    // A TOML file works the same; a broken one stops the start.
    let toml_file = dir.join("tokens.toml");
    std::fs::write(
        &toml_file,
        format!(
            "[[tokens]]\nsha256 = \"{}\"\nbuckets = [\"t\"]\n",
            hash_token(b"toml-token")
        ),
    )
    .unwrap();
    let loaded = influx_tee::http::gateway_auth::GatewayAuth::load(&GatewayConfig {
        tokens: vec![],
        tokens_file: Some(toml_file.clone()),
    })
    .unwrap()
    .unwrap();
    assert_eq!(loaded.len(), 1);
    std::fs::write(
        &toml_file,
        "[[tokens]]\nsha256 = \"abc\"\nbuckets = [\"t\"]\n",
    )
    .unwrap();
    let mut broken = common::config("none", &topic);
    broken.gateway.tokens_file = Some(toml_file);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let error = influx_tee::server::run(listener, admin, broken, async {})
        .await
        .expect_err("a bad tokens_file must stop the start");
    assert!(error.to_string().contains("64 hex digits"), "{error:#}");
}

#[test]
fn an_allow_list_with_an_upstream_is_refused_at_start() {
    let dir = std::env::temp_dir().join(unique("influx-tee-gwauth-upstream"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("influx-tee.toml");
    std::fs::write(
        &config,
        format!(
            "[upstream]\nurl = \"http://127.0.0.1:8086\"\n\
             [[gateway.tokens]]\nsha256 = \"{}\"\nbuckets = [\"*\"]\n",
            hash_token(b"x")
        ),
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_influx-tee"))
        .args(["serve", "--print-config", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("upstream = \"none\""), "{stderr}");

    // The tokens file can also come from a flag (or its env var), under the same rule.
    let tokens_file = dir.join("tokens.toml");
    let serve = |upstream: &str| {
        Command::new(env!("CARGO_BIN_EXE_influx-tee"))
            .args(["serve", "--print-config", "--upstream", upstream])
            .arg("--gateway-tokens-file")
            .arg(&tokens_file)
            .output()
            .unwrap()
    };
    let shown = serve("none");
    assert!(shown.status.success(), "{shown:?}");
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains(&format!("tokens_file = \"{}\"", tokens_file.display())),
        "{shown}"
    );
    assert!(!serve("http://127.0.0.1:8086").status.success());
}

#[test]
fn hash_token_prints_the_sha256_of_stdin() {
    let run = |input: &[u8]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_influx-tee"))
            .arg("hash-token")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    };
    // SHA-256 of "abc" (FIPS 180-2's example); one trailing newline is not the token's.
    let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\n";
    for input in [&b"abc"[..], b"abc\n", b"abc\r\n"] {
        let output = run(input);
        assert!(output.status.success());
        assert_eq!(String::from_utf8_lossy(&output.stdout), abc);
    }
    let empty = run(b"\n");
    assert_eq!(empty.status.code(), Some(2));
    assert!(empty.stdout.is_empty());
}

/// Tokens presented in every form, good and bad, never reach the log, even at trace
/// level; the open gateway warns at start that it accepts anyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_is_logged_and_an_open_gateway_warns() {
    require_stack().await;
    const GOOD: &str = "GWGOODTOKEN4e1b7";
    const BAD: &str = "GWBADTOKEN93c0a";
    let dir = std::env::temp_dir().join(unique("influx-tee-gwauth-log"));
    std::fs::create_dir_all(&dir).unwrap();
    let write_config = |name: &str, gateway: &str| {
        let path = dir.join(name);
        std::fs::write(
            &path,
            format!(
                "listen = \"127.0.0.1:{}\"\nadmin_listen = \"127.0.0.1:{}\"\n\
                 [upstream]\nurl = \"none\"\n\
                 [kafka]\nbrokers = \"{}\"\ntopic = \"{}\"\n\
                 [spool]\ndir = \"{}\"\n[log]\nlevel = \"trace\"\n{gateway}",
                free_port(),
                free_port(),
                kafka_brokers(),
                unique("it.gwauthlog"),
                dir.join(format!("spool-{name}")).display()
            ),
        )
        .unwrap();
        path
    };
    let guarded = write_config(
        "guarded.toml",
        &format!(
            "[[gateway.tokens]]\nsha256 = \"{}\"\nbuckets = [\"b\"]\nname = \"ci\"\n",
            hash_token(GOOD.as_bytes())
        ),
    );
    let mut proxy = ProxyBinary::start(&guarded, &dir.join("guarded.log")).await;
    let base = format!("http://{}", proxy.addr);
    for token in [GOOD, BAD] {
        for (path, authorization) in [
            (
                "/api/v2/write?org=o&bucket=b".to_owned(),
                Some(format!("Token {token}")),
            ),
            (
                "/api/v2/write?org=o&bucket=x".to_owned(),
                Some(format!("Bearer {token}")),
            ),
            (format!("/write?db=b&u=me&p={token}"), None),
            ("/write?db=x".to_owned(), Some(format!("Token me:{token}"))),
            ("/write?db=b".to_owned(), Some(basic("me", token))),
        ] {
            let answer = send(&base, &path, authorization.as_deref(), "m v=1").await;
            assert!(matches!(answer.status, 204 | 401 | 403), "{answer:?}");
        }
    }
    proxy.terminate(WAIT).await;
    let log = proxy.log_text();
    assert!(log.contains("gateway write refused"), "{log}");
    for secret in [GOOD, BAD] {
        assert!(!log.contains(secret), "{secret} in the log");
    }
    assert!(!log.contains("accepts writes from anyone"), "{log}");

    let open = write_config("open.toml", "");
    let mut proxy = ProxyBinary::start(&open, &dir.join("open.log")).await;
    proxy.terminate(WAIT).await;
    assert!(
        proxy.log_text().contains("accepts writes from anyone"),
        "{}",
        proxy.log_text()
    );
}
