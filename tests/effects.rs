//! Durable effects through the real binary, with SIGKILL: a run's state change and
//! its journal entry commit together (never one without the other), and nothing
//! leaves the process before what the run wrote earlier is durable.
//! Run with: cargo nextest run --test effects

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use common::{Daemon, base_config};
use serde_json::{Value, json};
use spur::testing::{FakeHttp, Reply};

fn setup(script: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("scripts")).unwrap();
    std::fs::write(dir.path().join("scripts/pay.rhai"), script).unwrap();
    std::fs::write(
        dir.path().join("spur.toml"),
        base_config(dir.path(), "[retry]\nbase_ms = 10"),
    )
    .unwrap();
    dir
}

/// The state entries of script `pay`, by key.
async fn counters(daemon: &Daemon) -> HashMap<String, i64> {
    let v = daemon.get("/api/state/pay?limit=10000").await;
    v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["key"].as_str().unwrap().to_owned(),
                e["value"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_leaves_only_after_the_runs_earlier_state_change_is_durable() {
    // The service kills the daemon the moment the first request arrives: if the
    // state change before the call were not durable yet, it would be lost.
    let pid = Arc::new(AtomicU32::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let (p, c) = (Arc::clone(&pid), Arc::clone(&calls));
    let mut api = FakeHttp::start(move |_| {
        if c.fetch_add(1, Ordering::SeqCst) == 0 {
            let _ = std::process::Command::new("kill")
                .args(["-9", &p.load(Ordering::SeqCst).to_string()])
                .status();
        }
        Reply::json(200, &json!({"ok": true}))
    })
    .await;
    let dir = setup(&format!(
        r#"on_track("Buy", |e| {{
            let n = state::incr("n");
            http::post("{}/charge", #{{ order: e.properties.order, n: n }});
            state::set("done", n);
        }});"#,
        api.base_url
    ));
    let daemon = Daemon::start(dir.path());
    pid.store(daemon.pid(), Ordering::SeqCst);
    let r = common::client()
        .post(format!("{}/v1/track", daemon.base))
        .json(&json!({"userId": "u", "event": "Buy", "properties": {"order": 7}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let first = api.next(20).await;
    assert_eq!(first.json.as_ref().unwrap()["n"], 1);
    daemon.kill9();
    // What was on disk when the call arrived (the daemon died right then).
    {
        use spur::state::StateStore as _;
        let store = spur::store::Store::open(&dir.path().join("data")).unwrap();
        let state = spur::state::SledState::open(&store).unwrap();
        assert_eq!(
            state.get("pay", "n").unwrap(),
            Some(json!(1)),
            "the state change was durable before the call left"
        );
    }

    // After the restart the run executes again: the journaled incr returns 1 (the
    // change survived the kill, and is not applied a second time), and the call
    // whose outcome was unknown is sent again, with the same Idempotency-Key.
    let daemon = Daemon::start(dir.path());
    let second = api.next(20).await;
    assert_eq!(second.json.as_ref().unwrap()["n"], 1);
    assert_eq!(
        first.header("idempotency-key"),
        second.header("idempotency-key")
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let state = loop {
        let state = counters(&daemon).await;
        if state.contains_key("done") {
            break state;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the run never finished: {state:?}"
        );
        let _ = daemon.get("/api/runs?status=ok&wait=2s").await;
    };
    assert_eq!(state["n"], 1, "incremented once across the crash");
    assert_eq!(state["done"], 1);
}

fn post_batch(
    client: &reqwest::Client,
    base: &str,
    ids: &[String],
) -> impl std::future::Future<Output = bool> {
    let batch: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| json!({"type": "track", "userId": format!("user-{}", i % 7), "event": "Tick", "messageId": id}))
        .collect();
    let req = client
        .post(format!("{base}/v1/batch"))
        .json(&json!({ "batch": batch }))
        .send();
    async move { req.await.is_ok_and(|r| r.status().as_u16() == 200) }
}

/// The issue's crash test: handlers increment per-user state and call a service
/// while batches stream in; the daemon is killed ten times. After the last
/// restart, every acknowledged event was handled, and the counters add up to the
/// number of distinct events handled: no increment lost, none doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_match_distinct_events_handled_across_ten_kill9s() {
    let mut sink = FakeHttp::start(|_| Reply::json(200, &json!({"ok": true}))).await;
    let dir = setup(&format!(
        r#"on_track("Tick", |e| {{
            let n = state::incr(`n:${{e.userId}}`);
            http::post("{}/seen", #{{ id: e.messageId, user: e.userId, n: n }});
        }});"#,
        sink.base_url
    ));
    let client = common::client();
    let mut acked: HashSet<String> = HashSet::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut batch_no = 0;
    for kill in 0..=10 {
        let daemon = Daemon::start(dir.path());
        // Stream until a few batches were acknowledged and handlers ran, then kill.
        let target = acked.len() + 150;
        while acked.len() < target {
            let ids: Vec<String> = (0..25)
                .map(|i| format!("k{kill}-b{batch_no}-{i}"))
                .collect();
            batch_no += 1;
            if post_batch(&client, &daemon.base, &ids).await {
                acked.extend(ids);
            }
        }
        while let Ok(r) = sink.requests.try_recv() {
            seen.extend(
                r.json
                    .as_ref()
                    .and_then(|j| j["id"].as_str())
                    .map(str::to_owned),
            );
        }
        if kill < 10 {
            // Mid-stream: the last batch's runs are most likely still going.
            daemon.kill9();
            continue;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while !acked.is_subset(&seen) {
            let req = tokio::time::timeout_at(deadline, sink.requests.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "{} acknowledged events never handled",
                        acked.difference(&seen).count()
                    )
                })
                .unwrap();
            seen.extend(
                req.json
                    .as_ref()
                    .and_then(|j| j["id"].as_str())
                    .map(str::to_owned),
            );
        }
        let total: i64 = counters(&daemon).await.values().sum();
        assert_eq!(
            total,
            seen.len() as i64,
            "the counters add up to the distinct events handled ({} acknowledged)",
            acked.len()
        );
        assert_eq!(seen.len(), acked.len());
    }
}

