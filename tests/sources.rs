//! Webhook sources through the real binary: a Stripe-signed request is verified,
//! stored before its 200, and what its handler emits is handled by another
//! script's `on_track`; refused requests store and run nothing; kill -9 right after
//! the 200s loses and doubles nothing.

mod common;

use std::time::{Duration, Instant};

use common::{Daemon, base_config};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use spur::testing::{FakeHttp, Reply};

const SECRET: &str = "whsec_test_5f3c9a81e2d4";

/// `Stripe-Signature` as Stripe documents it: `t=<unix>,v1=<hex HMAC-SHA256 of
/// "<t>.<body>">`.
fn stripe_signature(secret: &str, t: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

async fn post(base: &str, path: &str, body: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = common::client()
        .post(format!("{base}{path}"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Waits (long-polling the admin API, bounded) until the daemon's runs satisfy
/// `done`; returns them.
async fn runs_until(daemon: &Daemon, secs: u64, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let runs = daemon.get("/api/runs?limit=10000").await["runs"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if done(&runs) {
            return runs;
        }
        assert!(Instant::now() < deadline, "timed out; runs: {runs:#?}");
        let newest = runs.first().and_then(|r| r["id"].as_u64()).unwrap_or(0);
        daemon
            .get(&format!("/api/runs?wait=2s&after={newest}"))
            .await;
    }
}

fn now_s() -> i64 {
    chrono::Utc::now().timestamp()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
async fn a_signed_stripe_webhook_becomes_events_another_script_handles() {
    // The source's first attempt fails after it emitted: its run is retried, and
    // the retry must not emit again.
    let attempts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let a = std::sync::Arc::clone(&attempts);
    let mut sink = FakeHttp::start(move |r| {
        let n = if r.path == "/attempt" {
            a.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1
        } else {
            0
        };
        Reply::json(200, &json!({"ok": true, "n": n}))
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let scripts = dir.path().join("scripts");
    std::fs::create_dir_all(&scripts).unwrap();
    std::fs::write(
        scripts.join("stripe.rhai"),
        format!(
            r#"on_webhook("stripe", #{{ verify: "stripe" }}, |req| {{
                let evt = req.json;
                emit(#{{ type: "track", event: "Subscription Renewed", userId: evt.data.object.customer,
                        properties: #{{ invoice: evt.data.object.id, via: req.headers["user-agent"] }} }});
                if http::get("{0}/attempt").json.n == 1 {{ throw "the first attempt fails"; }}
            }});"#,
            sink.base_url
        ),
    )
    .unwrap();
    std::fs::write(
        scripts.join("revenue.rhai"),
        format!(
            r#"on_track("Subscription Renewed", |e| {{
                http::post("{0}/handled", #{{ user: e.userId, invoice: e.properties.invoice, id: e.messageId }});
            }});"#,
            sink.base_url
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("spur.toml"),
        base_config(
            dir.path(),
            &format!("[retry]\nbase_ms = 20\n\n[sources.stripe]\nsecret = {SECRET:?}\n"),
        ),
    )
    .unwrap();
    let daemon = Daemon::start(dir.path());
    let body = json!({
        "id": "evt_1", "object": "event", "type": "invoice.paid", "created": now_s(),
        "data": {"object": {"id": "in_1", "object": "invoice", "customer": "cus_ada"}}
    })
    .to_string();

    // Refused: nothing stored, nothing run.
    let (status, err) = post(&daemon.base, "/hooks/stripe", &body, &[]).await;
    assert_eq!(status, 401);
    assert_eq!(err["error"], "the Stripe-Signature header is missing");
    let wrong = stripe_signature("whsec_other", now_s(), &body);
    let (status, err) = post(
        &daemon.base,
        "/hooks/stripe",
        &body,
        &[("Stripe-Signature", &wrong)],
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(err["error"], "Stripe-Signature does not match the body");
    let stale = stripe_signature(SECRET, now_s() - 600, &body);
    let (status, err) = post(
        &daemon.base,
        "/hooks/stripe",
        &body,
        &[("Stripe-Signature", &stale)],
    )
    .await;
    assert_eq!(status, 401);
    assert!(
        err["error"].as_str().unwrap().contains("tolerance"),
        "{err}"
    );
    let tampered = stripe_signature(SECRET, now_s(), &body);
    let (status, _) = post(
        &daemon.base,
        "/hooks/stripe",
        &body.replace("cus_ada", "cus_eve"),
        &[("Stripe-Signature", &tampered)],
    )
    .await;
    assert_eq!(status, 401, "the signature covers the whole body");
    let (status, err) = post(&daemon.base, "/hooks/strype", &body, &[]).await;
    assert_eq!(status, 404);
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .contains("no source \"strype\""),
        "{err}"
    );
    let r = common::client()
        .get(format!("{}/hooks/stripe", daemon.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);

    // Accepted.
    let sig = stripe_signature(SECRET, now_s(), &body);
    let (status, ok) = post(
        &daemon.base,
        "/hooks/stripe",
        &body,
        &[
            ("Stripe-Signature", &sig),
            ("User-Agent", "Stripe/1.0"),
            ("Authorization", "Bearer not-for-scripts"),
        ],
    )
    .await;
    assert_eq!((status, ok), (200, json!({"success": true})));
    let handled = sink
        .next_matching(10, |r| r.path == "/handled")
        .await
        .json
        .unwrap();
    assert_eq!(handled["user"], "cus_ada");
    assert_eq!(handled["invoice"], "in_1");
    let runs = runs_until(&daemon, 20, |r| {
        r.iter().filter(|r| r["status"] == "ok").count() == 2
    })
    .await;
    let mut seen: Vec<(String, String, u64)> = runs
        .iter()
        .map(|r| {
            (
                r["trigger"].as_str().unwrap().to_owned(),
                r["status"].as_str().unwrap().to_owned(),
                r["attempt"].as_u64().unwrap(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("event".to_owned(), "ok".to_owned(), 1),
            ("webhook".to_owned(), "ok".to_owned(), 2),
            ("webhook".to_owned(), "retrying".to_owned(), 1),
        ],
        "the refused requests ran nothing; the source ran twice, its event once"
    );
    let source_run = runs
        .iter()
        .find(|r| r["trigger"] == "webhook" && r["attempt"] == 1)
        .unwrap();
    assert_eq!(source_run["source"], "stripe");
    assert_eq!(source_run["emitted"].as_array().unwrap().len(), 1);
    let scripts = daemon.get("/api/scripts").await;
    assert_eq!(
        scripts["sources"],
        json!([{"name": "stripe", "url": "/hooks/stripe", "methods": ["POST"], "verify": "stripe",
                "script": "stripe", "handler": "on_webhook(stripe)#0"}])
    );
    // The handler saw the request without the caller's credentials.
    let events = daemon.get("/api/events?since=1h").await;
    let text = events.to_string();
    assert!(!text.contains("not-for-scripts"), "{text}");
    assert!(text.contains("Stripe/1.0"));
    assert_eq!(
        sink.received()
            .iter()
            .filter(|r| r.path == "/handled")
            .count(),
        1,
        "the retried source did not emit twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_acknowledged_before_kill9_are_emitted_and_handled_exactly_once() {
    const N: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let scripts = dir.path().join("scripts");
    std::fs::create_dir_all(&scripts).unwrap();
    std::fs::write(
        scripts.join("hook.rhai"),
        r#"on_webhook("forms", |req| {
            let n = req.json.n;
            emit_batch([
                #{ type: "track", event: "Form Sent", userId: `u${n % 5}`, properties: #{ n: n } },
                #{ type: "identify", userId: `u${n % 5}`, traits: #{ last_form: n } },
            ]);
        });"#,
    )
    .unwrap();
    std::fs::write(
        scripts.join("count.rhai"),
        r#"on_track("Form Sent", |e| {
            state::incr("handled");
            state::incr(`n:${e.properties.n}`);
        });"#,
    )
    .unwrap();
    std::fs::write(dir.path().join("spur.toml"), base_config(dir.path(), "")).unwrap();
    let mut daemon = Daemon::start(dir.path());
    for round in 0..2 {
        let sends: Vec<_> = (round * N / 2..(round + 1) * N / 2)
            .map(|n| {
                let base = daemon.base.clone();
                tokio::spawn(async move {
                    post(&base, "/hooks/forms", &json!({"n": n}).to_string(), &[]).await
                })
            })
            .collect();
        for send in sends {
            assert_eq!(send.await.unwrap().0, 200);
        }
        // Right after the last 200: no chance to run or flush anything more.
        daemon.kill9();
        daemon = Daemon::start(dir.path());
    }
    // Wait for the handlers' state, not for run records: a record written just
    // before a kill -9 may be lost (records are not part of a run's commit), while
    // the run's state change and settle are durable.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let handled = daemon.get("/api/state/count/handled").await;
        if handled["value"] == N {
            break;
        }
        assert!(
            Instant::now() < deadline && handled["value"].as_u64().unwrap_or(0) <= N as u64,
            "every acknowledged webhook's event handled once: {handled}"
        );
        let newest = daemon.get("/api/runs?limit=1").await["runs"][0]["id"]
            .as_u64()
            .unwrap_or(0);
        daemon
            .get(&format!("/api/runs?wait=2s&after={newest}"))
            .await;
    }
    for n in 0..N {
        let v = daemon.get(&format!("/api/state/count/n:{n}")).await;
        assert_eq!(v["value"], 1, "form {n}");
    }
    let events = daemon.get("/api/events?since=1h").await;
    let forms = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "Form Sent")
        .count();
    assert_eq!(forms, N, "no webhook emitted twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn respond_answers_handshakes_without_effects_and_limits_hold() {
    let t = common::TestApp::builder()
        .script(
            "zoom.rhai",
            r#"on_webhook("zoom", #{
                respond: |req| {
                    if req.json?.event == "endpoint.url_validation" {
                        return #{ status: 200, body: #{ plainToken: req.json.payload.plainToken } };
                    }
                    if req.json?.event == "sneaky" { state::set("x", 1); }
                },
            }, |req| { emit(#{ type: "track", event: "Meeting Ended", userId: "u" }); });"#,
        )
        .script(
            "misuse.rhai",
            r#"on_track("Meeting Ended", |e| { emit(#{ type: "track", event: "Loop", userId: "u" }); });"#,
        )
        .config("[sources.zoom]\nrate_limit = 3")
        .start()
        .await;
    let hs = r#"{"event":"endpoint.url_validation","payload":{"plainToken":"abc"}}"#;
    let (status, body) = t.post_raw("/hooks/zoom", hs, &[]).await;
    assert_eq!((status, body), (200, json!({"plainToken": "abc"})));
    let (status, body) = t
        .post_raw("/hooks/zoom", r#"{"event":"sneaky"}"#, &[])
        .await;
    assert_eq!(status, 500, "respond may not write state: {body}");
    let (status, _) = t.post_raw("/hooks/zoom", r#"{"event":"ended"}"#, &[]).await;
    assert_eq!(status, 200, "respond returned (): stored and handled");
    let (status, body) = t.post_raw("/hooks/zoom", "{}", &[]).await;
    assert_eq!(status, 429, "a burst of 3 per second: {body}");
    assert!(
        body["error"].as_str().unwrap().contains("rate_limit"),
        "{body}"
    );
    // The handler's run can be recorded before the source run that emitted its
    // event: wait for both.
    let runs = t
        .wait_runs(10, |r| {
            r.iter().any(|r| r.status == spur::run::RunStatus::Failed)
                && r.iter().any(|r| r.script != "misuse")
        })
        .await;
    let misuse = runs.iter().find(|r| r.script == "misuse").unwrap();
    assert!(
        misuse
            .error
            .as_ref()
            .unwrap()
            .message
            .contains("emit() is for source handlers"),
        "{misuse:?}"
    );
    assert_eq!(
        runs.len(),
        2,
        "one source run, one handler run; the handshakes ran nothing"
    );
    t.stop().await;
    // The body limit is checked before anything else is done with the body.
    let t = common::TestApp::builder()
        .script("zoom.rhai", r#"on_webhook("zoom", |req| {});"#)
        .config("[sources.zoom]\nmax_body_bytes = 64")
        .start()
        .await;
    let (status, body) = t.post_raw("/hooks/zoom", "x".repeat(65), &[]).await;
    assert_eq!(status, 400);
    assert_eq!(body["code"], "too_large");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spur_replay_runs_recorded_webhook_requests_through_the_current_source() {
    let dir = tempfile::tempdir().unwrap();
    let scripts = dir.path().join("scripts");
    std::fs::create_dir_all(&scripts).unwrap();
    let version = |v: &str| {
        format!(
            r#"on_webhook("forms", |req| {{
                emit(#{{ type: "track", event: "Form Sent {v}", userId: req.json.user }});
            }});"#
        )
    };
    std::fs::write(scripts.join("forms.rhai"), version("v1")).unwrap();
    std::fs::write(dir.path().join("spur.toml"), base_config(dir.path(), "")).unwrap();
    let daemon = Daemon::start(dir.path());
    for user in ["ada", "bob"] {
        let (status, _) = post(
            &daemon.base,
            "/hooks/forms",
            &json!({"user": user}).to_string(),
            &[],
        )
        .await;
        assert_eq!(status, 200);
    }
    runs_until(&daemon, 20, |r| {
        r.iter().filter(|r| r["status"] == "ok").count() == 2
    })
    .await;
    let requests = daemon.get("/api/requests?since=1h").await;
    assert_eq!(requests["requests"].as_array().unwrap().len(), 2);
    assert_eq!(requests["requests"][0]["source"], "forms");
    assert_eq!(requests["requests"][0]["request"]["path"], "/hooks/forms");
    // The change to try: v2, against the recorded requests.
    std::fs::write(scripts.join("forms.rhai"), version("v2")).unwrap();
    let config = dir.path().join("spur.toml");
    let replay = |url: Option<String>| {
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_spur"));
            cmd.arg("--config")
                .arg(&config)
                .args(["replay", "--since", "1h"]);
            if let Some(u) = url {
                cmd.args(["--url", &u]);
            }
            let out = cmd.output().unwrap();
            assert!(out.status.success(), "{out:?}");
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
    };
    for out in [replay(Some(daemon.base.clone())).await.unwrap(), {
        drop(daemon);
        replay(None).await.unwrap()
    }] {
        assert!(out.contains("2 webhook requests"), "{out}");
        assert_eq!(
            out.matches("▶ webhook forms · POST /hooks/forms").count(),
            2,
            "{out}"
        );
        assert_eq!(
            out.matches(r#"emit track "Form Sent v2""#).count(),
            2,
            "{out}"
        );
    }
}
