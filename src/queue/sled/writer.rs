//! The writer thread: every write that decides what runs next, in rounds.
//!
//! A round drains the requests that queued up while the previous round was applied,
//! applies them as one sled batch, then hands the replies and the new or woken jobs
//! that wait for durability to the flusher: they go out only once the batch is on
//! disk (group commit). Rounds nobody waits on ask for no flush.
//! Because parking, waking and ingest are serialised here, a `wait_for` parked
//! before an event is accepted always sees it, and a run is never woken twice.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::thread;

use serde_json::Value;

use super::super::waits::WaitIndex;
use super::super::{
    Dispatch, IngestReceipt, Job, Lease, PreparedEvent, QueueError, RunWrites, Settle, StoredEvent,
    Trigger, WaitKind,
};
use super::layout::{
    META_DEDUP_GEN, META_DEDUP_ROTATED, decode_job, dedup_key, event_key, job_key, journal_key,
    journal_prefix, put_writes,
};
use super::{Inner, Reply, Settled, Staged};
use crate::store::{id_key, key_id};

/// Requests drained into one round at most.
const MAX_ROUND: usize = 512;

pub(super) enum WriteCmd {
    Ingest {
        events: Vec<PreparedEvent>,
        /// With the events no job needs, handed back to be freed by the caller:
        /// the writer thread, which every write waits on, does not spend time on it.
        reply: Reply<(IngestReceipt, Vec<PreparedEvent>)>,
    },
    Enqueue {
        jobs: Vec<Job>,
        /// Other keys of the queue tree written in the same batch (schedule state).
        extra: Vec<(Vec<u8>, Vec<u8>)>,
        reply: Reply<Vec<u64>>,
    },
    Park {
        job: Box<Job>,
        /// The run's uncommitted writes, committed with the park.
        writes: RunWrites,
        reply: Reply<()>,
    },
    /// A run's writes (and maybe its settle), staged by the caller.
    Commit {
        job: u64,
        writes: RunWrites,
        settle: Option<Settled>,
        staged: Staged,
        /// Answered once applied and durable.
        reply: Option<Reply<()>>,
    },
    Resume {
        job_id: u64,
        key: String,
        result: Value,
        reply: Reply<bool>,
    },
}

pub(super) fn start(
    inner: Arc<Inner>,
    rx: mpsc::Receiver<WriteCmd>,
    dispatch: Arc<dyn Dispatch>,
    parked: &[Job],
) -> thread::JoinHandle<()> {
    let mut waits = WaitIndex::default();
    for job in parked {
        if let Some(w) = &job.waiting
            && let WaitKind::Event { filter, since_seq } = &w.kind
        {
            waits.insert(job.id, w.key.clone(), filter.clone(), *since_seq);
        }
    }
    thread::Builder::new()
        .name("spur-writer".into())
        .spawn(move || {
            let mut w = Writer {
                inner: &inner,
                dispatch: dispatch.as_ref(),
                waits,
            };
            while let Ok(first) = rx.recv() {
                let mut cmds = vec![first];
                while cmds.len() < MAX_ROUND {
                    match rx.try_recv() {
                        Ok(c) => cmds.push(c),
                        Err(_) => break,
                    }
                }
                w.maybe_rotate_dedup();
                w.round(cmds);
            }
        })
        .expect("spawning the writer thread must succeed at start-up")
}

struct Writer<'a> {
    inner: &'a Arc<Inner>,
    dispatch: &'a dyn Dispatch,
    waits: WaitIndex,
}

/// A reply waiting for the round's fsync.
type Answer = Box<dyn FnOnce(Result<(), &QueueError>) + Send>;

/// What one round produced, answered after its fsync.
#[derive(Default)]
struct Round {
    batch: sled::Batch,
    leases: Vec<Lease>,
    /// Jobs written in this round (newer than the tree).
    jobs: HashMap<u64, Job>,
    /// Journal keys written in this round, by job (a finished run clears them).
    journal: HashMap<u64, Vec<Vec<u8>>>,
    /// Staged hand-offs to forget once the batch is applied.
    staged: Vec<Staged>,
    replies: Vec<Answer>,
}

