//! Signed decision links: `{public_url}/approvals/link/{token}`, where the token
//! names one request, one decision (approve or reject), who decides, and until
//! when the link works, signed with HMAC-SHA256 under the daemon's link key
//! (`<data_dir>/approval-link-key`, made at first start, mode 0600).
//!
//! A link is single-use because a request is decided once: after any decision
//! every link of the request is refused. It expires with the request, or after
//! [`LINK_TTL`], whichever comes first. Opening a link only shows a confirmation
//! page (mail scanners follow links); the page's POST decides.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::Approval;

/// The longest a link works (a request's own expiry may end it sooner).
pub(crate) const LINK_TTL_MS: i64 = 7 * 86_400_000;

/// What a link says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Claim {
    /// The request.
    #[serde(rename = "a")]
    pub approval: String,
    /// Approve (true) or reject.
    #[serde(rename = "y")]
    pub approve: bool,
    /// Who decides through it.
    pub by: String,
    /// Until when it works (ms since the epoch).
    pub exp: i64,
}

/// Why a link was refused; the message is safe to show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LinkError {
    #[error("this link is not valid (it was changed or cut short)")]
    Invalid,
    #[error("this link has expired")]
    Expired,
}

/// Signs and checks links.
pub(crate) struct Links {
    key: Vec<u8>,
    /// Where links point: the daemon's public URL, without a trailing `/`.
    base: String,
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Links")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Links {
    pub(crate) fn new(key: &[u8], base: &str) -> Self {
        Self {
            key: key.to_vec(),
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    fn mac(&self, payload: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(payload.as_bytes());
        mac
    }

    /// The token of `claim`.
    pub(crate) fn sign(&self, claim: &Claim) -> String {
        let payload = B64.encode(serde_json::to_vec(claim).expect("a claim serialises"));
        let tag = B64.encode(self.mac(&payload).finalize().into_bytes());
        format!("{payload}.{tag}")
    }

    /// What `token` says, if it is ours, unchanged and not expired at `now_ms`.
    ///
    /// # Errors
    /// [`LinkError`] for a forged, altered or expired token.
    pub(crate) fn verify(&self, token: &str, now_ms: i64) -> Result<Claim, LinkError> {
        let (payload, tag) = token.split_once('.').ok_or(LinkError::Invalid)?;
        let tag = B64.decode(tag).map_err(|_| LinkError::Invalid)?;
        self.mac(payload)
            .verify_slice(&tag)
            .map_err(|_| LinkError::Invalid)?;
        let bytes = B64.decode(payload).map_err(|_| LinkError::Invalid)?;
        let claim: Claim = serde_json::from_slice(&bytes).map_err(|_| LinkError::Invalid)?;
        if claim.exp <= now_ms {
            return Err(LinkError::Expired);
        }
        Ok(claim)
    }

    /// The URL of `token`.
    pub(crate) fn url(&self, token: &str) -> String {
        format!("{}/approvals/link/{token}", self.base)
    }

    /// The console's approvals page (for a person who would rather log in).
    pub(crate) fn console(&self) -> String {
        format!("{}/ui/#/approvals", self.base)
    }

    /// The approve and reject links of `a` for `by`, made at `now_ms`.
    pub(crate) fn pair(&self, a: &Approval, by: &str, now_ms: i64) -> (String, String) {
        let exp = a
            .expires_ms
            .unwrap_or(i64::MAX)
            .min(now_ms.saturating_add(LINK_TTL_MS));
        let link = |approve| {
            self.url(&self.sign(&Claim {
                approval: a.id.clone(),
                approve,
                by: by.to_owned(),
                exp,
            }))
        };
        (link(true), link(false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim() -> Claim {
        Claim {
            approval: "apr_1_abc".into(),
            approve: true,
            by: "dpo@example.com".into(),
            exp: 2_000,
        }
    }

    #[test]
    fn a_signed_link_verifies_until_it_expires() {
        let links = Links::new(b"k", "https://spur.example.com/");
        let token = links.sign(&claim());
        assert_eq!(links.verify(&token, 1_999), Ok(claim()));
        assert_eq!(links.verify(&token, 2_000), Err(LinkError::Expired));
        assert!(
            links
                .url(&token)
                .starts_with("https://spur.example.com/approvals/link/")
        );
    }

    #[test]
    fn altered_or_foreign_links_are_refused() {
        let links = Links::new(b"k", "http://x");
        let token = links.sign(&claim());
        // Another key's link.
        let other = Links::new(b"other", "http://x").sign(&claim());
        assert_eq!(links.verify(&other, 0), Err(LinkError::Invalid));
        // A payload swapped for one that rejects, under the old tag.
        let (_, tag) = token.split_once('.').unwrap();
        let mut changed = claim();
        changed.approve = false;
        let payload = B64.encode(serde_json::to_vec(&changed).unwrap());
        assert_eq!(
            links.verify(&format!("{payload}.{tag}"), 0),
            Err(LinkError::Invalid)
        );
        for junk in ["", ".", "abc", "a.b", &token[..token.len() - 2]] {
            assert_eq!(links.verify(junk, 0), Err(LinkError::Invalid), "{junk}");
        }
    }
}
