//! The NATS backend's ingest on this machine: events/s accepted through
//! `Cluster::append` (batches of 100, 16 concurrent callers, each event with its
//! `messageId` marker in one atomic batch, acknowledged by JetStream on disk), on one
//! server (R1) and on a three-server cluster (R3) with one, two and three spur
//! nodes (connections, one per server); and the resident memory of the server per
//! million remembered ids. The servers, the nodes and the load share the machine.
//!
//! Then runs/s from a backlog (`--runs`, 20,000 by default; one handler per event,
//! one `state::incr` on a per-user key each): sled with one daemon, and the R3
//! cluster with one, two and three daemons (in this process, `--workers` each, 32 by
//! default: a run waits on round trips to the cluster, so many run at once), timed
//! from the moment the workers start until every run is finished.
//!
//! Run with: `cargo bench --bench nats` (add `-- --events 200000 --runs 50000`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use spur::app::App;
use spur::config::NatsConfig;
use spur::event::{BatchDefaults, Origin, normalize};
use spur::nats::{Cluster, Retention};
use spur::queue::PreparedEvent;
use spur::run::RunStatus;
use spur::testing::nats::{NatsCluster, NatsServer};

const BATCH: u64 = 100;
const CALLERS: u64 = 16;
const RETENTION: Retention = Retention {
    dedup: Duration::from_secs(86_400),
    events: Duration::from_secs(7 * 86_400),
};

