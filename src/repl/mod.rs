//! `spur repl [--live] [--config FILE]`: a Rhai prompt with the full host API
//! (`http`, `state`, `segment`, `approval`, `time`, `json`, `crypto`, `log`, `env`,
//! and the connector modules such as `slack::post`), on the engine handlers run on.
//!
//! ```text
//! spur> let r = http::post("https://example.com/hook", #{ user: "ada" });
//!   → POST https://example.com/hook (dry run)
//!     {"user":"ada"}
//! spur> r.status
//! 200
//! spur> slack::post("#sales", `${1 + 2} orders`).ok
//!   → POST https://slack.invalid/chat.postMessage (dry run)
//!     {"channel":"#sales","text":"3 orders"}
//! true
//! spur> :load scripts/alert.rhai
//! ```
//!
//! Dry run by default: every outbound call is answered by the recorder, not sent,
//! and printed after the input with its body. `--live` sends for real through the
//! configured connections and prints each call's method, URL and status. State
//! lives in memory for the session (namespace `repl`); approvals are answered
//! "approved" at once, sleeps return and `wait_for` times out at once.
//!
//! Variables and `fn` definitions persist across inputs. An input that is not
//! finished — an open `{`, `(` or `[`, an open string, or code the parser says ends
//! too early — continues on the next line (`...` prompt); with brackets balanced, an
//! empty line evaluates what is there. Values print readably: nothing for `()`,
//! maps and arrays as pretty JSON, strings without quotes. An error prints as
//! `error: message (line:col)` and the session goes on.
//!
//! Commands: `:help`; `:load FILE|DIR` (register a script's handlers, then fire a
//! sample event at each kind of handler it has — not in `--live` mode);
//! `:event FILE|JSON|TYPE` (fire an event at the loaded handlers); `:calls` (the
//! last input's calls again); `:quit`, `:q` or Ctrl-D. Tab completes `module::fn`
//! names, functions, variables and commands. History is kept in
//! `<data_dir>/repl_history`. With stdin not a terminal (piped input) lines are
//! read plainly, no prompt is printed, and the session ends at end of input with
//! status 0.

use std::collections::BTreeSet;
use std::io::IsTerminal as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use rhai::{AST, Dynamic, Engine, Scope};
use serde_json::{Map, Value};

mod editor;
mod print;
mod scan;

use editor::{Lines, Read};
pub(crate) use print::show;
use print::{call_lines, eval_error, parse_error};
pub(crate) use scan::completeness;

use crate::config::Config;
use crate::host::{RunCtx, WaitMode, begin_run, end_run};
use crate::local::{Local, RunOpts, SAMPLES, describe, events_from_arg, events_from_json};
use crate::script::{HandlerKind, build_engine, load_sources, read_dir};

/// The prompt of a new input.
pub(crate) const PROMPT: &str = "spur> ";
/// The prompt of a continuation line.
pub(crate) const CONTINUATION: &str = "...   ";
/// The history file's name inside the data dir.
pub(crate) const HISTORY_FILE: &str = "repl_history";
/// The state namespace of REPL inputs.
pub(crate) const NAMESPACE: &str = "repl";

/// The `:` commands, with their help lines.
const COMMANDS: &[(&str, &str)] = &[
    (":help", "this help"),
    (
        ":load FILE|DIR",
        "load a script's handlers (or a scripts dir) and fire a sample event at each kind",
    ),
    (
        ":event FILE|JSON|TYPE",
        "fire an event at the loaded handlers: a JSON file, inline JSON, or a sample type",
    ),
    (":calls", "show the outbound calls of the last input again"),
    (":quit, :q", "leave (or Ctrl-D)"),
];

