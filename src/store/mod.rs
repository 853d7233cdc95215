//! The embedded store: one sled database under the data dir, its trees, ids, the
//! clock, and group commit.
//!
//! Invariants:
//! - The flusher (`flusher.rs`) does the flushes spur asks for. Every write an
//!   answer or an outbound call depends on waits for it through [`Store::sync`], so
//!   many callers share one flush (group commit); everything else written is
//!   flushed within [`LAZY_FLUSH`] (by the flusher, and by sled's own 200 ms timer on
//!   disk stores). Losing such a write in a crash only repeats work, it never loses
//!   an accepted event.
//! - Ids from [`Store::next_id`] increase across restarts, so they order by time.
//! - Time comes from the store's [`Clock`] (system, or manual in tests).

mod flusher;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use flusher::Flusher;

use crate::clock::{Clock, SharedClock, SystemClock};
use crate::config::SledMode;

/// Longest a write waits to be flushed when nobody asks for it.
pub(crate) const LAZY_FLUSH: Duration = Duration::from_millis(200);

/// Tree names (one place, so the layout is readable).
pub(crate) mod trees {
    /// Events, jobs and dedup entries, prefixed, so one batch commits them atomically.
    pub(crate) const QUEUE: &str = "queue";
    pub(crate) const RUNS: &str = "runs";
    pub(crate) const DEAD: &str = "dead_letters";
    pub(crate) const STATE: &str = "state";
    pub(crate) const META: &str = "meta";
}

/// Errors of the embedded store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store at {path}: {source}")]
    Open { path: String, source: sled::Error },
    #[error("store I/O failed: {0}")]
    Sled(#[from] sled::Error),
    #[error("stored record {key} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("the store is shutting down")]
    Closed,
    /// A clustered store (NATS) did not answer or take a write; a retry may succeed.
    #[error("{0}")]
    Unavailable(String),
}

/// A handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    queue: sled::Tree,
    runs: sled::Tree,
    dead: sled::Tree,
    state: sled::Tree,
    meta: sled::Tree,
    flusher: Flusher,
    clock: SharedClock,
    staged: Staged,
    ids: Ids,
}

/// Ids handed out from blocks: one sled id `g` reserves the block
/// `[g * ID_BLOCK, (g + 1) * ID_BLOCK)`, and the ids inside it cost an atomic add.
/// sled's own generator takes the database's shared lock, which waits while the
/// writer applies a batch; taking it once per block keeps workers from queueing
/// behind the writer for their run ids. sled's ids increase across restarts (also
/// after a crash), so every block starts above every id handed out before.
#[derive(Default)]
struct Ids {
    /// The next id of the current block, and the block's end; `refill` is taken
    /// only when the block has run out.
    next: std::sync::atomic::AtomicU64,
    end: std::sync::atomic::AtomicU64,
    refill: parking_lot::Mutex<()>,
}

/// Ids per block (see [`Ids`]): small enough that ids stay far below 2^53, so
/// JSON readers that use doubles see them exactly.
const ID_BLOCK: u64 = 1024;

type StagedValue = (u64, Option<Vec<u8>>);

/// Writes of the queue tree handed to the writer thread and not applied yet, by key
/// (`None`: a removal), each with the ticket of its hand-off. Reads of those keys
/// see them first, so a run's changes are visible — to the next run of its user,
/// to every run of a shared key — the moment it hands them over, not only once the
/// writer applied them. The writer applies hand-offs in order, so what a later run
/// read from here is never committed before what it read.
#[derive(Default)]
struct Staged {
    /// Key → (ticket, value or `None` for a removal).
    entries: parking_lot::Mutex<std::collections::HashMap<Vec<u8>, StagedValue>>,
    next: std::sync::atomic::AtomicU64,
    /// Tickets handed over and not applied yet.
    open: parking_lot::Mutex<std::collections::BTreeSet<u64>>,
    /// Woken whenever a hand-off is applied.
    applied: tokio::sync::Notify,
}

