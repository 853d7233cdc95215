//! The job queue on the cluster: the same contract as sled's (`queue/mod.rs`), kept
//! across several daemons.
//!
//! - **Jobs come from partitions.** Events (`P.ev.N`), queued jobs (`P.job.N`) and
//!   webhook requests (`P.wh.N`) are partitioned by user. Each partition is read by
//!   one node at a time (its owner, `partitions.rs`), in order, from its checkpoint;
//!   the owner dispatches each event to the handlers it has loaded and runs them
//!   through the same per-user scheduler as sled. So one user's runs start in
//!   arrival order and never overlap, whichever node runs them.
//! - **A run commits in one atomic batch**: its state changes (each only if the key
//!   is still at the version it read), its journal entries, and the job's end — a
//!   done marker `P.done.<job>` claimed only if absent, or its retry (`@retry` in the
//!   journal), or its park (`P.pk.<job>`, with a moved marker `P.mv.<job>.<wakeups>`).
//!   When a partition changes owner, its new owner replays it from the checkpoint and
//!   skips every job with a marker: succeeded handlers never run again. A batch that
//!   loses to another node's change of a key is not stored; the run is executed
//!   again at once, on the new value (its committed journal replays its effects).
//! - **Parked runs live in the cluster**: any node wakes them (`resume` replaces the
//!   park only if unchanged, so once) and the woken job goes to its partition's
//!   owner. Every node learns of parks from a watch on `P.pk.>` for their timers.
//! - **Schedule ticks** are claimed (`P.tk.<hash>`) with the schedule's new state
//!   and the tick's job: every node's scheduler proposes each tick, one wins.
//!
//! Job ids are cluster-wide: an event's jobs are `seq << 12 | slot` (the slot from a
//! hash of script and handler), so a replay on another node finds the same ids;
//! other jobs get a time-based random id. Run records, dead letters, audit, the
//! outbox and script sources stay on each node's own sled store (`app/storage.rs`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::IntoFuture as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::batch::{Batch, Failure};
use super::ingest::partition;
use super::{Cluster, NatsError, PARTITIONS, Retention};
use crate::clock::SharedClock;
use crate::event::{Event, EventType};
use crate::queue::scheduler::Scheduler;
use crate::queue::waits::WaitIndex;
use crate::queue::{
    Dispatch, Ended, IngestReceipt, Job, JobQueue, Lease, PreparedEvent, Queue, QueueError,
    RunWrites, ScheduleState, SchedulerStats, Settle, SettledCheck, StoredEvent, StoredRequest,
    Trigger, WaitKind,
};
use crate::store::{Store, StoreError};

/// How long a run's commit is retried while the cluster cannot take it.
const RIDE_OUT: Duration = Duration::from_secs(10);

/// Jobs read from partitions and not yet finished, at most, per node: past it the
/// partitions' readers wait (the backlog stays in the cluster, not in memory).
const MAX_BUFFERED: usize = 20_000;

/// How long a tick's claim is kept (longer than any catch-up looks back).
const TICK_TTL: Duration = Duration::from_hours(24 * 8);

/// How long a woken run's empty park message is kept.
const GONE_TTL: Duration = Duration::from_hours(1);

/// The journal key of a retrying job's next attempt.
const RETRY_KEY: &str = "@retry";

/// The NATS queue; cheap to clone.
#[derive(Clone)]
pub struct NatsQueue {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) cluster: Cluster,
    /// This daemon's id in the cluster (kept across restarts, `partitions::node_id`).
    pub(super) node: String,
    /// The node's own store: run ids and what stays per node.
    local: Store,
    pub(super) sched: Scheduler,
    dispatch: Arc<dyn Dispatch>,
    retention: Mutex<Retention>,
    /// Where each job read from a partition came from, until it finishes.
    slots: Mutex<HashMap<u64, Slot>>,
    /// The journals of jobs this node runs, as stored (read once per execution at
    /// most; a fresh job's is empty).
    journals: Mutex<HashMap<u64, Map<String, Value>>>,
    /// The partitions this node reads.
    pub(super) parts: Mutex<HashMap<u32, Part>>,
    /// Jobs read and not finished; the readers wait past [`MAX_BUFFERED`].
    pub(super) buffered: AtomicUsize,
    pub(super) drained: tokio::sync::Notify,
    settled_waits: Mutex<Option<SettledCheck>>,
    /// What this node says of itself in its heartbeat.
    pub(super) describe: Mutex<Option<Arc<dyn Fn() -> Value + Send + Sync>>>,
    /// Commits runs' batches together (group commit).
    combiner: super::batch::Combiner,
    pub(super) stop: CancellationToken,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// The partition message a job came from.
#[derive(Clone, Copy)]
struct Slot {
    partition: u32,
    msg: u64,
}

/// A partition this node reads.
pub(super) struct Part {
    /// Messages whose jobs are not all finished: sequence → jobs left.
    pub(super) pending: BTreeMap<u64, usize>,
    /// The last message read.
    pub(super) read: u64,
    /// The checkpoint last stored.
    pub(super) saved: u64,
    pub(super) cancel: CancellationToken,
    /// The `wait_for`s its events may end.
    pub(super) waits: WaitIndex,
}

impl Part {
    pub(super) fn new(checkpoint: u64, cancel: CancellationToken, waits: WaitIndex) -> Self {
        Self {
            pending: BTreeMap::new(),
            read: checkpoint,
            saved: checkpoint,
            cancel,
            waits,
        }
    }

    /// Every message up to it is finished.
    pub(super) fn checkpoint(&self) -> u64 {
        self.pending
            .keys()
            .next()
            .map_or(self.read, |first| first - 1)
    }
}

