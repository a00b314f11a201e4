//! Who may write through the gateway (`upstream = "none"`): an allow-list of tokens,
//! kept only as SHA-256 hashes, each naming the buckets (or `db/rp`) it may write.
//!
//! Credentials are read where InfluxDB 2.7 reads them, and refusals are answered as
//! it answers them: `/api/v2/write` takes `Authorization: Token <t>` or `Bearer <t>`
//! (`http/tokens.go`); v1 `/write` takes `u`/`p`, `Authorization: Token [user:]<t>`
//! or Basic auth with the token as password
//! (`http/legacy/influx1x_authentication_handler.go`). An unknown or missing token
//! gets 401, a known one writing elsewhere 403, both in 2.x's JSON. InfluxDB 3's
//! `/api/v3/write_lp` reads and answers as `influxdb3_server` does.
//!
//! With an upstream, authorisation is InfluxDB's own: the allow-list is refused at start.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use axum::body::Body;
use base64::Engine;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use serde::{Deserialize, Serialize};

use crate::http::error::{v2_code, Dialect};

/// `[gateway]`: the tokens that may write when there is no upstream.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Allowed tokens, as `[[gateway.tokens]]` entries.
    pub tokens: Vec<TokenEntry>,
    /// A TOML or JSON (by a `.json` name) file of more entries, `tokens = [...]`, so
    /// the hashes can live in a mounted secret.
    pub tokens_file: Option<PathBuf>,
}

impl GatewayConfig {
    /// Whether any allow-list is configured (an empty file still counts: it admits nobody).
    pub fn is_configured(&self) -> bool {
        !self.tokens.is_empty() || self.tokens_file.is_some()
    }
}

/// One allowed token.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// Hex SHA-256 of the token, as `influx-tee hash-token` prints it.
    pub sha256: String,
    /// Buckets (v2), databases or `db/rp` (v1) it may write: exact names, `db/*` for
    /// every retention policy of `db`, `*` for all.
    pub buckets: Vec<String>,
    /// A label for the logs; the token itself is never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The shape of `tokens_file`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    tokens: Vec<TokenEntry>,
}

/// The allow-list, ready to check requests against.
#[derive(Debug)]
pub struct GatewayAuth {
    tokens: Vec<AllowedToken>,
}

/// A token the allow-list knows.
#[derive(Debug)]
pub struct AllowedToken {
    hash: [u8; 32],
    name: String,
    buckets: Vec<String>,
}

/// Why a gateway write is refused before it is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 401, with InfluxDB's message for the case.
    Unauthorized(&'static str),
    /// 403: a known token, a bucket it may not write.
    Forbidden,
    /// 400: InfluxDB 3 refuses an `Authorization` it cannot read.
    Malformed,
}

/// 2.7's message when no credentials could be read, and on `/api/v2` for any 401.
const UNAUTHORIZED_ACCESS: &str = "unauthorized access";
/// 2.7's v1 message for credentials it read but does not know (`ErrCredentialsUnauthorized`).
const V1_UNKNOWN_CREDENTIALS: &str = "Unauthorized";
const FORBIDDEN_WRITE: &str = "insufficient permissions for write";
const V3_UNAUTHENTICATED: &str = "the request was not authenticated";
const V3_FORBIDDEN: &str = "unauthorized to perform requested action with the token";
const V3_MALFORMED: &str = "Authorization header was malformed, the request was not in the form of 'Authorization: <auth-scheme> <token>', supported auth-schemes are Bearer, Token and Basic";

