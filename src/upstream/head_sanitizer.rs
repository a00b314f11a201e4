//! A connection to the upstream whose answer heads have the control bytes HTTP
//! forbids replaced by spaces before hyper reads them.
//!
//! InfluxDB 1.x copies a refused line into `X-Influxdb-Error`, control bytes and all.
//! hyper can skip a header line with most of them, but a NUL fails the whole answer
//! (httparse refuses it even when told to ignore invalid headers), and the client would
//! get a 503 for a write InfluxDB stored. Only heads are touched: bodies are skipped by
//! their `Content-Length` or chunked framing (Go chunks answers over 4 KiB); an answer
//! framed otherwise (until close) ends the sanitizing for its connection, so a body is
//! never altered. Used for requests whose answers have a body exactly when their head
//! says so (no `HEAD`).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A head longer than this is passed on untouched (hyper refuses it anyway).
const MAX_HEAD: usize = 64 * 1024;
/// A chunk-size or trailer line longer than this: framing not followed.
const MAX_LINE: usize = 4 * 1024;

/// A connector whose connections sanitize answer heads, above TLS if any.
#[derive(Clone)]
pub struct SanitizingConnector<C>(pub C);

/// The plaintext of a connection, seen through tokio's I/O traits.
type Plain<R> = TokioIo<R>;

impl<C, R> tower_service::Service<Uri> for SanitizingConnector<C>
where
    C: tower_service::Service<Uri, Response = R>,
    C::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    C::Future: Send + 'static,
    R: hyper::rt::Read + hyper::rt::Write + Connection + Unpin + Send + 'static,
{
    type Response = TokioIo<HeadSanitizer<Plain<R>>>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.0.call(uri);
        Box::pin(async move {
            let connection = connecting.await.map_err(Into::into)?;
            Ok(TokioIo::new(HeadSanitizer::new(TokioIo::new(connection))))
        })
    }
}

/// Where the reader is in the stream of answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Head,
    Body(u64),
    /// Chunked body: the line with the next chunk's size.
    ChunkSize,
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    /// After the last chunk: trailer lines up to an empty one.
    Trailer,
    /// Framing this scanner does not follow: leave the rest alone.
    Untouched,
}

/// Sanitizes the heads of the answers read from `inner`.
pub struct HeadSanitizer<T> {
    inner: T,
    phase: Phase,
    /// The head, or chunk-size or trailer line, read so far.
    head: Vec<u8>,
}

impl<T> HeadSanitizer<T> {
    pub fn new(inner: T) -> Self {
        HeadSanitizer {
            inner,
            phase: Phase::Head,
            head: Vec::new(),
        }
    }

    /// Sanitizes the heads in freshly read bytes.
    fn scan(&mut self, mut data: &mut [u8]) {
        while !data.is_empty() {
            match self.phase {
                Phase::Untouched => return,
                Phase::Body(remaining) | Phase::ChunkData(remaining) => {
                    let skip = remaining.min(data.len() as u64);
                    self.phase = match (self.phase, remaining - skip) {
                        (Phase::Body(_), 0) => Phase::Head,
                        (Phase::Body(_), left) => Phase::Body(left),
                        (_, 0) => Phase::ChunkEnd,
                        (_, left) => Phase::ChunkData(left),
                    };
                    data = &mut data[skip as usize..];
                }
                Phase::ChunkSize | Phase::ChunkEnd | Phase::Trailer => {
                    let Some(end) = data.iter().position(|b| *b == b'\n') else {
                        self.head.extend_from_slice(data);
                        if self.head.len() > MAX_LINE {
                            self.phase = Phase::Untouched;
                        }
                        return;
                    };
                    self.head.extend_from_slice(&data[..end]);
                    data = &mut data[end + 1..];
                    self.phase = after_line(self.phase, self.head.trim_ascii_end());
                    self.head.clear();
                }
                Phase::Head => {
                    let mut used = 0;
                    for byte in data.iter_mut() {
                        used += 1;
                        if (*byte < 0x20 && !matches!(*byte, b'\t' | b'\r' | b'\n'))
                            || *byte == 0x7f
                        {
                            *byte = b' ';
                        }
                        self.head.push(*byte);
                        if self.head.ends_with(b"\r\n\r\n") {
                            self.phase = next_phase(&self.head);
                            self.head.clear();
                            break;
                        }
                        if self.head.len() > MAX_HEAD {
                            self.phase = Phase::Untouched;
                            self.head = Vec::new();
                            break;
                        }
                    }
                    data = &mut data[used..];
                }
            }
        }
    }
}

