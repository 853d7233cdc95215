//! `spur replay`: recorded events and webhook requests of the last `--since` through
//! the scripts on disk, printing what each run would do. The records come from the data
//! dir when no daemon holds it, else from the running daemon's admin API.

use std::process::ExitCode;

use crate::config::Config;

use super::remote;

/// Replays the window `since`, printing each run (of script `only`, if given).
pub(super) fn replay(
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
    let rt = super::runtime()?;
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
