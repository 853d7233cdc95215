//! Checking that a webhook came from its sender, each scheme as its service
//! documents it. Every check works on the exact body bytes, compares in constant
//! time (`Mac::verify_slice`) and, where the scheme signs a timestamp, refuses
//! requests outside the tolerance window (replays).

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Sha256, Sha512};

/// A verification scheme, as `on_webhook(name, #{ verify: … })` declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verify {
    /// `Stripe-Signature: t=…,v1=…`: hex HMAC-SHA256 of `t.body`.
    Stripe,
    /// `X-Hub-Signature-256: sha256=…`: hex HMAC-SHA256 of the body.
    Github,
    /// `X-Shopify-Hmac-Sha256`: base64 HMAC-SHA256 of the body.
    Shopify,
    /// `X-Slack-Signature: v0=…` over `v0:timestamp:body`, with
    /// `X-Slack-Request-Timestamp` (Unix seconds).
    Slack,
    /// `X-Zendesk-Webhook-Signature`: base64 HMAC-SHA256 of `timestamp + body`, with
    /// `X-Zendesk-Webhook-Signature-Timestamp` (ISO-8601).
    Zendesk,
    /// Any HMAC scheme: a header, an algorithm, an encoding.
    Hmac(Generic),
}

/// `verify: #{ header, algorithm, encoding, prefix, timestamp_header, payload }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generic {
    /// The header holding the signature (lower-case).
    pub header: String,
    pub algorithm: Algorithm,
    pub encoding: Encoding,
    /// Text before the digest in the header (`"sha256="`).
    pub prefix: String,
    /// A header holding the signed timestamp (Unix seconds or ISO-8601), lower-case.
    pub timestamp_header: Option<String>,
    /// What is signed, with `{timestamp}` and `{body}` in it.
    pub payload: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha1,
    Sha256,
    Sha512,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Hex,
    Base64,
}

/// Timestamps further than this from now are refused (the services' own default).
pub(crate) const DEFAULT_TOLERANCE_S: i64 = 300;

/// Why a request was refused (answered 401).
pub(crate) type Refusal = String;

/// The request's headers, looked up by lower-case name.
pub(crate) trait Headers {
    fn get(&self, name: &str) -> Option<&str>;
}

impl Headers for axum::http::HeaderMap {
    fn get(&self, name: &str) -> Option<&str> {
        axum::http::HeaderMap::get(self, name).and_then(|v| v.to_str().ok())
    }
}

