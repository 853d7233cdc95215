//! Approvals: a run asks a person, parks, and resumes with the decision.
//!
//! A request is durable (tree `approvals`) and is decided once: deciding is a
//! compare-and-swap from `pending`, so a second decision is refused (409). When the
//! request names `approvers`, only they may decide. Unanswered requests expire at
//! `expires_at` and take `on_expiry` ("reject" unless asked otherwise). Every
//! decision (who, when, comment) is kept on the request and journaled into the run,
//! which shows it in its record.
//!
//! People decide through the admin API, `spur approvals`, the console
//! (`/ui/#/approvals`), Slack buttons (`slack.rs`) or signed links
//! (`link.rs`, `page.rs`) sent by email (`email.rs`) or by a script's own
//! channel (`channel.rs`, `on_approval`).

pub(crate) mod channel;
pub(crate) mod email;
pub(crate) mod link;
pub(crate) mod page;
pub(crate) mod service;
pub(crate) mod slack;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub(crate) use crate::connectors::slack::SlackMessage;
use crate::store::{Store, StoreError};

pub(crate) use service::Approvals;

const TREE: &str = "approvals";

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    Approved,
    Rejected,
    Expired,
}

impl Status {
    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "approved" => Self::Approved,
            "rejected" => Self::Rejected,
            "expired" => Self::Expired,
            _ => return None,
        })
    }
}

/// One approval request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Approval {
    pub id: String,
    /// The run (job) waiting for it and the journal key its decision goes to.
    pub job_id: u64,
    pub key: String,
    pub script: String,
    pub handler: String,
    /// `ask` (from `approval::ask`) or `connection` (a `require_approval` call).
    pub kind: String,
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default)]
    pub data: Value,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    pub status: Status,
    /// Whether an expired request counts as approved.
    pub approve_on_expiry: bool,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack: Option<SlackMessage>,
    /// Who was emailed the request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub email: Vec<String>,
}

impl Approval {
    /// What `approval::ask` returns: `#{approved, status, by, comment, data, at}`.
    pub(crate) fn decision(&self) -> Value {
        let approved = match self.status {
            Status::Approved => true,
            Status::Expired => self.approve_on_expiry,
            Status::Rejected | Status::Pending => false,
        };
        json!({
            "id": self.id,
            "approved": approved,
            "status": self.status,
            "by": self.decided_by,
            "comment": self.comment,
            "at": self.decided_at,
            "data": self.data,
        })
    }

    /// Whether `who` may decide (anyone when no approvers are named).
    pub(crate) fn allows(&self, who: &str) -> bool {
        self.approvers.is_empty()
            || self
                .approvers
                .iter()
                .any(|a| a.eq_ignore_ascii_case(who.trim()))
    }
}

