//! The functions a `*_test.rhai` file calls: `test`, `fire`, `webhook`, `call_tool`,
//! `clock::advance`, `mock::*`, `expect::*` and the assertions.

use rhai::{Array, Dynamic, Engine, EvalAltResult, FnPtr, Map, Module, NativeCallContext};
use serde_json::{Value, json};

use super::super::LocalRun;
use super::{COLLECTED, Parked, Res, TestCtx, run_one, wake, with_test};
use crate::clock::Clock as _;
use crate::connectors::recorder::{RecordedCall, Stub, glob_match};
use crate::event::{BatchDefaults, Origin, normalize};
use crate::host::convert::{to_dynamic, to_json};
use crate::host::placed;
use crate::queue::{WaitKind, wait_matches};
use crate::schedule::cron::Schedule;
use crate::script::HandlerKind;
use crate::worker::tick_args;

fn fire(event: &Map) -> Res<Array> {
    let Value::Object(body) =
        to_json(&Dynamic::from_map(event.clone())).map_err(|e| format!("fire: {e}"))?
    else {
        unreachable!("a map converts to a JSON object");
    };
    with_test(|t| {
        let now = t.clock.now();
        let origin = if body.contains_key("receivedAt") {
            Origin::Delivered
        } else {
            Origin::Tracking
        };
        let event = normalize(body, None, &BatchDefaults::default(), origin, now).map_err(
            |e| -> Box<EvalAltResult> {
                format!("fire: invalid event: {e} (field `{}`)", e.field()).into()
            },
        )?;
        let runs = fire_event(t, &event)?;
        Ok(runs.iter().map(LocalRun::to_dynamic).collect())
    })?
}

/// Runs the handlers a normalised event fires, and wakes the runs waiting for it.
fn fire_event(t: &mut TestCtx, event: &crate::event::Event) -> Res<Vec<LocalRun>> {
    let mut runs = Vec::new();
    for target in t.local.set.targets(event) {
        let kind = t
            .local
            .set
            .script(&target.script)
            .and_then(|s| s.handler(&target.handler))
            .map(|h| h.kind.clone());
        let Some(kind) = kind else { continue };
        let args =
            crate::worker::event_args(&kind, &event.body).map_err(|e| format!("fire: {e}"))?;
        runs.extend(run_one(t, &target.script, &target.handler, args, None));
    }
    // Runs waiting for an event like this one wake up.
    let (matching, rest): (Vec<Parked>, Vec<Parked>) = std::mem::take(&mut t.parked)
        .into_iter()
        .partition(|p| matches!(&p.wait.kind, WaitKind::Event { filter, .. } if wait_matches(filter, &event.body)));
    t.parked = rest;
    for p in matching {
        runs.extend(wake(t, p, Value::Object(event.body.clone())));
    }
    Ok(runs)
}

/// `call_tool(name, args)`: the tool's run, its `result` set when it finished.
fn call_tool(name: &str, args: Map) -> Res<Dynamic> {
    let args = to_json(&Dynamic::from_map(args)).map_err(|e| format!("call_tool: {e}"))?;
    with_test(|t| {
        let opts = t.fresh_run();
        let run = t
            .local
            .call_tool(name, &args, opts)
            .map_err(|e| format!("call_tool({name:?}): {e}"))?;
        t.calls.extend(run.recorded.iter().cloned());
        Ok::<_, Box<EvalAltResult>>(run.to_dynamic())
    })?
}

/// `webhook(name, #{ body, headers })`: runs source `name`'s handler on the request
/// (not verified), then fires what it emitted. Returns `#{ run, emitted, runs }`:
/// the source's run, the emitted events, and the runs they fired.
fn webhook(name: &str, req: Map) -> Res<Map> {
    let req = to_json(&Dynamic::from_map(req)).map_err(|e| format!("webhook: {e}"))?;
    let body = match req.get("body") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    let headers: Vec<(String, String)> = req
        .get("headers")
        .and_then(Value::as_object)
        .map(|h| {
            h.iter()
                .map(|(k, v)| {
                    let v = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                    (k.clone(), v)
                })
                .collect()
        })
        .unwrap_or_default();
    let request = crate::source::SourceRequest::local(name, body, &headers);
    with_test(|t| {
        let opts = t.fresh_run();
        let run = t
            .local
            .webhook(name, &request, opts)
            .ok_or_else(|| format!("webhook: no script registers source {name:?}"))?;
        t.calls.extend(run.recorded.iter().cloned());
        let mut fired = Vec::new();
        for body in &run.emitted {
            if let Some(event) = super::super::to_event(body.clone()) {
                fired.extend(fire_event(t, &event)?);
            }
        }
        let mut out = Map::new();
        out.insert("run".into(), run.to_dynamic());
        out.insert(
            "emitted".into(),
            run.emitted
                .iter()
                .map(|e| to_dynamic(&Value::Object(e.clone())))
                .collect::<Array>()
                .into(),
        );
        out.insert(
            "runs".into(),
            fired
                .iter()
                .map(LocalRun::to_dynamic)
                .collect::<Array>()
                .into(),
        );
        Ok::<_, Box<EvalAltResult>>(out)
    })?
}

