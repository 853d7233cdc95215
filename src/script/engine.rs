//! The sandboxed engine shared by workers, loading, `spur run`, tests and the REPL.
//!
//! Sandbox: no file, process or environment access (the default file module
//! resolver is replaced by one that only knows compiled connector modules);
//! operation, call-depth, expression-depth and size limits from `[limits]`; and a
//! wall-clock deadline per run, checked every 1024 operations from a thread-local
//! (`on_progress` is engine-wide, the deadline is per run).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use rhai::module_resolvers::ModuleResolver;
use rhai::{Engine, EvalAltResult, Module, Position};

use super::{Modules, ScriptSet, registry};
use crate::config::LimitsConfig;
use crate::host::Host;
use crate::run::LogLevel;

/// What every engine is built from.
#[derive(Clone)]
pub struct EngineOptions {
    pub limits: LimitsConfig,
    pub host: Arc<Host>,
}

thread_local! {
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
    static ENGINE: RefCell<Option<(u64, usize, Rc<Engine>)>> = const { RefCell::new(None) };
}

/// Sets (or clears) the wall-clock deadline of the run on this thread.
pub(crate) fn set_deadline(deadline: Option<Instant>) {
    DEADLINE.with(|d| d.set(deadline));
}

/// Whether this thread's run is past its deadline.
pub(crate) fn deadline_exceeded() -> bool {
    DEADLINE.with(|d| d.get().is_some_and(|t| Instant::now() >= t))
}

/// The time left of this thread's run, if it has a deadline.
pub(crate) fn remaining() -> Option<std::time::Duration> {
    DEADLINE.with(|d| d.get().map(|t| t.saturating_duration_since(Instant::now())))
}

/// Builds a sandboxed engine with the host API and `modules` registered.
pub(crate) fn build_engine(opts: &EngineOptions, modules: &Modules) -> Engine {
    let mut engine = Engine::new();
    let l = &opts.limits;
    engine
        .set_max_operations(l.max_operations)
        .set_max_call_levels(l.max_call_depth)
        .set_max_string_size(l.max_string_bytes)
        .set_max_array_size(l.max_array_len)
        .set_max_map_size(l.max_map_len)
        .set_max_expr_depths(128, 64)
        .set_max_modules(256)
        .set_module_resolver(StaticResolver(Arc::clone(modules)));
    // `shared` is reserved by Rhai for future use; DESIGN.md's `state::shared::…`
    // needs it as a name. (`on_parse_token` is marked volatile upstream.)
    #[allow(deprecated)]
    engine.on_parse_token(|token, _, _| match token {
        rhai::Token::Reserved(s) if s.as_str() == "shared" => rhai::Token::Identifier(s),
        t => t,
    });
    engine.on_progress(|ops| {
        if ops & 0x3ff == 0 && deadline_exceeded() {
            Some("run time limit exceeded".into())
        } else {
            None
        }
    });
    engine.on_print(|s| crate::host::log::emit(LogLevel::Info, s));
    engine.on_debug(|s, _, _| crate::host::log::emit(LogLevel::Debug, s));
    registry::register(&mut engine);
    crate::host::register_all(&mut engine, &opts.host);
    for (name, module) in modules.iter() {
        engine.register_static_module(name.as_str(), Arc::clone(module));
    }
    engine
}

/// Runs `f` with this thread's engine for `set`, building it on first use, after
/// every reload and for another host (engines are per thread: sharing one across
/// threads does not scale).
pub(crate) fn with_thread_engine<R>(
    set: &ScriptSet,
    opts: &EngineOptions,
    f: impl FnOnce(&Engine) -> R,
) -> R {
    let host = Arc::as_ptr(&opts.host) as usize;
    let engine = ENGINE.with(|cell| {
        let mut cell = cell.borrow_mut();
        match &*cell {
            Some((version, h, e)) if *version == set.version && *h == host => Rc::clone(e),
            _ => {
                let e = Rc::new(build_engine(opts, &set.modules));
                *cell = Some((set.version, host, Rc::clone(&e)));
                e
            }
        }
    });
    f(&engine)
}

/// Resolves `import "name"` to compiled connector modules only: no file access.
struct StaticResolver(Modules);

impl ModuleResolver for StaticResolver {
    fn resolve(
        &self,
        _engine: &Engine,
        _source: Option<&str>,
        path: &str,
        pos: Position,
    ) -> Result<Arc<Module>, Box<EvalAltResult>> {
        self.0
            .iter()
            .find(|(name, _)| name == path)
            .map(|(_, m)| Arc::clone(m))
            .ok_or_else(|| Box::new(EvalAltResult::ErrorModuleNotFound(path.into(), pos)))
    }
}
