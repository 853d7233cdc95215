//! Commands that talk to a running daemon over its admin API (`spur approvals …`,
//! `spur state …`): the address comes from `server.listen` (or `--url`), the token
//! from `admin.token` or `<data_dir>/admin-token`.

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::config::Config;

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
        let base = url.map_or_else(
            || format!("http://{}", cfg.server.listen),
            |u| u.trim_end_matches('/').to_owned(),
        );
        let token = if let Some(t) = &cfg.admin.token {
            t.expose().to_owned()
        } else {
            let path = cfg.server.data_dir.join("admin-token");
            std::fs::read_to_string(&path)
                .with_context(|| {
                    format!(
                        "reading the admin token from {} (set admin.token, or start the daemon once)",
                        path.display()
                    )
                })?
                .trim()
                .to_owned()
        };
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
