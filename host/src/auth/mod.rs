//! Credentials as monitored state: OAuth refresh, health checks, the 401/403 policy, suspension.
//!
//! # Why refresh at 80% of the lifetime, and not on the first 401?
//!
//! A 401 arrives on a real request: a reply the app is waiting for, a write the outbox already
//! marked sent. Refreshing then puts the token endpoint's latency and failures on that request's
//! path, and when the refresh token turns out to be dead at 2 am, the first person to learn of it
//! is a customer whose ticket stayed open. Refreshing at 80% of the lifetime
//! ([`AuthConfig::refresh_at`]) leaves a fifth of the lifetime to retry transient failures
//! (5xx, network) with backoff, and a definitive refusal (`invalid_grant`: revoked, expired or
//! already-spent refresh token) raises a `refresh-failed` alert while the old access token still
//! works. The 401 path still exists (a token revoked early), but it refreshes at most once and
//! replays; a second 401 suspends.
//!
//! # Why write a marker before refreshing, and the new pair before using it?
//!
//! Rotating refresh tokens (Zendesk) are single-use: the platform's answer kills the old pair.
//! If the process dies between that answer and the write of the new pair, the stored pair is
//! dead, and nothing in it says so. So the manager records "refresh in flight"
//! ([`Store::begin_refresh`](crate::store::Store::begin_refresh)) *before* the request leaves, and
//! writes the new pair with a compare-and-swap ([`Store::put_credential`](crate::store::Store::put_credential))
//! *before* any request uses it. At start-up ([`CredentialManager::start`]) a marker found in the
//! store means "the answer may have been lost": the stored token is checked at once with who-am-i,
//! and if dead, the connection is suspended with a `credential-invalid` alert. Never silently.
//!
//! Refresh is single-flight per connection: concurrent callers wait on one lock, and a caller
//! that finds the stored version moved on uses the new token instead of refreshing again (which,
//! with rotating tokens, would spend the fresh refresh token for nothing, or race and lose it).
//!
//! Across replicas the store's refresh marker is the lock: [`Store::begin_refresh`](crate::store::Store::begin_refresh)
//! takes it in one row-locking transaction that also re-reads the stored version, so of several
//! replicas that saw the same pair exactly one sends the refresh. The others find the marker of
//! another owner ([`AuthConfig::owner`] must be unique per replica: `serve` uses the replica id)
//! and wait for it ([`AuthConfig::in_flight_poll`]), then use the pair it stored; if the marker
//! is cleared without a new pair (that refresh failed), they retry on the usual schedule. No replica is left
//! holding a spent refresh token: every replica reads the pair from the store before refreshing.
//!
//! Health checks of credentials that do not expire run every [`AuthConfig::health_interval`]
//! once per cluster: only the replica holding the connection's timer lease runs the timer
//! ([`crate::gateway`]), and the time of the last check is the store mark [`HEALTH_MARK`], read
//! before checking, so a replica that takes the connection over does not check again early.
//!
//! # Why is a 403 never a reason to re-authenticate?
//!
//! A 403 says the credential is fine and lacks a permission. Re-authenticating cannot grant it,
//! and suspending would stop the actions that do not need it. So a 403 is recorded on the
//! connection with the platform's remediation text, alerted once per missing permission
//! (`scope-missing`, "re-scope"), and the action that needed it fails with that reason while the
//! rest carry on.
//!
//! # Suspension
//!
//! [`CredentialManager::suspend`] moves the connection to `suspended{reason, kind}` and puts a
//! `connection.suspended` event in the inbox for the app. The store then hands the outbox no more
//! of its entries (they stay pending, durable), and webhooks keep being accepted.
//! [`CredentialManager::update_credentials`] validates new credentials (who-am-i, then the scope
//! probe), resumes the connection, hands the outbox worker the new target (so queued work drains)
//! and puts `connection.resumed` in the inbox.

pub mod refresh;

pub use refresh::{OAuthClient, RefreshError, TokenPair};

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::alerts;
use crate::bindings::{AuthScheme, Connection, Failure, ForbiddenDetail, Operation, Outcome};
use crate::clock::{Millis, SharedClock};
use crate::driver::{self, Authorization, DriveError, Driver, NoHooks, OpResult, Target};
use crate::outbox::{AuthFailure, AuthHook, AuthVerdict, OutboxWorker};
use crate::probe::{self, ProbeError, ProbeReport};
use crate::runtime::Adapter;
use crate::store::{
    ConnectionState, Credential, CredentialSecret, Expect, NewEvent, RefreshClaim, SharedStore, StoreError,
};

/// Suspension kind for credentials that must be re-entered.
pub const SUSPEND_REAUTH: &str = "reauth";

/// Store mark (per connection) of the last who-am-i health check, in clock milliseconds. Shared by
/// every replica: whoever runs the connection's timers reads it before checking, so the check
/// happens once per [`AuthConfig::health_interval`] across the cluster, not once per replica.
pub const HEALTH_MARK: &str = "health";

