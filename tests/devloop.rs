//! The developer loop through the real binary: `spur run` (dry run and --live),
//! `spur test` (passing and failing suites), `spur replay` (against a running daemon
//! and against its data dir). Run with: cargo nextest run --test devloop

mod common;

use std::path::Path;
use std::process::Command;

use common::{Daemon, base_config};
use serde_json::json;
use spur::testing::FakeHttp;

fn spur(cwd: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_spur"))
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn spur_async(cwd: &Path, args: &[&str]) -> (i32, String, String) {
    let cwd = cwd.to_path_buf();
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        spur(&cwd, &args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .unwrap()
}

const ALERT: &str = r##"
import "slack" as slack;
on_track("Order Completed", |e| {
    let total = e.properties?.total ?? 0;
    if total < 100 { skip(`small order (${total})`); }
    slack::post("#sales", `${e.userId} spent ${total}`);
    log::info("alerted");
});
on_track("Refund Requested", |e| { fail("refunds need a human"); });
"##;

#[test]
fn run_prints_the_calls_a_handler_would_make_and_reflects_the_outcome() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("alert.rhai"), ALERT).unwrap();
    let single = json!({"type": "track", "event": "Order Completed", "userId": "ada", "properties": {"total": 250}});
    std::fs::write(dir.path().join("one.json"), single.to_string()).unwrap();
    let (code, out, err) = spur(dir.path(), &["run", "alert.rhai", "--event", "one.json"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("✔ alert · on_track(Order Completed)#0 · ok"),
        "{out}"
    );
    assert!(out.contains("[info] alerted"), "{out}");
    assert!(
        out.contains("→ POST https://slack.invalid/chat.postMessage (dry run)"),
        "{out}"
    );
    assert!(
        out.contains(r##"{"channel":"#sales","text":"ada spent 250"}"##),
        "{out}"
    );

    // An array, and a batch body; a failing handler makes the exit status 1.
    let array = json!([
        {"type": "track", "event": "Order Completed", "userId": "bo", "properties": {"total": 5}},
        {"type": "track", "event": "Refund Requested", "userId": "bo"}
    ]);
    std::fs::write(dir.path().join("many.json"), array.to_string()).unwrap();
    let (code, out, _) = spur(dir.path(), &["run", "alert.rhai", "--event", "many.json"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("skipped: small order (5)"), "{out}");
    assert!(
        out.contains("✘ alert · on_track(Refund Requested)#0 · failed"),
        "{out}"
    );
    assert!(out.contains("refunds need a human"), "{out}");
    let batch = json!({"batch": [{"type": "track", "event": "Order Completed", "userId": "cy", "properties": {"total": 900}}], "context": {"ip": "203.0.113.1"}});
    std::fs::write(dir.path().join("batch.json"), batch.to_string()).unwrap();
    let (code, out, _) = spur(dir.path(), &["run", "alert.rhai", "--event", "batch.json"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("cy spent 900"), "{out}");
    // A sample event by type.
    let (code, out, _) = spur(dir.path(), &["run", "alert.rhai", "--event", "track"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Order Completed"), "{out}");
    // Bad input names the problem.
    std::fs::write(
        dir.path().join("bad.json"),
        r#"{"type": "track", "userId": "u"}"#,
    )
    .unwrap();
    let (code, _, err) = spur(dir.path(), &["run", "alert.rhai", "--event", "bad.json"]);
    assert_eq!(code, 2);
    assert!(err.contains("track requires `event`"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_live_sends_through_the_configured_connection() {
    let mut fake = FakeHttp::start(|_| {
        spur::testing::Reply::json(200, &json!({"ok": true, "ts": "9.9", "channel": "C9"}))
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("alert.rhai"), ALERT).unwrap();
    std::fs::write(
        dir.path().join("spur.toml"),
        format!(
            "[connections.slack]\nbase_url = \"{}\"\nbearer = \"xoxb-live\"\n",
            fake.base_url
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("e.json"),
        json!({"type": "track", "event": "Order Completed", "userId": "ada", "properties": {"total": 250}}).to_string(),
    )
    .unwrap();
    let (code, out, err) = spur_async(
        dir.path(),
        &["run", "alert.rhai", "--event", "e.json", "--live"],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let req = fake.next(5).await;
    assert_eq!(req.path, "/chat.postMessage");
    assert_eq!(req.header("authorization"), Some("Bearer xoxb-live"));
    assert!(
        out.contains(&format!("→ POST {}/chat.postMessage 200", fake.base_url)),
        "{out}"
    );
}

#[test]
fn test_command_reports_like_cargo_test_and_fails_on_failure() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/scripts");
    let (code, out, err) = spur(&fixtures, &["test", "suite_pass"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("test a nudge after three idle days ... ok"),
        "{out}"
    );
    assert!(out.contains("test result: ok. 4 passed; 0 failed"), "{out}");
    let (code, out, _) = spur(&fixtures, &["test", "suite_fail"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("test this one fails ... FAILED"), "{out}");
    assert!(out.contains("expected a POST /chat.postMessage call; no calls were made (suite_fail/broken_test.rhai:4:13)"), "{out}");
    assert!(
        out.contains("test result: FAILED. 1 passed; 1 failed"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_runs_recorded_events_through_the_current_scripts_without_sending() {
    let mut fake = FakeHttp::ok().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("scripts")).unwrap();
    let base = fake.base_url.clone();
    let version = |v: &str| {
        format!(
            r#"on_track(|e| {{ http::post("{base}/hook", #{{ v: "{v}", user: e.userId }}); }});"#
        )
    };
    std::fs::write(dir.path().join("scripts/hook.rhai"), version("v1")).unwrap();
    std::fs::write(dir.path().join("spur.toml"), base_config(dir.path(), "")).unwrap();
    let daemon = Daemon::start(dir.path());
    let client = common::client();
    for user in ["a", "b", "c"] {
        client
            .post(format!("{}/v1/track", daemon.base))
            .json(&json!({"userId": user, "event": "E"}))
            .send()
            .await
            .unwrap();
    }
    for _ in 0..3 {
        fake.next(10).await;
    }
    let config = dir.path().join("spur.toml");
    let config = config.to_str().unwrap();
    // The change to try: v2. Replay while the daemon runs (through its API).
    std::fs::write(dir.path().join("scripts/hook.rhai"), version("v2")).unwrap();
    let (code, out, err) = spur_async(
        dir.path(),
        &[
            "--config",
            config,
            "replay",
            "--since",
            "1h",
            "--url",
            &daemon.base,
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("replaying 3 events"), "{out}");
    assert_eq!(out.matches(r#""v":"v2""#).count(), 3, "{out}");
    assert!(
        out.contains("3 events, 3 runs (3 ok), 3 outbound calls"),
        "{out}"
    );
    drop(daemon);
    // Without a daemon: the data dir is read directly.
    let (code, out, err) = spur_async(
        dir.path(),
        &[
            "--config", config, "replay", "--since", "1h", "--script", "hook",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("3 events, 3 runs (3 ok)"), "{out}");
    assert_eq!(fake.received().len(), 3, "dry-run replays sent nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_live_delivers_segment_write_back_before_exiting() {
    let mut fake = FakeHttp::ok().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("wb.rhai"),
        r#"on_track(|e| { segment::track(#{ userId: e.userId, event: "Echoed" }); });"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("spur.toml"),
        format!(
            "[segment]\nwrite_key = \"WK\"\napi_base = \"{}\"\n",
            fake.base_url
        ),
    )
    .unwrap();
    let (code, out, err) = spur_async(
        dir.path(),
        &["run", "wb.rhai", "--event", "track", "--live"],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let req = fake.next(5).await;
    assert_eq!(req.path, "/v1/batch");
    assert_eq!(req.json.unwrap()["batch"][0]["event"], "Echoed");
}
