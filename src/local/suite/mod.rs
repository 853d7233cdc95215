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
use rhai::{AST, Dynamic, Engine, EvalAltResult, FnPtr};
use serde_json::Value;

use super::{Local, LocalRun, RunOpts};
use crate::clock::ManualClock;
use crate::config::Config;
use crate::connectors::recorder::RecordedCall;
use crate::host::WaitMode;
use crate::script::{ScriptError, ScriptSet, build_engine, describe_eval};

mod api;

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

impl TestCtx {
    /// The key of a fresh run (its journal and idempotency keys derive from it).
    fn next_run_key(&mut self) -> String {
        self.next_run += 1;
        format!("test-{}", self.next_run)
    }

    /// Options of a fresh run with an empty journal.
    fn fresh_run(&mut self) -> RunOpts {
        let key = self.next_run_key();
        opts_for(self, Arc::default(), key)
    }
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
    api::register(&mut engine);
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
    let (journal, run_key) = resume.unwrap_or_else(|| (Arc::default(), t.next_run_key()));
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
