//! Scripts: the sandboxed Rhai engine, loading a scripts dir into a [`ScriptSet`]
//! (compiled once; handlers collected from top-level registration calls), and the
//! handler table that decides which handlers an event runs.
//!
//! A `ScriptSet` is immutable; a reload builds a new one and swaps it in
//! ([`Live`]). A handler's `FnPtr` lives in its script's AST, so the pair travels
//! together inside [`Script`].

mod engine;
mod loader;
pub(crate) mod pinned;
mod registry;
pub(crate) mod stdlib;
pub(crate) mod watch;

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use rhai::{AST, EvalAltResult, FnPtr, Module, ParseError, Position};
use serde::Serialize;
use serde_json::Value;

pub use engine::EngineOptions;
pub(crate) use engine::{build_engine, remaining, set_deadline, with_thread_engine};
pub use loader::{SourceFile, load_sources};
pub(crate) use loader::{load_dir, read_dir};

use crate::event::{Event, EventType};
use crate::queue::{Dispatch, Target};

/// A problem with a script, placed at its file, line and column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
pub struct ScriptError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ScriptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

impl ScriptError {
    pub(crate) fn from_parse(file: &str, err: &ParseError) -> Self {
        Self::at(file, err.position(), err.err_type().to_string())
    }

    /// From a runtime error, placed at the innermost position (inside the closure
    /// that failed, not at the call site).
    pub(crate) fn from_eval(file: &str, err: &EvalAltResult) -> Self {
        let (pos, message) = describe_eval(err, file);
        Self::at(file, pos, message)
    }

    fn at(file: &str, pos: Position, message: String) -> Self {
        Self {
            file: file.to_owned(),
            line: pos.line().unwrap_or(0),
            column: pos.position().unwrap_or(0),
            message,
        }
    }
}

/// Where an error happened in `file` and its message without position text.
///
/// The position is the deepest one inside `file` (for an error raised inside a
/// connector module, the line of the script that called into it); the message then
/// names the module function and its own place, e.g.
/// `slack answered 404: channel_not_found (in slack::post, stdlib/slack.rhai:12:9)`.
pub(crate) fn describe_eval(err: &EvalAltResult, file: &str) -> (Position, String) {
    let mut cur = err;
    let mut pos = err.position();
    let mut inside: Option<(String, String)> = None;
    while let EvalAltResult::ErrorInFunctionCall(name, source, inner, p) = cur {
        if inside.is_none() {
            if !p.is_none() {
                pos = *p;
            }
            if !source.is_empty() && source != file {
                inside = Some((name.clone(), source.clone()));
            }
        }
        cur = inner;
    }
    if let EvalAltResult::ErrorInModule(_, inner, p) = cur {
        if !p.is_none() && inside.is_none() {
            pos = *p;
        }
        cur = inner;
    }
    let inner_pos = cur.position();
    if inside.is_none() && !inner_pos.is_none() {
        pos = inner_pos;
    }
    let mut message = match cur {
        EvalAltResult::ErrorRuntime(v, _) if v.is_string() => v.to_string(),
        EvalAltResult::ErrorRuntime(v, _) if v.is::<crate::host::HostFault>() => {
            v.clone().cast::<crate::host::HostFault>().message()
        }
        other => {
            let text = other.to_string();
            match (inner_pos.line(), inner_pos.position()) {
                (Some(l), Some(c)) => text
                    .strip_suffix(&format!(" (line {l}, position {c})"))
                    .map_or(text.clone(), str::to_owned),
                (Some(l), None) => text
                    .strip_suffix(&format!(" (line {l})"))
                    .map_or(text.clone(), str::to_owned),
                _ => text,
            }
        }
    };
    if let Some((name, source)) = inside {
        let module = std::path::Path::new(&source)
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        match (inner_pos.line(), inner_pos.position()) {
            (Some(l), Some(c)) => {
                message = format!("{message} (in {module}::{name}, {source}:{l}:{c})");
            }
            _ => message = format!("{message} (in {module}::{name}, {source})"),
        }
    }
    (pos, message)
}

