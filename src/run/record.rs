//! Run records: one per execution, newest first, kept for `[retention] runs`.
//! Layout: tree `runs`, key run id (u64 BE, so time order), value
//! `finished ms (i64 BE) + JSON`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::connectors::CallRecord;
use crate::store::{Store, StoreError, id_key, key_id};

/// Log levels of the lines a run captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

/// A log line a run captured (`log::info`, `print`, …).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogLine {
    pub level: LogLevel,
    pub message: String,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Ok,
    /// `skip(why)` or nothing to do; never retried.
    Skipped,
    /// `fail(why)` or a sandbox violation; dead-lettered, never retried.
    Failed,
    /// An error; another attempt is scheduled.
    Retrying,
    /// Out of attempts; dead-lettered.
    Dead,
    /// Parked: waits for an approval, a timer or an event (`waiting_for`).
    Waiting,
}

impl RunStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Skipped => "skipped",
            Self::Failed => "failed",
            Self::Retrying => "retrying",
            Self::Dead => "dead",
            Self::Waiting => "waiting",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ok" => Self::Ok,
            "skipped" => Self::Skipped,
            "failed" => Self::Failed,
            "retrying" => Self::Retrying,
            "dead" => Self::Dead,
            "waiting" => Self::Waiting,
            _ => return None,
        })
    }
}

/// A run's error, placed in the script.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunError {
    /// `runtime`, `timeout`, `limit` (sandbox), `script` (missing handler, bad event),
    /// `conflict` (its end not stored: a state key changed on another node).
    pub kind: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
}

/// What one execution did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: u64,
    pub job_id: u64,
    /// `event`, `schedule`, `webhook` or `tool`.
    pub trigger: String,
    pub script: String,
    pub handler: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// The webhook source of a `webhook` run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The tool of a `tool` run, the client that called it, its arguments and
    /// (once it finished) the handler's return value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<serde_json::Value>,
    /// Where the run sits in its trace (when `[telemetry]` exports traces).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<crate::telemetry::TraceIds>,
    /// The request an `on_approval` run announces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// 1 for the first execution.
    pub attempt: u32,
    pub status: RunStatus,
    pub started_at: String,
    pub finished_at: String,
    pub duration_ms: f64,
    /// From the job's creation (or due time) to this start.
    pub queued_ms: f64,
    pub logs: Vec<LogLine>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped_logs: usize,
    pub calls: Vec<CallRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RunError>,
    /// The why of `skip(why)` / `fail(why)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script_hash: Option<String>,
    /// What the run parked on (status `waiting`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<serde_json::Value>,
    /// Approval decisions this execution received: who, when, comment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub decisions: Vec<serde_json::Value>,
    /// messageIds of the events a source handler emitted in this execution.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub emitted: Vec<String>,
    /// Wake-ups before this execution.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub wakeups: u32,
}

impl RunRecord {
    /// A record of an execution of `job` starting at `started_at`; the outcome
    /// fields are filled in as it ends.
    pub(crate) fn of_job(job: &crate::queue::Job, id: u64, started_at: String) -> Self {
        let (mut message_id, mut schedule, mut source) = (None, None, None);
        let (mut tool, mut client, mut arguments) = (None, None, None);
        let mut approval = None;
        match &job.trigger {
            crate::queue::Trigger::Event { message_id: m, .. } => message_id = Some(m.clone()),
            crate::queue::Trigger::Schedule { schedule: s, .. } => schedule = Some(s.clone()),
            crate::queue::Trigger::Webhook { source: s, .. } => source = Some(s.clone()),
            crate::queue::Trigger::Tool {
                tool: t,
                client: c,
                arguments: a,
            } => {
                tool = Some(t.clone());
                client = Some(c.clone());
                arguments = Some(a.clone());
            }
            crate::queue::Trigger::Approval { approval_id, .. } => {
                approval = Some(approval_id.clone());
            }
        }
        Self {
            id,
            job_id: job.id,
            trigger: job.trigger.name().into(),
            script: job.script.clone(),
            handler: job.handler.clone(),
            message_id,
            event_type: None,
            event: None,
            user: job.user.clone(),
            schedule,
            source,
            tool,
            client,
            arguments,
            approval,
            trace: None,
            result: None,
            attempt: job.attempt + 1,
            status: RunStatus::Ok,
            finished_at: started_at.clone(),
            started_at,
            duration_ms: 0.0,
            queued_ms: 0.0,
            logs: Vec::new(),
            dropped_logs: 0,
            calls: Vec::new(),
            error: None,
            reason: None,
            next_attempt_at: None,
            script_hash: job.pinned.clone(),
            waiting_for: None,
            decisions: Vec::new(),
            emitted: Vec::new(),
            wakeups: job.wakeups,
        }
    }

