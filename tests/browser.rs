//! Segment's browser library in a real browser: `@segment/analytics-next` (from the
//! npm registry) on a page served from another origin (another port) delivers
//! identify, track and page to spur's `/v1/*` through CORS, and each is handled once.
//!
//! The test installs what it needs on first use: Debian's `chromium` and
//! `chromium-driver` (apt, `common/browser.rs`), and the library into
//! `target/browser`.
//! Run with: cargo nextest run --test browser

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use axum::Router;
use axum::response::IntoResponse as _;
use common::TestApp;
use common::browser::{self, Browser};
use serde_json::json;

const LIBRARY: &str = "@segment/analytics-next@1.84.3";
const WRITE_KEY: &str = "browser-write-key";

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser")
}

/// The library's UMD bundle directory, installed from npm unless present.
fn library() -> PathBuf {
    let dir = browser_dir();
    let umd = dir.join("node_modules/@segment/analytics-next/dist/umd");
    if !umd.join("index.js").exists() {
        std::fs::create_dir_all(&dir).unwrap();
        let out = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
            .arg(&dir)
            .arg(LIBRARY)
            .output()
            .expect("running npm");
        assert!(
            out.status.success() && umd.join("index.js").exists(),
            "installing {LIBRARY} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    umd
}

/// The test page: loads the library as Segment's snippet would, pointed at spur.
fn page(api_host: &str) -> String {
    format!(
        r#"<!doctype html><html><head><title>shop</title>
<script src="/analytics-next/bundles/index.js"></script>
<script>
  window.sent = AnalyticsNext.AnalyticsBrowser.load({{
    writeKey: "{WRITE_KEY}",
    cdnURL: location.origin,
    cdnSettings: {{ integrations: {{ "Segment.io": {{
      apiKey: "{WRITE_KEY}", apiHost: "{api_host}/v1", protocol: "http"
    }} }} }}
  }}).then(([analytics]) => Promise.all([
    analytics.identify("browser-user", {{ plan: "pro" }}),
    analytics.track("Browser Checkout", {{ total: 42 }}),
    analytics.page("Pricing"),
  ])).then(() => {{ window.done = "sent"; }}, (e) => {{ window.done = "error: " + e; }});
</script></head><body>shop</body></html>"#
    )
}

/// Serves the page and the library's bundles from a port of its own.
async fn serve_page(html: String, umd: PathBuf) -> String {
    let app = Router::new()
        .route(
            "/",
            axum::routing::get(move || {
                let html = html.clone();
                async move { axum::response::Html(html) }
            }),
        )
        .route(
            "/analytics-next/bundles/{file}",
            axum::routing::get(
                move |axum::extract::Path(file): axum::extract::Path<String>| {
                    let path = umd.join(file.replace('/', ""));
                    async move {
                        match std::fs::read(path) {
                            Ok(js) => (
                                [(axum::http::header::CONTENT_TYPE, "application/javascript")],
                                js,
                            )
                                .into_response(),
                            Err(_) => axum::http::StatusCode::NOT_FOUND.into_response(),
                        }
                    }
                },
            ),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_next_on_another_origin_delivers_through_cors() {
    let umd = tokio::task::spawn_blocking(|| {
        browser::chromedriver();
        library()
    })
    .await
    .unwrap();
    let t = TestApp::builder()
        .script(
            "echo.rhai",
            r#"on_event(|e| { log::info(`${e.type} ${e.event ?? e.name ?? ""} ${e.userId ?? ""} ${e.context?.library?.name}`); });"#,
        )
        .config(&format!("[segment]\nwrite_keys = [\"{WRITE_KEY}\"]"))
        .start()
        .await;
    let api_host = t.base.trim_start_matches("http://").to_owned();
    let site = serve_page(page(&api_host), umd).await;
    assert_ne!(site, t.base, "the page is on another origin");

    let browser = Browser::start().await;
    browser.open(&site).await;
    let runs = t.wait_run_count(3, 60).await;
    let mut seen: Vec<String> = runs.iter().map(|r| r.logs[0].message.clone()).collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            "identify  browser-user analytics.js",
            "page Pricing browser-user analytics.js",
            "track Browser Checkout browser-user analytics.js",
        ],
        "each call arrived and was handled once"
    );
    // The library itself saw its calls succeed.
    let done = browser
        .eval_async(
            "const cb = arguments[arguments.length - 1]; window.sent.then(() => cb(window.done));",
        )
        .await;
    assert_eq!(done, json!("sent"));
    let again = t
        .app
        .runs
        .list(&spur::run::RunFilter::default(), 100)
        .unwrap();
    assert_eq!(again.len(), 3, "nothing delivered twice");
    browser.quit().await;
}
