//! End-to-end ingest: every Tracking API endpoint and auth form, the conformance list
//! of `segment-spec.md` (bad input answered 4xx naming the problem and never
//! handled), gzip, text/plain, dedup, and the Webhooks destination's signatures.
//! Run with: cargo nextest run --test ingest

mod common;

use std::io::Write as _;

use base64::Engine as _;
use common::{Backend, TestApp, fixture, fixture_json};
use serde_json::{Value, json};

common::on_both_backends!(
    every_endpoint_and_short_form_accepts_its_type,
    write_key_by_body_or_basic_auth_with_or_without_colon,
    invalid_bodies_are_refused_naming_the_problem_and_never_handled,
    batch_limits_size_and_item_count,
    batch_is_normalised_like_segment,
    gzip_and_text_plain_bodies_are_accepted,
    duplicate_message_ids_are_acknowledged_and_handled_once,
    numeric_ids_and_unknown_fields_are_kept,
    webhook_signatures_are_verified,
    a_webhook_token_authenticates_whole_batches,
    webhooks_are_refused_without_a_configured_secret,
    delivered_fixtures_of_every_kind_are_accepted_by_webhook,
);

/// Logs each event it sees as JSON, so tests can read what was stored.
const ECHO: &str = r#"on_event(|e| { log::info(json::stringify(e)); });"#;

async fn echo_app(extra_config: &str, backend: Backend) -> TestApp {
    TestApp::builder()
        .backend(backend)
        .script("echo.rhai", ECHO)
        .config(extra_config)
        .start()
        .await
}

/// The events handled, from the echo handler's logs, oldest first.
fn handled(runs: &[spur::run::RunRecord]) -> Vec<Value> {
    let mut v: Vec<Value> = runs
        .iter()
        .rev()
        .filter(|r| r.script == "echo")
        .map(|r| serde_json::from_str(&r.logs[0].message).unwrap())
        .collect();
    v.dedup_by(|a, b| a["messageId"] == b["messageId"]);
    v
}

fn basic(user_pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(user_pass)
    )
}

async fn every_endpoint_and_short_form_accepts_its_type(backend: Backend) {
    let t = echo_app("", backend).await;
    let cases = [
        ("track", "t", json!({"userId": "u1", "event": "Signed Up"})),
        (
            "identify",
            "i",
            json!({"userId": "u1", "traits": {"plan": "pro"}}),
        ),
        ("page", "p", json!({"anonymousId": "a1", "name": "Pricing"})),
        ("screen", "s", json!({"userId": "u1", "name": "Home"})),
        ("group", "g", json!({"userId": "u1", "groupId": "g1"})),
        ("alias", "a", json!({"userId": "u1", "previousId": "a1"})),
    ];
    for (long, short, body) in &cases {
        for path in [format!("/v1/{long}"), format!("/v1/{short}")] {
            let (status, resp) = t.post(&path, body).await;
            assert_eq!(status, 200, "{path}: {resp}");
            assert_eq!(resp["success"], true);
        }
    }
    let runs = t.wait_run_count(12, 10).await;
    let events = handled(&runs);
    let mut types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    types.sort_unstable();
    assert_eq!(
        types,
        [
            "alias", "alias", "group", "group", "identify", "identify", "page", "page", "screen",
            "screen", "track", "track"
        ]
    );
    for path in ["/v1/batch", "/v1/b", "/v1/import"] {
        let (status, resp) = t
            .post(
                path,
                &json!({"batch": [{"type": "track", "userId": "u2", "event": path}]}),
            )
            .await;
        assert_eq!(status, 200, "{path}: {resp}");
        assert_eq!(resp["accepted"], 1);
    }
    t.wait_run_count(15, 10).await;
}

