//! Waits as plain code: `approval::ask(#{…})`, `time::sleep(duration)` and
//! `wait_for(#{…}, timeout)`, plus the approval gate of connection calls
//! (`require_approval`).
//!
//! Each is an effect of the run's journal. The first time, the run parks: the
//! handler is unwound, the job is stored with what it waits for and no thread is
//! held. When the decision, the timer or the matching event arrives, its result is
//! journaled and the run executes again from the top; this time the call returns
//! the journaled result at once (and every earlier effect returns its own).

use std::sync::Arc;
use std::time::Duration;

use rhai::{Dynamic, Engine, EvalAltResult, Map, Module, NativeCallContext};
use serde_json::{Value, json};

use super::convert::{to_dynamic, to_json, to_text};
use super::ctx::{WaitMode, with_run};
use super::journal;
use super::{Host, error, permanent, placed};
use crate::approval::{Approval, Status, slack};
use crate::event::format_time;
use crate::queue::{Wait, WaitKind};

type Res<T> = Result<T, Box<EvalAltResult>>;

/// Longest wait accepted (sleeps, `wait_for`, approval expiry).
const MAX_WAIT: Duration = Duration::from_secs(366 * 86_400);

/// An approval request as a script or a connection gate describes it.
pub(crate) struct Ask {
    pub title: String,
    pub body: Option<String>,
    pub data: Value,
    pub approvers: Vec<String>,
    pub channel: Option<String>,
    pub expires: Duration,
    pub approve_on_expiry: bool,
    pub kind: &'static str,
    /// Who is emailed (`None`: `[approvals.email] to`).
    pub email: Option<Vec<String>>,
}

fn echo(line: &str) {
    if with_run(|c| c.echo) == Some(true) {
        println!("  {line}");
    }
}

fn park(
    now: chrono::DateTime<chrono::Utc>,
    key: String,
    kind: WaitKind,
    wake_after: Option<Duration>,
) -> Box<EvalAltResult> {
    let what = match &kind {
        WaitKind::Approval { title, .. } => format!("waiting for approval: {title}"),
        WaitKind::Sleep => "sleeping".to_owned(),
        WaitKind::Event { .. } => "waiting for a matching event".to_owned(),
    };
    with_run(|ctx| {
        ctx.park = Some(Wait {
            key,
            kind,
            wake_at_ms: wake_after.map(|d| {
                now.timestamp_millis()
                    .saturating_add(crate::duration::as_ms(d))
            }),
            since_ms: now.timestamp_millis(),
            run_id: ctx.run_id,
        });
    });
    error(what)
}

/// Asks for a decision (journaled under `op` + `key_args`); returns it, or parks.
#[allow(
    clippy::too_many_lines,
    reason = "the ask protocol in its order: journal, mode, store, notify, park"
)]
pub(crate) fn ask(host: &Host, ask: Ask, key_args: &Value) -> Res<Value> {
    let key = journal::next_key("approval", key_args);
    if let Some(d) = journal::recorded(&key)? {
        echo(&format!(
            "approval {}: {} by {}",
            ask.title, d["status"], d["by"]
        ));
        with_run(|c| c.decisions.push(d.clone()));
        return Ok(d);
    }
    let Some((mode, job_id, script, handler, auto)) = with_run(|c| {
        (
            c.wait_mode,
            c.run_key.clone(),
            c.script.clone(),
            c.handler.clone(),
            c.auto_decision.clone(),
        )
    }) else {
        return Err(error("approval::ask is only allowed inside a handler"));
    };
    if mode != WaitMode::Durable {
        let mut d = auto.unwrap_or_else(
            || json!({ "approved": true, "status": "approved", "by": "dry-run", "comment": null }),
        );
        d["data"] = ask.data;
        echo(&format!(
            "approval requested: {} (answered {} by {} in a dry run)",
            ask.title, d["status"], d["by"]
        ));
        journal::record(&key, &d);
        with_run(|c| c.decisions.push(d.clone()));
        return Ok(d);
    }
    let now = host.clock.now();
    let expires_ms = now
        .timestamp_millis()
        .saturating_add(crate::duration::as_ms(ask.expires));
    let id = format!(
        "apr_{job_id}_{}",
        journal::digest(&Value::String(key.clone()))
    );
    let request = Approval {
        id: id.clone(),
        job_id: job_id.parse().unwrap_or(0),
        key: key.clone(),
        script,
        handler,
        kind: ask.kind.into(),
        title: ask.title.clone(),
        body: ask.body,
        data: ask.data,
        approvers: ask.approvers,
        channel: ask.channel,
        status: Status::Pending,
        approve_on_expiry: ask.approve_on_expiry,
        created_at: format_time(now),
        expires_at: chrono::DateTime::from_timestamp_millis(expires_ms).map(format_time),
        expires_ms: Some(expires_ms),
        decided_by: None,
        decided_at: None,
        comment: None,
        slack: None,
        email: ask.email.unwrap_or_else(|| {
            host.mailer
                .as_ref()
                .map(|m| m.default_to.clone())
                .unwrap_or_default()
        }),
    };
    let (stored, created) = host
        .approvals
        .create_if_absent(&request)
        .map_err(|e| error(format!("approval::ask: {e}")))?;
    if stored.status != Status::Pending {
        // Decided while this run was between executions: take the decision.
        let d = stored.decision();
        journal::record(&key, &d);
        with_run(|c| c.decisions.push(d.clone()));
        return Ok(d);
    }
    if created {
        journal::wrote_outside();
    }
    if created && stored.channel.is_some() {
        let cfg = &host.approvals_cfg;
        let sent = super::outbound(
            host,
            slack::notify(&host.slack, &stored, cfg.public_url.as_deref()),
        )?;
        match sent {
            Ok(msg) => {
                if let Err(e) = host.approvals.set_slack(&id, msg) {
                    tracing::warn!(approval = %id, error = %e, "Remembering the Slack message failed.");
                }
            }
            Err(e) => super::log::emit(
                crate::run::LogLevel::Warn,
                &format!("approval {id}: posting to Slack failed: {e}"),
            ),
        }
    }
    notify(host, &stored)?;
    let title = stored.title.clone();
    Err(park(
        now,
        key,
        WaitKind::Approval {
            approval_id: id,
            title,
        },
        Some(ask.expires),
    ))
}

