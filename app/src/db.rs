//! Database access: connecting, applying the embedded migrations, and the
//! queries behind the health check.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, Context};
use sqlx::migrate::{Migrate, MigrateError, Migration, Migrator};
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};
use sqlx::Connection;

use crate::config::redact_url;

/// The migrations in `../migrations`, embedded at compile time.
///
/// sqlx keeps its ledger in `public._sqlx_migrations`.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// How long to wait for a connection before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens a single connection (used by `migrate`).
pub async fn connect(url: &str) -> anyhow::Result<PgConnection> {
    tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect(url))
        .await
        .map_err(|_| anyhow::anyhow!("timed out after {CONNECT_TIMEOUT:?}"))
        .and_then(|result| result.map_err(anyhow::Error::from))
        .with_context(|| format!("cannot connect to {}", redact_url(url)))
}

/// Opens a connection pool (used by `serve`) and checks that it works.
pub async fn connect_pool(url: &str) -> anyhow::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(5)
        .acquire_timeout(CONNECT_TIMEOUT)
        .connect(url)
        .await
        .with_context(|| format!("cannot connect to {}", redact_url(url)))
}

/// The file name a migration was loaded from, e.g. `0003_contacts.sql`.
///
/// sqlx keeps only the version and the description (with underscores turned
/// into spaces); this repository names its files `NNNN_description.sql`.
pub fn migration_file_name(migration: &Migration) -> String {
    format!("{:04}_{}.sql", migration.version, migration.description.replace(' ', "_"))
}

/// What [`migrate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrateSummary {
    /// Versions applied by this run, in order.
    pub applied: Vec<i64>,
    /// The latest applied version afterwards, if any.
    pub version: Option<i64>,
}

/// Applies every pending migration of [`MIGRATOR`] on `conn`, reporting each
/// one on stderr as it is applied.
///
/// This is sqlx's `Migrator::run` spelled out (same lock, ledger, checks and
/// per-migration transactions) so that progress can be reported and errors can
/// name the migration file involved.
pub async fn migrate(conn: &mut PgConnection) -> anyhow::Result<MigrateSummary> {
    // `APP_MIGRATIONS_DIR` reads the migrations at run time (like sqlx-cli's `--source`): the
    // binary then needs no rebuild to see a new migration file (tooling and its tests use it).
    let runtime;
    let migrator = match std::env::var_os("APP_MIGRATIONS_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => {
            let dir = std::path::PathBuf::from(dir);
            runtime = Migrator::new(dir.as_path())
                .await
                .map_err(|e| anyhow::anyhow!("reading migrations from {}: {e}", dir.display()))?;
            &runtime
        }
        None => &MIGRATOR,
    };
    let by_version: HashMap<i64, &Migration> =
        migrator.iter().filter(|m| !m.migration_type.is_down_migration()).map(|m| (m.version, m)).collect();
    let describe = |version: i64| match by_version.get(&version) {
        Some(m) => format!("migration {version} ({})", migration_file_name(m)),
        None => format!("migration {version}"),
    };

    if migrator.locking {
        conn.lock().await.context("taking the migration lock")?;
    }
    conn.ensure_migrations_table().await.context("creating the migration ledger public._sqlx_migrations")?;
    if let Some(version) = conn.dirty_version().await? {
        bail!(
            "{} failed part-way in an earlier run (the ledger marks it unsuccessful); \
             fix the database and delete its row from public._sqlx_migrations",
            describe(version)
        );
    }

    let applied: HashMap<i64, _> =
        conn.list_applied_migrations().await?.into_iter().map(|m| (m.version, m.checksum)).collect();
    let mut unknown: Vec<i64> = applied.keys().copied().filter(|version| !by_version.contains_key(version)).collect();
    unknown.sort_unstable();
    if let Some(version) = unknown.first() {
        bail!(
            "migration {version} is recorded as applied in public._sqlx_migrations but there is \
             no such file in migrations/ (is this binary older than the database?)"
        );
    }

    let mut summary = MigrateSummary { applied: Vec::new(), version: applied.keys().copied().max() };
    for migration in migrator.iter() {
        if migration.migration_type.is_down_migration() {
            continue;
        }
        let file = migration_file_name(migration);
        match applied.get(&migration.version) {
            Some(checksum) if *checksum != migration.checksum => bail!(
                "migration {} ({file}) was modified after it was applied to this database \
                 (checksum mismatch); restore the original file and add a new migration instead",
                migration.version
            ),
            Some(_) => {}
            None => {
                let elapsed = conn.apply(migration).await.map_err(|err| match err {
                    MigrateError::ExecuteMigration(source, version) => {
                        anyhow::Error::new(source).context(format!("{} failed", describe(version)))
                    }
                    other => anyhow::Error::new(other).context(format!("applying {file}")),
                })?;
                eprintln!("applied {file} ({} ms)", elapsed.as_millis());
                summary.applied.push(migration.version);
                summary.version = summary.version.max(Some(migration.version));
            }
        }
    }

    if migrator.locking {
        conn.unlock().await.context("releasing the migration lock")?;
    }
    Ok(summary)
}

/// The name of the database the pool is connected to (`current_database()`).
pub async fn current_database(pool: &PgPool) -> sqlx::Result<String> {
    sqlx::query_scalar("SELECT current_database()::text").fetch_one(pool).await
}

/// The latest successfully applied migration version, or `None` when no
/// migration has been applied (or the ledger table does not exist yet).
pub async fn latest_migration(pool: &PgPool) -> sqlx::Result<Option<i64>> {
    let ledger_exists: bool =
        sqlx::query_scalar("SELECT to_regclass('public._sqlx_migrations') IS NOT NULL").fetch_one(pool).await?;
    if !ledger_exists {
        return Ok(None);
    }
    sqlx::query_scalar("SELECT max(version) FROM public._sqlx_migrations WHERE success").fetch_one(pool).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_migrations_are_numbered_from_one_without_gaps() {
        let versions: Vec<i64> = MIGRATOR.iter().map(|m| m.version).collect();
        let expected: Vec<i64> = (1..=versions.len() as i64).collect();
        assert_eq!(versions, expected);
        assert!(versions.len() >= 10);
    }

    #[test]
    fn file_names_round_trip() {
        let first = MIGRATOR.iter().next().expect("at least one migration");
        assert_eq!(migration_file_name(first), "0001_schemas_and_extensions.sql");
        for migration in MIGRATOR.iter() {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../migrations")
                .join(migration_file_name(migration));
            assert!(path.is_file(), "{} does not exist", path.display());
        }
    }
}
