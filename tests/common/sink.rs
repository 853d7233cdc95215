//! A fake sink for tests of durable runs: it answers 200 (or 500 to the first
//! requests on chosen paths), counts requests per path, and finds the requests a
//! test awaits without sleeping.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::{Value, json};
use spur::testing::{FakeHttp, Recorded, Reply};

/// A fake that answers 200 `{"ok": true}` except that `(path, n)` in `fail_first`
/// answers 500 to the first `n` requests on `path`; counts requests per path.
pub async fn counting(
    fail_first: &'static [(&'static str, usize)],
) -> (FakeHttp, Arc<Mutex<HashMap<String, usize>>>) {
    let counts: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let c = Arc::clone(&counts);
    let fake = FakeHttp::start(move |r| {
        let n = {
            let mut c = c.lock();
            let n = c.entry(r.path.clone()).or_insert(0);
            *n += 1;
            *n
        };
        if fail_first.iter().any(|(p, k)| *p == r.path && n <= *k) {
            Reply::json(500, &json!({"error": "flaky"}))
        } else {
            Reply::json(
                200,
                &json!({"ok": true, "ts": "1700000000.000100", "channel": "C1"}),
            )
        }
    })
    .await;
    (fake, counts)
}

/// The `n`-th request (0-based, in arrival order) that `matches`, received already
/// or awaited; never sleeps.
pub async fn nth(fake: &mut FakeHttp, n: usize, matches: impl Fn(&Recorded) -> bool) -> Recorded {
    loop {
        if let Some(r) = fake.received().into_iter().filter(|r| matches(r)).nth(n) {
            return r;
        }
        fake.next(15).await;
    }
}

/// The `n`-th `/notify` of `step`.
pub async fn step(fake: &mut FakeHttp, name: &str, n: usize) -> Value {
    let r = nth(fake, n, |r| {
        r.path == "/notify" && r.json.as_ref().is_some_and(|j| j["step"] == name)
    })
    .await;
    r.json.expect("notify bodies are JSON")
}

pub async fn path(fake: &mut FakeHttp, p: &str) -> Recorded {
    nth(fake, 0, |r| r.path == p).await
}
