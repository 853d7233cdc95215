//! The command line's arguments: global options, commands and their flags. Their doc
//! comments are the `--help` text, the man page (`spur man`) and the completions.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use super::logging::LogFormat;

/// spur: automation for Segment data, in plain Rhai files.
#[derive(Debug, Parser)]
#[command(name = "spur", version, about)]
pub struct Cli {
    /// Config file (default: ./spur.toml when present).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory (overrides `server.data_dir`).
    #[arg(long, global = true, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Scripts directory (overrides `server.scripts_dir`).
    #[arg(long, global = true, value_name = "DIR")]
    pub scripts: Option<PathBuf>,
    /// Listen address (overrides server.listen).
    #[arg(long, global = true, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// More logging (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Less logging (errors only).
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Log format on stderr: `text` for a terminal, `json` (one object per line) for a
    /// log collector.
    #[arg(
        long,
        global = true,
        value_enum,
        value_name = "FORMAT",
        env = "SPUR_LOG_FORMAT",
        default_value_t = LogFormat::Text
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Serve,
    /// Compile every script; print `file:line:col: message` per error; exit 1 on any.
    Check {
        /// Scripts directory (default: the configured one).
        dir: Option<PathBuf>,
    },
    /// Run a script's handlers on events and print what they do (dry run by default:
    /// outbound calls are recorded and printed, not sent).
    Run {
        /// The script file.
        script: PathBuf,
        /// A JSON file (one event, an array, or a {"batch": [...]} body), or a sample
        /// event type: track, identify, page, screen, group, alias, delete.
        #[arg(
            long,
            required_unless_present_any = ["webhook", "tool"],
            conflicts_with_all = ["webhook", "tool"]
        )]
        event: Option<String>,
        /// Run the source handler `on_webhook(NAME, …)` on a recorded request
        /// (`--body`, `--header`) and print what it would emit.
        #[arg(long, value_name = "NAME", requires = "body")]
        webhook: Option<String>,
        /// The request body for --webhook (a file).
        #[arg(long, value_name = "FILE")]
        body: Option<PathBuf>,
        /// A request header for --webhook, `Name: value` (repeatable).
        #[arg(long = "header", value_name = "K:V")]
        headers: Vec<String>,
        /// Call the tool `tool(NAME, …)` with --args and print its result.
        #[arg(long, value_name = "NAME", conflicts_with = "webhook")]
        tool: Option<String>,
        /// The tool's arguments, a JSON object (default `{}`).
        #[arg(long = "args", value_name = "JSON", requires = "tool")]
        tool_args: Option<String>,
        /// Send calls for real through the configured connections.
        #[arg(long)]
        live: bool,
    },
    /// A Rhai prompt with the full host API (dry run by default: outbound calls are
    /// recorded and printed, not sent).
    Repl {
        /// Send calls for real through the configured connections.
        #[arg(long)]
        live: bool,
    },
    /// Run the `*_test.rhai` files under DIR (default: the scripts dir).
    Test { dir: Option<PathBuf> },
    /// Re-run recorded events through the current scripts and print what each would
    /// do (dry run unless --live).
    Replay {
        /// How far back: 30m, 1h, 2d.
        #[arg(long, default_value = "1h")]
        since: String,
        /// Only this script's handlers.
        #[arg(long)]
        script: Option<String>,
        /// Accepted for clarity: replays are dry runs unless --live.
        #[arg(long, conflicts_with = "live")]
        dry_run: bool,
        /// Send calls for real.
        #[arg(long)]
        live: bool,
        /// The daemon's URL (default: http://<server.listen>); without a running
        /// daemon the data dir is read directly.
        #[arg(long)]
        url: Option<String>,
    },
    /// Read and change scripts' state in a running daemon (`shared` is the shared namespace).
    State {
        #[command(subcommand)]
        action: StateCmd,
        /// The daemon's URL (default: http://<server.listen>).
        #[arg(long, global = true)]
        url: Option<String>,
    },
    /// List and decide approval requests of a running daemon.
    Approvals {
        #[command(subcommand)]
        action: ApprovalsCmd,
        /// The daemon's URL (default: http://<server.listen>).
        #[arg(long, global = true)]
        url: Option<String>,
    },
    /// Print the audit log (who called which tool, changed state, decided an
    /// approval, failed to authenticate; script and config loads).
    Audit {
        /// How far back: 30m, 1h, 7d.
        #[arg(long, default_value = "24h")]
        since: String,
        /// Only this actor (`owner`, a client's name, `spur`, `-` for unauthenticated).
        #[arg(long)]
        actor: Option<String>,
        /// Only this action or its prefix (`tool`, `auth.failed`, `state`).
        #[arg(long)]
        action: Option<String>,
        /// At most this many entries, oldest first.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        /// One JSON object per line (for an export).
        #[arg(long)]
        json: bool,
        /// The daemon's URL (default: the data dir when no daemon holds it, else
        /// http://<server.listen>).
        #[arg(long)]
        url: Option<String>,
    },
    /// Serve the scripts' tools over MCP on stdin/stdout, for a local agent (opens
    /// the data dir itself; while a daemon holds it, relays to the daemon's /mcp).
    Mcp {
        /// Call as this `[clients.NAME]` (its tools); default: the owner (every tool).
        #[arg(long, value_name = "NAME")]
        client: Option<String>,
        /// The daemon's URL for the relay (default: http://<server.listen>).
        #[arg(long)]
        url: Option<String>,
    },
    /// Print a shell completion script to stdout (`spur completions bash > …`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) to stdout (`spur man | man -l -`).
    Man,
}

#[derive(Debug, Subcommand)]
pub enum StateCmd {
    /// Print a key's value (JSON).
    Get { script: String, key: String },
    /// Set a key to a JSON value (a bare word is taken as a string).
    Set {
        script: String,
        key: String,
        value: String,
        /// Time to live: seconds or a duration like 10m.
        #[arg(long)]
        ttl: Option<String>,
    },
    /// Delete a key.
    Del { script: String, key: String },
    /// List keys (and values) of a script.
    List {
        script: String,
        #[arg(long, default_value = "")]
        prefix: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ApprovalsCmd {
    /// List requests (pending by default).
    List {
        /// pending, approved, rejected, expired or all.
        #[arg(long, default_value = "pending")]
        status: String,
    },
    /// Approve a request.
    Approve(Decision),
    /// Reject a request.
    Reject(Decision),
}

#[derive(Debug, clap::Args)]
pub struct Decision {
    /// The request's id (`apr_…`).
    pub id: String,
    /// Who decides (default: the login name).
    #[arg(long)]
    pub by: Option<String>,
    /// Why.
    #[arg(long)]
    pub comment: Option<String>,
}
