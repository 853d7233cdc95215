//! Webhook sources: `on_webhook("stripe", |req| …)` turns a third-party webhook
//! into Segment events, as Segment's source functions do.
//!
//! A request to `/hooks/{name}` is verified (`verify.rs`) before anything is stored,
//! made durable as a job (group commit) before the 200, and then handled as a
//! durable run whose `emit(…)` calls put events into spur's own pipeline
//! (`host::emit`). `route.rs` is the HTTP side.

pub(crate) mod route;

use rhai::{Dynamic, FnPtr, Map};
use serde_json::{Value, json};

pub(crate) use crate::signature::{Algorithm, Encoding, Generic, Verify};

/// Methods a source may accept (`methods` option); `POST` by default.
const METHODS: &[&str] = &["POST", "PUT", "PATCH"];

/// Headers never stored with a request nor shown to the script: credentials of
/// the caller are not the script's business.
pub(crate) const DROPPED_HEADERS: &[&str] = &["authorization", "cookie", "proxy-authorization"];

/// What `on_webhook` declared.
#[derive(Debug, Clone)]
pub struct SourceSpec {
    pub name: String,
    pub verify: Option<Verify>,
    /// The `[sources.NAME]` entry whose `secret` the verification uses.
    pub secret: String,
    /// How far a signed timestamp may be from now.
    pub tolerance_s: i64,
    pub methods: Vec<String>,
    /// Answers synchronously (a verification handshake), without effects.
    pub respond: Option<FnPtr>,
}

impl SourceSpec {
    /// The spec of `on_webhook(name, options)`.
    ///
    /// # Errors
    /// What is wrong, naming the option.
    pub(crate) fn parse(name: &str, options: Map) -> Result<Self, String> {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            return Err(format!(
                "the source name {} must be 1-64 letters, digits, '-' or '_' (it is part of the URL /hooks/NAME)",
                crate::event::quote(name)
            ));
        }
        let mut spec = Self {
            name: name.to_owned(),
            verify: None,
            secret: name.to_owned(),
            tolerance_s: crate::signature::DEFAULT_TOLERANCE_S,
            methods: vec!["POST".into()],
            respond: None,
        };
        for (key, value) in options {
            match key.as_str() {
                "verify" => spec.verify = Some(parse_verify(&value)?),
                "secret" => {
                    spec.secret = value
                        .into_immutable_string()
                        .map_err(|_| "`secret` must be the name of a [sources.NAME] entry")?
                        .to_string();
                }
                "tolerance" => {
                    let d = crate::host::convert::to_duration(&value)
                        .map_err(|e| format!("`tolerance`: {e}"))?;
                    spec.tolerance_s = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
                }
                "methods" => spec.methods = parse_methods(value)?,
                "respond" => {
                    spec.respond = Some(
                        value
                            .try_cast::<FnPtr>()
                            .ok_or("`respond` must be a function: |req| …")?,
                    );
                }
                other => {
                    return Err(format!(
                        "unknown option `{other}` (known: verify, secret, tolerance, methods, respond)"
                    ));
                }
            }
        }
        Ok(spec)
    }

    /// The URL path of the source.
    pub(crate) fn path(&self) -> String {
        format!("/hooks/{}", self.name)
    }

    /// The verification as shown by `/api/scripts`.
    pub(crate) fn describe_verify(&self) -> Value {
        match &self.verify {
            None => Value::Null,
            Some(Verify::Hmac(g)) => json!({"hmac": g.header}),
            Some(v) => json!(format!("{v:?}").to_ascii_lowercase()),
        }
    }
}

fn parse_methods(value: Dynamic) -> Result<Vec<String>, String> {
    let items = if value.is_string() {
        vec![value]
    } else {
        value
            .try_cast::<rhai::Array>()
            .ok_or("`methods` must be an array of method names")?
    };
    let mut out = Vec::new();
    for item in items {
        let m = item
            .into_immutable_string()
            .map_err(|_| "`methods` must hold strings")?
            .to_ascii_uppercase();
        if !METHODS.contains(&m.as_str()) {
            return Err(format!(
                "`methods`: {m} is not accepted (known: {})",
                METHODS.join(", ")
            ));
        }
        if !out.contains(&m) {
            out.push(m);
        }
    }
    if out.is_empty() {
        return Err("`methods` must name at least one method".into());
    }
    Ok(out)
}

