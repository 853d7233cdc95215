//! Asana: bearer auth, `{"data": …}` wrapping, a workspace (direct or implied by
//! `projects`), gid arrays, `YYYY-MM-DD` dates, `opt_fields`.

use serde_json::{Value, json};
use spur::testing::{Recorded, Reply};

use super::{Connection, bearer, bearer_line};

/// The personal access token the fake accepts.
pub const TOKEN: &str = "asana-pat-test";

/// `[connections.asana]` at the fake's `/api/1.0`, with [`TOKEN`].
pub fn connection() -> Connection {
    Connection::new("asana", "/api/1.0", &bearer_line(TOKEN), fake())
}

/// Asana's error answer.
fn error(status: u16, message: &str) -> Reply {
    Reply::json(
        status,
        &json!({"errors": [{"message": message,
        "help": "For more information on API status codes and how to handle them, read the docs on errors: https://developers.asana.com/docs/errors"}]}),
    )
}

/// The fake: `POST /tasks` only; every task gets gid 1204000000000042.
pub fn fake() -> impl Fn(&Recorded) -> Reply + Send + Sync + 'static {
    move |r| {
        if bearer(r) != Some(TOKEN) {
            return error(401, "Not Authorized");
        }
        if (r.method.as_str(), r.path.as_str()) != ("POST", "/api/1.0/tasks") {
            return error(404, "Unknown object or route");
        }
        let body = r.json.clone().unwrap_or(Value::Null);
        let Some(data) = body.get("data").filter(|d| d.is_object()) else {
            return error(400, "data: Missing input");
        };
        if body.as_object().is_some_and(|b| b.len() != 1) {
            return error(
                400,
                "Unrecognized top-level key; put task fields inside data",
            );
        }
        let gids = |v: &Value| {
            v.as_array().is_some_and(|a| {
                a.iter().all(|g| {
                    g.as_str()
                        .is_some_and(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()))
                })
            })
        };
        if data.get("projects").is_some_and(|p| !gids(p)) {
            return error(400, "projects: [0]: Not a valid gid");
        }
        let has_workspace = data.get("workspace").is_some()
            || data.get("parent").is_some()
            || data["projects"].as_array().is_some_and(|p| !p.is_empty());
        if !has_workspace {
            return error(400, "workspace: Missing input");
        }
        if let Some(due) = data.get("due_on") {
            let valid = due
                .as_str()
                .is_some_and(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").is_ok());
            if !valid {
                return error(400, &format!("due_on: Invalid date: {due}"));
            }
        }
        Reply::json(201, &json!({"data": task(r, data)}))
    }
}

/// The created task, with the `opt_fields` asked for.
fn task(r: &Recorded, data: &Value) -> Value {
    let gid = "1204000000000042";
    let mut task = json!({"gid": gid, "resource_type": "task", "name": data.get("name").unwrap_or(&json!(""))});
    let wanted = r.query.get("opt_fields").cloned().unwrap_or_default();
    for field in wanted.split(',').map(str::trim) {
        match field {
            "permalink_url" => {
                task["permalink_url"] = json!(format!(
                    "https://app.asana.com/0/{}/{gid}",
                    data["projects"][0].as_str().unwrap_or("0")
                ));
            }
            "notes" | "due_on" | "assignee" => {
                task[field] = data.get(field).cloned().unwrap_or(Value::Null);
            }
            _ => {}
        }
    }
    task
}
