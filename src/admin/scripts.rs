//! `GET /api/scripts` (each script, its handlers, webhook sources with their URLs,
//! load errors, modules) and
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
        .route(
            "/api/state/{script}/{key}",
            get(get_key).put(put_key).delete(del_key),
        )
}

/// The loaded scripts; on a cluster, also every node with the version of each
/// script it runs (`nodes`, and per script its `versions` by node), so a partial
/// deploy shows.
async fn list_scripts(State(st): State<AdminState>) -> Json<Value> {
    let set = st.scripts.get();
    let nodes = st.queue.nodes().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "Reading the cluster's nodes failed.");
        Vec::new()
    });
    let scripts: Vec<Value> = set
        .scripts
        .iter()
        .map(|s| {
            let handlers: Vec<Value> = s
                .handlers
                .iter()
                .map(|h| json!({ "key": h.key, "kind": h.kind, "line": h.line }))
                .collect();
            let mut script = json!({
                "name": s.name,
                "path": s.path.display().to_string(),
                "hash": s.hash,
                "loaded_at": st.scripts.loaded_at(&s.name).map(crate::event::format_time),
                "handlers": handlers,
            });
            if !nodes.is_empty() {
                let versions: Vec<Value> = nodes
                    .iter()
                    .map(|n| {
                        json!({
                            "node": n["node"],
                            "host": n["host"],
                            "addr": n["addr"],
                            "hash": n["scripts"].get(&s.name).cloned().unwrap_or(Value::Null),
                        })
                    })
                    .collect();
                script["versions"] = Value::Array(versions);
            }
            script
        })
        .collect();
    let modules: Vec<Value> = set
        .module_sources
        .iter()
        .map(|(name, source)| json!({ "name": name, "source": source }))
        .collect();
    let sources: Vec<Value> = set
        .sources()
        .into_iter()
        .filter_map(|(name, script, h)| {
            let spec = h.source.as_ref()?;
            Some(json!({
                "name": name,
                "url": spec.path(),
                "methods": spec.methods,
                "verify": spec.describe_verify(),
                "script": script.name,
                "handler": h.key,
            }))
        })
        .collect();
    let mut out = json!({
        "scripts": scripts,
        "sources": sources,
        "errors": set.errors,
        "modules": modules,
    });
    if !nodes.is_empty() {
        out["nodes"] = Value::Array(nodes);
    }
    Json(out)
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

/// `shared` names the namespace every script shares.
fn namespace(script: String) -> String {
    if script == "shared" {
        crate::state::SHARED.to_owned()
    } else {
        script
    }
}

fn state_error(e: crate::state::StateError) -> ApiError {
    match e {
        crate::state::StateError::InvalidKey { .. }
        | crate::state::StateError::NotANumber { .. } => {
            ApiError::bad_field("invalid_key", "key", e.to_string())
        }
        crate::state::StateError::Store(e) => e.into(),
    }
}

async fn get_key(
    State(st): State<AdminState>,
    Path((script, key)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    match st
        .state
        .read(&namespace(script), &key)
        .map_err(state_error)?
    {
        Some(e) => Ok(Json(json!(crate::state::StateEntry::new(key, e)))),
        None => Err(ApiError::NotFound(format!("no state key {key:?}"))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutBody {
    value: Value,
    /// Seconds, or a duration like "10m".
    ttl: Option<Value>,
}

async fn put_key(
    State(st): State<AdminState>,
    Path((script, key)): Path<(String, String)>,
    Json(body): Json<PutBody>,
) -> Result<Json<Value>, ApiError> {
    let ttl = match &body.ttl {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(
            crate::duration::from_secs_f64(n.as_f64().unwrap_or(f64::NAN))
                .map_err(|e| ApiError::bad_field("invalid_ttl", "ttl", e))?,
        ),
        Some(Value::String(s)) => Some(
            crate::duration::parse(s).map_err(|e| ApiError::bad_field("invalid_ttl", "ttl", e))?,
        ),
        Some(_) => {
            return Err(ApiError::bad_field(
                "invalid_ttl",
                "ttl",
                "ttl must be seconds or a duration like \"10m\"",
            ));
        }
    };
    let ns = namespace(script);
    let op = crate::state::StateOp::Set {
        value: body.value,
        ttl_ms: ttl.map(crate::duration::as_ms),
    };
    apply(&st, ns.clone(), key.clone(), op).await?;
    let entry = st.state.read(&ns, &key).map_err(state_error)?;
    Ok(Json(json!(
        entry.map(|e| crate::state::StateEntry::new(key, e))
    )))
}

/// Applies an admin change as the runs apply theirs (the key's lock, the writer),
/// off the async threads (a run may hold the lock for a moment), and waits until
/// it is durable.
async fn apply(
    st: &AdminState,
    ns: String,
    key: String,
    op: crate::state::StateOp,
) -> Result<Value, ApiError> {
    use crate::run::tx::{RunTx, TxError};
    let mut tx = RunTx::direct(st.queue.clone(), std::sync::Arc::clone(&st.state));
    tokio::task::spawn_blocking(move || {
        let result = tx.state_apply(&ns, &key, &op, "")?;
        tx.before_output()?;
        Ok::<_, TxError>(result)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(|e| match e {
        TxError::State(e) => state_error(e),
        TxError::Queue(e) => e.into(),
    })
}

async fn del_key(
    State(st): State<AdminState>,
    Path((script, key)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let deleted = apply(&st, namespace(script), key, crate::state::StateOp::Del).await?;
    Ok(Json(json!({ "deleted": deleted })))
}
