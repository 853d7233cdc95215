//! The outbound HTTP client every connector uses.
//!
//! - Named connections: the host joins `base_url` and the script's `path`, injects
//!   the connection's auth and headers (secrets never pass through scripts), and
//!   refuses paths that would leave the connection's origin.
//! - Retries inside the call: connection errors, 429 and 5xx (not 501) with
//!   exponential backoff and jitter, honouring `Retry-After`. A POST or PATCH is not
//!   re-sent after a read time-out or a 500, where the service may have acted.
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
use serde_json::Value;
use tokio::sync::{Mutex as AsyncMutex, Semaphore};

use super::recorder::{RecordedCall, Recorder};
use super::redact::Redactor;
use super::{CallRecord, ConnectorError};
use crate::config::{Auth, ConnectionConfig};

/// Largest response body accepted.
pub const MAX_RESPONSE_BYTES: usize = 10 << 20;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_ATTEMPTS: u32 = 3;
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Where a request goes.
#[derive(Debug, Clone)]
pub enum Destination {
    Url(String),
    Connection { name: String, path: String },
}

/// A request body.
#[derive(Debug, Clone, Default)]
pub enum Body {
    #[default]
    None,
    Json(Value),
    Text(String),
    Form(Vec<(String, String)>),
}

/// An outbound request as scripts and connectors describe it.
#[derive(Debug, Clone)]
pub struct OutboundRequest {
    pub method: Method,
    pub destination: Destination,
    pub headers: Vec<(String, String)>,
    pub query: Vec<(String, String)>,
    pub body: Body,
    pub timeout: Option<Duration>,
    /// Sent as `Idempotency-Key` on non-GET requests when set.
    pub idempotency_key: Option<String>,
}

impl OutboundRequest {
    pub fn new(method: Method, destination: Destination) -> Self {
        Self {
            method,
            destination,
            headers: Vec::new(),
            query: Vec::new(),
            body: Body::None,
            timeout: None,
            idempotency_key: None,
        }
    }
}

/// A response, with secrets already removed from headers and body.
#[derive(Debug, Clone)]
pub struct OutboundResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub json: Option<Value>,
}

impl OutboundResponse {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The outcome of a call and the record of each attempt.
#[derive(Debug)]
pub struct Exchange {
    pub result: Result<OutboundResponse, ConnectorError>,
    pub attempts: Vec<CallRecord>,
}

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
    client: reqwest::Client,
    connections: HashMap<String, Connection>,
    recorder: Option<Arc<Recorder>>,
    redactor: Arc<Redactor>,
}

