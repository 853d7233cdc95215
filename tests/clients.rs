//! Unmodified official Segment libraries pointed at spur: segment-analytics-python
//! (body `writeKey`, `/v1/batch`) and @segment/analytics-node (Basic auth). The test
//! installs them from PyPI and npm into `target/segment-clients` on first use.
//! Run with: cargo nextest run --test clients

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::TestApp;
use spur::run::RunStatus;

const ECHO: &str =
    r#"on_event(|e| { log::info(`${e.type} ${e.event ?? ""} ${e.context?.library?.name}`); });"#;

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/segment-clients")
}

/// Installs a client into `dir` unless present; fails the test if it cannot.
fn install(dir: &Path, marker: &str, cmd: &mut Command) {
    if dir.join(marker).exists() {
        return;
    }
    std::fs::create_dir_all(dir).unwrap();
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running the installer: {e}"));
    assert!(
        out.status.success() && dir.join(marker).exists(),
        "installing the Segment client failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn app() -> TestApp {
    TestApp::builder()
        .script("echo.rhai", ECHO)
        .config("[segment]\nwrite_keys = [\"WK-123\"]")
        .start()
        .await
}

async fn run_client(mut cmd: Command) {
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "client failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_python_sends_to_spur_unmodified() {
    let dir = clients_dir().join("python");
    install(
        &dir,
        "segment/analytics/__init__.py",
        Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                "--target",
            ])
            .arg(&dir)
            .arg("segment-analytics-python"),
    );
    let t = app().await;
    let script = r#"
import sys
import segment.analytics as analytics
errors = []
analytics.write_key = "WK-123"
analytics.host = sys.argv[1]
analytics.on_error = lambda e, batch: errors.append(e)
analytics.track("u-py", "Python Event", {"plan": "pro"})
analytics.identify("u-py", {"email": "py@example.com"})
analytics.page("u-py", "Docs", "Pricing")
analytics.flush()
analytics.shutdown()
sys.exit(1 if errors else 0)
"#;
    let mut cmd = Command::new("python3");
    cmd.args(["-c", script, &t.base]).env("PYTHONPATH", &dir);
    run_client(cmd).await;
    let runs = t.wait_run_count(3, 20).await;
    let mut seen: Vec<&str> = runs.iter().map(|r| r.logs[0].message.as_str()).collect();
    seen.sort_unstable();
    assert_eq!(
        seen,
        [
            "identify  analytics-python",
            "page  analytics-python",
            "track Python Event analytics-python"
        ]
    );
    assert!(
        runs.iter()
            .all(|r| r.status == RunStatus::Ok && r.user.as_deref() == Some("u-py"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_node_sends_to_spur_unmodified() {
    let dir = clients_dir().join("node");
    install(
        &dir,
        "node_modules/@segment/analytics-node/package.json",
        Command::new("npm")
            .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .arg("@segment/analytics-node@3"),
    );
    let t = app().await;
    let script = r#"
const { Analytics } = require('@segment/analytics-node');
const a = new Analytics({ writeKey: 'WK-123', host: process.env.SPUR_URL, flushAt: 3, maxRetries: 0 });
a.on('error', (e) => { console.error('error', e); process.exitCode = 1; });
a.track({ userId: 'u-node', event: 'Node Event', properties: { total: 42 } });
a.identify({ userId: 'u-node', traits: { email: 'node@example.com' } });
a.group({ userId: 'u-node', groupId: 'g-1', traits: { name: 'Acme' } });
a.closeAndFlush().then(() => {});
"#;
    let mut cmd = Command::new("node");
    cmd.args(["-e", script])
        .env("SPUR_URL", &t.base)
        .env("NODE_PATH", dir.join("node_modules"));
    run_client(cmd).await;
    let runs = t.wait_run_count(3, 20).await;
    let mut seen: Vec<&str> = runs.iter().map(|r| r.logs[0].message.as_str()).collect();
    seen.sort_unstable();
    assert_eq!(
        seen,
        [
            "group  @segment/analytics-node",
            "identify  @segment/analytics-node",
            "track Node Event @segment/analytics-node"
        ]
    );
}
