//! Script versions in the cluster (`P.src.<sha256>`, rollup), so a run pinned to a
//! version — a retry, a parked run woken on another node, a partition that moved —
//! finds it on every node, also one that never loaded it.

use std::future::IntoFuture as _;
use std::time::Duration;

use bytes::Bytes;

use super::Cluster;
use super::batch::{Batch, Failure};
use crate::script::pinned::{ScriptSources, StoredSource};
use crate::store::StoreError;

/// How long a write is retried while the cluster cannot take it.
const RIDE_OUT: Duration = Duration::from_secs(10);

pub(crate) struct NatsSources {
    cluster: Cluster,
}

impl NatsSources {
    pub(crate) fn new(cluster: Cluster) -> Self {
        Self { cluster }
    }

    fn subject(&self, hash: &str) -> String {
        self.cluster.subject("src", hash)
    }

    fn write(&self, hash: &str, source: &StoredSource, only_new: bool) -> Result<(), StoreError> {
        let bytes = Bytes::from(serde_json::to_vec(source).expect("a source serialises"));
        let mut b = Batch::default();
        if only_new {
            b.claim(self.subject(hash), bytes, None);
        } else {
            b.put(self.subject(hash), bytes, None, None);
        }
        match self
            .cluster
            .block(self.cluster.commit_retrying(RIDE_OUT, b))
        {
            // Claimed already: the same content (the hash names it) is there.
            Ok(_) | Err(Failure::Conflict) => Ok(()),
            Err(e) => Err(StoreError::Unavailable(e.to_string())),
        }
    }
}

impl ScriptSources for NatsSources {
    fn put_if_absent(&self, hash: &str, source: &StoredSource) -> Result<(), StoreError> {
        self.write(hash, source, true)
    }

    fn put(&self, hash: &str, source: &StoredSource) -> Result<(), StoreError> {
        self.write(hash, source, false)
    }

    fn get(&self, hash: &str) -> Result<Option<StoredSource>, StoreError> {
        let m = self.cluster.block(self.cluster.last(&self.subject(hash)))?;
        Ok(m.and_then(|m| serde_json::from_slice(&m.payload).ok()))
    }

    fn all(&self) -> Result<Vec<(String, StoredSource)>, StoreError> {
        let msgs = self.cluster.block(self.cluster.lasts(&self.subject("*")))?;
        Ok(msgs
            .iter()
            .filter_map(|m| {
                let hash = m.subject.as_str().rsplit('.').next()?.to_owned();
                Some((hash, serde_json::from_slice(&m.payload).ok()?))
            })
            .collect())
    }

    fn remove(&self, hash: &str) -> Result<(), StoreError> {
        let purge = self.cluster.handle.purge().filter(self.subject(hash));
        self.cluster
            .block(purge.into_future())
            .map(|_| ())
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }
}