impl GatewayAuth {
    /// The allow-list of `config` (inline entries, then the file's), or `None` when
    /// none is configured and the gateway stays open.
    pub fn load(config: &GatewayConfig) -> Result<Option<GatewayAuth>, String> {
        if !config.is_configured() {
            return Ok(None);
        }
        let mut entries = config.tokens.clone();
        if let Some(path) = &config.tokens_file {
            entries.extend(read_tokens_file(path)?);
        }
        let tokens = entries
            .iter()
            .enumerate()
            .map(|(index, entry)| AllowedToken::from_entry(index, entry))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(GatewayAuth { tokens }))
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The allowed token the request presents, or why it gets 401.
    pub fn authenticate(
        &self,
        dialect: Dialect,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<&AllowedToken, Refusal> {
        let (token, unknown) = match dialect {
            Dialect::V1 => (v1_token(headers, query), V1_UNKNOWN_CREDENTIALS),
            Dialect::V2 => (v2_token(headers), UNAUTHORIZED_ACCESS),
            Dialect::V3 => (v3_token(headers)?, UNAUTHORIZED_ACCESS),
        };
        let token = token.ok_or(Refusal::Unauthorized(UNAUTHORIZED_ACCESS))?;
        self.find(&token).ok_or(Refusal::Unauthorized(unknown))
    }

    /// The entry whose hash is the token's. Every entry is compared, each in constant
    /// time, so the time taken tells nothing of the stored hashes.
    fn find(&self, token: &[u8]) -> Option<&AllowedToken> {
        let hash = sha256(token);
        let mut found = None;
        for allowed in &self.tokens {
            if same_hash(&allowed.hash, &hash) && found.is_none() {
                found = Some(allowed);
            }
        }
        found
    }
}

impl AllowedToken {
    fn from_entry(index: usize, entry: &TokenEntry) -> Result<AllowedToken, String> {
        let name = entry
            .name
            .clone()
            .unwrap_or_else(|| format!("token #{}", index + 1));
        let hash = parse_hash(&entry.sha256).ok_or_else(|| {
            format!(
                "gateway token {name:?}: sha256 must be 64 hex digits (`influx-tee hash-token`)"
            )
        })?;
        if entry.buckets.is_empty() || entry.buckets.iter().any(|b| b.is_empty()) {
            return Err(format!(
                "gateway token {name:?}: buckets must name at least one bucket, `db/rp` or `*`"
            ));
        }
        Ok(AllowedToken {
            hash,
            name,
            buckets: entry.buckets.clone(),
        })
    }

    /// The label of the entry, for logs.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this token may write `bucket` (a v2 bucket, a v1 `db` or `db/rp`).
    pub fn permits(&self, bucket: &str) -> bool {
        let database = bucket.split_once('/').map_or(bucket, |(db, _)| db);
        self.buckets.iter().any(|allowed| {
            allowed == "*"
                || allowed == bucket
                || allowed.strip_suffix("/*").is_some_and(|db| db == database)
        })
    }
}

/// Whether the gateway's token `grant` (if the allow-list is on) may not write
/// `bucket`; logs the refusal with the entry's name.
pub fn forbids(grant: Option<&AllowedToken>, bucket: &str) -> bool {
    let Some(grant) = grant.filter(|grant| !grant.permits(bucket)) else {
        return false;
    };
    tracing::info!(
        token_name = grant.name(),
        bucket,
        "gateway write refused: the token may not write this bucket"
    );
    true
}

impl Refusal {
    /// The answer InfluxDB 2.7 gives on `/api/v2/write` and on its v1 `/write` (2.x's
    /// JSON), or InfluxDB 3 on `/api/v3/write_lp` (`{"error": …}`, no content type).
    pub fn into_response(self, dialect: Dialect) -> Response<Body> {
        let (status, message) = match self {
            Refusal::Unauthorized(message) => (StatusCode::UNAUTHORIZED, message),
            Refusal::Forbidden => (StatusCode::FORBIDDEN, FORBIDDEN_WRITE),
            Refusal::Malformed => (StatusCode::BAD_REQUEST, V3_MALFORMED),
        };
        if dialect == Dialect::V3 {
            // influxdb3_server's AuthenticationError and ResourceAuthorizationError answers.
            let message = match self {
                Refusal::Unauthorized(_) => V3_UNAUTHENTICATED,
                Refusal::Forbidden => V3_FORBIDDEN,
                Refusal::Malformed => V3_MALFORMED,
            };
            let mut response = Response::new(Body::from(format!(r#"{{"error": "{message}"}}"#)));
            *response.status_mut() = status;
            crate::write::identify(response.headers_mut(), None);
            return response;
        }
        let body = serde_json::json!({ "code": v2_code(status), "message": message });
        let mut response = Response::new(Body::from(body.to_string()));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        headers.insert(
            "x-platform-error-code",
            HeaderValue::from_static(v2_code(status)),
        );
        // 2.7's v1 authentication runs outside its gzip middleware, its write handler inside.
        if dialect == Dialect::V1 && self == Refusal::Forbidden {
            headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        }
        crate::write::identify(headers, None);
        response
    }
}

/// `http/tokens.go` GetToken: the first `Authorization`, `Token ` (possibly empty
/// after it) or `Bearer ` (not empty), either in any case.
fn v2_token(headers: &HeaderMap) -> Option<Cow<'_, [u8]>> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let after = |scheme: &[u8]| {
        value
            .get(..scheme.len())
            .filter(|prefix| prefix.eq_ignore_ascii_case(scheme))
            .map(|_| &value[scheme.len()..])
    };
    after(b"Token ")
        .or_else(|| after(b"Bearer ").filter(|token| !token.is_empty()))
        .map(Cow::Borrowed)
}

/// influxdb3_server's `validate_auth_header`: no header, no token (401); else exactly
/// `Bearer <t>`, `Token <t>` or `Basic <base64 of user:t>` (a 400 otherwise).
fn v3_token(headers: &HeaderMap) -> Result<Option<Cow<'_, [u8]>>, Refusal> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| Refusal::Malformed)?;
    let mut words = value.split(' ');
    let (Some(scheme), Some(token), None) = (words.next(), words.next(), words.next()) else {
        return Err(Refusal::Malformed);
    };
    match scheme {
        "Bearer" | "Token" => Ok(Some(Cow::Borrowed(token.as_bytes()))),
        "Basic" => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(token)
                .map_err(|_| Refusal::Malformed)?;
            let decoded = String::from_utf8(decoded).map_err(|_| Refusal::Malformed)?;
            match decoded.rsplit_once(':') {
                Some((user, token)) if !user.contains(':') => {
                    Ok(Some(Cow::Owned(token.as_bytes().to_vec())))
                }
                _ => Err(Refusal::Malformed),
            }
        }
        _ => Err(Refusal::Malformed),
    }
}

