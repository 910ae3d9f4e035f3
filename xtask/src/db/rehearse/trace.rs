//! The traced migrator: what sqlx's migrator does — each migration in its own transaction (or
//! none, with `-- no-transaction`), its row in the ledger in the same transaction, the
//! execution time set after — one statement at a time, with a look at the migrating transaction
//! after each: the locks it holds (they are held until commit), the relations whose file changed
//! (a rewrite), the WAL written, the rows affected.
//!
//! Each statement reaches the server as sqlx sends it: byte for byte, as a simple-protocol query
//! ([`Session::run_verbatim`]: no psql variable interpolation, no meta-command), in a session
//! with sqlx's connection settings (`TimeZone` UTC, `DateStyle` ISO, UTF-8).
//!
//! A `-- no-transaction` migration of one statement whose meaning depends on the transaction
//! block — one that refuses a block (`CREATE INDEX CONCURRENTLY`, `VACUUM`, `ALTER SYSTEM`…), a
//! `DO` or `CALL` (which may COMMIT), `LOCK`, transaction control — runs on its own, as sqlx runs
//! it, and is traced from a second session, which samples the locks of the first while it runs;
//! any other single statement is its own transaction either way and is traced from inside one
//! (and run again on its own should the server say it refuses a transaction block). sqlx sends a
//! migration as one query string, which PostgreSQL runs as one implicit transaction when it holds
//! several statements; such a migration is run in one transaction here too, so a statement that
//! refuses a transaction fails here as it would there, and after a COMMIT of the file's own the
//! rest is again one transaction, as in the implicit one.
//!
//! A statement that names another database (`ALTER DATABASE x`, `GRANT … ON DATABASE x`, …) is
//! refused before it runs: on this server that is not the database being migrated.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::model::{
    ForeignKey, LockTrace, MigrationFailure, MigrationTrace, Relation, Rewrite, SizeChange, StatementTrace,
};
use super::statements::{
    controls_transaction, depends_on_the_block, needs_an_explicit_block, no_transaction, unsendable,
};
use crate::migrations::Migration;
use crate::pg::session::{Failure, Session};
use crate::pg::{literal, Server};
use crate::proc;
use crate::sql::{self, Statement};

/// User relations (indexes too: their locks are reported), as `json_agg` rows: what is compared
/// before and after. For the hints: how many valid CHECK constraints a table has (ATTACH
/// PARTITION), which of its CHECKs prove a column NOT NULL (SET NOT NULL), and a materialized view's unique index on plain columns (REFRESH … CONCURRENTLY).
const RELATIONS: &str = "SELECT c.oid::bigint AS oid, format('%I.%I', n.nspname, c.relname) AS name, \
     n.nspname::text AS schema, c.relname::text AS relname, c.relkind::text AS kind, \
     CASE WHEN c.relkind IN ('r','m','t') THEN pg_table_size(c.oid) WHEN c.relkind = 'i' THEN pg_relation_size(c.oid) ELSE 0 END AS size, \
     CASE WHEN c.relkind IN ('r','m','p') THEN pg_indexes_size(c.oid) ELSE 0 END AS index_size, \
     CASE WHEN c.reltuples >= 0 THEN c.reltuples::bigint END AS rows, \
     (SELECT count(*) FROM pg_constraint k WHERE k.conrelid = c.oid AND k.contype = 'c' AND k.convalidated) AS checks, \
     (SELECT coalesce(json_agg(json_build_object('name', k.conname, 'column', a.attname, 'valid', k.convalidated)), '[]') \
        FROM pg_constraint k JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = ANY (k.conkey) \
        WHERE k.conrelid = c.oid AND k.contype = 'c' AND pg_get_constraintdef(k.oid) NOT LIKE '% OR %' \
        AND strpos(pg_get_constraintdef(k.oid), '(' || quote_ident(a.attname) || ' IS NOT NULL)') > 0) AS not_null_checks, \
     (SELECT format('%I.%I', tn.nspname, t.relname) FROM pg_index x JOIN pg_class t ON t.oid = x.indrelid \
        JOIN pg_namespace tn ON tn.oid = t.relnamespace WHERE x.indexrelid = c.oid) AS table, \
     CASE WHEN c.relkind = 'm' THEN (SELECT format('%I', i.relname) FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid \
        WHERE x.indrelid = c.oid AND x.indisunique AND x.indisvalid AND x.indpred IS NULL AND x.indexprs IS NULL \
        ORDER BY i.relname LIMIT 1) END AS unique_index \
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.relkind IN ('r','p','m','v','f','S','i','I') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
     AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'";

