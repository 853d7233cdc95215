//! Test harness: `TestApp` runs the daemon in-process on a loopback port with a temp
//! dir (fast; tests await run records through a subscription, never sleep);
//! `Daemon` runs the real binary as a child process (for crash tests);
//! `fakes` and `connector` serve the stdlib connector tests (`tests/connector_*.rs`).
//! A behaviour test that holds on every store takes a [`Backend`] and is listed in
//! [`on_both_backends!`], which runs it once on sled and once on a NATS server of
//! its own.
#![allow(dead_code, unreachable_pub)]

pub mod browser;
pub mod connector;
pub mod fakes;
pub mod mcp;
pub mod sink;

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use spur::app::App;
use spur::run::{RunFilter, RunRecord};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

pub const TOKEN: &str = "test-admin-token";

/// The store a test runs on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    #[default]
    Sled,
    Nats,
}

/// A test's store: the config that selects it and, on NATS, the server started for
/// the test (killed when dropped).
pub struct TestStore {
    /// `[store]` and `[nats]` sections (empty for sled, the default).
    pub config: String,
    pub server: Option<spur::testing::nats::NatsServer>,
}

impl TestStore {
    /// `extra` config followed by the store's.
    pub fn config_with(&self, extra: &str) -> String {
        format!("{extra}\n{}", self.config)
    }
}

impl Backend {
    /// Starts the store's service, if it has one, under `dir`.
    pub fn start(self, dir: &Path) -> TestStore {
        match self {
            Self::Sled => TestStore {
                config: String::new(),
                server: None,
            },
            Self::Nats => {
                let server = spur::testing::nats::NatsServer::start(&dir.join("nats"));
                TestStore {
                    config: format!(
                        "[store]\nbackend = \"nats\"\n\n[nats]\nservers = [{:?}]\n",
                        server.url()
                    ),
                    server: Some(server),
                }
            }
        }
    }
}

/// Runs each listed `async fn NAME(backend: Backend)` as two tests, `sled::NAME` and
/// `nats::NAME`.
#[allow(unused_macros)]
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {
        mod sled {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::common::Backend::Sled).await;
                }
            )+
        }
        mod nats {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::common::Backend::Nats).await;
                }
            )+
        }
    };
}
#[allow(unused_imports)]
pub(crate) use on_both_backends;

/// An HTTP client for tests (TLS provider installed).
pub fn client() -> reqwest::Client {
    spur::connectors::http::install_crypto_provider();
    reqwest::Client::new()
}

/// A fixture from `tests/fixtures/segment/`.
pub fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/segment")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

pub fn fixture_json(name: &str) -> Value {
    serde_json::from_str(&fixture(name)).expect("fixture is JSON")
}

/// Builds a `TestApp`.
#[derive(Default)]
pub struct TestAppBuilder {
    scripts: Vec<(String, String)>,
    config: String,
    server: String,
    clock: Option<Arc<spur::clock::ManualClock>>,
    backend: Backend,
}

impl TestAppBuilder {
    pub fn script(mut self, file: &str, source: &str) -> Self {
        self.scripts.push((file.to_owned(), source.to_owned()));
        self
    }

    /// Extra keys of the `[server]` section (`"max_inflight_requests = 1"`).
    pub fn server(mut self, line: &str) -> Self {
        self.server.push_str(line);
        self.server.push('\n');
        self
    }

    /// Runs the daemon on `clock` instead of the system clock: time moves only when
    /// the test advances it.
    pub fn clock(mut self, clock: &Arc<spur::clock::ManualClock>) -> Self {
        self.clock = Some(Arc::clone(clock));
        self
    }

    /// Runs on `backend` (sled by default).
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// Extra TOML appended to the generated config.
    pub fn config(mut self, toml: &str) -> Self {
        self.config.push_str(toml);
        self.config.push('\n');
        self
    }

    pub async fn start(self) -> TestApp {
        let dir = tempfile::tempdir().expect("temp dir");
        let scripts = dir.path().join("scripts");
        std::fs::create_dir_all(&scripts).unwrap();
        for (file, src) in &self.scripts {
            std::fs::write(scripts.join(file), src).unwrap();
        }
        let store = self.backend.start(dir.path());
        let text = config_text(dir.path(), &self.server, &store.config_with(&self.config));
        let cfg = spur::config::load_from_str(&text, None, &BTreeMap::new())
            .unwrap_or_else(|e| panic!("test config: {e}"));
        let app = match self.clock {
            Some(clock) => App::start_with(cfg, clock).await,
            None => App::start(cfg).await,
        }
        .expect("app starts");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let router = app.router();
        let s = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(s.cancelled_owned())
                .await
                .unwrap();
        });
        TestApp {
            dir,
            store,
            base,
            app,
            stop,
            client: client(),
        }
    }
}

