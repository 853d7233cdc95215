//! Segment's HTTP Tracking API (`segment-spec.md` §1): `/v1/<type>` and its short
//! forms, `/v1/batch`, `/v1/b`, `/v1/import`.
//!
//! Auth: the write key as Basic user (with or without the colon) or `writeKey` in
//! the body, checked against `segment.write_keys` when set. A single invalid event is
//! a 400 naming the field; in a batch, invalid items are rejected alone and listed in
//! the 200 answer.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use subtle::ConstantTimeEq;

use super::body::{json_error, read};
use super::{IngestState, Sorted};
use crate::api_error::ApiError;
use crate::event::{
    BatchDefaults, EventType, InvalidEvent, MAX_BATCH_BYTES, MAX_BATCH_ITEMS, MAX_EVENT_BYTES,
    Origin, normalize,
};

/// Items of a batch are named by the `batch` field.
const ITEM: super::ItemNames = super::ItemNames {
    field: "batch",
    item: "batch item",
};
use crate::queue::PreparedEvent;

/// `POST /v1/<type>`.
pub(super) async fn single(
    State(st): State<IngestState>,
    kind: EventType,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let bytes = read(&headers, body, MAX_EVENT_BYTES).await?;
    let mut item: Map<String, Value> = match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => m,
        Ok(_) => {
            return Err(ApiError::bad(
                "invalid_body",
                "body must be a JSON object (one event)",
            ));
        }
        Err(e) => return Err(json_error(&e)),
    };
    let body_key = match item.remove("writeKey") {
        Some(Value::String(k)) => Some(k),
        _ => None,
    };
    check_write_key(&st, &headers, body_key.as_deref())?;
    let now = st.queue.clock().now();
    let event = normalize(
        item,
        Some(kind),
        &BatchDefaults::default(),
        Origin::Tracking,
        now,
    )
    .map_err(|e| {
        st.metrics.count_ingest(0, 0, 1);
        invalid(e)
    })?;
    let prepared = PreparedEvent::new(event, now.timestamp_millis())
        .in_trace(crate::telemetry::traceparent_of(&headers));
    let receipt = st.queue.ingest(vec![prepared]).await?;
    st.metrics
        .count_ingest(receipt.accepted, receipt.duplicates.len(), 0);
    if receipt.duplicates.is_empty() {
        Ok(Json(json!({ "success": true })))
    } else {
        Ok(Json(json!({ "success": true, "duplicate": true })))
    }
}

#[derive(Deserialize)]
struct BatchBody<'a> {
    #[serde(borrow, default)]
    batch: Option<Vec<&'a RawValue>>,
    #[serde(default)]
    context: Option<Value>,
    #[serde(default)]
    integrations: Option<Value>,
    #[serde(default, rename = "sentAt")]
    sent_at: Option<Value>,
    #[serde(default, rename = "writeKey")]
    write_key: Option<Value>,
}

/// `POST /v1/batch` (also `/v1/b`, `/v1/import`).
pub(super) async fn batch(
    State(st): State<IngestState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let bytes = read(&headers, body, MAX_BATCH_BYTES).await?;
    let parsed: BatchBody<'_> = match serde_json::from_slice(&bytes) {
        Ok(b) => b,
        Err(e) if e.is_data() => {
            return Err(ApiError::bad(
                "invalid_body",
                format!("body must be an object with a `batch` array: {e}"),
            ));
        }
        Err(e) => return Err(json_error(&e)),
    };
    let body_key = match &parsed.write_key {
        Some(Value::String(k)) => Some(k.as_str()),
        _ => None,
    };
    check_write_key(&st, &headers, body_key)?;
    let items = parsed.batch.ok_or_else(|| {
        ApiError::bad_field(
            "missing_batch",
            "batch",
            "`batch` is required and must be an array of events",
        )
    })?;
    if items.len() > MAX_BATCH_ITEMS {
        return Err(ApiError::bad_field(
            "too_many_events",
            "batch",
            format!(
                "`batch` has {} events; the limit is {MAX_BATCH_ITEMS}",
                items.len()
            ),
        ));
    }
    let object = |key: &str, v: &Option<Value>| -> Result<Option<Map<String, Value>>, ApiError> {
        match v {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m.clone())),
            Some(_) => Err(ApiError::bad_field(
                "invalid_field",
                key,
                format!("`{key}` must be an object"),
            )),
        }
    };
    let context = object("context", &parsed.context)?;
    let integrations = object("integrations", &parsed.integrations)?;
    let defaults = BatchDefaults {
        context: context.as_ref(),
        integrations: integrations.as_ref(),
        sent_at: parsed.sent_at.as_ref(),
    };

    let now = st.queue.clock().now();
    let mut sorted = Sorted::new(items.len(), now.timestamp_millis(), &headers);
    for (i, raw) in items.iter().enumerate() {
        sorted.push(
            i,
            super::prepare_item(raw, &defaults, Origin::Tracking, ITEM, now),
        );
    }
    if sorted.prepared.is_empty() && !items.is_empty() {
        let message = format!("none of the {} events is valid", items.len());
        return Err(sorted.refuse(&st, "invalid_batch", message, Some("batch".into())));
    }
    sorted.commit(&st).await
}

fn invalid(e: InvalidEvent) -> ApiError {
    ApiError::BadRequest {
        code: e.code(),
        message: e.to_string(),
        field: Some(e.field().to_owned()),
        detail: None,
    }
}

/// The write key from Basic auth (user part, with or without a colon) or the body.
fn check_write_key(
    st: &IngestState,
    headers: &HeaderMap,
    body_key: Option<&str>,
) -> Result<(), ApiError> {
    if st.write_keys.is_empty() {
        return Ok(());
    }
    let from_header = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Basic ")
                .or_else(|| v.strip_prefix("basic "))
        })
        .and_then(|b64| {
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .ok()
        })
        .and_then(|raw| String::from_utf8(raw).ok())
        .map(|s| {
            s.split_once(':')
                .map_or(s.clone(), |(user, _)| user.to_owned())
        });
    let candidates: Vec<&str> = from_header.as_deref().into_iter().chain(body_key).collect();
    if candidates.is_empty() {
        return Err(ApiError::Unauthorized(
            "missing write key: send it as the Basic auth user or as `writeKey` in the body".into(),
        ));
    }
    let known = candidates.iter().any(|c| {
        st.write_keys.iter().fold(false, |hit, k| {
            hit | bool::from(k.expose().as_bytes().ct_eq(c.as_bytes()))
        })
    });
    if known {
        Ok(())
    } else {
        Err(ApiError::Unauthorized("unknown write key".into()))
    }
}
