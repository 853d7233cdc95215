//! `emit(event)` and `emit_batch(events)`: a source handler (`on_webhook`) puts
//! Segment-shaped events into spur's own pipeline.
//!
//! Each event is validated and normalised exactly like a Tracking-API event. Its
//! `messageId` is the script's, or derived from the run and the emit's journal key,
//! so a re-execution of the run emits the same ids: the journal returns the ids it
//! recorded, and an emit that reached the queue before a crash is caught by dedup.
//! In the daemon the events are handed to the queue (durable, group commit) before
//! `emit` returns; in local runs they are kept in the run context for `spur run` to
//! print and `spur test` to fire.

use std::sync::Arc;

use rhai::{Array, Dynamic, Engine, EvalAltResult, Map, NativeCallContext};
use serde_json::Value;

use super::journal::{self, Reach};
use super::{Host, error, permanent, placed, with_run};
use crate::event::{BatchDefaults, Origin, normalize};
use crate::queue::PreparedEvent;

type Res<T> = Result<T, Box<EvalAltResult>>;

/// Events one `emit_batch` may carry (Segment's batch limit).
const MAX_EMIT: usize = 2500;

pub(super) fn register(engine: &mut Engine, host: &Arc<Host>) {
    let h = Arc::clone(host);
    engine.register_fn("emit", move |ctx: NativeCallContext, event: Map| {
        let ids = emit(&h, "emit", vec![Dynamic::from_map(event)]);
        placed(&ctx, ids.map(|mut ids| ids.remove(0)))
    });
    let h = Arc::clone(host);
    engine.register_fn(
        "emit_batch",
        move |ctx: NativeCallContext, events: Array| placed(&ctx, emit(&h, "emit_batch", events)),
    );
}

/// Emits `events`; returns their messageIds.
fn emit(host: &Host, name: &str, events: Array) -> Res<Vec<Dynamic>> {
    let Some(source) = with_run(|c| c.source.clone()).flatten() else {
        return Err(permanent(format!(
            "{name}() is for source handlers (on_webhook); to send an event to Segment use segment::track(…)"
        )));
    };
    if events.is_empty() || events.len() > MAX_EMIT {
        return Err(permanent(format!(
            "{name}(): between 1 and {MAX_EMIT} events, got {}",
            events.len()
        )));
    }
    let mut bodies = Vec::with_capacity(events.len());
    for (i, e) in events.into_iter().enumerate() {
        match super::convert::to_json(&e) {
            Ok(Value::Object(m)) => bodies.push(m),
            Ok(_) => return Err(permanent(format!("{name}(): event {i} must be a map"))),
            Err(e) => return Err(permanent(format!("{name}(): event {i}: {e}"))),
        }
    }
    let args = Value::Array(bodies.iter().cloned().map(Value::Object).collect());
    let ids = journal::effect(
        "emit",
        &args,
        Reach::Handoff,
        |key| deliver(host, name, &source, key, bodies),
        |_| true,
    )?;
    Ok(ids
        .as_array()
        .map(|a| a.iter().map(super::convert::to_dynamic).collect())
        .unwrap_or_default())
}

/// Normalises the events (deriving missing messageIds from the effect `key`) and
/// hands them to the pipeline.
fn deliver(
    host: &Host,
    name: &str,
    source: &str,
    key: &str,
    bodies: Vec<serde_json::Map<String, Value>>,
) -> Res<Value> {
    let now = host.clock.now();
    let now_ms = now.timestamp_millis();
    let mut prepared = Vec::with_capacity(bodies.len());
    for (i, mut body) in bodies.into_iter().enumerate() {
        if !body.contains_key("messageId") {
            let id = journal::idempotency_key(&format!("{key}#{i}"));
            body.insert("messageId".into(), Value::String(format!("{id}-emit")));
        }
        let event = normalize(body, None, &BatchDefaults::default(), Origin::Tracking, now)
            .map_err(|e| {
                permanent(format!(
                    "{name}(): event {i} from source {source}: {e} (field `{}`)",
                    e.field()
                ))
            })?;
        prepared.push(PreparedEvent::new(event, now_ms));
    }
    let ids: Vec<Value> = prepared
        .iter()
        .map(|p| Value::String(p.event.message_id.clone()))
        .collect();
    with_run(|c| {
        c.emitted
            .extend(prepared.iter().map(|p| p.event.body.clone()));
    });
    if let Some(queue) = host.events.get() {
        host.rt
            .block_on(queue.ingest(prepared))
            .map_err(|e| error(format!("{name}(): the events could not be stored: {e}")))?;
    }
    Ok(Value::Array(ids))
}
