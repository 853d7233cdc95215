//! `spur test`: `*_test.rhai` files test the scripts in their directory, with
//! connectors recorded (never sent), a virtual clock, and assertions.
//!
//! ```rhai
//! test("big orders reach #sales", || {
//!     mock::http("POST", "/chat.postMessage", #{ ok: true, ts: "1.0" });
//!     let runs = fire(#{ type: "track", event: "Order Completed", userId: "ada", properties: #{ total: 900 } });
//!     assert_eq(runs[0].status, "ok");
//!     expect::called("POST", "/chat.postMessage");
//!     assert(expect::calls("POST", "/chat.postMessage")[0].body.text.contains("ada"));
//! });
//! ```
//!
//! Each test starts from nothing: an empty in-memory store, no recorded calls, no
//! stubs, the clock at Monday 2026-01-05 08:00 UTC. `fire(event)` runs the handlers
//! the event matches (and wakes runs waiting for it); `clock::advance(duration)`
//! fires the schedules due on the way and wakes sleeping runs, journaled as the
//! daemon would (a woken run does not repeat its earlier effects).
//! `webhook(name, #{ body, headers })` runs a source handler on a request and fires
//! the events it emits.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use rhai::{AST, Array, Dynamic, Engine, EvalAltResult, FnPtr, Map, Module, NativeCallContext};
use serde_json::{Value, json};

use super::{Local, LocalRun, RunOpts};
use crate::clock::{Clock as _, ManualClock};
use crate::config::Config;
use crate::connectors::recorder::{RecordedCall, Stub, glob_match};
use crate::event::{BatchDefaults, Origin, normalize};
use crate::host::convert::{to_dynamic, to_json};
use crate::host::{WaitMode, placed};
use crate::queue::{WaitKind, wait_matches};
use crate::schedule::cron::Schedule;
use crate::script::{HandlerKind, ScriptError, ScriptSet, build_engine, describe_eval};
use crate::worker::tick_args;

type Res<T> = Result<T, Box<EvalAltResult>>;

/// Where every test's clock starts (a Monday morning).
pub(crate) const CLOCK_START: &str = "2026-01-05T08:00:00Z";

/// Totals of a `spur test` run.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub passed: usize,
    pub failed: usize,
}

/// An in-memory run journal.
type Journal = Arc<Mutex<HashMap<String, Value>>>;

/// A run parked on the virtual clock or an event.
struct Parked {
    script: String,
    handler: String,
    args: Vec<Dynamic>,
    journal: Arc<Mutex<HashMap<String, Value>>>,
    run_key: String,
    wait: crate::queue::Wait,
}

/// The state of the test being run (thread-local while it runs).
struct TestCtx {
    local: Local,
    /// The virtual clock every host call of the test reads.
    clock: Arc<ManualClock>,
    parked: Vec<Parked>,
    calls: Vec<RecordedCall>,
    auto_decision: Option<Value>,
    next_run: u64,
}

thread_local! {
    static CURRENT: RefCell<Option<TestCtx>> = const { RefCell::new(None) };
    static COLLECTED: RefCell<Vec<(String, FnPtr)>> = const { RefCell::new(Vec::new()) };
}

fn with_test<R>(f: impl FnOnce(&mut TestCtx) -> R) -> Res<R> {
    CURRENT
        .with(|c| c.borrow_mut().as_mut().map(f))
        .ok_or_else(|| "only available inside test(…)".into())
}

/// Runs every `*_test.rhai` under `dir`, printing as cargo test does.
///
/// # Errors
/// When `dir` cannot be read.
pub(crate) fn run_dir(config: &Config, dir: &Path, out: &mut impl Write) -> anyhow::Result<Report> {
    let mut files = Vec::new();
    collect(dir, &mut files)?;
    files.sort();
    let mut report = Report::default();
    let mut failures: Vec<(String, String)> = Vec::new();
    for file in &files {
        run_file(config, file, out, &mut report, &mut failures)?;
    }
    if files.is_empty() {
        writeln!(out, "no *_test.rhai files under {}", dir.display())?;
    }
    if !failures.is_empty() {
        writeln!(out, "\nfailures:")?;
        for (name, msg) in &failures {
            writeln!(out, "\n---- {name} ----\n{msg}")?;
        }
    }
    let verdict = if report.failed == 0 { "ok" } else { "FAILED" };
    writeln!(
        out,
        "\ntest result: {verdict}. {} passed; {} failed",
        report.passed, report.failed
    )?;
    Ok(report)
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in
        std::fs::read_dir(dir).map_err(|e| anyhow::anyhow!("reading {}: {e}", dir.display()))?
    {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, files)?;
        } else if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with("_test.rhai"))
        {
            files.push(path);
        }
    }
    Ok(())
}

