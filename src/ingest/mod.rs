//! HTTP ingest: Segment's Tracking API (`tracking.rs`) and the Segment Webhooks
//! destination (`webhook.rs`). An event is answered 200 only once it is durable.
//!
//! Bounded by construction: at most `server.max_inflight_requests` ingest requests
//! are handled at once and the writer takes at most `server.max_pending_events`
//! waiting events; past either, the answer is 503 with `Retry-After` (Segment's
//! libraries retry those), so overload costs retries, never memory. Browsers get
//! CORS on `/v1/*` (`cors.rs`).

mod body;
mod cors;
mod tracking;
mod webhook;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use tokio::sync::Semaphore;

pub(crate) use body::read as read_body;
pub(crate) use cors::Cors;

use serde_json::{Value, json};

use crate::api_error::ApiError;
use crate::config::Secret;
use crate::event::{Event, InvalidEvent};
use crate::queue::{IngestReceipt, PreparedEvent, Queue};

/// What ingest routes need.
#[derive(Clone)]
pub(crate) struct IngestState {
    pub queue: Queue,
    /// Accepted write keys; empty accepts any.
    pub write_keys: Arc<Vec<Secret>>,
    pub webhook_secret: Option<Secret>,
    /// Bearer token that authenticates a whole webhook body (batches).
    pub webhook_token: Option<Secret>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Origins browsers may send from (`segment.cors_origins`).
    pub cors: Cors,
    /// One permit per request being handled (`server.max_inflight_requests`).
    pub inflight: Arc<Semaphore>,
}

/// Sheds load: a request that finds every permit taken is answered 503 at once,
/// before its body is read.
async fn shed(State(st): State<IngestState>, req: Request, next: Next) -> Response {
    let Ok(_permit) = Arc::clone(&st.inflight).try_acquire_owned() else {
        st.metrics.count_shed();
        return ApiError::Overloaded("spur is at capacity: too many requests in flight".into())
            .into_response();
    };
    let start = std::time::Instant::now();
    let response = next.run(req).await;
    st.metrics.ingest_seconds.observe_since(start);
    response
}

/// The ingest routes.
pub(crate) fn router(state: IngestState) -> Router {
    let mut r = Router::new();
    for (long, short) in [
        ("track", "t"),
        ("identify", "i"),
        ("page", "p"),
        ("screen", "s"),
        ("group", "g"),
        ("alias", "a"),
    ] {
        let kind = crate::event::EventType::parse(long).expect("listed types parse");
        let handler = move |st: State<IngestState>, headers: HeaderMap, body: Body| {
            tracking::single(st, kind, headers, body)
        };
        r = r
            .route(&format!("/v1/{long}"), post(handler))
            .route(&format!("/v1/{short}"), post(handler));
    }
    let tracking = r
        .route("/v1/batch", post(tracking::batch))
        .route("/v1/b", post(tracking::batch))
        .route("/v1/import", post(tracking::batch))
        .layer(middleware::from_fn_with_state(state.clone(), shed))
        // Outside the shedding, so a 503 reaches a browser readable (and retried).
        .layer(middleware::from_fn_with_state(
            state.cors.clone(),
            cors::layer,
        ));
    let webhooks = Router::new()
        .route("/webhooks/segment", post(webhook::segment))
        .layer(middleware::from_fn_with_state(state.clone(), shed));
    tracking.merge(webhooks).with_state(state)
}

/// How a request's items are named in rejections: the field, and what an item is.
struct ItemNames {
    field: &'static str,
    item: &'static str,
}

