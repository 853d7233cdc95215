//! Writes to the stream, several messages at once: one atomic batch (ADR-50), so
//! everything a step writes is stored together or not at all — an event with its
//! `messageId` marker, a run's state changes with its journal and its done marker.
//!
//! Each message says what it expects: `claim` (the subject must be empty), `put`
//! (rollup: the subject keeps only this message, optionally only if its last
//! message is still the one read), `append`. One failed expectation fails the
//! whole batch ([`Failure::Conflict`]).

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;

use super::Cluster;

/// Messages of one atomic batch at most (the server's limit is 1,000).
pub(crate) const MAX_MESSAGES: usize = 1_000;

/// Messages to commit together.
#[derive(Default, Clone)]
pub(crate) struct Batch {
    msgs: Vec<(String, HeaderMap, Bytes)>,
}

/// Why a batch was not stored.
#[derive(Debug, Clone)]
pub(crate) enum Failure {
    /// An expectation failed (a claimed subject was taken, a value changed since it
    /// was read): nothing of the batch is stored.
    Conflict,
    /// The cluster could not take it just now (no stream leader, no answer).
    Transient(String),
    Failed(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Conflict => f.write_str("a value changed while it was being written"),
            Self::Transient(e) | Self::Failed(e) => f.write_str(e),
        }
    }
}

impl Batch {
    fn push(&mut self, subject: String, payload: Bytes, ttl: Option<Duration>) -> &mut HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(t) = ttl {
            h.insert("Nats-TTL", ttl_value(t).as_str());
        }
        self.msgs.push((subject, h, payload));
        &mut self.msgs.last_mut().expect("just pushed").1
    }

    /// `subject` must have no message (a marker: first writer wins).
    pub(crate) fn claim(
        &mut self,
        subject: String,
        payload: Bytes,
        ttl: Option<Duration>,
    ) -> &mut HeaderMap {
        let h = self.push(subject, payload, ttl);
        h.insert("Nats-Expected-Last-Subject-Sequence", "0");
        h
    }

    /// Replaces what `subject` holds; with `expect`, only if its last message is
    /// still that sequence (0: it has none).
    pub(crate) fn put(
        &mut self,
        subject: String,
        payload: Bytes,
        expect: Option<u64>,
        ttl: Option<Duration>,
    ) -> &mut HeaderMap {
        let h = self.push(subject, payload, ttl);
        h.insert("Nats-Rollup", "sub");
        if let Some(seq) = expect {
            h.insert(
                "Nats-Expected-Last-Subject-Sequence",
                seq.to_string().as_str(),
            );
        }
        h
    }

    /// Adds a message to `subject`.
    pub(crate) fn append(
        &mut self,
        subject: String,
        payload: Bytes,
        ttl: Option<Duration>,
    ) -> &mut HeaderMap {
        self.push(subject, payload, ttl)
    }
}