/// Host modules and what they are for (`:help`).
const MODULES: &[(&str, &str)] = &[
    ("http", "HTTP calls: plain URLs or named connections"),
    ("state", "durable key-value state (in memory here)"),
    ("segment", "Segment write-back, Profile API and Public API"),
    (
        "approval",
        "human approval (answered \"approved\" at once here)",
    ),
    ("log", "run log lines (print goes to info)"),
    (
        "time",
        "clock, parsing and formatting; sleep returns at once here",
    ),
    ("json", "parse and stringify JSON"),
    ("crypto", "hashes, HMAC signatures, UUIDs"),
    ("env", "secrets the config allows scripts to read"),
    ("slack", "Slack connector (connection `slack`)"),
    ("hubspot", "HubSpot connector (connection `hubspot`)"),
    (
        "salesforce",
        "Salesforce connector (connection `salesforce`)",
    ),
    ("asana", "Asana connector (connection `asana`)"),
    ("zendesk", "Zendesk connector (connection `zendesk`)"),
    ("jira", "Jira connector (connection `jira`)"),
    ("pagerduty", "PagerDuty connector (connection `pagerduty`)"),
];

/// Words offered by completion besides functions and variables.
const KEYWORDS: &[&str] = &[
    "let", "const", "fn", "if", "else", "for", "in", "while", "loop", "do", "until", "return",
    "throw", "try", "catch", "break", "continue", "switch", "import", "true", "false",
];

/// Runs the REPL on stdin until `:quit` or end of input.
///
/// # Errors
/// When the local environment cannot be built.
pub(crate) fn run(config: &Config, live: bool) -> anyhow::Result<ExitCode> {
    let mut repl = Repl::new(config, live)?;
    let tty = std::io::stdin().is_terminal();
    let mut lines = if tty {
        println!(
            "spur repl — {}. :help lists commands and modules; Ctrl-D leaves.",
            if live {
                "LIVE: calls are sent for real"
            } else {
                "dry run: calls are recorded, not sent"
            }
        );
        Lines::editor(repl.names(), &config.server.data_dir)
    } else {
        Lines::Plain(std::io::stdin().lock())
    };
    repl.drive(&mut lines);
    lines.close();
    Ok(ExitCode::SUCCESS)
}

/// Whether the session goes on after an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    Continue,
    Quit,
}

/// How far an input is from being ready to evaluate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Completeness {
    /// Ready (or wrong in a way more input cannot fix).
    Complete,
    /// An open bracket, string or comment: keep reading.
    Open,
    /// Balanced, but the parser ran out of input: keep reading until an empty line.
    Unfinished,
}

/// Completion candidates, refreshed after every input.
type Names = Arc<RwLock<Vec<String>>>;

/// One REPL session.
pub(crate) struct Repl {
    local: Local,
    live: bool,
    engine: Engine,
    scope: Scope<'static>,
    /// `fn` definitions of earlier inputs.
    functions: AST,
    /// The calls of the last input, as printed.
    last_calls: Vec<String>,
    /// Engine functions and keywords; names also gets scope variables.
    base_names: Vec<String>,
    names: Names,
}

impl Repl {
    /// A session on an in-memory store with the scripts dir's connector modules
    /// (stdlib, overrides and `lib/`); dry run unless `live`.
    ///
    /// # Errors
    /// When the local environment cannot be built.
    pub(crate) fn new(config: &Config, live: bool) -> anyhow::Result<Self> {
        let mut local = Local::new(config, live, true)?;
        let (_, modules, _) = read_dir(&config.server.scripts_dir);
        let set = load_sources(Vec::new(), modules, &local.engine);
        for e in &set.errors {
            eprintln!("warning: {e}");
        }
        local.set = Arc::new(set);
        let engine = build_engine(&local.engine, &local.set.modules);
        let mut repl = Self {
            local,
            live,
            engine,
            scope: Scope::new(),
            functions: AST::empty(),
            last_calls: Vec::new(),
            base_names: Vec::new(),
            names: Arc::default(),
        };
        repl.refresh_names(true);
        Ok(repl)
    }

    /// The completion candidates (shared with the line editor).
    pub(crate) fn names(&self) -> Names {
        Arc::clone(&self.names)
    }

