//! Reading a write body under a size cap that holds both for the bytes on the wire
//! and for the bytes after gzip decompression, so no body can make memory grow
//! past the cap (a small gzip bomb included).

use std::io::Read;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body_util::BodyExt;

use super::error::ProxyError;
use crate::write::request::Server;

/// A write body as received, plus the line protocol the server will read from it.
pub struct WriteBody {
    /// Exactly the bytes the client sent.
    pub raw: Bytes,
    /// The line protocol: `raw` itself, or its decompression.
    pub decoded: Bytes,
    pub gzipped: bool,
    /// Why the server will refuse this body and store nothing (an encoding it does not
    /// know, gzip that does not decompress): the proxy forwards it as it came and
    /// relays the server's answer.
    pub refused: Option<ProxyError>,
}

/// How `server` reads `Content-Encoding` (the first value, as Go's `Header.Get` and
/// hyper's `HeaderMap::get` do): whether it gunzips the body, or why it refuses it.
pub fn decoding(headers: &HeaderMap, server: Server) -> Result<bool, ProxyError> {
    let Some(value) = headers.get(http::header::CONTENT_ENCODING) else {
        return Ok(false);
    };
    let value = value.to_str().map_err(|_| {
        ProxyError::BadGzip("the Content-Encoding header is not valid UTF-8".to_owned())
    });
    match server {
        // `r.Header.Get("Content-Encoding") == "gzip"`; anything else is read as it is.
        Server::InfluxDb1 => Ok(value.is_ok_and(|v| v.trim() == "gzip")),
        // `points.BatchReadCloser`: gzip and x-gzip; anything else is read as it is.
        Server::InfluxDb2 => Ok(value.is_ok_and(|v| matches!(v.trim(), "gzip" | "x-gzip"))),
        // `read_body`: identity or gzip, anything else refused.
        Server::InfluxDb3 => match value?.trim() {
            "identity" => Ok(false),
            "gzip" => Ok(true),
            other => Err(ProxyError::BadGzip(format!(
                "invalid content encoding: {other}"
            ))),
        },
        Server::Gateway | Server::Other => match value?.trim().to_ascii_lowercase().as_str() {
            "" | "identity" => Ok(false),
            "gzip" | "x-gzip" => Ok(true),
            other => Err(ProxyError::BadGzip(format!(
                "unsupported Content-Encoding: {other}"
            ))),
        },
    }
}

/// Reads the whole body, refusing it as soon as it passes `limit` bytes, and
/// decodes it as `server` would. The cap and the gzip-bomb guard are the proxy's own
/// safety and answered by it; a body `server` refuses is only marked so
/// ([`WriteBody::refused`]), unless the proxy decides for `server` ([`Server::proxy_decides`]).
pub async fn read_capped(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
    server: Server,
) -> Result<WriteBody, ProxyError> {
    if let Some(length) = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if length > limit as u64 {
            return Err(ProxyError::BodyTooLarge { limit });
        }
    }
    let gzipped = match decoding(headers, server) {
        Err(refusal) if server.proxy_decides() => return Err(refusal),
        decided => decided,
    };
    let raw = collect_capped(body, limit).await?;
    let (gzipped, decoded, refused) = match gzipped {
        Err(refusal) => (false, Bytes::new(), Some(refusal)),
        Ok(false) => (false, raw.clone(), None),
        // Go's gzip reader refuses an empty body (EOF before the header).
        Ok(true) if raw.is_empty() && !server.proxy_decides() => (
            true,
            Bytes::new(),
            Some(ProxyError::BadGzip("gzip: EOF".to_owned())),
        ),
        Ok(true) => match gunzip_capped(&raw, limit) {
            Ok(decoded) => (true, decoded, None),
            Err(ProxyError::BadGzip(reason)) if !server.proxy_decides() => {
                (true, Bytes::new(), Some(ProxyError::BadGzip(reason)))
            }
            Err(error) => return Err(error),
        },
    };
    Ok(WriteBody {
        raw,
        decoded,
        gzipped,
        refused,
    })
}