/// The v1 compat parseCredentials: `u` and `p` (the first of each, both non-empty),
/// else `Authorization: Token [user:]<token>` (exactly one space, case-sensitive),
/// else Basic auth with the token as password.
fn v1_token<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> Option<Cow<'a, [u8]>> {
    let (mut user, mut password) = (None, None);
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "u" if user.is_none() => user = Some(value),
            "p" if password.is_none() => password = Some(value),
            _ => {}
        }
    }
    if let (Some(user), Some(password)) = (&user, password) {
        if !user.is_empty() && !password.is_empty() {
            return Some(match password {
                Cow::Borrowed(p) => Cow::Borrowed(p.as_bytes()),
                Cow::Owned(p) => Cow::Owned(p.into_bytes()),
            });
        }
    }
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    if value.is_empty() {
        return None;
    }
    let mut words = value.split(|b| *b == b' ');
    if let (Some(b"Token"), Some(credentials), None) = (words.next(), words.next(), words.next()) {
        let token = match credentials.iter().position(|b| *b == b':') {
            Some(colon) => &credentials[colon + 1..],
            None => credentials,
        };
        return Some(Cow::Borrowed(token));
    }
    basic_password(value).map(Cow::Owned)
}

/// Go's `Request.BasicAuth`: `Basic ` in any case, standard base64 (Go's decoder
/// skips CR and LF and tolerates stray trailing bits), `user:password`.
fn basic_password(value: &[u8]) -> Option<Vec<u8>> {
    const SCHEME: &[u8] = b"Basic ";
    let prefix = value.get(..SCHEME.len())?;
    if !prefix.eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    let encoded: Vec<u8> = value[SCHEME.len()..]
        .iter()
        .copied()
        .filter(|b| *b != b'\r' && *b != b'\n')
        .collect();
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireCanonical),
    );
    let decoded = engine.decode(encoded).ok()?;
    let colon = decoded.iter().position(|b| *b == b':')?;
    Some(decoded[colon + 1..].to_vec())
}

fn read_tokens_file(path: &Path) -> Result<Vec<TokenEntry>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read gateway tokens_file {}: {e}", path.display()))?;
    let parsed = if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
    {
        serde_json::from_str::<TokensFile>(&text).map_err(|e| e.to_string())
    } else {
        toml::from_str::<TokensFile>(&text).map_err(|e| e.to_string())
    };
    parsed
        .map(|file| file.tokens)
        .map_err(|e| format!("invalid gateway tokens_file {}: {e}", path.display()))
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    let mut hash = [0u8; 32];
    hash.copy_from_slice(digest.as_ref());
    hash
}

