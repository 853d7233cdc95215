//! Effects through the run's journal (DESIGN.md §5 "Durable runs").
//!
//! An effect's identity is its operation, a digest of its arguments and its
//! occurrence among identical calls in this execution. If the journal has a result
//! for that identity (an earlier execution of the same run made the effect), it is
//! returned and nothing is done again; otherwise the effect runs and its result is
//! journaled durably before the script continues.

use rhai::EvalAltResult;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::ctx::with_run;
use super::error;

type Res<T> = Result<T, Box<EvalAltResult>>;

/// A short digest of `args` (canonical JSON: object keys sorted).
pub(crate) fn digest(args: &Value) -> String {
    let bytes = serde_json::to_vec(args).expect("a JSON value always serialises");
    hex::encode(&Sha256::digest(&bytes)[..6])
}

/// The identity of the next `op` with `args` in this run: `op:digest:occurrence`.
/// Outside a run, a fresh identity.
pub(crate) fn next_key(op: &str, args: &Value) -> String {
    let base = format!("{op}:{}", digest(args));
    with_run(|ctx| {
        let n = ctx.occurrences.entry(base.clone()).or_insert(0);
        *n += 1;
        format!("{base}:{n}")
    })
    .unwrap_or_else(|| format!("{base}:{}", uuid::Uuid::new_v4()))
}

/// A journaled result of `key`, if this run has one.
pub(crate) fn recorded(key: &str) -> Res<Option<Value>> {
    let journal = with_run(|ctx| ctx.journal.clone()).flatten();
    match journal {
        Some(j) => j
            .get(key)
            .map_err(|e| error(format!("reading the run journal: {e}"))),
        None => Ok(None),
    }
}

/// Journals `value` under `key` (durable before returning).
pub(crate) fn record(key: &str, value: &Value) -> Res<()> {
    put(key, value, true)
}

/// The journal key under which a run's script version is kept.
pub const PIN_KEY: &str = "@pin";

fn put(key: &str, value: &Value, durable: bool) -> Res<()> {
    let (journal, pin) = with_run(|ctx| {
        let first = !ctx.journaled;
        ctx.journaled = true;
        (
            ctx.journal.clone(),
            if first { ctx.pin.take() } else { None },
        )
    })
    .unwrap_or_default();
    if let Some(j) = journal {
        if let Some(hash) = pin {
            // Covered by this entry's flush when it is durable.
            j.put(PIN_KEY, &Value::String(hash), false)
                .map_err(|e| error(format!("writing the run journal: {e}")))?;
        }
        j.put(key, value, durable)
            .map_err(|e| error(format!("writing the run journal: {e}")))?;
    }
    Ok(())
}

/// A value that differs per execution (`time::now()`, `uuid()`), journaled by
/// occurrence. Not flushed on its own: the next effect's flush covers it, and a
/// value no effect depended on may differ after a crash without harm.
pub(crate) fn value(op: &str, make: impl FnOnce() -> Value) -> Res<Value> {
    let key = next_key(op, &Value::Null);
    if let Some(v) = recorded(&key)? {
        return Ok(v);
    }
    let v = make();
    put(&key, &v, false)?;
    Ok(v)
}

/// Runs the effect `op(args)` once per run: a journaled result is returned as is;
/// otherwise `perform(key)` runs and its result is journaled when `keep` says the
/// effect took place (a 503 did not: the next execution tries again).
pub(crate) fn effect(
    op: &str,
    args: &Value,
    perform: impl FnOnce(&str) -> Res<Value>,
    keep: impl Fn(&Value) -> bool,
) -> Res<Value> {
    let key = next_key(op, args);
    if let Some(v) = recorded(&key)? {
        return Ok(v);
    }
    let v = perform(&key)?;
    if keep(&v) {
        record(&key, &v)?;
    }
    Ok(v)
}

/// The idempotency key sent with an outbound effect: stable across the run's
/// executions.
pub(crate) fn idempotency_key(key: &str) -> String {
    let run = with_run(|ctx| ctx.run_key.clone()).unwrap_or_default();
    format!("spur-{run}-{}", digest(&Value::String(key.to_owned())))
}
