//! Approvals in Slack: a Block Kit message with Approve/Reject buttons, Slack's
//! interactivity endpoint (`POST /webhooks/slack/interactivity`, request signature
//! checked in constant time, timestamps older than 5 minutes refused), and updating
//! the message once decided.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use super::{Approval, Approvals, DecideError, Status};
use crate::api_error::ApiError;
use crate::connectors::ConnectorError;
use crate::connectors::slack::{Slack, SlackMessage};

/// Oldest accepted request timestamp, in seconds (Slack's guidance).
const MAX_SKEW_S: i64 = crate::signature::DEFAULT_TOLERANCE_S;

/// The message asking for a decision.
pub(crate) fn message(a: &Approval, public_url: Option<&str>) -> Value {
    let mut text = format!("*{}*", a.title);
    if let Some(b) = &a.body {
        text.push('\n');
        text.push_str(b);
    }
    let mut context = format!("{} · {}", a.script, a.handler);
    if let Some(e) = &a.expires_at {
        context.push_str(&format!(" · expires {e}"));
    }
    if !a.approvers.is_empty() {
        context.push_str(&format!(" · approvers: {}", a.approvers.join(", ")));
    }
    if let Some(u) = public_url {
        context.push_str(&format!(" · <{u}/approvals|all approvals>"));
    }
    let button = |action: &str, label: &str, style: &str| {
        json!({
            "type": "button",
            "action_id": action,
            "style": style,
            "text": {"type": "plain_text", "text": label},
            "value": format!("{}:{action}", a.id),
        })
    };
    json!({
        "text": format!("Approval needed: {}", a.title),
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": text}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]},
            {"type": "actions", "block_id": "spur_approval", "elements": [
                button("approve", "Approve", "primary"),
                button("reject", "Reject", "danger"),
            ]},
        ],
    })
}

/// The message once decided (buttons gone).
fn decided(a: &Approval) -> Value {
    let who = a.decided_by.as_deref().unwrap_or("nobody (expired)");
    let verdict = match a.status {
        Status::Approved => format!("✅ Approved by {who}"),
        Status::Rejected => format!("❌ Rejected by {who}"),
        Status::Expired if a.approve_on_expiry => "⌛ Expired (approved on expiry)".to_owned(),
        Status::Expired => "⌛ Expired (rejected on expiry)".to_owned(),
        Status::Pending => "Pending".to_owned(),
    };
    let mut text = format!("*{}*\n{verdict}", a.title);
    if let Some(c) = &a.comment {
        text.push_str(&format!(": {c}"));
    }
    json!({
        "text": format!("{}: {verdict}", a.title),
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
    })
}

/// Posts the request to its channel; returns where the message is.
///
/// # Errors
/// When Slack refuses or cannot be reached.
pub(crate) async fn notify(
    slack: &Slack,
    a: &Approval,
    public_url: Option<&str>,
) -> Result<SlackMessage, ConnectorError> {
    let channel = a.channel.as_deref().unwrap_or_default();
    slack.post_message(channel, message(a, public_url)).await
}

/// Replaces the buttons with the decision.
///
/// # Errors
/// When Slack refuses or cannot be reached.
pub(crate) async fn update(
    slack: &Slack,
    msg: &SlackMessage,
    a: &Approval,
) -> Result<(), ConnectorError> {
    slack.update_message(msg, decided(a)).await
}

/// `POST /webhooks/slack/interactivity`.
pub(crate) fn router(approvals: Approvals, audit: crate::audit::Audit) -> Router {
    Router::new()
        .route("/webhooks/slack/interactivity", post(interactivity))
        .with_state((approvals, audit))
}

/// Checks Slack's `v0` signature over the exact body bytes (the same check as a
/// `verify: "slack"` webhook source).
fn verify(secret: &[u8], headers: &HeaderMap, body: &[u8], now: i64) -> Result<(), ApiError> {
    crate::signature::Verify::Slack
        .check(secret, headers, body, now, MAX_SKEW_S)
        .map_err(ApiError::Unauthorized)
}

