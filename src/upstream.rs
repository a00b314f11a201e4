//! The real InfluxDB behind the proxy: a pooled hyper client with timeouts, header
//! hygiene for forwarding, and the `/ping` probe that tells which server it is.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, Method, Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::config::{UpstreamApi, UpstreamConfig};
use crate::metrics::Metrics;

mod head_sanitizer;
use head_sanitizer::SanitizingConnector;

/// Why a forwarded request got no answer from the upstream.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("{0}")]
    Connect(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("invalid request to upstream: {0}")]
    Request(String),
}

impl UpstreamError {
    pub fn reason(&self) -> &'static str {
        match self {
            UpstreamError::Connect(_) => "connect",
            UpstreamError::Timeout(_) => "timeout",
            UpstreamError::Request(_) => "request",
        }
    }
}

/// A buffered upstream answer: write answers are small and relayed whole.
pub struct BufferedResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl BufferedResponse {
    /// The body as text the proxy can read: InfluxDB gzips its answers to clients that
    /// accept gzip, and a write's verdict is in that body.
    pub fn decoded_body(&self) -> std::borrow::Cow<'_, [u8]> {
        let gzipped = self
            .headers
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("gzip") || v.eq_ignore_ascii_case("x-gzip"));
        if !gzipped {
            return std::borrow::Cow::Borrowed(&self.body);
        }
        // Error answers are small; a bigger or broken one is read as empty, i.e. "no verdict".
        crate::http::body::gunzip_capped(&self.body, 1024 * 1024)
            .map(|bytes| std::borrow::Cow::Owned(bytes.to_vec()))
            .unwrap_or_default()
    }
}

impl BufferedResponse {
    /// The error message of an InfluxDB answer: `error` (v1) or `message` (v2) in a JSON
    /// body, or in a MessagePack one, which 1.x sends to clients that accept it (the
    /// Python `influxdb` client does).
    pub fn error_message(&self) -> Option<String> {
        let body = self.decoded_body();
        let msgpack = self
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("msgpack"));
        if msgpack {
            return msgpack_map_str(&body, &["error", "message"]);
        }
        let value: serde_json::Value = serde_json::from_slice(&body).ok()?;
        value
            .get("error")
            .or_else(|| value.get("message"))?
            .as_str()
            .map(str::to_owned)
    }
}

impl BufferedResponse {
    /// InfluxDB 1.x puts the first 1024 bytes of an error in `X-Influxdb-Error`; the
    /// client drops that header when it holds bytes HTTP forbids (a refused line's
    /// control characters). Rebuilds it from the body as Go's server writes it (CR and
    /// LF as spaces, trimmed), with the other forbidden bytes as spaces too.
    pub fn restore_influxdb1_error_header(&mut self) {
        const NAME: &str = "x-influxdb-error";
        let from_influxdb1 = self
            .headers
            .get("X-Influxdb-Version")
            .is_some_and(|v| v.as_bytes().starts_with(b"1."));
        // 1.x answers 401 with `WWW-Authenticate` instead.
        if !from_influxdb1
            || self.status.is_success()
            || self.status == StatusCode::UNAUTHORIZED
            || self.headers.contains_key(NAME)
        {
            return;
        }
        let Some(message) = self.error_message() else {
            return;
        };
        let bytes = &message.as_bytes()[..message.len().min(1024)];
        let sanitized: Vec<u8> = bytes
            .iter()
            .map(|&b| {
                if (b < 0x20 && b != b'\t') || b == 0x7f {
                    b' '
                } else {
                    b
                }
            })
            .collect();
        let trimmed = sanitized.trim_ascii();
        if let Ok(value) = http::HeaderValue::from_bytes(trimmed) {
            self.headers.insert(NAME, value);
        }
    }
}

