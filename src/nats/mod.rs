//! The NATS JetStream backend's connection (`[store] backend = "nats"`, DESIGN.md §8):
//! what `store/` is to sled. One stream per deployment (named by `[nats] prefix`)
//! holds everything spur keeps in the cluster, each kind under its own subjects, so
//! that one atomic batch (ADR-50) can write any of them together:
//!
//! - `P.ev.N`: the event log, partition `N` (a hash of the user, so one user's events
//!   keep their order in one partition);
//! - `P.id.H`: one marker per `messageId` (`H`: its hash), expiring after the dedup
//!   window by its own TTL. An event and its marker are written in one atomic batch,
//!   the marker only if its subject is empty: an event is stored exactly when its id
//!   is claimed, across every node and connection, and a crash between the two
//!   cannot happen (`ingest.rs`).
//!
//! The stream is created at start-up, or checked when it exists: a setting spur
//! depends on that differs is an error naming it (`provision.rs`), never changed
//! behind the operator's back.

mod approvals;
mod batch;
mod ingest;
mod partitions;
mod provision;
mod queue;
mod sources;
mod state;

pub use approvals::NatsApprovals;
pub use ingest::Retention;
pub use queue::NatsQueue;
pub(crate) use sources::NatsSources;
pub use state::NatsState;

use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream::DirectGetErrorKind;

use crate::config::{NatsAuth, NatsConfig};

/// Partitions of the event log (kept in the stream's metadata, checked at start-up:
/// changing it would move users between partitions and break their order).
pub(crate) const PARTITIONS: u32 = 64;

/// How long start-up waits for a JetStream that cannot answer yet.
const START_UP: Duration = Duration::from_secs(30);

/// Oldest server with what spur uses: atomic batches (2.12), per-message TTLs (2.11).
const MIN_SERVER: (u32, u32) = (2, 12);

/// Errors of the NATS backend; each names the server, the stream or the setting.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("cannot connect to NATS at {servers}: {reason}")]
    Connect { servers: String, reason: String },
    #[error("NATS at {servers}: {reason}")]
    Server { servers: String, reason: String },
    #[error(
        "stream {stream:?} in the NATS cluster does not match what spur needs:\n  {}\nChange the stream (`nats stream edit {stream}`), or set [nats] prefix to use another one.",
        .problems.join("\n  ")
    )]
    Mismatch {
        stream: String,
        problems: Vec<String>,
    },
    /// The cluster did not take a write (unreachable, no quorum, timed out): the
    /// caller may try again.
    #[error("the NATS cluster did not take the write: {0}")]
    Unavailable(String),
}

impl From<NatsError> for crate::store::StoreError {
    fn from(e: NatsError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

/// A connection to the cluster, its stream provisioned; cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    client: async_nats::Client,
    js: jetstream::Context,
    /// The stream's name, which is also the first token of its subjects.
    prefix: String,
    handle: jetstream::stream::Stream<()>,
    /// The runtime the connection lives on (blocking callers wait on it).
    runtime: tokio::runtime::Handle,
}

impl Cluster {
    /// Connects to `config`'s servers and creates or checks spur's stream.
    ///
    /// # Errors
    /// When no server answers, one is too old or lacks JetStream, authentication
    /// fails, or the stream exists with settings spur cannot work with.
    pub async fn connect(config: &NatsConfig) -> Result<Self, NatsError> {
        let servers = config.servers.join(", ");
        let connect_error = |reason: String| NatsError::Connect {
            servers: servers.clone(),
            reason,
        };
        let addrs = config
            .servers
            .iter()
            .map(|s| s.parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| connect_error(format!("nats.servers: {e}")))?;
        let client = options(config)
            .await
            .map_err(connect_error)?
            .connect(addrs.as_slice())
            .await
            .map_err(|e| connect_error(e.to_string()))?;
        let info = client.server_info();
        let server_error = |reason: String| NatsError::Server {
            servers: servers.clone(),
            reason,
        };
        if !supported(&info.version) {
            return Err(server_error(format!(
                "nats-server {} is too old: spur needs {}.{} or newer (atomic batches)",
                info.version, MIN_SERVER.0, MIN_SERVER.1
            )));
        }
        if !info.jetstream {
            return Err(server_error(
                "JetStream is not enabled (start nats-server with -js)".into(),
            ));
        }
        let js = jetstream::new(client.clone());
        // A cluster that is still forming (no leader yet, peers not all known)
        // answers late or not at all: wait for it, as a daemon started with its
        // cluster must.
        let deadline = tokio::time::Instant::now() + START_UP;
        loop {
            match provision::stream(&js, config).await {
                Ok(()) => break,
                Err(provision::Error::Transient(reason)) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(server_error(reason));
                    }
                    tracing::info!(%reason, "Waiting for JetStream.");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(provision::Error::Mismatch(problems)) => {
                    return Err(NatsError::Mismatch {
                        stream: config.prefix.clone(),
                        problems,
                    });
                }
                Err(provision::Error::Other(reason)) => return Err(server_error(reason)),
            }
        }
        let handle = js
            .get_stream_no_info(&config.prefix)
            .await
            .map_err(|e| server_error(e.to_string()))?;
        Ok(Self {
            client,
            js,
            prefix: config.prefix.clone(),
            handle,
            runtime: tokio::runtime::Handle::current(),
        })
    }

