//! Durable key-value state for scripts: namespaced per script (plus one shared
//! namespace), values any JSON, optional TTLs, `incr` and `cas`.
//!
//! A change is a [`StateOp`], a pure function of the key's live value. A run does
//! not apply its changes one by one: under a lock on the key ([`KeyLocks`]) it
//! computes the new value, keeps it in its transaction (its own reads see it), and
//! commits it together with its journal entry and its job's settle in one atomic
//! batch (`queue::RunWrites`). So a crash never leaves a state change without the
//! journal entry that stops it from being applied twice, and two runs never lose
//! each other's update of a shared key. Direct changes (the admin API, local runs)
//! take the same lock and apply at once ([`StateStore::apply_now`]).
//!
//! Expired entries are never returned; [`StateStore::purge_expired`] removes them.
//! Backends: sled (`sled.rs`), NATS JetStream (`nats/state.rs`).

mod sled;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Condvar, Mutex};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use sled::SledState;
pub(crate) use sled::{encode as sled_value, tree_key as sled_key};

use crate::store::StoreError;

/// The namespace `state::shared::…` uses.
pub(crate) const SHARED: &str = "@shared";

/// Longest key accepted, in bytes.
pub(crate) const MAX_KEY_BYTES: usize = 1024;

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

/// A stored value with its expiry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateValue {
    pub v: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
}

