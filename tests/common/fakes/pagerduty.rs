//! PagerDuty Events v2: no auth header, a 32-character `routing_key` in the body, the
//! event-action enum, trigger payload rules, dedup keys (generated when absent) and
//! the open-alert state they address.

use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::{Value, json};
use spur::testing::{Recorded, Reply};

use super::{Connection, str_of};

/// A well-formed integration key (PagerDuty wants 32 characters).
pub const ROUTING_KEY: &str = "e93facc04764012d7bfb002500d5d1a6";

/// `[connections.pagerduty]` at the fake's root, without auth (the routing key goes
/// in each event).
pub fn connection() -> Connection {
    Connection::new("pagerduty", "", "", fake())
}

/// PagerDuty's 400 for an invalid event.
fn invalid(errors: &[&str]) -> Reply {
    Reply::json(
        400,
        &json!({"status": "invalid event", "message": "Event object is invalid", "errors": errors}),
    )
}

/// The fake: `POST /v2/enqueue` only.
pub fn fake() -> impl Fn(&Recorded) -> Reply + Send + Sync + 'static {
    let open: Arc<Mutex<Vec<String>>> = Arc::default();
    move |r| {
        if (r.method.as_str(), r.path.as_str()) != ("POST", "/v2/enqueue") {
            return Reply::json(404, &json!({"status": "not found", "message": "Not found"}));
        }
        if r.body.len() > 512 * 1024 {
            return Reply::json(
                413,
                &json!({"status": "invalid event", "message": "Request too large"}),
            );
        }
        let Some(event) = r.json.clone().filter(Value::is_object) else {
            return invalid(&["Event object is not valid JSON"]);
        };
        if str_of(&event, "routing_key").is_none_or(|k| k.len() != 32) {
            return invalid(&["Length of 'routing_key' is incorrect (should be 32 characters)"]);
        }
        let dedup = str_of(&event, "dedup_key").map(str::to_owned);
        if dedup.as_ref().is_some_and(|d| d.len() > 255) {
            return invalid(&["'dedup_key' is too long (max 255 characters)"]);
        }
        let mut open = open.lock();
        let key = match str_of(&event, "event_action") {
            Some("trigger") => match trigger(&event, dedup, &mut open) {
                Ok(key) => key,
                Err(reply) => return reply,
            },
            Some("acknowledge" | "resolve") => {
                let Some(key) = dedup else {
                    return invalid(&["'dedup_key' is missing or blank"]);
                };
                // On an unknown or resolved alert the event is accepted and dropped.
                if event["event_action"] == "resolve" {
                    open.retain(|k| *k != key);
                }
                key
            }
            _ => {
                return invalid(&[
                    "'event_action' is invalid (must be one of trigger, acknowledge, resolve)",
                ]);
            }
        };
        Reply::json(
            202,
            &json!({"status": "success", "message": "Event processed", "dedup_key": key}),
        )
    }
}

/// A trigger's payload checked and its alert opened; its dedup key.
fn trigger(event: &Value, dedup: Option<String>, open: &mut Vec<String>) -> Result<String, Reply> {
    let p = &event["payload"];
    let mut errors = Vec::new();
    if p["summary"]
        .as_str()
        .is_none_or(|s| s.is_empty() || s.chars().count() > 1024)
    {
        errors.push("'payload.summary' is missing or blank");
    }
    if p["source"].as_str().is_none_or(str::is_empty) {
        errors.push("'payload.source' is missing or blank");
    }
    if !["critical", "error", "warning", "info"]
        .contains(&p["severity"].as_str().unwrap_or_default())
    {
        errors
            .push("'payload.severity' is invalid (must be one of critical, error, warning, info)");
    }
    if !errors.is_empty() {
        return Err(invalid(&errors));
    }
    let key = dedup.unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    if !open.contains(&key) {
        open.push(key.clone());
    }
    Ok(key)
}
