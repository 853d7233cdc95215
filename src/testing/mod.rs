//! Test helpers for `tests/` and the benchmarks (feature `testing`): a fake
//! HTTP server that records every request and hands it to the test over a channel,
//! so tests await requests instead of sleeping.

mod fake_http;

pub use fake_http::{FakeHttp, Recorded, Reply};
