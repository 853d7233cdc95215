//! Throughput of the real daemon (in-process, loopback HTTP, sled on disk):
//! durable batched ingest, durable single-event ingest, the peers' workload (16
//! clients, track → handler → 200) with a no-op handler, with one `state::incr` on a
//! shared key and on per-user keys, and with a state write plus an HTTP POST to a
//! local sink; handler runs from a backlog of 100,000 queued runs (timed from the
//! moment the workers start), with no effect and with one state write each, and
//! with 10,000 runs parked; and how long a saved script takes to be live.
//!
//! Run with: `cargo bench --bench throughput` (add `-- --secs 10` for longer phases,
//! `-- --phase "handler runs"` for the phases whose label contains that text).
//! `SPUR_*` variables configure the daemon as they do `spur serve`, e.g.
//! `SPUR_STORE_SLED_MODE=high_throughput` for sled's other mode.
//! The load generator shares the machine with the daemon (request bodies are built
//! from a template to keep its share small), so the figures are a floor.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use spur::app::App;
use spur::run::RunStatus;

/// Workers for the backlog phases.
const WORKERS: usize = 4;
/// Workers for the peers' workload: the daemon's default (`server.workers`), since
/// a run that waits for a flush or an HTTP answer holds its thread.
const TRACK_WORKERS: usize = 16;
/// Runs queued before the workers start.
const BACKLOG: u64 = 100_000;
/// Runs parked before the backlog in the last phase.
const PARKED: u64 = 10_000;

