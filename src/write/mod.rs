//! The write path: read the body, parse it as InfluxDB would, stamp lines without a
//! time, forward to InfluxDB, relay its answer, and tee what it stored to Kafka.

pub mod accepted;
pub mod budget;
pub mod readback;
pub mod request;
pub mod stamp;
pub mod translate;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use bytes::Bytes;
use http::{header, HeaderValue, Request, Response};

use crate::config::{AckMode, TimestampMode};
use crate::http::body::{read_capped_within, WriteBody};
use crate::http::error::{Dialect, ProxyError};
use crate::kafka::{Encoder, TeePoint, TeeProducer, TopicVars};
use crate::line_protocol::{self, Line, ParseOptions};
use crate::metrics::Metrics;
use crate::upstream::{strip_hop_by_hop, BufferedResponse, Upstream};

use accepted::{Accepted, Fate};
use request::{Server, WriteTarget};

/// Bodies this large are parsed with the worker handed over to the blocking pool, so a
/// big write does not hold up the other connections of its runtime worker.
const PARSE_INLINE_MAX: usize = 256 * 1024;

fn parse_off_the_runtime(body: &[u8], options: ParseOptions) -> Vec<Line<'_>> {
    let parse = || line_protocol::lines(body, options).collect();
    let multi_thread = tokio::runtime::Handle::try_current().is_ok_and(|runtime| {
        runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
    });
    // `block_in_place` moves this worker's other tasks elsewhere; it exists only on the
    // multi-threaded runtime (the binary's), so a single-threaded one parses in place.
    if body.len() > PARSE_INLINE_MAX && multi_thread {
        tokio::task::block_in_place(parse)
    } else {
        parse()
    }
}

/// Where a write's task sends the client's answer.
type AnswerSender = tokio::sync::oneshot::Sender<Result<Response<Body>, ProxyError>>;

/// Settings of the write path.
#[derive(Debug, Clone)]
pub struct WriteSettings {
    pub max_body_bytes: usize,
    pub timestamps: TimestampMode,
    pub ack: AckMode,
    pub ack_timeout: Duration,
    pub retry_after_seconds: u32,
    pub readback: readback::ReadbackConfig,
    /// How slowly a body may arrive before the proxy answers 408.
    pub body_pace: crate::http::timed_body::BodyPace,
    /// After a 503 for an upstream timeout, how long the write still waits for
    /// InfluxDB's answer, to tee what it stored.
    pub late_answer_wait: Duration,
}

/// Everything a write needs, shared by all requests.
pub struct WritePipeline {
    pub upstream: Option<Arc<Upstream>>,
    /// Without an upstream, the tokens that may write; `None` leaves the gateway open.
    pub gateway_auth: Option<crate::http::gateway_auth::GatewayAuth>,
    pub producer: Arc<TeeProducer>,
    /// The durable spool; when set (`ack = "influx"`), records go through it instead of `producer`.
    pub spool: Option<Arc<crate::spool::Spool>>,
    pub encoder: Encoder,
    pub metrics: Metrics,
    pub settings: WriteSettings,
    /// Writes running in their own task, which may outlive their client's connection.
    pub in_flight: Arc<InFlight>,
    /// Write-body bytes in memory, process-wide (`max_inflight_bytes`).
    pub budget: budget::BodyBudget,
}

/// Counts the writes in flight, so shutdown can wait for those whose client left.
#[derive(Debug, Default)]
pub struct InFlight {
    count: std::sync::atomic::AtomicUsize,
    drained: tokio::sync::Notify,
}

impl InFlight {
    fn enter(self: &Arc<Self>) -> InFlightGuard {
        self.count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        InFlightGuard(Arc::clone(self))
    }

    /// Waits until no write is in flight, or `timeout` passed; returns how many still are.
    pub async fn drained(&self, timeout: Duration) -> usize {
        let wait = async {
            loop {
                let notified = self.drained.notified();
                if self.count.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(timeout, wait).await;
        self.count.load(std::sync::atomic::Ordering::SeqCst)
    }
}

struct InFlightGuard(Arc<InFlight>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self
            .0
            .count
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst)
            == 1
        {
            self.0.drained.notify_waiters();
        }
    }
}

/// The header that carries a request's id to the upstream, the logs and Kafka.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

