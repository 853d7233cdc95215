//! The composition root: builds the store, scripts, queue, workers and HTTP routes
//! from a `Config`, runs them, and owns the order of shutdown (stop accepting, let
//! workers finish their current run, flush).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, AdminState};
use crate::approval::{Approvals, DecideError};
use crate::clock::{SharedClock, SystemClock};
use crate::config::{Auth, Config, Secret};
use crate::connectors::http::HttpClient;
use crate::connectors::recorder::Recorder;
use crate::connectors::redact::Redactor;
use crate::connectors::segment;
use crate::connectors::slack::Slack;
use crate::host::Host;
use crate::ingest::{self, IngestState};
use crate::queue::Queue;
use crate::run::timers::{Due, OnDue, Timers};
use crate::run::{DeadLetters, RunStore};
use crate::schedule::{ScheduleInfo, Schedules};
use crate::script::pinned::Versions;
use crate::script::{EngineOptions, Live, load_dir};
use crate::state::StateStore;
use crate::worker::retry::RetryPolicy;
use crate::worker::{WorkerDeps, WorkerPool};

mod retention;
mod serve;
mod storage;

pub use retention::Purged;
pub(crate) use serve::serve;
pub use storage::Storage;

/// Everything a running daemon holds.
pub struct App {
    pub config: Config,
    pub queue: Queue,
    pub scripts: Arc<Live>,
    pub runs: RunStore,
    pub dead: DeadLetters,
    pub state: Arc<dyn StateStore>,
    pub engine: EngineOptions,
    pub admin_token: Secret,
    /// Every token the daemon accepts: the owner's and the clients'.
    pub(crate) callers: crate::auth::SharedCallers,
    pub audit: crate::audit::Audit,
    pub approvals: Approvals,
    pub versions: Arc<Versions>,
    pub schedules: Arc<parking_lot::RwLock<Vec<ScheduleInfo>>>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The last hour of metrics, for the console's charts.
    history: Arc<crate::metrics::History>,
    /// One permit per ingest request being handled (`server.max_inflight_requests`).
    pub inflight: Arc<tokio::sync::Semaphore>,
    workers: parking_lot::Mutex<Option<WorkerPool>>,
    deps: Arc<WorkerDeps>,
    _watcher: parking_lot::Mutex<Option<crate::script::watch::ScriptWatcher>>,
    tasks: CancellationToken,
    started: Instant,
}

/// What a due timer does: expire an approval, or wake a sleeping/waiting run.
fn on_due(queue: Queue, approvals: Approvals) -> OnDue {
    Arc::new(move |due: Due| {
        let (queue, approvals) = (queue.clone(), approvals.clone());
        Box::pin(async move {
            let result = match &due.approval {
                Some(id) => match approvals.expire(id).await {
                    Ok(_) | Err(DecideError::AlreadyDecided { .. }) => Ok(()),
                    Err(e) => Err(e.to_string()),
                },
                None => queue
                    .resume(due.job_id, &due.key, serde_json::Value::Null)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            };
            if let Err(e) = result {
                tracing::error!(job = due.job_id, error = %e, "Waking a parked run failed.");
            }
        })
    })
}

/// The secrets redaction must cover: the configuration's and allowed env values.
pub(crate) fn redactor(config: &Config, env: &BTreeMap<String, String>) -> Redactor {
    let basic: Vec<(String, String)> = config
        .connections
        .values()
        .filter_map(|c| match &c.auth {
            Auth::Basic { user, password } => {
                Some((user.expose().to_owned(), password.expose().to_owned()))
            }
            _ => None,
        })
        .collect();
    let mut secrets = config.secrets();
    secrets.extend(env.values().cloned());
    Redactor::new(secrets, &basic)
}

/// Who may call (the owner and the clients) and the audit log, which records
/// this configuration's load first.
fn governance(
    config: &Config,
    storage: &Storage,
    admin_token: &Secret,
) -> (crate::auth::SharedCallers, crate::audit::Audit) {
    let callers = Arc::new(crate::auth::Callers::new(admin_token, config));
    let audit = crate::audit::Audit::new(
        Arc::clone(&storage.audit),
        Arc::new(redactor_with(config, admin_token)),
    );
    audit.append_soon(config_loaded(config));
    (callers, audit)
}

/// The redactor of the audit log: every configured secret and the owner's token,
/// also when it was generated rather than configured.
fn redactor_with(config: &Config, admin_token: &Secret) -> Redactor {
    let mut config = config.clone();
    config.admin.token = Some(admin_token.clone());
    redactor(&config, &allowed_env(&config))
}

