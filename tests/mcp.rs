//! Tools over MCP through the official SDKs: the Python SDK in both handshake modes,
//! `auto` (the 2026-07-28 stateless revision) and `legacy` (2025-11-25,
//! `initialize` and a session), over HTTP and over stdio (`spur mcp`, on its own
//! data dir and relayed to a daemon); the TypeScript SDK from npm (a 2025-11-25
//! client); a tool that waits for an approval.
//! Run with: cargo nextest run --test mcp

mod common;

use std::path::Path;
use std::process::Command;

use common::TOKEN;
use common::mcp::{CLIENTS, SCRIPT, app, drive, json_lines, sdk};
use serde_json::{Value, json};
use spur::run::RunStatus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_lists_and_calls_a_clients_tools_in_both_modes() {
    let t = app().await;
    let calls = json!([
        ["lookup_customer", {"user_id": "ada"}],
        ["lookup_customer", {"user_id": 42}],
        ["lookup_customer", {}],
        ["refund_order", {"order_id": "o-1"}],
    ]);
    for (mode, protocol) in [("auto", "2026-07-28"), ("legacy", "2025-11-25")] {
        let lines = sdk(&t, "bot-token-123", mode, &calls).await;
        assert_eq!(lines[0]["protocol"], protocol, "{mode}: {lines:?}");
        // Only its own tools (and run_status), in name order.
        assert_eq!(
            lines[1]["tools"],
            json!(["lookup_customer", "run_status"]),
            "{mode}"
        );
        let ok = &lines[2];
        assert_eq!(ok["is_error"], false, "{mode}: {ok}");
        assert_eq!(ok["structured"], json!({"user_id": "ada", "plan": "pro"}));
        assert_eq!(
            serde_json::from_str::<Value>(ok["text"][0].as_str().unwrap()).unwrap(),
            json!({"user_id": "ada", "plan": "pro"}),
            "older clients read the text block"
        );
        let wrong_type = lines[3]["error"].as_str().unwrap();
        assert!(
            wrong_type.contains("arguments.user_id: expected string, got number 42"),
            "{mode}: {wrong_type}"
        );
        let missing = lines[4]["error"].as_str().unwrap();
        assert!(
            missing.contains("arguments.user_id: is required"),
            "{missing}"
        );
        let refused = lines[5]["error"].as_str().unwrap();
        assert!(
            refused.contains("unknown tool \"refund_order\""),
            "{refused}"
        );
    }

    // Each valid call was one run: trigger tool, the client, arguments and result.
    let runs = t.wait_run_count(2, 10).await;
    assert_eq!(runs.len(), 2, "invalid and refused calls start no run");
    for r in &runs {
        assert_eq!(r.status, RunStatus::Ok);
        assert_eq!(r.trigger, "tool");
        assert_eq!(r.tool.as_deref(), Some("lookup_customer"));
        assert_eq!(r.client.as_deref(), Some("support-bot"));
        assert_eq!(r.arguments, Some(json!({"user_id": "ada"})));
        assert_eq!(r.result, Some(json!({"user_id": "ada", "plan": "pro"})));
    }

    // The audit log has every call, with a digest instead of the arguments.
    let (status, audit) = t.admin_get("/api/audit?action=tool").await;
    assert_eq!(status, 200);
    let entries = audit["entries"].as_array().unwrap();
    let outcomes: Vec<&str> = entries
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes.iter().filter(|o| **o == "ok").count(),
        2,
        "{audit}"
    );
    assert_eq!(
        outcomes.iter().filter(|o| **o == "failed").count(),
        4,
        "{audit}"
    );
    assert_eq!(
        outcomes.iter().filter(|o| **o == "refused").count(),
        2,
        "{audit}"
    );
    assert!(entries.iter().all(|e| e["actor"] == "support-bot"));
    assert!(
        entries[0]["detail"]["arguments"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    let (_, all) = t.admin_get("/api/audit").await;
    let text = all.to_string();
    for secret in ["bot-token-123", "ops-token-456", TOKEN, "\"ada\""] {
        assert!(!text.contains(secret), "{secret} in the audit log: {text}");
    }
    let actions: Vec<&str> = all["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"config.load") && actions.contains(&"script.load"),
        "{actions:?}"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_sdk_lists_and_calls_tools_over_a_session() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/mcp-clients/node");
    let marker = dir.join("node_modules/@modelcontextprotocol/sdk/package.json");
    if !marker.exists() {
        std::fs::create_dir_all(&dir).unwrap();
        let out = Command::new("npm")
            .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .arg("@modelcontextprotocol/sdk@1.32")
            .output()
            .expect("running npm");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let t = app().await;
    // The script must sit beside node_modules for its imports to resolve.
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/client.mjs"),
        dir.join("client.mjs"),
    )
    .unwrap();
    let calls = json!([
        ["lookup_customer", {"user_id": "lin"}],
        ["lookup_customer", {"user_id": ""}],
        ["refund_order", {"order_id": "o-1"}],
    ]);
    let mut cmd = Command::new("node");
    cmd.arg(dir.join("client.mjs"))
        .args([&t.url("/mcp"), "bot-token-123", &calls.to_string()]);
    let lines = json_lines(cmd).await;
    assert!(
        lines[0]["session"].is_string(),
        "a 2025-11-25 session: {lines:?}"
    );
    assert_eq!(lines[1]["tools"], json!(["lookup_customer", "run_status"]));
    assert_eq!(
        lines[2]["structured"],
        json!({"user_id": "lin", "plan": "pro"}),
        "{lines:?}"
    );
    let short = lines[3]["error"].as_str().unwrap();
    assert!(
        short.contains("arguments.user_id: has 0 characters, fewer than the minimum 1"),
        "{short}"
    );
    assert!(
        lines[4]["error"].as_str().unwrap().contains("unknown tool"),
        "{lines:?}"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_that_asks_for_approval_answers_pending_then_its_result() {
    let t = app().await;
    let lines = sdk(
        &t,
        "ops-token-456",
        "auto",
        &json!([["refund_order", {"order_id": "o-7"}]]),
    )
    .await;
    let pending = &lines[2]["structured"];
    assert_eq!(pending["status"], "pending", "{lines:?}");
    assert_eq!(pending["waiting_for"]["for"], "approval");
    let job_id = pending["job_id"].as_u64().unwrap();

    // ops decides through the admin API with its own token and scope.
    let approvals: Value = t
        .client
        .get(t.url("/api/approvals?status=pending"))
        .bearer_auth("ops-token-456")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = approvals["approvals"][0]["id"].as_str().unwrap().to_owned();
    let resp = t
        .client
        .post(t.url(&format!("/api/approvals/{id}/approve")))
        .bearer_auth("ops-token-456")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    t.wait_runs(10, |r| r.iter().any(|r| r.status == RunStatus::Ok))
        .await;

    let lines = sdk(
        &t,
        "ops-token-456",
        "auto",
        &json!([["run_status", {"job_id": job_id}]]),
    )
    .await;
    assert_eq!(lines[2]["is_error"], false, "{lines:?}");
    assert_eq!(lines[2]["structured"]["refunded"], "o-7");
    // Another client cannot read this call's status.
    let status = t
        .client
        .get(t.url("/api/runs"))
        .bearer_auth("bot-token-123")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200, "runs:read lets the bot list runs");
    let lines = sdk(
        &t,
        "bot-token-123",
        "auto",
        &json!([["run_status", {"job_id": job_id}]]),
    )
    .await;
    assert!(
        lines[2]["error"].as_str().unwrap().contains("no call"),
        "{lines:?}"
    );

    let (_, audit) = t.admin_get("/api/audit?action=approvals").await;
    let e = &audit["entries"][0];
    assert_eq!(e["actor"], "ops");
    assert_eq!(e["action"], "approvals.approve");
    assert_eq!(e["outcome"], "ok");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spur_mcp_serves_a_clients_tools_over_stdio_to_the_python_sdk() {
    let dir = tempfile::tempdir().unwrap();
    let scripts = dir.path().join("scripts");
    std::fs::create_dir_all(&scripts).unwrap();
    std::fs::write(scripts.join("support.rhai"), SCRIPT).unwrap();
    let config = dir.path().join("spur.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ndata_dir = \"{}\"\nscripts_dir = \"{}\"\n{CLIENTS}",
            dir.path().join("data").display(),
            scripts.display()
        ),
    )
    .unwrap();
    let command = json!([
        env!("CARGO_BIN_EXE_spur"),
        "mcp",
        "--config",
        config,
        "--client",
        "support-bot"
    ]);
    for (mode, protocol) in [("auto", "2026-07-28"), ("legacy", "2025-11-25")] {
        let calls =
            json!([["lookup_customer", {"user_id": "grace"}], ["refund_order", {"order_id": "o"}]]);
        let lines = drive(&command.to_string(), "-", mode, &calls).await;
        assert_eq!(lines[0]["protocol"], protocol, "{lines:?}");
        assert_eq!(
            lines[1]["tools"],
            json!(["lookup_customer", "run_status"]),
            "{lines:?}"
        );
        assert_eq!(
            lines[2]["structured"],
            json!({"user_id": "grace", "plan": "pro"})
        );
        assert!(
            lines[3]["error"].as_str().unwrap().contains("unknown tool"),
            "{lines:?}"
        );
    }

    // `spur audit --json` reads the same log from the data dir once spur mcp exited.
    let mut audit = Command::new(env!("CARGO_BIN_EXE_spur"));
    audit
        .args(["audit", "--json", "--action", "tool", "--config"])
        .arg(&config);
    let entries = json_lines(audit).await;
    let outcomes: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e["actor"].as_str().unwrap(), e["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("support-bot", "ok"),
            ("support-bot", "refused"),
            ("support-bot", "ok"),
            ("support-bot", "refused")
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spur_mcp_relays_to_the_daemon_that_holds_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("scripts")).unwrap();
    std::fs::write(dir.path().join("scripts/support.rhai"), SCRIPT).unwrap();
    let config = dir.path().join("spur.toml");
    std::fs::write(&config, common::base_config(dir.path(), CLIENTS)).unwrap();
    let daemon = common::Daemon::start(dir.path());
    let command = json!([
        env!("CARGO_BIN_EXE_spur"),
        "mcp",
        "--config",
        config,
        "--client",
        "support-bot",
        "--url",
        daemon.base
    ]);
    let calls =
        json!([["lookup_customer", {"user_id": "kai"}], ["lookup_customer", {"user_id": 1}]]);
    let lines = drive(&command.to_string(), "-", "legacy", &calls).await;
    assert_eq!(
        lines[1]["tools"],
        json!(["lookup_customer", "run_status"]),
        "{lines:?}"
    );
    assert_eq!(
        lines[2]["structured"],
        json!({"user_id": "kai", "plan": "pro"})
    );
    assert!(
        lines[3]["error"]
            .as_str()
            .unwrap()
            .contains("arguments.user_id: expected string"),
        "the daemon's error comes through: {lines:?}"
    );
    // The run happened in the daemon, as the client.
    let runs = daemon.get("/api/runs").await;
    assert_eq!(runs["runs"][0]["client"], "support-bot", "{runs}");
    assert_eq!(runs["runs"][0]["result"]["user_id"], "kai");
    daemon.kill9();
}
