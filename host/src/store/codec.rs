//! Rows to types and states to columns, shared by both backends.
//!
//! Both backends select the same column names (PostgreSQL casts its JSONB columns to text), so
//! one decoder per type serves both. A value that does not decode is [`StoreError::Corrupt`].

use serde_json::Value;
use sqlx::Row as _;
use sqlx::postgres::PgRow;

use super::crypto::{self, SecretKey};
use super::{
    Alert, AttemptOutcome, Connection, ConnectionState, Credential, CredentialSecret, Enqueued,
    Expect, InboxEvent, Lease, NewAction, OutboxEntry, OutboxState, RefreshClaim, RefreshMarker,
    StoreError, TimerLease, WebhookSecretRecord, WriteLogRecord,
};
use crate::clock::Millis;

/// Typed column access that reports decoding failures as [`StoreError::Corrupt`].
pub(crate) trait RowExt {
    fn i64(&self, col: &str) -> Result<i64, StoreError>;
    fn opt_i64(&self, col: &str) -> Result<Option<i64>, StoreError>;
    fn string(&self, col: &str) -> Result<String, StoreError>;
    fn opt_string(&self, col: &str) -> Result<Option<String>, StoreError>;
    fn bytes(&self, col: &str) -> Result<Vec<u8>, StoreError>;
    fn opt_bytes(&self, col: &str) -> Result<Option<Vec<u8>>, StoreError>;
    fn bool(&self, col: &str) -> Result<bool, StoreError>;

    fn json(&self, col: &str) -> Result<Value, StoreError> {
        let text = self.string(col)?;
        serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("column {col}: {e}")))
    }

    fn opt_json(&self, col: &str) -> Result<Option<Value>, StoreError> {
        self.opt_string(col)?
            .map(|t| {
                serde_json::from_str(&t)
                    .map_err(|e| StoreError::Corrupt(format!("column {col}: {e}")))
            })
            .transpose()
    }
}

macro_rules! row_ext {
    ($row:ty) => {
        impl RowExt for $row {
            fn i64(&self, col: &str) -> Result<i64, StoreError> {
                self.try_get(col).map_err(|e| corrupt(col, e))
            }
            fn opt_i64(&self, col: &str) -> Result<Option<i64>, StoreError> {
                self.try_get(col).map_err(|e| corrupt(col, e))
            }
            fn string(&self, col: &str) -> Result<String, StoreError> {
                self.try_get(col).map_err(|e| corrupt(col, e))
            }
            fn opt_string(&self, col: &str) -> Result<Option<String>, StoreError> {
                self.try_get(col).map_err(|e| corrupt(col, e))
            }
            fn bytes(&self, col: &str) -> Result<Vec<u8>, StoreError> {
                self.try_get(col).map_err(|e| corrupt(col, e))
            }
            fn opt_bytes(&self, col: &str) -> Result<Option<Vec<u8>>, StoreError> {
                self.try_get(col).map_err(|e| corrupt(col, e))
            }
            fn bool(&self, col: &str) -> Result<bool, StoreError> {
                self.try_get(col).map_err(|e| corrupt(col, e))
            }
        }
    };
}
row_ext!(PgRow);

/// SQLite rows (rusqlite), columns looked up by name like sqlx's.
impl RowExt for rusqlite::Row<'_> {
    fn i64(&self, col: &str) -> Result<i64, StoreError> {
        self.get(col).map_err(|e| corrupt(col, e))
    }
    fn opt_i64(&self, col: &str) -> Result<Option<i64>, StoreError> {
        self.get(col).map_err(|e| corrupt(col, e))
    }
    fn string(&self, col: &str) -> Result<String, StoreError> {
        self.get(col).map_err(|e| corrupt(col, e))
    }
    fn opt_string(&self, col: &str) -> Result<Option<String>, StoreError> {
        self.get(col).map_err(|e| corrupt(col, e))
    }
    fn bytes(&self, col: &str) -> Result<Vec<u8>, StoreError> {
        self.get(col).map_err(|e| corrupt(col, e))
    }
    fn opt_bytes(&self, col: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(col).map_err(|e| corrupt(col, e))
    }
    fn bool(&self, col: &str) -> Result<bool, StoreError> {
        self.get(col).map_err(|e| corrupt(col, e))
    }
}

fn corrupt(col: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("column {col}: {e}"))
}