impl NatsQueue {
    /// The queue on `cluster`, this node's partitions taken in the background.
    ///
    /// # Errors
    /// Never for now (kept fallible like the other backends).
    pub fn open(
        cluster: Cluster,
        local: Store,
        dispatch: Arc<dyn Dispatch>,
        retention: Retention,
    ) -> Result<Queue, QueueError> {
        let clock = Arc::clone(local.clock());
        let inner = Arc::new(Inner {
            node: cluster.block(super::partitions::node_id(&cluster, &local)),
            sched: Scheduler::new(Arc::clone(&clock)),
            cluster: cluster.clone(),
            local,
            dispatch,
            retention: Mutex::new(retention),
            slots: Mutex::default(),
            journals: Mutex::default(),
            parts: Mutex::default(),
            buffered: AtomicUsize::new(0),
            drained: tokio::sync::Notify::new(),
            settled_waits: Mutex::new(None),
            describe: Mutex::new(None),
            combiner: super::batch::Combiner::start(cluster.clone(), RIDE_OUT),
            stop: CancellationToken::new(),
            tasks: Mutex::default(),
        });
        let queue = Self { inner };
        let owner = cluster.runtime.spawn(super::partitions::own(queue.clone()));
        queue.inner.tasks.lock().push(owner);
        Ok(Arc::new(queue))
    }

    fn retention(&self) -> Retention {
        *self.inner.retention.lock()
    }

    fn block<F: std::future::Future>(&self, f: F) -> F::Output {
        self.inner.cluster.block(f)
    }

    /// A batch of a job's run writes: its state changes, then (with `journal`) its
    /// journal with the run's new entries and `extra` — the whole journal, one
    /// message. Returns the journal as it will be stored.
    fn batch_of(
        &self,
        job: u64,
        writes: &RunWrites,
        journal: bool,
        extra: Option<(&str, Value)>,
    ) -> Result<(Batch, Option<Map<String, Value>>), QueueError> {
        let mut batch = Batch::default();
        let now = self.inner.local.now_ms();
        for w in &writes.state {
            let subject = super::state::subject(&self.inner.cluster, &w.ns, &w.key)
                .map_err(|e| QueueError::Write(e.to_string()))?;
            super::state::put(&mut batch, subject, w.value.as_ref(), w.expect, now);
        }
        if !journal {
            return Ok((batch, None));
        }
        let mut entries = self.journal_map(job)?;
        for (k, v) in &writes.journal {
            entries.insert(k.clone(), v.clone());
        }
        if let Some((k, v)) = extra {
            entries.insert(k.to_owned(), v);
        }
        let bytes = serde_json::to_vec(&entries).expect("a JSON map serialises");
        batch.put(self.journal_subject(job), Bytes::from(bytes), None, None);
        Ok((batch, Some(entries)))
    }

    /// `P.jr.<job>`: the job's journal, every entry in one message (rolled up).
    fn journal_subject(&self, job: u64) -> String {
        self.inner.cluster.subject("jr", &job.to_string())
    }

    /// The job's journal: this node's copy, else the stored one (then kept).
    fn journal_map(&self, job: u64) -> Result<Map<String, Value>, QueueError> {
        if let Some(j) = self.inner.journals.lock().get(&job) {
            return Ok(j.clone());
        }
        let stored = self.block(self.stored_journal(job))?;
        self.inner.journals.lock().insert(job, stored.clone());
        Ok(stored)
    }

    async fn stored_journal(&self, job: u64) -> Result<Map<String, Value>, QueueError> {
        let m = self
            .inner
            .cluster
            .last(&self.journal_subject(job))
            .await
            .map_err(StoreError::from)?;
        Ok(m.and_then(|m| serde_json::from_slice(&m.payload).ok())
            .unwrap_or_default())
    }

    fn done_subject(&self, job: u64) -> String {
        self.inner.cluster.subject("done", &job.to_string())
    }

    fn moved_subject(&self, job: u64, wakeups: u32) -> String {
        self.inner
            .cluster
            .subject("mv", &format!("{job}.{wakeups}"))
    }

    fn park_subject(&self, job: u64) -> String {
        self.inner.cluster.subject("pk", &job.to_string())
    }

    fn schedule_subject(&self, script: &str, handler: &str) -> String {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        self.inner.cluster.subject(
            "sch",
            &format!("_{}._{}", b64.encode(script), b64.encode(handler)),
        )
    }

    /// `P.job.N` for a job: its user's partition (or its id's).
    fn job_subject(&self, kind: &str, job: &Job) -> String {
        let p = match &job.user {
            Some(u) => partition(u),
            None => (job.id % u64::from(PARTITIONS)) as u32,
        };
        self.inner.cluster.subject(kind, &p.to_string())
    }

    /// Commits `build`'s batch for a job's end; the marker it claims (`marker`)
    /// tells a batch that lost to another node's change of a key (run again) from
    /// one already stored (by this node, its answer lost, or by a node that ran the
    /// job while its partition moved).
    fn commit_end(&self, marker: &str, batch: Batch) -> Result<End, QueueError> {
        self.block(async {
            match self.inner.combiner.commit(batch).await {
                Ok(_) => Ok(End::Stored),
                Err(Failure::Conflict) => {
                    match self
                        .inner
                        .cluster
                        .last(marker)
                        .await
                        .map_err(StoreError::from)?
                    {
                        Some(_) => Ok(End::AlreadyEnded),
                        None => Ok(End::Conflict),
                    }
                }
                Err(e) => Err(unavailable(&e)),
            }
        })
    }

