//! The `segment` connector against fake Segment APIs: write-back batches with Basic
//! auth that survive a crash while the API is down, Profile API cursors, Public API
//! pagination and rate limits. Run with: cargo nextest run --test segment

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use base64::Engine as _;
use common::{Daemon, TestApp, base_config};
use serde_json::{Value, json};
use spur::run::RunStatus;
use spur::testing::{FakeHttp, Reply};

fn basic(user: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:"))
    )
}

fn segment_config(fake: &str, extra: &str) -> String {
    format!(
        "[segment]\nwrite_key = \"WK-out\"\napi_base = \"{fake}\"\nprofile_base = \"{fake}\"\npublic_api_base = \"{fake}\"\nprofile_space_id = \"spa_1\"\nprofile_token = \"PT-secret\"\npublic_api_token = \"PUB-secret\"\nbatch_size = 3\nflush_interval = \"200ms\"\n{extra}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_back_reaches_the_tracking_api_in_batches_with_basic_auth() {
    let mut fake = FakeHttp::start(|_| Reply::json(200, &json!({"success": true}))).await;
    let t = TestApp::builder()
        .script(
            "wb.rhai",
            r#"on_track("Order Completed", |e| {
                for i in 0..5 {
                    segment::track(#{ userId: e.userId, event: "Big Order Alerted", properties: #{ i: i } });
                }
                let id = segment::identify(#{ userId: e.userId, traits: #{ vip: true } });
                log::info(id);
            });"#,
        )
        .config(&segment_config(&fake.base_url, ""))
        .start()
        .await;
    t.post(
        "/v1/track",
        &json!({"userId": "ada", "event": "Order Completed"}),
    )
    .await;
    let runs = t.wait_run_count(1, 10).await;
    assert_eq!(runs[0].status, RunStatus::Ok, "{:?}", runs[0].error);
    let job = runs[0].job_id;
    let identify_id = runs[0].logs.last().unwrap().message.clone();
    assert!(
        identify_id.starts_with(&format!("spur-{job}-")),
        "derived from the run: {identify_id}"
    );
    assert!(
        runs[0].logs[0]
            .message
            .starts_with(&format!("segment::track queued spur-{job}-"))
    );

    let mut got = Vec::new();
    while got.len() < 6 {
        let req = fake.next(10).await;
        assert_eq!(
            (req.method.as_str(), req.path.as_str()),
            ("POST", "/v1/batch")
        );
        assert_eq!(req.header("authorization"), Some(basic("WK-out").as_str()));
        let body = req.json.unwrap();
        let batch = body["batch"].as_array().unwrap();
        assert!(batch.len() <= 3, "batches of segment.batch_size");
        assert!(body["sentAt"].is_string());
        got.extend(batch.iter().cloned());
    }
    assert_eq!(got.iter().filter(|m| m["type"] == "track").count(), 5);
    let ident = got.iter().find(|m| m["type"] == "identify").unwrap();
    assert_eq!(ident["traits"]["vip"], true);
    assert_eq!(ident["messageId"], identify_id.as_str());
    let mut ids: Vec<&str> = got
        .iter()
        .map(|m| m["messageId"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 6, "each write-back has its own id");
    assert_eq!(ident["context"]["library"]["name"], "spur");
    assert!(got.iter().all(
        |m| m["timestamp"].is_string() && m["messageId"].as_str().unwrap().starts_with("spur-")
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_write_back_fails_the_run_naming_the_field() {
    let fake = FakeHttp::ok().await;
    let t = TestApp::builder()
        .script(
            "bad.rhai",
            r#"on_track(|e| { segment::track(#{ userId: e.userId }); });"#,
        )
        .config(&segment_config(&fake.base_url, ""))
        .start()
        .await;
    t.post("/v1/track", &json!({"userId": "u", "event": "E"}))
        .await;
    let runs = t.wait_run_count(1, 10).await;
    assert_eq!(runs[0].status, RunStatus::Failed);
    assert!(
        runs[0]
            .error
            .as_ref()
            .unwrap()
            .message
            .contains("segment::track: track requires `event`"),
        "{:?}",
        runs[0].error
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_back_survives_a_crash_while_the_api_is_down() {
    let up = Arc::new(AtomicBool::new(false));
    let u = Arc::clone(&up);
    let mut fake = FakeHttp::start(move |_| {
        if u.load(Ordering::SeqCst) {
            Reply::json(200, &json!({"success": true}))
        } else {
            Reply::json(503, &json!({"error": "down"}))
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("scripts")).unwrap();
    std::fs::write(
        dir.path().join("scripts/wb.rhai"),
        r#"on_track(|e| { segment::track(#{ userId: e.userId, event: "Echo", properties: #{ n: e.properties.n } }); });"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("spur.toml"),
        base_config(dir.path(), &segment_config(&fake.base_url, "")),
    )
    .unwrap();
    let daemon = Daemon::start(dir.path());
    let client = common::client();
    let batch: Vec<Value> = (0..7).map(|n| json!({"type": "track", "userId": format!("u{n}"), "event": "Go", "properties": {"n": n}})).collect();
    let r = client
        .post(format!("{}/v1/batch", daemon.base))
        .json(&json!({ "batch": batch }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The API is down: the outbox keeps trying.
    let first = fake.next(10).await;
    assert_eq!(first.path, "/v1/batch");
    // Wait until every run has queued its message, then crash.
    loop {
        let runs = daemon.get("/api/runs?status=ok&wait=5s&limit=100").await;
        if runs["runs"].as_array().unwrap().len() >= 7 {
            break;
        }
    }
    daemon.kill9();
    up.store(true, Ordering::SeqCst);
    while fake.requests.try_recv().is_ok() {}
    let _daemon = Daemon::start(dir.path());
    let mut seen = std::collections::HashSet::new();
    while seen.len() < 7 {
        let req = fake.next(15).await;
        for m in req.json.unwrap()["batch"].as_array().unwrap() {
            seen.insert(m["properties"]["n"].as_i64().unwrap());
        }
    }
    assert_eq!(
        seen.len(),
        7,
        "every written-back event arrived after the restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_api_reads_follow_cursors_and_treat_404_as_no_profile() {
    let mut fake = FakeHttp::start(|r| {
        if r.header("authorization") != Some(basic("PT-secret").as_str()) {
            return Reply::json(401, &json!({"error": {"code": "authentication_error", "message": "bad token"}}));
        }
        match (r.path.as_str(), r.query.get("next").map(String::as_str)) {
            ("/v1/spaces/spa_1/collections/users/profiles/user_id:ada/traits", None) => Reply::json(
                200,
                &json!({"traits": {"plan": "pro"}, "cursor": {"url": "x", "has_more": true, "next": "p2"}}),
            ),
            ("/v1/spaces/spa_1/collections/users/profiles/user_id:ada/traits", Some("p2")) => Reply::json(
                200,
                &json!({"traits": {"ltv": 450.5}, "cursor": {"url": "x", "has_more": false, "next": ""}}),
            ),
            ("/v1/spaces/spa_1/collections/users/profiles/email:a%2Bb@x.com/events", _) => Reply::json(
                200,
                &json!({"data": [{"event": "Signed Up"}], "cursor": {"has_more": false, "next": ""}}),
            ),
            _ => Reply::json(404, &json!({"error": {"code": "not_found", "message": "Profile was not found."}})),
        }
    })
    .await;
    let t = TestApp::builder()
        .script(
            "p.rhai",
            r#"on_track(|e| {
                let t = segment::traits("ada");
                let ev = segment::events("email:a+b@x.com", #{ limit: 5, include: ["Signed Up"] });
                let none = segment::traits("nobody");
                log::info(`${t.plan} ${t.ltv} ${ev[0].event} ${none == ()}`);
            });"#,
        )
        .config(&segment_config(&fake.base_url, ""))
        .start()
        .await;
    t.post("/v1/track", &json!({"userId": "u", "event": "E"}))
        .await;
    let runs = t.wait_run_count(1, 10).await;
    assert_eq!(runs[0].status, RunStatus::Ok, "{:?}", runs[0].error);
    assert_eq!(runs[0].logs[0].message, "pro 450.5 Signed Up true");
    fake.next(5).await;
    let second = fake.next(5).await;
    assert_eq!(second.query.get("next").map(String::as_str), Some("p2"));
    let events = fake.next(5).await;
    assert_eq!(events.query.get("limit").map(String::as_str), Some("5"));
    assert_eq!(
        events.query.get("include").map(String::as_str),
        Some("Signed Up")
    );
    assert_eq!(runs[0].calls.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_api_follows_pagination_and_backs_off_on_429() {
    let limited = Arc::new(AtomicUsize::new(0));
    let l = Arc::clone(&limited);
    let fake = FakeHttp::start(move |r| {
        if r.header("authorization") != Some("Bearer PUB-secret") {
            return Reply::json(401, &json!({"errors": [{"type": "unauthorized", "message": "bad token"}]}));
        }
        match (r.method.as_str(), r.path.as_str()) {
            ("GET", "/sources") => match r.query.get("pagination.cursor").map(String::as_str) {
                None => Reply::json(200, &json!({"data": {"sources": [{"id": "s1"}], "pagination": {"current": "MA==", "next": "MQ=="}}})),
                Some("MQ==") => Reply::json(200, &json!({"data": {"sources": [{"id": "s2"}], "pagination": {"current": "MQ==", "next": null}}})),
                _ => Reply::json(400, &json!({"errors": [{"message": "bad cursor"}]})),
            },
            ("GET", "/audit-events") => {
                if l.fetch_add(1, Ordering::SeqCst) == 0 {
                    Reply::json(429, &json!({"errors": [{"type": "RequestError", "message": "Too many requests"}]})).header("retry-after", "1")
                } else {
                    Reply::json(200, &json!({"data": {"events": [{"id": "ae1", "type": "Source Modified", "startTime": r.query.get("startTime")}], "pagination": {"next": null}}}))
                }
            }
            ("POST", "/regulations") => Reply::json(200, &json!({"data": {"regulateId": "reg_1", "body": r.json}})),
            ("GET", "/tracking-plans/tp_1/rules") => Reply::json(200, &json!({"data": {"rules": [{"type": "TRACK", "key": "Order Completed"}], "pagination": {"next": null}}})),
            _ => Reply::json(404, &json!({"errors": [{"type": "not-found", "message": format!("no route {}", r.path)}]})),
        }
    })
    .await;
    let t = TestApp::builder()
        .script(
            "pub.rhai",
            r#"
            on_track("Read", |e| {
                let s = segment::sources();
                let a = segment::audit_events(#{ start_time: "2026-11-01T00:00:00Z" });
                let rules = segment::tracking_plan_rules("tp_1");
                log::info(`${s.len()} ${s[1].id} ${a[0].startTime} ${rules[0].key}`);
            });
            on_track("Regulate", |e| {
                let r = segment::regulate(#{ type: "SUPPRESS_WITH_DELETE", subject_type: "USER_ID", ids: [e.userId] });
                log::info(`${r.regulateId} ${r.body.subjectIds[0]} ${r.body.regulationType}`);
            });
            on_track("Missing", |e| { segment::regulation("nope"); });
            "#,
        )
        .config(&segment_config(&fake.base_url, "require_approval = false"))
        .config("[retry]\nmax_attempts = 1")
        .start()
        .await;
    for (user, ev) in [("a", "Read"), ("b", "Regulate"), ("c", "Missing")] {
        t.post("/v1/track", &json!({"userId": user, "event": ev}))
            .await;
    }
    let runs = t.wait_run_count(3, 15).await;
    let by = |h: &str| runs.iter().find(|r| r.handler.contains(h)).unwrap();
    let read = by("(Read)");
    assert_eq!(read.status, RunStatus::Ok, "{:?}", read.error);
    assert_eq!(
        read.logs[0].message,
        "2 s2 2026-11-01T00:00:00Z Order Completed"
    );
    assert!(read.calls.iter().any(|c| c.status == Some(429)));
    assert!(read.duration_ms >= 1000.0, "honoured Retry-After");
    assert_eq!(
        by("(Regulate)").logs[0].message,
        "reg_1 b SUPPRESS_WITH_DELETE"
    );
    let missing = by("(Missing)");
    assert_eq!(missing.status, RunStatus::Failed, "a 404 is permanent");
    assert!(
        missing
            .error
            .as_ref()
            .unwrap()
            .message
            .contains("no route /regulations/nope"),
        "{:?}",
        missing.error
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regulations_wait_for_an_approval_by_default() {
    let mut fake = FakeHttp::start(|r| {
        Reply::json(
            200,
            &json!({"data": {"regulateId": "reg_9", "seen": r.json}}),
        )
    })
    .await;
    let t = TestApp::builder()
        .script(
            "gdpr.rhai",
            r#"on_track("Deletion Requested", |e| {
                let r = segment::delete_user(e.userId);
                log::info(r.regulateId);
            });"#,
        )
        .config(&segment_config(&fake.base_url, ""))
        .start()
        .await;
    t.post(
        "/v1/track",
        &json!({"userId": "u-9", "event": "Deletion Requested"}),
    )
    .await;
    t.wait_runs(10, |r| r.iter().any(|r| r.status == RunStatus::Waiting))
        .await;
    assert!(
        fake.received().is_empty(),
        "nothing reaches Segment before the approval"
    );
    let (_, pending) = t.admin_get("/api/approvals?status=pending").await;
    let a = &pending["approvals"][0];
    assert_eq!(a["title"], "POST /regulations on segment:public");
    assert_eq!(a["data"]["body"]["subjectIds"][0], "u-9");
    let id = a["id"].as_str().unwrap();
    t.admin_post(
        &format!("/api/approvals/{id}/approve"),
        &json!({"by": "dpo"}),
    )
    .await;
    let req = fake.next(10).await;
    assert_eq!(
        (req.method.as_str(), req.path.as_str()),
        ("POST", "/regulations")
    );
    assert_eq!(req.header("authorization"), Some("Bearer PUB-secret"));
    let runs = t
        .wait_runs(10, |r| r.iter().any(|r| r.status == RunStatus::Ok))
        .await;
    assert_eq!(runs[0].logs[0].message, "reg_9");
}
