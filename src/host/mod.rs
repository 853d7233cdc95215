//! The Rhai-facing host API: `log`, `http`, `state`, `json`, `time`, `crypto`,
//! `env`, and the outcome calls `skip`/`fail`. The only module that sees both Rhai
//! and connectors.
//!
//! Functions are registered once per engine; what belongs to one run (its script's
//! state namespace, captured logs, outbound calls, outcome) lives in a thread-local
//! [`RunCtx`] that the worker installs around each handler call. Host faults reach
//! scripts as runtime errors with a plain message (catchable), and never carry
//! secrets.

mod approval;
pub(crate) mod convert;
mod ctx;
mod emit;
pub(crate) mod fault;
mod http;
pub(crate) mod journal;
pub(crate) mod log;
mod segment;
mod state;
mod util;

use std::collections::BTreeMap;
use std::sync::Arc;

use rhai::{Engine, EvalAltResult, NativeCallContext};

pub(crate) use ctx::{JournalRef, RunCtx, WaitMode, begin_run, end_run, in_run, with_run};
pub(crate) use fault::HostFault;

use crate::connectors::http::HttpClient;
use crate::state::StateStore;

/// What host functions need, shared by every engine.
pub struct Host {
    /// Runtime the blocking worker threads hand async calls to.
    pub rt: tokio::runtime::Handle,
    pub http: HttpClient,
    pub state: Arc<dyn StateStore>,
    pub segment: crate::connectors::segment::SegmentApi,
    pub outbox: Arc<crate::connectors::segment::Outbox>,
    pub approvals: crate::approval::ApprovalStore,
    pub approvals_cfg: crate::config::ApprovalsConfig,
    /// Slack on `approvals.slack_connection`, for approval messages.
    pub(crate) slack: crate::connectors::slack::Slack,
    /// Names `env::secret(name)` may read, with their values.
    pub env: BTreeMap<String, String>,
    /// The clock `time::now()`, waits and approvals read (the store's).
    pub clock: crate::clock::SharedClock,
    /// Where `emit` puts events: the daemon's queue (unset in local runs, which
    /// keep emitted events in the run context).
    pub events: std::sync::OnceLock<crate::queue::Queue>,
    /// `[approvals.email]`, when configured.
    pub(crate) mailer: Option<Arc<crate::approval::email::Mailer>>,
    /// Signs decision links (set by the daemon; unset in local runs, where no
    /// request leaves the process).
    pub(crate) links: std::sync::OnceLock<Arc<crate::approval::link::Links>>,
    /// The live scripts, for the `on_approval` handlers (set by the daemon).
    pub(crate) scripts: std::sync::OnceLock<Arc<crate::script::Live>>,
}

impl Host {
    /// The `on_approval` handlers of the live scripts: (script, handler key).
    pub(crate) fn approval_handlers(&self) -> Vec<(String, String)> {
        let Some(live) = self.scripts.get() else {
            return Vec::new();
        };
        live.get()
            .scripts
            .iter()
            .flat_map(|s| {
                s.handlers
                    .iter()
                    .filter(|h| h.kind == crate::script::HandlerKind::Approval)
                    .map(|h| (s.name.clone(), h.key.clone()))
            })
            .collect()
    }
}

/// Registers every host module on `engine`.
pub(crate) fn register_all(engine: &mut Engine, host: &Arc<Host>) {
    fault::register(engine);
    log::register(engine);
    http::register(engine, host);
    state::register(engine, host);
    segment::register(engine, host);
    approval::register(engine, host);
    util::register(engine, host);
    emit::register(engine, host);
}

/// Runs `call` (something that leaves the process: an HTTP request, a
/// notification) on the async runtime from the worker's thread, after what the run
/// wrote before it is durable (the output-commit rule).
pub(crate) fn outbound<T>(
    host: &Host,
    call: impl std::future::Future<Output = T>,
) -> Result<T, Box<EvalAltResult>> {
    journal::before_output()?;
    Ok(host.rt.block_on(call))
}

/// A retryable host fault with `message` (the store, a time-out, a bad argument a
/// new version of the script may fix).
pub(crate) fn error(message: impl Into<String>) -> Box<EvalAltResult> {
    HostFault::Retryable(message.into()).throw()
}

/// A host fault that retrying cannot fix: the run fails at once.
pub(crate) fn permanent(message: impl Into<String>) -> Box<EvalAltResult> {
    HostFault::Permanent(message.into()).throw()
}

/// A connector error as scripts see it (secrets redacted, prefixed with `what`).
/// Whether the run is retried is [`ConnectorError::is_retryable`]'s decision alone.
///
/// [`ConnectorError::is_retryable`]: crate::connectors::ConnectorError::is_retryable
pub(crate) fn connector_failure(
    host: &Host,
    e: &crate::connectors::ConnectorError,
    what: Option<&str>,
) -> Box<EvalAltResult> {
    let text = host.http.redactor().redact(&e.to_string()).into_owned();
    let msg = what.map_or_else(|| text.clone(), |w| format!("{w}: {text}"));
    if e.is_retryable() {
        error(msg)
    } else {
        permanent(msg)
    }
}

/// Places a host error at the script's call site: rhai leaves errors of
/// module-qualified calls (`http::get`) without a position.
pub(crate) fn placed<T>(
    ctx: &NativeCallContext,
    result: Result<T, Box<EvalAltResult>>,
) -> Result<T, Box<EvalAltResult>> {
    result.map_err(|mut e| {
        if e.position().is_none() {
            e.set_position(ctx.call_position());
        }
        e
    })
}
