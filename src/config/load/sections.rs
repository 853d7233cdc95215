//! One reader per section of `spur.toml`, in the order the file documents them
//! (`docs/operations.md`). Each reads its keys into the [`Config`]; the unknown-key
//! check runs when its [`Section`] is dropped.

use std::path::PathBuf;

use super::reader::{Reader, Section};
use super::values::{
    parse_addr, parse_backend, parse_basic, parse_bool, parse_call_patterns, parse_duration,
    parse_headers, parse_int, parse_on_unknown, parse_positive_float, parse_scopes, parse_secret,
    parse_sled_mode, parse_string, parse_string_list, parse_url,
};
use crate::config::{Auth, ClientConfig, Config, ConnectionConfig, Secret, SourceConfig};

/// A reader of one top-level section.
pub(super) type ReadSection = fn(&mut Section<'_, '_>, &mut Config);

/// A reader of one named table of a map section (`[connections.NAME]`).
pub(super) type ReadNamed = fn(&mut Section<'_, '_>, &mut Config, &str);

fn int(min: i64, max: i64) -> impl Fn(&toml::Value) -> Result<i64, String> {
    move |v| parse_int(v, min, max)
}

/// A secret that counts as unset when empty (`token = ""`).
fn non_empty(s: Option<Secret>) -> Option<Secret> {
    s.filter(|t| !t.expose().is_empty())
}

pub(super) fn server(s: &mut Section<'_, '_>, cfg: &mut Config) {
    let c = &mut cfg.server;
    s.set("listen", &mut c.listen, parse_addr);
    s.path("data_dir", &mut c.data_dir);
    s.path("scripts_dir", &mut c.scripts_dir);
    if let Some(v) = s.get("workers", int(1, 1024)) {
        c.workers = v as usize;
    }
    if let Some(v) = s.get("max_inflight_requests", int(1, 1_000_000)) {
        c.max_inflight_requests = v as usize;
    }
    if let Some(v) = s.get("max_pending_events", int(1, 100_000_000)) {
        c.max_pending_events = v as usize;
    }
    if let Some(mut t) = s.table("tls") {
        let (mut cert, mut key) = (PathBuf::new(), PathBuf::new());
        t.path("cert", &mut cert);
        t.path("key", &mut key);
        for (name, path) in [("cert", &cert), ("key", &key)] {
            if path.as_os_str().is_empty() {
                t.problem(name, "is required (a PEM file)");
            }
        }
        c.tls = Some(crate::config::TlsConfig { cert, key });
    }
}

pub(super) fn segment(s: &mut Section<'_, '_>, cfg: &mut Config) {
    let c = &mut cfg.segment;
    if let Some(v) = s.get("write_keys", parse_string_list) {
        c.write_keys = v.into_iter().map(Secret::new).collect();
    }
    s.set("cors_origins", &mut c.cors_origins, parse_string_list);
    c.webhook_secret = s
        .get("webhook_secret", parse_secret)
        .or(c.webhook_secret.take());
    c.webhook_token = non_empty(s.get("webhook_token", parse_secret));
    c.write_key = s.get("write_key", parse_secret).or(c.write_key.take());
    s.set("api_base", &mut c.api_base, parse_url);
    s.set("profile_base", &mut c.profile_base, parse_url);
    s.set("public_api_base", &mut c.public_api_base, parse_url);
    c.profile_space_id = s
        .get("profile_space_id", parse_string)
        .or(c.profile_space_id.take());
    c.profile_token = s
        .get("profile_token", parse_secret)
        .or(c.profile_token.take());
    c.public_api_token = s
        .get("public_api_token", parse_secret)
        .or(c.public_api_token.take());
    s.set("require_approval", &mut c.require_approval, parse_bool);
    if let Some(v) = s.get("batch_size", int(1, 2500)) {
        c.batch_size = v as usize;
    }
    s.set("flush_interval", &mut c.flush_interval, parse_duration);
}

pub(super) fn admin(s: &mut Section<'_, '_>, cfg: &mut Config) {
    cfg.admin.token = non_empty(s.get("token", parse_secret));
    s.set("session_ttl", &mut cfg.admin.session_ttl, parse_duration);
}

