//! Time, injected: every part that reads the time or waits for it (the queue's
//! delayed jobs, timers of parked runs, schedules, state TTLs, retries, approvals,
//! run records, `time::now()`) asks a [`Clock`]. The daemon uses [`SystemClock`];
//! tests and `spur test` use a [`ManualClock`] that only moves when told to, so
//! retries, sleeps, schedules and TTLs are tested by advancing time, never by
//! waiting.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;

/// A source of the current time, and of wake-ups when it passes a moment.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;

    /// Resolves once the clock reads `at_ms` or later.
    fn sleep_until(&self, at_ms: i64) -> Pin<Box<dyn Future<Output = ()> + Send>>;

    /// How long a blocking thread may sleep before looking at the clock again when it
    /// waits for `at_ms`: the real remaining time for the system clock; for a manual
    /// clock there is no point sleeping on wall time (it wakes the thread through
    /// [`Clock::on_advance`]), so `None`.
    fn blocking_wait(&self, at_ms: i64) -> Option<Duration>;

    /// Calls `wake` whenever the clock jumps forward (never, for the system clock,
    /// whose time passes on its own).
    fn on_advance(&self, wake: Box<dyn Fn() + Send + Sync>);

    fn now(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.now_ms()).unwrap_or_default()
    }
}

/// The shared handle every part holds.
pub(crate) type SharedClock = Arc<dyn Clock>;

/// The machine's clock.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        Utc::now().timestamp_millis()
    }

    fn sleep_until(&self, at_ms: i64) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let wait = self.blocking_wait(at_ms).unwrap_or_default();
        Box::pin(tokio::time::sleep(wait))
    }

    fn blocking_wait(&self, at_ms: i64) -> Option<Duration> {
        let ms = at_ms.saturating_sub(self.now_ms()).max(0);
        Some(Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
    }

    fn on_advance(&self, _wake: Box<dyn Fn() + Send + Sync>) {}
}

/// A clock that moves only when [`ManualClock::advance`] or [`ManualClock::set`]
/// is called.
pub struct ManualClock {
    ms: AtomicI64,
    moved: tokio::sync::watch::Sender<i64>,
    listeners: Mutex<Vec<Box<dyn Fn() + Send + Sync>>>,
}

impl ManualClock {
    /// A clock reading `at`.
    pub fn at(at: DateTime<Utc>) -> Arc<Self> {
        let ms = at.timestamp_millis();
        Arc::new(Self {
            ms: AtomicI64::new(ms),
            moved: tokio::sync::watch::channel(ms).0,
            listeners: Mutex::new(Vec::new()),
        })
    }

    /// A clock reading the current system time, from then on moved by hand.
    #[cfg(test)]
    pub(crate) fn starting_now() -> Arc<Self> {
        Self::at(Utc::now())
    }

    /// Moves the clock forward by `by`, waking everything that waits for a moment it
    /// now passed.
    pub fn advance(&self, by: Duration) {
        let by = crate::duration::as_ms(by);
        self.set_ms(self.now_ms().saturating_add(by));
    }

    /// Sets the clock to `at_ms` (a test may also set it back).
    pub fn set_ms(&self, at_ms: i64) {
        self.ms.store(at_ms, Ordering::Release);
        self.moved.send_replace(at_ms);
        for wake in self.listeners.lock().iter() {
            wake();
        }
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.ms.load(Ordering::Acquire)
    }

    fn sleep_until(&self, at_ms: i64) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let mut moved = self.moved.subscribe();
        Box::pin(async move {
            // The sender lives as long as the clock; if it is gone, nothing will
            // ever move it again.
            let _ = moved.wait_for(|ms| *ms >= at_ms).await;
        })
    }

    fn blocking_wait(&self, _at_ms: i64) -> Option<Duration> {
        None
    }

    fn on_advance(&self, wake: Box<dyn Fn() + Send + Sync>) {
        self.listeners.lock().push(wake);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_clock_wakes_sleepers_only_when_advanced_past_their_time() {
        let clock = ManualClock::at(DateTime::from_timestamp_millis(1_000).unwrap());
        let woke = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (c, w) = (Arc::clone(&clock), Arc::clone(&woke));
        let sleeper = tokio::spawn(async move {
            c.sleep_until(61_000).await;
            w.store(true, Ordering::SeqCst);
        });
        tokio::task::yield_now().await;
        clock.advance(Duration::from_secs(30));
        tokio::task::yield_now().await;
        assert!(!woke.load(Ordering::SeqCst));
        clock.advance(Duration::from_secs(30));
        sleeper.await.unwrap();
        assert!(woke.load(Ordering::SeqCst));
        assert_eq!(clock.now_ms(), 61_000);
    }
}
