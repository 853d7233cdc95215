//! `GET /api/approvals?status=`, `GET /api/approvals/{id}`,
//! `POST /api/approvals/{id}/approve|reject` (`{"by", "comment"}`), and the web page
//! `GET /approvals` (static; it calls the API with the admin token you paste in).

use axum::extract::{Path, Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AdminState;
use crate::api_error::ApiError;
use crate::approval::{DecideError, Status};

const PAGE: &str = include_str!("assets/approvals.html");

pub(super) fn router() -> Router<AdminState> {
    Router::new()
        .route("/api/approvals", get(list))
        .route("/api/approvals/{id}", get(one))
        .route("/api/approvals/{id}/approve", post(approve))
        .route("/api/approvals/{id}/reject", post(reject))
}

/// The page needs no token to load; every action it takes does.
pub(super) fn page_router() -> Router<AdminState> {
    Router::new().route(
        "/approvals",
        get(|| async { ([(CONTENT_TYPE, "text/html; charset=utf-8")], PAGE) }),
    )
}

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
}

async fn list(
    State(st): State<AdminState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let status = match q.status.as_deref() {
        None | Some("" | "all") => None,
        Some(s) => Some(Status::parse(s).ok_or_else(|| {
            ApiError::bad_field(
                "invalid_status",
                "status",
                format!(
                    "status {} is not one of pending, approved, rejected, expired",
                    crate::event::quote(s)
                ),
            )
        })?),
    };
    Ok(Json(json!({ "approvals": st.approvals.list(status)? })))
}

async fn one(
    State(st): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    match st.approvals.store.get(&id)? {
        Some(a) => Ok(Json(json!(a))),
        None => Err(ApiError::NotFound(format!("no approval {id}"))),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    by: Option<String>,
    comment: Option<String>,
}

async fn decide(
    st: &AdminState,
    id: &str,
    approve: bool,
    body: Option<Json<DecisionBody>>,
) -> Result<Json<Value>, ApiError> {
    let body = body.map(|Json(b)| b).unwrap_or_default();
    let by = body
        .by
        .filter(|b| !b.trim().is_empty())
        .unwrap_or_else(|| "admin".into());
    match st
        .approvals
        .decide(id, approve, &by, body.comment.as_deref())
        .await
    {
        Ok(a) => Ok(Json(json!({ "approval": a, "decision": a.decision() }))),
        Err(e @ DecideError::NotFound(_)) => Err(ApiError::NotFound(e.to_string())),
        Err(e @ DecideError::AlreadyDecided { .. }) => Err(ApiError::Conflict(e.to_string())),
        Err(e @ DecideError::NotAllowed { .. }) => Err(ApiError::Forbidden(e.to_string())),
        Err(DecideError::Store(e)) => Err(e.into()),
    }
}

async fn approve(
    State(st): State<AdminState>,
    Path(id): Path<String>,
    body: Option<Json<DecisionBody>>,
) -> Result<Json<Value>, ApiError> {
    decide(&st, &id, true, body).await
}

async fn reject(
    State(st): State<AdminState>,
    Path(id): Path<String>,
    body: Option<Json<DecisionBody>>,
) -> Result<Json<Value>, ApiError> {
    decide(&st, &id, false, body).await
}
