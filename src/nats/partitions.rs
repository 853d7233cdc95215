//! Which node reads which partition.
//!
//! Every node publishes a heartbeat (`P.node.<id>`, expiring after [`NODE_TTL`]);
//! the live nodes are the heartbeats present. A partition's owner is named in
//! `P.own.N`, replaced only by compare-and-set on its sequence. A node takes a
//! partition that has no owner or whose owner's heartbeat is gone, up to its fair
//! share (partitions ÷ live nodes, rounded up), and gives back idle partitions above
//! it, so partitions spread over the nodes and move when one dies — within
//! [`NODE_TTL`] plus one round. A node restarted on its data directory keeps its id
//! ([`node_id`]) and so reads its partitions again at once.
//!
//! An owner reads its partition in order from the checkpoint (`P.ck.N`: every
//! message up to it finished), stored each round. What it reads that was already
//! in the stream when it took the partition is a replay: jobs with an end marker are
//! skipped (`queue.rs`).
//!
//! A node cut off long enough to lose its heartbeat may still run jobs of a
//! partition another node took meanwhile; the end markers keep each job's commit
//! (state, journal) to one node, but its outbound effects may then repeat, as after
//! a crash (docs/operations.md, "Clusters").

use std::collections::HashSet;
use std::future::IntoFuture as _;
use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use bytes::Bytes;
use futures_util::StreamExt as _;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::batch::{Batch, Failure};
use super::queue::{NatsQueue, Part};
use super::{Cluster, NatsError, PARTITIONS};
use crate::queue::Job;
use crate::store::Store;

/// How often a node beats, stores checkpoints and looks at partitions.
const ROUND: Duration = Duration::from_secs(1);

/// How long a node counts as live after its last heartbeat.
const NODE_TTL: Duration = Duration::from_secs(5);

/// The owner named in `P.own.N`.
#[derive(serde::Serialize, serde::Deserialize)]
struct Owner {
    node: String,
}

/// Keeps this node's share of partitions until the queue stops, then gives them
/// back (so others take them at once, not after [`NODE_TTL`]).
pub(super) async fn own(q: NatsQueue) {
    let mut every = tokio::time::interval(ROUND);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            () = q.inner.stop.cancelled() => break,
            _ = every.tick() => {
                if let Err(e) = round(&q).await {
                    tracing::warn!(error = %e, "Keeping partitions failed; trying again.");
                }
            }
        }
    }
    if let Err(e) = release_all(&q).await {
        tracing::warn!(error = %e, "Giving partitions back failed; other nodes take them once this node's heartbeat expires.");
    }
}

/// Where the local store keeps the node's id.
const NODE_ID_KEY: &[u8] = b"nats.node";

/// This node's id: the one it had on this data directory before, so that after a
/// crash it takes its partitions back at once rather than after [`NODE_TTL`] —
/// unless another live process beats under that id (a copied data directory: a
/// heartbeat from another host, or from a running process here), then a new one.
pub(super) async fn node_id(c: &Cluster, local: &Store) -> String {
    let meta = local.meta_tree();
    let kept = meta
        .get(NODE_ID_KEY)
        .ok()
        .flatten()
        .and_then(|v| String::from_utf8(v.to_vec()).ok());
    if let Some(id) = kept {
        let about: Option<serde_json::Value> = c
            .last(&c.subject("node", &id))
            .await
            .ok()
            .flatten()
            .map(|m| serde_json::from_slice(&m.payload).unwrap_or_default());
        let alive_elsewhere = about.as_ref().is_some_and(|about| {
            let here = about["host"].as_str() == Some(host_name());
            let running = about["pid"].as_u64().is_some_and(|pid| {
                pid != u64::from(std::process::id())
                    && std::path::Path::new(&format!("/proc/{pid}")).exists()
            });
            !here || running
        });
        if !alive_elsewhere {
            return id;
        }
        let about = about.unwrap_or_default();
        tracing::warn!(node = %id, host = %about["host"], pid = %about["pid"], "Another live process announces this node's id (a copied data directory?); taking a new one.");
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    // Not flushed here: lost in a crash before the next flush, the next start only
    // takes another id.
    if let Err(e) = meta.insert(NODE_ID_KEY, id.as_bytes()) {
        tracing::warn!(error = %e, "Keeping the node's id failed; the next start takes a new one.");
    }
    id
}

/// This machine's name (empty when unknown), in the heartbeat; read once.
fn host_name() -> &'static str {
    static HOST: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_owned())
            .unwrap_or_default()
    });
    &HOST
}

fn unavailable(e: &Failure) -> NatsError {
    NatsError::Unavailable(e.to_string())
}

