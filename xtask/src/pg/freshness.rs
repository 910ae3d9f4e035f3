//! Whether a copy of the template (the frozen copy, the spare clone) is *current*: it contains
//! every change committed to the template before now. What a copy records when it is made
//! ([`FrozenState`], from a [`Probe`] of the template and the copy's own sequences), how the
//! template is looked at, and the comparison — the proof `pg/clone.rs` relies on to take a copy
//! instead of the template.
//!
//! # Why "current" cannot miss a committed change
//!
//! A copy (frozen copy or spare clone) records a [`FrozenState`]: what a [`Probe`] of the
//! template said right after the copy was complete, and the state of the copy's own sequences.
//! A check probes again and says "current" only when the rules below hold. A probe is one
//! read-only session of ours on the template (`default_transaction_read_only`): first the
//! backends connected to it (`pg_stat_activity`, and each one's virtual transaction id from
//! `pg_locks`), then, in a later statement, the row-change counters of every relation of the
//! template (`pg_stat_all_tables`), then every sequence's `last_value` and `is_called`. The
//! argument, for PostgreSQL 15 and later:
//!
//! - A database's contents change in two ways only. (a) A committed transaction writes heap
//!   tuples: rows, and for DDL, comments, large objects, privileges and the rest, rows of the
//!   database's own catalogs. (b) Sequences: `nextval` and `setval` change a sequence in place,
//!   outside any transaction (never rolled back). Both are done by a backend **connected to that
//!   database**: PostgreSQL has no cross-database writes (dblink and postgres_fdw open a backend
//!   of their own on the target; `COMMIT PREPARED` runs in the database that prepared). What
//!   lives in shared catalogs — roles, the database's own ACL, settings and comment — is not
//!   part of a clone on any path: `CREATE DATABASE … TEMPLATE` does not copy it either.
//! - (b) is compared directly: the copy's sequences, read from the copy when it was made, must
//!   equal the template's now. Nothing about who changed them matters.
//! - (a): every heap tuple a backend inserts, updates or deletes is counted (`n_tup_ins`,
//!   `n_tup_upd`, `n_tup_del`) for its relation, per relation, in the backend's memory; a
//!   relation's counters only grow, and a relation dropped leaves the set of relations. The
//!   backend publishes its counts to shared memory (a) when it exits, in a `before_shmem_exit`
//!   hook, before its `pg_stat_activity` entry is removed; (b) when it goes idle outside a
//!   transaction: at once, or — when it published less than a second ago or a lock was busy —
//!   by a forced flush that a timer runs `PGSTAT_IDLE_INTERVAL` (10 s) later if the session is
//!   still idle then (`pgstat_report_stat`, `IDLE_STATS_UPDATE_TIMEOUT` in `postgres.c`). So a
//!   backend connected right now and idle for [`FLUSHED_AFTER`] (12 s: 10 s and a margin for
//!   the lock the forced flush waits for) has published everything it ever committed.
//! - A change committed after the copy's snapshot was made by a backend that, when the check
//!   reads the activity view, either
//!   - **has left**: its counts were published before that read, so the counters (read after
//!     it) include them; or
//!   - **is idle and has been for [`FLUSHED_AFTER`]**: the same; or
//!   - **was there when the copy was recorded, with the same `state_change`, idle**: it has run
//!     nothing since, so it committed nothing since; or
//!   - **was there when the copy was recorded, in the same transaction** (same `xact_start`
//!     and the same virtual transaction id, whose lock, read from `pg_locks` with the
//!     backends, a transaction holds from its start to its end and which no later transaction
//!     of the session reuses): it has committed nothing since (what it did non-transactionally
//!     is sequence state, compared directly). `xact_start` alone is not enough: the
//!     transactions of one query message (`…; COMMIT; BEGIN; …`) all start at the message's
//!     timestamp, and the first one's counts stay unpublished until the session goes idle;
//!   - otherwise the counters cannot tell: a session that ran statements less than
//!     [`FLUSHED_AFTER`] ago, a transaction that began after the copy, a backend we may not
//!     inspect (another role's is hidden without `pg_read_all_stats`), a walsender or background
//!     worker still connected (a parallel worker of a session in the same transaction is that
//!     session's). The rows decide (below).
//! - So if the row counters now equal those recorded, no counted row change was published
//!   since the record; and the copy's own record was checked the same way against a probe taken
//!   *before* the copy began (a backend that committed during the copy published into the
//!   counters between the two probes, or is caught by the same rules). Such a copy is recorded
//!   *unverified* and is never current.
//! - Everything that could make the counters lie counts as a change: the database re-created
//!   (oid), its statistics reset (`stats_reset`, which resetting one table's counters sets too),
//!   a server restart or crash (which discards statistics: `pg_postmaster_start_time`, and the
//!   shared `pg_stat_archiver` reset time that the discard sets), prepared transactions
//!   appearing or going, a subscription or a logical replication slot on the template, row
//!   counting off (`track_counts` off, or set for a role, a database or a function — a
//!   `SECURITY DEFINER` one that a superuser owns turns it off for whoever calls it — or
//!   granted to a role to change), a table access method other than heap (its writes may not
//!   be counted), statistics collected asynchronously (before PostgreSQL 15: never current).
//!
//! # When the counters cannot tell: the rows decide
//!
//! A copy records, besides, a [`Rows`] scan of the template taken right before the copy began
//! (so whatever commits between it and the probe after the copy makes the record unverified):
//! in one repeatable-read snapshot S, the visible row count of every relation that stores rows
//! (tables, partitions, populated materialized views, the database's own catalogs; statistics
//! catalogs aside), S's `xmin` — the oldest transaction still running — as the *horizon* H, and
//! the *window*: every visible row version whose `xmin` is at or above H, as (relation, `xmin`).
//! When the counters cannot tell (a session ran statements a moment ago, a transaction began
//! since, a backend we may not inspect, counters reset by `pg_stat_reset()` or lost in a
//! restart, row counting off, prepared transactions, a subscription), the check scans again, in
//! one snapshot, and the copy is current only if every relation has the same count and the
//! window (row versions at or above H, now) is the same. Why that misses no committed change:
//!
//! - A transaction that commits after S was running at S (its id, and its subtransactions',
//!   at or above S's `xmin`) or got its id later (at or above S's `xmax`, so above H too).
//!   Every row version it wrote carries that id in `xmin` (the raw id: freezing keeps it and
//!   only sets bits), and none of its row versions was visible in S: its id is in no pair of
//!   the recorded window (but see the last point), so a visible row version of it makes the
//!   window differ.
//! - Such a transaction inserts (a new version: seen), updates (a new version: seen) or deletes
//!   (the relation has one row fewer, unless it also inserts one — seen). DDL, comments, large
//!   objects, privileges, a TRUNCATE's or a refresh's new file are rows of the catalogs,
//!   counted the same way; relations made or dropped change the set of oids. What changes in
//!   place without a new row version is statistics (`relpages`, `reltuples`, frozen ids) or
//!   sequences (compared directly).
//! - A transaction still running is not a committed change; when it commits, its rows are
//!   seen by the next check.
//! - The ids compared are the low 32 bits of `xid8`s: with fewer than 2^31 transactions since
//!   the horizon, "at or above" is exact modulo 2^32 for every row version not yet frozen
//!   (PostgreSQL freezes each one before its id is 2^31 old); with more, the rows cannot tell.
//!   A *frozen* row version keeps its raw id however old it grows: once a server's ids have
//!   gone round (the snapshot's `xmax` above 2^32), a row frozen 2^32 transactions ago can
//!   carry the low 32 bits of a transaction running at the record, which can delete it and
//!   write one row in its place with the counts and the window unchanged. Below 2^32 every id
//!   is its own low 32 bits; above, the rows cannot tell (the scan refuses).
//!
//! Rows are counted with row security off (a policy that would
//! apply is an error) and a 250 ms lock timeout (a relation locked by a migration in progress
//! is an error, not a wait); a relation this role may not read, a scan that fails, or a record
//! without a scan leaves the copy stale. The scan reads every row of the template — much less
//! than a dump, which reads them all and writes them again — and runs only when the counters
//! cannot tell. A copy found current that way is recorded again by the background refill
//! ([`restamp`]: a probe, a scan that still finds nothing since, a probe, nothing in between),
//! so that the next check is the counters' alone.
//!
//! # What else a look proves
//!
//! The look a run starts ahead ([`Ahead`]) also reads the migration ledger of the template: the
//! probe before its backends and counters, the scan inside its snapshot. When that look finds
//! the spare current, the spare's ledger is the one read (by the counters: nothing was committed
//! since the spare's record up to after the read; by the rows: the scan's snapshot is the
//! spare's contents), so the run tells what is pending without a connection to the new database
//! — only for the very spare the look checked ([`super::clone::Taken::AsChecked`]).
//!
//! # A stale copy brought up to date
//!
//! The record's scan also keeps, per relation, a digest of its count and its part of the window
//! ([`Rows::per`]). Restricted to one relation, the argument above says: a relation with the
//! same count and window has had no row written or removed since the record. So when only
//! tables' rows changed, a stale copy becomes current by copying over, from one snapshot, the
//! rows of exactly the relations whose digest differs, and every sequence's state
//! ([`patch_script`], run by `pg/patch.rs`): the copy then holds what a dump in that snapshot
//! would. Anything else (a catalog's rows: DDL, comments, privileges, large objects) refuses.
//!
//! What is not a change: statistics. Autovacuum's `ANALYZE` writes rows of `pg_statistic` and
//! `pg_statistic_ext_data` (and their TOAST tables): those relations' counters are left out (a
//! dump-path clone has none of those rows either). Autovacuum workers are not compared as
//! backends: they change no contents. Sessions that connected and left, or that only read
//! (a pool cycling its connections, `psql`, `pg_dump`, a report running for minutes), are not
//! changes either: that is what the row counters and the direct comparison of sequences prove.
//!
//! The one thing it cannot see: a session of a role allowed to change `track_counts` (a
//! superuser, or a role granted `SET` on it, or code running as one, such as a superuser's
//! `SECURITY DEFINER` function calling `set_config`) that turns it off for itself, commits a row
//! change, and then leaves or stays idle for [`FLUSHED_AFTER`] — its change is counted nowhere, and
//! nothing then makes the check scan the rows (while it is connected and has been idle less than
//! that, the rows are scanned and its change is seen). Nothing does that to a
//! development template by accident; `--strategy dump` takes the template's own snapshot every
//! time.
//!
//! Our own look is harmless: the probe's session (and the scan's) is read-only and changes no counter that is
//! compared (connections and transactions are not compared at all). A probe waits for its own
//! backend to be gone before it returns, so that a direct copy right after is not refused.
//! A template with a login event trigger (PostgreSQL 17+) is not probed — our session would run
//! it — and its copies are never current.
//!

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::session::Session;
use super::{literal, Server};
use crate::proc;

