//! Counters for `/metrics` (Prometheus text format), named `spur_<noun>_<verb>_total`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// A process-wide counter.
pub struct Counter(AtomicU64);

impl Counter {
    const fn new() -> Self {
        Self(AtomicU64::new(0))
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

pub static EVENTS_ACCEPTED: Counter = Counter::new();
pub static EVENTS_DUPLICATE: Counter = Counter::new();
pub static EVENTS_REJECTED: Counter = Counter::new();
pub static RUNS_OK: Counter = Counter::new();
pub static RUNS_SKIPPED: Counter = Counter::new();
pub static RUNS_FAILED: Counter = Counter::new();
pub static RUNS_RETRYING: Counter = Counter::new();
pub static RUNS_DEAD: Counter = Counter::new();
pub static RUNS_WAITING: Counter = Counter::new();

/// Counts a finished run by status.
pub fn count_run(status: crate::run::RunStatus) {
    use crate::run::RunStatus as S;
    match status {
        S::Ok => RUNS_OK.add(1),
        S::Skipped => RUNS_SKIPPED.add(1),
        S::Failed => RUNS_FAILED.add(1),
        S::Retrying => RUNS_RETRYING.add(1),
        S::Dead => RUNS_DEAD.add(1),
        S::Waiting => RUNS_WAITING.add(1),
    }
}

/// Renders every metric; `gauges` are point-in-time values from the caller.
pub fn render(gauges: &[(&str, &str, u64)]) -> String {
    let mut out = String::new();
    let mut counter = |name: &str, help: &str, labels: &[(&str, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (label, v) in labels {
            if label.is_empty() {
                let _ = writeln!(out, "{name} {v}");
            } else {
                let _ = writeln!(out, "{name}{{{label}}} {v}");
            }
        }
    };
    counter(
        "spur_events_received_total",
        "Events received, by outcome.",
        &[
            ("outcome=\"accepted\"", EVENTS_ACCEPTED.get()),
            ("outcome=\"duplicate\"", EVENTS_DUPLICATE.get()),
            ("outcome=\"rejected\"", EVENTS_REJECTED.get()),
        ],
    );
    counter(
        "spur_runs_finished_total",
        "Handler runs finished, by status.",
        &[
            ("status=\"ok\"", RUNS_OK.get()),
            ("status=\"skipped\"", RUNS_SKIPPED.get()),
            ("status=\"failed\"", RUNS_FAILED.get()),
            ("status=\"retrying\"", RUNS_RETRYING.get()),
            ("status=\"dead\"", RUNS_DEAD.get()),
            ("status=\"waiting\"", RUNS_WAITING.get()),
        ],
    );
    for (name, help, v) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    }
    out
}
