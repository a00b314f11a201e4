//! The write path: read the body, parse it as InfluxDB would, stamp lines without a
//! time, forward to InfluxDB, relay its answer, and tee what it stored to Kafka.

pub mod accepted;
pub mod readback;
pub mod request;
pub mod stamp;
pub mod translate;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use bytes::Bytes;
use http::{header, HeaderValue, Request, Response};

use crate::config::{AckMode, TimestampMode, UpstreamApi};
use crate::http::body::read_capped;
use crate::http::error::{Dialect, ProxyError};
use crate::kafka::{Encoder, TeePoint, TeeProducer, TopicVars};
use crate::line_protocol::{self, Line, ParseOptions};
use crate::metrics::Metrics;
use crate::upstream::{strip_hop_by_hop, BufferedResponse, Upstream};

use accepted::{Accepted, Fate};
use request::WriteTarget;

/// Settings of the write path.
#[derive(Debug, Clone)]
pub struct WriteSettings {
    pub max_body_bytes: usize,
    pub timestamps: TimestampMode,
    pub ack: AckMode,
    pub ack_timeout: Duration,
    pub retry_after_seconds: u32,
    pub readback: readback::ReadbackConfig,
}

/// Everything a write needs, shared by all requests.
pub struct WritePipeline {
    pub upstream: Option<Arc<Upstream>>,
    pub producer: Arc<TeeProducer>,
    /// The durable spool; when set (`ack = "influx"`), records go through it instead of `producer`.
    pub spool: Option<Arc<crate::spool::Spool>>,
    pub encoder: Encoder,
    pub metrics: Metrics,
    pub settings: WriteSettings,
}

/// The header that carries a request's id to the upstream, the logs and Kafka.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

impl WritePipeline {
    /// Handles one write and always produces an answer for the client.
    pub async fn handle(&self, dialect: Dialect, request: Request<Body>) -> Response<Body> {
        let started = Instant::now();
        let endpoint = match dialect {
            Dialect::V1 => "v1",
            Dialect::V2 => "v2",
            Dialect::V3 => "v3",
        };
        let request_id = request_id(&request);
        let span = tracing::info_span!("write", endpoint, request_id = %request_id);
        let result = tracing::Instrument::instrument(
            self.write(dialect, request, &request_id, started),
            span,
        )
        .await;
        let response = result.unwrap_or_else(|error| {
            tracing::info!(%error, status = error.status().as_u16(), "write refused by proxy");
            error.into_response(dialect, self.settings.retry_after_seconds)
        });
        let metrics = &self.metrics;
        metrics
            .requests
            .with_label_values(&[endpoint, response.status().as_str()])
            .inc();
        metrics
            .request_seconds
            .with_label_values(&[endpoint, "total"])
            .observe(started.elapsed().as_secs_f64());
        response
    }

