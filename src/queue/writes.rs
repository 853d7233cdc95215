//! What a run wrote in one execution and has not committed yet: state changes and
//! journal entries (the journal key `@pin` among them). They reach the store in one
//! atomic batch — with the job's settle or park at the end of the execution, or on
//! their own before the run's next output (`Queue::commit`) — never one without the
//! other.

use serde_json::Value;

use crate::state::StateValue;

/// A state key's value after the run's changes (`None`: deleted).
#[derive(Debug, Clone, PartialEq)]
pub struct StateWrite {
    pub ns: String,
    pub key: String,
    pub value: Option<StateValue>,
    /// The backend's version of the key the change was computed from (`Some(0)`:
    /// it was absent; `None`: the change does not depend on it, a `set`). A backend
    /// shared by several processes commits the change only if the key is still at
    /// that version; one process's locks make it moot (sled).
    pub expect: Option<u64>,
}

/// A run's uncommitted writes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunWrites {
    /// Last value of each key changed (in the order first changed).
    pub state: Vec<StateWrite>,
    /// Journal entries, by effect key.
    pub journal: Vec<(String, Value)>,
}

impl RunWrites {
    pub(crate) fn is_empty(&self) -> bool {
        self.state.is_empty() && self.journal.is_empty()
    }

    /// Records `key`'s new value (replacing an earlier change of the same key, whose
    /// `expect` stays: it is what the first change was computed from).
    pub(crate) fn put_state(
        &mut self,
        ns: &str,
        key: &str,
        value: Option<StateValue>,
        expect: Option<u64>,
    ) {
        match self.state.iter_mut().find(|w| w.ns == ns && w.key == key) {
            Some(w) => w.value = value,
            None => self.state.push(StateWrite {
                ns: ns.to_owned(),
                key: key.to_owned(),
                value,
                expect,
            }),
        }
    }

    /// The uncommitted value of a key, if the run changed it: `Some(None)` when it
    /// deleted it.
    #[allow(
        clippy::option_option,
        reason = "untouched, deleted or written: three cases"
    )]
    pub(crate) fn state_of(&self, ns: &str, key: &str) -> Option<Option<&StateValue>> {
        self.state
            .iter()
            .find(|w| w.ns == ns && w.key == key)
            .map(|w| w.value.as_ref())
    }

    pub(crate) fn put_journal(&mut self, key: &str, value: Value) {
        match self.journal.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => self.journal.push((key.to_owned(), value)),
        }
    }

    pub(crate) fn journal_of(&self, key: &str) -> Option<&Value> {
        self.journal.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}
