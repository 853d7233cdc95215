//! Approval channels besides Slack: email through an SMTP server started inside
//! the test (`spur::testing::FakeSmtp`), with signed single-use links that open a
//! confirmation page (a GET never decides) and decide on its POST; and a script's
//! own channel, `on_approval(|req| …)`, posting the request and its links to a
//! fake "Teams" API.

mod common;

use std::time::Duration;

use common::TestApp;
use serde_json::{Value, json};
use spur::run::RunStatus;
use spur::testing::{FakeHttp, FakeSmtp, Mail};

const ASK_BY_EMAIL: &str = r#"on_track("Deletion Requested", |e| {
    let d = approval::ask(#{
        title: `Delete all data of ${e.userId}?`,
        body: "GDPR request from the help centre",
        data: #{ user: e.userId },
        approvers: ["dpo@example.com"],
        email: ["dpo@example.com"],
        expires: "30d",
    });
    log::info(`deletion ${d.status} by ${d.by}: ${d.comment}`);
});
"#;

fn email_config(port: u16) -> String {
    format!(
        "[approvals.email]\nhost = \"127.0.0.1\"\nport = {port}\nsecurity = \"none\"\nfrom = \"spur <approvals@example.com>\"\n"
    )
}

/// The path (`/approvals/link/…`) of the link after `label` in an email.
fn link_path(mail: &Mail, label: &str) -> String {
    let line = mail
        .body
        .lines()
        .find_map(|l| l.strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label} link in:\n{}", mail.body));
    let url = line.trim();
    let at = url.find("/approvals/link/").expect("a link path");
    url[at..].to_owned()
}

