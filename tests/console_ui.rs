//! The console in a real browser (headless Chromium over WebDriver,
//! `common/browser.rs`): log in, read the charts after traffic, filter runs to a
//! user and open a failed run's timeline, replay a dead letter, approve a parked
//! run, see what a client without `approvals:decide` sees, log out — and a phone's
//! viewport. One browser for the whole walk: starting Chromium is the slow part.
//!
//! Screenshots of every page go to `target/screenshots/`; with
//! `SPUR_UPDATE_SCREENSHOTS=1` they replace the ones in `docs/screenshots/`.
//! Run with: cargo nextest run --test console_ui

mod common;

use std::path::PathBuf;

use common::TestApp;
use common::browser::Browser;
use serde_json::{Value, json};
use spur::run::RunStatus;

const ORDERS: &str = r#"// Orders: count them per user; a negative total is a bug upstream.
on_track("Order Completed", |e| {
    let total = e.properties?.total ?? 0;
    if total < 0 && state::get("accept_negative") != true {
        throw `cannot handle an order of ${total}`;
    }
    state::incr(`orders:${e.userId}`);
    log::info(`order of ${total} by ${e.userId}`);
});

every("0 9 * * MON", |tick| {
    log::info("weekly summary");
});
"#;

const REFUNDS: &str = r#"on_track("Refund Requested", |e| {
    let d = approval::ask(#{
        title: `Refund order ${e.properties.order}`,
        body: "Over the automatic limit",
        data: #{ amount: e.properties.amount },
    });
    log::info(`refund ${d.status} by ${d.by}: ${d.comment}`);
});
"#;

const CONFIG: &str = r#"
[retry]
max_attempts = 1

[clients.ops]
token = "ops-token"
scopes = ["runs:read", "runs:replay", "approvals:read", "approvals:decide", "state:read"]

[clients.viewer]
token = "viewer-token"
scopes = ["runs:read", "approvals:read"]
"#;

fn shots() -> Vec<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut dirs = vec![root.join("target/screenshots")];
    if std::env::var_os("SPUR_UPDATE_SCREENSHOTS").is_some() {
        dirs.push(root.join("docs/screenshots"));
    }
    dirs
}

async fn screenshot(b: &Browser, name: &str) {
    for dir in shots() {
        b.screenshot(&dir.join(format!("{name}.png"))).await;
    }
}

