//! A fake HTTP service on `127.0.0.1:0`: every request is recorded (and sent to the
//! test over a channel); the answer comes from a responder closure, so a test can
//! model a real service's checks (auth, shapes, errors, rate limits).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::mpsc;

/// A request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub headers: BTreeMap<String, String>,
    pub body: Bytes,
    /// The body parsed as JSON, if it is JSON.
    pub json: Option<Value>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// An answer: status, extra headers, body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn json(status: u16, body: &Value) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string(),
        }
    }

    pub fn text(status: u16, body: &str) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: body.to_owned(),
        }
    }

    #[must_use]
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

type Responder = dyn Fn(&Recorded) -> Reply + Send + Sync;

#[derive(Clone)]
struct Shared {
    tx: mpsc::UnboundedSender<Recorded>,
    responder: Arc<Responder>,
    log: Arc<Mutex<Vec<Recorded>>>,
}

/// The running fake; stops when dropped.
pub struct FakeHttp {
    pub base_url: String,
    pub requests: mpsc::UnboundedReceiver<Recorded>,
    log: Arc<Mutex<Vec<Recorded>>>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeHttp {
    /// Starts a fake answering every request with `responder`.
    ///
    /// # Panics
    /// When loopback cannot be bound (the test cannot run then).
    pub async fn start(responder: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding loopback for a fake server");
        let base_url = format!("http://{}", listener.local_addr().expect("local addr"));
        let (tx, requests) = mpsc::unbounded_channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let shared = Shared {
            tx,
            responder: Arc::new(responder),
            log: Arc::clone(&log),
        };
        let app = Router::new().fallback(handle).with_state(shared);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            base_url,
            requests,
            log,
            server,
        }
    }

    /// Starts a fake answering `200 {"ok": true}` to everything.
    pub async fn ok() -> Self {
        Self::start(|_| Reply::json(200, &serde_json::json!({ "ok": true }))).await
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<Recorded> {
        self.log.lock().clone()
    }

    /// Awaits the next request, failing the test after `secs` seconds.
    ///
    /// # Panics
    /// On time-out or when the server stopped.
    pub async fn next(&mut self, secs: u64) -> Recorded {
        tokio::time::timeout(std::time::Duration::from_secs(secs), self.requests.recv())
            .await
            .expect("timed out waiting for a request to the fake server")
            .expect("the fake server stopped")
    }

    /// The next request that `matches`, waiting at most `secs` for each request.
    pub async fn next_matching(
        &mut self,
        secs: u64,
        matches: impl Fn(&Recorded) -> bool,
    ) -> Recorded {
        loop {
            let r = self.next(secs).await;
            if matches(&r) {
                return r;
            }
        }
    }
}

impl Drop for FakeHttp {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn handle(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query = uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let rec = Recorded {
        method: method.as_str().to_owned(),
        path: uri.path().to_owned(),
        query,
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        json: serde_json::from_slice(&body).ok(),
        body,
    };
    let reply = (shared.responder)(&rec);
    shared.log.lock().push(rec.clone());
    let _ = shared.tx.send(rec);
    let mut resp = (
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        reply.body,
    )
        .into_response();
    for (k, v) in reply.headers {
        if let (Ok(k), Ok(v)) = (
            axum::http::HeaderName::from_bytes(k.as_bytes()),
            axum::http::HeaderValue::from_str(&v),
        ) {
            resp.headers_mut().insert(k, v);
        }
    }
    resp
}
