//! Host faults, typed: a host function that fails throws a [`HostFault`] value
//! inside Rhai's runtime error, so a script can catch it like any error (`${err}`
//! reads as its message), and the worker tells `skip`, `fail`, a permanent host
//! fault, a retryable host fault and a script's own `throw` apart by the value's
//! type — never by comparing message text.

use rhai::{Dynamic, Engine, EvalAltResult, Position};

/// A failure raised by the host (or by `skip`/`fail`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HostFault {
    /// `skip(why)`: not applicable, never retried.
    Skip(String),
    /// `fail(why)`: permanent, straight to the dead letters.
    Fail(String),
    /// A host error retrying cannot fix (a bad request, a 4xx, a missing
    /// configuration): the run fails at once.
    Permanent(String),
    /// A host error that may pass (a time-out, a 5xx, the store): the run is retried.
    Retryable(String),
}

impl HostFault {
    /// What a script's `catch` and the run record show.
    pub(crate) fn message(&self) -> String {
        match self {
            Self::Skip(why) => format!("skipped: {why}"),
            Self::Fail(why) => format!("failed: {why}"),
            Self::Permanent(m) | Self::Retryable(m) => m.clone(),
        }
    }

    /// The error to return from a host function.
    pub(crate) fn throw(self) -> Box<EvalAltResult> {
        Box::new(EvalAltResult::ErrorRuntime(
            Dynamic::from(self),
            Position::NONE,
        ))
    }

    /// The fault that ended a call, looking through function-call and module
    /// wrappers; `None` for a script's own `throw` and for engine errors.
    pub(crate) fn of(err: &EvalAltResult) -> Option<Self> {
        let mut inner = err;
        while let EvalAltResult::ErrorInFunctionCall(_, _, e, _)
        | EvalAltResult::ErrorInModule(_, e, _) = inner
        {
            inner = e;
        }
        match inner {
            EvalAltResult::ErrorRuntime(v, _) => v.clone().try_cast::<Self>(),
            _ => None,
        }
    }
}

/// Makes faults readable in scripts: `${err}`, `err.message`, `err.kind`.
pub(super) fn register(engine: &mut Engine) {
    engine
        .register_type_with_name::<HostFault>("HostError")
        .register_fn("to_string", |f: &mut HostFault| f.message())
        .register_fn("to_debug", |f: &mut HostFault| f.message())
        .register_get("message", |f: &mut HostFault| f.message())
        .register_get("kind", |f: &mut HostFault| {
            match f {
                HostFault::Skip(_) => "skip",
                HostFault::Fail(_) => "fail",
                HostFault::Permanent(_) => "permanent",
                HostFault::Retryable(_) => "retryable",
            }
            .to_owned()
        });
}
