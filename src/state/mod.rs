//! Durable key-value state for scripts: namespaced per script (plus one shared
//! namespace), values any JSON, optional TTLs, atomic `incr` and `cas`.
//!
//! Layout: tree `state`, key `namespace \0 key`, value `{"v": <json>, "exp": <ms>?}`.
//! Expired entries are never returned; [`StateStore::purge_expired`] removes them in
//! the background. `incr` and `cas` are atomic under concurrency (sled's
//! compare-and-swap), so concurrent runs never lose an update.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::store::{Store, StoreError, now_ms};

/// The namespace `state::shared::…` uses.
pub const SHARED: &str = "@shared";

/// Errors of state operations; messages name the key.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("state key {key:?} holds {found}, not a number")]
    NotANumber { key: String, found: String },
    #[error("state key {key:?} is invalid: {reason}")]
    InvalidKey { key: String, reason: &'static str },
}

impl From<sled::Error> for StateError {
    fn from(e: sled::Error) -> Self {
        Self::Store(e.into())
    }
}

#[derive(Serialize, Deserialize)]
struct Entry {
    v: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exp: Option<i64>,
}

impl Entry {
    fn live(self, now: i64) -> Option<Self> {
        match self.exp {
            Some(exp) if exp <= now => None,
            _ => Some(self),
        }
    }
}

/// One entry, for inspection.
#[derive(Debug, Clone, Serialize)]
pub struct StateEntry {
    pub key: String,
    pub value: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// The state store; cheap to clone.
#[derive(Clone)]
pub struct StateStore {
    tree: sled::Tree,
}

const MAX_KEY_BYTES: usize = 1024;

fn full_key(ns: &str, key: &str) -> Result<Vec<u8>, StateError> {
    if key.is_empty() {
        return Err(StateError::InvalidKey {
            key: key.into(),
            reason: "empty",
        });
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(StateError::InvalidKey {
            key: key.chars().take(40).collect(),
            reason: "longer than 1024 bytes",
        });
    }
    let mut k = Vec::with_capacity(ns.len() + 1 + key.len());
    k.extend_from_slice(ns.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    Ok(k)
}

fn decode(bytes: &[u8]) -> Option<Entry> {
    serde_json::from_slice(bytes).ok()
}

fn encode(entry: &Entry) -> Vec<u8> {
    serde_json::to_vec(entry).expect("a state entry always serialises")
}

fn expiry(ttl: Option<Duration>) -> Option<i64> {
    ttl.map(|t| now_ms().saturating_add(crate::duration::as_ms(t)))
}

fn type_of(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(_) => "a boolean".into(),
        Value::Number(_) => "a number".into(),
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "a map".into(),
    }
}

impl StateStore {
    /// Opens the state tree of `store`.
    ///
    /// # Errors
    /// On sled failure.
    pub fn new(store: &Store) -> Self {
        Self {
            tree: store.state_tree().clone(),
        }
    }

    /// The live stored entry of `key`.
    fn live(&self, ns: &str, key: &str) -> Result<Option<Entry>, StateError> {
        let k = full_key(ns, key)?;
        Ok(self
            .tree
            .get(k)?
            .and_then(|b| decode(&b))
            .and_then(|e| e.live(now_ms())))
    }

    /// The live value of `key`.
    ///
    /// # Errors
    /// On an invalid key or store failure.
    pub fn get(&self, ns: &str, key: &str) -> Result<Option<Value>, StateError> {
        Ok(self.live(ns, key)?.map(|e| e.v))
    }

    /// The live entry of `key`, with its expiry.
    ///
    /// # Errors
    /// On an invalid key or store failure.
    pub fn get_entry(&self, ns: &str, key: &str) -> Result<Option<StateEntry>, StateError> {
        Ok(self.live(ns, key)?.map(|e| StateEntry {
            key: key.to_owned(),
            value: e.v,
            expires_at: e.exp.and_then(|ms| {
                chrono::DateTime::from_timestamp_millis(ms).map(crate::event::format_time)
            }),
        }))
    }

