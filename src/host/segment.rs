//! `segment::…`: write-back (`track`, `identify`, `page`, `screen`, `group`, `alias`,
//! `batch`) through the durable outbox, Profile API reads (`traits`, `events`,
//! `external_ids`, `metadata`) and Public API calls (`sources`, `destinations`,
//! `tracking_plans`, `tracking_plan_rules`, `update_tracking_plan_rules`,
//! `regulate`, `regulation`, `delete_user`, `audit_events`, `delivery_metrics`).
//!
//! Written-back messages get a `messageId` derived from the run and the effect's
//! identity (operation, argument digest, occurrence), so a re-executed run re-sends
//! the same ids and Segment drops the repeats.

use std::sync::Arc;
use std::time::Instant;

use reqwest::Method;
use rhai::{Array, Dynamic, Engine, EvalAltResult, Map, Module, NativeCallContext};
use serde_json::{Value, json};

use super::convert::{to_dynamic, to_json, to_text};
use super::ctx::with_run;
use super::{Host, error, placed};
use crate::connectors::ConnectorError;
use crate::connectors::http::{Body, Destination, OutboundRequest};
use crate::connectors::segment::{self, PublicCall, TRACKING};
use crate::event::{BatchDefaults, EventType, Origin, normalize};
use crate::run::LogLevel;

type Res<T> = Result<T, Box<EvalAltResult>>;

fn deadline() -> Option<Instant> {
    crate::script::remaining().map(|d| Instant::now() + d)
}

fn in_run(what: &str) -> Res<()> {
    if super::in_run() {
        Ok(())
    } else {
        Err(error(format!(
            "{what} is only allowed inside a handler, not while a script loads"
        )))
    }
}

/// A connector error for scripts (see `host::connector_failure`).
fn connector_error(host: &Host, what: &str, e: &ConnectorError) -> Box<EvalAltResult> {
    super::connector_failure(host, e, Some(what))
}

fn record_calls(calls: Vec<crate::connectors::CallRecord>) {
    with_run(|ctx| ctx.calls.extend(calls));
}

/// Queues one write-back message once per run (journaled); returns its `messageId`.
fn write(host: &Host, kind: EventType, msg: &Map) -> Res<String> {
    let what = format!("segment::{kind}");
    let args =
        to_json(&Dynamic::from_map(msg.clone())).map_err(|e| error(format!("{what}: {e}")))?;
    let v = super::journal::effect(
        &format!("segment.{kind}"),
        &args,
        super::journal::Reach::Handoff,
        |key| write_now(host, kind, msg, key).map(Value::String),
        |_| true,
    )?;
    Ok(v.as_str().unwrap_or_default().to_owned())
}

/// Builds, validates and queues one write-back message; returns its `messageId`.
fn write_now(host: &Host, kind: EventType, msg: &Map, key: &str) -> Res<String> {
    let what = format!("segment::{kind}");
    in_run(&what)?;
    let Value::Object(mut body) =
        to_json(&Dynamic::from_map(msg.clone())).map_err(|e| error(format!("{what}: {e}")))?
    else {
        unreachable!("a map converts to a JSON object");
    };
    if !body.contains_key("messageId") {
        // The run and the effect's identity: the same message on every execution
        // of the run (Segment drops the repeats), a different one for each effect.
        let id = super::journal::idempotency_key(key);
        body.insert("messageId".into(), Value::String(id));
    }
    let ctx_obj = body.entry("context").or_insert_with(|| json!({}));
    if let Value::Object(c) = ctx_obj {
        c.entry("library")
            .or_insert_with(|| json!({ "name": "spur", "version": env!("CARGO_PKG_VERSION") }));
    }
    let event = normalize(
        body,
        Some(kind),
        &BatchDefaults::default(),
        Origin::Outbound,
        host.clock.now(),
    )
    .map_err(|e| {
        let msg = format!("{what}: {e}");
        super::permanent(msg)
    })?;
    let message = Value::Object(event.body);
    if host.http.is_dry_run() {
        let mut req = OutboundRequest::new(
            Method::POST,
            Destination::Connection {
                name: TRACKING.into(),
                path: format!("/v1/{kind}"),
            },
        );
        req.body = Body::Json(message);
        let exchange = super::outbound(host, host.http.send(req, deadline()))?;
        super::http::echo_calls(&exchange.attempts);
        record_calls(exchange.attempts);
        exchange
            .result
            .map_err(|e| connector_error(host, &what, &e))?;
    } else {
        if !host.segment.has_write_key() {
            return Err(error(format!(
                "{what} needs segment.write_key in the configuration"
            )));
        }
        host.outbox
            .push(&message)
            .map_err(|e| error(format!("{what}: {e}")))?;
        super::log::emit(
            LogLevel::Debug,
            &format!("{what} queued {} for Segment", event.message_id),
        );
    }
    Ok(event.message_id)
}

