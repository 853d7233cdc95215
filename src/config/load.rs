//! Loading: file, then `${VAR}` interpolation, then `SPUR_<SECTION>_<KEY>` overrides,
//! then typed reading that collects every problem before failing.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::{Table, Value};

use super::{Auth, Config, ConnectionConfig, Secret};

/// Every problem found while loading, each naming its file and key.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration:")?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

const SECTIONS: &[&str] = &[
    "server",
    "segment",
    "admin",
    "limits",
    "retry",
    "retention",
    "store",
    "sources",
    "connections",
    "env",
    "approvals",
];

/// Loads the configuration: `path` if given (it must exist), else `./spur.toml` if
/// present, else defaults. `env` is the process environment (passed in for tests).
///
/// # Errors
/// A `ConfigError` listing every problem at once.
pub(crate) fn load(
    path: Option<&Path>,
    env: &BTreeMap<String, String>,
) -> Result<Config, ConfigError> {
    let chosen = match path {
        Some(p) => Some(p.to_path_buf()),
        None => Some(PathBuf::from("spur.toml")).filter(|p| p.is_file()),
    };
    let text = match &chosen {
        Some(p) => std::fs::read_to_string(p).map_err(|e| ConfigError {
            problems: vec![format!("{}: cannot read: {e}", p.display())],
        })?,
        None => String::new(),
    };
    load_from_str(&text, chosen.as_deref(), env)
}

