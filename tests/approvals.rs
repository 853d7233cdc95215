//! Approvals: asked and decided through the API, Slack buttons and the web page;
//! rejection, expiry and approvers; connection policies that hold a call until
//! approved — and a decision after kill -9 resuming the run once.
//! Run with: cargo nextest run --test approvals

mod common;

use std::time::{Duration, Instant};

use common::sink::{counting, path, step};
use common::{Backend, Daemon, TOKEN, TestApp, write_daemon_dir};
use hmac::Mac as _;
use serde_json::json;
use spur::run::{RunRecord, RunStatus};
use spur::testing::FakeHttp;

common::on_both_backends!(
    approve_after_kill9_resumes_once_without_repeating_the_first_post,
    reject_expiry_and_approvers,
    connection_policy_holds_a_delete_until_approved,
    slack_buttons_decide_with_a_valid_signature_only,
    bad_ask_and_wait_arguments_fail_the_run_at_once,
);

fn waiting(runs: &[RunRecord]) -> bool {
    runs.iter().any(|r| r.status == RunStatus::Waiting)
}

const APPROVAL_SCRIPT: &str = r##"
on_track("Deletion Requested", |e| {
    http::post(`${SINK}/notify`, #{ step: "asked", user: e.userId });
    let d = approval::ask(#{
        title: `Delete all data for ${e.userId}?`,
        body: "GDPR request from the help centre",
        data: #{ user: e.userId },
        channel: "#privacy",
        approvers: e.properties?.approvers ?? [],
        expires: e.properties?.expires ?? "1h",
    });
    http::post(`${SINK}/notify`, #{ step: "decided", approved: d.approved, status: d.status, by: d.by, comment: d.comment });
});
"##;

fn approval_config(fake: &str, extra: &str) -> String {
    format!(
        "[connections.slack]\nbase_url = \"{fake}\"\nbearer = \"xoxb-test\"\n[approvals]\nslack_signing_secret = \"signing-secret\"\n{extra}"
    )
}

async fn approve_after_kill9_resumes_once_without_repeating_the_first_post(backend: Backend) {
    let (mut fake, counts) = counting(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let store = backend.start(dir.path());
    let script = APPROVAL_SCRIPT.replace("${SINK}", &fake.base_url);
    let config = approval_config(&fake.base_url, &store.config);
    write_daemon_dir(dir.path(), &[("privacy.rhai", &script)], &config);
    let daemon = Daemon::start(dir.path());
    let client = common::client();
    let r = client
        .post(format!("{}/v1/track", daemon.base))
        .json(&json!({"userId": "u-del", "event": "Deletion Requested"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    step(&mut fake, "asked", 0).await;
    let posted = path(&mut fake, "/chat.postMessage").await;
    let msg = posted.json.unwrap();
    assert_eq!(msg["channel"], "#privacy");
    let approve_button = &msg["blocks"][2]["elements"][0];
    let id = approve_button["value"]
        .as_str()
        .unwrap()
        .trim_end_matches(":approve")
        .to_owned();
    assert!(id.starts_with("apr_"), "{msg}");

    let waiting = daemon.get("/api/runs?status=waiting&wait=10s").await;
    assert_eq!(
        waiting["runs"][0]["waiting_for"]["for"], "approval",
        "{waiting}"
    );
    daemon.kill9();
    let daemon = Daemon::start(dir.path());
    let api = |p: &str| format!("{}{p}", daemon.base);
    let waiting = daemon.get("/api/runs?status=waiting").await;
    assert_eq!(
        waiting["runs"][0]["status"], "waiting",
        "still parked after the crash: {waiting}"
    );
    let pending = daemon.get("/api/approvals?status=pending").await;
    assert_eq!(pending["approvals"][0]["id"], id.as_str());
    assert_eq!(
        pending["approvals"][0]["title"],
        "Delete all data for u-del?"
    );

    let r = client
        .post(api(&format!("/api/approvals/{id}/approve")))
        .json(&json!({"by": "dpo@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "deciding needs the admin token");
    let r = client
        .post(api(&format!("/api/approvals/{id}/approve")))
        .bearer_auth(TOKEN)
        .json(&json!({"by": "dpo@example.com", "comment": "verified identity"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let decided = step(&mut fake, "decided", 0).await;
    assert_eq!(decided["approved"], true);
    assert_eq!(decided["by"], "dpo@example.com");
    assert_eq!(decided["comment"], "verified identity");
    let r = client
        .post(api(&format!("/api/approvals/{id}/reject")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "a decision is taken once");
    // The Slack message was updated with the decision.
    let updated = path(&mut fake, "/chat.update").await.json.unwrap();
    assert_eq!(updated["ts"], "1700000000.000100");
    assert!(
        updated["text"]
            .as_str()
            .unwrap()
            .contains("Approved by dpo@example.com")
    );
    let c = counts.lock().clone();
    assert_eq!(
        c["/notify"], 2,
        "asked once (not repeated by the restart), decided once"
    );
    assert_eq!(c["/chat.postMessage"], 1, "the request was announced once");
    // The run record shows the decision.
    let runs = daemon.get("/api/runs?status=ok&wait=10s").await;
    let decisions = &runs["runs"][0]["decisions"][0];
    assert_eq!(
        (decisions["by"].as_str(), decisions["status"].as_str()),
        (Some("dpo@example.com"), Some("approved"))
    );
}

/// The approval script on an in-process daemon, its calls going to `fake`.
async fn approval_app(fake: &FakeHttp, backend: Backend) -> TestApp {
    TestApp::builder()
        .backend(backend)
        .script(
            "privacy.rhai",
            &APPROVAL_SCRIPT.replace("${SINK}", &fake.base_url),
        )
        .config(&approval_config(&fake.base_url, ""))
        .start()
        .await
}

async fn reject_expiry_and_approvers(backend: Backend) {
    let (mut fake, _) = counting(&[]).await;
    let t = approval_app(&fake, backend).await;
    // Rejected, with a comment; only a named approver may decide.
    t.post(
        "/v1/track",
        &json!({"userId": "r1", "event": "Deletion Requested", "properties": {"approvers": ["dpo@example.com"]}}),
    )
    .await;
    t.wait_runs(10, waiting).await;
    let (_, pending) = t.admin_get("/api/approvals?status=pending").await;
    let id = pending["approvals"][0]["id"].as_str().unwrap().to_owned();
    let (status, body) = t
        .admin_post(
            &format!("/api/approvals/{id}/approve"),
            &json!({"by": "mallory"}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, _) = t
        .admin_post(
            &format!("/api/approvals/{id}/reject"),
            &json!({"by": "DPO@example.com", "comment": "not verified"}),
        )
        .await;
    assert_eq!(status, 200);
    let d = step(&mut fake, "decided", 0).await;
    assert_eq!(
        (
            d["approved"].as_bool(),
            d["status"].as_str(),
            d["comment"].as_str()
        ),
        (Some(false), Some("rejected"), Some("not verified"))
    );

    // Expiry: rejected by default, on time.
    let asked = Instant::now();
    t.post(
        "/v1/track",
        &json!({"userId": "r2", "event": "Deletion Requested", "properties": {"expires": "1s"}}),
    )
    .await;
    let d = step(&mut fake, "decided", 1).await;
    let took = asked.elapsed();
    assert_eq!(
        (d["approved"].as_bool(), d["status"].as_str()),
        (Some(false), Some("expired"))
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    let (_, expired) = t.admin_get("/api/approvals?status=expired").await;
    assert_eq!(expired["approvals"].as_array().unwrap().len(), 1);
}

async fn connection_policy_holds_a_delete_until_approved(backend: Backend) {
    let (mut fake, counts) = counting(&[]).await;
    let t = TestApp::builder()
        .backend(backend)
        .script(
            "cleanup.rhai",
            r#"on_track("Cleanup", |e| {
                http::post("/items", #{ name: "keep" }, #{ connection: "crm" });
                let r = http::delete(`/items/${e.properties.item}`, #{ connection: "crm" });
                log::info(`deleted ${r.status}`);
            });"#,
        )
        .config(&format!(
            "[connections.crm]\nbase_url = \"{}\"\nbearer = \"crm-token\"\nrequire_approval = [\"DELETE *\"]\n[retry]\nmax_attempts = 1",
            fake.base_url
        ))
        .start()
        .await;
    t.post(
        "/v1/track",
        &json!({"userId": "a", "event": "Cleanup", "properties": {"item": 1}}),
    )
    .await;
    t.wait_runs(10, waiting).await;
    assert_eq!(
        fake.next(5).await.path,
        "/items",
        "the POST needs no approval"
    );
    assert!(!counts.lock().contains_key("/items/1"), "the DELETE waits");
    let (_, pending) = t.admin_get("/api/approvals?status=pending").await;
    let a = &pending["approvals"][0];
    assert_eq!(a["title"], "DELETE /items/1 on crm");
    assert_eq!(a["kind"], "connection");
    let id = a["id"].as_str().unwrap();
    t.admin_post(
        &format!("/api/approvals/{id}/approve"),
        &json!({"by": "ops"}),
    )
    .await;
    let del = fake.next(10).await;
    assert_eq!(
        (del.method.as_str(), del.path.as_str()),
        ("DELETE", "/items/1")
    );
    assert_eq!(del.header("authorization"), Some("Bearer crm-token"));
    let runs = t
        .wait_runs(10, |r| r.iter().any(|r| r.status == RunStatus::Ok))
        .await;
    assert_eq!(runs[0].logs[0].message, "deleted 200");
    assert_eq!(
        counts.lock()["/items"],
        1,
        "the POST before the approval was not repeated"
    );

    t.post(
        "/v1/track",
        &json!({"userId": "b", "event": "Cleanup", "properties": {"item": 2}}),
    )
    .await;
    t.wait_runs(10, |r| {
        r.iter().filter(|r| r.status == RunStatus::Waiting).count() >= 2
    })
    .await;
    let (_, pending) = t.admin_get("/api/approvals?status=pending").await;
    let id = pending["approvals"][0]["id"].as_str().unwrap();
    t.admin_post(
        &format!("/api/approvals/{id}/reject"),
        &json!({"by": "ops", "comment": "keep it"}),
    )
    .await;
    let runs = t
        .wait_runs(10, |r| r.iter().any(|r| r.status == RunStatus::Failed))
        .await;
    let failed = runs.iter().find(|r| r.status == RunStatus::Failed).unwrap();
    let msg = &failed.error.as_ref().unwrap().message;
    assert!(
        msg.contains(
            "DELETE /items/2 on connection crm was not approved (rejected by ops: keep it)"
        ),
        "{msg}"
    );
    assert!(
        !counts.lock().contains_key("/items/2"),
        "a rejected call never reaches the service"
    );
}

fn slack_sign(secret: &str, ts: &str, body: &str) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("v0:{ts}:{body}").as_bytes());
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

async fn slack_buttons_decide_with_a_valid_signature_only(backend: Backend) {
    let (mut fake, _) = counting(&[]).await;
    let t = approval_app(&fake, backend).await;
    t.post(
        "/v1/track",
        &json!({"userId": "s1", "event": "Deletion Requested"}),
    )
    .await;
    let posted = path(&mut fake, "/chat.postMessage").await.json.unwrap();
    assert_eq!(posted["blocks"][2]["elements"][1]["action_id"], "reject");
    let value = posted["blocks"][2]["elements"][1]["value"]
        .as_str()
        .unwrap()
        .to_owned();
    let payload = json!({
        "type": "block_actions",
        "user": {"id": "U1", "username": "alice", "name": "alice"},
        "response_url": format!("{}/actions/T1/resp", fake.base_url),
        "actions": [{"type": "button", "action_id": "reject", "block_id": "spur_approval", "value": value}],
    });
    let body = format!(
        "payload={}",
        form_urlencoded::byte_serialize(payload.to_string().as_bytes()).collect::<String>()
    );
    let ts = chrono::Utc::now().timestamp().to_string();
    let client = common::client();
    let send = |sig: String, body: String| {
        client
            .post(t.url("/webhooks/slack/interactivity"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-slack-request-timestamp", &ts)
            .header("x-slack-signature", sig)
            .body(body)
            .send()
    };
    let bad = send(slack_sign("wrong-secret", &ts, &body), body.clone())
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    let tampered = send(
        slack_sign("signing-secret", &ts, &body),
        body.replace("reject", "approve"),
    )
    .await
    .unwrap();
    assert_eq!(tampered.status(), 401);
    let (_, pending) = t.admin_get("/api/approvals?status=pending").await;
    assert_eq!(
        pending["approvals"].as_array().unwrap().len(),
        1,
        "nothing decided yet"
    );
    let ok = send(slack_sign("signing-secret", &ts, &body), body.clone())
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let d = step(&mut fake, "decided", 0).await;
    assert_eq!(
        (d["approved"].as_bool(), d["by"].as_str()),
        (Some(false), Some("alice"))
    );
    let resp = path(&mut fake, "/actions/T1/resp").await.json.unwrap();
    assert_eq!(resp["replace_original"], true);
    assert!(resp["text"].as_str().unwrap().contains("Rejected by alice"));
    let (_, audit) = t.admin_get("/api/audit?action=approvals").await;
    let e = &audit["entries"][0];
    assert_eq!(
        (e["actor"].as_str(), e["action"].as_str()),
        (Some("slack:alice"), Some("approvals.reject")),
        "{audit}"
    );
}

async fn bad_ask_and_wait_arguments_fail_the_run_at_once(backend: Backend) {
    let t = TestApp::builder()
        .backend(backend)
        .script(
            "bad.rhai",
            r#"on_track("Typo", |e| { approval::ask(#{ tittle: "Refund?" }); });
            on_track("No Title", |e| { approval::ask(#{ body: "x" }); });
            on_track("Bad Email", |e| { approval::ask(#{ title: "t", email: "not an address" }); });
            on_track("Bad Sleep", |e| { time::sleep("soon"); });"#,
        )
        .start()
        .await;
    for event in ["Typo", "No Title", "Bad Email", "Bad Sleep"] {
        t.post("/v1/track", &json!({"userId": event, "event": event}))
            .await;
    }
    let runs = t.wait_run_count(4, 10).await;
    let message = |event: &str| {
        let run = runs
            .iter()
            .find(|r| r.user.as_deref() == Some(event))
            .unwrap();
        assert_eq!(
            run.status,
            RunStatus::Failed,
            "not retried, the same arguments fail again: {run:?}"
        );
        run.error.as_ref().unwrap().message.clone()
    };
    assert!(message("Typo").contains("unknown option `tittle`"));
    assert!(message("No Title").contains("`title` is required"));
    assert!(message("Bad Email").contains("\"not an address\" is not an email address"));
    assert!(
        message("Bad Sleep").contains("time::sleep"),
        "{}",
        message("Bad Sleep")
    );
}
