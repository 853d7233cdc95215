//! `http::request(#{…})` and `http::get/post/put/patch/delete`: JSON in and out,
//! plain URLs or named connections (`connection: "slack", path: "/chat.postMessage"`).
//! Every attempt lands in the run record; secrets are injected by the connector and
//! redacted from what comes back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use rhai::{Dynamic, Engine, EvalAltResult, Map, Module, NativeCallContext};

use serde_json::{Value, json};

use super::convert::{to_dynamic, to_json, to_text};
use super::ctx::with_run;
use super::{Host, error, placed};
use crate::connectors::http::{Body, Destination, OutboundRequest, OutboundResponse};

type Res<T> = Result<T, Box<EvalAltResult>>;

const REQUEST_KEYS: &[&str] = &[
    "method",
    "url",
    "connection",
    "path",
    "headers",
    "query",
    "json",
    "body",
    "form",
    "timeout_ms",
];
const OPTION_KEYS: &[&str] = &["connection", "headers", "query", "timeout_ms"];

pub(super) fn register(engine: &mut Engine, host: &Arc<Host>) {
    let mut m = Module::new();
    let h = Arc::clone(host);
    m.set_native_fn("request", move |ctx: NativeCallContext, spec: Map| {
        placed(
            &ctx,
            parse_request("http::request", &spec).and_then(|req| call(&h, req)),
        )
    });
    for method in [
        Method::GET,
        Method::DELETE,
        Method::POST,
        Method::PUT,
        Method::PATCH,
    ] {
        let name = method.as_str().to_lowercase();
        let what = format!("http::{name}");
        let with_body = matches!(method, Method::POST | Method::PUT | Method::PATCH);
        let (h, w, meth) = (Arc::clone(host), what.clone(), method.clone());
        if with_body {
            m.set_native_fn(
                &name,
                move |ctx: NativeCallContext, url: &str, body: Dynamic| {
                    placed(
                        &ctx,
                        simple(&w, meth.clone(), url, Some(body), &Map::new())
                            .and_then(|r| call(&h, r)),
                    )
                },
            );
            let (h, w, meth) = (Arc::clone(host), what, method);
            m.set_native_fn(
                &name,
                move |ctx: NativeCallContext, url: &str, body: Dynamic, opts: Map| {
                    placed(
                        &ctx,
                        simple(&w, meth.clone(), url, Some(body), &opts).and_then(|r| call(&h, r)),
                    )
                },
            );
        } else {
            m.set_native_fn(&name, move |ctx: NativeCallContext, url: &str| {
                placed(
                    &ctx,
                    simple(&w, meth.clone(), url, None, &Map::new()).and_then(|r| call(&h, r)),
                )
            });
            let (h, w, meth) = (Arc::clone(host), what, method);
            m.set_native_fn(
                &name,
                move |ctx: NativeCallContext, url: &str, opts: Map| {
                    placed(
                        &ctx,
                        simple(&w, meth.clone(), url, None, &opts).and_then(|r| call(&h, r)),
                    )
                },
            );
        }
    }
    engine.register_static_module("http", m.into());
}

fn simple(
    what: &str,
    method: Method,
    url: &str,
    body: Option<Dynamic>,
    opts: &Map,
) -> Res<OutboundRequest> {
    check_keys(what, opts, OPTION_KEYS)?;
    let destination = match opts.get("connection") {
        Some(c) => Destination::Connection {
            name: to_text(c),
            path: url.to_owned(),
        },
        None => Destination::Url(url.to_owned()),
    };
    let mut req = OutboundRequest::new(method, destination);
    apply_common(what, &mut req, opts)?;
    if let Some(b) = body {
        req.body = body_of(what, &b)?;
    }
    Ok(req)
}

fn body_of(what: &str, b: &Dynamic) -> Res<Body> {
    if b.is_unit() {
        Ok(Body::None)
    } else if b.is_string() {
        Ok(Body::Text(to_text(b)))
    } else {
        Ok(Body::Json(
            to_json(b).map_err(|e| error(format!("{what}: body: {e}")))?,
        ))
    }
}

