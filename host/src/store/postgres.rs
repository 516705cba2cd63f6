//! The shared backend: PostgreSQL, for several gateway replicas.
//!
//! Replicas coordinate through the database alone:
//! - outbox claims use `FOR UPDATE SKIP LOCKED`, so concurrent claimers take disjoint entries
//!   without waiting on each other;
//! - transitions of one entry and credential compare-and-swaps lock the row (`FOR UPDATE`);
//! - duplicate enqueues are stopped by unique indexes (`INSERT ... ON CONFLICT DO NOTHING`, then
//!   the winner's entry is returned);
//! - inbox inserts take a transaction-scoped advisory lock, so ids become visible in id order.
//!   Without it, a transaction holding id 10 could commit after one holding id 11, and an app
//!   whose cursor had already moved past 11 would never see 10;
//! - migrations run under an advisory lock, so replicas starting together migrate once.
//!
//! JSON columns are JSONB (queryable by operators) and are read back as text.

use std::str::FromStr as _;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::ConnectOptions as _;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{PgPool, Postgres, Transaction};

use super::codec::{self, RowExt as _};
use super::crypto::{self, SecretKey};
use super::migrate;
use super::*;

/// Advisory lock keys (arbitrary constants, "dg" + purpose).
const MIGRATE_LOCK: i64 = 0x6467_0001;
const INBOX_LOCK: i64 = 0x6467_0002;

const MAX_CONNECTIONS: u32 = 10;
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

const CONN_COLS: &str = "id, platform, display_name, plan, settings::text AS settings, state, suspend_reason, \
    suspend_kind, admin_contact_url, probe_report::text AS probe_report, created_at, updated_at";
const OUTBOX_COLS: &str = "id, connection_id, ticket_id, action::text AS action, idempotency_key, app_key, state, \
    state_detail, attempts, not_before, lease_owner, lease_until, last_sent_at, result::text AS result, \
    created_at, updated_at";
const INBOX_COLS: &str = "id, connection_id, platform, ticket_id, kind, ticket::text AS ticket, dedupe_key, \
    created_at, delivered_at, acked_at";
const ALERT_COLS: &str = "id, connection_id, kind, text, detail::text AS detail, created_at, delivered_at, \
    attempts, next_attempt_at, last_error, acked_at";

/// A store in a PostgreSQL database.
pub struct PgStore {
    pool: PgPool,
    key: SecretKey,
    url: String,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore").field("url", &self.url).finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connect to the database at `url` (which must exist), migrate it and check `key`.
    ///
    /// # Errors
    /// See [`open`].
    pub async fn open(url: &str, key: SecretKey) -> Result<Self, StoreError> {
        let shown = redact_url(url);
        let fail = |e: sqlx::Error| StoreError::Open {
            url: shown.clone(),
            reason: format!(
                "{e} (is PostgreSQL running there, and does the database exist? deskgate does not \
                 create PostgreSQL databases: `createdb` it first)"
            ),
        };
        let opts = PgConnectOptions::from_str(url).map_err(|e| StoreError::Open {
            url: shown.clone(),
            reason: format!("not a valid PostgreSQL URL: {e}"),
        })?;
        // One direct attempt first: a pool retries until its acquire timeout and then reports
        // only "timed out", where this reports "connection refused" or "database does not exist".
        sqlx::Connection::close(opts.connect().await.map_err(fail)?).await.map_err(fail)?;
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(opts)
            .await
            .map_err(fail)?;
        let store = Self { pool, key, url: shown };
        if let Err(e) = store.prepare().await {
            store.close().await;
            return Err(e);
        }
        Ok(store)
    }