/// Runs a read against the Segment APIs and records its calls in the run.
fn read<'a, Fut>(
    host: &'a Host,
    what: &str,
    make: impl FnOnce(&'a segment::SegmentApi, Option<Instant>) -> Fut,
) -> Res<Dynamic>
where
    Fut: std::future::Future<Output = segment::Read>,
{
    in_run(what)?;
    let exchange = super::outbound(host, make(&host.segment, deadline()))?;
    super::http::echo_calls(&exchange.attempts);
    record_calls(exchange.attempts);
    match exchange.result {
        Ok(Some(v)) => Ok(to_dynamic(&v)),
        Ok(None) => Ok(Dynamic::UNIT),
        Err(e) => Err(connector_error(host, what, &e)),
    }
}

/// Options map → JSON object, with `snake_case` keys turned into Segment's `camelCase`.
fn options(what: &str, opts: &Map, known: &[&str]) -> Res<serde_json::Map<String, Value>> {
    let mut out = serde_json::Map::new();
    for (k, v) in opts {
        let camel = camel(k);
        if !known.contains(&k.as_str()) && !known.contains(&camel.as_str()) {
            return Err(error(format!(
                "{what}: unknown option `{k}` (known: {})",
                known.join(", ")
            )));
        }
        out.insert(
            camel,
            to_json(v).map_err(|e| error(format!("{what}: {k}: {e}")))?,
        );
    }
    Ok(out)
}

fn camel(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut up = false;
    for c in s.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.extend(c.to_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn public(host: &Host, what: &str, call: segment::PublicCall) -> Res<Dynamic> {
    let (method, path, body) = (call.method.clone(), call.path.clone(), call.body.clone());
    let fetch = move || {
        read(host, what, move |api, d| async move {
            api.public(call, d).await.map(Some)
        })
    };
    if method == Method::GET {
        return fetch();
    }
    // A change (regulation, tracking-plan rules): approval gate, then once per run.
    in_run(what)?;
    let patterns = host.http.approval_patterns(segment::PUBLIC);
    if let Some(pattern) =
        crate::connectors::http::matching_pattern(patterns, method.as_str(), &path)
    {
        super::approval::require_for_call(
            host,
            segment::PUBLIC,
            method.as_str(),
            &path,
            &pattern,
            body.clone().unwrap_or(Value::Null),
        )?;
    }
    let args = json!({ "method": method.as_str(), "path": path, "body": body });
    let v = super::journal::effect(
        "segment.public",
        &args,
        super::journal::Reach::Outbound,
        |_| fetch().and_then(|d| to_json(&d).map_err(|e| error(format!("{what}: {e}")))),
        |_| true,
    )?;
    Ok(to_dynamic(&v))
}

fn query_of(opts: &serde_json::Map<String, Value>, skip: &[&str]) -> Vec<(String, String)> {
    opts.iter()
        .filter(|(k, _)| !skip.contains(&k.as_str()))
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_str().map_or_else(|| v.to_string(), str::to_owned),
            )
        })
        .collect()
}

/// `segment::*`: write-back, Profile API reads and Public API calls.
pub(super) fn register(engine: &mut Engine, host: &Arc<Host>) {
    let mut m = Module::new();
    register_writes(&mut m, host);
    register_profile(&mut m, host);
    register_public(&mut m, host);
    register_regulations(&mut m, host);
    register_reports(&mut m, host);
    engine.register_static_module("segment", m.into());
}