/// The first of `keys` found in a MessagePack map of strings to strings. Other
/// value types end the search: InfluxDB's error bodies are flat string maps.
fn msgpack_map_str(body: &[u8], keys: &[&str]) -> Option<String> {
    fn read_str(input: &mut &[u8]) -> Option<String> {
        let (&tag, rest) = input.split_first()?;
        let (len, rest) = match tag {
            0xa0..=0xbf => ((tag & 0x1f) as usize, rest),
            0xd9 => (*rest.first()? as usize, &rest[1..]),
            0xda => (
                u16::from_be_bytes(rest.get(..2)?.try_into().ok()?) as usize,
                &rest[2..],
            ),
            0xdb => (
                u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize,
                &rest[4..],
            ),
            _ => return None,
        };
        let text = String::from_utf8_lossy(rest.get(..len)?).into_owned();
        *input = &rest[len..];
        Some(text)
    }
    let (&tag, mut rest) = body.split_first()?;
    let entries = match tag {
        0x80..=0x8f => (tag & 0x0f) as usize,
        0xde => {
            let n = u16::from_be_bytes(rest.get(..2)?.try_into().ok()?) as usize;
            rest = &rest[2..];
            n
        }
        _ => return None,
    };
    for _ in 0..entries {
        let key = read_str(&mut rest)?;
        let value = read_str(&mut rest)?;
        if keys.contains(&key.as_str()) {
            return Some(value);
        }
    }
    None
}

/// What the upstream said about itself on `/ping`.
#[derive(Debug, Clone, Default)]
pub struct UpstreamIdentity {
    pub version: Option<String>,
    pub build: Option<String>,
}

/// The upstream InfluxDB.
pub struct Upstream {
    client: Client<HttpsConnector<HttpConnector>, Body>,
    /// For writes, probes and read-backs, whose answers are buffered: control bytes in
    /// their heads become spaces ([`head_sanitizer`]).
    buffered_client: Client<SanitizingConnector<HttpsConnector<HttpConnector>>, Body>,
    base: Uri,
    timeout: Duration,
    passthrough_timeout: Option<Duration>,
    configured_api: UpstreamApi,
    detected_api: AtomicU8,
    /// A 1.x upstream of 1.8 or later also serves `/api/v2/write`.
    v1_serves_v2_write: AtomicBool,
    forwarded_headers: bool,
    identity: RwLock<UpstreamIdentity>,
}

const API_UNKNOWN: u8 = 0;
const API_V1: u8 = 1;
const API_V2: u8 = 2;
const API_V3: u8 = 3;

