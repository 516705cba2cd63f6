//! `deskgate.toml`: the gateway's configuration, read once at start and checked before anything
//! else happens.
//!
//! # Why every error names a key
//!
//! An operator who gets "invalid configuration" at 2 am has to bisect the file. Every
//! [`ConfigError`] instead names the key path (`connections.acme.base_url`), says what is wrong
//! with it and what to write instead, and [`Config::validate`] reports *all* problems at once, not
//! the first. Unknown keys are refused (`#[serde(deny_unknown_fields)]`, as extism's manifest
//! does): a misspelt `budget_targte` silently ignored is a budget silently not applied.
//!
//! # Secrets
//!
//! Secrets (the API token, credentials, webhook secrets) may be written in the file or, better,
//! named by an environment variable (`token_env = "ZENDESK_TOKEN"`). Either way they are held in
//! [`Secret`], whose `Debug` and `Display` print `<redacted>`, so no log line, error or API answer
//! can carry one. The key that encrypts credentials at rest comes only from the environment
//! (`DESKGATE_SECRET_KEY`): a key written next to what it protects protects nothing.
//!
//! A connection's `webhook_secret` (or `webhook_secret_env`; empty or blank is refused) and
//! `allow_unsigned_webhooks = true` are written, sealed, to the store by `deskgate serve` at every
//! start ([`crate::serve`]): webhooks read secrets from the store only, so the file's value
//! replaces one set through the API (`PUT /v1/connections/{id}/webhook-secret`) at the next start.
//! A section with neither leaves the stored secret as the API set it.
//!
//! # Environment as a parameter
//!
//! [`Config::validate`] takes the environment as a lookup function, never reading
//! `std::env` itself, so tests control it exactly ([`Config::validate_with_process_env`] is the
//! one place the process environment is read).
//!
//! # Format
//!
//! ```toml
//! listen = "127.0.0.1:8080"          # default
//! store = "deskgate.sqlite"          # default; a file path, sqlite://PATH or postgres://...
//! api_token_env = "DESKGATE_API_TOKEN" # default; or api_token = "..." (at least 16 characters)
//! adapters_dir = "/etc/deskgate/adapters" # optional: extra *.wasm adapters
//!
//! [runtime]                          # optional: adapter sandbox limits
//! call_deadline_ms = 250
//! memory_cap_mb = 64
//! max_instances = 256
//!
//! [connections.acme]
//! platform = "zendesk"
//! base_url = "https://acme.zendesk.com"
//! plan = "team"                      # optional: the adapter's default plan otherwise
//! display_name = "Acme Support"      # optional
//! budget_target = 0.75               # optional: share of each rate limit to use, 0 < x <= 1
//! admin_contact_url = "https://hooks.example.com/deskgate" # optional: where alerts go
//! webhook_secret_env = "ACME_WEBHOOK_SECRET" # or webhook_secret = "..."
//! allow_unsigned_webhooks = false
//! settings = { object = "ticket" }   # optional: non-secret adapter settings
//!
//! [cluster]                          # optional: several replicas (README "Running several replicas")
//! redis = "redis://127.0.0.1:6379/0" # budgets shared by every replica (also redis+unix:///PATH)
//! replicas = 3                       # how many replicas share the limits (fallback share: 1/3 each)
//! replica_id = "gw-a"                # optional: HOSTNAME-pid by default (HOSTNAME on SQLite); in metrics, leases, alerts
//! redis_prefix = "deskgate"          # optional: prefix of every Redis key
//! lease_secs = 60                    # optional: outbox claim and timer lease period
//!
//! [auth]                             # optional: the credential policy (issue #5), for every connection
//! refresh_at = 0.8                   # refresh an OAuth token once this share of its lifetime has passed, 0 < x < 1
//! health_check_secs = 14400          # check API keys and non-expiring tokens with who-am-i this often, >= 60
//!
//! [sweep]                            # optional: reconciliation sweeps of every connection
//! min_interval_secs = 300            # a sweep every min..max seconds (jittered), each >= 1
//! max_interval_secs = 600
//!
//! [push]                             # optional: POST events to the app (besides GET /v1/events)
//! url = "https://app.example.com/deskgate/events"
//! secret_env = "DESKGATE_PUSH_SECRET" # signs each POST: x-deskgate-timestamp, x-deskgate-signature
//! batch = 100                        # optional: events per POST
//! timeout_secs = 10                  # optional
//! connection = "acme"                # optional: only this connection's events
//!
//! [connections.acme.credentials]     # scheme = "api_key" (default) or "oauth"
//! email = "bot@acme.com"
//! token_env = "ZENDESK_TOKEN"        # any field `X_env` reads field `X` from the environment
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::budget::Share;
use crate::runtime::RuntimeConfig;
use crate::store::{CredentialSecret, SecretKey};

/// The environment variable holding the key that encrypts credentials at rest.
pub const SECRET_KEY_ENV: &str = "DESKGATE_SECRET_KEY";
/// The environment variable read for the API token unless the config names another.
pub const API_TOKEN_ENV: &str = "DESKGATE_API_TOKEN";
/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default store location: one SQLite file in the working directory.
pub const DEFAULT_STORE: &str = "deskgate.sqlite";
/// Platforms of the built-in adapters.
pub const BUILTIN_PLATFORMS: [&str; 3] = ["freshdesk", "intercom", "zendesk"];

/// A secret string. `Debug` and `Display` print `<redacted>`; read it with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself; do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The file as written: see the module docs for the format.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to serve the API on (`127.0.0.1:8080` by default).
    pub listen: Option<String>,
    /// Store location (`deskgate.sqlite` by default).
    pub store: Option<String>,
    /// The API bearer token, literally (prefer `api_token_env`).
    pub api_token: Option<Secret>,
    /// The environment variable holding the API token (`DESKGATE_API_TOKEN` by default).
    pub api_token_env: Option<String>,
    /// A directory of extra adapter components (`*.wasm`).
    pub adapters_dir: Option<PathBuf>,
    /// Adapter sandbox limits.
    #[serde(default)]
    pub runtime: RuntimeSection,
    /// Connections by id.
    #[serde(default)]
    pub connections: BTreeMap<String, ConnectionConfig>,
    /// Several replicas: shared budgets, replica identity.
    #[serde(default)]
    pub cluster: ClusterSection,
    /// Push events to the app's own endpoint (besides the pull API).
    pub push: Option<PushSection>,
    /// The credential policy's timing.
    #[serde(default)]
    pub auth: AuthSection,
    /// Reconciliation sweep timing.
    #[serde(default)]
    pub sweep: SweepSection,
}

/// `[sweep]`: how often each connection is swept (listed for changes its webhooks missed).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepSection {
    /// Shortest seconds between two sweeps of a connection (300).
    pub min_interval_secs: Option<u64>,
    /// Longest seconds between two sweeps of a connection (600).
    pub max_interval_secs: Option<u64>,
}

/// The sweep interval after validation: each sweep is jittered between the two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepSettings {
    /// Shortest interval.
    pub min: Duration,
    /// Longest interval.
    pub max: Duration,
}

impl Default for SweepSettings {
    fn default() -> Self {
        let (min, max) = crate::gateway::GatewayConfig::default().sweep_every;
        Self { min, max }
    }
}

fn validate_sweep(w: &SweepSection, errs: &mut Vec<ConfigError>) -> SweepSettings {
    let mut out = SweepSettings::default();
    for (key, v, slot) in [("sweep.min_interval_secs", w.min_interval_secs, &mut out.min), ("sweep.max_interval_secs", w.max_interval_secs, &mut out.max)] {
        match v {
            Some(0) => errs.push(ConfigError::new(key, "0 s would sweep on every tick", "use at least 1 (the defaults are 300 and 600): every sweep spends the connection's read budget")),
            Some(secs) => *slot = Duration::from_secs(secs),
            None => {}
        }
    }
    if out.min > out.max {
        errs.push(ConfigError::new(
            "sweep.max_interval_secs",
            format!("{} s is shorter than sweep.min_interval_secs ({} s)", out.max.as_secs(), out.min.as_secs()),
            "set max_interval_secs to at least min_interval_secs (sweeps are jittered between the two)",
        ));
    }
    out
}

