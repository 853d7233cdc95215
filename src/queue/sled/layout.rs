//! The queue tree's layout: its key prefixes and key builders, the decoders of what
//! it stores, and the two logs (events `e`, webhook requests `w`) with the one
//! visitor and the one purge they share.

use serde_json::{Map, Value};

use super::super::{Job, QueueError, RunWrites, StoredEvent, StoredRequest};
use crate::store::{Store, StoreError, id_key, key_id};

pub(super) const EVENT: u8 = b'e';
pub(super) const REQUEST: u8 = b'w';
pub(super) const DEDUP: u8 = b'd';
pub(super) const JOB: u8 = b'j';
pub(super) const JOURNAL: u8 = b'r';
pub(super) const SCHEDULE: [u8; 2] = [b's', b'c'];
pub(super) const META_DEDUP_GEN: &[u8] = b"dedup_generation";
pub(super) const META_DEDUP_ROTATED: &[u8] = b"dedup_rotated_ms";
/// The default `retention.dedup`: Segment's own window.
pub(super) const DEFAULT_DEDUP_WINDOW_MS: i64 = 24 * 3600 * 1000;

/// Events of `store`'s log received at or after `since_ms`, oldest first (also for
/// reading a store no daemon holds).
///
/// # Errors
/// When the store fails or a record is corrupt.
pub fn events_since(store: &Store, since_ms: i64) -> Result<Vec<StoredEvent>, QueueError> {
    let mut out = Vec::new();
    visit_events_since(store, since_ms, usize::MAX, &mut |e| {
        out.push(e);
        true
    })?;
    Ok(out)
}

/// Visits the newest `limit` events received at or after `since_ms`, oldest first,
/// one at a time (memory stays flat however long the log); stops early when
/// `visit` returns false.
///
/// # Errors
/// When the store fails or a record is corrupt.
pub(crate) fn visit_events_since(
    store: &Store,
    since_ms: i64,
    limit: usize,
    visit: &mut dyn FnMut(StoredEvent) -> bool,
) -> Result<(), QueueError> {
    visit_log(store.queue_tree(), EVENT, since_ms, limit, &mut |seq, v| {
        Ok(visit(decode_event(seq, v)?))
    })
}

/// Webhook requests received at or after `since_ms`, oldest first.
///
/// # Errors
/// When the store fails or a record is corrupt.
pub(crate) fn requests_since(
    store: &Store,
    since_ms: i64,
) -> Result<Vec<StoredRequest>, QueueError> {
    let mut out = Vec::new();
    visit_log(
        store.queue_tree(),
        REQUEST,
        since_ms,
        usize::MAX,
        &mut |seq, v| {
            out.push(decode_request(seq, v)?);
            Ok(true)
        },
    )?;
    Ok(out)
}

/// Called with each log entry's sequence number and stored value; false stops.
pub(super) type LogVisitor<'a> = dyn FnMut(u64, &[u8]) -> Result<bool, QueueError> + 'a;

/// Visits the newest `limit` entries of the log under `prefix` (events, requests:
/// received ms + JSON) received at or after `since_ms`, oldest first.
pub(super) fn visit_log(
    tree: &sled::Tree,
    prefix: u8,
    since_ms: i64,
    limit: usize,
    visit: &mut LogVisitor<'_>,
) -> Result<(), QueueError> {
    // Backwards to find where the window starts, reading only the times.
    let mut start = None;
    let mut count = 0;
    for item in tree.scan_prefix([prefix]).rev() {
        let (k, v) = item.map_err(StoreError::from)?;
        let received = v.get(..8).map_or(0, key_id) as i64;
        if received < since_ms || count >= limit {
            break;
        }
        start = Some(k);
        count += 1;
    }
    let Some(start) = start else { return Ok(()) };
    for item in tree.range(start..).take(count) {
        let (k, v) = item.map_err(StoreError::from)?;
        if k.first() != Some(&prefix) {
            break;
        }
        if !visit(key_id(&k[1..]), &v)? {
            break;
        }
    }
    Ok(())
}

/// Removes entries of the log under `prefix` received before `cutoff_ms`, stopping
/// at the first one a pending job needs (`min_live`); returns how many.
pub(super) fn purge_log(
    tree: &sled::Tree,
    prefix: u8,
    cutoff_ms: i64,
    min_live: u64,
) -> Result<usize, QueueError> {
    let mut removed = 0;
    let mut batch = sled::Batch::default();
    for item in tree.scan_prefix([prefix]) {
        let (k, v) = item.map_err(StoreError::from)?;
        let received = v.get(..8).map_or(0, key_id) as i64;
        if received >= cutoff_ms || key_id(&k[1..]) >= min_live {
            break;
        }
        batch.remove(k);
        removed += 1;
        if removed % 1000 == 0 {
            tree.apply_batch(std::mem::take(&mut batch))
                .map_err(StoreError::from)?;
        }
    }
    tree.apply_batch(batch).map_err(StoreError::from)?;
    Ok(removed)
}