fn check_keys(what: &str, spec: &Map, known: &[&str]) -> Res<()> {
    for k in spec.keys() {
        if !known.contains(&k.as_str()) {
            return Err(error(format!(
                "{what}: unknown option `{k}` (known: {})",
                known.join(", ")
            )));
        }
    }
    Ok(())
}

fn apply_common(what: &str, req: &mut OutboundRequest, spec: &Map) -> Res<()> {
    if let Some(h) = spec.get("headers") {
        let map = h
            .clone()
            .try_cast::<Map>()
            .ok_or_else(|| error(format!("{what}: `headers` must be a map")))?;
        req.headers = map
            .iter()
            .map(|(k, v)| (k.to_string(), to_text(v)))
            .collect();
    }
    if let Some(q) = spec.get("query") {
        let map = q
            .clone()
            .try_cast::<Map>()
            .ok_or_else(|| error(format!("{what}: `query` must be a map")))?;
        for (k, v) in &map {
            if v.is_array() {
                for item in v.clone().cast::<rhai::Array>() {
                    req.query.push((k.to_string(), to_text(&item)));
                }
            } else if !v.is_unit() {
                req.query.push((k.to_string(), to_text(v)));
            }
        }
    }
    if let Some(t) = spec.get("timeout_ms") {
        let ms = t
            .as_int()
            .ok()
            .filter(|ms| *ms > 0)
            .ok_or_else(|| error(format!("{what}: `timeout_ms` must be a positive integer")))?;
        req.timeout = Some(Duration::from_millis(ms as u64));
    }
    Ok(())
}

/// Parses `http::request`'s map.
fn parse_request(what: &str, spec: &Map) -> Res<OutboundRequest> {
    check_keys(what, spec, REQUEST_KEYS)?;
    let method = match spec.get("method") {
        None => Method::GET,
        Some(m) => {
            let s = to_text(m).to_ascii_uppercase();
            Method::from_bytes(s.as_bytes())
                .map_err(|_| error(format!("{what}: `method` {s:?} is not an HTTP method")))?
        }
    };
    let text = |k: &str| spec.get(k).map(to_text);
    let destination = match (text("url"), text("connection"), text("path")) {
        (Some(url), None, None) => Destination::Url(url),
        (None, Some(name), path) => Destination::Connection {
            name,
            path: path.unwrap_or_else(|| "/".into()),
        },
        (Some(_), Some(_), _) => {
            return Err(error(format!(
                "{what}: give either `url` or `connection` + `path`, not both"
            )));
        }
        (None, None, Some(_)) => {
            return Err(error(format!("{what}: `path` needs a `connection`")));
        }
        (Some(_), None, Some(_)) => {
            return Err(error(format!(
                "{what}: `path` goes with `connection`; put it in `url`"
            )));
        }
        (None, None, None) => return Err(error(format!("{what}: `url` is required"))),
    };
    let mut req = OutboundRequest::new(method, destination);
    apply_common(what, &mut req, spec)?;
    let bodies = ["json", "body", "form"]
        .iter()
        .filter(|k| spec.contains_key(**k))
        .count();
    if bodies > 1 {
        return Err(error(format!(
            "{what}: give only one of `json`, `body`, `form`"
        )));
    }
    if let Some(j) = spec.get("json") {
        req.body = Body::Json(to_json(j).map_err(|e| error(format!("{what}: json: {e}")))?);
    } else if let Some(b) = spec.get("body") {
        req.body = body_of(what, b)?;
    } else if let Some(f) = spec.get("form") {
        let map = f
            .clone()
            .try_cast::<Map>()
            .ok_or_else(|| error(format!("{what}: `form` must be a map")))?;
        req.body = Body::Form(
            map.iter()
                .map(|(k, v)| (k.to_string(), to_text(v)))
                .collect(),
        );
    }
    Ok(req)
}

