//! The durable store: one storage interface, two backends.
//!
//! Everything deskgate must not lose lives here: connections with their (encrypted) credentials
//! and webhook signing secrets, the outbox of actions to send with its append-only write log, the
//! inbox of ticket events for the app, alerts for people, and the leases that make timers run once
//! per cluster.
//!
//! - [`sqlite`]: the embedded default. One file, created on first start, WAL journal.
//! - [`postgres`]: for several gateway replicas sharing one database.
//!
//! Both implement [`Store`]; the rest of the host holds a [`SharedStore`] (`Arc<dyn Store>`) and
//! never knows which one it has. `host/tests/store_contract.rs` runs one contract suite unchanged
//! against both.
//!
//! # Why the store takes time as an argument
//!
//! Every method that records or compares a time takes `now: Millis` from the caller's
//! [`Clock`](crate::clock::Clock), never SQL `now()`. Policies are then tested on a
//! [`ManualClock`](crate::clock::ManualClock), and replicas whose database server's clock
//! disagrees with theirs still agree with themselves.
//!
//! # Durability
//!
//! A write returns only once it is durable. On SQLite that means `synchronous=FULL` with the WAL:
//! every commit fsyncs the log before it returns (calls queued together share one commit, and none
//! of them is answered before it: see [`sqlite`]). `NORMAL` would be faster, but in WAL mode it lets
//! a power cut roll back the last commits, and the API acknowledges an action as accepted the
//! moment [`Store::enqueue`] returns. On PostgreSQL, commits are durable under the server's
//! default `synchronous_commit=on`.
//!
//! # Work distribution
//!
//! Outbox entries and timers are handed out by time-bounded leases stored next to the data, so a
//! replica that dies simply lets its leases expire and another picks the work up. Every transition
//! of a claimed entry names the claimer and fails with [`StoreError::LeaseLost`] if someone else
//! has since claimed it (fencing), so a stalled replica cannot overwrite a newer outcome.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> Result<(), deskgate::store::StoreError> {
//! use deskgate::store::{self, NewConnection, SecretKey};
//! let key = SecretKey::from_bytes([7; 32]);
//! let store = store::open("sqlite:///var/lib/deskgate/deskgate.db", key).await?;
//! let conn = NewConnection::new("acme-zd", "zendesk", "Acme Support");
//! store.create_connection(&conn, 1_700_000_000_000).await?;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock::Millis;

mod codec;
mod crypto;
mod migrate;
pub mod postgres;
pub mod sqlite;

pub use crypto::SecretKey;
pub use migrate::{POSTGRES_SCHEMA_VERSION, SQLITE_SCHEMA_VERSION};

/// A store shared by every part of the host.
pub type SharedStore = Arc<dyn Store>;

/// Open the store named by `url`, creating it and migrating its schema as needed.
///
/// `url` is one of:
/// - a file path (`/var/lib/deskgate/deskgate.db`, `./deskgate.db`) or `sqlite://PATH` /
///   `sqlite:PATH`: embedded SQLite, the file (and its directory) created on first start;
/// - `postgres://...` or `postgresql://...`: a PostgreSQL database that already exists.
///
/// `key` encrypts credentials at rest. It is never stored; a check value encrypted with it is, so
/// that opening with a different key fails here rather than at the first token refresh.
///
/// # Errors
///
/// [`StoreError::Open`] if the database cannot be reached or created, [`StoreError::SchemaTooNew`]
/// if a newer deskgate wrote it, [`StoreError::WrongSecretKey`] if `key` is not the key it was
/// written with.
pub async fn open(url: &str, key: SecretKey) -> Result<SharedStore, StoreError> {
    match Location::parse(url)? {
        Location::Sqlite(path) => Ok(Arc::new(sqlite::SqliteStore::open(&path, key).await?)),
        Location::SqliteRelaxed(path) => Ok(Arc::new(sqlite::SqliteStore::open_with(&path, key, false).await?)),
        Location::Postgres(url) => Ok(Arc::new(postgres::PgStore::open(&url, key).await?)),
    }
}

/// Where a store lives, as parsed from its URL.
/// The file of a SQLite store URL (a path, `sqlite://PATH[?options]`); `None` for PostgreSQL or
/// a URL [`open`] would refuse.
pub fn sqlite_path(url: &str) -> Option<std::path::PathBuf> {
    match Location::parse(url).ok()? {
        Location::Sqlite(p) | Location::SqliteRelaxed(p) => Some(p),
        Location::Postgres(_) => None,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Location {
    Sqlite(std::path::PathBuf),
    /// `?synchronous=normal`: commits survive a crash of the process, not of the machine.
    SqliteRelaxed(std::path::PathBuf),
    Postgres(String),
}

impl Location {
    fn parse(url: &str) -> Result<Self, StoreError> {
        let url = url.trim();
        if url.is_empty() {
            return Err(StoreError::Open {
                url: String::new(),
                reason: "the store URL is empty: give a file path, sqlite://PATH or postgres://..."
                    .into(),
            });
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres(url.to_owned()));
        }
        if let Some(rest) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
            let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
            let mut relaxed = false;
            for opt in query.split('&').filter(|o| !o.is_empty()) {
                match opt {
                    "synchronous=full" => relaxed = false,
                    "synchronous=normal" => relaxed = true,
                    // An open mode (sqlx's URLs had one): deskgate always opens read-write and
                    // creates the file.
                    o if o.starts_with("mode=") => {}
                    other => {
                        return Err(StoreError::Open {
                            url: url.to_owned(),
                            reason: format!(
                                "unknown SQLite option `{other}`: the only option is synchronous=full (the default: \
                                 a commit survives power loss) or synchronous=normal (it survives a crash of \
                                 deskgate, not of the machine; for throwaway stores such as the demo's)"
                            ),
                        });
                    }
                }
            }
            if path.is_empty() || path == ":memory:" {
                return Err(StoreError::Open {
                    url: url.to_owned(),
                    reason:
                        "the SQLite store must be a file (an in-memory database is lost on exit)"
                            .into(),
                });
            }
            return Ok(if relaxed { Self::SqliteRelaxed(path.into()) } else { Self::Sqlite(path.into()) });
        }
        if let Some((scheme, _)) = url.split_once("://") {
            return Err(StoreError::Open {
                url: redact_url(url),
                reason: format!(
                    "unsupported store scheme `{scheme}`: use a file path, sqlite://PATH or postgres://..."
                ),
            });
        }
        Ok(Self::Sqlite(url.into()))
    }
}

