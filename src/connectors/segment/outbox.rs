//! The durable outbox of written-back messages: a message is stored when
//! `segment::track` returns and is durable before the sender posts it; it stays until
//! the Tracking API accepted it, through failures and restarts.
//!
//! [`OutboxStore`] is the outbox's part of the storage seam; [`Outbox`] (the counter,
//! the wake-up and the sender) sits above it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::super::ConnectorError;
use super::super::http::{Body, Destination, HttpClient, OutboundRequest};
use super::{TRACKING, check};
use crate::config::SegmentConfig;
use crate::store::{Store, StoreError, id_key, key_id};

const TREE: &str = "segment_outbox";

/// Where a backend keeps written-back messages until they are delivered.
#[async_trait::async_trait]
pub(crate) trait OutboxStore: Send + Sync + 'static {
    /// Queues `msg` after every message queued before (not necessarily durable yet).
    ///
    /// # Errors
    /// On store failure.
    fn push(&self, msg: &Value) -> Result<(), StoreError>;

    /// The oldest `n` messages with their ids; `None` for one that cannot be read
    /// (it is removed with its batch, never sent).
    ///
    /// # Errors
    /// On store failure.
    fn oldest(&self, n: usize) -> Result<Vec<(u64, Option<Value>)>, StoreError>;

    /// Removes delivered messages.
    ///
    /// # Errors
    /// On store failure.
    fn remove(&self, ids: &[u64]) -> Result<(), StoreError>;

    /// Messages queued (read once, at start-up).
    ///
    /// # Errors
    /// On store failure.
    fn count(&self) -> Result<usize, StoreError>;

    /// The output-commit barrier: returns once every message queued before, and
    /// everything the runs that queued them had written before (their hand-offs),
    /// is durable.
    ///
    /// # Errors
    /// When the flush fails.
    async fn sync_before_send(&self) -> Result<(), StoreError>;
}

/// The outbox in the sled store's `segment_outbox` tree, keyed by an id from the
/// store's generator (so by time). Pushes and removals are flushed lazily; the
/// barrier is `Store::sync_handoffs`.
pub(crate) struct SledOutbox {
    tree: sled::Tree,
    store: Store,
}

impl SledOutbox {
    /// # Errors
    /// When the tree cannot be opened.
    pub(crate) fn open(store: &Store) -> Result<Self, StoreError> {
        Ok(Self {
            tree: store.tree(TREE)?,
            store: store.clone(),
        })
    }
}

#[async_trait::async_trait]
impl OutboxStore for SledOutbox {
    fn push(&self, msg: &Value) -> Result<(), StoreError> {
        let id = self.store.next_id()?;
        self.tree.insert(
            id_key(id),
            serde_json::to_vec(msg).expect("JSON serialises"),
        )?;
        Ok(())
    }

    fn oldest(&self, n: usize) -> Result<Vec<(u64, Option<Value>)>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree.iter().take(n) {
            let (k, v) = item?;
            if k.len() != 8 {
                // Not an id of ours: it could never be removed by id.
                self.tree.remove(&k)?;
                continue;
            }
            out.push((key_id(&k), serde_json::from_slice(&v).ok()));
        }
        Ok(out)
    }

    fn remove(&self, ids: &[u64]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for id in ids {
            batch.remove(&id_key(*id));
        }
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    fn count(&self) -> Result<usize, StoreError> {
        Ok(self.tree.len())
    }

    async fn sync_before_send(&self) -> Result<(), StoreError> {
        self.store.sync_handoffs().await
    }
}

/// The outbox a daemon holds: its backend, a count of what waits, and the sender.
pub struct Outbox {
    store: Arc<dyn OutboxStore>,
    /// Messages queued (counted, so no write scans the store).
    pending: AtomicUsize,
    batch_size: usize,
    interval: Duration,
    wake: Notify,
}

impl Outbox {
    /// # Errors
    /// When the backend cannot count what it holds.
    pub(crate) fn new(
        store: Arc<dyn OutboxStore>,
        cfg: &SegmentConfig,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            pending: AtomicUsize::new(store.count()?),
            store,
            batch_size: cfg.batch_size,
            interval: cfg.flush_interval,
            wake: Notify::new(),
        })
    }

    /// Queues `msg` (not flushed here: the sender flushes before it sends, so a
    /// message leaves only once it — and everything written before it — is
    /// durable).
    ///
    /// # Errors
    /// When the store fails.
    pub(crate) fn push(&self, msg: &Value) -> Result<(), StoreError> {
        self.store.push(msg)?;
        let pending = self.pending.fetch_add(1, Ordering::AcqRel) + 1;
        if pending >= self.batch_size {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Messages waiting to be sent.
    pub(crate) fn len(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sends batches until `stop`; keeps messages through failures.
    pub(crate) async fn run(self: Arc<Self>, http: HttpClient, stop: CancellationToken) {
        let mut backoff = Duration::ZERO;
        loop {
            let wait = if backoff.is_zero() {
                self.interval
            } else {
                backoff
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
            match self.drain(&http).await {
                Ok(()) => backoff = Duration::ZERO,
                Err(e) => {
                    backoff = (backoff * 2).clamp(Duration::from_secs(1), Duration::from_secs(60));
                    tracing::warn!(error = %e, pending = self.len(), retry_in = ?backoff, "Segment write-back failed; will retry.");
                }
            }
        }
    }

    /// Sends everything pending, batch by batch (also used at the end of a
    /// `--live` local run, where no background task runs).
    ///
    /// # Errors
    /// When a batch cannot be delivered; what was not delivered stays queued.
    pub(crate) async fn drain(&self, http: &HttpClient) -> Result<(), ConnectorError> {
        let store_err = |e: StoreError| ConnectorError::Invalid(e.to_string());
        loop {
            let oldest = self.store.oldest(self.batch_size).map_err(store_err)?;
            if oldest.is_empty() {
                return Ok(());
            }
            // The output-commit rule: these messages, and what their runs wrote
            // before queuing them, are durable before they leave.
            self.store.sync_before_send().await.map_err(store_err)?;
            let (ids, batch): (Vec<u64>, Vec<Option<Value>>) = oldest.into_iter().unzip();
            let batch: Vec<Value> = batch.into_iter().flatten().collect();
            let mut req = OutboundRequest::new(
                Method::POST,
                Destination::Connection {
                    name: TRACKING.into(),
                    path: "/v1/batch".into(),
                },
            );
            req.body = Body::Json(json!({
                "batch": batch,
                "sentAt": crate::event::format_time(chrono::Utc::now()),
            }));
            let exchange = http.send(req, None).await;
            let resp = exchange.result?;
            if resp.status == 400 {
                // Validated before queuing, so Segment refusing it will not change.
                tracing::error!(count = ids.len(), body = %resp.body, "Segment refused a write-back batch; dropping it.");
            } else if !resp.ok() {
                return Err(check("segment tracking API", &resp)
                    .err()
                    .unwrap_or_else(|| {
                        ConnectorError::Invalid(format!("unexpected status {}", resp.status))
                    }));
            }
            self.store.remove(&ids).map_err(store_err)?;
            let _ = self
                .pending
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    Some(n.saturating_sub(ids.len()))
                });
        }
    }
}
