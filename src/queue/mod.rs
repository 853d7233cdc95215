//! The durable job queue: the event log, `messageId` dedup, jobs, parked runs and
//! their effect journal, schedule state, and the run order.
//!
//! [`JobQueue`] is the storage seam every backend implements (sled: `sled/`; NATS
//! JetStream for scale-out, DESIGN.md §8: `nats/queue.rs`); [`Queue`] is the handle
//! the daemon passes around. Backend-independent parts live here: the job model
//! (`job.rs`), the in-memory run order (`scheduler.rs`: per-user lines, delayed
//! retries), the index of parked `wait_for`s (`waits.rs`), and a run's uncommitted
//! writes (`writes.rs`).
//!
//! Contract of every backend:
//! - an event (and its jobs, and the wake-ups it causes) is durable before
//!   [`JobQueue::ingest`] returns; a repeated `messageId` within 24 h is a duplicate;
//! - a run's [`RunWrites`] commit in one atomic batch with its settle or park, or
//!   alone through [`JobQueue::commit`]; once handed over they are visible to every
//!   read, and hand-offs are committed in order;
//! - a schedule tick's job and the schedule's new state commit together;
//! - a run is woken at most once per wait ([`JobQueue::resume`]).

mod job;
pub(crate) mod scheduler;
mod sled;
pub(crate) mod waits;
mod writes;

use std::sync::Arc;

use serde_json::{Map, Value};

pub use job::{Job, StoredEvent, Target, Trigger, Wait, WaitKind};
pub(crate) use job::{Lease, StoredRequest};
pub(crate) use scheduler::SchedulerStats;
pub(crate) use sled::requests_since;
pub use sled::{SledQueue, events_since};
pub(crate) use waits::matches as wait_matches;
pub use writes::RunWrites;

use crate::clock::SharedClock;
use crate::event::Event;
use crate::store::StoreError;

/// Errors of the queue.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored job {id} is corrupt: {reason}")]
    Corrupt { id: u64, reason: String },
    #[error("the queue is shut down")]
    Closed,
    #[error("writing to the queue failed: {0}")]
    Write(String),
    /// Too many events wait for the writer: the caller should come back later.
    #[error("{pending} events are waiting to be stored (limit {limit})")]
    Overloaded { pending: usize, limit: usize },
}

impl From<::sled::Error> for QueueError {
    fn from(e: ::sled::Error) -> Self {
        Self::Store(e.into())
    }
}

/// How handing a run's end to the queue went (`settle`, `park`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Stored as asked.
    Stored,
    /// Not stored: a state key the run changed was changed elsewhere meanwhile (by
    /// another node of a cluster). The job is executed again at once, on the new
    /// value.
    RunAgain,
}

/// Matches an event against the live handler table.
pub trait Dispatch: Send + Sync + 'static {
    /// The handlers `event` must run on, in registration order.
    fn targets(&self, event: &Event) -> Vec<Target>;
}

/// An event serialised for storage (done on the request's thread, not the writer's).
pub struct PreparedEvent {
    pub event: Event,
    pub(crate) received_ms: i64,
    /// `received_ms` (i64 BE) + the event's JSON, as stored.
    pub(crate) bytes: Vec<u8>,
    /// The request's W3C `traceparent`, handed to the event's jobs.
    pub(crate) traceparent: Option<String>,
}

impl PreparedEvent {
    /// The event, in the trace of `traceparent`.
    #[must_use]
    pub(crate) fn in_trace(mut self, traceparent: Option<String>) -> Self {
        self.traceparent = traceparent;
        self
    }

    pub fn new(event: Event, received_ms: i64) -> Self {
        let mut bytes = Vec::with_capacity(512);
        bytes.extend_from_slice(&received_ms.to_be_bytes());
        serde_json::to_writer(&mut bytes, &event.body)
            .expect("serialising a JSON map into a Vec cannot fail");
        Self {
            event,
            received_ms,
            traceparent: None,
            bytes,
        }
    }
}

/// What happened to each event of an ingest call.
#[derive(Debug, Default, Clone)]
pub struct IngestReceipt {
    pub accepted: usize,
    /// Indexes (into the call's events) already seen within the dedup window.
    pub duplicates: Vec<usize>,
}

