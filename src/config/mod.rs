//! Configuration: the typed `Config` every part is built from, and its loading from
//! `spur.toml`, `${VAR}` interpolation and `SPUR_<SECTION>_<KEY>` overrides.
//!
//! Every key is optional; defaults give a zero-config daemon on loopback. Loading
//! collects every problem (unknown keys, bad values, unset variables) and reports
//! them together, each with its file and key.

mod load;
mod secret;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub(crate) use load::load;
pub use load::{ConfigError, load_from_str};
pub(crate) use secret::Secret;

/// The whole configuration of a daemon or a command.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the configuration came from, for messages (`None`: defaults only).
    pub source: Option<PathBuf>,
    pub server: ServerConfig,
    pub segment: SegmentConfig,
    pub admin: AdminConfig,
    pub limits: LimitsConfig,
    pub retry: RetryConfig,
    pub retention: RetentionConfig,
    /// `[store] backend`: where runs, state and events are kept.
    pub store: StoreBackend,
    /// `[store] sled_mode`: how the embedded store trades disk for write speed.
    pub sled_mode: SledMode,
    /// `[nats]`: the JetStream cluster of `store.backend = "nats"`.
    pub nats: NatsConfig,
    /// Webhook sources' settings (`[sources.NAME]`), by name.
    pub sources: BTreeMap<String, SourceConfig>,
    /// Named outbound connections (`[connections.NAME]`), by name.
    pub connections: BTreeMap<String, ConnectionConfig>,
    /// Names `env::secret(name)` may read (`[env] allow = [...]`).
    pub env_allow: Vec<String>,
    pub approvals: ApprovalsConfig,
    /// Named clients of the admin API and of `/mcp` (`[clients.NAME]`), by name.
    pub clients: BTreeMap<String, ClientConfig>,
    /// `[agents.profile]`: the built-in profile tools and what they may show.
    pub profile_tools: Option<ProfileToolsConfig>,
    pub telemetry: TelemetryConfig,
}

/// `[telemetry]`: traces over OTLP/HTTP.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// The collector's OTLP/HTTP base URL (`http://collector:4318`); unset: no traces.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the spans (default `spur`).
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            service_name: "spur".into(),
        }
    }
}

/// `[agents.profile]`: the built-in read-only tools over Segment's Profile API, and
/// the allowlists (glob patterns) of what they return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileToolsConfig {
    /// Traits `profile_traits` returns (none by default).
    pub traits: Vec<String>,
    /// Event properties `profile_events` returns (none by default: names and times only).
    pub event_properties: Vec<String>,
    /// Audience keys `profile_audiences` returns (all by default).
    pub audiences: Vec<String>,
    /// External id types `profile_external_ids` returns (`user_id`, `anonymous_id` by default).
    pub external_ids: Vec<String>,
}

impl Default for ProfileToolsConfig {
    fn default() -> Self {
        Self {
            traits: Vec::new(),
            event_properties: Vec::new(),
            audiences: vec!["*".into()],
            external_ids: vec!["user_id".into(), "anonymous_id".into()],
        }
    }
}

/// `[clients.NAME]`: someone or something that calls spur with its own token: an
/// agent over MCP, a dashboard, a teammate's CLI.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Its bearer token, compared in constant time.
    pub token: Secret,
    /// Glob patterns of the tools it may list and call (none by default).
    pub tools: Vec<String>,
    /// What it may do with the admin API.
    pub scopes: Vec<Scope>,
}

/// A permission of the admin API. `admin.token` holds every one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    RunsRead,
    RunsReplay,
    StateRead,
    StateWrite,
    ApprovalsRead,
    ApprovalsDecide,
    AuditRead,
    /// Every scope.
    Admin,
}

