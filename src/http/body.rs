//! Reading a write body under a size cap that holds both for the bytes on the wire
//! and for the bytes after gzip decompression, so no body can make memory grow
//! past the cap (a small gzip bomb included).

use std::io::Read;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body_util::BodyExt;

use super::error::ProxyError;

/// A write body as received, plus its decompressed form when it came gzipped.
pub struct WriteBody {
    /// Exactly the bytes the client sent.
    pub raw: Bytes,
    /// The line protocol: `raw` itself, or its decompression.
    pub decoded: Bytes,
    pub gzipped: bool,
}

/// Whether `Content-Encoding` says gzip; anything else but identity is refused by the caller.
pub fn content_encoding_is_gzip(headers: &HeaderMap) -> Result<bool, ProxyError> {
    match headers.get(http::header::CONTENT_ENCODING) {
        None => Ok(false),
        Some(value) => {
            let value = value
                .to_str()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            match value.as_str() {
                "" | "identity" => Ok(false),
                "gzip" | "x-gzip" => Ok(true),
                _ => Err(ProxyError::BadGzip(format!(
                    "unsupported Content-Encoding: {value}"
                ))),
            }
        }
    }
}

/// Reads the whole body, refusing it as soon as it passes `limit` bytes.
pub async fn read_capped(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
) -> Result<WriteBody, ProxyError> {
    let gzipped = content_encoding_is_gzip(headers)?;
    if let Some(length) = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if length > limit as u64 {
            return Err(ProxyError::BodyTooLarge { limit });
        }
    }
    let raw = collect_capped(body, limit).await?;
    let decoded = if gzipped {
        gunzip_capped(&raw, limit)?
    } else {
        raw.clone()
    };
    Ok(WriteBody {
        raw,
        decoded,
        gzipped,
    })
}

async fn collect_capped(mut body: Body, limit: usize) -> Result<Bytes, ProxyError> {
    let mut first: Option<Bytes> = None;
    let mut buffer: Option<BytesMut> = None;
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ProxyError::BodyRead(e.to_string()))?;
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
    async fn streamed_body_over_the_limit_is_refused() {
        let chunks: Vec<Result<Bytes, std::io::Error>> =
            (0..10).map(|_| Ok(Bytes::from(vec![b'x'; 100]))).collect();
        let body = Body::from_stream(futures_util::stream::iter(chunks));
        let result = read_capped(body, &HeaderMap::new(), 550).await;
        assert!(matches!(
            result,
            Err(ProxyError::BodyTooLarge { limit: 550 })
        ));
    }
}
