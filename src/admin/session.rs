//! Console sessions: a person logs in with a token (`admin.token` or a client's)
//! and gets a random session id in an `HttpOnly`, `SameSite=Strict` cookie that
//! expires after `admin.session_ttl`. The session keeps the token, not the caller
//! it stood for, and authenticates it again on every request: what a session may
//! do is always what its token may do.
//!
//! A write through a session must carry the session's CSRF token in
//! `X-CSRF-Token` (the page reads it from `GET /ui/session`, which another origin
//! cannot). Sessions live in memory: a restart logs everyone out. At most
//! [`MAX_SESSIONS`] are kept; past that, expired ones go first, then the oldest.

use std::collections::HashMap;

use axum::http::HeaderMap;
use axum::http::header::COOKIE;
use parking_lot::Mutex;
use subtle::ConstantTimeEq;

use crate::clock::SharedClock;
use crate::config::Secret;

/// The session cookie's name.
pub(crate) const COOKIE_NAME: &str = "spur_session";
/// The header a write through a session carries its CSRF token in.
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";
const MAX_SESSIONS: usize = 10_000;

/// One login.
#[derive(Clone)]
pub(crate) struct Session {
    /// The token logged in with; authenticated again on every request.
    pub token: Secret,
    pub csrf: String,
    pub expires_ms: i64,
}

impl Session {
    /// Whether `given` is this session's CSRF token (constant time).
    pub(crate) fn csrf_matches(&self, given: Option<&str>) -> bool {
        given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(self.csrf.as_bytes())))
    }
}

/// The open sessions.
pub(crate) struct Sessions {
    open: Mutex<HashMap<String, Session>>,
    ttl_ms: i64,
    clock: SharedClock,
    /// Whether cookies are marked `Secure` (the daemon serves HTTPS).
    secure: bool,
}

fn random_hex() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

impl Sessions {
    pub(crate) fn new(ttl: std::time::Duration, clock: SharedClock, secure: bool) -> Self {
        Self {
            open: Mutex::default(),
            ttl_ms: crate::duration::as_ms(ttl),
            clock,
            secure,
        }
    }

    /// Opens a session for `token` (already authenticated); returns its id.
    pub(crate) fn open(&self, token: Secret) -> (String, Session) {
        let now = self.clock.now_ms();
        let session = Session {
            token,
            csrf: random_hex(),
            expires_ms: now.saturating_add(self.ttl_ms),
        };
        let id = random_hex();
        let mut open = self.open.lock();
        if open.len() >= MAX_SESSIONS {
            open.retain(|_, s| s.expires_ms > now);
        }
        if open.len() >= MAX_SESSIONS
            && let Some(oldest) = open
                .iter()
                .min_by_key(|(_, s)| s.expires_ms)
                .map(|(k, _)| k.clone())
        {
            open.remove(&oldest);
        }
        open.insert(id.clone(), session.clone());
        (id, session)
    }

    /// The live session of the request's cookie, if any (an expired one is closed).
    pub(crate) fn of_request(&self, headers: &HeaderMap) -> Option<(String, Session)> {
        let id = cookie(headers, COOKIE_NAME)?;
        let mut open = self.open.lock();
        let session = open.get(id)?;
        if session.expires_ms <= self.clock.now_ms() {
            open.remove(id);
            return None;
        }
        Some((id.to_owned(), session.clone()))
    }

    pub(crate) fn close(&self, id: &str) {
        self.open.lock().remove(id);
    }

    /// The `Set-Cookie` value that stores session `id` in the browser.
    pub(crate) fn cookie(&self, id: &str) -> String {
        format!(
            "{COOKIE_NAME}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
            self.ttl_ms / 1000,
            if self.secure { "; Secure" } else { "" }
        )
    }

    /// The `Set-Cookie` value that removes the session cookie.
    pub(crate) fn cleared_cookie(&self) -> String {
        format!(
            "{COOKIE_NAME}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
            if self.secure { "; Secure" } else { "" }
        )
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::clock::ManualClock;

    fn headers(cookie: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(COOKIE, cookie.parse().unwrap());
        h
    }

    #[test]
    fn a_session_is_found_by_its_cookie_until_it_expires() {
        let clock = ManualClock::starting_now();
        let sessions = Sessions::new(Duration::from_secs(60), clock.clone(), false);
        let (id, s) = sessions.open(Secret::new("t"));
        let found = sessions.of_request(&headers(&format!("theme=dark; {COOKIE_NAME}={id}")));
        assert_eq!(found.map(|(_, f)| f.csrf), Some(s.csrf.clone()));
        assert!(
            sessions
                .of_request(&headers(&format!("{COOKIE_NAME}=nope")))
                .is_none()
        );
        assert!(s.csrf_matches(Some(&s.csrf)));
        assert!(!s.csrf_matches(Some("x")) && !s.csrf_matches(None));
        clock.advance(Duration::from_secs(61));
        assert!(
            sessions
                .of_request(&headers(&format!("{COOKIE_NAME}={id}")))
                .is_none()
        );
    }

    #[test]
    fn cookies_are_http_only_strict_and_secure_over_https() {
        let clock = ManualClock::starting_now();
        let plain = Sessions::new(Duration::from_secs(3600), clock.clone(), false);
        assert_eq!(
            plain.cookie("abc"),
            "spur_session=abc; Path=/; HttpOnly; SameSite=Strict; Max-Age=3600"
        );
        let tls = Sessions::new(Duration::from_secs(3600), clock, true);
        assert!(tls.cookie("abc").ends_with("; Secure"));
        assert!(tls.cleared_cookie().contains("Max-Age=0"));
    }

    #[test]
    fn the_number_of_sessions_is_bounded() {
        let clock = ManualClock::starting_now();
        let sessions = Sessions::new(Duration::from_secs(60), clock, false);
        for _ in 0..MAX_SESSIONS + 5 {
            sessions.open(Secret::new("t"));
        }
        assert_eq!(sessions.open.lock().len(), MAX_SESSIONS);
    }
}