async fn round(q: &NatsQueue) -> Result<(), NatsError> {
    let c = &q.inner.cluster;
    let me = q.inner.node.as_str();
    let describe = q.inner.describe.lock().clone();
    let mut about = describe.map_or_else(|| json!({}), |d| d());
    if let Some(o) = about.as_object_mut() {
        o.insert("node".into(), json!(me));
        o.insert("host".into(), json!(host_name()));
        o.insert("pid".into(), json!(std::process::id()));
        o.insert("partitions".into(), json!(q.inner.parts.lock().len()));
    }
    let mut beat = Batch::default();
    beat.put(
        c.subject("node", me),
        Bytes::from(about.to_string()),
        None,
        Some(NODE_TTL),
    );
    c.commit(beat).await.map_err(|e| unavailable(&e))?;
    let live: HashSet<String> = c
        .subjects(&c.subject("node", "*"))
        .await?
        .into_iter()
        .filter_map(|s| s.rsplit('.').next().map(str::to_owned))
        .collect();
    let fair = PARTITIONS.div_ceil(u32::try_from(live.len().max(1)).unwrap_or(1)) as usize;
    save_checkpoints(q).await?;
    let mut mine = q.inner.parts.lock().len();
    // Partitions this node reads from now on (named for it, or claimed).
    let mut taken = Vec::new();
    for p in 0..PARTITIONS {
        let subject = c.subject("own", &p.to_string());
        let lease = c.last(&subject).await?;
        let (owner, seq) = match &lease {
            Some(m) => (
                serde_json::from_slice::<Owner>(&m.payload)
                    .ok()
                    .map(|o| o.node),
                m.sequence,
            ),
            None => (None, 0),
        };
        let reading = q.inner.parts.lock().contains_key(&p);
        if owner.as_deref() == Some(me) {
            if !reading {
                taken.push(p);
            } else if mine > fair && idle(q, p) {
                release(q, p, seq).await?;
                mine -= 1;
            }
            continue;
        }
        if reading {
            // Another node took it (this one was thought gone): stop reading it.
            tracing::warn!(partition = p, "A partition was taken by another node.");
            stop(q, p);
            mine -= 1;
        }
        let free = owner.as_ref().is_none_or(|o| !live.contains(o));
        if free && mine < fair {
            let mut claim = Batch::default();
            claim.put(
                subject,
                Bytes::from(serde_json::to_vec(&Owner { node: me.into() }).expect("JSON")),
                Some(seq),
                None,
            );
            match c.commit(claim).await {
                Ok(_) => {
                    taken.push(p);
                    mine += 1;
                }
                // Another node was quicker.
                Err(Failure::Conflict) => {}
                Err(e) => return Err(unavailable(&e)),
            }
        }
    }
    start(q, &taken).await
}

fn idle(q: &NatsQueue, p: u32) -> bool {
    q.inner
        .parts
        .lock()
        .get(&p)
        .is_some_and(|part| part.pending.is_empty())
}

/// Starts reading the `taken` partitions, each from its checkpoint and knowing the
/// `wait_for`s parked in the cluster that its events may end (one listing for all,
/// made after the checkpoints were read: it holds every park they passed). If the
/// cluster does not answer, none starts; the next round takes them up again.
async fn start(q: &NatsQueue, taken: &[u32]) -> Result<(), NatsError> {
    if taken.is_empty() {
        return Ok(());
    }
    let c = &q.inner.cluster;
    let mut checkpoints = Vec::with_capacity(taken.len());
    for &p in taken {
        let ck = c
            .last(&c.subject("ck", &p.to_string()))
            .await?
            .and_then(|m| std::str::from_utf8(&m.payload).ok()?.parse::<u64>().ok())
            .unwrap_or(0);
        checkpoints.push((p, ck));
    }
    let parks = q.parked().await?;
    for (p, ck) in checkpoints {
        let cancel = q.inner.stop.child_token();
        let part = Part::new(ck, cancel.clone(), NatsQueue::waits_of(&parks, p));
        q.inner.parts.lock().insert(p, part);
        tracing::debug!(partition = p, "Reading a partition.");
        q.inner.cluster.runtime.spawn(read(q.clone(), p, cancel));
    }
    Ok(())
}

fn stop(q: &NatsQueue, p: u32) {
    if let Some(part) = q.inner.parts.lock().remove(&p) {
        part.cancel.cancel();
    }
}

/// Stores the checkpoints that moved.
async fn save_checkpoints(q: &NatsQueue) -> Result<(), NatsError> {
    let moved: Vec<(u32, u64)> = q
        .inner
        .parts
        .lock()
        .iter()
        .filter_map(|(p, part)| {
            let ck = part.checkpoint();
            (ck > part.saved).then_some((*p, ck))
        })
        .collect();
    let c = &q.inner.cluster;
    for (p, ck) in moved {
        let mut b = Batch::default();
        b.put(
            c.subject("ck", &p.to_string()),
            Bytes::from(ck.to_string()),
            None,
            None,
        );
        c.commit(b).await.map_err(|e| unavailable(&e))?;
        if let Some(part) = q.inner.parts.lock().get_mut(&p) {
            part.saved = part.saved.max(ck);
        }
    }
    Ok(())
}