/// How long a session must have been idle (outside a transaction) for everything it committed
/// to be in the shared counters: `PGSTAT_IDLE_INTERVAL` (10 s), after which an idle backend's
/// timer forces the flush, and 2 s for that flush to take its locks.
pub const FLUSHED_AFTER: Duration = Duration::from_secs(12);

/// A backend connected to the template, as `pg_stat_activity` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backend {
    pub pid: i64,
    pub started: String,
    pub state_change: String,
    pub state: String,
    pub kind: String,
    #[serde(default)]
    pub app: String,
    /// When its current transaction began; empty outside one.
    #[serde(default)]
    pub xact_start: String,
    /// Its current transaction's virtual transaction id (`pg_locks`), empty outside one: unlike
    /// `xact_start`, never the same for two transactions of one session (the transactions of
    /// one query message all start at the message's timestamp).
    #[serde(default)]
    pub vxid: String,
    /// A parallel worker's leader (`leader_pid`), else 0.
    #[serde(default)]
    pub leader: i64,
    /// Milliseconds since `state_change`, when the probe read it (not recorded).
    #[serde(default, skip_serializing)]
    pub idle_ms: i64,
}

impl Backend {
    fn client(&self) -> bool {
        self.kind == "client backend" && !self.state_change.is_empty()
    }
    fn idle(&self) -> bool {
        matches!(self.state.as_str(), "idle" | "idle in transaction" | "idle in transaction (aborted)")
    }
    fn same_session(&self, other: &Backend) -> bool {
        (self.pid, &self.started) == (other.pid, &other.started)
    }
}

/// The template's counters and settings, as one probe read them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub oid: i64,
    pub stats_reset: String,
    pub shared_reset: String,
    pub server_start: String,
    pub prepared: String,
    pub feeds: i64,
    pub now: String,
    /// Row changes are counted for every backend: `track_counts` is on, no per-role,
    /// per-database or per-function setting names it, and no role was granted the right to
    /// change it.
    pub counted: bool,
    /// Every relation that stores rows uses the heap access method (whose writes are counted).
    pub heap_only: bool,
    /// Digest of every relation's row-change counters (statistics catalogs left out).
    pub row_changes: String,
    /// How many relations that digest covers (for messages).
    pub relations: i64,
}

/// The state of a database's sequences: a digest of every sequence's qualified name,
/// `last_value` and `is_called`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sequences {
    pub digest: String,
    pub count: i64,
}

/// What a scan of the template's rows read, in one snapshot: every relation that stores rows
/// (the template's catalogs included), counted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rows {
    /// The oldest transaction still running when the recorded scan's snapshot was taken
    /// (`xid8`): a transaction that commits after that snapshot has an id at or above it.
    pub horizon: String,
    /// Digest of every relation's oid and visible row count.
    pub digest: String,
    pub relations: i64,
    /// Digest of the *window*: every visible row version written by a transaction at or above
    /// the horizon, as (relation, `xmin`), sorted. Rows committed before the recorded snapshot
    /// by transactions above the horizon are in it; a row committed after it adds a transaction
    /// id the recorded window cannot hold (that transaction's rows were invisible then).
    #[serde(default)]
    pub window: String,
    /// How many row versions the window holds.
    #[serde(default)]
    pub since: i64,
    /// Per relation (by oid): a digest of its visible row count and its part of the window —
    /// what tells which relations a stale copy must take again (see [`patch_script`]).
    #[serde(default)]
    pub per: std::collections::BTreeMap<String, String>,
    /// The migration ledger in the scan's snapshot (JSON), when the scan was asked to read it
    /// (never recorded).
    #[serde(default, skip_serializing)]
    pub ledger: Option<String>,
}

/// One look at the template: backends first, then counters, then sequences.
#[derive(Debug, Clone, Deserialize)]
pub struct Probe {
    pub backends: Vec<Backend>,
    pub counters: Counters,
    pub sequences: Sequences,
    /// Scans of the template's rows this probe's checks made, by the record's horizon (one scan
    /// serves the spare's and the frozen copy's checks when they share it).
    #[serde(skip)]
    scans: Vec<(String, Rows)>,
    /// How the last check that found a copy current got there, when the counters could not tell.
    #[serde(skip)]
    pub note: Option<String>,
    /// The migration ledger (JSON), read before the backends and the counters (when asked for).
    #[serde(default)]
    ledger: Option<String>,
    /// The ledger of the copy the last check found current, when a read of the template proved
    /// it: the probe's (current by the counters: nothing committed since the copy's record, up
    /// to after that read) or its scan's (current by the rows, read in the scan's snapshot).
    #[serde(skip)]
    pub current_ledger: Option<String>,
}

