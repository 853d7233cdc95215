//! Several spur daemons (the real binary) on one NATS JetStream: jobs spread over
//! the nodes by partition, state shared with compare-and-set, a killed node's
//! partitions taken over with nothing lost or doubled, schedule ticks fired once.
//! nats-server is installed by the tests from the Python registry.
//! Run with: cargo nextest run --test nats_daemons

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::{Daemon, base_config};
use parking_lot::Mutex;
use serde_json::{Value, json};
use spur::testing::nats::NatsServer;

const USERS: usize = 10;

/// A node's directory: its own data dir (run records…) and scripts, the shared
/// cluster in its config.
fn node(nats: &str, scripts: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("scripts")).unwrap();
    for (name, source) in scripts {
        std::fs::write(dir.path().join("scripts").join(name), source).unwrap();
    }
    let extra = format!("[store]\nbackend = \"nats\"\n\n[nats]\nservers = [{nats:?}]\n");
    std::fs::write(
        dir.path().join("spur.toml"),
        base_config(dir.path(), &extra),
    )
    .unwrap();
    dir
}

/// Posts `ids` as one batch to the first base that answers 200, trying them in
/// turn until one does (a killed node's senders move to the others).
async fn post_until_acked(client: &reqwest::Client, bases: &Mutex<Vec<String>>, ids: &[String]) {
    let batch: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| json!({"type": "track", "userId": format!("u{}", i % USERS), "event": "Order Completed", "messageId": id}))
        .collect();
    let body = json!({ "batch": batch });
    for attempt in 0..200 {
        let targets = bases.lock().clone();
        let base = &targets[attempt % targets.len()];
        let ok = client
            .post(format!("{base}/v1/batch"))
            .json(&body)
            .send()
            .await
            .is_ok_and(|r| r.status().as_u16() == 200);
        if ok {
            return;
        }
    }
    panic!("no node acknowledged a batch");
}

async fn counters(daemon: &Daemon) -> (i64, i64) {
    let v = daemon.get("/api/state/count?limit=1000").await;
    let (mut total, mut users) = (0, 0);
    for e in v["entries"].as_array().cloned().unwrap_or_default() {
        let n = e["value"].as_i64().unwrap_or(0);
        if e["key"] == "total" {
            total = n;
        } else {
            users += n;
        }
    }
    (total, users)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_share_the_work_and_a_kill9_loses_and_doubles_nothing() {
    let nats_dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(nats_dir.path());
    // Per-user counters, and one key every run on every node increments.
    let script = r#"on_track("Order Completed", |e| {
        state::incr("user:" + e.userId);
        state::incr("total");
    });"#;
    let dirs: Vec<_> = (0..2)
        .map(|_| node(&nats.url(), &[("count.rhai", script)]))
        .collect();
    let a = Daemon::start(dirs[0].path());
    let b = Daemon::start(dirs[1].path());
    let bases = Arc::new(Mutex::new(vec![a.base.clone(), b.base.clone()]));

    let sent: Arc<Mutex<HashSet<String>>> = Arc::default();
    let send = |from: usize, batches: usize| {
        let (bases, sent) = (Arc::clone(&bases), Arc::clone(&sent));
        tokio::spawn(async move {
            let client = common::client();
            for batch in 0..batches {
                let ids: Vec<String> = (0..20).map(|i| format!("s{from}-b{batch}-{i}")).collect();
                post_until_acked(&client, &bases, &ids).await;
                sent.lock().extend(ids);
            }
        })
    };
    let first: Vec<_> = (0..4).map(|s| send(s, 15)).collect();
    for s in first {
        s.await.unwrap();
    }
    // Mid-stream: kill -9 one node while more batches arrive at both.
    let more: Vec<_> = (4..8).map(|s| send(s, 15)).collect();
    bases.lock().retain(|base| *base != a.base);
    a.kill9();
    for s in more {
        s.await.unwrap();
    }
    // The killed node comes back and takes its share again.
    let a = Daemon::start(dirs[0].path());
    bases.lock().push(a.base.clone());
    let last: Vec<_> = (8..10).map(|s| send(s, 10)).collect();
    for s in last {
        s.await.unwrap();
    }
    let expected = sent.lock().len() as i64;
    assert_eq!(expected, 20 * (4 * 15 + 4 * 15 + 2 * 10));

    // Every acknowledged event handled exactly once: the shared counter and the
    // per-user counters both reach the number of distinct events, and stay there
    // once both nodes are idle.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let (total, users) = counters(&b).await;
        assert!(
            total <= expected && users <= expected,
            "counted twice: total {total}, users {users}, events {expected}"
        );
        let (ha, hb) = (a.get("/healthz").await, b.get("/healthz").await);
        let idle = [ha, hb]
            .iter()
            .all(|h| h["queued"] == 0 && h["running"] == 0 && h["delayed"] == 0);
        if total == expected && users == expected && idle {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not all handled: total {total}, users {users}, events {expected}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        counters(&a).await,
        (expected, expected),
        "both nodes read the same state"
    );
    // Both nodes ran jobs (the partitions were spread).
    for d in [&a, &b] {
        let runs = d.get("/api/runs?limit=1").await;
        assert!(
            runs["runs"].as_array().is_some_and(|r| !r.is_empty()),
            "{} ran nothing: {runs}",
            d.base
        );
    }
}