/// A run that only changes state costs no flush of its own, and the changes of
/// many concurrent runs of a shared key add up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_runs_of_a_shared_counter_lose_no_update() {
    let t = common::TestApp::builder()
        .script(
            "big.rhai",
            r#"on_track("Order", |e| { if e.properties.total > 100 { state::incr("big"); } state::incr(`per:${e.userId}`); });"#,
        )
        .start()
        .await;
    let n = 400;
    let items: Vec<Value> = (0..n)
        .map(|i| json!({"type": "track", "event": "Order", "userId": format!("u{}", i % 13), "properties": {"total": 150}}))
        .collect();
    for chunk in items.chunks(100) {
        let (status, _) = t.post("/v1/batch", &json!({ "batch": chunk })).await;
        assert_eq!(status, 200);
    }
    t.wait_run_count(n, 60).await;
    let (_, big) = t.admin_get("/api/state/big/big").await;
    assert_eq!(big["value"], n, "{big}");
    let (_, all) = t.admin_get("/api/state/big?prefix=per:").await;
    let sum: i64 = all["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["value"].as_i64().unwrap())
        .sum();
    assert_eq!(sum, i64::try_from(n).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_write_back_leaves_only_after_the_runs_earlier_state_change_is_durable() {
    // The Tracking API kills the daemon when the first batch arrives: the state
    // change the run made before `segment::track` must already be on disk.
    let pid = Arc::new(AtomicU32::new(0));
    let p = Arc::clone(&pid);
    let mut api = FakeHttp::start(move |_| {
        let _ = std::process::Command::new("kill")
            .args(["-9", &p.load(Ordering::SeqCst).to_string()])
            .status();
        Reply::json(200, &json!({"success": true}))
    })
    .await;
    let dir = setup(
        r#"on_track("Buy", |e| {
            state::set(`paid:${e.properties.order}`, 1);
            segment::track(#{ userId: e.userId, event: "Charged", properties: #{ order: e.properties.order } });
        });"#,
    );
    let config = base_config(
        dir.path(),
        &format!(
            "[segment]\nwrite_key = \"wk\"\napi_base = \"{}\"\nflush_interval = \"10ms\"",
            api.base_url
        ),
    );
    std::fs::write(dir.path().join("spur.toml"), config).unwrap();
    let daemon = Daemon::start(dir.path());
    pid.store(daemon.pid(), Ordering::SeqCst);
    let r = common::client()
        .post(format!("{}/v1/track", daemon.base))
        .json(&json!({"userId": "u", "event": "Buy", "properties": {"order": 7}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let batch = api.next(20).await;
    assert_eq!(batch.path, "/v1/batch");
    daemon.kill9();
    let store = spur::store::Store::open(&dir.path().join("data")).unwrap();
    let state = spur::state::SledState::open(&store).unwrap();
    assert_eq!(
        spur::state::StateStore::get(&state, "pay", "paid:7").unwrap(),
        Some(json!(1)),
        "the state change was durable before the write-back left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approvals_slack_message_leaves_only_after_the_request_is_durable() {
    // Slack kills the daemon when the message arrives: the request it announces must
    // already be on disk (else a restart would ask again and post again).
    let pid = Arc::new(AtomicU32::new(0));
    let p = Arc::clone(&pid);
    let mut slack = FakeHttp::start(move |_| {
        let _ = std::process::Command::new("kill")
            .args(["-9", &p.load(Ordering::SeqCst).to_string()])
            .status();
        Reply::json(200, &json!({"ok": true, "ts": "1.0", "channel": "C1"}))
    })
    .await;
    let dir = setup(
        r##"on_track("Refund", |e| {
            approval::ask(#{ title: "Refund?", channel: "#money" });
        });"##,
    );
    let config = base_config(
        dir.path(),
        &format!(
            "[connections.slack]\nbase_url = \"{}\"\nbearer = \"xoxb-test\"",
            slack.base_url
        ),
    );
    std::fs::write(dir.path().join("spur.toml"), config).unwrap();
    let daemon = Daemon::start(dir.path());
    pid.store(daemon.pid(), Ordering::SeqCst);
    let r = common::client()
        .post(format!("{}/v1/track", daemon.base))
        .json(&json!({"userId": "u", "event": "Refund"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(slack.next(20).await.path, "/chat.postMessage");
    daemon.kill9();
    let store = spur::store::Store::open(&dir.path().join("data")).unwrap();
    let approvals = spur::approval::SledApprovals::open(&store).unwrap();
    let pending = approvals
        .list(Some(spur::approval::Status::Pending))
        .unwrap();
    assert_eq!(
        pending.len(),
        1,
        "the request was durable before Slack saw it"
    );
    assert_eq!(pending[0].title, "Refund?");
}
