//! The agent tests' shared parts (`tests/mcp.rs`, `tests/governance.rs`): a support
//! script with two tools, two clients, and the official MCP Python SDK (installed
//! from PyPI into `target/mcp-clients` on first use) driven by `tests/mcp/client.py`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::TestApp;

pub const SCRIPT: &str = r#"
tool("lookup_customer", #{
    description: "A customer's plan",
    input: #{ type: "object", properties: #{ user_id: #{ type: "string", minLength: 1 } }, required: ["user_id"] },
    annotations: #{ readOnlyHint: true },
}, |args| {
    state::incr(`lookups:${args.user_id}`);
    #{ user_id: args.user_id, plan: "pro" }
});

tool("refund_order", #{
    description: "Refunds an order, once a person approves",
    input: #{ type: "object", properties: #{ order_id: #{ type: "string" } }, required: ["order_id"] },
}, |args| {
    let d = approval::ask(#{ title: `Refund ${args.order_id}?`, expires: "1h" });
    if !d.approved { fail("the refund was rejected") }
    #{ refunded: args.order_id, by: d.by }
});
"#;

pub const CLIENTS: &str = r#"
[clients.support-bot]
token = "bot-token-123"
tools = ["lookup_*"]
scopes = ["runs:read"]

[clients.ops]
token = "ops-token-456"
tools = ["*"]
scopes = ["approvals:read", "approvals:decide", "audit:read"]
"#;

pub async fn app() -> TestApp {
    TestApp::builder()
        .script("support.rhai", SCRIPT)
        .config(CLIENTS)
        .start()
        .await
}

fn sdk_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/mcp-clients/python")
}

/// Installs the SDK once (a marker file says it is complete).
pub fn install_sdk() -> PathBuf {
    let dir = sdk_dir();
    let marker = dir.join(".installed-2.3.0");
    if !marker.exists() {
        std::fs::create_dir_all(&dir).unwrap();
        let out = Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                "--target",
            ])
            .arg(&dir)
            .arg("mcp==2.3.0")
            .output()
            .expect("running pip");
        assert!(
            out.status.success(),
            "installing the MCP SDK failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(&marker, "").unwrap();
    }
    dir
}

/// Runs the SDK client against `/mcp` with `token` in `mode`, making `calls`;
/// returns its JSON lines.
pub async fn sdk(t: &TestApp, token: &str, mode: &str, calls: &Value) -> Vec<Value> {
    drive(&t.url("/mcp"), token, mode, calls).await
}

/// Runs the SDK client against `target` (a URL, or a JSON command for stdio).
pub async fn drive(target: &str, token: &str, mode: &str, calls: &Value) -> Vec<Value> {
    let dir = install_sdk();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/client.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script)
        .args([target, token, mode, &calls.to_string()])
        .env("PYTHONPATH", &dir);
    json_lines(cmd).await
}

/// Runs a client `cmd` (off the async runtime) that prints one JSON object per
/// line; its lines, or a failure with its output.
pub async fn json_lines(mut cmd: Command) -> Vec<Value> {
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}
