//! Several spur daemons (the real binary) on one NATS JetStream: jobs spread over
//! the nodes by partition, state shared with compare-and-set, a killed node's
//! partitions taken over with nothing lost or doubled (`wait_for`s included),
//! schedule ticks fired once.
//! nats-server is installed by the tests from the Python registry.
//! Run with: cargo nextest run --test nats_daemons

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::{Daemon, write_daemon_dir};
use parking_lot::Mutex;
use serde_json::{Value, json};
use spur::testing::nats::NatsServer;

const USERS: usize = 10;

/// A node's directory: its own data dir (run records…) and scripts, the shared
/// cluster in its config.
fn node(nats: &[String], scripts: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "[store]\nbackend = \"nats\"\n\n[nats]\nservers = {nats:?}\nreplicas = {}\n",
        if nats.len() > 1 { 3 } else { 1 }
    );
    write_daemon_dir(dir.path(), scripts, &extra);
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
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for attempt in 0.. {
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
        assert!(
            tokio::time::Instant::now() < deadline,
            "no node acknowledged a batch"
        );
        // A client's back-off before it tries again (503 while a leader is elected).
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The shared counter and the sum of the per-user counters.
async fn counters(daemon: &Daemon) -> (i64, i64) {
    let v = daemon.get("/api/state/count?limit=10000").await;
    let (mut total, mut users) = (0, 0);
    for e in v["entries"].as_array().cloned().unwrap_or_default() {
        let n = e["value"].as_i64().unwrap_or(0);
        let key = e["key"].as_str().unwrap_or("");
        if key == "total" {
            total = n;
        } else if key.starts_with("user:") {
            users += n;
        }
    }
    (total, users)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_share_the_work_and_a_kill9_loses_and_doubles_nothing() {
    let nats_dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(nats_dir.path());
    // Per-user counters, and one key every run on every node increments; runs
    // waiting for an event of their user.
    let script = r#"
        on_track("Order Completed", |e| {
            state::incr("user:" + e.userId);
            state::incr("total");
        });
        on_track("Signed Up", |e| {
            let p = wait_for(#{ event: "Project Created", userId: e.userId }, "10m");
            state::incr("waited:" + e.userId);
            state::set("project:" + e.userId, p?.properties?.name);
        });
    "#;
    let dirs: Vec<_> = (0..2)
        .map(|_| node(&[nats.url()], &[("count.rhai", script)]))
        .collect();
    let a = Daemon::start(dirs[0].path());
    let b = Daemon::start(dirs[1].path());
    let bases = Arc::new(Mutex::new(vec![a.base.clone(), b.base.clone()]));
    let waiters: Vec<String> = (0..USERS).map(|i| format!("w{i}")).collect();
    for (i, w) in waiters.iter().enumerate() {
        let base = if i % 2 == 0 { &a.base } else { &b.base };
        track(base, json!({"userId": w, "event": "Signed Up"})).await;
    }
    parked_on_events(&b, USERS).await;
    holds(&b, 32).await;

    let sent: Arc<Mutex<HashSet<String>>> = Arc::default();
    let first: Vec<_> = (0..4).map(|s| sender(&bases, &sent, s, 8)).collect();
    for s in first {
        s.await.unwrap();
    }
    // Mid-stream: kill -9 one node while more batches arrive at both; then the
    // events the parked runs wait for, which the killed node's partitions' next
    // owner must match.
    let more: Vec<_> = (4..8).map(|s| sender(&bases, &sent, s, 8)).collect();
    bases.lock().retain(|base| *base != a.base);
    a.kill9();
    for w in &waiters {
        let name = format!("p-{w}");
        track(
            &b.base,
            json!({"userId": w, "event": "Project Created", "properties": {"name": name}}),
        )
        .await;
    }
    for s in more {
        s.await.unwrap();
    }
    // Its partitions move to the other node (which builds their waits from the
    // cluster); then the killed node comes back and takes its share again.
    holds(&b, 64).await;
    let a = Daemon::start(dirs[0].path());
    bases.lock().push(a.base.clone());
    let last: Vec<_> = (8..10).map(|s| sender(&bases, &sent, s, 5)).collect();
    for s in last {
        s.await.unwrap();
    }
    let expected = sent.lock().len() as i64;
    assert_eq!(expected, 20 * (4 * 8 + 4 * 8 + 2 * 5));

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
        let idle = all_idle(&[&a, &b]).await;
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
    for w in &waiters {
        woke_once(&a, w).await;
    }
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

/// Sends one event to `base`, which must acknowledge it.
async fn track(base: &str, event: Value) {
    let r = common::client()
        .post(format!("{base}/v1/track"))
        .json(&event)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// Polls until the run parked for `user` woke with its own user's event; it woke
/// once.
async fn woke_once(daemon: &Daemon, user: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let project = daemon
            .get(&format!("/api/state/count/project:{user}"))
            .await;
        if project["value"] == json!(format!("p-{user}")) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{user} never woke: {project}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let waited = daemon.get(&format!("/api/state/count/waited:{user}")).await;
    assert_eq!(waited["value"], 1, "{user} woke once");
}

/// Polls until `node` reads `n` partitions.
async fn holds(node: &Daemon, n: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let nodes = node.get("/api/scripts").await["nodes"].clone();
        let held = nodes
            .as_array()
            .into_iter()
            .flatten()
            .find(|d| d["pid"] == node.pid())
            .and_then(|d| d["partitions"].as_u64());
        if held == Some(n) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} never read {n} partitions: {nodes}",
            node.base
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls until `n` runs wait for an event (parked runs are the cluster's: any node
/// lists them all).
async fn parked_on_events(daemon: &Daemon, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let runs = daemon.get("/api/runs?status=waiting&limit=1000").await;
        let parked = runs["runs"].as_array().map_or(0, |r| {
            r.iter()
                .filter(|r| r["waiting_for"]["for"] == "event")
                .count()
        });
        if parked >= n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{parked} of {n} runs parked"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends `batches` batches of 20 events from sender `from`, each until acknowledged.
fn sender(
    bases: &Arc<Mutex<Vec<String>>>,
    sent: &Arc<Mutex<HashSet<String>>>,
    from: usize,
    batches: usize,
) -> tokio::task::JoinHandle<()> {
    let (bases, sent) = (Arc::clone(bases), Arc::clone(sent));
    tokio::spawn(async move {
        let client = common::client();
        for batch in 0..batches {
            let ids: Vec<String> = (0..20).map(|i| format!("s{from}-b{batch}-{i}")).collect();
            post_until_acked(&client, &bases, &ids).await;
            sent.lock().extend(ids);
        }
    })
}

async fn all_idle(daemons: &[&Daemon]) -> bool {
    for d in daemons {
        let h = d.get("/healthz").await;
        if h["queued"] != 0 || h["running"] != 0 || h["delayed"] != 0 {
            return false;
        }
    }
    true
}

/// The node whose run asked for an approval, and the approval's id.
async fn asked(daemons: &[Daemon]) -> (usize, String) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut found = None;
        for (i, d) in daemons.iter().enumerate() {
            let runs = d.get("/api/runs?status=waiting&limit=5").await;
            let waiting = runs["runs"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|r| r["status"] == "waiting");
            let pending = d.get("/api/approvals?status=pending").await;
            if waiting && let Some(a) = pending["approvals"].as_array().and_then(|a| a.first()) {
                found = Some((i, a["id"].as_str().unwrap().to_owned()));
            }
        }
        if let Some(f) = found {
            return f;
        }
        if tokio::time::Instant::now() >= deadline {
            for d in daemons {
                eprintln!(
                    "{} runs {}",
                    d.base,
                    d.get("/api/runs?trigger=event&limit=3").await
                );
                eprintln!("{} health {}", d.base, d.get("/healthz").await);
                eprintln!("{} approvals {}", d.base, d.get("/api/approvals").await);
            }
            panic!("no run asked for the approval");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The acceptance test of the cluster: three daemons on a three-server R3 cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_daemons_on_three_servers_survive_losing_one_of_each() {
    let nats_dir = tempfile::tempdir().unwrap();
    let mut nats = spur::testing::nats::NatsCluster::start(nats_dir.path(), 3);
    let script = r#"
        on_track("Order Completed", |e| { state::incr("user:" + e.userId); });
        every("* * * * * *", |t| { state::incr("tick:" + t.at_ms); });
        on_track("Refund Requested", |e| {
            let d = approval::ask(#{ title: "Refund for " + e.userId });
            state::incr("resumed:" + e.userId);
            state::set("decision:" + e.userId, d.status);
        });
    "#;
    let dirs: Vec<_> = (0..3)
        .map(|_| node(&nats.urls(), &[("count.rhai", script)]))
        .collect();
    let mut daemons: Vec<Daemon> = dirs.iter().map(|d| Daemon::start(d.path())).collect();
    let bases = Arc::new(Mutex::new(
        daemons.iter().map(|d| d.base.clone()).collect::<Vec<_>>(),
    ));
    let sent: Arc<Mutex<HashSet<String>>> = Arc::default();

    let first: Vec<_> = (0..3).map(|s| sender(&bases, &sent, s, 8)).collect();
    for s in first {
        s.await.unwrap();
    }
    // Mid-stream: kill -9 one daemon and one NATS server while batches arrive.
    let more: Vec<_> = (3..6).map(|s| sender(&bases, &sent, s, 8)).collect();
    let killed = daemons.remove(0);
    bases.lock().retain(|b| *b != killed.base);
    killed.kill9();
    nats.servers[1].kill();
    for s in more {
        s.await.unwrap();
    }
    nats.servers[1].restart();
    daemons.insert(0, Daemon::start(dirs[0].path()));
    bases.lock().push(daemons[0].base.clone());
    let last: Vec<_> = (6..8).map(|s| sender(&bases, &sent, s, 5)).collect();
    for s in last {
        s.await.unwrap();
    }
    let expected = sent.lock().len() as i64;
    assert_eq!(expected, 20 * (3 * 8 + 3 * 8 + 2 * 5));

    // An approval asked on one node, decided on another, resumes the run once.
    let client = common::client();
    let r = client
        .post(format!("{}/v1/track", daemons[1].base))
        .json(
            &json!({"userId": "refund-user", "event": "Refund Requested", "messageId": "refund-1"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (asked_on, approval) = asked(&daemons).await;
    let decider = &daemons[(asked_on + 1) % 3];
    let r = client
        .post(format!("{}/api/approvals/{approval}/approve", decider.base))
        .bearer_auth(common::TOKEN)
        .json(&json!({"comment": "ok"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    // Every acknowledged event handled once; the approval's run resumed once.
    let refs: Vec<&Daemon> = daemons.iter().collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (_, users) = counters(refs[2]).await;
        let resumed = refs[2].get("/api/state/count/resumed:refund-user").await;
        assert!(users <= expected, "counted twice: {users} of {expected}");
        if users == expected && resumed["value"] == 1 && all_idle(&refs).await {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not all handled: {users} of {expected}, resumed {resumed}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let decision = refs[0].get("/api/state/count/decision:refund-user").await;
    assert_eq!(decision["value"], "approved");

    // The one-second schedule fired once per tick across the three nodes (and
    // through the kills): every tick's counter is 1, and there were ticks.
    let ticks = refs[1]
        .get("/api/state/count?prefix=tick:&limit=10000")
        .await;
    let ticks = ticks["entries"].as_array().cloned().unwrap_or_default();
    assert!(ticks.len() >= 3, "ticks: {ticks:?}");
    for t in &ticks {
        assert_eq!(t["value"], 1, "a tick fired twice: {t}");
    }
}

/// A run whose state change loses to another node's is not stored: it is executed
/// again at once on the new value, its outbound call replayed (not sent again), and
/// its first execution's record says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_loses_a_state_key_to_another_node_runs_again_on_the_new_value() {
    let nats_dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(nats_dir.path());
    let (mut fake, counts) = common::sink::counting(&[]).await;
    let script = format!(
        r#"on_track("Bump", |e| {{
            http::post("{b}/notify", #{{ step: "started" }});
            let n = state::incr("k");
            let stop = time::unix_ms() + 400;
            while time::unix_ms() < stop {{ }}
            state::set("seen", n);
        }});"#,
        b = fake.base_url
    );
    let dir = node(&[nats.url()], &[("bump.rhai", &script)]);
    let daemon = Daemon::start(dir.path());
    // Another node: its own connection and state store on the same cluster.
    let other = spur::nats::Cluster::connect(&spur::config::NatsConfig {
        servers: vec![nats.url()],
        ..Default::default()
    })
    .await
    .unwrap();
    let clock = spur::clock::ManualClock::at(chrono::Utc::now());
    let other = spur::nats::NatsState::new(other, clock);
    track(&daemon.base, json!({"userId": "u", "event": "Bump"})).await;
    common::sink::step(&mut fake, "started", 0).await;
    // The other node sets `k` again and again until the run has lost to it once
    // (a write can only land between the run's last outbound call and its end).
    let set = spur::state::StateOp::Set {
        value: json!(100),
        ttl_ms: None,
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let lost = loop {
        spur::state::StateStore::apply_now(&other, "bump", "k", &set).unwrap();
        let runs = daemon.get("/api/runs?status=retrying").await;
        if let Some(r) = runs["runs"].as_array().and_then(|r| r.first()) {
            break r.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "the run never lost");
    };
    assert_eq!(lost["error"]["kind"], "conflict", "{lost}");
    let seen = loop {
        let seen = daemon.get("/api/state/bump/seen").await;
        if !seen["value"].is_null() {
            break seen;
        }
        assert!(tokio::time::Instant::now() < deadline, "never finished");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(seen["value"], 101, "incremented on the other node's value");
    assert_eq!(
        counts.lock()["/notify"],
        1,
        "the call before was not repeated"
    );
    let ok = daemon.get("/api/runs?status=ok").await;
    assert_eq!(ok["runs"].as_array().unwrap().len(), 1, "{ok}");
    assert_eq!(ok["runs"][0]["job_id"], lost["job_id"]);
}

/// NATS out of reach: ingest answers 503 with `Retry-After`, nothing acknowledged is
/// lost, and the daemon carries on once the server is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nats_unreachable_ingest_answers_503_and_resumes_after() {
    let nats_dir = tempfile::tempdir().unwrap();
    let mut nats = NatsServer::start(nats_dir.path());
    let script = r#"on_track("Order Completed", |e| { state::incr("user:" + e.userId); });"#;
    let dir = node(&[nats.url()], &[("count.rhai", script)]);
    let daemon = Daemon::start(dir.path());
    let client = common::client();
    let track = |id: &str| {
        client
            .post(format!("{}/v1/track", daemon.base))
            .json(&json!({"userId": "u1", "event": "Order Completed", "messageId": id}))
            .send()
    };
    assert_eq!(track("before").await.unwrap().status(), 200);

    nats.kill();
    let r = track("during").await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(
        r.headers().get("retry-after").is_some(),
        "{:?}",
        r.headers()
    );

    nats.restart();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    // The client retries as told; the second id and a repeat of the first are taken
    // once each.
    loop {
        if track("during").await.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "ingest did not resume"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(track("before").await.unwrap().status(), 200);
    loop {
        let (_, users) = counters(&daemon).await;
        assert!(users <= 2, "counted twice: {users}");
        if users == 2 && all_idle(&[&daemon]).await {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not handled: {users}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