    /// A record for a parked job whose own record was lost (a crash before sled's
    /// lazy flush): what the job itself knows.
    pub fn parked(job: &crate::queue::Job) -> Self {
        let since = job
            .waiting
            .as_ref()
            .and_then(|w| chrono::DateTime::from_timestamp_millis(w.since_ms))
            .map(crate::event::format_time)
            .unwrap_or_default();
        let mut r = Self::of_job(job, job.waiting.as_ref().map_or(0, |w| w.run_id), since);
        r.status = RunStatus::Waiting;
        r
    }
}

#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Filters of `GET /api/runs`; every one set must match.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub status: Option<RunStatus>,
    pub script: Option<String>,
    pub handler: Option<String>,
    pub message_id: Option<String>,
    /// The user (`userId`, else `anonymousId`) the run was for.
    pub user: Option<String>,
    /// `event`, `schedule`, `webhook` or `tool`.
    pub trigger: Option<String>,
    /// Only the executions of this job (a tool call's runs).
    pub job_id: Option<u64>,
    /// Only runs with an id greater than this (for following).
    pub after: Option<u64>,
    /// Only runs with an id smaller than this (for paging back).
    pub before: Option<u64>,
    /// Only runs started at or after this moment (ms since the epoch).
    pub since_ms: Option<i64>,
    /// Only runs started before this moment (ms since the epoch).
    pub until_ms: Option<i64>,
}

impl RunFilter {
    fn matches(&self, r: &RunRecord) -> bool {
        let same = |want: &Option<String>, have: Option<&str>| {
            want.as_deref().is_none_or(|w| have == Some(w))
        };
        let started = || {
            chrono::DateTime::parse_from_rfc3339(&r.started_at).map_or(0, |t| t.timestamp_millis())
        };
        self.status.is_none_or(|s| s == r.status)
            && self.job_id.is_none_or(|j| j == r.job_id)
            && same(&self.script, Some(&r.script))
            && same(&self.handler, Some(&r.handler))
            && same(&self.message_id, r.message_id.as_deref())
            && same(&self.user, r.user.as_deref())
            && same(&self.trigger, Some(&r.trigger))
            && self.since_ms.is_none_or(|t| started() >= t)
            && self.until_ms.is_none_or(|t| started() < t)
    }
}

/// Where run records are kept (a backend's part of the storage seam).
pub trait RunRecords: Send + Sync + 'static {
    /// Stores `record` and announces it to subscribers once `list` and `get` see
    /// it (a backend may store it after this returns).
    ///
    /// # Errors
    /// On store failure.
    fn insert(&self, record: RunRecord) -> Result<(), StoreError>;

    /// Every record once it is stored (tests await runs with this, never sleep).
    fn subscribe(&self) -> broadcast::Receiver<Arc<RunRecord>>;

    /// Records matching `filter`, newest first, at most `limit`.
    ///
    /// # Errors
    /// On store failure.
    fn list(&self, filter: &RunFilter, limit: usize) -> Result<Vec<RunRecord>, StoreError>;

    /// One record.
    ///
    /// # Errors
    /// On store failure.
    fn get(&self, id: u64) -> Result<Option<RunRecord>, StoreError>;

    /// Returns once every record inserted before is stored (at shutdown, before
    /// the final flush; benchmarks before they count).
    fn drain(&self) {}

    /// Deletes records stored before `cutoff_ms`; returns how many.
    ///
    /// # Errors
    /// On store failure.
    fn purge(&self, cutoff_ms: i64) -> Result<usize, StoreError>;
}

/// The run records a daemon holds; cheap to clone.
pub(crate) type RunStore = Arc<dyn RunRecords>;

