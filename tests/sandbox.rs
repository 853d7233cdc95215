//! The sandbox: runaway scripts are stopped and recorded, and everything else carries
//! on. Run with: cargo nextest run --test sandbox

mod common;

use common::TestApp;
use serde_json::json;
use spur::run::{RunRecord, RunStatus};

const SCRIPTS: &str = r#"
fn deeper(n) { deeper(n + 1) }

on_track("Loop", |e| { loop { } });
on_track("Recurse", |e| { deeper(0); });
on_track("Grow", |e| { let s = "xx"; loop { s += s; } });
on_track("Spin", |e| { let n = 0; while true { n += 1; } });
on_event(|e| { log::info(`fine: ${e.event}`); });
"#;

fn by<'a>(runs: &'a [RunRecord], handler: &str) -> &'a RunRecord {
    runs.iter()
        .find(|r| r.handler == handler)
        .unwrap_or_else(|| panic!("no run of {handler}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runaway_scripts_are_stopped_and_others_still_run() {
    let t = TestApp::builder()
        .script("runaway.rhai", SCRIPTS)
        .config("[limits]\ntimeout_ms = 400\nmax_operations = 1000000000000\nmax_call_depth = 32\nmax_string_bytes = 65536\n[retry]\nmax_attempts = 1")
        .start()
        .await;
    for name in ["Loop", "Recurse", "Grow"] {
        let (status, _) = t
            .post("/v1/track", &json!({"userId": name, "event": name}))
            .await;
        assert_eq!(status, 200);
    }
    let runs = t.wait_run_count(6, 20).await;

    let looped = by(&runs, "on_track(Loop)#0");
    assert_eq!(looped.status, RunStatus::Dead, "timed out, out of attempts");
    let err = looped.error.as_ref().unwrap();
    assert_eq!(err.kind, "timeout");
    assert!(
        looped.duration_ms >= 400.0 && looped.duration_ms < 3000.0,
        "{}",
        looped.duration_ms
    );
    assert_eq!(err.line, Some(4), "placed at the handler: {err:?}");

    let deep = by(&runs, "on_track(Recurse)#0");
    assert_eq!(deep.status, RunStatus::Failed, "a limit is permanent");
    assert_eq!(deep.error.as_ref().unwrap().kind, "limit");
    assert!(deep.error.as_ref().unwrap().message.contains("call depth"));

    let grown = by(&runs, "on_track(Grow)#0");
    assert_eq!(grown.status, RunStatus::Failed);
    assert!(
        grown.error.as_ref().unwrap().message.contains("size limit"),
        "{:?}",
        grown.error
    );

    let fine: Vec<_> = runs.iter().filter(|r| r.handler == "on_event#0").collect();
    assert_eq!(fine.len(), 3);
    assert!(fine.iter().all(|r| r.status == RunStatus::Ok));

    // Still serving: a later event is handled, and the dead letters are listed.
    let (status, _) = t
        .post("/v1/track", &json!({"userId": "later", "event": "After"}))
        .await;
    assert_eq!(status, 200);
    t.wait_runs(10, |r| r.iter().any(|r| r.user.as_deref() == Some("later")))
        .await;
    let (_, dead) = t.admin_get("/api/dead-letters").await;
    assert_eq!(dead["dead_letters"].as_array().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operation_limit_stops_a_busy_loop() {
    let t = TestApp::builder()
        .script("spin.rhai", SCRIPTS)
        .config("[limits]\nmax_operations = 100000\ntimeout_ms = 60000")
        .start()
        .await;
    let (status, _) = t
        .post("/v1/track", &json!({"userId": "s", "event": "Spin"}))
        .await;
    assert_eq!(status, 200);
    let runs = t
        .wait_runs(20, |r| r.iter().any(|r| r.handler == "on_track(Spin)#0"))
        .await;
    let spun = by(&runs, "on_track(Spin)#0");
    assert_eq!(spun.status, RunStatus::Failed);
    assert!(
        spun.error
            .as_ref()
            .unwrap()
            .message
            .contains("operation limit")
    );
    assert!(spun.duration_ms < 5000.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_cannot_reach_files_processes_or_environment() {
    let t = TestApp::builder()
        .script(
            "files.rhai",
            r#"import "/etc/passwd" as p; on_event(|e| {});"#,
        )
        .script(
            "env.rhai",
            r#"on_event(|e| { log::info(env::secret("HOME")); });"#,
        )
        .start()
        .await;
    let (_, scripts) = t.admin_get("/api/scripts").await;
    let errors = scripts["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{scripts}");
    assert!(errors[0]["file"].as_str().unwrap().ends_with("files.rhai"));
    assert!(
        errors[0]["message"]
            .as_str()
            .unwrap()
            .contains("/etc/passwd"),
        "{scripts}"
    );
    let (status, _) = t
        .post("/v1/track", &json!({"userId": "u", "event": "E"}))
        .await;
    assert_eq!(status, 200);
    let runs = t.wait_run_count(1, 10).await;
    let err = runs[0].error.as_ref().expect("env::secret refused");
    assert!(err.message.contains("not allowed"), "{err:?}");
    assert!(runs[0].logs.is_empty());
}