/// `url` with any password replaced by `***`, for error messages and logs.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// Which backend a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite file.
    Sqlite,
    /// Shared PostgreSQL database.
    Postgres,
}

// ---------------------------------------------------------------------------------------------
// Errors

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database could not be opened, created or reached.
    #[error("cannot open the store at {url}: {reason}")]
    Open {
        /// The URL, password redacted.
        url: String,
        /// What failed, and what to do.
        reason: String,
    },
    /// The secret key given does not decrypt what the store holds.
    #[error(
        "DESKGATE_SECRET_KEY does not match the key the store was written with: set it back to \
         the key this store was created with (the key is never stored, and credentials written \
         with a lost key cannot be recovered; they must be entered again)"
    )]
    WrongSecretKey,
    /// A newer deskgate migrated this database; this binary does not understand its schema.
    #[error(
        "the store's schema is version {found}, newer than this deskgate understands (up to \
         {supported}): run the deskgate release that wrote it (or a newer one), or point this one \
         at another database"
    )]
    SchemaTooNew {
        /// The database's schema version.
        found: i64,
        /// The newest version this binary knows.
        supported: i64,
    },
    /// An applied migration differs from the one shipped in this binary.
    #[error(
        "schema migration {version} applied to this store differs from the one in this deskgate \
         build (checksum {found} vs {expected}): the database was migrated by a different build; \
         use that build, or restore a backup taken before it ran"
    )]
    MigrationChanged {
        /// The migration's version.
        version: i64,
        /// Checksum recorded in the database.
        found: String,
        /// Checksum of this binary's migration.
        expected: String,
    },
    /// No connection with this id.
    #[error("connection `{0}` does not exist")]
    ConnectionNotFound(String),
    /// A connection with this id exists already.
    #[error("connection `{0}` already exists")]
    ConnectionExists(String),
    /// No credentials stored for this connection.
    #[error("connection `{0}` has no stored credentials")]
    CredentialNotFound(String),
    /// A compare-and-swap on the credential version lost: someone else wrote first.
    #[error(
        "credentials of `{connection}` changed concurrently (expected {expected}, found {actual}): \
         re-read them and use the stored ones"
    )]
    VersionConflict {
        /// The connection.
        connection: String,
        /// What the caller expected ("absent" or "version N").
        expected: String,
        /// What the store holds ("absent" or "version N").
        actual: String,
    },
    /// Another owner is refreshing these credentials.
    #[error("a refresh of `{connection}` by `{owner}` is in flight since {since} ms")]
    RefreshInFlight {
        /// The connection.
        connection: String,
        /// Who marked the refresh.
        owner: String,
        /// When the marker was written.
        since: Millis,
    },
    /// No outbox entry with this id.
    #[error("outbox entry {0} does not exist")]
    ActionNotFound(i64),
    /// No alert with this id.
    #[error("alert {0} does not exist")]
    AlertNotFound(i64),
    /// The caller no longer holds the lease on this outbox entry.
    #[error(
        "outbox entry {entry} is no longer leased to `{owner}`: another worker claimed it, so \
         drop this attempt's outcome"
    )]
    LeaseLost {
        /// The entry.
        entry: i64,
        /// The caller who thought it held the lease.
        owner: String,
    },
    /// The caller's lease on this outbox entry lapsed before it marked the send.
    #[error(
        "the lease of `{owner}` on outbox entry {entry} expired at {until} ms: do not send; claim \
         the entry again (and lease it for longer than a send can take)"
    )]
    LeaseExpired {
        /// The entry.
        entry: i64,
        /// The caller.
        owner: String,
        /// When the lease lapsed.
        until: Millis,
    },
    /// The transition is not allowed from the entry's current state.
    #[error("outbox entry {entry} cannot go from {from} to {to}")]
    InvalidTransition {
        /// The entry.
        entry: i64,
        /// Its current state.
        from: &'static str,
        /// The requested outcome.
        to: &'static str,
    },
    /// The app reused its Idempotency-Key for a different action.
    #[error(
        "Idempotency-Key `{key}` was already used on connection `{connection}` for a different \
         action (entry {existing}): use a new key for a new action"
    )]
    IdempotencyKeyReused {
        /// The connection.
        connection: String,
        /// The app's key.
        key: String,
        /// The entry that holds it.
        existing: i64,
    },
    /// A row or value in the database could not be decoded: a bug or a hand-edited database.
    #[error("corrupt store data: {0}")]
    Corrupt(String),
    /// The database reported an error (PostgreSQL, through sqlx).
    #[error("store database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The embedded SQLite database reported an error.
    #[error("store database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The store was closed ([`Store::close`]) before or while the call waited.
    #[error("the store is closed: nothing was written; the gateway is shutting down")]
    Closed,
    /// A store operation panicked: a deskgate bug. Its transaction was rolled back and the store
    /// keeps working.
    #[error("a store operation panicked (a deskgate bug; nothing of it was stored): {0}")]
    Panicked(String),
}

