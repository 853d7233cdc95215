//! One execution of one handler: find it, build its arguments, run it in the sandbox
//! with a fresh run context, and classify the result.
//!
//! Classification (DESIGN.md §5): a normal return is `ok`; `skip(why)` is `skipped`;
//! `fail(why)` is `failed`; a sandbox limit that would trip again (operations, call
//! depth, sizes) is `failed` too; anything else — a `throw`, a runtime error, a
//! connector error, the wall-clock limit — is retried.

use std::time::{Duration, Instant};

use chrono::Utc;
use rhai::{Dynamic, EvalAltResult};

use super::WorkerDeps;
use crate::event::format_time;
use std::sync::Arc;

use crate::host::{self, HostFault, JournalRef, RunCtx};
use crate::queue::{Lease, StoredEvent, Trigger, Wait};
use crate::run::tx::RunTx;
use crate::run::{RunError, RunRecord, RunStatus};
use crate::script::{
    EngineOptions, Handler, HandlerKind, Script, ScriptSet, audience_of, computed_trait_of,
    describe_eval, set_deadline, with_thread_engine,
};

/// How an execution ended, before retry policy is applied.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    Ok,
    Skipped(String),
    Failed(String),
    Retry(String),
    /// The run waits (approval, timer, event) and must be parked.
    Park(Wait),
}

/// A finished execution: its record (status filled for the outcome), outcome, and
/// the run's transaction holding what it wrote and has not committed yet.
pub(crate) struct Execution {
    pub record: RunRecord,
    pub outcome: Outcome,
    /// Whether the run may have a journal in the store (to clear when it finishes).
    pub journaled: bool,
    pub tx: Option<Box<RunTx>>,
}

/// Runs `lease`'s handler once. On its first execution the run is pinned to the
/// current version of its script (`lease.job.pinned`); later executions use that
/// version even if the file changed.
pub(crate) fn execute(deps: &WorkerDeps, lease: &mut Lease) -> Execution {
    let clock = Stopwatch::start(deps);
    let started_at = clock.now();
    let mut record = blank_record(deps, lease, started_at);
    let set = deps.scripts.get();

    let (script, newly_pinned) = match resolve_script(deps, &set, lease) {
        Ok(s) => s,
        Err(why) => return finish(record, clock, Outcome::Skipped(why), None),
    };
    record.script_hash = Some(script.hash.clone());
    let job = &lease.job;
    let Some(handler) = script.handler(&job.handler) else {
        return finish(
            record,
            clock,
            Outcome::Skipped(format!(
                "handler {} is no longer in {}",
                job.handler, job.script
            )),
            None,
        );
    };

    let args = match build_args(deps, lease, &handler.kind, &mut record) {
        Ok(a) => a,
        Err(why) => {
            let err = RunError {
                kind: "script".into(),
                message: why.clone(),
                file: None,
                line: None,
                column: None,
            };
            return finish(record, clock, Outcome::Failed(why), Some(err));
        }
    };

    let job = &lease.job;
    let mut ctx = RunCtx::new(
        &script.name,
        job.id.to_string(),
        deps.engine.limits.max_log_lines,
    );
    ctx.script.clone_from(&job.script);
    ctx.handler.clone_from(&job.handler);
    ctx.run_id = record.id;
    ctx.trace.clone_from(&record.trace);
    if let Trigger::Webhook { source, .. } = &job.trigger {
        ctx.source = Some(source.clone());
    }
    if newly_pinned {
        ctx.pin.clone_from(&job.pinned);
    }
    let tx = if is_fresh(lease) {
        RunTx::fresh
    } else {
        RunTx::new
    };
    ctx.journal = Some(JournalRef::Durable(Box::new(tx(
        job.id,
        deps.queue.clone(),
        Arc::clone(&deps.engine.host.state),
    ))));
    let (result, mut ctx) = invoke(&set, &deps.engine, &script, handler, args, ctx);
    let (outcome, error) = outcome_of(&script, handler, &result, &mut ctx);
    if let (Trigger::Tool { .. }, Outcome::Ok, Ok(value)) = (&job.trigger, &outcome, &result) {
        record.result = crate::tool::returned(handler, value).ok();
    }
    record.logs = ctx.logs;
    record.dropped_logs = ctx.dropped_logs;
    record.calls = ctx.calls;
    record.decisions = ctx.decisions;
    record.emitted = ctx
        .emitted
        .iter()
        .filter_map(|e| {
            e.get("messageId")
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        })
        .collect();
    if let Outcome::Park(wait) = &outcome {
        record.waiting_for = Some(serde_json::to_value(wait).expect("a wait serialises"));
    }
    let mut exec = finish(record, clock, outcome, error);
    exec.journaled = !is_fresh(lease);
    exec.tx = match ctx.journal {
        Some(JournalRef::Durable(tx)) => Some(tx),
        _ => None,
    };
    exec
}

