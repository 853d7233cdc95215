//! The durable job queue: the event log, `messageId` dedup, jobs, and the run order.
//!
//! Layout (one sled tree, so a single batch commits an event, its dedup entry and
//! its jobs atomically; a crash keeps all of them or none):
//!
//! | key | value |
//! | --- | --- |
//! | `e` + seq (u64 BE) | received ms (i64 BE) + the event's JSON |
//! | `d` + generation (u32 BE) + messageId | seq |
//! | `j` + job id (u64 BE) | the [`Job`] as JSON |
//!
//! Accepting events goes through one writer thread: it drains every request that
//! arrived while the previous round was being flushed, checks dedup, matches each
//! new event against the handler table ([`Dispatch`]), applies one batch, then asks
//! for one shared fsync; only after it do the HTTP answers go out and the new jobs
//! reach the scheduler. Dedup is kept for two generations of 24 h each, so a
//! duplicate within 24 h is always caught.
//!
//! Backends: this sled queue is the only one today; a NATS `JetStream` backend for
//! scale-out (DESIGN.md §8) would sit beside it behind a trait extracted then.

mod job;
mod scheduler;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread;

use parking_lot::Mutex;
use serde_json::{Map, Value};

pub use job::{Job, Lease, StoredEvent, Target, Trigger};
pub use scheduler::SchedulerStats;

use crate::event::Event;
use crate::store::{Store, StoreError, id_key, key_id, now_ms};
use scheduler::Scheduler;

const EVENT: u8 = b'e';
const DEDUP: u8 = b'd';
const JOB: u8 = b'j';
const META_DEDUP_GEN: &[u8] = b"dedup_generation";
const META_DEDUP_ROTATED: &[u8] = b"dedup_rotated_ms";
const DEDUP_GENERATION_MS: i64 = 24 * 3600 * 1000;
/// Requests drained into one writer round at most.
const MAX_ROUND: usize = 512;

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
}

impl From<sled::Error> for QueueError {
    fn from(e: sled::Error) -> Self {
        Self::Store(e.into())
    }
}

/// Matches an event against the live handler table.
pub trait Dispatch: Send + Sync + 'static {
    /// The handlers `event` must run on, in registration order.
    fn targets(&self, event: &Event) -> Vec<Target>;
}

/// An event serialised for storage (done on the request's thread, not the writer's).
pub struct PreparedEvent {
    pub event: Event,
    received_ms: i64,
    bytes: Vec<u8>,
}

impl PreparedEvent {
    pub fn new(event: Event, received_ms: i64) -> Self {
        let mut bytes = Vec::with_capacity(512);
        bytes.extend_from_slice(&received_ms.to_be_bytes());
        serde_json::to_writer(&mut bytes, &event.body)
            .expect("serialising a JSON map into a Vec cannot fail");
        Self {
            event,
            received_ms,
            bytes,
        }
    }

    /// Serialised size of the event's JSON.
    pub fn json_len(&self) -> usize {
        self.bytes.len() - 8
    }
}

/// What happened to each event of an ingest call.
#[derive(Debug, Default, Clone)]
pub struct IngestReceipt {
    pub accepted: usize,
    /// Indexes (into the call's events) already seen within the dedup window.
    pub duplicates: Vec<usize>,
}

/// How a leased job ends.
#[derive(Debug, Clone, Copy)]
pub enum Settle {
    /// Finished (ok, skipped, failed or dead): the job is removed.
    Done,
    /// Run again at `at_ms`, counting one more attempt.
    Retry { at_ms: i64 },
}

enum WriteCmd {
    Ingest {
        events: Vec<PreparedEvent>,
        reply: tokio::sync::oneshot::Sender<Result<IngestReceipt, QueueError>>,
    },
    Enqueue {
        jobs: Vec<Job>,
        reply: Box<dyn FnOnce(Result<Vec<u64>, QueueError>) + Send>,
    },
}

