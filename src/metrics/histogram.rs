//! A fixed-bucket histogram of durations: lock-free to observe, rendered in the
//! Prometheus format, and quantiles estimated between two snapshots (the
//! console's p50/p99), the way Prometheus' `histogram_quantile` does.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the buckets, in seconds (the last bucket is `+Inf`).
pub(crate) const BOUNDS: [f64; 16] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// Observations per bucket (not cumulative) and their sum.
#[derive(Debug, Default)]
pub(crate) struct Histogram {
    buckets: [AtomicU64; BOUNDS.len() + 1],
    sum_us: AtomicU64,
}

/// A point-in-time copy: counts per bucket (not cumulative).
pub(crate) type Snapshot = [u64; BOUNDS.len() + 1];

impl Histogram {
    /// Records one duration given in milliseconds.
    pub(crate) fn observe_ms(&self, ms: f64) {
        let secs = (ms / 1000.0).max(0.0);
        let i = BOUNDS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BOUNDS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add((ms * 1000.0).max(0.0) as u64, Ordering::Relaxed);
    }

    /// Records the time since `start`.
    pub(crate) fn observe_since(&self, start: std::time::Instant) {
        self.observe_ms(start.elapsed().as_secs_f64() * 1000.0);
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed))
    }

    /// Writes `NAME_bucket{le=…}`, `NAME_sum` and `NAME_count`.
    pub(crate) fn render(&self, out: &mut String, name: &str, labels: &str) {
        let counts = self.snapshot();
        let sep = if labels.is_empty() { "" } else { "," };
        let mut total = 0;
        for (i, n) in counts.iter().enumerate() {
            total += n;
            let le = BOUNDS
                .get(i)
                .map_or_else(|| "+Inf".to_owned(), f64::to_string);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {total}");
        }
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {total}");
    }
}

/// The `q` quantile (0–1) in seconds of the observations between snapshot
/// `before` and `after`, interpolated linearly within its bucket; `None` when
/// there were none. Observations past the last bound count as the last bound.
pub(crate) fn quantile(q: f64, before: &Snapshot, after: &Snapshot) -> Option<f64> {
    let counts: Vec<u64> = after
        .iter()
        .zip(before)
        .map(|(a, b)| a.saturating_sub(*b))
        .collect();
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut seen = 0.0;
    for (i, n) in counts.iter().enumerate() {
        let n = *n as f64;
        if n > 0.0 && seen + n >= rank {
            let lower = if i == 0 { 0.0 } else { BOUNDS[i - 1] };
            let Some(upper) = BOUNDS.get(i) else {
                return Some(lower);
            };
            return Some(lower + (upper - lower) * ((rank - seen) / n));
        }
        seen += n;
    }
    Some(BOUNDS[BOUNDS.len() - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_within_the_bucket_of_their_rank() {
        let h = Histogram::default();
        let before = h.snapshot();
        assert_eq!(quantile(0.5, &before, &h.snapshot()), None);
        for _ in 0..99 {
            h.observe_ms(3.0); // the (0.0025, 0.005] bucket
        }
        h.observe_ms(20_000.0); // the (10, 30] bucket
        let after = h.snapshot();
        let p50 = quantile(0.5, &before, &after).unwrap();
        assert!((0.0025..=0.005).contains(&p50), "{p50}");
        let p999 = quantile(0.999, &before, &after).unwrap();
        assert!((10.0..=30.0).contains(&p999), "{p999}");
        // Only what happened between the snapshots counts.
        assert_eq!(quantile(0.5, &after, &after), None);
    }

    #[test]
    fn renders_cumulative_buckets_sum_and_count() {
        let h = Histogram::default();
        h.observe_ms(0.2);
        h.observe_ms(70_000.0);
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "");
        assert!(out.contains("x_seconds_bucket{le=\"0.0005\"} 1\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"60\"} 1\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"+Inf\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_sum 70.0002\n"), "{out}");
        assert!(out.contains("x_seconds_count 2\n"), "{out}");
    }
}
