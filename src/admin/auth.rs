//! Authentication and scopes for the admin API: the bearer token names a caller
//! (`crate::auth`), and every route needs one scope ([`required_scope`]). A route
//! missing from the table is refused to everyone but the owner, so a new route is
//! never open by accident. The caller travels on in the request's extensions, so
//! handlers record who acted.

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AdminState;
use super::session::CSRF_HEADER;
use crate::api_error::ApiError;
use crate::audit::{Entry, Outcome};
use crate::auth::{AuthFailure, Principal};
use crate::config::Scope;

/// What a route needs and, for a write, the action the audit log names it by.
struct Policy {
    scope: Scope,
    action: Option<&'static str>,
}

/// The policy of a route, by method and route pattern; `None` for a route not
/// listed (only `admin` may use it).
fn policy(method: &Method, route: &str) -> Option<Policy> {
    let read = |scope| {
        Some(Policy {
            scope,
            action: None,
        })
    };
    let write = |scope, action| {
        Some(Policy {
            scope,
            action: Some(action),
        })
    };
    let get = method == Method::GET || method == Method::HEAD;
    match route {
        "/api/runs"
        | "/api/runs/{id}"
        | "/api/runs/{id}/timeline"
        | "/api/dead-letters"
        | "/api/events"
        | "/api/requests"
        | "/api/scripts"
        | "/api/schedules"
        | "/api/store"
        | "/metrics"
        | "/api/metrics/history"
            if get =>
        {
            read(Scope::RunsRead)
        }
        "/api/dead-letters/{id}/replay" if method == Method::POST => {
            write(Scope::RunsReplay, "runs.replay")
        }
        "/api/state/{script}" | "/api/state/{script}/{key}" if get => read(Scope::StateRead),
        "/api/state/{script}/{key}" if method == Method::PUT => {
            write(Scope::StateWrite, "state.set")
        }
        "/api/state/{script}/{key}" if method == Method::DELETE => {
            write(Scope::StateWrite, "state.delete")
        }
        "/api/approvals" | "/api/approvals/{id}" if get => read(Scope::ApprovalsRead),
        "/api/approvals/{id}/approve" if method == Method::POST => {
            write(Scope::ApprovalsDecide, "approvals.approve")
        }
        "/api/approvals/{id}/reject" if method == Method::POST => {
            write(Scope::ApprovalsDecide, "approvals.reject")
        }
        "/api/audit" if get => read(Scope::AuditRead),
        _ => None,
    }
}

/// Why a request has no caller.
enum Refused {
    /// No valid token or session.
    Auth(AuthFailure),
    /// A write through the session of this caller without its CSRF token.
    Csrf(String),
}

/// The caller of a request: its bearer token, or else its console session (a
/// write through a session must carry the session's CSRF token; a bearer token is
/// no ambient credential and needs none).
fn caller(st: &AdminState, req: &Request) -> Result<Principal, Refused> {
    if let Some(header) = req.headers().get(AUTHORIZATION) {
        return st
            .callers
            .authenticate(header.to_str().ok())
            .map_err(Refused::Auth);
    }
    let (_, session) = st
        .sessions
        .of_request(req.headers())
        .ok_or(Refused::Auth(AuthFailure::Missing))?;
    let principal = st
        .callers
        .authenticate_token(session.token.expose())
        .map_err(Refused::Auth)?;
    let read = req.method() == Method::GET || req.method() == Method::HEAD;
    let given = req.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    if !read && !session.csrf_matches(given) {
        return Err(Refused::Csrf(principal.name));
    }
    Ok(principal)
}

/// Authenticates, checks the route's scope, runs the route with the caller in its
/// extensions, and audits writes: their entry is durable before the answer.
pub(super) async fn require_scope(
    State(st): State<AdminState>,
    mut req: Request,
    next: Next,
) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| req.uri().path().to_owned(), |m| m.as_str().to_owned());
    let what = format!("{} {route}", req.method());
    let principal = match caller(&st, &req) {
        Ok(p) => p,
        Err(Refused::Auth(failure)) => {
            st.audit.append_soon(
                Entry::new("-", "auth.failed", &what)
                    .outcome(Outcome::Refused)
                    .detail(failure.message()),
            );
            return ApiError::Unauthorized(failure.message().into()).into_response();
        }
        Err(Refused::Csrf(name)) => {
            st.audit.append_soon(
                Entry::new(&name, "auth.csrf", &what)
                    .outcome(Outcome::Refused)
                    .detail("missing or wrong CSRF token"),
            );
            return ApiError::Forbidden(format!(
                "{what} through a console session needs the session's CSRF token in {CSRF_HEADER}"
            ))
            .into_response();
        }
    };
    let policy = policy(req.method(), &route).unwrap_or(Policy {
        scope: Scope::Admin,
        action: (req.method() != Method::GET).then_some("admin.write"),
    });
    if !principal.has(policy.scope) {
        st.audit.append_soon(
            Entry::new(&principal.name, "auth.forbidden", &what)
                .outcome(Outcome::Refused)
                .detail(format!("needs scope {}", policy.scope.as_str())),
        );
        return ApiError::Forbidden(format!(
            "client {:?} lacks the scope {} that {what} needs",
            principal.name,
            policy.scope.as_str(),
        ))
        .into_response();
    }
    let target = req.uri().path().to_owned();
    let actor = principal.name.clone();
    req.extensions_mut().insert(principal);
    let response = next.run(req).await;
    let Some(action) = policy.action else {
        return response;
    };
    let status = response.status();
    let entry = Entry::new(&actor, action, &target)
        .outcome(if status.is_success() {
            Outcome::Ok
        } else {
            Outcome::Failed
        })
        .detail(serde_json::json!({ "status": status.as_u16() }));
    match st.audit.append(entry).await {
        Ok(()) => response,
        Err(e) => ApiError::from(e).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_admin_route_has_a_policy() {
        let routes = [
            ("GET", "/api/runs"),
            ("GET", "/api/runs/{id}"),
            ("GET", "/api/runs/{id}/timeline"),
            ("GET", "/api/dead-letters"),
            ("POST", "/api/dead-letters/{id}/replay"),
            ("GET", "/api/events"),
            ("GET", "/api/requests"),
            ("GET", "/api/scripts"),
            ("GET", "/api/state/{script}"),
            ("GET", "/api/state/{script}/{key}"),
            ("PUT", "/api/state/{script}/{key}"),
            ("DELETE", "/api/state/{script}/{key}"),
            ("GET", "/api/approvals"),
            ("GET", "/api/approvals/{id}"),
            ("POST", "/api/approvals/{id}/approve"),
            ("POST", "/api/approvals/{id}/reject"),
            ("GET", "/api/schedules"),
            ("GET", "/api/store"),
            ("GET", "/api/audit"),
            ("GET", "/metrics"),
            ("GET", "/api/metrics/history"),
        ];
        for (m, r) in routes {
            let p = policy(&m.parse().unwrap(), r).unwrap_or_else(|| panic!("{m} {r}"));
            assert_eq!(p.action.is_some(), m != "GET", "{m} {r}");
        }
        assert!(policy(&Method::POST, "/api/runs").is_none());
    }
}
