//! The outbound HTTP client every connector uses.
//!
//! - Named connections: the host joins `base_url` and the script's `path`, injects
//!   the connection's auth and headers (secrets never pass through scripts), and
//!   refuses paths that would leave the connection's origin.
//! - Retries inside the call: connection errors, 429 and 5xx (not 501) with
//!   exponential backoff and jitter, honouring `Retry-After` on 429 and 503 (at most
//!   30 s, never past the run's deadline). A POST or PATCH is not re-sent after a
//!   read time-out or a 500, where the service may have acted: such an attempt's
//!   outcome is marked unknown.
//! - Responses are read as a stream and stop at the limit
//!   (`limits.max_response_bytes`, or the connection's own): memory stays bounded.
//! - A named connection's secrets never leave its origin: its calls do not follow
//!   redirects to another origin.
//! - Each connection's `rate_limit` (requests/s) and `max_concurrency` are shared by
//!   every worker.
//! - Dry-run: a [`Recorder`] answers instead of the network.
//! - Every attempt becomes a [`CallRecord`] (URL without secrets).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Url};
use tokio::sync::{Mutex as AsyncMutex, Semaphore};

use super::ConnectorError;
use super::recorder::{Recorder, glob_match};
use super::redact::Redactor;
use crate::config::{Auth, ConnectionConfig};

mod call;
mod request;

use call::Call;
pub use call::retry_after;
pub(crate) use request::{Body, Destination, Exchange, OutboundRequest, OutboundResponse};

struct Connection {
    name: String,
    config: ConnectionConfig,
    base: Url,
    limiter: Option<AsyncMutex<Instant>>,
    interval: Duration,
    slots: Option<Semaphore>,
}

/// The shared client; cheap to clone.
#[derive(Clone)]
pub struct HttpClient {
    inner: Arc<Inner>,
}

struct Inner {
    /// For plain URLs: follows up to 5 redirects.
    client: reqwest::Client,
    /// For named connections: follows redirects only within the request's origin.
    scoped: reqwest::Client,
    connections: HashMap<String, Connection>,
    recorder: Option<Arc<Recorder>>,
    redactor: Arc<Redactor>,
    /// Largest response body read when the connection sets no limit of its own.
    max_response_bytes: usize,
}