/// The queue; cheap to clone.
#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    sched: Scheduler,
    tx: Mutex<Option<mpsc::Sender<WriteCmd>>>,
    dedup_gen: AtomicU32,
}

impl Queue {
    /// Opens the queue on `store`, reloading every pending job.
    ///
    /// # Errors
    /// When the store cannot be read or a stored job is corrupt.
    pub fn open(store: Store, dispatch: Arc<dyn Dispatch>) -> Result<Self, QueueError> {
        let meta = store.meta_tree();
        let generation = meta
            .get(META_DEDUP_GEN)
            .map_err(StoreError::from)?
            .map_or(0, |v| key_id(&v) as u32);
        if meta
            .get(META_DEDUP_ROTATED)
            .map_err(StoreError::from)?
            .is_none()
        {
            meta.insert(META_DEDUP_ROTATED, &now_ms().to_be_bytes())
                .map_err(StoreError::from)?;
        }
        let (tx, rx) = mpsc::channel();
        let inner = Arc::new(Inner {
            store,
            sched: Scheduler::default(),
            tx: Mutex::new(Some(tx)),
            dedup_gen: AtomicU32::new(generation),
        });
        let mut pending = Vec::new();
        for item in inner.store.queue_tree().scan_prefix([JOB]) {
            let (key, value) = item.map_err(StoreError::from)?;
            let job: Job = serde_json::from_slice(&value).map_err(|e| QueueError::Corrupt {
                id: key_id(&key),
                reason: e.to_string(),
            })?;
            pending.push(Lease { job, event: None });
        }
        if !pending.is_empty() {
            tracing::info!(jobs = pending.len(), "Recovered pending jobs.");
        }
        inner.sched.push_all(pending);
        let writer = Arc::clone(&inner);
        thread::Builder::new()
            .name("spur-writer".into())
            .spawn(move || writer_loop(&writer, &rx, dispatch.as_ref()))
            .expect("spawning the writer thread must succeed at start-up");
        Ok(Self { inner })
    }

