//! Who is calling: bearer tokens resolved to a [`Principal`] — the owner
//! (`admin.token`, every scope and every tool) or a named client (`[clients.NAME]`,
//! its own scopes and tool patterns). Used by the admin API and by `/mcp`.
//!
//! A token is compared with every configured token in constant time, all of them
//! every time, so neither the answer's timing nor its content tells how close a
//! guess was or which caller a token belongs to.

use std::sync::Arc;

use subtle::ConstantTimeEq;

use crate::config::{Config, Scope, Secret};
use crate::connectors::recorder::glob_match;

/// The owner's name in records and the audit log.
pub(crate) const OWNER: &str = "owner";

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Principal {
    /// `owner` or the client's name.
    pub name: String,
    scopes: Vec<Scope>,
    /// Glob patterns of the tools it may list and call.
    tools: Vec<String>,
}

impl Principal {
    /// The owner: every scope, every tool.
    pub(crate) fn owner() -> Self {
        Self {
            name: OWNER.to_owned(),
            scopes: vec![Scope::Admin],
            tools: vec!["*".to_owned()],
        }
    }

    /// The client `name` of `config`, if configured.
    pub(crate) fn of_client(config: &Config, name: &str) -> Option<Self> {
        config.clients.get(name).map(|c| Self {
            name: name.to_owned(),
            scopes: c.scopes.clone(),
            tools: c.tools.clone(),
        })
    }

    /// Whether it holds `scope` (`admin` holds every one).
    pub(crate) fn has(&self, scope: Scope) -> bool {
        self.scopes
            .iter()
            .any(|s| *s == scope || *s == Scope::Admin)
    }

    /// Its scopes as configured.
    pub(crate) fn scopes(&self) -> &[Scope] {
        &self.scopes
    }

    /// Whether it is the owner (`admin.token`).
    pub(crate) fn is_owner(&self) -> bool {
        self.name == OWNER && self.scopes == [Scope::Admin]
    }

    /// Whether it may list and call the tool `name`.
    pub(crate) fn may_use_tool(&self, name: &str) -> bool {
        self.tools.iter().any(|p| glob_match(p, name))
    }
}

/// Why a request was not authenticated; the message is safe to send back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthFailure {
    Missing,
    Invalid,
}

impl AuthFailure {
    pub(crate) fn message(self) -> &'static str {
        match self {
            Self::Missing => {
                "missing token: send Authorization: Bearer <token> (admin.token or a [clients.NAME] token)"
            }
            Self::Invalid => "invalid token",
        }
    }
}

/// Every token the daemon accepts, with the caller each one stands for.
#[derive(Debug, Default)]
pub(crate) struct Callers {
    tokens: Vec<(Secret, Principal)>,
}

/// The shared table.
pub(crate) type SharedCallers = Arc<Callers>;

impl Callers {
    /// The owner's `token` and the configured clients.
    pub(crate) fn new(owner: &Secret, config: &Config) -> Self {
        let mut tokens = vec![(owner.clone(), Principal::owner())];
        for (name, c) in &config.clients {
            if let Some(p) = Principal::of_client(config, name) {
                tokens.push((c.token.clone(), p));
            }
        }
        Self { tokens }
    }

    /// The caller an `Authorization` header value stands for.
    ///
    /// # Errors
    /// When the header is absent, not `Bearer`, or names no configured token.
    pub(crate) fn authenticate(&self, header: Option<&str>) -> Result<Principal, AuthFailure> {
        let given = header
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or(AuthFailure::Missing)?;
        self.authenticate_token(given)
    }

    /// The caller a token stands for.
    ///
    /// # Errors
    /// When it is no configured token.
    pub(crate) fn authenticate_token(&self, given: &str) -> Result<Principal, AuthFailure> {
        let mut found = None;
        for (token, principal) in &self.tokens {
            let same = !token.expose().is_empty()
                && bool::from(given.as_bytes().ct_eq(token.expose().as_bytes()));
            if same && found.is_none() {
                found = Some(principal);
            }
        }
        found.cloned().ok_or(AuthFailure::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClientConfig;

    fn callers() -> Callers {
        let mut config = Config::default();
        config.clients.insert(
            "agent".into(),
            ClientConfig {
                token: Secret::new("agent-token"),
                tools: vec!["lookup_*".into()],
                scopes: vec![Scope::RunsRead],
            },
        );
        Callers::new(&Secret::new("owner-token"), &config)
    }

    #[test]
    fn tokens_resolve_to_their_caller_with_its_scopes_and_tools() {
        let c = callers();
        let owner = c.authenticate(Some("Bearer owner-token")).unwrap();
        assert_eq!(owner.name, OWNER);
        assert!(owner.has(Scope::StateWrite) && owner.may_use_tool("anything"));
        let agent = c.authenticate(Some("Bearer agent-token")).unwrap();
        assert_eq!(agent.name, "agent");
        assert!(agent.has(Scope::RunsRead));
        assert!(!agent.has(Scope::RunsReplay) && !agent.has(Scope::Admin));
        assert!(agent.may_use_tool("lookup_customer"));
        assert!(!agent.may_use_tool("refund_order"));
    }

    #[test]
    fn missing_wrong_and_empty_tokens_are_refused() {
        let c = callers();
        assert_eq!(c.authenticate(None), Err(AuthFailure::Missing));
        assert_eq!(c.authenticate(Some("Basic x")), Err(AuthFailure::Missing));
        assert_eq!(
            c.authenticate(Some("Bearer agent")),
            Err(AuthFailure::Invalid)
        );
        assert_eq!(c.authenticate(Some("Bearer ")), Err(AuthFailure::Invalid));
    }
}
