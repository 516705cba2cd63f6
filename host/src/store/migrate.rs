//! Versioned schema migrations, one list per backend.
//!
//! Each migration is a SQL file under `migrations/{sqlite,postgres}/NNNN_name.sql`, embedded in
//! the binary. The table `deskgate_schema` records every applied version with the SHA-256 of its
//! SQL. At open, the backend (in one transaction, holding the write lock so replicas starting
//! together migrate once):
//!
//! 1. creates `deskgate_schema` if missing;
//! 2. refuses a database whose newest version is beyond this binary's
//!    ([`StoreError::SchemaTooNew`]): an older deskgate must not write a schema it does not know;
//! 3. refuses one whose applied migrations differ from ours ([`StoreError::MigrationChanged`]);
//! 4. applies the missing ones in order.
//!
//! Why not `sqlx::migrate!`: it needs the `macros` feature, and its refusal of a newer database
//! reads "migration N was previously applied but is missing", which tells an operator nothing.
//! Migrations only ever move forward; never edit one that has shipped, add the next.

use sha2::{Digest, Sha256};

use super::StoreError;

/// One schema migration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Migration {
    /// Version, from 1, without gaps.
    pub version: i64,
    /// Short name.
    pub name: &'static str,
    /// The SQL, possibly several statements.
    pub sql: &'static str,
}

impl Migration {
    /// SHA-256 hex of the SQL.
    pub fn checksum(&self) -> String {
        hex::encode(Sha256::digest(self.sql.as_bytes()))
    }
}

/// SQLite migrations, in order.
pub(crate) const SQLITE: &[Migration] = &[
    Migration { version: 1, name: "init", sql: include_str!("migrations/sqlite/0001_init.sql") },
    Migration { version: 2, name: "marks", sql: include_str!("migrations/sqlite/0002_marks.sql") },
    Migration { version: 3, name: "inbox_unacked_by_id", sql: include_str!("migrations/sqlite/0003_inbox_unacked_by_id.sql") },
    Migration { version: 4, name: "inbox_held", sql: include_str!("migrations/sqlite/0004_inbox_held.sql") },
    Migration { version: 5, name: "webhook_secrets", sql: include_str!("migrations/sqlite/0005_webhook_secrets.sql") },
];

/// PostgreSQL migrations, in order.
pub(crate) const POSTGRES: &[Migration] = &[
    Migration { version: 1, name: "init", sql: include_str!("migrations/postgres/0001_init.sql") },
    Migration { version: 2, name: "marks", sql: include_str!("migrations/postgres/0002_marks.sql") },
    Migration { version: 3, name: "inbox_unacked_by_id", sql: include_str!("migrations/postgres/0003_inbox_unacked_by_id.sql") },
    Migration { version: 4, name: "inbox_held", sql: include_str!("migrations/postgres/0004_inbox_held.sql") },
    Migration { version: 5, name: "webhook_secrets", sql: include_str!("migrations/postgres/0005_webhook_secrets.sql") },
];

/// The SQLite schema version this binary writes.
pub const SQLITE_SCHEMA_VERSION: i64 = SQLITE[SQLITE.len() - 1].version;

/// The PostgreSQL schema version this binary writes.
pub const POSTGRES_SCHEMA_VERSION: i64 = POSTGRES[POSTGRES.len() - 1].version;

/// Given what the database has applied (version, checksum), the migrations still to apply.
pub(crate) fn plan(
    known: &'static [Migration],
    applied: &[(i64, String)],
) -> Result<Vec<&'static Migration>, StoreError> {
    let supported = known.last().map_or(0, |m| m.version);
    if let Some(found) = applied.iter().map(|(v, _)| *v).max()
        && found > supported
    {
        return Err(StoreError::SchemaTooNew { found, supported });
    }
    for (version, checksum) in applied {
        let m = known.iter().find(|m| m.version == *version).ok_or_else(|| {
            StoreError::Corrupt(format!("schema version {version} is recorded but unknown"))
        })?;
        let expected = m.checksum();
        if *checksum != expected {
            return Err(StoreError::MigrationChanged {
                version: *version,
                found: checksum.clone(),
                expected,
            });
        }
    }
    Ok(known.iter().filter(|m| !applied.iter().any(|(v, _)| *v == m.version)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_dense_from_one() {
        for list in [SQLITE, POSTGRES] {
            for (i, m) in list.iter().enumerate() {
                assert_eq!(m.version, i as i64 + 1, "{}", m.name);
            }
        }
    }

    #[test]
    fn plan_applies_missing_and_refuses_newer_or_changed() {
        assert_eq!(plan(SQLITE, &[]).unwrap().len(), SQLITE.len());
        let done: Vec<_> = SQLITE.iter().map(|m| (m.version, m.checksum())).collect();
        assert!(plan(SQLITE, &done).unwrap().is_empty());
        let mut newer = done.clone();
        newer.push((SQLITE_SCHEMA_VERSION + 1, "x".into()));
        assert!(matches!(plan(SQLITE, &newer), Err(StoreError::SchemaTooNew { .. })));
        let changed = vec![(1, "0".repeat(64))];
        assert!(matches!(
            plan(SQLITE, &changed),
            Err(StoreError::MigrationChanged { version: 1, .. })
        ));
    }
}
