//! Zendesk Support: Basic `{email}/token:{token}` (or Bearer), `{"ticket": …}` with a
//! comment body, priority enum, string tags, and `Idempotency-Key` replays.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::{Value, json};
use spur::testing::{Recorded, Reply};

use super::{Connection, basic, basic_line, bearer, str_of};

/// The `email/token:api_token` pair the fake accepts as Basic auth.
pub const BASIC: &str = "agent@example.com/token:zd-api-token";

/// `[connections.zendesk]` at the fake's `/api/v2`, with [`BASIC`].
pub fn connection() -> Connection {
    Connection::new("zendesk", "/api/v2", &basic_line(BASIC), fake())
}

#[derive(Default)]
struct Desk {
    tickets: u64,
    /// Idempotency-Key → (request body, response)
    keys: BTreeMap<String, (Value, Value)>,
}

/// The fake: `POST /tickets.json` only; ticket IDs count up from 1.
pub fn fake() -> impl Fn(&Recorded) -> Reply + Send + Sync + 'static {
    let desk: Arc<Mutex<Desk>> = Arc::default();
    move |r| {
        let authed = basic(r).as_deref() == Some(BASIC) || bearer(r) == Some("zd-oauth");
        if !authed {
            return Reply::json(401, &json!({"error": "Couldn't authenticate you"}));
        }
        if (r.method.as_str(), r.path.as_str()) != ("POST", "/api/v2/tickets.json") {
            return Reply::json(
                404,
                &json!({"error": "InvalidEndpoint", "description": "Not found"}),
            );
        }
        let body = r.json.clone().unwrap_or(Value::Null);
        let ticket = body.get("ticket").cloned().unwrap_or(Value::Null);
        let comment = ticket["comment"]["body"]
            .as_str()
            .or(ticket["description"].as_str());
        if let Some(invalid) = invalid(&ticket, comment) {
            return invalid;
        }
        let mut desk = desk.lock();
        let key = r.header("idempotency-key").map(str::to_owned);
        if let Some((seen, answer)) = key.as_ref().and_then(|k| desk.keys.get(k)) {
            if *seen != body {
                return Reply::json(
                    400,
                    &json!({"error": "IdempotentRequestError",
                    "description": "The request parameters do not match the original request with this idempotency key"}),
                );
            }
            return Reply::json(201, answer).header("x-idempotency-lookup", "hit");
        }
        desk.tickets += 1;
        let id = desk.tickets;
        let answer = json!({"ticket": {"id": id, "url": format!("https://acme.zendesk.com/api/v2/tickets/{id}.json"),
            "subject": ticket["subject"], "description": comment, "status": "new", "priority": ticket["priority"],
            "tags": ticket["tags"], "external_id": ticket["external_id"], "requester_id": 9001}});
        let mut reply = Reply::json(201, &answer);
        if let Some(k) = key {
            desk.keys.insert(k, (body, answer));
            reply = reply.header("x-idempotency-lookup", "miss");
        }
        reply
    }
}

/// The 422 for a ticket Zendesk refuses, if it does.
fn invalid(ticket: &Value, comment: Option<&str>) -> Option<Reply> {
    let invalid = |field: &str, description: &str, code: &str| {
        Some(Reply::json(
            422,
            &json!({"error": "RecordInvalid", "description": "Record validation errors",
            "details": {field: [{"description": description, "error": code}]}}),
        ))
    };
    if comment.is_none_or(str::is_empty) {
        return invalid("base", "Description: cannot be blank", "BlankValue");
    }
    if let Some(p) = ticket.get("priority")
        && !["urgent", "high", "normal", "low"].contains(&p.as_str().unwrap_or_default())
    {
        return invalid(
            "priority",
            "Priority: is not included in the list",
            "InvalidValue",
        );
    }
    if ticket
        .get("tags")
        .is_some_and(|t| !t.as_array().is_some_and(|a| a.iter().all(Value::is_string)))
    {
        return invalid("tags", "Tags: must be an array of strings", "InvalidValue");
    }
    if ticket
        .get("requester")
        .is_some_and(|q| str_of(q, "email").is_none())
    {
        return invalid("requester", "Requester: email is required", "BlankValue");
    }
    None
}
