//! `/hooks/{name}`: a webhook source's HTTP side.
//!
//! In order: the source must exist and accept the method; its rate limit; the body
//! is read within its limit; the sender is verified (401, nothing stored, when it is
//! not); `respond`, if declared, may answer at once (a handshake); otherwise the
//! request is stored as a job — durable before the answer — and the answer is
//! `200 {"success": true}`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use parking_lot::Mutex;
use rhai::Dynamic;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use super::{DROPPED_HEADERS, SourceRequest};
use crate::api_error::ApiError;
use crate::config::SourceConfig;
use crate::host::RunCtx;
use crate::queue::{Job, Queue, Trigger};
use crate::script::{
    EngineOptions, Handler, Live, Script, ScriptSet, set_deadline, with_thread_engine,
};

/// Longest a `respond` function may run.
const RESPOND_TIME: Duration = Duration::from_secs(2);

/// What the route needs.
pub(crate) struct Sources {
    pub scripts: Arc<Live>,
    pub engine: EngineOptions,
    pub queue: Queue,
    pub config: BTreeMap<String, SourceConfig>,
    /// Shared with ingest: one permit per request being handled.
    pub inflight: Arc<Semaphore>,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Sources {
    pub(crate) fn new(
        scripts: Arc<Live>,
        engine: EngineOptions,
        queue: Queue,
        config: BTreeMap<String, SourceConfig>,
        inflight: Arc<Semaphore>,
    ) -> Self {
        Self {
            scripts,
            engine,
            queue,
            config,
            inflight,
            buckets: Mutex::default(),
        }
    }

    /// Takes one request from `name`'s rate limit (`rate` per second, a burst of
    /// one second's worth).
    fn admit(&self, name: &str, rate: f64) -> bool {
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        let b = buckets.entry(name.to_owned()).or_insert(Bucket {
            tokens: rate.max(1.0),
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(rate.max(1.0));
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The `/hooks/{name}` route.
pub(crate) fn router(sources: Arc<Sources>) -> Router {
    Router::new()
        .route("/hooks/{name}", any(hook))
        .with_state(sources)
}

#[allow(
    clippy::too_many_lines,
    reason = "a webhook request in the order of its checks: method, size, rate, signature, parse, store"
)]
async fn hook(
    State(st): State<Arc<Sources>>,
    Path(name): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Ok(_permit) = st.inflight.try_acquire() else {
        return Err(ApiError::Overloaded(
            "spur is at capacity: too many requests in flight".into(),
        ));
    };
    let set = st.scripts.get();
    let Some((script, handler)) = set.source(&name) else {
        return Err(ApiError::NotFound(format!(
            "no source {}: a script registers one with on_webhook({:?}, |req| …)",
            crate::event::quote(&name),
            name
        )));
    };
    let (script, handler) = (Arc::clone(script), handler.clone());
    let key = handler.key.clone();
    let spec = handler
        .source
        .clone()
        .expect("a webhook handler has its spec");
    if !spec.methods.iter().any(|m| m == method.as_str()) {
        return Err(ApiError::MethodNotAllowed(format!(
            "source {name} accepts {}",
            spec.methods.join(", ")
        )));
    }
    let own = st.config.get(&name).cloned().unwrap_or_default();
    if let Some(rate) = own.rate_limit
        && !st.admit(&name, rate)
    {
        return Err(ApiError::RateLimited(format!(
            "source {name} accepts {rate} requests per second ([sources.{name}] rate_limit)"
        )));
    }
    let bytes = crate::ingest::read_body(&headers, body, own.max_body_bytes).await?;
    let now = st.engine.host.clock.now();
    if let Some(verify) = &spec.verify {
        let Some(secret) = st.config.get(&spec.secret).and_then(|c| c.secret.as_ref()) else {
            tracing::error!(
                source = %name,
                "Source {name} verifies its requests but [sources.{}] secret is not set; refusing them.",
                spec.secret
            );
            return Err(ApiError::Unavailable(format!(
                "source {name} is not configured"
            )));
        };
        verify
            .check(
                secret.expose().as_bytes(),
                &headers,
                &bytes,
                now.timestamp(),
                spec.tolerance_s,
            )
            .map_err(ApiError::Unauthorized)?;
    }
    let Ok(text) = String::from_utf8(bytes.to_vec()) else {
        return Err(ApiError::bad_field(
            "invalid_body",
            "body",
            "the body must be UTF-8 text (JSON, a form, XML, …)",
        ));
    };
    let request = SourceRequest {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri
            .query()
            .map(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
                    .collect()
            })
            .unwrap_or_default(),
        headers: header_map(&headers),
        body: text,
    };
    if let Some(respond) = spec.respond.clone() {
        let engine = st.engine.clone();
        let req = request.to_dynamic();
        let s = Arc::clone(&script);
        let answer = tokio::task::spawn_blocking(move || {
            run_respond(&set, &engine, &s, &handler, &respond, req)
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
        if let Some(answer) = answer {
            return Ok(answer);
        }
    }
    let job = Job::new(
        Trigger::Webhook {
            source: name.clone(),
            seq: 0,
        },
        script.name.clone(),
        key,
        None,
        now.timestamp_millis(),
    );
    let request = serde_json::to_value(&request).expect("a request serialises");
    st.queue.accept_request(&name, request, job).await?;
    Ok(axum::Json(json!({"success": true})).into_response())
}

/// Lower-case names, repeated headers joined, credentials left out.
fn header_map(headers: &HeaderMap) -> serde_json::Map<String, Value> {
    let mut out: serde_json::Map<String, Value> = serde_json::Map::new();
    for (k, v) in headers {
        let name = k.as_str();
        if DROPPED_HEADERS.contains(&name) {
            continue;
        }
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        match out.get_mut(name) {
            Some(Value::String(prev)) => {
                prev.push_str(", ");
                prev.push_str(&v);
            }
            _ => {
                out.insert(name.to_owned(), Value::String(v));
            }
        }
    }
    out
}

/// Runs a source's `respond` without effects and within [`RESPOND_TIME`]: `()`
/// lets the request be stored as usual; a map `#{ status, body, headers }` (or any
/// other value, as a 200 body) is the answer, and the request is not stored.
fn run_respond(
    set: &ScriptSet,
    engine: &EngineOptions,
    script: &Script,
    handler: &Handler,
    respond: &rhai::FnPtr,
    req: Dynamic,
) -> Result<Option<Response>, ApiError> {
    let mut ctx = RunCtx::new(&script.name, "respond", engine.limits.max_log_lines);
    ctx.pure = true;
    crate::host::begin_run(ctx);
    set_deadline(Some(Instant::now() + RESPOND_TIME));
    let result = with_thread_engine(set, engine, |e| {
        respond.call::<Dynamic>(e, &script.ast, (req,))
    });
    set_deadline(None);
    crate::host::end_run();
    let value = result.map_err(|e| {
        let (pos, message) = crate::script::describe_eval(&e, &script.path.display().to_string());
        tracing::error!(
            script = %script.name,
            line = pos.line().unwrap_or(handler.line),
            error = %message,
            "A source's respond failed."
        );
        ApiError::Internal(format!("respond failed: {message}"))
    })?;
    if value.is_unit() {
        return Ok(None);
    }
    let value = crate::host::convert::to_json(&value)
        .map_err(|e| ApiError::Internal(format!("respond returned {e}")))?;
    Ok(Some(answer_of(&value)))
}

/// `#{ status, body, headers }` as a response; another value is a 200 JSON body.
fn answer_of(value: &Value) -> Response {
    let shaped = value.as_object().filter(|m| {
        m.keys()
            .all(|k| matches!(k.as_str(), "status" | "body" | "headers"))
    });
    let Some(m) = shaped else {
        return axum::Json(value.clone()).into_response();
    };
    let status = m
        .get("status")
        .and_then(Value::as_u64)
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let mut resp = match m.get("body") {
        None | Some(Value::Null) => status.into_response(),
        Some(Value::String(text)) => (status, text.clone()).into_response(),
        Some(other) => (status, axum::Json(other.clone())).into_response(),
    };
    if let Some(Value::Object(h)) = m.get("headers") {
        for (k, v) in h {
            if let (Ok(name), Some(Ok(value))) = (
                HeaderName::try_from(k.as_str()),
                v.as_str().map(HeaderValue::from_str),
            ) {
                resp.headers_mut().insert(name, value);
            }
        }
    }
    resp
}