fn arg(name: &str, default: u64) -> u64 {
    std::env::args()
        .skip_while(|a| a != name)
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn batch(tag: &str, first: u64) -> Vec<PreparedEvent> {
    (first..first + BATCH)
        .map(|i| {
            let body = json!({"type": "track", "userId": format!("user-{}", i % 10_000), "event": "Order Completed",
                "messageId": format!("{tag}-{i}"), "properties": {"order_id": format!("ord-{i}"), "total": 120.99, "currency": "USD"},
                "context": {"library": {"name": "analytics-python", "version": "2.4.0"}, "ip": "203.0.113.7"},
                "timestamp": "2026-11-29T10:00:00.000Z"});
            let e = normalize(body.as_object().unwrap().clone(), None, &BatchDefaults::default(), Origin::Tracking, chrono::Utc::now()).unwrap();
            PreparedEvent::new(e, 0)
        })
        .collect()
}

/// Appends `total` events through `nodes` (round robin over callers); events/s.
async fn run(tag: &str, nodes: &[Cluster], total: u64) -> f64 {
    let next = Arc::new(AtomicU64::new(0));
    // Prepared before the clock starts: the request thread's work is not measured.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CALLERS {
        let node = nodes[c as usize % nodes.len()].clone();
        let next = Arc::clone(&next);
        let tag = tag.to_owned();
        tasks.push(tokio::spawn(async move {
            loop {
                let first = next.fetch_add(BATCH, Ordering::Relaxed);
                if first >= total {
                    break;
                }
                let events = batch(&tag, first);
                let r = node.append(&events, RETENTION).await.expect("append");
                assert_eq!(r.accepted as u64, BATCH);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    total as f64 / started.elapsed().as_secs_f64()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let total = arg("--events", 200_000);
    let dir = std::env::temp_dir().join(format!("spur-bench-nats-{}", std::process::id()));

    let mut single = NatsServer::start(&dir.join("single"));
    let node = Cluster::connect(&NatsConfig {
        servers: vec![single.url()],
        ..NatsConfig::default()
    })
    .await
    .unwrap();
    let before = rss_kib(single.pid().unwrap());
    let rate = run("r1", std::slice::from_ref(&node), total).await;
    println!("R1, 1 node:  {rate:>8.0} events/s accepted ({total} events)");
    drop(node);
    // Restarted, the server holds its indexes but no cache of recent writes: what
    // remembering the ids costs for as long as they are remembered.
    single.kill();
    single.restart();
    let after = rss_kib(single.pid().unwrap());
    println!(
        "R1 server memory: {} MiB fresh, {} MiB after a restart holding {total} ids: ~{:.0} MiB per million ids",
        before / 1024,
        after / 1024,
        (after.saturating_sub(before)) as f64 / 1024.0 * 1e6 / total as f64
    );
    drop(single);

    let cluster = NatsCluster::start(&dir.join("r3"), 3);
    let urls = cluster.urls();
    let mut nodes = Vec::new();
    for n in 1..=3 {
        // Node n talks to server n first (the client fails over to the others).
        let mut servers = urls.clone();
        servers.rotate_left(n - 1);
        nodes.push(
            Cluster::connect(&NatsConfig {
                servers,
                replicas: 3,
                ..NatsConfig::default()
            })
            .await
            .unwrap(),
        );
        let rate = run(&format!("r3-{n}"), &nodes, total).await;
        println!(
            "R3, {n} node{}: {rate:>8.0} events/s accepted",
            if n == 1 { " " } else { "s" }
        );
    }
    drop(nodes);

    let runs = arg("--runs", 20_000);
    let rate = backlog(&dir.join("sled"), None, 1, runs).await;
    println!(
        "runs from a backlog, sled, 1 daemon:    {rate:>8.0} runs/s ({runs} runs, state::incr per user)"
    );
    for n in 1..=3 {
        let rate = backlog(&dir.join(format!("runs{n}")), Some((&urls, n)), n, runs).await;
        println!(
            "runs from a backlog, NATS R3, {n} daemon{}: {rate:>8.0} runs/s",
            if n == 1 { " " } else { "s" }
        );
    }
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
}

const RUN_SCRIPT: &str = r#"on_track("Order Completed", |e| { state::incr("n:" + e.userId); });"#;

/// `daemons` daemons on sled (`nats` None: one) or on the cluster (its servers, and
/// a stream of its own named by `tag`); `total` events queued with the workers
/// off, then the workers started: runs/s until every run finished.
async fn backlog(
    dir: &std::path::Path,
    nats: Option<(&[String], usize)>,
    daemons: usize,
    total: u64,
) -> f64 {
    let mut apps = Vec::new();
    for d in 0..daemons {
        let home = dir.join(format!("node{d}"));
        std::fs::create_dir_all(home.join("scripts")).unwrap();
        std::fs::write(home.join("scripts/count.rhai"), RUN_SCRIPT).unwrap();
        let store = match nats {
            Some((urls, n)) => format!(
                "[store]\nbackend = \"nats\"\n[nats]\nservers = {urls:?}\nreplicas = 3\nprefix = \"runs{n}\"\n"
            ),
            None => String::new(),
        };
        let text = format!(
            "[server]\ndata_dir = {:?}\nscripts_dir = {:?}\nworkers = {}\n[admin]\ntoken = \"bench\"\n{store}",
            home.join("data").display().to_string(),
            home.join("scripts").display().to_string(),
            arg("--workers", 32),
        );
        let cfg = spur::config::load_from_str(&text, None, &std::collections::BTreeMap::default())
            .unwrap();
        apps.push(App::open(cfg).await.unwrap());
    }
    if nats.is_some() {
        // Until the partitions are spread over the daemons (each its fair share).
        let fair = 64_u64.div_ceil(daemons as u64);
        loop {
            let nodes = apps[0].queue.nodes().unwrap();
            let owned: Vec<u64> = nodes
                .iter()
                .filter_map(|n| n["partitions"].as_u64())
                .collect();
            if owned.len() == daemons
                && owned.iter().sum::<u64>() == 64
                && owned.iter().all(|&p| p <= fair)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..CALLERS {
        let app = Arc::clone(&apps[c as usize % apps.len()]);
        let next = Arc::clone(&next);
        tasks.push(tokio::spawn(async move {
            loop {
                let first = next.fetch_add(BATCH, Ordering::Relaxed);
                if first >= total {
                    return;
                }
                app.queue.ingest(batch("run", first)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let started = Instant::now();
    for app in &apps {
        app.start_workers();
    }
    loop {
        let done: u64 = apps
            .iter()
            .map(|a| a.metrics.runs_finished(RunStatus::Ok))
            .sum();
        if done >= total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rate = total as f64 / started.elapsed().as_secs_f64();
    for app in &apps {
        app.shutdown().await;
    }
    rate
}
