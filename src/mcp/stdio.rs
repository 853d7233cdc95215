//! `spur mcp`: the same tools over stdin/stdout, for agents that start spur as a
//! local process (Claude Desktop, an IDE). It opens the data dir itself and runs
//! the workers, so tool calls are durable runs as under the daemon; a daemon
//! holding the data dir is reported, with the URL of its `/mcp` to connect to
//! instead. The caller is `--client NAME` (its tool patterns) or the owner.
//! Logs go to stderr: stdout carries only the protocol.

use anyhow::Context as _;
use rmcp::ServiceExt as _;

use super::McpServer;
use crate::auth::Principal;
use crate::config::Config;

/// Serves MCP on stdio until the client closes stdin.
///
/// # Errors
/// An unknown client, a data dir held by a daemon, or a store that cannot open.
pub(crate) async fn serve(config: Config, client: Option<&str>) -> anyhow::Result<()> {
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
    let listen = config.server.listen;
    let app = crate::app::App::start(config).await.with_context(|| {
        format!(
            "opening the data dir (is a daemon running on it? then connect the agent to http://{listen}/mcp)"
        )
    })?;
    let server = McpServer::new(app.tools(), Some(caller));
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .context("starting MCP on stdio")?;
    let quit = running.waiting().await;
    app.shutdown().await;
    quit.context("serving MCP on stdio")?;
    Ok(())
}