    /// Stores `events` durably (deduplicated by `messageId`) and queues their jobs.
    /// Returns once everything accepted is on disk.
    ///
    /// # Errors
    /// When the store fails or the queue is shut down.
    pub async fn ingest(&self, events: Vec<PreparedEvent>) -> Result<IngestReceipt, QueueError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.send(WriteCmd::Ingest { events, reply })?;
        rx.await.map_err(|_| QueueError::Closed)?
    }

    /// Stores `jobs` durably (ids are assigned) and queues them.
    ///
    /// # Errors
    /// When the store fails or the queue is shut down.
    pub async fn enqueue(&self, jobs: Vec<Job>) -> Result<Vec<u64>, QueueError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(WriteCmd::Enqueue {
            jobs,
            reply: Box::new(move |r| {
                let _ = tx.send(r);
            }),
        })?;
        rx.await.map_err(|_| QueueError::Closed)?
    }

    /// [`Queue::enqueue`] for blocking threads.
    ///
    /// # Errors
    /// When the store fails or the queue is shut down.
    pub fn enqueue_blocking(&self, jobs: Vec<Job>) -> Result<Vec<u64>, QueueError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(WriteCmd::Enqueue {
            jobs,
            reply: Box::new(move |r| {
                let _ = tx.send(r);
            }),
        })?;
        rx.recv().map_err(|_| QueueError::Closed)?
    }

    fn send(&self, cmd: WriteCmd) -> Result<(), QueueError> {
        let guard = self.inner.tx.lock();
        let tx = guard.as_ref().ok_or(QueueError::Closed)?;
        tx.send(cmd).map_err(|_| QueueError::Closed)
    }

    /// Blocks until a job may run; `None` once the queue is shut down.
    pub fn lease(&self) -> Option<Lease> {
        self.inner.sched.lease()
    }

    /// Ends a leased job's execution and frees its user's line.
    ///
    /// # Errors
    /// When the store fails; the user's line is released regardless.
    pub fn settle(&self, lease: &Lease, settle: Settle) -> Result<(), QueueError> {
        let tree = self.inner.store.queue_tree();
        let key = job_key(lease.job.id);
        let result = match settle {
            Settle::Done => tree.remove(key).map(|_| ()),
            Settle::Retry { at_ms } => {
                let mut job = lease.job.clone();
                job.attempt += 1;
                job.not_before_ms = at_ms;
                let bytes = serde_json::to_vec(&job).expect("a Job always serialises");
                let r = tree.insert(key, bytes).map(|_| ());
                self.inner.sched.push_all([Lease {
                    job,
                    event: lease.event.clone(),
                }]);
                r
            }
        };
        self.inner.sched.done(lease.job.user.as_deref());
        result.map_err(|e| QueueError::Store(e.into()))
    }

    /// An event of the log, if still retained.
    ///
    /// # Errors
    /// When the store fails or the record is corrupt.
    pub fn event(&self, seq: u64) -> Result<Option<StoredEvent>, QueueError> {
        let Some(v) = self
            .inner
            .store
            .queue_tree()
            .get(event_key(seq))
            .map_err(StoreError::from)?
        else {
            return Ok(None);
        };
        decode_event(seq, &v).map(Some)
    }

    /// Appends an event to the log without dedup (a replay of a purged event);
    /// returns its new sequence number once durable.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn append_event(&self, body: Map<String, Value>) -> Result<u64, QueueError> {
        let store = &self.inner.store;
        let seq = store.next_id()?;
        let mut bytes = now_ms().to_be_bytes().to_vec();
        serde_json::to_writer(&mut bytes, &body).expect("a JSON map always serialises");
        store
            .queue_tree()
            .insert(event_key(seq), bytes)
            .map_err(StoreError::from)?;
        store.sync().await?;
        Ok(seq)
    }

    /// Events received at or after `since_ms`, oldest first.
    ///
    /// # Errors
    /// When the store fails or a record is corrupt.
    pub fn events_since(&self, since_ms: i64) -> Result<Vec<StoredEvent>, QueueError> {
        let mut out = Vec::new();
        for item in self.inner.store.queue_tree().scan_prefix([EVENT]).rev() {
            let (k, v) = item.map_err(StoreError::from)?;
            let ev = decode_event(key_id(&k), &v)?;
            if ev.received_ms < since_ms {
                break;
            }
            out.push(ev);
        }
        out.reverse();
        Ok(out)
    }

    /// Scheduler counts.
    pub fn stats(&self) -> SchedulerStats {
        self.inner.sched.stats()
    }

    /// Pending jobs as stored (for the admin API).
    ///
    /// # Errors
    /// When the store fails.
    pub fn pending_jobs(&self) -> Result<usize, QueueError> {
        Ok(self.inner.store.queue_tree().scan_prefix([JOB]).count())
    }

    /// Deletes events older than `cutoff_ms` that no pending job needs, and dedup
    /// generations past the window. Returns the number of events removed.
    ///
    /// # Errors
    /// When the store fails.
    pub fn purge(&self, cutoff_ms: i64) -> Result<usize, QueueError> {
        let tree = self.inner.store.queue_tree();
        let mut min_live = u64::MAX;
        for item in tree.scan_prefix([JOB]) {
            let (_, v) = item.map_err(StoreError::from)?;
            if let Ok(job) = serde_json::from_slice::<Job>(&v)
                && let Trigger::Event { seq, .. } = job.trigger
            {
                min_live = min_live.min(seq);
            }
        }
        let mut removed = 0;
        let mut batch = sled::Batch::default();
        for item in tree.scan_prefix([EVENT]) {
            let (k, v) = item.map_err(StoreError::from)?;
            let received = v.get(..8).map_or(0, key_id) as i64;
            if received >= cutoff_ms || key_id(&k) >= min_live {
                break;
            }
            batch.remove(k);
            removed += 1;
            if removed % 1000 == 0 {
                tree.apply_batch(std::mem::take(&mut batch))
                    .map_err(StoreError::from)?;
            }
        }
        tree.apply_batch(batch).map_err(StoreError::from)?;
        let current = self.inner.dedup_gen.load(Ordering::Acquire);
        if current >= 2 {
            for generation in 0..current - 1 {
                let mut prefix = vec![DEDUP];
                prefix.extend_from_slice(&generation.to_be_bytes());
                for item in tree.scan_prefix(&prefix).keys() {
                    tree.remove(item.map_err(StoreError::from)?)
                        .map_err(StoreError::from)?;
                }
            }
        }
        Ok(removed)
    }

    /// Stops leasing (workers see `None`) and stops the writer after its queue.
    pub fn shutdown(&self) {
        self.inner.tx.lock().take();
        self.inner.sched.shutdown();
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }
}

