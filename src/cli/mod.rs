//! The command line: `spur serve`, `spur check`, … (DESIGN.md §3). `args` defines it;
//! this module parses it, sets up logging, loads the configuration and hands each
//! command to its group: `scripts` (check, run, test), `replay`, `remote` (state,
//! approvals against a running daemon) and `generate` (completions, man page).

mod args;
mod audit;
mod generate;
mod logging;
mod remote;
mod replay;
mod scripts;

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;

pub use args::{ApprovalsCmd, Cli, Command, Decision, StateCmd};
pub use logging::LogFormat;

use crate::config::{self, Config};

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format, cli.verbose, cli.quiet);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Loads the configuration with the command line's overrides applied.
///
/// # Errors
/// Every configuration problem at once.
pub fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let mut cfg = config::load(cli.config.as_deref(), &env)?;
    if let Some(d) = &cli.data {
        cfg.server.data_dir.clone_from(d);
    }
    if let Some(s) = &cli.scripts {
        cfg.server.scripts_dir.clone_from(s);
    }
    if let Some(l) = cli.listen {
        if !l.ip().is_loopback() && cfg.admin.token.is_none() {
            anyhow::bail!(
                "--listen {l} is not a loopback address: set admin.token (or SPUR_ADMIN_TOKEN) first"
            );
        }
        cfg.server.listen = l;
    }
    Ok(cfg)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("spur-io")
        .build()
        .context("starting the async runtime")
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // These describe the command line itself, so a broken spur.toml does not stop them.
    match cli.command {
        Command::Completions { shell } => return generate::completions(shell),
        Command::Man => return generate::man(),
        _ => {}
    }
    let cfg = load_config(&cli)?;
    match cli.command {
        Command::Serve => {
            runtime()?.block_on(crate::app::serve(cfg, None))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { dir } => scripts::check(&cfg, dir),
        Command::Approvals { action, url } => {
            runtime()?.block_on(remote::approvals(&cfg, url.as_deref(), action))
        }
        Command::State { action, url } => {
            runtime()?.block_on(remote::state(&cfg, url.as_deref(), action))
        }
        Command::Run {
            script,
            event,
            webhook,
            body,
            headers,
            tool,
            tool_args,
            live,
        } => match (event, webhook, body) {
            _ if tool.is_some() => scripts::local_tool(
                &cfg,
                &script,
                tool.as_deref().unwrap_or_default(),
                tool_args.as_deref().unwrap_or("{}"),
                live,
            ),
            (Some(event), ..) => scripts::local_run(&cfg, &script, &event, live),
            (None, Some(source), Some(body)) => {
                scripts::local_webhook(&cfg, &script, &source, &body, &headers, live)
            }
            _ => anyhow::bail!("give --event, --tool, or --webhook with --body"),
        },
        Command::Repl { live } => crate::repl::run(&cfg, live),
        Command::Audit {
            since,
            actor,
            action,
            limit,
            json,
            url,
        } => audit::audit(
            &cfg,
            &audit::Query {
                since: &since,
                actor: actor.as_deref(),
                action: action.as_deref(),
                limit,
                json,
                url: url.as_deref(),
            },
        ),
        Command::Mcp { client, url } => {
            let daemon = remote::daemon_mcp(&cfg, url.as_deref());
            runtime()?.block_on(crate::mcp::stdio::serve(cfg, client.as_deref(), daemon))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Test { dir } => scripts::test(&cfg, dir),
        Command::Replay {
            since,
            script,
            live,
            url,
            ..
        } => replay::replay(&cfg, &since, script.as_deref(), live, url.as_deref()),
        Command::Completions { .. } | Command::Man => {
            unreachable!("answered above, before the configuration is loaded")
        }
    }
}