/// Run records on sled: tree `runs`, key run id (u64 BE), value stored ms (i64 BE)
/// + the record's JSON. Flushed lazily: a record lost in a crash costs no work.
///
/// Workers serialise a record and hand it to one thread, `spur-records`, which
/// stores it and then announces it. A sled write waits while the queue's writer
/// applies a batch (sled's batch lock); the records thread waits there instead
/// of the workers.
pub struct SledRunRecords {
    tree: sled::Tree,
    clock: crate::clock::SharedClock,
    settled: broadcast::Sender<Arc<RunRecord>>,
    /// `None` only while dropping (so the thread sees the channel close).
    to_store: Option<std::sync::mpsc::SyncSender<ToStore>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Records waiting for the records thread at most; a worker that finds the queue
/// full waits (memory stays bounded if the disk falls behind).
const RECORDS_QUEUED: usize = 16_384;

/// What workers hand the records thread.
enum ToStore {
    /// A record and its stored value.
    Record(Vec<u8>, Arc<RunRecord>),
    /// Answered once everything handed over before it is stored.
    Barrier(std::sync::mpsc::Sender<()>),
}

impl SledRunRecords {
    pub fn open(store: &Store) -> RunStore {
        let (settled, _) = broadcast::channel(4096);
        let (to_store, rx) = std::sync::mpsc::sync_channel(RECORDS_QUEUED);
        let tree = store.runs_tree().clone();
        let (on, announce) = (tree.clone(), settled.clone());
        let thread = std::thread::Builder::new()
            .name("spur-records".into())
            .spawn(move || store_records(&on, &rx, &announce))
            .expect("spawning the records thread must succeed at start-up");
        Arc::new(Self {
            tree,
            clock: Arc::clone(store.clock()),
            settled,
            to_store: Some(to_store),
            thread: Some(thread),
        })
    }

    fn send(&self, item: ToStore) -> Result<(), StoreError> {
        self.to_store
            .as_ref()
            .and_then(|tx| tx.send(item).ok())
            .ok_or(StoreError::Closed)
    }
}

impl Drop for SledRunRecords {
    /// Ends the records thread once it stored what it was given, so the store's
    /// files are free again when the last handle goes.
    fn drop(&mut self) {
        drop(self.to_store.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The records thread (until every handle is gone): store, then announce.
fn store_records(
    tree: &sled::Tree,
    rx: &std::sync::mpsc::Receiver<ToStore>,
    settled: &broadcast::Sender<Arc<RunRecord>>,
) {
    while let Ok(item) = rx.recv() {
        match item {
            ToStore::Record(value, record) => match tree.insert(id_key(record.id), value) {
                Ok(_) => {
                    let _ = settled.send(record);
                }
                Err(e) => {
                    tracing::error!(run = record.id, error = %e, "Storing a run record failed.");
                }
            },
            ToStore::Barrier(done) => {
                let _ = done.send(());
            }
        }
    }
}

impl RunRecords for SledRunRecords {
    fn insert(&self, record: RunRecord) -> Result<(), StoreError> {
        let mut value = Vec::with_capacity(512);
        value.extend_from_slice(&self.clock.now_ms().to_be_bytes());
        serde_json::to_writer(&mut value, &record).expect("a run record always serialises");
        self.send(ToStore::Record(value, Arc::new(record)))
    }

    fn drain(&self) {
        let (done, stored) = std::sync::mpsc::channel();
        if self.send(ToStore::Barrier(done)).is_ok() {
            let _ = stored.recv();
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<RunRecord>> {
        self.settled.subscribe()
    }

    fn list(&self, filter: &RunFilter, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        let lo = filter.after.map_or(0, |a| a.saturating_add(1));
        let hi = filter.before.unwrap_or(u64::MAX);
        let mut out = Vec::new();
        for item in self.tree.range(id_key(lo)..id_key(hi)).rev() {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item?;
            let rec = decode(&k, &v)?;
            if filter.matches(&rec) {
                out.push(rec);
            }
        }
        Ok(out)
    }

    fn get(&self, id: u64) -> Result<Option<RunRecord>, StoreError> {
        self.tree
            .get(id_key(id))?
            .map(|v| decode(&id_key(id), &v))
            .transpose()
    }

    fn purge(&self, cutoff_ms: i64) -> Result<usize, StoreError> {
        crate::store::purge_before(&self.tree, cutoff_ms).map(|ids| ids.len())
    }
}

fn decode(k: &[u8], v: &[u8]) -> Result<RunRecord, StoreError> {
    serde_json::from_slice(v.get(8..).unwrap_or_default()).map_err(|e| StoreError::Corrupt {
        key: format!("run {}", key_id(k)),
        reason: e.to_string(),
    })
}