/// Gives partition `p` back (its checkpoint stored first).
async fn release(q: &NatsQueue, p: u32, lease_seq: u64) -> Result<(), NatsError> {
    save_checkpoints(q).await?;
    stop(q, p);
    let c = &q.inner.cluster;
    let mut b = Batch::default();
    b.put(
        c.subject("own", &p.to_string()),
        Bytes::new(),
        Some(lease_seq),
        None,
    );
    match c.commit(b).await {
        Ok(_) | Err(Failure::Conflict) => Ok(()),
        Err(e) => Err(unavailable(&e)),
    }
}

async fn release_all(q: &NatsQueue) -> Result<(), NatsError> {
    save_checkpoints(q).await?;
    let c = &q.inner.cluster;
    let owned: Vec<u32> = q.inner.parts.lock().keys().copied().collect();
    for p in owned {
        if let Some(m) = c.last(&c.subject("own", &p.to_string())).await? {
            release(q, p, m.sequence).await?;
        }
    }
    c.handle
        .purge()
        .filter(c.subject("node", &q.inner.node))
        .into_future()
        .await
        .map_err(|e| NatsError::Unavailable(e.to_string()))?;
    Ok(())
}

/// Reads partition `p` until it is given back, starting again after an error.
async fn read(q: NatsQueue, p: u32, cancel: CancellationToken) {
    loop {
        match read_from(&q, p, &cancel).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(partition = p, error = %e, "Reading a partition failed; starting again.");
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(ROUND) => {}
                }
            }
        }
    }
}

async fn read_from(q: &NatsQueue, p: u32, cancel: &CancellationToken) -> Result<(), NatsError> {
    let c = &q.inner.cluster;
    let failed = |e: &dyn std::fmt::Display| NatsError::Unavailable(e.to_string());
    let Some(from) = q.inner.parts.lock().get(&p).map(|part| part.read + 1) else {
        return Ok(());
    };
    // What is already in the stream may have been run (partly) by an earlier owner.
    let replay_until = c.last_seq().await?;
    let n = p.to_string();
    let consumer = c
        .handle
        .create_consumer(pull::OrderedConfig {
            filter_subjects: vec![
                c.subject("ev", &n),
                c.subject("job", &n),
                c.subject("wh", &n),
                c.subject("wt", &n),
            ],
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: from,
            },
            ..Default::default()
        })
        .await
        .map_err(|e| failed(&e))?;
    let mut msgs = consumer.messages().await.map_err(|e| failed(&e))?;
    loop {
        while q.full() {
            // Too much read and not finished: wait for workers (re-checked each
            // 100 ms, so a missed wake-up costs no more).
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                () = q.inner.drained.notified() => {}
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
        let m = tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            m = msgs.next() => m,
        };
        let m = m
            .ok_or_else(|| NatsError::Unavailable("the partition's consumer ended".into()))?
            .map_err(|e| failed(&e))?;
        let seq = m.info().map_err(|e| failed(&e))?.stream_sequence;
        let leases = q.leases_of(p, &m, seq, seq <= replay_until).await?;
        if !q.queue_leases(p, seq, leases) {
            return Ok(());
        }
    }
}

/// Tells `f` of every parked run in the cluster, then of each new one.
pub(super) async fn watch_parks(q: NatsQueue, f: std::sync::Arc<dyn Fn(Job) + Send + Sync>) {
    let c = &q.inner.cluster;
    loop {
        let watched = async {
            let consumer = c
                .handle
                .create_consumer(pull::OrderedConfig {
                    filter_subject: c.subject("pk", "*"),
                    deliver_policy: DeliverPolicy::LastPerSubject,
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string())?;
            let mut msgs = consumer.messages().await.map_err(|e| e.to_string())?;
            while let Some(m) = msgs.next().await {
                let m = m.map_err(|e| e.to_string())?;
                if let Ok(job) = serde_json::from_slice::<Job>(&m.payload) {
                    f(job);
                } else if let Some(job) =
                    m.subject.rsplit('.').next().and_then(|id| id.parse().ok())
                {
                    // Woken (an empty park): no event may wake it any more.
                    q.forget_wait(job);
                }
            }
            Ok::<(), String>(())
        };
        tokio::select! {
            () = q.inner.stop.cancelled() => return,
            r = watched => {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "Watching parked runs failed; starting again.");
                }
            }
        }
        tokio::select! {
            () = q.inner.stop.cancelled() => return,
            () = tokio::time::sleep(ROUND) => {}
        }
    }
}
