//! The stdlib connector modules (`stdlib/*.rhai`) end to end: a handler script calls a
//! module, the module's named connection points at a fake of the service, and the fake
//! checks what the real service checks (auth, method, path, body wrapping, field
//! rules) and answers in the service's own shapes, so a broken module fails here.
//! Run with: cargo nextest run --test connectors

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use common::TestApp;
use parking_lot::Mutex;
use serde_json::{Map, Value, json};
use spur::run::{RunRecord, RunStatus};
use spur::testing::{FakeHttp, Recorded, Reply};

const SLACK_TOKEN: &str = "xoxb-test";
const HUBSPOT_TOKEN: &str = "pat-na1-test";
const SALESFORCE_TOKEN: &str = "00Dxx0000001gPL!sf-test";
const ASANA_TOKEN: &str = "asana-pat-test";
const ZENDESK_BASIC: &str = "agent@example.com/token:zd-api-token";
const JIRA_BASIC: &str = "you@example.com:jira-api-token";
const ROUTING_KEY: &str = "e93facc04764012d7bfb002500d5d1a6";

// ---------------------------------------------------------------------------------
// Harness

/// `[connections.NAME]` pointing at `base_url`, with `auth` lines (`bearer = "…"`).
fn connection(name: &str, base_url: &str, auth: &str) -> String {
    format!("[connections.{name}]\nbase_url = \"{base_url}\"\n{auth}\n")
}

/// Starts spur with one handler script and `config`; a retryable run stays `retrying`
/// for the whole test (its next attempt is minutes away).
async fn app(script: &str, config: &str) -> TestApp {
    TestApp::builder()
        .script("flow.rhai", script)
        .config(config)
        .config("[retry]\nmax_attempts = 3\nbase_ms = 600000")
        .start()
        .await
}

/// Sends a track event `name` from `user` (events of one user run in order).
async fn track(t: &TestApp, user: &str, name: &str) {
    let (status, body) = t
        .post("/v1/track", &json!({"userId": user, "event": name}))
        .await;
    assert_eq!(status, 200, "{body}");
}

/// The run of the handler registered for event `name`.
fn run_of<'a>(runs: &'a [RunRecord], name: &str) -> &'a RunRecord {
    let key = format!("({name})");
    runs.iter()
        .find(|r| r.handler.contains(&key))
        .unwrap_or_else(|| panic!("no run for {name}: {runs:#?}"))
}

/// The log lines of a run that must have succeeded.
fn ok_logs(run: &RunRecord) -> Vec<String> {
    assert_eq!(run.status, RunStatus::Ok, "{run:#?}");
    run.logs.iter().map(|l| l.message.clone()).collect()
}

/// The error message of a run that must have ended with `status`.
fn error_of(run: &RunRecord, status: RunStatus) -> String {
    assert_eq!(run.status, status, "{run:#?}");
    run.error.as_ref().expect("an error").message.clone()
}

/// The HTTP status of each call a run made, in order.
fn run_status_calls(run: &RunRecord) -> Vec<Option<u16>> {
    run.calls.iter().map(|c| c.status).collect()
}

fn bearer(r: &Recorded) -> Option<&str> {
    r.header("authorization")?.strip_prefix("Bearer ")
}

/// The decoded `user:password` of a Basic header.
fn basic(r: &Recorded) -> Option<String> {
    let encoded = r.header("authorization")?.strip_prefix("Basic ")?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    String::from_utf8(bytes).ok()
}

fn is_json(r: &Recorded) -> bool {
    r.header("content-type")
        .is_some_and(|c| c.starts_with("application/json"))
}

/// Decodes a percent-encoded path segment; `None` unless every character that must
/// be encoded in a path segment (`@`, `+`, `/`, space, …) was.
fn path_segment(raw: &str) -> Option<String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || "-._~%".contains(c);
    if !raw.chars().all(ok) {
        return None;
    }
    let mut bytes = Vec::new();
    let mut rest = raw.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn empty(status: u16) -> Reply {
    Reply {
        status,
        headers: Vec::new(),
        body: String::new(),
    }
}

// ---------------------------------------------------------------------------------
// Slack

/// Slack Web API: errors are HTTP 200 `ok:false`; messages are remembered by
/// `(channel, ts)` so chat.update can find them.
fn slack_fake() -> impl Fn(&Recorded) -> Reply + Send + Sync + 'static {
    struct Msg {
        ts: String,
        text: Value,
        blocks: Value,
    }
    let messages: Arc<Mutex<Vec<Msg>>> = Arc::default();
    move |r| {
        let fail = |code: &str| Reply::json(200, &json!({"ok": false, "error": code}));
        match bearer(r) {
            None => return fail("not_authed"),
            Some(t) if t != SLACK_TOKEN => return fail("invalid_auth"),
            Some(_) => {}
        }
        if r.method != "POST" || !is_json(r) {
            return fail("invalid_arguments");
        }
        let Some(body) = r.json.clone().filter(Value::is_object) else {
            return fail("invalid_json");
        };
        let mut messages = messages.lock();
        let mut answer = match r.path.as_str() {
            "/api/chat.postMessage" => {
                let channel = match str_of(&body, "channel") {
                    Some("C123" | "#sales") => "C123",
                    _ => return fail("channel_not_found"),
                };
                let text = body.get("text").cloned().unwrap_or(Value::Null);
                let blocks = body.get("blocks").cloned().unwrap_or_else(|| json!([]));
                let no_text = text.as_str().is_none_or(str::is_empty);
                if no_text && blocks.as_array().is_none_or(Vec::is_empty) {
                    return fail("no_text");
                }
                if !valid_blocks(&blocks) {
                    return fail("invalid_blocks");
                }
                let ts = format!("1700000000.{:06}", messages.len() + 1);
                let message = json!({"type": "message", "bot_id": "B01", "text": text,
                    "blocks": blocks, "ts": ts, "thread_ts": body.get("thread_ts")});
                messages.push(Msg {
                    ts: ts.clone(),
                    text,
                    blocks,
                });
                json!({"ok": true, "channel": channel, "ts": ts, "message": message})
            }
            "/api/chat.update" => {
                // chat.update takes a channel ID, not a name.
                if str_of(&body, "channel") != Some("C123") {
                    return fail("channel_not_found");
                }
                let ts = str_of(&body, "ts").unwrap_or_default();
                let Some(m) = messages.iter_mut().find(|m| m.ts == ts) else {
                    return fail("message_not_found");
                };
                if let Some(text) = body.get("text") {
                    m.text = text.clone();
                }
                // Omitted blocks stay; `[]` removes them.
                if let Some(blocks) = body.get("blocks") {
                    m.blocks = blocks.clone();
                }
                json!({"ok": true, "channel": "C123", "ts": ts, "text": m.text,
                    "message": {"type": "message", "text": m.text, "blocks": m.blocks, "ts": ts}})
            }
            _ => return fail("unknown_method"),
        };
        if !r
            .header("content-type")
            .unwrap_or_default()
            .contains("charset")
        {
            answer["warning"] = json!("missing_charset");
        }
        Reply::json(200, &answer)
    }
}

/// Block Kit button rules: plain_text ≤75, action_id ≤255 and unique in its block,
/// value ≤2000, style `primary|danger` or absent.
fn valid_blocks(blocks: &Value) -> bool {
    let Some(blocks) = blocks.as_array() else {
        return false;
    };
    blocks.iter().all(|block| {
        let mut ids = Vec::new();
        block["elements"].as_array().is_none_or(|els| {
            els.iter().filter(|e| e["type"] == "button").all(|b| {
                let id = b["action_id"].as_str().unwrap_or_default().to_owned();
                let fresh = !ids.contains(&id);
                ids.push(id.clone());
                b["text"]["type"] == "plain_text"
                    && b["text"]["text"]
                        .as_str()
                        .is_some_and(|t| t.chars().count() <= 75)
                    && id.len() <= 255
                    && fresh
                    && b["value"].as_str().is_none_or(|v| v.len() <= 2000)
                    && (b.get("style").is_none()
                        || b["style"] == "primary"
                        || b["style"] == "danger")
            })
        })
    })
}

