//! `state::get/set/del/incr/cas/keys` (namespaced per script) and the same under
//! `state::shared::…` (one namespace for all scripts).

use std::sync::Arc;
use std::time::Duration;

use rhai::{Dynamic, Engine, EvalAltResult, Module, NativeCallContext};

use serde_json::{Value, json};

use super::convert::{to_dynamic, to_json, to_text};
use super::ctx::{JournalRef, with_run};
use super::{Host, error, placed};
use crate::state::{SHARED, StateOp};

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

/// A state change is an effect: journaled, so a re-execution of the run does not
/// apply it twice (an `incr` returns the value it returned the first time), and
/// committed atomically with its journal entry (`host::journal::state_change`).
fn change(host: &Host, name: &str, shared: bool, key: &Dynamic, op: StateOp) -> Res<Value> {
    let (ns, key) = (namespace(shared)?, to_text(key));
    let args = match &op {
        StateOp::Set { value, ttl_ms } => json!(["set", ns, key, value, ttl_ms]),
        StateOp::Del => json!([ns, key]),
        StateOp::Incr(by) => json!([ns, key, by]),
        StateOp::Cas { old, new } => json!([ns, key, old, new]),
    };
    super::journal::state_change(host.state.as_ref(), name, &ns, &key, &op, &args)
}

/// The live value as the run sees it (its own uncommitted changes first).
fn read(host: &Host, shared: bool, key: &Dynamic) -> Res<Option<Value>> {
    let (ns, key) = (namespace(shared)?, to_text(key));
    let own = with_run(|ctx| match &ctx.journal {
        Some(JournalRef::Durable(tx)) => Some(tx.state_read(&ns, &key)),
        _ => None,
    })
    .flatten();
    match own {
        Some(r) => r.map(|v| v.map(|e| e.v)).map_err(|e| error(e.to_string())),
        None => host.state.get(&ns, &key).map_err(|e| error(e.to_string())),
    }
}

#[allow(
    clippy::too_many_lines,
    reason = "a registration table: one short closure per state:: function"
)]
fn module(host: &Arc<Host>, shared: bool) -> Module {
    let mut m = Module::new();

    let h = Arc::clone(host);
    m.set_native_fn("get", move |ctx: NativeCallContext, key: Dynamic| {
        placed(&ctx, read(&h, shared, &key)).map(|v| v.as_ref().map_or(Dynamic::UNIT, to_dynamic))
    });
    let h = Arc::clone(host);
    m.set_native_fn(
        "get",
        move |ctx: NativeCallContext, key: Dynamic, default: Dynamic| {
            placed(&ctx, read(&h, shared, &key)).map(|v| v.as_ref().map_or(default, to_dynamic))
        },
    );
    for with_ttl in [false, true] {
        let h = Arc::clone(host);
        let set = move |ctx: NativeCallContext, key: Dynamic, value: Dynamic, ttl: Dynamic| {
            let r = (|| {
                let value = json_of("state::set", &value)?;
                let ttl_ms = ttl_of(&ttl)?.map(crate::duration::as_ms);
                change(
                    &h,
                    "state.set",
                    shared,
                    &key,
                    StateOp::Set { value, ttl_ms },
                )
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
    let h = Arc::clone(host);
    m.set_native_fn("del", move |ctx: NativeCallContext, key: Dynamic| {
        placed(&ctx, change(&h, "state.del", shared, &key, StateOp::Del))
            .map(|v| v.as_bool().unwrap_or(false))
    });
    for with_by in [false, true] {
        let h = Arc::clone(host);
        let incr = move |ctx: NativeCallContext, key: Dynamic, by: Dynamic| {
            let r = (|| {
                let by = if by.is_unit() {
                    1.into()
                } else {
                    number("state::incr", &by)?
                };
                change(&h, "state.incr", shared, &key, StateOp::Incr(by))
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
    let h = Arc::clone(host);
    m.set_native_fn(
        "cas",
        move |ctx: NativeCallContext, key: Dynamic, old: Dynamic, new: Dynamic| {
            let r = (|| {
                let (old, new) = (optional("state::cas", &old)?, optional("state::cas", &new)?);
                change(&h, "state.cas", shared, &key, StateOp::Cas { old, new })
            })();
            placed(&ctx, r).map(|v| v.as_bool().unwrap_or(false))
        },
    );
    let h = Arc::clone(host);
    let keys = move |prefix: &str| -> Res<rhai::Array> {
        let ns = namespace(shared)?;
        let own = with_run(|ctx| match &ctx.journal {
            Some(JournalRef::Durable(tx)) => {
                Some(tx.state_keys(&ns, prefix).map_err(|e| error(e.to_string())))
            }
            _ => None,
        })
        .flatten();
        let keys = match own {
            Some(keys) => keys?,
            None => h
                .state
                .keys(&ns, prefix)
                .map_err(|e| error(e.to_string()))?,
        };
        Ok(keys.into_iter().map(Dynamic::from).collect())
    };
    let k = keys.clone();
    m.set_native_fn("keys", move |ctx: NativeCallContext, prefix: &str| {
        placed(&ctx, k(prefix))
    });
    m.set_native_fn("keys", move |ctx: NativeCallContext| placed(&ctx, keys("")));
    m
}

pub(super) fn register(engine: &mut Engine, host: &Arc<Host>) {
    let mut m = module(host, false);
    m.set_sub_module("shared", module(host, true));
    engine.register_static_module("state", m.into());
}