/// Loads from TOML text; `file` names it in messages and anchors relative paths.
///
/// # Errors
/// A `ConfigError` listing every problem at once.
pub fn load_from_str(
    text: &str,
    file: Option<&Path>,
    env: &BTreeMap<String, String>,
) -> Result<Config, ConfigError> {
    let label = file.map_or_else(|| "spur.toml".to_owned(), |p| p.display().to_string());
    let mut problems = Vec::new();
    let mut table: Table = match text.parse::<Table>() {
        Ok(t) => t,
        Err(e) => {
            return Err(ConfigError {
                problems: vec![format!("{label}: {}", e.to_string().trim_end())],
            });
        }
    };
    interpolate_table(&mut table, "", env, &label, &mut problems);
    let origins = apply_env_overrides(&mut table, env);

    let mut cfg = Config {
        source: file.map(Path::to_path_buf),
        ..Config::default()
    };
    let base_dir = file
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut r = Reader {
        label: &label,
        origins: &origins,
        problems: &mut problems,
    };

    for key in table.keys() {
        if !SECTIONS.contains(&key.as_str()) {
            r.problem(
                key,
                &format!("unknown section (known: {})", SECTIONS.join(", ")),
            );
        }
    }

    let mut s = r.section(&table, "server");
    if let Some(v) = s.get("listen", parse_addr) {
        cfg.server.listen = v;
    }
    if let Some(v) = s.get("data_dir", parse_string) {
        cfg.server.data_dir = anchor(&base_dir, &v, s.set_by_env("data_dir"));
    }
    if let Some(v) = s.get("scripts_dir", parse_string) {
        cfg.server.scripts_dir = anchor(&base_dir, &v, s.set_by_env("scripts_dir"));
    }
    if let Some(v) = s.get("workers", |v| parse_int(v, 1, 1024)) {
        cfg.server.workers = v as usize;
    }
    if let Some(v) = s.get("max_inflight_requests", |v| parse_int(v, 1, 1_000_000)) {
        cfg.server.max_inflight_requests = v as usize;
    }
    if let Some(v) = s.get("max_pending_events", |v| parse_int(v, 1, 100_000_000)) {
        cfg.server.max_pending_events = v as usize;
    }
    s.finish();

    let mut s = r.section(&table, "segment");
    if let Some(v) = s.get("write_keys", parse_string_list) {
        cfg.segment.write_keys = v.into_iter().map(Secret::new).collect();
    }
    if let Some(v) = s.get("cors_origins", parse_string_list) {
        cfg.segment.cors_origins = v;
    }
    cfg.segment.webhook_secret = s
        .get("webhook_secret", parse_secret)
        .or(cfg.segment.webhook_secret);
    cfg.segment.webhook_token = s
        .get("webhook_token", parse_secret)
        .filter(|t| !t.expose().is_empty());
    cfg.segment.write_key = s.get("write_key", parse_secret).or(cfg.segment.write_key);
    for (key, slot) in [
        ("api_base", &mut cfg.segment.api_base),
        ("profile_base", &mut cfg.segment.profile_base),
        ("public_api_base", &mut cfg.segment.public_api_base),
    ] {
        if let Some(v) = s.get(key, parse_url) {
            *slot = v;
        }
    }
    cfg.segment.profile_space_id = s
        .get("profile_space_id", parse_string)
        .or(cfg.segment.profile_space_id);
    cfg.segment.profile_token = s
        .get("profile_token", parse_secret)
        .or(cfg.segment.profile_token);
    cfg.segment.public_api_token = s
        .get("public_api_token", parse_secret)
        .or(cfg.segment.public_api_token);
    if let Some(v) = s.get("require_approval", parse_bool) {
        cfg.segment.require_approval = v;
    }
    if let Some(v) = s.get("batch_size", |v| parse_int(v, 1, 2500)) {
        cfg.segment.batch_size = v as usize;
    }
    if let Some(v) = s.get("flush_interval", parse_duration) {
        cfg.segment.flush_interval = v;
    }
    s.finish();

    let mut s = r.section(&table, "admin");
    cfg.admin.token = s
        .get("token", parse_secret)
        .filter(|t| !t.expose().is_empty());
    s.finish();

    let mut s = r.section(&table, "limits");
    if let Some(v) = s.get("max_operations", |v| parse_int(v, 1000, i64::MAX)) {
        cfg.limits.max_operations = v as u64;
    }
    if let Some(v) = s.get("timeout_ms", |v| parse_int(v, 1, 24 * 3600 * 1000)) {
        cfg.limits.timeout_ms = v as u64;
    }
    for (key, slot, max) in [
        ("max_call_depth", &mut cfg.limits.max_call_depth, 10_000),
        (
            "max_string_bytes",
            &mut cfg.limits.max_string_bytes,
            1 << 30,
        ),
        ("max_array_len", &mut cfg.limits.max_array_len, 100_000_000),
        ("max_map_len", &mut cfg.limits.max_map_len, 100_000_000),
        ("max_log_lines", &mut cfg.limits.max_log_lines, 100_000),
        (
            "max_response_bytes",
            &mut cfg.limits.max_response_bytes,
            1 << 30,
        ),
    ] {
        if let Some(v) = s.get(key, |v| parse_int(v, 1, max)) {
            *slot = v as usize;
        }
    }
    s.finish();

    let mut s = r.section(&table, "retry");
    if let Some(v) = s.get("max_attempts", |v| parse_int(v, 1, 1000)) {
        cfg.retry.max_attempts = v as u32;
    }
    if let Some(v) = s.get("base_ms", |v| parse_int(v, 1, 86_400_000)) {
        cfg.retry.base_ms = v as u64;
    }
    if let Some(v) = s.get("max_ms", |v| parse_int(v, 1, 7 * 86_400_000)) {
        cfg.retry.max_ms = v as u64;
    }
    s.finish();

    let mut s = r.section(&table, "retention");
    for (key, slot) in [
        ("runs", &mut cfg.retention.runs),
        ("events", &mut cfg.retention.events),
        ("dead_letters", &mut cfg.retention.dead_letters),
        ("approvals", &mut cfg.retention.approvals),
        ("dedup", &mut cfg.retention.dedup),
    ] {
        if let Some(v) = s.get(key, parse_duration) {
            *slot = v;
        }
    }
    s.finish();

    let mut s = r.section(&table, "store");
    if let Some(v) = s.get("backend", parse_backend) {
        cfg.store = v;
    }
    s.finish();

    let mut s = r.section(&table, "approvals");
    if let Some(v) = s.get("slack_connection", parse_string) {
        cfg.approvals.slack_connection = v;
    }
    cfg.approvals.slack_signing_secret = s.get("slack_signing_secret", parse_secret);
    cfg.approvals.public_url = s.get("public_url", parse_url);
    if let Some(v) = s.get("default_expires", parse_duration) {
        cfg.approvals.default_expires = v;
    }
    cfg.approvals.channel = s.get("channel", parse_string);
    s.finish();

    let mut s = r.section(&table, "env");
    if let Some(v) = s.get("allow", parse_string_list) {
        cfg.env_allow = v;
    }
    s.finish();

    if let Some(conns) = table.get("connections") {
        match conns.as_table() {
            None => r.problem(
                "connections",
                "must be a table of [connections.NAME] tables",
            ),
            Some(conns) => {
                for (name, value) in conns {
                    if let Some(c) = read_connection(&mut r, name, value) {
                        cfg.connections.insert(name.clone(), c);
                    }
                }
            }
        }
    }

    if let Some(sources) = table.get("sources") {
        match sources.as_table() {
            None => r.problem("sources", "must be a table of [sources.NAME] tables"),
            Some(sources) => {
                for (name, value) in sources {
                    if let Some(c) = read_source(&mut r, name, value) {
                        cfg.sources.insert(name.clone(), c);
                    }
                }
            }
        }
    }

    if !cfg.server.listen.ip().is_loopback() && cfg.admin.token.is_none() {
        r.problem(
            "server.listen",
            &format!(
                "{} is not a loopback address: set admin.token (or SPUR_ADMIN_TOKEN) to listen on it",
                cfg.server.listen
            ),
        );
    }

    if problems.is_empty() {
        Ok(cfg)
    } else {
        Err(ConfigError { problems })
    }
}

