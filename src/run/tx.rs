//! A run's transaction: what one execution of a daemon run writes (state changes,
//! journal entries, recorded values) is kept here, not applied as it happens.
//!
//! - Reads see the run's own writes first.
//! - Changing a state key takes the key's lock (`state::KeyLocks`) until the change
//!   is committed, so concurrent runs never lose an update. A run that finds a key
//!   taken commits what it has (freeing its own keys) before it waits.
//! - Output-commit rule: before anything leaves the process on the run's behalf (an
//!   HTTP call, a notification), [`RunTx::before_output`] commits the writes and
//!   waits until they are durable — through the shared flusher, with everyone else
//!   who waits at that moment. After an outbound effect, [`RunTx::after_effect`]
//!   commits its journal entry and asks for a flush without waiting.
//! - Otherwise everything is committed in one batch with the job's settle (or
//!   park), and a run with only local effects costs no flush of its own.

use std::sync::Arc;

use serde_json::Value;

use crate::queue::{Queue, QueueError, RunWrites};
use crate::state::{Change, StateError, StateOp, StateStore, StateValue};

/// Errors of a run's transaction.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TxError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    State(#[from] StateError),
}

/// One execution's uncommitted writes.
pub(crate) struct RunTx {
    job: u64,
    queue: Queue,
    state: Arc<dyn StateStore>,
    pending: RunWrites,
    /// State keys this run holds the lock of.
    locked: Vec<Vec<u8>>,
    /// Journal entries reached the store in this execution (to clear when done).
    wrote_journal: bool,
    /// Writes were committed since the last time they were known durable.
    unsynced: bool,
    /// Journal state changes (a run), or not (a change from outside any run).
    journaled: bool,
    /// The job had no journal in the store when this execution started (its
    /// first execution, dispatched by this process): until this execution commits
    /// journal entries, a journal lookup needs no read.
    fresh: bool,
}

impl RunTx {
    pub(crate) fn new(job: u64, queue: Queue, state: Arc<dyn StateStore>) -> Self {
        Self {
            job,
            queue,
            state,
            pending: RunWrites::default(),
            locked: Vec::new(),
            wrote_journal: false,
            unsynced: false,
            journaled: true,
            fresh: false,
        }
    }

    /// A transaction for the first execution of a job that has no journal yet.
    pub(crate) fn fresh(job: u64, queue: Queue, state: Arc<dyn StateStore>) -> Self {
        let mut tx = Self::new(job, queue, state);
        tx.fresh = true;
        tx
    }

    /// A transaction outside any run (the admin API): its state changes are ordered
    /// with the runs' (same locks, same writer) and journal nothing.
    pub(crate) fn direct(queue: Queue, state: Arc<dyn StateStore>) -> Self {
        let owner = state.locks().one_off_owner();
        let mut tx = Self::new(owner, queue, state);
        tx.journaled = false;
        tx
    }

    /// The journaled result of `key`: this execution's, else the stored one.
    ///
    /// # Errors
    /// When the store fails.
    pub(crate) fn journal_get(&self, key: &str) -> Result<Option<Value>, TxError> {
        if let Some(v) = self.pending.journal_of(key) {
            return Ok(Some(v.clone()));
        }
        if self.fresh && !self.wrote_journal {
            return Ok(None);
        }
        Ok(self.queue.journal_get(self.job, key)?)
    }

    /// Journals `value` under `key` (committed with the run's other writes).
    pub(crate) fn journal_put(&mut self, key: &str, value: Value) {
        self.pending.put_journal(key, value);
    }

    /// The live value of a state key as this run sees it.
    ///
    /// # Errors
    /// On an invalid key or store failure.
    pub(crate) fn state_read(&self, ns: &str, key: &str) -> Result<Option<StateValue>, TxError> {
        match self.pending.state_of(ns, key) {
            Some(own) => Ok(own.cloned().and_then(|v| v.live(self.state.now_ms()))),
            None => Ok(self.state.read(ns, key)?),
        }
    }

    /// Live keys of `ns` starting with `prefix`, as this run sees them.
    ///
    /// # Errors
    /// On store failure.
    pub(crate) fn state_keys(&self, ns: &str, prefix: &str) -> Result<Vec<String>, TxError> {
        let mut keys: std::collections::BTreeSet<String> =
            self.state.keys(ns, prefix)?.into_iter().collect();
        let now = self.state.now_ms();
        for w in self
            .pending
            .state
            .iter()
            .filter(|w| w.ns == ns && w.key.starts_with(prefix))
        {
            if w.value.clone().and_then(|v| v.live(now)).is_some() {
                keys.insert(w.key.clone());
            } else {
                keys.remove(&w.key);
            }
        }
        Ok(keys.into_iter().collect())
    }