impl StoreError {
    /// True for errors that may go away if the same call is retried (connection lost, pool
    /// timeout, serialization failure, SQLite busy or locked, store closed).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => {
                matches!(f.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            }
            // As a closed sqlx pool: another instance of the store may take the call.
            Self::Closed => true,
            Self::Database(e) => match e {
                sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
                sqlx::Error::Database(db) => {
                    matches!(db.code().as_deref(), Some("40001" | "40P01"))
                }
                _ => false,
            },
            _ => false,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Connections

/// A connection to one helpdesk account.
#[derive(Debug, Clone, PartialEq)]
pub struct Connection {
    /// Stable id chosen at creation (appears in `/webhooks/{id}`).
    pub id: String,
    /// Adapter platform id (`zendesk`, `freshdesk`, ...).
    pub platform: String,
    /// Human-readable name.
    pub display_name: String,
    /// The account's plan name as the adapter's descriptor names it, if known.
    pub plan: Option<String>,
    /// Non-secret settings (subdomain, region, ...): never credentials.
    pub settings: Value,
    /// Lifecycle state.
    pub state: ConnectionState,
    /// Where to tell a person when the connection needs them.
    pub admin_contact_url: Option<String>,
    /// The last scope probe's report.
    pub probe_report: Option<Value>,
    /// When created.
    pub created_at: Millis,
    /// When last changed.
    pub updated_at: Millis,
}

/// A connection's lifecycle state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ConnectionState {
    /// Created; the scope probe has not passed yet, so nothing is sent.
    PendingProbe,
    /// Probed and working.
    Live,
    /// Stopped until a person fixes something; work waits durably.
    Suspended {
        /// What is wrong and how to fix it, for people.
        reason: String,
        /// Machine-readable class chosen by the policy that suspended it (for example
        /// `reauth`, `rescope`, `operator`).
        kind: String,
    },
    /// Deleted: kept for the audit trail, credentials and webhook secret erased.
    Deleted,
}

impl ConnectionState {
    /// The state's name as stored (`pending_probe`, `live`, `suspended`, `deleted`).
    pub fn name(&self) -> &'static str {
        match self {
            Self::PendingProbe => "pending_probe",
            Self::Live => "live",
            Self::Suspended { .. } => "suspended",
            Self::Deleted => "deleted",
        }
    }
}

/// What [`Store::create_connection`] needs.
#[derive(Debug, Clone, PartialEq)]
pub struct NewConnection {
    /// Stable id (unique per store).
    pub id: String,
    /// Adapter platform id.
    pub platform: String,
    /// Human-readable name.
    pub display_name: String,
    /// Plan name, if known.
    pub plan: Option<String>,
    /// Non-secret settings.
    pub settings: Value,
    /// Admin contact URL.
    pub admin_contact_url: Option<String>,
}

impl NewConnection {
    /// A connection with no plan, empty settings and no contact.
    pub fn new(
        id: impl Into<String>,
        platform: impl Into<String>,
        display_name: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            platform: platform.into(),
            display_name: display_name.into(),
            plan: None,
            settings: Value::Object(Default::default()),
            admin_contact_url: None,
        }
    }
}

/// Changes to a connection's descriptive fields; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConnectionPatch {
    /// New display name.
    pub display_name: Option<String>,
    /// New plan (`Some(None)` clears it).
    pub plan: Option<Option<String>>,
    /// New settings (replaces the whole object).
    pub settings: Option<Value>,
    /// New admin contact (`Some(None)` clears it).
    pub admin_contact_url: Option<Option<String>>,
}

// ---------------------------------------------------------------------------------------------
// Credentials

/// The secret part of a connection's credentials. Its `Debug` never prints a secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scheme", rename_all = "snake_case")]
pub enum CredentialSecret {
    /// API token or key fields as the platform names them (`email` + `api_token`, `api_key`,
    /// a non-expiring bearer `access_token`, ...).
    ApiKey {
        /// Field name to value.
        fields: BTreeMap<String, String>,
    },
    /// An OAuth 2 token pair.
    #[serde(rename = "oauth", alias = "o_auth")]
    OAuth {
        /// The bearer token.
        access_token: String,
        /// The refresh token, if the grant issued one.
        refresh_token: Option<String>,
        /// The OAuth client the pair was issued to (`client_id`, `client_secret`), needed to
        /// refresh it. Kept with the pair, sealed like it, so a refresh works after a restart.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client: Option<OAuthClientSecret>,
    },
}

/// An OAuth client's id and secret, kept (sealed) with the token pair issued to it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthClientSecret {
    /// `client_id`.
    pub client_id: String,
    /// `client_secret`.
    pub client_secret: String,
}

impl std::fmt::Debug for OAuthClientSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthClientSecret").field("client_id", &self.client_id).field("client_secret", &"<redacted>").finish()
    }
}

impl CredentialSecret {
    /// The scheme's name as stored in clear (`api_key`, `oauth`).
    pub fn scheme(&self) -> &'static str {
        match self {
            Self::ApiKey { .. } => "api_key",
            Self::OAuth { .. } => "oauth",
        }
    }
}

impl fmt::Debug for CredentialSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ApiKey { fields } => f
                .debug_struct("ApiKey")
                .field(
                    "fields",
                    &fields.keys().map(|k| (k, "<redacted>")).collect::<BTreeMap<_, _>>(),
                )
                .finish(),
            Self::OAuth { refresh_token, .. } => f
                .debug_struct("OAuth")
                .field("access_token", &"<redacted>")
                .field("refresh_token", &refresh_token.as_ref().map(|_| "<redacted>"))
                .finish(),
        }
    }
}