/// `[auth]`: when OAuth tokens are refreshed and how often other credentials are checked.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// Refresh an OAuth token once this share of its lifetime has passed (0.8).
    pub refresh_at: Option<f64>,
    /// Seconds between who-am-i health checks of API keys and non-expiring tokens (4 h).
    pub health_check_secs: Option<u64>,
}

/// `[auth]`, checked, defaults applied: copied into [`crate::auth::AuthConfig`] by `serve`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AuthSettings {
    /// Share of an OAuth token's lifetime after which it is refreshed, in (0, 1).
    pub refresh_at: f64,
    /// Interval of the who-am-i health check, at least a minute.
    pub health_check: Duration,
}

impl Default for AuthSettings {
    fn default() -> Self {
        let d = crate::auth::AuthConfig::default();
        Self { refresh_at: d.refresh_at, health_check: d.health_interval }
    }
}

/// The shortest health-check interval accepted: who-am-i more often spends the platform's rate
/// limit on nothing.
pub const MIN_HEALTH_CHECK_SECS: u64 = 60;

fn validate_auth(a: &AuthSection, errs: &mut Vec<ConfigError>) -> AuthSettings {
    let mut out = AuthSettings::default();
    if let Some(x) = a.refresh_at {
        if x.is_finite() && x > 0.0 && x < 1.0 {
            out.refresh_at = x;
        } else {
            errs.push(ConfigError::new(
                "auth.refresh_at",
                format!("{x} is not a share of the token's lifetime strictly between 0 and 1"),
                "use a value like 0.8 (refresh at 80% of the lifetime); 1 or more would refresh only after the token expired",
            ));
        }
    }
    if let Some(secs) = a.health_check_secs {
        if secs >= MIN_HEALTH_CHECK_SECS {
            out.health_check = Duration::from_secs(secs);
        } else {
            errs.push(ConfigError::new(
                "auth.health_check_secs",
                format!("{secs} s is shorter than the minimum of {MIN_HEALTH_CHECK_SECS} s"),
                "use at least 60 (the default is 14400, every 4 hours): each check is a request against the platform's rate limit",
            ));
        }
    }
    out
}

/// `[push]`: POST inbox events to the app, signed, acknowledged on its 2xx.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushSection {
    /// The app's endpoint.
    pub url: Option<String>,
    /// The signing secret, literally (prefer `secret_env`).
    pub secret: Option<Secret>,
    /// The environment variable holding the signing secret.
    pub secret_env: Option<String>,
    /// Events per POST (100 by default, 1..=1000).
    pub batch: Option<u32>,
    /// Seconds the app has to answer (10 by default, 1..=300).
    pub timeout_secs: Option<u64>,
    /// Push only this connection's events (all by default).
    pub connection: Option<String>,
}

/// `[push]` after validation.
#[derive(Debug, Clone)]
pub struct PushSettings {
    /// The app's endpoint.
    pub url: String,
    /// The signing secret.
    pub secret: Secret,
    /// Events per POST.
    pub batch: u32,
    /// Time the app has to answer.
    pub timeout: Duration,
    /// Only this connection's events.
    pub connection: Option<String>,
}

/// `[cluster]`: running several replicas on one PostgreSQL store and one Redis.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// Redis URL for rate budgets shared by every replica.
    pub redis: Option<String>,
    /// How many replicas share each connection's limits (1 by default).
    pub replicas: Option<u32>,
    /// This replica's id (`HOSTNAME-pid` by default; `HOSTNAME` on the embedded store, which one
    /// gateway uses, so that a restart takes its timer leases back at once).
    pub replica_id: Option<String>,
    /// Prefix of every Redis key (`deskgate` by default).
    pub redis_prefix: Option<String>,
    /// Lease period of outbox claims and per-connection timers, in seconds (300 for outbox
    /// claims and 60 for timers by default): a dead replica's work moves within it.
    pub lease_secs: Option<u64>,
}

/// `[cluster]` after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// Redis URL for shared budgets (`None`: budgets are this process's alone).
    pub redis: Option<String>,
    /// Replicas sharing each limit.
    pub replicas: u32,
    /// This replica's id.
    pub replica_id: String,
    /// Prefix of every Redis key.
    pub redis_prefix: String,
    /// Lease period of outbox claims and timers, if set.
    pub lease: Option<Duration>,
}

/// `[runtime]`: adapter sandbox limits.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSection {
    /// Wall-clock budget of one adapter call, in milliseconds.
    pub call_deadline_ms: Option<u64>,
    /// Memory cap of one adapter instance, in MiB.
    pub memory_cap_mb: Option<u64>,
    /// Live adapter instances at most.
    pub max_instances: Option<u32>,
    /// Where compiled adapters are cached.
    pub cache_dir: Option<PathBuf>,
}

/// `[connections.<id>]`: one helpdesk account.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionConfig {
    /// Adapter platform id (`zendesk`, `freshdesk`, `intercom`, or a loaded adapter's id).
    pub platform: String,
    /// The account's API base URL (`https://acme.zendesk.com`).
    pub base_url: String,
    /// The plan as the adapter's descriptor names it.
    pub plan: Option<String>,
    /// Human-readable name (the id by default).
    pub display_name: Option<String>,
    /// Share of each rate limit this gateway may use, `0 < x <= 1` (0.75 by default).
    pub budget_target: Option<f64>,
    /// Where alerts for this connection are delivered.
    pub admin_contact_url: Option<String>,
    /// The webhook signing secret, literally (prefer `webhook_secret_env`).
    pub webhook_secret: Option<Secret>,
    /// The environment variable holding the webhook signing secret.
    pub webhook_secret_env: Option<String>,
    /// Accept webhook deliveries that carry no signature at all.
    #[serde(default)]
    pub allow_unsigned_webhooks: bool,
    /// Non-secret adapter settings.
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    /// Credential fields: `scheme` (`api_key` or `oauth`), then fields, each either `X = "value"`
    /// or `X_env = "VARIABLE"`.
    pub credentials: Option<BTreeMap<String, Secret>>,
}

/// One problem with the configuration: where, what, and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The key path (`connections.acme.base_url`), or the environment variable.
    pub key: String,
    /// What is wrong.
    pub problem: String,
    /// What to write instead.
    pub fix: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, problem: impl Into<String>, fix: impl Into<String>) -> Self {
        Self { key: key.into(), problem: problem.into(), fix: fix.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}; fix: {}", self.key, self.problem, self.fix)
    }
}