impl HttpClient {
    /// Builds the client; `recorder` switches on dry-run. `max_response_bytes` is
    /// the default limit of a response body (`limits.max_response_bytes`).
    ///
    /// # Errors
    /// When a connection's `base_url` does not parse or TLS cannot initialise.
    pub(crate) fn new(
        connections: &std::collections::BTreeMap<String, ConnectionConfig>,
        max_response_bytes: usize,
        redactor: Arc<Redactor>,
        recorder: Option<Arc<Recorder>>,
    ) -> Result<Self, ConnectorError> {
        install_crypto_provider();
        let build = |policy| {
            reqwest::Client::builder()
                .user_agent(concat!("spur/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(Duration::from_secs(5))
                .pool_idle_timeout(Duration::from_mins(1))
                .redirect(policy)
                .no_proxy()
                .build()
                .map_err(|e| ConnectorError::Invalid(format!("building the HTTP client: {e}")))
        };
        let client = build(reqwest::redirect::Policy::limited(5))?;
        let scoped = build(reqwest::redirect::Policy::custom(|attempt| {
            let same_origin = attempt
                .previous()
                .first()
                .is_some_and(|first| first.origin() == attempt.url().origin());
            if !same_origin {
                // Answered as is (the 3xx reaches the script), never followed.
                attempt.stop()
            } else if attempt.previous().len() > 5 {
                attempt.error("too many redirects")
            } else {
                attempt.follow()
            }
        }))?;
        let mut map = HashMap::new();
        for (name, config) in connections {
            let base = Url::parse(&format!("{}/", config.base_url.trim_end_matches('/'))).map_err(
                |e| ConnectorError::Invalid(format!("connections.{name}.base_url: {e}")),
            )?;
            let interval = config.rate_limit.map_or(Duration::ZERO, |r| {
                crate::duration::from_secs_f64(1.0 / r).unwrap_or(crate::duration::MAX)
            });
            map.insert(
                name.clone(),
                Connection {
                    name: name.clone(),
                    config: config.clone(),
                    base,
                    limiter: config.rate_limit.map(|_| AsyncMutex::new(Instant::now())),
                    interval,
                    slots: config.max_concurrency.map(Semaphore::new),
                },
            );
        }
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                scoped,
                connections: map,
                recorder,
                redactor,
                max_response_bytes,
            }),
        })
    }

    pub(crate) fn redactor(&self) -> &Redactor {
        &self.inner.redactor
    }

    pub(crate) fn is_dry_run(&self) -> bool {
        self.inner.recorder.is_some()
    }

    /// Approval patterns of a connection (`require_approval`).
    pub(crate) fn approval_patterns(&self, name: &str) -> &[String] {
        self.inner
            .connections
            .get(name)
            .map_or(&[], |c| c.config.require_approval.as_slice())
    }

    /// Sends `req`, retrying as the module doc says, within `deadline` if given.
    pub(crate) async fn send(&self, req: OutboundRequest, deadline: Option<Instant>) -> Exchange {
        let mut attempts = Vec::new();
        let result = match self.resolve(&req) {
            Err(e) => Err(e),
            Ok((url, conn)) => {
                let call = Call {
                    redacted_url: self.redact_url(&url),
                    method: req.method.as_str().to_owned(),
                    connection: conn.map(|c| c.name.clone()),
                    client: self,
                    req: &req,
                    url,
                    conn,
                };
                match &self.inner.recorder {
                    Some(recorder) => Ok(call.dry_run(recorder, &mut attempts)),
                    None => call.live(deadline, &mut attempts).await,
                }
            }
        };
        Exchange { result, attempts }
    }

    fn resolve(&self, req: &OutboundRequest) -> Result<(Url, Option<&Connection>), ConnectorError> {
        let (mut url, conn) = match &req.destination {
            Destination::Url(u) => {
                let url = Url::parse(u)
                    .map_err(|e| ConnectorError::Invalid(format!("url {u:?}: {e}")))?;
                if !matches!(url.scheme(), "http" | "https") {
                    return Err(ConnectorError::Invalid(format!(
                        "url {u:?}: only http and https are allowed"
                    )));
                }
                (url, None)
            }
            Destination::Connection { name, path } => match self.inner.connections.get(name) {
                Some(conn) => {
                    let allow = &conn.config.allow;
                    if !allow.is_empty()
                        && matching_pattern(allow, req.method.as_str(), path).is_none()
                    {
                        return Err(ConnectorError::NotAllowed {
                            connection: name.clone(),
                            method: req.method.as_str().to_owned(),
                            path: path.clone(),
                            allow: allow.clone(),
                        });
                    }
                    (join(&conn.base, path, name)?, Some(conn))
                }
                // A dry run records calls of connections not configured here, under a
                // reserved host, so scripts can be tried without credentials.
                None if self.inner.recorder.is_some() => {
                    let base = Url::parse(&format!("https://{name}.invalid/")).map_err(|e| {
                        ConnectorError::Invalid(format!("connection name {name:?}: {e}"))
                    })?;
                    (join(&base, path, name)?, None)
                }
                None => {
                    return Err(ConnectorError::UnknownConnection {
                        name: name.clone(),
                        known: self.known_connections(),
                    });
                }
            },
        };
        if !req.query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(req.query.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        }
        Ok((url, conn))
    }

    fn known_connections(&self) -> String {
        let mut names: Vec<&str> = self.inner.connections.keys().map(String::as_str).collect();
        names.sort_unstable();
        if names.is_empty() {
            "none".into()
        } else {
            names.join(", ")
        }
    }

    fn headers(
        req: &OutboundRequest,
        conn: Option<&Connection>,
    ) -> Result<HeaderMap, ConnectorError> {
        let mut map = HeaderMap::new();
        let mut put = |name: &str, value: &str, secret: bool| -> Result<(), ConnectorError> {
            let n = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| ConnectorError::Invalid(format!("header name {name:?} is invalid")))?;
            let mut v = HeaderValue::from_str(value).map_err(|_| {
                ConnectorError::Invalid(format!("header {name:?} has an invalid value"))
            })?;
            v.set_sensitive(secret);
            map.insert(n, v);
            Ok(())
        };
        for (k, v) in &req.headers {
            put(k, v, false)?;
        }
        if let Some(key) = &req.idempotency_key
            && req.method != Method::GET
            && req.method != Method::HEAD
        {
            put("idempotency-key", key, false)?;
        }
        if let Some(c) = conn {
            // The connection's auth and headers win over the script's.
            match &c.config.auth {
                Auth::None => {}
                Auth::Bearer(t) => put("authorization", &format!("Bearer {}", t.expose()), true)?,
                Auth::Basic { user, password } => {
                    let encoded = base64::engine::general_purpose::STANDARD.encode(format!(
                        "{}:{}",
                        user.expose(),
                        password.expose()
                    ));
                    put("authorization", &format!("Basic {encoded}"), true)?;
                }
            }
            for (k, v) in &c.config.headers {
                put(k, v.expose(), true)?;
            }
        }
        if !map.contains_key("accept") {
            map.insert("accept", HeaderValue::from_static("application/json"));
        }
        Ok(map)
    }

    /// The URL as records show it: no userinfo, secrets in the query removed.
    pub(crate) fn redact_url(&self, url: &Url) -> String {
        let mut u = url.clone();
        let _ = u.set_username("");
        let _ = u.set_password(None);
        self.inner.redactor.redact(u.as_str()).into_owned()
    }
}