impl Scope {
    /// Every scope, as written in `scopes = [...]`.
    pub const ALL: [Scope; 8] = [
        Scope::RunsRead,
        Scope::RunsReplay,
        Scope::StateRead,
        Scope::StateWrite,
        Scope::ApprovalsRead,
        Scope::ApprovalsDecide,
        Scope::AuditRead,
        Scope::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::RunsRead => "runs:read",
            Scope::RunsReplay => "runs:replay",
            Scope::StateRead => "state:read",
            Scope::StateWrite => "state:write",
            Scope::ApprovalsRead => "approvals:read",
            Scope::ApprovalsDecide => "approvals:decide",
            Scope::AuditRead => "audit:read",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// `[approvals]`: where people decide, and defaults of requests.
#[derive(Debug, Clone)]
pub struct ApprovalsConfig {
    /// The connection that posts approval messages to Slack.
    pub slack_connection: String,
    /// Slack's signing secret, to verify button clicks (`/webhooks/slack/interactivity`).
    pub slack_signing_secret: Option<Secret>,
    /// This daemon's public URL, for links in messages (optional).
    pub public_url: Option<String>,
    /// How long a request waits when `expires` is not given.
    pub default_expires: Duration,
    /// Slack channel for approvals of connection calls (`require_approval`).
    pub channel: Option<String>,
    /// `[approvals.email]`: requests by email with signed decision links.
    pub email: Option<EmailConfig>,
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS (port 587); refused without it.
    StartTls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only to a relay on this machine (loopback).
    None,
}

/// `[approvals.email]`: the SMTP server approval emails go through.
#[derive(Debug, Clone)]
pub struct EmailConfig {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    pub user: Option<Secret>,
    pub password: Option<Secret>,
    /// The sender, `spur <approvals@example.com>` or a bare address.
    pub from: String,
    /// Who gets every request that names no `email` itself (none by default).
    pub to: Vec<String>,
}

/// `[server]`: where the daemon listens and keeps its files.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Listen address; non-loopback requires `admin.token`.
    pub listen: SocketAddr,
    /// The embedded store's directory.
    pub data_dir: PathBuf,
    /// Where handler scripts are loaded from.
    pub scripts_dir: PathBuf,
    /// Worker threads that run handlers (each blocks while its handler waits on HTTP).
    pub workers: usize,
    /// Ingest requests handled at once; more are answered 503 with `Retry-After`.
    pub max_inflight_requests: usize,
    /// Accepted events that may wait for the store's writer; more are answered 503.
    pub max_pending_events: usize,
    /// `[server.tls]`: serve HTTPS with this certificate and key.
    pub tls: Option<TlsConfig>,
}

/// `[server.tls]`: PEM files of the certificate chain and its private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `[segment]`: inbound keys and outbound Segment APIs.
#[derive(Debug, Clone)]
pub struct SegmentConfig {
    /// Write keys accepted on the tracking API; empty accepts any key.
    pub write_keys: Vec<Secret>,
    /// Origins browsers may send events from (`https://shop.example.com`); empty
    /// (the default) allows any, as Segment's API does.
    pub cors_origins: Vec<String>,
    /// Shared secret of the Segment Webhooks destination (`X-Signature`).
    pub webhook_secret: Option<Secret>,
    /// Bearer token the Actions mapping sends (`Authorization: Bearer …`): it
    /// authenticates a whole webhook body, so batches are accepted.
    pub webhook_token: Option<Secret>,
    /// Write key used for write-back (`segment::track` …).
    pub write_key: Option<Secret>,
    pub api_base: String,
    pub profile_base: String,
    pub profile_space_id: Option<String>,
    pub profile_token: Option<Secret>,
    pub public_api_base: String,
    pub public_api_token: Option<Secret>,
    /// Whether regulations and tracking-plan changes wait for an approval.
    pub require_approval: bool,
    /// Write-back batching: events per flush and the longest wait.
    pub batch_size: usize,
    pub flush_interval: Duration,
}

/// `[admin]`: the admin API's bearer token and the console's sessions.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// When unset, `spur serve` generates one into `<data_dir>/admin-token`.
    pub token: Option<Secret>,
    /// How long a console login lasts (`session_ttl`, default 12 hours).
    pub session_ttl: Duration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            token: None,
            session_ttl: Duration::from_secs(12 * 3600),
        }
    }
}

/// `[limits]`: the sandbox of every run.
#[derive(Debug, Clone)]
pub struct LimitsConfig {
    pub max_operations: u64,
    pub timeout_ms: u64,
    pub max_call_depth: usize,
    pub max_string_bytes: usize,
    pub max_array_len: usize,
    pub max_map_len: usize,
    /// Log lines kept per run record (the rest are counted, not kept).
    pub max_log_lines: usize,
    /// Largest upstream response body read by any connector (bytes).
    pub max_response_bytes: usize,
}

/// `[retry]`: backoff for runs that failed with a retryable error.
#[derive(Debug, Clone)]
pub struct RetryConfig {
    pub max_attempts: u32,
    pub base_ms: u64,
    pub max_ms: u64,
}

