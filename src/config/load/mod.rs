//! Loading: file, then `${VAR}` interpolation, then `SPUR_<SECTION>_<KEY>` overrides,
//! then typed reading that collects every problem before failing.

mod env;
mod reader;
mod sections;
#[cfg(test)]
mod tests;
mod values;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use toml::Table;

use super::Config;
use reader::Reader;
use sections::{ReadNamed, ReadSection};

/// Every problem found while loading, each naming its file and key.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration:")?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

/// The sections of `spur.toml` with their readers.
const SECTIONS: &[(&str, ReadSection)] = &[
    ("server", sections::server),
    ("segment", sections::segment),
    ("admin", sections::admin),
    ("limits", sections::limits),
    ("retry", sections::retry),
    ("retention", sections::retention),
    ("store", sections::store),
    ("nats", sections::nats),
    ("env", sections::env),
    ("approvals", sections::approvals),
    ("agents", sections::agents),
    ("telemetry", sections::telemetry),
];

/// The sections that are tables of named tables (`[connections.NAME]`), with the
/// reader of one.
const NAMED: &[(&str, ReadNamed)] = &[
    ("connections", sections::connection),
    ("sources", sections::source),
    ("clients", sections::client),
];

/// Loads the configuration: `path` if given (it must exist), else `./spur.toml` if
/// present, else defaults. `env` is the process environment (passed in for tests).
///
/// # Errors
/// A `ConfigError` listing every problem at once.
pub(crate) fn load(
    path: Option<&Path>,
    env: &BTreeMap<String, String>,
) -> Result<Config, ConfigError> {
    let chosen = match path {
        Some(p) => Some(p.to_path_buf()),
        None => Some(PathBuf::from("spur.toml")).filter(|p| p.is_file()),
    };
    let text = match &chosen {
        Some(p) => std::fs::read_to_string(p).map_err(|e| ConfigError {
            problems: vec![format!("{}: cannot read: {e}", p.display())],
        })?,
        None => String::new(),
    };
    load_from_str(&text, chosen.as_deref(), env)
}

/// Loads from TOML text; `file` names it in messages and anchors relative paths.
///
/// # Errors
/// A `ConfigError` listing every problem at once.
pub fn load_from_str(
    text: &str,
    file: Option<&Path>,
    env: &BTreeMap<String, String>,
) -> Result<Config, ConfigError> {
    let label = file.map_or_else(|| "spur.toml".to_owned(), |p| p.display().to_string());
    let mut problems = Vec::new();
    let mut table: Table = match text.parse::<Table>() {
        Ok(t) => t,
        Err(e) => {
            return Err(ConfigError {
                problems: vec![format!("{label}: {}", e.to_string().trim_end())],
            });
        }
    };
    env::interpolate_table(&mut table, "", env, &label, &mut problems);
    let origins = env::apply_env_overrides(&mut table, env);

    let mut cfg = Config {
        source: file.map(Path::to_path_buf),
        ..Config::default()
    };
    let mut r = Reader {
        label: &label,
        origins: &origins,
        problems: &mut problems,
        base_dir: file
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default(),
    };
    for key in table.keys() {
        let known = SECTIONS
            .iter()
            .map(|(n, _)| n)
            .chain(NAMED.iter().map(|(n, _)| n));
        if !known.clone().any(|n| n == key) {
            let known: Vec<&str> = known.copied().collect();
            r.problem(
                key,
                &format!("unknown section (known: {})", known.join(", ")),
            );
        }
    }
    for (name, read) in SECTIONS {
        read(&mut r.section(&table, name), &mut cfg);
    }
    for (name, read) in NAMED {
        let Some(value) = table.get(*name) else {
            continue;
        };
        let Some(named) = value.as_table() else {
            r.problem(name, &format!("must be a table of [{name}.NAME] tables"));
            continue;
        };
        for (key, value) in named {
            let full = format!("{name}.{key}");
            match value.as_table() {
                Some(t) => read(&mut r.section_table(t, &full), &mut cfg, key),
                None => r.problem(&full, "must be a table"),
            }
        }
    }

    if !cfg.server.listen.ip().is_loopback() && cfg.admin.token.is_none() {
        r.problem(
            "server.listen",
            &format!(
                "{} is not a loopback address: set admin.token (or SPUR_ADMIN_TOKEN) to listen on it",
                cfg.server.listen
            ),
        );
    }

    sections::check_client_tokens(&mut r, &cfg);

    if problems.is_empty() {
        Ok(cfg)
    } else {
        Err(ConfigError { problems })
    }
}