fn event_key(seq: u64) -> [u8; 9] {
    let mut k = [EVENT; 9];
    k[1..].copy_from_slice(&id_key(seq));
    k
}

fn job_key(id: u64) -> [u8; 9] {
    let mut k = [JOB; 9];
    k[1..].copy_from_slice(&id_key(id));
    k
}

fn dedup_key(generation: u32, message_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(5 + message_id.len());
    k.push(DEDUP);
    k.extend_from_slice(&generation.to_be_bytes());
    k.extend_from_slice(message_id.as_bytes());
    k
}

fn decode_event(seq: u64, v: &[u8]) -> Result<StoredEvent, QueueError> {
    let corrupt = |reason: String| {
        QueueError::Store(StoreError::Corrupt {
            key: format!("event {seq}"),
            reason,
        })
    };
    if v.len() < 8 {
        return Err(corrupt("too short".into()));
    }
    let received_ms = key_id(&v[..8]) as i64;
    let body: Map<String, Value> =
        serde_json::from_slice(&v[8..]).map_err(|e| corrupt(e.to_string()))?;
    Ok(StoredEvent {
        seq,
        received_ms,
        body,
    })
}

fn writer_loop(inner: &Arc<Inner>, rx: &mpsc::Receiver<WriteCmd>, dispatch: &dyn Dispatch) {
    while let Ok(first) = rx.recv() {
        let mut cmds = vec![first];
        while cmds.len() < MAX_ROUND {
            match rx.try_recv() {
                Ok(c) => cmds.push(c),
                Err(_) => break,
            }
        }
        maybe_rotate_dedup(inner);
        round(inner, cmds, dispatch);
    }
}

fn maybe_rotate_dedup(inner: &Inner) {
    let meta = inner.store.meta_tree();
    let rotated = meta
        .get(META_DEDUP_ROTATED)
        .ok()
        .flatten()
        .map_or(0, |v| key_id(&v) as i64);
    let now = now_ms();
    if now - rotated < DEDUP_GENERATION_MS {
        return;
    }
    let next = inner.dedup_gen.load(Ordering::Acquire) + 1;
    let ok = meta
        .insert(META_DEDUP_GEN, &u64::from(next).to_be_bytes())
        .and_then(|_| meta.insert(META_DEDUP_ROTATED, &now.to_be_bytes()));
    match ok {
        Ok(_) => inner.dedup_gen.store(next, Ordering::Release),
        Err(e) => tracing::error!(error = %e, "Rotating the dedup generation failed."),
    }
}

type IngestReply = tokio::sync::oneshot::Sender<Result<IngestReceipt, QueueError>>;
type EnqueueReply = Box<dyn FnOnce(Result<Vec<u64>, QueueError>) + Send>;