/// Why a decision was refused.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    #[error("no approval {0}")]
    NotFound(String),
    #[error("approval {id} is already {status:?}")]
    AlreadyDecided { id: String, status: Status },
    #[error("{who:?} may not decide approval {id} (approvers: {approvers})")]
    NotAllowed {
        id: String,
        who: String,
        approvers: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where approval requests are kept (a backend's part of the storage seam).
pub trait ApprovalRequests: Send + Sync + 'static {
    /// Stores `a` unless a request with its id exists; returns the stored one and
    /// whether it was created now.
    ///
    /// # Errors
    /// On store failure.
    fn create_if_absent(&self, a: &Approval) -> Result<(Approval, bool), StoreError>;

    /// # Errors
    /// On store failure.
    fn get(&self, id: &str) -> Result<Option<Approval>, StoreError>;

    /// Every request, in no particular order.
    ///
    /// # Errors
    /// On store failure.
    fn all(&self) -> Result<Vec<Approval>, StoreError>;

    /// Applies `change` to the stored request `id` atomically (read, change, write
    /// only if unchanged meanwhile, else again); returns the request as written.
    ///
    /// # Errors
    /// `NotFound`, what `change` refuses, or store failure.
    fn transition(
        &self,
        id: &str,
        change: &dyn Fn(&mut Approval) -> Result<(), DecideError>,
    ) -> Result<Approval, DecideError>;

    /// Removes the requests `ids`.
    ///
    /// # Errors
    /// On store failure.
    fn remove(&self, ids: &[String]) -> Result<(), StoreError>;

    /// The time by the store's clock.
    fn now(&self) -> chrono::DateTime<chrono::Utc>;

    /// Requests, newest first, optionally of one status.
    ///
    /// # Errors
    /// On store failure.
    fn list(&self, status: Option<Status>) -> Result<Vec<Approval>, StoreError> {
        let mut out: Vec<Approval> = self
            .all()?
            .into_iter()
            .filter(|a| status.is_none_or(|s| s == a.status))
            .collect();
        out.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| b.id.cmp(&a.id))
        });
        Ok(out)
    }

    /// Decides a pending request once.
    ///
    /// # Errors
    /// `NotFound`, `AlreadyDecided` (HTTP 409), `NotAllowed` (403), or store failure.
    fn decide(
        &self,
        id: &str,
        approve: bool,
        by: &str,
        comment: Option<&str>,
    ) -> Result<Approval, DecideError> {
        let now = self.now();
        self.transition(id, &|a| {
            pending(a)?;
            if !a.allows(by) {
                return Err(DecideError::NotAllowed {
                    id: a.id.clone(),
                    who: by.to_owned(),
                    approvers: a.approvers.join(", "),
                });
            }
            a.status = if approve {
                Status::Approved
            } else {
                Status::Rejected
            };
            a.decided_by = Some(by.trim().to_owned());
            a.decided_at = Some(crate::event::format_time(now));
            a.comment = comment.filter(|c| !c.trim().is_empty()).map(str::to_owned);
            Ok(())
        })
    }

    /// Expires a pending request.
    ///
    /// # Errors
    /// As [`ApprovalRequests::decide`].
    fn expire(&self, id: &str) -> Result<Approval, DecideError> {
        let now = self.now();
        self.transition(id, &|a| {
            pending(a)?;
            a.status = Status::Expired;
            a.decided_at = Some(crate::event::format_time(now));
            Ok(())
        })
    }

    /// Removes decided requests (approved, rejected, expired) decided before
    /// `cutoff_ms`; pending ones stay until they are decided or expire. Returns how
    /// many were removed.
    ///
    /// # Errors
    /// On store failure.
    fn purge(&self, cutoff_ms: i64) -> Result<usize, StoreError> {
        let old: Vec<String> = self
            .all()?
            .into_iter()
            .filter(|a| {
                let decided_ms = a
                    .decided_at
                    .as_deref()
                    .and_then(crate::event::parse_time)
                    .map(|t| t.timestamp_millis());
                a.status != Status::Pending && decided_ms.is_some_and(|ms| ms < cutoff_ms)
            })
            .map(|a| a.id)
            .collect();
        self.remove(&old)?;
        Ok(old.len())
    }

    /// Remembers the Slack message of a request.
    ///
    /// # Errors
    /// On store failure.
    fn set_slack(&self, id: &str, msg: SlackMessage) -> Result<(), StoreError> {
        match self.transition(id, &|a| {
            a.slack = Some(msg.clone());
            Ok(())
        }) {
            Ok(_) | Err(DecideError::NotFound(_)) => Ok(()),
            Err(DecideError::Store(e)) => Err(e),
            Err(e) => Err(StoreError::Corrupt {
                key: format!("approval {id}"),
                reason: e.to_string(),
            }),
        }
    }
}

/// Refuses a change of a request that is no longer pending.
fn pending(a: &Approval) -> Result<(), DecideError> {
    if a.status == Status::Pending {
        Ok(())
    } else {
        Err(DecideError::AlreadyDecided {
            id: a.id.clone(),
            status: a.status,
        })
    }
}

/// The approval requests a daemon holds; cheap to clone.
pub(crate) type ApprovalStore = std::sync::Arc<dyn ApprovalRequests>;

/// Approval requests on sled: tree `approvals`, key the request id, value its JSON.
pub struct SledApprovals {
    tree: sled::Tree,
    clock: crate::clock::SharedClock,
}

impl SledApprovals {
    /// # Errors
    /// When the tree cannot be opened.
    pub fn open(store: &Store) -> Result<ApprovalStore, StoreError> {
        Ok(std::sync::Arc::new(Self {
            tree: store.tree(TREE)?,
            clock: std::sync::Arc::clone(store.clock()),
        }))
    }
}

