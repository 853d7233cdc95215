//! Schedules: each `every(expr, fn)` handler fires jobs on the queue at its cron
//! times (DESIGN.md §5), with the same retries and run records as events (trigger
//! `schedule`, the tick's scheduled time passed to the handler).
//!
//! Invariants:
//! - Next-fire times persist in the queue ([`ScheduleState`]), keyed by script and
//!   handler key; a reload or restart keeps them for unchanged schedules.
//! - A tick's job and the schedule's new next-fire time are written in one atomic
//!   batch (`Queue::tick`): a tick never fires twice, also across kill -9.
//! - After downtime, missed ticks fire once (with the latest missed time), not once
//!   per missed tick — unless the schedule opted out (`#{ catch_up: false }`).
//!
//! Time is passed in (`poll(now)`), so tests drive it without waiting.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use parking_lot::RwLock;
use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::cron::Schedule;
use crate::event::format_time;
use crate::queue::{Job, Queue, QueueError, ScheduleState as State, Trigger};
use crate::script::{HandlerKind, Live, ScriptSet};

/// A tick later than this after its time is "missed" (downtime), not late.
const GRACE: TimeDelta = TimeDelta::seconds(5);

/// One schedule handler.
#[derive(Debug, Clone)]
struct Entry {
    script: String,
    handler: String,
    schedule: Schedule,
    catch_up: bool,
    next: Option<DateTime<Utc>>,
    last: Option<DateTime<Utc>>,
}

/// A schedule as `GET /api/schedules` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleInfo {
    pub script: String,
    pub handler: String,
    pub expr: String,
    pub tz: String,
    pub catch_up: bool,
    pub next_fire_at: Option<String>,
    pub last_fired_at: Option<String>,
}

/// A tick that was enqueued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired {
    pub script: String,
    pub handler: String,
    pub at: DateTime<Utc>,
    pub missed: bool,
}

/// Every schedule of the live scripts.
pub struct Schedules {
    queue: Queue,
    entries: Vec<Entry>,
    shown: Arc<RwLock<Vec<ScheduleInfo>>>,
}

impl Schedules {
    pub fn new(queue: Queue) -> Self {
        Self {
            queue,
            entries: Vec::new(),
            shown: Arc::default(),
        }
    }

    /// A live view for the admin API.
    pub(crate) fn view(&self) -> Arc<RwLock<Vec<ScheduleInfo>>> {
        Arc::clone(&self.shown)
    }

    /// Takes the schedule handlers of `set`; keeps the stored next-fire time of every
    /// schedule whose expression is unchanged, and forgets schedules that are gone.
    ///
    /// # Errors
    /// When the store fails.
    pub fn load(&mut self, set: &ScriptSet, now: DateTime<Utc>) -> Result<(), QueueError> {
        let mut stored_states = self.queue.schedule_states()?;
        let mut entries = Vec::new();
        let mut keep = std::collections::HashSet::new();
        for script in &set.scripts {
            for h in &script.handlers {
                let HandlerKind::Schedule(expr) = &h.kind else {
                    continue;
                };
                let Ok(schedule) = Schedule::parse(expr) else {
                    continue;
                };
                let catch_up = h
                    .options
                    .as_ref()
                    .and_then(|o| o.get("catch_up"))
                    .and_then(Value::as_bool)
                    .unwrap_or(true);
                let key = (script.name.clone(), h.key.clone());
                let stored = stored_states.remove(&key);
                keep.insert(key);
                let (next, last) = match stored {
                    Some(s) if s.expr == *expr => (
                        DateTime::from_timestamp_millis(s.next_ms),
                        s.last_ms.and_then(DateTime::from_timestamp_millis),
                    ),
                    _ => {
                        let next = schedule.next_after(now);
                        let state = State {
                            expr: expr.clone(),
                            next_ms: next.map_or(i64::MAX, |t| t.timestamp_millis()),
                            last_ms: None,
                        };
                        self.queue
                            .put_schedule_state(&script.name, &h.key, &state)?;
                        (next, None)
                    }
                };
                entries.push(Entry {
                    script: script.name.clone(),
                    handler: h.key.clone(),
                    schedule,
                    catch_up,
                    next,
                    last,
                });
            }
        }
        for (script, handler) in stored_states.into_keys() {
            if !keep.contains(&(script.clone(), handler.clone())) {
                self.queue.remove_schedule_state(&script, &handler)?;
            }
        }
        self.entries = entries;
        self.publish();
        Ok(())
    }

