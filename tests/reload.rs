//! Live reload through the running daemon: edits are live within a second, broken
//! saves keep the last good version (error listed), fixes and deletes apply, editor
//! save patterns work, stdlib overrides reload, and runs keep their version.
//! Run with: cargo nextest run --test reload

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::TestApp;
use serde_json::json;
use spur::run::RunStatus;

fn script(version: &str) -> String {
    format!(r#"on_track("Ping", |e| {{ log::info("{version}"); }});"#)
}

/// Writes `text` to `path` and waits (bounded) until a reload has loaded it;
/// returns the save-to-live latency. One write can wake the watcher more than once
/// (truncate, then write), so the first reload after it may still show an earlier
/// content: what counts is what the reload took.
async fn save(t: &TestApp, path: &Path, text: &str) -> Duration {
    let file = in_scripts(t, path);
    reload_until(
        t,
        || std::fs::write(path, text).unwrap(),
        |set| loaded(set, file, text),
    )
    .await
}

/// [`save`] of a text that does not compile: waits until its error is listed.
async fn save_broken(t: &TestApp, path: &Path, text: &str) {
    let file = in_scripts(t, path);
    reload_until(
        t,
        || std::fs::write(path, text).unwrap(),
        |set| {
            set.errors
                .iter()
                .any(|e| Path::new(&e.file).ends_with(file))
        },
    )
    .await;
}

/// Whether `set` holds `file` with exactly `text`, and no error for it.
fn loaded(set: &spur::script::ScriptSet, file: &Path, text: &str) -> bool {
    let failed = set
        .errors
        .iter()
        .any(|e| Path::new(&e.file).ends_with(file));
    // Modules keep no text: one loaded from this file, without an error, counts.
    !failed
        && (set
            .scripts
            .iter()
            .any(|s| s.path.ends_with(file) && &*s.source == text)
            || set
                .module_sources
                .iter()
                .any(|(_, f)| Path::new(f).ends_with(file)))
}

/// `path` from the test's dir on (`scripts/lib/greet.rhai`), so an override is not
/// taken for the built-in module of its name (`stdlib/slack.rhai`).
fn in_scripts<'a>(t: &TestApp, path: &'a Path) -> &'a Path {
    path.strip_prefix(t.dir.path()).unwrap()
}

/// Makes `change` to the scripts directory, then waits (bounded) for a reload whose
/// set satisfies `took`: a reload left over from an earlier change never counts.
async fn reload_until(
    t: &TestApp,
    change: impl FnOnce(),
    took: impl Fn(&spur::script::ScriptSet) -> bool,
) -> Duration {
    let mut changed = t.app.scripts.subscribe();
    changed.borrow_and_update();
    let saved = Instant::now();
    change();
    loop {
        if took(&t.app.scripts.get()) {
            return saved.elapsed();
        }
        tokio::time::timeout(Duration::from_secs(5), changed.changed())
            .await
            .expect("reloaded within 5 s")
            .unwrap();
    }
}

