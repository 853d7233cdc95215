//! HTTP ingest: Segment's Tracking API (`tracking.rs`) and the Segment Webhooks
//! destination (`webhook.rs`). An event is answered 200 only once it is durable.

mod body;
mod tracking;
mod webhook;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};

use serde_json::{Value, json};

use crate::api_error::ApiError;
use crate::config::Secret;
use crate::event::{Event, InvalidEvent};
use crate::queue::{IngestReceipt, PreparedEvent, Queue};

/// What ingest routes need.
#[derive(Clone)]
pub struct IngestState {
    pub queue: Queue,
    /// Accepted write keys; empty accepts any.
    pub write_keys: Arc<Vec<Secret>>,
    pub webhook_secret: Option<Secret>,
    pub metrics: Arc<crate::admin::metrics::Metrics>,
}

/// The ingest routes.
pub fn router(state: IngestState) -> Router {
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
    r.route("/v1/batch", post(tracking::batch))
        .route("/v1/b", post(tracking::batch))
        .route("/v1/import", post(tracking::batch))
        .route("/webhooks/segment", post(webhook::segment))
        .with_state(state)
}

/// A request's events sorted into the valid ones (with their index in the request)
/// and the rejected ones.
struct Sorted {
    prepared: Vec<PreparedEvent>,
    positions: Vec<usize>,
    rejected: Vec<Value>,
    received_ms: i64,
}

impl Sorted {
    fn new(capacity: usize, received_ms: i64) -> Self {
        Self {
            prepared: Vec::with_capacity(capacity),
            positions: Vec::with_capacity(capacity),
            rejected: Vec::new(),
            received_ms,
        }
    }

    fn push(&mut self, index: usize, event: Result<Event, InvalidEvent>) {
        match event {
            Ok(event) => {
                self.prepared
                    .push(PreparedEvent::new(event, self.received_ms));
                self.positions.push(index);
            }
            Err(e) => self.rejected.push(json!({
                "index": index,
                "code": e.code,
                "field": e.field,
                "error": e.message,
            })),
        }
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
        st.metrics.count_ingest(0, 0, self.rejected.len());
        ApiError::BadRequest {
            code,
            message,
            field,
            detail: Some(json!({ "rejected": self.rejected })),
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
            self.rejected.len(),
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
        })))
    }
}