/// After each statement: the WAL position, `lock_timeout`, the relation locks this session
/// holds in this database, the file of every table, and the foreign keys no index serves (no
/// index whose leading columns are the key's).
const TRACE: &str = "SELECT json_build_object(\
     'wal', pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0'), \
     'lock_timeout', current_setting('lock_timeout'), \
     'locks', (SELECT coalesce(json_agg(json_build_object('oid', relation::bigint, 'mode', mode)), '[]') \
        FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'relation' AND granted \
        AND database = (SELECT oid FROM pg_database WHERE datname = current_database())), \
     'files', (SELECT coalesce(json_object_agg(c.oid::bigint, c.relfilenode::bigint), '{}') FROM pg_class c \
        WHERE c.relkind IN ('r', 'm') AND c.relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)), \
     'fks', (SELECT coalesce(json_agg(json_build_object('oid', k.oid::bigint, 'name', format('%I', k.conname), \
          'table', k.conrelid::regclass::text, 'references', k.confrelid::regclass::text, \
          'columns', (SELECT string_agg(format('%I', a.attname), ', ' ORDER BY u.ord) FROM unnest(k.conkey) WITH ORDINALITY u(num, ord) \
             JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.num))), '[]') \
        FROM pg_constraint k WHERE k.contype = 'f' AND k.conparentid = 0 \
        AND k.connamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace) \
        AND NOT EXISTS (SELECT 1 FROM pg_index x WHERE x.indrelid = k.conrelid AND x.indpred IS NULL \
          AND (string_to_array(x.indkey::text, ' ')::int2[])[1:cardinality(k.conkey)] @> k.conkey \
          AND (string_to_array(x.indkey::text, ' ')::int2[])[1:cardinality(k.conkey)] <@ k.conkey)))";

#[derive(Debug, Deserialize)]
struct Trace {
    wal: f64,
    lock_timeout: String,
    locks: Vec<HeldLock>,
    files: HashMap<String, i64>,
    fks: Vec<ForeignKey>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
struct HeldLock {
    oid: i64,
    mode: String,
}

/// The lock modes in order of strength, with what they block.
const MODES: &[(&str, &str, bool, bool)] = &[
    ("AccessShareLock", "ACCESS SHARE", false, false),
    ("RowShareLock", "ROW SHARE", false, false),
    ("RowExclusiveLock", "ROW EXCLUSIVE", false, false),
    ("ShareUpdateExclusiveLock", "SHARE UPDATE EXCLUSIVE", false, false),
    ("ShareLock", "SHARE", false, true),
    ("ShareRowExclusiveLock", "SHARE ROW EXCLUSIVE", false, true),
    ("ExclusiveLock", "EXCLUSIVE", false, true),
    ("AccessExclusiveLock", "ACCESS EXCLUSIVE", true, true),
];

fn mode(name: &str) -> (usize, &'static str, bool, bool) {
    MODES
        .iter()
        .enumerate()
        .find(|(_, m)| m.0 == name)
        .map(|(i, m)| (i, m.1, m.2, m.3))
        .unwrap_or((0, "unknown", false, false))
}

fn kind_name(relkind: &str) -> &'static str {
    match relkind {
        "r" => "table",
        "p" => "partitioned table",
        "m" => "materialized view",
        "v" => "view",
        "f" => "foreign table",
        "S" => "sequence",
        "i" => "index",
        "I" => "partitioned index",
        _ => "relation",
    }
}

/// sqlx's ledger, as sqlx creates it.
pub fn ensure_ledger(session: &mut Session, ledger: &str) -> Result<()> {
    run_ok(
        session,
        &format!(
            "CREATE TABLE IF NOT EXISTS {ledger} (version BIGINT PRIMARY KEY, description TEXT NOT NULL, \
             installed_on TIMESTAMPTZ NOT NULL DEFAULT now(), success BOOLEAN NOT NULL, checksum BYTEA NOT NULL, \
             execution_time BIGINT NOT NULL)"
        ),
    )
    .map(drop)
}