    /// A job read from a partition is finished here (done, parked, or ended by
    /// another node): its message may be passed by the checkpoint.
    fn finish(&self, job: u64) {
        let Some(slot) = self.inner.slots.lock().remove(&job) else {
            return;
        };
        let mut parts = self.inner.parts.lock();
        if let Some(part) = parts.get_mut(&slot.partition)
            && let Some(left) = part.pending.get_mut(&slot.msg)
        {
            *left -= 1;
            if *left == 0 {
                part.pending.remove(&slot.msg);
            }
        }
        drop(parts);
        if self.inner.buffered.fetch_sub(1, Ordering::AcqRel) == MAX_BUFFERED {
            self.inner.drained.notify_waiters();
        }
    }

    /// Runs `lease` again at once, before its user's next job: its last execution's
    /// commit lost to another node's change of a state key.
    fn run_again(&self, lease: &Lease) {
        self.inner.journals.lock().remove(&lease.job.id);
        tracing::debug!(
            job = lease.job.id,
            "A state key changed on another node; the run is executed again."
        );
        self.inner.sched.push_front(Lease {
            job: lease.job.clone(),
            // Its earlier commits (journal entries) are in the cluster: not fresh.
            event: None,
        });
    }

    /// Scans `filter`'s messages received at or after `since_ms`, keeping the newest
    /// `limit`, oldest first.
    async fn scan(
        &self,
        filter: String,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<async_nats::jetstream::Message>, QueueError> {
        use async_nats::jetstream::consumer::{DeliverPolicy, pull};
        use futures_util::StreamExt as _;
        let start = time::OffsetDateTime::from_unix_timestamp_nanos(
            i128::from(since_ms.max(0)) * 1_000_000,
        )
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let mut consumer = self
            .inner
            .cluster
            .handle
            .create_consumer(pull::OrderedConfig {
                filter_subject: filter,
                deliver_policy: DeliverPolicy::ByStartTime { start_time: start },
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable(&e))?;
        if consumer
            .info()
            .await
            .map_err(|e| unavailable(&e))?
            .num_pending
            == 0
        {
            return Ok(Vec::new());
        }
        let mut msgs = consumer.messages().await.map_err(|e| unavailable(&e))?;
        let mut out = std::collections::VecDeque::new();
        while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(2), msgs.next()).await {
            let m = m.map_err(|e| unavailable(&e))?;
            let pending = m.info().map_or(0, |i| i.pending);
            if out.len() == limit {
                out.pop_front();
            }
            if limit > 0 {
                out.push_back(m);
            }
            if pending == 0 {
                break;
            }
        }
        Ok(out.into())
    }

    /// The leases of a message of partition `p`: an event's jobs (one per handler it
    /// matches here; it first wakes the `wait_for`s it ends), or a queued job; a
    /// `wait_for`'s registration joins the partition's waits. With `replay` (read
    /// before, maybe by another node), jobs that ended are skipped and retries
    /// resume their attempt count.
    pub(super) async fn leases_of(
        &self,
        p: u32,
        msg: &async_nats::jetstream::Message,
        seq: u64,
        replay: bool,
    ) -> Result<Vec<Lease>, NatsError> {
        let kind = msg.subject.as_str().split('.').nth(1).unwrap_or("");
        let mut leases = match kind {
            "wt" => {
                if let Ok(job) = serde_json::from_slice::<Job>(&msg.payload)
                    && let Some(part) = self.inner.parts.lock().get_mut(&p)
                {
                    index_wait(&mut part.waits, p, &job, seq);
                }
                Vec::new()
            }
            "ev" => {
                let Some(stored) = decode_event(seq, &msg.payload) else {
                    tracing::error!(seq, "An event in the cluster is unreadable; skipped.");
                    return Ok(Vec::new());
                };
                self.wake_waits(p, &stored.body, seq).await?;
                let Some(event) = event_of(&stored) else {
                    return Ok(Vec::new());
                };
                let targets = self.inner.dispatch.targets(&event);
                let ids = event_job_ids(seq, &targets);
                let user = event.user_key().map(str::to_owned);
                let traceparent = msg
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("traceparent"))
                    .map(|v| v.as_str().to_owned());
                let now = self.inner.local.now_ms();
                let stored = Arc::new(stored);
                targets
                    .into_iter()
                    .zip(ids)
                    .map(|(t, id)| {
                        let trigger = Trigger::Event {
                            seq,
                            message_id: event.message_id.clone(),
                        };
                        let mut job = Job::new(trigger, t.script, t.handler, user.clone(), now);
                        job.id = id;
                        job.created_ms = stored.received_ms;
                        job.traceparent.clone_from(&traceparent);
                        Lease {
                            job,
                            event: Some(Arc::clone(&stored)),
                        }
                    })
                    .collect()
            }
            "job" | "wh" => match serde_json::from_slice::<QueuedJob>(&msg.payload) {
                Ok(mut q) => {
                    // A webhook job's request is its own message.
                    if let Trigger::Webhook { seq: s, .. } = &mut q.job.trigger {
                        *s = seq;
                    }
                    vec![Lease {
                        job: q.job,
                        event: None,
                    }]
                }
                Err(e) => {
                    tracing::error!(seq, error = %e, "A queued job in the cluster is unreadable; skipped.");
                    Vec::new()
                }
            },
            _ => Vec::new(),
        };
        if replay {
            leases = self.unended(leases).await?;
        }
        Ok(leases)
    }

