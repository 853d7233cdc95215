//! `GET /api/approvals?status=`, `GET /api/approvals/{id}`,
//! `POST /api/approvals/{id}/approve|reject` (`{"comment"}`; the owner may also
//! name who decided, `{"by"}`: a client always decides as itself).

use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AdminState;
use crate::api_error::ApiError;
use crate::approval::{DecideError, Status};
use crate::auth::Principal;

pub(super) fn router() -> Router<AdminState> {
    Router::new()
        .route("/api/approvals", get(list))
        .route("/api/approvals/{id}", get(one))
        .route("/api/approvals/{id}/approve", post(approve))
        .route("/api/approvals/{id}/reject", post(reject))
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
    caller: &Principal,
    id: &str,
    approve: bool,
    body: Option<Json<DecisionBody>>,
) -> Result<Json<Value>, ApiError> {
    let body = body.map(|Json(b)| b).unwrap_or_default();
    let by = match body.by.filter(|b| !b.trim().is_empty()) {
        Some(by) if caller.is_owner() => by,
        Some(by) if by != caller.name => {
            return Err(ApiError::Forbidden(format!(
                "client {:?} decides as itself: \"by\" may only name someone else with the owner's token (got {})",
                caller.name,
                crate::event::quote(&by)
            )));
        }
        _ => caller.name.clone(),
    };
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
    Extension(caller): Extension<Principal>,
    Path(id): Path<String>,
    body: Option<Json<DecisionBody>>,
) -> Result<Json<Value>, ApiError> {
    decide(&st, &caller, &id, true, body).await
}

async fn reject(
    State(st): State<AdminState>,
    Extension(caller): Extension<Principal>,
    Path(id): Path<String>,
    body: Option<Json<DecisionBody>>,
) -> Result<Json<Value>, ApiError> {
    decide(&st, &caller, &id, false, body).await
}
