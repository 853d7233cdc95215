//! Dry-run: outbound calls are recorded and answered here instead of the network.
//! `spur run`, `spur repl` (without `--live`) and `spur test` use it; stubs added
//! with `mock::http(...)` answer matching calls, anything else gets `200 {"ok": true}`.

use parking_lot::Mutex;
use serde::Serialize;
use serde_json::{Value, json};

/// A call the recorder answered.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct RecordedCall {
    pub method: String,
    pub url: String,
    /// The path relative to the connection's base URL (or the URL's path).
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
}

/// A canned answer for calls matching `method` and `path` (a glob; `*` matches any run).
#[derive(Debug, Clone)]
pub(crate) struct Stub {
    pub method: String,
    pub path: String,
    pub status: u16,
    pub body: Value,
}

/// Records calls and answers them.
#[derive(Debug, Default)]
pub struct Recorder {
    calls: Mutex<Vec<RecordedCall>>,
    stubs: Mutex<Vec<Stub>>,
}

impl Recorder {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Records `call` and returns the status and body to answer with.
    pub(crate) fn answer(&self, call: RecordedCall) -> (u16, Value) {
        let reply = self
            .stubs
            .lock()
            .iter()
            .rev()
            .find(|s| {
                (s.method == "*" || s.method.eq_ignore_ascii_case(&call.method))
                    && (glob_match(&s.path, &call.path) || glob_match(&s.path, &call.url))
            })
            .map_or_else(
                || (200, json!({ "ok": true })),
                |s| (s.status, s.body.clone()),
            );
        self.calls.lock().push(call);
        reply
    }

    pub(crate) fn stub(&self, stub: Stub) {
        self.stubs.lock().push(stub);
    }

    /// Takes the calls recorded so far.
    pub(crate) fn take_calls(&self) -> Vec<RecordedCall> {
        std::mem::take(&mut *self.calls.lock())
    }
}

/// Matches `text` against a glob where `*` matches any run of characters.
pub(crate) fn glob_match(pattern: &str, text: &str) -> bool {
    let p = pattern.as_bytes();
    let t = text.as_bytes();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            pi += 1;
            mark = ti;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*", "/anything"));
        assert!(glob_match(
            "/crm/v3/objects/deals*",
            "/crm/v3/objects/deals/12"
        ));
        assert!(glob_match("/a/*/c", "/a/b/c"));
        assert!(!glob_match("/a/*/c", "/a/b/d"));
        assert!(glob_match("/chat.postMessage", "/chat.postMessage"));
    }

    #[test]
    fn stubs_answer_matching_calls_latest_first() {
        let r = Recorder::new();
        r.stub(Stub {
            method: "POST".into(),
            path: "/chat.*".into(),
            status: 200,
            body: json!({"ok": true, "ts": "1"}),
        });
        let call = |path: &str| RecordedCall {
            method: "POST".into(),
            url: format!("https://x{path}"),
            path: path.into(),
            connection: None,
            body: None,
        };
        assert_eq!(r.answer(call("/chat.postMessage")).1["ts"], "1");
        assert_eq!(r.answer(call("/other")).1, json!({"ok": true}));
        assert_eq!(r.take_calls().len(), 2);
    }
}