    /// The replayed `leases` whose jobs did not end (a done or moved marker), each
    /// with its journal and its retry's attempt count.
    async fn unended(&self, leases: Vec<Lease>) -> Result<Vec<Lease>, NatsError> {
        let mut kept = Vec::with_capacity(leases.len());
        for mut lease in leases {
            let job = &mut lease.job;
            let ended = self
                .inner
                .cluster
                .last(&self.done_subject(job.id))
                .await?
                .is_some()
                || self
                    .inner
                    .cluster
                    .last(&self.moved_subject(job.id, job.wakeups))
                    .await?
                    .is_some();
            if ended {
                continue;
            }
            let journal = self
                .stored_journal(job.id)
                .await
                .map_err(|e| NatsError::Unavailable(e.to_string()))?;
            if let Some(r) = journal.get(RETRY_KEY) {
                job.attempt = r.get("attempt").and_then(Value::as_u64).unwrap_or(0) as u32;
                job.not_before_ms = r.get("at_ms").and_then(Value::as_i64).unwrap_or(0);
            }
            self.inner.journals.lock().insert(job.id, journal);
            lease.event = None;
            kept.push(lease);
        }
        Ok(kept)
    }

    /// Wakes the runs parked in a `wait_for` that event `body` (sequence `seq`) of
    /// partition `p` ends. Done before the event counts as read: the checkpoint
    /// never passes an event whose wake-ups are not stored.
    async fn wake_waits(
        &self,
        p: u32,
        body: &Map<String, Value>,
        seq: u64,
    ) -> Result<(), NatsError> {
        let matched = match self.inner.parts.lock().get(&p) {
            Some(part) => part.waits.matching(body, seq),
            None => return Ok(()),
        };
        for (job, key) in matched {
            JobQueue::resume(self, job, &key, Value::Object(body.clone()))
                .await
                .map_err(|e| NatsError::Unavailable(e.to_string()))?;
            // Woken now, or before by something else: the wait is over either way.
            self.forget_wait(job);
        }
        Ok(())
    }

    /// Drops `job` from the partitions' waits (it is no longer parked).
    pub(super) fn forget_wait(&self, job: u64) {
        for part in self.inner.parts.lock().values_mut() {
            part.waits.remove(job);
        }
    }

    /// Every run parked in the cluster, with its park's sequence (a woken run's park
    /// is an empty message until it expires).
    pub(super) async fn parked(&self) -> Result<Vec<(Job, u64)>, NatsError> {
        let c = &self.inner.cluster;
        Ok(c.lasts(&c.subject("pk", "*"))
            .await?
            .iter()
            .filter_map(|m| Some((serde_json::from_slice(&m.payload).ok()?, m.sequence)))
            .collect())
    }

    /// The `wait_for`s among `parked` that events of partition `p` may end: what a
    /// new owner of `p` starts from (the registrations it reads add the rest).
    pub(super) fn waits_of(parked: &[(Job, u64)], p: u32) -> WaitIndex {
        let mut waits = WaitIndex::default();
        for (job, seq) in parked {
            index_wait(&mut waits, p, job, *seq);
        }
        waits
    }

    /// Hands a partition message's leases to the scheduler.
    pub(super) fn queue_leases(&self, partition: u32, seq: u64, leases: Vec<Lease>) -> bool {
        let mut parts = self.inner.parts.lock();
        let Some(part) = parts.get_mut(&partition) else {
            return false;
        };
        part.read = seq;
        if leases.is_empty() {
            return true;
        }
        part.pending.insert(seq, leases.len());
        drop(parts);
        {
            let mut slots = self.inner.slots.lock();
            for l in &leases {
                slots.insert(
                    l.job.id,
                    Slot {
                        partition,
                        msg: seq,
                    },
                );
            }
        }
        self.inner
            .buffered
            .fetch_add(leases.len(), Ordering::AcqRel);
        self.inner.sched.push_all(leases);
        true
    }

    /// Whether the readers must wait for jobs to finish.
    pub(super) fn full(&self) -> bool {
        self.inner.buffered.load(Ordering::Acquire) >= MAX_BUFFERED
    }
}

/// How a job's end went.
enum End {
    Stored,
    /// Its marker was there: ended before (by this node or another).
    AlreadyEnded,
    /// A state key it changed changed meanwhile.
    Conflict,
}

/// A job as a partition message (`P.job.N`, `P.wh.N`), with the webhook request it
/// is for.
#[derive(serde::Serialize, serde::Deserialize)]
struct QueuedJob {
    job: Job,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    request: Option<Value>,
    #[serde(default)]
    received_ms: i64,
}

/// The partitions whose events may end a `wait_for` on `filter`: its user's, or all
/// of them when it names no `userId` (an event is in the partition of its `userId`,
/// else of its `anonymousId`).
fn wait_partitions(filter: &Map<String, Value>) -> Vec<u32> {
    match filter.get("userId").and_then(Value::as_str) {
        Some(u) => vec![partition(u)],
        None => (0..PARTITIONS).collect(),
    }
}

/// Adds `job`'s `wait_for`, if it has one for partition `p`, to `waits`: events
/// after `since` (its park's or its registration's sequence) match it.
fn index_wait(waits: &mut WaitIndex, p: u32, job: &Job, since: u64) {
    if let Some(w) = &job.waiting
        && let WaitKind::Event { filter, .. } = &w.kind
        && wait_partitions(filter).contains(&p)
    {
        waits.insert(job.id, w.key.clone(), filter.clone(), since);
    }
}

fn unavailable(e: &impl std::fmt::Display) -> QueueError {
    QueueError::Store(StoreError::Unavailable(format!(
        "the NATS cluster did not take the write: {e}"
    )))
}

/// Ids of an event's jobs: `seq << 12 | slot`, the slot from the handler's name
/// (the next free one on a collision), so every node finds the same ids.
fn event_job_ids(seq: u64, targets: &[crate::queue::Target]) -> Vec<u64> {
    let mut used = HashSet::new();
    targets
        .iter()
        .map(|t| {
            let d = Sha256::digest(format!("{}\0{}", t.script, t.handler).as_bytes());
            let mut slot = u64::from(u16::from_be_bytes([d[0], d[1]])) & 0xfff;
            while !used.insert(slot) {
                slot = (slot + 1) & 0xfff;
            }
            (seq << 12) | slot
        })
        .collect()
}

