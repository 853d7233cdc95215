//! Script versions by content hash, so a run keeps the version it started on.
//!
//! Every loaded script's source is stored under its sha256 (sled: tree `sources`;
//! NATS: `nats/sources.rs`, shared by every node). A run
//! records the hash on its first execution; a later execution (a retry, a wake-up)
//! whose script has since changed compiles that stored version instead — an edit
//! never changes a run halfway. Compiled versions are cached.
//!
//! Retention removes a version once no pending job is pinned to it and it has not
//! been loaded for the retention time (`seen_ms` is refreshed while it is loaded).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::loader::{SourceFile, compile_script};
use super::{Script, ScriptSet};
use crate::clock::SharedClock;
use crate::store::{Store, StoreError};

const TREE: &str = "sources";

/// One stored version of a script.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredSource {
    pub(crate) name: String,
    pub(crate) path: PathBuf,
    pub(crate) text: String,
    /// When this version was last part of the loaded scripts.
    #[serde(default)]
    pub(crate) seen_ms: i64,
}

/// Where a backend keeps script sources by content hash (the storage seam). Every
/// daemon on the backend can read a version any of them stored, so a run pinned to
/// it continues anywhere.
pub(crate) trait ScriptSources: Send + Sync + 'static {
    /// Stores `source` under `hash` unless that hash is stored already.
    ///
    /// # Errors
    /// On store failure.
    fn put_if_absent(&self, hash: &str, source: &StoredSource) -> Result<(), StoreError>;

    /// Stores `source` under `hash`, replacing what was there.
    ///
    /// # Errors
    /// On store failure.
    fn put(&self, hash: &str, source: &StoredSource) -> Result<(), StoreError>;

    /// # Errors
    /// On store failure.
    fn get(&self, hash: &str) -> Result<Option<StoredSource>, StoreError>;

    /// Every stored version (unreadable entries are skipped).
    ///
    /// # Errors
    /// On store failure.
    fn all(&self) -> Result<Vec<(String, StoredSource)>, StoreError>;

    /// # Errors
    /// On store failure.
    fn remove(&self, hash: &str) -> Result<(), StoreError>;
}

/// Script sources in the `sources` tree of the sled store, keyed by hash. Writes
/// are flushed lazily: a version is written when it is loaded, long before a run
/// pinned to it can be durable.
pub(crate) struct SledSources {
    tree: sled::Tree,
}

impl SledSources {
    /// # Errors
    /// When the tree cannot be opened.
    pub(crate) fn open(store: &Store) -> Result<Self, StoreError> {
        Ok(Self {
            tree: store.tree(TREE)?,
        })
    }
}

fn encode(source: &StoredSource) -> Vec<u8> {
    serde_json::to_vec(source).expect("a source serialises")
}

impl ScriptSources for SledSources {
    fn put_if_absent(&self, hash: &str, source: &StoredSource) -> Result<(), StoreError> {
        let bytes = encode(source);
        // A lost race means the same content is stored: either way it is there.
        let _ = self
            .tree
            .compare_and_swap(hash.as_bytes(), None::<&[u8]>, Some(bytes))?;
        Ok(())
    }

    fn put(&self, hash: &str, source: &StoredSource) -> Result<(), StoreError> {
        self.tree.insert(hash.as_bytes(), encode(source))?;
        Ok(())
    }

    fn get(&self, hash: &str) -> Result<Option<StoredSource>, StoreError> {
        Ok(self
            .tree
            .get(hash.as_bytes())?
            .and_then(|v| serde_json::from_slice(&v).ok()))
    }

    fn all(&self) -> Result<Vec<(String, StoredSource)>, StoreError> {
        let mut out = Vec::new();
        for item in &self.tree {
            let (k, v) = item?;
            if let Ok(stored) = serde_json::from_slice(&v) {
                out.push((String::from_utf8_lossy(&k).into_owned(), stored));
            }
        }
        Ok(out)
    }

    fn remove(&self, hash: &str) -> Result<(), StoreError> {
        self.tree.remove(hash.as_bytes())?;
        Ok(())
    }
}

/// Stored script versions and their compiled forms.
pub struct Versions {
    sources: Arc<dyn ScriptSources>,
    clock: SharedClock,
    cache: Mutex<HashMap<String, Arc<Script>>>,
}

