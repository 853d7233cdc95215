//! Time-driven behaviour on a manual clock: retries, sleeps, event waits, schedules,
//! state TTLs and approval expiry each happen when the test moves the clock past
//! their moment — hours of script time, no real waiting.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone as _, Utc};
use common::TestApp;
use serde_json::json;
use spur::clock::{Clock as _, ManualClock};
use spur::run::{RunRecord, RunStatus};

/// Monday 2026-11-30 10:30:00 UTC.
fn half_past_ten() -> Arc<ManualClock> {
    ManualClock::at(Utc.with_ymd_and_hms(2026, 11, 30, 10, 30, 0).unwrap())
}

fn hours(h: u64) -> Duration {
    Duration::from_secs(h * 3600)
}

fn messages(runs: &[RunRecord]) -> Vec<String> {
    let mut out: Vec<String> = runs
        .iter()
        .flat_map(|r| r.logs.iter().map(|l| l.message.clone()))
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_wait_for_their_backoff_on_the_clock() {
    let clock = half_past_ten();
    let t = TestApp::builder()
        .clock(&clock)
        .script(
            "down.rhai",
            r#"on_track(|e| { throw "the API is down"; });"#,
        )
        .config("[retry]\nbase_ms = 600000\nmax_ms = 3600000\nmax_attempts = 3")
        .start()
        .await;
    t.post("/v1/track", &json!({"userId": "u", "event": "E"}))
        .await;
    for attempt in 1..=2_u32 {
        let runs = t
            .wait_runs(10, |r| {
                r.first()
                    .is_some_and(|r| r.attempt == attempt && r.status == RunStatus::Retrying)
            })
            .await;
        let next: DateTime<Utc> = runs[0].next_attempt_at.as_ref().unwrap().parse().unwrap();
        let due = next.timestamp_millis() - clock.now_ms();
        let backoff = if attempt == 1 { 600_000 } else { 2_100_000 };
        assert!(
            (backoff * 8 / 10..=backoff * 12 / 10).contains(&due),
            "attempt {attempt}: {backoff} ms of backoff ±20 % on the clock, got {due} ms"
        );
        // Exactly at the moment the retry is due, by the clock, it runs.
        clock.set_ms(next.timestamp_millis());
        let runs = t
            .wait_runs(10, |r| r.first().is_some_and(|r| r.attempt == attempt + 1))
            .await;
        assert_eq!(runs[0].started_at, spur::event::format_time(next));
    }
    let runs = t
        .wait_runs(10, |r| {
            r.first().is_some_and(|r| r.status == RunStatus::Dead)
        })
        .await;
    assert_eq!(runs.len(), 3, "three attempts, the last dead-lettered");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sleeps_and_event_waits_wake_when_the_clock_passes_them() {
    let clock = half_past_ten();
    let t = TestApp::builder()
        .clock(&clock)
        .script(
            "waits.rhai",
            r#"
            on_track("Sleep", |e| { time::sleep("3h"); log::info(`slept until ${time::now()}`); });
            on_track("Wait", |e| {
                let got = wait_for(#{ event: "Never", userId: e.userId }, "1d");
                log::info(`waited: ${got == ()}`);
            });
            "#,
        )
        .start()
        .await;
    for event in ["Sleep", "Wait"] {
        t.post("/v1/track", &json!({"userId": "u", "event": event}))
            .await;
    }
    t.wait_runs(10, |r| {
        r.iter().filter(|r| r.status == RunStatus::Waiting).count() == 2
    })
    .await;
    clock.advance(hours(2));
    // Nothing is due yet: the sleep ends at 13:30. Advancing past it wakes that run
    // alone; a day later the wait times out with `()`.
    clock.advance(hours(1));
    let runs = t
        .wait_runs(10, |r| r.iter().any(|r| r.status == RunStatus::Ok))
        .await;
    assert_eq!(
        messages(&runs),
        ["slept until 2026-11-30T13:30:00.000Z"],
        "woken at 13:30 on the clock, not earlier"
    );
    clock.advance(hours(21));
    let runs = t
        .wait_runs(10, |r| {
            r.iter().filter(|r| r.status == RunStatus::Ok).count() == 2
        })
        .await;
    assert_eq!(
        messages(&runs),
        ["slept until 2026-11-30T13:30:00.000Z", "waited: true"]
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hourly_schedule_fires_once_per_hour_of_clock_time() {
    let clock = half_past_ten();
    let t = TestApp::builder()
        .clock(&clock)
        .script(
            "hourly.rhai",
            r#"every("0 * * * *", |tick| { log::info(`tick ${tick.at}`); });"#,
        )
        .start()
        .await;
    clock.advance(Duration::from_secs(30 * 60));
    t.wait_run_count(1, 10).await;
    clock.advance(hours(1));
    let runs = t.wait_run_count(2, 10).await;
    assert_eq!(
        messages(&runs),
        [
            "tick 2026-11-30T11:00:00.000Z",
            "tick 2026-11-30T12:00:00.000Z"
        ]
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_expires_when_its_ttl_passes_on_the_clock() {
    let clock = half_past_ten();
    let t = TestApp::builder()
        .clock(&clock)
        .script(
            "ttl.rhai",
            r#"
            on_track("Set", |e| { state::set("code", "1234", "10m"); });
            on_track("Get", |e| { log::info(`code: ${state::get("code", "gone")}`); });
            "#,
        )
        .start()
        .await;
    t.post("/v1/track", &json!({"userId": "u", "event": "Set"}))
        .await;
    t.wait_run_count(1, 10).await;
    let (_, code) = t.admin_get("/api/state/ttl/code").await;
    assert_eq!(code["expires_at"], "2026-11-30T10:40:00.000Z");
    clock.advance(Duration::from_secs(9 * 60));
    t.post("/v1/track", &json!({"userId": "u", "event": "Get"}))
        .await;
    t.wait_run_count(2, 10).await;
    clock.advance(Duration::from_secs(60));
    t.post("/v1/track", &json!({"userId": "u", "event": "Get"}))
        .await;
    let runs = t.wait_run_count(3, 10).await;
    assert_eq!(messages(&runs), ["code: 1234", "code: gone"]);
    let (status, _) = t.admin_get("/api/state/ttl/code").await;
    assert_eq!(status, 404, "the admin API no longer shows it either");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_approval_expires_at_its_deadline_on_the_clock() {
    let clock = half_past_ten();
    let t = TestApp::builder()
        .clock(&clock)
        .script(
            "ask.rhai",
            r#"on_track(|e| {
                let d = approval::ask(#{ title: "Refund?", expires: "48h", on_expiry: "approve" });
                log::info(`${d.status} ${d.approved} ${d.at}`);
            });"#,
        )
        .start()
        .await;
    t.post("/v1/track", &json!({"userId": "u", "event": "Refund"}))
        .await;
    t.wait_runs(10, |r| r.iter().any(|r| r.status == RunStatus::Waiting))
        .await;
    let (_, pending) = t.admin_get("/api/approvals?status=pending").await;
    assert_eq!(
        pending["approvals"][0]["expires_at"],
        "2026-12-02T10:30:00.000Z"
    );
    clock.advance(hours(47));
    clock.advance(hours(1));
    let runs = t
        .wait_runs(10, |r| r.iter().any(|r| r.status == RunStatus::Ok))
        .await;
    assert_eq!(messages(&runs), ["expired true 2026-12-02T10:30:00.000Z"]);
    t.stop().await;
}