/// `segment::track(…)` … `segment::alias(…)` and `segment::batch([…])`.
fn register_writes(m: &mut Module, host: &Arc<Host>) {
    for kind in [
        EventType::Track,
        EventType::Identify,
        EventType::Page,
        EventType::Screen,
        EventType::Group,
        EventType::Alias,
    ] {
        let h = Arc::clone(host);
        m.set_native_fn(kind.as_str(), move |ctx: NativeCallContext, msg: Map| {
            placed(&ctx, write(&h, kind, &msg))
        });
    }
    let h = Arc::clone(host);
    m.set_native_fn("batch", move |ctx: NativeCallContext, msgs: Array| {
        let mut ids = Array::new();
        for (i, item) in msgs.into_iter().enumerate() {
            let what = format!("segment::batch: item {i}");
            let msg = item
                .try_cast::<Map>()
                .ok_or_else(|| error(format!("{what} must be a map")))?;
            let kind = msg
                .get("type")
                .map(to_text)
                .and_then(|t| EventType::parse(&t))
                .filter(|t| *t != EventType::Delete)
                .ok_or_else(|| {
                    error(format!(
                        "{what} needs a `type` (track, identify, page, screen, group, alias)"
                    ))
                });
            let kind = placed(&ctx, kind)?;
            ids.push(placed(&ctx, write(&h, kind, &msg))?.into());
        }
        Ok(ids)
    });
}

/// `segment::traits(id)`, `events(id[, opts])`, `external_ids(id)`, `metadata(id)`.
fn register_profile(m: &mut Module, host: &Arc<Host>) {
    macro_rules! profile {
        ($name:literal, $method:ident) => {{
            let h = Arc::clone(host);
            m.set_native_fn($name, move |ctx: NativeCallContext, id: Dynamic| {
                let id = to_text(&id);
                placed(
                    &ctx,
                    read(&h, concat!("segment::", $name), move |api, d| async move {
                        api.$method(&id, d).await
                    }),
                )
            });
        }};
    }
    profile!("traits", traits);
    profile!("external_ids", external_ids);
    profile!("metadata", metadata);
    for arity2 in [false, true] {
        let h = Arc::clone(host);
        let f = move |ctx: NativeCallContext, id: Dynamic, opts: Map| {
            let id = to_text(&id);
            let opts = placed(
                &ctx,
                options(
                    "segment::events",
                    &opts,
                    &["start", "end", "include", "exclude", "sort", "limit"],
                ),
            )?;
            placed(
                &ctx,
                read(&h, "segment::events", move |api, d| async move {
                    api.events(&id, &opts, d).await
                }),
            )
        };
        if arity2 {
            m.set_native_fn("events", f);
        } else {
            m.set_native_fn("events", move |ctx: NativeCallContext, id: Dynamic| {
                f(ctx, id, Map::new())
            });
        }
    }
}

