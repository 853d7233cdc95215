//! Live reload: a file watcher on the scripts dir (and its `lib/`) that recompiles
//! the set after a short quiet period and swaps it in.
//!
//! Every editor save pattern (write in place, truncate-then-write, write-to-temp
//! then rename, several events per save) ends in the same way: the directory is
//! reloaded whole once the events stop for [`DEBOUNCE`]. A script that fails to
//! compile keeps its last good version live, with the error reported in the log and
//! in `/api/scripts`; a deleted script's handlers are gone. Runs in flight or parked
//! keep the version they started on (`pinned.rs`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{EngineOptions, Live, ScriptSet, load_dir};

/// Quiet time after the last file event before reloading.
pub(crate) const DEBOUNCE: Duration = Duration::from_millis(40);

/// Keeps the watcher alive; dropping it stops watching.
pub(crate) struct ScriptWatcher {
    _watcher: notify::RecommendedWatcher,
}

/// Watches `dir`; on changes, reloads into `live`. `before_live` sees each new set
/// before it goes live (its versions are stored and its load audited before any
/// run can start on it).
///
/// # Errors
/// When the platform watcher cannot be created.
pub(crate) fn watch(
    dir: &Path,
    live: Arc<Live>,
    engine: EngineOptions,
    before_live: impl Fn(&ScriptSet) + Send + Sync + 'static,
    stop: CancellationToken,
) -> notify::Result<ScriptWatcher> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Instant>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res
            && ev.paths.iter().any(|p| relevant(p))
        {
            let _ = tx.send(Instant::now());
        }
    })?;
    watcher.watch(dir, RecursiveMode::Recursive)?;
    let dir: PathBuf = dir.to_path_buf();
    let before_live = Arc::new(before_live);
    tokio::spawn(async move {
        loop {
            let first = tokio::select! {
                () = stop.cancelled() => return,
                got = rx.recv() => match got { Some(t) => t, None => return },
            };
            // Debounce: wait until the events stop.
            while let Ok(Some(_)) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {}
            let (dir, live, engine) = (dir.clone(), Arc::clone(&live), engine.clone());
            let before_live = Arc::clone(&before_live);
            let reloaded = tokio::task::spawn_blocking(move || {
                let fresh = load_dir(&dir, &engine);
                let set = keep_last_good(fresh, &live.get());
                before_live(&set);
                live.swap(set);
                live.get()
            })
            .await;
            match reloaded {
                Ok(set) => {
                    for e in &set.errors {
                        tracing::error!(error = %e, "Script failed to load; its last good version stays live.");
                    }
                    let handlers: usize = set.scripts.iter().map(|s| s.handlers.len()).sum();
                    tracing::info!(
                        scripts = set.scripts.len(),
                        handlers,
                        errors = set.errors.len(),
                        ms = first.elapsed().as_millis() as u64,
                        "Scripts reloaded."
                    );
                }
                Err(e) => tracing::error!(error = %e, "Reloading scripts failed."),
            }
        }
    });
    Ok(ScriptWatcher { _watcher: watcher })
}

/// `.rhai` files (not hidden editor temp files) and directories.
fn relevant(p: &Path) -> bool {
    let hidden = p
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.') || n.ends_with('~'));
    !hidden && (p.extension().is_none_or(|e| e == "rhai"))
}

/// The new set, with the previous version of every script or module file that now
/// fails to load.
pub(crate) fn keep_last_good(new: ScriptSet, old: &ScriptSet) -> ScriptSet {
    let failed: Vec<&str> = new.errors.iter().map(|e| e.file.as_str()).collect();
    let mut scripts = new.scripts.clone();
    for s in &old.scripts {
        let path = s.path.display().to_string();
        if failed.contains(&path.as_str()) && !scripts.iter().any(|n| n.name == s.name) {
            scripts.push(Arc::clone(s));
        }
    }
    scripts.sort_by(|a, b| a.name.cmp(&b.name));
    let mut modules = new.modules.as_ref().clone();
    let mut sources = new.module_sources.clone();
    for (name, source) in &old.module_sources {
        if !failed.contains(&source.as_str()) {
            continue;
        }
        let Some((_, old_module)) = old.modules.iter().find(|(n, _)| n == name) else {
            continue;
        };
        // The last good module replaces the broken one (or the built-in fallback),
        // and comes back if the broken file left no module of its name at all.
        match modules.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = Arc::clone(old_module),
            None => modules.push((name.clone(), Arc::clone(old_module))),
        }
        match sources.iter_mut().find(|(n, _)| n == name) {
            Some(s) => s.1.clone_from(source),
            None => sources.push((name.clone(), source.clone())),
        }
    }
    ScriptSet::new(scripts, Arc::new(modules), sources, new.errors.clone())
}