async fn track(t: &TestApp, user: &str, event: &str, properties: Value) {
    let (status, body) = t
        .post(
            "/v1/track",
            &json!({"userId": user, "event": event, "properties": properties}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

async fn log_in(b: &Browser, base: &str, token: &str) {
    b.open(&format!("{base}/ui/")).await;
    b.type_into("#token", token).await;
    b.click("#login-form button[type=submit]").await;
    b.until(
        "!document.getElementById('top').hidden && document.getElementById('whoami').textContent",
        "the app after login",
    )
    .await;
}

async fn log_out(b: &Browser) {
    b.click("#logout").await;
    b.until("!document.getElementById('login').hidden", "the login form")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_walks_the_console_in_a_browser() {
    let t = TestApp::builder()
        .script("orders.rhai", ORDERS)
        .script("refunds.rhai", REFUNDS)
        .config(CONFIG)
        .start()
        .await;
    for (i, user) in ["ann", "ann", "bob", "cy", "ann"].iter().enumerate() {
        track(
            &t,
            user,
            "Order Completed",
            json!({ "total": 10 * (i + 1) }),
        )
        .await;
    }
    track(&t, "bob", "Order Completed", json!({ "total": -5 })).await;
    track(
        &t,
        "cy",
        "Refund Requested",
        json!({ "order": "R-7", "amount": 120 }),
    )
    .await;
    t.wait_runs(30, |r| {
        r.iter().any(|r| r.status == RunStatus::Dead)
            && r.iter().any(|r| r.status == RunStatus::Waiting)
            && r.len() >= 7
    })
    .await;
    let b = Browser::start().await;

    let cookie = logs_in(&t, &b).await;
    overview(&b).await;
    failed_run(&b).await;
    replay(&t, &b).await;
    approve(&t, &b).await;
    scripts_and_state(&b).await;
    phone(&b).await;
    logout(&t, &b, &cookie).await;
    viewer(&t, &b).await;
    b.quit().await;
}

/// A wrong token is refused on the login form; the right one opens an
/// `HttpOnly`, `SameSite=Strict` session. Returns its cookie.
async fn logs_in(t: &TestApp, b: &Browser) -> String {
    b.open(&t.url("/ui/")).await;
    b.type_into("#token", "not-a-token").await;
    b.click("#login-form button[type=submit]").await;
    b.until(
        "document.getElementById('login-error').textContent.includes('not valid')",
        "the login error",
    )
    .await;
    screenshot(b, "login").await;
    log_in(b, &t.base, "ops-token").await;
    assert_eq!(b.text("#whoami").await, "ops");
    let cookies = b.cookies().await;
    let session = cookies
        .iter()
        .find(|c| c["name"] == "spur_session")
        .expect("a session cookie");
    assert_eq!(session["httpOnly"], true);
    assert_eq!(session["sameSite"], "Strict");
    let cookie = format!("spur_session={}", session["value"].as_str().unwrap());

    cookie
}

/// Overview: the charts have points and the events chart is above zero.
async fn overview(b: &Browser) {
    b.until(
        "Number(document.querySelector('[data-chart=\"Events / s\"] svg').dataset.max) > 0",
        "a non-empty events chart",
    )
    .await;
    b.until(
        "document.querySelectorAll('#charts svg path.series').length >= 4",
        "lines in every chart",
    )
    .await;
    let failing = b.text("#failing").await;
    assert!(
        failing.contains("orders · on_track(Order Completed)#0 — 1 failed"),
        "{failing}"
    );
    screenshot(b, "overview").await;
}

/// Runs: filter to bob, open his failed run.
async fn failed_run(b: &Browser) {
    b.go("#/runs").await;
    b.find("#runs tbody tr[data-id]").await;
    b.type_into("#run-filters input[name=user]", "bob").await;
    b.click("#run-filters button[type=submit]").await;
    b.until(
        "location.hash.includes('user=bob') && [...document.querySelectorAll('#runs tbody tr[data-id]')].map((r) => r.dataset.user).join() === 'bob,bob'",
        "bob's runs only",
    )
    .await;
    screenshot(b, "runs").await;
    b.click("#runs tbody tr[data-status=dead]").await;
    b.find("#run-error").await;
    let location = b.text("#run-error .error-location").await;
    assert!(location.ends_with("orders.rhai:5:9"), "{location}");
    let highlighted = b.text("#run-error .source .hl").await;
    assert!(
        highlighted.contains("throw `cannot handle an order of ${total}`;"),
        "{highlighted}"
    );
    assert!(b.text(".attempt").await.contains("Attempt 1"));
    screenshot(b, "run").await;
}

/// Dead letters: fix the cause, replay, and the run succeeds.
async fn replay(t: &TestApp, b: &Browser) {
    let fixed = t
        .client
        .put(t.url("/api/state/orders/accept_negative"))
        .bearer_auth(common::TOKEN)
        .json(&json!({ "value": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(fixed.status(), 200);
    b.go("#/dead-letters").await;
    b.find("#dead-letters tr[data-id]").await;
    screenshot(b, "dead-letters").await;
    b.click("#dead-letters input.pick").await;
    b.click("#replay-selected").await;
    b.until(
        "document.getElementById('dead-result').textContent.includes('replayed')",
        "the replay notice",
    )
    .await;
    t.wait_runs(30, |r| {
        r.iter().any(|r| {
            r.status == RunStatus::Ok && r.logs.iter().any(|l| l.message == "order of -5 by bob")
        })
    })
    .await;
}

/// Approvals: approve with a comment, as the logged-in client.
async fn approve(t: &TestApp, b: &Browser) {
    b.go("#/approvals").await;
    b.find(".approval button.approve").await;
    screenshot(b, "approvals").await;
    let link = b
        .eval(
            "return document.querySelector('.approval a.job').getAttribute('href')",
            json!([]),
        )
        .await;
    assert!(
        link.as_str().is_some_and(|l| l.starts_with("#/runs?job=")),
        "the card links to its job's runs: {link}"
    );
    b.type_into(".approval textarea.comment", "within policy")
        .await;
    b.click(".approval button.approve").await;
    b.until(
        "document.getElementById('approval-result').textContent.includes('approved by ops')",
        "the decision notice",
    )
    .await;
    let runs = t
        .wait_runs(30, |r| {
            r.iter().any(|r| {
                r.logs
                    .iter()
                    .any(|l| l.message.starts_with("refund approved"))
            })
        })
        .await;
    let finished: Vec<&str> = runs
        .iter()
        .flat_map(|r| r.logs.iter().map(|l| l.message.as_str()))
        .filter(|m| m.starts_with("refund"))
        .collect();
    assert_eq!(
        finished,
        ["refund approved by ops: within policy"],
        "resumed once"
    );
    b.find("#approval-history tr[data-id]").await;
}

/// Scripts and state.
async fn scripts_and_state(b: &Browser) {
    b.go("#/scripts").await;
    b.find(".script[data-name=orders] .schedule .next-fire")
        .await;
    screenshot(b, "scripts").await;
    b.go("#/state?script=orders&prefix=orders%3A").await;
    b.click("#state-keys tr[data-key='orders:ann']").await;
    assert!(b.text("#state-value").await.contains('3'));
    screenshot(b, "state").await;
}

/// On a phone: the runs page fits the width (tables scroll inside their box).
async fn phone(b: &Browser) {
    b.resize(390, 844).await;
    b.go("#/runs").await;
    b.find("#runs tbody tr[data-id]").await;
    let fits = b
        .eval(
            "return document.documentElement.scrollWidth <= window.innerWidth + 1;",
            json!([]),
        )
        .await;
    assert_eq!(fits, json!(true), "no sideways scrolling on a phone");
    screenshot(b, "runs-phone").await;
    b.resize(1280, 900).await;
}

/// Logging out ends the session on the server, not only in the page.
async fn logout(t: &TestApp, b: &Browser, cookie: &str) {
    log_out(b).await;
    let r = t
        .client
        .get(t.url("/api/runs"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

/// A client without approvals:decide sees no decide buttons, and a forged
/// decision from the page (CSRF token and all) is refused.
async fn viewer(t: &TestApp, b: &Browser) {
    track(
        t,
        "dee",
        "Refund Requested",
        json!({ "order": "R-8", "amount": 90 }),
    )
    .await;
    t.wait_runs(30, |r| {
        r.iter().filter(|r| r.status == RunStatus::Waiting).count() >= 2
    })
    .await;
    log_in(b, &t.base, "viewer-token").await;
    b.go("#/approvals").await;
    b.find(".approval[data-id]").await;
    assert!(b.find_all(".approval button.approve").await.is_empty());
    assert!(b.text(".approval").await.contains("may not decide"));
    let forged = b
        .eval_async(
            r"const done = arguments[arguments.length - 1];
(async () => {
  const s = await (await fetch('/ui/session')).json();
  const id = document.querySelector('.approval').dataset.id;
  const r = await fetch(`/api/approvals/${id}/approve`, { method: 'POST',
    headers: { 'X-CSRF-Token': s.csrf, 'Content-Type': 'application/json' }, body: '{}' });
  done(r.status);
})();",
        )
        .await;
    assert_eq!(forged, json!(403));
    log_out(b).await;
}