impl Store {
    /// Opens (or creates) the store in `dir`.
    ///
    /// # Errors
    /// When sled cannot open the directory (permissions, another daemon holding it).
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, Arc::new(SystemClock), SledMode::default())
    }

    /// [`Store::open`] with a clock of the caller's.
    ///
    /// # Errors
    /// As [`Store::open`].
    pub(crate) fn open_with(
        dir: &Path,
        clock: SharedClock,
        mode: SledMode,
    ) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .and_then(|()| restrict(dir, 0o700))
            .map_err(|e| StoreError::Open {
                path: dir.display().to_string(),
                source: e.into(),
            })?;
        let db = sled::Config::new()
            .path(dir.join("db"))
            .cache_capacity(256 << 20)
            .mode(match mode {
                SledMode::LowSpace => sled::Mode::LowSpace,
                SledMode::HighThroughput => sled::Mode::HighThroughput,
            })
            .flush_every_ms(Some(200))
            .open()
            .map_err(|source| StoreError::Open {
                path: dir.display().to_string(),
                source,
            })?;
        Self::from_db(db, clock)
    }

    /// A store that lives only in memory (for `spur run`, `spur test`, the REPL).
    ///
    /// # Errors
    /// When sled cannot create its temporary files.
    pub fn temporary() -> Result<Self, StoreError> {
        Self::temporary_with(Arc::new(SystemClock))
    }

    /// [`Store::temporary`] with a clock of the caller's (`spur test`'s virtual one).
    ///
    /// # Errors
    /// As [`Store::temporary`].
    pub(crate) fn temporary_with(clock: SharedClock) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .temporary(true)
            .flush_every_ms(None)
            .open()?;
        Self::from_db(db, clock)
    }

    fn from_db(db: sled::Db, clock: SharedClock) -> Result<Self, StoreError> {
        let flusher = Flusher::start(db.clone(), LAZY_FLUSH);
        Ok(Self {
            inner: Arc::new(Inner {
                queue: db.open_tree(trees::QUEUE)?,
                runs: db.open_tree(trees::RUNS)?,
                dead: db.open_tree(trees::DEAD)?,
                state: db.open_tree(trees::STATE)?,
                meta: db.open_tree(trees::META)?,
                db,
                flusher,
                clock,
                staged: Staged::default(),
                ids: Ids::default(),
            }),
        })
    }

    /// The clock every part reads time from.
    pub(crate) fn clock(&self) -> &SharedClock {
        &self.inner.clock
    }

    /// Milliseconds since the Unix epoch, by the store's clock.
    pub(crate) fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    pub(crate) fn queue_tree(&self) -> &sled::Tree {
        &self.inner.queue
    }
    pub(crate) fn runs_tree(&self) -> &sled::Tree {
        &self.inner.runs
    }
    pub(crate) fn dead_tree(&self) -> &sled::Tree {
        &self.inner.dead
    }
    pub(crate) fn state_tree(&self) -> &sled::Tree {
        &self.inner.state
    }
    pub(crate) fn meta_tree(&self) -> &sled::Tree {
        &self.inner.meta
    }

    /// Opens another named tree (for modules that own their layout).
    ///
    /// # Errors
    /// On sled I/O failure.
    pub(crate) fn tree(&self, name: &str) -> Result<sled::Tree, StoreError> {
        Ok(self.inner.db.open_tree(name)?)
    }

    /// A fresh id, larger than every id handed out before, also across restarts.
    ///
    /// # Errors
    /// On sled I/O failure.
    pub fn next_id(&self) -> Result<u64, StoreError> {
        use std::sync::atomic::Ordering;
        let ids = &self.inner.ids;
        loop {
            let end = ids.end.load(Ordering::Acquire);
            let id = ids.next.fetch_add(1, Ordering::AcqRel);
            if id < end {
                return Ok(id);
            }
            let _refill = ids.refill.lock();
            if ids.end.load(Ordering::Acquire) != end {
                continue; // Another thread refilled meanwhile.
            }
            let start = self
                .inner
                .db
                .generate_id()?
                .checked_mul(ID_BLOCK)
                .ok_or_else(|| StoreError::Corrupt {
                    key: "id generator".into(),
                    reason: "ids exhausted".into(),
                })?;
            // `end` moves last, so a thread that sees the new end takes from the
            // new block.
            ids.next.store(start + 1, Ordering::Release);
            ids.end.store(start + ID_BLOCK, Ordering::Release);
            return Ok(start);
        }
    }

    /// Waits until every write made before this call is on disk (shared fsync).
    ///
    /// # Errors
    /// When the flush fails.
    pub async fn sync(&self) -> Result<(), StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.inner.flusher.request(Box::new(move |r| {
            let _ = tx.send(r);
        }));
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Calls `then` once every write made before this call is on disk.
    pub(crate) fn after_sync(&self, then: Box<dyn FnOnce(Result<(), StoreError>) + Send>) {
        self.inner.flusher.request(then);
    }

    /// Stages `writes` (keys of the queue tree) as handed to the writer; returns the
    /// hand-off's ticket, for [`Store::unstage`] once applied.
    pub(crate) fn stage(
        &self,
        writes: impl IntoIterator<Item = (Vec<u8>, Option<Vec<u8>>)>,
    ) -> u64 {
        let staged = &self.inner.staged;
        let mut entries = staged.entries.lock();
        let ticket = staged
            .next
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        staged.open.lock().insert(ticket);
        for (k, v) in writes {
            entries.insert(k, (ticket, v));
        }
        ticket
    }

    /// A staged value of `key`: `Some(None)` when a removal is staged.
    #[allow(
        clippy::option_option,
        reason = "not staged, a removal or a value: three cases"
    )]
    pub(crate) fn staged(&self, key: &[u8]) -> Option<Option<Vec<u8>>> {
        self.inner
            .staged
            .entries
            .lock()
            .get(key)
            .map(|(_, v)| v.clone())
    }

    /// Staged writes of keys starting with `prefix`.
    pub(crate) fn staged_with_prefix(&self, prefix: &[u8]) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        self.inner
            .staged
            .entries
            .lock()
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, (_, v))| (k.clone(), v.clone()))
            .collect()
    }

    /// Forgets the staged writes of `ticket` (applied now), unless a later hand-off
    /// staged the same key again.
    pub(crate) fn unstage(&self, ticket: u64, keys: impl IntoIterator<Item = Vec<u8>>) {
        let staged = &self.inner.staged;
        let mut entries = staged.entries.lock();
        for k in keys {
            if entries.get(&k).is_some_and(|(t, _)| *t == ticket) {
                entries.remove(&k);
            }
        }
        staged.open.lock().remove(&ticket);
        drop(entries);
        staged.applied.notify_waiters();
    }

    /// Waits until every hand-off staged before this call is applied by the writer,
    /// then until everything is on disk: what must hold before something that
    /// depends on runs' committed writes leaves the process (the Segment outbox).
    ///
    /// # Errors
    /// When the flush fails.
    pub(crate) async fn sync_handoffs(&self) -> Result<(), StoreError> {
        let staged = &self.inner.staged;
        let upto = {
            let _order = staged.entries.lock();
            staged.next.load(std::sync::atomic::Ordering::Relaxed)
        };
        loop {
            let applied = staged.applied.notified();
            tokio::pin!(applied);
            applied.as_mut().enable();
            if staged.open.lock().range(..upto).next().is_none() {
                break;
            }
            applied.await;
        }
        self.sync().await
    }

    /// Asks for a flush of everything written so far, without waiting for it.
    pub(crate) fn flush_soon(&self) {
        self.inner.flusher.request(Box::new(|_| {}));
    }

    /// Bytes the database occupies on disk.
    pub(crate) fn size_on_disk(&self) -> u64 {
        self.inner.db.size_on_disk().unwrap_or(0)
    }

    /// What the database holds: keys and bytes (key + value) per tree and key
    /// prefix (the first byte of the key), by a full scan. For an operator asking
    /// where the disk goes; never on a hot path.
    ///
    /// # Errors
    /// When the store fails.
    pub(crate) fn usage(&self) -> Result<Vec<Usage>, StoreError> {
        let mut out = Vec::new();
        for name in self.inner.db.tree_names() {
            let tree = self.inner.db.open_tree(&name)?;
            let mut by_prefix = std::collections::BTreeMap::<u8, (u64, u64)>::new();
            for item in &tree {
                let (k, v) = item?;
                let entry = by_prefix
                    .entry(k.first().copied().unwrap_or(0))
                    .or_default();
                entry.0 += 1;
                entry.1 += (k.len() + v.len()) as u64;
            }
            let tree = String::from_utf8_lossy(&name).into_owned();
            out.extend(by_prefix.into_iter().map(|(prefix, (keys, bytes))| Usage {
                tree: tree.clone(),
                prefix: if prefix.is_ascii_graphic() {
                    char::from(prefix).to_string()
                } else {
                    format!("{prefix:#04x}")
                },
                keys,
                bytes,
            }));
        }
        Ok(out)
    }
}