pub(super) fn limits(s: &mut Section<'_, '_>, cfg: &mut Config) {
    let c = &mut cfg.limits;
    if let Some(v) = s.get("max_operations", int(1000, i64::MAX)) {
        c.max_operations = v as u64;
    }
    if let Some(v) = s.get("timeout_ms", int(1, 24 * 3600 * 1000)) {
        c.timeout_ms = v as u64;
    }
    for (key, slot, max) in [
        ("max_call_depth", &mut c.max_call_depth, 10_000),
        ("max_string_bytes", &mut c.max_string_bytes, 1 << 30),
        ("max_array_len", &mut c.max_array_len, 100_000_000),
        ("max_map_len", &mut c.max_map_len, 100_000_000),
        ("max_log_lines", &mut c.max_log_lines, 100_000),
        ("max_response_bytes", &mut c.max_response_bytes, 1 << 30),
    ] {
        if let Some(v) = s.get(key, int(1, max)) {
            *slot = v as usize;
        }
    }
}

pub(super) fn retry(s: &mut Section<'_, '_>, cfg: &mut Config) {
    let c = &mut cfg.retry;
    if let Some(v) = s.get("max_attempts", int(1, 1000)) {
        c.max_attempts = v as u32;
    }
    if let Some(v) = s.get("base_ms", int(1, 86_400_000)) {
        c.base_ms = v as u64;
    }
    if let Some(v) = s.get("max_ms", int(1, 7 * 86_400_000)) {
        c.max_ms = v as u64;
    }
}

pub(super) fn retention(s: &mut Section<'_, '_>, cfg: &mut Config) {
    let c = &mut cfg.retention;
    s.set("runs", &mut c.runs, parse_duration);
    s.set("events", &mut c.events, parse_duration);
    s.set("dead_letters", &mut c.dead_letters, parse_duration);
    s.set("approvals", &mut c.approvals, parse_duration);
    s.set("dedup", &mut c.dedup, parse_duration);
}

pub(super) fn store(s: &mut Section<'_, '_>, cfg: &mut Config) {
    s.set("backend", &mut cfg.store, parse_backend);
    s.set("sled_mode", &mut cfg.sled_mode, parse_sled_mode);
}

/// `[nats]`: checked here as far as it can be without a server (URL schemes, the
/// prefix's characters, one way to authenticate); the cluster itself is checked
/// when the daemon connects.
pub(super) fn nats(s: &mut Section<'_, '_>, cfg: &mut Config) {
    use crate::config::{NatsAuth, NatsTls};
    let c = &mut cfg.nats;
    if let Some(servers) = s.get("servers", parse_string_list) {
        let servers: Vec<String> = servers
            .iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        if servers.is_empty() {
            s.problem("servers", "lists no server");
        }
        for url in &servers {
            if let Some((scheme, _)) = url.split_once("://")
                && !matches!(scheme, "nats" | "tls")
            {
                s.problem(
                    "servers",
                    &format!("{url:?}: expected a nats:// or tls:// URL"),
                );
            }
        }
        c.servers = servers;
    }
    if let Some(n) = s.get("replicas", int(1, 5)) {
        c.replicas = n as usize;
    }
    if let Some(prefix) = s.get("prefix", parse_string) {
        if prefix.is_empty()
            || prefix.len() > 32
            || !prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            s.problem(
                "prefix",
                &format!("{prefix:?}: expected 1 to 32 letters, digits, '_' or '-'"),
            );
        } else {
            c.prefix = prefix;
        }
    }
    let mut creds = PathBuf::new();
    s.path("creds", &mut creds);
    let token = non_empty(s.get("token", parse_secret));
    let user = s.get("user", parse_string).filter(|u| !u.is_empty());
    let password = non_empty(s.get("password", parse_secret));
    let ways = [
        !creds.as_os_str().is_empty(),
        token.is_some(),
        user.is_some(),
    ];
    if ways.into_iter().filter(|w| *w).count() > 1 {
        s.problem("token", "creds, token and user/password exclude each other");
    }
    if user.is_some() != password.is_some() {
        s.problem("password", "user and password go together");
    }
    c.auth = match (token, user, password) {
        (Some(t), _, _) => NatsAuth::Token(t),
        (None, Some(user), Some(password)) => NatsAuth::UserPassword { user, password },
        _ if !creds.as_os_str().is_empty() => NatsAuth::Creds(creds),
        _ => NatsAuth::None,
    };
    if let Some(mut t) = s.table("tls") {
        let (mut ca, mut cert, mut key) = (PathBuf::new(), PathBuf::new(), PathBuf::new());
        t.path("ca", &mut ca);
        t.path("cert", &mut cert);
        t.path("key", &mut key);
        if cert.as_os_str().is_empty() != key.as_os_str().is_empty() {
            t.problem("key", "cert and key go together");
        }
        let some = |p: PathBuf| Some(p).filter(|p| !p.as_os_str().is_empty());
        c.tls = Some(NatsTls {
            ca: some(ca),
            cert: some(cert),
            key: some(key),
        });
    }
}

