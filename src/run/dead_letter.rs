//! Dead letters: jobs that failed permanently or ran out of attempts, with their
//! event, so they can be inspected and replayed even after the event log moved on.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::queue::Job;
use crate::store::purge_before;
use crate::store::{Store, StoreError, id_key, key_id};

/// A job that will not run again unless replayed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The job's id.
    pub id: u64,
    pub job: Job,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<Map<String, Value>>,
    pub reason: String,
    /// The run record of the last attempt.
    pub run_id: u64,
    pub attempts: u32,
    pub dead_at: String,
}

/// Where dead letters are kept (a backend's part of the storage seam).
pub trait DeadLetterStore: Send + Sync + 'static {
    /// # Errors
    /// On store failure.
    fn insert(&self, dl: &DeadLetter) -> Result<(), StoreError>;

    /// Newest first.
    ///
    /// # Errors
    /// On store failure.
    fn list(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError>;

    /// Removes and returns one (for replay).
    ///
    /// # Errors
    /// On store failure.
    fn take(&self, id: u64) -> Result<Option<DeadLetter>, StoreError>;

    /// Puts one back (a replay that could not be queued).
    ///
    /// # Errors
    /// On store failure.
    fn restore(&self, dl: &DeadLetter) -> Result<(), StoreError> {
        self.insert(dl)
    }

    /// Dead letters kept (counted, so `/metrics` does not scan).
    fn len(&self) -> usize;

    /// Removes dead letters older than `cutoff_ms`; returns their ids, so their
    /// journals can go too.
    ///
    /// # Errors
    /// On store failure.
    fn purge(&self, cutoff_ms: i64) -> Result<Vec<u64>, StoreError>;
}

/// The dead letters a daemon holds; cheap to clone.
pub(crate) type DeadLetters = Arc<dyn DeadLetterStore>;

/// Dead letters on sled: tree `dead_letters`, key job id, value dead ms (i64 BE)
/// + JSON.
pub(crate) struct SledDeadLetters {
    tree: sled::Tree,
    store: Store,
    count: AtomicUsize,
}

impl SledDeadLetters {
    pub(crate) fn open(store: &Store) -> DeadLetters {
        let tree = store.dead_tree().clone();
        Arc::new(Self {
            count: AtomicUsize::new(tree.len()),
            tree,
            store: store.clone(),
        })
    }
}

impl DeadLetterStore for SledDeadLetters {
    fn insert(&self, dl: &DeadLetter) -> Result<(), StoreError> {
        let mut value = self.store.now_ms().to_be_bytes().to_vec();
        serde_json::to_writer(&mut value, dl).expect("a dead letter always serialises");
        if self.tree.insert(id_key(dl.id), value)?.is_none() {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn list(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        self.tree
            .iter()
            .rev()
            .take(limit)
            .map(|item| {
                let (k, v) = item?;
                decode(&k, &v)
            })
            .collect()
    }

    fn take(&self, id: u64) -> Result<Option<DeadLetter>, StoreError> {
        let removed = self.tree.remove(id_key(id))?;
        if removed.is_some() {
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
        removed.map(|v| decode(&id_key(id), &v)).transpose()
    }

    fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    fn purge(&self, cutoff_ms: i64) -> Result<Vec<u64>, StoreError> {
        let ids = purge_before(&self.tree, cutoff_ms)?;
        self.count.fetch_sub(ids.len(), Ordering::Relaxed);
        Ok(ids)
    }
}

fn decode(k: &[u8], v: &[u8]) -> Result<DeadLetter, StoreError> {
    serde_json::from_slice(v.get(8..).unwrap_or_default()).map_err(|e| StoreError::Corrupt {
        key: format!("dead letter {}", key_id(k)),
        reason: e.to_string(),
    })
}
