//! Effects through the run's journal (DESIGN.md §5 "Durable runs").
//!
//! An effect's identity is its operation, a digest of its arguments and its
//! occurrence among identical calls in this execution. If the journal has a result
//! for that identity (an earlier execution of the same run made the effect), it is
//! returned and nothing is done again; otherwise the effect runs and its result is
//! journaled.
//!
//! In the daemon the journal is the run's transaction (`run::tx`): local effects
//! (state changes, recorded values) commit together with the settle; an outbound
//! effect first makes everything written before it durable (the output-commit
//! rule), then commits its own result and asks for a flush.

use rhai::EvalAltResult;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::ctx::{JournalRef, RunCtx, with_run};
use super::error;
use crate::run::tx::TxError;
use crate::state::{StateOp, StateStore};

type Res<T> = Result<T, Box<EvalAltResult>>;

/// The journal key under which a run's script version is kept.
pub(crate) use crate::queue::PIN_KEY;

/// How an effect relates to the outside world.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reach {
    /// Leaves the process now (an HTTP call, through `host::outbound`, which makes
    /// what the run wrote before it durable first); its result is committed and
    /// flushed soon after.
    Outbound,
    /// Handed to a part of the daemon that sends it later (the Segment outbox, which
    /// flushes before it sends): the run's writes are committed first.
    Handoff,
}

fn store_error(e: &TxError) -> Box<EvalAltResult> {
    error(format!("the run's journal: {e}"))
}

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

/// Refuses effects where there may be none (a source's `respond`).
fn effects_allowed() -> Res<()> {
    if with_run(|ctx| ctx.pure).unwrap_or(false) {
        return Err(super::permanent(
            "effects are not available here: `respond` answers before the request is stored; do the work in the handler",
        ));
    }
    Ok(())
}

/// A journaled result of `key`, if this run has one (every effect asks this first,
/// so it is also where effects are refused in a pure context).
pub(crate) fn recorded(key: &str) -> Res<Option<Value>> {
    effects_allowed()?;
    lookup(key)
}

fn lookup(key: &str) -> Res<Option<Value>> {
    with_run(|ctx| match &ctx.journal {
        Some(JournalRef::Durable(tx)) => tx.journal_get(key).map_err(|e| store_error(&e)),
        Some(JournalRef::Memory(m)) => Ok(m.lock().get(key).cloned()),
        None => Ok(None),
    })
    .unwrap_or(Ok(None))
}

/// Journals `value` under `key`.
pub(crate) fn record(key: &str, value: &Value) {
    with_run(|ctx| {
        note_pin(ctx);
        match &mut ctx.journal {
            Some(JournalRef::Durable(tx)) => tx.journal_put(key, value.clone()),
            Some(JournalRef::Memory(m)) => {
                m.lock().insert(key.to_owned(), value.clone());
            }
            None => {}
        }
    });
}

/// With the run's first journal entry, the script version it runs on (a run pins
/// its version only once it has effects to protect).
fn note_pin(ctx: &mut RunCtx) {
    if ctx.journaled {
        return;
    }
    ctx.journaled = true;
    if let (Some(hash), Some(JournalRef::Durable(tx))) = (ctx.pin.take(), &mut ctx.journal) {
        tx.journal_put(PIN_KEY, Value::String(hash));
    }
}

/// A value that differs per execution (`time::now()`, `uuid()`), journaled by
/// occurrence, committed with the run's other writes.
pub(crate) fn value(op: &str, make: impl FnOnce() -> Value) -> Res<Value> {
    let key = next_key(op, &Value::Null);
    if let Some(v) = lookup(&key)? {
        return Ok(v);
    }
    let v = make();
    record(&key, &v);
    Ok(v)
}

/// Makes everything the run wrote so far durable before something leaves the
/// process (an HTTP call, also a read). Blocking; waits for the shared flusher.
pub(crate) fn before_output() -> Res<()> {
    effects_allowed()?;
    with_run(|ctx| match &mut ctx.journal {
        Some(JournalRef::Durable(tx)) => tx.before_output().map_err(|e| store_error(&e)),
        _ => Ok(()),
    })
    .unwrap_or(Ok(()))
}

/// The run wrote to the store outside its transaction (an approval request): its
/// next output makes that durable first.
pub(crate) fn wrote_outside() {
    with_run(|ctx| {
        if let Some(JournalRef::Durable(tx)) = &mut ctx.journal {
            tx.note_written();
        }
    });
}

fn commit() -> Res<()> {
    with_run(|ctx| match &mut ctx.journal {
        Some(JournalRef::Durable(tx)) => tx.commit().map_err(|e| store_error(&e)),
        _ => Ok(()),
    })
    .unwrap_or(Ok(()))
}

fn after_effect() -> Res<()> {
    with_run(|ctx| match &mut ctx.journal {
        Some(JournalRef::Durable(tx)) => tx.after_effect().map_err(|e| store_error(&e)),
        _ => Ok(()),
    })
    .unwrap_or(Ok(()))
}

/// Runs the effect `op(args)` once per run: a journaled result is returned as is;
/// otherwise `perform(key)` runs — for a hand-off after the run's writes are
/// committed — and its result is journaled when `keep` says the effect took place
/// (a 503 did not: the next execution tries again).
pub(crate) fn effect(
    op: &str,
    args: &Value,
    reach: Reach,
    perform: impl FnOnce(&str) -> Res<Value>,
    keep: impl Fn(&Value) -> bool,
) -> Res<Value> {
    let key = next_key(op, args);
    if let Some(v) = recorded(&key)? {
        return Ok(v);
    }
    if reach == Reach::Handoff {
        commit()?;
    }
    let v = perform(&key)?;
    if keep(&v) {
        record(&key, &v);
        if reach == Reach::Outbound {
            after_effect()?;
        }
    }
    Ok(v)
}

/// A state change of the run, once per run: `op` on `key` of namespace `ns`. In
/// the daemon it is computed under the key's lock and committed with the run's
/// other writes; elsewhere it applies at once.
pub(crate) fn state_change(
    state: &dyn StateStore,
    name: &str,
    ns: &str,
    key: &str,
    op: &StateOp,
    args: &Value,
) -> Res<Value> {
    let jkey = next_key(name, args);
    if let Some(v) = recorded(&jkey)? {
        return Ok(v);
    }
    let durable = with_run(|ctx| {
        if !matches!(ctx.journal, Some(JournalRef::Durable(_))) {
            return None;
        }
        note_pin(ctx);
        let Some(JournalRef::Durable(tx)) = &mut ctx.journal else {
            return None;
        };
        Some(tx.state_apply(ns, key, op, &jkey))
    })
    .flatten();
    match durable {
        Some(Ok(v)) => Ok(v),
        Some(Err(TxError::State(e))) => Err(error(e.to_string())),
        Some(Err(e)) => Err(store_error(&e)),
        None => {
            let v = state
                .apply_now(ns, key, op)
                .map_err(|e| error(e.to_string()))?;
            record(&jkey, &v);
            Ok(v)
        }
    }
}

/// The idempotency key sent with an outbound effect: stable across the run's
/// executions.
pub(crate) fn idempotency_key(key: &str) -> String {
    let run = with_run(|ctx| ctx.run_key.clone()).unwrap_or_default();
    format!("spur-{run}-{}", digest(&Value::String(key.to_owned())))
}