pub(super) fn approvals(s: &mut Section<'_, '_>, cfg: &mut Config) {
    let c = &mut cfg.approvals;
    s.set("slack_connection", &mut c.slack_connection, parse_string);
    c.slack_signing_secret = s.get("slack_signing_secret", parse_secret);
    c.public_url = s.get("public_url", parse_url);
    s.set("default_expires", &mut c.default_expires, parse_duration);
    c.channel = s.get("channel", parse_string);
    if let Some(mut e) = s.table("email") {
        c.email = email(&mut e);
    }
}

/// `[approvals.email]`: `host` and `from` are required; `security` is `starttls`
/// (default, port 587), `tls` (port 465) or `none` (port 25, loopback only:
/// it would send the password and the decision links in the clear).
fn email(s: &mut Section<'_, '_>) -> Option<crate::config::EmailConfig> {
    use crate::config::SmtpSecurity;
    let host = s.get("host", parse_string);
    let from = s.get("from", parse_string);
    let security = s
        .get("security", |v| match v.as_str() {
            Some("starttls") => Ok(SmtpSecurity::StartTls),
            Some("tls") => Ok(SmtpSecurity::Tls),
            Some("none") => Ok(SmtpSecurity::None),
            _ => Err(format!(
                "must be \"starttls\", \"tls\" or \"none\", got {v}"
            )),
        })
        .unwrap_or(SmtpSecurity::StartTls);
    let default_port = match security {
        SmtpSecurity::StartTls => 587,
        SmtpSecurity::Tls => 465,
        SmtpSecurity::None => 25,
    };
    let port = s
        .get("port", int(1, 65_535))
        .map_or(default_port, |p| p as u16);
    let user = non_empty(s.get("user", parse_secret));
    let password = non_empty(s.get("password", parse_secret));
    let mut to = Vec::new();
    s.set("to", &mut to, parse_string_list);
    for (key, value) in [("host", &host), ("from", &from)] {
        if value.as_deref().is_none_or(|v| v.trim().is_empty()) {
            s.problem(key, "is required");
        }
    }
    if let Some(f) = &from
        && f.parse::<lettre::message::Mailbox>().is_err()
    {
        s.problem("from", &format!("{f:?} is not an email address"));
    }
    for a in &to {
        if a.parse::<lettre::Address>().is_err() {
            s.problem("to", &format!("{a:?} is not an email address"));
        }
    }
    if user.is_some() != password.is_some() {
        s.problem("password", "user and password go together");
    }
    let local = host.as_deref().is_some_and(|h| {
        h == "localhost"
            || h.parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    });
    if security == SmtpSecurity::None && !local {
        s.problem(
            "security",
            "\"none\" sends the password and the decision links in the clear: only to a relay on this machine (localhost); use \"starttls\" or \"tls\"",
        );
    }
    Some(crate::config::EmailConfig {
        host: host?,
        port,
        security,
        user,
        password,
        from: from?,
        to,
    })
}

pub(super) fn env(s: &mut Section<'_, '_>, cfg: &mut Config) {
    s.set("allow", &mut cfg.env_allow, parse_string_list);
}