/// Keys and bytes of one key prefix of one tree ([`Store::usage`]).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Usage {
    pub tree: String,
    /// The key's first byte as a character (`e` events, `j` jobs, …), or in hex
    /// when it is not printable (the ids that key runs and dead letters).
    pub prefix: String,
    pub keys: u64,
    pub bytes: u64,
}

/// Sets `path`'s permission bits to `mode` unless they already grant no more than it
/// (the data dir is `0700`, the admin token file `0600`: only the daemon's user).
///
/// # Errors
/// When the permissions cannot be read or changed.
pub(crate) fn restrict(path: &Path, mode: u32) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let current = std::fs::metadata(path)?.permissions().mode() & 0o777;
        if current & !mode != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
            tracing::info!(path = %path.display(), from = format!("{current:o}"), to = format!("{mode:o}"), "Tightened permissions.");
        }
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

/// Deletes leading entries (id order = time order) whose 8-byte ms prefix is older
/// than `cutoff_ms`; returns their ids.
pub(crate) fn purge_before(tree: &sled::Tree, cutoff_ms: i64) -> Result<Vec<u64>, StoreError> {
    let mut ids = Vec::new();
    let mut batch = sled::Batch::default();
    for item in tree {
        let (k, v) = item?;
        let at = v.get(..8).map_or(0, key_id) as i64;
        if at >= cutoff_ms {
            break;
        }
        ids.push(key_id(&k));
        batch.remove(k);
        if ids.len() % 1000 == 0 {
            tree.apply_batch(std::mem::take(&mut batch))?;
        }
    }
    tree.apply_batch(batch)?;
    Ok(ids)
}