fn advance(by_ms: i64) -> Res<Array> {
    with_test(|t| {
        let end = t.clock.now_ms().saturating_add(by_ms);
        let mut runs = Vec::new();
        loop {
            // The earliest thing due in (now, end]: a schedule tick or a parked wake-up.
            let now = t.clock.now();
            let mut next_tick: Option<(i64, String, String, String)> = None;
            for s in &t.local.set.scripts {
                for h in &s.handlers {
                    let HandlerKind::Schedule(expr) = &h.kind else {
                        continue;
                    };
                    let Some(at) = Schedule::parse(expr).ok().and_then(|c| c.next_after(now))
                    else {
                        continue;
                    };
                    let at = at.timestamp_millis();
                    if at <= end && next_tick.as_ref().is_none_or(|(a, ..)| at < *a) {
                        next_tick = Some((at, s.name.clone(), h.key.clone(), expr.clone()));
                    }
                }
            }
            let next_wake = t
                .parked
                .iter()
                .enumerate()
                .filter_map(|(i, p)| p.wait.wake_at_ms.filter(|w| *w <= end).map(|w| (w, i)))
                .min();
            match (next_tick, next_wake) {
                (Some((at, script, handler, expr)), wake) if wake.is_none_or(|(w, _)| at <= w) => {
                    t.clock.set_ms(at.max(t.clock.now_ms()));
                    let args = tick_args(&script, &expr, at);
                    runs.extend(run_one(t, &script, &handler, args, None));
                }
                (_, Some((w, i))) => {
                    t.clock.set_ms(w.max(t.clock.now_ms()));
                    let p = t.parked.remove(i);
                    runs.extend(wake(t, p, Value::Null));
                }
                (None, None) => break,
                (Some(_), None) => unreachable!("covered by the first arm"),
            }
        }
        t.clock.set_ms(end);
        runs.iter().map(LocalRun::to_dynamic).collect()
    })
}

fn recorded_matching(method: &str, path: &str) -> Res<Vec<RecordedCall>> {
    with_test(|t| {
        t.calls
            .iter()
            .filter(|c| {
                (method == "*" || c.method.eq_ignore_ascii_case(method))
                    && (glob_match(path, &c.path) || glob_match(path, &c.url))
            })
            .cloned()
            .collect()
    })
}

fn call_map(c: &RecordedCall) -> Dynamic {
    to_dynamic(
        &json!({ "method": c.method, "url": c.url, "path": c.path, "connection": c.connection, "body": c.body }),
    )
}

fn made_calls() -> String {
    with_test(|t| {
        if t.calls.is_empty() {
            "no calls were made".to_owned()
        } else {
            let list: Vec<String> = t
                .calls
                .iter()
                .map(|c| format!("{} {}", c.method, c.path))
                .collect();
            format!("calls made: {}", list.join(", "))
        }
    })
    .unwrap_or_default()
}

fn loose_eq(a: &Dynamic, b: &Dynamic) -> bool {
    match (to_json(a), to_json(b)) {
        (Ok(x), Ok(y)) => crate::json::loose_eq(&x, &y),
        _ => a.to_string() == b.to_string(),
    }
}