    async fn write(
        &self,
        dialect: Dialect,
        request: Request<Body>,
        request_id: &str,
        started: Instant,
    ) -> Result<Response<Body>, ProxyError> {
        let (parts, body) = request.into_parts();
        let influxdb1 = self
            .upstream
            .as_ref()
            .is_some_and(|u| u.api() == UpstreamApi::V1);
        let target = WriteTarget::from_query(dialect, parts.uri.query(), influxdb1)?;
        let endpoint = target.endpoint_label();
        let body = read_capped(body, &parts.headers, self.settings.max_body_bytes).await?;
        let received_ns = now_nanos();
        // A full spool refuses the write before InfluxDB sees it, so the two never diverge.
        let _spool_room = self
            .spool
            .as_ref()
            .map(|spool| spool.reserve(body.decoded.len()))
            .transpose()?;
        self.metrics
            .body_bytes
            .with_label_values(&[endpoint])
            .inc_by(body.decoded.len() as u64);

        // Without an upstream, `/api/v2/write` answers as InfluxDB 2.x and `/write` as 1.x.
        let options = ParseOptions {
            precision: target.precision,
            allow_unsigned: self.upstream.as_ref().is_none_or(|u| u.accepts_unsigned()),
            reserved_tag_keys: match &self.upstream {
                Some(upstream) => upstream.refuses_reserved_tag_keys(),
                None => dialect == Dialect::V2,
            },
        };
        let lines: Vec<Line<'_>> = line_protocol::lines(&body.decoded, options).collect();
        let invalid = lines.iter().filter(|l| l.result.is_err()).count();
        self.metrics
            .points
            .with_label_values(&[endpoint, "parsed"])
            .inc_by((lines.len() - invalid) as u64);
        self.metrics
            .points
            .with_label_values(&[endpoint, "invalid"])
            .inc_by(invalid as u64);

        // Lines without a time get the receive time in the request's precision, as InfluxDB would.
        let stamp_units = target.precision.from_nanos(received_ns);
        let stamp_ns = stamp_units.saturating_mul(target.precision.nanos_per_unit());
        // The time goes at the end of the line, after any trailing blanks: InfluxDB
        // accepts `m v=1 \t` but not `m v=1 <time> \t`.
        let missing_time: Vec<usize> = lines
            .iter()
            .filter_map(|l| match &l.result {
                Ok(point) if point.timestamp().is_none() => Some(l.span.end),
                _ => None,
            })
            .collect();

        let proxy_done = started.elapsed();
        let mut translated = false;
        let (status, upstream_answer) = match &self.upstream {
            None => {
                if invalid > 0 {
                    let message = lines
                        .iter()
                        .filter_map(|l| l.result.as_ref().err().map(|e| e.to_string()))
                        .collect::<Vec<_>>()
                        .join("\n");
                    return Err(ProxyError::InvalidLineProtocol(message));
                }
                (http::StatusCode::NO_CONTENT, None)
            }
            Some(upstream) => {
                let stamp =
                    self.settings.timestamps == TimestampMode::Stamp && !missing_time.is_empty();
                let forward_body = if stamp {
                    Bytes::from(stamp::insert_timestamp(
                        &body.decoded,
                        &missing_time,
                        stamp_units,
                    ))
                } else {
                    body.raw.clone()
                };
                let upstream_started = Instant::now();
                let translate = dialect == Dialect::V2 && upstream.translates_v2_writes();
                translated = translate;
                let answer = self
                    .forward(
                        upstream,
                        &parts,
                        forward_body,
                        stamp && body.gzipped,
                        request_id,
                        translate.then_some(&target),
                    )
                    .await;
                self.metrics
                    .request_seconds
                    .with_label_values(&[endpoint, "upstream"])
                    .observe(upstream_started.elapsed().as_secs_f64());
                let answer = answer?;
                (answer.status, Some(answer))
            }
        };

        let accepted = match &upstream_answer {
            Some(answer) => Accepted::from_answer(answer),
            None => Accepted::All,
        };
        let fates = self
            .stored_lines(&accepted, &lines, &target, &parts, translated, stamp_ns)
            .await;
        let kafka_started = Instant::now();
        let tee_result = self
            .tee(
                &target,
                &body.decoded,
                &lines,
                &fates,
                stamp_ns,
                received_ns,
                request_id,
            )
            .await;
        self.metrics
            .request_seconds
            .with_label_values(&[endpoint, "kafka"])
            .observe(kafka_started.elapsed().as_secs_f64());
        self.metrics
            .request_seconds
            .with_label_values(&[endpoint, "proxy"])
            .observe(proxy_done.as_secs_f64());
        tee_result?;

        Ok(match upstream_answer {
            Some(answer) => relay(answer),
            None => {
                let mut response = Response::new(Body::empty());
                *response.status_mut() = status;
                response
            }
        })
    }

