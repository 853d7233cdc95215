//! `on_approval(|req| …)`: a script's own channel for approval requests. When a
//! request is created, each `on_approval` handler gets a durable run (trigger
//! `approval`) with the request as a map and its decision links, so a team can
//! post it to Microsoft Teams, open a ticket or page someone through any
//! connection. Slack and email are the built-in channels.

use serde_json::{Value, json};

use super::Approval;
use super::link::Links;

/// Who decides through the shared links of `script`'s channel.
pub(crate) fn channel_identity(script: &str) -> String {
    format!("link:{script}")
}

/// The request as `on_approval` sees it: the request's fields, a link to the
/// console, and `links: #{approve, reject}` that anyone holding them may use
/// (recorded as `link:<script>`). A request that names `approvers` may only be
/// decided by them: its `links` are `()`, and the handler makes personal ones
/// with `approval::links(req.id, who)`.
pub(crate) fn request(a: &Approval, links: &Links, script: &str, now_ms: i64) -> Value {
    let shared = a.approvers.is_empty().then(|| {
        let (approve, reject) = links.pair(a, &channel_identity(script), now_ms);
        json!({ "approve": approve, "reject": reject })
    });
    json!({
        "id": a.id,
        "title": a.title,
        "body": a.body,
        "data": a.data,
        "approvers": a.approvers,
        "kind": a.kind,
        "script": a.script,
        "handler": a.handler,
        "created_at": a.created_at,
        "expires_at": a.expires_at,
        "on_expiry": if a.approve_on_expiry { "approve" } else { "reject" },
        "console": links.console(),
        "links": shared,
    })
}
