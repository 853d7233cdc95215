//! HubSpot CRM v3: bearer auth, string property values, PATCH by email with
//! `idProperty`, 404 for an unknown email, 409 for a duplicate, search filters, deal
//! stages and association types.

use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::{Map, Value, json};
use spur::testing::{Recorded, Reply};

use super::{Connection, bearer, bearer_line, path_segment};

/// The private-app token the fake accepts.
pub const TOKEN: &str = "pat-na1-test";

/// An email the fake creates concurrently with the client's first update.
pub const RACING_EMAIL: &str = "racing@example.com";

const DEAL_STAGES: &[&str] = &[
    "appointmentscheduled",
    "qualifiedtobuy",
    "contractsent",
    "closedwon",
    "closedlost",
];

/// `[connections.hubspot]` at the fake's root, with [`TOKEN`].
pub fn connection() -> Connection {
    Connection::new("hubspot", "", &bearer_line(TOKEN), fake())
}

/// The fake: contacts (create, update by ID or email, search), deals (create with
/// contact associations, update) and companies (create). IDs count up from 512.
pub fn fake() -> impl Fn(&Recorded) -> Reply + Send + Sync + 'static {
    let crm: Arc<Mutex<Crm>> = Arc::default();
    move |r| {
        if bearer(r) != Some(TOKEN) {
            return error(
                401,
                "INVALID_AUTHENTICATION",
                "Authentication credentials not found. This API supports OAuth 2.0 authentication.",
            );
        }
        let body = r.json.clone().unwrap_or(Value::Null);
        let props = match properties(r, &body) {
            Ok(props) => props,
            Err(reply) => return reply,
        };
        let mut crm = crm.lock();
        let Some(rest) = r.path.strip_prefix("/crm/v3/objects/") else {
            return not_found();
        };
        let segs: Vec<&str> = rest.split('/').collect();
        match (r.method.as_str(), segs.as_slice()) {
            ("POST", ["contacts"]) => crm.create_contact(props),
            ("PATCH", ["contacts", raw]) => crm.update_contact(r, raw, &props),
            ("POST", ["contacts", "search"]) => crm.search_contacts(&body),
            ("POST", ["deals"]) => crm.create_deal(&body, props),
            ("PATCH", ["deals", id]) => {
                if !crm.exists("deals", id) {
                    return not_found();
                }
                crm.update("deals", id, &props);
                Reply::json(200, &crm.object("deals", id))
            }
            ("POST", ["companies"]) => {
                let id = crm.create("companies", props);
                Reply::json(201, &crm.object("companies", &id))
            }
            _ => not_found(),
        }
    }
}

/// HubSpot's error answer.
fn error(status: u16, category: &str, message: &str) -> Reply {
    Reply::json(
        status,
        &json!({"status": "error", "message": message,
            "correlationId": "3f1c2e6a-0d4b-4c8e-9f1a-5b7d8e9f0a1b", "category": category}),
    )
}

fn not_found() -> Reply {
    error(404, "OBJECT_NOT_FOUND", "resource not found")
}

/// The request's `properties`, checked: string values, a known deal stage, the
/// default pipeline.
fn properties(r: &Recorded, body: &Value) -> Result<Map<String, Value>, Reply> {
    let props = match body.get("properties") {
        None => Map::new(),
        Some(Value::Object(p)) => {
            if let Some((k, v)) = p.iter().find(|(_, v)| !v.is_string()) {
                return Err(error(
                    400,
                    "VALIDATION_ERROR",
                    &format!("Property values were not valid: {k}={v} is not a string"),
                ));
            }
            p.clone()
        }
        // A search names the properties to return.
        Some(_) if r.path.ends_with("/search") => Map::new(),
        Some(_) => {
            return Err(error(
                400,
                "VALIDATION_ERROR",
                "Invalid input JSON on line 1",
            ));
        }
    };
    if let Some(stage) = props.get("dealstage").and_then(Value::as_str)
        && !DEAL_STAGES.contains(&stage)
    {
        return Err(error(
            400,
            "VALIDATION_ERROR",
            &format!(
                "Property values were not valid: dealstage {stage:?} is not a valid deal stage ID"
            ),
        ));
    }
    if props.get("pipeline").is_some_and(|p| p != "default") {
        return Err(error(
            400,
            "VALIDATION_ERROR",
            "Property values were not valid: pipeline",
        ));
    }
    Ok(props)
}

/// The fake's records.
#[derive(Default)]
struct Crm {
    next_id: u64,
    /// (object type, id, properties)
    objects: Vec<(String, String, Map<String, Value>)>,
}

impl Crm {
    fn object(&self, kind: &str, id: &str) -> Value {
        let (_, _, props) = self
            .objects
            .iter()
            .find(|(k, i, _)| k == kind && i == id)
            .expect("object exists");
        let mut props = props.clone();
        props.insert("hs_object_id".into(), json!(id));
        json!({"id": id, "properties": props, "createdAt": "2025-01-02T03:04:05.678Z",
            "updatedAt": "2025-01-02T03:04:05.678Z", "archived": false})
    }

