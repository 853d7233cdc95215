//! `GET /api/runs`, `GET /api/runs/{id}`, `GET /api/dead-letters`,
//! `POST /api/dead-letters/{id}/replay`.

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AdminState;
use crate::api_error::ApiError;
use crate::queue::{Job, Trigger};
use crate::run::{RunFilter, RunStatus};
use crate::store::now_ms;

pub(super) fn router() -> Router<AdminState> {
    Router::new()
        .route("/api/runs", get(list_runs))
        .route("/api/runs/{id}", get(get_run))
        .route("/api/dead-letters", get(list_dead))
        .route("/api/dead-letters/{id}/replay", post(replay_dead))
}

#[derive(Deserialize)]
struct RunsQuery {
    status: Option<String>,
    script: Option<String>,
    message_id: Option<String>,
    limit: Option<usize>,
    after: Option<u64>,
    before: Option<u64>,
    /// Wait up to this long (`"5s"`, or ms) for a matching run when none exists yet.
    wait: Option<String>,
}

async fn list_runs(
    State(st): State<AdminState>,
    Query(q): Query<RunsQuery>,
) -> Result<Json<Value>, ApiError> {
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(RunStatus::parse(s).ok_or_else(|| {
            ApiError::bad_field(
                "invalid_status",
                "status",
                format!("status {s:?} is not one of ok, skipped, failed, retrying, dead"),
            )
        })?),
    };
    let filter = RunFilter {
        status,
        script: q.script,
        message_id: q.message_id,
        after: q.after,
        before: q.before,
    };
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    let wait = match q.wait.as_deref() {
        None => Duration::ZERO,
        Some(w) => w
            .parse::<u64>()
            .map(Duration::from_millis)
            .or_else(|_| crate::duration::parse(w))
            .map_err(|e| ApiError::bad_field("invalid_wait", "wait", e))?
            .min(Duration::from_mins(1)),
    };
    // Subscribe before the first look, so a run stored in between is not missed.
    let mut settled = st.runs.subscribe();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let runs = st.runs.list(&filter, limit)?;
        if !runs.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(Json(json!({ "runs": runs })));
        }
        match tokio::time::timeout_at(deadline, settled.recv()).await {
            Ok(Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) | Err(_) => {
                return Ok(Json(json!({ "runs": st.runs.list(&filter, limit)? })));
            }
        }
    }
}

async fn get_run(
    State(st): State<AdminState>,
    Path(id): Path<u64>,
) -> Result<Json<Value>, ApiError> {
    match st.runs.get(id)? {
        Some(r) => Ok(Json(json!(r))),
        None => Err(ApiError::NotFound(format!("no run {id}"))),
    }
}

#[derive(Deserialize)]
struct LimitQuery {
    limit: Option<usize>,
}

async fn list_dead(
    State(st): State<AdminState>,
    Query(q): Query<LimitQuery>,
) -> Result<Json<Value>, ApiError> {
    let items = st.dead.list(q.limit.unwrap_or(100).clamp(1, 1000))?;
    Ok(Json(json!({ "dead_letters": items })))
}

async fn replay_dead(
    State(st): State<AdminState>,
    Path(id): Path<u64>,
) -> Result<Json<Value>, ApiError> {
    let dl = st
        .dead
        .take(id)?
        .ok_or_else(|| ApiError::NotFound(format!("no dead letter {id}")))?;
    let mut job: Job = dl.job.clone();
    if let Trigger::Event { seq, message_id } = &job.trigger
        && st.queue.event(*seq)?.is_none()
    {
        let Some(body) = dl.event.clone() else {
            st.dead.restore(&dl)?;
            return Err(ApiError::Conflict(format!(
                "event {message_id} of dead letter {id} is no longer retained"
            )));
        };
        let seq = st.queue.append_event(body).await?;
        job.trigger = Trigger::Event {
            seq,
            message_id: message_id.clone(),
        };
    }
    job.attempt = 0;
    job.not_before_ms = now_ms();
    job.created_ms = 0;
    match st.queue.enqueue(vec![job]).await {
        Ok(ids) => Ok(Json(json!({ "replayed": id, "job_id": ids.first() }))),
        Err(e) => {
            st.dead.restore(&dl)?;
            Err(e.into())
        }
    }
}