/// What a handler fires on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "on", content = "filter", rename_all = "snake_case")]
pub enum HandlerKind {
    /// `on_track(fn)` (None) or `on_track("Name", fn)`.
    Track(Option<String>),
    Identify,
    Page,
    Screen,
    Group,
    Alias,
    Delete,
    /// `on_event(fn)`: every event.
    Event,
    /// `on_audience("key", |e, entered| …)`.
    Audience(String),
    /// `on_trait("key", |e, value| …)`.
    Trait(String),
    /// `every("expr", fn)`; options as given.
    Schedule(String),
    /// `on_webhook("name", fn)`: a source at `/hooks/name` (its spec on the handler).
    Webhook(String),
    /// `tool("name", options, |args| …)`: a tool agents call (its spec in `options`).
    Tool(String),
    /// `on_approval(|req| …)`: a run for each new approval request (a channel).
    Approval,
}

impl HandlerKind {
    /// How many arguments the handler function takes.
    pub(crate) fn arity(&self) -> usize {
        match self {
            Self::Audience(_) | Self::Trait(_) => 2,
            _ => 1,
        }
    }

    fn label(&self) -> String {
        match self {
            Self::Track(None) => "on_track".into(),
            Self::Track(Some(n)) => format!("on_track({n})"),
            Self::Identify => "on_identify".into(),
            Self::Page => "on_page".into(),
            Self::Screen => "on_screen".into(),
            Self::Group => "on_group".into(),
            Self::Alias => "on_alias".into(),
            Self::Delete => "on_delete".into(),
            Self::Event => "on_event".into(),
            Self::Audience(k) => format!("on_audience({k})"),
            Self::Trait(k) => format!("on_trait({k})"),
            Self::Schedule(e) => format!("every({e})"),
            Self::Webhook(n) => format!("on_webhook({n})"),
            Self::Tool(n) => format!("tool({n})"),
            Self::Approval => "on_approval".into(),
        }
    }
}

/// One registered handler.
#[derive(Debug, Clone)]
pub struct Handler {
    /// Stable within a script across edits that keep the order of same-kind handlers:
    /// `on_track(Order Completed)#0`.
    pub key: String,
    pub kind: HandlerKind,
    pub func: FnPtr,
    pub line: usize,
    /// `every(expr, #{ … }, fn)` options.
    pub options: Option<Value>,
    /// What an `on_webhook` source declared (verification, methods, `respond`).
    pub source: Option<Arc<crate::source::SourceSpec>>,
}

/// A compiled handler script.
pub struct Script {
    pub name: String,
    pub path: PathBuf,
    /// sha256 of the source: runs are pinned to it.
    pub hash: String,
    pub source: Arc<str>,
    pub ast: AST,
    pub handlers: Vec<Handler>,
}

impl Script {
    pub fn handler(&self, key: &str) -> Option<&Handler> {
        self.handlers.iter().find(|h| h.key == key)
    }
}

impl fmt::Debug for Script {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Script")
            .field("name", &self.name)
            .field("handlers", &self.handlers.len())
            .finish_non_exhaustive()
    }
}

/// Compiled connector modules by import name (stdlib and overrides).
pub(crate) type Modules = Arc<Vec<(String, Arc<Module>)>>;

static NEXT_VERSION: AtomicU64 = AtomicU64::new(1);

/// Everything loaded from a scripts dir at one moment.
pub struct ScriptSet {
    /// Unique per load, so engines cached per thread know when to rebuild.
    pub version: u64,
    pub scripts: Vec<Arc<Script>>,
    pub modules: Modules,
    /// Where each module came from (`stdlib` or a file), for `/api/scripts`.
    pub module_sources: Vec<(String, String)>,
    pub errors: Vec<ScriptError>,
    index: Index,
}

#[derive(Default)]
struct Index {
    by_type: HashMap<EventType, Vec<(usize, usize)>>,
    by_track_name: HashMap<String, Vec<(usize, usize)>>,
    every_event: Vec<(usize, usize)>,
    audiences: HashMap<String, Vec<(usize, usize)>>,
    traits: HashMap<String, Vec<(usize, usize)>>,
    sources: HashMap<String, (usize, usize)>,
    tools: HashMap<String, (usize, usize)>,
}

