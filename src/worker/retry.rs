//! Backoff between attempts of a failed run: exponential (x3.5) from `base_ms`,
//! capped at `max_ms`, with ±20 % jitter. With the defaults (8 attempts, 1 s, 15 min)
//! the attempts spread over about 27 minutes.

use crate::config::RetryConfig;

/// When to try again, and when to stop.
#[derive(Debug, Clone)]
pub(crate) struct RetryPolicy {
    pub max_attempts: u32,
    pub base_ms: u64,
    pub max_ms: u64,
}

impl From<&RetryConfig> for RetryPolicy {
    fn from(c: &RetryConfig) -> Self {
        Self {
            max_attempts: c.max_attempts,
            base_ms: c.base_ms,
            max_ms: c.max_ms,
        }
    }
}

impl RetryPolicy {
    /// Whether a run that just made its `attempt`-th attempt (1-based) may retry.
    pub(crate) fn allows_another(&self, attempt: u32) -> bool {
        attempt < self.max_attempts
    }

    /// The delay after the `attempt`-th attempt (1-based), jittered.
    pub(crate) fn delay_ms(&self, attempt: u32) -> u64 {
        let exp = 3.5f64.powi(attempt.saturating_sub(1).min(30) as i32);
        let raw = (self.base_ms as f64 * exp).min(self.max_ms as f64);
        let jitter = rand::random_range(0.8..=1.2);
        (raw * jitter) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_caps() {
        let p = RetryPolicy {
            max_attempts: 8,
            base_ms: 1000,
            max_ms: 900_000,
        };
        assert!((800..=1200).contains(&p.delay_ms(1)));
        assert!((2800..=4200).contains(&p.delay_ms(2)));
        assert!(p.delay_ms(20) <= 1_080_000);
        let total: u64 = (1..8).map(|a| p.delay_ms(a)).sum();
        assert!((1_200_000..2_100_000).contains(&total), "{total}");
        assert!(p.allows_another(7) && !p.allows_another(8));
    }
}
