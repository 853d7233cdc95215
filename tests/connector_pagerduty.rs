//! The stdlib `pagerduty` module (`stdlib/pagerduty.rhai`) end to end against a fake
//! PagerDuty Events v2 API (`tests/common/fakes/pagerduty.rs`): trigger, acknowledge
//! and resolve events without an auth header, and the routing key taken from an
//! allowed environment variable of the real binary.
//! Run with: cargo nextest run --test connector_pagerduty

mod common;

use common::connector::{Scenario, error_of, ok_logs, run_of};
use common::fakes::pagerduty::{self, ROUTING_KEY};
use serde_json::json;
use spur::run::RunStatus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagerduty_trigger_acknowledge_resolve_send_events_without_an_auth_header() {
    let script = format!(
        r#"
        const KEY = "{ROUTING_KEY}";
        on_track("Disk Full", |e| {{
            let a = pagerduty::trigger(#{{ routing_key: KEY, summary: "DISK at 99% on db-1",
                source: "db-1.example.com", severity: "critical", dedup_key: "srv01/mysql",
                custom_details: #{{ "free space": "1%" }} }});
            let b = pagerduty::trigger(#{{ routing_key: KEY, summary: "CPU high", source: "web-1" }});
            let ack = pagerduty::acknowledge(#{{ routing_key: KEY, dedup_key: a.dedup_key }});
            let done = pagerduty::resolve(#{{ routing_key: KEY, dedup_key: a.dedup_key }});
            log::info(`${{a.status}} ${{a.dedup_key}} ${{b.dedup_key.len()}} ${{ack.message}} ${{done.dedup_key}}`);
        }});
        on_track("No Key", |e| {{ pagerduty::resolve("srv01/mysql"); }});
        "#
    );
    let mut t = Scenario::new(&script)
        .connect(pagerduty::connection())
        .start()
        .await;
    let runs = t.track(&["Disk Full", "No Key"]).await;
    assert_eq!(
        ok_logs(run_of(&runs, "Disk Full")),
        ["success srv01/mysql 32 Event processed srv01/mysql"]
    );
    let no_key = run_of(&runs, "No Key");
    assert!(
        error_of(no_key, RunStatus::Failed).starts_with("pagerduty: no routing_key"),
        "{no_key:#?}"
    );
    assert!(no_key.calls.is_empty());

    let reqs = t.fake("pagerduty").received();
    assert_eq!(reqs.len(), 4);
    for r in &reqs {
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("POST", "/v2/enqueue")
        );
        assert_eq!(r.header("authorization"), None);
        assert_eq!(r.json.as_ref().unwrap()["routing_key"], ROUTING_KEY);
    }
    assert_eq!(
        reqs[0].json,
        Some(
            json!({"routing_key": ROUTING_KEY, "event_action": "trigger", "dedup_key": "srv01/mysql",
            "payload": {"summary": "DISK at 99% on db-1", "source": "db-1.example.com", "severity": "critical",
                "custom_details": {"free space": "1%"}}})
        )
    );
    assert_eq!(
        reqs[1].json.as_ref().unwrap()["payload"]["severity"],
        "error"
    );
    assert_eq!(reqs[1].json.as_ref().unwrap().get("dedup_key"), None);
    assert_eq!(
        reqs[2].json,
        Some(
            json!({"routing_key": ROUTING_KEY, "event_action": "acknowledge", "dedup_key": "srv01/mysql"})
        )
    );
    assert_eq!(
        reqs[3].json,
        Some(
            json!({"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": "srv01/mysql"})
        )
    );
}

/// Through the real binary: the variable must be in the daemon's own environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagerduty_routing_key_falls_back_to_an_allowed_env_secret() {
    let (mut fake, connection) = pagerduty::connection().start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("scripts")).unwrap();
    std::fs::write(
        dir.path().join("scripts/alerts.rhai"),
        r#"on_track("Recovered", |e| { log::info(pagerduty::resolve("srv01/mysql").status); });"#,
    )
    .unwrap();
    let extra = format!("[env]\nallow = [\"PAGERDUTY_ROUTING_KEY\"]\n\n{connection}");
    std::fs::write(
        dir.path().join("spur.toml"),
        common::base_config(dir.path(), &extra),
    )
    .unwrap();
    let spur =
        common::Daemon::start_with_env(dir.path(), &[("PAGERDUTY_ROUTING_KEY", ROUTING_KEY)]);
    let resp = common::client()
        .post(format!("{}/v1/track", spur.base))
        .json(&json!({"userId": "u1", "event": "Recovered"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let req = fake.next(20).await;
    assert_eq!(
        req.json,
        Some(
            json!({"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": "srv01/mysql"})
        )
    );
    assert_eq!(req.header("authorization"), None);
}