/// The script version this run executes: its pinned one, or (first execution) the
/// current one, which it is then pinned to.
fn resolve_script(
    deps: &WorkerDeps,
    set: &ScriptSet,
    lease: &mut Lease,
) -> Result<(Arc<Script>, bool), String> {
    let fresh = is_fresh(lease);
    let job = &mut lease.job;
    if job.pinned.is_none() && !fresh {
        // A run that executed before (a crash, or a journal from an earlier life)
        // may have pinned its version with its first effect.
        job.pinned = deps
            .queue
            .journal_get(job.id, crate::queue::PIN_KEY)
            .ok()
            .flatten()
            .and_then(|v| v.as_str().map(str::to_owned));
    }
    let current = set.script(&job.script);
    match (&job.pinned, current) {
        (Some(h), Some(c)) if *h == c.hash => Ok((Arc::clone(c), false)),
        (Some(h), _) => {
            with_thread_engine(set, &deps.engine, |engine| deps.versions.get(h, engine))
                .map(|s| (s, false))
                .ok_or_else(|| {
                    format!(
                        "version {h} of script {:?} is no longer available",
                        job.script
                    )
                })
        }
        (None, Some(c)) => {
            // Pinned in memory now (a retry or a park stores it with the job) and in
            // the journal with the run's first effect.
            job.pinned = Some(c.hash.clone());
            Ok((Arc::clone(c), true))
        }
        (None, None) => Err(format!("script {:?} is no longer loaded", job.script)),
    }
}

/// A job dispatched by this process that never ran: it has no journal yet.
pub(super) fn is_fresh(lease: &Lease) -> bool {
    lease.event.is_some() && lease.job.attempt == 0 && lease.job.wakeups == 0
}

/// The record of a run that panicked (host bug): retried like any error.
pub(super) fn panicked(deps: &WorkerDeps, lease: &Lease) -> Execution {
    let _ = host::end_run();
    set_deadline(None);
    let clock = Stopwatch::start(deps);
    let record = blank_record(deps, lease, clock.now());
    let err = RunError {
        kind: "runtime".into(),
        message: "internal error while running the handler".into(),
        file: None,
        line: None,
        column: None,
    };
    finish(
        record,
        clock,
        Outcome::Retry(err.message.clone()),
        Some(err),
    )
}

fn blank_record(deps: &WorkerDeps, lease: &Lease, started_at: chrono::DateTime<Utc>) -> RunRecord {
    let job = &lease.job;
    let id = deps.queue.next_id().unwrap_or(job.id);
    let mut record = RunRecord::of_job(job, id, format_time(started_at));
    record.queued_ms =
        (deps.queue.clock().now_ms() - job.not_before_ms.max(job.created_ms)).max(0) as f64;
    if deps.telemetry.is_some() {
        record.trace = Some(crate::telemetry::TraceIds::for_job(job));
    }
    record
}

/// When an execution started, by the daemon's clock (for the record's times) and
/// by the monotonic clock (for its duration).
struct Stopwatch {
    at: Instant,
    clock: crate::clock::SharedClock,
}

impl Stopwatch {
    fn start(deps: &WorkerDeps) -> Self {
        Self {
            at: Instant::now(),
            clock: Arc::clone(deps.queue.clock()),
        }
    }

    fn now(&self) -> chrono::DateTime<Utc> {
        self.clock.now()
    }
}

