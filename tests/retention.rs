//! Retention: run records, dead letters, events and dedup generations are purged
//! once past their configured age, and never what a pending job still needs.
//! Run with: cargo nextest run --test retention

use std::sync::Arc;

use serde_json::json;
use spur::event::{BatchDefaults, Event, Origin, normalize};
use spur::queue::{Dispatch, PreparedEvent, Queue, Target};
use spur::run::{RunRecord, RunStatus, RunStore};
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
    let queue = Queue::open(store.clone(), Arc::new(Only("Kept"))).unwrap();
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

#[test]
fn run_records_older_than_the_retention_are_purged() {
    let store = Store::temporary().unwrap();
    let runs = RunStore::new(&store);
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
    assert_eq!(runs.purge(now_ms() - 60_000).unwrap(), 0);
    assert_eq!(runs.purge(now_ms() + 60_000).unwrap(), 5);
    assert!(
        runs.list(&spur::run::RunFilter::default(), 10)
            .unwrap()
            .is_empty()
    );
}
