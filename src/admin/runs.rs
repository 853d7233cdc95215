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
use crate::run::{RunFilter, RunRecord, RunStatus};

pub(super) fn router() -> Router<AdminState> {
    Router::new()
        .route("/api/runs", get(list_runs))
        .route("/api/runs/{id}", get(get_run))
        .route("/api/runs/{id}/timeline", get(timeline))
        .route("/api/dead-letters", get(list_dead))
        .route("/api/events", get(list_events))
        .route("/api/requests", get(list_requests))
        .route("/api/dead-letters/{id}/replay", post(replay_dead))
}

#[derive(Deserialize)]
struct RunsQuery {
    status: Option<String>,
    script: Option<String>,
    handler: Option<String>,
    message_id: Option<String>,
    user: Option<String>,
    trigger: Option<String>,
    /// Started at or after: an RFC 3339 time, or a duration ago (`"1h"`).
    since: Option<String>,
    /// Started before: the same forms.
    until: Option<String>,
    /// The runs of one job (its attempts and executions).
    job: Option<u64>,
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
                format!(
                    "status {} is not one of ok, skipped, failed, retrying, dead, waiting",
                    crate::event::quote(s)
                ),
            )
        })?),
    };
    let wait = match q.wait.as_deref() {
        None => Duration::ZERO,
        Some(w) => w
            .parse::<u64>()
            .map(Duration::from_millis)
            .or_else(|_| crate::duration::parse(w))
            .map_err(|e| ApiError::bad_field("invalid_wait", "wait", e))?
            .min(Duration::from_secs(60)),
    };
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    // Subscribe before the first look, so a run stored in between is not missed.
    let mut settled = st.runs.subscribe();
    let deadline = tokio::time::Instant::now() + wait;
    if status == Some(RunStatus::Waiting) {
        loop {
            let runs = waiting(&st, q.script.as_deref(), q.after, limit)?;
            if !runs.is_empty() || !next_run(&mut settled, deadline).await {
                // Parked runs are the backend's: on a cluster, every node's.
                return Ok(Json(json!({ "runs": runs })));
            }
        }
    }
    if let Some(t) = q.trigger.as_deref()
        && !["event", "schedule", "webhook", "tool", "approval"].contains(&t)
    {
        return Err(ApiError::bad_field(
            "invalid_trigger",
            "trigger",
            format!(
                "trigger {} is not one of event, schedule, webhook, tool, approval",
                crate::event::quote(t)
            ),
        ));
    }
    let nonempty = |v: Option<String>| v.filter(|v| !v.is_empty());
    let filter = RunFilter {
        status,
        script: nonempty(q.script),
        handler: nonempty(q.handler),
        message_id: nonempty(q.message_id),
        user: nonempty(q.user),
        trigger: nonempty(q.trigger),
        after: q.after,
        before: q.before,
        since_ms: moment(&st, "since", q.since.as_deref())?,
        until_ms: moment(&st, "until", q.until.as_deref())?,
        job_id: q.job,
    };
    loop {
        let runs = st.runs.list(&filter, limit)?;
        if !runs.is_empty() || !next_run(&mut settled, deadline).await {
            return Ok(super::per_node(&st, json!({ "runs": runs })));
        }
    }
}

/// A moment given as an RFC 3339 time or a duration before now (`"15m"`).
fn moment(st: &AdminState, field: &str, v: Option<&str>) -> Result<Option<i64>, ApiError> {
    let Some(v) = v.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(v) {
        return Ok(Some(t.timestamp_millis()));
    }
    let ago = crate::duration::parse(v).map_err(|e| {
        ApiError::bad_field(
            "invalid_time",
            field,
            format!("{field} is neither an RFC 3339 time nor a duration ago: {e}"),
        )
    })?;
    Ok(Some(
        st.queue
            .clock()
            .now_ms()
            .saturating_sub(crate::duration::as_ms(ago)),
    ))
}

/// Waits for the next stored run until `deadline`; false when the time is up.
async fn next_run(
    settled: &mut tokio::sync::broadcast::Receiver<std::sync::Arc<crate::run::RunRecord>>,
    deadline: tokio::time::Instant,
) -> bool {
    use tokio::sync::broadcast::error::RecvError;
    matches!(
        tokio::time::timeout_at(deadline, settled.recv()).await,
        Ok(Ok(_) | Err(RecvError::Lagged(_)))
    )
}