impl ApprovalRequests for SledApprovals {
    fn create_if_absent(&self, a: &Approval) -> Result<(Approval, bool), StoreError> {
        let bytes = serde_json::to_vec(a).expect("an approval serialises");
        match self
            .tree
            .compare_and_swap(a.id.as_bytes(), None::<&[u8]>, Some(bytes))?
        {
            Ok(()) => Ok((a.clone(), true)),
            Err(cas) => {
                let current = cas.current.map(|v| decode(&a.id, &v)).transpose()?;
                Ok((current.unwrap_or_else(|| a.clone()), false))
            }
        }
    }

    fn get(&self, id: &str) -> Result<Option<Approval>, StoreError> {
        self.tree
            .get(id.as_bytes())?
            .map(|v| decode(id, &v))
            .transpose()
    }

    fn all(&self) -> Result<Vec<Approval>, StoreError> {
        let mut out = Vec::new();
        for item in &self.tree {
            let (k, v) = item?;
            out.push(decode(&String::from_utf8_lossy(&k), &v)?);
        }
        Ok(out)
    }

    fn transition(
        &self,
        id: &str,
        change: &dyn Fn(&mut Approval) -> Result<(), DecideError>,
    ) -> Result<Approval, DecideError> {
        loop {
            let current = self.tree.get(id.as_bytes()).map_err(StoreError::from)?;
            let Some(bytes) = current.clone() else {
                return Err(DecideError::NotFound(id.to_owned()));
            };
            let mut a = decode(id, &bytes)?;
            change(&mut a)?;
            let next = serde_json::to_vec(&a).expect("an approval serialises");
            if self
                .tree
                .compare_and_swap(id.as_bytes(), current, Some(next))
                .map_err(StoreError::from)?
                .is_ok()
            {
                return Ok(a);
            }
        }
    }

    fn remove(&self, ids: &[String]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for id in ids {
            batch.remove(id.as_bytes());
        }
        Ok(self.tree.apply_batch(batch)?)
    }

    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }
}

pub(crate) fn decode(id: &str, v: &[u8]) -> Result<Approval, StoreError> {
    serde_json::from_slice(v).map_err(|e| StoreError::Corrupt {
        key: format!("approval {id}"),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(id: &str, approvers: &[&str]) -> Approval {
        Approval {
            id: id.into(),
            job_id: 1,
            key: "approval:x:1".into(),
            script: "s".into(),
            handler: "h".into(),
            kind: "ask".into(),
            title: "Delete?".into(),
            body: None,
            data: Value::Null,
            approvers: approvers.iter().map(|s| (*s).to_owned()).collect(),
            channel: None,
            status: Status::Pending,
            approve_on_expiry: false,
            created_at: "2026-01-01T00:00:00.000Z".into(),
            expires_at: None,
            expires_ms: None,
            decided_by: None,
            decided_at: None,
            comment: None,
            slack: None,
            email: Vec::new(),
        }
    }

    #[test]
    fn decided_once_and_only_by_approvers() {
        let store = SledApprovals::open(&Store::temporary().unwrap()).unwrap();
        let (_, created) = store
            .create_if_absent(&sample("a1", &["ops@example.com"]))
            .unwrap();
        assert!(created);
        let (_, again) = store.create_if_absent(&sample("a1", &[])).unwrap();
        assert!(!again, "ids are idempotent");
        assert!(matches!(
            store.decide("a1", true, "mallory", None),
            Err(DecideError::NotAllowed { .. })
        ));
        let a = store
            .decide("a1", true, "OPS@example.com", Some("ok"))
            .unwrap();
        assert_eq!(a.decision()["approved"], true);
        assert!(matches!(
            store.decide("a1", false, "ops@example.com", None),
            Err(DecideError::AlreadyDecided { .. })
        ));
        assert!(matches!(
            store.expire("a1"),
            Err(DecideError::AlreadyDecided { .. })
        ));
        assert!(matches!(
            store.decide("nope", true, "x", None),
            Err(DecideError::NotFound(_))
        ));
    }

    #[test]
    fn expiry_applies_on_expiry() {
        let store = SledApprovals::open(&Store::temporary().unwrap()).unwrap();
        let mut a = sample("a2", &[]);
        a.approve_on_expiry = true;
        store.create_if_absent(&a).unwrap();
        let d = store.expire("a2").unwrap().decision();
        assert_eq!(
            (d["approved"].as_bool(), d["status"].as_str()),
            (Some(true), Some("expired"))
        );
        assert_eq!(store.list(Some(Status::Pending)).unwrap().len(), 0);
    }
}
