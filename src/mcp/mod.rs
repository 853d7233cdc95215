//! MCP: the scripts' tools for agents, over HTTP (`POST /mcp`, `route.rs`) and
//! stdio (`spur mcp`). The protocol is the official SDK's (`rmcp`): it speaks the
//! 2026-07-28 revision (stateless requests, `server/discover`) and answers
//! 2025-11-25 clients (`initialize`, `Mcp-Session-Id`). This module is the server
//! those transports drive: `tools/list` shows the caller's tools in name order,
//! `tools/call` runs one as a durable run (`crate::tool`).
//!
//! Results: a finished run's return value is the structured content (an object as
//! is, any other value as `{"result": value}`) with the same JSON as a text block
//! for older clients; a failed run is an `isError` result with its message; a run
//! that parks (an approval) answers `{"status": "pending", "job_id": …}` at once,
//! and the built-in `run_status` tool tells later how it ended. Unknown tools and
//! arguments that do not match the schema are protocol errors naming the field.

pub(crate) mod route;
pub(crate) mod stdio;

use rmcp::ErrorData as McpError;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, Implementation, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::{RequestContext, RoleServer};
use serde_json::{Value, json};

use crate::auth::Principal;
use crate::tool::{CallError, CallOutcome, RUN_STATUS, Tools};

/// The MCP server of one daemon (HTTP) or one stdio session.
#[derive(Clone)]
pub(crate) struct McpServer {
    tools: Tools,
    /// The caller of a stdio session; over HTTP each request carries its own.
    fixed: Option<Principal>,
}

impl McpServer {
    pub(crate) fn new(tools: Tools, fixed: Option<Principal>) -> Self {
        Self { tools, fixed }
    }

    fn caller(&self, ctx: &RequestContext<RoleServer>) -> Result<Principal, McpError> {
        ctx.extensions
            .get::<axum::http::request::Parts>()
            .and_then(|p| p.extensions.get::<Principal>())
            .or(self.fixed.as_ref())
            .cloned()
            .ok_or_else(|| McpError::invalid_request("not authenticated", None))
    }

    fn list(&self, caller: &Principal) -> Vec<Value> {
        let mut out: Vec<Value> = self
            .tools
            .visible(caller)
            .into_iter()
            .map(|t| {
                let mut tool = json!({
                    "name": t.spec.name,
                    "description": t.spec.description,
                    "inputSchema": t.spec.input,
                });
                if let Some(o) = &t.spec.output {
                    tool["outputSchema"] = o.clone();
                }
                if let Some(a) = &t.spec.annotations {
                    tool["annotations"] = a.clone();
                }
                tool
            })
            .collect();
        if !out.is_empty() {
            out.push(json!({
                "name": RUN_STATUS,
                "description": "How a pending tool call (one that waits for an approval) stands: pending, or its result.",
                "inputSchema": {
                    "type": "object",
                    "properties": { "job_id": { "type": "integer", "description": "The job_id of the pending answer" } },
                    "required": ["job_id"]
                },
                "annotations": { "readOnlyHint": true }
            }));
            out.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        }
        out
    }
}

fn result(outcome: &CallOutcome) -> Result<CallToolResult, McpError> {
    let (structured, is_error, text) = match outcome {
        CallOutcome::Done { result, .. } => {
            let structured = match result {
                Value::Object(_) => result.clone(),
                other => json!({ "result": other }),
            };
            let text = serde_json::to_string(result).unwrap_or_default();
            (Some(structured), false, text)
        }
        CallOutcome::Failed { message, .. } => (None, true, message.clone()),
        CallOutcome::Pending {
            job_id,
            waiting_for,
        } => {
            let v = json!({ "status": "pending", "job_id": job_id, "waiting_for": waiting_for });
            let text = format!(
                "The call is waiting ({}); call {RUN_STATUS} with job_id {job_id} to get its result.",
                waiting_for["for"].as_str().unwrap_or("waiting")
            );
            (Some(v), false, text)
        }
    };
    let mut body = json!({
        "resultType": "complete",
        "content": [{ "type": "text", "text": text }],
        "isError": is_error,
    });
    if let Some(s) = structured {
        body["structuredContent"] = s;
    }
    serde_json::from_value(body).map_err(|e| McpError::internal_error(e.to_string(), None))
}

/// What spur tells clients about itself (HTTP, stdio and the relay alike).
fn server_config() -> ServerConfig {
    ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
        .with_server_info(Implementation::new("spur", env!("CARGO_PKG_VERSION")))
        .with_instructions(
            "Tools written as spur scripts. Each call is a durable, journaled run; a call that needs a person's approval answers pending with a job_id: ask run_status later.",
        )
}

impl rmcp::ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        server_config()
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let caller = self.caller(&ctx)?;
        let tools: Vec<Tool> = serde_json::from_value(Value::Array(self.list(&caller)))
            .map_err(|e| McpError::internal_error(e.to_string(), None))?;
        serde_json::from_value(json!({ "resultType": "complete", "tools": tools }))
            .map_err(|e| McpError::internal_error(e.to_string(), None))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let caller = self.caller(&ctx)?;
        let args = Value::Object(request.arguments.unwrap_or_default());
        if request.name == RUN_STATUS && !self.tools.visible(&caller).is_empty() {
            let job_id = args["job_id"].as_u64().ok_or_else(|| {
                McpError::invalid_params("arguments.job_id: expected integer", None)
            })?;
            let outcome = self.tools.status(&caller, job_id).ok_or_else(|| {
                McpError::invalid_params(
                    format!("arguments.job_id: no call {job_id} of yours"),
                    None,
                )
            })?;
            return result(&outcome).map(Into::into);
        }
        match self.tools.call(&caller, &request.name, args).await {
            Ok(outcome) => result(&outcome).map(Into::into),
            Err(e @ (CallError::UnknownTool(_) | CallError::InvalidArguments(_))) => {
                Err(McpError::invalid_params(e.to_string(), None))
            }
            Err(e @ CallError::Internal(_)) => Err(McpError::internal_error(e.to_string(), None)),
        }
    }
}