#[allow(
    clippy::too_many_lines,
    reason = "a registration table: one short closure per test function"
)]
pub(super) fn register(engine: &mut Engine) {
    engine.register_fn("test", |name: &str, f: FnPtr| -> Res<()> {
        COLLECTED.with(|c| c.borrow_mut().push((name.to_owned(), f)));
        Ok(())
    });
    engine.register_fn("fire", |ctx: NativeCallContext, event: Map| {
        placed(&ctx, fire(&event))
    });
    engine.register_fn(
        "call_tool",
        |ctx: NativeCallContext, name: &str, args: Map| placed(&ctx, call_tool(name, args)),
    );
    engine.register_fn("webhook", |ctx: NativeCallContext, name: &str, req: Map| {
        placed(&ctx, webhook(name, req))
    });
    engine.register_fn("assert", |cond: bool| -> Res<()> {
        if cond {
            Ok(())
        } else {
            Err("assertion failed".into())
        }
    });
    engine.register_fn("assert", |cond: bool, msg: &str| -> Res<()> {
        if cond {
            Ok(())
        } else {
            Err(format!("assertion failed: {msg}").into())
        }
    });
    engine.register_fn("assert_eq", |a: Dynamic, b: Dynamic| -> Res<()> {
        if loose_eq(&a, &b) {
            Ok(())
        } else {
            Err(format!("assert_eq failed: left {a:?} != right {b:?}").into())
        }
    });
    engine.register_fn(
        "assert_eq",
        |a: Dynamic, b: Dynamic, msg: &str| -> Res<()> {
            if loose_eq(&a, &b) {
                Ok(())
            } else {
                Err(format!("assert_eq failed: {msg}: left {a:?} != right {b:?}").into())
            }
        },
    );
    engine.register_fn("state_of", |script: &str, key: &str| -> Res<Dynamic> {
        let ns = if script == "shared" {
            crate::state::SHARED
        } else {
            script
        };
        with_test(|t| t.local.engine.host.state.get(ns, key))?
            .map_err(|e| e.to_string().into())
            .map(|v| v.as_ref().map_or(Dynamic::UNIT, to_dynamic))
    });

    let mut clock = Module::new();
    clock.set_native_fn("advance", |ctx: NativeCallContext, d: Dynamic| {
        placed(&ctx, duration_ms(&d).and_then(advance))
    });
    clock.set_native_fn("set", |ctx: NativeCallContext, at: &str| {
        let set = crate::event::parse_time(at)
            .ok_or_else(|| format!("clock::set: {at:?} is not an ISO-8601 time").into())
            .and_then(|t| with_test(|c| c.clock.set_ms(t.timestamp_millis())));
        placed(&ctx, set)
    });
    clock.set_native_fn("now", |ctx: NativeCallContext| {
        placed(
            &ctx,
            with_test(|c| crate::event::format_time(c.clock.now())),
        )
    });
    engine.register_static_module("clock", clock.into());

    let mut mock = Module::new();
    mock.set_native_fn(
        "http",
        |ctx: NativeCallContext, method: &str, path: &str, body: Dynamic| {
            placed(&ctx, stub(method, path, 200, &body))
        },
    );
    mock.set_native_fn(
        "http",
        |ctx: NativeCallContext, method: &str, path: &str, status: i64, body: Dynamic| {
            placed(
                &ctx,
                stub(method, path, u16::try_from(status).unwrap_or(500), &body),
            )
        },
    );
    mock.set_native_fn("approval", |ctx: NativeCallContext, decision: Map| {
        placed(&ctx, mock_approval(decision))
    });
    engine.register_static_module("mock", mock.into());

    let mut expect = Module::new();
    expect.set_native_fn(
        "called",
        |ctx: NativeCallContext, method: &str, path: &str| {
            let r = recorded_matching(method, path).and_then(|calls| {
                if calls.is_empty() {
                    Err(format!("expected a {method} {path} call; {}", made_calls()).into())
                } else {
                    Ok(())
                }
            });
            placed(&ctx, r)
        },
    );
    expect.set_native_fn(
        "called",
        |ctx: NativeCallContext, method: &str, path: &str, n: i64| {
            let r = recorded_matching(method, path).and_then(|calls| {
                if i64::try_from(calls.len()).ok() == Some(n) {
                    Ok(())
                } else {
                    Err(format!(
                        "expected {n} {method} {path} call(s), got {}; {}",
                        calls.len(),
                        made_calls()
                    )
                    .into())
                }
            });
            placed(&ctx, r)
        },
    );
    expect.set_native_fn(
        "not_called",
        |ctx: NativeCallContext, method: &str, path: &str| {
            let r = recorded_matching(method, path).and_then(|calls| {
                if calls.is_empty() {
                    Ok(())
                } else {
                    Err(format!(
                        "expected no {method} {path} call, got {}; {}",
                        calls.len(),
                        made_calls()
                    )
                    .into())
                }
            });
            placed(&ctx, r)
        },
    );
    expect.set_native_fn("calls", |ctx: NativeCallContext| {
        placed(
            &ctx,
            with_test(|t| t.calls.iter().map(call_map).collect::<Array>()),
        )
    });
    expect.set_native_fn(
        "calls",
        |ctx: NativeCallContext, method: &str, path: &str| {
            placed(
                &ctx,
                recorded_matching(method, path).map(|c| c.iter().map(call_map).collect::<Array>()),
            )
        },
    );
    engine.register_static_module("expect", expect.into());
}

fn mock_approval(decision: Map) -> Res<()> {
    let d = to_json(&Dynamic::from_map(decision)).map_err(|e| format!("mock::approval: {e}"))?;
    let approved = d.get("approved").and_then(Value::as_bool).unwrap_or(true);
    let status = if approved { "approved" } else { "rejected" };
    let full = json!({
        "approved": approved,
        "status": d.get("status").cloned().unwrap_or_else(|| json!(status)),
        "by": d.get("by").cloned().unwrap_or_else(|| json!("test")),
        "comment": d.get("comment").cloned().unwrap_or(Value::Null),
    });
    with_test(|t| t.auto_decision = Some(full))
}

fn stub(method: &str, path: &str, status: u16, body: &Dynamic) -> Res<()> {
    let body = to_json(body).map_err(|e| format!("mock::http: {e}"))?;
    with_test(|t| {
        if let Some(r) = &t.local.recorder {
            r.stub(Stub {
                method: method.to_ascii_uppercase(),
                path: path.to_owned(),
                status,
                body,
            });
        }
    })
}

fn duration_ms(d: &Dynamic) -> Res<i64> {
    crate::host::convert::to_duration(d)
        .map(crate::duration::as_ms)
        .map_err(|e| format!("clock::advance: {e}").into())
}