/// `[sources.NAME]`: the settings of a webhook source (`on_webhook("NAME", …)`).
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// The signing secret its `verify` checks requests with.
    pub secret: Option<Secret>,
    /// Largest request body accepted (decompressed).
    pub max_body_bytes: usize,
    /// Requests per second accepted; past it the answer is 429.
    pub rate_limit: Option<f64>,
}

/// Largest webhook body by default: 1 MB.
/// Events that may wait for the writer at once, by default
/// (`server.max_pending_events`).
pub(crate) const DEFAULT_MAX_PENDING_EVENTS: usize = 20_000;

pub(crate) const DEFAULT_SOURCE_BODY_BYTES: usize = 1 << 20;

impl Default for SourceConfig {
    fn default() -> Self {
        Self {
            secret: None,
            max_body_bytes: DEFAULT_SOURCE_BODY_BYTES,
            rate_limit: None,
        }
    }
}

/// `[store] backend`: which implementation of the storage seam (DESIGN.md §8)
/// keeps the queue, state, journals, approvals, run records and dead letters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StoreBackend {
    /// The embedded store in `server.data_dir` (no setup).
    #[default]
    Sled,
    /// A NATS JetStream cluster (`[nats]`), shared by several daemons.
    Nats,
}

/// `[nats]`: how to reach the JetStream cluster and what to call spur's stream in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsConfig {
    /// Server URLs (`nats://host:4222`, `tls://host:4222`); the client fails over
    /// between them.
    pub servers: Vec<String>,
    /// Copies JetStream keeps of spur's stream (1, 3 or 5; 3 on a cluster).
    pub replicas: usize,
    /// Names spur's stream (`SPUR`) and its subjects (`spur.>`), so two deployments
    /// can share a cluster.
    pub prefix: String,
    pub auth: NatsAuth,
    pub tls: Option<NatsTls>,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            servers: vec!["nats://127.0.0.1:4222".into()],
            replicas: 1,
            prefix: "spur".into(),
            auth: NatsAuth::None,
            tls: None,
        }
    }
}

/// How spur authenticates to NATS (at most one way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NatsAuth {
    None,
    /// `creds`: a credentials file (JWT and NKey seed) of a decentralised account.
    Creds(PathBuf),
    Token(Secret),
    UserPassword {
        user: String,
        password: Secret,
    },
}

/// `[nats.tls]`: TLS to the servers (also turned on by a `tls://` URL).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatsTls {
    /// PEM file of the CA the servers' certificates are checked against (default:
    /// the system's roots).
    pub ca: Option<PathBuf>,
    /// A client certificate and its key (PEM), for servers that verify clients.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// `[store] sled_mode`: sled's own trade-off. `low_space` (the default) rewrites
/// data more often so space freed by retention is reused and the data dir levels
/// off; `high_throughput` writes faster and lets the files grow further.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SledMode {
    #[default]
    LowSpace,
    HighThroughput,
}

/// `[retention]`: how long records are kept.
#[derive(Debug, Clone)]
pub struct RetentionConfig {
    pub runs: Duration,
    pub events: Duration,
    pub dead_letters: Duration,
    /// Decided approval requests (pending ones are kept until decided or expired).
    pub approvals: Duration,
    /// How long a `messageId` is remembered for dedup: a repeat within it is always
    /// dropped, one up to twice as late may still be (ids are kept in two
    /// generations of this length).
    pub dedup: Duration,
}

/// `[connections.NAME]`: a named outbound HTTP connection.
#[derive(Debug, Clone, Default)]
pub struct ConnectionConfig {
    pub base_url: String,
    pub auth: Auth,
    /// Extra headers sent on every call; their values are treated as secrets.
    pub headers: Vec<(String, Secret)>,
    pub timeout_ms: Option<u64>,
    /// Requests per second shared by all workers.
    pub rate_limit: Option<f64>,
    pub max_concurrency: Option<usize>,
    /// `"METHOD path-glob"` patterns whose calls wait for an approval.
    pub require_approval: Vec<String>,
    /// `"METHOD path-glob"` patterns of the only calls made (empty: every call).
    pub allow: Vec<String>,
    /// Attempts per call for 429, 5xx and connection errors.
    pub max_attempts: Option<u32>,
    /// Largest response body read (default: `limits.max_response_bytes`).
    pub max_response_bytes: Option<usize>,
    /// What happens to a call whose outcome is unknown (sent, then timed out or cut
    /// off): retried with the same `Idempotency-Key` (default), or never re-sent.
    pub on_unknown: OnUnknown,
}

