//! The audit log: who did what, append-only. Tool calls, admin writes (replays,
//! state changes, approval decisions), refused authentications, script loads and
//! reloads, and configuration loads each leave one entry.
//!
//! An entry names the actor (`owner`, a client's name, `spur` for the daemon
//! itself, `-` when unauthenticated), the action, its target, the outcome and a
//! detail. It never holds a secret: arguments appear as a digest, tokens never,
//! and details pass through the connections' redactor before they are stored.
//!
//! Durability: entries of writes and tool calls are made durable (group commit)
//! before the answer that reports the write; refused authentications are written
//! at once and made durable by the next flush, so a flood of bad tokens cannot
//! force fsyncs. Entries are kept as long as run records (`retention.runs`).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Digest as _;

use crate::connectors::redact::Redactor;
use crate::store::{Store, StoreError, id_key, key_id};

/// The actor of what the daemon does on its own (loading scripts and config).
pub(crate) const DAEMON: &str = "spur";

/// How an audited action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    /// Not allowed: a bad token, a missing scope, a tool the client may not call.
    Refused,
    /// Allowed, but it did not succeed (a tool's run failed, a bad request).
    Failed,
    /// Started and not finished yet (a tool call waiting for an approval).
    Pending,
}

/// One entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub id: u64,
    /// RFC 3339, set when appended.
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub detail: Value,
}

impl Entry {
    pub(crate) fn new(actor: &str, action: &str, target: &str) -> Self {
        Self {
            id: 0,
            at: String::new(),
            actor: actor.to_owned(),
            action: action.to_owned(),
            target: target.to_owned(),
            outcome: Outcome::Ok,
            detail: Value::Null,
        }
    }

    pub(crate) fn outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        self
    }

    pub(crate) fn detail(mut self, detail: impl Into<Value>) -> Self {
        self.detail = detail.into();
        self
    }
}

/// The digest the log keeps of a tool call's arguments: `sha256:` and the first 16
/// hex digits of the SHA-256 of their JSON, enough to match a call to a log line
/// without keeping customer data in the audit log.
pub(crate) fn digest(value: &Value) -> String {
    let bytes = serde_json::to_vec(value).expect("a JSON value always serialises");
    let hash = sha2::Sha256::digest(&bytes);
    format!("sha256:{}", &hex::encode(hash)[..16])
}

/// Filters of `GET /api/audit` and `spur audit`.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub since_ms: i64,
    pub actor: Option<String>,
    pub action: Option<String>,
}

impl AuditFilter {
    fn matches(&self, e: &Entry) -> bool {
        self.actor.as_deref().is_none_or(|a| a == e.actor)
            && self
                .action
                .as_deref()
                .is_none_or(|a| a == e.action || e.action.starts_with(&format!("{a}.")))
    }
}

/// Where audit entries are kept (a backend's part of the storage seam).
#[async_trait::async_trait]
pub trait AuditLog: Send + Sync + 'static {
    /// Stores `entry` (its id and time set here); durable with the next flush.
    ///
    /// # Errors
    /// On store failure.
    fn insert(&self, entry: Entry) -> Result<Entry, StoreError>;

    /// Waits until every entry inserted so far is durable.
    ///
    /// # Errors
    /// On store failure.
    async fn sync(&self) -> Result<(), StoreError>;

    /// Entries matching `filter`, oldest first, at most `limit`.
    ///
    /// # Errors
    /// On store failure.
    fn list(&self, filter: &AuditFilter, limit: usize) -> Result<Vec<Entry>, StoreError>;

    /// Deletes entries stored before `cutoff_ms`; returns how many.
    ///
    /// # Errors
    /// On store failure.
    fn purge(&self, cutoff_ms: i64) -> Result<usize, StoreError>;
}

/// The handle the daemon passes around: the log and the redactor its details
/// pass through.
#[derive(Clone)]
pub struct Audit {
    log: Arc<dyn AuditLog>,
    redactor: Arc<Redactor>,
}

impl Audit {
    pub(crate) fn new(log: Arc<dyn AuditLog>, redactor: Arc<Redactor>) -> Self {
        Self { log, redactor }
    }

    /// Appends `entry` and waits until it is durable.
    ///
    /// # Errors
    /// On store failure.
    pub(crate) async fn append(&self, entry: Entry) -> Result<(), StoreError> {
        self.log.insert(self.redacted(entry))?;
        self.log.sync().await
    }

    /// Appends `entry` without waiting for it to be durable; a store failure is
    /// logged (what was being refused stays refused).
    pub(crate) fn append_soon(&self, entry: Entry) {
        if let Err(e) = self.log.insert(self.redacted(entry)) {
            tracing::error!(error = %e, "Writing an audit entry failed.");
        }
    }

    /// Entries matching `filter`, oldest first.
    ///
    /// # Errors
    /// On store failure.
    pub fn list(&self, filter: &AuditFilter, limit: usize) -> Result<Vec<Entry>, StoreError> {
        self.log.list(filter, limit)
    }

