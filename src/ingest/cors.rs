//! CORS for the Tracking API, so Segment's browser library (analytics.js /
//! `@segment/analytics-next`) on a page of another origin can deliver to `/v1/*`.
//!
//! Answered as Segment's API answers it: a preflight (`OPTIONS` with
//! `Access-Control-Request-Method`) gets 204 with the allowed method, the headers the
//! library asked for, and a day's `Max-Age`; every answer to a request with an
//! `Origin` carries `Access-Control-Allow-Origin`. `segment.cors_origins` restricts the
//! origins (default: any); a request from another origin is refused with 403 before
//! its body is read, so nothing of it is stored. Requests without `Origin` (server
//! libraries, curl) are not affected.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS, ORIGIN, VARY,
};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::api_error::ApiError;

/// Headers allowed when a preflight names none.
const DEFAULT_ALLOWED_HEADERS: &str = "Content-Type, Authorization, Content-Encoding";

/// Which origins may call the Tracking API from a browser.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cors {
    /// Allowed origins (`https://shop.example.com`); empty or `*` allows any.
    origins: Arc<Vec<String>>,
}

impl Cors {
    pub(crate) fn new(origins: &[String]) -> Self {
        let any = origins.is_empty() || origins.iter().any(|o| o == "*");
        Self {
            origins: Arc::new(if any {
                Vec::new()
            } else {
                origins
                    .iter()
                    .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                    .collect()
            }),
        }
    }

    /// The `Access-Control-Allow-Origin` value for `origin`, or `None` if refused.
    fn allow(&self, origin: &HeaderValue) -> Option<HeaderValue> {
        if self.origins.is_empty() {
            return Some(HeaderValue::from_static("*"));
        }
        let text = origin.to_str().ok()?.to_ascii_lowercase();
        self.origins.contains(&text).then(|| origin.clone())
    }
}

/// The middleware: answers preflights, refuses other origins, and stamps the allow
/// headers on every answer.
pub(super) async fn layer(State(cors): State<Cors>, req: Request, next: Next) -> Response {
    let Some(origin) = req.headers().get(ORIGIN).cloned() else {
        return next.run(req).await;
    };
    let Some(allowed) = cors.allow(&origin) else {
        let shown = crate::event::quote(&String::from_utf8_lossy(origin.as_bytes()));
        return ApiError::Forbidden(format!(
            "origin {shown} is not allowed: add it to segment.cors_origins"
        ))
        .into_response();
    };
    let mut resp = if req.method() == Method::OPTIONS {
        preflight(req.headers())
    } else {
        next.run(req).await
    };
    let headers = resp.headers_mut();
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
    if !cors.origins.is_empty() {
        headers.append(VARY, HeaderValue::from_static("Origin"));
    }
    resp
}

fn preflight(request: &HeaderMap) -> Response {
    let asked = request
        .get(ACCESS_CONTROL_REQUEST_HEADERS)
        .filter(|v| v.len() <= 1024)
        .cloned()
        .unwrap_or(HeaderValue::from_static(DEFAULT_ALLOWED_HEADERS));
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let h = resp.headers_mut();
    h.insert(
        ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, OPTIONS"),
    );
    h.insert(ACCESS_CONTROL_ALLOW_HEADERS, asked);
    h.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_origin_by_default_and_exact_origins_when_listed() {
        let any = Cors::new(&[]);
        let page = HeaderValue::from_static("https://shop.example.com");
        assert_eq!(any.allow(&page).unwrap(), "*");
        let listed = Cors::new(&["https://Shop.example.com/".into()]);
        assert_eq!(listed.allow(&page).unwrap(), "https://shop.example.com");
        assert!(
            listed
                .allow(&HeaderValue::from_static("https://evil.example"))
                .is_none()
        );
    }
}
