//! `docs/database.md`: a Markdown reference of the database schema, generated from a database
//! built fresh from every migration (`cargo xtask db generate`) and checked in CI, so that it
//! cannot go stale.
//!
//! The whole catalog is read in one query: one JSON array per object kind, each ordered in SQL
//! (byte order, `COLLATE "C"`), so the output depends on nothing but the schema — no dates, no
//! OIDs. (Type and function names are printed by PostgreSQL as the default `search_path` sees
//! them: `citext`, but `crm.email_address`.)
//!
//! Covered: every schema but PostgreSQL's own, without objects that belong to an extension and
//! without the migration ledger. Tables (columns, keys, constraints, indexes, triggers, row-level
//! security, partitions), enums, domains, views, functions and procedures, and sequences that are
//! not owned by a column.

mod catalog;
mod markdown;

use anyhow::{Context, Result};

use crate::pg::Server;

/// Renders the Markdown reference of database `db` (built fresh from every migration).
/// `migrations` is the number of migration files applied; `ledger_table` (`schema.table`, the
/// configuration's `ledger_table`) is the migrator's ledger, left out of the reference. Output is
/// deterministic: same schema → same bytes.
pub fn render(server: &Server, db: &str, migrations: usize, ledger_table: &str) -> Result<String> {
    let ledger = ledger_table.split_once('.').unwrap_or(("public", ledger_table));
    let catalog: catalog::Catalog =
        server.query_one(db, &catalog::catalog_sql(ledger)).with_context(|| format!("reading the schema of `{db}`"))?;
    Ok(markdown::markdown(&catalog, migrations))
}