    /// Reads inputs from `lines` and handles them until `:quit` or end of input.
    fn drive(&mut self, lines: &mut Lines) {
        let mut buf = String::new();
        loop {
            let prompt = if buf.is_empty() { PROMPT } else { CONTINUATION };
            let line = match lines.read(prompt) {
                Read::Line(line) => line,
                Read::Interrupted => {
                    buf.clear();
                    continue;
                }
                Read::Eof => {
                    if !buf.trim().is_empty() {
                        self.eval(&buf);
                    }
                    return;
                }
            };
            if buf.is_empty() {
                let trimmed = line.trim();
                if trimmed.is_empty() {
                    continue;
                }
                if trimmed.starts_with(':') {
                    lines.remember(trimmed);
                    if self.command(trimmed) == Step::Quit {
                        return;
                    }
                    continue;
                }
            } else {
                buf.push('\n');
            }
            buf.push_str(&line);
            let ready = match completeness(&self.engine, &self.scope, &buf) {
                Completeness::Complete => true,
                Completeness::Open => false,
                Completeness::Unfinished => line.trim().is_empty(),
            };
            if ready {
                lines.remember(buf.trim_end());
                self.eval(&buf);
                buf.clear();
            }
        }
    }

    /// Evaluates `code` with a run context installed, then prints its calls and value.
    fn eval(&mut self, code: &str) {
        let limits = &self.local.config.limits;
        let mut ctx = RunCtx::new(
            NAMESPACE,
            uuid::Uuid::new_v4().simple().to_string(),
            limits.max_log_lines,
        );
        NAMESPACE.clone_into(&mut ctx.script);
        NAMESPACE.clone_into(&mut ctx.handler);
        ctx.echo = true;
        ctx.wait_mode = WaitMode::Immediate;
        ctx.journal = None;
        if let Some(r) = &self.local.recorder {
            r.take_calls();
        }
        begin_run(ctx);
        crate::script::set_deadline(Some(
            Instant::now() + Duration::from_millis(limits.timeout_ms),
        ));
        let result = match self.engine.compile_with_scope(&self.scope, code) {
            Ok(ast) => {
                self.functions += ast;
                let r = self
                    .engine
                    .eval_ast_with_scope::<Dynamic>(&mut self.scope, &self.functions);
                // Keep only the functions for later inputs.
                self.functions.clear_statements();
                r.map_err(|e| eval_error(&e))
            }
            Err(e) => Err(parse_error(&e)),
        };
        crate::script::set_deadline(None);
        let ctx = end_run().unwrap_or_default();
        self.last_calls = self.calls_of(&ctx);
        if !self.live {
            for line in &self.last_calls {
                println!("{line}");
            }
        }
        match result {
            Ok(v) => {
                if let Some(text) = show(&v) {
                    println!("{text}");
                }
            }
            Err(e) => println!("{e}"),
        }
        self.refresh_names(false);
    }

    /// The outbound calls of the run `ctx` ended, as lines to print.
    fn calls_of(&self, ctx: &RunCtx) -> Vec<String> {
        let recorded = self
            .local
            .recorder
            .as_ref()
            .map(|r| r.take_calls())
            .unwrap_or_default();
        call_lines(&recorded, &ctx.calls)
    }

    /// Runs a `:` command.
    fn command(&mut self, line: &str) -> Step {
        let (name, arg) = line
            .split_once(char::is_whitespace)
            .map_or((line, ""), |(n, a)| (n, a.trim()));
        match name {
            ":quit" | ":q" | ":exit" => return Step::Quit,
            ":help" | ":h" => self.help(),
            ":calls" => {
                if self.last_calls.is_empty() {
                    println!("no calls");
                }
                for l in &self.last_calls {
                    println!("{l}");
                }
            }
            ":load" if !arg.is_empty() => self.load(Path::new(arg)),
            ":event" if !arg.is_empty() => self.event(arg),
            ":load" => println!("usage: :load FILE|DIR"),
            ":event" => println!("usage: :event FILE|JSON|TYPE"),
            other => println!("error: unknown command {other} (:help lists them)"),
        }
        Step::Continue
    }

