//! The sled backend of the queue: one tree, so one batch commits an event, its
//! dedup entry and its jobs — or a wake-up's journal entry and the job's new state,
//! or a run's state changes with its journal entries and settle — atomically; a
//! crash keeps all of it or none.
//!
//! | key | value |
//! | --- | --- |
//! | `e` + seq (u64 BE) | received ms (i64 BE) + the event's JSON |
//! | `w` + seq (u64 BE) | received ms (i64 BE) + a webhook request `{source, request}` |
//! | `d` + generation (u32 BE) + messageId | seq |
//! | `j` + job id (u64 BE) | the [`Job`] as JSON (with its [`Wait`] while parked) |
//! | `r` + job id + effect key | the effect's journaled result (JSON) |
//! | `s` `c` + script + `\0` + handler key | a schedule's [`ScheduleState`] |
//! | `v` + namespace + `\0` + key | a state value (`state/sled.rs`) |
//!
//! Every write goes through one writer thread (`writer.rs`): accepting events
//! (dedup, dispatch to handlers, matching parked `wait_for`s), enqueueing, parking
//! and waking runs, and committing runs' writes and settles. It drains every request
//! that arrived while the previous round was being applied, applies one batch and,
//! when someone waits, asks for one shared fsync; answers go out and jobs reach the
//! scheduler only after it. Runs' hand-offs are staged (`Store::stage`) so reads see
//! them before the writer applied them. Dedup is kept for two generations of
//! `retention.dedup` (24 h by default) each, so a duplicate within that window is
//! always caught. The key builders and decoders are in `layout.rs`.

mod layout;
mod writer;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::mpsc;

use parking_lot::Mutex;
use serde_json::{Map, Value};

use super::scheduler::Scheduler;
use super::{
    Dispatch, Ended, IngestReceipt, Job, JobQueue, Lease, PreparedEvent, Queue, QueueError,
    RunWrites, ScheduleState, SchedulerStats, Settle, SettledCheck, StoredEvent, StoredRequest,
    Trigger,
};
use crate::clock::SharedClock;
use crate::store::{Store, StoreError, key_id};
pub use layout::events_since;
use layout::{
    DEDUP, DEFAULT_DEDUP_WINDOW_MS, EVENT, META_DEDUP_GEN, META_DEDUP_ROTATED, REQUEST, SCHEDULE,
    all_jobs, decode_event, decode_request, event_key, job_key, journal_key, journal_prefix,
    log_key, purge_log, schedule_key, visit_log,
};
pub(crate) use layout::{requests_since, visit_events_since};
use writer::WriteCmd;

/// Writes handed to the writer under a ticket (see `Store::stage`).
pub(crate) struct Staged {
    ticket: u64,
    keys: Vec<Vec<u8>>,
}

/// What becomes of a job whose run's writes are committed.
pub(crate) struct Settled {
    /// The job as it is to be stored (a retry's next attempt).
    job: Box<Job>,
    settle: Settle,
    journal_on_disk: bool,
}

/// The sled queue; cheap to clone.
#[derive(Clone)]
pub struct SledQueue {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    sched: Scheduler,
    tx: Mutex<Option<mpsc::Sender<WriteCmd>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    dedup_gen: AtomicU32,
    /// The length of a dedup generation; two are kept.
    dedup_window_ms: std::sync::atomic::AtomicI64,
    settled_waits: Mutex<Option<SettledCheck>>,
    /// Events handed to the writer and not yet taken by it, and their limit: the
    /// writer's queue is bounded, so overload costs a 503, not memory.
    pending_events: AtomicUsize,
    max_pending_events: AtomicUsize,
}

type Reply<T> = Box<dyn FnOnce(Result<T, QueueError>) + Send>;