async fn write_key_by_body_or_basic_auth_with_or_without_colon(backend: Backend) {
    let t = echo_app("[segment]\nwrite_keys = [\"KEY\"]", backend).await;
    let ev = json!({"userId": "u1", "event": "A"});
    let mut with_key = ev.clone();
    with_key["writeKey"] = json!("KEY");
    assert_eq!(t.post("/v1/track", &with_key).await.0, 200);
    for auth in [basic("KEY:"), basic("KEY")] {
        let (status, body) = t
            .post_raw(
                "/v1/track",
                ev.to_string(),
                &[
                    ("authorization", &auth),
                    ("content-type", "application/json"),
                ],
            )
            .await;
        assert_eq!(status, 200, "{auth}: {body}");
    }
    let (status, body) = t.post("/v1/track", &ev).await;
    assert_eq!(status, 401);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("missing write key"),
        "{body}"
    );
    let mut wrong = ev.clone();
    wrong["writeKey"] = json!("NOPE");
    let (status, body) = t.post("/v1/track", &wrong).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "unknown write key");
    let (status, _) = t
        .post_raw(
            "/v1/batch",
            json!({"batch": [ev]}).to_string(),
            &[("authorization", &basic("NOPE:"))],
        )
        .await;
    assert_eq!(status, 401);
    // The write key is not kept in stored events.
    let runs = t.wait_run_count(3, 10).await;
    assert!(handled(&runs).iter().all(|e| e.get("writeKey").is_none()));
}

async fn invalid_bodies_are_refused_naming_the_problem_and_never_handled(backend: Backend) {
    let t = echo_app("", backend).await;
    let cases: [(&str, &str, &str, Option<&str>); 8] = [
        (
            "01-identify-no-user-or-anonymous-id.json",
            "/v1/identify",
            "no_user_anon_id",
            Some("userId"),
        ),
        (
            "02-track-missing-event.json",
            "/v1/track",
            "missing_event",
            Some("event"),
        ),
        (
            "03-group-missing-group-id.json",
            "/v1/group",
            "missing_group_id",
            Some("groupId"),
        ),
        (
            "04-alias-missing-previous-id.json",
            "/v1/alias",
            "missing_previous_id",
            Some("previousId"),
        ),
        ("05-not-json.txt", "/v1/track", "invalid_json", None),
        ("06-truncated-json.txt", "/v1/track", "invalid_json", None),
        (
            "07-user-id-wrong-type.json",
            "/v1/identify",
            "invalid_id",
            Some("userId"),
        ),
        (
            "10-message-id-over-100-chars.json",
            "/v1/track",
            "message_id_too_long",
            Some("messageId"),
        ),
    ];
    for (file, path, code, field) in cases {
        let (status, body) = t
            .post_raw(path, fixture(&format!("invalid/{file}")), &[])
            .await;
        assert_eq!(status, 400, "{file}: {body}");
        assert_eq!(body["code"], code, "{file}: {body}");
        assert_eq!(body["success"], false);
        assert!(!body["error"].as_str().unwrap().is_empty());
        if let Some(f) = field {
            assert_eq!(body["field"], f, "{file}: {body}");
            assert!(
                body["error"].as_str().unwrap().contains(f),
                "{file}: message names the field: {body}"
            );
        }
    }
    let (status, body) = t
        .post_raw("/v1/track", fixture("invalid/09-event-over-32kb.json"), &[])
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("too_large")),
        "{body}"
    );

    // A batch: the typeless item is rejected alone, the other accepted.
    let (status, body) = t
        .post_raw(
            "/v1/batch",
            fixture("invalid/08-batch-item-missing-type.json"),
            &[],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 1);
    assert_eq!(body["rejected"][0]["index"], 1);
    assert_eq!(body["rejected"][0]["field"], "type");

    // Nothing else was handled: one sentinel later, exactly two runs exist.
    let (status, _) = t
        .post("/v1/track", &json!({"userId": "sentinel", "event": "Done"}))
        .await;
    assert_eq!(status, 200);
    let runs = t
        .wait_runs(10, |r| {
            r.iter().any(|r| r.user.as_deref() == Some("sentinel")) && r.len() >= 2
        })
        .await;
    assert_eq!(
        runs.len(),
        2,
        "only the valid batch item and the sentinel ran"
    );
    let stored = t.app.queue.events_since(0).unwrap();
    assert_eq!(stored.len(), 2, "nothing of the invalid bodies was stored");
}

async fn batch_limits_size_and_item_count(backend: Backend) {
    let t = echo_app("", backend).await;
    let big = "x".repeat(400);
    let items: Vec<Value> = (0..1500)
        .map(|i| json!({"type": "track", "userId": format!("u{i}"), "event": "E", "properties": {"pad": big}}))
        .collect();
    let (status, body) = t.post("/v1/batch", &json!({ "batch": items })).await;
    assert_eq!(status, 400, "over 500 KB: {body}");
    assert_eq!(body["code"], "too_large");

    let items: Vec<Value> = (0..2501)
        .map(|i| json!({"type": "track", "anonymousId": format!("a{}", i % 7), "event": "E"}))
        .collect();
    let (status, body) = t.post("/v1/batch", &json!({ "batch": items })).await;
    assert_eq!(status, 400, "over 2,500 events: {body}");
    assert_eq!(body["code"], "too_many_events");
    assert!(body["message"].as_str().unwrap().contains("2501"), "{body}");

    let (status, body) = t
        .post("/v1/batch", &json!({"batch": [{"userId": "u"}]}))
        .await;
    assert_eq!(status, 400, "every item invalid: {body}");
    assert_eq!(body["detail"]["rejected"][0]["field"], "type");
    let (status, body) = t.post("/v1/batch", &json!({"events": []})).await;
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("batch")),
        "{body}"
    );
}