    fn help(&self) {
        println!("Commands:");
        for (c, what) in COMMANDS {
            println!("  {c:<24}{what}");
        }
        println!("\nModules (Tab completes module::fn):");
        let sigs = self.engine.gen_fn_signatures(false);
        for (name, what) in module_names(&self.engine) {
            let prefix = format!("{name}::");
            let fns: BTreeSet<&str> = sigs
                .iter()
                .filter_map(|s| s.strip_prefix(&prefix))
                .filter_map(|s| s.split('(').next())
                .collect();
            println!(
                "  {name:<12}{what}\n  {:<12}{}",
                "",
                fns.into_iter().collect::<Vec<_>>().join(", ")
            );
        }
        println!("\nFunctions: uuid(), wait_for(#{{…}}, timeout), skip(why), fail(why), print(x)");
        println!(
            "\nMode: {}. State lives in memory (namespace {NAMESPACE:?}).",
            if self.live {
                "live — calls are sent through the configured connections"
            } else {
                "dry run — calls are recorded and printed, not sent"
            }
        );
        println!(
            "Input: variables and fn definitions persist; an open bracket continues on the next line."
        );
    }

    /// `:load FILE|DIR`: loads handlers and fires a sample at each kind (dry run only).
    fn load(&mut self, path: &Path) {
        let previous = Arc::clone(&self.local.set);
        let errors = if path.is_dir() {
            self.local.load_dir(path)
        } else {
            self.local.load_file(path)
        };
        for e in &errors {
            println!("error: {e}");
        }
        if !errors.is_empty() && self.local.set.scripts.is_empty() {
            // Nothing loaded: keep what was loaded before.
            self.local.set = previous;
            return;
        }
        // The scripts' directory may bring its own modules.
        self.engine = build_engine(&self.local.engine, &self.local.set.modules);
        self.refresh_names(true);
        let set = Arc::clone(&self.local.set);
        let handlers: Vec<String> = set
            .scripts
            .iter()
            .flat_map(|s| {
                s.handlers
                    .iter()
                    .map(move |h| format!("{} · {}", s.name, h.key))
            })
            .collect();
        println!(
            "loaded {}: {} handler(s){}",
            path.display(),
            handlers.len(),
            if handlers.is_empty() {
                String::new()
            } else {
                format!(" — {}", handlers.join(", "))
            }
        );
        if handlers.is_empty() {
            return;
        }
        if self.live {
            println!("live mode: no sample events fired; use :event to fire one");
            return;
        }
        let kinds: Vec<HandlerKind> = set
            .scripts
            .iter()
            .flat_map(|s| s.handlers.iter().map(|h| h.kind.clone()))
            .collect();
        self.last_calls.clear();
        let mut fired: Vec<Map<String, Value>> = Vec::new();
        for kind in &kinds {
            let Some(body) = sample_for(kind) else {
                continue;
            };
            if fired.contains(&body) {
                continue;
            }
            self.fire(&body);
            fired.push(body);
        }
        for s in &set.scripts {
            for h in &s.handlers {
                if let HandlerKind::Schedule(expr) = &h.kind {
                    println!("▶ tick of every({expr})");
                    let args = crate::worker::tick_args(&s.name, expr, crate::store::now_ms());
                    let run = self.local.run_handler(s, h, args, RunOpts::default());
                    print!("{}", run.report());
                }
            }
        }
    }

    /// `:event FILE|JSON|TYPE`.
    fn event(&mut self, arg: &str) {
        let events = if arg.starts_with('{') || arg.starts_with('[') {
            events_from_json(arg)
        } else {
            events_from_arg(arg)
        };
        match events {
            Ok(events) => {
                self.last_calls.clear();
                if self.local.set.scripts.is_empty() {
                    println!("no handlers loaded: :load FILE first");
                    return;
                }
                for body in &events {
                    self.fire(body);
                }
            }
            Err(e) => println!("error: {e:#}"),
        }
    }

    /// Fires `body` at the loaded handlers and prints each run.
    fn fire(&mut self, body: &Map<String, Value>) {
        println!("▶ {}", describe(body));
        let runs = self.local.fire(body, &RunOpts::default());
        if runs.is_empty() {
            println!("  no loaded handler matches");
        }
        for r in runs {
            self.last_calls.extend(call_lines(&r.recorded, &r.calls));
            print!("{}", r.report());
        }
    }

