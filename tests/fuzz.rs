//! Property-based fuzzing on stable Rust (proptest) of everything that takes input
//! from outside: ingest bodies (raw bytes, gzip, and JSON shaped like Segment events
//! with hostile values in every field), webhook bodies with their signatures, Slack
//! interaction bodies, config files, duration strings, cron expressions and
//! `Retry-After` values.
//!
//! The invariant everywhere: no panic; through the router, every answer is a 200 or
//! a 4xx whose JSON body names the problem (`code`, `message`), and every answer is
//! under 64 KB.
//!
//! Each target runs a bounded number of cases in the normal test command;
//! `SPUR_FUZZ_CASES=N` sets the number per target (`scripts/fuzz` runs them long).
//! Run with: cargo nextest run --test fuzz

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::OnceLock;

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use hmac::Mac as _;
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};
use serde_json::{Map, Value, json};
use spur::event::BatchDefaults;
use tower::ServiceExt as _;

const WEBHOOK_SECRET: &str = "fuzz-secret";
const WEBHOOK_TOKEN: &str = "fuzz-token";
const SLACK_SECRET: &str = "fuzz-slack";

/// Cases per target: `SPUR_FUZZ_CASES`, or `default`.
fn config(default: u32) -> Config {
    let cases = std::env::var("SPUR_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        max_shrink_iters: 2048,
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------------
// Hostile values

/// Text chosen to break parsers: multibyte characters at every position, numbers
/// that do not fit, dates at the edges of the calendar, control characters, long runs.
fn hostile_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        any::<String>(),
        "[a-zé€😀\u{0}\u{202e} :T+\\-.0-9Z]{0,40}",
        Just("2025-01-01Té".to_owned()),
        Just("+262142-01-01".to_owned()),
        Just("0000-01-01".to_owned()),
        Just("-262143-01-01T00:00:00Z".to_owned()),
        Just("2025-13-45T99:99:99Z".to_owned()),
        Just("1e30".to_owned()),
        Just("inf".to_owned()),
        Just("NaN".to_owned()),
        Just("-9223372036854775808".to_owned()),
        Just("99999999999999999999d".to_owned()),
        (1usize..40_000).prop_map(|n| "é".repeat(n)),
        (1usize..2_000).prop_map(|n| "ab".repeat(n)),
    ]
}

fn hostile_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(Value::from),
        Just(json!(1e308)),
        Just(json!(-0.0)),
        Just(json!(9_007_199_254_740_993_u64)),
    ]
}

fn hostile_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        hostile_number(),
        hostile_text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::btree_map(hostile_text(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A Segment-shaped message: the real field names, each plausible or hostile.
fn segment_event() -> impl Strategy<Value = Map<String, Value>> {
    let kind = prop_oneof![
        Just(json!("track")),
        Just(json!("identify")),
        Just(json!("page")),
        Just(json!("screen")),
        Just(json!("group")),
        Just(json!("alias")),
        Just(json!("delete")),
        hostile_value(),
    ];
    let id = prop_oneof![Just(json!("user-1")), Just(json!(90210)), hostile_value()];
    let time = prop_oneof![
        Just(json!("2025-03-25T17:02:11.482Z")),
        Just(json!("2015-2-02T00:30:08.276Z")),
        hostile_value(),
    ];
    let fields = (
        kind,
        id.clone(),
        id.clone(),
        prop_oneof![Just(json!("Order Completed")), hostile_value()],
        prop_oneof![Just(json!("m-1")), hostile_value()],
        time.clone(),
        time,
        prop_oneof![Just(json!({"total": 740})), hostile_value()],
        prop_oneof![Just(json!({"plan": "pro"})), hostile_value()],
        prop_oneof![Just(json!({"library": {"name": "fuzz"}})), hostile_value()],
        id.clone(),
        id,
    );
    let present = proptest::collection::vec(any::<bool>(), 12);
    (fields, present, hostile_value()).prop_map(|(f, present, extra)| {
        let names = [
            "type",
            "userId",
            "anonymousId",
            "event",
            "messageId",
            "timestamp",
            "sentAt",
            "properties",
            "traits",
            "context",
            "groupId",
            "previousId",
        ];
        let values = [f.0, f.1, f.2, f.3, f.4, f.5, f.6, f.7, f.8, f.9, f.10, f.11];
        let mut m: Map<String, Value> = names
            .iter()
            .zip(values)
            .zip(present)
            .filter(|(_, p)| *p)
            .map(|((k, v), _)| ((*k).to_owned(), v))
            .collect();
        m.insert("extra".into(), extra);
        m
    })
}

// ---------------------------------------------------------------------------------
// The router, in process

/// One daemon for every router target of this test process (nextest runs each test
/// in its own process).
fn router() -> &'static (tokio::runtime::Runtime, Router, tempfile::TempDir) {
    static APP: OnceLock<(tokio::runtime::Runtime, Router, tempfile::TempDir)> = OnceLock::new();
    APP.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("scripts")).unwrap();
        let text = common::base_config(
            dir.path(),
            &format!(
                "[segment]\nwebhook_secret = \"{WEBHOOK_SECRET}\"\nwebhook_token = \"{WEBHOOK_TOKEN}\"\n\n[approvals]\nslack_signing_secret = \"{SLACK_SECRET}\"\n"
            ),
        );
        let cfg = spur::config::load_from_str(&text, None, &BTreeMap::new()).unwrap();
        let router = rt.block_on(async {
            let app = spur::app::App::open(cfg).await.unwrap();
            app.router()
        });
        (rt, router, dir)
    })
}

