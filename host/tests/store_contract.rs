//! The store contract: one suite, run unchanged against both backends.
//!
//! Every case in `cases` is an `async fn(Ctx)` that sees only `Arc<dyn Store>` (plus a few raw
//! SQL helpers that both backends answer alike). `contract!` instantiates each case twice:
//! `sqlite::<case>` on a fresh file in a temporary directory, and `postgres::<case>` on a fresh
//! database (`CREATE DATABASE deskgate_test_<random>`, dropped afterwards) on the server at
//! `DESKGATE_TEST_POSTGRES` (default `postgres://postgres@127.0.0.1:5432`).
//!
//! If PostgreSQL cannot be reached, the PostgreSQL half fails and says so; set
//! `DESKGATE_SKIP_POSTGRES=1` to skip it deliberately.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use deskgate::store::{self, Backend, SecretKey, SharedStore, StoreError};

const KEY: [u8; 32] = [0x42; 32];
const PG_DEFAULT: &str = "postgres://postgres@127.0.0.1:5432";

/// What a case gets: the store, and a way to reach the same database again.
#[derive(Clone)]
pub struct Ctx {
    pub store: SharedStore,
    pub url: String,
    pub backend: Backend,
}

impl Ctx {
    /// Open the same database again (another process, or after a restart).
    pub async fn reopen(&self, key: [u8; 32]) -> Result<SharedStore, StoreError> {
        store::open(&self.url, SecretKey::from_bytes(key)).await
    }

    /// Run raw SQL on the database, bypassing the store.
    pub async fn raw_exec(&self, sql: &str) -> Result<u64, String> {
        match self.backend {
            Backend::Sqlite => {
                let conn = rusqlite::Connection::open(&self.url).map_err(|e| e.to_string())?;
                conn.execute(sql, []).map(|n| n as u64).map_err(|e| e.to_string())
            }
            Backend::Postgres => {
                let pool = sqlx::PgPool::connect(&self.url).await.map_err(|e| e.to_string())?;
                let r = sqlx::query(sql).execute(&pool).await.map(|r| r.rows_affected());
                pool.close().await;
                r.map_err(|e| e.to_string())
            }
        }
    }

    /// A BLOB/BYTEA column of the first row of `sql`.
    pub async fn raw_bytes(&self, sql: &str) -> Vec<u8> {
        match self.backend {
            Backend::Sqlite => sqlite_scalar(&self.url, sql),
            Backend::Postgres => {
                let pool = sqlx::PgPool::connect(&self.url).await.unwrap();
                let v = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
                pool.close().await;
                v
            }
        }
    }

    /// An integer from the first row of `sql`.
    pub async fn raw_i64(&self, sql: &str) -> i64 {
        match self.backend {
            Backend::Sqlite => sqlite_scalar(&self.url, sql),
            Backend::Postgres => {
                let pool = sqlx::PgPool::connect(&self.url).await.unwrap();
                let v = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
                pool.close().await;
                v
            }
        }
    }
}

/// The first column of the first row of `sql`, on a connection of its own to the SQLite file.
fn sqlite_scalar<T: rusqlite::types::FromSql>(path: &str, sql: &str) -> T {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

fn unique_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    static N: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(N.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos(),
    );
    format!("{:016x}", h.finish())
}

/// Run `case` on a fresh SQLite file; clean up whether or not it panics.
pub async fn run_sqlite<F, Fut>(case: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let dir = std::env::temp_dir().join(format!("deskgate-store-{}", unique_suffix()));
    // A directory that does not exist yet: the store creates it on first start.
    let path: PathBuf = dir.join("state").join("deskgate.db");
    let url = path.display().to_string();
    let store = store::open(&url, SecretKey::from_bytes(KEY)).await.expect("open SQLite store");
    let ctx = Ctx { store: store.clone(), url, backend: Backend::Sqlite };
    let outcome = tokio::spawn(case(ctx)).await;
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    finish(outcome);
}

/// Run `case` on a fresh PostgreSQL database; drop it whether or not the case panics.
pub async fn run_postgres<F, Fut>(case: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    if std::env::var("DESKGATE_SKIP_POSTGRES").is_ok_and(|v| v == "1") {
        eprintln!("DESKGATE_SKIP_POSTGRES=1: skipping the PostgreSQL half of the store contract");
        return;
    }
    let base = std::env::var("DESKGATE_TEST_POSTGRES").unwrap_or_else(|_| PG_DEFAULT.to_string());
    let base = base.trim_end_matches('/').to_string();
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&format!("{base}/postgres"))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is not reachable at {base} ({e}). The store contract runs against PostgreSQL too: \
                 start it (trust auth for user postgres on 127.0.0.1:5432, or point DESKGATE_TEST_POSTGRES at \
                 another server), or set DESKGATE_SKIP_POSTGRES=1 to skip the PostgreSQL half deliberately."
            )
        });
    let db = format!("deskgate_test_{}", unique_suffix());
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&mut admin)
        .await
        .expect("CREATE DATABASE");
    let url = format!("{base}/{db}");
    let outcome = match store::open(&url, SecretKey::from_bytes(KEY)).await {
        Ok(store) => {
            let ctx = Ctx { store: store.clone(), url, backend: Backend::Postgres };
            let outcome = tokio::spawn(case(ctx)).await;
            store.close().await;
            outcome
        }
        Err(e) => tokio::spawn(async move { panic!("open PostgreSQL store: {e}") }).await,
    };
    sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .expect("DROP DATABASE");
    sqlx::Connection::close(admin).await.ok();
    finish(outcome);
}

fn finish(outcome: Result<(), tokio::task::JoinError>) {
    if let Err(e) = outcome {
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
        panic!("case did not finish: {e}");
    }
}

macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    crate::run_sqlite(crate::cases::$case).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    crate::run_postgres(crate::cases::$case).await;
                }
            )*
        }
    };
}

contract! {
    schema_is_migrated_and_versioned,
    newer_schema_is_refused,
    connections_round_trip,
    deleting_a_connection_erases_its_credentials,
    credentials_are_encrypted_at_rest,
    wrong_key_is_refused_with_a_clear_message,
    credential_writes_compare_and_swap_on_version,
    refresh_marker_is_single_flight_and_survives_a_crash,
    enqueue_is_idempotent,
    app_idempotency_key_is_unique_per_connection,
    concurrent_enqueues_create_one_entry,
    enqueue_needs_an_existing_connection,
    claims_are_disjoint_under_concurrency,
    expired_lease_is_reclaimable,
    claim_respects_due_time_connection_state_and_filter,
    outbox_transitions_append_to_the_write_log,
    inbox_dedupes_events,
    inbox_cursor_ack_and_pending_counts,
    inbox_cursor_never_skips_under_concurrent_inserts,
    alerts_lifecycle,
    timer_leases_run_once_per_cluster,
    marks_only_move_forward,
    a_suspended_connections_ticket_events_are_held_until_it_is_live,
    data_survives_close_and_reopen,
    webhook_secrets_round_trip_overwrite_and_clear,
    deleting_a_connection_erases_its_webhook_secret,
    webhook_secrets_are_sealed_at_rest_and_bound_to_their_row,
}

/// Backend-specific checks that the contract cannot express.
mod sqlite_only {
    use super::*;

    #[tokio::test]
    async fn url_forms_and_wal_journal() {
        let dir = std::env::temp_dir().join(format!("deskgate-store-{}", unique_suffix()));
        let path = dir.join("a.db");
        let s = store::open(&format!("sqlite://{}", path.display()), SecretKey::from_bytes(KEY))
            .await
            .unwrap();
        s.create_connection(&store::NewConnection::new("c1", "zendesk", "C1"), 1).await.unwrap();
        s.close().await;
        assert!(path.exists(), "the file is created on first start");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "the store file is private to its owner");
        }
        // The same file by plain path.
        let s = store::open(&path.display().to_string(), SecretKey::from_bytes(KEY)).await.unwrap();
        assert!(s.get_connection("c1").await.unwrap().is_some());
        s.close().await;
        let mode: String = sqlite_scalar(&path.display().to_string(), "PRAGMA journal_mode");
        assert_eq!(mode, "wal");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn bad_urls_are_explained() {
        let err = store::open("mysql://u:pw@h/db", SecretKey::from_bytes(KEY))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("unsupported store scheme `mysql`") && !err.contains("pw"), "{err}");
        let err = store::open("sqlite::memory:", SecretKey::from_bytes(KEY))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("must be a file"), "{err}");
    }

    #[tokio::test]
    async fn unreachable_postgres_is_an_open_error() {
        let err =
            store::open("postgres://postgres:hunter2@127.0.0.1:1/nope", SecretKey::from_bytes(KEY))
                .await
                .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, StoreError::Open { .. }), "{text}");
        assert!(text.contains("127.0.0.1:1") && !text.contains("hunter2"), "{text}");
        eprintln!("{text}");
    }
}

#[allow(clippy::too_many_lines)]
mod cases {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Arc;
    use std::time::Duration;

    use deskgate::store::*;
    use serde_json::json;