    /// Rebuilds the completion candidates (the engine's functions when `engine`).
    fn refresh_names(&mut self, engine: bool) {
        if engine {
            let mut base: BTreeSet<String> = self
                .engine
                .gen_fn_signatures(true)
                .iter()
                .filter_map(|s| s.split('(').next())
                .filter(|n| is_path(n))
                .map(str::to_owned)
                .collect();
            base.extend(KEYWORDS.iter().map(|k| (*k).to_owned()));
            self.base_names = base.into_iter().collect();
        }
        let mut names: BTreeSet<String> = self.base_names.iter().cloned().collect();
        names.extend(self.scope.iter().map(|(n, _, _)| n.to_owned()));
        names.extend(self.functions.iter_functions().map(|f| f.name.to_owned()));
        *self.names.write() = names.into_iter().collect();
    }
}

/// The registered modules, known ones first in `MODULES` order, each with a description.
fn module_names(engine: &Engine) -> Vec<(String, String)> {
    let present: BTreeSet<String> = engine
        .gen_fn_signatures(false)
        .iter()
        .filter_map(|s| s.split('(').next()?.split_once("::"))
        .map(|(m, _)| m.to_owned())
        .collect();
    let mut out: Vec<(String, String)> = MODULES
        .iter()
        .filter(|(m, _)| present.contains(*m))
        .map(|(m, w)| ((*m).to_owned(), (*w).to_owned()))
        .collect();
    for m in &present {
        if !MODULES.iter().any(|(k, _)| k == m) {
            out.push((m.clone(), "connector module".to_owned()));
        }
    }
    out
}

/// Whether `name` is an identifier or `module::identifier` (not an operator or
/// a property accessor).
fn is_path(name: &str) -> bool {
    !name.is_empty()
        && !name.contains('$')
        && name.split("::").all(|part| {
            part.chars()
                .next()
                .is_some_and(|c| c.is_alphabetic() || c == '_')
                && part.chars().all(|c| c.is_alphanumeric() || c == '_')
        })
}

/// The sample event a handler of `kind` gets on `:load` (`None` for schedules).
fn sample_for(kind: &HandlerKind) -> Option<Map<String, Value>> {
    let sample = |t: &str| -> Option<Map<String, Value>> {
        let (_, text) = SAMPLES.iter().find(|(k, _)| *k == t)?;
        events_from_json(text).ok()?.into_iter().next()
    };
    let mut body = match kind {
        HandlerKind::Track(_) | HandlerKind::Event | HandlerKind::Audience(_) => sample("track")?,
        HandlerKind::Identify | HandlerKind::Trait(_) => sample("identify")?,
        HandlerKind::Page => sample("page")?,
        HandlerKind::Screen => sample("screen")?,
        HandlerKind::Group => sample("group")?,
        HandlerKind::Alias => sample("alias")?,
        HandlerKind::Delete => sample("delete")?,
        HandlerKind::Schedule(_)
        | HandlerKind::Webhook(_)
        | HandlerKind::Tool(_)
        | HandlerKind::Approval => return None,
    };
    match kind {
        HandlerKind::Track(Some(name)) => {
            body.insert("event".into(), Value::String(name.clone()));
        }
        HandlerKind::Audience(key) => {
            body.insert("event".into(), "Audience Entered".into());
            body.insert(
                "properties".into(),
                serde_json::json!({ "audience_key": key, key.as_str(): true }),
            );
        }
        HandlerKind::Trait(key) => {
            let ctx = body
                .entry("context")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(ctx) = ctx {
                ctx.insert(
                    "personas".into(),
                    serde_json::json!({ "computation_class": "trait", "computation_key": key }),
                );
            }
            let traits = body
                .entry("traits")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(traits) = traits {
                traits.insert(key.clone(), "sample".into());
            }
        }
        _ => {}
    }
    Some(body)
}

#[cfg(test)]
mod tests;
