//! Events into the cluster: each event and its `messageId` marker in one atomic
//! batch, the marker only if no marker of that id is live. So an event is stored
//! exactly when its id is claimed: a retried request finds its events claimed and
//! counts them as duplicates, on whichever node it lands, and no crash can leave
//! an id claimed without its event (or the reverse).
//!
//! The markers are what holds the 24-hour window (JetStream's own `Nats-Msg-Id`
//! window is meant for minutes): one message per id, `Nats-TTL` set to the window,
//! on a subject of the id's hash. Their cost is the server's per-subject index
//! (measured in `docs/operations.md`).

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::batch::{Batch, Failure};
use super::{Cluster, NatsError, PARTITIONS};
use crate::queue::{IngestReceipt, PreparedEvent};

/// Events per atomic batch (two messages each; the server takes 1,000 at most).
const EVENTS_PER_BATCH: usize = 400;

/// How long a batch is retried while the cluster cannot take it for a moment, before
/// the caller is told (ingest then answers 503 and the client retries). Electing a
/// new stream leader after a server died can take longer (up to ~10 s): a request
/// is not held that long.
const RIDE_OUT: Duration = Duration::from_secs(4);

/// How long accepted events and dedup markers are kept.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// How long a `messageId` is remembered (`retention.dedup`).
    pub dedup: Duration,
    /// How long an event is kept (`retention.events`).
    pub events: Duration,
}

impl Cluster {
    /// Stores `events` (deduplicated by `messageId` across the cluster) and returns
    /// once JetStream acknowledged them: written to the files of a quorum of
    /// replicas (fsynced on the servers' own schedule, `sync_interval`; see
    /// docs/operations.md, "Clusters").
    ///
    /// # Errors
    /// [`NatsError::Unavailable`] when the cluster does not take a batch; the
    /// batches acknowledged before it stay stored, so a retry counts their events
    /// as duplicates.
    pub async fn append(
        &self,
        events: &[PreparedEvent],
        retention: Retention,
    ) -> Result<IngestReceipt, NatsError> {
        let mut receipt = IngestReceipt::default();
        // Repeats inside the request never reach the cluster.
        let mut fresh: Vec<usize> = Vec::with_capacity(events.len());
        let mut seen = std::collections::HashSet::with_capacity(events.len());
        for (i, e) in events.iter().enumerate() {
            if seen.insert(e.event.message_id.as_str()) {
                fresh.push(i);
            } else {
                receipt.duplicates.push(i);
            }
        }
        for chunk in fresh.chunks(EVENTS_PER_BATCH) {
            let mut chunk = chunk.to_vec();
            // A batch fails whole when one marker is taken: drop the taken ones
            // and commit the rest. Twice more at most (a racing request may take
            // another of the ids meanwhile). Retrying a batch whose ack was lost is
            // safe: its markers are then taken, and its events not stored again.
            let deadline = tokio::time::Instant::now() + RIDE_OUT;
            let mut pause = Duration::from_millis(50);
            let mut attempt = 0;
            loop {
                match self.commit_events(events, &chunk, retention).await {
                    Ok(_) => {
                        receipt.accepted += chunk.len();
                        break;
                    }
                    Err(Failure::Transient(e)) => {
                        if tokio::time::Instant::now() + pause > deadline {
                            return Err(NatsError::Unavailable(e));
                        }
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(1));
                    }
                    Err(Failure::Conflict) if attempt < 2 => {
                        attempt += 1;
                        let taken = self.taken(events, &chunk).await?;
                        chunk.retain(|i| !taken.contains(i));
                        receipt.duplicates.extend(taken);
                        if chunk.is_empty() {
                            break;
                        }
                    }
                    Err(Failure::Conflict) => {
                        return Err(NatsError::Unavailable(
                            "messageIds kept being claimed by concurrent requests".into(),
                        ));
                    }
                    Err(Failure::Failed(e)) => return Err(NatsError::Unavailable(e)),
                }
            }
        }
        receipt.duplicates.sort_unstable();
        Ok(receipt)
    }

    /// Publishes the events `chunk` (indexes into `events`) with their markers as
    /// one atomic batch.
    async fn commit_events(
        &self,
        events: &[PreparedEvent],
        chunk: &[usize],
        retention: Retention,
    ) -> Result<u64, Failure> {
        let mut batch = Batch::default();
        for &i in chunk {
            let e = &events[i];
            batch.claim(
                self.marker_subject(&e.event.message_id),
                Bytes::new(),
                Some(retention.dedup),
            );
            let h = batch.append(
                self.event_subject(e.event.user_key().unwrap_or(&e.event.message_id)),
                Bytes::copy_from_slice(&e.bytes),
                Some(retention.events),
            );
            if let Some(tp) = &e.traceparent {
                h.insert("traceparent", tp.as_str());
            }
        }
        self.commit(batch).await
    }

    /// The events of `chunk` whose id has a live marker.
    async fn taken(
        &self,
        events: &[PreparedEvent],
        chunk: &[usize],
    ) -> Result<Vec<usize>, NatsError> {
        let lookups = chunk.iter().map(|&i| {
            let subject = self.marker_subject(&events[i].event.message_id);
            async move { Ok::<_, NatsError>(self.last(&subject).await?.map(|_| i)) }
        });
        let found = futures_util::future::try_join_all(lookups).await?;
        Ok(found.into_iter().flatten().collect())
    }

    /// `P.id.H`: `H` the first 128 bits of the id's SHA-256, base64url (22 bytes;
    /// ids of any length and alphabet become a valid subject token).
    fn marker_subject(&self, message_id: &str) -> String {
        let digest = Sha256::digest(message_id.as_bytes());
        let h = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..16]);
        self.subject("id", &h)
    }

    /// `P.ev.N`: the partition of the user.
    fn event_subject(&self, user: &str) -> String {
        self.subject("ev", &partition(user).to_string())
    }
}

/// The partition of a user (stable across versions: it orders the user's events).
pub(crate) fn partition(user: &str) -> u32 {
    let d = Sha256::digest(user.as_bytes());
    u32::from_be_bytes([d[0], d[1], d[2], d[3]]) % PARTITIONS
}