async fn batch_is_normalised_like_segment(backend: Backend) {
    let t = echo_app("", backend).await;
    let (status, body) = t
        .post_raw("/v1/batch", fixture("batch-mixed.json"), &[])
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 12);
    let runs = t.wait_run_count(12, 10).await;
    let events = handled(&runs);
    assert_eq!(events.len(), 12);
    let sent = fixture_json("batch-mixed.json");
    for e in &events {
        for key in [
            "receivedAt",
            "originalTimestamp",
            "timestamp",
            "messageId",
            "sentAt",
        ] {
            assert!(e[key].is_string(), "{key} stamped: {e}");
        }
        // Batch-level context merged in, item-level keys win.
        assert_eq!(e["context"]["library"]["name"], "analytics-python");
        assert!(e.get("writeKey").is_none());
    }
    let item3 = events
        .iter()
        .find(|e| e["messageId"] == sent["batch"][2]["messageId"])
        .unwrap();
    assert_eq!(
        item3["context"]["locale"], "en-GB",
        "the item's own locale wins"
    );
    let item10 = events
        .iter()
        .find(|e| e["messageId"] == sent["batch"][9]["messageId"])
        .unwrap();
    assert!(
        item10["integrations"]["Mixpanel"].is_boolean()
            || item10["integrations"]["Mixpanel"].is_object()
    );
    // Clock skew: timestamp = receivedAt - (sentAt - originalTimestamp).
    let t0 = |s: &Value| {
        spur::event::parse_time(s.as_str().unwrap())
            .unwrap()
            .timestamp_millis()
    };
    for e in &events {
        let expected = t0(&e["receivedAt"]) - (t0(&e["sentAt"]) - t0(&e["originalTimestamp"]));
        assert!((t0(&e["timestamp"]) - expected).abs() <= 1, "{e}");
    }
}

