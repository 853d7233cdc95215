//! The writer's index of runs parked in `wait_for`, so each new event is matched
//! against the waits that could care (by `userId`, else all user-less waits) rather
//! than every parked run.
//!
//! A filter matches when every key equals the event's value at that key; keys may be
//! dotted paths (`"properties.plan"`), numbers compare by value.

use std::collections::HashMap;

use serde_json::{Map, Value};

#[derive(Debug, Clone)]
struct Entry {
    key: String,
    filter: Map<String, Value>,
    since_seq: u64,
}

/// Parked `wait_for`s by job id, indexed by the `userId` they filter on.
#[derive(Debug, Default)]
pub(crate) struct WaitIndex {
    entries: HashMap<u64, Entry>,
    by_user: HashMap<String, Vec<u64>>,
    any: Vec<u64>,
}

impl WaitIndex {
    pub(crate) fn insert(
        &mut self,
        job: u64,
        key: String,
        filter: Map<String, Value>,
        since_seq: u64,
    ) {
        self.remove(job);
        match filter.get("userId").and_then(Value::as_str) {
            Some(u) => self.by_user.entry(u.to_owned()).or_default().push(job),
            None => self.any.push(job),
        }
        self.entries.insert(
            job,
            Entry {
                key,
                filter,
                since_seq,
            },
        );
    }

    pub(crate) fn remove(&mut self, job: u64) {
        let Some(e) = self.entries.remove(&job) else {
            return;
        };
        match e.filter.get("userId").and_then(Value::as_str) {
            Some(u) => {
                if let Some(v) = self.by_user.get_mut(u) {
                    v.retain(|j| *j != job);
                    if v.is_empty() {
                        self.by_user.remove(u);
                    }
                }
            }
            None => self.any.retain(|j| *j != job),
        }
    }

    /// Jobs (with the journal key) whose wait `body` (sequence `seq`) satisfies.
    pub(crate) fn matching(&self, body: &Map<String, Value>, seq: u64) -> Vec<(u64, String)> {
        if self.entries.is_empty() {
            return Vec::new();
        }
        let user = body.get("userId").and_then(Value::as_str);
        let candidates = user
            .and_then(|u| self.by_user.get(u))
            .into_iter()
            .flatten()
            .chain(self.any.iter());
        let mut out: Vec<(u64, String)> = candidates
            .filter_map(|job| {
                let e = self.entries.get(job)?;
                (seq > e.since_seq && matches(&e.filter, body)).then(|| (*job, e.key.clone()))
            })
            .collect();
        out.sort_unstable();
        out
    }
}

/// Whether every filter entry equals the event's value at that (dotted) key.
pub(crate) fn matches(filter: &Map<String, Value>, body: &Map<String, Value>) -> bool {
    filter.iter().all(|(k, want)| {
        let mut parts = k.split('.');
        let first = parts.next().unwrap_or_default();
        let mut cur = body.get(first);
        for p in parts {
            cur = cur.and_then(|v| v.get(p));
        }
        cur.is_some_and(|got| crate::json::loose_eq(got, want))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn matches_by_user_and_dotted_keys_after_since() {
        let mut ix = WaitIndex::default();
        ix.insert(
            1,
            "k1".into(),
            obj(json!({"event": "Project Created", "userId": "u1"})),
            10,
        );
        ix.insert(
            2,
            "k2".into(),
            obj(json!({"type": "identify", "traits.plan": "pro"})),
            10,
        );
        let ev = obj(json!({"type": "track", "event": "Project Created", "userId": "u1"}));
        assert_eq!(ix.matching(&ev, 11), vec![(1, "k1".into())]);
        assert!(
            ix.matching(&ev, 10).is_empty(),
            "only events after the wait began"
        );
        let id = obj(json!({"type": "identify", "userId": "u9", "traits": {"plan": "pro"}}));
        assert_eq!(ix.matching(&id, 12), vec![(2, "k2".into())]);
        ix.remove(1);
        assert!(ix.matching(&ev, 11).is_empty());
        assert_eq!(ix.entries.len(), 1);
    }

    #[test]
    fn numbers_compare_by_value() {
        assert!(matches(
            &obj(json!({"properties.n": 1})),
            &obj(json!({"properties": {"n": 1.0}}))
        ));
        assert!(!matches(&obj(json!({"missing": 1})), &obj(json!({}))));
    }
}