    /// `P.kind.rest`.
    pub(crate) fn subject(&self, kind: &str, rest: &str) -> String {
        format!("{}.{kind}.{rest}", self.prefix)
    }

    /// The last message of `subject`, if it has one.
    ///
    /// # Errors
    /// When the cluster does not answer.
    pub(crate) async fn last(&self, subject: &str) -> Result<Option<StreamMessage>, NatsError> {
        match self.handle.direct_get_last_for_subject(subject).await {
            Ok(m) => Ok(Some(m)),
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(None),
            Err(e) => Err(NatsError::Unavailable(e.to_string())),
        }
    }

    /// The message with stream sequence `seq`, if it is still stored.
    ///
    /// # Errors
    /// When the cluster does not answer.
    pub(crate) async fn at(&self, seq: u64) -> Result<Option<StreamMessage>, NatsError> {
        match self.handle.direct_get(seq).await {
            Ok(m) => Ok(Some(m)),
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(None),
            Err(e) => Err(NatsError::Unavailable(e.to_string())),
        }
    }

    /// The subjects matching `filter` that hold messages, each once. (async-nats
    /// asks for a further page of the stream's subject list while its total grew
    /// meanwhile, and the server's next page can repeat subjects: they are merged.)
    ///
    /// # Errors
    /// When the cluster does not answer.
    pub(crate) async fn subjects(&self, filter: &str) -> Result<Vec<String>, NatsError> {
        let mut info = self
            .handle
            .info_with_subjects(filter)
            .await
            .map_err(|e| NatsError::Unavailable(e.to_string()))?;
        let mut out = std::collections::BTreeSet::new();
        while let Some(s) = futures_util::StreamExt::next(&mut info).await {
            out.insert(s.map_err(|e| NatsError::Unavailable(e.to_string()))?.0);
        }
        Ok(out.into_iter().collect())
    }

    /// The last message of each subject matching `filter`, by subject (the stream's
    /// subject list and a direct get per subject, which any replica answers: for
    /// listings, not hot paths).
    ///
    /// # Errors
    /// When the cluster does not answer.
    pub(crate) async fn lasts(&self, filter: &str) -> Result<Vec<StreamMessage>, NatsError> {
        let mut out = Vec::new();
        for subject in self.subjects(filter).await? {
            out.extend(self.last(&subject).await?);
        }
        Ok(out)
    }

    /// The stream's last sequence number.
    ///
    /// # Errors
    /// When the cluster does not answer.
    pub(crate) async fn last_seq(&self) -> Result<u64, NatsError> {
        let info = self
            .handle
            .get_info()
            .await
            .map_err(|e| NatsError::Unavailable(e.to_string()))?;
        Ok(info.state.last_sequence)
    }

    /// Runs `f` on the connection's runtime from blocking code (a worker thread, or
    /// a synchronous call made inside the runtime, which gives its thread up
    /// meanwhile).
    pub(crate) fn block<F: std::future::Future>(&self, f: F) -> F::Output {
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::task::block_in_place(|| self.runtime.block_on(f))
        } else {
            self.runtime.block_on(f)
        }
    }

    /// The stream's name.
    pub fn stream(&self) -> &str {
        &self.prefix
    }

    /// The JetStream context (for tests and operators' tools).
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }
}

/// The client's options: its name, authentication and TLS.
async fn options(config: &NatsConfig) -> Result<async_nats::ConnectOptions, String> {
    let mut o = match &config.auth {
        NatsAuth::Creds(path) => async_nats::ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|e| format!("nats.creds: cannot read {}: {e}", path.display()))?,
        NatsAuth::Token(t) => async_nats::ConnectOptions::with_token(t.expose().to_owned()),
        NatsAuth::UserPassword { user, password } => {
            async_nats::ConnectOptions::with_user_and_password(
                user.clone(),
                password.expose().to_owned(),
            )
        }
        NatsAuth::None => async_nats::ConnectOptions::new(),
    }
    .name("spur")
    .connection_timeout(Duration::from_secs(5))
    // Reconnects forever: a cluster that comes back is used again (writes fail
    // meanwhile, and ingest answers 503).
    .max_reconnects(None);
    let tls_url = config.servers.iter().any(|s| s.starts_with("tls://"));
    if let Some(tls) = &config.tls {
        o = o.require_tls(true);
        if let Some(ca) = &tls.ca {
            o = o.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
            o = o.add_client_certificate(cert.clone(), key.clone());
        }
    } else if tls_url {
        o = o.require_tls(true);
    }
    Ok(o)
}

/// Whether a server `version` ("2.15.1") has what spur uses.
fn supported(version: &str) -> bool {
    let mut parts = version.split(['.', '-']).map(str::parse::<u32>);
    match (parts.next(), parts.next()) {
        (Some(Ok(major)), Some(Ok(minor))) => (major, minor) >= MIN_SERVER,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn servers_before_atomic_batches_are_refused() {
        for (v, ok) in [
            ("2.15.1", true),
            ("2.12.0", true),
            ("3.0.0-beta", true),
            ("2.11.9", false),
            ("2.9.10", false),
            ("nonsense", false),
        ] {
            assert_eq!(super::supported(v), ok, "{v}");
        }
    }
}
