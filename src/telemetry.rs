//! Traces (`[telemetry] otlp_endpoint`): a span per run and a child span per
//! outbound call, exported over OTLP/HTTP in its JSON encoding
//! (`POST {endpoint}/v1/traces`), which every OpenTelemetry collector takes.
//!
//! A run's span is built from its run record when it ends — the record already
//! holds everything a span says (times, outcome, calls) — so no span is kept open
//! across the worker's blocking call. Its trace is the one of the `traceparent`
//! the event arrived with (W3C Trace Context), else one derived from the job, so
//! every attempt of a job lands in the same trace. Outbound calls carry
//! `traceparent` naming their own span.
//!
//! Export never slows a run: spans go through a bounded queue to one exporter
//! task; when the queue is full or the collector fails, spans are dropped and
//! counted (`spur_trace_spans_dropped_total`), never retried into memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

use crate::run::{RunRecord, RunStatus};

/// Spans waiting for the exporter; more are dropped.
const QUEUE: usize = 10_000;
/// Spans per export request at most.
const BATCH: usize = 512;

/// Where a run sits in its trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceIds {
    /// 32 lower-case hex digits.
    pub trace_id: String,
    /// The run's span: 16 hex digits.
    pub span_id: String,
    /// The span of the `traceparent` the event came with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_span_id: Option<String>,
}

fn random_hex<const N: usize>() -> String {
    hex::encode(rand::random::<[u8; N]>())
}

/// A new span id.
pub(crate) fn span_id() -> String {
    random_hex::<8>()
}

impl TraceIds {
    /// The ids of one execution of `job`: in the trace of its `traceparent`, or
    /// in a trace derived from the job (the same for all its attempts).
    pub(crate) fn for_job(job: &crate::queue::Job) -> Self {
        let (trace_id, parent_span_id) =
            if let Some((t, p)) = job.traceparent.as_deref().and_then(parse) {
                (t, Some(p))
            } else {
                let seed = format!("spur-job:{}:{}", job.id, job.created_ms);
                (hex::encode(&Sha256::digest(seed.as_bytes())[..16]), None)
            };
        Self {
            trace_id,
            span_id: span_id(),
            parent_span_id,
        }
    }

    /// The `traceparent` header of a child span `span` (sampled).
    pub(crate) fn header_for(&self, span: &str) -> String {
        format!("00-{}-{span}-01", self.trace_id)
    }
}

/// The trace id and parent span id of a valid W3C `traceparent`
/// (`00-<32 hex>-<16 hex>-<2 hex>`, ids not all zero).
pub(crate) fn parse(header: &str) -> Option<(String, String)> {
    let mut parts = header.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex_of = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let ok = version.len() == 2
        && version != "ff"
        && hex_of(version, 2)
        && hex_of(trace, 32)
        && hex_of(span, 16)
        && hex_of(flags, 2)
        && trace.bytes().any(|b| b != b'0')
        && span.bytes().any(|b| b != b'0')
        && (version != "00" || parts.next().is_none());
    ok.then(|| (trace.to_owned(), span.to_owned()))
}

/// The validated `traceparent` of a request, if any.
pub(crate) fn traceparent_of(headers: &axum::http::HeaderMap) -> Option<String> {
    let v = headers.get("traceparent")?.to_str().ok()?;
    parse(v).map(|_| v.trim().to_owned())
}

/// The span exporter.
pub struct Telemetry {
    tx: mpsc::Sender<Value>,
    dropped: AtomicU64,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

impl Telemetry {
    /// The exporter `[telemetry]` asks for, if any.
    pub(crate) fn of(
        cfg: &crate::config::TelemetryConfig,
        tasks: &tokio_util::sync::CancellationToken,
    ) -> Option<Arc<Self>> {
        let url = cfg.otlp_endpoint.as_deref()?;
        Some(Self::start(url, &cfg.service_name, tasks.child_token()))
    }

    /// Starts exporting to `endpoint` (`http://collector:4318`) as `service`.
    pub(crate) fn start(
        endpoint: &str,
        service: &str,
        cancel: tokio_util::sync::CancellationToken,
    ) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let me = Arc::new(Self {
            tx,
            dropped: AtomicU64::new(0),
        });
        let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
        tokio::spawn(export(
            url,
            service.to_owned(),
            rx,
            Arc::downgrade(&me),
            cancel,
        ));
        me
    }

