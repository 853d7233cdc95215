//! The host API through real runs: `http` against a fake service (JSON in and out,
//! retries, time-outs, the run record's call list), `state`, logs.
//! Run with: cargo nextest run --test host

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::TestApp;
use serde_json::json;
use spur::run::RunStatus;
use spur::testing::{FakeHttp, Reply};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_calls_send_json_and_return_status_headers_body_json() {
    let mut fake = FakeHttp::start(|r| {
        Reply::json(
            201,
            &json!({"got": r.json, "path": r.path, "q": r.query.get("page")}),
        )
        .header("x-request-id", "abc")
    })
    .await;
    let script = format!(
        r#"
        on_track("Go", |e| {{
            let r = http::post("{base}/items", #{{ name: e.properties.name, n: 2 }});
            log::info(`${{r.status}} ${{r.ok}} ${{r.headers["x-request-id"]}} ${{r.json.got.name}}`);
            let g = http::request(#{{ method: "get", url: "{base}/list", query: #{{ page: 3 }}, headers: #{{ "X-Custom": "yes" }} }});
            log::info(`${{g.json.q}} ${{type_of(g.body)}}`);
        }});
        "#,
        base = fake.base_url
    );
    let t = TestApp::builder()
        .script("calls.rhai", &script)
        .start()
        .await;
    t.post(
        "/v1/track",
        &json!({"userId": "u", "event": "Go", "properties": {"name": "widget"}}),
    )
    .await;
    let post = fake.next(10).await;
    assert_eq!(
        (post.method.as_str(), post.path.as_str()),
        ("POST", "/items")
    );
    assert_eq!(post.json, Some(json!({"name": "widget", "n": 2})));
    assert!(
        post.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    let get = fake.next(10).await;
    assert_eq!(get.query.get("page").map(String::as_str), Some("3"));
    assert_eq!(get.header("x-custom"), Some("yes"));
    let runs = t.wait_run_count(1, 10).await;
    let run = &runs[0];
    assert_eq!(run.status, RunStatus::Ok, "{run:?}");
    assert_eq!(run.logs[0].message, "201 true abc widget");
    assert_eq!(run.logs[1].message, "3 string");
    assert_eq!(run.calls.len(), 2);
    assert_eq!(run.calls[0].method, "POST");
    assert_eq!(run.calls[0].url, format!("{}/items", fake.base_url));
    assert_eq!(run.calls[0].status, Some(201));
    assert!(run.calls[0].ms >= 0.0);
    assert!(run.calls[1].url.ends_with("/list?page=3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_retries_503_and_429_but_not_400() {
    let (flaky, limited) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (f, l) = (Arc::clone(&flaky), Arc::clone(&limited));
    let fake = FakeHttp::start(move |r| match r.path.as_str() {
        "/flaky" if f.fetch_add(1, Ordering::SeqCst) == 0 => {
            Reply::json(503, &json!({"error": "busy"}))
        }
        "/limited" if l.fetch_add(1, Ordering::SeqCst) == 0 => {
            Reply::json(429, &json!({"error": "slow down"})).header("retry-after", "1")
        }
        "/bad" => Reply::json(400, &json!({"error": "nope"})),
        _ => Reply::json(200, &json!({"ok": true})),
    })
    .await;
    let script = format!(
        r#"on_track("Go", |e| {{
            let a = http::get("{b}/flaky");
            let c = http::post("{b}/bad", #{{}});
            log::info(`${{a.status}} ${{c.status}}`);
        }});
        on_track("Limited", |e| {{ log::info(`${{http::get("{b}/limited").status}}`); }});"#,
        b = fake.base_url
    );
    let t = TestApp::builder()
        .script("retry.rhai", &script)
        .start()
        .await;
    t.post("/v1/track", &json!({"userId": "u", "event": "Go"}))
        .await;
    let runs = t.wait_run_count(1, 10).await;
    assert_eq!(runs[0].logs[0].message, "200 400");
    let attempts: Vec<_> = runs[0]
        .calls
        .iter()
        .map(|c| {
            (
                c.url.rsplit('/').next().unwrap().to_owned(),
                c.status,
                c.attempt,
            )
        })
        .collect();
    assert_eq!(
        attempts,
        [
            ("flaky".into(), Some(503), 1),
            ("flaky".into(), Some(200), 2),
            ("bad".into(), Some(400), 1)
        ]
    );
    t.post("/v1/track", &json!({"userId": "v", "event": "Limited"}))
        .await;
    let runs = t.wait_run_count(2, 10).await;
    let limited = runs.iter().find(|r| r.handler.contains("Limited")).unwrap();
    assert_eq!(limited.logs[0].message, "200");
    assert_eq!(
        limited
            .calls
            .iter()
            .filter(|c| c.status == Some(429))
            .count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_failure_is_an_error_with_line_and_is_retried() {
    let script = r#"on_track(|e| {
        http::get("http://127.0.0.1:9/unreachable");
    });"#;
    let t = TestApp::builder()
        .script("down.rhai", script)
        .config("[retry]\nbase_ms = 10\nmax_attempts = 2")
        .start()
        .await;
    t.post("/v1/track", &json!({"userId": "u", "event": "E"}))
        .await;
    let runs = t
        .wait_runs(30, |r| r.iter().any(|r| r.status == RunStatus::Dead))
        .await;
    let first = runs.iter().find(|r| r.attempt == 1).unwrap();
    assert_eq!(first.status, RunStatus::Retrying);
    let err = first.error.as_ref().unwrap();
    assert!(err.message.contains("connection failed"), "{err:?}");
    assert_eq!(err.line, Some(2));
    assert!(first.calls.iter().all(|c| c.error.is_some()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_is_durable_namespaced_and_shared_on_request() {
    let t = TestApp::builder()
        .script(
            "a.rhai",
            r#"on_track(|e| {
                state::set("k", #{ n: 1, tags: ["x"] });
                state::shared::set("seen", true);
                log::info(`${state::incr("count")} ${state::get("k").tags[0]} ${state::get("missing", "dflt")}`);
            });"#,
        )
        .script(
            "b.rhai",
            r#"on_track(|e| {
                log::info(`${state::get("k") == ()} ${state::shared::get("seen") ?? "later"} ${state::keys().len()}`);
                state::set("mine", 1);
                state::del("mine");
            });"#,
        )
        .start()
        .await;
    t.post("/v1/track", &json!({"userId": "u", "event": "E"}))
        .await;
    let runs = t.wait_run_count(2, 10).await;
    let a = runs.iter().find(|r| r.script == "a").unwrap();
    assert_eq!(a.logs[0].message, "1 x dflt");
    let b = runs.iter().find(|r| r.script == "b").unwrap();
    assert!(b.logs[0].message.starts_with("true "), "{:?}", b.logs);
    let (_, state) = t.admin_get("/api/state/a").await;
    let keys: Vec<_> = state["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(keys, ["count", "k"]);
    let (_, shared) = t.admin_get("/api/state/shared").await;
    assert_eq!(shared["entries"][0]["value"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_host_calls_name_the_problem() {
    let t = TestApp::builder()
        .script(
            "bad.rhai",
            r#"
            on_track("A", |e| { http::request(#{ url: "http://x", colour: "red" }); });
            on_track("B", |e| { state::incr("s"); state::set("s", "text"); state::incr("s"); });
            on_track("C", |e| { let total = e.properties.total; if total > 100 { } });
            "#,
        )
        .config("[retry]\nmax_attempts = 1")
        .start()
        .await;
    for ev in ["A", "B", "C"] {
        t.post("/v1/track", &json!({"userId": ev, "event": ev}))
            .await;
    }
    let runs = t.wait_run_count(3, 10).await;
    let msg = |h: &str| {
        runs.iter()
            .find(|r| r.handler.contains(h))
            .unwrap()
            .error
            .clone()
            .unwrap()
            .message
    };
    assert!(
        msg("(A)").contains("unknown option `colour`"),
        "{}",
        msg("(A)")
    );
    assert!(
        msg("(B)").contains("holds the string \"text\", not a number"),
        "{}",
        msg("(B)")
    );
    assert!(
        msg("(C)").contains("e.properties?.total ?? 0"),
        "{}",
        msg("(C)")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_rate_limit_is_shared_by_every_worker() {
    let fake = FakeHttp::ok().await;
    let t = TestApp::builder()
        .script(
            "limited.rhai",
            r#"on_track(|e| { http::post("/hit", #{ u: e.userId }, #{ connection: "api" }); });"#,
        )
        .config(&format!(
            "[connections.api]\nbase_url = \"{}\"\nrate_limit = 10\nmax_concurrency = 1",
            fake.base_url
        ))
        .start()
        .await;
    let started = std::time::Instant::now();
    // Six users: four workers run them in parallel, the connection spaces the calls.
    let batch: Vec<serde_json::Value> = (0..6)
        .map(|i| json!({"type": "track", "userId": format!("u{i}"), "event": "E"}))
        .collect();
    t.post("/v1/batch", &json!({ "batch": batch })).await;
    t.wait_run_count(6, 10).await;
    let took = started.elapsed();
    assert!(
        took >= std::time::Duration::from_millis(500),
        "6 calls at 10/s take at least 0.5 s: {took:?}"
    );
    assert_eq!(fake.received().len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connections_allow_list_refuses_every_other_call_permanently() {
    let fake = FakeHttp::ok().await;
    let t = TestApp::builder()
        .script(
            "scoped.rhai",
            r#"on_track(|e| {
                http::get("/v1/spaces/s1/users", #{ connection: "segment_api" });
                http::post("/regulations", #{ ids: [e.userId] }, #{ connection: "segment_api" });
                http::delete("/v1/spaces/s1", #{ connection: "segment_api" });
            });"#,
        )
        .config(&format!(
            "[connections.segment_api]\nbase_url = \"{}\"\nallow = [\"GET /v1/spaces/*\", \"POST /regulations\"]",
            fake.base_url
        ))
        .start()
        .await;
    t.post(
        "/v1/track",
        &json!({"type": "track", "userId": "u1", "event": "E"}),
    )
    .await;
    let runs = t.wait_run_count(1, 10).await;
    let run = &runs[0];
    assert_eq!(
        run.status,
        spur::run::RunStatus::Failed,
        "permanent: {run:?}"
    );
    let message = &run.error.as_ref().unwrap().message;
    assert!(
        message.contains(
            "DELETE /v1/spaces/s1 is not allowed on connection \"segment_api\": its allow list is [\"GET /v1/spaces/*\", \"POST /regulations\"]"
        ),
        "{message}"
    );
    let paths: Vec<String> = fake.received().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        paths,
        ["/v1/spaces/s1/users", "/regulations"],
        "the DELETE never left"
    );
}