impl Cluster {
    /// Stores `batch` atomically; returns the stream sequence of its last message
    /// (0 for an empty batch). Once it returns, JetStream acknowledged it.
    ///
    /// # Errors
    /// As [`Failure`]; larger than [`MAX_MESSAGES`] is `Failed`.
    pub(crate) async fn commit(&self, batch: Batch) -> Result<u64, Failure> {
        let total = batch.msgs.len();
        if total > MAX_MESSAGES {
            return Err(Failure::Failed(format!(
                "{total} writes in one step; the cluster takes {MAX_MESSAGES} at most"
            )));
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        for (n, (subject, mut h, payload)) in batch.msgs.into_iter().enumerate() {
            let n = n + 1;
            if total > 1 {
                h.insert("Nats-Batch-Id", id.as_str());
                h.insert("Nats-Batch-Sequence", n.to_string().as_str());
            }
            if n < total {
                self.client
                    .publish_with_headers(subject, h, payload)
                    .await
                    .map_err(|e| Failure::Transient(e.to_string()))?;
                continue;
            }
            if total > 1 {
                h.insert("Nats-Batch-Commit", "1");
            }
            let ack = self
                .js
                .send_publish(subject, PublishMessage::build().headers(h).payload(payload))
                .await
                .map_err(|e| Failure::Transient(e.to_string()))?;
            return match ack.await {
                Ok(ack) => Ok(ack.sequence),
                Err(e) => Err(match e.kind() {
                    PublishErrorKind::WrongLastSequence => Failure::Conflict,
                    // The server's other code for it (10164, "wrong last sequence"),
                    // which the client does not tell apart.
                    _ if e.to_string().contains("wrong last sequence") => Failure::Conflict,
                    // No stream leader answers (one is being elected), or the
                    // answer did not come back.
                    PublishErrorKind::StreamNotFound
                    | PublishErrorKind::TimedOut
                    | PublishErrorKind::BrokenPipe => Failure::Transient(format!(
                        "{e} (is a stream leader being elected, or the cluster out of reach?)"
                    )),
                    _ => Failure::Failed(e.to_string()),
                }),
            };
        }
        Ok(0)
    }

    /// [`Cluster::commit`], retrying while the cluster cannot take the batch for a
    /// moment (up to `ride_out`).
    ///
    /// # Errors
    /// A conflict at once; the last transient failure after `ride_out`.
    pub(crate) async fn commit_retrying(
        &self,
        ride_out: Duration,
        batch: Batch,
    ) -> Result<u64, Failure> {
        let deadline = tokio::time::Instant::now() + ride_out;
        let mut pause = Duration::from_millis(50);
        loop {
            match self.commit(batch.clone()).await {
                Err(Failure::Transient(e)) => {
                    if tokio::time::Instant::now() + pause > deadline {
                        return Err(Failure::Transient(e));
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                other => return other,
            }
        }
    }
}

/// Group commit for runs: the batches handed in while one is being committed are
/// committed next as one atomic batch, so many runs share one round trip and one
/// batch's overhead on the stream leader. When the merged batch fails an
/// expectation, its parts are committed one by one (in order), so each run learns
/// whether its own writes conflicted.
pub(crate) struct Combiner {
    tx: tokio::sync::mpsc::UnboundedSender<(Batch, Reply)>,
}

type Reply = tokio::sync::oneshot::Sender<Result<u64, Failure>>;

impl Combiner {
    pub(crate) fn start(cluster: Cluster, ride_out: Duration) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Batch, Reply)>();
        cluster.runtime.clone().spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut size = first.0.msgs.len();
                let mut group = vec![first];
                while let Ok(next) = rx.try_recv() {
                    if size + next.0.msgs.len() > MAX_MESSAGES {
                        commit_group(&cluster, ride_out, std::mem::take(&mut group)).await;
                        size = 0;
                    }
                    size += next.0.msgs.len();
                    group.push(next);
                }
                commit_group(&cluster, ride_out, group).await;
            }
        });
        Self { tx }
    }

    /// Commits `batch` with whatever other batches are waiting (see [`Combiner`]).
    ///
    /// # Errors
    /// As [`Cluster::commit_retrying`].
    pub(crate) async fn commit(&self, batch: Batch) -> Result<u64, Failure> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send((batch, tx))
            .map_err(|_| Failure::Failed("the queue is shut down".into()))?;
        rx.await
            .map_err(|_| Failure::Failed("the queue is shut down".into()))?
    }
}

async fn commit_group(cluster: &Cluster, ride_out: Duration, mut group: Vec<(Batch, Reply)>) {
    if group.len() <= 1 {
        if let Some((b, reply)) = group.pop() {
            let _ = reply.send(cluster.commit_retrying(ride_out, b).await);
        }
        return;
    }
    let mut merged = Batch::default();
    for (b, _) in &group {
        merged.msgs.extend(b.msgs.iter().cloned());
    }
    match cluster.commit_retrying(ride_out, merged).await {
        Err(Failure::Conflict) => {
            for (b, reply) in group {
                let _ = reply.send(cluster.commit_retrying(ride_out, b).await);
            }
        }
        result => {
            for (_, reply) in group {
                let _ = reply.send(result.clone());
            }
        }
    }
}

/// A `Nats-TTL` value: whole seconds, at least one.
pub(crate) fn ttl_value(d: Duration) -> String {
    d.as_secs().max(1).to_string()
}