impl ScriptSet {
    pub(crate) fn new(
        scripts: Vec<Arc<Script>>,
        modules: Modules,
        module_sources: Vec<(String, String)>,
        mut errors: Vec<ScriptError>,
    ) -> Self {
        let mut index = Index::default();
        for (si, s) in scripts.iter().enumerate() {
            for (hi, h) in s.handlers.iter().enumerate() {
                let at = (si, hi);
                match &h.kind {
                    HandlerKind::Track(Some(name)) => {
                        index
                            .by_track_name
                            .entry(name.clone())
                            .or_default()
                            .push(at);
                    }
                    HandlerKind::Track(None) => {
                        index.by_type.entry(EventType::Track).or_default().push(at);
                    }
                    HandlerKind::Identify => index
                        .by_type
                        .entry(EventType::Identify)
                        .or_default()
                        .push(at),
                    HandlerKind::Page => index.by_type.entry(EventType::Page).or_default().push(at),
                    HandlerKind::Screen => {
                        index.by_type.entry(EventType::Screen).or_default().push(at);
                    }
                    HandlerKind::Group => {
                        index.by_type.entry(EventType::Group).or_default().push(at);
                    }
                    HandlerKind::Alias => {
                        index.by_type.entry(EventType::Alias).or_default().push(at);
                    }
                    HandlerKind::Delete => {
                        index.by_type.entry(EventType::Delete).or_default().push(at);
                    }
                    HandlerKind::Event => index.every_event.push(at),
                    HandlerKind::Audience(k) => {
                        index.audiences.entry(k.clone()).or_default().push(at);
                    }
                    HandlerKind::Trait(k) => index.traits.entry(k.clone()).or_default().push(at),
                    HandlerKind::Schedule(_) | HandlerKind::Approval => {}
                    // One script owns a source's URL, and a tool name is one tool for
                    // every client: a second claim is an error.
                    HandlerKind::Webhook(name) | HandlerKind::Tool(name) => {
                        let (names, call, what) = match &h.kind {
                            HandlerKind::Webhook(_) => (&mut index.sources, "on_webhook", "source"),
                            _ => (&mut index.tools, "tool", "tool"),
                        };
                        match names.get(name) {
                            Some(&(owner, _)) => errors.push(ScriptError {
                                file: s.path.display().to_string(),
                                line: h.line,
                                column: 0,
                                message: format!(
                                    "{call}({name:?}): the {what} is already registered by {}",
                                    scripts[owner].name
                                ),
                            }),
                            None => {
                                names.insert(name.clone(), at);
                            }
                        }
                    }
                }
            }
        }
        Self {
            version: NEXT_VERSION.fetch_add(1, Ordering::Relaxed),
            scripts,
            modules,
            module_sources,
            errors,
            index,
        }
    }

    /// An empty set (no scripts), e.g. before the first load.
    pub(crate) fn empty() -> Self {
        Self::new(Vec::new(), Arc::new(Vec::new()), Vec::new(), Vec::new())
    }

    pub fn script(&self, name: &str) -> Option<&Arc<Script>> {
        self.scripts.iter().find(|s| s.name == name)
    }

    /// The script and handler of the webhook source `name`.
    pub(crate) fn source(&self, name: &str) -> Option<(&Arc<Script>, &Handler)> {
        let &(si, hi) = self.index.sources.get(name)?;
        let script = &self.scripts[si];
        Some((script, &script.handlers[hi]))
    }

    /// The script and handler of tool `name`.
    pub(crate) fn tool(&self, name: &str) -> Option<(&Arc<Script>, &Handler)> {
        let &(si, hi) = self.index.tools.get(name)?;
        let script = &self.scripts[si];
        Some((script, &script.handlers[hi]))
    }

    /// Every webhook source: its name, script and handler, by name.
    pub(crate) fn sources(&self) -> Vec<(&str, &Arc<Script>, &Handler)> {
        let mut out: Vec<_> = self
            .index
            .sources
            .iter()
            .map(|(name, &(si, hi))| {
                let script = &self.scripts[si];
                (name.as_str(), script, &script.handlers[hi])
            })
            .collect();
        out.sort_by_key(|(name, ..)| *name);
        out
    }

    /// The handlers `event` fires, in script then registration order.
    pub(crate) fn targets(&self, event: &Event) -> Vec<Target> {
        let mut hits: Vec<(usize, usize)> = Vec::new();
        let ix = &self.index;
        if let Some(v) = ix.by_type.get(&event.kind) {
            hits.extend_from_slice(v);
        }
        if event.kind == EventType::Track
            && let Some(v) = event.name().and_then(|n| ix.by_track_name.get(n))
        {
            hits.extend_from_slice(v);
        }
        hits.extend_from_slice(&ix.every_event);
        if !ix.audiences.is_empty()
            && let Some((key, _)) = audience_of(&event.body)
            && let Some(v) = ix.audiences.get(key)
        {
            hits.extend_from_slice(v);
        }
        if !ix.traits.is_empty()
            && let Some((key, _)) = computed_trait_of(&event.body)
            && let Some(v) = ix.traits.get(key)
        {
            hits.extend_from_slice(v);
        }
        if hits.len() > 1 {
            hits.sort_unstable();
            hits.dedup();
        }
        hits.into_iter()
            .map(|(si, hi)| Target {
                script: self.scripts[si].name.clone(),
                handler: self.scripts[si].handlers[hi].key.clone(),
            })
            .collect()
    }
}

