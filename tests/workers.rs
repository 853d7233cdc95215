//! Workers and the admin API: per-user order, outcomes (ok, skip, fail, retry, dead),
//! dead-letter replay, and the admin endpoints behind the token.
//! Run with: cargo nextest run --test workers

mod common;

use common::{Backend, TOKEN, TestApp};
use serde_json::json;
use spur::run::{RunRecord, RunStatus};

common::on_both_backends!(
    runs_of_one_user_start_in_order_and_never_overlap,
    retries_with_backoff_and_never_reruns_succeeded_handlers,
    skip_fail_and_dead_letters_with_replay,
    admin_api_needs_the_token_and_filters_runs,
    a_caught_fail_does_not_decide_a_later_error,
    outcomes_follow_the_type_of_the_error_not_its_text,
    answers_of_what_a_node_keeps_name_the_node,
);

fn of<'a>(runs: &'a [RunRecord], handler: &str) -> Vec<&'a RunRecord> {
    let mut v: Vec<&RunRecord> = runs.iter().filter(|r| r.handler == handler).collect();
    v.sort_by_key(|r| r.id);
    v
}

async fn runs_of_one_user_start_in_order_and_never_overlap(backend: Backend) {
    let t = TestApp::builder()
        .backend(backend)
        .script(
            "slow.rhai",
            r#"on_track(|e| { let stop = time::unix_ms() + 15; while time::unix_ms() < stop { } });"#,
        )
        .start()
        .await;
    let mut batch = Vec::new();
    for i in 0..6 {
        for user in ["ann", "bob", "cat"] {
            batch.push(json!({"type": "track", "userId": user, "event": "Step", "properties": {"i": i}, "messageId": format!("{user}-{i}")}));
        }
    }
    let (status, _) = t.post("/v1/batch", &json!({ "batch": batch })).await;
    assert_eq!(status, 200);
    let runs = t.wait_run_count(18, 20).await;
    let ms = |s: &str| spur::event::parse_time(s).unwrap().timestamp_millis();
    let mut overlapped_across_users = false;
    for user in ["ann", "bob", "cat"] {
        let mut mine: Vec<&RunRecord> = runs
            .iter()
            .filter(|r| r.user.as_deref() == Some(user))
            .collect();
        mine.sort_by_key(|r| r.job_id);
        let order: Vec<String> = mine.iter().map(|r| r.message_id.clone().unwrap()).collect();
        let expected: Vec<String> = (0..6).map(|i| format!("{user}-{i}")).collect();
        assert_eq!(order, expected, "jobs in arrival order");
        for pair in mine.windows(2) {
            assert!(
                ms(&pair[1].started_at) >= ms(&pair[0].finished_at),
                "{user}: runs overlapped"
            );
            assert!(pair[1].id > pair[0].id, "{user}: started out of order");
        }
        for r in &mine {
            overlapped_across_users |= runs.iter().any(|o| {
                o.user.as_deref() != Some(user)
                    && ms(&o.started_at) < ms(&r.finished_at)
                    && ms(&r.started_at) < ms(&o.finished_at)
            });
        }
    }
    assert!(overlapped_across_users, "different users ran in parallel");
}

/// A service that answers `{"ready": false}` to the first `n` reads.
async fn ready_after(n: usize) -> spur::testing::FakeHttp {
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    spur::testing::FakeHttp::start(move |_| {
        let k = hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        spur::testing::Reply::json(200, &json!({ "ready": k > n, "n": k }))
    })
    .await
}

