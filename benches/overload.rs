//! Overload: 500 concurrent connections posting batches as fast as they can to the
//! real `spur` binary (a child process, sled on disk), for a while; a client that
//! gets a 503 waits a second before its next request, as Segment's libraries back
//! off. Prints the
//! daemon's resident memory each second and the share of requests shed with 503,
//! then kills the daemon with SIGKILL and checks, in its store, that every event
//! answered 200 is there (each 200 was durable).
//!
//! Run with: `cargo bench --bench overload` (add `-- --secs 20 --conns 500`).
//! The load generator shares the machine with the daemon.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Events per request.
const BATCH: u64 = 100;

fn arg(name: &str, default: u64) -> u64 {
    std::env::args()
        .skip_while(|a| a != name)
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn batch(first: u64) -> String {
    let mut s = String::with_capacity(BATCH as usize * 330 + 16);
    s.push_str(r#"{"batch":["#);
    for i in first..first + BATCH {
        if i > first {
            s.push(',');
        }
        let _ = write!(
            s,
            r#"{{"type":"track","userId":"user-{u}","event":"Order Completed","messageId":"overload-{i}","properties":{{"order_id":"ord-{i}","total":{t}.99,"currency":"USD"}},"context":{{"library":{{"name":"analytics-python","version":"2.4.0"}},"ip":"203.0.113.7"}},"timestamp":"2026-11-29T10:00:00.000Z"}}"#,
            u = i % 5000,
            t = i % 300,
        );
    }
    s.push_str("]}");
    s
}

fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

#[allow(
    clippy::too_many_lines,
    reason = "the benchmark as one script: start, load, sample, report"
)]
fn main() {
    let secs = arg("--secs", 10);
    let conns = arg("--conns", 500) as usize;
    spur::connectors::http::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("spur.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ndata_dir = {:?}\nscripts_dir = {:?}\nlisten = \"127.0.0.1:0\"\n[admin]\ntoken = \"bench\"\n",
            data.display().to_string(),
            dir.path().join("scripts").display().to_string()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_spur"))
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .env("RUST_LOG", "spur=warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting spur");
    let pid = child.id();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let base = loop {
        let line = lines.next().expect("spur exited").unwrap();
        if let Some(addr) = line.strip_prefix("spur listening on ") {
            break addr.to_owned();
        }
    };
    let idle = rss_mb(pid);
    println!(
        "spur overload: {conns} connections, {BATCH} events/request, {secs}s, {} cores; idle RSS {idle:.0} MB",
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get)
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (ok_ids, shed, other, peak) = rt.block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicU64::new(0));
        let (ok, shed, other) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
        );
        let mut tasks = Vec::new();
        for _ in 0..conns {
            let (stop, next) = (Arc::clone(&stop), Arc::clone(&next));
            let (ok, shed, other) = (Arc::clone(&ok), Arc::clone(&shed), Arc::clone(&other));
            let url = format!("{base}/v1/batch");
            tasks.push(tokio::spawn(async move {
                // One connection each, as 500 separate clients would have.
                let client = reqwest::Client::builder()
                    .pool_max_idle_per_host(1)
                    .build()
                    .unwrap();
                let mut accepted = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let first = next.fetch_add(BATCH, Ordering::Relaxed);
                    let r = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(batch(first))
                        .send()
                        .await;
                    let status = r.as_ref().map_or(0, |r| r.status().as_u16());
                    if let Ok(r) = r {
                        let _ = r.bytes().await;
                    }
                    match status {
                        200 => {
                            ok.fetch_add(1, Ordering::Relaxed);
                            accepted.push(first);
                        }
                        503 => {
                            shed.fetch_add(1, Ordering::Relaxed);
                            // As Segment's libraries do: back off before retrying.
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                        _ => {
                            other.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                accepted
            }));
        }
        let started = Instant::now();
        let mut peak: f64 = 0.0;
        println!("{:>4} {:>8} {:>10} {:>10}", "s", "RSS MB", "200/s", "503/s");
        let (mut last_ok, mut last_shed) = (0, 0);
        for s in 1..=secs {
            tokio::time::sleep_until(tokio::time::Instant::from_std(
                started + Duration::from_secs(s),
            ))
            .await;
            let rss = rss_mb(pid);
            peak = peak.max(rss);
            let (o, sh) = (ok.load(Ordering::Relaxed), shed.load(Ordering::Relaxed));
            println!(
                "{s:>4} {rss:>8.0} {:>10} {:>10}",
                o - last_ok,
                sh - last_shed
            );
            (last_ok, last_shed) = (o, sh);
        }
        stop.store(true, Ordering::Relaxed);
        let mut ids = Vec::new();
        for t in tasks {
            ids.extend(t.await.unwrap());
        }
        (
            ids,
            shed.load(Ordering::Relaxed),
            other.load(Ordering::Relaxed),
            peak,
        )
    });
    // SIGKILL: nothing gets a chance to flush; what was answered 200 must be on disk.
    let _ = child.kill();
    let _ = child.wait();
    let requests = ok_ids.len() as u64 + shed + other;
    let store = spur::store::Store::open(&data).unwrap();
    let stored: HashSet<String> = spur::queue::events_since(&store, 0)
        .unwrap()
        .into_iter()
        .filter_map(|e| e.body.get("messageId")?.as_str().map(str::to_owned))
        .collect();
    let missing = ok_ids
        .iter()
        .flat_map(|first| *first..first + BATCH)
        .filter(|i| !stored.contains(&format!("overload-{i}")))
        .count();
    println!(
        "{requests} requests: {} answered 200 ({} events/s), {shed} shed with 503 ({:.0}%), {other} other; peak RSS {peak:.0} MB",
        ok_ids.len(),
        ok_ids.len() as u64 * BATCH / secs,
        shed as f64 * 100.0 / requests.max(1) as f64
    );
    println!(
        "after SIGKILL: {} events in the store, {missing} of the {} answered 200 missing",
        stored.len(),
        ok_ids.len() as u64 * BATCH
    );
    assert_eq!(missing, 0, "every 200 was durable");
    assert_eq!(other, 0, "only 200 and 503 answers");
}
