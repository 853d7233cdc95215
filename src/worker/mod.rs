//! Workers: lease a job, run its handler in the sandbox, settle it.
//!
//! Workers are OS threads (handlers block on HTTP; the async runtime never waits for
//! a script). Each thread keeps its own engine (see `script::with_thread_engine`).
//! The run order per user comes from the queue's scheduler. A run that waits is
//! parked — stored with what it waits for, its timer registered — and its thread
//! goes back to work.

pub(crate) mod retry;
mod runner;

use std::sync::Arc;
use std::thread::JoinHandle;

pub(crate) use runner::{Execution, Outcome, event_args, execute, invoke, outcome_of, tick_args};

use crate::queue::{Ended, Lease, Queue, Settle, Trigger};
use crate::run::timers::{Due, Timers};
use crate::run::{DeadLetter, DeadLetters, RunStatus, RunStore};
use crate::script::pinned::Versions;
use crate::script::{EngineOptions, Live};
use retry::RetryPolicy;

/// Stack of worker threads: deep (but limited) script recursion needs room.
const WORKER_STACK: usize = 16 << 20;

/// What workers share.
pub(crate) struct WorkerDeps {
    pub queue: Queue,
    pub scripts: Arc<Live>,
    pub versions: Arc<Versions>,
    pub engine: EngineOptions,
    pub runs: RunStore,
    pub dead: DeadLetters,
    pub retry: RetryPolicy,
    pub timers: Timers,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Exports run spans (`[telemetry] otlp_endpoint`).
    pub telemetry: Option<Arc<crate::telemetry::Telemetry>>,
}

/// The running worker threads.
pub(crate) struct WorkerPool {
    threads: Vec<JoinHandle<()>>,
}

impl WorkerPool {
    /// Starts `n` workers.
    pub(crate) fn start(deps: &Arc<WorkerDeps>, n: usize) -> Self {
        let threads = (0..n)
            .map(|i| {
                let deps = Arc::clone(deps);
                std::thread::Builder::new()
                    .name(format!("spur-worker-{i}"))
                    .stack_size(WORKER_STACK)
                    .spawn(move || work(&deps))
                    .expect("spawning worker threads must succeed at start-up")
            })
            .collect();
        Self { threads }
    }

    /// Waits for every worker to finish its current run (after `Queue::shutdown`).
    pub(crate) fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn work(deps: &WorkerDeps) {
    while let Some(mut lease) = deps.queue.lease() {
        let run =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| execute(deps, &mut lease)));
        let exec = run.unwrap_or_else(|_| {
            tracing::error!(job = lease.job.id, "A run panicked; it will be retried.");
            runner::panicked(deps, &lease)
        });
        settle(deps, &lease, exec);
    }
}

/// Records the run and settles its job — ack, retry later, park, or dead-letter —
/// committing what the run wrote in the same batch, then frees its state keys.
fn settle(deps: &WorkerDeps, lease: &Lease, exec: Execution) {
    let Execution {
        mut record,
        outcome,
        journaled,
        mut tx,
    } = exec;
    let (writes, wrote_journal) = tx.as_mut().map(|t| t.take()).unwrap_or_default();
    let journal_on_disk = journaled || wrote_journal;
    let attempt = record.attempt;
    let settle = match outcome {
        Outcome::Ok | Outcome::Skipped(_) => Settle::Done {
            keep_journal: false,
        },
        Outcome::Retry(_) if deps.retry.allows_another(attempt) => {
            let at = deps
                .queue
                .clock()
                .now_ms()
                .saturating_add(deps.retry.delay_ms(attempt) as i64);
            record.status = RunStatus::Retrying;
            record.next_attempt_at =
                chrono::DateTime::from_timestamp_millis(at).map(crate::event::format_time);
            Settle::Retry { at_ms: at }
        }
        Outcome::Retry(reason) | Outcome::Failed(reason) => {
            if record.status == RunStatus::Retrying {
                record.status = RunStatus::Dead;
            }
            dead_letter(deps, lease, &record, reason);
            Settle::Done { keep_journal: true }
        }
        Outcome::Park(wait) => {
            let mut job = lease.job.clone();
            let due = Due::of(job.id, &wait);
            job.waiting = Some(wait);
            match deps.queue.park(lease, job, writes) {
                Ok(Ended::Stored) => {
                    if let Some(d) = due {
                        deps.timers.add(d);
                    }
                }
                Ok(Ended::RunAgain) => run_again(&mut record),
                Err(e) => {
                    tracing::error!(job = lease.job.id, error = %e, "Parking a run failed; it will run again.");
                }
            }
            // After the park, so a `waiting` record always means a parked run.
            store_record(deps, lease, record);
            return;
        }
    };
    match deps.queue.settle(lease, settle, writes, journal_on_disk) {
        Ok(Ended::Stored) => {}
        Ok(Ended::RunAgain) => {
            run_again(&mut record);
            if let Settle::Done { keep_journal: true } = settle
                && let Err(e) = deps.dead.take(lease.job.id)
            {
                tracing::error!(job = lease.job.id, error = %e, "Removing the dead letter of a run executed again failed.");
            }
        }
        Err(e) => {
            tracing::error!(job = lease.job.id, error = %e, "Settling a job failed; it will run again.");
        }
    }
    // Its writes are handed over (and visible): the state keys are free again, and
    // whoever sees the record sees what the run wrote.
    drop(tx);
    store_record(deps, lease, record);
}

/// The record of an execution whose end was not stored (`Ended::RunAgain`): what
/// it wrote did not happen, and the job is executed again at once.
fn run_again(record: &mut crate::run::RunRecord) {
    record.status = RunStatus::Retrying;
    record.next_attempt_at = Some(record.finished_at.clone());
    record.error = Some(crate::run::RunError {
        kind: "conflict".into(),
        message: "a state key the run changed was changed on another node meanwhile: not stored, executed again at once".into(),
        file: None,
        line: None,
        column: None,
    });
}

fn store_record(deps: &WorkerDeps, lease: &Lease, record: crate::run::RunRecord) {
    tracing::debug!(
        script = %record.script,
        handler = %record.handler,
        status = record.status.as_str(),
        ms = record.duration_ms,
        "Run finished."
    );
    deps.metrics.count_run(&record);
    if let Some(t) = &deps.telemetry {
        t.record_run(&record);
    }
    if let Err(e) = deps.runs.insert(record) {
        tracing::error!(job = lease.job.id, error = %e, "Storing a run record failed.");
    }
}

fn dead_letter(deps: &WorkerDeps, lease: &Lease, record: &crate::run::RunRecord, reason: String) {
    let event = lease
        .event
        .as_ref()
        .map(|e| e.body.clone())
        .or_else(|| match &lease.job.trigger {
            Trigger::Event { seq, .. } => deps.queue.event(*seq).ok().flatten().map(|e| e.body),
            Trigger::Schedule { .. }
            | Trigger::Webhook { .. }
            | Trigger::Tool { .. }
            | Trigger::Approval { .. } => None,
        });
    let dl = DeadLetter {
        id: lease.job.id,
        job: lease.job.clone(),
        event,
        reason,
        run_id: record.id,
        attempts: record.attempt,
        dead_at: record.finished_at.clone(),
    };
    if let Err(e) = deps.dead.insert(&dl) {
        tracing::error!(job = lease.job.id, error = %e, "Storing a dead letter failed.");
    }
}