impl HttpClient {
    /// Builds the client; `recorder` switches on dry-run.
    ///
    /// # Errors
    /// When a connection's `base_url` does not parse or TLS cannot initialise.
    pub fn new(
        connections: &std::collections::BTreeMap<String, ConnectionConfig>,
        redactor: Arc<Redactor>,
        recorder: Option<Arc<Recorder>>,
    ) -> Result<Self, ConnectorError> {
        install_crypto_provider();
        let client = reqwest::Client::builder()
            .user_agent(concat!("spur/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_mins(1))
            .redirect(reqwest::redirect::Policy::limited(5))
            .no_proxy()
            .build()
            .map_err(|e| ConnectorError::Invalid(format!("building the HTTP client: {e}")))?;
        let mut map = HashMap::new();
        for (name, config) in connections {
            let base = Url::parse(&format!("{}/", config.base_url.trim_end_matches('/'))).map_err(
                |e| ConnectorError::Invalid(format!("connections.{name}.base_url: {e}")),
            )?;
            let interval = config
                .rate_limit
                .map_or(Duration::ZERO, |r| Duration::from_secs_f64(1.0 / r));
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
                connections: map,
                recorder,
                redactor,
            }),
        })
    }

    pub fn redactor(&self) -> &Redactor {
        &self.inner.redactor
    }

    pub fn recorder(&self) -> Option<&Arc<Recorder>> {
        self.inner.recorder.as_ref()
    }

    pub fn is_dry_run(&self) -> bool {
        self.inner.recorder.is_some()
    }

    pub fn has_connection(&self, name: &str) -> bool {
        self.inner.connections.contains_key(name)
    }

    /// Approval patterns of a connection (`require_approval`).
    pub fn approval_patterns(&self, name: &str) -> &[String] {
        self.inner
            .connections
            .get(name)
            .map_or(&[], |c| c.config.require_approval.as_slice())
    }

    /// Sends `req`, retrying as the module doc says, within `deadline` if given.
    pub async fn send(&self, req: OutboundRequest, deadline: Option<Instant>) -> Exchange {
        let mut attempts = Vec::new();
        let result = self.send_inner(req, deadline, &mut attempts).await;
        Exchange { result, attempts }
    }

    async fn send_inner(
        &self,
        req: OutboundRequest,
        deadline: Option<Instant>,
        attempts: &mut Vec<CallRecord>,
    ) -> Result<OutboundResponse, ConnectorError> {
        let (url, conn) = self.resolve(&req)?;
        let redacted_url = self.redact_url(&url);
        let method_name = req.method.as_str().to_owned();
        let conn_name = conn.map(|c| c.name.clone());

        if let Some(recorder) = &self.inner.recorder {
            let started = Instant::now();
            let path = match (&req.destination, conn) {
                (Destination::Connection { .. }, Some(c)) => {
                    let base_path = c.base.path().trim_end_matches('/');
                    url.path()
                        .strip_prefix(base_path)
                        .unwrap_or(url.path())
                        .to_owned()
                }
                _ => url.path().to_owned(),
            };
            let body = match &req.body {
                Body::None => None,
                Body::Json(v) => Some(v.clone()),
                Body::Text(t) => Some(Value::String(t.clone())),
                Body::Form(f) => Some(Value::Object(
                    f.iter()
                        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                        .collect(),
                )),
            };
            let (status, reply) = recorder.answer(RecordedCall {
                method: method_name.clone(),
                url: redacted_url.clone(),
                path,
                connection: conn_name.clone(),
                body,
            });
            attempts.push(CallRecord {
                method: method_name,
                url: redacted_url,
                connection: conn_name,
                status: Some(status),
                ms: started.elapsed().as_secs_f64() * 1000.0,
                attempt: 1,
                error: None,
                dry_run: true,
            });
            let body = reply.to_string();
            return Ok(OutboundResponse {
                status,
                headers: vec![("content-type".into(), "application/json".into())],
                body,
                json: Some(reply),
            });
        }

        let max_attempts = conn
            .and_then(|c| c.config.max_attempts)
            .unwrap_or(DEFAULT_ATTEMPTS);
        let per_attempt = req
            .timeout
            .or_else(|| conn.and_then(|c| c.config.timeout_ms.map(Duration::from_millis)))
            .unwrap_or(DEFAULT_TIMEOUT);
        // Only methods that are idempotent by definition are re-sent after a 500 or
        // a read time-out: many services ignore Idempotency-Key (Slack, Jira, HubSpot).
        let idempotent = matches!(
            req.method,
            Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS
        );
        let headers = Self::headers(&req, conn)?;

        let _slot = match conn.and_then(|c| c.slots.as_ref()) {
            Some(s) => Some(
                s.acquire()
                    .await
                    .map_err(|_| ConnectorError::Invalid("connection is shutting down".into()))?,
            ),
            None => None,
        };

        let mut attempt = 0;
        loop {
            attempt += 1;
            if let Some(c) = conn {
                c.wait_for_rate_limit().await;
            }
            let timeout = match deadline {
                Some(d) => per_attempt.min(d.saturating_duration_since(Instant::now())),
                None => per_attempt,
            };
            if timeout.is_zero() {
                return Err(ConnectorError::Transport {
                    method: method_name,
                    url: redacted_url,
                    message: "run time limit reached before the call".into(),
                    retryable: true,
                });
            }
            let mut builder = self
                .inner
                .client
                .request(req.method.clone(), url.clone())
                .headers(headers.clone())
                .timeout(timeout);
            builder = match &req.body {
                Body::None => builder,
                Body::Json(v) => builder
                    .header("content-type", "application/json; charset=utf-8")
                    .body(serde_json::to_vec(v).expect("a JSON value always serialises")),
                Body::Text(t) => builder.body(t.clone()),
                Body::Form(f) => {
                    let encoded = form_urlencoded::Serializer::new(String::new())
                        .extend_pairs(f.iter())
                        .finish();
                    builder
                        .header("content-type", "application/x-www-form-urlencoded")
                        .body(encoded)
                }
            };
            let started = Instant::now();
            let outcome = match builder.send().await {
                Ok(resp) => self.read_response(resp, &method_name, &redacted_url).await,
                Err(e) => Err(e),
            };
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            let (retry, delay_hint, result) = match outcome {
                Ok(resp) => {
                    attempts.push(CallRecord {
                        method: method_name.clone(),
                        url: redacted_url.clone(),
                        connection: conn_name.clone(),
                        status: Some(resp.status),
                        ms,
                        attempt,
                        error: None,
                        dry_run: false,
                    });
                    let s = resp.status;
                    let retry = s == 429
                        || matches!(s, 502..=504)
                        || (idempotent && s >= 500 && s != 501 && s != 505 && s != 511);
                    let hint = resp.header("retry-after").and_then(parse_retry_after);
                    (retry, hint, Ok(resp))
                }
                Err(e) => {
                    let message = self.inner.redactor.redact(&describe(&e)).into_owned();
                    attempts.push(CallRecord {
                        method: method_name.clone(),
                        url: redacted_url.clone(),
                        connection: conn_name.clone(),
                        status: None,
                        ms,
                        attempt,
                        error: Some(message.clone()),
                        dry_run: false,
                    });
                    let retry = e.is_connect() || (e.is_timeout() && idempotent);
                    let err = ConnectorError::Transport {
                        method: method_name.clone(),
                        url: redacted_url.clone(),
                        message: if attempt > 1 {
                            format!("{message} (after {attempt} attempts)")
                        } else {
                            message
                        },
                        retryable: e.is_connect() || e.is_timeout(),
                    };
                    (retry, None, Err(err))
                }
            };
            if !retry || attempt >= max_attempts {
                return result;
            }
            let delay = delay_hint.unwrap_or_else(|| backoff(attempt));
            if let Some(d) = deadline
                && Instant::now() + delay >= d
            {
                return result;
            }
            tokio::time::sleep(delay).await;
        }
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
                Some(conn) => (join(&conn.base, path, name)?, Some(conn)),
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

    async fn read_response(
        &self,
        resp: reqwest::Response,
        method: &str,
        url: &str,
    ) -> Result<OutboundResponse, reqwest::Error> {
        let status = resp.status().as_u16();
        let red = &self.inner.redactor;
        let headers: Vec<(String, String)> = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    red.redact(&String::from_utf8_lossy(v.as_bytes()))
                        .into_owned(),
                )
            })
            .collect();
        let bytes = resp.bytes().await?;
        let body = if bytes.len() > MAX_RESPONSE_BYTES {
            tracing::warn!(%method, %url, bytes = bytes.len(), "Response body truncated.");
            String::from_utf8_lossy(&bytes[..MAX_RESPONSE_BYTES]).into_owned()
        } else {
            String::from_utf8_lossy(&bytes).into_owned()
        };
        let body = red.redact(&body).into_owned();
        let json = if body.is_empty() {
            None
        } else {
            serde_json::from_str(&body).ok()
        };
        Ok(OutboundResponse {
            status,
            headers,
            body,
            json,
        })
    }

    /// The URL as records show it: no userinfo, secrets in the query removed.
    pub fn redact_url(&self, url: &Url) -> String {
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

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        let mut msg = "connection failed".to_owned();
        let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
        while let Some(s) = src {
            msg = format!("connection failed: {s}");
            src = s.source();
        }
        msg
    } else {
        let mut msg = e.to_string();
        if let Some(s) = std::error::Error::source(e) {
            msg = format!("{msg}: {s}");
        }
        msg
    }
}