/// Big-endian key bytes of an id, so keys sort by id.
pub(crate) fn id_key(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

/// The id of a big-endian key.
pub(crate) fn key_id(key: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = key.len().min(8);
    b[8 - n..].copy_from_slice(&key[key.len() - n..]);
    u64::from_be_bytes(b)
}

/// Milliseconds since the Unix epoch, by the system clock (for code that has no
/// store at hand; everything with a store reads [`Store::now_ms`]).
pub fn now_ms() -> i64 {
    SystemClock.now_ms()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sync_handoffs_waits_for_earlier_hand_offs_to_be_applied() {
        let store = Store::temporary().unwrap();
        let first = store.stage([(b"k".to_vec(), Some(b"v".to_vec()))]);
        let s = store.clone();
        let mut waiting = tokio::spawn(async move { s.sync_handoffs().await });
        // (A negative needs a window: long enough for the flusher to answer a plain
        // sync many times over.)
        let early = tokio::time::timeout(std::time::Duration::from_millis(300), &mut waiting).await;
        assert!(early.is_err(), "returned while a hand-off was still staged");
        // A hand-off staged after the call does not hold it up.
        let _later = store.stage([(b"j".to_vec(), None)]);
        store.unstage(first, [b"k".to_vec()]);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("applied: the barrier returns")
            .unwrap()
            .unwrap();
    }
}
