//! Reading a section: every key read is remembered, and when the [`Section`] goes
//! out of scope each key it never read is reported as unknown (with the known ones),
//! so no reader can forget the check. Problems name the file and the key, or the
//! environment variable that set it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use toml::{Table, Value};

/// Collects the problems of one load.
pub(super) struct Reader<'a> {
    pub(super) label: &'a str,
    pub(super) origins: &'a BTreeMap<String, String>,
    pub(super) problems: &'a mut Vec<String>,
    /// Where relative paths of the file are anchored (the file's directory).
    pub(super) base_dir: PathBuf,
}

impl<'a> Reader<'a> {
    pub(super) fn problem(&mut self, key: &str, message: &str) {
        let place = self.origins.get(key).map_or_else(
            || format!("{}: {key}", self.label),
            |var| format!("{var} ({key})"),
        );
        self.problems.push(format!("{place}: {message}"));
    }

    /// The section `name` of the file (absent: every read is `None`).
    pub(super) fn section<'s>(&'s mut self, root: &'s Table, name: &str) -> Section<'s, 'a> {
        let table = match root.get(name) {
            Some(Value::Table(t)) => Some(t),
            Some(_) => {
                self.problem(name, "must be a table");
                None
            }
            None => None,
        };
        Section {
            reader: self,
            table,
            name: name.to_owned(),
            used: BTreeSet::new(),
        }
    }

    /// A table below the root (`connections.NAME`).
    pub(super) fn section_table<'s>(&'s mut self, table: &'s Table, name: &str) -> Section<'s, 'a> {
        Section {
            reader: self,
            table: Some(table),
            name: name.to_owned(),
            used: BTreeSet::new(),
        }
    }
}

/// One section being read; reports its unread keys when dropped.
pub(super) struct Section<'r, 't> {
    reader: &'r mut Reader<'t>,
    table: Option<&'r Table>,
    name: String,
    used: BTreeSet<String>,
}

impl<'t> Section<'_, 't> {
    /// Reads `key` with `parse`; a value that does not parse is a problem (and `None`).
    pub(super) fn get<T>(
        &mut self,
        key: &str,
        parse: impl Fn(&Value) -> Result<T, String>,
    ) -> Option<T> {
        self.used.insert(key.to_owned());
        let value = self.table?.get(key)?;
        match parse(value) {
            Ok(v) => Some(v),
            Err(msg) => {
                self.problem(key, &msg);
                None
            }
        }
    }

    /// Sets `*slot` from `key` when present and valid.
    pub(super) fn set<T>(
        &mut self,
        key: &str,
        slot: &mut T,
        parse: impl Fn(&Value) -> Result<T, String>,
    ) {
        if let Some(v) = self.get(key, parse) {
            *slot = v;
        }
    }

    /// The sub-table `key` (`[server.tls]`) as a section of its own, with the same
    /// unknown-key check; `None` when absent (or not a table, which is a problem).
    pub(super) fn table(&mut self, key: &str) -> Option<Section<'_, 't>> {
        self.used.insert(key.to_owned());
        let value = self.table?.get(key)?;
        let Some(table) = value.as_table() else {
            self.problem(key, "must be a table");
            return None;
        };
        let name = format!("{}.{key}", self.name);
        Some(self.reader.section_table(table, &name))
    }

    /// Whether the file has `key` at all (valid or not).
    pub(super) fn has(&self, key: &str) -> bool {
        self.table.is_some_and(|t| t.contains_key(key))
    }

    /// `key`, a path, anchored at the file's directory unless absolute or set by an
    /// environment variable (then relative to the working directory).
    pub(super) fn path(&mut self, key: &str, slot: &mut PathBuf) {
        if let Some(v) = self.get(key, super::values::parse_string) {
            let from_env = self
                .reader
                .origins
                .contains_key(&format!("{}.{key}", self.name));
            *slot = anchor(&self.reader.base_dir, &v, from_env);
        }
    }

    pub(super) fn problem(&mut self, key: &str, message: &str) {
        let full = format!("{}.{key}", self.name);
        self.reader.problem(&full, message);
    }
}

impl Drop for Section<'_, '_> {
    fn drop(&mut self) {
        let Some(table) = self.table else { return };
        let known: Vec<&str> = self.used.iter().map(String::as_str).collect();
        for key in table.keys().filter(|k| !self.used.contains(*k)) {
            let full = format!("{}.{key}", self.name);
            self.reader
                .problem(&full, &format!("unknown key (known: {})", known.join(", ")));
        }
    }
}

fn anchor(base: &Path, value: &str, from_env: bool) -> PathBuf {
    let p = PathBuf::from(value);
    if p.is_absolute() || from_env || base.as_os_str().is_empty() {
        p
    } else {
        base.join(p)
    }
}