/// Credential policy settings.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Refresh an OAuth token once this fraction of its lifetime has passed (0.8).
    pub refresh_at: f64,
    /// How often a non-expiring credential is checked with who-am-i (4 h).
    pub health_interval: Duration,
    /// First retry delay of a transient refresh failure; doubles per attempt.
    pub retry_base: Duration,
    /// No retry delay exceeds this.
    pub retry_cap: Duration,
    /// A refresh marker of another owner older than this is taken over.
    pub stale_marker: Duration,
    /// This replica's name, written in refresh markers. Unique per replica: two replicas with
    /// one name would both pass the marker and refresh the same pair.
    pub owner: String,
    /// How often a replica that found another replica's refresh in flight re-reads the store.
    pub in_flight_poll: Duration,
    /// How long it waits for that refresh before it schedules a retry of its own. Zero (the
    /// default, for a single gateway) does not wait: the refresh fails with
    /// [`StoreError::RefreshInFlight`] as it always did; `serve` sets 30 s when `[cluster]`
    /// declares several replicas.
    pub in_flight_wait: Duration,
    /// How long a refresh waits for this connection's requests in flight to finish before it
    /// asks for the new pair (see [`crate::driver::Authorization`]): with rotating tokens, a
    /// request still holding the old token when the platform answers is refused with a 401.
    /// New requests wait behind the refresh meanwhile. Past the bound the refresh goes ahead,
    /// and a request that then meets a 401 is resent with the new token.
    pub refresh_drain: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            refresh_at: 0.8,
            health_interval: Duration::from_secs(4 * 3600),
            retry_base: Duration::from_secs(5),
            retry_cap: Duration::from_secs(300),
            stale_marker: Duration::from_secs(120),
            owner: "deskgate".into(),
            in_flight_poll: Duration::from_millis(50),
            in_flight_wait: Duration::ZERO,
            refresh_drain: Duration::from_secs(10),
        }
    }
}

/// Why the credential policy could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The connection has no stored credentials.
    #[error("connection {0} has no credentials; add them")]
    NoCredential(String),
    /// The credential does not fit the adapter's auth schemes.
    #[error(transparent)]
    Unusable(#[from] driver::AuthError),
    /// An operation could not be driven.
    #[error(transparent)]
    Drive(#[from] DriveError),
    /// The probe could not run.
    #[error(transparent)]
    Probe(#[from] ProbeError),
    /// New credentials were refused by the platform: nothing changed.
    #[error("the new credentials were not accepted: {0}")]
    Rejected(String),
}

/// Everything a manager needs, given at construction.
pub struct ManagerParts {
    /// The store.
    pub store: SharedStore,
    /// The clock.
    pub clock: SharedClock,
    /// The HTTP driver (who-am-i, probes).
    pub driver: Driver,
    /// The connection's adapter.
    pub adapter: Arc<Adapter>,
    /// The platform's base URL.
    pub base_url: String,
    /// What the adapter is told about the connection (its `id` is the store's connection id).
    pub connection: Connection,
    /// The OAuth client the tokens were issued to, for refreshes.
    pub oauth_client: Option<OAuthClient>,
    /// Settings.
    pub config: AuthConfig,
}

/// What [`CredentialManager::start`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartReport {
    /// No refresh was in flight.
    Clean,
    /// A refresh marker was found and the stored token still works; the marker was cleared.
    RecoveredMarker,
    /// A refresh marker was found and the stored token is dead: alerted and suspended.
    SuspendedDeadToken,
}

/// What a refresh did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// A new pair was obtained and stored (its version).
    Refreshed(i64),
    /// Someone else refreshed meanwhile; their token is in use.
    AlreadyRefreshed(i64),
    /// A transient failure; retried at this instant.
    RetryAt(Millis),
    /// Refused for good (or time ran out): alerted and suspended.
    Suspended,
    /// Not refreshable (no refresh token, no OAuth client, or not OAuth).
    NotRefreshable,
}

/// What [`CredentialManager::tick`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TickOutcome {
    /// Nothing was due.
    Idle,
    /// The connection is not live or pending; nothing checked.
    Inactive,
    /// A refresh ran.
    Refresh(RefreshOutcome),
    /// A health check ran; whether the credential worked.
    HealthCheck(bool),
}

struct State {
    cred: Option<Credential>,
    last_health: Millis,
    retry_at: Option<Millis>,
    retry_attempt: u32,
    /// The version produced by a refresh that a 401 triggered: a 401 on it suspends.
    refreshed_on_401: Option<i64>,
    reported_forbidden: BTreeSet<String>,
    /// Whether this manager already refreshed an OAuth pair whose expiry it did not know, to
    /// learn the lifetime (see [`CredentialManager::tick`]); once per process at most.
    lifetime_learned: bool,
}

struct Inner {
    store: SharedStore,
    clock: SharedClock,
    driver: Driver,
    adapter: Arc<Adapter>,
    base_url: String,
    connection: Mutex<Connection>,
    oauth_client: Option<OAuthClient>,
    config: AuthConfig,
    http: reqwest::Client,
    /// The header every target of this connection shares: a refresh replaces it for all of
    /// them at once, and fences their requests while it runs.
    authorization: Authorization,
    state: Mutex<State>,
    flight: tokio::sync::Mutex<()>,
    /// Serializes suspend/resume, so concurrent 401s suspend (and alert) once.
    transition: tokio::sync::Mutex<()>,
    worker: Mutex<Option<OutboxWorker>>,
    /// Called after each suspension this manager made (the operator's metrics count them).
    on_suspend: Mutex<Option<Arc<dyn Fn() + Send + Sync>>>,
}