fn finish(
    mut record: RunRecord,
    clock: Stopwatch,
    outcome: Outcome,
    error: Option<RunError>,
) -> Execution {
    record.duration_ms = clock.at.elapsed().as_secs_f64() * 1000.0;
    record.finished_at = format_time(clock.now());
    record.status = match &outcome {
        Outcome::Ok => RunStatus::Ok,
        Outcome::Skipped(_) => RunStatus::Skipped,
        Outcome::Failed(_) => RunStatus::Failed,
        Outcome::Retry(_) => RunStatus::Retrying,
        Outcome::Park(_) => RunStatus::Waiting,
    };
    record.reason = match &outcome {
        Outcome::Skipped(r) | Outcome::Failed(r) if !r.is_empty() => Some(r.clone()),
        _ => None,
    };
    record.error = error;
    Execution {
        record,
        outcome,
        journaled: true,
        tx: None,
    }
}

fn load_event(
    deps: &WorkerDeps,
    lease: &Lease,
    seq: u64,
) -> Result<std::sync::Arc<StoredEvent>, String> {
    if let Some(e) = &lease.event {
        return Ok(std::sync::Arc::clone(e));
    }
    match deps.queue.event(seq) {
        Ok(Some(e)) => Ok(std::sync::Arc::new(e)),
        Ok(None) => Err(format!("event {seq} is no longer retained")),
        Err(e) => Err(format!("event {seq} could not be read: {e}")),
    }
}

fn build_args(
    deps: &WorkerDeps,
    lease: &Lease,
    kind: &HandlerKind,
    record: &mut RunRecord,
) -> Result<Vec<Dynamic>, String> {
    match &lease.job.trigger {
        Trigger::Event { seq, .. } => {
            let event = load_event(deps, lease, *seq)?;
            let body = &event.body;
            record.event_type = body.get("type").and_then(|v| v.as_str()).map(str::to_owned);
            record.event = body
                .get("event")
                .and_then(|v| v.as_str())
                .map(str::to_owned);
            event_args(kind, body)
        }
        Trigger::Schedule { schedule, at_ms } => Ok(tick_args(&lease.job.script, schedule, *at_ms)),
        Trigger::Webhook { seq, .. } => {
            let stored = match deps.queue.request(*seq) {
                Ok(Some(r)) => r,
                Ok(None) => return Err(format!("webhook request {seq} is no longer retained")),
                Err(e) => return Err(format!("webhook request {seq} could not be read: {e}")),
            };
            let req: crate::source::SourceRequest = serde_json::from_value(stored.request)
                .map_err(|e| format!("webhook request {seq} is unreadable: {e}"))?;
            Ok(vec![req.to_dynamic()])
        }
        Trigger::Tool { arguments, .. } => Ok(vec![host::convert::to_dynamic(arguments)]),
        Trigger::Approval { request, .. } => Ok(vec![host::convert::to_dynamic(request)]),
    }
}

/// A handler's arguments for an event: `(e)`, or `(e, entered)` / `(e, value)` for
/// audience and computed-trait handlers.
///
/// # Errors
/// When the event is not of the kind the handler expects.
pub(crate) fn event_args(
    kind: &HandlerKind,
    body: &serde_json::Map<String, serde_json::Value>,
) -> Result<Vec<Dynamic>, String> {
    let e = Dynamic::from_map(host::convert::map_to_dynamic(body));
    match kind {
        HandlerKind::Audience(_) => {
            let (_, entered) = audience_of(body).ok_or("the event is not an audience change")?;
            Ok(vec![e, Dynamic::from_bool(entered)])
        }
        HandlerKind::Trait(_) => {
            let (_, value) = computed_trait_of(body).ok_or("the event is not a computed trait")?;
            Ok(vec![e, host::convert::to_dynamic(value)])
        }
        _ => Ok(vec![e]),
    }
}

/// A schedule handler's argument: `#{ at, at_ms, schedule, script }`.
pub(crate) fn tick_args(script: &str, schedule: &str, at_ms: i64) -> Vec<Dynamic> {
    let mut tick = rhai::Map::new();
    let at = chrono::DateTime::from_timestamp_millis(at_ms)
        .map(format_time)
        .unwrap_or_default();
    tick.insert("at".into(), at.into());
    tick.insert("at_ms".into(), Dynamic::from_int(at_ms));
    tick.insert("schedule".into(), schedule.into());
    tick.insert("script".into(), script.into());
    vec![Dynamic::from_map(tick)]
}

