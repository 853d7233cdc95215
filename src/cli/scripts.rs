//! The commands that work on script files locally, without a daemon: `spur check`
//! (compile), `spur run` (a script's handlers on events or a webhook request) and
//! `spur test` (the `*_test.rhai` suites). Outbound calls are dry runs unless `--live`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

use crate::config::Config;

/// `spur check [DIR]`: compiles every script, prints each error; exit 1 on any.
pub(super) fn check(cfg: &Config, dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let dir = dir.unwrap_or_else(|| cfg.server.scripts_dir.clone());
    if !dir.is_dir() {
        anyhow::bail!("{} is not a directory", dir.display());
    }
    let rt = super::runtime()?;
    let storage = crate::app::Storage::temporary(std::sync::Arc::new(crate::clock::SystemClock))?;
    let recorder = std::sync::Arc::new(crate::connectors::recorder::Recorder::new());
    let host = crate::app::build_host(cfg, &storage, Some(recorder), rt.handle().clone())?;
    let opts = crate::script::EngineOptions {
        limits: cfg.limits.clone(),
        host,
    };
    let set = crate::script::load_dir(&dir, &opts);
    let mut out = std::io::stdout().lock();
    for e in &set.errors {
        writeln!(out, "{e}")?;
    }
    let handlers: usize = set.scripts.iter().map(|s| s.handlers.len()).sum();
    if set.errors.is_empty() {
        writeln!(out, "{} scripts OK, {handlers} handlers", set.scripts.len())?;
        Ok(ExitCode::SUCCESS)
    } else {
        writeln!(out, "{} error(s)", set.errors.len())?;
        Ok(ExitCode::from(1))
    }
}

/// `spur test [DIR]`: runs the `*_test.rhai` files; exit 1 when one fails.
pub(super) fn test(cfg: &Config, dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let dir = dir.unwrap_or_else(|| cfg.server.scripts_dir.clone());
    let report = crate::local::suite::run_dir(cfg, &dir, &mut std::io::stdout().lock())?;
    Ok(if report.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// A local environment with `script` loaded; `None` (the errors printed) when it
/// does not load.
fn load_one(
    cfg: &Config,
    script: &Path,
    live: bool,
) -> anyhow::Result<Option<crate::local::Local>> {
    let mut local = crate::local::Local::new(cfg, live, true)?;
    let errors = local.load_file(script);
    if errors.is_empty() {
        return Ok(Some(local));
    }
    for e in errors {
        eprintln!("{e}");
    }
    Ok(None)
}

/// `spur run SCRIPT --event …`: the script's handlers on each event.
pub(super) fn local_run(
    cfg: &Config,
    script: &Path,
    event: &str,
    live: bool,
) -> anyhow::Result<ExitCode> {
    let Some(local) = load_one(cfg, script, live)? else {
        return Ok(ExitCode::from(1));
    };
    let events = crate::local::events_from_arg(event)?;
    let mut ok = true;
    for body in &events {
        println!("▶ {}", crate::local::describe(body));
        let runs = local.fire(body, &crate::local::RunOpts::default());
        if runs.is_empty() {
            println!("  no handler of {} matches", script.display());
        }
        for r in runs {
            ok &= r.succeeded();
            print!("{}", r.report());
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `spur run SCRIPT --tool NAME --args JSON`: one tool call, as an agent would make it.
pub(super) fn local_tool(
    cfg: &Config,
    script: &Path,
    tool: &str,
    args: &str,
    live: bool,
) -> anyhow::Result<ExitCode> {
    let arguments: serde_json::Value =
        serde_json::from_str(args).with_context(|| format!("--args {args:?} is not JSON"))?;
    let Some(local) = load_one(cfg, script, live)? else {
        return Ok(ExitCode::from(1));
    };
    println!("▶ tool {tool} {arguments}");
    let run = local
        .call_tool(tool, &arguments, crate::local::RunOpts::default())
        .map_err(|e| anyhow::anyhow!("{}: {e}", script.display()))?;
    print!("{}", run.report());
    Ok(if run.succeeded() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `spur run SCRIPT --webhook NAME --body FILE`: the source handler on one request.
pub(super) fn local_webhook(
    cfg: &Config,
    script: &Path,
    source: &str,
    body: &Path,
    headers: &[String],
    live: bool,
) -> anyhow::Result<ExitCode> {
    let Some(local) = load_one(cfg, script, live)? else {
        return Ok(ExitCode::from(1));
    };
    let text = std::fs::read_to_string(body)
        .with_context(|| format!("reading --body {}", body.display()))?;
    let headers = headers
        .iter()
        .map(|h| {
            h.split_once(':')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .ok_or_else(|| anyhow::anyhow!("--header {h:?}: expected `Name: value`"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let request = crate::source::SourceRequest::local(source, text, &headers);
    println!(
        "▶ {} {} ({} bytes)",
        request.method,
        request.path,
        request.body.len()
    );
    let Some(run) = local.webhook(source, &request, crate::local::RunOpts::default()) else {
        anyhow::bail!(
            "{} registers no source {source:?} (on_webhook({source:?}, |req| …))",
            script.display()
        );
    };
    print!("{}", run.report());
    println!("{} event(s) emitted", run.emitted.len());
    Ok(if run.succeeded() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
