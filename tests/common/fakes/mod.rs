//! In-process fakes of the services the stdlib connector modules (`stdlib/*.rhai`)
//! call: each checks what the real service checks (auth, method, path, body
//! wrapping, field rules) and answers in the service's own shapes, so a broken
//! module fails its test. A service's module holds its fake, its credentials and
//! its [`Connection`]; this one holds what they share.

pub mod asana;
pub mod hubspot;
pub mod jira;
pub mod pagerduty;
pub mod salesforce;
pub mod slack;
pub mod zendesk;

use base64::Engine as _;
use serde_json::Value;
use spur::testing::{FakeHttp, Recorded, Reply};

/// A fake's answer to every request.
pub type Responder = Box<dyn Fn(&Recorded) -> Reply + Send + Sync>;

/// A fake service and the `[connections.NAME]` that points spur at it.
pub struct Connection {
    pub name: &'static str,
    /// The service's base path on the fake (`/api` for Slack's Web API).
    path: &'static str,
    /// Auth lines (`bearer = "…"`), empty for none.
    auth: String,
    /// Further lines of the section (`max_attempts = 2`).
    extra: String,
    responder: Responder,
}

impl Connection {
    pub fn new(
        name: &'static str,
        path: &'static str,
        auth: &str,
        responder: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
    ) -> Self {
        Self {
            name,
            path,
            auth: auth.to_owned(),
            extra: String::new(),
            responder: Box::new(responder),
        }
    }

    /// Replaces the auth lines (`""` for none).
    #[must_use]
    pub fn auth(mut self, lines: &str) -> Self {
        lines.clone_into(&mut self.auth);
        self
    }

    /// Adds a line to the connection's section (`"max_attempts = 2"`).
    #[must_use]
    pub fn with(mut self, line: &str) -> Self {
        self.extra.push_str(line);
        self.extra.push('\n');
        self
    }

    /// Answers with `responder` instead of the service's fake (outages, rate limits).
    #[must_use]
    pub fn answering(
        mut self,
        responder: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
    ) -> Self {
        self.responder = Box::new(responder);
        self
    }

    /// Starts the fake; it and the `[connections.NAME]` section pointing at it.
    pub async fn start(self) -> (FakeHttp, String) {
        let fake = FakeHttp::start(self.responder).await;
        let toml = format!(
            "[connections.{}]\nbase_url = \"{}{}\"\n{}\n{}",
            self.name, fake.base_url, self.path, self.auth, self.extra
        );
        (fake, toml)
    }
}

/// `bearer = "token"`, the auth line of a connection.
pub fn bearer_line(token: &str) -> String {
    format!("bearer = \"{token}\"")
}

/// `basic = "user:password"`, the auth line of a connection.
pub fn basic_line(user_password: &str) -> String {
    format!("basic = \"{user_password}\"")
}

/// The token of a Bearer header.
pub fn bearer(r: &Recorded) -> Option<&str> {
    r.header("authorization")?.strip_prefix("Bearer ")
}

/// The decoded `user:password` of a Basic header.
pub fn basic(r: &Recorded) -> Option<String> {
    let encoded = r.header("authorization")?.strip_prefix("Basic ")?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    String::from_utf8(bytes).ok()
}

/// Decodes a percent-encoded path segment; `None` unless every character that must
/// be encoded in a path segment (`@`, `+`, `/`, space, …) was.
pub fn path_segment(raw: &str) -> Option<String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || "-._~%".contains(c);
    if !raw.chars().all(ok) {
        return None;
    }
    let mut bytes = Vec::new();
    let mut rest = raw.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

/// `v[key]` when it is a string.
pub fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}