/// One connection's credentials: the current token, its refresh, health checks, the 401/403
/// policy and suspension. Cheap to clone (a handle).
#[derive(Clone)]
pub struct CredentialManager {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for CredentialManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialManager").field("connection", &self.connection_id()).finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl CredentialManager {
    /// A manager for one connection. Call [`CredentialManager::start`] before use.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(parts: ManagerParts) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
        Ok(Self {
            inner: Arc::new(Inner {
                store: parts.store,
                clock: parts.clock,
                driver: parts.driver,
                adapter: parts.adapter,
                base_url: parts.base_url,
                connection: Mutex::new(parts.connection),
                oauth_client: parts.oauth_client,
                config: parts.config,
                http,
                authorization: Authorization::fixed(""),
                state: Mutex::new(State {
                    cred: None,
                    last_health: 0,
                    retry_at: None,
                    retry_attempt: 0,
                    refreshed_on_401: None,
                    reported_forbidden: BTreeSet::new(),
                    lifetime_learned: false,
                }),
                flight: tokio::sync::Mutex::new(()),
                transition: tokio::sync::Mutex::new(()),
                worker: Mutex::new(None),
                on_suspend: Mutex::new(None),
            }),
        })
    }

    fn now(&self) -> Millis {
        self.inner.clock.now_ms()
    }

    /// Call `f` after every suspension this manager makes (the supervisor counts them).
    pub fn on_suspend(&self, f: Arc<dyn Fn() + Send + Sync>) {
        *lock(&self.inner.on_suspend) = Some(f);
    }

    /// The connection's id.
    pub fn connection_id(&self) -> String {
        lock(&self.inner.connection).id.clone()
    }

    /// Hand refreshed targets to this outbox worker from now on.
    pub fn attach_worker(&self, worker: OutboxWorker) {
        if let Some(t) = self.target() {
            worker.set_target(t);
        }
        *lock(&self.inner.worker) = Some(worker);
    }

    /// The credential as last loaded or written.
    pub fn credential(&self) -> Option<Credential> {
        lock(&self.inner.state).cred.clone()
    }

    /// The host-side credential for the driver.
    fn driver_credential(&self, secret: &CredentialSecret) -> driver::Credential {
        match secret {
            CredentialSecret::OAuth { access_token, .. } => driver::Credential::Bearer(access_token.clone()),
            CredentialSecret::ApiKey { fields } => {
                let basic = self.inner.adapter.descriptor().auth.iter().any(|s| matches!(s, AuthScheme::Basic(_)));
                if basic {
                    driver::Credential::Basic(fields.clone())
                } else {
                    let tok = ["access_token", "token", "api_key"]
                        .iter()
                        .find_map(|k| fields.get(*k))
                        .or_else(|| fields.values().next())
                        .cloned()
                        .unwrap_or_default();
                    driver::Credential::Bearer(tok)
                }
            }
        }
    }

    fn header_for(&self, secret: &CredentialSecret) -> Result<String, driver::AuthError> {
        driver::authorization(&self.inner.adapter.descriptor().auth, &self.driver_credential(secret))
    }

    /// A target with a header of its own for `secret`: for checking credentials that are not
    /// (or may no longer be) the connection's current ones. Refreshes do not reach it.
    fn target_for(&self, secret: &CredentialSecret) -> Result<Target, driver::AuthError> {
        let authorization = Authorization::fixed(self.header_for(secret)?);
        Ok(Target { base_url: self.inner.base_url.clone(), authorization, connection: lock(&self.inner.connection).clone() })
    }

    /// Where and as whom requests go now (`None` before credentials are loaded). The target
    /// shares this manager's header: a later refresh replaces it in every clone, and its
    /// requests are fenced against the refresh (see [`Authorization`]).
    pub fn target(&self) -> Option<Target> {
        let secret = lock(&self.inner.state).cred.as_ref()?.secret.clone();
        self.header_for(&secret).ok()?;
        Some(Target {
            base_url: self.inner.base_url.clone(),
            authorization: self.inner.authorization.clone(),
            connection: lock(&self.inner.connection).clone(),
        })
    }

    fn set_cred(&self, cred: Credential) {
        if let Ok(h) = self.header_for(&cred.secret) {
            self.inner.authorization.set(&h);
        }
        lock(&self.inner.state).cred = Some(cred);
        let target = self.target();
        if let (Some(t), Some(w)) = (target, lock(&self.inner.worker).as_ref()) {
            w.set_target(t);
        }
    }

    async fn reload(&self) -> Result<Credential, CredentialError> {
        let id = self.connection_id();
        let cred = self.inner.store.get_credential(&id).await?.ok_or(CredentialError::NoCredential(id))?;
        self.set_cred(cred.clone());
        Ok(cred)
    }

    /// When the current OAuth token is due for refresh: issued + `refresh_at` × lifetime. The
    /// issue time is when the credential was written (`updated_at`). `None` for credentials
    /// that do not expire.
    pub fn refresh_due_at(&self) -> Option<Millis> {
        let st = lock(&self.inner.state);
        let c = st.cred.as_ref()?;
        let exp = c.expires_at?;
        let life = (exp - c.updated_at).max(0) as f64;
        Some(c.updated_at + (life * self.inner.config.refresh_at) as Millis)
    }

    /// Load the credentials and recover from a crash: a refresh marker found here means a
    /// refresh may have been answered and its new pair lost. The stored token is checked with
    /// who-am-i at once; dead → `credential-invalid` alert and suspension.
    ///
    /// # Errors
    /// [`CredentialError`]; a who-am-i that could not be driven leaves the marker in place.
    pub async fn start(&self) -> Result<StartReport, CredentialError> {
        let cred = self.reload().await?;
        // The last check of any replica (or of a previous run); none yet: an interval from now.
        let last = self.inner.store.get_mark(&cred.connection_id, HEALTH_MARK).await?;
        lock(&self.inner.state).last_health = last.unwrap_or_else(|| self.now());
        let Some(marker) = cred.refresh_in_flight.clone() else {
            return Ok(StartReport::Clean);
        };
        tracing::warn!(connection = %cred.connection_id, owner = %marker.owner, "a refresh was in flight at shutdown; checking the stored token");
        let target = self.target_for(&cred.secret)?;
        match self.inner.driver.execute(&self.inner.adapter, &target, &Operation::WhoAmI, None, &mut NoHooks).await? {
            Ok(_) => {
                self.inner.store.end_refresh(&cred.connection_id, &marker.owner).await?;
                self.reload().await?;
                Ok(StartReport::RecoveredMarker)
            }
            Err(Failure::Unauthenticated(d)) => {
                let text = format!(
                    "Connection {}: a token refresh was interrupted (the platform may have rotated the token pair before deskgate could store it) and the stored token is no longer accepted ({}). Re-authenticate the connection; its work is kept and resumes once new credentials are set.",
                    cred.connection_id, d.code
                );
                self.fail_reauth(alerts::CREDENTIAL_INVALID, text, json!({ "code": d.code, "message": d.message, "interrupted_refresh": true })).await?;
                Ok(StartReport::SuspendedDeadToken)
            }
            Err(other) => {
                tracing::warn!("start-up who-am-i did not settle the interrupted refresh: {}", other.explain());
                Ok(StartReport::Clean)
            }
        }
    }

    /// Refresh now (single-flight). `seen_version` is the version the caller used; if the store
    /// has moved on, the newer token is used and nothing is sent.
    ///
    /// # Errors
    /// A store error.
    pub async fn refresh(&self, seen_version: Option<i64>) -> Result<RefreshOutcome, CredentialError> {
        let _flight = self.inner.flight.lock().await;
        let cred = self.reload().await?;
        if let Some(v) = seen_version {
            if cred.version != v {
                return Ok(RefreshOutcome::AlreadyRefreshed(cred.version));
            }
        }
        let CredentialSecret::OAuth { refresh_token: Some(rt), client: stored_client, .. } = &cred.secret else {
            return Ok(RefreshOutcome::NotRefreshable);
        };
        // The client given at construction wins; otherwise the one stored with the pair.
        let stored_client = stored_client
            .as_ref()
            .map(|c| OAuthClient { client_id: c.client_id.clone(), client_secret: c.client_secret.clone() });
        let Some(client) = self.inner.oauth_client.clone().or(stored_client) else {
            return Ok(RefreshOutcome::NotRefreshable);
        };
        let client = &client;
        let Some(token_path) = self.inner.adapter.descriptor().auth.iter().find_map(|s| match s {
            AuthScheme::Oauth2(o) => Some(o.token_path.clone()),
            _ => None,
        }) else {
            return Ok(RefreshOutcome::NotRefreshable);
        };
        let id = cred.connection_id.clone();
        let owner = self.inner.config.owner.clone();
        let now = self.now();
        // The marker goes in before the request leaves.
        let claim = RefreshClaim {
            owner: owner.clone(),
            expected_version: cred.version,
            now,
            stale_before: now - crate::store::ms(self.inner.config.stale_marker),
        };
        let polls = (self.inner.config.in_flight_wait.as_millis() / self.inner.config.in_flight_poll.as_millis().max(1)).max(1);
        let mut waited = 0;
        let marked = loop {
            match self.inner.store.begin_refresh(&id, &claim).await {
                Ok(c) => break c,
                Err(StoreError::VersionConflict { .. }) => {
                    let c = self.reload().await?;
                    return Ok(RefreshOutcome::AlreadyRefreshed(c.version));
                }
                Err(e @ StoreError::RefreshInFlight { .. }) if self.inner.config.in_flight_wait.is_zero() => {
                    return Err(e.into());
                }
                Err(StoreError::RefreshInFlight { owner: other, .. }) => {
                    // Another replica holds the refresh lock for this very pair: its answer is
                    // the only one that counts (with rotation, ours would spend its token).
                    if waited >= polls {
                        let at = self.now() + crate::store::ms(self.inner.config.retry_base);
                        tracing::warn!(connection = %id, %other, "another replica's refresh did not finish in time; retrying at {at}");
                        lock(&self.inner.state).retry_at = Some(at);
                        return Ok(RefreshOutcome::RetryAt(at));
                    }
                    waited += 1;
                    tokio::time::sleep(self.inner.config.in_flight_poll).await;
                    let c = self.reload().await?;
                    if c.version != cred.version {
                        tracing::info!(connection = %id, %other, version = c.version, "another replica refreshed: using its pair");
                        return Ok(RefreshOutcome::AlreadyRefreshed(c.version));
                    }
                    if c.refresh_in_flight.is_none() {
                        // Its refresh ended without a new pair (it failed, and said so): retrying
                        // the same pair at once would only repeat that; retry on the schedule.
                        let at = self.now() + crate::store::ms(self.inner.config.retry_base);
                        lock(&self.inner.state).retry_at = Some(at);
                        return Ok(RefreshOutcome::RetryAt(at));
                    }
                }
                Err(e) => return Err(e.into()),
            }
        };
        // No request of this connection is in flight while the platform rotates the pair, and
        // none leaves until the new header is in place: the old token dies with the answer.
        let fence = self.inner.authorization.exclusive(self.inner.config.refresh_drain).await;
        if fence.is_none() {
            tracing::warn!(connection = %id, "requests still in flight after {:?}; refreshing without waiting for them", self.inner.config.refresh_drain);
        }
        let result = refresh::refresh(&self.inner.http, &self.inner.base_url, &token_path, client, rt).await;
        match result {
            Ok(pair) => {
                let now = self.now();
                let secret = CredentialSecret::OAuth {
                    access_token: pair.access_token,
                    refresh_token: pair.refresh_token.or(Some(rt.clone()).filter(|_| !self.rotates())),
                    client: match &cred.secret {
                        CredentialSecret::OAuth { client, .. } => client.clone(),
                        CredentialSecret::ApiKey { .. } => None,
                    },
                };
                let lifetime = pair.expires_in.or_else(|| self.default_lifetime());
                let expires_at = lifetime.map(|s| now + (s as Millis) * 1000);
                // Durable before anything uses it.
                let stored = self.inner.store.put_credential(&id, &secret, expires_at, Expect::Version(marked.version), now).await?;
                let v = stored.version;
                {
                    let mut st = lock(&self.inner.state);
                    st.retry_at = None;
                    st.retry_attempt = 0;
                }
                self.set_cred(stored);
                drop(fence);
                tracing::info!(connection = %id, version = v, "OAuth token refreshed");
                Ok(RefreshOutcome::Refreshed(v))
            }
            Err(e @ RefreshError::Definitive { .. }) => {
                drop(fence);
                self.inner.store.end_refresh(&id, &owner).await?;
                self.reload().await?;
                let text = format!(
                    "Connection {id}: the OAuth token could not be refreshed: {e}. The connection is suspended; its work is kept and resumes once it is re-authenticated."
                );
                self.fail_reauth(alerts::REFRESH_FAILED, text, json!({ "error": e.to_string() })).await?;
                Ok(RefreshOutcome::Suspended)
            }
            Err(e @ RefreshError::Transient(_)) => {
                drop(fence);
                self.inner.store.end_refresh(&id, &owner).await?;
                let cred = self.reload().await?;
                let now = self.now();
                let attempt = {
                    let mut st = lock(&self.inner.state);
                    st.retry_attempt += 1;
                    st.retry_attempt
                };
                let delay = self.inner.config.retry_base.saturating_mul(1 << (attempt - 1).min(16)).min(self.inner.config.retry_cap);
                let at = now + crate::store::ms(delay);
                if cred.expires_at.is_some_and(|x| at >= x) {
                    let text = format!(
                        "Connection {id}: the OAuth token could not be refreshed before it expired ({attempt} attempts; last: {e}). The connection is suspended; re-authenticate it if this persists."
                    );
                    self.fail_reauth(alerts::REFRESH_FAILED, text, json!({ "error": e.to_string(), "attempts": attempt })).await?;
                    return Ok(RefreshOutcome::Suspended);
                }
                lock(&self.inner.state).retry_at = Some(at);
                tracing::warn!(connection = %id, attempt, "{e}; retrying at {at}");
                Ok(RefreshOutcome::RetryAt(at))
            }
        }
    }

    fn rotates(&self) -> bool {
        self.inner.adapter.descriptor().auth.iter().any(|s| matches!(s, AuthScheme::Oauth2(o) if o.rotates_refresh_tokens))
    }

    fn default_lifetime(&self) -> Option<u64> {
        self.inner.adapter.descriptor().auth.iter().find_map(|s| match s {
            AuthScheme::Oauth2(o) => o.default_lifetime_secs,
            _ => None,
        })
    }

    async fn active(&self) -> Result<bool, CredentialError> {
        let conn = self.inner.store.get_connection(&self.connection_id()).await?;
        Ok(matches!(conn.map(|c| c.state), Some(ConnectionState::Live | ConnectionState::PendingProbe)))
    }

    /// Do what is due: refresh an OAuth token past `refresh_at` of its lifetime (or a due retry),
    /// or health-check a non-expiring credential every [`AuthConfig::health_interval`].
    ///
    /// # Errors
    /// [`CredentialError`].
    pub async fn tick(&self) -> Result<TickOutcome, CredentialError> {
        if !self.active().await? {
            return Ok(TickOutcome::Inactive);
        }
        let now = self.now();
        let (expiring, retry_at, last_health, version) = {
            let st = lock(&self.inner.state);
            let c = st.cred.as_ref();
            (c.and_then(|c| c.expires_at).is_some(), st.retry_at, st.last_health, c.map(|c| c.version))
        };
        if expiring {
            let due = retry_at.or(self.refresh_due_at()).unwrap_or(Millis::MAX);
            if now >= due {
                return Ok(TickOutcome::Refresh(self.refresh(version).await?));
            }
            return Ok(TickOutcome::Idle);
        }
        if self.lifetime_unknown() {
            // An OAuth pair stored without its expiry (deskgate.toml gives the tokens, not when
            // they were issued): nothing could schedule its refresh, and the first sign of its
            // end would be a 401. Refresh once now; the platform's answer carries `expires_in`,
            // and every later refresh comes at `refresh_at` of the lifetime it states. A token
            // that still has no expiry afterwards is health-checked like a key.
            lock(&self.inner.state).lifetime_learned = true;
            tracing::info!(connection = %self.connection_id(), "the OAuth token's expiry is unknown: refreshing once to learn its lifetime");
            return Ok(TickOutcome::Refresh(self.refresh(version).await?));
        }
        let interval = crate::store::ms(self.inner.config.health_interval);
        if now >= last_health + interval {
            // Another replica (an earlier holder of the connection's timers) may have checked
            // since this one last looked: its mark counts as this replica's own check.
            let shared = self.inner.store.get_mark(&self.connection_id(), HEALTH_MARK).await?;
            if let Some(at) = shared.filter(|at| *at > last_health) {
                lock(&self.inner.state).last_health = at;
                if now < at + interval {
                    return Ok(TickOutcome::Idle);
                }
            }
            return Ok(TickOutcome::HealthCheck(self.health_check().await?));
        }
        Ok(TickOutcome::Idle)
    }

    /// Record a who-am-i the platform answered at `at`: here, and in the store's
    /// [`HEALTH_MARK`] for the other replicas. A mark that cannot be written is logged: the
    /// worst outcome is one extra check by another replica.
    async fn record_health(&self, at: Millis) {
        lock(&self.inner.state).last_health = at;
        if let Err(e) = self.inner.store.put_mark(&self.connection_id(), HEALTH_MARK, at, at).await {
            tracing::warn!(connection = %self.connection_id(), "recording the health check for the other replicas failed: {e}");
        }
    }

    /// Whether the credential is a refreshable OAuth pair whose expiry is unknown and this
    /// manager has not refreshed it yet to learn it.
    fn lifetime_unknown(&self) -> bool {
        let st = lock(&self.inner.state);
        let Some(c) = st.cred.as_ref() else { return false };
        let CredentialSecret::OAuth { refresh_token: Some(_), client, .. } = &c.secret else { return false };
        !st.lifetime_learned && c.expires_at.is_none() && (client.is_some() || self.inner.oauth_client.is_some())
    }

    /// When [`CredentialManager::tick`] next has something to do.
    pub fn next_due_at(&self) -> Option<Millis> {
        if self.lifetime_unknown() {
            return Some(self.now());
        }
        let (expiring, retry_at, last_health) = {
            let st = lock(&self.inner.state);
            let c = st.cred.as_ref()?;
            (c.expires_at.is_some(), st.retry_at, st.last_health)
        };
        if expiring {
            retry_at.or_else(|| self.refresh_due_at())
        } else {
            Some(last_health + crate::store::ms(self.inner.config.health_interval))
        }
    }

    /// Check the credential with who-am-i now. A 401 alerts `credential-invalid` and suspends.
    /// Returns whether it worked.
    ///
    /// # Errors
    /// [`CredentialError`] (an undriveable check is an error, not a verdict).
    pub async fn health_check(&self) -> Result<bool, CredentialError> {
        let target = self.target().ok_or_else(|| CredentialError::NoCredential(self.connection_id()))?;
        let r = self.inner.driver.execute(&self.inner.adapter, &target, &Operation::WhoAmI, None, &mut NoHooks).await?;
        self.record_health(self.now()).await;
        match r {
            Err(Failure::Unauthenticated(d)) => {
                let text = format!(
                    "Connection {}: the credential is no longer accepted by the platform ({}: {}). It was probably rotated or revoked. Re-authenticate the connection; its work is kept and resumes once new credentials are set.",
                    self.connection_id(), d.code, d.message
                );
                self.fail_reauth(alerts::CREDENTIAL_INVALID, text, json!({ "code": d.code, "message": d.message, "check": "health" })).await?;
                Ok(false)
            }
            Err(other) => {
                tracing::warn!(connection = %self.connection_id(), "health check inconclusive: {}", other.explain());
                Ok(true)
            }
            Ok(_) => Ok(true),
        }
    }

    /// Run an operation under the 401/403 policy: a 401 refreshes an OAuth token at most once
    /// and replays; a second 401 (or a 401 on a key) suspends with `credential-invalid`. A 403
    /// is recorded and alerted (`scope-missing`) and returned as it is, never re-authenticated.
    ///
    /// # Errors
    /// [`CredentialError`].
    pub async fn execute(&self, op: &Operation, idempotency_key: Option<&str>) -> Result<OpResult, CredentialError> {
        let mut refreshed = false;
        loop {
            let (secret, version) = {
                let st = lock(&self.inner.state);
                let c = st.cred.as_ref().ok_or_else(|| CredentialError::NoCredential(self.connection_id()))?;
                (c.secret.clone(), c.version)
            };
            // The shared header (fenced against a refresh); `target_for` names a bad secret.
            let target = match self.target() {
                Some(t) => t,
                None => self.target_for(&secret)?,
            };
            let r = self.inner.driver.execute(&self.inner.adapter, &target, op, idempotency_key, &mut NoHooks).await?;
            match &r {
                Err(Failure::Unauthenticated(d)) => {
                    if !refreshed {
                        refreshed = true;
                        match self.refresh(Some(version)).await? {
                            RefreshOutcome::Refreshed(_) | RefreshOutcome::AlreadyRefreshed(_) => continue,
                            RefreshOutcome::Suspended => return Ok(r),
                            RefreshOutcome::RetryAt(_) | RefreshOutcome::NotRefreshable => {}
                        }
                    }
                    let text = format!(
                        "Connection {}: the platform refused the credential ({}: {}){}. Re-authenticate the connection; its work is kept and resumes once new credentials are set.",
                        self.connection_id(), d.code, d.message,
                        if refreshed { " even after a token refresh" } else { "" }
                    );
                    self.fail_reauth(alerts::CREDENTIAL_INVALID, text, json!({ "code": d.code, "message": d.message })).await?;
                    return Ok(r);
                }
                Err(Failure::Forbidden(d)) => {
                    self.record_forbidden(d, op_name(op)).await?;
                    return Ok(r);
                }
                _ => return Ok(r),
            }
        }
    }

    /// The 403 policy: record the missing permission on the connection (with the platform's
    /// remediation) and alert `scope-missing` once per permission. Never re-authenticates, never
    /// suspends. Returns whether this permission was newly reported.
    ///
    /// # Errors
    /// A store error.
    pub async fn record_forbidden(&self, d: &ForbiddenDetail, during: &str) -> Result<bool, CredentialError> {
        if !lock(&self.inner.state).reported_forbidden.insert(d.missing.clone()) {
            return Ok(false);
        }
        let id = self.connection_id();
        let now = self.now();
        let conn = self.inner.store.get_connection(&id).await?;
        let mut report = conn.and_then(|c| c.probe_report).unwrap_or_else(|| json!({}));
        if !report.is_object() {
            report = json!({ "previous": report });
        }
        let entry = json!({ "missing": d.missing, "kind": format!("{:?}", d.kind).to_lowercase(), "remediation": d.remediation, "message": d.message, "during": during, "seen_at": now });
        match report.get_mut("runtime_forbidden").and_then(Value::as_array_mut) {
            Some(list) => list.push(entry.clone()),
            None => report["runtime_forbidden"] = json!([entry.clone()]),
        }
        self.inner.store.set_probe_report(&id, &report, now).await?;
        let text = format!(
            "Connection {id}: re-scope needed. The platform refused `{during}` because the credential lacks {:?} `{}`: {}. Fix: {}. Actions that do not need it carry on.",
            d.kind, d.missing, d.message, d.remediation
        );
        alerts::raise(&self.inner.store, now, Some(&id), alerts::SCOPE_MISSING, text, entry).await?;
        Ok(true)
    }

    /// The outbox's [`AuthHook`]: a 401 sends the action again after its backoff
    /// ([`AuthVerdict::Resend`]) while a background task refreshes once (OAuth) or suspends; once
    /// suspended, the connection's work is not claimed until it is live again, so the action waits
    /// for the fix durably, and goes out as soon as the fix comes (not after a fixed wait). A 403
    /// is recorded and alerted and the action fails with the platform's reason.
    pub fn auth_hook(&self) -> AuthHook {
        let me = self.clone();
        Arc::new(move |af: &AuthFailure| match &af.failure {
            Failure::Unauthenticated(_) => {
                let m = me.clone();
                // The credential the 401 is about is the one the request went out with. If the
                // current one is another (a refresh finished meanwhile), resend with it: judging
                // the current one by this 401 would refresh twice or suspend a working
                // connection.
                let current = m.credential();
                let current_fp = current
                    .as_ref()
                    .and_then(|c| m.header_for(&c.secret).ok())
                    .map(|h| crate::outbox::credential_fingerprint(&h));
                if current_fp.is_some_and(|fp| fp != af.sent_with) {
                    return AuthVerdict::Resend;
                }
                let version = current.map(|c| c.version);
                tokio::spawn(async move {
                    if let Err(e) = m.on_unauthenticated(version).await {
                        tracing::error!("handling a 401 failed: {e}");
                    }
                });
                AuthVerdict::Resend
            }
            Failure::Forbidden(d) => {
                let m = me.clone();
                let d = d.clone();
                tokio::spawn(async move {
                    if let Err(e) = m.record_forbidden(&d, "write").await {
                        tracing::error!("recording a 403 failed: {e}");
                    }
                });
                AuthVerdict::Fail
            }
            _ => AuthVerdict::Fail,
        })
    }

    /// A write met a 401 with the credential at `seen_version`: refresh once (OAuth) unless the
    /// token a 401 already refreshed was refused too, else suspend. Returns whether the
    /// connection can carry on.
    ///
    /// # Errors
    /// [`CredentialError`].
    pub async fn on_unauthenticated(&self, seen_version: Option<i64>) -> Result<bool, CredentialError> {
        let already = lock(&self.inner.state).refreshed_on_401;
        if already.is_none() || already != seen_version {
            match self.refresh(seen_version).await? {
                RefreshOutcome::Refreshed(v) => {
                    lock(&self.inner.state).refreshed_on_401 = Some(v);
                    return Ok(true);
                }
                RefreshOutcome::AlreadyRefreshed(_) => return Ok(true),
                RefreshOutcome::Suspended => return Ok(false),
                RefreshOutcome::RetryAt(_) | RefreshOutcome::NotRefreshable => {}
            }
        }
        let text = format!(
            "Connection {}: the platform refused the credential on a write{}. Re-authenticate the connection; queued work is kept and resumes once new credentials are set.",
            self.connection_id(),
            if already.is_some() { " even after a token refresh" } else { "" }
        );
        self.fail_reauth(alerts::CREDENTIAL_INVALID, text, json!({ "during": "write" })).await?;
        Ok(false)
    }

    async fn fail_reauth(&self, kind: &str, text: String, detail: Value) -> Result<(), CredentialError> {
        let id = self.connection_id();
        // One alert per suspension: a connection already suspended is not alerted again.
        if self.suspend(&text, SUSPEND_REAUTH).await? {
            alerts::raise(&self.inner.store, self.now(), Some(&id), kind, text, detail).await?;
        }
        Ok(())
    }

    /// Suspend the connection cleanly: state `suspended{reason, kind}` and a
    /// `connection.suspended` event in the inbox. Returns false if it was already suspended.
    ///
    /// # Errors
    /// A store error.
    pub async fn suspend(&self, reason: &str, kind: &str) -> Result<bool, CredentialError> {
        let _transition = self.inner.transition.lock().await;
        let id = self.connection_id();
        let now = self.now();
        let conn = self.inner.store.get_connection(&id).await?;
        if matches!(conn.as_ref().map(|c| &c.state), Some(ConnectionState::Suspended { .. } | ConnectionState::Deleted)) {
            return Ok(false);
        }
        self.inner
            .store
            .set_connection_state(&id, &ConnectionState::Suspended { reason: reason.into(), kind: kind.into() }, now)
            .await?;
        self.connection_event("connection.suspended", json!({ "reason": reason, "kind": kind }), now).await?;
        tracing::error!(connection = %id, kind, "connection suspended: {reason}");
        let hook = lock(&self.inner.on_suspend).clone();
        if let Some(f) = hook {
            f();
        }
        Ok(true)
    }

    /// Resume a suspended connection: state `live` and a `connection.resumed` event. Returns
    /// false if it was not suspended.
    ///
    /// # Errors
    /// A store error.
    pub async fn resume(&self) -> Result<bool, CredentialError> {
        let _transition = self.inner.transition.lock().await;
        let id = self.connection_id();
        let now = self.now();
        let conn = self.inner.store.get_connection(&id).await?;
        if !matches!(conn.as_ref().map(|c| &c.state), Some(ConnectionState::Suspended { .. })) {
            return Ok(false);
        }
        self.inner.store.set_connection_state(&id, &ConnectionState::Live, now).await?;
        {
            let mut st = lock(&self.inner.state);
            st.refreshed_on_401 = None;
            st.retry_at = None;
            st.retry_attempt = 0;
            st.last_health = now;
        }
        self.connection_event("connection.resumed", json!({}), now).await?;
        tracing::info!(connection = %id, "connection resumed");
        Ok(true)
    }

    async fn connection_event(&self, kind: &str, body: Value, now: Millis) -> Result<(), StoreError> {
        let id = self.connection_id();
        let platform = self.inner.adapter.descriptor().id.clone();
        let mut ticket = json!({ "connection": id, "event": kind, "at": now });
        if let (Value::Object(t), Value::Object(b)) = (&mut ticket, body) {
            t.extend(b);
        }
        let ev = NewEvent {
            connection_id: id.clone(),
            platform,
            ticket_id: String::new(),
            kind: kind.into(),
            ticket,
            dedupe_key: format!("{kind}:{now}:{}", self.credential().map(|c| c.version).unwrap_or(0)),
        };
        self.inner.store.insert_events(&[ev], now).await?;
        Ok(())
    }

    /// Replace the credentials (operator, API, CLI): validate them with who-am-i and the scope
    /// probe, store them, and resume the connection if it was suspended (or take it live if it
    /// was pending its probe). Refused credentials change nothing.
    ///
    /// # Errors
    /// [`CredentialError::Rejected`] when who-am-i refuses them; the probe's report is returned
    /// (and stored) even when it does not pass, and then the connection is not resumed.
    pub async fn update_credentials(&self, secret: CredentialSecret, expires_at: Option<Millis>) -> Result<ProbeReport, CredentialError> {
        let _flight = self.inner.flight.lock().await;
        let mut target = self.target_for(&secret)?;
        match self.inner.driver.execute(&self.inner.adapter, &target, &Operation::WhoAmI, None, &mut NoHooks).await? {
            Ok(Outcome::Identity(me)) => {
                lock(&self.inner.connection).agent_id = Some(me.agent_id.clone());
                target.connection.agent_id = Some(me.agent_id);
            }
            Ok(other) => return Err(CredentialError::Rejected(format!("unexpected who-am-i outcome {other:?}"))),
            Err(f) => return Err(CredentialError::Rejected(f.explain().to_string())),
        }
        let id = self.connection_id();
        let now = self.now();
        let stored = self.inner.store.put_credential(&id, &secret, expires_at, Expect::Any, now).await?;
        lock(&self.inner.state).reported_forbidden.clear();
        self.set_cred(stored);
        // The who-am-i above is a health check of the new credential.
        self.record_health(now).await;
        let report = probe::probe_connection(&self.inner.store, &self.inner.driver, &self.inner.adapter, &target, self.now()).await?;
        if report.passed {
            self.resume().await?;
        }
        Ok(report)
    }

    /// Learn the acting agent's id with who-am-i, when it is not known yet, and hand it to the
    /// outbox worker: some platforms' writes must name it (Intercom's `admin_id`). Returns the
    /// id, or `None` when who-am-i did not answer with one (the failure is logged; the next
    /// write meets it with the full policy).
    ///
    /// # Errors
    /// [`CredentialError`] when no credential is loaded or the request could not be driven.
    pub async fn identify(&self) -> Result<Option<String>, CredentialError> {
        if let Some(id) = lock(&self.inner.connection).agent_id.clone() {
            return Ok(Some(id));
        }
        let target = self.target().ok_or_else(|| CredentialError::NoCredential(self.connection_id()))?;
        match self.inner.driver.execute(&self.inner.adapter, &target, &Operation::WhoAmI, None, &mut NoHooks).await? {
            Ok(Outcome::Identity(me)) => {
                lock(&self.inner.connection).agent_id = Some(me.agent_id.clone());
                if let (Some(t), Some(w)) = (self.target(), lock(&self.inner.worker).as_ref()) {
                    w.set_target(t);
                }
                Ok(Some(me.agent_id))
            }
            Ok(other) => {
                tracing::warn!(connection = %self.connection_id(), "who-am-i answered {other:?}");
                Ok(None)
            }
            Err(f) => {
                tracing::warn!(connection = %self.connection_id(), "who-am-i failed: {}", f.explain());
                Ok(None)
            }
        }
    }

    /// Probe the connection now with the current credentials (connect time, on demand).
    /// Learns the acting agent's id first (who-am-i) when it is not known yet: some platforms'
    /// writes must name it (Intercom's `admin_id`).
    ///
    /// # Errors
    /// [`CredentialError`].
    pub async fn probe(&self) -> Result<ProbeReport, CredentialError> {
        let mut target = self.target().ok_or_else(|| CredentialError::NoCredential(self.connection_id()))?;
        if target.connection.agent_id.is_none() {
            if let Ok(Outcome::Identity(me)) =
                self.inner.driver.execute(&self.inner.adapter, &target, &Operation::WhoAmI, None, &mut NoHooks).await?
            {
                lock(&self.inner.connection).agent_id = Some(me.agent_id.clone());
                target.connection.agent_id = Some(me.agent_id);
                if let (Some(t), Some(w)) = (self.target(), lock(&self.inner.worker).as_ref()) {
                    w.set_target(t);
                }
            }
        }
        Ok(probe::probe_connection(&self.inner.store, &self.inner.driver, &self.inner.adapter, &target, self.now()).await?)
    }
}

fn op_name(op: &Operation) -> &'static str {
    match op {
        Operation::GetTicket(_) => "get-ticket",
        Operation::ListChanged(_) => "list-changed",
        Operation::ListOpen(_) => "list-open",
        Operation::Apply(_) => "apply",
        Operation::WhoAmI => "who-am-i",
        Operation::Probe(_) => "probe",
        Operation::ReadBack(_) => "read-back",
    }
}