/// One item of a batch body, checked for size and shape, then normalised (the
/// sender's write key is not kept).
fn prepare_item(
    raw: &serde_json::value::RawValue,
    defaults: &crate::event::BatchDefaults<'_>,
    origin: crate::event::Origin,
    names: ItemNames,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Event, InvalidEvent> {
    use crate::event::MAX_EVENT_BYTES;
    let text = raw.get();
    if text.len() > MAX_EVENT_BYTES {
        return Err(InvalidEvent::TooLarge {
            field: names.field,
            bytes: text.len(),
        });
    }
    let Ok(Value::Object(mut item)) = serde_json::from_str::<Value>(text) else {
        return Err(InvalidEvent::ItemNotAnObject {
            field: names.field,
            item: names.item,
        });
    };
    item.remove("writeKey");
    crate::event::normalize(item, None, defaults, origin, now)
}

/// Rejections listed one by one in an answer; the rest are only counted, so an
/// answer stays small (under 64 KB) whatever the request.
const MAX_LISTED_REJECTIONS: usize = 100;

/// A request's events sorted into the valid ones (with their index in the request)
/// and the rejected ones.
struct Sorted {
    prepared: Vec<PreparedEvent>,
    positions: Vec<usize>,
    /// The first [`MAX_LISTED_REJECTIONS`] rejections.
    rejected: Vec<Value>,
    rejected_count: usize,
    received_ms: i64,
    /// The request's `traceparent`: every event of it is in that trace.
    traceparent: Option<String>,
}

impl Sorted {
    fn new(capacity: usize, received_ms: i64, headers: &axum::http::HeaderMap) -> Self {
        Self {
            prepared: Vec::with_capacity(capacity),
            positions: Vec::with_capacity(capacity),
            rejected: Vec::new(),
            rejected_count: 0,
            received_ms,
            traceparent: crate::telemetry::traceparent_of(headers),
        }
    }

    fn push(&mut self, index: usize, event: Result<Event, InvalidEvent>) {
        match event {
            Ok(event) => {
                self.prepared.push(
                    PreparedEvent::new(event, self.received_ms).in_trace(self.traceparent.clone()),
                );
                self.positions.push(index);
            }
            Err(e) => {
                self.rejected_count += 1;
                if self.rejected.len() < MAX_LISTED_REJECTIONS {
                    self.rejected.push(json!({
                        "index": index,
                        "code": e.code(),
                        "field": e.field(),
                        "error": e.to_string(),
                    }));
                }
            }
        }
    }

    /// The first rejection's message and field, for a request refused whole.
    fn first_rejection(&self, otherwise: &str) -> (String, Option<String>) {
        let first = self.rejected.first();
        let message = first
            .and_then(|r| r["error"].as_str())
            .unwrap_or(otherwise)
            .to_owned();
        let field = first
            .and_then(|r| r["field"].as_str())
            .filter(|f| !f.is_empty())
            .map(str::to_owned);
        (message, field)
    }

    /// No event of the request is valid: counts the rejections and answers 400
    /// with them as `rejected`.
    fn refuse(
        self,
        st: &IngestState,
        code: &'static str,
        message: String,
        field: Option<String>,
    ) -> ApiError {
        st.metrics.count_ingest(0, 0, self.rejected_count);
        ApiError::BadRequest {
            code,
            message,
            field,
            detail: Some(json!({
                "rejected": self.rejected,
                "rejected_count": self.rejected_count,
            })),
        }
    }

    /// Stores the valid events (answering once they are durable) and reports what
    /// became of each.
    async fn commit(self, st: &IngestState) -> Result<Json<Value>, ApiError> {
        let receipt = if self.prepared.is_empty() {
            IngestReceipt::default()
        } else {
            st.queue.ingest(self.prepared).await?
        };
        st.metrics.count_ingest(
            receipt.accepted,
            receipt.duplicates.len(),
            self.rejected_count,
        );
        let duplicates: Vec<usize> = receipt
            .duplicates
            .iter()
            .map(|&i| self.positions[i])
            .collect();
        Ok(Json(json!({
            "success": true,
            "accepted": receipt.accepted,
            "duplicates": duplicates,
            "rejected": self.rejected,
            "rejected_count": self.rejected_count,
        })))
    }
}