/// A fresh id for a job that is not an event's: milliseconds and 20 random bits
/// (above every event job's id, `seq << 12`, for any realistic sequence).
fn fresh_job_id(now_ms: i64) -> u64 {
    let ms = u64::try_from(now_ms).unwrap_or(0) & ((1 << 43) - 1);
    (ms << 20) | (u64::from(rand::random::<u32>()) & 0xf_ffff)
}

/// An event as stored: received ms (i64 BE), then its JSON.
fn decode_event(seq: u64, payload: &[u8]) -> Option<StoredEvent> {
    let (ms, json) = payload.split_at_checked(8)?;
    let received_ms = i64::from_be_bytes(ms.try_into().ok()?);
    let body: Map<String, Value> = serde_json::from_slice(json).ok()?;
    Some(StoredEvent {
        seq,
        received_ms,
        body,
    })
}

fn event_of(stored: &StoredEvent) -> Option<Event> {
    let kind = EventType::parse(stored.body.get("type")?.as_str()?)?;
    let message_id = stored.body.get("messageId")?.as_str()?.to_owned();
    Some(Event {
        kind,
        message_id,
        body: stored.body.clone(),
    })
}

#[async_trait::async_trait]
impl JobQueue for NatsQueue {
    async fn ingest(&self, events: Vec<PreparedEvent>) -> Result<IngestReceipt, QueueError> {
        self.inner
            .cluster
            .append(&events, self.retention())
            .await
            .map_err(|e| QueueError::Store(e.into()))
    }

    async fn accept_request(
        &self,
        source: &str,
        request: Value,
        mut job: Job,
    ) -> Result<u64, QueueError> {
        let now = self.inner.local.now_ms();
        job.id = fresh_job_id(now);
        job.created_ms = now;
        // The request's sequence is the message's own: known once stored, so the
        // job's trigger names the message and `request` reads it from there.
        job.trigger = Trigger::Webhook {
            source: source.to_owned(),
            seq: 0,
        };
        let queued = QueuedJob {
            job,
            request: Some(json!({"source": source, "request": request})),
            received_ms: now,
        };
        let subject = self.job_subject("wh", &queued.job);
        let payload = Bytes::from(serde_json::to_vec(&queued).expect("JSON serialises"));
        let ttl = self.retention().events;
        self.inner
            .cluster
            .commit_retrying(RIDE_OUT, {
                let mut b = Batch::default();
                b.append(subject.clone(), payload.clone(), Some(ttl));
                b
            })
            .await
            .map_err(|e| unavailable(&e))
    }

    fn request(&self, seq: u64) -> Result<Option<StoredRequest>, QueueError> {
        let Some(m) = self
            .block(self.inner.cluster.at(seq))
            .map_err(StoreError::from)?
        else {
            return Ok(None);
        };
        Ok(request_of(seq, &m.payload))
    }

    fn visit_requests(
        &self,
        since_ms: i64,
        limit: usize,
        visit: &mut dyn FnMut(StoredRequest) -> bool,
    ) -> Result<(), QueueError> {
        let filter = self.inner.cluster.subject("wh", ">");
        for m in self.block(self.scan(filter, since_ms, limit))? {
            let seq = m.info().map_or(0, |i| i.stream_sequence);
            if let Some(r) = request_of(seq, &m.payload)
                && !visit(r)
            {
                break;
            }
        }
        Ok(())
    }

    async fn enqueue(&self, jobs: Vec<Job>) -> Result<Vec<u64>, QueueError> {
        let now = self.inner.local.now_ms();
        let ttl = self.retention().events;
        let mut ids = Vec::with_capacity(jobs.len());
        let mut msgs = Vec::with_capacity(jobs.len());
        for mut job in jobs {
            if job.id == 0 {
                job.id = fresh_job_id(now);
            }
            if job.created_ms == 0 {
                job.created_ms = now;
            }
            ids.push(job.id);
            let subject = self.job_subject("job", &job);
            let q = QueuedJob {
                job,
                request: None,
                received_ms: now,
            };
            msgs.push((
                subject,
                Bytes::from(serde_json::to_vec(&q).expect("JSON serialises")),
            ));
        }
        for chunk in msgs.chunks(super::batch::MAX_MESSAGES) {
            self.inner
                .cluster
                .commit_retrying(RIDE_OUT, {
                    let mut b = Batch::default();
                    for (s, p) in chunk {
                        b.append(s.clone(), p.clone(), Some(ttl));
                    }
                    b
                })
                .await
                .map_err(|e| unavailable(&e))?;
        }
        Ok(ids)
    }