/// `on_unknown` of a connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnUnknown {
    /// The run is retried: the call is sent again with the same `Idempotency-Key`
    /// (at-least-once).
    #[default]
    Retry,
    /// The run fails to the dead letters; a person decides whether to replay it.
    Fail,
}

/// How a connection authenticates.
#[derive(Debug, Clone, Default)]
pub enum Auth {
    #[default]
    None,
    Bearer(Secret),
    Basic {
        user: Secret,
        password: Secret,
    },
}

impl Default for Config {
    fn default() -> Self {
        Self {
            source: None,
            clients: BTreeMap::new(),
            profile_tools: None,
            telemetry: TelemetryConfig::default(),
            server: ServerConfig {
                listen: SocketAddr::from(([127, 0, 0, 1], 8088)),
                data_dir: PathBuf::from(".spur"),
                scripts_dir: PathBuf::from("scripts"),
                workers: 16,
                max_inflight_requests: 256,
                max_pending_events: crate::config::DEFAULT_MAX_PENDING_EVENTS,
                tls: None,
            },
            segment: SegmentConfig {
                write_keys: Vec::new(),
                cors_origins: Vec::new(),
                webhook_secret: None,
                webhook_token: None,
                write_key: None,
                api_base: "https://api.segment.io".into(),
                profile_base: "https://profiles.segment.com".into(),
                profile_space_id: None,
                profile_token: None,
                public_api_base: "https://api.segmentapis.com".into(),
                public_api_token: None,
                require_approval: true,
                batch_size: 100,
                flush_interval: Duration::from_secs(1),
            },
            admin: AdminConfig::default(),
            limits: LimitsConfig {
                max_operations: 10_000_000,
                timeout_ms: 30_000,
                max_call_depth: 64,
                max_string_bytes: 1 << 20,
                max_array_len: 100_000,
                max_map_len: 100_000,
                max_log_lines: 200,
                max_response_bytes: 10 << 20,
            },
            retry: RetryConfig {
                max_attempts: 8,
                base_ms: 1000,
                max_ms: 15 * 60 * 1000,
            },
            retention: RetentionConfig {
                runs: Duration::from_hours(168),
                events: Duration::from_hours(168),
                dead_letters: Duration::from_hours(720),
                approvals: Duration::from_hours(720),
                dedup: Duration::from_hours(24),
            },
            store: StoreBackend::Sled,
            sled_mode: SledMode::LowSpace,
            nats: NatsConfig::default(),
            sources: BTreeMap::new(),
            connections: BTreeMap::new(),
            env_allow: Vec::new(),
            approvals: ApprovalsConfig {
                slack_connection: "slack".into(),
                slack_signing_secret: None,
                public_url: None,
                default_expires: Duration::from_secs(7 * 86_400),
                channel: None,
                email: None,
            },
        }
    }
}

impl Config {
    /// Every secret value in the configuration, for redaction.
    pub fn secrets(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut push = |s: &Secret| {
            if !s.expose().is_empty() {
                out.push(s.expose().to_owned());
            }
        };
        self.segment.write_keys.iter().for_each(&mut push);
        for s in [
            &self.segment.webhook_secret,
            &self.segment.webhook_token,
            &self.segment.write_key,
            &self.segment.profile_token,
            &self.segment.public_api_token,
            &self.admin.token,
            &self.approvals.slack_signing_secret,
            &self.approvals.email.as_ref().and_then(|e| e.user.clone()),
            &self
                .approvals
                .email
                .as_ref()
                .and_then(|e| e.password.clone()),
        ]
        .into_iter()
        .flatten()
        {
            push(s);
        }
        for conn in self.connections.values() {
            match &conn.auth {
                Auth::None => {}
                Auth::Bearer(t) => push(t),
                Auth::Basic { user, password } => {
                    push(user);
                    push(password);
                }
            }
            conn.headers.iter().for_each(|(_, v)| push(v));
        }
        for client in self.clients.values() {
            push(&client.token);
        }
        match &self.nats.auth {
            NatsAuth::Token(t) | NatsAuth::UserPassword { password: t, .. } => push(t),
            NatsAuth::None | NatsAuth::Creds(_) => {}
        }
        out.sort();
        out.dedup();
        out
    }
}
