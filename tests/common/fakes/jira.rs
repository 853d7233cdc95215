//! Jira Cloud v3: Basic `email:token`, `{"fields": …}` with project, summary, issue
//! type, and an ADF description.

use serde_json::{Map, Value, json};
use spur::testing::{Recorded, Reply};

use super::{Connection, basic, basic_line};

/// The `email:api_token` pair the fake accepts as Basic auth.
pub const BASIC: &str = "you@example.com:jira-api-token";

/// `[connections.jira]` at the fake's `/rest/api/3`, with [`BASIC`].
pub fn connection() -> Connection {
    Connection::new("jira", "/rest/api/3", &basic_line(BASIC), fake())
}

/// The fake: `POST /issue` in project OPS only; every issue is OPS-24.
pub fn fake() -> impl Fn(&Recorded) -> Reply + Send + Sync + 'static {
    move |r| {
        if basic(r).as_deref() != Some(BASIC) {
            return Reply::json(
                401,
                &json!({"errorMessages": ["You are not authenticated. Authentication required to perform this operation."], "errors": {}}),
            );
        }
        if (r.method.as_str(), r.path.as_str()) != ("POST", "/rest/api/3/issue") {
            return Reply::json(404, &json!({"errorMessages": ["Not found"], "errors": {}}));
        }
        let fields = r.json.as_ref().map_or(Value::Null, |b| b["fields"].clone());
        let mut errors = Map::new();
        let project = fields["project"]["key"]
            .as_str()
            .or(fields["project"]["id"].as_str());
        if project != Some("OPS") {
            errors.insert("project".into(), json!("valid project is required"));
        }
        if fields["summary"].as_str().is_none_or(str::is_empty) {
            errors.insert(
                "summary".into(),
                json!("You must specify a summary of the issue."),
            );
        }
        let issuetype = fields["issuetype"]["name"]
            .as_str()
            .or(fields["issuetype"]["id"].as_str());
        if !issuetype.is_some_and(|t| ["Task", "Bug", "Story", "10001"].contains(&t)) {
            errors.insert("issuetype".into(), json!("Specify a valid issue type"));
        }
        if let Some(d) = fields.get("description")
            && !valid_adf(d)
        {
            errors.insert(
                "description".into(),
                json!("Operation value must be an Atlassian Document (see the Atlassian Document Format)"),
            );
        }
        if !errors.is_empty() {
            return Reply::json(400, &json!({"errorMessages": [], "errors": errors}));
        }
        Reply::json(
            201,
            &json!({"id": "10000", "key": "OPS-24", "self": "https://acme.atlassian.net/rest/api/3/issue/10000"}),
        )
    }
}

/// Whether `doc` is an Atlassian document of paragraphs of text and hard breaks.
fn valid_adf(doc: &Value) -> bool {
    let node_ok = |n: &Value| match n["type"].as_str() {
        Some("text") => n["text"].as_str().is_some_and(|t| !t.is_empty()),
        Some("hardBreak") => true,
        _ => false,
    };
    doc["type"] == "doc"
        && doc["version"] == 1
        && doc["content"].as_array().is_some_and(|blocks| {
            blocks.iter().all(|b| {
                b["type"] == "paragraph"
                    && b["content"]
                        .as_array()
                        .is_some_and(|c| c.iter().all(node_ok))
            })
        })
}
