//! Reading request bodies: size limits (checked on the decompressed bytes), gzip,
//! and JSON parse errors that say where the body broke.

use std::io::Read;

use axum::body::{Body, Bytes};
use axum::http::HeaderMap;
use axum::http::header::CONTENT_ENCODING;
use flate2::read::GzDecoder;

use crate::api_error::ApiError;

/// Reads the body, gunzipping it when `Content-Encoding: gzip`; refuses more than
/// `limit` bytes (before or after decompression).
pub(crate) async fn read(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::bad(
            "too_large",
            if limit >= 1024 {
                format!("request body exceeds the {} KB limit", limit / 1024)
            } else {
                format!("request body exceeds the {limit} byte limit")
            },
        )
    };
    let raw = axum::body::to_bytes(body, limit + 1)
        .await
        .map_err(|_| too_large())?;
    if raw.len() > limit {
        return Err(too_large());
    }
    let encoding = headers
        .get(CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map_or("", str::trim);
    match encoding {
        "" | "identity" => Ok(raw),
        e if e.eq_ignore_ascii_case("gzip") => {
            let mut out = Vec::with_capacity(raw.len() * 4);
            GzDecoder::new(&raw[..])
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| {
                    ApiError::bad(
                        "invalid_gzip",
                        format!("gzip body could not be decoded: {e}"),
                    )
                })?;
            if out.len() > limit {
                return Err(too_large());
            }
            Ok(Bytes::from(out))
        }
        other => Err(ApiError::bad(
            "unsupported_encoding",
            format!(
                "Content-Encoding {} is not supported (use gzip or none)",
                crate::event::quote(other)
            ),
        )),
    }
}

/// A JSON parse error as a 400 that says where the body broke.
pub(super) fn json_error(e: &serde_json::Error) -> ApiError {
    ApiError::bad("invalid_json", format!("body is not valid JSON: {e}"))
}
