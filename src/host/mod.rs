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
pub mod convert;
mod ctx;
mod http;
pub mod journal;
pub mod log;
mod segment;
mod state;
mod util;

use std::collections::BTreeMap;
use std::sync::Arc;

use rhai::{Engine, EvalAltResult, NativeCallContext, Position};

pub use ctx::{
    JournalRef, LogLevel, LogLine, RunCtx, Signal, WaitMode, begin_run, end_run, in_run, with_run,
};

use crate::connectors::http::HttpClient;
use crate::state::StateStore;

/// What host functions need, shared by every engine.
pub struct Host {
    /// Runtime the blocking worker threads hand async calls to.
    pub rt: tokio::runtime::Handle,
    pub http: HttpClient,
    pub state: StateStore,
    pub segment: crate::connectors::segment::SegmentApi,
    pub outbox: Arc<crate::connectors::segment::Outbox>,
    pub approvals: crate::approval::ApprovalStore,
    pub approvals_cfg: crate::config::ApprovalsConfig,
    /// Names `env::secret(name)` may read, with their values.
    pub env: BTreeMap<String, String>,
}

/// Registers every host module on `engine`.
pub fn register_all(engine: &mut Engine, host: &Arc<Host>) {
    log::register(engine);
    http::register(engine, host);
    state::register(engine, host);
    segment::register(engine, host);
    approval::register(engine, host);
    util::register(engine, host);
}

/// A host fault as scripts see it: a runtime error with `message`.
pub fn error(message: impl Into<String>) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorRuntime(
        message.into().into(),
        Position::NONE,
    ))
}

/// A connector error as scripts see it (secrets redacted, prefixed with `what`).
/// What retrying cannot fix — a request the client refuses (bad URL, unknown
/// connection, missing configuration) or a service's 4xx other than 408/429 —
/// fails the run at once instead of being retried for half an hour.
pub(crate) fn connector_failure(
    host: &Host,
    e: &crate::connectors::ConnectorError,
    what: Option<&str>,
) -> Box<EvalAltResult> {
    use crate::connectors::ConnectorError as E;
    let mut text = host.http.redactor().redact(&e.to_string()).into_owned();
    let permanent = match e {
        E::UnknownConnection { .. } | E::Invalid(_) | E::TooLarge { .. } => true,
        E::Service(s) => (400..500).contains(&s.status) && s.status != 408 && s.status != 429,
        E::Transport {
            unknown: true,
            fail_on_unknown: true,
            ..
        } => {
            text.push_str(
                " — the request may have reached the service (outcome unknown), and the \
                 connection has on_unknown = \"fail\", so it is not sent again on its own: \
                 check the service, then replay the dead letter to send it again",
            );
            true
        }
        E::Transport { .. } | E::Rejected(_) => false,
    };
    let msg = what.map_or_else(|| text.clone(), |w| format!("{w}: {text}"));
    if permanent {
        outcome(Signal::Fail(msg.clone()), msg)
    } else {
        error(msg)
    }
}

/// An error that ends the run with `signal` (skipped or failed) if the script does
/// not catch it.
pub(crate) fn outcome(signal: Signal, text: String) -> Box<EvalAltResult> {
    with_run(|ctx| ctx.signal = Some((signal, text.clone())));
    error(text)
}

/// Places a host error at the script's call site: rhai leaves errors of
/// module-qualified calls (`http::get`) without a position.
pub fn placed<T>(
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