impl Connection {
    async fn wait_for_rate_limit(&self) {
        let Some(limiter) = &self.limiter else { return };
        let wait_until = {
            let mut next = limiter.lock().await;
            let now = Instant::now();
            let slot = (*next).max(now);
            *next = slot + self.interval;
            slot
        };
        let now = Instant::now();
        if wait_until > now {
            tokio::time::sleep(wait_until - now).await;
        }
    }
}

/// Joins a connection's base URL and a path, refusing anything that would send the
/// connection's credentials to another origin.
fn join(base: &Url, path: &str, name: &str) -> Result<Url, ConnectorError> {
    let url = if path.starts_with("http://") || path.starts_with("https://") {
        Url::parse(path).map_err(|e| ConnectorError::Invalid(format!("path {path:?}: {e}")))?
    } else {
        let trimmed = path.trim_start_matches('/');
        if path.contains("..") || path.contains("://") {
            return Err(ConnectorError::Invalid(format!(
                "path {path:?} of connection {name:?} must be a plain path"
            )));
        }
        // A path from the API itself (Salesforce's nextRecordsUrl) may repeat the
        // base path; keep it relative to the origin then.
        let base_path = base.path().trim_end_matches('/');
        if !base_path.is_empty() && path.starts_with(base_path) && path.starts_with('/') {
            base.join(path)
        } else {
            base.join(trimmed)
        }
        .map_err(|e| ConnectorError::Invalid(format!("path {path:?}: {e}")))?
    };
    if url.origin() != base.origin() {
        return Err(ConnectorError::Invalid(format!(
            "path {path:?} leaves connection {name:?} ({}): credentials are only sent to its base_url",
            base.origin().ascii_serialization()
        )));
    }
    Ok(url)
}

/// Installs rustls' ring provider once per process (reqwest is built without one).
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The first `"METHOD path-glob"` pattern (`require_approval`, `allow`) matching a
/// call; `*` in the glob matches any characters, `/` included.
pub(crate) fn matching_pattern(patterns: &[String], method: &str, path: &str) -> Option<String> {
    let path = path.split('?').next().unwrap_or_default();
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    patterns
        .iter()
        .find(|p| {
            let mut parts = p.split_whitespace();
            let (Some(m), Some(glob)) = (parts.next(), parts.next()) else {
                return false;
            };
            (m == "*" || m.eq_ignore_ascii_case(method)) && (glob == "*" || glob_match(glob, &path))
        })
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_keeps_credentials_on_the_connection_origin() {
        let base = Url::parse("https://api.example.com/v1/").unwrap();
        assert_eq!(
            join(&base, "/users", "x").unwrap().as_str(),
            "https://api.example.com/v1/users"
        );
        assert_eq!(
            join(&base, "users/1", "x").unwrap().as_str(),
            "https://api.example.com/v1/users/1"
        );
        assert_eq!(
            join(&base, "/v1/query/01g-2000", "x").unwrap().as_str(),
            "https://api.example.com/v1/query/01g-2000"
        );
        assert!(join(&base, "https://evil.example/steal", "x").is_err());
        assert!(join(&base, "/../admin", "x").is_err());
        assert!(join(&base, "https://api.example.com/v1/ok", "x").is_ok());
    }

    #[test]
    fn patterns_match_method_and_path_glob() {
        let p = vec![
            "DELETE *".to_owned(),
            "POST /crm/v3/objects/deals*".to_owned(),
        ];
        assert_eq!(
            matching_pattern(&p, "DELETE", "/contacts/1").as_deref(),
            Some("DELETE *")
        );
        assert!(matching_pattern(&p, "POST", "/crm/v3/objects/deals/batch?x=1").is_some());
        assert!(matching_pattern(&p, "POST", "/crm/v3/objects/contacts").is_none());
        assert!(matching_pattern(&p, "GET", "/crm/v3/objects/deals").is_none());
    }
}
