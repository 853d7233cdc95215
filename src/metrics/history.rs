//! The last hour of the daemon's metrics, for the console's charts: a sample
//! of the counters every ten seconds, and rates and latency quantiles computed
//! between consecutive samples. The newest point is always live (now against the
//! last sample), so a chart moves as soon as traffic does.

use std::collections::VecDeque;

use parking_lot::Mutex;
use serde_json::{Value, json};

use super::histogram::{Snapshot, quantile};
use super::{Metrics, STATUSES};

/// Seconds between samples.
pub(crate) const INTERVAL_S: u64 = 10;
/// Samples kept: one hour.
const KEEP: usize = 360;

/// The counters at one moment.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    pub t_ms: i64,
    events: u64,
    runs: [u64; 6],
    queued: u64,
    parked: u64,
    latency: Snapshot,
}

impl Metrics {
    /// A sample of the counters now, with the gauges the caller read.
    pub(crate) fn sample(&self, t_ms: i64, queued: u64, parked: u64) -> Sample {
        Sample {
            t_ms,
            events: self.events_accepted(),
            runs: std::array::from_fn(|i| self.runs[i].get()),
            queued,
            parked,
            latency: self.run_latency_seconds.snapshot(),
        }
    }
}

/// The samples of the last hour.
#[derive(Debug, Default)]
pub(crate) struct History {
    samples: Mutex<VecDeque<Sample>>,
}

impl History {
    pub(crate) fn record(&self, s: Sample) {
        let mut samples = self.samples.lock();
        if samples.len() == KEEP {
            samples.pop_front();
        }
        samples.push_back(s);
    }

    /// `{"interval_s", "points": [{t0, t, events_per_s, runs_per_s: {status: n}, queued,
    /// parked, p50_ms, p99_ms}]}`, oldest first, the last point ending at `now`.
    pub(crate) fn series(&self, now: Sample) -> Value {
        let samples = self.samples.lock();
        let mut points = Vec::with_capacity(samples.len() + 1);
        let mut prev: Option<&Sample> = None;
        for s in samples.iter().chain(std::iter::once(&now)) {
            if let Some(p) = prev {
                points.push(point(p, s));
            }
            prev = Some(s);
        }
        json!({ "interval_s": INTERVAL_S, "points": points })
    }
}

fn point(a: &Sample, b: &Sample) -> Value {
    let secs = ((b.t_ms - a.t_ms) as f64 / 1000.0).max(0.001);
    let rate = |x: u64, y: u64| (y.saturating_sub(x) as f64 / secs * 100.0).round() / 100.0;
    let runs: serde_json::Map<String, Value> = STATUSES
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str().to_owned(), json!(rate(a.runs[i], b.runs[i]))))
        .collect();
    let ms = |q| quantile(q, &a.latency, &b.latency).map(|s| (s * 1e5).round() / 100.0);
    json!({
        "t0": a.t_ms,
        "t": b.t_ms,
        "events_per_s": rate(a.events, b.events),
        "runs_per_s": runs,
        "queued": b.queued,
        "parked": b.parked,
        "p50_ms": ms(0.5),
        "p99_ms": ms(0.99),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::{RunRecord, RunStatus};

    #[test]
    fn points_are_rates_between_samples_and_the_last_is_live() {
        let m = Metrics::default();
        let h = History::default();
        h.record(m.sample(0, 0, 0));
        m.count_ingest(50, 0, 0);
        h.record(m.sample(10_000, 3, 1));
        m.count_ingest(20, 0, 0);
        let mut r: RunRecord = serde_json::from_value(json!({
            "id": 1, "job_id": 1, "trigger": "event", "script": "s", "handler": "h",
            "attempt": 1, "status": "failed", "started_at": "", "finished_at": "",
            "duration_ms": 4.0, "queued_ms": 1.0, "logs": [], "calls": [],
        }))
        .unwrap();
        r.status = RunStatus::Failed;
        m.count_run(&r);
        let series = h.series(m.sample(12_000, 0, 2));
        let points = series["points"].as_array().unwrap();
        assert_eq!(points.len(), 2);
        assert_eq!(points[0]["events_per_s"], json!(5.0));
        assert_eq!(points[0]["p50_ms"], Value::Null, "no runs, no latency");
        assert_eq!(points[1]["events_per_s"], json!(10.0));
        assert_eq!(points[1]["runs_per_s"]["failed"], json!(0.5));
        assert_eq!(points[1]["parked"], json!(2));
        let p50 = points[1]["p50_ms"].as_f64().unwrap();
        assert!((2.5..=5.0).contains(&p50), "{p50}");
    }
}
