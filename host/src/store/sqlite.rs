//! The embedded backend: one SQLite file (bundled libsqlite3), WAL journal.
//!
//! Two pools: one writer connection, through which every mutation goes as a `BEGIN IMMEDIATE`
//! transaction, and a few readers. SQLite allows one writer at a time anyway; funnelling writes
//! through one connection means they queue in-process instead of racing for the file lock, and
//! `BEGIN IMMEDIATE` takes the write lock up front, so a read-then-write transaction can never
//! fail half way with `SQLITE_BUSY` (which a deferred `BEGIN` would, under WAL, if another
//! process wrote in between). Readers see every committed write (WAL snapshot isolation) and never
//! wait for the writer.
//!
//! `synchronous=FULL`: every commit fsyncs the WAL before it returns, so an acknowledged action
//! survives a power cut (see the [module docs](super#durability)). `foreign_keys=ON`, and a
//! 5-second busy timeout in case another process (an operator's `sqlite3` shell) holds the lock.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};

use super::codec::{self, RowExt as _};
use super::crypto::{self, SecretKey};
use super::migrate;
use super::*;

const READERS: u32 = 4;
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A store in one SQLite file.
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    key: SecretKey,
    path: PathBuf,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.path).finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Open (creating if needed) the store at `path`, migrate it and check `key`.
    ///
    /// # Errors
    /// See [`open`].
    pub async fn open(path: &Path, key: SecretKey) -> Result<Self, StoreError> {
        Self::open_with(path, key, true).await
    }

    /// [`SqliteStore::open`], choosing whether commits fsync the WAL (`full_sync`, the default
    /// and what the durability promise rests on) or not (`synchronous=NORMAL`: a commit survives
    /// a crash of the process, not of the machine).
    ///
    /// # Errors
    /// As [`SqliteStore::open`].
    pub async fn open_with(path: &Path, key: SecretKey, full_sync: bool) -> Result<Self, StoreError> {
        let shown = path.display().to_string();
        let fail = |reason: String| StoreError::Open { url: shown.clone(), reason };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| fail(format!("cannot create directory {}: {e}", dir.display())))?;
        }
        create_private(path).map_err(|e| fail(format!("cannot create the database file: {e}")))?;
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(if full_sync { SqliteSynchronous::Full } else { SqliteSynchronous::Normal })
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            // A page cache that holds a busy day's hot pages (the default is 2 MB per
            // connection), and reads through a memory map instead of a `pread` per page miss.
            .pragma("cache_size", "-32768")
            .pragma("mmap_size", "268435456");
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts.clone())
            .await
            .map_err(|e| fail(e.to_string()))?;
        let store = Self {
            reader: SqlitePoolOptions::new().max_connections(READERS).connect_lazy_with(opts),
            writer,
            key,
            path: path.to_owned(),
        };
        if let Err(e) = store.prepare().await {
            store.close().await;
            return Err(e);
        }
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Migrate and check the key, in one transaction.
    async fn prepare(&self) -> Result<(), StoreError> {
        let mut tx = self.tx().await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS deskgate_schema (version INTEGER PRIMARY KEY, name TEXT NOT NULL, \
             checksum TEXT NOT NULL, applied_at INTEGER NOT NULL)",
        )
        .execute(&mut *tx)
        .await?;
        let applied: Vec<(i64, String)> =
            sqlx::query_as("SELECT version, checksum FROM deskgate_schema ORDER BY version")
                .fetch_all(&mut *tx)
                .await?;
        let now = crate::clock::Clock::now_ms(&crate::clock::SystemClock);
        for m in migrate::plan(migrate::SQLITE, &applied)? {
            // Not `raw_sql(..).execute(&mut *tx)`: that trips sqlx#3150 (not `Send`).
            sqlx::Executor::execute(&mut *tx, sqlx::raw_sql(m.sql)).await?;
            sqlx::query("INSERT INTO deskgate_schema (version, name, checksum, applied_at) VALUES (?1, ?2, ?3, ?4)")
                .bind(m.version)
                .bind(m.name)
                .bind(m.checksum())
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("INSERT INTO deskgate_meta (key, value) VALUES ('key_check', ?1) ON CONFLICT (key) DO NOTHING")
            .bind(crypto::key_check(&self.key))
            .execute(&mut *tx)
            .await?;
        let check: Vec<u8> =
            sqlx::query_scalar("SELECT value FROM deskgate_meta WHERE key = 'key_check'")
                .fetch_one(&mut *tx)
                .await?;
        crypto::verify_key_check(&self.key, &check)?;
        tx.commit().await?;
        Ok(())
    }

    /// A write transaction holding SQLite's write lock from the start.
    async fn tx(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }

    async fn live_connection(
        tx: &mut Transaction<'static, Sqlite>,
        id: &str,
    ) -> Result<(), StoreError> {
        let state: Option<String> =
            sqlx::query_scalar("SELECT state FROM connections WHERE id = ?1")
                .bind(id)
                .fetch_optional(&mut **tx)
                .await?;
        match state.as_deref() {
            None | Some("deleted") => Err(StoreError::ConnectionNotFound(id.to_owned())),
            Some(_) => Ok(()),
        }
    }

    async fn outbox_row(
        tx: &mut Transaction<'static, Sqlite>,
        sql: &str,
        a: &str,
        b: &str,
    ) -> Result<Option<OutboxEntry>, StoreError> {
        sqlx::query(sql)
            .bind(a)
            .bind(b)
            .fetch_optional(&mut **tx)
            .await?
            .map(|r| codec::outbox(&r))
            .transpose()
    }

    /// Load an entry for a transition by `owner`, checking the lease.
    async fn leased_entry(
        tx: &mut Transaction<'static, Sqlite>,
        id: i64,
        owner: &str,
    ) -> Result<OutboxEntry, StoreError> {
        let entry = sqlx::query("SELECT * FROM outbox WHERE id = ?1")
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?
            .map(|r| codec::outbox(&r))
            .transpose()?
            .ok_or(StoreError::ActionNotFound(id))?;
        match &entry.lease {
            Some(l) if l.owner == owner => Ok(entry),
            _ => Err(StoreError::LeaseLost { entry: id, owner: owner.to_owned() }),
        }
    }
}

