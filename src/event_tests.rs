//! Tests for event validation and normalisation.

use super::*;
use serde_json::json;

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn now() -> DateTime<Utc> {
    parse_time("2025-03-25T17:02:20.000Z").unwrap()
}

#[test]
fn stamps_times_with_clock_skew_correction() {
    let e = normalize(
        obj(
            json!({"userId": "u1", "event": "A", "timestamp": "2025-03-25T17:02:11.482+00:00",
                   "sentAt": "2025-03-25T17:02:12.482+00:00"}),
        ),
        Some(EventType::Track),
        &BatchDefaults::default(),
        Origin::Tracking,
        now(),
    )
    .unwrap();
    assert_eq!(e.body["receivedAt"], "2025-03-25T17:02:20.000Z");
    assert_eq!(e.body["timestamp"], "2025-03-25T17:02:19.000Z");
    assert_eq!(e.body["originalTimestamp"], "2025-03-25T17:02:11.482+00:00");
    assert!(e.message_id.starts_with("spur-"));
}

#[test]
fn missing_timestamp_becomes_received_at() {
    let e = normalize(
        obj(json!({"anonymousId": "a"})),
        Some(EventType::Page),
        &BatchDefaults::default(),
        Origin::Tracking,
        now(),
    )
    .unwrap();
    assert_eq!(e.body["timestamp"], e.body["receivedAt"]);
    assert_eq!(e.body["type"], "page");
}

#[test]
fn batch_defaults_merge_and_item_wins() {
    let ctx = obj(json!({"locale": "en-US", "ip": "1.2.3.4"}));
    let defaults = BatchDefaults {
        context: Some(&ctx),
        ..BatchDefaults::default()
    };
    let e = normalize(
        obj(json!({"type": "identify", "userId": "u", "context": {"locale": "en-GB"}})),
        None,
        &defaults,
        Origin::Tracking,
        now(),
    )
    .unwrap();
    assert_eq!(
        e.body["context"],
        json!({"locale": "en-GB", "ip": "1.2.3.4"})
    );
}

#[test]
fn required_fields_are_named() {
    let cases = [
        (json!({"type": "identify"}), "userId"),
        (json!({"type": "track", "userId": "u"}), "event"),
        (json!({"type": "group", "userId": "u"}), "groupId"),
        (json!({"type": "alias", "userId": "u"}), "previousId"),
        (json!({"userId": "u"}), "type"),
        (json!({"type": "launch", "userId": "u"}), "type"),
        (
            json!({"type": "track", "event": "A", "userId": {"id": 1}}),
            "userId",
        ),
        (
            json!({"type": "track", "event": "A", "userId": "u", "messageId": "x".repeat(128)}),
            "messageId",
        ),
        (
            json!({"type": "track", "event": "A", "userId": "u", "properties": [1]}),
            "properties",
        ),
        (
            json!({"type": "track", "event": "A", "userId": "u", "timestamp": "yesterday"}),
            "timestamp",
        ),
    ];
    for (body, field) in cases {
        let err = normalize(
            obj(body.clone()),
            None,
            &BatchDefaults::default(),
            Origin::Tracking,
            now(),
        )
        .unwrap_err();
        assert_eq!(err.field(), field, "{body}: {err}");
    }
}

#[test]
fn numeric_ids_become_strings() {
    let e = normalize(
        obj(json!({"type": "identify", "userId": 90210})),
        None,
        &BatchDefaults::default(),
        Origin::Tracking,
        now(),
    )
    .unwrap();
    assert_eq!(e.body["userId"], "90210");
    assert_eq!(e.user_key(), Some("90210"));
}

#[test]
fn lenient_times() {
    assert!(parse_time("2015-2-02T00:30:08.276Z").is_some());
    assert!(parse_time("2025-03-25T17:02:11.482123+00:00").is_some());
    assert!(parse_time("2025-03-21T06:15:02.384119602Z").is_some());
    assert!(parse_time("2025-03-21 06:15:02").is_some());
    assert!(parse_time("2025-03-21").is_some());
    assert!(parse_time("soon").is_none());
    assert!(parse_time("2025-01-01Té").is_none());
    assert!(parse_time("2025-01-01T\u{e9}12:00").is_none());
}

#[test]
fn far_apart_timestamp_and_sent_at_are_refused_not_overflowed() {
    let err = normalize(
        obj(
            json!({"userId": "u", "event": "A", "timestamp": "+262142-01-01",
                   "sentAt": "0000-01-01"}),
        ),
        Some(EventType::Track),
        &BatchDefaults::default(),
        Origin::Tracking,
        now(),
    )
    .unwrap_err();
    assert_eq!(err.field(), "sentAt");
}

#[test]
fn quoted_values_are_cut_at_a_character_boundary() {
    let long = "é".repeat(100);
    let q = quote(&long);
    assert!(q.ends_with('…') && q.chars().count() < 50, "{q}");
    assert_eq!(quote("ok"), "\"ok\"");
}

#[test]
fn delivered_events_keep_segment_times() {
    let e = normalize(
        obj(json!({"type": "delete", "userId": "u", "timestamp": "2025-01-01T00:00:00.000Z"})),
        None,
        &BatchDefaults::default(),
        Origin::Delivered,
        now(),
    )
    .unwrap();
    assert_eq!(e.body["timestamp"], "2025-01-01T00:00:00.000Z");
    assert_eq!(e.kind, EventType::Delete);
}
