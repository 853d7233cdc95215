//! Outbound connectors: plain async clients with no Rhai types. `http` is the base
//! (named connections, auth injection, retries, rate limits, dry-run recording);
//! service clients build on it.

pub mod http;
pub(crate) mod recorder;
pub(crate) mod redact;
pub(crate) mod segment;
pub(crate) mod slack;

use std::fmt;

use serde::{Deserialize, Serialize};

/// One attempt of an outbound call, as the run record shows it (no secrets).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CallRecord {
    pub method: String,
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub ms: f64,
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The request may have reached the service, but no answer came (a time-out or
    /// a connection lost after sending): the effect may or may not have happened.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unknown: bool,
    /// Answered by the dry-run recorder, not the network.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// When the attempt started (ms since the epoch, the wall clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_ms: Option<i64>,
    /// The trace span of the call (its attempts share it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span_id: Option<String>,
}

/// Errors of outbound calls. Messages never contain secrets.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum ConnectorError {
    #[error("unknown connection {name:?} (configured: {known})")]
    UnknownConnection { name: String, known: String },
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("{method} {url}: {message}{}", if *unknown && *fail_on_unknown { UNKNOWN_NOT_RESENT } else { "" })]
    Transport {
        method: String,
        url: String,
        message: String,
        /// The request may have reached the service (see [`CallRecord::unknown`]).
        unknown: bool,
        /// The connection says such a call is never re-sent on its own
        /// (`on_unknown = "fail"`).
        fail_on_unknown: bool,
    },
    #[error(
        "{method} {url}: the response body passed {bytes} bytes, over the {limit}-byte limit (limits.max_response_bytes, or the connection's max_response_bytes)"
    )]
    TooLarge {
        method: String,
        url: String,
        bytes: u64,
        limit: usize,
    },
    #[error("{0}")]
    Service(ServiceError),
    #[error("{0}")]
    Rejected(String),
    #[error(
        "{method} {path} is not allowed on connection {connection:?}: its allow list is {allow:?}"
    )]
    NotAllowed {
        connection: String,
        method: String,
        path: String,
        allow: Vec<String>,
    },
}

const UNKNOWN_NOT_RESENT: &str = " — the request may have reached the service (outcome \
    unknown), and the connection has on_unknown = \"fail\", so it is not sent again on its \
    own: check the service, then replay the dead letter to send it again";

/// A service answered with an error; `message` is the service's own.
#[derive(Debug, Clone)]
pub(crate) struct ServiceError {
    pub service: String,
    pub status: u16,
    pub message: String,
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} answered {}: {}",
            self.service, self.status, self.message
        )
    }
}

impl ConnectorError {
    /// Whether running again later might succeed: the one place that decides if a
    /// connector error retries the run or fails it at once. Not retried: a request
    /// the client refuses (bad URL, unknown connection, missing configuration), a
    /// body over the limit, a service's 4xx other than 408 and 429, and an unknown
    /// outcome on a connection with `on_unknown = "fail"`, and a call outside a
    /// connection's `allow` list.
    pub(crate) fn is_retryable(&self) -> bool {
        match self {
            Self::UnknownConnection { .. }
            | Self::Invalid(_)
            | Self::TooLarge { .. }
            | Self::NotAllowed { .. } => false,
            Self::Service(e) => e.status == 408 || e.status == 429 || e.status >= 500,
            Self::Transport {
                unknown,
                fail_on_unknown,
                ..
            } => !(*unknown && *fail_on_unknown),
            Self::Rejected(_) => true,
        }
    }
}
