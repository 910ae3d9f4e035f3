//! What a rehearsal found, as the report and the hints read it: each migration's trace (its
//! statements, the locks they took and how long those blocked reads and writes, rewrites, sizes,
//! a failure), and the relations it saw before. Filled in by [`super::trace`].

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize)]
pub struct Relation {
    pub oid: i64,
    pub name: String,
    pub schema: String,
    pub relname: String,
    pub kind: String,
    pub size: i64,
    pub index_size: i64,
    pub rows: Option<i64>,
    /// Valid CHECK constraints on it.
    pub checks: i64,
    /// Its CHECK constraints that prove a column NOT NULL (`CHECK (col IS NOT NULL)`, alone or
    /// ANDed), valid or not: SET NOT NULL skips its scan given a valid one.
    #[serde(default)]
    pub not_null_checks: Vec<NotNullCheck>,
    /// An index's table.
    pub table: Option<String>,
    /// A materialized view's unique index on plain columns, which REFRESH … CONCURRENTLY needs.
    pub unique_index: Option<String>,
}

/// A CHECK constraint that proves `column` NOT NULL.
#[derive(Debug, Clone, Deserialize)]
pub struct NotNullCheck {
    pub name: String,
    pub column: String,
    pub valid: bool,
}

/// A foreign key no index serves.
#[derive(Debug, Clone, Deserialize)]
pub struct ForeignKey {
    pub oid: i64,
    pub name: String,
    pub table: String,
    pub references: String,
    pub columns: String,
}

/// One migration, rehearsed.
#[derive(Debug, Serialize)]
pub struct MigrationTrace {
    pub version: i64,
    pub file: String,
    /// The file starts with sqlx's `-- no-transaction`.
    pub no_transaction: bool,
    /// Ran in one transaction (sqlx's default), or statement by statement (`-- no-transaction`).
    pub transaction: bool,
    /// `transaction`: locks read from the migrating transaction itself; `sampled`: from a second
    /// session while the statement ran (a statement that cannot run in a transaction).
    pub traced: &'static str,
    /// For `sampled`: how many samples the second session took while the statement ran (a lock
    /// held for less than a sample's ~1 ms can go unseen).
    pub samples: Option<usize>,
    pub duration_ms: f64,
    pub wal_bytes: i64,
    pub statements: Vec<StatementTrace>,
    /// Every relation that existed before and was locked, with how long reads and writes of it
    /// were blocked (until commit).
    pub locks: Vec<LockTrace>,
    /// Size of every relation that was locked, rewritten or changed size: before and after.
    pub sizes: Vec<SizeChange>,
    pub failure: Option<MigrationFailure>,
    /// What it changed outside its database (filled in, with what undoing it did, after the
    /// last migration).
    pub cluster: Vec<super::cluster::Change>,
}

#[derive(Debug, Serialize)]
pub struct StatementTrace {
    /// 1-based, in the file.
    pub index: usize,
    pub line: usize,
    pub sql: String,
    pub duration_ms: f64,
    pub rows: Option<u64>,
    pub wal_bytes: i64,
    /// Locks on existing relations this statement took first.
    pub locks: Vec<LockTrace>,
    pub rewrites: Vec<Rewrite>,
    pub hints: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LockTrace {
    #[serde(skip)]
    pub(super) oid: i64,
    pub relation: String,
    pub kind: &'static str,
    /// The strongest mode held, as the documentation names it (`ACCESS EXCLUSIVE`).
    pub mode: String,
    /// The statement that took it.
    pub statement: usize,
    /// From the start of that statement until the commit (or, sampled, the statement's end).
    pub held_ms: f64,
    /// How long `SELECT` on it was blocked (only ACCESS EXCLUSIVE blocks reads).
    pub blocks_reads_ms: Option<f64>,
    /// How long `INSERT`/`UPDATE`/`DELETE` on it were blocked (SHARE and stronger).
    pub blocks_writes_ms: Option<f64>,
    pub rows: Option<i64>,
    pub size_bytes: i64,
    /// An index's table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Rewrite {
    pub relation: String,
    pub rows: Option<i64>,
    pub size_before: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SizeChange {
    pub relation: String,
    pub table_before: i64,
    pub table_after: Option<i64>,
    pub indexes_before: i64,
    pub indexes_after: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MigrationFailure {
    pub statement: usize,
    pub line: usize,
    pub sqlstate: String,
    pub error: String,
    /// For a constraint existing rows violate: how many do.
    pub violating_rows: Option<i64>,
    /// What of the migration stays applied.
    pub applied: String,
    /// The form that works, where one is known.
    pub hints: Vec<String>,
}
