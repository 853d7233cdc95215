//! Salesforce REST: bearer auth, known API versions, error arrays, `Id` refused in
//! bodies, upsert by external ID (201 / 200 / 204), paged SOQL queries, and
//! `Sforce-Limit-Info` on every response.

use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::{Map, Value, json};
use spur::testing::{Recorded, Reply};

use super::{Connection, bearer, bearer_line, path_segment};

/// The session token the fake accepts.
pub const TOKEN: &str = "00Dxx0000001gPL!sf-test";

/// (sobject, its external-ID field)
const EXTERNAL_IDS: &[(&str, &str)] =
    &[("Account", "External_Id__c"), ("Contact", "Segment_Id__c")];
const VERSIONS: &[&str] = &["v59.0", "v60.0", "v61.0", "v62.0"];

/// The fake's records, shared with a test that seeds or inspects them.
#[derive(Default)]
pub struct Org {
    next_id: u64,
    /// (sobject, id, fields)
    pub records: Vec<(String, String, Map<String, Value>)>,
    /// Answer updates by upsert with 204 and no body, as API versions ≤45.0 do.
    pub legacy_updates: bool,
    api_calls: u64,
}

/// `[connections.salesforce]` at the fake's root (on an org of its own), with
/// [`TOKEN`].
pub fn connection() -> Connection {
    connection_to(&Arc::default())
}

/// [`connection`] to the fake of `org`.
pub fn connection_to(org: &Arc<Mutex<Org>>) -> Connection {
    Connection::new("salesforce", "", &bearer_line(TOKEN), fake(Arc::clone(org)))
}

/// The fake of `org`: create, upsert and get by external ID, SOQL queries (one
/// canned answer in two pages).
pub fn fake(org: Arc<Mutex<Org>>) -> impl Fn(&Recorded) -> Reply + Send + Sync + 'static {
    move |r| {
        let mut org = org.lock();
        org.api_calls += 1;
        let usage = format!("api-usage={}/100000", org.api_calls);
        answer(&mut org, r).header("sforce-limit-info", &usage)
    }
}

/// Salesforce's error answer.
fn error(status: u16, code: &str, message: &str) -> Reply {
    Reply::json(status, &json!([{"message": message, "errorCode": code}]))
}

fn not_found() -> Reply {
    error(404, "NOT_FOUND", "The requested resource does not exist")
}

/// The answer to `r`, before the limit header.
fn answer(org: &mut Org, r: &Recorded) -> Reply {
    if bearer(r) != Some(TOKEN) {
        return error(401, "INVALID_SESSION_ID", "Session expired or invalid");
    }
    let Some(rest) = r.path.strip_prefix("/services/data/") else {
        return not_found();
    };
    let segs: Vec<&str> = rest.split('/').collect();
    if !VERSIONS.contains(&segs[0]) {
        return not_found();
    }
    let body = r.json.clone().unwrap_or(Value::Null);
    if matches!(r.method.as_str(), "POST" | "PATCH") {
        let Some(fields) = body.as_object() else {
            return error(
                400,
                "JSON_PARSER_ERROR",
                "Unexpected character: was expecting a JSON object",
            );
        };
        if fields.contains_key("Id") {
            return error(
                400,
                "INVALID_FIELD",
                "The Id field should not be specified in the sobject data.",
            );
        }
    }
    let fields = body.as_object().cloned().unwrap_or_default();
    match (r.method.as_str(), &segs[1..]) {
        ("POST", ["sobjects", sobject]) => org.create(sobject, fields),
        (method @ ("PATCH" | "GET"), ["sobjects", sobject, field, raw]) => {
            org.by_external_id(method, segs[0], sobject, field, raw, fields)
        }
        ("GET", ["query"]) => {
            let q = r.query.get("q").cloned().unwrap_or_default();
            if !q.starts_with("SELECT ") {
                return error(400, "MALFORMED_QUERY", &format!("unexpected token: {q}"));
            }
            Reply::json(
                200,
                &json!({"totalSize": 3, "done": false,
                "nextRecordsUrl": format!("/services/data/{}/query/01gD0000002HU6KIAW-2", segs[0]),
                "records": [account("0018a0000000001", "A&B Corp"), account("0018a0000000002", "50% Off Ltd")]}),
            )
        }
        ("GET", ["query", "01gD0000002HU6KIAW-2"]) => Reply::json(
            200,
            &json!({"totalSize": 3, "done": true, "records": [account("0018a0000000003", "O'Brien & Sons")]}),
        ),
        _ => not_found(),
    }
}

/// A query result row.
fn account(id: &str, name: &str) -> Value {
    json!({"attributes": {"type": "Account", "url": format!("/services/data/v61.0/sobjects/Account/{id}")},
        "Id": id, "Name": name})
}

impl Org {
    /// `POST /sobjects/{sobject}`: a Lead needs a LastName.
    fn create(&mut self, sobject: &str, fields: Map<String, Value>) -> Reply {
        if sobject == "Lead" && !fields.contains_key("LastName") {
            return Reply::json(
                400,
                &json!([{"message": "Required fields are missing: [LastName]",
                    "errorCode": "REQUIRED_FIELD_MISSING", "fields": ["LastName"]}]),
            );
        }
        self.next_id += 1;
        let id = format!("00Q8a00000{:08}", self.next_id);
        self.records.push((sobject.into(), id.clone(), fields));
        Reply::json(201, &json!({"id": id, "success": true, "errors": []}))
    }

    /// `PATCH` (upsert) or `GET /sobjects/{sobject}/{field}/{value}`: 300 with the
    /// candidates' URLs when more than one record matches.
    fn by_external_id(
        &mut self,
        method: &str,
        version: &str,
        sobject: &str,
        field: &str,
        raw: &str,
        fields: Map<String, Value>,
    ) -> Reply {
        if !EXTERNAL_IDS.contains(&(sobject, field)) {
            return not_found();
        }
        let Some(value) = path_segment(raw) else {
            return not_found();
        };
        let matches: Vec<usize> = (0..self.records.len())
            .filter(|&i| {
                let (o, _, f) = &self.records[i];
                o == sobject && f.get(field).and_then(Value::as_str) == Some(value.as_str())
            })
            .collect();
        if matches.len() > 1 {
            let urls: Vec<String> = matches
                .iter()
                .map(|&i| {
                    format!(
                        "/services/data/{version}/sobjects/{sobject}/{}",
                        self.records[i].1
                    )
                })
                .collect();
            return Reply::json(300, &json!(urls));
        }
        match (method, matches.first().copied()) {
            ("GET", None) => not_found(),
            ("GET", Some(i)) => {
                let (_, id, _) = &self.records[i];
                Reply::json(
                    200,
                    &json!({"attributes": {"type": sobject,
                    "url": format!("/services/data/v61.0/sobjects/{sobject}/{id}")}, "Id": id}),
                )
            }
            (_, None) => {
                self.next_id += 1;
                let id = format!("0018a00000{:08}", self.next_id);
                let mut f = fields;
                f.insert(field.into(), json!(value));
                self.records.push((sobject.into(), id.clone(), f));
                Reply::json(
                    201,
                    &json!({"id": id, "success": true, "errors": [], "created": true}),
                )
            }
            (_, Some(i)) => {
                self.records[i].2.extend(fields);
                if self.legacy_updates {
                    return Reply {
                        status: 204,
                        headers: Vec::new(),
                        body: String::new(),
                    };
                }
                let id = self.records[i].1.clone();
                Reply::json(
                    200,
                    &json!({"id": id, "success": true, "errors": [], "created": false}),
                )
            }
        }
    }
}
