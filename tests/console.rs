//! The console's server side over real HTTP: logging in with a token into a
//! cookie session (its flags, its expiry on the daemon's clock), CSRF on every
//! write through a session, decisions made as the logged-in client, the run
//! timeline and the chart history. The pages themselves are driven in a real
//! browser by `console_ui.rs`.

mod common;

use std::time::Duration;

use common::TestApp;
use serde_json::{Value, json};
use spur::run::RunStatus;

const SCRIPT: &str = r#"on_track("Order Completed", |e| {
    let total = e.properties?.total ?? 0;
    if total < 0 {
        throw `cannot handle an order of ${total}`;
    }
    log::info(`order of ${total}`);
});

on_track("Refund Requested", |e| {
    let d = approval::ask(#{ title: `Refund ${e.properties.order}` });
    log::info(`refund ${d.status} by ${d.by}`);
});
"#;

const CLIENTS: &str = r#"
[retry]
max_attempts = 1

[clients.ops]
token = "ops-token"
scopes = ["runs:read", "runs:replay", "approvals:read", "approvals:decide"]

[clients.viewer]
token = "viewer-token"
scopes = ["runs:read", "approvals:read"]
"#;

async fn app(clock: Option<&std::sync::Arc<spur::clock::ManualClock>>) -> TestApp {
    let mut b = TestApp::builder()
        .script("orders.rhai", SCRIPT)
        .config(CLIENTS);
    if let Some(c) = clock {
        b = b.clock(c);
    }
    b.start().await
}

/// A logged-in session: its cookie header and CSRF token.
struct Login {
    cookie: String,
    csrf: String,
    body: Value,
}

async fn login(t: &TestApp, token: &str) -> Result<Login, (u16, Value)> {
    let r = t
        .client
        .post(t.url("/ui/login"))
        .json(&json!({ "token": token }))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let set = r
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_owned());
    let body: Value = r.json().await.unwrap_or(Value::Null);
    if status != 200 {
        return Err((status, body));
    }
    let set = set.expect("a session cookie");
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(set.contains(flag), "{flag} in {set}");
    }
    Ok(Login {
        cookie: set.split(';').next().unwrap().to_owned(),
        csrf: body["csrf"].as_str().unwrap().to_owned(),
        body,
    })
}