/// What a copy of the template records about the template it was made from: see the module
/// documentation for why comparing it with a probe of the present is enough. A record of an
/// older version (without `sequences`) does not read as one: such a copy is never current.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FrozenState {
    pub template: String,
    /// Backends on the template right after the copy, then the counters.
    pub backends: Vec<Backend>,
    pub counters: Option<Counters>,
    /// The copy's own sequences, read from the copy.
    pub sequences: Sequences,
    /// The template's rows, scanned right before the copy began (when every relation could be
    /// read): what a check compares when a session's counts may not be published yet.
    #[serde(default)]
    pub rows: Option<Rows>,
    /// Why this copy can never be taken as current, when it cannot.
    pub unverified: Option<String>,
    pub frozen_at: String,
}

impl FrozenState {
    /// The same record (one copy, recorded once).
    pub(super) fn same(&self, other: &FrozenState) -> bool {
        self.frozen_at == other.frozen_at && self.counters == other.counters && self.sequences == other.sequences
    }
}

const ACTIVITY_SQL: &str = "SELECT a.pid::bigint AS pid, coalesce(a.backend_start::text, '') AS started, \
     coalesce(a.state_change::text, '') AS state_change, coalesce(a.state, '') AS state, \
     coalesce(a.backend_type, '') AS kind, coalesce(a.application_name, '') AS app, \
     coalesce(a.xact_start::text, '') AS xact_start, coalesce(v.vxid, '') AS vxid, \
     coalesce(a.leader_pid, 0)::bigint AS leader, \
     coalesce((extract(epoch FROM clock_timestamp() - a.state_change) * 1000)::bigint, -1) AS idle_ms \
     FROM pg_stat_activity a LEFT JOIN (SELECT l.pid, string_agg(l.virtualxid, ',' ORDER BY l.virtualxid) AS vxid \
       FROM pg_locks l WHERE l.locktype = 'virtualxid' AND l.granted AND l.virtualxid = l.virtualtransaction \
       GROUP BY l.pid) v ON v.pid = a.pid WHERE a.datid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
     AND a.pid <> pg_backend_pid() AND a.backend_type IS DISTINCT FROM 'autovacuum worker'";

/// Relations whose row changes are statistics, not contents: what `ANALYZE` writes.
const STATISTICS: &str = "SELECT s.oid FROM pg_class s WHERE s.oid IN ('pg_catalog.pg_statistic'::regclass, \
     'pg_catalog.pg_statistic_ext_data'::regclass) UNION SELECT s.reltoastrelid FROM pg_class s \
     WHERE s.oid IN ('pg_catalog.pg_statistic'::regclass, 'pg_catalog.pg_statistic_ext_data'::regclass)";

fn counters_sql() -> String {
    format!(
        "SELECT d.oid::bigint AS oid, coalesce(s.stats_reset::text, '') AS stats_reset, \
         (SELECT coalesce(stats_reset::text, '') FROM pg_stat_archiver) AS shared_reset, \
         pg_postmaster_start_time()::text AS server_start, \
         (SELECT coalesce(string_agg(format('%s@%s', p.gid, p.prepared), ',' ORDER BY p.gid), '') \
            FROM pg_prepared_xacts p WHERE p.database = d.datname) AS prepared, \
         (SELECT count(u.subdbid) FROM pg_subscription u WHERE u.subdbid = d.oid) \
           + (SELECT count(*) FROM pg_replication_slots r WHERE r.database = d.datname) AS feeds, \
         clock_timestamp()::text AS now, \
         (current_setting('track_counts') = 'on' \
          AND NOT EXISTS (SELECT 1 FROM pg_db_role_setting r WHERE array_to_string(r.setconfig, ',') ILIKE '%track_counts%') \
          AND NOT EXISTS (SELECT 1 FROM pg_proc f WHERE array_to_string(f.proconfig, ',') ILIKE '%track_counts%') \
          AND NOT EXISTS (SELECT 1 FROM pg_parameter_acl p WHERE p.parname = 'track_counts')) AS counted, \
         NOT EXISTS (SELECT 1 FROM pg_class c JOIN pg_am a ON a.oid = c.relam \
            WHERE c.relkind IN ('r', 'm', 't') AND a.amname <> 'heap') AS heap_only, \
         w.digest AS row_changes, w.relations \
         FROM pg_database d JOIN pg_stat_database s ON s.datid = d.oid, \
         (SELECT coalesce(md5(string_agg(format('%s:%s:%s:%s', t.relid, t.n_tup_ins, t.n_tup_upd, t.n_tup_del), \
             ',' ORDER BY t.relid)), '') AS digest, count(*) AS relations \
            FROM pg_stat_all_tables t JOIN pg_class c ON c.oid = t.relid \
            WHERE NOT c.relisshared AND c.relpersistence <> 't' AND t.relid NOT IN ({STATISTICS})) w \
         WHERE d.datname = current_database()"
    )
}

/// Reads every sequence of the database psql is connected to (temporary ones aside), as
/// `:seq_q`/`:seq_n` for [`sequences_sql`]: one query over all of them, built here because a
/// sequence is read by naming it.
const SEQUENCES_QUERY: &str =
    "SELECT coalesce(string_agg(format('SELECT %L AS s, last_value::text || '','' || is_called::text AS v FROM %s', \
       format('%I.%I', n.nspname, c.relname), c.oid::regclass), ' UNION ALL '), \
       'SELECT NULL::text AS s, NULL::text AS v WHERE false') AS q, count(*) AS n \
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.relkind = 'S' AND c.relpersistence <> 't' \\gset seq_\n";

const SEQUENCES_SQL: &str = "(SELECT json_build_object('digest', \
       coalesce(md5(string_agg(x.s || '=' || x.v, E'\\n' ORDER BY x.s COLLATE \"C\")), ''), 'count', :seq_n) \
     FROM (:seq_q) x)";

/// How every session of ours on the template (or a copy) starts: it writes nothing, and what it
/// names is PostgreSQL's own (a schema of the database's `search_path` cannot shadow a view).
const SESSION: &str = "SET default_transaction_read_only = on;\nSET search_path = pg_catalog, pg_temp;\n";

/// The psql script of a probe: one JSON object on stdout.
/// `ledger`: the psql lines that read the migration ledger into the variable `ledger_json`
/// ([`Ahead::start`]), run first.
fn probe_script(ledger: Option<&str>) -> String {
    let (read, field) = match ledger {
        Some(read) => (read, ", 'ledger', :'ledger_json'"),
        None => ("", ""),
    };
    format!(
        "{SESSION}{read}\
         SELECT coalesce(json_agg(a ORDER BY a.pid), '[]') AS backends FROM ({ACTIVITY_SQL}) a \\gset probe_\n\
         {SEQUENCES_QUERY}\
         SELECT json_build_object('backends', :'probe_backends'::json, \
           'counters', (SELECT row_to_json(c) FROM ({}) c), 'sequences', {SEQUENCES_SQL}{field});\n",
        counters_sql()
    )
}

