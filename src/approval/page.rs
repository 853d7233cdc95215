//! The pages behind signed decision links (`link.rs`):
//! `GET /approvals/link/{token}` shows the request and a confirmation form —
//! never deciding, since mail scanners and link previews open links —, and
//! `POST /approvals/link/{token}` (the form, with an optional `comment`) decides
//! as the person the link was signed for. Decisions are audited.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Form, Router};
use serde::Deserialize;

use super::link::{Claim, Links};
use super::{Approvals, DecideError, Status};
use crate::audit::{Audit, Entry, Outcome};
use crate::clock::SharedClock;

/// What the pages need.
#[derive(Clone)]
pub(crate) struct LinkPages {
    pub approvals: Approvals,
    pub links: Arc<Links>,
    pub audit: Audit,
    pub clock: SharedClock,
}

pub(crate) fn router(pages: LinkPages) -> Router {
    Router::new()
        .route("/approvals/link/{token}", get(confirm).post(decide))
        .with_state(pages)
}

/// `s` with HTML's special characters escaped.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A whole page around `body` (already escaped HTML).
fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · spur</title><link rel=\"stylesheet\" href=\"/ui/assets/app.css\"></head>\
         <body><main><section class=\"login\" id=\"decision\"><h1>{}</h1>{body}</section></main></body></html>",
        esc(title),
        esc(title)
    );
    let mut resp = (status, html).into_response();
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    resp
}

fn refused(status: StatusCode, message: &str) -> Response {
    page(
        status,
        "This link cannot be used",
        &format!("<p class=\"error\" id=\"refused\">{}</p>", esc(message)),
    )
}

fn verb(approve: bool) -> &'static str {
    if approve { "Approve" } else { "Reject" }
}

/// The claim of `token` and its request, still pending; or why not (the status
/// and message of the refusal page).
fn check(p: &LinkPages, token: &str) -> Result<(Claim, super::Approval), (StatusCode, String)> {
    let claim = p
        .links
        .verify(token, p.clock.now_ms())
        .map_err(|e| (StatusCode::GONE, e.to_string()))?;
    let a = match p.approvals.store.get(&claim.approval) {
        Ok(Some(a)) => a,
        Ok(None) => return Err((StatusCode::GONE, "this request no longer exists".into())),
        Err(e) => {
            tracing::error!(error = %e, "Reading an approval failed.");
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "spur cannot read the request right now; try again".into(),
            ));
        }
    };
    if a.status != Status::Pending {
        let by = a.decided_by.as_deref().unwrap_or("expiry");
        return Err((
            StatusCode::CONFLICT,
            format!("this request is already {:?} (by {by})", a.status).to_lowercase(),
        ));
    }
    Ok((claim, a))
}

/// `GET`: the request and a form to confirm; decides nothing.
async fn confirm(State(p): State<LinkPages>, Path(token): Path<String>) -> Response {
    let (claim, a) = match check(&p, &token) {
        Ok(x) => x,
        Err((status, why)) => return refused(status, &why),
    };
    let mut body = String::new();
    if let Some(b) = &a.body {
        body.push_str(&format!("<p>{}</p>", esc(b)));
    }
    if !a.data.is_null() && a.data != serde_json::json!({}) {
        let data = serde_json::to_string_pretty(&a.data).unwrap_or_default();
        body.push_str(&format!("<pre>{}</pre>", esc(&data)));
    }
    let verb = verb(claim.approve);
    body.push_str(&format!(
        "<p class=\"muted\">Asked by {} · {}. You decide as <strong>{}</strong>.</p>\
         <form method=\"post\" id=\"confirm\"><label for=\"comment\">Comment (optional)</label>\
         <textarea id=\"comment\" name=\"comment\"></textarea>\
         <button type=\"submit\" class=\"{}\">{verb}</button></form>",
        esc(&a.script),
        esc(&a.handler),
        esc(&claim.by),
        if claim.approve { "primary" } else { "danger" },
    ));
    page(StatusCode::OK, &format!("{verb}: {}", a.title), &body)
}

#[derive(Deserialize)]
struct Confirmed {
    #[serde(default)]
    comment: String,
}

/// `POST`: decides as the link's person, once.
async fn decide(
    State(p): State<LinkPages>,
    Path(token): Path<String>,
    Form(form): Form<Confirmed>,
) -> Response {
    let (claim, _) = match check(&p, &token) {
        Ok(x) => x,
        Err((status, why)) => return refused(status, &why),
    };
    let comment = Some(form.comment.trim()).filter(|c| !c.is_empty());
    let action = if claim.approve {
        "approvals.approve"
    } else {
        "approvals.reject"
    };
    let target = format!("/api/approvals/{}", claim.approval);
    match p
        .approvals
        .decide(&claim.approval, claim.approve, &claim.by, comment)
        .await
    {
        Ok(a) => {
            let entry = Entry::new(&claim.by, action, &target)
                .outcome(Outcome::Ok)
                .detail(serde_json::json!({ "via": "link" }));
            if let Err(e) = p.audit.append(entry).await {
                tracing::error!(error = %e, "Auditing a link decision failed.");
            }
            let done = if claim.approve {
                "Approved"
            } else {
                "Rejected"
            };
            page(
                StatusCode::OK,
                done,
                &format!(
                    "<p id=\"done\">{} by {}. The run that asked goes on.</p>",
                    esc(&a.title),
                    esc(&claim.by)
                ),
            )
        }
        Err(e) => {
            let status = match &e {
                DecideError::NotAllowed { .. } => StatusCode::FORBIDDEN,
                DecideError::AlreadyDecided { .. } => StatusCode::CONFLICT,
                DecideError::NotFound(_) => StatusCode::GONE,
                DecideError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            };
            p.audit.append_soon(
                Entry::new(&claim.by, action, &target)
                    .outcome(Outcome::Refused)
                    .detail(e.to_string()),
            );
            refused(status, &e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn html_is_escaped() {
        assert_eq!(
            super::esc(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