/// Calls `handler` of `script` with `ctx` installed and the run's deadline set;
/// returns the call's result and the context (logs, calls, signal, park).
pub(crate) fn invoke(
    set: &ScriptSet,
    engine: &EngineOptions,
    script: &Script,
    handler: &Handler,
    args: Vec<Dynamic>,
    ctx: RunCtx,
) -> (Result<Dynamic, Box<EvalAltResult>>, RunCtx) {
    host::begin_run(ctx);
    set_deadline(Some(
        Instant::now() + Duration::from_millis(engine.limits.timeout_ms),
    ));
    let result = with_thread_engine(set, engine, |e| {
        handler.func.call::<Dynamic>(e, &script.ast, args)
    });
    set_deadline(None);
    (result, host::end_run().unwrap_or_default())
}

/// The outcome of an invocation (a park wins even if the script caught it).
pub(crate) fn outcome_of(
    script: &Script,
    handler: &Handler,
    result: &Result<Dynamic, Box<EvalAltResult>>,
    ctx: &mut RunCtx,
) -> (Outcome, Option<RunError>) {
    if let Some(wait) = ctx.park.take() {
        return (Outcome::Park(wait), None);
    }
    match result {
        Ok(value) if matches!(handler.kind, HandlerKind::Tool(_)) => {
            match crate::tool::returned(handler, value) {
                Ok(_) => (Outcome::Ok, None),
                Err(why) => {
                    let e = RunError {
                        kind: "failed".into(),
                        message: why.clone(),
                        file: Some(script.path.display().to_string()),
                        line: Some(handler.line).filter(|l| *l > 0),
                        column: None,
                    };
                    (Outcome::Failed(why), Some(e))
                }
            }
        }
        Ok(_) => (Outcome::Ok, None),
        Err(e) => classify(&script.path.display().to_string(), handler.line, e),
    }
}

/// Classifies a failed call by the type of what ended it (a [`HostFault`], a
/// script's own `throw`, an engine limit); errors without a position (a time-out)
/// are placed at the handler's registration line.
fn classify(file: &str, handler_line: usize, err: &EvalAltResult) -> (Outcome, Option<RunError>) {
    let (pos, message) = describe_eval(err, file);
    let place = |kind: &str, message: String| RunError {
        kind: kind.into(),
        message,
        file: Some(file.to_owned()),
        line: pos.line().or(Some(handler_line).filter(|l| *l > 0)),
        column: pos.position(),
    };
    match HostFault::of(err) {
        Some(HostFault::Skip(why)) => return (Outcome::Skipped(why), None),
        Some(HostFault::Fail(why) | HostFault::Permanent(why)) => {
            let e = place("failed", why.clone());
            return (Outcome::Failed(why), Some(e));
        }
        Some(HostFault::Retryable(_)) | None => {}
    }
    let mut inner = err;
    while let EvalAltResult::ErrorInFunctionCall(_, _, e, _)
    | EvalAltResult::ErrorInModule(_, e, _) = inner
    {
        inner = e;
    }
    match inner {
        EvalAltResult::ErrorTerminated(..) => {
            let e = place(
                "timeout",
                "run time limit exceeded (limits.timeout_ms)".into(),
            );
            (Outcome::Retry(e.message.clone()), Some(e))
        }
        EvalAltResult::ErrorTooManyOperations(_) => {
            let e = place(
                "limit",
                "operation limit exceeded (limits.max_operations)".into(),
            );
            (Outcome::Failed(e.message.clone()), Some(e))
        }
        EvalAltResult::ErrorStackOverflow(_) => {
            let e = place(
                "limit",
                "call depth limit exceeded (limits.max_call_depth)".into(),
            );
            (Outcome::Failed(e.message.clone()), Some(e))
        }
        EvalAltResult::ErrorDataTooLarge(what, _) => {
            let e = place("limit", format!("{what} exceeds its size limit ([limits])"));
            (Outcome::Failed(e.message.clone()), Some(e))
        }
        EvalAltResult::ErrorTooManyVariables(_) | EvalAltResult::ErrorTooManyModules(_) => {
            let e = place("limit", message);
            (Outcome::Failed(e.message.clone()), Some(e))
        }
        _ => {
            let msg = hint(&message);
            let e = place("runtime", msg);
            (Outcome::Retry(e.message.clone()), Some(e))
        }
    }
}

/// Adds the fix for the most common slip (reading a field of an absent map).
fn hint(message: &str) -> String {
    if message.contains("'()'") || (message.contains("()") && message.contains("not found")) {
        format!("{message} (a field that is absent reads as (); use `e.properties?.total ?? 0`)")
    } else {
        message.to_owned()
    }
}