/// Runs parked now (not every record that once said "waiting"), newest first.
fn waiting(
    st: &AdminState,
    script: Option<&str>,
    after: Option<u64>,
    limit: usize,
) -> Result<Vec<crate::run::RunRecord>, ApiError> {
    let mut runs = Vec::new();
    for job in st.queue.waiting_jobs()? {
        if script.is_some_and(|s| s != job.script) {
            continue;
        }
        let Some(w) = &job.waiting else { continue };
        if after.is_some_and(|a| w.run_id <= a) {
            continue;
        }
        // The record may be lost in a crash (records are flushed lazily), or be on
        // the node that parked the run (run ids are per node); the job is not.
        let mut r = st
            .runs
            .get(w.run_id)?
            .filter(|r| r.job_id == job.id)
            .unwrap_or_else(|| RunRecord::parked(&job));
        r.status = RunStatus::Waiting;
        r.waiting_for = Some(serde_json::to_value(w).expect("a wait serialises"));
        runs.push(r);
    }
    runs.sort_by_key(|r| std::cmp::Reverse(r.id));
    runs.truncate(limit);
    Ok(runs)
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

/// `GET /api/runs/{id}/timeline`: everything about the job run `id` belongs to —
/// every attempt (oldest first), its journal (kept while the job is unfinished or
/// dead), its approvals, where it waits now, and the source line of the error.
async fn timeline(
    State(st): State<AdminState>,
    Path(id): Path<u64>,
) -> Result<Json<Value>, ApiError> {
    let st2 = st.clone();
    let found = tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
        let Some(run) = st2.runs.get(id)? else {
            return Ok(None);
        };
        let filter = RunFilter {
            job_id: Some(run.job_id),
            ..RunFilter::default()
        };
        let mut attempts = st2.runs.list(&filter, 1000)?;
        attempts.reverse();
        let journal: Vec<Value> = st2
            .queue
            .journal(run.job_id)?
            .into_iter()
            .map(|(key, value)| json!({ "key": key, "value": value }))
            .collect();
        let approvals: Vec<_> = st2
            .approvals
            .store
            .list(None)?
            .into_iter()
            .filter(|a| a.job_id == run.job_id)
            .collect();
        let waiting = st2
            .queue
            .waiting_jobs()?
            .into_iter()
            .find(|j| j.id == run.job_id)
            .and_then(|j| j.waiting);
        let source = run.error.as_ref().and_then(|e| source_of(&st2, &run, e));
        Ok(Some(json!({
            "run": run,
            "attempts": attempts,
            "journal": journal,
            "approvals": approvals,
            "waiting": waiting,
            "source": source,
        })))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    found
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no run {id}")))
}

/// The lines around an error's position in the version of the script that ran
/// (or the loaded one when that version is no longer kept): `{file, line,
/// column, lines: [{n, text}]}`.
fn source_of(st: &AdminState, run: &RunRecord, e: &crate::run::RunError) -> Option<Value> {
    let line = e.line?;
    // Errors name the script's path; the pinned version first, else the loaded one.
    let file = e.file.clone()?;
    let text = run
        .script_hash
        .as_deref()
        .and_then(|h| st.versions.text(h))
        .filter(|(path, _)| path.display().to_string() == file)
        .map(|(_, text)| text)
        .or_else(|| {
            let set = st.scripts.get();
            let s = set
                .scripts
                .iter()
                .find(|s| s.path.display().to_string() == file)?;
            Some(s.source.to_string())
        })?;
    let lines: Vec<Value> = text
        .lines()
        .enumerate()
        .map(|(i, t)| (i + 1, t))
        .filter(|(n, _)| n.abs_diff(line) <= 2)
        .map(|(n, t)| json!({ "n": n, "text": t }))
        .collect();
    Some(json!({ "file": file, "line": line, "column": e.column, "lines": lines }))
}

#[derive(Deserialize)]
struct EventsQuery {
    /// How far back (`"1h"`, `"30m"`); default one hour.
    since: Option<String>,
    limit: Option<usize>,
}

/// The moment `since` (`"1h"`, default one hour) before now.
pub(super) fn cutoff_of(
    st: &AdminState,
    since: Option<&str>,
    default: Duration,
) -> Result<i64, ApiError> {
    let since = match since {
        None => default,
        Some(s) => crate::duration::parse(s)
            .map_err(|e| ApiError::bad_field("invalid_since", "since", e))?,
    };
    Ok(st
        .queue
        .clock()
        .now_ms()
        .saturating_sub(crate::duration::as_ms(since)))
}

/// `GET /api/events?since=1h`: recorded events, oldest first (for `spur replay`).
async fn list_events(
    State(st): State<AdminState>,
    Query(q): Query<EventsQuery>,
) -> Result<axum::response::Response, ApiError> {
    let cutoff = cutoff_of(&st, q.since.as_deref(), Duration::from_secs(3600))?;
    let limit = q.limit.unwrap_or(10_000).clamp(1, 100_000);
    let queue = st.queue.clone();
    Ok(stream_list("events", move |push| {
        queue.visit_events(cutoff, limit, &mut |e| {
            push(serde_json::to_vec(&e.body).expect("a JSON map always serialises"))
        })
    }))
}

/// `GET /api/requests?since=1h`: recorded webhook requests, oldest first (for
/// `spur replay`): `{"requests": [{seq, received_at, source, request}]}`.
async fn list_requests(
    State(st): State<AdminState>,
    Query(q): Query<EventsQuery>,
) -> Result<axum::response::Response, ApiError> {
    let cutoff = cutoff_of(&st, q.since.as_deref(), Duration::from_secs(3600))?;
    let limit = q.limit.unwrap_or(1000).clamp(1, 100_000);
    let queue = st.queue.clone();
    Ok(stream_list("requests", move |push| {
        queue.visit_requests(cutoff, limit, &mut |r| {
            let received_at = chrono::DateTime::from_timestamp_millis(r.received_ms)
                .map(crate::event::format_time);
            let item = json!({
                "seq": r.seq,
                "received_at": received_at,
                "source": r.source,
                "request": r.request,
            });
            push(serde_json::to_vec(&item).expect("a JSON value always serialises"))
        })
    }))
}

/// Streams `{"<key>": [...]}` with the serialised items `fill` pushes, as they are
/// read: the answer never sits in memory whole. `push` returns false once the
/// client is gone.
fn stream_list(
    key: &'static str,
    fill: impl FnOnce(&mut dyn FnMut(Vec<u8>) -> bool) -> Result<(), crate::queue::QueueError>
    + Send
    + 'static,
) -> axum::response::Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        let mut chunk = format!("{{\"{key}\":[").into_bytes();
        let mut first = true;
        let visited = fill(&mut |item| {
            if !std::mem::take(&mut first) {
                chunk.push(b',');
            }
            chunk.extend_from_slice(&item);
            if chunk.len() < 64 << 10 {
                return true;
            }
            tx.blocking_send(Ok(std::mem::take(&mut chunk))).is_ok()
        });
        let end = match visited {
            Ok(()) => {
                chunk.extend_from_slice(b"]}");
                Ok(chunk)
            }
            // The status is already sent: cut the body short so the client sees
            // invalid JSON rather than a silently partial list.
            Err(e) => Err(std::io::Error::other(e.to_string())),
        };
        let _ = tx.blocking_send(end);
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    axum::response::Response::builder()
        .header(axum::http::header::CONTENT_TYPE, "application/json")
        .body(axum::body::Body::from_stream(stream))
        .expect("a response with a valid header builds")
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
    Ok(super::per_node(&st, json!({ "dead_letters": items })))
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
    // A replay runs the current version of the script (the fix being the point);
    // the journal is kept, so effects that succeeded are not repeated.
    job.pinned = None;
    st.queue.journal_forget(job.id, crate::queue::PIN_KEY)?;
    job.attempt = 0;
    job.not_before_ms = st.queue.clock().now_ms();
    job.created_ms = 0;
    match st.queue.enqueue(vec![job]).await {
        Ok(ids) => Ok(Json(json!({ "replayed": id, "job_id": ids.first() }))),
        Err(e) => {
            st.dead.restore(&dl)?;
            Err(e.into())
        }
    }
}
