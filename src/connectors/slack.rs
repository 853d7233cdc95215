//! Slack's Web API as approvals use it: post a message, update it, answer an
//! interaction's `response_url`. Calls go through a named connection (its bot token
//! injected by `http`); a Slack answer of `{"ok": false}` is a rejection even when
//! the status is 200.

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::ConnectorError;
use super::http::{Body, Destination, HttpClient, OutboundRequest};

/// Where a posted message is, to update it later.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SlackMessage {
    pub channel: String,
    pub ts: String,
}

/// A Slack client on one connection; cheap to clone.
#[derive(Clone)]
pub(crate) struct Slack {
    http: HttpClient,
    connection: String,
}

impl Slack {
    pub(crate) fn new(http: HttpClient, connection: impl Into<String>) -> Self {
        Self {
            http,
            connection: connection.into(),
        }
    }

    /// `chat.postMessage` of `message` (Block Kit) to `channel`.
    ///
    /// # Errors
    /// When Slack refuses or cannot be reached.
    pub(crate) async fn post_message(
        &self,
        channel: &str,
        mut message: Value,
    ) -> Result<SlackMessage, ConnectorError> {
        message["channel"] = json!(channel);
        let j = self.call("/chat.postMessage", message).await?;
        Ok(SlackMessage {
            channel: j["channel"].as_str().unwrap_or(channel).to_owned(),
            ts: j["ts"].as_str().unwrap_or_default().to_owned(),
        })
    }

    /// `chat.update`: replaces the message at `at` with `message`.
    ///
    /// # Errors
    /// When Slack refuses or cannot be reached.
    pub(crate) async fn update_message(
        &self,
        at: &SlackMessage,
        mut message: Value,
    ) -> Result<(), ConnectorError> {
        message["channel"] = json!(at.channel);
        message["ts"] = json!(at.ts);
        self.call("/chat.update", message).await.map(|_| ())
    }

    /// Answers an interaction through its `response_url` (no token: the URL is the
    /// credential).
    ///
    /// # Errors
    /// When Slack refuses or cannot be reached.
    pub(crate) async fn respond(
        &self,
        response_url: String,
        message: Value,
    ) -> Result<(), ConnectorError> {
        post_json(&self.http, Destination::Url(response_url), message)
            .await
            .map(|_| ())
    }

    async fn call(&self, method: &str, body: Value) -> Result<Value, ConnectorError> {
        let dest = Destination::Connection {
            name: self.connection.clone(),
            path: method.into(),
        };
        post_json(&self.http, dest, body).await
    }
}

async fn post_json(
    http: &HttpClient,
    dest: Destination,
    body: Value,
) -> Result<Value, ConnectorError> {
    let mut req = OutboundRequest::new(Method::POST, dest);
    req.body = Body::Json(body);
    let resp = http.send(req, None).await.result?;
    let j = resp.json.clone().unwrap_or(Value::Null);
    if !resp.ok() || j.get("ok") == Some(&Value::Bool(false)) {
        let err = j
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or(&resp.body)
            .to_owned();
        return Err(ConnectorError::Rejected(format!(
            "slack: {err} ({})",
            resp.status
        )));
    }
    Ok(j)
}