fn read_source(r: &mut Reader<'_>, name: &str, value: &Value) -> Option<super::SourceConfig> {
    let section = format!("sources.{name}");
    let Some(table) = value.as_table() else {
        r.problem(&section, "must be a table");
        return None;
    };
    let mut s = r.section_table(table, &section);
    let mut c = super::SourceConfig {
        secret: s
            .get("secret", parse_secret)
            .filter(|t| !t.expose().is_empty()),
        rate_limit: s.get("rate_limit", parse_positive_float),
        ..super::SourceConfig::default()
    };
    if let Some(v) = s.get("max_body_bytes", |v| parse_int(v, 1, 1 << 30)) {
        c.max_body_bytes = v as usize;
    }
    s.finish();
    Some(c)
}

fn read_connection(r: &mut Reader<'_>, name: &str, value: &Value) -> Option<ConnectionConfig> {
    let section = format!("connections.{name}");
    let Some(table) = value.as_table() else {
        r.problem(&section, "must be a table");
        return None;
    };
    let mut s = r.section_table(table, &section);
    let mut c = ConnectionConfig::default();
    match s.get("base_url", parse_url) {
        Some(v) => c.base_url = v,
        None if !table.contains_key("base_url") => {
            s.problem(
                "base_url",
                "is required (the API's root URL, e.g. https://slack.com/api)",
            );
        }
        None => {}
    }
    let bearer = s.get("bearer", parse_secret);
    let basic = s.get("basic", parse_basic);
    c.auth = match (bearer, basic) {
        (Some(_), Some(_)) => {
            s.problem("basic", "set either bearer or basic, not both");
            Auth::None
        }
        (Some(b), None) => Auth::Bearer(b),
        (None, Some((user, password))) => Auth::Basic { user, password },
        (None, None) => Auth::None,
    };
    if let Some(h) = s.get("headers", parse_headers) {
        c.headers = h;
    }
    c.timeout_ms = s
        .get("timeout_ms", |v| parse_int(v, 1, 3_600_000))
        .map(|v| v as u64);
    c.rate_limit = s.get("rate_limit", parse_positive_float);
    c.max_concurrency = s
        .get("max_concurrency", |v| parse_int(v, 1, 10_000))
        .map(|v| v as usize);
    c.max_attempts = s
        .get("max_attempts", |v| parse_int(v, 1, 20))
        .map(|v| v as u32);
    if let Some(v) = s.get("require_approval", parse_approval_patterns) {
        c.require_approval = v;
    }
    c.max_response_bytes = s
        .get("max_response_bytes", |v| parse_int(v, 1, 1 << 30))
        .map(|v| v as usize);
    if let Some(v) = s.get("on_unknown", parse_on_unknown) {
        c.on_unknown = v;
    }
    s.finish();
    Some(c)
}

struct Reader<'a> {
    label: &'a str,
    origins: &'a BTreeMap<String, String>,
    problems: &'a mut Vec<String>,
}

impl<'a> Reader<'a> {
    fn problem(&mut self, key: &str, message: &str) {
        let place = self.origins.get(key).map_or_else(
            || format!("{}: {key}", self.label),
            |var| format!("{var} ({key})"),
        );
        self.problems.push(format!("{place}: {message}"));
    }

