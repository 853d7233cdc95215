//! How the REPL prints: values, errors with their place, and the calls of an input.

use rhai::{Dynamic, EvalAltResult, ParseError};

use crate::connectors::CallRecord;
use crate::connectors::recorder::RecordedCall;
use crate::host::convert::to_json;
use crate::script::describe_eval;

/// Calls as printed: the recorder's (dry run) with their bodies, as `spur run`
/// prints them, then live ones with their status (or error), as they were echoed.
pub(super) fn call_lines(recorded: &[RecordedCall], calls: &[CallRecord]) -> Vec<String> {
    let mut out = Vec::new();
    for c in recorded {
        out.push(format!("  → {} {} (dry run)", c.method, c.url));
        if let Some(b) = &c.body {
            out.push(format!(
                "    {}",
                serde_json::to_string(b).unwrap_or_default()
            ));
        }
    }
    for c in calls.iter().filter(|c| !c.dry_run) {
        let status = c
            .status
            .map_or_else(|| c.error.clone().unwrap_or_default(), |s| s.to_string());
        out.push(format!("  → {} {} {status}", c.method, c.url));
    }
    out
}

/// A value as the REPL shows it; `None` for `()`.
pub(crate) fn show(value: &Dynamic) -> Option<String> {
    let v = value.flatten_clone();
    if v.is_unit() {
        return None;
    }
    if v.is_string() {
        return Some(v.to_string());
    }
    if (v.is_map() || v.is_array())
        && let Ok(json) = to_json(&v)
        && let Ok(text) = serde_json::to_string_pretty(&json)
    {
        return Some(text);
    }
    Some(v.to_string())
}

/// `error: message (line:col)` for a runtime error.
pub(super) fn eval_error(err: &EvalAltResult) -> String {
    let (pos, message) = describe_eval(err, "");
    format!("error: {message}{}", place(pos))
}

/// `error: message (line:col)` for a parse error.
pub(super) fn parse_error(err: &ParseError) -> String {
    format!("error: {}{}", err.err_type(), place(err.position()))
}

pub(super) fn place(pos: rhai::Position) -> String {
    match (pos.line(), pos.position()) {
        (Some(l), Some(c)) => format!(" ({l}:{c})"),
        (Some(l), None) => format!(" ({l})"),
        _ => String::new(),
    }
}
