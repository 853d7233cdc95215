//! The stdlib `jira` module (`stdlib/jira.rhai`) end to end against a fake Jira
//! Cloud v3 API (`tests/common/fakes/jira.rs`): an issue whose plain-text
//! description arrives as an Atlassian document, and Jira's field errors.
//! Run with: cargo nextest run --test connector_jira

mod common;

use common::connector::{Scenario, error_of, ok_logs, run_of};
use common::fakes::{basic, jira};
use serde_json::json;
use spur::run::RunStatus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jira_create_issue_sends_an_adf_description_and_returns_the_key() {
    let script = r#"
        on_track("Disk Full", |e| {
            let issue = jira::create_issue(#{
                project: "OPS", summary: "Disk full on db-1", issuetype: "Bug",
                description: "Disk at 99%.\r\nOn db-1.\n\n\nPage the DBA.\n", labels: ["infra"],
                priority: "High", assignee: "5b10ac8d82e05b22cc7d4ef5",
                fields: #{ customfield_10010: "ops-oncall" },
            });
            log::info(`${issue.id} ${issue.key}`);
        });
        on_track("No Summary", |e| { jira::create_issue(#{ project: "OPS" }); });
    "#;
    let mut t = Scenario::new(script)
        .connect(jira::connection())
        .start()
        .await;
    let runs = t.track(&["Disk Full", "No Summary"]).await;
    assert_eq!(ok_logs(run_of(&runs, "Disk Full")), ["10000 OPS-24"]);
    assert_eq!(
        error_of(run_of(&runs, "No Summary"), RunStatus::Failed),
        "jira: summary: You must specify a summary of the issue. (400)"
    );
    let req = t
        .fake("jira")
        .received()
        .into_iter()
        .find(|r| {
            r.json
                .as_ref()
                .is_some_and(|j| j["fields"]["summary"] == "Disk full on db-1")
        })
        .unwrap();
    assert_eq!(
        (req.method.as_str(), req.path.as_str()),
        ("POST", "/rest/api/3/issue")
    );
    assert_eq!(basic(&req).as_deref(), Some(jira::BASIC));
    assert_eq!(
        req.json,
        Some(json!({"fields": {
            "project": {"key": "OPS"}, "summary": "Disk full on db-1", "issuetype": {"name": "Bug"},
            "labels": ["infra"], "priority": {"name": "High"},
            "assignee": {"accountId": "5b10ac8d82e05b22cc7d4ef5"}, "customfield_10010": "ops-oncall",
            "description": {"type": "doc", "version": 1, "content": [
                {"type": "paragraph", "content": [
                    {"type": "text", "text": "Disk at 99%."}, {"type": "hardBreak"}, {"type": "text", "text": "On db-1."}]},
                {"type": "paragraph", "content": [{"type": "text", "text": "Page the DBA."}]}
            ]}
        }}))
    );
}
