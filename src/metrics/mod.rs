//! What `/metrics` shows (Prometheus text format) and what the console's charts
//! draw (`history.rs`). One [`Metrics`] per daemon, shared by ingest, workers and
//! the admin API; every update is a few relaxed atomic adds.
//!
//! Names follow Prometheus conventions: `spur_<noun>_<verb>_total` for counters,
//! `_seconds` histograms, base units.

mod histogram;
pub(crate) mod history;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

pub(crate) use histogram::Histogram;
pub(crate) use history::History;

use crate::run::RunStatus;

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    pub(crate) fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

pub(crate) const STATUSES: [RunStatus; 6] = [
    RunStatus::Ok,
    RunStatus::Skipped,
    RunStatus::Failed,
    RunStatus::Retrying,
    RunStatus::Dead,
    RunStatus::Waiting,
];

/// The daemon's counters and histograms.
#[derive(Debug, Default)]
pub struct Metrics {
    events_accepted: Counter,
    events_duplicate: Counter,
    events_rejected: Counter,
    requests_shed: Counter,
    runs: [Counter; 6],
    /// Ingest requests, from the first byte of the request to the answer.
    pub(crate) ingest_seconds: Histogram,
    /// A run's execution, from lease to settle.
    pub(crate) run_seconds: Histogram,
    /// A run's whole latency: queued (ready to run) until finished.
    pub(crate) run_latency_seconds: Histogram,
    /// Outbound calls by (connection, status class); bounded by the configured
    /// connections (`none` for a call without one).
    calls: Mutex<BTreeMap<(String, &'static str), u64>>,
}

/// What the caller reads at render time (gauges, and counters kept elsewhere).
pub(crate) struct Gauges {
    pub queued: u64,
    pub delayed: u64,
    pub running: u64,
    /// Parked runs by wait kind (`approval`, `sleep`, `event`).
    pub parked: Vec<(&'static str, u64)>,
    pub dead_letters: u64,
    pub outbox: u64,
    pub store_bytes: u64,
    /// Trace spans dropped (export queue full, collector failing).
    pub spans_dropped: u64,
}

/// The status class of an outbound call: `2xx` … `5xx`, or `error` when no
/// answer came.
fn status_class(status: Option<u16>) -> &'static str {
    match status {
        Some(100..=199) => "1xx",
        Some(200..=299) => "2xx",
        Some(300..=399) => "3xx",
        Some(400..=499) => "4xx",
        Some(_) => "5xx",
        None => "error",
    }
}

impl Metrics {
    /// Counts the outcome of one ingest request.
    pub(crate) fn count_ingest(&self, accepted: usize, duplicates: usize, rejected: usize) {
        self.events_accepted.add(accepted as u64);
        self.events_duplicate.add(duplicates as u64);
        self.events_rejected.add(rejected as u64);
    }

    /// Counts an ingest request refused with 503 because the daemon was at capacity.
    pub(crate) fn count_shed(&self) {
        self.requests_shed.add(1);
    }

    fn runs(&self, status: RunStatus) -> Option<&Counter> {
        let i = STATUSES.iter().position(|s| *s == status)?;
        Some(&self.runs[i])
    }

    /// Counts a finished run: its status, durations and outbound calls.
    pub(crate) fn count_run(&self, record: &crate::run::RunRecord) {
        if let Some(c) = self.runs(record.status) {
            c.add(1);
        }
        self.run_seconds.observe_ms(record.duration_ms);
        self.run_latency_seconds
            .observe_ms(record.duration_ms + record.queued_ms);
        if record.calls.is_empty() {
            return;
        }
        let mut calls = self.calls.lock();
        for c in record.calls.iter().filter(|c| !c.dry_run) {
            let connection = c.connection.clone().unwrap_or_else(|| "none".into());
            *calls
                .entry((connection, status_class(c.status)))
                .or_default() += 1;
        }
    }

    /// Runs finished with `status` since the start.
    pub fn runs_finished(&self, status: RunStatus) -> u64 {
        self.runs(status).map_or(0, Counter::get)
    }

    /// Events accepted since the start.
    pub(crate) fn events_accepted(&self) -> u64 {
        self.events_accepted.get()
    }