    /// Applies `op` to a state key within the run, journaling its result under
    /// `journal_key` in the same transaction; returns the result.
    ///
    /// # Errors
    /// When the op fails (e.g. `incr` of a string) or the store does.
    pub(crate) fn state_apply(
        &mut self,
        ns: &str,
        key: &str,
        op: &StateOp,
        journal_key: &str,
    ) -> Result<Value, TxError> {
        let name = self.state.lock_name(ns, key)?;
        let locks = self.state.locks();
        if !locks.try_lock(&name, self.job) {
            // Never wait holding locks: commit (and free) ours first.
            self.commit()?;
            self.state.locks().lock(&name, self.job);
        }
        if !self.locked.contains(&name) {
            self.locked.push(name);
        }
        // A `set` does not depend on what it replaces.
        let (live, expect) = match (op, self.pending.state_of(ns, key)) {
            (StateOp::Set { .. }, _) => (None, None),
            (_, Some(own)) => (own.cloned().and_then(|v| v.live(self.state.now_ms())), None),
            (_, None) => {
                let (v, version) = self.state.read_versioned(ns, key)?;
                (v, Some(version))
            }
        };
        let (change, result) = op.apply(key, live.as_ref(), self.state.now_ms())?;
        match change {
            Change::Keep => {}
            Change::Put(v) => self.pending.put_state(ns, key, Some(v), expect),
            Change::Remove => self.pending.put_state(ns, key, None, expect),
        }
        if self.journaled {
            self.pending.put_journal(journal_key, result.clone());
        }
        Ok(result)
    }

    /// Hands the pending writes to the writer (one atomic batch; visible to every
    /// read at once) and frees the run's keys.
    ///
    /// # Errors
    /// When the store fails.
    pub(crate) fn commit(&mut self) -> Result<(), TxError> {
        self.hand_off(false)
    }

    /// [`RunTx::commit`]; with `durable`, waits until everything the run handed
    /// over is applied and on disk.
    fn hand_off(&mut self, durable: bool) -> Result<(), TxError> {
        if !self.pending.is_empty() || durable {
            let writes = std::mem::take(&mut self.pending);
            let wrote_journal = !writes.journal.is_empty();
            self.queue.commit(self.job, writes, durable)?;
            self.wrote_journal |= wrote_journal;
            self.unsynced = !durable;
        }
        self.release();
        Ok(())
    }

    /// The output-commit rule: everything written so far is durable when this
    /// returns. Blocking (waits for the writer and the shared flusher, never
    /// flushes itself); free when nothing was written since the last time.
    ///
    /// # Errors
    /// When the store fails.
    pub(crate) fn before_output(&mut self) -> Result<(), TxError> {
        let durable = !self.pending.is_empty() || self.unsynced;
        self.hand_off(durable)
    }

    /// Something of the run was written to the store outside this transaction (an
    /// approval request): the next output waits until it is durable too.
    pub(crate) fn note_written(&mut self) {
        self.unsynced = true;
    }

    /// After an outbound effect: commits its journal entry and asks for a flush
    /// without waiting (the next output, or the end of the run, does not wait for
    /// it either unless it has to).
    ///
    /// # Errors
    /// When the store fails.
    pub(crate) fn after_effect(&mut self) -> Result<(), TxError> {
        self.commit()?;
        self.queue.flush_soon();
        Ok(())
    }

    /// The writes not committed yet, to commit with the settle or park, and whether
    /// an earlier commit of this execution wrote journal entries.
    pub(crate) fn take(&mut self) -> (RunWrites, bool) {
        (std::mem::take(&mut self.pending), self.wrote_journal)
    }

    /// Frees the run's state keys (after its last writes were committed).
    pub(crate) fn release(&mut self) {
        let held = std::mem::take(&mut self.locked);
        self.state.locks().unlock(&held, self.job);
    }
}

impl Drop for RunTx {
    fn drop(&mut self) {
        // A run that ends without committing (a panic) must not keep keys locked.
        self.release();
    }
}