    fn section<'s>(&'s mut self, root: &'s Table, name: &str) -> Section<'s, 'a> {
        match root.get(name) {
            Some(Value::Table(t)) => self.section_table(t, name),
            Some(_) => {
                self.problem(name, "must be a table");
                Section {
                    reader: self,
                    table: None,
                    name: name.to_owned(),
                    used: BTreeSet::new(),
                }
            }
            None => Section {
                reader: self,
                table: None,
                name: name.to_owned(),
                used: BTreeSet::new(),
            },
        }
    }

    fn section_table<'s>(&'s mut self, table: &'s Table, name: &str) -> Section<'s, 'a> {
        Section {
            reader: self,
            table: Some(table),
            name: name.to_owned(),
            used: BTreeSet::new(),
        }
    }
}

struct Section<'r, 't> {
    reader: &'r mut Reader<'t>,
    table: Option<&'r Table>,
    name: String,
    used: BTreeSet<String>,
}

impl Section<'_, '_> {
    fn get<T>(&mut self, key: &str, parse: impl Fn(&Value) -> Result<T, String>) -> Option<T> {
        self.used.insert(key.to_owned());
        let value = self.table?.get(key)?;
        match parse(value) {
            Ok(v) => Some(v),
            Err(msg) => {
                self.problem(key, &msg);
                None
            }
        }
    }

    fn set_by_env(&self, key: &str) -> bool {
        self.reader
            .origins
            .contains_key(&format!("{}.{key}", self.name))
    }

    fn problem(&mut self, key: &str, message: &str) {
        let full = format!("{}.{key}", self.name);
        self.reader.problem(&full, message);
    }

    fn finish(self) {
        let Some(table) = self.table else { return };
        let unknown: Vec<&String> = table.keys().filter(|k| !self.used.contains(*k)).collect();
        for key in unknown {
            let known: Vec<&str> = self.used.iter().map(String::as_str).collect();
            let full = format!("{}.{key}", self.name);
            self.reader
                .problem(&full, &format!("unknown key (known: {})", known.join(", ")));
        }
    }
}

fn anchor(base: &Path, value: &str, from_env: bool) -> PathBuf {
    let p = PathBuf::from(value);
    if p.is_absolute() || from_env || base.as_os_str().is_empty() {
        p
    } else {
        base.join(p)
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

fn parse_string(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        other => Err(format!("expected a string, got {}", describe(other))),
    }
}

fn parse_secret(v: &Value) -> Result<Secret, String> {
    match v {
        Value::String(s) => Ok(Secret::new(s.clone())),
        _ => Err("expected a string".into()),
    }
}

fn parse_url(v: &Value) -> Result<String, String> {
    let s = parse_string(v)?;
    if !(s.starts_with("http://") || s.starts_with("https://")) {
        return Err(format!("expected an http:// or https:// URL, got {s:?}"));
    }
    Ok(s.trim_end_matches('/').to_owned())
}

fn parse_bool(v: &Value) -> Result<bool, String> {
    match v {
        Value::Boolean(b) => Ok(*b),
        Value::String(s) if matches!(s.as_str(), "true" | "1" | "yes") => Ok(true),
        Value::String(s) if matches!(s.as_str(), "false" | "0" | "no") => Ok(false),
        other => Err(format!("expected true or false, got {}", describe(other))),
    }
}

fn parse_int(v: &Value, min: i64, max: i64) -> Result<i64, String> {
    let n = match v {
        Value::Integer(n) => *n,
        Value::String(s) => s
            .replace('_', "")
            .parse::<i64>()
            .map_err(|_| format!("expected an integer, got {s:?}"))?,
        other => return Err(format!("expected an integer, got {}", describe(other))),
    };
    if n < min || n > max {
        return Err(format!("{n} is out of range ({min}..={max})"));
    }
    Ok(n)
}

fn parse_backend(v: &Value) -> Result<super::StoreBackend, String> {
    match v.as_str() {
        Some("sled") => Ok(super::StoreBackend::Sled),
        _ => Err(format!(
            "expected \"sled\" (the embedded store; the only backend of this build), got {}",
            describe(v)
        )),
    }
}

fn parse_on_unknown(v: &Value) -> Result<super::OnUnknown, String> {
    match v.as_str() {
        Some("retry") => Ok(super::OnUnknown::Retry),
        Some("fail") => Ok(super::OnUnknown::Fail),
        _ => Err(format!(
            "expected \"retry\" or \"fail\", got {}",
            describe(v)
        )),
    }
}

fn parse_positive_float(v: &Value) -> Result<f64, String> {
    let n = match v {
        Value::Integer(n) => *n as f64,
        Value::Float(f) => *f,
        Value::String(s) => s
            .parse::<f64>()
            .map_err(|_| format!("expected a number, got {s:?}"))?,
        other => return Err(format!("expected a number, got {}", describe(other))),
    };
    if n.is_finite() && n > 0.0 {
        Ok(n)
    } else {
        Err(format!("expected a positive number, got {n}"))
    }
}

fn parse_duration(v: &Value) -> Result<Duration, String> {
    match v {
        Value::Integer(n) => crate::duration::from_secs(*n),
        Value::String(s) => crate::duration::parse(s),
        other => Err(format!(
            "expected a duration like \"7d\" or \"12h\", got {}",
            describe(other)
        )),
    }
}

fn parse_addr(v: &Value) -> Result<SocketAddr, String> {
    let s = parse_string(v)?;
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    s.to_socket_addrs()
        .ok()
        .and_then(|mut it| it.next())
        .ok_or_else(|| format!("expected host:port like \"127.0.0.1:8088\", got {s:?}"))
}

fn parse_string_list(v: &Value) -> Result<Vec<String>, String> {
    match v {
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                item.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("item {i} must be a string"))
            })
            .collect(),
        // From an environment variable: comma-separated.
        Value::String(s) => Ok(s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()),
        other => Err(format!(
            "expected a list of strings, got {}",
            describe(other)
        )),
    }
}