/// The audit entry of a configuration load: the file and the sections it set
/// (never a value).
fn config_loaded(config: &Config) -> crate::audit::Entry {
    let file = config
        .source
        .as_ref()
        .map_or_else(|| "(defaults)".to_owned(), |p| p.display().to_string());
    crate::audit::Entry::new(crate::audit::DAEMON, "config.load", &file).detail(serde_json::json!({
        "clients": config.clients.keys().collect::<Vec<_>>(),
        "connections": config.connections.keys().collect::<Vec<_>>(),
    }))
}

/// The environment values scripts may read (`[env] allow`).
pub(crate) fn allowed_env(config: &Config) -> BTreeMap<String, String> {
    config
        .env_allow
        .iter()
        .filter_map(|name| std::env::var(name).ok().map(|v| (name.clone(), v)))
        .collect()
}

/// Builds the host API on `storage`; `recorder` switches on dry-run.
///
/// # Errors
/// When the HTTP client cannot be built.
pub fn build_host(
    config: &Config,
    storage: &Storage,
    recorder: Option<Arc<Recorder>>,
    rt: tokio::runtime::Handle,
) -> anyhow::Result<Arc<Host>> {
    let env = allowed_env(config);
    let redactor = Arc::new(redactor(config, &env));
    let connections = segment::with_segment_connections(&config.connections, &config.segment);
    let http = HttpClient::new(
        &connections,
        config.limits.max_response_bytes,
        redactor,
        recorder,
    )?;
    Ok(Arc::new(Host {
        rt,
        segment: segment::SegmentApi::new(http.clone(), config.segment.clone()),
        outbox: Arc::new(segment::Outbox::new(
            Arc::clone(&storage.outbox),
            &config.segment,
        )?),
        approvals: Arc::clone(&storage.approvals),
        approvals_cfg: config.approvals.clone(),
        slack: Slack::new(http.clone(), config.approvals.slack_connection.as_str()),
        http,
        state: Arc::clone(&storage.state),
        clock: Arc::clone(&storage.clock),
        events: std::sync::OnceLock::new(),
        mailer: config
            .approvals
            .email
            .as_ref()
            .map(crate::approval::email::Mailer::new)
            .transpose()
            .map_err(anyhow::Error::msg)?
            .map(Arc::new),
        links: std::sync::OnceLock::new(),
        scripts: std::sync::OnceLock::new(),
        env,
    }))
}

impl App {
    /// Opens the store, loads the scripts, starts the workers and background tasks.
    ///
    /// # Errors
    /// When the store cannot be opened or the host cannot be built.
    pub async fn start(config: Config) -> anyhow::Result<Arc<Self>> {
        Self::start_with(config, Arc::new(SystemClock)).await
    }

    /// [`App::start`] on `clock` (tests drive a manual one).
    ///
    /// # Errors
    /// As [`App::start`].
    pub async fn start_with(config: Config, clock: SharedClock) -> anyhow::Result<Arc<Self>> {
        let app = Self::open_with(config, clock).await?;
        app.start_workers();
        Ok(app)
    }

    /// Everything [`App::start`] does except starting the workers: events are
    /// received and their jobs queued, but nothing runs until
    /// [`App::start_workers`]. The benchmark uses it to build a backlog.
    ///
    /// # Errors
    /// When the store cannot be opened or the host cannot be built.
    pub async fn open(config: Config) -> anyhow::Result<Arc<Self>> {
        Self::open_with(config, Arc::new(SystemClock)).await
    }

