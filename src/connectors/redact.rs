//! Removes configured secrets from anything that leaves the host: response bodies
//! and headers handed to scripts, error messages, URLs in run records, logs.

use std::borrow::Cow;

use base64::Engine as _;

/// Replaces every known secret with `***`.
#[derive(Debug, Default, Clone)]
pub(crate) struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    /// Builds from the configured secrets; also covers their Basic-auth encodings.
    pub(crate) fn new(
        secrets: impl IntoIterator<Item = String>,
        basic_pairs: &[(String, String)],
    ) -> Self {
        let mut secrets: Vec<String> = secrets.into_iter().filter(|s| s.len() >= 4).collect();
        for (user, password) in basic_pairs {
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            secrets.push(encoded);
        }
        // Longest first, so a secret containing another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Self { secrets }
    }

    pub(crate) fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = Cow::Owned(out.replace(s.as_str(), "***"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_secrets_and_their_basic_encoding() {
        let r = Redactor::new(
            ["xoxb-123456".to_owned()],
            &[("user".into(), "pass".into())],
        );
        assert_eq!(r.redact("token xoxb-123456 echoed"), "token *** echoed");
        assert_eq!(r.redact("Basic dXNlcjpwYXNz"), "Basic ***");
        assert!(matches!(r.redact("clean"), Cow::Borrowed(_)));
    }
}