/// Where a chunked body goes after one of its lines.
fn after_line(phase: Phase, line: &[u8]) -> Phase {
    match phase {
        Phase::ChunkSize => {
            let size = line
                .split(|b| *b == b';')
                .next()
                .unwrap_or_default()
                .trim_ascii();
            let size = std::str::from_utf8(size)
                .ok()
                .and_then(|hex| u64::from_str_radix(hex, 16).ok());
            match size {
                Some(0) => Phase::Trailer,
                Some(n) => Phase::ChunkData(n),
                None => Phase::Untouched,
            }
        }
        Phase::ChunkEnd if line.is_empty() => Phase::ChunkSize,
        Phase::Trailer if line.is_empty() => Phase::Head,
        Phase::Trailer => Phase::Trailer,
        _ => Phase::Untouched,
    }
}

/// What follows a complete head: nothing (1xx, 204, 304, `Content-Length: 0`), a
/// body of known length, or framing left alone.
fn next_phase(head: &[u8]) -> Phase {
    let mut lines = head.split(|b| *b == b'\n').map(<[u8]>::trim_ascii);
    let status = lines
        .next()
        .and_then(|line| line.split(|b| *b == b' ').nth(1))
        .and_then(|code| std::str::from_utf8(code).ok()?.parse::<u16>().ok());
    match status {
        Some(100..=199 | 204 | 304) => return Phase::Head,
        Some(_) => {}
        None => return Phase::Untouched,
    }
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Only a plain `chunked` is followed; other codings end the sanitizing.
            if !value.eq_ignore_ascii_case(b"chunked") || chunked {
                return Phase::Untouched;
            }
            chunked = true;
            continue;
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            let parsed = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
            match (length, parsed) {
                (None, Some(n)) => length = Some(n),
                (Some(a), Some(b)) if a == b => {}
                _ => return Phase::Untouched,
            }
        }
    }
    match length {
        _ if chunked => Phase::ChunkSize,
        Some(0) => Phase::Head,
        Some(n) => Phase::Body(n),
        None => Phase::Untouched,
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for HeadSanitizer<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let this = &mut *self;
        this.scan(&mut buf.filled_mut()[before..]);
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for HeadSanitizer<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<T: Connection> Connection for HeadSanitizer<T> {
    fn connected(&self) -> Connected {
        self.inner.connected()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scanned(chunks: &[&[u8]]) -> (Vec<u8>, Phase) {
        let mut sanitizer = HeadSanitizer::new(());
        let mut out = Vec::new();
        for chunk in chunks {
            let mut bytes = chunk.to_vec();
            sanitizer.scan(&mut bytes);
            out.extend_from_slice(&bytes);
        }
        (out, sanitizer.phase)
    }

    #[test]
    fn control_bytes_in_heads_become_spaces_and_bodies_stay() {
        let first = b"HTTP/1.1 400 Bad Request\r\nX-Influxdb-Error: a\x00b\x01\x7f\r\nContent-Length: 3\r\n\r\n\x00\x01\x02";
        let second = b"HTTP/1.1 204 No Content\r\nX-E: \x00\r\n\r\nHTTP/1.1 200 OK\r\nX: \x1f\r\n";
        // Split mid-head and mid-body: reads end anywhere.
        let (out, phase) = scanned(&[&first[..30], &first[30..70], &first[70..], second]);
        let mut expected = b"HTTP/1.1 400 Bad Request\r\nX-Influxdb-Error: a b  \r\nContent-Length: 3\r\n\r\n\x00\x01\x02".to_vec();
        expected.extend_from_slice(
            b"HTTP/1.1 204 No Content\r\nX-E:  \r\n\r\nHTTP/1.1 200 OK\r\nX:  \r\n",
        );
        assert_eq!(out, expected);
        assert_eq!(phase, Phase::Head);
    }

    #[test]
    fn chunked_bodies_are_skipped_to_the_next_head() {
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\n\x00\n\x01\r\n10\r\n\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\r\n0\r\nT: \x00\r\n\r\n";
        let next = b"HTTP/1.1 400 Bad Request\r\nX: \x00\r\nContent-Length: 0\r\n\r\n";
        for split in [1, 7, 50, 60, 80] {
            let mut input = chunked.to_vec();
            input.extend_from_slice(next);
            let (out, phase) = scanned(&[&input[..split], &input[split..]]);
            // The trailer is left as it came: it is not a head.
            assert_eq!(&out[..chunked.len()], chunked, "split at {split}");
            assert_eq!(
                &out[chunked.len()..],
                b"HTTP/1.1 400 Bad Request\r\nX:  \r\nContent-Length: 0\r\n\r\n"
            );
            assert_eq!(phase, Phase::Head);
        }
    }

    #[test]
    fn other_framing_is_left_alone() {
        let gzip_chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\x00";
        let (out, phase) = scanned(&[gzip_chunked]);
        assert_eq!(out, gzip_chunked);
        assert_eq!(phase, Phase::Untouched);
        let until_close = b"HTTP/1.1 200 OK\r\n\r\n\x00";
        assert_eq!(scanned(&[until_close]).0, until_close);
    }
}
