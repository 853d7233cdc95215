//! Traces over OTLP/HTTP to a receiver inside the test: a track request with a
//! `traceparent` yields a run span in that trace (under the caller's span), with
//! a child span for its HTTP call, and the called API received the call's
//! `traceparent`.

mod common;

use common::TestApp;
use serde_json::{Value, json};
use spur::testing::{FakeHttp, Reply};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// The value of attribute `key` of `span`, as text.
fn attr(span: &Value, key: &str) -> Option<String> {
    span["attributes"].as_array()?.iter().find_map(|a| {
        (a["key"] == key).then(|| {
            let v = &a["value"];
            v["stringValue"]
                .as_str()
                .or_else(|| v["intValue"].as_str())
                .map(str::to_owned)
        })?
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traced_event_yields_a_run_span_with_a_child_span_per_call() {
    let mut collector = FakeHttp::start(|_| Reply::json(200, &json!({}))).await;
    let mut api = FakeHttp::ok().await;
    let t = TestApp::builder()
        .script(
            "orders.rhai",
            r#"on_track("Order Completed", |e| {
    http::post("/orders", #{ id: e.properties.id }, #{ connection: "erp" });
});
"#,
        )
        .config(&format!(
            "[connections.erp]\nbase_url = \"{}\"\n\n[telemetry]\notlp_endpoint = \"{}\"\nservice_name = \"spur-test\"\n",
            api.base_url, collector.base_url
        ))
        .start()
        .await;
    let (status, _) = t
        .post_raw(
            "/v1/track",
            json!({"userId": "ada", "messageId": "m-1", "event": "Order Completed", "properties": {"id": 7}})
                .to_string(),
            &[
                ("content-type", "application/json"),
                ("traceparent", &format!("00-{TRACE}-{CALLER_SPAN}-01")),
            ],
        )
        .await;
    assert_eq!(status, 200);

    // The API got the run's trace, naming the call's own span.
    let call = api.next(20).await;
    let sent = call
        .header("traceparent")
        .expect("a traceparent")
        .to_owned();
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!(
        (parts[0], parts[1], parts[3]),
        ("00", TRACE, "01"),
        "{sent}"
    );
    let call_span = parts[2].to_owned();

    // The collector receives the run span and the call span (in one export or two).
    let mut spans: Vec<Value> = Vec::new();
    while spans.len() < 2 {
        let export = collector.next(20).await;
        assert_eq!(export.path, "/v1/traces");
        let body = export.json.expect("OTLP JSON");
        let rs = &body["resourceSpans"][0];
        assert_eq!(
            rs["resource"]["attributes"][0],
            json!({"key": "service.name", "value": {"stringValue": "spur-test"}})
        );
        spans.extend(
            rs["scopeSpans"][0]["spans"]
                .as_array()
                .unwrap()
                .iter()
                .cloned(),
        );
    }
    let run = spans.iter().find(|s| s["kind"] == 5).expect("a run span");
    assert_eq!(run["traceId"], TRACE);
    assert_eq!(run["parentSpanId"], CALLER_SPAN, "under the caller's span");
    assert_eq!(run["name"], "orders on_track(Order Completed)#0");
    for (key, want) in [
        ("spur.script", "orders"),
        ("spur.handler", "on_track(Order Completed)#0"),
        ("enduser.id", "ada"),
        ("spur.message_id", "m-1"),
        ("spur.attempt", "1"),
        ("spur.outcome", "ok"),
    ] {
        assert_eq!(attr(run, key).as_deref(), Some(want), "{key} in {run}");
    }
    let child = spans.iter().find(|s| s["kind"] == 3).expect("a call span");
    assert_eq!(child["traceId"], TRACE);
    assert_eq!(child["parentSpanId"], run["spanId"]);
    assert_eq!(
        child["spanId"],
        call_span.as_str(),
        "the span the API was told"
    );
    assert_eq!(attr(child, "http.request.method").as_deref(), Some("POST"));
    assert_eq!(
        attr(child, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert!(attr(child, "url.full").unwrap().ends_with("/orders"));
    let start: i128 = child["startTimeUnixNano"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let run_start: i128 = run["startTimeUnixNano"].as_str().unwrap().parse().unwrap();
    let run_end: i128 = run["endTimeUnixNano"].as_str().unwrap().parse().unwrap();
    assert!(
        run_start <= start + 1_000_000 && start <= run_end,
        "the call lies within its run"
    );

    // The run record says where it sits in the trace (stored by the records'
    // writer, maybe after the span went out: awaited).
    t.wait_run_count(1, 10).await;
    let (_, runs) = t.admin_get("/api/runs").await;
    assert_eq!(runs["runs"][0]["trace"]["trace_id"], TRACE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_traceparent_each_job_gets_its_own_trace_and_bad_headers_are_ignored() {
    let mut collector = FakeHttp::start(|_| Reply::json(200, &json!({}))).await;
    let t = TestApp::builder()
        .script("e.rhai", "on_track(|e| { log::info(\"seen\"); });")
        .config(&format!(
            "[telemetry]\notlp_endpoint = \"{}\"\n",
            collector.base_url
        ))
        .start()
        .await;
    for tp in [
        "garbage",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
    ] {
        let (status, _) = t
            .post_raw(
                "/v1/track",
                json!({"userId": "u", "event": "X"}).to_string(),
                &[("content-type", "application/json"), ("traceparent", tp)],
            )
            .await;
        assert_eq!(status, 200, "a bad traceparent never costs the event");
    }
    let mut spans: Vec<Value> = Vec::new();
    while spans.len() < 2 {
        let body = collector.next(20).await.json.unwrap();
        spans.extend(
            body["resourceSpans"][0]["scopeSpans"][0]["spans"]
                .as_array()
                .unwrap()
                .iter()
                .cloned(),
        );
    }
    assert!(spans.iter().all(|s| s.get("parentSpanId").is_none()));
    assert_ne!(spans[0]["traceId"], spans[1]["traceId"], "a trace per job");
    assert_eq!(spans[0]["traceId"].as_str().unwrap().len(), 32);
}
