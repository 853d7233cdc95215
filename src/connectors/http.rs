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
use serde_json::Value;
use tokio::sync::{Mutex as AsyncMutex, Semaphore};

use super::recorder::{RecordedCall, Recorder};
use super::redact::Redactor;
use super::{CallRecord, ConnectorError};
use crate::config::{Auth, ConnectionConfig, OnUnknown};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_ATTEMPTS: u32 = 3;
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Where a request goes.
#[derive(Debug, Clone)]
pub(crate) enum Destination {
    Url(String),
    Connection { name: String, path: String },
}

/// A request body.
#[derive(Debug, Clone, Default)]
pub(crate) enum Body {
    #[default]
    None,
    Json(Value),
    Text(String),
    Form(Vec<(String, String)>),
}

/// An outbound request as scripts and connectors describe it.
#[derive(Debug, Clone)]
pub(crate) struct OutboundRequest {
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
    pub(crate) fn new(method: Method, destination: Destination) -> Self {
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
pub(crate) struct OutboundResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub json: Option<Value>,
}

impl OutboundResponse {
    pub(crate) fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The outcome of a call (or of the calls one operation made, such as the pages of
/// a read) and the record of each attempt: the one way connectors return calls.
#[derive(Debug)]
pub(crate) struct Exchange<T = OutboundResponse> {
    pub result: Result<T, ConnectorError>,
    pub attempts: Vec<CallRecord>,
}

impl<T> Exchange<T> {
    /// Runs `work`, which records the attempts of the calls it makes, as one exchange.
    pub(crate) async fn collect(
        work: impl AsyncFnOnce(&mut Vec<CallRecord>) -> Result<T, ConnectorError>,
    ) -> Self {
        let mut attempts = Vec::new();
        let result = work(&mut attempts).await;
        Self { result, attempts }
    }

    pub(crate) fn map<U>(self, f: impl FnOnce(T) -> U) -> Exchange<U> {
        Exchange {
            result: self.result.map(f),
            attempts: self.attempts,
        }
    }
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

/// One call being made: the request, where it goes, and how its attempts are
/// recorded.
struct Call<'a> {
    client: &'a HttpClient,
    req: &'a OutboundRequest,
    url: Url,
    conn: Option<&'a Connection>,
    redacted_url: String,
    method: String,
    connection: Option<String>,
}

/// Why one attempt got no usable response.
enum Failure {
    Transport(reqwest::Error),
    /// The response body passed the limit (its `Content-Length`, or the bytes read
    /// when the stream stopped).
    TooLarge {
        bytes: u64,
        limit: usize,
    },
}

impl Call<'_> {
    /// The record of one attempt (URL without secrets).
    fn record(&self, attempt: u32, started: Instant) -> CallRecord {
        CallRecord {
            method: self.method.clone(),
            url: self.redacted_url.clone(),
            connection: self.connection.clone(),
            status: None,
            ms: started.elapsed().as_secs_f64() * 1000.0,
            attempt,
            error: None,
            unknown: false,
            dry_run: false,
        }
    }

    /// The recorder answers instead of the network.
    fn dry_run(&self, recorder: &Recorder, attempts: &mut Vec<CallRecord>) -> OutboundResponse {
        let started = Instant::now();
        let path = match (&self.req.destination, self.conn) {
            (Destination::Connection { .. }, Some(c)) => {
                let base_path = c.base.path().trim_end_matches('/');
                self.url
                    .path()
                    .strip_prefix(base_path)
                    .unwrap_or(self.url.path())
                    .to_owned()
            }
            _ => self.url.path().to_owned(),
        };
        let (status, reply) = recorder.answer(RecordedCall {
            method: self.method.clone(),
            url: self.redacted_url.clone(),
            path,
            connection: self.connection.clone(),
            body: self.req.body.as_json(),
        });
        attempts.push(CallRecord {
            status: Some(status),
            dry_run: true,
            ..self.record(1, started)
        });
        OutboundResponse {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: reply.to_string(),
            json: Some(reply),
        }
    }

    /// Sends over the network, retrying 429, 5xx and connection failures (see the
    /// module doc).
    async fn live(
        &self,
        deadline: Option<Instant>,
        attempts: &mut Vec<CallRecord>,
    ) -> Result<OutboundResponse, ConnectorError> {
        let config = self.conn.map(|c| &c.config);
        let max_attempts = config
            .and_then(|c| c.max_attempts)
            .unwrap_or(DEFAULT_ATTEMPTS);
        let per_attempt = self
            .req
            .timeout
            .or_else(|| config.and_then(|c| c.timeout_ms.map(Duration::from_millis)))
            .unwrap_or(DEFAULT_TIMEOUT);
        let limit = config
            .and_then(|c| c.max_response_bytes)
            .unwrap_or(self.client.inner.max_response_bytes);
        let headers = HttpClient::headers(self.req, self.conn)?;
        let _slot = match self.conn.and_then(|c| c.slots.as_ref()) {
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
            if let Some(c) = self.conn {
                c.wait_for_rate_limit().await;
            }
            let timeout = match deadline {
                Some(d) => per_attempt.min(d.saturating_duration_since(Instant::now())),
                None => per_attempt,
            };
            if timeout.is_zero() {
                return Err(
                    self.transport_error("run time limit reached before the call".into(), false)
                );
            }
            let started = Instant::now();
            let outcome = self.attempt(headers.clone(), timeout, limit).await;
            let mut record = self.record(attempt, started);
            let (retry, wait, result) = match outcome {
                Ok(resp) => {
                    record.status = Some(resp.status);
                    let retry = self.retries_status(resp.status);
                    let wait =
                        retry_after(resp.status, resp.header("retry-after"), chrono::Utc::now());
                    (retry, wait, Ok(resp))
                }
                Err(Failure::TooLarge { bytes, limit }) => {
                    let err = ConnectorError::TooLarge {
                        method: self.method.clone(),
                        url: self.redacted_url.clone(),
                        bytes,
                        limit,
                    };
                    record.error = Some(err.to_string());
                    attempts.push(record);
                    return Err(err);
                }
                Err(Failure::Transport(e)) => {
                    let message = self
                        .client
                        .inner
                        .redactor
                        .redact(&describe(&e))
                        .into_owned();
                    // Not even connected: nothing was sent, so sending again is safe.
                    // Anything else may have reached the service.
                    let unknown = !e.is_connect() && !self.idempotent();
                    record.error = Some(message.clone());
                    record.unknown = unknown;
                    let retry = e.is_connect() || (e.is_timeout() && self.idempotent());
                    let message = if attempt > 1 {
                        format!("{message} (after {attempt} attempts)")
                    } else {
                        message
                    };
                    (retry, None, Err(self.transport_error(message, unknown)))
                }
            };
            attempts.push(record);
            if !retry || attempt >= max_attempts {
                return result;
            }
            let delay = wait.unwrap_or_else(|| backoff(attempt));
            if let Some(d) = deadline
                && Instant::now() + delay >= d
            {
                return result;
            }
            tokio::time::sleep(delay).await;
        }
    }

    /// Methods idempotent by definition: only these are re-sent after a 500 or a
    /// read time-out, as many services ignore `Idempotency-Key` (Slack, Jira, HubSpot).
    fn idempotent(&self) -> bool {
        matches!(
            self.req.method,
            Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS
        )
    }

    fn retries_status(&self, s: u16) -> bool {
        s == 429
            || matches!(s, 502..=504)
            || (self.idempotent() && s >= 500 && s != 501 && s != 505 && s != 511)
    }

    fn transport_error(&self, message: String, unknown: bool) -> ConnectorError {
        ConnectorError::Transport {
            method: self.method.clone(),
            url: self.redacted_url.clone(),
            message,
            unknown,
            fail_on_unknown: self
                .conn
                .is_some_and(|c| c.config.on_unknown == OnUnknown::Fail),
        }
    }

    /// One attempt: sends, then reads the body up to `limit` bytes.
    async fn attempt(
        &self,
        headers: HeaderMap,
        timeout: Duration,
        limit: usize,
    ) -> Result<OutboundResponse, Failure> {
        // A connection's calls never follow a redirect to another origin: its
        // secrets stay with its base_url.
        let client = if self.conn.is_some() {
            &self.client.inner.scoped
        } else {
            &self.client.inner.client
        };
        let builder = client
            .request(self.req.method.clone(), self.url.clone())
            .headers(headers)
            .timeout(timeout);
        let resp = self
            .req
            .body
            .attach(builder)
            .send()
            .await
            .map_err(Failure::Transport)?;
        if let Some(bytes) = resp.content_length()
            && bytes > limit as u64
        {
            return Err(Failure::TooLarge { bytes, limit });
        }
        let status = resp.status().as_u16();
        let red = &self.client.inner.redactor;
        let headers: Vec<(String, String)> = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                let value = red
                    .redact(&String::from_utf8_lossy(v.as_bytes()))
                    .into_owned();
                (k.as_str().to_owned(), value)
            })
            .collect();
        let body = read_capped(resp, limit).await?;
        let body = red.redact(&String::from_utf8_lossy(&body)).into_owned();
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
}

/// Reads a response body chunk by chunk, stopping (and dropping the connection) as
/// soon as it passes `limit`: memory stays bounded whatever the server sends.
async fn read_capped(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, Failure> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(Failure::Transport)? {
        if out.len() + chunk.len() > limit {
            return Err(Failure::TooLarge {
                bytes: (out.len() + chunk.len()) as u64,
                limit,
            });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

impl Body {
    /// The body as the dry-run record shows it.
    fn as_json(&self) -> Option<Value> {
        match self {
            Self::None => None,
            Self::Json(v) => Some(v.clone()),
            Self::Text(t) => Some(Value::String(t.clone())),
            Self::Form(f) => Some(Value::Object(
                f.iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect(),
            )),
        }
    }

    /// Puts the encoded body and its content type on `builder`.
    fn attach(&self, builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Self::None => builder,
            Self::Json(v) => builder
                .header("content-type", "application/json; charset=utf-8")
                .body(serde_json::to_vec(v).expect("a JSON value always serialises")),
            Self::Text(t) => builder.body(t.clone()),
            Self::Form(f) => {
                let encoded = form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(f.iter())
                    .finish();
                builder
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(encoded)
            }
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

/// The wait a `Retry-After` header asks for, honoured only where it means "try
/// again later" (429 and 503). Seconds or an HTTP date; whatever the value (`inf`,
/// negative, garbage, a date long past or far ahead) the wait is between zero and
/// 30 s, or `None` when the header says nothing usable. The caller also keeps it
/// within the run's deadline.
pub fn retry_after(
    status: u16,
    value: Option<&str>,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<Duration> {
    if status != 429 && status != 503 {
        return None;
    }
    let v = value?.trim();
    let d = if v.bytes().all(|b| b.is_ascii_digit()) && !v.is_empty() {
        v.parse::<u64>().map_or(MAX_BACKOFF, Duration::from_secs)
    } else if let Ok(secs) = v
        .parse::<f64>()
        .map(|s| if s.is_nan() { None } else { Some(s) })
    {
        crate::duration::from_secs_f64(secs?.max(0.0)).unwrap_or(MAX_BACKOFF)
    } else {
        let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
        let ms = at.timestamp_millis().saturating_sub(now.timestamp_millis());
        Duration::from_millis(u64::try_from(ms).unwrap_or(0))
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
    fn retry_after_is_bounded_and_only_for_429_and_503() {
        let now = chrono::Utc::now();
        let wait = |status, v: &str| retry_after(status, Some(v), now);
        assert_eq!(wait(429, "1"), Some(Duration::from_secs(1)));
        assert_eq!(wait(503, "3600"), Some(MAX_BACKOFF));
        assert_eq!(wait(429, "99999999999999999999999"), Some(MAX_BACKOFF));
        assert_eq!(wait(429, "inf"), Some(MAX_BACKOFF));
        assert_eq!(wait(429, "NaN"), None);
        assert_eq!(wait(429, "-5"), Some(Duration::ZERO));
        assert_eq!(wait(429, "1e30"), Some(MAX_BACKOFF));
        assert_eq!(
            wait(429, "Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(wait(429, "soon"), None);
        assert_eq!(wait(200, "inf"), None);
        assert_eq!(wait(500, "1"), None);
        assert_eq!(retry_after(429, None, now), None);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(1) <= Duration::from_millis(250));
        assert!(backoff(20) <= MAX_BACKOFF);
    }
}