impl Upstream {
    pub fn new(config: &UpstreamConfig) -> Result<Arc<Upstream>, UpstreamError> {
        let base = without_userinfo(
            config
                .url
                .parse()
                .map_err(|e| UpstreamError::Request(format!("{e}")))?,
        )?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_millis(config.connect_timeout_ms)));
        connector.set_nodelay(true);
        connector.set_keepalive(Some(Duration::from_secs(60)));
        // The TLS layer below takes `https://`; plain `http://` passes through it.
        connector.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(client_tls(config)?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_idle_timeout(Duration::from_millis(config.pool_idle_timeout_ms))
            .pool_max_idle_per_host(64)
            // InfluxDB 1.x copies a refused line, control bytes and all, into
            // `X-Influxdb-Error`: drop that header line rather than the whole answer
            // (the write path rebuilds it from the body).
            .http1_ignore_invalid_headers_in_responses(true);
        Ok(Arc::new(Upstream {
            buffered_client: builder.build(SanitizingConnector(connector.clone())),
            client: builder.build(connector),
            base,
            timeout: Duration::from_millis(config.timeout_ms),
            passthrough_timeout: (config.passthrough_timeout_ms > 0)
                .then(|| Duration::from_millis(config.passthrough_timeout_ms)),
            configured_api: config.api,
            detected_api: AtomicU8::new(API_UNKNOWN),
            v1_serves_v2_write: AtomicBool::new(false),
            forwarded_headers: config.forwarded_headers,
            identity: RwLock::new(UpstreamIdentity::default()),
        }))
    }

    /// The upstream URL for a client's path and query. The path's dot segments are
    /// resolved first (`%2e` counts as a dot, as the upstream decodes it), so no path
    /// reaches above the base path of `upstream.url`.
    pub fn uri_for(&self, path_and_query: &str) -> Result<Uri, UpstreamError> {
        let base_path = self.base.path().trim_end_matches('/');
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path_and_query, None),
        };
        let path = remove_dot_segments(path);
        let mut joined = String::with_capacity(base_path.len() + path_and_query.len() + 1);
        joined.push_str(base_path);
        if !path.starts_with('/') {
            joined.push('/');
        }
        joined.push_str(&path);
        if let Some(query) = query {
            joined.push('?');
            joined.push_str(query);
        }
        let mut parts = self.base.clone().into_parts();
        parts.path_and_query = Some(
            joined
                .parse()
                .map_err(|e| UpstreamError::Request(format!("{e}")))?,
        );
        Uri::from_parts(parts).map_err(|e| UpstreamError::Request(format!("{e}")))
    }

    /// Sends a request and reads the whole answer, all within the configured timeout.
    pub async fn send_buffered(
        &self,
        request: Request<Body>,
    ) -> Result<BufferedResponse, UpstreamError> {
        self.send_buffered_within(request, self.timeout).await
    }

    /// The whole-request timeout of a forwarded write (`upstream.timeout_ms`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// [`Upstream::send_buffered`] with a limit of its own.
    pub async fn send_buffered_within(
        &self,
        request: Request<Body>,
        limit: Duration,
    ) -> Result<BufferedResponse, UpstreamError> {
        self.send_capped(request, usize::MAX, limit).await
    }

    /// Sends a passed-through request and returns the answer with its body still
    /// streaming, waiting for its headers up to `upstream.passthrough_timeout_ms`.
    pub async fn send_streaming(
        &self,
        request: Request<Body>,
    ) -> Result<Response<Body>, UpstreamError> {
        let exchange = self.client.request(request);
        let response = match self.passthrough_timeout {
            Some(limit) => tokio::time::timeout(limit, exchange)
                .await
                .map_err(|_| UpstreamError::Timeout(limit))?,
            None => exchange.await,
        }
        .map_err(connect_error)?;
        self.observe(response.headers());
        Ok(response.map(Body::new))
    }

    /// Sends a request and reads at most `max_bytes` of its answer within `limit`.
    pub async fn send_capped(
        &self,
        request: Request<Body>,
        max_bytes: usize,
        limit: Duration,
    ) -> Result<BufferedResponse, UpstreamError> {
        let exchange = async {
            let response = self.request_buffered(request).await?;
            self.observe(response.headers());
            let (parts, body) = response.into_parts();
            let body = http_body_util::Limited::new(body, max_bytes)
                .collect()
                .await
                .map_err(|e| UpstreamError::Connect(e.to_string()))?
                .to_bytes();
            Ok(BufferedResponse {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(limit, exchange)
            .await
            .map_err(|_| UpstreamError::Timeout(limit))?
    }

    /// Sends on the sanitizing client, but for `HEAD`: its answer's head announces a
    /// body that does not follow, which the sanitizer cannot know.
    async fn request_buffered(
        &self,
        request: Request<Body>,
    ) -> Result<Response<hyper::body::Incoming>, UpstreamError> {
        if request.method() == Method::HEAD {
            self.client.request(request).await
        } else {
            self.buffered_client.request(request).await
        }
        .map_err(connect_error)
    }

    /// Learns the upstream's version from any answer's `X-Influxdb-Version`: a `/ping`
    /// that failed at start, or an upstream replaced behind the same address, must
    /// not leave the proxy parsing for the wrong server until the next probe.
    fn observe(&self, headers: &HeaderMap) {
        const VERSION: HeaderName = HeaderName::from_static("x-influxdb-version");
        let Some(version) = headers.get(VERSION).and_then(|v| v.to_str().ok()) else {
            return;
        };
        let known = self
            .identity
            .read()
            .is_ok_and(|identity| identity.version.as_deref() == Some(version));
        if known {
            return;
        }
        let identity = UpstreamIdentity {
            version: Some(version.to_owned()),
            build: headers
                .get("X-Influxdb-Build")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        };
        tracing::info!(version, "upstream version learnt from an answer");
        self.learn(&identity);
    }

    /// Reads `/ping` and remembers what the upstream says it is.
    pub async fn probe(&self, metrics: &Metrics) -> Result<UpstreamIdentity, UpstreamError> {
        let started = Instant::now();
        let request = Request::builder()
            .method(Method::GET)
            .uri(self.uri_for("/ping")?)
            .body(Body::empty())
            .map_err(|e| UpstreamError::Request(e.to_string()))?;
        let response = self.send_buffered(request).await;
        metrics
            .upstream_probe_seconds
            .observe(started.elapsed().as_secs_f64());
        let response = response?;
        let header = |name: &str| {
            response
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let identity = UpstreamIdentity {
            version: header("X-Influxdb-Version"),
            build: header("X-Influxdb-Build"),
        };
        self.learn(&identity);
        Ok(identity)
    }

    /// Remembers what the upstream is and which API it speaks.
    fn learn(&self, identity: &UpstreamIdentity) {
        let api = match identity.version.as_deref() {
            Some(v) if v.starts_with("1.") => API_V1,
            Some(v) if v.starts_with("v2") || v.starts_with("2.") => API_V2,
            Some(v) if v.starts_with("3.") || v.starts_with("v3") => API_V3,
            _ if identity
                .build
                .as_deref()
                .is_some_and(|b| b.to_ascii_lowercase().contains("3")) =>
            {
                API_V3
            }
            _ => API_UNKNOWN,
        };
        self.detected_api.store(api, Ordering::Relaxed);
        let serves_v2_write = identity
            .version
            .as_deref()
            .and_then(v1_minor)
            .is_some_and(|minor| minor >= 8);
        self.v1_serves_v2_write
            .store(serves_v2_write, Ordering::Relaxed);
        if let Ok(mut current) = self.identity.write() {
            *current = identity.clone();
        }
    }

    /// The API the upstream speaks: configured, else detected, else assumed v2.
    pub fn api(&self) -> UpstreamApi {
        match self.configured_api {
            UpstreamApi::Auto => match self.detected_api.load(Ordering::Relaxed) {
                API_V1 => UpstreamApi::V1,
                API_V3 => UpstreamApi::V3,
                _ => UpstreamApi::V2,
            },
            explicit => explicit,
        }
    }

    /// The API the upstream is known to speak (configured or detected), `None` while
    /// it is not identified: VictoriaMetrics, or a `/ping` that failed.
    pub fn identified_api(&self) -> Option<UpstreamApi> {
        match self.configured_api {
            UpstreamApi::Auto => match self.detected_api.load(Ordering::Relaxed) {
                API_V1 => Some(UpstreamApi::V1),
                API_V2 => Some(UpstreamApi::V2),
                API_V3 => Some(UpstreamApi::V3),
                _ => None,
            },
            explicit => Some(explicit),
        }
    }

    /// Whether v2 writes must be sent as v1 `/write`: InfluxDB 1.x before 1.8 has no
    /// `/api/v2/write`.
    pub fn translates_v2_writes(&self) -> bool {
        match self.configured_api {
            UpstreamApi::V1 => !self.v1_serves_v2_write.load(Ordering::Relaxed),
            UpstreamApi::Auto => {
                self.detected_api.load(Ordering::Relaxed) == API_V1
                    && !self.v1_serves_v2_write.load(Ordering::Relaxed)
            }
            UpstreamApi::V2 | UpstreamApi::V3 => false,
        }
    }

    /// Adds `X-Forwarded-For` and `Forwarded` for the client, if configured.
    pub fn add_forwarded(&self, headers: &mut HeaderMap, client: Option<SocketAddr>) {
        let Some(client) = client.filter(|_| self.forwarded_headers) else {
            return;
        };
        let ip = client.ip();
        let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(earlier) => format!("{earlier}, {ip}"),
            None => ip.to_string(),
        };
        let node = if ip.is_ipv6() {
            format!("\"[{ip}]\"")
        } else {
            ip.to_string()
        };
        let mut forwarded = format!("for={node};proto=http");
        if let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) {
            // A quoted-string (RFC 7239 §4): `"` and `\` escaped, so a hostile Host
            // cannot add parameters or elements of its own.
            forwarded.push_str(";host=\"");
            for c in host.chars() {
                if c == '"' || c == '\\' {
                    forwarded.push('\\');
                }
                forwarded.push(c);
            }
            forwarded.push('"');
        }
        if let Some(earlier) = headers.get(header::FORWARDED).and_then(|v| v.to_str().ok()) {
            forwarded = format!("{earlier}, {forwarded}");
        }
        for (name, value) in [
            (HeaderName::from_static("x-forwarded-for"), xff),
            (header::FORWARDED, forwarded),
        ] {
            if let Ok(value) = value.parse() {
                headers.insert(name, value);
            }
        }
    }

    /// Whether the upstream stores `u`-suffixed unsigned integers (1.x OSS builds refuse them).
    pub fn accepts_unsigned(&self) -> bool {
        self.api() != UpstreamApi::V1
    }

    /// Whether the upstream is InfluxDB 2.x, whose parser refuses `_measurement`,
    /// `_field` and `time` as tag keys. Other servers on the v2 API (VictoriaMetrics,
    /// 1.8+) store them.
    pub fn refuses_reserved_tag_keys(&self) -> bool {
        match self.configured_api {
            UpstreamApi::V2 => true,
            UpstreamApi::Auto => self.detected_api.load(Ordering::Relaxed) == API_V2,
            UpstreamApi::V1 | UpstreamApi::V3 => false,
        }
    }

    pub fn identity(&self) -> UpstreamIdentity {
        self.identity.read().map(|i| i.clone()).unwrap_or_default()
    }
}

/// RFC 3986 §5.2.4 on a request path: `.` and `..` segments (also percent-encoded)
/// are resolved, never above the root.
fn remove_dot_segments(path: &str) -> std::borrow::Cow<'_, str> {
    fn is_dot(segment: &str) -> bool {
        segment == "." || segment.eq_ignore_ascii_case("%2e")
    }
    fn is_dot_dot(segment: &str) -> bool {
        matches!(
            segment.to_ascii_lowercase().as_str(),
            ".." | ".%2e" | "%2e." | "%2e%2e"
        )
    }
    if !path.split('/').any(|s| is_dot(s) || is_dot_dot(s)) {
        return std::borrow::Cow::Borrowed(path);
    }
    let mut kept: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (i, segment) in segments.into_iter().enumerate() {
        if is_dot(segment) {
            trailing_slash = i == last;
        } else if is_dot_dot(segment) {
            kept.pop();
            trailing_slash = i == last;
        } else {
            kept.push(segment);
            trailing_slash = false;
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &kept {
        out.push('/');
        out.push_str(segment);
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    std::borrow::Cow::Owned(out)
}

/// The URL without `user:password@`: clients' own credentials are what InfluxDB
/// checks, and an authority with a password would end up in the pool's logs.
fn without_userinfo(uri: Uri) -> Result<Uri, UpstreamError> {
    let Some(authority) = uri.authority().filter(|a| a.as_str().contains('@')) else {
        return Ok(uri);
    };
    tracing::warn!(
        "the user and password in upstream.url are ignored: clients' own credentials are forwarded"
    );
    let host_port = authority
        .as_str()
        .rsplit('@')
        .next()
        .unwrap_or_default()
        .to_owned();
    let mut parts = uri.into_parts();
    parts.authority = Some(
        host_port
            .parse()
            .map_err(|e| UpstreamError::Request(format!("{e}")))?,
    );
    Uri::from_parts(parts).map_err(|e| UpstreamError::Request(format!("{e}")))
}

/// TLS for an `https://` upstream: TLS 1.2 or 1.3, the system's roots plus
/// `ca_file`, and a client certificate if one is configured.
fn client_tls(config: &UpstreamConfig) -> Result<rustls::ClientConfig, UpstreamError> {
    use crate::http::tls::{provider, read_certs, read_key, read_roots};
    let tls_error = |e: crate::http::tls::TlsError| UpstreamError::Request(e.to_string());
    let mut roots = rustls::RootCertStore::empty();
    // An unreadable system store is not fatal: `ca_file` may be all that is needed.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(ca) = &config.ca_file {
        for cert in read_roots(ca).map_err(tls_error)?.roots {
            roots.roots.push(cert);
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| UpstreamError::Request(e.to_string()))?
        .with_root_certificates(roots);
    // hyper-rustls sets ALPN itself (`enable_http1`: http/1.1 only).
    let tls = match (&config.client_cert_file, &config.client_key_file) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(
                read_certs(cert).map_err(tls_error)?,
                read_key(key).map_err(tls_error)?,
            )
            .map_err(|e| UpstreamError::Request(format!("upstream client certificate: {e}")))?,
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(UpstreamError::Request(
                "upstream client_cert_file and client_key_file must be set together".into(),
            ))
        }
    };
    Ok(tls)
}

/// The minor version of a `1.x` version string such as `1.6.7~rc0` or `1.8.10`.
fn v1_minor(version: &str) -> Option<u32> {
    let rest = version.strip_prefix("1.")?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

fn connect_error(error: hyper_util::client::legacy::Error) -> UpstreamError {
    // The source chain says what really happened (refused, reset, DNS).
    let mut message = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(inner) = source {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        source = inner.source();
    }
    UpstreamError::Connect(message)
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus
/// those the proxy recomputes for the message it forwards.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, including any the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove("proxy-connection");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_connection_named_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, "keep-alive, x-private".parse().unwrap());
        headers.insert("x-private", "1".parse().unwrap());
        headers.insert(header::AUTHORIZATION, "Token t".parse().unwrap());
        headers.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key(header::AUTHORIZATION));
    }

    #[test]
    fn reads_influxdb_msgpack_errors() {
        // `{"error":"partial write: x"}` as InfluxDB 1.6 sends it for `Accept: application/x-msgpack`.
        let mut body = vec![0x81, 0xa5];
        body.extend_from_slice(b"error");
        body.extend_from_slice(&[0xd9, 16]);
        body.extend_from_slice(b"partial write: x");
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            "application/x-msgpack".parse().unwrap(),
        );
        let answer = BufferedResponse {
            status: StatusCode::BAD_REQUEST,
            headers,
            body: body.into(),
        };
        assert_eq!(answer.error_message().as_deref(), Some("partial write: x"));
    }

    #[test]
    fn learns_the_version_from_any_answer() {
        let upstream = Upstream::new(&UpstreamConfig::default()).unwrap();
        assert_eq!(upstream.api(), UpstreamApi::V2, "assumed until known");
        let mut headers = HeaderMap::new();
        headers.insert("X-Influxdb-Version", "1.6.7~rc0".parse().unwrap());
        upstream.observe(&headers);
        assert_eq!(upstream.api(), UpstreamApi::V1);
        assert!(upstream.translates_v2_writes());
        assert!(!upstream.accepts_unsigned());
        headers.insert("X-Influxdb-Version", "v2.7.12".parse().unwrap());
        upstream.observe(&headers);
        assert_eq!(upstream.api(), UpstreamApi::V2);
        assert_eq!(upstream.identity().version.as_deref(), Some("v2.7.12"));
    }

    #[test]
    fn rebuilds_an_influxdb1_error_header_hyper_dropped() {
        let mut headers = HeaderMap::new();
        headers.insert("X-Influxdb-Version", "1.6.7~rc0".parse().unwrap());
        let mut answer = BufferedResponse {
            status: StatusCode::BAD_REQUEST,
            headers,
            body: br#"{"error":"partial write: unable to parse 'a\u0000b\u0001 \n': x dropped=0"}"#
                .as_slice()
                .into(),
        };
        answer.restore_influxdb1_error_header();
        assert_eq!(
            answer.headers["x-influxdb-error"],
            "partial write: unable to parse 'a b   ': x dropped=0"
        );
    }

    #[test]
    fn reads_1x_minor_versions() {
        assert_eq!(v1_minor("1.6.7~rc0"), Some(6));
        assert_eq!(v1_minor("1.8.10"), Some(8));
        assert_eq!(v1_minor("v2.7.1"), None);
    }

    #[test]
    fn adds_forwarded_headers() {
        let upstream = Upstream::new(&UpstreamConfig::default()).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "proxy:8086".parse().unwrap());
        headers.insert("x-forwarded-for", "10.0.0.1".parse().unwrap());
        upstream.add_forwarded(&mut headers, Some("127.0.0.1:5000".parse().unwrap()));
        assert_eq!(headers["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(
            headers[header::FORWARDED],
            "for=127.0.0.1;proto=http;host=\"proxy:8086\""
        );
    }

    #[test]
    fn forwarded_host_is_a_quoted_string() {
        let upstream = Upstream::new(&UpstreamConfig::default()).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, r#"a";for=6.6.6.6;by="evil\"#.parse().unwrap());
        upstream.add_forwarded(&mut headers, Some("127.0.0.1:5000".parse().unwrap()));
        assert_eq!(
            headers[header::FORWARDED],
            r#"for=127.0.0.1;proto=http;host="a\";for=6.6.6.6;by=\"evil\\""#
        );
    }

    #[test]
    fn the_upstream_url_loses_its_user_info() {
        let config = UpstreamConfig {
            url: "http://admin:secret@127.0.0.1:1/base".into(),
            ..Default::default()
        };
        let upstream = Upstream::new(&config).unwrap();
        assert_eq!(
            upstream.uri_for("/ping").unwrap().to_string(),
            "http://127.0.0.1:1/base/ping"
        );
    }

    #[test]
    fn no_path_escapes_the_base_path() {
        let config = UpstreamConfig {
            url: "http://127.0.0.1:1/influx".into(),
            ..Default::default()
        };
        let upstream = Upstream::new(&config).unwrap();
        let uri = |p: &str| upstream.uri_for(p).unwrap().to_string();
        assert_eq!(uri("/../admin"), "http://127.0.0.1:1/influx/admin");
        assert_eq!(
            uri("/a/%2E%2e/../../x?db=.."),
            "http://127.0.0.1:1/influx/x?db=.."
        );
        assert_eq!(uri("/write/./"), "http://127.0.0.1:1/influx/write/");
        assert_eq!(uri("/.."), "http://127.0.0.1:1/influx/");
        assert_eq!(uri("/ping"), "http://127.0.0.1:1/influx/ping");
        assert_eq!(remove_dot_segments("/a/b/../c/."), "/a/c/");
    }

    #[test]
    fn joins_base_path_and_client_path() {
        let config = UpstreamConfig {
            url: "http://127.0.0.1:1/prefix/".into(),
            ..Default::default()
        };
        let upstream = Upstream::new(&config).unwrap();
        assert_eq!(
            upstream.uri_for("/write?db=x").unwrap().to_string(),
            "http://127.0.0.1:1/prefix/write?db=x"
        );
    }
}
