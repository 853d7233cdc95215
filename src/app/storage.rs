//! The storage seam, opened for one backend (`[store] backend`, DESIGN.md §8): every
//! handle the daemon persists through, built in one place. The rest of the daemon
//! holds these traits; only this file names a backend.

use std::sync::Arc;

use anyhow::Context as _;

use crate::approval::{ApprovalStore, SledApprovals};
use crate::audit::{AuditLog, SledAudit};
use crate::clock::SharedClock;
use crate::config::{Config, StoreBackend};
use crate::connectors::segment::{OutboxStore, SledOutbox};
use crate::queue::{Dispatch, Queue, SledQueue};
use crate::run::{DeadLetters, RunStore, SledDeadLetters, SledRunRecords};
use crate::script::pinned::{ScriptSources, SledSources};
use crate::state::{SledState, StateStore};
use crate::store::Store;

/// What a backend keeps, as the traits of the seam.
pub struct Storage {
    pub(crate) clock: SharedClock,
    pub(crate) state: Arc<dyn StateStore>,
    pub(crate) approvals: ApprovalStore,
    pub(crate) outbox: Arc<dyn OutboxStore>,
    pub(crate) sources: Arc<dyn ScriptSources>,
    pub(crate) runs: RunStore,
    pub(crate) dead: DeadLetters,
    pub(crate) audit: Arc<dyn AuditLog>,
    backend: Backend,
}

/// The backend itself, for what only it can do (open its queue).
enum Backend {
    Sled(Store),
    /// Jobs, events and state in the cluster; what stays per node (run records,
    /// dead letters, audit, the Segment outbox, script sources, approvals) on the
    /// node's own store.
    Nats(Box<Nats>),
}

struct Nats {
    cluster: crate::nats::Cluster,
    local: Store,
    retention: crate::nats::Retention,
}

impl Storage {
    /// Opens `config`'s backend (blocking work off the async runtime).
    ///
    /// # Errors
    /// When the backend cannot be opened.
    pub async fn open(config: &Config, clock: SharedClock) -> anyhow::Result<Self> {
        match config.store {
            StoreBackend::Sled => {
                let data_dir = config.server.data_dir.clone();
                let mode = config.sled_mode;
                let store =
                    tokio::task::spawn_blocking(move || Store::open_with(&data_dir, clock, mode))
                        .await?
                        .context("opening the store")?;
                Self::sled(store)
            }
            StoreBackend::Nats => {
                let cluster = crate::nats::Cluster::connect(&config.nats).await?;
                let data_dir = config.server.data_dir.clone();
                let mode = config.sled_mode;
                let local =
                    tokio::task::spawn_blocking(move || Store::open_with(&data_dir, clock, mode))
                        .await?
                        .context("opening the node's own store")?;
                let retention = crate::nats::Retention {
                    dedup: config.retention.dedup,
                    events: config.retention.events,
                };
                let mut storage = Self::sled(local.clone())?;
                storage.state = Arc::new(crate::nats::NatsState::new(
                    cluster.clone(),
                    Arc::clone(local.clock()),
                ));
                storage.sources = Arc::new(crate::nats::NatsSources::new(cluster.clone()));
                storage.approvals = Arc::new(crate::nats::NatsApprovals::new(
                    cluster.clone(),
                    Arc::clone(local.clock()),
                ));
                storage.backend = Backend::Nats(Box::new(Nats {
                    cluster,
                    local,
                    retention,
                }));
                Ok(storage)
            }
        }
    }

    /// A temporary in-memory store (`spur test`, `spur run`, `spur check`, the REPL).
    ///
    /// # Errors
    /// When it cannot be created.
    pub fn temporary(clock: SharedClock) -> anyhow::Result<Self> {
        Self::sled(Store::temporary_with(clock).context("creating the in-memory store")?)
    }

    /// The sled backend on `store`.
    ///
    /// # Errors
    /// When its trees cannot be opened.
    pub fn sled(store: Store) -> anyhow::Result<Self> {
        Ok(Self {
            clock: Arc::clone(store.clock()),
            state: Arc::new(SledState::open(&store)?),
            approvals: SledApprovals::open(&store)?,
            outbox: Arc::new(SledOutbox::open(&store)?),
            sources: Arc::new(SledSources::open(&store)?),
            runs: SledRunRecords::open(&store),
            dead: SledDeadLetters::open(&store),
            audit: SledAudit::open(&store)?,
            backend: Backend::Sled(store),
        })
    }

    /// The backend's job queue; `dispatch` decides which handlers an event runs.
    /// Called once per `Storage`: each queue starts its own writer.
    ///
    /// # Errors
    /// When the queue cannot be opened (its parked runs read back).
    pub fn queue(&self, dispatch: Arc<dyn Dispatch>) -> anyhow::Result<Queue> {
        match &self.backend {
            Backend::Sled(store) => {
                SledQueue::open(store.clone(), dispatch).context("opening the queue")
            }
            Backend::Nats(n) => crate::nats::NatsQueue::open(
                n.cluster.clone(),
                n.local.clone(),
                dispatch,
                n.retention,
            )
            .context("opening the NATS queue"),
        }
    }
}