    /// Sets `key`, with an optional time to live.
    ///
    /// # Errors
    /// On an invalid key or store failure.
    pub fn set(
        &self,
        ns: &str,
        key: &str,
        value: Value,
        ttl: Option<Duration>,
    ) -> Result<(), StateError> {
        let k = full_key(ns, key)?;
        self.tree.insert(
            k,
            encode(&Entry {
                v: value,
                exp: expiry(ttl),
            }),
        )?;
        Ok(())
    }

    /// Deletes `key`; whether it existed (and was live).
    ///
    /// # Errors
    /// On an invalid key or store failure.
    pub fn del(&self, ns: &str, key: &str) -> Result<bool, StateError> {
        let k = full_key(ns, key)?;
        Ok(self
            .tree
            .remove(k)?
            .and_then(|b| decode(&b))
            .and_then(|e| e.live(now_ms()))
            .is_some())
    }

    /// Adds `by` to the number at `key` (absent counts as 0) atomically; returns the
    /// new value. Integers stay integers; a TTL already set is kept.
    ///
    /// # Errors
    /// When the key holds something other than a number, or on store failure.
    pub fn incr(&self, ns: &str, key: &str, by: &serde_json::Number) -> Result<Value, StateError> {
        let k = full_key(ns, key)?;
        loop {
            let current = self.tree.get(&k)?;
            let now = now_ms();
            let live = current
                .as_deref()
                .and_then(decode)
                .and_then(|e| e.live(now));
            let (base, exp) = match &live {
                None => (Value::from(0), None),
                Some(Entry {
                    v: v @ Value::Number(_),
                    exp,
                }) => (v.clone(), *exp),
                Some(Entry { v, .. }) => {
                    return Err(StateError::NotANumber {
                        key: key.into(),
                        found: type_of(v),
                    });
                }
            };
            let next = add(&base, by);
            let bytes = encode(&Entry {
                v: next.clone(),
                exp,
            });
            // Lost a race with another writer: read again and retry.
            if self
                .tree
                .compare_and_swap(&k, current, Some(bytes))?
                .is_ok()
            {
                return Ok(next);
            }
        }
    }

    /// Sets `key` to `new` only if its live value equals `old` (`None`: absent).
    /// `new` of `None` deletes. Returns whether it swapped.
    ///
    /// # Errors
    /// On an invalid key or store failure.
    pub fn cas(
        &self,
        ns: &str,
        key: &str,
        old: Option<&Value>,
        new: Option<Value>,
        ttl: Option<Duration>,
    ) -> Result<bool, StateError> {
        let k = full_key(ns, key)?;
        loop {
            let current = self.tree.get(&k)?;
            let live = current
                .as_deref()
                .and_then(decode)
                .and_then(|e| e.live(now_ms()));
            let matches = match (live.as_ref().map(|e| &e.v), old) {
                (None, None) => true,
                (Some(a), Some(b)) => crate::json::loose_eq(a, b),
                _ => false,
            };
            if !matches {
                return Ok(false);
            }
            let bytes = new.as_ref().map(|v| {
                encode(&Entry {
                    v: v.clone(),
                    exp: expiry(ttl),
                })
            });
            if self.tree.compare_and_swap(&k, current, bytes)?.is_ok() {
                return Ok(true);
            }
        }
    }

    /// Live keys of `ns` starting with `prefix`, sorted.
    ///
    /// # Errors
    /// On store failure.
    pub fn keys(&self, ns: &str, prefix: &str) -> Result<Vec<String>, StateError> {
        Ok(self
            .entries(ns, prefix, usize::MAX)?
            .into_iter()
            .map(|e| e.key)
            .collect())
    }

