//! The operator surface: `/healthz` (open), `/metrics` and the admin API under
//! `/api/` (a bearer token naming the owner or a client, each route checking its
//! scope: `auth.rs`; writes audited). One router module per resource.

mod approvals;
mod auth;
mod runs;
mod scripts;

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
    pub audit: crate::audit::Audit,
    pub queue: Queue,
    pub runs: RunStore,
    pub dead: DeadLetters,
    pub scripts: Arc<Live>,
    pub state: Arc<dyn StateStore>,
    pub approvals: crate::approval::Approvals,
    pub metrics: Arc<crate::metrics::Metrics>,
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
        .route("/api/schedules", get(schedules))
        .route("/api/store", get(store_usage))
        .route("/api/audit", get(audit_log))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_scope,
        ));
    Router::new()
        .route("/healthz", get(health))
        .merge(approvals::page_router())
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

async fn metrics_text(State(st): State<AdminState>) -> impl IntoResponse {
    let stats = st.queue.stats();
    let body = st.metrics.render(&[
        (
            "spur_jobs_queued",
            "Jobs ready to run.",
            stats.queued as u64,
        ),
        (
            "spur_jobs_delayed",
            "Jobs waiting for a retry.",
            stats.delayed as u64,
        ),
        (
            "spur_jobs_running",
            "Jobs running now.",
            stats.running as u64,
        ),
        (
            "spur_dead_letters",
            "Dead letters kept.",
            st.dead.len() as u64,
        ),
        (
            "spur_store_bytes",
            "Bytes the store occupies on disk.",
            st.queue.size_on_disk(),
        ),
    ]);
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], body)
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
    Ok(Json(json!({ "entries": entries })))
}