async fn send(
    t: &TestApp,
    method: reqwest::Method,
    path: &str,
    cookie: &str,
    csrf: Option<&str>,
) -> (u16, Value) {
    let mut req = t
        .client
        .request(method, t.url(path))
        .header("cookie", cookie)
        .json(&json!({}));
    if let Some(c) = csrf {
        req = req.header("x-csrf-token", c);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_logs_in_to_a_session_that_follows_its_scopes_and_expires() {
    let clock = spur::clock::ManualClock::at(chrono::Utc::now());
    let t = app(Some(&clock)).await;
    let (status, body) = login(&t, "wrong").await.err().expect("refused");
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")));

    let viewer = login(&t, "viewer-token").await.unwrap();
    assert_eq!(viewer.body["name"], "viewer");
    assert_eq!(
        viewer.body["scopes"],
        json!(["runs:read", "approvals:read"])
    );
    let get = |path: &'static str, cookie: String| {
        let t = &t;
        async move { send(t, reqwest::Method::GET, path, &cookie, None).await }
    };
    assert_eq!(get("/api/runs", viewer.cookie.clone()).await.0, 200);
    assert_eq!(
        get("/ui/session", viewer.cookie.clone()).await.1["name"],
        "viewer"
    );
    // Its scopes, not more: no state, no audit.
    assert_eq!(get("/api/audit", viewer.cookie.clone()).await.0, 403);
    assert_eq!(get("/api/state/orders", viewer.cookie.clone()).await.0, 403);

    // The owner's token logs in as the owner.
    let owner = login(&t, common::TOKEN).await.unwrap();
    assert_eq!(owner.body["name"], "owner");
    assert_eq!(get("/api/audit", owner.cookie.clone()).await.0, 200);

    // After the session's lifetime (12 hours by default) the cookie is worth nothing.
    clock.advance(Duration::from_secs(12 * 3600 + 1));
    assert_eq!(get("/api/runs", viewer.cookie.clone()).await.0, 401);
    assert_eq!(get("/ui/session", owner.cookie.clone()).await.0, 401);

    // Logins are audited; refused ones too.
    let (_, audit) = t.admin_get("/api/audit?action=console").await;
    let actors: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["actor"].as_str().unwrap())
        .collect();
    assert_eq!(actors, ["viewer", "owner"], "{audit}");
    let (_, refused) = t.admin_get("/api/audit?action=auth.failed").await;
    assert!(
        refused["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["target"] == "POST /ui/login"),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_a_session_need_its_csrf_token_and_logout_ends_it() {
    let t = app(None).await;
    t.post(
        "/v1/track",
        &json!({"userId": "bob", "event": "Order Completed", "properties": {"total": -5}}),
    )
    .await;
    t.wait_runs(20, |r| r.iter().any(|r| r.status == RunStatus::Dead))
        .await;
    let ops = login(&t, "ops-token").await.unwrap();
    let (_, dead) = t.admin_get("/api/dead-letters").await;
    let id = dead["dead_letters"][0]["id"].as_u64().unwrap();
    let replay_path = format!("/api/dead-letters/{id}/replay");
    // A forged write (another site's form or fetch carries the cookie, but
    // cannot read the CSRF token): refused, and audited.
    let (status, body) = send(&t, reqwest::Method::POST, &replay_path, &ops.cookie, None).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["message"].as_str().unwrap().contains("CSRF"), "{body}");
    let wrong = Some("0".repeat(64));
    let (status, _) = send(
        &t,
        reqwest::Method::POST,
        &replay_path,
        &ops.cookie,
        wrong.as_deref(),
    )
    .await;
    assert_eq!(status, 403);
    let (_, audit) = t.admin_get("/api/audit?action=auth.csrf").await;
    assert_eq!(audit["entries"].as_array().unwrap().len(), 2, "{audit}");
    // With the token, the write goes through (and is audited as the client).
    let (status, body) = send(
        &t,
        reqwest::Method::POST,
        &replay_path,
        &ops.cookie,
        Some(&ops.csrf),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (_, audit) = t.admin_get("/api/audit?action=runs.replay").await;
    assert_eq!(audit["entries"][0]["actor"], "ops", "{audit}");

    // Logging out needs the CSRF token too, then the cookie is dead.
    let (status, _) = send(&t, reqwest::Method::POST, "/ui/logout", &ops.cookie, None).await;
    assert_eq!(status, 403);
    let r = t
        .client
        .post(t.url("/ui/logout"))
        .header("cookie", &ops.cookie)
        .header("x-csrf-token", &ops.csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(
        r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let (status, _) = send(&t, reqwest::Method::GET, "/api/runs", &ops.cookie, None).await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_are_decided_as_the_logged_in_client() {
    let t = app(None).await;
    for order in ["A-1", "A-2"] {
        t.post(
            "/v1/track",
            &json!({"userId": "cy", "event": "Refund Requested", "properties": {"order": order}}),
        )
        .await;
    }
    t.wait_runs(20, |r| {
        r.iter().filter(|r| r.status == RunStatus::Waiting).count() >= 2
    })
    .await;
    let (_, pending) = t.admin_get("/api/approvals?status=pending").await;
    let ids: Vec<&str> = pending["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    let viewer = login(&t, "viewer-token").await.unwrap();
    let ops = login(&t, "ops-token").await.unwrap();
    let path = format!("/api/approvals/{}/approve", ids[0]);
    // Without approvals:decide, a well-formed request (CSRF token and all) is 403.
    let (status, _) = send(
        &t,
        reqwest::Method::POST,
        &path,
        &viewer.cookie,
        Some(&viewer.csrf),
    )
    .await;
    assert_eq!(status, 403);
    // A client cannot decide in someone else's name.
    let forged = t
        .client
        .post(t.url(&path))
        .bearer_auth("ops-token")
        .json(&json!({ "by": "the-cfo" }))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let (status, body) = send(
        &t,
        reqwest::Method::POST,
        &path,
        &ops.cookie,
        Some(&ops.csrf),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["approval"]["decided_by"], "ops");
    // The owner may still record who decided (e.g. `spur approvals --by`).
    let (status, body) = t
        .admin_post(
            &format!("/api/approvals/{}/reject", ids[1]),
            &json!({ "by": "dana", "comment": "not eligible" }),
        )
        .await;
    assert_eq!(
        (status, body["approval"]["decided_by"].as_str()),
        (200, Some("dana"))
    );
    let runs = t
        .wait_runs(20, |r| {
            r.iter().filter(|r| r.status == RunStatus::Ok).count() >= 2
        })
        .await;
    let mut logs: Vec<&str> = runs
        .iter()
        .filter(|r| r.status == RunStatus::Ok)
        .map(|r| r.logs[0].message.as_str())
        .collect();
    logs.sort_unstable();
    assert_eq!(logs, ["refund approved by ops", "refund rejected by dana"]);
    // An approval's card links to its job's runs: the park and the resumed run.
    let job = pending["approvals"][0]["job_id"].as_u64().unwrap();
    let (_, of_job) = t.admin_get(&format!("/api/runs?job={job}")).await;
    let statuses: Vec<&str> = of_job["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["job_id"], job, "{r}");
            r["status"].as_str().unwrap()
        })
        .collect();
    assert_eq!(statuses, ["ok", "waiting"], "newest first: {of_job}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_runs_timeline_shows_its_attempts_and_the_source_line() {
    let t = app(None).await;
    for (user, total) in [("ann", 10), ("bob", -5), ("ann", 20)] {
        t.post(
            "/v1/track",
            &json!({"userId": user, "event": "Order Completed", "properties": {"total": total}}),
        )
        .await;
    }
    t.wait_run_count(3, 20).await;
    // Filters: user, status, handler, trigger, time.
    let (_, bob) = t.admin_get("/api/runs?user=bob").await;
    let bob = bob["runs"].as_array().unwrap();
    assert_eq!(bob.len(), 1);
    assert_eq!(bob[0]["status"], "dead");
    let (_, ann) = t
        .admin_get("/api/runs?user=ann&status=ok&trigger=event&since=1h&handler=on_track(Order%20Completed)%230")
        .await;
    assert_eq!(ann["runs"].as_array().unwrap().len(), 2, "{ann}");
    let (_, none) = t.admin_get("/api/runs?until=2000-01-01T00:00:00Z").await;
    assert_eq!(none["runs"], json!([]));
    let (status, bad) = t.admin_get("/api/runs?trigger=cron").await;
    assert_eq!((status, bad["field"].as_str()), (400, Some("trigger")));
    let (status, bad) = t.admin_get("/api/runs?since=yesterday").await;
    assert_eq!((status, bad["field"].as_str()), (400, Some("since")));

    let id = bob[0]["id"].as_u64().unwrap();
    let (status, tl) = t.admin_get(&format!("/api/runs/{id}/timeline")).await;
    assert_eq!(status, 200, "{tl}");
    assert_eq!(tl["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(tl["run"]["error"]["line"], 4);
    let src = &tl["source"];
    assert!(
        src["file"]
            .as_str()
            .unwrap()
            .ends_with("scripts/orders.rhai"),
        "{src}"
    );
    assert_eq!(
        (src["line"].as_u64(), src["column"].as_u64()),
        (Some(4), Some(9))
    );
    let shown: Vec<(u64, &str)> = src["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["n"].as_u64().unwrap(), l["text"].as_str().unwrap()))
        .collect();
    assert_eq!(shown.len(), 5, "two lines either side: {shown:?}");
    assert_eq!(
        shown[2],
        (4, "        throw `cannot handle an order of ${total}`;")
    );
    let (status, _) = t.admin_get("/api/runs/999999/timeline").await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_page_and_its_assets_are_served_under_a_strict_policy() {
    let t = app(None).await;
    for path in ["/ui/", "/ui/assets/app.js", "/ui/assets/app.css"] {
        let r = t.client.get(t.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let csp = r.headers()["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
        assert_eq!(r.headers()["x-frame-options"], "DENY");
    }
    let r = t
        .client
        .get(t.url("/ui/assets/nope.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // The approvals page of earlier versions leads to the console's.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for (from, to) in [("/ui", "/ui/"), ("/approvals", "/ui/#/approvals")] {
        let r = no_redirects.get(t.url(from)).send().await.unwrap();
        assert_eq!(
            (
                r.status().as_u16(),
                r.headers()["location"].to_str().unwrap()
            ),
            (303, to)
        );
    }
    // The login body is JSON only: a plain HTML form from another site cannot post it.
    let r = t
        .client
        .post(t.url("/ui/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={}", common::TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_history_and_metrics_move_with_traffic() {
    let t = app(None).await;
    for i in 0..5 {
        t.post(
            "/v1/track",
            &json!({"userId": format!("u{i}"), "event": "Order Completed", "properties": {"total": 1}}),
        )
        .await;
    }
    t.post(
        "/v1/track",
        &json!({"userId": "u0", "event": "Refund Requested", "properties": {"order": "X"}}),
    )
    .await;
    t.wait_run_count(6, 20).await;
    let (_, h) = t.admin_get("/api/metrics/history").await;
    let last = h["points"].as_array().unwrap().last().unwrap().clone();
    assert!(last["events_per_s"].as_f64().unwrap() > 0.0, "{h}");
    assert!(last["runs_per_s"]["ok"].as_f64().unwrap() > 0.0, "{h}");
    assert!(last["p99_ms"].as_f64().unwrap() > 0.0, "{h}");
    assert_eq!(last["parked"], 1, "{h}");

    let text = t
        .client
        .get(t.url("/metrics"))
        .bearer_auth(common::TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "spur_ingest_request_duration_seconds_count 6",
        "spur_run_duration_seconds_count 6",
        "spur_runs_parked{kind=\"approval\"} 1",
        "spur_outbox_depth 0",
        "spur_dedup_hits_total 0",
        "# TYPE spur_run_latency_seconds histogram",
    ] {
        assert!(text.contains(line), "{line} in:\n{text}");
    }
}