/// Runs a statement that must succeed.
fn run_ok(session: &mut Session, sql: &str) -> Result<String> {
    match session.run(sql) {
        Ok(out) => Ok(out),
        Err(Failure::Sql(msg)) => {
            proc::check_interrupt()?;
            bail!("ERROR: {msg}")
        }
        Err(Failure::Dead(e)) => Err(e),
        Err(Failure::NotSent) => bail!("psql exited before the statement was sent"),
    }
}

/// Runs a statement of a migration, sent as it is (what it prints is thrown away):
/// `Ok(Err(message))` when the server rejected it.
fn run_statement(session: &mut Session, sql: &str) -> Result<std::result::Result<(), String>> {
    match session.run_verbatim(sql) {
        Ok(()) => Ok(Ok(())),
        Err(Failure::Sql(msg)) => {
            proc::check_interrupt()?;
            Ok(Err(msg))
        }
        Err(Failure::Dead(e)) => Err(e),
        Err(Failure::NotSent) => bail!("psql exited before the statement was sent"),
    }
}

fn json<T: for<'de> Deserialize<'de>>(out: &str, what: &str) -> Result<T> {
    serde_json::from_str(out.trim()).with_context(|| format!("reading {what}"))
}

fn relations(session: &mut Session) -> Result<Vec<Relation>> {
    let out = run_ok(session, &format!("SELECT coalesce(json_agg(q), '[]') FROM ({RELATIONS}) q"))?;
    json(&out, "the relations")
}

fn trace(session: &mut Session) -> Result<Trace> {
    json(&run_ok(session, TRACE)?, "the trace")
}

/// Where a traced migration runs: the rehearsal database, its session, and what is needed to
/// sample it from a second one.
pub struct Target<'a> {
    pub server: &'a Server,
    pub db: &'a str,
    pub session: &'a mut Session,
    pub pid: i64,
    pub ledger: &'a str,
    /// What each migration changes of the cluster outside the copy.
    pub cluster: &'a mut super::cluster::Watch,
}

/// Applies `m` as sqlx would, traced. A statement the server rejects is not an `Err`: the
/// trace says which statement failed and why, and what stays applied.
pub fn migration(t: &mut Target, m: &Migration) -> Result<MigrationTrace> {
    let traced = migration_as(t, m, None)?;
    // A lone `-- no-transaction` statement the server refused inside the traced transaction
    // (nothing of it ran: the refusal comes first) runs again on its own, as sqlx runs it.
    let refused_block = traced.failure.as_ref().is_some_and(|f| f.sqlstate == "25001" && f.statement == 1);
    // Only a lone one: of several, sqlx's one query string is an implicit transaction that
    // refuses it as well.
    let lone = std::fs::read_to_string(&m.file).is_ok_and(|text| sql::split(&text).len() == 1);
    if refused_block && lone && traced.transaction && traced.statements.is_empty() && traced.no_transaction {
        return migration_as(t, m, Some(false));
    }
    Ok(traced)
}