impl Round {
    fn put_job(&mut self, job: Job) {
        let bytes = serde_json::to_vec(&job).expect("a Job always serialises");
        self.batch.insert(&job_key(job.id), bytes);
        self.jobs.insert(job.id, job);
    }

    fn answer<T: Send + 'static>(&mut self, reply: Reply<T>, value: T) {
        self.replies.push(Box::new(move |r| {
            reply(match r {
                Ok(()) => Ok(value),
                Err(e) => Err(QueueError::Write(e.to_string())),
            });
        }));
    }
}

impl Writer<'_> {
    fn maybe_rotate_dedup(&self) {
        let meta = self.inner.store.meta_tree();
        let rotated = meta
            .get(META_DEDUP_ROTATED)
            .ok()
            .flatten()
            .map_or(0, |v| key_id(&v) as i64);
        let now = self.inner.store.now_ms();
        if now - rotated < self.inner.dedup_window_ms.load(Ordering::Relaxed) {
            return;
        }
        let next = self.inner.dedup_gen.load(Ordering::Acquire) + 1;
        let ok = meta
            .insert(META_DEDUP_GEN, &u64::from(next).to_be_bytes())
            .and_then(|_| meta.insert(META_DEDUP_ROTATED, &now.to_be_bytes()));
        match ok {
            Ok(_) => self.inner.dedup_gen.store(next, Ordering::Release),
            Err(e) => tracing::error!(error = %e, "Rotating the dedup generation failed."),
        }
    }

    #[allow(
        clippy::too_many_lines,
        reason = "one round is the commit protocol, step by step: stage, dedup, dispatch, apply, reply"
    )]
    fn round(&mut self, cmds: Vec<WriteCmd>) {
        let mut round = Round::default();
        let mut failed: Option<QueueError> = None;
        // Index changes apply only if the batch commits.
        let mut parked_waits: Vec<Job> = Vec::new();
        let mut unparked: Vec<u64> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        for cmd in cmds {
            if let Some(e) = &failed {
                fail(self.inner, cmd, e);
                continue;
            }
            let r = match cmd {
                WriteCmd::Ingest { events, reply } => {
                    self.inner
                        .pending_events
                        .fetch_sub(events.len(), Ordering::AcqRel);
                    self.ingest(&mut round, &mut seen, &mut unparked, events, reply)
                }
                WriteCmd::Enqueue { jobs, extra, reply } => {
                    for (k, v) in extra {
                        round.batch.insert(k, v);
                    }
                    self.enqueue(&mut round, jobs, reply)
                }
                WriteCmd::Park { job, writes, reply } => {
                    self.park(&mut round, &mut parked_waits, *job, &writes, reply)
                }
                WriteCmd::Commit {
                    job,
                    writes,
                    settle,
                    staged,
                    reply,
                } => {
                    round.staged.push(staged);
                    let r = self.commit(&mut round, job, &writes, settle);
                    if let Some(reply) = reply {
                        match &r {
                            Ok(()) => round.answer(reply, ()),
                            Err(e) => reply(Err(QueueError::Write(e.to_string()))),
                        }
                    }
                    r
                }
                WriteCmd::Resume {
                    job_id,
                    key,
                    result,
                    reply,
                } => {
                    let woke = self.wake(&mut round, &mut unparked, job_id, &key, &result);
                    match woke {
                        Ok(w) => {
                            round.answer(reply, w);
                            Ok(())
                        }
                        Err(e) => {
                            reply(Err(QueueError::Write(e.to_string())));
                            Err(e)
                        }
                    }
                }
            };
            if let Err(e) = r {
                failed = Some(e);
            }
        }
        let applied = match failed {
            Some(e) => Err(e),
            None => self
                .inner
                .store
                .queue_tree()
                .apply_batch(round.batch)
                .map_err(QueueError::from),
        };
        // Applied (or failed, and then never will be): reads go to the tree again.
        for s in round.staged.drain(..) {
            self.inner.store.unstage(s.ticket, s.keys);
        }
        if let Err(e) = applied {
            tracing::error!(error = %e, "Writing to the queue failed.");
            for r in round.replies {
                r(Err(&e));
            }
            return;
        }
        for job in parked_waits {
            if let Some(w) = &job.waiting
                && let WaitKind::Event { filter, since_seq } = &w.kind
            {
                self.waits
                    .insert(job.id, w.key.clone(), filter.clone(), *since_seq);
            }
        }
        for id in unparked {
            self.waits.remove(id);
        }
        if round.leases.is_empty() && round.replies.is_empty() {
            // Only hand-offs nobody waits for (settles): the flusher's lazy flush
            // makes them durable; asking for a flush now would only slow the next
            // round down.
            return;
        }
        let inner = Arc::clone(self.inner);
        let leases = round.leases;
        let replies = round.replies;
        inner.store.clone().after_sync(Box::new(move |synced| {
            // Pushed even when the flush failed: the jobs are in the tree either way,
            // and holding them back would only strand them until a restart.
            inner.sched.push_all(leases);
            let err = synced.err().map(|e| QueueError::Write(e.to_string()));
            for r in replies {
                r(err.as_ref().map_or(Ok(()), Err));
            }
        }));
    }

    fn ingest(
        &mut self,
        round: &mut Round,
        seen: &mut HashSet<String>,
        unparked: &mut Vec<u64>,
        events: Vec<PreparedEvent>,
        reply: Reply<(IngestReceipt, Vec<PreparedEvent>)>,
    ) -> Result<(), QueueError> {
        let tree = self.inner.store.queue_tree();
        let generation = self.inner.dedup_gen.load(Ordering::Acquire);
        let now = self.inner.store.now_ms();
        let mut receipt = IngestReceipt::default();
        let mut unused = Vec::new();
        for (i, prepared) in events.into_iter().enumerate() {
            let id = prepared.event.message_id.as_str();
            if seen.contains(id) || is_duplicate(tree, generation, id)? {
                receipt.duplicates.push(i);
                unused.push(prepared);
                continue;
            }
            seen.insert(id.to_owned());
            let seq = self.inner.store.next_id()?;
            round
                .batch
                .insert(&event_key(seq), prepared.bytes.as_slice());
            round.batch.insert(dedup_key(generation, id), &id_key(seq));
            receipt.accepted += 1;
            for (job_id, key) in self.waits.matching(&prepared.event.body, seq) {
                if unparked.contains(&job_id) {
                    continue;
                }
                let result = Value::Object(prepared.event.body.clone());
                self.wake(round, unparked, job_id, &key, &result)?;
            }
            let targets = self.dispatch.targets(&prepared.event);
            if targets.is_empty() {
                unused.push(prepared);
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
                let trigger = Trigger::Event {
                    seq,
                    message_id: message_id.clone(),
                };
                let mut job = Job::new(trigger, t.script, t.handler, user.clone(), now);
                job.traceparent.clone_from(&prepared.traceparent);
                job.id = self.inner.store.next_id()?;
                job.created_ms = now;
                round.leases.push(Lease {
                    job: job.clone(),
                    event: Some(Arc::clone(&stored)),
                });
                round.put_job(job);
            }
        }
        round.answer(reply, (receipt, unused));
        Ok(())
    }

    /// A run's writes, and what becomes of its job.
    fn commit(
        &mut self,
        round: &mut Round,
        job: u64,
        writes: &RunWrites,
        settle: Option<Settled>,
    ) -> Result<(), QueueError> {
        let keep_journal = match settle.as_ref().map(|s| s.settle) {
            Some(Settle::Done { keep_journal }) => keep_journal,
            Some(Settle::Retry { .. }) | None => true,
        };
        let written = put_writes(&mut round.batch, job, writes, keep_journal)?;
        round.journal.entry(job).or_default().extend(written);
        let Some(s) = settle else { return Ok(()) };
        match s.settle {
            Settle::Done { keep_journal } => {
                round.batch.remove(&job_key(job));
                round.jobs.remove(&job);
                if !keep_journal && s.journal_on_disk {
                    let tree = self.inner.store.queue_tree();
                    for k in tree.scan_prefix(journal_prefix(job)).keys() {
                        round.batch.remove(k?);
                    }
                    for k in round.journal.remove(&job).unwrap_or_default() {
                        round.batch.remove(k);
                    }
                }
            }
            Settle::Retry { .. } => round.put_job(*s.job),
        }
        Ok(())
    }

    fn enqueue(
        &mut self,
        round: &mut Round,
        jobs: Vec<Job>,
        reply: Reply<Vec<u64>>,
    ) -> Result<(), QueueError> {
        let now = self.inner.store.now_ms();
        let mut ids = Vec::with_capacity(jobs.len());
        for mut job in jobs {
            if job.id == 0 {
                job.id = self.inner.store.next_id()?;
            }
            if job.created_ms == 0 {
                job.created_ms = now;
            }
            ids.push(job.id);
            round.leases.push(Lease {
                job: job.clone(),
                event: None,
            });
            round.put_job(job);
        }
        round.answer(reply, ids);
        Ok(())
    }

    fn park(
        &mut self,
        round: &mut Round,
        parked: &mut Vec<Job>,
        mut job: Job,
        writes: &RunWrites,
        reply: Reply<()>,
    ) -> Result<(), QueueError> {
        put_writes(&mut round.batch, job.id, writes, true)?;
        let check = self.inner.settled_waits.lock().clone();
        let settled = job
            .waiting
            .as_ref()
            .zip(check)
            .and_then(|(w, check)| check(w).map(|v| (w.key.clone(), v)));
        if let Some((key, result)) = settled {
            // Already over (decided between the request and this park): wake at once.
            round.batch.insert(
                journal_key(job.id, &key),
                serde_json::to_vec(&result).expect("a JSON value always serialises"),
            );
            job.waiting = None;
            job.wakeups += 1;
            job.not_before_ms = self.inner.store.now_ms();
            round.leases.push(Lease {
                job: job.clone(),
                event: None,
            });
            round.put_job(job);
            round.answer(reply, ());
            return Ok(());
        }
        if let Some(w) = job.waiting.as_mut()
            && let WaitKind::Event { since_seq, .. } = &mut w.kind
        {
            // Every event accepted from now on has a larger sequence number.
            *since_seq = self.inner.store.next_id()?;
        }
        parked.push(job.clone());
        round.put_job(job);
        round.answer(reply, ());
        Ok(())
    }

    /// Wakes `job_id` if it is parked on `key`: journals `result`, makes it ready.
    fn wake(
        &mut self,
        round: &mut Round,
        unparked: &mut Vec<u64>,
        job_id: u64,
        key: &str,
        result: &Value,
    ) -> Result<bool, QueueError> {
        let job = match round.jobs.get(&job_id) {
            Some(j) => Some(j.clone()),
            None => self
                .inner
                .store
                .queue_tree()
                .get(job_key(job_id))?
                .map(|v| decode_job(job_id, &v))
                .transpose()?,
        };
        let Some(mut job) = job else { return Ok(false) };
        if job.waiting.as_ref().is_none_or(|w| w.key != key) {
            return Ok(false);
        }
        round.batch.insert(
            journal_key(job_id, key),
            serde_json::to_vec(result).expect("a JSON value always serialises"),
        );
        job.waiting = None;
        job.wakeups += 1;
        job.not_before_ms = self.inner.store.now_ms();
        unparked.push(job_id);
        round.leases.push(Lease {
            job: job.clone(),
            event: None,
        });
        round.put_job(job);
        Ok(true)
    }
}

fn fail(inner: &Inner, cmd: WriteCmd, e: &QueueError) {
    let err = || QueueError::Write(e.to_string());
    match cmd {
        WriteCmd::Commit { staged, reply, .. } => {
            inner.store.unstage(staged.ticket, staged.keys);
            if let Some(reply) = reply {
                reply(Err(err()));
            }
        }
        WriteCmd::Ingest { reply, events } => {
            inner
                .pending_events
                .fetch_sub(events.len(), Ordering::AcqRel);
            reply(Err(err()));
        }
        WriteCmd::Enqueue { reply, .. } => reply(Err(err())),
        WriteCmd::Park { reply, .. } => reply(Err(err())),
        WriteCmd::Resume { reply, .. } => reply(Err(err())),
    }
}

fn is_duplicate(tree: &sled::Tree, generation: u32, id: &str) -> Result<bool, QueueError> {
    if tree.contains_key(dedup_key(generation, id))? {
        return Ok(true);
    }
    Ok(generation > 0 && tree.contains_key(dedup_key(generation - 1, id))?)
}
