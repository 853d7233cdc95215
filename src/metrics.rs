//! Counters for `/metrics` (Prometheus text format), named `spur_<noun>_<verb>_total`.
//! One [`Metrics`] per daemon, shared by ingest, workers and the admin API.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

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

const STATUSES: [RunStatus; 6] = [
    RunStatus::Ok,
    RunStatus::Skipped,
    RunStatus::Failed,
    RunStatus::Retrying,
    RunStatus::Dead,
    RunStatus::Waiting,
];

/// The daemon's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    events_accepted: Counter,
    events_duplicate: Counter,
    events_rejected: Counter,
    requests_shed: Counter,
    runs: [Counter; 6],
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

    /// Counts a finished run by status.
    pub(crate) fn count_run(&self, status: RunStatus) {
        if let Some(c) = self.runs(status) {
            c.add(1);
        }
    }

    /// Runs finished with `status` since the start.
    pub fn runs_finished(&self, status: RunStatus) -> u64 {
        self.runs(status).map_or(0, Counter::get)
    }

    /// Renders every metric; `gauges` are point-in-time values from the caller.
    pub(crate) fn render(&self, gauges: &[(&str, &str, u64)]) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP spur_events_received_total Events received, by outcome.\n# TYPE spur_events_received_total counter"
        );
        for (outcome, c) in [
            ("accepted", &self.events_accepted),
            ("duplicate", &self.events_duplicate),
            ("rejected", &self.events_rejected),
        ] {
            let _ = writeln!(
                out,
                "spur_events_received_total{{outcome=\"{outcome}\"}} {}",
                c.get()
            );
        }
        let _ = writeln!(
            out,
            "# HELP spur_ingest_shed_total Ingest requests answered 503 at capacity.\n# TYPE spur_ingest_shed_total counter\nspur_ingest_shed_total {}",
            self.requests_shed.get()
        );
        let _ = writeln!(
            out,
            "# HELP spur_runs_finished_total Handler runs finished, by status.\n# TYPE spur_runs_finished_total counter"
        );
        for (status, c) in STATUSES.iter().zip(&self.runs) {
            let _ = writeln!(
                out,
                "spur_runs_finished_total{{status=\"{}\"}} {}",
                status.as_str(),
                c.get()
            );
        }
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        out
    }
}
