//! Runs: the record every execution leaves (status, timings, logs, outbound calls,
//! error with line and column) and dead letters, with retention.

mod dead_letter;
mod record;

pub use dead_letter::{DeadLetter, DeadLetters};
pub use record::{RunError, RunFilter, RunRecord, RunStatus, RunStore};