/// Every problem found, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The error for `key`, if any.
    pub fn get(&self, key: &str) -> Option<&ConfigError> {
        self.0.iter().find(|e| e.key == key)
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the configuration has {} problem(s):", self.0.len())?;
        for e in &self.0 {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// The configuration after [`Config::validate`]: typed, secrets resolved.
#[derive(Debug, Clone)]
pub struct Validated {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The store URL.
    pub store: String,
    /// The API bearer token.
    pub api_token: Secret,
    /// The credential encryption key.
    pub secret_key: SecretKey,
    /// Extra adapters.
    pub adapters_dir: Option<PathBuf>,
    /// Adapter sandbox limits.
    pub runtime: RuntimeConfig,
    /// Connections, by id order.
    pub connections: Vec<ConnectionSettings>,
    /// Several replicas.
    pub cluster: ClusterSettings,
    /// Push to the app, when configured.
    pub push: Option<PushSettings>,
    /// The credential policy's timing (`[auth]`, defaults when absent).
    pub auth: AuthSettings,
    /// Sweep interval (`[sweep]`, defaults when absent).
    pub sweep: SweepSettings,
}

/// One connection after validation.
#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    /// The id.
    pub id: String,
    /// The platform.
    pub platform: String,
    /// The base URL, without a trailing slash.
    pub base_url: String,
    /// The plan.
    pub plan: Option<String>,
    /// Display name.
    pub display_name: String,
    /// Budget target share.
    pub budget_target: Share,
    /// Admin contact.
    pub admin_contact_url: Option<String>,
    /// Webhook secret.
    pub webhook_secret: Option<Secret>,
    /// Accept unsigned webhooks.
    pub allow_unsigned_webhooks: bool,
    /// Non-secret settings.
    pub settings: BTreeMap<String, String>,
    /// The credentials, resolved (never printed: see [`CredentialSecret`]'s `Debug`).
    pub credentials: Option<CredentialSecret>,
}

impl Config {
    /// Read and parse `path`. Only the shape is checked here (types, unknown keys); call
    /// [`Config::validate`] for the rest.
    ///
    /// # Errors
    /// A [`ConfigErrors`] naming the file (unreadable) or the key (the toml crate's message,
    /// with its line and column, plus what to do).
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError::new(
                path.display().to_string(),
                format!("cannot read the configuration file: {e}"),
                "pass --config with the path of an existing, readable deskgate.toml",
            )])
        })?;
        Self::parse(&text)
    }

    /// Parse configuration text (see [`Config::load`]).
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn parse(text: &str) -> Result<Self, ConfigErrors> {
        toml::from_str(text).map_err(|e| {
            let msg = e.message().to_string();
            let fix = if msg.contains("unknown field") {
                "remove or correct the key; the accepted keys are listed above and in the \
                 `deskgate::config` documentation"
            } else {
                "correct the value's type or syntax (see the `deskgate::config` documentation)"
            };
            let key = e
                .span()
                .map(|s| {
                    let before = &text[..s.start.min(text.len())];
                    let line = before.matches('\n').count() + 1;
                    // Name the key path when the message names a field: the table header above
                    // the span, then the field.
                    let field = msg.strip_prefix("unknown field `").and_then(|m| m.split('`').next());
                    let table = before
                        .lines()
                        .rev()
                        .map(str::trim)
                        .find(|l| l.starts_with('['))
                        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
                    match (field, table) {
                        (Some(f), Some(t)) => format!("{t}.{f} (line {line})"),
                        (Some(f), None) => format!("{f} (line {line})"),
                        _ => format!("line {line}"),
                    }
                })
                .unwrap_or_else(|| "deskgate.toml".into());
            ConfigErrors(vec![ConfigError::new(key, e.to_string().trim_end().to_string(), fix)])
        })
    }

    /// The adapter sandbox limits of `[runtime]` (the runtime must exist before the platforms
    /// that [`Config::validate`] checks against are known).
    ///
    /// # Errors
    /// [`ConfigErrors`] naming each out-of-range key.
    pub fn runtime_config(&self) -> Result<RuntimeConfig, ConfigErrors> {
        let mut errs = Vec::new();
        let mut runtime = RuntimeConfig::default();
        let r = &self.runtime;
        if let Some(ms) = r.call_deadline_ms {
            if ms == 0 || ms > 60_000 {
                errs.push(ConfigError::new(
                    "runtime.call_deadline_ms",
                    format!("{ms} ms is outside 1..=60000"),
                    "use a deadline between 1 and 60000 ms (250 is the default)",
                ));
            }
            runtime.call_deadline = Duration::from_millis(ms);
        }
        if let Some(mb) = r.memory_cap_mb {
            if mb == 0 || mb > 4096 {
                errs.push(ConfigError::new(
                    "runtime.memory_cap_mb",
                    format!("{mb} MiB is outside 1..=4096"),
                    "use a cap between 1 and 4096 MiB (64 is the default)",
                ));
            }
            runtime.memory_cap = (mb as usize) << 20;
        }
        if let Some(n) = r.max_instances {
            if n == 0 {
                errs.push(ConfigError::new(
                    "runtime.max_instances",
                    "0 instances means no adapter can ever run",
                    "use at least 1 (256 is the default)",
                ));
            }
            runtime.max_instances = n;
        }
        runtime.cache_dir = r.cache_dir.clone();
        if errs.is_empty() { Ok(runtime) } else { Err(ConfigErrors(errs)) }
    }

    /// [`Config::validate`] against the process environment.
    ///
    /// # Errors
    /// As [`Config::validate`].
    pub fn validate_with_process_env<P: KnownPlatform>(&self, platforms: &[P]) -> Result<Validated, ConfigErrors> {
        self.validate(&|k| std::env::var(k).ok(), platforms)
    }

    /// Check everything the types cannot: addresses and URLs, that secrets are present (in the
    /// file or in the environment `env` describes), budget shares, that each platform is one of
    /// `platforms` and each plan one its adapter declares (where `platforms` know their plans:
    /// pass the loaded adapters), and that the credential key is set and well-formed. Returns
    /// every problem.
    ///
    /// # Errors
    /// [`ConfigErrors`] with one [`ConfigError`] per problem.
    pub fn validate<P: KnownPlatform>(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
        platforms: &[P],
    ) -> Result<Validated, ConfigErrors> {
        let ids: Vec<&str> = platforms.iter().map(KnownPlatform::id).collect();
        let mut errs = Vec::new();
        let listen_text = self.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        let listen = match listen_text.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(e) => {
                errs.push(ConfigError::new(
                    "listen",
                    format!("`{listen_text}` is not an address: {e}"),
                    "write an IP address and port, like \"127.0.0.1:8080\" or \"0.0.0.0:8080\"",
                ));
                None
            }
        };
        let store = self.store.clone().unwrap_or_else(|| DEFAULT_STORE.into());
        if store.trim().is_empty() {
            errs.push(ConfigError::new(
                "store",
                "the store location is empty",
                "remove the key to use \"deskgate.sqlite\", or give a file path or postgres://...",
            ));
        }
        // Without either key the token comes from the default variable.
        let var = self.api_token_env.as_deref().or(self.api_token.is_none().then_some(API_TOKEN_ENV));
        let api_token = literal_or_env(
            (&self.api_token, var),
            ("api_token", "api_token"),
            "keep one of them (api_token_env is preferred: secrets stay out of the file)",
            env,
            &mut errs,
            |var| {
                ConfigError::new(
                    var,
                    "no API token: the environment variable is not set",
                    format!(
                        "set {var} to a random token (for example `openssl rand -hex 32`); \
                         apps send it as `Authorization: Bearer <token>`"
                    ),
                )
            },
        )
        .found();
        if let Some((t, key)) = &api_token
            && t.expose().len() < 16
        {
            errs.push(ConfigError::new(
                key.clone(),
                format!("the API token is {} characters long, too short to resist guessing", t.expose().len()),
                "use at least 16 random characters (for example `openssl rand -hex 32`)",
            ));
        }
        let secret_key = match env(SECRET_KEY_ENV).filter(|v| !v.trim().is_empty()) {
            None => {
                let why = if self.connections.values().any(|c| c.credentials.is_some()) {
                    "not set, but credentials are configured and must be encrypted at rest"
                } else {
                    "not set: the store encrypts every connection's credentials with it"
                };
                errs.push(ConfigError::new(
                    SECRET_KEY_ENV,
                    why,
                    format!(
                        "set {SECRET_KEY_ENV} to 32 random bytes as hex or base64 (`openssl rand -hex 32`) \
                         and keep it: credentials stored with a lost key must be entered again"
                    ),
                ));
                None
            }
            Some(text) => match SecretKey::parse(&text) {
                Ok(k) => Some(k),
                Err(e) => {
                    errs.push(ConfigError::new(
                        SECRET_KEY_ENV,
                        format!("not a valid key: {e}"),
                        "generate one with `openssl rand -hex 32`",
                    ));
                    None
                }
            },
        };
        let runtime = self.runtime_config().unwrap_or_else(|e| {
            errs.extend(e.0);
            RuntimeConfig::default()
        });

        let cluster = validate_cluster(&self.cluster, &store, env, &mut errs);
        let push = self.push.as_ref().and_then(|p| validate_push(p, env, &mut errs));
        let auth = validate_auth(&self.auth, &mut errs);
        let sweep = validate_sweep(&self.sweep, &mut errs);
        let mut connections = Vec::new();
        for (id, c) in &self.connections {
            if let Some(p) = platforms.iter().find(|p| p.id() == c.platform) {
                check_plan(id, c.plan.as_deref(), p, &mut errs);
            }
            if let Some(s) = validate_connection(id, c, env, &ids, &mut errs) {
                connections.push(s);
            }
        }
        if !errs.is_empty() {
            return Err(ConfigErrors(errs));
        }
        let (api_token, _) = api_token.expect("checked");
        Ok(Validated {
            listen: listen.expect("checked"),
            store,
            api_token,
            secret_key: secret_key.expect("checked"),
            adapters_dir: self.adapters_dir.clone(),
            runtime,
            connections,
            cluster,
            push,
            auth,
            sweep,
        })
    }
}