    fn exists(&self, kind: &str, id: &str) -> bool {
        self.objects.iter().any(|(k, i, _)| k == kind && i == id)
    }

    fn find_by(&self, kind: &str, prop: &str, value: &str) -> Option<String> {
        self.objects
            .iter()
            .find(|(k, _, p)| k == kind && p.get(prop).and_then(Value::as_str) == Some(value))
            .map(|(_, id, _)| id.clone())
    }

    fn create(&mut self, kind: &str, props: Map<String, Value>) -> String {
        self.next_id += 1;
        let id = (511 + self.next_id).to_string();
        self.objects.push((kind.into(), id.clone(), props));
        id
    }

    fn update(&mut self, kind: &str, id: &str, props: &Map<String, Value>) {
        if let Some((_, _, p)) = self
            .objects
            .iter_mut()
            .find(|(k, i, _)| k == kind && i == id)
        {
            p.extend(props.clone());
        }
    }

    /// `POST /contacts`: 409 when the email exists.
    fn create_contact(&mut self, props: Map<String, Value>) -> Reply {
        let email = props
            .get("email")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if let Some(id) = self.find_by("contacts", "email", email) {
            return error(
                409,
                "CONFLICT",
                &format!("Contact already exists. Existing ID: {id}"),
            );
        }
        let id = self.create("contacts", props);
        Reply::json(201, &self.object("contacts", &id))
    }

    /// `PATCH /contacts/{id}`, or `/contacts/{email}?idProperty=email`.
    fn update_contact(&mut self, r: &Recorded, raw: &str, props: &Map<String, Value>) -> Reply {
        let id = if r.query.get("idProperty").map(String::as_str) == Some("email") {
            let Some(email) = path_segment(raw) else {
                return error(
                    400,
                    "VALIDATION_ERROR",
                    "the email in the path is not URL-encoded",
                );
            };
            if email == RACING_EMAIL && self.find_by("contacts", "email", &email).is_none() {
                // Someone else creates this contact while the client is told 404.
                let mut created = Map::new();
                created.insert("email".into(), json!(email));
                self.create("contacts", created);
                return not_found();
            }
            self.find_by("contacts", "email", &email)
        } else {
            Some(raw.to_owned()).filter(|id| self.exists("contacts", id))
        };
        let Some(id) = id else { return not_found() };
        self.update("contacts", &id, props);
        Reply::json(200, &self.object("contacts", &id))
    }

    /// `POST /contacts/search`: EQ filters ANDed in one group, a limit ≤200, the
    /// named properties (or HubSpot's default three).
    fn search_contacts(&self, body: &Value) -> Reply {
        let filters = body["filterGroups"][0]["filters"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let valid = !filters.is_empty()
            && filters.iter().all(|f| {
                f["propertyName"].is_string() && f["operator"] == "EQ" && f["value"].is_string()
            });
        if !valid || body["limit"].as_u64().is_none_or(|l| l > 200) {
            return error(400, "VALIDATION_ERROR", "Invalid search request");
        }
        let wanted: Vec<String> = body["properties"].as_array().map_or_else(
            || vec!["email".into(), "firstname".into(), "lastname".into()],
            |a| {
                a.iter()
                    .filter_map(|p| p.as_str().map(str::to_owned))
                    .collect()
            },
        );
        let results: Vec<Value> = self
            .objects
            .iter()
            .filter(|(k, _, p)| {
                k == "contacts"
                    && filters.iter().all(|f| {
                        p.get(f["propertyName"].as_str().unwrap_or_default()) == Some(&f["value"])
                    })
            })
            .map(|(_, id, _)| {
                let mut o = self.object("contacts", id);
                let all = o["properties"].as_object().cloned().unwrap_or_default();
                o["properties"] = all
                    .into_iter()
                    .filter(|(k, _)| wanted.contains(k) || k == "hs_object_id")
                    .collect();
                o
            })
            .collect();
        Reply::json(200, &json!({"total": results.len(), "results": results}))
    }

    /// `POST /deals`: each association names an existing contact and the
    /// deal-to-contact type (HUBSPOT_DEFINED 3).
    fn create_deal(&mut self, body: &Value, props: Map<String, Value>) -> Reply {
        for a in body["associations"].as_array().cloned().unwrap_or_default() {
            let to = a["to"]["id"].as_str().unwrap_or_default();
            if !self.exists("contacts", to) {
                return error(400, "VALIDATION_ERROR", &format!("No contact with ID {to}"));
            }
            let types_ok = a["types"].as_array().is_some_and(|ts| {
                !ts.is_empty()
                    && ts.iter().all(|t| {
                        t["associationCategory"] == "HUBSPOT_DEFINED" && t["associationTypeId"] == 3
                    })
            });
            if !types_ok {
                return error(400, "VALIDATION_ERROR", "invalid association type");
            }
        }
        let id = self.create("deals", props);
        Reply::json(201, &self.object("deals", &id))
    }
}