/// A connection's credentials, decrypted.
#[derive(Debug, Clone, PartialEq)]
pub struct Credential {
    /// The connection.
    pub connection_id: String,
    /// The secret.
    pub secret: CredentialSecret,
    /// When the access token expires (OAuth), if it does. Stored in clear so refresh timers can
    /// be planned without decrypting.
    pub expires_at: Option<Millis>,
    /// Incremented by every write; the compare-and-swap token.
    pub version: i64,
    /// Set by [`Store::begin_refresh`] before a refresh request is sent, cleared by the next
    /// write or [`Store::end_refresh`]. Found set at start-up, it means a refresh may have been
    /// sent and its answer lost (with rotating refresh tokens, the stored one may be spent).
    pub refresh_in_flight: Option<RefreshMarker>,
    /// When last written (for a refreshed token: about when it was issued).
    pub updated_at: Millis,
}

/// Who is refreshing a credential, since when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshMarker {
    /// The refresher (replica id).
    pub owner: String,
    /// When the marker was written.
    pub started_at: Millis,
}

/// What a credential write expects to find (compare-and-swap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// No credentials stored yet.
    Absent,
    /// Exactly this version stored.
    Version(i64),
    /// Whatever is stored (an operator replacing credentials by hand).
    Any,
}

/// A refresh about to be sent, for [`Store::begin_refresh`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshClaim {
    /// Who will refresh.
    pub owner: String,
    /// The version the refresher read; a newer one means someone refreshed already.
    pub expected_version: i64,
    /// Now.
    pub now: Millis,
    /// A marker by another owner written before this instant is taken over (its refresher is
    /// presumed dead); a newer one makes the claim fail with [`StoreError::RefreshInFlight`].
    pub stale_before: Millis,
}

// ---------------------------------------------------------------------------------------------
// Webhook secrets

/// How a connection's webhooks are authenticated, as stored (the secret decrypted). Written with
/// [`Store::set_webhook_secret`]; its `Debug` never prints the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecretRecord {
    /// The connection.
    pub connection_id: String,
    /// The platform's signing secret (Zendesk signing secret, Intercom client secret, the
    /// Freshdesk custom-header token); `None` when the connection takes unsigned deliveries only.
    pub secret: Option<Vec<u8>>,
    /// Accept deliveries that carry no signature at all. A delivery that carries a bad signature
    /// is refused either way.
    pub allow_unsigned: bool,
    /// When last written.
    pub updated_at: Millis,
}

impl fmt::Debug for WebhookSecretRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSecretRecord")
            .field("connection_id", &self.connection_id)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("allow_unsigned", &self.allow_unsigned)
            .field("updated_at", &self.updated_at)
            .finish()
    }
}

// ---------------------------------------------------------------------------------------------
// Outbox

/// An action to enqueue.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAction {
    /// The connection.
    pub connection_id: String,
    /// The ticket the action applies to.
    pub ticket_id: String,
    /// The normalized action.
    pub action: Value,
    /// sha256 hex over connection, ticket and canonical action, computed by the caller.
    pub idempotency_key: String,
    /// The app's own Idempotency-Key header, if it sent one (unique per connection).
    pub app_key: Option<String>,
    /// Not to be sent before this instant.
    pub not_before: Millis,
}

/// An outbox entry.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEntry {
    /// Store-assigned id.
    pub id: i64,
    /// The connection.
    pub connection_id: String,
    /// The ticket.
    pub ticket_id: String,
    /// The normalized action.
    pub action: Value,
    /// Content idempotency key (sha256 hex).
    pub idempotency_key: String,
    /// The app's Idempotency-Key, if any.
    pub app_key: Option<String>,
    /// Where the entry is in its life.
    pub state: OutboxState,
    /// Sends so far ([`Store::mark_sent`] calls).
    pub attempts: i64,
    /// Not due before this instant.
    pub not_before: Millis,
    /// Who holds the entry, until when.
    pub lease: Option<Lease>,
    /// When the last attempt was sent.
    pub last_sent_at: Option<Millis>,
    /// The outcome as returned to the app (set when confirmed, diverged or failed).
    pub result: Option<Value>,
    /// When enqueued.
    pub created_at: Millis,
    /// When last changed.
    pub updated_at: Millis,
}

/// A time-bounded claim on a piece of work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The holder (replica or worker id).
    pub owner: String,
    /// The claim lapses at this instant.
    pub until: Millis,
}

/// An outbox entry's state.
///
/// ```text
/// pending ──mark_sent──▶ sent ──▶ confirmed | failed | diverged
///    ▲                    │
///    └──── retry ─────────┴──▶ ambiguous (timed out after sending: read back before resending)
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum OutboxState {
    /// Waiting to be sent (or to be retried).
    Pending,
    /// Marked as about to be sent; no outcome yet. Found with an expired lease, the sender died
    /// and the action may or may not have landed.
    Sent,
    /// The platform confirmed it.
    Confirmed,
    /// It cannot succeed.
    Failed {
        /// Why.
        why: String,
    },
    /// The request left but no answer came back; read back before resending.
    Ambiguous,
    /// Part landed and part did not (a reply posted while its status change failed).
    Diverged {
        /// What differs.
        detail: String,
    },
}

impl OutboxState {
    /// The state's name as stored.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sent => "sent",
            Self::Confirmed => "confirmed",
            Self::Failed { .. } => "failed",
            Self::Ambiguous => "ambiguous",
            Self::Diverged { .. } => "diverged",
        }
    }

    /// Still owed an outcome (pending, sent or ambiguous).
    pub fn is_in_flight(&self) -> bool {
        matches!(self, Self::Pending | Self::Sent | Self::Ambiguous)
    }
}

/// What [`Store::enqueue`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Enqueued {
    /// A new entry was created.
    Created(OutboxEntry),
    /// The same action is already in flight, settled within the dedupe window, or was sent
    /// under the same app Idempotency-Key: this is that entry (with its result, if any).
    Existing(OutboxEntry),
}