async fn retries_with_backoff_and_never_reruns_succeeded_handlers(backend: Backend) {
    let fake = ready_after(2).await;
    let t = TestApp::builder()
        .backend(backend)
        .script(
            "flaky.rhai",
            &format!(
                r#"
            on_track("Flaky", |e| {{
                let r = http::get("{}/ready").json;
                if !r.ready {{ throw `not yet (${{r.n}})`; }}
                log::info("done");
            }});
            on_track("Flaky", |e| {{ log::info("steady"); }});
            "#,
                fake.base_url
            ),
        )
        .config("[retry]\nbase_ms = 20\nmax_attempts = 4")
        .start()
        .await;
    let (status, _) = t
        .post("/v1/track", &json!({"userId": "u", "event": "Flaky"}))
        .await;
    assert_eq!(status, 200);
    let runs = t
        .wait_runs(20, |r| {
            r.iter()
                .any(|r| r.status == RunStatus::Ok && r.handler == "on_track(Flaky)#0")
        })
        .await;
    let flaky = of(&runs, "on_track(Flaky)#0");
    let statuses: Vec<_> = flaky.iter().map(|r| (r.attempt, r.status)).collect();
    assert_eq!(
        statuses,
        [
            (1, RunStatus::Retrying),
            (2, RunStatus::Retrying),
            (3, RunStatus::Ok)
        ]
    );
    assert_eq!(flaky[0].error.as_ref().unwrap().message, "not yet (1)");
    assert_eq!(flaky[0].error.as_ref().unwrap().line, Some(4));
    assert_eq!(
        flaky[1].error.as_ref().unwrap().message,
        "not yet (2)",
        "reads run live on every attempt"
    );
    assert!(flaky[0].next_attempt_at.is_some());
    assert_eq!(
        of(&runs, "on_track(Flaky)#1").len(),
        1,
        "the handler that succeeded ran once"
    );
}