/// The channels besides Slack, each once per request (journaled effects of the
/// asking run): the email to each recipient with links signed for them, and the
/// `on_approval` handlers, handed their runs.
fn notify(host: &Host, a: &Approval) -> Res<()> {
    let Some(links) = host.links.get() else {
        return Ok(()); // a local run: nothing leaves
    };
    let now_ms = host.clock.now_ms();
    let to = &a.email;
    if !to.is_empty() {
        let Some(mailer) = &host.mailer else {
            return Err(super::permanent(format!(
                "approval::ask: `email` names {} but [approvals.email] is not configured",
                to.join(", ")
            )));
        };
        let sent = journal::effect(
            "approval.email",
            &json!({ "id": a.id, "to": to }),
            journal::Reach::Outbound,
            |_| {
                super::outbound(host, async {
                    let mut failed = Vec::new();
                    for who in to {
                        let (yes, no) = links.pair(a, who, now_ms);
                        if let Err(e) = mailer.send(who, a, &yes, &no).await {
                            failed.push(json!({ "to": who, "error": e }));
                        }
                    }
                    json!({ "to": to, "failed": failed })
                })
            },
            |_| true,
        )?;
        for f in sent["failed"].as_array().into_iter().flatten() {
            super::log::emit(
                crate::run::LogLevel::Warn,
                &format!(
                    "approval {}: emailing {} failed: {}",
                    a.id,
                    to_text_json(&f["to"]),
                    to_text_json(&f["error"])
                ),
            );
        }
    }
    let targets = host.approval_handlers();
    if !targets.is_empty() {
        journal::effect(
            "approval.notify",
            &json!({ "id": a.id }),
            journal::Reach::Handoff,
            |_| {
                let jobs = targets
                    .iter()
                    .map(|(script, handler)| {
                        let request = crate::approval::channel::request(a, links, script, now_ms);
                        crate::queue::Job::new(
                            crate::queue::Trigger::Approval {
                                approval_id: a.id.clone(),
                                request,
                            },
                            script.clone(),
                            handler.clone(),
                            None,
                            now_ms,
                        )
                    })
                    .collect();
                let queue = host
                    .events
                    .get()
                    .ok_or_else(|| error("approval::ask: no queue for on_approval runs"))?;
                let ids = host
                    .rt
                    .block_on(queue.enqueue(jobs))
                    .map_err(|e| error(format!("approval::ask: on_approval runs: {e}")))?;
                Ok(json!(ids))
            },
            |_| true,
        )?;
    }
    Ok(())
}

