//! The Segment Webhooks destination (`segment-spec.md` §2): `POST /webhooks/segment`
//! with one event, or the Actions batch array.
//!
//! A body is authenticated before it is parsed, and as a whole or not at all:
//! - `Authorization: Bearer <segment.webhook_token>` (set in the Actions mapping's
//!   headers) authenticates the whole body, so batches of any size are accepted;
//! - `X-Segment-Signature` (Segment's opt-in header) is hex HMAC-SHA1 of the whole
//!   body with `segment.webhook_secret`;
//! - `X-Signature` is the same HMAC, but for a batch array Segment signs only element
//!   0. spur checks it over the bytes inside the array's brackets, so it matches only
//!   when element 0 is the whole array: a single event or a one-element array. A
//!   longer batch signed that way is refused (anyone holding one signed delivery
//!   could append events to it), with a message saying how to enable batches.
//!
//! Every comparison is in constant time. A refused body is 401 and nothing is
//! stored. Items have the Tracking API's limits (count and size).

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use hmac::{Hmac, Mac};
use serde_json::Value;
use serde_json::value::RawValue;
use sha1::Sha1;
use subtle::ConstantTimeEq;

use super::body::{json_error, read};
use super::{IngestState, Sorted};
use crate::api_error::ApiError;
use crate::event::{BatchDefaults, MAX_BATCH_ITEMS, Origin};

/// Webhook bodies may carry large Actions batches.
const MAX_WEBHOOK_BYTES: usize = 8 << 20;

/// A delivered event is named on its own (the body is one, or an array of them).
const ITEM: super::ItemNames = super::ItemNames {
    field: "",
    item: "event",
};

pub(super) async fn segment(
    State(st): State<IngestState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    if st.webhook_secret.is_none() && st.webhook_token.is_none() {
        return Err(ApiError::Unauthorized(
            "webhooks are disabled: set segment.webhook_secret to the destination's shared \
             secret (and segment.webhook_token for batches)"
                .into(),
        ));
    }
    let bytes = read(&headers, body, MAX_WEBHOOK_BYTES).await?;
    authenticate(&st, &headers, &bytes)?;

    let is_array = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    let items: Vec<&RawValue> = if is_array {
        serde_json::from_slice(&bytes).map_err(|e| json_error(&e))?
    } else {
        vec![serde_json::from_slice(&bytes).map_err(|e| json_error(&e))?]
    };
    if items.len() > MAX_BATCH_ITEMS {
        return Err(ApiError::bad_field(
            "too_many_events",
            "batch",
            format!(
                "the body has {} events; the limit is {MAX_BATCH_ITEMS}",
                items.len()
            ),
        ));
    }

    let now = st.queue.clock().now();
    let mut sorted = Sorted::new(items.len(), now.timestamp_millis(), &headers);
    for (i, raw) in items.iter().enumerate() {
        sorted.push(
            i,
            super::prepare_item(raw, &BatchDefaults::default(), Origin::Delivered, ITEM, now),
        );
    }
    if sorted.prepared.is_empty() {
        let (message, field) = sorted.first_rejection("no events in the body");
        return Err(sorted.refuse(&st, "invalid_event", message, field));
    }
    sorted.commit(&st).await
}

/// Checks that the whole body comes from Segment (see the module doc).
fn authenticate(st: &IngestState, headers: &HeaderMap, body: &[u8]) -> Result<(), ApiError> {
    let header = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(token) = &st.webhook_token
        && let Some(sent) = header(AUTHORIZATION.as_str())
    {
        let sent = sent
            .strip_prefix("Bearer ")
            .or_else(|| sent.strip_prefix("bearer "))
            .unwrap_or("");
        return if bool::from(token.expose().as_bytes().ct_eq(sent.trim().as_bytes())) {
            Ok(())
        } else {
            Err(ApiError::Unauthorized(
                "the bearer token does not match segment.webhook_token".into(),
            ))
        };
    }
    let Some(secret) = &st.webhook_secret else {
        return Err(ApiError::Unauthorized(
            "missing `Authorization: Bearer <segment.webhook_token>` header".into(),
        ));
    };
    let secret = secret.expose().as_bytes();
    if let Some(sig) = header("x-segment-signature") {
        return check_hmac(
            secret,
            sig,
            body,
            "X-Segment-Signature does not match the body",
        );
    }
    let Some(sig) = header("x-signature") else {
        return Err(ApiError::Unauthorized(
            "missing X-Signature header (or `Authorization: Bearer` with segment.webhook_token)"
                .into(),
        ));
    };
    match array_inner(body) {
        None => check_hmac(secret, sig, body, "X-Signature does not match the body"),
        Some(inner) => check_hmac(
            secret,
            sig,
            inner,
            "X-Signature does not match: Segment signs only the first event of a batch, so a \
             batch of several events is accepted only with segment.webhook_token (sent by the \
             Actions mapping as `Authorization: Bearer …`) or the X-Segment-Signature header",
        ),
    }
}

/// The bytes inside a JSON array's outer brackets, when the body is an array.
fn array_inner(body: &[u8]) -> Option<&[u8]> {
    let trimmed = body.trim_ascii();
    trimmed
        .strip_prefix(b"[")?
        .strip_suffix(b"]")
        .map(<[u8]>::trim_ascii)
}

fn check_hmac(secret: &[u8], sig: &str, signed: &[u8], mismatch: &str) -> Result<(), ApiError> {
    let Ok(expected) = hex::decode(sig) else {
        return Err(ApiError::Unauthorized(
            "the signature is not a hex digest".into(),
        ));
    };
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(signed);
    mac.verify_slice(&expected)
        .map_err(|_| ApiError::Unauthorized(mismatch.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(key: &[u8], bytes: &[u8]) -> String {
        let mut mac = Hmac::<Sha1>::new_from_slice(key).unwrap();
        mac.update(bytes);
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn x_signature_authenticates_only_a_one_element_array() {
        let element = br#"{"a":"\u00e9 x","b":[1,2]}"#;
        let sig = sign(b"k", element);
        assert!(
            check_hmac(
                b"k",
                &sig,
                array_inner(br#"[{"a":"\u00e9 x","b":[1,2]}]"#).unwrap(),
                ""
            )
            .is_ok()
        );
        assert!(
            check_hmac(
                b"k",
                &sig,
                array_inner(br#"[{"a":"\u00e9 x","b":[1,2]},{"c":3}]"#).unwrap(),
                ""
            )
            .is_err()
        );
        assert!(check_hmac(b"other", &sig, element, "").is_err());
        assert_eq!(array_inner(b"{}"), None);
        assert_eq!(array_inner(b" [ ] "), Some(&b""[..]));
    }
}
