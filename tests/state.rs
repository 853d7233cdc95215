//! State through real runs and the command line: concurrent increments lose nothing,
//! TTLs expire, CAS conflicts, values persist across kill -9, and `spur state` /
//! `spur approvals` talk to a running daemon. Run with: cargo nextest run --test state

mod common;

use std::process::Command;

use common::{Backend, Daemon, TestApp, base_config};
use serde_json::{Value, json};

common::on_both_backends!(
    concurrent_increments_from_many_runs_lose_no_update,
    ttl_cas_keys_and_typed_values,
    state_persists_across_kill9_and_the_cli_reads_and_writes_it,
);

async fn concurrent_increments_from_many_runs_lose_no_update(backend: Backend) {
    let t = TestApp::builder()
        .backend(backend)
        .script(
            "count.rhai",
            r#"on_track("Hit", |e| {
                state::shared::incr("total");
                state::incr(`per_user:${e.userId}`, 2);
            });"#,
        )
        .start()
        .await;
    let batch: Vec<Value> = (0..300)
        .map(|i| json!({"type": "track", "userId": format!("u{}", i % 30), "event": "Hit"}))
        .collect();
    t.post("/v1/batch", &json!({ "batch": batch })).await;
    t.wait_run_count(300, 30).await;
    let (_, shared) = t.admin_get("/api/state/shared/total").await;
    assert_eq!(shared["value"], 300, "{shared}");
    let (_, one) = t.admin_get("/api/state/count/per_user:u7").await;
    assert_eq!(one["value"], 20);
}

async fn ttl_cas_keys_and_typed_values(backend: Backend) {
    let t = TestApp::builder()
        .backend(backend)
        .script(
            "s.rhai",
            r#"on_track(|e) {
                state::set("short", "x", 1);
                state::set("long", #{ a: [1, 2] }, "10m");
                let first = state::cas("lock", (), "mine");
                let second = state::cas("lock", (), "theirs");
                let swapped = state::cas("lock", "mine", "done");
                log::info(`${first} ${second} ${swapped} ${state::get("lock")} ${state::keys("l")}`);
            });"#
            .replace("|e) {", "|e| {")
            .as_str(),
        )
        .script("later.rhai", r#"on_track("Later", |e| { log::info(`${state::get("short", "gone")}`); });"#)
        .start()
        .await;
    t.post("/v1/track", &json!({"userId": "u", "event": "First"}))
        .await;
    let runs = t.wait_run_count(1, 10).await;
    assert_eq!(
        runs[0].logs[0].message,
        r#"true false true done ["lock", "long"]"#
    );
    let (_, long) = t.admin_get("/api/state/s/long").await;
    assert_eq!(long["value"], json!({"a": [1, 2]}));
    assert!(long["expires_at"].is_string());
    // Expiry itself is covered without waiting in `state::tests` (a zero TTL).
}

fn spur(dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_spur"))
        .arg("--config")
        .arg(dir.join("spur.toml"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn state_persists_across_kill9_and_the_cli_reads_and_writes_it(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = backend.start(dir.path());
    std::fs::create_dir_all(dir.path().join("scripts")).unwrap();
    std::fs::write(
        dir.path().join("scripts/tally.rhai"),
        r#"on_track(|e| { let n = state::incr("seen"); if n == 3 { approval::ask(#{ title: "Third event: continue?" }); } });"#,
    )
    .unwrap();
    // A fixed port, so the CLI finds the daemon through the config.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = base_config(dir.path(), &store.config_with("")).replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    );
    std::fs::write(dir.path().join("spur.toml"), cfg).unwrap();
    let daemon = Daemon::start(dir.path());
    let client = common::client();
    for _ in 0..3 {
        client
            .post(format!("{}/v1/track", daemon.base))
            .json(&json!({"userId": "u", "event": "E"}))
            .send()
            .await
            .unwrap();
    }
    let runs: Value = daemon.get("/api/runs?status=waiting&wait=10s").await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), 1, "{runs}");
    daemon.kill9();
    let daemon = Daemon::start(dir.path());
    let d = dir.path().to_path_buf();
    let cli = move |args: Vec<&str>| {
        let d = d.clone();
        let args: Vec<String> = args.into_iter().map(str::to_owned).collect();
        tokio::task::spawn_blocking(move || {
            spur(&d, &args.iter().map(String::as_str).collect::<Vec<_>>())
        })
    };
    let (code, out, err) = cli(vec!["state", "get", "tally", "seen"]).await.unwrap();
    assert_eq!((code, out.trim()), (0, "3"), "{err}");
    let (code, out, _) = cli(vec![
        "state",
        "set",
        "shared",
        "flag",
        "{\"on\": true}",
        "--ttl",
        "1h",
    ])
    .await
    .unwrap();
    assert_eq!((code, out.trim()), (0, "flag = {\"on\":true}"));
    let (code, out, _) = cli(vec!["state", "list", "shared"]).await.unwrap();
    assert_eq!((code, out.trim()), (0, "flag = {\"on\":true}"));
    let (code, out, _) = cli(vec!["state", "del", "shared", "flag"]).await.unwrap();
    assert_eq!((code, out.trim()), (0, "deleted"));
    let (code, _, err) = cli(vec!["state", "get", "shared", "flag"]).await.unwrap();
    assert_eq!(code, 2);
    assert!(err.contains("no state key \"flag\""), "{err}");

    let (code, out, _) = cli(vec!["approvals", "list"]).await.unwrap();
    assert_eq!(code, 0);
    assert!(
        out.contains("Third event: continue?") && out.contains("pending"),
        "{out}"
    );
    let id = out.split_whitespace().next().unwrap().to_owned();
    let (code, out, _) = cli(vec![
        "approvals",
        "approve",
        &id,
        "--by",
        "ops",
        "--comment",
        "fine",
    ])
    .await
    .unwrap();
    assert_eq!(
        (code, out.trim().to_owned()),
        (0, format!("{id} approved by ops"))
    );
    let (code, _, err) = cli(vec!["approvals", "reject", &id]).await.unwrap();
    assert_eq!(code, 2, "a second decision is refused");
    assert!(err.contains("409"), "{err}");
    let runs: Value = daemon.get("/api/runs?status=ok&wait=10s").await;
    assert_eq!(runs["runs"][0]["decisions"][0]["by"], "ops");
}