    use super::{Ctx, KEY};
    use deskgate::clock::Millis;

    const T0: Millis = 1_700_000_000_000;
    const MIN: Millis = 60_000;
    const WINDOW: Duration = Duration::from_secs(600);
    const LEASE: Duration = Duration::from_secs(30);

    async fn live(s: &SharedStore, id: &str) {
        let mut c = NewConnection::new(id, "zendesk", format!("Conn {id}"));
        c.settings = json!({"subdomain": id});
        s.create_connection(&c, T0).await.unwrap();
        s.set_connection_state(id, &ConnectionState::Live, T0).await.unwrap();
    }

    fn action(conn: &str, ticket: &str, text: &str) -> NewAction {
        NewAction {
            connection_id: conn.into(),
            ticket_id: ticket.into(),
            action: json!({"op": "reply", "public": true, "text": text}),
            idempotency_key: format!("{conn}/{ticket}/{text}"),
            app_key: None,
            not_before: T0,
        }
    }

    fn claim(owner: &str, now: Millis, limit: u32) -> Claim {
        Claim { owner: owner.into(), now, lease_for: LEASE, limit, connection_id: None }
    }

    fn oauth(access: &str, refresh: &str) -> CredentialSecret {
        CredentialSecret::OAuth { access_token: access.into(), refresh_token: Some(refresh.into()), client: None }
    }

    fn event(conn: &str, ticket: &str, key: &str) -> NewEvent {
        NewEvent {
            connection_id: conn.into(),
            platform: "zendesk".into(),
            ticket_id: ticket.into(),
            kind: "ticket.updated".into(),
            ticket: json!({"id": ticket, "key": key}),
            dedupe_key: key.into(),
        }
    }

    /// Send one entry to a terminal outcome as `owner`.
    async fn send_and_settle(
        s: &SharedStore,
        id: i64,
        owner: &str,
        now: Millis,
        settle: Settle,
    ) -> OutboxEntry {
        let got = s.claim_actions(&claim(owner, now, 100)).await.unwrap();
        assert!(got.iter().any(|e| e.id == id), "entry {id} should be claimable");
        s.mark_sent(id, owner, now).await.unwrap();
        s.settle_action(id, owner, &settle, now).await.unwrap()
    }

    pub async fn schema_is_migrated_and_versioned(c: Ctx) {
        let expected = match c.backend {
            Backend::Sqlite => SQLITE_SCHEMA_VERSION,
            Backend::Postgres => POSTGRES_SCHEMA_VERSION,
        };
        assert_eq!(c.store.backend(), c.backend);
        assert_eq!(c.store.schema_version().await.unwrap(), expected);
        assert_eq!(c.raw_i64("SELECT COUNT(*) FROM deskgate_schema").await, expected);
        assert_eq!(c.raw_i64("SELECT MAX(version) FROM deskgate_schema").await, expected);
        // Opening again applies nothing twice.
        let again = c.reopen(KEY).await.unwrap();
        assert_eq!(again.schema_version().await.unwrap(), expected);
        again.close().await;
        assert_eq!(c.raw_i64("SELECT COUNT(*) FROM deskgate_schema").await, expected);
    }

    pub async fn newer_schema_is_refused(c: Ctx) {
        let current = c.store.schema_version().await.unwrap();
        c.raw_exec(&format!(
            "INSERT INTO deskgate_schema (version, name, checksum, applied_at) VALUES ({}, 'from_the_future', 'x', 0)",
            current + 1
        ))
        .await
        .unwrap();
        let err = c.reopen(KEY).await.unwrap_err();
        let text = err.to_string();
        match err {
            StoreError::SchemaTooNew { found, supported } => {
                assert_eq!((found, supported), (current + 1, current));
            }
            other => panic!("expected SchemaTooNew, got {other:?}"),
        }
        assert!(text.contains("newer than this deskgate understands"), "{text}");
    }

    pub async fn connections_round_trip(c: Ctx) {
        let s = &c.store;
        let mut new = NewConnection::new("acme", "zendesk", "Acme");
        new.plan = Some("enterprise".into());
        new.settings = json!({"subdomain": "acme", "nested": {"a": [1, 2]}});
        new.admin_contact_url = Some("mailto:ops@acme.test".into());
        let made = s.create_connection(&new, T0).await.unwrap();
        assert_eq!(made.state, ConnectionState::PendingProbe);
        assert_eq!((made.created_at, made.updated_at), (T0, T0));
        assert_eq!(made.settings, new.settings);
        assert_eq!(made.probe_report, None);
        assert!(
            matches!(s.create_connection(&new, T0).await, Err(StoreError::ConnectionExists(id)) if id == "acme")
        );
        assert_eq!(s.get_connection("acme").await.unwrap(), Some(made.clone()));
        assert_eq!(s.get_connection("nope").await.unwrap(), None);

        let report = json!({"read": "ok", "assign": {"missing": "agent role"}});
        let c1 = s.set_probe_report("acme", &report, T0 + 1).await.unwrap();
        assert_eq!(c1.probe_report, Some(report));
        let live = s.set_connection_state("acme", &ConnectionState::Live, T0 + 2).await.unwrap();
        assert_eq!((live.state.clone(), live.updated_at), (ConnectionState::Live, T0 + 2));
        let suspended = ConnectionState::Suspended {
            reason: "token revoked: reconnect".into(),
            kind: "reauth".into(),
        };
        assert_eq!(
            s.set_connection_state("acme", &suspended, T0 + 3).await.unwrap().state,
            suspended
        );
        assert_eq!(s.get_connection("acme").await.unwrap().unwrap().state, suspended);

        let patch = ConnectionPatch {
            display_name: Some("Acme Inc".into()),
            plan: Some(None),
            settings: Some(json!({"subdomain": "acme2"})),
            admin_contact_url: None,
        };
        let patched = s.update_connection("acme", &patch, T0 + 4).await.unwrap();
        assert_eq!(patched.display_name, "Acme Inc");
        assert_eq!(patched.plan, None);
        assert_eq!(patched.settings, json!({"subdomain": "acme2"}));
        assert_eq!(patched.admin_contact_url.as_deref(), Some("mailto:ops@acme.test"));
        assert_eq!(patched.state, suspended, "a patch leaves the state alone");

        s.create_connection(&NewConnection::new("beta", "freshdesk", "Beta"), T0).await.unwrap();
        s.set_connection_state("beta", &ConnectionState::Deleted, T0 + 5).await.unwrap();
        let ids = |v: Vec<Connection>| v.into_iter().map(|c| c.id).collect::<Vec<_>>();
        assert_eq!(ids(s.list_connections(false).await.unwrap()), ["acme"]);
        assert_eq!(ids(s.list_connections(true).await.unwrap()), ["acme", "beta"]);

        for r in [
            s.update_connection("nope", &patch, T0).await.map(|_| ()),
            s.set_connection_state("nope", &ConnectionState::Live, T0).await.map(|_| ()),
            s.set_probe_report("nope", &json!({}), T0).await.map(|_| ()),
        ] {
            assert!(matches!(r, Err(StoreError::ConnectionNotFound(id)) if id == "nope"));
        }
    }

    pub async fn deleting_a_connection_erases_its_credentials(c: Ctx) {
        let s = &c.store;
        live(s, "gone").await;
        s.put_credential("gone", &oauth("a", "r"), Some(T0 + MIN), Expect::Absent, T0)
            .await
            .unwrap();
        s.set_connection_state("gone", &ConnectionState::Deleted, T0 + 1).await.unwrap();
        assert_eq!(s.get_credential("gone").await.unwrap(), None);
        assert_eq!(c.raw_i64("SELECT COUNT(*) FROM credentials").await, 0);
        let again = s.put_credential("gone", &oauth("a", "r"), None, Expect::Any, T0 + 2).await;
        assert!(matches!(again, Err(StoreError::ConnectionNotFound(_))), "{again:?}");
    }