fn parse_verify(value: &Dynamic) -> Result<Verify, String> {
    if let Some(name) = value.clone().try_cast::<rhai::ImmutableString>() {
        return match name.as_str() {
            "stripe" => Ok(Verify::Stripe),
            "github" => Ok(Verify::Github),
            "shopify" => Ok(Verify::Shopify),
            "slack" => Ok(Verify::Slack),
            "zendesk" => Ok(Verify::Zendesk),
            other => Err(format!(
                "`verify`: unknown scheme {} (known: stripe, github, shopify, slack, zendesk, or #{{ header, algorithm, encoding, … }})",
                crate::event::quote(other)
            )),
        };
    }
    let Some(map) = value.clone().try_cast::<Map>() else {
        return Err(
            "`verify` must be a scheme name or a map #{ header, algorithm, encoding }".into(),
        );
    };
    let text = |key: &str| -> Result<Option<String>, String> {
        match map.get(key) {
            None => Ok(None),
            Some(v) => v
                .clone()
                .into_immutable_string()
                .map(|s| Some(s.to_string()))
                .map_err(|_| format!("`verify.{key}` must be a string")),
        }
    };
    for key in map.keys() {
        if !matches!(
            key.as_str(),
            "header" | "algorithm" | "encoding" | "prefix" | "timestamp_header" | "payload"
        ) {
            return Err(format!(
                "`verify`: unknown key `{key}` (known: header, algorithm, encoding, prefix, timestamp_header, payload)"
            ));
        }
    }
    let header = text("header")?
        .filter(|h| !h.trim().is_empty())
        .ok_or("`verify.header` is required: the header holding the signature")?;
    let algorithm = match text("algorithm")?.as_deref().unwrap_or("sha256") {
        "sha1" => Algorithm::Sha1,
        "sha256" => Algorithm::Sha256,
        "sha512" => Algorithm::Sha512,
        other => {
            return Err(format!(
                "`verify.algorithm`: {} is not sha1, sha256 or sha512",
                crate::event::quote(other)
            ));
        }
    };
    let encoding = match text("encoding")?.as_deref().unwrap_or("hex") {
        "hex" => Encoding::Hex,
        "base64" => Encoding::Base64,
        other => {
            return Err(format!(
                "`verify.encoding`: {} is not hex or base64",
                crate::event::quote(other)
            ));
        }
    };
    let timestamp_header = text("timestamp_header")?.map(|h| h.to_ascii_lowercase());
    let payload = text("payload")?.unwrap_or_else(|| {
        if timestamp_header.is_some() {
            "{timestamp}.{body}".into()
        } else {
            "{body}".into()
        }
    });
    if !payload.contains("{body}") {
        return Err("`verify.payload` must contain {body}".into());
    }
    Ok(Verify::Hmac(Generic {
        header: header.to_ascii_lowercase(),
        algorithm,
        encoding,
        prefix: text("prefix")?.unwrap_or_default(),
        timestamp_header,
        payload,
    }))
}

/// A webhook request as stored with its job and shown to the handler.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct SourceRequest {
    pub method: String,
    pub path: String,
    /// Query parameters (a repeated one keeps its last value).
    pub query: serde_json::Map<String, Value>,
    /// Lower-case names; repeated headers joined with `", "`; credentials dropped.
    pub headers: serde_json::Map<String, Value>,
    pub body: String,
}

impl SourceRequest {
    /// The handler's `req`: the request, plus `json` when the body parses.
    pub(crate) fn to_dynamic(&self) -> Dynamic {
        let mut v = serde_json::to_value(self).expect("a request serialises");
        if let Ok(parsed) = serde_json::from_str::<Value>(&self.body) {
            v["json"] = parsed;
        }
        crate::host::convert::to_dynamic(&v)
    }

    /// A request for local runs (`spur run --webhook`, `spur test`'s `webhook()`).
    pub(crate) fn local(source: &str, body: String, headers: &[(String, String)]) -> Self {
        let mut map = serde_json::Map::new();
        for (k, v) in headers {
            let k = k.trim().to_ascii_lowercase();
            if !DROPPED_HEADERS.contains(&k.as_str()) {
                map.insert(k, Value::String(v.trim().to_owned()));
            }
        }
        Self {
            method: "POST".into(),
            path: format!("/hooks/{source}"),
            query: serde_json::Map::new(),
            headers: map,
            body,
        }
    }
}
