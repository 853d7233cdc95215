//! `state::get/set/del/incr/cas/keys` (namespaced per script) and the same under
//! `state::shared::…` (one namespace for all scripts).

use std::sync::Arc;
use std::time::Duration;

use rhai::{Array, Dynamic, Engine, EvalAltResult, Module, NativeCallContext};

use serde_json::{Value, json};

use super::convert::{to_dynamic, to_json, to_text};
use super::ctx::with_run;
use super::{Host, error, placed};
use crate::state::SHARED;

type Res<T> = Result<T, Box<EvalAltResult>>;

fn namespace(shared: bool) -> Res<String> {
    if shared {
        return Ok(SHARED.to_owned());
    }
    with_run(|ctx| ctx.namespace.clone())
        .ok_or_else(|| error("state is only available inside a handler, not while a script loads"))
}

fn ttl_of(v: &Dynamic) -> Res<Option<Duration>> {
    if v.is_unit() {
        return Ok(None);
    }
    match super::convert::to_duration(v) {
        Ok(d) if d.is_zero() => Err(error("state::set: ttl must be positive, got 0")),
        Ok(d) => Ok(Some(d)),
        Err(e) => Err(error(format!("state::set: ttl: {e}"))),
    }
}

fn json_of(what: &str, v: &Dynamic) -> Res<serde_json::Value> {
    to_json(v).map_err(|e| error(format!("{what}: {e}")))
}

/// A state write is an effect: journaled, so a re-execution of the run does not
/// apply it twice (an `incr` returns the value it returned the first time).
fn write(op: &str, args: Value, perform: impl FnOnce() -> Res<Value>) -> Res<Value> {
    super::journal::effect(op, &args, |_| perform(), |_| true)
}

fn number(what: &str, v: &Dynamic) -> Res<serde_json::Number> {
    match json_of(what, v)? {
        Value::Number(n) => Ok(n),
        other => Err(error(format!("{what}: `by` must be a number, got {other}"))),
    }
}

fn optional(what: &str, v: &Dynamic) -> Res<Option<Value>> {
    if v.is_unit() {
        Ok(None)
    } else {
        json_of(what, v).map(Some)
    }
}

fn module(host: &Arc<Host>, shared: bool) -> Module {
    let mut m = Module::new();
    let st = || host.state.clone();
    let fail = |e: crate::state::StateError| error(e.to_string());
    let ns = move || namespace(shared);

    let s = st();
    m.set_native_fn("get", move |ctx: NativeCallContext, key: Dynamic| {
        placed(&ctx, s.get(&ns()?, &to_text(&key)).map_err(fail))
            .map(|v| v.as_ref().map_or(Dynamic::UNIT, to_dynamic))
    });
    let s = st();
    m.set_native_fn(
        "get",
        move |ctx: NativeCallContext, key: Dynamic, default: Dynamic| {
            placed(&ctx, s.get(&ns()?, &to_text(&key)).map_err(fail))
                .map(|v| v.as_ref().map_or(default, to_dynamic))
        },
    );
    for with_ttl in [false, true] {
        let s = st();
        let set = move |ctx: NativeCallContext, key: Dynamic, value: Dynamic, ttl: Dynamic| {
            let r = (|| {
                let (ns, key) = (ns()?, to_text(&key));
                let v = json_of("state::set", &value)?;
                let ttl = ttl_of(&ttl)?;
                let args = json!(["set", ns, key, v, ttl.map(crate::duration::as_ms)]);
                write("state.set", args, || {
                    s.set(&ns, &key, v, ttl).map(|()| Value::Null).map_err(fail)
                })
            })();
            placed(&ctx, r).map(|_| ())
        };
        if with_ttl {
            m.set_native_fn("set", set);
        } else {
            m.set_native_fn(
                "set",
                move |ctx: NativeCallContext, key: Dynamic, value: Dynamic| {
                    set(ctx, key, value, Dynamic::UNIT)
                },
            );
        }
    }
    let s = st();
    m.set_native_fn("del", move |ctx: NativeCallContext, key: Dynamic| {
        let r = (|| {
            let (ns, key) = (ns()?, to_text(&key));
            write("state.del", json!([ns, key]), || {
                s.del(&ns, &key).map(Value::Bool).map_err(fail)
            })
        })();
        placed(&ctx, r).map(|v| v.as_bool().unwrap_or(false))
    });
    for with_by in [false, true] {
        let s = st();
        let incr = move |ctx: NativeCallContext, key: Dynamic, by: Dynamic| {
            let r = (|| {
                let (ns, key) = (ns()?, to_text(&key));
                let by = if by.is_unit() {
                    1.into()
                } else {
                    number("state::incr", &by)?
                };
                write("state.incr", json!([ns, key, by]), || {
                    s.incr(&ns, &key, &by).map_err(fail)
                })
            })();
            placed(&ctx, r).map(|v| to_dynamic(&v))
        };
        if with_by {
            m.set_native_fn("incr", incr);
        } else {
            m.set_native_fn("incr", move |ctx: NativeCallContext, key: Dynamic| {
                incr(ctx, key, Dynamic::UNIT)
            });
        }
    }
    let s = st();
    m.set_native_fn(
        "cas",
        move |ctx: NativeCallContext, key: Dynamic, old: Dynamic, new: Dynamic| {
            let r = (|| {
                let (ns, key) = (ns()?, to_text(&key));
                let (old, new) = (optional("state::cas", &old)?, optional("state::cas", &new)?);
                let args = json!([ns, key, old, new]);
                write("state.cas", args, || {
                    s.cas(&ns, &key, old.as_ref(), new, None)
                        .map(Value::Bool)
                        .map_err(fail)
                })
            })();
            placed(&ctx, r).map(|v| v.as_bool().unwrap_or(false))
        },
    );
    let s = st();
    m.set_native_fn("keys", move |ctx: NativeCallContext, prefix: &str| {
        placed(&ctx, s.keys(&ns()?, prefix).map_err(fail))
            .map(|keys| keys.into_iter().map(Dynamic::from).collect::<Array>())
    });
    let s = st();
    m.set_native_fn("keys", move |ctx: NativeCallContext| {
        placed(&ctx, s.keys(&ns()?, "").map_err(fail))
            .map(|keys| keys.into_iter().map(Dynamic::from).collect::<Array>())
    });
    m
}

pub(super) fn register(engine: &mut Engine, host: &Arc<Host>) {
    let mut m = module(host, false);
    m.set_sub_module("shared", module(host, true));
    engine.register_static_module("state", m.into());
}
