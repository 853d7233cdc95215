//! HTTP ingest: Segment's Tracking API (`tracking.rs`) and the Segment Webhooks
//! destination (`webhook.rs`). An event is answered 200 only once it is durable.

mod body;
mod tracking;
mod webhook;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;

use crate::config::Secret;
use crate::queue::Queue;

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
