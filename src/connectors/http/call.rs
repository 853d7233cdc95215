//! One call's attempts: the live loop (rate limit, concurrency slot, send, read
//! capped, retry decision, backoff) and the dry run, each attempt recorded.

use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use reqwest::{Method, Url};

use super::super::recorder::{RecordedCall, Recorder};
use super::super::{CallRecord, ConnectorError};
use super::{Connection, Destination, HttpClient, OutboundRequest, OutboundResponse};
use crate::config::OnUnknown;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_ATTEMPTS: u32 = 3;
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// One call being made: the request, where it goes, and how its attempts are
/// recorded.
pub(super) struct Call<'a> {
    pub(super) client: &'a HttpClient,
    pub(super) req: &'a OutboundRequest,
    pub(super) url: Url,
    pub(super) conn: Option<&'a Connection>,
    pub(super) redacted_url: String,
    pub(super) method: String,
    pub(super) connection: Option<String>,
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
            at_ms: Some(
                chrono::Utc::now().timestamp_millis() - started.elapsed().as_millis() as i64,
            ),
            span_id: None,
        }
    }

    /// The recorder answers instead of the network.
    pub(super) fn dry_run(
        &self,
        recorder: &Recorder,
        attempts: &mut Vec<CallRecord>,
    ) -> OutboundResponse {
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
    pub(super) async fn live(
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

#[cfg(test)]
mod tests {
    use super::*;

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
