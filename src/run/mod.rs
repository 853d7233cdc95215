//! Runs: the record every execution leaves (status, timings, logs, outbound calls,
//! error with line and column), dead letters with retention, and the timers that
//! wake parked runs. (The effect journal lives in the queue's tree, so a wake-up
//! and its journal entry commit together; see `queue` and `host::journal`.)

mod dead_letter;
mod record;
pub mod timers;
pub mod tx;

pub use dead_letter::{DeadLetter, DeadLetterStore, DeadLetters, SledDeadLetters};
pub use record::{LogLevel, LogLine, RunError, RunFilter, RunRecord, RunRecords, RunStatus, RunStore, SledRunRecords};
