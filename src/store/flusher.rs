//! Group commit: callers register a completion, one thread calls `Db::flush` for all
//! of them. A completion registered before a flush starts is answered only after that
//! flush (or a later one) has finished, so every write its caller made is durable.
//! When nobody asks, the same thread flushes every `lazy` interval, so writes that no
//! answer waits for (settles, run records) reach the disk too — no other thread
//! ever flushes.
//!
//! `flush_async` is not used: it hangs with several concurrent callers
//! (spacejam/sled#1308, reproduced on this machine; see stack-notes).

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::StoreError;

type Completion = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

pub(super) struct Flusher {
    shared: Arc<Shared>,
    thread: Option<thread::JoinHandle<()>>,
}

struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
}

struct Pending {
    waiters: Vec<Completion>,
    closed: bool,
}

impl Flusher {
    pub(super) fn start(db: sled::Db, lazy: Duration) -> Self {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending {
                waiters: Vec::new(),
                closed: false,
            }),
            wake: Condvar::new(),
        });
        let s = Arc::clone(&shared);
        let thread = thread::Builder::new()
            .name("spur-flusher".into())
            .spawn(move || run(&s, &db, lazy))
            .expect("spawning the flusher thread must succeed at start-up");
        Self {
            shared,
            thread: Some(thread),
        }
    }

    pub(super) fn request(&self, done: Completion) {
        let mut p = self.shared.pending.lock();
        if p.closed {
            drop(p);
            done(Err(StoreError::Closed));
            return;
        }
        p.waiters.push(done);
        drop(p);
        self.shared.wake.notify_one();
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.shared.pending.lock().closed = true;
        self.shared.wake.notify_one();
        // Wait for the thread (and its handle on the database) to end, so the store
        // can be opened again at once — unless the last handle is dropped by a
        // completion running on the flusher thread itself.
        if let Some(t) = self.thread.take()
            && t.thread().id() != thread::current().id()
        {
            let _ = t.join();
        }
    }
}

fn run(shared: &Shared, db: &sled::Db, lazy: Duration) {
    loop {
        let batch = {
            let mut p = shared.pending.lock();
            if p.waiters.is_empty() && !p.closed {
                // Nobody waits: flush what was written meanwhile after `lazy`.
                shared.wake.wait_for(&mut p, lazy);
            }
            if p.waiters.is_empty() && p.closed {
                return;
            }
            std::mem::take(&mut p.waiters)
        };
        let result = db.flush().map(|_| ());
        for done in batch {
            done(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(StoreError::Sled(e.clone())),
            });
        }
    }
}
