//! Runs: the record every execution leaves (status, timings, logs, outbound calls,
//! error with line and column), dead letters with retention, and the timers that
//! wake parked runs. (The effect journal lives in the queue's tree, so a wake-up
//! and its journal entry commit together; see `queue` and `host::journal`.)

mod dead_letter;
mod record;
pub(crate) mod timers;
pub(crate) mod tx;

pub(crate) use dead_letter::{DeadLetter, DeadLetters, SledDeadLetters};
pub(crate) use record::{LogLevel, RunStore};
pub use record::{LogLine, RunError, RunFilter, RunRecord, RunStatus, SledRunRecords};
