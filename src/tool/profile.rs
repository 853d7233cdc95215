//! Approved profile context: built-in read-only tools over Segment's Profile API,
//! present when `[agents.profile]` is configured and listed for the clients whose
//! `tools` patterns name them. Each returns only what the allowlists of
//! `[agents.profile]` name, so an agent never sees more of a customer than
//! approved: traits by name, event properties by name (events keep their type,
//! name and time), audiences by key, external ids by type.
//!
//! They read and change nothing, so a call is not a run: it is answered directly
//! and audited like any tool call.

use serde_json::{Map, Value, json};

use super::ToolSpec;
use crate::config::ProfileToolsConfig;
use crate::connectors::recorder::glob_match;
use crate::connectors::segment::SegmentApi;

/// Longest a profile read may take.
const READ_TIME: std::time::Duration = std::time::Duration::from_secs(20);

/// Events `profile_events` returns by default and at most.
const EVENTS_DEFAULT: u64 = 20;
const EVENTS_MAX: u64 = 100;

/// The built-in profile tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Traits,
    Events,
    Audiences,
    ExternalIds,
}

impl Kind {
    pub(crate) const ALL: [Kind; 4] = [
        Kind::Audiences,
        Kind::Events,
        Kind::ExternalIds,
        Kind::Traits,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Traits => "profile_traits",
            Kind::Events => "profile_events",
            Kind::Audiences => "profile_audiences",
            Kind::ExternalIds => "profile_external_ids",
        }
    }

    pub(crate) fn spec(self) -> ToolSpec {
        let user = json!({ "type": "string", "minLength": 1, "description": "The customer's Segment userId" });
        let (description, input) = match self {
            Kind::Traits => (
                "A customer's profile traits (only the approved ones)",
                json!({ "type": "object", "properties": { "user_id": user }, "required": ["user_id"], "additionalProperties": false }),
            ),
            Kind::Events => (
                "A customer's recent events, newest first: type, name, time and the approved properties",
                json!({ "type": "object", "properties": {
                    "user_id": user,
                    "limit": { "type": "integer", "minimum": 1, "maximum": EVENTS_MAX, "description": "How many (default 20)" }
                }, "required": ["user_id"], "additionalProperties": false }),
            ),
            Kind::Audiences => (
                "The audiences a customer is in (true) or left (false)",
                json!({ "type": "object", "properties": { "user_id": user }, "required": ["user_id"], "additionalProperties": false }),
            ),
            Kind::ExternalIds => (
                "A customer's identifiers (only the approved types)",
                json!({ "type": "object", "properties": { "user_id": user }, "required": ["user_id"], "additionalProperties": false }),
            ),
        };
        ToolSpec {
            name: self.name().to_owned(),
            description: description.to_owned(),
            input,
            output: None,
            annotations: Some(json!({ "readOnlyHint": true, "openWorldHint": false })),
        }
    }

    pub(crate) fn of(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// The profile tools of a daemon.
#[derive(Clone)]
pub(crate) struct ProfileTools {
    pub api: SegmentApi,
    pub allow: ProfileToolsConfig,
}

fn allowed(patterns: &[String], name: &str) -> bool {
    patterns.iter().any(|p| glob_match(p, name))
}

fn only(map: Option<&Value>, patterns: &[String]) -> Map<String, Value> {
    map.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter(|(k, _)| allowed(patterns, k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

impl ProfileTools {
    /// Answers `kind` for `args` (already checked against its schema).
    ///
    /// # Errors
    /// The Profile API's failure, as the tool's error message.
    pub(crate) async fn call(&self, kind: Kind, args: &Value) -> Result<Value, String> {
        let user = args["user_id"].as_str().unwrap_or_default();
        let id = format!("user_id:{user}");
        let deadline = Some(std::time::Instant::now() + READ_TIME);
        let read = match kind {
            Kind::Traits => self.api.traits(&id, deadline).await,
            Kind::Audiences => self.api.audiences(&id, deadline).await,
            Kind::ExternalIds => self.api.external_ids(&id, deadline).await,
            Kind::Events => {
                let limit = args["limit"]
                    .as_u64()
                    .unwrap_or(EVENTS_DEFAULT)
                    .min(EVENTS_MAX);
                let mut opts = Map::new();
                opts.insert("limit".into(), json!(limit));
                self.api.events(&id, &opts, deadline).await
            }
        };
        let Some(found) = read.result.map_err(|e| e.to_string())? else {
            return Ok(json!({ "user_id": user, "found": false }));
        };
        let a = &self.allow;
        Ok(match kind {
            Kind::Traits => {
                json!({ "user_id": user, "found": true, "traits": only(Some(&found), &a.traits) })
            }
            Kind::Audiences => {
                json!({ "user_id": user, "found": true, "audiences": only(Some(&found), &a.audiences) })
            }
            Kind::ExternalIds => {
                let ids: Vec<Value> = found
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .filter(|x| {
                        x["type"]
                            .as_str()
                            .is_some_and(|t| allowed(&a.external_ids, t))
                    })
                    .map(|x| json!({ "type": x["type"], "id": x["id"] }))
                    .collect();
                json!({ "user_id": user, "found": true, "external_ids": ids })
            }
            Kind::Events => {
                let events: Vec<Value> = found
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .map(|e| {
                        json!({
                            "type": e["type"],
                            "event": e["event"],
                            "timestamp": e["timestamp"],
                            "properties": only(e.get("properties"), &a.event_properties),
                        })
                    })
                    .collect();
                json!({ "user_id": user, "found": true, "events": events })
            }
        })
    }
}
