//! Tools over MCP, driven by the official MCP Python SDK (installed from PyPI into
//! `target/mcp-clients` on first use) in both handshake modes: `auto` (the
//! 2026-07-28 stateless revision) and `legacy` (2025-11-25, `initialize` and a
//! session), and by the official TypeScript SDK from npm (a 2025-11-25 client).
//! Clients, scopes, approvals in the loop and the audit log.
//! Run with: cargo nextest run --test mcp

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{TOKEN, TestApp};
use reqwest::Method;
use serde_json::{Value, json};
use spur::run::RunStatus;
use spur::testing::{FakeHttp, Reply};

const SCRIPT: &str = r#"
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

const CLIENTS: &str = r#"
[clients.support-bot]
token = "bot-token-123"
tools = ["lookup_*"]
scopes = ["runs:read"]

[clients.ops]
token = "ops-token-456"
tools = ["*"]
scopes = ["approvals:read", "approvals:decide", "audit:read"]
"#;

async fn app() -> TestApp {
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
fn install_sdk() -> PathBuf {
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
async fn sdk(t: &TestApp, token: &str, mode: &str, calls: &Value) -> Vec<Value> {
    drive(&t.url("/mcp"), token, mode, calls).await
}

/// Runs the SDK client against `target` (a URL, or a JSON command for stdio).
async fn drive(target: &str, token: &str, mode: &str, calls: &Value) -> Vec<Value> {
    let dir = install_sdk();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/client.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script)
        .args([target, token, mode, &calls.to_string()])
        .env("PYTHONPATH", &dir);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the SDK client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

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
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
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
async fn without_a_valid_token_mcp_answers_401_pointing_at_its_metadata() {
    let t = app().await;
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    for token in [None, Some("not-a-token")] {
        let mut req = t.client.post(t.url("/mcp")).json(&init);
        if let Some(tok) = token {
            req = req.bearer_auth(tok);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401);
        let challenge = resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            challenge,
            format!(
                "Bearer resource_metadata=\"{}/.well-known/oauth-protected-resource\"",
                t.base
            )
        );
    }
    let meta: Value = t
        .client
        .get(t.url("/.well-known/oauth-protected-resource"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["resource"], t.url("/mcp"));
    assert_eq!(meta["bearer_methods_supported"], json!(["header"]));
    let (_, audit) = t.admin_get("/api/audit?action=auth.failed").await;
    assert_eq!(audit["entries"].as_array().unwrap().len(), 2, "{audit}");
    assert!(!audit.to_string().contains("not-a-token"));
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
        .json(&json!({"by": "dana"}))
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
async fn every_admin_route_checks_the_scope_it_needs() {
    let t = app().await;
    let call = |method: reqwest::Method, path: &str, token: &str| {
        t.client
            .request(method, t.url(path))
            .bearer_auth(token)
            .json(&json!({"value": 1}))
            .send()
    };
    let cases = [
        (Method::GET, "/api/runs", "bot-token-123", 200),
        (Method::GET, "/api/scripts", "bot-token-123", 200),
        (Method::GET, "/api/state/support", "bot-token-123", 403),
        (Method::PUT, "/api/state/support/k", "bot-token-123", 403),
        (
            Method::POST,
            "/api/dead-letters/1/replay",
            "bot-token-123",
            403,
        ),
        (Method::GET, "/api/audit", "bot-token-123", 403),
        (Method::GET, "/api/approvals", "bot-token-123", 403),
        (Method::GET, "/api/audit", "ops-token-456", 200),
        (Method::GET, "/api/runs", "ops-token-456", 403),
        (Method::PUT, "/api/state/support/k", TOKEN, 200),
        (Method::GET, "/api/runs", "wrong", 401),
    ];
    for (method, path, token, want) in cases {
        let status = call(method.clone(), path, token).await.unwrap().status();
        assert_eq!(status.as_u16(), want, "{method} {path} as {token}");
    }
    let (_, audit) = t.admin_get("/api/audit?action=auth").await;
    let refused = audit["entries"].as_array().unwrap();
    assert_eq!(
        refused.len(),
        7,
        "6 forbidden and 1 unauthenticated: {audit}"
    );
    let (_, writes) = t.admin_get("/api/audit?action=state").await;
    assert_eq!(writes["entries"][0]["actor"], "owner");
    assert_eq!(writes["entries"][0]["target"], "/api/state/support/k");
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
    let out = Command::new(env!("CARGO_BIN_EXE_spur"))
        .args(["audit", "--json", "--action", "tool", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let entries: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
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

/// A fake Profile API holding more of `ada` than an agent may see.
async fn profile_api() -> FakeHttp {
    FakeHttp::start(|r| {
        let base = "/v1/spaces/spa_1/collections/users/profiles/user_id:ada";
        let page = |v: Value| Reply::json(200, &v);
        match (
            r.path.strip_prefix(base),
            r.query.get("class").map(String::as_str),
        ) {
            (Some("/traits"), None) => page(json!({"traits": {
                "plan": "pro", "email": "ada@example.com", "ltv": 4200, "address": "12 Crescent Rd"
            }, "cursor": {"has_more": false, "next": ""}})),
            (Some("/traits"), Some("audience")) => page(json!({"traits": {
                "churn_risk": true, "vip_internal": false
            }, "cursor": {"has_more": false, "next": ""}})),
            (Some("/events"), _) => page(json!({"data": [
                {"type": "track", "event": "Order Completed", "timestamp": "2026-12-01T10:00:00Z",
                 "properties": {"total": 99.5, "card_last4": "4242"}, "context": {"ip": "10.0.0.1"}}
            ], "cursor": {"has_more": false, "next": ""}})),
            (Some("/external_ids"), _) => page(json!({"data": [
                {"type": "user_id", "id": "ada"}, {"type": "email", "id": "ada@example.com"}
            ], "cursor": {"has_more": false, "next": ""}})),
            _ => Reply::json(
                404,
                &json!({"error": {"code": "not_found", "message": "Profile was not found."}}),
            ),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_tools_return_only_the_approved_context() {
    let fake = profile_api().await;
    let f = &fake.base_url;
    let t = TestApp::builder()
        .script("support.rhai", SCRIPT)
        .config(&format!(
            "{CLIENTS}\n[clients.analyst]\ntoken = \"analyst-token-789\"\ntools = [\"profile_*\"]\n\
             [segment]\nprofile_base = \"{f}\"\nprofile_space_id = \"spa_1\"\nprofile_token = \"PT-secret\"\n\
             [agents.profile]\ntraits = [\"plan\", \"ltv\"]\nevent_properties = [\"total\"]\naudiences = [\"churn_*\"]\n"
        ))
        .start()
        .await;
    let calls = json!([
        ["profile_traits", {"user_id": "ada"}],
        ["profile_events", {"user_id": "ada", "limit": 5}],
        ["profile_audiences", {"user_id": "ada"}],
        ["profile_external_ids", {"user_id": "ada"}],
        ["profile_traits", {"user_id": "nobody"}],
        ["lookup_customer", {"user_id": "ada"}],
    ]);
    let lines = sdk(&t, "analyst-token-789", "auto", &calls).await;
    assert_eq!(
        lines[1]["tools"],
        json!([
            "profile_audiences",
            "profile_events",
            "profile_external_ids",
            "profile_traits",
            "run_status"
        ])
    );
    assert_eq!(
        lines[2]["structured"],
        json!({"user_id": "ada", "found": true, "traits": {"plan": "pro", "ltv": 4200}})
    );
    assert_eq!(
        lines[3]["structured"]["events"],
        json!([{"type": "track", "event": "Order Completed", "timestamp": "2026-12-01T10:00:00Z", "properties": {"total": 99.5}}])
    );
    assert_eq!(
        lines[4]["structured"]["audiences"],
        json!({"churn_risk": true})
    );
    assert_eq!(
        lines[5]["structured"]["external_ids"],
        json!([{"type": "user_id", "id": "ada"}])
    );
    assert_eq!(
        lines[6]["structured"],
        json!({"user_id": "nobody", "found": false})
    );
    assert!(
        lines[7]["error"].as_str().unwrap().contains("unknown tool"),
        "not its tool"
    );
    let everything = lines.iter().map(Value::to_string).collect::<String>();
    for hidden in [
        "ada@example.com",
        "Crescent",
        "4242",
        "10.0.0.1",
        "vip_internal",
    ] {
        assert!(
            !everything.contains(hidden),
            "{hidden} reached the agent: {everything}"
        );
    }
    // The events read asked Segment for no more than the agent did.
    let events = fake
        .received()
        .into_iter()
        .find(|r| r.path.ends_with("/events"))
        .unwrap();
    assert_eq!(events.query.get("limit").map(String::as_str), Some("5"));
    // The support bot (tools = ["lookup_*"]) does not see them.
    let lines = sdk(&t, "bot-token-123", "auto", &json!([])).await;
    assert_eq!(lines[1]["tools"], json!(["lookup_customer", "run_status"]));
    t.stop().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_records_reloads_and_refuses_foreign_origins() {
    let t = app().await;
    // A browser page of another origin cannot drive /mcp, even with a token.
    let resp = t
        .client
        .post(t.url("/mcp"))
        .bearer_auth("bot-token-123")
        .header("origin", "https://evil.example")
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403, "{}", resp.text().await.unwrap());

    // An edited script is audited with its new hash before it goes live.
    let mut changed = t.app.scripts.subscribe();
    changed.borrow_and_update();
    let path = t.dir.path().join("scripts/support.rhai");
    std::fs::write(&path, SCRIPT.replace("\"pro\"", "\"team\"")).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), changed.changed())
        .await
        .expect("reloaded")
        .unwrap();
    let (_, audit) = t.admin_get("/api/audit?action=script").await;
    let entries = audit["entries"].as_array().unwrap();
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["script.load", "script.reload"], "{audit}");
    assert_ne!(entries[0]["detail"]["hash"], entries[1]["detail"]["hash"]);
    assert!(
        entries[1]["target"]
            .as_str()
            .unwrap()
            .ends_with("support.rhai")
    );
    t.stop().await;
}
