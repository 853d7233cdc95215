//! The per-run context host functions read and write, held in a thread-local while
//! a handler runs on a worker thread.

use std::cell::RefCell;
use std::collections::HashMap;

use serde_json::Value;

use crate::connectors::CallRecord;
use crate::queue::Wait;
use crate::run::LogLine;

/// How waits (approvals, sleeps, `wait_for`) behave in this run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum WaitMode {
    /// A daemon run: waits park the run durably.
    #[default]
    Durable,
    /// `spur run` / the REPL: sleeps return at once, `wait_for` times out, and
    /// approvals are answered "approved" — each printed.
    Immediate,
    /// `spur test`: approvals are answered at once (as mocked); sleeps and
    /// `wait_for` park the run on the test's virtual clock.
    Virtual,
}

/// The journal of one durable run: its transaction on the store (daemon), or in
/// memory (`spur test`, which replays parked runs on its virtual clock).
pub(crate) enum JournalRef {
    Durable(Box<crate::run::tx::RunTx>),
    Memory(std::sync::Arc<parking_lot::Mutex<HashMap<String, Value>>>),
}

/// What belongs to one run.
#[derive(Default)]
pub(crate) struct RunCtx {
    /// State namespace: the script's name.
    pub namespace: String,
    /// The script and handler (for approval records).
    pub script: String,
    pub handler: String,
    pub logs: Vec<LogLine>,
    pub dropped_logs: usize,
    pub max_logs: usize,
    pub calls: Vec<CallRecord>,
    /// Print logs and calls as they happen (`spur run`, the REPL).
    pub echo: bool,
    /// Identifies the run across retries and wake-ups (the job id); derived ids
    /// (idempotency keys, write-back messageIds) build on it.
    pub run_key: String,
    /// The run record id of this execution.
    pub run_id: u64,
    /// Where effects are journaled; `None` runs them directly (dry runs).
    pub journal: Option<JournalRef>,
    pub wait_mode: WaitMode,
    /// Occurrences of each effect (op + argument digest) in this execution.
    pub occurrences: HashMap<String, u32>,
    /// Set when the run must park; the handler is unwound.
    pub park: Option<Wait>,
    /// Approval decisions this execution received (shown in the run record).
    pub decisions: Vec<Value>,
    /// The decision `approval::ask` gets at once in `WaitMode::Immediate`.
    pub auto_decision: Option<Value>,
    /// A script version to record with the first journal entry (a run pins its
    /// version only once it has effects to protect).
    pub pin: Option<String>,
    /// Whether this execution wrote to the journal.
    pub journaled: bool,
    /// The webhook source of a source handler's run (`emit` is allowed).
    pub source: Option<String>,
    /// Events this execution emitted (`emit`), normalised.
    pub emitted: Vec<serde_json::Map<String, serde_json::Value>>,
    /// The run's trace, when traces are exported: outbound calls carry it.
    pub trace: Option<crate::telemetry::TraceIds>,
    /// No effects at all (a source's `respond`, which answers before anything is
    /// stored): every journaled call and every outbound call is refused.
    pub pure: bool,
}

impl std::fmt::Debug for RunCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunCtx")
            .field("namespace", &self.namespace)
            .field("run_key", &self.run_key)
            .field("logs", &self.logs.len())
            .field("calls", &self.calls.len())
            .finish_non_exhaustive()
    }
}

impl RunCtx {
    pub(crate) fn new(
        namespace: impl Into<String>,
        run_key: impl Into<String>,
        max_logs: usize,
    ) -> Self {
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
pub(crate) fn begin_run(ctx: RunCtx) {
    RUN.with(|r| *r.borrow_mut() = Some(ctx));
}

/// Removes and returns this thread's context.
pub(crate) fn end_run() -> Option<RunCtx> {
    RUN.with(|r| r.borrow_mut().take())
}

/// Whether a run is active on this thread.
pub(crate) fn in_run() -> bool {
    RUN.with(|r| r.borrow().is_some())
}

/// Applies `f` to this thread's context, if a run is active.
pub(crate) fn with_run<R>(f: impl FnOnce(&mut RunCtx) -> R) -> Option<R> {
    RUN.with(|r| r.borrow_mut().as_mut().map(f))
}