impl Enqueued {
    /// The entry, new or existing.
    pub fn entry(&self) -> &OutboxEntry {
        match self {
            Self::Created(e) | Self::Existing(e) => e,
        }
    }

    /// True if a new entry was created.
    pub fn is_created(&self) -> bool {
        matches!(self, Self::Created(_))
    }
}

/// A request to claim due outbox entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The claimer.
    pub owner: String,
    /// Now.
    pub now: Millis,
    /// How long the claim lasts.
    pub lease_for: Duration,
    /// At most this many entries.
    pub limit: u32,
    /// Only this connection's entries (one write lane per connection), or any connection's.
    pub connection_id: Option<String>,
}

/// How an attempt ended, for [`Store::settle_action`]. Each settles the entry, releases its lease
/// and appends one [`WriteLogRecord`] in the same transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum Settle {
    /// The platform confirmed the action (or a read-back found it landed).
    Confirmed {
        /// The result returned to the app.
        result: Value,
        /// For the write log.
        detail: String,
    },
    /// The action cannot succeed.
    Failed {
        /// Why, for the app and the write log.
        why: String,
        /// The result returned to the app, if any.
        result: Option<Value>,
    },
    /// Sent, but no answer came back: read back at or after `not_before` before resending.
    Ambiguous {
        /// For the write log.
        detail: String,
        /// When to look again.
        not_before: Millis,
    },
    /// Part of the action landed and part did not.
    Diverged {
        /// What differs.
        detail: String,
        /// The result returned to the app.
        result: Value,
    },
    /// Try again later (rate limited, transient error, or read-back found nothing landed).
    Retry {
        /// For the write log.
        detail: String,
        /// When it is due again.
        not_before: Millis,
    },
}

impl Settle {
    /// The outcome's name, as in [`AttemptOutcome`].
    pub fn outcome(&self) -> AttemptOutcome {
        match self {
            Self::Confirmed { .. } => AttemptOutcome::Confirmed,
            Self::Failed { .. } => AttemptOutcome::Failed,
            Self::Ambiguous { .. } => AttemptOutcome::Ambiguous,
            Self::Diverged { .. } => AttemptOutcome::Diverged,
            Self::Retry { .. } => AttemptOutcome::Retry,
        }
    }
}

/// The outcome recorded in a write-log record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// Confirmed.
    Confirmed,
    /// Failed for good.
    Failed,
    /// No answer after sending.
    Ambiguous,
    /// Partly applied.
    Diverged,
    /// To be retried.
    Retry,
}

impl AttemptOutcome {
    /// The name as stored.
    pub fn name(self) -> &'static str {
        match self {
            Self::Confirmed => "confirmed",
            Self::Failed => "failed",
            Self::Ambiguous => "ambiguous",
            Self::Diverged => "diverged",
            Self::Retry => "retry",
        }
    }
}

/// One append-only audit record of an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteLogRecord {
    /// Store-assigned id (increasing).
    pub id: i64,
    /// The outbox entry.
    pub entry_id: i64,
    /// The entry's connection.
    pub connection_id: String,
    /// The attempt number (the entry's `attempts` when it settled; 0 if never sent).
    pub attempt: i64,
    /// When the attempt was sent, if it was.
    pub sent_at: Option<Millis>,
    /// How it ended.
    pub outcome: AttemptOutcome,
    /// Detail for people.
    pub detail: String,
    /// When recorded.
    pub recorded_at: Millis,
}

/// A filter for [`Store::list_actions`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActionQuery {
    /// Only this connection.
    pub connection_id: Option<String>,
    /// Only this ticket.
    pub ticket_id: Option<String>,
    /// Only in-flight entries (pending, sent, ambiguous).
    pub in_flight_only: bool,
    /// Only entries with a larger id (paging).
    pub after_id: i64,
    /// At most this many (0 means 100).
    pub limit: u32,
}

// ---------------------------------------------------------------------------------------------
// Inbox

/// A ticket event to store for the app.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// The connection.
    pub connection_id: String,
    /// The platform id.
    pub platform: String,
    /// The ticket.
    pub ticket_id: String,
    /// Event kind (`ticket.created`, `ticket.updated`, ...).
    pub kind: String,
    /// The normalized ticket.
    pub ticket: Value,
    /// Unique per connection: the platform's event id, or ticket id + updated_at.
    pub dedupe_key: String,
}

/// A stored inbox event.
#[derive(Debug, Clone, PartialEq)]
pub struct InboxEvent {
    /// Monotonic per store: the app's cursor.
    pub id: i64,
    /// The connection.
    pub connection_id: String,
    /// The platform id.
    pub platform: String,
    /// The ticket.
    pub ticket_id: String,
    /// Event kind.
    pub kind: String,
    /// The normalized ticket.
    pub ticket: Value,
    /// The dedupe key.
    pub dedupe_key: String,
    /// When stored.
    pub created_at: Millis,
    /// When first handed to the app.
    pub delivered_at: Option<Millis>,
    /// When the app acknowledged it.
    pub acked_at: Option<Millis>,
}

/// What [`Store::insert_events`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InsertReport {
    /// Events stored.
    pub new: u64,
    /// Events already stored (same connection and dedupe key), skipped.
    pub duplicates: u64,
}

/// A request for [`Store::pull_events`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pull {
    /// Return events with a larger id (the app's cursor; 0 for the start).
    pub after: i64,
    /// At most this many (0 means 100).
    pub limit: u32,
    /// Only this connection's events.
    pub connection_id: Option<String>,
    /// Now (recorded as the first delivery time).
    pub now: Millis,
}

// ---------------------------------------------------------------------------------------------
// Alerts

