//! Running scripts outside the daemon — `spur run`, `spur test`, `spur replay` and
//! the REPL — on an in-memory store.
//!
//! Dry-run by default: a recorder answers every outbound call (named connections,
//! plain URLs, Segment write-back and reads) and the calls are printed with their
//! bodies. Waits do not block: approvals are answered at once, and outside
//! `spur test` sleeps return and `wait_for` times out at once. `--live` sends for
//! real through the configured connections.

pub(crate) mod suite;

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use rhai::Dynamic;
use serde_json::{Map, Value};

use crate::config::Config;
use crate::connectors::CallRecord;
use crate::connectors::recorder::{RecordedCall, Recorder};
use crate::event::{BatchDefaults, Origin, normalize};
use crate::host::{JournalRef, RunCtx, WaitMode};
use crate::queue::Wait;
use crate::run::LogLine;
use crate::run::{RunError, RunStatus};
use crate::script::{
    EngineOptions, Handler, Script, ScriptError, ScriptSet, load_dir, load_sources, read_dir,
};
use crate::worker::{Outcome, event_args, invoke, outcome_of};

/// A sample event of each type, for `spur run SCRIPT --event track` (as Segment
/// delivers them; `samples/`).
pub const SAMPLES: &[(&str, &str)] = &[
    ("track", include_str!("samples/track.json")),
    ("identify", include_str!("samples/identify.json")),
    ("page", include_str!("samples/page.json")),
    ("screen", include_str!("samples/screen.json")),
    ("group", include_str!("samples/group.json")),
    ("alias", include_str!("samples/alias.json")),
    ("delete", include_str!("samples/delete.json")),
];

/// One handler's execution.
#[derive(Debug, Clone)]
pub(crate) struct LocalRun {
    pub script: String,
    pub handler: String,
    pub status: RunStatus,
    pub reason: Option<String>,
    pub error: Option<RunError>,
    pub logs: Vec<LogLine>,
    pub calls: Vec<CallRecord>,
    /// What the recorder answered (dry runs), with request bodies.
    pub recorded: Vec<RecordedCall>,
    pub ms: f64,
    /// Set when the run parked (`spur test`).
    pub wait: Option<Wait>,
    /// Events a source handler emitted, normalised.
    pub emitted: Vec<Map<String, Value>>,
    /// A tool's return value (status ok).
    pub result: Option<Value>,
}

impl LocalRun {
    /// The run as scripts in `spur test` see it.
    pub(crate) fn to_dynamic(&self) -> Dynamic {
        let v = serde_json::json!({
            "script": self.script,
            "handler": self.handler,
            "status": self.status.as_str(),
            "reason": self.reason,
            "error": self.error.as_ref().map(|e| e.message.clone()),
            "logs": self.logs.iter().map(|l| l.message.clone()).collect::<Vec<_>>(),
            "result": self.result,
        });
        crate::host::convert::to_dynamic(&v)
    }

    /// Whether the outcome is a success (ok, skipped, or parked).
    pub(crate) fn succeeded(&self) -> bool {
        matches!(
            self.status,
            RunStatus::Ok | RunStatus::Skipped | RunStatus::Waiting
        )
    }

    /// A human-readable report (used by `spur run`, `spur replay` and the REPL).
    pub(crate) fn report(&self) -> String {
        let mut out = String::new();
        let (mark, what) = match self.status {
            RunStatus::Ok => ("✔", "ok".to_owned()),
            RunStatus::Skipped => (
                "⊘",
                format!("skipped: {}", self.reason.as_deref().unwrap_or("")),
            ),
            RunStatus::Waiting => ("⏸", "waiting".to_owned()),
            RunStatus::Failed | RunStatus::Dead => ("✘", "failed".to_owned()),
            RunStatus::Retrying => ("↻", "error (the daemon would retry)".to_owned()),
        };
        let _ = writeln!(
            out,
            "{mark} {} · {} · {what} ({:.1} ms)",
            self.script, self.handler, self.ms
        );
        if let Some(r) = &self.result {
            let _ = writeln!(
                out,
                "  result: {}",
                serde_json::to_string(r).unwrap_or_default()
            );
        }
        if let Some(e) = &self.error {
            let place = match (&e.file, e.line) {
                (Some(f), Some(l)) => format!(" ({f}:{l}:{})", e.column.unwrap_or(0)),
                _ => String::new(),
            };
            let _ = writeln!(out, "  error: {}{place}", e.message);
        }
        for e in &self.emitted {
            let _ = writeln!(out, "  ⇢ emit {}", describe(e));
            let _ = writeln!(out, "    {}", serde_json::to_string(e).unwrap_or_default());
        }
        for c in &self.recorded {
            let _ = writeln!(out, "  → {} {} (dry run)", c.method, c.url);
            if let Some(b) = &c.body {
                let _ = writeln!(out, "    {}", serde_json::to_string(b).unwrap_or_default());
            }
        }
        out
    }
}

