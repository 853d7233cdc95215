//! Secrets never leak: configured tokens, passwords and keys appear in no run record,
//! no daemon log line and no error message — even when a service echoes them back.
//! Run with: cargo nextest run --test secrets

mod common;

use common::{Daemon, TOKEN, base_config};
use serde_json::{Value, json};
use spur::testing::{FakeHttp, Reply};

const SECRETS: [&str; 5] = [
    "sk-live-SECRET-1234",
    "svc-user-SECRET",
    "pw-SECRET-5678",
    "hk-SECRET-9999",
    "WK-SECRET-0000",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
async fn no_configured_secret_leaks_into_records_logs_or_errors() {
    // A careless service: echoes every request header back, in the body and headers.
    let fake = FakeHttp::start(|r| {
        let echoed = json!({ "you_sent": r.headers, "body": r.text() });
        let status = if r.path == "/fail" { 401 } else { 200 };
        Reply::json(status, &echoed).header("x-echo-auth", r.header("authorization").unwrap_or(""))
    })
    .await;
    let base = &fake.base_url;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("scripts")).unwrap();
    std::fs::write(
        dir.path().join("scripts/leaky.rhai"),
        format!(
            r#"
            on_track(|e| {{
                let a = http::request(#{{ connection: "crm", method: "POST", path: "/items", json: #{{ x: 1 }} }});
                log::info(a.body);
                log::info(json::stringify(a.headers));
                let b = http::get("/who", #{{ connection: "basicco" }});
                print(b.body);
                let c = http::get("/hdr", #{{ connection: "hdr" }});
                log::warn(json::stringify(c.json));
                let d = http::get("http://svc-user-SECRET:pw-SECRET-5678@{host}/plain");
                log::info(d.body);
                let f = http::get("/fail", #{{ connection: "crm" }});
                throw `service said: ${{f.body}} ${{f.headers["x-echo-auth"]}}`;
            }});
            "#,
            host = base.trim_start_matches("http://")
        ),
    )
    .unwrap();
    let extra = format!(
        r#"
[segment]
write_keys = ["WK-SECRET-0000"]
[retry]
max_attempts = 1
[connections.crm]
base_url = "{base}"
bearer = "sk-live-SECRET-1234"
[connections.basicco]
base_url = "{base}"
basic = {{ user = "svc-user-SECRET", password = "pw-SECRET-5678" }}
[connections.hdr]
base_url = "{base}"
headers = {{ "X-Api-Key" = "hk-SECRET-9999" }}
"#
    );
    std::fs::write(
        dir.path().join("spur.toml"),
        base_config(dir.path(), &extra),
    )
    .unwrap();
    let daemon = Daemon::start_logging(dir.path(), "trace");
    let client = common::client();
    let r = client
        .post(format!("{}/v1/track", daemon.base))
        .json(&json!({"userId": "u", "event": "E", "writeKey": "WK-SECRET-0000"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let runs: Value = daemon.get("/api/runs?wait=20s").await;
    let run = &runs["runs"][0];
    assert_eq!(run["status"], "dead", "{run}");
    // The calls really carried the credentials (the fake saw them) ...
    let seen: Vec<_> = fake.received();
    assert_eq!(
        seen[0].header("authorization"),
        Some("Bearer sk-live-SECRET-1234")
    );
    assert_eq!(seen[2].header("x-api-key"), Some("hk-SECRET-9999"));
    assert_eq!(seen.len(), 5);
    // ... and nothing that came back shows them.
    let record = serde_json::to_string(&runs).unwrap();
    assert!(
        record.contains("you_sent"),
        "the echoes were recorded: {record}"
    );
    let (_, dead) = (
        0,
        client
            .get(format!("{}/api/dead-letters", daemon.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    drop(daemon);
    let log = std::fs::read_to_string(dir.path().join("daemon.log")).unwrap();
    assert!(log.len() > 100, "trace logging produced output");
    for secret in SECRETS {
        assert!(
            !record.contains(secret),
            "{secret} in run records: {record}"
        );
        assert!(!dead.contains(secret), "{secret} in dead letters: {dead}");
        assert!(!log.contains(secret), "{secret} in the daemon log");
    }
    let error = run["error"]["message"].as_str().unwrap();
    assert!(
        error.starts_with("service said:") && error.contains("***"),
        "{error}"
    );
}