/// Compares two hashes without an early exit.
fn same_hash(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

fn parse_hash(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim().as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut hash = [0u8; 32];
    for (byte, pair) in hash.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(hash)
}

/// Lowercase hex SHA-256 of a token, as `[[gateway.tokens]] sha256` takes it.
pub fn hash_token(token: &[u8]) -> String {
    sha256(token).iter().map(|b| format!("{b:02x}")).collect()
}

/// `influx-tee hash-token`: reads a token from stdin (one trailing newline dropped)
/// and prints its hash, so the token itself never goes into a config file.
pub fn hash_token_command() -> i32 {
    use std::io::Read;
    let mut input = Vec::new();
    if let Err(error) = std::io::stdin().read_to_end(&mut input) {
        eprintln!("influx-tee hash-token: cannot read stdin: {error}");
        return 2;
    }
    let token = input.strip_suffix(b"\n").unwrap_or(&input);
    let token = token.strip_suffix(b"\r").unwrap_or(token);
    if token.is_empty() {
        eprintln!("influx-tee hash-token: no token on stdin (e.g. `printf %s \"$TOKEN\" | influx-tee hash-token`)");
        return 2;
    }
    println!("{}", hash_token(token));
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(entries: &[(&str, &[&str])]) -> GatewayAuth {
        let config = GatewayConfig {
            tokens: entries
                .iter()
                .map(|(token, buckets)| TokenEntry {
                    sha256: hash_token(token.as_bytes()),
                    buckets: buckets.iter().map(|b| b.to_string()).collect(),
                    name: None,
                })
                .collect(),
            tokens_file: None,
        };
        GatewayAuth::load(&config).unwrap().unwrap()
    }

    fn headers(authorization: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = authorization {
            headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn basic(user_password: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_password)
        )
    }

    #[test]
    fn hashes_are_sha256_hex() {
        assert_eq!(
            hash_token(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let upper = "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD";
        assert_eq!(parse_hash(upper), Some(sha256(b"abc")));
        assert_eq!(parse_hash("ba78"), None);
        assert_eq!(parse_hash(&"g".repeat(64)), None);
    }

    #[test]
    fn buckets_match_exactly_by_database_or_all() {
        let auth = auth(&[("t1", &["a", "db/rp", "logs/*"]), ("t2", &["*"])]);
        let t1 = auth.find(b"t1").unwrap();
        assert!(t1.permits("a"));
        assert!(!t1.permits("ab"));
        assert!(!t1.permits("a/rp"));
        assert!(t1.permits("db/rp"));
        assert!(!t1.permits("db"));
        assert!(!t1.permits("db/other"));
        assert!(t1.permits("logs"));
        assert!(t1.permits("logs/autogen"));
        assert!(!t1.permits("logsx/autogen"));
        assert!(!t1.permits(""));
        let t2 = auth.find(b"t2").unwrap();
        assert!(t2.permits("anything/at all"));
        assert!(t2.permits(""));
        assert!(auth.find(b"t3").is_none());
        assert!(auth.find(b"").is_none());
    }

    #[test]
    fn v2_reads_token_and_bearer_as_influxdb_2_does() {
        let auth = auth(&[("secret", &["*"])]);
        let check = |value: Option<&str>| {
            auth.authenticate(Dialect::V2, &headers(value), Some("u=x&p=secret"))
                .map(|t| t.name().to_owned())
        };
        assert!(check(Some("Token secret")).is_ok());
        assert!(check(Some("token secret")).is_ok());
        assert!(check(Some("Bearer secret")).is_ok());
        assert!(check(Some("BEARER secret")).is_ok());
        let unauthorized = Err(Refusal::Unauthorized(UNAUTHORIZED_ACCESS));
        // Query credentials and Basic are v1's only.
        assert_eq!(check(None), unauthorized);
        assert_eq!(check(Some(&basic("x:secret"))), unauthorized);
        assert_eq!(check(Some("Token  secret")), unauthorized);
        assert_eq!(check(Some("Token wrong")), unauthorized);
        assert_eq!(check(Some("Bearer ")), unauthorized);
        assert_eq!(check(Some("Tokensecret")), unauthorized);
    }

    #[test]
    fn v3_reads_the_header_as_influxdb_3_does() {
        let auth = auth(&[("secret", &["*"])]);
        let check = |value: Option<&str>| {
            auth.authenticate(Dialect::V3, &headers(value), Some("db=a&p=secret"))
                .map(|t| t.name().to_owned())
        };
        assert!(check(Some("Bearer secret")).is_ok());
        assert!(check(Some("Token secret")).is_ok());
        assert!(check(Some(&basic("user:secret"))).is_ok());
        let unauthenticated = Err(Refusal::Unauthorized(UNAUTHORIZED_ACCESS));
        assert_eq!(check(None), unauthenticated);
        assert_eq!(check(Some("Bearer wrong")), unauthenticated);
        assert_eq!(check(Some("bearer secret")), Err(Refusal::Malformed));
        assert_eq!(check(Some("Bearer  secret")), Err(Refusal::Malformed));
        assert_eq!(check(Some("Basic !!")), Err(Refusal::Malformed));
        assert_eq!(check(Some(&basic("nocolon"))), Err(Refusal::Malformed));
    }

    #[test]
    fn v1_reads_query_token_and_basic_as_the_compat_api_does() {
        let auth = auth(&[("secret", &["*"])]);
        let check = |value: Option<&str>, query: &str| {
            auth.authenticate(Dialect::V1, &headers(value), Some(query))
                .map(|t| t.name().to_owned())
        };
        assert!(check(None, "db=a&u=x&p=secret").is_ok());
        assert!(check(None, "db=a&u=x&p=secret&p=other").is_ok());
        assert!(check(None, "db=a&u=x&p=sec%72et").is_ok());
        assert!(check(Some("Token secret"), "db=a").is_ok());
        assert!(check(Some("Token user:secret"), "db=a").is_ok());
        assert!(check(Some(&basic("user:secret")), "db=a").is_ok());
        assert!(check(Some(&basic(":secret")), "db=a").is_ok());
        // `u` without `p` (or empty) falls through to the header.
        assert!(check(Some("Token secret"), "db=a&u=x&p=").is_ok());
        let unparsed = Err(Refusal::Unauthorized(UNAUTHORIZED_ACCESS));
        let unknown = Err(Refusal::Unauthorized(V1_UNKNOWN_CREDENTIALS));
        assert_eq!(check(None, "db=a"), unparsed);
        assert_eq!(check(None, "db=a&p=secret"), unparsed);
        assert_eq!(check(Some("Bearer secret"), "db=a"), unparsed);
        assert_eq!(check(Some("token secret"), "db=a"), unparsed);
        assert_eq!(check(Some("Basic !!!"), "db=a"), unparsed);
        assert_eq!(check(Some(&basic("no-colon")), "db=a"), unparsed);
        assert_eq!(check(None, "db=a&u=x&p=wrong"), unknown);
        assert_eq!(check(Some("Token wrong"), "db=a"), unknown);
        assert_eq!(check(Some(&basic("secret:wrong")), "db=a"), unknown);
        // The query's credentials win over a good header, as in 2.7.
        assert_eq!(check(Some("Token secret"), "db=a&u=x&p=wrong"), unknown);
    }

    #[test]
    fn bad_entries_are_refused() {
        let entry = |sha256: &str, buckets: &[&str]| GatewayConfig {
            tokens: vec![TokenEntry {
                sha256: sha256.into(),
                buckets: buckets.iter().map(|b| b.to_string()).collect(),
                name: Some("ops".into()),
            }],
            tokens_file: None,
        };
        let good = hash_token(b"x");
        assert!(GatewayAuth::load(&entry(&good, &["a"])).is_ok());
        assert!(GatewayAuth::load(&entry("x", &["a"]))
            .unwrap_err()
            .contains("\"ops\""));
        assert!(GatewayAuth::load(&entry(&good, &[])).is_err());
        assert!(GatewayAuth::load(&entry(&good, &[""])).is_err());
        assert!(GatewayAuth::load(&GatewayConfig::default())
            .unwrap()
            .is_none());
    }
}