impl SledQueue {
    /// Opens the queue on `store`, reloading every pending job (parked runs stay
    /// parked, their `wait_for`s re-indexed).
    ///
    /// # Errors
    /// When the store cannot be read or a stored job is corrupt.
    pub fn open(store: Store, dispatch: Arc<dyn Dispatch>) -> Result<Queue, QueueError> {
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
            meta.insert(META_DEDUP_ROTATED, &store.now_ms().to_be_bytes())
                .map_err(StoreError::from)?;
        }
        let (tx, rx) = mpsc::channel();
        let inner = Arc::new(Inner {
            sched: Scheduler::new(Arc::clone(store.clock())),
            store,
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(None),
            dedup_gen: AtomicU32::new(generation),
            dedup_window_ms: std::sync::atomic::AtomicI64::new(DEFAULT_DEDUP_WINDOW_MS),
            settled_waits: Mutex::new(None),
            pending_events: AtomicUsize::new(0),
            max_pending_events: AtomicUsize::new(crate::config::DEFAULT_MAX_PENDING_EVENTS),
        });
        let mut ready = Vec::new();
        let mut parked = Vec::new();
        for job in all_jobs(inner.store.queue_tree())? {
            if job.waiting.is_some() {
                parked.push(job);
            } else {
                ready.push(Lease { job, event: None });
            }
        }
        if !ready.is_empty() || !parked.is_empty() {
            tracing::info!(
                ready = ready.len(),
                parked = parked.len(),
                "Recovered pending jobs."
            );
        }
        inner.sched.push_all(ready);
        let handle = writer::start(Arc::clone(&inner), rx, dispatch, &parked);
        *inner.writer.lock() = Some(handle);
        Ok(Arc::new(Self { inner }))
    }

    fn send(&self, cmd: WriteCmd) -> Result<(), QueueError> {
        let guard = self.inner.tx.lock();
        let tx = guard.as_ref().ok_or(QueueError::Closed)?;
        tx.send(cmd).map_err(|_| QueueError::Closed)
    }

    fn blocking<T: Send + 'static>(
        &self,
        cmd: impl FnOnce(Reply<T>) -> WriteCmd,
    ) -> Result<T, QueueError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(cmd(Box::new(move |r| {
            let _ = tx.send(r);
        })))?;
        rx.recv().map_err(|_| QueueError::Closed)?
    }

    /// Stages the keys `writes` will write, so reads see them until the writer has
    /// applied them.
    fn stage(&self, job: u64, writes: &RunWrites, journal: bool) -> Result<Staged, QueueError> {
        let mut keys = Vec::with_capacity(writes.state.len() + writes.journal.len());
        for w in &writes.state {
            let key = crate::state::sled_key(&w.ns, &w.key)
                .map_err(|e| QueueError::Write(e.to_string()))?;
            keys.push((key, w.value.as_ref().map(crate::state::sled_value)));
        }
        if journal {
            for (k, v) in &writes.journal {
                let bytes = serde_json::to_vec(v).expect("a JSON value always serialises");
                keys.push((journal_key(job, k), Some(bytes)));
            }
        }
        let names = keys.iter().map(|(k, _)| k.clone()).collect();
        let ticket = self.inner.store.stage(keys);
        Ok(Staged {
            ticket,
            keys: names,
        })
    }

    /// Forgets `job`'s journal.
    fn clear_journal(&self, job: u64) -> Result<(), sled::Error> {
        let tree = self.inner.store.queue_tree();
        let mut batch = sled::Batch::default();
        for k in tree.scan_prefix(journal_prefix(job)).keys() {
            batch.remove(k?);
        }
        tree.apply_batch(batch)
    }
}

