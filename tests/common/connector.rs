//! What every connector test does: start the fakes, point `[connections.NAME]` at
//! them, start the daemon with a handler script, send events, wait for their runs.
//! [`Scenario`] does it so a test states only what differs; the readers below pick
//! a run record apart.
//!
//! ```ignore
//! let mut t = Scenario::new(SCRIPT).connect(slack::connection()).start().await;
//! let runs = t.track(&["Order Completed"]).await;
//! assert_eq!(ok_logs(&runs[0]), ["…"]);
//! let sent = t.fake("slack").received();
//! ```

use spur::run::{RunRecord, RunStatus};
use spur::testing::FakeHttp;

use super::TestApp;
use super::fakes::Connection;

/// Builds a [`Running`] scenario.
pub struct Scenario {
    scripts: Vec<(String, String)>,
    connections: Vec<Connection>,
    wait_secs: u64,
}

impl Scenario {
    /// The handler script `flow.rhai`.
    pub fn new(script: &str) -> Self {
        Self {
            scripts: vec![("flow.rhai".to_owned(), script.to_owned())],
            connections: Vec::new(),
            wait_secs: 10,
        }
    }

    /// Another file in the scripts dir (a module of the team's own).
    #[must_use]
    pub fn script(mut self, file: &str, source: &str) -> Self {
        self.scripts.push((file.to_owned(), source.to_owned()));
        self
    }

    /// A fake service and the connection to it.
    #[must_use]
    pub fn connect(mut self, connection: Connection) -> Self {
        self.connections.push(connection);
        self
    }

    /// How long [`Running::track`] waits for the runs (10 s unless told).
    #[must_use]
    pub fn wait_secs(mut self, secs: u64) -> Self {
        self.wait_secs = secs;
        self
    }

    /// Starts the fakes and the daemon. A retryable run stays `retrying` for the
    /// whole test (its next attempt is minutes away).
    pub async fn start(self) -> Running {
        let mut app = TestApp::builder();
        for (file, source) in &self.scripts {
            app = app.script(file, source);
        }
        let mut fakes = Vec::new();
        for connection in self.connections {
            let name = connection.name;
            let (fake, toml) = connection.start().await;
            app = app.config(&toml);
            fakes.push((name, fake));
        }
        let app = app
            .config("[retry]\nmax_attempts = 3\nbase_ms = 600000")
            .start()
            .await;
        Running {
            app,
            fakes,
            wait_secs: self.wait_secs,
            sent: 0,
        }
    }
}

/// The daemon and the fakes it calls.
pub struct Running {
    pub app: TestApp,
    fakes: Vec<(&'static str, FakeHttp)>,
    wait_secs: u64,
    /// Track events sent so far.
    sent: usize,
}

impl Running {
    /// The fake behind connection `name`.
    pub fn fake(&self, name: &str) -> &FakeHttp {
        let (_, fake) = self
            .fakes
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("no connection {name}"));
        fake
    }

    /// Sends track events `events`, the first from user `u1`, the second from `u2`, …
    /// (so none waits for another), then waits until every event sent so far has its
    /// run; all runs, newest first.
    pub async fn track(&mut self, events: &[&str]) -> Vec<RunRecord> {
        for (i, event) in events.iter().enumerate() {
            let body = serde_json::json!({"userId": format!("u{}", i + 1), "event": event});
            let (status, body) = self.app.post("/v1/track", &body).await;
            assert_eq!(status, 200, "{body}");
        }
        self.sent += events.len();
        self.app.wait_run_count(self.sent, self.wait_secs).await
    }
}

/// The run of the handler registered for event `name`.
pub fn run_of<'a>(runs: &'a [RunRecord], name: &str) -> &'a RunRecord {
    let key = format!("({name})");
    runs.iter()
        .find(|r| r.handler.contains(&key))
        .unwrap_or_else(|| panic!("no run for {name}: {runs:#?}"))
}

/// The log lines of a run that must have succeeded.
pub fn ok_logs(run: &RunRecord) -> Vec<String> {
    assert_eq!(run.status, RunStatus::Ok, "{run:#?}");
    run.logs.iter().map(|l| l.message.clone()).collect()
}

/// The error message of a run that must have ended with `status`.
pub fn error_of(run: &RunRecord, status: RunStatus) -> String {
    assert_eq!(run.status, status, "{run:#?}");
    run.error.as_ref().expect("an error").message.clone()
}

/// The HTTP status of each call a run made, in order.
pub fn call_statuses(run: &RunRecord) -> Vec<Option<u16>> {
    run.calls.iter().map(|c| c.status).collect()
}
