//! The operator surface: `/healthz` (open), `/metrics` and the admin API under
//! `/api/` (a bearer token naming the owner or a client, each route checking its
//! scope: `auth.rs`; writes audited), and the console at `/ui` on the same API
//! through a session cookie (`console.rs`, `session.rs`). One router module per
//! resource.

mod approvals;
mod auth;
mod console;
mod runs;
mod scripts;
pub(crate) mod session;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router, middleware};
use serde_json::{Value, json};

use crate::api_error::ApiError;
use crate::queue::Queue;
use crate::run::{DeadLetters, RunStore};
use crate::script::Live;
use crate::state::StateStore;

/// What admin routes need.
#[derive(Clone)]
pub(crate) struct AdminState {
    /// Who may call, with their scopes.
    pub callers: crate::auth::SharedCallers,
    /// The console's logins.
    pub sessions: Arc<session::Sessions>,
    pub audit: crate::audit::Audit,
    pub queue: Queue,
    pub runs: RunStore,
    pub dead: DeadLetters,
    pub scripts: Arc<Live>,
    pub versions: Arc<crate::script::pinned::Versions>,
    pub state: Arc<dyn StateStore>,
    pub approvals: crate::approval::Approvals,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub history: Arc<crate::metrics::History>,
    pub outbox: Arc<crate::connectors::segment::Outbox>,
    pub telemetry: Option<Arc<crate::telemetry::Telemetry>>,
    pub schedules: Arc<parking_lot::RwLock<Vec<crate::schedule::ScheduleInfo>>>,
    pub started: Instant,
}

/// `/healthz`, `/metrics` and `/api/…`.
pub(crate) fn router(state: AdminState) -> Router {
    let api = Router::new()
        .merge(runs::router())
        .merge(scripts::router())
        .merge(approvals::router())
        .route("/metrics", get(metrics_text))
        .route("/api/metrics/history", get(metrics_history))
        .route("/api/schedules", get(schedules))
        .route("/api/store", get(store_usage))
        .route("/api/audit", get(audit_log))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_scope,
        ));
    Router::new()
        .route("/healthz", get(health))
        .merge(console::router())
        .merge(api)
        .with_state(state)
}

async fn health(State(st): State<AdminState>) -> Json<Value> {
    let stats = st.queue.stats();
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": st.started.elapsed().as_secs(),
        "scripts": st.scripts.get().scripts.len(),
        "queued": stats.queued,
        "running": stats.running,
        "delayed": stats.delayed,
    }))
}

async fn schedules(State(st): State<AdminState>) -> Json<Value> {
    Json(json!({ "schedules": *st.schedules.read() }))
}

/// Where the disk goes: keys and bytes per tree and key prefix (a full scan, off
/// the async runtime).
async fn store_usage(State(st): State<AdminState>) -> Result<Json<Value>, ApiError> {
    let queue = st.queue.clone();
    let usage = tokio::task::spawn_blocking(move || queue.usage())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(Json(json!({
        "size_on_disk": st.queue.size_on_disk(),
        "areas": usage,
    })))
}

/// The point-in-time gauges, read off the async runtime (counting parked runs
/// reads them from the store).
async fn gauges(st: &AdminState) -> Result<crate::metrics::Gauges, ApiError> {
    let st = st.clone();
    tokio::task::spawn_blocking(move || {
        let stats = st.queue.stats();
        Ok(crate::metrics::Gauges {
            queued: stats.queued as u64,
            delayed: stats.delayed as u64,
            running: stats.running as u64,
            parked: st.queue.parked_by_kind()?,
            dead_letters: st.dead.len() as u64,
            outbox: st.outbox.len() as u64,
            store_bytes: st.queue.size_on_disk(),
            spans_dropped: st.telemetry.as_ref().map_or(0, |t| t.dropped()),
        })
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
}

async fn metrics_text(State(st): State<AdminState>) -> Result<impl IntoResponse, ApiError> {
    let mut body = st.metrics.render(&gauges(&st).await?);
    if let Some(node) = st.queue.node_id() {
        body.push_str(&format!(
            "# HELP spur_node_info This daemon's id in its cluster: the series above are this node's, except spur_runs_parked (the cluster's).\n# TYPE spur_node_info gauge\nspur_node_info{{node=\"{node}\"}} 1\n"
        ));
    }
    Ok(([(CONTENT_TYPE, "text/plain; version=0.0.4")], body))
}

/// A list answer of what each node keeps for itself (run records, dead letters,
/// audit): on a cluster it names the node it covers (`"node"`).
pub(crate) fn per_node(st: &AdminState, mut answer: Value) -> Json<Value> {
    if let (Some(node), Some(o)) = (st.queue.node_id(), answer.as_object_mut()) {
        o.insert("node".into(), Value::from(node));
    }
    Json(answer)
}

/// `GET /api/metrics/history`: the last hour for the console's charts (see
/// `metrics/history.rs`), the last point live.
async fn metrics_history(State(st): State<AdminState>) -> Result<Json<Value>, ApiError> {
    let g = gauges(&st).await?;
    let parked = g.parked.iter().map(|(_, n)| n).sum();
    let now = st
        .metrics
        .sample(st.queue.clock().now_ms(), g.queued, parked);
    Ok(Json(st.history.series(now)))
}

/// Query of `GET /api/audit`.
#[derive(serde::Deserialize)]
struct AuditQuery {
    since: Option<String>,
    actor: Option<String>,
    action: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/audit?since=1h&actor=&action=&limit=`: `{"entries": [...]}`, oldest
/// first, everything retained when `since` is absent; `action` matches an action or its prefix (`tool` matches `tool.call`).
async fn audit_log(
    State(st): State<AdminState>,
    axum::extract::Query(q): axum::extract::Query<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    // By default everything retained (records live as long as run records).
    let since_ms = runs::cutoff_of(&st, q.since.as_deref(), std::time::Duration::MAX)?;
    let filter = crate::audit::AuditFilter {
        since_ms,
        actor: q.actor,
        action: q.action,
    };
    let limit = q.limit.unwrap_or(1000).clamp(1, 100_000);
    let audit = st.audit.clone();
    let entries = tokio::task::spawn_blocking(move || audit.list(&filter, limit))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(per_node(&st, json!({ "entries": entries })))
}