    pub async fn credentials_are_encrypted_at_rest(c: Ctx) {
        let s = &c.store;
        live(s, "zd").await;
        assert_eq!(s.get_credential("zd").await.unwrap(), None);
        let api = CredentialSecret::ApiKey {
            fields: BTreeMap::from([
                ("email".to_string(), "agent@acme.test".to_string()),
                ("api_token".to_string(), "PLAINTEXT-API-TOKEN-123".to_string()),
            ]),
        };
        let v1 = s.put_credential("zd", &api, None, Expect::Absent, T0).await.unwrap();
        assert_eq!((v1.version, v1.expires_at, v1.updated_at), (1, None, T0));
        assert_eq!(v1.secret, api);
        assert_eq!(v1.refresh_in_flight, None);
        assert_eq!(s.get_credential("zd").await.unwrap(), Some(v1.clone()));

        let sealed_api =
            c.raw_bytes("SELECT sealed FROM credentials WHERE connection_id = 'zd'").await;
        assert!(
            !contains(&sealed_api, b"PLAINTEXT-API-TOKEN-123"),
            "ciphertext must not contain the token"
        );
        assert!(
            !contains(&sealed_api, b"agent@acme.test"),
            "ciphertext must not contain the email"
        );

        let pair = oauth("PLAINTEXT-ACCESS-abc", "PLAINTEXT-REFRESH-xyz");
        let v2 = s
            .put_credential("zd", &pair, Some(T0 + 60 * MIN), Expect::Version(1), T0 + 1)
            .await
            .unwrap();
        assert_eq!((v2.version, v2.expires_at), (2, Some(T0 + 60 * MIN)));
        assert_eq!(s.get_credential("zd").await.unwrap().unwrap().secret, pair);
        let sealed = c.raw_bytes("SELECT sealed FROM credentials WHERE connection_id = 'zd'").await;
        for needle in [&b"PLAINTEXT-ACCESS-abc"[..], b"PLAINTEXT-REFRESH-xyz", b"access_token"] {
            assert!(
                !contains(&sealed, needle),
                "ciphertext must not contain {}",
                String::from_utf8_lossy(needle)
            );
        }
        // The same secret written twice never gives the same bytes (a fresh nonce per write).
        s.put_credential("zd", &pair, Some(T0 + 60 * MIN), Expect::Version(2), T0 + 2)
            .await
            .unwrap();
        let sealed_again =
            c.raw_bytes("SELECT sealed FROM credentials WHERE connection_id = 'zd'").await;
        assert_ne!(sealed, sealed_again);
        // The scheme is kept in clear for operators; nothing else is.
        assert_eq!(c.raw_i64("SELECT COUNT(*) FROM credentials WHERE scheme = 'oauth'").await, 1);
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    pub async fn wrong_key_is_refused_with_a_clear_message(c: Ctx) {
        let s = &c.store;
        live(s, "zd").await;
        s.put_credential("zd", &oauth("a", "r"), None, Expect::Absent, T0).await.unwrap();
        let err = c.reopen([0x13; 32]).await.unwrap_err();
        assert!(matches!(err, StoreError::WrongSecretKey), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("DESKGATE_SECRET_KEY does not match the key the store was written with"),
            "{text}"
        );
        // The right key still works.
        let ok = c.reopen(KEY).await.unwrap();
        assert_eq!(ok.get_credential("zd").await.unwrap().unwrap().secret, oauth("a", "r"));
        ok.close().await;
    }

    pub async fn webhook_secrets_round_trip_overwrite_and_clear(c: Ctx) {
        let s = &c.store;
        live(s, "zd").await;
        assert_eq!(s.get_webhook_secret("zd").await.unwrap(), None, "none until one is set");
        let set = s.set_webhook_secret("zd", Some(b"whsec-one"), false, T0).await.unwrap().expect("stored");
        assert_eq!(
            (set.connection_id.as_str(), set.secret.as_deref(), set.allow_unsigned, set.updated_at),
            ("zd", Some(&b"whsec-one"[..]), false, T0)
        );
        assert_eq!(s.get_webhook_secret("zd").await.unwrap(), Some(set));
        // A rotation replaces the secret and the flag.
        s.set_webhook_secret("zd", Some(b"whsec-two"), true, T0 + 1).await.unwrap();
        let got = s.get_webhook_secret("zd").await.unwrap().unwrap();
        assert_eq!((got.secret.as_deref(), got.allow_unsigned, got.updated_at), (Some(&b"whsec-two"[..]), true, T0 + 1));
        // Unsigned only: no secret, but a row saying so.
        s.set_webhook_secret("zd", None, true, T0 + 2).await.unwrap();
        let got = s.get_webhook_secret("zd").await.unwrap().unwrap();
        assert_eq!((got.secret, got.allow_unsigned), (None, true));
        // Neither: cleared.
        assert_eq!(s.set_webhook_secret("zd", None, false, T0 + 3).await.unwrap(), None);
        assert_eq!(s.get_webhook_secret("zd").await.unwrap(), None);
        assert_eq!(c.raw_i64("SELECT COUNT(*) FROM webhook_secrets").await, 0);
        // Per connection: another connection's secret is its own.
        live(s, "fd").await;
        s.set_webhook_secret("zd", Some(b"zd-secret"), false, T0 + 4).await.unwrap();
        s.set_webhook_secret("fd", Some(b"fd-secret"), false, T0 + 4).await.unwrap();
        assert_eq!(s.get_webhook_secret("zd").await.unwrap().unwrap().secret.as_deref(), Some(&b"zd-secret"[..]));
        assert_eq!(s.get_webhook_secret("fd").await.unwrap().unwrap().secret.as_deref(), Some(&b"fd-secret"[..]));
        // Unknown connections cannot hold one.
        let r = s.set_webhook_secret("nope", Some(b"x"), false, T0).await;
        assert!(matches!(r, Err(StoreError::ConnectionNotFound(ref id)) if id == "nope"), "{r:?}");
        // The secret never shows in Debug.
        let dbg = format!("{:?}", s.get_webhook_secret("zd").await.unwrap());
        assert!(!dbg.contains("zd-secret") && dbg.contains("redacted"), "{dbg}");
        // It survives a restart.
        let again = c.reopen(KEY).await.unwrap();
        assert_eq!(again.get_webhook_secret("zd").await.unwrap().unwrap().secret.as_deref(), Some(&b"zd-secret"[..]));
        again.close().await;
    }

    pub async fn deleting_a_connection_erases_its_webhook_secret(c: Ctx) {
        let s = &c.store;
        live(s, "gone").await;
        live(s, "kept").await;
        s.set_webhook_secret("gone", Some(b"whsec-gone"), true, T0).await.unwrap();
        s.set_webhook_secret("kept", Some(b"whsec-kept"), false, T0).await.unwrap();
        s.set_connection_state("gone", &ConnectionState::Deleted, T0 + 1).await.unwrap();
        assert_eq!(s.get_webhook_secret("gone").await.unwrap(), None);
        assert_eq!(c.raw_i64("SELECT COUNT(*) FROM webhook_secrets WHERE connection_id = 'gone'").await, 0);
        assert!(s.get_webhook_secret("kept").await.unwrap().is_some(), "only the deleted connection's");
        let again = s.set_webhook_secret("gone", Some(b"whsec-again"), false, T0 + 2).await;
        assert!(matches!(again, Err(StoreError::ConnectionNotFound(_))), "{again:?}");
    }

    pub async fn webhook_secrets_are_sealed_at_rest_and_bound_to_their_row(c: Ctx) {
        const PLAIN: &[u8] = b"PLAINTEXT-WEBHOOK-SECRET-789";
        let s = &c.store;
        live(s, "zd").await;
        live(s, "other").await;
        s.set_webhook_secret("zd", Some(PLAIN), false, T0).await.unwrap();
        let sealed = c.raw_bytes("SELECT sealed FROM webhook_secrets WHERE connection_id = 'zd'").await;
        assert!(!contains(&sealed, PLAIN), "ciphertext must not contain the secret");
        assert!(!contains(&sealed, b"PLAINTEXT"), "nor any part of it");
        // A fresh nonce per write: the same secret twice never gives the same bytes.
        s.set_webhook_secret("zd", Some(PLAIN), false, T0 + 1).await.unwrap();
        assert_ne!(c.raw_bytes("SELECT sealed FROM webhook_secrets WHERE connection_id = 'zd'").await, sealed);

        // Another key: refused when the store opens, with the message that names the fix.
        let err = c.reopen([0x13; 32]).await.unwrap_err();
        assert!(matches!(err, StoreError::WrongSecretKey), "{err:?}");
        assert!(err.to_string().contains("DESKGATE_SECRET_KEY does not match"), "{err}");

        // A sealed blob moved to another connection's row does not decrypt there...
        s.set_webhook_secret("other", Some(b"other-secret"), false, T0).await.unwrap();
        c.raw_exec(
            "UPDATE webhook_secrets SET sealed = (SELECT sealed FROM webhook_secrets WHERE connection_id = 'zd') \
             WHERE connection_id = 'other'",
        )
        .await
        .unwrap();
        let err = s.get_webhook_secret("other").await.unwrap_err();
        assert!(matches!(err, StoreError::WrongSecretKey), "{err:?}");
        // ...nor does a credential blob moved into a webhook secret's place, or the reverse.
        s.put_credential("zd", &oauth("a", "r"), None, Expect::Absent, T0).await.unwrap();
        c.raw_exec(
            "UPDATE webhook_secrets SET sealed = (SELECT sealed FROM credentials WHERE connection_id = 'zd') \
             WHERE connection_id = 'zd'",
        )
        .await
        .unwrap();
        let err = s.get_webhook_secret("zd").await.unwrap_err();
        assert!(matches!(err, StoreError::WrongSecretKey), "{err:?}");
        s.set_webhook_secret("zd", Some(PLAIN), false, T0 + 2).await.unwrap();
        c.raw_exec(
            "UPDATE credentials SET sealed = (SELECT sealed FROM webhook_secrets WHERE connection_id = 'zd') \
             WHERE connection_id = 'zd'",
        )
        .await
        .unwrap();
        let err = s.get_credential("zd").await.unwrap_err();
        assert!(matches!(err, StoreError::WrongSecretKey), "{err:?}");
        // The untouched row still reads.
        assert_eq!(s.get_webhook_secret("zd").await.unwrap().unwrap().secret.as_deref(), Some(PLAIN));
    }

    pub async fn credential_writes_compare_and_swap_on_version(c: Ctx) {
        let s = &c.store;
        live(s, "zd").await;
        s.put_credential("zd", &oauth("a1", "r1"), None, Expect::Absent, T0).await.unwrap();
        let dup = s.put_credential("zd", &oauth("a1", "r1"), None, Expect::Absent, T0).await;
        assert!(matches!(dup, Err(StoreError::VersionConflict { .. })), "{dup:?}");
        let v2 = s
            .put_credential("zd", &oauth("a2", "r2"), None, Expect::Version(1), T0 + 1)
            .await
            .unwrap();
        assert_eq!(v2.version, 2);
        match s.put_credential("zd", &oauth("late", "late"), None, Expect::Version(1), T0 + 2).await
        {
            Err(StoreError::VersionConflict { expected, actual, .. }) => {
                assert_eq!((expected.as_str(), actual.as_str()), ("version 1", "version 2"));
            }
            other => panic!("expected VersionConflict, got {other:?}"),
        }
        assert_eq!(s.get_credential("zd").await.unwrap().unwrap().secret, oauth("a2", "r2"));

        // Two replicas rotating the same version at once: exactly one wins.
        let mut tasks = Vec::new();
        for i in 0..8 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                s.put_credential(
                    "zd",
                    &oauth(&format!("a-{i}"), "r"),
                    None,
                    Expect::Version(2),
                    T0 + 3,
                )
                .await
            }));
        }
        let mut winners = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                Ok(c) => winners.push(c),
                Err(StoreError::VersionConflict { .. }) => {}
                Err(e) => panic!("unexpected error {e:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "exactly one concurrent CAS may win");
        let now = s.get_credential("zd").await.unwrap().unwrap();
        assert_eq!((now.version, &now.secret), (3, &winners[0].secret));
        // An operator replacing credentials by hand does not need the version.
        assert_eq!(
            s.put_credential("zd", &oauth("op", "op"), None, Expect::Any, T0 + 4)
                .await
                .unwrap()
                .version,
            4
        );
        assert!(matches!(
            s.put_credential("nope", &oauth("a", "r"), None, Expect::Any, T0).await,
            Err(StoreError::ConnectionNotFound(_))
        ));
    }

    pub async fn refresh_marker_is_single_flight_and_survives_a_crash(c: Ctx) {
        let s = &c.store;
        live(s, "ic").await;
        s.put_credential("ic", &oauth("a1", "r1"), Some(T0 + 60 * MIN), Expect::Absent, T0)
            .await
            .unwrap();
        let rc = |owner: &str, version: i64, now: Millis| RefreshClaim {
            owner: owner.into(),
            expected_version: version,
            now,
            stale_before: now - 5 * MIN,
        };
        let marked = s.begin_refresh("ic", &rc("replica-a", 1, T0 + MIN)).await.unwrap();
        assert_eq!(
            marked.refresh_in_flight,
            Some(RefreshMarker { owner: "replica-a".into(), started_at: T0 + MIN })
        );
        assert_eq!(marked.version, 1, "marking does not bump the version");
        match s.begin_refresh("ic", &rc("replica-b", 1, T0 + 2 * MIN)).await {
            Err(StoreError::RefreshInFlight { owner, since, .. }) => {
                assert_eq!((owner.as_str(), since), ("replica-a", T0 + MIN))
            }
            other => panic!("expected RefreshInFlight, got {other:?}"),
        }
        // The owner may mark again (renew).
        s.begin_refresh("ic", &rc("replica-a", 1, T0 + 2 * MIN)).await.unwrap();

        // "Crash": a restarted process sees the marker.
        let after = c.reopen(KEY).await.unwrap();
        let seen = after.get_credential("ic").await.unwrap().unwrap();
        assert_eq!(seen.refresh_in_flight.as_ref().map(|m| m.owner.as_str()), Some("replica-a"));
        after.close().await;

        // Once stale, another owner takes over, and its rotated pair clears the marker.
        s.begin_refresh("ic", &rc("replica-b", 1, T0 + 8 * MIN)).await.unwrap();
        let v2 = s
            .put_credential(
                "ic",
                &oauth("a2", "r2"),
                Some(T0 + 70 * MIN),
                Expect::Version(1),
                T0 + 8 * MIN,
            )
            .await
            .unwrap();
        assert_eq!((v2.version, v2.refresh_in_flight), (2, None));
        // The slow refresher's view is out of date: it must use the stored token.
        assert!(matches!(
            s.begin_refresh("ic", &rc("replica-a", 1, T0 + 9 * MIN)).await,
            Err(StoreError::VersionConflict { .. })
        ));
        // end_refresh clears only the owner's marker.
        s.begin_refresh("ic", &rc("replica-a", 2, T0 + 10 * MIN)).await.unwrap();
        assert!(!s.end_refresh("ic", "replica-b").await.unwrap());
        assert!(s.end_refresh("ic", "replica-a").await.unwrap());
        assert_eq!(s.get_credential("ic").await.unwrap().unwrap().refresh_in_flight, None);
        assert!(!s.end_refresh("ic", "replica-a").await.unwrap());
        assert!(matches!(
            s.begin_refresh("nope", &rc("a", 1, T0)).await,
            Err(StoreError::CredentialNotFound(_))
        ));
    }

    pub async fn enqueue_is_idempotent(c: Ctx) {
        let s = &c.store;
        live(s, "zd").await;
        let a = action("zd", "T1", "hello");
        let first = s.enqueue(&a, T0, WINDOW).await.unwrap();
        assert!(first.is_created());
        let e = first.entry().clone();
        assert_eq!(
            (e.state.clone(), e.attempts, e.lease.clone(), e.result.clone()),
            (OutboxState::Pending, 0, None, None)
        );
        assert_eq!((e.ticket_id.as_str(), &e.action, e.not_before), ("T1", &a.action, T0));

        // In flight: the same entry comes back, in every in-flight state.
        assert_eq!(s.enqueue(&a, T0 + 1, WINDOW).await.unwrap(), Enqueued::Existing(e.clone()));
        s.claim_actions(&claim("w1", T0, 10)).await.unwrap();
        s.mark_sent(e.id, "w1", T0).await.unwrap();
        assert_eq!(s.enqueue(&a, T0 + 2, WINDOW).await.unwrap().entry().id, e.id);
        s.settle_action(
            e.id,
            "w1",
            &Settle::Ambiguous { detail: "timeout".into(), not_before: T0 },
            T0,
        )
        .await
        .unwrap();
        assert_eq!(s.enqueue(&a, T0 + 3, WINDOW).await.unwrap().entry().id, e.id);

        // Confirmed within the window: the caller gets the original result.
        s.claim_actions(&claim("w1", T0 + 4, 10)).await.unwrap();
        let result = json!({"comment_id": 991});
        s.settle_action(
            e.id,
            "w1",
            &Settle::Confirmed { result: result.clone(), detail: "read back".into() },
            T0 + 5,
        )
        .await
        .unwrap();
        let again = s.enqueue(&a, T0 + 5 + 9 * MIN, WINDOW).await.unwrap();
        assert!(!again.is_created());
        assert_eq!((again.entry().id, again.entry().result.clone()), (e.id, Some(result)));
        assert_eq!(again.entry().state, OutboxState::Confirmed);

        // After the window, the same action is a new one.
        let later = s.enqueue(&a, T0 + 5 + 11 * MIN, WINDOW).await.unwrap();
        assert!(later.is_created());
        assert_ne!(later.entry().id, e.id);

        // A failed entry does not block a retry by the app.
        let b = action("zd", "T2", "bye");
        let fb = s.enqueue(&b, T0, WINDOW).await.unwrap().entry().clone();
        s.claim_actions(&Claim {
            connection_id: Some("zd".into()),
            ..claim("w2", T0 + 20 * MIN, 10)
        })
        .await
        .unwrap();
        s.settle_action(
            fb.id,
            "w2",
            &Settle::Failed { why: "ticket closed".into(), result: None },
            T0 + 20 * MIN,
        )
        .await
        .unwrap();
        let retry = s.enqueue(&b, T0 + 21 * MIN, WINDOW).await.unwrap();
        assert!(retry.is_created());

        // A diverged entry is returned like a confirmed one: resending would double the reply.
        let d = action("zd", "T3", "reply+close");
        let de = s.enqueue(&d, T0, WINDOW).await.unwrap().entry().id;
        send_and_settle(
            s,
            de,
            "w3",
            T0 + 30 * MIN,
            Settle::Diverged { detail: "status stayed open".into(), result: json!({}) },
        )
        .await;
        assert_eq!(
            s.enqueue(&d, T0 + 31 * MIN, WINDOW).await.unwrap(),
            Enqueued::Existing(s.get_action(de).await.unwrap().unwrap())
        );
    }

    pub async fn app_idempotency_key_is_unique_per_connection(c: Ctx) {
        let s = &c.store;
        live(s, "zd").await;
        live(s, "fd").await;
        let mut a = action("zd", "T1", "hello");
        a.app_key = Some("app-key-1".into());
        let e = s.enqueue(&a, T0, WINDOW).await.unwrap();
        assert!(e.is_created());
        assert_eq!(e.entry().app_key.as_deref(), Some("app-key-1"));
        assert_eq!(s.enqueue(&a, T0 + 1, WINDOW).await.unwrap().entry().id, e.entry().id);

        let mut other = action("zd", "T1", "different text");
        other.app_key = Some("app-key-1".into());
        match s.enqueue(&other, T0 + 2, WINDOW).await {
            Err(StoreError::IdempotencyKeyReused { key, existing, .. }) => {
                assert_eq!((key.as_str(), existing), ("app-key-1", e.entry().id));
            }
            r => panic!("expected IdempotencyKeyReused, got {r:?}"),
        }
        // Unique per connection only.
        let mut elsewhere = action("fd", "T1", "different text");
        elsewhere.app_key = Some("app-key-1".into());
        assert!(s.enqueue(&elsewhere, T0, WINDOW).await.unwrap().is_created());

        assert_eq!(
            s.find_action_by_app_key("zd", "app-key-1").await.unwrap().map(|e| e.id),
            Some(e.entry().id)
        );
        assert_eq!(s.find_action_by_app_key("zd", "app-key-2").await.unwrap(), None);

        // Long after the window, the app's key still names the same entry and its result.
        send_and_settle(
            s,
            e.entry().id,
            "w",
            T0,
            Settle::Confirmed { result: json!({"ok": 1}), detail: String::new() },
        )
        .await;
        let late = s.enqueue(&a, T0 + 1000 * MIN, WINDOW).await.unwrap();
        assert_eq!(
            (late.is_created(), late.entry().result.clone()),
            (false, Some(json!({"ok": 1})))
        );
    }

    pub async fn concurrent_enqueues_create_one_entry(c: Ctx) {
        let s = &c.store;
        live(s, "zd").await;
        let mut tasks = Vec::new();
        for i in 0..16 {
            let s = s.clone();
            let mut a = action("zd", "T1", "same action");
            if i % 2 == 0 {
                a.app_key = Some(format!("k{i}"));
            }
            tasks.push(tokio::spawn(async move { s.enqueue(&a, T0, WINDOW).await.unwrap() }));
        }
        let mut created = 0;
        let mut ids = BTreeSet::new();
        for t in tasks {
            let r = t.await.unwrap();
            created += usize::from(r.is_created());
            ids.insert(r.entry().id);
        }
        assert_eq!(
            (created, ids.len()),
            (1, 1),
            "one entry for one action, however many replicas ask"
        );
        let all = s.list_actions(&ActionQuery::default()).await.unwrap();
        assert_eq!(all.len(), 1);
    }

    pub async fn enqueue_needs_an_existing_connection(c: Ctx) {
        let s = &c.store;
        let r = s.enqueue(&action("ghost", "T1", "x"), T0, WINDOW).await;
        assert!(matches!(r, Err(StoreError::ConnectionNotFound(ref id)) if id == "ghost"), "{r:?}");
        live(s, "gone").await;
        s.set_connection_state("gone", &ConnectionState::Deleted, T0).await.unwrap();
        let r = s.enqueue(&action("gone", "T1", "x"), T0, WINDOW).await;
        assert!(matches!(r, Err(StoreError::ConnectionNotFound(_))), "{r:?}");
        // A suspended connection still accepts work: it waits durably.
        live(s, "paused").await;
        let st = ConnectionState::Suspended { reason: "401".into(), kind: "reauth".into() };
        s.set_connection_state("paused", &st, T0).await.unwrap();
        assert!(s.enqueue(&action("paused", "T1", "x"), T0, WINDOW).await.unwrap().is_created());
    }

    pub async fn claims_are_disjoint_under_concurrency(c: Ctx) {
        let s = &c.store;
        live(s, "zd").await;
        live(s, "fd").await;
        for i in 0..60 {
            let conn = if i % 2 == 0 { "zd" } else { "fd" };
            s.enqueue(&action(conn, &format!("T{i}"), "x"), T0, WINDOW).await.unwrap();
        }
        let mut tasks = Vec::new();
        for w in 0..4 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let got =
                        s.claim_actions(&claim(&format!("worker-{w}"), T0 + 1, 7)).await.unwrap();
                    if got.is_empty() {
                        break;
                    }
                    assert!(got.len() <= 7);
                    for e in &got {
                        assert_eq!(
                            e.lease.as_ref().map(|l| (l.owner.clone(), l.until)),
                            Some((format!("worker-{w}"), T0 + 1 + 30_000))
                        );
                    }
                    mine.extend(got.into_iter().map(|e| e.id));
                    tokio::task::yield_now().await;
                }
                mine
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        let unique: BTreeSet<_> = all.iter().copied().collect();
        assert_eq!(all.len(), 60, "every entry claimed once");
        assert_eq!(unique.len(), 60, "no entry claimed twice");
    }

    pub async fn expired_lease_is_reclaimable(c: Ctx) {
        let s = &c.store;
        live(s, "zd").await;
        let id = s.enqueue(&action("zd", "T1", "x"), T0, WINDOW).await.unwrap().entry().id;
        assert_eq!(s.claim_actions(&claim("a", T0, 10)).await.unwrap().len(), 1);
        assert!(
            s.claim_actions(&claim("b", T0 + 29_999, 10)).await.unwrap().is_empty(),
            "lease still held"
        );
        s.mark_sent(id, "a", T0 + 1).await.unwrap();
        // Worker a dies after marking the send; its lease lapses and b takes over.
        let got = s.claim_actions(&claim("b", T0 + 30_000, 10)).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].state,
            OutboxState::Sent,
            "a reclaimed `sent` entry tells b to read back first"
        );
        assert_eq!(got[0].attempts, 1);
        // a comes back to life: fenced off.
        for r in [
            s.mark_sent(id, "a", T0 + 30_001).await,
            s.settle_action(
                id,
                "a",
                &Settle::Confirmed { result: json!({}), detail: String::new() },
                T0 + 30_001,
            )
            .await,
        ] {
            assert!(
                matches!(r, Err(StoreError::LeaseLost { entry, ref owner }) if entry == id && owner == "a"),
                "{r:?}"
            );
        }
        let done = s
            .settle_action(
                id,
                "b",
                &Settle::Confirmed { result: json!({"found": true}), detail: "read back".into() },
                T0 + 30_002,
            )
            .await
            .unwrap();
        assert_eq!((done.state, done.lease), (OutboxState::Confirmed, None));
        assert!(matches!(
            s.mark_sent(999_999, "b", T0).await,
            Err(StoreError::ActionNotFound(999_999))
        ));
        // A lapsed lease may not start a send, even if nobody has claimed the entry yet...
        let id3 = s.enqueue(&action("zd", "T3", "z"), T0, WINDOW).await.unwrap().entry().id;
        s.claim_actions(&claim("e", T0 + 2 * MIN, 10)).await.unwrap();
        let late = s.mark_sent(id3, "e", T0 + 2 * MIN + 30_000).await;
        assert!(
            matches!(late, Err(StoreError::LeaseExpired { entry, .. }) if entry == id3),
            "{late:?}"
        );
        // ...but its outcome may still be recorded.
        let retry = Settle::Retry { detail: "lease lapsed".into(), not_before: T0 };
        s.settle_action(id3, "e", &retry, T0 + 3 * MIN).await.unwrap();
        // unclaim releases without recording an attempt.
        let id2 = s.enqueue(&action("zd", "T2", "y"), T0, WINDOW).await.unwrap().entry().id;
        s.claim_actions(&claim("c", T0 + MIN, 10)).await.unwrap();
        assert_eq!(s.unclaim_actions(&[id2], "someone-else").await.unwrap(), 0);
        assert_eq!(s.unclaim_actions(&[id2, 12345], "c").await.unwrap(), 1);
        assert_eq!(s.claim_actions(&claim("d", T0 + MIN, 10)).await.unwrap()[0].id, id2);
        assert!(s.write_log(id2).await.unwrap().is_empty());
    }

    pub async fn claim_respects_due_time_connection_state_and_filter(c: Ctx) {
        let s = &c.store;
        live(s, "zd").await;
        live(s, "fd").await;
        s.create_connection(&NewConnection::new("new", "zendesk", "not probed"), T0).await.unwrap();
        let mut later = action("zd", "T-late", "x");
        later.not_before = T0 + 10 * MIN;
        let late = s.enqueue(&later, T0, WINDOW).await.unwrap().entry().id;
        let mut soon = action("zd", "T-soon", "x");
        soon.not_before = T0 + MIN;
        let soon = s.enqueue(&soon, T0, WINDOW).await.unwrap().entry().id;
        let now_zd = s.enqueue(&action("zd", "T-now", "x"), T0, WINDOW).await.unwrap().entry().id;
        let now_fd = s.enqueue(&action("fd", "T-now", "x"), T0, WINDOW).await.unwrap().entry().id;
        s.enqueue(&action("new", "T-now", "x"), T0, WINDOW).await.unwrap();

        let only_fd = s
            .claim_actions(&Claim {
                connection_id: Some("fd".into()),
                ..claim("w", T0 + 2 * MIN, 10)
            })
            .await
            .unwrap();
        assert_eq!(only_fd.iter().map(|e| e.id).collect::<Vec<_>>(), [now_fd]);
        s.unclaim_actions(&[now_fd], "w").await.unwrap();

        let st = ConnectionState::Suspended { reason: "403".into(), kind: "rescope".into() };
        s.set_connection_state("fd", &st, T0).await.unwrap();
        // Due order: not_before, then id; suspended and unprobed connections wait.
        let long = Claim { lease_for: Duration::from_secs(3600), ..claim("w", T0 + 2 * MIN, 10) };
        let got = s.claim_actions(&long).await.unwrap();
        assert_eq!(got.iter().map(|e| e.id).collect::<Vec<_>>(), [now_zd, soon]);
        assert!(s.claim_actions(&claim("w2", T0 + 9 * MIN, 10)).await.unwrap().is_empty());
        assert_eq!(s.claim_actions(&claim("w2", T0 + 10 * MIN, 10)).await.unwrap()[0].id, late);
        s.set_connection_state("fd", &ConnectionState::Live, T0).await.unwrap();
        assert_eq!(s.claim_actions(&claim("w3", T0 + 10 * MIN, 1)).await.unwrap()[0].id, now_fd);

        // Listing.
        let q = ActionQuery { connection_id: Some("zd".into()), ..Default::default() };
        assert_eq!(s.list_actions(&q).await.unwrap().len(), 3);
        let q = ActionQuery { ticket_id: Some("T-now".into()), limit: 2, ..Default::default() };
        let page1 = s.list_actions(&q).await.unwrap();
        assert_eq!(page1.len(), 2);
        let q2 = ActionQuery { after_id: page1[1].id, ..q };
        assert_eq!(s.list_actions(&q2).await.unwrap().len(), 1);
    }

    pub async fn outbox_transitions_append_to_the_write_log(c: Ctx) {
        let s = &c.store;
        live(s, "zd").await;
        let id = s.enqueue(&action("zd", "T1", "x"), T0, WINDOW).await.unwrap().entry().id;

        s.claim_actions(&claim("w", T0, 10)).await.unwrap();
        // Not sent yet: only failure or retry make sense.
        for bad in [
            Settle::Confirmed { result: json!({}), detail: String::new() },
            Settle::Ambiguous { detail: String::new(), not_before: T0 },
            Settle::Diverged { detail: String::new(), result: json!({}) },
        ] {
            let r = s.settle_action(id, "w", &bad, T0).await;
            assert!(
                matches!(r, Err(StoreError::InvalidTransition { from: "pending", .. })),
                "{r:?}"
            );
        }
        let sent = s.mark_sent(id, "w", T0 + 1).await.unwrap();
        assert_eq!(
            (sent.state, sent.attempts, sent.last_sent_at),
            (OutboxState::Sent, 1, Some(T0 + 1))
        );
        let retry = s
            .settle_action(
                id,
                "w",
                &Settle::Retry { detail: "429, retry-after 60".into(), not_before: T0 + MIN },
                T0 + 2,
            )
            .await
            .unwrap();
        assert_eq!(
            (retry.state, retry.not_before, retry.lease),
            (OutboxState::Pending, T0 + MIN, None)
        );
        assert!(
            s.claim_actions(&claim("w", T0 + 3, 10)).await.unwrap().is_empty(),
            "not due before retry time"
        );

        s.claim_actions(&claim("w", T0 + MIN, 10)).await.unwrap();
        s.mark_sent(id, "w", T0 + MIN).await.unwrap();
        let amb = s
            .settle_action(
                id,
                "w",
                &Settle::Ambiguous {
                    detail: "timeout after send".into(),
                    not_before: T0 + 2 * MIN,
                },
                T0 + MIN + 5,
            )
            .await
            .unwrap();
        assert_eq!(amb.state, OutboxState::Ambiguous);
        let got = s.claim_actions(&claim("w2", T0 + 2 * MIN, 10)).await.unwrap();
        assert_eq!(got[0].state, OutboxState::Ambiguous);
        let div = s
            .settle_action(
                id,
                "w2",
                &Settle::Diverged {
                    detail: "reply landed, status open".into(),
                    result: json!({"reply": 1}),
                },
                T0 + 2 * MIN + 1,
            )
            .await
            .unwrap();
        assert_eq!(div.state, OutboxState::Diverged { detail: "reply landed, status open".into() });
        assert_eq!(div.result, Some(json!({"reply": 1})));
        assert_eq!(div.attempts, 2);

        let log = s.write_log(id).await.unwrap();
        let summary: Vec<_> = log
            .iter()
            .map(|r| (r.attempt, r.sent_at, r.outcome, r.detail.as_str(), r.recorded_at))
            .collect();
        assert_eq!(
            summary,
            [
                (1, Some(T0 + 1), AttemptOutcome::Retry, "429, retry-after 60", T0 + 2),
                (2, Some(T0 + MIN), AttemptOutcome::Ambiguous, "timeout after send", T0 + MIN + 5),
                (
                    2,
                    Some(T0 + MIN),
                    AttemptOutcome::Diverged,
                    "reply landed, status open",
                    T0 + 2 * MIN + 1
                ),
            ]
        );
        assert!(log.iter().all(|r| r.entry_id == id && r.connection_id == "zd"));
        assert!(log.windows(2).all(|w| w[0].id < w[1].id));

        // A permanent failure before anything was sent is logged as attempt 0, never sent.
        let id2 = s.enqueue(&action("zd", "T2", "y"), T0, WINDOW).await.unwrap().entry().id;
        s.claim_actions(&claim("w", T0 + 3 * MIN, 10)).await.unwrap();
        let failed = s
            .settle_action(
                id2,
                "w",
                &Settle::Failed {
                    why: "ticket is closed".into(),
                    result: Some(json!({"code": "closed"})),
                },
                T0 + 3 * MIN,
            )
            .await
            .unwrap();
        assert_eq!(failed.state, OutboxState::Failed { why: "ticket is closed".into() });
        assert_eq!(failed.result, Some(json!({"code": "closed"})));
        let log2 = s.write_log(id2).await.unwrap();
        assert_eq!(
            (log2.len(), log2[0].attempt, log2[0].sent_at, log2[0].outcome),
            (1, 0, None, AttemptOutcome::Failed)
        );

        // Settled entries are not claimable and cannot be sent again.
        assert!(s.claim_actions(&claim("w", T0 + 100 * MIN, 10)).await.unwrap().is_empty());
        assert!(matches!(s.mark_sent(id2, "w", T0).await, Err(StoreError::LeaseLost { .. })));
        let q = ActionQuery { in_flight_only: true, ..Default::default() };
        assert!(s.list_actions(&q).await.unwrap().is_empty());

        // The log is append-only, even to raw SQL.
        assert!(c.raw_exec("UPDATE write_log SET detail = 'rewritten'").await.is_err());
        assert!(c.raw_exec("DELETE FROM write_log").await.is_err());
        assert_eq!(s.write_log(id).await.unwrap().len(), 3);
    }

    pub async fn inbox_dedupes_events(c: Ctx) {
        let s = &c.store;
        live(s, "zd").await;
        live(s, "fd").await;
        let batch =
            [event("zd", "T1", "evt-1"), event("zd", "T1", "evt-2"), event("zd", "T1", "evt-1")];
        assert_eq!(
            s.insert_events(&batch, T0).await.unwrap(),
            InsertReport { new: 2, duplicates: 1 }
        );
        assert_eq!(
            s.insert_events(&batch, T0 + 1).await.unwrap(),
            InsertReport { new: 0, duplicates: 3 }
        );
        // Dedupe keys are per connection.
        assert_eq!(
            s.insert_events(&[event("fd", "T1", "evt-1")], T0).await.unwrap(),
            InsertReport { new: 1, duplicates: 0 }
        );
        assert_eq!(s.insert_events(&[], T0).await.unwrap(), InsertReport::default());
        // An unknown connection fails the whole batch.
        let r = s.insert_events(&[event("zd", "T9", "evt-9"), event("ghost", "T1", "x")], T0).await;
        assert!(matches!(r, Err(StoreError::ConnectionNotFound(ref id)) if id == "ghost"), "{r:?}");
        assert_eq!(s.inbox_pending("zd").await.unwrap(), 2);
    }

    pub async fn inbox_cursor_ack_and_pending_counts(c: Ctx) {
        let s = &c.store;
        live(s, "zd").await;
        live(s, "fd").await;
        let mut evs = Vec::new();
        for i in 0..6 {
            let (conn, ticket) =
                if i % 3 == 2 { ("fd", "F1") } else { ("zd", if i % 2 == 0 { "A" } else { "B" }) };
            evs.push(event(conn, ticket, &format!("e{i}")));
        }
        s.insert_events(&evs, T0).await.unwrap();
        assert_eq!(
            (s.inbox_pending("zd").await.unwrap(), s.inbox_pending("fd").await.unwrap()),
            (4, 2)
        );

        let pull = |after: i64, limit: u32, conn: Option<&str>, now: Millis| Pull {
            after,
            limit,
            connection_id: conn.map(String::from),
            now,
        };
        let p1 = s.pull_events(&pull(0, 4, None, T0 + 1)).await.unwrap();
        assert_eq!(
            p1.iter().map(|e| e.dedupe_key.as_str()).collect::<Vec<_>>(),
            ["e0", "e1", "e2", "e3"]
        );
        assert!(p1.windows(2).all(|w| w[0].id < w[1].id), "id order");
        assert!(
            p1.iter().all(|e| e.delivered_at == Some(T0 + 1)
                && e.acked_at.is_none()
                && e.created_at == T0)
        );
        assert_eq!(p1[0].ticket, json!({"id": "A", "key": "e0"}));
        assert_eq!(
            (p1[2].connection_id.as_str(), p1[2].platform.as_str(), p1[2].kind.as_str()),
            ("fd", "zendesk", "ticket.updated")
        );
        let p2 = s.pull_events(&pull(p1[3].id, 10, None, T0 + 2)).await.unwrap();
        assert_eq!(p2.iter().map(|e| e.dedupe_key.as_str()).collect::<Vec<_>>(), ["e4", "e5"]);
        // Re-delivery keeps the first delivery time.
        let again = s.pull_events(&pull(0, 1, None, T0 + 3)).await.unwrap();
        assert_eq!(again[0].delivered_at, Some(T0 + 1));
        // Per connection, and per-ticket order is id order.
        let zd = s.pull_events(&pull(0, 10, Some("zd"), T0 + 4)).await.unwrap();
        let a_ticket: Vec<_> =
            zd.iter().filter(|e| e.ticket_id == "A").map(|e| e.dedupe_key.as_str()).collect();
        assert_eq!(a_ticket, ["e0", "e4"]);

        // Ack through a cursor for one connection, then by ids.
        assert_eq!(s.ack_events_through(Some("zd"), p1[3].id, T0 + 5).await.unwrap(), 3);
        assert_eq!(
            s.ack_events_through(Some("zd"), p1[3].id, T0 + 5).await.unwrap(),
            0,
            "idempotent"
        );
        assert_eq!(
            (s.inbox_pending("zd").await.unwrap(), s.inbox_pending("fd").await.unwrap()),
            (1, 2)
        );
        let left = s.pull_events(&pull(0, 10, None, T0 + 6)).await.unwrap();
        assert_eq!(
            left.iter().map(|e| e.dedupe_key.as_str()).collect::<Vec<_>>(),
            ["e2", "e4", "e5"]
        );
        assert_eq!(s.ack_events(&[left[0].id, left[2].id, 424242], T0 + 7).await.unwrap(), 2);
        assert_eq!(s.ack_events(&[left[0].id], T0 + 7).await.unwrap(), 0);
        assert_eq!(s.inbox_pending("fd").await.unwrap(), 0);
        assert_eq!(s.ack_events_through(None, i64::MAX, T0 + 8).await.unwrap(), 1);
        assert!(s.pull_events(&pull(0, 10, None, T0 + 9)).await.unwrap().is_empty());
        assert_eq!(s.inbox_pending("zd").await.unwrap(), 0);
    }

    pub async fn inbox_cursor_never_skips_under_concurrent_inserts(c: Ctx) {
        let s = &c.store;
        live(s, "zd").await;
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let s = s.clone();
                tokio::spawn(async move {
                    for b in 0..25 {
                        let batch = [
                            event("zd", &format!("T{w}"), &format!("w{w}-b{b}-0")),
                            event("zd", &format!("T{w}"), &format!("w{w}-b{b}-1")),
                        ];
                        s.insert_events(&batch, T0).await.unwrap();
                    }
                })
            })
            .collect();
        // An app following the cursor while events arrive: once the writers are done and a pull
        // comes back empty, it has seen everything it ever will.
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (s, done) = (s.clone(), done.clone());
            tokio::spawn(async move {
                let mut cursor = 0;
                let mut seen = Vec::new();
                loop {
                    let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                    let pull = Pull { after: cursor, limit: 17, connection_id: None, now: T0 };
                    let got = s.pull_events(&pull).await.unwrap();
                    if got.is_empty() && finished {
                        break seen;
                    }
                    for e in got {
                        assert!(e.id > cursor);
                        cursor = e.id;
                        seen.push(e.dedupe_key);
                    }
                    tokio::task::yield_now().await;
                }
            })
        };
        for w in writers {
            w.await.unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        let seen: Vec<String> = reader.await.unwrap();
        assert_eq!(s.inbox_pending("zd").await.unwrap(), 200);
        assert_eq!(seen.len(), 200, "the cursor skipped {} committed events", 200 - seen.len());
        let unique: BTreeSet<_> = seen.iter().collect();
        assert_eq!((seen.len(), unique.len()), (200, 200));
        // Per-ticket (per-writer) order is preserved.
        for w in 0..4 {
            let mine: Vec<_> =
                seen.iter().filter(|k| k.starts_with(&format!("w{w}-"))).cloned().collect();
            let expected: Vec<_> =
                (0..25).flat_map(|b| [format!("w{w}-b{b}-0"), format!("w{w}-b{b}-1")]).collect();
            assert_eq!(mine, expected);
        }
    }

    pub async fn alerts_lifecycle(c: Ctx) {
        let s = &c.store;
        live(s, "zd").await;
        let a1 = s
            .raise_alert(
                &NewAlert {
                    connection_id: Some("zd".into()),
                    kind: "refresh_failed".into(),
                    text: "Zendesk refused the refresh token: reconnect Acme in the console".into(),
                    detail: json!({"error": "invalid_grant"}),
                },
                T0,
            )
            .await
            .unwrap();
        assert_eq!(
            (a1.created_at, a1.next_attempt_at, a1.attempts, a1.delivered_at, a1.acked_at),
            (T0, T0, 0, None, None)
        );
        assert_eq!(a1.detail, json!({"error": "invalid_grant"}));
        let a2 = s
            .raise_alert(
                &NewAlert {
                    connection_id: None,
                    kind: "disk".into(),
                    text: "disk 95% full".into(),
                    detail: json!(null),
                },
                T0 + 1,
            )
            .await
            .unwrap();
        assert!(a2.id > a1.id);
        let r = s
            .raise_alert(
                &NewAlert {
                    connection_id: Some("ghost".into()),
                    kind: "k".into(),
                    text: "t".into(),
                    detail: json!({}),
                },
                T0,
            )
            .await;
        assert!(matches!(r, Err(StoreError::ConnectionNotFound(_))), "{r:?}");

        let ids = |v: Vec<Alert>| v.into_iter().map(|a| a.id).collect::<Vec<_>>();
        assert_eq!(
            ids(s.list_alerts(None, false, 10).await.unwrap()),
            [a2.id, a1.id],
            "newest first"
        );
        assert_eq!(ids(s.list_alerts(Some("zd"), false, 10).await.unwrap()), [a1.id]);
        assert_eq!(ids(s.alerts_due(T0 + 1, 10).await.unwrap()), [a1.id, a2.id], "oldest first");

        let failed = s
            .record_alert_delivery(
                a1.id,
                &AlertDelivery::Failed { error: "SMTP 451".into(), retry_at: T0 + MIN },
                T0 + 2,
            )
            .await
            .unwrap();
        assert_eq!(
            (failed.attempts, failed.last_error.as_deref(), failed.next_attempt_at),
            (1, Some("SMTP 451"), T0 + MIN)
        );
        assert_eq!(ids(s.alerts_due(T0 + 2, 10).await.unwrap()), [a2.id]);
        assert_eq!(
            ids(s.alerts_due(T0 + MIN, 10).await.unwrap()),
            [a2.id, a1.id],
            "by next attempt time"
        );
        let ok = s.record_alert_delivery(a1.id, &AlertDelivery::Delivered, T0 + MIN).await.unwrap();
        assert_eq!((ok.attempts, ok.delivered_at, ok.last_error), (2, Some(T0 + MIN), None));
        assert_eq!(ids(s.alerts_due(T0 + MIN, 10).await.unwrap()), [a2.id]);

        assert!(s.ack_alert(a2.id, T0 + 3).await.unwrap());
        assert!(!s.ack_alert(a2.id, T0 + 4).await.unwrap());
        assert!(!s.ack_alert(987_654, T0).await.unwrap());
        assert!(
            s.alerts_due(T0 + MIN, 10).await.unwrap().is_empty(),
            "an acknowledged alert is not delivered"
        );
        assert_eq!(ids(s.list_alerts(None, false, 10).await.unwrap()), [a1.id]);
        let all = s.list_alerts(None, true, 10).await.unwrap();
        assert_eq!((all.len(), all[0].acked_at), (2, Some(T0 + 3)));
        assert_eq!(s.list_alerts(None, true, 1).await.unwrap().len(), 1);
        assert!(matches!(
            s.record_alert_delivery(987_654, &AlertDelivery::Delivered, T0).await,
            Err(StoreError::AlertNotFound(987_654))
        ));
    }

    pub async fn a_suspended_connections_ticket_events_are_held_until_it_is_live(c: Ctx) {
        let s = &c.store;
        live(s, "zd").await;
        live(s, "fd").await;
        let pull = |after: i64| Pull { after, limit: 100, connection_id: None, now: T0 };
        let suspended = ConnectionState::Suspended { reason: "token revoked".into(), kind: "reauth".into() };
        s.set_connection_state("zd", &suspended, T0).await.unwrap();
        let mut notice = event("zd", "", "connection.suspended:1");
        notice.kind = "connection.suspended".into();
        s.insert_events(&[notice, event("zd", "1", "a"), event("zd", "1", "b")], T0).await.unwrap();
        s.insert_events(&[event("fd", "7", "c")], T0).await.unwrap();
        // The app sees the suspension notice and the other connection's event, not the held ones.
        let got = s.pull_events(&pull(0)).await.unwrap();
        let kinds: Vec<(&str, &str)> = got.iter().map(|e| (e.connection_id.as_str(), e.kind.as_str())).collect();
        assert_eq!(kinds, [("zd", "connection.suspended"), ("fd", "ticket.updated")]);
        let cursor = got.last().unwrap().id;
        assert_eq!(s.ack_events_through(None, cursor, T0).await.unwrap(), 2, "the held events are not acknowledged");
        assert_eq!(s.inbox_pending("zd").await.unwrap(), 2, "held events are pending, durably");
        // Live again: they come after the cursor, once, in their order.
        s.set_connection_state("zd", &ConnectionState::Live, T0 + 1).await.unwrap();
        let got = s.pull_events(&pull(cursor)).await.unwrap();
        assert_eq!(got.iter().map(|e| e.dedupe_key.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert!(got.iter().all(|e| e.id > cursor));
        // New events take ids after them; nothing is held any more.
        s.insert_events(&[event("zd", "1", "d")], T0).await.unwrap();
        let after: Vec<String> = s.pull_events(&pull(got[1].id)).await.unwrap().into_iter().map(|e| e.dedupe_key).collect();
        assert_eq!(after, ["d"]);
        // A duplicate of a released event is still a duplicate.
        assert_eq!(s.insert_events(&[event("zd", "1", "a")], T0).await.unwrap().duplicates, 1);
    }

    pub async fn marks_only_move_forward(c: Ctx) {
        let s = &c.store;
        assert_eq!(s.get_mark("zd", "sweep").await.unwrap(), None);
        assert_eq!(s.put_mark("zd", "sweep", 1_000, T0).await.unwrap(), 1_000);
        assert_eq!(s.put_mark("zd", "sweep", 5_000, T0 + 1).await.unwrap(), 5_000);
        // A replica finishing an older sweep late cannot move the mark back.
        assert_eq!(s.put_mark("zd", "sweep", 2_000, T0 + 2).await.unwrap(), 5_000);
        assert_eq!(s.get_mark("zd", "sweep").await.unwrap(), Some(5_000));
        // Marks are per connection and per name.
        assert_eq!(s.get_mark("fd", "sweep").await.unwrap(), None);
        assert_eq!(s.get_mark("zd", "other").await.unwrap(), None);
    }

    pub async fn timer_leases_run_once_per_cluster(c: Ctx) {
        let s = &c.store;
        let ttl = Duration::from_secs(60);
        let a = s
            .acquire_lease("zd", "reconcile", "replica-a", T0, ttl)
            .await
            .unwrap()
            .expect("free lease");
        assert_eq!((a.owner.as_str(), a.until, a.generation), ("replica-a", T0 + MIN, 1));
        assert_eq!(s.get_lease("zd", "reconcile").await.unwrap(), Some(a.clone()), "read as taken");
        assert_eq!(s.get_lease("zd", "never-taken").await.unwrap(), None);
        assert_eq!(
            s.acquire_lease("zd", "reconcile", "replica-b", T0 + 1, ttl).await.unwrap(),
            None
        );
        // Other timers and connections are independent.
        assert!(
            s.acquire_lease("zd", "health_check", "replica-b", T0, ttl).await.unwrap().is_some()
        );
        assert!(s.acquire_lease("fd", "reconcile", "replica-b", T0, ttl).await.unwrap().is_some());
        assert!(s.acquire_lease("", "prune", "replica-b", T0, ttl).await.unwrap().is_some());
        // Re-acquiring one's own lease extends it without changing hands.
        let a2 =
            s.acquire_lease("zd", "reconcile", "replica-a", T0 + 10, ttl).await.unwrap().unwrap();
        assert_eq!((a2.until, a2.generation), (T0 + 10 + MIN, 1));
        let renewed =
            s.renew_lease("zd", "reconcile", "replica-a", T0 + 30_000, ttl).await.unwrap().unwrap();
        assert_eq!(renewed.until, T0 + 30_000 + MIN);
        assert_eq!(
            s.renew_lease("zd", "reconcile", "replica-b", T0 + 30_000, ttl).await.unwrap(),
            None
        );
        assert_eq!(
            s.acquire_lease("zd", "reconcile", "replica-b", T0 + 30_000 + MIN - 1, ttl)
                .await
                .unwrap(),
            None
        );
        // Expired: another replica takes it, and the fencing generation moves on.
        let b = s
            .acquire_lease("zd", "reconcile", "replica-b", T0 + 30_000 + MIN, ttl)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((b.owner.as_str(), b.generation), ("replica-b", 2));
        assert_eq!(
            s.renew_lease("zd", "reconcile", "replica-a", T0 + 30_000 + MIN, ttl).await.unwrap(),
            None
        );
        assert!(!s.release_lease("zd", "reconcile", "replica-a").await.unwrap());
        assert!(s.release_lease("zd", "reconcile", "replica-b").await.unwrap());
        assert!(!s.release_lease("zd", "reconcile", "replica-b").await.unwrap());
        let released = s.get_lease("zd", "reconcile").await.unwrap().expect("the row stays");
        assert_eq!((released.owner.as_str(), released.until, released.generation), ("", 0, 2), "released: blank owner, lapsed");
        let a3 = s
            .acquire_lease("zd", "reconcile", "replica-a", T0 + 30_001 + MIN, ttl)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(a3.generation, 3, "release does not reset the fencing generation");

        // Many replicas racing for one free lease: exactly one wins.
        let mut tasks = Vec::new();
        for r in 0..8 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                s.acquire_lease("zd", "race", &format!("r{r}"), T0, ttl).await.unwrap()
            }));
        }
        let mut winners = 0;
        for t in tasks {
            winners += usize::from(t.await.unwrap().is_some());
        }
        assert_eq!(winners, 1);
        assert!(s.acquire_lease("zd", "x", "", T0, ttl).await.is_err(), "an owner must be named");
    }

    pub async fn data_survives_close_and_reopen(c: Ctx) {
        let s = &c.store;
        live(s, "zd").await;
        s.put_credential("zd", &oauth("acc", "ref"), Some(T0 + MIN), Expect::Absent, T0)
            .await
            .unwrap();
        let id = s.enqueue(&action("zd", "T1", "durable"), T0, WINDOW).await.unwrap().entry().id;
        s.insert_events(&[event("zd", "T1", "e1")], T0).await.unwrap();
        s.raise_alert(
            &NewAlert {
                connection_id: Some("zd".into()),
                kind: "k".into(),
                text: "t".into(),
                detail: json!({}),
            },
            T0,
        )
        .await
        .unwrap();
        s.acquire_lease("zd", "reconcile", "replica-a", T0, Duration::from_secs(60))
            .await
            .unwrap()
            .unwrap();
        s.close().await;

        let s: Arc<dyn Store> = c.reopen(KEY).await.unwrap();
        assert_eq!(s.get_connection("zd").await.unwrap().unwrap().state, ConnectionState::Live);
        assert_eq!(s.get_credential("zd").await.unwrap().unwrap().secret, oauth("acc", "ref"));
        assert_eq!(
            s.get_action(id).await.unwrap().unwrap().action,
            json!({"op": "reply", "public": true, "text": "durable"})
        );
        assert_eq!(
            s.enqueue(&action("zd", "T1", "durable"), T0 + 1, WINDOW).await.unwrap().entry().id,
            id
        );
        assert_eq!(s.inbox_pending("zd").await.unwrap(), 1);
        assert_eq!(s.insert_events(&[event("zd", "T1", "e1")], T0).await.unwrap().duplicates, 1);
        assert_eq!(s.list_alerts(Some("zd"), false, 10).await.unwrap().len(), 1);
        assert_eq!(
            s.acquire_lease("zd", "reconcile", "replica-b", T0 + 1, Duration::from_secs(60))
                .await
                .unwrap(),
            None
        );
        s.close().await;
    }
}