    /// When the next tick is due.
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        self.entries.iter().filter_map(|e| e.next).min()
    }

    /// Fires every tick due at `now`: at most one per schedule, however many were
    /// missed.
    ///
    /// # Errors
    /// When the queue fails (the schedule stays due and fires at the next poll).
    pub async fn poll(&mut self, now: DateTime<Utc>) -> Result<Vec<Fired>, QueueError> {
        let mut fired = Vec::new();
        for i in 0..self.entries.len() {
            let e = &self.entries[i];
            let Some(next) = e.next.filter(|n| *n <= now) else {
                continue;
            };
            let latest = latest_at_or_before(&e.schedule, next, now);
            let missed = latest > next || now - next > GRACE;
            let fire = !missed || e.catch_up;
            let new_next = e.schedule.next_after(now);
            let state = State {
                expr: e.schedule.expr().to_owned(),
                next_ms: new_next.map_or(i64::MAX, |t| t.timestamp_millis()),
                last_ms: if fire {
                    Some(latest.timestamp_millis())
                } else {
                    e.last.map(|t| t.timestamp_millis())
                },
            };
            if fire {
                let trigger = Trigger::Schedule {
                    schedule: e.schedule.expr().to_owned(),
                    at_ms: latest.timestamp_millis(),
                };
                // Due now: the tick's own time is in the trigger.
                let job = Job::new(trigger, e.script.clone(), e.handler.clone(), None, 0);
                self.queue
                    .tick(&e.script, &e.handler, Some(job), &state)
                    .await?;
                fired.push(Fired {
                    script: e.script.clone(),
                    handler: e.handler.clone(),
                    at: latest,
                    missed,
                });
            } else {
                self.queue
                    .put_schedule_state(&e.script, &e.handler, &state)?;
                tracing::info!(script = %e.script, handler = %e.handler, "Skipped missed ticks (catch_up: false).");
            }
            let e = &mut self.entries[i];
            e.next = new_next;
            if fire {
                e.last = Some(latest);
            }
        }
        if !fired.is_empty() {
            self.publish();
        }
        Ok(fired)
    }

    fn publish(&self) {
        let shown = self
            .entries
            .iter()
            .map(|e| ScheduleInfo {
                script: e.script.clone(),
                handler: e.handler.clone(),
                expr: e.schedule.expr().to_owned(),
                tz: e.schedule.tz().name().to_owned(),
                catch_up: e.catch_up,
                next_fire_at: e.next.map(format_time),
                last_fired_at: e.last.map(format_time),
            })
            .collect();
        *self.shown.write() = shown;
    }
}

/// The latest tick at or before `now`, given that `first` (≤ `now`) is a tick.
/// Looks back in widening windows so a long downtime does not mean walking every
/// missed tick of a per-second schedule.
fn latest_at_or_before(
    schedule: &Schedule,
    first: DateTime<Utc>,
    now: DateTime<Utc>,
) -> DateTime<Utc> {
    for window in [
        TimeDelta::minutes(2),
        TimeDelta::hours(2),
        TimeDelta::days(2),
        TimeDelta::days(800),
    ] {
        let start = (now - window).max(first);
        let mut latest = None;
        let mut t = start - TimeDelta::seconds(1);
        for _ in 0..200_000 {
            match schedule.next_after(t) {
                Some(n) if n <= now => {
                    latest = Some(n);
                    t = n;
                }
                _ => break,
            }
        }
        if let Some(l) = latest {
            return l.max(first);
        }
    }
    first
}

/// Fires schedules on time (by the queue's clock) until `stop`; reloads the list
/// when the scripts change.
pub(crate) async fn run(mut schedules: Schedules, live: Arc<Live>, stop: CancellationToken) {
    let mut reloads = live.subscribe();
    let clock = Arc::clone(schedules.queue.clock());
    loop {
        match schedules.poll(clock.now()).await {
            Ok(fired) => {
                for f in fired {
                    tracing::debug!(script = %f.script, handler = %f.handler, at = %f.at, missed = f.missed, "Schedule fired.");
                }
            }
            Err(e) => tracing::error!(error = %e, "Firing schedules failed; retrying."),
        }
        // At most an hour, so a clock that jumps is noticed.
        let wake = schedules
            .next_due()
            .map_or(i64::MAX, |t| t.timestamp_millis())
            .min(
                clock
                    .now_ms()
                    .saturating_add(crate::duration::as_ms(Duration::from_hours(1))),
            );
        tokio::select! {
            () = stop.cancelled() => return,
            () = clock.sleep_until(wake) => {}
            changed = reloads.changed() => {
                if changed.is_err() {
                    return;
                }
                if let Err(e) = schedules.load(&live.get(), clock.now()) {
                    tracing::error!(error = %e, "Reloading schedules failed.");
                }
            }
        }
    }
}