impl Versions {
    pub(crate) fn new(sources: Arc<dyn ScriptSources>, clock: SharedClock) -> Self {
        Self {
            sources,
            clock,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Stores the sources of every script of `set` (once per hash).
    ///
    /// # Errors
    /// When the store fails.
    pub(crate) fn remember(&self, set: &ScriptSet) -> Result<(), StoreError> {
        let now = self.clock.now_ms();
        for s in &set.scripts {
            let v = StoredSource {
                name: s.name.clone(),
                path: s.path.clone(),
                text: s.source.to_string(),
                seen_ms: now,
            };
            self.sources.put_if_absent(&s.hash, &v)?;
        }
        Ok(())
    }

    /// Removes versions that are not loaded now (`current`), that no pending job is
    /// pinned to (`pinned`), and that were last loaded before `cutoff_ms`; refreshes
    /// `seen_ms` of the loaded ones. Returns how many were removed.
    ///
    /// # Errors
    /// When the store fails.
    pub(crate) fn purge(
        &self,
        current: &ScriptSet,
        pinned: &HashSet<String>,
        cutoff_ms: i64,
    ) -> Result<usize, StoreError> {
        let now = self.clock.now_ms();
        let loaded: HashSet<&str> = current.scripts.iter().map(|s| s.hash.as_str()).collect();
        let mut n = 0;
        for (hash, mut stored) in self.sources.all()? {
            if loaded.contains(hash.as_str()) {
                // Refreshed now and then, not on every pass.
                if now - stored.seen_ms > 3_600_000 {
                    stored.seen_ms = now;
                    self.sources.put(&hash, &stored)?;
                }
            } else if !pinned.contains(&hash) && stored.seen_ms < cutoff_ms {
                self.sources.remove(&hash)?;
                self.cache.lock().remove(&hash);
                n += 1;
            }
        }
        Ok(n)
    }

    /// The path and source text of version `hash`, if kept.
    pub(crate) fn text(&self, hash: &str) -> Option<(PathBuf, String)> {
        let stored = self.sources.get(hash).ok()??;
        Some((stored.path, stored.text))
    }

    /// The script version `hash`, compiled with `engine` (the current modules).
    /// `None` when that version is unknown or no longer compiles.
    pub(crate) fn get(&self, hash: &str, engine: &rhai::Engine) -> Option<Arc<Script>> {
        if let Some(s) = self.cache.lock().get(hash) {
            return Some(Arc::clone(s));
        }
        let stored = self.sources.get(hash).ok()??;
        let script = match compile_script(
            engine,
            SourceFile {
                name: stored.name,
                path: stored.path,
                text: stored.text,
            },
        ) {
            Ok(s) => Arc::new(s),
            Err(errors) => {
                for e in errors {
                    tracing::error!(version = %hash, error = %e, "A pinned script version no longer compiles.");
                }
                return None;
            }
        };
        self.cache
            .lock()
            .insert(hash.to_owned(), Arc::clone(&script));
        Some(script)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::loader::SourceFile;
    use crate::store::now_ms;

    fn set_of(engine: &rhai::Engine, text: &str) -> ScriptSet {
        let script = compile_script(
            engine,
            SourceFile {
                name: "s".into(),
                path: "s.rhai".into(),
                text: text.into(),
            },
        )
        .unwrap();
        ScriptSet::new(
            vec![Arc::new(script)],
            Arc::default(),
            Vec::new(),
            Vec::new(),
        )
    }

    #[test]
    fn retired_versions_go_unless_a_job_is_pinned_to_them() {
        let engine = rhai::Engine::new();
        let store = Store::temporary().unwrap();
        let versions = Versions::new(
            Arc::new(SledSources::open(&store).unwrap()),
            Arc::clone(store.clock()),
        );
        let (v1, v2, v3) = (
            set_of(&engine, "let a = 1;"),
            set_of(&engine, "let a = 2;"),
            set_of(&engine, "let a = 3;"),
        );
        for set in [&v1, &v2, &v3] {
            versions.remember(set).unwrap();
        }
        let pinned: HashSet<String> = [v2.scripts[0].hash.clone()].into();
        let later = now_ms() + 1000;
        assert_eq!(versions.purge(&v3, &pinned, later).unwrap(), 1);
        assert!(versions.get(&v1.scripts[0].hash, &engine).is_none());
        assert!(versions.get(&v2.scripts[0].hash, &engine).is_some());
        assert!(versions.get(&v3.scripts[0].hash, &engine).is_some());
        assert_eq!(
            versions.purge(&v3, &pinned, now_ms() - 60_000).unwrap(),
            0,
            "nothing retired after the cutoff goes"
        );
    }
}
