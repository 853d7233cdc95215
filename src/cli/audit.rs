//! `spur audit`: the audit log, from the data dir when no daemon holds it, else
//! from the running daemon's `GET /api/audit`. One line per entry, or JSON lines
//! with `--json` (an export a SIEM reads).

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::Value;

use super::remote::Remote;
use crate::audit::{AuditFilter, Entry};
use crate::config::Config;

/// What `spur audit` was asked for.
pub(super) struct Query<'a> {
    pub since: &'a str,
    pub actor: Option<&'a str>,
    pub action: Option<&'a str>,
    pub limit: usize,
    pub json: bool,
    pub url: Option<&'a str>,
}

pub(super) fn audit(cfg: &Config, q: &Query<'_>) -> anyhow::Result<ExitCode> {
    let window = crate::duration::parse(q.since)
        .map_err(|e| anyhow::anyhow!("--since {:?}: {e}", q.since))?;
    let entries = match (q.url, crate::store::Store::open(&cfg.server.data_dir)) {
        (None, Ok(store)) => {
            let filter = AuditFilter {
                since_ms: crate::store::now_ms().saturating_sub(crate::duration::as_ms(window)),
                actor: q.actor.map(str::to_owned),
                action: q.action.map(str::to_owned),
            };
            let log = crate::audit::SledAudit::open(&store)?;
            log.list(&filter, q.limit)?
        }
        _ => remote_entries(cfg, q)?,
    };
    let mut out = std::io::stdout().lock();
    for e in &entries {
        if q.json {
            writeln!(out, "{}", serde_json::to_string(e)?)?;
        } else {
            let detail = match &e.detail {
                Value::Null => String::new(),
                Value::String(s) => format!("  {s}"),
                other => format!("  {other}"),
            };
            writeln!(
                out,
                "{}  {}  {}  {}  {:?}{detail}",
                e.at, e.actor, e.action, e.target, e.outcome
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn remote_entries(cfg: &Config, q: &Query<'_>) -> anyhow::Result<Vec<Entry>> {
    let rt = super::runtime()?;
    let remote = Remote::new(cfg, q.url)?;
    let mut path = format!("/api/audit?since={}&limit={}", q.since, q.limit);
    for (k, v) in [("actor", q.actor), ("action", q.action)] {
        if let Some(v) = v {
            let v: String = form_urlencoded::byte_serialize(v.as_bytes()).collect();
            path.push_str(&format!("&{k}={v}"));
        }
    }
    let body = rt.block_on(remote.call(reqwest::Method::GET, &path, None))?;
    serde_json::from_value(body["entries"].clone()).context("reading the daemon's audit entries")
}
