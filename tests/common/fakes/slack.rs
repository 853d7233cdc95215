//! Slack Web API: errors are HTTP 200 `ok:false`; messages are remembered by
//! `(channel, ts)` so chat.update can find them; Block Kit buttons are checked.

use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::{Value, json};
use spur::testing::{Recorded, Reply};

use super::{Connection, bearer, bearer_line, str_of};

/// The bot token the fake accepts.
pub const TOKEN: &str = "xoxb-test";

/// `[connections.slack]` at the fake's `/api`, with [`TOKEN`].
pub fn connection() -> Connection {
    Connection::new("slack", "/api", &bearer_line(TOKEN), fake())
}

struct Msg {
    ts: String,
    text: Value,
    blocks: Value,
}

/// The fake: `chat.postMessage` (channel `C123`, also known as `#sales`) and
/// `chat.update`.
pub fn fake() -> impl Fn(&Recorded) -> Reply + Send + Sync + 'static {
    let messages: Arc<Mutex<Vec<Msg>>> = Arc::default();
    move |r| {
        match bearer(r) {
            None => return fail("not_authed"),
            Some(t) if t != TOKEN => return fail("invalid_auth"),
            Some(_) => {}
        }
        if r.method != "POST" || !is_json(r) {
            return fail("invalid_arguments");
        }
        let Some(body) = r.json.clone().filter(Value::is_object) else {
            return fail("invalid_json");
        };
        let mut messages = messages.lock();
        let answer = match r.path.as_str() {
            "/api/chat.postMessage" => post_message(&mut messages, &body),
            "/api/chat.update" => update(&mut messages, &body),
            _ => Err("unknown_method"),
        };
        let mut answer = match answer {
            Ok(answer) => answer,
            Err(code) => return fail(code),
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

/// Slack's error answer: HTTP 200 with `ok: false`.
fn fail(code: &str) -> Reply {
    Reply::json(200, &json!({"ok": false, "error": code}))
}

fn is_json(r: &Recorded) -> bool {
    r.header("content-type")
        .is_some_and(|c| c.starts_with("application/json"))
}

fn post_message(messages: &mut Vec<Msg>, body: &Value) -> Result<Value, &'static str> {
    let channel = match str_of(body, "channel") {
        Some("C123" | "#sales") => "C123",
        _ => return Err("channel_not_found"),
    };
    let text = body.get("text").cloned().unwrap_or(Value::Null);
    let blocks = body.get("blocks").cloned().unwrap_or_else(|| json!([]));
    let no_text = text.as_str().is_none_or(str::is_empty);
    if no_text && blocks.as_array().is_none_or(Vec::is_empty) {
        return Err("no_text");
    }
    if !valid_blocks(&blocks) {
        return Err("invalid_blocks");
    }
    let ts = format!("1700000000.{:06}", messages.len() + 1);
    let message = json!({"type": "message", "bot_id": "B01", "text": text,
        "blocks": blocks, "ts": ts, "thread_ts": body.get("thread_ts")});
    messages.push(Msg {
        ts: ts.clone(),
        text,
        blocks,
    });
    Ok(json!({"ok": true, "channel": channel, "ts": ts, "message": message}))
}

fn update(messages: &mut [Msg], body: &Value) -> Result<Value, &'static str> {
    // chat.update takes a channel ID, not a name.
    if str_of(body, "channel") != Some("C123") {
        return Err("channel_not_found");
    }
    let ts = str_of(body, "ts").unwrap_or_default();
    let Some(m) = messages.iter_mut().find(|m| m.ts == ts) else {
        return Err("message_not_found");
    };
    if let Some(text) = body.get("text") {
        m.text = text.clone();
    }
    // Omitted blocks stay; `[]` removes them.
    if let Some(blocks) = body.get("blocks") {
        m.blocks = blocks.clone();
    }
    Ok(
        json!({"ok": true, "channel": "C123", "ts": ts, "text": m.text,
        "message": {"type": "message", "text": m.text, "blocks": m.blocks, "ts": ts}}),
    )
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
