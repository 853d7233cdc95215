//! spur: a self-hosted automation runtime for Segment data.
//!
//! Modules read in data-flow order (DESIGN.md §1–2): events arrive through `ingest`,
//! are validated by `event`, made durable by `queue` (on `store`), matched against
//! `script` handlers and run by `worker` with the `host` API, which acts through
//! `connectors` and `state`; every run leaves a record in `run`. `admin` is the
//! operator surface, `app` wires it all, `cli` is the command line, `repl` the interactive prompt.
//!
//! The public modules are what the binary, the benchmarks and the integration tests
//! use, and inside them only the items they use are `pub`; the rest of the crate is
//! `pub(crate)`, so unused code shows up as dead. `testing` (test helpers) exists
//! only with the `testing` feature, which the tests enable. The layers and their
//! arrows: `docs/architecture.md`.

/// Every binary built on spur (the daemon, the benchmarks, the tests) allocates
/// with mimalloc: sled allocates a page per write and frees it on another thread,
/// where glibc's malloc cost the writer thread a third of its time.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub(crate) mod admin;
pub(crate) mod api_error;
pub mod app;
pub mod approval;
pub mod audit;
pub(crate) mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod connectors;
pub mod duration;
pub mod event;
pub(crate) mod host;
pub(crate) mod ingest;
pub(crate) mod json;
pub mod local;
pub(crate) mod mcp;
pub mod metrics;
pub mod nats;
pub mod queue;
pub(crate) mod repl;
pub mod run;
pub mod schedule;
pub mod script;
pub(crate) mod signature;
pub(crate) mod source;
pub mod state;
pub mod store;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub(crate) mod tls;
pub(crate) mod tool;
pub(crate) mod worker;
