//! Deciding requests and waking the runs that wait for them.

use std::sync::Arc;

use serde_json::Value;

use super::{Approval, ApprovalStore, DecideError, Status, slack};
use crate::config::ApprovalsConfig;
use crate::connectors::slack::Slack;
use crate::queue::{Queue, WaitKind};

/// Decisions, expiry and reconciliation; cheap to clone.
#[derive(Clone)]
pub struct Approvals {
    pub store: ApprovalStore,
    queue: Queue,
    slack: Slack,
    cfg: Arc<ApprovalsConfig>,
}

impl Approvals {
    pub(crate) fn new(
        store: ApprovalStore,
        queue: Queue,
        slack: Slack,
        cfg: ApprovalsConfig,
    ) -> Self {
        Self {
            store,
            queue,
            slack,
            cfg: Arc::new(cfg),
        }
    }

    pub(crate) fn config(&self) -> &ApprovalsConfig {
        &self.cfg
    }

    /// The Slack client on `approvals.slack_connection`.
    pub(crate) fn slack(&self) -> &Slack {
        &self.slack
    }

    /// Decides `id` once and wakes its run with the decision.
    ///
    /// # Errors
    /// See [`ApprovalStore::decide`].
    pub(crate) async fn decide(
        &self,
        id: &str,
        approve: bool,
        by: &str,
        comment: Option<&str>,
    ) -> Result<Approval, DecideError> {
        let a = self.store.decide(id, approve, by, comment)?;
        tracing::info!(approval = %a.id, status = ?a.status, by = %by, "Approval decided.");
        self.finish(&a).await;
        Ok(a)
    }

    /// Expires `id` (its timer fired) and wakes its run.
    ///
    /// # Errors
    /// See [`ApprovalStore::expire`].
    pub(crate) async fn expire(&self, id: &str) -> Result<Approval, DecideError> {
        let a = self.store.expire(id)?;
        tracing::info!(approval = %a.id, approved = a.approve_on_expiry, "Approval expired.");
        self.finish(&a).await;
        Ok(a)
    }

    async fn finish(&self, a: &Approval) {
        if let Err(e) = self.queue.resume(a.job_id, &a.key, a.decision()).await {
            // The decision is stored; `reconcile` wakes the run at the next start.
            tracing::error!(approval = %a.id, error = %e, "Waking the run failed.");
        }
        if let Some(msg) = &a.slack
            && let Err(e) = slack::update(&self.slack, msg, a).await
        {
            tracing::warn!(approval = %a.id, error = %e, "Updating the Slack message failed.");
        }
    }

    /// Wakes runs whose request was decided but that still wait (a crash between
    /// the decision and the wake-up). Run at start-up.
    ///
    /// # Errors
    /// When the store fails.
    pub(crate) async fn reconcile(&self) -> Result<usize, crate::queue::QueueError> {
        let mut woken = 0;
        for job in self.queue.waiting_jobs()? {
            let Some(w) = &job.waiting else { continue };
            let WaitKind::Approval { approval_id, .. } = &w.kind else {
                continue;
            };
            match self.store.get(approval_id) {
                Ok(Some(a)) if a.status != Status::Pending => {
                    if self.queue.resume(job.id, &w.key, a.decision()).await? {
                        woken += 1;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(approval = %approval_id, error = %e, "Reading an approval failed.");
                }
            }
        }
        Ok(woken)
    }

    /// Requests as the API shows them.
    ///
    /// # Errors
    /// When the store fails.
    pub(crate) fn list(
        &self,
        status: Option<Status>,
    ) -> Result<Vec<Value>, crate::store::StoreError> {
        Ok(self
            .store
            .list(status)?
            .into_iter()
            .map(|a| serde_json::to_value(a).expect("an approval serialises"))
            .collect())
    }
}