/// `approval::links(id, who)`: approve and reject links of request `id` signed
/// for `who` (who must be one of its approvers, when it names any).
fn personal_links(host: &Host, id: &str, who: &str) -> Res<Dynamic> {
    let Some(links) = host.links.get() else {
        return Err(super::permanent(
            "approval::links: decision links exist only in the daemon",
        ));
    };
    let a = host
        .approvals
        .get(id)
        .map_err(|e| error(format!("approval::links: {e}")))?
        .ok_or_else(|| super::permanent(format!("approval::links: no approval request {id:?}")))?;
    if !a.allows(who) {
        return Err(super::permanent(format!(
            "approval::links: {who:?} is not one of the approvers of {id} ({})",
            a.approvers.join(", ")
        )));
    }
    let (approve, reject) = links.pair(&a, who.trim(), host.clock.now_ms());
    Ok(to_dynamic(&json!({ "approve": approve, "reject": reject })))
}

fn to_text_json(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

/// Holds a connection call until someone approves it; a rejection fails the run.
pub(crate) fn require_for_call(
    host: &Host,
    connection: &str,
    method: &str,
    path: &str,
    pattern: &str,
    body: Value,
) -> Res<()> {
    let shown = serde_json::to_string_pretty(&body).unwrap_or_default();
    let shown: String = if shown.chars().count() > 1500 {
        format!("{}…", shown.chars().take(1500).collect::<String>())
    } else {
        shown
    };
    let data = json!({ "connection": connection, "method": method, "path": path, "body": body, "pattern": pattern });
    let d = ask(
        host,
        Ask {
            title: format!("{method} {path} on {connection}"),
            body: (body != Value::Null).then(|| format!("```{shown}```")),
            data: data.clone(),
            approvers: Vec::new(),
            channel: host.approvals_cfg.channel.clone(),
            expires: host.approvals_cfg.default_expires,
            approve_on_expiry: false,
            kind: "connection",
            email: None,
        },
        &data,
    )?;
    if d["approved"] == Value::Bool(true) {
        return Ok(());
    }
    let by = d["by"]
        .as_str()
        .map_or_else(|| d["status"].to_string(), |b| format!("rejected by {b}"));
    let comment = d["comment"]
        .as_str()
        .map(|c| format!(": {c}"))
        .unwrap_or_default();
    let msg =
        format!("{method} {path} on connection {connection} was not approved ({by}{comment})");
    Err(super::permanent(msg))
}

fn duration_of(what: &str, v: &Dynamic) -> Res<Duration> {
    let d = super::convert::to_duration(v).map_err(|e| permanent(format!("{what}: {e}")))?;
    if d > MAX_WAIT {
        return Err(permanent(format!(
            "{what}: {} is longer than a year",
            crate::duration::format(d)
        )));
    }
    Ok(d)
}

/// `time::sleep(duration)`.
pub(crate) fn sleep(host: &Host, v: &Dynamic) -> Res<()> {
    let d = duration_of("time::sleep", v)?;
    if !super::in_run() {
        return Err(error("time::sleep is only allowed inside a handler"));
    }
    let key = journal::next_key("sleep", &json!(crate::duration::as_ms(d)));
    if journal::recorded(&key)?.is_some() || d.is_zero() {
        return Ok(());
    }
    if with_run(|c| c.wait_mode) == Some(WaitMode::Immediate) {
        echo(&format!(
            "(sleep {} skipped in a dry run)",
            crate::duration::format(d)
        ));
        return Ok(());
    }
    Err(park(host.clock.now(), key, WaitKind::Sleep, Some(d)))
}

/// `wait_for(#{…}, timeout)`: the first event received after the call that
/// matches every key of the filter (dotted keys reach inside), or `()`.
fn wait_for(host: &Host, filter: &Map, timeout: &Dynamic) -> Res<Dynamic> {
    let d = duration_of("wait_for", timeout)?;
    let Value::Object(filter) = to_json(&Dynamic::from_map(filter.clone()))
        .map_err(|e| permanent(format!("wait_for: {e}")))?
    else {
        unreachable!("a map converts to a JSON object");
    };
    if filter.is_empty() {
        return Err(permanent(
            "wait_for: the filter must name at least one field, e.g. #{ event: \"Project Created\", userId: e.userId }",
        ));
    }
    if !super::in_run() {
        return Err(error("wait_for is only allowed inside a handler"));
    }
    let key = journal::next_key(
        "wait_for",
        &json!({ "filter": filter, "timeout_ms": crate::duration::as_ms(d) }),
    );
    if let Some(v) = journal::recorded(&key)? {
        return Ok(to_dynamic(&v));
    }
    if with_run(|c| c.wait_mode) == Some(WaitMode::Immediate) {
        echo(&format!(
            "(wait_for {} answered with () in a dry run)",
            Value::Object(filter)
        ));
        return Ok(Dynamic::UNIT);
    }
    Err(park(
        host.clock.now(),
        key,
        WaitKind::Event {
            filter,
            since_seq: 0,
        },
        Some(d),
    ))
}

fn parse_ask(host: &Host, spec: &Map) -> Res<Ask> {
    const KEYS: &[&str] = &[
        "title",
        "body",
        "data",
        "approvers",
        "channel",
        "expires",
        "on_expiry",
        "email",
    ];
    for k in spec.keys() {
        if !KEYS.contains(&k.as_str()) {
            return Err(permanent(format!(
                "approval::ask: unknown option `{k}` (known: {})",
                KEYS.join(", ")
            )));
        }
    }
    let title = spec
        .get("title")
        .map(to_text)
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| permanent("approval::ask: `title` is required"))?;
    let approvers = match spec.get("approvers") {
        None => Vec::new(),
        Some(v) if v.is_array() => v
            .clone()
            .cast::<rhai::Array>()
            .iter()
            .map(to_text)
            .collect(),
        Some(v) if v.is_string() => vec![to_text(v)],
        Some(_) => {
            return Err(permanent(
                "approval::ask: `approvers` must be an array of names or emails",
            ));
        }
    };
    let approve_on_expiry = match spec.get("on_expiry").map(to_text).as_deref() {
        None | Some("reject") => false,
        Some("approve") => true,
        Some(other) => {
            return Err(permanent(format!(
                "approval::ask: `on_expiry` must be \"reject\" or \"approve\", got {other:?}"
            )));
        }
    };
    Ok(Ask {
        title,
        body: spec.get("body").map(to_text),
        data: spec
            .get("data")
            .map(to_json)
            .transpose()
            .map_err(|e| permanent(format!("approval::ask: data: {e}")))?
            .unwrap_or(Value::Null),
        approvers,
        channel: spec.get("channel").map(to_text),
        expires: match spec.get("expires") {
            Some(v) => duration_of("approval::ask: expires", v)?,
            None => host.approvals_cfg.default_expires,
        },
        approve_on_expiry,
        kind: "ask",
        email: spec.get("email").map(email_list).transpose()?,
    })
}