/// How to run one handler.
#[derive(Default, Clone)]
pub(crate) struct RunOpts {
    pub wait_mode: WaitMode,
    /// An in-memory journal (`spur test`); `None` runs effects directly.
    pub journal: Option<Arc<parking_lot::Mutex<std::collections::HashMap<String, Value>>>>,
    pub auto_decision: Option<Value>,
    pub run_key: Option<String>,
    /// The webhook source, for a source handler's run (`emit` is allowed).
    pub source: Option<String>,
}

/// Scripts loaded for local runs, with their host.
pub(crate) struct Local {
    pub config: Config,
    pub recorder: Option<Arc<Recorder>>,
    pub engine: EngineOptions,
    pub set: Arc<ScriptSet>,
    /// Print logs as they happen.
    pub echo: bool,
    _storage: crate::app::Storage,
    rt: tokio::runtime::Runtime,
}

impl Local {
    /// A fresh local environment (in-memory store; dry-run unless `live`).
    ///
    /// # Errors
    /// When the runtime, store or host cannot be built.
    pub(crate) fn new(config: &Config, live: bool, echo: bool) -> anyhow::Result<Self> {
        Self::with_clock(config, live, echo, Arc::new(crate::clock::SystemClock))
    }

    /// [`Local::new`] on `clock` (`spur test`'s virtual one).
    ///
    /// # Errors
    /// When the runtime, store or host cannot be built.
    pub(crate) fn with_clock(
        config: &Config,
        live: bool,
        echo: bool,
        clock: crate::clock::SharedClock,
    ) -> anyhow::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let storage = crate::app::Storage::temporary(clock)?;
        let recorder = (!live).then(|| Arc::new(Recorder::new()));
        let host = crate::app::build_host(config, &storage, recorder.clone(), rt.handle().clone())?;
        Ok(Self {
            config: config.clone(),
            recorder,
            engine: EngineOptions {
                limits: config.limits.clone(),
                host,
            },
            set: Arc::new(ScriptSet::empty()),
            echo,
            _storage: storage,
            rt,
        })
    }

    /// Loads every script of `dir` (with its `lib/` modules and stdlib overrides).
    pub(crate) fn load_dir(&mut self, dir: &Path) -> Vec<ScriptError> {
        let set = load_dir(dir, &self.engine);
        let errors = set.errors.clone();
        self.set = Arc::new(set);
        errors
    }

    /// Loads one script file; modules come from its directory.
    pub(crate) fn load_file(&mut self, file: &Path) -> Vec<ScriptError> {
        let dir = file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let (scripts, modules, mut errors) = read_dir(dir);
        let wanted = std::fs::canonicalize(file).ok();
        let mut picked: Vec<_> = scripts
            .into_iter()
            .filter(|s| std::fs::canonicalize(&s.path).ok() == wanted)
            .collect();
        if picked.is_empty() {
            match std::fs::read_to_string(file) {
                Ok(text) => picked.push(crate::script::SourceFile {
                    name: file
                        .file_stem()
                        .and_then(|s| s.to_str())
                        .unwrap_or("script")
                        .to_owned(),
                    path: file.to_path_buf(),
                    text,
                }),
                Err(e) => errors.push(ScriptError {
                    file: file.display().to_string(),
                    line: 0,
                    column: 0,
                    message: format!("cannot read: {e}"),
                }),
            }
        }
        let mut set = load_sources(picked, modules, &self.engine);
        errors.append(&mut set.errors);
        set.errors.clone_from(&errors);
        self.set = Arc::new(set);
        errors
    }

    /// Runs every handler `body` (an already-normalised event) fires.
    pub(crate) fn fire(&self, body: &Map<String, Value>, opts: &RunOpts) -> Vec<LocalRun> {
        let Some(event) = to_event(body.clone()) else {
            return Vec::new();
        };
        let mut runs = Vec::new();
        for t in self.set.targets(&event) {
            let Some(script) = self.set.script(&t.script).cloned() else {
                continue;
            };
            let Some(handler) = script.handler(&t.handler).cloned() else {
                continue;
            };
            match event_args(&handler.kind, body) {
                Ok(args) => runs.push(self.run_handler(&script, &handler, args, opts.clone())),
                Err(why) => runs.push(LocalRun {
                    script: script.name.clone(),
                    handler: handler.key.clone(),
                    status: RunStatus::Failed,
                    reason: Some(why),
                    error: None,
                    logs: Vec::new(),
                    calls: Vec::new(),
                    recorded: Vec::new(),
                    ms: 0.0,
                    wait: None,
                    emitted: Vec::new(),
                    result: None,
                }),
            }
        }
        runs
    }

    /// Runs the handler of webhook source `name` on `request` (not verified: local
    /// runs hold no secrets). `None` when no loaded script registers the source.
    pub(crate) fn webhook(
        &self,
        name: &str,
        request: &crate::source::SourceRequest,
        mut opts: RunOpts,
    ) -> Option<LocalRun> {
        let (script, handler) = self.set.source(name)?;
        let (script, handler) = (Arc::clone(script), handler.clone());
        opts.source = Some(name.to_owned());
        Some(self.run_handler(&script, &handler, vec![request.to_dynamic()], opts))
    }

    /// Runs tool `name` with `arguments`, checked against its input schema first.
    ///
    /// # Errors
    /// No such tool, or arguments that do not match (the message names the field).
    pub(crate) fn call_tool(
        &self,
        name: &str,
        arguments: &Value,
        opts: RunOpts,
    ) -> Result<LocalRun, String> {
        let (script, handler) = self
            .set
            .tool(name)
            .ok_or_else(|| format!("no loaded script registers the tool {name:?}"))?;
        let spec =
            crate::tool::ToolSpec::parse(name, handler.options.as_ref().unwrap_or(&Value::Null))?;
        crate::tool::schema::validate(&spec.input, arguments, "arguments")
            .map_err(|e| format!("invalid arguments: {e}"))?;
        let (script, handler) = (Arc::clone(script), handler.clone());
        let args = vec![crate::host::convert::to_dynamic(arguments)];
        Ok(self.run_handler(&script, &handler, args, opts))
    }

    /// Runs one handler with `args`.
    pub(crate) fn run_handler(
        &self,
        script: &Arc<Script>,
        handler: &Handler,
        args: Vec<Dynamic>,
        opts: RunOpts,
    ) -> LocalRun {
        let started = Instant::now();
        let run_key = opts
            .run_key
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        let mut ctx = RunCtx::new(&script.name, run_key, self.config.limits.max_log_lines);
        ctx.script.clone_from(&script.name);
        ctx.handler.clone_from(&handler.key);
        ctx.echo = self.echo;
        ctx.wait_mode = if opts.wait_mode == WaitMode::Durable {
            WaitMode::Immediate
        } else {
            opts.wait_mode
        };
        ctx.journal = opts.journal.map(JournalRef::Memory);
        ctx.auto_decision = opts.auto_decision;
        ctx.source = opts.source;
        if let Some(r) = &self.recorder {
            r.take_calls();
        }
        let (result, mut ctx) = invoke(&self.set, &self.engine, script, handler, args, ctx);
        let (outcome, error) = outcome_of(script, handler, &result, &mut ctx);
        let returned = match (&handler.kind, &outcome, &result) {
            (crate::script::HandlerKind::Tool(_), Outcome::Ok, Ok(v)) => {
                crate::tool::returned(handler, v).ok()
            }
            _ => None,
        };
        let (status, reason, wait) = match outcome {
            Outcome::Ok => (RunStatus::Ok, None, None),
            Outcome::Skipped(r) => (RunStatus::Skipped, Some(r), None),
            Outcome::Failed(r) => (RunStatus::Failed, Some(r), None),
            Outcome::Retry(r) => (RunStatus::Retrying, Some(r), None),
            Outcome::Park(w) => (RunStatus::Waiting, None, Some(w)),
        };
        LocalRun {
            script: script.name.clone(),
            handler: handler.key.clone(),
            status,
            reason,
            error,
            logs: ctx.logs,
            calls: ctx.calls,
            recorded: self
                .recorder
                .as_ref()
                .map(|r| r.take_calls())
                .unwrap_or_default(),
            ms: started.elapsed().as_secs_f64() * 1000.0,
            wait,
            emitted: ctx.emitted,
            result: returned,
        }
    }
}

