//! The operator console at `/ui`: one page and its script and style, embedded in
//! the binary, that call the admin API through a session cookie (`session.rs`).
//!
//! - `GET /ui/` — the page (it shows the login form until there is a session);
//! - `GET /ui/assets/{file}` — its script and style;
//! - `POST /ui/login` `{"token"}` — opens a session (audited), sets the cookie;
//! - `GET /ui/session` — `{name, scopes, csrf, expires_at}` of the current session;
//! - `POST /ui/logout` — closes it (with the CSRF token).
//!
//! Every answer under `/ui` carries a strict Content-Security-Policy (scripts and
//! styles from the daemon only, no framing), so data shown on a page can never
//! run as code even if it slipped past the page's own escaping.

use axum::extract::{Path, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AdminState;
use super::session::CSRF_HEADER;
use crate::api_error::ApiError;
use crate::audit::{Entry, Outcome};
use crate::config::Secret;

const PAGE: &str = include_str!("assets/console/index.html");
const SCRIPT: &str = include_str!("assets/console/app.js");
const STYLE: &str = include_str!("assets/console/app.css");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

pub(super) fn router() -> Router<AdminState> {
    Router::new()
        .route("/ui", get(|| async { redirect("/ui/") }))
        .route(
            "/ui/",
            get(|| async { asset("text/html; charset=utf-8", PAGE) }),
        )
        .route("/ui/assets/{file}", get(assets))
        .route("/ui/login", post(login))
        .route("/ui/session", get(session))
        .route("/ui/logout", post(logout))
        // The page the approvals links of earlier versions point to.
        .route("/approvals", get(|| async { redirect("/ui/#/approvals") }))
        .layer(middleware::map_response(security_headers))
}

fn redirect(to: &'static str) -> Response {
    (StatusCode::SEE_OTHER, [(LOCATION, to)]).into_response()
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(CONTENT_TYPE, content_type)], body).into_response()
}

async fn assets(Path(file): Path<String>) -> Response {
    match file.as_str() {
        "app.js" => asset("text/javascript; charset=utf-8", SCRIPT),
        "app.css" => asset("text/css; charset=utf-8", STYLE),
        _ => ApiError::NotFound(format!("no asset {file:?}")).into_response(),
    }
}

async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    for (name, value) in [
        ("content-security-policy", CSP),
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    token: String,
}

/// What the page knows of its session.
fn describe(principal: &crate::auth::Principal, csrf: &str, expires_ms: i64) -> Value {
    let scopes: Vec<&str> = principal.scopes().iter().map(|s| s.as_str()).collect();
    json!({
        "name": principal.name,
        "scopes": scopes,
        "csrf": csrf,
        "expires_at": chrono::DateTime::from_timestamp_millis(expires_ms)
            .map(crate::event::format_time),
    })
}

/// `POST /ui/login` `{"token"}`: a JSON body only, so a form on another site
/// cannot log a browser in (it cannot send JSON without CORS, which is off).
async fn login(State(st): State<AdminState>, Json(body): Json<Login>) -> Response {
    let principal = match st.callers.authenticate_token(body.token.trim()) {
        Ok(p) => p,
        Err(failure) => {
            st.audit.append_soon(
                Entry::new("-", "auth.failed", "POST /ui/login")
                    .outcome(Outcome::Refused)
                    .detail(failure.message()),
            );
            return ApiError::Unauthorized(failure.message().into()).into_response();
        }
    };
    let (id, session) = st.sessions.open(Secret::new(body.token.trim()));
    let entry = Entry::new(&principal.name, "console.login", "/ui").outcome(Outcome::Ok);
    if let Err(e) = st.audit.append(entry).await {
        st.sessions.close(&id);
        return ApiError::from(e).into_response();
    }
    let cookie = st.sessions.cookie(&id);
    (
        [(SET_COOKIE, cookie)],
        Json(describe(&principal, &session.csrf, session.expires_ms)),
    )
        .into_response()
}

/// `GET /ui/session`: 401 when there is none (or its token no longer works).
async fn session(State(st): State<AdminState>, headers: HeaderMap) -> Response {
    let Some((_, session)) = st.sessions.of_request(&headers) else {
        return ApiError::Unauthorized("not logged in".into()).into_response();
    };
    match st.callers.authenticate_token(session.token.expose()) {
        Ok(p) => Json(describe(&p, &session.csrf, session.expires_ms)).into_response(),
        Err(f) => ApiError::Unauthorized(f.message().into()).into_response(),
    }
}

/// `POST /ui/logout`: ends the session; needs its CSRF token, so another site
/// cannot log a person out either.
async fn logout(State(st): State<AdminState>, headers: HeaderMap) -> Response {
    let cleared = [(SET_COOKIE, st.sessions.cleared_cookie())];
    let Some((id, session)) = st.sessions.of_request(&headers) else {
        return (cleared, StatusCode::NO_CONTENT).into_response();
    };
    let given = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    if !session.csrf_matches(given) {
        return ApiError::Forbidden(format!("logging out needs the CSRF token in {CSRF_HEADER}"))
            .into_response();
    }
    st.sessions.close(&id);
    let name = st
        .callers
        .authenticate_token(session.token.expose())
        .map_or_else(|_| "-".to_owned(), |p| p.name);
    st.audit
        .append_soon(Entry::new(&name, "console.logout", "/ui").outcome(Outcome::Ok));
    (cleared, StatusCode::NO_CONTENT).into_response()
}
