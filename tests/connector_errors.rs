//! The error convention every stdlib connector module follows, across services (the
//! fakes in `tests/common/fakes/`): refused credentials fail the run permanently with
//! the service's own message after one call; an outage or an exhausted rate limit
//! that outlasts the host's retries leaves the run retrying.
//! Run with: cargo nextest run --test connector_errors

mod common;

use common::connector::{Scenario, call_statuses, error_of, run_of};
use common::fakes::{asana, hubspot, jira, pagerduty, salesforce, slack, zendesk};
use serde_json::json;
use spur::run::RunStatus;
use spur::testing::Reply;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_credentials_fail_permanently_with_each_services_own_message() {
    let script = r#"
        on_track("slack", |e| { slack::post("C123", "hi"); });
        on_track("hubspot", |e| { hubspot::create_company(#{ name: "Acme" }); });
        on_track("salesforce", |e| { salesforce::create("Account", #{ Name: "Acme" }); });
        on_track("asana", |e| { asana::create_task(#{ name: "x", workspace: "1" }); });
        on_track("zendesk", |e| { zendesk::create_ticket(#{ subject: "x", body: "y" }); });
        on_track("jira", |e| { jira::create_issue(#{ project: "OPS", summary: "x" }); });
        on_track("pagerduty", |e| { pagerduty::trigger(#{ routing_key: "too-short", summary: "x", source: "y" }); });
    "#;
    let mut t = Scenario::new(script)
        .connect(slack::connection().auth(""))
        .connect(hubspot::connection().auth(""))
        .connect(salesforce::connection().auth("bearer = \"00Dxx0000001gPL!revoked\""))
        .connect(asana::connection().auth(""))
        // The plain `email:token` form Zendesk refuses (it wants `email/token:token`).
        .connect(zendesk::connection().auth("basic = \"agent@example.com:zd-api-token\""))
        .connect(jira::connection().auth(""))
        .connect(pagerduty::connection())
        .start()
        .await;
    let expected = [
        ("slack", "slack: not_authed (200)"),
        (
            "hubspot",
            "hubspot: INVALID_AUTHENTICATION: Authentication credentials not found. This API supports OAuth 2.0 authentication. (401)",
        ),
        (
            "salesforce",
            "salesforce: INVALID_SESSION_ID: Session expired or invalid (401)",
        ),
        ("asana", "asana: Not Authorized (401)"),
        ("zendesk", "zendesk: Couldn't authenticate you (401)"),
        (
            "jira",
            "jira: You are not authenticated. Authentication required to perform this operation. (401)",
        ),
        (
            "pagerduty",
            "pagerduty: Event object is invalid: Length of 'routing_key' is incorrect (should be 32 characters) (400)",
        ),
    ];
    let events: Vec<_> = expected.iter().map(|(event, _)| *event).collect();
    let runs = t.track(&events).await;
    for (event, message) in expected {
        let run = run_of(&runs, event);
        assert_eq!(error_of(run, RunStatus::Failed), message);
        assert_eq!(run.calls.len(), 1, "{event}: one call, no retry");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_after_the_hosts_retries_leaves_the_run_retrying() {
    let asana = asana::connection()
        .answering(|_| {
            Reply::json(503, &json!({"errors": [{"message": "Server Error", "phrase": "6 sad squid snuggle softly"}]}))
        })
        .with("max_attempts = 2");
    let salesforce = salesforce::connection().answering(|_| {
        Reply::json(403, &json!([{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]))
            .header("sforce-limit-info", "api-usage=100000/100000")
    });
    let zendesk = zendesk::connection()
        .answering(|_| {
            Reply::text(429, "Too Many Requests")
                .header("retry-after", "0")
                .header("x-rate-limit-remaining", "0")
        })
        .with("max_attempts = 2");
    let script = r#"
        on_track("asana", |e| { asana::create_task(#{ name: "x", workspace: "1" }); });
        on_track("salesforce", |e| { salesforce::query("SELECT Id FROM Account"); });
        on_track("zendesk", |e| { zendesk::create_ticket(#{ subject: "x", body: "y" }); });
    "#;
    let mut t = Scenario::new(script)
        .connect(asana)
        .connect(salesforce)
        .connect(zendesk)
        .wait_secs(20)
        .start()
        .await;
    let runs = t.track(&["asana", "salesforce", "zendesk"]).await;

    let asana_run = run_of(&runs, "asana");
    assert!(
        error_of(asana_run, RunStatus::Retrying).starts_with("asana: Server Error (503)"),
        "{asana_run:#?}"
    );
    assert_eq!(call_statuses(asana_run), [Some(503), Some(503)]);
    assert!(asana_run.next_attempt_at.is_some());

    // Salesforce reports an exhausted API limit as a 403: retried later, not dead-lettered.
    let sf_run = run_of(&runs, "salesforce");
    assert!(
        error_of(sf_run, RunStatus::Retrying)
            .starts_with("salesforce: REQUEST_LIMIT_EXCEEDED: TotalRequests Limit exceeded. (403)"),
        "{sf_run:#?}"
    );

    // A plain-text 429 body still yields a readable message.
    let zd_run = run_of(&runs, "zendesk");
    assert!(
        error_of(zd_run, RunStatus::Retrying).starts_with("zendesk: Too Many Requests (429)"),
        "{zd_run:#?}"
    );
    assert_eq!(call_statuses(zd_run), [Some(429), Some(429)]);
}