async fn ping(t: &TestApp, n: usize) -> String {
    t.post("/v1/track", &json!({"userId": "u", "event": "Ping"}))
        .await;
    let runs = t.wait_run_count(n, 10).await;
    runs[0]
        .logs
        .first()
        .map(|l| l.message.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_go_live_broken_saves_keep_the_last_good_version() {
    let t = TestApp::builder()
        .script("ping.rhai", &script("v1"))
        .start()
        .await;
    let dir = t.dir.path().join("scripts");
    let file = dir.join("ping.rhai");
    assert_eq!(ping(&t, 1).await, "v1");

    let latency = save(&t, &file, &script("v2")).await;
    eprintln!("save-to-live latency: {latency:?}");
    assert!(latency < Duration::from_secs(1), "{latency:?}");
    assert_eq!(ping(&t, 2).await, "v2");

    save_broken(
        &t,
        &file,
        "on_track(\"Ping\", |e| {\n    log::info(\"v3\";\n});",
    )
    .await;
    let (_, scripts) = t.admin_get("/api/scripts").await;
    let err = &scripts["errors"][0];
    assert!(
        err["file"].as_str().unwrap().ends_with("ping.rhai"),
        "{scripts}"
    );
    assert_eq!(err["line"], 2, "{err}");
    assert_eq!(
        ping(&t, 3).await,
        "v2",
        "the last good version keeps serving"
    );

    save(&t, &file, &script("v4")).await;
    let (_, scripts) = t.admin_get("/api/scripts").await;
    assert!(scripts["errors"].as_array().unwrap().is_empty());
    assert_eq!(ping(&t, 4).await, "v4");

    // Editor pattern: write a temp file, then rename over the script.
    let v5 = script("v5");
    reload_until(
        &t,
        || {
            std::fs::write(dir.join(".ping.rhai.swp"), &v5).unwrap();
            std::fs::rename(dir.join(".ping.rhai.swp"), &file).unwrap();
        },
        |set| loaded(set, in_scripts(&t, &file), &v5),
    )
    .await;
    assert_eq!(ping(&t, 5).await, "v5");

    // Truncate, then write in two steps.
    save(&t, &file, "").await;
    save(&t, &file, &script("v6")).await;
    assert_eq!(ping(&t, 6).await, "v6");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_script_removes_its_handlers() {
    let t = TestApp::builder()
        .script("ping.rhai", &script("v1"))
        .script(
            "sentinel.rhai",
            r#"on_track("Sentinel", |e| { log::info("sentinel"); });"#,
        )
        .start()
        .await;
    let file = t.dir.path().join("scripts/ping.rhai");
    reload_until(
        &t,
        || std::fs::remove_file(&file).unwrap(),
        |set| !set.scripts.iter().any(|s| s.path.ends_with("ping.rhai")),
    )
    .await;
    t.post("/v1/track", &json!({"userId": "u", "event": "Ping"}))
        .await;
    t.post("/v1/track", &json!({"userId": "u", "event": "Sentinel"}))
        .await;
    let runs = t
        .wait_runs(10, |r| r.iter().any(|r| r.script == "sentinel"))
        .await;
    assert_eq!(
        runs.len(),
        1,
        "the deleted script's handler did not run: {runs:?}"
    );
    let (_, scripts) = t.admin_get("/api/scripts").await;
    assert_eq!(scripts["scripts"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdlib_override_reloads_too() {
    let t = TestApp::builder()
        .script(
            "alert.rhai",
            r##"on_track("Ping", |e| { slack::post("#x", "hi"); log::info("sent"); });"##,
        )
        .config("[retry]\nmax_attempts = 1")
        .start()
        .await;
    let run = ping(&t, 1).await;
    assert_eq!(run, "", "the real slack module needs a connection: {run:?}");
    let override_file = t.dir.path().join("scripts/slack.rhai");
    save(
        &t,
        &override_file,
        r#"fn post(channel, text) { log::info(`override ${channel} ${text}`); }"#,
    )
    .await;
    assert_eq!(ping(&t, 2).await, "override #x hi");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_in_flight_keeps_the_version_it_started_on() {
    let v = |n: &str| {
        format!(
            r#"on_track("Ping", |e| {{ log::info("{n} before"); time::sleep("1s"); log::info("{n} after"); }});"#
        )
    };
    let t = TestApp::builder()
        .script("ping.rhai", &v("v1"))
        .start()
        .await;
    t.post("/v1/track", &json!({"userId": "u", "event": "Ping"}))
        .await;
    t.wait_runs(10, |r| r.iter().any(|r| r.status == RunStatus::Waiting))
        .await;
    save(&t, &t.dir.path().join("scripts/ping.rhai"), &v("v2")).await;
    let runs = t
        .wait_runs(10, |r| r.iter().any(|r| r.status == RunStatus::Ok))
        .await;
    assert_eq!(
        runs[0]
            .logs
            .iter()
            .map(|l| l.message.as_str())
            .collect::<Vec<_>>(),
        ["v1 before", "v1 after"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_lib_module_keeps_its_last_good_version() {
    let t = TestApp::builder()
        .script(
            "ping.rhai",
            r#"on_track("Ping", |e| { log::info(greet::hello(e.userId)); });"#,
        )
        .start()
        .await;
    let lib = t.dir.path().join("scripts/lib");
    // A new directory is a change too: let its reload pass first, so the next save
    // waits for the reload that sees the module.
    let mut changed = t.app.scripts.subscribe();
    changed.borrow_and_update();
    std::fs::create_dir_all(&lib).unwrap();
    tokio::time::timeout(Duration::from_secs(5), changed.changed())
        .await
        .expect("reloaded within 5 s")
        .unwrap();
    save(
        &t,
        &lib.join("greet.rhai"),
        r#"fn hello(who) { `hello ${who}` }"#,
    )
    .await;
    assert_eq!(ping(&t, 1).await, "hello u");
    save_broken(&t, &lib.join("greet.rhai"), "fn hello(who) { `hi ${who` }").await;
    let (_, scripts) = t.admin_get("/api/scripts").await;
    assert!(
        scripts["errors"][0]["file"]
            .as_str()
            .unwrap()
            .ends_with("greet.rhai"),
        "{scripts}"
    );
    assert_eq!(
        ping(&t, 2).await,
        "hello u",
        "the last good module keeps serving"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_replayed_after_a_fix_runs_the_fixed_script() {
    let t = TestApp::builder()
        .script(
            "ping.rhai",
            r#"on_track("Ping", |e| { fail("bug in v1"); });"#,
        )
        .start()
        .await;
    t.post("/v1/track", &json!({"userId": "u", "event": "Ping"}))
        .await;
    t.wait_runs(10, |r| r.iter().any(|r| r.status == RunStatus::Failed))
        .await;
    save(
        &t,
        &t.dir.path().join("scripts/ping.rhai"),
        &script("fixed"),
    )
    .await;
    let (_, dead) = t.admin_get("/api/dead-letters").await;
    let id = dead["dead_letters"][0]["id"].as_u64().unwrap();
    let (status, _) = t
        .admin_post(&format!("/api/dead-letters/{id}/replay"), &json!({}))
        .await;
    assert_eq!(status, 200);
    let runs = t
        .wait_runs(10, |r| r.iter().any(|r| r.status == RunStatus::Ok))
        .await;
    assert_eq!(runs[0].logs[0].message, "fixed");
}