/// Where a secret given as `name = "..."` or `name_env = "VARIABLE"` came from.
enum SecretFrom {
    /// Found, with the key it came from (`name`, or the variable's name).
    Found(Secret, String),
    /// Neither key is set.
    Absent,
    /// Both keys are set, or the variable is unset or empty: the error is pushed.
    Failed,
}

impl SecretFrom {
    fn found(self) -> Option<(Secret, String)> {
        match self {
            SecretFrom::Found(s, key) => Some((s, key)),
            SecretFrom::Absent | SecretFrom::Failed => None,
        }
    }
}

/// Resolve a secret given literally or through an environment variable: `given` is the literal
/// value and the variable's name, `(name, key)` the field's name and the key errors are reported
/// at when both are set (with `both_fix`), `unset` the error when the variable has no value.
fn literal_or_env(
    given: (&Option<Secret>, Option<&str>),
    (name, key): (&str, &str),
    both_fix: &str,
    env: &dyn Fn(&str) -> Option<String>,
    errs: &mut Vec<ConfigError>,
    unset: impl FnOnce(&str) -> ConfigError,
) -> SecretFrom {
    match given {
        (Some(_), Some(_)) => {
            errs.push(ConfigError::new(key, format!("both {name} and {name}_env are set"), both_fix));
            SecretFrom::Failed
        }
        (Some(s), None) => SecretFrom::Found(s.clone(), name.to_string()),
        (None, Some(var)) => match env(var).filter(|v| !v.is_empty()) {
            Some(v) => SecretFrom::Found(Secret(v), var.to_string()),
            None => {
                errs.push(unset(var));
                SecretFrom::Failed
            }
        },
        (None, None) => SecretFrom::Absent,
    }
}

fn validate_push(p: &PushSection, env: &dyn Fn(&str) -> Option<String>, errs: &mut Vec<ConfigError>) -> Option<PushSettings> {
    let before = errs.len();
    let url = match p.url.as_deref().map(check_http_url) {
        Some(Ok(u)) => u,
        Some(Err(e)) => {
            errs.push(ConfigError::new("push.url", e, "write the https URL of the app's endpoint that takes deskgate's events"));
            String::new()
        }
        None => {
            errs.push(ConfigError::new(
                "push.url",
                "[push] has no url",
                "add url = \"https://app.example.com/deskgate/events\", or remove [push] and pull GET /v1/events",
            ));
            String::new()
        }
    };
    let secret = match literal_or_env(
        (&p.secret, p.secret_env.as_deref()),
        ("secret", "push.secret"),
        "keep one of them (secret_env keeps it out of the file)",
        env,
        errs,
        |var| {
            ConfigError::new(
                "push.secret_env",
                format!("the environment variable {var} is not set"),
                format!("set {var} to a random secret shared with the app (`openssl rand -hex 32`)"),
            )
        },
    ) {
        SecretFrom::Absent => {
            errs.push(ConfigError::new(
                "push.secret_env",
                "no signing secret: unsigned pushes would let anyone who finds the app's endpoint post forged tickets to it",
                "set secret_env = \"DESKGATE_PUSH_SECRET\" and give the app the same secret to check x-deskgate-signature",
            ));
            None
        }
        found => found.found().map(|(s, _)| s),
    };
    if let Some(s) = &secret
        && s.expose().len() < 16
    {
        errs.push(ConfigError::new("push.secret", format!("the secret is {} characters long, too short to resist guessing", s.expose().len()), "use at least 16 random characters (`openssl rand -hex 32`)"));
    }
    let batch = p.batch.unwrap_or(100);
    if !(1..=1000).contains(&batch) {
        errs.push(ConfigError::new("push.batch", format!("{batch} is outside 1..=1000"), "use 100 (events per POST), or less for a slow app"));
    }
    let timeout = p.timeout_secs.unwrap_or(10);
    if !(1..=300).contains(&timeout) {
        errs.push(ConfigError::new("push.timeout_secs", format!("{timeout} s is outside 1..=300"), "use 10: the app answers once the events are stored, before working on them"));
    }
    if let Some(c) = &p.connection
        && !valid_connection_id(c)
    {
        errs.push(ConfigError::new("push.connection", format!("`{c}` is not a connection id"), "name a connection (lowercase letters, digits, `-`, `_`) or remove the key to push every connection's events"));
    }
    if errs.len() > before {
        return None;
    }
    Some(PushSettings { url, secret: secret?, batch, timeout: Duration::from_secs(timeout), connection: p.connection.clone() })
}

/// Whether `id` can name a replica (it appears in lease owners, metrics and alerts).
pub fn valid_replica_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

