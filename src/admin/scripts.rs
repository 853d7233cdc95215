//! `GET /api/scripts` (each script, its handlers, load errors, modules) and
//! `GET /api/state/{script}?prefix=` (inspect a script's state).

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AdminState;
use crate::api_error::ApiError;

pub(super) fn router() -> Router<AdminState> {
    Router::new()
        .route("/api/scripts", get(list_scripts))
        .route("/api/state/{script}", get(list_state))
}

async fn list_scripts(State(st): State<AdminState>) -> Json<Value> {
    let set = st.scripts.get();
    let scripts: Vec<Value> = set
        .scripts
        .iter()
        .map(|s| {
            let handlers: Vec<Value> = s
                .handlers
                .iter()
                .map(|h| json!({ "key": h.key, "kind": h.kind, "line": h.line }))
                .collect();
            json!({
                "name": s.name,
                "path": s.path.display().to_string(),
                "hash": s.hash,
                "handlers": handlers,
            })
        })
        .collect();
    let modules: Vec<Value> = set
        .module_sources
        .iter()
        .map(|(name, source)| json!({ "name": name, "source": source }))
        .collect();
    Json(json!({ "scripts": scripts, "errors": set.errors, "modules": modules }))
}

#[derive(Deserialize)]
struct StateQuery {
    prefix: Option<String>,
    limit: Option<usize>,
}

async fn list_state(
    State(st): State<AdminState>,
    Path(script): Path<String>,
    Query(q): Query<StateQuery>,
) -> Result<Json<Value>, ApiError> {
    let ns = if script == "shared" {
        crate::state::SHARED.to_owned()
    } else {
        script
    };
    let entries = st
        .state
        .entries(
            &ns,
            q.prefix.as_deref().unwrap_or(""),
            q.limit.unwrap_or(1000).clamp(1, 10_000),
        )
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok(Json(json!({ "script": ns, "entries": entries })))
}