async fn get(t: &TestApp, path: &str) -> (u16, String) {
    let r = t.client.get(t.url(path)).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn confirm(t: &TestApp, path: &str, comment: &str) -> (u16, String) {
    let r = t
        .client
        .post(t.url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("comment={}", comment.replace(' ', "+")))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn pending(t: &TestApp) -> Vec<Value> {
    let (_, a) = t.admin_get("/api/approvals?status=pending").await;
    a["approvals"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emailed_link_opens_a_page_and_its_confirmation_decides_once() {
    let mut smtp = FakeSmtp::start().await;
    let t = TestApp::builder()
        .script("gdpr.rhai", ASK_BY_EMAIL)
        .config(&email_config(smtp.port))
        .start()
        .await;
    t.post(
        "/v1/track",
        &json!({"userId": "u-42", "event": "Deletion Requested"}),
    )
    .await;
    let mail = smtp.next(20).await;
    assert_eq!(mail.to, ["dpo@example.com"]);
    assert_eq!(mail.from, "approvals@example.com");
    assert_eq!(
        mail.header("Subject"),
        Some("Approval requested: Delete all data of u-42?")
    );
    assert!(mail.body.contains("GDPR request from the help centre"));
    assert!(mail.body.contains("\"user\": \"u-42\""));
    let approve = link_path(&mail, "Approve: ");
    let reject = link_path(&mail, "Reject:  ");

    // Opening the link (as a mail scanner would) decides nothing.
    let (status, html) = get(&t, &approve).await;
    assert_eq!(status, 200, "{html}");
    assert!(
        html.contains("You decide as <strong>dpo@example.com</strong>"),
        "{html}"
    );
    assert!(html.contains("<form method=\"post\""), "{html}");
    assert_eq!(pending(&t).await.len(), 1, "a GET never decides");

    // Confirming decides as the approver the link was signed for.
    let (status, html) = confirm(&t, &approve, "identity verified").await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("by dpo@example.com"), "{html}");
    let runs = t
        .wait_runs(20, |r| r.iter().any(|r| r.status == RunStatus::Ok))
        .await;
    let done: Vec<&str> = runs
        .iter()
        .filter(|r| r.status == RunStatus::Ok)
        .map(|r| r.logs[0].message.as_str())
        .collect();
    assert_eq!(
        done,
        ["deletion approved by dpo@example.com: identity verified"]
    );

    // Used once: the same link, and the other one, are refused now.
    let (status, html) = confirm(&t, &approve, "again").await;
    assert_eq!(status, 409, "{html}");
    assert!(html.contains("already approved"), "{html}");
    assert_eq!(get(&t, &reject).await.0, 409);
    // An altered link is refused.
    let forged = format!("{}x", &approve[..approve.len() - 1]);
    let (status, html) = get(&t, &forged).await;
    assert_eq!(status, 410);
    assert!(html.contains("not valid"), "{html}");

    // The decision is in the audit log, as the approver, through a link.
    let (_, audit) = t.admin_get("/api/audit?action=approvals.approve").await;
    let e = &audit["entries"][0];
    assert_eq!(
        (e["actor"].as_str(), e["detail"]["via"].as_str()),
        (Some("dpo@example.com"), Some("link")),
        "{audit}"
    );
    assert_eq!(runs.iter().filter(|r| r.status == RunStatus::Ok).count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_expires_before_its_request_does() {
    let mut smtp = FakeSmtp::start().await;
    let clock = spur::clock::ManualClock::at(chrono::Utc::now());
    let t = TestApp::builder()
        .script("gdpr.rhai", ASK_BY_EMAIL)
        .config(&email_config(smtp.port))
        .clock(&clock)
        .start()
        .await;
    t.post(
        "/v1/track",
        &json!({"userId": "u-7", "event": "Deletion Requested"}),
    )
    .await;
    let approve = link_path(&smtp.next(20).await, "Approve: ");
    // Links work for at most a week; the request itself waits 30 days.
    clock.advance(Duration::from_secs(8 * 86_400));
    let (status, html) = get(&t, &approve).await;
    assert_eq!(status, 410);
    assert!(html.contains("expired"), "{html}");
    assert_eq!(confirm(&t, &approve, "late").await.0, 410);
    assert_eq!(pending(&t).await.len(), 1, "the request still waits");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_approval_sends_the_request_anywhere_and_its_links_decide() {
    let mut teams = FakeHttp::ok().await;
    let config = format!("[connections.teams]\nbase_url = \"{}\"\n", teams.base_url);
    let t = TestApp::builder()
        .script(
            "refunds.rhai",
            r#"on_track("Refund Requested", |e| {
    let d = approval::ask(#{ title: `Refund ${e.properties.order}`, data: #{ amount: e.properties.amount } });
    log::info(`refund ${d.status} by ${d.by}`);
});
"#,
        )
        .script(
            "teams.rhai",
            r#"on_approval(|req| {
    http::post("/webhook", #{
        title: req.title,
        amount: req.data.amount,
        approve: req.links.approve,
        reject: req.links.reject,
    }, #{ connection: "teams" });
});
"#,
        )
        .config(&config)
        .start()
        .await;
    t.post(
        "/v1/track",
        &json!({"userId": "u-1", "event": "Refund Requested", "properties": {"order": "R-9", "amount": 80}}),
    )
    .await;
    let posted = teams.next(20).await;
    let card = posted.json.expect("a JSON card");
    assert_eq!(
        (card["title"].as_str(), card["amount"].as_i64()),
        (Some("Refund R-9"), Some(80))
    );
    let approve = card["approve"].as_str().unwrap();
    let path = &approve[approve.find("/approvals/link/").unwrap()..];
    assert!(
        get(&t, path)
            .await
            .1
            .contains("You decide as <strong>link:teams</strong>")
    );
    assert_eq!(confirm(&t, path, "").await.0, 200);
    let runs = t
        .wait_runs(20, |r| {
            r.iter()
                .any(|r| r.status == RunStatus::Ok && r.script == "refunds")
        })
        .await;
    let refund = runs
        .iter()
        .find(|r| r.script == "refunds" && r.status == RunStatus::Ok);
    assert_eq!(
        refund.unwrap().logs[0].message,
        "refund approved by link:teams"
    );
    // The channel's own run is a run like any other, with its trigger.
    let channel: Vec<_> = runs.iter().filter(|r| r.script == "teams").collect();
    assert_eq!(channel.len(), 1, "one on_approval run per request");
    assert_eq!(channel[0].trigger, "approval");
    assert!(channel[0].approval.as_deref().unwrap().starts_with("apr_"));
    let (_, listed) = t.admin_get("/api/runs?trigger=approval").await;
    assert_eq!(listed["runs"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_approvers_gets_personal_links_only() {
    let mut teams = FakeHttp::ok().await;
    let t = TestApp::builder()
        .script(
            "ask.rhai",
            r#"on_track("Wire", |e| {
    let d = approval::ask(#{ title: "Wire transfer", approvers: ["cfo@example.com"] });
    log::info(`wire ${d.status} by ${d.by}`);
});
"#,
        )
        .script(
            "pager.rhai",
            r#"on_approval(|req| {
    let shared = req.links;
    let mine = approval::links(req.id, "cfo@example.com");
    let stranger = "made";
    try { approval::links(req.id, "intern@example.com"); } catch (err) { stranger = `${err}`; }
    http::post("/page", #{ shared: shared, approve: mine.approve, stranger: stranger }, #{ connection: "pager" });
});
"#,
        )
        .config(&format!(
            "[connections.pager]\nbase_url = \"{}\"\n",
            teams.base_url
        ))
        .start()
        .await;
    t.post("/v1/track", &json!({"userId": "u-2", "event": "Wire"}))
        .await;
    let body = teams.next(20).await.json.unwrap();
    assert_eq!(
        body["shared"],
        Value::Null,
        "no shared links when approvers are named"
    );
    assert!(
        body["stranger"]
            .as_str()
            .unwrap()
            .contains("is not one of the approvers"),
        "{body}"
    );
    let approve = body["approve"].as_str().unwrap();
    let path = &approve[approve.find("/approvals/link/").unwrap()..];
    assert_eq!(confirm(&t, path, "").await.0, 200);
    let runs = t
        .wait_runs(20, |r| {
            r.iter()
                .any(|r| r.script == "ask" && r.status == RunStatus::Ok)
        })
        .await;
    let wire = runs
        .iter()
        .find(|r| r.script == "ask" && r.status == RunStatus::Ok);
    assert_eq!(
        wire.unwrap().logs[0].message,
        "wire approved by cfo@example.com"
    );
}
