//! Segment as a connector: write-back to the Tracking API through a durable outbox,
//! and reads from the Profile API and the Public API.
//!
//! Three internal connections carry the credentials of `[segment]`, so secrets are
//! injected by the HTTP client like any other connection's:
//! `segment:tracking` (Basic `write_key:`), `segment:profiles` (Basic `token:`) and
//! `segment:public` (Bearer). Regulations and tracking-plan changes match
//! `require_approval` patterns on `segment:public` unless
//! `segment.require_approval = false`.
//!
//! The outbox (`outbox.rs`) holds written-back messages until the Tracking
//! API accepted them: a message is stored when `segment::track` returns and flushed
//! to disk before the sender posts it (a run that crashes before that queues it
//! again with the same messageId), sent in
//! batches of `segment.batch_size` or every `segment.flush_interval`, retried with
//! backoff while the API is down, across restarts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Instant;

use reqwest::Method;
use serde_json::{Map, Value, json};

use super::http::{Body, Destination, Exchange, HttpClient, OutboundRequest, OutboundResponse};
use super::{CallRecord, ConnectorError, ServiceError};

mod outbox;
use crate::config::{Auth, ConnectionConfig, Secret, SegmentConfig};
pub(crate) use outbox::Outbox;
pub(crate) use outbox::{OutboxStore, SledOutbox};

pub(crate) const TRACKING: &str = "segment:tracking";
pub(crate) const PROFILES: &str = "segment:profiles";
pub(crate) const PUBLIC: &str = "segment:public";
/// Pages followed at most by one read (a guard against a cursor that never ends).
const MAX_PAGES: usize = 100;

/// Calls on `segment:public` that wait for an approval by default.
pub(crate) const APPROVAL_PATTERNS: &[&str] = &[
    "POST /regulations*",
    "PUT /tracking-plans/*/rules",
    "PATCH /tracking-plans/*/rules",
    "DELETE /tracking-plans/*/rules",
];

/// The internal connections for `[segment]` (auth `None` where no secret is set).
pub(crate) fn connections(cfg: &SegmentConfig) -> Vec<(String, ConnectionConfig)> {
    let basic = |s: &Option<Secret>| match s {
        Some(s) => Auth::Basic {
            user: s.clone(),
            password: Secret::new(""),
        },
        None => Auth::None,
    };
    let approvals = if cfg.require_approval {
        APPROVAL_PATTERNS.iter().map(|p| (*p).to_owned()).collect()
    } else {
        Vec::new()
    };
    vec![
        (
            TRACKING.into(),
            ConnectionConfig {
                base_url: cfg.api_base.clone(),
                auth: basic(&cfg.write_key),
                ..ConnectionConfig::default()
            },
        ),
        (
            PROFILES.into(),
            ConnectionConfig {
                base_url: cfg.profile_base.clone(),
                auth: basic(&cfg.profile_token),
                rate_limit: Some(100.0),
                ..ConnectionConfig::default()
            },
        ),
        (
            PUBLIC.into(),
            ConnectionConfig {
                base_url: cfg.public_api_base.clone(),
                auth: cfg
                    .public_api_token
                    .clone()
                    .map_or(Auth::None, Auth::Bearer),
                require_approval: approvals,
                ..ConnectionConfig::default()
            },
        ),
    ]
}

/// Reads from the Profile and Public APIs. Every attempt is appended to `calls`.
#[derive(Clone)]
pub struct SegmentApi {
    http: HttpClient,
    cfg: SegmentConfig,
}

/// A read's outcome: the value (or `None` for "no such profile") and the calls made.
pub(crate) type Read = Exchange<Option<Value>>;

impl SegmentApi {
    pub(crate) fn new(http: HttpClient, cfg: SegmentConfig) -> Self {
        Self { http, cfg }
    }

    /// Whether write-back can reach Segment (`segment.write_key` is set).
    pub(crate) fn has_write_key(&self) -> bool {
        self.cfg.write_key.is_some()
    }

    fn require(&self, what: &str, set: bool, key: &str) -> Result<(), ConnectorError> {
        if set || self.http.is_dry_run() {
            Ok(())
        } else {
            Err(ConnectorError::Invalid(format!(
                "{what} needs segment.{key} in the configuration"
            )))
        }
    }

    async fn call(
        &self,
        req: OutboundRequest,
        deadline: Option<Instant>,
        calls: &mut Vec<CallRecord>,
    ) -> Result<OutboundResponse, ConnectorError> {
        let exchange = self.http.send(req, deadline).await;
        calls.extend(exchange.attempts);
        exchange.result
    }