    async fn forward(
        &self,
        upstream: &Upstream,
        parts: &http::request::Parts,
        body: Bytes,
        decompressed: bool,
        request_id: &str,
        translate_to_v1: Option<&WriteTarget>,
    ) -> Result<BufferedResponse, ProxyError> {
        let mut headers = parts.headers.clone();
        let translated_path =
            translate_to_v1.map(|target| translate::v1_write_path(target, &mut headers));
        let path_and_query = match &translated_path {
            Some(path) => path.as_str(),
            None => parts
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/"),
        };
        let uri = upstream
            .uri_for(path_and_query)
            .map_err(|e| ProxyError::UpstreamUnavailable(e.to_string()))?;
        strip_hop_by_hop(&mut headers);
        upstream.add_forwarded(&mut headers, client_address(&parts.extensions));
        headers.remove(header::HOST);
        headers.remove(header::CONTENT_LENGTH);
        if decompressed {
            headers.remove(header::CONTENT_ENCODING);
        }
        if let Ok(value) = HeaderValue::from_str(request_id) {
            headers.entry(REQUEST_ID_HEADER).or_insert(value);
        }
        let mut request = Request::new(Body::from(body));
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        let mut answer = upstream.send_buffered(request).await.map_err(|error| {
            self.metrics
                .upstream_errors
                .with_label_values(&[error.reason()])
                .inc();
            tracing::warn!(%error, "upstream unreachable");
            ProxyError::UpstreamUnavailable(error.to_string())
        })?;
        answer.restore_influxdb1_error_header();
        if translate_to_v1.is_some() {
            translate::error_to_v2(&mut answer);
        }
        Ok(answer)
    }