    /// Renders every metric.
    pub(crate) fn render(&self, g: &Gauges) -> String {
        let mut out = String::new();
        self.render_counters(&mut out);
        self.render_histograms(&mut out);
        render_gauges(&mut out, g);
        out
    }

    fn render_counters(&self, out: &mut String) {
        let events = [
            ("accepted", &self.events_accepted),
            ("duplicate", &self.events_duplicate),
            ("rejected", &self.events_rejected),
        ];
        let calls = self.calls.lock().clone();
        // (name, help, [(labels, value)]) of every counter.
        let counters: [Family; 4] = [
            (
                "spur_events_received_total",
                "Events received, by outcome (duplicate: a messageId seen within the dedup window).",
                events
                    .iter()
                    .map(|(o, c)| (format!("outcome=\"{o}\""), c.get()))
                    .collect(),
            ),
            (
                "spur_dedup_hits_total",
                "Events dropped as duplicates of a messageId already accepted.",
                vec![(String::new(), self.events_duplicate.get())],
            ),
            (
                "spur_ingest_shed_total",
                "Ingest requests answered 503 at capacity.",
                vec![(String::new(), self.requests_shed.get())],
            ),
            (
                "spur_runs_finished_total",
                "Handler runs finished, by status.",
                STATUSES
                    .iter()
                    .zip(&self.runs)
                    .map(|(s, c)| (format!("status=\"{}\"", s.as_str()), c.get()))
                    .collect(),
            ),
        ];
        for (name, help, values) in counters {
            head(out, name, "counter", help);
            for (labels, v) in values {
                let labels = if labels.is_empty() {
                    labels
                } else {
                    format!("{{{labels}}}")
                };
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        }
        head(
            out,
            "spur_connector_calls_total",
            "counter",
            "Outbound calls, by connection and status class (error: no answer).",
        );
        for ((connection, class), n) in &calls {
            let _ = writeln!(
                out,
                "spur_connector_calls_total{{connection=\"{}\",class=\"{class}\"}} {n}",
                label(connection)
            );
        }
    }

    fn render_histograms(&self, out: &mut String) {
        for (name, help, h) in [
            (
                "spur_ingest_request_duration_seconds",
                "Ingest requests, from arrival to answer (durable when 200).",
                &self.ingest_seconds,
            ),
            (
                "spur_run_duration_seconds",
                "Handler runs' execution time, per attempt.",
                &self.run_seconds,
            ),
            (
                "spur_run_latency_seconds",
                "Handler runs from ready to run until finished (queue delay plus execution).",
                &self.run_latency_seconds,
            ),
        ] {
            head(out, name, "histogram", help);
            h.render(out, name, "");
        }
    }
}

/// A counter family: name, help, and each labelled value.
type Family = (&'static str, &'static str, Vec<(String, u64)>);

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn render_gauges(out: &mut String, g: &Gauges) {
    head(
        out,
        "spur_trace_spans_dropped_total",
        "counter",
        "Trace spans not exported (the export queue was full or the collector failed).",
    );
    let _ = writeln!(out, "spur_trace_spans_dropped_total {}", g.spans_dropped);
    head(
        out,
        "spur_runs_parked",
        "gauge",
        "Runs parked now, by what they wait for.",
    );
    for (kind, n) in &g.parked {
        let _ = writeln!(out, "spur_runs_parked{{kind=\"{kind}\"}} {n}");
    }
    for (name, help, v) in [
        ("spur_jobs_queued", "Jobs ready to run.", g.queued),
        ("spur_jobs_delayed", "Jobs waiting for a retry.", g.delayed),
        ("spur_jobs_running", "Jobs running now.", g.running),
        ("spur_dead_letters", "Dead letters kept.", g.dead_letters),
        (
            "spur_outbox_depth",
            "Messages written back to Segment and not yet delivered.",
            g.outbox,
        ),
        (
            "spur_store_bytes",
            "Bytes the store occupies on disk.",
            g.store_bytes,
        ),
    ] {
        head(out, name, "gauge", help);
        let _ = writeln!(out, "{name} {v}");
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