    /// Records what a load or reload of the scripts dir changed: each script loaded
    /// with a new content hash, each script gone, each load error. `known` holds
    /// the hashes of the previous load and is updated.
    pub(crate) fn scripts_loaded(
        &self,
        set: &crate::script::ScriptSet,
        known: &mut std::collections::BTreeMap<String, String>,
    ) {
        let action = if known.is_empty() {
            "script.load"
        } else {
            "script.reload"
        };
        let mut now = std::collections::BTreeMap::new();
        for script in &set.scripts {
            now.insert(script.name.clone(), script.hash.clone());
            if known.get(&script.name) != Some(&script.hash) {
                self.append_soon(
                    Entry::new(DAEMON, action, &script.path.display().to_string())
                        .detail(serde_json::json!({ "hash": script.hash })),
                );
            }
        }
        for name in known.keys().filter(|n| !now.contains_key(*n)) {
            self.append_soon(Entry::new(DAEMON, "script.remove", name));
        }
        for e in &set.errors {
            self.append_soon(
                Entry::new(DAEMON, action, &e.file)
                    .outcome(Outcome::Failed)
                    .detail(e.to_string()),
            );
        }
        *known = now;
    }

    pub(crate) fn purge(&self, cutoff_ms: i64) -> Result<usize, StoreError> {
        self.log.purge(cutoff_ms)
    }

    fn redacted(&self, mut entry: Entry) -> Entry {
        let text = serde_json::to_string(&entry.detail).expect("a JSON value always serialises");
        let clean = self.redactor.redact(&text);
        if clean != text {
            entry.detail =
                serde_json::from_str(&clean).unwrap_or(Value::String(clean.into_owned()));
        }
        entry.target = self.redactor.redact(&entry.target).into_owned();
        entry
    }
}

/// The sled backend, on the `audit` tree: the id as key, the time (ms, 8 bytes)
/// and the entry's JSON as value.
pub struct SledAudit {
    tree: sled::Tree,
    store: Store,
}

impl SledAudit {
    /// # Errors
    /// When the tree cannot be opened.
    pub fn open(store: &Store) -> Result<Arc<dyn AuditLog>, StoreError> {
        Ok(Arc::new(Self {
            tree: store.tree("audit")?,
            store: store.clone(),
        }))
    }
}

#[async_trait::async_trait]
impl AuditLog for SledAudit {
    fn insert(&self, mut entry: Entry) -> Result<Entry, StoreError> {
        let now = self.store.now_ms();
        entry.id = self.store.next_id()?;
        entry.at = chrono::DateTime::from_timestamp_millis(now)
            .map(crate::event::format_time)
            .unwrap_or_default();
        let mut value = now.to_be_bytes().to_vec();
        serde_json::to_writer(&mut value, &entry).expect("an audit entry always serialises");
        self.tree.insert(id_key(entry.id), value)?;
        self.store.flush_soon();
        Ok(entry)
    }

    async fn sync(&self) -> Result<(), StoreError> {
        self.store.sync().await
    }

    fn list(&self, filter: &AuditFilter, limit: usize) -> Result<Vec<Entry>, StoreError> {
        let mut out = Vec::new();
        for item in &self.tree {
            let (k, v) = item?;
            let at = v.get(..8).map_or(0, key_id) as i64;
            if at < filter.since_ms {
                continue;
            }
            let entry: Entry =
                serde_json::from_slice(v.get(8..).unwrap_or_default()).map_err(|e| {
                    StoreError::Corrupt {
                        key: format!("audit {}", key_id(&k)),
                        reason: e.to_string(),
                    }
                })?;
            if filter.matches(&entry) {
                out.push(entry);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    fn purge(&self, cutoff_ms: i64) -> Result<usize, StoreError> {
        crate::store::purge_before(&self.tree, cutoff_ms).map(|ids| ids.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn audit() -> Audit {
        let store = Store::temporary().unwrap();
        let redactor = Arc::new(Redactor::new(["s3cret-token".to_owned()], &[]));
        Audit::new(SledAudit::open(&store).unwrap(), redactor)
    }

    #[tokio::test]
    async fn entries_are_appended_in_order_filtered_and_never_hold_a_secret() {
        let a = audit();
        a.append(
            Entry::new("agent", "tool.call", "lookup")
                .detail(json!({"note": "Bearer s3cret-token"})),
        )
        .await
        .unwrap();
        a.append_soon(Entry::new("-", "auth.failed", "POST /mcp").outcome(Outcome::Refused));
        let all = a.list(&AuditFilter::default(), 10).unwrap();
        assert_eq!(all.len(), 2);
        assert!(all[0].id < all[1].id);
        assert!(
            !serde_json::to_string(&all)
                .unwrap()
                .contains("s3cret-token")
        );
        let tools = AuditFilter {
            action: Some("tool".into()),
            ..AuditFilter::default()
        };
        assert_eq!(a.list(&tools, 10).unwrap().len(), 1);
        let agent = AuditFilter {
            actor: Some("agent".into()),
            ..AuditFilter::default()
        };
        assert_eq!(a.list(&agent, 10).unwrap()[0].action, "tool.call");
    }

    #[test]
    fn the_digest_is_stable_and_short() {
        let d = digest(&json!({"user": "ada"}));
        assert_eq!(d, digest(&json!({"user": "ada"})));
        assert_ne!(d, digest(&json!({"user": "bob"})));
        assert_eq!(d.len(), "sha256:".len() + 16);
    }
}