    /// Which lines the upstream stored: as its answer says, else as read back.
    async fn stored_lines(
        &self,
        accepted: &Accepted,
        lines: &[Line<'_>],
        target: &WriteTarget,
        parts: &http::request::Parts,
        translated: bool,
        stamp_ns: i64,
    ) -> Vec<Fate> {
        let endpoint = target.endpoint_label();
        let time_ns =
            |point: &line_protocol::Point<'_>| target.time_ns(point.timestamp(), stamp_ns);
        let mut verdict = accepted.verdict(lines, time_ns);
        if verdict.unteeable > 0 {
            self.metrics
                .partial_write_unresolved
                .with_label_values(&[endpoint])
                .inc();
            tracing::warn!(
                unteeable = verdict.unteeable,
                "the upstream stored lines this proxy cannot parse; they are not teed"
            );
        }
        let doubts = verdict.fates.contains(&Fate::Unknown);
        if let (Some(upstream), true) = (&self.upstream, doubts) {
            let readback =
                readback::ReadbackTarget::from_request(parts, &target.db, &target.rp, translated);
            let doubtful = readback::doubtful(lines, &verdict.fates, time_ns);
            self.read_back(upstream, &readback, doubtful, &mut verdict.fates, endpoint)
                .await;
        }
        verdict.fates
    }

    /// Settles the lines whose fate the upstream's answer left open by reading them
    /// back; where that fails, none of them is teed.
    async fn read_back(
        &self,
        upstream: &Upstream,
        target: &readback::ReadbackTarget<'_>,
        (indices, candidates): (Vec<usize>, Vec<readback::Candidate<'_, '_>>),
        fates: &mut [Fate],
        endpoint: &'static str,
    ) {
        if candidates.is_empty() {
            return;
        }
        let started = Instant::now();
        let outcome =
            readback::stored(upstream, target, &candidates, &self.settings.readback).await;
        let elapsed = started.elapsed();
        self.metrics
            .request_seconds
            .with_label_values(&[endpoint, "readback"])
            .observe(elapsed.as_secs_f64());
        match outcome {
            Ok(stored) => {
                let kept = stored.iter().filter(|s| **s).count();
                tracing::info!(
                    points = candidates.len(),
                    stored = kept,
                    elapsed_ms = elapsed.as_millis() as u64,
                    "partial write: read back what the upstream stored"
                );
                for (index, stored) in indices.into_iter().zip(stored) {
                    fates[index] = if stored { Fate::Stored } else { Fate::Dropped };
                }
            }
            Err(error) => {
                self.metrics
                    .partial_write_unresolved
                    .with_label_values(&[endpoint])
                    .inc();
                tracing::warn!(
                    %error,
                    points = candidates.len(),
                    "partial write: could not tell which points the upstream stored; none of them is teed"
                );
                for index in indices {
                    fates[index] = Fate::Dropped;
                }
            }
        }
    }

    /// Sends the points the upstream stored to Kafka; in `ack = "all"` waits for Kafka too.
    #[allow(clippy::too_many_arguments)]
    async fn tee(
        &self,
        target: &WriteTarget,
        body: &[u8],
        lines: &[Line<'_>],
        fates: &[Fate],
        stamp_ns: i64,
        received_ns: i64,
        request_id: &str,
    ) -> Result<(), ProxyError> {
        let endpoint = target.endpoint_label();
        let parsed = lines.iter().filter(|l| l.result.is_ok()).count();
        let points: Vec<TeePoint<'_, '_>> = lines
            .iter()
            .zip(fates)
            .filter(|(_, fate)| **fate == Fate::Stored)
            .filter_map(|(line, _)| {
                let point = line.result.as_ref().ok()?;
                let head = trim_leading_blanks(
                    &body[line.span.start..line.span.start + point.field_set_end()],
                );
                Some(TeePoint {
                    line_head: head,
                    point,
                    time_ns: target.time_ns(point.timestamp(), stamp_ns),
                })
            })
            .collect();
        self.metrics
            .points
            .with_label_values(&[endpoint, "teed"])
            .inc_by(points.len() as u64);
        self.metrics
            .points
            .with_label_values(&[endpoint, "not_teed"])
            .inc_by((parsed - points.len()) as u64);
        if points.is_empty() {
            return Ok(());
        }
        let vars = TopicVars {
            bucket: &target.bucket,
            org: &target.org,
            db: &target.db,
            rp: &target.rp,
        };
        let batch = self.encoder.encode(&vars, &points);
        let received = itoa::Buffer::new().format(received_ns).to_owned();
        let headers = [
            ("org", target.org.as_str()),
            ("bucket", target.bucket.as_str()),
            ("db", target.db.as_str()),
            ("rp", target.rp.as_str()),
            ("precision", target.precision_label()),
            ("request-id", request_id),
            ("received-at", received.as_str()),
        ];
        if let (AckMode::Influx, Some(spool)) = (self.settings.ack, &self.spool) {
            return spool
                .append_batch(&batch, &headers)
                .await
                .map(drop)
                .map_err(ProxyError::from);
        }
        let outcome = self.producer.send(&batch, &headers).await;
        match self.settings.ack {
            AckMode::All => outcome
                .ack
                .wait(self.settings.ack_timeout)
                .await
                .map_err(ProxyError::KafkaUnavailable),
            AckMode::Influx => {
                if let Some(reason) = outcome.first_refusal {
                    tracing::error!(refused = outcome.refused, %reason, "records not handed to Kafka");
                }
                Ok(())
            }
        }
    }
}

fn trim_leading_blanks(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| *b != b' ' && *b != b'\t')
        .unwrap_or(bytes.len());
    &bytes[start..]
}

/// The upstream's answer, as it came, minus hop-by-hop headers.
fn relay(answer: BufferedResponse) -> Response<Body> {
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() = answer.status;
    let mut headers = answer.headers;
    strip_hop_by_hop(&mut headers);
    headers.remove(header::CONTENT_LENGTH);
    *response.headers_mut() = headers;
    response
}

/// The client's address, when the listener records it.
pub fn client_address(extensions: &http::Extensions) -> Option<std::net::SocketAddr> {
    extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0)
}

/// The client's request id, or a new one.
pub fn request_id<B>(request: &Request<B>) -> String {
    request
        .headers()
        .get(REQUEST_ID_HEADER)
        .or_else(|| request.headers().get("request-id"))
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}
