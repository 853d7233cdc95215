//! `spur mcp`: the same tools over stdin/stdout, for agents that start spur as a
//! local process (Claude Desktop, an IDE). The caller is `--client NAME` (its tool
//! patterns) or the owner. Logs go to stderr: stdout carries only the protocol.
//!
//! - When the data dir is free, it opens it and runs the workers itself, so tool
//!   calls are durable runs as under the daemon.
//! - When a daemon holds it, it relays: every request goes to the daemon's `/mcp`
//!   with the client's token (or the owner's), and the answers come back, so the
//!   agent sees exactly what that client sees over HTTP.

use std::sync::Arc;

use anyhow::Context as _;
use rmcp::ErrorData as McpError;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, ListToolsResult, PaginatedRequestParams, ServerConfig,
};
use rmcp::service::{RequestContext, RoleClient, RoleServer, RunningService, ServiceError};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ServerHandler, ServiceExt as _};

use super::McpServer;
use crate::auth::Principal;
use crate::config::Config;

/// Where a running daemon answers, for the relay: its `/mcp` URL and the token
/// to call it with.
pub(crate) struct Daemon {
    pub url: String,
    pub token: Option<String>,
}

/// Serves MCP on stdio until the client closes stdin.
///
/// # Errors
/// An unknown client, or neither the data dir nor the daemon can be used.
pub(crate) async fn serve(
    config: Config,
    client: Option<&str>,
    daemon: Daemon,
) -> anyhow::Result<()> {
    let caller = match client {
        None => Principal::owner(),
        Some(name) => Principal::of_client(&config, name).with_context(|| {
            let known: Vec<&str> = config.clients.keys().map(String::as_str).collect();
            format!(
                "no [clients.{name}] in the configuration (configured: {})",
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                }
            )
        })?,
    };
    let dir = config.server.data_dir.clone();
    let free = tokio::task::spawn_blocking(move || crate::store::Store::open(&dir).is_ok()).await?;
    if !free {
        let token = match client {
            Some(name) => config
                .clients
                .get(name)
                .map(|c| c.token.expose().to_owned()),
            None => daemon.token,
        };
        return relay(&daemon.url, token).await;
    }
    let app = crate::app::App::start(config).await?;
    let server = McpServer::new(app.tools(), Some(caller));
    let quit = serve_stdio(server).await;
    app.shutdown().await;
    quit
}

async fn serve_stdio(handler: impl ServerHandler) -> anyhow::Result<()> {
    let running = handler
        .serve(rmcp::transport::stdio())
        .await
        .context("starting MCP on stdio")?;
    running.waiting().await.context("serving MCP on stdio")?;
    Ok(())
}

/// Relays stdio to the daemon's `/mcp`.
async fn relay(url: &str, token: Option<String>) -> anyhow::Result<()> {
    crate::connectors::http::install_crypto_provider();
    let mut config = StreamableHttpClientTransportConfig::with_uri(url.to_owned());
    if let Some(t) = token {
        config = config.auth_header(t);
    }
    let transport = StreamableHttpClientTransport::from_config(config);
    let upstream = ().serve(transport).await.with_context(|| {
        format!("the data dir is held by a running daemon, and its {url} did not answer")
    })?;
    tracing::info!(%url, "Relaying MCP to the running daemon.");
    serve_stdio(Relay {
        upstream: Arc::new(upstream),
    })
    .await
}

/// A server that answers with what the daemon answers.
struct Relay {
    upstream: Arc<RunningService<RoleClient, ()>>,
}

fn upstream_error(e: ServiceError) -> McpError {
    match e {
        ServiceError::McpError(e) => e,
        other => McpError::internal_error(format!("the daemon: {other}"), None),
    }
}

impl ServerHandler for Relay {
    fn get_info(&self) -> ServerConfig {
        super::server_config()
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        self.upstream
            .list_tools(request)
            .await
            .map_err(upstream_error)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        self.upstream
            .call_tool_once(request)
            .await
            .map_err(upstream_error)
    }
}