/// Create the database file readable by its owner only (it holds ticket content), unless it
/// exists. An empty file is a valid empty SQLite database; SQLite gives the `-wal` and `-shm`
/// files the same mode.
fn create_private(path: &Path) -> std::io::Result<()> {
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
    match open.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

fn ids_json(ids: &[i64]) -> String {
    serde_json::to_string(ids).expect("ids serialize")
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM deskgate_schema")
            .fetch_one(&self.reader)
            .await?)
    }

    async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }

    // -- connections ---------------------------------------------------------------------

    async fn create_connection(
        &self,
        new: &NewConnection,
        now: Millis,
    ) -> Result<Connection, StoreError> {
        let row = sqlx::query(
            "INSERT INTO connections (id, platform, display_name, plan, settings, state, admin_contact_url, \
             created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, 'pending_probe', ?6, ?7, ?7) RETURNING *",
        )
        .bind(&new.id)
        .bind(&new.platform)
        .bind(&new.display_name)
        .bind(&new.plan)
        .bind(new.settings.to_string())
        .bind(&new.admin_contact_url)
        .bind(now)
        .fetch_one(&self.writer)
        .await
        .map_err(|e| {
            if codec::is_unique_violation(&e) { StoreError::ConnectionExists(new.id.clone()) } else { e.into() }
        })?;
        codec::connection(&row)
    }

    async fn get_connection(&self, id: &str) -> Result<Option<Connection>, StoreError> {
        sqlx::query("SELECT * FROM connections WHERE id = ?1")
            .bind(id)
            .fetch_optional(&self.reader)
            .await?
            .map(|r| codec::connection(&r))
            .transpose()
    }

    async fn list_connections(&self, include_deleted: bool) -> Result<Vec<Connection>, StoreError> {
        sqlx::query("SELECT * FROM connections WHERE ?1 OR state <> 'deleted' ORDER BY id")
            .bind(include_deleted)
            .fetch_all(&self.reader)
            .await?
            .iter()
            .map(codec::connection)
            .collect()
    }

    async fn update_connection(
        &self,
        id: &str,
        patch: &ConnectionPatch,
        now: Millis,
    ) -> Result<Connection, StoreError> {
        let mut tx = self.tx().await?;
        let mut c = sqlx::query("SELECT * FROM connections WHERE id = ?1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| codec::connection(&r))
            .transpose()?
            .ok_or_else(|| StoreError::ConnectionNotFound(id.to_owned()))?;
        if let Some(v) = &patch.display_name {
            c.display_name = v.clone();
        }
        if let Some(v) = &patch.plan {
            c.plan = v.clone();
        }
        if let Some(v) = &patch.settings {
            c.settings = v.clone();
        }
        if let Some(v) = &patch.admin_contact_url {
            c.admin_contact_url = v.clone();
        }
        let row = sqlx::query(
            "UPDATE connections SET display_name = ?2, plan = ?3, settings = ?4, admin_contact_url = ?5, \
             updated_at = ?6 WHERE id = ?1 RETURNING *",
        )
        .bind(id)
        .bind(&c.display_name)
        .bind(&c.plan)
        .bind(c.settings.to_string())
        .bind(&c.admin_contact_url)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        codec::connection(&row)
    }

    async fn set_connection_state(
        &self,
        id: &str,
        state: &ConnectionState,
        now: Millis,
    ) -> Result<Connection, StoreError> {
        let (name, reason, kind) = codec::connection_state_cols(state);
        let mut tx = self.tx().await?;
        let row = sqlx::query(
            "UPDATE connections SET state = ?2, suspend_reason = ?3, suspend_kind = ?4, updated_at = ?5 \
             WHERE id = ?1 RETURNING *",
        )
        .bind(id)
        .bind(name)
        .bind(reason)
        .bind(kind)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::ConnectionNotFound(id.to_owned()))?;
        if matches!(state, ConnectionState::Deleted) {
            sqlx::query("DELETE FROM credentials WHERE connection_id = ?1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        if matches!(state, ConnectionState::Live) {
            // Events held while it was suspended go to the app now, after everything it may have
            // been given meanwhile: new ids past the newest ever issued, in their old order.
            let held: Vec<i64> = sqlx::query_scalar("SELECT id FROM inbox WHERE connection_id = ?1 AND held = 1 ORDER BY id")
                .bind(id)
                .fetch_all(&mut *tx)
                .await?;
            for old in held {
                sqlx::query(
                    "UPDATE inbox SET held = 0, id = 1 + MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'inbox'), 0), \
                     (SELECT MAX(id) FROM inbox)) WHERE id = ?1",
                )
                .bind(old)
                .execute(&mut *tx)
                .await?;
                sqlx::query("UPDATE sqlite_sequence SET seq = (SELECT MAX(id) FROM inbox) WHERE name = 'inbox' AND seq < (SELECT MAX(id) FROM inbox)")
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        codec::connection(&row)
    }

    async fn set_probe_report(
        &self,
        id: &str,
        report: &Value,
        now: Millis,
    ) -> Result<Connection, StoreError> {
        let row = sqlx::query(
            "UPDATE connections SET probe_report = ?2, updated_at = ?3 WHERE id = ?1 RETURNING *",
        )
        .bind(id)
        .bind(report.to_string())
        .bind(now)
        .fetch_optional(&self.writer)
        .await?
        .ok_or_else(|| StoreError::ConnectionNotFound(id.to_owned()))?;
        codec::connection(&row)
    }

    // -- credentials ---------------------------------------------------------------------

    async fn put_credential(
        &self,
        connection_id: &str,
        secret: &CredentialSecret,
        expires_at: Option<Millis>,
        expect: Expect,
        now: Millis,
    ) -> Result<Credential, StoreError> {
        let sealed = crypto::seal(
            &self.key,
            &crypto::credential_aad(connection_id),
            &codec::secret_plaintext(secret),
        );
        let mut tx = self.tx().await?;
        Self::live_connection(&mut tx, connection_id).await?;
        let current: Option<i64> =
            sqlx::query_scalar("SELECT version FROM credentials WHERE connection_id = ?1")
                .bind(connection_id)
                .fetch_optional(&mut *tx)
                .await?;
        codec::check_expect(connection_id, expect, current)?;
        let row = sqlx::query(
            "INSERT INTO credentials (connection_id, scheme, sealed, expires_at, version, refresh_owner, \
             refresh_started_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, NULL, NULL, ?6) \
             ON CONFLICT (connection_id) DO UPDATE SET scheme = excluded.scheme, sealed = excluded.sealed, \
             expires_at = excluded.expires_at, version = excluded.version, refresh_owner = NULL, \
             refresh_started_at = NULL, updated_at = excluded.updated_at RETURNING *",
        )
        .bind(connection_id)
        .bind(secret.scheme())
        .bind(sealed)
        .bind(expires_at)
        .bind(current.unwrap_or(0) + 1)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        codec::credential(&row, &self.key)
    }

    async fn get_credential(&self, connection_id: &str) -> Result<Option<Credential>, StoreError> {
        sqlx::query("SELECT * FROM credentials WHERE connection_id = ?1")
            .bind(connection_id)
            .fetch_optional(&self.reader)
            .await?
            .map(|r| codec::credential(&r, &self.key))
            .transpose()
    }

    async fn begin_refresh(
        &self,
        connection_id: &str,
        claim: &RefreshClaim,
    ) -> Result<Credential, StoreError> {
        let mut tx = self.tx().await?;
        let row = sqlx::query("SELECT * FROM credentials WHERE connection_id = ?1")
            .bind(connection_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::CredentialNotFound(connection_id.to_owned()))?;
        codec::check_refresh_claim(
            connection_id,
            claim,
            row.i64("version")?,
            row.opt_string("refresh_owner")?,
            row.opt_i64("refresh_started_at")?,
        )?;
        let row = sqlx::query(
            "UPDATE credentials SET refresh_owner = ?2, refresh_started_at = ?3 WHERE connection_id = ?1 RETURNING *",
        )
        .bind(connection_id)
        .bind(&claim.owner)
        .bind(claim.now)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        codec::credential(&row, &self.key)
    }

    async fn end_refresh(&self, connection_id: &str, owner: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE credentials SET refresh_owner = NULL, refresh_started_at = NULL \
             WHERE connection_id = ?1 AND refresh_owner = ?2",
        )
        .bind(connection_id)
        .bind(owner)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    // -- outbox --------------------------------------------------------------------------

    async fn enqueue(
        &self,
        new: &NewAction,
        now: Millis,
        dedupe_window: Duration,
    ) -> Result<Enqueued, StoreError> {
        let mut tx = self.tx().await?;
        if let Some(app_key) = &new.app_key
            && let Some(e) = Self::outbox_row(
                &mut tx,
                "SELECT * FROM outbox WHERE connection_id = ?1 AND app_key = ?2",
                &new.connection_id,
                app_key,
            )
            .await?
        {
            return codec::same_action_or_reused(new, app_key, e);
        }
        if let Some(e) = Self::outbox_row(
            &mut tx,
            "SELECT * FROM outbox WHERE connection_id = ?1 AND idempotency_key = ?2 \
             AND state IN ('pending', 'sent', 'ambiguous')",
            &new.connection_id,
            &new.idempotency_key,
        )
        .await?
        {
            return Ok(Enqueued::Existing(e));
        }
        let recent = sqlx::query(
            "SELECT * FROM outbox WHERE connection_id = ?1 AND idempotency_key = ?2 \
             AND state IN ('confirmed', 'diverged') AND updated_at >= ?3 ORDER BY updated_at DESC, id DESC LIMIT 1",
        )
        .bind(&new.connection_id)
        .bind(&new.idempotency_key)
        .bind(now.saturating_sub(ms(dedupe_window)))
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(r) = recent {
            return Ok(Enqueued::Existing(codec::outbox(&r)?));
        }
        Self::live_connection(&mut tx, &new.connection_id).await?;
        let row = sqlx::query(
            "INSERT INTO outbox (connection_id, ticket_id, action, idempotency_key, app_key, state, attempts, \
             not_before, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, 'pending', 0, ?6, ?7, ?7) RETURNING *",
        )
        .bind(&new.connection_id)
        .bind(&new.ticket_id)
        .bind(new.action.to_string())
        .bind(&new.idempotency_key)
        .bind(&new.app_key)
        .bind(new.not_before)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Enqueued::Created(codec::outbox(&row)?))
    }

    async fn get_action(&self, id: i64) -> Result<Option<OutboxEntry>, StoreError> {
        sqlx::query("SELECT * FROM outbox WHERE id = ?1")
            .bind(id)
            .fetch_optional(&self.reader)
            .await?
            .map(|r| codec::outbox(&r))
            .transpose()
    }

    async fn find_action_by_app_key(
        &self,
        connection_id: &str,
        app_key: &str,
    ) -> Result<Option<OutboxEntry>, StoreError> {
        sqlx::query("SELECT * FROM outbox WHERE connection_id = ?1 AND app_key = ?2")
            .bind(connection_id)
            .bind(app_key)
            .fetch_optional(&self.reader)
            .await?
            .map(|r| codec::outbox(&r))
            .transpose()
    }

    async fn list_actions(&self, q: &ActionQuery) -> Result<Vec<OutboxEntry>, StoreError> {
        // Only the filters asked for, so SQLite can pick the matching index (`?1 IS NULL OR ...`
        // forms make it scan the whole outbox). Unused numbered parameters stay unbound.
        let mut sql = String::from("SELECT * FROM outbox WHERE id > ?4");
        if q.connection_id.is_some() {
            sql.push_str(" AND connection_id = ?1");
        }
        if q.ticket_id.is_some() {
            sql.push_str(" AND ticket_id = ?2");
        }
        if q.in_flight_only {
            sql.push_str(" AND state IN ('pending', 'sent', 'ambiguous')");
        }
        sql.push_str(" ORDER BY id LIMIT ?5");
        sqlx::query(&sql)
            .bind(&q.connection_id)
            .bind(&q.ticket_id)
            .bind(q.in_flight_only)
            .bind(q.after_id)
            .bind(codec::page(q.limit))
            .fetch_all(&self.reader)
            .await?
            .iter()
            .map(codec::outbox)
            .collect()
    }

    async fn claim_actions(&self, claim: &Claim) -> Result<Vec<OutboxEntry>, StoreError> {
        let one = if claim.connection_id.is_some() { "AND o.connection_id = ?4 " } else { "" };
        let sql = format!(
            "UPDATE outbox SET lease_owner = ?1, lease_until = ?2 WHERE id IN (\
               SELECT o.id FROM outbox o JOIN connections c ON c.id = o.connection_id \
               WHERE o.state IN ('pending', 'sent', 'ambiguous') AND o.not_before <= ?3 \
               AND (o.lease_until IS NULL OR o.lease_until <= ?3) AND c.state = 'live' {one}\
               ORDER BY o.not_before, o.id LIMIT ?5) RETURNING *"
        );
        let mut tx = self.tx().await?;
        let rows = sqlx::query(&sql)
            .bind(&claim.owner)
            .bind(claim.now.saturating_add(ms(claim.lease_for)))
            .bind(claim.now)
            .bind(&claim.connection_id)
            .bind(i64::from(claim.limit))
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        codec::due_order(rows.iter().map(codec::outbox).collect())
    }

    async fn mark_sent(
        &self,
        id: i64,
        owner: &str,
        now: Millis,
    ) -> Result<OutboxEntry, StoreError> {
        let mut tx = self.tx().await?;
        let entry = Self::leased_entry(&mut tx, id, owner).await?;
        codec::check_lease_valid(&entry, now)?;
        if !entry.state.is_in_flight() {
            return Err(StoreError::InvalidTransition {
                entry: id,
                from: entry.state.name(),
                to: "sent",
            });
        }
        let row = sqlx::query(
            "UPDATE outbox SET state = 'sent', state_detail = NULL, attempts = attempts + 1, last_sent_at = ?2, \
             updated_at = ?2 WHERE id = ?1 RETURNING *",
        )
        .bind(id)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        codec::outbox(&row)
    }

    async fn settle_action(
        &self,
        id: i64,
        owner: &str,
        settle: &Settle,
        now: Millis,
    ) -> Result<OutboxEntry, StoreError> {
        let mut tx = self.tx().await?;
        let entry = Self::leased_entry(&mut tx, id, owner).await?;
        let cols = codec::settle_cols(id, &entry.state, settle)?;
        let row = sqlx::query(
            "UPDATE outbox SET state = ?2, state_detail = ?3, result = ?4, not_before = COALESCE(?5, not_before), \
             lease_owner = NULL, lease_until = NULL, updated_at = ?6 WHERE id = ?1 RETURNING *",
        )
        .bind(id)
        .bind(cols.state)
        .bind(cols.detail)
        .bind(cols.result)
        .bind(cols.not_before)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let sent_at = if entry.state == OutboxState::Pending { None } else { entry.last_sent_at };
        sqlx::query(
            "INSERT INTO write_log (entry_id, connection_id, attempt, sent_at, outcome, detail, recorded_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .bind(id)
        .bind(&entry.connection_id)
        .bind(entry.attempts)
        .bind(sent_at)
        .bind(settle.outcome().name())
        .bind(cols.log_detail)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        codec::outbox(&row)
    }

    async fn unclaim_actions(&self, ids: &[i64], owner: &str) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE outbox SET lease_owner = NULL, lease_until = NULL \
             WHERE id IN (SELECT value FROM json_each(?1)) AND lease_owner = ?2",
        )
        .bind(ids_json(ids))
        .bind(owner)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected())
    }

    async fn write_log(&self, entry_id: i64) -> Result<Vec<WriteLogRecord>, StoreError> {
        sqlx::query("SELECT * FROM write_log WHERE entry_id = ?1 ORDER BY id")
            .bind(entry_id)
            .fetch_all(&self.reader)
            .await?
            .iter()
            .map(codec::write_log)
            .collect()
    }

    // -- inbox ---------------------------------------------------------------------------

    async fn insert_events(
        &self,
        events: &[NewEvent],
        now: Millis,
    ) -> Result<InsertReport, StoreError> {
        let mut report = InsertReport::default();
        if events.is_empty() {
            return Ok(report);
        }
        let mut tx = self.tx().await?;
        for ev in events {
            let done = sqlx::query(
                "INSERT INTO inbox (connection_id, platform, ticket_id, kind, ticket, dedupe_key, created_at, held) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?3 <> '' AND \
                   COALESCE((SELECT state = 'suspended' FROM connections WHERE id = ?1), 0)) \
                 ON CONFLICT (connection_id, dedupe_key) DO NOTHING",
            )
            .bind(&ev.connection_id)
            .bind(&ev.platform)
            .bind(&ev.ticket_id)
            .bind(&ev.kind)
            .bind(ev.ticket.to_string())
            .bind(&ev.dedupe_key)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                if codec::is_fk_violation(&e) { StoreError::ConnectionNotFound(ev.connection_id.clone()) } else { e.into() }
            })?;
            if done.rows_affected() > 0 {
                report.new += 1;
            } else {
                report.duplicates += 1;
            }
        }
        tx.commit().await?;
        Ok(report)
    }

    async fn pull_events(&self, pull: &Pull) -> Result<Vec<InboxEvent>, StoreError> {
        let mut tx = self.tx().await?;
        let mut events = sqlx::query(
            if pull.connection_id.is_some() {
                "SELECT * FROM inbox WHERE id > ?1 AND acked_at IS NULL AND held = 0 AND connection_id = ?2 ORDER BY id LIMIT ?3"
            } else {
                "SELECT * FROM inbox WHERE id > ?1 AND acked_at IS NULL AND held = 0 ORDER BY id LIMIT ?3"
            },
        )
        .bind(pull.after)
        .bind(&pull.connection_id)
        .bind(codec::page(pull.limit))
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(codec::inbox)
        .collect::<Result<Vec<_>, _>>()?;
        let first: Vec<i64> =
            events.iter().filter(|e| e.delivered_at.is_none()).map(|e| e.id).collect();
        if !first.is_empty() {
            sqlx::query(
                "UPDATE inbox SET delivered_at = ?2 WHERE id IN (SELECT value FROM json_each(?1))",
            )
            .bind(ids_json(&first))
            .bind(pull.now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            for e in events.iter_mut().filter(|e| e.delivered_at.is_none()) {
                e.delivered_at = Some(pull.now);
            }
        }
        Ok(events)
    }

    async fn ack_events_through(
        &self,
        connection_id: Option<&str>,
        through: i64,
        now: Millis,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(
            if connection_id.is_some() {
                "UPDATE inbox SET acked_at = ?3 WHERE id <= ?2 AND acked_at IS NULL AND held = 0 AND connection_id = ?1"
            } else {
                "UPDATE inbox SET acked_at = ?3 WHERE id <= ?2 AND acked_at IS NULL AND held = 0"
            },
        )
        .bind(connection_id)
        .bind(through)
        .bind(now)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected())
    }

    async fn ack_events(&self, ids: &[i64], now: Millis) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE inbox SET acked_at = ?2 WHERE id IN (SELECT value FROM json_each(?1)) AND acked_at IS NULL",
        )
        .bind(ids_json(ids))
        .bind(now)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected())
    }

    async fn inbox_pending(&self, connection_id: &str) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM inbox WHERE connection_id = ?1 AND acked_at IS NULL",
        )
        .bind(connection_id)
        .fetch_one(&self.reader)
        .await?;
        Ok(n.max(0) as u64)
    }

    // -- alerts --------------------------------------------------------------------------

    async fn raise_alert(&self, new: &NewAlert, now: Millis) -> Result<Alert, StoreError> {
        let row = sqlx::query(
            "INSERT INTO alerts (connection_id, kind, text, detail, created_at, attempts, next_attempt_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, 0, ?5) RETURNING *",
        )
        .bind(&new.connection_id)
        .bind(&new.kind)
        .bind(&new.text)
        .bind(new.detail.to_string())
        .bind(now)
        .fetch_one(&self.writer)
        .await
        .map_err(|e| {
            if codec::is_fk_violation(&e) {
                StoreError::ConnectionNotFound(new.connection_id.clone().unwrap_or_default())
            } else {
                e.into()
            }
        })?;
        codec::alert(&row)
    }

    async fn list_alerts(
        &self,
        connection_id: Option<&str>,
        include_acked: bool,
        limit: u32,
    ) -> Result<Vec<Alert>, StoreError> {
        sqlx::query(
            "SELECT * FROM alerts WHERE (?1 IS NULL OR connection_id = ?1) AND (?2 OR acked_at IS NULL) \
             ORDER BY id DESC LIMIT ?3",
        )
        .bind(connection_id)
        .bind(include_acked)
        .bind(codec::page(limit))
        .fetch_all(&self.reader)
        .await?
        .iter()
        .map(codec::alert)
        .collect()
    }

    async fn ack_alert(&self, id: i64, now: Millis) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE alerts SET acked_at = ?2 WHERE id = ?1 AND acked_at IS NULL")
                .bind(id)
                .bind(now)
                .execute(&self.writer)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn alerts_due(&self, now: Millis, limit: u32) -> Result<Vec<Alert>, StoreError> {
        sqlx::query(
            "SELECT * FROM alerts WHERE delivered_at IS NULL AND acked_at IS NULL AND next_attempt_at <= ?1 \
             ORDER BY next_attempt_at, id LIMIT ?2",
        )
        .bind(now)
        .bind(codec::page(limit))
        .fetch_all(&self.reader)
        .await?
        .iter()
        .map(codec::alert)
        .collect()
    }

    async fn record_alert_delivery(
        &self,
        id: i64,
        delivery: &AlertDelivery,
        now: Millis,
    ) -> Result<Alert, StoreError> {
        let q = match delivery {
            AlertDelivery::Delivered => sqlx::query(
                "UPDATE alerts SET delivered_at = ?2, attempts = attempts + 1, last_error = NULL WHERE id = ?1 RETURNING *",
            )
            .bind(id)
            .bind(now),
            AlertDelivery::Failed { error, retry_at } => sqlx::query(
                "UPDATE alerts SET attempts = attempts + 1, last_error = ?2, next_attempt_at = ?3 WHERE id = ?1 RETURNING *",
            )
            .bind(id)
            .bind(error)
            .bind(*retry_at),
        };
        let row = q.fetch_optional(&self.writer).await?.ok_or(StoreError::AlertNotFound(id))?;
        codec::alert(&row)
    }

    // -- timer leases --------------------------------------------------------------------

    async fn acquire_lease(
        &self,
        connection_id: &str,
        name: &str,
        owner: &str,
        now: Millis,
        ttl: Duration,
    ) -> Result<Option<TimerLease>, StoreError> {
        codec::check_owner(owner)?;
        sqlx::query(
            "INSERT INTO timer_leases (connection_id, name, owner, held_until, generation) VALUES (?1, ?2, ?3, ?4, 1) \
             ON CONFLICT (connection_id, name) DO UPDATE SET owner = excluded.owner, held_until = excluded.held_until, \
             generation = CASE WHEN timer_leases.owner = excluded.owner AND timer_leases.held_until > ?5 \
                          THEN timer_leases.generation ELSE timer_leases.generation + 1 END \
             WHERE timer_leases.held_until <= ?5 OR timer_leases.owner = excluded.owner RETURNING *",
        )
        .bind(connection_id)
        .bind(name)
        .bind(owner)
        .bind(now.saturating_add(ms(ttl)))
        .bind(now)
        .fetch_optional(&self.writer)
        .await?
        .map(|r| codec::timer_lease(&r))
        .transpose()
    }

    async fn renew_lease(
        &self,
        connection_id: &str,
        name: &str,
        owner: &str,
        now: Millis,
        ttl: Duration,
    ) -> Result<Option<TimerLease>, StoreError> {
        codec::check_owner(owner)?;
        sqlx::query(
            "UPDATE timer_leases SET held_until = ?4 WHERE connection_id = ?1 AND name = ?2 AND owner = ?3 RETURNING *",
        )
        .bind(connection_id)
        .bind(name)
        .bind(owner)
        .bind(now.saturating_add(ms(ttl)))
        .fetch_optional(&self.writer)
        .await?
        .map(|r| codec::timer_lease(&r))
        .transpose()
    }

    async fn release_lease(
        &self,
        connection_id: &str,
        name: &str,
        owner: &str,
    ) -> Result<bool, StoreError> {
        // Keep the row (blank owner, expired) so the generation keeps counting up.
        let done = sqlx::query(
            "UPDATE timer_leases SET owner = '', held_until = 0 WHERE connection_id = ?1 AND name = ?2 AND owner = ?3",
        )
        .bind(connection_id)
        .bind(name)
        .bind(owner)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    // -- marks -----------------------------------------------------------------------------

    async fn get_mark(&self, connection_id: &str, name: &str) -> Result<Option<i64>, StoreError> {
        let v: Option<i64> =
            sqlx::query_scalar("SELECT value FROM connection_marks WHERE connection_id = ?1 AND name = ?2")
                .bind(connection_id)
                .bind(name)
                .fetch_optional(&self.reader)
                .await?;
        Ok(v)
    }

    async fn put_mark(&self, connection_id: &str, name: &str, value: i64, now: Millis) -> Result<i64, StoreError> {
        let v: i64 = sqlx::query_scalar(
            "INSERT INTO connection_marks (connection_id, name, value, updated_at) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (connection_id, name) DO UPDATE SET \
             value = CASE WHEN excluded.value > connection_marks.value THEN excluded.value ELSE connection_marks.value END, \
             updated_at = excluded.updated_at RETURNING value",
        )
        .bind(connection_id)
        .bind(name)
        .bind(value)
        .bind(now)
        .fetch_one(&self.writer)
        .await?;
        Ok(v)
    }
}