impl WritePipeline {
    /// Handles one write and always produces an answer for the client.
    pub async fn handle(
        self: &Arc<Self>,
        dialect: Dialect,
        request: Request<Body>,
    ) -> Response<Body> {
        let started = Instant::now();
        let endpoint = endpoint_label(dialect);
        let request_id = request_id(&request);
        let span = tracing::info_span!("write", endpoint, request_id = %request_id);
        let result = tracing::Instrument::instrument(
            self.write(dialect, request, &request_id, started),
            span,
        )
        .await;
        let response = result.unwrap_or_else(|error| {
            tracing::info!(%error, status = error.status().as_u16(), "write refused by proxy");
            let mut response = error.into_response(dialect, self.settings.retry_after_seconds);
            identify(response.headers_mut(), self.upstream.as_deref());
            response
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
        self: &Arc<Self>,
        dialect: Dialect,
        request: Request<Body>,
        request_id: &str,
        started: Instant,
    ) -> Result<Response<Body>, ProxyError> {
        let (parts, body) = request.into_parts();
        // The gateway checks credentials before anything else, as InfluxDB 2.x does.
        let grant = match &self.gateway_auth {
            Some(auth) => match auth.authenticate(dialect, &parts.headers, parts.uri.query()) {
                Ok(grant) => Some(grant),
                Err(refusal) => {
                    tracing::info!(?refusal, "gateway write refused: no known token");
                    return Ok(refusal.into_response(dialect));
                }
            },
            None => None,
        };
        let translate = dialect == Dialect::V2
            && self
                .upstream
                .as_ref()
                .is_some_and(|u| u.translates_v2_writes());
        let server = Server::of(self.upstream.as_ref().map(|u| u.identified_api()));
        // What InfluxDB refuses it answers itself: the write goes as it came and
        // nothing is teed. The proxy answers only as the server it stands in for
        // (no upstream, or a v2 write it translates for InfluxDB 1.x), or for a
        // server whose rules it does not know.
        let target = match WriteTarget::from_query_for(dialect, parts.uri.query(), server) {
            // A listed token writes only its own buckets; refused before the body is read.
            Ok(target) if crate::http::gateway_auth::forbids(grant, &target.bucket) => {
                return Ok(crate::http::gateway_auth::Refusal::Forbidden.into_response(dialect));
            }
            Ok(target) => Ok(target),
            Err(error) if server.proxy_decides() || translate => return Err(error),
            Err(refusal) => Err(refusal),
        };
        let body =
            crate::http::timed_body::TimedBody::new(body, self.settings.body_pace).into_body();
        let mut account = budget::BodyAccount::open(&self.budget, endpoint_label(dialect));
        let mut body = read_capped_within(
            body,
            &parts.headers,
            self.settings.max_body_bytes,
            server,
            Some(&mut account),
        )
        .await?;
        // The bytes stay counted until the write is done, teed included.
        body.budget = Some(account.permit);

        // From here on the write runs to completion, and is teed, whether or not the
        // client waits for the answer: InfluxDB stores it either way.
        let mut client_gone = ClientGone {
            metrics: &self.metrics,
            endpoint: endpoint_label(dialect),
            armed: true,
        };
        let pipeline = Arc::clone(self);
        let request_id = request_id.to_owned();
        let in_flight = self.in_flight.enter();
        // The task answers through this as soon as it can; after an upstream timeout
        // that is before it is done (it then waits on for InfluxDB's late answer).
        let (answer_tx, answer_rx) = tokio::sync::oneshot::channel();
        let write = tokio::spawn(tracing::Instrument::instrument(
            async move {
                let _in_flight = in_flight;
                let mut answer = Some(answer_tx);
                let result = pipeline
                    .forward_and_tee(
                        dialect,
                        parts,
                        body,
                        target,
                        translate,
                        &request_id,
                        started,
                        &mut answer,
                    )
                    .await;
                if let Some(answer) = answer {
                    let _ = answer.send(result);
                }
            },
            tracing::Span::current(),
        ));
        let outcome = answer_rx.await;
        client_gone.armed = false;
        match outcome {
            Ok(result) => result,
            // The task ended without an answer: a bug, not the client's doing. Answer as
            // InfluxDB answers its own (500), rather than drop the connection, and say so.
            Err(_) => {
                let error = write.await.err();
                tracing::error!(error = ?error, "the write task ended without an answer; its tee may be incomplete");
                Err(ProxyError::Internal(
                    "an internal error has occurred".into(),
                ))
            }
        }
    }

    /// Everything after the body is read: forward, relay, tee.
    #[allow(clippy::too_many_arguments)]
    async fn forward_and_tee(
        &self,
        dialect: Dialect,
        parts: http::request::Parts,
        body: WriteBody,
        target: Result<WriteTarget, ProxyError>,
        translate: bool,
        request_id: &str,
        started: Instant,
        early_answer: &mut Option<AnswerSender>,
    ) -> Result<Response<Body>, ProxyError> {
        let refusal = match (&target, &body.refused) {
            (Err(refusal), _) | (Ok(_), Some(refusal)) => Some(refusal.to_string()),
            (Ok(_), None) => None,
        };
        if let (Some(refusal), Some(upstream)) = (refusal, &self.upstream) {
            return self
                .forward_refused(
                    upstream,
                    dialect,
                    &parts,
                    body,
                    target.ok(),
                    translate,
                    request_id,
                    &refusal,
                )
                .await;
        }
        let target = target?;
        let endpoint = target.endpoint_label();
        let received_ns = now_nanos();
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
        let lines: Vec<Line<'_>> = parse_off_the_runtime(&body.decoded, options);
        let invalid = lines.iter().filter(|l| l.result.is_err()).count();
        // A full spool refuses the write before InfluxDB sees it, so the two never
        // diverge; the room is what the parsed lines' entry will take.
        let spool_room = match &self.spool {
            Some(spool) => Some(
                spool
                    .reserve(self.encoder.estimate_entry_bytes(
                        lines.iter().filter_map(|l| l.result.as_ref().ok()),
                    ))?,
            ),
            None => None,
        };
        self.metrics
            .points
            .with_label_values(&[endpoint, "parsed"])
            .inc_by((lines.len() - invalid) as u64);
        self.metrics
            .points
            .with_label_values(&[endpoint, "invalid"])
            .inc_by(invalid as u64);

        // Lines without a time get the receive time truncated as InfluxDB would truncate its own.
        let (stamp_units, stamp_ns) = target.stamp(received_ns);
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
                let limit = upstream.timeout();
                let exchange = self.forward(
                    upstream,
                    &parts,
                    forward_body,
                    stamp && body.gzipped,
                    request_id,
                    translate.then_some(&target),
                    limit + self.settings.late_answer_wait,
                );
                let answer = self
                    .answer_in_time(exchange, limit, endpoint, early_answer)
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
            .stored_lines(&accepted, &lines, &target, &parts, translate, stamp_ns)
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
                spool_room,
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
                let mut response = Response::new(no_content_body());
                *response.status_mut() = status;
                identify(response.headers_mut(), None);
                response
            }
        })
    }

    /// Forwards a write the upstream will refuse (a parameter or body it does not
    /// accept) as it came, and relays its answer; nothing is teed.
    #[allow(clippy::too_many_arguments)]
    async fn forward_refused(
        &self,
        upstream: &Upstream,
        dialect: Dialect,
        parts: &http::request::Parts,
        body: WriteBody,
        target: Option<WriteTarget>,
        translate: bool,
        request_id: &str,
        refusal: &str,
    ) -> Result<Response<Body>, ProxyError> {
        let endpoint = endpoint_label(dialect);
        let translate_to_v1 = target.as_ref().filter(|_| translate);
        let answer = self
            .forward(
                upstream,
                parts,
                body.raw,
                false,
                request_id,
                translate_to_v1,
                upstream.timeout(),
            )
            .await?;
        if answer.status.is_success() {
            // The upstream stored what we expected it to refuse: we cannot tell what.
            self.metrics
                .stored_not_teed
                .with_label_values(&[endpoint])
                .inc();
            tracing::warn!(
                %refusal,
                status = answer.status.as_u16(),
                "the upstream accepted a write the proxy expected it to refuse; nothing teed"
            );
        } else {
            tracing::debug!(%refusal, status = answer.status.as_u16(), "upstream refused the write");
        }
        Ok(relay(answer))
    }

    #[allow(clippy::too_many_arguments)]
    async fn forward(
        &self,
        upstream: &Upstream,
        parts: &http::request::Parts,
        body: Bytes,
        decompressed: bool,
        request_id: &str,
        translate_to_v1: Option<&WriteTarget>,
        limit: Duration,
    ) -> Result<BufferedResponse, ProxyError> {
        let mut headers = parts.headers.clone();
        let translated_path = translate_to_v1
            .map(|target| translate::v1_write_path(target, &mut headers, parts.uri.query()));
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
        let mut answer = upstream
            .send_buffered_within(request, limit)
            .await
            .map_err(|error| {
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

    /// Waits for the upstream's answer. Past `limit` the client gets its 503 at once,
    /// as before, but the write goes on waiting: InfluxDB may still store it, and then
    /// the tee must follow what it stored.
    async fn answer_in_time(
        &self,
        exchange: impl std::future::Future<Output = Result<BufferedResponse, ProxyError>>,
        limit: Duration,
        endpoint: &'static str,
        early_answer: &mut Option<AnswerSender>,
    ) -> Result<BufferedResponse, ProxyError> {
        tokio::pin!(exchange);
        tokio::select! {
            answer = &mut exchange => return answer,
            () = tokio::time::sleep(limit) => {}
        }
        self.metrics
            .upstream_errors
            .with_label_values(&["timeout"])
            .inc();
        if let Some(client) = early_answer.take() {
            let _ = client.send(Err(ProxyError::UpstreamUnavailable(format!(
                "no answer within {limit:?}"
            ))));
        }
        tracing::warn!(
            ?limit,
            "upstream answered not in time: the client has its 503; waiting on to tee what InfluxDB stores"
        );
        let answer = exchange.await;
        match &answer {
            Ok(late) => tracing::info!(
                status = late.status.as_u16(),
                "late upstream answer: teeing what it says was stored"
            ),
            Err(error) => {
                self.metrics
                    .partial_write_unresolved
                    .with_label_values(&[endpoint])
                    .inc();
                tracing::warn!(%error, "no upstream answer at all: whether the write was stored is unknown, nothing is teed");
            }
        }
        answer
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
        // A name that is not UTF-8 reads back lossily (U+FFFD), so whether InfluxDB
        // stored such a point cannot be told: it is not teed, and the write is counted
        // as unresolved.
        let (indices, candidates): (Vec<usize>, Vec<readback::Candidate<'_, '_>>) = {
            let mut unmatchable = 0usize;
            let kept = indices
                .into_iter()
                .zip(candidates)
                .filter(|(index, candidate)| {
                    if candidate.point.is_utf8() {
                        return true;
                    }
                    fates[*index] = Fate::Dropped;
                    unmatchable += 1;
                    false
                })
                .unzip();
            if unmatchable > 0 {
                self.metrics
                    .partial_write_unresolved
                    .with_label_values(&[endpoint])
                    .inc();
                tracing::warn!(
                    points = unmatchable,
                    "partial write: points whose names are not UTF-8 cannot be read back; they are not teed"
                );
            }
            kept
        };
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
        spool_room: Option<crate::spool::SpoolRoom>,
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
                .append_batch(&batch, &headers, spool_room)
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

/// Counts and logs a client that hung up before its write was answered; the write
/// itself runs on in its own task.
struct ClientGone<'a> {
    metrics: &'a Metrics,
    endpoint: &'static str,
    armed: bool,
}

impl Drop for ClientGone<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.metrics
                .client_disconnects
                .with_label_values(&[self.endpoint])
                .inc();
            tracing::info!(
                endpoint = self.endpoint,
                "client went away before the answer; the write completes and is teed"
            );
        }
    }
}

