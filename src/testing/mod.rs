//! Test helpers shipped with the crate (used by `tests/` and `spur test`): a fake
//! HTTP server that records every request and hands it to the test over a channel,
//! so tests await requests instead of sleeping.

mod fake_http;

pub use fake_http::{FakeHttp, Recorded, Reply};
