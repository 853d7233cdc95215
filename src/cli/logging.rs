//! Logging of the process: to stderr, as text for a terminal or as JSON lines for a log
//! collector (`--log-format`, `SPUR_LOG_FORMAT`). The filter comes from `RUST_LOG` when
//! set, else from `-v` / `-q`. Text is coloured only when stderr is a terminal and
//! `NO_COLOR` is unset, so a journal or a file gets plain lines.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `2026-01-01T00:00:00.000000Z  INFO spur::app: Listening. addr=…`.
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target` and `fields` (with
    /// `message`).
    Json,
}

/// Installs the global subscriber; does nothing if one is already installed.
pub(super) fn init(format: LogFormat, verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "spur=info,warn",
        (false, 1) => "spur=debug,info",
        (false, _) => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => {
            let colour = std::io::stderr().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            builder.with_ansi(colour).try_init()
        }
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
}