impl StateValue {
    /// The value if it has not expired at `now_ms`.
    pub(crate) fn live(self, now_ms: i64) -> Option<Self> {
        match self.exp {
            Some(exp) if exp <= now_ms => None,
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

impl StateEntry {
    pub(crate) fn new(key: String, value: StateValue) -> Self {
        Self {
            key,
            value: value.v,
            expires_at: value.exp.and_then(|ms| {
                chrono::DateTime::from_timestamp_millis(ms).map(crate::event::format_time)
            }),
        }
    }
}

/// A change of one key.
#[derive(Debug, Clone, PartialEq)]
pub enum StateOp {
    /// Sets the value, with a time to live in ms.
    Set {
        value: Value,
        ttl_ms: Option<i64>,
    },
    Del,
    /// Adds to the number (absent counts as 0); integers stay integers; a TTL set
    /// before is kept.
    Incr(serde_json::Number),
    /// Sets `new` (`None`: deletes) only if the live value equals `old` (`None`:
    /// absent).
    Cas {
        old: Option<Value>,
        new: Option<Value>,
    },
}

/// What an op does to the stored value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Change {
    Keep,
    Put(StateValue),
    Remove,
}

impl StateOp {
    /// The change and the call's result, given the key's live value at `now_ms`.
    ///
    /// # Errors
    /// `incr` of a value that is not a number.
    pub(crate) fn apply(
        &self,
        key: &str,
        live: Option<&StateValue>,
        now_ms: i64,
    ) -> Result<(Change, Value), StateError> {
        Ok(match self {
            Self::Set { value, ttl_ms } => (
                Change::Put(StateValue {
                    v: value.clone(),
                    exp: ttl_ms.map(|t| now_ms.saturating_add(t)),
                }),
                Value::Null,
            ),
            Self::Del => (Change::Remove, Value::Bool(live.is_some())),
            Self::Incr(by) => {
                let (base, exp) = match live {
                    None => (Value::from(0), None),
                    Some(StateValue {
                        v: v @ Value::Number(_),
                        exp,
                    }) => (v.clone(), *exp),
                    Some(StateValue { v, .. }) => {
                        return Err(StateError::NotANumber {
                            key: key.into(),
                            found: type_of(v),
                        });
                    }
                };
                let next = add(&base, by);
                (
                    Change::Put(StateValue {
                        v: next.clone(),
                        exp,
                    }),
                    next,
                )
            }
            Self::Cas { old, new } => {
                let matches = match (live.map(|e| &e.v), old) {
                    (None, None) => true,
                    (Some(a), Some(b)) => crate::json::loose_eq(a, b),
                    _ => false,
                };
                if !matches {
                    (Change::Keep, Value::Bool(false))
                } else if let Some(v) = new {
                    let put = StateValue {
                        v: v.clone(),
                        exp: None,
                    };
                    (Change::Put(put), Value::Bool(true))
                } else {
                    (Change::Remove, Value::Bool(true))
                }
            }
        })
    }
}

/// The state store of a backend.
pub trait StateStore: Send + Sync + 'static {
    /// The live (committed, unexpired) value of `key`.
    ///
    /// # Errors
    /// On an invalid key or store failure.
    fn read(&self, ns: &str, key: &str) -> Result<Option<StateValue>, StateError>;

    /// [`StateStore::read`], with the backend's version of the key (0 when it has
    /// none): what a run's change of the key expects to replace (`StateWrite::expect`).
    ///
    /// # Errors
    /// On an invalid key or store failure.
    fn read_versioned(&self, ns: &str, key: &str) -> Result<(Option<StateValue>, u64), StateError> {
        Ok((self.read(ns, key)?, 0))
    }

    /// Live entries of `ns` starting with `prefix`, sorted, at most `limit`.
    ///
    /// # Errors
    /// On store failure.
    fn entries(&self, ns: &str, prefix: &str, limit: usize) -> Result<Vec<StateEntry>, StateError>;

    /// Applies `op` to `key` at once, durably (under the key's lock); its result.
    ///
    /// # Errors
    /// When the op fails or the store does.
    fn apply_now(&self, ns: &str, key: &str, op: &StateOp) -> Result<Value, StateError>;

    /// Removes expired entries; returns how many.
    ///
    /// # Errors
    /// On store failure.
    fn purge_expired(&self) -> Result<usize, StateError>;

    /// The key locks runs take before changing a key.
    fn locks(&self) -> &KeyLocks;

    /// The lock name of `key` (its identity across namespaces).
    ///
    /// # Errors
    /// On an invalid key.
    fn lock_name(&self, ns: &str, key: &str) -> Result<Vec<u8>, StateError> {
        lock_name(ns, key)
    }

    /// The time by the store's clock, in ms.
    fn now_ms(&self) -> i64;

    fn get(&self, ns: &str, key: &str) -> Result<Option<Value>, StateError> {
        Ok(self.read(ns, key)?.map(|e| e.v))
    }

    fn keys(&self, ns: &str, prefix: &str) -> Result<Vec<String>, StateError> {
        Ok(self
            .entries(ns, prefix, usize::MAX)?
            .into_iter()
            .map(|e| e.key)
            .collect())
    }
}

/// `namespace \0 key`, checked.
///
/// # Errors
/// When the key is empty or too long.
pub(crate) fn lock_name(ns: &str, key: &str) -> Result<Vec<u8>, StateError> {
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

/// Exclusive locks on state keys, held by a run from its first change of a key
/// until that change is committed. A run that finds a key taken first commits what
/// it holds (releasing its own locks) and only then waits, so no run ever waits
/// while holding a lock: no deadlock.
#[derive(Default)]
pub struct KeyLocks {
    held: Mutex<HashMap<Vec<u8>, u64>>,
    freed: Condvar,
    /// Owners for one-off direct changes, counting down from the top (run owners
    /// are job ids, counting up).
    next_owner: AtomicU64,
}

impl KeyLocks {
    /// Takes `key` for `owner` if it is free (or already `owner`'s).
    pub(crate) fn try_lock(&self, key: &[u8], owner: u64) -> bool {
        let mut held = self.held.lock();
        if let Some(o) = held.get(key) {
            return *o == owner;
        }
        held.insert(key.to_vec(), owner);
        true
    }

    /// Takes `key` for `owner`, waiting until it is free.
    pub(crate) fn lock(&self, key: &[u8], owner: u64) {
        let mut held = self.held.lock();
        loop {
            match held.get(key) {
                Some(o) if *o == owner => return,
                Some(_) => self.freed.wait(&mut held),
                None => {
                    held.insert(key.to_vec(), owner);
                    return;
                }
            }
        }
    }

    /// Frees `keys` held by `owner`.
    pub(crate) fn unlock(&self, keys: &[Vec<u8>], owner: u64) {
        if keys.is_empty() {
            return;
        }
        let mut held = self.held.lock();
        for k in keys {
            if held.get(k) == Some(&owner) {
                held.remove(k);
            }
        }
        drop(held);
        self.freed.notify_all();
    }

    /// An owner id for a one-off change outside any run.
    pub(crate) fn one_off_owner(&self) -> u64 {
        u64::MAX - self.next_owner.fetch_add(1, Ordering::Relaxed)
    }
}

fn type_of(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(_) => "a boolean".into(),
        Value::Number(_) => "a number".into(),
        Value::String(s) => format!("the string {}", crate::event::quote(s)),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "a map".into(),
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