async fn skip_fail_and_dead_letters_with_replay(backend: Backend) {
    let fake = ready_after(2).await;
    let t = TestApp::builder()
        .backend(backend)
        .script(
            "outcomes.rhai",
            &format!(
                r#"
            on_track("Skip", |e| {{ skip("not for us"); }});
            on_track("Fail", |e| {{ fail("bad payload"); }});
            on_track("Doomed", |e| {{ if !http::get("{}/up").json.ready {{ throw "service down"; }} }});
            "#,
                fake.base_url
            ),
        )
        .config("[retry]\nbase_ms = 10\nmax_attempts = 2")
        .start()
        .await;
    for (user, event) in [("a", "Skip"), ("b", "Fail"), ("c", "Doomed")] {
        assert_eq!(
            t.post("/v1/track", &json!({"userId": user, "event": event}))
                .await
                .0,
            200
        );
    }
    let runs = t
        .wait_runs(20, |r| r.iter().any(|r| r.status == RunStatus::Dead))
        .await;
    let runs = t.wait_run_count(runs.len().max(4), 10).await;
    let skip = of(&runs, "on_track(Skip)#0");
    assert_eq!((skip.len(), skip[0].status), (1, RunStatus::Skipped));
    assert_eq!(skip[0].reason.as_deref(), Some("not for us"));
    let failed = of(&runs, "on_track(Fail)#0");
    assert_eq!(
        (failed.len(), failed[0].status),
        (1, RunStatus::Failed),
        "fail() is never retried"
    );
    assert_eq!(failed[0].reason.as_deref(), Some("bad payload"));
    let doomed = of(&runs, "on_track(Doomed)#0");
    assert_eq!(
        doomed.iter().map(|r| r.status).collect::<Vec<_>>(),
        [RunStatus::Retrying, RunStatus::Dead]
    );

    let (status, dead) = t.admin_get("/api/dead-letters").await;
    assert_eq!(status, 200);
    let dead = dead["dead_letters"].as_array().unwrap().clone();
    assert_eq!(dead.len(), 2, "failed and dead, not skipped");
    let doomed_dl = dead
        .iter()
        .find(|d| d["job"]["handler"] == "on_track(Doomed)#0")
        .unwrap();
    assert_eq!(doomed_dl["reason"], "service down");
    assert_eq!(doomed_dl["event"]["event"], "Doomed");

    let id = doomed_dl["id"].as_u64().unwrap();
    let (status, body) = t
        .admin_post(&format!("/api/dead-letters/{id}/replay"), &json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let runs = t
        .wait_runs(10, |r| {
            r.iter()
                .any(|r| r.handler == "on_track(Doomed)#0" && r.status == RunStatus::Ok)
        })
        .await;
    let replayed = of(&runs, "on_track(Doomed)#0");
    assert_eq!(replayed.last().unwrap().attempt, 1, "a replay starts over");
    let (status, _) = t
        .admin_post(&format!("/api/dead-letters/{id}/replay"), &json!({}))
        .await;
    assert_eq!(status, 404, "a dead letter is replayed once");
    let (_, dead) = t.admin_get("/api/dead-letters").await;
    assert_eq!(dead["dead_letters"].as_array().unwrap().len(), 1);
}

async fn admin_api_needs_the_token_and_filters_runs(backend: Backend) {
    let t = TestApp::builder()
        .backend(backend)
        .script(
            "good.rhai",
            r#"on_track("A", |e| { print("a"); }); on_track("B", |e| { skip("b"); });"#,
        )
        .script("broken.rhai", "on_track(\"X\", |e| {\n  let x = ;\n});")
        .start()
        .await;
    let plain = common::client();
    let r = plain.get(t.url("/api/runs")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("Bearer <token> (admin.token or a [clients.NAME] token)")
    );
    let r = plain
        .get(t.url("/api/runs"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = plain.get(t.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["status"], "ok");
    let r = plain
        .get(t.url("/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert!(r.text().await.unwrap().contains("spur_runs_finished_total"));

    let (_, scripts) = t.admin_get("/api/scripts").await;
    assert_eq!(scripts["scripts"][0]["name"], "good");
    assert_eq!(
        scripts["scripts"][0]["handlers"].as_array().unwrap().len(),
        2
    );
    let err = &scripts["errors"][0];
    assert!(
        err["file"].as_str().unwrap().ends_with("broken.rhai"),
        "{scripts}"
    );
    assert_eq!(
        (err["line"].as_u64(), err["column"].as_u64()),
        (Some(2), Some(11)),
        "{err}"
    );

    for e in ["A", "B", "A"] {
        t.post("/v1/track", &json!({"userId": "u", "event": e}))
            .await;
    }
    t.wait_run_count(3, 10).await;
    let metrics = plain
        .get(t.url("/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("spur_events_received_total{outcome=\"accepted\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("spur_runs_finished_total{status=\"skipped\"} 1"),
        "{metrics}"
    );
    let (_, all) = t.admin_get("/api/runs").await;
    assert_eq!(all["runs"].as_array().unwrap().len(), 3);
    let (_, skipped) = t.admin_get("/api/runs?status=skipped").await;
    assert_eq!(skipped["runs"].as_array().unwrap().len(), 1);
    let (_, one) = t.admin_get("/api/runs?script=good&limit=1").await;
    let one = one["runs"].as_array().unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(
        one[0]["logs"][0]["message"], "a",
        "newest first, with captured print output"
    );
    let (status, bad) = t.admin_get("/api/runs?status=exploded").await;
    assert_eq!((status, bad["field"].as_str()), (400, Some("status")));
    let id = one[0]["id"].as_u64().unwrap();
    let (status, run) = t.admin_get(&format!("/api/runs/{id}")).await;
    assert_eq!((status, run["id"].as_u64()), (200, Some(id)));
    // Long-poll: `wait` returns as soon as a newer run exists.
    let (status, later) = t
        .admin_get(&format!("/api/runs?after={}&wait=100ms", id + 1000))
        .await;
    assert_eq!((status, later["runs"].as_array().unwrap().len()), (200, 0));
}

async fn a_caught_fail_does_not_decide_a_later_error(backend: Backend) {
    let t = TestApp::builder()
        .backend(backend)
        .script(
            "caught.rhai",
            r#"on_track(|e| {
                try { fail("first problem"); } catch (err) { log::info(`caught: ${err}`); }
                throw "second problem";
            });"#,
        )
        .config("[retry]\nmax_attempts = 1")
        .start()
        .await;
    t.post("/v1/track", &json!({"userId": "u", "event": "E"}))
        .await;
    let runs = t.wait_run_count(1, 10).await;
    assert_eq!(runs[0].logs[0].message, "caught: failed: first problem");
    assert_eq!(
        runs[0].status,
        RunStatus::Dead,
        "the error that ended the run was retryable"
    );
    assert_eq!(runs[0].error.as_ref().unwrap().message, "second problem");
}

/// The worker decides by the error's type, not its text: a caught `fail("x")`
/// followed by `throw "x"` (the same words) is a script error and retried; a caught
/// fault thrown again keeps its kind.
async fn outcomes_follow_the_type_of_the_error_not_its_text(backend: Backend) {
    let t = TestApp::builder()
        .backend(backend)
        .script(
            "typed.rhai",
            r#"
            on_track("Same words", |e| {
                try { fail("x"); } catch (err) { log::info(`${err.kind}: ${err.message}`); }
                throw "failed: x";
            });
            on_track("Rethrown", |e| {
                try { skip("not for us"); } catch (err) { throw err; }
            });
            on_track("Connector", |e| {
                try { http::get("/x", #{ connection: "nowhere" }); } catch (err) { log::info(err.kind); throw err; }
            });
            "#,
        )
        .config("[retry]\nmax_attempts = 2\nbase_ms = 600000")
        .start()
        .await;
    for (user, name) in [("a", "Same words"), ("b", "Rethrown"), ("c", "Connector")] {
        t.post("/v1/track", &json!({"userId": user, "event": name}))
            .await;
    }
    let runs = t.wait_run_count(3, 10).await;
    let of = |name: &str| {
        runs.iter()
            .find(|r| r.event.as_deref() == Some(name))
            .unwrap()
    };
    let same = of("Same words");
    assert_eq!(same.logs[0].message, "fail: failed: x");
    assert_eq!(same.status, RunStatus::Retrying, "{same:#?}");
    assert_eq!(of("Rethrown").status, RunStatus::Skipped);
    let connector = of("Connector");
    assert_eq!(connector.logs[0].message, "permanent");
    assert_eq!(
        connector.status,
        RunStatus::Failed,
        "an unknown connection is not retried"
    );
}

/// Run records, dead letters, audit and most metrics are each node's own: on a
/// cluster their answers name the node; parked runs are the cluster's.
async fn answers_of_what_a_node_keeps_name_the_node(backend: Backend) {
    let t = TestApp::builder()
        .backend(backend)
        .script("s.rhai", r#"on_track(|e| { });"#)
        .start()
        .await;
    t.post("/v1/track", &json!({"userId": "u", "event": "A"}))
        .await;
    t.wait_run_count(1, 10).await;
    let (_, scripts) = t.admin_get("/api/scripts").await;
    let node = scripts["nodes"][0]["node"].clone();
    assert_eq!(node.is_string(), backend == Backend::Nats, "{scripts}");
    for path in ["/api/runs", "/api/dead-letters", "/api/audit"] {
        let (status, answer) = t.admin_get(path).await;
        assert_eq!(status, 200, "{path}: {answer}");
        assert_eq!(answer["node"], node, "{path}: {answer}");
    }
    let (_, waiting) = t.admin_get("/api/runs?status=waiting").await;
    assert!(waiting.get("node").is_none(), "{waiting}");
    let (_, metrics) = answer_text(&t, "/metrics").await;
    let info = format!("spur_node_info{{node={node}}} 1");
    assert_eq!(
        metrics.contains(&info),
        backend == Backend::Nats,
        "{metrics}"
    );
}

async fn answer_text(t: &TestApp, path: &str) -> (u16, String) {
    let r = common::client()
        .get(t.url(path))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}