fn slack_config(fake: &FakeHttp) -> String {
    connection(
        "slack",
        &format!("{}/api", fake.base_url),
        &format!("bearer = \"{SLACK_TOKEN}\""),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_post_sends_chat_post_message_and_returns_the_ts() {
    let mut fake = FakeHttp::start(slack_fake()).await;
    let script = r##"
        import "slack" as slack;
        on_track("Order Completed", |e| {
            let m = slack::post("#sales", "Order #42 placed");
            log::info(`${m.ok} ${m.channel} ${m.ts} ${m.message.text}`);
            let reply = slack::post(#{
                channel: m.channel,
                text: "Approval needed: refund #42",
                blocks: [
                    #{ type: "section", text: #{ type: "mrkdwn", text: "*Refund #42* needs approval" } },
                    #{ type: "actions", block_id: "decision", elements: [
                        #{ type: "button", action_id: "approve", style: "primary",
                           text: #{ type: "plain_text", text: "Approve" }, value: "req_42:approve" },
                        #{ type: "button", action_id: "reject", style: "danger",
                           text: #{ type: "plain_text", text: "Reject" }, value: "req_42:reject" } ] }
                ],
                thread_ts: m.ts,
                unfurl_links: (),
            });
            log::info(`${reply.ts} ${reply.message.thread_ts}`);
        });
    "##;
    let t = app(script, &slack_config(&fake)).await;
    track(&t, "u1", "Order Completed").await;

    let first = fake.next(10).await;
    assert_eq!(first.method, "POST");
    assert_eq!(first.path, "/api/chat.postMessage");
    assert_eq!(first.header("authorization"), Some("Bearer xoxb-test"));
    assert_eq!(
        first.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(
        first.json,
        Some(json!({"channel": "#sales", "text": "Order #42 placed"}))
    );
    let second = fake.next(10).await;
    let body = second.json.expect("JSON body");
    assert_eq!(body["channel"], "C123");
    assert_eq!(body["thread_ts"], "1700000000.000001");
    assert_eq!(body["blocks"][1]["elements"][0]["action_id"], "approve");
    assert_eq!(body.get("unfurl_links"), None, "absent fields are left out");

    let runs = t.wait_run_count(1, 10).await;
    assert_eq!(
        ok_logs(&runs[0]),
        [
            "true C123 1700000000.000001 Order #42 placed",
            "1700000000.000002 1700000000.000001"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_in_the_scripts_dir_overrides_the_stdlib_module_of_that_name() {
    let fake = FakeHttp::start(slack_fake()).await;
    // A team's own slack module: every post goes to one channel, prefixed.
    let module = r#"
        fn post(channel, text) {
            let r = http::request(#{ connection: "slack", method: "POST", path: "/chat.postMessage",
                json: #{ channel: "C123", text: `[${channel}] ${text}` } });
            r.json
        }
    "#;
    let script = r##"on_track("Go", |e| { log::info(slack::post("#anywhere", "hi").ts); });"##;
    let t = TestApp::builder()
        .script("slack.rhai", module)
        .script("flow.rhai", script)
        .config(&slack_config(&fake))
        .start()
        .await;
    track(&t, "u1", "Go").await;
    let runs = t.wait_run_count(1, 10).await;
    assert_eq!(ok_logs(&runs[0]), ["1700000000.000001"]);
    assert_eq!(
        fake.received()[0].json,
        Some(json!({"channel": "C123", "text": "[#anywhere] hi"}))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_update_edits_the_posted_message_by_channel_and_ts() {
    let fake = FakeHttp::start(slack_fake()).await;
    let script = r##"
        on_track("Approved", |e| {
            let m = slack::post(#{ channel: "#sales", text: "Refund #42?",
                blocks: [#{ type: "section", text: #{ type: "mrkdwn", text: "Refund #42?" } }] });
            let a = slack::update(m.channel, m.ts, "Approved by ada");
            log::info(`${a.ts == m.ts} ${a.text} ${a.message.blocks.len()}`);
            let b = slack::update(m.channel, m.ts, #{ text: "Closed", blocks: [] });
            log::info(`${b.text} ${b.message.blocks.len()}`);
        });
    "##;
    let t = app(script, &slack_config(&fake)).await;
    track(&t, "u1", "Approved").await;
    let runs = t.wait_run_count(1, 10).await;
    assert_eq!(ok_logs(&runs[0]), ["true Approved by ada 1", "Closed 0"]);

    let updates: Vec<_> = fake
        .received()
        .into_iter()
        .filter(|r| r.path == "/api/chat.update")
        .collect();
    assert_eq!(updates.len(), 2);
    assert!(
        updates
            .iter()
            .all(|u| u.method == "POST" && u.header("authorization") == Some("Bearer xoxb-test"))
    );
    assert_eq!(
        updates[0].json,
        Some(json!({"channel": "C123", "ts": "1700000000.000001", "text": "Approved by ada"}))
    );
    assert_eq!(
        updates[1].json,
        Some(json!({"channel": "C123", "ts": "1700000000.000001", "text": "Closed", "blocks": []}))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_ok_false_fails_the_run_with_slacks_error_code() {
    let fake = FakeHttp::start(slack_fake()).await;
    let script = r##"
        on_track("Unknown Channel", |e| { slack::post("#nope", "hello"); });
        on_track("Unknown Message", |e| { slack::update("C123", "1.000001", "edited"); });
        on_track("Empty", |e| { slack::post(#{ channel: "C123" }); });
    "##;
    let t = app(script, &slack_config(&fake)).await;
    track(&t, "u1", "Unknown Channel").await;
    track(&t, "u2", "Unknown Message").await;
    track(&t, "u3", "Empty").await;
    let runs = t.wait_run_count(3, 10).await;

    let failed = run_of(&runs, "Unknown Channel");
    assert_eq!(
        error_of(failed, RunStatus::Failed),
        "slack: channel_not_found (200)"
    );
    assert_eq!(
        failed.reason.as_deref(),
        Some("slack: channel_not_found (200)")
    );
    assert_eq!(failed.calls.len(), 1, "a permanent error is not retried");
    assert_eq!(
        error_of(run_of(&runs, "Unknown Message"), RunStatus::Failed),
        "slack: message_not_found (200)"
    );
    assert_eq!(
        error_of(run_of(&runs, "Empty"), RunStatus::Failed),
        "slack: no_text (200)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_rate_limit_after_the_hosts_retries_leaves_the_run_retrying() {
    let fake = FakeHttp::start(|_| {
        Reply::json(429, &json!({"ok": false, "error": "ratelimited"})).header("retry-after", "0")
    })
    .await;
    let config = format!("{}max_attempts = 2\n", slack_config(&fake));
    let t = app(
        r#"on_track("Go", |e| { slack::post("C123", "hi"); });"#,
        &config,
    )
    .await;
    track(&t, "u1", "Go").await;
    let runs = t.wait_run_count(1, 10).await;
    let run = &runs[0];
    assert!(
        error_of(run, RunStatus::Retrying).starts_with("slack: ratelimited (429)"),
        "{run:#?}"
    );
    let attempts: Vec<_> = run.calls.iter().map(|c| (c.status, c.attempt)).collect();
    assert_eq!(attempts, [(Some(429), 1), (Some(429), 2)]);
    assert!(run.next_attempt_at.is_some());
}

// ---------------------------------------------------------------------------------
// HubSpot

const DEAL_STAGES: &[&str] = &[
    "appointmentscheduled",
    "qualifiedtobuy",
    "contractsent",
    "closedwon",
    "closedlost",
];

/// An email the HubSpot fake creates concurrently with the client's first update.
const RACING_EMAIL: &str = "racing@example.com";

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
}

/// HubSpot CRM v3: bearer auth, string property values, PATCH by email with
/// `idProperty`, 404 for an unknown email, 409 for a duplicate, search filters, deal
/// stages and association types.
fn hubspot_fake() -> impl Fn(&Recorded) -> Reply + Send + Sync + 'static {
    let crm: Arc<Mutex<Crm>> = Arc::default();
    move |r| {
        let error = |status: u16, category: &str, message: &str| {
            Reply::json(
                status,
                &json!({"status": "error", "message": message,
                    "correlationId": "3f1c2e6a-0d4b-4c8e-9f1a-5b7d8e9f0a1b", "category": category}),
            )
        };
        if bearer(r) != Some(HUBSPOT_TOKEN) {
            return error(
                401,
                "INVALID_AUTHENTICATION",
                "Authentication credentials not found. This API supports OAuth 2.0 authentication.",
            );
        }
        let body = r.json.clone().unwrap_or(Value::Null);
        let props = match body.get("properties") {
            None => Map::new(),
            Some(Value::Object(p)) => {
                if let Some((k, v)) = p.iter().find(|(_, v)| !v.is_string()) {
                    return error(
                        400,
                        "VALIDATION_ERROR",
                        &format!("Property values were not valid: {k}={v} is not a string"),
                    );
                }
                p.clone()
            }
            // A search names the properties to return.
            Some(_) if r.path.ends_with("/search") => Map::new(),
            Some(_) => return error(400, "VALIDATION_ERROR", "Invalid input JSON on line 1"),
        };
        if let Some(stage) = props.get("dealstage").and_then(Value::as_str)
            && !DEAL_STAGES.contains(&stage)
        {
            return error(
                400,
                "VALIDATION_ERROR",
                &format!(
                    "Property values were not valid: dealstage {stage:?} is not a valid deal stage ID"
                ),
            );
        }
        if props.get("pipeline").is_some_and(|p| p != "default") {
            return error(
                400,
                "VALIDATION_ERROR",
                "Property values were not valid: pipeline",
            );
        }
        let not_found = || error(404, "OBJECT_NOT_FOUND", "resource not found");
        let mut crm = crm.lock();
        let Some(rest) = r.path.strip_prefix("/crm/v3/objects/") else {
            return not_found();
        };
        let segs: Vec<&str> = rest.split('/').collect();
        match (r.method.as_str(), segs.as_slice()) {
            ("POST", ["contacts"]) => {
                let email = props
                    .get("email")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if let Some(id) = crm.find_by("contacts", "email", email) {
                    return error(
                        409,
                        "CONFLICT",
                        &format!("Contact already exists. Existing ID: {id}"),
                    );
                }
                let id = crm.create("contacts", props);
                Reply::json(201, &crm.object("contacts", &id))
            }
            ("PATCH", ["contacts", raw]) => {
                let id = if r.query.get("idProperty").map(String::as_str) == Some("email") {
                    let Some(email) = path_segment(raw) else {
                        return error(
                            400,
                            "VALIDATION_ERROR",
                            "the email in the path is not URL-encoded",
                        );
                    };
                    if email == RACING_EMAIL && crm.find_by("contacts", "email", &email).is_none() {
                        // Someone else creates this contact while the client is told 404.
                        let mut created = Map::new();
                        created.insert("email".into(), json!(email));
                        crm.create("contacts", created);
                        return not_found();
                    }
                    crm.find_by("contacts", "email", &email)
                } else {
                    Some((*raw).to_owned()).filter(|id| crm.exists("contacts", id))
                };
                let Some(id) = id else { return not_found() };
                crm.update("contacts", &id, &props);
                Reply::json(200, &crm.object("contacts", &id))
            }
            ("POST", ["contacts", "search"]) => {
                let filters = body["filterGroups"][0]["filters"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let valid = !filters.is_empty()
                    && filters.iter().all(|f| {
                        f["propertyName"].is_string()
                            && f["operator"] == "EQ"
                            && f["value"].is_string()
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
                let results: Vec<Value> = crm
                    .objects
                    .iter()
                    .filter(|(k, _, p)| {
                        k == "contacts"
                            && filters.iter().all(|f| {
                                p.get(f["propertyName"].as_str().unwrap_or_default())
                                    == Some(&f["value"])
                            })
                    })
                    .map(|(_, id, _)| {
                        let mut o = crm.object("contacts", id);
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
            ("POST", ["deals"]) => {
                for a in body["associations"].as_array().cloned().unwrap_or_default() {
                    let to = a["to"]["id"].as_str().unwrap_or_default();
                    if !crm.exists("contacts", to) {
                        return error(400, "VALIDATION_ERROR", &format!("No contact with ID {to}"));
                    }
                    let types_ok = a["types"].as_array().is_some_and(|ts| {
                        !ts.is_empty()
                            && ts.iter().all(|t| {
                                t["associationCategory"] == "HUBSPOT_DEFINED"
                                    && t["associationTypeId"] == 3
                            })
                    });
                    if !types_ok {
                        return error(400, "VALIDATION_ERROR", "invalid association type");
                    }
                }
                let id = crm.create("deals", props);
                Reply::json(201, &crm.object("deals", &id))
            }
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

fn hubspot_config(fake: &FakeHttp) -> String {
    connection(
        "hubspot",
        &fake.base_url,
        &format!("bearer = \"{HUBSPOT_TOKEN}\""),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubspot_upsert_contact_creates_after_a_404_then_updates_by_email() {
    let fake = FakeHttp::start(hubspot_fake()).await;
    let script = r#"
        on_identify(|e| {
            let c = hubspot::upsert_contact("ada+test@example.com",
                #{ firstname: "Ada", employees: 12, vip: true, interests: ["crm", "ops"], skipped: () });
            log::info(`${c.id} ${c.properties.email} ${c.properties.employees}`);
            let again = hubspot::upsert_contact("ada+test@example.com", #{ lifecyclestage: "customer" });
            log::info(`${again.id} ${again.properties.firstname} ${again.properties.lifecyclestage}`);
        });
    "#;
    let t = app(script, &hubspot_config(&fake)).await;
    t.post("/v1/identify", &json!({"userId": "u1", "traits": {}}))
        .await;
    let runs = t.wait_run_count(1, 10).await;
    assert_eq!(
        ok_logs(&runs[0]),
        ["512 ada+test@example.com 12", "512 Ada customer"]
    );

    let reqs = fake.received();
    let calls: Vec<_> = reqs
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    let by_email = "/crm/v3/objects/contacts/ada%2Btest%40example.com";
    assert_eq!(
        calls,
        [
            ("PATCH", by_email),
            ("POST", "/crm/v3/objects/contacts"),
            ("PATCH", by_email)
        ]
    );
    assert!(reqs.iter().all(|r| bearer(r) == Some(HUBSPOT_TOKEN)));
    assert_eq!(
        reqs[0].query.get("idProperty").map(String::as_str),
        Some("email")
    );
    assert_eq!(
        reqs[0].json,
        Some(
            json!({"properties": {"firstname": "Ada", "employees": "12", "vip": "true", "interests": "crm;ops"}})
        )
    );
    assert_eq!(
        reqs[1].json.as_ref().unwrap()["properties"]["email"],
        "ada+test@example.com"
    );
    assert_eq!(
        run_status_calls(&runs[0]),
        [Some(404), Some(201), Some(200)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubspot_upsert_contact_updates_when_its_create_conflicts() {
    let fake = FakeHttp::start(hubspot_fake()).await;
    let script = r#"on_track("Signed Up", |e| {
        let c = hubspot::upsert_contact("racing@example.com", #{ firstname: "Rae" });
        log::info(`${c.id} ${c.properties.firstname}`);
    });"#;
    let t = app(script, &hubspot_config(&fake)).await;
    track(&t, "u1", "Signed Up").await;
    let runs = t.wait_run_count(1, 10).await;
    assert_eq!(ok_logs(&runs[0]), ["512 Rae"]);
    assert_eq!(
        run_status_calls(&runs[0]),
        [Some(404), Some(409), Some(200)]
    );
    let methods: Vec<_> = fake.received().into_iter().map(|r| r.method).collect();
    assert_eq!(methods, ["PATCH", "POST", "PATCH"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubspot_find_contact_returns_the_contact_or_unit() {
    let fake = FakeHttp::start(hubspot_fake()).await;
    let script = r#"
        on_track("Lookup", |e| {
            hubspot::upsert_contact("grace@example.com", #{ firstname: "Grace", company: "Navy" });
            let found = hubspot::find_contact("grace@example.com");
            log::info(`${found.id} ${found.properties.email} ${found.properties.firstname} ${found.properties.company}`);
            let picked = hubspot::find_contact("grace@example.com", ["company"]);
            log::info(`${picked.properties.company}`);
            log::info(`${hubspot::find_contact("nobody@example.com") == ()}`);
        });
    "#;
    let t = app(script, &hubspot_config(&fake)).await;
    track(&t, "u1", "Lookup").await;
    let runs = t.wait_run_count(1, 10).await;
    assert_eq!(
        ok_logs(&runs[0]),
        ["512 grace@example.com Grace ", "Navy", "true"]
    );
    let searches: Vec<_> = fake
        .received()
        .into_iter()
        .filter(|r| r.path == "/crm/v3/objects/contacts/search")
        .collect();
    assert_eq!(searches.len(), 3);
    assert!(searches.iter().all(|s| s.method == "POST"));
    assert_eq!(
        searches[0].json,
        Some(json!({
            "filterGroups": [{"filters": [{"propertyName": "email", "operator": "EQ", "value": "grace@example.com"}]}],
            "properties": ["email", "firstname", "lastname"],
            "limit": 1
        }))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubspot_creates_companies_and_deals_with_contact_associations_and_updates_deals() {
    let fake = FakeHttp::start(hubspot_fake()).await;
    let script = r#"
        on_track("Order Completed", |e| {
            let company = hubspot::create_company(#{ name: "Acme", domain: "acme.example" });
            let contact = hubspot::upsert_contact("ada@acme.example", #{ firstname: "Ada" });
            let plain = hubspot::create_deal(#{ dealname: "Acme pilot", pipeline: "default",
                dealstage: "appointmentscheduled", amount: 1000 });
            let linked = hubspot::create_deal(#{ dealname: "Acme renewal", pipeline: "default",
                dealstage: "qualifiedtobuy", amount: 2500.5 }, contact.id);
            let won = hubspot::update_deal(linked.id, #{ dealstage: "closedwon" });
            log::info(`${company.id} ${company.properties.name} ${contact.id} ${plain.id} ${linked.id}`);
            log::info(`${won.id} ${won.properties.dealstage} ${won.properties.dealname}`);
        });
        on_track("Bad Stage", |e| { hubspot::update_deal("999", #{ dealstage: "won" }); });
    "#;
    let t = app(script, &hubspot_config(&fake)).await;
    track(&t, "u1", "Order Completed").await;
    let runs = t.wait_run_count(1, 10).await;
    assert_eq!(
        ok_logs(&runs[0]),
        ["512 Acme 513 514 515", "515 closedwon Acme renewal"]
    );
    let reqs = fake.received();
    assert!(reqs.iter().all(|r| bearer(r) == Some(HUBSPOT_TOKEN)));
    let company = &reqs[0];
    assert_eq!(
        (company.method.as_str(), company.path.as_str()),
        ("POST", "/crm/v3/objects/companies")
    );
    assert_eq!(
        company.json,
        Some(json!({"properties": {"name": "Acme", "domain": "acme.example"}}))
    );
    let deals: Vec<_> = reqs
        .iter()
        .filter(|r| r.path == "/crm/v3/objects/deals")
        .collect();
    assert_eq!(deals.len(), 2);
    assert!(deals.iter().all(|d| d.method == "POST"));
    assert_eq!(deals[0].json.as_ref().unwrap().get("associations"), None);
    assert_eq!(
        deals[1].json,
        Some(json!({
            "properties": {"dealname": "Acme renewal", "pipeline": "default", "dealstage": "qualifiedtobuy", "amount": "2500.5"},
            "associations": [{"to": {"id": "513"},
                "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 3}]}]
        }))
    );
    let update = reqs.last().unwrap();
    assert_eq!(
        (update.method.as_str(), update.path.as_str()),
        ("PATCH", "/crm/v3/objects/deals/515")
    );
    assert_eq!(
        update.json,
        Some(json!({"properties": {"dealstage": "closedwon"}}))
    );

    track(&t, "u1", "Bad Stage").await;
    let runs = t.wait_run_count(2, 10).await;
    let msg = error_of(run_of(&runs, "Bad Stage"), RunStatus::Failed);
    assert_eq!(
        msg,
        "hubspot: VALIDATION_ERROR: Property values were not valid: dealstage \"won\" is not a valid deal stage ID (400)"
    );
}

// ---------------------------------------------------------------------------------
// Salesforce

/// (sobject, its external-ID field)
const EXTERNAL_IDS: &[(&str, &str)] =
    &[("Account", "External_Id__c"), ("Contact", "Segment_Id__c")];
const SF_VERSIONS: &[&str] = &["v59.0", "v60.0", "v61.0", "v62.0"];

#[derive(Default)]
struct Org {
    next_id: u64,
    /// (sobject, id, fields)
    records: Vec<(String, String, Map<String, Value>)>,
    /// Answer updates by upsert with 204 and no body, as API versions ≤45.0 do.
    legacy_updates: bool,
    api_calls: u64,
}

/// Salesforce REST: bearer auth, known API versions, error arrays, `Id` refused in
/// bodies, upsert by external ID (201 / 200 / 204), paged SOQL queries, and
/// `Sforce-Limit-Info` on every response.
fn salesforce_fake(org: Arc<Mutex<Org>>) -> impl Fn(&Recorded) -> Reply + Send + Sync + 'static {
    move |r| {
        let mut org = org.lock();
        org.api_calls += 1;
        let usage = format!("api-usage={}/100000", org.api_calls);
        let reply = |status: u16, body: &Value| {
            Reply::json(status, body).header("sforce-limit-info", &usage)
        };
        let error = |status: u16, code: &str, message: &str| {
            reply(status, &json!([{"message": message, "errorCode": code}]))
        };
        if bearer(r) != Some(SALESFORCE_TOKEN) {
            return error(401, "INVALID_SESSION_ID", "Session expired or invalid");
        }
        let not_found = || error(404, "NOT_FOUND", "The requested resource does not exist");
        let Some(rest) = r.path.strip_prefix("/services/data/") else {
            return not_found();
        };
        let segs: Vec<&str> = rest.split('/').collect();
        if !SF_VERSIONS.contains(&segs[0]) {
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
            ("POST", ["sobjects", sobject]) => {
                if *sobject == "Lead" && !fields.contains_key("LastName") {
                    return reply(
                        400,
                        &json!([{"message": "Required fields are missing: [LastName]",
                            "errorCode": "REQUIRED_FIELD_MISSING", "fields": ["LastName"]}]),
                    );
                }
                org.next_id += 1;
                let id = format!("00Q8a00000{:08}", org.next_id);
                org.records.push(((*sobject).into(), id.clone(), fields));
                reply(201, &json!({"id": id, "success": true, "errors": []}))
            }
            (method @ ("PATCH" | "GET"), ["sobjects", sobject, field, raw]) => {
                if !EXTERNAL_IDS.contains(&(*sobject, *field)) {
                    return not_found();
                }
                let Some(value) = path_segment(raw) else {
                    return not_found();
                };
                let matches: Vec<usize> = (0..org.records.len())
                    .filter(|&i| {
                        let (o, _, f) = &org.records[i];
                        o == sobject
                            && f.get(*field).and_then(Value::as_str) == Some(value.as_str())
                    })
                    .collect();
                if matches.len() > 1 {
                    let urls: Vec<String> = matches
                        .iter()
                        .map(|&i| {
                            format!(
                                "/services/data/{}/sobjects/{sobject}/{}",
                                segs[0], org.records[i].1
                            )
                        })
                        .collect();
                    return reply(300, &json!(urls));
                }
                match (method, matches.first().copied()) {
                    ("GET", None) => not_found(),
                    ("GET", Some(i)) => {
                        let (_, id, _) = &org.records[i];
                        reply(
                            200,
                            &json!({"attributes": {"type": sobject,
                            "url": format!("/services/data/v61.0/sobjects/{sobject}/{id}")}, "Id": id}),
                        )
                    }
                    (_, None) => {
                        org.next_id += 1;
                        let id = format!("0018a00000{:08}", org.next_id);
                        let mut f = fields;
                        f.insert((*field).into(), json!(value));
                        org.records.push(((*sobject).into(), id.clone(), f));
                        reply(
                            201,
                            &json!({"id": id, "success": true, "errors": [], "created": true}),
                        )
                    }
                    (_, Some(i)) => {
                        org.records[i].2.extend(fields);
                        if org.legacy_updates {
                            return empty(204).header("sforce-limit-info", &usage);
                        }
                        let id = org.records[i].1.clone();
                        reply(
                            200,
                            &json!({"id": id, "success": true, "errors": [], "created": false}),
                        )
                    }
                }
            }
            ("GET", ["query"]) => {
                let q = r.query.get("q").cloned().unwrap_or_default();
                if !q.starts_with("SELECT ") {
                    return error(400, "MALFORMED_QUERY", &format!("unexpected token: {q}"));
                }
                reply(
                    200,
                    &json!({"totalSize": 3, "done": false,
                    "nextRecordsUrl": format!("/services/data/{}/query/01gD0000002HU6KIAW-2", segs[0]),
                    "records": [account("0018a0000000001", "A&B Corp"), account("0018a0000000002", "50% Off Ltd")]}),
                )
            }
            ("GET", ["query", "01gD0000002HU6KIAW-2"]) => reply(
                200,
                &json!({"totalSize": 3, "done": true, "records": [account("0018a0000000003", "O'Brien & Sons")]}),
            ),
            _ => not_found(),
        }
    }
}

fn account(id: &str, name: &str) -> Value {
    json!({"attributes": {"type": "Account", "url": format!("/services/data/v61.0/sobjects/Account/{id}")},
        "Id": id, "Name": name})
}

fn salesforce_config(fake: &FakeHttp) -> String {
    connection(
        "salesforce",
        &fake.base_url,
        &format!("bearer = \"{SALESFORCE_TOKEN}\""),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salesforce_upsert_returns_id_and_created_for_201_200_and_204() {
    let org: Arc<Mutex<Org>> = Arc::default();
    let fake = FakeHttp::start(salesforce_fake(Arc::clone(&org))).await;
    let script = r#"
        on_track("Sync", |e| {
            let a = salesforce::upsert("Account", "External_Id__c", "ext/42", #{ Name: "Acme", Type: "New Customer" });
            let b = salesforce::upsert("Account", "External_Id__c", "ext/42", #{ Type: "Customer" });
            log::info(`${a.id} ${a.created} ${b.id} ${b.created}`);
        });
        on_track("Sync Again", |e| {
            let c = salesforce::upsert("Account", "External_Id__c", "ext/42", #{ Rating: "Hot" });
            log::info(`${c.id} ${c.created}`);
        });
    "#;
    let t = app(script, &salesforce_config(&fake)).await;
    track(&t, "u1", "Sync").await;
    let runs = t.wait_run_count(1, 10).await;
    let id = "0018a0000000000001";
    assert_eq!(ok_logs(&runs[0]), [format!("{id} true {id} false")]);
    assert_eq!(run_status_calls(&runs[0]), [Some(201), Some(200)]);

    org.lock().legacy_updates = true;
    track(&t, "u1", "Sync Again").await;
    let runs = t.wait_run_count(2, 10).await;
    let again = run_of(&runs, "Sync Again");
    assert_eq!(ok_logs(again), [format!("{id} false")]);
    assert_eq!(run_status_calls(again), [Some(204), Some(200)]);

    let reqs = fake.received();
    let path = "/services/data/v61.0/sobjects/Account/External_Id__c/ext%2F42";
    assert!(
        reqs.iter()
            .all(|r| r.path == path && bearer(r) == Some(SALESFORCE_TOKEN))
    );
    let methods: Vec<_> = reqs.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(methods, ["PATCH", "PATCH", "PATCH", "GET"]);
    assert_eq!(
        reqs[0].json,
        Some(json!({"Name": "Acme", "Type": "New Customer"}))
    );
    assert_eq!(reqs[3].query.get("fields").map(String::as_str), Some("Id"));
    assert_eq!(org.lock().records[0].2["Rating"], "Hot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salesforce_upsert_fails_on_duplicate_matches_and_unknown_external_id_fields() {
    let org: Arc<Mutex<Org>> = Arc::default();
    for id in ["0038a0000000000001", "0038a0000000000002"] {
        let mut fields = Map::new();
        fields.insert("Segment_Id__c".into(), json!("user-7"));
        org.lock()
            .records
            .push(("Contact".into(), id.into(), fields));
    }
    let fake = FakeHttp::start(salesforce_fake(org)).await;
    let script = r#"
        on_track("Duplicate", |e| { salesforce::upsert("Contact", "Segment_Id__c", "user-7", #{ LastName: "Hopper" }); });
        on_track("Unknown Field", |e| { salesforce::upsert("Contact", "Nope__c", "user-7", #{ LastName: "Hopper" }); });
    "#;
    let t = app(script, &salesforce_config(&fake)).await;
    track(&t, "u1", "Duplicate").await;
    track(&t, "u2", "Unknown Field").await;
    let runs = t.wait_run_count(2, 10).await;
    assert_eq!(
        error_of(run_of(&runs, "Duplicate"), RunStatus::Failed),
        "salesforce: more than one Contact has Segment_Id__c = user-7 (300)"
    );
    assert_eq!(
        error_of(run_of(&runs, "Unknown Field"), RunStatus::Failed),
        "salesforce: NOT_FOUND: The requested resource does not exist (404)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salesforce_create_returns_the_new_id() {
    let fake = FakeHttp::start(salesforce_fake(Arc::default())).await;
    let script = r#"
        on_track("Signed Up", |e| {
            let lead = salesforce::create("Lead", #{ LastName: "Lovelace", Company: "Analytical Engines", Email: "ada@example.com" });
            log::info(lead.id);
        });
        on_track("Bad Lead", |e| { salesforce::create("Lead", #{ Company: "Nobody Inc" }); });
    "#;
    let t = app(script, &salesforce_config(&fake)).await;
    track(&t, "u1", "Signed Up").await;
    track(&t, "u2", "Bad Lead").await;
    let runs = t.wait_run_count(2, 10).await;
    assert_eq!(ok_logs(run_of(&runs, "Signed Up")), ["00Q8a0000000000001"]);
    assert_eq!(
        error_of(run_of(&runs, "Bad Lead"), RunStatus::Failed),
        "salesforce: REQUIRED_FIELD_MISSING: Required fields are missing: [LastName] (400)"
    );
    let reqs = fake.received();
    let create = reqs
        .iter()
        .find(|r| r.json.as_ref().is_some_and(|j| j.get("LastName").is_some()))
        .unwrap();
    assert_eq!(
        (create.method.as_str(), create.path.as_str()),
        ("POST", "/services/data/v61.0/sobjects/Lead")
    );
    assert_eq!(bearer(create), Some(SALESFORCE_TOKEN));
    assert_eq!(
        create.json,
        Some(
            json!({"LastName": "Lovelace", "Company": "Analytical Engines", "Email": "ada@example.com"})
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salesforce_query_follows_next_records_url_until_done() {
    let fake = FakeHttp::start(salesforce_fake(Arc::default())).await;
    let script = r#"
        on_track("Report", |e| {
            let rows = salesforce::query("SELECT Id, Name FROM Account WHERE Name LIKE '%&%' OR Name = 'O''Brien'");
            log::info(`${rows.len()}`);
            for row in rows { log::info(`${row.Id} ${row.Name}`); }
        });
    "#;
    let t = app(script, &salesforce_config(&fake)).await;
    track(&t, "u1", "Report").await;
    let runs = t.wait_run_count(1, 10).await;
    assert_eq!(
        ok_logs(&runs[0]),
        [
            "3",
            "0018a0000000001 A&B Corp",
            "0018a0000000002 50% Off Ltd",
            "0018a0000000003 O'Brien & Sons"
        ]
    );
    let reqs = fake.received();
    assert_eq!(reqs.len(), 2);
    assert!(
        reqs.iter()
            .all(|r| r.method == "GET" && bearer(r) == Some(SALESFORCE_TOKEN))
    );
    assert_eq!(reqs[0].path, "/services/data/v61.0/query");
    // The SOQL arrives whole: `&`, `%`, `'` and spaces were encoded.
    assert_eq!(
        reqs[0].query,
        BTreeMap::from([(
            "q".to_owned(),
            "SELECT Id, Name FROM Account WHERE Name LIKE '%&%' OR Name = 'O''Brien'".to_owned()
        )])
    );
    assert_eq!(
        reqs[1].path,
        "/services/data/v61.0/query/01gD0000002HU6KIAW-2"
    );
    assert!(reqs[1].query.is_empty());
}

// ---------------------------------------------------------------------------------
// Asana

/// Asana: bearer auth, `{"data": …}` wrapping, a workspace (direct or implied by
/// `projects`), gid arrays, `YYYY-MM-DD` dates, `opt_fields`.
fn asana_fake() -> impl Fn(&Recorded) -> Reply + Send + Sync + 'static {
    move |r| {
        let error = |status: u16, message: &str| {
            Reply::json(
                status,
                &json!({"errors": [{"message": message,
                "help": "For more information on API status codes and how to handle them, read the docs on errors: https://developers.asana.com/docs/errors"}]}),
            )
        };
        if bearer(r) != Some(ASANA_TOKEN) {
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
        Reply::json(201, &json!({"data": task}))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asana_create_task_wraps_the_body_in_data_and_returns_the_gid() {
    let fake = FakeHttp::start(asana_fake()).await;
    let script = r#"
        on_track("Trial Started", |e| {
            let task = asana::create_task(#{
                name: "Follow up with Ada", notes: "Trial started", projects: "1200000000000002",
                assignee: "1200000000000003", due_on: "2025-12-31", opt_fields: ["permalink_url", "due_on"],
            });
            log::info(`${task.gid} ${task.permalink_url} ${task.due_on}`);
        });
        on_track("No Workspace", |e| { asana::create_task(#{ name: "Orphan" }); });
    "#;
    let config = connection(
        "asana",
        &format!("{}/api/1.0", fake.base_url),
        &format!("bearer = \"{ASANA_TOKEN}\""),
    );
    let t = app(script, &config).await;
    track(&t, "u1", "Trial Started").await;
    track(&t, "u2", "No Workspace").await;
    let runs = t.wait_run_count(2, 10).await;
    assert_eq!(
        ok_logs(run_of(&runs, "Trial Started")),
        ["1204000000000042 https://app.asana.com/0/1200000000000002/1204000000000042 2025-12-31"]
    );
    assert_eq!(
        error_of(run_of(&runs, "No Workspace"), RunStatus::Failed),
        "asana: workspace: Missing input (400)"
    );
    let req = fake
        .received()
        .into_iter()
        .find(|r| {
            r.json
                .as_ref()
                .is_some_and(|j| j["data"]["name"] == "Follow up with Ada")
        })
        .unwrap();
    assert_eq!(
        (req.method.as_str(), req.path.as_str()),
        ("POST", "/api/1.0/tasks")
    );
    assert_eq!(bearer(&req), Some(ASANA_TOKEN));
    assert_eq!(
        req.query.get("opt_fields").map(String::as_str),
        Some("permalink_url,due_on")
    );
    assert_eq!(
        req.json,
        Some(
            json!({"data": {"name": "Follow up with Ada", "notes": "Trial started",
            "projects": ["1200000000000002"], "assignee": "1200000000000003", "due_on": "2025-12-31"}})
        )
    );
}

// ---------------------------------------------------------------------------------
// Zendesk

#[derive(Default)]
struct Desk {
    tickets: u64,
    /// Idempotency-Key → (request body, response)
    keys: BTreeMap<String, (Value, Value)>,
}

/// Zendesk Support: Basic `{email}/token:{token}` (or Bearer), `{"ticket": …}` with a
/// comment body, priority enum, string tags, and `Idempotency-Key` replays.
fn zendesk_fake() -> impl Fn(&Recorded) -> Reply + Send + Sync + 'static {
    let desk: Arc<Mutex<Desk>> = Arc::default();
    move |r| {
        let authed = basic(r).as_deref() == Some(ZENDESK_BASIC) || bearer(r) == Some("zd-oauth");
        if !authed {
            return Reply::json(401, &json!({"error": "Couldn't authenticate you"}));
        }
        if (r.method.as_str(), r.path.as_str()) != ("POST", "/api/v2/tickets.json") {
            return Reply::json(
                404,
                &json!({"error": "InvalidEndpoint", "description": "Not found"}),
            );
        }
        let invalid = |field: &str, description: &str, code: &str| {
            Reply::json(
                422,
                &json!({"error": "RecordInvalid", "description": "Record validation errors",
                "details": {field: [{"description": description, "error": code}]}}),
            )
        };
        let body = r.json.clone().unwrap_or(Value::Null);
        let ticket = body.get("ticket").cloned().unwrap_or(Value::Null);
        let comment = ticket["comment"]["body"]
            .as_str()
            .or(ticket["description"].as_str());
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zendesk_create_ticket_nests_the_comment_and_returns_the_id() {
    let fake = FakeHttp::start(zendesk_fake()).await;
    let script = r#"
        on_track("Printer Offline", |e| {
            let ticket = zendesk::create_ticket(#{
                subject: "Printer offline", body: "It is offline.",
                requester: #{ name: "Ada", email: "ada@example.com" },
                priority: "high", tags: ["connector"], external_id: "ord-42", group_id: (),
            });
            let note = zendesk::create_ticket(#{ subject: "Note", body: "Internal only", "public": false });
            log::info(`${ticket.id} ${ticket.status} ${ticket.url} ${note.id}`);
        });
        on_track("Bad Priority", |e| { zendesk::create_ticket(#{ subject: "x", body: "y", priority: "asap" }); });
    "#;
    let config = connection(
        "zendesk",
        &format!("{}/api/v2", fake.base_url),
        &format!("basic = \"{ZENDESK_BASIC}\""),
    );
    let t = app(script, &config).await;
    track(&t, "u1", "Printer Offline").await;
    track(&t, "u2", "Bad Priority").await;
    let runs = t.wait_run_count(2, 10).await;
    assert_eq!(
        ok_logs(run_of(&runs, "Printer Offline")),
        ["1 new https://acme.zendesk.com/api/v2/tickets/1.json 2"]
    );
    assert_eq!(
        error_of(run_of(&runs, "Bad Priority"), RunStatus::Failed),
        "zendesk: RecordInvalid: Record validation errors; Priority: is not included in the list (422)"
    );
    let reqs: Vec<_> = fake
        .received()
        .into_iter()
        .filter(|r| {
            r.json
                .as_ref()
                .is_some_and(|j| j["ticket"]["priority"] != "asap")
        })
        .collect();
    assert_eq!(reqs.len(), 2);
    for r in &reqs {
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("POST", "/api/v2/tickets.json")
        );
        assert_eq!(basic(r).as_deref(), Some(ZENDESK_BASIC));
    }
    assert_eq!(
        reqs[0].json,
        Some(
            json!({"ticket": {"subject": "Printer offline", "comment": {"body": "It is offline.", "public": true},
            "requester": {"name": "Ada", "email": "ada@example.com"}, "priority": "high",
            "tags": ["connector"], "external_id": "ord-42"}})
        )
    );
    assert_eq!(
        reqs[1].json,
        Some(
            json!({"ticket": {"subject": "Note", "comment": {"body": "Internal only", "public": false}}})
        )
    );
    // Two different tickets never share an idempotency key (when the host sends one).
    if let (Some(a), Some(b)) = (
        reqs[0].header("idempotency-key"),
        reqs[1].header("idempotency-key"),
    ) {
        assert_ne!(a, b);
    }
}

// ---------------------------------------------------------------------------------
// Jira

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

/// Jira Cloud v3: Basic `email:token`, `{"fields": …}` with project, summary, issue
/// type, and an ADF description.
fn jira_fake() -> impl Fn(&Recorded) -> Reply + Send + Sync + 'static {
    move |r| {
        if basic(r).as_deref() != Some(JIRA_BASIC) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jira_create_issue_sends_an_adf_description_and_returns_the_key() {
    let fake = FakeHttp::start(jira_fake()).await;
    let script = r#"
        on_track("Disk Full", |e| {
            let issue = jira::create_issue(#{
                project: "OPS", summary: "Disk full on db-1", issuetype: "Bug",
                description: "Disk at 99%.\r\nOn db-1.\n\n\nPage the DBA.\n", labels: ["infra"],
                priority: "High", assignee: "5b10ac8d82e05b22cc7d4ef5",
                fields: #{ customfield_10010: "ops-oncall" },
            });
            log::info(`${issue.id} ${issue.key}`);
        });
        on_track("No Summary", |e| { jira::create_issue(#{ project: "OPS" }); });
    "#;
    let config = connection(
        "jira",
        &format!("{}/rest/api/3", fake.base_url),
        &format!("basic = \"{JIRA_BASIC}\""),
    );
    let t = app(script, &config).await;
    track(&t, "u1", "Disk Full").await;
    track(&t, "u2", "No Summary").await;
    let runs = t.wait_run_count(2, 10).await;
    assert_eq!(ok_logs(run_of(&runs, "Disk Full")), ["10000 OPS-24"]);
    assert_eq!(
        error_of(run_of(&runs, "No Summary"), RunStatus::Failed),
        "jira: summary: You must specify a summary of the issue. (400)"
    );
    let req = fake
        .received()
        .into_iter()
        .find(|r| {
            r.json
                .as_ref()
                .is_some_and(|j| j["fields"]["summary"] == "Disk full on db-1")
        })
        .unwrap();
    assert_eq!(
        (req.method.as_str(), req.path.as_str()),
        ("POST", "/rest/api/3/issue")
    );
    assert_eq!(basic(&req).as_deref(), Some(JIRA_BASIC));
    assert_eq!(
        req.json,
        Some(json!({"fields": {
            "project": {"key": "OPS"}, "summary": "Disk full on db-1", "issuetype": {"name": "Bug"},
            "labels": ["infra"], "priority": {"name": "High"},
            "assignee": {"accountId": "5b10ac8d82e05b22cc7d4ef5"}, "customfield_10010": "ops-oncall",
            "description": {"type": "doc", "version": 1, "content": [
                {"type": "paragraph", "content": [
                    {"type": "text", "text": "Disk at 99%."}, {"type": "hardBreak"}, {"type": "text", "text": "On db-1."}]},
                {"type": "paragraph", "content": [{"type": "text", "text": "Page the DBA."}]}
            ]}
        }}))
    );
}

// ---------------------------------------------------------------------------------
// PagerDuty

/// PagerDuty Events v2: no auth header, a 32-character `routing_key` in the body, the
/// event-action enum, trigger payload rules, dedup keys (generated when absent) and
/// the open-alert state they address.
fn pagerduty_fake() -> impl Fn(&Recorded) -> Reply + Send + Sync + 'static {
    let open: Arc<Mutex<Vec<String>>> = Arc::default();
    move |r| {
        let invalid = |errors: &[&str]| {
            Reply::json(
                400,
                &json!({"status": "invalid event", "message": "Event object is invalid", "errors": errors}),
            )
        };
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
            Some("trigger") => {
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
                    errors.push("'payload.severity' is invalid (must be one of critical, error, warning, info)");
                }
                if !errors.is_empty() {
                    return invalid(&errors);
                }
                let key = dedup.unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
                if !open.contains(&key) {
                    open.push(key.clone());
                }
                key
            }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagerduty_trigger_acknowledge_resolve_send_events_without_an_auth_header() {
    let fake = FakeHttp::start(pagerduty_fake()).await;
    let script = format!(
        r#"
        const KEY = "{ROUTING_KEY}";
        on_track("Disk Full", |e| {{
            let a = pagerduty::trigger(#{{ routing_key: KEY, summary: "DISK at 99% on db-1",
                source: "db-1.example.com", severity: "critical", dedup_key: "srv01/mysql",
                custom_details: #{{ "free space": "1%" }} }});
            let b = pagerduty::trigger(#{{ routing_key: KEY, summary: "CPU high", source: "web-1" }});
            let ack = pagerduty::acknowledge(#{{ routing_key: KEY, dedup_key: a.dedup_key }});
            let done = pagerduty::resolve(#{{ routing_key: KEY, dedup_key: a.dedup_key }});
            log::info(`${{a.status}} ${{a.dedup_key}} ${{b.dedup_key.len()}} ${{ack.message}} ${{done.dedup_key}}`);
        }});
        on_track("No Key", |e| {{ pagerduty::resolve("srv01/mysql"); }});
        "#
    );
    let config = connection("pagerduty", &fake.base_url, "");
    let t = app(&script, &config).await;
    track(&t, "u1", "Disk Full").await;
    track(&t, "u2", "No Key").await;
    let runs = t.wait_run_count(2, 10).await;
    assert_eq!(
        ok_logs(run_of(&runs, "Disk Full")),
        ["success srv01/mysql 32 Event processed srv01/mysql"]
    );
    let no_key = run_of(&runs, "No Key");
    assert!(
        error_of(no_key, RunStatus::Failed).starts_with("pagerduty: no routing_key"),
        "{no_key:#?}"
    );
    assert!(no_key.calls.is_empty());

    let reqs = fake.received();
    assert_eq!(reqs.len(), 4);
    for r in &reqs {
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("POST", "/v2/enqueue")
        );
        assert_eq!(r.header("authorization"), None);
        assert_eq!(r.json.as_ref().unwrap()["routing_key"], ROUTING_KEY);
    }
    assert_eq!(
        reqs[0].json,
        Some(
            json!({"routing_key": ROUTING_KEY, "event_action": "trigger", "dedup_key": "srv01/mysql",
            "payload": {"summary": "DISK at 99% on db-1", "source": "db-1.example.com", "severity": "critical",
                "custom_details": {"free space": "1%"}}})
        )
    );
    assert_eq!(
        reqs[1].json.as_ref().unwrap()["payload"]["severity"],
        "error"
    );
    assert_eq!(reqs[1].json.as_ref().unwrap().get("dedup_key"), None);
    assert_eq!(
        reqs[2].json,
        Some(
            json!({"routing_key": ROUTING_KEY, "event_action": "acknowledge", "dedup_key": "srv01/mysql"})
        )
    );
    assert_eq!(
        reqs[3].json,
        Some(
            json!({"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": "srv01/mysql"})
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagerduty_routing_key_falls_back_to_an_allowed_env_secret() {
    let mut fake = FakeHttp::start(pagerduty_fake()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("scripts")).unwrap();
    std::fs::write(
        dir.path().join("scripts/alerts.rhai"),
        r#"on_track("Recovered", |e| { log::info(pagerduty::resolve("srv01/mysql").status); });"#,
    )
    .unwrap();
    let extra = format!(
        "[env]\nallow = [\"PAGERDUTY_ROUTING_KEY\"]\n\n{}",
        connection("pagerduty", &fake.base_url, "")
    );
    std::fs::write(
        dir.path().join("spur.toml"),
        common::base_config(dir.path(), &extra),
    )
    .unwrap();
    let spur =
        common::Daemon::start_with_env(dir.path(), &[("PAGERDUTY_ROUTING_KEY", ROUTING_KEY)]);
    let resp = common::client()
        .post(format!("{}/v1/track", spur.base))
        .json(&json!({"userId": "u1", "event": "Recovered"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let req = fake.next(20).await;
    assert_eq!(
        req.json,
        Some(
            json!({"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": "srv01/mysql"})
        )
    );
    assert_eq!(req.header("authorization"), None);
}

// ---------------------------------------------------------------------------------
// The error convention across services

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_credentials_fail_permanently_with_each_services_own_message() {
    let slack = FakeHttp::start(slack_fake()).await;
    let hubspot = FakeHttp::start(hubspot_fake()).await;
    let salesforce = FakeHttp::start(salesforce_fake(Arc::default())).await;
    let asana = FakeHttp::start(asana_fake()).await;
    let zendesk = FakeHttp::start(zendesk_fake()).await;
    let jira = FakeHttp::start(jira_fake()).await;
    let pagerduty = FakeHttp::start(pagerduty_fake()).await;
    let config = [
        connection("slack", &format!("{}/api", slack.base_url), ""),
        connection("hubspot", &hubspot.base_url, ""),
        connection(
            "salesforce",
            &salesforce.base_url,
            "bearer = \"00Dxx0000001gPL!revoked\"",
        ),
        connection("asana", &format!("{}/api/1.0", asana.base_url), ""),
        // The plain `email:token` form Zendesk refuses (it wants `email/token:token`).
        connection(
            "zendesk",
            &format!("{}/api/v2", zendesk.base_url),
            "basic = \"agent@example.com:zd-api-token\"",
        ),
        connection("jira", &format!("{}/rest/api/3", jira.base_url), ""),
        connection("pagerduty", &pagerduty.base_url, ""),
    ]
    .concat();
    let script = r#"
        on_track("slack", |e| { slack::post("C123", "hi"); });
        on_track("hubspot", |e| { hubspot::create_company(#{ name: "Acme" }); });
        on_track("salesforce", |e| { salesforce::create("Account", #{ Name: "Acme" }); });
        on_track("asana", |e| { asana::create_task(#{ name: "x", workspace: "1" }); });
        on_track("zendesk", |e| { zendesk::create_ticket(#{ subject: "x", body: "y" }); });
        on_track("jira", |e| { jira::create_issue(#{ project: "OPS", summary: "x" }); });
        on_track("pagerduty", |e| { pagerduty::trigger(#{ routing_key: "too-short", summary: "x", source: "y" }); });
    "#;
    let t = app(script, &config).await;
    let expected = [
        ("slack", "slack: not_authed (200)"),
        (
            "hubspot",
            "hubspot: INVALID_AUTHENTICATION: Authentication credentials not found. This API supports OAuth 2.0 authentication. (401)",
        ),
        (
            "salesforce",
            "salesforce: INVALID_SESSION_ID: Session expired or invalid (401)",
        ),
        ("asana", "asana: Not Authorized (401)"),
        ("zendesk", "zendesk: Couldn't authenticate you (401)"),
        (
            "jira",
            "jira: You are not authenticated. Authentication required to perform this operation. (401)",
        ),
        (
            "pagerduty",
            "pagerduty: Event object is invalid: Length of 'routing_key' is incorrect (should be 32 characters) (400)",
        ),
    ];
    for (i, (event, _)) in expected.iter().enumerate() {
        track(&t, &format!("u{i}"), event).await;
    }
    let runs = t.wait_run_count(expected.len(), 10).await;
    for (event, message) in expected {
        let run = run_of(&runs, event);
        assert_eq!(error_of(run, RunStatus::Failed), message);
        assert_eq!(run.calls.len(), 1, "{event}: one call, no retry");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_after_the_hosts_retries_leaves_the_run_retrying() {
    let asana = FakeHttp::start(|_| {
        Reply::json(503, &json!({"errors": [{"message": "Server Error", "phrase": "6 sad squid snuggle softly"}]}))
    })
    .await;
    let salesforce = FakeHttp::start(|_| {
        Reply::json(403, &json!([{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]))
            .header("sforce-limit-info", "api-usage=100000/100000")
    })
    .await;
    let zendesk = FakeHttp::start(|_| {
        Reply::text(429, "Too Many Requests")
            .header("retry-after", "0")
            .header("x-rate-limit-remaining", "0")
    })
    .await;
    let config = [
        connection(
            "asana",
            &format!("{}/api/1.0", asana.base_url),
            &format!("bearer = \"{ASANA_TOKEN}\"\nmax_attempts = 2"),
        ),
        salesforce_config(&salesforce),
        connection(
            "zendesk",
            &format!("{}/api/v2", zendesk.base_url),
            &format!("basic = \"{ZENDESK_BASIC}\"\nmax_attempts = 2"),
        ),
    ]
    .concat();
    let script = r#"
        on_track("asana", |e| { asana::create_task(#{ name: "x", workspace: "1" }); });
        on_track("salesforce", |e| { salesforce::query("SELECT Id FROM Account"); });
        on_track("zendesk", |e| { zendesk::create_ticket(#{ subject: "x", body: "y" }); });
    "#;
    let t = app(script, &config).await;
    for (i, event) in ["asana", "salesforce", "zendesk"].iter().enumerate() {
        track(&t, &format!("u{i}"), event).await;
    }
    let runs = t.wait_run_count(3, 20).await;

    let asana_run = run_of(&runs, "asana");
    assert!(
        error_of(asana_run, RunStatus::Retrying).starts_with("asana: Server Error (503)"),
        "{asana_run:#?}"
    );
    assert_eq!(run_status_calls(asana_run), [Some(503), Some(503)]);
    assert!(asana_run.next_attempt_at.is_some());

    // Salesforce reports an exhausted API limit as a 403: retried later, not dead-lettered.
    let sf_run = run_of(&runs, "salesforce");
    assert!(
        error_of(sf_run, RunStatus::Retrying)
            .starts_with("salesforce: REQUEST_LIMIT_EXCEEDED: TotalRequests Limit exceeded. (403)"),
        "{sf_run:#?}"
    );

    // A plain-text 429 body still yields a readable message.
    let zd_run = run_of(&runs, "zendesk");
    assert!(
        error_of(zd_run, RunStatus::Retrying).starts_with("zendesk: Too Many Requests (429)"),
        "{zd_run:#?}"
    );
    assert_eq!(run_status_calls(zd_run), [Some(429), Some(429)]);
}
