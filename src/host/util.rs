//! Small host modules: `json`, `time`, `crypto`, `env`, plus `uuid()`, `skip(why)`
//! and `fail(why)`.

use std::sync::Arc;

use hmac::{Hmac, Mac};
use rhai::{Dynamic, Engine, EvalAltResult, Module, NativeCallContext};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::convert::{to_dynamic, to_json, to_text};

use super::{Host, HostFault, error, placed};

type Res<T> = Result<T, Box<EvalAltResult>>;

/// A value that differs per execution (clock, random), journaled by occurrence so a
/// re-execution sees the same one.
fn once(op: &str, make: impl FnOnce() -> serde_json::Value) -> Res<serde_json::Value> {
    super::journal::value(op, make)
}

fn uuid_once() -> String {
    once("uuid", || json!(uuid::Uuid::new_v4().to_string()))
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

#[allow(
    clippy::too_many_lines,
    reason = "a registration table: one short closure per built-in"
)]
pub(super) fn register(engine: &mut Engine, host: &Arc<Host>) {
    engine.register_fn("skip", |why: &str| -> Res<()> {
        Err(HostFault::Skip(why.into()).throw())
    });
    engine.register_fn("skip", || -> Res<()> {
        Err(HostFault::Skip(String::new()).throw())
    });
    engine.register_fn("fail", |why: &str| -> Res<()> {
        Err(HostFault::Fail(why.into()).throw())
    });
    engine.register_fn("uuid", uuid_once);

    let mut json = Module::new();
    json.set_native_fn(
        "parse",
        |ctx: NativeCallContext, text: &str| -> Res<Dynamic> {
            placed(
                &ctx,
                (|| -> Res<Dynamic> {
                    let v: serde_json::Value = serde_json::from_str(text)
                        .map_err(|e| error(format!("json::parse: {e}")))?;
                    Ok(to_dynamic(&v))
                })(),
            )
        },
    );
    json.set_native_fn(
        "stringify",
        |ctx: NativeCallContext, v: Dynamic| -> Res<String> {
            placed(
                &ctx,
                (|| -> Res<String> {
                    let j = to_json(&v).map_err(|e| error(format!("json::stringify: {e}")))?;
                    Ok(j.to_string())
                })(),
            )
        },
    );
    json.set_native_fn(
        "pretty",
        |ctx: NativeCallContext, v: Dynamic| -> Res<String> {
            placed(
                &ctx,
                (|| -> Res<String> {
                    let j = to_json(&v).map_err(|e| error(format!("json::pretty: {e}")))?;
                    Ok(serde_json::to_string_pretty(&j).unwrap_or_default())
                })(),
            )
        },
    );
    engine.register_static_module("json", json.into());

    let mut time = Module::new();
    let clock = Arc::clone(&host.clock);
    time.set_native_fn("now", move || {
        let v = once("time.now", || json!(crate::event::format_time(clock.now())))?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    });
    let clock = Arc::clone(&host.clock);
    time.set_native_fn("unix_ms", move || {
        let v = once("time.unix_ms", || json!(clock.now_ms()))?;
        Ok(v.as_i64().unwrap_or_default())
    });
    let h = Arc::clone(host);
    time.set_native_fn("sleep", move |ctx: NativeCallContext, d: Dynamic| {
        placed(&ctx, super::approval::sleep(&h, &d))
    });
    time.set_native_fn("parse", |ctx: NativeCallContext, text: &str| {
        let parsed = crate::event::parse_time(text)
            .map(|t| t.timestamp_millis())
            .ok_or_else(|| {
                error(format!(
                    "time::parse: {text:?} is not an ISO-8601 date-time"
                ))
            });
        placed(&ctx, parsed)
    });
    time.set_native_fn("format", |ctx: NativeCallContext, ms: i64| {
        let text = chrono::DateTime::from_timestamp_millis(ms)
            .map(crate::event::format_time)
            .ok_or_else(|| error(format!("time::format: {ms} is out of range")));
        placed(&ctx, text)
    });
    time.set_native_fn("duration_ms", |ctx: NativeCallContext, text: &str| {
        let ms = crate::duration::parse(text)
            .map(crate::duration::as_ms)
            .map_err(|e| error(format!("time::duration_ms: {e}")));
        placed(&ctx, ms)
    });
    engine.register_static_module("time", time.into());

    let mut crypto = Module::new();
    crypto.set_native_fn("sha256", |text: &str| {
        Ok(hex::encode(Sha256::digest(text.as_bytes())))
    });
    crypto.set_native_fn(
        "hmac_sha256",
        |ctx: NativeCallContext, key: &str, text: &str| -> Res<String> {
            placed(
                &ctx,
                (|| -> Res<String> {
                    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes())
                        .map_err(|e| error(format!("crypto::hmac_sha256: {e}")))?;
                    mac.update(text.as_bytes());
                    Ok(hex::encode(mac.finalize().into_bytes()))
                })(),
            )
        },
    );
    // Compares a signature a script computed with the one a request carries, in
    // constant time (a plain `==` leaks how much of it matched).
    crypto.set_native_fn("verify", |expected: &str, given: &str| {
        use subtle::ConstantTimeEq as _;
        Ok(bool::from(expected.as_bytes().ct_eq(given.as_bytes())))
    });
    crypto.set_native_fn("uuid", || Ok(uuid_once()));
    engine.register_static_module("crypto", crypto.into());

    let mut env = Module::new();
    let h = Arc::clone(host);
    env.set_native_fn("secret", move |ctx: NativeCallContext, name: Dynamic| {
        let name = to_text(&name);
        // A configuration problem: retrying cannot fix it.
        let value = h.env.get(&name).cloned().ok_or_else(|| {
            let msg = format!(
                "env::secret({name:?}): not allowed or not set (list it in [env] allow = [...])"
            );
            super::permanent(msg)
        });
        placed(&ctx, value)
    });
    engine.register_static_module("env", env.into());
}