fn migration_as(t: &mut Target, m: &Migration, transaction: Option<bool>) -> Result<MigrationTrace> {
    let bytes = std::fs::read(&m.file).with_context(|| format!("reading {}", m.file.display()))?;
    let text = String::from_utf8(bytes).map_err(|_| {
        crate::error::fail(
            format!("{} is not UTF-8", m.file.display()),
            "save the migration as UTF-8 (sqlx reads migrations as UTF-8 and refuses anything else)",
        )
    })?;
    let statements = sql::split(&text);
    let file = super::file_name(&m.file);
    let no_tx = no_transaction(&text);
    let sampled_alone = no_tx && statements.len() == 1 && depends_on_the_block(&statements[0]);
    // sqlx sends the file as one query string: several statements run as one implicit
    // transaction, so a no-transaction migration of more than one statement runs in one here too.
    let transaction = transaction.unwrap_or(!sampled_alone);
    // In that implicit transaction, until a BEGIN of the file's own, savepoints are refused.
    let mut implicit = no_tx && statements.len() > 1;
    // The look before the migration is taken outside its transaction, so the migration's first
    // statement is the transaction's first (SET TRANSACTION ISOLATION LEVEL must be).
    t.cluster.begin(t.session)?;
    let before = relations(t.session)?;
    let by_oid: HashMap<i64, &Relation> = before.iter().map(|r| (r.oid, r)).collect();
    let mut last = trace(t.session)?;
    let wal_start = last.wal;
    let start = Instant::now();
    let mut out = MigrationTrace {
        version: m.version,
        file,
        no_transaction: no_tx,
        transaction,
        traced: if transaction { "transaction" } else { "sampled" },
        samples: None,
        duration_ms: 0.0,
        wal_bytes: 0,
        statements: Vec::new(),
        locks: Vec::new(),
        sizes: Vec::new(),
        failure: None,
        cluster: Vec::new(),
    };
    if transaction {
        run_ok(t.session, "BEGIN")?;
    }
    // (oid, mode) → when the statement that took it first began.
    let mut first_taken: BTreeMap<(i64, String), Instant> = BTreeMap::new();
    // The strongest mode held on each relation so far: a statement's locks are those it adds.
    let mut strongest: HashMap<i64, usize> = HashMap::new();
    let mut hinted_lock_timeout = false;
    // Foreign keys no index serves, by the statement that made them.
    let mut made_fks = Vec::new();
    let mut committed_early = None;
    for (i, stmt) in statements.iter().enumerate() {
        let index = i + 1;
        proc::check_interrupt()?;
        let began = Instant::now();
        if implicit && stmt.keywords(1) == "BEGIN" || stmt.keywords(2) == "START TRANSACTION" {
            implicit = false;
        }
        let savepoint = implicit && needs_an_explicit_block(stmt);
        // A statement run on its own: its time and rows, read before the look at the cluster.
        let mut alone = None;
        let unwatched = stmt.keywords(2) == "ALTER SYSTEM" && !t.cluster.sees_auto_conf();
        let refusal = unsendable(stmt).or_else(|| {
            unwatched.then(|| {
                ("refused".to_string(), "refused before it ran: ALTER SYSTEM changes the whole server, and this session cannot read pg_file_settings to take it back — rehearse as a role with pg_read_all_settings".to_string())
            })
        });
        let (result, sampled) = match refusal {
            Some((state, msg)) => (Err((state, msg)), None),
            None if savepoint => (
                Err((
                    "25P01".into(),
                    format!(
                        "{} can only be used in transaction blocks (sqlx sends a -- no-transaction migration as one query: its statements run in an implicit transaction, which takes no savepoint)",
                        stmt.keywords(2).trim_end_matches(" TO")
                    ),
                )),
                None,
            ),
            None if transaction => {
                (run_statement(t.session, &stmt.sql)?.map_err(|e| (t.session.sqlstate().to_string(), e)), None)
            }
            None => {
                // The look at the cluster right before and right after: the statement commits
                // on its own, and its window of transaction ids is as narrow as can be.
                t.cluster.begin(t.session)?;
                let started = Instant::now();
                let (r, seen, n) = sampled(t.server, t.db, t.pid, || run_statement(t.session, &stmt.sql))?;
                let r = r?.map_err(|e| (t.session.sqlstate().to_string(), e));
                alone = Some((started.elapsed(), t.session.row_count()));
                t.cluster.after_window(t.session, &out.file, &statements)?;
                out.samples = Some(n);
                (r, Some(seen))
            }
        };
        let (took, rows) = alone.unwrap_or_else(|| (began.elapsed(), t.session.row_count()));
        if let Err((sqlstate, error)) = result {
            let failed_at = Instant::now();
            if transaction {
                run_ok(t.session, "ROLLBACK")?;
            }
            out.duration_ms = ms(failed_at - start);
            out.wal_bytes = (last.wal - wal_start) as i64;
            let replayable = !statements[..i].iter().any(controls_transaction);
            let violating_rows = if replayable {
                match violating_rows(t.session, &statements[..i], stmt, &sqlstate, &error, &before) {
                    Ok(n) => n,
                    Err(e) => {
                        proc::check_interrupt()?;
                        eprintln!("  (could not count the violating rows: {e:#})");
                        None
                    }
                }
            } else {
                None
            };
            let applied = if transaction {
                match committed_early {
                    Some(c) => format!("statements 1 to {c} stay applied (the migration's own COMMIT at statement {c}); the rest was rolled back"),
                    None => "rolled back: none of it was applied".into(),
                }
            } else if stmt.keywords(3).contains("CONCURRENTLY") {
                "a failed CONCURRENTLY build leaves an INVALID index behind, in production too: drop it before the next attempt".into()
            } else {
                "nothing of it was applied".into()
            };
            let hints = super::hints::failure(stmt, &sqlstate, &error, no_tx, statements.len());
            out.failure = Some(MigrationFailure {
                statement: index,
                line: stmt.line,
                sqlstate,
                error,
                violating_rows,
                applied,
                hints,
            });
            settle_locks(&mut out, &first_taken, failed_at, transaction);
            // What was committed before the failure stays: its changes to the cluster too.
            if committed_early.is_some() {
                t.cluster.after_window(t.session, &out.file, &statements)?;
            }
            return Ok(out);
        }
        if transaction && matches!(stmt.keywords(1).as_str(), "COMMIT" | "END") {
            committed_early.get_or_insert(index);
        }
        // sqlx's query string goes on in a transaction of its own after the file ends one (the
        // server opens an implicit one for the rest): so does the traced one.
        if transaction
            && matches!(stmt.keywords(1).as_str(), "COMMIT" | "END" | "ROLLBACK" | "ABORT")
            && !stmt.keywords(2).starts_with("ROLLBACK TO")
            && !stmt.keywords(2).ends_with("PREPARED")
        {
            run_ok(t.session, "BEGIN")?;
        }
        let now = trace(t.session)?;
        let held: Vec<HeldLock> = match &sampled {
            Some(seen) => seen.iter().cloned().collect(),
            None => now.locks.clone(),
        };
        let mut locks = Vec::new();
        for l in held {
            let Some(rel) = by_oid.get(&l.oid) else { continue };
            if first_taken.contains_key(&(l.oid, l.mode.clone())) {
                continue;
            }
            first_taken.insert((l.oid, l.mode.clone()), began);
            let (strength, name, reads, writes) = mode(&l.mode);
            if strongest.get(&l.oid).is_some_and(|s| *s >= strength) {
                continue;
            }
            strongest.insert(l.oid, strength);
            locks.push(LockTrace {
                oid: l.oid,
                relation: rel.name.clone(),
                kind: kind_name(&rel.kind),
                mode: name.to_string(),
                statement: index,
                held_ms: 0.0,
                blocks_reads_ms: reads.then_some(0.0),
                blocks_writes_ms: writes.then_some(0.0),
                rows: rel.rows.filter(|_| matches!(rel.kind.as_str(), "r" | "m" | "p" | "f")),
                size_bytes: rel.size,
                table: rel.table.clone(),
            });
        }
        // One line a relation: its strongest lock (a weaker one, e.g. the ACCESS SHARE of a
        // foreign key's validating scan, adds nothing to what is blocked).
        locks.sort_by_key(|l: &LockTrace| (l.relation.clone(), std::cmp::Reverse(mode(&mode_key(&l.mode)).0)));
        locks.dedup_by(|later, first| later.relation == first.relation);
        let truncate = stmt.keywords(1) == "TRUNCATE";
        let mut rewrites = Vec::new();
        for (oid, node) in &now.files {
            let Ok(oid) = oid.parse::<i64>() else { continue };
            let (Some(rel), Some(prev)) = (by_oid.get(&oid), last.files.get(&oid.to_string())) else { continue };
            // TRUNCATE gives a table a new, empty file: not a rewrite of its rows.
            if prev != node && !truncate {
                rewrites.push(Rewrite { relation: rel.name.clone(), rows: rel.rows, size_before: rel.size });
            }
        }
        rewrites.sort_by(|a, b| a.relation.cmp(&b.relation));
        let blocking = locks.iter().any(|l| l.blocks_writes_ms.is_some());
        let mut hints = super::hints::statement(&super::hints::Context {
            stmt,
            locks: &locks,
            rewrites: &rewrites,
            before: &before,
            earlier: &statements[..i],
            rows,
        });
        made_fks
            .extend(now.fks.iter().filter(|f| !last.fks.iter().any(|l| l.oid == f.oid)).map(|f| (index, f.clone())));
        if controls_transaction(stmt) && transaction {
            hints.push(super::hints::TRANSACTION_CONTROL.into());
        }
        if blocking && transaction && !hinted_lock_timeout && now.lock_timeout == "0" {
            hinted_lock_timeout = true;
            hints.push(super::hints::LOCK_TIMEOUT.into());
        }
        out.statements.push(StatementTrace {
            index,
            line: stmt.line,
            sql: stmt.summary(200),
            duration_ms: ms(took),
            rows,
            wal_bytes: (now.wal - last.wal) as i64,
            locks,
            rewrites,
            hints,
        });
        last = now;
    }
    super::hints::unindexed_foreign_keys(&mut out, &made_fks, &last.fks);
    // sqlx inserts the ledger row in the migration's transaction, or after a no-transaction one.
    let ledger_row = format!(
        "INSERT INTO {} (version, description, success, checksum, execution_time) VALUES ({}, {}, TRUE, decode({}, 'hex'), -1)",
        t.ledger,
        m.version,
        literal(&m.description),
        literal(&m.checksum)
    );
    // Inside the migration's transaction, its own changes to the cluster are known exactly.
    let exact = transaction && committed_early.is_none();
    if exact {
        t.cluster.in_transaction(t.server, t.session, &out.file)?;
    }
    run_ok(t.session, &ledger_row)?;
    if transaction {
        run_ok(t.session, "COMMIT")?;
    }
    let ended = Instant::now();
    let elapsed = ended - start;
    run_ok(
        t.session,
        &format!("UPDATE {} SET execution_time = {} WHERE version = {}", t.ledger, elapsed.as_nanos(), m.version),
    )?;
    out.duration_ms = ms(elapsed);
    out.wal_bytes = (last.wal - wal_start) as i64;
    settle_locks(&mut out, &first_taken, ended, transaction);
    if transaction && !exact {
        t.cluster.after_window(t.session, &out.file, &statements)?;
    }

    let after: HashMap<i64, Relation> = relations(t.session)?.into_iter().map(|r| (r.oid, r)).collect();
    let touched: HashSet<&str> = out
        .locks
        .iter()
        .map(|l| l.relation.as_str())
        .chain(out.statements.iter().flat_map(|s| s.rewrites.iter().map(|r| r.relation.as_str())))
        .collect();
    for r in before.iter().filter(|r| matches!(r.kind.as_str(), "r" | "m" | "p")) {
        let now = after.get(&r.oid);
        let changed = now.map_or(true, |n| n.size != r.size || n.index_size != r.index_size);
        if changed || touched.contains(r.name.as_str()) {
            out.sizes.push(SizeChange {
                relation: r.name.clone(),
                table_before: r.size,
                table_after: now.map(|n| n.size),
                indexes_before: r.index_size,
                indexes_after: now.map(|n| n.index_size),
            });
        }
    }
    Ok(out)
}