    /// Migrate and check the key, in one transaction.
    async fn prepare(&self) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATE_LOCK)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS deskgate_schema (version BIGINT PRIMARY KEY, name TEXT NOT NULL, \
             checksum TEXT NOT NULL, applied_at BIGINT NOT NULL)",
        )
        .execute(&mut *tx)
        .await?;
        let applied: Vec<(i64, String)> =
            sqlx::query_as("SELECT version, checksum FROM deskgate_schema ORDER BY version")
                .fetch_all(&mut *tx)
                .await?;
        let now = crate::clock::Clock::now_ms(&crate::clock::SystemClock);
        for m in migrate::plan(migrate::POSTGRES, &applied)? {
            // Not `raw_sql(..).execute(&mut *tx)`: that trips sqlx#3150 (not `Send`).
            sqlx::Executor::execute(&mut *tx, sqlx::raw_sql(m.sql)).await?;
            sqlx::query("INSERT INTO deskgate_schema (version, name, checksum, applied_at) VALUES ($1, $2, $3, $4)")
                .bind(m.version)
                .bind(m.name)
                .bind(m.checksum())
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("INSERT INTO deskgate_meta (key, value) VALUES ('key_check', $1) ON CONFLICT (key) DO NOTHING")
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

    async fn live_connection(
        tx: &mut Transaction<'static, Postgres>,
        id: &str,
    ) -> Result<(), StoreError> {
        let state: Option<String> =
            sqlx::query_scalar("SELECT state FROM connections WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut **tx)
                .await?;
        match state.as_deref() {
            None | Some("deleted") => Err(StoreError::ConnectionNotFound(id.to_owned())),
            Some(_) => Ok(()),
        }
    }

    /// Lock an entry for a transition by `owner`, checking the lease.
    async fn leased_entry(
        tx: &mut Transaction<'static, Postgres>,
        id: i64,
        owner: &str,
    ) -> Result<OutboxEntry, StoreError> {
        let entry =
            sqlx::query(&format!("SELECT {OUTBOX_COLS} FROM outbox WHERE id = $1 FOR UPDATE"))
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

    /// The entry that makes `new` a duplicate, if any (see [`Store::enqueue`]).
    async fn existing_action(
        &self,
        new: &NewAction,
        since: Millis,
    ) -> Result<Option<Enqueued>, StoreError> {
        if let Some(app_key) = &new.app_key
            && let Some(r) = sqlx::query(&format!(
                "SELECT {OUTBOX_COLS} FROM outbox WHERE connection_id = $1 AND app_key = $2"
            ))
            .bind(&new.connection_id)
            .bind(app_key)
            .fetch_optional(&self.pool)
            .await?
        {
            return codec::same_action_or_reused(new, app_key, codec::outbox(&r)?).map(Some);
        }
        let row = sqlx::query(&format!(
            "SELECT {OUTBOX_COLS} FROM outbox WHERE connection_id = $1 AND idempotency_key = $2 \
             AND (state IN ('pending', 'sent', 'ambiguous') OR (state IN ('confirmed', 'diverged') AND updated_at >= $3)) \
             ORDER BY (state IN ('pending', 'sent', 'ambiguous')) DESC, updated_at DESC, id DESC LIMIT 1"
        ))
        .bind(&new.connection_id)
        .bind(&new.idempotency_key)
        .bind(since)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| codec::outbox(&r).map(Enqueued::Existing)).transpose()
    }
}

fn rows<T>(rows: Vec<PgRow>, f: fn(&PgRow) -> Result<T, StoreError>) -> Result<Vec<T>, StoreError> {
    rows.iter().map(f).collect()
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COALESCE(MAX(version), 0)::bigint FROM deskgate_schema")
            .fetch_one(&self.pool)
            .await?)
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    // -- connections ---------------------------------------------------------------------

    async fn create_connection(
        &self,
        new: &NewConnection,
        now: Millis,
    ) -> Result<Connection, StoreError> {
        let row = sqlx::query(&format!(
            "INSERT INTO connections (id, platform, display_name, plan, settings, state, admin_contact_url, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5::jsonb, 'pending_probe', $6, $7, $7) RETURNING {CONN_COLS}"
        ))
        .bind(&new.id)
        .bind(&new.platform)
        .bind(&new.display_name)
        .bind(&new.plan)
        .bind(new.settings.to_string())
        .bind(&new.admin_contact_url)
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| {
            if codec::is_unique_violation(&e) { StoreError::ConnectionExists(new.id.clone()) } else { e.into() }
        })?;
        codec::connection(&row)
    }

    async fn get_connection(&self, id: &str) -> Result<Option<Connection>, StoreError> {
        sqlx::query(&format!("SELECT {CONN_COLS} FROM connections WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| codec::connection(&r))
            .transpose()
    }

    async fn list_connections(&self, include_deleted: bool) -> Result<Vec<Connection>, StoreError> {
        let r = sqlx::query(&format!("SELECT {CONN_COLS} FROM connections WHERE $1::boolean OR state <> 'deleted' ORDER BY id"))
            .bind(include_deleted)
            .fetch_all(&self.pool)
            .await?;
        rows(r, codec::connection)
    }

    async fn update_connection(
        &self,
        id: &str,
        patch: &ConnectionPatch,
        now: Millis,
    ) -> Result<Connection, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut c =
            sqlx::query(&format!("SELECT {CONN_COLS} FROM connections WHERE id = $1 FOR UPDATE"))
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
        let row = sqlx::query(&format!(
            "UPDATE connections SET display_name = $2, plan = $3, settings = $4::jsonb, admin_contact_url = $5, \
             updated_at = $6 WHERE id = $1 RETURNING {CONN_COLS}"
        ))
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
        let mut tx = self.pool.begin().await?;
        let live = matches!(state, ConnectionState::Live);
        if live {
            // New inbox ids below (the held events'): the inserters' lock, taken before the
            // connection's row as they take them, so that ids still become visible in order.
            sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(INBOX_LOCK).execute(&mut *tx).await?;
        }
        let row = sqlx::query(&format!(
            "UPDATE connections SET state = $2, suspend_reason = $3, suspend_kind = $4, updated_at = $5 \
             WHERE id = $1 RETURNING {CONN_COLS}"
        ))
        .bind(id)
        .bind(name)
        .bind(reason)
        .bind(kind)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::ConnectionNotFound(id.to_owned()))?;
        if matches!(state, ConnectionState::Deleted) {
            sqlx::query("DELETE FROM credentials WHERE connection_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM webhook_secrets WHERE connection_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        if live {
            // Events held while it was suspended go to the app now, after everything it may have
            // been given meanwhile: new ids from the identity, in their old order.
            let held: Vec<i64> = sqlx::query_scalar("SELECT id FROM inbox WHERE connection_id = $1 AND held ORDER BY id")
                .bind(id)
                .fetch_all(&mut *tx)
                .await?;
            for old in held {
                sqlx::query("UPDATE inbox SET id = DEFAULT, held = false WHERE id = $1").bind(old).execute(&mut *tx).await?;
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
        let row = sqlx::query(&format!(
            "UPDATE connections SET probe_report = $2::jsonb, updated_at = $3 WHERE id = $1 RETURNING {CONN_COLS}"
        ))
        .bind(id)
        .bind(report.to_string())
        .bind(now)
        .fetch_optional(&self.pool)
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
        let mut tx = self.pool.begin().await?;
        Self::live_connection(&mut tx, connection_id).await?;
        let current: Option<i64> = sqlx::query_scalar(
            "SELECT version FROM credentials WHERE connection_id = $1 FOR UPDATE",
        )
        .bind(connection_id)
        .fetch_optional(&mut *tx)
        .await?;
        codec::check_expect(connection_id, expect, current)?;
        let q = match current {
            // A plain INSERT: a replica inserting concurrently makes this one fail on the key
            // rather than silently overwrite it.
            None => sqlx::query(
                "INSERT INTO credentials (connection_id, scheme, sealed, expires_at, version, updated_at) \
                 VALUES ($1, $2, $3, $4, 1, $5) RETURNING *",
            ),
            Some(_) => sqlx::query(
                "UPDATE credentials SET scheme = $2, sealed = $3, expires_at = $4, version = version + 1, \
                 refresh_owner = NULL, refresh_started_at = NULL, updated_at = $5 WHERE connection_id = $1 RETURNING *",
            ),
        };
        let row = q
            .bind(connection_id)
            .bind(secret.scheme())
            .bind(sealed)
            .bind(expires_at)
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| {
                if codec::is_unique_violation(&e) {
                    StoreError::VersionConflict {
                        connection: connection_id.to_owned(),
                        expected: "absent".into(),
                        actual: "written concurrently".into(),
                    }
                } else {
                    e.into()
                }
            })?;
        tx.commit().await?;
        codec::credential(&row, &self.key)
    }

    async fn get_credential(&self, connection_id: &str) -> Result<Option<Credential>, StoreError> {
        sqlx::query("SELECT * FROM credentials WHERE connection_id = $1")
            .bind(connection_id)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| codec::credential(&r, &self.key))
            .transpose()
    }

    async fn begin_refresh(
        &self,
        connection_id: &str,
        claim: &RefreshClaim,
    ) -> Result<Credential, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query("SELECT * FROM credentials WHERE connection_id = $1 FOR UPDATE")
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
            "UPDATE credentials SET refresh_owner = $2, refresh_started_at = $3 WHERE connection_id = $1 RETURNING *",
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
             WHERE connection_id = $1 AND refresh_owner = $2",
        )
        .bind(connection_id)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    // -- webhook secrets -------------------------------------------------------------------

    async fn set_webhook_secret(
        &self,
        connection_id: &str,
        secret: Option<&[u8]>,
        allow_unsigned: bool,
        now: Millis,
    ) -> Result<Option<WebhookSecretRecord>, StoreError> {
        let sealed = secret.map(|s| crypto::seal(&self.key, &crypto::webhook_secret_aad(connection_id), s));
        let mut tx = self.pool.begin().await?;
        // The connection's row is share-locked until commit: a concurrent delete (which erases
        // the secret) waits for this write instead of missing it and leaving a secret behind.
        let state: Option<String> = sqlx::query_scalar("SELECT state FROM connections WHERE id = $1 FOR SHARE")
            .bind(connection_id)
            .fetch_optional(&mut *tx)
            .await?;
        if matches!(state.as_deref(), None | Some("deleted")) {
            return Err(StoreError::ConnectionNotFound(connection_id.to_owned()));
        }
        if sealed.is_none() && !allow_unsigned {
            sqlx::query("DELETE FROM webhook_secrets WHERE connection_id = $1")
                .bind(connection_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(None);
        }
        let row = sqlx::query(
            "INSERT INTO webhook_secrets (connection_id, sealed, allow_unsigned, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (connection_id) DO UPDATE SET sealed = excluded.sealed, \
             allow_unsigned = excluded.allow_unsigned, updated_at = excluded.updated_at RETURNING *",
        )
        .bind(connection_id)
        .bind(sealed)
        .bind(allow_unsigned)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        codec::webhook_secret(&row, &self.key).map(Some)
    }

    async fn get_webhook_secret(&self, connection_id: &str) -> Result<Option<WebhookSecretRecord>, StoreError> {
        sqlx::query("SELECT * FROM webhook_secrets WHERE connection_id = $1")
            .bind(connection_id)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| codec::webhook_secret(&r, &self.key))
            .transpose()
    }

    // -- outbox --------------------------------------------------------------------------

    async fn enqueue(
        &self,
        new: &NewAction,
        now: Millis,
        dedupe_window: Duration,
    ) -> Result<Enqueued, StoreError> {
        let since = now.saturating_sub(ms(dedupe_window));
        // Look, then insert guarded by the unique indexes. Losing the insert race means another
        // replica's entry committed in between: look again and return it.
        for _ in 0..3 {
            if let Some(found) = self.existing_action(new, since).await? {
                return Ok(found);
            }
            let mut tx = self.pool.begin().await?;
            Self::live_connection(&mut tx, &new.connection_id).await?;
            let row = sqlx::query(&format!(
                "INSERT INTO outbox (connection_id, ticket_id, action, idempotency_key, app_key, state, attempts, \
                 not_before, created_at, updated_at) VALUES ($1, $2, $3::jsonb, $4, $5, 'pending', 0, $6, $7, $7) \
                 ON CONFLICT DO NOTHING RETURNING {OUTBOX_COLS}"
            ))
            .bind(&new.connection_id)
            .bind(&new.ticket_id)
            .bind(new.action.to_string())
            .bind(&new.idempotency_key)
            .bind(&new.app_key)
            .bind(new.not_before)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            tx.commit().await?;
            if let Some(row) = row {
                return Ok(Enqueued::Created(codec::outbox(&row)?));
            }
        }
        Err(StoreError::Corrupt(format!(
            "enqueue on `{}` kept conflicting with an entry it could not find",
            new.connection_id
        )))
    }

    async fn get_action(&self, id: i64) -> Result<Option<OutboxEntry>, StoreError> {
        sqlx::query(&format!("SELECT {OUTBOX_COLS} FROM outbox WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| codec::outbox(&r))
            .transpose()
    }

    async fn find_action_by_app_key(
        &self,
        connection_id: &str,
        app_key: &str,
    ) -> Result<Option<OutboxEntry>, StoreError> {
        sqlx::query(&format!(
            "SELECT {OUTBOX_COLS} FROM outbox WHERE connection_id = $1 AND app_key = $2"
        ))
        .bind(connection_id)
        .bind(app_key)
        .fetch_optional(&self.pool)
        .await?
        .map(|r| codec::outbox(&r))
        .transpose()
    }

    async fn list_actions(&self, q: &ActionQuery) -> Result<Vec<OutboxEntry>, StoreError> {
        // Only the filters asked for: a generic plan for `$1 IS NULL OR ...` cannot use the
        // per-ticket index. Parameters are numbered in the order they are bound.
        let mut sql = format!("SELECT {OUTBOX_COLS} FROM outbox WHERE id > $1");
        let mut n = 1;
        if q.connection_id.is_some() {
            n += 1;
            sql.push_str(&format!(" AND connection_id = ${n}"));
        }
        if q.ticket_id.is_some() {
            n += 1;
            sql.push_str(&format!(" AND ticket_id = ${n}"));
        }
        if q.in_flight_only {
            sql.push_str(" AND state IN ('pending', 'sent', 'ambiguous')");
        }
        sql.push_str(&format!(" ORDER BY id LIMIT ${}", n + 1));
        let mut query = sqlx::query(&sql).bind(q.after_id);
        if let Some(c) = &q.connection_id {
            query = query.bind(c);
        }
        if let Some(t) = &q.ticket_id {
            query = query.bind(t);
        }
        let r = query.bind(codec::page(q.limit)).fetch_all(&self.pool).await?;
        rows(r, codec::outbox)
    }

    async fn claim_actions(&self, claim: &Claim) -> Result<Vec<OutboxEntry>, StoreError> {
        let one = if claim.connection_id.is_some() { "AND o.connection_id = $5 " } else { "" };
        let sql = format!(
            "WITH due AS (\
               SELECT o.id AS due_id FROM outbox o JOIN connections c ON c.id = o.connection_id \
               WHERE o.state IN ('pending', 'sent', 'ambiguous') AND o.not_before <= $3 \
               AND (o.lease_until IS NULL OR o.lease_until <= $3) AND c.state = 'live' {one}\
               ORDER BY o.not_before, o.id LIMIT $4 FOR UPDATE OF o SKIP LOCKED) \
             UPDATE outbox SET lease_owner = $1, lease_until = $2 FROM due WHERE outbox.id = due.due_id \
             RETURNING {OUTBOX_COLS}"
        );
        let mut query = sqlx::query(&sql)
            .bind(&claim.owner)
            .bind(claim.now.saturating_add(ms(claim.lease_for)))
            .bind(claim.now)
            .bind(i64::from(claim.limit));
        if let Some(c) = &claim.connection_id {
            query = query.bind(c);
        }
        let r = query.fetch_all(&self.pool).await?;
        codec::due_order(rows(r, codec::outbox))
    }

    async fn mark_sent(
        &self,
        id: i64,
        owner: &str,
        now: Millis,
    ) -> Result<OutboxEntry, StoreError> {
        let mut tx = self.pool.begin().await?;
        let entry = Self::leased_entry(&mut tx, id, owner).await?;
        codec::check_lease_valid(&entry, now)?;
        if !entry.state.is_in_flight() {
            return Err(StoreError::InvalidTransition {
                entry: id,
                from: entry.state.name(),
                to: "sent",
            });
        }
        let row = sqlx::query(&format!(
            "UPDATE outbox SET state = 'sent', state_detail = NULL, attempts = attempts + 1, last_sent_at = $2, \
             updated_at = $2 WHERE id = $1 RETURNING {OUTBOX_COLS}"
        ))
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
        let mut tx = self.pool.begin().await?;
        let entry = Self::leased_entry(&mut tx, id, owner).await?;
        let cols = codec::settle_cols(id, &entry.state, settle)?;
        let row = sqlx::query(&format!(
            "UPDATE outbox SET state = $2, state_detail = $3, result = $4::jsonb, not_before = COALESCE($5, not_before), \
             lease_owner = NULL, lease_until = NULL, updated_at = $6 WHERE id = $1 RETURNING {OUTBOX_COLS}"
        ))
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
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
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
            "UPDATE outbox SET lease_owner = NULL, lease_until = NULL WHERE id = ANY($1) AND lease_owner = $2",
        )
        .bind(ids)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn write_log(&self, entry_id: i64) -> Result<Vec<WriteLogRecord>, StoreError> {
        let r = sqlx::query("SELECT * FROM write_log WHERE entry_id = $1 ORDER BY id")
            .bind(entry_id)
            .fetch_all(&self.pool)
            .await?;
        rows(r, codec::write_log)
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
        let mut tx = self.pool.begin().await?;
        // Ids must become visible in id order (see the module docs): one inserter at a time.
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(INBOX_LOCK).execute(&mut *tx).await?;
        // A suspended connection's ticket events are held. FOR SHARE makes a concurrent resume
        // (which updates the row) wait for this insert, or this insert wait for it, so an event
        // is never held after the resume released the others.
        let mut suspended: std::collections::HashMap<String, bool> = std::collections::HashMap::new();
        for ev in events {
            let held = if ev.ticket_id.is_empty() {
                false
            } else if let Some(h) = suspended.get(&ev.connection_id) {
                *h
            } else {
                let state: Option<String> = sqlx::query_scalar("SELECT state FROM connections WHERE id = $1 FOR SHARE")
                    .bind(&ev.connection_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                let h = state.as_deref() == Some("suspended");
                suspended.insert(ev.connection_id.clone(), h);
                h
            };
            let done = sqlx::query(
                "INSERT INTO inbox (connection_id, platform, ticket_id, kind, ticket, dedupe_key, created_at, held) \
                 VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8) ON CONFLICT (connection_id, dedupe_key) DO NOTHING",
            )
            .bind(&ev.connection_id)
            .bind(&ev.platform)
            .bind(&ev.ticket_id)
            .bind(&ev.kind)
            .bind(ev.ticket.to_string())
            .bind(&ev.dedupe_key)
            .bind(now)
            .bind(held)
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
        let one = if pull.connection_id.is_some() { " AND connection_id = $3" } else { "" };
        let sql = format!("SELECT {INBOX_COLS} FROM inbox WHERE id > $1 AND acked_at IS NULL AND NOT held{one} ORDER BY id LIMIT $2");
        let mut query = sqlx::query(&sql).bind(pull.after).bind(codec::page(pull.limit));
        if let Some(c) = &pull.connection_id {
            query = query.bind(c);
        }
        let r = query.fetch_all(&self.pool).await?;
        let mut events = rows(r, codec::inbox)?;
        let first: Vec<i64> =
            events.iter().filter(|e| e.delivered_at.is_none()).map(|e| e.id).collect();
        if !first.is_empty() {
            sqlx::query(
                "UPDATE inbox SET delivered_at = $2 WHERE id = ANY($1) AND delivered_at IS NULL",
            )
            .bind(&first)
            .bind(pull.now)
            .execute(&self.pool)
            .await?;
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
        let done = match connection_id {
            Some(c) => sqlx::query("UPDATE inbox SET acked_at = $2 WHERE id <= $1 AND acked_at IS NULL AND NOT held AND connection_id = $3")
                .bind(through)
                .bind(now)
                .bind(c),
            None => sqlx::query("UPDATE inbox SET acked_at = $2 WHERE id <= $1 AND acked_at IS NULL AND NOT held").bind(through).bind(now),
        }
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn ack_events(&self, ids: &[i64], now: Millis) -> Result<u64, StoreError> {
        let done =
            sqlx::query("UPDATE inbox SET acked_at = $2 WHERE id = ANY($1) AND acked_at IS NULL")
                .bind(ids)
                .bind(now)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected())
    }

    async fn inbox_pending(&self, connection_id: &str) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM inbox WHERE connection_id = $1 AND acked_at IS NULL",
        )
        .bind(connection_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(n.max(0) as u64)
    }

    // -- alerts --------------------------------------------------------------------------

    async fn raise_alert(&self, new: &NewAlert, now: Millis) -> Result<Alert, StoreError> {
        let row = sqlx::query(&format!(
            "INSERT INTO alerts (connection_id, kind, text, detail, created_at, attempts, next_attempt_at) \
             VALUES ($1, $2, $3, $4::jsonb, $5, 0, $5) RETURNING {ALERT_COLS}"
        ))
        .bind(&new.connection_id)
        .bind(&new.kind)
        .bind(&new.text)
        .bind(new.detail.to_string())
        .bind(now)
        .fetch_one(&self.pool)
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
        let r = sqlx::query(&format!(
            "SELECT {ALERT_COLS} FROM alerts WHERE ($1::text IS NULL OR connection_id = $1) \
             AND ($2::boolean OR acked_at IS NULL) ORDER BY id DESC LIMIT $3"
        ))
        .bind(connection_id)
        .bind(include_acked)
        .bind(codec::page(limit))
        .fetch_all(&self.pool)
        .await?;
        rows(r, codec::alert)
    }

    async fn ack_alert(&self, id: i64, now: Millis) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE alerts SET acked_at = $2 WHERE id = $1 AND acked_at IS NULL")
                .bind(id)
                .bind(now)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn alerts_due(&self, now: Millis, limit: u32) -> Result<Vec<Alert>, StoreError> {
        let r = sqlx::query(&format!(
            "SELECT {ALERT_COLS} FROM alerts WHERE delivered_at IS NULL AND acked_at IS NULL AND next_attempt_at <= $1 \
             ORDER BY next_attempt_at, id LIMIT $2"
        ))
        .bind(now)
        .bind(codec::page(limit))
        .fetch_all(&self.pool)
        .await?;
        rows(r, codec::alert)
    }

    async fn record_alert_delivery(
        &self,
        id: i64,
        delivery: &AlertDelivery,
        now: Millis,
    ) -> Result<Alert, StoreError> {
        let delivered = format!(
            "UPDATE alerts SET delivered_at = $2, attempts = attempts + 1, last_error = NULL WHERE id = $1 RETURNING {ALERT_COLS}"
        );
        let failed = format!(
            "UPDATE alerts SET attempts = attempts + 1, last_error = $2, next_attempt_at = $3 WHERE id = $1 RETURNING {ALERT_COLS}"
        );
        let q = match delivery {
            AlertDelivery::Delivered => sqlx::query(&delivered).bind(id).bind(now),
            AlertDelivery::Failed { error, retry_at } => {
                sqlx::query(&failed).bind(id).bind(error).bind(*retry_at)
            }
        };
        let row = q.fetch_optional(&self.pool).await?.ok_or(StoreError::AlertNotFound(id))?;
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
            "INSERT INTO timer_leases (connection_id, name, owner, held_until, generation) VALUES ($1, $2, $3, $4, 1) \
             ON CONFLICT (connection_id, name) DO UPDATE SET owner = EXCLUDED.owner, held_until = EXCLUDED.held_until, \
             generation = CASE WHEN timer_leases.owner = EXCLUDED.owner AND timer_leases.held_until > $5 \
                          THEN timer_leases.generation ELSE timer_leases.generation + 1 END \
             WHERE timer_leases.held_until <= $5 OR timer_leases.owner = EXCLUDED.owner RETURNING *",
        )
        .bind(connection_id)
        .bind(name)
        .bind(owner)
        .bind(now.saturating_add(ms(ttl)))
        .bind(now)
        .fetch_optional(&self.pool)
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
            "UPDATE timer_leases SET held_until = $4 WHERE connection_id = $1 AND name = $2 AND owner = $3 RETURNING *",
        )
        .bind(connection_id)
        .bind(name)
        .bind(owner)
        .bind(now.saturating_add(ms(ttl)))
        .fetch_optional(&self.pool)
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
            "UPDATE timer_leases SET owner = '', held_until = 0 WHERE connection_id = $1 AND name = $2 AND owner = $3",
        )
        .bind(connection_id)
        .bind(name)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn get_lease(&self, connection_id: &str, name: &str) -> Result<Option<TimerLease>, StoreError> {
        sqlx::query("SELECT * FROM timer_leases WHERE connection_id = $1 AND name = $2")
            .bind(connection_id)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| codec::timer_lease(&r))
            .transpose()
    }

    // -- marks -----------------------------------------------------------------------------

    async fn get_mark(&self, connection_id: &str, name: &str) -> Result<Option<i64>, StoreError> {
        let v: Option<i64> =
            sqlx::query_scalar("SELECT value FROM connection_marks WHERE connection_id = $1 AND name = $2")
                .bind(connection_id)
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        Ok(v)
    }

    async fn put_mark(&self, connection_id: &str, name: &str, value: i64, now: Millis) -> Result<i64, StoreError> {
        let v: i64 = sqlx::query_scalar(
            "INSERT INTO connection_marks (connection_id, name, value, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (connection_id, name) DO UPDATE SET \
             value = CASE WHEN excluded.value > connection_marks.value THEN excluded.value ELSE connection_marks.value END, \
             updated_at = excluded.updated_at RETURNING value",
        )
        .bind(connection_id)
        .bind(name)
        .bind(value)
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(v)
    }
}