fn validate_cluster(
    c: &ClusterSection,
    store: &str,
    env: &dyn Fn(&str) -> Option<String>,
    errs: &mut Vec<ConfigError>,
) -> ClusterSettings {
    let replicas = c.replicas.unwrap_or(1);
    if replicas == 0 || replicas > 1000 {
        errs.push(ConfigError::new(
            "cluster.replicas",
            format!("{replicas} is outside 1..=1000"),
            "write how many replicas run against this store and Redis (1 for a single gateway)",
        ));
    }
    if let Some(url) = &c.redis {
        let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or("");
        if !matches!(scheme, "redis" | "rediss" | "redis+unix" | "unix") || redis::Client::open(url.as_str()).is_err() {
            errs.push(ConfigError::new(
                "cluster.redis",
                format!("`{}` is not a Redis URL", crate::store::redact_url(url)),
                "write redis://HOST:PORT/DB (rediss:// for TLS) or redis+unix:///PATH/TO/redis.sock",
            ));
        }
    }
    if replicas > 1 && c.redis.is_none() {
        errs.push(ConfigError::new(
            "cluster.replicas",
            format!("{replicas} replicas without cluster.redis would each spend every connection's whole budget"),
            "set cluster.redis to the Redis all replicas share, or set replicas = 1",
        ));
    }
    if replicas > 1 && !(store.starts_with("postgres://") || store.starts_with("postgresql://")) {
        errs.push(ConfigError::new(
            "store",
            format!("{replicas} replicas need one shared store, and `{}` is a local SQLite file", crate::store::redact_url(store)),
            "set store = \"postgres://USER@HOST/DB\" on every replica",
        ));
    }
    let replica_id = match &c.replica_id {
        Some(id) => {
            if !valid_replica_id(id) {
                errs.push(ConfigError::new(
                    "cluster.replica_id",
                    format!("`{id}` may hold only letters, digits, `-`, `_` and `.` (1-64 characters)"),
                    "use a short name unique to this replica, like \"gw-a\"",
                ));
            }
            id.clone()
        }
        None => {
            let host: String = env("HOSTNAME")
                .unwrap_or_else(|| "deskgate".into())
                .chars()
                .filter(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'))
                .take(48)
                .collect();
            let host = if host.is_empty() { "deskgate".to_string() } else { host };
            if crate::store::sqlite_path(store).is_some() {
                // One gateway per embedded store (serve holds its lock file): the same id across
                // restarts lets a restarted gateway take its timers back at once instead of
                // waiting out the leases of the run that died.
                host
            } else {
                format!("{host}-{}", std::process::id())
            }
        }
    };
    let redis_prefix = c.redis_prefix.clone().unwrap_or_else(|| "deskgate".into());
    if redis_prefix.is_empty() || redis_prefix.contains(char::is_whitespace) {
        errs.push(ConfigError::new(
            "cluster.redis_prefix",
            "the prefix is empty or holds whitespace",
            "use a short word such as \"deskgate\" (or remove the key)",
        ));
    }
    if let Some(s) = c.lease_secs
        && !(1..=3600).contains(&s)
    {
        errs.push(ConfigError::new(
            "cluster.lease_secs",
            format!("{s} s is outside 1..=3600"),
            "use a lease longer than one write takes (budget wait included) and short enough to move a dead replica's work soon; 60 is a good start",
        ));
    }
    let lease = c.lease_secs.map(Duration::from_secs);
    ClusterSettings { redis: c.redis.clone(), replicas: replicas.clamp(1, 1000), replica_id, redis_prefix, lease }
}

/// A platform connections may name, as [`Config::validate`] checks them: the adapter's id and,
/// when known, the plans its descriptor declares. Loaded adapters know their plans; a bare id
/// (`&str`, as in [`BUILTIN_PLATFORMS`]) does not, and the plan is then only checked when the
/// connection starts.
pub trait KnownPlatform {
    /// The id connections name in `platform`.
    fn id(&self) -> &str;
    /// The plans the adapter declares and its default one, or `None` when not known here.
    fn plans(&self) -> Option<(Vec<&str>, &str)>;
}

impl KnownPlatform for &str {
    fn id(&self) -> &str {
        self
    }
    fn plans(&self) -> Option<(Vec<&str>, &str)> {
        None
    }
}

impl KnownPlatform for std::sync::Arc<crate::runtime::Adapter> {
    fn id(&self) -> &str {
        crate::runtime::Adapter::id(self)
    }
    fn plans(&self) -> Option<(Vec<&str>, &str)> {
        let d = self.descriptor();
        Some((d.plans.iter().map(|p| p.plan.as_str()).collect(), d.default_plan.as_str()))
    }
}

/// Why `plan` is not one `platform` declares, if it is not: the problem and the fix, shared by
/// the configuration's check and the API's. `None` (no plan, or an empty one) means the adapter's
/// default plan, which is always valid.
pub fn unknown_plan(plan: Option<&str>, platform: &dyn KnownPlatform) -> Option<(String, String)> {
    let plan = plan.filter(|p| !p.is_empty())?;
    let (plans, default) = platform.plans()?;
    if plans.contains(&plan) {
        return None;
    }
    Some((
        format!(
            "the {} adapter declares no plan `{plan}`: its rate budget would be unknown and the connection would never start",
            platform.id()
        ),
        format!(
            "use one of {} (the account's plan on the platform), or leave the plan out for the default, `{default}`",
            plans.join(", ")
        ),
    ))
}

fn check_plan(id: &str, plan: Option<&str>, platform: &dyn KnownPlatform, errs: &mut Vec<ConfigError>) {
    if let Some((problem, fix)) = unknown_plan(plan, platform) {
        errs.push(ConfigError::new(format!("connections.{id}.plan"), problem, fix));
    }
}

/// Whether `id` can name a connection (it appears in URLs).
pub fn valid_connection_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Check a URL is absolute http(s) with a host; `Err` says what is wrong, quoting the URL through
/// [`redact_url`] (a URL may carry a password or a token in its query, and the message goes to
/// logs and API answers).
pub fn check_http_url(text: &str) -> Result<String, String> {
    let shown = || redact_url(text);
    let u = url::Url::parse(text).map_err(|e| format!("`{}` is not a URL: {e}", shown()))?;
    if u.scheme() != "https" && u.scheme() != "http" {
        return Err(format!("`{}` uses scheme `{}`, not http or https", shown(), u.scheme()));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{}` has no host", shown()));
    }
    Ok(text.trim_end_matches('/').to_string())
}

/// `url` as errors, logs, the API and the dashboard may show it: the password replaced by `***`
/// ([`crate::store::redact_url`]) and every query value too (`?token=***`), since webhook and
/// contact URLs often carry their secret there. Keys, host and path stay, to tell URLs apart.
pub fn redact_url(url: &str) -> String {
    let url = crate::store::redact_url(url);
    let Some((head, query)) = url.split_once('?') else { return url };
    let (query, fragment) = match query.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (query, None),
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) => format!("{k}=***"),
            None if pair.is_empty() => String::new(),
            None => "***".to_string(),
        })
        .collect();
    let mut out = format!("{head}?{}", query.join("&"));
    if fragment.is_some() {
        out.push_str("#***");
    }
    out
}

fn validate_connection(
    id: &str,
    c: &ConnectionConfig,
    env: &dyn Fn(&str) -> Option<String>,
    platforms: &[&str],
    errs: &mut Vec<ConfigError>,
) -> Option<ConnectionSettings> {
    let at = |k: &str| format!("connections.{id}.{k}");
    let before = errs.len();
    if !valid_connection_id(id) {
        errs.push(ConfigError::new(
            format!("connections.{id}"),
            "the connection id may hold only lowercase letters, digits, `-` and `_` (1-64 characters)",
            "rename the table, for example [connections.acme-zendesk]",
        ));
    }
    if !platforms.contains(&c.platform.as_str()) {
        errs.push(ConfigError::new(
            at("platform"),
            format!("unknown platform `{}`", c.platform),
            format!("use one of {} (or load an adapter for it with adapters_dir)", platforms.join(", ")),
        ));
    }
    let base_url = match check_http_url(&c.base_url) {
        Ok(u) => u,
        Err(e) => {
            errs.push(ConfigError::new(
                at("base_url"),
                e,
                "write the account's API base URL, like \"https://acme.zendesk.com\"",
            ));
            String::new()
        }
    };
    if let Some(u) = &c.admin_contact_url
        && let Err(e) = check_http_url(u)
    {
        errs.push(ConfigError::new(
            at("admin_contact_url"),
            e,
            "write the https URL alerts for this connection are POSTed to",
        ));
    }
    let target = c.budget_target.unwrap_or(0.75);
    let budget_target = if !(target > 0.0 && target <= 1.0) {
        errs.push(ConfigError::new(
            at("budget_target"),
            format!("{target} is not a share: it must be more than 0 and at most 1"),
            "use a value like 0.75 (75% of each stated rate limit; 1 means all of it)",
        ));
        Share::ALL
    } else {
        // Round to permille; a positive share never rounds to nothing.
        Share::permille(((target * 1000.0).round() as u16).max(1))
    };
    let webhook_secret = literal_or_env(
        (&c.webhook_secret, c.webhook_secret_env.as_deref()),
        ("webhook_secret", &at("webhook_secret")),
        "keep one of them",
        env,
        errs,
        |var| {
            ConfigError::new(
                at("webhook_secret_env"),
                format!("the environment variable {var} is not set"),
                format!("set {var} to the webhook signing secret shown in the platform's admin UI"),
            )
        },
    )
    .found()
    .and_then(|(s, from)| {
        if s.expose().trim().is_empty() {
            let key = if from == "webhook_secret" { at("webhook_secret") } else { at("webhook_secret_env") };
            errs.push(ConfigError::new(
                key,
                "the webhook secret is empty or only whitespace",
                "give the webhook signing secret shown in the platform's admin UI, or remove the key \
                 (and set allow_unsigned_webhooks = true if the platform cannot sign)",
            ));
            return None;
        }
        Some(s)
    });
    let credentials = c.credentials.as_ref().and_then(|fields| resolve_credentials(id, fields, env, errs));
    if errs.len() > before {
        return None;
    }
    Some(ConnectionSettings {
        id: id.to_string(),
        platform: c.platform.clone(),
        base_url,
        plan: c.plan.clone(),
        display_name: c.display_name.clone().unwrap_or_else(|| id.to_string()),
        budget_target,
        admin_contact_url: c.admin_contact_url.clone(),
        webhook_secret,
        allow_unsigned_webhooks: c.allow_unsigned_webhooks,
        settings: c.settings.clone(),
        credentials,
    })
}

fn resolve_credentials(
    id: &str,
    raw: &BTreeMap<String, Secret>,
    env: &dyn Fn(&str) -> Option<String>,
    errs: &mut Vec<ConfigError>,
) -> Option<CredentialSecret> {
    let at = |k: &str| format!("connections.{id}.credentials.{k}");
    let before = errs.len();
    let mut fields = BTreeMap::new();
    let mut scheme = "api_key".to_string();
    for (k, v) in raw {
        if k == "scheme" {
            scheme = v.expose().to_string();
        } else if let Some(name) = k.strip_suffix("_env") {
            let var = v.expose();
            match env(var).filter(|s| !s.is_empty()) {
                Some(value) => {
                    fields.insert(name.to_string(), value);
                }
                None => errs.push(ConfigError::new(
                    at(k),
                    format!("the environment variable {var} is not set"),
                    format!("set {var} to the connection's `{name}`"),
                )),
            }
        } else if v.expose().is_empty() {
            errs.push(ConfigError::new(at(k), "the value is empty", format!("give the value, or use `{k}_env` to read it from the environment")));
        } else {
            fields.insert(k.clone(), v.expose().to_string());
        }
    }
    if errs.len() > before {
        return None;
    }
    match scheme.as_str() {
        "api_key" => {
            if fields.is_empty() {
                errs.push(ConfigError::new(
                    format!("connections.{id}.credentials"),
                    "no credential fields",
                    "add the platform's fields, like `email` and `token_env = \"ZENDESK_TOKEN\"`",
                ));
                return None;
            }
            Some(CredentialSecret::ApiKey { fields })
        }
        "oauth" => {
            let Some(access_token) = fields.remove("access_token") else {
                errs.push(ConfigError::new(
                    at("access_token"),
                    "an oauth credential needs an access token",
                    "add access_token_env = \"VARIABLE\" (and refresh_token_env if the grant issued one)",
                ));
                return None;
            };
            let client = match (fields.remove("client_id"), fields.remove("client_secret")) {
                (Some(client_id), Some(client_secret)) => Some(crate::store::OAuthClientSecret { client_id, client_secret }),
                (None, None) => None,
                _ => {
                    errs.push(ConfigError::new(
                        at("client_id"),
                        "an oauth client needs both client_id and client_secret",
                        "set both (client_secret through client_secret_env), or neither if the token is never refreshed",
                    ));
                    return None;
                }
            };
            Some(CredentialSecret::OAuth { access_token, refresh_token: fields.remove("refresh_token"), client })
        }
        other => {
            errs.push(ConfigError::new(
                at("scheme"),
                format!("unknown credential scheme `{other}`"),
                "use \"api_key\" (the default) or \"oauth\"",
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    fn base_env() -> impl Fn(&str) -> Option<String> {
        env(&[
            (SECRET_KEY_ENV, KEY),
            (API_TOKEN_ENV, "a-long-enough-api-token"),
            ("ZENDESK_TOKEN", "zd-secret-token"),
        ])
    }

    const GOOD: &str = r#"
listen = "127.0.0.1:9999"
[connections.acme]
platform = "zendesk"
base_url = "https://acme.zendesk.com/"
plan = "team"
budget_target = 0.6
webhook_secret = "whsec-123"
[connections.acme.credentials]
email = "bot@acme.com"
token_env = "ZENDESK_TOKEN"
"#;

    fn errors(text: &str, env: &dyn Fn(&str) -> Option<String>) -> ConfigErrors {
        Config::parse(text).unwrap().validate(env, &BUILTIN_PLATFORMS).unwrap_err()
    }

    fn with(line: &str) -> String {
        GOOD.replace("plan = \"team\"\n", &format!("plan = \"team\"\n{line}\n"))
    }

    /// A platform with a descriptor's plans, as a loaded adapter reports them.
    struct Planned(&'static str, &'static [&'static str]);
    impl KnownPlatform for Planned {
        fn id(&self) -> &str {
            self.0
        }
        fn plans(&self) -> Option<(Vec<&str>, &str)> {
            Some((self.1.to_vec(), self.1[0]))
        }
    }
    const PLANNED: [Planned; 2] = [Planned("zendesk", &["team", "enterprise"]), Planned("freshdesk", &["growth"])];

    #[test]
    fn a_plan_the_adapter_does_not_declare_is_named_with_the_valid_ones() {
        let text = GOOD.replace("plan = \"team\"", "plan = \"gold\"");
        let e = Config::parse(&text).unwrap().validate(&base_env(), &PLANNED).unwrap_err();
        let err = e.get("connections.acme.plan").unwrap_or_else(|| panic!("{e}"));
        assert!(err.problem.contains("`gold`") && err.problem.contains("zendesk"), "{err:?}");
        assert!(err.fix.contains("team, enterprise") && err.fix.contains("`team`"), "{err:?}");
        // Declared plans, an absent plan (the default) and bare platform ids all pass.
        Config::parse(GOOD).unwrap().validate(&base_env(), &PLANNED).unwrap();
        Config::parse(&GOOD.replace("plan = \"team\"\n", "")).unwrap().validate(&base_env(), &PLANNED).unwrap();
        Config::parse(&GOOD.replace("plan = \"team\"", "plan = \"enterprise\"")).unwrap().validate(&base_env(), &PLANNED).unwrap();
        Config::parse(&text).unwrap().validate(&base_env(), &BUILTIN_PLATFORMS).unwrap();
    }

    #[test]
    fn urls_in_errors_hide_passwords_and_query_values() {
        let e = errors(&with("admin_contact_url = \"ftp://ops:hunter2@alerts.example/hook?token=s3cr3t&x=1\""), &base_env());
        let err = e.get("connections.acme.admin_contact_url").unwrap_or_else(|| panic!("{e}"));
        let shown = e.to_string();
        assert!(!shown.contains("hunter2") && !shown.contains("s3cr3t"), "{shown}");
        assert!(err.problem.contains("ops:***@alerts.example/hook?token=***&x=***"), "{err:?}");
        assert_eq!(redact_url("https://a.example/p?k=v#frag"), "https://a.example/p?k=***#***");
        assert_eq!(redact_url("https://a.example/p"), "https://a.example/p");
        assert_eq!(redact_url("not a url?secret"), "not a url?***");
    }

    #[test]
    fn a_good_config_validates_and_resolves_secrets() {
        let v = Config::parse(GOOD).unwrap().validate(&base_env(), &BUILTIN_PLATFORMS).unwrap();
        assert_eq!(v.listen.to_string(), "127.0.0.1:9999");
        assert_eq!(v.store, "deskgate.sqlite");
        let c = &v.connections[0];
        assert_eq!(c.base_url, "https://acme.zendesk.com");
        assert_eq!(c.budget_target, Share::percent(60));
        match c.credentials.as_ref().unwrap() {
            CredentialSecret::ApiKey { fields } => assert_eq!(fields["token"], "zd-secret-token"),
            other => panic!("{other:?}"),
        }
        // Nothing secret in Debug.
        let dump = format!("{v:?}");
        for s in ["zd-secret-token", "whsec-123", "a-long-enough-api-token", KEY] {
            assert!(!dump.contains(s), "{s} leaked: {dump}");
        }
    }

    #[test]
    fn cluster_settings_validate_and_default() {
        let v = Config::parse(GOOD).unwrap().validate(&base_env(), &BUILTIN_PLATFORMS).unwrap();
        assert_eq!((v.cluster.redis.as_deref(), v.cluster.replicas, v.cluster.redis_prefix.as_str()), (None, 1, "deskgate"));
        assert!(!v.cluster.replica_id.contains(&std::process::id().to_string()), "stable on the embedded store: {}", v.cluster.replica_id);
        let pg = Config::parse(&format!("store = \"postgres://dg@db/deskgate\"\n{GOOD}")).unwrap().validate(&base_env(), &BUILTIN_PLATFORMS).unwrap();
        assert!(pg.cluster.replica_id.ends_with(&format!("-{}", std::process::id())), "{}", pg.cluster.replica_id);
        let text = format!(
            "store = \"postgres://dg:pw@db/deskgate\"\n{GOOD}\n[cluster]\nredis = \"redis://:pw@10.0.0.5:6379/2\"\nreplicas = 3\nreplica_id = \"gw-a\"\n"
        );
        let v = Config::parse(&text).unwrap().validate(&base_env(), &BUILTIN_PLATFORMS).unwrap();
        assert_eq!(v.cluster.replicas, 3);
        assert_eq!(v.cluster.replica_id, "gw-a");
        assert_eq!(v.cluster.redis.as_deref(), Some("redis://:pw@10.0.0.5:6379/2"));
    }

    #[test]
    fn cluster_mistakes_name_the_key_and_the_fix() {
        // Several replicas on a local SQLite file, without Redis, with a bad id.
        let text = format!("{GOOD}\n[cluster]\nreplicas = 3\nreplica_id = \"gw a\"\n");
        let e = errors(&text, &base_env());
        assert!(e.get("cluster.replicas").unwrap().fix.contains("cluster.redis"), "{e}");
        assert!(e.get("store").unwrap().fix.contains("postgres://"), "{e}");
        assert!(e.get("cluster.replica_id").is_some(), "{e}");
        let text = format!("{GOOD}\n[cluster]\nredis = \"http://:secretpw@cache:6379\"\nreplicas = 0\n");
        let e = errors(&text, &base_env());
        let r = e.get("cluster.redis").unwrap();
        assert!(r.fix.contains("redis://HOST:PORT"), "{e}");
        assert!(!r.problem.contains("secretpw"), "password leaked: {e}");
        assert!(e.get("cluster.replicas").unwrap().problem.contains("outside"), "{e}");
        let e = Config::parse(&format!("{GOOD}\n[cluster]\nredis_url = \"redis://x\"\n")).unwrap_err();
        assert!(e.0[0].key.contains("cluster.redis_url"), "{e}");
    }

    #[test]
    fn auth_timing_is_optional_validated_and_its_mistakes_name_the_key_and_the_fix() {
        let v = Config::parse(GOOD).unwrap().validate(&base_env(), &BUILTIN_PLATFORMS).unwrap();
        assert_eq!(v.auth, AuthSettings { refresh_at: 0.8, health_check: Duration::from_secs(4 * 3600) }, "defaults");
        let auth = |body: &str| format!("{GOOD}\n[auth]\n{body}\n");
        let v = Config::parse(&auth("refresh_at = 0.5\nhealth_check_secs = 900")).unwrap().validate(&base_env(), &BUILTIN_PLATFORMS).unwrap();
        assert_eq!(v.auth, AuthSettings { refresh_at: 0.5, health_check: Duration::from_secs(900) });
        for bad in ["0.0", "1.0", "1.5", "-0.2", "nan"] {
            let e = errors(&auth(&format!("refresh_at = {bad}")), &base_env());
            let x = e.get("auth.refresh_at").unwrap_or_else(|| panic!("refresh_at = {bad} accepted: {e}"));
            assert!(x.problem.contains("between 0 and 1") && x.fix.contains("0.8"), "{x}");
        }
        let e = errors(&auth("health_check_secs = 59"), &base_env());
        let x = e.get("auth.health_check_secs").expect("too short");
        assert!(x.problem.contains("59 s") && x.fix.contains("at least 60"), "{x}");
        assert!(Config::parse(&auth("refresh_fraction = 0.8")).is_err(), "unknown keys are refused");
    }

    #[test]
    fn sweep_interval_is_optional_validated_and_its_mistakes_name_the_key_and_the_fix() {
        let v = Config::parse(GOOD).unwrap().validate(&base_env(), &BUILTIN_PLATFORMS).unwrap();
        assert_eq!(v.sweep, SweepSettings { min: Duration::from_secs(300), max: Duration::from_secs(600) }, "defaults");
        let sweep = |body: &str| format!("{GOOD}\n[sweep]\n{body}\n");
        let v = Config::parse(&sweep("min_interval_secs = 2\nmax_interval_secs = 3")).unwrap().validate(&base_env(), &BUILTIN_PLATFORMS).unwrap();
        assert_eq!(v.sweep, SweepSettings { min: Duration::from_secs(2), max: Duration::from_secs(3) });
        let e = errors(&sweep("min_interval_secs = 0"), &base_env());
        assert!(e.get("sweep.min_interval_secs").expect("zero").fix.contains("at least 1"), "{e}");
        let e = errors(&sweep("min_interval_secs = 900"), &base_env());
        let x = e.get("sweep.max_interval_secs").expect("min above the default max");
        assert!(x.problem.contains("600 s") && x.fix.contains("at least min_interval_secs"), "{x}");
        assert!(Config::parse(&sweep("every = 5")).is_err(), "unknown keys are refused");
    }

    #[test]
    fn push_validates_and_its_mistakes_name_the_key_and_the_fix() {
        let v = Config::parse(GOOD).unwrap().validate(&base_env(), &BUILTIN_PLATFORMS).unwrap();
        assert!(v.push.is_none(), "push is optional");
        let push = |body: &str| format!("{GOOD}\n[push]\n{body}\n");
        let with_secret = env(&[
            (SECRET_KEY_ENV, KEY),
            (API_TOKEN_ENV, "a-long-enough-api-token"),
            ("ZENDESK_TOKEN", "zd-secret-token"),
            ("PUSH_SECRET", "push-secret-0123456789"),
        ]);
        let text = push("url = \"https://app.example.com/deskgate/events/\"\nsecret_env = \"PUSH_SECRET\"\nbatch = 50\nconnection = \"acme\"");
        let v = Config::parse(&text).unwrap().validate(&with_secret, &BUILTIN_PLATFORMS).unwrap();
        let p = v.push.as_ref().unwrap();
        assert_eq!((p.url.as_str(), p.batch, p.timeout, p.connection.as_deref()), ("https://app.example.com/deskgate/events", 50, Duration::from_secs(10), Some("acme")));
        assert_eq!(p.secret.expose(), "push-secret-0123456789");
        assert!(!format!("{v:?}").contains("push-secret-0123456789"), "the push secret leaked");
        // No secret at all: refused, an unsigned push could be forged.
        let e = errors(&push("url = \"https://app.example.com/e\""), &base_env());
        let m = e.get("push.secret_env").expect("secret error");
        assert!(m.problem.contains("forged") && m.fix.contains("x-deskgate-signature"), "{m}");
        // The variable named but not set; a bad URL; ranges; a bad connection id; both secrets.
        let e = errors(&push("url = \"ftp://app\"\nsecret_env = \"NOPE\"\nbatch = 0\ntimeout_secs = 900\nconnection = \"Acme Corp\""), &base_env());
        assert!(e.get("push.secret_env").unwrap().problem.contains("NOPE"), "{e}");
        for key in ["push.url", "push.batch", "push.timeout_secs", "push.connection"] {
            assert!(e.get(key).is_some(), "{key} not reported: {e}");
        }
        let e = errors(&push("secret = \"short\""), &base_env());
        assert!(e.get("push.url").unwrap().problem.contains("no url"), "{e}");
        assert!(e.get("push.secret").unwrap().problem.contains("too short"), "{e}");
        let e = errors(&push("url = \"https://a.example\"\nsecret = \"push-secret-0123456789\"\nsecret_env = \"PUSH_SECRET\""), &with_secret);
        assert!(e.get("push.secret").unwrap().problem.contains("both"), "{e}");
        let e = Config::parse(&push("url = \"https://a.example\"\nretries = 3")).unwrap_err();
        assert!(e.0[0].key.contains("push.retries"), "{e}");
    }

    #[test]
    fn unknown_keys_are_refused_with_the_toml_message_and_a_hint() {
        let e = Config::parse(&with("budget_targte = 0.5")).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("unknown field `budget_targte`"), "{text}");
        assert!(text.contains("remove or correct the key"), "{text}");
        assert_eq!(e.0[0].key, "connections.acme.budget_targte (line 7)", "{text}");
        let top = Config::parse("listen = \"127.0.0.1:1\"\nlisten_addr = \"x\"\n").unwrap_err();
        assert!(top.to_string().contains("unknown field `listen_addr`"), "{top}");
    }

    #[test]
    fn bad_urls_name_the_key() {
        let e = errors(&GOOD.replace("https://acme.zendesk.com/", "acme.zendesk.com"), &base_env());
        let b = e.get("connections.acme.base_url").expect("base_url error");
        assert!(b.problem.contains("not a URL"), "{b}");
        assert!(b.fix.contains("https://"), "{b}");
        let e = errors(&with("admin_contact_url = \"ftp://x\""), &base_env());
        assert!(e.get("connections.acme.admin_contact_url").is_some(), "{e}");
        let e = errors(&format!("listen = \"nowhere\"\n{}", GOOD.replace("listen = \"127.0.0.1:9999\"\n", "")), &base_env());
        assert!(e.get("listen").is_some(), "{e}");
    }

    #[test]
    fn missing_secrets_name_the_variable() {
        let e = errors(GOOD, &env(&[(SECRET_KEY_ENV, KEY), (API_TOKEN_ENV, "a-long-enough-api-token")]));
        let m = e.get("connections.acme.credentials.token_env").expect("token_env error");
        assert!(m.problem.contains("ZENDESK_TOKEN"), "{m}");
        let e = errors(GOOD, &env(&[(SECRET_KEY_ENV, KEY), ("ZENDESK_TOKEN", "t")]));
        assert!(e.get(API_TOKEN_ENV).is_some(), "{e}");
        let e = errors(&with("webhook_secret_env = \"NOPE\"").replace("webhook_secret = \"whsec-123\"\n", ""), &base_env());
        assert!(e.get("connections.acme.webhook_secret_env").is_some(), "{e}");
        let e = errors(&format!("api_token = \"short\"\n{GOOD}"), &base_env());
        assert!(e.get("api_token").unwrap().problem.contains("too short"), "{e}");
    }

    #[test]
    fn budget_targets_must_be_a_share() {
        for bad in ["0", "0.0", "1.5", "-0.2"] {
            let e = errors(&GOOD.replace("budget_target = 0.6", &format!("budget_target = {bad}")), &base_env());
            let b = e.get("connections.acme.budget_target").unwrap_or_else(|| panic!("{bad}: {e}"));
            assert!(b.problem.contains("more than 0 and at most 1"), "{b}");
        }
        let ok = Config::parse(&GOOD.replace("budget_target = 0.6", "budget_target = 1"))
            .unwrap()
            .validate(&base_env(), &BUILTIN_PLATFORMS);
        assert!(ok.is_ok());
    }

    #[test]
    fn unknown_platforms_are_refused() {
        let e = errors(&GOOD.replace("\"zendesk\"", "\"zendeks\""), &base_env());
        let p = e.get("connections.acme.platform").unwrap();
        assert!(p.problem.contains("zendeks") && p.fix.contains("zendesk"), "{p}");
    }

    #[test]
    fn credentials_without_a_secret_key_are_refused() {
        let e = errors(GOOD, &env(&[(API_TOKEN_ENV, "a-long-enough-api-token"), ("ZENDESK_TOKEN", "t")]));
        let k = e.get(SECRET_KEY_ENV).unwrap();
        assert!(k.problem.contains("credentials are configured"), "{k}");
        assert!(k.fix.contains("openssl rand -hex 32"), "{k}");
        let e = errors(GOOD, &env(&[(SECRET_KEY_ENV, "nope"), (API_TOKEN_ENV, "a-long-enough-api-token"), ("ZENDESK_TOKEN", "t")]));
        let k = e.get(SECRET_KEY_ENV).unwrap();
        assert!(k.problem.contains("not a valid key") && !k.to_string().contains("nope"), "{k}");
    }

    #[test]
    fn all_problems_are_reported_at_once() {
        let text = GOOD.replace("\"zendesk\"", "\"x\"").replace("budget_target = 0.6", "budget_target = 2.0");
        let e = errors(&text, &env(&[]));
        for key in ["connections.acme.platform", "connections.acme.budget_target", SECRET_KEY_ENV, API_TOKEN_ENV] {
            assert!(e.get(key).is_some(), "{key} missing from {e}");
        }
    }

    #[test]
    fn impossible_sandbox_limits_name_the_runtime_key() {
        let c = Config::parse(&format!("{GOOD}[runtime]\ncall_deadline_ms = 0\nmemory_cap_mb = 5000\nmax_instances = 0\n")).unwrap();
        let e = c.runtime_config().unwrap_err();
        for key in ["runtime.call_deadline_ms", "runtime.memory_cap_mb", "runtime.max_instances"] {
            let x = e.get(key).unwrap_or_else(|| panic!("{key} missing from {e}"));
            assert!(!x.fix.is_empty(), "{x}");
        }
        let ok = Config::parse(&format!("{GOOD}[runtime]\ncall_deadline_ms = 500\nmemory_cap_mb = 128\n")).unwrap();
        let r = ok.runtime_config().unwrap();
        assert_eq!((r.call_deadline, r.memory_cap), (Duration::from_millis(500), 128 << 20));
    }

    #[test]
    fn connection_ids_that_cannot_name_a_webhook_url_are_refused() {
        let e = errors(&GOOD.replace("[connections.acme]", "[connections.Acme-Support]").replace("connections.acme.credentials", "connections.Acme-Support.credentials"), &base_env());
        let x = e.get("connections.Acme-Support").expect("id error");
        assert!(x.problem.contains("lowercase") && x.fix.contains("[connections."), "{x}");
    }

    #[test]
    fn a_secret_given_twice_or_empty_is_refused() {
        let e = errors(&format!("api_token = \"a-long-enough-api-token\"\napi_token_env = \"X\"\n{GOOD}"), &base_env());
        assert!(e.get("api_token").unwrap().problem.contains("both"), "{e}");
        let e = errors(&with("webhook_secret_env = \"ACME_WH\""), &base_env());
        assert!(e.get("connections.acme.webhook_secret").unwrap().problem.contains("both"), "{e}");
        let e = errors(&GOOD.replace("email = \"bot@acme.com\"", "email = \"\""), &base_env());
        let x = e.get("connections.acme.credentials.email").expect("empty field");
        assert!(x.fix.contains("`email_env`"), "the fix names the key: {x}");
        let e = errors(&format!("store = \"  \"\n{GOOD}"), &base_env());
        assert!(e.get("store").is_some(), "{e}");
        // A webhook secret of whitespace would verify nothing: refused, whether written or read.
        let e = errors(&GOOD.replace("webhook_secret = \"whsec-123\"", "webhook_secret = \"  \""), &base_env());
        let x = e.get("connections.acme.webhook_secret").expect("blank webhook secret");
        assert!(x.fix.contains("signing secret") && x.fix.contains("allow_unsigned_webhooks"), "{x}");
        let blank = env(&[(SECRET_KEY_ENV, KEY), (API_TOKEN_ENV, "a-long-enough-api-token"), ("ZENDESK_TOKEN", "t"), ("ACME_WH", " \t")]);
        let e = errors(&GOOD.replace("webhook_secret = \"whsec-123\"", "webhook_secret_env = \"ACME_WH\""), &blank);
        assert!(e.get("connections.acme.webhook_secret_env").is_some(), "{e}");
    }

    #[test]
    fn credential_schemes_are_checked() {
        let e = errors(&GOOD.replace("email = \"bot@acme.com\"", "scheme = \"kerberos\""), &base_env());
        let x = e.get("connections.acme.credentials.scheme").expect("scheme error");
        assert!(x.problem.contains("kerberos") && x.fix.contains("oauth"), "{x}");
        let e = errors(&GOOD.replace("email = \"bot@acme.com\"", "scheme = \"oauth\""), &base_env());
        assert!(e.get("connections.acme.credentials.access_token").is_some(), "{e}");
        let oauth = GOOD.replace("email = \"bot@acme.com\"\ntoken_env = \"ZENDESK_TOKEN\"", "scheme = \"oauth\"\naccess_token_env = \"ZENDESK_TOKEN\"");
        let v = Config::parse(&oauth).unwrap().validate(&base_env(), &BUILTIN_PLATFORMS).unwrap();
        assert!(matches!(v.connections[0].credentials, Some(CredentialSecret::OAuth { .. })));
    }
}