fn run_file(
    config: &Config,
    file: &Path,
    out: &mut impl Write,
    report: &mut Report,
    failures: &mut Vec<(String, String)>,
) -> anyhow::Result<()> {
    let label = file.display().to_string();
    let dir = file.parent().unwrap_or(Path::new("."));
    let mut first = Local::new(config, false, false)?;
    let load_errors = first.load_dir(dir);
    let set = Arc::clone(&first.set);
    let engine = test_engine(&first, &set);
    let compiled = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read: {e}"))
        .and_then(|text| {
            let mut ast = engine
                .compile(&text)
                .map_err(|e| ScriptError::from_parse(&label, &e).to_string())?;
            ast.set_source(label.as_str());
            COLLECTED.with(|c| c.borrow_mut().clear());
            engine
                .run_ast(&ast)
                .map_err(|e| ScriptError::from_eval(&label, &e).to_string())?;
            Ok(ast)
        });
    let tests: Vec<(String, FnPtr)> = COLLECTED.with(|c| std::mem::take(&mut *c.borrow_mut()));
    writeln!(out, "\nrunning {} tests from {label}", tests.len())?;
    let ast = match (compiled, load_errors.is_empty()) {
        (Ok(ast), true) => ast,
        (compiled, _) => {
            let mut msg: Vec<String> = load_errors.iter().map(ToString::to_string).collect();
            if let Err(e) = compiled {
                msg.push(e);
            }
            writeln!(out, "test {label} ... FAILED (does not load)")?;
            report.failed += 1;
            failures.push((label, msg.join("\n")));
            return Ok(());
        }
    };
    drop(first);
    for (name, f) in tests {
        let start = crate::event::parse_time(CLOCK_START).unwrap_or_default();
        let clock = ManualClock::at(start);
        let mut local = Local::with_clock(config, false, false, clock.clone())?;
        local.set = Arc::clone(&set);
        let result = run_test(local, clock, &engine, &ast, &f);
        match result {
            Ok(()) => {
                writeln!(out, "test {name} ... ok")?;
                report.passed += 1;
            }
            Err(e) => {
                writeln!(out, "test {name} ... FAILED")?;
                report.failed += 1;
                let (pos, message) = describe_eval(&e, &label);
                let place = pos
                    .line()
                    .map(|l| format!(" ({label}:{l}:{})", pos.position().unwrap_or(0)))
                    .unwrap_or_default();
                failures.push((format!("{label}: {name}"), format!("{message}{place}")));
            }
        }
    }
    Ok(())
}

fn run_test(
    local: Local,
    clock: Arc<ManualClock>,
    engine: &Engine,
    ast: &AST,
    f: &FnPtr,
) -> Res<()> {
    CURRENT.with(|c| {
        *c.borrow_mut() = Some(TestCtx {
            local,
            clock,
            parked: Vec::new(),
            calls: Vec::new(),
            auto_decision: None,
            next_run: 1,
        });
    });
    let result = f.call::<Dynamic>(engine, ast, ()).map(|_| ());
    CURRENT.with(|c| c.borrow_mut().take());
    result
}

/// The engine test files run on: the host API, plus the test API.
fn test_engine(local: &Local, set: &ScriptSet) -> Engine {
    let mut engine = build_engine(&local.engine, &set.modules);
    register(&mut engine);
    engine
}

fn opts_for(
    t: &mut TestCtx,
    journal: Arc<Mutex<HashMap<String, Value>>>,
    run_key: String,
) -> RunOpts {
    RunOpts {
        wait_mode: WaitMode::Virtual,
        journal: Some(journal),
        auto_decision: t.auto_decision.clone(),
        run_key: Some(run_key),
        source: None,
    }
}

/// Runs one handler (fresh, or resuming a parked run with its journal).
fn run_one(
    t: &mut TestCtx,
    script: &str,
    handler: &str,
    args: Vec<Dynamic>,
    resume: Option<(Journal, String)>,
) -> Option<LocalRun> {
    let s = t.local.set.script(script).cloned()?;
    let h = s.handler(handler).cloned()?;
    let (journal, run_key) = resume.unwrap_or_else(|| {
        t.next_run += 1;
        (Arc::default(), format!("test-{}", t.next_run))
    });
    let opts = opts_for(t, Arc::clone(&journal), run_key.clone());
    let run = t.local.run_handler(&s, &h, args.clone(), opts);
    t.calls.extend(run.recorded.iter().cloned());
    if let Some(wait) = run.wait.clone() {
        t.parked.push(Parked {
            script: script.to_owned(),
            handler: handler.to_owned(),
            args,
            journal,
            run_key,
            wait,
        });
    }
    Some(run)
}

/// Wakes a parked run with `result` under its wait's key.
fn wake(t: &mut TestCtx, p: Parked, result: Value) -> Option<LocalRun> {
    p.journal.lock().insert(p.wait.key.clone(), result);
    run_one(
        t,
        &p.script,
        &p.handler,
        p.args,
        Some((p.journal, p.run_key)),
    )
}

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
        t.next_run += 1;
        let run_key = format!("test-{}", t.next_run);
        let opts = opts_for(t, Arc::default(), run_key);
        let run = t
            .local
            .webhook(name, &request, opts)
            .ok_or_else(|| format!("webhook: no script registers source {name:?}"))?;
        t.calls.extend(run.recorded.iter().cloned());
        let mut fired = Vec::new();
        for body in &run.emitted {
            if let Some(event) = super::to_event(body.clone()) {
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
fn register(engine: &mut Engine) {
    engine.register_fn("test", |name: &str, f: FnPtr| -> Res<()> {
        COLLECTED.with(|c| c.borrow_mut().push((name.to_owned(), f)));
        Ok(())
    });
    engine.register_fn("fire", |ctx: NativeCallContext, event: Map| {
        placed(&ctx, fire(&event))
    });
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
