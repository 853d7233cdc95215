//! Durable runs: the effect journal (retries never repeat effects), sleeps and
//! `wait_for`, pinned script versions — across kill -9.
//! Run with: cargo nextest run --test durable

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::sink::{counting, step};
use common::{Backend, Daemon, TestApp, base_config};
use serde_json::{Value, json};
use spur::run::{RunRecord, RunStatus};

common::on_both_backends!(
    a_retry_after_a_failing_third_call_does_not_repeat_the_first_two,
    sleep_and_wait_for_survive_kill9_and_fire_on_time,
    a_run_keeps_its_script_version_across_a_restart_with_an_edited_script,
    parked_runs_hold_no_worker,
);

/// Long-polls until `n` runs are parked on `what` (`sleep`, `event`, `approval`).
async fn parked_on(daemon: &Daemon, what: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut after = 0;
    loop {
        let v = daemon
            .get(&format!("/api/runs?status=waiting&wait=5s&after={after}"))
            .await;
        let runs = daemon.get("/api/runs?status=waiting").await;
        let on: Vec<&Value> = runs["runs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["waiting_for"]["for"] == what)
            .collect();
        if on.len() >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "runs never parked on {what}: {runs}"
        );
        after = v["runs"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["id"].as_u64())
            .max()
            .unwrap_or(after);
    }
}

async fn a_retry_after_a_failing_third_call_does_not_repeat_the_first_two(backend: Backend) {
    // A POST that got a 500 may have acted: it is not re-sent within the call; the
    // run is retried, and that retry sends only /c again.
    let (fake, counts) = counting(&[("/c", 1)]).await;
    let script = format!(
        r#"on_track("Sync", |e| {{
            log::info(`id=${{uuid()}} at=${{time::now()}}`);
            http::post("{b}/a", #{{ step: 1 }});
            let n = state::incr("synced");
            http::post("{b}/b", #{{ step: 2, n: n }});
            let r = http::post("{b}/c", #{{ step: 3 }});
            if !r.ok {{ throw `c answered ${{r.status}}`; }}
            log::info(`n=${{n}}`);
        }});"#,
        b = fake.base_url
    );
    let t = TestApp::builder()
        .backend(backend)
        .script("sync.rhai", &script)
        .config("[retry]\nbase_ms = 20")
        .start()
        .await;
    t.post("/v1/track", &json!({"userId": "u", "event": "Sync"}))
        .await;
    let runs = t
        .wait_runs(15, |r| r.iter().any(|r| r.status == RunStatus::Ok))
        .await;
    let c = counts.lock().clone();
    assert_eq!(
        (c["/a"], c["/b"], c["/c"]),
        (1, 1, 2),
        "only the failed call is repeated"
    );
    let mut mine: Vec<&RunRecord> = runs.iter().collect();
    mine.sort_by_key(|r| r.id);
    assert_eq!(
        mine.iter().map(|r| r.status).collect::<Vec<_>>(),
        [RunStatus::Retrying, RunStatus::Ok]
    );
    assert_eq!(
        mine[1].calls.len(),
        1,
        "the second execution sent only /c: {:?}",
        mine[1].calls
    );
    assert_eq!(
        mine[1].logs[1].message, "n=1",
        "state::incr is not applied twice"
    );
    assert_eq!(
        mine[0].logs[0].message, mine[1].logs[0].message,
        "uuid() and time::now() are the same on the retry"
    );
    let received = fake.received();
    let keys: Vec<&str> = received
        .iter()
        .filter(|r| r.path == "/c")
        .map(|r| r.header("idempotency-key").unwrap())
        .collect();
    assert_eq!(keys.len(), 2);
    assert!(
        keys.iter().all(|k| *k == keys[0]),
        "the repeated call carries the same idempotency key"
    );
    assert!(keys[0].starts_with("spur-"));
}