impl Drop for Local {
    /// A `--live` local run delivers its Segment write-back before exiting (the
    /// daemon's background sender does not run here).
    fn drop(&mut self) {
        let host = &self.engine.host;
        if self.recorder.is_some() || host.outbox.is_empty() {
            return;
        }
        let sent = self.rt.block_on(async {
            tokio::time::timeout(
                std::time::Duration::from_secs(10),
                host.outbox.drain(&host.http),
            )
            .await
        });
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("Segment write-back not delivered: {e}"),
            Err(_) => eprintln!("Segment write-back not delivered within 10 s"),
        }
    }
}

/// An event map as the dispatcher's `Event` (for handler matching).
pub(crate) fn to_event(body: Map<String, Value>) -> Option<crate::event::Event> {
    let kind = crate::event::EventType::parse(body.get("type")?.as_str()?)?;
    let message_id = body
        .get("messageId")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    Some(crate::event::Event {
        kind,
        message_id,
        body,
    })
}

/// Events from JSON text: one event, an array, or a `{"batch": [...]}` body —
/// validated and normalised as the daemon would (delivered events keep Segment's
/// times).
///
/// # Errors
/// A message naming the event and field at fault.
pub(crate) fn events_from_json(text: &str) -> anyhow::Result<Vec<Map<String, Value>>> {
    let v: Value = serde_json::from_str(text).context("not valid JSON")?;
    let (items, defaults_src) = match v {
        Value::Array(items) => (items, Map::new()),
        Value::Object(mut o) => match o.remove("batch") {
            Some(Value::Array(items)) => (items, o),
            Some(_) => anyhow::bail!("`batch` must be an array"),
            None => (vec![Value::Object(o)], Map::new()),
        },
        _ => anyhow::bail!("expected an event object, an array of events, or {{\"batch\": [...]}}"),
    };
    let ctx = defaults_src.get("context").and_then(Value::as_object);
    let integrations = defaults_src.get("integrations").and_then(Value::as_object);
    let defaults = BatchDefaults {
        context: ctx,
        integrations,
        sent_at: defaults_src.get("sentAt"),
    };
    let now = chrono::Utc::now();
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let Value::Object(mut body) = item else {
                anyhow::bail!("event {i}: must be a JSON object");
            };
            body.remove("writeKey");
            let origin = if body.contains_key("receivedAt") {
                Origin::Delivered
            } else {
                Origin::Tracking
            };
            normalize(body, None, &defaults, origin, now)
                .map(|e| e.body)
                .map_err(|e| anyhow::anyhow!("event {i}: {e} (field `{}`)", e.field()))
        })
        .collect()
}