/// `[sources.NAME]`: the settings of a webhook source.
pub(super) fn source(s: &mut Section<'_, '_>, cfg: &mut Config, name: &str) {
    let mut c = SourceConfig {
        secret: non_empty(s.get("secret", parse_secret)),
        rate_limit: s.get("rate_limit", parse_positive_float),
        ..SourceConfig::default()
    };
    if let Some(v) = s.get("max_body_bytes", int(1, 1 << 30)) {
        c.max_body_bytes = v as usize;
    }
    cfg.sources.insert(name.to_owned(), c);
}

/// `[connections.NAME]`: a named outbound connection.
pub(super) fn connection(s: &mut Section<'_, '_>, cfg: &mut Config, name: &str) {
    let mut c = ConnectionConfig::default();
    match s.get("base_url", parse_url) {
        Some(v) => c.base_url = v,
        None if !s.has("base_url") => s.problem(
            "base_url",
            "is required (the API's root URL, e.g. https://slack.com/api)",
        ),
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
    s.set("headers", &mut c.headers, parse_headers);
    c.timeout_ms = s.get("timeout_ms", int(1, 3_600_000)).map(|v| v as u64);
    c.rate_limit = s.get("rate_limit", parse_positive_float);
    c.max_concurrency = s.get("max_concurrency", int(1, 10_000)).map(|v| v as usize);
    c.max_attempts = s.get("max_attempts", int(1, 20)).map(|v| v as u32);
    s.set(
        "require_approval",
        &mut c.require_approval,
        parse_call_patterns,
    );
    s.set("allow", &mut c.allow, parse_call_patterns);
    c.max_response_bytes = s
        .get("max_response_bytes", int(1, 1 << 30))
        .map(|v| v as usize);
    s.set("on_unknown", &mut c.on_unknown, parse_on_unknown);
    cfg.connections.insert(name.to_owned(), c);
}

/// `[clients.NAME]`: a client's token, tools and scopes.
pub(super) fn client(s: &mut Section<'_, '_>, cfg: &mut Config, name: &str) {
    let token = non_empty(s.get("token", parse_secret));
    if token.is_none() && !s.has("token") {
        s.problem(
            "token",
            "is required (the client's bearer token, e.g. \"${MCP_AGENT_TOKEN}\")",
        );
    } else if token.is_none() {
        s.problem("token", "must not be empty");
    }
    let mut c = ClientConfig {
        token: token.unwrap_or_else(|| Secret::new("")),
        tools: Vec::new(),
        scopes: Vec::new(),
    };
    s.set("tools", &mut c.tools, parse_string_list);
    s.set("scopes", &mut c.scopes, parse_scopes);
    cfg.clients.insert(name.to_owned(), c);
}

/// Every token names one caller: a client's token may be neither another client's
/// nor `admin.token`.
pub(super) fn check_client_tokens(r: &mut Reader<'_>, cfg: &Config) {
    let mut seen: Vec<(&str, &str)> = Vec::new();
    if let Some(t) = &cfg.admin.token {
        seen.push(("admin.token", t.expose()));
    }
    for (name, c) in &cfg.clients {
        if c.token.expose().is_empty() {
            continue;
        }
        if let Some((other, _)) = seen.iter().find(|(_, t)| *t == c.token.expose()) {
            r.problem(
                &format!("clients.{name}.token"),
                &format!("is the same as {other}: every client needs its own token"),
            );
        }
        seen.push((name, c.token.expose()));
    }
}

/// `[telemetry]`: `otlp_endpoint` (an http(s) URL) and `service_name`.
pub(super) fn telemetry(s: &mut Section<'_, '_>, cfg: &mut Config) {
    let c = &mut cfg.telemetry;
    c.otlp_endpoint = s.get("otlp_endpoint", parse_url);
    s.set("service_name", &mut c.service_name, parse_string);
}

/// `[agents]`: only `[agents.profile]` so far.
pub(super) fn agents(s: &mut Section<'_, '_>, cfg: &mut Config) {
    let Some(mut p) = s.table("profile") else {
        return;
    };
    let mut c = crate::config::ProfileToolsConfig::default();
    p.set("traits", &mut c.traits, parse_string_list);
    p.set(
        "event_properties",
        &mut c.event_properties,
        parse_string_list,
    );
    p.set("audiences", &mut c.audiences, parse_string_list);
    p.set("external_ids", &mut c.external_ids, parse_string_list);
    cfg.profile_tools = Some(c);
}
