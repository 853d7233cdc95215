//! What the environment changes in the file: `${VAR}` / `${VAR:-default}`
//! interpolation in every string, then `SPUR_<SECTION>_<KEY>` overrides.

use std::collections::BTreeMap;

use toml::{Table, Value};

pub(super) fn interpolate_table(
    table: &mut Table,
    prefix: &str,
    env: &BTreeMap<String, String>,
    label: &str,
    problems: &mut Vec<String>,
) {
    for (key, value) in table.iter_mut() {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        interpolate_value(value, &path, env, label, problems);
    }
}

pub(super) fn interpolate_value(
    value: &mut Value,
    path: &str,
    env: &BTreeMap<String, String>,
    label: &str,
    problems: &mut Vec<String>,
) {
    match value {
        Value::String(s) if s.contains('$') => match interpolate(s, env) {
            Ok(v) => *s = v,
            Err(msg) => problems.push(format!("{label}: {path}: {msg}")),
        },
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate_value(item, &format!("{path}[{i}]"), env, label, problems);
            }
        }
        Value::Table(t) => interpolate_table(t, path, env, label, problems),
        _ => {}
    }
}

/// Replaces `${VAR}` and `${VAR:-default}`; `$$` is a literal `$`.
pub(super) fn interpolate(s: &str, env: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if let Some(r) = rest.strip_prefix("$$") {
            out.push('$');
            rest = r;
        } else if let Some(r) = rest.strip_prefix("${") {
            let end = r
                .find('}')
                .ok_or_else(|| format!("unclosed ${{ in {s:?}"))?;
            let inner = &r[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            match (env.get(name), default) {
                (Some(v), _) => out.push_str(v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(format!("environment variable {name} is not set"));
                }
            }
            rest = &r[end + 1..];
        } else {
            out.push('$');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Applies `SPUR_<SECTION>_<KEY>` variables; returns `section.key -> VAR` for messages.
pub(super) fn apply_env_overrides(
    table: &mut Table,
    env: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut origins = BTreeMap::new();
    for (var, value) in env {
        let Some(rest) = var.strip_prefix("SPUR_") else {
            continue;
        };
        let lower = rest.to_ascii_lowercase();
        let Some(section) = super::SECTIONS
            .iter()
            .map(|(name, _)| name)
            .find(|s| lower.starts_with(&format!("{s}_")))
        else {
            continue;
        };
        let key = &lower[section.len() + 1..];
        let entry = table
            .entry((*section).to_owned())
            .or_insert_with(|| Value::Table(Table::new()));
        if let Value::Table(t) = entry {
            t.insert(key.to_owned(), Value::String(value.clone()));
            origins.insert(format!("{section}.{key}"), var.clone());
        }
    }
    origins
}