/// The events a `--event` argument names: a file, or a sample of a type.
///
/// # Errors
/// When the file cannot be read or holds invalid events.
pub(crate) fn events_from_arg(arg: &str) -> anyhow::Result<Vec<Map<String, Value>>> {
    if let Some((_, text)) = SAMPLES.iter().find(|(t, _)| *t == arg) {
        return events_from_json(text);
    }
    let text = std::fs::read_to_string(arg).with_context(|| {
        format!(
            "reading {arg} (or name a sample: {})",
            SAMPLES
                .iter()
                .map(|(t, _)| *t)
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    events_from_json(&text).with_context(|| format!("in {arg}"))
}

/// A one-line description of an event.
pub(crate) fn describe(body: &Map<String, Value>) -> String {
    let t = body.get("type").and_then(Value::as_str).unwrap_or("?");
    let who = body
        .get("userId")
        .and_then(Value::as_str)
        .or_else(|| body.get("anonymousId").and_then(Value::as_str))
        .unwrap_or("?");
    let name = body
        .get("event")
        .and_then(Value::as_str)
        .map(|n| format!(" {n:?}"))
        .unwrap_or_default();
    let at = body
        .get("timestamp")
        .and_then(Value::as_str)
        .unwrap_or_default();
    format!("{t}{name} · user {who} · {at}")
}