async fn gzip_and_text_plain_bodies_are_accepted(backend: Backend) {
    let t = echo_app("", backend).await;
    let body =
        json!({"batch": [{"type": "identify", "userId": "gz", "traits": {"a": 1}}]}).to_string();
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(body.as_bytes()).unwrap();
    let gz = enc.finish().unwrap();
    let (status, resp) = t
        .post_raw(
            "/v1/batch",
            gz,
            &[
                ("content-encoding", "gzip"),
                ("content-type", "application/json"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{resp}");
    let (status, resp) = t
        .post_raw(
            "/v1/t",
            json!({"anonymousId": "browser", "event": "Clicked", "writeKey": "k"}).to_string(),
            &[("content-type", "text/plain")],
        )
        .await;
    assert_eq!(status, 200, "{resp}");
    let (status, resp) = t
        .post_raw(
            "/v1/batch",
            b"\x1f\x8bnot gzip".to_vec(),
            &[("content-encoding", "gzip")],
        )
        .await;
    assert_eq!((status, resp["code"].as_str()), (400, Some("invalid_gzip")));
    let runs = t.wait_run_count(2, 10).await;
    let users: Vec<_> = handled(&runs)
        .iter()
        .map(|e| {
            e["userId"]
                .as_str()
                .or(e["anonymousId"].as_str())
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(users.contains(&"gz".to_owned()) && users.contains(&"browser".to_owned()));
}

async fn duplicate_message_ids_are_acknowledged_and_handled_once(backend: Backend) {
    let t = echo_app("", backend).await;
    let ev = json!({"userId": "u1", "event": "Paid", "messageId": "m-1"});
    assert_eq!(
        t.post("/v1/track", &ev).await,
        (200, json!({"success": true}))
    );
    assert_eq!(
        t.post("/v1/track", &ev).await,
        (200, json!({"success": true, "duplicate": true}))
    );
    let (status, body) = t
        .post(
            "/v1/batch",
            &json!({"batch": [
                {"type": "track", "userId": "u1", "event": "Paid", "messageId": "m-1"},
                {"type": "track", "userId": "u1", "event": "Paid", "messageId": "m-2"},
                {"type": "track", "userId": "u1", "event": "Paid", "messageId": "m-2"}
            ]}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["accepted"], 1);
    assert_eq!(body["duplicates"], json!([0, 2]));
    let (status, _) = t
        .post(
            "/v1/track",
            &json!({"userId": "u1", "event": "Last", "messageId": "m-3"}),
        )
        .await;
    assert_eq!(status, 200);
    // A run's record is stored just after its user's next run may start, so the
    // records of one user can appear out of order: wait for all three.
    let runs = t
        .wait_runs(10, |r| {
            ["m-1", "m-2", "m-3"]
                .iter()
                .all(|m| r.iter().any(|r| r.message_id.as_deref() == Some(*m)))
        })
        .await;
    let ids: Vec<_> = runs.iter().filter_map(|r| r.message_id.clone()).collect();
    assert_eq!(ids.iter().filter(|m| *m == "m-1").count(), 1);
    assert_eq!(ids.iter().filter(|m| *m == "m-2").count(), 1);
}

async fn numeric_ids_and_unknown_fields_are_kept(backend: Backend) {
    let t = echo_app("", backend).await;
    let (status, _) = t
        .post("/v1/identify", &json!({"userId": 90210, "traits": {}, "_metadata": {"bundled": ["x"]}, "timestamp": "2025-03-25T17:02:11.482123+00:00"}))
        .await;
    assert_eq!(status, 200);
    let runs = t.wait_run_count(1, 10).await;
    let e = &handled(&runs)[0];
    assert_eq!(e["userId"], "90210");
    assert_eq!(e["_metadata"]["bundled"][0], "x");
    assert_eq!(e["originalTimestamp"], "2025-03-25T17:02:11.482123+00:00");
}

/// From `fixtures/segment/webhook-signatures.txt` (secret `test-secret`).
const SINGLE_SIG: &str = "6b9f752f02c1b63262045399e6939745dd944e15";
const BATCH_SIG: &str = "07c7a5ddefa748feeaf4b42d9fce7e7d0c4df07b";
const BATCH_WHOLE_SIG: &str = "05296dcde0073da93ecad7d4be24d627d98d092d";

async fn webhook_signatures_are_verified(backend: Backend) {
    let t = echo_app("[segment]\nwebhook_secret = \"test-secret\"", backend).await;
    let (single_sig, batch_sig, whole_sig) = (SINGLE_SIG, BATCH_SIG, BATCH_WHOLE_SIG);
    assert!(fixture("webhook-signatures.txt").contains(SINGLE_SIG));
    let single = fixture("webhook-single.json");
    let batch = fixture("webhook-batch.json");
    // Element 0 of the batch, exactly the bytes X-Signature covers.
    let first: Vec<&serde_json::value::RawValue> = serde_json::from_str(&batch).unwrap();
    let first = format!("[{}]", first[0].get());

    let (status, body) = t
        .post_raw(
            "/webhooks/segment",
            single.clone(),
            &[("x-signature", single_sig)],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // X-Signature vouches for element 0 only: a longer batch is refused whole.
    let (status, body) = t
        .post_raw(
            "/webhooks/segment",
            batch.clone(),
            &[("x-signature", batch_sig)],
        )
        .await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("webhook_token"),
        "says how to enable batches: {body}"
    );
    // ... while a one-element array is exactly what it signs.
    let (status, body) = t
        .post_raw("/webhooks/segment", first, &[("x-signature", batch_sig)])
        .await;
    assert_eq!(
        (status, body["accepted"].as_u64()),
        (200, Some(1)),
        "{body}"
    );

    // Wrong, missing, or signing a tampered body: 401, nothing stored.
    let tampered = batch.replacen("Cart Viewed", "Cart Emptied", 1);
    let bad = [
        (
            single.clone(),
            Some("0000000000000000000000000000000000000000"),
        ),
        (single.clone(), None),
        (
            single.replacen("Product Added", "Product Stolen", 1),
            Some(single_sig),
        ),
        (tampered.clone(), Some(whole_sig)),
    ];
    for (body, sig) in bad {
        let headers: Vec<(&str, &str)> = match sig {
            Some(s) if body == tampered => vec![("x-segment-signature", s)],
            Some(s) => vec![("x-signature", s)],
            None => vec![],
        };
        let (status, resp) = t.post_raw("/webhooks/segment", body, &headers).await;
        assert_eq!(status, 401, "{resp}");
    }
    // X-Segment-Signature covers the whole (untampered) body.
    let (status, body) = t
        .post_raw(
            "/webhooks/segment",
            batch.clone(),
            &[("x-segment-signature", whole_sig)],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["accepted"].as_u64(), &body["duplicates"]),
        (Some(2), &json!([0])),
        "element 0 came before: {body}"
    );

    let runs = t.wait_run_count(4, 10).await;
    let events = handled(&runs);
    assert_eq!(
        events.len(),
        4,
        "1 single + 3 batched, nothing from the rejected bodies"
    );
    assert!(
        events
            .iter()
            .all(|e| e["event"] != "Product Stolen" && e["event"] != "Cart Emptied")
    );
}

async fn a_webhook_token_authenticates_whole_batches(backend: Backend) {
    let t = echo_app(
        "[segment]\nwebhook_secret = \"test-secret\"\nwebhook_token = \"mapping-token\"",
        backend,
    )
    .await;
    let batch = fixture("webhook-batch.json");
    // Someone holding one signed delivery appends an event of their own.
    let mut items: Vec<Value> = serde_json::from_str(&batch).unwrap();
    let mut forged = items[0].clone();
    forged["event"] = json!("Refund Issued");
    forged["type"] = json!("track");
    forged["messageId"] = json!("forged-1");
    items.push(forged);
    let appended = serde_json::to_string(&items).unwrap();
    for (body, headers) in [
        (appended.clone(), vec![("x-signature", BATCH_SIG)]),
        (
            appended.clone(),
            vec![("authorization", "Bearer wrong-token")],
        ),
        (appended, vec![]),
    ] {
        let (status, resp) = t.post_raw("/webhooks/segment", body, &headers).await;
        assert_eq!(status, 401, "{resp}");
    }
    let (status, body) = t
        .post_raw(
            "/webhooks/segment",
            batch,
            &[("authorization", "Bearer mapping-token")],
        )
        .await;
    assert_eq!(
        (status, body["accepted"].as_u64()),
        (200, Some(3)),
        "{body}"
    );
    let runs = t.wait_run_count(3, 10).await;
    let events = handled(&runs);
    assert_eq!(events.len(), 3);
    assert!(events.iter().all(|e| e["messageId"] != "forged-1"));
}

async fn webhooks_are_refused_without_a_configured_secret(backend: Backend) {
    let t = echo_app("", backend).await;
    let (status, body) = t
        .post_raw(
            "/webhooks/segment",
            fixture("webhook-single.json"),
            &[("x-signature", "00")],
        )
        .await;
    assert_eq!(status, 401);
    assert!(body["error"].as_str().unwrap().contains("webhook_secret"));
}

async fn delivered_fixtures_of_every_kind_are_accepted_by_webhook(backend: Backend) {
    use hmac::Mac as _;
    let t = echo_app("[segment]\nwebhook_secret = \"s3cret\"", backend).await;
    let files = [
        "track-product-viewed.json",
        "identify-anonymous.json",
        "engage-audience-entered-identify.json",
        "engage-computed-trait-track.json",
    ];
    let bodies = spur::local::SAMPLES
        .iter()
        .map(|(kind, body)| ((*kind).to_owned(), (*body).to_owned()))
        .chain(files.iter().map(|f| ((*f).to_owned(), fixture(f))));
    let mut sent = 0;
    for (f, body) in bodies {
        sent += 1;
        let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(b"s3cret").unwrap();
        mac.update(body.as_bytes());
        let sig = hex::encode(mac.finalize().into_bytes());
        let (status, resp) = t
            .post_raw("/webhooks/segment", body, &[("x-signature", &sig)])
            .await;
        assert_eq!(status, 200, "{f}: {resp}");
    }
    let runs = t.wait_run_count(sent, 10).await;
    let events = handled(&runs);
    let original: Value = serde_json::from_str(spur::local::SAMPLES[0].1).unwrap();
    let got = events
        .iter()
        .find(|e| e["messageId"] == original["messageId"])
        .unwrap();
    assert_eq!(
        got["receivedAt"], original["receivedAt"],
        "Segment's own stamps are kept"
    );
    assert_eq!(got["properties"], original["properties"]);
}
