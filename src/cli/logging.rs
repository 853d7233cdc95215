//! Logging of the process: text to stderr. The filter comes from `RUST_LOG` when set,
//! else from `-v` / `-q`.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; does nothing if one is already installed.
pub(super) fn init(verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "spur=info,warn",
        (false, 1) => "spur=debug,info",
        (false, _) => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
