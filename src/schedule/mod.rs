//! Time-based triggers: the cron expressions that scripts pass to `every("0 9 * * MON", fn)`
//! (DESIGN.md §5), parsed once at load time and asked for their next fire time, in UTC.

pub mod cron;
