//! Approval requests in the cluster, so a request asked by a run on one node is
//! listed, decided and expired on any: one subject per request,
//! `P.ap.<base64url id>`, holding its latest JSON (rollup). A change is written
//! only if the request is still at the sequence it was read at, so two nodes
//! deciding at once cannot both win.

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;

use super::Cluster;
use super::batch::{Batch, Failure};
use crate::approval::{Approval, ApprovalRequests, DecideError, decode};
use crate::clock::SharedClock;
use crate::store::StoreError;

/// How long a change is retried while the cluster cannot take it.
const RIDE_OUT: Duration = Duration::from_secs(10);

/// How long a removed request's empty message is kept.
const GONE_TTL: Duration = Duration::from_hours(1);

pub struct NatsApprovals {
    cluster: Cluster,
    clock: SharedClock,
}

impl NatsApprovals {
    pub fn new(cluster: Cluster, clock: SharedClock) -> Self {
        Self { cluster, clock }
    }

    fn subject(&self, id: &str) -> String {
        self.cluster.subject(
            "ap",
            &base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id),
        )
    }

    /// The request and the sequence it is stored at.
    async fn read(&self, id: &str) -> Result<Option<(Approval, u64)>, StoreError> {
        match self.cluster.last(&self.subject(id)).await? {
            Some(m) if !m.payload.is_empty() => Ok(Some((decode(id, &m.payload)?, m.sequence))),
            _ => Ok(None),
        }
    }

    /// Writes `a`, expecting the subject at `expect`: false when it changed.
    async fn write(&self, a: &Approval, expect: u64) -> Result<bool, StoreError> {
        let mut b = Batch::default();
        let bytes = serde_json::to_vec(a).expect("an approval serialises");
        b.put(self.subject(&a.id), Bytes::from(bytes), Some(expect), None);
        match self.cluster.commit_retrying(RIDE_OUT, b).await {
            Ok(_) => Ok(true),
            Err(Failure::Conflict) => Ok(false),
            Err(e) => Err(StoreError::Unavailable(e.to_string())),
        }
    }
}

impl ApprovalRequests for NatsApprovals {
    fn create_if_absent(&self, a: &Approval) -> Result<(Approval, bool), StoreError> {
        self.cluster.block(async {
            loop {
                if let Some((current, _)) = self.read(&a.id).await? {
                    return Ok((current, false));
                }
                // An empty (removed) request's subject has a sequence too.
                let seq = self
                    .cluster
                    .last(&self.subject(&a.id))
                    .await?
                    .map_or(0, |m| m.sequence);
                if self.write(a, seq).await? {
                    return Ok((a.clone(), true));
                }
            }
        })
    }

    fn get(&self, id: &str) -> Result<Option<Approval>, StoreError> {
        Ok(self.cluster.block(self.read(id))?.map(|(a, _)| a))
    }

    fn all(&self) -> Result<Vec<Approval>, StoreError> {
        let msgs = self
            .cluster
            .block(self.cluster.lasts(&self.cluster.subject("ap", "*")))?;
        msgs.iter()
            .filter(|m| !m.payload.is_empty())
            .map(|m| decode(m.subject.as_str(), &m.payload))
            .collect()
    }

    fn transition(
        &self,
        id: &str,
        change: &dyn Fn(&mut Approval) -> Result<(), DecideError>,
    ) -> Result<Approval, DecideError> {
        self.cluster.block(async {
            loop {
                let Some((mut a, seq)) = self.read(id).await? else {
                    return Err(DecideError::NotFound(id.to_owned()));
                };
                change(&mut a)?;
                if self.write(&a, seq).await? {
                    return Ok(a);
                }
            }
        })
    }

    fn remove(&self, ids: &[String]) -> Result<(), StoreError> {
        self.cluster.block(async {
            for id in ids {
                let mut b = Batch::default();
                b.put(self.subject(id), Bytes::new(), None, Some(GONE_TTL));
                self.cluster
                    .commit_retrying(RIDE_OUT, b)
                    .await
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            }
            Ok(())
        })
    }

    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }
}