impl Headers for [(String, String)] {
    fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Verify {
    /// Checks `body` with `secret`; `now` in Unix seconds; `tolerance_s` for the
    /// schemes that sign a time.
    ///
    /// # Errors
    /// What is wrong, naming the header.
    #[allow(
        clippy::too_many_lines,
        reason = "one arm per verification scheme, each read beside its provider's docs"
    )]
    pub(crate) fn check(
        &self,
        secret: &[u8],
        headers: &(impl Headers + ?Sized),
        body: &[u8],
        now: i64,
        tolerance_s: i64,
    ) -> Result<(), Refusal> {
        let fresh = |ts: i64, header: &str| {
            if now.abs_diff(ts) > tolerance_s.unsigned_abs() {
                Err(format!(
                    "{header} is outside the {tolerance_s} s tolerance (a replay, or a clock far off)"
                ))
            } else {
                Ok(())
            }
        };
        match self {
            Self::Stripe => {
                let header = need(headers, "stripe-signature", "Stripe-Signature")?;
                let mut t = None;
                let mut v1 = Vec::new();
                for part in header.split(',') {
                    match part.trim().split_once('=') {
                        Some(("t", v)) => t = Some(v),
                        Some(("v1", v)) => v1.push(v),
                        _ => {}
                    }
                }
                let t = t.ok_or("Stripe-Signature has no t= timestamp")?;
                let ts = t
                    .parse::<i64>()
                    .map_err(|_| "Stripe-Signature's t= is not a number")?;
                if v1.is_empty() {
                    return Err("Stripe-Signature has no v1= signature".into());
                }
                let signed = [t.as_bytes(), b".", body].concat();
                // Several v1 signatures while a secret is rolled: any may match.
                let ok = v1.iter().any(|sig| {
                    hex::decode(sig).is_ok_and(|d| mac(Algorithm::Sha256, secret, &signed, &d))
                });
                if !ok {
                    return Err("Stripe-Signature does not match the body".into());
                }
                fresh(ts, "Stripe-Signature's t=")
            }
            Self::Github => {
                let header = need(headers, "x-hub-signature-256", "X-Hub-Signature-256")?;
                let sig = header
                    .strip_prefix("sha256=")
                    .ok_or("X-Hub-Signature-256 must start with sha256=")?;
                digest_matches(Algorithm::Sha256, Encoding::Hex, secret, body, sig)
                    .map_err(|e| format!("X-Hub-Signature-256 {e}"))
            }
            Self::Shopify => {
                let sig = need(headers, "x-shopify-hmac-sha256", "X-Shopify-Hmac-Sha256")?;
                digest_matches(Algorithm::Sha256, Encoding::Base64, secret, body, sig)
                    .map_err(|e| format!("X-Shopify-Hmac-Sha256 {e}"))
            }
            Self::Slack => {
                let ts = need(
                    headers,
                    "x-slack-request-timestamp",
                    "X-Slack-Request-Timestamp",
                )?;
                let sig = need(headers, "x-slack-signature", "X-Slack-Signature")?;
                let at = ts
                    .parse::<i64>()
                    .map_err(|_| "X-Slack-Request-Timestamp is not a number")?;
                let sig = sig
                    .strip_prefix("v0=")
                    .ok_or("X-Slack-Signature must start with v0=")?;
                let signed = [b"v0:", ts.as_bytes(), b":", body].concat();
                digest_matches(Algorithm::Sha256, Encoding::Hex, secret, &signed, sig)
                    .map_err(|e| format!("X-Slack-Signature {e}"))?;
                fresh(at, "X-Slack-Request-Timestamp")
            }
            Self::Zendesk => {
                let sig = need(
                    headers,
                    "x-zendesk-webhook-signature",
                    "X-Zendesk-Webhook-Signature",
                )?;
                let ts = need(
                    headers,
                    "x-zendesk-webhook-signature-timestamp",
                    "X-Zendesk-Webhook-Signature-Timestamp",
                )?;
                let signed = [ts.as_bytes(), body].concat();
                digest_matches(Algorithm::Sha256, Encoding::Base64, secret, &signed, sig)
                    .map_err(|e| format!("X-Zendesk-Webhook-Signature {e}"))?;
                let at = parse_timestamp(ts)
                    .ok_or("X-Zendesk-Webhook-Signature-Timestamp is not a time")?;
                fresh(at, "X-Zendesk-Webhook-Signature-Timestamp")
            }
            Self::Hmac(g) => {
                let header = need(headers, &g.header, &g.header)?;
                let sig = header
                    .strip_prefix(g.prefix.as_str())
                    .ok_or_else(|| format!("{} must start with {:?}", g.header, g.prefix))?;
                let ts = match &g.timestamp_header {
                    Some(h) => Some((need(headers, h, h)?, h)),
                    None => None,
                };
                let signed = signed_payload(&g.payload, ts.map(|(t, _)| t), body);
                digest_matches(g.algorithm, g.encoding, secret, &signed, sig)
                    .map_err(|e| format!("{} {e}", g.header))?;
                match ts {
                    Some((t, h)) => {
                        let at = parse_timestamp(t).ok_or_else(|| format!("{h} is not a time"))?;
                        fresh(at, h)
                    }
                    None => Ok(()),
                }
            }
        }
    }
}

fn need<'h>(
    headers: &'h (impl Headers + ?Sized),
    name: &str,
    shown: &str,
) -> Result<&'h str, Refusal> {
    headers
        .get(name)
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| format!("the {shown} header is missing"))
}

/// `template` with `{timestamp}` and `{body}` filled in (bytes: the body need not
/// be text).
fn signed_payload(template: &str, timestamp: Option<&str>, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 32);
    let mut rest = template;
    while let Some(at) = rest.find('{') {
        out.extend_from_slice(&rest.as_bytes()[..at]);
        let tail = &rest[at..];
        if let Some(t) = tail.strip_prefix("{body}") {
            out.extend_from_slice(body);
            rest = t;
        } else if let Some(t) = tail.strip_prefix("{timestamp}") {
            out.extend_from_slice(timestamp.unwrap_or_default().as_bytes());
            rest = t;
        } else {
            out.push(b'{');
            rest = &tail[1..];
        }
    }
    out.extend_from_slice(rest.as_bytes());
    out
}

/// Unix seconds (or milliseconds, when the number is that large) or ISO-8601.
fn parse_timestamp(s: &str) -> Option<i64> {
    match s.parse::<i64>() {
        Ok(n) if n > 100_000_000_000 => Some(n / 1000),
        Ok(n) => Some(n),
        Err(_) => crate::event::parse_time(s).map(|t| t.timestamp()),
    }
}

fn digest_matches(
    algorithm: Algorithm,
    encoding: Encoding,
    secret: &[u8],
    signed: &[u8],
    sig: &str,
) -> Result<(), Refusal> {
    let decoded = match encoding {
        Encoding::Hex => hex::decode(sig.trim()).map_err(|_| "is not a hex digest".to_owned()),
        Encoding::Base64 => base64::engine::general_purpose::STANDARD
            .decode(sig.trim())
            .map_err(|_| "is not a base64 digest".to_owned()),
    }?;
    if mac(algorithm, secret, signed, &decoded) {
        Ok(())
    } else {
        Err("does not match the body".into())
    }
}