    /// The profile path of `id` (`user_id:` when bare; `group_id:` means accounts).
    fn profile_path(&self, id: &str, what: &str) -> Result<String, ConnectorError> {
        // A dry run records the call even without a space configured.
        let space = match (self.cfg.profile_space_id.as_deref(), self.http.is_dry_run()) {
            (Some(s), _) => s,
            (None, true) => "spa_dry_run",
            (None, false) => {
                return Err(ConnectorError::Invalid(
                    "the Profile API needs segment.profile_space_id".into(),
                ));
            }
        };
        let full = if id.contains(':') {
            id.to_owned()
        } else {
            format!("user_id:{id}")
        };
        let collection = if full.starts_with("group_id:") {
            "accounts"
        } else {
            "users"
        };
        Ok(format!(
            "/v1/spaces/{}/collections/{collection}/profiles/{}/{what}",
            encode_segment(space),
            encode_segment(&full)
        ))
    }

    /// A Profile API read, following `cursor.next` while `has_more`; `merge` folds
    /// each page into the result. A 404 `not_found` is "no profile" (`None`).
    async fn profile_read(
        &self,
        id: &str,
        what: &str,
        mut query: Vec<(String, String)>,
        merge: impl Fn(&mut Value, Value),
        deadline: Option<Instant>,
        calls: &mut Vec<CallRecord>,
    ) -> Result<Option<Value>, ConnectorError> {
        self.require(
            "the Profile API",
            self.cfg.profile_token.is_some(),
            "profile_token",
        )?;
        let path = self.profile_path(id, what)?;
        let mut out: Option<Value> = None;
        for _ in 0..MAX_PAGES {
            let mut req = OutboundRequest::new(
                Method::GET,
                Destination::Connection {
                    name: PROFILES.into(),
                    path: path.clone(),
                },
            );
            req.query.clone_from(&query);
            let resp = self.call(req, deadline, calls).await?;
            if resp.status == 404 {
                return Ok(None);
            }
            let body = check("segment profile API", &resp)?;
            let cursor = body.get("cursor").cloned().unwrap_or(Value::Null);
            match &mut out {
                None => out = Some(body),
                Some(acc) => merge(acc, body),
            }
            let next = cursor.get("next").and_then(Value::as_str).unwrap_or("");
            if !cursor
                .get("has_more")
                .and_then(Value::as_bool)
                .unwrap_or(false)
                || next.is_empty()
            {
                break;
            }
            query.retain(|(k, _)| k != "next");
            query.push(("next".into(), next.to_owned()));
        }
        Ok(out)
    }

    pub(crate) async fn traits(&self, id: &str, deadline: Option<Instant>) -> Read {
        self.traits_where(id, Vec::new(), deadline).await
    }

    /// The audiences a profile belongs to or left: its computed traits of class
    /// `audience`, as `{key: bool}`.
    pub(crate) async fn audiences(&self, id: &str, deadline: Option<Instant>) -> Read {
        let class = vec![("class".into(), "audience".into())];
        self.traits_where(id, class, deadline).await
    }

    async fn traits_where(
        &self,
        id: &str,
        mut query: Vec<(String, String)>,
        deadline: Option<Instant>,
    ) -> Read {
        query.push(("limit".into(), "200".into()));
        Exchange::collect(async |calls| {
            let merged = self
                .profile_read(
                    id,
                    "traits",
                    query,
                    |acc, page| {
                        if let (Some(a), Some(Value::Object(p))) = (
                            acc.get_mut("traits").and_then(Value::as_object_mut),
                            page.get("traits").cloned(),
                        ) {
                            a.extend(p);
                        }
                    },
                    deadline,
                    calls,
                )
                .await?;
            Ok(merged.map(|v| v.get("traits").cloned().unwrap_or_else(|| json!({}))))
        })
        .await
    }

    pub(crate) async fn events(
        &self,
        id: &str,
        opts: &Map<String, Value>,
        deadline: Option<Instant>,
    ) -> Read {
        Exchange::collect(async |calls| {
            let mut query = Vec::new();
            for key in ["start", "end", "include", "exclude", "sort", "limit"] {
                if let Some(v) = opts.get(key) {
                    query.push((key.to_owned(), text(v)));
                }
            }
            let merged = self
                .profile_read(id, "events", query, append_data, deadline, calls)
                .await?;
            Ok(merged.map(|v| v.get("data").cloned().unwrap_or_else(|| json!([]))))
        })
        .await
    }

    pub(crate) async fn external_ids(&self, id: &str, deadline: Option<Instant>) -> Read {
        Exchange::collect(async |calls| {
            let merged = self
                .profile_read(
                    id,
                    "external_ids",
                    vec![("limit".into(), "100".into())],
                    append_data,
                    deadline,
                    calls,
                )
                .await?;
            Ok(merged.map(|v| v.get("data").cloned().unwrap_or_else(|| json!([]))))
        })
        .await
    }

    pub(crate) async fn metadata(&self, id: &str, deadline: Option<Instant>) -> Read {
        Exchange::collect(async |calls| {
            let merged = self
                .profile_read(id, "metadata", Vec::new(), |_, _| {}, deadline, calls)
                .await?;
            Ok(merged.map(|v| v.get("metadata").cloned().unwrap_or(Value::Null)))
        })
        .await
    }