/// How long each lock was held — from the start of the statement that took it until `ended`
/// (the commit, or the rollback of a failed migration; a sampled statement's locks for the
/// statement only) — and, per relation, the strongest mode and how long reads and writes were
/// blocked. Then the hints of the whole migration ([`super::hints::migration`]).
fn settle_locks(
    out: &mut MigrationTrace,
    first_taken: &BTreeMap<(i64, String), Instant>,
    ended: Instant,
    transaction: bool,
) {
    let mut per_relation: BTreeMap<String, LockTrace> = BTreeMap::new();
    for s in &mut out.statements {
        for l in &mut s.locks {
            let taken = first_taken.get(&(l.oid, mode_key(&l.mode)));
            let held = match (transaction, taken) {
                (true, Some(at)) => ms(ended - *at),
                _ => s.duration_ms,
            };
            l.held_ms = held;
            l.blocks_reads_ms = l.blocks_reads_ms.map(|_| held);
            l.blocks_writes_ms = l.blocks_writes_ms.map(|_| held);
            let e = per_relation.entry(l.relation.clone()).or_insert_with(|| l.clone());
            let (reads, writes, longest) = (
                max_opt(e.blocks_reads_ms, l.blocks_reads_ms),
                max_opt(e.blocks_writes_ms, l.blocks_writes_ms),
                e.held_ms.max(l.held_ms),
            );
            if mode(&mode_key(&l.mode)).0 > mode(&mode_key(&e.mode)).0 {
                *e = l.clone();
            }
            (e.blocks_reads_ms, e.blocks_writes_ms, e.held_ms) = (reads, writes, longest);
        }
    }
    out.locks = per_relation.into_values().collect();
    super::hints::migration(out, transaction);
}