fn parse_basic(v: &Value) -> Result<(Secret, Secret), String> {
    match v {
        Value::String(s) => {
            let (u, p) = s.split_once(':').unwrap_or((s.as_str(), ""));
            Ok((Secret::new(u), Secret::new(p)))
        }
        Value::Table(t) => {
            let user = t
                .get("user")
                .and_then(Value::as_str)
                .ok_or("needs a string `user`")?;
            let password = t.get("password").and_then(Value::as_str).unwrap_or("");
            if let Some(k) = t.keys().find(|k| *k != "user" && *k != "password") {
                return Err(format!("unknown key {k:?} (known: user, password)"));
            }
            Ok((Secret::new(user), Secret::new(password)))
        }
        _ => Err("expected \"user:password\" or { user, password }".into()),
    }
}

fn parse_headers(v: &Value) -> Result<Vec<(String, Secret)>, String> {
    let t = v
        .as_table()
        .ok_or("expected a table of header = \"value\"")?;
    t.iter()
        .map(|(k, v)| {
            let value = v
                .as_str()
                .ok_or_else(|| format!("header {k:?} must be a string"))?;
            reqwest::header::HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("{k:?} is not a valid header name"))?;
            Ok((k.clone(), Secret::new(value)))
        })
        .collect()
}

fn parse_approval_patterns(v: &Value) -> Result<Vec<String>, String> {
    let list = parse_string_list(v)?;
    for p in &list {
        let mut parts = p.split_whitespace();
        let (Some(method), Some(_path), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!(
                "pattern {p:?} must be \"METHOD path-glob\", e.g. \"DELETE *\""
            ));
        };
        if !(method == "*" || method.chars().all(|c| c.is_ascii_uppercase())) {
            return Err(format!("pattern {p:?}: method must be upper case or *"));
        }
    }
    Ok(list)
}

fn interpolate_table(
    table: &mut Table,
    prefix: &str,
    env: &BTreeMap<String, String>,
    label: &str,
    problems: &mut Vec<String>,
) {
    for (key, value) in table.iter_mut() {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        interpolate_value(value, &path, env, label, problems);
    }
}

fn interpolate_value(
    value: &mut Value,
    path: &str,
    env: &BTreeMap<String, String>,
    label: &str,
    problems: &mut Vec<String>,
) {
    match value {
        Value::String(s) if s.contains('$') => match interpolate(s, env) {
            Ok(v) => *s = v,
            Err(msg) => problems.push(format!("{label}: {path}: {msg}")),
        },
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate_value(item, &format!("{path}[{i}]"), env, label, problems);
            }
        }
        Value::Table(t) => interpolate_table(t, path, env, label, problems),
        _ => {}
    }
}