/// An alert to raise.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAlert {
    /// The connection it concerns, or none for the gateway as a whole.
    pub connection_id: Option<String>,
    /// Machine-readable kind (`refresh_failed`, `divergence`, ...).
    pub kind: String,
    /// What happened and what to do, for people.
    pub text: String,
    /// Structured detail.
    pub detail: Value,
}

/// A stored alert.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// Store-assigned id.
    pub id: i64,
    /// The connection, if any.
    pub connection_id: Option<String>,
    /// Kind.
    pub kind: String,
    /// Text for people.
    pub text: String,
    /// Structured detail.
    pub detail: Value,
    /// When raised.
    pub created_at: Millis,
    /// When delivered to the admin contact.
    pub delivered_at: Option<Millis>,
    /// Delivery attempts so far.
    pub attempts: i64,
    /// Next delivery attempt not before this instant.
    pub next_attempt_at: Millis,
    /// Why the last delivery attempt failed.
    pub last_error: Option<String>,
    /// When a person acknowledged it.
    pub acked_at: Option<Millis>,
}

/// The result of one delivery attempt, for [`Store::record_alert_delivery`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlertDelivery {
    /// Delivered.
    Delivered,
    /// Not delivered; try again at `retry_at`.
    Failed {
        /// Why.
        error: String,
        /// When to try again.
        retry_at: Millis,
    },
}

// ---------------------------------------------------------------------------------------------
// Timer leases

/// A held timer lease (issue #9: timers run once per cluster).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerLease {
    /// The connection the timer belongs to (`""` for gateway-wide timers).
    pub connection_id: String,
    /// The timer's name (`reconcile`, `health_check`, ...).
    pub name: String,
    /// The holder.
    pub owner: String,
    /// The lease lapses at this instant.
    pub until: Millis,
    /// Incremented each time the lease changes hands: a fencing token.
    pub generation: i64,
}

// ---------------------------------------------------------------------------------------------
// The interface