/// `Retry-After` in seconds or as an HTTP date; capped so a bad header cannot park a
/// worker for long.
fn parse_retry_after(v: &str) -> Option<Duration> {
    let d = if let Ok(secs) = v.trim().parse::<f64>() {
        Duration::from_secs_f64(secs.max(0.0))
    } else {
        let t = chrono::DateTime::parse_from_rfc2822(v.trim()).ok()?;
        let ms = t.timestamp_millis() - chrono::Utc::now().timestamp_millis();
        Duration::from_millis(ms.max(0) as u64)
    };
    Some(d.min(MAX_BACKOFF))
}

/// Exponential backoff with full jitter: 250 ms, 500 ms, 1 s, … capped.
fn backoff(attempt: u32) -> Duration {
    let base = 250u64.saturating_mul(1 << attempt.min(10).saturating_sub(1));
    let capped = base.min(MAX_BACKOFF.as_millis() as u64);
    let jittered = rand::random_range(capped / 2..=capped);
    Duration::from_millis(jittered)
}

/// Installs rustls' ring provider once per process (reqwest is built without one).
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
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
    fn retry_after_parses_seconds_and_dates() {
        assert_eq!(parse_retry_after("1"), Some(Duration::from_secs(1)));
        assert_eq!(parse_retry_after("3600"), Some(MAX_BACKOFF));
        assert!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT").is_some());
        assert!(parse_retry_after("soon").is_none());
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(1) <= Duration::from_millis(250));
        assert!(backoff(20) <= MAX_BACKOFF);
    }
}
