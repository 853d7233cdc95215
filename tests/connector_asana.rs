//! The stdlib `asana` module (`stdlib/asana.rhai`) end to end against a fake Asana
//! API (`tests/common/fakes/asana.rs`): a task created with its body wrapped in
//! `data`, and Asana's error for a task without a workspace.
//! Run with: cargo nextest run --test connector_asana

mod common;

use common::connector::{Scenario, error_of, ok_logs, run_of};
use common::fakes::{asana, bearer};
use serde_json::json;
use spur::run::RunStatus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asana_create_task_wraps_the_body_in_data_and_returns_the_gid() {
    let script = r#"
        on_track("Trial Started", |e| {
            let task = asana::create_task(#{
                name: "Follow up with Ada", notes: "Trial started", projects: "1200000000000002",
                assignee: "1200000000000003", due_on: "2025-12-31", opt_fields: ["permalink_url", "due_on"],
            });
            log::info(`${task.gid} ${task.permalink_url} ${task.due_on}`);
        });
        on_track("No Workspace", |e| { asana::create_task(#{ name: "Orphan" }); });
    "#;
    let mut t = Scenario::new(script)
        .connect(asana::connection())
        .start()
        .await;
    let runs = t.track(&["Trial Started", "No Workspace"]).await;
    assert_eq!(
        ok_logs(run_of(&runs, "Trial Started")),
        ["1204000000000042 https://app.asana.com/0/1200000000000002/1204000000000042 2025-12-31"]
    );
    assert_eq!(
        error_of(run_of(&runs, "No Workspace"), RunStatus::Failed),
        "asana: workspace: Missing input (400)"
    );
    let req = t
        .fake("asana")
        .received()
        .into_iter()
        .find(|r| {
            r.json
                .as_ref()
                .is_some_and(|j| j["data"]["name"] == "Follow up with Ada")
        })
        .unwrap();
    assert_eq!(
        (req.method.as_str(), req.path.as_str()),
        ("POST", "/api/1.0/tasks")
    );
    assert_eq!(bearer(&req), Some(asana::TOKEN));
    assert_eq!(
        req.query.get("opt_fields").map(String::as_str),
        Some("permalink_url,due_on")
    );
    assert_eq!(
        req.json,
        Some(
            json!({"data": {"name": "Follow up with Ada", "notes": "Trial started",
            "projects": ["1200000000000002"], "assignee": "1200000000000003", "due_on": "2025-12-31"}})
        )
    );
}
