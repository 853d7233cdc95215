//! `state::get/set/del/incr/cas/keys` (namespaced per script) and the same under
//! `state::shared::…` (one namespace for all scripts).

use std::sync::Arc;
use std::time::Duration;

use rhai::{Array, Dynamic, Engine, EvalAltResult, Module, NativeCallContext};

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
    if let Ok(secs) = v.as_int() {
        if secs <= 0 {
            return Err(error(format!(
                "state::set: ttl must be positive, got {secs}"
            )));
        }
        return Ok(Some(Duration::from_secs(secs as u64)));
    }
    if let Ok(secs) = v.as_float() {
        if secs.is_finite() && secs > 0.0 {
            return Ok(Some(Duration::from_secs_f64(secs)));
        }
        return Err(error(format!(
            "state::set: ttl must be positive, got {secs}"
        )));
    }
    crate::duration::parse(&to_text(v))
        .map(Some)
        .map_err(|e| error(format!("state::set: ttl: {e}")))
}

fn json_of(what: &str, v: &Dynamic) -> Res<serde_json::Value> {
    to_json(v).map_err(|e| error(format!("{what}: {e}")))
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
    let s = st();
    m.set_native_fn(
        "set",
        move |ctx: NativeCallContext, key: Dynamic, value: Dynamic| {
            placed(
                &ctx,
                (|| {
                    let v = json_of("state::set", &value)?;
                    s.set(&ns()?, &to_text(&key), v, None).map_err(fail)
                })(),
            )
        },
    );
    let s = st();
    m.set_native_fn(
        "set",
        move |ctx: NativeCallContext, key: Dynamic, value: Dynamic, ttl: Dynamic| {
            placed(
                &ctx,
                (|| {
                    let v = json_of("state::set", &value)?;
                    s.set(&ns()?, &to_text(&key), v, ttl_of(&ttl)?)
                        .map_err(fail)
                })(),
            )
        },
    );
    let s = st();
    m.set_native_fn("del", move |ctx: NativeCallContext, key: Dynamic| {
        placed(&ctx, s.del(&ns()?, &to_text(&key)).map_err(fail))
    });
    let s = st();
    m.set_native_fn("incr", move |ctx: NativeCallContext, key: Dynamic| {
        placed(
            &ctx,
            s.incr(&ns()?, &to_text(&key), &1.into()).map_err(fail),
        )
        .map(|v| to_dynamic(&v))
    });
    let s = st();
    m.set_native_fn(
        "incr",
        move |ctx: NativeCallContext, key: Dynamic, by: Dynamic| {
            placed(
                &ctx,
                (|| {
                    let by = match json_of("state::incr", &by)? {
                        serde_json::Value::Number(n) => n,
                        other => {
                            return Err(error(format!(
                                "state::incr: `by` must be a number, got {other}"
                            )));
                        }
                    };
                    s.incr(&ns()?, &to_text(&key), &by).map_err(fail)
                })(),
            )
            .map(|v| to_dynamic(&v))
        },
    );
    let s = st();
    m.set_native_fn(
        "cas",
        move |ctx: NativeCallContext, key: Dynamic, old: Dynamic, new: Dynamic| {
            placed(
                &ctx,
                (|| {
                    let old = if old.is_unit() {
                        None
                    } else {
                        Some(json_of("state::cas", &old)?)
                    };
                    let new = if new.is_unit() {
                        None
                    } else {
                        Some(json_of("state::cas", &new)?)
                    };
                    s.cas(&ns()?, &to_text(&key), old.as_ref(), new, None)
                        .map_err(fail)
                })(),
            )
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