    /// Spans dropped so far (queue full, or the collector refused them).
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Queues the spans of a finished run (never blocks).
    pub(crate) fn record_run(&self, record: &RunRecord) {
        for span in spans_of(record) {
            if self.tx.try_send(span).is_err() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Sends spans as they come, batching whatever is queued.
async fn export(
    url: String,
    service: String,
    mut rx: mpsc::Receiver<Value>,
    me: std::sync::Weak<Telemetry>,
    cancel: tokio_util::sync::CancellationToken,
) {
    crate::connectors::http::install_crypto_provider();
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap_or_default();
    loop {
        let first = tokio::select! {
            () = cancel.cancelled() => None,
            s = rx.recv() => s,
        };
        let Some(first) = first else { return };
        let mut spans = vec![first];
        while spans.len() < BATCH {
            match rx.try_recv() {
                Ok(s) => spans.push(s),
                Err(_) => break,
            }
        }
        let n = spans.len() as u64;
        let body = json!({ "resourceSpans": [{
            "resource": { "attributes": [attr("service.name", &service)] },
            "scopeSpans": [{ "scope": { "name": "spur", "version": env!("CARGO_PKG_VERSION") }, "spans": spans }],
        }]});
        let sent = client.post(&url).json(&body).send().await;
        let ok = matches!(&sent, Ok(r) if r.status().is_success());
        if !ok {
            match sent {
                Ok(r) => {
                    tracing::warn!(status = %r.status(), spans = n, "The trace collector refused spans.");
                }
                Err(e) => tracing::warn!(error = %e, spans = n, "Exporting spans failed."),
            }
            if let Some(t) = me.upgrade() {
                t.dropped.fetch_add(n, Ordering::Relaxed);
            }
        }
    }
}

fn attr(key: &str, value: &str) -> Value {
    json!({ "key": key, "value": { "stringValue": value } })
}

fn int_attr(key: &str, value: i64) -> Value {
    json!({ "key": key, "value": { "intValue": value.to_string() } })
}

fn nanos(ms: f64) -> String {
    format!("{}", (ms * 1e6) as i128)
}

fn ms_of(rfc3339: &str) -> f64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map_or(0.0, |t| t.timestamp_micros() as f64 / 1000.0)
}

/// The run's span and one child span per outbound call (its attempts together).
fn spans_of(r: &RunRecord) -> Vec<Value> {
    let Some(ids) = &r.trace else {
        return Vec::new();
    };
    let start = ms_of(&r.started_at);
    let end = (start + r.duration_ms).max(ms_of(&r.finished_at));
    let mut attributes = vec![
        attr("spur.script", &r.script),
        attr("spur.handler", &r.handler),
        attr("spur.trigger", &r.trigger),
        attr("spur.outcome", r.status.as_str()),
        int_attr("spur.attempt", i64::from(r.attempt)),
        int_attr("spur.run_id", r.id as i64),
        int_attr("spur.job_id", r.job_id as i64),
    ];
    if let Some(u) = &r.user {
        attributes.push(attr("enduser.id", u));
    }
    if let Some(m) = &r.message_id {
        attributes.push(attr("spur.message_id", m));
    }
    let failed = matches!(r.status, RunStatus::Failed | RunStatus::Dead);
    let status = if failed {
        json!({ "code": 2, "message": r.error.as_ref().map(|e| e.message.clone()).or_else(|| r.reason.clone()).unwrap_or_default() })
    } else {
        json!({ "code": 1 })
    };
    let mut run = json!({
        "traceId": ids.trace_id,
        "spanId": ids.span_id,
        "name": format!("{} {}", r.script, r.handler),
        "kind": 5,
        "startTimeUnixNano": nanos(start),
        "endTimeUnixNano": nanos(end),
        "attributes": attributes,
        "status": status,
    });
    if let Some(p) = &ids.parent_span_id {
        run["parentSpanId"] = json!(p);
    }
    let mut out = vec![run];
    let mut seen: Vec<&str> = Vec::new();
    for c in &r.calls {
        let Some(span) = c.span_id.as_deref() else {
            continue;
        };
        if seen.contains(&span) {
            continue;
        }
        seen.push(span);
        let attempts: Vec<_> = r
            .calls
            .iter()
            .filter(|a| a.span_id.as_deref() == Some(span))
            .collect();
        let first = attempts[0];
        let last = attempts[attempts.len() - 1];
        let at = |a: &crate::connectors::CallRecord| a.at_ms.map_or(start, |t| t as f64);
        let call_start = at(first);
        let call_end = attempts
            .iter()
            .map(|a| at(a) + a.ms)
            .fold(call_start, f64::max);
        let mut attributes = vec![
            attr("http.request.method", &last.method),
            attr("url.full", &last.url),
            int_attr("spur.attempts", attempts.len() as i64),
        ];
        if let Some(s) = last.status {
            attributes.push(int_attr("http.response.status_code", i64::from(s)));
        }
        if let Some(conn) = &last.connection {
            attributes.push(attr("spur.connection", conn));
        }
        let error = last.status.is_none_or(|s| s >= 500) || last.error.is_some();
        out.push(json!({
            "traceId": ids.trace_id,
            "spanId": span,
            "parentSpanId": ids.span_id,
            "name": last.method,
            "kind": 3,
            "startTimeUnixNano": nanos(call_start),
            "endTimeUnixNano": nanos(call_end),
            "attributes": attributes,
            "status": if error { json!({ "code": 2, "message": last.error.clone().unwrap_or_default() }) } else { json!({ "code": 0 }) },
        }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_headers_are_checked() {
        let t = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            parse(t),
            Some((
                "4bf92f3577b34da6a3ce929d0e0e4736".into(),
                "00f067aa0ba902b7".into()
            ))
        );
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
