//! Wake-up timers of parked runs: sleeps, `wait_for` time-outs and approval
//! expiries. One task keeps a heap of due times; nothing waits per run.
//!
//! Timers are rebuilt from the parked jobs at start-up, so they survive restarts.
//! A timer that fires after its run was already woken (the event or the decision
//! came first) finds nothing to wake: waking is idempotent (`Queue::resume`).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::clock::SharedClock;
use crate::queue::{Job, Wait, WaitKind};

/// A due wake-up.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Due {
    pub at_ms: i64,
    pub job_id: u64,
    pub key: String,
    /// Set for approval expiries.
    pub approval: Option<String>,
}

impl Due {
    /// The timer of a parked job, if its wait has one.
    pub(crate) fn of(job_id: u64, wait: &Wait) -> Option<Self> {
        Some(Self {
            at_ms: wait.wake_at_ms?,
            job_id,
            key: wait.key.clone(),
            approval: match &wait.kind {
                WaitKind::Approval { approval_id, .. } => Some(approval_id.clone()),
                _ => None,
            },
        })
    }
}

/// What runs when a timer is due.
pub(crate) type OnDue = Arc<dyn Fn(Due) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Adds timers; cheap to clone.
#[derive(Clone)]
pub(crate) struct Timers {
    tx: mpsc::UnboundedSender<Due>,
}

impl Timers {
    /// Starts the timer task; `on_due` runs for each timer when `clock` reaches it.
    pub(crate) fn start(on_due: OnDue, clock: SharedClock, stop: CancellationToken) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(rx, on_due, clock, stop));
        Self { tx }
    }

    pub(crate) fn add(&self, due: Due) {
        let _ = self.tx.send(due);
    }

    /// Adds the timers of parked `jobs` (at start-up).
    pub(crate) fn add_parked(&self, jobs: &[Job]) {
        for job in jobs {
            if let Some(d) = job.waiting.as_ref().and_then(|w| Due::of(job.id, w)) {
                self.add(d);
            }
        }
    }
}

async fn run(
    mut rx: mpsc::UnboundedReceiver<Due>,
    on_due: OnDue,
    clock: SharedClock,
    stop: CancellationToken,
) {
    let mut heap: BinaryHeap<Reverse<Due>> = BinaryHeap::new();
    loop {
        let hour = clock
            .now_ms()
            .saturating_add(crate::duration::as_ms(Duration::from_hours(1)));
        let wake = heap.peek().map_or(hour, |Reverse(d)| d.at_ms.min(hour));
        tokio::select! {
            () = stop.cancelled() => return,
            got = rx.recv() => match got {
                Some(d) => heap.push(Reverse(d)),
                None => return,
            },
            () = clock.sleep_until(wake) => {
                let now = clock.now_ms();
                while heap.peek().is_some_and(|Reverse(d)| d.at_ms <= now) {
                    let Reverse(d) = heap.pop().expect("peeked");
                    on_due(d).await;
                }
            }
        }
    }
}