/// `(state, suspend_reason, suspend_kind)` columns for a connection state.
pub(crate) fn connection_state_cols(
    s: &ConnectionState,
) -> (&'static str, Option<&str>, Option<&str>) {
    match s {
        ConnectionState::Suspended { reason, kind } => (s.name(), Some(reason), Some(kind)),
        _ => (s.name(), None, None),
    }
}

pub(crate) fn connection<R: RowExt>(r: &R) -> Result<Connection, StoreError> {
    let state = match r.string("state")?.as_str() {
        "pending_probe" => ConnectionState::PendingProbe,
        "live" => ConnectionState::Live,
        "suspended" => ConnectionState::Suspended {
            reason: r.opt_string("suspend_reason")?.unwrap_or_default(),
            kind: r.opt_string("suspend_kind")?.unwrap_or_default(),
        },
        "deleted" => ConnectionState::Deleted,
        other => return Err(StoreError::Corrupt(format!("unknown connection state `{other}`"))),
    };
    Ok(Connection {
        id: r.string("id")?,
        platform: r.string("platform")?,
        display_name: r.string("display_name")?,
        plan: r.opt_string("plan")?,
        settings: r.json("settings")?,
        state,
        admin_contact_url: r.opt_string("admin_contact_url")?,
        probe_report: r.opt_json("probe_report")?,
        created_at: r.i64("created_at")?,
        updated_at: r.i64("updated_at")?,
    })
}

pub(crate) fn credential<R: RowExt>(r: &R, key: &SecretKey) -> Result<Credential, StoreError> {
    let connection_id = r.string("connection_id")?;
    let plain = crypto::unseal(key, &crypto::credential_aad(&connection_id), &r.bytes("sealed")?)?;
    let secret: CredentialSecret = serde_json::from_slice(&plain).map_err(|e| {
        StoreError::Corrupt(format!("credentials of `{connection_id}` do not decode: {e}"))
    })?;
    let refresh_in_flight = match (r.opt_string("refresh_owner")?, r.opt_i64("refresh_started_at")?)
    {
        (Some(owner), Some(started_at)) => Some(RefreshMarker { owner, started_at }),
        _ => None,
    };
    Ok(Credential {
        connection_id,
        secret,
        expires_at: r.opt_i64("expires_at")?,
        version: r.i64("version")?,
        refresh_in_flight,
        updated_at: r.i64("updated_at")?,
    })
}

/// A `webhook_secrets` row, the secret unsealed.
pub(crate) fn webhook_secret<R: RowExt>(r: &R, key: &SecretKey) -> Result<WebhookSecretRecord, StoreError> {
    let connection_id = r.string("connection_id")?;
    let secret = r
        .opt_bytes("sealed")?
        .map(|blob| crypto::unseal(key, &crypto::webhook_secret_aad(&connection_id), &blob))
        .transpose()?;
    Ok(WebhookSecretRecord { connection_id, secret, allow_unsigned: r.bool("allow_unsigned")?, updated_at: r.i64("updated_at")? })
}

/// Serialize a secret for sealing.
pub(crate) fn secret_plaintext(secret: &CredentialSecret) -> Vec<u8> {
    serde_json::to_vec(secret).expect("a credential secret always serializes")
}

pub(crate) fn outbox<R: RowExt>(r: &R) -> Result<OutboxEntry, StoreError> {
    let detail = r.opt_string("state_detail")?.unwrap_or_default();
    let state = match r.string("state")?.as_str() {
        "pending" => OutboxState::Pending,
        "sent" => OutboxState::Sent,
        "confirmed" => OutboxState::Confirmed,
        "failed" => OutboxState::Failed { why: detail },
        "ambiguous" => OutboxState::Ambiguous,
        "diverged" => OutboxState::Diverged { detail },
        other => return Err(StoreError::Corrupt(format!("unknown outbox state `{other}`"))),
    };
    let lease = match (r.opt_string("lease_owner")?, r.opt_i64("lease_until")?) {
        (Some(owner), Some(until)) => Some(Lease { owner, until }),
        _ => None,
    };
    Ok(OutboxEntry {
        id: r.i64("id")?,
        connection_id: r.string("connection_id")?,
        ticket_id: r.string("ticket_id")?,
        action: r.json("action")?,
        idempotency_key: r.string("idempotency_key")?,
        app_key: r.opt_string("app_key")?,
        state,
        attempts: r.i64("attempts")?,
        not_before: r.i64("not_before")?,
        lease,
        last_sent_at: r.opt_i64("last_sent_at")?,
        result: r.opt_json("result")?,
        created_at: r.i64("created_at")?,
        updated_at: r.i64("updated_at")?,
    })
}