fn mode_key(display: &str) -> String {
    MODES.iter().find(|m| m.1 == display).map_or(display.to_string(), |m| m.0.to_string())
}

fn max_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0
}

/// Runs `f` (a statement on the session whose backend is `pid`) while a second session samples
/// the relation locks that backend holds, every few milliseconds.
fn sampled<T>(server: &Server, db: &str, pid: i64, f: impl FnOnce() -> T) -> Result<(T, HashSet<HeldLock>, usize)> {
    let mut sampler = Session::open(server.psql_session(db)?)?;
    let query = format!(
        "SELECT coalesce(json_agg(json_build_object('oid', relation::bigint, 'mode', mode)), '[]') FROM pg_locks \
         WHERE pid = {pid} AND locktype = 'relation' AND granted"
    );
    // One sample before the statement: the sampler is connected and answering.
    sampler.run(&query).map_err(|_| anyhow::anyhow!("the sampling session did not answer"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let handle = std::thread::spawn({
        let stop = Arc::clone(&stop);
        move || {
            let (mut seen, mut n) = (HashSet::new(), 0);
            // As often as the session answers (about once a millisecond): no sleep in between.
            while !stop.load(Ordering::SeqCst) {
                match sampler.run(&query) {
                    Ok(out) => seen.extend(serde_json::from_str::<Vec<HeldLock>>(out.trim()).unwrap_or_default()),
                    Err(_) => break,
                }
                n += 1;
            }
            (seen, n)
        }
    });
    let result = f();
    stop.store(true, Ordering::SeqCst);
    let (seen, n) = handle.join().unwrap_or_default();
    Ok((result, seen, n))
}

/// Makes the query that counts the violating rows (run in the replaying transaction).
type Probe = dyn Fn(&mut Session) -> Result<Option<String>>;

/// How many existing rows violate the constraint a failed statement tried to add: the statement
/// is replayed (after the ones before it, in a transaction rolled back afterwards) with
/// `NOT VALID`, and the rows it would have rejected are counted. `None` when the failure is of
/// another kind.
fn violating_rows(
    session: &mut Session,
    earlier: &[Statement],
    stmt: &Statement,
    sqlstate: &str,
    error: &str,
    before: &[Relation],
) -> Result<Option<i64>> {
    let quoted = |after: &str| error.split(after).nth(1).and_then(|r| r.split('"').nth(1)).map(str::to_string);
    // The statement without its comments: `… -- why` would swallow an appended NOT VALID.
    let not_valid = format!("{} NOT VALID", sql::strip_comments(&stmt.sql).trim_end());
    // Only the constraint the replayed statement just made: one made in this transaction.
    // (Compared with the transaction's own id exactly: a constraint of that name elsewhere, frozen
    // long ago, must not pass for it; the replay runs its statements at top level.)
    let made_now = "c.xmin::text = (pg_current_xact_id()::text::bigint % 4294967296)::text";
    let probe: Box<Probe> = match sqlstate {
        // "check constraint "c" of relation "t" is violated by some row"
        "23514" if error.contains("is violated by some row") => {
            let Some(name) = quoted("check constraint") else { return Ok(None) };
            Box::new(move |s: &mut Session| {
                if run_statement(s, &not_valid)?.is_err() {
                    return Ok(None);
                }
                let q = format!(
                    "SELECT format('SELECT count(*) FROM %s WHERE NOT coalesce((%s), true)', c.conrelid::regclass, pg_get_expr(c.conbin, c.conrelid)) \
                     FROM pg_constraint c WHERE c.conname = {} AND c.contype = 'c' AND NOT c.convalidated AND {made_now} LIMIT 1",
                    literal(&name)
                );
                Ok(Some(run_ok(s, &q)?.trim().to_string()).filter(|q| !q.is_empty()))
            })
        }
        // "insert or update on table "t" violates foreign key constraint "c""
        "23503" if error.contains("violates foreign key constraint") => {
            let Some(name) = quoted("foreign key constraint") else { return Ok(None) };
            Box::new(move |s: &mut Session| {
                if run_statement(s, &not_valid)?.is_err() {
                    return Ok(None);
                }
                let q = format!(
                    "SELECT format('SELECT count(*) FROM %s x WHERE %s AND NOT EXISTS (SELECT 1 FROM %s y WHERE %s)', \
                       c.conrelid::regclass, string_agg(format('x.%I IS NOT NULL', a.attname), ' AND '), \
                       c.confrelid::regclass, string_agg(format('y.%I = x.%I', b.attname, a.attname), ' AND ')) \
                     FROM pg_constraint c CROSS JOIN LATERAL unnest(c.conkey, c.confkey) k(ck, fk) \
                     JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.ck \
                     JOIN pg_attribute b ON b.attrelid = c.confrelid AND b.attnum = k.fk \
                     WHERE c.conname = {} AND c.contype = 'f' AND NOT c.convalidated AND {made_now} \
                     GROUP BY c.conrelid, c.confrelid LIMIT 1",
                    literal(&name)
                );
                Ok(Some(run_ok(s, &q)?.trim().to_string()).filter(|q| !q.is_empty()))
            })
        }
        // "column "c" of relation "t" contains null values": the table as the statement names
        // it (the message's is unqualified), else the only one of that name.
        "23502" if error.contains("contains null values") => {
            let (Some(column), Some(table)) = (quoted("column"), quoted("of relation")) else { return Ok(None) };
            let matches: Vec<&Relation> = before.iter().filter(|r| r.relname == table).collect();
            let relation = match (alter_target(stmt), matches.as_slice()) {
                (Some(named), _) => named,
                (None, [one]) => one.name.clone(),
                _ => return Ok(None),
            };
            let column = format!("\"{}\"", column.replace('"', "\"\""));
            Box::new(move |s: &mut Session| {
                // A column being added NOT NULL does not exist yet: every row violates it.
                let exists = run_ok(
                    s,
                    &format!(
                        "SELECT count(*) FROM pg_attribute WHERE attrelid = {}::regclass AND attname = {} AND NOT attisdropped",
                        literal(&relation),
                        literal(column.trim_matches('"'))
                    ),
                )?;
                Ok(Some(if exists.trim() == "1" {
                    format!("SELECT count(*) FROM {relation} WHERE {column} IS NULL")
                } else {
                    format!("SELECT count(*) FROM {relation}")
                }))
            })
        }
        _ => return Ok(None),
    };
    run_ok(session, "BEGIN")?;
    let result = (|| -> Result<Option<i64>> {
        for e in earlier {
            if run_statement(session, &e.sql)?.is_err() {
                return Ok(None);
            }
        }
        let Some(count) = probe(session)? else { return Ok(None) };
        Ok(session.run(&count).ok().and_then(|n| n.trim().parse().ok()))
    })();
    run_ok(session, "ROLLBACK")?;
    result
}

/// The table an `ALTER TABLE [ONLY] [IF EXISTS] name …` statement names, as written.
fn alter_target(stmt: &Statement) -> Option<String> {
    let text = sql::strip_comments(&stmt.sql);
    let mut rest = text.trim_start();
    for word in ["ALTER", "TABLE", "IF", "EXISTS", "ONLY"] {
        let (head, tail) = rest.split_at(rest.find(char::is_whitespace).unwrap_or(rest.len()));
        if head.eq_ignore_ascii_case(word) {
            rest = tail.trim_start();
        } else if word == "ALTER" || word == "TABLE" {
            return None;
        }
    }
    // The name: identifiers and dots, quoted parts kept whole.
    let mut name = String::new();
    let mut quoted = false;
    for c in rest.chars() {
        match c {
            '"' => quoted = !quoted,
            c if !quoted && (c.is_whitespace() || c == ';') => break,
            _ => {}
        }
        name.push(c);
    }
    Some(name).filter(|n| !n.is_empty() && !quoted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_know_what_they_block() {
        assert_eq!(mode("AccessExclusiveLock"), (7, "ACCESS EXCLUSIVE", true, true));
        assert_eq!(mode("ShareLock").2..=mode("ShareLock").3, false..=true);
        assert_eq!(mode("ShareUpdateExclusiveLock").1, "SHARE UPDATE EXCLUSIVE");
        assert!(!mode("ShareUpdateExclusiveLock").3 && !mode("RowExclusiveLock").3);
        assert_eq!(mode_key("SHARE ROW EXCLUSIVE"), "ShareRowExclusiveLock");
    }

    #[test]
    fn the_table_an_alter_names() {
        let st = |sql: &str| Statement { sql: sql.into(), line: 1, meta: false };
        assert_eq!(
            alter_target(&st("ALTER TABLE crm.customers ALTER COLUMN email SET NOT NULL")).as_deref(),
            Some("crm.customers")
        );
        assert_eq!(
            alter_target(&st("alter table only \"My T\".x add column z int not null")).as_deref(),
            Some("\"My T\".x")
        );
        assert_eq!(alter_target(&st("ALTER TABLE IF EXISTS t -- c\n ADD c int")).as_deref(), Some("t"));
        assert_eq!(alter_target(&st("UPDATE t SET x = 1")), None);
    }
}
