//! The in-memory run order: which leased job a worker gets next.
//!
//! Invariants (DESIGN.md §7):
//! - jobs of one user start in the order they were pushed, and at most one of a
//!   user's jobs is running at a time;
//! - different users run in parallel; jobs without a user run as soon as a worker
//!   is free;
//! - a job delayed by backoff waits in `delayed`, not in its user's line, so it does
//!   not hold up the user's next job.
//!
//! Workers are OS threads; they block on a condvar, woken by pushes and by the
//! next delayed job's due time on the clock (a manual clock wakes them when it is
//! advanced).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use super::job::Lease;
use crate::clock::SharedClock;

pub(crate) struct Scheduler {
    shared: Arc<Shared>,
    clock: SharedClock,
}

struct Shared {
    inner: Mutex<Inner>,
    wake: Condvar,
}

#[derive(Default)]
struct Inner {
    lines: HashMap<Arc<str>, VecDeque<Lease>>,
    running: HashSet<Arc<str>>,
    ready: VecDeque<Arc<str>>,
    free: VecDeque<Lease>,
    delayed: BinaryHeap<Reverse<(i64, u64)>>,
    delayed_jobs: HashMap<u64, Lease>,
    prefer_free: bool,
    shutdown: bool,
    in_flight: usize,
}

/// Counts for `/metrics` and tests.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct SchedulerStats {
    pub queued: usize,
    pub delayed: usize,
    pub running: usize,
}

impl Scheduler {
    pub(crate) fn new(clock: SharedClock) -> Self {
        let shared = Arc::new(Shared {
            inner: Mutex::default(),
            wake: Condvar::new(),
        });
        let weak = Arc::downgrade(&shared);
        clock.on_advance(Box::new(move || {
            if let Some(s) = weak.upgrade() {
                // Under the lock: a worker is either before its look at the clock
                // or already waiting, never in between (no lost wake-up).
                let _held = s.inner.lock();
                s.wake.notify_all();
            }
        }));
        Self { shared, clock }
    }

    pub(crate) fn push_all(&self, leases: impl IntoIterator<Item = Lease>) {
        let now = self.clock.now_ms();
        let mut n = 0;
        {
            let mut inner = self.shared.inner.lock();
            for lease in leases {
                inner.push(lease, now);
                n += 1;
            }
        }
        match n {
            0 => {}
            1 => {
                self.shared.wake.notify_one();
            }
            _ => {
                self.shared.wake.notify_all();
            }
        }
    }

    /// Queues `lease` to run next — before its user's queued jobs — on a job whose
    /// execution has to be repeated (its commit lost to another node's change).
    /// Called while its user's line is held (by the execution that ends), which
    /// [`Scheduler::done`] then frees.
    pub(crate) fn push_front(&self, lease: Lease) {
        let mut inner = self.shared.inner.lock();
        match lease.job.user.as_deref() {
            None => inner.free.push_front(lease),
            Some(user) => {
                let key = match inner.lines.get_key_value(user) {
                    Some((k, _)) => Arc::clone(k),
                    None => Arc::from(user),
                };
                let line = inner.lines.entry(Arc::clone(&key)).or_default();
                line.push_front(lease);
                if line.len() == 1 && !inner.running.contains(&key) {
                    inner.ready.push_back(key);
                }
            }
        }
        drop(inner);
        self.shared.wake.notify_one();
    }

    /// Blocks until a job is ready; `None` once shut down.
    pub(crate) fn lease(&self) -> Option<Lease> {
        let mut inner = self.shared.inner.lock();
        loop {
            if inner.shutdown {
                return None;
            }
            let now = self.clock.now_ms();
            inner.promote_due(now);
            if let Some(lease) = inner.take_next() {
                inner.in_flight += 1;
                return Some(lease);
            }
            let due = inner.delayed.peek().map(|Reverse((due, _))| *due);
            match due.and_then(|due| self.clock.blocking_wait(due)) {
                Some(wait) => {
                    self.shared
                        .wake
                        .wait_for(&mut inner, wait.max(std::time::Duration::from_millis(1)));
                }
                None => self.shared.wake.wait(&mut inner),
            }
        }
    }

    /// Marks a leased job finished, releasing its user's line.
    pub(crate) fn done(&self, user: Option<&str>) {
        let mut inner = self.shared.inner.lock();
        inner.in_flight = inner.in_flight.saturating_sub(1);
        if let Some(u) = user
            && let Some(key) = inner.running.take(u)
            && inner.lines.get(&key).is_some_and(|l| !l.is_empty())
        {
            inner.ready.push_back(key);
            drop(inner);
            self.shared.wake.notify_one();
        }
    }

    pub(crate) fn shutdown(&self) {
        self.shared.inner.lock().shutdown = true;
        self.shared.wake.notify_all();
    }