type Body = serde_json::Map<String, Value>;

fn personas<'a>(body: &'a Body, class: &str) -> Option<&'a str> {
    let p = body.get("context")?.get("personas")?;
    if p.get("computation_class")?.as_str()? != class {
        return None;
    }
    p.get("computation_key")?.as_str()
}

/// An Engage audience change in either form (`segment-spec.md` §6): the audience key
/// and whether the user entered.
pub(crate) fn audience_of(body: &Body) -> Option<(&str, bool)> {
    match body.get("type")?.as_str()? {
        "identify" | "group" => {
            let key = personas(body, "audience")?;
            let entered = body.get("traits")?.get(key)?.as_bool()?;
            Some((key, entered))
        }
        "track" => {
            let props = body.get("properties")?;
            let key = props.get("audience_key")?.as_str()?;
            let entered = match body.get("event")?.as_str()? {
                "Audience Entered" => true,
                "Audience Exited" => false,
                _ => props.get(key)?.as_bool()?,
            };
            Some((key, entered))
        }
        _ => None,
    }
}

/// An Engage computed trait in either form: the trait key and its value.
pub(crate) fn computed_trait_of(body: &Body) -> Option<(&str, &Value)> {
    match body.get("type")?.as_str()? {
        "identify" | "group" => {
            let key = personas(body, "trait")?;
            Some((key, body.get("traits")?.get(key)?))
        }
        "track" => {
            let props = body.get("properties")?;
            let key = props.get("trait_key")?.as_str()?;
            Some((key, props.get(key)?))
        }
        _ => None,
    }
}

/// The live script set, swapped atomically on reload.
pub struct Live {
    current: ArcSwap<ScriptSet>,
    changed: tokio::sync::watch::Sender<u64>,
    /// When each script's current content was loaded (its hash and the time).
    loaded: parking_lot::Mutex<HashMap<String, (String, chrono::DateTime<chrono::Utc>)>>,
}

impl Live {
    pub fn new(set: ScriptSet) -> Self {
        let (changed, _) = tokio::sync::watch::channel(set.version);
        let live = Self {
            current: ArcSwap::from_pointee(set),
            changed,
            loaded: parking_lot::Mutex::default(),
        };
        live.note_loaded(&live.get());
        live
    }

    pub fn get(&self) -> Arc<ScriptSet> {
        self.current.load_full()
    }

    /// Makes `set` live; returns the previous one.
    pub fn swap(&self, set: ScriptSet) -> Arc<ScriptSet> {
        let version = set.version;
        self.note_loaded(&set);
        let old = self.current.swap(Arc::new(set));
        self.changed.send_replace(version);
        old
    }

    fn note_loaded(&self, set: &ScriptSet) {
        let now = chrono::Utc::now();
        let mut loaded = self.loaded.lock();
        loaded.retain(|name, _| set.scripts.iter().any(|s| &s.name == name));
        for s in &set.scripts {
            let changed = loaded.get(&s.name).is_none_or(|(h, _)| *h != s.hash);
            if changed {
                loaded.insert(s.name.clone(), (s.hash.clone(), now));
            }
        }
    }

    /// When the current content of script `name` was loaded.
    pub fn loaded_at(&self, name: &str) -> Option<chrono::DateTime<chrono::Utc>> {
        self.loaded.lock().get(name).map(|(_, at)| *at)
    }

    /// Notified on every swap (the schedule engine reloads its list).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

impl Dispatch for Live {
    fn targets(&self, event: &Event) -> Vec<Target> {
        self.current.load().targets(event)
    }
}

pub(crate) fn handler_key(kind: &HandlerKind, existing: &[Handler]) -> String {
    let n = existing.iter().filter(|h| &h.kind == kind).count();
    format!("{}#{n}", kind.label())
}
