//! Retention: run records, dead letters, events, webhook requests and dedup
//! generations are purged
//! once past their configured age, and never what a pending job still needs.
//! Run with: cargo nextest run --test retention

use std::sync::Arc;

use serde_json::json;
use spur::event::{BatchDefaults, Event, Origin, normalize};
use spur::queue::{Dispatch, PreparedEvent, SledQueue, Target};
use spur::run::{RunRecord, RunStatus};
use spur::store::{Store, now_ms};

struct Only(&'static str);

impl Dispatch for Only {
    fn targets(&self, event: &Event) -> Vec<Target> {
        if event.name() == Some(self.0) {
            vec![Target {
                script: "s".into(),
                handler: "h".into(),
            }]
        } else {
            Vec::new()
        }
    }
}

fn event(name: &str, i: usize) -> PreparedEvent {
    let body = json!({"type": "track", "userId": format!("u{i}"), "event": name, "messageId": format!("{name}-{i}")});
    let e = normalize(
        body.as_object().unwrap().clone(),
        None,
        &BatchDefaults::default(),
        Origin::Tracking,
        chrono::Utc::now(),
    )
    .unwrap();
    PreparedEvent::new(e, now_ms())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_events_are_purged_unless_a_pending_job_needs_them() {
    let store = Store::temporary().unwrap();
    let queue = SledQueue::open(store.clone(), Arc::new(Only("Kept"))).unwrap();
    let batch = vec![
        event("Old", 1),
        event("Old", 2),
        event("Kept", 3),
        event("Old", 4),
    ];
    let receipt = queue.ingest(batch).await.unwrap();
    assert_eq!(receipt.accepted, 4);
    // Everything is older than a cutoff in the future, but the third event has a
    // pending job: it and everything after it stay (the log is purged in order).
    let removed = queue.purge(now_ms() + 60_000).unwrap();
    assert_eq!(removed, 2);
    let left: Vec<String> = queue
        .events_since(0)
        .unwrap()
        .iter()
        .map(|e| e.body["messageId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(left, ["Kept-3", "Old-4"]);
    assert_eq!(
        queue.purge(now_ms() - 60_000).unwrap(),
        0,
        "nothing younger than the cutoff goes"
    );
    queue.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_webhook_requests_are_purged_unless_their_job_is_pending() {
    let store = Store::temporary().unwrap();
    let queue = SledQueue::open(store.clone(), Arc::new(Only("none"))).unwrap();
    let job = || {
        spur::queue::Job::new(
            spur::queue::Trigger::Webhook {
                source: "forms".into(),
                seq: 0,
            },
            "s".into(),
            "on_webhook(forms)#0".into(),
            None,
            now_ms(),
        )
    };
    let first = queue
        .accept_request("forms", json!({"body": "1"}), job())
        .await
        .unwrap();
    let second = queue
        .accept_request("forms", json!({"body": "2"}), job())
        .await
        .unwrap();
    // The first request's run finishes; the second one's is still pending.
    let lease = queue.lease().unwrap();
    assert_eq!(
        lease.job.trigger,
        spur::queue::Trigger::Webhook {
            source: "forms".into(),
            seq: first
        }
    );
    queue
        .settle(
            &lease,
            spur::queue::Settle::Done {
                keep_journal: false,
            },
            spur::queue::RunWrites::default(),
            false,
        )
        .unwrap();
    assert_eq!(queue.purge(now_ms() + 60_000).unwrap(), 1);
    assert!(queue.request(first).unwrap().is_none());
    assert_eq!(
        queue.request(second).unwrap().unwrap().request,
        json!({"body": "2"}),
        "the pending run's request stays"
    );
    queue.shutdown();
}

#[test]
fn run_records_older_than_the_retention_are_purged() {
    let store = Store::temporary().unwrap();
    let runs = spur::run::SledRunRecords::open(&store);
    for i in 0..5 {
        let trigger = spur::queue::Trigger::Schedule {
            schedule: "@hourly".into(),
            at_ms: 0,
        };
        let job = spur::queue::Job {
            id: i,
            ..spur::queue::Job::new(trigger, "s".into(), "h".into(), None, 0)
        };
        let mut r = RunRecord::parked(&job);
        r.id = store.next_id().unwrap();
        r.status = RunStatus::Ok;
        runs.insert(r).unwrap();
    }
    runs.drain();
    assert_eq!(runs.purge(now_ms() - 60_000).unwrap(), 0);
    assert_eq!(runs.purge(now_ms() + 60_000).unwrap(), 5);
    assert!(
        runs.list(&spur::run::RunFilter::default(), 10)
            .unwrap()
            .is_empty()
    );
}

mod common;

/// A dead letter's journal, decided approvals and retired script versions go with
/// retention; a pending approval and the loaded scripts stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_covers_dead_letter_journals_and_decided_approvals() {
    let script = r#"
        on_track("Doomed", |e| { state::incr("n"); fail("no"); });
        on_track("Ask", |e| { approval::ask(#{ title: `ok ${e.userId}?` }); });
    "#;
    let t = common::TestApp::builder()
        .script("r.rhai", script)
        .start()
        .await;
    for (user, name) in [("a", "Doomed"), ("b", "Ask"), ("c", "Ask")] {
        t.post("/v1/track", &json!({"userId": user, "event": name}))
            .await;
    }
    let runs = t
        .wait_runs(10, |r| {
            r.iter().any(|r| r.status == RunStatus::Failed)
                && r.iter().filter(|r| r.status == RunStatus::Waiting).count() == 2
        })
        .await;
    let dead = runs.iter().find(|r| r.status == RunStatus::Failed).unwrap();
    assert!(!t.app.queue.journal(dead.job_id).unwrap().is_empty());
    let (_, pending) = t.admin_get("/api/approvals?status=pending").await;
    let first = pending["approvals"][0]["id"].as_str().unwrap().to_owned();
    let (status, _) = t
        .admin_post(&format!("/api/approvals/{first}/approve"), &json!({}))
        .await;
    assert_eq!(status, 200);
    t.wait_runs(10, |r| r.iter().any(|r| r.status == RunStatus::Ok))
        .await;

    let later = now_ms() + 40 * 86_400_000;
    let purged = t.app.purge_expired(later).unwrap();
    assert_eq!(purged.dead_letters, 1, "{purged:?}");
    assert!(
        t.app.queue.journal(dead.job_id).unwrap().is_empty(),
        "the dead letter's journal went with it"
    );
    assert_eq!(purged.approvals, 1, "the decided one: {purged:?}");
    let left = t.app.approvals.store.list(None).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].status, spur::approval::Status::Pending);
    assert_eq!(purged.sources, 0, "the loaded version stays");
}
