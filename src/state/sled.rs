//! State on sled, in the queue tree (so a run's state changes, its journal and its
//! settle commit in one sled batch): key `v` + namespace + `\0` + key, value
//! `{"v": <json>, "exp": <ms>?}`. Entries of the `state` tree of older versions are
//! moved here when the store opens.

use serde_json::Value;

use super::{Change, KeyLocks, StateEntry, StateError, StateOp, StateStore, StateValue, lock_name};
use crate::store::{Store, StoreError};

/// Prefix of state keys in the queue tree.
const PREFIX: u8 = b'v';

/// The sled state store; cheap to clone.
#[derive(Clone)]
pub struct SledState {
    store: Store,
    locks: std::sync::Arc<KeyLocks>,
}

impl From<sled::Error> for StateError {
    fn from(e: sled::Error) -> Self {
        Self::Store(e.into())
    }
}

/// The queue-tree key of a state key.
pub(crate) fn tree_key(ns: &str, key: &str) -> Result<Vec<u8>, StateError> {
    let name = lock_name(ns, key)?;
    let mut k = Vec::with_capacity(1 + name.len());
    k.push(PREFIX);
    k.extend_from_slice(&name);
    Ok(k)
}

/// A state value as stored.
pub(crate) fn encode(value: &StateValue) -> Vec<u8> {
    serde_json::to_vec(value).expect("a state value always serialises")
}

fn decode(bytes: &[u8]) -> Option<StateValue> {
    serde_json::from_slice(bytes).ok()
}

impl SledState {
    /// The state of `store`, moving entries of an older layout into place.
    ///
    /// # Errors
    /// When the store cannot be read or written.
    pub fn open(store: &Store) -> Result<Self, StoreError> {
        let old = store.state_tree();
        if !old.is_empty() {
            let mut batch = sled::Batch::default();
            let mut n = 0;
            for item in old {
                let (k, v) = item?;
                let mut key = vec![PREFIX];
                key.extend_from_slice(&k);
                batch.insert(key, v);
                n += 1;
            }
            store.queue_tree().apply_batch(batch)?;
            old.clear()?;
            tracing::info!(keys = n, "Moved state into the queue tree.");
        }
        Ok(Self {
            store: store.clone(),
            locks: std::sync::Arc::default(),
        })
    }

    fn tree(&self) -> &sled::Tree {
        self.store.queue_tree()
    }
}

impl StateStore for SledState {
    fn read(&self, ns: &str, key: &str) -> Result<Option<StateValue>, StateError> {
        let k = tree_key(ns, key)?;
        // A change a run handed over wins over the tree until it is applied.
        let bytes = match self.store.staged(&k) {
            Some(staged) => staged,
            None => self.tree().get(k)?.map(|v| v.to_vec()),
        };
        Ok(bytes
            .and_then(|b| decode(&b))
            .and_then(|e| e.live(self.store.now_ms())))
    }

    fn entries(&self, ns: &str, prefix: &str, limit: usize) -> Result<Vec<StateEntry>, StateError> {
        let mut scan = vec![PREFIX];
        scan.extend_from_slice(ns.as_bytes());
        scan.push(0);
        let skip = scan.len();
        scan.extend_from_slice(prefix.as_bytes());
        let now = self.store.now_ms();
        let mut staged: std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>> =
            self.store.staged_with_prefix(&scan).into_iter().collect();
        let mut found = std::collections::BTreeMap::new();
        for item in self.tree().scan_prefix(&scan) {
            if found.len() >= limit && staged.is_empty() {
                break;
            }
            let (k, v) = item?;
            let bytes = staged
                .remove(k.as_ref())
                .unwrap_or_else(|| Some(v.to_vec()));
            found.insert(k.to_vec(), bytes);
        }
        found.extend(staged);
        let mut out = Vec::new();
        for (k, v) in found {
            if out.len() >= limit {
                break;
            }
            let Some(e) = v.and_then(|b| decode(&b)).and_then(|e| e.live(now)) else {
                continue;
            };
            let key = String::from_utf8_lossy(&k[skip..]).into_owned();
            out.push(StateEntry::new(key, e));
        }
        Ok(out)
    }

