//! Throughput of the real daemon (in-process, loopback HTTP, sled on disk):
//! durable batched ingest, durable single-event ingest, and handler runs.
//!
//! Run with: `cargo bench --bench throughput` (add `-- --secs 10` for longer runs).
//! The load generator shares the machine with the daemon, so figures are a floor.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use spur::app::App;

const SCRIPT: &str = r#"
on_track("Order Completed", |e| {
    let total = e.properties?.total ?? 0;
    if total > 100 { log::info("big order"); }
});
"#;

fn event(i: u64) -> Value {
    json!({
        "type": "track",
        "userId": format!("user-{}", i % 5000),
        "event": "Order Completed",
        "messageId": format!("bench-{i}-{}", uuid::Uuid::new_v4()),
        "properties": {"order_id": format!("ord-{i}"), "total": (i % 300) as f64 + 0.99, "currency": "USD"},
        "context": {"library": {"name": "analytics-python", "version": "2.4.0"}, "ip": "203.0.113.7"},
        "timestamp": "2026-11-29T10:00:00.000Z"
    })
}

async fn start(workers: usize, with_script: bool) -> (Arc<App>, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let scripts = dir.path().join("scripts");
    std::fs::create_dir_all(&scripts).unwrap();
    if with_script {
        std::fs::write(scripts.join("orders.rhai"), SCRIPT).unwrap();
    }
    let text = format!(
        "[server]\ndata_dir = {:?}\nscripts_dir = {:?}\nworkers = {workers}\n[admin]\ntoken = \"bench\"\n",
        dir.path().join("data").display().to_string(),
        scripts.display().to_string()
    );
    let cfg = spur::config::load_from_str(&text, None, &BTreeMap::new()).unwrap();
    let app = App::start(cfg).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = app.router();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (app, base, dir)
}

/// Runs `conns` clients for `secs`, each looping `body_fn`; returns completed units.
async fn load(
    base: &str,
    path: &str,
    conns: usize,
    secs: u64,
    per_request: u64,
    batch: bool,
) -> (u64, f64) {
    spur::connectors::http::install_crypto_provider();
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (done, stop, next) = (Arc::clone(&done), Arc::clone(&stop), Arc::clone(&next));
        let url = format!("{base}{path}");
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            while !stop.load(Ordering::Relaxed) {
                let first = next.fetch_add(per_request, Ordering::Relaxed);
                let body = if batch {
                    json!({ "batch": (first..first + per_request).map(event).collect::<Vec<_>>() })
                } else {
                    event(first)
                };
                let bytes = serde_json::to_vec(&body).unwrap();
                let r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(bytes)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                let _ = r.bytes().await;
                done.fetch_add(per_request, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    (
        done.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64(),
    )
}

fn main() {
    let secs: u64 = std::env::args()
        .skip_while(|a| a != "--secs")
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        println!(
            "spur throughput, {secs}s per phase, {} cores",
            std::thread::available_parallelism().map_or(0, std::num::NonZero::get)
        );

        // 1. Durable batched ingest (no handlers: ingest alone).
        let (app, base, _dir) = start(1, false).await;
        let (n, t) = load(&base, "/v1/batch", 8, secs, 100, true).await;
        println!(
            "batched ingest (/v1/batch, 100 events/request, 8 clients): {:>9.0} events/s",
            n as f64 / t
        );
        app.shutdown().await;

        // 2. Durable single-event ingest.
        let (app, base, _dir) = start(1, false).await;
        let (n, t) = load(&base, "/v1/track", 64, secs, 1, false).await;
        println!(
            "single-event ingest (/v1/track, 64 clients):              {:>9.0} requests/s",
            n as f64 / t
        );
        app.shutdown().await;

        // 3. Handler runs: ingest a backlog, then time the workers draining it.
        let (app, base, _dir) = start(4, true).await;
        let backlog = 100_000u64;
        let client = reqwest::Client::new();
        let mut rx = app.runs.subscribe();
        let mut sent = 0;
        let t0 = Instant::now();
        while sent < backlog {
            let body = json!({ "batch": (sent..sent + 500).map(event).collect::<Vec<_>>() });
            let r = client
                .post(format!("{base}/v1/batch"))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            sent += 500;
        }
        let mut seen = app
            .runs
            .list(&spur::run::RunFilter::default(), usize::MAX)
            .unwrap()
            .len() as u64;
        while seen < backlog {
            match rx.recv().await {
                Ok(_) => seen += 1,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(k)) => seen += k,
                Err(e) => panic!("{e}"),
            }
        }
        let t = t0.elapsed().as_secs_f64();
        println!(
            "handler runs (ingest + run {backlog} events, 4 workers):    {:>9.0} runs/s",
            backlog as f64 / t
        );
        app.shutdown().await;
    });
}
