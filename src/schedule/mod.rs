//! Time-based triggers: the cron expressions that scripts pass to `every("0 9 * * MON", fn)`
//! (DESIGN.md §5), parsed once at load time (`cron.rs`), and the engine that turns
//! their ticks into jobs exactly once (`engine.rs`).

pub mod cron;
mod engine;

pub use engine::Schedules;
pub(crate) use engine::{ScheduleInfo, run};
