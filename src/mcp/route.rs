//! `/mcp` over HTTP and its discovery document.
//!
//! - `/.well-known/oauth-protected-resource` (RFC 9728; also under `/mcp`'s path):
//!   the resource, how to send a token (`Authorization: Bearer`), the scopes.
//! - `/mcp`: the bearer token must name the owner or a `[clients.NAME]`; without
//!   one the answer is 401 with `WWW-Authenticate: Bearer resource_metadata="…"`
//!   and the refusal is audited. The SDK's service then checks the `Host` and
//!   `Origin` headers (loopback names, the listen address and
//!   `approvals.public_url`), the protocol headers against the body, and serves
//!   the request.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, HOST, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::McpServer;
use crate::audit::{Entry, Outcome};
use crate::auth::SharedCallers;
use crate::config::Scope;
use crate::tool::Tools;

/// Largest `/mcp` request body.
const MAX_BODY: usize = 1 << 20;

const METADATA: &str = "/.well-known/oauth-protected-resource";

#[derive(Clone)]
struct Gate {
    callers: SharedCallers,
    tools: Tools,
    public_url: Option<String>,
}

/// The routes; `hosts` are the names a request's `Host` may carry besides the
/// loopback ones.
pub(crate) fn router(
    tools: Tools,
    callers: SharedCallers,
    public_url: Option<String>,
    hosts: Vec<String>,
    cancel: CancellationToken,
) -> Router {
    let mut allowed_hosts: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    allowed_hosts.extend(hosts);
    let mut origins = vec![
        "http://localhost:*".to_owned(),
        "http://127.0.0.1:*".to_owned(),
    ];
    if let Some(u) = &public_url
        && let Ok(url) = reqwest::Url::parse(u)
    {
        origins.push(url.origin().ascii_serialization());
        if let Some(h) = url.host_str() {
            allowed_hosts.push(h.to_owned());
        }
    }
    let config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(allowed_hosts)
        .with_allowed_origins(origins)
        .with_max_request_body_bytes(MAX_BODY)
        .with_json_response(true)
        .with_cancellation_token(cancel);
    let server = McpServer::new(tools.clone(), None);
    let service = StreamableHttpService::new(
        move || Ok(server.clone()),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let gate = Gate {
        callers,
        tools,
        public_url,
    };
    let mcp =
        Router::new()
            .nest_service("/mcp", service)
            .layer(axum::middleware::from_fn_with_state(
                gate.clone(),
                authenticate,
            ));
    Router::new()
        .route(METADATA, get(metadata))
        .route(&format!("{METADATA}/mcp"), get(metadata))
        .with_state(gate)
        .merge(mcp)
}

/// The daemon's URL as the caller reached it (or `approvals.public_url`).
fn base_url(gate: &Gate, headers: &HeaderMap) -> String {
    if let Some(u) = &gate.public_url {
        return u.trim_end_matches('/').to_owned();
    }
    let host = headers
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1");
    format!("http://{host}")
}

async fn metadata(State(gate): State<Gate>, headers: HeaderMap) -> Response {
    let base = base_url(&gate, &headers);
    let scopes: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
    axum::Json(json!({
        "resource": format!("{base}/mcp"),
        "resource_name": "spur",
        "bearer_methods_supported": ["header"],
        "scopes_supported": scopes,
        "resource_documentation": "https://github.com/spur-run/spur/blob/main/docs/agents.md",
    }))
    .into_response()
}

async fn authenticate(State(gate): State<Gate>, mut req: Request, next: Next) -> Response {
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match gate.callers.authenticate(header) {
        Ok(principal) => {
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        Err(failure) => {
            gate.tools.audit.append_soon(
                Entry::new("-", "auth.failed", &format!("{} /mcp", req.method()))
                    .outcome(Outcome::Refused)
                    .detail(failure.message()),
            );
            let challenge = format!(
                "Bearer resource_metadata=\"{}{METADATA}\"",
                base_url(&gate, req.headers())
            );
            let mut resp = (
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({"error": "unauthorized", "message": failure.message()})),
            )
                .into_response();
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                resp.headers_mut().insert(WWW_AUTHENTICATE, v);
            }
            resp
        }
    }
}
