//! Governance around the agent tools: tokens and the RFC 9728 challenge, scopes on
//! every admin route, the audit log (reloads, refusals, foreign origins), and the
//! approved profile context of the built-in profile tools.
//! Run with: cargo nextest run --test governance

mod common;

use common::mcp::{CLIENTS, SCRIPT, app, sdk};
use common::{TOKEN, TestApp};
use reqwest::Method;
use serde_json::{Value, json};
use spur::testing::{FakeHttp, Reply};

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

    // An edited script is audited with its new hash before it goes live. It is
    // saved by rename, so no reload ever sees it half written.
    let mut changed = t.app.scripts.subscribe();
    changed.borrow_and_update();
    let edited = SCRIPT.replace("\"pro\"", "\"team\"");
    let dir = t.dir.path().join("scripts");
    std::fs::write(dir.join(".support.rhai.tmp"), &edited).unwrap();
    std::fs::rename(dir.join(".support.rhai.tmp"), dir.join("support.rhai")).unwrap();
    while !t
        .app
        .scripts
        .get()
        .scripts
        .iter()
        .any(|s| *s.source == edited)
    {
        tokio::time::timeout(std::time::Duration::from_secs(5), changed.changed())
            .await
            .expect("reloaded")
            .unwrap();
    }
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
