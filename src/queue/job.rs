//! A job: one run of one handler for one trigger (an event, a schedule tick, …).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A durable job, as stored under the queue tree's `j` prefix.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub id: u64,
    pub trigger: Trigger,
    /// The script's name (file stem) and the handler's key within it.
    pub script: String,
    pub handler: String,
    /// Runs of one user start in order and never overlap (DESIGN.md §7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Attempts made so far.
    pub attempt: u32,
    pub not_before_ms: i64,
    pub created_ms: i64,
    /// The script version (source hash) the run started on; it keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<String>,
    /// Times the run was woken from a wait.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub wakeups: u32,
    /// Set while the run is parked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<Wait>,
    /// The W3C `traceparent` the event arrived with: the run's trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

impl Job {
    /// A first attempt of `script`'s `handler`, due at `not_before_ms`. Id 0 and
    /// `created_ms` 0 are filled in when the job is enqueued.
    pub fn new(
        trigger: Trigger,
        script: String,
        handler: String,
        user: Option<String>,
        not_before_ms: i64,
    ) -> Self {
        Self {
            id: 0,
            trigger,
            script,
            handler,
            user,
            attempt: 0,
            not_before_ms,
            created_ms: 0,
            pinned: None,
            wakeups: 0,
            waiting: None,
            traceparent: None,
        }
    }
}

#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// What a parked run waits for; its wake-up journals a result under `key`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Wait {
    /// The journal key of the waiting effect.
    pub key: String,
    #[serde(flatten)]
    pub kind: WaitKind,
    /// When a timer ends the wait (sleep end, `wait_for` time-out, approval expiry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wake_at_ms: Option<i64>,
    pub since_ms: i64,
    /// The run record of the execution that parked.
    pub run_id: u64,
}

/// The kinds of waits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "for", rename_all = "snake_case")]
pub enum WaitKind {
    /// A human decision on approval `approval_id`.
    Approval { approval_id: String, title: String },
    /// `time::sleep`: only the timer.
    Sleep,
    /// `wait_for`: the first event after `since_seq` matching `filter`, or the timer.
    Event {
        filter: Map<String, Value>,
        #[serde(default)]
        since_seq: u64,
    },
}

impl WaitKind {
    /// The kinds' names, as `for` in a wait and the `kind` label of
    /// `spur_runs_parked`.
    pub(crate) const NAMES: [&str; 3] = ["approval", "sleep", "event"];

    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Approval { .. } => "approval",
            Self::Sleep => "sleep",
            Self::Event { .. } => "event",
        }
    }
}

/// What made the job.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Trigger {
    /// A Segment event, by its sequence number in the event log.
    Event { seq: u64, message_id: String },
    /// A schedule tick; `at_ms` is the tick's scheduled time.
    Schedule { schedule: String, at_ms: i64 },
    /// A request to the webhook source `source`, by its sequence number in the
    /// request log.
    Webhook { source: String, seq: u64 },
    /// A call of the tool `tool` by `client`, with its validated arguments.
    Tool {
        tool: String,
        client: String,
        arguments: Value,
    },
    /// A new approval request for an `on_approval` channel: the request as the
    /// handler sees it, with its decision links.
    Approval { approval_id: String, request: Value },
}

impl Trigger {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Event { .. } => "event",
            Self::Schedule { .. } => "schedule",
            Self::Webhook { .. } => "webhook",
            Self::Tool { .. } => "tool",
            Self::Approval { .. } => "approval",
        }
    }
}

/// An event as stored in the log, shared by the jobs it made.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub seq: u64,
    pub received_ms: i64,
    pub body: Map<String, Value>,
}

/// A webhook request as stored in the request log (`source::SourceRequest` as
/// JSON), kept like events for retries and replays.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredRequest {
    pub seq: u64,
    pub received_ms: i64,
    pub source: String,
    pub request: Value,
}

/// A job handed to a worker, with its event when already in memory.
#[derive(Debug, Clone)]
pub struct Lease {
    pub job: Job,
    pub event: Option<Arc<StoredEvent>>,
}

/// Where a handler lives; what dispatch yields for an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub script: String,
    pub handler: String,
}
