//! Headless Chromium over WebDriver (plain JSON over HTTP, no client crate), for
//! the browser tests. Debian's `chromium` and `chromium-driver` are installed with
//! apt on first use. Waits are events, never sleeps: finding an element uses
//! WebDriver's implicit wait, and [`Browser::until`] resolves when a condition in
//! the page turns true (a `MutationObserver`), each bounded by a timeout.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

/// The W3C WebDriver key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn run(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Debian's Chromium and ChromeDriver, installed unless present.
pub fn chromedriver() -> PathBuf {
    let path = PathBuf::from("/usr/bin/chromedriver");
    if path.exists() && Path::new("/usr/bin/chromium").exists() {
        return path;
    }
    let install = || {
        run(Command::new("apt-get")
            .args(["install", "-y", "-qq", "chromium", "chromium-driver"])
            .env("DEBIAN_FRONTEND", "noninteractive"))
    };
    assert!(
        install() || (run(Command::new("apt-get").args(["update", "-qq"])) && install()),
        "installing chromium and chromium-driver with apt-get failed (the browser tests need them)"
    );
    path
}

/// A ChromeDriver process and one headless session; both end on drop.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    client: reqwest::Client,
    _profile: tempfile::TempDir,
}

/// An element of the page.
#[derive(Clone)]
pub struct Element(String);

impl Browser {
    pub async fn start() -> Self {
        let driver_path = tokio::task::spawn_blocking(chromedriver).await.unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(driver_path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let client = super::client();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let ready = client.get(format!("{base}/status")).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver did not start"
            );
            tokio::task::yield_now().await;
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        }}});
        let resp: Value = client
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = resp["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {resp}"))
            .to_owned();
        let b = Self {
            driver,
            base,
            session,
            client,
            _profile: profile,
        };
        // Finding an element waits up to this long for it to appear.
        b.command("timeouts", json!({ "implicit": 15_000, "script": 30_000 }))
            .await;
        b
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}/{path}", self.base, self.session);
        let mut req = self.client.request(method, url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp: Value = req.send().await.unwrap().json().await.unwrap();
        resp["value"].clone()
    }

    pub async fn command(&self, path: &str, body: Value) -> Value {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> Value {
        self.send(reqwest::Method::GET, path, None).await
    }

    pub async fn open(&self, url: &str) {
        self.command("url", json!({ "url": url })).await;
    }

    /// The first element matching the CSS `selector`, waiting for it to appear.
    pub async fn find(&self, selector: &str) -> Element {
        let v = self
            .command(
                "element",
                json!({ "using": "css selector", "value": selector }),
            )
            .await;
        match v[ELEMENT].as_str() {
            Some(id) => Element(id.to_owned()),
            None => panic!("no element {selector}: {v}"),
        }
    }

    /// Every element matching `selector` now (no waiting).
    pub async fn find_all(&self, selector: &str) -> Vec<Element> {
        self.command("timeouts", json!({ "implicit": 0 })).await;
        let v = self
            .command(
                "elements",
                json!({ "using": "css selector", "value": selector }),
            )
            .await;
        self.command("timeouts", json!({ "implicit": 15_000 }))
            .await;
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e[ELEMENT].as_str().map(|s| Element(s.to_owned())))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub async fn click(&self, selector: &str) {
        let e = self.find(selector).await;
        self.click_element(&e).await;
    }

    pub async fn click_element(&self, e: &Element) {
        let v = self
            .command(&format!("element/{}/click", e.0), json!({}))
            .await;
        assert!(v.is_null(), "click failed: {v}");
    }

    /// Types `text` into the field `selector` (after clearing it).
    pub async fn type_into(&self, selector: &str, text: &str) {
        let e = self.find(selector).await;
        self.command(&format!("element/{}/clear", e.0), json!({}))
            .await;
        self.command(&format!("element/{}/value", e.0), json!({ "text": text }))
            .await;
    }

    pub async fn text(&self, selector: &str) -> String {
        let e = self.find(selector).await;
        self.element_text(&e).await
    }

    pub async fn element_text(&self, e: &Element) -> String {
        self.get(&format!("element/{}/text", e.0))
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page.
    pub async fn eval(&self, script: &str, args: Value) -> Value {
        self.command("execute/sync", json!({ "script": script, "args": args }))
            .await
    }

    /// Runs `script` in the page and waits for it to call its callback (the last
    /// argument) with a value: an event, not a poll.
    pub async fn eval_async(&self, script: &str) -> Value {
        self.command("execute/async", json!({ "script": script, "args": [] }))
            .await
    }

    /// Waits until the JavaScript expression `condition` is truthy in the page,
    /// re-checked on every change of the document; panics after 30 s with `what`.
    pub async fn until(&self, condition: &str, what: &str) {
        let script = format!(
            r"const done = arguments[arguments.length - 1];
const check = () => {{ try {{ return !!({condition}); }} catch (e) {{ return false; }} }};
if (check()) {{ done(true); }} else {{
  const o = new MutationObserver(() => {{ if (check()) {{ o.disconnect(); done(true); }} }});
  o.observe(document, {{ subtree: true, childList: true, attributes: true, characterData: true }});
}}"
        );
        let v = self.eval_async(&script).await;
        assert_eq!(v, json!(true), "waiting for {what} ({condition}): {v}");
    }

    /// Navigates the page to `hash` (`#/runs`) and waits for the page of it.
    pub async fn go(&self, hash: &str) {
        self.eval("location.hash = arguments[0];", json!([hash]))
            .await;
    }

    /// The browser's cookies (HttpOnly ones too).
    pub async fn cookies(&self) -> Vec<Value> {
        self.get("cookie")
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub async fn resize(&self, width: u32, height: u32) {
        self.command("window/rect", json!({ "width": width, "height": height }))
            .await;
    }

    /// A PNG of the viewport, written to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let b64 = self.get("screenshot").await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().expect("a screenshot"))
            .unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// Ends the WebDriver session, which closes Chromium (killing chromedriver
    /// alone would leave the browser running).
    pub async fn quit(self) {
        let url = format!("{}/session/{}", self.base, self.session);
        let _ = self.client.delete(url).send().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