    pub(crate) fn stats(&self) -> SchedulerStats {
        let inner = self.shared.inner.lock();
        SchedulerStats {
            queued: inner.free.len() + inner.lines.values().map(VecDeque::len).sum::<usize>(),
            delayed: inner.delayed_jobs.len(),
            running: inner.in_flight,
        }
    }
}

impl Inner {
    fn push(&mut self, lease: Lease, now: i64) {
        if lease.job.not_before_ms > now {
            self.delayed
                .push(Reverse((lease.job.not_before_ms, lease.job.id)));
            self.delayed_jobs.insert(lease.job.id, lease);
        } else {
            self.route(lease);
        }
    }

    fn route(&mut self, lease: Lease) {
        let Some(user) = lease.job.user.as_deref() else {
            self.free.push_back(lease);
            return;
        };
        let key = match self.lines.get_key_value(user) {
            Some((k, _)) => Arc::clone(k),
            None => Arc::from(user),
        };
        let line = self.lines.entry(Arc::clone(&key)).or_default();
        line.push_back(lease);
        if line.len() == 1 && !self.running.contains(&key) {
            self.ready.push_back(key);
        }
    }

    fn promote_due(&mut self, now: i64) {
        while let Some(Reverse((due, id))) = self.delayed.peek().copied() {
            if due > now {
                break;
            }
            self.delayed.pop();
            if let Some(lease) = self.delayed_jobs.remove(&id) {
                self.route(lease);
            }
        }
    }

    fn take_next(&mut self) -> Option<Lease> {
        self.prefer_free = !self.prefer_free;
        if self.prefer_free
            && let Some(l) = self.free.pop_front()
        {
            return Some(l);
        }
        while let Some(user) = self.ready.pop_front() {
            let Some(line) = self.lines.get_mut(&user) else {
                continue;
            };
            let Some(lease) = line.pop_front() else {
                self.lines.remove(&user);
                continue;
            };
            if line.is_empty() {
                self.lines.remove(&user);
            }
            self.running.insert(user);
            return Some(lease);
        }
        self.free.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock as _, ManualClock, SystemClock};
    use crate::queue::job::{Job, Trigger};

    fn scheduler() -> Scheduler {
        Scheduler::new(Arc::new(SystemClock))
    }

    fn lease(id: u64, user: Option<&str>, not_before_ms: i64) -> Lease {
        Lease {
            job: Job {
                id,
                ..Job::new(
                    Trigger::Schedule {
                        schedule: "t".into(),
                        at_ms: 0,
                    },
                    "s".into(),
                    "h".into(),
                    user.map(str::to_owned),
                    not_before_ms,
                )
            },
            event: None,
        }
    }

    #[test]
    fn one_user_runs_in_order_and_never_overlaps() {
        let s = scheduler();
        s.push_all([
            lease(1, Some("u"), 0),
            lease(2, Some("u"), 0),
            lease(3, Some("v"), 0),
        ]);
        let a = s.lease().unwrap();
        let b = s.lease().unwrap();
        assert_eq!(
            (a.job.id, b.job.id),
            (1, 3),
            "u's second job waits for its first"
        );
        assert_eq!(s.stats().queued, 1);
        s.done(Some("u"));
        assert_eq!(s.lease().unwrap().job.id, 2);
    }

    #[test]
    fn delayed_job_does_not_block_the_users_next_job() {
        let s = scheduler();
        s.push_all([
            lease(1, Some("u"), SystemClock.now_ms() + 60_000),
            lease(2, Some("u"), 0),
        ]);
        assert_eq!(s.lease().unwrap().job.id, 2);
        assert_eq!(s.stats().delayed, 1);
    }

    #[test]
    fn due_delayed_job_is_promoted_without_a_push() {
        let s = Arc::new(scheduler());
        s.push_all([lease(7, None, SystemClock.now_ms() + 30)]);
        let got = s.lease().unwrap();
        assert_eq!(got.job.id, 7);
    }

    #[test]
    fn on_a_manual_clock_a_delayed_job_waits_until_the_clock_is_advanced() {
        let clock = ManualClock::starting_now();
        let s = Arc::new(Scheduler::new(clock.clone()));
        s.push_all([lease(9, None, clock.now_ms() + 60_000)]);
        let s2 = Arc::clone(&s);
        let worker = std::thread::spawn(move || s2.lease().map(|l| l.job.id));
        assert_eq!(s.stats().delayed, 1);
        clock.advance(std::time::Duration::from_secs(61));
        assert_eq!(worker.join().unwrap(), Some(9));
    }

    #[test]
    fn shutdown_wakes_waiting_workers() {
        let s = Arc::new(scheduler());
        let s2 = Arc::clone(&s);
        let t = std::thread::spawn(move || s2.lease().is_none());
        s.shutdown();
        assert!(t.join().unwrap());
    }
}