async fn collect_capped(mut body: Body, limit: usize) -> Result<Bytes, ProxyError> {
    let mut first: Option<Bytes> = None;
    let mut buffer: Option<BytesMut> = None;
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            if super::timed_body::BodyTimeout::is_in(&e) {
                ProxyError::BodyTimeout(e.to_string())
            } else {
                ProxyError::BodyRead(e.to_string())
            }
        })?;
        let Ok(chunk) = frame.into_data() else {
            continue;
        };
        total += chunk.len();
        if total > limit {
            return Err(ProxyError::BodyTooLarge { limit });
        }
        // A body that arrives in one chunk is kept as it is, without a copy.
        match (&mut first, &mut buffer) {
            (None, None) => first = Some(chunk),
            (Some(head), None) => {
                let mut joined = BytesMut::with_capacity(head.len() + chunk.len());
                joined.extend_from_slice(head);
                joined.extend_from_slice(&chunk);
                buffer = Some(joined);
                first = None;
            }
            (_, Some(joined)) => joined.extend_from_slice(&chunk),
        }
    }
    Ok(match (first, buffer) {
        (_, Some(joined)) => joined.freeze(),
        (Some(head), None) => head,
        (None, None) => Bytes::new(),
    })
}

/// Decompresses a (possibly multi-member) gzip body, stopping one byte past `limit`.
pub fn gunzip_capped(compressed: &[u8], limit: usize) -> Result<Bytes, ProxyError> {
    let decoder = flate2::read::MultiGzDecoder::new(compressed);
    let mut out = Vec::with_capacity(compressed.len().saturating_mul(4).min(limit));
    decoder
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| ProxyError::BadGzip(format!("gzip: {e}")))?;
    if out.len() > limit {
        return Err(ProxyError::BodyTooLarge { limit });
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{write::GzEncoder, Compression};
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn gzip_bomb_stops_at_the_limit() {
        let bomb = gzip(&vec![b'a'; 10 * 1024 * 1024]);
        assert!(bomb.len() < 64 * 1024);
        assert!(matches!(
            gunzip_capped(&bomb, 1024 * 1024),
            Err(ProxyError::BodyTooLarge { .. })
        ));
    }

    #[test]
    fn bad_gzip_is_reported() {
        assert!(matches!(
            gunzip_capped(b"not gzip", 100),
            Err(ProxyError::BadGzip(_))
        ));
        assert_eq!(
            &gunzip_capped(&gzip(b"cpu v=1\n"), 100).unwrap()[..],
            b"cpu v=1\n"
        );
    }

    #[tokio::test]
    async fn each_server_decodes_its_own_encodings() {
        let body = || Body::from(gzip(b"cpu v=1\n"));
        let with = |encoding: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(http::header::CONTENT_ENCODING, encoding.parse().unwrap());
            headers
        };
        let read = |encoding: &'static str, server| async move {
            read_capped(body(), &with(encoding), 1024, server).await
        };
        let x_gzip_1x = read("x-gzip", Server::InfluxDb1).await.unwrap();
        assert!(!x_gzip_1x.gzipped && x_gzip_1x.refused.is_none());
        assert_eq!(x_gzip_1x.decoded, x_gzip_1x.raw);
        let x_gzip_2x = read("x-gzip", Server::InfluxDb2).await.unwrap();
        assert_eq!(&x_gzip_2x.decoded[..], b"cpu v=1\n");
        assert!(read("br", Server::InfluxDb2)
            .await
            .unwrap()
            .refused
            .is_none());
        assert!(read("br", Server::InfluxDb3)
            .await
            .unwrap()
            .refused
            .is_some());
        assert!(read("br", Server::Gateway).await.is_err());
        let broken = read_capped(
            Body::from("not gzip"),
            &with("gzip"),
            1024,
            Server::InfluxDb2,
        )
        .await;
        assert!(matches!(
            broken.unwrap().refused,
            Some(ProxyError::BadGzip(_))
        ));
        let bomb = Body::from(gzip(&vec![b'a'; 1 << 20]));
        assert!(matches!(
            read_capped(bomb, &with("gzip"), 1024, Server::InfluxDb1).await,
            Err(ProxyError::BodyTooLarge { .. })
        ));
    }

    #[tokio::test]
    async fn streamed_body_over_the_limit_is_refused() {
        let chunks: Vec<Result<Bytes, std::io::Error>> =
            (0..10).map(|_| Ok(Bytes::from(vec![b'x'; 100]))).collect();
        let body = Body::from_stream(futures_util::stream::iter(chunks));
        let result = read_capped(body, &HeaderMap::new(), 550, Server::InfluxDb2).await;
        assert!(matches!(
            result,
            Err(ProxyError::BodyTooLarge { limit: 550 })
        ));
    }
}