fn round(inner: &Arc<Inner>, cmds: Vec<WriteCmd>, dispatch: &dyn Dispatch) {
    let tree = inner.store.queue_tree();
    let generation = inner.dedup_gen.load(Ordering::Acquire);
    let mut batch = sled::Batch::default();
    let mut seen: HashSet<String> = HashSet::new();
    let mut leases: Vec<Lease> = Vec::new();
    let mut ingest_replies: Vec<(IngestReply, IngestReceipt)> = Vec::new();
    let mut enqueue_replies: Vec<(EnqueueReply, Vec<u64>)> = Vec::new();
    let now = now_ms();

    let result: Result<(), QueueError> = (|| {
        for cmd in cmds {
            match cmd {
                WriteCmd::Ingest { events, reply } => {
                    let mut receipt = IngestReceipt::default();
                    for (i, prepared) in events.into_iter().enumerate() {
                        let id = prepared.event.message_id.as_str();
                        if seen.contains(id) || is_duplicate(tree, generation, id)? {
                            receipt.duplicates.push(i);
                            continue;
                        }
                        seen.insert(id.to_owned());
                        let seq = inner.store.next_id()?;
                        batch.insert(&event_key(seq), prepared.bytes.as_slice());
                        batch.insert(dedup_key(generation, id), &id_key(seq));
                        receipt.accepted += 1;
                        let targets = dispatch.targets(&prepared.event);
                        if targets.is_empty() {
                            continue;
                        }
                        let user = prepared.event.user_key().map(str::to_owned);
                        let message_id = prepared.event.message_id.clone();
                        let stored = Arc::new(StoredEvent {
                            seq,
                            received_ms: prepared.received_ms,
                            body: prepared.event.body,
                        });
                        for t in targets {
                            let job = Job {
                                id: inner.store.next_id()?,
                                trigger: Trigger::Event {
                                    seq,
                                    message_id: message_id.clone(),
                                },
                                script: t.script,
                                handler: t.handler,
                                user: user.clone(),
                                attempt: 0,
                                not_before_ms: now,
                                created_ms: now,
                            };
                            let bytes = serde_json::to_vec(&job).expect("a Job always serialises");
                            batch.insert(&job_key(job.id), bytes);
                            leases.push(Lease {
                                job,
                                event: Some(Arc::clone(&stored)),
                            });
                        }
                    }
                    ingest_replies.push((reply, receipt));
                }
                WriteCmd::Enqueue { jobs, reply } => {
                    let mut ids = Vec::with_capacity(jobs.len());
                    for mut job in jobs {
                        job.id = inner.store.next_id()?;
                        if job.created_ms == 0 {
                            job.created_ms = now;
                        }
                        let bytes = serde_json::to_vec(&job).expect("a Job always serialises");
                        batch.insert(&job_key(job.id), bytes);
                        ids.push(job.id);
                        leases.push(Lease { job, event: None });
                    }
                    enqueue_replies.push((reply, ids));
                }
            }
        }
        tree.apply_batch(batch)?;
        Ok(())
    })();

    if let Err(e) = result {
        tracing::error!(error = %e, "Writing to the queue failed.");
        let msg = e.to_string();
        for (reply, _) in ingest_replies {
            let _ = reply.send(Err(QueueError::Write(msg.clone())));
        }
        for (reply, _) in enqueue_replies {
            reply(Err(QueueError::Write(msg.clone())));
        }
        return;
    }

    let inner = Arc::clone(inner);
    inner.store.clone().after_sync(Box::new(move |synced| {
        // Pushed even when the flush failed: the jobs are in the tree either way,
        // and holding them back would only strand them until a restart.
        inner.sched.push_all(leases);
        for (reply, receipt) in ingest_replies {
            let _ = reply.send(match &synced {
                Ok(()) => Ok(receipt),
                Err(e) => Err(QueueError::Write(e.to_string())),
            });
        }
        for (reply, ids) in enqueue_replies {
            reply(match &synced {
                Ok(()) => Ok(ids),
                Err(e) => Err(QueueError::Write(e.to_string())),
            });
        }
    }));
}

fn is_duplicate(tree: &sled::Tree, generation: u32, id: &str) -> Result<bool, QueueError> {
    if tree
        .contains_key(dedup_key(generation, id))
        .map_err(StoreError::from)?
    {
        return Ok(true);
    }
    if generation > 0
        && tree
            .contains_key(dedup_key(generation - 1, id))
            .map_err(StoreError::from)?
    {
        return Ok(true);
    }
    Ok(false)
}