#[async_trait::async_trait]
impl JobQueue for SledQueue {
    async fn ingest(&self, events: Vec<PreparedEvent>) -> Result<IngestReceipt, QueueError> {
        let n = events.len();
        let limit = self.inner.max_pending_events.load(Ordering::Relaxed);
        let before = self.inner.pending_events.fetch_add(n, Ordering::AcqRel);
        if before + n > limit && before > 0 {
            self.inner.pending_events.fetch_sub(n, Ordering::AcqRel);
            return Err(QueueError::Overloaded {
                pending: before,
                limit,
            });
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sent = self.send(WriteCmd::Ingest {
            events,
            reply: Box::new(move |r| {
                let _ = tx.send(r);
            }),
        });
        if sent.is_err() {
            self.inner.pending_events.fetch_sub(n, Ordering::AcqRel);
        }
        sent?;
        let (receipt, unused) = rx.await.map_err(|_| QueueError::Closed)??;
        drop(unused);
        Ok(receipt)
    }

    async fn accept_request(
        &self,
        source: &str,
        request: Value,
        mut job: Job,
    ) -> Result<u64, QueueError> {
        let seq = self.next_id()?;
        let mut bytes = self.clock().now_ms().to_be_bytes().to_vec();
        serde_json::to_writer(
            &mut bytes,
            &serde_json::json!({"source": source, "request": request}),
        )
        .expect("a JSON value always serialises");
        job.trigger = Trigger::Webhook {
            source: source.to_owned(),
            seq,
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(WriteCmd::Enqueue {
            jobs: vec![job],
            extra: vec![(log_key(REQUEST, seq).to_vec(), bytes)],
            reply: Box::new(move |r| {
                let _ = tx.send(r);
            }),
        })?;
        rx.await.map_err(|_| QueueError::Closed)??;
        Ok(seq)
    }

    fn request(&self, seq: u64) -> Result<Option<StoredRequest>, QueueError> {
        let tree = self.inner.store.queue_tree();
        let Some(v) = tree.get(log_key(REQUEST, seq)).map_err(StoreError::from)? else {
            return Ok(None);
        };
        decode_request(seq, &v).map(Some)
    }

    fn visit_requests(
        &self,
        since_ms: i64,
        limit: usize,
        visit: &mut dyn FnMut(StoredRequest) -> bool,
    ) -> Result<(), QueueError> {
        visit_log(
            self.inner.store.queue_tree(),
            REQUEST,
            since_ms,
            limit,
            &mut |seq, v| Ok(visit(decode_request(seq, v)?)),
        )
    }

    async fn enqueue(&self, jobs: Vec<Job>) -> Result<Vec<u64>, QueueError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(WriteCmd::Enqueue {
            jobs,
            extra: Vec::new(),
            reply: Box::new(move |r| {
                let _ = tx.send(r);
            }),
        })?;
        rx.await.map_err(|_| QueueError::Closed)?
    }

    async fn tick(
        &self,
        script: &str,
        handler: &str,
        job: Option<Job>,
        state: &ScheduleState,
    ) -> Result<(), QueueError> {
        let extra = vec![(
            schedule_key(script, handler),
            serde_json::to_vec(state).expect("a schedule state serialises"),
        )];
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(WriteCmd::Enqueue {
            jobs: job.into_iter().collect(),
            extra,
            reply: Box::new(move |r| {
                let _ = tx.send(r);
            }),
        })?;
        rx.await.map_err(|_| QueueError::Closed)?.map(|_| ())
    }

    fn schedule_states(
        &self,
    ) -> Result<std::collections::HashMap<(String, String), ScheduleState>, QueueError> {
        let mut out = std::collections::HashMap::new();
        for item in self.inner.store.queue_tree().scan_prefix(SCHEDULE) {
            let (k, v) = item?;
            let rest = String::from_utf8_lossy(&k[SCHEDULE.len()..]).into_owned();
            let Some((script, handler)) = rest.split_once('\0') else {
                continue;
            };
            if let Ok(state) = serde_json::from_slice(&v) {
                out.insert((script.to_owned(), handler.to_owned()), state);
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
        self.inner.store.queue_tree().insert(
            schedule_key(script, handler),
            serde_json::to_vec(state).expect("a schedule state serialises"),
        )?;
        Ok(())
    }

    fn remove_schedule_state(&self, script: &str, handler: &str) -> Result<(), QueueError> {
        self.inner
            .store
            .queue_tree()
            .remove(schedule_key(script, handler))?;
        Ok(())
    }

    fn set_max_pending_events(&self, n: usize) {
        self.inner
            .max_pending_events
            .store(n.max(1), Ordering::Relaxed);
    }

    fn set_dedup_window(&self, window: std::time::Duration) {
        self.inner
            .dedup_window_ms
            .store(crate::duration::as_ms(window).max(1), Ordering::Relaxed);
    }

    fn set_settled_check(&self, check: SettledCheck) {
        *self.inner.settled_waits.lock() = Some(check);
    }

    fn lease(&self) -> Option<Lease> {
        self.inner.sched.lease()
    }

    fn settle(
        &self,
        lease: &Lease,
        settle: Settle,
        writes: RunWrites,
        journal_on_disk: bool,
    ) -> Result<Ended, QueueError> {
        let mut job = lease.job.clone();
        if let Settle::Retry { at_ms } = settle {
            job.attempt += 1;
            job.not_before_ms = at_ms;
        }
        let keep_journal = match settle {
            Settle::Done { keep_journal } => keep_journal,
            Settle::Retry { .. } => true,
        };
        if matches!(settle, Settle::Done { .. })
            && writes.state.is_empty()
            && !journal_on_disk
            && (writes.journal.is_empty() || !keep_journal)
        {
            // Nothing but the job to remove, and nothing of the run handed over
            // before (that would have journaled): one key, no batch, no writer.
            let removed = self.inner.store.queue_tree().remove(job_key(job.id));
            self.inner.sched.done(lease.job.user.as_deref());
            return removed.map(|_| Ended::Stored).map_err(QueueError::from);
        }
        let staged = self.stage(job.id, &writes, keep_journal)?;
        let (ticket, keys) = (staged.ticket, staged.keys.clone());
        let sent = self.send(WriteCmd::Commit {
            job: job.id,
            writes,
            settle: Some(Settled {
                job: Box::new(job.clone()),
                settle,
                journal_on_disk,
            }),
            staged,
            reply: None,
        });
        match (settle, &sent) {
            (Settle::Retry { .. }, Ok(())) => self.inner.sched.push_all([Lease {
                job,
                event: lease.event.clone(),
            }]),
            (_, Err(_)) => self.inner.store.unstage(ticket, keys),
            _ => {}
        }
        self.inner.sched.done(lease.job.user.as_deref());
        sent.map(|()| Ended::Stored)
    }

    fn commit(&self, job: u64, writes: RunWrites, durable: bool) -> Result<(), QueueError> {
        if writes.is_empty() && !durable {
            return Ok(());
        }
        let staged = self.stage(job, &writes, true)?;
        let (ticket, keys) = (staged.ticket, staged.keys.clone());
        let done = if durable {
            self.blocking(|reply| WriteCmd::Commit {
                job,
                writes,
                settle: None,
                staged,
                reply: Some(reply),
            })
        } else {
            self.send(WriteCmd::Commit {
                job,
                writes,
                settle: None,
                staged,
                reply: None,
            })
        };
        if matches!(done, Err(QueueError::Closed)) {
            // Never reached the writer: nothing will apply (and unstage) them.
            self.inner.store.unstage(ticket, keys);
        }
        done
    }

    fn park(&self, lease: &Lease, job: Job, writes: RunWrites) -> Result<Ended, QueueError> {
        debug_assert!(job.waiting.is_some(), "parking needs a wait");
        let result = self.blocking(|reply| WriteCmd::Park {
            job: Box::new(job),
            writes,
            reply,
        });
        self.inner.sched.done(lease.job.user.as_deref());
        result.map(|()| Ended::Stored)
    }

    async fn resume(&self, job_id: u64, key: &str, result: Value) -> Result<bool, QueueError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(WriteCmd::Resume {
            job_id,
            key: key.to_owned(),
            result,
            reply: Box::new(move |r| {
                let _ = tx.send(r);
            }),
        })?;
        rx.await.map_err(|_| QueueError::Closed)?
    }

    fn waiting_jobs(&self) -> Result<Vec<Job>, QueueError> {
        Ok(all_jobs(self.inner.store.queue_tree())?
            .into_iter()
            .filter(|j| j.waiting.is_some())
            .collect())
    }

    fn journal_get(&self, job: u64, key: &str) -> Result<Option<Value>, QueueError> {
        let key = journal_key(job, key);
        let bytes = match self.inner.store.staged(&key) {
            Some(staged) => staged,
            None => self.inner.store.queue_tree().get(key)?.map(|v| v.to_vec()),
        };
        Ok(bytes.and_then(|v| serde_json::from_slice(&v).ok()))
    }

    fn journal(&self, job: u64) -> Result<Vec<(String, Value)>, QueueError> {
        let tree = self.inner.store.queue_tree();
        let prefix = journal_prefix(job);
        let mut out = Vec::new();
        for item in tree.scan_prefix(prefix) {
            let (k, v) = item?;
            let key = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            out.push((key, serde_json::from_slice(&v).unwrap_or(Value::Null)));
        }
        Ok(out)
    }

    fn journal_forget(&self, job: u64, key: &str) -> Result<(), QueueError> {
        self.inner
            .store
            .queue_tree()
            .remove(journal_key(job, key))?;
        Ok(())
    }

    fn forget_journals(&self, jobs: &[u64]) -> Result<(), QueueError> {
        for &job in jobs {
            self.clear_journal(job)?;
        }
        Ok(())
    }

    fn pinned_versions(&self) -> Result<std::collections::HashSet<String>, QueueError> {
        let mut out = std::collections::HashSet::new();
        for job in all_jobs(self.inner.store.queue_tree())? {
            let pin = match job.pinned {
                Some(p) => Some(p),
                None => self
                    .journal_get(job.id, crate::queue::PIN_KEY)?
                    .and_then(|v| v.as_str().map(str::to_owned)),
            };
            out.extend(pin);
        }
        Ok(out)
    }

    fn event(&self, seq: u64) -> Result<Option<StoredEvent>, QueueError> {
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

    async fn append_event(&self, body: Map<String, Value>) -> Result<u64, QueueError> {
        let store = &self.inner.store;
        let seq = store.next_id()?;
        let mut bytes = store.now_ms().to_be_bytes().to_vec();
        serde_json::to_writer(&mut bytes, &body).expect("a JSON map always serialises");
        store
            .queue_tree()
            .insert(event_key(seq), bytes)
            .map_err(StoreError::from)?;
        store.sync().await?;
        Ok(seq)
    }

    fn stats(&self) -> SchedulerStats {
        self.inner.sched.stats()
    }

    fn purge(&self, cutoff_ms: i64) -> Result<usize, QueueError> {
        let tree = self.inner.store.queue_tree();
        let (mut min_event, mut min_request) = (u64::MAX, u64::MAX);
        for job in all_jobs(tree)? {
            match job.trigger {
                Trigger::Event { seq, .. } => min_event = min_event.min(seq),
                Trigger::Webhook { seq, .. } => min_request = min_request.min(seq),
                Trigger::Schedule { .. } | Trigger::Tool { .. } | Trigger::Approval { .. } => {}
            }
        }
        let removed = purge_log(tree, EVENT, cutoff_ms, min_event)?
            + purge_log(tree, REQUEST, cutoff_ms, min_request)?;
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

    fn shutdown(&self) {
        self.inner.tx.lock().take();
        self.inner.sched.shutdown();
        let writer = self.inner.writer.lock().take();
        if let Some(w) = writer {
            let _ = w.join();
        }
    }

    fn visit_events(
        &self,
        since_ms: i64,
        limit: usize,
        visit: &mut dyn FnMut(StoredEvent) -> bool,
    ) -> Result<(), QueueError> {
        visit_events_since(&self.inner.store, since_ms, limit, visit)
    }

    fn clock(&self) -> &SharedClock {
        self.inner.store.clock()
    }

    fn next_id(&self) -> Result<u64, QueueError> {
        Ok(self.inner.store.next_id()?)
    }

    async fn sync(&self) -> Result<(), QueueError> {
        Ok(self.inner.store.sync().await?)
    }

    fn flush_soon(&self) {
        self.inner.store.flush_soon();
    }

    fn size_on_disk(&self) -> u64 {
        self.inner.store.size_on_disk()
    }

    fn usage(&self) -> Result<Vec<crate::store::Usage>, QueueError> {
        Ok(self.inner.store.usage()?)
    }
}