    async fn tick(
        &self,
        script: &str,
        handler: &str,
        job: Option<Job>,
        state: &ScheduleState,
    ) -> Result<(), QueueError> {
        let now = self.inner.local.now_ms();
        let state_bytes = Bytes::from(serde_json::to_vec(state).expect("JSON serialises"));
        let sch = self.schedule_subject(script, handler);
        let job = job.map(|mut j| {
            j.id = fresh_job_id(now);
            j.created_ms = now;
            j
        });
        let claim = job.as_ref().map(|j| {
            let at = match &j.trigger {
                Trigger::Schedule { at_ms, .. } => *at_ms,
                _ => j.not_before_ms,
            };
            let d = Sha256::digest(format!("{script}\0{handler}\0{at}").as_bytes());
            let h = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&d[..16]);
            self.inner.cluster.subject("tk", &h)
        });
        let queued = job.map(|job| {
            let subject = self.job_subject("job", &job);
            let q = QueuedJob {
                job,
                request: None,
                received_ms: now,
            };
            (
                subject,
                Bytes::from(serde_json::to_vec(&q).expect("JSON serialises")),
            )
        });
        let ttl = self.retention().events;
        let stored = self
            .inner
            .cluster
            .commit_retrying(RIDE_OUT, {
                let mut b = Batch::default();
                if let Some(c) = &claim {
                    b.claim(c.clone(), Bytes::new(), Some(TICK_TTL));
                }
                b.put(sch.clone(), state_bytes.clone(), None, None);
                if let Some((s, p)) = &queued {
                    b.append(s.clone(), p.clone(), Some(ttl));
                }
                b
            })
            .await;
        match stored {
            // Another node fired this tick (and stored the schedule's state).
            Ok(_) | Err(Failure::Conflict) => Ok(()),
            Err(e) => Err(unavailable(&e)),
        }
    }

    fn schedule_states(&self) -> Result<HashMap<(String, String), ScheduleState>, QueueError> {
        let filter = self.inner.cluster.subject("sch", "*.*");
        let msgs = self
            .block(self.inner.cluster.lasts(&filter))
            .map_err(StoreError::from)?;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut out = HashMap::new();
        for m in msgs {
            let mut names = m.subject.as_str().rsplit('.').take(2).map(|t| {
                String::from_utf8(b64.decode(t.strip_prefix('_').unwrap_or(t)).ok()?).ok()
            });
            if let (Some(Some(handler)), Some(Some(script))) = (names.next(), names.next())
                && let Ok(state) = serde_json::from_slice(&m.payload)
            {
                out.insert((script, handler), state);
            }
        }
        Ok(out)
    }

    fn put_schedule_state(
        &self,
        script: &str,
        handler: &str,
        state: &ScheduleState,
    ) -> Result<(), QueueError> {
        let subject = self.schedule_subject(script, handler);
        let bytes = Bytes::from(serde_json::to_vec(state).expect("JSON serialises"));
        self.block(self.inner.cluster.commit_retrying(RIDE_OUT, {
            let mut b = Batch::default();
            b.put(subject.clone(), bytes.clone(), None, None);
            b
        }))
        .map(|_| ())
        .map_err(|e| unavailable(&e))
    }

    fn remove_schedule_state(&self, script: &str, handler: &str) -> Result<(), QueueError> {
        let subject = self.schedule_subject(script, handler);
        self.block(
            self.inner
                .cluster
                .handle
                .purge()
                .filter(subject)
                .into_future(),
        )
        .map(|_| ())
        .map_err(|e| unavailable(&e))
    }

    /// The cluster bounds what waits (events wait in their partitions, not in a
    /// writer's queue): nothing to limit here.
    fn set_max_pending_events(&self, _n: usize) {}

    fn set_dedup_window(&self, window: Duration) {
        self.inner.retention.lock().dedup = window;
    }

    fn set_settled_check(&self, check: SettledCheck) {
        *self.inner.settled_waits.lock() = Some(check);
    }

    /// Every node's parks reach `f` (this node's too: a second timer for the same
    /// wait finds it woken and does nothing).
    fn watch_parks(&self, f: Arc<dyn Fn(Job) + Send + Sync>) {
        let task = self
            .inner
            .cluster
            .runtime
            .spawn(super::partitions::watch_parks(self.clone(), f));
        self.inner.tasks.lock().push(task);
    }

    fn announce(&self, describe: Arc<dyn Fn() -> Value + Send + Sync>) {
        *self.inner.describe.lock() = Some(describe);
    }

    fn node_id(&self) -> Option<String> {
        Some(self.inner.node.clone())
    }

    fn nodes(&self) -> Result<Vec<Value>, QueueError> {
        let filter = self.inner.cluster.subject("node", "*");
        let msgs = self
            .block(self.inner.cluster.lasts(&filter))
            .map_err(StoreError::from)?;
        Ok(msgs
            .iter()
            .filter_map(|m| serde_json::from_slice(&m.payload).ok())
            .collect())
    }

    fn lease(&self) -> Option<Lease> {
        let lease = self.inner.sched.lease()?;
        let j = &lease.job;
        if lease.event.is_some() && j.attempt == 0 && j.wakeups == 0 {
            // Dispatched here and never run: it has no journal to read.
            self.inner.journals.lock().entry(j.id).or_default();
        }
        Some(lease)
    }

    fn settle(
        &self,
        lease: &Lease,
        settle: Settle,
        writes: RunWrites,
        _journal_on_disk: bool,
    ) -> Result<Ended, QueueError> {
        let job = &lease.job;
        let events_ttl = self.retention().events;
        let result = match settle {
            Settle::Done { keep_journal } => {
                let marker = self.done_subject(job.id);
                let ended =
                    self.batch_of(job.id, &writes, keep_journal, None)
                        .and_then(|(mut b, _)| {
                            let stored_journal = self
                                .inner
                                .journals
                                .lock()
                                .get(&job.id)
                                .is_none_or(|j| !j.is_empty());
                            if !keep_journal && stored_journal {
                                // Nothing replays a finished run: its journal goes with it.
                                b.put(
                                    self.journal_subject(job.id),
                                    Bytes::new(),
                                    None,
                                    Some(GONE_TTL),
                                );
                            }
                            b.claim(marker.clone(), Bytes::new(), Some(events_ttl));
                            self.commit_end(&marker, b)
                        });
                match ended {
                    Ok(End::Stored | End::AlreadyEnded) => {
                        self.inner.journals.lock().remove(&job.id);
                        self.finish(job.id);
                        Ok(Ended::Stored)
                    }
                    Ok(End::Conflict) => {
                        self.run_again(lease);
                        Ok(Ended::RunAgain)
                    }
                    Err(e) => Err(e),
                }
            }
            Settle::Retry { at_ms } => {
                let attempt = job.attempt + 1;
                let retry = json!({"attempt": attempt, "at_ms": at_ms});
                let stored = self
                    .batch_of(job.id, &writes, true, Some((RETRY_KEY, retry)))
                    .map(|(b, _)| self.block(self.inner.combiner.commit(b)));
                // The next attempt reads its journal again (it may run elsewhere).
                self.inner.journals.lock().remove(&job.id);
                match stored? {
                    Ok(_) => {
                        let mut next = job.clone();
                        next.attempt = attempt;
                        next.not_before_ms = at_ms;
                        self.inner.sched.push_all([Lease {
                            job: next,
                            event: None,
                        }]);
                        Ok(Ended::Stored)
                    }
                    Err(Failure::Conflict) => {
                        self.run_again(lease);
                        Ok(Ended::RunAgain)
                    }
                    Err(e) => Err(unavailable(&e)),
                }
            }
        };
        if result.is_err() {
            // Not stored: it runs again (its partition keeps it pending).
            self.run_again(lease);
        }
        self.inner.sched.done(job.user.as_deref());
        result
    }

    /// Every commit waits for the cluster's acknowledgement: "durable" or not.
    fn commit(&self, job: u64, writes: RunWrites, _durable: bool) -> Result<(), QueueError> {
        if writes.is_empty() {
            return Ok(());
        }
        let (batch, journal) = self.batch_of(job, &writes, !writes.journal.is_empty(), None)?;
        match self.block(self.inner.combiner.commit(batch)) {
            Ok(_) => {
                if let Some(j) = journal {
                    self.inner.journals.lock().insert(job, j);
                }
                Ok(())
            }
            Err(e) => {
                self.inner.journals.lock().remove(&job);
                Err(match e {
                    Failure::Conflict => QueueError::Write(
                        "a state key the run changed was changed on another node meanwhile; the run is retried".into(),
                    ),
                    e => unavailable(&e),
                })
            }
        }
    }

    fn park(&self, lease: &Lease, job: Job, writes: RunWrites) -> Result<Ended, QueueError> {
        let result = (|| {
            let Some(wait) = job.waiting.clone() else {
                return Err(QueueError::Write("parking needs a wait".into()));
            };
            let marker = self.moved_subject(job.id, lease.job.wakeups);
            let bytes = Bytes::from(serde_json::to_vec(&job).expect("JSON serialises"));
            let ttl = self.retention().events;
            let (mut b, _) = self.batch_of(job.id, &writes, true, None)?;
            if let WaitKind::Event { filter, .. } = &wait.kind {
                // Registered in the partitions whose events may match, in order with
                // them: their owners match every event stored after it.
                for p in wait_partitions(filter) {
                    let subject = self.inner.cluster.subject("wt", &p.to_string());
                    b.append(subject, bytes.clone(), Some(ttl));
                }
            }
            b.put(self.park_subject(job.id), bytes, None, None);
            b.claim(marker.clone(), Bytes::new(), Some(ttl));
            let ended = self.commit_end(&marker, b);
            self.inner.journals.lock().remove(&job.id);
            match ended? {
                End::Stored | End::AlreadyEnded => {
                    self.finish(job.id);
                    let settled = self.inner.settled_waits.lock().clone();
                    if let Some(result) = settled.and_then(|check| check(&wait)) {
                        // Decided before the park was stored: wake it now.
                        self.block(self.resume(job.id, &wait.key, result))?;
                    }
                    Ok(Ended::Stored)
                }
                End::Conflict => {
                    self.run_again(lease);
                    Ok(Ended::RunAgain)
                }
            }
        })();
        if result.is_err() {
            // Not stored: it runs again (its partition keeps it pending).
            self.run_again(lease);
        }
        self.inner.sched.done(lease.job.user.as_deref());
        result
    }

    async fn resume(&self, job_id: u64, key: &str, result: Value) -> Result<bool, QueueError> {
        let park = self.park_subject(job_id);
        let Some(m) = self
            .inner
            .cluster
            .last(&park)
            .await
            .map_err(StoreError::from)?
        else {
            return Ok(false);
        };
        let Ok(mut job) = serde_json::from_slice::<Job>(&m.payload) else {
            return Ok(false);
        };
        if job.waiting.as_ref().is_none_or(|w| w.key != key) {
            return Ok(false);
        }
        job.waiting = None;
        job.wakeups += 1;
        job.not_before_ms = self.inner.local.now_ms();
        let queued = Bytes::from(
            serde_json::to_vec(&QueuedJob {
                request: None,
                received_ms: job.created_ms,
                job: job.clone(),
            })
            .expect("JSON serialises"),
        );
        let mut journal = self.stored_journal(job_id).await?;
        journal.insert(key.to_owned(), result);
        let journal = Bytes::from(serde_json::to_vec(&journal).expect("JSON serialises"));
        let mut b = Batch::default();
        // Only if still parked as read: a run is woken once.
        b.put(park, Bytes::new(), Some(m.sequence), Some(GONE_TTL));
        b.put(self.journal_subject(job_id), journal, None, None);
        b.append(
            self.job_subject("job", &job),
            queued,
            Some(self.retention().events),
        );
        match self.inner.cluster.commit_retrying(RIDE_OUT, b).await {
            Ok(_) => Ok(true),
            // Woken by someone else meanwhile.
            Err(Failure::Conflict) => Ok(false),
            Err(e) => Err(unavailable(&e)),
        }
    }

    fn waiting_jobs(&self) -> Result<Vec<Job>, QueueError> {
        let parked = self.block(self.parked()).map_err(StoreError::from)?;
        Ok(parked.into_iter().map(|(job, _)| job).collect())
    }

    fn journal_get(&self, job: u64, key: &str) -> Result<Option<Value>, QueueError> {
        if let Some(j) = self.inner.journals.lock().get(&job) {
            return Ok(j.get(key).cloned());
        }
        Ok(self.journal_map(job)?.remove(key))
    }

    fn journal(&self, job: u64) -> Result<Vec<(String, Value)>, QueueError> {
        Ok(self.block(self.stored_journal(job))?.into_iter().collect())
    }

    fn journal_forget(&self, job: u64, key: &str) -> Result<(), QueueError> {
        let mut journal = self.block(self.stored_journal(job))?;
        if journal.remove(key).is_none() {
            return Ok(());
        }
        self.inner.journals.lock().remove(&job);
        let mut b = Batch::default();
        let bytes = serde_json::to_vec(&journal).expect("JSON serialises");
        b.put(self.journal_subject(job), Bytes::from(bytes), None, None);
        self.block(self.inner.cluster.commit_retrying(RIDE_OUT, b))
            .map(|_| ())
            .map_err(|e| unavailable(&e))
    }

    fn forget_journals(&self, jobs: &[u64]) -> Result<(), QueueError> {
        for &job in jobs {
            self.inner.journals.lock().remove(&job);
            let subject = self.journal_subject(job);
            self.block(
                self.inner
                    .cluster
                    .handle
                    .purge()
                    .filter(subject)
                    .into_future(),
            )
            .map_err(|e| unavailable(&e))?;
        }
        Ok(())
    }

    fn pinned_versions(&self) -> Result<HashSet<String>, QueueError> {
        Ok(self
            .waiting_jobs()?
            .into_iter()
            .filter_map(|j| j.pinned)
            .collect())
    }

    fn event(&self, seq: u64) -> Result<Option<StoredEvent>, QueueError> {
        let Some(m) = self
            .block(self.inner.cluster.at(seq))
            .map_err(StoreError::from)?
        else {
            return Ok(None);
        };
        Ok(decode_event(seq, &m.payload))
    }

    /// Stored under `P.rev.0`: kept with the log, dispatched to nobody.
    async fn append_event(&self, body: Map<String, Value>) -> Result<u64, QueueError> {
        let mut bytes = self.inner.local.now_ms().to_be_bytes().to_vec();
        serde_json::to_writer(&mut bytes, &body).expect("a JSON map always serialises");
        let bytes = Bytes::from(bytes);
        let subject = self.inner.cluster.subject("rev", "0");
        let ttl = self.retention().events;
        self.inner
            .cluster
            .commit_retrying(RIDE_OUT, {
                let mut b = Batch::default();
                b.append(subject.clone(), bytes.clone(), Some(ttl));
                b
            })
            .await
            .map_err(|e| unavailable(&e))
    }

    fn stats(&self) -> SchedulerStats {
        self.inner.sched.stats()
    }

    /// Nothing to do: events, markers and journals expire by their `Nats-TTL`.
    fn purge(&self, _cutoff_ms: i64) -> Result<usize, QueueError> {
        Ok(0)
    }

    fn shutdown(&self) {
        self.inner.sched.shutdown();
        self.inner.stop.cancel();
        let tasks = std::mem::take(&mut *self.inner.tasks.lock());
        // The owner task releases this node's partitions before it ends.
        let _ = self.block(async {
            tokio::time::timeout(
                Duration::from_secs(5),
                futures_util::future::join_all(tasks),
            )
            .await
        });
    }

    fn visit_events(
        &self,
        since_ms: i64,
        limit: usize,
        visit: &mut dyn FnMut(StoredEvent) -> bool,
    ) -> Result<(), QueueError> {
        let filter = self.inner.cluster.subject("ev", ">");
        for m in self.block(self.scan(filter, since_ms, limit))? {
            let seq = m.info().map_or(0, |i| i.stream_sequence);
            if let Some(e) = decode_event(seq, &m.payload)
                && !visit(e)
            {
                break;
            }
        }
        Ok(())
    }

    fn clock(&self) -> &SharedClock {
        self.inner.local.clock()
    }

    fn next_id(&self) -> Result<u64, QueueError> {
        Ok(self.inner.local.next_id()?)
    }

    /// Every write is acknowledged by the cluster before it returns.
    async fn sync(&self) -> Result<(), QueueError> {
        Ok(())
    }

    fn flush_soon(&self) {}

    fn size_on_disk(&self) -> u64 {
        self.block(self.inner.cluster.handle.get_info())
            .map_or(0, |i| i.state.bytes)
    }

    fn usage(&self) -> Result<Vec<crate::store::Usage>, QueueError> {
        let info = self
            .block(self.inner.cluster.handle.get_info())
            .map_err(|e| unavailable(&e))?;
        Ok(vec![crate::store::Usage {
            tree: format!("nats stream {}", self.inner.cluster.stream()),
            prefix: "*".into(),
            keys: info.state.messages,
            bytes: info.state.bytes,
        }])
    }
}

/// A webhook request stored with its job (`P.wh.N`).
fn request_of(seq: u64, payload: &[u8]) -> Option<StoredRequest> {
    let q: QueuedJob = serde_json::from_slice(payload).ok()?;
    let r = q.request?;
    Some(StoredRequest {
        seq,
        received_ms: q.received_ms,
        source: r.get("source")?.as_str()?.to_owned(),
        request: r.get("request")?.clone(),
    })
}