    /// A Public API call: `data` of the answer, or with `call.list` the array of
    /// that name under `data`, collected across pages (`data.pagination.next`).
    pub(crate) async fn public(
        &self,
        call: PublicCall,
        deadline: Option<Instant>,
    ) -> Exchange<Value> {
        Exchange::collect(async |calls| self.public_pages(call, deadline, calls).await).await
    }

    async fn public_pages(
        &self,
        call: PublicCall,
        deadline: Option<Instant>,
        calls: &mut Vec<CallRecord>,
    ) -> Result<Value, ConnectorError> {
        let PublicCall {
            method,
            path,
            query,
            body,
            list,
        } = call;
        self.require(
            "the Public API",
            self.cfg.public_api_token.is_some(),
            "public_api_token",
        )?;
        let mut items: Vec<Value> = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut req = OutboundRequest::new(
                method.clone(),
                Destination::Connection {
                    name: PUBLIC.into(),
                    path: path.clone(),
                },
            );
            req.query.clone_from(&query);
            if list.is_some() {
                req.query.push(("pagination.count".into(), "200".into()));
                if let Some(c) = &cursor {
                    req.query.push(("pagination.cursor".into(), c.clone()));
                }
            }
            req.headers
                .push(("accept".into(), "application/vnd.segment.v1+json".into()));
            if let Some(b) = &body {
                req.body = Body::Json(b.clone());
            }
            let resp = self.call(req, deadline, calls).await?;
            let env = check("segment public API", &resp)?;
            let data = env.get("data").cloned().unwrap_or(Value::Null);
            let Some(key) = list else { return Ok(data) };
            if let Some(Value::Array(page)) = data.get(key) {
                items.extend(page.iter().cloned());
            }
            match data
                .get("pagination")
                .and_then(|p| p.get("next"))
                .and_then(Value::as_str)
            {
                Some(next) if !next.is_empty() => cursor = Some(next.to_owned()),
                _ => break,
            }
        }
        Ok(Value::Array(items))
    }
}

/// One Public API request (see [`SegmentApi::public`]), built as
/// `PublicCall::get("/sources").list("sources")` or `PublicCall::new(POST, path).body(b)`.
#[derive(Debug, Clone)]
pub(crate) struct PublicCall {
    pub method: Method,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub body: Option<Value>,
    /// The array under `data` to collect across pages.
    pub list: Option<&'static str>,
}

impl PublicCall {
    pub(crate) fn new(method: Method, path: impl Into<String>) -> Self {
        Self {
            method,
            path: path.into(),
            query: Vec::new(),
            body: None,
            list: None,
        }
    }

    pub(crate) fn get(path: impl Into<String>) -> Self {
        Self::new(Method::GET, path)
    }

    #[must_use]
    pub(crate) fn query(mut self, query: Vec<(String, String)>) -> Self {
        self.query = query;
        self
    }

    #[must_use]
    pub(crate) fn body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }

    /// Collects the array `key` of `data` across pages.
    #[must_use]
    pub(crate) fn list(mut self, key: &'static str) -> Self {
        self.list = Some(key);
        self
    }
}

fn append_data(acc: &mut Value, page: Value) {
    if let (Some(Value::Array(a)), Some(Value::Array(p))) =
        (acc.get_mut("data"), page.get("data").cloned())
    {
        a.extend(p);
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// The JSON of a 2xx response, or the service's own error message.
fn check(service: &str, resp: &OutboundResponse) -> Result<Value, ConnectorError> {
    if resp.ok() {
        return Ok(resp.json.clone().unwrap_or(Value::Null));
    }
    let j = resp.json.as_ref();
    let message = j
        .and_then(|j| {
            j.pointer("/errors/0/message")
                .or_else(|| j.pointer("/error/message"))
                .or_else(|| j.get("message"))
                .or_else(|| j.get("error"))
        })
        .and_then(Value::as_str)
        .map_or_else(|| resp.body.chars().take(300).collect(), str::to_owned);
    Err(ConnectorError::Service(ServiceError {
        service: service.into(),
        status: resp.status,
        message,
    }))
}

/// Percent-encodes one path segment (`+` and `:` included, as the Profile API wants).
pub(crate) fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b':' | b'@') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Merges `[segment]` connections into the user's (a user connection of the same
/// name wins, so tests and proxies can override them).
pub(crate) fn with_segment_connections(
    user: &BTreeMap<String, ConnectionConfig>,
    cfg: &SegmentConfig,
) -> BTreeMap<String, ConnectionConfig> {
    let mut all = user.clone();
    for (name, c) in connections(cfg) {
        all.entry(name).or_insert(c);
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_ids_are_encoded() {
        assert_eq!(encode_segment("user_id:a+b@x.com"), "user_id:a%2Bb@x.com");
        assert_eq!(encode_segment("email:ada lovelace"), "email:ada%20lovelace");
    }
}
