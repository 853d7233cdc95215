//! Retention: the pass that purges what `[retention]` no longer keeps, every minute.

use std::sync::Arc;
use std::time::Duration;

use super::App;

pub(super) async fn retention_loop(app: Arc<App>) {
    let mut tick = tokio::time::interval(Duration::from_mins(1));
    tick.tick().await;
    loop {
        tokio::select! {
            () = app.tasks.cancelled() => return,
            _ = tick.tick() => {}
        }
        let a = Arc::clone(&app);
        let result =
            tokio::task::spawn_blocking(move || a.purge_expired(a.queue.clock().now_ms())).await;
        match result {
            Ok(Ok(p)) if p.total() > 0 => tracing::info!(
                runs = p.runs,
                dead = p.dead_letters,
                events = p.events,
                state = p.state,
                approvals = p.approvals,
                audit = p.audit,
                sources = p.sources,
                "Purged expired records."
            ),
            Ok(Err(e)) => tracing::warn!(error = %e, "Purging expired records failed."),
            _ => {}
        }
    }
}

/// What one retention pass removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    pub runs: usize,
    pub dead_letters: usize,
    pub events: usize,
    pub state: usize,
    pub approvals: usize,
    pub audit: usize,
    pub sources: usize,
}

impl Purged {
    pub(crate) fn total(&self) -> usize {
        self.runs
            + self.dead_letters
            + self.events
            + self.state
            + self.approvals
            + self.audit
            + self.sources
    }
}

impl App {
    /// One retention pass as of `now_ms` over every tree (`[retention]`): run
    /// records, dead letters with their journals, events no pending job needs,
    /// expired state, decided approvals, audit entries (kept as long as run records),
    /// and script versions no job is pinned to.
    /// Blocking; the daemon runs it every minute.
    ///
    /// # Errors
    /// When the store fails.
    pub fn purge_expired(&self, now_ms: i64) -> anyhow::Result<Purged> {
        let r = &self.config.retention;
        let before = |d: Duration| now_ms.saturating_sub(crate::duration::as_ms(d));
        let runs = self.runs.purge(before(r.runs))?;
        // A dead letter's journal goes with it (kept until then for its replay).
        let dead = self.dead.purge(before(r.dead_letters))?;
        self.queue.forget_journals(&dead)?;
        let events = self.queue.purge(before(r.events))?;
        let state = self.state.purge_expired()?;
        let approvals = self.approvals.store.purge(before(r.approvals))?;
        let audit = self.audit.purge(before(r.runs))?;
        let pinned = self.queue.pinned_versions()?;
        let sources = self
            .versions
            .purge(&self.scripts.get(), &pinned, before(r.runs))?;
        Ok(Purged {
            runs,
            dead_letters: dead.len(),
            events,
            state,
            approvals,
            audit,
            sources,
        })
    }
}
