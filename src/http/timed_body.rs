//! A request body with a clock: no more than `idle` between two frames, and, once
//! `grace` has passed, at least `min_bytes_per_second` on average. A client that
//! trickles a body (slowloris on the body) holds a connection, a body buffer and a
//! spot in the in-flight budget; this lets go of it.
//!
//! InfluxDB itself sets no body timeout by default (`http-read-timeout = 0`), so any
//! limit here is the proxy's own safety: it answers 408 and closes the connection.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// Limits on how slowly a body may arrive.
#[derive(Debug, Clone, Copy)]
pub struct BodyPace {
    /// Longest wait for the next bytes.
    pub idle: Duration,
    /// Average rate a body must keep up once `grace` has passed; 0 turns it off.
    pub min_bytes_per_second: u64,
    pub grace: Duration,
}

impl Default for BodyPace {
    fn default() -> Self {
        BodyPace {
            idle: Duration::from_secs(30),
            min_bytes_per_second: 1024,
            grace: Duration::from_secs(10),
        }
    }
}

/// Why a body read was cut off.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BodyTimeout(pub String);

impl BodyTimeout {
    /// Whether `error`, or any error it wraps, is a body timeout.
    pub fn is_in(error: &(dyn std::error::Error + 'static)) -> bool {
        let mut current = Some(error);
        while let Some(error) = current {
            if error.is::<BodyTimeout>() {
                return true;
            }
            current = error.source();
        }
        false
    }
}

/// `Body` under a [`BodyPace`].
pub struct TimedBody {
    inner: Body,
    pace: BodyPace,
    started: Instant,
    received: u64,
    idle: Pin<Box<Sleep>>,
}

impl TimedBody {
    pub fn new(inner: Body, pace: BodyPace) -> TimedBody {
        let now = Instant::now();
        TimedBody {
            inner,
            pace,
            started: now,
            received: 0,
            idle: Box::pin(tokio::time::sleep_until(now + pace.idle)),
        }
    }

    /// The same body as an axum `Body`.
    pub fn into_body(self) -> Body {
        Body::new(self)
    }

    fn too_slow(&self, now: Instant) -> bool {
        let elapsed = now.duration_since(self.started);
        self.pace.min_bytes_per_second > 0
            && elapsed > self.pace.grace
            && (self.received as f64)
                < self.pace.min_bytes_per_second as f64 * elapsed.as_secs_f64()
    }
}

impl http_body::Body for TimedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let now = Instant::now();
                if let Some(data) = frame.data_ref() {
                    self.received += data.len() as u64;
                }
                if self.too_slow(now) {
                    let message = format!(
                        "request body slower than {} bytes/s",
                        self.pace.min_bytes_per_second
                    );
                    return Poll::Ready(Some(Err(axum::Error::new(BodyTimeout(message)))));
                }
                let deadline = now + self.pace.idle;
                self.idle.as_mut().reset(deadline);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => match self.idle.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(axum::Error::new(BodyTimeout(format!(
                    "no request body bytes for {:?}",
                    self.pace.idle
                )))))),
                Poll::Pending => Poll::Pending,
            },
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn trickle(chunks: usize, every: Duration) -> Body {
        let stream = futures_util::stream::unfold(0usize, move |sent| async move {
            if sent == chunks {
                return None;
            }
            tokio::time::sleep(every).await;
            Some((Ok::<_, std::io::Error>(Bytes::from_static(b"x")), sent + 1))
        });
        Body::from_stream(stream)
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_body_is_cut_off() {
        let pace = BodyPace {
            idle: Duration::from_secs(5),
            min_bytes_per_second: 0,
            grace: Duration::ZERO,
        };
        let body = TimedBody::new(trickle(3, Duration::from_secs(6)), pace).into_body();
        let error = body.collect().await.unwrap_err();
        assert!(BodyTimeout::is_in(&error), "{error}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickle_under_the_minimum_rate_is_cut_off_after_the_grace() {
        let pace = BodyPace {
            idle: Duration::from_secs(5),
            min_bytes_per_second: 100,
            grace: Duration::from_secs(10),
        };
        // One byte every 4 s never trips the idle timer, but is far below 100 bytes/s.
        let body = TimedBody::new(trickle(10, Duration::from_secs(4)), pace).into_body();
        let error = body.collect().await.unwrap_err();
        assert!(
            error.to_string().contains("slower than 100 bytes/s"),
            "{error}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_body_passes() {
        let body = TimedBody::new(trickle(20, Duration::from_millis(1)), BodyPace::default());
        let bytes = body.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(bytes.len(), 20);
    }
}
