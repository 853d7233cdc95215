//! Hostile input and hostile upstreams (DESIGN.md §13). Every case found by trying is
//! replayed through the real router: the exact request, the status, the size of the
//! answer, and the daemon still serving afterwards. Upstreams that misbehave (an
//! endless body, `Retry-After: inf`, a redirect to another origin, a request that is
//! received and never answered) are fakes inside the test.
//! Run with: cargo nextest run --test hostile

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Body;
use common::{TOKEN, TestApp};
use serde_json::{Value, json};
use spur::run::{RunRecord, RunStatus};
use spur::testing::{FakeHttp, Reply};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Answers stay small whatever the request.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// POSTs raw bytes; status, the answer's size and its JSON.
async fn post_bytes(
    t: &TestApp,
    path: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, usize, Value) {
    let r = t.client.post(t.url(path)).body(body).send().await.unwrap();
    let status = r.status().as_u16();
    let bytes = r.bytes().await.unwrap();
    (
        status,
        bytes.len(),
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn assert_still_serving(t: &TestApp) {
    let r = t.client.get(t.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200, "the daemon stopped serving");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multibyte_character_in_a_timestamp_is_a_400_not_a_reset() {
    let t = TestApp::builder().start().await;
    let (status, size, body) = post_bytes(
        &t,
        "/v1/track",
        r#"{"userId":"u","event":"E","timestamp":"2025-01-01Té"}"#,
    )
    .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("timestamp")),
        "{body}"
    );
    assert!(size < MAX_ANSWER_BYTES);
    assert_still_serving(&t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timestamp_and_sent_at_far_apart_are_a_400_not_an_overflow() {
    let t = TestApp::builder().start().await;
    let (status, _, body) = post_bytes(
        &t,
        "/v1/track",
        r#"{"userId":"u","event":"E","timestamp":"+262142-01-01","sentAt":"0000-01-01"}"#,
    )
    .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("sentAt")),
        "{body}"
    );
    assert_still_serving(&t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_200000_junk_items_is_one_small_400() {
    let t = TestApp::builder().start().await;
    let mut body = String::from(r#"{"batch":["#);
    body.push_str(&vec!["0"; 200_000].join(","));
    body.push_str("]}");
    assert!(body.len() < 500 * 1024);
    let (status, size, answer) = post_bytes(&t, "/v1/batch", body).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (400, Some("too_many_events")),
        "{answer}"
    );
    assert!(
        answer["message"].as_str().unwrap().contains("200000"),
        "{answer}"
    );
    assert!(size < 1024, "answered {size} bytes");
    assert_still_serving(&t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections_are_listed_up_to_a_bound_and_values_are_not_echoed_whole() {
    let t = TestApp::builder().start().await;
    let long_type = "x".repeat(150);
    let items: Vec<Value> = (0..2500)
        .map(|i| json!({"type": long_type, "userId": format!("u{i}")}))
        .collect();
    let (status, size, answer) =
        post_bytes(&t, "/v1/batch", json!({ "batch": items }).to_string()).await;
    assert_eq!(status, 400, "{answer}");
    assert!(size < MAX_ANSWER_BYTES, "answered {size} bytes");
    assert_eq!(answer["detail"]["rejected_count"], 2500);
    let listed = answer["detail"]["rejected"].as_array().unwrap();
    assert!(listed.len() <= 100);
    assert!(
        listed[0]["error"].as_str().unwrap().len() < 150,
        "{}",
        listed[0]
    );
    assert_still_serving(&t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durations_from_scripts_never_panic_whatever_the_number() {
    let script = r#"
        on_track("Durations", |e| {
            let inf = 1e308 * 10.0;
            for d in [1e30, inf, -inf, -5, 1e19, "1e30", "99999999999999999999d"] {
                try { state::set("k", 1, d); } catch (err) { log::info(`ttl: ${err}`); }
                try { time::sleep(d); } catch (err) { log::info(`sleep: ${err}`); }
                try { wait_for(#{ event: "X" }, d); } catch (err) { log::info(`wait_for: ${err}`); }
                try { approval::ask(#{ title: "t", expires: d }); } catch (err) { log::info(`ask: ${err}`); }
            }
        });
    "#;
    let t = TestApp::builder().script("d.rhai", script).start().await;
    let (status, _) = t
        .post("/v1/track", &json!({"userId": "u", "event": "Durations"}))
        .await;
    assert_eq!(status, 200);
    let runs = t.wait_run_count(1, 10).await;
    assert_eq!(runs[0].status, RunStatus::Ok, "{:#?}", runs[0]);
    assert_eq!(
        runs[0].logs.len(),
        28,
        "every call refused: {:#?}",
        runs[0].logs
    );
    assert!(
        runs[0]
            .logs
            .iter()
            .all(|l| l.message.contains("duration") || l.message.contains("cannot be represented")),
        "{:#?}",
        runs[0].logs
    );
    assert_still_serving(&t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_durations_are_400s_naming_the_parameter() {
    let t = TestApp::builder().start().await;
    for (path, field) in [
        ("/api/events?since=1e30", "since"),
        ("/api/events?since=inf", "since"),
        ("/api/events?since=99999999999999999999w", "since"),
        ("/api/runs?wait=inf", "wait"),
        ("/api/runs?wait=1e30", "wait"),
    ] {
        let (status, body) = t.admin_get(path).await;
        assert_eq!(
            (status, body["field"].as_str()),
            (400, Some(field)),
            "{path}: {body}"
        );
    }
    for ttl in [json!(1e300), json!("1e30"), json!(-1)] {
        let r = t
            .client
            .put(t.url("/api/state/s/k"))
            .bearer_auth(TOKEN)
            .json(&json!({"value": 1, "ttl": ttl}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "ttl {ttl}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["field"], "ttl", "{body}");
    }
    assert_still_serving(&t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_inf_on_a_200_is_ignored_and_the_post_is_sent_once() {
    let mut fake =
        FakeHttp::start(|_| Reply::json(200, &json!({"ok": true})).header("Retry-After", "inf"))
            .await;
    let script = format!(
        r#"on_track("Go", |e| {{
            let a = http::post("{0}/first", #{{ n: 1 }});
            let b = http::post("{0}/second", #{{ n: 2 }});
            log::info(`${{a.status}} ${{b.status}}`);
        }});"#,
        fake.base_url
    );
    let t = TestApp::builder().script("go.rhai", &script).start().await;
    t.post("/v1/track", &json!({"userId": "u", "event": "Go"}))
        .await;
    let runs = t.wait_run_count(1, 10).await;
    assert_eq!(runs[0].status, RunStatus::Ok, "{:#?}", runs[0]);
    assert_eq!(runs[0].logs[0].message, "200 200");
    assert_eq!(fake.next(5).await.path, "/first");
    assert_eq!(fake.next(5).await.path, "/second");
    assert_eq!(fake.received().len(), 2, "each POST arrived once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slack_timestamp_at_the_edge_of_i64_is_a_401() {
    let t = TestApp::builder()
        .config("[approvals]\nslack_signing_secret = \"signing\"")
        .start()
        .await;
    for ts in [
        "-9223372036854775808",
        "9223372036854775807",
        "99999999999999999999",
    ] {
        let r = t
            .client
            .post(t.url("/webhooks/slack/interactivity"))
            .header("x-slack-request-timestamp", ts)
            .header("x-slack-signature", "v0=00")
            .body("payload=%7B%7D")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{ts}");
    }
    assert_still_serving(&t).await;
}

/// Peak resident memory of this process (each nextest test is its own process).
fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// A server whose `/endless` streams 512 MB (no length given); counts what it
/// managed to send.
async fn huge_upstream(sent: Arc<AtomicU64>) -> String {
    let chunk = bytes::Bytes::from(vec![b'x'; 64 * 1024]);
    let app = Router::new().route(
        "/endless",
        axum::routing::get(move || {
            let (chunk, sent) = (chunk.clone(), Arc::clone(&sent));
            async move {
                let stream = futures_util::stream::iter((0..8192).map(move |_| {
                    sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    Ok::<_, std::io::Error>(chunk.clone())
                }));
                Body::from_stream(stream)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

/// A raw server that answers every request with `Content-Length: 512 MB`, a few
/// bytes, and then nothing.
async fn declares_512_mb() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\nxxxx",
                    512u64 << 20
                );
                let _ = conn.write_all(head.as_bytes()).await;
                std::future::pending::<()>().await;
            });
        }
    });
    base
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_512_mb_response_fails_the_run_at_the_cap_and_memory_stays_flat() {
    let sent = Arc::new(AtomicU64::new(0));
    let base = huge_upstream(Arc::clone(&sent)).await;
    let declared = declares_512_mb().await;
    let script = r#"
        on_track("Endless", |e| { http::get("/endless", #{ connection: "huge" }); });
        on_track("Declared", |e| { http::get("/", #{ connection: "declared" }); });
    "#;
    let t = TestApp::builder()
        .script("big.rhai", script)
        .config(&format!(
            "[connections.huge]\nbase_url = \"{base}\"\nmax_response_bytes = 1048576\n\n[connections.declared]\nbase_url = \"{declared}\"\nmax_response_bytes = 1048576"
        ))
        .start()
        .await;
    let before = peak_rss_bytes();
    t.post("/v1/track", &json!({"userId": "a", "event": "Endless"}))
        .await;
    t.post("/v1/track", &json!({"userId": "b", "event": "Declared"}))
        .await;
    let runs = t.wait_run_count(2, 30).await;
    for r in &runs {
        assert_eq!(r.status, RunStatus::Failed, "not retried: {r:#?}");
        let message = &r.error.as_ref().unwrap().message;
        assert!(message.contains("1048576-byte limit"), "{message}");
        assert!(message.contains("max_response_bytes"), "{message}");
    }
    let grew = peak_rss_bytes().saturating_sub(before);
    assert!(grew < 48 << 20, "peak RSS grew by {} MB", grew >> 20);
    assert!(
        sent.load(Ordering::Relaxed) < 64 << 20,
        "the stream was cut early, not read to its end ({} MB sent)",
        sent.load(Ordering::Relaxed) >> 20
    );
    assert_still_serving(&t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_another_origin_never_receives_the_connections_secrets() {
    let mut elsewhere = FakeHttp::ok().await;
    let target = format!("{}/steal", elsewhere.base_url);
    let mut api = FakeHttp::start(move |r| match r.path.as_str() {
        "/away" => Reply::text(302, "").header("Location", &target),
        "/here" => Reply::text(302, "").header("Location", "/final"),
        _ => Reply::json(200, &json!({"ok": true})),
    })
    .await;
    let script = format!(
        r#"on_track("Go", |e| {{
            let away = http::get("/away", #{{ connection: "api" }});
            let here = http::get("/here", #{{ connection: "api" }});
            let plain = http::get("{}/away");
            log::info(`${{away.status}} ${{here.status}} ${{plain.status}}`);
        }});"#,
        api.base_url
    );
    let t = TestApp::builder()
        .script("go.rhai", &script)
        .config(&format!(
            "[connections.api]\nbase_url = \"{}\"\nbearer = \"bearer-secret\"\nheaders = {{ \"X-Api-Key\" = \"key-secret\" }}",
            api.base_url
        ))
        .start()
        .await;
    t.post("/v1/track", &json!({"userId": "u", "event": "Go"}))
        .await;
    let runs = t.wait_run_count(1, 10).await;
    assert_eq!(runs[0].status, RunStatus::Ok, "{:#?}", runs[0]);
    assert_eq!(
        runs[0].logs[0].message, "302 200 200",
        "the connection's cross-origin redirect is answered, not followed; a same-origin one and a plain URL's are followed"
    );
    let seen: Vec<String> = api.received().iter().map(|r| r.path.clone()).collect();
    assert_eq!(seen, ["/away", "/here", "/final", "/away"]);
    let final_hop = &api.received()[2];
    assert_eq!(
        final_hop.header("x-api-key"),
        Some("key-secret"),
        "same origin keeps them"
    );
    let stolen = elsewhere.next(5).await;
    assert_eq!(stolen.path, "/steal", "only the plain URL call went there");
    assert_eq!(elsewhere.received().len(), 1);
    assert_eq!(stolen.header("x-api-key"), None);
    assert_eq!(stolen.header("authorization"), None);
    let _ = api.next(1).await;
}

/// A fake that records every request and never answers it.
async fn black_hole() -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<axum::http::HeaderMap>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let app = Router::new().fallback(move |headers: axum::http::HeaderMap| {
        let _ = tx.send(headers);
        std::future::pending::<&'static str>()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, rx)
}

const CHARGE: &str = r#"on_track("Charge", |e| {
    http::post("/charges", #{ amount: 100 }, #{ connection: "pay" });
});"#;

async fn charge_app(base: &str, on_unknown: &str) -> TestApp {
    let t = TestApp::builder()
        .script("pay.rhai", CHARGE)
        .config(&format!(
            "[connections.pay]\nbase_url = \"{base}\"\ntimeout_ms = 300\n{on_unknown}\n\n[retry]\nmax_attempts = 2\nbase_ms = 1"
        ))
        .start()
        .await;
    t.post("/v1/track", &json!({"userId": "u", "event": "Charge"}))
        .await;
    t
}

fn attempt_of(runs: &[RunRecord], n: u32) -> &RunRecord {
    runs.iter()
        .find(|r| r.attempt == n)
        .unwrap_or_else(|| panic!("no attempt {n}: {runs:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_outcome_is_marked_and_retried_with_the_same_idempotency_key() {
    let (base, mut received) = black_hole().await;
    let t = charge_app(&base, "").await;
    let runs = t
        .wait_runs(20, |r| r.iter().any(|r| r.status == RunStatus::Dead))
        .await;
    let first = attempt_of(&runs, 1);
    assert_eq!(first.status, RunStatus::Retrying);
    assert_eq!(
        first.calls.len(),
        1,
        "a POST is not re-sent inside the call"
    );
    assert!(first.calls[0].unknown, "{:#?}", first.calls);
    let a = received.recv().await.unwrap();
    let b = received.recv().await.unwrap();
    let key = |h: &axum::http::HeaderMap| {
        h.get("idempotency-key")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        key(&a),
        key(&b),
        "the retry carries the same Idempotency-Key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_on_unknown_fail_an_unknown_outcome_is_never_sent_again() {
    let (base, mut received) = black_hole().await;
    let t = charge_app(&base, "on_unknown = \"fail\"").await;
    let runs = t
        .wait_runs(20, |r| r.iter().any(|r| r.status == RunStatus::Failed))
        .await;
    assert_eq!(runs.len(), 1, "{runs:#?}");
    let message = &runs[0].error.as_ref().unwrap().message;
    assert!(message.contains("on_unknown"), "{message}");
    assert!(runs[0].calls[0].unknown);
    assert!(received.recv().await.is_some());
    let (_, dead) = t.admin_get("/api/dead-letters").await;
    assert_eq!(dead["dead_letters"].as_array().unwrap().len(), 1);
    assert!(received.try_recv().is_err(), "sent once only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_capacity_ingest_answers_503_with_retry_after_and_recovers() {
    let t = TestApp::builder()
        .server("max_inflight_requests = 1")
        .start()
        .await;
    // A client that starts a request and stalls its body holds the only slot.
    let body = br#"{"userId":"u","event":"E"}"#;
    let addr = t.base.trim_start_matches("http://").to_owned();
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v1/track HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    slow.write_all(&body[..10]).await.unwrap();
    // Bounded wait until the stalled request holds the slot (an in-memory count).
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while t.app.inflight.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the stalled request took the slot");
    let shed = t
        .client
        .post(t.url("/v1/track"))
        .body(r#"{"userId":"v","event":"E"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(shed.status(), 503, "shed while the first held the slot");
    assert_eq!(shed.headers()["retry-after"], "1");
    let answer: Value = shed.json().await.unwrap();
    assert_eq!(answer["code"], "overloaded");
    slow.write_all(&body[10..]).await.unwrap();
    let mut reply = String::new();
    slow.read_to_string(&mut reply).await.unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let (status, _) = t
        .post("/v1/track", &json!({"userId": "w", "event": "E"}))
        .await;
    assert_eq!(status, 200, "serving again once the slot is free");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_get_cors_answers_and_other_origins_are_refused_when_restricted() {
    let t = TestApp::builder()
        .config("[segment]\ncors_origins = [\"https://shop.example.com\"]")
        .start()
        .await;
    let preflight = t
        .client
        .request(reqwest::Method::OPTIONS, t.url("/v1/t"))
        .header("origin", "https://shop.example.com")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    let h = preflight.headers();
    assert_eq!(h["access-control-allow-origin"], "https://shop.example.com");
    assert!(
        h["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    assert_eq!(h["access-control-allow-headers"], "content-type");
    let ok = t
        .client
        .post(t.url("/v1/t"))
        .header("origin", "https://shop.example.com")
        .header("content-type", "text/plain")
        .body(r#"{"userId":"u","event":"E"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://shop.example.com"
    );
    let refused = t
        .client
        .post(t.url("/v1/t"))
        .header("origin", "https://evil.example")
        .body(r#"{"userId":"u","event":"Evil"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("cors_origins"),
        "{body}"
    );
    let stored = t.app.queue.events_since(0).unwrap();
    assert_eq!(stored.len(), 1, "nothing from the refused origin");
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_dir_and_the_token_file_are_private_and_tightened_if_loose() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let token = data.join("admin-token");
    std::fs::write(&token, "loose-token\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = format!(
        "[server]\ndata_dir = {:?}\nscripts_dir = {:?}\n",
        data.display().to_string(),
        dir.path().join("scripts").display().to_string()
    );
    let cfg = spur::config::load_from_str(&text, None, &std::collections::BTreeMap::new()).unwrap();
    let app = spur::app::App::open(cfg).await.unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&token), 0o600);
    assert_eq!(app.admin_token.expose(), "loose-token");
    app.shutdown().await;
}