    /// Live entries of `ns` starting with `prefix`, at most `limit`.
    ///
    /// # Errors
    /// On store failure.
    pub fn entries(
        &self,
        ns: &str,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<StateEntry>, StateError> {
        let mut scan = Vec::with_capacity(ns.len() + 1 + prefix.len());
        scan.extend_from_slice(ns.as_bytes());
        scan.push(0);
        let skip = scan.len();
        scan.extend_from_slice(prefix.as_bytes());
        let now = now_ms();
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(&scan) {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item?;
            let Some(e) = decode(&v).and_then(|e| e.live(now)) else {
                continue;
            };
            out.push(StateEntry {
                key: String::from_utf8_lossy(&k[skip..]).into_owned(),
                value: e.v,
                expires_at: e.exp.and_then(|ms| {
                    chrono::DateTime::from_timestamp_millis(ms).map(crate::event::format_time)
                }),
            });
        }
        Ok(out)
    }

    /// Removes expired entries; returns how many.
    ///
    /// # Errors
    /// On store failure.
    pub fn purge_expired(&self) -> Result<usize, StateError> {
        let now = now_ms();
        let mut n = 0;
        for item in &self.tree {
            let (k, v) = item?;
            if let Some(Entry { exp: Some(exp), .. }) = decode(&v)
                && exp <= now
            {
                // Only if unchanged since read, so a fresh set is never lost.
                if self
                    .tree
                    .compare_and_swap(&k, Some(v), None::<&[u8]>)?
                    .is_ok()
                {
                    n += 1;
                }
            }
        }
        Ok(n)
    }
}

fn add(base: &Value, by: &serde_json::Number) -> Value {
    if let (Some(a), Some(b)) = (base.as_i64(), by.as_i64()) {
        match a.checked_add(b) {
            Some(n) => Value::from(n),
            None => Value::from(a as f64 + b as f64),
        }
    } else {
        let sum = base.as_f64().unwrap_or(0.0) + by.as_f64().unwrap_or(0.0);
        serde_json::Number::from_f64(sum).map_or(Value::Null, Value::Number)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn store() -> StateStore {
        StateStore::new(&Store::temporary().unwrap())
    }

    #[test]
    fn namespaces_are_separate() {
        let s = store();
        s.set("a", "k", json!(1), None).unwrap();
        assert_eq!(s.get("b", "k").unwrap(), None);
        assert_eq!(s.get("a", "k").unwrap(), Some(json!(1)));
    }

    #[test]
    fn expired_keys_are_never_returned_and_get_purged() {
        let s = store();
        s.set("a", "gone", json!("x"), Some(Duration::ZERO))
            .unwrap();
        s.set("a", "kept", json!("y"), Some(Duration::from_mins(1)))
            .unwrap();
        assert_eq!(s.get("a", "gone").unwrap(), None);
        assert_eq!(s.keys("a", "").unwrap(), vec!["kept".to_owned()]);
        assert_eq!(s.purge_expired().unwrap(), 1);
    }

    #[test]
    fn incr_keeps_integers_and_rejects_non_numbers() {
        let s = store();
        assert_eq!(s.incr("a", "n", &1.into()).unwrap(), json!(1));
        assert_eq!(s.incr("a", "n", &5.into()).unwrap(), json!(6));
        s.set("a", "s", json!("text"), None).unwrap();
        let err = s.incr("a", "s", &1.into()).unwrap_err();
        assert!(
            err.to_string().contains("\"s\" holds the string \"text\""),
            "{err}"
        );
    }

    #[test]
    fn cas_swaps_only_on_match() {
        let s = store();
        assert!(s.cas("a", "k", None, Some(json!(1)), None).unwrap());
        assert!(!s.cas("a", "k", None, Some(json!(2)), None).unwrap());
        assert!(
            s.cas("a", "k", Some(&json!(1.0)), Some(json!(2)), None)
                .unwrap()
        );
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
                        s.incr("a", "n", &1.into()).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(s.get("a", "n").unwrap(), Some(json!(4000)));
    }
}