/// The Public API's workspace reads and tracking-plan rules: `segment::sources()`,
/// `destinations()`, `tracking_plans()`, `tracking_plan_rules(id)`,
/// `update_tracking_plan_rules(id, rules)`.
fn register_public(m: &mut Module, host: &Arc<Host>) {
    let lists: [(&str, &str, &'static str); 3] = [
        ("sources", "/sources", "sources"),
        ("destinations", "/destinations", "destinations"),
        ("tracking_plans", "/tracking-plans", "trackingPlans"),
    ];
    for (name, path, key) in lists {
        let h = Arc::clone(host);
        let what = format!("segment::{name}");
        m.set_native_fn(name, move |ctx: NativeCallContext| {
            placed(&ctx, public(&h, &what, PublicCall::get(path).list(key)))
        });
    }
    let h = Arc::clone(host);
    m.set_native_fn(
        "tracking_plan_rules",
        move |ctx: NativeCallContext, id: Dynamic| {
            let path = format!(
                "/tracking-plans/{}/rules",
                segment::encode_segment(&to_text(&id))
            );
            placed(
                &ctx,
                public(
                    &h,
                    "segment::tracking_plan_rules",
                    PublicCall::get(path).list("rules"),
                ),
            )
        },
    );
    let h = Arc::clone(host);
    m.set_native_fn(
        "update_tracking_plan_rules",
        move |ctx: NativeCallContext, id: Dynamic, rules: Array| {
            let what = "segment::update_tracking_plan_rules";
            let rules = placed(
                &ctx,
                to_json(&Dynamic::from_array(rules)).map_err(|e| error(format!("{what}: {e}"))),
            )?;
            let path = format!(
                "/tracking-plans/{}/rules",
                segment::encode_segment(&to_text(&id))
            );
            placed(
                &ctx,
                public(
                    &h,
                    what,
                    PublicCall::new(Method::PATCH, path).body(json!({ "rules": rules })),
                ),
            )
        },
    );
}

/// `segment::regulate(…)`, `delete_user(id)`, `regulation(id)`.
fn register_regulations(m: &mut Module, host: &Arc<Host>) {
    let h = Arc::clone(host);
    m.set_native_fn("regulate", move |ctx: NativeCallContext, spec: Map| {
        let what = "segment::regulate";
        let o = placed(
            &ctx,
            options(what, &spec, &["type", "subject_type", "ids", "source_id"]),
        )?;
        let body = json!({
            "regulationType": o.get("type").cloned().unwrap_or(Value::Null),
            "subjectType": o.get("subjectType").cloned().unwrap_or_else(|| json!("USER_ID")),
            "subjectIds": o.get("ids").cloned().unwrap_or_else(|| json!([])),
        });
        if !body["regulationType"].is_string() || !body["subjectIds"].is_array() {
            return placed(
                &ctx,
                Err(error(format!(
                    "{what}: needs `type` (e.g. \"SUPPRESS_WITH_DELETE\") and `ids` (an array)"
                ))),
            );
        }
        let path = match o.get("sourceId").and_then(Value::as_str) {
            Some(s) => format!("/regulations/sources/{}", segment::encode_segment(s)),
            None => "/regulations".into(),
        };
        placed(
            &ctx,
            public(&h, what, PublicCall::new(Method::POST, path).body(body)),
        )
    });
    let h = Arc::clone(host);
    m.set_native_fn("delete_user", move |ctx: NativeCallContext, id: Dynamic| {
        let body = json!({ "regulationType": "SUPPRESS_WITH_DELETE", "subjectType": "USER_ID", "subjectIds": [to_text(&id)] });
        let call = PublicCall::new(Method::POST, "/regulations").body(body);
        placed(&ctx, public(&h, "segment::delete_user", call))
    });
    let h = Arc::clone(host);
    m.set_native_fn("regulation", move |ctx: NativeCallContext, id: Dynamic| {
        let path = format!("/regulations/{}", segment::encode_segment(&to_text(&id)));
        placed(
            &ctx,
            public(&h, "segment::regulation", PublicCall::get(path)),
        )
        .map(|d| {
            d.try_cast::<Map>()
                .and_then(|m| m.get("regulation").cloned())
                .unwrap_or_default()
        })
    });
}

/// `segment::audit_events(opts)`, `delivery_metrics(opts)`.
fn register_reports(m: &mut Module, host: &Arc<Host>) {
    let h = Arc::clone(host);
    m.set_native_fn("audit_events", move |ctx: NativeCallContext, opts: Map| {
        let what = "segment::audit_events";
        let o = placed(
            &ctx,
            options(
                what,
                &opts,
                &["start_time", "end_time", "resource_id", "resource_type"],
            ),
        )?;
        placed(
            &ctx,
            public(
                &h,
                what,
                PublicCall::get("/audit-events")
                    .query(query_of(&o, &[]))
                    .list("events"),
            ),
        )
    });
    let h = Arc::clone(host);
    m.set_native_fn(
        "delivery_metrics",
        move |ctx: NativeCallContext, opts: Map| {
            let what = "segment::delivery_metrics";
            let o = placed(
                &ctx,
                options(
                    what,
                    &opts,
                    &[
                        "destination_id",
                        "source_id",
                        "start_time",
                        "end_time",
                        "granularity",
                    ],
                ),
            )?;
            let Some(dest) = o.get("destinationId").and_then(Value::as_str) else {
                return placed(&ctx, Err(error(format!("{what}: needs `destination_id`"))));
            };
            let path = format!(
                "/destinations/{}/delivery-metrics",
                segment::encode_segment(dest)
            );
            placed(
                &ctx,
                public(
                    &h,
                    what,
                    PublicCall::get(path).query(query_of(&o, &["destinationId"])),
                ),
            )
        },
    );
}