pub(crate) fn write_log<R: RowExt>(r: &R) -> Result<WriteLogRecord, StoreError> {
    let outcome = match r.string("outcome")?.as_str() {
        "confirmed" => AttemptOutcome::Confirmed,
        "failed" => AttemptOutcome::Failed,
        "ambiguous" => AttemptOutcome::Ambiguous,
        "diverged" => AttemptOutcome::Diverged,
        "retry" => AttemptOutcome::Retry,
        other => return Err(StoreError::Corrupt(format!("unknown attempt outcome `{other}`"))),
    };
    Ok(WriteLogRecord {
        id: r.i64("id")?,
        entry_id: r.i64("entry_id")?,
        connection_id: r.string("connection_id")?,
        attempt: r.i64("attempt")?,
        sent_at: r.opt_i64("sent_at")?,
        outcome,
        detail: r.string("detail")?,
        recorded_at: r.i64("recorded_at")?,
    })
}

pub(crate) fn inbox<R: RowExt>(r: &R) -> Result<InboxEvent, StoreError> {
    Ok(InboxEvent {
        id: r.i64("id")?,
        connection_id: r.string("connection_id")?,
        platform: r.string("platform")?,
        ticket_id: r.string("ticket_id")?,
        kind: r.string("kind")?,
        ticket: r.json("ticket")?,
        dedupe_key: r.string("dedupe_key")?,
        created_at: r.i64("created_at")?,
        delivered_at: r.opt_i64("delivered_at")?,
        acked_at: r.opt_i64("acked_at")?,
    })
}

pub(crate) fn alert<R: RowExt>(r: &R) -> Result<Alert, StoreError> {
    Ok(Alert {
        id: r.i64("id")?,
        connection_id: r.opt_string("connection_id")?,
        kind: r.string("kind")?,
        text: r.string("text")?,
        detail: r.json("detail")?,
        created_at: r.i64("created_at")?,
        delivered_at: r.opt_i64("delivered_at")?,
        attempts: r.i64("attempts")?,
        next_attempt_at: r.i64("next_attempt_at")?,
        last_error: r.opt_string("last_error")?,
        acked_at: r.opt_i64("acked_at")?,
    })
}

pub(crate) fn timer_lease<R: RowExt>(r: &R) -> Result<TimerLease, StoreError> {
    Ok(TimerLease {
        connection_id: r.string("connection_id")?,
        name: r.string("name")?,
        owner: r.string("owner")?,
        until: r.i64("held_until")?,
        generation: r.i64("generation")?,
    })
}

/// Is a foreign-key violation (an unknown connection).
pub(crate) fn is_fk_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_foreign_key_violation())
}

/// Is a unique violation.
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// The extended result code of a SQLite failure.
fn sqlite_extended_code(e: &rusqlite::Error) -> Option<std::ffi::c_int> {
    match e {
        rusqlite::Error::SqliteFailure(f, _) => Some(f.extended_code),
        _ => None,
    }
}

/// Is a foreign-key violation (an unknown connection), on SQLite.
pub(crate) fn sqlite_is_fk_violation(e: &rusqlite::Error) -> bool {
    sqlite_extended_code(e) == Some(rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY)
}

/// Is a unique violation on SQLite (a `UNIQUE` index or the primary key, as sqlx counts them).
pub(crate) fn sqlite_is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(
        sqlite_extended_code(e),
        Some(rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
    )
}

/// The policy shared by both backends for a settle request: the new state and its columns, or
/// the reason it is refused.
pub(crate) struct SettleCols<'a> {
    pub state: &'static str,
    pub detail: Option<&'a str>,
    pub result: Option<String>,
    pub not_before: Option<i64>,
    pub log_detail: &'a str,
}

