//! Dead letters: jobs that failed permanently or ran out of attempts, with their
//! event, so they can be inspected and replayed even after the event log moved on.
//! Layout: tree `dead_letters`, key job id, value `dead ms (i64 BE) + JSON`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::record::purge_before;
use crate::queue::Job;
use crate::store::{Store, StoreError, id_key, key_id, now_ms};

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

/// The dead-letter store; cheap to clone.
#[derive(Clone)]
pub struct DeadLetters {
    tree: sled::Tree,
}

impl DeadLetters {
    pub fn new(store: &Store) -> Self {
        Self {
            tree: store.dead_tree().clone(),
        }
    }

    /// # Errors
    /// On store failure.
    pub fn insert(&self, dl: &DeadLetter) -> Result<(), StoreError> {
        let mut value = now_ms().to_be_bytes().to_vec();
        serde_json::to_writer(&mut value, dl).expect("a dead letter always serialises");
        self.tree.insert(id_key(dl.id), value)?;
        Ok(())
    }

    /// Newest first.
    ///
    /// # Errors
    /// On store failure.
    pub fn list(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
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

    /// Removes and returns one (for replay).
    ///
    /// # Errors
    /// On store failure.
    pub fn take(&self, id: u64) -> Result<Option<DeadLetter>, StoreError> {
        self.tree
            .remove(id_key(id))?
            .map(|v| decode(&id_key(id), &v))
            .transpose()
    }

    /// Puts one back (a replay that could not be queued).
    ///
    /// # Errors
    /// On store failure.
    pub fn restore(&self, dl: &DeadLetter) -> Result<(), StoreError> {
        self.insert(dl)
    }

    pub fn len(&self) -> usize {
        self.tree.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    /// # Errors
    /// On store failure.
    pub fn purge(&self, cutoff_ms: i64) -> Result<usize, StoreError> {
        purge_before(&self.tree, cutoff_ms)
    }
}

fn decode(k: &[u8], v: &[u8]) -> Result<DeadLetter, StoreError> {
    serde_json::from_slice(v.get(8..).unwrap_or_default()).map_err(|e| StoreError::Corrupt {
        key: format!("dead letter {}", key_id(k)),
        reason: e.to_string(),
    })
}