/// Replaces `${VAR}` and `${VAR:-default}`; `$$` is a literal `$`.
fn interpolate(s: &str, env: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if let Some(r) = rest.strip_prefix("$$") {
            out.push('$');
            rest = r;
        } else if let Some(r) = rest.strip_prefix("${") {
            let end = r
                .find('}')
                .ok_or_else(|| format!("unclosed ${{ in {s:?}"))?;
            let inner = &r[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            match (env.get(name), default) {
                (Some(v), _) => out.push_str(v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(format!("environment variable {name} is not set"));
                }
            }
            rest = &r[end + 1..];
        } else {
            out.push('$');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Applies `SPUR_<SECTION>_<KEY>` variables; returns `section.key -> VAR` for messages.
fn apply_env_overrides(
    table: &mut Table,
    env: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut origins = BTreeMap::new();
    for (var, value) in env {
        let Some(rest) = var.strip_prefix("SPUR_") else {
            continue;
        };
        let lower = rest.to_ascii_lowercase();
        let Some(section) = SECTIONS
            .iter()
            .filter(|s| !matches!(**s, "connections" | "sources"))
            .find(|s| lower.starts_with(&format!("{s}_")))
        else {
            continue;
        };
        let key = &lower[section.len() + 1..];
        let entry = table
            .entry((*section).to_owned())
            .or_insert_with(|| Value::Table(Table::new()));
        if let Value::Table(t) = entry {
            t.insert(key.to_owned(), Value::String(value.clone()));
            origins.insert(format!("{section}.{key}"), var.clone());
        }
    }
    origins
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_are_zero_config_loopback() {
        let c = load_from_str("", None, &env(&[])).unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8088");
        assert_eq!(c.server.data_dir, PathBuf::from(".spur"));
        assert_eq!(c.limits.timeout_ms, 30_000);
    }

    #[test]
    fn interpolates_and_overrides_set_by_env() {
        let text = r#"
            [segment]
            webhook_secret = "${HOOK}"
            write_key = "${WK:-fallback}"
            [connections.slack]
            base_url = "https://slack.com/api"
            bearer = "${SLACK}"
        "#;
        let c = load_from_str(
            text,
            None,
            &env(&[
                ("HOOK", "h1"),
                ("SLACK", "xoxb"),
                ("SPUR_SERVER_LISTEN", "127.0.0.1:9999"),
            ]),
        )
        .unwrap();
        assert_eq!(c.segment.webhook_secret.unwrap().expose(), "h1");
        assert_eq!(c.segment.write_key.unwrap().expose(), "fallback");
        assert_eq!(c.server.listen.port(), 9999);
        assert!(matches!(&c.connections["slack"].auth, Auth::Bearer(t) if t.expose() == "xoxb"));
    }

    #[test]
    fn reports_every_problem_with_file_and_key() {
        let text = r#"
            [server]
            listen = "nowhere"
            colour = "blue"
            [limits]
            timeout_ms = "soon"
            [segment]
            webhook_secret = "${MISSING}"
            [bogus]
            [store]
            backend = "postgres"
        "#;
        let err = load_from_str(
            text,
            Some(Path::new("spur.toml")),
            &env(&[("SPUR_RETRY_MAX_ATTEMPTS", "lots")]),
        )
        .unwrap_err();
        let all = err.to_string();
        for needle in [
            "spur.toml: server.listen: expected host:port",
            "spur.toml: server.colour: unknown key",
            "spur.toml: limits.timeout_ms: expected an integer",
            "spur.toml: segment.webhook_secret: environment variable MISSING is not set",
            "spur.toml: bogus: unknown section",
            "spur.toml: store.backend: expected \"sled\"",
            "SPUR_RETRY_MAX_ATTEMPTS (retry.max_attempts): expected an integer",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
        assert_eq!(err.problems.len(), 7, "{all}");
    }

    #[test]
    fn refuses_public_listen_without_admin_token() {
        let err =
            load_from_str("[server]\nlisten = \"0.0.0.0:8088\"", None, &env(&[])).unwrap_err();
        assert!(err.to_string().contains("set admin.token"));
        let ok = load_from_str(
            "[server]\nlisten = \"0.0.0.0:8088\"\n[admin]\ntoken = \"t\"",
            None,
            &env(&[]),
        );
        assert!(ok.is_ok());
    }

    #[test]
    fn connection_needs_base_url_and_valid_patterns() {
        let err = load_from_str(
            "[connections.x]\nbearer = \"t\"\nrequire_approval = [\"delete\"]",
            None,
            &env(&[]),
        )
        .unwrap_err();
        let all = err.to_string();
        assert!(all.contains("connections.x.base_url: is required"), "{all}");
        assert!(all.contains("connections.x.require_approval"), "{all}");
    }
}