    /// Writes the tree directly: for stores without a writer thread (local runs).
    /// The daemon's admin API changes state through a run transaction instead
    /// (`RunTx::direct`), so its change is ordered with the runs' hand-offs.
    fn apply_now(&self, ns: &str, key: &str, op: &StateOp) -> Result<Value, StateError> {
        let k = tree_key(ns, key)?;
        let name = lock_name(ns, key)?;
        let owner = self.locks.one_off_owner();
        self.locks.lock(&name, owner);
        let result = (|| {
            let live = self
                .tree()
                .get(&k)?
                .and_then(|b| decode(&b))
                .and_then(|e| e.live(self.store.now_ms()));
            let (change, result) = op.apply(key, live.as_ref(), self.store.now_ms())?;
            match change {
                Change::Keep => {}
                Change::Put(v) => {
                    self.tree().insert(&k, encode(&v))?;
                }
                Change::Remove => {
                    self.tree().remove(&k)?;
                }
            }
            Ok(result)
        })();
        self.locks.unlock(&[name], owner);
        result
    }

    fn purge_expired(&self) -> Result<usize, StateError> {
        let now = self.store.now_ms();
        let mut n = 0;
        for item in self.tree().scan_prefix([PREFIX]) {
            let (k, v) = item?;
            if let Some(StateValue { exp: Some(exp), .. }) = decode(&v)
                && exp <= now
            {
                // Only if unchanged since read, so a fresh set is never lost.
                if self
                    .tree()
                    .compare_and_swap(&k, Some(v), None::<&[u8]>)?
                    .is_ok()
                {
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    fn locks(&self) -> &KeyLocks {
        &self.locks
    }

    fn now_ms(&self) -> i64 {
        self.store.now_ms()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn store() -> SledState {
        SledState::open(&Store::temporary().unwrap()).unwrap()
    }

    fn set(s: &SledState, ns: &str, key: &str, value: Value, ttl_ms: Option<i64>) {
        s.apply_now(ns, key, &StateOp::Set { value, ttl_ms })
            .unwrap();
    }

    #[test]
    fn namespaces_are_separate() {
        let s = store();
        set(&s, "a", "k", json!(1), None);
        assert_eq!(s.get("b", "k").unwrap(), None);
        assert_eq!(s.get("a", "k").unwrap(), Some(json!(1)));
    }

    #[test]
    fn expired_keys_are_never_returned_and_get_purged() {
        let s = store();
        set(&s, "a", "gone", json!("x"), Some(0));
        set(&s, "a", "kept", json!("y"), Some(60_000));
        assert_eq!(s.get("a", "gone").unwrap(), None);
        assert_eq!(s.keys("a", "").unwrap(), vec!["kept".to_owned()]);
        assert_eq!(s.purge_expired().unwrap(), 1);
    }

    #[test]
    fn incr_keeps_integers_and_rejects_non_numbers() {
        let s = store();
        let incr = |by: i64| s.apply_now("a", "n", &StateOp::Incr(by.into()));
        assert_eq!(incr(1).unwrap(), json!(1));
        assert_eq!(incr(5).unwrap(), json!(6));
        set(&s, "a", "s", json!("text"), None);
        let err = s.apply_now("a", "s", &StateOp::Incr(1.into())).unwrap_err();
        assert!(
            err.to_string().contains("\"s\" holds the string \"text\""),
            "{err}"
        );
    }

    #[test]
    fn cas_swaps_only_on_match() {
        let s = store();
        let cas = |old: Option<Value>, new: Option<Value>| {
            s.apply_now("a", "k", &StateOp::Cas { old, new }).unwrap()
        };
        assert_eq!(cas(None, Some(json!(1))), json!(true));
        assert_eq!(cas(None, Some(json!(2))), json!(false));
        assert_eq!(cas(Some(json!(1.0)), Some(json!(2))), json!(true));
        assert_eq!(s.get("a", "k").unwrap(), Some(json!(2)));
    }

    #[test]
    fn concurrent_increments_lose_nothing() {
        let s = store();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for _ in 0..500 {
                        s.apply_now("a", "n", &StateOp::Incr(1.into())).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(s.get("a", "n").unwrap(), Some(json!(4000)));
    }

    #[test]
    fn a_key_held_by_one_owner_waits_for_its_release() {
        let locks = std::sync::Arc::new(KeyLocks::default());
        assert!(locks.try_lock(b"k", 1));
        assert!(locks.try_lock(b"k", 1), "re-entrant for its owner");
        assert!(!locks.try_lock(b"k", 2));
        let l = std::sync::Arc::clone(&locks);
        let waiter = std::thread::spawn(move || {
            l.lock(b"k", 2);
            l.unlock(&[b"k".to_vec()], 2);
        });
        locks.unlock(&[b"k".to_vec()], 1);
        waiter.join().unwrap();
        assert!(locks.try_lock(b"k", 3));
    }
}