    /// [`App::open`] on `clock`.
    ///
    /// # Errors
    /// As [`App::open`].
    pub(crate) async fn open_with(config: Config, clock: SharedClock) -> anyhow::Result<Arc<Self>> {
        let storage = Storage::open(&config, clock).await?;
        let admin_token = match &config.admin.token {
            Some(t) => t.clone(),
            None => admin_token_file(&config.server.data_dir)?,
        };
        let host = build_host(&config, &storage, None, tokio::runtime::Handle::current())?;
        let engine = EngineOptions {
            limits: config.limits.clone(),
            host,
        };
        let (callers, audit) = governance(&config, &storage, &admin_token);
        let scripts = load_scripts(&config, &engine).await?;
        let mut script_hashes = std::collections::BTreeMap::new();
        audit.scripts_loaded(&scripts.get(), &mut script_hashes);
        let queue = storage.queue(Arc::clone(&scripts) as Arc<dyn crate::queue::Dispatch>)?;
        queue.set_max_pending_events(config.server.max_pending_events);
        queue.set_dedup_window(config.retention.dedup);
        wire_host(&engine.host, &config, &queue, &scripts)?;
        let runs = Arc::clone(&storage.runs);
        let dead = Arc::clone(&storage.dead);
        let state = Arc::clone(&engine.host.state);
        let versions = Arc::new(Versions::new(
            Arc::clone(&storage.sources),
            Arc::clone(&storage.clock),
        ));
        let metrics = Arc::new(crate::metrics::Metrics::default());
        versions.remember(&scripts.get())?;
        let tasks = CancellationToken::new();
        let approvals = approvals_of(&config, &engine, &queue);
        let timers = Timers::start(
            on_due(queue.clone(), approvals.clone()),
            Arc::clone(&storage.clock),
            tasks.child_token(),
        );
        let parked = queue.waiting_jobs()?;
        timers.add_parked(&parked);
        share_with_nodes(&queue, &timers, &config, &scripts);
        let reconciled = approvals.reconcile().await?;
        if !parked.is_empty() {
            tracing::info!(parked = parked.len(), reconciled, "Parked runs restored.");
        }
        let deps = Arc::new(WorkerDeps {
            queue: queue.clone(),
            scripts: Arc::clone(&scripts),
            versions: Arc::clone(&versions),
            engine: engine.clone(),
            runs: runs.clone(),
            dead: dead.clone(),
            retry: RetryPolicy::from(&config.retry),
            timers,
            metrics: Arc::clone(&metrics),
            telemetry: crate::telemetry::Telemetry::of(&config.telemetry, &tasks),
        });
        let watcher = watch_scripts(
            &config,
            &scripts,
            &engine,
            &versions,
            (audit.clone(), script_hashes),
            &tasks,
        );
        let mut schedules = Schedules::new(queue.clone());
        schedules.load(&scripts.get(), storage.clock.now())?;
        let schedule_view = schedules.view();
        let inflight = Arc::new(tokio::sync::Semaphore::new(
            config.server.max_inflight_requests,
        ));
        tokio::spawn(crate::schedule::run(
            schedules,
            Arc::clone(&scripts),
            tasks.child_token(),
        ));
        let app = Arc::new(Self {
            config,
            queue,
            scripts,
            runs,
            dead,
            state,
            engine,
            admin_token,
            callers,
            audit,
            workers: parking_lot::Mutex::new(None),
            deps,
            tasks,
            started: Instant::now(),
            approvals,
            versions,
            schedules: schedule_view,
            metrics,
            history: Arc::default(),
            inflight,
            _watcher: parking_lot::Mutex::new(watcher),
        });
        app.spawn_background();
        Ok(app)
    }

    /// The daemon's own tasks: retention, the metrics history, the Segment outbox.
    fn spawn_background(self: &Arc<Self>) {
        tokio::spawn(retention::retention_loop(Arc::clone(self)));
        tokio::spawn(sample_metrics(Arc::clone(self)));
        let host = &self.engine.host;
        tokio::spawn(Arc::clone(&host.outbox).run(host.http.clone(), self.tasks.child_token()));
    }

    /// Starts `server.workers` workers, unless they run already.
    pub fn start_workers(&self) {
        let mut workers = self.workers.lock();
        if workers.is_none() {
            *workers = Some(WorkerPool::start(&self.deps, self.config.server.workers));
        }
    }

    /// What tool calls (over HTTP and stdio) need.
    pub(crate) fn tools(&self) -> crate::tool::Tools {
        crate::tool::Tools {
            scripts: Arc::clone(&self.scripts),
            queue: self.queue.clone(),
            runs: self.runs.clone(),
            audit: self.audit.clone(),
            profile: self.config.profile_tools.clone().map(|allow| {
                crate::tool::profile::ProfileTools {
                    api: self.engine.host.segment.clone(),
                    allow,
                }
            }),
        }
    }