fn endpoint_label(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::V1 => "v1",
        Dialect::V2 => "v2",
        Dialect::V3 => "v3",
    }
}

/// Version and build as InfluxDB puts them on every answer, on the proxy's own
/// answers: the upstream's as last seen, or the gateway's without an upstream.
pub fn identify(headers: &mut http::HeaderMap, upstream: Option<&Upstream>) {
    let (version, build) = match upstream {
        Some(upstream) => {
            let identity = upstream.identity();
            (identity.version, identity.build)
        }
        None => (
            Some(GATEWAY_VERSION.to_owned()),
            Some(GATEWAY_BUILD.to_owned()),
        ),
    };
    for (name, value) in [("x-influxdb-version", version), ("x-influxdb-build", build)] {
        if let Some(value) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
            headers.insert(name, value);
        }
    }
}

/// An empty body of no declared size, for the proxy's own 204s: axum would turn an
/// exact size into `Content-Length: 0` on a `HEAD`, which InfluxDB never sends on a 204.
pub fn no_content_body() -> Body {
    Body::from_stream(futures_util::stream::empty::<
        Result<Bytes, std::convert::Infallible>,
    >())
}

/// What the gateway (`upstream = "none"`) says it is: the InfluxDB 2.x it answers as.
pub const GATEWAY_VERSION: &str = "v2.7.12";
pub const GATEWAY_BUILD: &str = "OSS";

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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shutdown_waits_for_writes_in_flight() {
        let in_flight = Arc::new(InFlight::default());
        assert_eq!(in_flight.drained(Duration::from_millis(1)).await, 0);
        let guard = in_flight.enter();
        assert_eq!(in_flight.drained(Duration::from_millis(20)).await, 1);
        let waiter = {
            let in_flight = Arc::clone(&in_flight);
            tokio::spawn(async move { in_flight.drained(Duration::from_secs(10)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(guard);
        assert_eq!(waiter.await.unwrap(), 0);
    }
}
