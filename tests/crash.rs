//! Durability through the real binary: SIGKILL the daemon while batches stream in and
//! handlers run, restart it on the same data dir, and check that every acknowledged
//! event is handled at least once and that dedup survived.
//! Run with: cargo nextest run --test crash

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::{Daemon, base_config};
use parking_lot::Mutex;
use serde_json::{Value, json};
use spur::testing::{FakeHttp, Reply};

fn setup(sink: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("scripts")).unwrap();
    std::fs::write(
        dir.path().join("scripts/forward.rhai"),
        format!(r#"on_track(|e| {{ http::post("{sink}/seen", #{{ id: e.messageId }}); }});"#),
    )
    .unwrap();
    std::fs::write(dir.path().join("spur.toml"), base_config(dir.path(), "")).unwrap();
    dir
}

async fn post_batch(client: &reqwest::Client, base: &str, ids: &[String]) -> bool {
    let batch: Vec<Value> = ids
        .iter()
        .map(|id| json!({"type": "track", "userId": format!("u{}", &id[id.len() - 1..]), "event": "Tick", "messageId": id}))
        .collect();
    match client
        .post(format!("{base}/v1/batch"))
        .json(&json!({ "batch": batch }))
        .send()
        .await
    {
        Ok(r) => r.status().as_u16() == 200,
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_while_streaming_loses_no_acknowledged_event() {
    let mut sink = FakeHttp::start(|_| Reply::json(200, &json!({"ok": true}))).await;
    let dir = setup(&sink.base_url);
    let daemon = Daemon::start(dir.path());
    let base = daemon.base.clone();

    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let (enough_tx, mut enough_rx) = tokio::sync::mpsc::channel::<()>(1);
    let mut senders = Vec::new();
    for sender in 0..4 {
        let acked = Arc::clone(&acked);
        let base = base.clone();
        let enough = enough_tx.clone();
        senders.push(tokio::spawn(async move {
            let client = common::client();
            for batch in 0.. {
                let ids: Vec<String> = (0..25).map(|i| format!("s{sender}-b{batch}-{i}")).collect();
                if !post_batch(&client, &base, &ids).await {
                    return; // the daemon is gone
                }
                let n = {
                    let mut a = acked.lock();
                    a.extend(ids);
                    a.len()
                };
                if n >= 2000 {
                    let _ = enough.try_send(());
                }
            }
        }));
    }
    // Kill once plenty is acknowledged and handlers are running (the sink saw calls).
    tokio::time::timeout(Duration::from_secs(60), enough_rx.recv())
        .await
        .expect("ingest progressed");
    sink.next(30).await;
    daemon.kill9();
    for s in senders {
        let _ = s.await;
    }
    let acked = acked.lock().clone();

    let mut seen: HashSet<String> = sink
        .received()
        .iter()
        .filter_map(|r| r.json.as_ref()?["id"].as_str().map(str::to_owned))
        .collect();
    while sink.requests.try_recv().is_ok() {}
    let before_restart = seen.len();
    eprintln!(
        "acked {}, handled before the kill {before_restart}",
        acked.len()
    );
    let daemon = Daemon::start(dir.path());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !acked.is_subset(&seen) {
        let req = tokio::time::timeout_at(deadline, sink.requests.recv())
            .await
            .unwrap_or_else(|_| {
                let missing: Vec<_> = acked.difference(&seen).take(5).collect();
                panic!(
                    "{} acknowledged events never handled, e.g. {missing:?}",
                    acked.difference(&seen).count()
                )
            })
            .unwrap();
        if let Some(id) = req.json.as_ref().and_then(|j| j["id"].as_str()) {
            seen.insert(id.to_owned());
        }
    }
    assert!(acked.len() >= 2000);
    assert!(
        before_restart < acked.len(),
        "the kill left pending jobs for the restart to recover"
    );

    // Dedup survived the crash: an acknowledged id sent again is a duplicate.
    let one = acked.iter().next().unwrap().clone();
    let resp: Value = common::client()
        .post(format!("{}/v1/batch", daemon.base))
        .json(&json!({"batch": [{"type": "track", "userId": "u1", "event": "Tick", "messageId": one}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(resp["accepted"], 0, "{resp}");
    assert_eq!(resp["duplicates"], json!([0]), "{resp}");
}