    /// Every HTTP route of the daemon.
    pub fn router(&self) -> Router {
        let ingest = ingest::router(IngestState {
            queue: self.queue.clone(),
            write_keys: Arc::new(self.config.segment.write_keys.clone()),
            webhook_secret: self.config.segment.webhook_secret.clone(),
            webhook_token: self.config.segment.webhook_token.clone(),
            cors: ingest::Cors::new(&self.config.segment.cors_origins),
            inflight: Arc::clone(&self.inflight),
            metrics: Arc::clone(&self.metrics),
        });
        let admin = admin::router(AdminState {
            callers: Arc::clone(&self.callers),
            sessions: Arc::new(admin::session::Sessions::new(
                self.config.admin.session_ttl,
                Arc::clone(self.queue.clock()),
                self.config.server.tls.is_some(),
            )),
            audit: self.audit.clone(),
            queue: self.queue.clone(),
            runs: self.runs.clone(),
            dead: self.dead.clone(),
            scripts: Arc::clone(&self.scripts),
            versions: Arc::clone(&self.versions),
            state: self.state.clone(),
            approvals: self.approvals.clone(),
            schedules: Arc::clone(&self.schedules),
            metrics: Arc::clone(&self.metrics),
            history: Arc::clone(&self.history),
            outbox: Arc::clone(&self.engine.host.outbox),
            telemetry: self.deps.telemetry.clone(),
            started: self.started,
        });
        let sources = crate::source::route::router(Arc::new(crate::source::route::Sources::new(
            Arc::clone(&self.scripts),
            self.engine.clone(),
            self.queue.clone(),
            self.config.sources.clone(),
            Arc::clone(&self.inflight),
        )));
        let tools = self.tools();
        let listen = self.config.server.listen;
        let mcp = crate::mcp::route::router(
            tools,
            Arc::clone(&self.callers),
            self.config.approvals.public_url.clone(),
            vec![listen.ip().to_string(), listen.to_string()],
            self.tasks.child_token(),
        );
        ingest
            .merge(sources)
            .merge(admin)
            .merge(mcp)
            .merge(crate::approval::slack::router(
                self.approvals.clone(),
                self.audit.clone(),
            ))
            .merge(self.link_pages())
    }

    /// The pages behind signed decision links.
    fn link_pages(&self) -> Router {
        match self.engine.host.links.get() {
            Some(links) => crate::approval::page::router(crate::approval::page::LinkPages {
                approvals: self.approvals.clone(),
                links: Arc::clone(links),
                audit: self.audit.clone(),
                clock: Arc::clone(self.queue.clock()),
            }),
            None => Router::new(),
        }
    }

    /// Stops workers after their current run and flushes the store.
    pub async fn shutdown(&self) {
        self.tasks.cancel();
        self.queue.shutdown();
        let workers = self.workers.lock().take();
        if let Some(w) = workers {
            let _ = tokio::task::spawn_blocking(move || w.join()).await;
        }
        let runs = Arc::clone(&self.runs);
        let _ = tokio::task::spawn_blocking(move || runs.drain()).await;
        if let Err(e) = self.queue.sync().await {
            tracing::error!(error = %e, "Final flush failed.");
        }
    }
}

fn report_load(dir: &Path, set: &crate::script::ScriptSet) {
    if !dir.is_dir() {
        tracing::warn!(dir = %dir.display(), "Scripts dir does not exist; no handlers loaded.");
    }
    for e in &set.errors {
        tracing::error!(error = %e, "Script failed to load.");
    }
    let handlers: usize = set.scripts.iter().map(|s| s.handlers.len()).sum();
    tracing::info!(
        scripts = set.scripts.len(),
        handlers,
        errors = set.errors.len(),
        "Scripts loaded."
    );
}

/// On a backend shared by several daemons: timers for the runs others park, and
/// this daemon's description for them.
fn share_with_nodes(
    queue: &crate::queue::Queue,
    timers: &Timers,
    config: &Config,
    scripts: &Arc<crate::script::Live>,
) {
    let parks = timers.clone();
    queue.watch_parks(Arc::new(move |job| parks.add_parked(&[job])));
    queue.announce(describe_node(config, scripts));
}

/// What this daemon tells the others sharing its backend: where it listens, since
/// when, and the version (source hash) of each script it runs.
fn describe_node(
    config: &Config,
    scripts: &Arc<crate::script::Live>,
) -> Arc<dyn Fn() -> serde_json::Value + Send + Sync> {
    let scripts = Arc::clone(scripts);
    let addr = config
        .approvals
        .public_url
        .clone()
        .unwrap_or_else(|| config.server.listen.to_string());
    let started = crate::event::format_time(chrono::Utc::now());
    Arc::new(move || {
        let versions: serde_json::Map<String, serde_json::Value> = scripts
            .get()
            .scripts
            .iter()
            .map(|s| (s.name.clone(), serde_json::Value::from(s.hash.clone())))
            .collect();
        serde_json::json!({
            "addr": addr,
            "started_at": started,
            "scripts": versions,
        })
    })
}

/// Hands the host what only the daemon has: the queue (for `emit` and
/// `on_approval` runs), the live scripts, and the key that signs decision links.
fn wire_host(
    host: &Host,
    config: &Config,
    queue: &crate::queue::Queue,
    scripts: &Arc<crate::script::Live>,
) -> anyhow::Result<()> {
    let _ = host.events.set(queue.clone());
    let _ = host.scripts.set(Arc::clone(scripts));
    let key = secret_file(&config.server.data_dir, "approval-link-key")?;
    let public = config
        .approvals
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", config.server.listen));
    let _ = host.links.set(Arc::new(crate::approval::link::Links::new(
        key.expose().as_bytes(),
        &public,
    )));
    Ok(())
}