const SCRIPT: &str = r#"
on_track("Order Completed", |e| {
    let total = e.properties?.total ?? 0;
    if total > 100 { log::info("big order"); }
});
on_track("Big Shared", |e| {
    if (e.properties?.total ?? 0) > 100 { state::incr("big"); }
});
on_track("Big Per User", |e| {
    if (e.properties?.total ?? 0) > 100 { state::incr(`big:${e.userId}`); }
});
on_track("Order Written", |e| {
    state::set(`last:${e.userId}`, e.properties?.total ?? 0);
});
on_track("Order Sent", |e| {
    state::set(`last:${e.userId}`, e.properties?.total ?? 0);
    http::post(`${SINK}/orders`, #{ user: e.userId, total: e.properties?.total });
});
on_track("Trial Started", |e| {
    wait_for(#{ event: "Project Created", userId: e.userId }, "7d");
});
"#;

/// One event's JSON, unique by `i` (a template: cheap for the load generator).
fn event(out: &mut String, i: u64, name: &str) {
    let _ = write!(
        out,
        r#"{{"type":"track","userId":"user-{u}","event":"{name}","messageId":"bench-{run}-{i}","properties":{{"order_id":"ord-{i}","total":{t}.99,"currency":"USD"}},"context":{{"library":{{"name":"analytics-python","version":"2.4.0"}},"ip":"203.0.113.7"}},"timestamp":"2026-11-29T10:00:00.000Z"}}"#,
        u = i % 5000,
        run = std::process::id(),
        t = i % 300,
    );
}

fn batch(first: u64, n: u64, name: &str) -> String {
    let mut s = String::with_capacity(n as usize * 330 + 16);
    s.push_str(r#"{"batch":["#);
    for i in first..first + n {
        if i > first {
            s.push(',');
        }
        event(&mut s, i, name);
    }
    s.push_str("]}");
    s
}

/// A local service answering every POST with 200 (for the HTTP phase).
async fn sink() -> String {
    let app = axum::Router::new().fallback(|| async { "{\"ok\":true}" });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

/// A daemon on loopback and a temp dir; `open` leaves the workers stopped.
async fn daemon(
    workers: usize,
    with_script: bool,
    open: bool,
) -> (Arc<App>, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let scripts = dir.path().join("scripts");
    std::fs::create_dir_all(&scripts).unwrap();
    if with_script {
        let script = SCRIPT.replace("${SINK}", &sink().await);
        std::fs::write(scripts.join("orders.rhai"), script).unwrap();
    }
    let text = format!(
        "[server]\ndata_dir = {:?}\nscripts_dir = {:?}\nworkers = {workers}\n[admin]\ntoken = \"bench\"\n",
        dir.path().join("data").display().to_string(),
        scripts.display().to_string()
    );
    // `SPUR_<SECTION>_<KEY>` variables apply, as to the daemon (e.g.
    // `SPUR_STORE_SLED_MODE=high_throughput`).
    let env: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("SPUR_"))
        .collect();
    let cfg = spur::config::load_from_str(&text, None, &env).unwrap();
    let app = if open {
        App::open(cfg).await
    } else {
        App::start(cfg).await
    }
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = app.router();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (app, base, dir)
}

/// What a load phase measured.
struct Load {
    events: u64,
    secs: f64,
    /// Request latencies, sorted.
    latencies: Vec<Duration>,
}

impl Load {
    fn rate(&self) -> f64 {
        self.events as f64 / self.secs
    }

    fn percentile_ms(&self, p: f64) -> f64 {
        let i = ((self.latencies.len() as f64 * p) as usize).min(self.latencies.len() - 1);
        self.latencies[i].as_secs_f64() * 1000.0
    }
}

/// `conns` clients POST `per_request` events named `name` at a time for `secs`.
async fn load(
    base: &str,
    path: &str,
    conns: usize,
    secs: u64,
    per_request: u64,
    name: &'static str,
) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (stop, next) = (Arc::clone(&stop), Arc::clone(&next));
        let url = format!("{base}{path}");
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut latencies = Vec::new();
            let mut body = String::new();
            while !stop.load(Ordering::Relaxed) {
                let first = next.fetch_add(per_request, Ordering::Relaxed);
                body.clear();
                if per_request == 1 {
                    event(&mut body, first, name);
                } else {
                    body = batch(first, per_request, name);
                }
                let sent = Instant::now();
                let r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                let _ = r.bytes().await;
                latencies.push(sent.elapsed());
            }
            latencies
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    latencies.sort_unstable();
    Load {
        events: latencies.len() as u64 * per_request,
        secs: started.elapsed().as_secs_f64(),
        latencies,
    }
}

/// Ingests `n` events of `name` in batches of 500.
async fn ingest(base: &str, first: u64, n: u64, name: &str) {
    let client = reqwest::Client::new();
    let mut sent = 0;
    while sent < n {
        let r = client
            .post(format!("{base}/v1/batch"))
            .header("content-type", "application/json")
            .body(batch(first + sent, 500.min(n - sent), name))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        sent += 500;
    }
}

/// Waits until `app` has finished `n` runs with `status`; returns when it did.
async fn finished(app: &App, status: RunStatus, n: u64) -> Instant {
    while app.metrics.runs_finished(status) < n {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Instant::now()
}

/// Saves `orders.rhai` with a new handler `rounds` times; returns the median time
/// from the write to the handler being live.
async fn reload_latency(app: &App, scripts: &std::path::Path, rounds: u32) -> Duration {
    let mut changed = app.scripts.subscribe();
    let mut times = Vec::new();
    // The script as `daemon` wrote it (with the sink's address in place).
    let script = std::fs::read_to_string(scripts.join("orders.rhai")).unwrap();
    for n in 0..rounds {
        let key = format!("on_track(Reload {n})#0");
        let t = Instant::now();
        std::fs::write(
            scripts.join("orders.rhai"),
            format!("{script}\non_track(\"Reload {n}\", |e| {{}});\n"),
        )
        .unwrap();
        while app
            .scripts
            .get()
            .script("orders")
            .and_then(|s| s.handler(&key))
            .is_none()
        {
            // Bounded, so a save that does not load says why instead of hanging.
            if tokio::time::timeout(Duration::from_secs(10), changed.changed())
                .await
                .is_err()
            {
                panic!("save {n} never went live: {:?}", app.scripts.get().errors);
            }
        }
        times.push(t.elapsed());
    }
    times.sort_unstable();
    times[times.len() / 2]
}

fn main() {
    let secs: u64 = std::env::args()
        .skip_while(|a| a != "--secs")
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    // `--phase WORD`: only the phases whose label contains WORD.
    let phase = std::env::args().skip_while(|a| a != "--phase").nth(1);
    let want = |label: &str| phase.as_deref().is_none_or(|p| label.contains(p));
    spur::connectors::http::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        println!(
            "spur throughput, {secs}s per phase, {} cores",
            std::thread::available_parallelism().map_or(0, std::num::NonZero::get)
        );

        if want("batched ingest") {
            let (app, base, _dir) = daemon(1, false, false).await;
            let l = load(&base, "/v1/batch", 8, secs, 100, "Order Completed").await;
            println!(
                "batched ingest (/v1/batch, 100 events/request, 8 clients): {:>9.0} events/s, p50 {:.2} ms, p99 {:.2} ms per request",
                l.rate(), l.percentile_ms(0.5), l.percentile_ms(0.99)
            );
            app.shutdown().await;
        }

        if want("single-event ingest") {
            let (app, base, _dir) = daemon(1, false, false).await;
            let l = load(&base, "/v1/track", 64, secs, 1, "Order Completed").await;
            println!(
                "single-event ingest (/v1/track, 64 clients):              {:>9.0} requests/s, p50 {:.2} ms, p99 {:.2} ms",
                l.rate(), l.percentile_ms(0.5), l.percentile_ms(0.99)
            );
            app.shutdown().await;
        }

        // The peers' workload (stack-notes.md): 16 clients POST track events that a
        // handler checks; the handler runs on the workers while requests keep coming.
        for (name, what) in [
            ("Order Completed", "no-op handler"),
            ("Big Shared", "state::incr, one shared key"),
            ("Big Per User", "state::incr, per-user keys"),
            ("Order Sent", "state::set + HTTP POST to a local sink"),
        ] {
            if !want(&format!("track + {what}")) {
                continue;
            }
            let (app, base, _dir) = daemon(TRACK_WORKERS, true, false).await;
            let l = load(&base, "/v1/track", 16, secs, 1, name).await;
            let (ran, ended) = (app.metrics.runs_finished(RunStatus::Ok), Instant::now());
            let behind = (finished(&app, RunStatus::Ok, l.events).await - ended).as_secs_f64();
            println!(
                "track + {what:<38} (16 clients): {:>7.0} requests/s, p50 {:.2} ms, p99 {:.2} ms; {:.0} runs/s ({behind:.2}s behind at the end)",
                l.rate(), l.percentile_ms(0.5), l.percentile_ms(0.99), ran as f64 / l.secs
            );
            app.shutdown().await;
        }

        // A backlog of 100,000 queued runs, then the workers start.
        for (name, what) in [("Order Completed", "no effect"), ("Order Written", "one state write each")] {
            if !want(&format!("handler runs, {what}")) {
                continue;
            }
            let (app, base, _dir) = daemon(WORKERS, true, true).await;
            let t = Instant::now();
            ingest(&base, 0, BACKLOG, name).await;
            let queued = BACKLOG as f64 / t.elapsed().as_secs_f64();
            let t = Instant::now();
            app.start_workers();
            finished(&app, RunStatus::Ok, BACKLOG).await;
            // Done once every run's record is stored too.
            app.runs.drain();
            let runs = BACKLOG as f64 / t.elapsed().as_secs_f64();
            let recorded = app.runs.list(&spur::run::RunFilter::default(), usize::MAX).unwrap();
            assert_eq!(recorded.len() as u64, BACKLOG, "every run leaves a record");
            println!("handler runs ({BACKLOG} queued, {WORKERS} workers, {what:<20}): {runs:>9.0} runs/s (queued at {queued:.0} events/s, 1 client, 500/request)");
            app.shutdown().await;
        }

        // The same with 10,000 runs parked first (waiting for an event): they hold
        // no thread and do not slow the others down.
        if want("handler runs with parked") {
            let (app, base, _dir) = daemon(WORKERS, true, true).await;
            ingest(&base, 1_000_000, PARKED, "Trial Started").await;
            ingest(&base, 2_000_000, BACKLOG, "Order Completed").await;
            app.start_workers();
            let t = finished(&app, RunStatus::Waiting, PARKED).await;
            let ok_before = app.metrics.runs_finished(RunStatus::Ok);
            let done = finished(&app, RunStatus::Ok, BACKLOG).await;
            let runs = (BACKLOG - ok_before) as f64 / (done - t).as_secs_f64();
            println!("handler runs with {PARKED} runs parked:                    {runs:>9.0} runs/s ({ok_before} ran before the last parked)");
            app.shutdown().await;
        }
        if !want("live reload") {
            return;
        }
        let (app, _base, dir) = daemon(1, true, false).await;
        let latency = reload_latency(&app, &dir.path().join("scripts"), 20).await;
        println!(
            "live reload (save to handler live, median of 20):        {:>9.1} ms",
            latency.as_secs_f64() * 1000.0
        );
        app.shutdown().await;
    });
}