/// Where a schedule stands, kept per script and handler key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ScheduleState {
    pub expr: String,
    /// The next tick (`i64::MAX`: never).
    pub next_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_ms: Option<i64>,
}

/// How a leased job ends.
#[derive(Debug, Clone, Copy)]
pub enum Settle {
    /// Finished: the job is removed; its journal too unless `keep_journal` (a dead
    /// letter keeps it, so a replay does not repeat effects that succeeded).
    Done { keep_journal: bool },
    /// Run again at `at_ms`, counting one more attempt.
    Retry { at_ms: i64 },
}

/// The journal key under which a run keeps the script version it is pinned to.
pub(crate) const PIN_KEY: &str = "@pin";

/// Tells whether a wait is already over when its run parks (e.g. the approval was
/// decided between its creation and the park): its result, to wake at once.
pub(crate) type SettledCheck = Arc<dyn Fn(&Wait) -> Option<Value> + Send + Sync>;

/// The queue a daemon holds; cheap to clone.
pub type Queue = Arc<dyn JobQueue>;

/// The job queue and event log of a backend (see the module doc for the contract).
#[async_trait::async_trait]
pub trait JobQueue: Send + Sync + 'static {
    /// Stores `events` durably (deduplicated by `messageId`) and queues their jobs;
    /// wakes parked runs whose `wait_for` an event matches. Returns once everything
    /// accepted is on disk.
    ///
    /// # Errors
    /// When the store fails or the queue is shut down.
    /// Refused with [`QueueError::Overloaded`] when more than the limit of events
    /// already wait for the writer ([`JobQueue::set_max_pending_events`]).
    async fn ingest(&self, events: Vec<PreparedEvent>) -> Result<IngestReceipt, QueueError>;

    /// Stores a webhook request of `source` in the request log and queues `job` for
    /// it (its trigger set to the request) in one atomic batch; returns the request's
    /// sequence number once durable.
    ///
    /// # Errors
    /// When the store fails or the queue is shut down.
    async fn accept_request(
        &self,
        source: &str,
        request: Value,
        job: Job,
    ) -> Result<u64, QueueError>;

    /// A request of the log, if still retained.
    ///
    /// # Errors
    /// When the store fails or the record is corrupt.
    fn request(&self, seq: u64) -> Result<Option<StoredRequest>, QueueError>;

    /// Visits the newest `limit` webhook requests received at or after `since_ms`,
    /// oldest first; stops early when `visit` returns false.
    ///
    /// # Errors
    /// When the store fails or a record is corrupt.
    fn visit_requests(
        &self,
        since_ms: i64,
        limit: usize,
        visit: &mut dyn FnMut(StoredRequest) -> bool,
    ) -> Result<(), QueueError>;

    /// Stores `jobs` durably and queues them. A job with id 0 gets a fresh id; a
    /// job with an id keeps it (a replay keeps its journal).
    ///
    /// # Errors
    /// When the store fails or the queue is shut down.
    async fn enqueue(&self, jobs: Vec<Job>) -> Result<Vec<u64>, QueueError>;

    /// Queues a schedule's tick (`job`, if it fires) and stores the schedule's new
    /// state in the same atomic batch: never one without the other, so a tick never
    /// fires twice. Returns once durable.
    ///
    /// # Errors
    /// When the store fails or the queue is shut down.
    async fn tick(
        &self,
        script: &str,
        handler: &str,
        job: Option<Job>,
        state: &ScheduleState,
    ) -> Result<(), QueueError>;

    /// The stored state of every schedule, by script and handler key.
    ///
    /// # Errors
    /// When the store fails.
    fn schedule_states(
        &self,
    ) -> Result<std::collections::HashMap<(String, String), ScheduleState>, QueueError>;

    /// Stores one schedule's state (no job fires with it).
    ///
    /// # Errors
    /// When the store fails.
    fn put_schedule_state(
        &self,
        script: &str,
        handler: &str,
        state: &ScheduleState,
    ) -> Result<(), QueueError>;

    /// Forgets the state of schedules that are gone.
    ///
    /// # Errors
    /// When the store fails.
    fn remove_schedule_state(&self, script: &str, handler: &str) -> Result<(), QueueError>;

    /// How many events may wait for the writer at once before ingest is refused.
    fn set_max_pending_events(&self, n: usize);

    /// How long a `messageId` is remembered (`retention.dedup`).
    fn set_dedup_window(&self, window: std::time::Duration);

    /// Installs the check consulted when a run parks (see [`SettledCheck`]).
    fn set_settled_check(&self, check: SettledCheck);

    /// Tells `f` of runs parked by other processes sharing the backend (for their
    /// timers); a backend of one process has none.
    fn watch_parks(&self, f: Arc<dyn Fn(Job) + Send + Sync>) {
        let _ = f;
    }

    /// Describes this process to the others sharing the backend: `describe` is
    /// asked each time it announces itself (its scripts' versions, for
    /// `/api/scripts`). A backend of one process ignores it.
    fn announce(&self, describe: Arc<dyn Fn() -> Value + Send + Sync>) {
        let _ = describe;
    }

    /// This process's id among those sharing the backend (`None`: a backend of one
    /// process).
    fn node_id(&self) -> Option<String> {
        None
    }

    /// The processes sharing the backend, as they last described themselves
    /// (empty: a backend of one process).
    ///
    /// # Errors
    /// When the backend cannot be read.
    fn nodes(&self) -> Result<Vec<Value>, QueueError> {
        Ok(Vec::new())
    }

    /// Blocks until a job may run; `None` once the queue is shut down.
    fn lease(&self) -> Option<Lease>;

    /// Ends a leased job's execution, handing the run's `writes` to the writer to
    /// commit in one atomic batch with it, and frees its user's line at once (what
    /// the run wrote is visible to every read from now on, see `Store::stage`). A
    /// finished run's journal entries are not written (nothing will replay them);
    /// with `journal_on_disk` (an earlier execution, or an earlier commit of this
    /// one, may have written some) its journal is cleared too. Not flushed here:
    /// the shared flusher does it.
    ///
    /// # Errors
    /// When the queue is shut down (the job then runs again at the next start); the
    /// user's line is released regardless.
    fn settle(
        &self,
        lease: &Lease,
        settle: Settle,
        writes: RunWrites,
        journal_on_disk: bool,
    ) -> Result<Ended, QueueError>;

    /// Hands a run's `writes` to the writer, to commit in one atomic batch (to free
    /// a state key another run waits for, or after an outbound effect); visible to
    /// reads at once. With `durable`, waits until they — and everything the run
    /// handed over before — are applied and on disk (the shared flusher's fsync):
    /// the output-commit rule. Blocking.
    ///
    /// # Errors
    /// When the store fails or the queue is shut down.
    fn commit(&self, job: u64, writes: RunWrites, durable: bool) -> Result<(), QueueError>;

    /// Parks a leased run until its `job.waiting` is resolved, committing `writes`
    /// with it; frees its user's line. Blocking; returns once the parked state is
    /// durable.
    ///
    /// # Errors
    /// When the store fails or the queue is shut down.
    fn park(&self, lease: &Lease, job: Job, writes: RunWrites) -> Result<Ended, QueueError>;

    /// Wakes `job_id` if it is parked on `key`, journaling `result` as the waiting
    /// effect's outcome. Returns whether it woke (false: not parked on that key, e.g.
    /// already woken by something else).
    ///
    /// # Errors
    /// When the store fails or the queue is shut down.
    async fn resume(&self, job_id: u64, key: &str, result: Value) -> Result<bool, QueueError>;

    /// Every parked run.
    ///
    /// # Errors
    /// When the store fails or a record is corrupt.
    fn waiting_jobs(&self) -> Result<Vec<Job>, QueueError>;

    /// How many runs are parked, by wait kind (every kind listed, zeros too).
    ///
    /// # Errors
    /// When the store fails or a record is corrupt.
    fn parked_by_kind(&self) -> Result<Vec<(&'static str, u64)>, QueueError> {
        let mut counts: Vec<(&'static str, u64)> =
            WaitKind::NAMES.iter().map(|k| (*k, 0)).collect();
        for job in self.waiting_jobs()? {
            if let Some(w) = &job.waiting
                && let Some(c) = counts.iter_mut().find(|(k, _)| *k == w.kind.name())
            {
                c.1 += 1;
            }
        }
        Ok(counts)
    }

    /// The journaled result of `job`'s effect `key`.
    ///
    /// # Errors
    /// When the store fails.
    fn journal_get(&self, job: u64, key: &str) -> Result<Option<Value>, QueueError>;

    /// Journal entries of `job` (for inspection and tests).
    ///
    /// # Errors
    /// When the store fails.
    fn journal(&self, job: u64) -> Result<Vec<(String, Value)>, QueueError>;

    /// Forgets one journal entry of `job`.
    ///
    /// # Errors
    /// When the store fails.
    fn journal_forget(&self, job: u64, key: &str) -> Result<(), QueueError>;

    /// Forgets the journals of `jobs` (dead letters removed by retention).
    ///
    /// # Errors
    /// When the store fails.
    fn forget_journals(&self, jobs: &[u64]) -> Result<(), QueueError>;

    /// The script versions pending jobs are pinned to (with the job, or in the
    /// journal of a run interrupted before it could store its pin).
    ///
    /// # Errors
    /// When the store fails or a stored job is corrupt.
    fn pinned_versions(&self) -> Result<std::collections::HashSet<String>, QueueError>;

    /// An event of the log, if still retained.
    ///
    /// # Errors
    /// When the store fails or the record is corrupt.
    fn event(&self, seq: u64) -> Result<Option<StoredEvent>, QueueError>;

    /// Appends an event to the log without dedup (a replay of a purged event);
    /// returns its new sequence number once durable.
    ///
    /// # Errors
    /// When the store fails.
    async fn append_event(&self, body: Map<String, Value>) -> Result<u64, QueueError>;

    /// Scheduler counts.
    fn stats(&self) -> SchedulerStats;

    /// Deletes events and webhook requests older than `cutoff_ms` that no pending job
    /// needs, and dedup generations past the window. Returns the number of events
    /// and requests removed.
    ///
    /// # Errors
    /// When the store fails.
    fn purge(&self, cutoff_ms: i64) -> Result<usize, QueueError>;

    /// Stops leasing (workers see `None`), lets the writer finish what it was given,
    /// and waits for it.
    fn shutdown(&self);

    /// Visits the newest `limit` events received at or after `since_ms`, oldest
    /// first, one at a time; stops early when `visit` returns false.
    ///
    /// # Errors
    /// When the store fails or a record is corrupt.
    fn visit_events(
        &self,
        since_ms: i64,
        limit: usize,
        visit: &mut dyn FnMut(StoredEvent) -> bool,
    ) -> Result<(), QueueError>;

    /// The clock of the store the queue is on.
    fn clock(&self) -> &SharedClock;

    /// A fresh id, larger than every id handed out before, also across restarts.
    ///
    /// # Errors
    /// When the store fails.
    fn next_id(&self) -> Result<u64, QueueError>;

    /// Waits until everything written before is durable (the shared flusher).
    ///
    /// # Errors
    /// When the flush fails.
    async fn sync(&self) -> Result<(), QueueError>;

    /// Asks for a flush soon, without waiting for it.
    fn flush_soon(&self);

    /// Bytes the backend occupies on disk.
    fn size_on_disk(&self) -> u64;

    /// What the backend holds, by area (a full scan: for operators, never on a hot
    /// path).
    ///
    /// # Errors
    /// When the store fails.
    fn usage(&self) -> Result<Vec<crate::store::Usage>, QueueError>;

    /// Events received at or after `since_ms`, oldest first.
    ///
    /// # Errors
    /// When the store fails or a record is corrupt.
    fn events_since(&self, since_ms: i64) -> Result<Vec<StoredEvent>, QueueError> {
        let mut out = Vec::new();
        self.visit_events(since_ms, usize::MAX, &mut |e| {
            out.push(e);
            true
        })?;
        Ok(out)
    }
}