async fn interactivity(
    State((approvals, audit)): State<(Approvals, crate::audit::Audit)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(secret) = approvals.config().slack_signing_secret.clone() else {
        return ApiError::Unauthorized(
            "Slack buttons are disabled: set approvals.slack_signing_secret".into(),
        )
        .into_response();
    };
    if let Err(e) = verify(
        secret.expose().as_bytes(),
        &headers,
        &body,
        chrono::Utc::now().timestamp(),
    ) {
        return e.into_response();
    }
    let payload: Option<Value> = form_urlencoded::parse(&body)
        .find(|(k, _)| k == "payload")
        .and_then(|(_, v)| serde_json::from_str(&v).ok());
    let Some(payload) = payload else {
        return ApiError::bad_field(
            "invalid_payload",
            "payload",
            "form field `payload` must hold JSON",
        )
        .into_response();
    };
    let value = payload
        .pointer("/actions/0/value")
        .and_then(Value::as_str)
        .unwrap_or("");
    let Some((id, action)) = value.rsplit_once(':') else {
        return ApiError::bad("invalid_action", "the button carries no approval").into_response();
    };
    let approve = match action {
        "approve" => true,
        "reject" => false,
        other => {
            return ApiError::bad(
                "invalid_action",
                format!("unknown action {}", crate::event::quote(other)),
            )
            .into_response();
        }
    };
    let user = &payload["user"];
    let identities: Vec<String> = ["username", "name", "id"]
        .iter()
        .filter_map(|k| user.get(*k).and_then(Value::as_str).map(str::to_owned))
        .collect();
    let who = match approvals.store.get(id) {
        Ok(Some(a)) => identities.iter().find(|i| a.allows(i)).cloned(),
        _ => identities.first().cloned(),
    };
    let response_url = payload
        .get("response_url")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let reply = match who {
        None => json!({"response_type": "ephemeral", "replace_original": false,
                       "text": "You are not one of the approvers of this request."}),
        Some(by) => match approvals.decide(id, approve, &by, None).await {
            Ok(a) => {
                let action = if approve {
                    "approvals.approve"
                } else {
                    "approvals.reject"
                };
                let entry = crate::audit::Entry::new(&format!("slack:{by}"), action, id)
                    .detail(json!({"channel": "slack"}));
                if let Err(e) = audit.append(entry).await {
                    tracing::error!(error = %e, "Writing an audit entry failed.");
                }
                let mut m = decided(&a);
                m["replace_original"] = json!(true);
                m
            }
            Err(DecideError::AlreadyDecided { status, .. }) => json!({"response_type": "ephemeral",
                "replace_original": false, "text": format!("This request was already {status:?}.").to_lowercase()}),
            Err(e) => {
                json!({"response_type": "ephemeral", "replace_original": false, "text": e.to_string()})
            }
        },
    };
    if let Some(url) = response_url {
        let slack = approvals.slack().clone();
        tokio::spawn(async move {
            if let Err(e) = slack.respond(url, reply).await {
                tracing::warn!(error = %e, "Answering Slack's response_url failed.");
            }
        });
    }
    StatusCode::OK.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::{Hmac, Mac};
    use sha2::Sha256;

    fn sign(secret: &str, ts: &str, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("v0:{ts}:").as_bytes());
        mac.update(body);
        format!("v0={}", hex::encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn signature_checks_body_secret_and_age() {
        let body = b"payload=%7B%7D";
        let mut h = HeaderMap::new();
        h.insert("x-slack-request-timestamp", "1000".parse().unwrap());
        h.insert(
            "x-slack-signature",
            sign("s", "1000", body).parse().unwrap(),
        );
        assert!(verify(b"s", &h, body, 1100).is_ok());
        assert!(verify(b"other", &h, body, 1100).is_err());
        assert!(verify(b"s", &h, b"payload=%7B%22x%22%7D", 1100).is_err());
        assert!(
            verify(b"s", &h, body, 1000 + 301).is_err(),
            "too old even when the signature is valid"
        );
        assert!(verify(b"s", &HeaderMap::new(), body, 1000).is_err());
    }

    #[test]
    fn extreme_timestamps_are_refused_without_overflow() {
        let body = b"payload=%7B%7D";
        for ts in ["-9223372036854775808", "9223372036854775807"] {
            let mut h = HeaderMap::new();
            h.insert("x-slack-request-timestamp", ts.parse().unwrap());
            h.insert("x-slack-signature", sign("s", ts, body).parse().unwrap());
            for now in [0, 1000, 1_800_000_000] {
                assert!(verify(b"s", &h, body, now).is_err(), "{ts} at {now}");
            }
        }
    }
}