/// Writes `scripts` into `dir/scripts` and `dir/spur.toml` (the base config, then
/// `extra`), for [`Daemon::start`].
pub fn write_daemon_dir(dir: &Path, scripts: &[(&str, &str)], extra: &str) {
    std::fs::create_dir_all(dir.join("scripts")).unwrap();
    for (name, source) in scripts {
        std::fs::write(dir.join("scripts").join(name), source).unwrap();
    }
    std::fs::write(dir.join("spur.toml"), base_config(dir, extra)).unwrap();
}

/// Config pointing at `dir` with the test admin token.
pub fn base_config(dir: &Path, extra: &str) -> String {
    config_text(dir, "", extra)
}

/// [`base_config`] with extra `[server]` keys.
fn config_text(dir: &Path, server: &str, extra: &str) -> String {
    format!(
        "[server]\ndata_dir = {:?}\nscripts_dir = {:?}\nlisten = \"127.0.0.1:0\"\nworkers = 4\n{server}\n[admin]\ntoken = {TOKEN:?}\n\n{extra}",
        dir.join("data").display().to_string(),
        dir.join("scripts").display().to_string(),
    )
}

/// The daemon in-process.
pub struct TestApp {
    pub base: String,
    pub app: Arc<App>,
    stop: CancellationToken,
    pub client: reqwest::Client,
    // Dropped last: the app's store, then its directory.
    pub store: TestStore,
    pub dir: TempDir,
}

impl TestApp {
    pub fn builder() -> TestAppBuilder {
        TestAppBuilder::default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs JSON; returns status and parsed body.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        answer(self.client.post(self.url(path)).json(body)).await
    }

    /// POSTs raw bytes with headers.
    pub async fn post_raw(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut req = self.client.post(self.url(path)).body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        answer(req).await
    }

    /// GETs an admin path with the token.
    pub async fn admin_get(&self, path: &str) -> (u16, Value) {
        answer(self.client.get(self.url(path)).bearer_auth(TOKEN)).await
    }

    pub async fn admin_post(&self, path: &str, body: &Value) -> (u16, Value) {
        answer(
            self.client
                .post(self.url(path))
                .bearer_auth(TOKEN)
                .json(body),
        )
        .await
    }

    /// Waits (bounded) until the run records satisfy `done`; returns them, newest first.
    pub async fn wait_runs(
        &self,
        secs: u64,
        done: impl Fn(&[RunRecord]) -> bool,
    ) -> Vec<RunRecord> {
        let mut rx = self.app.runs.subscribe();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let runs = self.app.runs.list(&RunFilter::default(), 100_000).unwrap();
            if done(&runs) {
                return runs;
            }
            let woke = tokio::time::timeout_at(deadline, rx.recv()).await;
            assert!(
                woke.is_ok(),
                "timed out after {secs}s waiting for runs; have {}: {:#?}",
                runs.len(),
                runs.iter().take(5).collect::<Vec<_>>()
            );
        }
    }

    /// Waits for `n` runs in total.
    pub async fn wait_run_count(&self, n: usize, secs: u64) -> Vec<RunRecord> {
        self.wait_runs(secs, |r| r.len() >= n).await
    }

    pub async fn stop(self) {
        self.stop.cancel();
        self.app.shutdown().await;
    }
}

/// Sends `req`; the status and the JSON answer (`Null` when it is not JSON).
async fn answer(req: reqwest::RequestBuilder) -> (u16, Value) {
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The real binary as a child process, for crash tests.
pub struct Daemon {
    pub dir: PathBuf,
    pub base: String,
    child: Child,
}

impl Daemon {
    /// Starts `spur serve` on `dir` (which holds `spur.toml`), waiting for its
    /// "listening" line.
    pub fn start(dir: &Path) -> Self {
        Self::spawn(dir, "spur=warn", Stdio::inherit(), &[])
    }

    /// Starts with extra environment variables.
    pub fn start_with_env(dir: &Path, env: &[(&str, &str)]) -> Self {
        Self::spawn(dir, "spur=warn", Stdio::inherit(), env)
    }

    /// Starts with `RUST_LOG=rust_log`, the daemon's log going to `dir/daemon.log`.
    pub fn start_logging(dir: &Path, rust_log: &str) -> Self {
        let log = std::fs::File::create(dir.join("daemon.log")).expect("creating the log file");
        Self::spawn(dir, rust_log, Stdio::from(log), &[])
    }

    fn spawn(dir: &Path, rust_log: &str, stderr: Stdio, env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_spur"))
            .arg("--config")
            .arg(dir.join("spur.toml"))
            .arg("serve")
            .envs(env.iter().copied())
            .env("RUST_LOG", rust_log)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawning spur");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("spur listening on ") {
                    let _ = tx.send(addr.to_owned());
                }
            }
        });
        let base = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("spur did not report its address");
        Self {
            dir: dir.to_path_buf(),
            base,
            child,
        }
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// GETs an admin API path with the test token; the JSON answer.
    pub async fn get(&self, path: &str) -> Value {
        client()
            .get(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