pub(crate) fn settle_cols<'a>(
    id: i64,
    from: &OutboxState,
    settle: &'a super::Settle,
) -> Result<SettleCols<'a>, StoreError> {
    use super::Settle as S;
    let allowed = match settle {
        S::Confirmed { .. } | S::Diverged { .. } => {
            matches!(from, OutboxState::Sent | OutboxState::Ambiguous)
        }
        S::Ambiguous { .. } => matches!(from, OutboxState::Sent),
        S::Failed { .. } | S::Retry { .. } => from.is_in_flight(),
    };
    if !allowed {
        return Err(StoreError::InvalidTransition {
            entry: id,
            from: from.name(),
            to: settle.outcome().name(),
        });
    }
    let json = |v: &Value| v.to_string();
    Ok(match settle {
        S::Confirmed { result, detail } => SettleCols {
            state: "confirmed",
            detail: None,
            result: Some(json(result)),
            not_before: None,
            log_detail: detail,
        },
        S::Failed { why, result } => SettleCols {
            state: "failed",
            detail: Some(why),
            result: result.as_ref().map(json),
            not_before: None,
            log_detail: why,
        },
        S::Ambiguous { detail, not_before } => SettleCols {
            state: "ambiguous",
            detail: None,
            result: None,
            not_before: Some(*not_before),
            log_detail: detail,
        },
        S::Diverged { detail, result } => SettleCols {
            state: "diverged",
            detail: Some(detail),
            result: Some(json(result)),
            not_before: None,
            log_detail: detail,
        },
        S::Retry { detail, not_before } => SettleCols {
            state: "pending",
            detail: None,
            result: None,
            not_before: Some(*not_before),
            log_detail: detail,
        },
    })
}

// -- checks shared by both backends ------------------------------------------------------------

/// A page size: 0 means 100.
pub(crate) fn page(limit: u32) -> i64 {
    if limit == 0 { 100 } else { i64::from(limit) }
}

pub(crate) fn check_owner(owner: &str) -> Result<(), StoreError> {
    if owner.is_empty() {
        return Err(StoreError::Corrupt("a lease owner must not be empty".into()));
    }
    Ok(())
}

pub(crate) fn check_expect(
    connection_id: &str,
    expect: Expect,
    current: Option<i64>,
) -> Result<(), StoreError> {
    let ok = match expect {
        Expect::Any => true,
        Expect::Absent => current.is_none(),
        Expect::Version(v) => current == Some(v),
    };
    if ok {
        return Ok(());
    }
    let show = |v: Option<i64>| v.map_or("absent".to_string(), |v| format!("version {v}"));
    Err(StoreError::VersionConflict {
        connection: connection_id.to_owned(),
        expected: match expect {
            Expect::Absent => "absent".into(),
            Expect::Version(v) => format!("version {v}"),
            Expect::Any => "any".into(),
        },
        actual: show(current),
    })
}

pub(crate) fn check_refresh_claim(
    connection_id: &str,
    claim: &RefreshClaim,
    version: i64,
    marker_owner: Option<String>,
    marker_since: Option<Millis>,
) -> Result<(), StoreError> {
    check_expect(connection_id, Expect::Version(claim.expected_version), Some(version))?;
    if let (Some(owner), Some(since)) = (marker_owner, marker_since)
        && owner != claim.owner
        && since >= claim.stale_before
    {
        return Err(StoreError::RefreshInFlight {
            connection: connection_id.to_owned(),
            owner,
            since,
        });
    }
    Ok(())
}

pub(crate) fn same_action_or_reused(
    new: &NewAction,
    app_key: &str,
    existing: OutboxEntry,
) -> Result<Enqueued, StoreError> {
    if existing.idempotency_key == new.idempotency_key {
        Ok(Enqueued::Existing(existing))
    } else {
        Err(StoreError::IdempotencyKeyReused {
            connection: new.connection_id.clone(),
            key: app_key.to_owned(),
            existing: existing.id,
        })
    }
}

/// A send may only be marked under a lease that has not lapsed: once it has, another worker may
/// claim the entry at any moment and read back while this one is still sending.
pub(crate) fn check_lease_valid(entry: &OutboxEntry, now: Millis) -> Result<(), StoreError> {
    match &entry.lease {
        Some(l) if l.until > now => Ok(()),
        Some(l) => Err(StoreError::LeaseExpired {
            entry: entry.id,
            owner: l.owner.clone(),
            until: l.until,
        }),
        None => Err(StoreError::LeaseLost { entry: entry.id, owner: String::new() }),
    }
}

pub(crate) fn due_order(
    entries: Result<Vec<OutboxEntry>, StoreError>,
) -> Result<Vec<OutboxEntry>, StoreError> {
    let mut entries = entries?;
    entries.sort_by_key(|e| (e.not_before, e.id));
    Ok(entries)
}