/// Reads `<data_dir>/admin-token`, creating it (mode 0600) with a random token.
fn admin_token_file(data_dir: &Path) -> anyhow::Result<Secret> {
    secret_file(data_dir, "admin-token")
}

/// Reads the secret in `<data_dir>/<name>`, creating the file (mode 0600) with a
/// random one the first time.
fn secret_file(data_dir: &Path, name: &str) -> anyhow::Result<Secret> {
    let path = data_dir.join(name);
    if let Ok(t) = std::fs::read_to_string(&path) {
        let t = t.trim();
        if !t.is_empty() {
            crate::store::restrict(&path, 0o600)
                .with_context(|| format!("restricting {}", path.display()))?;
            return Ok(Secret::new(t));
        }
    }
    let token = hex::encode(rand::random::<[u8; 24]>());
    std::fs::create_dir_all(data_dir)?;
    write_private(&path, &token).with_context(|| format!("writing {}", path.display()))?;
    tracing::info!(path = %path.display(), "Generated {name}.");
    Ok(Secret::new(token))
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")
}

/// Loads the scripts dir (created when missing), reporting what failed to load.
async fn load_scripts(config: &Config, engine: &EngineOptions) -> anyhow::Result<Arc<Live>> {
    let scripts_dir = config.server.scripts_dir.clone();
    if !scripts_dir.exists() {
        std::fs::create_dir_all(&scripts_dir)
            .with_context(|| format!("creating the scripts dir {}", scripts_dir.display()))?;
        tracing::info!(dir = %scripts_dir.display(), "Created the scripts dir.");
    }
    let opts = engine.clone();
    let set = tokio::task::spawn_blocking(move || load_dir(&scripts_dir, &opts)).await?;
    report_load(&config.server.scripts_dir, &set);
    Ok(Arc::new(Live::new(set)))
}

/// Approvals on the queue, with the check a parking run makes for a decision that
/// came in while it ran.
fn approvals_of(config: &Config, engine: &EngineOptions, queue: &Queue) -> Approvals {
    let approvals = Approvals::new(
        engine.host.approvals.clone(),
        queue.clone(),
        engine.host.slack.clone(),
        config.approvals.clone(),
    );
    let decided = approvals.store.clone();
    queue.set_settled_check(Arc::new(move |w| match &w.kind {
        crate::queue::WaitKind::Approval { approval_id, .. } => decided
            .get(approval_id)
            .ok()
            .flatten()
            .filter(|a| a.status != crate::approval::Status::Pending)
            .map(|a| a.decision()),
        _ => None,
    }));
    approvals
}

/// Live reload: the watcher of the scripts dir (`None` when it cannot watch), which
/// also stores each new version for the runs pinned to it.
fn watch_scripts(
    config: &Config,
    scripts: &Arc<Live>,
    engine: &EngineOptions,
    versions: &Arc<Versions>,
    (audit, hashes): (
        crate::audit::Audit,
        std::collections::BTreeMap<String, String>,
    ),
    tasks: &CancellationToken,
) -> Option<crate::script::watch::ScriptWatcher> {
    let remember = Arc::clone(versions);
    let hashes = parking_lot::Mutex::new(hashes);
    crate::script::watch::watch(
        &config.server.scripts_dir,
        Arc::clone(scripts),
        engine.clone(),
        move |set| {
            if let Err(e) = remember.remember(set) {
                tracing::error!(error = %e, "Storing script versions failed.");
            }
            audit.scripts_loaded(set, &mut hashes.lock());
        },
        tasks.child_token(),
    )
    .map_err(|e| tracing::warn!(error = %e, "Watching the scripts dir failed; live reload is off."))
    .ok()
}

/// Samples the metrics every `INTERVAL_S` into the console's history.
async fn sample_metrics(app: Arc<App>) {
    let every = std::time::Duration::from_secs(crate::metrics::history::INTERVAL_S);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let cancel = app.tasks.child_token();
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let queue = app.queue.clone();
        let parked = tokio::task::spawn_blocking(move || queue.parked_by_kind())
            .await
            .ok()
            .and_then(Result::ok)
            .map_or(0, |kinds| kinds.iter().map(|(_, n)| n).sum());
        let queued = app.queue.stats().queued as u64;
        let now = app.queue.clock().now_ms();
        app.history.record(app.metrics.sample(now, queued, parked));
    }
}