/// The storage interface. Every method is one transaction: it either happens entirely or not
/// at all, and is durable when it returns `Ok`.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// Which backend this is.
    fn backend(&self) -> Backend;

    /// The schema version this store is at.
    async fn schema_version(&self) -> Result<i64, StoreError>;

    /// Close the pools, waiting for in-flight calls. Later calls fail.
    async fn close(&self);

    // -- connections ---------------------------------------------------------------------

    /// Create a connection in state [`ConnectionState::PendingProbe`].
    ///
    /// # Errors
    /// [`StoreError::ConnectionExists`] if the id is taken (deleted connections keep theirs).
    async fn create_connection(
        &self,
        new: &NewConnection,
        now: Millis,
    ) -> Result<Connection, StoreError>;

    /// A connection by id (deleted ones included).
    async fn get_connection(&self, id: &str) -> Result<Option<Connection>, StoreError>;

    /// All connections ordered by id, deleted ones only if asked.
    async fn list_connections(&self, include_deleted: bool) -> Result<Vec<Connection>, StoreError>;

    /// Change descriptive fields.
    ///
    /// # Errors
    /// [`StoreError::ConnectionNotFound`].
    async fn update_connection(
        &self,
        id: &str,
        patch: &ConnectionPatch,
        now: Millis,
    ) -> Result<Connection, StoreError>;

    /// Move a connection to `state`. Moving to [`ConnectionState::Deleted`] also erases its
    /// credentials and its webhook secret in the same transaction; moving to [`ConnectionState::Live`] releases the
    /// ticket events held while it was suspended (see [`Store::insert_events`]), giving them new
    /// ids after every id issued so far, in their old order.
    ///
    /// # Errors
    /// [`StoreError::ConnectionNotFound`].
    async fn set_connection_state(
        &self,
        id: &str,
        state: &ConnectionState,
        now: Millis,
    ) -> Result<Connection, StoreError>;

    /// Record the latest probe report.
    ///
    /// # Errors
    /// [`StoreError::ConnectionNotFound`].
    async fn set_probe_report(
        &self,
        id: &str,
        report: &Value,
        now: Millis,
    ) -> Result<Connection, StoreError>;

    // -- credentials ---------------------------------------------------------------------

    /// Encrypt and store credentials if the stored version matches `expect`; the new version is
    /// the old one plus one (1 for the first). Clears any refresh marker.
    ///
    /// # Errors
    /// [`StoreError::VersionConflict`] if `expect` does not hold,
    /// [`StoreError::ConnectionNotFound`].
    async fn put_credential(
        &self,
        connection_id: &str,
        secret: &CredentialSecret,
        expires_at: Option<Millis>,
        expect: Expect,
        now: Millis,
    ) -> Result<Credential, StoreError>;

    /// A connection's credentials, decrypted.
    ///
    /// # Errors
    /// [`StoreError::WrongSecretKey`] if they were written with another key.
    async fn get_credential(&self, connection_id: &str) -> Result<Option<Credential>, StoreError>;

    /// Mark a refresh as in flight before sending it. Succeeds if the version still matches and
    /// no other owner holds a fresh marker (the caller's own marker is renewed).
    ///
    /// # Errors
    /// [`StoreError::VersionConflict`] if someone refreshed already (use their token),
    /// [`StoreError::RefreshInFlight`] if another owner is refreshing now,
    /// [`StoreError::CredentialNotFound`].
    async fn begin_refresh(
        &self,
        connection_id: &str,
        claim: &RefreshClaim,
    ) -> Result<Credential, StoreError>;

    /// Clear `owner`'s refresh marker without writing new credentials (the refresh failed
    /// before or without consuming the refresh token). Returns whether a marker was cleared.
    async fn end_refresh(&self, connection_id: &str, owner: &str) -> Result<bool, StoreError>;

    // -- webhook secrets -------------------------------------------------------------------

    /// Set, replace or clear how a connection's webhooks are authenticated. `secret` is sealed
    /// like credentials, under associated data of its own (a sealed credential copied into its
    /// place does not decrypt, nor does another connection's secret). With `secret` `None` and
    /// `allow_unsigned` false nothing is left to authenticate with: the stored row is removed, and
    /// signed deliveries are then refused for want of a secret. Returns what is now stored.
    ///
    /// # Errors
    /// [`StoreError::ConnectionNotFound`] for an unknown or deleted connection.
    async fn set_webhook_secret(
        &self,
        connection_id: &str,
        secret: Option<&[u8]>,
        allow_unsigned: bool,
        now: Millis,
    ) -> Result<Option<WebhookSecretRecord>, StoreError>;

    /// A connection's webhook secret, decrypted; `None` if none is stored (a deleted
    /// connection's was erased with it).
    ///
    /// # Errors
    /// [`StoreError::WrongSecretKey`] if it was sealed with another key or its blob was moved
    /// from another row.
    async fn get_webhook_secret(&self, connection_id: &str) -> Result<Option<WebhookSecretRecord>, StoreError>;

    // -- outbox --------------------------------------------------------------------------

    /// Durably enqueue an action, unless it is a duplicate. Returns the existing entry instead
    /// when, on the same connection:
    /// - the app's Idempotency-Key was used before for the same action (any state, any age);
    /// - an entry with the same idempotency key is in flight;
    /// - one with the same key was confirmed or diverged within `dedupe_window` before `now`.
    ///
    /// A failed entry does not block a new one.
    ///
    /// # Errors
    /// [`StoreError::IdempotencyKeyReused`] if the app's key was used for a different action,
    /// [`StoreError::ConnectionNotFound`].
    async fn enqueue(
        &self,
        new: &NewAction,
        now: Millis,
        dedupe_window: Duration,
    ) -> Result<Enqueued, StoreError>;

    /// An outbox entry by id.
    async fn get_action(&self, id: i64) -> Result<Option<OutboxEntry>, StoreError>;

    /// The entry holding the app's Idempotency-Key on a connection.
    async fn find_action_by_app_key(
        &self,
        connection_id: &str,
        app_key: &str,
    ) -> Result<Option<OutboxEntry>, StoreError>;

    /// Entries matching `query`, by id.
    async fn list_actions(&self, query: &ActionQuery) -> Result<Vec<OutboxEntry>, StoreError>;

    /// Atomically lease up to `limit` due entries of live connections to `owner`: pending, sent
    /// or ambiguous, `not_before <= now`, unleased or with an expired lease. Two claimers never
    /// get the same entry while its lease lasts. Returned in due order (`not_before`, `id`).
    ///
    /// An entry returned in state `sent` was claimed by a worker that died after marking it:
    /// treat it like `ambiguous` (read back before resending).
    async fn claim_actions(&self, claim: &Claim) -> Result<Vec<OutboxEntry>, StoreError>;

    /// Record that an attempt is about to be sent: state `sent`, `attempts + 1`. Call it
    /// *before* the request leaves, so a crash leaves evidence, and only send if it succeeds.
    ///
    /// # Errors
    /// [`StoreError::LeaseLost`] unless `owner` holds the lease, [`StoreError::LeaseExpired`] if
    /// the lease has lapsed (another worker could claim the entry mid-send),
    /// [`StoreError::InvalidTransition`] from a settled state.
    async fn mark_sent(&self, id: i64, owner: &str, now: Millis)
    -> Result<OutboxEntry, StoreError>;

    /// Settle an attempt: update the entry, release its lease and append a write-log record,
    /// in one transaction. A lapsed lease is still good enough as long as nobody claimed the
    /// entry since: an outcome is worth keeping.
    ///
    /// Allowed: confirmed and diverged from sent or ambiguous; ambiguous from sent; failed and
    /// retry from pending, sent or ambiguous.
    ///
    /// # Errors
    /// [`StoreError::LeaseLost`] unless `owner` holds the lease, [`StoreError::InvalidTransition`].
    async fn settle_action(
        &self,
        id: i64,
        owner: &str,
        settle: &Settle,
        now: Millis,
    ) -> Result<OutboxEntry, StoreError>;

    /// Release `owner`'s leases on these entries without recording an attempt (shutdown, or a
    /// connection suspended mid-batch). Returns how many were released.
    async fn unclaim_actions(&self, ids: &[i64], owner: &str) -> Result<u64, StoreError>;

    /// The write log of one entry, oldest first.
    async fn write_log(&self, entry_id: i64) -> Result<Vec<WriteLogRecord>, StoreError>;

    // -- inbox ---------------------------------------------------------------------------

    /// Store events, skipping those whose (connection, dedupe key) is already stored. Ids are
    /// assigned in insertion order and become visible in id order, so a cursor never skips one.
    /// Ticket events of a suspended connection are stored *held*: kept, counted as pending, but
    /// not pulled nor acknowledged until the connection is live again (connection events, such as
    /// `connection.suspended` itself, are never held).
    ///
    /// # Errors
    /// [`StoreError::ConnectionNotFound`] if an event names an unknown connection (nothing is
    /// stored then).
    async fn insert_events(
        &self,
        events: &[NewEvent],
        now: Millis,
    ) -> Result<InsertReport, StoreError>;

    /// Unacknowledged events after the cursor, in id order (so per-ticket order is kept); first
    /// deliveries are stamped with `now`.
    async fn pull_events(&self, pull: &Pull) -> Result<Vec<InboxEvent>, StoreError>;

    /// Acknowledge every event with id `<= through` (of one connection, or all). Returns how
    /// many were newly acknowledged.
    async fn ack_events_through(
        &self,
        connection_id: Option<&str>,
        through: i64,
        now: Millis,
    ) -> Result<u64, StoreError>;

    /// Acknowledge events by id. Returns how many were newly acknowledged.
    async fn ack_events(&self, ids: &[i64], now: Millis) -> Result<u64, StoreError>;

    /// How many of a connection's events are not yet acknowledged.
    async fn inbox_pending(&self, connection_id: &str) -> Result<u64, StoreError>;

    // -- alerts --------------------------------------------------------------------------

    /// Raise an alert, due for delivery at once.
    async fn raise_alert(&self, new: &NewAlert, now: Millis) -> Result<Alert, StoreError>;

    /// Alerts newest first, of one connection or all, acknowledged ones only if asked.
    async fn list_alerts(
        &self,
        connection_id: Option<&str>,
        include_acked: bool,
        limit: u32,
    ) -> Result<Vec<Alert>, StoreError>;

    /// Acknowledge an alert. Returns false if it does not exist or was acknowledged already.
    async fn ack_alert(&self, id: i64, now: Millis) -> Result<bool, StoreError>;

    /// Alerts due for delivery: not delivered, not acknowledged, `next_attempt_at <= now`;
    /// oldest first.
    async fn alerts_due(&self, now: Millis, limit: u32) -> Result<Vec<Alert>, StoreError>;

    /// Record a delivery attempt.
    ///
    /// # Errors
    /// [`StoreError::AlertNotFound`].
    async fn record_alert_delivery(
        &self,
        id: i64,
        delivery: &AlertDelivery,
        now: Millis,
    ) -> Result<Alert, StoreError>;

    // -- timer leases --------------------------------------------------------------------

    /// Take the lease on a timer if it is free, expired or already `owner`'s, until
    /// `now + ttl`. `None` if another owner holds it.
    async fn acquire_lease(
        &self,
        connection_id: &str,
        name: &str,
        owner: &str,
        now: Millis,
        ttl: Duration,
    ) -> Result<Option<TimerLease>, StoreError>;

    /// Extend `owner`'s lease to `now + ttl`. `None` if the lease is no longer `owner`'s.
    async fn renew_lease(
        &self,
        connection_id: &str,
        name: &str,
        owner: &str,
        now: Millis,
        ttl: Duration,
    ) -> Result<Option<TimerLease>, StoreError>;

    /// Give up `owner`'s lease. Returns whether it was held.
    async fn release_lease(
        &self,
        connection_id: &str,
        name: &str,
        owner: &str,
    ) -> Result<bool, StoreError>;

    /// The lease on a timer as stored (held, lapsed or released: compare `until` with the time
    /// and `owner` with `""`), `None` if it was never taken. A read, for replicas that do not
    /// hold it to learn when it can next be taken instead of trying every tick.
    async fn get_lease(&self, connection_id: &str, name: &str) -> Result<Option<TimerLease>, StoreError>;

    // -- marks -----------------------------------------------------------------------------

    /// A connection's durable mark `name` (the sweep's high-water mark), if one was written.
    async fn get_mark(&self, connection_id: &str, name: &str) -> Result<Option<i64>, StoreError>;

    /// Write mark `name` of a connection. A mark only moves forward: a smaller `value` than the
    /// stored one is ignored (two replicas finishing sweeps out of order cannot move it back).
    /// Returns the stored value.
    async fn put_mark(&self, connection_id: &str, name: &str, value: i64, now: Millis) -> Result<i64, StoreError>;
}