/// Whether `expected` is the HMAC of `signed` under `secret` (constant time).
fn mac(algorithm: Algorithm, secret: &[u8], signed: &[u8], expected: &[u8]) -> bool {
    fn check<M: Mac + hmac::digest::KeyInit>(
        secret: &[u8],
        signed: &[u8],
        expected: &[u8],
    ) -> bool {
        let mut m = <M as Mac>::new_from_slice(secret).expect("HMAC takes keys of any length");
        m.update(signed);
        m.verify_slice(expected).is_ok()
    }
    match algorithm {
        Algorithm::Sha1 => check::<Hmac<Sha1>>(secret, signed, expected),
        Algorithm::Sha256 => check::<Hmac<Sha256>>(secret, signed, expected),
        Algorithm::Sha512 => check::<Hmac<Sha512>>(secret, signed, expected),
    }
}

/// The signature `verify` expects (hex or base64 of the HMAC of `signed`).
#[cfg(test)]
fn sign(algorithm: Algorithm, encoding: Encoding, secret: &[u8], signed: &[u8]) -> String {
    fn raw<M: Mac + hmac::digest::KeyInit>(secret: &[u8], signed: &[u8]) -> Vec<u8> {
        let mut m = <M as Mac>::new_from_slice(secret).expect("HMAC takes keys of any length");
        m.update(signed);
        m.finalize().into_bytes().to_vec()
    }
    let bytes = match algorithm {
        Algorithm::Sha1 => raw::<Hmac<Sha1>>(secret, signed),
        Algorithm::Sha256 => raw::<Hmac<Sha256>>(secret, signed),
        Algorithm::Sha512 => raw::<Hmac<Sha512>>(secret, signed),
    };
    match encoding {
        Encoding::Hex => hex::encode(bytes),
        Encoding::Base64 => base64::engine::general_purpose::STANDARD.encode(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn github_matches_its_documented_example() {
        // docs.github.com, "Validating webhook deliveries": secret, payload, signature.
        let h = headers(&[(
            "X-Hub-Signature-256",
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        )]);
        let secret = b"It's a Secret to Everybody";
        assert_eq!(
            Verify::Github.check(secret, h.as_slice(), b"Hello, World!", 0, 300),
            Ok(())
        );
        let err = Verify::Github
            .check(secret, h.as_slice(), b"Hello, World?", 0, 300)
            .unwrap_err();
        assert_eq!(err, "X-Hub-Signature-256 does not match the body");
        let err = Verify::Github
            .check(secret, headers(&[]).as_slice(), b"x", 0, 300)
            .unwrap_err();
        assert_eq!(err, "the X-Hub-Signature-256 header is missing");
    }

    #[test]
    fn slack_matches_its_documented_example() {
        // api.slack.com, "Verifying requests from Slack".
        let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        let h = headers(&[
            ("X-Slack-Request-Timestamp", "1531420618"),
            (
                "X-Slack-Signature",
                "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
            ),
        ]);
        let secret = b"8f742231b10e8888abcd99yyyzzz85a5";
        assert_eq!(
            Verify::Slack.check(secret, h.as_slice(), body, 1_531_420_618, 300),
            Ok(())
        );
        let stale = Verify::Slack
            .check(secret, h.as_slice(), body, 1_531_420_618 + 301, 300)
            .unwrap_err();
        assert!(stale.contains("outside the 300 s tolerance"), "{stale}");
    }

    #[test]
    fn zendesk_signs_the_timestamp_then_the_body() {
        // developer.zendesk.com/documentation/webhooks/verifying:
        // base64(HMACSHA256(TIMESTAMP + BODY)), the timestamp in ISO-8601.
        let secret = b"dGhpc19zZWNyZXRfaXNfZm9yX3Rlc3Rpbmdfb25seQ==";
        let body = br#"{"ticket":{"id":35436}}"#;
        let ts = "2024-12-01T10:00:00Z";
        let sig = sign(
            Algorithm::Sha256,
            Encoding::Base64,
            secret,
            &[ts.as_bytes(), body].concat(),
        );
        let h = headers(&[
            ("X-Zendesk-Webhook-Signature", &sig),
            ("X-Zendesk-Webhook-Signature-Timestamp", ts),
        ]);
        let at = 1_733_047_200; // 2024-12-01T10:00:00Z
        assert_eq!(
            Verify::Zendesk.check(secret, h.as_slice(), body, at, 300),
            Ok(())
        );
        assert!(
            Verify::Zendesk
                .check(secret, h.as_slice(), body, at + 301, 300)
                .unwrap_err()
                .contains("tolerance")
        );
    }

    #[test]
    fn generic_hmac_matches_zendesks_event_connector_example() {
        // developer.zendesk.com/documentation/event-connectors/webhooks/verifying:
        // that product signs BODY + TIMESTAMP; its published secret, body, timestamp
        // and signature, through the generic scheme.
        let g = Verify::Hmac(Generic {
            header: "x-zendesk-webhook-signature".into(),
            algorithm: Algorithm::Sha256,
            encoding: Encoding::Base64,
            prefix: String::new(),
            timestamp_header: Some("x-zendesk-webhook-signature-timestamp".into()),
            payload: "{body}{timestamp}".into(),
        });
        let h = headers(&[
            (
                "X-Zendesk-Webhook-Signature",
                "tRDSF7URY8BLCDlaBcQ7FHu051Zk+aAB0NKMP53teMw=",
            ),
            (
                "X-Zendesk-Webhook-Signature-Timestamp",
                "2021-07-25T10:00:00Z",
            ),
        ]);
        let secret = b"HRkRd4BeOAoUkfZr-mhauJT64rvBASlJRoIyPsd3zeA=";
        let at = 1_627_207_200; // 2021-07-25T10:00:00Z
        assert_eq!(
            g.check(secret, h.as_slice(), br#"{"say": "hello"}"#, at, 300),
            Ok(())
        );
        assert!(
            g.check(secret, h.as_slice(), br#"{"say": "hullo"}"#, at, 300)
                .is_err()
        );
    }

    #[test]
    fn stripe_signs_the_timestamp_and_the_body_and_accepts_any_v1() {
        // stripe.com/docs/webhooks "Verify manually": HMAC-SHA256(secret, "t.body").
        let secret = b"whsec_test_secret";
        let body = br#"{"id":"evt_1","type":"invoice.paid"}"#;
        let sig = sign(
            Algorithm::Sha256,
            Encoding::Hex,
            secret,
            &[b"1700000000.".as_slice(), body].concat(),
        );
        let header = format!("t=1700000000,v1=deadbeef,v1={sig},v0=ignored");
        let h = headers(&[("Stripe-Signature", &header)]);
        assert_eq!(
            Verify::Stripe.check(secret, h.as_slice(), body, 1_700_000_100, 300),
            Ok(())
        );
        let stale = Verify::Stripe
            .check(secret, h.as_slice(), body, 1_700_000_301, 300)
            .unwrap_err();
        assert!(stale.contains("tolerance"), "{stale}");
        let h = headers(&[("Stripe-Signature", "t=1700000000,v1=00")]);
        assert_eq!(
            Verify::Stripe
                .check(secret, h.as_slice(), body, 1_700_000_000, 300)
                .unwrap_err(),
            "Stripe-Signature does not match the body"
        );
    }

    #[test]
    fn shopify_is_base64_of_the_body_hmac() {
        let secret = b"shpss_secret";
        let body = br#"{"id":820982911946154508}"#;
        let sig = sign(Algorithm::Sha256, Encoding::Base64, secret, body);
        let h = headers(&[("X-Shopify-Hmac-Sha256", &sig)]);
        assert_eq!(
            Verify::Shopify.check(secret, h.as_slice(), body, 0, 300),
            Ok(())
        );
        let h = headers(&[("X-Shopify-Hmac-Sha256", "not base64!")]);
        assert_eq!(
            Verify::Shopify
                .check(secret, h.as_slice(), body, 0, 300)
                .unwrap_err(),
            "X-Shopify-Hmac-Sha256 is not a base64 digest"
        );
    }

    #[test]
    fn generic_hmac_follows_its_declaration() {
        let g = Verify::Hmac(Generic {
            header: "x-signature".into(),
            algorithm: Algorithm::Sha512,
            encoding: Encoding::Hex,
            prefix: "sha512=".into(),
            timestamp_header: Some("x-timestamp".into()),
            payload: "{timestamp}:{body}".into(),
        });
        let body = b"{}";
        let sig = sign(Algorithm::Sha512, Encoding::Hex, b"k", b"1700000000:{}");
        let h = headers(&[
            ("X-Signature", &format!("sha512={sig}")),
            ("X-Timestamp", "1700000000"),
        ]);
        assert_eq!(
            g.check(b"k", h.as_slice(), body, 1_700_000_000, 300),
            Ok(())
        );
        assert!(
            g.check(b"k", h.as_slice(), body, 1_800_000_000, 300)
                .is_err()
        );
        assert!(
            g.check(b"other", h.as_slice(), body, 1_700_000_000, 300)
                .is_err()
        );
        assert_eq!(
            signed_payload("a{b}{body}{timestamp}", Some("7"), b"B"),
            b"a{b}B7"
        );
    }
}
