//! State in the cluster: one subject per key, `P.st.<ns>.<key>` (both base64url,
//! after a `_` so neither is ever empty), holding only its latest message (rollup).
//! The message's stream sequence is the key's version: a run's change of a key is
//! committed only if the key is still at the version it was computed from
//! (`Nats-Expected-Last-Subject-Sequence`, in the run's atomic batch), so two runs
//! on different nodes never lose each other's update — the loser's run is executed
//! again on the new value (`queue.rs`). Within one node the key locks order runs as
//! on sled, so conflicts only happen between nodes.
//!
//! A value is `{"v": …, "exp": ms?}` as on sled; a deleted key is an empty message
//! that expires after an hour. Keys with a TTL carry `Nats-TTL` too, so the server
//! drops them once expired (reads check `exp` by spur's clock either way).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use serde_json::Value;

use super::Cluster;
use super::batch::{Batch, Failure};
use crate::clock::SharedClock;
use crate::state::{Change, KeyLocks, StateEntry, StateError, StateOp, StateStore, StateValue};
use crate::store::StoreError;

/// How long a deleted key's empty message is kept.
const TOMBSTONE_TTL: Duration = Duration::from_hours(1);

/// Names one write of a direct change (see `apply_now`).
const WRITE_HEADER: &str = "Spur-Write";

/// How long a direct change is retried while the cluster cannot take it.
const RIDE_OUT: Duration = Duration::from_secs(10);

/// State on the NATS stream; cheap to clone.
#[derive(Clone)]
pub struct NatsState {
    cluster: Cluster,
    clock: SharedClock,
    locks: Arc<KeyLocks>,
}

impl NatsState {
    pub fn new(cluster: Cluster, clock: SharedClock) -> Self {
        Self {
            cluster,
            clock,
            locks: Arc::default(),
        }
    }

    /// The key's value (`None`: absent or deleted) and version.
    async fn fetch(&self, ns: &str, key: &str) -> Result<(Option<StateValue>, u64), StateError> {
        let subject = subject(&self.cluster, ns, key)?;
        match self
            .cluster
            .last(&subject)
            .await
            .map_err(StoreError::from)?
        {
            None => Ok((None, 0)),
            Some(m) => Ok((decode(&m.payload), m.sequence)),
        }
    }
}

/// `P.st._<ns>._<key>`, the key checked first.
pub(crate) fn subject(cluster: &Cluster, ns: &str, key: &str) -> Result<String, StateError> {
    crate::state::lock_name(ns, key)?;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    Ok(cluster.subject("st", &format!("_{}._{}", b64.encode(ns), b64.encode(key))))
}

/// The key of a state subject of namespace `ns`.
fn key_of(subject: &str) -> Option<String> {
    let last = subject.rsplit('.').next()?.strip_prefix('_')?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(last)
        .ok()?;
    String::from_utf8(bytes).ok()
}

fn decode(payload: &[u8]) -> Option<StateValue> {
    if payload.is_empty() {
        return None;
    }
    serde_json::from_slice(payload).ok()
}

/// Adds a key's new value (or deletion) to `batch`, expecting `expect`.
pub(crate) fn put<'b>(
    batch: &'b mut Batch,
    subject: String,
    value: Option<&StateValue>,
    expect: Option<u64>,
    now_ms: i64,
) -> &'b mut async_nats::HeaderMap {
    match value {
        Some(v) => {
            let ttl = v.exp.map(|exp| {
                // Whole seconds past the expiry (reads check `exp` themselves).
                Duration::from_millis(u64::try_from(exp - now_ms).unwrap_or(0))
                    + Duration::from_secs(1)
            });
            let bytes = serde_json::to_vec(v).expect("a state value always serialises");
            batch.put(subject, Bytes::from(bytes), expect, ttl)
        }
        None => batch.put(subject, Bytes::new(), expect, Some(TOMBSTONE_TTL)),
    }
}

impl StateStore for NatsState {
    fn read(&self, ns: &str, key: &str) -> Result<Option<StateValue>, StateError> {
        Ok(self.read_versioned(ns, key)?.0)
    }

    fn read_versioned(&self, ns: &str, key: &str) -> Result<(Option<StateValue>, u64), StateError> {
        let (v, version) = self.cluster.block(self.fetch(ns, key))?;
        Ok((v.and_then(|v| v.live(self.clock.now_ms())), version))
    }

    /// Lists the namespace's subjects (a scan of the stream's subject index: for
    /// `state::keys` and operators, not for hot paths).
    fn entries(&self, ns: &str, prefix: &str, limit: usize) -> Result<Vec<StateEntry>, StateError> {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let filter = self
            .cluster
            .subject("st", &format!("_{}.*", b64.encode(ns)));
        let now = self.clock.now_ms();
        let msgs = self
            .cluster
            .block(self.cluster.lasts(&filter))
            .map_err(StoreError::from)?;
        let mut entries: Vec<StateEntry> = msgs
            .iter()
            .filter_map(|m| {
                let key = key_of(&m.subject).filter(|k| k.starts_with(prefix))?;
                Some(StateEntry::new(key, decode(&m.payload)?.live(now)?))
            })
            .collect();
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        entries.truncate(limit);
        Ok(entries)
    }

    /// Compare-and-set on the key's version, again on a conflict with another node.
    fn apply_now(&self, ns: &str, key: &str, op: &StateOp) -> Result<Value, StateError> {
        let name = self.lock_name(ns, key)?;
        let owner = self.locks.one_off_owner();
        self.locks.lock(&name, owner);
        let subject = subject(&self.cluster, ns, key)?;
        let result = self.cluster.block(async {
            loop {
                let now = self.clock.now_ms();
                let (v, version) = self.fetch(ns, key).await?;
                let live = v.and_then(|v| v.live(now));
                let (change, result) = op.apply(key, live.as_ref(), now)?;
                let value = match change {
                    Change::Keep => return Ok(result),
                    Change::Put(v) => Some(v),
                    Change::Remove => None,
                };
                // Marks the write, so a retry after a lost answer can tell its own
                // earlier attempt (stored) from another node's change.
                let write = uuid::Uuid::new_v4().simple().to_string();
                let mut batch = Batch::default();
                put(
                    &mut batch,
                    subject.clone(),
                    value.as_ref(),
                    Some(version),
                    now,
                )
                .insert(WRITE_HEADER, write.as_str());
                let committed = self.cluster.commit_retrying(RIDE_OUT, batch).await;
                match committed {
                    Ok(_) => return Ok(result),
                    Err(Failure::Conflict) => {
                        let last = self
                            .cluster
                            .last(&subject)
                            .await
                            .map_err(StoreError::from)?;
                        let ours = last
                            .and_then(|m| m.headers.get(WRITE_HEADER).map(|w| w.as_str() == write));
                        if ours == Some(true) {
                            return Ok(result);
                        }
                    }
                    Err(e) => {
                        return Err(StateError::Store(StoreError::Unavailable(e.to_string())));
                    }
                }
            }
        });
        self.locks.unlock(&[name], owner);
        result
    }

    /// Nothing to do: the server drops expired keys by their `Nats-TTL`.
    fn purge_expired(&self) -> Result<usize, StateError> {
        Ok(0)
    }

    fn locks(&self) -> &KeyLocks {
        &self.locks
    }

    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }
}
