//! The Segment Webhooks destination (`segment-spec.md` §2): `POST /webhooks/segment`
//! with one event, or the Actions batch array.
//!
//! `X-Signature` is hex HMAC-SHA1 over the body, or for an array over element 0 only
//! (its exact bytes, sliced from the body — never re-serialised). The newer
//! `X-Segment-Signature` covers the whole body and is preferred when present.
//! Digests are compared in constant time. A missing or wrong signature is 401 and
//! nothing is stored.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use serde_json::Value;
use serde_json::value::RawValue;
use sha1::Sha1;

use super::body::{json_error, read};
use super::{IngestState, Sorted};
use crate::api_error::ApiError;
use crate::event::{BatchDefaults, InvalidEvent, Origin, normalize};

/// Webhook bodies may carry large Actions batches.
const MAX_WEBHOOK_BYTES: usize = 8 << 20;

pub(super) async fn segment(
    State(st): State<IngestState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let Some(secret) = &st.webhook_secret else {
        return Err(ApiError::Unauthorized(
            "webhooks are disabled: set segment.webhook_secret to the destination's shared secret"
                .into(),
        ));
    };
    let bytes = read(&headers, body, MAX_WEBHOOK_BYTES).await?;
    let is_array = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    let items: Vec<&RawValue> = if is_array {
        serde_json::from_slice(&bytes).map_err(|e| json_error(&e))?
    } else {
        vec![serde_json::from_slice(&bytes).map_err(|e| json_error(&e))?]
    };
    verify(
        secret.expose().as_bytes(),
        &headers,
        &bytes,
        is_array,
        items.first().copied(),
    )?;

    let now = chrono::Utc::now();
    let mut sorted = Sorted::new(items.len(), now.timestamp_millis());
    for (i, raw) in items.iter().enumerate() {
        let Ok(Value::Object(mut item)) = serde_json::from_str::<Value>(raw.get()) else {
            let e = InvalidEvent::new("invalid_event", "", "each event must be a JSON object");
            sorted.push(i, Err(e));
            continue;
        };
        // A delivered event's write key is its source's; like the tracking API,
        // spur does not keep it.
        item.remove("writeKey");
        let event = normalize(
            item,
            None,
            &BatchDefaults::default(),
            Origin::Delivered,
            now,
        );
        sorted.push(i, event);
    }
    if sorted.prepared.is_empty() {
        let first = sorted.rejected.first();
        let message = first
            .and_then(|r| r["error"].as_str())
            .unwrap_or("no events in the body")
            .to_owned();
        let field = first
            .and_then(|r| r["field"].as_str())
            .filter(|f| !f.is_empty())
            .map(str::to_owned);
        return Err(sorted.refuse(&st, "invalid_event", message, field));
    }
    sorted.commit(&st).await
}

fn verify(
    secret: &[u8],
    headers: &HeaderMap,
    body: &[u8],
    is_array: bool,
    first: Option<&RawValue>,
) -> Result<(), ApiError> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let (signature, signed): (&str, &[u8]) = if let Some(sig) = header("x-segment-signature") {
        (sig, body)
    } else if let Some(sig) = header("x-signature") {
        let signed = if is_array {
            first.map_or(&b""[..], |r| r.get().as_bytes())
        } else {
            body
        };
        (sig, signed)
    } else {
        return Err(ApiError::Unauthorized("missing X-Signature header".into()));
    };
    let Ok(expected) = hex::decode(signature) else {
        return Err(ApiError::Unauthorized(
            "X-Signature is not a hex digest".into(),
        ));
    };
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(signed);
    mac.verify_slice(&expected)
        .map_err(|_| ApiError::Unauthorized("X-Signature does not match the body".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_signature_covers_exactly_element_zero() {
        let body = br#"[{"a":"\u00e9 x","b":[1,2]},{"c":3}]"#;
        let items: Vec<&RawValue> = serde_json::from_slice(body).unwrap();
        let mut mac = Hmac::<Sha1>::new_from_slice(b"k").unwrap();
        mac.update(br#"{"a":"\u00e9 x","b":[1,2]}"#);
        let sig = hex::encode(mac.finalize().into_bytes());
        let mut headers = HeaderMap::new();
        headers.insert("x-signature", sig.parse().unwrap());
        assert!(verify(b"k", &headers, body, true, items.first().copied()).is_ok());
        assert!(verify(b"other", &headers, body, true, items.first().copied()).is_err());
    }
}