pub(super) fn all_jobs(tree: &sled::Tree) -> Result<Vec<Job>, QueueError> {
    tree.scan_prefix([JOB])
        .map(|item| {
            let (k, v) = item?;
            decode_job(key_id(&k), &v)
        })
        .collect()
}

pub(super) fn decode_job(id: u64, v: &[u8]) -> Result<Job, QueueError> {
    serde_json::from_slice(v).map_err(|e| QueueError::Corrupt {
        id,
        reason: e.to_string(),
    })
}

pub(super) fn event_key(seq: u64) -> [u8; 9] {
    log_key(EVENT, seq)
}

pub(super) fn log_key(prefix: u8, seq: u64) -> [u8; 9] {
    let mut k = [prefix; 9];
    k[1..].copy_from_slice(&id_key(seq));
    k
}

pub(super) fn job_key(id: u64) -> [u8; 9] {
    let mut k = [JOB; 9];
    k[1..].copy_from_slice(&id_key(id));
    k
}

pub(super) fn journal_prefix(job: u64) -> [u8; 9] {
    let mut k = [JOURNAL; 9];
    k[1..].copy_from_slice(&id_key(job));
    k
}

pub(super) fn schedule_key(script: &str, handler: &str) -> Vec<u8> {
    let mut k = SCHEDULE.to_vec();
    k.extend_from_slice(script.as_bytes());
    k.push(0);
    k.extend_from_slice(handler.as_bytes());
    k
}

/// Adds `writes` of `job` to `batch`: its state changes, and its journal entries
/// when `journal` (a run that finishes now does not need them); returns the
/// journal keys written.
pub(super) fn put_writes(
    batch: &mut sled::Batch,
    job: u64,
    writes: &RunWrites,
    journal: bool,
) -> Result<Vec<Vec<u8>>, QueueError> {
    for w in &writes.state {
        let key =
            crate::state::sled_key(&w.ns, &w.key).map_err(|e| QueueError::Write(e.to_string()))?;
        match &w.value {
            Some(v) => batch.insert(key, crate::state::sled_value(v)),
            None => batch.remove(key),
        }
    }
    let mut written = Vec::new();
    if journal {
        for (k, v) in &writes.journal {
            let key = journal_key(job, k);
            batch.insert(
                key.clone(),
                serde_json::to_vec(v).expect("a JSON value always serialises"),
            );
            written.push(key);
        }
    }
    Ok(written)
}

pub(super) fn journal_key(job: u64, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + key.len());
    k.push(JOURNAL);
    k.extend_from_slice(&id_key(job));
    k.extend_from_slice(key.as_bytes());
    k
}

pub(super) fn dedup_key(generation: u32, message_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(5 + message_id.len());
    k.push(DEDUP);
    k.extend_from_slice(&generation.to_be_bytes());
    k.extend_from_slice(message_id.as_bytes());
    k
}

pub(super) fn decode_request(seq: u64, v: &[u8]) -> Result<StoredRequest, QueueError> {
    #[derive(serde::Deserialize)]
    struct Entry {
        source: String,
        request: Value,
    }
    let corrupt = |reason: String| {
        QueueError::Store(StoreError::Corrupt {
            key: format!("request {seq}"),
            reason,
        })
    };
    if v.len() < 8 {
        return Err(corrupt("too short".into()));
    }
    let e: Entry = serde_json::from_slice(&v[8..]).map_err(|e| corrupt(e.to_string()))?;
    Ok(StoredRequest {
        seq,
        received_ms: key_id(&v[..8]) as i64,
        source: e.source,
        request: e.request,
    })
}

pub(super) fn decode_event(seq: u64, v: &[u8]) -> Result<StoredEvent, QueueError> {
    let corrupt = |reason: String| {
        QueueError::Store(StoreError::Corrupt {
            key: format!("event {seq}"),
            reason,
        })
    };
    if v.len() < 8 {
        return Err(corrupt("too short".into()));
    }
    let received_ms = key_id(&v[..8]) as i64;
    let body: Map<String, Value> =
        serde_json::from_slice(&v[8..]).map_err(|e| corrupt(e.to_string()))?;
    Ok(StoredEvent {
        seq,
        received_ms,
        body,
    })
}
