//! The command line: `spur serve`, `spur check`, … (DESIGN.md §3).

mod remote;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::config::{self, Config};

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
        #[arg(long, required_unless_present = "webhook", conflicts_with = "webhook")]
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

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.verbose, cli.quiet);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_tracing(verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "spur=info,warn",
        (false, 1) => "spur=debug,info",
        (false, _) => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
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
    let cfg = load_config(&cli)?;
    match cli.command {
        Command::Serve => {
            runtime()?.block_on(crate::app::serve(cfg, None))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { dir } => check(&cfg, dir),
        Command::Approvals { action, url } => {
            runtime()?.block_on(approvals(&cfg, url.as_deref(), action))
        }
        Command::State { action, url } => runtime()?.block_on(state(&cfg, url.as_deref(), action)),
        Command::Run {
            script,
            event,
            webhook,
            body,
            headers,
            live,
        } => match (event, webhook, body) {
            (Some(event), ..) => local_run(&cfg, &script, &event, live),
            (None, Some(source), Some(body)) => {
                local_webhook(&cfg, &script, &source, &body, &headers, live)
            }
            _ => anyhow::bail!("give --event, or --webhook with --body"),
        },
        Command::Repl { live } => crate::repl::run(&cfg, live),
        Command::Test { dir } => {
            let dir = dir.unwrap_or_else(|| cfg.server.scripts_dir.clone());
            let report = crate::local::suite::run_dir(&cfg, &dir, &mut std::io::stdout().lock())?;
            Ok(if report.failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Replay {
            since,
            script,
            live,
            url,
            ..
        } => replay(&cfg, &since, script.as_deref(), live, url.as_deref()),
    }
}

/// A local environment with `script` loaded; `None` (the errors printed) when it
/// does not load.
fn load_one(
    cfg: &Config,
    script: &std::path::Path,
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

fn local_run(
    cfg: &Config,
    script: &std::path::Path,
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

fn local_webhook(
    cfg: &Config,
    script: &std::path::Path,
    source: &str,
    body: &std::path::Path,
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

fn replay(
    cfg: &Config,
    since: &str,
    only: Option<&str>,
    live: bool,
    url: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let window = crate::duration::parse(since).map_err(|e| anyhow::anyhow!("--since: {e}"))?;
    let recorded = recorded(cfg, since, window, url)?;
    let mut local = crate::local::Local::new(cfg, live, false)?;
    for e in local.load_dir(&cfg.server.scripts_dir) {
        eprintln!("{e}");
    }
    let mode = if live { "live" } else { "dry run" };
    println!(
        "replaying {} events and {} webhook requests from the last {since} through {} ({mode})",
        recorded.events.len(),
        recorded.requests.len(),
        cfg.server.scripts_dir.display()
    );
    let mut tally = Tally::default();
    for body in &recorded.events {
        let runs = local.fire(body, &crate::local::RunOpts::default());
        tally.show(&crate::local::describe(body), runs, only);
    }
    // A request runs its source handler again and shows what it would emit; the
    // events it emitted then are in the event log, replayed above.
    for r in &recorded.requests {
        let Ok(request) = serde_json::from_value::<crate::source::SourceRequest>(r.request.clone())
        else {
            eprintln!("webhook request {} is unreadable; skipped", r.seq);
            continue;
        };
        let runs = local
            .webhook(&r.source, &request, crate::local::RunOpts::default())
            .into_iter()
            .collect();
        tally.show(
            &format!("webhook {} · {} {}", r.source, request.method, request.path),
            runs,
            only,
        );
    }
    let requests = match recorded.requests.len() {
        0 => String::new(),
        n => format!(", {n} webhook requests"),
    };
    println!(
        "\n{} events{requests}, {} runs ({}), {} outbound calls",
        recorded.events.len(),
        tally.runs,
        tally.summary(),
        tally.calls
    );
    Ok(ExitCode::SUCCESS)
}

/// What a replay ran, for its summary line.
#[derive(Default)]
struct Tally {
    runs: usize,
    calls: usize,
    counts: std::collections::BTreeMap<&'static str, usize>,
}

impl Tally {
    /// Prints `what` and the runs it made (of script `only`, if given).
    fn show(&mut self, what: &str, runs: Vec<crate::local::LocalRun>, only: Option<&str>) {
        let runs: Vec<_> = runs
            .into_iter()
            .filter(|r| only.is_none_or(|s| r.script == s))
            .collect();
        if runs.is_empty() {
            return;
        }
        println!("▶ {what}");
        for r in runs {
            self.runs += 1;
            self.calls += r.recorded.len() + r.calls.iter().filter(|c| !c.dry_run).count();
            *self.counts.entry(r.status.as_str()).or_default() += 1;
            for l in &r.logs {
                println!(
                    "  [{}] {}",
                    format!("{:?}", l.level).to_lowercase(),
                    l.message
                );
            }
            print!("{}", r.report());
        }
    }

    fn summary(&self) -> String {
        if self.counts.is_empty() {
            return "none".into();
        }
        let parts: Vec<String> = self
            .counts
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect();
        parts.join(", ")
    }
}

/// Events and webhook requests a replay goes through.
struct Recorded {
    events: Vec<serde_json::Map<String, serde_json::Value>>,
    requests: Vec<crate::queue::StoredRequest>,
}

/// The recorded events and webhook requests: from the data dir when no daemon holds
/// it, else from the running daemon.
fn recorded(
    cfg: &Config,
    since: &str,
    window: std::time::Duration,
    url: Option<&str>,
) -> anyhow::Result<Recorded> {
    let cutoff = crate::store::now_ms().saturating_sub(crate::duration::as_ms(window));
    if url.is_none()
        && let Ok(store) = crate::store::Store::open(&cfg.server.data_dir)
    {
        return Ok(Recorded {
            events: crate::queue::events_since(&store, cutoff)?
                .into_iter()
                .map(|e| e.body)
                .collect(),
            requests: crate::queue::requests_since(&store, cutoff)?,
        });
    }
    let rt = runtime()?;
    let remote = remote::Remote::new(cfg, url)?;
    let list = |path: &str, key: &str| -> anyhow::Result<Vec<serde_json::Value>> {
        let v =
            rt.block_on(remote.call(reqwest::Method::GET, &format!("{path}?since={since}"), None))?;
        Ok(v[key].as_array().cloned().unwrap_or_default())
    };
    let events = list("/api/events", "events")?
        .into_iter()
        .filter_map(|e| match e {
            serde_json::Value::Object(m) => Some(m),
            _ => None,
        })
        .collect();
    let requests = list("/api/requests", "requests")?
        .into_iter()
        .filter_map(|r| {
            Some(crate::queue::StoredRequest {
                seq: r["seq"].as_u64()?,
                received_ms: 0,
                source: r["source"].as_str()?.to_owned(),
                request: r["request"].clone(),
            })
        })
        .collect();
    Ok(Recorded { events, requests })
}

async fn approvals(
    cfg: &Config,
    url: Option<&str>,
    action: ApprovalsCmd,
) -> anyhow::Result<ExitCode> {
    let remote = remote::Remote::new(cfg, url)?;
    let mut out = std::io::stdout().lock();
    match action {
        ApprovalsCmd::List { status } => {
            let body = remote
                .call(
                    reqwest::Method::GET,
                    &format!("/api/approvals?status={status}"),
                    None,
                )
                .await?;
            let list = body["approvals"].as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                writeln!(out, "no {status} approvals")?;
            }
            for a in list {
                let who = a["decided_by"]
                    .as_str()
                    .map(|b| format!(" by {b}"))
                    .unwrap_or_default();
                writeln!(
                    out,
                    "{}  {}{who}  {}  {}  ({} {})",
                    a["id"].as_str().unwrap_or_default(),
                    a["status"].as_str().unwrap_or_default(),
                    a["created_at"].as_str().unwrap_or_default(),
                    a["title"].as_str().unwrap_or_default(),
                    a["script"].as_str().unwrap_or_default(),
                    a["handler"].as_str().unwrap_or_default(),
                )?;
            }
        }

        ApprovalsCmd::Approve(d) => decide(&remote, &mut out, "approve", d).await?,
        ApprovalsCmd::Reject(d) => decide(&remote, &mut out, "reject", d).await?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn state(cfg: &Config, url: Option<&str>, action: StateCmd) -> anyhow::Result<ExitCode> {
    let remote = remote::Remote::new(cfg, url)?;
    let enc = |s: &str| {
        form_urlencoded::byte_serialize(s.as_bytes())
            .collect::<String>()
            .replace('+', "%20")
    };
    let mut out = std::io::stdout().lock();
    match action {
        StateCmd::Get { script, key } => {
            let path = format!("/api/state/{}/{}", enc(&script), enc(&key));
            let v = remote.call(reqwest::Method::GET, &path, None).await?;
            writeln!(out, "{}", serde_json::to_string_pretty(&v["value"])?)?;
        }
        StateCmd::Set {
            script,
            key,
            value,
            ttl,
        } => {
            let value: serde_json::Value =
                serde_json::from_str(&value).unwrap_or(serde_json::Value::String(value));
            let path = format!("/api/state/{}/{}", enc(&script), enc(&key));
            let body = serde_json::json!({ "value": value, "ttl": ttl });
            let v = remote.call(reqwest::Method::PUT, &path, Some(body)).await?;
            writeln!(out, "{key} = {}", v["value"])?;
        }
        StateCmd::Del { script, key } => {
            let path = format!("/api/state/{}/{}", enc(&script), enc(&key));
            let v = remote.call(reqwest::Method::DELETE, &path, None).await?;
            writeln!(
                out,
                "{}",
                if v["deleted"] == true {
                    "deleted"
                } else {
                    "not found"
                }
            )?;
        }
        StateCmd::List { script, prefix } => {
            let path = format!("/api/state/{}?prefix={}", enc(&script), enc(&prefix));
            let v = remote.call(reqwest::Method::GET, &path, None).await?;
            for e in v["entries"].as_array().cloned().unwrap_or_default() {
                writeln!(
                    out,
                    "{} = {}",
                    e["key"].as_str().unwrap_or_default(),
                    e["value"]
                )?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn decide(
    remote: &remote::Remote,
    out: &mut impl Write,
    verb: &str,
    d: Decision,
) -> anyhow::Result<()> {
    let by =
        d.by.or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "cli".into());
    let body = serde_json::json!({ "by": by, "comment": d.comment });
    let r = remote
        .call(
            reqwest::Method::POST,
            &format!("/api/approvals/{}/{verb}", d.id),
            Some(body),
        )
        .await?;
    writeln!(
        out,
        "{} {} by {}",
        r["approval"]["id"].as_str().unwrap_or(&d.id),
        r["approval"]["status"].as_str().unwrap_or(verb),
        r["approval"]["decided_by"].as_str().unwrap_or(&by)
    )?;
    Ok(())
}

fn check(cfg: &Config, dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let dir = dir.unwrap_or_else(|| cfg.server.scripts_dir.clone());
    if !dir.is_dir() {
        anyhow::bail!("{} is not a directory", dir.display());
    }
    let rt = runtime()?;
    let store = crate::store::Store::temporary()?;
    let recorder = std::sync::Arc::new(crate::connectors::recorder::Recorder::new());
    let host = crate::app::build_host(cfg, &store, Some(recorder), rt.handle().clone())?;
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