/// A duration as milliseconds, saturating.
pub(crate) fn ms(d: Duration) -> Millis {
    Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_backend() {
        assert_eq!(Location::parse("/tmp/x.db").unwrap(), Location::Sqlite("/tmp/x.db".into()));
        assert_eq!(
            Location::parse("sqlite:///tmp/x.db").unwrap(),
            Location::Sqlite("/tmp/x.db".into())
        );
        assert_eq!(
            Location::parse("sqlite://x.db?mode=rwc").unwrap(),
            Location::Sqlite("x.db".into())
        );
        assert_eq!(Location::parse("sqlite:x.db").unwrap(), Location::Sqlite("x.db".into()));
        assert_eq!(Location::parse("sqlite:///t/x.db?synchronous=normal").unwrap(), Location::SqliteRelaxed("/t/x.db".into()));
        assert_eq!(Location::parse("sqlite:///t/x.db?synchronous=full").unwrap(), Location::Sqlite("/t/x.db".into()));
        let err = Location::parse("sqlite:///t/x.db?cache=shared").unwrap_err().to_string();
        assert!(err.contains("cache=shared") && err.contains("synchronous=full"), "{err}");
        assert!(matches!(Location::parse("postgres://u@h/db").unwrap(), Location::Postgres(_)));
        assert!(matches!(Location::parse("postgresql://u@h/db").unwrap(), Location::Postgres(_)));
        let err = Location::parse("mysql://u:pw@h/db").unwrap_err().to_string();
        assert!(err.contains("unsupported store scheme `mysql`"), "{err}");
        assert!(!err.contains("pw"), "{err}");
        assert!(Location::parse("sqlite::memory:").is_err());
        assert!(Location::parse("  ").is_err());
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact_url("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("/tmp/x.db"), "/tmp/x.db");
    }

    #[test]
    fn secrets_do_not_debug_print() {
        let s = CredentialSecret::OAuth {
            access_token: "tok-A".into(),
            refresh_token: Some("tok-R".into()),
            client: Some(OAuthClientSecret { client_id: "cid".into(), client_secret: "csecret-X".into() }),
        };
        let k = CredentialSecret::ApiKey {
            fields: [("api_token".to_string(), "tok-K".to_string())].into(),
        };
        let out = format!("{s:?} {k:?}");
        assert!(!out.contains("tok-") && !out.contains("csecret"), "{out}");
        assert!(out.contains("api_token"), "{out}");
    }
}