/// Sends one request through the router and checks the invariant; the status.
fn check(req: Request<Body>) -> Result<u16, TestCaseError> {
    let (rt, router, _) = router();
    let (status, body) = rt.block_on(async {
        let resp = router.clone().oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await;
        (status, body)
    });
    let body = body.map_err(|e| TestCaseError::fail(format!("answer over 1 MB: {e}")))?;
    prop_assert!(body.len() < 64 * 1024, "answer of {} bytes", body.len());
    prop_assert!(
        status == 200 || (400..500).contains(&status),
        "status {status}: {}",
        String::from_utf8_lossy(&body)
    );
    if status != 200 {
        let v: Value = serde_json::from_slice(&body)
            .map_err(|_| TestCaseError::fail(format!("{status} without a JSON body")))?;
        prop_assert!(
            v["code"].as_str().is_some_and(|c| !c.is_empty())
                && v["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{status} does not name the problem: {v}"
        );
    }
    Ok(status)
}

fn post(path: &str, headers: &[(&'static str, String)], body: Vec<u8>) -> Request<Body> {
    let mut req = Request::post(path).body(Body::from(body)).unwrap();
    for (k, v) in headers {
        // A value no client could send (a control character) is left out.
        if let Ok(v) = axum::http::HeaderValue::from_str(v) {
            req.headers_mut().insert(*k, v);
        }
    }
    req
}

fn ingest_path() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("/v1/track"),
        Just("/v1/identify"),
        Just("/v1/page"),
        Just("/v1/g"),
        Just("/v1/alias"),
        Just("/v1/batch"),
        Just("/v1/import"),
        Just("/webhooks/segment"),
    ]
}

fn hmac_sha1(key: &str, bytes: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(bytes);
    hex::encode(mac.finalize().into_bytes())
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

// ---------------------------------------------------------------------------------
// Targets

proptest! {
    #![proptest_config(config(300))]
    #[test]
    fn ingest_raw_bytes(path in ingest_path(), body in proptest::collection::vec(any::<u8>(), 0..2048)) {
        check(post(path, &[], body))?;
    }
}

proptest! {
    #![proptest_config(config(300))]
    #[test]
    fn ingest_segment_shaped_events(path in ingest_path(), event in segment_event(), batch in proptest::collection::vec(segment_event(), 0..6), write_key in hostile_value()) {
        let body = if path.contains("batch") || path.contains("import") {
            json!({"batch": batch, "writeKey": write_key, "context": event.get("context"), "sentAt": event.get("sentAt")})
        } else if path.contains("webhooks") {
            Value::Array(batch.into_iter().map(Value::Object).collect())
        } else {
            Value::Object(event)
        };
        let bytes = serde_json::to_vec(&body).unwrap();
        let sig = hmac_sha1(WEBHOOK_SECRET, &bytes);
        check(post(path, &[("x-segment-signature", sig)], bytes))?;
    }
}

proptest! {
    #![proptest_config(config(200))]
    #[test]
    fn ingest_gzip_bodies(path in ingest_path(), event in segment_event(), cut in any::<prop::sample::Index>(), truncate in any::<bool>(), junk in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut bytes = gzip(&serde_json::to_vec(&Value::Object(event)).unwrap());
        if truncate {
            bytes.truncate(cut.index(bytes.len()));
        }
        bytes.extend_from_slice(&junk);
        let headers = [("content-encoding", "gzip".to_owned()), ("authorization", format!("Bearer {WEBHOOK_TOKEN}"))];
        check(post(path, &headers, bytes))?;
    }
}

proptest! {
    #![proptest_config(config(300))]
    #[test]
    fn webhook_bodies_with_signatures(
        events in proptest::collection::vec(segment_event(), 0..5),
        array in any::<bool>(),
        sign_first_only in any::<bool>(),
        auth in prop_oneof![Just(None), Just(Some(WEBHOOK_TOKEN.to_owned())), hostile_text().prop_map(Some)],
        signature in prop_oneof![Just(None), hostile_text().prop_map(Some)],
        tamper in proptest::option::of((any::<prop::sample::Index>(), any::<u8>())),
    ) {
        let values: Vec<Value> = events.into_iter().map(Value::Object).collect();
        let mut bytes = if array || values.len() != 1 {
            serde_json::to_vec(&values).unwrap()
        } else {
            serde_json::to_vec(&values[0]).unwrap()
        };
        let signed = match (&values.first(), sign_first_only && array) {
            (Some(first), true) => serde_json::to_vec(first).unwrap(),
            _ => bytes.clone(),
        };
        let mut headers = vec![("x-signature", signature.unwrap_or_else(|| hmac_sha1(WEBHOOK_SECRET, &signed)))];
        if let Some(token) = auth {
            headers.push(("authorization", format!("Bearer {token}")));
        }
        if let Some((at, byte)) = tamper && !bytes.is_empty() {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        let status = check(post("/webhooks/segment", &headers, bytes))?;
        prop_assert!(status != 500);
    }
}

proptest! {
    #![proptest_config(config(300))]
    #[test]
    fn slack_interaction_bodies(payload in hostile_value(), raw in proptest::collection::vec(any::<u8>(), 0..512), form in any::<bool>(), ts_offset in any::<i64>(), correct_ts in any::<bool>()) {
        let body = if form {
            let encoded: String = form_urlencoded::Serializer::new(String::new())
                .append_pair("payload", &payload.to_string())
                .finish();
            encoded.into_bytes()
        } else {
            raw
        };
        let ts = if correct_ts {
            chrono::Utc::now().timestamp().to_string()
        } else {
            ts_offset.to_string()
        };
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SLACK_SECRET.as_bytes()).unwrap();
        mac.update(format!("v0:{ts}:").as_bytes());
        mac.update(&body);
        let sig = format!("v0={}", hex::encode(mac.finalize().into_bytes()));
        let headers = [("x-slack-request-timestamp", ts), ("x-slack-signature", sig)];
        check(post("/webhooks/slack/interactivity", &headers, body))?;
    }
}

proptest! {
    #![proptest_config(config(2000))]
    #[test]
    fn normalize_never_panics_and_names_the_field(event in segment_event(), implied in any::<bool>()) {
        let kind = implied.then_some(spur::event::EventType::Track);
        for origin in [spur::event::Origin::Tracking, spur::event::Origin::Delivered, spur::event::Origin::Outbound] {
            match spur::event::normalize(event.clone(), kind, &BatchDefaults::default(), origin, chrono::Utc::now()) {
                Ok(e) => prop_assert!(!e.message_id.is_empty()),
                Err(e) => prop_assert!(!e.to_string().is_empty() && e.to_string().len() < 1024, "{e:?}"),
            }
        }
    }
}

proptest! {
    #![proptest_config(config(5000))]
    #[test]
    fn durations_never_panic(text in prop_oneof![
        hostile_text(),
        ("[0-9.]{0,30}", "(ms|s|m|h|d|w|sec|days|x|é)?").prop_map(|(n, u)| format!("{n}{u}")),
        proptest::collection::vec(("[0-9]{1,25}", "(ms|s|m|h|d|w)"), 1..6).prop_map(|parts| parts.into_iter().map(|(n, u)| n + u.as_str()).collect::<String>()),
    ]) {
        match spur::duration::parse(&text) {
            Ok(d) => prop_assert!(d <= spur::duration::MAX),
            Err(e) => prop_assert!(!e.is_empty() && e.len() < 512, "{e}"),
        }
    }
}

proptest! {
    #![proptest_config(config(3000))]
    #[test]
    fn cron_expressions_never_panic(expr in prop_oneof![
        hostile_text(),
        proptest::collection::vec("(\\*|[0-9]{1,3}|[0-9]{1,2}-[0-9]{1,3}|\\*/[0-9]{1,3}|[0-9]{1,2}(,[0-9]{1,2}){0,3}|MON|jan|L|\\?|é)", 4..8)
            .prop_map(|f| f.join(" ")),
        ("(TZ=|CRON_TZ=)(Europe/Berlin|America/New_York|Nowhere/Zone|é)", "[0-9* /,-]{5,20}").prop_map(|(a, b)| format!("{a} {b}")),
        Just("@yearly".to_owned()),
        Just("@every 5s".to_owned()),
    ], at in -8_000_000_000_000_i64..250_000_000_000_000_i64) {
        if let Ok(s) = spur::schedule::cron::Schedule::parse(&expr)
            && let Some(t) = chrono::DateTime::from_timestamp_millis(at)
        {
            let _ = s.next_after(t);
        }
    }
}

proptest! {
    #![proptest_config(config(5000))]
    #[test]
    fn retry_after_is_always_bounded(status in prop_oneof![Just(429_u16), Just(503), Just(200), any::<u16>()], value in prop_oneof![
        hostile_text(),
        any::<f64>().prop_map(|f| f.to_string()),
        any::<i128>().prop_map(|n| n.to_string()),
        Just("Wed, 21 Oct 2015 07:28:00 GMT".to_owned()),
        Just("Fri, 31 Dec 9999 23:59:59 GMT".to_owned()),
    ]) {
        let wait = spur::connectors::http::retry_after(status, Some(&value), chrono::Utc::now());
        if let Some(w) = wait {
            prop_assert!(w <= std::time::Duration::from_secs(30), "{value}: {w:?}");
            prop_assert!(status == 429 || status == 503);
        }
    }
}

/// A config file made of known sections and keys with hostile values, plus noise.
fn config_text() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("[server]\nlisten"),
        Just("[server]\nworkers"),
        Just("[server]\nmax_inflight_requests"),
        Just("[segment]\nwrite_keys"),
        Just("[segment]\ncors_origins"),
        Just("[segment]\nflush_interval"),
        Just("[limits]\ntimeout_ms"),
        Just("[limits]\nmax_response_bytes"),
        Just("[retry]\nmax_attempts"),
        Just("[retention]\nruns"),
        Just("[approvals]\ndefault_expires"),
        Just("[connections.x]\nbase_url"),
        Just("[connections.x]\nrate_limit"),
        Just("[connections.x]\non_unknown"),
        Just("[connections.x]\nheaders"),
        Just("[nowhere]\nkey"),
    ];
    let value = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        Just("1e-320".to_owned()),
        Just("inf".to_owned()),
        Just("nan".to_owned()),
        hostile_text().prop_map(|s| format!("{s:?}")),
        Just("\"${UNSET}\"".to_owned()),
        Just("\"${UNCLOSED\"".to_owned()),
        Just("[1, \"a\", {}]".to_owned()),
        Just("{ \"X-Key\" = \"é\" }".to_owned()),
    ];
    prop_oneof![
        proptest::collection::vec((key, value), 0..6).prop_map(|kv| {
            kv.into_iter().fold(String::new(), |mut out, (k, v)| {
                let _ = writeln!(out, "{k} = {v}");
                out
            })
        }),
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(config(2000))]
    #[test]
    fn config_files_never_panic_and_explain_themselves(text in config_text()) {
        match spur::config::load_from_str(&text, None, &BTreeMap::new()) {
            Ok(_) => {}
            Err(e) => prop_assert!(!e.problems.is_empty() && e.problems.iter().all(|p| !p.is_empty())),
        }
    }
}