/// `email`: an address or an array of them, each checked.
fn email_list(v: &Dynamic) -> Res<Vec<String>> {
    let list: Vec<String> = if v.is_array() {
        v.clone()
            .cast::<rhai::Array>()
            .iter()
            .map(to_text)
            .collect()
    } else if v.is_string() {
        vec![to_text(v)]
    } else {
        return Err(permanent(
            "approval::ask: `email` must be an address or an array of addresses",
        ));
    };
    for a in &list {
        if a.parse::<lettre::Address>().is_err() {
            return Err(permanent(format!(
                "approval::ask: `email`: {a:?} is not an email address"
            )));
        }
    }
    Ok(list)
}

pub(super) fn register(engine: &mut Engine, host: &Arc<Host>) {
    let mut m = Module::new();
    let h = Arc::clone(host);
    m.set_native_fn("ask", move |ctx: NativeCallContext, spec: Map| {
        let args = to_json(&Dynamic::from_map(spec.clone()))
            .map_err(|e| error(format!("approval::ask: {e}")));
        let result = placed(&ctx, args).and_then(|args| {
            let a = placed(&ctx, parse_ask(&h, &spec))?;
            placed(&ctx, ask(&h, a, &args))
        })?;
        Ok(to_dynamic(&result).try_cast::<Map>().unwrap_or_default())
    });
    let h = Arc::clone(host);
    m.set_native_fn(
        "links",
        move |ctx: NativeCallContext, id: &str, who: &str| {
            placed(&ctx, personal_links(&h, id, who))
        },
    );
    engine.register_static_module("approval", m.into());
    let h = Arc::clone(host);
    engine.register_fn(
        "wait_for",
        move |ctx: NativeCallContext, filter: Map, timeout: Dynamic| {
            placed(&ctx, wait_for(&h, &filter, &timeout))
        },
    );
    let h = Arc::clone(host);
    engine.register_fn("wait_for", move |ctx: NativeCallContext, filter: Map| {
        placed(&ctx, wait_for(&h, &filter, &Dynamic::from("30d")))
    });
}
