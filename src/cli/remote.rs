//! Commands that talk to a running daemon over its admin API (`spur approvals …`,
//! `spur state …`): the address comes from `server.listen` (or `--url`), the token
//! from `admin.token` or `<data_dir>/admin-token`.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use serde_json::Value;

use super::{ApprovalsCmd, Decision, StateCmd};
use crate::config::Config;

/// The daemon's base URL: `--url`, else `http://<server.listen>`.
fn daemon_url(cfg: &Config, url: Option<&str>) -> String {
    url.map_or_else(
        || format!("http://{}", cfg.server.listen),
        |u| u.trim_end_matches('/').to_owned(),
    )
}

/// The owner's token: `admin.token`, else the one the daemon generated.
fn owner_token(cfg: &Config) -> anyhow::Result<String> {
    if let Some(t) = &cfg.admin.token {
        return Ok(t.expose().to_owned());
    }
    let path = cfg.server.data_dir.join("admin-token");
    Ok(std::fs::read_to_string(&path)
        .with_context(|| {
            format!(
                "reading the admin token from {} (set admin.token, or start the daemon once)",
                path.display()
            )
        })?
        .trim()
        .to_owned())
}

/// Where `spur mcp` relays to when a daemon holds the data dir.
pub(super) fn daemon_mcp(cfg: &Config, url: Option<&str>) -> crate::mcp::stdio::Daemon {
    crate::mcp::stdio::Daemon {
        url: format!("{}/mcp", daemon_url(cfg, url)),
        token: owner_token(cfg).ok(),
    }
}

/// An admin API client for one daemon.
pub(super) struct Remote {
    base: String,
    token: String,
    client: reqwest::Client,
}

impl Remote {
    /// # Errors
    /// When no admin token can be found.
    pub(super) fn new(cfg: &Config, url: Option<&str>) -> anyhow::Result<Self> {
        crate::connectors::http::install_crypto_provider();
        let base = daemon_url(cfg, url);
        let token = owner_token(cfg)?;
        Ok(Self {
            base,
            token,
            client: reqwest::Client::new(),
        })
    }

    /// Sends a request; the JSON answer, or the API's error message.
    ///
    /// # Errors
    /// On connection failure or an error answer.
    pub(super) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.with_context(|| {
            format!(
                "reaching the daemon at {} (is `spur serve` running?)",
                self.base
            )
        })?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let msg = body["error"].as_str().unwrap_or("request failed");
            bail!("{msg} ({status})");
        }
        Ok(body)
    }
}

/// `spur approvals list|approve|reject`.
pub(super) async fn approvals(
    cfg: &Config,
    url: Option<&str>,
    action: ApprovalsCmd,
) -> anyhow::Result<ExitCode> {
    let remote = Remote::new(cfg, url)?;
    let mut out = std::io::stdout().lock();
    match action {
        ApprovalsCmd::List { status } => {
            let body = remote
                .call(
                    reqwest::Method::GET,
                    &format!("/api/approvals?status={status}"),
                    None,
                )
                .await?;
            let list = body["approvals"].as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                writeln!(out, "no {status} approvals")?;
            }
            for a in list {
                let who = a["decided_by"]
                    .as_str()
                    .map(|b| format!(" by {b}"))
                    .unwrap_or_default();
                writeln!(
                    out,
                    "{}  {}{who}  {}  {}  ({} {})",
                    a["id"].as_str().unwrap_or_default(),
                    a["status"].as_str().unwrap_or_default(),
                    a["created_at"].as_str().unwrap_or_default(),
                    a["title"].as_str().unwrap_or_default(),
                    a["script"].as_str().unwrap_or_default(),
                    a["handler"].as_str().unwrap_or_default(),
                )?;
            }
        }

        ApprovalsCmd::Approve(d) => decide(&remote, &mut out, "approve", d).await?,
        ApprovalsCmd::Reject(d) => decide(&remote, &mut out, "reject", d).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `spur state get|set|del|list`.
pub(super) async fn state(
    cfg: &Config,
    url: Option<&str>,
    action: StateCmd,
) -> anyhow::Result<ExitCode> {
    let remote = Remote::new(cfg, url)?;
    let enc = |s: &str| {
        form_urlencoded::byte_serialize(s.as_bytes())
            .collect::<String>()
            .replace('+', "%20")
    };
    let mut out = std::io::stdout().lock();
    match action {
        StateCmd::Get { script, key } => {
            let path = format!("/api/state/{}/{}", enc(&script), enc(&key));
            let v = remote.call(reqwest::Method::GET, &path, None).await?;
            writeln!(out, "{}", serde_json::to_string_pretty(&v["value"])?)?;
        }
        StateCmd::Set {
            script,
            key,
            value,
            ttl,
        } => {
            let value: serde_json::Value =
                serde_json::from_str(&value).unwrap_or(serde_json::Value::String(value));
            let path = format!("/api/state/{}/{}", enc(&script), enc(&key));
            let body = serde_json::json!({ "value": value, "ttl": ttl });
            let v = remote.call(reqwest::Method::PUT, &path, Some(body)).await?;
            writeln!(out, "{key} = {}", v["value"])?;
        }
        StateCmd::Del { script, key } => {
            let path = format!("/api/state/{}/{}", enc(&script), enc(&key));
            let v = remote.call(reqwest::Method::DELETE, &path, None).await?;
            writeln!(
                out,
                "{}",
                if v["deleted"] == true {
                    "deleted"
                } else {
                    "not found"
                }
            )?;
        }
        StateCmd::List { script, prefix } => {
            let path = format!("/api/state/{}?prefix={}", enc(&script), enc(&prefix));
            let v = remote.call(reqwest::Method::GET, &path, None).await?;
            for e in v["entries"].as_array().cloned().unwrap_or_default() {
                writeln!(
                    out,
                    "{} = {}",
                    e["key"].as_str().unwrap_or_default(),
                    e["value"]
                )?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn decide(
    remote: &Remote,
    out: &mut impl Write,
    verb: &str,
    d: Decision,
) -> anyhow::Result<()> {
    let by =
        d.by.or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "cli".into());
    let body = serde_json::json!({ "by": by, "comment": d.comment });
    let r = remote
        .call(
            reqwest::Method::POST,
            &format!("/api/approvals/{}/{verb}", d.id),
            Some(body),
        )
        .await?;
    writeln!(
        out,
        "{} {} by {}",
        r["approval"]["id"].as_str().unwrap_or(&d.id),
        r["approval"]["status"].as_str().unwrap_or(verb),
        r["approval"]["decided_by"].as_str().unwrap_or(&by)
    )?;
    Ok(())
}
