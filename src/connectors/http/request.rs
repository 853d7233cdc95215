//! What a call is made of: where it goes, its body, the request and response as
//! connectors see them, and the `Exchange` every call returns.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use super::super::{CallRecord, ConnectorError};

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

impl Body {
    /// The body as the dry-run record shows it.
    pub(super) fn as_json(&self) -> Option<Value> {
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
    pub(super) fn attach(&self, builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
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
