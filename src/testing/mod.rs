//! Test helpers for `tests/` and the benchmarks (feature `testing`): a fake
//! HTTP server and a fake SMTP server that record every request or message and
//! hand it to the test over a channel, so tests await them instead of sleeping;
//! and real `nats-server`s (`nats`).

mod fake_http;
mod fake_smtp;
pub mod nats;

pub use fake_http::{FakeHttp, Recorded, Reply};
pub use fake_smtp::{FakeSmtp, Mail};