/// A psql on `db` under a name of ours that no other session has.
fn own_session(server: &Server, db: &str) -> Result<(std::process::Command, String)> {
    static N: AtomicU32 = AtomicU32::new(0);
    let app = format!("xtask-db-probe-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
    let mut cmd = server.psql(db)?;
    cmd.env("PGAPPNAME", &app);
    Ok((cmd, app))
}

/// Waits (up to 2 s) until no backend named `app` is left on the server: a session's backend
/// goes on exiting for a moment after its client has.
fn wait_gone(server: &Server, app: &str) -> Result<()> {
    for _ in 0..200 {
        let left = server.count(
            &server.maintenance_db,
            &format!("SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = {}", literal(app)),
        )?;
        if left == 0 {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Looks at `template` (see the module documentation), from a read-only session of ours that is
/// gone again when this returns. Never run while a direct copy of `template` is being made.
pub fn probe(server: &Server, template: &str) -> Result<Probe> {
    let (mut psql, app) = own_session(server, template)?;
    let out = proc::capture(&mut psql, Some(probe_script(None).as_bytes()))
        .map_err(|e| super::classify(e, &server.url, template))
        .with_context(|| format!("inspecting the template `{template}`"));
    wait_gone(server, &app)?;
    serde_json::from_str(out?.trim()).with_context(|| format!("reading what the template `{template}` looks like"))
}

/// A probe started ahead: its psql runs while the caller does other work (the run's lock, the
/// look at the branch's names), and [`Ahead::finish`] collects it. When the counters cannot tell
/// whether `record` (the spare clone's) is current, the scan the check would run next runs
/// right after the probe, in the same thread, and comes with it (a probe's scans are reused by
/// its checks). Dropped unfinished, it waits for its psql to end (its sessions must not outlive
/// the run's look, nor meet a direct copy).
pub struct Ahead {
    template: String,
    /// The server it looks at (its URL without secrets).
    server: String,
    apps: Vec<String>,
    thread: Option<std::thread::JoinHandle<Option<Probe>>>,
}

impl Ahead {
    /// Starts a probe of `template`, unless it cannot be probed without side effects (a login
    /// event trigger) or its statistics prove nothing (before PostgreSQL 15): `None` then.
    /// `ledger`: psql lines that read the migration ledger into the variable `ledger_json` (JSON
    /// text), printing nothing: run by the probe before anything else, and by the scan in its
    /// snapshot; what they read comes back as [`Probe::current_ledger`].
    pub fn start(
        server: &Server,
        template: &str,
        record: Option<&FrozenState>,
        ledger: Option<String>,
    ) -> Result<Option<Ahead>> {
        if too_old(server).is_some() || unprobeable(server, template)?.is_some() {
            return Ok(None);
        }
        let (psql, app) = own_session(server, template)?;
        let scan = match record.filter(|r| r.unverified.is_none()).map(|r| (&r.counters, &r.rows)) {
            Some((Some(counters), Some(rows))) if scannable(rows) => {
                Some((counters.clone(), record.map(|r| r.backends.clone()).unwrap_or_default(), rows.clone()))
            }
            _ => None,
        };
        // One session for both: the scan needs no second connection.
        let thread = std::thread::spawn(move || {
            let mut session = Session::open(psql).ok()?;
            let out = session.run(&probe_script(ledger.as_deref())).ok()?;
            let mut probe: Probe = serde_json::from_str(out.trim()).ok()?;
            if let Some((then, before, rows)) = scan {
                if let Judged::Unsure(_) = compare(&then, &before, &probe.counters, &probe.backends) {
                    if let Ok(Ok(Ok(now))) = session
                        .run(&scan_script_reading(Some(&rows.horizon), ledger.as_deref()))
                        .map(|out| read_scan(&out))
                    {
                        probe.scans.push((rows.horizon.clone(), now));
                    }
                }
            }
            Some(probe)
        });
        Ok(Some(Ahead {
            template: template.to_string(),
            server: server.url.without_secrets(),
            apps: vec![app],
            thread: Some(thread),
        }))
    }

    /// A look whose thread does everything itself (connects, probes, waits for its sessions to
    /// be gone) and yields the probe.
    pub(super) fn spawned(template: &str, server: String, thread: std::thread::JoinHandle<Option<Probe>>) -> Ahead {
        Ahead { template: template.to_string(), server, apps: Vec::new(), thread: Some(thread) }
    }

    /// The probe, once its sessions are gone; `None` when it failed (the check then looks again,
    /// and says why if it fails again).
    pub fn finish(mut self, server: &Server) -> Result<Option<Probe>> {
        let probe = self.thread.take().and_then(|t| t.join().ok()).flatten();
        for app in &self.apps {
            wait_gone(server, app)?;
        }
        proc::check_interrupt()?;
        Ok(probe)
    }

    pub fn template(&self) -> &str {
        &self.template
    }

    /// The server it looks at, as [`super::PgUrl::without_secrets`] writes it.
    pub fn server(&self) -> &str {
        &self.server
    }
}

impl Drop for Ahead {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The sequences of `db` (a copy just made, still open to our connections).
fn sequences(server: &Server, db: &str) -> Result<Sequences> {
    let (mut psql, app) = own_session(server, db)?;
    let script = format!("{SESSION}{SEQUENCES_QUERY}SELECT {SEQUENCES_SQL};\n");
    let out = proc::capture(&mut psql, Some(script.as_bytes()))
        .map_err(|e| super::classify(e, &server.url, db))
        .with_context(|| format!("reading the sequences of `{db}`"));
    wait_gone(server, &app)?;
    serde_json::from_str(out?.trim()).with_context(|| format!("reading the sequences of `{db}`"))
}

/// The relations a scan counts: every one that stores rows (tables, partitions, populated
/// materialized views), catalogs included, statistics catalogs and temporary tables left out.
const SCANNED: &str = "FROM pg_class c WHERE c.relkind IN ('r', 'm') AND NOT c.relisshared \
     AND c.relpersistence <> 't' AND (c.relkind <> 'm' OR c.relispopulated) AND c.oid NOT IN (STATISTICS)";

/// The psql script of a scan: one JSON object on stdout. One repeatable-read transaction, so the
/// horizon, the next transaction id and every count come from one snapshot. Rows are counted
/// with row security off (a policy that would apply to us is an error, never fewer rows) and
/// a short lock timeout (a table locked by a migration in progress is an error, never a wait).
/// `then`: the record's horizon, when checking; a row is "since" when its `xmin` is a normal
/// transaction id in [`then`, next) — taken modulo 2^32, as `xmin` is the low half of an
/// `xid8`: `age(xmin)` (the distance from the transaction's stable next id, fixed at its first
/// call, which follows the snapshot; `INT_MAX` for the frozen and bootstrap ids) at most
/// `age(then)`, an integer comparison per row (a third of the time of comparing the ids as
/// text, on pagila) that is exact while fewer than 2^31 ids separate them (checked: `span`).
fn scan_script(then: Option<&str>) -> String {
    scan_script_reading(then, None)
}

/// [`scan_script`], running `ledger` (see [`Ahead::start`]) in the same snapshot too.
fn scan_script_reading(then: Option<&str>, ledger: Option<&str>) -> String {
    let (read, field) = match ledger {
        Some(read) => (read, ", 'ledger', :'ledger_json'"),
        None => ("", ""),
    };
    format!(
        "{}{read}\\if :scan_hidden\n\
         SELECT json_build_object('hidden', :'scan_first_hidden');\n\
         \\else\n\
         SELECT json_build_object('horizon', :'scan_h', 'relations', :scan_k, \
           'digest', coalesce(md5(string_agg(x.r || ':' || x.n, ',' ORDER BY x.r)), ''), \
           'window', coalesce(md5(string_agg(x.r || '=' || x.x, ';' ORDER BY x.r) FILTER (WHERE x.x IS NOT NULL)), ''), \
           'since', coalesce(sum(x.w), 0), 'span', :scan_span, 'top', :scan_top, \
           'per', coalesce(json_object_agg(x.r, {PER}) FILTER (WHERE x.r IS NOT NULL), '{{}}'){field}) FROM (:scan_q) x;\n\
         \\endif\n\
         COMMIT;\n",
        scan_head(then)
    )
}

/// One relation's entry in [`Rows::per`], from a row `x` of the scan's counts.
const PER: &str = "left(md5(x.n || ':' || coalesce(x.x, '')), 16)";

/// The first part of a scan: the session, its snapshot, and in psql variables `scan_*` the
/// horizon, the id span since it, whether a relation is hidden from us, and `scan_q`, the query
/// that counts every relation's rows (`r`, `n`) and its part of the window (`x`, `w`).
fn scan_head(then: Option<&str>) -> String {
    let scanned = SCANNED.replace("STATISTICS", STATISTICS);
    let then = then.unwrap_or("NULL");
    format!(
        "{SESSION}SET row_security = off;\nSET lock_timeout = '250ms';\n\
         BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;\n\
         SELECT h::text AS h, pg_snapshot_xmax(pg_current_snapshot())::text::numeric - h AS span, \
           pg_snapshot_xmax(pg_current_snapshot())::text::numeric AS top, \
           h % 4294967296 AS low, age((h % 4294967296)::text::xid) AS age, \
           (count(*) FILTER (WHERE NOT has_table_privilege(c.oid, 'SELECT'))) > 0 AS hidden, \
           coalesce(min(c.oid::regclass::text) FILTER (WHERE NOT has_table_privilege(c.oid, 'SELECT')), '') AS first_hidden \
           FROM (SELECT coalesce({then}::numeric, pg_snapshot_xmin(pg_current_snapshot())::text::numeric) AS h) t, \
           LATERAL (SELECT c.oid {scanned}) c GROUP BY h \\gset scan_\n\
         SELECT coalesce(string_agg(format('SELECT %s::bigint AS r, count(*) AS n, \
             string_agg(xmin::text, '','' ORDER BY xmin::text::bigint) FILTER (WHERE age(xmin) <= %s) AS x, \
             count(*) FILTER (WHERE age(xmin) <= %s) AS w FROM ONLY %s', \
             c.oid, :scan_age, :scan_age, c.oid::regclass), ' UNION ALL '), \
           'SELECT 0::bigint AS r, 0::bigint AS n, NULL::text AS x, 0::bigint AS w WHERE false') AS q, \
           count(*) AS k {scanned} \\gset scan_\n"
    )
}

/// The psql script that brings a stale copy of the template up to date, when only rows of its
/// tables changed since `then` (a copy's [`Rows`], with [`Rows::per`]) and the template is still
/// the database `oid`. In one repeatable-read snapshot S of the template, as a scan: each
/// relation's count and part of the window, compared with the record's. The first line of
/// output is JSON: `refused` (empty, or why not) and `relations` (how many differ). Then, when
/// not refused, the script for the copy: per relation that differs, a line emptying it and
/// starting a `COPY … FROM STDIN`, its rows as S sees them, and the end-of-data line `\.` (a
/// line COPY's text format cannot hold: it writes a backslash as `\\`); then one `setval` per
/// sequence, with the template's state. Why that gives what a dump taken in S would: a relation
/// with the same count and window has had no row written or removed since the record (the
/// module's argument, restricted to one relation: the window's pairs name their relation), and
/// the copy equals the template as of the record. Refused when a catalog differs (DDL, comments,
/// privileges, large objects: not rows a `COPY` can carry), a relation was made or dropped, a
/// materialized view or a table with rules changed, the template was made again, or the ids
/// cannot tell (see [`scan`]). Names come from the template's catalogs, which equal the copy's
/// (they did not change), quoted by PostgreSQL (`regclass`, `quote_ident`); generated columns
/// are left out (the copy computes them). Both sides read and write text with the same
/// settings (ISO dates, `extra_float_digits` 3, UTC, the template's `lc_monetary` and client
/// encoding), and a changed table with a trigger enabled `ALWAYS` or `REPLICA` (which fires
/// under `session_replication_role = replica`) refuses. `None` when `then` has no usable record.
pub(super) fn patch_script(then: &Rows, oid: i64) -> Option<String> {
    if then.per.is_empty() || then.horizon.is_empty() || !then.horizon.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let recorded = serde_json::to_string(&then.per).ok()?;
    let script = r#"\if :scan_hidden
SELECT json_build_object('refused', format('%s may not be read by this role', :'scan_first_hidden'), 'relations', 0);
\else
WITH now AS MATERIALIZED (SELECT x.r, PER AS d FROM (:scan_q) x),
  recorded AS (SELECT key::bigint AS r, value AS d FROM json_each_text(RECORDED::json)),
  diff AS (SELECT coalesce(n.r, t.r) AS r, (n.d IS NULL OR t.d IS NULL) AS appeared
           FROM now n FULL JOIN recorded t ON t.r = n.r WHERE n.d IS DISTINCT FROM t.d)
SELECT CASE
  WHEN (SELECT d.oid FROM pg_database d WHERE d.datname = current_database()) <> THE_OID THEN 'the template was made again since'
  WHEN NOT (:scan_span >= 0 AND :scan_span < 2147483648) THEN 'too many transactions since to tell from row versions'
  WHEN :scan_top > 4294967296 THEN 'this server has used more than 2^32 transaction ids'
  WHEN EXISTS (SELECT 1 FROM diff WHERE appeared) THEN 'relations were made or dropped since'
  WHEN EXISTS (SELECT 1 FROM diff d JOIN pg_class c ON c.oid = d.r
               WHERE c.relfilenode <> 0 AND pg_relation_filenode(c.oid) IS DISTINCT FROM c.relfilenode)
    THEN 'a table was truncated or rewritten as it was read (its new file is not the snapshot''s)'
  WHEN EXISTS (SELECT 1 FROM diff d JOIN pg_class c ON c.oid = d.r
               WHERE c.relnamespace = 'pg_catalog'::regnamespace OR c.oid < 16384)
    THEN (SELECT format('its catalog %s changed since (DDL, a comment, a privilege or a large object)', min(c.relname))
          FROM diff d JOIN pg_class c ON c.oid = d.r WHERE c.relnamespace = 'pg_catalog'::regnamespace OR c.oid < 16384)
  WHEN EXISTS (SELECT 1 FROM diff d JOIN pg_trigger g ON g.tgrelid = d.r WHERE g.tgenabled IN ('A', 'R'))
    THEN (SELECT format('%s changed since, and a trigger on it is enabled ALWAYS or REPLICA (it would fire as its rows are copied)',
                        min(g.tgrelid::regclass::text))
          FROM diff d JOIN pg_trigger g ON g.tgrelid = d.r WHERE g.tgenabled IN ('A', 'R'))
  WHEN EXISTS (SELECT 1 FROM diff d JOIN pg_class c ON c.oid = d.r WHERE c.relkind <> 'r' OR c.relhasrules)
    THEN (SELECT format('%s changed since, and it is a materialized view or has rules (which a DELETE would run)',
                        min(c.oid::regclass::text))
          FROM diff d JOIN pg_class c ON c.oid = d.r WHERE c.relkind <> 'r' OR c.relhasrules)
  WHEN EXISTS (SELECT 1 FROM diff d JOIN pg_class c ON c.oid = d.r WHERE c.relname ~ '[\n\r]'
               OR (SELECT n.nspname FROM pg_namespace n WHERE n.oid = c.relnamespace) ~ '[\n\r]'
               OR EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = d.r AND a.attname ~ '[\n\r]'))
    THEN 'a table whose name or a column name holds a line break changed since'
  WHEN EXISTS (SELECT 1 FROM diff d WHERE NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = d.r
               AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''))
    THEN 'a table without columns to copy changed since'
  ELSE '' END AS refused,
  coalesce((SELECT string_agg(d.r::text, ',' ORDER BY d.r) FROM diff d), '') AS changed,
  (SELECT count(*) FROM diff) AS n \gset patch_
SELECT json_build_object('refused', :'patch_refused', 'relations', :patch_n);
SELECT :'patch_refused' = '' AS go \gset patch_
\if :patch_go
SELECT format('SET client_encoding = %L; SET standard_conforming_strings = on; SET DateStyle = ''ISO, YMD''; SET IntervalStyle = ''postgres''; SET TimeZone = ''UTC''; SET lc_monetary = %L; SET xmloption = content; SET search_path = pg_catalog, pg_temp;',
         current_setting('client_encoding'), current_setting('lc_monetary'));
SELECT format('SELECT %L', format('%s %s; COPY %s (%s) FROM STDIN;',
         CASE WHEN EXISTS (SELECT 1 FROM pg_constraint f WHERE f.contype = 'f' AND f.confrelid = c.oid)
           THEN 'DELETE FROM ONLY' ELSE 'TRUNCATE ONLY' END, c.oid::regclass, c.oid::regclass, a.cols)),
       format('COPY (SELECT %s FROM ONLY %s) TO STDOUT', a.cols, c.oid::regclass),
       'SELECT ''\.'''
  FROM pg_class c, LATERAL (SELECT string_agg(quote_ident(t.attname), ', ' ORDER BY t.attnum) AS cols
    FROM pg_attribute t WHERE t.attrelid = c.oid AND t.attnum > 0 AND NOT t.attisdropped AND t.attgenerated = '') a
  WHERE c.oid = ANY (string_to_array(:'patch_changed', ',')::oid[]) ORDER BY c.oid \gexec
SELECT format('SELECT format(''SELECT pg_catalog.setval(%%L, %%s, %%s);'', %L, last_value, is_called::text) FROM %s',
         c.oid::regclass::text, c.oid::regclass)
  FROM pg_class c WHERE c.relkind = 'S' AND c.relpersistence <> 't' ORDER BY c.oid \gexec
\endif
\endif
COMMIT;
"#;
    let script =
        script.replace("PER", PER).replace("RECORDED", &literal(&recorded)).replace("THE_OID", &oid.to_string());
    // Text that reads back as it was written, whatever the template's own settings say (a
    // database's `DateStyle` or `extra_float_digits` are not the copy's): the settings pg_dump
    // takes, and the same ones, printed first, for the copy's side.
    // `standard_conforming_strings` on: the end-of-data line is the literal '\.'.
    let exact = "SET standard_conforming_strings = on;\nSET DateStyle = 'ISO, YMD';\nSET IntervalStyle = 'postgres';\n\
                 SET extra_float_digits = 3;\nSET TimeZone = 'UTC';\n";
    Some(format!("{exact}{}{script}", scan_head(Some(&then.horizon))))
}

/// What the first line of a [`patch_script`]'s output said.
#[derive(Debug, Deserialize)]
pub(super) struct PatchPlan {
    pub refused: String,
    pub relations: i64,
}

/// A psql session of ours on `template` (for a [`patch_script`]), and the name to wait for.
pub(super) fn patch_session(server: &Server, template: &str) -> Result<(std::process::Command, String)> {
    own_session(server, template)
}

/// Waits until our session `app` is gone from the server (see [`probe`]).
pub(super) fn session_gone(server: &Server, app: &str) -> Result<()> {
    wait_gone(server, app)
}

#[derive(Deserialize)]
struct Scanned {
    #[serde(default)]
    hidden: Option<String>,
    #[serde(flatten)]
    rows: Option<Rows>,
    #[serde(default)]
    span: Option<f64>,
    /// The snapshot's `xmax` (`xid8`): every id the server has handed out is below it.
    #[serde(default)]
    top: Option<f64>,
}

/// Whether a record's horizon can go into a script (the record is ours, but it is read from
/// the server: only digits go in).
fn scannable(rows: &Rows) -> bool {
    !rows.horizon.is_empty() && rows.horizon.bytes().all(|b| b.is_ascii_digit())
}

/// Counts every row of `template` (see [`scan_script`]); with `then`, also the rows written
/// since its horizon. `Ok(Err(why))` when it cannot be scanned that way.
fn scan(server: &Server, template: &str, then: Option<&Rows>) -> Result<std::result::Result<Rows, String>> {
    if then.is_some_and(|r| !scannable(r)) {
        return Ok(Err("its record of the template's rows is unreadable".into()));
    }
    let (mut psql, app) = own_session(server, template)?;
    let scanned = run_scan(&mut psql, then);
    wait_gone(server, &app)?;
    scanned.with_context(|| format!("reading a scan of `{template}`"))
}

/// Runs a scan in `psql` (a session of ours on the template; `then` scannable) and reads it.
fn run_scan(psql: &mut std::process::Command, then: Option<&Rows>) -> Result<std::result::Result<Rows, String>> {
    let out = match proc::capture(psql, Some(scan_script(then.map(|r| r.horizon.as_str())).as_bytes())) {
        Ok(out) => out,
        Err(e) => {
            proc::check_interrupt()?;
            return Ok(Err(crate::error::telling_line(&format!("{e:#}")).to_string()));
        }
    };
    read_scan(&out)
}

/// What a scan printed, read (see [`run_scan`]).
fn read_scan(out: &str) -> Result<std::result::Result<Rows, String>> {
    let got: Scanned = serde_json::from_str(out.trim())?;
    if let Some(table) = got.hidden {
        return Ok(Err(format!("{table} may not be read by this role")));
    }
    // More transactions since than half the id space: `xmin` alone can no longer tell.
    if got.span.is_some_and(|s| !(0.0..2_147_483_648.0).contains(&s)) {
        return Ok(Err("too many transactions since to tell from row versions".into()));
    }
    // Ids gone round once: a frozen row keeps its raw `xmin` however old, so its low 32 bits
    // can be those of a transaction running now.
    if got.top.is_some_and(|t| t > 4_294_967_296.0) {
        return Ok(Err(
            "this server has used more than 2^32 transaction ids, so a frozen row's id can repeat a recent one".into(),
        ));
    }
    got.rows.map(Ok).context("a scan printed no counts")
}

/// Why the template cannot be probed without side effects, if it cannot: a login event trigger
/// (PostgreSQL 17+) would run for our session.
pub(super) fn unprobeable(server: &Server, template: &str) -> Result<Option<String>> {
    if server.major < 17 {
        return Ok(None);
    }
    let n = server.count(
        &server.maintenance_db,
        &format!("SELECT count(*) AS n FROM pg_database WHERE datname = {} AND dathasloginevt", literal(template)),
    )?;
    Ok((n > 0).then(|| "the template has a login event trigger, which a look at it would run".to_string()))
}

/// Why a copy whose record is `frozen` is not current now, or `None` when it is.
pub fn staleness(server: &Server, frozen: &FrozenState) -> Result<Option<String>> {
    staleness_seen(server, frozen, &mut None)
}

/// [`staleness`], probing the template only if `seen` holds no probe of it yet (one look serves
/// the spare's and the frozen copy's checks of one plan).
pub(super) fn staleness_seen(
    server: &Server,
    frozen: &FrozenState,
    seen: &mut Option<Probe>,
) -> Result<Option<String>> {
    if let Some(why) = too_old(server) {
        return Ok(Some(why));
    }
    if let Some(why) = &frozen.unverified {
        return Ok(Some(format!("it was made while the template was changing ({why})")));
    }
    let Some(then) = &frozen.counters else { return Ok(Some("it has no record of the template's state".into())) };
    if let Some(why) = unprobeable(server, &frozen.template)? {
        return Ok(Some(why));
    }
    if seen.is_none() {
        match probe(server, &frozen.template) {
            Ok(now) => *seen = Some(now),
            Err(e) => {
                proc::check_interrupt()?;
                let why = format!("{e:#}");
                return Ok(Some(format!("the template could not be inspected ({})", crate::error::telling_line(&why))));
            }
        }
    }
    let Some(probe) = seen.as_mut() else { return Ok(Some("the template could not be inspected".into())) };
    probe.note = None;
    probe.current_ledger = None;
    let mut note = None;
    let mut ledger = probe.ledger.clone();
    match compare(then, &frozen.backends, &probe.counters, &probe.backends) {
        Judged::Current => {}
        Judged::Stale(why) => return Ok(Some(why)),
        Judged::Unsure(why) => {
            let Some(rows) = &frozen.rows else { return Ok(Some(why)) };
            let cached = probe.scans.iter().find(|(h, _)| *h == rows.horizon).map(|(_, r)| r.clone());
            let scanned = match cached {
                Some(r) => Ok(r),
                None => scan(server, &frozen.template, Some(rows))?,
            };
            if let Ok(r) = &scanned {
                probe.scans.push((rows.horizon.clone(), r.clone()));
            }
            match scanned {
                Ok(now) if now.window == rows.window && now.digest == rows.digest => {
                    ledger = now.ledger.clone();
                    note = Some(format!(
                        "the counters could not tell: {why}; a scan of its {} relations found no row written or removed since",
                        now.relations
                    ));
                }
                Ok(now) if now.since > rows.since => {
                    return Ok(Some(format!(
                        "{why}; and {} row(s) of the template were written since (a scan of its {} relations)",
                        now.since - rows.since,
                        now.relations
                    )))
                }
                Ok(now) if now.window != rows.window => {
                    return Ok(Some(format!(
                        "{why}; and rows of the template were written or removed since (a scan of its {} relations)",
                        now.relations
                    )))
                }
                Ok(now) => {
                    return Ok(Some(format!(
                        "{why}; and rows of the template were removed since, or relations made or dropped (a scan of its {} relations)",
                        now.relations
                    )))
                }
                Err(cannot) => return Ok(Some(format!("{why}; and its rows could not be scanned ({cannot})"))),
            }
        }
    }
    if probe.sequences != frozen.sequences {
        return Ok(Some(format!(
            "a sequence of the template moved since (nextval and setval leave no row change; {} sequence(s) compared)",
            probe.sequences.count
        )));
    }
    probe.note = note;
    probe.current_ledger = ledger;
    Ok(None)
}

/// A new record for a copy whose record `old` is current only by a scan of the rows (the
/// counters could not tell): what a copy made now would record, so that the next check needs no
/// scan. The same bracket as [`freeze`]: a probe, a scan (which must still find nothing written
/// or removed since `old`'s horizon — the copy then equals the template as of the scan's
/// snapshot), a probe; nothing may have happened between the probes, and the sequences must
/// still equal the copy's. `None` when any of that fails (the old record stays).
pub(super) fn restamp(server: &Server, old: &FrozenState) -> Result<Option<FrozenState>> {
    let Some(rows) = &old.rows else { return Ok(None) };
    if old.unverified.is_some() || old.counters.is_none() || too_old(server).is_some() {
        return Ok(None);
    }
    if unprobeable(server, &old.template)?.is_some() {
        return Ok(None);
    }
    let before = probe(server, &old.template)?;
    let Ok(now) = scan(server, &old.template, Some(rows))? else { return Ok(None) };
    if now.window != rows.window || now.digest != rows.digest {
        return Ok(None);
    }
    let after = probe(server, &old.template)?;
    if compare(&before.counters, &before.backends, &after.counters, &after.backends) != Judged::Current
        || after.sequences != old.sequences
    {
        return Ok(None);
    }
    Ok(Some(FrozenState {
        template: old.template.clone(),
        backends: after.backends,
        frozen_at: after.counters.now.clone(),
        counters: Some(after.counters),
        sequences: old.sequences.clone(),
        rows: Some(now),
        unverified: None,
    }))
}

/// Before PostgreSQL 15, statistics travel to a collector process asynchronously (and may be
/// dropped): a counter that did not move proves nothing.
fn too_old(server: &Server) -> Option<String> {
    (server.major < 15).then(|| {
        format!("PostgreSQL {} collects statistics asynchronously, so changes cannot be ruled out", server.major)
    })
}

fn seconds(ms: i64) -> String {
    format!("{:.1} s", ms.max(0) as f64 / 1000.0)
}

/// What comparing a record with a probe concluded.
#[derive(Debug, PartialEq, Eq)]
enum Judged {
    /// No committed change since.
    Current,
    /// A committed change since, or one the counters cannot rule out and a scan could not
    /// either (another access method; the template re-created).
    Stale(String),
    /// The counters cannot tell, for this reason; a scan of the rows can.
    Unsure(String),
}

impl Judged {
    fn why(self) -> Option<String> {
        match self {
            Judged::Current => None,
            Judged::Stale(why) | Judged::Unsure(why) => Some(why),
        }
    }
}

/// Whether the template as (`now`, `backends`) may hold a committed change that it did not hold
/// as (`then`, `before`): the rules of the module documentation, in order.
fn compare(then: &Counters, before: &[Backend], now: &Counters, backends: &[Backend]) -> Judged {
    if then.oid != now.oid {
        return Judged::Stale("the template was re-created since".into());
    }
    if !now.heap_only {
        return Judged::Stale(
            "the template has tables of an access method other than heap, whose writes may not be counted".into(),
        );
    }
    let mut unsure = None;
    let mut doubt = |why: String| {
        unsure.get_or_insert(why);
    };
    let counters_kept = then.stats_reset == now.stats_reset
        && then.shared_reset == now.shared_reset
        && then.server_start == now.server_start;
    if then.stats_reset != now.stats_reset || then.shared_reset != now.shared_reset {
        doubt("the server's statistics were reset since".into());
    }
    if then.server_start != now.server_start {
        doubt("the server was restarted since".into());
    }
    if now.feeds > 0 {
        doubt(
            "the template has a subscription or a logical replication slot, so changes can arrive without a session"
                .into(),
        );
    }
    if then.prepared != now.prepared {
        doubt("its prepared transactions changed since".into());
    }
    if !(then.counted && now.counted) {
        doubt("row changes are not counted for every session (track_counts is off, set for a role, database or function, or granted to a role to change)".into());
    }
    let same_transaction = |b: &Backend| {
        b.client()
            && !b.xact_start.is_empty()
            && !b.vxid.is_empty()
            && before.iter().any(|o| o.same_session(b) && o.xact_start == b.xact_start && o.vxid == b.vxid)
    };
    for b in backends {
        if b.kind == "parallel worker" && backends.iter().any(|l| l.pid == b.leader && same_transaction(l)) {
            continue;
        }
        if !b.client() {
            let what = if b.kind == "client backend" {
                "a session we may not inspect (another role's, without pg_read_all_stats)".to_string()
            } else {
                format!("a {}", b.kind)
            };
            doubt(format!("{what} is connected to the template, and may commit at any moment"));
            continue;
        }
        let unchanged = b.idle() && before.iter().any(|o| o.same_session(b) && o.state_change == b.state_change);
        let flushed = b.state == "idle" && b.idle_ms >= FLUSHED_AFTER.as_millis() as i64;
        if unchanged || flushed || same_transaction(b) {
            continue;
        }
        let new = !before.iter().any(|o| o.same_session(b));
        doubt(match (new, b.state.as_str()) {
            (_, "active") => format!(
                "a session on the template is running a statement in a transaction that began since (pid {})",
                b.pid
            ),
            (_, "idle") => format!(
                "a session {} the template ran a statement {} ago (its row counts are certain to be published once it has been idle {} s)",
                if new { "that connected to" } else { "on" },
                seconds(b.idle_ms),
                FLUSHED_AFTER.as_secs()
            ),
            _ => format!("a session on the template is in a transaction that began since (pid {})", b.pid),
        });
    }
    if counters_kept && now.row_changes != then.row_changes {
        return Judged::Stale(format!(
            "rows of the template were changed since (the row-change counters of its {} relations moved)",
            now.relations
        ));
    }
    match unsure {
        Some(why) => Judged::Unsure(why),
        None => Judged::Current,
    }
}

/// Runs `copy` (which makes a copy of the template, `copied`, and connects to the template only
/// through sessions named `own_app`) and returns what the copy records: a probe before, the copy,
/// a probe after and the copy's own sequences; unverified when anything happened in between that
/// the copy may have missed.
pub(super) fn freeze<T>(
    server: &Server,
    template: &str,
    copied: impl Fn(&T) -> String,
    own_app: Option<&str>,
    copy: impl FnOnce() -> Result<T>,
) -> Result<(T, FrozenState)> {
    let never = |out: T, why: String| {
        let state = FrozenState {
            template: template.into(),
            backends: vec![],
            counters: None,
            sequences: Sequences { digest: String::new(), count: 0 },
            rows: None,
            unverified: Some(why),
            frozen_at: String::new(),
        };
        Ok((out, state))
    };
    if let Some(why) = too_old(server).or(unprobeable(server, template)?) {
        return never(copy()?, why);
    }
    let before = probe(server, template)?;
    // The rows as they are before the copy begins; whatever commits from here to the probe
    // after it makes the record unverified (the same comparison as below).
    let rows = scan(server, template, None)?.ok();
    let out = copy()?;
    // Our own dump's backend may still be on its way out.
    if let Some(app) = own_app {
        wait_gone(server, app)?;
    }
    let after = probe(server, template)?;
    let sequences = sequences(server, &copied(&out))?;
    let unverified = compare(&before.counters, &before.backends, &after.counters, &after.backends).why();
    let state = FrozenState {
        template: template.into(),
        rows,
        backends: after.backends,
        unverified,
        frozen_at: after.counters.now.clone(),
        counters: Some(after.counters),
        sequences,
    };
    Ok((out, state))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters() -> Counters {
        Counters {
            oid: 1,
            stats_reset: String::new(),
            shared_reset: "r".into(),
            server_start: "s".into(),
            prepared: String::new(),
            feeds: 0,
            now: "n".into(),
            counted: true,
            heap_only: true,
            row_changes: "w".into(),
            relations: 70,
        }
    }
    fn idle(pid: i64) -> Backend {
        Backend {
            pid,
            started: "t0".into(),
            state_change: "t1".into(),
            state: "idle".into(),
            kind: "client backend".into(),
            app: "psql".into(),
            xact_start: String::new(),
            vxid: String::new(),
            leader: 0,
            idle_ms: 3000,
        }
    }
    fn active(pid: i64, xact: &str) -> Backend {
        let vxid = format!("3/{}", xact.trim_start_matches('x'));
        Backend { state: "active".into(), xact_start: xact.into(), vxid, state_change: "t2".into(), ..idle(pid) }
    }

    #[test]
    fn staleness_rules() {
        let before = vec![idle(1), idle(2), active(3, "x1")];
        assert_eq!(compare(&counters(), &before, &counters(), &before), Judged::Current);
        type Change = fn(&mut Counters, &mut Vec<Backend>);
        let cases: [(Change, &str); 17] = [
            (|c, _| c.row_changes = "w2".into(), "row-change counters of its 70 relations moved"),
            (|c, _| c.oid = 2, "re-created"),
            (|c, _| c.stats_reset = "now".into(), "reset"),
            (|c, _| c.shared_reset = "crash".into(), "reset"),
            (|c, _| c.server_start = "later".into(), "restarted"),
            (|c, _| c.prepared = "gid@t".into(), "prepared"),
            (|c, _| c.feeds = 1, "subscription"),
            (|c, _| c.counted = false, "not counted"),
            (|c, _| c.heap_only = false, "access method"),
            // A session that ran a statement a moment ago may not have published its counts.
            (|_, b| (b[0].state_change = "t2".into(), b[0].idle_ms = 11_000).0, "ran a statement 11.0 s ago"),
            (|_, b| b.push(idle(9)), "connected to the template ran a statement 3.0 s ago"),
            // A transaction that began since: it may commit at any moment.
            (|_, b| b[2] = active(3, "x2"), "running a statement in a transaction that began since"),
            // The next transaction of one query message: same start, another transaction.
            (|_, b| b[2].vxid = "3/9".into(), "running a statement in a transaction that began since"),
            (|_, b| b.push(active(9, "x9")), "running a statement"),
            (
                |_, b| {
                    b[0] = Backend {
                        state: "idle in transaction".into(),
                        xact_start: "x5".into(),
                        state_change: "t5".into(),
                        ..idle(1)
                    }
                },
                "in a transaction that began since",
            ),
            (|_, b| b[0].state_change = String::new(), "may not inspect"),
            (|_, b| b[0].kind = "walsender".into(), "a walsender is connected"),
        ];
        for (change, why) in cases {
            let (mut c, mut b) = (counters(), before.clone());
            change(&mut c, &mut b);
            let judged = compare(&counters(), &before, &c, &b);
            // Only a change the counters saw, a template re-created and another access method
            // are beyond what a scan of the rows can settle.
            let hard = ["row-change counters", "re-created", "access method"].iter().any(|h| why.contains(h));
            assert_eq!(matches!(judged, Judged::Stale(_)), hard, "{why}: {judged:?}");
            let got = judged.why();
            assert!(got.as_deref().is_some_and(|s| s.contains(why)), "{why}: {got:?}");
        }
        // Counters reset or lost with a restart: their moving proves nothing either way.
        let mut c = counters();
        (c.row_changes, c.server_start) = ("0".into(), "later".into());
        assert!(matches!(compare(&counters(), &before, &c, &before), Judged::Unsure(_)));
        // What is not a change: sessions that left; a session idle long enough that its counts
        // are published (new or not); the same transaction still running, and its parallel
        // workers; the counters of connections and transactions (not compared at all).
        let mut b = before.clone();
        b.remove(1);
        b[0].state_change = "t9".into();
        b[0].idle_ms = FLUSHED_AFTER.as_millis() as i64;
        b.push(Backend { idle_ms: 60_000, ..idle(7) });
        b.push(Backend { kind: "parallel worker".into(), leader: 3, ..active(8, "x1") });
        b[1].state_change = "t7".into();
        assert_eq!(compare(&counters(), &before, &counters(), &b), Judged::Current);
        // A parallel worker of a session in a new transaction is not.
        b[1] = active(3, "x3");
        assert!(compare(&counters(), &before, &counters(), &b) != Judged::Current);
        // Idle in a transaction for a long time is not "published": nothing is, until it ends.
        let mut b = before.clone();
        b[0] = Backend {
            state: "idle in transaction".into(),
            xact_start: "x5".into(),
            idle_ms: 600_000,
            state_change: "t5".into(),
            ..idle(1)
        };
        assert!(compare(&counters(), &before, &counters(), &b) != Judged::Current);
    }

    #[test]
    fn the_probe_reads_backends_before_counters() {
        let script = probe_script(None);
        let activity = script.find("pg_stat_activity").unwrap();
        let counters = script.find("pg_stat_all_tables").unwrap();
        assert!(activity < counters && script.starts_with("SET default_transaction_read_only = on;"), "{script}");
        // The ledger, when read, comes before both: a probe current by the counters proves that
        // nothing was committed since the copy's record up to after that read.
        let read = crate::migrations::ledger_script("public._sqlx_migrations", "ledger_");
        let script = probe_script(Some(&read));
        let ledger = script.find("FROM public._sqlx_migrations").unwrap();
        assert!(ledger < script.find("pg_stat_activity").unwrap(), "{script}");
        // In a scan, it is read inside the scan's transaction (its snapshot).
        let scan = scan_script_reading(Some("1234"), Some(&read));
        let (begin, read, commit) = (
            scan.find("BEGIN ISOLATION LEVEL REPEATABLE READ").unwrap(),
            scan.find("FROM public._sqlx_migrations").unwrap(),
            scan.rfind("COMMIT;").unwrap(),
        );
        assert!(begin < read && read < commit, "{scan}");
    }
}