async fn sleep_and_wait_for_survive_kill9_and_fire_on_time(backend: Backend) {
    let (mut fake, counts) = counting(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let store = backend.start(dir.path());
    std::fs::create_dir_all(dir.path().join("scripts")).unwrap();
    let script = format!(
        r#"on_identify(|e| {{
            time::sleep("2s");
            http::post("{b}/notify", #{{ step: "slept", user: e.userId }});
            let done = wait_for(#{{ event: "Project Created", userId: e.userId }}, "2s");
            http::post("{b}/notify", #{{ step: "waited", user: e.userId, matched: done != (), project: done?.properties?.name }});
        }});"#,
        b = fake.base_url
    );
    std::fs::write(dir.path().join("scripts/onboarding.rhai"), script).unwrap();
    std::fs::write(
        dir.path().join("spur.toml"),
        base_config(dir.path(), &store.config_with("")),
    )
    .unwrap();
    let daemon = Daemon::start(dir.path());
    let client = common::client();
    let started = Instant::now();
    for user in ["active", "idle"] {
        let r = client
            .post(format!("{}/v1/identify", daemon.base))
            .json(&json!({"userId": user, "traits": {"plan": "trial"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // Both runs sleep; crash while they do.
    parked_on(&daemon, "sleep", 2).await;
    daemon.kill9();
    let daemon = Daemon::start(dir.path());
    for i in 0..2 {
        step(&mut fake, "slept", i).await;
        assert!(
            started.elapsed() >= Duration::from_secs(2),
            "not woken early"
        );
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "woken on time: {:?}",
            started.elapsed()
        );
    }
    // Events before a wait began do not count: send once both wait.
    parked_on(&daemon, "event", 2).await;
    let r = client
        .post(format!("{}/v1/track", daemon.base))
        .json(&json!({"userId": "active", "event": "Project Created", "properties": {"name": "Apollo"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut outcomes = HashMap::new();
    for i in 0..2 {
        let w = step(&mut fake, "waited", i).await;
        outcomes.insert(w["user"].as_str().unwrap().to_owned(), w);
    }
    assert_eq!(outcomes["active"]["matched"], true);
    assert_eq!(outcomes["active"]["project"], "Apollo");
    assert_eq!(outcomes["idle"]["matched"], false, "timed out with ()");
    assert!(started.elapsed() >= Duration::from_secs(4));
    assert_eq!(
        counts.lock()["/notify"],
        4,
        "each user woken once from the sleep and once from the wait"
    );
    drop(daemon);
}

async fn a_run_keeps_its_script_version_across_a_restart_with_an_edited_script(backend: Backend) {
    let (mut fake, _) = counting(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let store = backend.start(dir.path());
    std::fs::create_dir_all(dir.path().join("scripts")).unwrap();
    let b = fake.base_url.clone();
    let version = |v: &str| {
        format!(
            r#"on_track(|e| {{
                http::post("{b}/notify", #{{ step: "before", v: "{v}" }});
                time::sleep("1s");
                http::post("{b}/notify", #{{ step: "after", v: "{v}" }});
            }});"#
        )
    };
    std::fs::write(dir.path().join("scripts/flow.rhai"), version("v1")).unwrap();
    std::fs::write(
        dir.path().join("spur.toml"),
        base_config(dir.path(), &store.config_with("")),
    )
    .unwrap();
    let daemon = Daemon::start(dir.path());
    let client = common::client();
    client
        .post(format!("{}/v1/track", daemon.base))
        .json(&json!({"userId": "u", "event": "Go"}))
        .send()
        .await
        .unwrap();
    assert_eq!(step(&mut fake, "before", 0).await["v"], "v1");
    parked_on(&daemon, "sleep", 1).await;
    daemon.kill9();
    std::fs::write(dir.path().join("scripts/flow.rhai"), version("v2")).unwrap();
    let daemon = Daemon::start(dir.path());
    assert_eq!(
        step(&mut fake, "after", 0).await["v"],
        "v1",
        "the parked run finished on v1"
    );
    client
        .post(format!("{}/v1/track", daemon.base))
        .json(&json!({"userId": "w", "event": "Go"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        step(&mut fake, "before", 1).await["v"],
        "v2",
        "new runs use v2"
    );
}

async fn parked_runs_hold_no_worker(backend: Backend) {
    let t = TestApp::builder()
        .backend(backend)
        .script(
            "park.rhai",
            r#"
            on_track("Wait", |e| { wait_for(#{ event: "Never", userId: e.userId }, "1h"); });
            on_track("Work", |e| { state::incr("done"); });
            "#,
        )
        .start()
        .await;
    let batch: Vec<Value> = (0..500)
        .map(|i| json!({"type": "track", "userId": format!("p{i}"), "event": "Wait"}))
        .collect();
    t.post("/v1/batch", &json!({ "batch": batch })).await;
    t.wait_runs(30, |r| {
        r.iter().filter(|r| r.status == RunStatus::Waiting).count() == 500
    })
    .await;
    let batch: Vec<Value> = (0..100)
        .map(|i| json!({"type": "track", "userId": format!("p{i}"), "event": "Work"}))
        .collect();
    t.post("/v1/batch", &json!({ "batch": batch })).await;
    let runs = t
        .wait_runs(30, |r| {
            r.iter().filter(|r| r.status == RunStatus::Ok).count() == 100
        })
        .await;
    assert_eq!(
        runs.len(),
        600,
        "4 workers, 500 parked runs, and every new event still ran"
    );
    let (_, waiting) = t.admin_get("/api/runs?status=waiting&limit=1000").await;
    assert_eq!(waiting["runs"].as_array().unwrap().len(), 500);
}