/// Sends `req` from a blocking worker thread and records its attempts.
/// Sends `req` from a blocking worker thread and records its attempts.
///
/// Reads (GET, HEAD, OPTIONS) run live every time. Anything else is an effect: it
/// first waits for an approval when a `require_approval` pattern of its connection
/// matches, then runs once per run through the journal, carrying an
/// `Idempotency-Key` derived from the run and the effect.
pub(crate) fn call(host: &Host, mut req: OutboundRequest) -> Res<Map> {
    if !super::in_run() {
        return Err(error(
            "http calls are only allowed inside a handler, not while a script loads",
        ));
    }
    if matches!(req.method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return send(host, req).map(|v| response_dynamic(&v));
    }
    let reach = super::journal::Reach::Outbound;
    if let Destination::Connection { name, path } = &req.destination {
        let method = req.method.as_str();
        let patterns = host.http.approval_patterns(name);
        if let Some(pattern) = crate::connectors::http::matching_pattern(patterns, method, path) {
            let body = match &req.body {
                Body::Json(v) => v.clone(),
                Body::Text(t) => Value::String(t.clone()),
                Body::Form(f) => Value::Object(
                    f.iter()
                        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                        .collect(),
                ),
                Body::None => Value::Null,
            };
            super::approval::require_for_call(host, name, method, path, &pattern, body)?;
        }
    }
    let args = json!({
        "method": req.method.as_str(),
        "to": match &req.destination {
            Destination::Url(u) => json!(u),
            Destination::Connection { name, path } => json!([name, path]),
        },
        "query": req.query,
        "body": match &req.body {
            Body::None => Value::Null,
            Body::Json(v) => v.clone(),
            Body::Text(t) => Value::String(t.clone()),
            Body::Form(f) => json!(f),
        },
    });
    let v = super::journal::effect(
        "http",
        &args,
        reach,
        |key| {
            req.idempotency_key = Some(super::journal::idempotency_key(key));
            send(host, req)
        },
        |v| v["status"].as_u64().is_some_and(|s| s != 429 && s < 500),
    )?;
    Ok(response_dynamic(&v))
}

/// Sends and records; the response as JSON (`status, ok, headers, body, json`).
fn send(host: &Host, mut req: OutboundRequest) -> Res<Value> {
    let deadline = crate::script::remaining().map(|d| Instant::now() + d);
    // In a traced run the call is a span of its own, and says so downstream.
    let span = with_run(|ctx| ctx.trace.clone()).flatten().map(|trace| {
        let span = crate::telemetry::span_id();
        let set = req
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("traceparent"));
        if !set {
            req.headers
                .push(("traceparent".into(), trace.header_for(&span)));
        }
        span
    });
    let mut exchange = super::outbound(host, host.http.send(req, deadline))?;
    for a in &mut exchange.attempts {
        a.span_id.clone_from(&span);
    }
    echo_calls(&exchange.attempts);
    with_run(|ctx| ctx.calls.extend(exchange.attempts));
    match exchange.result {
        Ok(resp) => Ok(response_json(&resp)),
        Err(e) => Err(super::connector_failure(host, &e, None)),
    }
}

fn response_dynamic(v: &Value) -> Map {
    to_dynamic(v).try_cast::<Map>().unwrap_or_default()
}

/// Prints calls as they happen when the run echoes (`spur run`, the REPL).
pub(crate) fn echo_calls(calls: &[crate::connectors::CallRecord]) {
    if with_run(|ctx| ctx.echo) != Some(true) {
        return;
    }
    // Dry-run calls are printed with their bodies by the caller (from the recorder).
    for a in calls.iter().filter(|a| !a.dry_run) {
        let status = a
            .status
            .map_or_else(|| a.error.clone().unwrap_or_default(), |s| s.to_string());
        println!("  → {} {} {status}", a.method, a.url);
    }
}

/// `{status, ok, headers, body, json}`: what scripts get, and what the journal keeps.
pub(crate) fn response_json(resp: &OutboundResponse) -> Value {
    let headers: serde_json::Map<String, Value> = resp
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), Value::String(v.clone())))
        .collect();
    json!({
        "status": resp.status,
        "ok": resp.ok(),
        "headers": headers,
        "body": resp.body,
        "json": resp.json.clone().unwrap_or(Value::Null),
    })
}
