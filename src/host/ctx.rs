//! The per-run context host functions read and write, held in a thread-local while
//! a handler runs on a worker thread.

use std::cell::RefCell;

use serde::{Deserialize, Serialize};

use crate::connectors::CallRecord;

/// Log levels of captured lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

/// A captured log line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogLine {
    pub level: LogLevel,
    pub message: String,
}

/// An outcome a script asked for explicitly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// `skip("why")`: not applicable, never retried.
    Skip(String),
    /// `fail("why")`: permanent failure, straight to dead letters.
    Fail(String),
}

/// What belongs to one run.
#[derive(Debug, Default)]
pub struct RunCtx {
    /// State namespace: the script's name.
    pub namespace: String,
    pub logs: Vec<LogLine>,
    pub dropped_logs: usize,
    pub max_logs: usize,
    pub calls: Vec<CallRecord>,
    pub signal: Option<Signal>,
    /// Print logs and calls as they happen (`spur run`, the REPL).
    pub echo: bool,
    /// Identifies the run across retries (the job id); derived ids build on it.
    pub run_key: String,
    /// Effects made so far in this execution (numbers derived ids).
    pub effects: u32,
}

impl RunCtx {
    pub fn new(namespace: impl Into<String>, run_key: impl Into<String>, max_logs: usize) -> Self {
        Self {
            namespace: namespace.into(),
            run_key: run_key.into(),
            max_logs,
            ..Self::default()
        }
    }
}

thread_local! {
    static RUN: RefCell<Option<RunCtx>> = const { RefCell::new(None) };
}

/// Installs `ctx` on this thread.
pub fn begin_run(ctx: RunCtx) {
    RUN.with(|r| *r.borrow_mut() = Some(ctx));
}

/// Removes and returns this thread's context.
pub fn end_run() -> Option<RunCtx> {
    RUN.with(|r| r.borrow_mut().take())
}

/// Whether a run is active on this thread.
pub fn in_run() -> bool {
    RUN.with(|r| r.borrow().is_some())
}

/// Applies `f` to this thread's context, if a run is active.
pub fn with_run<R>(f: impl FnOnce(&mut RunCtx) -> R) -> Option<R> {
    RUN.with(|r| r.borrow_mut().as_mut().map(f))
}
